//! `Client` and `Call`: ESI calls from asyncio.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::convert::{self, bytes_of, py_bytes};
use super::complete::{self, Abort, Outcome};
use super::errors::{call_error, call_error_nogil, metadata_list, session_error};
use super::extension::PyHandler;
use super::stats::{dialled_stats_of, EventStream};
use crate::client::{Call as CoreCall, CallBody, CallError, CallOptions, Client as CoreClient, UnaryReply as CoreUnaryReply};
use crate::gateway::UpstreamKind;
use crate::grpc::Code;
use crate::session::DiallerId;

/// Request messages a streaming call may have queued before ``send``
/// waits.
const SEND_QUEUE: usize = 16;

/// An ESI client in this process: plain gRPC to one server, or a redundant
/// session to an end gateway (this process is then the client gateway).
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct Client {
    inner: Arc<CoreClient>,
}

fn options(metadata: Option<Vec<(String, Bound<'_, PyAny>)>>, timeout: Option<f64>) -> PyResult<CallOptions> {
    Ok(CallOptions { metadata: convert::metadata(metadata)?, timeout: convert::timeout(timeout)? })
}

#[pymethods]
impl Client {
    /// A client of ``target`` (``"host:port"``) over plain gRPC (h2c), or
    /// over TLS when ``tls`` (a ``[Tls]`` table: ``UpstreamCa``, ``Cert``,
    /// ``Key``, ``ServerName``) is given; ``origin`` names it in errors.
    #[staticmethod]
    #[pyo3(signature = (target, connect_timeout = 5.0, tls = None, origin = "<keyword arguments>"))]
    fn plain(target: String, connect_timeout: f64, tls: Option<&Bound<'_, PyDict>>, origin: &str) -> PyResult<Client> {
        let timeout = convert::timeout(Some(connect_timeout))?.unwrap_or_default();
        let tls = match tls {
            Some(t) => convert::upstream_tls(t, origin)?,
            None => None,
        };
        let _rt = super::runtime::get().enter();
        Ok(Client { inner: Arc::new(CoreClient::plain(target, timeout, tls)) })
    }

    /// A redundant session to the end gateway reachable at every address of
    /// ``[Tcp] Address`` of ``config`` (nested dicts, validated like a
    /// file; ``[Resi]`` gives the mode and timers; ``[Reverse] Address``,
    /// the local ESI server that serves calls coming back). With
    /// ``named``, its Opens name it ``[Resi] Name`` with an instance of its
    /// own, so that the end gateway frees the sessions an earlier client
    /// of that name left behind (docs/protocol.md §3.1).
    #[staticmethod]
    #[pyo3(signature = (config, origin = "<dict>", named = false))]
    fn redundant(config: &Bound<'_, PyDict>, origin: &str, named: bool) -> PyResult<Client> {
        let py = config.py();
        let cfg = convert::config_from_dict(config, origin)?;
        let paths = cfg.upstream_tcp().to_vec();
        if paths.is_empty() {
            return Err(super::errors::config_key_error(py, origin, "[Tcp] Address", "at least one path is needed"));
        }
        let _rt = super::runtime::get().enter();
        let reverse = cfg.reverse.as_ref().map(|r| r.address.clone()).unwrap_or_default();
        let tls = match &cfg.tls {
            Some(t) => Some(convert::require_upstream(py, Some(t), origin)?),
            None => None,
        };
        let mut session = cfg.session_config();
        if named {
            session.dialler = DiallerId::new(cfg.resi.name.clone());
        }
        let inner = CoreClient::redundant_with_reverse(paths, session, cfg.resi.connect_timeout, tls, reverse);
        Ok(Client { inner: Arc::new(inner) })
    }

    /// Waits until connected (for a redundant client: a session with at
    /// least one path); raises ``SessionError`` if the attempt failed.
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner.ready().await.map_err(|st| Python::attach(|py| session_error(py, st.message)))
        })
    }

    /// ``"plain"``, ``"resi"`` or None while not connected.
    #[getter]
    fn upstream_kind(&self) -> Option<&'static str> {
        self.inner.upstream_kind().map(|k| match k {
            UpstreamKind::Plain { .. } => "plain",
            UpstreamKind::Resi { .. } => "resi",
        })
    }

    /// A unary call: ``request`` bytes in; returns ``(future, abort)``, the
    /// future resolving to the response bytes, or with ``with_metadata``
    /// to a ``UnaryReply`` (the bytes and the response's metadata). Abort
    /// the call if the wait for the future is cancelled.
    #[pyo3(signature = (path, request, metadata = None, timeout = None, with_metadata = false))]
    fn unary<'py>(
        &self,
        py: Python<'py>,
        path: String,
        request: &Bound<'py, PyAny>,
        metadata: Option<Vec<(String, Bound<'py, PyAny>)>>,
        timeout: Option<f64>,
        with_metadata: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Abort)> {
        let (inner, msg, opts) = (self.inner.clone(), bytes_of(request)?, options(metadata, timeout)?);
        complete::start(py, async move {
            match inner.unary_reply(&path, msg, &opts).await {
                Ok(reply) if with_metadata => Box::new(move |py: Python<'_>| UnaryReply::of(py, reply)),
                Ok(reply) => bytes_outcome(Ok(reply.message)),
                Err(e) => error_outcome(e),
            }
        })
    }

    /// ``Modify`` with extension ``ext_id``; returns the answer's data.
    #[pyo3(signature = (ext_id, data, pass_ = false, metadata = None, timeout = None))]
    fn modify<'py>(
        &self,
        py: Python<'py>,
        ext_id: u32,
        data: &Bound<'py, PyAny>,
        pass_: bool,
        metadata: Option<Vec<(String, Bound<'py, PyAny>)>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (inner, data, opts) = (self.inner.clone(), bytes_of(data)?, options(metadata, timeout)?);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let reply = inner.modify(ext_id, pass_, data, &opts).await.map_err(call_error_nogil)?;
            Ok(py_bytes(&reply))
        })
    }

    /// Starts a call of any shape. With ``request`` the call sends that one
    /// message; without, messages go with ``Call.send`` until
    /// ``Call.close_send``.
    #[pyo3(signature = (path, request = None, metadata = None, timeout = None))]
    fn start_call<'py>(
        &self,
        path: String,
        request: Option<&Bound<'py, PyAny>>,
        metadata: Option<Vec<(String, Bound<'py, PyAny>)>>,
        timeout: Option<f64>,
    ) -> PyResult<Call> {
        let opts = options(metadata, timeout)?;
        let (tx, body) = match request {
            Some(r) => (None, CallBody::Unary(bytes_of(r)?)),
            None => {
                let (tx, body) = CallBody::channel(SEND_QUEUE);
                (Some(tx), body)
            }
        };
        let inner = self.inner.clone();
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let _rt = super::runtime::get().enter();
        let start = tokio::spawn(async move {
            tokio::select! {
                r = inner.call(&path, body, &opts) => r,
                _ = token.cancelled() => Err(CallError::new(Code::Cancelled, "call cancelled")),
            }
        });
        Ok(Call {
            sender: std::sync::Mutex::new(tx),
            state: Arc::new(Mutex::new(State::Starting(start))),
            cancel,
        })
    }

    /// Answers ``Modify`` for ``ext_id`` in this process (see ``Gateway.register``).
    fn register(&self, py: Python<'_>, ext_id: u32, handler: Py<PyAny>) -> PyResult<()> {
        self.inner.extensions().register(ext_id, PyHandler::handler(py, handler)?);
        Ok(())
    }

    /// Removes the handler for ``ext_id``; returns whether there was one.
    fn unregister(&self, ext_id: u32) -> bool {
        self.inner.extensions().unregister(ext_id).is_some()
    }

    /// Statistics of the redundant session (None for a plain client or
    /// while not connected).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (handle, book) = (self.inner.session(), self.inner.path_book());
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(dialled_stats_of(handle, book).await) })
    }

    /// Events of the redundant session (across reconnections).
    fn events(&self) -> EventStream {
        let inner = Arc::downgrade(&self.inner);
        EventStream::new(Arc::new(move || {
            let client = inner.upgrade().filter(|c| !c.is_closed())?;
            Some(client.session().into_iter().collect())
        }))
    }

    /// Closes the connection (or session); in-flight calls fail with
    /// ``UNAVAILABLE``.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner.close().await;
            Ok(())
        })
    }
}

/// Response bytes, or the call's error, as a future's outcome.
fn bytes_outcome(result: Result<Bytes, CallError>) -> Outcome {
    match result {
        Ok(msg) => Box::new(move |py: Python<'_>| Ok(PyBytes::new(py, &msg).into_any().unbind())),
        Err(e) => error_outcome(e),
    }
}

/// A failed call as a future's outcome (``CallError``).
fn error_outcome(e: CallError) -> Outcome {
    Box::new(move |py: Python<'_>| Err(call_error(py, e)))
}

/// The answer of ``Client.unary_reply``: ``message`` (bytes) and the
/// response's metadata, converted when asked for.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct UnaryReply {
    #[pyo3(get)]
    message: Py<PyBytes>,
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
}

impl UnaryReply {
    fn of(py: Python<'_>, reply: CoreUnaryReply) -> PyResult<Py<PyAny>> {
        let message = PyBytes::new(py, &reply.message).unbind();
        Ok(Py::new(py, UnaryReply { message, headers: reply.headers, trailers: reply.trailers })?.into_any())
    }
}

#[pymethods]
impl UnaryReply {
    /// Response headers as ``(key, value)`` pairs.
    fn initial_metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        metadata_list(py, &self.headers)
    }

    /// Trailers as ``(key, value)`` pairs.
    fn trailing_metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        metadata_list(py, &self.trailers)
    }
}

enum State {
    Starting(JoinHandle<Result<CoreCall, CallError>>),
    Open(Box<CoreCall>),
    Done,
}

impl State {
    /// The open call, once its response headers arrived.
    async fn open(&mut self) -> Result<Option<&mut CoreCall>, CallError> {
        if let State::Starting(start) = self {
            let started = match start.await {
                Ok(r) => r,
                Err(_) => Err(CallError::new(Code::Cancelled, "call cancelled")),
            };
            match started {
                Ok(call) => *self = State::Open(Box::new(call)),
                Err(e) => {
                    *self = State::Done;
                    return Err(e);
                }
            }
        }
        Ok(match self {
            State::Open(call) => Some(call),
            _ => None,
        })
    }
}

/// A call in progress (all four shapes): send request messages, receive
/// response messages, read metadata; ``cancel()`` resets it.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct Call {
    sender: std::sync::Mutex<Option<mpsc::Sender<Bytes>>>,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
}

impl Call {
    fn cancelled() -> CallError {
        CallError::new(Code::Cancelled, "call cancelled")
    }
}

#[pymethods]
impl Call {
    /// Sends one request message (waits while the send queue is full).
    /// Returns False if the call no longer takes messages (it ended: read
    /// its outcome with ``receive``).
    fn send<'py>(&self, py: Python<'py>, message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let msg = bytes_of(message)?;
        let tx = self.sender.lock().unwrap_or_else(|e| e.into_inner()).clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(match tx {
                Some(tx) => tx.send(msg).await.is_ok(),
                None => false,
            })
        })
    }

    /// Ends the request stream (half-close).
    fn close_send(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The next response message, or None when the call ended with OK;
    /// raises ``CallError`` if it failed.
    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (state, cancel) = (self.state.clone(), self.cancel.clone());
        complete::future(py, async move {
            let mut st = state.lock().await;
            let next = async {
                match st.open().await? {
                    Some(call) => call.message().await,
                    None => Ok(None),
                }
            };
            // Biased, cancellation first: after `cancel()` the state is Done,
            // and `next` would otherwise win half the time with a clean end.
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Call::cancelled()),
                r = next => r,
            };
            match result {
                Ok(Some(msg)) => bytes_outcome(Ok(msg)),
                // Kept open: the trailers stay readable.
                Ok(None) => Box::new(|py: Python<'_>| Ok(py.None())),
                Err(e) => {
                    // Dropping the call resets its stream.
                    *st = State::Done;
                    error_outcome(e)
                }
            }
        })
    }

    /// Response headers as ``(key, value)`` pairs (waits for them).
    fn initial_metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut st = state.lock().await;
            let headers = st.open().await.map_err(call_error_nogil)?.map(|c| c.headers().clone()).unwrap_or_default();
            Python::attach(|py| Ok(metadata_list(py, &headers)?.unbind()))
        })
    }

    /// Trailing metadata of a call that ended with OK (None before).
    fn trailing_metadata<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Ok(st) = self.state.try_lock() else { return Ok(None) };
        match &*st {
            State::Open(call) => call.trailers().map(|t| metadata_list(py, t)).transpose(),
            _ => Ok(None),
        }
    }

    /// Cancels the call: the HTTP/2 stream is reset, the server sees the
    /// cancellation; pending and later ``receive`` raise ``CANCELLED``.
    fn cancel(&self) {
        self.cancel.cancel();
        self.close_send();
        if let Ok(mut st) = self.state.try_lock() {
            if let State::Starting(h) = &*st {
                h.abort();
            }
            *st = State::Done;
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Ok(mut st) = self.state.try_lock() {
            if let State::Starting(h) = &*st {
                h.abort();
            }
            *st = State::Done;
        }
    }
}
