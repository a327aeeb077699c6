//! Chains the shared test PKI does not have, checked at the handshake
//! through the transport's own connector against a real TLS server. The
//! cases every backend must pass (and the certificate builders) are
//! [`bits_testkit::suites::chains`] (one test per case, by
//! [`bits_testkit::chain_tests`]); here only what is OpenSSL's own: the
//! OpenSSL 3 partial-chain hole (`docs/spec/tls.md`, pitfall 4) around an expired
//! untrusted intermediate, and session resumption checked on the `SslStream`.

use std::net::SocketAddr;

use bits_testkit::backend::{chain_handshake, HandshakeFuture};
use bits_testkit::suites::chains::{self, issue, serve, CA, DATE};
use bits_transport_openssl::Openssl;

bits_testkit::chain_tests!(Openssl);

/// The backend's own handshake, naming the server `127.0.0.1`.
fn handshake(roots: Vec<Vec<u8>>, addr: SocketAddr, flags: u32) -> HandshakeFuture {
    chain_handshake::<Openssl>(roots, addr, flags)
}

#[tokio::test]
async fn ignoring_an_unknown_ca_does_not_ignore_an_expired_untrusted_intermediate() {
    let root = issue("untrusted root", None, true, (-10, 3650), None);
    let int = issue("expired intermediate", Some(&root), true, (-400, -30), None);
    let leaf = issue("leaf", Some(&int), false, (-1, 365), None);
    let addr = serve(&leaf, &[&int]).await;
    assert_eq!(handshake(vec![], addr, 0).await, Err(0x8007_2F0D));
    assert_eq!(handshake(vec![], addr, CA).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, CA | 0x12).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![], addr, CA | DATE).await, Ok(()));
    // Trusted root: OpenSSL reports the intermediate's date itself.
    assert_eq!(handshake(vec![root.der()], addr, 0).await, Err(0x8007_2F05));
    assert_eq!(handshake(vec![root.der()], addr, DATE).await, Ok(()));
}

#[tokio::test]
async fn tls_sessions_are_never_resumed() {
    chains::tls_sessions_are_never_resumed::<Openssl>(&|s| s.ssl().session_reused()).await;
}
