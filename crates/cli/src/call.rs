//! `tern call`: load a plugin (an Extism plugin, a component or a plain
//! module) through tern-plugin, call one function with an input, print its
//! output, and with `-v` the call's report, as `extism call` does.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tern_plugin::{
    ByteSize, CacheDir, DirGrant, Grants, HostFunctions, Limit, LogLevel, PluginConfig, PluginHost,
    PluginLimits,
};
use tern_runtime::{Error, HumanDuration, Result};

use crate::exit;

#[derive(Args)]
#[command(after_help = "\
Nothing is granted by default: no files, no environment, no network, no
configuration values. Every call is bounded: 10s, 256MiB of memory, 64MiB
of input and of output, unless told otherwise.

How the input reaches the function depends on the plugin:
  an Extism plugin     the input bytes, through the Extism ABI
  a component          a `string` or `list<u8>` parameter takes the input as
                       it is; other functions read it as WAVE arguments
                       (`1, 2`, `\"text\"`) and answer in WAVE
  a plain module       numbers separated by spaces or commas

The output is written to stdout as it is, with no newline added.
Exit status: 0 when the call succeeds; 1 when it fails (the plugin's
error, a trap, a limit other than time) or tern cannot load the plugin;
124 when --timeout stops it; 2 for a usage error.

Examples:
  tern call count_vowels.wasm count_vowels --input 'Hello, World!'
  tern call -v --fuel 1000000 plugin.wasm transform --input @data.json
  cat data.json | tern call plugin.wasm transform --input -
  tern call --config greeting=Hi --allow-host api.example.com plugin.wasm greet
  tern call calc.wasm add --input '2 40'")]
pub struct CallArgs {
    /// The input: text, @FILE for a file's bytes, or - for stdin
    #[arg(short, long, value_name = "STRING|@FILE|-", default_value = "")]
    input: String,
    /// A configuration value the plugin can read (Extism's config_get)
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    config: Vec<(String, String)>,
    /// Allow the plugin's HTTP requests (Extism's http_request) to a host:
    /// `api.example.com` (http and https on any port, as Extism matches),
    /// `*.example.com`, or a URL like `http://127.0.0.1:8080`
    #[arg(long = "allow-host", value_name = "HOST|URL")]
    allow_host: Vec<String>,
    /// Preopen a host directory for a WASI plugin, read-write: HOST::GUEST
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = |s: &str| DirGrant::parse(s, false))]
    dirs: Vec<DirGrant>,
    /// Preopen a host directory for a WASI plugin, read-only: HOST::GUEST
    #[arg(long = "dir-ro", value_name = "HOST::GUEST", value_parser = |s: &str| DirGrant::parse(s, true))]
    dirs_ro: Vec<DirGrant>,
    /// Set an environment variable a WASI plugin sees
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Stop the call after this many instructions (fuel)
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Stop the call after this much wall-clock time
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: HumanDuration,
    /// Largest memory the plugin may hold (its linear memory and the Extism
    /// ABI's together)
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_memory: ByteSize,
    /// Largest output the call may produce
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    max_output: ByteSize,
    /// Print the plugin's log lines from this level up to stderr: trace,
    /// debug, info, warn or error
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    log_level: Option<LogLevel>,
    /// Call the function N times on one instance (a session), printing
    /// each output followed by a newline
    #[arg(long = "loop", value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// Compile without reading or writing the compile cache
    #[arg(long)]
    no_cache: bool,
    /// Print the call's report to stderr: instructions, peak memory, time,
    /// input, output and log bytes, and the limit that stopped it
    #[arg(short, long)]
    verbose: bool,
    /// The plugin: an Extism plugin, a component, a core module, .wat text
    /// or a `tern compile` artifact
    plugin: PathBuf,
    /// The function to call
    function: String,
}

pub fn main(args: CallArgs) -> Result<ExitCode> {
    let input = read_input(&args.input)?;
    let mut allowed_hosts = Vec::new();
    for host in &args.allow_host {
        allowed_hosts.extend(
            Grants::parse_host(host)
                .map_err(|e| Error::msg(format!("--allow-host {host}: {e}")))?,
        );
    }
    let config = PluginConfig {
        grants: Grants {
            dirs: args.dirs.into_iter().chain(args.dirs_ro).collect(),
            env: args.env,
            allowed_hosts,
            config: args.config.into_iter().collect(),
        },
        limits: PluginLimits {
            fuel: args.fuel,
            timeout: args.timeout.0,
            max_memory: args.max_memory,
            max_output: args.max_output,
            ..PluginLimits::default()
        },
        functions: HostFunctions::new(),
        log_level: args.log_level,
    };
    let host = PluginHost::builder()
        .max_instances(4)
        .max_memory(args.max_memory.max(ByteSize(1 << 30)))
        .cache(if args.no_cache {
            CacheDir::Off
        } else {
            CacheDir::Default
        })
        .build()?;
    let plugin = host.load(&args.plugin, config)?;
    let mut session = plugin.session().map_err(|e| Error::msg(e.message))?;
    let mut stdout = std::io::stdout().lock();
    for _ in 0..args.repeat.max(1) {
        let (result, report) = match session.call(&args.function, &input) {
            Ok((output, report)) => (Ok(output), report),
            Err(e) => (Err(e.message), *e.report),
        };
        for line in &report.logs {
            crate::log::say(&format!("{}: {}", line.level, line.message));
        }
        if args.verbose {
            crate::log::say(&format!("report: {report}"));
        }
        match result {
            Ok(output) => {
                stdout.write_all(&output)?;
                if args.repeat > 1 {
                    stdout.write_all(b"\n")?;
                }
                stdout.flush()?;
            }
            Err(message) => {
                crate::log::say(&format!("error: {message}"));
                return Ok(match report.stopped_by {
                    Some(Limit::Time) => ExitCode::from(exit::TIMEOUT),
                    _ => exit::TERN_ERROR,
                });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(spec: &str) -> Result<Vec<u8>> {
    if spec == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    match spec.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map_err(|e| Error::msg(format!("cannot read input file `{path}`: {e}"))),
        None => Ok(spec.as_bytes().to_vec()),
    }
}

fn parse_pair(spec: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{spec}` is not KEY=VALUE")),
    }
}

fn parse_level(level: &str) -> Result<LogLevel, String> {
    Ok(match level {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        other => {
            return Err(format!(
                "unknown log level `{other}`: trace, debug, info, warn or error"
            ));
        }
    })
}
