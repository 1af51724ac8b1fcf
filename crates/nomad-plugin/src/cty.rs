//! cty msgpack: how Nomad hands a plugin its `config {}` blocks (protocol doc §4).
//!
//! Nomad decodes a job's `config {}` block with hcldec against the plugin's spec and sends the
//! result encoded with go-cty's msgpack encoding. This module reads those bytes defensively
//! and writes the same bytes go-cty writes. It knows nothing of any particular driver.
//!
//! # Layout
//! - [`decode()`]: bytes → [`rmpv::Value`], tolerant of every form a cty encoder may use.
//! - [`Reader`]: a path-aware cursor for typed decoding; errors ([`FieldError`]) name the
//!   field the way the user wrote it, e.g. `binding[0].port`.
//! - [`Number`]: exact decimal numbers with cty's wire-form rules.
//! - [`Type`] and [`Value`]: the cty type and value model (HCL type expressions parse into
//!   [`Type`]).
//! - [`encode()`] / [`marshal`] / [`marshal_dynamic`]: an encoder that reproduces go-cty's
//!   `msgpack.Marshal` byte for byte.
//!
//! # Example
//! ```
//! use nomad_plugin::cty::{self, Reader};
//!
//! // {"port": "8080"}: a number sent as a decimal string is still a number.
//! let bytes = [0x81, 0xa4, b'p', b'o', b'r', b't', 0xa4, b'8', b'0', b'8', b'0'];
//! let raw = cty::decode(&bytes).unwrap();
//! let port = Reader::new(&raw).field("port").unwrap().u16().unwrap();
//! assert_eq!(port, Some(8080));
//! ```
//!
//! # Errors
//! [`DecodeError`] for bytes that are not msgpack, [`FieldError`] (path + message) for values
//! of the wrong shape, [`EncodeError`] for values that do not fit the type they are
//! marshalled against, [`TypeParseError`] for bad type expressions.

mod decode;
mod encode;
mod number;
mod reader;
mod value;

pub use decode::{DecodeError, decode, normalize};
pub use encode::{EncodeError, encode, map, marshal, marshal_dynamic};
pub use number::{Number, ParseNumberError, WireNumber};
pub use reader::{FieldError, Reader, raw_kind};
pub use value::{Type, TypeParseError, Value};
