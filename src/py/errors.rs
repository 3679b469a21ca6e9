//! The exceptions of the Python API, in one place.
//!
//! The classes are written in Python (below) so that `CallError` has a real
//! constructor and attributes — a handler raises `CallError(code, details)`
//! to answer with that status — and are created once, at import, inside
//! `resi._resi`. The Rust side only converts: [`config_error`],
//! [`call_error`], [`session_error`], [`resi_error`], and back from a Python
//! exception to a gRPC status with [`status_from_pyerr`].
//!
//! ```text
//! ResiError
//! ├── ConfigError     a configuration was rejected (names origin, key, problem)
//! ├── CallError       a call failed: .code (StatusCode), .details, .trailers
//! └── SessionError    a redundant session could not be set up
//! ```

use std::ffi::CStr;

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyModule};

use crate::client::CallError;
use crate::grpc::{headers_to_metadata, Code, Status};

const SOURCE: &CStr = cr#"
import enum


class StatusCode(enum.IntEnum):
    """gRPC status codes (the numbers are fixed by the gRPC specification)."""

    __module__ = "resi"
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ResiError(Exception):
    """Base class of every error resi raises."""

    __module__ = "resi"


class ConfigError(ResiError):
    """A configuration was rejected. The message names where it came from
    (file name, ``<dict>``, ``<keyword arguments>``), the key as
    ``[Section] Key`` and the problem, exactly as for a file."""

    __module__ = "resi"


class SessionError(ResiError):
    """A redundant session could not be set up (no path could join), or
    the gateway or client it belongs to is not running."""

    __module__ = "resi"


class CallError(ResiError):
    """A call failed with a gRPC status.

    ``code`` is a :class:`StatusCode`, ``details`` the status message and
    ``trailers`` the trailing metadata as ``(key, value)`` pairs (``bytes``
    values for ``-bin`` keys, ``str`` otherwise). Raise it in an extension
    handler to answer the caller with that status.
    """

    __module__ = "resi"

    def __init__(self, code, details="", trailers=()):
        code = StatusCode(code)
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailers = list(trailers)

    def __str__(self):
        return f"{self.code.name}: {self.details}"

    def __repr__(self):
        return f"CallError({self.code!r}, {self.details!r})"
"#;

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The module holding the classes, created on first use.
fn module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    let m = MODULE.get_or_try_init(py, || {
        PyModule::from_code(py, SOURCE, c"<resi errors>", c"resi._errors").map(Bound::unbind)
    })?;
    Ok(m.bind(py))
}

/// Adds the exception classes and `StatusCode` to `m`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let src = module(m.py())?;
    for name in ["StatusCode", "ResiError", "ConfigError", "SessionError", "CallError"] {
        m.add(name, src.getattr(name)?)?;
    }
    Ok(())
}

fn make<'py>(py: Python<'py>, class: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match module(py).and_then(|m| m.getattr(class)).and_then(|c| c.call1(args)) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// A rejected configuration.
pub(crate) fn config_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    make(py, "ConfigError", (e.to_string(),))
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
