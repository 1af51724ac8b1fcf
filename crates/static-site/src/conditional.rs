//! Conditional requests and byte ranges (RFC 9110 sections 13 and 14), as pure functions of the request
//! headers and a representation's validators.
//!
//! Preconditions are evaluated in the RFC's order: `If-Match`, then `If-Unmodified-Since` when
//! `If-Match` is absent, then `If-None-Match`, then `If-Modified-Since` when `If-None-Match` is absent.
//! Only a single byte range is served as 206; a request for several ranges gets the whole file as 200,
//! which the RFC allows. A syntactically invalid `Range` is ignored, an unsatisfiable one is 416.

use std::time::SystemTime;

use http::HeaderMap;
use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};

/// What the preconditions say about a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Send the representation.
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: `If-Match` or `If-Unmodified-Since` failed.
    Failed,
}

/// The part of the representation a GET asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// The whole representation, as 200.
    Full,
    /// Bytes `start..=end`, as 206.
    Partial { start: u64, end: u64 },
    /// 416: no byte of the range exists.
    Unsatisfiable,
}

/// Whether the request has any header this module reads. Most requests have none, and one pass over
/// their few headers is cheaper than six hashed lookups.
pub(crate) fn any_present(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        name == IF_MATCH
            || name == IF_NONE_MATCH
            || name == IF_MODIFIED_SINCE
            || name == IF_UNMODIFIED_SINCE
            || name == RANGE
            || name == IF_RANGE
    })
}

/// Evaluates the preconditions against our strong `etag` (with quotes) and `modified` time.
pub(crate) fn evaluate(headers: &HeaderMap, etag: &str, modified: SystemTime) -> Precondition {
    if headers.contains_key(IF_MATCH) {
        if !headers
            .get_all(IF_MATCH)
            .iter()
            .any(|value| etag_list_matches(value.as_bytes(), etag, Comparison::Strong))
        {
            return Precondition::Failed;
        }
    } else if let Some(since) = header_date(headers, IF_UNMODIFIED_SINCE)
        && modified > since
    {
        return Precondition::Failed;
    }
    if headers.contains_key(IF_NONE_MATCH) {
        if headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .any(|value| etag_list_matches(value.as_bytes(), etag, Comparison::Weak))
        {
            return Precondition::NotModified;
        }
    } else if let Some(since) = header_date(headers, IF_MODIFIED_SINCE)
        && modified <= since
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Reads `Range` and `If-Range` for a representation of `len` bytes.
pub(crate) fn range(
    headers: &HeaderMap,
    etag: &str,
    modified: SystemTime,
    len: u64,
) -> RangeRequest {
    let Some(value) = headers.get(RANGE) else {
        return RangeRequest::Full;
    };
    if let Some(if_range) = headers.get(IF_RANGE)
        && !if_range_matches(if_range.as_bytes(), etag, modified)
    {
        return RangeRequest::Full;
    }
    let Ok(value) = value.to_str() else {
        return RangeRequest::Full;
    };
    parse_range(value, len)
}

fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some((unit, specs)) = value.split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let mut specs = specs
        .split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeRequest::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Some(suffix) = parse_number(last) else {
            return RangeRequest::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: len.saturating_sub(suffix),
            end: len - 1,
        };
    }
    let Some(start) = parse_number(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match parse_number(last) {
            Some(end) if end >= start => Some(end),
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.map_or(len - 1, |end| end.min(len - 1)),
    }
}

fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn if_range_matches(value: &[u8], etag: &str, modified: SystemTime) -> bool {
    let value = value.trim_ascii();
    if value.starts_with(b"W/") {
        // A weak validator never allows a partial response.
        return false;
    }
    if value.starts_with(b"\"") {
        return value == etag.as_bytes();
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| httpdate::parse_http_date(text).ok())
        .is_some_and(|date| date == modified)
}

fn header_date(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let text = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// Whether a comma-separated list of entity tags (or `*`) matches our strong `etag`.
///
/// A list we cannot parse matches only as far as it was read, so garbage never produces a 304 by
/// accident.
fn etag_list_matches(list: &[u8], etag: &str, comparison: Comparison) -> bool {
    let mut rest = list;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        if rest.starts_with(b"*") {
            return true;
        }
        let (weak, tagged) = match rest.strip_prefix(b"W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        if !tagged.starts_with(b"\"") {
            return false;
        }
        let Some(close) = tagged[1..].iter().position(|&b| b == b'"') else {
            return false;
        };
        let tag = &tagged[..close + 2];
        if tag == etag.as_bytes() && (comparison == Comparison::Weak || !weak) {
            return true;
        }
        rest = &tagged[close + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    const ETAG: &str = "\"1f-2a\"";

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn modified() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn date(time: SystemTime) -> String {
        httpdate::fmt_http_date(time)
    }

    #[test]
    fn etag_lists_are_compared() {
        let weak = Comparison::Weak;
        let strong = Comparison::Strong;
        assert!(etag_list_matches(br#""1f-2a""#, ETAG, weak));
        assert!(etag_list_matches(br#""x", W/"1f-2a""#, ETAG, weak));
        assert!(!etag_list_matches(br#""x", W/"1f-2a""#, ETAG, strong));
        assert!(etag_list_matches(br#""x,y" , "1f-2a""#, ETAG, strong));
        assert!(etag_list_matches(b"*", ETAG, strong));
        assert!(!etag_list_matches(b"\"1f-2", ETAG, weak));
        assert!(!etag_list_matches(b"1f-2a", ETAG, weak));
        assert!(!etag_list_matches(b"", ETAG, weak));
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let later = date(modified() + Duration::from_secs(60));
        let cases = [
            (headers(&[(IF_NONE_MATCH, ETAG)]), Precondition::NotModified),
            (
                headers(&[(IF_NONE_MATCH, "W/\"1f-2a\"")]),
                Precondition::NotModified,
            ),
            (headers(&[(IF_NONE_MATCH, "*")]), Precondition::NotModified),
            (
                headers(&[(IF_NONE_MATCH, "\"other\"")]),
                Precondition::Proceed,
            ),
            (
                headers(&[(IF_NONE_MATCH, "\"other\""), (IF_MODIFIED_SINCE, &later)]),
                Precondition::Proceed,
            ),
            (
                headers(&[(IF_MODIFIED_SINCE, &later)]),
                Precondition::NotModified,
            ),
            (
                headers(&[(IF_MODIFIED_SINCE, &date(modified()))]),
                Precondition::NotModified,
            ),
            (
                headers(&[(
                    IF_MODIFIED_SINCE,
                    &date(modified() - Duration::from_secs(1)),
                )]),
                Precondition::Proceed,
            ),
            (
                headers(&[(IF_MODIFIED_SINCE, "yesterday")]),
                Precondition::Proceed,
            ),
            (headers(&[(IF_MATCH, "\"other\"")]), Precondition::Failed),
            (headers(&[(IF_MATCH, "W/\"1f-2a\"")]), Precondition::Failed),
            (headers(&[(IF_MATCH, ETAG)]), Precondition::Proceed),
            (
                headers(&[(
                    IF_UNMODIFIED_SINCE,
                    &date(modified() - Duration::from_secs(1)),
                )]),
                Precondition::Failed,
            ),
            (headers(&[]), Precondition::Proceed),
        ];
        for (request, expected) in cases {
            assert_eq!(
                evaluate(&request, ETAG, modified()),
                expected,
                "{request:?}"
            );
        }
    }

    #[test]
    fn single_ranges_are_parsed() {
        let full = RangeRequest::Full;
        let partial = |start, end| RangeRequest::Partial { start, end };
        let cases = [
            ("bytes=0-9", partial(0, 9)),
            ("bytes=5-", partial(5, 99)),
            ("bytes=-10", partial(90, 99)),
            ("bytes=-1000", partial(0, 99)),
            ("bytes=90-1000", partial(90, 99)),
            ("bytes= 1-2 ", partial(1, 2)),
            ("BYTES=1-2", partial(1, 2)),
            ("bytes=100-", RangeRequest::Unsatisfiable),
            ("bytes=100-200", RangeRequest::Unsatisfiable),
            ("bytes=-0", RangeRequest::Unsatisfiable),
            ("bytes=5-4", full),
            ("bytes=0-1,5-6", full),
            ("bytes=a-b", full),
            ("bytes=-", full),
            ("items=0-1", full),
            ("bytes", full),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_range(value, 100), expected, "{value}");
        }
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn if_range_gates_the_range() {
        let partial = RangeRequest::Partial { start: 0, end: 0 };
        let cases = [
            (ETAG.to_owned(), partial),
            ("\"other\"".to_owned(), RangeRequest::Full),
            ("W/\"1f-2a\"".to_owned(), RangeRequest::Full),
            (date(modified()), partial),
            (
                date(modified() + Duration::from_secs(1)),
                RangeRequest::Full,
            ),
        ];
        for (if_range, expected) in cases {
            let request = headers(&[(RANGE, "bytes=0-0"), (IF_RANGE, &if_range)]);
            assert_eq!(
                range(&request, ETAG, modified(), 10),
                expected,
                "{if_range}"
            );
        }
    }
}
