//! The fingerprint stream reports a health change without waiting for the next period.

use std::time::Duration;

use driver::{DriverOptions, HostCommand, IisDriver};
use nomad_plugin::proto::base::{SetConfigRequest, base_plugin_server::BasePlugin};
use nomad_plugin::proto::drivers::{
    FingerprintRequest, driver_server::Driver, fingerprint_response::HealthState,
};
use tokio_stream::StreamExt;
use tonic::Request;

mod common;

fn driver_config(hcl_text: &str) -> Vec<u8> {
    common::encode_hcl(&config::DriverConfig::spec(), hcl_text)
}

#[tokio::test]
async fn disabling_the_driver_is_reported_before_the_next_period() {
    let temp = tempfile::tempdir().unwrap();
    let command = HostCommand {
        program: "/bin/false".into(),
        args: vec![],
    };
    let driver = IisDriver::new(DriverOptions::new(temp.path().join("rt"), command));
    let set = |hcl_text: &str| SetConfigRequest {
        msgpack_config: driver_config(hcl_text),
        nomad_config: None,
        plugin_api_version: "0.1.0".into(),
    };
    driver
        .set_config(Request::new(set(r#"fingerprint_interval = "10m""#)))
        .await
        .unwrap();
    let mut stream = driver
        .fingerprint(Request::new(FingerprintRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.health, HealthState::Healthy as i32);
    driver
        .set_config(Request::new(set(
            "enabled = false\nfingerprint_interval = \"10m\"",
        )))
        .await
        .unwrap();
    // Well before the 10-minute period: the health check runs every few seconds.
    let next = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("a message on health change")
        .unwrap()
        .unwrap();
    assert_eq!(next.health, HealthState::Undetected as i32);
}
