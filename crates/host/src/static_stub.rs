//! A stand-in for the `static-site` crate with the same API, used until that crate lands on
//! main; the host switches by replacing `use crate::static_stub as static_site` in `pool.rs`.
//!
//! It serves GET and HEAD from a folder with the given default documents, refuses `..`, keeps
//! small files in memory until [`StaticSite::flush_cache`], streams large ones, and answers
//! everything else with a plain status. No ranges, no conditional requests: the real crate
//! does those.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

/// The response body type shared with the host.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// Serving options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files up to this size are kept in memory.
    pub cache_max_file_size: u64,
    /// The cache never holds more than this many bytes.
    pub cache_max_total: u64,
    /// Files tried, in order, for a folder.
    pub default_documents: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_max_file_size: 256 * 1024,
            cache_max_total: 64 * 1024 * 1024,
            default_documents: ["Default.htm", "Default.asp", "index.htm", "index.html"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Why a site could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root is missing or not a folder.
    #[error("root folder {path}: {reason}")]
    Root {
        /// The root.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One folder served over HTTP.
#[derive(Debug)]
pub struct StaticSite {
    root: PathBuf,
    options: Options,
    /// Path → content of small files read before; the total stays under `cache_max_total`.
    cache: Mutex<(HashMap<PathBuf, Bytes>, u64)>,
}

impl StaticSite {
    /// A site serving `root`, which must be a folder.
    pub fn new(root: PathBuf, options: Options) -> Result<Self, Error> {
        match std::fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => Ok(Self {
                root,
                options,
                cache: Mutex::new((HashMap::new(), 0)),
            }),
            Ok(_) => Err(Error::Root {
                path: root,
                reason: "not a folder".into(),
            }),
            Err(e) => Err(Error::Root {
                reason: crate::error::describe_io(&e),
                path: root,
            }),
        }
    }

    /// Answers one request for `remainder` (percent-encoded, below the site's alias).
    pub async fn serve(
        &self,
        method: &Method,
        remainder: &str,
        _headers: &HeaderMap,
    ) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(relative) = relative_path(remainder) else {
            return status(StatusCode::NOT_FOUND);
        };
        let mut path = self.root.join(relative);
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            let mut found = None;
            for document in &self.options.default_documents {
                let candidate = path.join(document);
                if tokio::fs::metadata(&candidate)
                    .await
                    .is_ok_and(|m| m.is_file())
                {
                    found = Some(candidate);
                    break;
                }
            }
            match found {
                Some(candidate) => path = candidate,
                None => return status(StatusCode::NOT_FOUND),
            }
        }
        let (length, body) = match self.open(&path).await {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return status(StatusCode::NOT_FOUND),
            Err(_) => return status(StatusCode::FORBIDDEN),
        };
        let mut response = Response::new(if method == Method::HEAD {
            full(Bytes::new())
        } else {
            body
        });
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&path)),
        );
        response
    }

    /// Forgets every cached file.
    pub fn flush_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.0.clear();
            cache.1 = 0;
        }
    }

    /// The file's length and body: from the cache, read whole and cached when small,
    /// streamed in chunks when large.
    async fn open(&self, path: &Path) -> io::Result<(u64, Body)> {
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.0.get(path).cloned()) {
            return Ok((hit.len() as u64, full(hit)));
        }
        let file = tokio::fs::File::open(path).await?;
        let size = file.metadata().await?.len();
        if size > self.options.cache_max_file_size {
            return Ok((size, stream(file)));
        }
        let content = Bytes::from(tokio::fs::read(path).await?);
        if let Ok(mut cache) = self.cache.lock()
            && cache.1 + size <= self.options.cache_max_total
        {
            cache.1 += size;
            cache.0.insert(path.to_path_buf(), content.clone());
        }
        Ok((content.len() as u64, full(content)))
    }
}

/// The decoded remainder as a relative path, `None` for `..`, NUL or bad encoding.
fn relative_path(remainder: &str) -> Option<PathBuf> {
    let decoded = crate::router::percent_decode(remainder)?;
    let decoded = String::from_utf8(decoded).ok()?;
    let mut path = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\0') => return None,
            s => path.push(s),
        }
    }
    Some(path)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn full(content: Bytes) -> Body {
    Full::new(content)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body reading `file` in 64 KiB chunks as the connection takes them.
fn stream(file: tokio::fs::File) -> Body {
    use tokio::io::AsyncReadExt;
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buffer))), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(format!("{code}\n"))));
    *response.status_mut() = code;
    response
}
