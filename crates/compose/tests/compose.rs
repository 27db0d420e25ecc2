//! Composition cases as data: `data/app.wat` with each `data/library*.wat`
//! (and the other inputs), compared with `data/NAME.expected`: `ok` and the
//! composed component's imports, or the one-line error. `TERN_BLESS=1`
//! rewrites the expected files.

use std::path::{Path, PathBuf};

use wasm_compose::graph::Component;
use wasmparser::{Validator, WasmFeatures};

const DATA: &str = "tests/data";

/// Writes `data/NAME.wat` as `DIR/FILE` (wasm-compose names a plug after
/// its file, which must be kebab-case).
fn assemble(name: &str, dir: &Path, file: &str) -> PathBuf {
    let wasm = wat::parse_file(Path::new(DATA).join(format!("{name}.wat"))).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, wasm).unwrap();
    path
}

/// What composing the app with `library` gives, paths shown relative.
fn outcome(library: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let app = assemble("app", dir.path(), "app.wasm");
    let plug = assemble(library, dir.path(), "lib.wasm");
    match tern_compose::compose(&app, &[plug]) {
        Ok(bytes) => {
            let mut validator = Validator::new_with_features(WasmFeatures::all());
            let composed = Component::from_bytes(&mut validator, "composed", bytes)
                .expect("the composed component validates");
            let imports: Vec<&str> = composed.imports().map(|(_, name, _)| name).collect();
            format!("ok; imports: {}\n", imports.join(", "))
        }
        Err(error) => {
            let prefix = format!("{}/", dir.path().display());
            format!("{}\n", error.to_string().replace(&prefix, ""))
        }
    }
}

#[test]
fn each_library_composes_or_fails_as_expected() {
    let bless = std::env::var_os("TERN_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(DATA)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "wat" && stem != "app").then_some(stem)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let actual = outcome(&name);
        let expected_path = Path::new(DATA).join(format!("{name}.expected"));
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{name}:\n  expected: {expected}  actual:   {actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
