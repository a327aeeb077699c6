//! A connection verified under relaxed flags never serves a stricter
//! request (pools per flag value, no TLS session resumption): one
//! `ClientConfig` per handshake, resumption disabled.
//! The cases are shared by every backend: [`bits_testkit::suites::isolation`]
//! (one test per case, by [`bits_testkit::isolation_tests`]).

bits_testkit::isolation_tests!(bits_transport_rustls::Rustls);
