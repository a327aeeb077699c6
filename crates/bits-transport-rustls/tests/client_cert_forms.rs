//! Client certificate files in forms the shared suite does not cover
//! (`docs/spec/http-options.md`, "Client certificate"): what the rustls
//! backend loads beyond PKCS#8 and SEC1 keys, and what it refuses, when a
//! job sets them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bits_core::{ClientCertificateFile, Password};
use bits_http::TlsBackend;
use bits_testkit::pki::TestPki;
use bits_transport_rustls::Rustls;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use openssl::x509::{X509Name, X509};

/// A self-signed certificate for `key`.
fn self_signed(key: &PKey<Private>) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "bits rsa client").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    // EdDSA signs without a separate digest.
    let digest = match key.id() {
        Id::ED448 | Id::ED25519 => MessageDigest::null(),
        _ => MessageDigest::sha256(),
    };
    b.sign(key, digest).unwrap();
    b.build()
}

fn rsa() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

/// Writes `parts` to `dir/name`, mode 0600.
fn write(dir: &Path, name: &str, parts: &[&[u8]]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, parts.concat()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn file(path: &Path) -> ClientCertificateFile {
    ClientCertificateFile {
        path: path.to_owned(),
        key: None,
        password: None,
    }
}

fn code(file: &ClientCertificateFile) -> u32 {
    Rustls::load_client_certificate(file).unwrap_err().hresult().0
}

#[test]
fn a_pkcs1_rsa_key_loads_and_must_be_the_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa();
    let cert = self_signed(&key);
    let pkcs1 = key.rsa().unwrap().private_key_to_pem().unwrap();
    assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    let path = write(dir.path(), "rsa.pem", &[&cert.to_pem().unwrap(), &pkcs1]);
    let chosen = Rustls::load_client_certificate(&file(&path)).unwrap();
    assert_eq!(
        chosen.sha1,
        bits_http::client_cert::thumbprint(&cert.to_der().unwrap())
    );
    assert!(chosen.subject.contains("bits rsa client"), "{chosen:?}");

    let other = rsa().rsa().unwrap().private_key_to_pem().unwrap();
    let path = write(dir.path(), "other.pem", &[&cert.to_pem().unwrap(), &other]);
    assert_eq!(code(&file(&path)), 0x8009_2004);
}

#[test]
fn encrypted_keys_and_keys_ring_cannot_use_are_not_implemented() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa();
    let cert = self_signed(&key).to_pem().unwrap();
    let encrypted = key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
        .unwrap();
    let path = write(dir.path(), "enc.pem", &[&cert, &encrypted]);
    let mut with_password = file(&path);
    with_password.password = Some(Password::new("secret"));
    let e = Rustls::load_client_certificate(&with_password).unwrap_err();
    assert_eq!(e.hresult().0, 0x8000_4001);
    assert!(e.to_string().contains("openssl pkey"), "{e}");

    let traditional = key
        .rsa()
        .unwrap()
        .private_key_to_pem_passphrase(Cipher::aes_256_cbc(), b"secret")
        .unwrap();
    let path = write(dir.path(), "enc1.pem", &[&cert, &traditional]);
    assert_eq!(code(&file(&path)), 0x8000_4001);

    // Ed448: a key ring does not sign with.
    let ed448 = PKey::generate_ed448().unwrap();
    let cert448 = self_signed(&ed448).to_pem().unwrap();
    let path = write(
        dir.path(),
        "ed448.pem",
        &[&cert448, &ed448.private_key_to_pem_pkcs8().unwrap()],
    );
    let e = Rustls::load_client_certificate(&file(&path)).unwrap_err();
    assert_eq!(e.hresult().0, 0x8000_4001, "{e}");
}

#[test]
fn two_keys_or_no_certificate_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa();
    let cert = self_signed(&key).to_pem().unwrap();
    let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
    let path = write(dir.path(), "two.pem", &[&cert, &pkcs8, &pkcs8]);
    assert_eq!(code(&file(&path)), 0x8009_2004);
    let path = write(dir.path(), "nocert.pem", &[&pkcs8]);
    assert_eq!(code(&file(&path)), 0x8009_2004);
}

#[test]
fn pkcs12_is_not_implemented_and_says_how_to_convert() {
    let files = TestPki::shared().client_files();
    let p12 = ClientCertificateFile {
        path: files.pkcs12.clone(),
        key: None,
        password: Some(Password::new(files.pkcs12_password())),
    };
    let e = Rustls::load_client_certificate(&p12).unwrap_err();
    assert_eq!(e.hresult().0, 0x8000_4001);
    assert!(e.to_string().contains("openssl pkcs12"), "{e}");
}
