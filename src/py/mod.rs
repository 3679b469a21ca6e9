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
//! - `client`: `Client` and `Call`.
//! - `extension`: extension handlers written in Python.
//! - `stats`: `SessionStats`, `PathStats`, `Event`, `EventStream`.
//! - `fault`: `FaultRelay`.
//! - `nkn`: `NknClient`, `NknMessage`, `NknLocalNode` and identities
//!   (`resi.nkn`).

mod client;
mod convert;
mod errors;
mod extension;
mod fault;
mod gateway;
mod nkn;
mod stats;

use std::sync::OnceLock;

use pyo3::prelude::*;

/// Clears pyo3-log's cache of Python loggers and levels.
static LOG_RESET: OnceLock<pyo3_log::ResetHandle> = OnceLock::new();

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
    if let Some(h) = LOG_RESET.get() {
        h.reset();
    }
}

/// Routes the `log` records (and `tracing` events, through its `log`
/// feature) of the Rust core to Python's `logging`: target `resi::gateway`
/// becomes logger `resi.gateway`. Other crates only from warnings up.
fn init_logging(py: Python<'_>) {
    let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels).map(|l| {
        l.filter(log::LevelFilter::Warn).filter_target("resi".to_string(), log::LevelFilter::Trace)
    });
    if let Ok(Ok(handle)) = logger.map(|l| l.install()) {
        let _ = LOG_RESET.set(handle);
    }
}

#[pymodule]
fn _resi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging(m.py());
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::Call>()?;
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
