//! `tern serve`: routing, both executors, grants, isolation between
//! requests, and the access log.

use std::io::{BufReader, Write as _};

use test_programs::*;

use crate::serving::{Part, Serve, manifest, read_response, write_app};
use crate::support::{CANARY, Tern};

/// A manifest with one route to one component, `app`.
pub(crate) fn one(route: &str, source: &str, extra: &str) -> String {
    manifest(&[Part {
        route,
        id: "app",
        source,
        extra,
    }])
}

#[test]
pub fn http_hello() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one("/hello", HTTP_HELLO, ""), &[]);
    let response = serve.get("/hello");
    assert_eq!(response.expect(200), "hello, world\n");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    // The routes are listed after the listening line.
    serve.wait_for_log("/hello  -> app (wasi-http)");
    let line = serve.wait_for_log("GET /hello 200");
    // TIME ID METHOD PATH STATUS DURATION COMPONENT
    let fields: Vec<&str> = line.split(' ').collect();
    let [time, id, "GET", "/hello", "200", duration, "app"] = fields[..] else {
        panic!("unexpected access line: {line}");
    };
    let (prefix, seq) = id.split_once('-').unwrap_or_default();
    assert!(
        prefix.len() == 8 && u32::from_str_radix(prefix, 16).is_ok() && seq.parse::<u64>().is_ok(),
        "{line}"
    );
    assert!(
        time.len() == 24 && time.starts_with("20") && time.ends_with('Z'),
        "{line}"
    );
    let millis = duration.strip_suffix("ms").unwrap_or_default();
    assert!(
        millis.parse::<f64>().is_ok() && millis.contains('.'),
        "{line}"
    );
}

#[test]
fn exact_and_wildcard_routes_and_404() {
    let tern = Tern::new();
    let toml = manifest(&[
        Part {
            route: "/hello",
            id: "hello",
            source: HTTP_HELLO,
            extra: "",
        },
        Part {
            route: "/api/...",
            id: "api",
            source: HTTP_ECHO,
            extra: "",
        },
        Part {
            route: "/api/admin/...",
            id: "admin",
            source: HTTP_ECHO,
            extra: "",
        },
    ]);
    let serve = Serve::start(&tern, &toml, &[]);
    serve.get("/hello").expect(200);
    // Exact means exact.
    assert_eq!(serve.get("/hello/there").status, 404);
    assert_eq!(serve.get("/nowhere").status, 404);
    assert_eq!(serve.get("/apix").status, 404);

    let body = serve.get("/api/items/7?q=1").expect(200).to_string();
    assert!(body.contains("path: /api/items/7?q=1"), "{body}");
    assert!(
        body.contains("header: tern-matched-route: /api/..."),
        "{body}"
    );
    assert!(body.contains("header: tern-path-info: /items/7"), "{body}");
    // The longest prefix wins.
    let body = serve.get("/api/admin/users").expect(200).to_string();
    assert!(
        body.contains("header: tern-matched-route: /api/admin/..."),
        "{body}"
    );
    assert!(body.contains("header: tern-path-info: /users"), "{body}");
    let body = serve.get("/api").expect(200).to_string();
    assert!(
        body.contains("header: tern-path-info: \n") || body.contains("header: tern-path-info:\n"),
        "{body}"
    );
    serve.wait_for_log("GET /nowhere 404");
}

#[test]
pub fn http_echo() {
    let tern = Tern::new();
    let serve = {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("static")).unwrap();
        std::fs::write(dir.path().join("static/hello.txt"), "from the static dir\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside the mount\n").unwrap();
        let toml = one(
            "/echo/...",
            HTTP_ECHO,
            "environment = { GREETING = \"hi\" }\nfiles = [{ source = \"static\", destination = \"/static\" }]",
        );
        write_app(dir.path(), &toml);
        Serve::start_in(&tern, dir, &[])
    };
    let response = serve.send(
        "POST /echo/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Tern-Path-Info: /spoofed\r\nX-Custom: yes\r\nProxy-Authorization: Basic cHJveHk=\r\n\
         Content-Length: 9\r\n\r\nbody data",
    );
    let body = response.expect(200);
    assert!(body.contains("method: POST"), "{body}");
    assert!(body.contains("header: x-custom: yes"), "{body}");
    assert!(
        body.contains("header: tern-client-addr: 127.0.0.1:"),
        "{body}"
    );
    // A client cannot pose as the router.
    assert!(body.contains("header: tern-path-info: /x"), "{body}");
    assert!(!body.contains("/spoofed"), "{body}");
    // Hop-by-hop headers, proxy credentials among them, stop at Tern.
    assert!(!body.contains("proxy-authorization"), "{body}");
    assert!(!body.contains("header: connection"), "{body}");
    assert!(body.contains("env: GREETING=hi"), "{body}");
    assert!(!body.contains(CANARY.1), "host environment leaked: {body}");
    assert_eq!(
        body.lines().filter(|l| l.starts_with("env: ")).count(),
        1,
        "{body}"
    );
    assert!(body.ends_with("body: body data"), "{body}");

    let body = serve
        .get("/echo/f?file=/static/hello.txt")
        .expect(200)
        .to_string();
    assert!(body.contains("file: from the static dir"), "{body}");
    // Only the mount is visible, and it is read-only.
    for path in ["/secret.txt", "/static/../secret.txt", "/etc/passwd"] {
        let body = serve
            .get(&format!("/echo/f?file={path}"))
            .expect(200)
            .to_string();
        assert!(body.contains("file error:"), "{path}: {body}");
        assert!(!body.contains("outside the mount"), "{body}");
    }
}

/// The host's keep-resident size for linear memory
/// (`linear_memory_keep_resident` in crates/http/src/engine.rs): a slot's
/// memory below it is reset by memset, above it by giving the pages back.
const KEEP_RESIDENT: u64 = 2 << 20;

/// The numbers after `prefix` in `text`, up to the next `;` or `,`.
fn offsets(text: &str, prefix: &str) -> Vec<u64> {
    let Some((_, rest)) = text.split_once(prefix) else {
        return Vec::new();
    };
    rest.split([';', ','])
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{text}")))
        .collect()
}

/// Whether `offsets` has one on each side of [`KEEP_RESIDENT`].
fn below_and_above(offsets: &[u64]) -> bool {
    offsets.iter().any(|&o| o < KEEP_RESIDENT) && offsets.iter().any(|&o| o >= KEEP_RESIDENT)
}

#[test]
fn grants_outside_the_app_directory_are_the_operators_call() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let toml = one(
        "/echo/...",
        HTTP_ECHO,
        "files = [{ source = \"/\", destination = \"/host\" }]",
    );
    write_app(dir.path(), &toml);
    std::fs::write(dir.path().join("marker.txt"), "seen through /host\n").unwrap();
    let app = dir.path().to_str().unwrap();

    // `/` would show the guest every file Tern can read, /proc/self/environ
    // and its secrets among them: refused unless the operator says so.
    let out = tern.run(&["serve", app, "--listen", "127.0.0.1:0"]);
    out.code(1)
        .one_line_error("component.app.files[1].source: \"/\" is outside the app directory ");
    out.stderr_has("an operator can allow it with --allow-outside-app-dir");

    // Allowed by flag, the grant works, and Tern says at start what reaches out.
    let note = "tern: component app reads / from outside the app directory";
    let serve = Serve::spawn(tern.command(), dir.path(), &["--allow-outside-app-dir"]);
    serve.wait_for_log(note);
    assert_eq!(
        serve
            .log()
            .matches("from outside the app directory")
            .count(),
        1,
        "{}",
        serve.log()
    );
    let marker = std::fs::canonicalize(dir.path().join("marker.txt")).unwrap();
    let body = serve
        .get(&format!("/echo/f?file=/host{}", marker.display()))
        .expect(200)
        .to_string();
    assert!(body.contains("file: seen through /host"), "{body}");
    drop(serve);

    // Allowed by the runtime config, likewise.
    let rc = dir.path().join("operator.toml");
    std::fs::write(&rc, "allow_outside_app_dir = true\n").unwrap();
    let serve = Serve::spawn(
        tern.command(),
        dir.path(),
        &["--runtime-config", rc.to_str().unwrap()],
    );
    serve.wait_for_log(note);
}

#[test]
pub fn http_residue() {
    let tern = Tern::new();
    // One slot in the whole pool: every request reuses the instance memory
    // the one before it dirtied.
    let serve = Serve::start(
        &tern,
        &one(
            "/...",
            HTTP_RESIDUE,
            "[component.app.limits]\nmax_concurrent = 1",
        ),
        &[],
    );
    let rev = |s: &str| s.chars().rev().collect::<String>();
    // Each request waits for the one before to be logged, which happens
    // once its task has given the one slot back: a client that sends the
    // next request as soon as a body ends can otherwise find it still held.
    let answered = std::cell::Cell::new(0);
    let get = |path: String| {
        let response = serve.get(&path);
        answered.set(answered.get() + 1);
        serve.wait_for_nth_log(" GET /", answered.get());
        response
    };

    // The positive control: within one request, the scan finds a secret on
    // both sides of the keep-resident size.
    let control = "tern-control-0123456789";
    let answer = get(format!("/control?reversed={}", rev(control)))
        .expect(200)
        .to_string();
    let stored = offsets(&answer, "stored at ");
    let found = offsets(&answer, "found at ");
    assert!(
        stored.len() == 2 && below_and_above(&stored),
        "control: {answer}"
    );
    assert!(
        stored.iter().all(|o| found.contains(o)),
        "control: the scan missed a copy: {answer}"
    );
    assert!(below_and_above(&found), "control: {answer}");

    let secret = "tern-secret-0123456789";
    let answer = get(format!("/write?secret={secret}"))
        .expect(200)
        .to_string();
    let stored = offsets(&answer, "stored at ");
    assert!(stored.len() == 2 && below_and_above(&stored), "{answer}");
    // Every later instance, in the same slot, starts from zeroed memory:
    // neither secret survives, on either side.
    for _ in 0..3 {
        for reversed in [rev(secret), rev(control)] {
            assert_eq!(
                get(format!("/scan?reversed={reversed}")).expect(200),
                "clean"
            );
        }
    }
}

#[test]
pub fn wagi_echo() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one(
            "/cgi/...",
            P1_WAGI_ECHO,
            "environment = { GREETING = \"hi\" }",
        ),
        &[],
    );
    let response = serve.send(
        "POST /cgi/items/7?q=1&r=2 HTTP/1.1\r\nHost: example.test:8080\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nX-Trace: abc\r\nAuthorization: Bearer hunter2\r\n\
         Content-Length: 5\r\n\r\nhello",
    );
    let body = response.expect(200);
    assert_eq!(response.header("content-type"), Some("text/plain"));
    for line in [
        "env: REQUEST_METHOD=POST",
        "env: SCRIPT_NAME=/cgi",
        "env: PATH_INFO=/items/7",
        "env: QUERY_STRING=q=1&r=2",
        "env: CONTENT_TYPE=text/plain",
        "env: CONTENT_LENGTH=5",
        "env: SERVER_NAME=example.test",
        &format!("env: SERVER_PORT={}", serve.addr.port()),
        "env: SERVER_PROTOCOL=HTTP/1.1",
        "env: GATEWAY_INTERFACE=CGI/1.1",
        "env: HTTP_X_TRACE=abc",
        "env: REMOTE_ADDR=127.0.0.1",
        "env: GREETING=hi",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in {body}"
        );
    }
    assert!(
        !body.contains("hunter2"),
        "credentials passed to CGI: {body}"
    );
    assert!(!body.contains(CANARY.1), "host environment leaked: {body}");
    assert!(body.ends_with("body: hello"), "{body}");
    serve.wait_for_log("POST /cgi/items/7 200");
}

#[test]
pub fn wagi_status() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one("/items", P1_WAGI_STATUS, "executor = \"wagi\""),
        &[],
    );
    let response = serve.get("/items");
    assert_eq!(response.expect(201), "created\n");
    assert_eq!(response.header("location"), Some("/items/7"));
    assert_eq!(response.header("x-custom"), Some("yes"));
    assert_eq!(response.header("status"), None);
}

#[test]
pub fn wagi_bad_output() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one("/bad", P1_WAGI_BAD_OUTPUT, ""), &[]);
    let response = serve.get("/bad");
    let body = response.expect(500);
    let id = response.header("x-request-id").unwrap();
    assert_eq!(
        body,
        format!("500 Internal Server Error\nrequest id: {id}\n")
    );
    let line = serve.wait_for_log(id);
    assert!(line.contains("malformed CGI response"), "{line}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one("/hello", HTTP_HELLO, ""), &[]);
    let stream = serve.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..3 {
        (&stream)
            .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader).expect(200), "hello, world\n");
    }
}

#[test]
fn json_access_log() {
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &one("/hello", HTTP_HELLO, ""),
        &["--log-format", "json"],
    );
    serve.get("/hello?secret=x").expect(200);
    let line = serve.wait_for_log("\"status\":200");
    for field in [
        "\"method\":\"GET\"",
        "\"path\":\"/hello\"",
        "\"component\":\"app\"",
        "\"id\":\"",
        "\"duration_ms\":",
        "\"time\":\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    // Query strings may carry tokens; the log keeps the path only.
    assert!(!line.contains("secret"), "{line}");
    // Every line on stderr is a JSON object, Tern's own lines included.
    serve.terminate();
    let (code, log) = serve.wait();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("\"message\":\"tern: shutting down"), "{log}");
    for line in log.lines().filter(|l| *l != "\u{0}eof") {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"time\":\""),
            "not a JSON line: {line}"
        );
    }
}

#[test]
fn an_idle_server_takes_no_wake_ups() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &one("/hello", HTTP_HELLO, ""), &[]);
    // A guest ran, so the epoch ticker woke; it sleeps again soon after.
    serve.get("/hello").expect(200);
    let pid = serve.pid();
    // Context switches of every thread of the server so far.
    let switches = || -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
            .flat_map(|status| {
                let counts: Vec<u64> = status
                    .lines()
                    .filter(|line| line.contains("ctxt_switches:"))
                    .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
                    .collect();
                counts
            })
            .sum()
    };
    // A ticker moving the epoch every millisecond would wake the process
    // about 500 times in each window; a quiet one, not at all.
    let windows: Vec<u64> = (0..20)
        .map(|_| {
            let before = switches();
            std::thread::sleep(std::time::Duration::from_millis(500));
            switches().saturating_sub(before)
        })
        .take_while(|woke| *woke >= 25)
        .collect();
    assert!(
        windows.len() < 20,
        "the idle server kept waking up: {windows:?} wake-ups per 500 ms"
    );
    // And a request after the quiet spell is served as before.
    serve.get("/hello").expect(200);
}
