//! The engine filters run on: one per process, synchronous (proxy-wasm
//! callbacks are plain calls), with epoch interruption for the per-callback
//! time budget; the process's `tern_runtime::Ticker` moves its epoch while
//! a callback runs.

use std::sync::OnceLock;
use std::time::Duration;

use tern_runtime::Ticker;
use wasmtime::Result;
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine};

/// How often the epoch moves: the granularity of the callback budget.
pub(crate) const TICK: Duration = tern_runtime::TICK;

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
    // Registered before it is shared, so no filter runs on it unticked. An
    // engine that loses a race to be the one is dropped, and the ticker
    // forgets it.
    Ticker::global()
        .register(&engine)
        .context("starting the filter epoch ticker")?;
    Ok(ENGINE.get_or_init(|| engine))
}

/// Marks a filter callback as running, for the ticker.
pub(crate) fn running() -> tern_runtime::Running {
    Ticker::global().running()
}

/// Epoch ticks in `budget`, at least one.
pub(crate) fn ticks(budget: Duration) -> u64 {
    u64::try_from(budget.as_nanos() / TICK.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}
