//! Chains the shared test PKI does not have, built here with OpenSSL (the
//! builders are public, for backend-specific cases), and the handshake
//! cases every backend must pass: untrusted intermediates under
//! `IGNORE_UNKNOWN_CA`, faults no flag covers (a bad signature, a CA that
//! is not a CA, a CA without keyCertSign), a leaf keyUsage without a TLS use,
//! a server that does not speak TLS, a reset mid-handshake.
//!
//! Each case takes a [`Handshake`]: the backend's own connector's handshake
//! against a real TLS server on 127.0.0.1, trusting only the given roots
//! (DER), under the given flags; `Ok(())` or the HRESULT
//! ([`backend::chain_handshake`](crate::backend::chain_handshake)).
//!
//! ```text
//! #[tokio::test]
//! async fn a_bad_signature_is_refused_under_every_ignore_flag() {
//!     chains::a_bad_signature_is_refused_under_every_ignore_flag(&backend::chain_handshake::<Openssl>).await;
//! }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bits_core::{ConnectionPolicy, SecurityFlags};
use bits_http::{TlsBackend, TlsConnect};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::backend::HandshakeFuture;

/// One day in seconds.
pub const DAY: i64 = 86_400;
/// `IGNORE_CERT_DATE_INVALID`.
pub const DATE: u32 = SecurityFlags::IGNORE_CERT_DATE_INVALID;
/// `IGNORE_UNKNOWN_CA`.
pub const CA: u32 = SecurityFlags::IGNORE_UNKNOWN_CA;

/// A backend's handshake: trusting only `roots` (DER certificates), connect
/// to `addr` as `127.0.0.1` under the certificate `flags`; `Ok(())` or the
/// failure's HRESULT.
pub type Handshake = dyn Fn(Vec<Vec<u8>>, SocketAddr, u32) -> HandshakeFuture;

/// A certificate and its private key.
#[derive(Debug)]
pub struct Cert {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

impl Cert {
    /// The certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap()
    }
}

/// A fresh P-256 key.
pub fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn ders(roots: &[&Cert]) -> Vec<Vec<u8>> {
    roots.iter().map(|c| c.der()).collect()
}

/// A certificate for `cn`, valid from `from` to `to` days from now, signed
/// by `issuer` (self-signed when `None`), or by `signer_key` when given
/// (a bad signature).
pub fn issue(
    cn: &str,
    issuer: Option<&Cert>,
    ca: bool,
    (from, to): (i64, i64),
    signer_key: Option<&PKey<Private>>,
) -> Cert {
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
    let key = key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now() + from * DAY).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now() + to * DAY).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        b.append_extension(
            SubjectAlternativeName::new()
                .ip("127.0.0.1")
                .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
    }
    let skid = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(skid).unwrap();
    if let Some(i) = issuer {
        let akid = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&i.cert), None))
            .unwrap();
        b.append_extension(akid).unwrap();
    }
    let signer = signer_key.unwrap_or_else(|| issuer.map_or(&key, |i| &i.key));
    b.sign(signer, MessageDigest::sha256()).unwrap();
    Cert { cert: b.build(), key }
}

/// A TLS server on 127.0.0.1 presenting `leaf` and `chain`, accepting
/// handshakes until dropped (the task dies with the test's runtime).
pub async fn serve(leaf: &Cert, chain: &[&Cert]) -> std::net::SocketAddr {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_private_key(&leaf.key).unwrap();
    b.set_certificate(&leaf.cert).unwrap();
    for c in chain {
        b.add_extra_chain_cert(c.cert.clone()).unwrap();
    }
    let acceptor = b.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let ssl = Ssl::new(acceptor.context()).unwrap();
            tokio::spawn(async move {
                let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                let _ = Pin::new(&mut s).accept().await;
            });
        }
    });
    addr
}

/// A TCP server on 127.0.0.1 that reads the ClientHello, then either
/// answers plain text or resets the connection.
pub async fn not_tls(reset: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf).await;
            if reset {
                let _ = tcp.set_zero_linger();
            } else {
                let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
            drop(tcp);
        }
    });
    addr
}

/// A leaf for 127.0.0.1 whose keyUsage is keyCertSign only.
pub fn leaf_with_cert_sign_usage_only(issuer: &Cert) -> Cert {
    let key = key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "ku leaf").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(99).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now() - DAY).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now() + 365 * DAY).unwrap())
        .unwrap();
    b.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
        .unwrap();
    b.append_extension(
        SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&issuer.cert), None))
            .unwrap(),
    )
    .unwrap();
    b.sign(&issuer.key, MessageDigest::sha256()).unwrap();
    Cert { cert: b.build(), key }
}

/// `IGNORE_UNKNOWN_CA` does not ignore a not-yet-valid untrusted intermediate;
/// with `IGNORE_CERT_DATE_INVALID` too it passes.
pub async fn ignoring_an_unknown_ca_does_not_ignore_a_not_yet_valid_untrusted_intermediate(
    handshake: &Handshake,
) {
    let root = issue("untrusted root", None, true, (-10, 3650), None);
    let int = issue("future intermediate", Some(&root), true, (30, 400), None);
    let leaf = issue("leaf", Some(&int), false, (-1, 365), None);
    let addr = serve(&leaf, &[&int]).await;
    assert_eq!(handshake(vec![], addr, CA).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, CA | DATE).await, Ok(()));
}

/// A valid untrusted chain (with or without its root sent) passes under
/// `IGNORE_UNKNOWN_CA` only; its revocation cannot be checked.
pub async fn a_valid_untrusted_chain_passes_with_ignore_unknown_ca_only(handshake: &Handshake) {
    let root = issue("untrusted root", None, true, (-10, 3650), None);
    let int = issue("intermediate", Some(&root), true, (-10, 400), None);
    let leaf = issue("leaf", Some(&int), false, (-1, 365), None);
    let addr = serve(&leaf, &[&int]).await;
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2F0D));
    assert_eq!(handshake(vec![], addr, CA).await, Ok(()));
    assert_eq!(handshake(ders(&[&root]), addr, 0).await, Ok(()));
    // The untrusted root sent too.
    let addr = serve(&leaf, &[&int, &root]).await;
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2F0D));
    assert_eq!(handshake(vec![], addr, CA).await, Ok(()));
    // Revocation of an untrusted chain cannot be checked.
    assert_eq!(handshake(vec![], addr, CA | 0x1).await, Err(0x8007_2F19));
}

/// A bad leaf signature is refused under every ignore flag, its claimed
/// issuer trusted or only sent.
pub async fn a_bad_signature_is_refused_under_every_ignore_flag(handshake: &Handshake) {
    let root = issue("root", None, true, (-10, 3650), None);
    let forger = key();
    let leaf = issue("forged leaf", Some(&root), false, (-1, 365), Some(&forger));
    let addr = serve(&leaf, &[]).await;
    assert_eq!(handshake(ders(&[&root]), addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(handshake(ders(&[&root]), addr, 0x1E).await, Err(0x8007_2F8F));
    // Its claimed issuer untrusted but sent: still not a path.
    let addr = serve(&leaf, &[&root]).await;
    assert_eq!(handshake(vec![], addr, 0x1E).await, Err(0x8007_2F8F));
}

/// A leaf whose issuer is absent passes under `IGNORE_UNKNOWN_CA`, its own
/// dates still checked.
pub async fn a_leaf_whose_issuer_is_absent_gets_every_check_it_can_under_ignore_unknown_ca(
    handshake: &Handshake,
) {
    let rogue = issue("rogue", None, true, (-10, 3650), None);
    let leaf = issue("leaf", Some(&rogue), false, (-1, 365), None);
    let addr = serve(&leaf, &[]).await;
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2F0D));
    assert_eq!(handshake(vec![], addr, CA).await, Ok(()));
    let expired = issue("expired leaf", Some(&rogue), false, (-400, -30), None);
    let addr = serve(&expired, &[]).await;
    assert_eq!(handshake(vec![], addr, CA).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, CA | DATE).await, Ok(()));
}

/// A leaf issued by a certificate that is not a CA is refused under every
/// ignore flag.
pub async fn a_leaf_issued_by_a_non_ca_is_refused_under_every_ignore_flag(handshake: &Handshake) {
    let root = issue("root", None, true, (-10, 3650), None);
    let not_a_ca = issue("not a CA", Some(&root), false, (-1, 365), None);
    let leaf = issue("leaf", Some(&not_a_ca), false, (-1, 365), None);
    let addr = serve(&leaf, &[&not_a_ca]).await;
    assert_eq!(handshake(ders(&[&root]), addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(handshake(ders(&[&root]), addr, 0x1E).await, Err(0x8007_2F8F));
}

/// A server answering plain text to the ClientHello is a secure failure
/// under any flags.
pub async fn a_server_that_does_not_speak_tls_is_a_secure_failure(handshake: &Handshake) {
    let addr = not_tls(false).await;
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(handshake(vec![], addr, 0x1F).await, Err(0x8007_2F8F));
}

/// A reset during the handshake is `ERROR_INTERNET_CONNECTION_RESET`.
pub async fn a_reset_during_the_handshake_is_a_transient_connection_reset(handshake: &Handshake) {
    let addr = not_tls(true).await;
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2EFE));
}

/// A leaf keyUsage of keyCertSign only is a usage fault, covered by
/// `IGNORE_CERT_WRONG_USAGE` (0x10) alone.
pub async fn a_leaf_key_usage_without_tls_use_is_a_usage_fault(handshake: &Handshake) {
    let root = issue("root", None, true, (-10, 3650), None);
    let leaf = leaf_with_cert_sign_usage_only(&root);
    let addr = serve(&leaf, &[]).await;
    assert_eq!(handshake(ders(&[&root]), addr, 0).await, Err(0x8007_2F93));
    assert_eq!(handshake(ders(&[&root]), addr, 0x0E).await, Err(0x8007_2F93));
    assert_eq!(handshake(ders(&[&root]), addr, 0x10).await, Ok(()));
}

/// A CA intermediate whose keyUsage lacks keyCertSign is refused under
/// every ignore flag, its root trusted or not.
pub async fn an_intermediate_without_cert_sign_usage_is_refused_under_every_flag(handshake: &Handshake) {
    let root = issue("root", None, true, (-10, 3650), None);
    // Marked CA but its keyUsage allows only digitalSignature.
    let key = key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "no certsign").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(98).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(root.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now() - DAY).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now() + 365 * DAY).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(KeyUsage::new().critical().digital_signature().build().unwrap())
        .unwrap();
    let skid = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(skid).unwrap();
    b.sign(&root.key, MessageDigest::sha256()).unwrap();
    let int = Cert { cert: b.build(), key };
    let leaf = issue("leaf", Some(&int), false, (-1, 365), None);
    let addr = serve(&leaf, &[&int]).await;
    assert_eq!(handshake(ders(&[&root]), addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(handshake(ders(&[&root]), addr, 0x1E).await, Err(0x8007_2F8F));
    assert_eq!(handshake(vec![], addr, 0x1E).await, Err(0x8007_2F8F));
}

/// TLS sessions are never resumed: four handshakes with one server through
/// the backend's connector, relaxed flags first, each reading what the
/// server sends after the handshake (TLS 1.3 session tickets, so a client
/// that kept them would have them); `resumed` is the backend's own view of
/// its stream and must say `false` each time.
pub async fn tls_sessions_are_never_resumed<B: TlsBackend>(
    resumed: &dyn Fn(&<B::Connector as TlsConnect>::Stream) -> bool,
) {
    let root = issue("root", None, true, (-10, 3650), None);
    let leaf = issue("leaf", Some(&root), false, (-1, 365), None);
    let addr = serve(&leaf, &[]).await;
    let t = crate::backend::with_roots::<B>(&[root.der()]);
    for flags in [0x1E, 0x08, 0x00, 0x00] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let policy = ConnectionPolicy::new(SecurityFlags::new(flags).unwrap());
        let mut stream = t.http().tls().connect("127.0.0.1", tcp, &policy).await.unwrap();
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
        assert!(!resumed(&stream), "a session was resumed under 0x{flags:02X}");
    }
}
