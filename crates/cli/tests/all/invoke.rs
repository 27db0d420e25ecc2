//! `--invoke`: calling one exported function with arguments from the
//! command line, the plugin/UDF case.

use crate::support::Tern;
use test_programs::*;

#[test]
pub fn calc() {
    let tern = Tern::new();
    for (func, args, printed) in [
        ("add", &["2", "40"][..], "42\n"),
        ("add", &["-5", "3"], "-2\n"),
        ("mul64", &["4294967296", "3"], "12884901888\n"),
        ("hypot", &["3", "4"], "5\n"),
        ("divmod", &["17", "5"], "3\n2\n"),
        ("nothing", &[], ""),
    ] {
        let mut argv = vec!["run", "--invoke", func, WAT_CALC];
        argv.extend(args);
        tern.run(&argv).code(0).stdout(printed);
    }
}

#[test]
fn invoke_errors_name_the_problem() {
    let tern = Tern::new();
    tern.run(&["run", "--invoke", "add", WAT_CALC, "1"])
        .code(1)
        .one_line_error("function `add` takes 2 argument(s) (i32, i32), but 1 were given");
    tern.run(&["run", "--invoke", "add", WAT_CALC, "1", "two"])
        .code(1)
        .one_line_error("argument `two` is not a valid i32");
    tern.run(&["run", "--invoke", "sub", WAT_CALC])
        .code(1)
        .one_line_error("module has no exported function `sub`; exported functions: add, mul64, hypot, divmod, nothing, boom");
    tern.run(&["run", "--invoke", "boom", WAT_CALC])
        .code(134)
        .stderr_has("error: guest trapped: wasm `unreachable` instruction executed");
    tern.run(&["run", "--invoke", "run", P2_HELLO])
        .code(1)
        .one_line_error("--invoke calls functions of core modules");
    // A library module has no `_start`: say what to do instead.
    tern.run(&["run", WAT_CALC])
        .code(1)
        .one_line_error("module has no `_start` export, so it is not a command");
}
