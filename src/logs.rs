//! Log records of the `resi` command: the gateway's name on every record,
//! text or JSON lines, and repeated warnings rate-limited.
//!
//! An operator runs several gateways and collects their stderr in one
//! place, so every record says which gateway wrote it (`gateway` field,
//! `[Resi] Name`). A log collector wants one JSON object per line
//! (`--log-format json`). And a gateway whose peer is down must not write
//! the same warning every two seconds forever: a warning (or error) seen
//! again within [`LogOptions::repeat_window`] of the last time it was
//! written is left out and counted, and the next time it is written it
//! carries that count (`more_like_this`). "The same" means the same level,
//! target (module) and message text; other fields may differ.
//!
//! The records are formatted by tracing-subscriber (its `fmt` text format
//! or its `json` format); [`Records`] wraps that formatter to add the name
//! and the count and to leave records out.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per record (`TIME LEVEL target: message
    /// fields gateway=NAME`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `message`, the record's fields, `gateway`, and `more_like_this`
    /// when repeats were left out.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected \"text\" or \"json\", got {s:?}")),
        }
    }
}

/// Default [`LogOptions::repeat_window`].
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub format: LogFormat,
    /// The `gateway` field of every record (None: no such field).
    pub name: Option<String>,
    /// A warning repeated within this of the last time it was written is
    /// left out and counted.
    pub repeat_window: Duration,
    /// Colours (text only).
    pub ansi: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { format: LogFormat::Text, name: None, repeat_window: REPEAT_WINDOW, ansi: false }
    }
}

/// The subscriber for `options`, writing to `writer` (the process-wide one
/// is installed by [`init`]; tests use this with their own writer).
pub fn subscriber<W>(options: LogOptions, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let repeats = Repeats::new(options.repeat_window);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match options.format {
        LogFormat::Text => {
            let inner = tracing_subscriber::fmt::format().with_ansi(options.ansi);
            let records = Records { inner, name: options.name, json: false, repeats };
            Box::new(builder.event_format(records).finish())
        }
        LogFormat::Json => {
            let inner = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(false);
            let records = Records { inner, name: options.name, json: true, repeats };
            Box::new(builder.fmt_fields(tracing_subscriber::fmt::format::JsonFields::new()).event_format(records).finish())
        }
    }
}

/// Installs the process-wide subscriber writing to stderr. A second call in
/// the same process (e.g. from Python) keeps the first.
pub fn init(options: LogOptions, filter: EnvFilter) {
    let _ = tracing::subscriber::set_global_default(subscriber(options, filter, std::io::stderr));
}

/// Wraps a formatter: leaves repeated warnings out, adds the gateway's
/// name and the count of records left out.
pub struct Records<F> {
    inner: F,
    name: Option<String>,
    json: bool,
    repeats: Repeats,
}

impl<S, N, F> FormatEvent<S, N> for Records<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut left_out = 0;
        if *event.metadata().level() <= Level::WARN {
            match self.repeats.admit(event, Instant::now()) {
                Admit::Skip => return Ok(()),
                Admit::Write { left_out: n } => left_out = n,
            }
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let line = if self.json { self.json_extras(line, left_out) } else { self.text_extras(line, left_out) };
        writer.write_str(&line)
    }
}

impl<F> Records<F> {
    /// `… gateway=NAME (N more like this left out)` before the newline.
    fn text_extras(&self, line: String, left_out: u64) -> String {
        let body = line.strip_suffix('\n').unwrap_or(&line);
        let mut out = String::with_capacity(line.len() + 48);
        out.push_str(body);
        if let Some(name) = &self.name {
            let _ = write!(out, " gateway={name}");
        }
        if left_out > 0 {
            let _ = write!(out, " ({left_out} more like this left out)");
        }
        out.push('\n');
        out
    }

    /// `"gateway"` and `"more_like_this"` as the object's first members.
    fn json_extras(&self, line: String, left_out: u64) -> String {
        let Some(rest) = line.strip_prefix('{') else { return line };
        let mut out = String::with_capacity(line.len() + 48);
        out.push('{');
        if let Some(name) = &self.name {
            let _ = write!(out, "\"gateway\":{},", serde_json::Value::from(name.as_str()));
        }
        if left_out > 0 {
            let _ = write!(out, "\"more_like_this\":{left_out},");
        }
        out.push_str(rest);
        out
    }
}

/// Whether a warning is written.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Written; `left_out` repeats were left out since it last was.
    Write { left_out: u64 },
    Skip,
}

/// Distinct warnings remembered at most; beyond, the oldest are forgotten
/// (a flood of distinct messages cannot grow memory).
const MAX_REMEMBERED: usize = 1024;

struct Seen {
    written: Instant,
    left_out: u64,
}

/// Which warnings were written when, and how many repeats were left out.
pub struct Repeats {
    window: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Repeats {
    pub fn new(window: Duration) -> Repeats {
        Repeats { window, seen: Mutex::new(HashMap::new()) }
    }

    fn admit(&self, event: &Event<'_>, now: Instant) -> Admit {
        let meta = event.metadata();
        let mut key = Message(format!("{} {} ", meta.level(), meta.target()));
        event.record(&mut key);
        self.admit_key(key.0, now)
    }

    /// The decision for the warning `key` (level, target and message).
    pub fn admit_key(&self, key: String, now: Instant) -> Admit {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(&key) {
            if now.saturating_duration_since(s.written) < self.window {
                s.left_out += 1;
                return Admit::Skip;
            }
            let left_out = std::mem::take(&mut s.left_out);
            s.written = now;
            return Admit::Write { left_out };
        }
        if seen.len() >= MAX_REMEMBERED {
            let window = self.window;
            seen.retain(|_, s| now.saturating_duration_since(s.written) < window);
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(key, Seen { written: now, left_out: 0 });
        Admit::Write { left_out: 0 }
    }
}

/// The `message` field of a record.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_every_two_seconds_is_written_once_a_window_with_the_count() {
        let r = Repeats::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..100u64 {
            let at = t0 + Duration::from_secs(2 * i);
            if let Admit::Write { left_out } = r.admit_key("WARN resi peer down".into(), at) {
                written.push((2 * i, left_out));
            }
        }
        // Written at 0 s, then at 60 s with the 29 left out in between, ...
        assert_eq!(written, vec![(0, 0), (60, 29), (120, 29), (180, 29)]);
        // A different message is its own warning.
        assert_eq!(r.admit_key("WARN resi other".into(), t0 + Duration::from_secs(1)), Admit::Write { left_out: 0 });
    }

    #[test]
    fn distinct_warnings_are_bounded() {
        let r = Repeats::new(Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(3 * MAX_REMEMBERED) {
            assert_eq!(r.admit_key(format!("w{i}"), now), Admit::Write { left_out: 0 });
        }
        assert!(r.seen.lock().unwrap().len() <= MAX_REMEMBERED);
    }
}
