//! A msgpack encoder that writes exactly what go-cty's `msgpack.Marshal` writes.
//!
//! The wire rules (protocol doc §4): objects as maps with every attribute, keys sorted
//! bytewise, nulls `0xc0`; lists, sets and tuples as arrays; maps with sorted keys; strings in
//! their smallest str form; numbers as the smallest int form (unsigned family when
//! non-negative) when they are an exact int64, else `0xcb` when an exact float64, else a
//! decimal string. A value under type `any` is wrapped as `[bin typeJSON, value]`.
//!
//! Two entry points: [`encode`] writes a value with its own type, which is what a Nomad
//! client does (`msgpack.Marshal(val, val.Type())`, so no dynamic wrappers appear); [`marshal`]
//! writes it against an explicit type, converting primitives the way cty does and wrapping
//! values under `any`.
//!
//! Set order follows cty: strings bytewise, numbers ascending, `false` before `true`, nulls
//! last; sets of compound values are ordered by cty's hash string, which we reproduce except
//! for numbers needing more than 10 significant digits and strings with escapes Go's `%q`
//! writes differently (non-printable characters).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::number::{Number, WireNumber};
use super::value::{Type, Value};

/// A value that does not fit the type it is marshalled against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct EncodeError {
    /// Where in the value, e.g. `port[0].to`.
    pub path: String,
    /// What does not fit.
    pub message: String,
}

/// Encodes `value` with its own type, as a Nomad client encodes a decoded `config {}` block.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(value, &mut out);
    out
}

/// Encodes `value` against `ty` as go-cty's `msgpack.Marshal(value, ty)` does: primitives are
/// converted (number ↔ string, bool ↔ string), object attributes missing from the value are
/// written as null, attributes not in the type are an error, and a non-null value under
/// `any` is wrapped as `[typeJSON, value]` using [`Value::implied_type`] (typed nulls are not
/// modelled: every null is plain `0xc0`).
pub fn marshal(value: &Value, ty: &Type) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    write_typed(value, ty, "", &mut out)?;
    Ok(out)
}

/// Encodes `value` against type `any` when its real type is `actual`:
/// `[typeJSON(actual), marshal(value, actual)]`. Use this when a null inside the value must
/// keep its declared type in the type JSON.
pub fn marshal_dynamic(value: &Value, actual: &Type) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    write_array_len(2, &mut out);
    write_bin(actual.to_json().as_bytes(), &mut out);
    write_typed(value, actual, "", &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::List(items) => {
            write_array_len(items.len(), out);
            for item in items {
                write_value(item, out);
            }
        }
        Value::Set(items) => {
            let ordered = set_order(items);
            write_array_len(ordered.len(), out);
            for item in ordered {
                write_value(item, out);
            }
        }
        Value::Map(entries) | Value::Object(entries) => {
            write_map_len(entries.len(), out);
            for (key, item) in entries {
                write_str(key, out);
                write_value(item, out);
            }
        }
    }
}

fn child(path: &str, step: &str) -> String {
    if path.is_empty() {
        step.to_owned()
    } else {
        format!("{path}.{step}")
    }
}

fn write_typed(value: &Value, ty: &Type, path: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mismatch = |expected: &Type| EncodeError {
        path: path.to_owned(),
        message: format!("expected {expected}, got {}", value.kind()),
    };
    if value.is_null() {
        out.push(0xc0);
        return Ok(());
    }
    match ty {
        Type::Dynamic => {
            let actual = value.implied_type();
            write_array_len(2, out);
            write_bin(actual.to_json().as_bytes(), out);
            write_typed(value, &actual, path, out)
        }
        Type::String => match value {
            Value::String(s) => {
                write_str(s, out);
                Ok(())
            }
            Value::Number(n) => {
                write_str(&n.to_string(), out);
                Ok(())
            }
            Value::Bool(b) => {
                write_str(if *b { "true" } else { "false" }, out);
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
        Type::Number => match value {
            Value::Number(n) => {
                write_number(n, out);
                Ok(())
            }
            Value::String(s) => match Number::parse(s) {
                Ok(n) => {
                    write_number(&n, out);
                    Ok(())
                }
                Err(_) => Err(EncodeError {
                    path: path.to_owned(),
                    message: format!("expected number, got string {s:?}"),
                }),
            },
            _ => Err(mismatch(ty)),
        },
        Type::Bool => match value {
            Value::Bool(b) => {
                out.push(if *b { 0xc3 } else { 0xc2 });
                Ok(())
            }
            Value::String(s) if s == "true" || s == "false" => {
                out.push(if s == "true" { 0xc3 } else { 0xc2 });
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
        Type::List(element) => match value {
            Value::List(items) | Value::Set(items) => {
                write_array_len(items.len(), out);
                for (i, item) in items.iter().enumerate() {
                    write_typed(item, element, &format!("{path}[{i}]"), out)?;
                }
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
        Type::Set(element) => match value {
            Value::List(items) | Value::Set(items) => {
                let ordered = set_order(items);
                write_array_len(ordered.len(), out);
                for (i, item) in ordered.into_iter().enumerate() {
                    write_typed(item, element, &format!("{path}[{i}]"), out)?;
                }
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
        Type::Tuple(elements) => match value {
            Value::List(items) if items.len() == elements.len() => {
                write_array_len(items.len(), out);
                for (i, (item, element)) in items.iter().zip(elements).enumerate() {
                    write_typed(item, element, &format!("{path}[{i}]"), out)?;
                }
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
        Type::Map(element) => match value {
            Value::Map(entries) | Value::Object(entries) => {
                write_map_len(entries.len(), out);
                for (key, item) in entries {
                    write_str(key, out);
                    write_typed(item, element, &format!("{path}[{key:?}]"), out)?;
                }
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
        Type::Object(attributes) => match value {
            Value::Map(entries) | Value::Object(entries) => {
                if let Some(extra) = entries.keys().find(|k| !attributes.contains_key(*k)) {
                    return Err(EncodeError {
                        path: child(path, extra),
                        message: "attribute is not part of the object type".into(),
                    });
                }
                write_map_len(attributes.len(), out);
                for (name, attr_ty) in attributes {
                    write_str(name, out);
                    let item = entries.get(name).unwrap_or(&Value::Null);
                    write_typed(item, attr_ty, &child(path, name), out)?;
                }
                Ok(())
            }
            _ => Err(mismatch(ty)),
        },
    }
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    match n.wire_form() {
        WireNumber::Int(i) => write_int(i, out),
        WireNumber::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        WireNumber::Decimal(s) => write_str(&s, out),
    }
}

/// vmihailenco/msgpack's `EncodeInt`: non-negative values take the unsigned family.
fn write_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        let u = i as u64;
        if u <= 0x7f {
            out.push(u as u8);
        } else if u <= u64::from(u8::MAX) {
            out.push(0xcc);
            out.push(u as u8);
        } else if u <= u64::from(u16::MAX) {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= u64::from(u32::MAX) {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.push(0xd0);
        out.push(i as i8 as u8);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.push(0xd9);
        out.push(len as u8);
    } else if len < 65536 {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_bin(bytes: &[u8], out: &mut Vec<u8>) {
    let len = bytes.len();
    if len < 256 {
        out.push(0xc4);
        out.push(len as u8);
    } else if len < 65536 {
        out.push(0xc5);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

fn write_array_len(len: usize, out: &mut Vec<u8>) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len < 65536 {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn write_map_len(len: usize, out: &mut Vec<u8>) {
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0xde);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// The elements of a set in cty's iteration order, duplicates removed.
fn set_order(items: &[Value]) -> Vec<&Value> {
    let mut ordered: Vec<&Value> = items.iter().collect();
    ordered.sort_by(|a, b| set_less(a, b));
    ordered.dedup_by(|a, b| a == b);
    ordered
}

fn set_less(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Number(x), Value::Number(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => set_hash(a).cmp(&set_hash(b)),
    }
}

/// cty's set hash string of a value (`appendSetHashBytes`).
fn set_hash(value: &Value) -> Vec<u8> {
    let mut out = String::new();
    append_set_hash(value, &mut out);
    out.into_bytes()
}

fn append_set_hash(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push('~'),
        Value::Bool(b) => out.push(if *b { 'T' } else { 'F' }),
        Value::Number(n) => out.push_str(&go_big_float_string(n)),
        Value::String(s) => out.push_str(&go_quote(s)),
        Value::Map(entries) => {
            out.push('{');
            for (key, item) in entries {
                out.push_str(&go_quote(key));
                out.push(':');
                append_set_hash(item, out);
                out.push(';');
            }
            out.push('}');
        }
        Value::List(items) => {
            out.push('[');
            for item in items {
                append_set_hash(item, out);
                out.push(';');
            }
            out.push(']');
        }
        Value::Set(items) => {
            out.push('[');
            for item in set_order(items) {
                append_set_hash(item, out);
                out.push(';');
            }
            out.push(']');
        }
        Value::Object(attrs) => {
            out.push('<');
            for item in attrs.values() {
                append_set_hash(item, out);
                out.push(';');
            }
            out.push('>');
        }
    }
}

/// Go's `big.Float.String()`: `%.10g`, trailing zeros removed, exponent with a sign and at
/// least two digits. Computed from the nearest double, which is exact for up to 10 digits.
fn go_big_float_string(n: &Number) -> String {
    let f = n.to_f64();
    if f.is_infinite() {
        return if f < 0.0 {
            "-Inf".into()
        } else {
            "+Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:.9e}");
    let Some((mantissa, exponent)) = sci.split_once('e') else {
        return sci;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if !(-4..10).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        let decimals = (9 - exponent).max(0) as usize;
        trim(&format!("{f:.decimals$}"))
    }
}

/// Go's `%q` for printable text: double quotes, `\"` and `\\`, and the common escapes.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds a map value from `(key, value)` pairs (keys end up sorted).
pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The protocol doc's §4 example: spec `Object{args: list(string), command: string,
    /// labels: list(map(string)), port: BlockList{label: string, to: number}}`, config
    /// `command = "x"` and one `port { label = "http" to = 8080 }`.
    #[test]
    fn reproduces_the_protocol_doc_example() {
        let ty = Type::object([
            ("args", Type::list(Type::String)),
            ("command", Type::String),
            ("labels", Type::list(Type::map(Type::String))),
            (
                "port",
                Type::list(Type::object([
                    ("label", Type::String),
                    ("to", Type::Number),
                ])),
            ),
        ]);
        let value = Value::object([
            ("command", Value::string("x")),
            (
                "port",
                Value::List(vec![Value::object([
                    ("label", Value::string("http")),
                    ("to", Value::number(8080i64)),
                ])]),
            ),
        ]);
        let expected =
            "84 a4 61 72 67 73 c0 a7 63 6f 6d 6d 61 6e 64 a1 78 a6 6c 61 62 65 6c 73 c0 \
                        a4 70 6f 72 74 91 82 a5 6c 61 62 65 6c a4 68 74 74 70 a2 74 6f cd 1f 90"
                .replace(' ', "");
        let bytes = marshal(&value, &ty).expect("value fits its type");
        assert_eq!(hex(&bytes), expected);

        // With every attribute present the value's own type gives the same bytes.
        let complete = Value::object([
            ("args", Value::Null),
            ("command", Value::string("x")),
            ("labels", Value::Null),
            (
                "port",
                Value::List(vec![Value::object([
                    ("label", Value::string("http")),
                    ("to", Value::number(8080i64)),
                ])]),
            ),
        ]);
        assert_eq!(hex(&encode(&complete)), expected);
    }

    #[test]
    fn integers_take_the_smallest_form() {
        let cases: [(i64, &str); 14] = [
            (0, "00"),
            (127, "7f"),
            (128, "cc80"),
            (255, "ccff"),
            (256, "cd0100"),
            (65535, "cdffff"),
            (65536, "ce00010000"),
            (4_294_967_296, "cf0000000100000000"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-129, "d1ff7f"),
            (-32769, "d2ffff7fff"),
            (-2_147_483_649, "d3ffffffff7fffffff"),
        ];
        for (i, wire) in cases {
            assert_eq!(hex(&encode(&Value::number(i))), wire, "value {i}");
        }
    }

    #[test]
    fn non_integers_are_doubles_or_decimal_strings() {
        let half = Value::Number(Number::parse("0.5").expect("literal"));
        assert_eq!(hex(&encode(&half)), "cb3fe0000000000000");
        let tenth = Value::Number(Number::parse("0.1").expect("literal"));
        assert_eq!(hex(&encode(&tenth)), "a3302e31");
    }

    #[test]
    fn strings_take_the_smallest_form() {
        assert_eq!(hex(&encode(&Value::string(""))), "a0");
        assert_eq!(&encode(&Value::string("a".repeat(31)))[..1], [0xbf]);
        assert_eq!(&encode(&Value::string("a".repeat(32)))[..2], [0xd9, 32]);
        assert_eq!(&encode(&Value::string("a".repeat(256)))[..3], [0xda, 1, 0]);
    }

    #[test]
    fn sets_use_cty_order() {
        let set = Value::Set(vec![
            Value::string("b"),
            Value::string("a"),
            Value::string("b"),
        ]);
        assert_eq!(hex(&encode(&set)), "92a161a162");
        let numbers = Value::List(vec![Value::number(10i64), Value::number(2i64)]);
        assert_eq!(
            hex(&marshal(&numbers, &Type::set(Type::Number)).expect("fits")),
            "92020a"
        );
    }

    #[test]
    fn marshal_converts_and_wraps() {
        let ty = Type::object([
            ("n", Type::Number),
            ("s", Type::String),
            ("d", Type::Dynamic),
        ]);
        let value = Value::object([
            ("n", Value::string("5")),
            ("s", Value::number(7i64)),
            ("d", Value::Bool(true)),
        ]);
        let bytes = marshal(&value, &ty).expect("convertible");
        assert_eq!(
            hex(&bytes),
            format!("83a16492c406{}c3a16e05a173a137", hex(b"\"bool\""))
        );
        let err = marshal(
            &Value::object([("x", Value::Null)]),
            &Type::object([("n", Type::Number)]),
        )
        .expect_err("extra attribute");
        assert_eq!(
            err.to_string(),
            "x: attribute is not part of the object type"
        );
        let err = marshal(
            &Value::object([("n", Value::List(vec![]))]),
            &Type::object([("n", Type::Number)]),
        )
        .expect_err("wrong kind");
        assert_eq!(err.to_string(), "n: expected number, got list");
    }

    #[test]
    fn go_number_strings() {
        let s = |t: &str| go_big_float_string(&Number::parse(t).expect("literal"));
        assert_eq!(s("8080"), "8080");
        assert_eq!(s("0.5"), "0.5");
        assert_eq!(s("1e20"), "1e+20");
        assert_eq!(s("0.00001"), "1e-05");
        assert_eq!(s("1234567890123"), "1.23456789e+12");
    }
}
