//! Running `tern` in an isolated home, and reading what it printed.

use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A value a guest must never see unless it is granted.
pub const CANARY: (&str, &str) = ("TERN_TEST_CANARY", "host-secret-value");

/// How long one `tern` run may take before the test kills it and fails: a
/// limit that stops working fails the suite instead of hanging it.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The same for runs that drive real toolchains (a cold `cargo build`, an
/// `npm install`): generous, but still finite.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// A `tern` binary with its own cache, data and home directories.
pub struct Tern {
    pub home: tempfile::TempDir,
}

/// What one `tern` invocation printed and returned.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Tern {
    pub fn new() -> Self {
        Tern {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.path().join("cache/tern")
    }

    /// Where the signing key lives.
    pub fn key_path(&self) -> PathBuf {
        self.home.path().join("data/tern/artifact.key")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.home.path().join("cache"))
            .env("XDG_DATA_HOME", self.home.path().join("data"))
            .env(CANARY.0, CANARY.1);
        cmd
    }

    /// A `tern` command that can run build tools: the caller's PATH, HOME
    /// and toolchain settings pass through (the caches stay isolated).
    pub fn dev_command(&self) -> Command {
        let mut cmd = self.command();
        for name in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "PYENV_ROOT",
        ] {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd
    }

    /// Runs `tern` with [`Tern::dev_command`], within [`BUILD_DEADLINE`].
    pub fn run_dev(&self, args: &[&str]) -> Output {
        run_bounded(self.dev_command().args(args), None, BUILD_DEADLINE)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    /// Runs `tern` (stdin empty), failing the test if it has not finished
    /// within `limit`: for cases where a bug would hang rather than fail.
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Output {
        run_bounded(self.command().args(args), None, limit)
    }

    /// Runs `tern` with `stdin` as its standard input, within [`DEADLINE`].
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_bounded(self.command().args(args), Some(stdin), DEADLINE)
    }
}

/// Runs `command` to the end with `stdin` (or nothing) as its standard
/// input, capturing what it prints. Past `deadline` it is killed and the
/// test fails, showing what it printed so far.
pub fn run_bounded(command: &mut Command, stdin: Option<&str>, deadline: Duration) -> Output {
    let started = Instant::now();
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tern");
    if let (Some(input), Some(text)) = (child.stdin.take(), stdin) {
        // On a thread: a child that never reads its input must not block
        // the test past the deadline.
        let text = text.to_owned();
        std::thread::spawn(move || {
            let _ = (&input).write_all(text.as_bytes());
        });
    }
    let stdout = Captured::start(child.stdout.take().unwrap());
    let stderr = Captured::start(child.stderr.take().unwrap());
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for tern") {
            break Some(status);
        }
        if started.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling, not pacing: the loop ends as soon as tern exits.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    // The pipes close when tern exits, unless something it started still
    // holds them; that too is bounded.
    let until = (started + deadline).max(Instant::now() + Duration::from_secs(10));
    let (stdout, stdout_closed) = stdout.finish(until);
    let (stderr, stderr_closed) = stderr.finish(until);
    let Some(status) = status else {
        panic!(
            "tern did not finish within {deadline:?} and was killed: {command:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    assert!(
        stdout_closed && stderr_closed,
        "tern exited but left a process holding its output open: {command:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Output::of(std::process::Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    })
}

/// What a pipe delivered, read on a thread of its own.
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    closed: mpsc::Receiver<()>,
}

impl Captured {
    fn start(mut pipe: impl Read + Send + 'static) -> Captured {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (done, closed) = mpsc::channel();
        let shared = bytes.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => shared.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
        Captured { bytes, closed }
    }

    /// What arrived, waiting until the pipe closes but not past `until`;
    /// and whether it closed.
    fn finish(self, until: Instant) -> (String, bool) {
        let closed = self
            .closed
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_ok();
        let text = String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned();
        (text, closed)
    }
}

/// The first line of `log` where Tern itself panicked, if any: Rust's
/// `thread 'NAME' panicked at FILE:LINE:COLUMN:` (with `(ID)` after the
/// name on newer Rust). Under `tern serve` a guest's output is tagged with
/// its request, so it never starts a line; under `tern run` a guest's panic
/// prints the same line as Tern's would, but at a place in the guest's own
/// sources (`src/...`, `examples/...`), where Tern's are under `crates/`, in
/// a dependency or in the standard library.
pub fn tern_panic(log: &str) -> Option<&str> {
    log.lines().find(|line| {
        line.starts_with("thread '")
            && line
                .split_once(" panicked at ")
                .is_some_and(|(_, at)| !at.starts_with("src/") && !at.starts_with("examples/"))
    })
}

impl Output {
    /// What a finished `tern` printed; never a panic of Tern's own.
    fn of(out: std::process::Output) -> Output {
        let output = Output {
            code: out.status.code().expect("tern was killed by a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // 101 is a Rust panic in tern itself (a guest's panic is a trap,
        // 134); a panic on another thread may not change the exit code.
        assert_ne!(output.code, 101, "tern panicked: {output:#?}");
        if let Some(line) = tern_panic(&output.stderr) {
            panic!("tern panicked ({line}): {output:#?}");
        }
        output
    }

    /// Asserts the exit code, showing everything printed when it differs.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; {self:#?}");
        self
    }

    #[track_caller]
    pub fn stdout(&self, expected: &str) -> &Self {
        assert_eq!(self.stdout, expected, "{self:#?}");
        self
    }

    #[track_caller]
    pub fn stderr(&self, expected: &str) -> &Self {
        assert_eq!(self.stderr, expected, "{self:#?}");
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}; {self:#?}"
        );
        self
    }

    /// Asserts stderr is exactly one `error: ...` line containing `needle`.
    #[track_caller]
    pub fn one_line_error(&self, needle: &str) -> &Self {
        assert!(self.stderr.starts_with("error: "), "{self:#?}");
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "expected one line; {self:#?}"
        );
        self.stderr_has(needle)
    }
}

/// A certificate authority of the test's own and a certificate it signed
/// for `localhost` and 127.0.0.1, made with the `openssl` command in `dir`:
/// `ca.pem`, `server.pem` and `server.key`.
pub fn test_pki(dir: &std::path::Path) {
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write(
        "ca.cnf",
        "[req]\ndistinguished_name = dn\nx509_extensions = ca\nprompt = no\n\
         [dn]\nCN = Tern test CA\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    );
    write(
        "server.cnf",
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n",
    );
    write(
        "server.ext",
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n\
         authorityKeyIdentifier = keyid\n",
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            "ca.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "server.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian's `openssl` package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
