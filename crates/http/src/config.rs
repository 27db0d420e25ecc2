//! How the server runs: where it listens and the limits every request is
//! held to. Built-in defaults, then the operator's flags, then each
//! component's own `[component.NAME.limits]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tern_manifest::{ByteSize, LimitsConfig, RuntimeConfig};

use crate::tls::TlsConfig;

/// Settings for one `tern serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The certificate and key to serve TLS with; `None` for plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Limits for components that do not set their own.
    pub limits: LimitsConfig,
    /// How long a client may take to send a request head (and finish the
    /// TLS handshake before it); also how long a connection may sit with no
    /// request open.
    pub header_timeout: Duration,
    /// Largest request head, then 431.
    pub max_header_size: ByteSize,
    /// How long in-flight requests may run on after SIGINT/SIGTERM.
    pub grace: Duration,
    /// How long a client may leave a response unread before its connection
    /// is closed.
    pub write_timeout: Duration,
    /// Connections open at once; at the cap the server accepts no more
    /// until one ends.
    pub max_connections: usize,
    /// Store backends and variable values chosen by the operator (under
    /// `tern host`, the app's own variables).
    pub runtime: RuntimeConfig,
    /// Whether app variables are also read from the process environment
    /// (`TERN_VARIABLE_NAME`): yes for `tern serve`, whose operator runs
    /// the one app; no under `tern host`, where the environment is every
    /// app's and each app's variables are set for it alone.
    pub variables_from_env: bool,
    /// Where embedded stores keep their files; `None` for `.tern` beside
    /// the manifest.
    pub state_dir: Option<PathBuf>,
    /// Under `tern host`, the app's name: its key-value stores on Redis
    /// keep their keys under `NAME/`, apart from other apps'.
    pub store_scope: Option<String>,
    /// The most any component may ask for in its own limits (`tern host`'s
    /// operator caps); an app asking for more does not load.
    pub caps: LimitsConfig,
    /// The upstreams (`HOST:PORT`) an app's routes and filters may reach:
    /// `None` for any (`tern serve`: the operator wrote the manifest), a
    /// list under `tern host`, whose apps are deployed by others (empty:
    /// no upstream routes at all).
    pub allowed_upstreams: Option<Vec<String>>,
    /// The non-public addresses components may reach: those their
    /// allowlists name (`tern serve`), or only those the operator lists
    /// as well (`tern host`).
    pub private_outbound: tern_runtime::outbound::PrivateReach,
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
    /// Connections open at once.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// Time a client may read nothing of a response.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Shutdown grace period.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
    /// Time to open an outbound connection.
    pub const DEFAULT_OUTBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Time for an outbound response to start.
    pub const DEFAULT_OUTBOUND_TIMEOUT: Duration = Duration::from_secs(30);
    /// Outbound requests per incoming request.
    pub const DEFAULT_MAX_OUTBOUND_REQUESTS: u32 = 16;

    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServeConfig {
            listen,
            tls: None,
            limits: LimitsConfig::default(),
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            grace: Self::DEFAULT_GRACE,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            runtime: RuntimeConfig::default(),
            variables_from_env: true,
            state_dir: None,
            store_scope: None,
            caps: LimitsConfig::default(),
            allowed_upstreams: None,
            private_outbound: tern_runtime::outbound::PrivateReach::Named,
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
            outbound_connect_timeout: own
                .outbound_connect_timeout
                .or(self.limits.outbound_connect_timeout)
                .map_or(Self::DEFAULT_OUTBOUND_CONNECT_TIMEOUT, |d| d.0),
            outbound_timeout: own
                .outbound_timeout
                .or(self.limits.outbound_timeout)
                .map_or(Self::DEFAULT_OUTBOUND_TIMEOUT, |d| d.0),
            max_outbound_requests: own
                .max_outbound_requests
                .or(self.limits.max_outbound_requests)
                .unwrap_or(Self::DEFAULT_MAX_OUTBOUND_REQUESTS),
            cpu_time: own.cpu_time.or(self.limits.cpu_time).map(|d| d.0),
        }
    }
}

impl RequestLimits {
    /// The first of these limits above `caps`, as the manifest key and a
    /// sentence naming both values.
    pub fn over(&self, caps: &LimitsConfig) -> Option<(&'static str, String)> {
        let over = |key, asked: String, cap: String| {
            Some((key, format!("{asked} is above the host's limit of {cap}")))
        };
        if let Some(cap) = caps.memory.filter(|cap| self.memory > *cap) {
            return over("memory", self.memory.to_string(), cap.to_string());
        }
        if let Some(cap) = caps.timeout.filter(|cap| self.timeout > cap.0) {
            let asked = tern_manifest::HumanDuration(self.timeout);
            return over("timeout", asked.to_string(), cap.to_string());
        }
        if let Some(cap) = caps.max_body.filter(|cap| self.max_body > *cap) {
            return over("max_body", self.max_body.to_string(), cap.to_string());
        }
        if let Some(cap) = caps
            .cpu_time
            .filter(|cap| self.cpu_time.is_none_or(|asked| asked > cap.0))
        {
            let asked = self.cpu_time.map_or("no limit".into(), |d| {
                tern_manifest::HumanDuration(d).to_string()
            });
            return over("cpu_time", asked, cap.to_string());
        }
        if let Some(cap) = caps.max_concurrent.filter(|cap| self.max_concurrent > *cap) {
            return over(
                "max_concurrent",
                self.max_concurrent.to_string(),
                cap.to_string(),
            );
        }
        None
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
    /// Time to open an outbound connection.
    pub outbound_connect_timeout: Duration,
    /// Time for an outbound response to start.
    pub outbound_timeout: Duration,
    /// Outbound requests per incoming request.
    pub max_outbound_requests: u32,
    /// Time one request may run guest code; `None`: only the deadline.
    pub cpu_time: Option<Duration>,
}
