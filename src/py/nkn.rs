//! `resi.nkn` bindings: NKN identities, an asyncio NKN MultiClient and the
//! embedded local NKN node. Conversion only; the protocol lives in
//! `crate::nkn`. The public Python API is `python/resi/nkn.py`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert::{self, bytes_of, py_bytes};
use super::errors::{nkn_error_nogil, resi_error};
use crate::nkn::node::{LocalNode as CoreNode, MessageFaults, NodeConfig, NodeStats};
use crate::nkn::{ClientConfig, Identity, MultiClient, MultiClientConfig, NknError, Received, SendOptions};

/// A 32-byte seed from 64 hex digits.
fn seed_of(seed: &str) -> PyResult<[u8; 32]> {
    hex::decode(seed.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| PyValueError::new_err("an NKN seed is 64 hex digits (32 bytes)"))
}

fn identity_tuple(id: &Identity) -> (String, String, String) {
    (hex::encode(id.seed()), id.public_key_hex(), id.address(""))
}

/// A new random NKN identity: ``(seed_hex, public_key_hex, address)``.
#[pyfunction]
pub(crate) fn nkn_generate_identity() -> (String, String, String) {
    identity_tuple(&Identity::generate())
}

/// The NKN identity of ``seed`` (64 hex digits): ``(seed_hex,
/// public_key_hex, address)``.
#[pyfunction]
pub(crate) fn nkn_identity_from_seed(seed: &str) -> PyResult<(String, String, String)> {
    Ok(identity_tuple(&Identity::from_seed(seed_of(seed)?)))
}

/// Destination(s): one address or a list of addresses.
fn dests_of(dest: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = dest.extract::<String>() {
        return Ok(vec![s]);
    }
    let v: Vec<String> = dest.extract().map_err(|_| PyValueError::new_err("dest must be an address or a list of addresses"))?;
    if v.is_empty() {
        return Err(PyValueError::new_err("dest: at least one address is needed"));
    }
    Ok(v)
}

fn closed_error() -> PyErr {
    Python::attach(|py| resi_error(py, "NKN client closed"))
}

/// A message received by an ``NknClient``.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct NknMessage(Received);

#[pymethods]
impl NknMessage {
    /// The sender's (base) address.
    #[getter]
    fn src(&self) -> &str {
        &self.0.src
    }

    /// The data (UTF-8 for a text message).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.data)
    }

    /// The 8-byte message ID.
    #[getter]
    fn message_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.message_id)
    }

    /// Whether it was a TEXT message.
    #[getter]
    fn is_text(&self) -> bool {
        self.0.is_text
    }

    /// Whether the sender asked for no reply.
    #[getter]
    fn no_reply(&self) -> bool {
        self.0.no_reply
    }

    /// Whether it arrived encrypted end to end.
    #[getter]
    fn encrypted(&self) -> bool {
        self.0.encrypted
    }

    fn __repr__(&self) -> String {
        format!(
            "NknMessage(src={:?}, message_id={}, {} bytes)",
            self.0.src,
            hex::encode(&self.0.message_id),
            self.0.data.len()
        )
    }
}

/// An NKN MultiClient: ``subclients`` connections with one address.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct NknClient {
    inner: Arc<MultiClient>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Received>>>,
    closed: CancellationToken,
}

#[pymethods]
impl NknClient {
    /// Starts connecting in the background. ``seed``: 64 hex digits, random
    /// when None; ``rpc_servers``: seed RPC URLs (the public NKN seeds when
    /// None).
    #[new]
    #[pyo3(signature = (seed = None, identifier = "", subclients = 4, rpc_servers = None, original_client = false))]
    fn new(
        seed: Option<&str>,
        identifier: &str,
        subclients: usize,
        rpc_servers: Option<Vec<String>>,
        original_client: bool,
    ) -> PyResult<NknClient> {
        if subclients == 0 && !original_client {
            return Err(PyValueError::new_err("subclients must be at least 1 (or original_client True)"));
        }
        let identity = match seed {
            Some(s) => Identity::from_seed(seed_of(s)?),
            None => Identity::generate(),
        };
        let mut client = ClientConfig { identifier: identifier.to_string(), ..ClientConfig::default() };
        if let Some(servers) = rpc_servers {
            if servers.is_empty() {
                return Err(PyValueError::new_err("rpc_servers: at least one server is needed"));
            }
            client.seed_rpc_servers = servers;
        }
        let cfg = MultiClientConfig { client, num_clients: subclients, original_client, ..MultiClientConfig::default() };
        let _rt = super::runtime::get().enter();
        let (inner, rx) = MultiClient::new(identity, cfg);
        Ok(NknClient { inner: Arc::new(inner), rx: Arc::new(tokio::sync::Mutex::new(rx)), closed: CancellationToken::new() })
    }

    /// The base address (``[identifier.]public_key_hex``).
    #[getter]
    fn address(&self) -> &str {
        self.inner.address()
    }

    /// Number of sub-clients connected now.
    #[getter]
    fn ready_count(&self) -> usize {
        self.inner.ready_count()
    }

    /// Waits until ``count`` sub-clients are connected; ``TimeoutError``
    /// after ``timeout`` seconds.
    #[pyo3(signature = (timeout = 10.0, count = 1))]
    fn wait_ready<'py>(&self, py: Python<'py>, timeout: f64, count: usize) -> PyResult<Bound<'py, PyAny>> {
        let d = convert::timeout(Some(timeout))?.unwrap_or_default();
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner.wait_ready_count(count.max(1), d).await.map_err(nkn_error_nogil)
        })
    }

    /// Sends ``data`` to ``dest`` (an address or a list); returns the
    /// message ID.
    #[pyo3(signature = (dest, data, *, no_reply = false, max_holding = 0, encrypt = true))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        dest: &Bound<'py, PyAny>,
        data: &Bound<'py, PyAny>,
        no_reply: bool,
        max_holding: u32,
        encrypt: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (dests, data, inner) = (dests_of(dest)?, bytes_of(data)?, self.inner.clone());
        let opts = SendOptions { encrypt, max_holding, no_reply, ..SendOptions::default() };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let id = inner.send(&dests, data, opts).await.map_err(nkn_error_nogil)?;
            Ok(py_bytes(&id))
        })
    }

    /// Sends ``data`` and waits for the first reply (its data; ``b""`` for
    /// an ACK); ``TimeoutError`` after ``timeout`` seconds.
    #[pyo3(signature = (dest, data, timeout = 5.0, *, max_holding = 0, encrypt = true))]
    fn send_and_wait_reply<'py>(
        &self,
        py: Python<'py>,
        dest: &Bound<'py, PyAny>,
        data: &Bound<'py, PyAny>,
        timeout: f64,
        max_holding: u32,
        encrypt: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (dests, data, inner) = (dests_of(dest)?, bytes_of(data)?, self.inner.clone());
        let d = convert::timeout(Some(timeout))?.unwrap_or_default();
        let opts = SendOptions { encrypt, max_holding, ..SendOptions::default() };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let reply = inner.send_and_wait_reply(&dests, data, opts, d).await.map_err(nkn_error_nogil)?;
            Ok(py_bytes(reply.data.as_deref().unwrap_or_default()))
        })
    }

    /// The next message; ``TimeoutError`` after ``timeout`` seconds (None:
    /// waits forever); ``ResiError`` once closed.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let d = convert::timeout(timeout)?;
        let (rx, closed) = (self.rx.clone(), self.closed.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let next = async {
                let mut rx = rx.lock().await;
                match d {
                    Some(d) => tokio::time::timeout(d, rx.recv()).await.map_err(|_| NknError::Timeout),
                    None => Ok(rx.recv().await),
                }
            };
            tokio::select! {
                r = next => match r {
                    Ok(Some(m)) => Ok(NknMessage(m)),
                    Ok(None) => Err(closed_error()),
                    Err(e) => Err(nkn_error_nogil(e)),
                },
                _ = closed.cancelled() => Err(closed_error()),
            }
        })
    }

    /// Answers ``received`` with ``data`` (None: an ACK). Does nothing if
    /// the sender asked for no reply.
    #[pyo3(signature = (received, data = None))]
    fn reply<'py>(
        &self,
        py: Python<'py>,
        received: &Bound<'py, NknMessage>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = received.get().0.clone();
        let data = data.map(bytes_of).transpose()?;
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner.reply(&to, data).await.map_err(nkn_error_nogil)
        })
    }

    /// Closes every sub-client; pending and later ``recv`` raise.
    fn close(&self) {
        self.closed.cancel();
        self.inner.close();
    }

    fn __repr__(&self) -> String {
        format!("NknClient({}, {} ready)", self.inner.address(), self.inner.ready_count())
    }
}

impl Drop for NknClient {
    fn drop(&mut self) {
        self.closed.cancel();
        self.inner.close();
    }
}

/// The embedded local NKN node (seed RPC and WebSocket relay on loopback).
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct NknLocalNode {
    node: Arc<Mutex<Option<CoreNode>>>,
}

fn stats_dict<'py>(py: Python<'py>, s: &NodeStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in [
        ("rpc_requests", s.rpc_requests),
        ("ws_connections", s.ws_connections),
        ("clients_connected", s.clients_connected),
        ("set_client_ok", s.set_client_ok),
        ("set_client_failed", s.set_client_failed),
        ("outbound_messages", s.outbound_messages),
        ("invalid_messages", s.invalid_messages),
        ("invalid_destinations", s.invalid_destinations),
        ("bad_signatures", s.bad_signatures),
        ("relayed", s.relayed),
        ("dropped_loss", s.dropped_loss),
        ("duplicated", s.duplicated),
        ("reordered", s.reordered),
        ("delayed", s.delayed),
        ("dropped_offline", s.dropped_offline),
        ("dropped_hold_full", s.dropped_hold_full),
        ("dropped_queue_full", s.dropped_queue_full),
        ("held", s.held),
        ("held_now", s.held_now),
        ("held_delivered", s.held_delivered),
        ("held_expired", s.held_expired),
        ("receipts", s.receipts),
        ("bad_receipts", s.bad_receipts),
        ("malformed_frames", s.malformed_frames),
        ("rejected_before_set_client", s.rejected_before_set_client),
    ] {
        d.set_item(k, v)?;
    }
    Ok(d)
}

impl NknLocalNode {
    fn with<T>(&self, f: impl FnOnce(&CoreNode) -> T) -> PyResult<T> {
        let g = self.node.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(f).ok_or_else(|| PyRuntimeError::new_err("the local NKN node is not running"))
    }
}

#[pymethods]
impl NknLocalNode {
    #[new]
    fn new() -> NknLocalNode {
        NknLocalNode { node: Arc::new(Mutex::new(None)) }
    }

    /// Binds both listeners on 127.0.0.1 and starts serving. ``loss``: the
    /// probability of dropping a relayed message (a test knob).
    #[pyo3(signature = (loss = 0.0, loss_seed = None, max_holding_seconds = 3600))]
    fn start<'py>(
        &self,
        py: Python<'py>,
        loss: f64,
        loss_seed: Option<u64>,
        max_holding_seconds: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(PyValueError::new_err(format!("loss must be in [0, 1], got {loss}")));
        }
        if self.node.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Err(PyRuntimeError::new_err("the local NKN node is already running"));
        }
        let node = self.node.clone();
        let cfg = NodeConfig { loss, loss_seed, max_holding_seconds, ..NodeConfig::default() };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let started = CoreNode::start(cfg).await.map_err(PyErr::from)?;
            let mut g = node.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_some() {
                return Err(PyRuntimeError::new_err("the local NKN node is already running"));
            }
            *g = Some(started);
            Ok(())
        })
    }

    /// Whether the node is running.
    #[getter]
    fn running(&self) -> bool {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// ``http://127.0.0.1:PORT``: the seed RPC URL for clients.
    #[getter]
    fn rpc_url(&self) -> PyResult<String> {
        self.with(|n| n.rpc_url())
    }

    /// ``ws://127.0.0.1:PORT``: the WebSocket address handed to clients.
    #[getter]
    fn ws_url(&self) -> PyResult<String> {
        self.with(|n| format!("ws://{}", n.ws_addr()))
    }

    /// The node's public key (hex).
    #[getter]
    fn public_key(&self) -> PyResult<String> {
        self.with(|n| hex::encode(n.pubkey()))
    }

    /// The loss knob now (the share of relayed messages dropped).
    #[getter]
    fn loss(&self) -> PyResult<f64> {
        self.with(|n| n.loss())
    }

    /// Changes the loss knob of the running node: ``1.0`` silences NKN
    /// (an outage), ``0.0`` ends it.
    fn set_loss(&self, loss: f64) -> PyResult<()> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(PyValueError::new_err(format!("loss must be in [0, 1], got {loss}")));
        }
        self.with(|n| n.set_loss(loss))
    }

    /// Changes the message faults of the running node: ``duplicate`` and
    /// ``reorder`` are shares in ``[0, 1]`` of relayed messages delivered
    /// twice or after the next one; every message is delivered ``delay``
    /// seconds late plus a random ``0..jitter``.
    #[pyo3(signature = (duplicate = 0.0, reorder = 0.0, delay = 0.0, jitter = 0.0))]
    fn set_faults(&self, duplicate: f64, reorder: f64, delay: f64, jitter: f64) -> PyResult<()> {
        for (what, p) in [("duplicate", duplicate), ("reorder", reorder)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(PyValueError::new_err(format!("{what} must be in [0, 1], got {p}")));
            }
        }
        let secs = |what: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .map_err(|_| PyValueError::new_err(format!("{what} must be a number of seconds >= 0, got {v}")))
        };
        let faults = MessageFaults { duplicate, reorder, delay: secs("delay", delay)?, jitter: secs("jitter", jitter)? };
        self.with(|n| n.set_faults(faults))
    }

    /// The message faults now: ``{"duplicate", "reorder", "delay", "jitter"}``.
    fn faults<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let f = self.with(|n| n.faults())?;
        let d = PyDict::new(py);
        d.set_item("duplicate", f.duplicate)?;
        d.set_item("reorder", f.reorder)?;
        d.set_item("delay", f.delay.as_secs_f64())?;
        d.set_item("jitter", f.jitter.as_secs_f64())?;
        Ok(d)
    }

    /// A snapshot of the node's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|n| n.stats())?;
        stats_dict(py, &s)
    }

    /// Stops accepting, closes every connection and waits for the node's
    /// tasks. Does nothing if not running.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).take();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            if let Some(n) = node {
                n.shutdown().await;
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        match self.with(|n| n.rpc_url()) {
            Ok(url) => format!("NknLocalNode({url})"),
            Err(_) => "NknLocalNode(stopped)".to_string(),
        }
    }
}
