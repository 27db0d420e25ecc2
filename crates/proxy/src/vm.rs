//! One filter VM: an instance of the filter with its root context started,
//! and the callbacks the host makes into it.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tern_runtime::{ByteSize, MemoryLimiter};
use wasmtime::error::Context as _;
use wasmtime::{Instance, InstancePre, Memory, Store, Trap, TypedFunc};
use wasmtime::{Result, format_err as anyhow};

use crate::abi::ACTION_CONTINUE;
use crate::config::FilterConfig;
use crate::engine;
use crate::space::FilterSpace;
use crate::stream::{CallResponse, HttpCall, StreamData};

/// The id of every VM's root context.
pub(crate) const ROOT_CONTEXT: u32 = 1;

/// What a filter's VMs share: its configuration and space.
/// Where a VM will be, filled once it is made: a root context registers
/// its queues while it starts, before the VM exists.
pub(crate) type VmSlot = Arc<OnceLock<Weak<Mutex<FilterVm>>>>;

pub(crate) struct FilterShared {
    pub(crate) config: FilterConfig,
    pub(crate) space: Arc<FilterSpace>,
}

/// The store data of a filter VM.
pub(crate) struct VmCtx {
    pub(crate) limiter: MemoryLimiter,
    pub(crate) shared: Arc<FilterShared>,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<u32, u32>>,
    /// The stream the current callback is about; empty otherwise.
    pub(crate) stream: StreamData,
    pub(crate) in_stream: bool,
    /// The stream context the current callback is for (root's otherwise).
    pub(crate) context: u32,
    /// The answer to a `dispatch_http_call`, during its callback.
    pub(crate) call_response: Option<CallResponse>,
    /// Calls the root context made (outside any stream), for the host to
    /// make, and how many of its calls are not answered yet.
    pub(crate) root_calls: Vec<HttpCall>,
    pub(crate) root_calls_in_flight: usize,
    /// The request being handled (for log lines), 0 if none.
    pub(crate) request: u64,
    pub(crate) tick_period: Option<Duration>,
    pub(crate) next_token: u32,
    /// The VM itself, once made (queues hold it to call back).
    pub(crate) this: VmSlot,
    /// Whether the filter was told gRPC is unimplemented.
    pub(crate) grpc_noted: bool,
}

type Callback1 = TypedFunc<u32, ()>;
type Callback2 = TypedFunc<(u32, u32), ()>;
type Callback2R = TypedFunc<(u32, u32), u32>;
type Callback3R = TypedFunc<(u32, u32, u32), u32>;
type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The callbacks a filter exports; any may be missing.
struct Exports {
    context_create: Option<Callback2>,
    vm_start: Option<Callback2R>,
    configure: Option<Callback2R>,
    tick: Option<Callback1>,
    queue_ready: Option<Callback2>,
    request_headers: Option<Callback3R>,
    request_body: Option<Callback3R>,
    request_trailers: Option<Callback2R>,
    response_headers: Option<Callback3R>,
    response_body: Option<Callback3R>,
    response_trailers: Option<Callback2R>,
    http_call_response: Option<CallResponseFn>,
    log: Option<Callback1>,
    done: Option<TypedFunc<u32, u32>>,
    delete: Option<Callback1>,
}

impl Exports {
    fn find(store: &mut Store<VmCtx>, instance: &Instance) -> Exports {
        macro_rules! get {
            ($name:literal) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        Exports {
            context_create: get!("proxy_on_context_create"),
            vm_start: get!("proxy_on_vm_start"),
            configure: get!("proxy_on_configure"),
            tick: get!("proxy_on_tick"),
            queue_ready: get!("proxy_on_queue_ready"),
            request_headers: get!("proxy_on_request_headers"),
            request_body: get!("proxy_on_request_body"),
            request_trailers: get!("proxy_on_request_trailers"),
            response_headers: get!("proxy_on_response_headers"),
            response_body: get!("proxy_on_response_body"),
            response_trailers: get!("proxy_on_response_trailers"),
            http_call_response: get!("proxy_on_http_call_response"),
            log: get!("proxy_on_log"),
            done: get!("proxy_on_done"),
            delete: get!("proxy_on_delete"),
        }
    }
}

/// Which stream callback to make.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    RequestHeaders { count: u32, end: bool },
    RequestBody { size: u32, end: bool },
    RequestTrailers { count: u32 },
    ResponseHeaders { count: u32, end: bool },
    ResponseBody { size: u32, end: bool },
    ResponseTrailers { count: u32 },
}

/// A filter VM. Once a callback fails, the VM is broken for good: every
/// later call fails at once, and a new VM replaces it.
pub struct FilterVm {
    store: Store<VmCtx>,
    /// Shared, so a call borrows its function rather than cloning it.
    exports: Arc<Exports>,
    next_context: u32,
    broken: Option<String>,
    ticking: bool,
    /// The root context's calls being made: they end with the VM.
    root_tasks: Vec<tokio::task::AbortHandle>,
    /// The pace of the root context's calls.
    root_pace: Pace,
}

/// The pace of a root context's calls: a burst of this many, then one per
/// [`ROOT_CALL_SPACING`], however fast the answers come back (a filter
/// calling again from each answer, an upstream that is down).
const ROOT_CALL_BURST: u32 = 16;
const ROOT_CALL_SPACING: Duration = Duration::from_millis(10);

/// A leaky bucket that delays rather than refuses: a burst of
/// [`ROOT_CALL_BURST`] at once, then one per [`ROOT_CALL_SPACING`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// When the next call would go out, were calls made evenly.
    due: Instant,
}

impl Pace {
    pub(crate) fn new(now: Instant) -> Self {
        Pace { due: now }
    }

    /// How long a call made at `now` waits before it goes out.
    pub(crate) fn delay(&mut self, now: Instant) -> Duration {
        let tolerance = ROOT_CALL_SPACING * (ROOT_CALL_BURST - 1);
        let due = self.due.max(now);
        let send_at = due.checked_sub(tolerance).unwrap_or(now).max(now);
        self.due = due + ROOT_CALL_SPACING;
        send_at - now
    }
}

impl Drop for FilterVm {
    fn drop(&mut self) {
        for task in &self.root_tasks {
            task.abort();
        }
    }
}

impl FilterVm {
    /// Instantiates the filter and starts its root context
    /// (`proxy_on_vm_start`, then `proxy_on_configure`); an error says why
    /// the filter did not start.
    pub(crate) fn start(
        pre: &InstancePre<VmCtx>,
        shared: Arc<FilterShared>,
    ) -> Result<Arc<Mutex<FilterVm>>> {
        let engine = engine::engine()?;
        let config = &shared.config;
        let ctx = VmCtx {
            // One budget for all the VM's memories and tables together: a
            // filter may declare many memories.
            limiter: MemoryLimiter::new(ByteSize(config.max_memory)),
            shared: shared.clone(),
            memory: None,
            alloc: None,
            stream: StreamData::default(),
            in_stream: false,
            context: ROOT_CONTEXT,
            call_response: None,
            root_calls: Vec::new(),
            root_calls_in_flight: 0,
            request: 0,
            tick_period: None,
            next_token: 1,
            this: VmSlot::default(),
            grpc_noted: false,
        };
        // Starting runs the filter's code: its start function,
        // `_initialize`, the root context's first callbacks.
        let _running = engine::running();
        let mut store = Store::new(engine, ctx);
        store.limiter(|ctx| &mut ctx.limiter);
        store.set_epoch_deadline(engine::ticks(config.callback_time));
        store.epoch_deadline_trap();
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| describe(&store, e, config.callback_time))
            .context("instantiating the filter")?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .ok();
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        for init in ["_initialize", "_start"] {
            if let Ok(func) = instance.get_typed_func::<(), ()>(&mut store, init) {
                func.call(&mut store, ())
                    .map_err(|e| describe(&store, e, config.callback_time))
                    .with_context(|| format!("running the filter's `{init}`"))?;
                break;
            }
        }
        let exports = Arc::new(Exports::find(&mut store, &instance));
        let vm_config_size = config.vm_configuration.len() as u32;
        let plugin_config_size = config.configuration.len() as u32;
        let mut vm = FilterVm {
            store,
            exports,
            next_context: ROOT_CONTEXT,
            broken: None,
            ticking: false,
            root_tasks: Vec::new(),
            root_pace: Pace::new(Instant::now()),
        };
        if let Some(f) = &vm.exports.clone().context_create {
            vm.call(f, (ROOT_CONTEXT, 0))
                .map_err(|e| anyhow!("creating the root context: {e}"))?;
        }
        if let Some(f) = &vm.exports.clone().vm_start {
            let started = vm
                .call(f, (ROOT_CONTEXT, vm_config_size))
                .map_err(|e| anyhow!("proxy_on_vm_start: {e}"))?;
            if started == 0 {
                return Err(anyhow!("the filter refused to start (proxy_on_vm_start)"));
            }
        }
        if let Some(f) = &vm.exports.clone().configure {
            let configured = vm
                .call(f, (ROOT_CONTEXT, plugin_config_size))
                .map_err(|e| anyhow!("proxy_on_configure: {e}"))?;
            if configured == 0 {
                return Err(anyhow!(
                    "the filter refused its configuration (proxy_on_configure)"
                ));
            }
        }
        let vm = Arc::new(Mutex::new(vm));
        let slot = vm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .store
            .data()
            .this
            .clone();
        let _ = slot.set(Arc::downgrade(&vm));
        Ok(vm)
    }

    /// Why the VM cannot be used, if it failed.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The tick period the filter asked for, once, for the caller to start
    /// ticking.
    pub(crate) fn take_tick_request(&mut self) -> Option<Duration> {
        if self.ticking {
            return None;
        }
        let period = self.store.data().tick_period?;
        self.ticking = true;
        Some(period)
    }

    /// Notes that ticks stopped, so that a new period starts them again.
    pub(crate) fn ticks_stopped(&mut self) {
        self.ticking = false;
    }

    /// The current tick period, `None` when the filter turned ticks off.
    pub(crate) fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick_period
    }

    pub(crate) fn on_tick(&mut self) {
        if let Some(f) = &self.exports.clone().tick {
            let _ = self.call(f, ROOT_CONTEXT);
        }
    }

    pub(crate) fn on_queue_ready(&mut self, root: u32, queue: u32) {
        if let Some(f) = &self.exports.clone().queue_ready {
            let _ = self.call(f, (root, queue));
        }
    }

    /// The calls the root context made since the last time, for the host
    /// to make; the filter's dispatcher makes them. A broken VM's calls are
    /// dropped, and those it had out are stopped.
    pub(crate) fn take_root_calls(
        &mut self,
    ) -> Option<(Vec<HttpCall>, Arc<dyn crate::config::CallDispatcher>)> {
        let broken = self.broken.is_some();
        let ctx = self.store.data_mut();
        if broken {
            ctx.root_calls.clear();
            for task in self.root_tasks.drain(..) {
                task.abort();
            }
            return None;
        }
        if ctx.root_calls.is_empty() {
            return None;
        }
        let dispatcher = ctx.shared.config.dispatcher.clone()?;
        Some((std::mem::take(&mut ctx.root_calls), dispatcher))
    }

    /// How long the next root call waits before it goes out ([`Pace`]).
    pub(crate) fn root_call_delay(&mut self, now: Instant) -> Duration {
        self.root_pace.delay(now)
    }

    /// Keeps `task`, one root call being made, to stop it with the VM.
    pub(crate) fn keep_root_task(&mut self, task: tokio::task::AbortHandle) {
        self.root_tasks.retain(|task| !task.is_finished());
        self.root_tasks.push(task);
    }

    /// Delivers the answer to a call the root context made (`None`: the
    /// call failed) through `proxy_on_http_call_response`.
    pub(crate) fn root_call_response(&mut self, token: u32, response: Option<CallResponse>) {
        let ctx = self.store.data_mut();
        ctx.root_calls_in_flight = ctx.root_calls_in_flight.saturating_sub(1);
        let response = response.unwrap_or_default();
        let _ = self.with_call_response(response, |vm, f, (headers, body, trailers)| {
            vm.call(f, (ROOT_CONTEXT, token, headers, body, trailers))
        });
    }

    /// Creates a stream context; its id.
    pub(crate) fn create_stream(&mut self) -> Result<u32, String> {
        self.next_context = self.next_context.wrapping_add(1).max(ROOT_CONTEXT + 1);
        let id = self.next_context;
        if let Some(f) = &self.exports.clone().context_create {
            // The new context's own callback, though outside any stream.
            self.store.data_mut().context = id;
            let created = self.call(f, (id, ROOT_CONTEXT));
            self.store.data_mut().context = ROOT_CONTEXT;
            created?;
        }
        Ok(id)
    }

    /// Makes one stream callback with `data` visible to the filter;
    /// whether the filter let the stream go on (`Continue`).
    pub(crate) fn stream_callback(
        &mut self,
        context: u32,
        request: u64,
        data: &mut StreamData,
        phase: Phase,
    ) -> Result<bool, String> {
        let e = self.exports.clone();
        let (func, args) = match phase {
            Phase::RequestHeaders { count, end } => {
                (e.request_headers.as_ref(), (context, count, end as u32))
            }
            Phase::RequestBody { size, end } => {
                (e.request_body.as_ref(), (context, size, end as u32))
            }
            Phase::ResponseHeaders { count, end } => {
                (e.response_headers.as_ref(), (context, count, end as u32))
            }
            Phase::ResponseBody { size, end } => {
                (e.response_body.as_ref(), (context, size, end as u32))
            }
            Phase::RequestTrailers { count } => {
                let f = e.request_trailers.as_ref();
                return self
                    .with_stream((context, request), data, None, |vm| match f {
                        Some(f) => vm.call(f, (context, count)),
                        None => Ok(ACTION_CONTINUE),
                    })
                    .map(|action| action == ACTION_CONTINUE);
            }
            Phase::ResponseTrailers { count } => {
                let f = e.response_trailers.as_ref();
                return self
                    .with_stream((context, request), data, None, |vm| match f {
                        Some(f) => vm.call(f, (context, count)),
                        None => Ok(ACTION_CONTINUE),
                    })
                    .map(|action| action == ACTION_CONTINUE);
            }
        };
        let body = match phase {
            Phase::RequestBody { .. } => Some(false),
            Phase::ResponseBody { .. } => Some(true),
            _ => None,
        };
        self.with_stream((context, request), data, body, |vm| match func {
            Some(f) => vm.call(f, args),
            None => Ok(ACTION_CONTINUE),
        })
        .map(|action| action == ACTION_CONTINUE)
    }

    /// Delivers the answer to a `dispatch_http_call`.
    pub(crate) fn call_response(
        &mut self,
        context: u32,
        request: u64,
        data: &mut StreamData,
        token: u32,
        response: CallResponse,
    ) -> Result<(), String> {
        self.with_call_response(response, |vm, f, (headers, body, trailers)| {
            vm.with_stream((context, request), data, None, |vm| {
                vm.call(f, (context, token, headers, body, trailers))
            })
        })
    }

    /// Runs `deliver` (the call of `proxy_on_http_call_response` with the
    /// answer's header, body and trailer counts) with `response` readable
    /// by the filter; nothing if the filter takes no answers.
    fn with_call_response(
        &mut self,
        response: CallResponse,
        deliver: impl FnOnce(&mut Self, &CallResponseFn, (u32, u32, u32)) -> Result<(), String>,
    ) -> Result<(), String> {
        let exports = self.exports.clone();
        let Some(f) = &exports.http_call_response else {
            return Ok(());
        };
        let counts = (
            response.headers.len() as u32,
            response.body.len() as u32,
            response.trailers.len() as u32,
        );
        self.store.data_mut().call_response = Some(response);
        let result = deliver(self, f, counts);
        self.store.data_mut().call_response = None;
        result
    }

    /// Ends a stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub(crate) fn finish_stream(&mut self, context: u32, request: u64, data: &mut StreamData) {
        let e = self.exports.clone();
        let (done, log, delete) = (&e.done, &e.log, &e.delete);
        let _ = self.with_stream((context, request), data, None, |vm| {
            if let Some(f) = done {
                vm.call(f, context)?;
            }
            if let Some(f) = log {
                vm.call(f, context)?;
            }
            if let Some(f) = delete {
                vm.call(f, context)?;
            }
            Ok(())
        });
    }

    fn with_stream<R>(
        &mut self,
        (context, request): (u32, u64),
        data: &mut StreamData,
        body: Option<bool>,
        f: impl FnOnce(&mut Self) -> Result<R, String>,
    ) -> Result<R, String> {
        data.body_is_response = body;
        let ctx = self.store.data_mut();
        std::mem::swap(&mut ctx.stream, data);
        ctx.in_stream = true;
        ctx.context = context;
        ctx.request = request;
        let result = f(self);
        let ctx = self.store.data_mut();
        std::mem::swap(&mut ctx.stream, data);
        ctx.in_stream = false;
        ctx.context = ROOT_CONTEXT;
        ctx.request = 0;
        result
    }

    /// One call into the filter under the callback budget; a failure breaks
    /// the VM.
    fn call<P, R>(&mut self, func: &TypedFunc<P, R>, params: P) -> Result<R, String>
    where
        P: wasmtime::WasmParams,
        R: wasmtime::WasmResults,
    {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        let budget = self.store.data().shared.config.callback_time;
        let _running = engine::running();
        self.store.set_epoch_deadline(engine::ticks(budget));
        match func.call(&mut self.store, params) {
            Ok(result) => Ok(result),
            Err(err) => {
                let why = describe(&self.store, err, budget).to_string();
                self.broken = Some(why.clone());
                Err(why)
            }
        }
    }
}

/// A failed call in words: the limit it hit, or the trap.
fn describe(store: &Store<VmCtx>, err: wasmtime::Error, budget: Duration) -> wasmtime::Error {
    if store.data().limiter.refused().is_some() {
        let max = store.data().shared.config.max_memory;
        return anyhow!("ran out of memory (the limit is {} MiB)", max >> 20);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => anyhow!("ran past its time budget of {budget:?} per callback"),
        Some(trap) => anyhow!("trapped: {trap}"),
        None => {
            let first = err.to_string();
            anyhow!(
                "failed: {}",
                first.lines().next().unwrap_or("unknown error")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_calls_go_in_a_burst_then_one_per_spacing() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        for _ in 0..ROOT_CALL_BURST {
            assert_eq!(pace.delay(start), Duration::ZERO);
        }
        // Past the burst, each waits one spacing more than the last.
        assert_eq!(pace.delay(start), ROOT_CALL_SPACING);
        assert_eq!(pace.delay(start), ROOT_CALL_SPACING * 2);
        // Calls coming back-to-back forever (a filter calling again from
        // each answer) go at one per spacing.
        let mut now = start + ROOT_CALL_SPACING * 2;
        for _ in 0..100 {
            let delay = pace.delay(now);
            assert!(delay >= ROOT_CALL_SPACING, "{delay:?}");
            now += delay;
        }
        // A quiet spell earns the burst back, and no more.
        let later = now + ROOT_CALL_SPACING * 1000;
        for _ in 0..ROOT_CALL_BURST {
            assert_eq!(pace.delay(later), Duration::ZERO);
        }
        assert!(pace.delay(later) > Duration::ZERO);
    }
}
