//! Serving a folder of static files over HTTP, the way IIS's static file handler and the HTTP.sys kernel
//! cache do: small hot files answered from memory, everything else streamed from disk.
//!
//! The site host routes a request to an application (host header, longest path alias) and calls
//! [`StaticSite::serve`] with the path remainder below the alias. This crate knows nothing of routing,
//! pools or listeners; it owns one folder.
//!
//! ```no_run
//! # async fn example(request: http::Request<()>) -> Result<(), static_site::Error> {
//! use static_site::{Options, StaticSite};
//! let site = StaticSite::new("/srv/www".into(), Options::default())?;
//! let response = site.serve(request.method(), request.uri().path(), request.headers()).await;
//! # let _ = response; Ok(()) }
//! ```
//!
//! # Behaviour
//! - GET and HEAD; anything else is 405 with `Allow: GET, HEAD`.
//! - The remainder is percent-decoded; encoded separators (`%2F`, `%5C`), NUL, invalid UTF-8, backslashes
//!   and `.`/`..` segments (also encoded) are 400. Nothing outside the canonical root is served: a symlink
//!   leading out is 404, like a missing file. IIS's default request filtering applies (404): hidden
//!   segments such as `bin`, `App_Data`, `web.config` and denied extensions such as `.config`, `.cs`,
//!   `.mdf`, `.asax`, `.cshtml` (see [`filter`]).
//! - An empty remainder is the root directory, served like `/`. The host should redirect `/alias` to
//!   `/alias/` itself before calling us (it knows the alias; we cannot build that `Location`), or relative
//!   links in the root's default document resolve against the wrong folder.
//! - A directory without its trailing slash is 301 to the slash form (relative `Location`); with the
//!   slash, its first existing default document; without one, 404. Never a listing.
//! - `Content-Type` from the extension (text types with `charset=utf-8`), `Content-Length`,
//!   `Last-Modified`, a strong `ETag`, `Accept-Ranges: bytes`; `If-Match`, `If-Unmodified-Since`,
//!   `If-None-Match`, `If-Modified-Since` (304, 412); one byte range per request (206 / 416, `If-Range`),
//!   several ranges are answered with the whole file (200).
//! - `file.br` / `file.gz` next to a file are sent to clients that accept them, with `Content-Encoding`
//!   and `Vary: Accept-Encoding` (sent whenever such a sibling exists).
//! - Error statuses carry a short plain-text body.
//!
//! # Cache
//! Files up to [`Options::cache_max_file_size`] are kept in memory with prebuilt header values, up to
//! [`Options::cache_max_total`] in all (least recently used out first). A hit touches no file; inotify
//! keeps the cache true: a request that starts [`CHANGE_VISIBLE_AFTER`] (100 µs) or more after a change
//! completed sees it (see `watch` for why not zero). If inotify is not available (or its watch limit is
//! reached), cached files are revalidated by `stat` at most once a second instead, so a change may then
//! take up to a second to show.
//!
//! Known limits of the invalidation: a file edited through a hard link in a folder we do not watch is
//! not noticed; nor is the middle link of a symlink chain that runs through a third folder (we watch the
//! requested path and the final target). The `stat` fallback cannot tell a rewrite that keeps size,
//! inode and modification time (same clock tick). `flush_cache` covers all of these.
//!
//! # Layout
//! - `request_path`: decoding and checking the remainder.
//! - [`filter`]: IIS's request filtering (hidden segments, denied extensions) and recognising a
//!   classic ASP.NET application folder.
//! - `lookup`: the blocking file system side of a miss: containment, default documents, siblings,
//!   reading or opening files, which directories to watch.
//! - `cache`: the entries, their dependencies on names in watched directories, eviction, statistics.
//! - `watch`: the process-wide inotify instance, drained by requests (at most every 100 µs).
//! - `negotiate`: `Accept-Encoding`.
//! - `conditional`: preconditions and byte ranges.
//! - `response`: representations with prebuilt header values, and the responses themselves.
//! - `file_body`: streaming large files in chunks.
//! - [`budget`]: the process-wide response buffer budget and shared descriptors for streamed files.
//!
//! # Errors
//! [`StaticSite::new`] returns [`Error`] (the root cannot be used). [`StaticSite::serve`] never fails: every
//! problem is an HTTP status (400, 403, 404, 405, 412, 416, 500), and unexpected I/O errors are logged
//! with `tracing` at `warn`.

#![forbid(unsafe_code)]

pub mod budget;
mod cache;
mod conditional;
mod file_body;
pub mod filter;
mod lookup;
mod negotiate;
mod request_path;
mod response;
mod watch;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};

use crate::cache::{Cache, Entry, Fingerprint, Validation};
use crate::lookup::{Loaded, Resolution, Settings};
use crate::negotiate::{Encoding, Preference};
use crate::request_path::RequestPath;
use crate::response::{Content, FileHeaders};
use crate::watch::Watcher;

/// The body of every response from this crate.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// How long a cached file may go unchecked when inotify is not available.
const REVALIDATE_AFTER: Duration = Duration::from_secs(1);

/// With inotify, a change to a file is seen by every request that starts at least this long after the
/// change completed (a write returned, a rename was done). Requests closer to it may still get the
/// cached copy.
pub const CHANGE_VISIBLE_AFTER: Duration = Duration::from_micros(100);

/// Settings of a [`StaticSite`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Files up to this size (and their precompressed siblings) are cached in memory; default 256 KiB.
    pub cache_max_file_size: u64,
    /// The cache's total size; default 64 MiB.
    pub cache_max_total: u64,
    /// File names tried, in order, for a directory request; default `index.html`, `index.htm`,
    /// `default.htm`, `default.html`, `iisstart.htm` (IIS's start page, which the site host
    /// writes into an empty application folder).
    pub default_documents: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_max_file_size: 256 * 1024,
            cache_max_total: 64 * 1024 * 1024,
            default_documents: [
                "index.html",
                "index.htm",
                "default.htm",
                "default.html",
                "iisstart.htm",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// A snapshot of a site's cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Cached request paths.
    pub entries: usize,
    /// Bytes held, precompressed siblings included.
    pub bytes: u64,
    /// Requests answered from memory.
    pub hits: u64,
    /// GET and HEAD requests not answered from memory (including those refused as malformed).
    pub misses: u64,
}

/// Why a site cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root folder does not exist or cannot be resolved.
    #[error("cannot resolve static site root {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The root exists but is not a folder.
    #[error("static site root {path} is not a directory")]
    NotADirectory { path: PathBuf },
}

/// One folder served over HTTP (an application root or a virtual directory).
///
/// Cheap to share behind an `Arc`; all methods take `&self`.
pub struct StaticSite {
    inner: Arc<Inner>,
}

struct Inner {
    /// Canonical, so containment checks compare canonical paths.
    root: PathBuf,
    options: Options,
    /// Shared with the watcher, which holds it weakly and applies changes to it.
    cache: Arc<Cache>,
    /// `None` when inotify is not available: entries are then revalidated by `stat`.
    watcher: Option<Arc<Watcher>>,
    revalidate_after: Duration,
    /// The origin of the millisecond clock used for revalidation deadlines.
    clock_start: Instant,
}

/// What the blocking half of a miss found.
enum Outcome {
    /// The stale entry's files are unchanged (stat revalidation): serve it.
    Unchanged,
    NotFound,
    Forbidden,
    Redirect(String),
    Loaded(Loaded),
}

impl StaticSite {
    /// Serves the folder `root` (canonicalized here; it must be a directory).
    pub fn new(root: PathBuf, options: Options) -> Result<Self, Error> {
        Self::with_watcher(root, options, Watcher::global(), REVALIDATE_AFTER)
    }

    fn with_watcher(
        root: PathBuf,
        options: Options,
        watcher: Option<Arc<Watcher>>,
        revalidate_after: Duration,
    ) -> Result<Self, Error> {
        let canonical = std::fs::canonicalize(&root).map_err(|source| Error::Root {
            path: root.clone(),
            source,
        })?;
        let is_dir = std::fs::metadata(&canonical)
            .map_err(|source| Error::Root {
                path: root.clone(),
                source,
            })?
            .is_dir();
        if !is_dir {
            return Err(Error::NotADirectory { path: root });
        }
        let cache = Arc::new(Cache::new(options.cache_max_total));
        if let Some(watcher) = &watcher {
            watcher.register(&cache);
        }
        Ok(StaticSite {
            inner: Arc::new(Inner {
                root: canonical,
                options,
                cache,
                watcher,
                revalidate_after,
                clock_start: Instant::now(),
            }),
        })
    }

    /// The canonical root folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Answers a request for `remainder`, the still-percent-encoded request path below the alias,
    /// starting with `/` (or empty).
    pub async fn serve(
        &self,
        method: &Method,
        remainder: &str,
        headers: &HeaderMap,
    ) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            return response::method_not_allowed();
        }
        let inner = &self.inner;
        if let Some(watcher) = &inner.watcher {
            watcher.sync_if_due();
        }
        let looked_up = inner.cache.with_entry(remainder, |entry| {
            let fresh = match &entry.validation {
                Validation::Watched => true,
                Validation::Revalidate { next_check, .. } => !inner.claim_revalidation(next_check),
            };
            if fresh {
                Ok(from_entry(method, headers, entry))
            } else {
                Err(Arc::clone(entry))
            }
        });
        let stale = match looked_up {
            Some(Ok(response)) => {
                inner.cache.record_hit();
                return response;
            }
            Some(Err(stale)) => Some(stale),
            None => None,
        };
        inner.cache.record_miss();
        self.miss(method, remainder, headers, stale).await
    }

    /// Drops every cached file (a recycle of the site's pool calls this).
    pub fn flush_cache(&self) {
        self.inner.cache.flush();
    }

    /// The cache's size and counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    async fn miss(
        &self,
        method: &Method,
        remainder: &str,
        headers: &HeaderMap,
        stale: Option<Arc<Entry>>,
    ) -> Response<Body> {
        let path = match request_path::parse(remainder) {
            Ok(path) => path,
            Err(error) => {
                tracing::debug!(remainder, %error, "refusing request path");
                return response::error(StatusCode::BAD_REQUEST);
            }
        };
        if filter::denies_segments(&path.segments) {
            return response::error(StatusCode::NOT_FOUND);
        }
        let cache = &self.inner.cache;
        // Taken before the lookup watches and reads anything; see `cache`.
        let since = cache.change_sequence();
        let preference = Preference::from_headers(headers);
        let stale_fingerprint = stale.as_ref().and_then(|entry| match &entry.validation {
            Validation::Revalidate { fingerprint, .. } => Some(fingerprint.clone()),
            Validation::Watched => None,
        });
        let inner = Arc::clone(&self.inner);
        let outcome = tokio::task::spawn_blocking(move || {
            inner.lookup(&path, stale_fingerprint.as_ref(), preference)
        })
        .await;
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => {
                tracing::warn!(root = %self.inner.root.display(), remainder, %error, "cannot serve static file");
                return self.fail(remainder, stale, StatusCode::INTERNAL_SERVER_ERROR);
            }
            Err(error) => {
                tracing::warn!(root = %self.inner.root.display(), remainder, %error, "static file lookup task failed");
                return self.fail(remainder, stale, StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        match outcome {
            Outcome::Unchanged => match stale {
                Some(entry) => from_entry(method, headers, &entry),
                None => response::error(StatusCode::INTERNAL_SERVER_ERROR),
            },
            Outcome::NotFound => self.fail(remainder, stale, StatusCode::NOT_FOUND),
            Outcome::Forbidden => self.fail(remainder, stale, StatusCode::FORBIDDEN),
            Outcome::Redirect(location) => {
                self.forget(remainder, stale);
                response::moved_permanently(&location)
            }
            Outcome::Loaded(Loaded::Cached(entry)) => {
                let entry = Arc::new(entry);
                if !cache.insert(remainder, Arc::clone(&entry), since) {
                    self.forget(remainder, stale);
                }
                from_entry(method, headers, &entry)
            }
            Outcome::Loaded(Loaded::Stream {
                file,
                representation,
                content_type,
                vary,
            }) => {
                self.forget(remainder, stale);
                response::representation(
                    method,
                    headers,
                    &representation,
                    FileHeaders {
                        content_type: &content_type,
                        vary,
                    },
                    Content::File(file),
                )
            }
        }
    }

    fn fail(
        &self,
        remainder: &str,
        stale: Option<Arc<Entry>>,
        status: StatusCode,
    ) -> Response<Body> {
        self.forget(remainder, stale);
        response::error(status)
    }

    /// Drops a revalidated entry that turned out stale.
    fn forget(&self, remainder: &str, stale: Option<Arc<Entry>>) {
        if let Some(stale) = stale {
            self.inner.cache.remove_if_same(remainder, &stale);
        }
    }
}

impl fmt::Debug for StaticSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticSite")
            .field("root", &self.inner.root)
            .field("options", &self.inner.options)
            .field("inotify", &self.inner.watcher.is_some())
            .field("cache", &self.inner.cache.stats())
            .finish()
    }
}

impl Inner {
    fn clock_ms(&self) -> u64 {
        u64::try_from(self.clock_start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this request should revalidate an entry: its deadline passed and no other request took
    /// the job first (the others keep serving the cached copy meanwhile).
    fn claim_revalidation(&self, next_check: &AtomicU64) -> bool {
        let now = self.clock_ms();
        let due = next_check.load(Ordering::Relaxed);
        if due > now {
            return false;
        }
        let next = now.saturating_add(millis(self.revalidate_after));
        next_check
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The blocking half of a miss.
    fn lookup(
        &self,
        path: &RequestPath,
        stale: Option<&Fingerprint>,
        preference: Preference,
    ) -> io::Result<Outcome> {
        let settings = Settings {
            root: &self.root,
            default_documents: &self.options.default_documents,
            cache_max_file_size: self.options.cache_max_file_size,
            cache_max_total: self.options.cache_max_total,
            watcher: self.watcher.as_deref(),
            next_check: self
                .clock_ms()
                .saturating_add(millis(self.revalidate_after)),
        };
        Ok(match lookup::resolve(&settings, path)? {
            Resolution::NotFound => Outcome::NotFound,
            Resolution::Forbidden => Outcome::Forbidden,
            Resolution::Redirect(location) => Outcome::Redirect(location),
            Resolution::File(found) => {
                if stale.is_some_and(|stale| *stale == found.fingerprint()) {
                    Outcome::Unchanged
                } else {
                    Outcome::Loaded(lookup::load(&settings, found, preference)?)
                }
            }
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Answers from a cache entry: picks the variant, then conditionals and ranges.
fn from_entry(method: &Method, headers: &HeaderMap, entry: &Entry) -> Response<Body> {
    let encoding = if entry.varies() {
        Preference::from_headers(headers).pick(|encoding| entry.variant(encoding).is_some())
    } else {
        Encoding::Identity
    };
    let Some(variant) = entry.variant(encoding) else {
        return response::error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    response::representation(
        method,
        headers,
        &variant.representation,
        FileHeaders {
            content_type: &entry.content_type,
            vary: entry.varies(),
        },
        Content::Memory(variant.bytes.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A site without inotify, as on a machine where it cannot be set up.
    fn unwatched(revalidate_after: Duration) -> (tempfile::TempDir, StaticSite) {
        let temp = tempfile::tempdir().unwrap();
        let site = StaticSite::with_watcher(
            temp.path().to_path_buf(),
            Options::default(),
            None,
            revalidate_after,
        )
        .unwrap();
        (temp, site)
    }

    async fn get(site: &StaticSite, remainder: &str) -> (StatusCode, String) {
        let response = site.serve(&Method::GET, remainder, &HeaderMap::new()).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn without_inotify_cached_files_are_revalidated_by_stat() {
        let (temp, site) = unwatched(Duration::ZERO);
        let path = temp.path().join("f.txt");
        std::fs::write(&path, "one").unwrap();
        assert_eq!(get(&site, "/f.txt").await, (StatusCode::OK, "one".into()));
        assert_eq!(get(&site, "/f.txt").await, (StatusCode::OK, "one".into()));
        assert_eq!(site.cache_stats().entries, 1, "unchanged: the entry stays");

        std::fs::write(&path, "two, longer").unwrap();
        assert_eq!(
            get(&site, "/f.txt").await,
            (StatusCode::OK, "two, longer".into())
        );

        let staged = temp.path().join("staged");
        std::fs::write(&staged, "three, renamed").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        assert_eq!(
            get(&site, "/f.txt").await,
            (StatusCode::OK, "three, renamed".into())
        );

        std::fs::remove_file(&path).unwrap();
        assert_eq!(get(&site, "/f.txt").await.0, StatusCode::NOT_FOUND);
        assert_eq!(site.cache_stats().entries, 0, "the stale entry is dropped");
    }

    #[tokio::test]
    async fn without_inotify_a_hit_does_not_touch_the_file_before_its_deadline() {
        let (temp, site) = unwatched(Duration::from_secs(3600));
        let path = temp.path().join("f.txt");
        std::fs::write(&path, "one").unwrap();
        assert_eq!(get(&site, "/f.txt").await.1, "one");
        std::fs::write(&path, "two, longer").unwrap();
        assert_eq!(get(&site, "/f.txt").await.1, "one", "served from memory");
        assert_eq!(site.cache_stats().hits, 1);
    }
}
