//! The host check by DNS name as well as by IP (OpenSSL verify codes 62 and
//! 64 both classify as 0x80072F06), through the native connector over a
//! TCP connection to 127.0.0.1 (no name resolution involved). The shared parts are
//! [`bits_testkit::suites::hostnames`] and [`bits_testkit::suites::chains`].

use bits_testkit::backend::{chain_handshake, host_handshake};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::suites::{chains, hostnames};
use bits_testkit::tls::TlsServer;
use bits_transport_native::Native;

const E_NOTIMPL: u32 = 0x8000_4001;

#[tokio::test]
async fn dns_names_and_ip_addresses_are_both_checked() {
    hostnames::dns_names_and_ip_addresses_are_both_checked(&host_handshake::<Native>).await;
}

#[tokio::test]
async fn the_connector_itself_refuses_values_it_cannot_honour() {
    let good = TlsServer::start(TestPki::shared().leaf(LeafKind::Good));
    for bits in [0x01, 0x04, 0x08, 0x10, 0x1E, 0x1F] {
        assert_eq!(
            host_handshake::<Native>(good.addr(), "localhost".into(), bits).await,
            Err(E_NOTIMPL),
            "0x{bits:02X}"
        );
    }
    assert_eq!(good.handshakes_ok(), 0);
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_a_secure_failure() {
    let addr = chains::not_tls(false).await;
    assert_eq!(chain_handshake::<Native>(vec![], addr, 0).await, Err(0x8007_2F8F));
    assert_eq!(chain_handshake::<Native>(vec![], addr, 2).await, Err(0x8007_2F8F));
}

#[tokio::test]
async fn a_reset_during_the_handshake_is_a_transient_connection_reset() {
    chains::a_reset_during_the_handshake_is_a_transient_connection_reset(&chain_handshake::<Native>).await;
}
