//! `system_roots(true)` trusts what `rustls-native-certs` finds, where
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the platform store as OpenSSL
//! defines; `system_roots(false)` trusts only the builder's roots. The case
//! is shared by every backend: [`bits_testkit::suites::system_roots`].
#![cfg(not(any(target_os = "macos", target_os = "windows")))]

bits_testkit::system_roots_tests!(bits_transport_rustls::Rustls);
