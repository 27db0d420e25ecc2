//! An app ready to serve: every component compiled, linked and
//! pre-instantiated once, its grants and limits resolved, its routes sorted.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use tern_manifest::{
    ByteSize, ComponentSource, Executor as ExecutorName, Manifest, ManifestError, MissingVariable,
    RouteTarget,
};
use tern_runtime::{Loader, Program, Services};
use tokio::sync::Semaphore;
use wasmtime::Engine;

use crate::config::ServeConfig;
use crate::engine::{MAX_POOL_SLOTS, PoolSize};
use crate::executor::Executor;
use crate::instance::Grants;
use crate::redis_trigger::RedisExecutor;
use crate::router::{Router, Target};
use crate::static_response::StaticReply;
use crate::stats::AppStats;
use crate::wagi::WagiExecutor;
use crate::warm::WarmExecutor;
use crate::wasi_http::{HttpLinkers, Imports, WasiHttpExecutor};
use crate::wasi_http3::WasiHttp3Executor;

/// A loaded app. It may be replaced by a new version while serving (see
/// [`App::reload`]); requests in flight keep the version they started on.
pub struct App {
    pub(crate) name: String,
    pub(crate) components: Vec<Served>,
    pub(crate) router: Router,
    pub(crate) pool: Arc<Pool>,
    pub(crate) stats: Arc<AppStats>,
    /// Served from a Spin manifest: guests get Spin's request headers too.
    pub(crate) spin: bool,
    /// The Redis triggers, each with its component's index.
    pub(crate) redis: Vec<RedisRoute>,
    stores: tern_runtime::Stores,
    databases: tern_runtime::Databases,
    models: crate::models::AppModels,
    pub(crate) proxy: crate::proxy::AppProxy,
}

/// A Redis trigger of the app: messages on `channel` at `address` go to
/// `components[component]`.
pub(crate) struct RedisRoute {
    pub(crate) trigger: tern_manifest::RedisTrigger,
    pub(crate) component: usize,
}

/// The engine and its instance pool, shared by an app and its reloads
/// while the pool's size stays the same. Its engine is ticked for as long
/// as it exists (a warm instance may outlive the pool).
pub(crate) struct Pool {
    engine: Engine,
    linkers: HttpLinkers,
    size: PoolSize,
    /// Instances alive at once across every version of the app.
    pub(crate) slots: Arc<Semaphore>,
    /// The programs its apps run, one copy for every app and component
    /// running the same binary.
    programs: tern_runtime::ProgramShare,
}

impl Pool {
    fn new(size: PoolSize) -> Result<Pool, LoadError> {
        Pool::with_slots(size, Arc::new(Semaphore::new(size.slots as usize)))
    }

    fn with_slots(size: PoolSize, slots: Arc<Semaphore>) -> Result<Pool, LoadError> {
        let engine = size.spec().engine().map_err(LoadError::Engine)?;
        tern_runtime::Ticker::global()
            .register(&engine)
            .map_err(|e| LoadError::Engine(e.into()))?;
        Ok(Pool {
            slots,
            linkers: HttpLinkers::new(&engine),
            programs: tern_runtime::ProgramShare::new(&engine),
            engine,
            size,
        })
    }
}

/// Engines and instance slots shared by many apps (`tern host`): `slots`
/// instances alive at once across every app, each of at most `max_memory`,
/// whatever the apps ask for. The engine with component-model concurrency
/// (for WASI 0.3 and warm instances) is made when the first app needs it;
/// the two engines draw on one count of slots.
pub struct Pools {
    slots: u32,
    max_memory: ByteSize,
    count: Arc<Semaphore>,
    /// Without and with concurrency.
    engines: Mutex<[Option<Arc<Pool>>; 2]>,
}

impl Pools {
    /// Room for `slots` instances of up to `max_memory` each.
    pub fn new(slots: u32, max_memory: ByteSize) -> Pools {
        let slots = slots.clamp(1, MAX_POOL_SLOTS);
        Pools {
            slots,
            max_memory,
            count: Arc::new(Semaphore::new(slots as usize)),
            engines: Mutex::new([None, None]),
        }
    }

    /// Instances alive now.
    pub fn slots_in_use(&self) -> u32 {
        let free = u32::try_from(self.count.available_permits()).unwrap_or(u32::MAX);
        self.slots.saturating_sub(free)
    }

    /// The pool for apps that need concurrency, or do not.
    fn pool(&self, concurrency: bool) -> Result<Arc<Pool>, LoadError> {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        let engine = &mut engines[usize::from(concurrency)];
        if let Some(pool) = engine {
            return Ok(pool.clone());
        }
        let size = PoolSize {
            slots: self.slots,
            max_memory: self.max_memory,
            concurrency,
        };
        let pool = Arc::new(Pool::with_slots(size, self.count.clone())?);
        *engine = Some(pool.clone());
        Ok(pool)
    }
}

/// Where an app gets its engine and keeps its figures: its own, or a
/// host's shared by many apps.
#[derive(Clone, Copy)]
pub struct Sharing<'a> {
    /// The host's engines and slots.
    pub pools: &'a Pools,
    /// The app's figures, kept across its versions and loads.
    pub stats: &'a Arc<AppStats>,
}

/// One component as served.
pub(crate) struct Served {
    pub(crate) grants: Arc<Grants>,
    pub(crate) executor: Executor,
    pub(crate) permits: Arc<Semaphore>,
    /// One permit of each granted model is taken per request.
    pub(crate) model_permits: Vec<(String, Arc<Semaphore>)>,
    /// Keeps the program shared with other loads of the same binary.
    _program: Option<Arc<tern_runtime::Held>>,
}

/// A route, for the startup listing.
#[derive(Debug)]
pub struct RouteInfo {
    /// The route as written in the manifest.
    pub pattern: String,
    /// The component serving it; `None` for a static response.
    pub component: Option<String>,
    /// How the component is run (prints as `wasi-http` or `wagi`); `None`
    /// for a static response.
    pub executor: Option<ExecutorName>,
    /// How it is answered, for people: `wasi-http`, `wasi-http 0.3`,
    /// `wagi`, with `, warm` for warm instances; `static response 200`.
    pub kind: String,
}

/// Why an app could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// A mistake in the manifest or a component it names.
    Manifest(ManifestError),
    /// The engine could not be set up.
    Engine(wasmtime::Error),
    /// A required variable has no value.
    Variable(MissingVariable),
    /// A key-value store could not be opened.
    Store(String),
    /// The operator's `[outbound] ca_file` could not be used.
    Tls(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Manifest(e) => e.fmt(f),
            LoadError::Engine(e) => write!(f, "setting up the engine: {e:#}"),
            LoadError::Variable(e) => e.fmt(f),
            LoadError::Store(e) => f.write_str(e),
            LoadError::Tls(e) => write!(f, "runtime config: outbound.ca_file: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Told when loading an app compiles a component, so that the CLI can say
/// so (the server never prints): a large component takes seconds. Also
/// told of a Spin app's imports that Tern does not provide. An app
/// loads one component at a time, so each `compiling` is followed by its
/// `compiled` before the next.
pub trait CompileNotes {
    /// `component`'s binary, `size` bytes, was not in the compile cache
    /// and is about to be compiled.
    fn compiling(&self, component: &str, size: usize);
    /// The compile `compiling` announced is over, done or failed.
    fn compiled(&self, component: &str);
    /// `component` (of a Spin app) imports `interfaces`, which Tern does
    /// not provide; it is served, and a call to one of them traps.
    fn unprovided(&self, component: &str, interfaces: &[String]) {
        let _ = (component, interfaces);
    }
    /// The app's model `name`, `size` bytes, is about to be loaded (it
    /// takes a moment for a language model).
    fn loading_model(&self, name: &str, size: u64) {
        let _ = (name, size);
    }
    /// The load `loading_model` announced is over, done or failed.
    fn loaded_model(&self, name: &str) {
        let _ = name;
    }
}

impl App {
    /// Compiles (or loads from the cache) and prepares every component of
    /// `manifest`. Every problem found is reported against the manifest.
    pub fn load(
        manifest: &Manifest,
        config: &ServeConfig,
        loader: &Loader<'_>,
    ) -> Result<App, LoadError> {
        App::load_after(None, manifest, config, loader, None, None)
    }

    /// Like [`App::load`], on a host's shared engines and slots, counting
    /// into `sharing.stats`. A component whose limits exceed
    /// `config.caps` (or the pools' memory) is refused.
    pub fn load_shared(
        manifest: &Manifest,
        config: &ServeConfig,
        loader: &Loader<'_>,
        sharing: Sharing<'_>,
    ) -> Result<App, LoadError> {
        App::load_after(None, manifest, config, loader, None, Some(sharing))
    }

    /// Like [`App::load`], telling `notes` about each component it
    /// compiles (the `loader`'s own `on_compile` is not called).
    pub fn load_noting(
        manifest: &Manifest,
        config: &ServeConfig,
        loader: &Loader<'_>,
        notes: &dyn CompileNotes,
    ) -> Result<App, LoadError> {
        App::load_after(None, manifest, config, loader, Some(notes), None)
    }

    /// Loads a new version of this app, to replace it while serving. The
    /// new version keeps this one's open key-value stores, its engine and
    /// instance pool when their size is unchanged (so instances of both
    /// versions count against one pool), and the concurrency limit of each
    /// component whose limit is unchanged.
    pub fn reload(
        &self,
        manifest: &Manifest,
        config: &ServeConfig,
        loader: &Loader<'_>,
    ) -> Result<App, LoadError> {
        App::load_after(Some(self), manifest, config, loader, None, None)
    }

    /// Like [`App::reload`], telling `notes` about each component it
    /// compiles (the `loader`'s own `on_compile` is not called).
    pub fn reload_noting(
        &self,
        manifest: &Manifest,
        config: &ServeConfig,
        loader: &Loader<'_>,
        notes: &dyn CompileNotes,
    ) -> Result<App, LoadError> {
        App::load_after(Some(self), manifest, config, loader, Some(notes), None)
    }

    fn load_after(
        previous: Option<&App>,
        manifest: &Manifest,
        config: &ServeConfig,
        loader: &Loader<'_>,
        notes: Option<&dyn CompileNotes>,
        sharing: Option<Sharing<'_>>,
    ) -> Result<App, LoadError> {
        let limits: Vec<_> = manifest
            .components
            .values()
            .map(|c| config.limits_for(&c.limits))
            .collect();
        let mut caps = config.caps;
        if let Some(sharing) = sharing {
            caps.memory = Some(caps.memory.map_or(sharing.pools.max_memory, |cap| {
                cap.min(sharing.pools.max_memory)
            }));
        }
        for (component, limits) in manifest.components.values().zip(&limits) {
            if let Some((key, why)) = limits.over(&caps) {
                return Err(LoadError::Manifest(manifest.error_at(
                    component.source_location,
                    &format!("component.{}.limits.{key}", component.id),
                    why,
                )));
            }
        }
        // A warm component's idle instances hold pool slots too: as many
        // as its requests at once, at most.
        let slots = limits
            .iter()
            .zip(manifest.components.values())
            .map(|(l, c)| match c.instances {
                Some(_) => l.max_concurrent.saturating_mul(2),
                None => l.max_concurrent,
            })
            .fold(0u32, u32::saturating_add)
            .clamp(1, MAX_POOL_SLOTS);
        let max_memory = limits
            .iter()
            .map(|l| l.memory)
            .max()
            .unwrap_or(ServeConfig::DEFAULT_MEMORY);
        // What each binary declares decides the engine (WASI 0.3 needs
        // concurrency) and, before compiling, whether its memory fits. The
        // loader reads it from the file, or from the compile cache's stat
        // index without reading the file when its code is cached.
        let declared: Vec<Option<tern_runtime::Declared>> = manifest
            .components
            .values()
            .map(|c| c.source.file().and_then(|path| loader.declared(path).ok()))
            .collect();
        // Warm instances are run by wasmtime-wasi-http's handler, which
        // drives every instance's event loop.
        let concurrency = manifest.components.values().any(|c| c.instances.is_some())
            || declared.iter().flatten().any(|d| d.wasi_p3);
        let size = PoolSize {
            slots,
            max_memory,
            concurrency,
        };
        let pool = match (sharing, previous) {
            (Some(sharing), _) => sharing.pools.pool(concurrency)?,
            (None, Some(app)) if app.pool.size == size => app.pool.clone(),
            (None, _) => Arc::new(Pool::new(size)?),
        };
        // A compiling child process builds its engine from this spec (a
        // host's, when the pool is shared).
        let loader = &Loader {
            spec: Some(pool.size.spec()),
            share: Some(&pool.programs),
            ..*loader
        };

        let env = |name: &str| {
            config
                .variables_from_env
                .then(|| std::env::var(name).ok())
                .flatten()
        };
        let mut variables = manifest
            .resolve_variables(&config.runtime.variables, env)
            .map_err(|missing| {
                LoadError::Variable(MissingVariable {
                    per_app: !config.variables_from_env,
                    ..missing
                })
            })?;
        let mut outbound = manifest
            .outbound_hosts(&config.runtime.variables, env)
            .map_err(LoadError::Manifest)?;
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(|| manifest.default_state_dir());
        let stores = tern_runtime::open_stores(
            manifest.key_value_stores(),
            &config.runtime,
            &state_dir,
            config.store_scope.as_deref(),
            previous.map(|app| &app.stores),
        )
        .map_err(LoadError::Store)?;
        let databases = tern_runtime::open_databases(
            manifest.sqlite_databases(),
            &state_dir,
            &config.runtime.databases,
            previous.map(|app| &app.databases),
        )
        .map_err(LoadError::Store)?;
        let models =
            crate::models::AppModels::load(manifest, previous.map(|app| &app.models), notes)?;

        let tls = crate::outbound::tls_config(config.runtime.outbound_ca_file.as_deref())
            .map_err(LoadError::Tls)?;
        let mut components = Vec::new();
        for ((component, limits), declared) in
            manifest.components.values().zip(limits).zip(declared)
        {
            let (executor, program) = prepare(
                &pool,
                loader,
                notes,
                component,
                declared,
                limits.memory,
                manifest.spin,
            )
            .map_err(|message| {
                LoadError::Manifest(manifest.error_at(
                    component.source_location,
                    &format!("component.{}", component.id),
                    message,
                ))
            })?;
            // `allowed_outbound_hosts`, its `{{ variable }}` entries filled in.
            let allowed = outbound.remove(&component.id).unwrap_or_default();
            let services = Services::new(
                stores.clone(),
                &component.key_value_stores,
                variables.remove(&component.id).unwrap_or_default(),
            )
            .with_databases(
                databases.clone(),
                &component.sqlite_databases,
                limits.timeout,
            )
            .with_outbound(tern_runtime::services::Outbound {
                allowed: allowed.clone(),
                private: config.private_outbound.clone(),
                connect_timeout: limits.outbound_connect_timeout,
                response_timeout: limits.outbound_timeout,
            })
            .with_nn(
                tern_runtime::Nn::new(models.loaded.clone(), &component.nn_models, limits.memory.0)
                    .loading_bytes(component.nn_load_bytes),
            );
            let model_permits = models.permits_for(&component.nn_models);
            let permits = previous
                .and_then(|app| app.component(&component.id))
                .filter(|old| old.grants.limits.max_concurrent == limits.max_concurrent)
                .map_or_else(
                    || Arc::new(Semaphore::new(limits.max_concurrent as usize)),
                    |old| old.permits.clone(),
                );
            // The operator's `-e KEY=VALUE` goes over the component's own.
            let with_env;
            let component = if config.runtime.environment.is_empty() {
                component
            } else {
                let mut overlaid = component.clone();
                overlaid
                    .environment
                    .extend(config.runtime.environment.clone());
                with_env = overlaid;
                &with_env
            };
            components.push(Served {
                grants: Arc::new(Grants::new(
                    component,
                    allowed,
                    config.private_outbound.clone(),
                    limits,
                    services,
                    tls.clone(),
                )),
                executor,
                permits,
                model_permits,
                _program: program,
            });
        }
        let proxy = crate::proxy::AppProxy::load(
            manifest,
            loader,
            previous.map(|app| &app.proxy),
            config.allowed_upstreams.as_deref(),
        )
        .map_err(LoadError::Manifest)?;
        let index = |id: &str| manifest.components.keys().position(|k| k == id);
        let router = Router::new(manifest.routes.iter().filter_map(|r| {
            let target = match &r.target {
                RouteTarget::Component(id) if r.filters.is_empty() => Target::Component(index(id)?),
                RouteTarget::Component(id) => {
                    Target::Filtered(index(id)?, proxy.chain(&r.filters)?)
                }
                RouteTarget::Static(response) => Target::Static(StaticReply::new(response)),
                RouteTarget::Upstream(upstream) => {
                    Target::Upstream(proxy.route(upstream, &r.filters)?)
                }
            };
            Some((r.pattern.clone(), target))
        }));
        let mut redis = Vec::with_capacity(manifest.redis_triggers.len());
        for trigger in &manifest.redis_triggers {
            let Some(component) = index(&trigger.component) else {
                continue;
            };
            if !matches!(components[component].executor, Executor::Redis(_)) {
                let declared = &manifest.components[&trigger.component];
                return Err(LoadError::Manifest(manifest.error_at(
                    declared.source_location,
                    &format!("component.{}", trigger.component),
                    format!(
                        "handles Redis messages on `{}`, but exports no `spin:redis/inbound-redis@3.0.0` handler (or is also an HTTP handler, which Tern serves as that)",
                        trigger.channel
                    ),
                )));
            }
            redis.push(RedisRoute {
                trigger: trigger.clone(),
                component,
            });
        }
        let stats = match (sharing, previous) {
            (Some(sharing), _) => sharing.stats.clone(),
            (None, Some(app)) => app.stats.clone(),
            (None, None) => Arc::default(),
        };
        Ok(App {
            name: manifest.app.name.clone(),
            components,
            router,
            pool,
            stats,
            spin: manifest.spin,
            redis,
            stores,
            databases,
            models,
            proxy,
        })
    }

    fn component(&self, id: &str) -> Option<&Served> {
        self.components.iter().find(|c| &*c.grants.id == id)
    }

    /// Whether the app's engine has component-model concurrency: only when
    /// a WASI 0.3 component or warm instances need it, since it costs
    /// every instantiation and host call of the others.
    pub fn concurrency(&self) -> bool {
        self.pool.size.concurrency
    }

    /// Adds the metrics the app's proxy-wasm filters define to `families`
    /// (`app` and `filter` labels).
    pub fn filter_metrics(&self, families: &mut tern_proxy::MetricFamilies) {
        self.proxy.write_metrics(&self.name, families);
    }

    /// The app's name from its manifest.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the app has served, across its versions.
    pub fn stats(&self) -> &Arc<AppStats> {
        &self.stats
    }

    /// The key-value stores the app declares, with their backend kind.
    pub fn stores(&self) -> Vec<(String, &'static str)> {
        self.stores
            .iter()
            .map(|(name, store)| (name.clone(), store.kind()))
            .collect()
    }

    /// The key-value store `name`, if the app declares it.
    pub fn store(&self, name: &str) -> Option<Arc<tern_kv::Store>> {
        self.stores.get(name).cloned()
    }

    /// The SQL database `name`, if the app declares it.
    pub fn database(&self, name: &str) -> Option<Arc<tern_runtime::databases::Database>> {
        self.databases.get(name).cloned()
    }

    /// The routes in the order they are matched.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.router
            .routes()
            .map(|(pattern, target)| match target {
                Target::Component(c) | Target::Filtered(c, _) => {
                    let served = &self.components[*c];
                    let mut kind = served.executor.describe();
                    if let Target::Filtered(_, chain) = target {
                        kind = format!("{kind} {}", chain.describe());
                    }
                    RouteInfo {
                        pattern: pattern.to_string(),
                        component: Some(served.grants.id.to_string()),
                        executor: Some(served.executor.kind()),
                        kind,
                    }
                }
                Target::Static(reply) => RouteInfo {
                    pattern: pattern.to_string(),
                    component: None,
                    executor: None,
                    kind: reply.describe(),
                },
                Target::Upstream(route) => RouteInfo {
                    pattern: pattern.to_string(),
                    component: None,
                    executor: None,
                    kind: route.describe().to_string(),
                },
            })
            .collect()
    }
}

/// Loads one component and picks its executor, checking that the binary
/// can be run by it, and first that its memory fits `memory`, its limit
/// (`declared` is what the binary declares, if it could be read).
fn prepare(
    pool: &Pool,
    loader: &Loader<'_>,
    notes: Option<&dyn CompileNotes>,
    component: &tern_manifest::Component,
    declared: Option<tern_runtime::Declared>,
    memory: ByteSize,
    spin: bool,
) -> Result<(Executor, Option<Arc<tern_runtime::Held>>), String> {
    let path = match &component.source {
        ComponentSource::File(path) => path,
        // `fetch_sources` makes every download a file first.
        ComponentSource::Download(download) => {
            return Err(format!(
                "{} has not been downloaded: `tern serve` and `tern up` fetch a component's `url`, `tern host` does not yet; give the file's path",
                download.display_url()
            ));
        }
    };
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // Before compiling, which takes seconds for a large component: a
    // memory that cannot fit would fail every request (or, as the largest
    // limit of the app, the pool after the compile).
    if let Some(needed) = declared.and_then(|d| d.initial_memory)
        && needed > memory.0
    {
        let id = &component.id;
        let raise = match component.limits.memory {
            Some(_) => format!("raise `memory` under [component.{id}.limits]"),
            None => format!(
                "raise it with --max-memory, or with `memory` under [component.{id}.limits]"
            ),
        };
        return Err(format!(
            "{file} needs {} of linear memory to start, above its memory limit of {memory} ({raise})",
            ByteSize(needed)
        ));
    }
    // Also before compiling: a component that answers one request per
    // instance would fail every other request if kept warm.
    if component.instances.is_some() && declared.is_some_and(|d| d.one_request_per_instance) {
        return Err(format!(
            "{file} was built with ComponentizeJS, whose StarlingMonkey engine answers one fetch event per instance (StarlingMonkey issue #247), so it cannot be kept warm; remove [component.{}.instances] to serve it with a fresh instance per request",
            component.id
        ));
    }
    // The component's name goes with each compile note.
    let compiling = Cell::new(false);
    let note = |size: usize| {
        if let Some(notes) = notes {
            compiling.set(true);
            notes.compiling(&component.id, size);
        }
    };
    let loader = match notes {
        Some(_) => Loader {
            on_compile: Some(&note),
            ..*loader
        },
        None => *loader,
    };
    let engine = &pool.engine;
    let loaded = loader.load(engine, path);
    if compiling.get()
        && let Some(notes) = notes
    {
        notes.compiled(&component.id);
    }
    let loaded = loaded.map_err(|e| format!("cannot load {file}: {e:#}"))?;
    let held = loaded.held;
    let executor = match (loaded.program, component.executor) {
        (Program::Component(c), None | Some(ExecutorName::WasiHttp)) => {
            let link_error = |e: wasmtime::Error| match tern_runtime::explain_link_error(&e) {
                Some(line) => format!("cannot link {file}: {line}"),
                None => format!("cannot prepare {file}: {e:#}"),
            };
            // Spin's SDKs import their whole platform world, used or not:
            // for a Spin app, what Tern lacks traps when called, and the
            // operator is told before anything is served.
            let imports = if spin {
                Imports::TrapUnprovided
            } else {
                Imports::Strict
            };
            let p3 = if WasiHttpExecutor::exports_handler(engine, &c) {
                false
            } else if WasiHttp3Executor::exports_handler(engine, &c) {
                true
            } else if RedisExecutor::exports_handler(engine, &c) {
                return RedisExecutor::new(&pool.linkers, &c, imports)
                    .map(|redis| (Executor::Redis(redis), held))
                    .map_err(link_error);
            } else {
                return Err(format!(
                    "{file} exports neither `wasi:http/incoming-handler` (WASI 0.2) nor `wasi:http/handler` (WASI 0.3), so the wasi-http executor has nothing to call"
                ));
            };
            if let (Imports::TrapUnprovided, Some(notes)) = (imports, notes) {
                let unprovided = pool.linkers.unprovided(&c, p3);
                if !unprovided.is_empty() {
                    notes.unprovided(&component.id, &unprovided);
                }
            }
            match (component.instances, p3) {
                (Some(instances), false) if instances.concurrent > 1 => Err(format!(
                    "instances.concurrent = {}: {file} is a WASI 0.2 handler, which takes one request at a time; use concurrent = 1, or a WASI 0.3 handler",
                    instances.concurrent
                )),
                (Some(instances), p3) => {
                    { WarmExecutor::new(&pool.linkers, &c, p3, instances, imports) }
                        .map(Executor::Warm)
                        .map_err(link_error)
                }
                (None, false) => WasiHttpExecutor::new(&pool.linkers, &c, imports)
                    .map(Executor::WasiHttp)
                    .map_err(link_error),
                (None, true) => WasiHttp3Executor::new(&pool.linkers, &c, imports)
                    .map(Executor::WasiHttp3)
                    .map_err(link_error),
            }
        }
        (Program::Module(_), None | Some(ExecutorName::Wagi)) if component.instances.is_some() => {
            Err(format!(
                "[component.{}.instances] keeps wasi-http components warm; {file} is a WAGI program, which runs once per request",
                component.id
            ))
        }
        (Program::Module(m), None | Some(ExecutorName::Wagi)) => {
            WagiExecutor::new(engine, &m, component.wagi.clone())
                .map(Executor::Wagi)
                .map_err(|e| format!("cannot prepare {file} for wagi: {e:#}"))
        }
        (Program::Module(_), Some(ExecutorName::WasiHttp)) => Err(format!(
            "{file} is a core module, but the wasi-http executor runs components exporting `wasi:http/incoming-handler`; use executor = \"wagi\" for a WASI preview 1 program"
        )),
        (Program::Component(_), Some(ExecutorName::Wagi)) => Err(format!(
            "{file} is a component, but the wagi executor runs WASI preview 1 core modules; use executor = \"wasi-http\""
        )),
    }?;
    Ok((executor, held))
}
