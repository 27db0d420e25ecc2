//! The compile cache and precompiled artifacts: hits, misses, and entries
//! that do not verify.

use std::fs;
use std::path::PathBuf;

use crate::support::Tern;
use test_programs::*;

fn entries(tern: &Tern) -> Vec<PathBuf> {
    match fs::read_dir(tern.cache_dir()) {
        Ok(dir) => dir
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "twasm"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn second_run_hits_the_cache() {
    let tern = Tern::new();
    tern.run(&["run", "-v", P1_HELLO])
        .code(0)
        .stdout("hello from wasm\n")
        .stderr_has("cache miss, compiled");
    assert_eq!(entries(&tern).len(), 1);
    tern.run(&["run", "-v", P1_HELLO])
        .code(0)
        .stdout("hello from wasm\n")
        .stderr_has("cache hit");
    tern.run(&["run", "-v", P2_HELLO])
        .code(0)
        .stderr_has("cache miss");
    tern.run(&["run", "-v", P2_HELLO])
        .code(0)
        .stderr_has("cache hit");
    // Another engine configuration is another entry.
    tern.run(&["run", "-v", "--fuel", "100000000", P1_HELLO])
        .code(0)
        .stderr_has("cache miss");
    assert_eq!(entries(&tern).len(), 3);
}

#[test]
fn no_cache_leaves_no_trace() {
    let tern = Tern::new();
    tern.run(&["run", "-v", "--no-cache", P1_HELLO])
        .code(0)
        .stderr_has("compiled (cache off)");
    assert!(entries(&tern).is_empty());
}

#[test]
fn corrupted_entries_are_recompiled() {
    let tern = Tern::new();
    tern.run(&["run", P1_HELLO]).code(0);
    let [entry] = &entries(&tern)[..] else {
        panic!("expected one cache entry")
    };
    let good = fs::read(entry).unwrap();

    // One flipped bit in the code, a truncated file, an empty file.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    for (bad, why) in [
        (flipped, "signature does not verify"),
        (good[..good.len() - 100].to_vec(), "is truncated"),
        (Vec::new(), "is truncated"),
    ] {
        fs::write(entry, bad).unwrap();
        tern.run(&["run", "-v", P1_HELLO])
            .code(0)
            .stdout("hello from wasm\n")
            .stderr_has(&format!("cache entry rejected (artifact {why}"));
        assert_eq!(
            fs::read(entry).unwrap(),
            good,
            "the entry was not rewritten"
        );
        tern.run(&["run", "-v", P1_HELLO])
            .code(0)
            .stderr_has("cache hit");
    }
}

#[test]
fn precompiled_artifacts_run_only_when_sealed_here() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("hello.twasm");
    let artifact_str = artifact.to_str().unwrap();
    tern.run(&["compile", P1_HELLO, "-o", artifact_str])
        .code(0)
        .stderr_has("compiled ");
    tern.run(&["run", "-v", artifact_str])
        .code(0)
        .stdout("hello from wasm\n")
        .stderr_has("verified precompiled artifact");

    let component = dir.path().join("hello-component.twasm");
    tern.run(&["compile", P2_HELLO, "-o", component.to_str().unwrap()])
        .code(0);
    tern.run(&["run", component.to_str().unwrap()])
        .code(0)
        .stdout("hello from wasm\n");

    // Compiled without fuel metering: cannot run with --fuel.
    tern.run(&["run", "--fuel", "1000000", artifact_str])
        .code(1)
        .one_line_error("does not match this engine");

    // Without interruption checks it cannot honour --timeout; with them it can.
    tern.run(&["run", "--timeout", "5s", artifact_str])
        .code(1)
        .one_line_error("does not match this engine");
    let spin = dir.path().join("spin.twasm");
    let spin_str = spin.to_str().unwrap();
    tern.run(&["compile", "--interruptible", P1_SPIN, "-o", spin_str])
        .code(0);
    tern.run(&["run", "--timeout", "200ms", spin_str])
        .code(124)
        .one_line_error("guest exceeded its time limit of 200ms");

    // Another user (another key) does not trust it.
    let stranger = Tern::new();
    stranger.run(&["run", artifact_str]).code(1).one_line_error(
        "refusing to load precompiled artifact: artifact signature does not verify",
    );

    // Tampered code is refused.
    let mut bytes = fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let tampered = dir.path().join("tampered.twasm");
    fs::write(&tampered, &bytes).unwrap();
    tern.run(&["run", tampered.to_str().unwrap()])
        .code(1)
        .one_line_error("signature does not verify");

    // A raw wasmtime artifact (the payload without tern's seal) is refused.
    let raw = dir.path().join("raw.cwasm");
    fs::write(&raw, &bytes[..bytes.len() - 48]).unwrap();
    tern.run(&["run", raw.to_str().unwrap()])
        .code(1)
        .one_line_error("refusing to load a precompiled artifact that tern did not write");
}
