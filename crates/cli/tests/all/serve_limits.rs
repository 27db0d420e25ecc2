//! `tern serve` under broken and hostile guests and clients: each gets a
//! clear status, nothing leaks, and everyone else is still served.

use std::io::{Read as _, Write as _};
use std::time::Instant;

use test_programs::*;

use crate::serving::{PATIENCE, Part, Serve, manifest, with_hello};
use crate::support::Tern;

/// Asserts a generic error body naming only the status and request id, and
/// returns the log line with that id.
#[track_caller]
fn generic_error(serve: &Serve, path: &str, status: u16, reason: &str) -> String {
    let response = serve.get(path);
    let body = response.expect(status);
    let id = response
        .header("x-request-id")
        .expect("error responses carry the request id");
    assert_eq!(body, format!("{status} {reason}\nrequest id: {id}\n"));
    serve.wait_for_log(&format!("{id} GET"))
}

#[test]
pub fn http_trap() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &with_hello("/trap", "trap", HTTP_TRAP, ""), &[]);
    let line = generic_error(&serve, "/trap", 500, "Internal Server Error");
    assert!(
        line.contains("500") && line.contains("trap error: guest trapped: wasm `unreachable`"),
        "{line}"
    );
    // The guest's panic message is in the log, tagged with the same request.
    let id = line.split_whitespace().nth(1).unwrap();
    serve.wait_for_log(&format!("{id} trap stderr: "));
    serve.get("/hello").expect(200);
}

#[test]
pub fn http_no_response() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one_route("/none", HTTP_NO_RESPONSE), &[]);
    let line = generic_error(&serve, "/none", 500, "Internal Server Error");
    assert!(
        line.contains("guest returned without setting a response"),
        "{line}"
    );
}

#[test]
pub fn http_memory_bomb() {
    let tern = Tern::new();
    let toml = with_hello(
        "/bomb",
        "bomb",
        HTTP_MEMORY_BOMB,
        "[component.bomb.limits]\nmemory = \"32MiB\"",
    );
    let serve = Serve::start(&tern, &toml, &[]);
    let line = generic_error(&serve, "/bomb", 500, "Internal Server Error");
    assert!(line.contains("above its limit of 32MiB"), "{line}");
    serve.get("/hello").expect(200);
}

#[test]
fn wagi_memory_bomb_and_trap() {
    let tern = Tern::new();
    let toml = manifest(&[
        Part {
            route: "/bomb",
            id: "bomb",
            source: P1_MEMORY_BOMB,
            extra: "[component.bomb.limits]\nmemory = \"32MiB\"",
        },
        Part {
            route: "/panic",
            id: "panic",
            source: P1_PANIC,
            extra: "",
        },
    ]);
    let serve = Serve::start(&tern, &toml, &[]);
    let line = generic_error(&serve, "/bomb", 500, "Internal Server Error");
    assert!(line.contains("above its limit of 32MiB"), "{line}");
    let line = generic_error(&serve, "/panic", 500, "Internal Server Error");
    assert!(line.contains("guest trapped"), "{line}");
}

#[test]
pub fn http_spin() {
    let tern = Tern::new();
    let toml = with_hello(
        "/spin",
        "spin",
        HTTP_SPIN,
        "[component.spin.limits]\ntimeout = \"2s\"",
    );
    let serve = Serve::start(&tern, &toml, &[]);
    let started = Instant::now();
    std::thread::scope(|s| {
        let spinner = s.spawn(|| {
            let line = generic_error(&serve, "/spin", 504, "Gateway Timeout");
            (line, Instant::now())
        });
        // While the guest spins, other requests are served.
        serve.wait_for_log("spin stderr: spinning");
        let mut answered = Vec::new();
        for _ in 0..5 {
            serve.get("/hello").expect(200);
            answered.push(Instant::now());
        }
        let (line, timed_out) = spinner.join().unwrap();
        assert!(line.contains("deadline of 2s exceeded"), "{line}");
        assert!(timed_out.duration_since(started).as_secs_f64() >= 2.0);
        assert!(
            answered.iter().all(|t| *t < timed_out),
            "hello waited for the spinning guest"
        );
    });
}

#[test]
fn a_cpu_time_budget_stops_a_spinning_guest_but_not_a_sleeping_one() {
    let tern = Tern::new();
    let toml = manifest(&[
        Part {
            route: "/spin",
            id: "spin",
            source: HTTP_SPIN,
            extra: "",
        },
        Part {
            route: "/slow",
            id: "slow",
            source: HTTP_SLOW,
            extra: "",
        },
        Part {
            route: "/wagi-spin",
            id: "wagi",
            source: P1_SPIN,
            extra: "[component.wagi.limits]\ncpu_time = \"20ms\"",
        },
    ]);
    // The deadline is far; the budget ends the spinning guest first.
    let serve = Serve::start(&tern, &toml, &["--cpu-time", "50ms", "--timeout", "60s"]);
    let line = generic_error(&serve, "/spin", 503, "Service Unavailable");
    assert!(line.contains("CPU time budget of 50ms exceeded"), "{line}");
    let line = generic_error(&serve, "/wagi-spin", 503, "Service Unavailable");
    assert!(line.contains("CPU time budget of 20ms exceeded"), "{line}");
    // Sleeping four times the budget is waiting, not running.
    assert_eq!(serve.get("/slow?ms=200").expect(200), "done");
}

#[test]
fn wagi_spin_times_out() {
    let tern = Tern::new();
    let toml = manifest(&[Part {
        route: "/spin",
        id: "spin",
        source: P1_SPIN,
        extra: "",
    }]);
    let serve = Serve::start(&tern, &toml, &["--timeout", "300ms"]);
    let line = generic_error(&serve, "/spin", 504, "Gateway Timeout");
    assert!(line.contains("deadline of 300ms exceeded"), "{line}");
}

#[test]
pub fn http_partial() {
    let tern = Tern::new();
    let toml = manifest(&[Part {
        route: "/partial/...",
        id: "partial",
        source: HTTP_PARTIAL,
        extra: "[component.partial.limits]\ntimeout = \"1s\"",
    }]);
    let serve = Serve::start(&tern, &toml, &[]);
    let whole = serve.get("/partial/ok");
    assert_eq!(whole.expect(200), "partial\n");
    // A guest that returns with its body still open (never finished, never
    // dropped) ends the connection without the last chunk too: the store
    // going away is no clean end.
    let leaked = serve.get("/partial/leak");
    assert_eq!(leaked.status, 200, "{leaked:#?}");
    assert!(!leaked.complete, "body looked complete: {leaked:#?}");
    assert_eq!(leaked.body, "partial\n");
    let line = serve.wait_for_log("GET /partial/leak 200");
    assert!(
        line.contains("response body cut short: the guest returned without finishing it"),
        "{line}"
    );
    // One it aborts (its body dropped unfinished) is cut short as well,
    // often before a byte went out, and the log says so.
    let aborted = serve.get("/partial/abort");
    assert!(!aborted.complete, "body looked complete: {aborted:#?}");
    let logged = if aborted.status == 0 {
        "aborted"
    } else {
        "200"
    };
    let line = serve.wait_for_log("GET /partial/abort ");
    assert!(
        line.contains(&format!("GET /partial/abort {logged} "))
            && line.contains("response body cut short: "),
        "{line}"
    );
    // A guest that fails right after setting its head: the client never
    // gets a complete answer (usually nothing at all; the head alone when it
    // was already on its way as the guest trapped), and the log says why.
    let aborted = serve.get("/partial/head");
    assert!(aborted.status == 0 || !aborted.complete, "{aborted:#?}");
    // The log agrees with what the client saw: `aborted` when not a byte
    // went out, the status set when the head did.
    let line = serve.wait_for_log("GET /partial/head ");
    let logged = if aborted.status == 0 {
        "aborted"
    } else {
        "200"
    };
    assert!(
        line.contains(&format!("GET /partial/head {logged} ")) && line.contains("guest trapped"),
        "{line}"
    );
    // Once the head is out, a failing guest aborts the connection rather
    // than ending the body as if it were complete.
    let response = serve.get("/partial/spin");
    assert_eq!(response.status, 200, "{response:#?}");
    assert!(!response.complete, "body looked complete: {response:#?}");
    assert_eq!(response.body, "partial\n");
    // The guest traps once the request body ends, which the client holds
    // back until it has the head and the first chunk: then the connection
    // ends without the last chunk.
    let (stream, mut reader, head) = serve.head_of(
        b"POST /partial/trap HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut chunk = [0; 13];
    reader.read_exact(&mut chunk).unwrap();
    assert_eq!(&chunk, b"8\r\npartial\n\r\n");
    (&stream).write_all(b"0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    // An abort may arrive as a reset rather than an end: either way,
    // nothing more.
    let _ = reader.read_to_end(&mut rest);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "",
        "the body went on after the trap"
    );
    serve.wait_for_log("POST /partial/trap 200");
    serve.wait_for_log("guest panicked after sending part of the body");
    serve.wait_for_log("GET /partial/spin 200");
    assert!(serve.log().contains("deadline of 1s exceeded"));
}

#[test]
pub fn http_body() {
    let tern = Tern::new();
    let toml = manifest(&[Part {
        route: "/upload",
        id: "upload",
        source: HTTP_BODY,
        extra: "[component.upload.limits]\nmax_body = \"1KiB\"",
    }]);
    let serve = Serve::start(&tern, &toml, &[]);
    assert_eq!(
        serve.post("/upload", &"x".repeat(1024)).expect(200),
        "read 1024 bytes"
    );
    // Declared too large: refused before any guest runs.
    let response = serve.post("/upload", &"x".repeat(1025));
    response.expect(413);
    // Chunked, so only counting tells.
    let mut raw = String::from(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..3 {
        raw.push_str(&format!("200\r\n{}\r\n", "y".repeat(512)));
    }
    raw.push_str("0\r\n\r\n");
    let response = serve.send(&raw);
    assert_eq!(response.status, 413, "{response:#?}");
}

/// A guest blocked in a host call (sleeping) past its deadline is stopped
/// like one spinning in wasm code, and gives its slot back.
#[test]
pub fn http_slow() {
    let tern = Tern::new();
    let toml = with_hello(
        "/slow",
        "slow",
        HTTP_SLOW,
        "[component.slow.limits]\nmax_concurrent = 1\ntimeout = \"1s\"",
    );
    let serve = Serve::start(&tern, &toml, &[]);
    // Ten minutes of sleep: only the deadline ends it within the harness's
    // patience.
    let line = generic_error(&serve, "/slow?ms=600000", 504, "Gateway Timeout");
    assert!(line.contains("deadline of 1s exceeded"), "{line}");
    // The one slot is free again.
    assert_eq!(serve.get("/slow?ms=0").expect(200), "done");
}

/// Concurrency limits: a component's own, per component.
#[test]
pub fn http_wait() {
    let tern = Tern::new();
    let toml = with_hello(
        "/wait",
        "wait",
        HTTP_WAIT,
        "[component.wait.limits]\nmax_concurrent = 1",
    );
    let serve = Serve::start(&tern, &toml, &[]);
    // Running until its body ends.
    let held = serve.hold("/wait");
    // The one permitted slot is taken.
    let response = serve.get("/wait");
    response.expect(503);
    assert_eq!(response.header("retry-after"), Some("1"));
    // Other components have their own budget.
    serve.get("/hello").expect(200);
    assert_eq!(held.finish("abc").expect(200), "read 3 bytes");
    // The slot is free again once the request has ended, which its log
    // line (written after the slot is given back) tells.
    serve.wait_for_log("POST /wait 200");
    assert_eq!(serve.get("/wait").expect(200), "read 0 bytes");
}

#[test]
fn request_head_limits() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one_route("/hello", HTTP_HELLO),
        &["--max-header-size", "8KiB"],
    );
    let big = format!(
        "GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(16 << 10)
    );
    assert_eq!(serve.send(&big).status, 431);
    for malformed in [
        "GARBAGE\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
        "GET /hello HTTP/9.9\r\n\r\n",
    ] {
        assert_eq!(serve.send(malformed).status, 400, "{malformed:?}");
    }
    serve.get("/hello").expect(200);
}

#[test]
fn slowloris_is_disconnected() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one_route("/hello", HTTP_HELLO),
        &["--header-timeout", "500ms"],
    );
    let started = Instant::now();
    let mut stream = serve.connect();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: loc")
        .unwrap();
    // The server gives up on the head and closes; read sees the end (or a
    // 408) well before our own patience runs out.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited < PATIENCE, "not disconnected");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Meanwhile and afterwards, others are served.
    serve.get("/hello").expect(200);
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one_route("/wait", HTTP_WAIT), &[]);
    let held = serve.hold("/wait");
    serve.terminate();
    serve.wait_for_log("tern: shutting down; in-flight requests get 10s");
    // The request in flight when the signal came still finishes.
    assert_eq!(held.finish("abc").expect(200), "read 3 bytes");
    let (code, log) = serve.wait();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("grace period over"), "{log}");
    // Its log line is written before the server exits.
    assert!(log.contains("POST /wait 200"), "{log}");
}

#[test]
fn the_grace_period_running_out_cuts_off_requests_still_in_flight() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one_route("/wait", HTTP_WAIT), &["--grace", "200ms"]);
    // Never finished: only the end of the grace period ends it.
    let held = serve.hold("/wait");
    serve.terminate();
    let (code, log) = serve.wait();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("tern: shutting down; in-flight requests get 200ms"),
        "{log}"
    );
    assert!(
        log.contains("tern: grace period over; closed the connections still open"),
        "{log}"
    );
    assert_eq!(held.cut_off(), "", "{log}");
}

#[test]
fn a_second_signal_exits_at_once_with_130() {
    let tern = Tern::new();
    // A grace period no test waits out: only the second signal ends this.
    let serve = Serve::start(&tern, &one_route("/wait", HTTP_WAIT), &["--grace", "1h"]);
    let held = serve.hold("/wait");
    serve.terminate();
    serve.wait_for_log("tern: shutting down");
    serve.signal(libc::SIGINT);
    let (code, log) = serve.wait();
    assert_eq!(code, 130, "{log}");
    assert!(!log.contains("grace period over"), "{log}");
    assert_eq!(held.cut_off(), "", "{log}");
}

fn one_route(route: &str, source: &str) -> String {
    manifest(&[Part {
        route,
        id: "app",
        source,
        extra: "",
    }])
}
