//! The cty type and value model: what the encoder writes and typed decoding produces.

use std::collections::BTreeMap;
use std::fmt;

use super::number::Number;

/// A cty type, as named by HCL type expressions (`string`, `list(map(string))`, `any`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// `string`.
    String,
    /// `number`.
    Number,
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<Type>),
    /// `set(T)`.
    Set(Box<Type>),
    /// `map(T)`.
    Map(Box<Type>),
    /// `tuple([T, ...])`; HCL literals such as `["a"]` have tuple types.
    Tuple(Vec<Type>),
    /// `object({name = T, ...})`; hcldec objects and blocks.
    Object(BTreeMap<String, Type>),
    /// `any`: the concrete type travels with the value.
    Dynamic,
}

/// A cty value. Nulls carry no type: go-cty encodes every null as `0xc0` whatever its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent / null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// A list or tuple, in order.
    List(Vec<Value>),
    /// A set; encoded in cty's set order (see [`super::encode`]).
    Set(Vec<Value>),
    /// A map; keys are kept sorted.
    Map(BTreeMap<String, Value>),
    /// An object: every attribute of its type is present (nulls included).
    Object(BTreeMap<String, Value>),
}

/// An HCL type expression that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type expression {expression:?}: {message}")]
pub struct TypeParseError {
    /// The expression as given.
    pub expression: String,
    /// What is wrong with it.
    pub message: String,
}

impl Type {
    /// `list(element)`.
    pub fn list(element: Type) -> Self {
        Type::List(Box::new(element))
    }

    /// `set(element)`.
    pub fn set(element: Type) -> Self {
        Type::Set(Box::new(element))
    }

    /// `map(element)`.
    pub fn map(element: Type) -> Self {
        Type::Map(Box::new(element))
    }

    /// `object({...})` from `(name, type)` pairs.
    pub fn object<K: Into<String>>(attributes: impl IntoIterator<Item = (K, Type)>) -> Self {
        Type::Object(attributes.into_iter().map(|(k, t)| (k.into(), t)).collect())
    }

    /// True when `any` occurs anywhere inside.
    pub fn has_dynamic(&self) -> bool {
        match self {
            Type::Dynamic => true,
            Type::String | Type::Number | Type::Bool => false,
            Type::List(t) | Type::Set(t) | Type::Map(t) => t.has_dynamic(),
            Type::Tuple(ts) => ts.iter().any(Type::has_dynamic),
            Type::Object(attrs) => attrs.values().any(Type::has_dynamic),
        }
    }

    /// Parses an HCL type expression: `string`, `number`, `bool`, `any`, `list(T)`, `set(T)`,
    /// `map(T)`, `tuple([T, ...])`, `object({name = T, ...})`.
    pub fn parse(expression: &str) -> Result<Type, TypeParseError> {
        let mut parser = TypeParser {
            text: expression.as_bytes(),
            pos: 0,
        };
        let error = |message: String| TypeParseError {
            expression: expression.to_owned(),
            message,
        };
        let ty = parser.parse_type().map_err(error)?;
        parser.skip_space();
        if parser.pos != parser.text.len() {
            return Err(error(format!("unexpected text at offset {}", parser.pos)));
        }
        Ok(ty)
    }

    /// cty's JSON form of the type (what `cty.Type.MarshalJSON` writes), used inside the
    /// `[typeJSON, value]` wrapper of dynamic values.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Type::String => out.push_str("\"string\""),
            Type::Number => out.push_str("\"number\""),
            Type::Bool => out.push_str("\"bool\""),
            Type::Dynamic => out.push_str("\"dynamic\""),
            Type::List(t) | Type::Set(t) | Type::Map(t) => {
                out.push_str(match self {
                    Type::List(_) => "[\"list\",",
                    Type::Set(_) => "[\"set\",",
                    _ => "[\"map\",",
                });
                t.write_json(out);
                out.push(']');
            }
            Type::Tuple(ts) => {
                out.push_str("[\"tuple\",[");
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    t.write_json(out);
                }
                out.push_str("]]");
            }
            Type::Object(attrs) => {
                out.push_str("[\"object\",{");
                for (i, (name, t)) in attrs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_go_json_string(name, out);
                    out.push(':');
                    t.write_json(out);
                }
                out.push_str("}]");
            }
        }
    }
}

/// Writes a JSON string the way Go's `encoding/json` does (it also escapes `<`, `>`, `&`,
/// U+2028 and U+2029).
fn write_go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// HCL type-expression syntax, e.g. `list(object({name = string}))`.
impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String => f.write_str("string"),
            Type::Number => f.write_str("number"),
            Type::Bool => f.write_str("bool"),
            Type::Dynamic => f.write_str("any"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Set(t) => write!(f, "set({t})"),
            Type::Map(t) => write!(f, "map({t})"),
            Type::Tuple(ts) => {
                f.write_str("tuple([")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("])")
            }
            Type::Object(attrs) => {
                f.write_str("object({")?;
                for (i, (name, t)) in attrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name} = {t}")?;
                }
                f.write_str("})")
            }
        }
    }
}

struct TypeParser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl TypeParser<'_> {
    fn skip_space(&mut self) {
        while let Some(b) = self.text.get(self.pos) {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        match self.peek() {
            Some(b) if b == wanted => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(format!(
                "expected '{}' at offset {}, found '{}'",
                wanted as char, self.pos, b as char
            )),
            None => Err(format!("expected '{}' at the end", wanted as char)),
        }
    }

    fn identifier(&mut self) -> Result<String, String> {
        self.skip_space();
        let start = self.pos;
        while let Some(&b) = self.text.get(self.pos) {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                self.pos += 1;
            } else {
                break;
            }
        }
        if start == self.pos {
            return Err(format!("expected a name at offset {start}"));
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    fn parse_type(&mut self) -> Result<Type, String> {
        let name = self.identifier()?;
        match name.as_str() {
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            "any" => Ok(Type::Dynamic),
            "list" | "set" | "map" => {
                self.expect(b'(')?;
                let element = self.parse_type()?;
                self.expect(b')')?;
                Ok(match name.as_str() {
                    "list" => Type::list(element),
                    "set" => Type::set(element),
                    _ => Type::map(element),
                })
            }
            "tuple" => {
                self.expect(b'(')?;
                self.expect(b'[')?;
                let mut elements = Vec::new();
                loop {
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        break;
                    }
                    elements.push(self.parse_type()?);
                    if self.peek() == Some(b',') {
                        self.pos += 1;
                    }
                }
                self.expect(b')')?;
                Ok(Type::Tuple(elements))
            }
            "object" => {
                self.expect(b'(')?;
                self.expect(b'{')?;
                let mut attributes = BTreeMap::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        break;
                    }
                    let attr = self.identifier()?;
                    match self.peek() {
                        Some(b'=') | Some(b':') => self.pos += 1,
                        _ => return Err(format!("expected '=' after attribute {attr:?}")),
                    }
                    let ty = self.parse_type()?;
                    if attributes.insert(attr.clone(), ty).is_some() {
                        return Err(format!("duplicate attribute {attr:?}"));
                    }
                    if self.peek() == Some(b',') {
                        self.pos += 1;
                    }
                }
                self.expect(b')')?;
                Ok(Type::Object(attributes))
            }
            other => Err(format!("unknown type {other:?}")),
        }
    }
}

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// A number value from anything convertible to [`Number`].
    pub fn number(n: impl Into<Number>) -> Self {
        Value::Number(n.into())
    }

    /// An object value from `(name, value)` pairs.
    pub fn object<K: Into<String>>(attributes: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Object(attributes.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's kind for messages: `null`, `bool`, `number`, `string`,
    /// `list`, `set`, `map`, `object`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Map(_) => "map",
            Value::Object(_) => "object",
        }
    }

    /// The type the value would have in go-cty if it was built without other information:
    /// lists of one element type become `list(T)`, mixed lists `tuple([...])`, maps with one
    /// element type `map(T)`. Nulls and empty collections have unknown element types
    /// (`any`), which is where this guess can differ from the type the value really had.
    pub fn implied_type(&self) -> Type {
        fn unify(types: Vec<Type>) -> Option<Type> {
            let known: Vec<&Type> = types.iter().filter(|t| **t != Type::Dynamic).collect();
            match known.first() {
                None => Some(Type::Dynamic),
                Some(first) if known.iter().all(|t| t == first) => Some((*first).clone()),
                Some(_) => None,
            }
        }
        match self {
            Value::Null => Type::Dynamic,
            Value::Bool(_) => Type::Bool,
            Value::Number(_) => Type::Number,
            Value::String(_) => Type::String,
            Value::List(items) => {
                let types: Vec<Type> = items.iter().map(Value::implied_type).collect();
                match unify(types.clone()) {
                    Some(t) => Type::list(t),
                    None => Type::Tuple(types),
                }
            }
            Value::Set(items) => {
                let types: Vec<Type> = items.iter().map(Value::implied_type).collect();
                Type::set(unify(types).unwrap_or(Type::Dynamic))
            }
            Value::Map(entries) => {
                let types: Vec<Type> = entries.values().map(Value::implied_type).collect();
                match unify(types) {
                    Some(t) => Type::map(t),
                    None => Type::Object(
                        entries
                            .iter()
                            .map(|(k, v)| (k.clone(), v.implied_type()))
                            .collect(),
                    ),
                }
            }
            Value::Object(attrs) => Type::Object(
                attrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.implied_type()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_expressions() {
        assert_eq!(Type::parse("string"), Ok(Type::String));
        assert_eq!(
            Type::parse(" list( map(string) ) "),
            Ok(Type::list(Type::map(Type::String)))
        );
        assert_eq!(
            Type::parse("object({b = number, a = list(bool)})"),
            Ok(Type::object([
                ("a", Type::list(Type::Bool)),
                ("b", Type::Number)
            ]))
        );
        assert_eq!(
            Type::parse("tuple([string, any])"),
            Ok(Type::Tuple(vec![Type::String, Type::Dynamic]))
        );
        assert_eq!(
            Type::parse("object({\n  a = string\n  b = number\n})"),
            Ok(Type::object([("a", Type::String), ("b", Type::Number)]))
        );
        let err = Type::parse("lst(string)").expect_err("unknown type");
        assert_eq!(
            err.to_string(),
            "type expression \"lst(string)\": unknown type \"lst\""
        );
        assert!(Type::parse("list(string").is_err());
        assert!(Type::parse("string string").is_err());
    }

    #[test]
    fn type_json_matches_cty() {
        let ty = Type::object([
            ("port", Type::list(Type::object([("to", Type::Number)]))),
            ("args", Type::list(Type::String)),
            ("x<y", Type::Dynamic),
        ]);
        assert_eq!(
            ty.to_json(),
            r#"["object",{"args":["list","string"],"port":["list",["object",{"to":"number"}]],"x\u003cy":"dynamic"}]"#
        );
        assert_eq!(
            Type::Tuple(vec![Type::Bool, Type::set(Type::String)]).to_json(),
            r#"["tuple",["bool",["set","string"]]]"#
        );
    }

    #[test]
    fn displays_as_type_expression() {
        let ty = Type::object([("a", Type::list(Type::map(Type::Dynamic)))]);
        assert_eq!(ty.to_string(), "object({a = list(map(any))})");
        assert_eq!(Type::parse(&ty.to_string()), Ok(ty));
    }

    #[test]
    fn implies_types_from_values() {
        let v = Value::object([
            ("a", Value::List(vec![Value::string("x"), Value::Null])),
            (
                "b",
                Value::List(vec![Value::string("x"), Value::Bool(true)]),
            ),
            ("c", Value::Null),
        ]);
        assert_eq!(
            v.implied_type(),
            Type::object([
                ("a", Type::list(Type::String)),
                ("b", Type::Tuple(vec![Type::String, Type::Bool])),
                ("c", Type::Dynamic),
            ])
        );
    }
}
