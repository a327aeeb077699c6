//! `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system store for the
//! default builder, as OpenSSL defines (and as the `bits` CLI and demo rely
//! on); `system_roots(false)` trusts only the builder's roots. The case is
//! shared by every backend: [`bits_testkit::suites::system_roots`].
//! (native-tls on Windows and macOS does not read these variables.)
#![cfg(not(any(target_os = "macos", target_os = "windows")))]

bits_testkit::system_roots_tests!(bits_transport_native::Native);
