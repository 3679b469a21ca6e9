//! Busy polling: while calls pass through it, `resi gateway` polls its
//! sockets instead of sleeping between them (`[Resi] BusyPoll`).
//!
//! Why: a call through the gateway pair crosses six processes (caller,
//! client gateway, end gateway, server and back), and each crossing wakes a
//! process that went to sleep waiting for it. On a virtual machine a
//! sleeping vCPU is halted, and waking it costs the writer an
//! inter-processor interrupt and the reader a return from the host: tens of
//! microseconds per crossing, most of a call's latency through the pair
//! (docs/performance.md, "Busy polling"). A thread that is still polling
//! when its data arrives pays none of that.
//!
//! How: one task of the gateway's current-thread runtime (started by
//! [`install`], on that runtime's thread) keeps the runtime from sleeping
//! for `window` after the latest call event on this thread: a call sent on
//! upstream, its answer (response headers, or a failure) coming back, or a
//! piece of a request or response body relayed (so a long stream or a big
//! message keeps it polling while its data flows). Each turn the task yields to
//! the runtime, which runs what is ready and, once its queue is empty,
//! polls its sockets and timers without blocking; then the task yields the
//! CPU to any other thread queued on the same CPU (`sched_yield`), so it
//! does not hold up the caller or the server beside it. The polling is
//! still CPU time spent (on the VM's host, too). When the window passes
//! without an event, the task sleeps until the next one: an idle gateway
//! (heartbeats only) never polls.
//!
//! The gateway reports its calls with [`Awaiting`] and [`relayed`], which bump a
//! per-thread event counter: no lock and no atomic. On a thread with no
//! poller (a multi-thread runtime, a gateway started from Python) it does
//! nothing.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// Whether this thread's runtime has a poller ([`install`]).
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
    /// Bumped at each call event: the poller's clock.
    static EVENTS: Cell<u64> = const { Cell::new(0) };
    /// The poller, while it sleeps waiting for an event.
    static SLEEPER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// The poller's turns, for the tests.
    static TURNS: Cell<u64> = const { Cell::new(0) };
}

/// Starts polling on the current runtime, if it is a current-thread one
/// (where every task runs on this thread) and has no poller yet; otherwise
/// does nothing. A zero `window` polls once per event.
pub fn install(window: Duration) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let current_thread = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
    if current_thread && !INSTALLED.replace(true) {
        tokio::spawn(poll_while_busy(window));
    }
}

/// A forwarded call waiting for its answer. Created when the call is sent
/// on, dropped when its answer (response headers, or a failure) came back
/// or the call was abandoned: both are events the poller watches.
pub(crate) struct Awaiting {
    counted: bool,
}

impl Awaiting {
    pub(crate) fn start() -> Awaiting {
        Awaiting { counted: note_event_if_installed() }
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if self.counted {
            note_event();
        }
    }
}

/// A piece of a call's body (a data frame of its request or response) was
/// relayed: an event too, so a stream or a big message keeps the poller
/// turning while its data flows.
pub(crate) fn relayed() {
    note_event_if_installed();
}

/// Counts an event if this thread has a poller; says whether it has one.
fn note_event_if_installed() -> bool {
    let installed = INSTALLED.with(Cell::get);
    if installed {
        note_event();
    }
    installed
}

fn note_event() {
    EVENTS.with(|c| c.set(c.get().wrapping_add(1)));
    if let Some(w) = SLEEPER.with(|s| s.borrow_mut().take()) {
        w.wake();
    }
}

async fn poll_while_busy(window: Duration) {
    let _uninstall = Uninstall;
    let mut seen = EVENTS.with(Cell::get);
    loop {
        seen = next_event(seen).await;
        let mut until = Instant::now() + window;
        loop {
            tokio::task::yield_now().await;
            let now = Instant::now();
            #[cfg(test)]
            TURNS.with(|t| t.set(t.get() + 1));
            let latest = EVENTS.with(Cell::get);
            if latest != seen {
                (seen, until) = (latest, now + window);
            } else if now >= until {
                break;
            }
            std::thread::yield_now();
        }
    }
}

/// Ends the thread's polling when the poller goes (its runtime shut down):
/// later calls on this thread count nothing.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        // `try_with`: this may run while the thread's locals are torn down.
        let _ = INSTALLED.try_with(|i| i.set(false));
        let _ = SLEEPER.try_with(|s| s.borrow_mut().take());
    }
}

/// Sleeps until a call event after `seen`; returns the event count then.
async fn next_event(seen: u64) -> u64 {
    poll_fn(|cx| {
        let now = EVENTS.with(Cell::get);
        if now != seen {
            return Poll::Ready(now);
        }
        SLEEPER.with(|s| *s.borrow_mut() = Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> u64 {
        EVENTS.with(Cell::get)
    }

    fn turns() -> u64 {
        TURNS.with(Cell::get)
    }

    fn asleep() -> bool {
        SLEEPER.with(|s| s.borrow().is_some())
    }

    #[test]
    fn a_thread_without_a_poller_counts_nothing() {
        std::thread::spawn(|| {
            let before = events();
            drop(Awaiting::start());
            assert_eq!(events(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_relayed_piece_of_a_body_wakes_the_poller_and_counts_only_where_one_is_installed() {
        std::thread::spawn(|| {
            let before = events();
            relayed();
            assert_eq!(events(), before, "no poller on this thread: nothing counted");
        })
        .join()
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            install(Duration::from_millis(50));
            tokio::task::yield_now().await;
            assert!(asleep(), "no call yet: the poller sleeps");
            let before = turns();
            relayed();
            assert!(!asleep(), "a relayed data frame wakes it");
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(turns() > before + 1, "it polls after the relayed frame");
        });
    }

    #[test]
    fn a_multi_thread_runtime_gets_no_poller() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        rt.block_on(async { install(Duration::from_millis(1)) });
        assert!(!INSTALLED.with(Cell::get));
    }

    #[test]
    fn the_poller_polls_after_a_call_event_and_sleeps_once_the_window_passed() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            install(Duration::from_millis(300));
            install(Duration::from_millis(300)); // a second install is a no-op
            tokio::task::yield_now().await;
            assert!(asleep(), "no call yet: the poller sleeps");
            let before = turns();
            let call = Awaiting::start();
            // A timer fires while the poller keeps the runtime from parking.
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(turns() > before + 1, "the poller turned while the timer ran");
            assert!(!asleep(), "still polling within the window");
            drop(call);
            // The window passes with no event: it sleeps again.
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert!(asleep(), "asleep once the window passed");
            let idle = turns();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(turns(), idle, "an asleep poller does not turn");
        });
        drop(rt);
        assert!(!INSTALLED.with(Cell::get), "a runtime shut down takes its poller's state with it");
    }
}
