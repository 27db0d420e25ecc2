//! The examples, built from source and served as a user would.

use std::path::{Path, PathBuf};

use test_programs::redis::RedisServer;

use crate::serving::Serve;
use crate::support::Tern;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds an example with `tern build`, as its README says.
fn build_example(tern: &Tern, name: &str) {
    let app = repo().join("examples").join(name);
    let out = tern.run_dev(&["build", app.to_str().unwrap()]);
    assert_eq!(out.code, 0, "building examples/{name}: {out:?}");
}

fn shorten_and_follow(serve: &Serve, base: &str) {
    let created = serve.post("/links", "https://example.com/docs");
    let link = created.expect(201).trim().to_string();
    assert!(link.starts_with(base), "{link}");
    assert_eq!(created.header("location"), Some(link.as_str()));
    let code = link.rsplit('/').next().unwrap();

    let visit = serve.get(&format!("/{code}"));
    assert_eq!(visit.status, 302, "{visit:?}");
    assert_eq!(visit.header("location"), Some("https://example.com/docs"));
    assert_eq!(
        serve.get(&format!("/links/{code}")).expect(200),
        "https://example.com/docs visits=1\n"
    );
    assert_eq!(serve.get("/nope").status, 404);
    assert_eq!(serve.post("/links", "not a url").status, 400);
}

#[test]
fn url_shortener_on_sqlite_and_on_redis() {
    let tern = Tern::new();
    build_example(&tern, "url-shortener");
    let app = repo().join("examples/url-shortener");
    let state = tempfile::tempdir().unwrap();
    let state_arg = ["--state-dir", state.path().to_str().unwrap()];

    // SQLite, the default: the link outlives the server.
    let mut command = tern.command();
    command.env("TERN_VARIABLE_BASE_URL", "https://sho.rt");
    let serve = Serve::spawn(command, &app, &state_arg);
    shorten_and_follow(&serve, "https://sho.rt/");
    drop(serve);
    assert!(state.path().join("kv/default.sqlite").is_file());
    let keys = tern.run(&[
        "kv",
        "list",
        "--app",
        app.to_str().unwrap(),
        "--state-dir",
        state_arg[1],
    ]);
    keys.code(0).stdout("link:1\nnext-id\nvisits:1\n");

    // Redis, with two servers sharing it: codes stay unique.
    let redis = RedisServer::start();
    let config = state.path().join("redis.toml");
    let toml = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    std::fs::write(&config, toml).unwrap();
    let args = ["--runtime-config", config.to_str().unwrap()];
    let a = Serve::spawn(tern.command(), &app, &args);
    let b = Serve::spawn(tern.command(), &app, &args);
    shorten_and_follow(&a, "http://127.0.0.1:3000/");
    let second = b
        .post("/links", "https://example.org/")
        .expect(201)
        .to_string();
    assert_eq!(second.trim(), "http://127.0.0.1:3000/2");
    assert_eq!(a.get("/2").header("location"), Some("https://example.org/"));
}

#[test]
fn composed_rust_app_calling_a_javascript_library() {
    let tern = Tern::new();
    build_example(&tern, "composed");
    let app = repo().join("examples/composed");
    let serve = Serve::spawn(tern.command(), &app, &[]);
    assert_eq!(
        serve
            .get("/render?text=%23%20Hello%20**world**")
            .expect(200),
        "<h1 id=\"hello-world\">Hello <strong>world</strong></h1>\n"
    );
    assert_eq!(
        serve
            .get("/slug?text=Cr%C3%A8me%20Br%C3%BBl%C3%A9e%2C%202nd%20try!")
            .expect(200)
            .trim_end(),
        "creme-brulee-2nd-try"
    );
    // The library's own error, typed by the WIT, reaches the client.
    assert_eq!(
        serve.get("/render?text=%60%60%60%0Aunclosed").expect(422),
        "line 1: code fence is never closed\n"
    );
}

#[test]
fn chat_streams_an_answer_from_the_model_it_declares() {
    let tern = Tern::new();
    let app = repo().join("examples/chat");
    // The model the README has the user download first, from the test models.
    let model = Path::new(test_programs::MODELS_DIR).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let linked = app.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::create_dir_all(linked.parent().unwrap()).unwrap();
    if !linked.is_file() && std::fs::hard_link(&model, &linked).is_err() {
        std::fs::copy(&model, &linked).unwrap();
    }
    build_example(&tern, "chat");
    let serve = Serve::spawn(tern.command(), &app, &[]);
    let response = serve.post("/chat?max_tokens=12", "What is the capital of France?");
    let body = response.expect(200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let text: String = body
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| serde_json::from_str::<String>(data).expect(data))
        .collect();
    assert!(text.contains("Paris"), "{body}");
    assert!(body.contains("event: done\ndata: {"), "{body}");
    assert_eq!(serve.post("/chat", "").status, 400);
}

#[test]
fn examples_readme_lists_every_example_with_its_command() {
    let readme = std::fs::read_to_string(repo().join("examples/README.md")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| [{name}]({name}) |")));
            // A row names the example and gives one command in backticks.
            if !row.is_some_and(|r| r.trim_end().ends_with("` |")) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "examples/README.md lacks a row for {missing:?}"
    );
}
