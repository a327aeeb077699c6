//! A connection verified under relaxed flags never serves a stricter
//! request (pools per flag value, no TLS session resumption).
//!
//! ```text
//! #[tokio::test]
//! async fn a_connection_made_under_ignore_unknown_ca_never_serves_strict_requests() {
//!     isolation::ignore_unknown_ca_never_serves_strict_requests(&backend::with_pki::<Openssl>).await;
//! }
//! ```
//!
//! `make` is called once per case with [`TestPki::shared`]; it must trust
//! that PKI's root only.

use bits_core::Transport;

use super::get_status as get;
use crate::pki::{LeafKind, TestPki};
use crate::tls::TlsServer;

/// A connection made under `IGNORE_UNKNOWN_CA` (0x8) never serves a strict
/// request; redirect bits share the certificate policy.
pub async fn ignore_unknown_ca_never_serves_strict_requests<T: Transport>(make: &dyn Fn(&TestPki) -> T) {
    let server = TlsServer::start(TestPki::shared().leaf(LeafKind::UnknownCa));
    let t = make(TestPki::shared());
    assert_eq!(get(&t, &server, 0x8).await, Ok(200));
    assert_eq!(get(&t, &server, 0x8).await, Ok(200));
    assert_eq!(get(&t, &server, 0).await, Err(0x8007_2F0D));
    assert_eq!(get(&t, &server, 0x4).await, Err(0x8007_2F0D));
    // Redirect bits share the certificate policy: same pool, still fine.
    assert_eq!(get(&t, &server, 0x208).await, Ok(200));
    assert_eq!(get(&t, &server, 0).await, Err(0x8007_2F0D));
    // Two strict requests reached no HTTP.
    assert_eq!(server.request_count(), 3);
}

/// A connection made under `IGNORE_CERT_CN_INVALID` (0x2) never serves a
/// strict request, and each strict attempt is a new handshake.
pub async fn ignore_cn_never_serves_strict_requests<T: Transport>(make: &dyn Fn(&TestPki) -> T) {
    let server = TlsServer::start(TestPki::shared().leaf(LeafKind::WrongHost));
    let t = make(TestPki::shared());
    assert_eq!(get(&t, &server, 0x2).await, Ok(200));
    assert_eq!(get(&t, &server, 0).await, Err(0x8007_2F06));
    assert_eq!(get(&t, &server, 0x1C).await, Err(0x8007_2F06));
    assert_eq!(get(&t, &server, 0x2).await, Ok(200));
    assert_eq!(server.request_count(), 2);
    // Each failed strict attempt was a new handshake, not a reused one.
    assert!(server.handshakes_failed() >= 2);
}
