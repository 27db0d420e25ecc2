//! Every template, as a new user meets it: `tern new`, `tern build` with
//! the language's real toolchain, `tern serve`, a request. Each test prints
//! how long the cold `new` + `build` took.

use std::time::Instant;

use crate::serving::Serve;
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

#[test]
fn http_rust() {
    let tern = Tern::new();
    let (serve, _dir) = new_build_serve(&tern, "http-rust");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from Rust!\nYou asked for /hello?x=1\n"
    );
    assert_eq!(serve.post("/hello", "x").status, 405);
}

#[test]
fn http_c() {
    let tern = Tern::new();
    let (serve, _dir) = new_build_serve(&tern, "http-c");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from C!\nYou asked for GET /hello?x=1\n"
    );
}

#[test]
fn http_python() {
    let tern = Tern::new();
    let (serve, _dir) = new_build_serve(&tern, "http-python");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from Python!\nYou asked for /hello?x=1\n"
    );
}

#[test]
fn http_js() {
    let tern = Tern::new();
    let (serve, _dir) = new_build_serve(&tern, "http-js");
    assert_eq!(
        serve.get("/hello?x=1").expect(200),
        "Hello from JavaScript!\nYou asked for /hello?x=1\n"
    );
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
