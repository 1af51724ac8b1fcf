//! hcldec for JSON-shaped bodies: decodes a `config {}` body, given as the generic map a job
//! parser produces, against a spec, the way a Nomad client does before it msgpack-encodes the
//! result. Lets a standalone runner turn a job file into the exact bytes Nomad would send.
//!
//! Body shape: attributes are JSON values; a block is an object, or a list of objects when
//! repeated (Nomad's job parser makes every block a list); a block map is an object from label
//! to block. Names not in the spec are rejected, as hcldec does.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::{Kind, Spec, literal::parse_literal};
use crate::cty::{FieldError, Number, Type, Value};

/// Decodes `body` (a JSON object, or null for an empty body) against `spec`.
pub fn decode_json(spec: &Spec, body: &Json) -> Result<Value, FieldError> {
    let empty = Map::new();
    let body = match body {
        Json::Null => &empty,
        Json::Object(map) => map,
        other => {
            return Err(FieldError::new(
                "",
                format!("expected a body object, got {}", json_kind(other)),
            ));
        }
    };
    decode_body(spec, body, "")
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "object",
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn pick<'a>(explicit: &'a str, implied: &'a str) -> &'a str {
    if explicit.is_empty() {
        implied
    } else {
        explicit
    }
}

/// Decodes one body level: rejects unknown names, then decodes the spec.
fn decode_body(spec: &Spec, body: &Map<String, Json>, path: &str) -> Result<Value, FieldError> {
    let mut names = Vec::new();
    same_body_names(spec, "", &mut names);
    if let Some(unknown) = body.keys().find(|k| !names.contains(k)) {
        names.sort();
        return Err(FieldError::new(
            child_path(path, unknown),
            format!(
                "unsupported argument or block; expected one of: {}",
                names.join(", ")
            ),
        ));
    }
    decode_spec(spec, "", body, path)
}

/// Every attribute and block name a spec reads from the body it is applied to.
fn same_body_names(spec: &Spec, implied: &str, out: &mut Vec<String>) {
    let Some(kind) = &spec.block else {
        return;
    };
    match kind {
        Kind::Object(object) => {
            for (key, child) in &object.attributes {
                same_body_names(child, key, out);
            }
        }
        Kind::Array(array) => {
            for child in &array.values {
                same_body_names(child, "", out);
            }
        }
        Kind::Attr(a) => out.push(pick(&a.name, implied).to_owned()),
        Kind::BlockValue(b) => out.push(pick(&b.name, implied).to_owned()),
        Kind::BlockAttrs(b) => out.push(pick(&b.name, implied).to_owned()),
        Kind::BlockList(b) => out.push(pick(&b.name, implied).to_owned()),
        Kind::BlockSet(b) => out.push(pick(&b.name, implied).to_owned()),
        Kind::BlockMap(b) => out.push(pick(&b.name, implied).to_owned()),
        Kind::Default(d) => {
            if let Some(primary) = &d.primary {
                same_body_names(primary, "", out);
            }
            if let Some(default) = &d.default {
                same_body_names(default, "", out);
            }
        }
        Kind::Literal(_) => {}
    }
}

fn missing_nested(path: &str) -> FieldError {
    FieldError::new(path, "spec error: block has no nested spec")
}

/// The block bodies under `name`: absent → none; an object → one; a list → each.
fn block_bodies<'a>(
    body: &'a Map<String, Json>,
    name: &str,
    path: &str,
) -> Result<Vec<&'a Map<String, Json>>, FieldError> {
    match body.get(name) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Object(map)) => Ok(vec![map]),
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Json::Object(map) => Ok(map),
                other => Err(FieldError::new(
                    format!("{path}[{i}]"),
                    format!("expected a block, got {}", json_kind(other)),
                )),
            })
            .collect(),
        Some(other) => Err(FieldError::new(
            path,
            format!("expected a block, got {}", json_kind(other)),
        )),
    }
}

fn decode_spec(
    spec: &Spec,
    implied: &str,
    body: &Map<String, Json>,
    path: &str,
) -> Result<Value, FieldError> {
    let Some(kind) = &spec.block else {
        return Err(FieldError::new(path, "spec error: empty spec"));
    };
    match kind {
        Kind::Object(object) => {
            let mut out = BTreeMap::new();
            for (key, child) in &object.attributes {
                out.insert(key.clone(), decode_spec(child, key, body, path)?);
            }
            Ok(Value::Object(out))
        }
        Kind::Array(array) => Ok(Value::List(
            array
                .values
                .iter()
                .map(|child| decode_spec(child, "", body, path))
                .collect::<Result<_, _>>()?,
        )),
        Kind::Attr(attr) => {
            let name = pick(&attr.name, implied);
            let here = child_path(path, name);
            let ty = Type::parse(&attr.r#type)
                .map_err(|e| FieldError::new(here.clone(), format!("spec error: {e}")))?;
            match body.get(name) {
                None | Some(Json::Null) if attr.required => {
                    Err(FieldError::new(here, "the argument is required"))
                }
                None | Some(Json::Null) => Ok(Value::Null),
                Some(value) => convert(value, &ty, &here),
            }
        }
        Kind::BlockValue(block) => {
            let name = pick(&block.name, implied);
            let here = child_path(path, name);
            let nested = block
                .nested
                .as_deref()
                .ok_or_else(|| missing_nested(&here))?;
            let bodies = block_bodies(body, name, &here)?;
            match bodies.as_slice() {
                [] if block.required => Err(FieldError::new(here, "a block is required")),
                [] => Ok(Value::Null),
                [one] => decode_body(nested, one, &here),
                many => Err(FieldError::new(
                    here,
                    format!("only one block is allowed, got {}", many.len()),
                )),
            }
        }
        Kind::BlockList(list) => {
            let name = pick(&list.name, implied);
            let here = child_path(path, name);
            let nested = list
                .nested
                .as_deref()
                .ok_or_else(|| missing_nested(&here))?;
            let items = decode_blocks(nested, body, name, &here, list.min_items, list.max_items)?;
            Ok(Value::List(items))
        }
        Kind::BlockSet(set) => {
            let name = pick(&set.name, implied);
            let here = child_path(path, name);
            let nested = set.nested.as_deref().ok_or_else(|| missing_nested(&here))?;
            let items = decode_blocks(nested, body, name, &here, set.min_items, set.max_items)?;
            Ok(Value::Set(items))
        }
        Kind::BlockMap(map) => {
            let name = pick(&map.name, implied);
            let here = child_path(path, name);
            let nested = map.nested.as_deref().ok_or_else(|| missing_nested(&here))?;
            if map.labels.is_empty() {
                return Err(FieldError::new(here, "spec error: block_map needs a label"));
            }
            match body.get(name) {
                None | Some(Json::Null) => Ok(Value::Map(BTreeMap::new())),
                Some(value) => decode_block_map(nested, value, map.labels.len(), &here),
            }
        }
        Kind::BlockAttrs(attrs) => {
            let name = pick(&attrs.name, implied);
            let here = child_path(path, name);
            let ty = Type::parse(&attrs.r#type)
                .map_err(|e| FieldError::new(here.clone(), format!("spec error: {e}")))?;
            let bodies = block_bodies(body, name, &here)?;
            match bodies.as_slice() {
                [] if attrs.required => Err(FieldError::new(here, "a block is required")),
                [] => Ok(Value::Null),
                [one] => Ok(Value::Map(
                    one.iter()
                        .map(|(k, v)| Ok((k.clone(), convert(v, &ty, &child_path(&here, k))?)))
                        .collect::<Result<_, FieldError>>()?,
                )),
                many => Err(FieldError::new(
                    here,
                    format!("only one block is allowed, got {}", many.len()),
                )),
            }
        }
        Kind::Default(default) => {
            let (Some(primary), Some(fallback)) = (&default.primary, &default.default) else {
                return Err(FieldError::new(
                    path,
                    "spec error: default needs both primary and default",
                ));
            };
            let value = decode_spec(primary, "", body, path)?;
            if value.is_null() {
                decode_spec(fallback, "", body, path)
            } else {
                Ok(value)
            }
        }
        Kind::Literal(literal) => parse_literal(&literal.value)
            .map(|(value, _)| value)
            .map_err(|e| FieldError::new(path, format!("spec error: literal: {e}"))),
    }
}

fn decode_blocks(
    nested: &Spec,
    body: &Map<String, Json>,
    name: &str,
    here: &str,
    min: u64,
    max: u64,
) -> Result<Vec<Value>, FieldError> {
    let bodies = block_bodies(body, name, here)?;
    let count = bodies.len() as u64;
    if count < min {
        return Err(FieldError::new(
            here,
            format!("at least {min} block(s) required, got {count}"),
        ));
    }
    if max > 0 && count > max {
        return Err(FieldError::new(
            here,
            format!("at most {max} block(s) allowed, got {count}"),
        ));
    }
    bodies
        .iter()
        .enumerate()
        .map(|(i, item)| decode_body(nested, item, &format!("{here}[{i}]")))
        .collect()
}

fn decode_block_map(
    nested: &Spec,
    value: &Json,
    labels: usize,
    here: &str,
) -> Result<Value, FieldError> {
    let Json::Object(entries) = value else {
        return Err(FieldError::new(
            here,
            format!("expected blocks by label, got {}", json_kind(value)),
        ));
    };
    let mut out = BTreeMap::new();
    for (label, inner) in entries {
        let path = format!("{here}[{label:?}]");
        let decoded = if labels > 1 {
            decode_block_map(nested, inner, labels - 1, &path)?
        } else {
            match inner {
                Json::Object(body) => decode_body(nested, body, &path)?,
                Json::Array(items) if items.len() == 1 => match &items[0] {
                    Json::Object(body) => decode_body(nested, body, &path)?,
                    other => {
                        return Err(FieldError::new(
                            path,
                            format!("expected a block, got {}", json_kind(other)),
                        ));
                    }
                },
                Json::Array(items) => {
                    return Err(FieldError::new(
                        path,
                        format!("duplicate block label, got {} blocks", items.len()),
                    ));
                }
                other => {
                    return Err(FieldError::new(
                        path,
                        format!("expected a block, got {}", json_kind(other)),
                    ));
                }
            }
        };
        out.insert(label.clone(), decoded);
    }
    Ok(Value::Map(out))
}

/// Converts a JSON value to `ty` with cty's conversion rules (number ↔ string, bool ↔ string).
/// A single object where a list of maps or objects is expected is taken as a one-element
/// list, since Nomad's job parser and HCL1 agent configs produce that shape.
fn convert(value: &Json, ty: &Type, path: &str) -> Result<Value, FieldError> {
    let mismatch = || FieldError::new(path, format!("expected {ty}, got {}", json_kind(value)));
    if value.is_null() {
        return Ok(Value::Null);
    }
    match ty {
        Type::String => match value {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Number(n) => Ok(Value::String(json_number(n, path)?.to_string())),
            Json::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(mismatch()),
        },
        Type::Number => match value {
            Json::Number(n) => Ok(Value::Number(json_number(n, path)?)),
            Json::String(s) => Number::parse(s)
                .map(Value::Number)
                .map_err(|_| FieldError::new(path, format!("expected number, got string {s:?}"))),
            _ => Err(mismatch()),
        },
        Type::Bool => match value {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::String(s) if s == "true" => Ok(Value::Bool(true)),
            Json::String(s) if s == "false" => Ok(Value::Bool(false)),
            _ => Err(mismatch()),
        },
        Type::List(element) | Type::Set(element) => {
            let items: Vec<&Json> = match value {
                Json::Array(items) => items.iter().collect(),
                Json::Object(_) if matches!(**element, Type::Map(_) | Type::Object(_)) => {
                    vec![value]
                }
                _ => return Err(mismatch()),
            };
            let converted = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, element, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if matches!(ty, Type::Set(_)) {
                Value::Set(converted)
            } else {
                Value::List(converted)
            })
        }
        Type::Tuple(elements) => match value {
            Json::Array(items) if items.len() == elements.len() => Ok(Value::List(
                items
                    .iter()
                    .zip(elements)
                    .enumerate()
                    .map(|(i, (item, element))| convert(item, element, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(mismatch()),
        },
        Type::Map(element) => match value {
            Json::Object(entries) => Ok(Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), convert(v, element, &format!("{path}[{k:?}]"))?)))
                    .collect::<Result<_, FieldError>>()?,
            )),
            _ => Err(mismatch()),
        },
        Type::Object(attributes) => match value {
            Json::Object(entries) => {
                if let Some(extra) = entries.keys().find(|k| !attributes.contains_key(*k)) {
                    return Err(FieldError::new(
                        child_path(path, extra),
                        "attribute is not part of the object type",
                    ));
                }
                let mut out = BTreeMap::new();
                for (name, attr_ty) in attributes {
                    let item = entries.get(name).unwrap_or(&Json::Null);
                    out.insert(
                        name.clone(),
                        convert(item, attr_ty, &child_path(path, name))?,
                    );
                }
                Ok(Value::Object(out))
            }
            _ => Err(mismatch()),
        },
        Type::Dynamic => Ok(implied(value, path)?),
    }
}

fn json_number(n: &serde_json::Number, path: &str) -> Result<Number, FieldError> {
    Number::parse(&n.to_string())
        .map_err(|e| FieldError::new(path, format!("expected a number: {e}")))
}

/// A JSON value under `any`: its own shape decides the type.
fn implied(value: &Json, path: &str) -> Result<Value, FieldError> {
    Ok(match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Number(json_number(n, path)?),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| implied(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), implied(v, &child_path(path, k))?)))
                .collect::<Result<_, FieldError>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cty::encode;
    use crate::hclspec::{attr, block, block_list, default, object};

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

    #[test]
    fn reproduces_the_protocol_doc_example() {
        let body = json!({"command": "x", "port": [{"label": "http", "to": 8080}]});
        let value = decode_json(&example_spec(), &body).expect("valid body");
        let hex: String = encode(&value).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "84a461726773c0a7636f6d6d616e64a178a66c6162656c73c0a4706f72749182a56c6162656ca468747470a2746fcd1f90"
        );
    }

    #[test]
    fn converts_attribute_values() {
        let body =
            json!({"command": 5, "port": {"label": "http", "to": "8080"}, "labels": {"a": 1}});
        let value = decode_json(&example_spec(), &body).expect("convertible");
        let Value::Object(attrs) = value else {
            panic!("an object spec decodes to an object");
        };
        assert_eq!(attrs["command"], Value::string("5"));
        assert_eq!(
            attrs["labels"],
            Value::List(vec![Value::Map(BTreeMap::from([(
                "a".to_owned(),
                Value::string("1")
            )]))])
        );
        assert_eq!(
            attrs["port"],
            Value::List(vec![Value::object([
                ("label", Value::string("http")),
                ("to", Value::number(8080i64)),
            ])])
        );
    }

    #[test]
    fn errors_name_the_field() {
        let spec = example_spec();
        let err = decode_json(&spec, &json!({})).expect_err("command missing");
        assert_eq!(err.to_string(), "command: the argument is required");
        let err = decode_json(&spec, &json!({"command": "x", "port": [{"to": true}]}))
            .expect_err("bool is not a number");
        assert_eq!(err.to_string(), "port[0].to: expected number, got bool");
        let err = decode_json(&spec, &json!({"command": "x", "nope": 1})).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "nope: unsupported argument or block; expected one of: args, command, labels, port"
        );
    }

    #[test]
    fn applies_defaults_and_counts_blocks() {
        let spec = object([
            ("enabled", default(attr("enabled", "bool", false), "true")),
            (
                "one",
                block("one", false, object([("x", attr("x", "string", false))])),
            ),
            (
                "many",
                block_list("many", 1, 2, object([("y", attr("y", "number", false))])),
            ),
        ]);
        let value = decode_json(&spec, &json!({"many": [{}]})).expect("valid");
        assert_eq!(
            value,
            Value::object([
                ("enabled", Value::Bool(true)),
                (
                    "many",
                    Value::List(vec![Value::object([("y", Value::Null)])])
                ),
                ("one", Value::Null),
            ])
        );
        let err = decode_json(&spec, &json!({})).expect_err("min 1");
        assert_eq!(err.to_string(), "many: at least 1 block(s) required, got 0");
        let err = decode_json(&spec, &json!({"many": [{}, {}, {}]})).expect_err("max 2");
        assert_eq!(err.to_string(), "many: at most 2 block(s) allowed, got 3");
        let err = decode_json(&spec, &json!({"many": {}, "one": [{}, {}]})).expect_err("one");
        assert_eq!(err.to_string(), "one: only one block is allowed, got 2");
    }
}
