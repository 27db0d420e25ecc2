//! The wasmtime engine Tern runs guests on, and the epoch ticker that turns
//! wall-clock deadlines into interrupts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Result};

use crate::limits::Limits;

/// Builds the engine for a set of limits. Only the settings that change
/// compiled code (fuel metering, stack size) depend on the limits, so the
/// compile cache key follows them.
pub fn engine_for(limits: &Limits) -> Result<Engine> {
    let mut config = Config::new();
    // Always compiled in, so `--timeout` does not change the cached artifact.
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel.is_some());
    config.max_wasm_stack(usize::try_from(limits.max_stack.0).unwrap_or(usize::MAX));
    Engine::new(&config)
}

/// A thread that interrupts the guest when its deadline passes, and calls
/// `on_stuck` if the guest is still blocked in the host a grace period later
/// (a guest sleeping or reading stdin never reaches an epoch check).
pub struct Deadline {
    done: Arc<AtomicBool>,
    thread: thread::Thread,
}

impl Deadline {
    /// How long a guest blocked in a host call may outlive its deadline.
    pub const GRACE: Duration = Duration::from_millis(200);

    /// Starts the ticker for `engine`; stores must already have an epoch
    /// deadline of one tick.
    pub fn start(
        engine: &Engine,
        timeout: Duration,
        on_stuck: impl FnOnce() + Send + 'static,
    ) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = done.clone();
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            if !park_until(&flag, deadline) {
                return;
            }
            engine.increment_epoch();
            if park_until(&flag, deadline + Self::GRACE) {
                on_stuck();
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

/// Parks until `when`; false if `done` was set first.
fn park_until(done: &AtomicBool, when: Instant) -> bool {
    loop {
        if done.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if now >= when {
            return true;
        }
        thread::park_timeout(when - now);
    }
}
