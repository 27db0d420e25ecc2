//! What every per-request instance shares, whichever executor runs it: the
//! grants from the manifest, the store's limits, and how a failed guest is
//! described.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tern_manifest::ByteSize;
use tern_runtime::{Capabilities, DirGrant, EnvGrant, MemoryLimiter, Services};
use wasmtime::component::ResourceTableError;
use wasmtime::{Result, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::config::RequestLimits;
use crate::events::EventSink;
use crate::guest_output::{GuestOutput, OutputState};
use crate::outbound::OutboundPolicy;

/// A component's grants and limits, resolved once at start.
pub(crate) struct Grants {
    pub(crate) id: Arc<str>,
    pub(crate) capabilities: Capabilities,
    pub(crate) limits: RequestLimits,
    /// Key-value stores and configuration variables.
    pub(crate) services: Services,
    /// Where outbound HTTP may go.
    pub(crate) outbound: Arc<OutboundPolicy>,
}

impl Grants {
    /// The grants of `component`, which may send requests where `allowed`
    /// says (its `allowed_outbound_hosts`, templates filled in).
    pub(crate) fn new(
        component: &tern_manifest::Component,
        allowed: Vec<tern_manifest::OutboundHost>,
        private: tern_runtime::outbound::PrivateReach,
        limits: RequestLimits,
        services: Services,
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Self {
        let capabilities = Capabilities {
            dirs: component
                .files
                .iter()
                .map(|mount| DirGrant {
                    host: mount.source.clone(),
                    guest: mount.destination.clone(),
                    read_only: true,
                })
                .collect(),
            env: component
                .environment
                .iter()
                .map(|(k, v)| EnvGrant::Set(k.clone(), v.clone()))
                .collect(),
            net: Vec::new(),
        };
        let outbound = OutboundPolicy {
            allowed,
            private,
            connect_timeout: limits.outbound_connect_timeout,
            first_byte_timeout: limits.outbound_timeout,
            max_requests: limits.max_outbound_requests,
            tls,
        };
        Grants {
            id: component.id.as_str().into(),
            capabilities,
            limits,
            services,
            outbound: Arc::new(outbound),
        }
    }

    /// A WASI context granting only what the manifest grants, with the
    /// guest's stdout and stderr going to the log, under `output`'s request.
    pub(crate) fn wasi(
        &self,
        sink: &Arc<dyn EventSink>,
        output: &Arc<OutputState>,
    ) -> Result<WasiCtxBuilder> {
        let mut wasi = WasiCtxBuilder::new();
        self.capabilities.apply(&mut wasi)?;
        let output = |stream| GuestOutput {
            sink: sink.clone(),
            component: self.id.clone(),
            stream,
            state: output.clone(),
        };
        wasi.stdout(output("stdout")).stderr(output("stderr"));
        Ok(wasi)
    }
}

/// Host memory a wasi-http guest makes Tern hold on its behalf, outside its
/// linear memory, is bounded by bounding each kind of thing it can hold and
/// how many it may hold at once: the instance's resource table takes at
/// most [`max_host_resources`] entries (wasmtime's default is a million),
/// and no entry holds more than [`MAX_ENTRY_BYTES`] on the host. The
/// product stays within the instance's memory limit, so a guest's host
/// memory is bounded by that limit again, not by the machine.
///
/// The header fields a guest builds (wasmtime's in-memory measure, which
/// is above their wire size).
pub(crate) const MAX_FIELDS_SIZE: usize = 64 << 10;

/// How much one write to an outgoing body may carry; wasmtime buffers two
/// such chunks per body until they are sent.
pub(crate) const OUTGOING_BODY_CHUNK: usize = 64 << 10;

/// The most any one resource-table entry holds on the host: a body's
/// buffered chunks, a fields resource.
const MAX_ENTRY_BYTES: u64 = 256 << 10;

/// How many resources an instance with linear memory `memory` may hold at
/// once: enough for any honest handler (each outbound request takes a few),
/// few enough that all of them full stay within `memory`.
pub(crate) fn max_host_resources(memory: ByteSize) -> usize {
    usize::try_from((memory.0 / MAX_ENTRY_BYTES).clamp(256, 16_384)).unwrap_or(16_384)
}

/// The most one epoch check charges against a CPU-time budget: the time
/// since the guest last resumed is its own running time, unless it waited
/// on I/O meanwhile, which is not its to pay for beyond this.
const MAX_CHARGE: Duration = Duration::from_millis(2);

/// A guest stopped for running longer than its CPU-time budget.
#[derive(Debug)]
pub(crate) struct CpuTimeExceeded(pub(crate) Duration);

impl std::fmt::Display for CpuTimeExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CPU time budget of {:?} exceeded", self.0)
    }
}

impl std::error::Error for CpuTimeExceeded {}

/// Bounds a fresh store: memory through the limiter, time through epoch
/// checks that yield to other requests each tick, stop the guest once it
/// has run its `cpu_time` budget, and interrupt it once its deadline has
/// passed.
pub(crate) fn limit_store<T: Send + 'static>(
    store: &mut Store<T>,
    deadline: Instant,
    cpu_time: Option<Duration>,
    limiter: fn(&mut T) -> &mut MemoryLimiter,
) {
    store.limiter(move |data| limiter(data));
    store.set_epoch_deadline(1);
    let start = Instant::now();
    // When the guest last resumed, in nanoseconds after `start`.
    let resumed = Arc::new(AtomicU64::new(0));
    let mut used = Duration::ZERO;
    store.epoch_deadline_callback(move |_| {
        let now = Instant::now();
        if now >= deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        if let Some(budget) = cpu_time {
            let ran =
                now.duration_since(start) - Duration::from_nanos(resumed.load(Ordering::Relaxed));
            used += ran.min(MAX_CHARGE);
            if used > budget {
                return Err(CpuTimeExceeded(budget).into());
            }
        }
        // tokio's yield resumes the guest only after the runtime has
        // polled for I/O, so requests waiting on sockets get their turn.
        let resumed = resumed.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                resumed.store(nanos, Ordering::Relaxed);
            }),
        ))
    });
}

/// Why a guest did not finish its request.
#[derive(Debug, PartialEq)]
pub(crate) enum Failure {
    /// The request's deadline passed.
    Deadline,
    /// The guest trapped; the message is for the log only.
    Trap(String),
    /// The guest exited with a nonzero code.
    Exit(i32),
    /// Tern could not run the guest (instantiation failed, ...).
    Host(String),
    /// The guest returned without producing a response.
    NoResponse,
    /// The response body was cut short after its head went out: the
    /// guest left it open, or it ended in an error.
    BodyCut(String),
    /// The request body was larger than allowed.
    BodyTooLarge,
    /// The guest ran longer than its CPU-time budget.
    CpuTime,
}

impl Failure {
    /// How a guest run bounded by `tokio::time::timeout_at` ended: `exit(0)`
    /// is a normal end, like returning.
    pub(crate) fn settle(
        run: Result<Result<()>, tokio::time::error::Elapsed>,
        limiter: &MemoryLimiter,
        limits: &RequestLimits,
    ) -> Result<(), Failure> {
        match run {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => Ok(()),
                _ => Err(Failure::from_error(err, Some(limiter), limits)),
            },
            Err(_elapsed) => Err(Failure::Deadline),
        }
    }

    /// Describes a wasmtime error from running the guest; the limiter of
    /// its store, when at hand, tells a refused memory.
    pub(crate) fn from_error(
        err: wasmtime::Error,
        limiter: Option<&MemoryLimiter>,
        limits: &RequestLimits,
    ) -> Self {
        if let Some(exit) = err.downcast_ref::<I32Exit>() {
            return Failure::Exit(exit.0);
        }
        if err.downcast_ref::<CpuTimeExceeded>().is_some() {
            return Failure::CpuTime;
        }
        if let Some(ResourceTableError::Full) = err.downcast_ref::<ResourceTableError>() {
            return Failure::Trap(format!(
                "the instance holds {} host resources (headers, bodies, streams), its limit \
                 for a memory limit of {}",
                max_host_resources(limits.memory),
                limits.memory
            ));
        }
        let Some(trap) = err.downcast_ref::<Trap>() else {
            return Failure::Host(format!("{err:#}"));
        };
        if *trap == Trap::Interrupt {
            return Failure::Deadline;
        }
        let message = trap.to_string();
        let mut message = message
            .strip_prefix("wasm trap: ")
            .unwrap_or(&message)
            .to_string();
        if let Some(asked) = limiter.and_then(MemoryLimiter::refused) {
            message.push_str(&format!(
                " (the guest asked for {asked} of memory, above its limit of {})",
                limits.memory
            ));
        }
        Failure::Trap(message)
    }

    /// The status a client gets when nothing was sent yet.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Failure::Deadline => 504,
            Failure::BodyTooLarge => 413,
            // As a guest over its share is answered by the peers that
            // bound CPU time (Cloudflare's 1102).
            Failure::CpuTime => 503,
            _ => 500,
        }
    }

    /// One line for the access log.
    pub(crate) fn describe(&self, limits: &RequestLimits) -> String {
        match self {
            Failure::Deadline => format!("deadline of {:?} exceeded", limits.timeout),
            Failure::Trap(message) => format!("guest trapped: {message}"),
            Failure::Exit(code) => format!("guest exited with code {code}"),
            Failure::Host(message) => message.clone(),
            Failure::NoResponse => "guest returned without setting a response".into(),
            Failure::BodyCut(why) => format!("response body cut short: {why}"),
            Failure::BodyTooLarge => format!("request body larger than {}", limits.max_body),
            Failure::CpuTime => format!(
                "CPU time budget of {:?} exceeded",
                limits.cpu_time.unwrap_or_default()
            ),
        }
    }
}
