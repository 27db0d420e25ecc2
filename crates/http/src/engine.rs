//! The serving engine: pooling allocation sized for the app, epoch
//! interruption so that a guest spinning in wasm code yields to the others
//! and stops at its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tern_manifest::ByteSize;
use tern_runtime::Limits;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Result,
};

/// How often a guest running wasm code is interrupted to let other requests
/// run and to check its deadline.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Most component instances alive at once. Each slot reserves address space
/// (not memory) for its linear memories, so this is bounded.
pub(crate) const MAX_POOL_SLOTS: u32 = 2000;

/// What the pool must hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolSize {
    /// Instances alive at once, across the app.
    pub slots: u32,
    /// The largest memory limit of any component.
    pub max_memory: ByteSize,
}

pub(crate) fn serving_engine(size: &PoolSize) -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // WASI 0.2 handlers need no component-model concurrency; without it a
    // store skips that bookkeeping on every instantiation and host call.
    config.concurrency_support(false);
    let max_stack = usize::try_from(Limits::DEFAULT_MAX_STACK.0).unwrap_or(usize::MAX);
    config.max_wasm_stack(max_stack);
    config.async_stack_size(max_stack + (1 << 20));

    let slots = size.slots.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A component is several core instances (the program, adapters, shims)
    // with up to a couple of memories.
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(8))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_memory_size(usize::try_from(size.max_memory.0).unwrap_or(usize::MAX))
        // Reset pages a request touched with memset instead of unmapping
        // them: the next request in this slot then takes no page faults.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(128 << 10)
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Bumps the engine's epoch every [`TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("tern-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
