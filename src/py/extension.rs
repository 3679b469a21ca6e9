//! Extension handlers written in Python.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3_async_runtimes::TaskLocals;

use super::convert::bytes_of;
use super::errors::status_from_pyerr;
use crate::extension::{ExtensionHandler, HandlerFuture};
use crate::grpc::{Code, Status};
use crate::proto::esi::Extension;

/// A Python callable `handler(data: bytes) -> bytes` (usually `async def`),
/// run on the asyncio loop it was registered from.
pub(crate) struct PyHandler {
    func: Py<PyAny>,
    locals: TaskLocals,
}

impl PyHandler {
    /// Captures the running loop (and context) of the caller.
    pub(crate) fn handler(py: Python<'_>, func: Py<PyAny>) -> PyResult<Arc<dyn ExtensionHandler>> {
        if !func.bind(py).is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err("an extension handler must be callable"));
        }
        let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
        Ok(Arc::new(PyHandler { func, locals }))
    }
}

impl ExtensionHandler for PyHandler {
    fn handle(&self, ext: Extension) -> HandlerFuture {
        let (func, locals) = Python::attach(|py| (self.func.clone_ref(py), self.locals.clone()));
        let id = ext.id;
        Box::pin(async move {
            // Call it; a coroutine goes to its loop, plain bytes are the answer.
            let started = Python::attach(|py| -> PyResult<Result<bytes::Bytes, _>> {
                let out = func.bind(py).call1((PyBytes::new(py, &ext.data),))?;
                if out.hasattr("__await__")? {
                    Ok(Err(pyo3_async_runtimes::into_future_with_locals(&locals, out)?))
                } else {
                    Ok(Ok(bytes_of(&out)?))
                }
            });
            let result = match started {
                Ok(Ok(data)) => return Ok(data),
                Ok(Err(fut)) => fut.await,
                Err(e) => Err(e),
            };
            Python::attach(|py| match result {
                Ok(value) => bytes_of(value.bind(py)).map_err(|e| {
                    Status::new(Code::Internal, format!("extension {id} handler returned a bad value: {e}"))
                }),
                Err(e) => {
                    let st = status_from_pyerr(py, &e);
                    if st.code == Code::Unknown {
                        tracing::warn!(extension = id, "Python extension handler failed: {}", st.message);
                    }
                    Err(st)
                }
            })
        })
    }
}
