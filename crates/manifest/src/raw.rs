//! The manifest exactly as written: serde structs that check the TOML's shape
//! and keep spans so that later checks can point at a line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use crate::{ByteSize, Download, Executor, HumanDuration, Route};

/// Read first, on its own, so that a manifest from a newer Tern is refused
/// for its version rather than for keys this Tern does not know, and so
/// that a Spin manifest (`spin_manifest_version`, no `manifest_version`) is
/// told apart from Tern's own.
#[derive(Deserialize)]
pub(crate) struct RawVersion {
    pub(crate) manifest_version: Option<Spanned<toml::Value>>,
    pub(crate) spin_manifest_version: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawManifest {
    #[serde(rename = "manifest_version")]
    _manifest_version: IgnoredAny,
    pub(crate) app: Option<RawApp>,
    #[serde(default)]
    pub(crate) route: Vec<RawRoute>,
    #[serde(default)]
    pub(crate) component: BTreeMap<Spanned<String>, RawComponent>,
    #[serde(default)]
    pub(crate) variables: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
    #[serde(default)]
    pub(crate) nn: RawNn,
    #[serde(default)]
    pub(crate) upstream: BTreeMap<Spanned<String>, RawUpstream>,
    #[serde(default)]
    pub(crate) filter: BTreeMap<Spanned<String>, RawFilter>,
    /// Routes another front end has already checked and resolved, used
    /// instead of `route` (not read from the file).
    #[serde(skip)]
    pub(crate) resolved_routes: Option<Vec<Route>>,
}

impl RawManifest {
    /// A manifest read from another format (a Spin manifest), for
    /// `resolve::resolve` to check as it checks a `tern.toml`. Its routes
    /// are resolved already: Spin's have `:name` segments and static
    /// responses, and its front end checks that the app has something to
    /// serve (a Spin app may have Redis triggers only).
    pub(crate) fn new(
        app: RawApp,
        routes: Vec<Route>,
        component: BTreeMap<Spanned<String>, RawComponent>,
        variables: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
    ) -> Self {
        RawManifest {
            _manifest_version: IgnoredAny,
            app: Some(app),
            route: Vec::new(),
            component,
            variables,
            nn: RawNn::default(),
            upstream: BTreeMap::new(),
            filter: BTreeMap::new(),
            resolved_routes: Some(routes),
        }
    }
}

/// The `[nn]` table.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table such as `[nn.models.NAME]`")]
pub(crate) struct RawNn {
    #[serde(default)]
    pub(crate) models: BTreeMap<Spanned<String>, RawNnModel>,
}

/// A `[nn.models.NAME]` table. Its values are read as any TOML value and
/// checked in `nn.rs`, so that a wrong type is reported naming the key.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ encoding = \"ggml\", path = \"models/model.gguf\" }`"
)]
pub(crate) struct RawNnModel {
    pub(crate) encoding: Spanned<toml::Value>,
    pub(crate) path: Spanned<toml::Value>,
    pub(crate) target: Option<Spanned<toml::Value>>,
    pub(crate) engine: Option<Spanned<toml::Value>>,
    pub(crate) max_concurrency: Option<Spanned<toml::Value>>,
    pub(crate) max_tokens: Option<Spanned<toml::Value>>,
    pub(crate) context_length: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ default = \"...\" }` or `{ required = true }`"
)]
pub(crate) struct RawVariable {
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) required: bool,
    #[serde(default)]
    pub(crate) secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with `name = \"...\"`")]
pub(crate) struct RawApp {
    pub(crate) name: Spanned<String>,
    pub(crate) description: Option<String>,
    pub(crate) hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with `path` and `component` (or `upstream`)"
)]
pub(crate) struct RawRoute {
    pub(crate) path: Spanned<String>,
    pub(crate) component: Option<Spanned<String>>,
    pub(crate) upstream: Option<Spanned<String>>,
    pub(crate) filters: Option<Spanned<Vec<Spanned<String>>>>,
}

/// An `[upstream.NAME]` table.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ url = \"http://127.0.0.1:8080\" }`"
)]
pub(crate) struct RawUpstream {
    pub(crate) url: Spanned<String>,
    pub(crate) connect_timeout: Option<HumanDuration>,
    pub(crate) timeout: Option<HumanDuration>,
}

/// A `[filter.NAME]` table.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ source = \"auth.wasm\" }`"
)]
pub(crate) struct RawFilter {
    pub(crate) source: Spanned<String>,
    pub(crate) configuration: Option<String>,
    pub(crate) vm_configuration: Option<String>,
    pub(crate) failure: Option<Spanned<String>>,
    pub(crate) isolation: Option<Spanned<String>>,
    pub(crate) log_level: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) upstreams: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) limits: RawFilterLimits,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ memory = \"32MiB\", callback_time = \"50ms\" }`"
)]
pub(crate) struct RawFilterLimits {
    pub(crate) memory: Option<Spanned<ByteSize>>,
    pub(crate) callback_time: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with `source = \"...\"`")]
pub(crate) struct RawComponent {
    /// A path; for a download, the URL, spanning the source table.
    pub(crate) source: Spanned<String>,
    /// What a Spin manifest's `source = { url, digest }` asks for, checked
    /// (never read from a `tern.toml`).
    #[serde(skip)]
    pub(crate) download: Option<Download>,
    pub(crate) executor: Option<Executor>,
    #[serde(default)]
    pub(crate) environment: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub(crate) files: Vec<RawFileMount>,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    pub(crate) instances: Option<RawInstances>,
    #[serde(default)]
    pub(crate) key_value_stores: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) sqlite_databases: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) nn_models: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) nn_load_bytes: bool,
    #[serde(default)]
    pub(crate) allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) variables: BTreeMap<Spanned<String>, Spanned<String>>,
    pub(crate) build: Option<RawBuild>,
    /// Set by the Spin translation only (see `spin_files`).
    #[serde(skip)]
    pub(crate) staged_files: Option<Vec<std::path::PathBuf>>,
    /// Set by the Spin translation only, from a trigger's `executor`.
    #[serde(skip)]
    pub(crate) wagi: Option<crate::WagiOptions>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ command = \"...\" }`"
)]
pub(crate) struct RawBuild {
    pub(crate) command: Spanned<String>,
    pub(crate) workdir: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) watch: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ source = \"...\", destination = \"/...\" }`"
)]
pub(crate) struct RawFileMount {
    pub(crate) source: Spanned<String>,
    pub(crate) destination: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ reuse = 128, concurrent = 16, idle = \"1s\" }`"
)]
pub(crate) struct RawInstances {
    pub(crate) reuse: Option<Spanned<u32>>,
    pub(crate) concurrent: Option<Spanned<u32>>,
    pub(crate) idle: Option<HumanDuration>,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ memory = \"64MiB\" }`"
)]
pub(crate) struct RawLimits {
    pub(crate) memory: Option<Spanned<ByteSize>>,
    pub(crate) timeout: Option<HumanDuration>,
    pub(crate) max_body: Option<ByteSize>,
    pub(crate) max_concurrent: Option<Spanned<u32>>,
    pub(crate) outbound_connect_timeout: Option<HumanDuration>,
    pub(crate) outbound_timeout: Option<HumanDuration>,
    pub(crate) max_outbound_requests: Option<u32>,
    pub(crate) cpu_time: Option<HumanDuration>,
}
