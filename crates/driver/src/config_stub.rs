//! TEMPORARY stand-in for the `config` crate's API until it lands on main; same names as the brief.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use nomad_plugin::proto::hclspec::Spec;

#[derive(Debug, thiserror::Error)]
#[error("{field_path}: {message}")]
pub struct ConfigError {
    pub field_path: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub field_path: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub enabled: bool,
    pub fingerprint_interval: Duration,
    pub directory_security: bool,
    pub allowed_target_websites: Vec<String>,
    pub placeholder_app_path: Option<PathBuf>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            fingerprint_interval: Duration::from_secs(30),
            directory_security: true,
            allowed_target_websites: vec![],
            placeholder_app_path: None,
        }
    }
}

impl DriverConfig {
    pub fn spec() -> Spec {
        nomad_plugin::hclspec::object([(
            "enabled",
            nomad_plugin::hclspec::default(
                nomad_plugin::hclspec::attr("enabled", "bool", false),
                "true",
            ),
        )])
    }
    pub fn from_msgpack(_bytes: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self::default())
    }
}

#[derive(Debug, Clone)]
pub struct TaskConfig {}

impl TaskConfig {
    pub fn spec() -> Spec {
        nomad_plugin::hclspec::object([(
            "target_website",
            nomad_plugin::hclspec::attr("target_website", "string", false),
        )])
    }
    pub fn from_msgpack(_bytes: &[u8]) -> Result<Self, ConfigError> {
        Err(ConfigError {
            field_path: "config".into(),
            message: "not implemented".into(),
        })
    }
    pub fn validate(&self, _driver: &DriverConfig) -> Result<Vec<Notice>, ConfigError> {
        Ok(vec![])
    }
}

pub struct ResolveContext {
    pub alloc_id: String,
    pub task_name: String,
    pub task_dir: PathBuf,
    pub ports: BTreeMap<String, u16>,
    pub runtime_dir: PathBuf,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub env: BTreeMap<String, String>,
    pub placeholder_app_path: Option<PathBuf>,
    pub default_ip: Option<IpAddr>,
}

pub fn resolve(
    _task: &TaskConfig,
    _ctx: &ResolveContext,
) -> Result<control::HostSpec, ConfigError> {
    Err(ConfigError {
        field_path: "config".into(),
        message: "not implemented".into(),
    })
}
