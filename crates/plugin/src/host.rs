//! One plugin host per process: the engine (pooling allocator, fuel and
//! epoch checks compiled in, moved by the process's `tern_runtime::Ticker`
//! while a call runs, which enforces timeouts), the sealed compile cache,
//! and the I/O runtime host calls use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tern_runtime::{ByteSize, CompileCache, Loader, Program, SigningKey};
use wasmtime::error::Context as _;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Result,
};

use crate::PluginConfig;
use crate::host_fn::{BoxFuture, panic_text};
use crate::plugin::Plugin;

/// How often the epoch moves: the granularity of timeouts.
pub(crate) const TICK: Duration = tern_runtime::TICK;

/// Where compiled code is cached.
#[derive(Clone, Debug, Default)]
pub enum CacheDir {
    /// Tern's default cache directory (`tern run`'s), if the user has one.
    #[default]
    Default,
    /// This directory, with the signing key stored in it.
    At(PathBuf),
    /// No cache: every load compiles.
    Off,
}

/// Builds a [`PluginHost`].
#[derive(Clone, Debug)]
pub struct PluginHostBuilder {
    max_instances: u32,
    max_memory: ByteSize,
    max_stack: ByteSize,
    cache: CacheDir,
}

impl Default for PluginHostBuilder {
    fn default() -> Self {
        PluginHostBuilder {
            max_instances: 256,
            max_memory: ByteSize(1 << 30),
            max_stack: tern_runtime::Limits::DEFAULT_MAX_STACK,
            cache: CacheDir::Default,
        }
    }
}

impl PluginHostBuilder {
    /// Instances alive at once across all plugins (calls in flight and
    /// sessions); a call beyond them fails until one ends. Default 256.
    pub fn max_instances(mut self, n: u32) -> Self {
        self.max_instances = n.max(1);
        self
    }

    /// The most linear memory any plugin may be given. Default 1 GiB.
    pub fn max_memory(mut self, max: ByteSize) -> Self {
        self.max_memory = max;
        self
    }

    /// The wasm stack of every call; deeper recursion traps. Default
    /// 512 KiB.
    pub fn max_stack(mut self, max: ByteSize) -> Self {
        self.max_stack = max;
        self
    }

    /// Where compiled code is cached.
    pub fn cache(mut self, cache: CacheDir) -> Self {
        self.cache = cache;
        self
    }

    /// Makes the host.
    pub fn build(self) -> Result<PluginHost> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        // Bounds checks in the code rather than guard pages: a plugin's
        // memory then never changes protection. With guard pages, an
        // instance whose memory grew (most do, at their first allocation)
        // costs two `mprotect`s per call, each taking the process's
        // address-space lock and shooting down TLBs on every core, which
        // serialized calls across threads (bench/plugin: fresh calls went
        // from 46k to 78k/s on one thread, 39k to 137k/s on two).
        config.signals_based_traps(false);
        config.memory_guard_size(0);
        config.memory_reservation(self.max_memory.0);
        let stack = usize::try_from(self.max_stack.0).unwrap_or(usize::MAX);
        config.max_wasm_stack(stack);
        config.async_stack_size(stack.saturating_add(1 << 20));
        let slots = self.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memory_size(usize::try_from(self.max_memory.0).unwrap_or(usize::MAX))
            // A slot is reset for its next call by rewriting only the
            // pages the last one dirtied (PAGEMAP_SCAN, Linux 6.7+), up to
            // this much: no madvise, so no page faults on the next call
            // and no TLB shootdowns across threads.
            .linear_memory_keep_resident(8 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto)
            .max_unused_warm_slots(slots);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).context("creating the plugin engine")?;
        let cache = match self.cache {
            CacheDir::Off => None,
            CacheDir::Default => CompileCache::open_default().unwrap_or(None),
            CacheDir::At(dir) => {
                let key = SigningKey::load_or_create(&dir.join("key"))?;
                Some(CompileCache::new(dir, key)?)
            }
        };
        tern_runtime::Ticker::global()
            .register(&engine)
            .context("starting the timeout ticker")?;
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine,
                cache,
                max_memory: self.max_memory,
                io: OnceLock::new(),
            }),
        })
    }
}

/// The host plugins run in: one per process is enough, and cheap to clone.
///
/// ```no_run
/// use tern_plugin::{PluginConfig, PluginHost};
/// let host = PluginHost::new()?;
/// let plugin = host.load("count_vowels.wasm", PluginConfig::default())?;
/// let (output, report) = plugin.call("count_vowels", b"Hello, World!")?;
/// assert_eq!(output, br#"{"count":3}"#);
/// println!("{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PluginHost {
    pub(crate) inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    cache: Option<CompileCache>,
    pub(crate) max_memory: ByteSize,
    io: OnceLock<tokio::runtime::Runtime>,
}

impl PluginHost {
    /// A host with the default settings ([`PluginHostBuilder`]).
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A builder for a host with other settings.
    pub fn builder() -> PluginHostBuilder {
        PluginHostBuilder::default()
    }

    /// The engine plugins are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Loads the plugin in `path` (a `.wasm` module or component, `.wat`
    /// text, or a sealed artifact from `tern compile`), taking its code from
    /// the cache when it was compiled before.
    pub fn load(&self, path: impl AsRef<Path>, config: PluginConfig) -> Result<Plugin> {
        let program = self.compile_file(path.as_ref())?;
        Plugin::new(self.clone(), program, config)
    }

    /// Loads a plugin from its bytes.
    pub fn load_bytes(&self, bytes: impl Into<Vec<u8>>, config: PluginConfig) -> Result<Plugin> {
        let program = self.compile_bytes(bytes.into())?;
        Plugin::new(self.clone(), program, config)
    }

    fn loader(&self) -> Loader<'_> {
        Loader {
            cache: self.inner.cache.as_ref(),
            ..Loader::default()
        }
    }

    pub(crate) fn compile_file(&self, path: &Path) -> Result<Program> {
        Ok(self.loader().load(&self.inner.engine, path)?.program)
    }

    pub(crate) fn compile_bytes(&self, bytes: Vec<u8>) -> Result<Program> {
        Ok(self.loader().load_bytes(&self.inner.engine, bytes)?.program)
    }
}

impl HostInner {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.io.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tern-plugin-io")
                .enable_all()
                .build()
                .expect("starting the plugin host's I/O runtime")
        })
    }

    /// Runs `future` on the I/O runtime and waits for it on this thread.
    pub(crate) fn io<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .expect("the I/O runtime runs every task it is given")
    }

    /// Runs an embedder's async function on the I/O runtime; its error or
    /// panic becomes a trap naming it.
    pub(crate) async fn run_async<T: Send + 'static>(
        &self,
        label: &str,
        future: BoxFuture<Result<T, String>>,
    ) -> Result<T> {
        match self.runtime().spawn(future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => wasmtime::bail!("host function `{label}` failed: {message}"),
            Err(e) if e.is_panic() => {
                let text = panic_text(&*e.into_panic());
                wasmtime::bail!("host function `{label}` panicked: {text}")
            }
            Err(_) => wasmtime::bail!("host function `{label}` was cancelled"),
        }
    }
}
