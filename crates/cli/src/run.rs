//! `tern run`: parse grants and limits, load the program (through the
//! compile cache), run it, and turn the outcome into output and exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use tern_manifest::runtime_config::{StoreBackend, StoreConfig};
use tern_manifest::{OutboundHost, RuntimeConfig};
use tern_runtime::{
    ByteSize, Capabilities, CodeSource, DirGrant, EnvGrant, HumanDuration, Limits, Loader,
    NetGrant, Outcome, Result, RunConfig, Services,
};

use crate::{compiling, exit};

#[derive(Args)]
#[command(after_help = "\
Nothing is granted by default: no files, no environment variables, no
network. Options go before FILE; everything after FILE is the guest's argv.

Exit status: the guest's exit code (a preview 1 module's 0 to 125; a
component's 0 or 1, or 0 to 255 through `exit-with-code`); 0 when `_start`
returns; 124 when --timeout stops the guest; 134 when the guest traps or
runs out of fuel; 1 when tern itself fails (missing file, malformed wasm,
...) or a preview 1 module exits with 126 or more; 2 for a usage error.
Tern's own codes come with an `error:` line on stderr; a guest's do not.
A trap prints one line; --backtrace adds the guest's backtrace.

Examples:
  tern run hello.wasm
  tern run --dir ./data::/data --env GREETING=hi app.wasm --verbose
  tern run --timeout 2s --max-memory 64MiB untrusted.wasm
  tern run --invoke add calc.wat 1 2
  tern run --invoke 'add(1, 2)' calc.wasm
  tern run --invoke 'example:calc/ops#mul(6, 7)' calc.wasm
  tern run --invoke greet calc.wasm '\"world\"'
  tern run --kv default=counter.sqlite counter.wasm
  tern run --nn-preload default:GGML:AUTO:model.gguf llama-chat.wasm --prompt hi
  tern run --nn-graph onnx::./models/iris classify.wasm")]
pub struct RunArgs {
    /// Preopen a host directory, read-write: HOST::GUEST, or DIR for DIR::DIR
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = |s: &str| DirGrant::parse(s, false))]
    dirs: Vec<DirGrant>,
    /// Preopen a host directory, read-only: HOST::GUEST, or DIR for DIR::DIR
    #[arg(long = "dir-ro", value_name = "HOST::GUEST", value_parser = |s: &str| DirGrant::parse(s, true))]
    dirs_ro: Vec<DirGrant>,
    /// Set a guest environment variable, or pass the host's value with KEY alone
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<EnvGrant>,
    /// Allow TCP/UDP to matching addresses and name lookup; `*` matches any host or port
    #[arg(long = "allow-net", value_name = "HOST:PORT")]
    net: Vec<NetGrant>,
    /// Allow outbound HTTP (a component's wasi:http client) to URLs like
    /// this: `https://api.example.com`, `http://127.0.0.1:8080`,
    /// `https://*.example.com`; without it every request is refused
    #[arg(long = "allow-http", value_name = "URL")]
    http: Vec<OutboundHost>,
    /// Give a component the key-value store NAME (wasi:keyvalue), kept in an SQLite file
    #[arg(long = "kv", value_name = "NAME=FILE.sqlite", value_parser = parse_kv)]
    kv: Vec<(String, PathBuf)>,
    /// Give the guest a model for WASI-NN, loaded before it starts:
    /// NAME:ENCODING:TARGET:PATH as WasmEdge spells it (e.g.
    /// `default:GGML:AUTO:llama.gguf`); ENCODING is ggml or onnx, TARGET
    /// AUTO or CPU; the guest loads it by NAME
    #[arg(long = "nn-preload", value_name = "NAME:ENCODING:TARGET:PATH", value_parser = parse_nn_preload)]
    nn_preload: Vec<crate::nn::Preload>,
    /// Give the guest a model as wasmtime spells it: ENCODING::DIR (a
    /// directory holding `model.onnx` or one `.gguf` file); the guest
    /// loads it by the directory's name (`iris` for `models/iris`)
    #[arg(long = "nn-graph", value_name = "ENCODING::DIR", value_parser = parse_nn_graph)]
    nn_graph: Vec<crate::nn::Preload>,
    /// What runs ggml (GGUF) models: candle, llama.cpp (only in builds with
    /// the `llama-cpp` feature), or auto: llama.cpp when built in, else candle
    #[arg(long = "nn-engine", value_name = "ENGINE", default_value = "auto")]
    nn_engine: tern_nn::GgmlEngine,
    /// Largest linear memory the guest may hold
    #[arg(long, value_name = "SIZE", default_value_t = Limits::DEFAULT_MAX_MEMORY)]
    max_memory: ByteSize,
    /// Stop the guest after this much wall-clock time (e.g. 2s, 500ms)
    #[arg(long, value_name = "DURATION")]
    timeout: Option<HumanDuration>,
    /// Stop the guest after this many units of fuel (about one per wasm instruction)
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Largest wasm call stack; deeper recursion traps
    #[arg(long, value_name = "SIZE", default_value_t = Limits::DEFAULT_MAX_STACK)]
    max_stack: ByteSize,
    /// Call an exported function and print its results, one per line. A
    /// core module's: NAME, with ARGS as numbers. A component's:
    /// `NAME(ARG, ...)` in WAVE with no ARGS, or NAME with each of ARGS in
    /// WAVE (strings quoted); NAME may be `package:ns/interface#func`, or
    /// just `func` if one interface has it; results print in WAVE
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// When the guest traps, print its backtrace (function names when the
    /// module has a name section)
    #[arg(long)]
    backtrace: bool,
    /// Compile without reading or writing the compile cache
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    pub(crate) compile_limits: crate::compiling::CompileLimitArgs,
    /// Print where time goes (engine, cache, instantiation, run) to stderr
    #[arg(short, long)]
    verbose: bool,
    /// The program: a core module, a component, .wat text, or a `tern compile` artifact
    file: PathBuf,
    /// Arguments for the guest (or for the --invoke'd function)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

pub fn main(args: RunArgs) -> Result<ExitCode> {
    let trace = Trace::new(args.verbose);
    let limits = Limits {
        max_memory: args.max_memory,
        timeout: args.timeout.map(|t| t.0),
        fuel: args.fuel,
        max_stack: args.max_stack,
    };
    let capabilities = Capabilities {
        dirs: args.dirs.into_iter().chain(args.dirs_ro).collect(),
        env: args.env,
        net: args.net,
    };

    let engine = tern_runtime::engine_for(&limits)?;
    trace.note("engine created");
    let (cache, disabled) = compiling::open_cache(args.no_cache)?;
    if let Some(why) = disabled {
        trace.say(&format!("compile cache disabled: {why}"));
    }
    let shown = args.file.display().to_string();
    let note_compile = |size| compiling::note_compile(&shown, size, cache.is_some());
    let compile_limits = args.compile_limits.limits();
    let loader = Loader {
        cache: cache.as_ref(),
        key: None,
        on_compile: Some(&note_compile),
        limits: Some(&compile_limits),
        spec: Some(tern_runtime::EngineSpec::for_limits(&limits)),
        written_once: false,
        share: None,
    };
    let loaded = loader
        .load(&engine, &args.file)
        .map_err(|e| e.context(format!("cannot run `{shown}`")))?;
    trace.say(&format!(
        "read {shown} in {:.2}ms; {} in {:.2}ms",
        ms(loaded.read_time),
        match &loaded.source {
            CodeSource::Compiled => "compiled (cache off)".to_string(),
            CodeSource::CacheHit => "cache hit".to_string(),
            CodeSource::CacheMiss => "cache miss, compiled".to_string(),
            CodeSource::CacheRejected(why) => format!("cache entry rejected ({why}), recompiled"),
            CodeSource::Precompiled => "verified precompiled artifact".to_string(),
            CodeSource::Shared => "shared with a program already loaded".to_string(),
        },
        ms(loaded.code_time),
    ));

    // The guest sees its file name, not the host path, as argv[0].
    let name = args
        .file
        .file_name()
        .map_or(shown.clone(), |n| n.to_string_lossy().into_owned());
    let argv: Vec<String> = std::iter::once(name)
        .chain(args.args.iter().cloned())
        .collect();
    let preloads: Vec<_> = args.nn_preload.iter().chain(&args.nn_graph).collect();
    let nn = crate::nn::load_preloads(&preloads, args.nn_engine, limits.max_memory.0)?;
    if !preloads.is_empty() {
        trace.note("models loaded");
    }
    let services = kv_services(&args.kv)?.with_nn(nn);
    let outbound = match args.http {
        http if http.is_empty() => None,
        http => Some(
            tern_http::run_outbound(http, Arc::new(RunNotes)).map_err(tern_runtime::Error::msg)?,
        ),
    };
    let config = RunConfig {
        argv: &argv,
        capabilities: &capabilities,
        limits: &limits,
        services: &services,
        outbound: outbound
            .as_ref()
            .map(|make| make as &(dyn Fn() -> tern_runtime::HttpHooks + Sync)),
    };
    let outcome = match &args.invoke {
        Some(func) => tern_runtime::invoke(&engine, &loaded.program, func, &args.args, config),
        None => tern_runtime::run_command(&engine, &loaded.program, config),
    }?;
    trace.note("guest finished");
    Ok(report(outcome, args.backtrace))
}

/// What Tern says on a running program's behalf (a refused outbound
/// request), on stderr.
struct RunNotes;

impl tern_http::EventSink for RunNotes {
    fn request(&self, _: &tern_http::AccessRecord<'_>) {}

    fn guest_output(&self, _: &tern_http::GuestLine<'_>) {}

    fn server_error(&self, _: &str) {}

    fn note(&self, _: &str, _: tern_http::RequestId, message: &str) {
        crate::log::say(&format!("tern: {message}"));
    }
}

fn report(outcome: Outcome, show_backtrace: bool) -> ExitCode {
    match outcome {
        Outcome::Exited(code) => exit::guest_code(code),
        Outcome::InvalidExit(status) => {
            eprintln!(
                "error: the guest exited with status {status}, but a WASI preview 1 exit status is 0 to 125"
            );
            exit::TERN_ERROR
        }
        Outcome::Returned(values) => {
            for value in values {
                println!("{value}");
            }
            ExitCode::SUCCESS
        }
        Outcome::TimedOut(limit) => {
            let limit = HumanDuration(limit);
            eprintln!("error: guest exceeded its time limit of {limit}");
            ExitCode::from(exit::TIMEOUT)
        }
        Outcome::OutOfFuel(fuel) => {
            eprintln!("error: guest ran out of fuel (limit {fuel}; raise it with --fuel)");
            ExitCode::from(exit::TRAP)
        }
        Outcome::Trapped {
            message,
            backtrace,
            note,
        } => {
            eprintln!("error: guest trapped: {message}");
            if show_backtrace && let Some(backtrace) = &backtrace {
                eprint!("{backtrace}");
                if !backtrace.ends_with('\n') {
                    eprintln!();
                }
            }
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            if backtrace.is_some() && !show_backtrace {
                eprintln!("note: run with --backtrace to see the guest's backtrace");
            }
            ExitCode::from(exit::TRAP)
        }
    }
}

/// `--verbose` timing lines, each with the time since the previous one.
struct Trace {
    last: std::cell::Cell<Option<Instant>>,
}

impl Trace {
    fn new(enabled: bool) -> Self {
        Trace {
            last: std::cell::Cell::new(enabled.then(Instant::now)),
        }
    }

    fn note(&self, what: &str) {
        if let Some(last) = self.last.get() {
            eprintln!("tern: {what} in {:.2}ms", ms(last.elapsed()));
            self.last.set(Some(Instant::now()));
        }
    }

    fn say(&self, line: &str) {
        if self.last.get().is_some() {
            eprintln!("tern: {line}");
            self.last.set(Some(Instant::now()));
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `NAME:ENCODING:TARGET:PATH` for `--nn-preload`.
fn parse_nn_preload(text: &str) -> std::result::Result<crate::nn::Preload, String> {
    crate::nn::Preload::parse_wasmedge(text)
}

/// `ENCODING::DIR` for `--nn-graph`.
fn parse_nn_graph(text: &str) -> std::result::Result<crate::nn::Preload, String> {
    crate::nn::Preload::parse_wasmtime(text)
}

/// `NAME=FILE.sqlite` for `--kv`.
fn parse_kv(text: &str) -> std::result::Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE.sqlite, got `{text}`")),
    }
}

/// The stores `--kv` grants, each an SQLite file (relative to the current
/// directory).
fn kv_services(grants: &[(String, PathBuf)]) -> Result<Services> {
    let runtime = RuntimeConfig {
        stores: grants
            .iter()
            .map(|(name, file)| {
                let backend = StoreBackend::Sqlite {
                    path: Some(file.clone()),
                };
                (name.clone(), StoreConfig::new(backend))
            })
            .collect(),
        ..RuntimeConfig::default()
    };
    let names: Vec<String> = runtime.stores.keys().cloned().collect();
    let stores = tern_runtime::open_stores(
        names.iter().map(String::as_str),
        &runtime,
        "".as_ref(),
        None,
        None,
    )
    .map_err(tern_runtime::Error::msg)?;
    Ok(Services::new(stores, &names, Default::default()))
}
