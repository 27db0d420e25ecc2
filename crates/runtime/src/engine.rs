//! The wasmtime engine Tern runs guests on, and the epoch ticker that turns
//! wall-clock deadlines into interrupts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Result};

use crate::limits::Limits;

/// Builds the engine for a set of limits. The settings that change compiled
/// code (epoch checks for a timeout, fuel metering, stack size) follow the
/// limits, and so does the compile cache key.
pub fn engine_for(limits: &Limits) -> Result<Engine> {
    let mut config = Config::new();
    // Epoch checks cost a few percent in hot loops: only compile them in
    // when there is a deadline to enforce.
    config.epoch_interruption(limits.timeout.is_some());
    config.consume_fuel(limits.fuel.is_some());
    let max_stack = usize::try_from(limits.max_stack.0).unwrap_or(usize::MAX);
    config.max_wasm_stack(max_stack);
    // Guests run on a fiber: room for the wasm stack plus the host's frames.
    config.async_stack_size(max_stack.saturating_add(1 << 20));
    Engine::new(&config)
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
