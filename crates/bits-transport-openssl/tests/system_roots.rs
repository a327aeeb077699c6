//! `system_roots(true)` trusts OpenSSL's default verify paths, which
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` replace; `system_roots(false)` does
//! not. The case is shared by every backend:
//! [`bits_testkit::suites::system_roots`].

bits_testkit::system_roots_tests!(bits_transport_openssl::Openssl);
