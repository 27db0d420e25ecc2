//! Running `tern` in an isolated home, and reading what it printed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A value a guest must never see unless it is granted.
pub const CANARY: (&str, &str) = ("TERN_TEST_CANARY", "host-secret-value");

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

    /// Runs `tern` with [`Tern::dev_command`].
    pub fn run_dev(&self, args: &[&str]) -> Output {
        Output::of(
            self.dev_command()
                .args(args)
                .output()
                .expect("starting tern"),
        )
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    /// Runs `tern` (stdin empty), failing the test if it has not finished
    /// within `limit`: for cases where a bug would hang rather than fail.
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tern");
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "tern {args:?} still running after {limit:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Output::of(child.wait_with_output().unwrap())
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tern");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        Output::of(child.wait_with_output().unwrap())
    }
}

impl Output {
    /// What a finished `tern` printed; never a panic of Tern's own.
    fn of(out: std::process::Output) -> Output {
        let output = Output {
            code: out.status.code().expect("tern was killed by a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // 101 is a Rust panic in tern itself (a guest's panic is a trap, 134).
        assert_ne!(output.code, 101, "tern panicked: {output:?}");
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
