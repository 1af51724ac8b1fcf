//! Arbitrary-precision decimal numbers, the way cty's `number` type carries them.
//!
//! go-cty keeps numbers as 512-bit `big.Float`s parsed from decimal text, and its msgpack
//! encoder writes an exact int64 as an integer, an exact float64 as a double and anything else
//! as a decimal string. To reproduce that byte for byte we keep numbers as exact decimals
//! (`digits × 10^exponent`) and decide the wire form from the exact value.

use std::cmp::Ordering;
use std::fmt;

/// Decimal exponents beyond this are refused when parsing, so a hostile `1e999999999` cannot
/// make us build a gigabyte of zeros when the number is printed.
const MAX_DECIMAL_EXPONENT: i64 = 100_000;

/// An exact decimal number, or an infinity.
///
/// Equal values have equal representations (the digits carry no leading or trailing zeros),
/// so derived equality is numeric equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Number(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// `±digits × 10^exponent`; `digits` are ASCII digits without leading or trailing zeros,
    /// empty for zero (which is never negative).
    Finite {
        negative: bool,
        digits: Vec<u8>,
        exponent: i64,
    },
    Infinite {
        negative: bool,
    },
}

/// A string that is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNumberError {
    /// Not of the form `[+-]digits[.digits][e[+-]digits]`.
    #[error("{0:?} is not a number")]
    Invalid(String),
    /// The exponent is too large to be useful.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// How go-cty's msgpack encoder writes a number.
#[derive(Debug, Clone, PartialEq)]
pub enum WireNumber {
    /// An exact int64: smallest int form, unsigned family when non-negative.
    Int(i64),
    /// Exactly representable as a float64 (including the infinities): `0xcb`.
    Float(f64),
    /// Neither: a decimal string without exponent.
    Decimal(String),
}

impl Number {
    /// Zero.
    pub fn zero() -> Self {
        Number(Repr::Finite {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        })
    }

    /// Positive or negative infinity.
    pub fn infinity(negative: bool) -> Self {
        Number(Repr::Infinite { negative })
    }

    /// The exact value of a signed integer.
    pub fn from_i64(value: i64) -> Self {
        Self::from_i128(i128::from(value))
    }

    /// The exact value of an unsigned integer.
    pub fn from_u64(value: u64) -> Self {
        Self::from_i128(i128::from(value))
    }

    fn from_i128(value: i128) -> Self {
        let negative = value < 0;
        let digits = value.unsigned_abs().to_string().into_bytes();
        Self::normalized(negative, digits, 0)
    }

    /// The exact value of a double (every finite double is a finite decimal); `None` for NaN,
    /// which cty cannot represent.
    pub fn from_f64(value: f64) -> Option<Self> {
        if value.is_nan() {
            return None;
        }
        if value.is_infinite() {
            return Some(Self::infinity(value < 0.0));
        }
        // Rust prints the exact binary value when asked for enough digits; a double never
        // needs more than 767 significant digits.
        let text = format!("{value:.1100e}");
        Self::parse(&text).ok()
    }

    /// Parses decimal text: `[+-]digits[.digits][(e|E)[+-]digits]`, also `.5` and `5.`.
    pub fn parse(text: &str) -> Result<Self, ParseNumberError> {
        let invalid = || ParseNumberError::Invalid(text.to_owned());
        let bytes = text.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        if let Some(&sign) = bytes.first()
            && (sign == b'+' || sign == b'-')
        {
            negative = sign == b'-';
            pos = 1;
        }
        let mut digits = Vec::new();
        let mut exponent: i64 = 0;
        let mut seen_digit = false;
        while let Some(&b) = bytes.get(pos) {
            if !b.is_ascii_digit() {
                break;
            }
            digits.push(b);
            seen_digit = true;
            pos += 1;
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            while let Some(&b) = bytes.get(pos) {
                if !b.is_ascii_digit() {
                    break;
                }
                digits.push(b);
                exponent -= 1;
                seen_digit = true;
                pos += 1;
            }
        }
        if !seen_digit {
            return Err(invalid());
        }
        if let Some(&e) = bytes.get(pos)
            && (e == b'e' || e == b'E')
        {
            pos += 1;
            let mut exp_negative = false;
            if let Some(&sign) = bytes.get(pos)
                && (sign == b'+' || sign == b'-')
            {
                exp_negative = sign == b'-';
                pos += 1;
            }
            let start = pos;
            let mut value: i64 = 0;
            while let Some(&b) = bytes.get(pos) {
                if !b.is_ascii_digit() {
                    break;
                }
                value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
                pos += 1;
            }
            if pos == start {
                return Err(invalid());
            }
            exponent = exponent.saturating_add(if exp_negative { -value } else { value });
        }
        if pos != bytes.len() {
            return Err(invalid());
        }
        let number = Self::normalized(negative, digits, exponent);
        if let Repr::Finite {
            digits, exponent, ..
        } = &number.0
            && !digits.is_empty()
        {
            let magnitude = exponent.saturating_add(digits.len() as i64);
            if magnitude.abs() > MAX_DECIMAL_EXPONENT || exponent.abs() > 2 * MAX_DECIMAL_EXPONENT {
                return Err(ParseNumberError::OutOfRange(text.to_owned()));
            }
        }
        Ok(number)
    }

    fn normalized(negative: bool, mut digits: Vec<u8>, mut exponent: i64) -> Self {
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Self::zero();
        }
        Number(Repr::Finite {
            negative,
            digits,
            exponent,
        })
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        matches!(&self.0, Repr::Finite { digits, .. } if digits.is_empty())
    }

    /// True below zero (including negative infinity).
    pub fn is_negative(&self) -> bool {
        match &self.0 {
            Repr::Finite { negative, .. } | Repr::Infinite { negative } => *negative,
        }
    }

    /// True for a whole number (finite, no fractional part).
    pub fn is_integer(&self) -> bool {
        matches!(&self.0, Repr::Finite { exponent, .. } if *exponent >= 0)
    }

    /// True for ±infinity.
    pub fn is_infinite(&self) -> bool {
        matches!(self.0, Repr::Infinite { .. })
    }

    /// The value as an `i128` when it is a whole number that fits.
    fn to_i128(&self) -> Option<i128> {
        let Repr::Finite {
            negative,
            digits,
            exponent,
        } = &self.0
        else {
            return None;
        };
        if *exponent < 0 {
            return None;
        }
        if digits.len() as i64 + exponent > 38 {
            return None;
        }
        let mut value: i128 = 0;
        for &d in digits {
            value = value * 10 + i128::from(d - b'0');
        }
        for _ in 0..*exponent {
            value *= 10;
        }
        Some(if *negative { -value } else { value })
    }

    /// The value as an `i64` when it is a whole number in range.
    pub fn to_i64(&self) -> Option<i64> {
        self.to_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// The value as a `u64` when it is a whole number in range.
    pub fn to_u64(&self) -> Option<u64> {
        self.to_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// The nearest double (correctly rounded; ±infinity when too large).
    pub fn to_f64(&self) -> f64 {
        match &self.0 {
            Repr::Infinite { negative: true } => f64::NEG_INFINITY,
            Repr::Infinite { negative: false } => f64::INFINITY,
            Repr::Finite { digits, .. } if digits.is_empty() => 0.0,
            Repr::Finite {
                negative,
                digits,
                exponent,
            } => {
                let mut text = String::with_capacity(digits.len() + 24);
                if *negative {
                    text.push('-');
                }
                text.push_str(&String::from_utf8_lossy(digits));
                text.push('e');
                text.push_str(&exponent.to_string());
                text.parse::<f64>().unwrap_or(f64::NAN)
            }
        }
    }

    /// The double with exactly this value, if there is one.
    pub fn to_exact_f64(&self) -> Option<f64> {
        let nearest = self.to_f64();
        if nearest.is_nan() {
            return None;
        }
        match Number::from_f64(nearest) {
            Some(back) if back == *self => Some(nearest),
            _ => None,
        }
    }

    /// How go-cty's msgpack encoder writes this number: an exact int64 as an integer, else an
    /// exact float64 as a double, else a decimal string.
    pub fn wire_form(&self) -> WireNumber {
        match &self.0 {
            Repr::Infinite { negative } => WireNumber::Float(if *negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            Repr::Finite { .. } => {
                if let Some(int) = self.to_i64() {
                    WireNumber::Int(int)
                } else if let Some(float) = self.to_exact_f64() {
                    WireNumber::Float(float)
                } else {
                    WireNumber::Decimal(self.to_string())
                }
            }
        }
    }
}

impl Default for Number {
    fn default() -> Self {
        Self::zero()
    }
}

impl From<i64> for Number {
    fn from(value: i64) -> Self {
        Self::from_i64(value)
    }
}

impl From<u64> for Number {
    fn from(value: u64) -> Self {
        Self::from_u64(value)
    }
}

impl From<u16> for Number {
    fn from(value: u16) -> Self {
        Self::from_u64(u64::from(value))
    }
}

impl From<u32> for Number {
    fn from(value: u32) -> Self {
        Self::from_u64(u64::from(value))
    }
}

impl From<i32> for Number {
    fn from(value: i32) -> Self {
        Self::from_i64(i64::from(value))
    }
}

impl std::str::FromStr for Number {
    type Err = ParseNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Plain decimal notation without exponent, as Go's `big.Float.Text('f', -1)` prints an exact
/// decimal: `-12.5`, `0.001`, `1000`; infinities as `+Inf`/`-Inf`.
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Infinite { negative } => f.write_str(if *negative { "-Inf" } else { "+Inf" }),
            Repr::Finite { digits, .. } if digits.is_empty() => f.write_str("0"),
            Repr::Finite {
                negative,
                digits,
                exponent,
            } => {
                let digits = String::from_utf8_lossy(digits);
                if *negative {
                    f.write_str("-")?;
                }
                if *exponent >= 0 {
                    f.write_str(&digits)?;
                    for _ in 0..*exponent {
                        f.write_str("0")?;
                    }
                    return Ok(());
                }
                let point = digits.len() as i64 + exponent;
                if point <= 0 {
                    f.write_str("0.")?;
                    for _ in 0..-point {
                        f.write_str("0")?;
                    }
                    f.write_str(&digits)
                } else {
                    let (int, frac) = digits.split_at(point as usize);
                    write!(f, "{int}.{frac}")
                }
            }
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Numeric order.
impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |n: &Number| -> i8 {
            if n.is_zero() {
                0
            } else if n.is_negative() {
                -1
            } else {
                1
            }
        };
        let (a, b) = (sign(self), sign(other));
        if a != b {
            return a.cmp(&b);
        }
        let magnitude = compare_magnitude(&self.0, &other.0);
        if a < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

/// Compares absolute values of two numbers of the same sign.
fn compare_magnitude(a: &Repr, b: &Repr) -> Ordering {
    match (a, b) {
        (Repr::Infinite { .. }, Repr::Infinite { .. }) => Ordering::Equal,
        (Repr::Infinite { .. }, _) => Ordering::Greater,
        (_, Repr::Infinite { .. }) => Ordering::Less,
        (
            Repr::Finite {
                digits: da,
                exponent: ea,
                ..
            },
            Repr::Finite {
                digits: db,
                exponent: eb,
                ..
            },
        ) => {
            if da.is_empty() || db.is_empty() {
                return da.len().min(1).cmp(&db.len().min(1));
            }
            // The position of the most significant digit decides first.
            let ma = da.len() as i64 + ea;
            let mb = db.len() as i64 + eb;
            if ma != mb {
                return ma.cmp(&mb);
            }
            // Same magnitude: compare digit strings, padding the shorter one with zeros.
            let len = da.len().max(db.len());
            for i in 0..len {
                let x = da.get(i).copied().unwrap_or(b'0');
                let y = db.get(i).copied().unwrap_or(b'0');
                if x != y {
                    return x.cmp(&y);
                }
            }
            Ordering::Equal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Number {
        Number::parse(text).expect("test literal parses")
    }

    #[test]
    fn parses_and_prints_plain_decimals() {
        for (input, printed) in [
            ("0", "0"),
            ("-0", "0"),
            ("007", "7"),
            ("1e3", "1000"),
            ("1E+3", "1000"),
            ("0.1", "0.1"),
            (".5", "0.5"),
            ("5.", "5"),
            ("-12.50", "-12.5"),
            ("1e-7", "0.0000001"),
            ("123456789.123456789", "123456789.123456789"),
            ("+42", "42"),
        ] {
            assert_eq!(n(input).to_string(), printed, "input {input}");
        }
    }

    #[test]
    fn rejects_non_numbers() {
        for bad in [
            "", "-", ".", "e5", "1e", "1e+", "1.2.3", "0x10", " 1", "1 ", "abc",
        ] {
            assert_eq!(
                Number::parse(bad),
                Err(ParseNumberError::Invalid(bad.to_owned())),
                "input {bad:?}"
            );
        }
        assert_eq!(
            Number::parse("1e999999"),
            Err(ParseNumberError::OutOfRange("1e999999".to_owned()))
        );
    }

    #[test]
    fn wire_form_follows_go_cty() {
        assert_eq!(n("0").wire_form(), WireNumber::Int(0));
        assert_eq!(n("3.0").wire_form(), WireNumber::Int(3));
        assert_eq!(n("-129").wire_form(), WireNumber::Int(-129));
        assert_eq!(
            n("9223372036854775807").wire_form(),
            WireNumber::Int(i64::MAX)
        );
        // 2^63 and 2^64 are not int64 but are exact doubles.
        assert_eq!(
            n("9223372036854775808").wire_form(),
            WireNumber::Float(9_223_372_036_854_775_808.0)
        );
        assert_eq!(
            n("18446744073709551616").wire_form(),
            WireNumber::Float(18_446_744_073_709_551_616.0)
        );
        assert_eq!(
            n("18446744073709551615").wire_form(),
            WireNumber::Decimal("18446744073709551615".into())
        );
        assert_eq!(n("0.5").wire_form(), WireNumber::Float(0.5));
        assert_eq!(n("0.1").wire_form(), WireNumber::Decimal("0.1".into()));
        assert_eq!(n("1e20").wire_form(), WireNumber::Float(1e20));
        assert_eq!(
            Number::infinity(true).wire_form(),
            WireNumber::Float(f64::NEG_INFINITY)
        );
    }

    #[test]
    fn doubles_convert_exactly() {
        let tenth = Number::from_f64(0.1).expect("finite");
        assert_eq!(
            tenth.to_string(),
            "0.1000000000000000055511151231257827021181583404541015625"
        );
        assert_eq!(tenth.to_exact_f64(), Some(0.1));
        assert_eq!(Number::from_f64(f64::NAN), None);
        assert_eq!(Number::from_f64(-0.0), Some(Number::zero()));
        let tiny = Number::from_f64(f64::from_bits(1)).expect("finite");
        assert_eq!(tiny.to_exact_f64(), Some(f64::from_bits(1)));
    }

    #[test]
    fn integer_conversions_check_range() {
        assert_eq!(n("65535").to_u64(), Some(65535));
        assert_eq!(n("-1").to_u64(), None);
        assert_eq!(n("1.5").to_i64(), None);
        assert_eq!(n("1e2").to_i64(), Some(100));
        assert_eq!(n("18446744073709551615").to_u64(), Some(u64::MAX));
        assert_eq!(n("1e40").to_u64(), None);
    }

    #[test]
    fn orders_numerically() {
        let mut values: Vec<Number> = ["10", "-1", "0.5", "2", "-10.5", "0", "1e3"]
            .into_iter()
            .map(n)
            .collect();
        values.push(Number::infinity(false));
        values.push(Number::infinity(true));
        values.sort();
        let printed: Vec<String> = values.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            ["-Inf", "-10.5", "-1", "0", "0.5", "2", "10", "1000", "+Inf"]
        );
    }
}
