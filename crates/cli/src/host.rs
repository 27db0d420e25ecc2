//! `tern host`: many apps in one process. Reads the deployed apps' records
//! (loading none), serves each app at its host names, and serves the admin
//! API that deploys, rolls back and deletes them, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tern_host::{Host, HostConfig, bundle::BundleLimits};
use tern_http::{ServeConfig, Server};
use tern_manifest::LimitsConfig;
use tern_runtime::{ByteSize, HumanDuration, Result};

use crate::compiling;
use crate::log::{AccessLog, LogFormat, LogSink};
use crate::serve::{Serving, Signals, default_max_connections, parse_listen};

/// Arguments of `tern host`.
#[derive(Args)]
#[command(
    after_help = "Apps answer at NAME.DOMAIN (`curl http://shop.localhost:3000/` \
needs no DNS set-up) and at the names their manifest claims in `[app] hosts`. Deploy with \
`tern deploy --to http://ADMIN`, or PUT a .tar or .tar.gz of the app directory to \
/v1/apps/NAME with `Authorization: Bearer TOKEN`. An app is loaded on its first request and \
unloaded after --idle-unload without one. --max-memory, --timeout, --max-body, \
--max-concurrent and --cpu-time are the defaults of components that set none, and the most any \
may ask for: a deploy asking for more is refused. Each app's variables are its own, set with \
`tern apps variables set APP KEY=VALUE`; the environment's TERN_VARIABLE_* reach no app."
)]
pub struct HostArgs {
    /// Address apps are served on (IP:PORT, localhost:PORT or :PORT)
    #[arg(long, value_name = "ADDR", default_value = ServeConfig::DEFAULT_LISTEN, value_parser = parse_listen)]
    listen: SocketAddr,
    /// Address of the admin API
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3001", value_parser = parse_listen)]
    admin: SocketAddr,
    /// The admin API's bearer token, in a file [default: STATE_DIR/admin-token, made when missing]
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Apps answer at NAME.DOMAIN
    #[arg(long, value_name = "DOMAIN", default_value = "localhost")]
    domain: String,
    /// Where deployed apps and their data live [default: ~/.local/share/tern/host]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Unload an app after this long without a request
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    idle_unload: HumanDuration,
    /// Largest bundle a deploy may upload; larger ones get 413
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_bundle_size: ByteSize,
    /// Linear memory per instance, and the most a component may ask for
    #[arg(long, value_name = "SIZE", default_value = "128MiB")]
    max_memory: ByteSize,
    /// Wall-clock deadline per request, and the most a component may ask for
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    timeout: HumanDuration,
    /// Largest request body, and the most a component may ask for
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    max_body: ByteSize,
    /// Requests in flight per component, and the most a component may ask for
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent: u32,
    /// Time one request may spend running guest code (waiting on I/O does
    /// not count), and the most a component may ask for; past it, 503
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    cpu_time: HumanDuration,
    /// Instances alive at once across every app
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pool_slots: u32,
    /// Let deployed apps forward to this upstream, HOST:PORT as their
    /// manifests write it (repeatable); apps naming any other do not load
    #[arg(long = "allow-upstream", value_name = "HOST:PORT")]
    allow_upstream: Vec<String>,
    /// Let deployed apps' Redis triggers subscribe at this Redis server,
    /// HOST:PORT (repeatable); apps whose triggers name any other do not
    /// load
    #[arg(long = "allow-redis-trigger", value_name = "HOST:PORT", value_parser = tern_http::allowed_server)]
    allow_redis_trigger: Vec<String>,
    /// Let deployed apps reach this non-public address (loopback, private,
    /// link-local...), IP or IP:PORT (repeatable), when their
    /// allowed_outbound_hosts name its host; none by default
    #[arg(long = "allow-private-address", value_name = "IP[:PORT]")]
    allow_private_address: Vec<tern_runtime::outbound::PrivateAddress>,
    /// Access log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Which requests get an access-log line
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = AccessLog::All)]
    access_log: AccessLog,
    /// Worker threads, each serving its own connections [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Compile without reading or writing the compile cache
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    compile_limits: compiling::CompileLimitArgs,
    /// Operator settings: key-value store backends and variable values (TOML)
    #[arg(long, value_name = "FILE")]
    runtime_config: Option<PathBuf>,
}

/// Where `tern host` keeps its apps when not told: `$XDG_DATA_HOME/tern/host`.
pub(crate) fn default_state_dir() -> Result<PathBuf> {
    let data = tern_runtime::dirs::data_dir()
        .ok_or_else(|| tern_runtime::Error::msg("no home directory: give --state-dir"))?;
    Ok(data.join("host"))
}

pub fn main(args: HostArgs) -> Result<ExitCode> {
    crate::log::set_format(args.log_format);
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir()?,
    };
    let mut serve = ServeConfig::new(args.listen);
    serve.runtime = match &args.runtime_config {
        Some(path) => tern_manifest::runtime_config::load(path)?,
        None => Default::default(),
    };
    if let Some(name) = serve.runtime.variables.keys().next() {
        // Every app would get them: one tenant's secret, every tenant's.
        return Err(tern_runtime::Error::msg(format!(
            "the runtime config sets variable `{name}` under [variables], which tern host would give to every app that declares it; set variables per app instead, with `tern apps variables set APP {name}=VALUE`"
        )));
    }
    // Nor does the environment reach any app's variables.
    serve.variables_from_env = false;
    let ignored: Vec<String> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| key.starts_with("TERN_VARIABLE_") || key.starts_with("SPIN_VARIABLE_"))
        .collect();
    if !ignored.is_empty() {
        crate::log::say(&format!(
            "tern: warning: {} ignored: under tern host, apps get only the variables set for each (`tern apps variables set`)",
            ignored.join(", ")
        ));
    }
    let limits = LimitsConfig {
        memory: Some(args.max_memory),
        timeout: Some(args.timeout),
        max_body: Some(args.max_body),
        max_concurrent: Some(args.max_concurrent),
        cpu_time: Some(args.cpu_time),
        ..LimitsConfig::default()
    };
    serve.limits = limits;
    serve.caps = limits;
    serve.allowed_upstreams = Some(args.allow_upstream.clone());
    serve.private_outbound =
        tern_runtime::outbound::PrivateReach::Listed(args.allow_private_address.clone().into());
    serve.max_connections = default_max_connections();
    let (cache, _disabled) = compiling::open_cache(args.no_cache)?;
    let host = Host::open(HostConfig {
        state_dir: state_dir.clone(),
        domain: args.domain.to_ascii_lowercase(),
        idle_unload: args.idle_unload.0,
        max_bundle_size: args.max_bundle_size,
        bundle_limits: BundleLimits::default(),
        serve: serve.clone(),
        pool_slots: args.pool_slots,
        max_memory: args.max_memory,
        compile_limits: args.compile_limits.limits(),
        cache,
        allowed_redis: args.allow_redis_trigger.clone(),
    })
    .map_err(|e| {
        tern_runtime::Error::from(e).context(format!("cannot open {}", state_dir.display()))
    })?;
    let (token, token_file) = host.admin_token(args.admin_token_file.as_deref())?;

    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let sink = Arc::new(LogSink::new(args.log_format, args.access_log));
    host.report_to(sink.clone());
    let log = sink.clone();
    let grace = serve.grace;
    let listen = args.listen;
    let server = Server::bind_sites(host.sites(), serve, sink)
        .map_err(|e| tern_runtime::Error::from(e).context(format!("cannot listen on {listen}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin_addr = args.admin;
    let admin = runtime
        .block_on(tokio::net::TcpListener::bind(admin_addr))
        .map_err(|e| {
            tern_runtime::Error::from(e).context(format!("cannot listen on {admin_addr}"))
        })?;
    let signals = runtime.block_on(async { Signals::install() })?;
    crate::log::say(&format!(
        "tern host: {} in {}\nadmin API on http://{} (token in {})\nlistening on http://{} (apps at NAME.{})",
        match host.len() {
            1 => "1 app".to_string(),
            n => format!("{n} apps"),
        },
        state_dir.display(),
        admin.local_addr()?,
        token_file.display(),
        server.local_addr(),
        args.domain,
    ));
    runtime.spawn(tern_host::serve_admin(host.clone(), admin, token));
    runtime.spawn(host.clone().unload_idle());
    {
        let _on = runtime.enter();
        host.start_triggers();
    }
    let serving = Serving {
        runtime,
        signals,
        log,
        grace,
    };
    // Apps change only through the admin API: a reload signal does nothing.
    serving.run(server, threads, || {})
}
