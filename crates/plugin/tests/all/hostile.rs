//! Hostile plugins: each is stopped with a one-line error naming what it
//! ran into, and everyone else keeps being served.

use std::time::Duration;

use tern_plugin::{ByteSize, HostFunctions, Limit, PluginConfig, PluginLimits};

use super::{call, load, with_functions};

fn limited(limits: PluginLimits) -> PluginConfig {
    PluginConfig {
        limits,
        ..PluginConfig::default()
    }
}

#[test]
fn runaway_plugins_stop_at_their_limits() {
    let wasm = test_programs::EXTISM_HOSTILE;
    let fuel = load(
        wasm,
        limited(PluginLimits {
            fuel: Some(5_000_000),
            ..PluginLimits::default()
        }),
    );
    let error = fuel.call("spin", b"").unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Fuel), "{error}");
    assert!(error.message.contains("ran out of fuel"), "{error}");
    assert!(error.report.instructions >= 4_900_000, "{}", error.report);

    let slow = load(
        wasm,
        limited(PluginLimits {
            timeout: Duration::from_millis(200),
            ..PluginLimits::default()
        }),
    );
    let error = slow.call("spin", b"").unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Time), "{error}");
    assert!(error.message.contains("timed out"), "{error}");

    let small = limited(PluginLimits {
        max_memory: ByteSize(32 << 20),
        ..PluginLimits::default()
    });
    let small = load(wasm, small);
    for function in ["spin_alloc", "grow", "huge_output"] {
        let error = small.call(function, b"").unwrap_err();
        assert_eq!(error.limit(), Some(Limit::Memory), "{function}: {error}");
        assert!(
            error.report.peak_memory <= 32 << 20,
            "{function}: {}",
            error.report
        );
    }

    let error = small.call("deep", b"").unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Stack), "{error}");
}

#[test]
fn a_huge_output_is_refused_at_the_output_limit() {
    let plugin = load(
        test_programs::EXTISM_HOSTILE,
        limited(PluginLimits {
            max_memory: ByteSize(1 << 30),
            max_output: ByteSize(1 << 20),
            ..PluginLimits::default()
        }),
    );
    // A 1 GiB block fits no default budget; with one that allows it, the
    // output limit still refuses it.
    let error = plugin.call("huge_output", b"").unwrap_err();
    assert!(
        matches!(error.limit(), Some(Limit::Output | Limit::Memory)),
        "{error}"
    );
    assert!(error.report.output_bytes == 0);

    let echo = load(
        test_programs::EXTISM_CONFIG_VARS,
        limited(PluginLimits {
            max_output: ByteSize(1024),
            max_input: ByteSize(4096),
            ..PluginLimits::default()
        }),
    );
    let error = echo.call("greet", &[b'a'; 2000]).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Output), "{error}");
    let error = echo.call("greet", &[b'a'; 5000]).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Input), "{error}");
    assert_eq!(call(&echo, "greet", b"small"), "Hello, small!");

    // A component's bytes are held to the same limit.
    let component = load(
        test_programs::WAT_INVOKE_COMPONENT,
        limited(PluginLimits {
            max_output: ByteSize(1024),
            ..PluginLimits::default()
        }),
    );
    let error = component.call("echo", &[b'a'; 2000]).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Output), "{error}");
    assert!(
        error.message.contains("above the output limit of 1KiB"),
        "{error}"
    );
    // Past what one crossing may carry, the results are refused while
    // they are lifted, before the host holds them.
    let error = component.call("echo", &vec![b'a'; 2 << 20]).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Output), "{error}");
    assert_eq!(
        error.message,
        "`echo` handed the host more than 1MiB at once (the output limit of 1KiB, 1MiB at least)"
    );
    assert_eq!(call(&component, "echo", b"small"), "small");
}

#[test]
fn bad_pointers_into_the_abi_trap_with_a_clear_error() {
    let plugin = load(test_programs::EXTISM_HOSTILE, PluginConfig::default());
    for (function, says) in [
        ("bad_load", "load_u64"),
        ("bad_output", "output_set"),
        ("bad_store", "store_u8"),
        ("bad_error", "error_set"),
    ] {
        let error = plugin.call(function, b"").unwrap_err();
        assert!(error.message.contains(says), "{function}: {error}");
        assert!(!error.message.contains('\n'), "one line: {error}");
        // An output 1 TiB long is refused before its offset is looked at.
        let limit = (function == "bad_output").then_some(tern_plugin::Limit::Output);
        assert_eq!(error.limit(), limit, "{function}");
    }
    // What is harmless stays harmless: no block there, nothing to free.
    assert_eq!(call(&plugin, "bad_length", b""), "0");
    assert_eq!(call(&plugin, "bad_free", b""), "freed");
}

#[test]
fn a_panicking_host_function_fails_only_its_call() {
    let functions = HostFunctions::new().bytes("extism:host/user", "hello_world", |args| {
        if args[0] == br#"{"count":10}"# {
            panic!("the host function gave up");
        }
        Ok(args[0].clone())
    });
    let plugin = load(
        test_programs::EXTISM_PDK_HOST_FUNCTION,
        with_functions(functions),
    );
    let error = plugin.call("count_vowels", &[b'a'; 10]).unwrap_err();
    assert!(
        error
            .message
            .contains("panicked: the host function gave up"),
        "{error}"
    );
    assert_eq!(call(&plugin, "count_vowels", b"aaa"), r#"{"count":3}"#);
}

#[test]
fn a_plugin_that_always_traps_leaves_the_others_working() {
    let broken = load(test_programs::EXTISM_FAIL, PluginConfig::default());
    let good = load(
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        PluginConfig::default(),
    );
    std::thread::scope(|s| {
        let traps = s.spawn(|| {
            for _ in 0..50 {
                let error = broken.call("trap", b"").unwrap_err();
                assert!(error.message.contains("unreachable"), "{error}");
            }
        });
        for _ in 0..50 {
            assert_eq!(call(&good, "count_vowels", b"aeiou"), r#"{"count":5}"#);
        }
        traps.join().unwrap();
    });
}
