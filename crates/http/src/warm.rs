//! Warm instances (`[component.ID.instances]`): a wasi-http component's
//! instance kept after a request and given the next ones, up to `reuse`
//! requests in all and `concurrent` at a time (a WASI 0.3 handler; a 0.2
//! one takes one at a time), and dropped after `idle` without work.
//!
//! wasmtime-wasi-http's `ProxyHandler` runs the instances: one worker task
//! per instance, owning its store and running its event loop, takes
//! requests from a queue shared by every server thread. Tern gives it the
//! store (the component's grants, its memory limit), a deadline per
//! request (past it, the request gets 504 and the instance takes no more
//! and is dropped once its other requests are done or past theirs), and
//! when an instance fails (a trap, a deadline), it tells the responses
//! still streaming from it, so they end as failures, not cleanly.
//!
//! What does not hold here as it does for a fresh instance: state may
//! survive from one request to the next of the component (never between
//! components or apps); a trap fails every request inside that instance;
//! the guest's output, outbound request count and output budget follow the
//! request that started last.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tern_manifest::InstancesConfig;
use wasmtime::component::{Component, GuestTaskId};
use wasmtime::{Engine, Result, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, ProxyHandler, ProxyPre,
    ShouldAccept, TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};

use crate::body::{EndsOnDrop, FailureFlag, GuestBody};
use crate::events::{EventSink, RequestId};
use crate::executor::Exchange;
use crate::guest_output::OutputState;
use crate::instance::{Failure, Grants};
use crate::outbound::SelfOrigin;
use crate::wasi_http::{HttpHost, HttpLinkers, body_verdict, check_head, guest_request};

/// A component served by warm instances.
pub(crate) struct WarmExecutor {
    engine: Engine,
    pre: Arc<ProxyPre<HttpHost>>,
    config: InstancesConfig,
    /// Made on the first request, which brings the event sink.
    handler: OnceLock<ProxyHandler<Warm>>,
}

impl WarmExecutor {
    /// Links and pre-instantiates `component` (`p3`: a WASI 0.3 handler).
    pub(crate) fn new(
        linkers: &HttpLinkers,
        component: &Component,
        p3: bool,
        config: InstancesConfig,
        imports: crate::wasi_http::Imports,
    ) -> Result<Self> {
        let pre = linkers.link(component, p3, imports)?;
        let pre = if p3 {
            ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?)
        } else {
            ProxyPre::P2(wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre)?)
        };
        Ok(WarmExecutor {
            engine: linkers.engine().clone(),
            pre: Arc::new(pre),
            config,
            handler: OnceLock::new(),
        })
    }

    /// Whether the component is a WASI 0.3 handler.
    pub(crate) fn p3(&self) -> bool {
        matches!(*self.pre, ProxyPre::P3(_))
    }

    pub(crate) async fn run(
        &self,
        grants: &Arc<Grants>,
        exchange: Exchange,
    ) -> Result<(), Failure> {
        let (request, reply, ctx, sink) = guest_request(exchange);
        let handler = self.handler.get_or_init(|| {
            ProxyHandler::new(Warm {
                engine: self.engine.clone(),
                pre: self.pre.clone(),
                grants: grants.clone(),
                config: self.config,
                sink: sink.clone(),
                latest: Mutex::new(ctx.id),
            })
        });
        *handler
            .state()
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = ctx.id;
        let state = reply.state();
        let mut over = EndsOnDrop::new(state.failed.clone());
        let retire = Arc::new(OnceLock::new());
        let started = RequestStart {
            id: ctx.id,
            deadline: ctx.deadline,
            failed: state.failed.clone(),
            retire: retire.clone(),
            origin: ctx.origin.clone(),
        };
        // A guest that failed a request without trapping (no response, an
        // error code) may be in a state that fails the next one too (a
        // JavaScript engine's `FetchEvent` that cannot be reused, say): its
        // instance takes no more requests.
        let retire_instance = || {
            if let Some(flag) = retire.get() {
                flag.store(true, Ordering::Release);
            }
        };
        let request = request.map(|body| body.boxed_unsync());
        let handled =
            tokio::time::timeout_at(ctx.deadline.into(), handler.handle(started, request));
        let mut response = match handled.await {
            Err(_elapsed) => return Err(Failure::Deadline),
            Ok(Err(err)) => {
                retire_instance();
                return Err(failure(err, grants));
            }
            Ok(Ok(response)) => response,
        };
        if ctx.body_exceeded.load(Ordering::Acquire) {
            return Err(Failure::BodyTooLarge);
        }
        if let Err(why) = check_head(&mut response) {
            retire_instance();
            reply.refuse(why);
            return Ok(());
        }
        let failed = state.failed.clone();
        reply.send(response.map(|body| GuestBody::new(body, failed)));
        over.disarm();
        // The body streams from the instance; the request is over when it
        // has ended, and within its deadline.
        match tokio::time::timeout_at(ctx.deadline.into(), state.failed.ended()).await {
            Ok(()) => body_verdict(&state),
            Err(_elapsed) => {
                state.failed.set();
                Err(Failure::Deadline)
            }
        }
    }
}

/// Describes why `ProxyHandler::handle` failed.
fn failure(err: wasmtime::Error, grants: &Grants) -> Failure {
    if err.is::<ExpirationError>() {
        Failure::Deadline
    } else if err.is::<TrapOrPanicError>() {
        Failure::Trap("the warm instance serving the request failed (its log line says why)".into())
    } else if let Some(error) = err.downcast_ref::<InstantiationError<RequestStart>>() {
        Failure::Host(format!("instantiating: {error}"))
    } else {
        Failure::from_error(err, None, &grants.limits)
    }
}

/// What a request brings to the instance that takes it.
struct RequestStart {
    id: RequestId,
    deadline: Instant,
    /// Set if the instance fails while the response streams.
    failed: FailureFlag,
    /// Filled in by the instance that takes the request: its retirement
    /// flag, for the request to set when the guest failed it.
    retire: Arc<OnceLock<Arc<AtomicBool>>>,
    /// Where its requests to the app itself go.
    origin: Option<SelfOrigin>,
}

/// How the instances of one component are made and kept.
struct Warm {
    engine: Engine,
    pre: Arc<ProxyPre<HttpHost>>,
    grants: Arc<Grants>,
    config: InstancesConfig,
    sink: Arc<dyn EventSink>,
    /// The request that came last: a new instance's output is logged under
    /// it until its first request starts.
    latest: Mutex<RequestId>,
}

impl HandlerState for Warm {
    type StoreData = HttpHost;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> Result<Instance<HttpHost, Expiry, Worker>> {
        let latest = *self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let host = HttpHost::for_instance(&self.grants, &self.sink, OutputState::new(latest))
            .map_err(|failure| {
                wasmtime::format_err!("{}", failure.describe(&self.grants.limits))
            })?;
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limiter);
        // Each epoch tick yields to other requests; the deadlines are kept
        // from outside, by the worker (`Expiry`, `on_request_start`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let proxy = self.pre.instantiate_async(&mut store).await?;
        let timeout = self.grants.limits.timeout;
        Ok(Instance {
            store,
            proxy,
            view: <HttpHost as WasiHttpView>::http,
            expiration: Expiry {
                idle: self.config.idle.0,
                busy: timeout,
                timer: Box::pin(tokio::time::sleep(timeout)),
            },
            state: Worker {
                retired: Arc::new(AtomicBool::new(false)),
                grants: self.grants.clone(),
                reuse: self.config.reuse as usize,
                concurrent: self.config.concurrent as usize,
                sink: self.sink.clone(),
            },
        })
    }
}

/// When an instance is dropped: after `idle` without requests, or when its
/// most recent request has run past the request timeout (what stops a
/// guest spinning in wasm code, whose event loop cannot see its deadline).
struct Expiry {
    idle: Duration,
    busy: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        let limit = match status {
            WorkerStatus::Idle => this.idle,
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.busy,
        };
        let at = tokio::time::Instant::from_std(start + limit);
        if this.timer.deadline() != at {
            this.timer.as_mut().reset(at);
        }
        this.timer.as_mut().poll(cx)
    }
}

/// One instance's bounds, and whom to tell when it fails.
struct Worker {
    /// Set when a request this instance took failed: it takes no more.
    retired: Arc<AtomicBool>,
    grants: Arc<Grants>,
    reuse: usize,
    concurrent: usize,
    sink: Arc<dyn EventSink>,
}

impl WorkerState for Worker {
    type StoreData = HttpHost;
    type RequestData = RequestStart;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse || self.retired.load(Ordering::Acquire) {
            ShouldAccept::Never
        } else if concurrent >= self.concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HttpHost>,
        request: RequestStart,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let host = store.data_mut();
        host.output.start(request.id);
        host.hooks.request = request.id;
        host.hooks.sent = 0;
        // The store has one origin for its requests in flight together;
        // only responses still streaming need telling if the instance fails.
        host.hooks.track(request.failed, request.origin);
        let _ = request.retire.set(self.retired.clone());
        Box::pin(tokio::time::sleep_until(request.deadline.into()))
    }

    fn drop(&self, store: Store<HttpHost>, result: Result<()>) {
        let Err(error) = result else { return };
        let host = store.data();
        for (failed, _) in &host.hooks.in_flight {
            failed.set();
        }
        // The handler's own word for an instance past its deadline.
        let why = if error.to_string() == "guest timed out" {
            Failure::Deadline
        } else {
            Failure::from_error(error, Some(&host.limiter), &self.grants.limits)
        };
        let message = format!(
            "warm instance dropped: {}",
            why.describe(&self.grants.limits)
        );
        self.sink
            .note(&self.grants.id, host.output.request(), &message);
    }
}
