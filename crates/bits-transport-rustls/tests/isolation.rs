//! A connection verified under relaxed flags never serves a stricter
//! request (pools per flag value, no TLS session resumption): one
//! `ClientConfig` per handshake, resumption disabled.
//! The cases are shared by every backend: [`bits_testkit::suites::isolation`]
//! (one test per case, by [`bits_testkit::isolation_tests`]).

use bits_testkit::pki::TestPki;
use bits_transport_rustls::RustlsTransport;

fn transport(pki: &TestPki) -> RustlsTransport {
    let cache = std::env::temp_dir().join("bits-rustls-isolation-test-never-used");
    RustlsTransport::builder()
        .add_root_pem(pki.root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(cache)
        .build()
        .unwrap()
}

bits_testkit::isolation_tests!(transport);
