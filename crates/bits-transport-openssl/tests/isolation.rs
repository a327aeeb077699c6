//! A connection verified under relaxed flags never serves a stricter
//! request (pools per flag value, no TLS session resumption).
//! The cases are shared by every backend: [`bits_testkit::suites::isolation`].

use bits_testkit::pki::TestPki;
use bits_testkit::suites::isolation;
use bits_transport_openssl::OpensslTransport;

fn transport(pki: &TestPki) -> OpensslTransport {
    let cache = std::env::temp_dir().join("bits-openssl-isolation-test-never-used");
    OpensslTransport::builder()
        .add_root_pem(pki.root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(cache)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_connection_made_under_ignore_unknown_ca_never_serves_strict_requests() {
    isolation::ignore_unknown_ca_never_serves_strict_requests(&transport).await;
}

#[tokio::test]
async fn a_connection_made_under_ignore_cn_never_serves_strict_requests() {
    isolation::ignore_cn_never_serves_strict_requests(&transport).await;
}
