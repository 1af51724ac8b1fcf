//! Durations as the original accepts them.
//!
//! Forms:
//! - units, largest first, each at most once, optionally separated by spaces: `1w`, `3d`,
//!   `1h`, `42m`, `42s`, `741ms`, `7h2m3s`, `1d 12h`;
//! - .NET's constant format: `hh:mm`, `hh:mm:ss`, `hh:mm:ss.fff` (up to 9 fraction digits),
//!   `d.hh:mm:ss[.fff]` with hours 0–23 and minutes/seconds 0–59;
//! - a bare whole number: seconds (the original read `"30"` as thirty *days* through .NET's
//!   parser, surely never intended; a number value means seconds too).
//!
//! An empty string means "not set", as in the original.

use std::time::Duration;

use nomad_plugin::cty::{Reader, raw_kind};

use crate::error::ConfigError;

const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a duration string; `Ok(None)` for an empty or blank string.
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        format!(
            "expected a duration like \"1h30m\", \"90s\", \"741ms\" or \"hh:mm:ss\", got {text:?}"
        )
    };
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = trimmed.parse().map_err(|_| invalid())?;
        return Ok(Some(Duration::from_secs(seconds)));
    }
    if trimmed.contains(':') {
        return parse_clock(trimmed).map(Some).ok_or_else(invalid);
    }
    parse_units(trimmed).map(Some).ok_or_else(invalid)
}

fn parse_units(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the smallest unit used so far: units must get smaller.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = rest[letters..].trim_start();
        let index = UNITS.iter().position(|(name, _)| *name == unit)?;
        if index < next_unit {
            return None;
        }
        next_unit = index + 1;
        total_ms = total_ms.checked_add(amount.checked_mul(UNITS[index].1)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

fn parse_clock(text: &str) -> Option<Duration> {
    // `d.hh:mm:ss.fff`: a dot before the first colon separates days.
    let first_colon = text.find(':')?;
    let (days, clock) = match text[..first_colon].find('.') {
        Some(dot) => (text[..dot].parse::<u64>().ok()?, &text[dot + 1..]),
        None => (0, text),
    };
    let (clock, fraction) = match clock.rfind('.') {
        Some(dot) => (&clock[..dot], Some(&clock[dot + 1..])),
        None => (clock, None),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let number = |s: &str, max: u64| -> Option<u64> {
        if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u64>().ok().filter(|v| *v <= max)
    };
    let (hours, minutes, seconds) = match parts.as_slice() {
        [h, m] if fraction.is_none() => (number(h, 23)?, number(m, 59)?, 0),
        [h, m, s] => (number(h, 23)?, number(m, 59)?, number(s, 59)?),
        _ => return None,
    };
    let nanos = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<9}");
            padded.parse::<u32>().ok()?
        }
        Some(_) => return None,
    };
    let whole = days
        .checked_mul(86_400)?
        .checked_add(hours * 3600 + minutes * 60 + seconds)?;
    Some(Duration::new(whole, nanos))
}

/// Reads an optional duration field: a duration string, or a number of seconds.
pub fn read_duration(reader: &Reader<'_>) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = reader.raw() else {
        return Ok(None);
    };
    if raw.is_str() {
        let text = reader.string()?.unwrap_or_default();
        return parse_duration(&text).map_err(|m| ConfigError::new(reader.path(), m));
    }
    if raw.is_number() {
        let Some(seconds) = reader.number()? else {
            return Ok(None);
        };
        if seconds.is_negative() {
            return Err(ConfigError::new(
                reader.path(),
                format!("expected a non-negative number of seconds, got {seconds}"),
            ));
        }
        return Duration::try_from_secs_f64(seconds.to_f64())
            .map(Some)
            .map_err(|_| {
                ConfigError::new(reader.path(), format!("{seconds} seconds is out of range"))
            });
    }
    Err(ConfigError::new(
        reader.path(),
        format!("expected a duration, got {}", raw_kind(raw)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Duration {
        match parse_duration(text) {
            Ok(Some(value)) => value,
            other => panic!("{text:?} should parse, got {other:?}"),
        }
    }

    #[test]
    fn unit_forms() {
        assert_eq!(d("1w"), Duration::from_secs(7 * 86_400));
        assert_eq!(d("3d"), Duration::from_secs(3 * 86_400));
        assert_eq!(d("0h"), Duration::ZERO);
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("42m"), Duration::from_secs(42 * 60));
        assert_eq!(d("42s"), Duration::from_secs(42));
        assert_eq!(d("741ms"), Duration::from_millis(741));
        assert_eq!(d("7h2m"), Duration::from_secs(7 * 3600 + 2 * 60));
        assert_eq!(d("7h2m3s"), Duration::from_secs(7 * 3600 + 2 * 60 + 3));
        assert_eq!(d("1d 12h"), Duration::from_secs(36 * 3600));
        assert_eq!(d("1m500ms"), Duration::from_millis(60_500));
        assert_eq!(d("1740m"), Duration::from_secs(1740 * 60));
    }

    #[test]
    fn clock_forms() {
        assert_eq!(d("00:00"), Duration::ZERO);
        assert_eq!(d("04:51"), Duration::from_secs(4 * 3600 + 51 * 60));
        assert_eq!(d("04:51:23"), Duration::from_secs(4 * 3600 + 51 * 60 + 23));
        assert_eq!(
            d("04:51:23.740"),
            Duration::from_millis((4 * 3600 + 51 * 60 + 23) * 1000 + 740)
        );
        assert_eq!(
            d("07.04:51:23"),
            Duration::from_secs(7 * 86_400 + 4 * 3600 + 51 * 60 + 23)
        );
        assert_eq!(d("1.00:00:00.5"), Duration::from_millis(86_400_500));
    }

    #[test]
    fn bare_numbers_are_seconds_and_blank_is_unset() {
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(parse_duration(""), Ok(None));
        assert_eq!(parse_duration("  "), Ok(None));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "abc",
            "1x",
            "h",
            "1h1h",
            "1m1h",
            "-1s",
            "1.5h",
            "24:00",
            "12:60",
            "12:00:60",
            "1:2:3:4",
            "12:00.5",
            "1.2.3:00",
            "99999999999999999999w",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(format!(
                    "expected a duration like \"1h30m\", \"90s\", \"741ms\" or \"hh:mm:ss\", got {bad:?}"
                )),
                "input {bad:?}"
            );
        }
    }

    #[test]
    fn reads_strings_and_numbers_naming_the_field() {
        let text = rmpv::Value::from("20m");
        assert_eq!(
            read_duration(&Reader::at(&text, "p.idle_timeout")),
            Ok(Some(Duration::from_secs(1200)))
        );
        let seconds = rmpv::Value::from(30);
        assert_eq!(
            read_duration(&Reader::at(&seconds, "x")),
            Ok(Some(Duration::from_secs(30)))
        );
        let half = rmpv::Value::F64(1.5);
        assert_eq!(
            read_duration(&Reader::at(&half, "x")),
            Ok(Some(Duration::from_millis(1500)))
        );
        let negative = rmpv::Value::from(-3);
        assert_eq!(
            read_duration(&Reader::at(&negative, "application_pool[0].idle_timeout"))
                .map_err(|e| e.to_string()),
            Err("application_pool[0].idle_timeout: expected a non-negative number of seconds, got -3".into())
        );
        let wrong = rmpv::Value::Boolean(true);
        assert_eq!(
            read_duration(&Reader::at(&wrong, "fingerprint_interval")).map_err(|e| e.to_string()),
            Err("fingerprint_interval: expected a duration, got bool".into())
        );
        let bad = rmpv::Value::from("soon");
        assert_eq!(
            read_duration(&Reader::at(&bad, "a.b")).map_err(|e| e.to_string()),
            Err("a.b: expected a duration like \"1h30m\", \"90s\", \"741ms\" or \"hh:mm:ss\", got \"soon\"".into())
        );
    }
}
