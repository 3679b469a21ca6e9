//! The Python extension module `resi._resi` (feature `python`).
//!
//! Bindings only: every type here converts Python values to the core's and
//! back, and every future runs on the module's one tokio runtime
//! (`pyo3_async_runtimes::tokio`) with the GIL released while it waits on
//! the network. No protocol logic lives here. The public Python API is
//! `python/resi/__init__.py`; `_resi.pyi` types this module.
//!
//! - `errors`: conversions to the exceptions of `python/resi/errors.py`.
//! - `convert`: configuration dicts, metadata, timeouts, bytes.
//! - `gateway`: `Gateway`.
//! - `client`: `Client`, `Call` and `UnaryReply`.
//! - `complete`: futures' results handed to the asyncio loop in batches.
//! - `extension`: extension handlers written in Python.
//! - `stats`: `SessionStats`, `PathStats`, `Event`, `EventStream`.
//! - `fault`: `FaultRelay`.
//! - `logging`: Rust log records into Python's `logging`, queued to one
//!   thread so no Rust thread ever waits for the GIL to log.
//! - `nkn`: `NknClient`, `NknMessage`, `NknLocalNode` and identities
//!   (`resi.nkn`).
//! - `runtime`: the runtime's worker threads (`RESI_THREADS`).

mod client;
mod complete;
mod convert;
mod errors;
mod extension;
mod fault;
mod gateway;
mod logging;
mod nkn;
mod runtime;
mod stats;

use pyo3::prelude::*;

/// Runs the `resi` command with `args` (without the program name) and
/// returns its exit code. The GIL is released while it runs.
///
/// `resi gateway` installs process-wide SIGINT/SIGTERM handlers (it stops
/// on either); call it from a dedicated process, not from a notebook.
#[pyfunction]
fn run_cli(py: Python<'_>, args: Vec<String>) -> i32 {
    py.detach(move || crate::cli::run(args))
}

/// Makes Rust log records follow changes of Python logging levels made
/// after they were first used (levels are cached for speed).
#[pyfunction]
fn reset_log_cache() {
    logging::reset_cache();
}

/// Waits until every Rust log record so far has reached Python's
/// `logging` (they are handed over by a background thread); false if that
/// took more than 5 s.
#[pyfunction]
fn flush_logs(py: Python<'_>) -> bool {
    logging::flush(py)
}

#[pymodule]
fn _resi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::configure()?;
    logging::install(m.py());
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    m.add_function(wrap_pyfunction!(flush_logs, m)?)?;
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::Call>()?;
    m.add_class::<client::UnaryReply>()?;
    m.add_class::<complete::Abort>()?;
    m.add_class::<stats::SessionStats>()?;
    m.add_class::<stats::PathStats>()?;
    m.add_class::<stats::Event>()?;
    m.add_class::<stats::EventStream>()?;
    m.add_class::<fault::FaultRelay>()?;
    m.add_function(wrap_pyfunction!(nkn::nkn_generate_identity, m)?)?;
    m.add_function(wrap_pyfunction!(nkn::nkn_identity_from_seed, m)?)?;
    m.add_class::<nkn::NknClient>()?;
    m.add_class::<nkn::NknMessage>()?;
    m.add_class::<nkn::NknLocalNode>()?;
    Ok(())
}
