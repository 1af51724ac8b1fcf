//! What the driver tells Nomad about this node: attributes (namespaced `driver.iis.`) and health.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nomad_plugin::proto::drivers::{FingerprintResponse, fingerprint_response::HealthState};
use nomad_plugin::proto::structs::{Attribute, attribute::Value};

use crate::runtime;

/// Inputs of one fingerprint that do not come from the driver config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The port the Management API is served on (`None`: not served).
    pub management_api_port: Option<u16>,
    /// Root of the hosts' runtime folders (must be creatable and writable).
    pub runtime_root: PathBuf,
}

/// Settings of the driver config the fingerprint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// `enabled`.
    pub enabled: bool,
    /// `directory_security`.
    pub directory_security: bool,
    /// Whether `allowed_target_websites` names any site.
    pub target_websites: bool,
}

/// One fingerprint: UNDETECTED without attributes when disabled; otherwise the attributes, and
/// HEALTHY unless the runtime root is unusable.
pub fn fingerprint(reported: &Reported, facts: &NodeFacts) -> FingerprintResponse {
    if !reported.enabled {
        return FingerprintResponse {
            attributes: HashMap::new(),
            health: HealthState::Undetected as i32,
            health_description: "disabled by the plugin config (enabled = false)".into(),
        };
    }
    let mut attributes = HashMap::new();
    let mut put = |key: &str, value: Value| {
        attributes.insert(
            format!("driver.iis.{key}"),
            Attribute {
                value: Some(value),
                unit: String::new(),
            },
        );
    };
    put(
        "version",
        Value::StringVal(env!("CARGO_PKG_VERSION").into()),
    );
    put("os", Value::StringVal(std::env::consts::OS.into()));
    put(
        "directory_security_enabled",
        Value::BoolVal(reported.directory_security),
    );
    put(
        "target_websites_enabled",
        Value::BoolVal(reported.target_websites),
    );
    put(
        "management_api_enabled",
        Value::BoolVal(facts.management_api_port.is_some()),
    );
    put(
        "management_api_port",
        Value::IntVal(facts.management_api_port.map_or(0, i64::from)),
    );
    put(
        "iis_aspnet_core_available",
        Value::BoolVal(on_path("dotnet").is_some()),
    );
    // There is no URL rewrite module on Linux; the key is kept for job constraints written
    // against the original.
    put("iis_rewrite_module_available", Value::BoolVal(false));
    put(
        "chromium_available",
        Value::BoolVal(
            [
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ]
            .iter()
            .any(|name| on_path(name).is_some()),
        ),
    );
    put(
        "gcore_available",
        Value::BoolVal(on_path("gcore").is_some()),
    );
    let (health, health_description) = match runtime::check_root(&facts.runtime_root) {
        Ok(()) => (HealthState::Healthy, "healthy".to_owned()),
        Err(e) => (HealthState::Unhealthy, e.to_string()),
    };
    FingerprintResponse {
        attributes,
        health: health as i32,
        health_description,
    }
}

/// The first executable called `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(enabled: bool) -> Reported {
        Reported {
            enabled,
            directory_security: true,
            target_websites: false,
        }
    }

    #[test]
    fn healthy_fingerprint_has_namespaced_keys_and_no_iis_version() {
        let tmp = tempfile::tempdir().unwrap();
        let facts = NodeFacts {
            management_api_port: Some(5004),
            runtime_root: tmp.path().join("rt"),
        };
        let fp = fingerprint(&reported(true), &facts);
        assert_eq!(fp.health, HealthState::Healthy as i32);
        assert!(fp.attributes.keys().all(|k| k.starts_with("driver.iis.")));
        assert!(!fp.attributes.contains_key("driver.iis.iis_version"));
        assert_eq!(
            fp.attributes["driver.iis.management_api_port"].value,
            Some(Value::IntVal(5004))
        );
        assert_eq!(
            fp.attributes["driver.iis.os"].value,
            Some(Value::StringVal("linux".into()))
        );
    }

    #[test]
    fn unusable_root_is_unhealthy_and_disabled_is_undetected() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let facts = NodeFacts {
            management_api_port: None,
            runtime_root: file.join("rt"),
        };
        let fp = fingerprint(&reported(true), &facts);
        assert_eq!(fp.health, HealthState::Unhealthy as i32);
        assert!(fp.health_description.contains("rt"));
        let fp = fingerprint(&reported(false), &facts);
        assert_eq!(fp.health, HealthState::Undetected as i32);
        assert!(fp.attributes.is_empty());
    }

    #[test]
    fn path_lookup_finds_sh() {
        assert!(on_path("sh").is_some());
        assert!(on_path("surely-not-a-real-program-name").is_none());
    }
}
