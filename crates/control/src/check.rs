//! The one set of rules a [`HostSpec`] must satisfy. The host runs [`HostSpec::check`] when it
//! loads its spec (a violation ends it with exit code 2), and `config::resolve` runs it as its
//! post-condition, so a job that passes validation cannot fail these rules inside a started host.
//!
//! Rules, each violation naming the spec field:
//! - pool names are unique; every application names an existing pool;
//! - aliases are valid ([`normalize_alias`]) and unique after normalisation, ASCII
//!   case-insensitively (as the router compares them); a virtual directory lies below its
//!   application and is unique within it;
//! - an https binding has a certificate;
//! - bindings on one `ip:port` share a listener, so they are all http or all https, and no two of
//!   them answer the same host name ([`normalize_hostname`]: `A.com.` is `a.com`);
//! - a wildcard address (`0.0.0.0`, `::`) and a specific address of the same family cannot both
//!   listen on one port (the kernel refuses the second bind).
//!
//! Port 0 asks the kernel for a free port once per ip, so port-0 bindings on one ip share a
//! listener too.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::spec::{BindingKind, HostSpec};

/// A spec that breaks a rule: the field (`binding[1].hostname`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Field path in the spec (`application[0].alias`, `binding[2]`).
    pub field: String,
    /// Lowercase description.
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Normalises an alias to `/` or `/a/b`: surrounding and repeated slashes are dropped; `.` and
/// `..` segments, `\`, `?`, `#`, `%` and control characters are refused.
pub fn normalize_alias(raw: &str) -> Result<String, String> {
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        if segment.is_empty() {
            continue;
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "{raw:?} is not a valid alias: \".\" and \"..\" segments are not allowed"
            ));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| matches!(c, '\\' | '?' | '#' | '%') || c.is_control())
        {
            return Err(format!(
                "{raw:?} is not a valid alias: {c:?} is not allowed"
            ));
        }
        segments.push(segment);
    }
    Ok(format!("/{}", segments.join("/")))
}

/// The key two aliases are compared by: normalised (an invalid alias keeps its raw form, which
/// [`HostSpec::check`] refuses anyway) and ASCII-lowercased, as the router compares segments.
pub fn alias_key(alias: &str) -> String {
    normalize_alias(alias)
        .unwrap_or_else(|_| alias.to_owned())
        .to_ascii_lowercase()
}

/// A binding's host name as it is compared and matched: trimmed, without the trailing dot of a
/// fully qualified name, ASCII-lowercased; `None` (any host) when empty.
pub fn normalize_hostname(hostname: Option<&str>) -> Option<String> {
    let name = hostname?.trim().trim_end_matches('.');
    if name.is_empty() {
        None
    } else {
        Some(name.to_ascii_lowercase())
    }
}

/// One listener of a spec: an address and the bindings (indices) it serves, in spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Address to bind (port 0 = any free port).
    pub address: SocketAddr,
    /// Whether connections start with a TLS handshake.
    pub kind: BindingKind,
    /// Indices into [`HostSpec::bindings`].
    pub bindings: Vec<usize>,
}

impl HostSpec {
    /// Checks every rule of the module documentation; the first violation is the error.
    pub fn check(&self) -> Result<(), SpecError> {
        self.check_pools_and_applications()?;
        self.listeners().map(|_| ())
    }

    /// The listeners the bindings make, in order of first appearance, after checking the binding
    /// rules (certificates, http/https mixing, wildcard overlaps, unique host names).
    pub fn listeners(&self) -> Result<Vec<Listener>, SpecError> {
        let mut listeners: Vec<Listener> = Vec::new();
        for (index, binding) in self.bindings.iter().enumerate() {
            if binding.kind == BindingKind::Https && binding.certificate.is_none() {
                return Err(SpecError::new(
                    format!("binding[{index}].certificate"),
                    "an https binding needs a certificate",
                ));
            }
            let address = SocketAddr::new(binding.ip_address, binding.port);
            if let Some(listener) = listeners.iter_mut().find(|l| l.address == address) {
                if listener.kind != binding.kind {
                    return Err(SpecError::new(
                        format!("binding[{index}]"),
                        format!(
                            "{} on {address} clashes with binding[{}] ({}): one address cannot \
                             serve both http and https",
                            kind_name(binding.kind),
                            listener.bindings[0],
                            kind_name(listener.kind)
                        ),
                    ));
                }
                listener.bindings.push(index);
                continue;
            }
            if let Some(clash) = listeners
                .iter()
                .find(|l| address.port() != 0 && overlaps(l.address, address))
            {
                return Err(SpecError::new(
                    format!("binding[{index}]"),
                    format!(
                        "{address} overlaps {} of binding[{}]: a wildcard and a specific address \
                         cannot listen on the same port",
                        clash.address, clash.bindings[0]
                    ),
                ));
            }
            listeners.push(Listener {
                address,
                kind: binding.kind,
                bindings: vec![index],
            });
        }
        for listener in &listeners {
            self.check_unique_hostnames(listener)?;
        }
        Ok(listeners)
    }

    fn check_unique_hostnames(&self, listener: &Listener) -> Result<(), SpecError> {
        let mut seen: Vec<(Option<String>, usize)> = Vec::new();
        for &index in &listener.bindings {
            let name = normalize_hostname(self.bindings[index].hostname.as_deref());
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                let shown = name.as_deref().unwrap_or("any host");
                return Err(SpecError::new(
                    format!("binding[{index}].hostname"),
                    format!(
                        "binding[{first}] already answers for {shown} on {}",
                        listener.address
                    ),
                ));
            }
            seen.push((name, index));
        }
        Ok(())
    }

    fn check_pools_and_applications(&self) -> Result<(), SpecError> {
        let mut pool_names = HashSet::new();
        for (index, pool) in self.pools.iter().enumerate() {
            if !pool_names.insert(pool.name.as_str()) {
                return Err(SpecError::new(
                    format!("pool[{index}].name"),
                    format!("duplicate pool name {:?}", pool.name),
                ));
            }
        }
        let mut aliases = HashSet::new();
        for (index, app) in self.applications.iter().enumerate() {
            let field = format!("application[{index}]");
            if !pool_names.contains(app.pool.as_str()) {
                return Err(SpecError::new(
                    format!("{field}.pool"),
                    format!("unknown pool {:?}", app.pool),
                ));
            }
            normalize_alias(&app.alias).map_err(|m| SpecError::new(format!("{field}.alias"), m))?;
            if !aliases.insert(alias_key(&app.alias)) {
                return Err(SpecError::new(
                    format!("{field}.alias"),
                    format!("duplicate alias {:?}", app.alias),
                ));
            }
            let mut directory_aliases = HashSet::new();
            for (vdir_index, vdir) in app.virtual_directories.iter().enumerate() {
                let vdir_field = format!("{field}.virtual_directory[{vdir_index}].alias");
                let alias = normalize_alias(&vdir.alias)
                    .map_err(|m| SpecError::new(vdir_field.clone(), m))?;
                if alias == "/" {
                    return Err(SpecError::new(
                        vdir_field,
                        "a virtual directory needs an alias below its application",
                    ));
                }
                if !directory_aliases.insert(alias.to_ascii_lowercase()) {
                    return Err(SpecError::new(
                        vdir_field,
                        format!("duplicate alias {:?}", vdir.alias),
                    ));
                }
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::{binding, minimal_spec, pool};
    use crate::spec::{ApplicationSpec, VirtualDirectorySpec};

    fn spec_with(bindings: Vec<crate::BindingSpec>) -> HostSpec {
        HostSpec {
            bindings,
            ..minimal_spec()
        }
    }

    fn error(spec: &HostSpec) -> String {
        spec.check().unwrap_err().to_string()
    }

    #[test]
    fn bindings_on_one_address_share_a_listener() {
        let spec = spec_with(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some("a.example")),
            binding(BindingKind::Http, [127, 0, 0, 1], 9090, None),
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some("b.example")),
        ]);
        spec.check().unwrap();
        let listeners = spec.listeners().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0].bindings, vec![0, 2]);
        assert_eq!(listeners[1].bindings, vec![1]);
    }

    #[test]
    fn the_same_host_name_with_a_trailing_dot_or_other_case_is_a_duplicate() {
        for (first, second) in [("a.com", "a.com."), ("A.com", "a.COM"), ("a.com.", "a.com")] {
            let spec = spec_with(vec![
                binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some(first)),
                binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some(second)),
            ]);
            assert_eq!(
                error(&spec),
                "binding[1].hostname: binding[0] already answers for a.com on 0.0.0.0:8080"
            );
        }
        let any_twice = spec_with(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, None),
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some(" ")),
        ]);
        assert_eq!(
            error(&any_twice),
            "binding[1].hostname: binding[0] already answers for any host on 0.0.0.0:8080"
        );
        // On another port the same name is fine.
        let other_port = spec_with(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some("a.com")),
            binding(BindingKind::Http, [0, 0, 0, 0], 8081, Some("a.com.")),
        ]);
        other_port.check().unwrap();
    }

    #[test]
    fn listener_rules_name_the_bindings() {
        let mixed = spec_with(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, Some("a")),
            binding(BindingKind::Https, [0, 0, 0, 0], 8080, Some("b")),
        ]);
        assert_eq!(
            error(&mixed),
            "binding[1]: https on 0.0.0.0:8080 clashes with binding[0] (http): one address \
             cannot serve both http and https"
        );
        let overlap = spec_with(vec![
            binding(BindingKind::Http, [0, 0, 0, 0], 8080, None),
            binding(BindingKind::Http, [127, 0, 0, 1], 8080, None),
        ]);
        assert!(
            error(&overlap).starts_with("binding[1]: 127.0.0.1:8080 overlaps 0.0.0.0:8080"),
            "{}",
            error(&overlap)
        );
        let mut no_cert = binding(BindingKind::Https, [0, 0, 0, 0], 8443, None);
        no_cert.certificate = None;
        assert_eq!(
            error(&spec_with(vec![no_cert])),
            "binding[0].certificate: an https binding needs a certificate"
        );
    }

    #[test]
    fn aliases_and_pools_are_checked_as_the_router_compares_them() {
        let app = |alias: &str, pool: &str| ApplicationSpec {
            alias: alias.into(),
            path: "/srv".into(),
            pool: pool.into(),
            virtual_directories: Vec::new(),
            process: None,
        };
        let mut spec = minimal_spec();
        spec.applications = vec![app("/Api", "default"), app("api//", "default")];
        assert_eq!(
            error(&spec),
            "application[1].alias: duplicate alias \"api//\""
        );
        spec.applications = vec![app("/a/../b", "default")];
        assert!(error(&spec).starts_with("application[0].alias: \"/a/../b\" is not a valid alias"));
        spec.applications = vec![app("/", "other")];
        assert_eq!(error(&spec), "application[0].pool: unknown pool \"other\"");
        spec.pools.push(pool("default"));
        spec.applications = vec![app("/", "default")];
        assert_eq!(
            error(&spec),
            "pool[1].name: duplicate pool name \"default\""
        );
        spec.pools.pop();
        let mut with_dirs = app("/", "default");
        with_dirs.virtual_directories = vec![
            VirtualDirectorySpec {
                alias: "/img".into(),
                path: "/srv/img".into(),
            },
            VirtualDirectorySpec {
                alias: "IMG/".into(),
                path: "/srv/img2".into(),
            },
        ];
        spec.applications = vec![with_dirs];
        assert_eq!(
            error(&spec),
            "application[0].virtual_directory[1].alias: duplicate alias \"IMG/\""
        );
    }

    #[test]
    fn aliases_and_host_names_normalise() {
        assert_eq!(normalize_alias("").unwrap(), "/");
        assert_eq!(normalize_alias("//a//b/").unwrap(), "/a/b");
        assert!(normalize_alias("/a%2f").is_err());
        assert_eq!(alias_key("/API/"), "/api");
        assert_eq!(
            normalize_hostname(Some(" Shop.Example.COM. ")).as_deref(),
            Some("shop.example.com")
        );
        assert_eq!(normalize_hostname(Some(".")), None);
        assert_eq!(normalize_hostname(None), None);
    }
}
