//! Busy polling: while calls pass through it, `resi gateway` polls its
//! sockets instead of sleeping between them (`[Resi] BusyPoll`).
//!
//! Why: a call through the gateway pair crosses six processes (caller,
//! client gateway, end gateway, server and back), and each crossing wakes a
//! process that went to sleep waiting for it. On a virtual machine a
//! sleeping vCPU is halted, and waking it costs the writer an
//! inter-processor interrupt and the reader a return from the host: tens of
//! microseconds per crossing, most of a call's latency through the pair
//! (docs/performance.md, "What bounds it"). A thread that is still polling
//! when its data arrives pays none of that.
//!
//! How: one task of the gateway's current-thread runtime (installed by
//! [`install`], on that runtime's thread) keeps the runtime from sleeping
//! for `window` after the latest call started or got its answer through
//! this thread. Each turn it yields to the runtime, which then polls its
//! sockets and timers without blocking and runs what became ready, and then
//! yields the CPU to any other thread that wants it (`sched_yield`), so the
//! polling takes only time nothing else would use. When the window passes
//! without a call starting or being answered, the task sleeps until one
//! does: an idle gateway (heartbeats only) never polls.
//!
//! The gateway reports its calls with [`Awaiting`]: a per-thread counter,
//! no lock and no atomic. On a thread with no poller installed (a
//! multi-thread runtime, a gateway started from Python) it does nothing.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// Whether this thread's runtime has a poller ([`install`]).
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
    /// Bumped when a call starts or gets its answer: the poller's clock.
    static CHANGES: Cell<u64> = const { Cell::new(0) };
    /// The poller, while it sleeps waiting for a change.
    static SLEEPER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Starts polling on the current thread's runtime: call it from inside a
/// current-thread runtime, on its thread. `window` must not be zero.
pub fn install(window: Duration) {
    INSTALLED.with(|i| i.set(true));
    tokio::spawn(poll_while_busy(window));
}

/// A forwarded call waiting for its answer. Created when the call is sent
/// on, dropped when its answer (response headers, or a failure) came back
/// or the call was abandoned; both are changes the poller watches.
pub(crate) struct Awaiting {
    counted: bool,
}

impl Awaiting {
    pub(crate) fn start() -> Awaiting {
        let counted = INSTALLED.with(Cell::get);
        if counted {
            changed();
        }
        Awaiting { counted }
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if self.counted {
            changed();
        }
    }
}

fn changed() {
    CHANGES.with(|c| c.set(c.get().wrapping_add(1)));
    if let Some(w) = SLEEPER.with(|s| s.borrow_mut().take()) {
        w.wake();
    }
}

async fn poll_while_busy(window: Duration) {
    let _installed = Uninstall;
    let mut seen = CHANGES.with(Cell::get);
    loop {
        seen = next_change(seen).await;
        let mut until = Instant::now() + window;
        loop {
            tokio::task::yield_now().await;
            let now = Instant::now();
            let latest = CHANGES.with(Cell::get);
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
        INSTALLED.with(|i| i.set(false));
        SLEEPER.with(|s| s.borrow_mut().take());
    }
}

/// Sleeps until a call starts or is answered after `seen`; returns the
/// change count then.
async fn next_change(seen: u64) -> u64 {
    poll_fn(|cx| {
        let now = CHANGES.with(Cell::get);
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

    fn changes() -> u64 {
        CHANGES.with(Cell::get)
    }

    #[test]
    fn a_thread_without_a_poller_counts_nothing() {
        std::thread::spawn(|| {
            let before = changes();
            drop(Awaiting::start());
            assert_eq!(changes(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_poller_polls_while_calls_change_and_sleeps_after_the_window() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            install(Duration::from_millis(5));
            tokio::task::yield_now().await;
            // Asleep: nothing has changed yet.
            assert!(SLEEPER.with(|s| s.borrow().is_some()), "the poller waits for a call");
            let call = Awaiting::start();
            assert!(SLEEPER.with(|s| s.borrow().is_none()), "a call wakes it");
            // Polling: the runtime keeps running this task without sleeping,
            // so a plain yield comes back at once, many times over.
            let started = Instant::now();
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            assert!(SLEEPER.with(|s| s.borrow().is_none()), "still polling within the window");
            drop(call);
            // The window passes without a change: it sleeps again.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(SLEEPER.with(|s| s.borrow().is_some()), "asleep once the window passed");
            assert!(started.elapsed() < Duration::from_secs(5));
        });
        drop(rt);
        assert!(!INSTALLED.with(Cell::get), "a runtime shut down takes its poller's state with it");
    }
}
