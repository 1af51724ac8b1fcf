//! gRPC error statuses in the shape Nomad reads them.
//!
//! Nomad decides whether a failed `StartTask` may be retried by its restart policy by looking
//! for a `hashicorp.nomad.plugins.shared.structs.RecoverableError` detail inside the
//! `google.rpc.Status` that gRPC carries in the `grpc-status-details-bin` trailer. Without that
//! detail every failure is treated as unrecoverable.
//!
//! - [`recoverable`] builds a status carrying the detail with `recoverable = true`.
//! - [`fatal`] builds a plain status without details.
//! - [`is_recoverable`] reads the detail back (used by tests and by harnesses playing Nomad).

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use crate::proto::structs::RecoverableError;

/// The fully qualified protobuf name of Nomad's recoverable-error detail.
pub const RECOVERABLE_ERROR_TYPE_NAME: &str =
    "hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// The `google.protobuf.Any` type URL under which the recoverable-error detail is attached.
pub const RECOVERABLE_ERROR_TYPE_URL: &str =
    "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// The `google.rpc.Status` message, written by hand because only these three fields matter.
///
/// gRPC peers decode the `grpc-status-details-bin` trailer as this message; grpc-go rejects a
/// status whose `code` or `message` here disagree with the `grpc-status`/`grpc-message`
/// headers, so [`recoverable`] always fills them from the same values.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The numeric gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The developer-facing error message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details, each packed as `google.protobuf.Any`.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// Builds an error status that Nomad treats as recoverable, so the task's restart policy applies.
pub fn recoverable(code: Code, message: impl Into<String>) -> Status {
    let message = message.into();
    let detail = prost_types::Any {
        type_url: RECOVERABLE_ERROR_TYPE_URL.to_owned(),
        value: RecoverableError { recoverable: true }.encode_to_vec(),
    };
    let rpc_status = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![detail],
    };
    Status::with_details(code, message, Bytes::from(rpc_status.encode_to_vec()))
}

/// Builds an error status without details, which Nomad treats as unrecoverable.
pub fn fatal(code: Code, message: impl Into<String>) -> Status {
    Status::new(code, message)
}

/// Reports whether `status` carries a `RecoverableError` detail with `recoverable = true`.
///
/// Undecodable details count as "not recoverable", the same conclusion Nomad would reach.
/// The type URL's host part is ignored, as protobuf's `Any` resolution does.
pub fn is_recoverable(status: &Status) -> bool {
    let Ok(rpc_status) = RpcStatus::decode(status.details()) else {
        return false;
    };
    rpc_status.details.iter().any(|detail| {
        let type_name = detail
            .type_url
            .rsplit_once('/')
            .map_or(detail.type_url.as_str(), |(_, name)| name);
        type_name == RECOVERABLE_ERROR_TYPE_NAME
            && RecoverableError::decode(detail.value.as_slice()).is_ok_and(|e| e.recoverable)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recoverable_round_trips_and_keeps_code_and_message() {
        let status = recoverable(Code::Unavailable, "port 8080 is busy");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "port 8080 is busy");
        assert!(is_recoverable(&status));

        let rpc_status = RpcStatus::decode(status.details()).expect("details decode");
        assert_eq!(rpc_status.code, Code::Unavailable as i32);
        assert_eq!(rpc_status.message, "port 8080 is busy");
        assert_eq!(rpc_status.details.len(), 1);
        assert_eq!(rpc_status.details[0].type_url, RECOVERABLE_ERROR_TYPE_URL);
    }

    #[test]
    fn fatal_and_foreign_statuses_are_not_recoverable() {
        assert!(!is_recoverable(&fatal(Code::InvalidArgument, "bad config")));
        assert!(!is_recoverable(&Status::with_details(
            Code::Internal,
            "garbage",
            Bytes::from_static(b"\xff\xff\xff")
        )));
        let explicitly_false = RpcStatus {
            code: Code::Internal as i32,
            message: "no".to_owned(),
            details: vec![prost_types::Any {
                type_url: RECOVERABLE_ERROR_TYPE_URL.to_owned(),
                value: RecoverableError { recoverable: false }.encode_to_vec(),
            }],
        };
        assert!(!is_recoverable(&Status::with_details(
            Code::Internal,
            "no",
            Bytes::from(explicitly_false.encode_to_vec())
        )));
    }

    #[test]
    fn any_type_url_host_is_ignored() {
        let rpc_status = RpcStatus {
            code: Code::Aborted as i32,
            message: "retry".to_owned(),
            details: vec![prost_types::Any {
                type_url: format!("example.com/{RECOVERABLE_ERROR_TYPE_NAME}"),
                value: RecoverableError { recoverable: true }.encode_to_vec(),
            }],
        };
        assert!(is_recoverable(&Status::with_details(
            Code::Aborted,
            "retry",
            Bytes::from(rpc_status.encode_to_vec())
        )));
    }
}
