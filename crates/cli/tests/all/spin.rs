//! Spin apps served unchanged: a `spin.toml` (Spin manifest version 2)
//! beside components built from source against the published Spin Rust
//! SDK (`test-programs/spin-apps`), asserting what a client and the stores
//! see.

use std::path::Path;

use test_programs::*;

use crate::serving::Serve;
use crate::support::Tern;

/// A directory holding `spin.toml` (`manifest`, whose sources are file
/// names) and each binary of `wasm` copied in under its file name.
fn spin_dir(manifest: &str, wasm: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for path in wasm {
        let name = Path::new(path).file_name().unwrap();
        std::fs::copy(path, dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
    dir
}

/// A Spin manifest with one component `app` of `source` on `route`, its
/// component table extended by `extra`, and `tail` after everything.
fn one_app(route: &str, source: &str, extra: &str, tail: &str) -> String {
    let file = Path::new(source).file_name().unwrap().to_str().unwrap();
    format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"spin-test\"\nversion = \"0.1.0\"\n\
         authors = [\"Somebody <somebody@example.com>\"]\n\n[[trigger.http]]\nroute = \"{route}\"\n\
         component = \"app\"\n\n[component.app]\nsource = \"{file}\"\n{extra}\n{tail}"
    )
}

#[test]
pub fn spin_hello() {
    let tern = Tern::new();
    let dir = spin_dir(&one_app("/...", SPIN_HELLO, "", ""), &[SPIN_HELLO]);
    // The directory holds `spin.toml` and no `tern.toml`: found the same way.
    let serve = Serve::start_in(&tern, dir, &[]);
    let response = serve.get("/greet/me");
    assert_eq!(
        response.expect(200),
        "Hello, Spin! You asked for /greet/me\n"
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
    serve.wait_for_log("GET /greet/me 200");
}

#[test]
fn the_application_base_prefixes_every_route() {
    let tern = Tern::new();
    let manifest = one_app(
        "/hello/...",
        SPIN_HELLO,
        "",
        "[application.trigger.http]\nbase = \"/api\"\n",
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN_HELLO]), &[]);
    // A client's own `spin-*` headers never reach the guest.
    let response = serve.request(
        "GET",
        "/api/hello/x?q=1",
        &[("spin-path-info", "/forged")],
        "",
    );
    assert_eq!(
        response.expect(200),
        "Hello, Spin! You asked for /api/hello/x\n"
    );
    // Spin's request headers, as the guest saw them.
    let header = |name| response.header(name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(header("x-spin-path-info"), "/x");
    assert_eq!(
        header("x-spin-full-url"),
        "http://localhost/api/hello/x?q=1"
    );
    assert_eq!(header("x-spin-matched-route"), "/api/hello/...");
    assert_eq!(header("x-spin-component-route"), "/api/hello");
    assert!(header("x-spin-client-addr").starts_with("127.0.0.1:"));
    serve.get("/hello/x").expect(404);
}

#[test]
pub fn spin_kv() {
    let tern = Tern::new();
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/other\"\ncomponent = \"other\"\n\n\
         [component.other]\nsource = \"spin_hello.wasm\"\nkey_value_stores = [\"elsewhere\"]\n",
        one_app("/...", SPIN_KV, "key_value_stores = [\"default\"]", "")
    );
    let dir = spin_dir(&manifest, &[SPIN_KV, SPIN_HELLO]);
    let app = dir.path();
    let serve = Serve::spawn(tern.command(), app, &[]);

    assert_eq!(
        serve.request("PUT", "/fruit", &[], "apple").expect(201),
        "stored\n"
    );
    assert_eq!(
        serve.request("PUT", "/veg", &[], "leek").expect(201),
        "stored\n"
    );
    assert_eq!(serve.get("/fruit").expect(200), "apple");
    assert_eq!(serve.get("/").expect(200), "fruit\nveg\n");
    assert_eq!(
        serve.request("DELETE", "/veg", &[], "").expect(200),
        "deleted\n"
    );
    assert_eq!(
        serve.request("DELETE", "/veg", &[], "").expect(200),
        "absent\n"
    );
    assert_eq!(serve.get("/veg").expect(404), "no such key\n");

    // Declared by another component: the SDK's access-denied. Declared by
    // nobody: no-such-store.
    let denied = serve.request("GET", "/fruit", &[("x-store", "elsewhere")], "");
    assert_eq!(denied.expect(403), "access denied\n");
    let unknown = serve.request("GET", "/fruit", &[("x-store", "nowhere")], "");
    assert_eq!(unknown.expect(404), "no such store\n");

    // The store is a real SQLite file under the state directory: the value
    // outlives the server.
    drop(serve);
    let serve = Serve::spawn(tern.command(), app, &[]);
    assert_eq!(serve.get("/fruit").expect(200), "apple");
}

#[test]
pub fn spin_sqlite() {
    let tern = Tern::new();
    let manifest = one_app("/...", SPIN_SQLITE, "sqlite_databases = [\"default\"]", "");
    let dir = spin_dir(&manifest, &[SPIN_SQLITE]);
    let app = dir.path();
    let serve = Serve::spawn(tern.command(), app, &[]);

    assert_eq!(
        serve.post("/?name=bolt&qty=4", "").expect(201),
        "id=1 changes=1"
    );
    assert_eq!(
        serve.post("/?name=nut&qty=10", "").expect(201),
        "id=2 changes=1"
    );
    // A parameter is bound, never spliced into the SQL.
    assert_eq!(
        serve
            .post("/?name=x');DROP%20TABLE%20items;--&qty=1", "")
            .expect(201),
        "id=3 changes=1"
    );
    assert_eq!(
        serve.get("/?min=4").expect(200),
        "id,name,qty,note,price,NULL\n1 bolt 4 [1, 2, 3] 2 true\n2 nut 10 [1, 2, 3] 5 true\n"
    );
    assert_eq!(
        serve.post("/bad", "").expect(400),
        "error: Error::Io(\"no such table: nowhere\")"
    );

    // The database is a real SQLite file under the state directory.
    let file = app.join(".tern/sqlite/default.db");
    assert!(file.is_file(), "{} missing", file.display());
    drop(serve);
    let serve = Serve::spawn(tern.command(), app, &[]);
    assert!(
        serve
            .get("/?min=10")
            .expect(200)
            .ends_with("2 nut 10 [1, 2, 3] 5 true\n")
    );
}

#[test]
fn a_query_that_never_ends_is_stopped_at_the_deadline() {
    let tern = Tern::new();
    let manifest = one_app("/...", SPIN_SQLITE, "sqlite_databases = [\"default\"]", "");
    let dir = spin_dir(&manifest, &[SPIN_SQLITE]);
    let serve = Serve::start_in(&tern, dir, &["--timeout", "1s"]);
    serve.get("/endless").expect(504);
    // The statement was interrupted: the database (one connection, shared)
    // answers the next request at once.
    assert_eq!(
        serve.post("/?name=after&qty=1", "").expect(201),
        "id=1 changes=1"
    );
}

#[test]
fn a_database_not_granted_is_access_denied() {
    let tern = Tern::new();
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/other\"\ncomponent = \"other\"\n\n\
         [component.other]\nsource = \"spin_hello.wasm\"\nsqlite_databases = [\"default\"]\n",
        one_app("/...", SPIN_SQLITE, "", "")
    );
    let dir = spin_dir(&manifest, &[SPIN_SQLITE, SPIN_HELLO]);
    let serve = Serve::start_in(&tern, dir, &[]);
    assert_eq!(
        serve.get("/").expect(403),
        "cannot open: Error::AccessDenied"
    );
}

#[test]
pub fn spin_variables() {
    let tern = Tern::new();
    let manifest = one_app(
        "/...",
        SPIN_VARIABLES,
        "[component.app.variables]\ngreeting = \"Hello, {{ who }}!\"\ntoken = \"{{ api_token }}\"\n",
        "[variables]\nwho = { default = \"world\" }\napi_token = { required = true, secret = true }\n",
    );
    let dir = spin_dir(&manifest, &[SPIN_VARIABLES]);
    let mut command = tern.command();
    // Spin reads a variable's value from SPIN_VARIABLE_<NAME>.
    command.env("SPIN_VARIABLE_API_TOKEN", "s3cret");
    let serve = Serve::spawn(command, dir.path(), &[]);
    assert_eq!(serve.get("/greeting").expect(200), "Hello, world!");
    assert_eq!(serve.get("/token").expect(200), "s3cret");
    let missing = serve.get("/who").expect(404).to_owned();
    assert!(missing.contains("who"), "{missing}");
    let invalid = serve.get("/NOPE").expect(404).to_owned();
    assert!(invalid.contains("NOPE"), "{invalid}");
}

/// A Spin app whose `app` component talks to the Redis at `address`,
/// allowed to reach `allowed`.
fn redis_app(address: &str, allowed: &str) -> tempfile::TempDir {
    let manifest = one_app(
        "/...",
        SPIN_REDIS,
        &format!(
            "allowed_outbound_hosts = [\"{allowed}\"]\n\n[component.app.variables]\nredis_address = \"{{{{ redis_address }}}}\"\n"
        ),
        &format!("[variables]\nredis_address = {{ default = \"{address}\" }}\n"),
    );
    spin_dir(&manifest, &[SPIN_REDIS])
}

#[test]
pub fn spin_redis() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let allowed = format!("redis://127.0.0.1:{}", redis.port());
    let dir = redis_app(&redis.url(), &allowed);
    let serve = Serve::start_in(&tern, dir, &[]);

    assert_eq!(
        serve.request("PUT", "/colour", &[], "teal").expect(200),
        "set"
    );
    assert_eq!(serve.get("/colour").expect(200), "teal");
    assert_eq!(serve.post("/append/colour", "-ish").expect(200), "length 8");
    assert_eq!(serve.post("/incr/hits", "").expect(200), "1");
    assert_eq!(serve.post("/incr/hits", "").expect(200), "2");
    assert_eq!(
        serve.post("/sadd/tags?red,green,blue", "").expect(200),
        "added 3"
    );
    assert_eq!(serve.post("/srem/tags?green", "").expect(200), "removed 1");
    assert_eq!(serve.get("/smembers/tags").expect(200), "blue,red");
    assert_eq!(
        serve.request("DELETE", "/colour", &[], "").expect(200),
        "deleted 1"
    );
    assert_eq!(serve.get("/colour").expect(404), "nil");

    // What the server holds, asked with redis-cli.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["GET", "hits"]), "2\n");

    // A publish reaches a subscriber.
    let mut subscriber = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "SUBSCRIBE", "news"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(subscriber.stdout.take().unwrap()));
    // redis-cli prints `subscribe`, `news`, `1` once subscribed.
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    assert_eq!(
        serve.post("/publish/news", "extra!").expect(200),
        "published"
    );
    let got: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(got, ["message", "news", "extra!"]);
    subscriber.kill().unwrap();
    let _ = subscriber.wait();
}

#[test]
fn redis_outside_the_allowlist_is_refused_before_connecting() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    // Allowed: another port. The guest sees the SDK's error; Redis sees
    // no connection.
    let dir = redis_app(&redis.url(), "redis://127.0.0.1:1");
    let serve = Serve::start_in(&tern, dir, &[]);
    let refused = serve.get("/colour").expect(502).to_owned();
    assert!(
        refused.contains("is not in allowed_outbound_hosts"),
        "{refused}"
    );
    let clients = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "CLIENT", "LIST"])
        .output()
        .unwrap();
    let clients = String::from_utf8(clients.stdout).unwrap();
    assert_eq!(clients.lines().count(), 1, "{clients}");
}

/// `redis-cli -p PORT ARGS...`'s output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
pub fn spin_redis_trigger() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let port = redis.port();
    let file = Path::new(SPIN_REDIS_TRIGGER)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"chat\"\n\n\
         [application.trigger.redis]\naddress = \"{url}\"\n\n\
         [variables]\nredis_address = {{ default = \"{url}\" }}\n\n\
         [[trigger.redis]]\nchannel = \"messages\"\ncomponent = \"listener\"\n\n\
         [component.listener]\nsource = \"{file}\"\nallowed_outbound_hosts = [\"redis://127.0.0.1:{port}\"]\n\n\
         [component.listener.variables]\nredis_address = \"{{{{ redis_address }}}}\"\n",
        url = redis.url()
    );
    let dir = spin_dir(&manifest, &[SPIN_REDIS_TRIGGER]);
    let serve = Serve::start_in(&tern, dir, &[]);
    serve.wait_for_log("subscribed to `messages` on redis 127.0.0.1:");
    serve.wait_for_log(&format!(
        "redis `messages` on 127.0.0.1:{port}/0  -> listener"
    ));

    // Messages published with redis-cli reach the handler in order; one
    // that traps and one whose handler fails are logged, and the next
    // message is handled.
    for (n, message) in ["hello", "trap", "fail", "world"].iter().enumerate() {
        assert_eq!(redis_cli(port, &["PUBLISH", "messages", message]), "1\n");
        serve.wait_for_nth_log("redis message on `messages`", n + 1);
    }
    assert_eq!(
        redis_cli(port, &["LRANGE", "received", "0", "-1"]),
        "hello\nworld\n"
    );
    let log = serve.log();
    assert!(
        log.contains("redis message on `messages` (5 bytes) -> listener: handled in"),
        "{log}"
    );
    assert!(
        log.contains("redis message on `messages` (4 bytes) -> listener: failed after")
            && log.contains("guest trapped"),
        "{log}"
    );
    assert!(
        log.contains(
            "the handler returned an error: other: asked to fail; the next message is handled"
        ),
        "{log}"
    );
}

#[test]
pub fn spin_mqtt() {
    let tern = Tern::new();
    let broker = test_programs::mqtt::Broker::start();
    let port = broker.port().to_string();
    let file = Path::new(SPIN_MQTT).file_name().unwrap().to_str().unwrap();
    let manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"news\"\n\n\
         [variables]\nmqtt_address = {{ default = \"{url}?client_id=tern-test\" }}\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"app\"\n\n\
         [component.app]\nsource = \"{file}\"\nallowed_outbound_hosts = [\"mqtt://127.0.0.1:{port}\"]\n\n\
         [component.app.variables]\nmqtt_address = \"{{{{ mqtt_address }}}}\"\n\
         mqtt_username = \"\"\nmqtt_password = \"\"\n",
        url = broker.url()
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN_MQTT]), &[]);

    // A subscriber, as a user would run one, waiting (60 s at most) for
    // three messages; line-buffered, since its output is a pipe.
    let mut subscriber = std::process::Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port])
        .args(["-t", "news/#", "-C", "3", "-W", "60", "-v", "-d"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `-d` prints the SUBACK once subscribed; wait for it rather than guess.
    let mut out = std::io::BufReader::new(subscriber.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("SUBACK") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "no SUBACK"
        );
    }
    for (qos, body) in [(0, "zero"), (1, "one"), (2, "two")] {
        let published = serve.post(&format!("/news/q{qos}?qos={qos}"), body);
        assert_eq!(published.expect(200), "published", "qos {qos}");
    }
    let mut got = Vec::new();
    for line in std::io::BufRead::lines(out) {
        let line = line.unwrap();
        if !line.starts_with("Client ") && !line.starts_with("Subscribed ") {
            got.push(line);
        }
    }
    assert_eq!(got, ["news/q0 zero", "news/q1 one", "news/q2 two"]);
    assert!(subscriber.wait().unwrap().success());
}

#[test]
fn mqtt_outside_the_allowlist_is_refused() {
    let tern = Tern::new();
    let broker = test_programs::mqtt::Broker::start();
    let file = Path::new(SPIN_MQTT).file_name().unwrap().to_str().unwrap();
    let manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"news\"\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"app\"\n\n\
         [component.app]\nsource = \"{file}\"\nallowed_outbound_hosts = [\"mqtt://127.0.0.1:1\"]\n\n\
         [component.app.variables]\nmqtt_address = \"{}\"\nmqtt_username = \"\"\nmqtt_password = \"\"\n",
        broker.url()
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN_MQTT]), &[]);
    let refused = serve.post("/news", "x").expect(502).to_owned();
    assert!(
        refused.contains("is not in allowed_outbound_hosts"),
        "{refused}"
    );
}

#[test]
fn spin_up_flags_seed_the_stores_and_set_the_environment() {
    let tern = Tern::new();
    let echo = Path::new(HTTP_ECHO).file_name().unwrap().to_str().unwrap();
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/sql/...\"\ncomponent = \"sql\"\n\n\
         [[trigger.http]]\nroute = \"/echo\"\ncomponent = \"echo\"\n\n\
         [component.sql]\nsource = \"spin_sqlite.wasm\"\nsqlite_databases = [\"default\"]\n\n\
         [component.echo]\nsource = \"{echo}\"\nenvironment = {{ MODE = \"manifest\", KEPT = \"yes\" }}\n",
        one_app("/...", SPIN_KV, "key_value_stores = [\"default\"]", "")
    );
    let dir = spin_dir(&manifest, &[SPIN_KV, SPIN_SQLITE, HTTP_ECHO]);
    // Spin's runtime config file: both types are "spin", the database at a
    // path of its own under the state directory.
    std::fs::write(
        dir.path().join("runtime-config.toml"),
        "[key_value_store.default]\ntype = \"spin\"\n\n\
         [sqlite_database.default]\ntype = \"spin\"\npath = \"custom/shop.db\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seed.sql"),
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL, note BLOB, price REAL);\n\
         INSERT INTO items (name, qty, note, price) VALUES ('seeded', 7, x'09', 1.5);\n",
    )
    .unwrap();
    let config = dir.path().join("runtime-config.toml");
    let seed = format!("@{}", dir.path().join("seed.sql").display());
    let serve = Serve::spawn(
        tern.command(),
        dir.path(),
        &[
            "--runtime-config-file",
            config.to_str().unwrap(),
            "--key-value",
            "fruit=apple",
            "--key-value",
            "veg=leek=green",
            "--sqlite",
            &seed,
            "--sqlite",
            "INSERT INTO items (name, qty, note, price) VALUES ('again', 9, x'', 0.5)",
            "-e",
            "MODE=flag",
        ],
    );
    assert_eq!(serve.get("/fruit").expect(200), "apple");
    assert_eq!(serve.get("/veg").expect(200), "leek=green");
    assert_eq!(
        serve.get("/sql/?min=0").expect(200),
        "id,name,qty,note,price,NULL\n1 seeded 7 [9] 1.5 true\n2 again 9 [] 0.5 true\n"
    );
    assert!(dir.path().join(".tern/custom/shop.db").is_file());
    let env = serve.get("/echo").expect(200).to_owned();
    assert!(
        env.contains("env: MODE=flag\n") && env.contains("env: KEPT=yes\n"),
        "{env}"
    );
}

#[test]
fn seeding_a_store_nobody_declares_is_refused() {
    let tern = Tern::new();
    let dir = spin_dir(&one_app("/...", SPIN_HELLO, "", ""), &[SPIN_HELLO]);
    let path = dir.path().to_str().unwrap();
    tern.run(&[
        "serve",
        path,
        "--listen",
        "127.0.0.1:0",
        "--key-value",
        "a=b",
    ])
    .code(1)
    .one_line_error("--key-value sets keys in the `default` store, which no component declares");
    tern.run(&[
        "serve",
        path,
        "--listen",
        "127.0.0.1:0",
        "--sqlite",
        "SELECT 1",
    ])
    .code(1)
    .one_line_error("--sqlite runs on the `default` database, which no component declares");
    tern.run(&["serve", path, "--key-value", "novalue"])
        .code(2)
        .stderr_has("expected KEY=VALUE, found `novalue`");
}
