//! Running programs: output, argv, stdin, exit codes, formats.

use crate::support::{CANARY, Tern};
use test_programs::*;

#[test]
pub fn hello() {
    let tern = Tern::new();
    for program in [P1_HELLO, P2_HELLO] {
        tern.run(&["run", program])
            .code(0)
            .stdout("hello from wasm\n");
    }
}

#[test]
pub fn args() {
    let tern = Tern::new();
    for program in [P1_ARGS, P2_ARGS] {
        tern.run(&["run", program, "one", "--two", "-3", "four five"])
            .code(0)
            .stdout("args.wasm\none\n--two\n-3\nfour five\n");
    }
}

#[test]
pub fn stdin_upper() {
    let tern = Tern::new();
    for program in [P1_STDIN_UPPER, P2_STDIN_UPPER] {
        let out = tern.run_with_stdin(&["run", program], "quiet input\n");
        out.code(0)
            .stdout("QUIET INPUT\n")
            .stderr_has("read 12 bytes");
    }
}

#[test]
pub fn exit_code() {
    let tern = Tern::new();
    tern.run(&["run", P1_EXIT_CODE, "3"])
        .code(3)
        .stdout("exiting with 3\n");
    // A guest's own status comes without an `error:` line, even where it is
    // one of Tern's (124 is --timeout's).
    for code in ["124", "125"] {
        let out = tern.run(&["run", P1_EXIT_CODE, code]);
        out.code(code.parse().unwrap())
            .stdout(&format!("exiting with {code}\n"))
            .stderr("");
    }
    // WASI preview 1 stops at 125 (126 and up would pass for a shell's or a
    // signal's status, Tern's 134 among them): one line, exit 1, never a
    // code that wraps to 0.
    for code in ["126", "134", "256", "-1"] {
        tern.run(&["run", P1_EXIT_CODE, code])
            .code(1)
            .stdout(&format!("exiting with {code}\n"))
            .one_line_error(&format!(
                "error: the guest exited with status {code}, but a WASI preview 1 exit status is 0 to 125"
            ));
    }
    // Rust's wasip2 std reports only success or failure through wasi:cli/exit.
    tern.run(&["run", P2_EXIT_CODE, "3"])
        .code(1)
        .stdout("exiting with 3\n");
    for program in [P1_EXIT_CODE, P2_EXIT_CODE] {
        tern.run(&["run", program, "0"]).code(0);
    }
}

#[test]
pub fn exit_wat() {
    Tern::new().run(&["run", WAT_EXIT_WAT]).code(7).stdout("");
}

#[test]
pub fn env() {
    let tern = Tern::new();
    for program in [P1_ENV, P2_ENV] {
        // The host has CANARY set; the guest sees nothing without a grant.
        tern.run(&["run", program]).code(0).stdout("count=0\n");
        let out = tern.run(&[
            "run",
            "--env",
            "GREETING=hi there",
            "--env",
            CANARY.0,
            "--env",
            "UNSET_ON_HOST",
            program,
        ]);
        out.code(0).stdout(&format!(
            "GREETING=hi there\n{}={}\ncount=2\n",
            CANARY.0, CANARY.1
        ));
    }
}
