//! Many apps in one process (`tern host`): the registry of deployed apps,
//! their bundles and records on disk, the admin API that deploys them, and
//! loading each app on its first request and unloading it when idle.
//!
//! A [`Host`] is the [`Sites`] of one `tern_http::Server`: the server finds
//! the app by the request's host name, then routes within it exactly as
//! `tern serve` does. Every app shares the host's engines and instance
//! slots ([`Pools`]); an app not loaded holds none of them, only its record.
//!
//! ```no_run
//! # async fn example(config: tern_host::HostConfig, sink: std::sync::Arc<dyn tern_http::EventSink>) -> Result<(), Box<dyn std::error::Error>> {
//! let serve = config.serve.clone();
//! let host = tern_host::Host::open(config)?;
//! let server = tern_http::Server::bind_sites(host.sites(), serve, sink)?;
//! let admin = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
//! tokio::spawn(tern_host::serve_admin(host.clone(), admin, "token".into()));
//! tokio::spawn(host.clone().unload_idle());
//! server.run(2, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod bundle;

mod admin;
mod metrics;
mod names;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tern_http::{App, AppStats, EventSink, Found, Pools, ServeConfig, Sharing, Sites};
use tern_manifest::{ByteSize, LoadOptions, Manifest, RedisTrigger};
use tern_runtime::{CompileCache, CompileLimits, Loader};

pub use admin::serve_admin;

use crate::bundle::BundleLimits;
use crate::names::Names;
use crate::state::{Layout, Record};

/// How a host runs.
pub struct HostConfig {
    /// Where deployed apps and their data live.
    pub state_dir: PathBuf,
    /// Apps answer at `NAME.DOMAIN`.
    pub domain: String,
    /// An app with no request for this long is unloaded.
    pub idle_unload: Duration,
    /// The largest bundle a deploy may upload.
    pub max_bundle_size: ByteSize,
    /// What a bundle may unpack to.
    pub bundle_limits: BundleLimits,
    /// The settings every app is served with: its limits are the defaults
    /// of components that set none, its caps the most any may ask for.
    pub serve: ServeConfig,
    /// Instances alive at once across every app.
    pub pool_slots: u32,
    /// Linear memory of one instance, at most.
    pub max_memory: ByteSize,
    /// Bounds on compiling a component.
    pub compile_limits: CompileLimits,
    /// Where compiled code is sealed, and read back (verified, then
    /// mapped from that file) on each load; `None` compiles on every
    /// load.
    pub cache: Option<CompileCache>,
    /// The Redis servers apps' Redis triggers may subscribe at, as
    /// [`tern_http::allowed_server`] writes them; an app whose trigger names
    /// another does not load.
    pub allowed_redis: Vec<String>,
}

/// The apps of one host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    config: HostConfig,
    layout: Layout,
    pools: Pools,
    apps: RwLock<BTreeMap<String, Arc<Entry>>>,
    names: RwLock<Names>,
    /// One change (deploy, rollback, delete) at a time: held by the
    /// change's blocking work itself, so that a client going away while it
    /// runs (which drops the request) does not let the next one start.
    changing: Arc<tokio::sync::Mutex<()>>,
    /// Where loads and unloads are reported.
    events: std::sync::OnceLock<Arc<dyn EventSink>>,
    /// The apps found at start whose record cannot be read, and why: not
    /// served, and held as they are (their name refuses changes) until an
    /// operator mends or removes the record and restarts the host.
    unreadable: BTreeMap<String, String>,
    /// The Redis subscriptions of each app with Redis triggers, loaded or
    /// not.
    subscriptions: Mutex<BTreeMap<String, Subscriptions>>,
}

/// An app's Redis subscriptions, each set running as a task of its own.
#[derive(Default)]
struct Subscriptions {
    /// The triggers subscribed now, and the watch that ends them.
    current: Option<(Vec<RedisTrigger>, tokio::sync::watch::Sender<bool>)>,
    /// The tasks of the current subscriptions and of those ended whose
    /// handlers may still run: each is done once its handlers are.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A deployed app.
struct Entry {
    name: String,
    record: Mutex<Record>,
    /// Loaded, or `None` (scaled to zero).
    current: ArcSwapOption<App>,
    /// Held while loading, so that concurrent first requests load once.
    loading: tokio::sync::Mutex<()>,
    /// Milliseconds since the epoch of the last load.
    loaded_at: AtomicU64,
    stats: Arc<AppStats>,
    loads: AtomicU64,
    unloads: AtomicU64,
    cold_starts: AtomicU64,
}

impl Entry {
    fn new(name: &str, record: Record, stats: Arc<AppStats>) -> Entry {
        Entry {
            name: name.to_owned(),
            record: Mutex::new(record),
            current: ArcSwapOption::empty(),
            loading: tokio::sync::Mutex::new(()),
            loaded_at: AtomicU64::new(0),
            stats,
            loads: AtomicU64::new(0),
            unloads: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
        }
    }

    fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    /// Serves `app` from now on; requests in flight finish on the old one.
    fn install(&self, app: Arc<App>) {
        self.loaded_at.store(now_millis(), Ordering::Relaxed);
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.current.store(Some(app));
    }
}

/// A version loaded and checked, not yet served.
struct Checked {
    app: Arc<App>,
    /// The host names its manifest claims.
    hosts: Vec<String>,
    triggers: Vec<RedisTrigger>,
}

/// Where a deployed app's stores are, for tools that read them while the
/// host runs or not (`tern kv --host-app`).
pub struct StoredApp {
    /// The manifest of the version served.
    pub manifest: PathBuf,
    /// Its embedded (SQLite) stores' directory, as the host gives it.
    pub state_dir: PathBuf,
    /// The prefix of its keys on a shared backend (Redis): its name.
    pub scope: String,
}

/// The stores of app `name` in the host state directory `state_dir`;
/// why not, in one line, when it is not deployed there.
pub fn stored_app(state_dir: &Path, name: &str) -> Result<StoredApp, String> {
    check_name(name).map_err(|refusal| refusal.message)?;
    let layout = Layout::new(state_dir.to_owned());
    let record = layout.read(name).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no app named `{name}` is deployed in {}",
            state_dir.display()
        ),
        _ => format!("the record of app `{name}` cannot be read: {e}"),
    })?;
    Ok(StoredApp {
        manifest: tern_manifest::manifest_path(&layout.version(name, record.version)),
        state_dir: layout.data(name),
        scope: name.to_owned(),
    })
}

/// Why the admin API refused a change: the status and one line.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status to answer with.
    pub status: u16,
    /// What was wrong, for the client.
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// A version made current by a deploy or a rollback.
pub struct Deployed {
    /// The app's name.
    pub name: String,
    /// The version now served.
    pub version: u32,
    /// Whether this deploy made the app (not a new version of it).
    pub created: bool,
    /// Every host name it answers to.
    pub hosts: Vec<String>,
    /// Its routes: pattern, component, how it runs.
    pub routes: Vec<(String, String, String)>,
}

/// A change to an app's variables.
pub enum VariablesChange {
    /// These values, and no others (`PUT`).
    Replace(BTreeMap<String, String>),
    /// These set, those with `None` removed, the rest kept (`PATCH`).
    Merge(BTreeMap<String, Option<String>>),
}

impl VariablesChange {
    fn apply(self, variables: &mut BTreeMap<String, String>) {
        match self {
            VariablesChange::Replace(values) => *variables = values,
            VariablesChange::Merge(changes) => {
                for (name, value) in changes {
                    match value {
                        Some(value) => variables.insert(name, value),
                        None => variables.remove(&name),
                    };
                }
            }
        }
    }
}

/// Variables changed.
pub struct VariablesSet {
    /// The names of the variables set now.
    pub names: Vec<String>,
    /// The version loaded again with them; `None` when no app of that name
    /// is deployed yet.
    pub version: Option<u32>,
    /// Those of `names` the served version does not declare.
    pub undeclared: Vec<String>,
}

/// What `GET /v1/apps` says of an app.
pub struct Summary {
    /// The app's name.
    pub name: String,
    /// The version served; `None` for an app held as found, whose record
    /// could not be read.
    pub version: Option<u32>,
    /// The versions kept for rollback, oldest first.
    pub versions: Vec<u32>,
    /// Every host name it answers to.
    pub hosts: Vec<String>,
    /// Whether it is loaded now.
    pub loaded: bool,
    /// Requests answered.
    pub requests: u64,
    /// When the last request arrived.
    pub last_request: Option<SystemTime>,
    /// Requests being served now.
    pub in_flight: u64,
    /// Its routes, when loaded: pattern, component, how it runs.
    pub routes: Option<Vec<(String, String, String)>>,
    /// Why it is held, not served and not changeable: its record could
    /// not be read when the host started (its version is then unknown).
    pub held: Option<String>,
}

impl Host {
    /// Opens the host's state directory and reads every deployed app's
    /// record; loads none of them.
    pub fn open(config: HostConfig) -> std::io::Result<Host> {
        // Absolute, so that every path in a message is one `without_dirs`
        // knows.
        let layout = Layout::new(std::path::absolute(&config.state_dir)?);
        let (records, unreadable) = layout.open()?;
        let pools = Pools::new(config.pool_slots, config.max_memory);
        let host = Host {
            inner: Arc::new(Inner {
                layout,
                pools,
                apps: RwLock::default(),
                names: RwLock::default(),
                changing: Arc::default(),
                events: std::sync::OnceLock::new(),
                unreadable: unreadable.into_iter().collect(),
                subscriptions: Mutex::default(),
                config,
            }),
        };
        for (name, record) in records {
            let names = host.names_of(&name, &record.hosts);
            write(&host.inner.names).claim(&name, &names);
            let entry = Entry::new(&name, record, Arc::default());
            write(&host.inner.apps).insert(name, Arc::new(entry));
        }
        for name in host.inner.unreadable.keys() {
            // Its own name stays its own, unless a recorded app holds it;
            // the names its record claimed cannot be known.
            let names = host.names_of(name, &[]);
            write(&host.inner.names).claim(name, &names);
        }
        Ok(host)
    }

    /// Reports loads and unloads to `sink` from now on.
    pub fn report_to(&self, sink: Arc<dyn EventSink>) {
        for (name, why) in &self.inner.unreadable {
            sink.event(&format!("app `{name}` is not served: {why}"));
        }
        let _ = self.inner.events.set(sink);
    }

    fn event(&self, message: &str) {
        if let Some(sink) = self.inner.events.get() {
            sink.event(message);
        }
    }

    /// The host as the server's [`Sites`].
    pub fn sites(&self) -> Arc<dyn Sites> {
        Arc::new(self.clone())
    }

    /// How many apps are deployed.
    pub fn len(&self) -> usize {
        read(&self.inner.apps).len()
    }

    /// Whether no app is deployed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The admin token: read from `file`, or from (or made in, mode 0600)
    /// the state directory's `admin-token`. Returns it and its file.
    pub fn admin_token(&self, file: Option<&Path>) -> std::io::Result<(String, PathBuf)> {
        state::admin_token(self.state_dir(), file)
    }

    /// Unloads apps idle for the configured time, until dropped.
    pub async fn unload_idle(self) {
        let idle = self.inner.config.idle_unload;
        let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let idle_millis = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(every).await;
            let now = now_millis();
            let entries: Vec<_> = read(&self.inner.apps).values().cloned().collect();
            for entry in entries {
                if entry.current.load().is_none() || entry.stats.in_flight() > 0 {
                    continue;
                }
                let last = entry
                    .stats
                    .last_request()
                    .map_or(0, millis)
                    .max(entry.loaded_at.load(Ordering::Relaxed));
                if now.saturating_sub(last) >= idle_millis && entry.current.swap(None).is_some() {
                    entry.unloads.fetch_add(1, Ordering::Relaxed);
                    let idle = tern_runtime::HumanDuration(idle);
                    self.event(&format!(
                        "unloaded app `{}`: no request for {idle}",
                        entry.name
                    ));
                }
            }
        }
    }

    /// `NAME.DOMAIN`, then what the manifest claims.
    fn names_of(&self, name: &str, claimed: &[String]) -> Vec<String> {
        let mut names = vec![format!("{name}.{}", self.inner.config.domain)];
        names.extend(claimed.iter().cloned());
        names
    }

    /// Refuses a change to an app whose record could not be read at
    /// start: a deploy would lose its versions and data to a new record.
    fn changeable(&self, name: &str) -> Result<(), Refusal> {
        match self.inner.unreadable.get(name) {
            None => Ok(()),
            Some(why) => Err(Refusal::new(
                409,
                format!(
                    "app `{name}` is held as found: {why}; mend or remove apps/{name} in the host's state directory and restart the host"
                ),
            )),
        }
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        read(&self.inner.apps).get(name).cloned()
    }

    /// The app's settings: the host's, with its stores in its own
    /// directory, its keys on Redis under its name, and its own variables
    /// (never the host's environment's).
    fn app_config(&self, name: &str, variables: BTreeMap<String, String>) -> ServeConfig {
        let mut config = self.inner.config.serve.clone();
        config.state_dir = Some(self.inner.layout.data(name));
        config.store_scope = Some(name.to_owned());
        config.runtime.variables = variables;
        config.variables_from_env = false;
        config
    }

    /// The values of `name`'s variables, as last set through the admin API.
    fn variables(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        self.inner.layout.variables(name).map_err(|e| {
            format!("its variables (apps/{name}/variables.json in the host's state directory) cannot be read: {e}")
        })
    }

    /// Reads version `version` of `name`'s manifest.
    fn manifest(&self, name: &str, version: u32) -> Result<Manifest, String> {
        let dir = self.inner.layout.version(name, version);
        let options = LoadOptions {
            unbuilt: false,
            allow_outside_app_dir: false,
        };
        // The bundle's `tern.toml`, or its `spin.toml` when it has none.
        let manifest = tern_manifest::load_with(&tern_manifest::manifest_path(&dir), options)
            .map_err(|e| self.without_dirs(&e.to_string(), &dir))?;
        let allowed = &self.inner.config.allowed_redis;
        for trigger in &manifest.redis_triggers {
            // Where it would connect, as the client reads the address.
            let server = tern_http::trigger_server(trigger)?;
            if !allowed.contains(&server) {
                return Err(format!(
                    "its Redis trigger on `{}` subscribes at redis {server}, which this host does not let apps reach (the operator's --allow-redis-trigger)",
                    trigger.channel
                ));
            }
        }
        Ok(manifest)
    }

    /// Loads version `version` of `name` on the host's engines, with
    /// `variables`.
    fn load(
        &self,
        entry: &Entry,
        version: u32,
        manifest: &Manifest,
        variables: BTreeMap<String, String>,
    ) -> Result<App, String> {
        let config = self.app_config(&entry.name, variables);
        let inner = &self.inner;
        let loader = Loader {
            cache: inner.config.cache.as_ref(),
            limits: Some(&inner.config.compile_limits),
            // A version directory is unpacked once, at its deploy, and never
            // written again: the deploy's load indexes each module, so the
            // app's first request after an idle unload or a restart finds
            // its code without reading and hashing the module.
            written_once: true,
            ..Loader::default()
        };
        let sharing = Sharing {
            pools: &inner.pools,
            stats: &entry.stats,
        };
        App::load_shared(manifest, &config, &loader, sharing).map_err(|e| {
            self.without_dirs(&e.to_string(), &inner.layout.version(&entry.name, version))
        })
    }

    /// Deploys `bundle` as the next version of `name`: unpacked, checked,
    /// compiled and loaded before anything changes; then recorded and
    /// swapped in.
    pub async fn deploy(&self, name: &str, bundle: bytes::Bytes) -> Result<Deployed, Refusal> {
        check_name(name)?;
        self.change(name, move |host, name| host.deploy_now(name, &bundle))
            .await
    }

    /// Runs `work` on `name` as the host's one change of the moment, on a
    /// blocking thread that holds the change lock itself to the end.
    async fn change<T: Send + 'static>(
        &self,
        name: &str,
        work: impl FnOnce(&Host, &str) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<T, Refusal> {
        self.changeable(name)?;
        let one = self.inner.changing.clone().lock_owned().await;
        let host = self.clone();
        let name = name.to_owned();
        blocking(move || {
            let _one = one;
            work(&host, &name)
        })
        .await
    }

    fn deploy_now(&self, name: &str, bundle: &[u8]) -> Result<Deployed, Refusal> {
        let layout = &self.inner.layout;
        let existing = self.entry(name);
        let mut record = existing.as_ref().map(|e| e.record()).unwrap_or_default();
        let version = record.next_version();
        let dir = layout.version(name, version);
        std::fs::create_dir_all(layout.app(name)).map_err(internal)?;
        // Left over from a deploy cut short, unrecorded: not ours to keep.
        layout
            .remove_versions_except(name, &record.versions)
            .map_err(internal)?;
        std::fs::create_dir(&dir).map_err(internal)?;
        let entry = existing
            .unwrap_or_else(|| Arc::new(Entry::new(name, Record::default(), Arc::default())));
        let loaded = self.check_and_load(&entry, version, |dir| {
            bundle::unpack(bundle, dir, &self.inner.config.bundle_limits)
                .map(drop)
                .map_err(|e| Refusal::new(400, e.to_string()))
        });
        let Checked {
            app,
            hosts,
            triggers,
        } = match loaded {
            Ok(loaded) => loaded,
            Err(refusal) => {
                // The load may have indexed modules of `dir` at once
                // (`written_once`); their records go with them.
                if let Some(cache) = &self.inner.config.cache {
                    cache.forget_tree(&dir);
                }
                let _ = std::fs::remove_dir_all(&dir);
                if record.versions.is_empty() {
                    // A first deploy refused: nothing of it stays (an empty
                    // directory only; data kept from a deleted app stays).
                    let _ = std::fs::remove_dir(layout.app(name));
                }
                return Err(refusal);
            }
        };
        Layout::sync_tree(&dir).map_err(internal)?;
        record.version = version;
        record.versions.push(version);
        record.hosts = hosts;
        let dropped = Layout::prune(&mut record);
        let created = record.versions.len() == 1;
        let kept = record.versions.clone();
        let deployed = self.commit(&entry, record, app, &triggers, created)?;
        if !dropped.is_empty() {
            // Only now that the record no longer names them.
            let _ = layout.remove_versions_except(name, &kept);
        }
        Ok(deployed)
    }

    /// Goes back to the version before the one served.
    pub async fn rollback(&self, name: &str) -> Result<Deployed, Refusal> {
        self.change(name, |host, name| {
            let entry = host.entry(name).ok_or_else(|| unknown(name))?;
            let mut record = entry.record();
            let Some(version) = record.previous() else {
                return Err(Refusal::new(
                    409,
                    format!(
                        "app `{name}` has no version before {} to go back to",
                        record.version
                    ),
                ));
            };
            let Checked {
                app,
                hosts,
                triggers,
            } = host.check_and_load(&entry, version, |_| Ok(()))?;
            record.version = version;
            record.hosts = hosts;
            host.commit(&entry, record, app, &triggers, false)
        })
        .await
    }

    /// The names of the variables set for `name` (never their values).
    pub fn variable_names(&self, name: &str) -> Result<Vec<String>, Refusal> {
        check_name(name)?;
        let variables = self.variables(name).map_err(|e| Refusal::new(500, e))?;
        Ok(variables.into_keys().collect())
    }

    /// Changes the values of `name`'s variables. A deployed app is loaded
    /// again with them first, and keeps serving as it was if that load
    /// fails (a required variable left without a value, say): nothing
    /// changes then. A name with no app deployed yet keeps them for its
    /// first deploy.
    pub async fn set_variables(
        &self,
        name: &str,
        change: VariablesChange,
    ) -> Result<VariablesSet, Refusal> {
        check_name(name)?;
        self.change(name, |host, name| host.set_variables_now(name, change))
            .await
    }

    fn set_variables_now(
        &self,
        name: &str,
        change: VariablesChange,
    ) -> Result<VariablesSet, Refusal> {
        let layout = &self.inner.layout;
        let mut variables = self.variables(name).map_err(|e| Refusal::new(500, e))?;
        change.apply(&mut variables);
        let mut set = VariablesSet {
            names: variables.keys().cloned().collect(),
            version: None,
            undeclared: Vec::new(),
        };
        let Some(entry) = self.entry(name) else {
            layout.write_variables(name, &variables).map_err(internal)?;
            return Ok(set);
        };
        let version = entry.record().version;
        let manifest = self
            .manifest(name, version)
            .map_err(|e| Refusal::new(422, e))?;
        set.undeclared = (set.names.iter())
            .filter(|n| !manifest.variables.contains_key(*n))
            .cloned()
            .collect();
        let app = self
            .load(&entry, version, &manifest, variables.clone())
            .map_err(|e| Refusal::new(422, e))?;
        // A cold load reads the variables under this lock: it either ran
        // before (and this replaces what it installed) or reads these.
        let _loading = entry.loading.blocking_lock();
        layout.write_variables(name, &variables).map_err(internal)?;
        entry.install(Arc::new(app));
        set.version = Some(version);
        Ok(set)
    }

    /// Prepares version `version` of `entry` (after `prepare` fills its
    /// directory): reads its manifest, checks its host names, loads it.
    fn check_and_load(
        &self,
        entry: &Entry,
        version: u32,
        prepare: impl FnOnce(&Path) -> Result<(), Refusal>,
    ) -> Result<Checked, Refusal> {
        prepare(&self.inner.layout.version(&entry.name, version))?;
        let manifest = self
            .manifest(&entry.name, version)
            .map_err(|e| Refusal::new(422, e))?;
        let hosts = manifest.app.hosts.clone();
        let names = self.names_of(&entry.name, &hosts);
        if let Some((name, holder)) = read(&self.inner.names).conflict(&entry.name, &names) {
            return Err(Refusal::new(
                409,
                format!("host name `{name}` is claimed by app `{holder}`"),
            ));
        }
        let variables = self
            .variables(&entry.name)
            .map_err(|e| Refusal::new(500, e))?;
        let app = self
            .load(entry, version, &manifest, variables)
            .map_err(|e| Refusal::new(422, e))?;
        Ok(Checked {
            app: Arc::new(app),
            hosts,
            triggers: manifest.redis_triggers,
        })
    }

    /// Records `record` (the point after which the change survives a
    /// crash), then serves `app` under its names, with the subscriptions of
    /// its Redis `triggers`.
    fn commit(
        &self,
        entry: &Arc<Entry>,
        mut record: Record,
        app: Arc<App>,
        triggers: &[RedisTrigger],
        created: bool,
    ) -> Result<Deployed, Refusal> {
        let name = &entry.name;
        record.redis = !triggers.is_empty();
        // A cold load of the version before may be under way: it installs
        // what it loaded only if the record still names that version.
        let _loading = entry.loading.blocking_lock();
        self.inner.layout.write(name, &record).map_err(internal)?;
        let names = self.names_of(name, &record.hosts);
        {
            let mut index = write(&self.inner.names);
            index.release(name);
            index.claim(name, &names);
        }
        let routes = routes(&app);
        let version = record.version;
        *lock(&entry.record) = record;
        entry.install(app);
        write(&self.inner.apps).insert(name.clone(), entry.clone());
        self.subscribe(entry, triggers);
        Ok(Deployed {
            name: name.clone(),
            version,
            created,
            hosts: names,
            routes,
        })
    }

    /// Removes `name`: requests in flight finish; its data stays unless
    /// `purge`, which removes its files and its keys on Redis once those
    /// requests have ended (or could have run no longer).
    pub async fn delete(&self, name: &str, purge: bool) -> Result<(), Refusal> {
        let runtime = tokio::runtime::Handle::current();
        self.change(name, move |host, name| {
            host.delete_now(name, purge, &runtime)
        })
        .await
    }

    fn delete_now(
        &self,
        name: &str,
        purge: bool,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), Refusal> {
        let entry = self.entry(name).ok_or_else(|| unknown(name))?;
        // The record first: one that could not be removed leaves the app
        // served, as the answer (500) says.
        let layout = &self.inner.layout;
        layout.unrecord(name).map_err(internal)?;
        write(&self.inner.apps).remove(name);
        write(&self.inner.names).release(name);
        // No more messages are read; those being handled finish as
        // requests do, and a purge waits for them.
        let handlers = self.unsubscribe(name);
        let last = {
            // A cold load under way ends first, installing nothing; one
            // waiting for it finds the app gone, and loads nothing.
            let _loading = entry.loading.blocking_lock();
            entry.current.swap(None)
        };
        if purge {
            // A request or a Redis handler still running could write to a
            // store the purge had passed, and leave data behind.
            self.drain(&entry, last, handlers);
        }
        layout.delete(name, purge).map_err(internal)?;
        if purge {
            // Still holding the change lock: a deploy of the same name
            // waits for the purge.
            let stores = &self.inner.config.serve.runtime;
            runtime
                .block_on(tern_runtime::purge_redis_stores(stores, name))
                .map_err(|e| {
                    Refusal::new(
                        502,
                        format!("app `{name}` is deleted and its files are gone, but {e}"),
                    )
                })?;
        }
        Ok(())
    }

    /// Waits until no request of `entry` is in flight, nor holds `last`
    /// (the version it served, which a request holds from the moment it
    /// finds the app, before it is counted in flight), nor a Redis message
    /// is being handled (`handlers`, the tasks of the app's subscriptions,
    /// ended), or
    /// until the longest a request may run (the host's `--timeout`) has
    /// passed, with a second more for the answer to be written; then ends
    /// the Redis handlers still there (one waiting for an instance slot,
    /// say), so that none writes after.
    fn drain(
        &self,
        entry: &Entry,
        last: Option<Arc<App>>,
        handlers: Vec<tokio::task::JoinHandle<()>>,
    ) {
        let busy = || {
            entry.stats.in_flight() > 0
                || last.as_ref().is_some_and(|app| Arc::strong_count(app) > 1)
                || handlers.iter().any(|task| !task.is_finished())
        };
        if !busy() {
            return;
        }
        let in_flight = entry.stats.in_flight().max(1);
        let longest =
            (self.inner.config.serve.caps.timeout).map_or(ServeConfig::DEFAULT_TIMEOUT, |t| t.0);
        let deadline = std::time::Instant::now() + longest + Duration::from_secs(1);
        let requests = if in_flight == 1 {
            "request"
        } else {
            "requests"
        };
        self.event(&format!(
            "app `{}` is deleted; waiting for {in_flight} {requests} in flight before purging its data",
            entry.name
        ));
        // Requests hold no lock to wait on: a short poll, on the blocking
        // thread the change runs on.
        while busy() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // An aborted task ends when the runtime next turns to it.
        handlers.iter().for_each(tokio::task::JoinHandle::abort);
        let ended = std::time::Instant::now() + Duration::from_secs(1);
        while handlers.iter().any(|task| !task.is_finished()) && std::time::Instant::now() < ended {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What is known of every app, held ones too, by name.
    pub fn list(&self) -> Vec<Summary> {
        let entries: Vec<_> = read(&self.inner.apps).values().cloned().collect();
        let mut apps: Vec<Summary> = entries.iter().map(|e| self.summary(e)).collect();
        apps.extend(
            self.inner
                .unreadable
                .iter()
                .map(|(name, why)| self.held(name, why)),
        );
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        apps
    }

    /// What is known of `name`.
    pub fn show(&self, name: &str) -> Option<Summary> {
        match self.entry(name) {
            Some(entry) => Some(self.summary(&entry)),
            None => (self.inner.unreadable.get_key_value(name)).map(|(n, why)| self.held(n, why)),
        }
    }

    /// An app held as found at start: its name (if no recorded app claimed
    /// it first) and why, nothing more.
    fn held(&self, name: &str, why: &str) -> Summary {
        let names = read(&self.inner.names);
        let hosts = (self.names_of(name, &[]).into_iter())
            .filter(|host| names.find(host) == Some(name))
            .collect();
        Summary {
            name: name.to_owned(),
            version: None,
            versions: Vec::new(),
            hosts,
            loaded: false,
            requests: 0,
            last_request: None,
            in_flight: 0,
            routes: None,
            held: Some(why.to_owned()),
        }
    }

    fn summary(&self, entry: &Entry) -> Summary {
        let record = entry.record();
        let current = entry.current.load_full();
        Summary {
            name: entry.name.clone(),
            version: Some(record.version),
            hosts: self.names_of(&entry.name, &record.hosts),
            versions: record.versions,
            loaded: current.is_some(),
            requests: entry.stats.requests(),
            last_request: entry.stats.last_request(),
            in_flight: entry.stats.in_flight(),
            routes: current.as_deref().map(routes),
            held: None,
        }
    }
}

impl Host {
    /// Makes the Redis subscriptions of every deployed app with Redis
    /// triggers, loaded or not; from then on deploys, rollbacks and
    /// deletes change them. Call it once, on the runtime that is to run
    /// them, after [`Host::report_to`].
    pub fn start_triggers(&self) {
        let entries: Vec<_> = read(&self.inner.apps).values().cloned().collect();
        for entry in entries {
            let record = entry.record();
            if !record.redis {
                continue;
            }
            match self.manifest(&entry.name, record.version) {
                Ok(manifest) => self.subscribe(&entry, &manifest.redis_triggers),
                Err(why) => self.event(&format!(
                    "app `{}` gets no Redis messages: {why}",
                    entry.name
                )),
            }
        }
    }

    /// Runs the subscriptions of `triggers` for `entry` from now on (none:
    /// ends its subscriptions). Subscriptions the same as before are kept,
    /// so a deploy that leaves them alone loses no message; those ended
    /// finish their handlers, and stay counted until they have.
    fn subscribe(&self, entry: &Arc<Entry>, triggers: &[RedisTrigger]) {
        let mut all = lock(&self.inner.subscriptions);
        let app = all.entry(entry.name.clone()).or_default();
        app.tasks.retain(|task| !task.is_finished());
        if (app.current.as_ref()).is_some_and(|(current, _)| current == triggers) {
            return;
        }
        if let Some((_, stop)) = app.current.take() {
            let _ = stop.send(true);
        }
        let (Some(sink), Ok(runtime), false) = (
            self.inner.events.get(),
            tokio::runtime::Handle::try_current(),
            triggers.is_empty(),
        ) else {
            return;
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let subscriber = Arc::new(Subscriber {
            host: self.clone(),
            entry: entry.clone(),
        });
        let task = runtime.spawn(tern_http::run_triggers(
            triggers.to_vec(),
            subscriber,
            sink.clone(),
            stopped,
        ));
        app.current = Some((triggers.to_vec(), stop));
        app.tasks.push(task);
    }

    /// Ends `name`'s subscriptions; returns their tasks (ended ones of
    /// earlier versions too), each done once its handlers are.
    fn unsubscribe(&self, name: &str) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(app) = lock(&self.inner.subscriptions).remove(name) else {
            return Vec::new();
        };
        if let Some((_, stop)) = app.current {
            let _ = stop.send(true);
        }
        app.tasks
    }
}

/// Where an app's Redis messages go: the app as served, loaded by the
/// first message as by a first request.
struct Subscriber {
    host: Host,
    entry: Arc<Entry>,
}

impl tern_http::Triggered for Subscriber {
    fn loaded(&self) -> Option<Arc<App>> {
        self.entry.current.load_full()
    }

    fn load(&self) -> Pin<Box<dyn Future<Output = Result<Arc<App>, String>> + Send + '_>> {
        Box::pin(async move {
            if let Some(app) = self.entry.current.load_full() {
                return Ok(app);
            }
            let (host, entry) = (self.host.clone(), self.entry.clone());
            match tokio::spawn(async move { host.load_cold(entry).await }).await {
                Ok(Found::App(app)) => Ok(app),
                Ok(Found::Failed(why)) => Err(why),
                Ok(Found::Unknown) => Err(format!("app `{}` is deleted", self.entry.name)),
                Err(e) => Err(format!("loading app `{}`: {e}", self.entry.name)),
            }
        })
    }
}

impl Sites for Host {
    fn app_for<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = Found> + Send + 'a>> {
        Box::pin(async move {
            let Some(entry) = read(&self.inner.names)
                .find(host)
                .and_then(|name| read(&self.inner.apps).get(name).cloned())
            else {
                return Found::Unknown;
            };
            if let Some(app) = entry.current.load_full() {
                return Found::App(app);
            }
            // The load is a task of its own: a request that goes away
            // meanwhile neither cancels it nor lets a second load start.
            let host = self.clone();
            let name = entry.name.clone();
            tokio::spawn(async move { host.load_cold(entry).await })
                .await
                .unwrap_or_else(|e| Found::Failed(format!("loading app `{name}`: {e}")))
        })
    }
}

impl Host {
    /// Whether `entry` is still the deployed app of its name.
    fn deployed(&self, entry: &Arc<Entry>) -> bool {
        read(&self.inner.apps)
            .get(&entry.name)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
    }

    /// Loads `entry`'s version for its first request, unless a load that
    /// held the lock before installed it. Concurrent first requests wait
    /// for one load, which runs on the blocking pool: it takes about a
    /// millisecond with the code cached, a compile (its cache entry gone)
    /// far longer, and the worker's other connections must not wait.
    async fn load_cold(&self, entry: Arc<Entry>) -> Found {
        let _loading = entry.loading.lock().await;
        if let Some(app) = entry.current.load_full() {
            return Found::App(app);
        }
        if !self.deployed(&entry) {
            // Deleted while this request waited for an earlier load.
            return Found::Unknown;
        }
        let version = entry.record().version;
        let started = std::time::Instant::now();
        let loaded = {
            let (host, entry) = (self.clone(), entry.clone());
            tokio::task::spawn_blocking(move || {
                let manifest = host.manifest(&entry.name, version)?;
                let variables = host.variables(&entry.name)?;
                host.load(&entry, version, &manifest, variables)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the load failed: {e}")))
        };
        if !self.deployed(&entry) {
            // Deleted during the load (which waits for it to end, then
            // removes what it was loaded from): it serves nothing.
            return Found::Unknown;
        }
        match loaded {
            Ok(app) => {
                let app = Arc::new(app);
                if entry.record().version != version {
                    // A deploy or rollback was committed meanwhile, with its
                    // own version installed: this one only answers the
                    // requests that waited for it.
                    return Found::App(entry.current.load_full().unwrap_or(app));
                }
                entry.cold_starts.fetch_add(1, Ordering::Relaxed);
                entry.install(app.clone());
                self.event(&format!(
                    "loaded app `{}` version {version} in {:.2}ms",
                    entry.name,
                    started.elapsed().as_secs_f64() * 1e3
                ));
                Found::App(app)
            }
            Err(why) => Found::Failed(format!("loading app `{}`: {why}", entry.name)),
        }
    }
}

/// An app name is a DNS label, so that `NAME.DOMAIN` is a host name.
fn check_name(name: &str) -> Result<(), Refusal> {
    let label = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if label {
        Ok(())
    } else {
        Err(Refusal::new(
            400,
            format!(
                "`{}` is not an app name: use 1 to 63 lowercase letters, digits and inner hyphens",
                name.escape_debug()
            ),
        ))
    }
}

fn unknown(name: &str) -> Refusal {
    Refusal::new(404, format!("no app named `{name}`"))
}

/// A failure of the host's own (disk, a task): 500, without detail for the
/// client beyond the operation.
fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(500, format!("the host could not record the change: {e}"))
}

/// Runs blocking work (unpacking, compiling, fsync) off the server's
/// threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(internal(format!("the task failed: {e}"))))
}

impl Host {
    /// An error text with the app version's directory taken out, so that
    /// paths read as the bundle's own (`tern.toml:3:1: ...`), and the rest
    /// of the state directory named, not shown (a `source` leading out of
    /// the app, say): the client is told nothing of the host's paths.
    fn without_dirs(&self, text: &str, dir: &Path) -> String {
        let text = replace_dir(text, dir, "", "the app directory")
            // As the manifest's checks name it: "outside the app directory
            // DIR".
            .replace("the app directory the app directory", "the app directory");
        let state = self.inner.layout.root();
        replace_dir(&text, state, "STATE/", "the host's state directory")
    }
}

/// `text` with `dir` and what is under it written as `under` and `itself`
/// (the path made absolute, and as the file system resolves it, the
/// longer first; never a relative form, which could match any word).
fn replace_dir(text: &str, dir: &Path, under: &str, itself: &str) -> String {
    let mut text = text.to_owned();
    let mut forms: Vec<String> = [
        std::path::absolute(dir).ok(),
        std::fs::canonicalize(dir).ok(),
    ]
    .into_iter()
    .flatten()
    .map(|dir| dir.display().to_string())
    .filter(|dir| dir.len() > 1)
    .collect();
    forms.sort_by_key(|dir| std::cmp::Reverse(dir.len()));
    for dir in forms {
        text = text.replace(&format!("{dir}/"), under);
        text = text.replace(&dir, itself);
    }
    text
}

fn routes(app: &App) -> Vec<(String, String, String)> {
    app.routes()
        .into_iter()
        .map(|r| (r.pattern, r.component.unwrap_or_default(), r.kind))
        .collect()
}

fn now_millis() -> u64 {
    millis(SystemTime::now())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
