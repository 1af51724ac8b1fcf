//! [`ApiError`]: every failure of a route, with its HTTP status, as a JSON body
//! `{"status": 404, "error": "…"}`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// A failed request: the status and a lowercase message naming the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 502: the site host did not answer or refused.
    pub fn host(error: &control::ClientError) -> Self {
        match error {
            control::ClientError::Refused(message) => Self::conflict(message.clone()),
            control::ClientError::Timeout { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, format!("site host: {error}"))
            }
            _ => Self::new(StatusCode::BAD_GATEWAY, format!("site host: {error}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": self.status.as_u16(),
            "error": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}
