//! `BG_SSL_ENABLE_CRL_CHECK` (rustls backend) against real TLS servers and a real CRL server
//! on 127.0.0.1. The cases are shared by every backend:
//! [`bits_testkit::suites::crl`] (one test per case, by
//! [`bits_testkit::crl_tests`]).

bits_testkit::crl_tests!(bits_transport_rustls::Rustls);
