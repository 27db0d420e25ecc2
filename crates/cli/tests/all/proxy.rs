//! Sidecar mode: routes forwarded to upstream services through proxy-wasm
//! filters. The filters are the published proxy-wasm crate's own examples,
//! built from its source, and hostile ones of ours; the upstreams are a
//! Tern app (`http_echo`) and small stub servers on real sockets.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use test_programs::*;

use crate::serving::{Serve, read_response};
use crate::support::{Tern, tern_panic};

/// The echo app every proxied route forwards to unless it says otherwise.
fn echo(tern: &Tern) -> Serve {
    Serve::start(tern, &crate::serve::one("/...", HTTP_ECHO, ""), &[])
}

/// A manifest with one route, `/...`, to `upstream` through `filters`,
/// and `rest` (filter and upstream tables) after it.
fn proxy_app(upstream: &str, filters: &[&str], rest: &str) -> String {
    let filters: Vec<String> = filters.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n[[route]]\npath = \"/...\"\nupstream = \"{upstream}\"\nfilters = [{}]\n\n{rest}\n",
        filters.join(", ")
    )
}

/// Serves [`proxy_app`] to the Tern app `upstream` through `filters`.
fn proxied(tern: &Tern, upstream: &Serve, filters: &[&str], rest: &str) -> Serve {
    let url = format!("http://{}", upstream.addr);
    Serve::start(tern, &proxy_app(&url, filters, rest), &[])
}

/// A `[filter.NAME]` table for the filter at `source`, with `extra` lines.
fn filter(name: &str, source: &str, extra: &str) -> String {
    format!("[filter.{name}]\nsource = \"{source}\"\n{extra}\n")
}

/// A one-connection-at-a-time HTTP server answering every request with
/// what `answer` writes, after reading the request head and body; `answer`
/// is given the request line (`GET /key HTTP/1.1`).
struct Stub {
    addr: SocketAddr,
}

impl Stub {
    fn start(answer: impl Fn(&str, &mut TcpStream) + Send + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                let mut request_line = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if request_line.is_empty() {
                        request_line = line.trim_end().to_string();
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; length];
                        let _ = reader.read_exact(&mut body);
                        answer(&request_line, &mut stream);
                        break;
                    }
                }
            }
        });
        Stub { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn reply(stream: &mut TcpStream, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

#[test]
fn forwards_with_hop_by_hop_fields_dropped_and_forwarding_fields_added() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let serve = proxied(&tern, &upstream, &[], "");
    serve.wait_for_log("/...  -> upstream http://");
    let response = serve.request(
        "POST",
        "/api/items?q=1",
        &[
            ("Connection", "keep-alive, x-hop"),
            ("X-Hop", "private to this hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Kept", "end to end"),
        ],
        "streamed both ways",
    );
    let body = response.expect(200);
    assert!(
        body.contains("method: POST\npath: /api/items?q=1\n"),
        "{body}"
    );
    assert!(body.contains("header: x-kept: end to end"), "{body}");
    assert!(
        body.contains("header: x-forwarded-for: 10.0.0.1, 127.0.0.1"),
        "{body}"
    );
    assert!(body.contains("header: x-forwarded-proto: http"), "{body}");
    assert!(
        body.contains("header: forwarded: for=127.0.0.1;proto=http;host=\"localhost\""),
        "{body}"
    );
    assert!(body.ends_with("body: streamed both ways"), "{body}");
    for hop in ["x-hop", "keep-alive"] {
        assert!(
            !body.contains(&format!("header: {hop}:")),
            "{hop} forwarded: {body}"
        );
    }
    let line = serve.wait_for_log("POST /api/items 200");
    assert!(line.contains("upstream http://"), "{line}");
}

#[test]
fn an_upstream_that_is_down_is_502_and_one_that_is_silent_is_504() {
    let tern = Tern::new();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (hold, held) = mpsc::channel::<TcpStream>();
    let hold = Mutex::new(hold);
    let silent = Stub::start(move |_, stream| {
        let _ = hold.lock().unwrap().send(stream.try_clone().unwrap());
    });
    let app = format!(
        "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n[[route]]\npath = \"/down\"\nupstream = \"http://{closed}\"\n\n[[route]]\npath = \"/silent\"\nupstream = \"silent\"\n\n[upstream.silent]\nurl = \"{}\"\ntimeout = \"300ms\"\n",
        silent.url()
    );
    let serve = Serve::start(&tern, &app, &[]);
    let response = serve.get("/down");
    assert_eq!(response.status, 502);
    assert!(!response.body.contains("127.0.0.1"), "{}", response.body);
    let line = serve.wait_for_log("GET /down 502");
    assert!(line.contains("cannot connect"), "{line}");
    assert_eq!(serve.get("/silent").status, 504);
    let line = serve.wait_for_log("GET /silent 504");
    assert!(line.contains("did not answer within"), "{line}");
    drop(held);
}

#[test]
fn http_headers_answers_hello_itself_and_forwards_the_rest() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let tables = filter("headers", PROXY_WASM_HTTP_HEADERS, "log_level = \"trace\"");
    let serve = proxied(&tern, &upstream, &["headers"], &tables);
    let hello = serve.get("/hello");
    assert_eq!(hello.expect(200), "Hello, World!\n");
    assert_eq!(hello.header("hello"), Some("World"));
    assert_eq!(hello.header("powered-by"), Some("proxy-wasm"));
    let other = serve.get("/other");
    assert!(
        other.expect(200).contains("path: /other\n"),
        "{}",
        other.body
    );
    // Its trace lines: each request header, each response header, the end.
    serve.wait_for_log("filter:headers trace: #");
    serve.wait_for_log("-> :path: /other");
    serve.wait_for_log("<- :status: 200");
    serve.wait_for_log("completed.");
}

/// The upstream http_auth_random calls: a stub answering every request
/// with one byte, 2 (even: allowed) until the test stores another.
fn byte_stub() -> (Arc<AtomicU8>, Stub) {
    let byte = Arc::new(AtomicU8::new(2));
    let answer = byte.clone();
    let stub = Stub::start(move |_, stream| reply(stream, &[answer.load(Ordering::SeqCst)]));
    (byte, stub)
}

#[test]
fn http_auth_random_lets_through_on_an_even_byte_and_refuses_on_an_odd_one() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let (byte, auth) = byte_stub();
    let rest = format!(
        "{}\n[upstream.httpbin]\nurl = \"{}\"\n",
        filter(
            "auth",
            PROXY_WASM_HTTP_AUTH_RANDOM,
            "upstreams = [\"httpbin\"]\nlog_level = \"trace\""
        ),
        auth.url()
    );
    let serve = proxied(&tern, &upstream, &["auth"], &rest);
    let allowed = serve.get("/private");
    assert!(
        allowed.expect(200).contains("path: /private\n"),
        "{}",
        allowed.body
    );
    assert_eq!(allowed.header("powered-by"), Some("proxy-wasm"));
    serve.wait_for_log("Access granted.");

    byte.store(7, Ordering::SeqCst);
    let refused = serve.get("/private");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, "Access forbidden.\n");
    assert_eq!(refused.header("powered-by"), Some("proxy-wasm"));
    serve.wait_for_log("Access forbidden.");
}

#[test]
fn http_body_redacts_a_body_with_a_secret_and_passes_others() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let serve = proxied(
        &tern,
        &upstream,
        &["body"],
        &filter("body", PROXY_WASM_HTTP_BODY, ""),
    );
    let plain = serve.post("/notes", "nothing to hide");
    let plain_body = plain.expect(200).to_string();
    assert!(
        plain_body.ends_with("body: nothing to hide"),
        "{plain_body}"
    );
    let secret = serve.post("/notes", "the secret is 42");
    let body = secret.expect(200);
    let Some(size) = body
        .strip_prefix("Original message body (")
        .and_then(|rest| rest.strip_suffix(" bytes) redacted."))
    else {
        panic!("not redacted: {body:?}");
    };
    // The echo of the secret body is one byte longer than the plain one's.
    assert_eq!(size.parse::<usize>().unwrap(), plain_body.len() + 1);
}

#[test]
fn http_config_sets_its_configured_header_on_every_response() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let serve = proxied(
        &tern,
        &upstream,
        &["config"],
        &filter(
            "config",
            PROXY_WASM_HTTP_CONFIG,
            "configuration = \"set by tern.toml\"",
        ),
    );
    for path in ["/", "/a", "/b/c"] {
        let response = serve.get(path);
        response.expect(200);
        assert_eq!(response.header("custom-header"), Some("set by tern.toml"));
    }
}

#[test]
fn hello_world_runs_as_a_service_and_ticks() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    // A root-only filter (it makes no HTTP context): named by no route,
    // it runs as a service from the start.
    let serve = proxied(
        &tern,
        &upstream,
        &[],
        &filter("hello", PROXY_WASM_HELLO_WORLD, ""),
    );
    serve.wait_for_log("filter:hello info: Hello, World!");
    // Every 5 s: the time from WASI's clock and a byte from its random.
    let tick = serve.wait_for_log("your lucky number is");
    assert!(tick.contains("It's 20"), "{tick}");
    serve.get("/").expect(200);
}

#[test]
fn proxy_fetch() {
    // The common Envoy pattern: a filter refreshing a key from an upstream
    // on a tick, outside any request, in each worker's VM and in a service.
    let tern = Tern::new();
    let upstream = echo(&tern);
    let (seen, heard) = mpsc::channel();
    let keys = Stub::start(move |line, stream| {
        let _ = seen.send(line.to_string());
        reply(stream, b"k-123");
    });
    let tables = filter(
        "fetch",
        PROXY_FETCH,
        "configuration = \"keys\"\nupstreams = [\"keys\"]",
    ) + &filter(
        "svc",
        PROXY_FETCH,
        "configuration = \"keys\"\nupstreams = [\"keys\"]",
    ) + &filter("stray", PROXY_FETCH, "configuration = \"elsewhere\"")
        + &format!("\n[upstream.keys]\nurl = \"{}\"\n", keys.url());
    let serve = proxied(&tern, &upstream, &["fetch"], &tables);

    // The services (`svc`, and `stray` whose upstream is not its own) tick
    // from the start; the routed filter's VM starts with a request.
    serve.wait_for_log("filter:svc info: fetched 200: k-123");
    serve.wait_for_log(
        "filter:stray warn: dispatch_http_call to `elsewhere` refused: not a declared upstream",
    );
    serve.wait_for_log("filter:stray warn: dispatch refused: BadArgument");
    let first = serve.get("/");
    first.expect(200);
    serve.wait_for_log("filter:fetch info: fetched 200: k-123");
    // The answer is in the filter's shared data: a later response carries
    // it.
    let stamped = (0..200)
        .map(|_| serve.get("/").header("x-key").map(str::to_string))
        .find(|key| key.as_deref() == Some("k-123"));
    assert_eq!(stamped, Some(Some("k-123".to_string())), "{}", serve.log());
    // The call went out as the filter made it, and only to its upstream.
    assert_eq!(
        heard.recv_timeout(Duration::from_secs(10)).unwrap(),
        "GET /key HTTP/1.1"
    );
}

#[test]
fn a_chain_runs_in_route_order_on_requests_and_responses() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let tables = filter("a", PROXY_TAG, "configuration = \"A\"")
        + &filter("b", PROXY_TAG, "configuration = \"B\"");
    let serve = proxied(&tern, &upstream, &["b", "a"], &tables);
    let response = serve.get("/");
    let body = response.expect(200);
    assert!(
        body.contains("header: x-chain: B\nheader: x-chain: A\n"),
        "{body}"
    );
    // Both filters saw the response in the same order.
    assert_eq!(response.headers_named("x-filter-tag"), ["B", "A"]);

    // A tick period a filter sets while serving a request starts its VM's
    // ticks, as one set at its start does.
    let ticking = serve.request("GET", "/", &[("x-tick-ms", "20")], "");
    ticking.expect(200);
    serve.wait_for_log("tick B");
    serve.wait_for_log("tick A");
}

/// A GET of `path` on a thread of its own, for a request the upstream
/// holds until the test lets it go.
fn get_in_background(addr: SocketAddr, path: &str) -> thread::JoinHandle<crate::serving::Response> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        read_response(&mut BufReader::new(stream))
    })
}

#[test]
fn filters_run_in_order_and_a_new_version_takes_over_without_cutting_requests() {
    let tern = Tern::new();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let (arrived, arrival) = mpsc::channel::<()>();
    let arrived = Mutex::new(arrived);
    // Answers each request once the test lets it.
    let upstream = Stub::start(move |_, stream| {
        arrived.lock().unwrap().send(()).unwrap();
        gate.lock().unwrap().recv().unwrap();
        reply(stream, b"from upstream");
    });
    let manifest = |a: &str| {
        proxy_app(
            &upstream.url(),
            &["a", "b"],
            &format!(
                "{}{}",
                filter("a", PROXY_TAG, &format!("configuration = \"{a}\"")),
                filter("b", PROXY_TAG, "configuration = \"B\"")
            ),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    crate::serving::write_app(dir.path(), &manifest("A"));
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);

    // A request in flight while the new version comes in.
    let mut held = serve.connect();
    held.write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    arrival.recv().unwrap();
    let text = std::fs::read_to_string(dir.path().join("tern.toml")).unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        text.replace("\"A\"", "\"A2\""),
    )
    .unwrap();
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("tern: reloaded in");
    release.send(()).unwrap();
    let first = read_response(&mut BufReader::new(held));
    assert_eq!(first.expect(200), "from upstream");
    let tags: Vec<&str> = first.headers_named("x-filter-tag");
    assert_eq!(tags, ["A", "B"], "the old version finished the request");

    let next = get_in_background(serve.addr, "/next");
    arrival.recv().unwrap();
    release.send(()).unwrap();
    let next = next.join().unwrap();
    assert_eq!(next.headers_named("x-filter-tag"), ["A2", "B"]);

    // A version whose filter refuses to start never serves.
    let text = std::fs::read_to_string(dir.path().join("tern.toml")).unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        text.replace("\"A2\"", "\"fail-start\""),
    )
    .unwrap();
    serve.signal(libc::SIGHUP);
    let failed = serve.wait_for_log("reload failed");
    assert!(failed.contains("filter.a"), "{failed}");
    assert!(failed.contains("refused its configuration"), "{failed}");
    let after = get_in_background(serve.addr, "/after");
    arrival.recv().unwrap();
    release.send(()).unwrap();
    assert_eq!(
        after.join().unwrap().headers_named("x-filter-tag"),
        ["A2", "B"]
    );
    assert!(tern_panic(&serve.log()).is_none(), "{}", serve.log());
}

#[test]
fn shared_data_queues_properties_and_metrics_work_and_grpc_is_refused() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let serve = Serve::start(
        &tern,
        &proxy_app(
            &format!("http://{}", upstream.addr),
            &["features"],
            &filter("features", PROXY_FEATURES, ""),
        ),
        &["--admin", "127.0.0.1:0"],
    );
    for visit in 1..=3 {
        let response = serve.get("/feat");
        response.expect(200);
        assert_eq!(
            response.header("x-visits"),
            Some(visit.to_string().as_str())
        );
        assert_eq!(response.header("x-path-property"), Some("/feat"));
        assert!(
            response
                .header("x-source-address")
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert_eq!(response.header("x-note"), Some("noted"));
    }
    serve.wait_for_log("filter:features info: queued: visit 3 /feat");
    let grpc = serve.request("GET", "/feat", &[("x-grpc", "1")], "");
    assert_eq!(grpc.header("x-grpc-result"), Some("InternalFailure"));
    serve.wait_for_log("gRPC calls are unimplemented");

    let admin = serve.wait_for_log("admin on http://");
    let addr = admin.rsplit("http://").next().unwrap().trim();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let metrics = read_response(&mut BufReader::new(stream));
    let text = metrics.expect(200);
    for line in [
        "# TYPE proxy_wasm_requests_total counter",
        "proxy_wasm_requests_total{app=\"edge\",filter=\"features\"} 4",
        "proxy_wasm_last_path_length{app=\"edge\",filter=\"features\"} 5",
        "proxy_wasm_path_length_bucket{app=\"edge\",filter=\"features\",le=\"5\"} 4",
        "proxy_wasm_path_length_count{app=\"edge\",filter=\"features\"} 4",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

/// `loop` and `loop_open`: a filter that never returns from a callback,
/// given 50 ms, failing closed and failing open.
fn loop_filters() -> String {
    filter(
        "loop",
        PROXY_LOOP,
        "[filter.loop.limits]\ncallback_time = \"50ms\"",
    ) + &filter(
        "loop_open",
        PROXY_LOOP,
        "failure = \"open\"\n[filter.loop_open.limits]\ncallback_time = \"50ms\"",
    )
}

#[test]
fn hostile_filters_are_stopped_and_everyone_else_is_served() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let chunks = Stub::start(|_, stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nfirst\r\n",
        );
        let _ = stream.flush();
        thread::sleep(Duration::from_millis(100));
        let _ = stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n");
    });
    let echo_url = format!("http://{}", upstream.addr);
    let route = |path: &str, upstream: &str, filter: &str| {
        format!(
            "[[route]]\npath = \"{path}\"\nupstream = \"{upstream}\"\nfilters = [\"{filter}\"]\n\n"
        )
    };
    let app = [
        "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n".to_owned(),
        route("/loop", &echo_url, "loop"),
        route("/loop-open", &echo_url, "loop_open"),
        route("/bomb", &echo_url, "bomb"),
        route("/pointers", &echo_url, "pointers"),
        route("/trap", &chunks.url(), "trap"),
        route("/trap-open", &chunks.url(), "trap_open"),
        route("/undeclared", &echo_url, "undeclared"),
        route("/fresh", &echo_url, "fresh"),
        format!("[[route]]\npath = \"/fine/...\"\nupstream = \"{echo_url}\"\n\n"),
        loop_filters(),
        filter(
            "bomb",
            PROXY_MEMORY_BOMB,
            "[filter.bomb.limits]\nmemory = \"16MiB\"",
        ),
        filter("pointers", PROXY_BAD_POINTERS, ""),
        filter("trap", PROXY_TRAP_BODY, ""),
        filter(
            "trap_open",
            PROXY_TRAP_BODY,
            "configuration = \"hold\"\nfailure = \"open\"",
        ),
        filter("undeclared", PROXY_UNDECLARED, ""),
        filter("fresh", PROXY_TAG, "isolation = \"request\""),
    ]
    .concat();
    let serve = Serve::start(&tern, &app, &[]);

    let looped = serve.get("/loop");
    assert_eq!(looped.status, 500);
    assert!(!looped.body.contains("loop"), "{}", looped.body);
    let line = serve.wait_for_log("GET /loop 500");
    assert!(
        line.contains("filter `loop` ran past its time budget of 50ms"),
        "{line}"
    );
    serve.get("/fine/1").expect(200);

    // Open: the request goes on without the filter.
    let passed = serve.get("/loop-open");
    assert!(
        passed.expect(200).contains("path: /loop-open\n"),
        "{}",
        passed.body
    );
    serve.wait_for_log("the request goes on without it");

    assert_eq!(serve.get("/bomb").status, 500);
    let line = serve.wait_for_log("GET /bomb 500");
    assert!(
        line.contains("ran out of memory (the limit is 16 MiB)"),
        "{line}"
    );
    serve.get("/fine/2").expect(200);

    let pointers = serve.get("/pointers");
    assert_eq!(pointers.expect(200), "survived\n");
    assert_eq!(pointers.header("x-statuses"), Some("6,6,6,6,6"));

    // The head went out before the second piece of the body: cut off.
    let trapped = serve.get("/trap");
    assert_eq!(trapped.status, 200);
    assert!(
        !trapped.complete,
        "a response cut off mid-body ended cleanly"
    );
    assert!(trapped.body.starts_with("first"), "{}", trapped.body);
    assert!(!trapped.body.contains("second"), "{}", trapped.body);
    serve.wait_for_log("trap in the middle of a body");

    // Failing open after changing the first piece and holding it back:
    // what goes on is what the filter was given, nothing lost or changed.
    let held = serve.get("/trap-open");
    assert_eq!(held.expect(200), "firstsecond");
    assert!(held.complete);

    let undeclared = serve.get("/undeclared");
    assert_eq!(undeclared.status, 502);
    assert_eq!(undeclared.body, "dispatch refused: BadArgument\n");
    serve.wait_for_log("dispatch_http_call to `nowhere` refused: not a declared upstream");

    // A fresh VM per request: nothing in the VM carries over.
    for _ in 0..3 {
        assert_eq!(serve.get("/fresh").header("x-vm-requests"), Some("1"));
    }
    serve.get("/fine/3").expect(200);
    assert!(tern_panic(&serve.log()).is_none(), "{}", serve.log());
}

/// A filter with five memories, growing four by 5 MiB each: its memory
/// limit is one budget for all of them.
#[test]
pub fn proxy_memories() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let limit = "[filter.memories.limits]\nmemory = \"16MiB\"";
    let serve = proxied(
        &tern,
        &upstream,
        &["memories"],
        &filter("memories", WAT_PROXY_MEMORIES, limit),
    );
    assert_eq!(serve.get("/").status, 500);
    let line = serve.wait_for_log("GET / 500");
    assert!(
        line.contains("ran out of memory (the limit is 16 MiB)"),
        "{line}"
    );
    assert!(tern_panic(&serve.log()).is_none(), "{}", serve.log());
}

#[test]
fn a_filter_that_is_not_one_is_refused_at_its_line() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    crate::serving::write_app(
        dir.path(),
        &proxy_app(
            "http://127.0.0.1:9",
            &["auth"],
            &filter("auth", HTTP_HELLO, ""),
        ),
    );
    let out = tern.run(&[
        "serve",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    out.code(1)
        .one_line_error("tern.toml:12:1: filter.auth: a component, not a proxy-wasm filter");
}

#[test]
fn a_client_that_never_reads_a_filtered_response_is_disconnected() {
    let tern = Tern::new();
    let upstream = Serve::start(&tern, &crate::serve::one("/forge", P1_WAGI_FORGE, ""), &[]);
    let url = format!("http://{}", upstream.addr);
    let app = proxy_app(
        &url,
        &["config"],
        &filter("config", PROXY_WASM_HTTP_CONFIG, ""),
    );
    let serve = Serve::start(&tern, &app, &["--write-timeout", "1s"]);
    serve.never_read_a_big_response();
    // Everyone else is still served, through the same filter.
    let response = serve.get("/forge");
    response.expect(200);
    assert_eq!(response.header("custom-header"), Some(""));
}

/// A route `path` to the component `id` through `filters`.
fn component_route(path: &str, id: &str, filters: &[&str]) -> String {
    let filters: Vec<String> = filters.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "[[route]]\npath = \"{path}\"\ncomponent = \"{id}\"\nfilters = [{}]\n\n",
        filters.join(", ")
    )
}

#[test]
fn filters_run_in_front_of_a_component_as_in_front_of_an_upstream() {
    let tern = Tern::new();
    let app = format!(
        "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n{}{}[component.echo]\nsource = \"{HTTP_ECHO}\"\n\n{}{}{}{}",
        component_route("/...", "echo", &["a", "headers", "body"]),
        component_route("/sub/...", "echo", &["a"]),
        filter("a", PROXY_TAG, "configuration = \"A\""),
        filter("headers", PROXY_WASM_HTTP_HEADERS, ""),
        filter("body", PROXY_WASM_HTTP_BODY, ""),
        filter(
            "loop",
            PROXY_LOOP,
            "[filter.loop.limits]\ncallback_time = \"50ms\""
        ),
    );
    let serve = Serve::start(&tern, &app, &[]);
    serve.wait_for_log("-> echo (wasi-http via a, headers, body)");

    // Answered by http_headers itself: the guest never runs.
    let hello = serve.get("/hello");
    assert_eq!(hello.expect(200), "Hello, World!\n");
    assert_eq!(hello.header("hello"), Some("World"));
    let line = serve.wait_for_log("GET /hello 200");
    assert!(line.contains("echo"), "{line}");

    // Through the chain both ways: the guest sees the request header the
    // first filter added, the client the response header it added.
    let other = serve.post("/other", "nothing to hide");
    let body = other.expect(200);
    assert!(body.contains("method: POST\npath: /other\n"), "{body}");
    assert!(body.contains("header: x-chain: A\n"), "{body}");
    assert!(body.ends_with("body: nothing to hide"), "{body}");
    assert_eq!(other.header("x-filter-tag"), Some("A"));

    // http_body reads the guest's whole response and replaces it.
    let secret = serve.post("/notes", "the secret is 42");
    let redacted = secret.expect(200);
    assert!(
        redacted.starts_with("Original message body (") && redacted.ends_with(" bytes) redacted."),
        "{redacted}"
    );

    // A filter's new path goes to the guest while it stays on the route;
    // one off the route is refused, not sent to another component.
    let moved = serve.request("GET", "/sub/a", &[("x-rewrite-path", "/sub/b?q=1")], "");
    assert!(
        moved.expect(200).contains("path: /sub/b?q=1\n"),
        "{}",
        moved.body
    );
    let away = serve.request("GET", "/sub/a", &[("x-rewrite-path", "/elsewhere")], "");
    assert_eq!(away.status, 500);
    assert!(!away.body.contains("elsewhere"), "{}", away.body);
    let line = serve.wait_for_log("GET /sub/a 500");
    assert!(
        line.contains(
            "a filter rewrote the path to `/elsewhere`, which this route does not answer"
        ),
        "{line}"
    );
    assert!(tern_panic(&serve.log()).is_none(), "{}", serve.log());
}

#[test]
fn a_failing_filter_in_front_of_a_component_keeps_the_guest_from_running() {
    let tern = Tern::new();
    let (byte, auth) = byte_stub();
    let app = format!(
        "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n{}{}{}[component.cgi]\nsource = \"{P1_WAGI_ECHO}\"\nexecutor = \"wagi\"\n\n{}{}{}[upstream.httpbin]\nurl = \"{}\"\n",
        component_route("/cgi/...", "cgi", &["auth", "body"])
            + &component_route("/trap/...", "cgi", &["tag"]),
        component_route("/loop/...", "cgi", &["loop"]),
        component_route("/open/...", "cgi", &["loop_open"]),
        filter(
            "auth",
            PROXY_WASM_HTTP_AUTH_RANDOM,
            "upstreams = [\"httpbin\"]"
        ),
        filter("body", PROXY_WASM_HTTP_BODY, "") + &filter("tag", PROXY_TAG, ""),
        loop_filters(),
        auth.url(),
    );
    // One worker thread: every request meets the same filter VMs.
    let serve = Serve::start(&tern, &app, &["--threads", "1"]);

    // A WAGI guest reads its whole body first: the filtered one.
    let allowed = serve.post("/cgi/x", "nothing to hide");
    let body = allowed.expect(200);
    assert!(body.contains("env: PATH_INFO=/x\n"), "{body}");
    assert!(body.ends_with("body: nothing to hide"), "{body}");
    assert_eq!(allowed.header("powered-by"), Some("proxy-wasm"));

    // A filter failing on the body the guest waits for: Tern's 500, not
    // the client's 400, and the guest never runs.
    // (A filter of its own, so that the rebuild of its trapped VM is no
    // concern of the other routes' requests.)
    let trapped = serve.request("POST", "/trap/x", &[("x-trap-body", "1")], "boom");
    assert_eq!(trapped.status, 500);
    let line = serve.wait_for_log("POST /trap/x 500");
    assert!(line.contains("filter `tag`"), "{line}");
    // A one-off trap costs only its own request: the VM is rebuilt at once.
    let after = serve.post("/trap/x", "fine");
    assert!(after.expect(200).ends_with("body: fine"), "{}", after.body);

    byte.store(7, Ordering::SeqCst);
    let refused = serve.post("/cgi/x", "let me in");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, "Access forbidden.\n");
    serve.wait_for_log("POST /cgi/x 403");

    // Closed: 500, with the reason in the log and not in the answer.
    let looped = serve.get("/loop/x");
    assert_eq!(looped.status, 500);
    assert!(!looped.body.contains("budget"), "{}", looped.body);
    let line = serve.wait_for_log("GET /loop/x 500");
    assert!(
        line.contains("filter `loop` ran past its time budget of 50ms"),
        "{line}"
    );
    // Open: the guest answers without the filter.
    let passed = serve.get("/open/y");
    assert!(
        passed.expect(200).contains("env: PATH_INFO=/y\n"),
        "{}",
        passed.body
    );
    byte.store(2, Ordering::SeqCst);
    serve.post("/cgi/z", "after all that").expect(200);
    assert!(tern_panic(&serve.log()).is_none(), "{}", serve.log());
}

#[test]
fn access_log_errors_keeps_only_the_lines_of_failed_requests() {
    let tern = Tern::new();
    let upstream = echo(&tern);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = format!(
        "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n[[route]]\npath = \"/ok\"\nupstream = \"http://{}\"\n\n[[route]]\npath = \"/down\"\nupstream = \"http://{closed}\"\n",
        upstream.addr
    );
    let serve = Serve::start(&tern, &app, &["--access-log", "errors"]);
    serve.get("/ok").expect(200);
    assert_eq!(serve.get("/down").status, 502);
    // Lines go out in order: the failed request's is there, so the
    // successful one's would be before it.
    let line = serve.wait_for_log("GET /down 502");
    assert!(line.contains("cannot connect"), "{line}");
    assert!(!serve.log().contains("GET /ok"), "{}", serve.log());
}
