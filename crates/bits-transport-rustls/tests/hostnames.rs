//! The host check by DNS name (SNI + webpki's subject-name check) as well
//! as by IP, through the transport's connector over a TCP connection to
//! 127.0.0.1 (no name resolution involved). The case is shared by every
//! backend: [`bits_testkit::suites::hostnames`].

use bits_testkit::backend::host_handshake;
use bits_testkit::suites::hostnames;
use bits_transport_rustls::Rustls;

#[tokio::test]
async fn dns_names_and_ip_addresses_are_both_checked() {
    hostnames::dns_names_and_ip_addresses_are_both_checked(&host_handshake::<Rustls>).await;
}
