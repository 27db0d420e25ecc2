//! What a plugin is granted and the limits it runs under, as data. Nothing
//! is granted by default; every limit has a bound by default.

use std::collections::BTreeMap;
use std::time::Duration;

use tern_manifest::OutboundHost;
use tern_runtime::{ByteSize, DirGrant};

/// Everything a plugin may reach. `Grants::default()` grants nothing: no
/// files, no environment, no network, no configuration values.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// Directories a WASI plugin sees (preopens).
    pub dirs: Vec<DirGrant>,
    /// Environment variables a WASI plugin sees, as `(name, value)`.
    pub env: Vec<(String, String)>,
    /// Where the Extism ABI's `http_request` may go. An entry is a Tern
    /// outbound host (`https://api.example.com`, `http://127.0.0.1:8080`,
    /// `https://*.example.com`) or an Extism-style bare host name (see
    /// [`Grants::parse_host`]).
    pub allowed_hosts: Vec<OutboundHost>,
    /// Values the Extism ABI's `config_get` reads.
    pub config: BTreeMap<String, String>,
}

impl Grants {
    /// Parses an `allowed_hosts` entry: a Tern outbound host with its
    /// scheme (`https://api.example.com`, `http://127.0.0.1:8080`), or an
    /// Extism-style bare host (`api.example.com`, `*.example.com`, `*`),
    /// which Extism matches on the host alone: `http` and `https` on any
    /// port. Either way a name that resolves to a non-public address is
    /// refused unless the entry names that host itself.
    pub fn parse_host(entry: &str) -> Result<Vec<OutboundHost>, String> {
        if entry.contains("://") {
            return Ok(vec![entry.parse()?]);
        }
        let any_port = if entry.ends_with(']') || !entry.contains(':') {
            ":*"
        } else {
            ""
        };
        ["http", "https"]
            .iter()
            .map(|scheme| format!("{scheme}://{entry}{any_port}").parse())
            .collect()
    }
}

/// Bounds on one call of a plugin.
#[derive(Clone, Debug)]
pub struct PluginLimits {
    /// Instructions one call may run (wasmtime fuel); `None` counts them
    /// without a bound.
    pub fuel: Option<u64>,
    /// Wall-clock time one call may take.
    pub timeout: Duration,
    /// Linear memory one instance may hold, with the Extism ABI's host-side
    /// memory counted in.
    pub max_memory: ByteSize,
    /// Largest input a call takes.
    pub max_input: ByteSize,
    /// Largest output a call may produce. For a component it also bounds
    /// what the plugin hands the host in one crossing (its results, a host
    /// function's or WASI call's arguments), 1 MiB at least, checked while
    /// wasmtime lifts it.
    pub max_output: ByteSize,
    /// Log bytes kept per call; the rest is dropped and the report says so.
    pub max_log: ByteSize,
    /// Largest total of an Extism plugin's variables.
    pub max_vars: ByteSize,
    /// Largest response body an Extism `http_request` reads.
    pub max_http_response: ByteSize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            fuel: None,
            timeout: Duration::from_secs(10),
            max_memory: ByteSize(256 << 20),
            max_input: ByteSize(64 << 20),
            max_output: ByteSize(64 << 20),
            max_log: ByteSize(64 << 10),
            max_vars: ByteSize(1 << 20),
            max_http_response: ByteSize(16 << 20),
        }
    }
}

/// How to load a plugin: its grants, its limits and the host functions it
/// may import.
#[derive(Clone, Default)]
pub struct PluginConfig {
    /// What the plugin may reach.
    pub grants: Grants,
    /// Bounds on each call.
    pub limits: PluginLimits,
    /// Functions the embedder provides.
    pub functions: crate::HostFunctions,
    /// The least severe log lines kept in the report; `None` keeps none,
    /// and Extism plugins then skip logging altogether (as under Extism).
    pub log_level: Option<crate::LogLevel>,
}

impl std::fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginConfig")
            .field("grants", &self.grants)
            .field("limits", &self.limits)
            .field("functions", &self.functions.len())
            .field("log_level", &self.log_level)
            .finish()
    }
}
