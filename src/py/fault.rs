//! `FaultRelay`: the library's TCP fault relay, for tests from Python.

use std::net::ToSocketAddrs;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::fault::{Direction, Fault, FaultRelay as Relay};

/// A TCP relay on 127.0.0.1 in front of ``target`` with fault controls: a
/// test aid, to cut, silence or heal one path of a gateway pair.
///
/// ``kill()`` closes every relayed connection and refuses new ones;
/// ``blackhole()`` keeps connections open but relays nothing (as a link
/// that silently drops everything); ``corrupt(share, direction)`` flips a
/// bit in that share of the bytes (as a faulty link); ``tamper(share)``
/// alters that share of the dialler's RESI DATA frames and recomputes
/// their check (as an attacker); ``heal()`` relays again. Stops when
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

    /// ``"pass"``, ``"blackhole"``, ``"killed"``, ``"corrupt"`` or
    /// ``"tamper"``.
    #[getter]
    fn state(&self) -> &'static str {
        match self.relay.fault() {
            Fault::Pass => "pass",
            Fault::Blackhole => "blackhole",
            Fault::Killed => "killed",
            Fault::Corrupt { .. } => "corrupt",
            Fault::Tamper { .. } => "tamper",
        }
    }

    /// Flips one bit in ``share`` (0.0 to 1.0) of the relayed bytes going
    /// ``direction``: ``"forward"`` (towards the target), ``"backward"`` or
    /// ``"both"``; until ``heal()``.
    #[pyo3(signature = (share, direction = "both"))]
    fn corrupt(&self, share: f64, direction: &str) -> PyResult<()> {
        if !(0.0..=1.0).contains(&share) {
            return Err(PyValueError::new_err(format!("share must be between 0.0 and 1.0, got {share}")));
        }
        let direction = match direction {
            "forward" => Direction::Forward,
            "backward" => Direction::Backward,
            "both" => Direction::Both,
            other => {
                let msg = format!("direction must be \"forward\", \"backward\" or \"both\", got {other:?}");
                return Err(PyValueError::new_err(msg));
            }
        };
        self.relay.corrupt(share, direction);
        Ok(())
    }

    /// Alters ``share`` (0.0 to 1.0) of the RESI DATA frames the dialler
    /// sends and recomputes their CRC-32C; until ``heal()``.
    fn tamper(&self, share: f64) -> PyResult<()> {
        if !(0.0..=1.0).contains(&share) {
            return Err(PyValueError::new_err(format!("share must be between 0.0 and 1.0, got {share}")));
        }
        self.relay.tamper(share);
        Ok(())
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
