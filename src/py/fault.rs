//! `FaultRelay`: the library's TCP fault relay, for tests from Python.

use std::net::ToSocketAddrs;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::fault::{Direction, Fault, Flap, FaultRelay as Relay};

/// Seconds (>= 0, finite) as a duration; `what` names the argument.
fn seconds(what: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a number of seconds >= 0, got {secs}")))
}

/// A TCP relay on 127.0.0.1 in front of ``target`` with fault controls: a
/// test aid, to cut, silence or heal one path of a gateway pair.
///
/// ``kill()`` closes every relayed connection and refuses new ones;
/// ``blackhole()`` keeps connections open but relays nothing (as a link
/// that silently drops everything); ``corrupt(share, direction)`` flips a
/// bit in that share of the bytes (as a faulty link); ``tamper(share)``
/// alters that share of the dialler's RESI DATA frames and recomputes
/// their check (as an attacker); ``delay(latency, jitter)`` and
/// ``bandwidth(bytes_per_sec)`` shape the traffic (a long or thin link);
/// ``flap(up, down, for_)`` goes down and up on a schedule by itself;
/// ``heal()`` relays again at full speed. Stops when closed or
/// garbage-collected.
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
        let _rt = super::runtime::get().enter();
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

    /// Delays every relayed chunk by ``latency`` seconds plus a random
    /// ``0..jitter`` (order kept), in both directions; until ``heal()``.
    /// ``delay(0)`` ends the delay.
    #[pyo3(signature = (latency, jitter = 0.0))]
    fn delay(&self, latency: f64, jitter: f64) -> PyResult<()> {
        self.relay.delay(seconds("latency", latency)?, seconds("jitter", jitter)?);
        Ok(())
    }

    /// Relays at most ``bytes_per_sec`` bytes a second in each direction
    /// (None: unlimited); until ``heal()``.
    fn bandwidth(&self, bytes_per_sec: Option<u64>) -> PyResult<()> {
        if bytes_per_sec == Some(0) {
            return Err(PyValueError::new_err("bytes_per_sec must be positive (use blackhole() to stop traffic)"));
        }
        self.relay.bandwidth(bytes_per_sec);
        Ok(())
    }

    /// Flaps by itself: relays for ``up`` seconds, goes down for ``down``
    /// seconds (``how``: ``"blackhole"`` or ``"kill"``), again and again for
    /// ``for_`` seconds, then relays. Returns at once; another fault or
    /// ``heal()`` ends it early.
    #[pyo3(signature = (up, down, for_, how = "blackhole"))]
    fn flap(&self, up: f64, down: f64, for_: f64, how: &str) -> PyResult<()> {
        let how = match how {
            "blackhole" => Flap::Blackhole,
            "kill" => Flap::Kill,
            other => return Err(PyValueError::new_err(format!("how must be \"blackhole\" or \"kill\", got {other:?}"))),
        };
        let (up, down, total) = (seconds("up", up)?, seconds("down", down)?, seconds("for_", for_)?);
        if up.is_zero() || down.is_zero() {
            return Err(PyValueError::new_err("up and down must be more than 0 seconds"));
        }
        let _rt = super::runtime::get().enter();
        self.relay.flap(up, down, total, how);
        Ok(())
    }

    /// Whether a ``flap`` schedule is running.
    #[getter]
    fn flapping(&self) -> bool {
        self.relay.is_flapping()
    }

    /// The delay now: ``(latency, jitter)`` in seconds.
    #[getter]
    fn latency(&self) -> (f64, f64) {
        let s = self.relay.shape();
        (s.latency.as_secs_f64(), s.jitter.as_secs_f64())
    }

    /// The bandwidth limit now in bytes a second (None: unlimited).
    #[getter]
    fn rate(&self) -> Option<u64> {
        self.relay.shape().rate
    }

    /// Cuts every connection and refuses new ones until ``heal()``.
    fn kill(&self) {
        self.relay.kill()
    }

    /// Stops relaying in both directions; connections stay open.
    fn blackhole(&self) {
        self.relay.blackhole()
    }

    /// Relays again at full speed (clears the fault, delay, bandwidth
    /// limit and flap schedule).
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
