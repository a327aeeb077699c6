//! The host check by DNS name as well as by IP (OpenSSL verify codes 62 and
//! 64 both classify as 0x80072F06), through the native connector over a
//! TCP connection to 127.0.0.1 (no name resolution involved).

use bits_core::SecurityFlags;
use bits_http::TlsConnect;
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_native::NativeTransport;
use tokio::net::TcpStream;

const CN: u32 = 0x8007_2F06;
const DATE: u32 = 0x8007_2F05;
const E_NOTIMPL: u32 = 0x8000_4001;

async fn handshake(server: &TlsServer, host: &str, flags: u32) -> Result<(), u32> {
    let t = NativeTransport::builder()
        .add_root_pem(TestPki::shared().root_pem())
        .unwrap()
        .system_roots(false)
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
    let expired = TlsServer::start(pki.leaf(LeafKind::Expired));
    // The good leaf names localhost and 127.0.0.1.
    assert_eq!(handshake(&good, "localhost", 0).await, Ok(()));
    assert_eq!(handshake(&good, "127.0.0.1", 0).await, Ok(()));
    assert_eq!(handshake(&good, "other.example", 0).await, Err(CN));
    assert_eq!(handshake(&good, "127.0.0.2", 0).await, Err(CN));
    // The wrong-host leaf names other.example only.
    assert_eq!(handshake(&wrong, "localhost", 0).await, Err(CN));
    assert_eq!(handshake(&wrong, "other.example", 0).await, Ok(()));
    assert_eq!(handshake(&wrong, "localhost", 0x2).await, Ok(()));
    assert_eq!(handshake(&wrong, "127.0.0.1", 0x2).await, Ok(()));
    // 0x02 by name still checks dates.
    assert_eq!(handshake(&expired, "localhost", 0x2).await, Err(DATE));
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

/// A TCP server on 127.0.0.1 that reads the ClientHello, then either
/// answers plain text or resets the connection.
async fn not_tls(reset: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

async fn handshake_at(addr: std::net::SocketAddr, flags: u32) -> Result<(), u32> {
    let t = NativeTransport::builder().system_roots(false).build().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    t.http()
        .tls()
        .connect("127.0.0.1", tcp, SecurityFlags::new(flags).unwrap())
        .await
        .map(|_| ())
        .map_err(|e| e.hresult().0)
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_a_secure_failure() {
    let addr = not_tls(false).await;
    assert_eq!(handshake_at(addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(handshake_at(addr, 2).await, Err(0x8007_2F8F));
}

#[tokio::test]
async fn a_reset_during_the_handshake_is_a_transient_connection_reset() {
    let addr = not_tls(true).await;
    assert_eq!(handshake_at(addr, 0).await, Err(0x8007_2EFE));
}
