//! HTTPS over real sockets: PEM (RSA PKCS#1 and PKCS#8, ECDSA SEC1 and PKCS#8), PFX written by
//! OpenSSL 3, self-signed, ALPN, SNI with several certificates on one port, and require_sni.

mod common;

use common::*;
use control::{BindingSpec, CertificateSource};
use http::StatusCode;
use std::path::Path;

/// Starts a host with `bindings`, then GETs `/` over HTTP/1.1 and HTTP/2 with SNI `name`,
/// checking the server showed `expected_der`.
async fn check_serves(bindings: Vec<BindingSpec>, name: Option<&str>, expected_der: &[u8]) {
    let mut site = Site::new();
    site.spec.bindings = bindings;
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);

    let tls = tls_connect(addr, name, &[b"http/1.1"]).await.unwrap();
    assert_eq!(tls.certificate.as_ref(), expected_der);
    assert_eq!(tls.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (status, body) = send_h1(tls.stream, name.unwrap_or("localhost"), "/")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));

    let tls = tls_connect(addr, name, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.alpn.as_deref(), Some(&b"h2"[..]));
    let (status, body) = send_h2(tls.stream, name.unwrap_or("localhost"), "/")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));
}

fn pem(cert_file: &Path, key_file: &Path) -> CertificateSource {
    CertificateSource::PemFiles {
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
    }
}

#[tokio::test]
async fn pem_rsa_keys_in_pkcs8_and_pkcs1() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("rsa.crt");
    let pkcs8 = dir.path().join("rsa.key");
    let pkcs1 = dir.path().join("rsa1.key");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-keyout",
        pkcs8.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    openssl(&[
        "rsa",
        "-traditional",
        "-in",
        pkcs8.to_str().unwrap(),
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let der = pem_der(&cert);
    for key in [&pkcs8, &pkcs1] {
        let binding = https_binding(None, pem(&cert, key));
        check_serves(vec![binding], None, &der).await;
    }
}

#[tokio::test]
async fn pem_ecdsa_keys_in_pkcs8_and_sec1() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, pkcs8, der) = ecdsa_pem(dir.path(), "ec", "localhost");
    let sec1 = dir.path().join("ec1.key");
    openssl(&[
        "ec",
        "-in",
        pkcs8.to_str().unwrap(),
        "-out",
        sec1.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    for key in [&pkcs8, &sec1] {
        let binding = https_binding(Some("localhost"), pem(&cert, key));
        check_serves(vec![binding], Some("localhost"), &der).await;
    }
}

#[tokio::test]
async fn pfx_written_by_openssl_3() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = ecdsa_pem(dir.path(), "site", "localhost");
    let pfx = dir.path().join("site.pfx");
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        cert.to_str().unwrap(),
        "-inkey",
        key.to_str().unwrap(),
        "-out",
        pfx.to_str().unwrap(),
        "-passout",
        "pass:s3cret",
    ]);
    let binding = https_binding(
        None,
        CertificateSource::Pfx {
            pfx_file: pfx.clone(),
            password: "s3cret".into(),
        },
    );
    check_serves(vec![binding], None, &der).await;

    let mut site = Site::new();
    site.spec.bindings = vec![https_binding(
        None,
        CertificateSource::Pfx {
            pfx_file: pfx.clone(),
            password: "wrong".into(),
        },
    )];
    let record = host::run(site.spec, std::future::pending()).await;
    assert_eq!(record.code, 2);
    assert!(
        record.reason.starts_with(&format!(
            "binding[0].certificate: pfx file {}: cannot open it",
            pfx.display()
        )),
        "{}",
        record.reason
    );
}

#[tokio::test]
async fn a_key_that_does_not_match_its_certificate_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = ecdsa_pem(dir.path(), "one", "localhost");
    let (_, other_key, _) = ecdsa_pem(dir.path(), "two", "localhost");
    let mut site = Site::new();
    site.spec.bindings = vec![https_binding(None, pem(&cert, &other_key))];
    let record = host::run(site.spec, std::future::pending()).await;
    assert_eq!(record.code, 2);
    assert!(
        record
            .reason
            .starts_with("binding[0].certificate: key file"),
        "{}",
        record.reason
    );
}

#[tokio::test]
async fn self_signed_certificates_name_the_host() {
    let mut site = Site::new();
    site.spec.bindings = vec![https_binding(
        Some("shop.test"),
        CertificateSource::SelfSigned,
    )];
    let host = start(site.spec.clone()).await;
    let tls = tls_connect(host.addr(0), Some("shop.test"), &[b"h2"])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(tls.certificate.as_ref()).into_owned();
    // DER holds names as plain ASCII strings.
    for name in ["shop.test", "localhost"] {
        assert!(text.contains(name), "certificate lacks {name}");
    }
    let (status, body) = send_h2(tls.stream, "shop.test", "/").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));
}

#[tokio::test]
async fn sni_chooses_between_certificates_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key, a_der) = ecdsa_pem(dir.path(), "a", "a.test");
    let (b_cert, b_key, b_der) = ecdsa_pem(dir.path(), "b", "b.test");
    let (w_cert, w_key, w_der) = ecdsa_pem(dir.path(), "w", "*.w.test");
    let mut site = Site::new();
    site.spec.bindings = vec![
        https_binding(Some("a.test"), pem(&a_cert, &a_key)),
        https_binding(Some("b.test"), pem(&b_cert, &b_key)),
        https_binding(Some("*.w.test"), pem(&w_cert, &w_key)),
    ];
    let host = start(site.spec.clone()).await;
    assert_eq!(host.status.listening.len(), 1);
    let addr = host.addr(0);

    for (name, der) in [
        ("a.test", &a_der),
        ("B.TEST", &b_der),
        ("x.w.test", &w_der),
        ("unknown.test", &a_der),
    ] {
        let tls = tls_connect(addr, Some(name), &[b"h2"]).await.unwrap();
        assert_eq!(tls.certificate.as_ref(), der.as_slice(), "{name}");
    }
    let tls = tls_connect(addr, None, &[b"h2"]).await.unwrap();
    assert_eq!(
        tls.certificate.as_ref(),
        a_der.as_slice(),
        "no SNI: the first binding"
    );

    // The host header still decides routing after the handshake.
    let tls = tls_connect(addr, Some("b.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (status, _) = send_h1(tls.stream, "b.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let tls = tls_connect(addr, Some("b.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (status, _) = send_h1(tls.stream, "c.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn require_sni_refuses_handshakes_without_a_matching_name() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key, a_der) = ecdsa_pem(dir.path(), "a", "a.test");
    let mut site = Site::new();
    let mut binding = https_binding(Some("a.test"), pem(&a_cert, &a_key));
    binding.require_sni = true;
    site.spec.bindings = vec![binding];
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);

    assert!(
        tls_connect(addr, None, &[b"h2"]).await.is_err(),
        "no SNI accepted"
    );
    assert!(
        tls_connect(addr, Some("other.test"), &[b"h2"])
            .await
            .is_err(),
        "unknown SNI accepted"
    );
    let tls = tls_connect(addr, Some("a.test"), &[b"h2"]).await.unwrap();
    assert_eq!(tls.certificate.as_ref(), a_der.as_slice());
    let (status, _) = send_h2(tls.stream, "a.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
}
