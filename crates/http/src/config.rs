//! How the server runs: where it listens and the limits every request is
//! held to. Built-in defaults, then the operator's flags, then each
//! component's own `[component.NAME.limits]`.

use std::net::SocketAddr;
use std::time::Duration;

use tern_manifest::{ByteSize, LimitsConfig};

/// Settings for one `tern serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Limits for components that do not set their own.
    pub limits: LimitsConfig,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// Largest request head, then 431.
    pub max_header_size: ByteSize,
    /// How long in-flight requests may run on after SIGINT/SIGTERM.
    pub grace: Duration,
}

impl ServeConfig {
    /// The address `tern serve` listens on unless told otherwise.
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
    /// Linear memory per instance.
    pub const DEFAULT_MEMORY: ByteSize = ByteSize(128 << 20);
    /// Wall-clock deadline per request.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Request body size.
    pub const DEFAULT_MAX_BODY: ByteSize = ByteSize(16 << 20);
    /// Concurrent requests per component, and in all.
    pub const DEFAULT_MAX_CONCURRENT: u32 = 1000;
    /// Time allowed for a request head.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Request head size.
    pub const DEFAULT_MAX_HEADER_SIZE: ByteSize = ByteSize(32 << 10);
    /// Shutdown grace period.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServeConfig {
            listen,
            limits: LimitsConfig::default(),
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            grace: Self::DEFAULT_GRACE,
        }
    }

    /// The limits one component runs under.
    pub fn limits_for(&self, own: &LimitsConfig) -> RequestLimits {
        RequestLimits {
            memory: own
                .memory
                .or(self.limits.memory)
                .unwrap_or(Self::DEFAULT_MEMORY),
            timeout: own
                .timeout
                .or(self.limits.timeout)
                .map(|d| d.0)
                .unwrap_or(Self::DEFAULT_TIMEOUT),
            max_body: own
                .max_body
                .or(self.limits.max_body)
                .unwrap_or(Self::DEFAULT_MAX_BODY),
            max_concurrent: own
                .max_concurrent
                .or(self.limits.max_concurrent)
                .unwrap_or(Self::DEFAULT_MAX_CONCURRENT),
        }
    }
}

/// The resolved limits of one component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestLimits {
    /// Linear memory and tables of one instance.
    pub memory: ByteSize,
    /// From the head being read to the guest finishing.
    pub timeout: Duration,
    /// Request body size, then 413.
    pub max_body: ByteSize,
    /// Requests in flight for this component, then 503.
    pub max_concurrent: u32,
}
