//! The client-certificate part of the test PKI and [`MtlsServer`] are what
//! they claim, checked with the openssl crate directly (a plain
//! `SslConnector`, no backend involved).

use std::fs;
use std::pin::Pin;

use bits_testkit::pki::{TestPki, CLIENT_CN, PKCS12_PASSWORD};
use bits_testkit::tls::{ClientAuth, MaxTls, MtlsServer, PresentedCert, TlsServer};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_client_files_hold_what_they_claim() {
    let pki = TestPki::shared();
    let f = pki.client_files();
    let leaf = pki.client_leaf_cert();
    let inter = pki.client_intermediate_cert();
    // Combined: leaf, intermediate, PKCS#8 key.
    let combined = fs::read(&f.combined_pem).unwrap();
    let certs = X509::stack_from_pem(&combined).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0].to_der().unwrap(), leaf.to_der().unwrap());
    assert_eq!(certs[1].to_der().unwrap(), inter.to_der().unwrap());
    let text = String::from_utf8(combined.clone()).unwrap();
    assert!(text.contains("-----BEGIN PRIVATE KEY-----"));
    let key = PKey::private_key_from_pem(&combined).unwrap();
    assert!(leaf.public_key().unwrap().public_eq(&key));
    // Apart: no key in the certificate file; keys PKCS#8 and SEC1.
    let cert_only = fs::read_to_string(&f.cert_pem).unwrap();
    assert!(!cert_only.contains("PRIVATE KEY"));
    assert!(fs::read_to_string(&f.key_pem)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(fs::read_to_string(&f.key_sec1_pem)
        .unwrap()
        .starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(fs::read_to_string(&f.combined_sec1_pem)
        .unwrap()
        .contains("-----BEGIN EC PRIVATE KEY-----"));
    // PKCS#12 opens with its password only.
    let p12 = Pkcs12::from_der(&fs::read(&f.pkcs12).unwrap()).unwrap();
    assert!(p12.parse2("wrong").is_err());
    let parsed = p12.parse2(PKCS12_PASSWORD).unwrap();
    assert_eq!(parsed.cert.unwrap().to_der().unwrap(), leaf.to_der().unwrap());
    assert!(leaf.public_key().unwrap().public_eq(&parsed.pkey.unwrap()));
    assert_eq!(parsed.ca.unwrap().len(), 1);
    assert_eq!(f.pkcs12_password(), PKCS12_PASSWORD);
    // The unrelated leaf is someone else's.
    let unrelated = X509::from_pem(&fs::read(&f.unrelated_pem).unwrap()).unwrap();
    assert_eq!(
        unrelated.to_der().unwrap(),
        pki.unrelated_client_cert().to_der().unwrap()
    );
    assert_eq!(pki.client_root_cert().subject_name().to_der().unwrap(), {
        let root = X509::from_pem(&fs::read(&f.client_root_pem).unwrap()).unwrap();
        root.subject_name().to_der().unwrap()
    });
    #[cfg(unix)]
    {
        for private in [
            &f.combined_pem,
            &f.key_pem,
            &f.key_sec1_pem,
            &f.combined_sec1_pem,
            &f.pkcs12,
            &f.unrelated_pem,
        ] {
            assert_eq!(mode(private), 0o600, "{}", private.display());
        }
        assert_eq!(mode(&f.cert_pem), 0o644);
    }
}

/// A GET of `/file` over a plain OpenSSL client with `identity` (leaf,
/// chain, key) and at most `max`: the body, or the error's words.
async fn get(
    server: &MtlsServer,
    identity: Option<(&X509, &[X509], &PKey<openssl::pkey::Private>)>,
    max: SslVersion,
) -> Result<Vec<u8>, String> {
    let pki = TestPki::shared();
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut().add_cert(pki.root_cert().clone()).unwrap();
    b.set_max_proto_version(Some(max)).unwrap();
    if let Some((cert, chain, key)) = identity {
        b.set_certificate(cert).unwrap();
        for c in chain {
            b.add_extra_chain_cert(c.clone()).unwrap();
        }
        b.set_private_key(key).unwrap();
    }
    let ssl = b.build().configure().unwrap().into_ssl("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /file HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test]
async fn mtls_server_requires_verifies_and_records_client_certificates() {
    let pki = TestPki::shared();
    let leaf = pki.client_leaf_cert();
    let chain = [pki.client_intermediate_cert().clone()];
    let key = pki.client_leaf_key();
    for (max, server_max) in [
        (SslVersion::TLS1_3, MaxTls::Tls13),
        (SslVersion::TLS1_2, MaxTls::Tls12),
    ] {
        let server = MtlsServer::start(ClientAuth::Required, server_max);
        let body = get(&server, Some((leaf, &chain, key)), max).await.unwrap();
        assert!(body.ends_with(TlsServer::BODY), "{max:?}");
        assert_eq!(
            server.presented(),
            vec![Some(PresentedCert {
                cn: CLIENT_CN.to_owned(),
                sha1: pki.client_leaf_sha1()
            })]
        );
        // Without the intermediate the server cannot verify the leaf.
        assert!(
            get(&server, Some((leaf, &[], key)), max).await.is_err(),
            "{max:?}"
        );
        // Without a certificate: refused (TLS 1.2 in the handshake, 1.3 on the read).
        let e = get(&server, None, max).await.unwrap_err();
        let expected = if server_max == MaxTls::Tls13 {
            "certificate required"
        } else {
            "handshake failure"
        };
        assert!(e.contains(expected), "{max:?}: {e}");
        assert!(server
            .http()
            .wait_until(std::time::Duration::from_secs(5), |s| s.handshake_failures() == 2));
        assert_eq!(server.request_count(), 1);
        assert_eq!(server.requests()[0].header("host"), Some("localhost"));
    }
    // Optional: a client without a certificate is served.
    let server = MtlsServer::start(ClientAuth::Optional, MaxTls::Tls13);
    assert!(get(&server, None, SslVersion::TLS1_3)
        .await
        .unwrap()
        .ends_with(TlsServer::BODY));
    assert_eq!(server.presented(), vec![None]);
}
