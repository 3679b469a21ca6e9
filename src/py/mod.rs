//! The Python extension module `resi._resi` (feature `python`).
//!
//! Thin for now: the `resi` console command runs through [`run_cli`]. The
//! asyncio API (gateways, calls, extension handlers, statistics) comes later.

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

#[pymodule]
fn _resi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    Ok(())
}
