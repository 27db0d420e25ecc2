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
    // The `name(args)` form is WAVE, for components only.
    tern.run(&["run", "--invoke", "add(1, 2)", WAT_CALC])
        .code(1)
        .one_line_error("the `name(arg, ...)` form is for components");
    // A library module has no `_start`: say what to do instead.
    tern.run(&["run", WAT_CALC])
        .code(1)
        .one_line_error("module has no `_start` export, so it is not a command");
}

/// A component's functions take and return WAVE: in one `name(args)`
/// string, or with each argument after the file.
#[test]
pub fn invoke_component() {
    let tern = Tern::new();
    for (call, args, printed) in [
        ("add", &["2", "40"][..], "42\n"),
        ("add(2, 40)", &[], "42\n"),
        ("is-even(7)", &[], "false\n"),
        ("greet(\"world\")", &[], "\"hello, world\"\n"),
        ("greet", &["\"two\\nlines\""], "\"hello, two\\nlines\"\n"),
        ("swap({x: 1, y: -2})", &[], "{x: -2, y: 1}\n"),
        ("swap", &["{y: 5, x: 3}"], "{x: 5, y: 3}\n"),
        ("nothing()", &[], ""),
        ("nothing", &[], ""),
        // An interface's function by its full name, or by its bare name
        // when no other interface has one of that name.
        ("example:calc/ops#mul(6, 7)", &[], "42\n"),
        ("mul", &["6", "7"], "42\n"),
        ("example:calc/ops#neg", &["5"], "-5\n"),
        (
            "example:calc/wide#neg(1099511627776)",
            &[],
            "-1099511627776\n",
        ),
    ] {
        let mut argv = vec!["run", "--invoke", call, WAT_INVOKE_COMPONENT];
        argv.extend(args);
        tern.run(&argv).code(0).stdout(printed);
    }
    // A command's `run` is a function like any other; an interface named
    // without its version (`wasi:cli/run@0.2.x`) is found.
    tern.run(&["run", "--invoke", "wasi:cli/run#run()", P2_HELLO])
        .code(0)
        .stdout("hello from wasm\nok\n");
}

#[test]
fn invoke_component_errors_name_the_problem() {
    let tern = Tern::new();
    let invoke = |call: &str, args: &[&str]| {
        let mut argv = vec!["run", "--invoke", call, WAT_INVOKE_COMPONENT];
        argv.extend(args);
        tern.run(&argv)
    };
    // An argument that is not WAVE for its parameter's type.
    invoke("add", &["1", "two"])
        .code(1)
        .one_line_error("argument `two` for parameter `b` is not a valid u32: invalid value type");
    invoke("add(1, -1)", &[])
        .code(1)
        .one_line_error("argument `-1` for parameter `b` is not a valid u32: invalid value");
    invoke("swap({x: 1, y: true})", &[]).code(1).one_line_error(
        "argument `{x: 1, y: true}` for parameter `p` is not a valid record { x: s32, y: s32 }: invalid value type at `true`",
    );
    invoke("greet", &["world"]).code(1).one_line_error(
        "argument `world` for parameter `name` is not a valid string: invalid value type (a WAVE string is quoted: \"world\")",
    );
    invoke("add(1, 2", &[])
        .code(1)
        .one_line_error("cannot read the arguments of `add(1, 2` as WAVE: unexpected end of input");
    // Too few or too many arguments.
    invoke("add", &["1"])
        .code(1)
        .one_line_error("function `add` takes 2 argument(s) (a: u32, b: u32), but 1 were given");
    invoke("add(1, 2, 3)", &[])
        .code(1)
        .one_line_error("function `add` takes 2 argument(s) (a: u32, b: u32), but 3 were given");
    invoke("add(1, 2)", &["3"])
        .code(1)
        .one_line_error("gives its arguments in parentheses, so none may follow the file (got 1)");
    // A function the component does not have: the list says what it has.
    invoke("sub(1, 2)", &[])
        .code(1)
        .one_line_error(
            "component has no exported function `sub`; exported functions: `add(a: u32, b: u32) -> u32`, `is-even(n: u32) -> bool`, `greet(name: string) -> string`, `swap(p: record { x: s32, y: s32 }) -> record { x: s32, y: s32 }`, `nothing()`, `boom()`, `spin()`, `echo(data: list<u8>) -> list<u8>`, `example:calc/ops#mul(a: u32, b: u32) -> u32`, `example:calc/ops#neg(x: s32) -> s32`, `example:calc/wide#neg(x: s64) -> s64`",
        );
    invoke("neg", &["5"]).code(1).one_line_error(
        "more than one interface exports `neg` (`example:calc/ops#neg`, `example:calc/wide#neg`); give the full name",
    );
    // The guest's own failures, and the limits, are as for a command.
    invoke("boom()", &[])
        .code(134)
        .stderr_has("error: guest trapped: wasm `unreachable` instruction executed");
    tern.run(&[
        "run",
        "--fuel",
        "100000",
        "--invoke",
        "spin",
        WAT_INVOKE_COMPONENT,
    ])
    .code(134)
    .one_line_error("guest ran out of fuel (limit 100000; raise it with --fuel)");
}
