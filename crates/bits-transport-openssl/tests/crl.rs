//! `BG_SSL_ENABLE_CRL_CHECK` against real TLS servers and a real CRL server
//! on 127.0.0.1. The cases are shared by every backend:
//! [`bits_testkit::suites::crl`] (one test per case, by
//! [`bits_testkit::crl_tests`]).

use std::path::Path;

use bits_testkit::pki::TestPki;
use bits_transport_openssl::OpensslTransport;

fn transport(pki: &TestPki, cache: &Path) -> OpensslTransport {
    OpensslTransport::builder()
        .add_root_pem(pki.root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(cache)
        .build()
        .unwrap()
}

bits_testkit::crl_tests!(transport, |t: &OpensslTransport| t.http().clear_pools());
