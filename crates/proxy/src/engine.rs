//! The engine filters run on: one per process, synchronous (proxy-wasm
//! callbacks are plain calls), with epoch interruption for the per-callback
//! time budget and one ticker thread moving the epoch.

use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use wasmtime::Result;
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine};

/// How often the epoch moves: the granularity of the callback budget.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// The wasm stack a filter callback may use.
const MAX_STACK: usize = 1 << 20;

/// The process's filter engine, made at first use.
pub fn engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_STACK);
    let engine = Engine::new(&config).context("creating the filter engine")?;
    let engine = ENGINE.get_or_init(|| engine);
    let ticking = engine.clone();
    thread::Builder::new()
        .name("tern-filter-epoch".into())
        .spawn(move || {
            loop {
                thread::sleep(TICK);
                ticking.increment_epoch();
            }
        })
        .context("starting the filter epoch ticker")?;
    Ok(engine)
}

/// Epoch ticks in `budget`, at least one.
pub(crate) fn ticks(budget: Duration) -> u64 {
    (budget.as_millis() as u64).max(1)
}
