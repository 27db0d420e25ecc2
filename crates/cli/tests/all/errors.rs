//! Traps and Tern's own errors: one clear line, a documented exit code,
//! never a Rust panic.

use std::fs;

use crate::support::Tern;
use test_programs::*;

/// What `tern run` prints after a trap unless asked for the backtrace.
pub const BACKTRACE_NOTE: &str = "note: run with --backtrace to see the guest's backtrace\n";

#[test]
pub fn panic() {
    let tern = Tern::new();
    for program in [P1_PANIC, P2_PANIC] {
        // By default: the guest's own output, then one line and a note.
        let out = tern.run(&["run", program]);
        out.code(134)
            .stderr_has("invariant broken: 7 != 42")
            .stderr_has(&format!(
                "\nerror: guest trapped: wasm `unreachable` instruction executed\n{BACKTRACE_NOTE}"
            ));
        assert!(out.stderr.ends_with(BACKTRACE_NOTE), "{out:#?}");
        assert!(!out.stderr.contains("wasm backtrace"), "{out:#?}");
        assert!(!out.stderr.contains("check_invariant"), "{out:#?}");
        // On request, the backtrace names the guest's functions.
        tern.run(&["run", "--backtrace", program])
            .code(134)
            .stderr_has(
                "error: guest trapped: wasm `unreachable` instruction executed\nwasm backtrace:\n",
            )
            .stderr_has("check_invariant");
    }
}

#[test]
pub fn oob() {
    let tern = Tern::new();
    let out = tern.run(&["run", WAT_OOB]);
    out.code(134).stderr(&format!(
        "error: guest trapped: out of bounds memory access\n{BACKTRACE_NOTE}"
    ));
    let out = tern.run(&["run", "--backtrace", WAT_OOB]);
    out.code(134)
        .stderr_has("error: guest trapped: out of bounds memory access\n");
    // The backtrace names each frame, innermost first.
    let names: Vec<&str> = ["load_past_end", "middle", "start"]
        .into_iter()
        .filter(|name| {
            out.stderr.contains(&format!("!{name}\n")) || out.stderr.contains(&format!("{name}\n"))
        })
        .collect();
    assert_eq!(names, ["load_past_end", "middle", "start"], "{out:?}");
    let first = out.stderr.find("load_past_end").unwrap();
    assert!(first < out.stderr.find("middle").unwrap(), "{out:?}");
}

#[test]
pub fn not_command() {
    Tern::new().run(&["run", WAT_NOT_COMMAND]).code(1).one_line_error(
        "this component is not a wasi:cli command: it exports neither `wasi:cli/run@0.2` nor `wasi:cli/run@0.3`; it exports nothing",
    );
}

#[test]
pub fn imports_unknown() {
    Tern::new().run(&["run", WAT_IMPORTS_UNKNOWN]).code(1).one_line_error(
        "cannot link the program: it imports `example:text/markup@0.1.0`, which Tern does not provide (function `render`); plug in a component that exports it with `tern compose`",
    );
}

#[test]
pub fn imports_mismatched() {
    Tern::new().run(&["run", WAT_IMPORTS_MISMATCHED]).code(1).one_line_error(
        "cannot link the program: it imports `wasi:cli/environment@0.2.0`, which Tern provides with different types (function `get-arguments`): results: Tern's is `list`, the component's is `u32`; build against the WIT Tern ships (see `wit/` and the WASI 0.2 packages)",
    );
}

#[test]
fn missing_file() {
    Tern::new()
        .run(&["run", "/no/such/program.wasm"])
        .code(1)
        .one_line_error("cannot read `/no/such/program.wasm`");
}

#[test]
fn malformed_and_truncated_modules() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let hello = fs::read(P1_HELLO).unwrap();
    let cases: [(&str, Vec<u8>, &str); 8] = [
        (
            "garbage.wasm",
            vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0x00],
            "not a WebAssembly binary, .wat text or tern artifact",
        ),
        // Text that is not WAT says so, not what the WAT parser expected.
        (
            "script.sh",
            b"#!/bin/sh\necho hello\n".to_vec(),
            "not a WebAssembly binary, .wat text or tern artifact",
        ),
        (
            "README.md",
            b"# Notes\n\n(module) is how WAT starts\n".to_vec(),
            "not a WebAssembly binary, .wat text or tern artifact",
        ),
        (
            "empty.wasm",
            Vec::new(),
            "not a WebAssembly binary, .wat text or tern artifact",
        ),
        (
            "header.wasm",
            b"\0asm\x01".to_vec(),
            "truncated WebAssembly header",
        ),
        (
            "truncated.wasm",
            hello[..hello.len() / 2].to_vec(),
            "unexpected end-of-file",
        ),
        (
            "bad.wat",
            b"(module (func $f (result i32) i64.const 1))".to_vec(),
            "type mismatch",
        ),
        ("syntax.wat", b"(module (func".to_vec(), "expected"),
    ];
    let not_wasm = "not a WebAssembly binary, .wat text or tern artifact";
    for (name, bytes, message) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let out = tern.run(&["run", path.to_str().unwrap()]);
        out.code(1);
        assert!(
            out.stderr.starts_with("error: cannot run `"),
            "{name}: {out:?}"
        );
        if message == not_wasm {
            out.one_line_error(&format!(
                "error: cannot run `{}`: {not_wasm}",
                path.display()
            ));
        }
        assert!(out.stderr.contains(message), "{name}: {out:?}");
    }
    // WAT may open with comments.
    let commented = dir.path().join("commented.wat");
    fs::write(
        &commented,
        ";; exits 7\n(; a block comment ;)\n(module\n  (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n  (memory (export \"memory\") 1)\n  (func (export \"_start\") i32.const 7 call $exit))\n",
    )
    .unwrap();
    tern.run(&["run", commented.to_str().unwrap()]).code(7);
}

#[test]
fn usage_errors_exit_2() {
    let tern = Tern::new();
    let out = tern.run(&["run", "--no-such-flag", P1_HELLO]);
    out.code(2);
    assert!(
        out.stderr.contains("unexpected argument '--no-such-flag'"),
        "{out:?}"
    );
    tern.run(&["run"]).code(2);
    let help = tern.run(&["run", "--help"]);
    help.code(0);
    for flag in [
        "--dir",
        "--dir-ro",
        "--env",
        "--allow-net",
        "--max-memory",
        "--timeout",
        "--fuel",
        "--max-stack",
        "--invoke",
        "--backtrace",
        "--no-cache",
    ] {
        assert!(help.stdout.contains(flag), "help lacks {flag}");
    }
}
