//! Results of tokio futures handed to an asyncio loop in batches.
//!
//! Why: `pyo3_async_runtimes::future_into_py` takes the GIL on a tokio
//! thread and calls `loop.call_soon_threadsafe` once per finished future:
//! with 64 calls in flight, the tokio threads and the loop thread fight for
//! the GIL on every completion, and every completion writes the loop's
//! self-pipe. Here a finished future only pushes its outcome onto its
//! loop's queue (a mutex, no GIL) and writes one byte to the queue's own
//! pipe when the queue was empty; the loop, which watches the pipe with
//! `add_reader`, then resolves every queued asyncio future in one callback.
//! Under load one wake-up resolves many calls, and the GIL is only ever
//! taken on the loop's thread.
//!
//! Starting works the same way round: a call is not a tokio task of its
//! own. [`start`] boxes the call's future once and pushes it onto the
//! loop's list of submitted calls; the first push into an empty list wakes
//! the loop's one driver task, which moves every submitted call into its
//! set of running ones and polls those that were woken. 64 calls started
//! in one turn of the loop cost one cross-thread wake-up instead of 64
//! spawns, and the call's future (several KiB of state machine) is moved
//! once, into its box, instead of into and out of a task cell.
//!
//! Cancelling: [`start`] returns an [`Abort`]; the Python caller aborts the
//! call when the awaiting coroutine is cancelled (dropping its future
//! resets the HTTP/2 stream). A future already cancelled when its outcome
//! arrives is skipped.

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use pyo3::prelude::*;
use pyo3::intern;

/// What a finished future hands the loop: turned into the asyncio
/// future's result (or exception) on the loop's thread, with the GIL.
pub(crate) type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// The finished futures of one loop, the pipe that wakes it, and the
/// calls it started that its driver has not taken yet.
struct Queue {
    done: Mutex<Vec<(Py<PyAny>, Outcome)>>,
    wake: UnixStream,
    woken: UnixStream,
    submitted: Arc<Submitted>,
}

impl Queue {
    fn new() -> std::io::Result<Queue> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let submitted = Arc::new(Submitted::default());
        super::runtime::get().spawn(Driver::new(&submitted));
        Ok(Queue { done: Mutex::new(Vec::new()), wake, woken, submitted })
    }

    /// Queues `fut`'s outcome; the first in an empty queue wakes the loop.
    fn push(&self, fut: Py<PyAny>, outcome: Outcome) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push((fut, outcome));
        if done.len() == 1 {
            // A full pipe already holds a wake-up: nothing is lost.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// Resolves every queued future (on the loop's thread).
    fn drain(&self, py: Python<'_>) {
        let mut sink = [0u8; 256];
        while matches!((&self.woken).read(&mut sink), Ok(n) if n > 0) {}
        let batch = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
        for (fut, outcome) in batch {
            resolve(py, fut.bind(py), outcome);
        }
    }
}

/// A started call: its future, boxed once, and what resolves its asyncio
/// future.
type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Calls started on a loop's thread, waiting for the loop's driver.
#[derive(Default)]
struct Submitted {
    calls: Mutex<Vec<Abortable<Work>>>,
    driver: AtomicWaker,
}

impl Submitted {
    /// Queues `call`; the first in an empty list wakes the driver.
    fn push(&self, call: Abortable<Work>) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.push(call);
        if calls.len() == 1 {
            self.driver.wake();
        }
    }

    fn take(&self) -> Vec<Abortable<Work>> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Submitted {
    /// Lets the driver see that its loop is gone.
    fn drop(&mut self) {
        self.driver.wake();
    }
}

/// The one tokio task that runs a loop's calls. It ends once the loop's
/// queue is gone and its last call finished.
struct Driver {
    submitted: Weak<Submitted>,
    running: FuturesUnordered<Abortable<Work>>,
}

impl Driver {
    fn new(submitted: &Arc<Submitted>) -> Driver {
        Driver { submitted: Arc::downgrade(submitted), running: FuturesUnordered::new() }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let open = match self.submitted.upgrade() {
            Some(submitted) => {
                submitted.driver.register(cx.waker());
                self.running.extend(submitted.take());
                true
            }
            None => false,
        };
        // An aborted call ends here too: its future is dropped unpolled.
        while let Poll::Ready(Some(_)) = self.running.poll_next_unpin(cx) {}
        match open || !self.running.is_empty() {
            true => Poll::Pending,
            false => Poll::Ready(()),
        }
    }
}

/// Sets `fut`'s result or exception. One that was cancelled meanwhile
/// refuses it (`InvalidStateError`): that refusal is the check, so the
/// common case makes one call.
fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>, outcome: Outcome) {
    let set = match outcome(py) {
        Ok(value) => fut.call_method1(intern!(py, "set_result"), (value,)),
        Err(err) => fut.call_method1(intern!(py, "set_exception"), (err.into_value(py),)),
    };
    if let Err(e) = set {
        let cancelled = fut.call_method0(intern!(py, "cancelled")).and_then(|c| c.is_truthy()).unwrap_or(false);
        if !cancelled {
            e.write_unraisable(py, Some(fut));
        }
    }
}

/// The loop's end of a [`Queue`]: called by the loop when the pipe is
/// readable.
#[pyclass(module = "resi._resi", frozen)]
struct Drain {
    queue: Arc<Queue>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.queue.drain(py);
    }
}

thread_local! {
    /// The queue of the loop last used on this thread (a loop runs on one
    /// thread; a new loop on the thread gets a new queue).
    static CURRENT: RefCell<Option<(Py<PyAny>, Arc<Queue>)>> = const { RefCell::new(None) };
}

/// The queue of `event_loop`, registered with it on first use.
fn queue_of(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Queue>> {
    let cached = CURRENT.with_borrow(|c| {
        c.as_ref().filter(|(l, _)| l.as_ptr() == event_loop.as_ptr()).map(|(_, q)| q.clone())
    });
    if let Some(q) = cached {
        return Ok(q);
    }
    let py = event_loop.py();
    let queue = Arc::new(Queue::new().map_err(|e| super::errors::resi_error(py, format!("completion pipe: {e}")))?);
    let drain = Bound::new(py, Drain { queue: queue.clone() })?;
    event_loop.call_method1(intern!(py, "add_reader"), (queue.woken.as_raw_fd(), drain))?;
    CURRENT.with_borrow_mut(|c| *c = Some((event_loop.clone().unbind(), queue.clone())));
    Ok(queue)
}

/// Stops a running call (see the module doc).
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct Abort {
    handle: AbortHandle,
}

#[pymethods]
impl Abort {
    /// Drops the call's future (its HTTP/2 stream is reset); no-op once done.
    fn abort(&self) {
        self.handle.abort();
    }

    /// As a done callback of the call's future: aborts if it was cancelled.
    fn __call__(&self, fut: &Bound<'_, PyAny>) {
        if fut.call_method0(intern!(fut.py(), "cancelled")).and_then(|c| c.is_truthy()).unwrap_or(false) {
            self.handle.abort();
        }
    }
}

/// Runs `work` on the loop's driver (tokio); returns the asyncio future
/// (of the running loop) that its outcome resolves, in a batch, and the
/// call's [`Abort`]. The caller aborts when its wait for the future is
/// cancelled.
pub(crate) fn start<'py, F>(py: Python<'py>, work: F) -> PyResult<(Bound<'py, PyAny>, Abort)>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let queue = queue_of(&event_loop)?;
    let fut = event_loop.call_method0(intern!(py, "create_future"))?;
    let pending = fut.clone().unbind();
    let submitted = queue.submitted.clone();
    let call: Work = Box::pin(async move {
        let outcome = work.await;
        queue.push(pending, outcome);
    });
    let (handle, registration) = AbortHandle::new_pair();
    submitted.push(Abortable::new(call, registration));
    Ok((fut, Abort { handle }))
}

/// [`start`] for an awaitable handed to user code: cancelling the future
/// aborts the task (a done callback).
pub(crate) fn future<'py, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let (fut, abort) = start(py, work)?;
    fut.call_method1(intern!(py, "add_done_callback"), (abort,))?;
    Ok(fut)
}
