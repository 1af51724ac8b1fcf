//! The task configuration (`task "x" { driver = "iis" config { ... } }`): types, the hcldec
//! spec Nomad decodes it with, and decoding from cty msgpack.
//!
//! The schema is the original's (reference-nomad-iis.md), HCL block name → msgpack key:
//! `application_pool` → `application_pools` (and the old `applicationPool` →
//! `applicationPools`, merged, old ones first as the original does), `application` →
//! `applications`, `binding` → `bindings`, `virtual_directory` → `virtual_directories`,
//! `extension` → `extensions`, `service_auto_start_provider` →
//! `service_auto_start_providers`, `certificate` → `certificates` (a block list of at most
//! one, as in the original).
//!
//! This project's extension: an optional `process` block in `application` (key `process`, a
//! single block) names the worker process explicitly, where IIS would read `web.config`.
//!
//! Decoding parses values into types (enums, durations, ports, addresses) and fails on the
//! first bad field with its path; cross-field rules live in [`crate::validate`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use control::{BindingKind, StartMode, UnavailableResponse};
use nomad_plugin::cty::{self, Reader};
use nomad_plugin::hclspec::{attr, block, block_list, default, object, quoted};
use nomad_plugin::proto::hclspec::Spec;

use crate::duration::read_duration;
use crate::error::ConfigError;
use crate::naming::DEFAULT_POOL;

/// The whole `config {}` block of an `iis` task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    /// An existing website to add the applications to. We always host our own site, so this
    /// only has to be allowed; it has no effect on Linux.
    pub target_website: Option<String>,
    /// Grant IUSR access to the task's `local` folder (Windows only; `true` by default).
    pub permit_iusr: bool,
    /// `application_pool` blocks.
    pub application_pools: Vec<PoolConfig>,
    /// `applicationPool` blocks (the name before 0.20), merged before the new ones.
    pub legacy_application_pools: Vec<PoolConfig>,
    /// `application` blocks (at least one).
    pub applications: Vec<ApplicationConfig>,
    /// `binding` blocks (0–64).
    pub bindings: Vec<BindingConfig>,
    /// `service_auto_start_provider` blocks (Windows only).
    pub service_auto_start_providers: Vec<ServiceAutoStartProvider>,
}

/// The identity a pool's workers run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// IIS's per-pool virtual account (the default). On Linux: the host's own user.
    ApplicationPoolIdentity,
    /// `LocalSystem`.
    LocalSystem,
    /// `LocalService`.
    LocalService,
    /// `NetworkService`.
    NetworkService,
    /// A named account (`username`, `password`).
    SpecificUser,
}

impl Identity {
    /// Every identity with its configuration spelling.
    pub const ALL: [(&'static str, Identity); 5] = [
        ("ApplicationPoolIdentity", Identity::ApplicationPoolIdentity),
        ("LocalSystem", Identity::LocalSystem),
        ("LocalService", Identity::LocalService),
        ("NetworkService", Identity::NetworkService),
        ("SpecificUser", Identity::SpecificUser),
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, identity)| *identity == self)
            .map_or("ApplicationPoolIdentity", |(name, _)| name)
    }
}

/// `managed_pipeline_mode` (Windows only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedPipelineMode {
    /// `Integrated`.
    Integrated,
    /// `Classic`.
    Classic,
}

/// `managed_runtime_version` (Windows only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedRuntimeVersion {
    /// `v4.0`.
    V4,
    /// `v2.0`.
    V2,
    /// `None`: no managed code.
    None,
}

/// One `application_pool` block.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Short name (`default` when not given), at most 8 characters.
    pub name: String,
    /// Identity of the workers.
    pub identity: Identity,
    /// Account for `SpecificUser`.
    pub username: Option<String>,
    /// Password for `SpecificUser` (may be omitted for managed service accounts).
    pub password: Option<String>,
    /// Windows only.
    pub managed_pipeline_mode: Option<ManagedPipelineMode>,
    /// Windows only.
    pub managed_runtime_version: Option<ManagedRuntimeVersion>,
    /// When the worker starts (IIS default `OnDemand`).
    pub start_mode: Option<StartMode>,
    /// Stop an idle worker after this long (IIS default 20 minutes; zero = never).
    pub idle_timeout: Option<Duration>,
    /// Recycle after this long (IIS default 1740 minutes; zero = never).
    pub periodic_restart: Option<Duration>,
    /// A worker must accept connections within this (IIS default 90 s).
    pub start_time_limit: Option<Duration>,
    /// Drain time on stop and recycle (IIS default 90 s).
    pub shutdown_time_limit: Option<Duration>,
    /// Stop the old worker before starting the new one on recycle.
    pub disable_overlapped_recycle: Option<bool>,
    /// Windows only.
    pub enable_32bit_app_on_win64: Option<bool>,
    /// What a stopped pool answers (IIS default `HttpLevel`).
    pub service_unavailable_response: Option<UnavailableResponse>,
    /// Requests that may wait for a worker (IIS default 1000).
    pub queue_length: Option<u32>,
    /// Raw IIS attributes (Windows only).
    pub extensions: Vec<Extension>,
}

/// One `application` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplicationConfig {
    /// Application folder; relative paths are under the task folder.
    pub path: String,
    /// Alias below the site as written (`/` when not given); normalised by
    /// [`crate::validate::normalize_alias`].
    pub alias: String,
    /// Short name of the pool serving it (`default` when not given).
    pub application_pool: String,
    /// Windows only.
    pub enable_preload: Option<bool>,
    /// Windows only.
    pub service_auto_start_enabled: Option<bool>,
    /// Windows only.
    pub service_auto_start_provider: Option<String>,
    /// `virtual_directory` blocks.
    pub virtual_directories: Vec<VirtualDirectoryConfig>,
    /// Raw IIS attributes (Windows only).
    pub extensions: Vec<Extension>,
    /// The `process` block (this project's extension): the worker serving the application.
    pub process: Option<ProcessConfig>,
}

/// A `process` block: `process { command = "...", args = [...], env = {...} }`. The worker
/// runs in the application folder; without the block its `web.config` decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessConfig {
    /// Program: relative to the application folder (`./app`), absolute, or looked up on the PATH.
    pub command: String,
    /// Arguments; `%PORT%`, `%HTTP_PLATFORM_PORT%` and `%ASPNETCORE_PORT%` become the port.
    pub args: Vec<String>,
    /// Extra environment over the task's.
    pub env: BTreeMap<String, String>,
}

/// One `virtual_directory` block.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualDirectoryConfig {
    /// Alias below the application.
    pub alias: String,
    /// Folder; relative paths are under the task folder.
    pub path: String,
    /// Raw IIS attributes (Windows only).
    pub extensions: Vec<Extension>,
}

/// An `extension` block: an IIS attribute the schema does not name. Accepted for
/// compatibility; it has no effect on Linux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    pub value: String,
}

/// A `service_auto_start_provider` block (Windows only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAutoStartProvider {
    /// Provider name, referenced by applications.
    pub name: String,
    /// Managed type (`Namespace.Class, Assembly`).
    pub type_name: String,
}

/// What a binding's `port` names.
///
/// The spec declares `port` as `string`, so `port = 8080` and `port = "8080"` both arrive as
/// the string `"8080"`. A value made only of digits is a static port number (1–65535, and
/// only together with `hostname`); anything else is a label of the task group's `network`
/// block, resolved to the allocated host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A `network { port "label" {} }` label.
    Label(String),
    /// A static port number.
    Static(u16),
}

/// One `binding` block.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingConfig {
    /// `http` or `https`.
    pub kind: BindingKind,
    /// Port label or static number.
    pub port: PortRef,
    /// Host name this binding answers for.
    pub hostname: Option<String>,
    /// Refuse TLS handshakes without a matching SNI name.
    pub require_sni: Option<bool>,
    /// Address to listen on; `None` (also for `*`) means every address.
    pub ip_address: Option<IpAddr>,
    /// The `certificate` block.
    pub certificate: Option<CertificateConfig>,
}

/// A `certificate` block: exactly one source should be set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateConfig {
    /// A Windows certificate-store thumbprint (no store on Linux).
    pub thumbprint: Option<String>,
    /// PKCS#12 file.
    pub pfx_file: Option<String>,
    /// Password of `pfx_file`.
    pub password: Option<String>,
    /// PEM certificate chain.
    pub cert_file: Option<String>,
    /// PEM private key.
    pub key_file: Option<String>,
    /// Generate a self-signed certificate at start.
    pub use_self_signed: bool,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            target_website: None,
            permit_iusr: true,
            application_pools: Vec::new(),
            legacy_application_pools: Vec::new(),
            applications: Vec::new(),
            bindings: Vec::new(),
            service_auto_start_providers: Vec::new(),
        }
    }
}

impl PoolConfig {
    /// A pool named `name` with nothing else set.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            identity: Identity::ApplicationPoolIdentity,
            username: None,
            password: None,
            managed_pipeline_mode: None,
            managed_runtime_version: None,
            start_mode: None,
            idle_timeout: None,
            periodic_restart: None,
            start_time_limit: None,
            shutdown_time_limit: None,
            disable_overlapped_recycle: None,
            enable_32bit_app_on_win64: None,
            service_unavailable_response: None,
            queue_length: None,
            extensions: Vec::new(),
        }
    }
}

impl ApplicationConfig {
    /// The root application served from `path` by the default pool.
    pub fn at(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            alias: "/".into(),
            application_pool: DEFAULT_POOL.into(),
            enable_preload: None,
            service_auto_start_enabled: None,
            service_auto_start_provider: None,
            virtual_directories: Vec::new(),
            extensions: Vec::new(),
            process: None,
        }
    }
}

// === spec ===

fn extensions_spec() -> Spec {
    block_list(
        "extension",
        0,
        0,
        object([
            ("name", attr("name", "string", true)),
            ("value", attr("value", "string", true)),
        ]),
    )
}

fn pool_spec() -> Spec {
    let string = |name: &str| (name.to_owned(), attr(name, "string", false));
    object([
        (
            "name".to_owned(),
            default(attr("name", "string", false), &quoted(DEFAULT_POOL)),
        ),
        (
            "identity".to_owned(),
            default(
                attr("identity", "string", false),
                &quoted("ApplicationPoolIdentity"),
            ),
        ),
        string("username"),
        string("password"),
        string("managed_pipeline_mode"),
        string("managed_runtime_version"),
        string("start_mode"),
        string("idle_timeout"),
        string("periodic_restart"),
        string("start_time_limit"),
        string("shutdown_time_limit"),
        string("service_unavailable_response"),
        (
            "disable_overlapped_recycle".to_owned(),
            attr("disable_overlapped_recycle", "bool", false),
        ),
        (
            "enable_32bit_app_on_win64".to_owned(),
            attr("enable_32bit_app_on_win64", "bool", false),
        ),
        (
            "queue_length".to_owned(),
            attr("queue_length", "number", false),
        ),
        ("extensions".to_owned(), extensions_spec()),
    ])
}

fn application_spec() -> Spec {
    object([
        ("path", attr("path", "string", true)),
        (
            "alias",
            default(attr("alias", "string", false), &quoted("/")),
        ),
        (
            "application_pool",
            default(
                attr("application_pool", "string", false),
                &quoted(DEFAULT_POOL),
            ),
        ),
        ("enable_preload", attr("enable_preload", "bool", false)),
        (
            "service_auto_start_enabled",
            attr("service_auto_start_enabled", "bool", false),
        ),
        (
            "service_auto_start_provider",
            attr("service_auto_start_provider", "string", false),
        ),
        (
            "virtual_directories",
            block_list(
                "virtual_directory",
                0,
                0,
                object([
                    ("alias", attr("alias", "string", true)),
                    ("path", attr("path", "string", true)),
                    ("extensions", extensions_spec()),
                ]),
            ),
        ),
        ("extensions", extensions_spec()),
        ("process", process_spec()),
    ])
}

fn process_spec() -> Spec {
    block(
        "process",
        false,
        object([
            ("command", attr("command", "string", true)),
            ("args", attr("args", "list(string)", false)),
            ("env", attr("env", "map(string)", false)),
        ]),
    )
}

fn binding_spec() -> Spec {
    object([
        ("type", attr("type", "string", true)),
        ("port", attr("port", "string", true)),
        ("hostname", attr("hostname", "string", false)),
        ("require_sni", attr("require_sni", "bool", false)),
        ("ip_address", attr("ip_address", "string", false)),
        (
            "certificates",
            block_list(
                "certificate",
                0,
                1,
                object([
                    ("thumbprint", attr("thumbprint", "string", false)),
                    ("pfx_file", attr("pfx_file", "string", false)),
                    ("password", attr("password", "string", false)),
                    ("cert_file", attr("cert_file", "string", false)),
                    ("key_file", attr("key_file", "string", false)),
                    (
                        "use_self_signed",
                        default(attr("use_self_signed", "bool", false), "false"),
                    ),
                ]),
            ),
        ),
    ])
}

// === decoding helpers ===

/// Parses an enum value case-insensitively, listing the allowed spellings on error.
fn read_enum<T: Copy>(
    reader: &Reader<'_>,
    allowed: &[(&str, T)],
) -> Result<Option<T>, ConfigError> {
    let Some(text) = reader.string()? else {
        return Ok(None);
    };
    allowed
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&text))
        .map(|(_, value)| Some(*value))
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(name, _)| *name).collect();
            ConfigError::new(
                reader.path(),
                format!("expected one of {}, got {text:?}", names.join(", ")),
            )
        })
}

pub(crate) fn read_identity(reader: &Reader<'_>) -> Result<Option<Identity>, ConfigError> {
    read_enum(reader, &Identity::ALL)
}

fn required_string(reader: &Reader<'_>) -> Result<String, ConfigError> {
    reader
        .string()?
        .ok_or_else(|| ConfigError::new(reader.path(), "the argument is required"))
}

fn read_extensions(parent: &Reader<'_>) -> Result<Vec<Extension>, ConfigError> {
    parent
        .field_as("extensions", "extension")?
        .items()?
        .iter()
        .map(|item| {
            Ok(Extension {
                name: required_string(&item.field("name")?)?,
                value: item
                    .field("value")?
                    .string_or_number("a string")?
                    .ok_or_else(|| {
                        ConfigError::new(item.child_path("value"), "the argument is required")
                    })?,
            })
        })
        .collect()
}

fn read_pool(r: &Reader<'_>) -> Result<PoolConfig, ConfigError> {
    Ok(PoolConfig {
        name: r
            .field("name")?
            .string()?
            .unwrap_or_else(|| DEFAULT_POOL.to_owned()),
        identity: read_identity(&r.field("identity")?)?
            .unwrap_or(Identity::ApplicationPoolIdentity),
        username: r.field("username")?.string()?,
        password: r.field("password")?.string()?,
        managed_pipeline_mode: read_enum(
            &r.field("managed_pipeline_mode")?,
            &[
                ("Integrated", ManagedPipelineMode::Integrated),
                ("Classic", ManagedPipelineMode::Classic),
            ],
        )?,
        managed_runtime_version: read_enum(
            &r.field("managed_runtime_version")?,
            &[
                ("v4.0", ManagedRuntimeVersion::V4),
                ("v2.0", ManagedRuntimeVersion::V2),
                ("None", ManagedRuntimeVersion::None),
            ],
        )?,
        start_mode: read_enum(
            &r.field("start_mode")?,
            &[
                ("OnDemand", StartMode::OnDemand),
                ("AlwaysRunning", StartMode::AlwaysRunning),
            ],
        )?,
        idle_timeout: read_duration(&r.field("idle_timeout")?)?,
        periodic_restart: read_duration(&r.field("periodic_restart")?)?,
        start_time_limit: read_duration(&r.field("start_time_limit")?)?,
        shutdown_time_limit: read_duration(&r.field("shutdown_time_limit")?)?,
        disable_overlapped_recycle: r.field("disable_overlapped_recycle")?.bool()?,
        enable_32bit_app_on_win64: r.field("enable_32bit_app_on_win64")?.bool()?,
        service_unavailable_response: read_enum(
            &r.field("service_unavailable_response")?,
            &[
                ("HttpLevel", UnavailableResponse::HttpLevel),
                ("TcpLevel", UnavailableResponse::TcpLevel),
            ],
        )?,
        queue_length: r.field("queue_length")?.u32()?,
        extensions: read_extensions(r)?,
    })
}

fn read_application(r: &Reader<'_>) -> Result<ApplicationConfig, ConfigError> {
    let virtual_directories = r
        .field_as("virtual_directories", "virtual_directory")?
        .items()?
        .iter()
        .map(|v| {
            Ok(VirtualDirectoryConfig {
                alias: required_string(&v.field("alias")?)?,
                path: required_string(&v.field("path")?)?,
                extensions: read_extensions(v)?,
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(ApplicationConfig {
        path: required_string(&r.field("path")?)?,
        alias: r
            .field("alias")?
            .string()?
            .unwrap_or_else(|| "/".to_owned()),
        application_pool: r
            .field("application_pool")?
            .string()?
            .unwrap_or_else(|| DEFAULT_POOL.to_owned()),
        enable_preload: r.field("enable_preload")?.bool()?,
        service_auto_start_enabled: r.field("service_auto_start_enabled")?.bool()?,
        service_auto_start_provider: r.field("service_auto_start_provider")?.string()?,
        virtual_directories,
        extensions: read_extensions(r)?,
        process: r
            .field("process")?
            .single()?
            .map(|p| read_process(&p))
            .transpose()?,
    })
}

fn read_process(r: &Reader<'_>) -> Result<ProcessConfig, ConfigError> {
    let args = r
        .field("args")?
        .items()?
        .iter()
        .map(required_string)
        .collect::<Result<_, _>>()?;
    let env = r
        .field("env")?
        .entries()?
        .into_iter()
        .map(|(name, value)| Ok((name, required_string(&value)?)))
        .collect::<Result<_, ConfigError>>()?;
    Ok(ProcessConfig {
        command: required_string(&r.field("command")?)?,
        args,
        env,
    })
}

fn read_port(reader: &Reader<'_>) -> Result<PortRef, ConfigError> {
    let text = reader
        .string_or_number("a number or a port label")?
        .ok_or_else(|| ConfigError::new(reader.path(), "the argument is required"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::new(reader.path(), "must not be empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(PortRef::Static(port)),
            _ => Err(ConfigError::new(
                reader.path(),
                format!("static port {text} is out of range (1-65535)"),
            )),
        };
    }
    Ok(PortRef::Label(text.to_owned()))
}

fn read_binding(r: &Reader<'_>) -> Result<BindingConfig, ConfigError> {
    let kind_reader = r.field("type")?;
    let kind = read_enum(
        &kind_reader,
        &[("http", BindingKind::Http), ("https", BindingKind::Https)],
    )?
    .ok_or_else(|| ConfigError::new(kind_reader.path(), "the argument is required"))?;
    let ip_reader = r.field("ip_address")?;
    let ip_address = match ip_reader.string()? {
        None => None,
        Some(text) if text.trim().is_empty() || text.trim() == "*" => None,
        Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
            ConfigError::new(
                ip_reader.path(),
                format!("{text:?} is not an IP address (use \"*\" for every address)"),
            )
        })?),
    };
    let certificate = match r.field_as("certificates", "certificate")?.single()? {
        None => None,
        Some(c) => Some(CertificateConfig {
            thumbprint: c.field("thumbprint")?.string()?,
            pfx_file: c.field("pfx_file")?.string()?,
            password: c.field("password")?.string()?,
            cert_file: c.field("cert_file")?.string()?,
            key_file: c.field("key_file")?.string()?,
            use_self_signed: c.field("use_self_signed")?.bool()?.unwrap_or(false),
        }),
    };
    Ok(BindingConfig {
        kind,
        port: read_port(&r.field("port")?)?,
        hostname: r
            .field("hostname")?
            .string()?
            .filter(|h| !h.trim().is_empty()),
        require_sni: r.field("require_sni")?.bool()?,
        ip_address,
        certificate,
    })
}

impl TaskConfig {
    /// The hcldec spec Nomad decodes `config {}` with (`TaskConfigSchema`).
    pub fn spec() -> Spec {
        object([
            ("target_website", attr("target_website", "string", false)),
            (
                "permit_iusr",
                default(attr("permit_iusr", "bool", false), "true"),
            ),
            (
                "application_pools",
                block_list("application_pool", 0, 0, pool_spec()),
            ),
            // hcldec rejects unknown blocks, so the old name needs its own entry.
            (
                "applicationPools",
                block_list("applicationPool", 0, 0, pool_spec()),
            ),
            (
                "applications",
                block_list("application", 1, 0, application_spec()),
            ),
            ("bindings", block_list("binding", 0, 64, binding_spec())),
            (
                "service_auto_start_providers",
                block_list(
                    "service_auto_start_provider",
                    0,
                    0,
                    object([
                        ("name", attr("name", "string", true)),
                        ("type", attr("type", "string", true)),
                    ]),
                ),
            ),
        ])
    }

    /// Decodes Nomad's `msgpack_driver_config`. Empty bytes decode as an empty configuration
    /// (which [`TaskConfig::validate`] then rejects for lack of an application).
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = cty::decode(bytes)?;
        Self::from_cty(&raw)
    }

    /// Decodes an already decoded cty value (the root object).
    pub fn from_cty(raw: &rmpv::Value) -> Result<Self, ConfigError> {
        let root = Reader::new(raw);
        let pools = |key: &str, name: &str| -> Result<Vec<PoolConfig>, ConfigError> {
            root.field_as(key, name)?
                .items()?
                .iter()
                .map(read_pool)
                .collect()
        };
        Ok(Self {
            target_website: root
                .field("target_website")?
                .string()?
                .filter(|s| !s.is_empty()),
            permit_iusr: root.field("permit_iusr")?.bool()?.unwrap_or(true),
            application_pools: pools("application_pools", "application_pool")?,
            legacy_application_pools: pools("applicationPools", "applicationPool")?,
            applications: root
                .field_as("applications", "application")?
                .items()?
                .iter()
                .map(read_application)
                .collect::<Result<_, _>>()?,
            bindings: root
                .field_as("bindings", "binding")?
                .items()?
                .iter()
                .map(read_binding)
                .collect::<Result<_, _>>()?,
            service_auto_start_providers: root
                .field_as(
                    "service_auto_start_providers",
                    "service_auto_start_provider",
                )?
                .items()?
                .iter()
                .map(|p| {
                    Ok(ServiceAutoStartProvider {
                        name: required_string(&p.field("name")?)?,
                        type_name: required_string(&p.field("type")?)?,
                    })
                })
                .collect::<Result<_, ConfigError>>()?,
        })
    }

    /// Decodes a `config {}` body given as the generic map a job parser produces (blocks as
    /// objects or lists of objects), through the same spec and encoding a Nomad client uses.
    /// This is how `nomad_iis run` reads job files.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, ConfigError> {
        let value = nomad_plugin::hclspec::decode_json(&Self::spec(), body)?;
        Self::from_msgpack(&cty::encode(&value))
    }

    /// Every pool block with its field path: `applicationPool[i]` blocks first, then
    /// `application_pool[i]` (the original's merge order).
    pub fn pools(&self) -> Vec<(String, &PoolConfig)> {
        self.legacy_application_pools
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("applicationPool[{i}]"), p))
            .chain(
                self.application_pools
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("application_pool[{i}]"), p)),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use nomad_plugin::cty::{Value, encode};
    use nomad_plugin::hclspec::{check, output_type};

    use super::*;

    fn decode(value: Value) -> Result<TaskConfig, ConfigError> {
        TaskConfig::from_msgpack(&encode(&value))
    }

    fn app(path: &str) -> Value {
        Value::object([("path", Value::string(path))])
    }

    #[test]
    fn spec_obeys_nomads_rules() {
        let spec = TaskConfig::spec();
        assert_eq!(check(&spec), Ok(()));
        assert!(output_type(&spec).is_ok());
    }

    #[test]
    fn empty_input_gives_defaults() {
        let config = TaskConfig::from_msgpack(&[]).expect("empty decodes");
        assert_eq!(config, TaskConfig::default());
        assert!(config.permit_iusr);
    }

    #[test]
    fn nulls_take_defaults() {
        let config = decode(Value::object([
            ("permit_iusr", Value::Null),
            (
                "applications",
                Value::List(vec![Value::object([
                    ("path", Value::string("local")),
                    ("alias", Value::Null),
                    ("application_pool", Value::Null),
                    ("virtual_directories", Value::List(vec![])),
                ])]),
            ),
            (
                "application_pools",
                Value::List(vec![Value::object([("name", Value::Null)])]),
            ),
        ]))
        .expect("valid");
        assert!(config.permit_iusr);
        assert_eq!(config.applications, vec![ApplicationConfig::at("local")]);
        assert_eq!(config.application_pools, vec![PoolConfig::named("default")]);
    }

    #[test]
    fn decodes_pool_settings() {
        let config = decode(Value::object([
            ("applications", Value::List(vec![app("local")])),
            (
                "application_pools",
                Value::List(vec![Value::object([
                    ("name", Value::string("api")),
                    ("identity", Value::string("networkservice")),
                    ("start_mode", Value::string("AlwaysRunning")),
                    ("idle_timeout", Value::string("5m")),
                    ("periodic_restart", Value::string("1.00:00:00")),
                    ("queue_length", Value::string("2000")),
                    ("service_unavailable_response", Value::string("TcpLevel")),
                    ("managed_runtime_version", Value::string("None")),
                    (
                        "extensions",
                        Value::List(vec![Value::object([
                            ("name", Value::string("autoStart")),
                            ("value", Value::string("true")),
                        ])]),
                    ),
                ])]),
            ),
        ]))
        .expect("valid");
        let pool = &config.application_pools[0];
        assert_eq!(pool.name, "api");
        assert_eq!(pool.identity, Identity::NetworkService);
        assert_eq!(pool.start_mode, Some(StartMode::AlwaysRunning));
        assert_eq!(pool.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(pool.periodic_restart, Some(Duration::from_secs(86_400)));
        assert_eq!(pool.queue_length, Some(2000));
        assert_eq!(
            pool.service_unavailable_response,
            Some(UnavailableResponse::TcpLevel)
        );
        assert_eq!(
            pool.managed_runtime_version,
            Some(ManagedRuntimeVersion::None)
        );
        assert_eq!(
            pool.extensions,
            vec![Extension {
                name: "autoStart".into(),
                value: "true".into()
            }]
        );
    }

    #[test]
    fn enum_errors_list_the_allowed_values() {
        let err = decode(Value::object([(
            "application_pools",
            Value::List(vec![Value::object([(
                "start_mode",
                Value::string("Sometimes"),
            )])]),
        )]))
        .expect_err("bad enum");
        assert_eq!(
            err.to_string(),
            "application_pool[0].start_mode: expected one of OnDemand, AlwaysRunning, got \"Sometimes\""
        );
        let err = decode(Value::object([(
            "applicationPools",
            Value::List(vec![Value::object([("identity", Value::string("Root"))])]),
        )]))
        .expect_err("bad identity");
        assert_eq!(
            err.to_string(),
            "applicationPool[0].identity: expected one of ApplicationPoolIdentity, LocalSystem, \
             LocalService, NetworkService, SpecificUser, got \"Root\""
        );
        let err = decode(Value::object([(
            "bindings",
            Value::List(vec![Value::object([
                ("type", Value::string("ftp")),
                ("port", Value::string("web")),
            ])]),
        )]))
        .expect_err("bad binding type");
        assert_eq!(
            err.to_string(),
            "binding[0].type: expected one of http, https, got \"ftp\""
        );
    }

    #[test]
    fn decodes_bindings_and_ports() {
        let binding = |port: Value| {
            Value::object([
                ("type", Value::string("HTTPS")),
                ("port", port),
                ("ip_address", Value::string("127.0.0.1")),
                (
                    "certificates",
                    Value::List(vec![Value::object([
                        ("pfx_file", Value::string("cert.pfx")),
                        ("use_self_signed", Value::Bool(false)),
                    ])]),
                ),
            ])
        };
        let config = decode(Value::object([(
            "bindings",
            Value::List(vec![
                binding(Value::string("web")),
                binding(Value::string("8443")),
                binding(Value::number(443i64)),
            ]),
        )]))
        .expect("valid");
        assert_eq!(config.bindings[0].kind, BindingKind::Https);
        assert_eq!(config.bindings[0].port, PortRef::Label("web".into()));
        assert_eq!(config.bindings[1].port, PortRef::Static(8443));
        assert_eq!(config.bindings[2].port, PortRef::Static(443));
        assert_eq!(
            config.bindings[0].ip_address,
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(
            config.bindings[0].certificate,
            Some(CertificateConfig {
                pfx_file: Some("cert.pfx".into()),
                ..CertificateConfig::default()
            })
        );
    }

    #[test]
    fn port_and_address_errors_name_the_field() {
        let with = |port: Value, ip: Value| {
            decode(Value::object([(
                "bindings",
                Value::List(vec![Value::object([
                    ("type", Value::string("http")),
                    ("port", port),
                    ("ip_address", ip),
                ])]),
            )]))
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            with(Value::Bool(true), Value::Null),
            Err("binding[0].port: expected a number or a port label, got bool".into())
        );
        assert_eq!(
            with(Value::string("70000"), Value::Null),
            Err("binding[0].port: static port 70000 is out of range (1-65535)".into())
        );
        assert_eq!(
            with(Value::string(""), Value::Null),
            Err("binding[0].port: must not be empty".into())
        );
        assert_eq!(
            with(Value::Null, Value::Null),
            Err("binding[0].port: the argument is required".into())
        );
        assert_eq!(
            with(Value::string("web"), Value::string("localhost")),
            Err(
                "binding[0].ip_address: \"localhost\" is not an IP address (use \"*\" for every address)"
                    .into()
            )
        );
        assert!(with(Value::string("web"), Value::string("*")).is_ok());
    }

    #[test]
    fn merges_old_and_new_pool_blocks_in_order() {
        let config = decode(Value::object([
            (
                "application_pools",
                Value::List(vec![Value::object([("name", Value::string("new"))])]),
            ),
            (
                "applicationPools",
                Value::List(vec![Value::object([("name", Value::string("old"))])]),
            ),
        ]))
        .expect("valid");
        let names: Vec<(String, &str)> = config
            .pools()
            .into_iter()
            .map(|(path, p)| (path, p.name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("applicationPool[0]".to_owned(), "old"),
                ("application_pool[0]".to_owned(), "new")
            ]
        );
    }

    /// Hand-written msgpack with every number form a cty encoder may use, nulls where blocks
    /// have optional fields, and an empty block list.
    #[test]
    fn decodes_every_wire_form() {
        fn s(text: &str) -> Vec<u8> {
            let mut out = vec![0xa0 | text.len() as u8];
            out.extend_from_slice(text.as_bytes());
            out
        }
        let queue_lengths: [&[u8]; 6] = [
            &[0xcd, 0x07, 0xd0],                      // uint16
            &[0xcf, 0, 0, 0, 0, 0, 0, 0x07, 0xd0],    // uint64
            &[0xd3, 0, 0, 0, 0, 0, 0, 0x07, 0xd0],    // int64
            &[0xca, 0x44, 0xfa, 0x00, 0x00],          // float32 2000.0
            &[0xcb, 0x40, 0x9f, 0x40, 0, 0, 0, 0, 0], // float64 2000.0
            &[0xa4, b'2', b'0', b'0', b'0'],          // decimal string
        ];
        let mut bytes = vec![0x84];
        bytes.extend(s("applications"));
        bytes.push(0x91);
        bytes.push(0x82);
        bytes.extend(s("path"));
        bytes.extend(s("local"));
        bytes.extend(s("alias"));
        bytes.push(0xc0);
        bytes.extend(s("bindings"));
        bytes.push(0x90);
        bytes.extend(s("service_auto_start_providers"));
        bytes.push(0xc0);
        bytes.extend(s("application_pools"));
        bytes.push(0x90 | queue_lengths.len() as u8);
        for (i, queue_length) in queue_lengths.iter().enumerate() {
            bytes.push(0x83);
            bytes.extend(s("name"));
            bytes.extend(s(&format!("p{i}")));
            bytes.extend(s("queue_length"));
            bytes.extend_from_slice(queue_length);
            bytes.extend(s("idle_timeout"));
            bytes.push(0xc0);
        }
        let config = TaskConfig::from_msgpack(&bytes).expect("valid msgpack");
        assert_eq!(config.applications, vec![ApplicationConfig::at("local")]);
        assert!(config.bindings.is_empty());
        assert!(config.service_auto_start_providers.is_empty());
        let lengths: Vec<Option<u32>> = config
            .application_pools
            .iter()
            .map(|p| p.queue_length)
            .collect();
        assert_eq!(lengths, vec![Some(2000); 6]);
        assert!(
            config
                .application_pools
                .iter()
                .all(|p| p.idle_timeout.is_none())
        );
    }

    #[test]
    fn fractional_and_negative_numbers_are_refused() {
        let pool = |queue_length: Value| {
            decode(Value::object([(
                "application_pools",
                Value::List(vec![Value::object([("queue_length", queue_length)])]),
            )]))
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            pool(Value::Number(cty::Number::parse("0.1").expect("literal"))),
            Err("application_pool[0].queue_length: expected an integer between 0 and 4294967295, got 0.1".into())
        );
        assert_eq!(
            pool(Value::number(-1i64)),
            Err("application_pool[0].queue_length: expected an integer between 0 and 4294967295, got -1".into())
        );
    }

    #[test]
    fn malformed_bytes_are_an_error() {
        assert_eq!(
            TaskConfig::from_msgpack(&[0x81, 0xa1]).map_err(|e| e.path),
            Err(String::new())
        );
        let err = TaskConfig::from_msgpack(&[0x92, 0x01, 0x02]).expect_err("not an object");
        assert_eq!(err.to_string(), "expected an object, got list");
    }

    #[test]
    fn decodes_the_process_block() {
        let body = serde_json::json!({
            "application": [
                {
                    "path": "local/api",
                    "alias": "api",
                    "process": {
                        "command": "./server",
                        "args": ["--port", "%PORT%", 8],
                        "env": {"MODE": "production", "WORKERS": 4},
                    },
                },
                {"path": "local/site"},
            ],
        });
        let config = TaskConfig::from_json(&body).expect("valid body");
        assert_eq!(
            config.applications[0].process,
            Some(ProcessConfig {
                command: "./server".into(),
                args: vec!["--port".into(), "%PORT%".into(), "8".into()],
                env: BTreeMap::from([
                    ("MODE".to_owned(), "production".to_owned()),
                    ("WORKERS".to_owned(), "4".to_owned()),
                ]),
            })
        );
        assert_eq!(config.applications[1].process, None);

        let bare = TaskConfig::from_json(&serde_json::json!({
            "application": {"path": "local", "process": {"command": "python3"}},
        }))
        .expect("only a command");
        assert_eq!(
            bare.applications[0].process,
            Some(ProcessConfig {
                command: "python3".into(),
                ..ProcessConfig::default()
            })
        );

        let err = TaskConfig::from_json(&serde_json::json!({
            "application": {"path": "local", "process": {"args": ["x"]}},
        }))
        .expect_err("no command");
        assert!(err.to_string().contains("command"), "{err}");
        let err = TaskConfig::from_json(&serde_json::json!({
            "application": {"path": "local", "process": [{"command": "a"}, {"command": "b"}]},
        }))
        .expect_err("two process blocks");
        assert!(err.to_string().contains("process"), "{err}");
    }

    #[test]
    fn process_fields_are_typed_with_paths() {
        let with_process = |process: Value| {
            decode(Value::object([(
                "applications",
                Value::List(vec![Value::object([
                    ("path", Value::string("local")),
                    ("process", process),
                ])]),
            )]))
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            with_process(Value::object([
                ("command", Value::string("./app")),
                ("args", Value::List(vec![Value::Null])),
            ])),
            Err("application[0].process.args[0]: the argument is required".into())
        );
        assert_eq!(
            with_process(Value::object([
                ("command", Value::string("./app")),
                ("env", Value::Bool(true)),
            ])),
            Err("application[0].process.env: expected a map, got bool".into())
        );
        assert_eq!(
            with_process(Value::object([("command", Value::Null)])),
            Err("application[0].process.command: the argument is required".into())
        );
        assert_eq!(
            with_process(Value::Null).map(|c| c.applications[0].process.clone()),
            Ok(None)
        );
    }

    #[test]
    fn reads_from_json_bodies() {
        let body = serde_json::json!({
            "application": {"path": "local"},
            "binding": [{"type": "http", "port": 8080, "hostname": "a.example"}],
        });
        let config = TaskConfig::from_json(&body).expect("valid body");
        assert_eq!(config.applications, vec![ApplicationConfig::at("local")]);
        assert_eq!(config.bindings[0].port, PortRef::Static(8080));
        let err = TaskConfig::from_json(&serde_json::json!({})).expect_err("no application");
        assert_eq!(
            err.to_string(),
            "application: at least 1 block(s) required, got 0"
        );
    }
}
