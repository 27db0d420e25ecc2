//! `tern serve`: load an app from its manifest, listen, log each request,
//! swap in a new version of the app on SIGHUP (or, under `tern up --watch`,
//! when its sources change), and shut down gracefully on SIGINT or SIGTERM.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tern_http::{App, AppSlot, DownloadCache, ServeConfig, Server, Shutdown, TlsConfig};
use tern_manifest::{LimitsConfig, LoadOptions, Manifest, OutsideGrant, RuntimeConfig};
use tern_runtime::{ByteSize, HumanDuration, Loader, Result};
use tokio::signal::unix::{self, SignalKind, signal};

use crate::compiling;
use crate::log::{AccessLog, LogFormat, LogSink};
use crate::reload::{self, Reloader, Watch};

/// Arguments of `tern serve`.
#[derive(Args)]
#[command(
    after_help = "Limits given here apply to every component that does not set its own in \
[component.NAME.limits]. The server prints `listening on http://ADDR` (`https://` with \
--tls-cert and --tls-key) to stderr once ready, then one access-log line per request. It speaks \
HTTP/1.1 and HTTP/2 (over TLS by ALPN, in the clear by prior knowledge). SIGHUP (or SIGUSR1) \
re-reads the manifest, the components' binaries and the TLS certificate and key, and swaps the \
new version in without dropping a request; if loading fails, the running version keeps serving. \
When stderr is a terminal, SIGHUP means the terminal closed and stops Tern; use SIGUSR1 there. \
A component's `source` and `files` must stay inside the app directory (the manifest's, symlinks \
followed) unless --allow-outside-app-dir (or `allow_outside_app_dir = true` in the runtime \
config) allows otherwise; Tern then prints one line per such grant at start."
)]
pub struct ServeArgs {
    /// The app's manifest, or a directory holding `tern.toml`
    #[arg(value_name = "PATH", default_value = ".")]
    pub(crate) path: PathBuf,
    /// Address to listen on: IP:PORT, localhost:PORT or :PORT (both on
    /// 127.0.0.1; 0.0.0.0:PORT for every interface); port 0 picks a free port
    #[arg(long, value_name = "ADDR", default_value = ServeConfig::DEFAULT_LISTEN, value_parser = parse_listen)]
    pub(crate) listen: SocketAddr,
    /// Linear memory per instance [default: 128MiB]
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<ByteSize>,
    /// Wall-clock deadline per request; past it the client gets 504 [default: 30s]
    #[arg(long, value_name = "DURATION")]
    timeout: Option<HumanDuration>,
    /// Largest request body; larger ones get 413 [default: 16MiB]
    #[arg(long, value_name = "SIZE")]
    max_body: Option<ByteSize>,
    /// Requests in flight per component; more get 503 [default: 1000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent: Option<u32>,
    /// Time one request may spend running guest code (waiting on I/O does
    /// not count); past it the client gets 503 [default: only --timeout]
    #[arg(long, value_name = "DURATION")]
    cpu_time: Option<HumanDuration>,
    /// Time a client has to send a request head before it is disconnected
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    header_timeout: HumanDuration,
    /// Largest request head; larger ones get 431
    #[arg(long, value_name = "SIZE", default_value = "32KiB")]
    max_header_size: ByteSize,
    /// Time in-flight requests get to finish after SIGINT/SIGTERM
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    grace: HumanDuration,
    /// Time a client may read nothing of a response before it is disconnected
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    write_timeout: HumanDuration,
    /// Connections open at once; more wait until one closes [default: 10000, or fewer if the open-file limit is lower]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Access log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Which requests get an access-log line
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = AccessLog::All)]
    pub(crate) access_log: AccessLog,
    /// Also listen on ADDR for the operator: `GET /metrics` (Prometheus
    /// text: requests by status and the metrics proxy-wasm filters define)
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    admin: Option<SocketAddr>,
    /// Worker threads, each serving its own connections [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Compile without reading or writing the compile cache
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    pub(crate) compile_limits: crate::compiling::CompileLimitArgs,
    /// Operator settings: key-value store backends and variable values (TOML);
    /// Spin's `--runtime-config-file` spelling is accepted
    #[arg(long, value_name = "FILE", alias = "runtime-config-file")]
    runtime_config: Option<PathBuf>,
    /// Set an environment variable for every component, over its own
    /// `environment` (repeatable; as `spin up -e`)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Set a key in the `default` key-value store at start (repeatable; as
    /// `spin up --key-value`)
    #[arg(long = "key-value", value_name = "KEY=VALUE", value_parser = parse_pair)]
    key_values: Vec<(String, String)>,
    /// Run SQL on the `default` database at start: a statement, or
    /// `@FILE` for a file of them (repeatable, in order; as `spin up --sqlite`)
    #[arg(long = "sqlite", value_name = "SQL")]
    sqlite: Vec<String>,
    /// Where embedded (SQLite) stores live [default: .tern beside the manifest]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Let components' `source` and `files` lead outside the app directory
    #[arg(long)]
    allow_outside_app_dir: bool,
    /// Serve HTTPS with this certificate chain (PEM, the server's own
    /// certificate first); needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The operator's settings: the `--runtime-config` file, and the flags
    /// that add to it.
    pub(crate) fn runtime_config(&self) -> Result<RuntimeConfig> {
        let mut runtime = match &self.runtime_config {
            Some(path) => tern_manifest::runtime_config::load(path)?,
            None => RuntimeConfig::default(),
        };
        runtime.allow_outside_app_dir |= self.allow_outside_app_dir;
        runtime.environment.extend(self.env.iter().cloned());
        Ok(runtime)
    }

    /// Seeds the app's `default` store and database as `--key-value` and
    /// `--sqlite` ask, before it serves.
    fn seed(&self, app: &App, runtime: &tokio::runtime::Runtime) -> Result<()> {
        if !self.key_values.is_empty() {
            let store = app.store("default").ok_or_else(|| {
                tern_runtime::Error::msg(
                    "--key-value sets keys in the `default` store, which no component declares (key_value_stores = [\"default\"])",
                )
            })?;
            for (key, value) in &self.key_values {
                runtime
                    .block_on(store.set(key, value.as_bytes(), None))
                    .map_err(|e| tern_runtime::Error::msg(format!("--key-value {key}: {e}")))?;
            }
        }
        if !self.sqlite.is_empty() {
            let database = app.database("default").ok_or_else(|| {
                tern_runtime::Error::msg(
                    "--sqlite runs on the `default` database, which no component declares (sqlite_databases = [\"default\"])",
                )
            })?;
            for sql in &self.sqlite {
                let text = match sql.strip_prefix('@') {
                    Some(file) => std::fs::read_to_string(file).map_err(|e| {
                        tern_runtime::Error::msg(format!("--sqlite @{file}: cannot read it: {e}"))
                    })?,
                    None => sql.clone(),
                };
                database
                    .execute_batch(&text)
                    .map_err(|e| tern_runtime::Error::msg(format!("--sqlite {sql}: {e:?}")))?;
            }
        }
        Ok(())
    }

    /// The certificate and key of `--tls-cert` and `--tls-key`, read and
    /// checked; `None` without them.
    pub(crate) fn tls(&self) -> Result<Option<TlsConfig>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsConfig::load(cert, key)?)),
            // clap requires both or neither.
            _ => Ok(None),
        }
    }
}

/// How a manifest is read to be served: every binary built, and nothing
/// outside the app directory unless the operator allows it.
pub(crate) fn serving(runtime: &RuntimeConfig) -> LoadOptions {
    LoadOptions {
        unbuilt: false,
        allow_outside_app_dir: runtime.allow_outside_app_dir,
    }
}

/// Makes every component that comes from a URL a file: the one in the
/// download cache whose digest is the manifest's, downloaded first when it
/// is not there (with a line saying so; a cached one is used silently,
/// without the network).
pub(crate) fn fetch_sources(manifest: &mut Manifest) -> Result<()> {
    if manifest
        .components
        .values()
        .all(|c| c.source.file().is_some())
    {
        return Ok(());
    }
    let cache = DownloadCache::open_default().ok_or_else(|| {
        tern_runtime::Error::msg(
            "no cache directory to download components into: set HOME or XDG_CACHE_HOME",
        )
    })?;
    tern_http::fetch_sources(manifest, &cache, &mut |id: &str, url: &str| {
        crate::log::say(&format!("tern: downloading component `{id}` from {url}"));
    })?;
    Ok(())
}

/// One line for each grant the operator let outside the app directory.
pub(crate) fn print_outside(manifest: &Manifest, out: &mut String) {
    for entry in &manifest.outside_app_dir {
        let verb = match entry.grant {
            OutsideGrant::Source => "runs",
            OutsideGrant::Files => "reads",
            OutsideGrant::NnModel => {
                out.push_str(&format!(
                    "tern: model {} loads {} from outside the app directory\n",
                    entry.component,
                    entry.path.display()
                ));
                continue;
            }
            OutsideGrant::Filter => {
                out.push_str(&format!(
                    "tern: filter {} runs {} from outside the app directory\n",
                    entry.component,
                    entry.path.display()
                ));
                continue;
            }
        };
        out.push_str(&format!(
            "tern: component {} {verb} {} from outside the app directory\n",
            entry.component,
            entry.path.display()
        ));
    }
}

/// One warning line for each thing the runtime config sets that the app
/// does not use: a store or variable it names that nothing declares (a
/// typo sends data to the default SQLite store instead of the backend
/// configured for it).
pub(crate) fn print_unused(runtime: &RuntimeConfig, manifest: &Manifest, out: &mut String) {
    for line in runtime.unused_by(manifest) {
        out.push_str(&format!("tern: warning: {line}\n"));
    }
}

/// `--listen`: an IP address and port, or `localhost:PORT` and `:PORT`
/// for the loopback address.
pub(crate) fn parse_listen(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let port = text
        .strip_prefix(':')
        .or_else(|| text.strip_prefix("localhost:"))
        .and_then(|port| port.parse::<u16>().ok());
    port.map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .ok_or_else(|| {
            "expected IP:PORT (127.0.0.1:3000, [::1]:3000), localhost:PORT or :PORT".into()
        })
}

/// Raises the open-file limit ([`raise_open_files_limit`]), then the
/// connections to allow by default: [`ServeConfig::DEFAULT_MAX_CONNECTIONS`],
/// or fewer to leave descriptors for stores, outbound connections and files.
pub(crate) fn default_max_connections() -> usize {
    raise_open_files_limit().map_or(ServeConfig::DEFAULT_MAX_CONNECTIONS, |limit| {
        ServeConfig::DEFAULT_MAX_CONNECTIONS.min(limit.saturating_sub(256).max(64))
    })
}

/// Raises the soft limit on open files to the hard one: every connection
/// holds a descriptor, and the usual soft limit of 1024 turns away new
/// clients once about a thousand sit idle. Failing to raise it only leaves
/// the old limit. Returns the soft limit in force.
fn raise_open_files_limit() -> Option<usize> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile)
        .current
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// A `KEY=VALUE` argument.
fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, found `{text}`")),
    }
}

pub fn main(args: ServeArgs) -> Result<ExitCode> {
    serve(args, None)
}

/// Serves the app at `args.path`; with `watch`, rebuilds and swaps in
/// components whose sources change.
pub(crate) fn serve(args: ServeArgs, watch: Option<Watch>) -> Result<ExitCode> {
    crate::log::set_format(args.log_format);
    let settings = args.runtime_config()?;
    let tls = args.tls()?;
    let mut manifest = tern_manifest::load_with(&args.path, serving(&settings))?;
    fetch_sources(&mut manifest)?;
    let mut warnings = String::new();
    print_unused(&settings, &manifest, &mut warnings);
    crate::log::say(&warnings);
    let mut config = ServeConfig::new(args.listen);
    config.tls = tls;
    config.limits = LimitsConfig {
        memory: args.max_memory,
        timeout: args.timeout,
        max_body: args.max_body,
        max_concurrent: args.max_concurrent,
        cpu_time: args.cpu_time,
        ..LimitsConfig::default()
    };
    config.runtime = settings;
    config.state_dir = args.state_dir.clone();
    config.header_timeout = args.header_timeout.0;
    config.max_header_size = args.max_header_size;
    config.grace = args.grace.0;
    config.write_timeout = args.write_timeout.0;
    let connections = default_max_connections();
    config.max_connections = args.max_connections.map_or(connections, |n| n as usize);

    // Serving works without the cache, only starting is slower.
    let (cache, _disabled) = compiling::open_cache(args.no_cache)?;
    let compile_limits = args.compile_limits.limits();
    let loader = Loader {
        cache: cache.as_ref(),
        limits: Some(&compile_limits),
        ..Loader::default()
    };
    let notes = compiling::ServeNotes::start(cache.is_some());
    let app = App::load_noting(&manifest, &config, &loader, &notes)?;

    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let sink = Arc::new(LogSink::new(args.log_format, args.access_log));
    let log = sink.clone();
    let grace = config.grace;
    let listen = args.listen;
    let slot = AppSlot::new(app);
    let triggers = (slot.clone(), sink.clone());
    let server = Server::bind_slot(slot.clone(), config.clone(), sink)
        .map_err(|e| tern_runtime::Error::from(e).context(format!("cannot listen on {listen}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    args.seed(&slot.current(), &runtime)?;
    if !manifest.redis_triggers.is_empty() {
        // Messages are handled on the runtime that drives the server's
        // first worker; they stop with it.
        runtime.spawn(tern_http::run_redis_triggers(triggers.0, triggers.1));
    }
    // Handlers go in before the `listening` line: from then on a SIGTERM
    // must mean a graceful shutdown, never the default instant death.
    let signals = runtime.block_on(async { Signals::install() })?;
    print_routes(&manifest, &server, &slot.current());
    if let Some(addr) = args.admin {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| {
                tern_runtime::Error::msg(format!("cannot listen on {addr} (--admin): {e}"))
            })?;
        let bound = listener.local_addr()?;
        runtime.spawn(tern_http::serve_admin(listener, slot.clone()));
        crate::log::say(&format!("tern: admin on http://{bound}\n"));
    }
    let reloader = Reloader {
        manifest: manifest.path.clone(),
        config,
        no_cache: args.no_cache,
        compile_limits,
        slot,
        tls: server.tls_slot(),
    };
    let reloads = runtime.block_on(async { reload::start(reloader, watch) })?;
    let serving = Serving {
        runtime,
        signals,
        log,
        grace,
    };
    serving.run(server, threads, move || reloads.request(Vec::new()))
}

/// A bound server and what stopping it takes: its runtime, the signals
/// installed before it said it was listening, and its log.
pub(crate) struct Serving {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) signals: Signals,
    pub(crate) log: Arc<LogSink>,
    pub(crate) grace: std::time::Duration,
}

impl Serving {
    /// Serves until SIGINT or SIGTERM, then lets in-flight requests finish
    /// within the grace period; a second signal exits at once (130).
    /// SIGHUP and SIGUSR1 call `reload`.
    pub(crate) fn run(
        self,
        server: Server,
        threads: usize,
        mut reload: impl FnMut() + 'static,
    ) -> Result<ExitCode> {
        let Serving {
            runtime,
            mut signals,
            log,
            grace,
        } = self;
        let last_words = log.clone();
        let stop = async move {
            loop {
                match signals.next().await {
                    Signal::Stop => break,
                    Signal::Reload => reload(),
                }
            }
            last_words.flush();
            crate::log::say(&format!(
                "tern: shutting down; in-flight requests get {}",
                HumanDuration(grace)
            ));
            // A second signal stops at once.
            tokio::spawn(async move {
                while signals.next().await == Signal::Reload {}
                last_words.flush();
                std::process::exit(130);
            });
        };
        let shutdown = runtime.block_on(server.run(threads, stop));
        // A reload or build still running must not hold the exit up.
        runtime.shutdown_background();
        log.flush();
        if shutdown? == Shutdown::CutOff {
            crate::log::say("tern: grace period over; closed the connections still open");
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_routes(manifest: &Manifest, server: &Server, app: &App) {
    let mut out = String::new();
    print_outside(manifest, &mut out);
    let scheme = if server.is_tls() { "https" } else { "http" };
    out.push_str(&format!(
        "listening on {scheme}://{}\n",
        server.local_addr()
    ));
    print_app(app, &mut out);
    for trigger in &manifest.redis_triggers {
        out.push_str(&format!(
            "  redis `{}` on {}  -> {}\n",
            trigger.channel,
            trigger.host(),
            trigger.component
        ));
    }
    crate::log::say(&out);
}

/// The app's routes and stores, one per line, indented.
pub(crate) fn print_app(app: &App, out: &mut String) {
    let routes = app.routes();
    let width = routes.iter().map(|r| r.pattern.len()).max().unwrap_or(0);
    for route in routes {
        match &route.component {
            Some(component) => out.push_str(&format!(
                "  {:width$}  -> {component} ({})\n",
                route.pattern, route.kind
            )),
            // A static response: `-> static response 200`.
            None => out.push_str(&format!("  {:width$}  -> {}\n", route.pattern, route.kind)),
        }
    }
    for (name, kind) in app.stores() {
        out.push_str(&format!("  key-value store `{name}`: {kind}\n"));
    }
}

/// What a signal asks of the server.
#[derive(PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT or SIGTERM: shut down gracefully.
    Stop,
    /// SIGHUP (when not on a terminal) or SIGUSR1: load the app again and
    /// swap it in.
    Reload,
}

/// SIGINT, SIGTERM, SIGHUP and SIGUSR1, listened for from the moment they
/// are installed.
pub(crate) struct Signals {
    interrupt: unix::Signal,
    terminate: unix::Signal,
    hangup: unix::Signal,
    user1: unix::Signal,
    /// SIGHUP from a terminal means it closed: stop rather than reload.
    hangup_stops: bool,
}

impl Signals {
    /// Must run within the runtime that will poll them.
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
            hangup_stops: std::io::stderr().is_terminal(),
        })
    }

    pub(crate) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.hangup.recv() => if self.hangup_stops { Signal::Stop } else { Signal::Reload },
            _ = self.user1.recv() => Signal::Reload,
        }
    }
}
