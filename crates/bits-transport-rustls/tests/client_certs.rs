//! Client certificates (`docs/spec/http-options.md`, "Client certificate")
//! through the rustls backend: the shared suite of bits-testkit.

use bits_testkit::suites::client_certs::Formats;

bits_testkit::client_cert_tests!(
    bits_transport_rustls::Rustls,
    Formats {
        pkcs12: false,
        non_pkcs8_keys: true
    }
);
