//! TEMPORARY stand-in for `nomad_plugin::status` until the SDK lands on main; same signatures.

use prost::Message;
use tonic::{Code, Status};

#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// A status Nomad treats as recoverable.
pub fn recoverable(code: Code, message: impl Into<String>) -> Status {
    let message = message.into();
    let detail = prost_types::Any {
        type_url: "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError"
            .into(),
        value: nomad_plugin::proto::structs::RecoverableError { recoverable: true }.encode_to_vec(),
    };
    let rpc = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![detail],
    };
    Status::with_details(code, message, rpc.encode_to_vec().into())
}

/// A status Nomad treats as unrecoverable.
pub fn fatal(code: Code, message: impl Into<String>) -> Status {
    Status::new(code, message)
}
