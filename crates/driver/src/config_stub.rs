//! TEMPORARY stand-in for the `config` crate's API until it lands on main; same names as the
//! brief, just enough of the task config (applications, bindings) to run sites end to end.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nomad_plugin::hclspec::{attr, block, block_list, default, object};
use nomad_plugin::proto::hclspec::Spec;
use rmpv::Value;

#[derive(Debug, thiserror::Error)]
#[error("{field_path}: {message}")]
pub struct ConfigError {
    pub field_path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field_path: path.into(),
        message: message.into(),
    }
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

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_nil())
}

fn string(map: &Value, key: &str) -> Option<String> {
    get(map, key).and_then(|v| v.as_str()).map(str::to_owned)
}

fn boolean(map: &Value, key: &str) -> Option<bool> {
    get(map, key).and_then(Value::as_bool)
}

fn list<'a>(map: &'a Value, key: &str) -> &'a [Value] {
    get(map, key)
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn parse_secs(text: &str) -> Option<Duration> {
    let n: u64 = text.strip_suffix('s')?.parse().ok()?;
    Some(Duration::from_secs(n))
}

impl DriverConfig {
    pub fn spec() -> Spec {
        object([
            ("enabled", default(attr("enabled", "bool", false), "true")),
            (
                "fingerprint_interval",
                default(attr("fingerprint_interval", "string", false), "\"30s\""),
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
                "placeholder_app_path",
                attr("placeholder_app_path", "string", false),
            ),
        ])
    }
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        let value = rmpv::decode::read_value(&mut &bytes[..])
            .map_err(|e| err("config", format!("not msgpack: {e}")))?;
        if !value.is_map() {
            return Err(err("config", "expected an object"));
        }
        let mut config = Self::default();
        if let Some(enabled) = boolean(&value, "enabled") {
            config.enabled = enabled;
        }
        if let Some(interval) = string(&value, "fingerprint_interval") {
            let d =
                parse_secs(&interval).ok_or_else(|| err("fingerprint_interval", "bad duration"))?;
            if d < Duration::from_secs(10) {
                return Err(err("fingerprint_interval", "must be at least 10s"));
            }
            config.fingerprint_interval = d;
        }
        if let Some(b) = boolean(&value, "directory_security") {
            config.directory_security = b;
        }
        config.allowed_target_websites = list(&value, "allowed_target_websites")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        config.placeholder_app_path = string(&value, "placeholder_app_path").map(PathBuf::from);
        Ok(config)
    }
}

#[derive(Debug, Clone)]
pub struct TaskConfig {
    raw: Value,
}

impl TaskConfig {
    pub fn spec() -> Spec {
        object([
            ("target_website", attr("target_website", "string", false)),
            (
                "applications",
                block_list(
                    "application",
                    1,
                    0,
                    object([
                        ("path", attr("path", "string", true)),
                        ("alias", attr("alias", "string", false)),
                    ]),
                ),
            ),
            (
                "bindings",
                block_list(
                    "binding",
                    0,
                    64,
                    object([
                        ("type", attr("type", "string", true)),
                        ("port", attr("port", "string", true)),
                        ("hostname", attr("hostname", "string", false)),
                        (
                            "certificate",
                            block(
                                "certificate",
                                false,
                                object([
                                    ("use_self_signed", attr("use_self_signed", "bool", false)),
                                    ("cert_file", attr("cert_file", "string", false)),
                                    ("key_file", attr("key_file", "string", false)),
                                    ("pfx_file", attr("pfx_file", "string", false)),
                                    ("password", attr("password", "string", false)),
                                    ("thumbprint", attr("thumbprint", "string", false)),
                                ]),
                            ),
                        ),
                    ]),
                ),
            ),
        ])
    }
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = rmpv::decode::read_value(&mut &bytes[..])
            .map_err(|e| err("config", format!("not msgpack: {e}")))?;
        if list(&raw, "applications").is_empty() {
            return Err(err(
                "application",
                "at least one application block is required",
            ));
        }
        Ok(Self { raw })
    }
    pub fn validate(&self, _driver: &DriverConfig) -> Result<Vec<Notice>, ConfigError> {
        let mut notices = Vec::new();
        for (i, b) in list(&self.raw, "bindings").iter().enumerate() {
            let kind = string(b, "type").unwrap_or_default();
            if kind != "http" && kind != "https" {
                return Err(err(
                    &format!("binding[{i}].type"),
                    format!("unknown binding type {kind:?}"),
                ));
            }
            if let Some(cert) = get(b, "certificate")
                && string(cert, "thumbprint").is_some()
            {
                notices.push(Notice {
                    field_path: format!("binding[{i}].certificate.thumbprint"),
                    message: "has no effect on Linux".into(),
                });
            }
        }
        Ok(notices)
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

fn absolute(task_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.into()
    } else {
        task_dir.join(p)
    }
}

pub fn resolve(task: &TaskConfig, ctx: &ResolveContext) -> Result<control::HostSpec, ConfigError> {
    let site_name = format!("nomad-{}-{}", ctx.alloc_id, ctx.task_name);
    let mut bindings = Vec::new();
    for (i, b) in list(&task.raw, "bindings").iter().enumerate() {
        let port_text = string(b, "port").unwrap_or_default();
        let port = match ctx.ports.get(&port_text) {
            Some(p) => *p,
            None => port_text.parse::<u16>().map_err(|_| {
                err(
                    &format!("binding[{i}].port"),
                    format!("unknown port label {port_text:?}"),
                )
            })?,
        };
        let certificate = get(b, "certificate")
            .filter(|c| string(c, "thumbprint").is_none())
            .map(|c| {
                if boolean(c, "use_self_signed") == Some(true) {
                    control::CertificateSource::SelfSigned
                } else if let Some(pfx) = string(c, "pfx_file") {
                    control::CertificateSource::Pfx {
                        pfx_file: absolute(&ctx.task_dir, &pfx),
                        password: string(c, "password").unwrap_or_default(),
                    }
                } else {
                    control::CertificateSource::PemFiles {
                        cert_file: absolute(
                            &ctx.task_dir,
                            &string(c, "cert_file").unwrap_or_default(),
                        ),
                        key_file: absolute(
                            &ctx.task_dir,
                            &string(c, "key_file").unwrap_or_default(),
                        ),
                    }
                }
            });
        let kind = if string(b, "type").as_deref() == Some("https") {
            control::BindingKind::Https
        } else {
            control::BindingKind::Http
        };
        bindings.push(control::BindingSpec {
            kind,
            ip_address: ctx.default_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port,
            hostname: string(b, "hostname"),
            require_sni: false,
            certificate,
        });
    }
    let applications = list(&task.raw, "applications")
        .iter()
        .map(|a| {
            let alias = string(a, "alias").unwrap_or_else(|| "/".into());
            let alias = format!("/{}", alias.trim_matches('/'));
            control::ApplicationSpec {
                alias,
                path: absolute(&ctx.task_dir, &string(a, "path").unwrap_or_default()),
                pool: "default".into(),
                virtual_directories: vec![],
            }
        })
        .collect();
    let mut env = ctx.env.clone();
    env.insert("TMP".into(), ctx.task_dir.join("tmp").display().to_string());
    Ok(control::HostSpec {
        alloc_id: ctx.alloc_id.clone(),
        task_name: ctx.task_name.clone(),
        site_name: site_name.clone(),
        runtime_dir: ctx.runtime_dir.clone(),
        task_dir: ctx.task_dir.clone(),
        stdout_path: ctx.stdout_path.clone(),
        stderr_path: ctx.stderr_path.clone(),
        env,
        bindings,
        pools: vec![control::PoolSpec {
            name: "default".into(),
            full_name: site_name,
            start_mode: control::StartMode::OnDemand,
            idle_timeout: Duration::from_secs(1200),
            periodic_restart: Duration::from_secs(1740 * 60),
            start_time_limit: Duration::from_secs(90),
            shutdown_time_limit: Duration::from_secs(90),
            disable_overlapped_recycle: false,
            service_unavailable_response: control::UnavailableResponse::HttpLevel,
            queue_length: 1000,
        }],
        applications,
        placeholder_app_path: ctx.placeholder_app_path.clone(),
    })
}
