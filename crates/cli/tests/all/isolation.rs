//! Hostile guests and clients against the limits that keep one request from
//! hurting the others: host memory a guest makes Tern hold, response framing
//! a WAGI program tries to forge, clients that trickle bodies or never read,
//! and log lines a guest tries to forge.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};

use test_programs::*;

use crate::serve::one;
use crate::serving::{Serve, read_response};
use crate::support::Tern;

/// The most resident memory the server ever had, from `/proc`.
fn peak_rss_mib(serve: &Serve) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

#[test]
pub fn http_host_bomb() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one("/bomb", HTTP_HOST_BOMB, ""), &[]);
    // Unbounded, 500 bodies of 2 MiB each grew the server by 1 GiB, and
    // 10,000 header sets of 100 KB by 1.2 GiB. Each now stops at the
    // instance's resource limit (512 for the default 128MiB).
    for (query, what) in [("bodies=500", "bodies"), ("fields=10000", "header sets")] {
        let response = serve.get(&format!("/bomb?{query}"));
        response.expect(500);
        let id = response.header("x-request-id").unwrap();
        let line = serve.wait_for_log(&format!("{id} GET /bomb 500"));
        assert!(
            line.contains("the instance holds 512 host resources")
                && line.contains("for a memory limit of 128MiB"),
            "{what}: {line}"
        );
    }
    // Below the limit a guest gets what it asks for, at most 128 KiB
    // buffered per body it has not sent.
    let body = serve.get("/bomb?bodies=50").expect(200).to_string();
    let bytes: u64 = body
        .rsplit(", ")
        .next()
        .and_then(|b| b.strip_suffix(" bytes"))
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(body.starts_with("held 50 bodies"), "{body}");
    assert_eq!(bytes, 50 * (128 << 10), "{body}");
    let peak = peak_rss_mib(&serve);
    assert!(peak < 512, "the server grew to {peak} MiB");
}

/// Sends `raw` and a second request on the same connection, returning both
/// responses as the client saw them.
fn two_on_one_connection(
    serve: &Serve,
    first: &str,
) -> (crate::serving::Response, crate::serving::Response) {
    let stream = serve.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    (&stream).write_all(request(first).as_bytes()).unwrap();
    let one = read_response(&mut reader);
    (&stream).write_all(request("/forge").as_bytes()).unwrap();
    let two = read_response(&mut reader);
    (one, two)
}

#[test]
pub fn wagi_forge() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one(
            "/forge",
            P1_WAGI_FORGE,
            "[component.app.limits]\nmax_body = \"1KiB\"",
        ),
        &[],
    );
    // A declared empty body followed by a forged response: all of it is the
    // body of one response, and the next request gets its own answer.
    let (smuggled, next) = two_on_one_connection(&serve, "/forge?smuggle");
    let forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
    assert_eq!(smuggled.expect(200), forged);
    let length = forged.len().to_string();
    assert_eq!(smuggled.header("content-length"), Some(length.as_str()));
    assert_eq!(next.expect(200), "");
    // A declared length longer than the body does not swallow the next
    // response; framing and connection fields are Tern's.
    let (long, next) = two_on_one_connection(&serve, "/forge?long");
    assert_eq!(long.expect(200), "short");
    assert_eq!(long.header("content-length"), Some("5"));
    assert_eq!(long.header("transfer-encoding"), None);
    assert_eq!(long.header("connection"), None);
    assert_eq!(next.expect(200), "");
    // No protocol switch.
    let switch = serve.get("/forge?switch");
    switch.expect(500);
    let id = switch.header("x-request-id").unwrap();
    let line = serve.wait_for_log(&format!("{id} GET /forge 500"));
    assert!(
        line.contains("bad Status \"101 Switching Protocols\""),
        "{line}"
    );
    // Output past max_body is an error, not a truncated 200.
    assert_eq!(serve.get("/forge?big=1024").expect(200).len(), 1024);
    let big = serve.get("/forge?big=1025");
    big.expect(500);
    let id = big.header("x-request-id").unwrap();
    let line = serve.wait_for_log(&format!("{id} GET /forge 500"));
    assert!(
        line.contains("larger than the limit of 1KiB (max_body)"),
        "{line}"
    );
    let huge = serve.get("/forge?big=200000");
    huge.expect(500);
    let id = huge.header("x-request-id").unwrap();
    let line = serve.wait_for_log(&format!("{id} GET /forge 500"));
    assert!(
        line.contains("larger than the response limit of 1KiB"),
        "{line}"
    );
    // Control characters a guest writes cannot forge a log line.
    serve.get("/forge?stderr").expect(200);
    let line = serve.wait_for_log("app stderr: first line");
    assert!(
        line.ends_with(
            "app stderr: first line\\r2026-01-01T00:00:00.000Z forged GET / 200\\u{1b}[2J"
        ),
        "{line}"
    );
    assert!(!serve.log().contains("\r"), "{}", serve.log());
}

#[test]
fn wasi_http_guest_cannot_set_framing_or_request_id() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one("/echo", HTTP_ECHO, ""), &[]);
    let created = serve.get("/echo?status=201");
    created.expect(201);
    assert_eq!(created.header("x-request-id"), None);
    let empty = serve.get("/echo?status=204");
    assert_eq!(empty.status, 204);
    assert_eq!(empty.header("content-length"), None);
    for status in ["101", "103", "600"] {
        let refused = serve.get(&format!("/echo?status={status}"));
        refused.expect(500);
        let id = refused.header("x-request-id").unwrap();
        assert_ne!(id, "chosen-by-the-guest");
        let line = serve.wait_for_log(&format!("{id} GET /echo 500"));
        assert!(
            line.contains(&format!("guest set status {status}, which is not a final")),
            "{line}"
        );
    }
}

/// A client that sends a head and one byte of its body, then stalls: it
/// waits for `100 Continue`, which Tern sends only once it reads the body.
fn stalled_body(serve: &Serve, path: &str) -> std::net::TcpStream {
    let stream = serve.connect();
    (&stream)
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    reader.read_line(&mut line).unwrap();
    (&stream).write_all(b"x").unwrap();
    stream
}

#[test]
fn wagi_body_is_read_under_the_deadline_without_a_slot() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one(
            "/echo",
            P1_WAGI_ECHO,
            "[component.app.limits]\nmax_concurrent = 1\ntimeout = \"3s\"",
        ),
        &[],
    );
    // The stalled client is in Tern's hands, reading its body; the route's
    // one slot is still free for a client that sends its body at once.
    let stalled = stalled_body(&serve, "/echo");
    let body = serve.post("/echo", "quick").expect(200).to_string();
    assert!(body.ends_with("body: quick"), "{body}");
    // At the deadline the stalled client gets 408, and a log line.
    let mut reader = BufReader::new(stalled);
    let response = read_response(&mut reader);
    assert_eq!(response.status, 408, "{response:?}");
    let line = serve.wait_for_log("POST /echo 408");
    assert!(
        line.contains("request body not received within the deadline of 3s"),
        "{line}"
    );
}

#[test]
fn a_client_that_never_reads_is_disconnected() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one("/forge", P1_WAGI_FORGE, ""),
        &["--write-timeout", "1s"],
    );
    serve.never_read_a_big_response();
    serve.get("/forge").expect(200);
}

#[test]
fn refused_heads_are_logged() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one("/forge", P1_WAGI_FORGE, ""),
        &["--max-header-size", "8KiB"],
    );
    let big = format!(
        "GET /forge HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9 << 10)
    );
    assert_eq!(serve.send(&big).status, 431);
    let line = serve.wait_for_log(" 431 ");
    assert!(line.contains("request head larger than 8KiB"), "{line}");
    // Exactly: a head a little over the limit, sent in one segment, is
    // refused too (hyper's buffer alone let through up to half as much
    // again), and one just under it is served.
    let head = |size: usize| {
        let start = "GET /forge HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Fill: ";
        let filler = size - start.len() - "\r\n\r\n".len();
        format!("{start}{}\r\n\r\n", "f".repeat(filler))
    };
    assert_eq!(serve.send(&head(8 * 1024 + 200)).status, 431);
    serve.send(&head(8 * 1024 - 200)).expect(200);
    // Malformed heads get hyper's 400; heads RFC 9112 rejects get Tern's.
    assert_eq!(
        serve.send("GET /forge HTTP/1.1\r\nNo colon\r\n\r\n").status,
        400
    );
    let line = serve.wait_for_log(" - - 400 ");
    assert!(line.contains("malformed request"), "{line}");
    for (head, why) in [
        ("Host: a\r\nHost: b\r\n", "more than one Host header"),
        ("", "no Host header"),
        ("Host: user@evil.test\r\n", "Host is not a valid authority"),
        ("Host: a b\r\n", "Host is not a valid authority"),
    ] {
        let response = serve.send(&format!(
            "GET /forge HTTP/1.1\r\n{head}Connection: close\r\n\r\n"
        ));
        response.expect(400);
        let id = response.header("x-request-id").unwrap();
        let line = serve.wait_for_log(&format!("{id} GET /forge 400"));
        assert!(line.ends_with(why), "{line}");
    }
    // HTTP/1.0 may leave it out; an absolute-form target's authority wins.
    serve.send("GET /forge HTTP/1.0\r\n\r\n").expect(200);
    serve
        .send("GET http://example.test/forge HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
        .expect(200);
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_however_the_guest_reads() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one(
            "/body",
            HTTP_BODY,
            "[component.app.limits]\nmax_body = \"64KiB\"",
        ),
        &[],
    );
    let chunk = "x".repeat(16 << 10);
    for path in ["/body", "/body?lenient"] {
        let stream = serve.connect();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        (&stream).write_all(head.as_bytes()).unwrap();
        // 80 KiB in 16 KiB chunks; the writer stops when the server does.
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..5 {
                    let frame = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                    if (&stream).write_all(frame.as_bytes()).is_err() {
                        return;
                    }
                }
                let _ = (&stream).write_all(b"0\r\n\r\n");
            });
            let response = read_response(&mut reader);
            assert_eq!(response.status, 413, "{path}: {response:?}");
        });
    }
    for n in 1..=2 {
        let line = serve.wait_for_nth_log("POST /body 413", n);
        assert!(line.contains("request body larger than 64KiB"), "{line}");
    }
    // Within the limit the careless reader gets the whole body.
    let body = "y".repeat(60 << 10);
    assert_eq!(
        serve.post("/body?lenient", &body).expect(200),
        format!("read {} bytes", body.len())
    );
}

#[test]
fn a_declared_body_over_the_limit_gets_413_while_still_sending() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one(
            "/body",
            HTTP_BODY,
            "[component.app.limits]\nmax_body = \"1KiB\"",
        ),
        &[],
    );
    let stream = serve.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let total = 4 << 20;
    let head = format!("POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: {total}\r\n\r\n");
    (&stream).write_all(head.as_bytes()).unwrap();
    std::thread::scope(|s| {
        // The client keeps sending; Tern refuses at the head and keeps
        // reading until the response is out and the client is done.
        s.spawn(|| {
            let block = vec![b'z'; 64 << 10];
            for _ in 0..(total / block.len()) {
                if (&stream).write_all(&block).is_err() {
                    return;
                }
            }
        });
        let response = read_response(&mut reader);
        assert_eq!(response.status, 413, "{response:?}");
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    serve.wait_for_log("POST /body 413");
}

#[test]
fn connections_are_capped_and_idle_ones_make_room() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one("/forge", P1_WAGI_FORGE, ""),
        &[
            "--max-connections",
            "1",
            "--header-timeout",
            "1s",
            "--threads",
            "1",
        ],
    );
    // One idle connection takes the only place; a second client is served
    // only once the head timeout has closed the idle one, so by the time its
    // answer arrives the idle connection has seen the server's FIN.
    let idle = serve.connect();
    serve.get("/forge").expect(200);
    idle.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match (&idle).read(&mut byte) {
        Ok(0) => {}
        other => panic!("served while the only place was taken (idle connection: {other:?})"),
    }
}

#[test]
fn wagi_bodies_held_at_once_share_512mib() {
    let tern = Tern::new();
    // One body may be 1GiB here; the bodies held for WAGI guests at once
    // may not pass 512MiB between them.
    let serve = Serve::start(
        &tern,
        &one("/echo", P1_WAGI_ECHO, ""),
        &["--max-body", "1GiB"],
    );
    let stream = serve.connect();
    let mut sending = stream.try_clone().unwrap();
    let chunks = 600;
    let writer = std::thread::spawn(move || {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            chunks << 20
        );
        sending.write_all(head.as_bytes())?;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..chunks {
            sending.write_all(&chunk)?;
        }
        std::io::Result::Ok(())
    });
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader);
    assert_eq!(response.status, 503, "{response:?}");
    let line = serve.wait_for_log("POST /echo 503");
    assert!(
        line.contains("request bodies buffered for WAGI guests take 512 MiB already"),
        "{line}"
    );
    // Tern stops reading the refused body soon: the client's writes end,
    // all sent or cut off.
    let _ = writer.join().unwrap();
    // What the refused body held is given back: the next is buffered.
    let body = serve.post("/echo", "after").expect(200).to_string();
    assert!(body.ends_with("body: after"), "{body}");
}
