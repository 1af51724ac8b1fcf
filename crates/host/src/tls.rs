//! TLS for https listeners: loading certificates, choosing one per handshake by SNI, and the
//! rustls server configuration (ring provider, ALPN `h2` then `http/1.1`).
//!
//! Certificate sources ([`CertificateSource`]):
//! - PEM files: a certificate chain (leaf first) and a private key in PKCS#1 or PKCS#8 (RSA) or
//!   SEC1 or PKCS#8 (ECDSA). Encrypted PEM keys are not supported.
//! - PFX/PKCS#12 with a password, read with `p12-keystore` (it reads the AES/PBKDF2 files that
//!   OpenSSL 3 writes by default); the first key with a matching certificate is used.
//! - Self-signed, generated at start: CN = the binding's host name or `localhost`, SANs
//!   `localhost`, `127.0.0.1` and the host name, valid for one year from a day ago. The key is
//!   ECDSA P-256: IIS (and the original driver) use RSA-2048, but rcgen can only generate RSA
//!   keys with the aws-lc-rs backend, and this project uses ring. Clients do not care.
//!
//! Certificate selection ([`SniResolver`]), per listener:
//! 1. a client that sends SNI gets the binding whose host name equals it (case-insensitively),
//!    else the binding with the wildcard `*.rest` for `label.rest`, else the binding without a
//!    host name, else the default;
//! 2. the default is the first binding without a host name that does not require SNI, else
//!    the first binding that does not require SNI; when every binding requires SNI there is no
//!    default, and a handshake without a matching name is refused.
//!
//! Certificates are not checked against host names: an operator may knowingly serve a
//! certificate without SANs (rustls' own `ResolvesServerCertUsingSni` would refuse it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use control::{BindingSpec, CertificateSource};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{StartupError, describe_io};
use crate::plan::{ListenerPlan, normalised_hostname};

/// Why a certificate could not be loaded. The host prefixes it with `binding[N].certificate`.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("cannot read {what} file {path}: {reason}")]
    Read {
        /// `certificate`, `key` or `pfx`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A PEM file did not hold what it should.
    #[error("{what} file {path}: {detail}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A PFX file could not be opened or holds no usable key.
    #[error("pfx file {path}: {detail}")]
    Pfx {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the key or the key does not belong to the certificate.
    #[error("{source_name}: {detail}")]
    Unusable {
        /// The file (or files) the key came from.
        source_name: String,
        /// rustls' reason.
        detail: String,
    },
    /// rcgen failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// The crypto provider every TLS object of the host uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads or generates one binding's certificate and key.
pub fn load_certificate(
    source: &CertificateSource,
    hostname: Option<&str>,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CertificateError> {
    let (chain, key, source_name) = match source {
        CertificateSource::PemFiles {
            cert_file,
            key_file,
        } => {
            let (chain, key) = read_pem_pair(cert_file, key_file)?;
            let name = format!(
                "key file {} with certificate file {}",
                key_file.display(),
                cert_file.display()
            );
            (chain, key, name)
        }
        CertificateSource::Pfx { pfx_file, password } => {
            let (chain, key) = read_pfx(pfx_file, password)?;
            (chain, key, format!("pfx file {}", pfx_file.display()))
        }
        CertificateSource::SelfSigned => {
            let (chain, key) = generate_self_signed(hostname)?;
            (chain, key, "self-signed certificate".to_string())
        }
    };
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| CertificateError::Unusable {
            source_name,
            detail: e.to_string(),
        })
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|e| CertificateError::Read {
        what,
        path: path.to_path_buf(),
        reason: describe_io(&e),
    })
}

type ChainAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pem_pair(cert_file: &Path, key_file: &Path) -> Result<ChainAndKey, CertificateError> {
    let cert_bytes = read_file("certificate", cert_file)?;
    let key_bytes = read_file("key", key_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Pem {
            what: "certificate",
            path: cert_file.to_path_buf(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::Pem {
            what: "certificate",
            path: cert_file.to_path_buf(),
            detail: "no PEM certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| CertificateError::Pem {
        what: "key",
        path: key_file.to_path_buf(),
        detail: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no unencrypted PEM private key (PKCS#1, PKCS#8 or SEC1) found".into()
            }
            other => other.to_string(),
        },
    })?;
    Ok((chain, key))
}

fn read_pfx(pfx_file: &Path, password: &str) -> Result<ChainAndKey, CertificateError> {
    let bytes = read_file("pfx", pfx_file)?;
    let pfx_error = |detail: String| CertificateError::Pfx {
        path: pfx_file.to_path_buf(),
        detail,
    };
    let store = p12_keystore::KeyStore::from_pkcs12(
        &bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|e| pfx_error(format!("cannot open it (wrong password?): {e}")))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| pfx_error("holds no private key with its certificate".into()))?;
    if chain.certs().is_empty() {
        return Err(pfx_error(
            "holds a private key without a certificate".into(),
        ));
    }
    let certs = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
    Ok((certs, key))
}

fn generate_self_signed(hostname: Option<&str>) -> Result<ChainAndKey, CertificateError> {
    let failed = |e: rcgen::Error| CertificateError::SelfSigned(e.to_string());
    let hostname = normalised_hostname(hostname);
    let common_name = hostname.clone().unwrap_or_else(|| "localhost".to_string());
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(name) = hostname.filter(|n| !names.contains(n)) {
        names.push(name);
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = subject;
    // Starting a day ago tolerates clients whose clocks run a little behind.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key_der))
}

/// Chooses a listener's certificate from the client's SNI name; see the module documentation.
#[derive(Debug, Default)]
pub struct SniResolver {
    /// Lowercase host name → certificate.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `rest` of a `*.rest` binding → certificate.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first binding without a host name: answers any SNI name nobody else claims.
    any_name: Option<Arc<CertifiedKey>>,
    /// The first binding without a host name that does not require SNI: the preferred default.
    hostless_default: Option<Arc<CertifiedKey>>,
    /// The first binding that does not require SNI: the default when no hostless one exists.
    first_default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Adds one binding's certificate, in spec order.
    pub fn add(&mut self, hostname: Option<&str>, require_sni: bool, key: Arc<CertifiedKey>) {
        let hostname = normalised_hostname(hostname);
        if !require_sni {
            if hostname.is_none() && self.hostless_default.is_none() {
                self.hostless_default = Some(key.clone());
            }
            if self.first_default.is_none() {
                self.first_default = Some(key.clone());
            }
        }
        match hostname {
            Some(name) => match name.strip_prefix("*.") {
                Some(rest) => {
                    self.wildcard.entry(rest.to_string()).or_insert(key);
                }
                None => {
                    self.exact.entry(name).or_insert(key);
                }
            },
            None => {
                if self.any_name.is_none() {
                    self.any_name = Some(key);
                }
            }
        }
    }

    fn default_key(&self) -> Option<&Arc<CertifiedKey>> {
        self.hostless_default
            .as_ref()
            .or(self.first_default.as_ref())
    }

    /// The certificate for a handshake, `None` to refuse it.
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default_key().cloned();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let wildcard = name
            .split_once('.')
            .and_then(|(_, rest)| self.wildcard.get(rest));
        wildcard
            .or(self.any_name.as_ref())
            .or(self.default_key())
            .cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name())
    }
}

/// Builds the rustls configuration of one https listener, loading every binding's certificate.
pub(crate) fn server_config(
    bindings: &[BindingSpec],
    listener: &ListenerPlan,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, StartupError> {
    let mut resolver = SniResolver::default();
    for &index in &listener.bindings {
        let binding = &bindings[index];
        let field = format!("binding[{index}].certificate");
        let source = binding
            .certificate
            .as_ref()
            .ok_or_else(|| StartupError::invalid(&field, "an https binding needs a certificate"))?;
        let key = load_certificate(source, binding.hostname.as_deref(), provider)
            .map_err(|e| StartupError::invalid(&field, e.to_string()))?;
        resolver.add(binding.hostname.as_deref(), binding.require_sni, key);
    }
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::other("tls configuration", e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        load_certificate(&CertificateSource::SelfSigned, Some(name), &provider()).unwrap()
    }

    fn is(chosen: Option<Arc<CertifiedKey>>, expected: &Arc<CertifiedKey>) -> bool {
        chosen.is_some_and(|c| Arc::ptr_eq(&c, expected))
    }

    #[test]
    fn exact_then_wildcard_then_hostless_then_default() {
        let a = key("a.test");
        let wild = key("*.w.test");
        let any = key("any");
        let mut resolver = SniResolver::default();
        resolver.add(Some("A.test"), false, a.clone());
        resolver.add(Some("*.w.test"), true, wild.clone());
        resolver.add(None, false, any.clone());
        assert!(is(resolver.choose(Some("a.TEST")), &a));
        assert!(is(resolver.choose(Some("x.w.test")), &wild));
        assert!(is(resolver.choose(Some("x.y.w.test")), &any));
        assert!(is(resolver.choose(Some("other")), &any));
        assert!(is(resolver.choose(None), &any));
    }

    #[test]
    fn first_binding_is_the_default_without_a_hostless_one() {
        let a = key("a.test");
        let b = key("b.test");
        let mut resolver = SniResolver::default();
        resolver.add(Some("a.test"), false, a.clone());
        resolver.add(Some("b.test"), false, b.clone());
        assert!(is(resolver.choose(None), &a));
        assert!(is(resolver.choose(Some("c.test")), &a));
    }

    #[test]
    fn every_binding_requiring_sni_means_no_default() {
        let mut resolver = SniResolver::default();
        let a = key("a.test");
        resolver.add(Some("a.test"), true, a.clone());
        resolver.add(Some("b.test"), true, key("b.test"));
        assert!(resolver.choose(None).is_none());
        assert!(resolver.choose(Some("c.test")).is_none());
        assert!(is(resolver.choose(Some("a.test")), &a));
    }

    #[test]
    fn a_binding_not_requiring_sni_is_default_even_after_one_that_does() {
        let mut resolver = SniResolver::default();
        resolver.add(Some("a.test"), true, key("a.test"));
        let b = key("b.test");
        resolver.add(Some("b.test"), false, b.clone());
        assert!(is(resolver.choose(None), &b));
    }

    #[test]
    fn missing_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "x").unwrap();
        let source = CertificateSource::PemFiles {
            cert_file: cert,
            key_file: dir.path().join("key.pem"),
        };
        let error = load_certificate(&source, None, &provider()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read key file {}: No such file or directory",
                dir.path().join("key.pem").display()
            )
        );
    }
}
