//! Calls one plugin function in a loop from N threads, on a fresh instance
//! per call or on a session per thread, for profiling the call path:
//! `calls PLUGIN FUNCTION INPUT THREADS N [fresh|session]`. Prints calls/s
//! and the p50 and p99 of the calls' latency.

use std::time::{Duration, Instant};

use tern_plugin::{CacheDir, PluginConfig, PluginHost};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (wasm, function, input, threads, n, mode) = match &args[..] {
        [_, wasm, function, input, threads, n] => (wasm, function, input, threads, n, "fresh"),
        [_, wasm, function, input, threads, n, mode] => {
            (wasm, function, input, threads, n, mode.as_str())
        }
        _ => return Err("usage: calls PLUGIN FUNCTION INPUT THREADS N [fresh|session]".into()),
    };
    let session = match mode {
        "fresh" => false,
        "session" => true,
        other => return Err(format!("unknown mode `{other}`: fresh or session").into()),
    };
    let host = PluginHost::builder()
        .cache(CacheDir::Off)
        .build()
        .map_err(|e| format!("{e:#}"))?;
    let plugin = host.load(wasm, PluginConfig::default())?;
    let (threads, n): (usize, usize) = (threads.parse()?, n.parse()?);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut session = session.then(|| plugin.session().expect("a session"));
                    let mut times = Vec::with_capacity(n);
                    for _ in 0..n {
                        let began = Instant::now();
                        match &mut session {
                            Some(session) => session.call(function, input.as_bytes()),
                            None => plugin.call(function, input.as_bytes()),
                        }
                        .expect("a call");
                        times.push(began.elapsed());
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker"))
            .collect()
    });
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{mode}: {:.0} calls/s, p50 {:.2} µs, p99 {:.2} µs",
        (threads * n) as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
    );
    Ok(())
}
