//! Shared helpers for the integration tests: a site in a temporary folder and a request helper.
//!
//! Each site lives in `<tempdir>/root`, so tests can place files *outside* the root (in `<tempdir>`)
//! to check that nothing escapes it. The temporary folder is removed when the `TestSite` drops, also
//! when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use static_site::{Options, StaticSite};

pub struct TestSite {
    pub temp: tempfile::TempDir,
    pub site: StaticSite,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }
}

impl TestSite {
    pub fn new() -> Self {
        Self::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Self {
        let temp = tempfile::tempdir().expect("temporary folder");
        std::fs::create_dir(temp.path().join("root")).expect("root folder");
        let site = StaticSite::new(temp.path().join("root"), options).expect("site");
        TestSite { temp, site }
    }

    pub fn root(&self) -> PathBuf {
        self.temp.path().join("root")
    }

    /// The folder holding the root, i.e. outside the site.
    pub fn outside(&self) -> &Path {
        self.temp.path()
    }

    /// Writes `contents` to `relative` below the root, creating folders as needed.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parent folders");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Waits until changes made on disk so far are visible to the next request.
    pub async fn settle(&self) {
        tokio::time::sleep(static_site::CHANGE_VISIBLE_AFTER).await;
    }

    pub async fn get(&self, remainder: &str) -> Reply {
        self.request(Method::GET, remainder, &[]).await
    }

    pub async fn get_with(&self, remainder: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, remainder, headers).await
    }

    pub async fn request(
        &self,
        method: Method,
        remainder: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let response = self.site.serve(&method, remainder, &map).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}
