//! Running `tern serve` on a free port, talking HTTP/1.1 to it over real
//! sockets, and reading its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Tern, tern_panic};

/// Upper bound on any wait in these tests: a failure, never a pacing device.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One route and its component, for [`manifest`].
pub struct Part<'a> {
    pub route: &'a str,
    pub id: &'a str,
    pub source: &'a str,
    /// Extra TOML lines inside `[component.ID]` (or further tables).
    pub extra: &'a str,
}

/// A manifest with one route per part.
pub fn manifest(parts: &[Part<'_>]) -> String {
    let mut toml = String::from("manifest_version = 1\n\n[app]\nname = \"test\"\n");
    for part in parts {
        toml.push_str(&format!(
            "\n[[route]]\npath = \"{}\"\ncomponent = \"{}\"\n",
            part.route, part.id
        ));
    }
    for part in parts {
        toml.push_str(&format!(
            "\n[component.{}]\nsource = \"{}\"\n{}\n",
            part.id, part.source, part.extra
        ));
    }
    toml
}

/// A manifest with `source` as component `id` on `route`, its table
/// extended by `extra`, beside `HTTP_HELLO` on `/hello`.
pub fn with_hello(route: &str, id: &str, source: &str, extra: &str) -> String {
    manifest(&[
        Part {
            route,
            id,
            source,
            extra,
        },
        Part {
            route: "/hello",
            id: "hello",
            source: test_programs::HTTP_HELLO,
            extra: "",
        },
    ])
}

/// Writes `manifest` as `dir/tern.toml`, with the binaries it names by
/// absolute path (the guest programs) copied into `dir/guests/N/` and named
/// there: Tern serves only what is inside the app directory unless the
/// operator allows otherwise, so an app carries its binaries.
pub fn write_app(dir: &Path, manifest: &str) {
    let mut text = String::with_capacity(manifest.len());
    let mut copied = 0;
    for line in manifest.split_inclusive('\n') {
        let named = line
            .strip_prefix("source = \"")
            .and_then(|rest| rest.split_once('"'));
        match named {
            Some((path, rest)) if Path::new(path).is_absolute() && Path::new(path).is_file() => {
                copied += 1;
                let name = Path::new(path).file_name().unwrap().to_str().unwrap();
                let local = format!("guests/{copied}/{name}");
                std::fs::create_dir_all(dir.join(&local).parent().unwrap()).unwrap();
                std::fs::copy(path, dir.join(&local)).unwrap();
                text.push_str(&format!("source = \"{local}\"{rest}"));
            }
            _ => text.push_str(line),
        }
    }
    std::fs::write(dir.join("tern.toml"), text).unwrap();
}

/// A running `tern serve`, killed when dropped.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Writes `manifest` to a fresh directory (see [`write_app`]) and
    /// serves it, waiting for the `listening on` line (`http://` or
    /// `https://`).
    pub fn start(tern: &Tern, manifest: &str, args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        write_app(dir.path(), manifest);
        Self::start_in(tern, dir, args)
    }

    /// Serves the app in `dir`.
    pub fn start_in(tern: &Tern, dir: tempfile::TempDir, args: &[&str]) -> Serve {
        let mut serve = Self::spawn(tern.command(), dir.path(), args);
        serve._dir = Some(dir);
        serve
    }

    /// Serves the app at `app` with `command` (a `tern` command with its
    /// environment set), waiting for the `listening on` line.
    pub fn spawn(command: std::process::Command, app: &std::path::Path, args: &[&str]) -> Serve {
        Self::spawn_verb(command, "serve", app, args)
    }

    /// Like [`Serve::spawn`] for another verb that serves (`up`).
    pub fn spawn_verb(
        mut command: std::process::Command,
        verb: &str,
        app: &std::path::Path,
        args: &[&str],
    ) -> Serve {
        let mut child = command
            .arg(verb)
            .arg(app)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tern serve");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let shared = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                shared.0.lock().unwrap().push(line);
                shared.1.notify_all();
            }
            // End of stderr: wake waiters so they can fail fast.
            shared.0.lock().unwrap().push(String::from("\u{0}eof"));
            shared.1.notify_all();
        });
        let mut serve = Serve {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            _dir: None,
            log,
            reader: Some(reader),
        };
        let line = serve.wait_for_log("listening on http");
        // A text line, or the message of a JSON one; `http://` or, with
        // TLS, `https://`.
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_once("://"))
            .and_then(|(_, rest)| rest.split(['"', ' ']).next())
            .unwrap_or_default();
        serve.addr = addr.parse().unwrap_or_else(|_| panic!("bad line {line:?}"));
        serve
    }

    /// Waits until a log line contains `needle`, and returns it.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_nth_log(needle, 1)
    }

    /// Waits until `count` log lines contain `needle`, and returns the last.
    #[track_caller]
    pub fn wait_for_nth_log(&self, needle: &str, count: usize) -> String {
        let (lines, cond) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = lines.lock().unwrap();
        loop {
            let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            let now = Instant::now();
            if lines.last().is_some_and(|l| l == "\u{0}eof") || now >= deadline {
                panic!(
                    "tern never logged {needle:?} {count} times; log:\n{}",
                    lines.join("\n")
                );
            }
            lines = cond.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    /// Sends a GET and reads the whole response.
    pub fn get(&self, path: &str) -> Response {
        self.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
    }

    /// Sends a request with a body.
    pub fn post(&self, path: &str, body: &str) -> Response {
        self.send(&format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Sends a request with `method`, extra `headers` and a body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        self.send(&format!("{head}\r\n{body}"))
    }

    /// Sends raw bytes and reads one response.
    pub fn send(&self, raw: &str) -> Response {
        let mut stream = self.connect();
        stream.write_all(raw.as_bytes()).unwrap();
        read_response(&mut BufReader::new(stream))
    }

    /// Opens a connection, sends `request` (which may leave its body
    /// unfinished) and reads the response head. Returns the connection,
    /// to send the rest on, a reader at the start of the response body,
    /// and the head.
    pub fn head_of(&self, request: &[u8]) -> (TcpStream, BufReader<TcpStream>, String) {
        let stream = self.connect();
        (&stream).write_all(request).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert_ne!(reader.read_line(&mut head).unwrap(), 0, "closed: {head:?}");
        }
        (stream, reader, head)
    }

    /// A connection with generous timeouts, so a hang fails the test.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Asks for an 8 MB response (`P1_WAGI_FORGE` at `/forge`) and never
    /// reads it: the server, run with `--write-timeout 1s`, must close the
    /// connection with what was sent so far and log why.
    pub fn never_read_a_big_response(&self) {
        let stream = self.connect();
        (&stream)
            .write_all(b"GET /forge?big=8000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        self.wait_for_log("GET /forge 200");
        let line = self.wait_for_log("closed the connection from");
        assert!(line.contains("the client read nothing for 1s"), "{line}");
        // What was sent before the timeout arrives; the rest never does.
        let mut received = Vec::new();
        let _ = (&stream).read_to_end(&mut received);
        assert!(
            received.len() < 8_000_000,
            "the whole response arrived ({} bytes)",
            received.len()
        );
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a POST to `path` on a component running `HTTP_WAIT` and
    /// holds its body open: the guest runs until [`Held::finish`]. Returns
    /// once the guest has said it is waiting.
    pub fn hold(&self, path: &str) -> Held {
        let waiting = self
            .log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(WAITING))
            .count();
        let stream = self.connect();
        (&stream)
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                     Transfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        self.wait_for_nth_log(WAITING, waiting + 1);
        Held { stream }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) takes plain integers; `pid` is our own child,
        // which `Drop` reaps only after this returns.
        #[allow(unsafe_code)]
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit, at most [`PATIENCE`], and returns its
    /// exit code and the whole log.
    #[track_caller]
    pub fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + PATIENCE;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.wait_for_eof();
                panic!(
                    "tern did not exit within {PATIENCE:?}; log:\n{}",
                    self.log()
                );
            }
            // Polling, not pacing: the loop ends as soon as tern exits.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        if self.wait_for_eof()
            && let Some(reader) = self.reader.take()
        {
            reader.join().unwrap();
        }
        (
            status.code().expect("tern serve killed by a signal"),
            self.log(),
        )
    }

    /// Waits until stderr has ended (tern exited), at most [`PATIENCE`].
    fn wait_for_eof(&self) -> bool {
        let (lines, cond) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = lines.lock().unwrap();
        loop {
            if lines.last().is_some_and(|l| l == "\u{0}eof") {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = cond.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

impl Drop for Serve {
    /// Kills tern, then fails the test if tern panicked while serving it
    /// (a request task's panic does not stop the server, so nothing else
    /// would notice).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        self.wait_for_eof();
        let log = self.log();
        if let Some(line) = tern_panic(&log) {
            panic!("tern panicked ({line}); log:\n{log}");
        }
    }
}

/// What `HTTP_WAIT` logs once it is running.
const WAITING: &str = "stderr: waiting for the body";

/// A request whose body is still open, from [`Serve::hold`].
pub struct Held {
    stream: TcpStream,
}

impl Held {
    /// Sends `body` and ends the request body, then reads the response.
    pub fn finish(self, body: &str) -> Response {
        let mut raw = String::new();
        if !body.is_empty() {
            raw.push_str(&format!("{:x}\r\n{body}\r\n", body.len()));
        }
        raw.push_str("0\r\n\r\n");
        (&self.stream).write_all(raw.as_bytes()).unwrap();
        read_response(&mut BufReader::new(self.stream))
    }

    /// Reads until the server ends the connection, without finishing the
    /// body; returns what arrived (nothing, when the request was cut off).
    pub fn cut_off(self) -> String {
        let mut rest = Vec::new();
        // A reset counts as an end too.
        let _ = (&self.stream).read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// False when the connection ended before the body did (or before
    /// any response: then `status` is 0).
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the field `name`, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "unexpected response {self:#?}");
        assert!(self.complete, "incomplete response {self:#?}");
        &self.body
    }
}

/// Reads one response: head, then a body framed by content-length,
/// chunked encoding, or the end of the connection.
pub fn read_response(reader: &mut impl BufRead) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if line.is_empty() {
        // Closed before any response.
        return Response {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
            complete: false,
        };
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let complete = if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        body.resize(len, 0);
        reader.read_exact(&mut body).is_ok()
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader, &mut body)
    } else {
        reader.read_to_end(&mut body).is_ok()
    };
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        complete,
    }
}

/// Returns whether the terminating chunk arrived.
fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> bool {
    loop {
        let mut size = String::new();
        match reader.read_line(&mut size) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return false;
        };
        if size == 0 {
            let mut end = String::new();
            return reader.read_line(&mut end).is_ok();
        }
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return false;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}
