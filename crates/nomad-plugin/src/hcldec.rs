//! Decoding an HCL body against an hclspec, the way Nomad's client does before it sends a
//! `config {}` block to a plugin.
//!
//! Nomad parses the job, decodes each task's `config` block with hcldec against the plugin's
//! spec and encodes the result as cty msgpack. Tools that run a driver without Nomad (a
//! standalone mode, tests) need the same bytes from the same HCL, so this module walks a
//! [`Spec`] over an [`hcl::Body`] and produces the value cty would produce: every object
//! attribute present (null when absent), absent block lists as empty lists, defaults applied,
//! attribute values converted to their declared type. [`decode_to_msgpack`] then encodes it with
//! cty's rules (non-negative integers in the unsigned family, exact floats as float64).
//!
//! Interpolations (`"${NOMAD_TASK_DIR}/x"`) are evaluated with the caller's
//! [`hcl::eval::Context`]; an undefined variable is an error naming it.

use std::collections::{BTreeMap, BTreeSet};

use hcl::eval::{Context, Evaluate};
use hcl::{Body, Value as HclValue};
use rmpv::Value;

use crate::proto::hclspec::{Spec, spec::Block as Kind};

/// A decoding failure at a path of the HCL input (`binding[1].port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct HclDecodeError {
    /// Where in the input the problem is; empty for the root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn error(path: &str, message: impl Into<String>) -> HclDecodeError {
    HclDecodeError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Decodes `body` against `spec` and returns the cty value as an [`rmpv::Value`].
pub fn decode(spec: &Spec, body: &Body, ctx: &Context) -> Result<Value, HclDecodeError> {
    let mut consumed = BTreeSet::new();
    names(spec, &mut consumed);
    for attribute in body.attributes() {
        if !consumed.contains(attribute.key()) {
            return Err(error(
                attribute.key(),
                format!(
                    "unsupported argument; an argument named \"{}\" is not expected here",
                    attribute.key()
                ),
            ));
        }
    }
    for block in body.blocks() {
        if !consumed.contains(block.identifier()) {
            return Err(error(
                block.identifier(),
                format!(
                    "unsupported block type; blocks of type \"{}\" are not expected here",
                    block.identifier()
                ),
            ));
        }
    }
    decode_spec(spec, body, ctx, "")
}

/// Decodes `body` against `spec` and encodes the result as cty msgpack bytes.
pub fn decode_to_msgpack(
    spec: &Spec,
    body: &Body,
    ctx: &Context,
) -> Result<Vec<u8>, HclDecodeError> {
    let value = decode(spec, body, ctx)?;
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &value)
        .map_err(|e| error("", format!("cannot encode msgpack: {e}")))?;
    Ok(bytes)
}

/// Collects the input names a spec consumes at one body level.
fn names(spec: &Spec, out: &mut BTreeSet<String>) {
    match &spec.block {
        Some(Kind::Object(object)) => object.attributes.values().for_each(|s| names(s, out)),
        Some(Kind::Array(array)) => array.values.iter().for_each(|s| names(s, out)),
        Some(Kind::Attr(attr)) => {
            out.insert(attr.name.clone());
        }
        Some(Kind::BlockValue(block)) => {
            out.insert(block.name.clone());
        }
        Some(Kind::BlockAttrs(block)) => {
            out.insert(block.name.clone());
        }
        Some(Kind::BlockList(block)) => {
            out.insert(block.name.clone());
        }
        Some(Kind::BlockSet(block)) => {
            out.insert(block.name.clone());
        }
        Some(Kind::BlockMap(block)) => {
            out.insert(block.name.clone());
        }
        Some(Kind::Default(default)) => {
            if let Some(primary) = &default.primary {
                names(primary, out);
            }
        }
        Some(Kind::Literal(_)) | None => {}
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn decode_spec(
    spec: &Spec,
    body: &Body,
    ctx: &Context,
    path: &str,
) -> Result<Value, HclDecodeError> {
    match &spec.block {
        None => Err(error(path, "empty spec")),
        Some(Kind::Object(object)) => {
            // cty encodes object attributes sorted bytewise by name.
            let sorted: BTreeMap<&String, &Spec> = object.attributes.iter().collect();
            let mut entries = Vec::with_capacity(sorted.len());
            for (key, sub) in sorted {
                entries.push((
                    Value::from(key.as_str()),
                    decode_spec(sub, body, ctx, path)?,
                ));
            }
            Ok(Value::Map(entries))
        }
        Some(Kind::Array(array)) => array
            .values
            .iter()
            .map(|s| decode_spec(s, body, ctx, path))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Some(Kind::Attr(attr)) => {
            let here = join(path, &attr.name);
            let ty = parse_type(&attr.r#type).map_err(|m| error(&here, m))?;
            match body.attributes().find(|a| a.key() == attr.name) {
                None if attr.required => Err(error(
                    &here,
                    format!(
                        "missing required argument; the argument \"{}\" is required",
                        attr.name
                    ),
                )),
                None => Ok(Value::Nil),
                Some(found) => {
                    let value = found
                        .expr()
                        .evaluate(ctx)
                        .map_err(|e| error(&here, format!("cannot evaluate: {e}")))?;
                    convert(&value, &ty, &here)
                }
            }
        }
        Some(Kind::BlockValue(block)) => {
            let here = join(path, &block.name);
            let found: Vec<_> = body
                .blocks()
                .filter(|b| b.identifier() == block.name)
                .collect();
            match found.as_slice() {
                [] if block.required => Err(error(&here, "missing required block")),
                [] => Ok(Value::Nil),
                [one] => {
                    let nested = block
                        .nested
                        .as_deref()
                        .ok_or_else(|| error(&here, "block without nested spec"))?;
                    decode(nested, one.body(), ctx).map_err(|e| prefix(e, &here))
                }
                _ => Err(error(
                    &here,
                    format!("duplicate \"{}\" block; only one is allowed", block.name),
                )),
            }
        }
        Some(Kind::BlockList(list)) => decode_block_list(
            &list.name,
            list.min_items,
            list.max_items,
            list.nested.as_deref(),
            body,
            ctx,
            path,
        ),
        Some(Kind::BlockSet(set)) => decode_block_list(
            &set.name,
            set.min_items,
            set.max_items,
            set.nested.as_deref(),
            body,
            ctx,
            path,
        ),
        Some(Kind::BlockAttrs(attrs)) => {
            let here = join(path, &attrs.name);
            let ty = parse_type(&attrs.r#type).map_err(|m| error(&here, m))?;
            let found: Vec<_> = body
                .blocks()
                .filter(|b| b.identifier() == attrs.name)
                .collect();
            match found.as_slice() {
                [] if attrs.required => Err(error(&here, "missing required block")),
                [] => Ok(Value::Nil),
                [one] => {
                    let mut entries = BTreeMap::new();
                    for a in one.body().attributes() {
                        let inner = join(&here, a.key());
                        let value = a
                            .expr()
                            .evaluate(ctx)
                            .map_err(|e| error(&inner, format!("cannot evaluate: {e}")))?;
                        entries.insert(a.key().to_owned(), convert(&value, &ty, &inner)?);
                    }
                    Ok(Value::Map(
                        entries
                            .into_iter()
                            .map(|(k, v)| (Value::from(k), v))
                            .collect(),
                    ))
                }
                _ => Err(error(&here, "duplicate block; only one is allowed")),
            }
        }
        Some(Kind::BlockMap(map)) => {
            let here = join(path, &map.name);
            if map.labels.len() != 1 {
                return Err(error(&here, "only block maps with one label are supported"));
            }
            let nested = map
                .nested
                .as_deref()
                .ok_or_else(|| error(&here, "block map without nested spec"))?;
            let mut entries = BTreeMap::new();
            for block in body.blocks().filter(|b| b.identifier() == map.name) {
                let [label] = block.labels() else {
                    return Err(error(
                        &here,
                        format!("expected one label ({})", map.labels[0]),
                    ));
                };
                let inner = format!("{here}[{:?}]", label.as_str());
                if entries.contains_key(label.as_str()) {
                    return Err(error(&inner, "duplicate block label"));
                }
                let value = decode(nested, block.body(), ctx).map_err(|e| prefix(e, &inner))?;
                entries.insert(label.as_str().to_owned(), value);
            }
            Ok(Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), v))
                    .collect(),
            ))
        }
        Some(Kind::Default(default)) => {
            let primary = default
                .primary
                .as_deref()
                .ok_or_else(|| error(path, "default without primary"))?;
            let fallback = default
                .default
                .as_deref()
                .ok_or_else(|| error(path, "default without default"))?;
            let value = decode_spec(primary, body, ctx, path)?;
            if value.is_nil() {
                decode_spec(fallback, body, ctx, path)
            } else {
                Ok(value)
            }
        }
        Some(Kind::Literal(literal)) => {
            let parsed = hcl::parse(&format!("literal = {}", literal.value))
                .map_err(|e| error(path, format!("bad literal {}: {e}", literal.value)))?;
            let attribute = parsed
                .attributes()
                .next()
                .ok_or_else(|| error(path, format!("bad literal {}", literal.value)))?;
            let value = attribute
                .expr()
                .evaluate(&Context::new())
                .map_err(|e| error(path, format!("bad literal {}: {e}", literal.value)))?;
            convert(&value, &Type::Any, path)
        }
    }
}

fn decode_block_list(
    name: &str,
    min_items: u64,
    max_items: u64,
    nested: Option<&Spec>,
    body: &Body,
    ctx: &Context,
    path: &str,
) -> Result<Value, HclDecodeError> {
    let here = join(path, name);
    let nested = nested.ok_or_else(|| error(&here, "block list without nested spec"))?;
    let blocks: Vec<_> = body.blocks().filter(|b| b.identifier() == name).collect();
    let count = blocks.len() as u64;
    if count < min_items {
        return Err(error(
            &here,
            format!("at least {min_items} \"{name}\" blocks are required, got {count}"),
        ));
    }
    if max_items > 0 && count > max_items {
        return Err(error(
            &here,
            format!("at most {max_items} \"{name}\" blocks are allowed, got {count}"),
        ));
    }
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| decode(nested, b.body(), ctx).map_err(|e| prefix(e, &format!("{here}[{i}]"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn prefix(mut e: HclDecodeError, path: &str) -> HclDecodeError {
    e.path = join(path, &e.path);
    e
}

/// An HCL type expression, as `Attr.type` carries it.
#[derive(Debug, Clone, PartialEq)]
enum Type {
    String,
    Number,
    Bool,
    Any,
    List(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
}

fn parse_type(text: &str) -> Result<Type, String> {
    let mut parser = TypeParser {
        text: text.as_bytes(),
        at: 0,
    };
    let ty = parser.parse()?;
    parser.skip_ws();
    if parser.at != parser.text.len() {
        return Err(format!("bad type expression {text:?}"));
    }
    Ok(ty)
}

struct TypeParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl TypeParser<'_> {
    fn skip_ws(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn ident(&mut self) -> String {
        self.skip_ws();
        let start = self.at;
        while self.at < self.text.len()
            && (self.text[self.at].is_ascii_alphanumeric() || self.text[self.at] == b'_')
        {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.text[start..self.at]).into_owned()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.text.get(self.at) == Some(&c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!(
                "bad type expression: expected '{}' at {}",
                c as char, self.at
            ))
        }
    }

    fn parse(&mut self) -> Result<Type, String> {
        let name = self.ident();
        match name.as_str() {
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            "any" => Ok(Type::Any),
            "list" | "set" | "map" => {
                self.expect(b'(')?;
                let inner = Box::new(self.parse()?);
                self.expect(b')')?;
                Ok(if name == "map" {
                    Type::Map(inner)
                } else {
                    Type::List(inner)
                })
            }
            "object" => {
                self.expect(b'(')?;
                self.expect(b'{')?;
                let mut fields = BTreeMap::new();
                loop {
                    self.skip_ws();
                    if self.text.get(self.at) == Some(&b'}') {
                        self.at += 1;
                        break;
                    }
                    let key = self.ident();
                    self.expect(b'=')?;
                    fields.insert(key, self.parse()?);
                    self.skip_ws();
                    if self.text.get(self.at) == Some(&b',') {
                        self.at += 1;
                    }
                }
                self.expect(b')')?;
                Ok(Type::Object(fields))
            }
            other => Err(format!("unknown type {other:?}")),
        }
    }
}

fn number(n: &hcl::Number) -> Value {
    if let Some(u) = n.as_u64() {
        Value::from(u)
    } else if let Some(i) = n.as_i64() {
        Value::from(i)
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        // cty sends integral floats as integers.
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            if f >= 0.0 {
                Value::from(f as u64)
            } else {
                Value::from(f as i64)
            }
        } else {
            Value::F64(f)
        }
    }
}

fn convert(value: &HclValue, ty: &Type, path: &str) -> Result<Value, HclDecodeError> {
    if value.is_null() {
        return Ok(Value::Nil);
    }
    match (ty, value) {
        (Type::Any, HclValue::Bool(b)) => Ok(Value::Boolean(*b)),
        (Type::Any, HclValue::Number(n)) => Ok(number(n)),
        (Type::Any, HclValue::String(s)) => Ok(Value::from(s.as_str())),
        (Type::Any, HclValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| convert(v, &Type::Any, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Type::Any, HclValue::Object(map)) => {
            let sorted: BTreeMap<&String, &HclValue> = map.iter().collect();
            sorted
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        Value::from(k.as_str()),
                        convert(v, &Type::Any, &join(path, k))?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Map)
        }
        (Type::String, HclValue::String(s)) => Ok(Value::from(s.as_str())),
        (Type::String, HclValue::Number(n)) => Ok(Value::from(n.to_string())),
        (Type::String, HclValue::Bool(b)) => Ok(Value::from(if *b { "true" } else { "false" })),
        (Type::Number, HclValue::Number(n)) => Ok(number(n)),
        (Type::Number, HclValue::String(s)) => {
            let parsed: hcl::Number = s
                .trim()
                .parse::<i64>()
                .map(hcl::Number::from)
                .or_else(|_| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(hcl::Number::from_f64)
                        .ok_or(())
                })
                .map_err(|()| error(path, format!("a number is required, got {s:?}")))?;
            Ok(number(&parsed))
        }
        (Type::Bool, HclValue::Bool(b)) => Ok(Value::Boolean(*b)),
        (Type::Bool, HclValue::String(s)) if s == "true" || s == "false" => {
            Ok(Value::Boolean(s == "true"))
        }
        (Type::List(inner), HclValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| convert(v, inner, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        // Nomad's job parser turns a map-valued attribute into a one-element list of maps.
        (Type::List(inner), HclValue::Object(_)) => Ok(Value::Array(vec![convert(
            value,
            inner,
            &format!("{path}[0]"),
        )?])),
        (Type::Map(inner), HclValue::Object(map)) => {
            let sorted: BTreeMap<&String, &HclValue> = map.iter().collect();
            sorted
                .into_iter()
                .map(|(k, v)| Ok((Value::from(k.as_str()), convert(v, inner, &join(path, k))?)))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Map)
        }
        (Type::Object(fields), HclValue::Object(map)) => {
            if let Some(extra) = map.keys().find(|k| !fields.contains_key(k.as_str())) {
                return Err(error(path, format!("unexpected attribute {extra:?}")));
            }
            fields
                .iter()
                .map(|(k, t)| {
                    let v = map
                        .get(k)
                        .map_or(Ok(Value::Nil), |v| convert(v, t, &join(path, k)))?;
                    Ok((Value::from(k.as_str()), v))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Map)
        }
        (ty, value) => Err(error(
            path,
            format!("{} is required, got {}", describe(ty), kind(value)),
        )),
    }
}

fn describe(ty: &Type) -> &'static str {
    match ty {
        Type::String => "a string",
        Type::Number => "a number",
        Type::Bool => "a bool",
        Type::Any => "a value",
        Type::List(_) => "a list",
        Type::Map(_) => "a map",
        Type::Object(_) => "an object",
    }
}

fn kind(value: &HclValue) -> &'static str {
    match value {
        HclValue::Null => "null",
        HclValue::Bool(_) => "a bool",
        HclValue::Number(_) => "a number",
        HclValue::String(_) => "a string",
        HclValue::Array(_) => "a list",
        HclValue::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hclspec::{attr, block_list, object};

    fn example_spec() -> Spec {
        object([
            ("args", attr("args", "list(string)", false)),
            ("command", attr("command", "string", true)),
            ("labels", attr("labels", "list(map(string))", false)),
            (
                "port",
                block_list(
                    "port",
                    0,
                    0,
                    object([
                        ("label", attr("label", "string", false)),
                        ("to", attr("to", "number", false)),
                    ]),
                ),
            ),
        ])
    }

    /// The protocol doc's §4 example, byte for byte.
    #[test]
    fn reproduces_the_protocol_example_bytes() {
        let body =
            hcl::parse("command = \"x\"\nport {\n  label = \"http\"\n  to = 8080\n}\n").unwrap();
        let bytes = decode_to_msgpack(&example_spec(), &body, &Context::new()).unwrap();
        let mut expected = vec![0x84, 0xa4];
        expected.extend(b"args");
        expected.extend([0xc0, 0xa7]);
        expected.extend(b"command");
        expected.extend([0xa1, b'x', 0xa6]);
        expected.extend(b"labels");
        expected.extend([0xc0, 0xa4]);
        expected.extend(b"port");
        expected.extend([0x91, 0x82, 0xa5]);
        expected.extend(b"label");
        expected.push(0xa4);
        expected.extend(b"http");
        expected.push(0xa2);
        expected.extend(b"to");
        expected.extend([0xcd, 0x1f, 0x90]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn unknown_argument_and_missing_required_are_named() {
        let body = hcl::parse("command = \"x\"\nbogus = 1\n").unwrap();
        let err = decode(&example_spec(), &body, &Context::new()).unwrap_err();
        assert_eq!(err.path, "bogus");
        let body =
            hcl::parse("port {\n  label = \"http\"\n  to = \"x\"\n}\ncommand = \"y\"\n").unwrap();
        let err = decode(&example_spec(), &body, &Context::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port[0].to: a number is required, got \"x\""
        );
        let body = hcl::parse("").unwrap();
        let err = decode(&example_spec(), &body, &Context::new()).unwrap_err();
        assert_eq!(err.path, "command");
    }

    #[test]
    fn interpolation_uses_the_context_and_names_unknown_variables() {
        let mut ctx = Context::new();
        ctx.declare_var("NOMAD_TASK_DIR", "/alloc/web");
        let body = hcl::parse("command = \"${NOMAD_TASK_DIR}/site\"\n").unwrap();
        let value = decode(&example_spec(), &body, &ctx).unwrap();
        assert!(value.to_string().contains("/alloc/web/site"));
        let body = hcl::parse("command = \"${NOMAD_SECRET}/x\"\n").unwrap();
        let err = decode(&example_spec(), &body, &ctx).unwrap_err();
        assert!(err.to_string().contains("NOMAD_SECRET"), "{err}");
    }

    #[test]
    fn defaults_apply_only_when_absent() {
        let spec = object([(
            "interval",
            crate::hclspec::default(attr("interval", "string", false), "\"30s\""),
        )]);
        let v = decode(&spec, &hcl::parse("").unwrap(), &Context::new()).unwrap();
        assert_eq!(
            v,
            Value::Map(vec![(Value::from("interval"), Value::from("30s"))])
        );
        let v = decode(
            &spec,
            &hcl::parse("interval = \"1m\"").unwrap(),
            &Context::new(),
        )
        .unwrap();
        assert_eq!(
            v,
            Value::Map(vec![(Value::from("interval"), Value::from("1m"))])
        );
    }
}
