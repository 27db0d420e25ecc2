//! `tern.PluginHost`: the engine plugins run in, and loading a plugin with
//! its grants, limits and host functions, given as keyword arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use tern_plugin::{
    ByteSize, CacheDir, DirGrant, Grants, HostFunctions, LogLevel, PluginConfig, PluginLimits,
};

use crate::plugin::Plugin;
use crate::{LoadError, Source, bytes_of};

/// The namespace of a host function named without one: where the Extism
/// PDKs' `#[host_fn]` imports come from.
const USER_NAMESPACE: &str = "extism:host/user";

/// The host plugins run in: one engine, one compile cache and the timeout
/// ticker. One per process is enough.
///
/// `max_instances` bounds the instances alive at once across all plugins
/// (default 256). `cache_dir` is where compiled code is cached: None for
/// Tern's default cache directory, a path for that directory, False or ""
/// for no cache.
#[pyclass(module = "tern", frozen)]
pub(crate) struct PluginHost {
    inner: tern_plugin::PluginHost,
}

#[pymethods]
impl PluginHost {
    #[new]
    #[pyo3(signature = (*, max_instances = None, cache_dir = None))]
    fn new(max_instances: Option<u32>, cache_dir: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut builder = tern_plugin::PluginHost::builder().cache(cache(cache_dir)?);
        if let Some(n) = max_instances {
            builder = builder.max_instances(n);
        }
        let inner = builder
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("{e:#}")))?;
        Ok(PluginHost { inner })
    }

    /// Loads a plugin from a path (str or os.PathLike) or from the bytes of
    /// a module or component. Nothing is granted unless given here:
    ///
    /// - fuel: instructions one call may run (default: no bound);
    /// - timeout: seconds one call may take (default 10);
    /// - max_memory: bytes of memory an instance may hold (default 256 MiB);
    /// - max_output: bytes of output a call may produce (default 64 MiB);
    /// - config: dict of str to str, what the plugin's `config_get` reads;
    /// - allowed_hosts: list of hosts its `http_request` may reach
    ///   ("api.example.com", "https://*.example.com", ...);
    /// - env: dict of environment variables a WASI plugin sees;
    /// - dirs: dict of host directory to guest path, preopened read-write;
    /// - log_level: "trace", "debug", "info", "warn" or "error", the least
    ///   severe log lines kept in reports (default: none kept);
    /// - host_functions: dict of "namespace::name" (or "name", in
    ///   "extism:host/user") to a callable taking the arguments as bytes
    ///   and returning bytes, str or None.
    ///
    /// Raises tern.LoadError when the plugin does not compile or link.
    #[pyo3(signature = (
        path_or_bytes,
        *,
        fuel = None,
        timeout = None,
        max_memory = None,
        max_output = None,
        config = None,
        allowed_hosts = None,
        env = None,
        dirs = None,
        log_level = None,
        host_functions = None
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per setting.
    fn load(
        &self,
        py: Python<'_>,
        path_or_bytes: &Bound<'_, PyAny>,
        fuel: Option<u64>,
        timeout: Option<f64>,
        max_memory: Option<u64>,
        max_output: Option<u64>,
        config: Option<BTreeMap<String, String>>,
        allowed_hosts: Option<Vec<String>>,
        env: Option<BTreeMap<String, String>>,
        dirs: Option<BTreeMap<PathBuf, String>>,
        log_level: Option<String>,
        host_functions: Option<BTreeMap<String, Py<PyAny>>>,
    ) -> PyResult<Plugin> {
        let mut limits = PluginLimits {
            fuel,
            ..PluginLimits::default()
        };
        if let Some(seconds) = timeout {
            limits.timeout = Duration::try_from_secs_f64(seconds).map_err(|_| {
                PyValueError::new_err(format!(
                    "timeout must be a number of seconds, at least 0, not {seconds}"
                ))
            })?;
        }
        if let Some(bytes) = max_memory {
            limits.max_memory = ByteSize(bytes);
        }
        if let Some(bytes) = max_output {
            limits.max_output = ByteSize(bytes);
        }
        let mut hosts = Vec::new();
        for entry in allowed_hosts.unwrap_or_default() {
            let parsed = Grants::parse_host(&entry)
                .map_err(|e| PyValueError::new_err(format!("allowed host `{entry}`: {e}")))?;
            hosts.extend(parsed);
        }
        let grants = Grants {
            dirs: dirs
                .unwrap_or_default()
                .into_iter()
                .map(|(host, guest)| DirGrant {
                    host,
                    guest,
                    read_only: false,
                })
                .collect(),
            env: env.unwrap_or_default().into_iter().collect(),
            allowed_hosts: hosts,
            config: config.unwrap_or_default(),
        };
        let mut functions = HostFunctions::new();
        for (key, callable) in host_functions.unwrap_or_default() {
            if !callable.bind(py).is_callable() {
                return Err(PyTypeError::new_err(format!(
                    "host function `{key}` is not callable"
                )));
            }
            let (module, name) = key
                .rsplit_once("::")
                .unwrap_or((USER_NAMESPACE, key.as_str()));
            functions = functions.bytes(module, name, host_function(callable));
        }
        let config = PluginConfig {
            grants,
            limits,
            functions,
            log_level: log_level.as_deref().map(parse_log_level).transpose()?,
        };
        let source = Source::of(path_or_bytes)?;
        let host = &self.inner;
        // Compiling takes a while: other Python threads run meanwhile.
        let loaded = py.detach(move || {
            let loaded = match source {
                Source::Path(path) => host.load(path, config),
                Source::Bytes(bytes) => host.load_bytes(bytes, config),
            };
            loaded.map_err(|e| format!("{e:#}"))
        });
        let inner = loaded.map_err(LoadError::new_err)?;
        Ok(Plugin::new(inner))
    }
}

/// The cache setting: None is the default directory, False or "" none, a
/// path that directory.
fn cache(value: Option<&Bound<'_, PyAny>>) -> PyResult<CacheDir> {
    let Some(value) = value else {
        return Ok(CacheDir::Default);
    };
    if let Ok(on) = value.extract::<bool>() {
        return Ok(if on { CacheDir::Default } else { CacheDir::Off });
    }
    let dir: PathBuf = value.extract()?;
    Ok(if dir.as_os_str().is_empty() {
        CacheDir::Off
    } else {
        CacheDir::At(dir)
    })
}

fn parse_log_level(name: &str) -> PyResult<LogLevel> {
    match name.to_ascii_lowercase().as_str() {
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(PyValueError::new_err(format!(
            "log_level must be \"trace\", \"debug\", \"info\", \"warn\" or \"error\", not {name:?}"
        ))),
    }
}

/// A Python callable as an Extism host function. It runs with the GIL,
/// taken for the call (the plugin runs without it); its exception fails the
/// plugin's call with the exception's text.
fn host_function(
    callable: Py<PyAny>,
) -> impl Fn(&[Vec<u8>]) -> Result<Vec<u8>, String> + Send + Sync + 'static {
    move |args: &[Vec<u8>]| {
        Python::attach(|py| -> Result<Vec<u8>, String> {
            let args = PyTuple::new(py, args.iter().map(|arg| PyBytes::new(py, arg)))
                .map_err(|e| e.to_string())?;
            let result = callable.bind(py).call1(args).map_err(|e| e.to_string())?;
            if result.is_none() {
                return Ok(Vec::new());
            }
            match bytes_of(&result) {
                Ok(Some(bytes)) => Ok(bytes.into_owned()),
                Ok(None) => Err("it must return bytes, str or None".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
