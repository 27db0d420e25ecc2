//! The compile cache as `run` and `serve` open it, and the note shown while
//! a large program compiles.

use std::io::IsTerminal as _;

use clap::Args;
use tern_runtime::{ByteSize, CompileCache, CompileLimits, HumanDuration, Refused, Result};

/// The bounds on compiling, shared by `run`, `serve`, `up` and `compile`.
#[derive(Args, Clone, Debug)]
pub struct CompileLimitArgs {
    /// Largest program file Tern reads; larger ones are refused unread [default: 128MiB]
    #[arg(long, value_name = "SIZE")]
    max_module_size: Option<ByteSize>,
    /// Memory (address space) the compiler process may use; past it the compile fails [default: 2GiB]
    #[arg(long, value_name = "SIZE")]
    max_compile_memory: Option<ByteSize>,
    /// Time one compile may take; past it the compiler is killed [default: 60s]
    #[arg(long, value_name = "DURATION")]
    max_compile_time: Option<HumanDuration>,
}

impl CompileLimitArgs {
    /// The limits, compiling in a child process of this program.
    pub fn limits(&self) -> CompileLimits {
        let defaults = CompileLimits::in_child();
        CompileLimits {
            max_module_size: self.max_module_size.unwrap_or(defaults.max_module_size),
            max_memory: self.max_compile_memory.unwrap_or(defaults.max_memory),
            timeout: self.max_compile_time.map_or(defaults.timeout, |t| t.0),
            child: defaults.child,
        }
    }
}

/// Opens the compile cache unless `no_cache`. Compiling works without it,
/// so a cache that cannot be opened is `None` plus the reason, for the
/// caller to report as it sees fit. A cache directory, key directory or key
/// that someone else could have written is an error: it may have been
/// tampered with, and working around it silently would hide that.
pub fn open_cache(no_cache: bool) -> Result<(Option<CompileCache>, Option<String>)> {
    if no_cache {
        return Ok((None, None));
    }
    match CompileCache::open_default() {
        Ok(cache) => Ok((cache, None)),
        Err(e) if e.is::<Refused>() => Err(e),
        Err(e) => Ok((None, Some(e.to_string()))),
    }
}

/// Says that `what` is being compiled: only on a terminal, and only when
/// compiling takes long enough to wonder.
pub fn note_compile(what: &str, size: usize, cached: bool) {
    if size >= 1 << 20 && std::io::stderr().is_terminal() {
        let later = if cached {
            "later runs use the compile cache"
        } else {
            "--no-cache: compiled on every run"
        };
        crate::log::say(&format!(
            "tern: compiling {what} ({}); {later}",
            ByteSize(size as u64)
        ));
    }
}

/// The compiling child process: `tern __compile SPEC KIND MEMORY`, wasm on
/// stdin, wasmtime's serialized code on stdout, or one `error:` line.
pub fn child(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::io::Write as _;
    let text: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let compiled = match text[..] {
        [spec, kind, memory] => tern_runtime::child_main(spec, kind, memory),
        _ => Err(tern_runtime::Error::msg(
            "usage: tern __compile SPEC KIND MEMORY",
        )),
    };
    match compiled {
        Ok(code) if std::io::stdout().lock().write_all(&code).is_ok() => {
            std::process::ExitCode::SUCCESS
        }
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(err) => {
            let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": ").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
