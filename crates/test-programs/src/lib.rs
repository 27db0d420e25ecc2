//! Guest programs for Tern's tests, compiled by this crate's build script.
//!
//! Each Rust guest in `guests/src/bin/NAME.rs` is built for two targets and
//! exposed as `P1_NAME` (a WASI preview 1 core module) and `P2_NAME` (a WASI
//! 0.2 component); each `wat/NAME.wat` is exposed as `WAT_NAME`. The
//! [`foreach_guest!`] macro lists every one of these so that a test suite can
//! check at compile time that each has a test.
//!
//! The HTTP suite has guests of its own:
//!
//! - `guests/src/bin/wagi_*.rs` are WAGI (CGI over WASI) programs, built and
//!   exposed like the other guests (`P1_WAGI_ECHO`, ...) but listed by
//!   [`foreach_wagi_guest!`] instead of [`foreach_guest!`].
//! - `http-guests/examples/http_NAME.rs` are wasi:http components exporting
//!   `wasi:http/incoming-handler`, built for wasm32-wasip2 only and exposed
//!   as `HTTP_NAME` (`HTTP_HELLO` for `http_hello`). [`foreach_http_guest!`]
//!   lists them by their full name (`http_hello`).
//!
//! WASI 0.3 guests live in `p3-guests/`, built for wasm32-wasip2 only:
//!
//! - `p3-guests/src/bin/p3_NAME.rs` are commands exporting
//!   `wasi:cli/run@0.3.0`, exposed as `P3_NAME` (`P3_HELLO` for `p3_hello`)
//!   and listed by [`foreach_p3_guest!`] (`p3_hello`).
//! - `p3-guests/examples/http3_NAME.rs` are wasi:http components exporting
//!   `wasi:http/handler@0.3.0`, exposed as `HTTP3_NAME` (`HTTP3_HELLO` for
//!   `http3_hello`) and listed by [`foreach_http3_guest!`] (`http3_hello`).
//!
//! Spin apps are written against the published Spin Rust SDKs, one per
//! example:
//!
//! - `spin-apps/examples/spin_NAME.rs` use SDK 7 and are WASI 0.3
//!   components for wasm32-wasip2, exposed as `SPIN_NAME` and listed by
//!   [`foreach_spin_app!`] (`spin_hello`).
//! - `spin5-apps/examples/spin5_NAME.rs` use SDK 5 and are wasm32-wasip1
//!   core modules carrying their component type (the host adapts them into
//!   components, as Spin does), exposed as `SPIN5_NAME` and listed by
//!   [`foreach_spin5_app!`] (`spin5_hello`).
//!
//! WASI-NN guests: `nn-guests/src/bin/nn_NAME.rs` are WasmEdge-style core
//! modules for wasm32-wasip1, written against the published
//! `wasmedge-wasi-nn` and LlamaEdge `chat-prompts` crates, exposed as
//! `NN_NAME`; `p3-guests` has the component one (`P3_NN_CLASSIFY`), and
//! `examples/chat`'s component is built as `EXAMPLE_CHAT`. [`MODELS_DIR`]
//! holds the real models `scripts/setup` takes from their PyPI wheels.
//!
//! Extism plug-ins, core modules speaking the `extism:host/env` ABI:
//!
//! - `extism-guests/examples/extism_NAME.rs` are ours, written against the
//!   published extism-pdk 1.4.1 for wasm32-unknown-unknown
//!   (`extism_wasi*` use WASI: cdylibs for wasm32-wasip1), exposed as
//!   `EXTISM_NAME` (`EXTISM_FAIL` for `extism_fail`) and listed by
//!   [`foreach_extism_guest!`] (`extism_fail`).
//! - extism-pdk's own examples (`count_vowels`, `sum`, `host_function`, ...)
//!   are built from the source of that published release, where cargo
//!   unpacked it, as `EXTISM_PDK_NAME` (`EXTISM_PDK_COUNT_VOWELS`), listed
//!   by [`foreach_extism_pdk_example!`] (`extism_pdk_count_vowels`).
//!
//! `examples/udf`'s plugins are built from the example itself:
//! [`UDF_SLUGIFY`] (its Extism plug-in in Rust), [`UDF_SLUGIFY_V2`] (the
//! same with its `v2` feature, to swap in) and [`UDF_TITLECASE_PY`] (its
//! Python component, built with componentize-py when that is on `PATH`).
//!
//! [`extism_reference`] runs a plug-in on the real Extism runtime (its
//! Python SDK, in the virtual environment `scripts/setup` makes:
//! [`EXTISM_PYTHON`]), for the tests to compare Tern with.
//!
//! [`redis::RedisServer`] starts a real `redis-server` for the tests of the
//! Redis key-value backend; [`mqtt::Broker`] a real `mosquitto` for those
//! of MQTT publishing.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

pub mod mqtt;
pub mod postgres;
pub mod redis;

/// `extism_reference.py`, which runs an Extism plug-in on the real Extism
/// runtime; its docstring has the options.
pub const EXTISM_REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/extism_reference.py");

/// Runs [`EXTISM_REFERENCE`] with `args` (the plug-in's path, the functions
/// to call in turn on one instance, options) in the Extism virtual
/// environment. The output is the plug-in's raw output on stdout; a
/// failing call exits 1 with `error: MESSAGE` on stderr.
///
/// ```no_run
/// let output = test_programs::extism_reference(&[
///     test_programs::EXTISM_PDK_COUNT_VOWELS,
///     "count_vowels",
///     "--input",
///     "Hello, World!",
/// ]);
/// assert_eq!(output.stdout, br#"{"count":3}"#);
/// ```
pub fn extism_reference(args: &[&str]) -> std::process::Output {
    std::process::Command::new(EXTISM_PYTHON)
        .arg(EXTISM_REFERENCE)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {EXTISM_PYTHON} (has scripts/setup run?): {e}"))
}

/// Runs `attempt` (start `what` on a port it probed free) until it
/// succeeds: another process may take the port between the probe and the
/// server's bind, and a few attempts make that race harmless. Panics with
/// the last attempt's log after five.
/// Reads `child`'s lines from `output` until one holds `ready`, then keeps
/// draining them on a thread so the server never blocks on a full pipe.
/// Kills `child` and returns what it said if it ends first.
fn wait_for_line(
    child: &mut std::process::Child,
    output: impl std::io::Read + Send + 'static,
    ready: &str,
) -> Result<(), String> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(output).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        log.push_str(&line);
        log.push('\n');
        if line.contains(ready) {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(log)
}

fn start_on_free_port<T>(what: &str, attempt: impl Fn() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..5 {
        match attempt() {
            Ok(started) => return started,
            Err(log) => last = log,
        }
    }
    panic!("{what} did not start:\n{last}");
}
