//! Resource limits for one guest, and the store limiter that enforces memory.

use std::time::Duration;

use crate::units::ByteSize;

/// Bounds on one guest's memory, time, instructions and stack.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest total linear memory one instance may hold.
    pub max_memory: ByteSize,
    /// Wall-clock deadline; `None` runs until the guest returns.
    pub timeout: Option<Duration>,
    /// Instruction budget; `None` disables fuel metering.
    pub fuel: Option<u64>,
    /// Largest wasm call stack; deeper recursion traps.
    pub max_stack: ByteSize,
}

impl Limits {
    /// Linear memory granted when no limit is given.
    pub const DEFAULT_MAX_MEMORY: ByteSize = ByteSize(1 << 30);
    /// The wasm stack granted when no limit is given (wasmtime's default).
    pub const DEFAULT_MAX_STACK: ByteSize = ByteSize(512 << 10);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: Self::DEFAULT_MAX_MEMORY,
            timeout: None,
            fuel: None,
            max_stack: Self::DEFAULT_MAX_STACK,
        }
    }
}

/// Enforces [`Limits::max_memory`] and remembers the first refusal, so an
/// error can say which limit the guest ran into.
pub(crate) struct MemoryLimiter {
    max: usize,
    /// Bytes the guest asked for when a grow was first refused.
    pub(crate) refused: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(max: ByteSize) -> Self {
        MemoryLimiter {
            max: usize::try_from(max.0).unwrap_or(usize::MAX),
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.refused.get_or_insert(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer; count tables against the same budget.
        Ok(desired.saturating_mul(size_of::<usize>()) <= self.max)
    }
}
