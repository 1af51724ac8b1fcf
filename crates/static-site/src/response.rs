//! Building responses: a file's representation (its prebuilt header values) and the answer to a request
//! for it, plus the small error responses.
//!
//! Header values are built once per file version and cloned per request; a `HeaderValue` clone is a
//! reference-count increment, which keeps the cache hit path free of formatting.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    LAST_MODIFIED, LOCATION, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use crate::Body;
use crate::conditional::{self, Precondition, RangeRequest};
use crate::file_body::FileBody;
use crate::negotiate::Encoding;

/// The validators and prebuilt header values of one stored variant (the file, `.br` or `.gz`).
#[derive(Debug, Clone)]
pub(crate) struct Representation {
    pub(crate) encoding: Encoding,
    pub(crate) len: u64,
    /// `Content-Length` of the whole variant.
    pub(crate) content_length: HeaderValue,
    /// Strong: `"<inode>-<mtime in ns>-<length>[-br|-gz]"`, all hex, so a replaced or edited file gets a
    /// new tag whether it is served from memory or streamed.
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: HeaderValue,
    /// The modification time truncated to seconds, as HTTP dates carry it.
    pub(crate) modified: SystemTime,
}

impl Representation {
    /// Describes `len` bytes read (or to be read) from a file whose `fstat` gave `metadata`.
    pub(crate) fn new(metadata: &std::fs::Metadata, len: u64, encoding: Encoding) -> Self {
        let nanos =
            i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
        let etag = format!(
            "\"{:x}-{:x}-{:x}{}\"",
            metadata.ino(),
            nanos,
            len,
            encoding.etag_suffix()
        );
        let modified = u64::try_from(metadata.mtime()).map_or(UNIX_EPOCH, |seconds| {
            UNIX_EPOCH + Duration::from_secs(seconds)
        });
        Representation {
            encoding,
            len,
            content_length: HeaderValue::from(len),
            etag: header_value(etag),
            last_modified: header_value(httpdate::fmt_http_date(modified)),
            modified,
        }
    }
}

/// Where the bytes of a representation come from.
pub(crate) enum Content {
    /// The cache (or a fresh read of a small file): ranges are cheap slices.
    Memory(Bytes),
    /// An open file, streamed in chunks (its descriptor shared with other responses).
    File(std::sync::Arc<std::fs::File>),
}

/// What a response needs to know about the file beyond the chosen variant.
pub(crate) struct FileHeaders<'a> {
    pub(crate) content_type: &'a HeaderValue,
    /// Whether precompressed siblings exist, so caches must key on `Accept-Encoding`.
    pub(crate) vary: bool,
}

/// Answers a GET or HEAD for `representation`, honouring preconditions and a single byte range.
pub(crate) fn representation(
    method: &Method,
    request: &HeaderMap,
    representation: &Representation,
    file: FileHeaders<'_>,
    content: Content,
) -> Response<Body> {
    // Requests without conditional or range headers (most of them) skip their evaluation.
    let conditional = conditional::any_present(request);
    let etag = if conditional {
        representation.etag.to_str().unwrap_or_default()
    } else {
        ""
    };
    let mut headers = HeaderMap::with_capacity(9);
    headers.insert(ETAG, detached(&representation.etag));
    headers.insert(LAST_MODIFIED, detached(&representation.last_modified));
    if file.vary {
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let precondition = if conditional {
        conditional::evaluate(request, etag, representation.modified)
    } else {
        Precondition::Proceed
    };
    match precondition {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            return with_headers(StatusCode::NOT_MODIFIED, headers, empty());
        }
        Precondition::Failed => {
            return error_with(StatusCode::PRECONDITION_FAILED, headers);
        }
    }
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(CONTENT_TYPE, file.content_type.clone());
    if let Some(encoding) = representation.encoding.content_encoding() {
        headers.insert(CONTENT_ENCODING, encoding);
    }
    let len = representation.len;
    // Range is only defined for GET; a HEAD describes the whole representation.
    let range = if conditional && method == Method::GET {
        conditional::range(request, etag, representation.modified, len)
    } else {
        RangeRequest::Full
    };
    let (status, start, count) = match range {
        RangeRequest::Full => {
            headers.insert(CONTENT_LENGTH, detached(&representation.content_length));
            (StatusCode::OK, 0, len)
        }
        RangeRequest::Partial { start, end } => {
            let count = end - start + 1;
            headers.insert(CONTENT_LENGTH, HeaderValue::from(count));
            headers.insert(
                CONTENT_RANGE,
                header_value(format!("bytes {start}-{end}/{len}")),
            );
            (StatusCode::PARTIAL_CONTENT, start, count)
        }
        RangeRequest::Unsatisfiable => {
            headers.remove(CONTENT_ENCODING);
            headers.insert(CONTENT_RANGE, header_value(format!("bytes */{len}")));
            return error_with(StatusCode::RANGE_NOT_SATISFIABLE, headers);
        }
    };
    let body = if method == Method::HEAD {
        empty()
    } else {
        match content {
            // The whole body: hand over our clone rather than slice it (a second reference count).
            Content::Memory(bytes) if start == 0 && count == bytes.len() as u64 => full(bytes),
            Content::Memory(bytes) => {
                // Both bounds lie within the representation, which is `bytes` itself.
                let start = usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = usize::try_from(start as u64 + count)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                full(bytes.slice(start..end))
            }
            Content::File(file) => FileBody::new(file, start, count).boxed_unsync(),
        }
    };
    with_headers(status, headers, body)
}

/// A copy of a prebuilt header value that shares nothing with it.
///
/// Cloning would only bump a reference count, but that count lives in one cache line that every core
/// serving the same hot file writes twice per request (clone and drop); a short copy into a fresh
/// allocation is cheaper as soon as two cores compete.
fn detached(value: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
}

/// A small plain-text error response such as `404 Not Found`.
pub(crate) fn error(status: StatusCode) -> Response<Body> {
    error_with(status, HeaderMap::with_capacity(2))
}

/// 405 with the methods we do support.
pub(crate) fn method_not_allowed() -> Response<Body> {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    error_with(StatusCode::METHOD_NOT_ALLOWED, headers)
}

/// 301 to `location` (relative to the request's URL).
pub(crate) fn moved_permanently(location: &str) -> Response<Body> {
    let mut headers = HeaderMap::with_capacity(3);
    match HeaderValue::from_str(location) {
        Ok(value) => headers.insert(LOCATION, value),
        // The location is built from the request's own path, which was a valid header-safe string.
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR),
    };
    error_with(StatusCode::MOVED_PERMANENTLY, headers)
}

fn error_with(status: StatusCode, mut headers: HeaderMap) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    with_headers(status, headers, full(Bytes::from(text)))
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Builds a header value from text we formatted ourselves (hex digits, HTTP dates, MIME types).
pub(crate) fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
