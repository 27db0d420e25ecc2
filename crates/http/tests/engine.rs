//! The serving engine pays for component-model concurrency only when an
//! app needs it: a WASI 0.3 component, or warm instances.

use tern_http::{App, ServeConfig};
use tern_runtime::Loader;
use test_programs::{HTTP_HELLO, HTTP3_HELLO, P1_WAGI_ECHO};

/// Loads an app of one component from `source`, with `extra` TOML lines
/// in its table.
fn load(source: &str, extra: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("app.wasm");
    std::fs::copy(source, &wasm).unwrap();
    let toml = format!(
        "manifest_version = 1\n[app]\nname = \"t\"\n[[route]]\npath = \"/\"\ncomponent = \"app\"\n\
         [component.app]\nsource = \"app.wasm\"\n{extra}\n"
    );
    std::fs::write(dir.path().join("tern.toml"), toml).unwrap();
    let manifest = tern_manifest::load(dir.path()).unwrap();
    let config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    App::load(&manifest, &config, &Loader::default()).unwrap()
}

#[test]
fn concurrency_is_on_only_where_a_component_needs_it() {
    assert!(!load(HTTP_HELLO, "").concurrency());
    assert!(!load(P1_WAGI_ECHO, "").concurrency());
    assert!(load(HTTP3_HELLO, "").concurrency());
    assert!(load(HTTP_HELLO, "[component.app.instances]\nreuse = 4").concurrency());
}
