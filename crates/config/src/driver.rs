//! The driver configuration: `plugin "nomad_iis" { config { ... } }` in the agent's
//! configuration, delivered by `SetConfig`.

use std::path::PathBuf;
use std::time::Duration;

use nomad_plugin::cty::{self, Reader};
use nomad_plugin::hclspec::{attr, block_list, default, object, quoted};
use nomad_plugin::proto::hclspec::Spec;

use crate::duration::read_duration;
use crate::error::ConfigError;
use crate::task::{Identity, read_identity};

/// The shortest fingerprint interval accepted (the original's limit).
pub const MIN_FINGERPRINT_INTERVAL: Duration = Duration::from_secs(10);
/// The fingerprint interval when none is configured.
pub const DEFAULT_FINGERPRINT_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of the driver on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Driver on/off; off → fingerprint UNDETECTED.
    pub enabled: bool,
    /// How often to send a fingerprint (at least 10 s).
    pub fingerprint_interval: Duration,
    /// Restrict task folders to the pools' identities.
    pub directory_security: bool,
    /// Sites a task may name as `target_website`; `*` allows any; empty allows none.
    pub allowed_target_websites: Vec<String>,
    /// Identities a pool may ask for (default: only `ApplicationPoolIdentity`).
    pub allowed_apppool_identities: Vec<Identity>,
    /// Users a `SpecificUser` pool may name; `*` allows any; empty allows none.
    pub allowed_apppool_users: Vec<String>,
    /// Copied into an application folder that is empty at start.
    pub placeholder_app_path: Option<PathBuf>,
    /// The `procdump` block.
    pub procdump: Option<ProcdumpConfig>,
    /// The `limits` block: resource bounds of every site host on this node.
    pub limits: control::HostLimits,
}

/// The `procdump` block: process dump settings for the Management API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcdumpConfig {
    /// The dump tool. The original's default (`C:\procdump.exe`) means nothing on Linux, so
    /// there is none: the Management API picks its own tool when this is unset.
    pub binary_path: Option<PathBuf>,
    /// The operator accepted the dump tool's licence terms.
    pub accept_eula: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            fingerprint_interval: DEFAULT_FINGERPRINT_INTERVAL,
            directory_security: true,
            allowed_target_websites: Vec::new(),
            allowed_apppool_identities: vec![Identity::ApplicationPoolIdentity],
            allowed_apppool_users: Vec::new(),
            placeholder_app_path: None,
            procdump: None,
            limits: control::HostLimits::default(),
        }
    }
}

impl DriverConfig {
    /// The hcldec spec of the agent's plugin `config {}` block (`ConfigSchema`).
    pub fn spec() -> Spec {
        object([
            ("enabled", default(attr("enabled", "bool", false), "true")),
            (
                "fingerprint_interval",
                default(
                    attr("fingerprint_interval", "string", false),
                    &quoted("30s"),
                ),
            ),
            (
                "directory_security",
                default(attr("directory_security", "bool", false), "true"),
            ),
            (
                "allowed_target_websites",
                attr("allowed_target_websites", "list(string)", false),
            ),
            (
                "allowed_apppool_identities",
                attr("allowed_apppool_identities", "list(string)", false),
            ),
            (
                "allowed_apppool_users",
                attr("allowed_apppool_users", "list(string)", false),
            ),
            (
                "placeholder_app_path",
                attr("placeholder_app_path", "string", false),
            ),
            (
                "limits",
                block_list(
                    "limits",
                    0,
                    1,
                    object([
                        (
                            "h2_max_concurrent_streams",
                            attr("h2_max_concurrent_streams", "number", false),
                        ),
                        (
                            "response_buffer_budget",
                            attr("response_buffer_budget", "number", false),
                        ),
                        (
                            "max_connections_per_listener",
                            attr("max_connections_per_listener", "number", false),
                        ),
                        (
                            "header_read_timeout",
                            attr("header_read_timeout", "string", false),
                        ),
                        (
                            "h2_keepalive_interval",
                            attr("h2_keepalive_interval", "string", false),
                        ),
                        ("max_header_size", attr("max_header_size", "number", false)),
                    ]),
                ),
            ),
            (
                "procdumps",
                block_list(
                    "procdump",
                    0,
                    1,
                    object([
                        ("binary_path", attr("binary_path", "string", false)),
                        (
                            "accept_eula",
                            default(attr("accept_eula", "bool", false), "false"),
                        ),
                    ]),
                ),
            ),
        ])
    }

    /// Decodes `SetConfig.msgpack_config`; empty bytes give the defaults.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = cty::decode(bytes)?;
        Self::from_cty(&raw)
    }

    /// Decodes an already decoded cty value (the root object).
    pub fn from_cty(raw: &rmpv::Value) -> Result<Self, ConfigError> {
        let root = Reader::new(raw);
        let defaults = Self::default();

        let interval_reader = root.field("fingerprint_interval")?;
        let fingerprint_interval =
            read_duration(&interval_reader)?.unwrap_or(defaults.fingerprint_interval);
        if fingerprint_interval < MIN_FINGERPRINT_INTERVAL {
            return Err(ConfigError::new(
                interval_reader.path(),
                format!(
                    "must be at least 10s, got {}",
                    format_duration(fingerprint_interval)
                ),
            ));
        }

        let allowed_apppool_identities = match root.field("allowed_apppool_identities")?.raw() {
            None => defaults.allowed_apppool_identities,
            Some(_) => root
                .field("allowed_apppool_identities")?
                .items()?
                .iter()
                .map(|item| {
                    read_identity(item)?
                        .ok_or_else(|| ConfigError::new(item.path(), "expected a string, got null"))
                })
                .collect::<Result<_, _>>()?,
        };

        let procdump = match root.field_as("procdumps", "procdump")?.single()? {
            None => None,
            Some(p) => Some(ProcdumpConfig {
                binary_path: p
                    .field("binary_path")?
                    .string()?
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
                accept_eula: p.field("accept_eula")?.bool()?.unwrap_or(false),
            }),
        };

        let placeholder_app_path = root
            .field("placeholder_app_path")?
            .string()?
            .filter(|s| !s.is_empty());
        if let Some(path) = &placeholder_app_path {
            crate::windows_path::check("placeholder_app_path", path, None)?;
        }

        let limits = match root.field("limits")?.single()? {
            None => defaults.limits.clone(),
            Some(block) => read_limits(&block, &defaults.limits)?,
        };

        Ok(Self {
            enabled: root.field("enabled")?.bool()?.unwrap_or(defaults.enabled),
            fingerprint_interval,
            directory_security: root
                .field("directory_security")?
                .bool()?
                .unwrap_or(defaults.directory_security),
            allowed_target_websites: root
                .field("allowed_target_websites")?
                .strings()?
                .unwrap_or_default(),
            allowed_apppool_identities,
            allowed_apppool_users: root
                .field("allowed_apppool_users")?
                .strings()?
                .unwrap_or_default(),
            placeholder_app_path: placeholder_app_path.map(PathBuf::from),
            procdump,
            limits,
        })
    }

    /// Decodes a `config {}` body given as a JSON-shaped map (see
    /// [`crate::TaskConfig::from_json`]).
    pub fn from_json(body: &serde_json::Value) -> Result<Self, ConfigError> {
        let value = nomad_plugin::hclspec::decode_json(&Self::spec(), body)?;
        Self::from_msgpack(&cty::encode(&value))
    }
}

/// The `limits` block; what it leaves out keeps its default. Zero is refused where it would
/// stop the host from serving at all.
fn read_limits(
    block: &Reader<'_>,
    defaults: &control::HostLimits,
) -> Result<control::HostLimits, ConfigError> {
    let positive_u32 = |name: &str, default: u32| -> Result<u32, ConfigError> {
        let field = block.field(name)?;
        match field.u32()? {
            None => Ok(default),
            Some(0) => Err(ConfigError::new(field.path(), "must be at least 1")),
            Some(n) => Ok(n),
        }
    };
    let duration = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
        let field = block.field(name)?;
        match read_duration(&field)? {
            None => Ok(default),
            Some(d) if d.is_zero() => Err(ConfigError::new(field.path(), "must be more than 0s")),
            Some(d) => Ok(d),
        }
    };
    let budget = block.field("response_buffer_budget")?;
    let response_buffer_budget = match budget.u64()? {
        None => defaults.response_buffer_budget,
        Some(n) if n < 1024 * 1024 => {
            return Err(ConfigError::new(
                budget.path(),
                "must be at least 1048576 (1 MiB)",
            ));
        }
        Some(n) => n,
    };
    let header = block.field("max_header_size")?;
    let max_header_size = match header.u32()? {
        None => defaults.max_header_size,
        // hyper's smallest read buffer.
        Some(n) if n < 8192 => {
            return Err(ConfigError::new(header.path(), "must be at least 8192"));
        }
        Some(n) => n,
    };
    Ok(control::HostLimits {
        h2_max_concurrent_streams: positive_u32(
            "h2_max_concurrent_streams",
            defaults.h2_max_concurrent_streams,
        )?,
        response_buffer_budget,
        max_connections_per_listener: positive_u32(
            "max_connections_per_listener",
            defaults.max_connections_per_listener,
        )?,
        header_read_timeout: duration("header_read_timeout", defaults.header_read_timeout)?,
        h2_keepalive_interval: duration("h2_keepalive_interval", defaults.h2_keepalive_interval)?,
        max_header_size,
    })
}

/// `1.5s`, `250ms`, `30s`: short enough for messages.
fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use nomad_plugin::cty::{Value, encode};
    use nomad_plugin::hclspec::check;

    use super::*;

    fn decode(value: Value) -> Result<DriverConfig, ConfigError> {
        DriverConfig::from_msgpack(&encode(&value))
    }

    #[test]
    fn spec_obeys_nomads_rules() {
        assert_eq!(check(&DriverConfig::spec()), Ok(()));
    }

    #[test]
    fn empty_bytes_give_defaults() {
        let config = DriverConfig::from_msgpack(&[]).expect("defaults");
        assert_eq!(config, DriverConfig::default());
        assert_eq!(config.fingerprint_interval, Duration::from_secs(30));
        assert_eq!(
            config.allowed_apppool_identities,
            vec![Identity::ApplicationPoolIdentity]
        );
    }

    #[test]
    fn decodes_every_option() {
        let config = decode(Value::object([
            ("enabled", Value::Bool(false)),
            ("fingerprint_interval", Value::string("1m")),
            ("directory_security", Value::Bool(false)),
            (
                "allowed_target_websites",
                Value::List(vec![Value::string("Default Web Site")]),
            ),
            (
                "allowed_apppool_identities",
                Value::List(vec![
                    Value::string("ApplicationPoolIdentity"),
                    Value::string("SpecificUser"),
                ]),
            ),
            (
                "allowed_apppool_users",
                Value::List(vec![Value::string("*")]),
            ),
            ("placeholder_app_path", Value::string("/srv/placeholder")),
            (
                "procdumps",
                Value::List(vec![Value::object([
                    ("binary_path", Value::string("/usr/bin/gcore")),
                    ("accept_eula", Value::Bool(true)),
                ])]),
            ),
        ]))
        .expect("valid");
        assert_eq!(
            config,
            DriverConfig {
                enabled: false,
                fingerprint_interval: Duration::from_secs(60),
                directory_security: false,
                allowed_target_websites: vec!["Default Web Site".into()],
                allowed_apppool_identities: vec![
                    Identity::ApplicationPoolIdentity,
                    Identity::SpecificUser
                ],
                allowed_apppool_users: vec!["*".into()],
                placeholder_app_path: Some(PathBuf::from("/srv/placeholder")),
                procdump: Some(ProcdumpConfig {
                    binary_path: Some(PathBuf::from("/usr/bin/gcore")),
                    accept_eula: true,
                }),
                limits: control::HostLimits::default(),
            }
        );
    }

    #[test]
    fn empty_identity_list_allows_none() {
        let config = decode(Value::object([(
            "allowed_apppool_identities",
            Value::List(vec![]),
        )]))
        .expect("valid");
        assert!(config.allowed_apppool_identities.is_empty());
    }

    #[test]
    fn short_fingerprint_interval_is_an_error() {
        let err = decode(Value::object([(
            "fingerprint_interval",
            Value::string("5s"),
        )]))
        .expect_err("too short");
        assert_eq!(
            err.to_string(),
            "fingerprint_interval: must be at least 10s, got 5s"
        );
        let err = decode(Value::object([(
            "fingerprint_interval",
            Value::string("500ms"),
        )]))
        .expect_err("too short");
        assert_eq!(
            err.to_string(),
            "fingerprint_interval: must be at least 10s, got 500ms"
        );
        assert!(
            decode(Value::object([(
                "fingerprint_interval",
                Value::string("10s")
            )]))
            .is_ok()
        );
    }

    #[test]
    fn unknown_identities_name_the_element() {
        let err = decode(Value::object([(
            "allowed_apppool_identities",
            Value::List(vec![Value::string("LocalSystem"), Value::string("Admin")]),
        )]))
        .expect_err("unknown identity");
        assert_eq!(
            err.to_string(),
            "allowed_apppool_identities[1]: expected one of ApplicationPoolIdentity, LocalSystem, \
             LocalService, NetworkService, SpecificUser, got \"Admin\""
        );
    }

    #[test]
    fn reads_from_json_bodies() {
        let config = DriverConfig::from_json(&serde_json::json!({
            "fingerprint_interval": "10s",
            "procdump": {"accept_eula": true},
        }))
        .expect("valid");
        assert_eq!(config.fingerprint_interval, Duration::from_secs(10));
        assert_eq!(
            config.procdump,
            Some(ProcdumpConfig {
                binary_path: None,
                accept_eula: true
            })
        );
    }

    #[test]
    fn limits_refuse_values_that_would_stop_serving() {
        for (field, value, message) in [
            (
                "h2_max_concurrent_streams",
                serde_json::json!(0),
                "must be at least 1",
            ),
            (
                "header_read_timeout",
                serde_json::json!("0s"),
                "must be more than 0s",
            ),
            (
                "max_header_size",
                serde_json::json!(100),
                "must be at least 8192",
            ),
            (
                "response_buffer_budget",
                serde_json::json!(10),
                "must be at least 1048576 (1 MiB)",
            ),
        ] {
            let body = serde_json::json!({ "limits": { field: value } });
            let error = DriverConfig::from_json(&body).unwrap_err();
            assert_eq!(error.message, message, "{field}");
            assert!(error.path.ends_with(field), "{}", error.path);
        }
        let body = serde_json::json!({ "limits": { "h2_max_concurrent_streams": 16 } });
        let limits = DriverConfig::from_json(&body).unwrap().limits;
        assert_eq!(limits.h2_max_concurrent_streams, 16);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(30));
    }
}
