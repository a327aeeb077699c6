//! The host check by DNS name (SNI + X509_VERIFY_PARAM host) as well as by
//! IP, through the transport's connector over a TCP connection to
//! 127.0.0.1 (no name resolution involved).

use bits_core::SecurityFlags;
use bits_http::TlsConnect;
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_openssl::OpensslTransport;
use tokio::net::TcpStream;

async fn handshake(server: &TlsServer, host: &str, flags: u32) -> Result<(), u32> {
    let t = OpensslTransport::builder()
        .add_root_pem(TestPki::shared().root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(std::env::temp_dir().join("bits-openssl-hostnames-test-never-used"))
        .build()
        .unwrap();
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    t.http()
        .tls()
        .connect(host, tcp, SecurityFlags::new(flags).unwrap())
        .await
        .map(|_| ())
        .map_err(|e| e.hresult().0)
}

#[tokio::test]
async fn dns_names_and_ip_addresses_are_both_checked() {
    let pki = TestPki::shared();
    let good = TlsServer::start(pki.leaf(LeafKind::Good));
    let wrong = TlsServer::start(pki.leaf(LeafKind::WrongHost));
    // The good leaf names localhost and 127.0.0.1.
    assert_eq!(handshake(&good, "localhost", 0).await, Ok(()));
    assert_eq!(handshake(&good, "127.0.0.1", 0).await, Ok(()));
    assert_eq!(handshake(&good, "other.example", 0).await, Err(0x8007_2F06));
    assert_eq!(handshake(&good, "127.0.0.2", 0).await, Err(0x8007_2F06));
    assert_eq!(handshake(&good, "[127.0.0.1]", 0).await, Ok(()));
    // The wrong-host leaf names other.example only.
    assert_eq!(handshake(&wrong, "localhost", 0).await, Err(0x8007_2F06));
    assert_eq!(handshake(&wrong, "other.example", 0).await, Ok(()));
    assert_eq!(handshake(&wrong, "localhost", 0x2).await, Ok(()));
    assert_eq!(handshake(&wrong, "127.0.0.1", 0x1C).await, Err(0x8007_2F06));
}
