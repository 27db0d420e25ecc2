//! A real `redis-server` for tests: started on a free loopback port with
//! persistence off, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts a server and returns once it accepts connections. Panics
    /// with a hint when `redis-server` is not installed (`scripts/test`
    /// installs it).
    pub fn start() -> RedisServer {
        crate::start_on_free_port("redis-server", Self::try_start)
    }

    fn try_start() -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probing for a free port")
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it (scripts/test does)")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        crate::wait_for_line(&mut child, stdout, "Ready to accept connections")?;
        Ok(RedisServer { child, port })
    }

    /// The server's URL, database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP) without closing anything: connections
    /// stay open and commands go unanswered, as when Redis stalls.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`RedisServer::pause`]d server run on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .arg(which)
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {which} redis-server failed");
    }

    /// Stops the server now (a test of what happens when Redis is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
