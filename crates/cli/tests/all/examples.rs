//! The examples, built from source and served as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

use test_programs::redis::RedisServer;

use crate::serving::Serve;
use crate::support::Tern;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds an example's component the way its README says.
fn build_example(name: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .args(["--target-dir", "target/examples", "--manifest-path"])
        .arg(format!("examples/{name}/Cargo.toml"))
        .status()
        .expect("running cargo");
    assert!(status.success(), "building examples/{name} failed");
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
    build_example("url-shortener");
    let tern = Tern::new();
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
