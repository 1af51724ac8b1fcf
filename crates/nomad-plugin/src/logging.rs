//! hclog-style JSON logging on stderr for `tracing`.
//!
//! Nomad copies every stderr line of a plugin into its own log and reads a JSON line as an
//! hclog entry: `@level` (`trace|debug|info|warn|error`), `@message` and `@timestamp`
//! (`2006-01-02T15:04:05.000000Z07:00`, exactly six fractional digits) must be strings, or
//! the agent panics; every other key becomes a key/value pair of the entry.
//!
//! - [`HclogLayer`] is a `tracing_subscriber` layer that turns each event into one such line,
//!   flattening the fields of the event's spans (outermost first, inner values win) in as keys.
//! - [`LogSink`] hands lines to a dedicated writer thread through a bounded queue. Logging
//!   never blocks on I/O and never panics: when the queue is full (nobody reads stderr) lines
//!   are dropped and counted, and write errors such as `EPIPE` after the agent died are ignored.
//! - [`init_hclog`] / [`init_hclog_with`] install both as the global subscriber on stderr.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// How many lines may wait for the writer thread before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// The environment variable [`init_hclog`] reads a filter from (`tracing` `EnvFilter` syntax).
pub const DEFAULT_FILTER_ENV: &str = "RUST_LOG";

/// String values (the message included) longer than this many bytes are cut, because the
/// plugin client splits very long stderr lines, and the pieces would no longer be JSON.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// The hclog timestamp layout; UTC is written as `Z`, as Go's `Z07:00` does.
const TIMESTAMP_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Errors of the logging setup.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {source}")]
    WriterThread {
        /// The underlying error.
        source: io::Error,
    },
    /// Another global `tracing` subscriber was installed first.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Settings for [`init_hclog_with`].
#[derive(Debug, Clone)]
pub struct HclogConfig {
    /// The most verbose level written when no filter is given.
    pub default_level: Level,
    /// An environment variable holding an `EnvFilter` directive string that overrides
    /// `default_level`; an invalid value is reported in the log and ignored.
    pub filter_env: Option<String>,
    /// How many lines may wait for the writer thread before new ones are dropped.
    pub queue_capacity: usize,
}

impl HclogConfig {
    /// Defaults: [`DEFAULT_FILTER_ENV`] and [`DEFAULT_QUEUE_CAPACITY`].
    pub fn new(default_level: Level) -> Self {
        HclogConfig {
            default_level,
            filter_env: Some(DEFAULT_FILTER_ENV.to_owned()),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

/// Installs hclog JSON logging on stderr as the global `tracing` subscriber.
///
/// Keep the returned [`LogSink`] to [flush](LogSink::flush) before the process exits.
pub fn init_hclog(default_level: Level) -> Result<LogSink, LoggingError> {
    init_hclog_with(HclogConfig::new(default_level))
}

/// Installs hclog JSON logging on stderr as the global `tracing` subscriber, with settings.
pub fn init_hclog_with(config: HclogConfig) -> Result<LogSink, LoggingError> {
    let sink = LogSink::spawn(io::stderr(), config.queue_capacity)?;
    let builder = EnvFilter::builder().with_default_directive(config.default_level.into());
    let mut filter_problem = None;
    let filter = match config
        .filter_env
        .as_deref()
        .and_then(|name| std::env::var(name).ok().map(|value| (name, value)))
    {
        Some((name, value)) => builder.parse(&value).unwrap_or_else(|err| {
            filter_problem = Some((name.to_owned(), value.clone(), err.to_string()));
            default_filter(&builder, config.default_level)
        }),
        None => default_filter(&builder, config.default_level),
    };
    let subscriber =
        tracing_subscriber::registry().with(HclogLayer::new(sink.clone()).with_filter(filter));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| LoggingError::AlreadyInstalled)?;
    if let Some((name, value, error)) = filter_problem {
        tracing::warn!(
            variable = name,
            value,
            error,
            "ignoring an invalid log filter, using the default level"
        );
    }
    Ok(sink)
}

/// Crates whose debug output is per HTTP/2 frame or per poll: capped at `info` unless a filter
/// from the environment asks for more, so a plugin at debug level does not flood Nomad's log.
const CHATTY_DEPENDENCIES: [&str; 5] = ["h2", "hyper", "hyper_util", "tower", "tonic"];

/// `default_level` for everything, except [`CHATTY_DEPENDENCIES`] at `info` at most.
fn default_filter(
    builder: &tracing_subscriber::filter::Builder,
    default_level: Level,
) -> EnvFilter {
    let mut filter = builder.parse_lossy("");
    if default_level > Level::INFO {
        for target in CHATTY_DEPENDENCIES {
            if let Ok(directive) = format!("{target}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Formats a time in the hclog layout, in UTC.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(TIMESTAMP_FORMAT)
        // Formatting only fails for years beyond four digits; a plain-text line is harmless.
        .unwrap_or_else(|_| "0000-01-01T00:00:00.000000Z".to_owned())
}

/// The hclog name of a `tracing` level.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// Renders one hclog JSON line (without a line break).
///
/// The three reserved keys are always strings; a field that would collide with one of them
/// is kept under the same name with a leading underscore.
pub fn render_line(level: Level, message: &str, fields: Map<String, Value>) -> Vec<u8> {
    let mut object = Map::with_capacity(fields.len() + 3);
    for (key, value) in fields {
        let key = if matches!(key.as_str(), "@level" | "@message" | "@timestamp") {
            format!("_{key}")
        } else {
            key
        };
        object.insert(key, value);
    }
    object.insert("@level".to_owned(), Value::from(level_name(level)));
    object.insert("@message".to_owned(), Value::from(truncate(message)));
    object.insert(
        "@timestamp".to_owned(),
        Value::from(format_timestamp(OffsetDateTime::now_utc())),
    );
    // Serialising a map of strings, numbers and booleans cannot fail; an empty line is the
    // harmless fallback all the same.
    serde_json::to_vec(&Value::Object(object)).unwrap_or_default()
}

// === impl HclogLayer ===

/// A `tracing_subscriber` layer writing each event as one hclog JSON line to a [`LogSink`].
#[derive(Debug, Clone)]
pub struct HclogLayer {
    sink: LogSink,
}

impl HclogLayer {
    /// A layer writing to `sink`.
    pub fn new(sink: LogSink) -> Self {
        HclogLayer { sink }
    }
}

/// The recorded fields of a span, kept in the span's extensions.
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for HclogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Map::new();
        attrs.record(&mut FieldVisitor {
            fields: &mut fields,
            message: None,
        });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut FieldVisitor {
                fields,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut message = None;
        event.record(&mut FieldVisitor {
            fields: &mut fields,
            message: Some(&mut message),
        });
        let line = render_line(
            *event.metadata().level(),
            message.as_deref().unwrap_or_default(),
            fields,
        );
        self.sink.push(line);
    }
}

/// Collects fields as JSON values: numbers and booleans keep their type, all else is a string.
struct FieldVisitor<'a> {
    fields: &'a mut Map<String, Value>,
    /// Where an event's `message` field goes; `None` for spans, whose `message` is a plain key.
    message: Option<&'a mut Option<String>>,
}

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.fields.insert(field.name().to_owned(), value);
    }

    fn put_string(&mut self, field: &Field, value: String) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            *message = Some(value);
            return;
        }
        self.put(field, Value::from(truncate(&value)));
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; those are written as strings.
        match serde_json::Number::from_f64(value) {
            Some(number) => self.put(field, Value::Number(number)),
            None => self.put_string(field, value.to_string()),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(small) => self.put(field, Value::from(small)),
            Err(_) => self.put_string(field, value.to_string()),
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(small) => self.put(field, Value::from(small)),
            Err(_) => self.put_string(field, value.to_string()),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_string(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_string(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_string(field, format!("{value:?}"));
    }
}

/// Cuts a string to at most [`MAX_VALUE_BYTES`] on a character boundary.
fn truncate(value: &str) -> String {
    if value.len() <= MAX_VALUE_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated)", &value[..end])
}

// === impl LogSink ===

/// A bounded, non-blocking queue of log lines in front of a dedicated writer thread.
///
/// Clones share one queue and thread. When the last clone is dropped the thread writes what
/// is left and exits, closing its writer.
#[derive(Clone)]
pub struct LogSink {
    handle: Arc<SinkHandle>,
}

/// Closes the queue when the last [`LogSink`] clone goes away.
struct SinkHandle {
    shared: Arc<Shared>,
}

/// State shared by the sinks and the writer thread.
struct Shared {
    /// The queue itself; held only for pushes and pops, never during I/O.
    queue: Mutex<Queue>,
    /// Wakes the writer when lines arrive or the queue closes.
    lines_ready: Condvar,
    /// Wakes [`LogSink::flush`] callers after each written batch.
    batch_done: Condvar,
    /// The most lines the queue holds; more are dropped.
    capacity: usize,
    /// Lines dropped because the queue was full, since the start.
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    /// True while the writer is writing a batch it already took off the queue.
    writing: bool,
    /// True once every sink is gone; the writer drains and exits.
    closed: bool,
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSink")
            .field("capacity", &self.handle.shared.capacity)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl LogSink {
    /// Starts a writer thread writing lines to `writer`, with room for `capacity` waiting lines.
    pub fn spawn<W>(writer: W, capacity: usize) -> Result<LogSink, LoggingError>
    where
        W: Write + Send + 'static,
    {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            lines_ready: Condvar::new(),
            batch_done: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("hclog-writer".to_owned())
            .spawn(move || write_lines(&thread_shared, writer))
            .map_err(|source| LoggingError::WriterThread { source })?;
        Ok(LogSink {
            handle: Arc::new(SinkHandle { shared }),
        })
    }

    /// Queues one line (without a line break). Never blocks on I/O: drops the line when full.
    pub fn push(&self, line: Vec<u8>) {
        let shared = &self.handle.shared;
        let mut queue = lock(&shared.queue);
        if queue.lines.len() >= shared.capacity {
            drop(queue);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.lines.push_back(line);
        drop(queue);
        shared.lines_ready.notify_one();
    }

    /// How many lines were dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every queued line has been written (or discarded after a permanent write
    /// error), or `timeout` passes. Returns whether that happened in time. Call it before the
    /// process exits, since the writer thread does not outlive `main`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = &self.handle.shared;
        let deadline = Instant::now() + timeout;
        let mut queue = lock(&shared.queue);
        while !queue.lines.is_empty() || queue.writing {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            queue = shared
                .batch_done
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.lines_ready.notify_one();
    }
}

/// Locks the queue, ignoring poisoning: the queue stays consistent at every await-free step.
fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: takes whole batches off the queue and writes them with one call each.
fn write_lines<W: Write>(shared: &Shared, mut writer: W) {
    // After EPIPE or EBADF nothing will ever be read again; lines are then discarded unwritten.
    let mut broken = false;
    let mut reported_drops = 0;
    let mut batch = Vec::new();
    loop {
        let lines = {
            let mut queue = lock(&shared.queue);
            while queue.lines.is_empty() && !queue.closed {
                queue = shared
                    .lines_ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.lines.is_empty() {
                return;
            }
            queue.writing = true;
            std::mem::take(&mut queue.lines)
        };

        batch.clear();
        for line in lines {
            batch.extend_from_slice(&line);
            batch.push(b'\n');
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported_drops {
            let mut fields = Map::new();
            fields.insert("dropped_total".to_owned(), Value::from(dropped));
            batch.extend_from_slice(&render_line(
                Level::WARN,
                "log lines were dropped because stderr was not read fast enough",
                fields,
            ));
            batch.push(b'\n');
            reported_drops = dropped;
        }
        if !broken && let Err(err) = writer.write_all(&batch).and_then(|()| writer.flush()) {
            broken = is_permanent(&err);
        }

        lock(&shared.queue).writing = false;
        shared.batch_done.notify_all();
    }
}

/// Whether a write error means the reader is gone for good.
fn is_permanent(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe || err.raw_os_error() == Some(libc::EBADF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_VALUE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() < long.len());
        assert!(cut.ends_with("… (truncated)"));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn reserved_keys_are_strings_and_colliding_fields_are_renamed() {
        let mut fields = Map::new();
        fields.insert("@level".to_owned(), Value::from(5));
        fields.insert("count".to_owned(), Value::from(3));
        let line = render_line(Level::WARN, "hello", fields);
        let parsed: Value = serde_json::from_slice(&line).expect("valid json");
        assert_eq!(parsed["@level"], "warn");
        assert_eq!(parsed["@message"], "hello");
        assert_eq!(parsed["_@level"], 5);
        assert_eq!(parsed["count"], 3);
        assert!(parsed["@timestamp"].is_string());
    }

    #[test]
    fn timestamp_has_six_fraction_digits_and_z() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_795_745_400_123_456_789)
            .expect("valid time");
        assert_eq!(format_timestamp(at), "2026-11-27T02:10:00.123456Z");
    }
}
