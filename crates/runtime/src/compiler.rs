//! Compiling untrusted wasm in a child process bounded in memory and time.
//!
//! Compiling is not bounded by anything a guest's limits say: a module of a
//! few megabytes of nested blocks can take Cranelift seconds and gigabytes,
//! and neither can be stopped from inside the process that compiles. So Tern
//! compiles in a child (`tern` itself, run with a hidden command) whose
//! address space is capped with `RLIMIT_AS` and which is killed at its
//! deadline; the parent gets wasmtime's serialized code back on a pipe. The
//! child builds the same engine configuration as the parent (from an
//! [`EngineSpec`]), and wasmtime checks that the code matches the parent's
//! engine when it loads it.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tern_manifest::ByteSize;
use wasmtime::{Engine, Result, bail};

use crate::engine::EngineSpec;

/// The bounds on turning a file into code.
#[derive(Clone, Debug)]
pub struct CompileLimits {
    /// The largest file (wasm, WAT or artifact) Tern reads as a program.
    pub max_module_size: ByteSize,
    /// The compiling process's address space.
    pub max_memory: ByteSize,
    /// How long one compile may take.
    pub timeout: Duration,
    /// The program that compiles (the running `tern`, `/proc/self/exe`);
    /// `None` compiles in this process, bounded in size only.
    pub child: Option<PathBuf>,
}

impl CompileLimits {
    /// A module larger than this is refused before it is read.
    pub const DEFAULT_MAX_MODULE_SIZE: ByteSize = ByteSize(128 << 20);
    /// Compiling an 18 MiB Python component takes about 0.5 GiB.
    pub const DEFAULT_MAX_MEMORY: ByteSize = ByteSize(2 << 30);
    /// Compiling an 18 MiB Python component takes about 6 s on 2 cores.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The defaults, compiling in a child process that runs this program.
    pub fn in_child() -> Self {
        CompileLimits {
            child: Some(PathBuf::from("/proc/self/exe")),
            ..CompileLimits::default()
        }
    }
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_module_size: Self::DEFAULT_MAX_MODULE_SIZE,
            max_memory: Self::DEFAULT_MAX_MEMORY,
            timeout: Self::DEFAULT_TIMEOUT,
            child: None,
        }
    }
}

/// The hidden command line the child runs: `tern CHILD_COMMAND SPEC KIND MEMORY`.
pub const CHILD_COMMAND: &str = "__compile";

/// Compiles `wasm` (a component when `component`) in a child process under
/// `limits`, for an engine built from `spec`; returns wasmtime's serialized
/// code.
pub(crate) fn compile_in_child(
    child: &std::path::Path,
    limits: &CompileLimits,
    spec: EngineSpec,
    component: bool,
    wasm: &[u8],
) -> Result<Vec<u8>> {
    let mut process = Command::new(child)
        .arg(CHILD_COMMAND)
        .arg(spec.to_arg())
        .arg(if component { "component" } else { "module" })
        .arg(limits.max_memory.0.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| wasmtime::format_err!("starting the compiler process: {e}"))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) = (
        process.stdin.take(),
        process.stdout.take(),
        process.stderr.take(),
    ) else {
        bail!("starting the compiler process: no pipes");
    };
    let outcome = std::thread::scope(|scope| {
        // The child reads all of its input before it writes, so feeding and
        // draining happen at once, each on its own thread.
        scope.spawn(move || {
            let _ = stdin.write_all(wasm);
        });
        let code = scope.spawn(move || {
            let mut code = Vec::new();
            stdout.read_to_end(&mut code).map(|_| code)
        });
        let said = scope.spawn(move || {
            let mut said = Vec::new();
            // The child says at most one line; do not let it say more.
            let _ = stderr.by_ref().take(64 << 10).read_to_end(&mut said);
            said
        });
        let deadline = Instant::now() + limits.timeout;
        let status = loop {
            match process.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = process.kill();
                    let _ = process.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        let code = code.join().ok().and_then(Result::ok).unwrap_or_default();
        let said = said.join().unwrap_or_default();
        (status, code, String::from_utf8_lossy(&said).into_owned())
    });
    let (status, code, said) = outcome;
    let Some(status) = status else {
        bail!(
            "compiling took longer than the compile time limit of {:?} (--max-compile-time)",
            limits.timeout
        );
    };
    if status.success() {
        return Ok(code);
    }
    // Out of memory, the child aborts (a signal) or says so; its own
    // errors (malformed wasm) are one `error:` line.
    let out_of_memory = said.contains("out of memory") || said.contains("memory allocation");
    if out_of_memory || std::os::unix::process::ExitStatusExt::signal(&status).is_some() {
        bail!(
            "compiling needed more memory than the compile memory limit of {} (--max-compile-memory)",
            limits.max_memory
        );
    }
    match said.lines().find_map(|line| line.strip_prefix("error: ")) {
        Some(error) => bail!("{error}"),
        None => bail!(
            "the compiler process failed: {}",
            said.lines().next().unwrap_or("")
        ),
    }
}

/// The child's side of [`compile_in_child`]: caps its own address space at
/// `max_memory`, reads the wasm from stdin and returns the serialized code
/// for stdout.
pub fn child_main(spec: &str, kind: &str, max_memory: &str) -> Result<Vec<u8>> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let Some(spec) = EngineSpec::from_arg(spec) else {
        bail!("bad engine spec {spec:?}");
    };
    let Ok(max_memory) = max_memory.parse::<u64>() else {
        bail!("bad memory limit {max_memory:?}");
    };
    let limit = Rlimit {
        current: Some(max_memory),
        maximum: Some(max_memory),
    };
    setrlimit(Resource::As, limit)
        .map_err(|e| wasmtime::format_err!("limiting the compiler's memory: {e}"))?;
    let mut wasm = Vec::new();
    std::io::stdin().read_to_end(&mut wasm)?;
    let engine = Engine::new(&spec.config(false))?;
    match kind {
        "component" => engine.precompile_component(&wasm),
        "module" => engine.precompile_module(&wasm),
        _ => bail!("bad kind {kind:?}"),
    }
}
