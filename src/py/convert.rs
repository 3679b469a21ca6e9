//! Python values to core types: configuration tables, metadata, timeouts.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyMemoryView, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::errors::{config_error, config_key_error, config_origin_error};
use crate::config::Config;

/// Validates a configuration given as nested dicts (`{"Tcp": {...},
/// "Resi": {...}}`), exactly as a file's table; `origin` names it in
/// messages.
pub(crate) fn config_from_dict(dict: &Bound<'_, PyDict>, origin: &str) -> PyResult<Config> {
    let py = dict.py();
    let table = match to_toml(dict.as_any(), "", origin)? {
        toml::Value::Table(t) => t,
        _ => unreachable!("a dict converts to a table"),
    };
    Config::from_table(table, origin).map_err(|e| config_error(py, &e))
}

/// The upstream TLS settings of a `[Tls]` table (`UpstreamCa`, `Cert`,
/// `Key`, `ServerName`), validated as in a file; errors name `[Tls] Key`.
pub(crate) fn upstream_tls(tls: &Bound<'_, PyDict>, origin: &str) -> PyResult<Option<crate::tls::UpstreamTls>> {
    let py = tls.py();
    let table = match to_toml(tls.as_any(), "[Tls]", origin)? {
        toml::Value::Table(t) => t,
        _ => unreachable!("a dict converts to a table"),
    };
    if table.is_empty() {
        return Ok(None);
    }
    let settings = Config::tls_from_table(table, origin).map_err(|e| config_error(py, &e))?;
    require_upstream(py, Some(&settings), origin).map(Some)
}

/// The upstream TLS of a client's `[Tls]`: a client given TLS settings
/// without `UpstreamCa` would silently talk in the clear, so that is an error.
pub(crate) fn require_upstream(
    py: Python<'_>,
    tls: Option<&crate::tls::TlsSettings>,
    origin: &str,
) -> PyResult<crate::tls::UpstreamTls> {
    tls.and_then(|t| t.upstream.clone()).ok_or_else(|| {
        config_key_error(py, origin, "[Tls] UpstreamCa", "missing: a TLS client needs the CA to verify the server against")
    })
}

/// One Python value as TOML. `None` entries of a dict are left out (the
/// key takes its default); a `timedelta` becomes seconds.
fn to_toml(v: &Bound<'_, PyAny>, key: &str, origin: &str) -> PyResult<toml::Value> {
    let py = v.py();
    let bad = |what: String| match key {
        "" => config_origin_error(py, origin, what),
        key => config_key_error(py, origin, key, what),
    };
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().map(toml::Value::Integer).map_err(|_| bad("integer out of range".into()));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(v.extract()?));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (k, val) in d.iter() {
            let k: String = k.extract().map_err(|_| bad("keys must be strings".into()))?;
            if val.is_none() {
                continue;
            }
            let sub = if key.is_empty() { format!("[{k}]") } else { format!("{key} {k}") };
            table.insert(k, to_toml(&val, &sub, origin)?);
        }
        return Ok(toml::Value::Table(table));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items = v.try_iter()?.enumerate().map(|(i, item)| to_toml(&item?, &format!("{key}[{i}]"), origin));
        return items.collect::<PyResult<Vec<_>>>().map(toml::Value::Array);
    }
    if let Ok(secs) = v.call_method0("total_seconds").and_then(|s| s.extract::<f64>()) {
        return Ok(toml::Value::Float(secs));
    }
    if let Ok(path) = py.import("os").and_then(|os| os.call_method1("fspath", (v,))) {
        return Ok(toml::Value::String(path.extract()?));
    }
    let ty = v.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(bad(format!("unsupported value of type {ty}")))
}

/// Request metadata from `(key, value)` pairs, values `str` or `bytes`.
pub(crate) fn metadata(pairs: Option<Vec<(String, Bound<'_, PyAny>)>>) -> PyResult<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (k, v) in pairs.unwrap_or_default() {
        let value = if v.is_instance_of::<PyString>() {
            v.extract::<String>()?.into_bytes()
        } else if let Ok(b) = v.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else {
            v.extract::<Vec<u8>>()
                .map_err(|_| PyValueError::new_err(format!("metadata {k:?}: value must be str or bytes")))?
        };
        out.push((k, value));
    }
    Ok(out)
}

/// A timeout in seconds.
pub(crate) fn timeout(secs: Option<f64>) -> PyResult<Option<Duration>> {
    secs.map(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err(format!("timeout must be >= 0 seconds, got {s}")))
    })
    .transpose()
}

/// Messages from this size on are lent to Rust rather than copied (below
/// it, a copy costs less than handing the object back to Python's
/// reference counting later).
const LEND_FROM: usize = 4096;

/// A Python `bytes` object read by Rust in place: `bytes` are immutable,
/// and the reference keeps the buffer alive (dropped without the GIL, it
/// goes to PyO3's pool of deferred reference decrements).
struct Lent {
    _owner: Py<PyBytes>,
    data: *const u8,
    len: usize,
}

// SAFETY: the buffer of a `bytes` object never changes and lives as long
// as the object, which `_owner` keeps alive; reading it needs no GIL.
unsafe impl Send for Lent {}
unsafe impl Sync for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `Lent`; `data` and `len` come from the object's buffer.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// Bytes-like Python value (bytes, bytearray, memoryview) to `Bytes`; a
/// large `bytes` is lent, not copied.
pub(crate) fn bytes_of(v: &Bound<'_, PyAny>) -> PyResult<bytes::Bytes> {
    if let Ok(b) = v.cast::<PyBytes>() {
        let data = b.as_bytes();
        if data.len() < LEND_FROM {
            return Ok(bytes::Bytes::copy_from_slice(data));
        }
        let (ptr, len) = (data.as_ptr(), data.len());
        return Ok(bytes::Bytes::from_owner(Lent { _owner: b.clone().unbind(), data: ptr, len }));
    }
    if !(v.is_instance_of::<PyByteArray>() || v.is_instance_of::<PyMemoryView>()) {
        let ty = v.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(PyTypeError::new_err(format!("expected bytes, bytearray or memoryview, got {ty}")));
    }
    // A mutable buffer could change under Rust: copied once, into a `bytes`.
    let b = v.py().import("builtins")?.getattr("bytes")?.call1((v,))?;
    bytes_of(&b)
}

/// `Bytes` to a Python `bytes` object (taking the GIL).
pub(crate) fn py_bytes(data: &[u8]) -> Py<PyBytes> {
    Python::attach(|py| PyBytes::new(py, data).unbind())
}
