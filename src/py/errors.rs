//! The exceptions of the Python API, in one place.
//!
//! The classes are defined in Python source (`python/resi/errors.py`), so
//! they are ordinary classes with constructors and attributes — a handler
//! raises `CallError(code, details)` to answer with that status; this module
//! imports `resi.errors` on first use and only converts: [`config_error`],
//! [`bind_error`], [`call_error`], [`session_error`], [`resi_error`], and
//! back from a Python exception to a gRPC status with [`status_from_pyerr`].
//!
//! ```text
//! ResiError
//! ├── ConfigError     a configuration was rejected: .origin, .key
//! ├── CallError       a call failed: .code (StatusCode), .details, .trailers
//! ├── SessionError    a redundant session could not be set up
//! │   └── NotEndGatewayError  the peer is not an end gateway
//! └── BindError       a listen address could not be bound (an OSError)
//! ```

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyModule};

use crate::client::CallError;
use crate::config::ConfigError;
use crate::gateway::GatewayError;
use crate::grpc::{headers_to_metadata, Code, Status};

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `resi.errors`, imported on first use.
fn module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    let m = MODULE.get_or_try_init(py, || PyModule::import(py, "resi.errors").map(Bound::unbind))?;
    Ok(m.bind(py))
}

fn make<'py>(py: Python<'py>, class: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match module(py).and_then(|m| m.getattr(class)).and_then(|c| c.call1(args)) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// A configuration rejected by the parser: `ConfigError` with its origin
/// and key.
pub(crate) fn config_error(py: Python<'_>, e: &ConfigError) -> PyErr {
    make(py, "ConfigError", (e.to_string(), e.origin().to_string(), e.key().map(str::to_string)))
}

/// A configuration rejected here: `origin: key: problem`.
pub(crate) fn config_key_error(py: Python<'_>, origin: &str, key: &str, problem: impl std::fmt::Display) -> PyErr {
    make(py, "ConfigError", (format!("{origin}: {key}: {problem}"), origin.to_string(), Some(key.to_string())))
}

/// A configuration rejected as a whole: `origin: problem`, no key.
pub(crate) fn config_origin_error(py: Python<'_>, origin: &str, problem: impl std::fmt::Display) -> PyErr {
    make(py, "ConfigError", (format!("{origin}: {problem}"), origin.to_string(), None::<String>))
}

/// A listen address that could not be bound: `BindError`, an `OSError`
/// with the system's errno.
pub(crate) fn bind_error(py: Python<'_>, addr: &str, source: &std::io::Error) -> PyErr {
    bind_error_saying(py, addr, source, format!("cannot listen on {addr}: {source}"))
}

fn bind_error_saying(py: Python<'_>, addr: &str, source: &std::io::Error, msg: String) -> PyErr {
    make(py, "BindError", (source.raw_os_error(), msg, addr.to_string()))
}

/// A gateway that could not start.
pub(crate) fn gateway_error(py: Python<'_>, origin: &str, e: GatewayError) -> PyErr {
    match &e {
        GatewayError::Bind { addr, source } => bind_error(py, addr, source),
        GatewayError::MetricsBind { addr, source } => bind_error_saying(py, addr, source, e.to_string()),
        GatewayError::NoListenAddress => config_origin_error(py, origin, &e),
        GatewayError::NoRuntime => resi_error(py, e),
    }
}

/// A session that could not be set up.
pub(crate) fn session_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    make(py, "SessionError", (e.to_string(),))
}

/// Any other resi failure.
pub(crate) fn resi_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    make(py, "ResiError", (e.to_string(),))
}

/// An NKN transport failure: ``TimeoutError`` for a timeout, ``ValueError``
/// for a bad address, key or size, ``ResiError`` otherwise.
pub(crate) fn nkn_error(py: Python<'_>, e: crate::nkn::NknError) -> PyErr {
    use crate::nkn::NknError;
    match e {
        NknError::Timeout => PyTimeoutError::new_err("NKN: timed out"),
        NknError::InvalidAddress(..) | NknError::InvalidPublicKey | NknError::MessageTooLarge(_) => {
            PyValueError::new_err(format!("NKN: {e}"))
        }
        e => resi_error(py, format!("NKN: {e}")),
    }
}

/// [`nkn_error`] taking the GIL (for the end of a future).
pub(crate) fn nkn_error_nogil(e: crate::nkn::NknError) -> PyErr {
    Python::attach(|py| nkn_error(py, e))
}

/// A failed call, with its trailers.
pub(crate) fn call_error(py: Python<'_>, e: CallError) -> PyErr {
    let trailers = match metadata_list(py, &e.trailers) {
        Ok(t) => t,
        Err(err) => return err,
    };
    make(py, "CallError", (e.status.code as i32, e.status.message, trailers))
}

/// [`call_error`] taking the GIL (for the end of a future).
pub(crate) fn call_error_nogil(e: CallError) -> PyErr {
    Python::attach(|py| call_error(py, e))
}

/// Metadata as Python `(key, value)` pairs: `bytes` for `-bin` keys, `str`
/// otherwise.
pub(crate) fn metadata_list<'py>(py: Python<'py>, headers: &http::HeaderMap) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (k, v) in headers_to_metadata(headers) {
        if k.ends_with("-bin") {
            list.append((k, PyBytes::new(py, &v)))?;
        } else {
            list.append((k, String::from_utf8_lossy(&v).into_owned()))?;
        }
    }
    Ok(list)
}

/// The status a caller sees when a Python extension handler raised `err`:
/// a `CallError`'s own code and details; `CANCELLED` for a cancelled
/// handler; `UNKNOWN` naming the exception otherwise.
pub(crate) fn status_from_pyerr(py: Python<'_>, err: &PyErr) -> Status {
    let value = err.value(py);
    if let Ok(class) = module(py).and_then(|m| m.getattr("CallError")) {
        if value.is_instance(&class).unwrap_or(false) {
            let code = value.getattr("code").and_then(|c| c.extract::<i32>()).unwrap_or(2);
            let details = value.getattr("details").and_then(|d| d.str().map(|s| s.to_string())).unwrap_or_default();
            return Status::new(Code::from_i32(code), details);
        }
    }
    let name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    if name == "CancelledError" {
        return Status::new(Code::Cancelled, "extension handler was cancelled");
    }
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    Status::new(Code::Unknown, format!("extension handler raised {name}: {text}"))
}
