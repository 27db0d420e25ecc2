//! `tern serve` stops before listening, with one line naming the file, line
//! and key, when the app cannot be served. (Every manifest mistake has a
//! data-driven case in `crates/manifest/tests`; these check that the CLI
//! reports them and the ones only the engine can find.)

use test_programs::*;

use crate::serving::{Part, manifest, write_app};
use crate::support::{Output, Tern};

fn serve(tern: &Tern, toml: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), toml);
    let path = dir.path().join("tern.toml");
    let out = tern.run(&["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    (out, dir)
}

#[test]
fn manifest_errors_stop_before_listening() {
    let tern = Tern::new();
    let hello = |extra| {
        manifest(&[Part {
            route: "/hello",
            id: "hello",
            source: HTTP_HELLO,
            extra,
        }])
    };
    let cases: Vec<(String, &str)> = vec![
        (hello("colour = \"blue\""), ":12:1: unknown key `colour`"),
        (
            hello("").replace("manifest_version = 1", "manifest_version = 2"),
            ":1:1: manifest_version: unsupported version 2",
        ),
        (
            hello("").replace(HTTP_HELLO, "missing.wasm"),
            ":11:1: component.hello.source: file not found",
        ),
        (
            hello("").replace("component = \"hello\"", "component = \"nobody\""),
            "route[1].component: no component named \"nobody\"",
        ),
        (
            manifest(&[
                Part {
                    route: "/a",
                    id: "a",
                    source: HTTP_HELLO,
                    extra: "",
                },
                Part {
                    route: "/a",
                    id: "b",
                    source: HTTP_HELLO,
                    extra: "",
                },
            ]),
            "route[2].path: duplicate route \"/a\"",
        ),
        // A command component has no incoming-handler to call.
        (
            hello("").replace(HTTP_HELLO, P2_HELLO),
            "component.hello: hello.wasm exports neither `wasi:http/incoming-handler` (WASI 0.2) nor `wasi:http/handler` (WASI 0.3)",
        ),
        (
            hello("executor = \"wasi-http\"").replace(HTTP_HELLO, P1_WAGI_ECHO),
            "component.hello: wagi_echo.wasm is a core module, but the wasi-http executor",
        ),
        (
            hello("executor = \"wagi\""),
            "component.hello: http_hello.wasm is a component, but the wagi executor",
        ),
    ];
    for (toml, expected) in cases {
        let (out, _dir) = serve(&tern, &toml);
        out.code(1).one_line_error(expected);
        assert!(out.stderr.contains("tern.toml:"), "{out:#?}");
        assert!(!out.stderr.contains("listening"), "{out:#?}");
    }
}

#[test]
fn directory_without_manifest() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = tern.run(&["serve", path]);
    out.code(1).one_line_error(&format!(
        "no tern.toml or spin.toml in {path}: make an app there with `tern new http-rust {path}`"
    ));
    // A file that is neither a manifest nor wasm says so.
    let binary = dir.path().join("data.bin");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    tern.run(&["serve", binary.to_str().unwrap()])
        .code(1)
        .one_line_error("neither a tern.toml manifest (not UTF-8 text) nor a WebAssembly binary");
    // A manifest past 1MiB is refused before it is parsed.
    let huge = dir.path().join("tern.toml");
    std::fs::write(&huge, "# padding\n".repeat(110_000)).unwrap();
    tern.run(&["serve", huge.to_str().unwrap()])
        .code(1)
        .one_line_error(&format!(
            "reading manifest {}: a manifest is at most 1MiB",
            huge.display()
        ));
}

#[test]
fn listen_addresses() {
    let tern = Tern::new();
    let out = tern.run(&["serve", "--listen", "nowhere:80", "."]);
    out.code(2)
        .stderr_has("expected IP:PORT (127.0.0.1:3000, [::1]:3000), localhost:PORT or :PORT");
}

#[test]
fn address_in_use() {
    let tern = Tern::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let toml = manifest(&[Part {
        route: "/hello",
        id: "hello",
        source: HTTP_HELLO,
        extra: "",
    }]);
    write_app(dir.path(), &toml);
    let out = tern.run(&["serve", dir.path().to_str().unwrap(), "--listen", &addr]);
    out.code(1)
        .one_line_error(&format!("cannot listen on {addr}"));
}

#[test]
fn a_component_over_the_module_size_limit_stops_before_compiling() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let toml = manifest(&[Part {
        route: "/hello",
        id: "hello",
        source: HTTP_HELLO,
        extra: "",
    }]);
    write_app(dir.path(), &toml);
    let path = dir.path().join("tern.toml");
    let path = path.to_str().unwrap();
    let args = [
        "serve",
        path,
        "--listen",
        "127.0.0.1:0",
        "--max-module-size",
        "1KiB",
    ];
    tern.run(&args)
        .code(1)
        .one_line_error("component.hello: ")
        .stderr_has("above the module size limit of 1KiB (--max-module-size)");
}

/// A memory limit below what a component declares is found before it is
/// compiled, and reads like `tern run`'s, naming the component and both
/// sizes: not a pool error after the compile, nor a 500 on every request.
#[test]
fn a_memory_limit_below_what_a_component_declares_stops_tern_before_compiling() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let big = manifest(&[Part {
        route: "/big",
        id: "big",
        source: WAT_BIG_MEMORY,
        extra: "",
    }]);
    write_app(dir.path(), &big);
    let app = dir.path().to_str().unwrap();
    let out = tern.run(&[
        "serve",
        app,
        "--max-memory",
        "64MiB",
        "--listen",
        "127.0.0.1:0",
    ]);
    out.code(1).one_line_error(
        "tern.toml:11:1: component.big: big_memory.wat needs 125MiB of linear memory to start, above its memory limit of 64MiB (raise it with --max-memory, or with `memory` under [component.big.limits])",
    );
    tern.run(&["run", "--max-memory", "64MiB", WAT_BIG_MEMORY])
        .code(1)
        .one_line_error("needs 125MiB of linear memory to start, above the limit of 64MiB (raise it with --max-memory)");

    // A component's own limit, below what it declares, while another's
    // makes the pool large enough: refused at start, before the first
    // component is compiled (nothing reaches the compile cache).
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let two = manifest(&[
        Part {
            route: "/a",
            id: "a-small",
            source: HTTP_HELLO,
            extra: "[component.a-small.limits]\nmemory = \"64KiB\"",
        },
        Part {
            route: "/b",
            id: "b",
            source: HTTP_HELLO,
            extra: "",
        },
    ]);
    write_app(dir.path(), &two);
    let app = dir.path().to_str().unwrap();
    let out = tern.run(&["serve", app, "--listen", "127.0.0.1:0"]);
    out.code(1)
        .one_line_error("component.a-small: http_hello.wasm needs ")
        .stderr_has(
            " of linear memory to start, above its memory limit of 64KiB (raise `memory` under [component.a-small.limits])\n",
        );
    assert!(!out.stderr.contains("listening"), "{out:#?}");
    let compiled: Vec<_> = std::fs::read_dir(tern.cache_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "twasm"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        compiled.is_empty(),
        "compiled before refusing: {compiled:?}"
    );
}
