//! The host check by DNS name as well as by IP (OpenSSL verify codes 62 and
//! 64 both classify as 0x80072F06), through the native connector over a
//! TCP connection to 127.0.0.1 (no name resolution involved). The shared parts are
//! [`bits_testkit::suites::hostnames`] and [`bits_testkit::suites::chains`].

use std::net::SocketAddr;

use bits_core::{ConnectionPolicy, SecurityFlags};
use bits_http::TlsConnect;
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::suites::{chains, hostnames};
use bits_testkit::tls::TlsServer;
use bits_transport_native::NativeTransport;
use tokio::net::TcpStream;

const E_NOTIMPL: u32 = 0x8000_4001;

async fn handshake(server: &TlsServer, host: &str, flags: u32) -> Result<(), u32> {
    handshake_by_addr(server.addr(), host.to_owned(), flags).await
}

async fn handshake_by_addr(addr: SocketAddr, host: String, flags: u32) -> Result<(), u32> {
    let t = NativeTransport::builder()
        .add_root_pem(TestPki::shared().root_pem())
        .unwrap()
        .system_roots(false)
        .build()
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    t.http()
        .tls()
        .connect(
            &host,
            tcp,
            &ConnectionPolicy::new(SecurityFlags::new(flags).unwrap()),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.hresult().0)
}

#[tokio::test]
async fn dns_names_and_ip_addresses_are_both_checked() {
    hostnames::dns_names_and_ip_addresses_are_both_checked(&|a, h, f| Box::pin(handshake_by_addr(a, h, f)))
        .await;
}

#[tokio::test]
async fn the_connector_itself_refuses_values_it_cannot_honour() {
    let good = TlsServer::start(TestPki::shared().leaf(LeafKind::Good));
    for bits in [0x01, 0x04, 0x08, 0x10, 0x1E, 0x1F] {
        assert_eq!(
            handshake(&good, "localhost", bits).await,
            Err(E_NOTIMPL),
            "0x{bits:02X}"
        );
    }
    assert_eq!(good.handshakes_ok(), 0);
}

async fn handshake_at(addr: SocketAddr, flags: u32) -> Result<(), u32> {
    let t = NativeTransport::builder().system_roots(false).build().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    t.http()
        .tls()
        .connect(
            "127.0.0.1",
            tcp,
            &ConnectionPolicy::new(SecurityFlags::new(flags).unwrap()),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.hresult().0)
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_a_secure_failure() {
    let addr = chains::not_tls(false).await;
    assert_eq!(handshake_at(addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(handshake_at(addr, 2).await, Err(0x8007_2F8F));
}

#[tokio::test]
async fn a_reset_during_the_handshake_is_a_transient_connection_reset() {
    chains::a_reset_during_the_handshake_is_a_transient_connection_reset(&|roots, a, f| {
        assert!(roots.is_empty());
        Box::pin(handshake_at(a, f))
    })
    .await;
}
