//! Chains the shared test PKI does not have, checked at the handshake
//! through the transport's own connector against a real TLS server. The
//! cases every backend must pass (and the certificate builders) are
//! [`bits_testkit::suites::chains`] (one test per case, by
//! [`bits_testkit::chain_tests`]); here only what is rustls's own: webpki
//! meeting an untrusted intermediate's date before its missing issuer
//! (`docs/spec/tls.md`, pitfall 8), the date-window narrowing and its documented narrower case,
//! and session resumption checked on the rustls connection.

use std::net::SocketAddr;

use bits_testkit::backend::{chain_handshake, HandshakeFuture};
use bits_testkit::suites::chains::{self, issue, serve, CA, DATE};
use bits_transport_rustls::Rustls;

bits_testkit::chain_tests!(Rustls);

/// The backend's own handshake, naming the server `127.0.0.1`.
fn handshake(roots: Vec<Vec<u8>>, addr: SocketAddr, flags: u32) -> HandshakeFuture {
    chain_handshake::<Rustls>(roots, addr, flags)
}

#[tokio::test]
async fn ignoring_an_unknown_ca_does_not_ignore_an_expired_untrusted_intermediate() {
    let root = issue("untrusted root", None, true, (-10, 3650), None);
    // The leaf's and the intermediate's validity overlap 100..30 days ago.
    let int = issue("expired intermediate", Some(&root), true, (-400, -30), None);
    let leaf = issue("leaf", Some(&int), false, (-100, 365), None);
    let addr = serve(&leaf, &[&int]).await;
    // webpki meets the intermediate's date before the missing issuer.
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, DATE).await, Err(0x8007_2F0D));
    assert_eq!(handshake(vec![], addr, CA).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, CA | 0x12).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, CA | DATE).await, Ok(()));
    assert_eq!(handshake(vec![root.der()], addr, 0).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![root.der()], addr, DATE).await, Ok(()));
}

/// The documented narrower case (`docs/spec/tls.md` §4.2, appendix C): no instant
/// lies in both validities, so IGNORE_CERT_DATE_INVALID cannot be honoured
/// by a shifted time and the date error stands (OpenSSL accepts).
#[tokio::test]
async fn disjoint_validities_keep_the_date_error_narrower_than_openssl() {
    let root = issue("root", None, true, (-1000, 3650), None);
    let int = issue("long expired intermediate", Some(&root), true, (-400, -30), None);
    let leaf = issue("leaf", Some(&int), false, (-1, 365), None);
    let addr = serve(&leaf, &[&int]).await;
    assert_eq!(handshake(vec![root.der()], addr, 0).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![root.der()], addr, DATE).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![root.der()], addr, 0x1E).await, Err(0x8007_2F05));
}

#[tokio::test]
async fn tls_sessions_are_never_resumed() {
    chains::tls_sessions_are_never_resumed::<Rustls>(&|s| {
        s.get_ref().1.handshake_kind() != Some(rustls::HandshakeKind::Full)
    })
    .await;
}
