//! Tests of the hclog layer and the non-blocking line sink, writing into real pipes.

use std::io::{PipeReader, Read};
use std::time::Duration;

use nomad_plugin::logging::{HclogLayer, LogSink};
use serde_json::Value;
use tracing::{debug, error, info, info_span, trace, warn};
use tracing_subscriber::layer::SubscriberExt;

/// Runs `log` with an hclog layer writing through a sink into a pipe, then returns every line
/// the pipe received once the sink (and so its writer thread) is gone.
fn capture(capacity: usize, log: impl FnOnce()) -> Vec<String> {
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let sink = LogSink::spawn(writer, capacity).expect("writer thread");
    let subscriber = tracing_subscriber::registry().with(HclogLayer::new(sink));
    tracing::subscriber::with_default(subscriber, log);
    read_lines(&mut reader)
}

/// Reads until the writer side closes, which happens when the writer thread exits.
fn read_lines(reader: &mut PipeReader) -> Vec<String> {
    let mut text = String::new();
    reader.read_to_string(&mut text).expect("read pipe");
    text.lines().map(str::to_owned).collect()
}

fn parse(line: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str(line) {
        Ok(Value::Object(object)) => object,
        other => panic!("not a JSON object: {line:?} ({other:?})"),
    }
}

/// Checks `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$`, Go's
/// `2006-01-02T15:04:05.000000Z07:00`.
fn is_hclog_timestamp(value: &str) -> bool {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let at = |index: usize, expected: u8| bytes.get(index) == Some(&expected);
    let main_part = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && at(19, b'.')
        && digits(20..26);
    let zone = match bytes.get(26..) {
        Some(b"Z") => true,
        Some([sign, ..]) if (*sign == b'+' || *sign == b'-') && bytes.len() == 32 => {
            digits(27..29) && at(29, b':') && digits(30..32)
        }
        _ => false,
    };
    main_part && zone
}

#[test]
fn the_timestamp_checker_itself_tells_good_from_bad() {
    assert!(is_hclog_timestamp("2026-11-27T02:10:00.123456Z"));
    assert!(is_hclog_timestamp("2026-11-27T02:10:00.123456+01:00"));
    assert!(!is_hclog_timestamp("2026-11-27T02:10:00.123Z"));
    assert!(!is_hclog_timestamp("2026-11-27T02:10:00.123456"));
    assert!(!is_hclog_timestamp("2026-11-27 02:10:00.123456Z"));
}

#[test]
fn every_level_becomes_a_valid_hclog_line() {
    let lines = capture(64, || {
        trace!("t");
        debug!("d");
        info!("i");
        warn!("w");
        error!("e");
    });
    let levels: Vec<String> = lines
        .iter()
        .map(|line| {
            let object = parse(line);
            for key in ["@level", "@message", "@timestamp"] {
                assert!(object[key].is_string(), "{key} is not a string in {line}");
            }
            let timestamp = object["@timestamp"].as_str().unwrap_or_default();
            assert!(is_hclog_timestamp(timestamp), "bad timestamp {timestamp:?}");
            object["@level"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(levels, ["trace", "debug", "info", "warn", "error"]);
}

#[test]
fn fields_keep_their_types_and_spans_are_flattened() {
    let lines = capture(64, || {
        let outer = info_span!("task", alloc_id = "a1", attempt = 1u64, task = "outer");
        let _outer = outer.enter();
        let inner = info_span!("step", task = "inner", late = tracing::field::Empty);
        inner.record("late", true);
        let _inner = inner.enter();
        info!(
            port = 8080,
            ratio = 0.5,
            healthy = false,
            path = %"/srv/www",
            reason = ?Some("x"),
            "listening on {}",
            "http"
        );
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    let object = parse(&lines[0]);
    assert_eq!(object["@message"], "listening on http");
    assert_eq!(object["port"], 8080);
    assert_eq!(object["ratio"], 0.5);
    assert_eq!(object["healthy"], false);
    assert_eq!(object["path"], "/srv/www");
    assert_eq!(object["reason"], "Some(\"x\")");
    assert_eq!(object["alloc_id"], "a1");
    assert_eq!(object["attempt"], 1);
    assert_eq!(object["late"], true);
    // The innermost span wins over its parent.
    assert_eq!(object["task"], "inner");
}

#[test]
fn a_message_that_looks_like_a_reserved_key_cannot_break_the_line() {
    let lines = capture(64, || {
        info!(
            "@level" = 3,
            "@timestamp" = true,
            "quotes \" and\nnewlines survive"
        );
        info!(count = 1);
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = parse(&lines[0]);
    assert_eq!(first["@level"], "info");
    assert!(first["@timestamp"].is_string());
    assert_eq!(first["_@level"], 3);
    assert_eq!(first["@message"], "quotes \" and\nnewlines survive");
    let second = parse(&lines[1]);
    assert_eq!(
        second["@message"], "",
        "an event without a message gets an empty one"
    );
}

#[test]
fn logging_into_a_closed_pipe_neither_panics_nor_blocks() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let sink = LogSink::spawn(writer, 128).expect("writer thread");
    let subscriber = tracing_subscriber::registry().with(HclogLayer::new(sink.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for n in 0..20_000 {
            info!(n, "nobody will read this");
        }
    });
    // The writer keeps draining (and discarding) after EPIPE, so the queue empties.
    assert!(sink.flush(Duration::from_secs(60)), "queue never drained");
}

#[test]
fn a_reader_that_stalls_costs_lines_not_progress_and_drops_are_reported() {
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let sink = LogSink::spawn(writer, 16).expect("writer thread");
    let subscriber = tracing_subscriber::registry().with(HclogLayer::new(sink.clone()));
    let padding = "x".repeat(200);
    // Far more than a pipe buffer and the queue can hold while nobody reads: this loop
    // finishing at all shows that logging does not wait for the reader.
    tracing::subscriber::with_default(subscriber, || {
        for n in 0..5_000 {
            info!(n, padding, "filling the pipe");
        }
    });
    let dropped = sink.dropped();
    assert!(dropped > 0, "nothing was dropped");
    drop(sink);

    let lines = read_lines(&mut reader);
    assert!(lines.len() < 5_000);
    for line in &lines {
        parse(line);
    }
    // Reports are cumulative; the last one counts every drop.
    let report = lines
        .iter()
        .rev()
        .map(|line| parse(line))
        .find(|object| object.contains_key("dropped_total"))
        .expect("a line reports the drops");
    assert_eq!(report["@level"], "warn");
    assert_eq!(report["dropped_total"], dropped);
}
