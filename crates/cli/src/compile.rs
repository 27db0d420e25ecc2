//! `tern compile`: ahead-of-time compilation into a sealed artifact.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tern_runtime::{ByteSize, EngineSpec, Limits, Loader, Result, SigningKey};

use crate::compiling::CompileLimitArgs;

#[derive(Args)]
#[command(after_help = "\
The artifact (written with mode 0600) is sealed with a key kept in
$XDG_DATA_HOME/tern/artifact.key (mode 0600). `tern run` loads only
artifacts whose seal verifies under that key and that were compiled for the
engine options it runs with, so an artifact runs only for the user and
machine that compiled it; anything else, including raw wasmtime .cwasm
files, is refused.")]
pub struct CompileArgs {
    /// The module, component or .wat file to compile
    file: PathBuf,
    /// Where to write the artifact [default: FILE with extension .twasm]
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Compile with fuel metering, so the artifact can run with `--fuel`
    #[arg(long)]
    fuel: bool,
    /// Compile with interruption checks, so the artifact can run with `--timeout`
    #[arg(long)]
    interruptible: bool,
    /// The wasm stack limit the artifact will run with
    #[arg(long, value_name = "SIZE", default_value_t = Limits::DEFAULT_MAX_STACK)]
    max_stack: ByteSize,
    #[command(flatten)]
    compile_limits: CompileLimitArgs,
}

pub fn main(args: CompileArgs) -> Result<ExitCode> {
    let limits = Limits {
        fuel: args.fuel.then_some(0),
        timeout: args.interruptible.then_some(std::time::Duration::MAX),
        max_stack: args.max_stack,
        ..Limits::default()
    };
    let engine = tern_runtime::engine_for(&limits)?;
    let key_path = SigningKey::default_path().ok_or_else(|| {
        tern_runtime::Error::msg("no home directory to keep the signing key in; set XDG_DATA_HOME")
    })?;
    let key = SigningKey::load_or_create(&key_path)?;
    let compile_limits = args.compile_limits.limits();
    let loader = Loader {
        key: Some(&key),
        limits: Some(&compile_limits),
        spec: Some(EngineSpec::for_limits(&limits)),
        ..Loader::default()
    };
    let sealed = tern_runtime::precompile(&engine, &args.file, &loader)
        .map_err(|e| e.context(format!("compiling `{}`", args.file.display())))?;
    let output = args
        .output
        .unwrap_or_else(|| args.file.with_extension("twasm"));
    // Mode 0600: the artifact is this user's native code.
    tern_runtime::write_private(&output, &sealed).map_err(|e| {
        tern_runtime::Error::new(e).context(format!("writing `{}`", output.display()))
    })?;
    eprintln!(
        "compiled {} to {} ({})",
        args.file.display(),
        output.display(),
        ByteSize(sealed.len() as u64)
    );
    Ok(ExitCode::SUCCESS)
}
