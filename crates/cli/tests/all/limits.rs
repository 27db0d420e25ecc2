//! Each limit stops the guest and names itself; the host survives.

use crate::support::Tern;
use test_programs::*;

#[test]
pub fn spin() {
    let tern = Tern::new();
    for program in [P1_SPIN, P2_SPIN] {
        tern.run(&["run", "--timeout", "300ms", program])
            .code(124)
            .stdout("spinning\n")
            .one_line_error("guest exceeded its time limit of 300ms");
        tern.run(&["run", "--fuel", "200000", program])
            .code(134)
            .one_line_error("guest ran out of fuel (limit 200000; raise it with --fuel)");
    }
}

#[test]
pub fn sleep() {
    // Blocked in a host call, out of reach of epoch interruption: the
    // deadline thread still ends the run.
    let tern = Tern::new();
    for program in [P1_SLEEP, P2_SLEEP] {
        // 124 and the message are the deadline's: a guest left to sleep
        // would exit 0 after 60 s (and the harness's own deadline is 120 s).
        tern.run(&["run", "--timeout", "300ms", program, "60"])
            .code(124)
            .stdout("sleeping 60s\n")
            .one_line_error("guest exceeded its time limit of 300ms");
        tern.run(&["run", "--timeout", "10s", program, "0"])
            .code(0)
            .stdout("sleeping 0s\nwoke up\n");
    }
}

fn grown_mib(stdout: &str) -> u64 {
    stdout
        .trim()
        .strip_prefix("memory.grow failed at ")
        .and_then(|s| s.strip_suffix(" MiB"))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
pub fn memory_grow() {
    // memory.grow past the limit returns -1, as the spec says; the guest
    // carries on and reports how far it got.
    let tern = Tern::new();
    for program in [P1_MEMORY_GROW, P2_MEMORY_GROW] {
        let out = tern.run(&["run", "--max-memory", "64MiB", program]);
        out.code(0);
        assert!((60..=64).contains(&grown_mib(&out.stdout)), "{out:?}");
    }
    let out = tern.run(&["run", P1_MEMORY_GROW]);
    assert!(
        (1000..=1024).contains(&grown_mib(&out.stdout)),
        "default limit is 1GiB; {out:?}"
    );
}

#[test]
pub fn memory_bomb() {
    let tern = Tern::new();
    for program in [P1_MEMORY_BOMB, P2_MEMORY_BOMB] {
        tern.run(&["run", "--max-memory", "32MiB", program])
            .code(134)
            .stderr_has("error: guest trapped: ")
            .stderr_has("note: the guest asked for ")
            .stderr_has("of memory in all, above the limit of 32MiB (raise it with --max-memory)");
    }
}

#[test]
pub fn big_memory() {
    let tern = Tern::new();
    tern.run(&["run", "--max-memory", "64MiB", WAT_BIG_MEMORY])
        .code(1)
        .one_line_error("needs 125MiB of linear memory to start, above the limit of 64MiB (raise it with --max-memory)");
    tern.run(&["run", "--max-memory", "128MiB", WAT_BIG_MEMORY])
        .code(0);
}

#[test]
pub fn recurse() {
    let tern = Tern::new();
    for program in [P1_RECURSE, P2_RECURSE] {
        // One line, the limit behind it, and where to find the rest.
        tern.run(&["run", program])
            .code(134)
            .stdout("recursing\n")
            .stderr(&format!(
                "error: guest trapped: call stack exhausted\nnote: the wasm stack limit is 512KiB (raise it with --max-stack)\n{}",
                crate::errors::BACKTRACE_NOTE
            ));
        tern.run(&["run", "--backtrace", program])
            .code(134)
            .stderr_has("error: guest trapped: call stack exhausted\nwasm backtrace:\n")
            .stderr_has("deeper")
            .stderr_has("note: the wasm stack limit is 512KiB (raise it with --max-stack)");
        tern.run(&["run", "--max-stack", "64KiB", program])
            .code(134)
            .stderr_has("the wasm stack limit is 64KiB");
    }
}

#[test]
fn bad_limits_are_usage_errors() {
    let tern = Tern::new();
    for (flag, value, message) in [
        ("--timeout", "2", "missing unit"),
        ("--timeout", "0s", "greater than zero"),
        ("--max-memory", "lots", "expected a number"),
        ("--fuel", "lots", "invalid value 'lots'"),
    ] {
        let out = tern.run(&["run", flag, value, P1_HELLO]);
        out.code(2);
        assert!(out.stderr.contains(message), "{flag} {value}: {out:?}");
    }
}

/// A module of `functions` functions, each `depth` blocks deep: a few bytes
/// per block, and Cranelift's time and memory grow with the depth.
fn nested_blocks(functions: usize, depth: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len(), out);
        out.extend_from_slice(payload);
    }
    let mut body = vec![0u8]; // no locals
    body.extend(std::iter::repeat_n([0x02, 0x40], depth).flatten());
    body.extend(std::iter::repeat_n(0x0b, depth + 1));
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    let mut funcs = Vec::new();
    leb(functions, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, functions));
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module);
    section(3, &funcs, &mut module);
    section(7, b"\x01\x06_start\x00\x00", &mut module);
    section(10, &code, &mut module);
    module
}

#[test]
fn compiling_is_bounded_in_size_memory_and_time() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    // 12 MB that took 10 s and 5 GB to compile, unbounded.
    let huge = dir.path().join("huge.wasm");
    std::fs::write(&huge, nested_blocks(2, 2_000_000)).unwrap();
    let huge = huge.to_str().unwrap();
    tern.run(&["run", "--max-module-size", "1MiB", huge])
        .code(1)
        .one_line_error("is 11.4MiB, above the module size limit of 1MiB (--max-module-size)");
    tern.run(&["run", "--no-cache", huge])
        .code(1)
        .one_line_error(
            "compiling needed more memory than the compile memory limit of 2GiB \
             (--max-compile-memory)",
        );
    // About a second of compiling, far more than allowed.
    let slow = dir.path().join("slow.wasm");
    std::fs::write(&slow, nested_blocks(1, 300_000)).unwrap();
    let slow = slow.to_str().unwrap();
    let args = [
        "run",
        "--max-compile-memory",
        "64GiB",
        "--max-compile-time",
        "50ms",
    ];
    tern.run(&[&args[..], &[slow]].concat())
        .code(1)
        .one_line_error(
            "compiling took longer than the compile time limit of 50ms (--max-compile-time)",
        );
    // Within the limits the same module compiles, runs, and is cached.
    tern.run(&["run", "--max-compile-memory", "64GiB", slow])
        .code(0);
    let out = tern.run(&["run", "-v", slow]);
    out.code(0).stderr_has("cache hit");
}
