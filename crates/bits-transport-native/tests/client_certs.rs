//! Client certificates (`docs/spec/http-options.md`, "Client certificate")
//! through the native backend: the shared suite of bits-testkit.

use bits_testkit::suites::client_certs::Formats;

bits_testkit::client_cert_tests!(
    bits_transport_native::Native,
    Formats {
        pkcs12: false,
        non_pkcs8_keys: false
    }
);
