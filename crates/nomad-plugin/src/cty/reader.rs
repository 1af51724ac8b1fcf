//! A path-aware reader over decoded cty values, for typed decoding with errors that name the
//! field: `application[1].alias: expected a string, got bool`.
//!
//! Paths use the HCL names a user wrote (block names such as `binding`, not the msgpack keys
//! such as `bindings`) and indices: `binding[0].certificate.pfx_file`. Nulls and missing keys
//! read as `None` (or an empty list); every accessor accepts the forms a cty encoder may use
//! for its type (numbers as any int width, floats or decimal strings).

use std::collections::BTreeMap;

use rmpv::Value as Raw;

use super::number::Number;
use super::value::{Type, Value};

/// A value at `path` that is not what the reader expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct FieldError {
    /// Field path, e.g. `binding[0].port`; empty for the root.
    pub path: String,
    /// What is wrong, lowercase, e.g. `expected a number or a port label, got bool`.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A cursor on one value of a decoded tree, remembering its field path.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    value: Option<&'a Raw>,
    path: String,
}

/// A short name of a raw value's kind for messages.
pub fn raw_kind(value: &Raw) -> &'static str {
    match value {
        Raw::Nil => "null",
        Raw::Boolean(_) => "bool",
        Raw::Integer(_) | Raw::F32(_) | Raw::F64(_) => "number",
        Raw::String(_) => "string",
        Raw::Binary(_) => "binary data",
        Raw::Array(_) => "list",
        Raw::Map(_) => "object",
        Raw::Ext(..) => "extension value",
    }
}

/// A number from any of its wire forms; `None` when the value is not a number at all.
fn raw_number(value: &Raw) -> Option<Result<Number, String>> {
    match value {
        Raw::Integer(i) => Some(match (i.as_i64(), i.as_u64()) {
            (Some(v), _) => Ok(Number::from_i64(v)),
            (None, Some(v)) => Ok(Number::from_u64(v)),
            (None, None) => Err("integer out of range".to_owned()),
        }),
        Raw::F32(f) => {
            Some(Number::from_f64(f64::from(*f)).ok_or_else(|| "NaN is not a number".into()))
        }
        Raw::F64(f) => Some(Number::from_f64(*f).ok_or_else(|| "NaN is not a number".into())),
        _ => None,
    }
}

impl<'a> Reader<'a> {
    /// A reader at the root (empty path).
    pub fn new(value: &'a Raw) -> Self {
        Self::at(value, "")
    }

    /// A reader on `value` whose path is `path`.
    pub fn at(value: &'a Raw, path: impl Into<String>) -> Self {
        Self {
            value: if value.is_nil() { None } else { Some(value) },
            path: path.into(),
        }
    }

    /// A reader on nothing (reads as null) at `path`.
    pub fn null(path: impl Into<String>) -> Self {
        Self {
            value: None,
            path: path.into(),
        }
    }

    /// The field path of this value.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw value, `None` when null or missing.
    pub fn raw(&self) -> Option<&'a Raw> {
        self.value
    }

    /// True when the value is null or missing.
    pub fn is_null(&self) -> bool {
        self.value.is_none()
    }

    /// An error at this path.
    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError::new(self.path.clone(), message)
    }

    /// The path of a child named `name`.
    pub fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn unexpected(&self, expected: &str, got: &Raw) -> FieldError {
        self.error(format!("expected {expected}, got {}", raw_kind(got)))
    }

    /// The attribute under msgpack key `key`, its path segment being `key`.
    pub fn field(&self, key: &str) -> Result<Reader<'a>, FieldError> {
        self.field_as(key, key)
    }

    /// The attribute under msgpack key `key`, named `name` in paths (an HCL block name such
    /// as `binding` for the key `bindings`). Null or missing objects give null children.
    pub fn field_as(&self, key: &str, name: &str) -> Result<Reader<'a>, FieldError> {
        let path = self.child_path(name);
        let Some(value) = self.value else {
            return Ok(Reader::null(path));
        };
        let Raw::Map(entries) = value else {
            return Err(self.unexpected("an object", value));
        };
        let found = entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v);
        Ok(match found {
            Some(v) => Reader::at(v, path),
            None => Reader::null(path),
        })
    }

    /// The elements of a list, set or tuple (null reads as empty), with paths `name[i]`.
    pub fn items(&self) -> Result<Vec<Reader<'a>>, FieldError> {
        let Some(value) = self.value else {
            return Ok(Vec::new());
        };
        let Raw::Array(items) = value else {
            return Err(self.unexpected("a list", value));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| Reader::at(v, format!("{}[{i}]", self.path)))
            .collect())
    }

    /// A block that may arrive as an object or as a list of at most one object (a block list
    /// with `max_items = 1`); the path is this reader's, without an index.
    pub fn single(&self) -> Result<Option<Reader<'a>>, FieldError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        match value {
            Raw::Map(_) => Ok(Some(self.clone())),
            Raw::Array(items) => match items.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(Reader::at(one, self.path.clone())).filter(|r| !r.is_null())),
                _ => Err(self.error(format!("at most one block is allowed, got {}", items.len()))),
            },
            other => Err(self.unexpected("a block", other)),
        }
    }

    /// The entries of a map (null reads as empty), with paths `name["key"]`.
    pub fn entries(&self) -> Result<Vec<(String, Reader<'a>)>, FieldError> {
        let Some(value) = self.value else {
            return Ok(Vec::new());
        };
        let Raw::Map(entries) = value else {
            return Err(self.unexpected("a map", value));
        };
        entries
            .iter()
            .map(|(k, v)| match k.as_str() {
                Some(key) => Ok((
                    key.to_owned(),
                    Reader::at(v, format!("{}[{key:?}]", self.path)),
                )),
                None => Err(self.error(format!("map key must be a string, got {}", raw_kind(k)))),
            })
            .collect()
    }

    /// A string (also accepts UTF-8 binary data).
    pub fn string(&self) -> Result<Option<String>, FieldError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        match value {
            Raw::String(s) => match s.as_str() {
                Some(s) => Ok(Some(s.to_owned())),
                None => Err(self.error("string is not valid UTF-8")),
            },
            Raw::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => Ok(Some(s.to_owned())),
                Err(_) => Err(self.error("string is not valid UTF-8")),
            },
            other => Err(self.unexpected("a string", other)),
        }
    }

    /// A string, or a number rendered as plain decimal text (cty converts numbers to strings
    /// for attributes declared `string`, e.g. `port = 8080`).
    pub fn string_or_number(&self, expected: &str) -> Result<Option<String>, FieldError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        if let Some(number) = raw_number(value) {
            return number
                .map(|n| Some(n.to_string()))
                .map_err(|m| self.error(m));
        }
        match value {
            Raw::String(_) | Raw::Binary(_) => self.string(),
            other => Err(self.unexpected(expected, other)),
        }
    }

    /// A bool; the strings `"true"` and `"false"` are accepted as cty converts them.
    pub fn bool(&self) -> Result<Option<bool>, FieldError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        match value {
            Raw::Boolean(b) => Ok(Some(*b)),
            Raw::String(s) if s.as_str() == Some("true") => Ok(Some(true)),
            Raw::String(s) if s.as_str() == Some("false") => Ok(Some(false)),
            other => Err(self.unexpected("a bool", other)),
        }
    }

    /// A number from any int width, float32/float64 or a decimal string.
    pub fn number(&self) -> Result<Option<Number>, FieldError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        if let Some(number) = raw_number(value) {
            return number.map(Some).map_err(|m| self.error(m));
        }
        match value {
            Raw::String(s) => {
                let text = s.as_str().unwrap_or_default();
                Number::parse(text)
                    .map(Some)
                    .map_err(|_| self.error(format!("expected a number, got string {text:?}")))
            }
            other => Err(self.unexpected("a number", other)),
        }
    }

    fn integer(&self, min: i128, max: i128) -> Result<Option<i128>, FieldError> {
        let Some(number) = self.number()? else {
            return Ok(None);
        };
        let value = number
            .to_i64()
            .map(i128::from)
            .or_else(|| number.to_u64().map(i128::from));
        match value {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(self.error(format!(
                "expected an integer between {min} and {max}, got {number}"
            ))),
        }
    }

    /// A whole number in `0..=65535`.
    pub fn u16(&self) -> Result<Option<u16>, FieldError> {
        Ok(self
            .integer(0, i128::from(u16::MAX))?
            .and_then(|v| u16::try_from(v).ok()))
    }

    /// A whole number in `0..=u32::MAX`.
    pub fn u32(&self) -> Result<Option<u32>, FieldError> {
        Ok(self
            .integer(0, i128::from(u32::MAX))?
            .and_then(|v| u32::try_from(v).ok()))
    }

    /// A whole number in `0..=u64::MAX`.
    pub fn u64(&self) -> Result<Option<u64>, FieldError> {
        Ok(self
            .integer(0, i128::from(u64::MAX))?
            .and_then(|v| u64::try_from(v).ok()))
    }

    /// A whole number in the `i64` range.
    pub fn i64(&self) -> Result<Option<i64>, FieldError> {
        Ok(self
            .integer(i128::from(i64::MIN), i128::from(i64::MAX))?
            .and_then(|v| i64::try_from(v).ok()))
    }

    /// The nearest double of a number.
    pub fn f64(&self) -> Result<Option<f64>, FieldError> {
        Ok(self.number()?.map(|n| n.to_f64()))
    }

    /// A `list(string)` (null reads as `None`; null elements are an error naming the index).
    pub fn strings(&self) -> Result<Option<Vec<String>>, FieldError> {
        if self.is_null() {
            return Ok(None);
        }
        self.items()?
            .iter()
            .map(|item| {
                item.string()?
                    .ok_or_else(|| item.error("expected a string, got null"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A `map(string)`, also accepted as a list of maps (`list(map(string))`, the shape
    /// Nomad's own drivers declare), merged in order.
    pub fn string_map(&self) -> Result<Option<BTreeMap<String, String>>, FieldError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        let maps = match value {
            Raw::Array(_) => self.items()?,
            _ => vec![self.clone()],
        };
        let mut out = BTreeMap::new();
        for map in maps {
            for (key, item) in map.entries()? {
                let text = item
                    .string_or_number("a string")?
                    .ok_or_else(|| item.error("expected a string, got null"))?;
                out.insert(key, text);
            }
        }
        Ok(Some(out))
    }

    /// Converts the value to a typed [`Value`] of type `ty`, as cty's decoder would: objects
    /// get every attribute of the type (missing ones null), numbers accept all wire forms,
    /// primitives convert where cty converts them. Under `any` the shape decides (maps
    /// become objects).
    pub fn to_value(&self, ty: &Type) -> Result<Value, FieldError> {
        let Some(value) = self.value else {
            return Ok(Value::Null);
        };
        match ty {
            Type::String => Ok(self
                .string_or_number("a string")
                .or_else(|e| match value {
                    Raw::Boolean(b) => Ok(Some(b.to_string())),
                    _ => Err(e),
                })?
                .map_or(Value::Null, Value::String)),
            Type::Number => Ok(self.number()?.map_or(Value::Null, Value::Number)),
            Type::Bool => Ok(self.bool()?.map_or(Value::Null, Value::Bool)),
            Type::List(element) => Ok(Value::List(
                self.items()?
                    .iter()
                    .map(|item| item.to_value(element))
                    .collect::<Result<_, _>>()?,
            )),
            Type::Set(element) => Ok(Value::Set(
                self.items()?
                    .iter()
                    .map(|item| item.to_value(element))
                    .collect::<Result<_, _>>()?,
            )),
            Type::Tuple(elements) => {
                let items = self.items()?;
                if items.len() != elements.len() {
                    return Err(self.error(format!(
                        "expected a tuple of {} elements, got {}",
                        elements.len(),
                        items.len()
                    )));
                }
                Ok(Value::List(
                    items
                        .iter()
                        .zip(elements)
                        .map(|(item, element)| item.to_value(element))
                        .collect::<Result<_, _>>()?,
                ))
            }
            Type::Map(element) => Ok(Value::Map(
                self.entries()?
                    .into_iter()
                    .map(|(key, item)| Ok((key, item.to_value(element)?)))
                    .collect::<Result<_, FieldError>>()?,
            )),
            Type::Object(attributes) => {
                if !matches!(value, Raw::Map(_)) {
                    return Err(self.unexpected("an object", value));
                }
                let mut out = BTreeMap::new();
                for (name, attr_ty) in attributes {
                    out.insert(name.clone(), self.field(name)?.to_value(attr_ty)?);
                }
                Ok(Value::Object(out))
            }
            Type::Dynamic => self.to_value(&implied_raw_type(value)),
        }
    }
}

/// The type a raw value suggests when nothing else is known.
fn implied_raw_type(value: &Raw) -> Type {
    match value {
        Raw::Boolean(_) => Type::Bool,
        Raw::Integer(_) | Raw::F32(_) | Raw::F64(_) => Type::Number,
        Raw::Array(items) => Type::Tuple(items.iter().map(implied_raw_type).collect()),
        Raw::Map(entries) => Type::Object(
            entries
                .iter()
                .filter_map(|(k, v)| k.as_str().map(|k| (k.to_owned(), implied_raw_type(v))))
                .collect(),
        ),
        Raw::Nil | Raw::String(_) | Raw::Binary(_) | Raw::Ext(..) => Type::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: Vec<(&str, Raw)>) -> Raw {
        Raw::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Raw::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn paths_use_block_names_and_indices() {
        let root = map(vec![(
            "bindings",
            Raw::Array(vec![map(vec![("port", Raw::Boolean(true))])]),
        )]);
        let reader = Reader::new(&root);
        let bindings = reader.field_as("bindings", "binding").expect("object");
        let first = &bindings.items().expect("list")[0];
        let err = first
            .field("port")
            .expect("object")
            .string_or_number("a number or a port label")
            .expect_err("bool is neither");
        assert_eq!(
            err.to_string(),
            "binding[0].port: expected a number or a port label, got bool"
        );
    }

    #[test]
    fn numbers_arrive_in_every_form() {
        let cases = [
            Raw::from(8080u64),
            Raw::from(8080i64),
            Raw::F32(8080.0),
            Raw::F64(8080.0),
            Raw::from("8080"),
            Raw::from("8.08e3"),
        ];
        for raw in cases {
            assert_eq!(Reader::new(&raw).u16(), Ok(Some(8080)), "{raw:?}");
        }
        let big = Raw::from(u64::MAX);
        assert_eq!(Reader::new(&big).u64(), Ok(Some(u64::MAX)));
        assert_eq!(Reader::new(&Raw::Nil).u16(), Ok(None));
    }

    #[test]
    fn range_errors_name_the_field() {
        let root = map(vec![("queue_length", Raw::from(-5))]);
        let err = Reader::new(&root)
            .field("queue_length")
            .and_then(|r| r.u32())
            .expect_err("negative");
        assert_eq!(
            err.to_string(),
            "queue_length: expected an integer between 0 and 4294967295, got -5"
        );
        let half = Raw::from("0.5");
        assert_eq!(
            Reader::at(&half, "port")
                .u16()
                .expect_err("fraction")
                .to_string(),
            "port: expected an integer between 0 and 65535, got 0.5"
        );
        let text = Raw::from("abc");
        assert_eq!(
            Reader::at(&text, "n")
                .number()
                .expect_err("text")
                .to_string(),
            "n: expected a number, got string \"abc\""
        );
    }

    #[test]
    fn nulls_read_as_absent() {
        let root = map(vec![("a", Raw::Nil)]);
        let reader = Reader::new(&root);
        assert_eq!(reader.field("a").and_then(|r| r.string()), Ok(None));
        assert_eq!(reader.field("missing").and_then(|r| r.bool()), Ok(None));
        assert!(
            reader
                .field("a")
                .and_then(|r| r.items())
                .expect("null list")
                .is_empty()
        );
        let nested = reader
            .field("a")
            .and_then(|r| r.field("b"))
            .expect("null object");
        assert_eq!(nested.path(), "a.b");
        assert!(nested.is_null());
    }

    #[test]
    fn single_blocks_accept_object_or_short_list() {
        let one = Raw::Array(vec![map(vec![("x", Raw::from(1))])]);
        let reader = Reader::at(&one, "binding[0].certificate");
        let block = reader.single().expect("one block").expect("present");
        assert_eq!(block.path(), "binding[0].certificate");
        let two = Raw::Array(vec![map(vec![]), map(vec![])]);
        assert_eq!(
            Reader::at(&two, "c").single().expect_err("two").to_string(),
            "c: at most one block is allowed, got 2"
        );
        assert!(
            Reader::at(&Raw::Array(vec![]), "c")
                .single()
                .expect("empty")
                .is_none()
        );
    }

    #[test]
    fn string_maps_accept_a_list_of_one_map() {
        let one = Raw::Array(vec![map(vec![("a", Raw::from("1")), ("b", Raw::from(2))])]);
        let got = Reader::new(&one)
            .string_map()
            .expect("map")
            .expect("present");
        assert_eq!(got.get("a").map(String::as_str), Some("1"));
        assert_eq!(got.get("b").map(String::as_str), Some("2"));
    }

    #[test]
    fn converts_to_typed_values() {
        let root = map(vec![("n", Raw::from("0.1")), ("extra", Raw::from(1))]);
        let ty = Type::object([("n", Type::Number), ("s", Type::String)]);
        let value = Reader::new(&root).to_value(&ty).expect("fits");
        assert_eq!(
            value,
            Value::object([
                ("n", Value::Number(Number::parse("0.1").expect("literal"))),
                ("s", Value::Null),
            ])
        );
    }
}
