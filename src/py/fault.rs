//! `FaultRelay`: the library's TCP fault relay, for tests from Python.

use std::net::ToSocketAddrs;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::fault::{Fault, FaultRelay as Relay};

/// A TCP relay on 127.0.0.1 in front of ``target`` with fault controls: a
/// test aid, to cut, silence or heal one path of a gateway pair.
///
/// ``kill()`` closes every relayed connection and refuses new ones;
/// ``blackhole()`` keeps connections open but relays nothing (as a link
/// that silently drops everything); ``heal()`` relays again. Stops when
/// closed or garbage-collected.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct FaultRelay {
    relay: Relay,
}

#[pymethods]
impl FaultRelay {
    #[new]
    fn new(target: &str) -> PyResult<FaultRelay> {
        let addr = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| PyValueError::new_err(format!("not a reachable host:port: {target:?}")))?;
        let _rt = pyo3_async_runtimes::tokio::get_runtime().enter();
        let relay = Relay::bind(addr)?;
        Ok(FaultRelay { relay })
    }

    /// Where clients connect (``"127.0.0.1:PORT"``).
    #[getter]
    fn address(&self) -> String {
        self.relay.addr().to_string()
    }

    /// Where traffic goes.
    #[getter]
    fn target(&self) -> String {
        self.relay.target().to_string()
    }

    /// ``"pass"``, ``"blackhole"`` or ``"killed"``.
    #[getter]
    fn state(&self) -> &'static str {
        match self.relay.fault() {
            Fault::Pass => "pass",
            Fault::Blackhole => "blackhole",
            Fault::Killed => "killed",
        }
    }

    /// Cuts every connection and refuses new ones until ``heal()``.
    fn kill(&self) {
        self.relay.kill()
    }

    /// Stops relaying in both directions; connections stay open.
    fn blackhole(&self) {
        self.relay.blackhole()
    }

    /// Relays again.
    fn heal(&self) {
        self.relay.heal()
    }

    /// Stops listening and cuts every connection.
    fn close(&self) {
        self.relay.close()
    }

    fn __repr__(&self) -> String {
        format!("FaultRelay({} -> {}, {})", self.address(), self.target(), self.state())
    }
}
