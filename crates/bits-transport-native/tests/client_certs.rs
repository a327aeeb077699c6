//! Client certificates (`docs/spec/http-options.md`, "Client certificate")
//! through the native backend: the shared suite of bits-testkit.

bits_testkit::client_cert_tests!(bits_transport_native::Native);
