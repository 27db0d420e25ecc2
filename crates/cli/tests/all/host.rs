//! `tern host`: many apps in one process, deployed as bundles through the
//! admin API, reached by host name, unloaded when idle, and kept on disk
//! across restarts; hostile bundles change nothing; and `tern deploy`.

use std::io::{BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tar::EntryType::{Link, Regular, Symlink};
use test_programs::*;

use crate::serving::{PATIENCE, Part, Response, Serve, manifest, read_response, write_app};
use crate::support::Tern;

/// The admin token the tests give `tern host`, in a file with the newline
/// `echo TOKEN > FILE` leaves.
const TOKEN: &str = "test-admin-token-0123456789abcdef";

const HELLO: &str = "hello, world\n";

/// What `HTTP_WAIT` logs once it is running.
const WAITING: &str = "stderr: waiting for the body";

/// A running `tern host`, killed when dropped.
struct Host {
    serve: Serve,
    admin: SocketAddr,
    state: PathBuf,
    token: String,
}

impl Host {
    /// Runs `tern deploy` of the app in `dir` to this host, with the token
    /// in `token`, building nothing.
    fn deploy_dir(&self, tern: &Tern, dir: &Path, token: &Path) -> crate::support::Output {
        self.deploy_dir_with(tern, dir, token, &[])
    }

    /// [`Host::deploy_dir`] with `more` arguments.
    fn deploy_dir_with(
        &self,
        tern: &Tern,
        dir: &Path,
        token: &Path,
        more: &[&str],
    ) -> crate::support::Output {
        let to = format!("http://{}", self.admin);
        let (dir, token) = (dir.to_str().unwrap(), token.to_str().unwrap());
        let mut args = vec![
            "deploy",
            dir,
            "--to",
            &to,
            "--token-file",
            token,
            "--no-build",
        ];
        args.extend_from_slice(more);
        tern.run(&args)
    }

    /// Starts `tern host` on `top/state` with [`TOKEN`] in `top/token`.
    fn start(tern: &Tern, top: &Path, args: &[&str]) -> Host {
        Self::start_with(tern.command(), top, args)
    }

    /// [`Host::start`] with `command` (a `tern` command with more
    /// environment, say).
    fn start_with(command: std::process::Command, top: &Path, args: &[&str]) -> Host {
        let file = top.join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let mut all = vec!["--admin-token-file", file.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut host = Self::spawn_with(command, top, &all);
        host.token = TOKEN.to_owned();
        host
    }

    /// Starts `tern host` on `top/state` with `args` and no token of the
    /// test's, waiting for its admin and listening lines.
    fn spawn(tern: &Tern, top: &Path, args: &[&str]) -> Host {
        Self::spawn_with(tern.command(), top, args)
    }

    fn spawn_with(command: std::process::Command, top: &Path, args: &[&str]) -> Host {
        let state = top.join("state");
        // `spawn_verb` puts an app path after the verb, which `tern host`
        // does not take: the state directory goes there, as an option.
        let state_arg = format!("--state-dir={}", state.display());
        let mut all = vec!["--admin", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let serve = Serve::spawn_verb(command, "host", Path::new(&state_arg), &all);
        let line = serve.wait_for_log("admin API on http://");
        let admin = line
            .split("admin API on http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        Host {
            serve,
            admin,
            state,
            token: String::new(),
        }
    }

    /// Sends a request with `body` to the app server for host name `host`.
    fn send(&self, host: &str, method: &str, path: &str, body: &str) -> Response {
        self.serve.send(&format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn get(&self, host: &str, path: &str) -> Response {
        self.send(host, "GET", path, "")
    }

    /// Calls the admin API with `token` (none: no Authorization header).
    /// The body goes out even if the host answers early, and what arrived
    /// before a reset counts.
    fn call(&self, token: Option<&str>, method: &str, path: &str, body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(self.admin).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.admin,
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        read_response(&mut &raw[..])
    }

    /// Calls the admin API with the right token; the status and JSON body.
    fn admin(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let response = self.call(Some(&self.token), method, path, body);
        let value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {response:#?}"));
        (response.status, value)
    }

    fn deploy(&self, name: &str, bundle: &[u8]) -> (u16, Value) {
        self.admin("PUT", &format!("/v1/apps/{name}"), bundle)
    }

    /// `GET /v1/apps/NAME`, which must answer 200.
    fn summary(&self, name: &str) -> Value {
        let (status, summary) = self.admin("GET", &format!("/v1/apps/{name}"), b"");
        assert_eq!(status, 200, "{summary}");
        summary
    }

    fn metrics(&self) -> String {
        let response = self.call(Some(&self.token), "GET", "/metrics", b"");
        let kind = response.header("content-type").unwrap_or_default();
        assert!(
            kind.starts_with("text/plain") && kind.contains("version=0.0.4"),
            "{response:#?}"
        );
        response.expect(200).to_owned()
    }

    /// Starts a POST to `path` on an `HTTP_WAIT` route of the app at
    /// `host`, its body held open; returns once the guest runs.
    fn hold(&self, host: &str, path: &str) -> TcpStream {
        let before = self
            .serve
            .log()
            .lines()
            .filter(|l| l.contains(WAITING))
            .count();
        let stream = self.serve.connect();
        (&stream)
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
                     Transfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        self.serve.wait_for_nth_log(WAITING, before + 1);
        stream
    }

    /// The error of a refused call: one line, naming no path of the host's.
    #[track_caller]
    fn refusal(&self, answer: &Value) -> String {
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(!error.contains('\n'), "{error}");
        let real = std::fs::canonicalize(&self.state).unwrap_or_else(|_| self.state.clone());
        for state in [&self.state, &real] {
            assert!(!error.contains(state.to_str().unwrap()), "{error}");
        }
        error.to_owned()
    }
}

/// Ends a held request's body with `body` and reads the response.
fn finish(stream: TcpStream, body: &str) -> Response {
    let mut end = String::new();
    if !body.is_empty() {
        end.push_str(&format!("{:x}\r\n{body}\r\n", body.len()));
    }
    end.push_str("0\r\n\r\n");
    (&stream).write_all(end.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream))
}

/// An app directory for the app `name`, claiming `hosts`, with a component
/// per `(route, source)` named after the route's first segment (`/kv/...`:
/// `kv`), `extra` in each.
fn app_dir(name: &str, routes: &[(&str, &str)], hosts: &[&str], extra: &str) -> tempfile::TempDir {
    let parts: Vec<Part<'_>> = routes
        .iter()
        .map(|&(route, source)| Part {
            route,
            id: route.split('/').nth(1).unwrap(),
            source,
            extra,
        })
        .collect();
    let mut toml = manifest(&parts).replace("name = \"test\"\n", &format!("name = \"{name}\"\n"));
    if !hosts.is_empty() {
        let line = format!("name = \"{name}\"\n");
        toml = toml.replacen(&line, &format!("{line}hosts = {hosts:?}\n"), 1);
    }
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), &toml);
    dir
}

/// A bundle of the app `name` (see [`app_dir`]).
fn bundle(name: &str, routes: &[(&str, &str)], hosts: &[&str]) -> Vec<u8> {
    tar_of(app_dir(name, routes, hosts, "").path(), |_| {})
}

/// The app `name` answering `hello, world` on `/hello`.
fn hello(name: &str) -> Vec<u8> {
    bundle(name, &[("/hello", HTTP_HELLO)], &[])
}

/// The app `name` driving its `default` key-value store on `/kv/...`.
fn kv(name: &str) -> Vec<u8> {
    let extra = "key_value_stores = [\"default\"]";
    tar_of(
        app_dir(name, &[("/kv/...", HTTP_KV)], &[], extra).path(),
        |_| {},
    )
}

/// A tar of every file and directory under `dir` (paths relative to it),
/// then whatever `more` appends.
fn tar_of(dir: &Path, more: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    for path in tree(dir) {
        let full = dir.join(&path);
        if full.is_dir() {
            archive.append_dir(&path, &full).unwrap();
        } else {
            archive.append_path_with_name(&full, &path).unwrap();
        }
    }
    more(&mut archive);
    archive.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Appends an entry the `tar` crate would refuse to write: `name` and
/// `link` go into the header as they are.
fn raw_entry(archive: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str) {
    let data = b"written by a hostile bundle";
    let mut header = tar::Header::new_gnu();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    let size = if kind == Regular { data.len() } else { 0 };
    header.set_size(size as u64);
    header.set_cksum();
    archive.append(&header, &data[..size]).unwrap();
}

/// Every path under `dir`, relative to it, sorted; symlinks not followed.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&relative)) else {
            continue;
        };
        // The host may add or remove files meanwhile: what vanished is skipped.
        for entry in entries.flatten() {
            let path = relative.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The `default` SQLite stores under the state directory.
fn sqlite_files(host: &Host) -> Vec<PathBuf> {
    tree(&host.state)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "default.sqlite"))
        .collect()
}

/// Asserts that a purge of `name` answered as done, and left nothing of it
/// in the state directory.
#[track_caller]
fn assert_purged(host: &Host, name: &str, (status, answer): (u16, Value)) {
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"name": name, "deleted": true, "purged": true})
    );
    let left: Vec<_> = tree(&host.state)
        .into_iter()
        .filter(|p| has_component(p, name))
        .collect();
    assert!(left.is_empty(), "purged, yet still there: {left:?}");
}

fn has_component(path: &Path, name: &str) -> bool {
    path.components().any(|c| c.as_os_str() == name)
}

/// The sum of the samples of `name` whose labels include all of `labels`,
/// as a Prometheus text-format parser (`prometheus-parse`) reads them; a
/// histogram counts its observations (its `+Inf` bucket).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::{Scrape, Value};
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{text}"));
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{name} is a summary"),
        })
        .sum()
}

#[test]
fn deploy_and_route_by_host_name() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let hosts = ["shop.example.com", "*.shop.example.com"];
    let shop = bundle("shop", &[("/hello", HTTP_HELLO)], &hosts);

    let (status, answer) = host.deploy("shop", &shop);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["name"], "shop", "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    for name in ["shop.localhost", "shop.example.com", "*.shop.example.com"] {
        let claimed = answer["hosts"].as_array().map(|h| h.contains(&json!(name)));
        assert_eq!(claimed, Some(true), "{name}: {answer}");
    }
    assert_eq!(
        answer["routes"],
        json!([{"route": "/hello", "component": "hello", "kind": "wasi-http"}])
    );

    // By its name under --domain, with or without the port a browser adds,
    // and by every name it claims.
    let port = host.serve.addr.port();
    for name in [
        "shop.localhost".to_owned(),
        format!("shop.localhost:{port}"),
        "shop.example.com".to_owned(),
        "api.shop.example.com".to_owned(),
        "a.b.shop.example.com".to_owned(),
    ] {
        assert_eq!(host.get(&name, "/hello").expect(200), HELLO, "{name}");
    }
    host.serve.wait_for_log("GET /hello 200");
    assert_eq!(host.get("shop.localhost", "/nowhere").status, 404);
    for name in [
        "nobody.localhost",
        "localhost",
        "example.com",
        "shop.example.org",
    ] {
        assert_eq!(host.get(name, "/hello").status, 404, "{name}");
    }

    let (status, list) = host.admin("GET", "/v1/apps", b"");
    assert_eq!(status, 200, "{list}");
    let apps = list["apps"].as_array().unwrap_or_else(|| panic!("{list}"));
    assert_eq!(apps.len(), 1, "{list}");
    assert_eq!(apps[0]["name"], "shop", "{list}");
    assert_eq!(apps[0]["version"], 1, "{list}");
    assert_eq!(apps[0]["in_flight"], 0, "{list}");
    assert!(
        apps[0]["requests"].as_u64().unwrap_or_default() >= 5,
        "{list}"
    );
    let last = apps[0]["last_request"].as_str().unwrap_or_default();
    assert!(last.starts_with("20") && last.ends_with('Z'), "{list}");
    // With the default --idle-unload of minutes, it is still loaded.
    assert_eq!(apps[0]["state"], "loaded", "{list}");
}

#[test]
fn redeploy_swaps_versions_and_rollback_returns() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let v1 = bundle("shop", &[("/hello", HTTP_HELLO), ("/wait", HTTP_WAIT)], &[]);
    assert_eq!(host.deploy("shop", &v1).0, 201);
    let held = host.hold("shop.localhost", "/wait");

    // Version 2, packed as a tar.gz, swaps in while a request runs on 1.
    let v2 = gzip(&bundle("shop", &[("/hello", HTTP_ECHO)], &[]));
    let (status, answer) = host.deploy("shop", &v2);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 2, "{answer}");
    let body = host.get("shop.localhost", "/hello").expect(200).to_owned();
    assert!(
        body.contains("method: GET"),
        "new requests get version 2: {body}"
    );
    assert_eq!(host.get("shop.localhost", "/wait").status, 404);
    assert_eq!(
        finish(held, "abc").expect(200),
        "read 3 bytes",
        "the request in flight finishes on version 1"
    );

    let (status, answer) = host.admin("POST", "/v1/apps/shop/rollback", b"");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    let summary = host.summary("shop");
    assert_eq!(summary["version"], 1, "{summary}");
    assert_eq!(summary["versions"], json!([1, 2]), "{summary}");

    // Nothing before version 1; no app to roll back.
    let (status, answer) = host.admin("POST", "/v1/apps/shop/rollback", b"");
    assert_eq!(status, 409, "{answer}");
    host.refusal(&answer);
    assert_eq!(host.admin("POST", "/v1/apps/nobody/rollback", b"").0, 404);
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
}

#[test]
fn the_admin_api_needs_the_token() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let shop = hello("shop");
    let none: &[u8] = b"";
    let short = &TOKEN[..TOKEN.len() - 1];
    let long = format!("{TOKEN}x");
    for token in [
        None,
        Some("wrong"),
        Some(short),
        Some(long.as_str()),
        Some(""),
    ] {
        for (method, path, body) in [
            ("PUT", "/v1/apps/shop", &shop[..]),
            ("GET", "/v1/apps", none),
            ("GET", "/v1/apps/shop", none),
            ("DELETE", "/v1/apps/shop?purge=true", none),
            ("POST", "/v1/apps/shop/rollback", none),
            ("GET", "/metrics", none),
        ] {
            let response = host.call(token, method, path, body);
            assert_eq!(
                response.status, 401,
                "{token:?} {method} {path}: {response:#?}"
            );
            host.refusal(&serde_json::from_str(&response.body).unwrap());
        }
    }
    let (status, list) = host.admin("GET", "/v1/apps", b"");
    assert_eq!((status, &list["apps"]), (200, &json!([])), "{list}");
    assert_eq!(host.get("shop.localhost", "/hello").status, 404);

    // Without --admin-token-file, the host makes a token only its user
    // can read, says where, and keeps it across restarts.
    let top = tempfile::tempdir().unwrap();
    let mut host = Host::spawn(&tern, top.path(), &[]);
    let file = host.state.join("admin-token");
    host.serve
        .wait_for_log(&format!("(token in {})", file.display()));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    host.token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(host.token.len() >= 32, "a short token: {:?}", host.token);
    assert_eq!(host.admin("GET", "/v1/apps", b"").0, 200);
    let token = host.token.clone();
    drop(host);
    let mut host = Host::spawn(&tern, top.path(), &[]);
    host.token = token;
    assert_eq!(host.admin("GET", "/v1/apps", b"").0, 200);
}

#[test]
fn hostile_bundles_are_refused_and_change_nothing() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let root = top.path().to_str().unwrap();
    let outside = top.path().join("outside.txt");
    std::fs::write(&outside, "original").unwrap();
    let app = app_dir("shop", &[("/hello", HTTP_HELLO)], &[], "");
    let good = tar_of(app.path(), |_| {});
    // A cap just above the good bundle: the guests are megabytes.
    let cap = format!("{}KiB", good.len() / 1024 + 64);
    let host = Host::start(&tern, top.path(), &["--max-bundle-size", cap.as_str()]);
    assert_eq!(host.deploy("shop", &good).0, 201);
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    let before = tree(&host.state);

    // Each hostile entry comes after a whole valid app, so a host that
    // unpacks first and checks later has already written something.
    let hostile = |more: &dyn Fn(&mut tar::Builder<Vec<u8>>)| tar_of(app.path(), more);
    let absolute = format!("{root}/escaped-absolute");
    let outside_path = outside.to_str().unwrap();
    let oversize = tar_of(app.path(), |archive| {
        let filler = vec![b'x'; 128 << 10];
        let mut header = tar::Header::new_gnu();
        header.set_size(filler.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, "filler.bin", &filler[..])
            .unwrap();
    });
    let mut gzip_garbage = vec![0x1f, 0x8b, 8, 0];
    gzip_garbage.extend([0xff; 600]);
    // Enough `..` to reach `/` from wherever the host unpacks: a file that
    // exists, so that the refusal is about where it is.
    let passwd = format!("{}etc/passwd", "../".repeat(16));
    let outside_source = bundle("shop", &[("/hello", passwd.as_str())], &[]);
    // A source leading into the host's state directory: named, not shown.
    let into_state = bundle("shop", &[("/hello", "../app.json")], &[]);
    // The hello loads (and is indexed at once, a version being written
    // once), then `zbad` is refused: the version and its index records go.
    let garbage = top.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0 not really a module").unwrap();
    let half_loaded = {
        let routes = [("/hello", HTTP_HELLO), ("/zbad", garbage.to_str().unwrap())];
        tar_of(app_dir("shop", &routes, &[], "").path(), |_| {})
    };
    let records = || {
        std::fs::read_dir(tern.cache_dir().join("index"))
            .unwrap()
            .count()
    };
    let records_before = records();
    let broken = {
        let dir = app_dir("shop", &[("/hello", HTTP_HELLO)], &[], "");
        let toml = std::fs::read_to_string(dir.path().join("tern.toml")).unwrap();
        let toml = toml.replace("name = \"shop\"\n", "name = \"shop\"\ncolour = \"blue\"\n");
        std::fs::write(dir.path().join("tern.toml"), toml).unwrap();
        tar_of(dir.path(), |_| {})
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a `..` entry",
            hostile(&|archive| raw_entry(archive, Regular, "../escaped-dotdot", "")),
            400,
            "\"../escaped-dotdot\"",
        ),
        (
            "an absolute entry",
            hostile(&|archive| raw_entry(archive, Regular, &absolute, "")),
            400,
            "escaped-absolute",
        ),
        (
            "a symlink, then a file through it",
            hostile(&|archive| {
                raw_entry(archive, Symlink, "guests/link", root);
                raw_entry(archive, Regular, "guests/link/escaped-symlink", "");
            }),
            400,
            "guests/link",
        ),
        (
            "a hard link to a file outside, then a write to it",
            hostile(&|archive| {
                raw_entry(archive, Link, "guests/hard", outside_path);
                raw_entry(archive, Regular, "guests/hard", "");
            }),
            400,
            "guests/hard",
        ),
        (
            "garbage",
            b"this is not a bundle\n".repeat(100),
            400,
            "not a tar or tar.gz archive",
        ),
        ("a gzip header, then garbage", gzip_garbage, 400, ""),
        ("a bundle over --max-bundle-size", oversize, 413, ""),
        (
            "a source outside the app",
            outside_source,
            422,
            "outside the app directory",
        ),
        (
            "a source leading into the state directory",
            into_state,
            422,
            "leads to STATE/apps/shop/app.json, outside the app directory",
        ),
        ("a broken manifest", broken, 422, "tern.toml:5:"),
        ("a module that does not load", half_loaded, 422, "zbad"),
    ];
    for (what, bytes, expected, needle) in cases {
        let (status, answer) = host.deploy("shop", &bytes);
        assert_eq!(status, expected, "{what}: {answer}");
        let error = host.refusal(&answer);
        assert!(error.contains(needle), "{what}: {error}");
        // The running version keeps serving.
        assert_eq!(
            host.get("shop.localhost", "/hello").expect(200),
            HELLO,
            "{what}"
        );
    }
    let summary = host.summary("shop");
    assert_eq!(summary["versions"], json!([1]), "{summary}");
    assert_eq!(
        tree(&host.state),
        before,
        "a refused bundle left files behind"
    );
    assert_eq!(
        records(),
        records_before,
        "stat index records outlived their version"
    );
    let escaped: Vec<_> = tree(top.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("escaped"))
        .collect();
    assert!(escaped.is_empty(), "written outside the app: {escaped:?}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "original");
}

#[test]
fn two_apps_cannot_claim_one_host_name() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let a = bundle("a", &[("/hello", HTTP_HELLO)], &["x.example.com"]);
    assert_eq!(host.deploy("a", &a).0, 201);
    // Another app's own name under --domain is taken as well.
    for claim in ["x.example.com", "a.localhost"] {
        let b = bundle("b", &[("/hello", HTTP_ECHO)], &[claim]);
        let (status, answer) = host.deploy("b", &b);
        assert_eq!(status, 409, "{claim}: {answer}");
        let error = host.refusal(&answer);
        assert!(error.contains(&format!("`{claim}`")), "{error}");
        assert!(error.contains("claimed by app `a`"), "{error}");
    }
    assert_eq!(host.admin("GET", "/v1/apps/b", b"").0, 404);
    assert_eq!(host.get("x.example.com", "/hello").expect(200), HELLO);
    assert_eq!(host.get("a.localhost", "/hello").expect(200), HELLO);
}

#[test]
fn apps_have_their_own_stores() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    for name in ["alpha", "beta"] {
        assert_eq!(host.deploy(name, &kv(name)).0, 201);
    }
    host.send(
        "alpha.localhost",
        "PUT",
        "/kv/default/greeting",
        "from alpha",
    )
    .expect(204);
    assert_eq!(
        host.get("beta.localhost", "/kv/default/greeting")
            .expect(404),
        "absent"
    );
    host.send("beta.localhost", "PUT", "/kv/default/greeting", "from beta")
        .expect(204);
    assert_eq!(
        host.get("alpha.localhost", "/kv/default/greeting")
            .expect(200),
        "from alpha"
    );
    let files = sqlite_files(&host);
    assert_eq!(files.len(), 2, "{files:?}");
    let alpha = files.iter().filter(|f| has_component(f, "alpha")).count();
    let beta = files.iter().filter(|f| has_component(f, "beta")).count();
    assert_eq!((alpha, beta), (1, 1), "{files:?}");

    // The operator reads and writes an app's store as the host gives it.
    let state = host.state.to_str().unwrap();
    let kv = |args: &[&str]| {
        let mut all = vec!["kv"];
        all.extend_from_slice(args);
        all.extend(["--host-state-dir", state]);
        tern.run(&all)
    };
    let out = kv(&["get", "--host-app", "alpha", "greeting"]);
    assert_eq!(out.code(0).stdout, "from alpha");
    kv(&["set", "--host-app", "beta", "seeded", "by hand"]).code(0);
    assert_eq!(
        host.get("beta.localhost", "/kv/default/seeded").expect(200),
        "by hand"
    );
    let out = kv(&["list", "--host-app", "gamma"]);
    assert!(
        out.code(1)
            .stderr
            .contains("no app named `gamma` is deployed in"),
        "{}",
        out.stderr
    );
}

#[test]
fn apps_on_one_redis_keep_their_keys_apart_and_a_purge_takes_only_its_own() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let top = tempfile::tempdir().unwrap();
    let config = top.path().join("runtime.toml");
    let store = "[key_value_store.default]\ntype = \"redis\"\nurl";
    std::fs::write(&config, format!("{store} = \"{}\"\n", redis.url())).unwrap();
    let host = Host::start(
        &tern,
        top.path(),
        &["--runtime-config", config.to_str().unwrap()],
    );
    for name in ["alpha", "beta"] {
        assert_eq!(host.deploy(name, &kv(name)).0, 201);
    }
    for name in ["alpha", "beta"] {
        let host_name = format!("{name}.localhost");
        assert_eq!(
            host.get(&host_name, "/kv/default/greeting").expect(404),
            "absent"
        );
        host.send(&host_name, "PUT", "/kv/default/greeting", name)
            .expect(204);
    }
    assert_eq!(
        host.get("alpha.localhost", "/kv/default/greeting")
            .expect(200),
        "alpha"
    );
    // On the server, each app's keys are under its name.
    let keys = || {
        let mut keys: Vec<String> = crate::spin::redis_cli(redis.port(), &["--scan"])
            .lines()
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(), ["alpha/default:greeting", "beta/default:greeting"]);
    // `tern kv` finds an app's keys under its prefix, as the host does.
    let state = host.state.to_str().unwrap();
    let config_arg = config.to_str().unwrap();
    let out = tern.run(&[
        "kv",
        "get",
        "--host-app",
        "beta",
        "--host-state-dir",
        state,
        "--runtime-config",
        config_arg,
        "greeting",
    ]);
    assert_eq!(out.code(0).stdout, "beta");

    let (status, answer) = host.admin("DELETE", "/v1/apps/alpha?purge=true", b"");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(keys(), ["beta/default:greeting"]);
    assert_eq!(
        host.get("beta.localhost", "/kv/default/greeting")
            .expect(200),
        "beta"
    );
}

#[test]
fn an_operator_cap_refuses_a_manifest() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &["--max-memory", "64MiB"]);
    let asking = |memory: &str| {
        let extra = format!("[component.hello.limits]\nmemory = \"{memory}\"");
        tar_of(
            app_dir("shop", &[("/hello", HTTP_HELLO)], &[], &extra).path(),
            |_| {},
        )
    };
    let (status, answer) = host.deploy("shop", &asking("256MiB"));
    assert_eq!(status, 422, "{answer}");
    let error = host.refusal(&answer);
    for needle in ["component.hello", "memory", "64MiB"] {
        assert!(error.contains(needle), "{needle}: {error}");
    }
    assert_eq!(host.admin("GET", "/v1/apps/shop", b"").0, 404);
    // Up to the cap is the app's call.
    assert_eq!(host.deploy("shop", &asking("64MiB")).0, 201);
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
}

#[test]
fn idle_apps_unload_and_come_back() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &["--idle-unload", "1s"]);
    let shop = bundle("shop", &[("/hello", HTTP_HELLO), ("/wait", HTTP_WAIT)], &[]);
    assert_eq!(host.deploy("shop", &shop).0, 201);
    // The deploy's load indexed each module of the version it unpacked (a
    // version is never written again), so the cold load below finds its
    // code without reading and hashing the modules.
    let version = top.path().join("state/apps/shop/v1");
    let mut modules = 0;
    let mut dirs = vec![version.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            use std::os::unix::fs::MetadataExt as _;
            let meta = std::fs::metadata(&path).unwrap();
            let record = format!("{:x}-{:x}", meta.dev(), meta.ino());
            let index = tern.cache_dir().join("index").join(&record);
            assert!(
                index.is_file(),
                "no stat index record for {}",
                path.display()
            );
            modules += 1;
        }
    }
    assert_eq!(modules, 2, "{}", version.display());
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    let line = host.serve.wait_for_log("unloaded app `shop`");
    assert!(line.ends_with("no request for 1s"), "{line}");
    assert_eq!(host.summary("shop")["state"], "idle");
    // An idle app holds no compiled code.
    let pid = host.serve.pid();
    assert_eq!(code_mappings(pid, &tern.cache_dir()), Vec::<String>::new());

    // A request loads it again; while it runs, the app stays loaded.
    let held = host.hold("shop.localhost", "/wait");
    host.serve.wait_for_log("loaded app `shop` version 1 in ");
    let summary = host.summary("shop");
    assert_eq!(summary["state"], "loaded", "{summary}");
    assert_eq!(summary["in_flight"], 1, "{summary}");
    // Its two modules' code runs from their compile cache files, mapped:
    // page cache the kernel can drop, not a copy in anonymous memory.
    let mapped = code_mappings(pid, &tern.cache_dir());
    assert_eq!(mapped.len(), 2, "{mapped:?}");
    assert_eq!(finish(held, "").expect(200), "read 0 bytes");
    host.serve.wait_for_log("POST /wait 200");

    let text = host.metrics();
    let shop = [("app", "shop")];
    for (name, least) in [
        ("tern_app_unloads_total", 1.0),
        // The deploy loaded it, so only the request after the unload
        // found it cold.
        ("tern_app_cold_starts_total", 1.0),
        ("tern_app_loads_total", 2.0),
    ] {
        assert!(metric(&text, name, &shop) >= least, "{name}: {text}");
    }
    // The two requests, each counted once.
    let ok = [("app", "shop"), ("status", "200")];
    assert_eq!(metric(&text, "tern_app_requests_total", &ok), 2.0, "{text}");
    let latency = "tern_app_request_duration_seconds";
    assert_eq!(metric(&text, latency, &shop), 2.0, "{text}");
    assert_eq!(metric(&text, "tern_host_apps", &[]), 1.0, "{text}");
    assert!(
        text.contains("# TYPE tern_app_request_duration_seconds histogram"),
        "{text}"
    );
}

/// The compile cache entries (`.twasm` under `cache`) that process `pid`
/// has mapped executable, from its `/proc/PID/maps`.
fn code_mappings(pid: u32, cache: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (perms, path) = (fields.get(1)?, fields.get(5)?);
            (perms.contains('x') && path.starts_with(cache.to_str()?) && path.ends_with(".twasm"))
                .then(|| path.to_string())
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

#[test]
fn deployed_apps_survive_a_restart() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    assert_eq!(host.deploy("shop", &hello("shop")).0, 201);
    let echo = bundle("shop", &[("/hello", HTTP_ECHO)], &[]);
    assert_eq!(host.deploy("shop", &echo).0, 200);
    assert_eq!(host.admin("POST", "/v1/apps/shop/rollback", b"").0, 200);
    let blog = bundle("blog", &[("/echo", HTTP_ECHO)], &[]);
    assert_eq!(host.deploy("blog", &blog).0, 201);

    host.serve.terminate();
    let (code, log) = host.serve.wait();
    assert_eq!(code, 0, "{log}");

    let host = Host::start(&tern, top.path(), &[]);
    host.serve.wait_for_log("tern host: 2 apps in");
    // The version rolled back to is the one that comes back.
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    let summary = host.summary("shop");
    assert_eq!(
        (&summary["version"], &summary["versions"]),
        (&json!(1), &json!([1, 2])),
        "{summary}"
    );
    let body = host.get("blog.localhost", "/echo").expect(200).to_owned();
    assert!(body.contains("method: GET"), "{body}");

    // A record torn by hand: that app alone is left out, and kept.
    host.serve.terminate();
    assert_eq!(host.serve.wait().0, 0);
    let record = top.path().join("state/apps/blog/app.json");
    std::fs::write(&record, "{\"version\": 1,").unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    host.serve
        .wait_for_log("app `blog` is not served: its record apps/blog/app.json cannot be read (");
    assert_eq!(host.get("blog.localhost", "/echo").status, 404);
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    // Listed and shown as held, with the reason.
    let (status, list) = host.admin("GET", "/v1/apps", b"");
    assert_eq!(status, 200, "{list}");
    let states: Vec<(&Value, &Value)> = list["apps"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|app| (&app["name"], &app["state"]))
        .collect();
    assert_eq!(
        states,
        [
            (&json!("blog"), &json!("held")),
            (&json!("shop"), &json!("loaded"))
        ],
        "{list}"
    );
    let blog_summary = host.summary("blog");
    assert_eq!(blog_summary["version"], Value::Null, "{blog_summary}");
    assert_eq!(
        blog_summary["hosts"],
        json!(["blog.localhost"]),
        "{blog_summary}"
    );
    let why = blog_summary["error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("its record apps/blog/app.json cannot be read (")
            && !why.contains(top.path().to_str().unwrap()),
        "{blog_summary}"
    );
    let token = top.path().join("token");
    let to = format!("http://{}", host.admin);
    let out = tern.run(&[
        "apps",
        "list",
        "--to",
        &to,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    out.code(0);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("blog "))
        .unwrap_or_default();
    assert!(row.contains(" held "), "{out:#?}");
    // It is held as found: no change may reuse its name, and another
    // app may not claim its host name.
    let (status, answer) = host.deploy("blog", &blog);
    assert_eq!(status, 409, "{answer}");
    let error = host.refusal(&answer);
    assert!(
        error.starts_with(
            "app `blog` is held as found: its record apps/blog/app.json cannot be read ("
        ),
        "{error}"
    );
    assert_eq!(host.admin("DELETE", "/v1/apps/blog", b"").0, 409);
    let squatter = bundle("other", &[("/echo", HTTP_ECHO)], &["blog.localhost"]);
    let (status, answer) = host.deploy("other", &squatter);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"],
        "host name `blog.localhost` is claimed by app `blog`"
    );
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "{\"version\": 1,"
    );
    assert!(top.path().join("state/apps/blog/v1/tern.toml").exists());
}

#[test]
fn delete_keeps_data_unless_purged() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let shop = kv("shop");
    assert_eq!(host.deploy("shop", &shop).0, 201);
    host.send("shop.localhost", "PUT", "/kv/default/k", "kept")
        .expect(204);

    let (status, answer) = host.admin("DELETE", "/v1/apps/shop", b"");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"name": "shop", "deleted": true, "purged": false})
    );
    assert_eq!(host.get("shop.localhost", "/kv/default/k").status, 404);
    assert_eq!(host.admin("GET", "/v1/apps/shop", b"").0, 404);
    assert_eq!(host.admin("DELETE", "/v1/apps/shop", b"").0, 404);
    let files = sqlite_files(&host);
    assert!(files.iter().any(|f| has_component(f, "shop")), "{files:?}");

    // Deployed again, it finds its data.
    assert_eq!(host.deploy("shop", &shop).0, 201);
    assert_eq!(
        host.get("shop.localhost", "/kv/default/k").expect(200),
        "kept"
    );

    let purged = host.admin("DELETE", "/v1/apps/shop?purge=true", b"");
    assert_purged(&host, "shop", purged);
    assert_eq!(host.get("shop.localhost", "/kv/default/k").status, 404);
}

#[test]
fn kill_during_deploy_serves_the_previous_version() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    assert_eq!(host.deploy("shop", &hello("shop")).0, 201);

    // Half of version 2 (megabytes of component) is on its way when the
    // host is killed.
    let v2 = bundle("shop", &[("/hello", HTTP_ECHO)], &[]);
    let upload = TcpStream::connect(host.admin).unwrap();
    upload.set_write_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "PUT /v1/apps/shop HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n",
        host.admin,
        v2.len()
    );
    (&upload).write_all(head.as_bytes()).unwrap();
    (&upload).write_all(&v2[..v2.len() / 2]).unwrap();
    // The host is busy with the upload, and still serves version 1.
    assert_eq!(host.summary("shop")["version"], 1);
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    drop(host); // SIGKILL
    drop(upload);

    let host = Host::start(&tern, top.path(), &[]);
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    let summary = host.summary("shop");
    assert_eq!(summary["version"], 1, "{summary}");
    assert_eq!(summary["versions"], json!([1]), "{summary}");
    // Nothing the killed upload left blocks the next deploy.
    let (status, answer) = host.deploy("shop", &v2);
    assert_eq!((status, &answer["version"]), (200, &json!(2)), "{answer}");
}

#[test]
fn tern_deploy_packs_an_app_and_prints_what_the_host_made_of_it() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let app = app_dir("shop", &[("/hello", HTTP_HELLO)], &[], "");
    // Something the manifest does not name stays home.
    std::fs::write(app.path().join("notes.txt"), "not for the host").unwrap();
    let to = format!("http://{}", host.admin);
    let dir = app.path().to_str().unwrap();
    let token = top.path().join("token");
    let deploy = |token: &Path| {
        let token = token.to_str().unwrap();
        let to = to.as_str();
        tern.run(&[
            "deploy",
            dir,
            "--to",
            to,
            "--token-file",
            token,
            "--no-build",
        ])
    };

    let out = deploy(&token);
    out.code(0);
    let printed = format!("{}{}", out.stdout, out.stderr);
    for needle in [
        "deployed shop version 1 (",
        "http://shop.localhost",
        "/hello -> hello (wasi-http)",
    ] {
        assert!(printed.contains(needle), "{needle}: {out:#?}");
    }
    assert_eq!(host.get("shop.localhost", "/hello").expect(200), HELLO);
    let unpacked = tree(&host.state);
    let has = |name: &str| unpacked.iter().any(|p| p.ends_with(name));
    assert!(has("tern.toml") && !has("notes.txt"), "{unpacked:?}");

    let wrong = top.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let out = deploy(&wrong);
    assert_ne!(out.code, 0, "{out:#?}");
    // Progress lines, then the error alone on the last.
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the host refused the deploy (401): "),
        "{out:#?}"
    );
    assert_eq!(host.summary("shop")["versions"], json!([1]));
}

#[test]
fn a_spin_app_deploys_and_serves_from_its_spin_toml() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(SPIN_HELLO, app.path().join("spin_hello.wasm")).unwrap();
    std::fs::write(
        app.path().join("spin.toml"),
        "spin_manifest_version = 2\n\n[application]\nname = \"greeter\"\n\n\
         [[trigger.http]]\nroute = \"/users/:id\"\ncomponent = \"hello\"\n\n\
         [component.hello]\nsource = \"spin_hello.wasm\"\n",
    )
    .unwrap();
    let token = top.path().join("token");
    host.deploy_dir(&tern, app.path(), &token).code(0);
    let response = host.get("greeter.localhost", "/users/42");
    assert_eq!(
        response.expect(200),
        "Hello, Spin! You asked for /users/42\nid = 42\n"
    );
    assert_eq!(response.header("x-spin-path-match-id"), Some("42"));

    // A Redis trigger at a server the operator did not allow: refused,
    // not ignored.
    std::fs::write(
        app.path().join("spin.toml"),
        "spin_manifest_version = 2\n\n[application]\nname = \"greeter\"\n\n\
         [[trigger.redis]]\naddress = \"redis://127.0.0.1:6379\"\nchannel = \"news\"\ncomponent = \"hello\"\n\n\
         [component.hello]\nsource = \"spin_hello.wasm\"\n",
    )
    .unwrap();
    let (status, answer) = host.deploy("greeter", &tar_of(app.path(), |_| {}));
    assert_eq!(status, 422, "{answer}");
    let error = host.refusal(&answer);
    assert!(
        error.contains("its Redis trigger on `news` subscribes at redis 127.0.0.1:6379, which this host does not let apps reach (the operator's --allow-redis-trigger)"),
        "{error}"
    );
    assert_eq!(
        host.get("greeter.localhost", "/users/7").expect(200),
        "Hello, Spin! You asked for /users/7\nid = 7\n"
    );
}

#[test]
fn redis_triggers_reach_an_app_loaded_or_not_and_end_with_it() {
    use crate::spin::{Hold, inline_redis_trigger, redis_cli, release};
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let port = redis.port();
    let hold = Hold::start();
    let app = inline_redis_trigger(&redis, &hold);
    let bundle = tar_of(app.path(), |_| {});
    let top = tempfile::tempdir().unwrap();
    let allowed = format!("127.0.0.1:{port}");
    // The handler's own Redis connection and its hold are on loopback.
    let args = [
        "--allow-redis-trigger",
        &allowed,
        "--allow-private-address",
        "127.0.0.1",
        "--idle-unload",
        "1s",
        "--cpu-time",
        "50ms",
        "--max-memory",
        "32MiB",
    ];
    let host = Host::start(&tern, top.path(), &args);
    let subscribed = format!("subscribed to `messages` on redis 127.0.0.1:{port}");
    let handled = "redis message on `messages` (5 bytes) -> inbox: handled in";
    // An address whose text seems to name the allowed server is judged by
    // where the client would connect.
    let manifest = app.path().join("spin.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    let spoofed = format!("\naddress = \"redis://10.0.0.9:6379#@127.0.0.1:{port}\"");
    let line = format!("\naddress = \"{}\"", redis.url());
    std::fs::write(&manifest, toml.replacen(&line, &spoofed, 1)).unwrap();
    let (status, answer) = host.deploy("chat", &tar_of(app.path(), |_| {}));
    assert_eq!(status, 422, "{answer}");
    let error = host.refusal(&answer);
    assert!(
        error.contains("subscribes at redis 10.0.0.9:6379, which"),
        "{error}"
    );
    // The same app on another channel, for a deploy that changes the
    // triggers.
    let other = toml.replace("channel = \"messages\"", "channel = \"other\"");
    std::fs::write(&manifest, other).unwrap();
    let moved = tar_of(app.path(), |_| {});
    std::fs::write(&manifest, &toml).unwrap();
    assert_eq!(host.deploy("chat", &bundle).0, 201);
    host.serve.wait_for_log(&subscribed);
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "hello"]), "1\n");
    host.serve.wait_for_log(handled);

    // A hostile handler is held to the host's limits, as a request is: a
    // loop to its CPU time, a memory bomb to its memory; the next message
    // is handled.
    let failed = "redis message on `messages` (4 bytes) -> inbox: failed after";
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "spin"]), "1\n");
    let line = host.serve.wait_for_log(failed);
    assert!(line.contains("CPU time budget of 50ms exceeded"), "{line}");
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "bomb"]), "1\n");
    let line = host.serve.wait_for_nth_log(failed, 2);
    assert!(line.contains("above its limit of 32MiB"), "{line}");
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "fifth"]), "1\n");
    host.serve.wait_for_nth_log(handled, 2);

    // Scaled to zero, the app keeps its subscription; a message loads it.
    host.serve
        .wait_for_log("unloaded app `chat`: no request for 1s");
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "again"]), "1\n");
    host.serve.wait_for_log("loaded app `chat` version 1 in");
    host.serve.wait_for_nth_log(handled, 3);

    // A deploy that leaves the triggers alone keeps the subscription.
    assert_eq!(host.deploy("chat", &bundle).0, 200);
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "third"]), "1\n");
    host.serve.wait_for_nth_log(handled, 4);
    assert_eq!(host.serve.log().matches(&subscribed).count(), 1);

    // A restart subscribes again before any request.
    host.serve.terminate();
    assert_eq!(host.serve.wait().0, 0);
    let host = Host::start(&tern, top.path(), &args);
    host.serve.wait_for_log(&subscribed);
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "after"]), "1\n");
    host.serve.wait_for_log(handled);

    // A deploy that changes the triggers ends the old subscription and
    // makes the new one.
    assert_eq!(host.deploy("chat", &moved).0, 200);
    host.serve
        .wait_for_log("unsubscribed from `messages` on redis");
    host.serve
        .wait_for_log(&format!("subscribed to `other` on redis 127.0.0.1:{port}"));
    assert_eq!(redis_cli(port, &["PUBLISH", "other", "moved"]), "1\n");
    let handled_other = "redis message on `other` (5 bytes) -> inbox: handled in";
    host.serve.wait_for_log(handled_other);

    // A delete ends the subscription; the handler under way finishes.
    assert_eq!(redis_cli(port, &["PUBLISH", "other", "block"]), "1\n");
    let held = hold.next();
    assert_eq!(host.admin("DELETE", "/v1/apps/chat", b"").0, 200);
    host.serve
        .wait_for_log("unsubscribed from `other` on redis");
    release(held);
    host.serve.wait_for_nth_log(handled_other, 2);
    // Redis sees the subscriber go once the closed socket reaches it.
    let gone = std::time::Instant::now() + PATIENCE;
    while redis_cli(port, &["PUBLISH", "other", "lost"]) != "0\n" {
        assert!(std::time::Instant::now() < gone, "still subscribed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        redis_cli(port, &["LRANGE", "received", "0", "-1"]),
        "hello\nfifth\nagain\nthird\nafter\nmoved\nblock\n"
    );

    // Without the operator's leave, the restarted host names why the app
    // gets no messages.
    host.serve.terminate();
    assert_eq!(host.serve.wait().0, 0);
    let host = Host::start(&tern, top.path(), &["--allow-redis-trigger", &allowed]);
    assert_eq!(host.deploy("chat", &bundle).0, 201);
    host.serve.terminate();
    assert_eq!(host.serve.wait().0, 0);
    let host = Host::start(&tern, top.path(), &[]);
    host.serve.wait_for_log(&format!(
        "app `chat` gets no Redis messages: its Redis trigger on `messages` subscribes at redis 127.0.0.1:{port}, which this host does not let apps reach"
    ));
}

#[test]
fn apps_reach_non_public_addresses_only_where_the_operator_allows() {
    use crate::grants::{accepted, listener};
    use crate::outbound::{HELLO as UPSTREAM_HELLO, upstream};
    let (closed, denied) = listener();
    let (open, count) = upstream(UPSTREAM_HELLO);
    // Both named in the app's own allowlist, as `tern serve` would let it.
    let extra = format!("allowed_outbound_hosts = [\"http://{denied}\", \"http://{open}\"]");
    let app = app_dir("fetcher", &[("/fetch", HTTP_OUTBOUND)], &[], &extra);
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &["--allow-private-address", &open]);
    assert_eq!(host.deploy("fetcher", &tar_of(app.path(), |_| {})).0, 201);
    let fetch = |addr: &str| {
        let url = format!("http://{addr}/")
            .replace(':', "%3A")
            .replace('/', "%2F");
        host.get("fetcher.localhost", &format!("/fetch?url={url}&count=1"))
    };
    let refused = fetch(&denied);
    assert!(
        refused.expect(502).contains("DestinationIpProhibited"),
        "{}",
        refused.body
    );
    assert_eq!(accepted(&closed), 0);
    assert_eq!(fetch(&open).expect(200), "200 from upstream\n");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A flag that is no address is refused before anything starts.
    let out = tern.run(&["host", "--allow-private-address", "db.internal:5432"]);
    out.code(2);
    assert!(
        out.stderr
            .contains("`db.internal:5432` is not an IP address, nor IP:PORT"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_spin_app_with_files_globs_deploys_the_files_they_match() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(HTTP_ECHO, app.path().join("echo.wasm")).unwrap();
    std::fs::write(
        app.path().join("spin.toml"),
        "spin_manifest_version = 2\n\n[application]\nname = \"globs\"\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"echo\"\n\n\
         [component.echo]\nsource = \"echo.wasm\"\nfiles = [\"static/*.txt\"]\n\
         exclude_files = [\"static/secret*\"]\n",
    )
    .unwrap();
    std::fs::create_dir(app.path().join("static")).unwrap();
    std::fs::write(app.path().join("static/a.txt"), "shipped").unwrap();
    std::fs::write(app.path().join("static/secret.txt"), "kept home").unwrap();
    let token = top.path().join("token");
    host.deploy_dir(&tern, app.path(), &token).code(0);
    let read = |file: &str| {
        let body = host.get("globs.localhost", &format!("/?file={file}"));
        let body = body.expect(200).to_owned();
        body.lines()
            .find(|l| l.starts_with("file"))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(read("/static/a.txt"), "file: shipped");
    assert!(read("/static/secret.txt").starts_with("file error: "));
}

#[test]
fn upstream_routes_reach_only_what_the_operator_allows() {
    let tern = Tern::new();
    let upstream = Serve::start(&tern, &crate::serve::one("/...", HTTP_ECHO, ""), &[]);
    let edge = |authority: &str| {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "manifest_version = 1\n\n[app]\nname = \"edge\"\n\n[[route]]\npath = \"/...\"\nupstream = \"backend\"\nfilters = [\"tag\"]\n\n[upstream.backend]\nurl = \"http://{authority}\"\n\n[filter.tag]\nsource = \"{PROXY_FEATURES}\"\n"
        );
        write_app(dir.path(), &toml);
        tar_of(dir.path(), |_| {})
    };
    let allowed = upstream.addr.to_string();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &["--allow-upstream", &allowed]);
    // Anything else, the host's own admin API above all, is refused.
    let (status, answer) = host.deploy("edge", &edge(&host.admin.to_string()));
    assert_eq!(status, 422, "{answer}");
    let error = host.refusal(&answer);
    assert!(error.contains("upstream.backend"), "{error}");
    assert!(
        error.contains("not an upstream this host allows"),
        "{error}"
    );

    assert_eq!(host.deploy("edge", &edge(&allowed)).0, 201);
    let response = host.get("edge.localhost", "/through");
    assert!(
        response.expect(200).contains("path: /through\n"),
        "{}",
        response.body
    );
    assert_eq!(response.header("x-visits"), Some("1"));
    let text = host.metrics();
    assert!(
        text.contains("proxy_wasm_requests_total{app=\"edge\",filter=\"tag\"} 1"),
        "{text}"
    );
}

#[test]
fn requests_to_the_app_itself_stay_in_that_app() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let itself = "allowed_outbound_hosts = [\"http://self\"]";
    let shop = app_dir(
        "shop",
        &[("/fetch", HTTP_OUTBOUND), ("/hello", HTTP_HELLO)],
        &[],
        itself,
    );
    let blog = app_dir("blog", &[("/fetch", HTTP_OUTBOUND)], &[], itself);
    for (name, dir) in [("shop", &shop), ("blog", &blog)] {
        let (status, answer) = host.deploy(name, &tar_of(dir.path(), |_| {}));
        assert_eq!(status, 201, "{answer}");
    }
    // A relative URL goes out under the Host the client sent, so it reaches
    // the app that sent it: blog has no /hello of its own.
    assert_eq!(
        host.get("shop.localhost", "/fetch?url=/hello").expect(200),
        "200 hello, world\n"
    );
    let body = host
        .get("blog.localhost", "/fetch?url=/hello")
        .expect(200)
        .to_string();
    assert!(body.starts_with("404 "), "{body}");
}

/// The directory of the app `name` of [`crate::services::config_app`],
/// reading its variables on `/config/...`.
fn config_dir(name: &str) -> tempfile::TempDir {
    let toml =
        crate::services::config_app().replace("name = \"test\"\n", &format!("name = \"{name}\"\n"));
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), &toml);
    dir
}

/// A bundle of [`config_dir`].
fn config_bundle(name: &str) -> Vec<u8> {
    tar_of(config_dir(name).path(), |_| {})
}

#[test]
fn each_app_has_its_own_variables_and_the_hosts_environment_reaches_none() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    // The operator's environment holds a value for `api_token`: under
    // `tern serve` the app would get it; here no app does.
    let leaked = "operator-env-secret-5678";
    let mut command = tern.command();
    command.env("TERN_VARIABLE_API_TOKEN", leaked);
    let host = Host::start_with(command, top.path(), &[]);
    host.serve.wait_for_log(
        "tern: warning: TERN_VARIABLE_API_TOKEN ignored: under tern host, apps get only the variables set for each",
    );
    let to = format!("http://{}", host.admin);
    let token = top.path().join("token");
    let apps = |args: &[&str]| {
        let mut all = vec!["apps", "variables"];
        all.extend_from_slice(args);
        all.extend(["--to", &to, "--token-file", token.to_str().unwrap()]);
        tern.run(&all)
    };

    // Without its own value, a required variable stops the deploy.
    let (status, answer) = host.deploy("shop", &config_bundle("shop"));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        host.refusal(&answer),
        "variable `api_token` is required but has no value; set it for this app with `tern apps variables set APP api_token=VALUE`"
    );

    // Set before the first deploy, they wait for it.
    apps(&["set", "shop", "api_token=shop-token", "name=shop"])
        .code(0)
        .stdout("shop is not deployed yet; its first deploy gets them (2 variables set)\n");
    assert_eq!(host.deploy("shop", &config_bundle("shop")).0, 201);
    assert_eq!(
        host.get("shop.localhost", "/config").expect(200),
        "greeting=hello, shop\ntoken=Bearer shop-token"
    );

    // Another app declaring the same names sees none of shop's values.
    let (status, answer) = host.admin(
        "PATCH",
        "/v1/apps/blog/variables",
        br#"{"api_token": "blog-token"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"name": "blog", "variables": ["api_token"], "version": null, "undeclared": []})
    );
    assert_eq!(host.deploy("blog", &config_bundle("blog")).0, 201);
    assert_eq!(
        host.get("blog.localhost", "/config").expect(200),
        "greeting=hello, world\ntoken=Bearer blog-token"
    );

    // A change reloads the app: the next request sees it. A secret comes
    // from a file, which keeps it out of the process list.
    let file = top.path().join("rotated.txt");
    std::fs::write(&file, "rotated-token\n").unwrap();
    let from_file = format!("api_token={}", file.display());
    apps(&["set", "shop", "--file", &from_file, "colour=blue"])
        .code(0)
        .stdout("shop version 1 reloaded (3 variables set)\n")
        .stderr_has("tern: warning: `shop` version 1 declares no variable `colour`");
    assert_eq!(
        host.get("shop.localhost", "/config/token").expect(200),
        "Bearer rotated-token"
    );
    // Names are listed, values never.
    apps(&["list", "shop"])
        .code(0)
        .stdout("api_token\ncolour\nname\n");
    let (status, answer) = host.admin("GET", "/v1/apps/shop/variables", b"");
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"name": "shop", "variables": ["api_token", "colour", "name"]})
    );

    // A change the app cannot load with is refused, and changes nothing.
    apps(&["unset", "shop", "api_token"])
        .code(1)
        .one_line_error("the host refused the change to `shop`'s variables (422): variable `api_token` is required but has no value");
    assert_eq!(
        host.get("shop.localhost", "/config/token").expect(200),
        "Bearer rotated-token"
    );
    apps(&["unset", "shop", "colour"])
        .code(0)
        .stdout("shop version 1 reloaded (2 variables set)\n");

    // Bad input: one line naming what is wrong; nothing changes.
    for (method, body, error) in [
        (
            "PUT",
            &br#"{"Api-Token": "x"}"#[..],
            "`Api-Token` is not a variable name: use lowercase letters, digits and `_`, starting with a letter",
        ),
        (
            "PUT",
            br#"{"api_token": null}"#,
            "the body must be a JSON object of variable names to string values",
        ),
        (
            "PATCH",
            br#"{"api_token": 5}"#,
            "the body must be a JSON object of variable names to string values (or null, to remove one)",
        ),
        (
            "PATCH",
            b"api_token=x",
            "the body must be a JSON object of variable names to string values (or null, to remove one)",
        ),
    ] {
        let (status, answer) = host.admin(method, "/v1/apps/shop/variables", body);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(host.refusal(&answer), error);
    }
    let (status, answer) = host.admin("GET", "/v1/apps/Shop!/variables", b"");
    assert_eq!(status, 400, "{answer}");
    let stranger = host.call(
        None,
        "PUT",
        "/v1/apps/shop/variables",
        br#"{"api_token": "stolen"}"#,
    );
    assert_eq!(stranger.status, 401);
    assert!(!stranger.body.contains("rotated"), "{}", stranger.body);

    // `tern deploy --variable` sets them before it sends the bundle, so a
    // first deploy finds its required one.
    let news = config_dir("news");
    let out = host.deploy_dir_with(
        &tern,
        news.path(),
        &token,
        &[
            "--variable",
            "api_token=news-token",
            "--variable",
            "name=news",
        ],
    );
    out.code(0).stderr_has("tern: news has 2 variables set");
    assert_eq!(
        host.get("news.localhost", "/config").expect(200),
        "greeting=hello, news\ntoken=Bearer news-token"
    );

    // On disk, readable by the host's user alone; back after a restart.
    let file = host.state.join("apps/shop/variables.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = host.serve.log();
    for secret in [leaked, "shop-token", "blog-token", "rotated-token"] {
        assert!(!log.contains(secret), "{log}");
    }
    drop(host);
    let host = Host::start(&tern, top.path(), &[]);
    assert_eq!(
        host.get("shop.localhost", "/config").expect(200),
        "greeting=hello, shop\ntoken=Bearer rotated-token"
    );

    // A runtime config's [variables] would reach every app: refused.
    let rc = top.path().join("runtime.toml");
    std::fs::write(&rc, "[variables]\napi_token = \"for-everyone\"\n").unwrap();
    drop(host);
    let state = format!("--state-dir={}", top.path().join("state").display());
    tern.run(&[
        "host",
        &state,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--runtime-config",
        rc.to_str().unwrap(),
    ])
    .code(1)
    .one_line_error(
        "the runtime config sets variable `api_token` under [variables], which tern host would give to every app that declares it",
    );
}

#[test]
fn a_purge_waits_for_the_requests_in_flight() {
    let tern = Tern::new();
    let top = tempfile::tempdir().unwrap();
    let host = Host::start(&tern, top.path(), &[]);
    let app = bundle("shop", &[("/wait", HTTP_WAIT)], &[]);
    assert_eq!(host.deploy("shop", &app).0, 201);
    let held = host.hold("shop.localhost", "/wait");

    std::thread::scope(|scope| {
        let delete = scope.spawn(|| host.admin("DELETE", "/v1/apps/shop?purge=true", b""));
        host.serve.wait_for_log(
            "app `shop` is deleted; waiting for 1 request in flight before purging its data",
        );
        // Gone for new requests at once; the purge waits for the one in
        // flight, which ends normally.
        assert_eq!(host.get("shop.localhost", "/wait").status, 404);
        assert!(!delete.is_finished());
        assert!(host.state.join("apps/shop").exists());
        assert_eq!(finish(held, "abc").expect(200), "read 3 bytes");
        assert_purged(&host, "shop", delete.join().unwrap());
    });
}
