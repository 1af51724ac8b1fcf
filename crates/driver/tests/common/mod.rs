//! Helpers shared by the driver's integration tests.

use nomad_plugin::proto::hclspec::Spec;

/// Encodes an HCL body against `spec` as a Nomad client does (generic map → hcldec → cty
/// msgpack).
pub fn encode_hcl(spec: &Spec, hcl_text: &str) -> Vec<u8> {
    let body: hcl::Value = hcl::from_str(hcl_text).unwrap();
    let json = serde_json::to_value(&body).unwrap();
    let value = nomad_plugin::hclspec::decode_json(spec, &json).unwrap();
    nomad_plugin::cty::encode(&value)
}
