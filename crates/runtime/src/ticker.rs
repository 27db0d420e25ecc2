//! The process's one epoch ticker: a thread moving the epoch of every
//! engine that serves guests (`tern serve`'s and `tern host`'s engines, the
//! proxy-wasm filter engine, plugin hosts) every [`TICK`], which is what
//! makes a guest spinning in wasm yield, and stop at its deadline or time
//! budget. An engine is ticked from its registration for as long as it
//! exists (the ticker holds it weakly), so a store still running on an
//! engine its app has let go of keeps its deadline.
//!
//! It ticks only while a guest may be running: each store that runs guest
//! code holds a [`Running`] for as long as it can (a request's store, a
//! warm instance, one filter callback, one plugin call). When none has been
//! held for [`IDLE_TICKS`] ticks the thread parks, and the next `Running`
//! wakes it, so an idle server takes no wake-ups at all, and a busy one
//! pays one thread's, however many engines it has.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epochs move: a spinning guest yields, and has its
/// deadline and CPU budget checked, this often.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks without any guest running after which the thread parks.
pub const IDLE_TICKS: u32 = 100;

/// The ticker; see the module's documentation.
pub struct Ticker {
    engines: Mutex<Vec<EngineWeak>>,
    /// Guests that may be running now.
    running: AtomicUsize,
    /// The thread is parked (or about to be), waiting for a guest.
    asleep: AtomicBool,
    /// Ticks made, for tests and figures.
    ticks: AtomicU64,
    /// The thread, and the process it was started in: a child made by
    /// `fork` inherits this value but not the thread, and starts its own.
    thread: Mutex<Option<(u32, Thread)>>,
}

impl Ticker {
    /// The process's ticker.
    pub fn global() -> &'static Ticker {
        static TICKER: Ticker = Ticker::new();
        &TICKER
    }

    const fn new() -> Ticker {
        Ticker {
            engines: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: Mutex::new(None),
        }
    }

    /// Moves `engine`'s epoch from now on, for as long as it exists;
    /// starts the thread if this process has none yet.
    pub fn register(&'static self, engine: &Engine) -> std::io::Result<()> {
        {
            let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
            let pid = std::process::id();
            if thread
                .as_ref()
                .is_none_or(|(started_in, _)| *started_in != pid)
            {
                self.asleep.store(false, Ordering::SeqCst);
                let handle = thread::Builder::new()
                    .name("tern-epoch".into())
                    .spawn(move || self.run())?;
                *thread = Some((pid, handle.thread().clone()));
            }
        }
        let mut engines = self.engines();
        // Twice would tick it twice as fast.
        let known = engines
            .iter()
            .any(|known| known.upgrade().is_some_and(|e| Engine::same(&e, engine)));
        if !known {
            engines.push(engine.weak());
        }
        Ok(())
    }

    /// Marks a guest as possibly running until the guard is dropped, and
    /// wakes the thread if it sleeps.
    pub fn running(&'static self) -> Running {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 && self.asleep.load(Ordering::SeqCst) {
            let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, thread)) = thread.as_ref() {
                thread.unpark();
            }
        }
        Running { ticker: self }
    }

    /// Ticks made so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Whether the thread is parked for want of a running guest.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst) && self.running.load(Ordering::SeqCst) == 0
    }

    fn engines(&self) -> MutexGuard<'_, Vec<EngineWeak>> {
        self.engines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut idle = 0;
        loop {
            thread::sleep(TICK);
            // Engines that are gone drop out.
            self.engines().retain(|engine| match engine.upgrade() {
                Some(engine) => {
                    engine.increment_epoch();
                    true
                }
                None => false,
            });
            self.ticks.fetch_add(1, Ordering::Relaxed);
            if self.running.load(Ordering::SeqCst) > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            // A guest starting now either sees `asleep` and unparks us, or
            // is seen by the load below: both are SeqCst.
            self.asleep.store(true, Ordering::SeqCst);
            while self.running.load(Ordering::SeqCst) == 0 {
                thread::park();
            }
            self.asleep.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}

/// A guest that may be running; see [`Ticker::running`].
pub struct Running {
    ticker: &'static Ticker,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ticker.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Waits until `ready` holds, for at most 10 s.
    fn until(ready: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if ready() {
                return true;
            }
            thread::yield_now();
        }
        false
    }

    #[test]
    fn ticks_while_a_guest_runs_and_sleeps_when_none_does() {
        // A ticker of the test's own: nothing else in this process wakes it.
        let ticker: &'static Ticker = Box::leak(Box::new(Ticker::new()));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        ticker.register(&engine).unwrap();

        // Nothing runs: the thread goes to sleep, and stays asleep.
        assert!(until(|| ticker.is_asleep()), "the ticker never slept");
        let slept_at = ticker.ticks();
        thread::sleep(TICK * 20);
        assert_eq!(ticker.ticks(), slept_at, "ticked while nothing ran");

        // A guest wakes it, and the engine's epoch moves: a spinning guest
        // is interrupted.
        let module =
            wasmtime::Module::new(&engine, r#"(module (func (export "spin") (loop br 0)))"#)
                .unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(5);
        store.epoch_deadline_trap();
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let guest = ticker.running();
        let trap = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        assert!(ticker.ticks() >= slept_at + 5);
        drop(guest);
        assert!(until(|| ticker.is_asleep()), "never slept again");

        // An engine is held weakly: once every handle to it is gone (the
        // trap's backtrace holds its module), it is ticked no more.
        drop((trap, spin, instance, store, module, engine));
        let guest = ticker.running();
        assert!(
            until(|| ticker.engines().is_empty()),
            "a dropped engine is still ticked"
        );
        drop(guest);
    }
}
