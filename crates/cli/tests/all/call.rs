//! `tern call`: plugins called from the command line, as `extism call`.

use std::process::Command;

fn tern_call(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("call")
        .args(args)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("tern-call-tests"),
        )
        .output()
        .unwrap()
}

#[test]
fn an_extism_plugin_answers_on_stdout() {
    let out = tern_call(&[
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        "count_vowels",
        "--input",
        "Hello, World!",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, br#"{"count":3}"#);
    assert!(out.stderr.is_empty());
}

#[test]
fn verbose_prints_the_report_and_config_reaches_the_plugin() {
    let out = tern_call(&[
        "-v",
        "--config",
        "greeting=Howdy",
        test_programs::EXTISM_CONFIG_VARS,
        "greet",
        "--input",
        "Tern",
    ]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"Howdy, Tern!");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("report: instructions: "), "{stderr}");
    assert!(stderr.contains("input: 4 B, output: 12 B"), "{stderr}");
}

#[test]
fn input_comes_from_a_file_and_loops_share_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "aeiou").unwrap();
    let at = format!("@{}", file.display());
    let out = tern_call(&[
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        "count_vowels",
        "--input",
        &at,
    ]);
    assert_eq!(out.stdout, br#"{"count":5}"#);
    let out = tern_call(&["--loop", "3", test_programs::EXTISM_SESSION, "incr"]);
    assert_eq!(out.stdout, b"1\n2\n3\n");
}

#[test]
fn limits_stop_a_call_with_their_exit_codes() {
    let out = tern_call(&["--timeout", "200ms", test_programs::EXTISM_HOSTILE, "spin"]);
    assert_eq!(out.status.code(), Some(124));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim(), "error: `spin` timed out after 200ms");

    let out = tern_call(&[
        "--fuel",
        "1000000",
        "-v",
        test_programs::EXTISM_HOSTILE,
        "spin",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("stopped by the fuel limit"), "{stderr}");

    let out = tern_call(&[test_programs::EXTISM_FAIL, "fail", "--input", "boom"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim(),
        "error: plugin failed: boom"
    );
}

#[test]
fn components_and_plain_modules_are_called_too() {
    let out = tern_call(&[test_programs::WAT_CALC, "add", "--input", "2 40"]);
    assert_eq!(out.stdout, b"42");
    let out = tern_call(&[
        test_programs::WAT_INVOKE_COMPONENT,
        "greet",
        "--input",
        "tern",
    ]);
    assert_eq!(out.stdout, b"hello, tern");
    let out = tern_call(&["--log-level", "loud", test_programs::WAT_CALC, "add"]);
    assert_eq!(out.status.code(), Some(2));
}
