//! The host check by DNS name (SNI + X509_VERIFY_PARAM host) as well as by
//! IP, through the transport's connector over a TCP connection to
//! 127.0.0.1 (no name resolution involved). The shared part is
//! [`bits_testkit::suites::hostnames`].

use std::net::SocketAddr;

use bits_core::{ConnectionPolicy, SecurityFlags};
use bits_http::TlsConnect;
use bits_testkit::pki::TestPki;
use bits_testkit::suites::hostnames;
use bits_transport_openssl::OpensslTransport;
use tokio::net::TcpStream;

async fn handshake(addr: SocketAddr, host: String, flags: u32) -> Result<(), u32> {
    let t = OpensslTransport::builder()
        .add_root_pem(TestPki::shared().root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(std::env::temp_dir().join("bits-openssl-hostnames-test-never-used"))
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
    let (good, wrong) =
        hostnames::dns_names_and_ip_addresses_are_both_checked(&|a, h, f| Box::pin(handshake(a, h, f))).await;
    // OpenSSL's own: a bracketed IP literal, and 0x1C not covering a wrong host.
    assert_eq!(handshake(good.addr(), "[127.0.0.1]".into(), 0).await, Ok(()));
    assert_eq!(
        handshake(wrong.addr(), "127.0.0.1".into(), 0x1C).await,
        Err(0x8007_2F06)
    );
}
