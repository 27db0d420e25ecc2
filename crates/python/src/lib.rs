//! The Python package of `tern-plugin` (`import tern`): a `tern.PluginHost`
//! loads plugins with their grants and limits, and every call returns its
//! output with a report of what it cost. Calls release the GIL while the
//! plugin runs, so Python threads call plugins in parallel.
//!
//! Python sees Tern's failures as two exceptions: `tern.LoadError` (the
//! plugin does not compile or link, or a setting is refused) and
//! `tern.CallError` (a call failed; its `report` says what it cost and which
//! limit stopped it).

mod host;
mod plugin;
mod report;

use std::borrow::Cow;
use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

create_exception!(
    tern,
    CallError,
    PyException,
    "A plugin call failed. Its `report` attribute (a `tern.Report`) says what the call cost until it stopped, and `report.stopped_by` the limit that stopped it, if one did."
);

create_exception!(
    tern,
    LoadError,
    PyException,
    "A plugin could not be loaded or swapped in: it does not compile or link, or a setting is refused."
);

/// Run untrusted WebAssembly plugins (Extism plugins, components, plain
/// modules) in-process, sandboxed and bounded.
#[pymodule]
fn tern(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<host::PluginHost>()?;
    m.add_class::<plugin::Plugin>()?;
    m.add_class::<plugin::Session>()?;
    m.add_class::<report::Report>()?;
    m.add("CallError", py.get_type::<CallError>())?;
    m.add("LoadError", py.get_type::<LoadError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Where a plugin's code comes from: a file, or the bytes of a module or
/// component.
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    /// `bytes` or `bytearray` are the code itself; a `str` or `os.PathLike`
    /// names its file.
    fn of(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = value.cast::<PyBytes>() {
            return Ok(Source::Bytes(bytes.as_bytes().to_vec()));
        }
        if let Ok(bytes) = value.cast::<PyByteArray>() {
            return Ok(Source::Bytes(bytes.to_vec()));
        }
        value.extract::<PathBuf>().map(Source::Path).map_err(|_| {
            PyTypeError::new_err(
                "a plugin is loaded from a path (str or os.PathLike) or from its bytes",
            )
        })
    }
}

/// The bytes of `value` when it is `bytes`, `bytearray` or `str` (as
/// UTF-8); `None` for any other type. Bytes are borrowed, not copied: a
/// `bytes` object never changes.
fn bytes_of<'a>(value: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, [u8]>>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Some(Cow::Borrowed(bytes.as_bytes())));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Some(match text.to_cow()? {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        }));
    }
    if let Ok(bytes) = value.cast::<PyByteArray>() {
        return Ok(Some(Cow::Owned(bytes.to_vec())));
    }
    Ok(None)
}

/// A call's input: `bytes`, `bytearray` or `str`; none is empty.
fn input_of<'a>(data: Option<&'a Bound<'_, PyAny>>) -> PyResult<Cow<'a, [u8]>> {
    let Some(data) = data else {
        return Ok(Cow::Borrowed(b"".as_slice()));
    };
    bytes_of(data)?.ok_or_else(|| PyTypeError::new_err("a call's input must be bytes or str"))
}

/// A call's outcome, for Python: the output as `bytes` with the report, or
/// `tern.CallError` carrying the report.
fn finish_call<'py>(
    py: Python<'py>,
    result: Result<(Vec<u8>, tern_plugin::Report), tern_plugin::CallError>,
) -> PyResult<(Bound<'py, PyBytes>, report::Report)> {
    match result {
        Ok((output, report)) => Ok((PyBytes::new(py, &output), report.into())),
        Err(error) => Err(call_error(py, error)),
    }
}

/// `tern.CallError` with the failed call's message and its report as the
/// exception's `report` attribute.
fn call_error(py: Python<'_>, error: tern_plugin::CallError) -> PyErr {
    let tern_plugin::CallError { message, report } = error;
    let err = CallError::new_err(message);
    let attached = err
        .value(py)
        .setattr("report", report::Report::from(*report));
    match attached {
        Ok(()) => err,
        Err(e) => e,
    }
}
