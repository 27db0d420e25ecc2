//! `tern compose`: one component from an app component and the library
//! components it imports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tern_runtime::{ByteSize, Error, Result};

/// Arguments of `tern compose`.
#[derive(Args)]
#[command(
    after_help = "Each import of APP that a --plug component exports under the same name \
(version included, such as `example:text/markup@0.1.0`) is wired to that export, and the plugs \
are embedded in OUT. Other imports (WASI) stay imports, for Tern to provide. Interfaces whose \
types differ are refused with the interface, the function and the difference."
)]
pub struct ComposeArgs {
    /// The component whose imports are to be satisfied
    #[arg(value_name = "APP")]
    app: PathBuf,
    /// A component exporting interfaces APP imports (repeatable)
    #[arg(long = "plug", value_name = "LIB", required = true)]
    plugs: Vec<PathBuf>,
    /// Where to write the composed component
    #[arg(long, short = 'o', value_name = "OUT")]
    output: PathBuf,
}

pub fn main(args: ComposeArgs) -> Result<ExitCode> {
    let bytes =
        tern_compose::compose(&args.app, &args.plugs).map_err(|e| Error::msg(e.to_string()))?;
    // Written beside, then renamed: a server watching OUT never reads half.
    let staged = args.output.with_extension("wasm.partial");
    std::fs::write(&staged, &bytes)
        .and_then(|()| std::fs::rename(&staged, &args.output))
        .map_err(|e| Error::msg(format!("writing {}: {e}", args.output.display())))?;
    let plugs: Vec<String> = args.plugs.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "tern: composed {} with {} into {} ({})",
        args.app.display(),
        plugs.join(", "),
        args.output.display(),
        ByteSize(bytes.len() as u64)
    );
    Ok(ExitCode::SUCCESS)
}
