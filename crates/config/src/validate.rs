//! Validation of a task configuration against the node's driver configuration.
//!
//! Two layers: structural rules that need nothing but the task (unique aliases and pool names,
//! pool references, binding and certificate rules), which [`crate::resolve()`] runs too, and
//! the node's policy (allowed identities, users and target websites). Every error names its
//! field path; accepted options without effect on Linux produce [`Notice`]s.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use control::BindingKind;

use crate::driver::DriverConfig;
use crate::error::{ConfigError, Notice};
use crate::naming::{DEFAULT_POOL, NAME_PREFIX, sanitize_name};
use crate::task::{
    BindingConfig, CertificateConfig, Identity, PoolConfig, PortRef, ProcessConfig, TaskConfig,
};

/// Longest short pool name (the original's rule: pool names are appended to full names that
/// must stay within 64 characters).
pub const MAX_POOL_NAME_LEN: usize = 8;
/// IIS's range for `queue_length`.
pub const QUEUE_LENGTH_RANGE: (u32, u32) = (10, 65535);

const NO_EFFECT: &str = "has no effect on Linux";

/// The certificate sources that work on Linux, for messages.
const CERTIFICATE_SOURCES: &str = "pfx_file, cert_file + key_file or use_self_signed";

/// Normalises an alias to `/` or `/a/b` (the host's rule, [`control::normalize_alias`]):
/// surrounding and repeated slashes are dropped (the original trims a leading `/`); `.` and `..`
/// segments, `\`, `?`, `#`, `%` and control characters are refused.
pub use control::normalize_alias;

/// A pool some application uses; `path` is `None` for the implied `default` pool.
#[derive(Debug, Clone)]
pub(crate) struct UsedPool<'a> {
    pub path: Option<String>,
    pub config: Cow<'a, PoolConfig>,
}

/// What the structural checks learnt, for validation and resolution.
#[derive(Debug)]
pub(crate) struct Checked<'a> {
    /// Used pools in declaration order; the implied default pool first when there is one.
    pub pools: Vec<UsedPool<'a>>,
    /// Declared pools no application uses.
    pub unused_pools: Vec<(String, &'a PoolConfig)>,
    /// Normalised alias of each application (same order).
    pub aliases: Vec<String>,
    /// Normalised aliases of each application's virtual directories.
    pub directory_aliases: Vec<Vec<String>>,
}

fn is_set(value: &Option<String>) -> bool {
    non_blank(value).is_some()
}

/// The value of an optional string field, unless it is absent or blank.
pub(crate) fn non_blank(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.trim().is_empty())
}

/// Fails at `path` when `value` is blank.
fn require_non_blank(path: impl FnOnce() -> String, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::new(path(), "must not be empty"));
    }
    Ok(())
}

/// Records `alias` (compared ignoring case as the host's router does, [`control::alias_key`])
/// and fails at `path` when it was seen before.
fn record_unique_alias(
    seen: &mut HashSet<String>,
    alias: &str,
    path: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if seen.insert(control::alias_key(alias)) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path(),
            format!("duplicate alias {alias:?}"),
        ))
    }
}

/// Whether a node's allow-list admits `name`: `*` or the name itself, ignoring case.
fn allows(allowed: &[String], name: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

/// `allowed: a, b` for a message, or `nothing` (e.g. `no users are allowed`) when empty.
fn allowed_list<S: AsRef<str>>(allowed: &[S], nothing: &str) -> String {
    if allowed.is_empty() {
        nothing.to_owned()
    } else {
        let names: Vec<&str> = allowed.iter().map(AsRef::as_ref).collect();
        format!("allowed: {}", names.join(", "))
    }
}

fn valid_hostname(host: &str) -> bool {
    let body = host.strip_prefix("*.").unwrap_or(host);
    !body.is_empty()
        && body.len() <= 253
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !body.starts_with('.')
        && !body.contains("..")
}

impl TaskConfig {
    /// Checks the configuration against the node's driver configuration. Returns notices
    /// about accepted options that change nothing on Linux, or the first error.
    pub fn validate(&self, driver: &DriverConfig) -> Result<Vec<Notice>, ConfigError> {
        let checked = self.structure()?;
        let mut notices = Vec::new();

        if let Some(site) = &self.target_website {
            check_target_website(site, driver)?;
            notices.push(Notice::new(
                "target_website",
                format!("{NO_EFFECT}: the task is served by its own site"),
            ));
        }
        if !self.permit_iusr {
            notices.push(Notice::new("permit_iusr", NO_EFFECT));
        }

        for pool in &checked.pools {
            check_identity(pool, driver)?;
            if let Some(path) = &pool.path {
                pool_notices(path, &pool.config, &mut notices);
            }
        }
        for (path, pool) in &checked.unused_pools {
            notices.push(Notice::new(
                path.clone(),
                format!(
                    "pool {:?} is not used by any application and is not created",
                    pool.name
                ),
            ));
        }

        for (i, app) in self.applications.iter().enumerate() {
            let path = format!("application[{i}]");
            if app.enable_preload.is_some() {
                notices.push(Notice::new(format!("{path}.enable_preload"), NO_EFFECT));
            }
            if app.service_auto_start_enabled.is_some() {
                notices.push(Notice::new(
                    format!("{path}.service_auto_start_enabled"),
                    NO_EFFECT,
                ));
            }
            if app.service_auto_start_provider.is_some() {
                notices.push(Notice::new(
                    format!("{path}.service_auto_start_provider"),
                    NO_EFFECT,
                ));
            }
            extension_notices(&path, app.extensions.len(), &mut notices);
            for (j, dir) in app.virtual_directories.iter().enumerate() {
                extension_notices(
                    &format!("{path}.virtual_directory[{j}]"),
                    dir.extensions.len(),
                    &mut notices,
                );
            }
        }
        for i in 0..self.service_auto_start_providers.len() {
            notices.push(Notice::new(
                format!("service_auto_start_provider[{i}]"),
                NO_EFFECT,
            ));
        }

        if self.bindings.is_empty() {
            notices.push(Notice::new(
                "binding",
                "no binding block: the site accepts no connections",
            ));
        }
        for (i, binding) in self.bindings.iter().enumerate() {
            binding_notices(&format!("binding[{i}]"), binding, &mut notices);
        }
        Ok(notices)
    }

    /// The rules that need nothing but the task configuration.
    pub(crate) fn structure(&self) -> Result<Checked<'_>, ConfigError> {
        if self.applications.is_empty() {
            return Err(ConfigError::new(
                "application",
                "at least one application block is required",
            ));
        }
        crate::windows_path::check_task(self)?;

        // Pools: names non-empty, short, unique (IIS compares them case-insensitively, and
        // two names must not become the same full name once sanitised).
        let declared = self.pools();
        let mut by_key: HashMap<String, (String, String)> = HashMap::new();
        for (path, pool) in &declared {
            check_pool(path, pool)?;
            let key = sanitize_name(&pool.name).to_lowercase();
            if let Some((other_path, other_name)) = by_key.get(&key) {
                let message = if other_name.eq_ignore_ascii_case(&pool.name) {
                    format!(
                        "duplicate pool name {:?} (also used by {other_path})",
                        pool.name
                    )
                } else {
                    format!(
                        "pool names {other_name:?} ({other_path}) and {:?} become the same full name",
                        pool.name
                    )
                };
                return Err(ConfigError::new(format!("{path}.name"), message));
            }
            by_key.insert(key, (path.clone(), pool.name.clone()));
        }

        // Applications: paths, unique aliases, existing pools.
        let mut aliases = Vec::new();
        let mut directory_aliases = Vec::new();
        let mut seen_aliases = HashSet::new();
        for (i, app) in self.applications.iter().enumerate() {
            let path = format!("application[{i}]");
            require_non_blank(|| format!("{path}.path"), &app.path)?;
            let alias = normalize_alias(&app.alias)
                .map_err(|m| ConfigError::new(format!("{path}.alias"), m))?;
            record_unique_alias(&mut seen_aliases, &alias, || format!("{path}.alias"))?;
            let pool_name = app.application_pool.as_str();
            require_non_blank(|| format!("{path}.application_pool"), pool_name)?;
            if pool_name != DEFAULT_POOL && !declared.iter().any(|(_, p)| p.name == pool_name) {
                return Err(ConfigError::new(
                    format!("{path}.application_pool"),
                    format!("no application_pool block is named {pool_name:?}"),
                ));
            }
            let mut dirs = Vec::new();
            let mut seen_dir_aliases = HashSet::new();
            for (j, dir) in app.virtual_directories.iter().enumerate() {
                let dir_path = format!("{path}.virtual_directory[{j}]");
                let dir_alias = normalize_alias(&dir.alias)
                    .map_err(|m| ConfigError::new(format!("{dir_path}.alias"), m))?;
                if dir_alias == "/" {
                    return Err(ConfigError::new(
                        format!("{dir_path}.alias"),
                        "must name a folder below the application, not \"/\"",
                    ));
                }
                record_unique_alias(&mut seen_dir_aliases, &dir_alias, || {
                    format!("{dir_path}.alias")
                })?;
                require_non_blank(|| format!("{dir_path}.path"), &dir.path)?;
                dirs.push(dir_alias);
            }
            aliases.push(alias);
            directory_aliases.push(dirs);
        }

        for (i, app) in self.applications.iter().enumerate() {
            if let Some(process) = &app.process {
                check_process(&format!("application[{i}].process"), process)?;
            }
        }

        // Pools in use: declared order, the implied default first.
        let used = |name: &str| self.applications.iter().any(|a| a.application_pool == name);
        let mut pools = Vec::new();
        if used(DEFAULT_POOL) && !declared.iter().any(|(_, p)| p.name == DEFAULT_POOL) {
            pools.push(UsedPool {
                path: None,
                config: Cow::Owned(PoolConfig::named(DEFAULT_POOL)),
            });
        }
        let mut unused_pools = Vec::new();
        for (path, pool) in declared {
            if used(&pool.name) {
                pools.push(UsedPool {
                    path: Some(path),
                    config: Cow::Borrowed(pool),
                });
            } else {
                unused_pools.push((path, pool));
            }
        }

        let mut seen_bindings: Vec<(usize, &BindingConfig)> = Vec::new();
        for (i, binding) in self.bindings.iter().enumerate() {
            let path = format!("binding[{i}]");
            check_binding(&path, binding)?;
            if let Some((j, _)) = seen_bindings.iter().find(|(_, other)| {
                other.port == binding.port
                    && other.ip_address == binding.ip_address
                    && control::normalize_hostname(other.hostname.as_deref())
                        == control::normalize_hostname(binding.hostname.as_deref())
            }) {
                return Err(ConfigError::new(
                    path,
                    format!("same port, hostname and address as binding[{j}]"),
                ));
            }
            seen_bindings.push((i, binding));
        }

        Ok(Checked {
            pools,
            unused_pools,
            aliases,
            directory_aliases,
        })
    }
}

fn check_pool(path: &str, pool: &PoolConfig) -> Result<(), ConfigError> {
    let name = pool.name.as_str();
    require_non_blank(|| format!("{path}.name"), name)?;
    if name.chars().count() > MAX_POOL_NAME_LEN {
        return Err(ConfigError::new(
            format!("{path}.name"),
            format!("{name:?} is longer than {MAX_POOL_NAME_LEN} characters"),
        ));
    }
    if let Some(length) = pool.queue_length {
        let (min, max) = QUEUE_LENGTH_RANGE;
        if !(min..=max).contains(&length) {
            return Err(ConfigError::new(
                format!("{path}.queue_length"),
                format!("expected an integer between {min} and {max}, got {length}"),
            ));
        }
    }
    for (field, value) in [
        ("start_time_limit", pool.start_time_limit),
        ("shutdown_time_limit", pool.shutdown_time_limit),
    ] {
        if value == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                format!("{path}.{field}"),
                "must be greater than zero",
            ));
        }
    }
    Ok(())
}

fn check_binding(path: &str, binding: &BindingConfig) -> Result<(), ConfigError> {
    if let Some(host) = &binding.hostname
        && !valid_hostname(host)
    {
        return Err(ConfigError::new(
            format!("{path}.hostname"),
            format!("{host:?} is not a valid host name"),
        ));
    }
    if let PortRef::Static(port) = binding.port
        && binding.hostname.is_none()
    {
        return Err(ConfigError::new(
            format!("{path}.port"),
            format!(
                "static port {port} needs a hostname; without one, use a port label from the \
                 task group's network block"
            ),
        ));
    }
    if binding.require_sni == Some(true) && binding.hostname.is_none() {
        return Err(ConfigError::new(
            format!("{path}.require_sni"),
            "needs a hostname",
        ));
    }
    match (binding.kind, &binding.certificate) {
        (BindingKind::Http, Some(_)) => Err(ConfigError::new(
            format!("{path}.certificate"),
            "only https bindings take a certificate",
        )),
        (BindingKind::Http, None) => Ok(()),
        (BindingKind::Https, None) => Err(ConfigError::new(
            format!("{path}.certificate"),
            format!("an https binding needs a certificate block ({CERTIFICATE_SOURCES})"),
        )),
        (BindingKind::Https, Some(certificate)) => {
            check_certificate(&format!("{path}.certificate"), certificate)
        }
    }
}

/// The usable certificate sources that are set, by name.
fn certificate_sources(certificate: &CertificateConfig) -> Vec<&'static str> {
    let mut sources = Vec::new();
    if is_set(&certificate.pfx_file) {
        sources.push("pfx_file");
    }
    if is_set(&certificate.cert_file) || is_set(&certificate.key_file) {
        sources.push("cert_file + key_file");
    }
    if certificate.use_self_signed {
        sources.push("use_self_signed");
    }
    sources
}

fn check_certificate(path: &str, certificate: &CertificateConfig) -> Result<(), ConfigError> {
    if is_set(&certificate.cert_file) && !is_set(&certificate.key_file) {
        return Err(ConfigError::new(
            format!("{path}.key_file"),
            "required together with cert_file",
        ));
    }
    if is_set(&certificate.key_file) && !is_set(&certificate.cert_file) {
        return Err(ConfigError::new(
            format!("{path}.cert_file"),
            "required together with key_file",
        ));
    }
    let sources = certificate_sources(certificate);
    match sources.len() {
        0 if is_set(&certificate.thumbprint) => Err(ConfigError::new(
            format!("{path}.thumbprint"),
            format!("there is no Windows certificate store on Linux; use {CERTIFICATE_SOURCES}"),
        )),
        0 => Err(missing_certificate_source(path)),
        1 => Ok(()),
        _ => {
            let (list, verb) = match sources.as_slice() {
                [a, b] => (format!("{a} and {b}"), "are both set"),
                _ => (sources.join(", "), "are all set"),
            };
            Err(ConfigError::new(
                path,
                format!("{list} {verb}; set exactly one certificate source"),
            ))
        }
    }
}

/// The error of a certificate block without a usable source.
pub(crate) fn missing_certificate_source(path: &str) -> ConfigError {
    ConfigError::new(path, format!("set one of {CERTIFICATE_SOURCES}"))
}

fn check_target_website(site: &str, driver: &DriverConfig) -> Result<(), ConfigError> {
    if site.starts_with(NAME_PREFIX) {
        return Err(ConfigError::new(
            "target_website",
            format!("{site:?} is a site managed by nomad and cannot be reused"),
        ));
    }
    let allowed = &driver.allowed_target_websites;
    if allowed.is_empty() {
        return Err(ConfigError::new(
            "target_website",
            "target websites are not allowed on this node (allowed_target_websites is empty)",
        ));
    }
    if !allows(allowed, site) {
        return Err(ConfigError::new(
            "target_website",
            format!(
                "website {site:?} is not allowed on this node ({})",
                allowed_list(allowed, "")
            ),
        ));
    }
    Ok(())
}

fn check_identity(pool: &UsedPool<'_>, driver: &DriverConfig) -> Result<(), ConfigError> {
    let config = &pool.config;
    let field = |name: &str| match &pool.path {
        Some(path) => format!("{path}.{name}"),
        None => "application_pool".to_owned(),
    };
    let allowed = &driver.allowed_apppool_identities;
    if !allowed.contains(&config.identity) {
        let subject = match &pool.path {
            Some(_) => format!("identity {:?}", config.identity.as_str()),
            None => format!(
                "identity {:?} of the implied default pool",
                config.identity.as_str()
            ),
        };
        let names: Vec<&str> = allowed.iter().map(|i| i.as_str()).collect();
        return Err(ConfigError::new(
            field("identity"),
            format!(
                "{subject} is not allowed on this node ({})",
                allowed_list(&names, "no identities are allowed")
            ),
        ));
    }
    if config.identity == Identity::SpecificUser {
        let Some(user) = non_blank(&config.username) else {
            return Err(ConfigError::new(
                field("username"),
                "required when identity is SpecificUser",
            ));
        };
        let users = &driver.allowed_apppool_users;
        if !allows(users, user) {
            return Err(ConfigError::new(
                field("username"),
                format!(
                    "user {user:?} is not allowed on this node ({})",
                    allowed_list(users, "no users are allowed")
                ),
            ));
        }
    }
    Ok(())
}

/// The `process` block (this project's extension): a command, arguments and variables that
/// can be handed to `execve`.
fn check_process(path: &str, process: &ProcessConfig) -> Result<(), ConfigError> {
    require_non_blank(|| format!("{path}.command"), &process.command)?;
    if process.command.contains('\0') {
        return Err(ConfigError::new(
            format!("{path}.command"),
            "must not contain a NUL character",
        ));
    }
    if let Some(i) = process.args.iter().position(|a| a.contains('\0')) {
        return Err(ConfigError::new(
            format!("{path}.args[{i}]"),
            "must not contain a NUL character",
        ));
    }
    for (name, value) in &process.env {
        let field = || format!("{path}.env[{name:?}]");
        if let Some(problem) = env_name_problem(name) {
            return Err(ConfigError::new(
                field(),
                format!("{name:?} is not a valid variable name: {problem}"),
            ));
        }
        if value.contains('\0') {
            return Err(ConfigError::new(
                field(),
                "the value must not contain a NUL character",
            ));
        }
    }
    Ok(())
}

/// Why `name` cannot be an environment variable name, if it cannot: the kernel only forbids
/// `=` and NUL, but a name with blanks or control characters is a typo no shell can read.
fn env_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('=') {
        Some("'=' is not allowed")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("blanks and control characters are not allowed")
    } else {
        None
    }
}

fn extension_notices(path: &str, count: usize, notices: &mut Vec<Notice>) {
    for k in 0..count {
        notices.push(Notice::new(format!("{path}.extension[{k}]"), NO_EFFECT));
    }
}

fn pool_notices(path: &str, pool: &PoolConfig, notices: &mut Vec<Notice>) {
    if pool.identity != Identity::ApplicationPoolIdentity {
        notices.push(Notice::new(
            format!("{path}.identity"),
            format!("{NO_EFFECT}: workers run as the host's user"),
        ));
    }
    for (field, set) in [
        ("username", pool.username.is_some()),
        ("password", pool.password.is_some()),
        (
            "managed_pipeline_mode",
            pool.managed_pipeline_mode.is_some(),
        ),
        (
            "managed_runtime_version",
            pool.managed_runtime_version.is_some(),
        ),
        (
            "enable_32bit_app_on_win64",
            pool.enable_32bit_app_on_win64.is_some(),
        ),
    ] {
        if set {
            notices.push(Notice::new(format!("{path}.{field}"), NO_EFFECT));
        }
    }
    extension_notices(path, pool.extensions.len(), notices);
}

fn binding_notices(path: &str, binding: &BindingConfig, notices: &mut Vec<Notice>) {
    if binding.kind == BindingKind::Http && binding.require_sni.is_some() {
        notices.push(Notice::new(
            format!("{path}.require_sni"),
            "has no effect on http bindings",
        ));
    }
    let Some(certificate) = &binding.certificate else {
        return;
    };
    let sources = certificate_sources(certificate);
    if is_set(&certificate.thumbprint)
        && let Some(source) = sources.first()
    {
        notices.push(Notice::new(
            format!("{path}.certificate.thumbprint"),
            format!("{NO_EFFECT}; {source} is used"),
        ));
    }
    if is_set(&certificate.password) && !is_set(&certificate.pfx_file) {
        notices.push(Notice::new(
            format!("{path}.certificate.password"),
            "has no effect without pfx_file",
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::task::{ApplicationConfig, Extension, VirtualDirectoryConfig};

    fn task() -> TaskConfig {
        TaskConfig {
            applications: vec![ApplicationConfig::at("local")],
            bindings: vec![http("web")],
            ..TaskConfig::default()
        }
    }

    fn with_apps(applications: Vec<ApplicationConfig>) -> TaskConfig {
        TaskConfig {
            applications,
            ..task()
        }
    }

    fn with_pools(application_pools: Vec<PoolConfig>) -> TaskConfig {
        TaskConfig {
            application_pools,
            ..task()
        }
    }

    fn with_bindings(bindings: Vec<BindingConfig>) -> TaskConfig {
        TaskConfig { bindings, ..task() }
    }

    fn http(label: &str) -> BindingConfig {
        BindingConfig {
            kind: BindingKind::Http,
            port: PortRef::Label(label.into()),
            hostname: None,
            require_sni: None,
            ip_address: None,
            certificate: None,
        }
    }

    fn https(certificate: CertificateConfig) -> BindingConfig {
        BindingConfig {
            kind: BindingKind::Https,
            certificate: Some(certificate),
            ..http("secure")
        }
    }

    fn app(alias: &str, pool: &str) -> ApplicationConfig {
        ApplicationConfig {
            alias: alias.into(),
            application_pool: pool.into(),
            ..ApplicationConfig::at("local")
        }
    }

    /// Asserts that `config` fails validation on a default node with exactly `expected`.
    fn rejects(config: &TaskConfig, expected: &str) {
        check_err(config, &DriverConfig::default(), expected);
    }

    /// Asserts that `config` fails validation with exactly `expected`.
    fn check_err(config: &TaskConfig, driver: &DriverConfig, expected: &str) {
        match config.validate(driver) {
            Err(err) => assert_eq!(err.to_string(), expected),
            Ok(notices) => panic!("expected error {expected:?}, got notices {notices:?}"),
        }
    }

    fn notices(config: &TaskConfig) -> Vec<String> {
        match config.validate(&DriverConfig::default()) {
            Ok(notices) => notices.iter().map(ToString::to_string).collect(),
            Err(err) => panic!("expected success, got {err}"),
        }
    }

    #[test]
    fn a_minimal_task_is_valid_without_notices() {
        assert_eq!(notices(&task()), Vec::<String>::new());
    }

    #[test]
    fn normalizes_aliases() {
        assert_eq!(normalize_alias("").as_deref(), Ok("/"));
        assert_eq!(normalize_alias("/").as_deref(), Ok("/"));
        assert_eq!(normalize_alias("api").as_deref(), Ok("/api"));
        assert_eq!(normalize_alias("/api/").as_deref(), Ok("/api"));
        assert_eq!(normalize_alias("//a//b/").as_deref(), Ok("/a/b"));
        assert_eq!(
            normalize_alias("/a/../b"),
            Err(
                "\"/a/../b\" is not a valid alias: \".\" and \"..\" segments are not allowed"
                    .into()
            )
        );
        assert_eq!(
            normalize_alias("a?b"),
            Err("\"a?b\" is not a valid alias: '?' is not allowed".into())
        );
    }

    #[test]
    fn needs_an_application() {
        let config = with_apps(vec![]);
        rejects(
            &config,
            "application: at least one application block is required",
        );
    }

    #[test]
    fn application_paths_must_not_be_empty() {
        let config = with_apps(vec![ApplicationConfig::at(" ")]);
        rejects(&config, "application[0].path: must not be empty");
    }

    #[test]
    fn aliases_are_unique_after_normalisation_ignoring_case() {
        let config = with_apps(vec![
            app("/", "default"),
            app("/api", "default"),
            app("API/", "default"),
        ]);
        rejects(&config, "application[2].alias: duplicate alias \"/API\"");
        let root_twice = with_apps(vec![app("", "default"), app("/", "default")]);
        rejects(&root_twice, "application[1].alias: duplicate alias \"/\"");
    }

    #[test]
    fn aliases_must_be_valid() {
        let config = with_apps(vec![app("/a/./b", "default")]);
        rejects(
            &config,
            "application[0].alias: \"/a/./b\" is not a valid alias: \".\" and \"..\" segments are not allowed",
        );
    }

    #[test]
    fn pool_names_are_unique_short_and_non_empty() {
        rejects(
            &with_pools(vec![PoolConfig::named("api"), PoolConfig::named("API")]),
            "application_pool[1].name: duplicate pool name \"API\" (also used by application_pool[0])",
        );
        rejects(
            &with_pools(vec![PoolConfig::named("toolongnm")]),
            "application_pool[0].name: \"toolongnm\" is longer than 8 characters",
        );
        rejects(
            &with_pools(vec![PoolConfig::named("")]),
            "application_pool[0].name: must not be empty",
        );
        rejects(
            &with_pools(vec![PoolConfig::named("a b"), PoolConfig::named("a_b")]),
            "application_pool[1].name: pool names \"a b\" (application_pool[0]) and \"a_b\" become the same full name",
        );
    }

    #[test]
    fn legacy_and_new_pool_blocks_share_names() {
        let config = TaskConfig {
            legacy_application_pools: vec![PoolConfig::named("default")],
            application_pools: vec![PoolConfig::named("default")],
            ..task()
        };
        rejects(
            &config,
            "application_pool[0].name: duplicate pool name \"default\" (also used by applicationPool[0])",
        );
    }

    #[test]
    fn applications_must_name_a_defined_pool() {
        let config = with_apps(vec![app("/", "default"), app("/api", "api")]);
        rejects(
            &config,
            "application[1].application_pool: no application_pool block is named \"api\"",
        );
        let empty = with_apps(vec![app("/", "")]);
        rejects(&empty, "application[0].application_pool: must not be empty");
    }

    #[test]
    fn unused_pools_are_dropped_with_a_notice() {
        let config = with_pools(vec![PoolConfig::named("spare")]);
        assert_eq!(
            notices(&config),
            vec![
                "application_pool[0]: pool \"spare\" is not used by any application and is not created"
            ]
        );
        let checked = config.structure().expect("valid");
        let names: Vec<&str> = checked
            .pools
            .iter()
            .map(|p| p.config.name.as_str())
            .collect();
        assert_eq!(names, vec!["default"]);
    }

    #[test]
    fn queue_length_and_time_limits_are_checked() {
        let mut pool = PoolConfig::named("default");
        pool.queue_length = Some(5);
        let config = with_pools(vec![pool.clone()]);
        rejects(
            &config,
            "application_pool[0].queue_length: expected an integer between 10 and 65535, got 5",
        );
        pool.queue_length = None;
        pool.start_time_limit = Some(Duration::ZERO);
        let config = with_pools(vec![pool]);
        rejects(
            &config,
            "application_pool[0].start_time_limit: must be greater than zero",
        );
    }

    #[test]
    fn identities_must_be_allowed() {
        let mut pool = PoolConfig::named("default");
        pool.identity = Identity::LocalSystem;
        let config = with_pools(vec![pool]);
        rejects(
            &config,
            "application_pool[0].identity: identity \"LocalSystem\" is not allowed on this node (allowed: ApplicationPoolIdentity)",
        );
        let none_allowed = DriverConfig {
            allowed_apppool_identities: vec![],
            ..DriverConfig::default()
        };
        check_err(
            &task(),
            &none_allowed,
            "application_pool: identity \"ApplicationPoolIdentity\" of the implied default pool is not allowed on this node (no identities are allowed)",
        );
        let allowing = DriverConfig {
            allowed_apppool_identities: vec![Identity::LocalSystem],
            ..DriverConfig::default()
        };
        assert_eq!(
            config
                .validate(&allowing)
                .expect("allowed")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![
                "application_pool[0].identity: has no effect on Linux: workers run as the host's user"
            ]
        );
    }

    #[test]
    fn specific_users_need_an_allowed_username() {
        let driver = DriverConfig {
            allowed_apppool_identities: vec![Identity::SpecificUser],
            allowed_apppool_users: vec!["svc-web".into()],
            ..DriverConfig::default()
        };
        let with_user = |user: Option<&str>| {
            let mut pool = PoolConfig::named("default");
            pool.identity = Identity::SpecificUser;
            pool.username = user.map(str::to_owned);
            with_pools(vec![pool])
        };
        check_err(
            &with_user(None),
            &driver,
            "application_pool[0].username: required when identity is SpecificUser",
        );
        check_err(
            &with_user(Some("root")),
            &driver,
            "application_pool[0].username: user \"root\" is not allowed on this node (allowed: svc-web)",
        );
        check_err(
            &with_user(Some("svc-web")),
            &DriverConfig {
                allowed_apppool_users: vec![],
                ..driver.clone()
            },
            "application_pool[0].username: user \"svc-web\" is not allowed on this node (no users are allowed)",
        );
        assert!(with_user(Some("SVC-WEB")).validate(&driver).is_ok());
        let any = DriverConfig {
            allowed_apppool_users: vec!["*".into()],
            ..driver
        };
        assert!(with_user(Some("anyone")).validate(&any).is_ok());
    }

    #[test]
    fn target_websites_must_be_allowed_and_have_no_effect() {
        let config = TaskConfig {
            target_website: Some("Default Web Site".into()),
            ..task()
        };
        rejects(
            &config,
            "target_website: target websites are not allowed on this node (allowed_target_websites is empty)",
        );
        let other = DriverConfig {
            allowed_target_websites: vec!["Intranet".into()],
            ..DriverConfig::default()
        };
        check_err(
            &config,
            &other,
            "target_website: website \"Default Web Site\" is not allowed on this node (allowed: Intranet)",
        );
        let any = DriverConfig {
            allowed_target_websites: vec!["*".into()],
            ..DriverConfig::default()
        };
        assert_eq!(
            config.validate(&any).expect("allowed")[0].to_string(),
            "target_website: has no effect on Linux: the task is served by its own site"
        );
        let nomad_site = TaskConfig {
            target_website: Some("nomad-abc-web".into()),
            ..task()
        };
        check_err(
            &nomad_site,
            &any,
            "target_website: \"nomad-abc-web\" is a site managed by nomad and cannot be reused",
        );
    }

    #[test]
    fn static_ports_need_a_hostname() {
        let config = with_bindings(vec![BindingConfig {
            port: PortRef::Static(8080),
            ..http("web")
        }]);
        rejects(
            &config,
            "binding[0].port: static port 8080 needs a hostname; without one, use a port label from the task group's network block",
        );
        let named = with_bindings(vec![BindingConfig {
            port: PortRef::Static(8080),
            hostname: Some("shop.example.com".into()),
            ..http("web")
        }]);
        assert!(named.validate(&DriverConfig::default()).is_ok());
    }

    #[test]
    fn hostnames_and_sni_are_checked() {
        let with = |hostname: Option<&str>, require_sni: Option<bool>| {
            with_bindings(vec![BindingConfig {
                hostname: hostname.map(str::to_owned),
                require_sni,
                ..https(CertificateConfig {
                    use_self_signed: true,
                    ..CertificateConfig::default()
                })
            }])
        };
        rejects(
            &with(Some("bad host"), None),
            "binding[0].hostname: \"bad host\" is not a valid host name",
        );
        rejects(
            &with(None, Some(true)),
            "binding[0].require_sni: needs a hostname",
        );
        assert!(
            with(Some("*.example.com"), Some(true))
                .validate(&DriverConfig::default())
                .is_ok()
        );
    }

    #[test]
    fn certificates_only_on_https_and_required_there() {
        let http_with_cert = with_bindings(vec![BindingConfig {
            certificate: Some(CertificateConfig {
                use_self_signed: true,
                ..CertificateConfig::default()
            }),
            ..http("web")
        }]);
        rejects(
            &http_with_cert,
            "binding[0].certificate: only https bindings take a certificate",
        );
        let https_without = with_bindings(vec![BindingConfig {
            kind: BindingKind::Https,
            ..http("web")
        }]);
        rejects(
            &https_without,
            "binding[0].certificate: an https binding needs a certificate block (pfx_file, cert_file + key_file or use_self_signed)",
        );
    }

    #[test]
    fn exactly_one_certificate_source() {
        let with = |certificate: CertificateConfig| with_bindings(vec![https(certificate)]);
        rejects(
            &with(CertificateConfig::default()),
            "binding[0].certificate: set one of pfx_file, cert_file + key_file or use_self_signed",
        );
        rejects(
            &with(CertificateConfig {
                pfx_file: Some("a.pfx".into()),
                use_self_signed: true,
                ..CertificateConfig::default()
            }),
            "binding[0].certificate: pfx_file and use_self_signed are both set; set exactly one certificate source",
        );
        rejects(
            &with(CertificateConfig {
                pfx_file: Some("a.pfx".into()),
                cert_file: Some("c.pem".into()),
                key_file: Some("k.pem".into()),
                use_self_signed: true,
                ..CertificateConfig::default()
            }),
            "binding[0].certificate: pfx_file, cert_file + key_file, use_self_signed are all set; set exactly one certificate source",
        );
        rejects(
            &with(CertificateConfig {
                cert_file: Some("c.pem".into()),
                ..CertificateConfig::default()
            }),
            "binding[0].certificate.key_file: required together with cert_file",
        );
        rejects(
            &with(CertificateConfig {
                key_file: Some("k.pem".into()),
                ..CertificateConfig::default()
            }),
            "binding[0].certificate.cert_file: required together with key_file",
        );
        rejects(
            &with(CertificateConfig {
                thumbprint: Some("005ce633".into()),
                ..CertificateConfig::default()
            }),
            "binding[0].certificate.thumbprint: there is no Windows certificate store on Linux; use pfx_file, cert_file + key_file or use_self_signed",
        );
        assert_eq!(
            notices(&with(CertificateConfig {
                thumbprint: Some("005ce633".into()),
                cert_file: Some("c.pem".into()),
                key_file: Some("k.pem".into()),
                password: Some("x".into()),
                ..CertificateConfig::default()
            })),
            vec![
                "binding[0].certificate.thumbprint: has no effect on Linux; cert_file + key_file is used",
                "binding[0].certificate.password: has no effect without pfx_file",
            ]
        );
    }

    #[test]
    fn duplicate_bindings_are_refused() {
        let config = with_bindings(vec![http("web"), http("api"), http("web")]);
        rejects(
            &config,
            "binding[2]: same port, hostname and address as binding[0]",
        );
    }

    #[test]
    fn virtual_directories_are_checked() {
        let with_dirs = |dirs: Vec<(&str, &str)>| {
            with_apps(vec![ApplicationConfig {
                virtual_directories: dirs
                    .into_iter()
                    .map(|(alias, path)| VirtualDirectoryConfig {
                        alias: alias.into(),
                        path: path.into(),
                        extensions: vec![],
                    })
                    .collect(),
                ..ApplicationConfig::at("local")
            }])
        };
        rejects(
            &with_dirs(vec![("/", "x")]),
            "application[0].virtual_directory[0].alias: must name a folder below the application, not \"/\"",
        );
        rejects(
            &with_dirs(vec![("img", "x"), ("/IMG/", "y")]),
            "application[0].virtual_directory[1].alias: duplicate alias \"/IMG\"",
        );
        rejects(
            &with_dirs(vec![("img", "")]),
            "application[0].virtual_directory[0].path: must not be empty",
        );
    }

    #[test]
    fn windows_only_options_produce_notices() {
        let extension = Extension {
            name: "autoStart".into(),
            value: "true".into(),
        };
        let mut pool = PoolConfig::named("default");
        pool.managed_pipeline_mode = Some(crate::task::ManagedPipelineMode::Integrated);
        pool.managed_runtime_version = Some(crate::task::ManagedRuntimeVersion::None);
        pool.enable_32bit_app_on_win64 = Some(true);
        pool.password = Some("secret".into());
        pool.extensions = vec![extension.clone()];
        let config = TaskConfig {
            permit_iusr: false,
            application_pools: vec![pool],
            applications: vec![ApplicationConfig {
                enable_preload: Some(true),
                service_auto_start_enabled: Some(true),
                service_auto_start_provider: Some("Warmup".into()),
                extensions: vec![extension.clone()],
                virtual_directories: vec![VirtualDirectoryConfig {
                    alias: "img".into(),
                    path: "images".into(),
                    extensions: vec![extension],
                }],
                ..ApplicationConfig::at("local")
            }],
            service_auto_start_providers: vec![crate::task::ServiceAutoStartProvider {
                name: "Warmup".into(),
                type_name: "A.B, C".into(),
            }],
            bindings: vec![BindingConfig {
                require_sni: Some(false),
                ..http("web")
            }],
            ..task()
        };
        assert_eq!(
            notices(&config),
            vec![
                "permit_iusr: has no effect on Linux",
                "application_pool[0].password: has no effect on Linux",
                "application_pool[0].managed_pipeline_mode: has no effect on Linux",
                "application_pool[0].managed_runtime_version: has no effect on Linux",
                "application_pool[0].enable_32bit_app_on_win64: has no effect on Linux",
                "application_pool[0].extension[0]: has no effect on Linux",
                "application[0].enable_preload: has no effect on Linux",
                "application[0].service_auto_start_enabled: has no effect on Linux",
                "application[0].service_auto_start_provider: has no effect on Linux",
                "application[0].extension[0]: has no effect on Linux",
                "application[0].virtual_directory[0].extension[0]: has no effect on Linux",
                "service_auto_start_provider[0]: has no effect on Linux",
                "binding[0].require_sni: has no effect on http bindings",
            ]
        );
    }

    #[test]
    fn process_blocks_are_checked() {
        let with = |process: ProcessConfig| {
            with_apps(vec![
                ApplicationConfig::at("local"),
                ApplicationConfig {
                    process: Some(process),
                    ..app("api", "default")
                },
            ])
        };
        let good = ProcessConfig {
            command: "./server".into(),
            args: vec!["--port".into(), "%PORT%".into()],
            env: [("ASPNETCORE_ENVIRONMENT".to_owned(), "Staging".to_owned())].into(),
        };
        assert_eq!(
            with(good.clone()).validate(&DriverConfig::default()),
            Ok(vec![])
        );
        rejects(
            &with(ProcessConfig {
                command: "  ".into(),
                ..good.clone()
            }),
            "application[1].process.command: must not be empty",
        );
        rejects(
            &with(ProcessConfig {
                args: vec!["ok".into(), "a\0b".into()],
                ..good.clone()
            }),
            "application[1].process.args[1]: must not contain a NUL character",
        );
        for (name, problem) in [
            ("", "it is empty"),
            ("A=B", "'=' is not allowed"),
            ("MY VAR", "blanks and control characters are not allowed"),
        ] {
            rejects(
                &with(ProcessConfig {
                    env: [(name.to_owned(), "x".to_owned())].into(),
                    ..good.clone()
                }),
                &format!(
                    "application[1].process.env[{name:?}]: {name:?} is not a valid variable name: {problem}"
                ),
            );
        }
        rejects(
            &with(ProcessConfig {
                env: [("OK".to_owned(), "a\0".to_owned())].into(),
                ..good
            }),
            "application[1].process.env[\"OK\"]: the value must not contain a NUL character",
        );
    }

    #[test]
    fn no_bindings_is_allowed_with_a_notice() {
        let config = with_bindings(vec![]);
        assert_eq!(
            notices(&config),
            vec!["binding: no binding block: the site accepts no connections"]
        );
    }
}
