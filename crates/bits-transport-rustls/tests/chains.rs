//! Chains the shared test PKI does not have, checked at the handshake
//! through the transport's own connector against a real TLS server. The
//! cases every backend must pass (and the certificate builders) are
//! [`bits_testkit::suites::chains`] (one test per case, by
//! [`bits_testkit::chain_tests`]); here only what is rustls's own: webpki
//! meeting an untrusted intermediate's date before its missing issuer
//! (pitfall 8), the date-window narrowing and its documented narrower case,
//! and session resumption checked on the rustls connection.

use std::net::SocketAddr;

use bits_core::{ConnectionPolicy, SecurityFlags};
use bits_http::TlsConnect;
use bits_testkit::suites::chains::{issue, serve, CA, DATE};
use bits_transport_rustls::RustlsTransport;
use tokio::net::TcpStream;

/// The handshake result under `flags` against `addr`, trusting `roots`
/// (DER), through the transport's own connector.
async fn handshake(roots: Vec<Vec<u8>>, addr: SocketAddr, flags: u32) -> Result<(), u32> {
    let mut builder = RustlsTransport::builder().system_roots(false);
    for r in roots {
        builder = builder.add_root_der(&r).unwrap();
    }
    let t = builder
        .crl_cache_dir(std::env::temp_dir().join("bits-rustls-chains-test-never-used"))
        .build()
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let flags = SecurityFlags::new(flags).unwrap();
    t.http()
        .tls()
        .connect("127.0.0.1", tcp, &ConnectionPolicy::new(flags))
        .await
        .map(|_| ())
        .map_err(|e| e.hresult().0)
}

bits_testkit::chain_tests!(handshake);

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

/// The documented narrower case (tls-mapping §4.2, appendix C): no instant
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
    let root = issue("root", None, true, (-10, 3650), None);
    let leaf = issue("leaf", Some(&root), false, (-1, 365), None);
    let addr = serve(&leaf, &[]).await;
    let t = RustlsTransport::builder()
        .system_roots(false)
        .add_root_der(&root.der())
        .unwrap()
        .crl_cache_dir(std::env::temp_dir().join("bits-rustls-chains-test-never-used"))
        .build()
        .unwrap();
    for flags in [0x1E, 0x08, 0x00, 0x00] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let flags = SecurityFlags::new(flags).unwrap();
        let mut stream = t
            .http()
            .tls()
            .connect("127.0.0.1", tcp, &ConnectionPolicy::new(flags))
            .await
            .unwrap();
        // Read what the server sends after the handshake (TLS 1.3 session
        // tickets) so that a client that kept them would have them.
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), stream.read(&mut buf)).await;
        assert_eq!(
            stream.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "{flags}"
        );
    }
}
