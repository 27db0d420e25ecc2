//! WASI 0.3 components: commands under `tern run` (each interface, with
//! the same grants and limits as 0.2) and `wasi:http/handler@0.3` services
//! under `tern serve`, next to 0.2 components in one app.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_programs::*;

use crate::grants::{accepted, listener};
use crate::serve::one;
use crate::serving::{PATIENCE, Part, Serve, manifest};
use crate::support::{CANARY, Tern};

#[test]
pub fn p3_hello() {
    let tern = Tern::new();
    tern.run(&["run", P3_HELLO])
        .code(0)
        .stdout("hello from wasi 0.3\n");
    // --invoke calls a 0.3 async function too; without a version, the
    // newest `run` the program exports (it exports 0.2's as well).
    for name in ["wasi:cli/run#run()", "wasi:cli/run@0.3.0#run()"] {
        tern.run(&["run", "--invoke", name, P3_HELLO])
            .code(0)
            .stdout("hello from wasi 0.3\nok\n");
    }
}

#[test]
pub fn p3_args() {
    let tern = Tern::new();
    // Only granted variables reach the guest; the host's canary does not.
    tern.run(&["run", "--env", "GREETING=hi", P3_ARGS, "one", "two words"])
        .code(0)
        .stdout("p3_args.wasm\none\ntwo words\nGREETING=hi\n");
    assert!(
        !tern
            .run(&["run", P3_ARGS])
            .stdout
            .clone()
            .contains(CANARY.1)
    );
    // 0.3 carries the exit code: `exit-with-code`, and `run` returning an
    // error is 1.
    tern.run(&["run", P3_ARGS, "--exit=7"]).code(7);
    tern.run(&["run", P3_ARGS, "--fail"]).code(1);
}

#[test]
pub fn p3_stdin() {
    let tern = Tern::new();
    tern.run_with_stdin(&["run", P3_STDIN], "quiet input\n")
        .code(0)
        .stdout("QUIET INPUT\n");

    // A guest awaiting a read that never completes is stopped by
    // --timeout: stdin stays open until tern has exited.
    let mut child = tern
        .command()
        .args(["run", "--timeout", "500ms", P3_STDIN, "--forever"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _open_stdin = child.stdin.take().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "--timeout did not stop the guest"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("time limit of 500ms"), "{stderr}");
}

#[test]
pub fn p3_clocks() {
    let tern = Tern::new();
    tern.run(&["run", P3_CLOCKS, "sleep", "10"])
        .code(0)
        .stdout("slept\n");
    let now = tern.run(&["run", P3_CLOCKS, "now"]).code(0).stdout.clone();
    let seconds: u64 = now.trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(seconds.abs_diff(host) < 600, "{seconds} vs {host}");
    // A guest asleep in a host future stops at its deadline.
    tern.run(&["run", "--timeout", "300ms", P3_CLOCKS, "sleep", "60000"])
        .code(124)
        .stderr_has("time limit of 300ms");
}

#[test]
pub fn p3_random() {
    let tern = Tern::new();
    let first = tern.run(&["run", P3_RANDOM]).code(0).stdout.clone();
    let second = tern.run(&["run", P3_RANDOM]).code(0).stdout.clone();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 2, "{first}");
    assert_eq!(lines[0].len(), 32, "{first}");
    assert!(lines[0].chars().all(|c| c.is_ascii_hexdigit()), "{first}");
    assert!(lines[1].parse::<u64>().is_ok(), "{first}");
    assert_ne!(first, second);
}

#[test]
pub fn p3_fs() {
    let tern = Tern::new();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(root.path().join("secret"), CANARY.1).unwrap();
    let rw = format!("{}::/data", data.display());
    let ro = format!("{}::/data", data.display());

    // Nothing is granted by default.
    tern.run(&["run", P3_FS, "list", "/data"])
        .code(2)
        .stdout("error: no preopen \"/data\"\n");
    tern.run(&[
        "run", "--dir", &rw, P3_FS, "write", "/data", "note", "hello",
    ])
    .code(0)
    .stdout("ok\n");
    assert_eq!(std::fs::read_to_string(data.join("note")).unwrap(), "hello");
    tern.run(&["run", "--dir-ro", &ro, P3_FS, "read", "/data", "note"])
        .code(0)
        .stdout("hello");
    tern.run(&["run", "--dir", &rw, P3_FS, "list", "/data"])
        .code(0)
        .stdout("note\n");
    // Read-only means read-only.
    let out = tern.run(&["run", "--dir-ro", &ro, P3_FS, "write", "/data", "x", "y"]);
    out.code(2);
    assert!(!data.join("x").exists());

    // Every way out of the preopen is refused.
    std::os::unix::fs::symlink(root.path().join("secret"), data.join("out")).unwrap();
    for path in [
        "../secret",
        "/secret",
        "out",
        &root.path().join("secret").display().to_string(),
    ] {
        let text = tern
            .run(&["run", "--dir", &rw, P3_FS, "escape", "/data", path])
            .code(0)
            .stdout
            .clone();
        assert!(text.starts_with("denied: "), "{path}: {text}");
        assert!(!text.contains(CANARY.1), "{path}: {text}");
    }
    // A symlink that climbs is not even created; one that stays is.
    tern.run(&[
        "run",
        "--dir",
        &rw,
        P3_FS,
        "symlink",
        "/data",
        "../secret",
        "up",
    ])
    .code(2)
    .stdout("error: ErrorCode::NotPermitted\n");
    assert!(std::fs::symlink_metadata(data.join("up")).is_err());
    tern.run(&[
        "run", "--dir", &rw, P3_FS, "symlink", "/data", "note", "same",
    ])
    .code(0)
    .stdout("ok\n");
    assert_eq!(
        std::fs::read_link(data.join("same")).unwrap(),
        std::path::Path::new("note")
    );
}

#[test]
pub fn p3_net() {
    let tern = Tern::new();
    let (listener, addr) = listener();
    // A denied connect never reaches the listener.
    tern.run(&["run", P3_NET, "connect", &addr])
        .code(3)
        .stdout("refused: ErrorCode::AccessDenied\n");
    assert_eq!(accepted(&listener), 0);
    // Granted, it does, and the guest's bytes arrive.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    });
    tern.run(&["run", "--allow-net", &addr, P3_NET, "connect", &addr])
        .code(0)
        .stdout("connected\n");
    assert_eq!(received.join().unwrap(), "ping\n");

    // Name lookup only with a grant.
    let denied = tern
        .run(&["run", P3_NET, "lookup", "localhost"])
        .code(3)
        .stdout
        .clone();
    assert!(denied.starts_with("lookup failed: "), "{denied}");
    let found = tern
        .run(&["run", "--allow-net", "*:*", P3_NET, "lookup", "localhost"])
        .code(0)
        .stdout
        .clone();
    assert!(
        found.lines().any(|a| a == "127.0.0.1" || a == "::1"),
        "{found}"
    );

    // A connect that never completes (a listener whose queue is full drops
    // the SYN) is no way around --timeout.
    let (_listener, _queued, black_hole) = crate::outbound::unanswered();
    tern.run(&[
        "run",
        "--allow-net",
        &black_hole,
        "--timeout",
        "500ms",
        P3_NET,
        "connect",
        &black_hole,
    ])
    .code(124)
    .stderr_has("time limit of 500ms");

    // UDP: refused without a grant, delivered with one.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let udp = socket.local_addr().unwrap().to_string();
    tern.run(&["run", P3_NET, "udp", &udp, "nope"]).code(3);
    tern.run(&["run", "--allow-net", &udp, P3_NET, "udp", &udp, "datagram"])
        .code(0)
        .stdout("sent\n");
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"datagram");
}

#[test]
pub fn p3_limits() {
    let tern = Tern::new();
    tern.run(&["run", "--fuel", "1000", P3_HELLO])
        .code(134)
        .stderr("error: guest ran out of fuel (limit 1000; raise it with --fuel)\n");
    tern.run(&["run", "--max-memory", "64KiB", P3_HELLO])
        .code(1)
        .one_line_error(
            "of linear memory to start, above the limit of 64KiB (raise it with --max-memory)",
        );
}

#[test]
pub fn p3_http_get() {
    let tern = Tern::new();
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    let url = format!("http://{addr}/x");
    // Without a grant every request is refused, before any connection.
    tern.run(&["run", P3_HTTP_GET, &url])
        .code(4)
        .stdout("error: ErrorCode::HttpRequestDenied\n");
    upstream.set_nonblocking(true).unwrap();
    assert!(upstream.accept().is_err(), "a denied request connected");
    upstream.set_nonblocking(false).unwrap();
    // A grant for another host is no grant for this one.
    tern.run(&[
        "run",
        "--allow-http",
        "http://example.com",
        P3_HTTP_GET,
        &url,
    ])
    .code(4)
    .stderr_has("tern: outbound request denied");
    std::thread::spawn(move || {
        for stream in upstream.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nfrom u",
            );
        }
    });
    let grant = format!("http://{addr}");
    tern.run(&["run", "--allow-http", &grant, P3_HTTP_GET, &url])
        .code(0)
        .stdout("200\nfrom u");
}

/// An app of every WASI 0.3 service guest, plus a 0.2 one.
fn p3_app(limits: &str) -> String {
    let parts: Vec<(&str, &str, &str)> = vec![
        ("/hello", "hello", HTTP3_HELLO),
        ("/echo", "echo", HTTP3_ECHO),
        ("/stream", "stream", HTTP3_STREAM),
        ("/upload", "upload", HTTP3_UPLOAD),
        ("/trap", "trap", HTTP3_TRAP),
        ("/loop", "spin", HTTP3_LOOP),
        ("/wait", "wait", HTTP3_WAIT),
        ("/bomb", "bomb", HTTP3_MEMORY_BOMB),
        ("/none", "none", HTTP3_NO_RESPONSE),
        ("/count", "count", HTTP3_COUNTER),
        ("/p2", "p2", HTTP_HELLO),
        ("/wagi", "wagi", P1_WAGI_ECHO),
    ];
    let extras: Vec<String> = parts
        .iter()
        .map(|(_, id, _)| format!("[component.{id}.limits]\n{limits}"))
        .collect();
    let parts: Vec<Part<'_>> = parts
        .iter()
        .zip(&extras)
        .map(|((route, id, source), extra)| Part {
            route,
            id,
            source,
            extra,
        })
        .collect();
    manifest(&parts)
}

#[test]
pub fn http3_hello() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app(""), &[]);
    let response = serve.get("/hello");
    assert_eq!(response.expect(200), "hello from a wasi 0.3 handler\n");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    // 0.2 and 0.3 components side by side, each inferred as wasi-http.
    assert_eq!(serve.get("/p2").expect(200), "hello, world\n");
    serve.get("/wagi").expect(200);
    serve.wait_for_log("/hello   -> hello (wasi-http 0.3)");
    serve.wait_for_log("/p2      -> p2 (wasi-http)");
    serve.wait_for_log("GET /hello 200");
}

#[test]
pub fn http3_echo() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app(""), &[]);
    let response = serve.request("PUT", "/echo?x=1", &[("x-any", "1")], "some body");
    assert_eq!(response.expect(200), "some body");
    assert_eq!(response.header("x-echo-method"), Some("PUT"));
    assert_eq!(response.header("x-echo-path"), Some("/echo?x=1"));
    // A body of many chunks each way, byte for byte.
    let big = "0123456789abcdef".repeat(1 << 16);
    assert_eq!(serve.post("/echo", &big).expect(200), big);

    // Trailers pass through, both ways.
    let mut stream = serve.connect();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTE: trailers\r\n\
              Transfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n",
        )
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("hello"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-sum: 42"), "{raw}");

    // Handed on unread (`?direct=1`), the client's body becomes the
    // response's and the host feeds it after the guest has returned, as the
    // client sends it: the first chunk comes back before the second is
    // sent, and the body ends cleanly when the upload does.
    let (stream, mut reader, head) = serve.head_of(
        b"POST /echo?direct=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut first = [0; 10];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"5\r\nhello\r\n");
    (&stream).write_all(b"5\r\nworld\r\n0\r\n\r\n").unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("world") && rest.ends_with("0\r\n\r\n"),
        "{rest:?}"
    );
    let line = serve.wait_for_nth_log("POST /echo 200", 3);
    assert!(
        !line.contains("cut short") && !line.contains("exceeded"),
        "{line}"
    );
}

#[test]
pub fn http3_stream() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app(""), &[]);
    // Ten chunks 100 ms apart: the first reaches the client long before
    // the last is written.
    let mut stream = serve.connect();
    stream
        .write_all(
            b"GET /stream?chunks=10&delay_ms=100 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let started = Instant::now();
    let mut line = String::new();
    while !line.contains("chunk 1") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "no chunk arrived");
    }
    let first = started.elapsed();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let all = started.elapsed();
    assert!(rest.contains("chunk 10"), "{rest}");
    // The whole body takes at least the nine delays; the first chunk came
    // before the second was written, 100 ms after it.
    assert!(all >= Duration::from_millis(900), "{all:?}");
    assert!(
        all - first >= Duration::from_millis(800),
        "{first:?} of {all:?}"
    );
    // A guest whose tasks have all ended while it still holds its body's
    // writer never ends the body: at the deadline the client gets an
    // abort after every line written, not a clean end.
    let serve = Serve::start(&tern, &p3_app("timeout = \"500ms\""), &[]);
    let leaked = serve.get("/stream?chunks=2&delay_ms=0&leak=1");
    assert_eq!(leaked.status, 200, "{leaked:#?}");
    assert!(!leaked.complete, "body looked complete: {leaked:#?}");
    assert_eq!(leaked.body, "chunk 1\nchunk 2\n");
    let line = serve.wait_for_log("GET /stream 200");
    assert!(line.contains("deadline of 500ms exceeded"), "{line}");
}

#[test]
pub fn http3_upload() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app("max_body = \"1MiB\""), &[]);
    let body = "x".repeat(900 << 10);
    let response = serve.post("/upload", &body);
    assert_eq!(
        response.expect(200),
        format!("received {} bytes\n", body.len())
    );
    // max_body holds on the stream.
    let response = serve.post("/upload", &"y".repeat(2 << 20));
    response.expect(413);
}

#[test]
pub fn http3_trap() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app(""), &[]);
    let response = serve.get("/trap");
    let body = response.expect(500).to_string();
    let id = response.header("x-request-id").unwrap().to_string();
    assert!(body.contains(&id), "{body}");
    assert!(!body.contains("unreachable"), "{body}");
    serve.wait_for_log(&format!("{id} GET /trap 500"));
    // Everyone else is still served.
    serve.get("/hello").expect(200);
}

#[test]
pub fn http3_loop() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app("timeout = \"500ms\""), &[]);
    serve.get("/loop").expect(504);
    serve.wait_for_log("GET /loop 504");
    serve.get("/hello").expect(200);
}

#[test]
pub fn http3_wait() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app("timeout = \"500ms\""), &[]);
    // Awaiting a host future is no way around the deadline.
    serve.get("/wait?ms=60000").expect(504);
    assert_eq!(serve.get("/wait?ms=1").expect(200), "waited\n");
}

#[test]
pub fn http3_memory_bomb() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app("memory = \"32MiB\""), &[]);
    serve.get("/bomb").expect(500);
    serve.wait_for_log("GET /bomb 500");
    serve.get("/hello").expect(200);
}

#[test]
pub fn http3_no_response() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app(""), &[]);
    serve.get("/none").expect(500);
    let line = serve.wait_for_log("GET /none 500");
    assert!(line.contains("InternalError"), "{line}");
}

#[test]
pub fn http3_counter() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &p3_app(""), &[]);
    // A fresh instance per request: nothing survives it.
    for _ in 0..3 {
        assert_eq!(serve.get("/count").expect(200), "count 1\n");
    }
}

/// An app of one component with `[component.app.instances]` set to `warm`.
fn warm_app(source: &str, warm: &str, limits: &str) -> String {
    one(
        "/app",
        source,
        &format!("[component.app.instances]\n{warm}\n[component.app.limits]\n{limits}"),
    )
}

#[test]
fn warm_instances_serve_several_requests_then_are_dropped() {
    let tern = Tern::new();
    let warm = "reuse = 4\nconcurrent = 4\nidle = \"60s\"";
    let serve = Serve::start(&tern, &warm_app(HTTP3_COUNTER, warm, ""), &[]);
    serve.wait_for_log("/app  -> app (wasi-http 0.3, warm)");
    // One instance counts on for `reuse` requests; the next starts afresh.
    let counts: Vec<String> = (0..5)
        .map(|_| serve.get("/app").expect(200).to_string())
        .collect();
    assert_eq!(
        counts,
        [
            "count 1\n",
            "count 2\n",
            "count 3\n",
            "count 4\n",
            "count 1\n"
        ]
    );

    // Requests overlap in one instance: the first waits in the host while
    // the second is answered by the same instance.
    let addr = serve.addr;
    let slow = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
            .write_all(
                b"GET /app?wait_ms=3000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        raw
    });
    serve.wait_for_log("count 2 waiting");
    let started = Instant::now();
    assert_eq!(serve.get("/app").expect(200), "count 3\n");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(slow.join().unwrap().ends_with("count 2\n"));
}

#[test]
fn warm_instances_that_fail_take_only_their_requests_down() {
    let tern = Tern::new();
    let toml = manifest(&[
        Part {
            route: "/trap",
            id: "trap",
            source: HTTP3_TRAP,
            extra: "[component.trap.instances]\nreuse = 100",
        },
        Part {
            route: "/loop",
            id: "spin",
            source: HTTP3_LOOP,
            extra: "[component.spin.instances]\nconcurrent = 4\n[component.spin.limits]\ntimeout = \"500ms\"",
        },
        Part {
            route: "/count",
            id: "count",
            source: HTTP3_COUNTER,
            extra: "[component.count.instances]\nconcurrent = 4",
        },
    ]);
    let serve = Serve::start(&tern, &toml, &[]);
    assert_eq!(serve.get("/count").expect(200), "count 1\n");
    let response = serve.get("/trap");
    response.expect(500);
    let line = serve.wait_for_log("warm instance dropped: guest trapped: wasm `unreachable`");
    assert!(!line.contains("backtrace"), "{line}");
    // A guest spinning in wasm code stops at its deadline, instance and all.
    serve.get("/loop").expect(504);
    serve.wait_for_log("warm instance dropped: deadline of 500ms exceeded");
    // The other component's instance lives on.
    assert_eq!(serve.get("/count").expect(200), "count 2\n");
    // A request the guest fails without trapping retires its instance
    // too: the next one starts afresh.
    serve.get("/count?fail").expect(500);
    assert_eq!(serve.get("/count").expect(200), "count 1\n");
}

#[test]
fn warm_instances_left_idle_are_dropped() {
    let tern = Tern::new();
    let warm = "idle = \"100ms\"";
    let serve = Serve::start(&tern, &warm_app(HTTP3_COUNTER, warm, ""), &[]);
    assert_eq!(serve.get("/app").expect(200), "count 1\n");
    // Asked less often than `idle`, the component starts afresh each time
    // its instance has been dropped; within PATIENCE it must have been.
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        if serve.get("/app").expect(200) == "count 1\n" {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the idle instance was kept");
    }
}

#[test]
fn warm_wasi_p2_handlers_are_reused_one_request_at_a_time() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &warm_app(HTTP_HELLO, "reuse = 10", ""), &[]);
    serve.wait_for_log("/app  -> app (wasi-http, warm)");
    for _ in 0..12 {
        assert_eq!(serve.get("/app").expect(200), "hello, world\n");
    }
    // More than one at a time is what a 0.2 handler cannot do.
    let dir = tempfile::tempdir().unwrap();
    crate::serving::write_app(dir.path(), &warm_app(HTTP_HELLO, "concurrent = 2", ""));
    tern.run(&["serve", "--listen", "127.0.0.1:0", dir.path().to_str().unwrap()])
        .code(1)
        .stderr_has("instances.concurrent = 2: http_hello.wasm is a WASI 0.2 handler, which takes one request at a time");
    // WAGI programs run once per request.
    crate::serving::write_app(dir.path(), &warm_app(P1_WAGI_ECHO, "reuse = 2", ""));
    tern.run(&["serve", "--listen", "127.0.0.1:0", dir.path().to_str().unwrap()])
        .code(1)
        .stderr_has("[component.app.instances] keeps wasi-http components warm; wagi_echo.wasm is a WAGI program");
}

#[test]
pub fn http3_outbound() {
    let (listener, addr) = listener();
    let tern = Tern::new();
    let toml = one(
        "/fetch",
        HTTP3_OUTBOUND,
        "allowed_outbound_hosts = [\"http://example.com\"]",
    );
    let serve = Serve::start(&tern, &toml, &[]);
    // Not in the allowlist: refused before any connection.
    let body = serve
        .get(&format!("/fetch?url=http%3A%2F%2F{addr}%2F"))
        .expect(502)
        .to_string();
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(accepted(&listener), 0);
    serve.wait_for_log("tern: outbound request denied: http://127.0.0.1:");

    // Listed by name, a loopback address is reached; by wildcard, not.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
    });
    let toml = one(
        "/fetch",
        HTTP3_OUTBOUND,
        &format!("allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]"),
    );
    let serve = Serve::start(&tern, &toml, &[]);
    assert_eq!(
        serve
            .get(&format!("/fetch?url=http%3A%2F%2F127.0.0.1%3A{port}%2F"))
            .expect(200),
        "upstream 200: ok"
    );
    upstream.join().unwrap();
    let toml = one(
        "/fetch",
        HTTP3_OUTBOUND,
        &format!("allowed_outbound_hosts = [\"http://*:{port}\"]"),
    );
    let serve = Serve::start(&tern, &toml, &[]);
    let body = serve
        .get(&format!("/fetch?url=http%3A%2F%2Flocalhost%3A{port}%2F"))
        .expect(502)
        .to_string();
    assert!(body.contains("DestinationIpProhibited"), "{body}");
}

#[test]
pub fn http3_kv() {
    let tern = Tern::new();
    let toml = one("/kv/...", HTTP3_KV, "key_value_stores = [\"default\"]");
    let serve = Serve::start(&tern, &toml, &["--threads", "1"]);
    assert_eq!(serve.get("/kv/default/greeting").expect(404), "absent");
    serve
        .request("PUT", "/kv/default/greeting", &[], "hello")
        .expect(204);
    assert_eq!(serve.get("/kv/default/greeting").expect(200), "hello");
    assert_eq!(serve.post("/kv/default/hits?incr=5", "").expect(200), "5");
    assert_eq!(serve.post("/kv/default/hits?incr=2", "").expect(200), "7");
    assert_eq!(serve.get("/kv/default?keys").expect(200), "greeting\nhits");
    // A store the app does not have.
    serve.get("/kv/other/x").expect(404);
}
