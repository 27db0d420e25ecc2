//! Calls one plugin function in a loop on fresh instances from N threads,
//! for profiling the call path: `calls PLUGIN FUNCTION INPUT THREADS N`.

use tern_plugin::{CacheDir, PluginConfig, PluginHost};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, wasm, function, input, threads, n] = &args[..] else {
        return Err("usage: calls PLUGIN FUNCTION INPUT THREADS N".into());
    };
    let host = PluginHost::builder()
        .cache(CacheDir::Off)
        .build()
        .map_err(|e| format!("{e:#}"))?;
    let plugin = host.load(wasm, PluginConfig::default())?;
    let (threads, n): (usize, usize) = (threads.parse()?, n.parse()?);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..n {
                    plugin.call(function, input.as_bytes()).expect("a call");
                }
            });
        }
    });
    let calls = (threads * n) as f64;
    println!("{:.0} calls/s", calls / start.elapsed().as_secs_f64());
    Ok(())
}
