//! A real PostgreSQL server for tests: a fresh cluster in a temporary
//! directory (`initdb`, trust authentication for user `tern`), started on a
//! free loopback port with durability off, stopped and removed when
//! dropped. PostgreSQL refuses to run as root, so under root it runs as the
//! `postgres` user the Debian package creates.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running PostgreSQL server, stopped on drop.
pub struct PostgresServer {
    child: Child,
    port: u16,
    bin: PathBuf,
    // Removed after the server stops (fields drop after `drop` runs).
    _dir: tempfile::TempDir,
}

/// The user and group to run as: `postgres` under root, else ourselves.
fn run_as() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); scripts/setup installs it")
    })
}

fn command(bin: &Path, program: &str, owner: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join(program));
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl PostgresServer {
    /// Makes a cluster and starts its server; returns once it accepts
    /// connections.
    pub fn start() -> PostgresServer {
        let bin = bin_dir();
        let owner = run_as();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown to postgres");
        }
        let data = dir.path().join("data");
        let out = command(&bin, "initdb", owner)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "tern",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let attempt = || Self::try_start(&bin, owner, dir.path(), &data);
        let (child, port) = crate::start_on_free_port("postgres", attempt);
        PostgresServer {
            child,
            port,
            bin,
            _dir: dir,
        }
    }

    fn try_start(
        bin: &Path,
        owner: Option<(u32, u32)>,
        dir: &Path,
        data: &Path,
    ) -> Result<(Child, u16), String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probing for a free port")
            .port();
        let mut child = command(bin, "postgres", owner)
            .arg("-D")
            .arg(data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args([
                "-c",
                "synchronous_commit=off",
                "-c",
                "logging_collector=off",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        crate::wait_for_line(&mut child, stderr, "ready to accept connections")?;
        Ok((child, port))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for database `postgres` as user `tern`, as a
    /// Spin app gives it.
    pub fn address(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=tern dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output
    /// (one row per line, columns separated by `|`). Panics if it fails.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "tern",
                "-d",
                "postgres",
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql -c {sql:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("psql prints UTF-8")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown, which ends its backends too.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
