//! Outbound HTTP from guests through `allowed_outbound_hosts`. Denials are
//! proved by listeners whose backlogs stay empty: no connection was even
//! attempted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use test_programs::*;

use crate::grants::{accepted, listener};
use crate::serving::{Part, Serve, manifest, with_hello, write_app};
use crate::support::{Tern, test_pki};

fn app(allowed: &[&str], limits: &str) -> String {
    app_of(HTTP_OUTBOUND, allowed, limits)
}

/// [`app`] with another guest at `/fetch`: the WASI 0.3 one takes the
/// same `?url=` (and ignores `count`).
fn app_of(source: &str, allowed: &[&str], limits: &str) -> String {
    let hosts: Vec<String> = allowed.iter().map(|h| format!("{h:?}")).collect();
    manifest(&[Part {
        route: "/fetch",
        id: "fetch",
        source,
        extra: &format!(
            "allowed_outbound_hosts = [{}]\n[component.fetch.limits]\n{limits}",
            hosts.join(", ")
        ),
    }])
}

/// `/fetch?url=...` with the URL percent-encoded.
fn fetch(serve: &Serve, url: &str, count: usize) -> crate::serving::Response {
    let encoded: String = url
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    serve.get(&format!("/fetch?url={encoded}&count={count}"))
}

/// A server answering every request with `response`, counting connections.
pub(crate) fn upstream(response: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (addr, count)
}

pub(crate) const HELLO: &str =
    "HTTP/1.1 200 OK\r\ncontent-length: 14\r\nconnection: close\r\n\r\nfrom upstream\n";

#[test]
pub fn http_outbound() {
    let (addr, count) = upstream(HELLO);
    let tern = Tern::new();
    let serve = Serve::start(&tern, &app(&[&format!("http://{addr}")], ""), &[]);
    assert_eq!(
        fetch(&serve, &format!("http://{addr}/x"), 1).expect(200),
        "200 from upstream\n"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// The SSRF cases below hold for WASI 0.2 and 0.3 guests alike.
const GUESTS: [&str; 2] = [HTTP_OUTBOUND, HTTP3_OUTBOUND];

#[test]
fn hosts_not_listed_are_denied_without_connecting() {
    for guest in GUESTS {
        hosts_not_listed_are_denied_for(guest);
    }
}

fn hosts_not_listed_are_denied_for(guest: &str) {
    let (listener, addr) = listener();
    let tern = Tern::new();
    let serve = Serve::start(
        &tern,
        &app_of(guest, &["http://127.0.0.1:1", "https://example.com"], ""),
        &[],
    );
    for url in [
        format!("http://{addr}/"),
        format!("https://{addr}/"),
        "http://example.com/".into(),
    ] {
        let body = fetch(&serve, &url, 1).expect(502).to_string();
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
    assert_eq!(accepted(&listener), 0);
    serve.wait_for_log("tern: outbound request denied: http://127.0.0.1:");
}

#[test]
fn wildcards_do_not_reach_loopback_or_private_addresses() {
    for guest in GUESTS {
        wildcards_do_not_reach_loopback_for(guest);
    }
}

fn wildcards_do_not_reach_loopback_for(guest: &str) {
    let (listener, addr) = listener();
    let port = addr.rsplit_once(':').unwrap().1;
    let tern = Tern::new();
    let toml = app_of(guest, &[&format!("http://*:{port}")], "");
    let serve = Serve::start(&tern, &toml, &[]);
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"] {
        let body = fetch(&serve, &format!("http://{host}:{port}/"), 1)
            .expect(502)
            .to_string();
        assert!(body.contains("DestinationIpProhibited"), "{host}: {body}");
    }
    assert_eq!(accepted(&listener), 0);
}

#[test]
fn other_spellings_of_an_address_and_user_info_are_refused() {
    for guest in GUESTS {
        other_spellings_are_refused_for(guest);
    }
}

fn other_spellings_are_refused_for(guest: &str) {
    let (listener, addr) = listener();
    let port = addr.rsplit_once(':').unwrap().1;
    let tern = Tern::new();
    // Only 127.0.0.1 on this port is allowed, and only a made-up host
    // elsewhere: the tricks must not reach either.
    let allowed = [format!("http://{addr}"), "http://allowed.test".to_string()];
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let toml = app_of(guest, &allowed, "outbound_timeout = \"300ms\"");
    let serve = Serve::start(&tern, &toml, &[]);
    for host in [
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "127.0.0.01",
    ] {
        let response = fetch(&serve, &format!("http://{host}:{port}/"), 1);
        assert_eq!(response.status, 502, "{host}: {response:?}");
    }
    for url in [
        format!("http://allowed.test@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}@allowed.test/"),
    ] {
        let response = fetch(&serve, &url, 1);
        assert_eq!(response.status, 502, "{url}: {response:?}");
    }
    assert_eq!(accepted(&listener), 0, "a trick reached the listener");

    // The control: the allowed spelling connects (and, since nobody
    // answers, runs into the first-byte timeout).
    let body = fetch(&serve, &format!("http://{addr}/"), 1)
        .expect(502)
        .to_string();
    assert!(body.contains("ConnectionReadTimeout"), "{body}");
    assert_eq!(accepted(&listener), 1);
}

#[test]
fn redirects_are_returned_not_followed() {
    for guest in GUESTS {
        redirects_are_returned_for(guest);
    }
}

fn redirects_are_returned_for(guest: &str) {
    let (elsewhere, elsewhere_listener) = {
        let (l, a) = listener();
        (a, l)
    };
    let redirect: &'static str = Box::leak(
        format!("HTTP/1.1 302 Found\r\nlocation: http://{elsewhere}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .into_boxed_str(),
    );
    let (addr, _) = upstream(redirect);
    let tern = Tern::new();
    let allowed = [format!("http://{addr}"), format!("http://{elsewhere}")];
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let serve = Serve::start(&tern, &app_of(guest, &allowed, ""), &[]);
    // The guest sees the 302 itself: `302 ` from the 0.2 guest,
    // `upstream 302: ` from the 0.3 one.
    let body = fetch(&serve, &format!("http://{addr}/"), 1)
        .expect(200)
        .to_string();
    assert!(body == "302 " || body == "upstream 302: ", "{body}");
    assert_eq!(accepted(&elsewhere_listener), 0);
}

#[test]
fn outbound_requests_per_request_are_capped() {
    let (addr, count) = upstream(HELLO);
    let tern = Tern::new();
    let toml = app(&[&format!("http://{addr}")], "max_outbound_requests = 2");
    let serve = Serve::start(&tern, &toml, &[]);
    let body = fetch(&serve, &format!("http://{addr}/"), 3)
        .expect(502)
        .to_string();
    assert_eq!(body, "attempt 3: error: ErrorCode::ConnectionLimitReached");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // The cap is per incoming request.
    fetch(&serve, &format!("http://{addr}/"), 2).expect(200);
}

/// A server answering with the `Host` header it received.
fn host_echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut host) = (String::new(), String::new());
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("host:") {
                    host = value.trim().to_string();
                }
                line.clear();
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{host}",
                host.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

#[test]
fn the_host_header_is_always_the_checked_authority() {
    let addr = host_echo();
    let tern = Tern::new();
    let serve = Serve::start(&tern, &app(&[&format!("http://{addr}")], ""), &[]);
    let url = format!("http://{addr}/");
    let encoded: String = url.bytes().map(|b| format!("%{b:02X}")).collect();
    // The guest tries to send its own Host header; it does not get through.
    let response = serve.request(
        "GET",
        &format!("/fetch?url={encoded}"),
        &[("x-forward-host", "internal.example")],
        "",
    );
    assert_eq!(response.expect(200), format!("200 {addr}"));
}

/// A listener whose accept queue is full, so a new connection's SYN is
/// dropped and connecting hangs: what a black-holed host looks like.
pub(crate) fn unanswered() -> (TcpListener, Vec<std::net::TcpStream>, String) {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // SAFETY: listen(2) on a socket we own; it only changes the backlog.
    #[allow(unsafe_code)]
    let relisten = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(relisten, 0, "{}", std::io::Error::last_os_error());
    // Fill the queue: connections complete until it is full, then hang.
    let mut fillers = Vec::new();
    while let Ok(stream) =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
    {
        fillers.push(stream);
        assert!(fillers.len() < 16, "the accept queue never filled");
    }
    (listener, fillers, addr.to_string())
}

#[test]
fn connecting_is_bounded_by_the_connect_timeout() {
    let (_listener, _fillers, addr) = unanswered();
    let tern = Tern::new();
    let toml = app(
        &[&format!("http://{addr}")],
        "outbound_connect_timeout = \"300ms\"",
    );
    let serve = Serve::start(&tern, &toml, &[]);
    // The connect timeout, not the kernel's minutes-long one, ended it.
    let body = fetch(&serve, &format!("http://{addr}/"), 1)
        .expect(502)
        .to_string();
    assert_eq!(body, "attempt 1: error: ErrorCode::ConnectionTimeout");
}

const HELLO_TLS: &str =
    "HTTP/1.1 200 OK\r\ncontent-length: 18\r\nconnection: close\r\n\r\nfrom tls upstream\n";

/// An HTTPS server on 127.0.0.1 presenting `server.pem` from `dir`,
/// answering every request with [`HELLO_TLS`]; returns its address.
fn tls_upstream(dir: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let certs = CertificateDer::pem_slice_iter(&read("server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(crate::serving::PATIENCE));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                // The head, byte by byte; a client that rejects the
                // certificate ends the handshake, and this, with an error.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut tls, &mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = tls.write_all(HELLO_TLS.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    addr
}

#[test]
fn https_reaches_a_server_whose_authority_the_operator_trusts() {
    let pki = tempfile::tempdir().unwrap();
    test_pki(pki.path());
    let addr = tls_upstream(pki.path());
    let allowed = format!("https://{addr}");
    let url = format!("https://{addr}/x");
    let tern = Tern::new();

    // The public roots alone do not vouch for the test's authority.
    let serve = Serve::start(&tern, &app(&[&allowed], ""), &[]);
    assert_eq!(
        fetch(&serve, &url, 1).expect(502),
        "attempt 1: error: ErrorCode::TlsProtocolError"
    );
    drop(serve);

    // The operator adds it in the runtime config, beside which it lives.
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), &app(&[&allowed], ""));
    std::fs::copy(
        pki.path().join("ca.pem"),
        dir.path().join("internal-ca.pem"),
    )
    .unwrap();
    let rc = dir.path().join("runtime.toml");
    std::fs::write(&rc, "[outbound]\nca_file = \"internal-ca.pem\"\n").unwrap();
    let serve = Serve::start_in(&tern, dir, &["--runtime-config", rc.to_str().unwrap()]);
    assert_eq!(
        fetch(&serve, &url, 1).expect(200),
        "200 from tls upstream\n"
    );
}

#[test]
fn an_outbound_ca_file_that_is_missing_or_holds_no_certificate_stops_tern() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), &app(&["https://example.com"], ""));
    std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").unwrap();
    let rc = dir.path().join("runtime.toml");
    let serve = |config: &str| {
        std::fs::write(&rc, config).unwrap();
        tern.run(&[
            "serve",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--runtime-config",
            rc.to_str().unwrap(),
        ])
    };
    let missing = dir.path().join("nope.pem");
    serve("[outbound]\nca_file = \"nope.pem\"\n")
        .code(1)
        .stderr_has(&format!(
            "outbound.ca_file: file not found: {}",
            missing.display()
        ));
    let empty = dir.path().join("empty.pem");
    serve("[outbound]\nca_file = \"empty.pem\"\n")
        .code(1)
        .stderr_has(&format!(
            "outbound.ca_file: {} holds no PEM certificate",
            empty.display()
        ));
}

/// The outbound guest `guest` at `/fetch`, allowed `allowed`, beside the
/// hello guest at `/hello`.
fn app_with_hello(guest: &str, allowed: &str) -> String {
    let extra = format!("allowed_outbound_hosts = [{allowed}]");
    with_hello("/fetch", "fetch", guest, &extra)
}

#[test]
fn relative_urls_reach_the_app_itself() {
    let tern = Tern::new();
    // In process: not even the one connection the server may have open is
    // needed for them.
    let serve = Serve::start(
        &tern,
        &app_with_hello(HTTP_OUTBOUND, "\"http://self\""),
        &["--max-connections", "1"],
    );
    // A relative URL, and the host Spin names the app by, both reach the
    // app's own route through the server: its access log has them.
    for url in ["/hello", "http://self.alt/hello"] {
        assert_eq!(
            fetch(&serve, url, 1).expect(200),
            "200 hello, world\n",
            "{url}"
        );
    }
    serve.wait_for_nth_log("GET /hello 200", 2);
    // A path the app does not route is the app's 404, as a client sees it.
    let body = fetch(&serve, "/nowhere", 1).expect(200).to_string();
    assert!(body.starts_with("404 "), "{body}");
    drop(serve);

    // The WASI 0.3 guest names the app the same way.
    let serve = Serve::start(
        &tern,
        &app_with_hello(HTTP3_OUTBOUND, "\"https://self\""),
        &[],
    );
    assert_eq!(
        fetch(&serve, "http://self.alt/hello", 1).expect(200),
        "upstream 200: hello, world\n"
    );
}

#[test]
fn requests_to_the_app_itself_end_by_their_callers_deadline() {
    // The caller may take 1s; the route it calls, 90s. The request it
    // makes ends with it, not 90s later.
    let tern = Tern::new();
    let toml = manifest(&[
        Part {
            route: "/fetch",
            id: "fetch",
            source: HTTP_OUTBOUND,
            extra: "allowed_outbound_hosts = [\"http://self\"]\n[component.fetch.limits]\ntimeout = \"1s\"",
        },
        Part {
            route: "/slow",
            id: "slow",
            source: HTTP_SLOW,
            extra: "[component.slow.limits]\ntimeout = \"90s\"",
        },
    ]);
    let serve = Serve::start(&tern, &toml, &[]);
    // Both end at the same instant: the client sees the caller's 504, or,
    // if the call's 504 reached the caller first, the caller saying so.
    let answer = fetch(&serve, "/slow?ms=120000", 1);
    assert!(
        answer.status == 504 || answer.body.starts_with("504 "),
        "{} {}",
        answer.status,
        answer.body
    );
    let line = serve.wait_for_log("GET /slow 504");
    assert!(
        line.contains("the deadline of the request that made this one exceeded"),
        "{line}"
    );
}

#[test]
fn requests_to_the_app_itself_need_self_in_the_allowlist() {
    let (listener, addr) = listener();
    let tern = Tern::new();
    // Neither another host's entry nor a wildcard lets a guest reach its
    // own app (a loopback listener, which wildcards may not reach).
    for allowed in [String::new(), format!("\"http://{addr}\", \"http://*:*\"")] {
        let serve = Serve::start(&tern, &app_with_hello(HTTP_OUTBOUND, &allowed), &[]);
        for url in ["/hello", "http://self.alt/hello"] {
            let body = fetch(&serve, url, 1).expect(502).to_string();
            assert!(
                body.contains("HttpRequestDenied"),
                "{allowed} {url}: {body}"
            );
        }
        serve.wait_for_log(
            "outbound request denied: a request to the app itself (a relative URL) needs \"http://self\" in allowed_outbound_hosts",
        );
    }
    assert_eq!(accepted(&listener), 0);
}
