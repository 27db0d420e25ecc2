//! The compile cache and precompiled artifacts: hits, misses, entries that
//! do not verify, and files and directories someone else could have written.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::Tern;
use test_programs::*;

/// The seal Tern appends to wasmtime's payload: wasm hash, engine hash,
/// kind, format, MAC, magic.
const TRAILER: usize = 32 + 32 + 4 + 4 + 32 + 8;

/// Someone else: `nobody` on most systems.
const OTHER_UID: u32 = 65534;

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
    fs::write(&raw, &bytes[..bytes.len() - TRAILER]).unwrap();
    tern.run(&["run", raw.to_str().unwrap()])
        .code(1)
        .one_line_error("refusing to load a precompiled artifact that tern did not write");
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives `path` to another user; false when this process may not (tests
/// run as root in CI, where the case is checked).
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::chown(path, Some(OTHER_UID), Some(OTHER_UID)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("not root: skipping the case of a file owned by another user");
            false
        }
        Err(e) => panic!("chown {}: {e}", path.display()),
    }
}

fn mkfifo(path: &Path) {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
    #[allow(unsafe_code)]
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}", path.display());
}

#[test]
fn an_entry_copied_over_another_programs_entry_is_not_run() {
    let tern = Tern::new();
    for (a, b, b_prints) in [
        (P1_HELLO, P1_ARGS, "args.wasm\n"),
        (P2_HELLO, P2_ARGS, "args.wasm\n"),
    ] {
        let before = entries(&tern);
        tern.run(&["run", a]).code(0).stdout("hello from wasm\n");
        let a_entry = new_entry(&tern, &before);
        let before = entries(&tern);
        tern.run(&["run", b]).code(0).stdout(b_prints);
        let b_entry = new_entry(&tern, &before);

        // A's entry, sealed by this very key, copied to B's path: B's seal
        // binding does not match, so B's code is compiled again and runs.
        fs::copy(&a_entry, &b_entry).unwrap();
        tern.run(&["run", "-v", b])
            .code(0)
            .stdout(b_prints)
            .stderr_has(
                "cache entry rejected (artifact was sealed for another program), recompiled",
            );
        assert_ne!(fs::read(&b_entry).unwrap(), fs::read(&a_entry).unwrap());
        tern.run(&["run", "-v", b])
            .code(0)
            .stdout(b_prints)
            .stderr_has("cache hit");
        tern.run(&["run", a]).code(0).stdout("hello from wasm\n");
    }
}

fn new_entry(tern: &Tern, before: &[PathBuf]) -> PathBuf {
    let added: Vec<PathBuf> = entries(tern)
        .into_iter()
        .filter(|e| !before.contains(e))
        .collect();
    let [entry] = &added[..] else {
        panic!("expected one new cache entry, got {added:?}")
    };
    entry.clone()
}

#[test]
fn entries_that_are_not_private_regular_files_are_not_used() {
    let tern = Tern::new();
    let me = fs::metadata(tern.home.path()).unwrap().uid();
    tern.run(&["run", P1_HELLO]).code(0);
    let [entry] = &entries(&tern)[..] else {
        panic!("expected one cache entry")
    };
    let entry = entry.clone();
    assert_eq!(mode(&entry), 0o600);
    let rejected = |why: &str| {
        // A FIFO would block a plain open forever: bound the wait.
        tern.run_within(&["run", "-v", P1_HELLO], Duration::from_secs(60))
            .code(0)
            .stdout("hello from wasm\n")
            .stderr_has(&format!("cache entry rejected ({why}), recompiled"));
        // Replaced by a fresh entry of this user's, which is then used.
        let meta = fs::symlink_metadata(&entry).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} not replaced",
            entry.display()
        );
        assert_eq!(meta.uid(), me);
        assert_eq!(mode(&entry), 0o600);
        tern.run(&["run", "-v", P1_HELLO])
            .code(0)
            .stderr_has("cache hit");
    };

    // A FIFO where the entry should be.
    fs::remove_file(&entry).unwrap();
    mkfifo(&entry);
    rejected("it is not a regular file");

    // A symbolic link to a good entry.
    let elsewhere = tern.home.path().join("elsewhere.twasm");
    fs::rename(&entry, &elsewhere).unwrap();
    let moved = fs::read(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    rejected("it is a symbolic link");
    assert_eq!(
        fs::read(&elsewhere).unwrap(),
        moved,
        "written through the link"
    );

    // A good entry others could write (and so change after it was checked).
    set_mode(&entry, 0o620);
    rejected("it is writable by group or others");

    // A good entry owned by someone else.
    if give_away(&entry) {
        rejected(&format!(
            "it is owned by uid {OTHER_UID}, not by this user (uid {me})"
        ));
    }
}

#[test]
fn a_key_or_cache_directory_others_could_write_is_refused() {
    let tern = Tern::new();
    let me = fs::metadata(tern.home.path()).unwrap().uid();
    tern.run(&["run", P1_HELLO]).code(0);
    let key = tern.key_path();
    let key_bytes = fs::read(&key).unwrap();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    assert_eq!(mode(&tern.cache_dir()), 0o700);
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("hello.twasm");
    let artifact_str = artifact.to_str().unwrap();
    tern.run(&["compile", P1_HELLO, "-o", artifact_str]).code(0);

    // A key others can write: refused by name, by every command that uses
    // it, and neither used nor replaced.
    set_mode(&key, 0o666);
    let refused_key = format!(
        "error: refusing signing key `{}`: it is writable by group or others; remove it",
        key.display()
    );
    for args in [
        &["run", P1_HELLO][..],
        &["run", artifact_str],
        &["compile", P1_HELLO, "-o", artifact_str],
    ] {
        tern.run(args).code(1).one_line_error(&refused_key);
    }
    assert_eq!(fs::read(&key).unwrap(), key_bytes, "the key was replaced");
    assert_eq!(mode(&key), 0o666);
    // Without the cache, plain wasm still runs.
    tern.run(&["run", "--no-cache", P1_HELLO])
        .code(0)
        .stdout("hello from wasm\n");

    // Readable by others: the key is a secret.
    set_mode(&key, 0o644);
    tern.run(&["run", P1_HELLO])
        .code(1)
        .one_line_error("it is readable by group or others");
    set_mode(&key, 0o600);

    // A key owned by someone else, or in a directory someone else owns.
    if give_away(&key) {
        tern.run(&["run", P1_HELLO])
            .code(1)
            .one_line_error(&format!(
                "refusing signing key `{}`: it is owned by uid {OTHER_UID}",
                key.display()
            ));
        std::os::unix::fs::chown(&key, Some(me), None).unwrap();
        let key_dir = key.parent().unwrap();
        assert!(give_away(key_dir));
        tern.run(&["compile", P1_HELLO, "-o", artifact_str])
            .code(1)
            .one_line_error(&format!(
                "refusing signing key directory `{}`: it is owned by uid {OTHER_UID}",
                key_dir.display()
            ));
        std::os::unix::fs::chown(key_dir, Some(me), None).unwrap();
    }
    // The key survived all of it: the artifact it sealed still runs.
    tern.run(&["run", artifact_str])
        .code(0)
        .stdout("hello from wasm\n");

    // A link at the key's path, to a key someone planted.
    let planted = tern.home.path().join("planted.key");
    fs::write(&planted, [7u8; 32]).unwrap();
    set_mode(&planted, 0o600);
    let real_key = tern.home.path().join("real.key");
    fs::rename(&key, &real_key).unwrap();
    std::os::unix::fs::symlink(&planted, &key).unwrap();
    tern.run(&["run", P1_HELLO])
        .code(1)
        .one_line_error(&format!(
            "refusing signing key `{}`: it is a symbolic link",
            key.display()
        ));
    fs::remove_file(&key).unwrap();
    fs::rename(&real_key, &key).unwrap();

    // A cache directory others can write, that someone else owns, or that
    // is a link.
    let cache = tern.cache_dir();
    let refused_cache = |why: &str| {
        tern.run(&["run", P1_HELLO]).code(1).one_line_error(&format!(
            "error: refusing compile cache directory `{}`: {why}; remove it (it is only a cache), or run with --no-cache",
            cache.display()
        ));
        tern.run(&["run", "--no-cache", P1_HELLO])
            .code(0)
            .stdout("hello from wasm\n");
    };
    set_mode(&cache, 0o777);
    refused_cache("it is writable by group or others");
    set_mode(&cache, 0o700);
    if give_away(&cache) {
        refused_cache(&format!(
            "it is owned by uid {OTHER_UID}, not by this user (uid {me})"
        ));
        std::os::unix::fs::chown(&cache, Some(me), None).unwrap();
    }
    let real_cache = tern.home.path().join("real-cache");
    fs::rename(&cache, &real_cache).unwrap();
    std::os::unix::fs::symlink(&real_cache, &cache).unwrap();
    refused_cache("it is a symbolic link");
    fs::remove_file(&cache).unwrap();
    fs::rename(&real_cache, &cache).unwrap();
    tern.run(&["run", "-v", P1_HELLO])
        .code(0)
        .stderr_has("cache hit");
}

#[test]
fn compile_output_and_stores_are_private() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("hello.twasm");
    let artifact_str = artifact.to_str().unwrap();
    tern.run(&["compile", P1_HELLO, "-o", artifact_str]).code(0);
    assert_eq!(mode(&artifact), 0o600);

    // Compiling over an artifact others could read replaces it whole.
    set_mode(&artifact, 0o644);
    tern.run(&["compile", P1_HELLO, "-o", artifact_str]).code(0);
    assert_eq!(mode(&artifact), 0o600);
    tern.run(&["run", artifact_str])
        .code(0)
        .stdout("hello from wasm\n");
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hello.twasm"]);

    // Cache entries, stat index records and the cache directory too.
    tern.run(&["run", P1_HELLO]).code(0);
    assert_eq!(mode(&tern.cache_dir()), 0o700);
    let records = fs::read_dir(tern.cache_dir().join("index"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path());
    for file in entries(&tern).into_iter().chain(records) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // And an SQLite store given to a program.
    let store = dir.path().join("state/counter.sqlite");
    let grant = format!("default={}", store.display());
    tern.run(&["run", "--kv", &grant, P2_KV_COUNTER])
        .code(0)
        .stdout("runs: 1\n");
    assert_eq!(mode(&store), 0o600);
}
