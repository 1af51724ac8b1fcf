//! Groups a [`HostSpec`]'s bindings into listeners, after [`HostSpec::check`] (the rules live in
//! `control`, shared with `config::resolve`; a violation is a start-up error with exit code 2
//! naming the field).

use std::net::SocketAddr;

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

/// A binding's host name as the router and SNI match it ([`control::normalize_hostname`]).
pub(crate) fn normalised_hostname(hostname: Option<&str>) -> Option<String> {
    control::normalize_hostname(hostname)
}

/// Checks the spec ([`HostSpec::check`]) and returns its listeners in order of first appearance.
pub(crate) fn plan(spec: &HostSpec) -> Result<Vec<ListenerPlan>, StartupError> {
    let invalid = |e: control::SpecError| StartupError::invalid(e.field, e.message);
    spec.check().map_err(invalid)?;
    Ok(spec
        .listeners()
        .map_err(invalid)?
        .into_iter()
        .map(|l| ListenerPlan {
            address: l.address,
            kind: l.kind,
            bindings: l.bindings,
        })
        .collect())
}

/// An alias as `/` or `/a/b` ([`control::normalize_alias`]); the spec was checked, so every
/// alias is valid.
pub(crate) fn normalised_alias(alias: &str) -> String {
    control::normalize_alias(alias).unwrap_or_else(|_| alias.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::{ApplicationSpec, BindingSpec, CertificateSource, PoolSpec};
    use std::net::IpAddr;
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
