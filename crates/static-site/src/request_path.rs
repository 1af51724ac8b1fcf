//! Decoding and checking the request path below an application's alias.
//!
//! The host hands us the still-percent-encoded remainder. We decode it segment by segment and refuse
//! anything that could name a file outside the root or that a file system would read differently from
//! the way we checked it: encoded separators, NUL, invalid UTF-8, backslashes and `.`/`..` segments.
//! Clients normalise dot segments before sending, so a dot segment here is an attack or a broken client
//! either way, and the answer is 400.

use std::fmt;

/// A checked request path: decoded segments that are safe to join below the root.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestPath {
    /// Decoded, non-empty segments; none is `.` or `..` and none contains `/`, `\` or NUL.
    pub(crate) segments: Vec<String>,
    /// Whether the request named a directory (ends with `/`, or is empty).
    pub(crate) trailing_slash: bool,
    /// The last non-empty segment as it was sent, still encoded, for a relative redirect.
    pub(crate) last_raw_segment: Option<String>,
}

/// Why a request path was refused; every variant is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a separator hidden from our segment split.
    EncodedSeparator,
    /// A NUL byte, literal or encoded.
    Nul,
    /// The decoded bytes are not UTF-8.
    InvalidUtf8,
    /// A `.` or `..` segment, literal or encoded.
    DotSegment,
    /// A literal backslash.
    Backslash,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "malformed percent-encoding in path",
            PathError::EncodedSeparator => "encoded path separator in path",
            PathError::Nul => "nul byte in path",
            PathError::InvalidUtf8 => "path is not valid utf-8",
            PathError::DotSegment => "dot segment in path",
            PathError::Backslash => "backslash in path",
        })
    }
}

/// Decodes and checks `remainder` (e.g. `/css/site%20main.css`).
///
/// An empty remainder names the root directory, as `/` does.
pub(crate) fn parse(remainder: &str) -> Result<RequestPath, PathError> {
    let mut segments = Vec::new();
    let mut last_raw_segment = None;
    for raw in remainder.split('/') {
        if raw.is_empty() {
            continue;
        }
        let decoded = decode_segment(raw)?;
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
        segments.push(decoded);
        last_raw_segment = Some(raw);
    }
    Ok(RequestPath {
        segments,
        trailing_slash: remainder.is_empty() || remainder.ends_with('/'),
        last_raw_segment: last_raw_segment.map(str::to_owned),
    })
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'%' => {
                let high = bytes.get(i + 1).and_then(|b| hex_value(*b));
                let low = bytes.get(i + 2).and_then(|b| hex_value(*b));
                match (high, low) {
                    (Some(high), Some(low)) => {
                        i += 3;
                        let byte = high << 4 | low;
                        if byte == b'/' || byte == b'\\' {
                            return Err(PathError::EncodedSeparator);
                        }
                        byte
                    }
                    _ => return Err(PathError::BadEscape),
                }
            }
            b'\\' => return Err(PathError::Backslash),
            other => {
                i += 1;
                other
            }
        };
        if byte == 0 {
            return Err(PathError::Nul);
        }
        decoded.push(byte);
    }
    String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(remainder: &str) -> Vec<String> {
        match parse(remainder) {
            Ok(path) => path.segments,
            Err(error) => panic!("{remainder:?} was refused: {error}"),
        }
    }

    #[test]
    fn plain_and_encoded_segments_are_decoded() {
        assert_eq!(segments("/a/b.txt"), ["a", "b.txt"]);
        assert_eq!(segments("/site%20main.css"), ["site main.css"]);
        assert_eq!(segments("/%C3%A9t%C3%A9"), ["été"]);
        assert_eq!(segments("/%2e%2eish"), ["..ish"]);
        assert_eq!(segments("/a//b"), ["a", "b"]);
        assert!(segments("").is_empty());
        assert!(segments("/").is_empty());
    }

    #[test]
    fn trailing_slash_and_raw_last_segment_are_kept() {
        let path = parse("/docs/my%20dir").unwrap();
        assert!(!path.trailing_slash);
        assert_eq!(path.last_raw_segment.as_deref(), Some("my%20dir"));
        assert!(parse("/docs/").unwrap().trailing_slash);
        assert!(parse("").unwrap().trailing_slash);
        assert_eq!(parse("/").unwrap().last_raw_segment, None);
    }

    #[test]
    fn attacks_are_refused() {
        let cases = [
            ("/../etc/passwd", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/%2e%2e/etc/passwd", PathError::DotSegment),
            ("/%2E%2E/x", PathError::DotSegment),
            ("/.%2e/x", PathError::DotSegment),
            ("/./x", PathError::DotSegment),
            ("/a%2F..%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a\\..\\b", PathError::Backslash),
            ("/a%00b", PathError::Nul),
            ("/a\0b", PathError::Nul),
            ("/a%ffb", PathError::InvalidUtf8),
            ("/a%zzb", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
        ];
        for (remainder, expected) in cases {
            assert_eq!(parse(remainder), Err(expected), "{remainder:?}");
        }
    }
}
