//! Turns a task configuration plus what Nomad told us about the task into the fully resolved
//! [`HostSpec`] a site host runs: ports resolved, paths absolute, aliases normalised, IIS
//! defaults applied, only the pools applications use.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use control::{
    ApplicationSpec, BindingSpec, CertificateSource, HostSpec, PoolSpec, ProcessSpec, StartMode,
    UnavailableResponse, VirtualDirectorySpec,
};

use crate::env::task_env;
use crate::error::ConfigError;
use crate::naming::{pool_full_name, site_name};
use crate::task::{BindingConfig, CertificateConfig, PortRef, TaskConfig};
use crate::validate::{missing_certificate_source, non_blank};

/// IIS default of `idle_timeout`: 20 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// IIS default of `periodic_restart`: 1740 minutes (29 hours).
pub const DEFAULT_PERIODIC_RESTART: Duration = Duration::from_secs(1740 * 60);
/// IIS default of `start_time_limit`: 90 seconds.
pub const DEFAULT_START_TIME_LIMIT: Duration = Duration::from_secs(90);
/// IIS default of `shutdown_time_limit`: 90 seconds.
pub const DEFAULT_SHUTDOWN_TIME_LIMIT: Duration = Duration::from_secs(90);
/// IIS default of `queue_length`.
pub const DEFAULT_QUEUE_LENGTH: u32 = 1000;

/// What the driver (or `nomad_iis run`) knows about the task besides its `config {}` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolveContext {
    /// Nomad allocation id.
    pub alloc_id: String,
    /// Nomad task name.
    pub task_name: String,
    /// The task's folder (`<alloc>/<task>`); relative paths are resolved against it and
    /// `TMP`/`TEMP`/`TMPDIR` point at its `tmp` folder.
    pub task_dir: PathBuf,
    /// Port label → host port, from Nomad's `TaskConfig.resources`.
    pub ports: BTreeMap<String, u16>,
    /// The host's private runtime folder.
    pub runtime_dir: PathBuf,
    /// Nomad's stdout FIFO (or a file, or `/dev/null`).
    pub stdout_path: PathBuf,
    /// Nomad's stderr FIFO (or a file, or `/dev/null`).
    pub stderr_path: PathBuf,
    /// The task's environment as Nomad computed it.
    pub env: BTreeMap<String, String>,
    /// The driver's placeholder application, if any.
    pub placeholder_app_path: Option<PathBuf>,
    /// Address for bindings without `ip_address` (0.0.0.0 unless told otherwise).
    pub default_ip: IpAddr,
    /// The driver configuration's `limits` block.
    pub limits: control::HostLimits,
}

impl Default for ResolveContext {
    fn default() -> Self {
        Self {
            alloc_id: String::new(),
            task_name: String::new(),
            task_dir: PathBuf::new(),
            ports: BTreeMap::new(),
            runtime_dir: PathBuf::new(),
            stdout_path: PathBuf::from("/dev/null"),
            stderr_path: PathBuf::from("/dev/null"),
            env: BTreeMap::new(),
            placeholder_app_path: None,
            default_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            limits: control::HostLimits::default(),
        }
    }
}

/// `path` if absolute, else `task_dir/path`.
fn under_task_dir(task_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        task_dir.join(path)
    }
}

/// Resolves a task configuration into a host specification. Runs the structural checks of
/// [`TaskConfig::validate`] (not the node policy, which needs the driver configuration), and
/// as its post-condition the host's own [`HostSpec::check`]: a spec that resolves is one the
/// host accepts (ports are only known here, so two port labels mapped to one port and two
/// bindings answering one host name on it are caught now, naming the binding).
pub fn resolve(task: &TaskConfig, ctx: &ResolveContext) -> Result<HostSpec, ConfigError> {
    let spec = resolve_unchecked(task, ctx)?;
    spec.check()
        .map_err(|e| ConfigError::new(config_field(&spec, &e.field), e.message))?;
    Ok(spec)
}

/// The configuration's name for a spec field: bindings and applications keep their indices;
/// the spec's `pool[i]` (used pools only) becomes the pool's name.
fn config_field(spec: &HostSpec, field: &str) -> String {
    if let Some(rest) = field.strip_prefix("pool[")
        && let Some((index, tail)) = rest.split_once(']')
        && let Some(pool) = index.parse::<usize>().ok().and_then(|i| spec.pools.get(i))
    {
        return format!("application_pool {:?}{tail}", pool.name);
    }
    field.to_owned()
}

fn resolve_unchecked(task: &TaskConfig, ctx: &ResolveContext) -> Result<HostSpec, ConfigError> {
    let checked = task.structure()?;
    let site_name = site_name(&ctx.alloc_id, &ctx.task_name)?;

    let pools = checked
        .pools
        .iter()
        .map(|used| {
            let pool = &used.config;
            let full_name = pool_full_name(&ctx.alloc_id, &ctx.task_name, &pool.name).map_err(
                |e| match &used.path {
                    Some(path) => ConfigError::new(format!("{path}.name"), e.message),
                    None => e,
                },
            )?;
            Ok(PoolSpec {
                name: pool.name.clone(),
                full_name,
                start_mode: pool.start_mode.unwrap_or(StartMode::OnDemand),
                idle_timeout: pool.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
                periodic_restart: pool.periodic_restart.unwrap_or(DEFAULT_PERIODIC_RESTART),
                start_time_limit: pool.start_time_limit.unwrap_or(DEFAULT_START_TIME_LIMIT),
                shutdown_time_limit: pool
                    .shutdown_time_limit
                    .unwrap_or(DEFAULT_SHUTDOWN_TIME_LIMIT),
                disable_overlapped_recycle: pool.disable_overlapped_recycle.unwrap_or(false),
                service_unavailable_response: pool
                    .service_unavailable_response
                    .unwrap_or(UnavailableResponse::HttpLevel),
                queue_length: pool.queue_length.unwrap_or(DEFAULT_QUEUE_LENGTH),
                identity: None,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;

    let applications = task
        .applications
        .iter()
        .zip(&checked.aliases)
        .zip(&checked.directory_aliases)
        .map(|((app, alias), dir_aliases)| ApplicationSpec {
            alias: alias.clone(),
            path: under_task_dir(&ctx.task_dir, &app.path),
            pool: app.application_pool.clone(),
            virtual_directories: app
                .virtual_directories
                .iter()
                .zip(dir_aliases)
                .map(|(dir, alias)| VirtualDirectorySpec {
                    alias: alias.clone(),
                    path: under_task_dir(&ctx.task_dir, &dir.path),
                })
                .collect(),
            process: app.process.as_ref().map(|p| ProcessSpec {
                command: p.command.clone(),
                args: p.args.clone(),
                env: p.env.clone(),
            }),
        })
        .collect();

    let bindings = task
        .bindings
        .iter()
        .enumerate()
        .map(|(i, binding)| resolve_binding(&format!("binding[{i}]"), binding, ctx))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(HostSpec {
        alloc_id: ctx.alloc_id.clone(),
        task_name: ctx.task_name.clone(),
        site_name,
        runtime_dir: ctx.runtime_dir.clone(),
        task_dir: ctx.task_dir.clone(),
        stdout_path: ctx.stdout_path.clone(),
        stderr_path: ctx.stderr_path.clone(),
        env: task_env(&ctx.env, &ctx.task_dir.join("tmp")),
        bindings,
        pools,
        applications,
        placeholder_app_path: ctx.placeholder_app_path.clone(),
        limits: ctx.limits.clone(),
    })
}

fn resolve_binding(
    path: &str,
    binding: &BindingConfig,
    ctx: &ResolveContext,
) -> Result<BindingSpec, ConfigError> {
    let port = match &binding.port {
        PortRef::Static(port) => *port,
        PortRef::Label(label) => *ctx.ports.get(label).ok_or_else(|| {
            let known = if ctx.ports.is_empty() {
                "the task has no ports; add a port to the group's network block".to_owned()
            } else {
                let labels: Vec<&str> = ctx.ports.keys().map(String::as_str).collect();
                format!("known labels: {}", labels.join(", "))
            };
            ConfigError::new(
                format!("{path}.port"),
                format!("unknown port label {label:?} ({known})"),
            )
        })?,
    };
    let certificate = binding
        .certificate
        .as_ref()
        .map(|c| certificate_source(&format!("{path}.certificate"), c, &ctx.task_dir))
        .transpose()?;
    Ok(BindingSpec {
        kind: binding.kind,
        ip_address: binding.ip_address.unwrap_or(ctx.default_ip),
        port,
        hostname: binding.hostname.clone(),
        require_sni: binding.require_sni.unwrap_or(false),
        certificate,
    })
}

fn certificate_source(
    path: &str,
    certificate: &CertificateConfig,
    task_dir: &Path,
) -> Result<CertificateSource, ConfigError> {
    if let Some(pfx) = non_blank(&certificate.pfx_file) {
        return Ok(CertificateSource::Pfx {
            pfx_file: under_task_dir(task_dir, pfx),
            password: certificate.password.clone().unwrap_or_default(),
        });
    }
    if let (Some(cert), Some(key)) = (
        non_blank(&certificate.cert_file),
        non_blank(&certificate.key_file),
    ) {
        return Ok(CertificateSource::PemFiles {
            cert_file: under_task_dir(task_dir, cert),
            key_file: under_task_dir(task_dir, key),
        });
    }
    if certificate.use_self_signed {
        return Ok(CertificateSource::SelfSigned);
    }
    // The structural checks reject this earlier; kept so resolve never guesses.
    Err(missing_certificate_source(path))
}

#[cfg(test)]
mod tests {
    use control::BindingKind;

    use super::*;
    use crate::task::{ApplicationConfig, PoolConfig, ProcessConfig, VirtualDirectoryConfig};

    const ALLOC: &str = "5b3a9e0c-2f41-4d6a-9c1e-7a8b9c0d1e2f";

    fn ctx() -> ResolveContext {
        ResolveContext {
            alloc_id: ALLOC.into(),
            task_name: "web".into(),
            task_dir: PathBuf::from("/var/nomad/alloc/x/web"),
            ports: BTreeMap::from([("http".to_owned(), 24001), ("https".to_owned(), 24002)]),
            runtime_dir: PathBuf::from("/run/nomad_iis/x-web"),
            env: BTreeMap::from([
                ("PATH".to_owned(), "/bin".to_owned()),
                ("path".to_owned(), "/other".to_owned()),
            ]),
            placeholder_app_path: Some(PathBuf::from("/srv/placeholder")),
            ..ResolveContext::default()
        }
    }

    fn binding(kind: BindingKind, port: PortRef) -> BindingConfig {
        BindingConfig {
            kind,
            port,
            hostname: None,
            require_sni: None,
            ip_address: None,
            certificate: None,
        }
    }

    #[test]
    fn resolves_a_full_task() {
        let mut api_pool = PoolConfig::named("api");
        api_pool.start_mode = Some(StartMode::AlwaysRunning);
        api_pool.idle_timeout = Some(Duration::ZERO);
        api_pool.queue_length = Some(50);
        let task = TaskConfig {
            application_pools: vec![api_pool, PoolConfig::named("spare")],
            applications: vec![
                ApplicationConfig {
                    virtual_directories: vec![VirtualDirectoryConfig {
                        alias: "img/".into(),
                        path: "/srv/images".into(),
                        extensions: vec![],
                    }],
                    ..ApplicationConfig::at("local/site")
                },
                ApplicationConfig {
                    alias: "api/".into(),
                    application_pool: "api".into(),
                    ..ApplicationConfig::at("/opt/api")
                },
            ],
            bindings: vec![
                binding(BindingKind::Http, PortRef::Label("http".into())),
                BindingConfig {
                    hostname: Some("shop.example.com".into()),
                    require_sni: Some(true),
                    ip_address: Some(IpAddr::from([127, 0, 0, 1])),
                    certificate: Some(CertificateConfig {
                        pfx_file: Some("secrets/cert.pfx".into()),
                        password: Some("pw".into()),
                        ..CertificateConfig::default()
                    }),
                    ..binding(BindingKind::Https, PortRef::Static(8443))
                },
            ],
            ..TaskConfig::default()
        };
        let spec = resolve(&task, &ctx()).expect("resolvable");
        assert_eq!(spec.site_name, format!("nomad-{ALLOC}-web"));
        assert_eq!(
            spec.pools,
            vec![
                PoolSpec {
                    name: "default".into(),
                    full_name: format!("nomad-{ALLOC}-web"),
                    start_mode: StartMode::OnDemand,
                    idle_timeout: Duration::from_secs(1200),
                    periodic_restart: Duration::from_secs(104_400),
                    start_time_limit: Duration::from_secs(90),
                    shutdown_time_limit: Duration::from_secs(90),
                    disable_overlapped_recycle: false,
                    service_unavailable_response: UnavailableResponse::HttpLevel,
                    queue_length: 1000,
                    identity: None,
                },
                PoolSpec {
                    name: "api".into(),
                    full_name: format!("nomad-{ALLOC}-web-api"),
                    start_mode: StartMode::AlwaysRunning,
                    idle_timeout: Duration::ZERO,
                    queue_length: 50,
                    ..spec.pools[0].clone()
                },
            ]
        );
        assert_eq!(
            spec.applications,
            vec![
                ApplicationSpec {
                    alias: "/".into(),
                    path: PathBuf::from("/var/nomad/alloc/x/web/local/site"),
                    pool: "default".into(),
                    virtual_directories: vec![VirtualDirectorySpec {
                        alias: "/img".into(),
                        path: PathBuf::from("/srv/images"),
                    }],
                    process: None,
                },
                ApplicationSpec {
                    alias: "/api".into(),
                    path: PathBuf::from("/opt/api"),
                    pool: "api".into(),
                    virtual_directories: vec![],
                    process: None,
                },
            ]
        );
        assert_eq!(
            spec.bindings,
            vec![
                BindingSpec {
                    kind: BindingKind::Http,
                    ip_address: IpAddr::from([0, 0, 0, 0]),
                    port: 24001,
                    hostname: None,
                    require_sni: false,
                    certificate: None,
                },
                BindingSpec {
                    kind: BindingKind::Https,
                    ip_address: IpAddr::from([127, 0, 0, 1]),
                    port: 8443,
                    hostname: Some("shop.example.com".into()),
                    require_sni: true,
                    certificate: Some(CertificateSource::Pfx {
                        pfx_file: PathBuf::from("/var/nomad/alloc/x/web/secrets/cert.pfx"),
                        password: "pw".into(),
                    }),
                },
            ]
        );
        assert_eq!(
            spec.env,
            BTreeMap::from([
                ("PATH".to_owned(), "/bin".to_owned()),
                ("TEMP".to_owned(), "/var/nomad/alloc/x/web/tmp".to_owned()),
                ("TMP".to_owned(), "/var/nomad/alloc/x/web/tmp".to_owned()),
                ("TMPDIR".to_owned(), "/var/nomad/alloc/x/web/tmp".to_owned()),
            ])
        );
        assert_eq!(spec.runtime_dir, PathBuf::from("/run/nomad_iis/x-web"));
        assert_eq!(
            spec.placeholder_app_path,
            Some(PathBuf::from("/srv/placeholder"))
        );
    }

    #[test]
    fn process_blocks_become_process_specs() {
        let task = TaskConfig {
            applications: vec![
                ApplicationConfig {
                    process: Some(ProcessConfig {
                        command: "./server".into(),
                        args: vec!["--port".into(), "%PORT%".into()],
                        env: BTreeMap::from([("MODE".to_owned(), "prod".to_owned())]),
                    }),
                    ..ApplicationConfig::at("local/api")
                },
                ApplicationConfig {
                    alias: "static".into(),
                    ..ApplicationConfig::at("local/static")
                },
            ],
            ..TaskConfig::default()
        };
        let spec = resolve(&task, &ctx()).expect("resolvable");
        assert_eq!(
            spec.applications[0].process,
            Some(ProcessSpec {
                command: "./server".into(),
                args: vec!["--port".into(), "%PORT%".into()],
                env: BTreeMap::from([("MODE".to_owned(), "prod".to_owned())]),
            })
        );
        assert_eq!(spec.applications[1].process, None);
        // Identities are the driver's business: it needs the node's users.
        assert!(spec.pools.iter().all(|p| p.identity.is_none()));
    }

    #[test]
    fn pem_and_self_signed_certificates() {
        let pem = CertificateConfig {
            cert_file: Some("c.pem".into()),
            key_file: Some("/etc/k.pem".into()),
            ..CertificateConfig::default()
        };
        assert_eq!(
            certificate_source("c", &pem, Path::new("/t")),
            Ok(CertificateSource::PemFiles {
                cert_file: PathBuf::from("/t/c.pem"),
                key_file: PathBuf::from("/etc/k.pem"),
            })
        );
        let self_signed = CertificateConfig {
            use_self_signed: true,
            ..CertificateConfig::default()
        };
        assert_eq!(
            certificate_source("c", &self_signed, Path::new("/t")),
            Ok(CertificateSource::SelfSigned)
        );
    }

    #[test]
    fn unknown_port_labels_list_the_known_ones() {
        let task = TaskConfig {
            applications: vec![ApplicationConfig::at("local")],
            bindings: vec![binding(BindingKind::Http, PortRef::Label("web".into()))],
            ..TaskConfig::default()
        };
        let err = resolve(&task, &ctx()).expect_err("no such label");
        assert_eq!(
            err.to_string(),
            "binding[0].port: unknown port label \"web\" (known labels: http, https)"
        );
        let no_ports = ResolveContext {
            ports: BTreeMap::new(),
            ..ctx()
        };
        let err = resolve(&task, &no_ports).expect_err("no ports");
        assert_eq!(
            err.to_string(),
            "binding[0].port: unknown port label \"web\" (the task has no ports; add a port to the group's network block)"
        );
    }

    #[test]
    fn long_names_are_errors_naming_the_pool() {
        let task = TaskConfig {
            application_pools: vec![PoolConfig::named("reports")],
            applications: vec![ApplicationConfig {
                application_pool: "reports".into(),
                ..ApplicationConfig::at("local")
            }],
            ..TaskConfig::default()
        };
        let long_task = ResolveContext {
            task_name: "t".repeat(20),
            ..ctx()
        };
        let err = resolve(&task, &long_task).expect_err("pool name too long");
        assert_eq!(err.path, "application_pool[0].name");
        assert!(
            err.message
                .contains("shorten the task name by 7 characters"),
            "{err}"
        );
        let too_long = ResolveContext {
            task_name: "t".repeat(30),
            ..ctx()
        };
        let err = resolve(&task, &too_long).expect_err("site name too long");
        assert_eq!(err.path, "");
        assert!(err.message.starts_with("site name"), "{err}");
    }

    #[test]
    fn structural_errors_stop_resolution() {
        let task = TaskConfig::default();
        assert_eq!(
            resolve(&task, &ctx()).map_err(|e| e.to_string()),
            Err("application: at least one application block is required".into())
        );
    }

    fn with_hostname(port: &str, hostname: &str) -> BindingConfig {
        BindingConfig {
            hostname: Some(hostname.into()),
            ..binding(BindingKind::Http, PortRef::Label(port.into()))
        }
    }

    fn task_with(bindings: Vec<BindingConfig>) -> TaskConfig {
        TaskConfig {
            applications: vec![ApplicationConfig::at("local/site")],
            bindings,
            ..TaskConfig::default()
        }
    }

    #[test]
    fn a_host_name_with_and_without_its_trailing_dot_on_one_port_is_a_config_error() {
        let task = task_with(vec![
            with_hostname("http", "a.com"),
            with_hostname("http", "a.com."),
        ]);
        assert_eq!(
            resolve(&task, &ctx()).unwrap_err().to_string(),
            "binding[1]: same port, hostname and address as binding[0]"
        );
        assert!(task.validate(&crate::DriverConfig::default()).is_err());
    }

    #[test]
    fn the_hosts_own_check_is_the_post_condition() {
        // Two labels Nomad mapped to one port: only known once ports are resolved.
        let mut context = ctx();
        context.ports.insert("other".into(), 24001);
        let task = task_with(vec![
            with_hostname("http", "Shop.example.com"),
            with_hostname("other", "shop.example.com."),
        ]);
        assert!(task.validate(&crate::DriverConfig::default()).is_ok());
        let err = resolve(&task, &context).unwrap_err();
        assert_eq!(err.path, "binding[1].hostname");
        assert_eq!(
            err.message,
            "binding[0] already answers for shop.example.com on 0.0.0.0:24001"
        );
        // What resolves, the host accepts.
        let fine = task_with(vec![
            with_hostname("http", "a.com"),
            with_hostname("https", "a.com."),
        ]);
        resolve(&fine, &context).unwrap().check().unwrap();
        // A https and an http binding on one port.
        let mut https = binding(BindingKind::Https, PortRef::Label("other".into()));
        https.certificate = Some(crate::task::CertificateConfig {
            use_self_signed: true,
            ..Default::default()
        });
        let mixed = task_with(vec![
            binding(BindingKind::Http, PortRef::Label("http".into())),
            https,
        ]);
        let err = resolve(&mixed, &context).unwrap_err();
        assert_eq!(err.path, "binding[1]");
        assert!(
            err.message.contains("cannot serve both http and https"),
            "{err}"
        );
    }
}
