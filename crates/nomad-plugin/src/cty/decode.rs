//! Defensive decoding of cty msgpack bytes into an [`rmpv::Value`] tree.
//!
//! A Nomad client only sends known values encoded against their own type, but a decoder must
//! not depend on that: integers of any width, float32/float64 and decimal strings are all
//! numbers (the typed [`super::Reader`] sorts that out), nil may appear anywhere, unknown
//! values (ext type 0, or 0x0c for refined unknowns in newer go-cty) are read as nil, and the
//! `[bin typeJSON, value]` wrapper go-cty writes for values under type `any` is unwrapped.

use rmpv::Value as Raw;

/// Bytes that are not one complete msgpack value.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not valid msgpack (truncated, bad marker, nesting too deep).
    #[error("malformed msgpack: {0}")]
    Malformed(String),
    /// A complete value was followed by more bytes.
    #[error("{count} unexpected bytes after the msgpack value")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
}

/// Ext type go-cty writes for an unknown value.
const EXT_UNKNOWN: i8 = 0;
/// Ext type newer go-cty writes for an unknown value with refinements.
const EXT_UNKNOWN_REFINED: i8 = 0x0c;

/// Decodes one msgpack value and normalises it (unknowns → nil, dynamic wrappers removed).
/// Empty input decodes as nil: Nomad sends no bytes when there is no configuration at all.
pub fn decode(bytes: &[u8]) -> Result<Raw, DecodeError> {
    if bytes.is_empty() {
        return Ok(Raw::Nil);
    }
    let mut rest = bytes;
    let value =
        rmpv::decode::read_value(&mut rest).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    Ok(normalize(value))
}

/// Applies the defensive rules to an already decoded tree.
pub fn normalize(value: Raw) -> Raw {
    match value {
        Raw::Ext(kind, _) if kind == EXT_UNKNOWN || kind == EXT_UNKNOWN_REFINED => Raw::Nil,
        Raw::Array(items) => {
            if is_dynamic_wrapper(&items) {
                let mut items = items;
                let inner = items.pop().unwrap_or(Raw::Nil);
                return normalize(inner);
            }
            Raw::Array(items.into_iter().map(normalize).collect())
        }
        Raw::Map(entries) => Raw::Map(
            entries
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `[bin typeJSON, value]`: go-cty never writes binary data otherwise, and the type JSON is a
/// JSON string (`"string"`) or array (`["list","string"]`).
fn is_dynamic_wrapper(items: &[Raw]) -> bool {
    let [Raw::Binary(type_json), _] = items else {
        return false;
    };
    matches!(
        serde_json::from_slice::<serde_json::Value>(type_json),
        Ok(serde_json::Value::String(_) | serde_json::Value::Array(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_is_nil() {
        assert_eq!(decode(&[]).expect("empty is fine"), Raw::Nil);
    }

    #[test]
    fn unknowns_become_nil_and_wrappers_unwrap() {
        // {"a": unknown, "b": [bin "\"string\"", "x"], "c": refined unknown}
        let mut bytes = vec![
            0x83, 0xa1, b'a', 0xd4, 0x00, 0x00, 0xa1, b'b', 0x92, 0xc4, 8,
        ];
        bytes.extend_from_slice(b"\"string\"");
        bytes.extend_from_slice(&[0xa1, b'x', 0xa1, b'c', 0xd4, 0x0c, 0x00]);
        let value = decode(&bytes).expect("valid msgpack");
        assert_eq!(
            value,
            Raw::Map(vec![
                (Raw::from("a"), Raw::Nil),
                (Raw::from("b"), Raw::from("x")),
                (Raw::from("c"), Raw::Nil),
            ])
        );
    }

    #[test]
    fn binary_pairs_that_are_not_type_json_stay() {
        let bytes = [0x92, 0xc4, 0x01, b'x', 0x01];
        let value = decode(&bytes).expect("valid msgpack");
        assert_eq!(
            value,
            Raw::Array(vec![Raw::Binary(vec![b'x']), Raw::from(1)])
        );
    }

    #[test]
    fn rejects_truncated_and_trailing_bytes() {
        assert!(matches!(
            decode(&[0x92, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        let err = decode(&[0x01, 0x02, 0x03]).expect_err("two extra bytes");
        assert_eq!(
            err.to_string(),
            "2 unexpected bytes after the msgpack value"
        );
    }
}
