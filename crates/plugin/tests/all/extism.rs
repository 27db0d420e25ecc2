//! Extism plugins built from published source, on Tern and on the real
//! Extism runtime, compared byte for byte.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tern_plugin::{Grants, HostFunctions, LogLevel, PluginConfig};
use test_programs::extism_reference;

use super::{call, load, with_functions};

/// What the real Extism runtime answers: the output, or its error line.
fn reference(args: &[&str]) -> Result<String, String> {
    let out = extism_reference(args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn hello_world() -> HostFunctions {
    // What extism-pdk's host_function_host example does: count times 10.
    HostFunctions::new().bytes("extism:host/user", "hello_world", |args| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&args[0]).map_err(|e| e.to_string())?;
        let count = value["count"].as_i64().ok_or("no count")?;
        value["count"] = (count * 10).into();
        Ok(serde_json::to_vec(&value).unwrap())
    })
}

#[test]
fn pdk_examples_answer_as_on_extism() {
    let cases: [(&str, &str, &str); 3] = [
        (
            test_programs::EXTISM_PDK_COUNT_VOWELS,
            "count_vowels",
            "Hello, World!",
        ),
        (test_programs::EXTISM_PDK_SUM, "add", r#"{"a":20,"b":22}"#),
        (test_programs::EXTISM_PDK_REFLECT, "nothing", ""),
    ];
    for (wasm, function, input) in cases {
        let plugin = load(wasm, PluginConfig::default());
        let ours = call(&plugin, function, input.as_bytes());
        let theirs = reference(&[wasm, function, "--input", input]).unwrap();
        assert_eq!(ours, theirs, "{function}({input})");
    }
    let plugin = load(
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        PluginConfig::default(),
    );
    assert_eq!(
        call(&plugin, "count_vowels", b"Hello, World!"),
        r#"{"count":3}"#
    );
}

#[test]
fn a_host_function_serves_the_pdk_example_that_imports_it() {
    let config = with_functions(hello_world());
    let plugin = load(test_programs::EXTISM_PDK_HOST_FUNCTION, config);
    let ours = call(&plugin, "count_vowels", b"aaa");
    let theirs = reference(&[
        test_programs::EXTISM_PDK_HOST_FUNCTION,
        "count_vowels",
        "--input",
        "aaa",
        "--host-fn-hello-world",
    ])
    .unwrap();
    assert_eq!(ours, r#"{"count":30}"#);
    assert_eq!(ours, theirs);

    // Without the function, the plugin is refused at load, naming it.
    let error = super::host()
        .load(
            test_programs::EXTISM_PDK_HOST_FUNCTION,
            PluginConfig::default(),
        )
        .err()
        .expect("an unlinkable plugin is refused");
    let text = format!("{error:#}");
    assert!(text.contains("hello_world"), "{text}");
}

#[test]
fn config_and_variables_behave_as_on_extism() {
    let wasm = test_programs::EXTISM_CONFIG_VARS;
    let config = PluginConfig {
        grants: Grants {
            config: [("greeting".to_owned(), "Howdy".to_owned())].into(),
            ..Grants::default()
        },
        ..PluginConfig::default()
    };
    let plugin = load(wasm, config);
    let ours = call(&plugin, "greet", b"Tern");
    assert_eq!(ours, "Howdy, Tern!");
    let theirs = reference(&[
        wasm,
        "greet",
        "--input",
        "Tern",
        "--config",
        "greeting=Howdy",
    ]);
    assert_eq!(Ok(ours), theirs);

    // Nothing granted: the config key is absent.
    let bare = load(wasm, PluginConfig::default());
    assert_eq!(call(&bare, "greet", b"Tern"), "Hello, Tern!");

    // Variables outlive calls (each on a fresh instance here) as they
    // outlive calls on Extism's one instance.
    let ours: Vec<String> = ["count", "count", "unset", "count"]
        .iter()
        .map(|f| call(&bare, f, b""))
        .collect();
    let theirs = reference(&[wasm, "count", "count", "unset", "count"]).unwrap();
    assert_eq!(ours.join("\n"), theirs.trim_end_matches('\n'));
    assert_eq!(ours, ["1", "2", "", "1"]);
}

#[test]
fn a_plugin_error_reaches_the_caller_as_extism_reports_it() {
    let plugin = load(test_programs::EXTISM_FAIL, PluginConfig::default());
    let error = plugin.call("fail", b"boom").unwrap_err();
    assert_eq!(error.message, "plugin failed: boom");
    let theirs = reference(&[test_programs::EXTISM_FAIL, "fail", "--input", "boom"]).unwrap_err();
    assert_eq!(theirs, "error: plugin failed: boom");
    assert_eq!(error.limit(), None);
    assert_eq!(call(&plugin, "ok", b""), "fine");
    let missing = plugin.call("nope", b"").unwrap_err();
    assert!(
        missing.message.contains("no function `nope`"),
        "{}",
        missing.message
    );
    assert!(missing.message.contains("fail"), "{}", missing.message);
}

#[test]
fn logs_are_reported_from_the_level_asked_for() {
    let config = PluginConfig {
        log_level: Some(LogLevel::Info),
        ..PluginConfig::default()
    };
    let plugin = load(test_programs::EXTISM_LOG, config);
    let (output, report) = plugin.call("log_input", b"note").unwrap();
    assert_eq!(output, b"note");
    let levels: Vec<LogLevel> = report.logs.iter().map(|l| l.level).collect();
    assert_eq!(levels, [LogLevel::Info, LogLevel::Warn, LogLevel::Error]);
    assert!(report.logs.iter().all(|l| l.message.contains("note")));
    assert_eq!(
        report.log_bytes,
        report
            .logs
            .iter()
            .map(|l| l.message.len() as u64)
            .sum::<u64>()
    );

    // Off by default, as on Extism: the PDK then does not even call in.
    let quiet = load(test_programs::EXTISM_LOG, PluginConfig::default());
    let (_, report) = quiet.call("log_input", b"note").unwrap();
    assert!(report.logs.is_empty());
    assert_eq!(report.log_bytes, 0);
}

/// A one-connection-at-a-time HTTP server answering every request with
/// `body`, counting the connections it accepted.
fn upstream(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut request_body = vec![0; length];
            let _ = reader.read_exact(&mut request_body);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream: yes\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (port, accepted)
}

fn plugin_grants(allowed: &str) -> Grants {
    Grants {
        allowed_hosts: Grants::parse_host(allowed).unwrap(),
        ..Grants::default()
    }
}

#[test]
fn http_requests_go_only_where_the_grants_allow() {
    let (port, accepted) = upstream("hello from upstream");
    let request =
        format!(r#"{{"url":"http://127.0.0.1:{port}/greeting","headers":{{}},"method":"GET"}}"#);

    let denied = load(test_programs::EXTISM_PDK_HTTP, PluginConfig::default());
    let error = denied.call("http_get", request.as_bytes()).unwrap_err();
    assert!(error.message.contains("denied"), "{}", error.message);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a denied request must not connect"
    );

    let allowed = format!("http://127.0.0.1:{port}");
    let config = PluginConfig {
        grants: plugin_grants(&allowed),
        ..PluginConfig::default()
    };
    let plugin = load(test_programs::EXTISM_PDK_HTTP, config);
    let ours = call(&plugin, "http_get", request.as_bytes());
    assert_eq!(ours, "hello from upstream");
    let theirs = reference(&[
        test_programs::EXTISM_PDK_HTTP,
        "http_get",
        "--input",
        &request,
        "--allow-host",
        "127.0.0.1",
    ]);
    assert_eq!(Ok(ours), theirs);

    // The response's headers, as Extism gives them when a host opts in.
    let headers = load(
        test_programs::EXTISM_PDK_HTTP_HEADERS,
        PluginConfig {
            grants: plugin_grants(&allowed),
            ..PluginConfig::default()
        },
    );
    let ours = call(&headers, "http_get", request.as_bytes());
    assert!(ours.contains(r#""x-upstream":"yes""#), "{ours}");
    let theirs = reference(&[
        test_programs::EXTISM_PDK_HTTP_HEADERS,
        "http_get",
        "--input",
        &request,
        "--allow-host",
        "127.0.0.1",
        "--allow-http-response-headers",
    ]);
    assert_eq!(Ok(ours), theirs);

    // Another port of the same host is not granted.
    let (other, other_accepted) = upstream("nope");
    let elsewhere = request.replace(&port.to_string(), &other.to_string());
    assert!(plugin.call("http_get", elsewhere.as_bytes()).is_err());
    assert_eq!(other_accepted.load(Ordering::SeqCst), 0);

    // Extism's bare host matches the host alone, on any port.
    let bare = load(
        test_programs::EXTISM_PDK_HTTP,
        PluginConfig {
            grants: plugin_grants("127.0.0.1"),
            ..PluginConfig::default()
        },
    );
    assert_eq!(call(&bare, "http_get", elsewhere.as_bytes()), "nope");
    let theirs = reference(&[
        test_programs::EXTISM_PDK_HTTP,
        "http_get",
        "--input",
        &elsewhere,
        "--allow-host",
        "127.0.0.1",
    ]);
    assert_eq!(theirs.as_deref(), Ok("nope"));
}

#[test]
fn a_wasi_plugin_sees_only_what_it_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let config = PluginConfig {
        grants: Grants {
            env: vec![("GREETING".to_owned(), "hi".to_owned())],
            dirs: vec![
                tern_plugin::DirGrant::parse(&format!("{}::/data", dir.path().display()), true)
                    .unwrap(),
            ],
            ..Grants::default()
        },
        log_level: Some(LogLevel::Info),
        ..PluginConfig::default()
    };
    let plugin = load(test_programs::EXTISM_WASI, config);
    let (output, report) = plugin.call("env_and_files", b"").unwrap();
    let text = String::from_utf8(output).unwrap();
    assert!(text.contains("\"hi\""), "{text}");
    assert!(text.contains("notes.txt"), "{text}");
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message.contains("hello from stdout")),
        "{:?}",
        report.logs
    );

    let bare = load(test_programs::EXTISM_WASI, PluginConfig::default());
    let text = call(&bare, "env_and_files", b"");
    assert!(!text.contains("\"hi\""), "{text}");
    assert!(!text.contains("notes.txt"), "{text}");
}

#[test]
fn an_upstream_that_never_answers_stops_at_the_timeout() {
    // Accepts connections and never reads or writes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let allowed = format!("http://127.0.0.1:{port}");
    let plugin = load(
        test_programs::EXTISM_PDK_HTTP,
        PluginConfig {
            grants: plugin_grants(&allowed),
            limits: tern_plugin::PluginLimits {
                timeout: std::time::Duration::from_millis(300),
                ..Default::default()
            },
            ..PluginConfig::default()
        },
    );
    let request = format!(r#"{{"url":"{allowed}/","headers":{{}},"method":"GET"}}"#);
    let error = plugin.call("http_get", request.as_bytes()).unwrap_err();
    assert_eq!(error.limit(), Some(tern_plugin::Limit::Time), "{error}");
    assert_eq!(error.message, "`http_get` timed out after 300ms");
    // The plugin and the host go on serving.
    let counter = load(
        test_programs::EXTISM_PDK_COUNT_VOWELS,
        PluginConfig::default(),
    );
    assert_eq!(call(&counter, "count_vowels", b"ai"), r#"{"count":2}"#);
}
