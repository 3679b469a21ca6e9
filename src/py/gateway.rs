//! `Gateway`: a resi gateway in this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::config_from_dict;
use super::errors::{config_error, gateway_error, resi_error, session_error};
use super::extension::PyHandler;
use super::stats::{dialled_stats_of, stats_of, EventStream, SessionStats};
use crate::config::Config;
use crate::extension::ExtensionHandler;
use crate::gateway::{Gateway as CoreGateway, UpstreamKind};

type Handlers = HashMap<u32, Arc<dyn ExtensionHandler>>;

/// A gateway built from a validated configuration; ``start()`` binds its
/// listeners, ``stop()`` shuts it down gracefully.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct Gateway {
    config: Config,
    origin: String,
    running: Arc<Mutex<Option<CoreGateway>>>,
    /// Handlers registered before start (applied at start) and since.
    handlers: Mutex<Handlers>,
}

impl Gateway {
    fn running(&self) -> std::sync::MutexGuard<'_, Option<CoreGateway>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl Gateway {
    /// Validates ``config`` (nested dicts, as the TOML file's tables);
    /// ``origin`` names it in error messages.
    #[new]
    #[pyo3(signature = (config, origin = "<dict>"))]
    fn new(config: &Bound<'_, PyDict>, origin: &str) -> PyResult<Gateway> {
        let config = config_from_dict(config, origin)?;
        Ok(Gateway { config, origin: origin.to_string(), running: Arc::default(), handlers: Mutex::default() })
    }

    /// Reads and validates a TOML configuration file.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Gateway> {
        let config = Config::from_file(&path).map_err(|e| config_error(py, &e))?;
        Ok(Gateway { config, origin: path.display().to_string(), running: Arc::default(), handlers: Mutex::default() })
    }

    /// Binds every listen address and starts serving (returns at once; the
    /// upstream is found in the background).
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let mut running = self.running();
        if running.is_some() {
            return Err(resi_error(py, "the gateway is already running"));
        }
        let _rt = super::runtime::get().enter();
        let gw = CoreGateway::start(self.config.clone()).map_err(|e| gateway_error(py, &self.origin, e))?;
        for (id, h) in self.handlers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            gw.extensions().register(*id, h.clone());
        }
        *running = Some(gw);
        Ok(())
    }

    /// Stops accepting, lets in-flight calls finish within the configured
    /// grace, closes every session; when it returns nothing of the gateway
    /// runs any more. Stopping a stopped gateway does nothing.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let gw = self.running().take();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            if let Some(gw) = gw {
                gw.shutdown().await;
            }
            Ok(())
        })
    }

    /// Whether the gateway is running.
    #[getter(running)]
    fn is_running(&self) -> bool {
        self.running().is_some()
    }

    /// The bound listen addresses (``"ip:port"``, real ports when the
    /// configuration said 0); empty when not running.
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.running().as_ref().map(|g| g.local_addrs().iter().map(|a| a.to_string()).collect()).unwrap_or_default()
    }

    /// The bound ``[Reverse] Listen`` addresses (``"ip:port"``); empty when
    /// not running or none is configured.
    #[getter]
    fn reverse_addresses(&self) -> Vec<String> {
        self.running().as_ref().map(|g| g.reverse_addrs().iter().map(|a| a.to_string()).collect()).unwrap_or_default()
    }

    /// Live reverse channels client gateways opened to this gateway.
    #[getter]
    fn reverse_channels(&self) -> usize {
        self.running().as_ref().map_or(0, |g| g.reverse_channels())
    }

    /// ``"plain"`` (an ESI server), ``"resi"`` (a gateway, over a redundant
    /// session) or None while not connected.
    #[getter]
    fn upstream_kind(&self) -> Option<&'static str> {
        self.running().as_ref().and_then(|g| g.upstream_kind()).map(|k| match k {
            UpstreamKind::Plain { .. } => "plain",
            UpstreamKind::Resi { .. } => "resi",
        })
    }

    /// Where ``/metrics`` is served (``"ip:port"``); None when not running
    /// or without ``[Metrics]``.
    #[getter]
    fn metrics_address(&self) -> Option<String> {
        self.running().as_ref().and_then(|g| g.metrics_addr()).map(|a| a.to_string())
    }

    /// ``[Resi] Name``; while running, a name that defaulted to a first
    /// listen address with port 0 is the address bound.
    #[getter]
    fn name(&self) -> String {
        self.running().as_ref().map_or_else(|| self.config.resi.name.clone(), |g| g.name().to_string())
    }

    /// Answers ``Modify`` for ``ext_id`` with ``handler(data) -> bytes``
    /// (``async def`` runs on the calling thread's running event loop).
    fn register(&self, py: Python<'_>, ext_id: u32, handler: Py<PyAny>) -> PyResult<()> {
        let h = PyHandler::handler(py, handler)?;
        self.handlers.lock().unwrap_or_else(|e| e.into_inner()).insert(ext_id, h.clone());
        if let Some(gw) = self.running().as_ref() {
            gw.extensions().register(ext_id, h);
        }
        Ok(())
    }

    /// Removes the handler for ``ext_id``; returns whether there was one.
    fn unregister(&self, ext_id: u32) -> bool {
        let had = self.handlers.lock().unwrap_or_else(|e| e.into_inner()).remove(&ext_id).is_some();
        if let Some(gw) = self.running().as_ref() {
            gw.extensions().unregister(ext_id);
        }
        had
    }

    /// Statistics of the session this gateway dialled to a resi upstream
    /// (None when the upstream is plain or not connected).
    fn upstream_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let running = self.running();
        let handle = running.as_ref().and_then(|g| g.upstream_session());
        let book = running.as_ref().and_then(|g| g.upstream_path_book());
        drop(running);
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(dialled_stats_of(handle, book).await) })
    }

    /// Statistics of the sessions client gateways opened to this one.
    fn session_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(handles) = self.running().as_ref().map(|g| g.sessions().sessions()) else {
            return Err(session_error(py, "the gateway is not running"));
        };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut out: Vec<SessionStats> = Vec::new();
            for h in handles {
                out.extend(stats_of(Some(h)).await);
            }
            Ok(out)
        })
    }

    /// Events of the upstream session and of every accepted session; the
    /// stream ends once the gateway stopped.
    fn events(&self) -> EventStream {
        let running = self.running.clone();
        // A stream made before `start()` waits for it; it ends at `stop()`.
        let started = AtomicBool::new(false);
        EventStream::new(Arc::new(move || {
            let guard = running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(gw) = guard.as_ref() else {
                return (!started.load(Ordering::Relaxed)).then(Vec::new);
            };
            started.store(true, Ordering::Relaxed);
            let mut all = gw.sessions().sessions();
            all.extend(gw.upstream_session());
            Some(all)
        }))
    }

    fn __repr__(&self) -> String {
        let addrs = self.addresses();
        let state = if addrs.is_empty() { "stopped".to_string() } else { addrs.join(", ") };
        format!("Gateway(name={:?}, {state})", self.config.resi.name)
    }
}
