//! STUB of the reverse proxy written on branch `proxy`: the interface only, so the worker
//! supervisor compiles and is tested before that branch is merged. Replaced whole by it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Pooled keep-alive client (stub).
#[derive(Debug, Default)]
pub(crate) struct Proxy;

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTarget {
    pub addr: SocketAddr,
    pub token: Option<Arc<str>>,
    pub request_timeout: Duration,
}

/// About the client's request.
#[derive(Debug, Clone)]
pub(crate) struct ForwardInfo {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    pub host: Option<String>,
}

impl Proxy {
    pub(crate) fn new() -> Self {
        Self
    }

    /// Stub: 502.
    pub(crate) async fn forward(
        &self,
        _request: http::Request<hyper::body::Incoming>,
        _target: &UpstreamTarget,
        _info: &ForwardInfo,
    ) -> http::Response<crate::pool::Body> {
        let mut response = http::Response::new(
            Full::new(Bytes::from_static(b"proxy not merged yet\n"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
        response
    }
}
