//! Builders and tools for hcldec specs (`hashicorp.nomad.plugins.shared.hclspec.Spec`).
//!
//! Rules Nomad enforces (protocol doc §4): the root is an [`object`]; object keys are the
//! *output* msgpack keys while `Attr`/`Block` names are the *input* HCL names (an empty name
//! means "the object key"); inside a [`default`] or [`array()`] the attribute needs an explicit
//! name; a default needs both its primary and its default; a literal is an HCL expression
//! (strings quoted, see [`quoted`]). [`check`] verifies these rules.
//!
//! Besides the builders this module offers:
//! - [`to_json`]: a JSON form of a spec tree, read by the Go golden tool `tools/ctyenc`;
//! - [`output_type`]: the cty type hcldec gives the decoded value (`hcldec.ImpliedType`);
//! - [`decode_json`]: hcldec over a JSON-shaped body, producing the value a Nomad client would
//!   encode (see [`crate::cty::encode`]).
//!
//! # JSON form ([`to_json`])
//! Each spec node is an object with exactly one key naming its kind:
//!
//! | node | JSON |
//! |---|---|
//! | Object | `{"object": {"<output key>": <spec>, ...}}` |
//! | Array | `{"array": [<spec>, ...]}` |
//! | Attr | `{"attr": {"name": "x", "type": "list(string)", "required": false}}` |
//! | Block | `{"block": {"name": "x", "required": false, "nested": <spec>}}` |
//! | BlockAttrs | `{"block_attrs": {"name": "x", "type": "string", "required": false}}` |
//! | BlockList | `{"block_list": {"name": "x", "min_items": 0, "max_items": 0, "nested": <spec>}}` |
//! | BlockSet | `{"block_set": {... as block_list ...}}` |
//! | BlockMap | `{"block_map": {"name": "x", "labels": ["l"], "nested": <spec>}}` |
//! | Default | `{"default": {"primary": <spec>, "default": <spec>}}` |
//! | Literal | `{"literal": {"value": "<HCL expression>"}}` |
//!
//! A missing nested spec is written as `null`; an empty spec node as `{}`.

mod decode;
mod literal;

use serde_json::json;

pub use self::decode::decode_json;
pub use self::literal::parse_literal;
use crate::cty::Type;
use crate::proto::hclspec::{
    self as pb, Array, Attr, Block, BlockAttrs, BlockList, BlockMap, BlockSet, Literal, Object,
    Spec, spec::Block as Kind,
};

fn spec(kind: Kind) -> Spec {
    Spec { block: Some(kind) }
}

/// An object whose keys are the output keys of the decoded value.
pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Spec)>) -> Spec {
    spec(Kind::Object(Object {
        attributes: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    }))
}

/// A tuple of specs decoded from the same body.
pub fn array(values: impl IntoIterator<Item = Spec>) -> Spec {
    spec(Kind::Array(Array {
        values: values.into_iter().collect(),
    }))
}

/// An attribute of HCL type expression `ty` (`string`, `number`, `bool`, `list(string)`, ...).
pub fn attr(name: &str, ty: &str, required: bool) -> Spec {
    spec(Kind::Attr(Attr {
        name: name.to_owned(),
        r#type: ty.to_owned(),
        required,
    }))
}

/// A single nested block (absent → null).
pub fn block(name: &str, required: bool, nested: Spec) -> Spec {
    spec(Kind::BlockValue(Box::new(Block {
        name: name.to_owned(),
        required,
        nested: Some(Box::new(nested)),
    })))
}

/// A block whose attributes all have element type `ty`, decoded as a map.
pub fn block_attrs(name: &str, ty: &str, required: bool) -> Spec {
    spec(Kind::BlockAttrs(BlockAttrs {
        name: name.to_owned(),
        r#type: ty.to_owned(),
        required,
    }))
}

/// A list of nested blocks (absent → empty list). `max_items` 0 means unbounded.
pub fn block_list(name: &str, min_items: u64, max_items: u64, nested: Spec) -> Spec {
    spec(Kind::BlockList(Box::new(BlockList {
        name: name.to_owned(),
        min_items,
        max_items,
        nested: Some(Box::new(nested)),
    })))
}

/// A set of nested blocks (absent → empty set). `max_items` 0 means unbounded.
pub fn block_set(name: &str, min_items: u64, max_items: u64, nested: Spec) -> Spec {
    spec(Kind::BlockSet(Box::new(BlockSet {
        name: name.to_owned(),
        min_items,
        max_items,
        nested: Some(Box::new(nested)),
    })))
}

/// Labelled blocks decoded as a map from label to block (one map level per label).
pub fn block_map(name: &str, labels: &[&str], nested: Spec) -> Spec {
    spec(Kind::BlockMap(Box::new(BlockMap {
        name: name.to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        nested: Some(Box::new(nested)),
    })))
}

/// A literal HCL expression, e.g. `"\"30s\""`, `true`, `[]`.
pub fn literal(expression: &str) -> Spec {
    spec(Kind::Literal(Literal {
        value: expression.to_owned(),
    }))
}

/// `primary`, or when it is absent the literal `default_expression`.
pub fn default(primary: Spec, default_expression: &str) -> Spec {
    spec(Kind::Default(Box::new(pb::Default {
        primary: Some(Box::new(primary)),
        default: Some(Box::new(literal(default_expression))),
    })))
}

/// Quotes a string as an HCL string literal expression.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Only `${` and `%{` start templates; they are escaped by doubling the sigil.
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A spec that breaks one of Nomad's rules, or whose types or literals do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct SpecError {
    /// Where in the spec, by output keys: `bindings[].certificates[].pfx_file`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn spec_error(path: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks the rules Nomad relies on: every node set, names present (given or implied by the
/// object key), nested specs present, both halves of a default, a label on block maps,
/// `min_items <= max_items`, type expressions and literals that parse.
pub fn check(spec: &Spec) -> Result<(), SpecError> {
    check_node(spec, "", "")
}

fn check_node(spec: &Spec, implied: &str, path: &str) -> Result<(), SpecError> {
    let Some(kind) = &spec.block else {
        return Err(spec_error(path, "empty spec node"));
    };
    let named = |name: &str, what: &str| -> Result<(), SpecError> {
        if name.is_empty() && implied.is_empty() {
            Err(spec_error(path, format!("{what} needs a name here")))
        } else {
            Ok(())
        }
    };
    let nested = |nested: &Option<Box<Spec>>, inner: String| -> Result<(), SpecError> {
        match nested {
            Some(n) => check_node(n, "", &inner),
            None => Err(spec_error(path, "block has no nested spec")),
        }
    };
    let counts = |min: u64, max: u64| -> Result<(), SpecError> {
        if max > 0 && min > max {
            Err(spec_error(
                path,
                format!("min_items {min} exceeds max_items {max}"),
            ))
        } else {
            Ok(())
        }
    };
    let parse_type = |ty: &str| -> Result<(), SpecError> {
        Type::parse(ty)
            .map(|_| ())
            .map_err(|e| spec_error(path, e.to_string()))
    };
    match kind {
        Kind::Object(object) => {
            for (key, child) in &object.attributes {
                check_node(child, key, &key_path(path, key))?;
            }
            Ok(())
        }
        Kind::Array(array) => {
            for (i, child) in array.values.iter().enumerate() {
                check_node(child, "", &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Kind::Attr(a) => {
            named(&a.name, "attr")?;
            parse_type(&a.r#type)
        }
        Kind::BlockAttrs(a) => {
            named(&a.name, "block_attrs")?;
            parse_type(&a.r#type)
        }
        Kind::BlockValue(b) => {
            named(&b.name, "block")?;
            nested(&b.nested, path.to_owned())
        }
        Kind::BlockList(b) => {
            named(&b.name, "block_list")?;
            counts(b.min_items, b.max_items)?;
            nested(&b.nested, format!("{path}[]"))
        }
        Kind::BlockSet(b) => {
            named(&b.name, "block_set")?;
            counts(b.min_items, b.max_items)?;
            nested(&b.nested, format!("{path}[]"))
        }
        Kind::BlockMap(b) => {
            named(&b.name, "block_map")?;
            if b.labels.is_empty() {
                return Err(spec_error(path, "block_map needs at least one label"));
            }
            nested(&b.nested, format!("{path}[]"))
        }
        Kind::Default(d) => {
            let (Some(primary), Some(default)) = (&d.primary, &d.default) else {
                return Err(spec_error(path, "default needs both primary and default"));
            };
            check_node(primary, "", path)?;
            check_node(default, "", path)
        }
        Kind::Literal(l) => parse_literal(&l.value)
            .map(|_| ())
            .map_err(|e| spec_error(path, format!("literal {:?}: {e}", l.value))),
    }
}

/// The JSON form of a spec tree (see the module documentation), read by `tools/ctyenc`.
pub fn to_json(spec: &Spec) -> serde_json::Value {
    let nested = |n: &Option<Box<Spec>>| match n {
        Some(n) => to_json(n),
        None => serde_json::Value::Null,
    };
    match &spec.block {
        None => json!({}),
        Some(Kind::Object(o)) => {
            let fields: serde_json::Map<String, serde_json::Value> = o
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect();
            json!({ "object": fields })
        }
        Some(Kind::Array(a)) => {
            json!({ "array": a.values.iter().map(to_json).collect::<Vec<_>>() })
        }
        Some(Kind::Attr(a)) => {
            json!({ "attr": { "name": a.name, "type": a.r#type, "required": a.required } })
        }
        Some(Kind::BlockAttrs(a)) => {
            json!({ "block_attrs": { "name": a.name, "type": a.r#type, "required": a.required } })
        }
        Some(Kind::BlockValue(b)) => json!({ "block": {
            "name": b.name, "required": b.required, "nested": nested(&b.nested) } }),
        Some(Kind::BlockList(b)) => json!({ "block_list": {
            "name": b.name, "min_items": b.min_items, "max_items": b.max_items,
            "nested": nested(&b.nested) } }),
        Some(Kind::BlockSet(b)) => json!({ "block_set": {
            "name": b.name, "min_items": b.min_items, "max_items": b.max_items,
            "nested": nested(&b.nested) } }),
        Some(Kind::BlockMap(b)) => json!({ "block_map": {
            "name": b.name, "labels": b.labels, "nested": nested(&b.nested) } }),
        Some(Kind::Default(d)) => json!({ "default": {
            "primary": nested(&d.primary), "default": nested(&d.default) } }),
        Some(Kind::Literal(l)) => json!({ "literal": { "value": l.value } }),
    }
}

/// The cty type of the value hcldec decodes with this spec (`hcldec.ImpliedType`): objects
/// of their children, `list(T)` for block lists, `set(T)` for block sets, one `map(...)` level
/// per block-map label, `map(T)` for block attrs, the primary's type for a default, the
/// literal's own type for a literal.
pub fn output_type(spec: &Spec) -> Result<Type, SpecError> {
    output_type_at(spec, "")
}

fn output_type_at(spec: &Spec, path: &str) -> Result<Type, SpecError> {
    let nested = |n: &Option<Box<Spec>>, inner: &str| match n {
        Some(n) => output_type_at(n, inner),
        None => Err(spec_error(path, "block has no nested spec")),
    };
    let parse = |ty: &str| Type::parse(ty).map_err(|e| spec_error(path, e.to_string()));
    match &spec.block {
        None => Err(spec_error(path, "empty spec node")),
        Some(Kind::Object(o)) => Ok(Type::Object(
            o.attributes
                .iter()
                .map(|(k, v)| Ok((k.clone(), output_type_at(v, &key_path(path, k))?)))
                .collect::<Result<_, SpecError>>()?,
        )),
        Some(Kind::Array(a)) => Ok(Type::Tuple(
            a.values
                .iter()
                .enumerate()
                .map(|(i, v)| output_type_at(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        )),
        Some(Kind::Attr(a)) => parse(&a.r#type),
        Some(Kind::BlockAttrs(a)) => Ok(Type::map(parse(&a.r#type)?)),
        Some(Kind::BlockValue(b)) => nested(&b.nested, path),
        Some(Kind::BlockList(b)) => Ok(Type::list(nested(&b.nested, &format!("{path}[]"))?)),
        Some(Kind::BlockSet(b)) => Ok(Type::set(nested(&b.nested, &format!("{path}[]"))?)),
        Some(Kind::BlockMap(b)) => {
            let mut ty = nested(&b.nested, &format!("{path}[]"))?;
            for _ in &b.labels {
                ty = Type::map(ty);
            }
            Ok(ty)
        }
        Some(Kind::Default(d)) => match &d.primary {
            Some(primary) => output_type_at(primary, path),
            None => Err(spec_error(path, "default needs both primary and default")),
        },
        Some(Kind::Literal(l)) => parse_literal(&l.value)
            .map(|(_, ty)| ty)
            .map_err(|e| spec_error(path, format!("literal {:?}: {e}", l.value))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Spec {
        object([
            ("enabled", default(attr("enabled", "bool", false), "true")),
            (
                "bindings",
                block_list(
                    "binding",
                    0,
                    64,
                    object([
                        ("port", attr("", "string", true)),
                        (
                            "certificates",
                            block_list(
                                "certificate",
                                0,
                                1,
                                object([("pfx_file", attr("", "string", false))]),
                            ),
                        ),
                    ]),
                ),
            ),
            ("meta", block_attrs("meta", "string", false)),
            (
                "sites",
                block_map(
                    "site",
                    &["name"],
                    object([("x", attr("x", "number", false))]),
                ),
            ),
        ])
    }

    #[test]
    fn builds_valid_specs() {
        assert_eq!(check(&sample()), Ok(()));
    }

    #[test]
    fn check_names_broken_nodes() {
        let unnamed = object([("d", default(attr("", "bool", false), "true"))]);
        assert_eq!(
            check(&unnamed).map_err(|e| e.to_string()),
            Err("d: attr needs a name here".to_owned())
        );
        let bad_type = object([("a", attr("a", "lst(string)", false))]);
        assert_eq!(
            check(&bad_type).map_err(|e| e.to_string()),
            Err("a: type expression \"lst(string)\": unknown type \"lst\"".to_owned())
        );
        let bad_counts = object([("b", block_list("b", 2, 1, object::<&str>([])))]);
        assert_eq!(
            check(&bad_counts).map_err(|e| e.to_string()),
            Err("b: min_items 2 exceeds max_items 1".to_owned())
        );
        let half_default = spec(Kind::Default(Box::new(pb::Default {
            primary: Some(Box::new(attr("x", "bool", false))),
            default: None,
        })));
        assert_eq!(
            check(&object([("x", half_default)])).map_err(|e| e.to_string()),
            Err("x: default needs both primary and default".to_owned())
        );
        assert!(
            check(&object([(
                "l",
                default(attr("l", "string", false), "\"open")
            )]))
            .is_err()
        );
    }

    #[test]
    fn json_form_names_every_node() {
        let json = to_json(&sample());
        assert_eq!(
            json["object"]["enabled"],
            json!({"default": {
                "primary": {"attr": {"name": "enabled", "type": "bool", "required": false}},
                "default": {"literal": {"value": "true"}}
            }})
        );
        assert_eq!(
            json["object"]["bindings"]["block_list"]["max_items"],
            json!(64)
        );
        assert_eq!(
            json["object"]["bindings"]["block_list"]["nested"]["object"]["certificates"]["block_list"]
                ["name"],
            json!("certificate")
        );
        assert_eq!(
            json["object"]["sites"]["block_map"]["labels"],
            json!(["name"])
        );
    }

    #[test]
    fn output_types_follow_hcldec() {
        assert_eq!(
            output_type(&sample()),
            Ok(Type::object([
                ("enabled", Type::Bool),
                (
                    "bindings",
                    Type::list(Type::object([
                        ("port", Type::String),
                        (
                            "certificates",
                            Type::list(Type::object([("pfx_file", Type::String)]))
                        ),
                    ]))
                ),
                ("meta", Type::map(Type::String)),
                ("sites", Type::map(Type::object([("x", Type::Number)]))),
            ]))
        );
        assert_eq!(
            output_type(&literal("[\"a\"]")),
            Ok(Type::Tuple(vec![Type::String]))
        );
    }

    #[test]
    fn quotes_strings_for_literals() {
        for s in [
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "${not a template}",
            "tab\tnew\nline",
        ] {
            let (value, _) = parse_literal(&quoted(s)).expect("quoted strings parse");
            assert_eq!(value, crate::cty::Value::string(s));
        }
    }
}
