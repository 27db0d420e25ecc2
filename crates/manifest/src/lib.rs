//! Tern's app manifest (`tern.toml`) and the units its limits are written in.
//!
//! A Spin manifest (`spin.toml`, `spin_manifest_version = 2`) is read too,
//! wherever a `tern.toml` is: it is told apart by its content and made into
//! the same [`Manifest`]. What Tern does not support yet in it (registry
//! sources, `ai_models`...) is an error naming the Spin key,
//! never silently ignored.
//!
//! [`load`] reads a manifest and checks everything that can be checked
//! without compiling wasm: the TOML's shape (unknown keys are errors), the
//! version, route paths, component ids, that sources, mounted directories
//! and model files exist and stay inside the app directory (unless the
//! operator allows otherwise, see [`LoadOptions`]), limits, and that a
//! component is granted only models the app declares. Every error is one line
//! naming the file, line and key:
//!
//! ```
//! # use std::path::Path;
//! let text = "manifest_version = 1\n[app]\nname = \"shop\"\ncolour = \"blue\"\n";
//! let error = tern_manifest::parse(text, Path::new("shop/tern.toml")).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "shop/tern.toml:4:1: unknown key `colour`, expected one of `name`, `description`, `hosts`"
//! );
//! ```
//!
//! This crate never imports wasmtime: it only reads and validates data.
//! What the engine finds later (a source that is not a component, say) can
//! still point at the manifest with [`Manifest::error_at`].

mod download;
mod error;
mod nn;
mod outbound;
mod proxy;
mod raw;
mod resolve;
mod route;
pub mod runtime_config;
mod spin;
mod spin_files;
pub mod units;
mod variables;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Header fields that frame a response or its connection, which only the
/// server sets: a guest or a manifest that set them could end a response
/// early and forge a second one on a kept-alive connection, or make the
/// client wait for bytes that never come.
pub const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

pub use download::{ComponentSource, Download};
pub use error::{Location, ManifestError};
pub use nn::{NnEncoding, NnEngine, NnModel, NnTarget};
pub use outbound::{
    COMPONENTS_DOMAIN, OutboundHost, RequestHost, canonical_ip, default_port, is_public,
};
pub use proxy::{FilterFailure, FilterIsolation, FilterSpec, Upstream};
pub use route::{
    Route, RoutePattern, RouteSegment, RouteTarget, RouteTemplate, Specificity, StaticResponse,
};
pub use runtime_config::RuntimeConfig;
pub use units::{ByteSize, HumanDuration, civil_from_days};
pub use variables::{
    ComponentVariables, MissingVariable, OutboundTemplate, Template, Variable, env_name,
    is_valid_name as is_valid_variable_name,
};

use error::Source;

/// The file [`load`] reads when given a directory.
pub const MANIFEST_FILE_NAME: &str = "tern.toml";

/// The largest manifest read (`tern.toml` or `spin.toml`).
pub const MAX_MANIFEST_SIZE: u64 = 1 << 20;

/// The file [`load`] reads when given a directory without a
/// [`MANIFEST_FILE_NAME`]: a Spin manifest.
pub const SPIN_MANIFEST_FILE_NAME: &str = "spin.toml";

/// A checked manifest: every route names a defined component (or, in a
/// Spin manifest, answers with a static response), every source path and
/// model file exists, and every model a component is granted is declared.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest file as given, for messages.
    pub path: PathBuf,
    /// The manifest's directory (`.` when `path` is a bare file name);
    /// relative when `path` is.
    pub dir: PathBuf,
    /// The `[app]` table.
    pub app: App,
    /// The `[[route]]` entries (a Spin manifest's HTTP triggers), in file
    /// order.
    pub routes: Vec<Route>,
    /// The `[component.ID]` tables, by id; some may be used by no route.
    pub components: BTreeMap<String, Component>,
    /// The `[variables]` table: app variables, by name.
    pub variables: BTreeMap<String, Variable>,
    /// The `[nn.models.NAME]` tables: models for WASI-NN, by name; a
    /// component uses those its `nn_models` names. Empty for a Spin
    /// manifest, whose `ai_models` are refused.
    pub nn_models: BTreeMap<String, NnModel>,
    /// The `[upstream.NAME]` tables, and every URL a route names inline
    /// (by that URL).
    pub upstreams: BTreeMap<String, Upstream>,
    /// The `[filter.NAME]` tables: proxy-wasm filters.
    pub filters: BTreeMap<String, FilterSpec>,
    /// The Redis triggers of a Spin manifest (`[[trigger.redis]]`), in file
    /// order; a component named here has no route unless one names it too.
    pub redis_triggers: Vec<RedisTrigger>,
    /// Whether this is a Spin manifest (`spin.toml`): its apps also get
    /// Spin's request headers and read variables from `SPIN_VARIABLE_*`.
    pub spin: bool,
    /// The `source` and `files` entries, and the model `path`s, that lead
    /// outside the app directory: models first, by name, then components
    /// in order; empty unless [`LoadOptions::allow_outside_app_dir`] let
    /// them through.
    pub outside_app_dir: Vec<OutsideAppDir>,
}

/// A `source` or `files` entry, or a model's `path`, leading outside the
/// app directory (the manifest's directory), which only the operator can
/// allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideAppDir {
    /// The component whose entry it is; for [`OutsideGrant::NnModel`], the
    /// model's name.
    pub component: String,
    /// What the entry gives the component.
    pub grant: OutsideGrant,
    /// Where the entry leads, symlinks followed.
    pub path: PathBuf,
}

/// Which entry an [`OutsideAppDir`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutsideGrant {
    /// The component's `source`: its code.
    Source,
    /// One of its `files`: a directory it reads.
    Files,
    /// A `[nn.models.NAME]` table's `path`: a model file the host reads
    /// for the components granted it.
    NnModel,
    /// A `[filter.NAME]` table's `source`: code the proxy runs.
    Filter,
}

/// A `[[trigger.redis]]` of a Spin manifest: every message published on
/// `channel` at the Redis server `address` is handed to `component`'s
/// `spin:redis/inbound-redis` handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTrigger {
    /// The server, `redis://HOST:PORT[/DB]`.
    pub address: String,
    /// The channel subscribed to.
    pub channel: String,
    /// The id of the component that handles each message.
    pub component: String,
}

impl RedisTrigger {
    /// The server as logs may show it: `HOST:PORT[/DB]`, without the
    /// password the address may carry.
    ///
    /// ```
    /// # use tern_manifest::RedisTrigger;
    /// let trigger = RedisTrigger {
    ///     address: "redis://user:s3cret@db.internal:6379/2".into(),
    ///     channel: "jobs".into(),
    ///     component: "worker".into(),
    /// };
    /// assert_eq!(trigger.host(), "db.internal:6379/2");
    /// // A password holding `/`, `?` or `#` unencoded is not shown either.
    /// let trigger = RedisTrigger {
    ///     address: "redis://user:pa/ss?#@db.internal:6379".into(),
    ///     ..trigger
    /// };
    /// assert_eq!(trigger.host(), "db.internal:6379");
    /// ```
    ///
    /// For display only: where the client connects is what it makes of the
    /// whole address (`tern_http::trigger_server`).
    pub fn host(&self) -> &str {
        let rest = self.address.trim_start_matches("redis://");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        host.split(['?', '#']).next().unwrap_or(host)
    }
}

/// The `[app]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// The app's name; never empty.
    pub name: String,
    /// What the app is for.
    pub description: Option<String>,
    /// Host names the app claims under `tern host`, lowercase: exact
    /// (`shop.example.com`) or a wildcard over subdomains
    /// (`*.shop.example.com`).
    pub hosts: Vec<String>,
    /// The app's version as written, from a Spin manifest's
    /// `application.version`; `None` for a `tern.toml`.
    pub version: Option<String>,
}

/// A `[component.ID]` table: a wasm binary and what it may see.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// The id: lowercase ASCII letters, digits, `-` and `_`, starting with a letter.
    pub id: String,
    /// The wasm binary: a file (the manifest's directory joined with
    /// `source` as written; exists and is not a directory; inside the app
    /// directory unless the operator allowed otherwise), or a download
    /// (Spin's `{ url, digest }`), fetched before the app is loaded.
    pub source: ComponentSource,
    /// How requests reach the guest; `None` to infer it from the binary.
    pub executor: Option<Executor>,
    /// Environment variables the guest sees.
    pub environment: BTreeMap<String, String>,
    /// Host directories the guest may read.
    pub files: Vec<FileMount>,
    /// Per-component limits; `None` fields take the runtime's defaults.
    pub limits: LimitsConfig,
    /// Warm instances, from `[component.ID.instances]`; `None` (the
    /// default) is a fresh instance per request.
    pub instances: Option<InstancesConfig>,
    /// Key-value stores the guest may open, by name.
    pub key_value_stores: Vec<String>,
    /// SQLite databases the guest may open, by name.
    pub sqlite_databases: Vec<String>,
    /// Models the guest may load through WASI-NN, by name; each is a key
    /// of [`Manifest::nn_models`].
    pub nn_models: Vec<String>,
    /// Whether the guest may load a model from bytes it holds (WASI-NN's
    /// `load`): off unless the manifest says `nn_load_bytes = true`.
    pub nn_load_bytes: bool,
    /// Where the guest may send HTTP requests.
    pub allowed_outbound_hosts: Vec<OutboundHost>,
    /// Entries of `allowed_outbound_hosts` written with `{{ variable }}`
    /// templates, which are known once the app variables have values:
    /// see [`Manifest::outbound_hosts`].
    pub outbound_templates: Vec<OutboundTemplate>,
    /// What the guest reads through `wasi:config/store`: key to template.
    pub variables: BTreeMap<String, Template>,
    /// How to build `source` from its sources, for `tern build`.
    pub build: Option<Build>,
    /// How the wagi executor calls the program: set for a Spin component
    /// whose trigger names `executor = { type = "wagi" }`; `None` gives
    /// Tern's own way (the component id as the only argument, `_start`).
    pub wagi: Option<WagiOptions>,
    /// For a Spin component whose `files` has glob patterns or
    /// `exclude_files`: the files gathered into the directory its one
    /// mount names, as paths in the app directory (what a bundle must
    /// hold to gather them again). `None` when `files` mounts directories
    /// as they are.
    pub staged_files: Option<Vec<PathBuf>>,
    /// Where the `source` key is, for errors found when compiling it.
    pub source_location: Location,
}

/// How a WAGI program is called, as Spin's `executor = { type = "wagi",
/// argv, entrypoint }` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WagiOptions {
    /// The program's arguments, split at spaces after `${SCRIPT_NAME}`
    /// and `${ARGS}` are filled in (see [`WagiOptions::args`]).
    pub argv: String,
    /// The exported function to call.
    pub entrypoint: String,
}

impl WagiOptions {
    /// Spin's default `argv`.
    pub const SPIN_ARGV: &str = "${SCRIPT_NAME} ${ARGS}";
    /// The default entry point, WASI's command entry.
    pub const ENTRYPOINT: &str = "_start";

    /// The arguments for a request to `script_name` with `query`: `argv`
    /// with `${SCRIPT_NAME}` replaced by the script name (Spin gives the
    /// request's path) and `${ARGS}` by
    /// the query's `&`-separated pairs, as they are, split at spaces.
    ///
    /// ```
    /// # use tern_manifest::WagiOptions;
    /// let spin = WagiOptions { argv: WagiOptions::SPIN_ARGV.into(), entrypoint: "_start".into() };
    /// assert_eq!(spin.args("/cgi", "a=1&b=2"), ["/cgi", "a=1", "b=2"]);
    /// assert_eq!(spin.args("/cgi", ""), ["/cgi"]);
    /// ```
    pub fn args(&self, script_name: &str, query: &str) -> Vec<String> {
        let args = query.replace('&', " ");
        let filled = self
            .argv
            .replace("${SCRIPT_NAME}", script_name)
            .replace("${ARGS}", &args);
        filled
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A component's `build` entry: the command that makes its wasm binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// A shell command line (run with `sh -c`); never empty.
    pub command: String,
    /// Where it runs: the manifest's directory joined with `workdir` as
    /// written, or the manifest's directory. Exists and is a directory.
    pub workdir: PathBuf,
    /// Glob patterns, relative to `workdir`, of the files whose change
    /// calls for a rebuild (`tern up --watch`). Each is a valid glob.
    pub watch: Vec<String>,
}

/// How a component is called for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "`wasi-http` or `wagi`")]
pub enum Executor {
    /// A component exporting `wasi:http/incoming-handler` (`"wasi-http"`).
    WasiHttp,
    /// A WASI command module speaking CGI over stdio (`"wagi"`).
    Wagi,
}

/// Prints the name used in the manifest: `wasi-http` or `wagi`.
impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Executor::WasiHttp => "wasi-http",
            Executor::Wagi => "wagi",
        })
    }
}

/// A host directory the guest may read, from a component's `files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMount {
    /// The host directory: the manifest's directory joined with `source`
    /// as written. Exists and is a directory; inside the app directory
    /// unless the operator allowed otherwise.
    pub source: PathBuf,
    /// Where the guest sees it; starts with `/`.
    pub destination: String,
}

/// A component's `[component.ID.instances]` table: instances kept warm and
/// given several requests, instead of a fresh instance per request. State
/// may then survive from one request to the next of the same component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstancesConfig {
    /// Requests one instance serves before it is dropped; at least 1.
    pub reuse: u32,
    /// Requests in one instance at a time; at least 1, at most `reuse`.
    pub concurrent: u32,
    /// How long an idle instance is kept.
    pub idle: HumanDuration,
}

impl InstancesConfig {
    /// `reuse` when the table leaves it out.
    pub const DEFAULT_REUSE: u32 = 128;
    /// `concurrent` when the table leaves it out: one at a time, which
    /// every handler supports.
    pub const DEFAULT_CONCURRENT: u32 = 1;
    /// `idle` when the table leaves it out.
    pub const DEFAULT_IDLE: HumanDuration = HumanDuration(std::time::Duration::from_secs(1));
}

/// A component's `[component.ID.limits]` table; every key is optional.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitsConfig {
    /// Linear memory per instance; at least 64KiB.
    pub memory: Option<ByteSize>,
    /// Wall-clock time per request; greater than zero.
    pub timeout: Option<HumanDuration>,
    /// Largest request body accepted.
    pub max_body: Option<ByteSize>,
    /// Requests handled at once; at least 1.
    pub max_concurrent: Option<u32>,
    /// How long an outbound connection may take to open.
    pub outbound_connect_timeout: Option<HumanDuration>,
    /// How long an outbound response may take to start arriving.
    pub outbound_timeout: Option<HumanDuration>,
    /// Outbound requests one incoming request may make.
    pub max_outbound_requests: Option<u32>,
    /// Time one request may spend running the guest's code (not waiting
    /// on I/O); past it the guest is stopped.
    pub cpu_time: Option<HumanDuration>,
}

/// Reads and checks the manifest at `path`, or `path/tern.toml` (else
/// `path/spin.toml`) when `path` is a directory. Relative paths in it are
/// resolved against its directory, and must exist and stay inside it.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    load_with(path, LoadOptions::default())
}

/// Like [`load`], for a manifest about to be built: the `source` of a
/// component with a `build` entry need not exist yet.
pub fn load_unbuilt(path: &Path) -> Result<Manifest, ManifestError> {
    load_with(
        path,
        LoadOptions {
            unbuilt: true,
            ..LoadOptions::default()
        },
    )
}

/// How a manifest is read. The default is what serving needs: every source
/// exists, and nothing leads outside the app directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The app is about to be built: the `source` of a component with a
    /// `build` entry need not exist yet (where it will be is still checked
    /// against the app directory).
    pub unbuilt: bool,
    /// The operator allows a component's `source` and `files`, and a
    /// model's `path`, to lead outside the app directory (the manifest's
    /// directory, symlinks followed). They are listed in
    /// [`Manifest::outside_app_dir`].
    /// Otherwise such an entry is an error: a `files` entry of `/` would
    /// show the guest every file the server can read, `/proc/self/environ`
    /// and its secrets among them.
    pub allow_outside_app_dir: bool,
}

/// Like [`load`], with `options`.
pub fn load_with(path: &Path, options: LoadOptions) -> Result<Manifest, ManifestError> {
    let file = manifest_path(path);
    let read_error = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::NotFound if path.is_dir() => ManifestError::NoManifest {
            dir: path.to_owned(),
        },
        _ => ManifestError::Read {
            path: file.clone(),
            error,
        },
    };
    // Read up to one byte past the bound: parsed tables take several times
    // their text, and a manifest a bundle brings must not take the host's
    // memory with it.
    let opened = fs::File::open(&file).map_err(read_error)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(opened, MAX_MANIFEST_SIZE + 1),
        &mut bytes,
    )
    .map_err(read_error)?;
    if bytes.starts_with(b"\0asm") {
        return for_component(&file, options);
    }
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(ManifestError::Read {
            path: file.clone(),
            error: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a manifest is at most {}",
                    units::ByteSize(MAX_MANIFEST_SIZE)
                ),
            ),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| ManifestError::Read {
        path: file.clone(),
        error: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "neither a tern.toml manifest (not UTF-8 text) nor a WebAssembly binary",
        ),
    })?;
    parse_with(&text, &file, options)
}

/// The manifest `tern serve app.wasm` serves: the one component on every
/// path (`/...`), named after its file, granted nothing, as `wasmtime
/// serve` would serve it.
fn for_component(wasm: &Path, options: LoadOptions) -> Result<Manifest, ManifestError> {
    let stem = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("app");
    let mut id: String = stem
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        id.insert_str(0, "app-");
    }
    let file_name = wasm
        .file_name()
        .unwrap_or(wasm.as_os_str())
        .to_string_lossy();
    let text = format!(
        "manifest_version = 1\n[app]\nname = \"{id}\"\n[[route]]\npath = \"/...\"\n\
         component = \"{id}\"\n[component.{id}]\nsource = {}\n",
        toml::Value::String(file_name.into_owned())
    );
    let mut manifest = parse_with(&text, &wasm.with_file_name(MANIFEST_FILE_NAME), options)?;
    manifest.path = wasm.to_owned();
    Ok(manifest)
}

/// The manifest file `path` names: for a directory, `path/tern.toml`, or
/// `path/spin.toml` when only that exists.
pub fn manifest_path(path: &Path) -> PathBuf {
    if !path.is_dir() {
        return path.to_owned();
    }
    let tern = path.join(MANIFEST_FILE_NAME);
    let spin = path.join(SPIN_MANIFEST_FILE_NAME);
    if !tern.exists() && spin.exists() {
        spin
    } else {
        tern
    }
}

/// Checks manifest `text` read from the file `path`. Relative paths in it
/// are resolved against `path`'s directory, and must exist and stay inside it.
/// A text with `spin_manifest_version` and no `manifest_version` is read as a
/// Spin manifest, whatever the file's name.
///
/// ```
/// # use std::path::Path;
/// let text = "manifest_version = 2\n";
/// let error = tern_manifest::parse(text, Path::new("tern.toml")).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "tern.toml:1:1: manifest_version: unsupported version 2; this Tern reads version 1"
/// );
/// ```
pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
    parse_with(text, path, LoadOptions::default())
}

/// Like [`parse`], with `options`.
pub fn parse_with(
    text: &str,
    path: &Path,
    options: LoadOptions,
) -> Result<Manifest, ManifestError> {
    use serde::Deserialize as _;
    use toml::de::{DeTable, Deserializer};

    let source = Source { path, text };
    let from_toml = |error| ManifestError::from_toml(path, text, &error);
    // Parsed once: the version is read from a copy of the parsed document
    // (its strings still borrowed from `text`), not from a second parse.
    // `tern host` parses an app's manifest on every cold start.
    let document = DeTable::parse(text).map_err(from_toml)?;
    let version =
        raw::RawVersion::deserialize(Deserializer::from(document.clone())).map_err(from_toml)?;
    if version.manifest_version.is_none() && version.spin_manifest_version.is_some() {
        return spin::parse(&source, options);
    }
    resolve::check_version(&source, version)?;
    let raw = raw::RawManifest::deserialize(Deserializer::from(document)).map_err(from_toml)?;
    resolve::resolve(&source, raw, options)
}

impl Manifest {
    /// The key-value stores the components declare, each once, in the
    /// order first declared.
    pub fn key_value_stores(&self) -> Vec<&str> {
        let mut stores: Vec<&str> = Vec::new();
        for name in self.components.values().flat_map(|c| &c.key_value_stores) {
            if !stores.contains(&name.as_str()) {
                stores.push(name);
            }
        }
        stores
    }

    /// The SQLite databases the components declare, each once, in the
    /// order first declared.
    pub fn sqlite_databases(&self) -> Vec<&str> {
        let mut databases: Vec<&str> = Vec::new();
        for name in self.components.values().flat_map(|c| &c.sqlite_databases) {
            if !databases.contains(&name.as_str()) {
                databases.push(name);
            }
        }
        databases
    }

    /// Where the app's state (its embedded stores) lives unless the
    /// operator says otherwise: `.tern` beside the manifest.
    pub fn default_state_dir(&self) -> PathBuf {
        self.dir.join(".tern")
    }

    /// An error about something in this manifest found after parsing (by the
    /// engine, say), pointing at `location` and naming `key`.
    ///
    /// ```no_run
    /// # use std::path::Path;
    /// let manifest = tern_manifest::load(Path::new("apps/shop"))?;
    /// let hello = &manifest.components["hello"];
    /// let error = manifest.error_at(
    ///     hello.source_location,
    ///     "component.hello.source",
    ///     "not a wasm binary",
    /// );
    /// // apps/shop/tern.toml:12:1: component.hello.source: not a wasm binary
    /// eprintln!("{error}");
    /// # Ok::<(), tern_manifest::ManifestError>(())
    /// ```
    pub fn error_at(
        &self,
        location: Location,
        key: &str,
        message: impl fmt::Display,
    ) -> ManifestError {
        ManifestError::Invalid {
            path: self.path.clone(),
            location: Some(location),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }
}
