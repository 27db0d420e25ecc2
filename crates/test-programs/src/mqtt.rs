//! A real MQTT broker (`mosquitto`) for tests: started on a free loopback
//! port with anonymous access, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A running `mosquitto`, killed on drop.
pub struct Broker {
    child: Child,
    port: u16,
    _config: tempfile::NamedTempFile,
}

impl Broker {
    /// Starts a broker and returns once it accepts connections. Panics with
    /// a hint when `mosquitto` is not installed (`scripts/test` installs
    /// it).
    pub fn start() -> Broker {
        crate::start_on_free_port("mosquitto", Self::try_start)
    }

    fn try_start() -> Result<Broker, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probing for a free port")
            .port();
        let config = tempfile::NamedTempFile::new().expect("a config file");
        std::fs::write(
            config.path(),
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("writing the config");
        // Debian puts the broker in /usr/sbin, which a user's PATH may lack.
        let program = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let mut child = Command::new(program)
            .arg("-c")
            .arg(config.path())
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto ({e}); install it (scripts/test does)")
            });
        let stderr = child.stderr.take().expect("piped stderr");
        // Every listener is open once it says it is running.
        crate::wait_for_line(&mut child, stderr, " running")?;
        Ok(Broker {
            child,
            port,
            _config: config,
        })
    }

    /// The broker's address, as a Spin app gives it.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
