//! Builders for hcldec specs (`hashicorp.nomad.plugins.shared.hclspec.Spec`).
//!
//! Rules Nomad enforces (protocol doc §4): the root is an [`object`]; object keys are the
//! *output* msgpack keys while `Attr`/`Block` names are the *input* HCL names; a [`default`]
//! needs both its primary and its default; a literal is an HCL expression (strings quoted).

use crate::proto::hclspec::{
    self as pb, Attr, Block, BlockList, Literal, Object, Spec, spec::Block as Kind,
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

/// A list of nested blocks (absent → empty list). `max_items` 0 means unbounded.
pub fn block_list(name: &str, min_items: u64, max_items: u64, nested: Spec) -> Spec {
    spec(Kind::BlockList(Box::new(BlockList {
        name: name.to_owned(),
        min_items,
        max_items,
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
