//! Checks a [`HostSpec`] before anything is opened or bound, and groups its bindings into
//! listeners.
//!
//! Rules (each violation is a start-up error with exit code 2 naming the fields):
//! - bindings sharing an `ip:port` share one listener; port 0 asks the kernel for a free port,
//!   once per ip, so all port-0 bindings on one ip share that listener too;
//! - one listener is either http or https: mixing both on one `ip:port` is an error naming both
//!   bindings;
//! - a wildcard address (`0.0.0.0`, `::`) and a specific address of the same family cannot both
//!   listen on one port (the kernel refuses the second bind), so that is an error too;
//! - two bindings of one listener may not answer the same host name;
//! - an https binding needs a certificate;
//! - pool names are unique; every application names an existing pool; aliases are unique
//!   (ASCII case-insensitively, as the router compares them).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use control::{BindingKind, HostSpec};

use crate::error::StartupError;

/// One listener to bind and the bindings it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerPlan {
    /// Address to bind (port 0 = any free port).
    pub address: SocketAddr,
    /// Whether connections start with a TLS handshake.
    pub kind: BindingKind,
    /// Indices into [`HostSpec::bindings`], in spec order.
    pub bindings: Vec<usize>,
}

impl ListenerPlan {
    /// `binding[0], binding[2]`: how errors name the bindings of this listener.
    pub fn binding_names(&self) -> String {
        self.bindings
            .iter()
            .map(|i| format!("binding[{i}]"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A binding's host name, normalised: lowercase, no trailing dot, `None` when empty.
pub(crate) fn normalised_hostname(hostname: Option<&str>) -> Option<String> {
    let name = hostname?.trim().trim_end_matches('.');
    if name.is_empty() {
        None
    } else {
        Some(name.to_ascii_lowercase())
    }
}

/// Validates the spec and returns its listeners in order of first appearance.
pub(crate) fn plan(spec: &HostSpec) -> Result<Vec<ListenerPlan>, StartupError> {
    check_pools_and_applications(spec)?;
    let mut plans: Vec<ListenerPlan> = Vec::new();
    for (index, binding) in spec.bindings.iter().enumerate() {
        if binding.kind == BindingKind::Https && binding.certificate.is_none() {
            return Err(StartupError::invalid(
                format!("binding[{index}].certificate"),
                "an https binding needs a certificate",
            ));
        }
        let address = SocketAddr::new(binding.ip_address, binding.port);
        match plans.iter_mut().find(|p| p.address == address) {
            Some(plan) => {
                if plan.kind != binding.kind {
                    let other = plan.bindings[0];
                    return Err(StartupError::invalid(
                        format!("binding[{index}]"),
                        format!(
                            "{} on {address} clashes with binding[{other}] ({}): one address \
                             cannot serve both http and https",
                            kind_name(binding.kind),
                            kind_name(plan.kind)
                        ),
                    ));
                }
                plan.bindings.push(index);
            }
            None => {
                if let Some(clash) = plans
                    .iter()
                    .find(|p| address.port() != 0 && overlaps(p.address, address))
                {
                    return Err(StartupError::invalid(
                        format!("binding[{index}]"),
                        format!(
                            "{address} overlaps {} of binding[{}]: a wildcard and a specific \
                             address cannot listen on the same port",
                            clash.address, clash.bindings[0]
                        ),
                    ));
                }
                plans.push(ListenerPlan {
                    address,
                    kind: binding.kind,
                    bindings: vec![index],
                });
            }
        }
    }
    for plan in &plans {
        check_unique_hostnames(spec, plan)?;
    }
    Ok(plans)
}

fn kind_name(kind: BindingKind) -> &'static str {
    match kind {
        BindingKind::Http => "http",
        BindingKind::Https => "https",
    }
}

/// Two different addresses on one port that the kernel would not let both listen.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.ip() == b.ip() {
        return false;
    }
    let same_family = matches!(
        (a.ip(), b.ip()),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
    );
    same_family && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_unique_hostnames(spec: &HostSpec, plan: &ListenerPlan) -> Result<(), StartupError> {
    let mut seen: Vec<(Option<String>, usize)> = Vec::new();
    for &index in &plan.bindings {
        let name = normalised_hostname(spec.bindings[index].hostname.as_deref());
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            let shown = name.as_deref().unwrap_or("any host");
            return Err(StartupError::invalid(
                format!("binding[{index}].hostname"),
                format!(
                    "binding[{first}] already answers for {shown} on {}",
                    plan.address
                ),
            ));
        }
        seen.push((name, index));
    }
    Ok(())
}

fn check_pools_and_applications(spec: &HostSpec) -> Result<(), StartupError> {
    let mut pool_names = HashSet::new();
    for (index, pool) in spec.pools.iter().enumerate() {
        if !pool_names.insert(pool.name.as_str()) {
            return Err(StartupError::invalid(
                format!("pool[{index}].name"),
                format!("duplicate pool name \"{}\"", pool.name),
            ));
        }
    }
    let mut aliases = HashSet::new();
    for (index, app) in spec.applications.iter().enumerate() {
        if !pool_names.contains(app.pool.as_str()) {
            return Err(StartupError::invalid(
                format!("application[{index}].pool"),
                format!("unknown pool \"{}\"", app.pool),
            ));
        }
        if !aliases.insert(normalised_alias(&app.alias).to_ascii_lowercase()) {
            return Err(StartupError::invalid(
                format!("application[{index}].alias"),
                format!("duplicate alias \"{}\"", app.alias),
            ));
        }
        let mut directory_aliases = HashSet::new();
        for (vdir_index, vdir) in app.virtual_directories.iter().enumerate() {
            let alias = normalised_alias(&vdir.alias);
            if alias == "/" {
                return Err(StartupError::invalid(
                    format!("application[{index}].virtual_directory[{vdir_index}].alias"),
                    "a virtual directory needs an alias below its application",
                ));
            }
            if !directory_aliases.insert(alias.to_ascii_lowercase()) {
                return Err(StartupError::invalid(
                    format!("application[{index}].virtual_directory[{vdir_index}].alias"),
                    format!("duplicate alias \"{}\"", vdir.alias),
                ));
            }
        }
    }
    Ok(())
}

/// An alias as `/` or `/a/b`: one leading slash, no trailing or repeated slashes. The spec is
/// meant to hold normalised aliases already; normalising again keeps the router honest if not.
pub(crate) fn normalised_alias(alias: &str) -> String {
    let segments: Vec<&str> = alias.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::{ApplicationSpec, BindingSpec, CertificateSource, PoolSpec};
    use std::path::PathBuf;
    use std::time::Duration;

    fn binding(kind: BindingKind, ip: [u8; 4], port: u16, hostname: Option<&str>) -> BindingSpec {
        BindingSpec {
            kind,
            ip_address: IpAddr::from(ip),
            port,
            hostname: hostname.map(str::to_string),
            require_sni: false,
            certificate: (kind == BindingKind::Https).then_some(CertificateSource::SelfSigned),
        }
    }

    fn pool(name: &str) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            full_name: format!("nomad-a-t-{name}"),
            start_mode: control::StartMode::OnDemand,
            idle_timeout: Duration::ZERO,
            periodic_restart: Duration::ZERO,
            start_time_limit: Duration::from_secs(90),
            shutdown_time_limit: Duration::from_secs(90),
            disable_overlapped_recycle: false,
            service_unavailable_response: control::UnavailableResponse::HttpLevel,
            queue_length: 1000,
            identity: None,
        }
    }

    fn spec(bindings: Vec<BindingSpec>) -> HostSpec {
        HostSpec {
            alloc_id: "a".into(),
            task_name: "t".into(),
            site_name: "nomad-a-t".into(),
            runtime_dir: PathBuf::from("/tmp/x"),
            task_dir: PathBuf::from("/tmp/t"),
            stdout_path: PathBuf::from("/dev/null"),
            stderr_path: PathBuf::from("/dev/null"),
            env: Default::default(),
            bindings,
            pools: vec![pool("default")],
            applications: vec![ApplicationSpec {
                alias: "/".into(),
                path: PathBuf::from("/tmp/t/app"),
                pool: "default".into(),
                virtual_directories: vec![],
                process: None,
            }],
            placeholder_app_path: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn bindings_on_one_address_share_a_listener() {
        let plans = plan(&spec(vec![
            binding(BindingKind::Https, [0, 0, 0, 0], 443, Some("a")),
            binding(BindingKind::Http, [0, 0, 0, 0], 80, None),
            binding(BindingKind::Https, [0, 0, 0, 0], 443, Some("b")),
        ]))
        .unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].bindings, vec![0, 2]);
        assert_eq!(plans[0].binding_names(), "binding[0], binding[2]");
        assert_eq!(plans[1].bindings, vec![1]);
    }

    #[test]
    fn mixing_http_and_https_on_one_address_names_both_bindings() {
        let error = plan(&spec(vec![
            binding(BindingKind::Http, [127, 0, 0, 1], 8080, Some("a")),
            binding(BindingKind::Https, [127, 0, 0, 1], 8080, Some("b")),
        ]))
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("binding[1]: https on 127.0.0.1:8080"),
            "{text}"
        );
        assert!(text.contains("binding[0] (http)"), "{text}");
    }

    #[test]
    fn wildcard_and_specific_address_on_one_port_is_refused() {
        let error = plan(&spec(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, None),
            binding(BindingKind::Http, [127, 0, 0, 1], 8080, None),
        ]))
        .unwrap_err();
        assert!(
            error.to_string().contains("overlaps 0.0.0.0:8080"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_host_names_on_one_listener_are_refused() {
        let error = plan(&spec(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 80, Some("A.example")),
            binding(BindingKind::Http, [0, 0, 0, 0], 80, Some("a.example.")),
        ]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "binding[1].hostname: binding[0] already answers for a.example on 0.0.0.0:80"
        );
    }

    #[test]
    fn https_without_certificate_is_refused() {
        let mut https = binding(BindingKind::Https, [0, 0, 0, 0], 443, None);
        https.certificate = None;
        let error = plan(&spec(vec![https])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "binding[0].certificate: an https binding needs a certificate"
        );
    }

    #[test]
    fn applications_must_name_known_pools_and_unique_aliases() {
        let mut bad_pool = spec(vec![]);
        bad_pool.applications[0].pool = "api".into();
        assert_eq!(
            plan(&bad_pool).unwrap_err().to_string(),
            "application[0].pool: unknown pool \"api\""
        );
        let mut duplicate = spec(vec![]);
        let mut second = duplicate.applications[0].clone();
        second.alias = "//".into();
        duplicate.applications.push(second);
        assert_eq!(
            plan(&duplicate).unwrap_err().to_string(),
            "application[1].alias: duplicate alias \"//\""
        );
    }

    #[test]
    fn aliases_are_normalised() {
        assert_eq!(normalised_alias(""), "/");
        assert_eq!(normalised_alias("api/"), "/api");
        assert_eq!(normalised_alias("//a//b/"), "/a/b");
    }
}
