//! The wasmtime engine Tern runs guests on, and the epoch ticker that turns
//! wall-clock deadlines into interrupts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Result,
};

use crate::limits::Limits;

/// Builds the engine for a set of limits. The settings that change compiled
/// code (epoch checks for a timeout, fuel metering, stack size) follow the
/// limits, and so does the compile cache key.
pub fn engine_for(limits: &Limits) -> Result<Engine> {
    EngineSpec::for_limits(limits).engine()
}

/// An engine's configuration as data, so that a child process compiling for
/// it (see `compiler.rs`) builds code this engine accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineSpec {
    /// `tern run`: epoch checks only with a deadline, fuel only with a
    /// budget, and the wasm stack limit.
    Run {
        /// Compile in epoch checks (`--timeout`).
        epoch: bool,
        /// Compile in fuel metering (`--fuel`).
        fuel: bool,
        /// The wasm stack limit in bytes.
        max_stack: u64,
    },
    /// `tern serve`: pooled instances, epoch checks always.
    Serve {
        /// Instances alive at once.
        slots: u32,
        /// The largest linear memory of any instance, in bytes.
        max_memory: u64,
        /// Component-model concurrency, which WASI 0.3 components need
        /// (async functions, streams, futures). Off for apps of WASI 0.2
        /// and preview 1 guests: a store then skips its bookkeeping on
        /// every instantiation and host call.
        concurrency: bool,
    },
}

impl EngineSpec {
    /// The engine `tern run` uses under `limits`.
    pub fn for_limits(limits: &Limits) -> Self {
        EngineSpec::Run {
            epoch: limits.timeout.is_some(),
            fuel: limits.fuel.is_some(),
            max_stack: limits.max_stack.0,
        }
    }

    /// Builds the engine.
    pub fn engine(&self) -> Result<Engine> {
        Engine::new(&self.config(true))
    }

    /// The configuration; without `pooling` it compiles the same code but
    /// reserves no instance pool (what a compiling child process needs).
    pub(crate) fn config(&self, pooling: bool) -> Config {
        let mut config = Config::new();
        match *self {
            EngineSpec::Run {
                epoch,
                fuel,
                max_stack,
            } => {
                // Epoch checks cost a few percent in hot loops: only compile
                // them in when there is a deadline to enforce.
                config.epoch_interruption(epoch);
                config.consume_fuel(fuel);
                set_stack(&mut config, max_stack);
            }
            EngineSpec::Serve {
                slots,
                max_memory,
                concurrency,
            } => {
                config.epoch_interruption(true);
                config.concurrency_support(concurrency);
                set_stack(&mut config, Limits::DEFAULT_MAX_STACK.0);
                if pooling {
                    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(
                        slots,
                        max_memory,
                        concurrency,
                    )));
                }
            }
        }
        config
    }

    /// The spec as one command-line word, for a compiling child.
    pub(crate) fn to_arg(self) -> String {
        match self {
            EngineSpec::Run {
                epoch,
                fuel,
                max_stack,
            } => format!("run:{}:{}:{max_stack}", u8::from(epoch), u8::from(fuel)),
            EngineSpec::Serve {
                slots,
                max_memory,
                concurrency,
            } => format!("serve:{slots}:{max_memory}:{}", u8::from(concurrency)),
        }
    }

    /// Reads what [`EngineSpec::to_arg`] wrote.
    pub(crate) fn from_arg(arg: &str) -> Option<Self> {
        let parts: Vec<&str> = arg.split(':').collect();
        let flag = |s: &str| match s {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        match parts[..] {
            ["run", epoch, fuel, max_stack] => Some(EngineSpec::Run {
                epoch: flag(epoch)?,
                fuel: flag(fuel)?,
                max_stack: max_stack.parse().ok()?,
            }),
            ["serve", slots, max_memory, concurrency] => Some(EngineSpec::Serve {
                slots: slots.parse().ok()?,
                max_memory: max_memory.parse().ok()?,
                concurrency: flag(concurrency)?,
            }),
            _ => None,
        }
    }
}

fn set_stack(config: &mut Config, max_stack: u64) {
    let max_stack = usize::try_from(max_stack).unwrap_or(usize::MAX);
    config.max_wasm_stack(max_stack);
    // Guests run on a fiber: room for the wasm stack plus the host's frames.
    config.async_stack_size(max_stack.saturating_add(1 << 20));
}

/// The instance pool of a serving engine.
fn pool(slots: u32, max_memory: u64, concurrency: bool) -> PoolingAllocationConfig {
    let slots = slots.max(1);
    // With concurrency, an instance's tasks may each be suspended in a
    // host call on a fiber of their own.
    let stacks = if concurrency {
        slots.saturating_mul(4)
    } else {
        slots
    };
    let mut pool = PoolingAllocationConfig::new();
    // A component is several core instances (the program, adapters, shims)
    // with up to a couple of memories.
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(8))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(stacks)
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        // Reset pages a request touched with memset instead of unmapping
        // them: the next request in this slot then takes no page faults.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(128 << 10)
        // Every slot may stay warm for the component it last held: with
        // many components taking turns (`tern host`), a slot that must be
        // remapped for another component's memory image costs more than
        // the request.
        .max_unused_warm_slots(slots.saturating_mul(2))
        .pagemap_scan(Enabled::Auto);
    pool
}

/// The ticker thread of an engine with a deadline: it bumps the epoch once
/// when the deadline passes, so a guest running wasm code traps at its next
/// epoch check. It is woken and ends early when dropped.
pub struct Deadline {
    done: Arc<AtomicBool>,
    thread: thread::Thread,
}

impl Deadline {
    /// Starts the ticker for `engine`; stores must already have an epoch
    /// deadline of one tick.
    pub fn start(engine: &Engine, timeout: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = done.clone();
        let deadline = Instant::now() + timeout;
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                let now = Instant::now();
                if now >= deadline {
                    engine.increment_epoch();
                    return;
                }
                thread::park_timeout(deadline - now);
            }
        });
        Deadline {
            done,
            thread: handle.thread().clone(),
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_their_argument() {
        for spec in [
            EngineSpec::Run {
                epoch: true,
                fuel: false,
                max_stack: 512 << 10,
            },
            EngineSpec::Serve {
                slots: 1000,
                max_memory: 128 << 20,
                concurrency: false,
            },
            EngineSpec::Serve {
                slots: 3,
                max_memory: 64 << 20,
                concurrency: true,
            },
        ] {
            assert_eq!(EngineSpec::from_arg(&spec.to_arg()), Some(spec));
        }
        assert_eq!(EngineSpec::from_arg("serve:x:1"), None);
    }

    #[test]
    fn a_pool_changes_nothing_in_the_compiled_code() {
        let spec = EngineSpec::Serve {
            slots: 4,
            max_memory: 64 << 20,
            concurrency: false,
        };
        let pooled = Engine::new(&spec.config(true)).unwrap();
        let plain = Engine::new(&spec.config(false)).unwrap();
        let module = wat::parse_str("(module (func (export \"f\")))").unwrap();
        let code = plain.precompile_module(&module).unwrap();
        // SAFETY: the bytes were just compiled by wasmtime in this process.
        #[allow(unsafe_code)]
        let loaded = unsafe { wasmtime::Module::deserialize(&pooled, &code) };
        loaded.unwrap();
    }
}
