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
fn route_parameters_reach_the_guest_as_spin_gives_them() {
    let tern = Tern::new();
    let wagi = Path::new(P1_WAGI_ECHO)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"users\"\n\n\
         [[trigger.http]]\nroute = \"/users/:id\"\ncomponent = \"hello\"\n\n\
         [[trigger.http]]\nroute = \"/users/:user_id/posts/...\"\ncomponent = \"hello\"\n\n\
         [[trigger.http]]\nroute = \"/users/admin\"\ncomponent = \"hello\"\n\n\
         [[trigger.http]]\nroute = \"/users/...\"\ncomponent = \"hello\"\n\n\
         [[trigger.http]]\nroute = \"/files/:name/...\"\ncomponent = \"cgi\"\n\
         executor = {{ type = \"wagi\" }}\n\n\
         [component.hello]\nsource = \"spin_hello.wasm\"\n\n\
         [component.cgi]\nsource = \"{wagi}\"\n"
    );
    let dir = spin_dir(&manifest, &[SPIN_HELLO, P1_WAGI_ECHO]);
    let serve = Serve::start_in(&tern, dir, &[]);

    // A client's own `spin-path-match-*` never reaches the guest.
    let response = serve.request("GET", "/users/42", &[("spin-path-match-id", "forged")], "");
    assert_eq!(
        response.expect(200),
        "Hello, Spin! You asked for /users/42\nid = 42\n"
    );
    assert_eq!(response.header("x-spin-path-match-id"), Some("42"));
    assert_eq!(response.header("x-spin-matched-route"), Some("/users/:id"));
    assert_eq!(
        response.header("x-spin-component-route"),
        Some("/users/:id")
    );
    serve.wait_for_log("GET /users/42 200");

    // `_` in a name is `-` in the header; `/...` after a parameter.
    let response = serve.get("/users/7/posts/2024/hello");
    assert_eq!(
        response.expect(200),
        "Hello, Spin! You asked for /users/7/posts/2024/hello\nuser-id = 7\n"
    );
    assert_eq!(response.header("x-spin-path-match-user-id"), Some("7"));
    assert_eq!(response.header("x-spin-path-info"), Some("/2024/hello"));
    assert_eq!(
        response.header("x-spin-matched-route"),
        Some("/users/:user_id/posts/...")
    );
    assert_eq!(
        response.header("x-spin-component-route"),
        Some("/users/:user_id/posts")
    );

    // An exact route beats a parameter, a parameter beats a wildcard, and
    // a parameter takes one non-empty segment, no trailing slash.
    let response = serve.get("/users/admin");
    assert_eq!(
        response.expect(200),
        "Hello, Spin! You asked for /users/admin\n"
    );
    assert_eq!(
        response.header("x-spin-matched-route"),
        Some("/users/admin")
    );
    for path in ["/users/42/", "/users//posts/x", "/users"] {
        let response = serve.get(path);
        assert_eq!(
            response.expect(200),
            format!("Hello, Spin! You asked for {path}\n"),
            "{path}"
        );
        assert_eq!(
            response.header("x-spin-matched-route"),
            Some("/users/..."),
            "{path}"
        );
    }

    // A WAGI program gets the value as Spin's `X_PATH_MATCH_NAME`.
    let cgi = serve.get("/files/report/2024").expect(200).to_owned();
    for line in [
        "env: X_PATH_MATCH_NAME=report\n",
        "env: SCRIPT_NAME=/files/report\n",
        "env: PATH_INFO=/2024\n",
    ] {
        assert!(cgi.contains(line), "{line:?} missing:\n{cgi}");
    }
}

#[test]
pub fn wagi_entry() {
    // WAGI programs get Spin's `argv` and `entrypoint`.
    let tern = Tern::new();
    let manifest = "spin_manifest_version = 2\n\n[application]\nname = \"cgi\"\n\n\
         [[trigger.http]]\nroute = \"/plain/...\"\ncomponent = \"plain\"\n\
         executor = { type = \"wagi\" }\n\n\
         [[trigger.http]]\nroute = \"/ruby/...\"\ncomponent = \"ruby\"\n\
         executor = { type = \"wagi\", argv = \"${SCRIPT_NAME} -v /lib/hello.rb ${ARGS}\" }\n\n\
         [[trigger.http]]\nroute = \"/entry\"\ncomponent = \"entry\"\n\
         executor = { type = \"wagi\", entrypoint = \"serve\" }\n\n\
         [component.plain]\nsource = \"wagi_echo.wasm\"\n\n\
         [component.ruby]\nsource = \"wagi_echo.wasm\"\n\n\
         [component.entry]\nsource = \"wagi_entry.wat\"\n";
    let dir = spin_dir(manifest, &[P1_WAGI_ECHO, WAT_WAGI_ENTRY]);
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    let args = |path: &str| {
        let body = serve.get(path).expect(200).to_owned();
        let args: Vec<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("arg: "))
            .map(str::to_owned)
            .collect();
        args
    };
    // Spin's default argv: the script name, then the query's pairs.
    assert_eq!(args("/plain/x?a=1&b=two"), ["/plain/x", "a=1", "b=two"]);
    assert_eq!(args("/plain"), ["/plain"]);
    assert_eq!(
        args("/ruby/run?name=me"),
        ["/ruby/run", "-v", "/lib/hello.rb", "name=me"]
    );
    assert_eq!(serve.get("/entry").expect(200), "ran: serve\n");
    drop(serve);

    // An entry point the module lacks stops the start, naming it.
    let missing = manifest.replace("entrypoint = \"serve\"", "entrypoint = \"handle\"");
    std::fs::write(dir.path().join("spin.toml"), missing).unwrap();
    let app = dir.path().to_str().unwrap();
    tern.run(&["serve", app, "--listen", "127.0.0.1:0"])
        .code(1)
        .one_line_error("it exports no `handle` function for the wagi executor to call");
    // `argv` is the wagi executor's.
    let http = manifest.replace(
        "executor = { type = \"wagi\", entrypoint = \"serve\" }",
        "executor = { type = \"http\", entrypoint = \"serve\" }",
    );
    std::fs::write(dir.path().join("spin.toml"), http).unwrap();
    tern.run(&["serve", app, "--listen", "127.0.0.1:0"])
        .code(1)
        .one_line_error(
            "trigger.http[3].executor.entrypoint: `entrypoint` is for the wagi executor",
        );
}

#[test]
fn a_static_response_is_served_without_a_guest() {
    let tern = Tern::new();
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/health\"\n\
         static_response = {{ headers = {{ content-type = \"text/plain\", x-served-by = \"tern\" }}, body = \"ok\\n\" }}\n\n\
         [[trigger.http]]\nid = \"moved\"\nroute = \"/old/...\"\n\
         static_response = {{ status_code = 308, headers = {{ location = \"/new\" }} }}\n",
        one_app("/...", SPIN_HELLO, "", "")
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN_HELLO]), &[]);
    // Listed with the other routes, in matching order.
    let health = serve.wait_for_log("-> static response 200");
    assert!(health.trim_start().starts_with("/health "), "{health}");
    let moved = serve.wait_for_log("-> static response 308");
    assert!(moved.trim_start().starts_with("/old/... "), "{moved}");

    let response = serve.get("/health");
    assert_eq!(response.expect(200), "ok\n");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.header("x-served-by"), Some("tern"));
    assert_eq!(response.header("content-length"), Some("3"));
    let response = serve.get("/old/page?x=1");
    assert_eq!(response.expect(308), "");
    assert_eq!(response.header("location"), Some("/new"));
    // Each gets its access-log line, with no component.
    let line = serve.wait_for_log("GET /health 200");
    assert!(line.ends_with(" -"), "{line}");
    serve.wait_for_log("GET /old/page 308");
    // Every other path still reaches the component.
    assert_eq!(
        serve.get("/healthz").expect(200),
        "Hello, Spin! You asked for /healthz\n"
    );
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

    // A store past what one listing holds (16MiB of keys, each charged its
    // bookkeeping too): get-keys refuses, naming the way that works, and
    // the store still serves.
    drop(serve);
    {
        let db = rusqlite::Connection::open(app.join(".tern/kv/default.sqlite")).unwrap();
        db.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 70000) \
             INSERT INTO kv (key, value) SELECT printf('%0240d', i), x'' FROM n;",
        )
        .unwrap();
    }
    let serve = Serve::spawn(tern.command(), app, &[]);
    // The SDK turns the error into a trap: 500 for the client, the reason
    // in the log.
    serve.get("/").expect(500);
    serve.wait_for_log("the store has more keys than one listing holds (16 MiB of them)");
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
    // A hostile guest's SQL reaches no file but its database, and no
    // setting of the connection; its schema's own pragmas work.
    let elsewhere = app.join("elsewhere.db");
    for sql in [
        format!("ATTACH '{}' AS x", elsewhere.display()),
        format!("VACUUM INTO '{}'", elsewhere.display()),
        "PRAGMA database_list".to_owned(),
    ] {
        let refused = serve.post("/sql", &sql).expect(400).to_owned();
        assert_eq!(refused, "error: Error::Io(\"not authorized\")", "{sql}");
    }
    assert!(!elsewhere.exists());
    assert_eq!(
        serve.post("/sql", "PRAGMA foreign_keys = ON").expect(200),
        "0 rows"
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
    // The connection is the component's, shared: no command may change
    // its state or block it.
    for (command, args) in [
        ("MULTI", ""),
        ("client", "REPLY OFF"),
        ("SELECT", "1"),
        ("BLPOP", "queue 0"),
        ("XREAD", "BLOCK 0 STREAMS s $"),
    ] {
        let refused = serve
            .post(&format!("/execute/{command}"), args)
            .expect(400)
            .to_owned();
        assert!(
            refused.contains(&format!(
                "`{command}` is not allowed: the connection is shared with the component's other requests"
            )),
            "{command}: {refused}"
        );
    }
    assert_eq!(
        serve.post("/execute/SCARD", "tags").expect(200),
        "[RedisResult::Int64(2)]"
    );
    // A reply larger than the host holds for a guest (16MiB) is refused
    // before the host reads it whole; the value can still be read in
    // parts, and the next request connects again.
    assert_eq!(
        serve
            .post("/execute/SETRANGE", "big 17000000 x")
            .expect(200),
        "[RedisResult::Int64(17000001)]"
    );
    let refused = serve.post("/execute/GET", "big").expect(400).to_owned();
    assert!(
        refused.contains("a Redis reply over 16MiB was refused"),
        "{refused}"
    );
    assert_eq!(
        serve
            .post("/execute/GETRANGE", "big 16999999 -1")
            .expect(200),
        "[RedisResult::Binary([0, 120])]"
    );
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

#[test]
fn redis_opens_are_bounded_and_cancelled_ones_give_their_count_back() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    // A listener that never answers: an open to it stays pending until
    // the guest gives it up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("redis://127.0.0.1:{}", silent.local_addr().unwrap().port());
    // Both addresses allowed (the string closes and opens the quotes).
    let allowed = format!("redis://127.0.0.1:{}\", \"{silent}", redis.port());
    let serve = Serve::start_in(&tern, redis_app(&redis.url(), &allowed), &[]);
    // More opens than the 16 an instance may hold, each cancelled by the
    // guest after its first poll: none stays counted, so one more opens.
    assert_eq!(
        serve.post("/cancel-opens/20", &silent).expect(200),
        "pending 20, then opened"
    );
    // The bound itself: the handler holds one, so 15 more open and the
    // next is refused; the next request's instance starts again at none.
    let refused = serve.post("/hold-opens/20", "").expect(502).to_owned();
    assert!(
        refused.starts_with("opened 15, then cannot open: "),
        "{refused}"
    );
    assert_eq!(serve.post("/hold-opens/15", "").expect(200), "opened 15");
}

/// `redis-cli -p PORT ARGS...`'s output.
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
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

/// A Spin app whose Redis trigger on `messages` gives its component
/// inline, as `inbox`, pushing onto lists of `redis`; its `block`
/// messages wait on `hold`.
pub(crate) fn inline_redis_trigger(
    redis: &test_programs::redis::RedisServer,
    hold: &Hold,
) -> tempfile::TempDir {
    let file = Path::new(SPIN_REDIS_TRIGGER)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"chat\"\n\n\
         [[trigger.redis]]\naddress = \"{url}\"\nchannel = \"messages\"\nid = \"inbox\"\n\
         component = {{ source = \"{file}\", \
         allowed_outbound_hosts = [\"redis://127.0.0.1:{port}\", \"http://127.0.0.1:{hold}\"], \
         variables = {{ redis_address = \"{url}\", hold_url = \"http://127.0.0.1:{hold}/\" }} }}\n",
        url = redis.url(),
        port = redis.port(),
        hold = hold.port,
    );
    spin_dir(&manifest, &[SPIN_REDIS_TRIGGER])
}

/// An HTTP server the trigger guest's `block` handlers wait on: each
/// request it accepts is a handler held, until the test answers it.
pub(crate) struct Hold {
    port: u16,
    held: std::sync::mpsc::Receiver<std::net::TcpStream>,
}

impl Hold {
    pub(crate) fn start() -> Hold {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, held) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stream.map(|s| accepted.send(s)).is_err() {
                    return;
                }
            }
        });
        Hold { port, held }
    }

    /// The next handler to be held, once it is.
    pub(crate) fn next(&self) -> std::net::TcpStream {
        self.held
            .recv_timeout(crate::serving::PATIENCE)
            .expect("no handler came to be held")
    }
}

/// Lets a held handler go on: answers its request 200.
pub(crate) fn release(stream: std::net::TcpStream) {
    use std::io::{BufRead as _, Write as _};
    let mut head = std::io::BufReader::new(&stream);
    let mut line = String::new();
    while head.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    (&stream)
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
}

#[test]
fn a_redis_trigger_may_give_its_component_inline() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let port = redis.port();
    let hold = Hold::start();
    let serve = Serve::start_in(&tern, inline_redis_trigger(&redis, &hold), &[]);
    serve.wait_for_log(&format!("redis `messages` on 127.0.0.1:{port}/0  -> inbox"));
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "hello"]), "1\n");
    serve.wait_for_log("redis message on `messages` (5 bytes) -> inbox: handled in");

    // A message past the 16MiB bound ends the connection before Tern reads
    // it whole; it is logged and dropped, and the subscription is made
    // again for the next.
    let mut publish = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "-x", "PUBLISH", "messages"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publish.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &vec![b'm'; 17 << 20]).unwrap();
    drop(stdin);
    let published = publish.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&published.stdout), "1\n");
    let dropped = serve.wait_for_log(&format!("a message over 16MiB on redis 127.0.0.1:{port}"));
    assert!(
        dropped.contains("was dropped, with the connection; connecting again in 1s"),
        "{dropped}"
    );
    serve.wait_for_nth_log("subscribed to `messages` on redis", 2);
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "again"]), "1\n");
    serve.wait_for_nth_log("-> inbox: handled in", 2);
    assert_eq!(
        redis_cli(port, &["LRANGE", "received", "0", "-1"]),
        "hello\nagain\n"
    );
}

/// Publishes `count` messages of `size` bytes on `channel`, over one
/// connection: how many subscribers each reached.
fn publish_burst(port: u16, channel: &str, count: usize, size: usize) -> Vec<u32> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut command = format!(
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${size}\r\n",
        channel.len()
    )
    .into_bytes();
    command.resize(command.len() + size, b'x');
    command.extend_from_slice(b"\r\n");
    for _ in 0..count {
        stream.write_all(&command).unwrap();
    }
    let mut replies = std::io::BufReader::new(stream);
    (0..count)
        .map(|_| {
            let mut line = String::new();
            replies.read_line(&mut line).unwrap();
            line.trim_start_matches(':').trim_end().parse().unwrap()
        })
        .collect()
}

#[test]
fn a_redis_trigger_handles_messages_at_once() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let port = redis.port();
    let hold = Hold::start();
    let serve = Serve::start_in(&tern, inline_redis_trigger(&redis, &hold), &[]);
    serve.wait_for_log("subscribed to `messages` on redis");

    // Three handlers held at once: one at a time, the second would never
    // start.
    for _ in 0..3 {
        assert_eq!(redis_cli(port, &["PUBLISH", "messages", "block"]), "1\n");
    }
    let held: Vec<_> = (0..3).map(|_| hold.next()).collect();
    // Meanwhile the next message is handled too.
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "hello"]), "1\n");
    serve.wait_for_log("redis message on `messages` (5 bytes) -> inbox: handled in");
    held.into_iter().for_each(release);
    serve.wait_for_nth_log(
        "redis message on `messages` (5 bytes) -> inbox: handled in",
        4,
    );
    assert_eq!(
        redis_cli(port, &["LRANGE", "received", "0", "-1"]),
        "hello\nblock\nblock\nblock\n"
    );
}

#[test]
fn a_redis_trigger_that_falls_behind_leaves_the_backlog_with_redis() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let port = redis.port();
    // Redis drops a subscriber once 1MiB waits for it.
    let limit = ["client-output-buffer-limit", "pubsub 1mb 0 0"];
    assert_eq!(
        redis_cli(port, &[&["CONFIG", "SET"][..], &limit].concat()),
        "OK\n"
    );
    // One message at a time: the component allows one in flight.
    let one = ["--max-concurrent", "1"];
    let hold = Hold::start();
    let serve = Serve::start_in(&tern, inline_redis_trigger(&redis, &hold), &one);
    serve.wait_for_log("subscribed to `messages` on redis");

    // The handler of `block` holds the subscription's one handler until
    // the test answers it.
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "block"]), "1\n");
    let held = hold.next();

    // 32MiB published meanwhile: Tern reads none of it into memory while
    // its handler runs, so it backs up in Redis, which drops the
    // subscriber; the later messages reach nobody.
    let reached = publish_burst(port, "messages", 512, 64 << 10);
    assert_eq!(reached.last(), Some(&0), "{reached:?}");

    // Let go, Tern handles what reached its socket before the drop, then
    // logs the lost connection and subscribes again.
    release(held);
    let lost = serve.wait_for_log(&format!("lost the connection to redis 127.0.0.1:{port}"));
    assert!(lost.contains("connecting again in 1s"), "{lost}");
    serve.wait_for_nth_log("subscribed to `messages` on redis", 2);
    let handled = serve
        .log()
        .matches("redis message on `messages` (65536 bytes) -> inbox: handled in")
        .count();
    let delivered = reached.iter().filter(|&&n| n == 1).count();
    assert!(
        handled <= delivered && delivered < 512,
        "{handled} of {delivered}"
    );
    assert_eq!(redis_cli(port, &["PUBLISH", "messages", "again"]), "1\n");
    serve.wait_for_log("redis message on `messages` (5 bytes) -> inbox: handled in");
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

/// A Spin app whose `app` component talks to the PostgreSQL at
/// `address`, allowed to reach `allowed`.
fn postgres_app(address: &str, allowed: &str) -> tempfile::TempDir {
    let manifest = one_app(
        "/...",
        SPIN_PG,
        &format!(
            "allowed_outbound_hosts = [\"{allowed}\"]\n\n[component.app.variables]\npg_address = \"{{{{ pg_address }}}}\"\n"
        ),
        &format!("[variables]\npg_address = {{ default = \"{address}\" }}\n"),
    );
    spin_dir(&manifest, &[SPIN_PG])
}

/// The server's client connections other than the asking one.
fn postgres_clients(pg: &test_programs::postgres::PostgresServer) -> usize {
    pg.psql(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
pub fn spin_pg() {
    let tern = Tern::new();
    let pg = test_programs::postgres::PostgresServer::start();
    let allowed = format!("postgres://127.0.0.1:{}", pg.port());
    let serve = Serve::start_in(&tern, postgres_app(&pg.address(), &allowed), &[]);

    assert_eq!(
        serve.post("/?title=wasm&stars=5", "").expect(201),
        "changed=1"
    );
    assert_eq!(
        serve.post("/?title=cheap&stars=1", "").expect(201),
        "changed=1"
    );
    assert_eq!(
        serve.get("/?min=3").expect(200),
        "id,title,stars,published,score,cover,day,at,ref,meta,price,tags,note\n\
         wasm 5 true 1.25 [1, 2, 255] 2026-11-29 2026-11-29T12:30:05.250000000 \
         67e55044-10b1-426f-9247-bb680e5fe0c8 {\"draft\": false} 12.50 [Some(1), None, Some(3)] null\n"
    );
    // What the server holds, asked with psql.
    assert_eq!(
        pg.psql("SELECT title, stars, price, tags FROM articles ORDER BY id"),
        "wasm|5|12.50|{1,NULL,3}\ncheap|1|12.50|{1,NULL,3}\n"
    );
    // Numerics expand as they become text (131,072 digits from a dozen
    // bytes): 100,000 of them, 13GB as text, are refused as they convert,
    // before the host holds more than the result's 16MiB.
    assert_eq!(serve.get("/huge?n=1").expect(200), "rows=1");
    let huge = serve.get("/huge?n=100000").expect(400).to_owned();
    assert!(
        huge.contains("the query's result is larger than 16 MiB"),
        "{huge}"
    );
    // PostgreSQL's own error reaches the guest.
    let refused = serve.get("/bad").expect(400).to_owned();
    assert!(
        refused.contains("ERROR: relation \\\"nowhere\\\" does not exist")
            && refused.contains("code: \"42P01\""),
        "{refused}"
    );

    // Connections are reused across requests rather than made for each.
    let pids: std::collections::BTreeSet<String> = (0..5)
        .map(|_| serve.get("/pid").expect(200).to_owned())
        .collect();
    assert!(
        pids.len() < 5,
        "a new connection for every request: {pids:?}"
    );
    assert!(postgres_clients(&pg) >= 1, "no connection kept open");
}

#[test]
fn a_postgres_statement_still_running_at_the_deadline_is_cancelled_on_the_server() {
    let tern = Tern::new();
    let pg = test_programs::postgres::PostgresServer::start();
    let allowed = format!("postgres://127.0.0.1:{}", pg.port());
    let dir = postgres_app(&pg.address(), &allowed);
    let serve = Serve::start_in(&tern, dir, &["--timeout", "1s"]);
    serve.get("/sleep?s=3600").expect(504);
    // The server stops the statement: polled, since the cancel request
    // travels on a connection of its own.
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active' AND pid <> pg_backend_pid()";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pg.psql(sleeping).trim() != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the statement still runs on the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // And the app goes on.
    assert_eq!(serve.get("/sleep?s=0").expect(200), "slept");
}

#[test]
fn postgres_outside_the_allowlist_is_refused_before_connecting() {
    let tern = Tern::new();
    let pg = test_programs::postgres::PostgresServer::start();
    let dir = postgres_app(&pg.address(), "postgres://127.0.0.1:1");
    let serve = Serve::start_in(&tern, dir, &[]);
    let refused = serve.get("/").expect(502).to_owned();
    assert!(
        refused.contains("is not in allowed_outbound_hosts"),
        "{refused}"
    );
    assert_eq!(postgres_clients(&pg), 0);
}

#[test]
fn files_globs_and_exclusions_show_the_guest_just_those_files() {
    let tern = Tern::new();
    let manifest = one_app(
        "/...",
        HTTP_ECHO,
        "files = [\"static/**/*\", \"*.txt\", { source = \"./assets\", destination = \"/res\" }]\n\
         exclude_files = [\"**/*.bak\"]\n",
        "",
    );
    let dir = spin_dir(&manifest, &[HTTP_ECHO]);
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("static/index.html", "<h1>hi</h1>");
    write("static/img/logo.svg", "<svg/>");
    write("static/app.css.bak", "old css");
    write("notes.txt", "top-level notes");
    write("docs/deep.txt", "not at the top");
    write("secret.env", "TOKEN=hunter2");
    write("assets/fonts/a.woff", "font bytes");
    write("assets/draft.bak", "draft");
    // What no pattern wants does not matter, however odd: a link out of
    // the app, a dangling link (an editor's lock file).
    std::os::unix::fs::symlink("/usr/bin", dir.path().join("venv-bin")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.path().join("static/.#index.html")).unwrap();
    // A link to a directory inside the app is followed.
    write("shared/theme.css", "shared css");
    std::os::unix::fs::symlink("../shared", dir.path().join("static/shared")).unwrap();
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    let read = |serve: &Serve, file: &str| {
        let body = serve.get(&format!("/?file={file}")).expect(200).to_owned();
        let line = body.lines().find(|l| l.starts_with("file"));
        line.unwrap_or_default().to_owned()
    };
    assert_eq!(read(&serve, "/static/index.html"), "file: <h1>hi</h1>");
    assert_eq!(read(&serve, "/static/img/logo.svg"), "file: <svg/>");
    assert_eq!(read(&serve, "/notes.txt"), "file: top-level notes");
    assert_eq!(read(&serve, "/res/fonts/a.woff"), "file: font bytes");
    assert_eq!(read(&serve, "/static/shared/theme.css"), "file: shared css");
    // Excluded, matched by no entry, or matched only across a `/`.
    for hidden in [
        "/static/app.css.bak",
        "/res/draft.bak",
        "/secret.env",
        "/docs/deep.txt",
        "/spin.toml",
    ] {
        let seen = read(&serve, hidden);
        assert!(seen.starts_with("file error: "), "{hidden}: {seen}");
    }
    drop(serve);

    // A start with the same files reuses what the first gathered; a
    // changed file is gathered anew, beside it.
    let gathered = || {
        let dir = std::fs::read_dir(dir.path().join(".tern/spin-files")).unwrap();
        dir.count()
    };
    assert_eq!(gathered(), 1);
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    assert_eq!(gathered(), 1);
    drop(serve);
    write("notes.txt", "new notes, longer");
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    assert_eq!(read(&serve, "/notes.txt"), "file: new notes, longer");
    assert_eq!(gathered(), 2);
}

#[test]
fn a_files_link_out_of_the_app_directory_is_refused() {
    let tern = Tern::new();
    let manifest = one_app("/...", HTTP_ECHO, "files = [\"static/*\"]\n", "");
    let dir = spin_dir(&manifest, &[HTTP_ECHO]);
    std::fs::create_dir(dir.path().join("static")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("static/passwd")).unwrap();
    let app = dir.path().to_str().unwrap();
    let out = tern.run(&["serve", app, "--listen", "127.0.0.1:0"]);
    out.code(1).one_line_error(
        "component.app.files: `static/passwd` is a link to a place outside the app directory",
    );
    assert!(!out.stderr.contains("/etc/passwd"), "{out:#?}");
    // A table beside a glob must still name a directory.
    let manifest = one_app(
        "/...",
        HTTP_ECHO,
        "files = [\"*.txt\", { source = \"missing\", destination = \"/m\" }]\n",
        "",
    );
    std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
    tern.run(&["serve", app, "--listen", "127.0.0.1:0"])
        .code(1)
        .one_line_error("component.app.files: `missing` is not a directory in the app directory");
}

#[test]
pub fn spin5_hello() {
    let tern = Tern::new();
    // A wasm32-wasip1 core module carrying its component type, with no
    // executor named: made a component once, then served as wasi-http.
    let dir = spin_dir(&one_app("/...", SPIN5_HELLO, "", ""), &[SPIN5_HELLO]);
    let serve = Serve::start_in(&tern, dir, &[]);
    let response = serve.get("/greet/me");
    assert_eq!(
        response.expect(200),
        "Hello, Spin 5! You asked for /greet/me\n"
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
    serve.wait_for_log("GET /greet/me 200");
}

#[test]
pub fn spin5_kv() {
    let tern = Tern::new();
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/other/...\"\ncomponent = \"other\"\n\n\
         [component.other]\nsource = \"spin5_hello.wasm\"\nkey_value_stores = [\"private\"]\n",
        one_app("/...", SPIN5_KV, "key_value_stores = [\"default\"]", "")
    );
    let dir = spin_dir(&manifest, &[SPIN5_KV, SPIN5_HELLO]);
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    assert_eq!(serve.get("/colour").expect(404), "no such key\n");
    assert_eq!(
        serve.request("PUT", "/colour", &[], "teal").expect(201),
        "stored\n"
    );
    assert_eq!(
        serve.request("PUT", "/size", &[], "xl").expect(201),
        "stored\n"
    );
    assert_eq!(serve.get("/colour").expect(200), "teal");
    assert_eq!(serve.get("/").expect(200), "colour\nsize\n");
    assert_eq!(
        serve.request("DELETE", "/colour", &[], "").expect(200),
        "deleted\n"
    );
    assert_eq!(serve.get("/").expect(200), "size\n");
    // Another component's store, and one nobody declares.
    let denied = serve.request("GET", "/x", &[("x-store", "private")], "");
    assert_eq!(denied.expect(403), "access denied\n");
    let unknown = serve.request("GET", "/x", &[("x-store", "nowhere")], "");
    assert_eq!(unknown.expect(404), "no such store\n");
    drop(serve);
    // The same store `tern kv` reads.
    let app = dir.path().to_str().unwrap();
    tern.run(&["kv", "get", "--app", app, "size"])
        .code(0)
        .stdout("xl");
}

#[test]
pub fn spin5_sqlite() {
    let tern = Tern::new();
    let manifest = one_app("/...", SPIN5_SQLITE, "sqlite_databases = [\"default\"]", "");
    let dir = spin_dir(&manifest, &[SPIN5_SQLITE]);
    let serve = Serve::start_in(&tern, dir, &[]);
    assert_eq!(
        serve.post("/?name=bolt&qty=4", "").expect(201),
        "id=1 changes=1"
    );
    assert_eq!(
        serve.post("/?name=nut&qty=10", "").expect(201),
        "id=2 changes=1"
    );
    assert_eq!(
        serve.get("/?min=5").expect(200),
        "id,name,qty,note,price,NULL\n2 nut 10 [1, 2, 3] 5 true\n"
    );
    let refused = serve.get("/bad").expect(400).to_owned();
    assert!(refused.contains("no such table: nowhere"), "{refused}");
    // SDK 5's `sqlite3` module (`spin:sqlite@3.0.0`), in a WASI 0.2
    // component: the connection's own row id and change count.
    assert_eq!(
        serve.post("/v3?name=red", "").expect(201),
        "id=1 changes=1 rows=1"
    );
    assert_eq!(
        serve.post("/v3?name=blue", "").expect(201),
        "id=2 changes=1 rows=2"
    );
}

#[test]
pub fn spin5_pg() {
    let tern = Tern::new();
    let pg = test_programs::postgres::PostgresServer::start();
    let allowed = format!("postgres://127.0.0.1:{}", pg.port());
    let manifest = one_app(
        "/...",
        SPIN5_PG,
        &format!(
            "allowed_outbound_hosts = [\"{allowed}\"]\n\n[component.app.variables]\npg_address = \"{{{{ pg_address }}}}\"\n"
        ),
        &format!(
            "[variables]\npg_address = {{ default = \"{}\" }}\n",
            pg.address()
        ),
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN5_PG]), &[]);

    let insert = |path: &str| assert_eq!(serve.post(path, "").expect(201), "changed=1");
    let refused = |path: &str| serve.get(path).expect(400).to_owned();

    // `fermyon:spin/postgres@2.0.0`: unsigned integers widen, and a date
    // column, which its values cannot carry, reads as unsupported.
    insert("/pg?title=wasm&stars=5");
    insert("/pg?title=cheap&stars=1");
    assert_eq!(
        serve.get("/pg?min=3").expect(200),
        "title:DbDataType::Str,stars:DbDataType::Int32,small:DbDataType::Int16,wide:DbDataType::Int64,big:DbDataType::Int64,ok:DbDataType::Boolean,score:DbDataType::Floating64,\
         cover:DbDataType::Binary,day:DbDataType::Other,note:DbDataType::Str\n\
         wasm 5 200 4000000000 -5 true 1.25 [1, 2, 255] unsupported null\n"
    );
    let u64_max = refused("/pg/u64");
    assert!(
        u64_max.contains("BadParameter(\"uint64 18446744073709551615 is larger than PostgreSQL's largest integer (int8)\")"),
        "{u64_max}"
    );
    let bad = refused("/pg/bad");
    assert!(
        bad.contains("QueryFailed(\"ERROR: relation \\\"nowhere\\\" does not exist"),
        "{bad}"
    );

    // `spin:postgres@3.0.0`: dates and times both ways.
    insert("/pg3?title=clock&stars=4");
    assert_eq!(
        serve.get("/pg3?min=0").expect(200),
        "title:DbDataType::Str,stars:DbDataType::Int32,day:DbDataType::Date,at:DbDataType::Datetime,alarm:DbDataType::Time,since:DbDataType::Datetime,ref:DbDataType::Other\n\
         clock 4 2026-11-30 2026-11-30T12:30:05.250000000 07:45:00.000000000 \
         2001-09-09T01:46:40.000000000 unsupported\n"
    );
    let bad = refused("/pg3/bad");
    assert!(bad.contains("QueryFailed(\"ERROR: relation"), "{bad}");

    // `spin:postgres@4.0.0`, found as 4.2's synchronous functions.
    insert("/pg4?title=ledger&stars=2");
    assert_eq!(
        serve.get("/pg4?min=0").expect(200),
        "title:DbDataType::Str,stars:DbDataType::Int32,ref:DbDataType::Uuid,price:DbDataType::Decimal,tags:DbDataType::ArrayStr\n\
         ledger 2 67e55044-10b1-426f-9247-bb680e5fe0c8 12.50 DbValue::ArrayStr([Some(\"new\"), None])\n"
    );
    let bad = refused("/pg4/bad");
    assert!(bad.contains("code: \"42P01\""), "{bad}");

    // What the server holds, asked with psql.
    assert_eq!(
        pg.psql("SELECT title, small, wide, day FROM items_v2 ORDER BY id"),
        "wasm|200|4000000000|2026-11-30\ncheap|200|4000000000|2026-11-30\n"
    );
    assert_eq!(
        pg.psql("SELECT day, at, alarm FROM items_v3"),
        "2026-11-30|2026-11-30 12:30:05.25|07:45:00\n"
    );
    assert_eq!(
        pg.psql("SELECT price, tags FROM items_v4"),
        "12.50|{new,NULL}\n"
    );
}

#[test]
pub fn spin5_wasi_kv() {
    let tern = Tern::new();
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/other/...\"\ncomponent = \"other\"\n\n\
         [component.other]\nsource = \"spin5_hello.wasm\"\nkey_value_stores = [\"private\"]\n",
        one_app(
            "/...",
            SPIN5_WASI_KV,
            "key_value_stores = [\"default\"]",
            ""
        )
    );
    let dir = spin_dir(&manifest, &[SPIN5_WASI_KV, SPIN5_HELLO]);
    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    assert_eq!(
        serve.post("/", "").expect(200),
        "get: Some(\"hello\")\n\
         exists: true false\n\
         increment +5: 5\n\
         increment -8: -3\n\
         increment a word: true\n\
         cas current: None\n\
         rival swap: lost to Some(\"alice\")\n\
         owner: Some(\"bob\")\n\
         get-many: b0=Some(\"0\") b2=Some(\"2\") b9=None\n\
         keys: b0 b2 count greeting owner\n\
         bad cursor: Some(Error::Other(\"the cursor is not one list-keys returned\"))\n"
    );
    // Another component's store, and one nobody declares.
    assert_eq!(
        serve.get("/open?store=private").expect(403),
        "Error::AccessDenied"
    );
    assert_eq!(
        serve.get("/open?store=nowhere").expect(403),
        "Error::NoSuchStore"
    );
    // A guest hoarding compare-and-swap handles is stopped, and served again.
    assert_eq!(
        serve.get("/cas-flood").expect(200),
        "16 held, then Error::Other(\"more than 16 compare-and-swap handles open at once\")"
    );
    assert!(serve.get("/cas-flood").expect(200).starts_with("16 held"));
    drop(serve);
    // The same store `tern kv` reads.
    let app = dir.path().to_str().unwrap();
    tern.run(&["kv", "get", "--app", app, "count"])
        .code(0)
        .stdout("-3");
    tern.run(&["kv", "get", "--app", app, "owner"])
        .code(0)
        .stdout("bob");
}

#[test]
pub fn spin5_variables() {
    let tern = Tern::new();
    let manifest = one_app(
        "/...",
        SPIN5_VARIABLES,
        "[component.app.variables]\ngreeting = \"Hello, {{ who }}!\"\n",
        "[variables]\nwho = { default = \"world\" }\n",
    );
    let dir = spin_dir(&manifest, &[SPIN5_VARIABLES]);
    let mut command = tern.command();
    command.env("SPIN_VARIABLE_WHO", "Spin 5");
    let serve = Serve::spawn(command, dir.path(), &[]);
    assert_eq!(serve.get("/greeting").expect(200), "Hello, Spin 5!");
    let missing = serve.get("/who").expect(404).to_owned();
    assert!(missing.contains("who"), "{missing}");
}

#[test]
fn spin_python() {
    let tern = Tern::new();
    let venv = Path::new(SPIN_PYTHON_VENV);
    assert!(
        venv.join("bin/componentize-py").exists(),
        "no {}: scripts/setup makes it",
        venv.display()
    );
    let dir = spin_dir(
        "spin_manifest_version = 2\n\n[application]\nname = \"hello-python\"\nversion = \"0.1.0\"\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n\n\
         [component.hello]\nsource = \"app.wasm\"\nkey_value_stores = [\"default\"]\n\n\
         [component.hello.variables]\ngreeting = \"Hello, {{ who }}!\"\n\n\
         [component.hello.build]\ncommand = \"componentize-py -w spin-http componentize app -o app.wasm\"\n\n\
         [variables]\nwho = { default = \"Python\" }\n",
        &[],
    );
    std::fs::copy(
        Path::new(SPIN_PYTHON_APP).join("app.py"),
        dir.path().join("app.py"),
    )
    .unwrap();
    // As with the virtual environment activated: its `bin` first.
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let app = dir.path().to_str().unwrap();
    let mut build = tern.command();
    build.args(["build", app]).env("PATH", &path);
    let built = build.output().unwrap();
    assert!(built.status.success(), "tern build: {built:?}");

    let mut command = tern.command();
    command.env("PATH", &path);
    let serve = Serve::spawn(command, dir.path(), &[]);
    let response = serve.get("/hello?x=1");
    assert_eq!(
        response.expect(200),
        "Hello from Python! You asked for /hello?x=1"
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(serve.get("/kv/colour").expect(404), "no such key");
    assert_eq!(
        serve.request("PUT", "/kv/colour", &[], "teal").expect(201),
        "stored"
    );
    assert_eq!(serve.get("/kv/colour").expect(200), "teal");
    assert_eq!(serve.get("/greeting").expect(200), "Hello, Python!");
    // The SDK imports Spin's whole platform; what Tern lacks is named.
    let log = serve.log();
    assert!(
        log.contains("which Tern does not provide; a call to one traps"),
        "{log}"
    );
}

#[test]
fn spin_javascript() {
    let tern = Tern::new();
    let dir = spin_dir(
        "spin_manifest_version = 2\n\n[application]\nname = \"hello-js\"\nversion = \"0.1.0\"\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n\n\
         [component.hello]\nsource = \"app.wasm\"\n\n\
         [component.hello.build]\n\
         command = \"npm install --no-audit --no-fund --silent && npx j2w -i index.js -o app.wasm\"\n",
        &[],
    );
    for file in ["index.js", "package.json", "package-lock.json"] {
        std::fs::copy(Path::new(SPIN_JS_APP).join(file), dir.path().join(file)).unwrap();
    }
    let app = dir.path().to_str().unwrap();
    let mut build = tern.command();
    build
        .args(["build", app])
        .env("npm_config_cache", NPM_CACHE);
    let built = build.output().unwrap();
    assert!(built.status.success(), "tern build: {built:?}");

    let serve = Serve::start_in(&tern, dir, &[]);
    let response = serve.get("/hello");
    assert_eq!(
        response.expect(200),
        "Hello from JavaScript! You asked for /hello"
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(
        serve.post("/echo", "quiet please").expect(201),
        "QUIET PLEASE"
    );
    serve.wait_for_log("POST /echo 201");
}

#[test]
pub fn spin_outbound() {
    use std::sync::atomic::Ordering::SeqCst;

    use crate::outbound::{HELLO, upstream};

    let (addr, count) = upstream(HELLO);
    let (other, other_count) = upstream(HELLO);
    let tern = Tern::new();
    let manifest = one_app(
        "/...",
        SPIN_OUTBOUND,
        &format!("allowed_outbound_hosts = [\"http://{addr}\"]"),
        "",
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN_OUTBOUND]), &[]);
    assert_eq!(
        serve.get(&format!("/?url=http://{addr}/x")).expect(200),
        "200 from upstream\n"
    );
    assert_eq!(count.load(SeqCst), 1);
    // Another port of the same host is not in `allowed_outbound_hosts`: the
    // SDK's error, and no connection.
    let refused = serve
        .get(&format!("/?url=http://{other}/x"))
        .expect(502)
        .to_owned();
    assert!(refused.starts_with("refused: "), "{refused}");
    assert_eq!(other_count.load(SeqCst), 0);
}

/// A Spin app with `outbound` on `/...`, allowed `allowed`, and `hello` as
/// the component `hello` on `route` (a TOML value).
fn outbound_and_hello(
    outbound: &str,
    hello: &str,
    route: &str,
    allowed: &str,
) -> tempfile::TempDir {
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = {route}\ncomponent = \"hello\"\n\n\
         [component.hello]\nsource = \"{}\"\n",
        one_app(
            "/...",
            outbound,
            &format!("allowed_outbound_hosts = [{allowed}]"),
            ""
        ),
        Path::new(hello).file_name().unwrap().to_str().unwrap(),
    );
    spin_dir(&manifest, &[outbound, hello])
}

/// Serves `outbound` beside `hello` on `/hello/...`, allowed `http://self`,
/// and asserts that a relative URL and the host `self.alt` reach `hello`,
/// which greets with `greeting`.
fn assert_reaches_itself(outbound: &str, hello: &str, greeting: &str) {
    let tern = Tern::new();
    let app = outbound_and_hello(outbound, hello, "\"/hello/...\"", "\"http://self\"");
    let serve = Serve::start_in(&tern, app, &[]);
    for (url, path) in [
        ("/hello/there", "/hello/there"),
        ("http://self.alt/hello/alt", "/hello/alt"),
    ] {
        let answer = format!("200 {greeting} You asked for {path}\n");
        assert_eq!(serve.get(&format!("/?url={url}")).expect(200), answer);
    }
    serve.wait_for_log("GET /hello/alt 200");
}

#[test]
fn requests_to_the_app_itself_nest_32_deep_at_most() {
    // Each level asks the next for `/?url=` and the rest: a component
    // calling itself 40 deep is stopped at 32, and every level answers.
    let tern = Tern::new();
    let app = outbound_and_hello(
        SPIN_OUTBOUND,
        SPIN_HELLO,
        "\"/hello/...\"",
        "\"http://self\"",
    );
    let serve = Serve::start_in(&tern, app, &[]);
    let url = format!("/{}hello/end", "?url=/".repeat(40));
    let body = serve.get(&url).expect(200).to_owned();
    assert_eq!(body.matches("200 ").count(), 31, "{body}");
    assert!(body.contains("502 refused: "), "{body}");
    serve.wait_for_log("requests to the app itself nest more than 32 deep");
    // Shallower chains are untouched.
    let url = format!("/{}hello/end", "?url=/".repeat(5));
    let body = serve.get(&url).expect(200).to_owned();
    assert!(
        body.ends_with("200 Hello, Spin! You asked for /hello/end\n"),
        "{body}"
    );
}

#[test]
fn relative_urls_reach_the_app_itself() {
    // Spin's documentation: a relative URL (or the host `self.alt`) is the
    // app itself, allowed by `http://self`. SDK 7 sends a relative URL
    // without an authority.
    assert_reaches_itself(SPIN_OUTBOUND, SPIN_HELLO, "Hello, Spin!");
}

#[test]
pub fn spin5_outbound() {
    // SDK 5 gives a relative URL the authority `:80`, a port without a
    // host: the app itself too.
    assert_reaches_itself(SPIN5_OUTBOUND, SPIN5_HELLO, "Hello, Spin 5!");
}

#[test]
fn components_call_each_other_by_name_private_routes_too() {
    // Spin's service chaining: `http://COMPONENT.spin.internal` reaches the
    // component in process, here one whose route is private.
    let tern = Tern::new();
    let serve_with = |allowed: &str| {
        let app = outbound_and_hello(SPIN_OUTBOUND, SPIN_HELLO, "{ private = true }", allowed);
        Serve::start_in(&tern, app, &[])
    };
    for allowed in [
        "\"http://*.spin.internal\"",
        "\"http://hello.spin.internal\"",
    ] {
        let serve = serve_with(allowed);
        assert_eq!(
            serve
                .get("/?url=http://hello.spin.internal/greet")
                .expect(200),
            "200 Hello, Spin! You asked for /greet\n",
            "{allowed}"
        );
        // The chained request has its own line in the access log.
        serve.wait_for_log("GET /greet 200");
        // A name with its final dot is the same name.
        assert_eq!(
            serve
                .get("/?url=http://hello.spin.internal./dot")
                .expect(200),
            "200 Hello, Spin! You asked for /dot\n",
        );
    }

    // A component the app does not have, and a wildcard that names no
    // component: the SDK's error, and the reason in the log.
    for (allowed, url, why) in [
        (
            "\"http://*.spin.internal\"",
            "http://nobody.spin.internal/",
            "the app has no HTTP component by that name",
        ),
        (
            "\"http://*.spin.internal\", \"http://*:*\"",
            "http://a.hello.spin.internal/",
            "`a.hello.spin.internal` names no component",
        ),
        (
            "\"http://*:*\", \"http://self\"",
            "http://hello.spin.internal/",
            "outbound request denied: http://hello.spin.internal:80 is not in allowed_outbound_hosts",
        ),
    ] {
        let serve = serve_with(allowed);
        let refused = serve.get(&format!("/?url={url}")).expect(502).to_owned();
        assert!(refused.starts_with("refused: "), "{refused}");
        serve.wait_for_log(why);
    }
}

#[test]
fn outbound_hosts_may_name_app_variables() {
    use std::sync::atomic::Ordering::SeqCst;

    use crate::outbound::{HELLO, upstream};

    let (addr, count) = upstream(HELLO);
    let (other, other_count) = upstream(HELLO);
    let tern = Tern::new();
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    let manifest = one_app(
        "/...",
        SPIN_OUTBOUND,
        "allowed_outbound_hosts = [\"http://{{ api_host }}:{{ api_port }}\"]",
        "[variables]\napi_host = { default = \"127.0.0.1\" }\n\
         api_port = { default = \"1\" }\ntoken = { required = true, secret = true }\n",
    );
    let dir = spin_dir(&manifest, &[SPIN_OUTBOUND]);
    // The values come as for any variable: here from the environment.
    let mut command = tern.command();
    command.env("SPIN_VARIABLE_API_PORT", &port);
    command.env("SPIN_VARIABLE_TOKEN", "t0ps3cret");
    let serve = Serve::spawn(command, dir.path(), &[]);
    assert_eq!(
        serve.get(&format!("/?url=http://{addr}/x")).expect(200),
        "200 from upstream\n"
    );
    assert_eq!(count.load(SeqCst), 1);
    let refused = serve
        .get(&format!("/?url=http://{other}/x"))
        .expect(502)
        .to_owned();
    assert!(refused.starts_with("refused: "), "{refused}");
    assert_eq!(other_count.load(SeqCst), 0);
    drop(serve);

    // A value that makes no host stops the start at the entry; a secret's
    // value is never shown.
    let app = dir.path().to_str().unwrap();
    let run = |port: &str, manifest: &str| {
        std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
        let mut command = tern.command();
        command.env("SPIN_VARIABLE_API_PORT", port);
        command.env("SPIN_VARIABLE_TOKEN", "t0ps3cret");
        command.args(["serve", app, "--listen", "127.0.0.1:0"]);
        crate::support::run_bounded(&mut command, None, crate::support::DEADLINE)
    };
    let out = run("not-a-port", &manifest);
    out.code(1).one_line_error(
        "component.app.allowed_outbound_hosts: \"http://{{ api_host }}:{{ api_port }}\" is \"http://127.0.0.1:not-a-port\" once its variables are filled in: ",
    );
    let secret = manifest.replace("{{ api_port }}", "{{ token }}");
    let out = run("1", &secret);
    out.code(1)
        .one_line_error("(`token` is secret, so the result is not shown)");
    assert!(!out.stderr.contains("t0ps3cret"), "{out:#?}");
    // A variable nobody declared is caught when the manifest is read.
    let undeclared = manifest.replace("{{ api_host }}", "{{ nowhere }}");
    run("1", &undeclared)
        .code(1)
        .one_line_error("`nowhere` is not declared under [variables]");
}

#[test]
pub fn spin5_redis() {
    let tern = Tern::new();
    let redis = test_programs::redis::RedisServer::start();
    let manifest = one_app(
        "/...",
        SPIN5_REDIS,
        &format!(
            "allowed_outbound_hosts = [\"redis://127.0.0.1:{}\"]\n\n[component.app.variables]\nredis_address = \"{}\"\n",
            redis.port(),
            redis.url()
        ),
        "",
    );
    let serve = Serve::start_in(&tern, spin_dir(&manifest, &[SPIN5_REDIS]), &[]);
    assert_eq!(serve.get("/colour").expect(404), "nil");
    assert_eq!(
        serve.request("PUT", "/colour", &[], "teal").expect(200),
        "set"
    );
    assert_eq!(serve.get("/colour").expect(200), "teal");
    assert_eq!(serve.post("/incr/hits", "").expect(200), "1");
    assert_eq!(serve.post("/incr/hits", "").expect(200), "2");
    assert_eq!(redis_cli(redis.port(), &["GET", "hits"]), "2\n");
    assert_eq!(
        serve.post("/publish/news", "extra!").expect(200),
        "published"
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

/// A server on 127.0.0.1 answering every request (one per connection)
/// with `status` and `body`; its address, and the head of each request it
/// got, in order.
fn file_server(
    status: &'static str,
    body: Vec<u8>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(crate::serving::PATIENCE));
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push_str(&line);
                line.clear();
            }
            seen.lock().unwrap().push(head);
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (addr, heads)
}

/// `bytes`' digest as a Spin manifest writes it: `sha256:` and 64 hex digits.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let hash = sha2::Sha256::digest(bytes);
    hash.iter().fold(String::from("sha256:"), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// A Spin manifest whose one component `app`, on every path, is downloaded
/// from `url` and checked against `digest`.
fn downloaded_app(url: &str, digest: &str) -> String {
    format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"downloaded\"\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"app\"\n\n\
         [component.app]\nsource = {{ url = \"{url}\", digest = \"{digest}\" }}\n"
    )
}

#[test]
fn a_component_is_downloaded_once_then_served_from_the_cache() {
    let tern = Tern::new();
    let wasm = std::fs::read(SPIN_HELLO).unwrap();
    let digest = digest(&wasm);
    let (addr, requests) = file_server("200 OK", wasm);
    let url = format!("http://{addr}/spin_hello.wasm");
    let dir = spin_dir(&downloaded_app(&url, &digest), &[]);

    let serve = Serve::spawn(tern.command(), dir.path(), &[]);
    serve.wait_for_log(&format!("tern: downloading component `app` from {url}"));
    assert_eq!(
        serve.get("/greet/me").expect(200),
        "Hello, Spin! You asked for /greet/me\n"
    );
    assert_eq!(requests.lock().unwrap().len(), 1);
    // Kept by content in Tern's cache directory.
    let cached = tern
        .cache_dir()
        .join("downloads")
        .join(format!("{}.wasm", digest.replace(':', "-")));
    assert!(cached.is_file(), "{} missing", cached.display());
    drop(serve);

    // `tern up` (and `tern serve`) find it there: no request, no line.
    let serve = Serve::spawn_verb(tern.command(), "up", dir.path(), &[]);
    assert_eq!(
        serve.get("/again").expect(200),
        "Hello, Spin! You asked for /again\n"
    );
    assert!(!serve.log().contains("downloading"), "{}", serve.log());
    assert_eq!(requests.lock().unwrap().len(), 1);
}

#[test]
fn a_download_with_another_digest_is_refused_and_not_kept() {
    let tern = Tern::new();
    let wasm = std::fs::read(SPIN_HELLO).unwrap();
    let actual = digest(&wasm);
    let expected = digest(b"another file");
    let (addr, requests) = file_server("200 OK", wasm);
    let url = format!("http://{addr}/spin_hello.wasm");
    let dir = spin_dir(&downloaded_app(&url, &expected), &[]);
    let path = dir.path().to_str().unwrap();
    for attempt in 1..=2 {
        let out = tern.run(&["serve", path, "--listen", "127.0.0.1:0"]);
        out.code(1)
            .stderr_has(&format!(
                "tern: downloading component `app` from {url}\nerror: "
            ))
            .stderr_has(&format!(
                "component.app.source: {url} has the digest {actual}, not {expected} as the manifest says; nothing was kept\n"
            ));
        assert_eq!(out.stderr.lines().count(), 2, "{out:#?}");
        // Nothing is kept, not even half a file: the next start downloads
        // again.
        let kept: Vec<_> = std::fs::read_dir(tern.cache_dir().join("downloads"))
            .unwrap()
            .collect();
        assert!(kept.is_empty(), "{kept:?}");
        assert_eq!(requests.lock().unwrap().len(), attempt);
    }
}

#[test]
fn a_failed_download_says_why_in_one_line_naming_the_url() {
    let tern = Tern::new();
    let (addr, requests) = file_server("404 Not Found", b"no such file\n".to_vec());
    // User info and a query may hold secrets: sent, never shown.
    let url = format!("http://user:s3cret@{addr}/spin_hello.wasm?token=s3cret");
    let shown = format!("http://{addr}/spin_hello.wasm");
    let dir = spin_dir(&downloaded_app(&url, &digest(b"x")), &[]);
    let out = tern.run(&[
        "serve",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    out.code(1)
        .stderr_has(&format!(
            "tern: downloading component `app` from {shown}\nerror: "
        ))
        .stderr_has(&format!(
            "component.app.source: downloading {shown}: the server answered 404 Not Found\n"
        ));
    assert_eq!(out.stderr.lines().count(), 2, "{out:#?}");
    assert!(!out.stderr.contains("s3cret"), "{out:#?}");
    let heads = requests.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /spin_hello.wasm?token=s3cret HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[0]
            .lines()
            .any(|line| line.eq_ignore_ascii_case("authorization: Basic dXNlcjpzM2NyZXQ=")),
        "{heads:?}"
    );

    // Nothing listening there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/spin_hello.wasm");
    let dir = spin_dir(&downloaded_app(&url, &digest(b"x")), &[]);
    tern.run(&[
        "serve",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .code(1)
    .stderr_has(&format!(
        "component.app.source: downloading {url}: cannot connect to {closed}: Connection refused"
    ));
}

#[test]
fn an_https_download_checks_the_certificate() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // A certificate for 127.0.0.1 from a CA of the test's own, which the
    // web PKI roots do not include.
    let pki = tempfile::tempdir().unwrap();
    crate::support::test_pki(pki.path());
    let read = |name: &str| std::fs::read(pki.path().join(name)).unwrap();
    let certs = CertificateDer::pem_slice_iter(&read("server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(crate::serving::PATIENCE));
            if let Ok(mut tls) = rustls::ServerConnection::new(config.clone()) {
                // The client refuses the certificate, ending the handshake.
                let _ = tls.complete_io(&mut stream);
            }
        }
    });

    let tern = Tern::new();
    let url = format!("https://{addr}/spin_hello.wasm");
    let dir = spin_dir(&downloaded_app(&url, &digest(b"x")), &[]);
    tern.run(&[
        "serve",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .code(1)
    .stderr_has(&format!(
        "component.app.source: downloading {url}: TLS with {addr}: invalid peer certificate"
    ));
}
