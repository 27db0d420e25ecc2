//! The embedding API: reports, sessions, many threads, hot swap, and the
//! two other shapes of plugin (components and plain modules).

use std::sync::mpsc;

use tern_plugin::{ComponentVal, Grants, HostFunctions, PluginConfig, PluginKind, Val};

use super::{call, host, load, with_functions};

#[test]
fn a_call_reports_what_it_cost() {
    let plugin = load(
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        PluginConfig::default(),
    );
    assert_eq!(plugin.kind(), PluginKind::Extism);
    assert!(plugin.functions().contains(&"count_vowels".to_owned()));
    let (output, report) = plugin.call("count_vowels", b"Hello, World!").unwrap();
    assert_eq!(output, br#"{"count":3}"#);
    assert!(report.instructions > 100, "{report}");
    assert!(report.peak_memory >= 64 << 10, "{report}");
    assert_eq!(report.input_bytes, 13);
    assert_eq!(report.output_bytes, 11);
    assert_eq!(report.stopped_by, None);
    // Longer input, more instructions.
    let (_, longer) = plugin.call("count_vowels", &[b'a'; 4096]).unwrap();
    assert!(
        longer.instructions > report.instructions,
        "{longer} vs {report}"
    );
}

#[test]
fn a_session_keeps_its_instance_and_a_call_does_not() {
    let plugin = load(test_programs::EXTISM_SESSION, PluginConfig::default());
    assert_eq!(call(&plugin, "incr", b""), "1");
    assert_eq!(call(&plugin, "incr", b""), "1");
    let mut session = plugin.session().unwrap();
    let counts: Vec<Vec<u8>> = (0..3)
        .map(|_| session.call("incr", b"").unwrap().0)
        .collect();
    assert_eq!(counts, [b"1", b"2", b"3"]);
    let mut other = plugin.session().unwrap();
    assert_eq!(other.call("incr", b"").unwrap().0, b"1");
}

#[test]
fn a_long_session_holds_its_memory_steady() {
    // `greet` makes three blocks a call: the configuration key, its value
    // and the output. Each call of a session lays them over the last
    // call's, so the memory a session holds does not grow with its calls.
    let config = PluginConfig {
        grants: Grants {
            config: [("greeting".to_owned(), "Howdy".to_owned())].into(),
            ..Grants::default()
        },
        ..PluginConfig::default()
    };
    let plugin = load(test_programs::EXTISM_CONFIG_VARS, config);
    let mut session = plugin.session().unwrap();
    let mut peaks = Vec::new();
    for _ in 0..2000 {
        let (output, report) = session.call("greet", b"Tern").unwrap();
        assert_eq!(output, b"Howdy, Tern!");
        peaks.push(report.peak_memory);
    }
    assert_eq!(peaks[1], peaks[1999], "the session's memory crept upwards");
}

#[test]
fn many_threads_call_one_plugin_at_once() {
    let plugin = load(
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        PluginConfig::default(),
    );
    std::thread::scope(|s| {
        for n in 0..4usize {
            let plugin = &plugin;
            s.spawn(move || {
                let input = "ae".repeat(n + 1);
                let expected = format!(r#"{{"count":{}}}"#, 2 * (n + 1));
                for _ in 0..50 {
                    assert_eq!(call(plugin, "count_vowels", input.as_bytes()), expected);
                }
            });
        }
    });
}

#[test]
fn async_callers_get_the_same_answers() {
    let plugin = load(
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        PluginConfig::default(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (output, _) = runtime
        .block_on(plugin.call_async("count_vowels", b"Tern".to_vec()))
        .unwrap();
    assert_eq!(output, br#"{"count":1}"#);

    let functions = HostFunctions::new().bytes_async("extism:host/user", "hello_world", |args| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(args[0].clone())
        })
    });
    let plugin = load(
        test_programs::EXTISM_PDK_HOST_FUNCTION,
        with_functions(functions),
    );
    assert_eq!(call(&plugin, "count_vowels", b"aaa"), r#"{"count":3}"#);
}

#[test]
fn a_swap_lets_calls_in_flight_finish_on_the_old_code() {
    // The old version waits inside its host function until told to go on.
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let functions = HostFunctions::new().bytes("extism:host/user", "hello_world", move |args| {
        entered_tx.send(()).unwrap();
        go_rx.lock().unwrap().recv().unwrap();
        Ok(args[0].clone())
    });
    let plugin = load(
        test_programs::EXTISM_PDK_HOST_FUNCTION,
        with_functions(functions),
    );
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| call(&plugin, "count_vowels", b"aaaa"));
        entered.recv().unwrap();

        // Code that does not load or link is refused; the old keeps going.
        assert!(plugin.swap_bytes(b"not wasm".to_vec()).is_err());
        let unlinkable = wat::parse_str(r#"(module (import "nowhere" "f" (func)) (func (export "count_vowels") (result i32) i32.const 0))"#).unwrap();
        let error = plugin.swap_bytes(unlinkable).unwrap_err();
        assert!(format!("{error:#}").contains("nowhere"), "{error:#}");
        assert_eq!(plugin.version(), 1);

        plugin.swap(test_programs::EXTISM_PDK_COUNT_VOWELS).unwrap();
        assert_eq!(plugin.version(), 2);
        // The new code answers at once, while the old call still waits.
        assert_eq!(call(&plugin, "count_vowels", b"ee"), r#"{"count":2}"#);
        go.send(()).unwrap();
        assert_eq!(in_flight.join().unwrap(), r#"{"count":4}"#);
    });
}

#[test]
fn components_take_typed_values_or_bytes() {
    let plugin = load(test_programs::WAT_INVOKE_COMPONENT, PluginConfig::default());
    assert_eq!(plugin.kind(), PluginKind::Component);
    assert_eq!(call(&plugin, "greet", b"plugin"), "hello, plugin");
    assert_eq!(call(&plugin, "add", b"2, 40"), "42");
    let bytes: Vec<u8> = (0..=255).cycle().take(2000).collect();
    let (echoed, report) = plugin.call("echo", &bytes).unwrap();
    assert_eq!(echoed, bytes);
    assert_eq!(report.output_bytes, 2000);
    let (results, report) = plugin
        .call_values("add", &[ComponentVal::U32(1), ComponentVal::U32(2)])
        .unwrap();
    assert_eq!(results, [ComponentVal::U32(3)]);
    assert!(report.instructions > 0);
    let quick = PluginConfig {
        limits: tern_plugin::PluginLimits {
            timeout: std::time::Duration::from_millis(200),
            ..Default::default()
        },
        ..PluginConfig::default()
    };
    let plugin = load(test_programs::WAT_INVOKE_COMPONENT, quick);
    let error = plugin.call("spin", b"").expect_err("spin is stopped");
    assert_eq!(error.limit(), Some(tern_plugin::Limit::Time));
}

#[test]
fn plain_modules_take_numbers() {
    let plugin = load(test_programs::WAT_CALC, PluginConfig::default());
    assert_eq!(plugin.kind(), PluginKind::Core);
    assert_eq!(call(&plugin, "add", b"2 40"), "42");
    let (results, _) = plugin
        .call_numbers("add", &[Val::I32(5), Val::I32(6)])
        .unwrap();
    assert_eq!(results[0].i32(), Some(11));
    let error = plugin.call("add", b"1").unwrap_err();
    assert!(error.message.contains("takes 2 number(s)"), "{error}");
}

#[test]
fn loading_garbage_is_one_clear_error() {
    for bytes in [&b"not wasm"[..], b"\0asm\x01\0\0\0\x05garbage"] {
        let error = host()
            .load_bytes(bytes.to_vec(), PluginConfig::default())
            .err()
            .unwrap();
        let text = format!("{error:#}");
        assert!(!text.is_empty() && !text.contains("panicked"), "{text}");
    }
}

/// A component importing `double: func(x: u32) -> u32` and exporting
/// `quad`, which calls it twice.
const QUAD: &str = r#"(component
  (import "double" (func $double (param "x" u32) (result u32)))
  (core func $lowered (canon lower (func $double)))
  (core module $m
    (import "host" "double" (func $d (param i32) (result i32)))
    (func (export "quad") (param i32) (result i32)
      (call $d (call $d (local.get 0)))))
  (core instance $i (instantiate $m (with "host" (instance (export "double" (func $lowered))))))
  (func (export "quad") (param "x" u32) (result u32) (canon lift (core func $i "quad"))))"#;

#[test]
fn components_import_typed_host_functions_sync_or_async() {
    let double = |args: &[ComponentVal]| match args {
        [ComponentVal::U32(x)] => Ok(vec![ComponentVal::U32(x * 2)]),
        other => Err(format!("unexpected arguments {other:?}")),
    };
    let sync = HostFunctions::new().typed("", "double", double);
    let asynchronous = HostFunctions::new().typed_async("", "double", move |args| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            double(&args)
        })
    });
    for functions in [sync, asynchronous] {
        let config = with_functions(functions);
        let plugin = host()
            .load_bytes(wat::parse_str(QUAD).unwrap(), config)
            .unwrap();
        let (results, _) = plugin.call_values("quad", &[ComponentVal::U32(3)]).unwrap();
        assert_eq!(results, [ComponentVal::U32(12)]);
        assert_eq!(call(&plugin, "quad", b"5"), "20");
    }
    // Without the function the component does not link, and says what
    // it misses.
    let error = host()
        .load_bytes(wat::parse_str(QUAD).unwrap(), PluginConfig::default())
        .err()
        .unwrap();
    assert!(format!("{error:#}").contains("double"), "{error:#}");
}
