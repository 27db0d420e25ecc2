//! `tern.Plugin` and `tern.Session`: calls into a loaded plugin, each
//! without the GIL while the plugin runs.

use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tern_plugin::PluginKind;

use crate::report::Report;
use crate::{LoadError, Source, call_error, finish_call, input_of};

/// A loaded plugin. Calls may come from many Python threads at once; each
/// runs on a fresh instance, without the GIL.
#[pyclass(module = "tern", frozen)]
pub(crate) struct Plugin {
    inner: tern_plugin::Plugin,
}

impl Plugin {
    pub(crate) fn new(inner: tern_plugin::Plugin) -> Self {
        Plugin { inner }
    }
}

#[pymethods]
impl Plugin {
    /// Calls the function `name` with `data` (bytes or str) on a fresh
    /// instance and returns (output bytes, tern.Report). Raises
    /// tern.CallError, whose `report` says what the call cost, when the
    /// call fails or a limit stops it.
    #[pyo3(signature = (name, data = None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Report)> {
        let input = input_of(data)?;
        let result = py.detach(|| self.inner.call(name, &input));
        finish_call(py, result)
    }

    /// A session: one instance kept across calls, for plugins that keep
    /// state in memory. It keeps the code it started with.
    fn session(&self, py: Python<'_>) -> PyResult<Session> {
        let session = py.detach(|| self.inner.session());
        match session {
            Ok(session) => Ok(Session {
                kind: session.kind(),
                inner: Mutex::new(session),
            }),
            Err(error) => Err(call_error(py, error)),
        }
    }

    /// Replaces the plugin's code with the module or component at a path or
    /// in bytes. Calls in flight finish on the old code. Raises
    /// tern.LoadError, and keeps the old code, when the new one does not
    /// compile or link.
    fn swap(&self, py: Python<'_>, path_or_bytes: &Bound<'_, PyAny>) -> PyResult<()> {
        let source = Source::of(path_or_bytes)?;
        let plugin = &self.inner;
        let swapped = py.detach(move || {
            let swapped = match source {
                Source::Path(path) => plugin.swap(path),
                Source::Bytes(bytes) => plugin.swap_bytes(bytes),
            };
            swapped.map_err(|e| format!("{e:#}"))
        });
        swapped.map_err(LoadError::new_err)
    }

    /// The functions the plugin exports.
    #[getter]
    fn functions(&self) -> Vec<String> {
        self.inner.functions()
    }

    /// What kind of plugin it is: "extism", "core" or "component".
    #[getter]
    fn kind(&self) -> &'static str {
        kind_name(self.inner.kind())
    }

    /// How many times its code was swapped, plus one.
    #[getter]
    fn version(&self) -> u64 {
        self.inner.version()
    }

    fn __repr__(&self) -> String {
        format!(
            "<tern.Plugin kind='{}' version={}>",
            kind_name(self.inner.kind()),
            self.inner.version()
        )
    }
}

/// One instance of a plugin kept across calls: what it keeps in memory
/// survives from one call to the next. Calls on one session take turns.
#[pyclass(module = "tern", frozen)]
pub(crate) struct Session {
    // A session's calls need it mutably; the mutex also makes it Sync, as
    // a pyclass must be.
    inner: Mutex<tern_plugin::Session>,
    // Kept apart, so that reading it never waits for a call.
    kind: PluginKind,
}

#[pymethods]
impl Session {
    /// Calls the function `name` with `data` (bytes or str) on the
    /// session's instance; as Plugin.call otherwise.
    #[pyo3(signature = (name, data = None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Report)> {
        let input = input_of(data)?;
        // Locked without the GIL: a call holding the lock may need the GIL
        // for a host function.
        let result = py.detach(|| {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .call(name, &input)
        });
        finish_call(py, result)
    }

    /// What kind of plugin the session runs.
    #[getter]
    fn kind(&self) -> &'static str {
        kind_name(self.kind)
    }
}

fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Extism => "extism",
        PluginKind::Core => "core",
        PluginKind::Component => "component",
    }
}
