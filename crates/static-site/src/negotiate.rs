//! Choosing a precompressed variant from `Accept-Encoding`.
//!
//! We never compress on the fly; we only pick `file.br` or `file.gz` when it exists next to the file and
//! the client accepts that coding. Among the acceptable ones the client's higher q-value wins and a tie
//! goes to brotli, which is smaller.

use http::HeaderValue;
use http::header::{ACCEPT_ENCODING, HeaderMap};

/// A content coding of a stored variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The file itself.
    Identity,
    /// `file.br`.
    Brotli,
    /// `file.gz`.
    Gzip,
}

impl Encoding {
    /// The precompressed codings, in order of preference on a tie.
    pub(crate) const COMPRESSED: [Encoding; 2] = [Encoding::Brotli, Encoding::Gzip];

    /// The suffix of the sibling file holding this variant.
    pub(crate) fn file_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` value, if any.
    pub(crate) fn content_encoding(self) -> Option<HeaderValue> {
        match self {
            Encoding::Identity => None,
            Encoding::Brotli => Some(HeaderValue::from_static("br")),
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
        }
    }

    /// A suffix that keeps the ETags of different variants of one file distinct.
    pub(crate) fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Brotli => "-br",
            Encoding::Gzip => "-gz",
        }
    }
}

/// The compressed codings a request accepts, best first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Preference {
    order: [Option<Encoding>; 2],
}

impl Preference {
    /// Reads `Accept-Encoding`: the client's higher q-value first, brotli first on a tie, refused and
    /// unknown codings left out.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut brotli = None;
        let mut gzip = None;
        let mut any = None;
        for value in headers.get_all(ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let quality = parts
                    .filter_map(|parameter| {
                        let (name, value) = parameter.split_once('=')?;
                        name.trim()
                            .eq_ignore_ascii_case("q")
                            .then(|| parse_quality(value.trim()))
                    })
                    .next()
                    .unwrap_or(Some(1000))
                    .unwrap_or(0);
                let slot = if coding.eq_ignore_ascii_case("br") {
                    &mut brotli
                } else if coding.eq_ignore_ascii_case("gzip")
                    || coding.eq_ignore_ascii_case("x-gzip")
                {
                    &mut gzip
                } else if coding == "*" {
                    &mut any
                } else {
                    continue;
                };
                *slot = Some(quality);
            }
        }
        let brotli = brotli.or(any).unwrap_or(0);
        let gzip = gzip.or(any).unwrap_or(0);
        let accepted = |encoding, quality| (quality > 0).then_some(encoding);
        let order = if gzip > brotli {
            [
                accepted(Encoding::Gzip, gzip),
                accepted(Encoding::Brotli, brotli),
            ]
        } else {
            [
                accepted(Encoding::Brotli, brotli),
                accepted(Encoding::Gzip, gzip),
            ]
        };
        Preference { order }
    }

    /// The best accepted coding for which `available` holds, or identity.
    pub(crate) fn pick(&self, available: impl Fn(Encoding) -> bool) -> Encoding {
        self.order
            .iter()
            .flatten()
            .copied()
            .find(|encoding| available(*encoding))
            .unwrap_or(Encoding::Identity)
    }
}

/// Parses a q-value into thousandths; `None` when malformed (the coding then counts as refused).
fn parse_quality(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (position, digit) in fraction.bytes().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][position];
    }
    let quality = whole + thousandths;
    (quality <= 1000).then_some(quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str, brotli: bool, gzip: bool) -> Encoding {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
        Preference::from_headers(&headers).pick(|encoding| match encoding {
            Encoding::Brotli => brotli,
            Encoding::Gzip => gzip,
            Encoding::Identity => true,
        })
    }

    #[test]
    fn brotli_is_preferred_on_a_tie() {
        assert_eq!(pick("gzip, deflate, br", true, true), Encoding::Brotli);
        assert_eq!(pick("gzip, deflate, br", false, true), Encoding::Gzip);
        assert_eq!(pick("gzip, deflate, br", false, false), Encoding::Identity);
    }

    #[test]
    fn quality_values_are_honoured() {
        assert_eq!(pick("br;q=0.5, gzip", true, true), Encoding::Gzip);
        assert_eq!(pick("br;q=0, gzip;q=0", true, true), Encoding::Identity);
        assert_eq!(pick("br; q=0.9, gzip;q=0.8", true, true), Encoding::Brotli);
        assert_eq!(pick("*", true, true), Encoding::Brotli);
        assert_eq!(pick("*;q=0.1, br;q=0", true, true), Encoding::Gzip);
        assert_eq!(pick("br;q=2", true, false), Encoding::Identity);
        assert_eq!(pick("identity", true, true), Encoding::Identity);
    }

    #[test]
    fn no_header_means_identity() {
        let headers = HeaderMap::new();
        assert_eq!(
            Preference::from_headers(&headers).pick(|_| true),
            Encoding::Identity
        );
    }
}
