//! The host check by DNS name as well as by IP, through a backend's own
//! connector over a TCP connection to 127.0.0.1 (no name resolution
//! involved), trusting [`TestPki::shared`]'s root.
//!
//! ```text
//! #[tokio::test]
//! async fn dns_names_and_ip_addresses_are_both_checked() {
//!     hostnames::dns_names_and_ip_addresses_are_both_checked(&backend::host_handshake::<Openssl>).await;
//! }
//! ```

use std::net::SocketAddr;

use crate::backend::HandshakeFuture;
use crate::pki::{LeafKind, TestPki};
use crate::tls::TlsServer;

const CN: u32 = 0x8007_2F06;
const DATE: u32 = 0x8007_2F05;

/// A backend's handshake: trusting only [`TestPki::shared`]'s root, connect
/// to `addr` naming the server `host` under the certificate `flags`;
/// `Ok(())` or the failure's HRESULT.
pub type HostHandshake = dyn Fn(SocketAddr, String, u32) -> HandshakeFuture;

/// Names and IP addresses are both checked against the leaf's SANs;
/// `IGNORE_CERT_CN_INVALID` (0x2) by name or by IP covers a wrong host and
/// still checks dates. Returns the good and wrong-host servers for a
/// backend's own further assertions.
pub async fn dns_names_and_ip_addresses_are_both_checked(
    handshake: &HostHandshake,
) -> (TlsServer, TlsServer) {
    let hs = |server: &TlsServer, host: &str, flags: u32| handshake(server.addr(), host.to_owned(), flags);
    let pki = TestPki::shared();
    let good = TlsServer::start(pki.leaf(LeafKind::Good));
    let wrong = TlsServer::start(pki.leaf(LeafKind::WrongHost));
    let expired = TlsServer::start(pki.leaf(LeafKind::Expired));
    // The good leaf names localhost and 127.0.0.1.
    assert_eq!(hs(&good, "localhost", 0).await, Ok(()));
    assert_eq!(hs(&good, "127.0.0.1", 0).await, Ok(()));
    assert_eq!(hs(&good, "other.example", 0).await, Err(CN));
    assert_eq!(hs(&good, "127.0.0.2", 0).await, Err(CN));
    // The wrong-host leaf names other.example only.
    assert_eq!(hs(&wrong, "localhost", 0).await, Err(CN));
    assert_eq!(hs(&wrong, "other.example", 0).await, Ok(()));
    assert_eq!(hs(&wrong, "localhost", 0x2).await, Ok(()));
    assert_eq!(hs(&wrong, "127.0.0.1", 0x2).await, Ok(()));
    // 0x02 by name still checks dates.
    assert_eq!(hs(&expired, "localhost", 0x2).await, Err(DATE));
    (good, wrong)
}
