//! `plugin-bench`: Tern's plugin host (tern-plugin) against Extism 1.30's
//! Rust SDK on extism-pdk's `count_vowels` example, in one process.
//!
//! ```text
//! plugin-bench COUNT_VOWELS.wasm [--duration 3s] [--threads 1,2] [--out FILE.md]
//! ```
//!
//! Calls/s and p50/p99 latency per case and thread count, with the ratio
//! to Extism's calls/s at the same thread count; then load times. Prints a
//! Markdown report (and writes it to `--out`); progress goes to stderr.
//! `bench/plugin/run` builds and runs it; bench/README.md says what the
//! figures mean.

use std::error::Error;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_plugin::{CacheDir, PluginConfig, PluginHost, Session};

type BoxError = Box<dyn Error + Send + Sync>;

/// The function every engine calls.
const FUNCTION: &str = "count_vowels";
/// Calls per thread before a case is timed.
const WARMUP_CALLS: usize = 200;
/// Loads timed per load figure whose code comes from a cache or memory.
const LOAD_RUNS: usize = 20;
/// Loads timed per load figure that compiles.
const COMPILE_RUNS: usize = 5;
/// Bytes of input to each call.
const INPUT_LEN: usize = 1024;
/// The text the input repeats.
const INPUT_TEXT: &[u8] = b"Hello, World! ";

const USAGE: &str = "usage: plugin-bench COUNT_VOWELS.wasm [--duration 3s] [--threads 1,2] [--out FILE.md]

  COUNT_VOWELS.wasm  extism-pdk's count_vowels example, as the test-programs build
                     script builds it: target/guests/wasm32-unknown-unknown/release/examples/count_vowels.wasm
  --duration D       timed run per case after the warm-up: 3, 3s or 500ms (default 3s)
  --threads N,M      thread counts to run each case at (default 1,2)
  --out FILE         also write the Markdown report to FILE";

struct Options {
    wasm: PathBuf,
    duration: Duration,
    threads: Vec<usize>,
    out: Option<PathBuf>,
}

/// The engine a case runs on, for ratios and targets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    TernFresh,
    TernSession,
    Extism,
}

/// One case at one thread count.
struct Row {
    case: &'static str,
    engine: Engine,
    threads: usize,
    calls: u64,
    calls_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// One load figure.
struct Load {
    what: String,
    runs: usize,
    median: Duration,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("plugin-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let options = parse_args()?;
    for var in ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"] {
        if std::env::var_os(var).is_some() {
            eprintln!(
                "plugin-bench: warning: {var} is set; unset it when benchmarking (bench/plugin/run does)"
            );
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("plugin-bench: warning: a debug build; build with --release for figures");
    }
    let wasm =
        fs::read(&options.wasm).map_err(|e| format!("reading {}: {e}", options.wasm.display()))?;
    // Tern's compile cache for this run: made by the host (mode 0700) on
    // first use, removed at the end.
    let cache_dir = std::env::temp_dir().join(format!("tern-plugin-bench-{}", std::process::id()));
    let report = bench(&options, &wasm, &cache_dir);
    let _ = fs::remove_dir_all(&cache_dir);
    let report = report?;
    print!("{report}");
    if let Some(out) = &options.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        fs::write(out, &report).map_err(|e| format!("writing {}: {e}", out.display()))?;
        eprintln!("plugin-bench: wrote {}", out.display());
    }
    Ok(())
}

fn bench(options: &Options, wasm: &[u8], cache_dir: &Path) -> Result<String, BoxError> {
    let input = input();
    let input = input.as_slice();
    let host = PluginHost::builder()
        .cache(CacheDir::At(cache_dir.to_path_buf()))
        .build()?;
    // This first load compiles and fills the cache.
    let plugin = host.load(&options.wasm, PluginConfig::default())?;

    // Every engine gives the same answer, before anything is timed.
    let vowels = input.iter().filter(|c| b"aeiouAEIOU".contains(c)).count();
    let expected = format!(r#"{{"count":{vowels}}}"#);
    let (fresh_output, one_call) = plugin.call(FUNCTION, input)?;
    let mut session = plugin.session()?;
    let (session_output, _) = session.call(FUNCTION, input)?;
    drop(session);
    let mut extism_plugin = extism::Plugin::new(wasm, [], false)?;
    let extism_output = extism_plugin
        .call::<&[u8], &[u8]>(FUNCTION, input)?
        .to_vec();
    drop(extism_plugin);
    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }
    assert_eq!(
        text(&fresh_output),
        text(&extism_output),
        "Tern (fresh instance) and Extism answer differently"
    );
    assert_eq!(
        text(&session_output),
        text(&extism_output),
        "Tern (session) and Extism answer differently"
    );
    assert_eq!(
        text(&fresh_output),
        expected,
        "not the vowel count of the input"
    );

    let mut rows = Vec::new();
    for &threads in &options.threads {
        rows.push(run_case(
            "Tern, fresh instance per call",
            Engine::TernFresh,
            threads,
            options.duration,
            || -> Result<(), BoxError> { Ok(()) },
            |_: &mut ()| -> Result<usize, BoxError> { Ok(plugin.call(FUNCTION, input)?.0.len()) },
        )?);
        rows.push(run_case(
            "Tern, session per thread",
            Engine::TernSession,
            threads,
            options.duration,
            || -> Result<Session, BoxError> { Ok(plugin.session()?) },
            |session: &mut Session| -> Result<usize, BoxError> {
                Ok(session.call(FUNCTION, input)?.0.len())
            },
        )?);
        rows.push(run_case(
            "Extism, Plugin per thread",
            Engine::Extism,
            threads,
            options.duration,
            || -> Result<extism::Plugin, BoxError> { Ok(extism::Plugin::new(wasm, [], false)?) },
            |plugin: &mut extism::Plugin| -> Result<usize, BoxError> {
                let output = plugin.call::<&[u8], &[u8]>(FUNCTION, input)?;
                Ok(output.len())
            },
        )?);
    }
    drop(plugin);

    eprintln!("plugin-bench: load times");
    let mut loads = Vec::new();
    // Tern from its compile cache, filled by the first load above.
    let tern_entries = fs::read_dir(cache_dir)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "twasm"))
                .count()
        })
        .unwrap_or(0);
    let tern_what = if tern_entries > 0 {
        "Tern `PluginHost::load`, compile cache warm".to_owned()
    } else {
        "Tern `PluginHost::load` (**its cache holds no entry: these loads compiled**)".to_owned()
    };
    loads.push(Load {
        what: tern_what,
        runs: LOAD_RUNS,
        median: median(LOAD_RUNS, || {
            host.load(&options.wasm, PluginConfig::default())
        })?,
    });
    drop(host);

    // Extism's default: Plugin::new caches compiled code with wasmtime's
    // cache unless the builder or EXTISM_CACHE_CONFIG says otherwise. The
    // loads above (output check, one per thread) filled it; one more in
    // case. Read from the file as Tern's load is.
    let extism_load = || -> Result<extism::Plugin, BoxError> {
        let bytes = fs::read(&options.wasm)?;
        Ok(extism::Plugin::new(bytes, [], false)?)
    };
    drop(extism_load()?);
    let extism_cache = match std::env::var_os("EXTISM_CACHE_CONFIG") {
        None => "wasmtime's cache, default configuration, warm".to_owned(),
        Some(value) if value.is_empty() => "cache off: `EXTISM_CACHE_CONFIG=\"\"`".to_owned(),
        Some(value) => format!(
            "the cache `EXTISM_CACHE_CONFIG={}` sets",
            value.to_string_lossy()
        ),
    };
    loads.push(Load {
        what: format!("Extism `Plugin::new`, its default ({extism_cache})"),
        runs: LOAD_RUNS,
        median: median(LOAD_RUNS, extism_load)?,
    });

    // Extism from code compiled once and kept in memory: no file, no cache.
    let compiled = extism::PluginBuilder::new(wasm)
        .with_wasi(false)
        .compile()?;
    loads.push(Load {
        what: "Extism `Plugin::new_from_compiled`, a `CompiledPlugin` in memory".to_owned(),
        runs: LOAD_RUNS,
        median: median(LOAD_RUNS, || extism::Plugin::new_from_compiled(&compiled))?,
    });
    drop(compiled);

    // For reference, both compiling: no cache.
    let host_uncached = PluginHost::builder().cache(CacheDir::Off).build()?;
    loads.push(Load {
        what: "Tern `PluginHost::load`, no cache (compiles)".to_owned(),
        runs: COMPILE_RUNS,
        median: median(COMPILE_RUNS, || {
            host_uncached.load(&options.wasm, PluginConfig::default())
        })?,
    });
    drop(host_uncached);
    loads.push(Load {
        what: "Extism `PluginBuilder::with_cache_disabled` (compiles, its kernel too)".to_owned(),
        runs: COMPILE_RUNS,
        median: median(COMPILE_RUNS, || -> Result<extism::Plugin, BoxError> {
            let bytes = fs::read(&options.wasm)?;
            Ok(extism::PluginBuilder::new(bytes)
                .with_cache_disabled()
                .build()?)
        })?,
    });

    let context = Context {
        wasm_path: &options.wasm,
        wasm_len: wasm.len(),
        input_len: input.len(),
        expected: &expected,
        duration: options.duration,
        instructions: one_call.instructions,
        peak_memory: one_call.peak_memory,
    };
    markdown(&context, &rows, &loads)
}

/// 1 KiB of text: `Hello, World! ` repeated, cut at 1024 bytes.
fn input() -> Vec<u8> {
    let mut input = INPUT_TEXT.repeat(INPUT_LEN / INPUT_TEXT.len() + 1);
    input.truncate(INPUT_LEN);
    input
}

/// Runs one case on `threads` threads: each makes its state with `setup`,
/// calls `call` WARMUP_CALLS times, waits for the others, then calls it
/// for `duration`, timing every call.
fn run_case<S, Setup, Call>(
    case: &'static str,
    engine: Engine,
    threads: usize,
    duration: Duration,
    setup: Setup,
    call: Call,
) -> Result<Row, BoxError>
where
    Setup: Fn() -> Result<S, BoxError> + Sync,
    Call: Fn(&mut S) -> Result<usize, BoxError> + Sync,
{
    eprintln!("plugin-bench: {case}, {threads} thread(s), {duration:?}");
    let barrier = Barrier::new(threads);
    let (setup, call, barrier) = (&setup, &call, &barrier);
    let results: Vec<Result<(Vec<u64>, Duration), BoxError>> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            handles.push(
                scope.spawn(move || -> Result<(Vec<u64>, Duration), BoxError> {
                    let state = setup().and_then(|mut state| {
                        for _ in 0..WARMUP_CALLS {
                            black_box(call(&mut state)?);
                        }
                        Ok(state)
                    });
                    // Every thread reaches the barrier, failed or not.
                    barrier.wait();
                    let mut state = state?;
                    // Nanoseconds per call; one clock read per call.
                    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
                    let start = Instant::now();
                    let end = start + duration;
                    let mut before = start;
                    while before < end {
                        black_box(call(&mut state)?);
                        let after = Instant::now();
                        latencies.push((after - before).as_nanos() as u64);
                        before = after;
                    }
                    Ok((latencies, before - start))
                }),
            );
        }
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("a benchmark thread panicked".into()))
            })
            .collect()
    });
    let mut all = Vec::new();
    let mut calls_per_sec = 0.0;
    for result in results {
        let (latencies, elapsed) =
            result.map_err(|e| format!("{case}, {threads} thread(s): {e}"))?;
        calls_per_sec += latencies.len() as f64 / elapsed.as_secs_f64();
        all.extend(latencies);
    }
    if all.is_empty() {
        return Err(format!("{case}: no call finished").into());
    }
    all.sort_unstable();
    Ok(Row {
        case,
        engine,
        threads,
        calls: all.len() as u64,
        calls_per_sec,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    })
}

/// The nearest-rank percentile of sorted nanoseconds.
fn percentile(sorted: &[u64], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Duration::from_nanos(sorted[rank - 1])
}

/// The median time of `runs` calls of `load`; what it makes is dropped
/// outside the timing.
fn median<T, E: Into<BoxError>>(
    runs: usize,
    mut load: impl FnMut() -> Result<T, E>,
) -> Result<Duration, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let loaded = load().map_err(Into::into)?;
        times.push(start.elapsed());
        drop(loaded);
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

struct Context<'a> {
    wasm_path: &'a Path,
    wasm_len: usize,
    input_len: usize,
    expected: &'a str,
    duration: Duration,
    instructions: u64,
    peak_memory: u64,
}

fn markdown(context: &Context<'_>, rows: &[Row], loads: &[Load]) -> Result<String, BoxError> {
    let mut md = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(md, "# bench/plugin, {}", today_utc())?;
    writeln!(md)?;
    writeln!(
        md,
        "`{FUNCTION}` of `{}` ({} bytes, extism-pdk's example) on {} bytes of text \
         (`{}` repeated), answer `{}` from every engine; {} per case after {WARMUP_CALLS} \
         calls per thread; {cpus} CPUs. calls/s is the sum over threads; latency is per call, \
         all threads' calls together. One Tern call: {} instructions, {} KiB peak memory.",
        context.wasm_path.display(),
        context.wasm_len,
        context.input_len,
        String::from_utf8_lossy(INPUT_TEXT),
        context.expected,
        format_duration(context.duration),
        context.instructions,
        context.peak_memory >> 10,
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| case | threads | calls/s | p50 µs | p99 µs | ratio vs Extism (calls/s) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for row in rows {
        let ratio = extism_rate(rows, row.threads).map_or("n/a".to_owned(), |extism| {
            format!("{:.2}x", row.calls_per_sec / extism)
        });
        writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {ratio} |",
            row.case,
            row.threads,
            thousands(row.calls_per_sec),
            micros(row.p50),
            micros(row.p99),
        )?;
    }
    writeln!(md)?;
    let total: u64 = rows.iter().map(|row| row.calls).sum();
    writeln!(md, "{} calls timed in all.", thousands(total as f64))?;
    writeln!(md)?;

    writeln!(md, "| target (informational) | threads | result |")?;
    writeln!(md, "|---|---|---|")?;
    let threads: Vec<usize> = {
        let mut threads: Vec<usize> = rows.iter().map(|row| row.threads).collect();
        threads.dedup();
        threads
    };
    for (engine, name, want) in [
        (Engine::TernSession, "Tern session ≥ 2x Extism calls/s", 2.0),
        (
            Engine::TernFresh,
            "Tern fresh per call ≥ Extism calls/s",
            1.0,
        ),
    ] {
        for &n in &threads {
            let rate = rows
                .iter()
                .find(|row| row.engine == engine && row.threads == n)
                .map(|row| row.calls_per_sec);
            let result = match (rate, extism_rate(rows, n)) {
                (Some(rate), Some(extism)) => {
                    let ratio = rate / extism;
                    let mark = if ratio >= want { "PASS" } else { "MISS" };
                    format!("{ratio:.2}x: {mark}")
                }
                _ => "n/a".to_owned(),
            };
            writeln!(md, "| {name} | {n} | {result} |")?;
        }
    }
    writeln!(md)?;

    let extism_default = loads
        .iter()
        .find(|load| load.what.starts_with("Extism `Plugin::new`,"))
        .map(|load| load.median);
    writeln!(md, "| load | runs | median | vs Extism `Plugin::new` |")?;
    writeln!(md, "|---|---|---|---|")?;
    for load in loads {
        let ratio = extism_default.map_or("n/a".to_owned(), |base| {
            format!("{:.2}x", load.median.as_secs_f64() / base.as_secs_f64())
        });
        writeln!(
            md,
            "| {} | {} | {} | {ratio} |",
            load.what,
            load.runs,
            format_duration(load.median)
        )?;
    }
    Ok(md)
}

fn extism_rate(rows: &[Row], threads: usize) -> Option<f64> {
    rows.iter()
        .find(|row| row.engine == Engine::Extism && row.threads == threads)
        .map(|row| row.calls_per_sec)
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

/// `n` rounded, with thousands separated by commas.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Today's date, UTC, as YYYY-MM-DD (Howard Hinnant's civil_from_days).
fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn parse_args() -> Result<Options, BoxError> {
    let mut args = std::env::args_os().skip(1);
    let mut wasm = None;
    let mut duration = Duration::from_secs(3);
    let mut threads = vec![1, 2];
    let mut out = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Some("--duration") => duration = parse_duration(&value(&mut args, "--duration")?)?,
            Some("--threads") => threads = parse_threads(&value(&mut args, "--threads")?)?,
            Some("--out") => {
                out = Some(PathBuf::from(args.next().ok_or("--out needs a value")?));
            }
            Some(flag) if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}`\n{USAGE}").into());
            }
            _ if wasm.is_none() => wasm = Some(PathBuf::from(arg)),
            _ => return Err(format!("one wasm file only\n{USAGE}").into()),
        }
    }
    Ok(Options {
        wasm: wasm.ok_or(USAGE)?,
        duration,
        threads,
        out,
    })
}

fn value(args: &mut impl Iterator<Item = OsString>, flag: &str) -> Result<String, BoxError> {
    let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .into_string()
        .map_err(|_| format!("{flag}: not UTF-8").into())
}

/// `3`, `3s`, `2.5s` or `500ms`.
fn parse_duration(text: &str) -> Result<Duration, BoxError> {
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else {
        (text, 1.0)
    };
    let secs = number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .ok_or_else(|| format!("--duration `{text}`: say 3, 3s or 500ms"))?;
    Ok(Duration::from_secs_f64(secs * scale))
}

/// `1,2`: thread counts, each at least 1.
fn parse_threads(text: &str) -> Result<Vec<usize>, BoxError> {
    let threads: Vec<usize> = text
        .split(',')
        .map(|n| n.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("--threads `{text}`: say 1,2"))?;
    if threads.is_empty() {
        return Err("--threads: no thread count".into());
    }
    Ok(threads)
}
