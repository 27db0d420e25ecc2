//! A loaded filter: its code linked once, its space, and its VMs (one per
//! worker thread, or one per request).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use tern_runtime::{Loader, Program};
use wasmtime::error::Context as _;
use wasmtime::{InstancePre, Linker, Module};
use wasmtime::{Result, bail};

use crate::config::{FilterConfig, Isolation, LogLevel};
use crate::engine;
use crate::host;
use crate::space::FilterSpace;
use crate::vm::{FilterShared, FilterVm, VmCtx};

/// How many times in a row a worker's VM of a filter may be rebuilt at
/// once after failing, and how often a rebuild is earned back: a one-off
/// trap costs only the request it hit, while a filter that fails every
/// request is not restarted for every one.
const REBUILD_BURST: u32 = 3;
const REBUILD_INTERVAL: Duration = Duration::from_secs(1);

/// A filter, ready to serve: compiled, linked, and proven to start (a
/// trial VM ran `proxy_on_vm_start` and `proxy_on_configure`).
pub struct Filter {
    pub(crate) shared: Arc<FilterShared>,
    pre: InstancePre<VmCtx>,
    vms: Mutex<HashMap<ThreadId, Worker>>,
}

#[derive(Default)]
struct Worker {
    vm: Option<Arc<Mutex<FilterVm>>>,
    /// Set once its VM has failed: every later start is a rebuild.
    rebuilds: Option<Rebuilds>,
}

/// A token bucket of rebuilds: [`REBUILD_BURST`] at once, then one per
/// [`REBUILD_INTERVAL`].
struct Rebuilds {
    tokens: u32,
    refilled_at: Instant,
}

impl Rebuilds {
    fn new(now: Instant) -> Self {
        Rebuilds {
            tokens: REBUILD_BURST,
            refilled_at: now,
        }
    }

    /// Takes a rebuild if one is left at `now`.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.refilled_at).as_nanos()
            / REBUILD_INTERVAL.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(REBUILD_BURST);
            // Time towards the next rebuild carries over, unless full.
            self.refilled_at = if self.tokens == REBUILD_BURST {
                now
            } else {
                self.refilled_at + REBUILD_INTERVAL * earned
            };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Filter {
    /// Loads the filter in `path` (a core module) through `loader` (the
    /// compile cache), and starts a trial VM. `space` is the previous
    /// version's, so shared data, queues and metrics carry over.
    pub fn load(
        loader: &Loader<'_>,
        path: &Path,
        config: FilterConfig,
        space: Option<Arc<FilterSpace>>,
    ) -> Result<Filter> {
        let engine = engine::engine()?;
        let module = match loader.load(engine, path)?.program {
            Program::Module(module) => module,
            Program::Component(_) => {
                bail!("a component, not a proxy-wasm filter (a core module exporting `proxy_on_*`)")
            }
        };
        Filter::new(module, config, space)
    }

    /// A filter from compiled code.
    pub fn new(
        module: Module,
        config: FilterConfig,
        space: Option<Arc<FilterSpace>>,
    ) -> Result<Filter> {
        let abi = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];
        if !module.exports().any(|e| abi.contains(&e.name())) {
            bail!(
                "not a proxy-wasm filter: it exports neither `proxy_abi_version_0_2_1` nor `proxy_abi_version_0_2_0`"
            );
        }
        let engine = engine::engine()?;
        let mut linker = Linker::new(engine);
        crate::wasi::add_to_linker(&mut linker)?;
        host::add_to_linker(&mut linker)?;
        // Functions of other ABI versions trap when called rather than
        // refusing the filter: SDKs import more than most filters call.
        linker.define_unknown_imports_as_traps(&module)?;
        let pre = linker
            .instantiate_pre(&module)
            .context("linking the filter")?;
        let shared = Arc::new(FilterShared {
            config,
            space: space.unwrap_or_default(),
        });
        // The trial VM: a version that cannot start never serves.
        FilterVm::start(&pre, shared.clone())?;
        Ok(Filter {
            shared,
            pre,
            vms: Mutex::new(HashMap::new()),
        })
    }

    /// The filter's configuration.
    pub fn config(&self) -> &FilterConfig {
        &self.shared.config
    }

    /// The filter's space, to hand to its next version.
    pub fn space(&self) -> &Arc<FilterSpace> {
        &self.shared.space
    }

    /// A VM for one stream on this thread: the worker's (started on first
    /// use, rebuilt after a failure within [`Rebuilds`]), or a fresh one.
    pub(crate) fn vm(&self) -> Result<Arc<Mutex<FilterVm>>, String> {
        if self.shared.config.isolation == Isolation::Request {
            return self.start_vm();
        }
        let thread = thread::current().id();
        let now = Instant::now();
        {
            let mut vms = self.vms.lock().unwrap_or_else(PoisonError::into_inner);
            let worker = vms.entry(thread).or_default();
            self.reuse(worker, now)?;
            if let Some(vm) = &worker.vm {
                return Ok(vm.clone());
            }
        }
        // Started without the lock: other workers take their own VMs from
        // the map meanwhile, and a start may take a few callbacks' time.
        let started = self.start_vm();
        let mut vms = self.vms.lock().unwrap_or_else(PoisonError::into_inner);
        let worker = vms.entry(thread).or_default();
        match started {
            Ok(vm) => {
                worker.vm = Some(vm.clone());
                Ok(vm)
            }
            Err(why) => {
                worker.rebuilds.get_or_insert_with(|| Rebuilds::new(now));
                Err(why)
            }
        }
    }

    /// Keeps the worker's VM if it is sound; otherwise drops it and says
    /// whether another may be started now.
    fn reuse(&self, worker: &mut Worker, now: Instant) -> Result<(), String> {
        if let Some(vm) = &worker.vm {
            let broken = vm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .broken()
                .map(str::to_string);
            match broken {
                None => return Ok(()),
                Some(why) => {
                    worker.vm = None;
                    worker.rebuilds.get_or_insert_with(|| Rebuilds::new(now));
                    self.log(
                        LogLevel::Error,
                        &format!("VM failed ({why}); rebuilding it"),
                    );
                }
            }
        }
        if let Some(rebuilds) = &mut worker.rebuilds
            && !rebuilds.take(now)
        {
            return Err(format!(
                "failed, and its VM was rebuilt {REBUILD_BURST} times in a row; the next rebuild is allowed within a second"
            ));
        }
        Ok(())
    }

    /// Starts the VM of a filter run as a service, on the current thread
    /// (inside a tokio runtime, which runs its ticks and queue callbacks).
    pub fn service_vm(&self) -> Result<Arc<Mutex<FilterVm>>, String> {
        self.start_vm()
    }

    /// Logs a failure outside any request.
    pub fn log_error(&self, message: &str) {
        self.log(LogLevel::Error, message);
    }

    fn start_vm(&self) -> Result<Arc<Mutex<FilterVm>>, String> {
        let vm = FilterVm::start(&self.pre, self.shared.clone())
            .map_err(|e| format!("could not start: {e:#}"))?;
        follow_up(&vm, &mut vm.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(vm)
    }

    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        let config = &self.shared.config;
        if level >= config.log_level {
            config.log.log(&config.name, level, 0, message);
        }
    }
}

/// Takes up what `vm`'s last callbacks asked of the host, if a runtime is
/// at hand to run it (without one it stays for the next time): calling its
/// ticks, if it asked for them (at its start, or in a stream's callbacks),
/// and making the calls its root context dispatched, each answer delivered
/// back on this thread. `locked` is `vm`, held by the caller.
pub(crate) fn follow_up(vm: &Arc<Mutex<FilterVm>>, locked: &mut FilterVm) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    if let Some(period) = locked.take_tick_request() {
        tokio::spawn(tick(Arc::downgrade(vm), period));
    }
    let Some((calls, dispatcher)) = locked.take_root_calls() else {
        return;
    };
    let now = Instant::now();
    for call in calls {
        let (vm, dispatcher) = (Arc::downgrade(vm), dispatcher.clone());
        let delay = locked.root_call_delay(now);
        // On this thread's runtime: the answer goes to this worker's VM.
        // The task ends with the VM (`keep_root_task`).
        let task = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let token = call.token;
            let answer = dispatcher.dispatch(call).await;
            let Some(vm) = vm.upgrade() else { return };
            let mut locked = vm.lock().unwrap_or_else(PoisonError::into_inner);
            if locked.broken().is_none() {
                locked.root_call_response(token, answer);
                follow_up(&vm, &mut locked);
            }
        });
        locked.keep_root_task(task.abort_handle());
    }
}

/// Calls the VM's `proxy_on_tick` every period, on its own thread, until
/// the VM is gone, broken, or stops ticks (which a later period restarts).
async fn tick(weak: Weak<Mutex<FilterVm>>, mut period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(vm) = weak.upgrade() else { return };
        let mut locked = vm.lock().unwrap_or_else(PoisonError::into_inner);
        if locked.broken().is_some() {
            return;
        }
        locked.on_tick();
        // Calls the tick made; a period it set again is this loop's.
        let next = locked.tick_period();
        if next.is_none() {
            locked.ticks_stopped();
        }
        follow_up(&vm, &mut locked);
        match next {
            Some(next) => period = next,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_come_in_a_burst_then_one_a_second() {
        let start = Instant::now();
        let mut rebuilds = Rebuilds::new(start);
        for _ in 0..REBUILD_BURST {
            assert!(rebuilds.take(start));
        }
        assert!(!rebuilds.take(start), "the burst is spent");
        assert!(!rebuilds.take(start + REBUILD_INTERVAL / 2));
        assert!(rebuilds.take(start + REBUILD_INTERVAL), "one earned back");
        assert!(!rebuilds.take(start + REBUILD_INTERVAL));
        // A quiet spell refills the burst, and no more.
        let later = start + REBUILD_INTERVAL * 100;
        for _ in 0..REBUILD_BURST {
            assert!(rebuilds.take(later));
        }
        assert!(!rebuilds.take(later));
    }
}
