//! `tern kv`: seed and inspect an app's key-value stores from the shell,
//! through the same backends `tern serve` uses.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tern_kv::Store;
use tern_runtime::{Error, Result};

#[derive(Args)]
#[command(after_help = "\
Stores are the ones the app's components declare in `key_value_stores`, on
the backends the runtime config chooses (SQLite under .tern/ by default).

Examples:
  tern kv set --app examples/url-shortener link:abc https://example.com
  tern kv get --app examples/url-shortener link:abc
  tern kv list --store cache --runtime-config redis.toml
  tern kv list --host-app shop --runtime-config host-runtime.toml")]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print a key's value (raw bytes, no newline added)
    Get {
        #[command(flatten)]
        store: StoreArgs,
        /// The key
        key: String,
    },
    /// Set a key; VALUE `-` reads the value from stdin
    Set {
        #[command(flatten)]
        store: StoreArgs,
        /// The key
        key: String,
        /// The value, or `-` for stdin
        value: String,
    },
    /// Delete a key
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// The key
        key: String,
    },
    /// List the keys, one per line, sorted
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
struct StoreArgs {
    /// The app's manifest, or a directory holding `tern.toml`
    #[arg(long, value_name = "PATH", default_value = ".")]
    app: PathBuf,
    /// The store, as named in `key_value_stores`
    #[arg(long, value_name = "NAME", default_value = "default")]
    store: String,
    /// Operator settings: key-value store backends (TOML)
    #[arg(long, value_name = "FILE")]
    runtime_config: Option<PathBuf>,
    /// Where embedded (SQLite) stores live [default: .tern beside the manifest]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// An app deployed to `tern host`, instead of --app: the stores of the
    /// version it serves, as the host gives them (its data directory, its
    /// keys on Redis); give the host's --runtime-config too
    #[arg(long, value_name = "NAME", conflicts_with_all = ["app", "state_dir"])]
    host_app: Option<String>,
    /// The host's state directory [default: as for `tern host`]
    #[arg(long, value_name = "DIR", requires = "host_app")]
    host_state_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn open(&self) -> Result<Store> {
        // `tern kv` runs no guest: where the app's binaries and files are
        // does not matter here, only the stores it declares.
        let options = tern_manifest::LoadOptions {
            allow_outside_app_dir: true,
            ..Default::default()
        };
        let hosted = match &self.host_app {
            Some(name) => {
                let state_dir = match &self.host_state_dir {
                    Some(dir) => dir.clone(),
                    None => crate::host::default_state_dir()?,
                };
                Some(tern_host::stored_app(&state_dir, name).map_err(Error::msg)?)
            }
            None => None,
        };
        let path = hosted.as_ref().map_or(&self.app, |app| &app.manifest);
        let manifest = tern_manifest::load_with(path, options)?;
        let declared = manifest.key_value_stores();
        if !declared.contains(&self.store.as_str()) {
            let known = if declared.is_empty() {
                "it declares none".to_owned()
            } else {
                format!("it declares: {}", declared.join(", "))
            };
            return Err(Error::msg(format!(
                "app `{}` has no key-value store `{}`; {known}",
                manifest.app.name, self.store
            )));
        }
        let runtime = match &self.runtime_config {
            Some(path) => tern_manifest::runtime_config::load(path)?,
            None => Default::default(),
        };
        let state_dir = (hosted.as_ref().map(|app| app.state_dir.clone()))
            .or_else(|| self.state_dir.clone())
            .unwrap_or_else(|| manifest.default_state_dir());
        let scope = hosted.as_ref().map(|app| app.scope.as_str());
        let config = runtime.store(&self.store);
        tern_runtime::open_store(&self.store, &config, &state_dir, scope).map_err(Error::msg)
    }
}

pub fn main(args: KvArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args.command))
}

async fn run(command: KvCommand) -> Result<ExitCode> {
    let failed = |store: &Store| {
        let name = store.name().to_owned();
        move |e: tern_kv::Error| Error::msg(format!("key-value store `{name}`: {e}"))
    };
    match command {
        KvCommand::Get { store, key } => {
            let store = store.open()?;
            let value = store.get(&key).await.map_err(failed(&store))?;
            let Some(value) = value else {
                let message = format!("no key `{key}` in store `{}`", store.name());
                return Err(Error::msg(message));
            };
            std::io::stdout().write_all(&value)?;
        }
        KvCommand::Set { store, key, value } => {
            let store = store.open()?;
            let value = if value == "-" {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes)?;
                bytes
            } else {
                value.into_bytes()
            };
            let result = store.set(&key, &value, None).await;
            result.map_err(failed(&store))?;
        }
        KvCommand::Delete { store, key } => {
            let store = store.open()?;
            store.delete(&key).await.map_err(failed(&store))?;
        }
        KvCommand::List { store } => {
            let store = store.open()?;
            let keys = store.all_keys().await.map_err(failed(&store))?;
            let mut out = std::io::stdout().lock();
            for key in keys {
                writeln!(out, "{key}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
