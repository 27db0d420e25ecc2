//! The serving engine: pooling allocation sized for the app, epoch
//! interruption so that a guest spinning in wasm code yields to the others
//! and stops at its deadline (the process's `tern_runtime::Ticker` moves
//! the epoch while a guest runs).

use tern_manifest::ByteSize;
use tern_runtime::EngineSpec;

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
    /// Whether any component speaks WASI 0.3, which needs component-model
    /// concurrency.
    pub concurrency: bool,
}

impl PoolSize {
    /// The serving engine's configuration as data: the pooling allocator
    /// sized for the app, epoch interruption, and component-model
    /// concurrency only when a WASI 0.3 component needs it (WASI 0.2
    /// handlers and WAGI programs are cheaper without).
    pub(crate) fn spec(&self) -> EngineSpec {
        EngineSpec::Serve {
            slots: self.slots,
            max_memory: self.max_memory.0,
            concurrency: self.concurrency,
        }
    }
}
