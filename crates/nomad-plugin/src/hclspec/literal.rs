//! The small subset of HCL expressions that spec literals use: strings, numbers, `true`,
//! `false`, `null`, tuples `[...]` and objects `{ k = v }`.
//!
//! Nomad parses `Literal.value` with hclsyntax and evaluates it without variables; the value's
//! own type (a tuple for `["a"]`, an object for `{a = 1}`) is what hcldec then returns when
//! the default applies, so we compute the type alongside the value.

use std::collections::BTreeMap;

use crate::cty::{Number, Type, Value};

/// Parses a literal expression into its value and type.
pub fn parse_literal(expression: &str) -> Result<(Value, Type), String> {
    let mut parser = Parser {
        chars: expression.chars().collect(),
        pos: 0,
    };
    let parsed = parser.expression()?;
    parser.skip_space();
    if parser.pos != parser.chars.len() {
        return Err(format!("unexpected text at offset {}", parser.pos));
    }
    Ok(parsed)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn skip_space(&mut self) {
        while let Some(c) = self.chars.get(self.pos) {
            if c.is_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.pos).copied()
    }

    fn expression(&mut self) -> Result<(Value, Type), String> {
        match self.peek() {
            None => Err("expected an expression".into()),
            Some('"') => {
                let s = self.string()?;
                Ok((Value::String(s), Type::String))
            }
            Some('[') => self.tuple(),
            Some('{') => self.object(),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let word = self.identifier();
                match word.as_str() {
                    "true" => Ok((Value::Bool(true), Type::Bool)),
                    "false" => Ok((Value::Bool(false), Type::Bool)),
                    "null" => Ok((Value::Null, Type::Dynamic)),
                    other => Err(format!(
                        "{other:?} is not a literal (variables and functions are not available)"
                    )),
                }
            }
            Some(c) => Err(format!("unexpected {c:?} at offset {}", self.pos)),
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.pos;
        while let Some(&c) = self.chars.get(self.pos) {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn number(&mut self) -> Result<(Value, Type), String> {
        let start = self.pos;
        if self.chars.get(self.pos) == Some(&'-') {
            self.pos += 1;
            self.skip_space();
        }
        let digits_start = self.pos;
        while let Some(&c) = self.chars.get(self.pos) {
            let exponent_sign = (c == '+' || c == '-')
                && matches!(self.chars.get(self.pos.wrapping_sub(1)), Some('e' | 'E'));
            if c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        let negative = digits_start != start;
        let text: String = self.chars[digits_start..self.pos].iter().collect();
        let parsed = Number::parse(&text).map_err(|e| e.to_string())?;
        let value = if negative {
            Number::parse(&format!("-{parsed}")).map_err(|e| e.to_string())?
        } else {
            parsed
        };
        Ok((Value::Number(value), Type::Number))
    }

    fn string(&mut self) -> Result<String, String> {
        // The caller saw the opening quote.
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return Err("unterminated string".into());
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(&e) = self.chars.get(self.pos) else {
                        return Err("unterminated escape".into());
                    };
                    self.pos += 1;
                    match e {
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        'u' | 'U' => {
                            let len = if e == 'u' { 4 } else { 8 };
                            let hex: String = self
                                .chars
                                .get(self.pos..self.pos + len)
                                .ok_or("short unicode escape")?
                                .iter()
                                .collect();
                            self.pos += len;
                            let code = u32::from_str_radix(&hex, 16)
                                .map_err(|_| format!("bad unicode escape {hex:?}"))?;
                            out.push(char::from_u32(code).ok_or("bad unicode escape")?);
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                '$' | '%' if self.chars.get(self.pos) == Some(&c) => {
                    // `$${` and `%%{` are escaped template sigils.
                    if self.chars.get(self.pos + 1) == Some(&'{') {
                        self.pos += 1;
                    }
                    out.push(c);
                }
                '$' | '%' if self.chars.get(self.pos) == Some(&'{') => {
                    return Err("templates are not allowed in literals".into());
                }
                c => out.push(c),
            }
        }
    }

    fn separator(&mut self, close: char) -> Result<(), String> {
        match self.peek() {
            Some(',') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) if c == close => Ok(()),
            // hclsyntax also separates object items by newlines; skip_space consumed them.
            Some(_) if close == '}' => Ok(()),
            Some(c) => Err(format!("expected ',' or {close:?}, got {c:?}")),
            None => Err(format!("expected {close:?}")),
        }
    }

    fn tuple(&mut self) -> Result<(Value, Type), String> {
        self.pos += 1;
        let mut values = Vec::new();
        let mut types = Vec::new();
        loop {
            if self.peek() == Some(']') {
                self.pos += 1;
                return Ok((Value::List(values), Type::Tuple(types)));
            }
            let (value, ty) = self.expression()?;
            values.push(value);
            types.push(ty);
            self.separator(']')?;
        }
    }

    fn object(&mut self) -> Result<(Value, Type), String> {
        self.pos += 1;
        let mut values = BTreeMap::new();
        let mut types = BTreeMap::new();
        loop {
            let key = match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok((Value::Object(values), Type::Object(types)));
                }
                Some('"') => self.string()?,
                Some(c) if c.is_alphabetic() || c == '_' => self.identifier(),
                Some(c) => return Err(format!("unexpected {c:?} in object")),
                None => return Err("unterminated object".into()),
            };
            match self.peek() {
                Some('=') | Some(':') => self.pos += 1,
                _ => return Err(format!("expected '=' after {key:?}")),
            }
            let (value, ty) = self.expression()?;
            values.insert(key.clone(), value);
            types.insert(key, ty);
            self.separator('}')?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_with_their_types() {
        assert_eq!(
            parse_literal("\"30s\""),
            Ok((Value::string("30s"), Type::String))
        );
        assert_eq!(parse_literal(" true "), Ok((Value::Bool(true), Type::Bool)));
        assert_eq!(parse_literal("null"), Ok((Value::Null, Type::Dynamic)));
        assert_eq!(
            parse_literal("-1.5"),
            Ok((
                Value::Number(Number::parse("-1.5").expect("literal")),
                Type::Number
            ))
        );
        assert_eq!(
            parse_literal("[]"),
            Ok((Value::List(vec![]), Type::Tuple(vec![])))
        );
        assert_eq!(
            parse_literal("[\"a\", 1,]"),
            Ok((
                Value::List(vec![Value::string("a"), Value::number(1i64)]),
                Type::Tuple(vec![Type::String, Type::Number])
            ))
        );
        assert_eq!(
            parse_literal("{ a = \"x\"\n b: 2 }"),
            Ok((
                Value::object([("a", Value::string("x")), ("b", Value::number(2i64))]),
                Type::object([("a", Type::String), ("b", Type::Number)])
            ))
        );
    }

    #[test]
    fn unescapes_strings() {
        assert_eq!(
            parse_literal(r#""a\"b\\c\n\u00e9 $${x} %%{y}""#).map(|(v, _)| v),
            Ok(Value::string("a\"b\\c\né ${x} %{y}"))
        );
    }

    #[test]
    fn rejects_non_literals() {
        assert!(parse_literal("var.x").is_err());
        assert!(parse_literal("\"${x}\"").is_err());
        assert!(parse_literal("\"open").is_err());
        assert!(parse_literal("1 2").is_err());
        assert!(parse_literal("").is_err());
    }
}
