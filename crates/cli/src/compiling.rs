//! The compile cache as `run` and `serve` open it, and the lines shown while
//! a large program compiles.

use std::io::IsTerminal as _;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// Programs at least this large take long enough to compile (Python and
/// JavaScript components: 9 to 13 s) to be worth a line.
const LARGE: usize = 4 << 20;

/// How often a compile still running is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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

/// `tern run`: says that `what` is being compiled, only on a terminal, and
/// only when compiling takes long enough to wonder.
pub fn note_compile(what: &str, size: usize, cached: bool) {
    if size >= LARGE && std::io::stderr().is_terminal() {
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

/// `tern serve` and its reloads: a line when a large component starts
/// compiling, naming it and its size, then one every [`PROGRESS_EVERY`]
/// until it is done. In the log's format, terminal or not: a server's
/// operator wants to know why it is not listening yet.
pub struct ServeNotes {
    /// Whether compiled code is cached (else `--no-cache`).
    cached: bool,
    /// Loading a new version of a running app rather than starting.
    reload: bool,
    /// The progress lines of the compile under way.
    ticker: Mutex<Option<Ticker>>,
}

impl ServeNotes {
    /// Notes for starting to serve.
    pub fn start(cached: bool) -> Self {
        ServeNotes {
            cached,
            reload: false,
            ticker: Mutex::new(None),
        }
    }

    /// Notes for loading a new version while the old one serves.
    pub fn reload(cached: bool) -> Self {
        ServeNotes {
            reload: true,
            ..ServeNotes::start(cached)
        }
    }
}

impl tern_http::CompileNotes for ServeNotes {
    fn compiling(&self, component: &str, size: usize) {
        if size < LARGE {
            return;
        }
        let size = ByteSize(size as u64);
        let line = if self.reload {
            format!("tern: loading the new version (compiling component {component}, {size})")
        } else if self.cached {
            format!(
                "tern: compiling component {component} ({size}); later starts use the compile cache"
            )
        } else {
            format!(
                "tern: compiling component {component} ({size}); --no-cache: compiled on every start"
            )
        };
        crate::log::say(&line);
        let ticker = Ticker::start(component.to_owned(), PROGRESS_EVERY, |line| {
            crate::log::say(&line)
        });
        *self.ticker.lock().unwrap_or_else(PoisonError::into_inner) = Some(ticker);
    }

    fn loading_model(&self, name: &str, size: u64) {
        crate::log::say(&format!("tern: loading model {name} ({})", ByteSize(size)));
    }

    fn unprovided(&self, component: &str, interfaces: &[String]) {
        let (shown, more) = interfaces.split_at(interfaces.len().min(3));
        let more = match more.len() {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        crate::log::say(&format!(
            "tern: component {component} imports {}{more}, which Tern does not provide; a call to one traps (Spin's SDKs import interfaces an app may never call)",
            shown
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    fn compiled(&self, _component: &str) {
        // Dropping the ticker stops it.
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(ticker);
    }
}

/// A thread saying `tern: still compiling NAME (10s)` every `every` until
/// dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(component: String, every: Duration, say: fn(String)) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let started = Instant::now();
        // Without the thread the compile goes on, only unreported.
        let thread = std::thread::Builder::new()
            .name("tern-compiling".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    say(format!(
                        "tern: still compiling {component} ({}s)",
                        started.elapsed().as_secs()
                    ));
                }
            })
            .ok();
        Ticker {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // A closed channel wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[test]
    fn the_ticker_reports_until_dropped() {
        let ticker = Ticker::start("web".into(), Duration::from_millis(10), |line| {
            SAID.lock().unwrap().push(line)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while SAID.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "the ticker said nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(ticker);
        let said = SAID.lock().unwrap().clone();
        assert!(
            said.iter()
                .all(|line| line.starts_with("tern: still compiling web (") && line.ends_with("s)")),
            "{said:?}"
        );
        // Nothing after the drop.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(SAID.lock().unwrap().len(), said.len());
    }
}
