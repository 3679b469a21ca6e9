//! Rust log records into Python's `logging`, without ever making a Rust
//! thread wait for the GIL.
//!
//! Why a queue: a logger that takes the GIL on the thread that logs (as
//! pyo3-log does when installed directly) deadlocks the process when that
//! thread holds a Rust lock which the Python thread, holding the GIL, is
//! waiting for (a getter reading gateway state while a tokio thread logs
//! under the same lock). It also makes every tokio worker contend with the
//! asyncio thread for the GIL. So records are filtered without the GIL
//! (pyo3-log's cache of Python levels), copied into an owned record and
//! handed to one `resi-log` thread, which takes the GIL once per batch and
//! passes them, in order, to pyo3-log and so to Python's `logging`.
//!
//! The queue is bounded: when Python cannot keep up, records are dropped and
//! counted, and the next batch starts with a warning saying how many.
//!
//! A warning or error repeated within a minute (same level, target and
//! text) is left out and counted, as `resi gateway` does with its own log
//! (`crate::logs`): a gateway whose peer is down does not write the same
//! line every redial forever. The next copy written says how many were
//! left out.
//!
//! `tracing` events reach the bridge through a `tracing` subscriber of
//! our own ([`bridge_tracing`]), not through `tracing`'s `log` fallback:
//! that fallback asks `log` about every event and span of hyper and h2,
//! several per HTTP/2 frame, while a subscriber is asked once per call
//! site and answers "never" for the ones the bridge would refuse.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Records waiting for the Python side before new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// Records handed to Python under one acquisition of the GIL.
const BATCH: usize = 256;
/// How long `flush` waits for the queue to drain.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// A record owned by the queue (a `log::Record` borrows its parts).
struct OwnedRecord {
    level: Level,
    target: String,
    message: String,
    file: Option<String>,
    line: Option<u32>,
    module: Option<String>,
}

enum Item {
    Record(OwnedRecord),
    /// Answered once every item queued before it was handled.
    Flush(mpsc::Sender<()>),
}

/// The installed `log::Log`: filters, copies, queues.
struct QueuedLogger {
    /// pyo3-log's logger: its `enabled` reads a cache (no GIL); its `log`
    /// runs only on the `resi-log` thread.
    python: &'static pyo3_log::Logger,
    queue: SyncSender<Item>,
    dropped: &'static AtomicU64,
    repeats: crate::logs::Repeats,
}

static QUEUE_TX: OnceLock<SyncSender<Item>> = OnceLock::new();
static RESET: OnceLock<pyo3_log::ResetHandle> = OnceLock::new();

/// The bridge's own filter (as installed on pyo3-log below): `resi`'s
/// targets at every level, other crates' from warnings up. Checked first
/// because it costs nothing, while pyo3-log's cache lookup hashes and
/// searches the target: hyper's and h2's trace events, several per HTTP/2
/// frame, all pass `log`'s global level and were a third of a busy
/// client's CPU (docs/performance.md).
fn may_pass(metadata: &Metadata) -> bool {
    passes(metadata.level(), metadata.target())
}

fn passes(level: Level, target: &str) -> bool {
    level <= Level::Warn || is_resi(target)
}

fn is_resi(target: &str) -> bool {
    target.strip_prefix("resi").is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

impl Log for QueuedLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        may_pass(metadata) && self.python.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut message = record.args().to_string();
        if record.level() <= Level::Warn {
            let key = format!("{} {} {message}", record.level(), record.target());
            match self.repeats.admit_key(key, std::time::Instant::now()) {
                crate::logs::Admit::Skip => return,
                crate::logs::Admit::Write { left_out: 0 } => {}
                crate::logs::Admit::Write { left_out } => message += &format!(" ({left_out} more like this left out)"),
            }
        }
        let owned = OwnedRecord {
            level: record.level(),
            target: record.target().to_string(),
            message,
            file: record.file().map(str::to_string),
            line: record.line(),
            module: record.module_path().map(str::to_string),
        };
        match self.queue.try_send(Item::Record(owned)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {}
}

/// Installs the bridge: records of targets under `resi` from `trace` up,
/// other crates' from warnings up, as far as Python's levels let them.
pub(crate) fn install(py: Python<'_>) {
    let Ok(python) = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels) else {
        return;
    };
    let python = python
        .filter(LevelFilter::Warn)
        .filter_target("resi".to_string(), LevelFilter::Trace);
    let _ = RESET.set(python.reset_handle());
    let python: &'static pyo3_log::Logger = Box::leak(Box::new(python));
    let dropped: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let logger = QueuedLogger {
        python,
        queue: tx.clone(),
        dropped,
        repeats: crate::logs::Repeats::new(crate::logs::REPEAT_WINDOW),
    };
    if log::set_boxed_logger(Box::new(logger)).is_err() {
        return; // another logger was installed first; leave it
    }
    log::set_max_level(LevelFilter::Trace);
    let _ = QUEUE_TX.set(tx);
    let spawned = std::thread::Builder::new()
        .name("resi-log".into())
        .spawn(move || drain(rx, python, dropped));
    if spawned.is_err() {
        log::set_max_level(LevelFilter::Off);
    }
}

/// Makes records follow changes of Python logging levels made after they
/// were first used.
pub(crate) fn reset_cache() {
    if let Some(h) = RESET.get() {
        h.reset();
    }
}

/// Waits (without the GIL) until every record logged before the call has
/// reached Python's `logging`; false if that took longer than 5 s.
pub(crate) fn flush(py: Python<'_>) -> bool {
    let Some(tx) = QUEUE_TX.get() else {
        return true;
    };
    let (done_tx, done_rx) = mpsc::channel();
    py.detach(move || {
        if tx.send(Item::Flush(done_tx)).is_err() {
            return true;
        }
        done_rx.recv_timeout(FLUSH_WAIT).is_ok()
    })
}

/// The `resi-log` thread: waits for records without the GIL, then hands a
/// batch of them to Python under one acquisition.
fn drain(rx: Receiver<Item>, python: &'static pyo3_log::Logger, dropped: &'static AtomicU64) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(item) => batch.push(item),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        Python::attach(|_py| {
            if lost > 0 {
                emit_dropped(python, lost);
            }
            for item in batch.drain(..) {
                match item {
                    Item::Record(r) => emit(python, &r),
                    Item::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    }
}

fn emit(python: &pyo3_log::Logger, r: &OwnedRecord) {
    python.log(
        &Record::builder()
            .level(r.level)
            .target(&r.target)
            .args(format_args!("{}", r.message))
            .file(r.file.as_deref())
            .line(r.line)
            .module_path(r.module.as_deref())
            .build(),
    );
}

fn emit_dropped(python: &pyo3_log::Logger, lost: u64) {
    python.log(
        &Record::builder()
            .level(Level::Warn)
            .target("resi::logging")
            .args(format_args!(
                "{lost} log records were dropped: Python's logging did not keep up"
            ))
            .build(),
    );
}

/// Makes this process's `tracing` events `log` records of the bridge,
/// once. Called when the bindings first use the runtime rather than at
/// import: the `resi` command imports the module too, and `resi gateway`
/// installs its own subscriber, which must stay free to do so. Events of
/// a process where this never ran still reach the bridge, through
/// `tracing`'s `log` fallback.
pub(crate) fn bridge_tracing() {
    static BRIDGED: Once = Once::new();
    BRIDGED.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(EventsToLog));
    });
}

/// The `tracing` layer of [`bridge_tracing`]: events only (no span is
/// ever enabled), filtered like the bridge, written as `tracing`'s `log`
/// fallback writes them (the message, then ` field=value`).
struct EventsToLog;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventsToLog {
    fn register_callsite(&self, metadata: &'static tracing::Metadata<'static>) -> Interest {
        // "Sometimes", not "always": Python's levels can change, so
        // `enabled` asks the bridge each time.
        match metadata.is_event() && passes(log_level(metadata.level()), metadata.target()) {
            true => Interest::sometimes(),
            false => Interest::never(),
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        let level = log_level(metadata.level());
        metadata.is_event()
            && level <= log::max_level()
            && log::logger().enabled(&Metadata::builder().level(level).target(metadata.target()).build())
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = LogLine(String::new());
        event.record(&mut line);
        log::logger().log(
            &Record::builder()
                .level(log_level(metadata.level()))
                .target(metadata.target())
                .args(format_args!("{}", line.0))
                .file(metadata.file())
                .line(metadata.line())
                .module_path(metadata.module_path())
                .build(),
        );
    }
}

fn log_level(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::INFO => Level::Info,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::TRACE => Level::Trace,
    }
}

/// An event's fields as one line: the message first, then `name=value`
/// (values in their `Debug` form), separated by spaces.
struct LogLine(String);

impl Visit for LogLine {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let gap = if self.0.is_empty() { "" } else { " " };
        let _ = match field.name() {
            "message" => write!(self.0, "{gap}{value:?}"),
            name => write!(self.0, "{gap}{name}={value:?}"),
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.record_debug(field, &format_args!("{value}")),
            _ => self.record_debug(field, &value),
        }
    }
}
