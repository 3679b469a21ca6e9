//! The worker threads of the module's tokio runtime.
//!
//! Why not tokio's default (one worker per CPU): the asyncio thread needs
//! a core of its own, and the runtime's work for a client is one HTTP/2
//! connection whose streams share a lock. With two workers on two CPUs,
//! a Python client at 64 calls in flight made 38,700 calls/s; with one,
//! 46,500 (docs/performance.md): the workers woke each other and fought
//! over the connection instead of working. So the default is the rule of
//! `[Resi] Threads`, half the CPUs and at least one, and `RESI_THREADS`
//! sets it (read once, when `resi` is first imported).
//!
//! The bindings reach the runtime through [`get`], which also hands the
//! process's `tracing` events to the log bridge the first time (see
//! `logging::bridge_tracing` for why then and not at import).

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::PyResult;
use tokio::runtime::Runtime;

use crate::config::MAX_THREADS;

/// The environment variable that sets the number of worker threads.
const VARIABLE: &str = "RESI_THREADS";

/// Sets up the runtime's builder (before its first use); a bad
/// `RESI_THREADS` is refused with a `ValueError` naming it.
pub(crate) fn configure() -> PyResult<()> {
    let threads = match std::env::var(VARIABLE) {
        Ok(value) => parse(&value).map_err(PyValueError::new_err)?,
        Err(_) => crate::config::default_threads(),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().worker_threads(threads).thread_name_fn(thread_namer(threads));
    pyo3_async_runtimes::tokio::init(builder);
    Ok(())
}

/// Names the runtime's threads: `resi-worker` for the workers,
/// `resi-blocking` for the threads of blocking work (name lookups). tokio
/// starts both from one pool and names them with one function, but it
/// starts every worker when the runtime is built, before any other.
fn thread_namer(workers: usize) -> impl Fn() -> String + Send + Sync + 'static {
    let started = AtomicUsize::new(0);
    move || match started.fetch_add(1, Ordering::Relaxed) < workers {
        true => "resi-worker".to_string(),
        false => "resi-blocking".to_string(),
    }
}

fn parse(value: &str) -> Result<usize, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n as usize),
        _ => Err(format!("{VARIABLE}: {value:?} is not a number of threads (allowed: 1 to {MAX_THREADS})")),
    }
}

/// The module's runtime, for bindings that start work on it.
pub(crate) fn get() -> &'static Runtime {
    super::logging::bridge_tracing();
    pyo3_async_runtimes::tokio::get_runtime()
}
