//! A loaded plugin: its current version (swapped atomically while calls
//! are in flight), its grants, limits and variables, and the calls into
//! it, each on a fresh instance unless made through a [`Session`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tern_runtime::Program;
use wasmtime::component::Val as ComponentVal;
use wasmtime::{Result, Val, bail};

use crate::code::{Code, PluginKind};
use crate::config::{Grants, PluginLimits};
use crate::host::{HostInner, PluginHost};
use crate::instance::Instance;
use crate::report::{CallError, Report};
use crate::{HostFunctions, PluginConfig};

/// What every instance of a plugin shares.
pub(crate) struct Shared {
    pub(crate) host: Arc<HostInner>,
    pub(crate) grants: Grants,
    pub(crate) limits: PluginLimits,
    pub(crate) vars: Vars,
    pub(crate) log_level: Option<crate::LogLevel>,
}

/// An Extism plugin's variables: they outlive calls and instances, and are
/// bounded in total size.
#[derive(Default)]
pub(crate) struct Vars(Mutex<HashMap<String, Vec<u8>>>);

impl Vars {
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    pub(crate) fn set(&self, key: String, value: Vec<u8>, max: u64) -> Result<()> {
        let mut vars = self.lock();
        let others: usize = vars
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let total = (others + key.len() + value.len()) as u64;
        if total > max {
            bail!(
                "extism `var_set`: the plugin's variables would take {total} bytes, above the limit of {}",
                tern_runtime::ByteSize(max)
            );
        }
        vars.insert(key, value);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // A poisoned lock only means a panic elsewhere; the map is whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A loaded plugin. Cheap to clone; calls may come from many threads at
/// once.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    host: PluginHost,
    shared: Arc<Shared>,
    functions: HostFunctions,
    code: ArcSwap<Code>,
    version: AtomicU64,
}

impl Plugin {
    pub(crate) fn new(host: PluginHost, program: Program, config: PluginConfig) -> Result<Self> {
        let max = host.inner.max_memory;
        if config.limits.max_memory > max {
            bail!(
                "a memory limit of {} is above the host's maximum of {max}",
                config.limits.max_memory
            );
        }
        let code = Code::link(&host.inner.engine, program, &config.functions)?;
        let shared = Arc::new(Shared {
            host: host.inner.clone(),
            grants: config.grants,
            limits: config.limits,
            vars: Vars::default(),
            log_level: config.log_level,
        });
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                host,
                shared,
                functions: config.functions,
                code: ArcSwap::from_pointee(code),
                version: AtomicU64::new(1),
            }),
        })
    }

    /// What kind of plugin this is now.
    pub fn kind(&self) -> PluginKind {
        self.inner.code.load().kind
    }

    /// The functions it exports, for listings.
    pub fn functions(&self) -> Vec<String> {
        self.inner.code.load().functions()
    }

    /// How many times its code was swapped, plus one.
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// Calls `name` with `input` on a fresh instance: nothing survives the
    /// call but an Extism plugin's variables.
    ///
    /// - An Extism plugin gets `input` through the ABI and answers with
    ///   the output it sets.
    /// - A plain module's function gets `input` as numbers separated by
    ///   spaces or commas, and answers with its results so.
    /// - A component's function taking `string` or `list<u8>` gets the
    ///   input as it is and answers with what it returns (a string, bytes,
    ///   or a `result` of either, whose error fails the call); any other
    ///   function reads the input as WAVE arguments and answers in WAVE.
    pub fn call(&self, name: &str, input: &[u8]) -> Result<(Vec<u8>, Report), CallError> {
        let start = Instant::now();
        let mut instance = self.instance()?;
        instance.call(name, input, start)
    }

    /// [`Plugin::call`] for async callers: the call runs on tokio's
    /// blocking pool, so it never holds up the caller's executor.
    pub async fn call_async(
        &self,
        name: &str,
        input: Vec<u8>,
    ) -> Result<(Vec<u8>, Report), CallError> {
        let plugin = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || plugin.call(&name, &input))
            .await
            .unwrap_or_else(|e| {
                Err(CallError::new(
                    format!("the call did not finish: {e}"),
                    Report::default(),
                ))
            })
    }

    /// Calls a component's function with typed values.
    pub fn call_values(
        &self,
        name: &str,
        args: &[ComponentVal],
    ) -> Result<(Vec<ComponentVal>, Report), CallError> {
        let start = Instant::now();
        self.instance()?.call_values(name, args, start)
    }

    /// Calls a core module's function with numbers.
    pub fn call_numbers(&self, name: &str, args: &[Val]) -> Result<(Vec<Val>, Report), CallError> {
        let start = Instant::now();
        self.instance()?.call_numbers(name, args, start)
    }

    /// A session: one instance kept across calls, for plugins that keep
    /// state in memory. It keeps the version it started with.
    pub fn session(&self) -> Result<Session, CallError> {
        Ok(Session {
            instance: self.instance()?,
        })
    }

    /// Replaces the plugin's code with the module or component in `path`.
    /// Calls in flight finish on the old code; calls that start after this
    /// returns use the new. Code that does not compile or link is refused
    /// and the old keeps running.
    pub fn swap(&self, path: impl AsRef<Path>) -> Result<()> {
        let program = self.inner.host.compile_file(path.as_ref())?;
        self.swap_program(program)
    }

    /// [`Plugin::swap`] from bytes.
    pub fn swap_bytes(&self, bytes: impl Into<Vec<u8>>) -> Result<()> {
        let program = self.inner.host.compile_bytes(bytes.into())?;
        self.swap_program(program)
    }

    fn swap_program(&self, program: Program) -> Result<()> {
        let code = Code::link(
            &self.inner.host.inner.engine,
            program,
            &self.inner.functions,
        )?;
        self.inner.code.store(Arc::new(code));
        self.inner.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn instance(&self) -> Result<Instance, CallError> {
        Instance::new(&self.inner.shared, self.inner.code.load_full())
    }
}

/// One instance of a plugin kept across calls: what it keeps in memory
/// survives from one call to the next. Not shared between threads at
/// once; make one per thread.
pub struct Session {
    instance: Instance,
}

impl Session {
    /// [`Plugin::call`] on this session's instance.
    pub fn call(&mut self, name: &str, input: &[u8]) -> Result<(Vec<u8>, Report), CallError> {
        self.instance.call(name, input, Instant::now())
    }

    /// [`Plugin::call_values`] on this session's instance.
    pub fn call_values(
        &mut self,
        name: &str,
        args: &[ComponentVal],
    ) -> Result<(Vec<ComponentVal>, Report), CallError> {
        self.instance.call_values(name, args, Instant::now())
    }

    /// [`Plugin::call_numbers`] on this session's instance.
    pub fn call_numbers(
        &mut self,
        name: &str,
        args: &[Val],
    ) -> Result<(Vec<Val>, Report), CallError> {
        self.instance.call_numbers(name, args, Instant::now())
    }

    /// What kind of plugin the session runs.
    pub fn kind(&self) -> PluginKind {
        self.instance.code.kind
    }
}
