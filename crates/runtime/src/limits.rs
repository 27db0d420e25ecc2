//! Resource limits for one guest, and the store limiter that enforces memory.

use std::time::Duration;

use tern_manifest::units::ByteSize;

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

/// Enforces [`Limits::max_memory`] over all the linear memories and tables
/// of a store together (a component may hold several), and remembers the
/// first refusal so an error can say which limit the guest ran into.
pub struct MemoryLimiter {
    max: usize,
    /// Bytes granted so far, across memories and tables.
    used: usize,
    /// What the store would have held had the first refused grow succeeded.
    pub(crate) refused: Option<usize>,
}

impl MemoryLimiter {
    /// A limiter granting at most `max` bytes in all.
    pub fn new(max: ByteSize) -> Self {
        MemoryLimiter {
            max: usize::try_from(max.0).unwrap_or(usize::MAX),
            used: 0,
            refused: None,
        }
    }

    /// What the guest would have held had its first refused request been
    /// granted, if one was refused.
    pub fn refused(&self) -> Option<ByteSize> {
        self.refused.map(|bytes| ByteSize(bytes as u64))
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.max {
            self.refused.get_or_insert(total);
            return false;
        }
        self.used = total;
        true
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element costs about a pointer.
        let size = size_of::<usize>();
        Ok(self.grow(current.saturating_mul(size), desired.saturating_mul(size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut limiter = MemoryLimiter::new(ByteSize(100 << 20));
        assert!(limiter.memory_growing(0, 60 << 20, None).unwrap());
        // A second memory may not take the first one's share.
        assert!(!limiter.memory_growing(0, 60 << 20, None).unwrap());
        assert_eq!(limiter.refused, Some(120 << 20));
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(!limiter.table_growing(0, 1, None).unwrap());
    }
}
