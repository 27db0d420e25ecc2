//! Swapping a new version of an app in while serving: `tern up --watch`
//! rebuilding on a change, and SIGHUP or SIGUSR1 re-reading the manifest
//! and binaries.
//! The client must never see a failure.

use std::io::{BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use test_programs::*;

use crate::serving::{PATIENCE, Serve, read_response};
use crate::support::Tern;

const HELLO: &str = "hello, world\n";
const BODY: &str = "read 0 bytes";

/// An app whose build waits at `gate`, then copies the binary named in the
/// file `which` to `app.wasm`: a real build command that runs exactly as
/// long as the test holds it. A second component, `other`, watches another
/// file.
fn copying_app(first: &str, gate: &Gate) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(HTTP_HELLO, dir.path().join("hello.wasm")).unwrap();
    std::fs::copy(HTTP_BODY, dir.path().join("body.wasm")).unwrap();
    std::fs::write(dir.path().join("which"), first).unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        format!(
            r#"manifest_version = 1

[app]
name = "swap"

[[route]]
path = "/..."
component = "web"

[[route]]
path = "/other"
component = "other"

[component.web]
source = "app.wasm"
build = {{ command = "cat '{}' > /dev/null && cp \"$(cat which)\" app.wasm", watch = ["which"] }}

[component.other]
source = "other.wasm"
build = {{ command = "cp body.wasm other.wasm", watch = ["other.txt"] }}
"#,
            gate.path.display()
        ),
    )
    .unwrap();
    dir
}

/// A named pipe that a build command reads (`cat GATE`): the build waits
/// there until the test lets it through, so the test knows a build is
/// running without timing it.
struct Gate {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gate {
    /// Outside the app's directory, where the watcher does not look.
    fn new() -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate");
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
        Gate { path, _dir: dir }
    }

    /// Lets the next build through once it reaches the gate: opening the
    /// pipe for writing waits for the build to open it for reading, and
    /// closing it ends the build's read. Returns at once; wait with
    /// [`Opening::wait`].
    fn open(&self) -> Opening {
        let path = self.path.clone();
        let (done, opened) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(drop),
            );
        });
        Opening(opened)
    }
}

/// A [`Gate::open`] under way.
struct Opening(mpsc::Receiver<std::io::Result<()>>);

impl Opening {
    /// Waits until a build has passed the gate.
    #[track_caller]
    fn wait(self) {
        match self.0.recv_timeout(PATIENCE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("opening the gate: {e}"),
            Err(_) => panic!("no build reached the gate within {PATIENCE:?}"),
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    sent: usize,
    failures: Vec<String>,
    /// Distinct bodies.
    seen: Vec<String>,
    /// The longest a response took (reported, not judged).
    slowest: Duration,
}

/// Clients sending requests on keep-alive connections until stopped, each
/// response checked to be complete, 200, and one of `bodies`.
struct Hammer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Hammer {
    fn start(addr: SocketAddr, clients: usize, bodies: &'static [&'static str]) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let stream = TcpStream::connect(addr).unwrap();
                    stream.set_read_timeout(Some(PATIENCE)).unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        writer
                            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                            .unwrap();
                        let response = read_response(&mut reader);
                        tally.slowest = tally.slowest.max(started.elapsed());
                        tally.sent += 1;
                        if response.status != 200
                            || !response.complete
                            || !bodies.contains(&response.body.as_str())
                        {
                            tally.failures.push(format!("{response:?}"));
                            break;
                        }
                        if !tally.seen.contains(&response.body) {
                            tally.seen.push(response.body);
                        }
                    }
                    tally
                })
            })
            .collect();
        Hammer { stop, threads }
    }

    /// Stops the clients; returns how many requests they sent, every
    /// failure, and every body seen.
    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for thread in self.threads {
            let tally = thread.join().unwrap();
            total.sent += tally.sent;
            total.failures.extend(tally.failures);
            total.slowest = total.slowest.max(tally.slowest);
            for body in tally.seen {
                if !total.seen.contains(&body) {
                    total.seen.push(body);
                }
            }
        }
        total
    }
}

fn get(serve: &Serve) -> String {
    serve.get("/").expect(200).to_owned()
}

#[test]
fn up_watch_swaps_in_each_rebuild_while_requests_keep_succeeding() {
    let tern = Tern::new();
    let gate = Gate::new();
    let app = copying_app("hello.wasm", &gate);
    // The first build runs before tern listens.
    let first = gate.open();
    let serve = Serve::spawn_verb(tern.dev_command(), "up", app.path(), &["--watch"]);
    first.wait();
    serve.wait_for_log("watching for changes");
    assert_eq!(get(&serve), HELLO);

    let hammer = Hammer::start(serve.addr, 4, &[HELLO, BODY]);
    let versions = [("body.wasm", BODY), ("hello.wasm", HELLO)];
    let mut serving = HELLO;
    for round in 1..=6 {
        let (file, body) = versions[usize::from(round % 2 == 0)];
        std::fs::write(app.path().join("which"), file).unwrap();
        serve.wait_for_nth_log("tern: building web", round + 1);
        // The build is held at the gate: requests meanwhile are answered,
        // by the version being replaced.
        assert_eq!(get(&serve), serving, "during build {round}");
        gate.open().wait();
        serve.wait_for_nth_log("tern: reloaded in", round);
        assert_eq!(get(&serve), body, "after reload {round}");
        serving = body;
    }
    // A build that fails keeps the last good version serving.
    std::fs::write(app.path().join("which"), "missing.wasm").unwrap();
    serve.wait_for_nth_log("tern: building web", 8);
    gate.open().wait();
    let failed = serve.wait_for_log("reload failed");
    assert!(
        failed.contains("building component `web`") && failed.contains("exited with status 1"),
        "{failed}"
    );
    serve.wait_for_log("cannot stat 'missing.wasm'");
    assert_eq!(get(&serve), HELLO);

    let Tally {
        sent,
        failures,
        seen,
        slowest,
    } = hammer.finish();
    eprintln!("{sent} requests over 6 reloads and a failed build; slowest {slowest:?}");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(
        seen.len() == 2,
        "the clients saw only {seen:?} in {sent} requests"
    );
    // Only the component whose files changed was rebuilt.
    let log = serve.log();
    assert_eq!(log.matches("tern: building other").count(), 1, "{log}");

    // The watcher follows the manifest: a new glob takes effect at once.
    let toml = std::fs::read_to_string(app.path().join("tern.toml")).unwrap();
    let toml = toml.replace(r#"watch = ["other.txt"]"#, r#"watch = ["other-*.txt"]"#);
    std::fs::write(app.path().join("tern.toml"), toml).unwrap();
    serve.wait_for_nth_log("tern: reloaded in", 7);
    std::fs::write(app.path().join("other-2.txt"), "edited").unwrap();
    serve.wait_for_nth_log("tern: building other", 2);
    serve.wait_for_nth_log("tern: reloaded in", 8);
    assert_eq!(serve.get("/other").expect(200), BODY);
}

/// Serves `HTTP_WAIT` from `app.wasm`, holds a request in flight on it,
/// swaps `HTTP_HELLO` in with `signal`, and checks that new requests get
/// the new code while the one in flight finishes on the old.
fn swap_with_a_request_in_flight(tern: &Tern, signal: libc::c_int) -> (Serve, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(HTTP_WAIT, dir.path().join("app.wasm")).unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        "manifest_version = 1\n[app]\nname = \"a\"\n[[route]]\npath = \"/...\"\ncomponent = \"web\"\n[component.web]\nsource = \"app.wasm\"\n",
    )
    .unwrap();
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);

    // A request still running on the old code when the swap lands: its
    // guest answers only once the body ends.
    let held = serve.hold("/");
    replace(&dir.path().join("app.wasm"), HTTP_HELLO);
    serve.signal(signal);
    serve.wait_for_log("tern: reloaded in");
    assert_eq!(get(&serve), HELLO, "new requests get the new code");
    assert_eq!(
        held.finish("abc").expect(200),
        "read 3 bytes",
        "the request in flight finishes on the old code"
    );
    (serve, dir)
}

#[test]
fn sighup_swaps_new_binaries_in_and_requests_in_flight_finish_on_the_old_code() {
    let tern = Tern::new();
    let (serve, dir) = swap_with_a_request_in_flight(&tern, libc::SIGHUP);

    // A manifest that no longer loads leaves the running version serving.
    std::fs::write(
        dir.path().join("tern.toml"),
        "manifest_version = 1\n[app]\n",
    )
    .unwrap();
    serve.signal(libc::SIGHUP);
    let failed = serve.wait_for_log("reload failed");
    assert!(failed.contains("tern.toml"), "{failed}");
    assert_eq!(get(&serve), HELLO);
}

#[test]
fn sigusr1_reloads_too() {
    let tern = Tern::new();
    let (serve, _dir) = swap_with_a_request_in_flight(&tern, libc::SIGUSR1);
    serve.wait_for_log("tern: reloading");
    assert_eq!(get(&serve), HELLO);
}

/// The binary at `wasm` with a custom section appended that takes it to
/// `size` bytes: as large as a Python component, without its compile time.
/// `fill` tells copies apart (and their compile cache entries).
fn padded(wasm: &str, size: usize, fill: u8) -> Vec<u8> {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"tern-test-padding";
    // Section id, a 4-byte size (below 256 MiB), the name's length and name.
    let head = 1 + 4 + 1 + name.len();
    assert!(bytes.len() + head < size, "{wasm} is already larger");
    let pad = size - bytes.len() - head;
    let payload = 1 + name.len() + pad;
    assert!(payload < (1 << 28));
    bytes.push(0);
    bytes.extend([
        (payload & 0x7f) as u8 | 0x80,
        ((payload >> 7) & 0x7f) as u8 | 0x80,
        ((payload >> 14) & 0x7f) as u8 | 0x80,
        (payload >> 21) as u8,
    ]);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.resize(size, fill);
    bytes
}

/// The position of the `nth` line (from 1) of `log` containing `needle`.
#[track_caller]
fn line_of(log: &str, needle: &str, nth: usize) -> usize {
    log.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(nth - 1)
        .unwrap_or_else(|| panic!("no {needle:?} ({nth}) in the log:\n{log}"))
        .0
}

#[test]
fn large_components_say_what_is_compiling_at_start_and_between_built_and_reloaded() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v1.wasm"), padded(HTTP_HELLO, 5_000_000, 1)).unwrap();
    std::fs::write(dir.path().join("v2.wasm"), padded(HTTP_BODY, 5_000_000, 2)).unwrap();
    std::fs::write(dir.path().join("which"), "v1.wasm").unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        r#"manifest_version = 1
[app]
name = "big"
[[route]]
path = "/..."
component = "web"
[component.web]
source = "app.wasm"
build = { command = 'cp "$(cat which)" app.wasm', watch = ["which"] }
"#,
    )
    .unwrap();

    // At start, before listening: the component, its size, and that the
    // next start is quicker.
    let serve = Serve::spawn_verb(tern.dev_command(), "up", dir.path(), &["--watch"]);
    let log = serve.log();
    let compiling = "tern: compiling component web (4.8MiB); later starts use the compile cache";
    assert!(
        line_of(&log, "tern: built web in ", 1) < line_of(&log, compiling, 1)
            && line_of(&log, compiling, 1) < line_of(&log, "listening on", 1),
        "{log}"
    );
    serve.wait_for_log("watching for changes");
    assert_eq!(get(&serve), HELLO);

    // A rebuild: between `built` and `reloaded`, what is being compiled.
    std::fs::write(dir.path().join("which"), "v2.wasm").unwrap();
    serve.wait_for_log("tern: reloaded in");
    let log = serve.log();
    let loading = "tern: loading the new version (compiling component web, 4.8MiB)";
    let at = line_of(&log, loading, 1);
    assert!(
        line_of(&log, "tern: built web in ", 2) < at && at < line_of(&log, "tern: reloaded in", 1),
        "{log}"
    );
    assert_eq!(get(&serve), BODY);
    drop(serve);

    // Compiled once: a second start loads it from the cache and says nothing.
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    assert!(!serve.log().contains("compiling"), "{}", serve.log());
    drop(serve);
    let serve = Serve::spawn(tern.command(), dir.path(), &["--no-cache"]);
    serve.wait_for_log(
        "tern: compiling component web (4.8MiB); --no-cache: compiled on every start",
    );
}

/// Replaces `path` with a copy of `source` the way a deploy does: write
/// beside it, then rename over it.
fn replace(path: &Path, source: &str) {
    let staged = path.with_extension("new");
    std::fs::copy(source, &staged).unwrap();
    std::fs::rename(staged, path).unwrap();
}
