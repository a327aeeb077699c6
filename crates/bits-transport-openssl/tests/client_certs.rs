//! Client certificates (`docs/spec/http-options.md`, "Client
//! certificate"): the cases every backend shares,
//! [`bits_testkit::suites::client_certs`] (one test per case, by
//! [`bits_testkit::client_cert_tests`]). OpenSSL loads every format.

bits_testkit::client_cert_tests!(bits_transport_openssl::Openssl);

// OpenSSL's own: encrypted PEM keys, PKCS#12 without a password or with
// 3DES, and the policy check.

use std::fs;
use std::path::{Path, PathBuf};

use bits_core::{ClientCertificateFile, Password};
use bits_http::TlsBackend;
use bits_testkit::pki::TestPki;
use bits_testkit::suites::client_certs::{get, pem_and_key, pkcs12, policy, INVALID_PASSWORD};
use bits_testkit::tls::{ClientAuth, MaxTls, MtlsServer};
use bits_transport_openssl::{check_policy, Openssl};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::stack::Stack;
use openssl::symm::Cipher;

/// A fresh directory for one test (removed first, left for inspection).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bits-openssl-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn with_password(mut file: ClientCertificateFile, password: Option<&str>) -> ClientCertificateFile {
    file.password = password.map(Password::new);
    file
}

#[tokio::test]
async fn an_encrypted_pem_key_opens_with_the_password_only() {
    let pki = TestPki::shared();
    let dir = scratch("encrypted-key");
    let key = dir.join("key.pem");
    let encrypted = pki
        .client_leaf_key()
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"open sesame")
        .unwrap();
    write_private(&key, &encrypted);
    let base = pem_and_key(&pki.client_files().cert_pem, &key);
    let chosen = Openssl::load_client_certificate(&with_password(base.clone(), Some("open sesame"))).unwrap();
    assert_eq!(chosen.sha1, pki.client_leaf_sha1());
    for wrong in [None, Some("wrong")] {
        let e = Openssl::load_client_certificate(&with_password(base.clone(), wrong)).unwrap_err();
        assert_eq!(e.hresult().0, INVALID_PASSWORD, "{wrong:?}: {e}");
    }
    let server = MtlsServer::start(ClientAuth::Required, MaxTls::Tls12);
    let t = bits_testkit::backend::with_pki::<Openssl>(pki);
    assert_eq!(
        get(&t, &server, policy(Some(chosen)))
            .await
            .map_err(|e| e.hresult().0),
        Ok(200)
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_pkcs12_without_its_password_is_invalid_password_and_3des_loads() {
    let pki = TestPki::shared();
    let f = pki.client_files();
    let mut no_password = pkcs12(&f.pkcs12, "x");
    no_password.password = None;
    let e = Openssl::load_client_certificate(&no_password).unwrap_err();
    assert_eq!(e.hresult().0, INVALID_PASSWORD, "{e}");
    // The pre-OpenSSL-3 default (3DES, SHA-1 MAC) still loads.
    let dir = scratch("p12-3des");
    let mut ca = Stack::new().unwrap();
    ca.push(pki.client_intermediate_cert().clone()).unwrap();
    let der = Pkcs12::builder()
        .name("old")
        .pkey(pki.client_leaf_key())
        .cert(pki.client_leaf_cert())
        .ca(ca)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1())
        .build2("old")
        .unwrap()
        .to_der()
        .unwrap();
    let path = dir.join("old.p12");
    write_private(&path, &der);
    let chosen = Openssl::load_client_certificate(&pkcs12(&path, "old")).unwrap();
    assert_eq!(chosen.sha1, pki.client_leaf_sha1());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_policy_check_accepts_a_client_certificate() {
    let chosen = Openssl::load_client_certificate(&bits_testkit::suites::client_certs::pem(
        &TestPki::shared().client_files().combined_pem,
    ))
    .unwrap();
    check_policy(&policy(Some(chosen))).unwrap();
}

/// An RSA client leaf issued by the client intermediate, valid a day.
fn rsa_client(pki: &TestPki) -> (openssl::x509::X509, openssl::rsa::Rsa<openssl::pkey::Private>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::pkey::PKey;
    use openssl::x509::extension::ExtendedKeyUsage;
    use openssl::x509::{X509Builder, X509Name};
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let key = PKey::from_rsa(rsa.clone()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "bits test rsa client").unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(77).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(pki.client_intermediate_cert().subject_name())
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    b.sign(pki.client_intermediate_key(), MessageDigest::sha256())
        .unwrap();
    (b.build(), rsa)
}

#[tokio::test]
async fn rsa_keys_in_pkcs1_plain_or_encrypted_load_and_connect() {
    let pki = TestPki::shared();
    let (leaf, rsa) = rsa_client(pki);
    let dir = scratch("rsa");
    let cert = dir.join("cert.pem");
    fs::write(
        &cert,
        [
            leaf.to_pem().unwrap(),
            pki.client_intermediate_cert().to_pem().unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let plain = dir.join("plain.pem");
    let pkcs1 = rsa.private_key_to_pem().unwrap();
    assert!(String::from_utf8_lossy(&pkcs1).starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    write_private(&plain, &pkcs1);
    let encrypted = dir.join("encrypted.pem");
    let locked = rsa
        .private_key_to_pem_passphrase(Cipher::aes_128_cbc(), b"rsa pass")
        .unwrap();
    assert!(String::from_utf8_lossy(&locked).contains("Proc-Type: 4,ENCRYPTED"));
    write_private(&encrypted, &locked);
    let t = bits_testkit::backend::with_pki::<Openssl>(pki);
    for max in [MaxTls::Tls13, MaxTls::Tls12] {
        let server = MtlsServer::start(ClientAuth::Required, max);
        for file in [
            pem_and_key(&cert, &plain),
            with_password(pem_and_key(&cert, &encrypted), Some("rsa pass")),
        ] {
            let chosen = Openssl::load_client_certificate(&file).unwrap();
            assert!(chosen.subject.contains("bits test rsa client"), "{chosen:?}");
            let got = get(&t, &server, policy(Some(chosen)))
                .await
                .map_err(|e| e.hresult().0);
            assert_eq!(got, Ok(200), "{max:?} {file:?}");
        }
        assert_eq!(server.presented().len(), 2);
        bits_testkit::backend::clear_pools::<Openssl>(&t);
    }
    let e = Openssl::load_client_certificate(&with_password(pem_and_key(&cert, &encrypted), Some("no")))
        .unwrap_err();
    assert_eq!(e.hresult().0, INVALID_PASSWORD);
    let _ = fs::remove_dir_all(&dir);
}
