//! A connection verified under relaxed flags never serves a stricter
//! request (pools per flag value, no TLS session resumption).
//! The cases are shared by every backend: [`bits_testkit::suites::isolation`]
//! (one test per case, by [`bits_testkit::isolation_tests`]).

bits_testkit::isolation_tests!(bits_transport_openssl::Openssl);
