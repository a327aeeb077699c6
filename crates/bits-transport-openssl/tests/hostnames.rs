//! The host check by DNS name (SNI + X509_VERIFY_PARAM host) as well as by
//! IP, through the transport's connector over a TCP connection to
//! 127.0.0.1 (no name resolution involved). The shared part is
//! [`bits_testkit::suites::hostnames`].

use bits_testkit::backend::host_handshake;
use bits_testkit::suites::hostnames;
use bits_transport_openssl::Openssl;

#[tokio::test]
async fn dns_names_and_ip_addresses_are_both_checked() {
    let (good, wrong) =
        hostnames::dns_names_and_ip_addresses_are_both_checked(&host_handshake::<Openssl>).await;
    // OpenSSL's own: a bracketed IP literal, and 0x1C not covering a wrong host.
    assert_eq!(
        host_handshake::<Openssl>(good.addr(), "[127.0.0.1]".into(), 0).await,
        Ok(())
    );
    assert_eq!(
        host_handshake::<Openssl>(wrong.addr(), "127.0.0.1".into(), 0x1C).await,
        Err(0x8007_2F06)
    );
}
