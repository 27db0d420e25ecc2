//! Host services through `tern serve`: key-value stores on SQLite and on a
//! real Redis, `tern kv`, and variables read through `wasi:config`.

use std::path::Path;
use std::time::Instant;

use test_programs::redis::RedisServer;
use test_programs::*;

use crate::serving::{PATIENCE, Part, Serve, manifest, write_app};
use crate::support::Tern;

/// An app whose `kv` component may open the stores in `grants`; `other`
/// declares `elsewhere`, so that store exists but `kv` may not open it.
fn kv_app(grants: &str) -> String {
    manifest(&[
        Part {
            route: "/kv/...",
            id: "kv",
            source: HTTP_KV,
            extra: &format!("key_value_stores = [{grants}]"),
        },
        Part {
            route: "/hello",
            id: "other",
            source: HTTP_HELLO,
            extra: "key_value_stores = [\"elsewhere\"]",
        },
    ])
}

fn app_dir(manifest: &str, runtime_config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), manifest);
    if let Some(config) = runtime_config {
        std::fs::write(dir.path().join("runtime.toml"), config).unwrap();
    }
    dir
}

fn redis_config(server: &RedisServer) -> String {
    format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\n",
        server.url()
    )
}

/// Serves [`kv_app`] with its `default` store on `config`, on one worker
/// thread, so that every request shares it.
fn serve_kv(tern: &Tern, config: Option<&str>) -> Serve {
    let dir = app_dir(&kv_app("\"default\""), config);
    let mut args = vec!["--threads", "1"];
    let rc = dir.path().join("runtime.toml");
    if config.is_some() {
        args.extend(["--runtime-config", rc.to_str().unwrap()]);
    }
    Serve::start_in(tern, dir, &args)
}

#[test]
pub fn http_kv() {
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), None);
    let app = dir.path().to_owned();
    let serve = Serve::spawn(tern.command(), &app, &[]);
    serve.wait_for_log("key-value store `default`: sqlite");

    assert_eq!(serve.get("/kv/default/greeting").expect(404), "absent");
    serve
        .request("PUT", "/kv/default/greeting", &[], "hello")
        .expect(204);
    assert_eq!(serve.get("/kv/default/greeting").expect(200), "hello");
    assert_eq!(serve.get("/kv/default/greeting?exists").expect(200), "true");

    assert_eq!(serve.post("/kv/default/hits?incr=5", "").expect(200), "5");
    assert_eq!(serve.post("/kv/default/hits?incr=2", "").expect(200), "7");
    assert_eq!(serve.get("/kv/default/hits").expect(200), "7");

    let cas = |expected: Option<&str>, new: &str| {
        let headers: Vec<(&str, &str)> = expected.map(|e| ("x-expected", e)).into_iter().collect();
        serve
            .request("POST", "/kv/default/lock?cas", &headers, new)
            .expect(200)
            .to_string()
    };
    assert_eq!(cas(None, "a"), "true");
    assert_eq!(cas(None, "b"), "false");
    assert_eq!(cas(Some("x"), "b"), "false");
    assert_eq!(cas(Some("a"), "b"), "true");
    assert_eq!(serve.get("/kv/default/lock").expect(200), "b");

    serve
        .post("/kv/default?set-many", "k1=v1\nk2=v2")
        .expect(204);
    assert_eq!(
        serve
            .post("/kv/default?get-many", "k1\nnope\nk2")
            .expect(200),
        "k1=v1\nnope absent\nk2=v2"
    );
    serve.post("/kv/default?delete-many", "k1\nk2").expect(204);
    serve
        .request("DELETE", "/kv/default/greeting", &[], "")
        .expect(204);
    assert_eq!(serve.get("/kv/default?keys").expect(200), "hits\nlock");

    // The loop `bench/kv` times.
    let bench = serve
        .get("/kv/default/b?bench-set=10")
        .expect(200)
        .to_string();
    assert!(bench.starts_with("10 ops in "), "{bench}");
    serve
        .request("DELETE", "/kv/default/b", &[], "")
        .expect(204);

    // The data is in the app's SQLite file, which `tern kv` reads too.
    assert!(app.join(".tern/kv/default.sqlite").is_file());
    drop(serve);
    tern.run(&["kv", "get", "--app", app.to_str().unwrap(), "hits"])
        .code(0)
        .stdout("7");
}

#[test]
fn stores_not_granted_are_denied_and_unknown_ones_do_not_exist() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &kv_app("\"default\""), &[]);
    assert_eq!(serve.get("/kv/elsewhere/k").expect(403), "access-denied");
    assert_eq!(serve.get("/kv/nowhere/k").expect(404), "no-such-store");
    serve.get("/kv/default/k").expect(404);
}

#[test]
fn key_and_value_limits_are_errors_the_guest_sees() {
    let tern = Tern::new();
    let config = "[key_value_store.default]\ntype = \"memory\"\nmax_value_size = \"8B\"\n";
    let dir = app_dir(&kv_app("\"default\""), Some(config));
    let rc = dir.path().join("runtime.toml");
    let serve = Serve::start_in(&tern, dir, &["--runtime-config", rc.to_str().unwrap()]);
    serve.wait_for_log("key-value store `default`: memory");
    let long = "k".repeat(300);
    assert_eq!(
        serve.get(&format!("/kv/default/{long}")).expect(500),
        "other: key is 300 bytes, above the limit of 256 bytes"
    );
    assert_eq!(
        serve
            .request("PUT", "/kv/default/k", &[], "123456789")
            .expect(500),
        "other: value is 9 bytes, above the limit of 8 bytes"
    );
    serve
        .request("PUT", "/kv/default/k", &[], "12345678")
        .expect(204);
}

/// The batch from the issue (1,500 copies of a key holding 1 MiB), a
/// batch that would return too much, and a store past its quota: each is
/// an error the guest sees, and the server goes on serving.
#[test]
fn batches_and_store_size_are_bounded_and_the_server_keeps_serving() {
    let tern = Tern::new();
    let config = "[key_value_store.default]\ntype = \"sqlite\"\nmax_store_size = \"3MiB\"\n";
    let dir = app_dir(&kv_app("\"default\""), Some(config));
    let rc = dir.path().join("runtime.toml");
    let serve = Serve::start_in(&tern, dir, &["--runtime-config", rc.to_str().unwrap()]);
    serve.wait_for_log("key-value store `default`: sqlite");
    let mib = "x".repeat(1 << 20);
    serve
        .request("PUT", "/kv/default/big", &[], &mib)
        .expect(204);

    assert_eq!(
        serve.get("/kv/default/big?copies=1500").expect(500),
        "other: the batch has 1500 keys, above the limit of 1000 keys per batch"
    );
    // 1000 MiB if it were read to the end; reading stops past 16 MiB.
    assert_eq!(
        serve.get("/kv/default/big?copies=1000").expect(500),
        "other: the keys and values found come to more than 16777216 bytes, the limit per batch (ask for fewer keys at a time)"
    );
    assert_eq!(
        serve.get("/kv/default/big?copies=15").expect(200),
        "15 found, 15728640 bytes"
    );

    // 3 MiB of keys and values: `big` and `big2` fit, `big3` does not.
    serve
        .request("PUT", "/kv/default/big2", &[], &mib)
        .expect(204);
    assert_eq!(
        serve
            .request("PUT", "/kv/default/big3", &[], &mib)
            .expect(500),
        "other: the store is full: this write would take it past its quota of 3145728 bytes"
    );
    assert_eq!(serve.get("/kv/default/big3?exists").expect(200), "false");
    serve
        .request("DELETE", "/kv/default/big2", &[], "")
        .expect(204);
    serve
        .request("PUT", "/kv/default/big3", &[], &mib)
        .expect(204);

    serve.get("/hello").expect(200);
    assert_eq!(serve.get("/kv/default/big?exists").expect(200), "true");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), None);
    let app = dir.path().to_owned();
    let serve = Serve::spawn(tern.command(), &app, &[]);
    for i in 0..20 {
        let path = format!("/kv/default/key{i}");
        serve
            .request("PUT", &path, &[], &format!("value{i}"))
            .expect(204);
    }
    // `Drop` sends SIGKILL: no shutdown, no checkpoint.
    drop(serve);
    let serve = Serve::spawn(tern.command(), &app, &[]);
    for i in 0..20 {
        assert_eq!(
            serve.get(&format!("/kv/default/key{i}")).expect(200),
            format!("value{i}")
        );
    }
    drop(serve);
    drop(dir);
}

/// Increments from many connections at once, each answered; the total
/// must be exact.
fn hammer_increments(servers: &[&Serve], threads: usize, each: usize) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            let serve = servers[t % servers.len()];
            scope.spawn(move || {
                for _ in 0..each {
                    serve.post("/kv/default/hits?incr=1", "").expect(200);
                }
            });
        }
    });
}

#[test]
fn concurrent_increments_on_sqlite_lose_nothing() {
    let tern = Tern::new();
    let serve = Serve::start(&tern, &kv_app("\"default\""), &[]);
    hammer_increments(&[&serve], 8, 25);
    assert_eq!(serve.get("/kv/default/hits").expect(200), "200");
}

#[test]
fn two_servers_share_one_redis() {
    let redis = RedisServer::start();
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), Some(&redis_config(&redis)));
    let rc = dir.path().join("runtime.toml");
    let args = ["--runtime-config", rc.to_str().unwrap()];
    let a = Serve::spawn(tern.command(), dir.path(), &args);
    let b = Serve::spawn(tern.command(), dir.path(), &args);
    a.wait_for_log("key-value store `default`: redis");
    // The URL is the operator's secret: never printed.
    assert!(!a.log().contains(&redis.url()), "{}", a.log());

    a.request("PUT", "/kv/default/shared", &[], "from a")
        .expect(204);
    assert_eq!(b.get("/kv/default/shared").expect(200), "from a");
    let swap = [("x-expected", "from a")];
    assert_eq!(
        b.request("POST", "/kv/default/shared?cas", &swap, "from b")
            .expect(200),
        "true"
    );
    assert_eq!(
        a.request("POST", "/kv/default/shared?cas", &swap, "again")
            .expect(200),
        "false"
    );
    assert_eq!(a.get("/kv/default/shared").expect(200), "from b");

    hammer_increments(&[&a, &b], 8, 25);
    assert_eq!(a.get("/kv/default/hits").expect(200), "200");
    assert!(!Path::new(&dir.path().join(".tern/kv/default.sqlite")).exists());
}

#[test]
fn redis_down_is_an_error_in_bounded_time_and_others_are_served() {
    let mut redis = RedisServer::start();
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), Some(&redis_config(&redis)));
    let rc = dir.path().join("runtime.toml");
    let serve = Serve::start_in(&tern, dir, &["--runtime-config", rc.to_str().unwrap()]);
    serve.request("PUT", "/kv/default/k", &[], "v").expect(204);
    redis.stop();
    // Bounded by the store's own timeout (2 s), well inside the harness's
    // patience: the answer is the store's error, not a hung request.
    let body = serve.get("/kv/default/k").expect(500).to_string();
    assert!(
        body.starts_with("other: redis store is unavailable"),
        "{body}"
    );
    serve.get("/hello").expect(200);
}

#[test]
fn redis_stalled_is_an_error_after_the_timeout_and_others_are_served() {
    let redis = RedisServer::start();
    let tern = Tern::new();
    let serve = serve_kv(&tern, Some(&redis_config(&redis)));
    serve.request("PUT", "/kv/default/k", &[], "v").expect(204);
    // Running, accepting, and answering nothing: only the response
    // timeout (1s) ends the request.
    redis.pause();
    std::thread::scope(|s| {
        let stalled = s.spawn(|| serve.get("/kv/default/k?announce"));
        serve.wait_for_log("kv request running");
        // Meanwhile the worker thread serves others.
        serve.get("/hello").expect(200);
        let response = stalled.join().unwrap();
        let body = response.expect(500);
        assert!(
            body.starts_with("other: redis store is unavailable: "),
            "{body}"
        );
    });
    // The store recovers with Redis, on a new connection.
    redis.resume();
    assert_eq!(serve.get("/kv/default/k").expect(200), "v");
}

/// Another process holding an SQLite store's write lock delays the writes
/// to that store, not the worker thread they came in on.
#[test]
fn a_locked_sqlite_store_delays_only_the_requests_that_use_it() {
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), None);
    let file = dir.path().join(".tern/kv/default.sqlite");
    // One worker thread: every request below shares it.
    let serve = Serve::start_in(&tern, dir, &["--threads", "1"]);
    serve
        .request("PUT", "/kv/default/k", &[], "before")
        .expect(204);
    // The database's write lock, held by another connection as another
    // process (a second server, `tern kv`) would.
    let mut other = rusqlite::Connection::open(&file).unwrap();
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    std::thread::scope(|s| {
        let write = s.spawn(|| serve.request("PUT", "/kv/default/k?announce", &[], "after"));
        serve.wait_for_log("kv request running");
        // The write waits for the lock; the thread it came in on serves
        // others meanwhile, a read of the same store among them.
        serve.get("/hello").expect(200);
        assert_eq!(serve.get("/kv/default/k").expect(200), "before");
        // Released only now: had the write held up the thread, the requests
        // above would have waited for it to give up on the lock (5 s), and
        // it would have failed.
        drop(lock);
        write.join().unwrap().expect(204);
    });
    assert_eq!(serve.get("/kv/default/k").expect(200), "after");
}

#[test]
fn expiry_set_from_a_guest() {
    let tern = Tern::new();
    let serve = serve_kv(&tern, None);
    serve
        .request("PUT", "/kv/default/long?ttl-ms=3600000", &[], "stays")
        .expect(204);
    serve
        .request("PUT", "/kv/default/short?ttl-ms=1", &[], "goes")
        .expect(204);
    // Asked until it is gone, which takes a millisecond: no pacing.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = serve.get("/kv/default/short");
        if response.status == 404 {
            break;
        }
        assert_eq!(response.expect(200), "goes");
        assert!(Instant::now() < deadline, "`short` never expired");
    }
    assert_eq!(serve.get("/kv/default/short?exists").expect(200), "false");
    assert_eq!(serve.get("/kv/default?keys").expect(200), "long");
    assert_eq!(serve.get("/kv/default/long").expect(200), "stays");
    // 1ms to 100 years.
    assert_eq!(
        serve
            .request("PUT", "/kv/default/k?ttl-ms=0", &[], "v")
            .expect(500),
        "other: a time-to-live must be at least 1ms"
    );
    assert_eq!(
        serve
            .request("PUT", "/kv/default/k?ttl-ms=3153600000001", &[], "v")
            .expect(500),
        "other: a time-to-live must be at most 100 years"
    );
    serve
        .request("PUT", "/kv/default/k?ttl-ms=3153600000000", &[], "v")
        .expect(204);
}

#[test]
fn an_instance_holds_at_most_64_buckets_open() {
    let tern = Tern::new();
    let serve = serve_kv(
        &tern,
        Some("[key_value_store.default]\ntype = \"memory\"\n"),
    );
    // Closing buckets gives them back: 64 open at once, twice over.
    assert_eq!(
        serve.get("/kv/default?open-many=64").expect(200),
        "opened 64 twice"
    );
    assert_eq!(
        serve.get("/kv/default?open-many=65").expect(500),
        "other: more than 64 buckets open at once"
    );
    // Each request starts with none open.
    assert_eq!(
        serve.get("/kv/default?open-many=64").expect(200),
        "opened 64 twice"
    );
}

#[test]
fn tern_kv_seeds_and_inspects_an_app() {
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), None);
    let app = dir.path().to_str().unwrap();
    tern.run(&["kv", "set", "--app", app, "b", "2"]).code(0);
    tern.run_with_stdin(&["kv", "set", "--app", app, "a", "-"], "from stdin")
        .code(0);
    tern.run(&["kv", "list", "--app", app])
        .code(0)
        .stdout("a\nb\n");
    tern.run(&["kv", "get", "--app", app, "a"])
        .code(0)
        .stdout("from stdin");
    tern.run(&["kv", "delete", "--app", app, "a"]).code(0);
    tern.run(&["kv", "get", "--app", app, "a"])
        .code(1)
        .one_line_error("no key `a` in store `default`");
    tern.run(&["kv", "list", "--app", app, "--store", "cache"])
        .code(1)
        .one_line_error(
            "app `test` has no key-value store `cache`; it declares: default, elsewhere",
        );

    // What `tern kv` wrote, the app serves.
    let serve = Serve::start_in(&tern, dir, &[]);
    assert_eq!(serve.get("/kv/default/b").expect(200), "2");
}

/// An app whose `/config/...` route reads its variables: `greeting` and
/// `name` have defaults, `api_token` is required and secret.
pub(crate) fn config_app() -> String {
    let mut toml = manifest(&[Part {
        route: "/config/...",
        id: "config",
        source: HTTP_CONFIG,
        extra: "[component.config.variables]\ngreeting = \"{{ greeting }}, {{ name }}\"\ntoken = \"Bearer {{ api_token }}\"\n",
    }]);
    toml.push_str(
        "\n[variables]\ngreeting = { default = \"hello\" }\nname = { default = \"world\" }\napi_token = { required = true, secret = true }\n",
    );
    toml
}

#[test]
pub fn http_config() {
    let tern = Tern::new();
    let secret = "s3cr3t-value-1234";
    let config = "[variables]\nname = \"operator\"\napi_token = \"from-config\"\n";
    let dir = app_dir(&config_app(), Some(config));
    let rc = dir.path().join("runtime.toml");
    let mut command = tern.command();
    command.env("TERN_VARIABLE_API_TOKEN", secret);
    let serve = Serve::spawn(
        command,
        dir.path(),
        &["--runtime-config", rc.to_str().unwrap()],
    );

    // Environment beats the runtime config, which beats the default.
    assert_eq!(serve.get("/config/greeting").expect(200), "hello, operator");
    assert_eq!(
        serve.get("/config/token").expect(200),
        format!("Bearer {secret}")
    );
    assert_eq!(serve.get("/config/missing").expect(404), "absent");
    assert_eq!(
        serve.get("/config").expect(200),
        format!("greeting=hello, operator\ntoken=Bearer {secret}")
    );
    // App variables the component did not map are not visible.
    assert_eq!(serve.get("/config/api_token").expect(404), "absent");
    assert!(!serve.log().contains(secret), "{}", serve.log());
}

#[test]
fn a_required_variable_without_a_value_stops_tern() {
    let tern = Tern::new();
    let dir = app_dir(&config_app(), None);
    tern.run(&[
        "serve",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .code(1)
    .one_line_error(
        "variable `api_token` is required but has no value; set TERN_VARIABLE_API_TOKEN",
    );
}

#[test]
pub fn kv_counter() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state/counter.sqlite");
    let grant = format!("default={}", file.display());
    for expected in ["runs: 1\n", "runs: 2\n"] {
        tern.run(&["run", "--kv", &grant, P2_KV_COUNTER])
            .code(0)
            .stdout(expected);
    }
    assert!(file.is_file());
    // What a CLI program wrote is an ordinary store: another name is not.
    tern.run(&["run", "--kv", &grant, P2_KV_COUNTER, "other"])
        .code(1)
        .stdout("error: Error::NoSuchStore\n");
    tern.run(&["run", P2_KV_COUNTER])
        .code(1)
        .stdout("error: Error::NoSuchStore\n");
    // The same program built for wasm32-wasip1 is a core module carrying
    // its component type: made a component (WASI's preview 1 adapter), it
    // runs the same, on the same store.
    tern.run(&["run", "--kv", &grant, P1_KV_COUNTER])
        .code(0)
        .stdout("runs: 3\n");
}

#[test]
fn runtime_config_errors_name_the_runtime_config_not_the_manifest() {
    let tern = Tern::new();
    let dir = app_dir(&kv_app("\"default\""), None);
    let app = dir.path().to_str().unwrap();
    let missing = dir.path().join("rc.toml");
    let rc = missing.to_str().unwrap();
    let expected = format!("reading runtime config {rc}: ");
    for args in [
        vec![
            "serve",
            app,
            "--listen",
            "127.0.0.1:0",
            "--runtime-config",
            rc,
        ],
        vec!["up", app, "--listen", "127.0.0.1:0", "--runtime-config", rc],
        vec!["kv", "list", "--app", app, "--runtime-config", rc],
    ] {
        let out = tern.run(&args);
        out.code(1).one_line_error(&expected);
        assert!(!out.stderr.contains("manifest"), "{args:?}: {out:#?}");
    }
    // A directory, or bytes that are not text, likewise.
    let not_text = dir.path().join("rc.bin");
    std::fs::write(&not_text, [0xff, 0xfe, 0x00]).unwrap();
    for path in [dir.path(), not_text.as_path()] {
        let rc = path.to_str().unwrap();
        let out = tern.run(&["serve", app, "--runtime-config", rc]);
        out.code(1)
            .one_line_error(&format!("reading runtime config {rc}: "));
        assert!(!out.stderr.contains("manifest"), "{out:#?}");
    }
}

/// A store name misspelt in the runtime config would send the data to the
/// default SQLite store instead of the backend meant for it: Tern warns,
/// naming what the app declares, at start and after each reload, in the
/// log's format.
#[test]
fn a_runtime_config_naming_what_nobody_declares_is_a_warning() {
    let tern = Tern::new();
    let app = format!(
        "{}\n[variables]\napi_token = {{ default = \"unset\" }}\n",
        kv_app("\"default\"")
    );
    let config =
        "[key_value_store.defualt]\ntype = \"memory\"\n[variables]\napi_tokne = \"s3cret-value\"\n";
    let store_warning = "tern: warning: the runtime config sets key_value_store.defualt, which no component declares; declared: default, elsewhere";
    let variable_warning = "tern: warning: the runtime config sets variables.api_tokne, which the app does not declare; declared: api_token";

    let dir = app_dir(&app, Some(config));
    let rc = dir.path().join("runtime.toml");
    let serve = Serve::start_in(&tern, dir, &["--runtime-config", rc.to_str().unwrap()]);
    let log = serve.log();
    let lines: Vec<&str> = log.lines().collect();
    let listening = lines.iter().position(|l| l.starts_with("listening on"));
    for warning in [store_warning, variable_warning] {
        let at = lines.iter().position(|l| *l == warning);
        assert!(
            at.is_some() && at < listening,
            "no {warning:?} before listening; log:\n{log}"
        );
    }
    // What the typo does: the declared store is on its default backend.
    serve.wait_for_log("key-value store `default`: sqlite");
    assert!(!log.contains("s3cret-value"), "{log}");

    // JSON lines stay JSON, and a reload says it again.
    let dir = app_dir(&app, Some(config));
    let rc = dir.path().join("runtime.toml");
    let serve = Serve::start_in(
        &tern,
        dir,
        &[
            "--runtime-config",
            rc.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    for warning in [store_warning, variable_warning] {
        let line = serve.wait_for_log(warning);
        assert!(
            line.starts_with("{\"") && line.contains(&format!("\"message\":\"{warning}\"")),
            "{line}"
        );
    }
    serve.signal(libc::SIGUSR1);
    serve.wait_for_log("tern: reloaded in");
    serve.wait_for_nth_log(store_warning, 2);
    serve.wait_for_nth_log(variable_warning, 2);
    // Nothing to say when the runtime config names only what is declared.
    let dir = app_dir(&app, Some("[key_value_store.default]\ntype = \"memory\"\n"));
    let rc = dir.path().join("runtime.toml");
    let serve = Serve::start_in(&tern, dir, &["--runtime-config", rc.to_str().unwrap()]);
    serve.wait_for_log("key-value store `default`: memory");
    assert!(!serve.log().contains("warning"), "{}", serve.log());
}
