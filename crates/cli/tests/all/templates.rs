//! Every template, as a new user meets it: `tern new`, `tern build` with
//! the language's real toolchain, `tern serve`, a request. Each test prints
//! how long the cold `new` + `build` took, and each has its app send a body
//! of 10 KB: in WASI 0.2 one `blocking-write-and-flush` carries at most 4096
//! bytes, and `http-rust` (WASI 0.3) writes its body to a stream in a task
//! that outlives `handle`.

use std::time::Instant;

use crate::serving::{Response, Serve};
use crate::support::Tern;

/// Creates an app from `template`, builds it and serves it.
fn new_build_serve(tern: &Tern, template: &str) -> (Serve, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("demo-app");
    let app_arg = app.to_str().unwrap();
    let started = Instant::now();
    let created = tern.run_dev(&["new", template, "demo-app", "--dir", app_arg]);
    created.code(0);
    assert!(
        created
            .stderr
            .contains(&format!("from template {template}")),
        "{created:?}"
    );
    let built = tern.run_dev(&["build", app_arg]);
    assert_eq!(built.code, 0, "building {template}: {built:?}");
    eprintln!(
        "{template}: cold `tern new` + `tern build` took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let serve = Serve::spawn(tern.dev_command(), &app, &[]);
    (serve, dir)
}

/// 10,000 letters, `abc...zabc...`, for a request whose answer is as long.
fn long_text() -> String {
    (b'a'..=b'z').cycle().take(10_000).map(char::from).collect()
}

/// Asserts a complete 200 whose body is exactly `want`, without printing
/// 10 KB twice when it is not.
#[track_caller]
fn assert_body(response: &Response, want: &str) {
    let body = response.expect(200);
    assert_eq!(body.len(), want.len(), "length of the body");
    assert!(body == want, "the body differs from the one expected");
}

/// Asserts that the greeting of an `http-*` template, which repeats the
/// path and query it was asked for, arrives whole when it is 10 KB long.
#[track_caller]
fn assert_long_greeting(serve: &Serve, prefix: &str) {
    let path = format!("/hello?name={}", long_text());
    assert_body(&serve.get(&path), &format!("{prefix}{path}\n"));
}

/// Asserts that a Rust template's build kept the name section, so a trap's
/// backtrace in the log names the functions.
#[track_caller]
fn assert_keeps_function_names(dir: &tempfile::TempDir) {
    let wasm = dir
        .path()
        .join("demo-app/target/wasm32-wasip2/release/demo_app.wasm");
    let component = std::fs::read(&wasm).unwrap();
    let module = sections(&component)
        .find(|(id, _)| *id == 1)
        .expect("a core module in the component")
        .1;
    let custom: Vec<String> = sections(module)
        .filter(|(id, _)| *id == 0)
        .map(|(_, payload)| {
            let mut at = 0;
            let len = leb128(payload, &mut at);
            String::from_utf8_lossy(&payload[at..at + len]).into_owned()
        })
        .collect();
    assert!(
        custom.iter().any(|name| name == "name"),
        "{}: no name section among {custom:?}",
        wasm.display()
    );
}

/// The sections of a wasm module or component: (id, payload).
fn sections(binary: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 8; // magic and version
    std::iter::from_fn(move || {
        let id = *binary.get(at)?;
        at += 1;
        let len = leb128(binary, &mut at);
        let payload = &binary[at..at + len];
        at += len;
        Some((id, payload))
    })
}

fn leb128(bytes: &[u8], at: &mut usize) -> usize {
    let mut value = 0;
    for shift in (0..).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    value
}

#[test]
fn http_rust() {
    let tern = Tern::new();
    let (serve, dir) = new_build_serve(&tern, "http-rust");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from Rust!\nYou asked for /hello?x=1\n"
    );
    assert_eq!(serve.post("/hello", "x").status, 405);
    assert_long_greeting(&serve, "Hello from Rust!\nYou asked for ");
    assert_keeps_function_names(&dir);
}

#[test]
fn http_c() {
    let tern = Tern::new();
    let (serve, _dir) = new_build_serve(&tern, "http-c");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from C!\nYou asked for GET /hello?x=1\n"
    );
    assert_long_greeting(&serve, "Hello from C!\nYou asked for GET ");
}

#[test]
fn http_python() {
    let tern = Tern::new();
    let (serve, _dir) = new_build_serve(&tern, "http-python");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from Python!\nYou asked for /hello?x=1\n"
    );
    assert_long_greeting(&serve, "Hello from Python!\nYou asked for ");
}

#[test]
fn http_js() {
    let tern = Tern::new();
    let (serve, dir) = new_build_serve(&tern, "http-js");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from JavaScript!\nYou asked for /hello?x=1\n"
    );
    assert_long_greeting(&serve, "Hello from JavaScript!\nYou asked for ");
    drop(serve);

    // ComponentizeJS's instances answer one request each: kept warm, every
    // other request would fail, so warm instances are refused at start.
    let app = dir.path().join("demo-app");
    let manifest = app.join("tern.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[component.demo-app.instances]\nreuse = 8\n");
    std::fs::write(&manifest, text).unwrap();
    tern.run(&["serve", "--listen", "127.0.0.1:0", app.to_str().unwrap()])
        .code(1)
        .stderr_has("app.wasm was built with ComponentizeJS, whose StarlingMonkey engine answers one fetch event per instance (StarlingMonkey issue #247), so it cannot be kept warm; remove [component.demo-app.instances]");
}

#[test]
fn kv_rust() {
    let tern = Tern::new();
    let (serve, dir) = new_build_serve(&tern, "kv-rust");
    for n in 1..=3 {
        assert_eq!(
            serve.get("/").expect(200),
            format!("Hello! This page has been visited {n} times.\n")
        );
    }
    assert_eq!(serve.get("/count").expect(200), "3\n");
    let app = dir.path().join("demo-app");
    let stored = tern.run(&[
        "kv",
        "get",
        "--app",
        app.to_str().unwrap(),
        "--store",
        "default",
        "visits",
    ]);
    stored.code(0).stdout("3");
    assert_eq!(
        serve.request("DELETE", "/count", &[], "").expect(200),
        "0\n"
    );
    assert_eq!(serve.get("/count").expect(200), "0\n");

    // A greeting of 10 KB: read from the request, stored, sent back whole.
    let greeting = long_text();
    let saved = serve.request("PUT", "/greeting", &[], &greeting);
    assert_eq!(saved.expect(200), "saved\n");
    assert_body(
        &serve.get("/"),
        &format!("{greeting} This page has been visited 1 times.\n"),
    );
    assert_keeps_function_names(&dir);
}

#[test]
fn new_lists_the_templates_and_refuses_bad_names_and_existing_directories() {
    let tern = Tern::new();
    let listed = tern.run(&["new", "--list"]);
    listed.code(0);
    let names: Vec<&str> = listed
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["http-rust", "http-c", "http-python", "http-js", "kv-rust"]
    );

    tern.run(&["new", "http-go", "x"]).code(1).one_line_error(
        "no template named `http-go`; the templates are: http-rust, http-c, http-python, http-js, kv-rust",
    );
    tern.run(&["new", "http-rust", "My App"])
        .code(1)
        .one_line_error("invalid app name `My App`");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = tern.run(&[
        "new",
        "http-rust",
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    out.code(1)
        .one_line_error("already exists and is not empty");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}
