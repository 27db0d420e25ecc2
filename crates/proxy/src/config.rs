//! What a filter is loaded with: its configuration, limits and policies.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::stream::{CallResponse, HttpCall};

/// What the request gets when a filter fails (traps, runs out of time or
/// memory, or cannot start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// The request is refused with 500 (or its response cut off when the
    /// head already went out): nothing passes a filter that failed.
    #[default]
    Closed,
    /// The request goes on without this filter.
    Open,
}

/// How filter VMs are shared between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Isolation {
    /// One VM per worker thread, used by every request on that thread in
    /// turn (Envoy's model): a filter keeps state between requests.
    #[default]
    Worker,
    /// A fresh VM for each request, dropped at its end.
    Request,
}

/// A proxy-wasm log level, `trace` (0) to `critical` (5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything.
    Trace = 0,
    /// Debugging detail.
    Debug = 1,
    /// The default.
    Info = 2,
    /// Warnings.
    Warn = 3,
    /// Errors.
    Error = 4,
    /// Critical errors only.
    Critical = 5,
}

impl LogLevel {
    /// The level a guest passed, clamped to `critical`.
    pub(crate) fn from_guest(level: u32) -> LogLevel {
        match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }

    /// The level's name, as the manifest writes it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }

    /// Reads a level by name.
    pub fn parse(name: &str) -> Option<LogLevel> {
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical,
        ]
        .into_iter()
        .find(|level| level.name() == name)
    }
}

/// Where a filter's log lines go.
pub trait FilterLog: Send + Sync + 'static {
    /// A line the filter logged at `level` or above the filter's level;
    /// `request` is the request being handled, 0 outside any request (VM
    /// start, ticks, queue callbacks).
    fn log(&self, filter: &str, level: LogLevel, request: u64, message: &str);
}

/// Makes the `dispatch_http_call`s a filter's root context asks for (in
/// `proxy_on_vm_start`, a tick, a queue callback, or the answer to an
/// earlier call): the host's HTTP layer. The upstream was checked against
/// the filter's `upstreams` when the call was made. `None` is a call that
/// failed; the filter then sees no headers and no body.
pub trait CallDispatcher: Send + Sync + 'static {
    /// Makes `call`.
    fn dispatch(
        &self,
        call: HttpCall,
    ) -> Pin<Box<dyn Future<Output = Option<CallResponse>> + Send>>;
}

/// How one filter is loaded and bounded.
#[derive(Clone)]
pub struct FilterConfig {
    /// The filter's name, as the manifest declares it: its `plugin_name`
    /// and its VM id (shared data and queues are per name).
    pub name: String,
    /// The plugin configuration handed to `proxy_on_configure`.
    pub configuration: Vec<u8>,
    /// The VM configuration handed to `proxy_on_vm_start`.
    pub vm_configuration: Vec<u8>,
    /// What a request gets when the filter fails.
    pub failure: FailurePolicy,
    /// VM per worker thread or per request.
    pub isolation: Isolation,
    /// Lines below this level are dropped.
    pub log_level: LogLevel,
    /// Linear memory of one VM.
    pub max_memory: u64,
    /// Wall-clock time one callback may run.
    pub callback_time: Duration,
    /// The upstreams `dispatch_http_call` may name.
    pub upstreams: Vec<String>,
    /// Where log lines go.
    pub log: Arc<dyn FilterLog>,
    /// Who makes the root context's calls; without one, a call outside a
    /// request is refused (`InternalFailure`, with a log line).
    pub dispatcher: Option<Arc<dyn CallDispatcher>>,
}

impl FilterConfig {
    /// The defaults: closed on failure, a VM per worker, `info`, 64MiB,
    /// 100ms per callback, no upstream, no calls outside a request.
    pub fn new(name: impl Into<String>, log: Arc<dyn FilterLog>) -> FilterConfig {
        FilterConfig {
            name: name.into(),
            configuration: Vec::new(),
            vm_configuration: Vec::new(),
            failure: FailurePolicy::Closed,
            isolation: Isolation::Worker,
            log_level: LogLevel::Info,
            max_memory: 64 << 20,
            callback_time: Duration::from_millis(100),
            upstreams: Vec::new(),
            log,
            dispatcher: None,
        }
    }
}
