//! The builder and the transport as every backend's: bad roots are invalid
//! arguments, and the transport honours exactly `0x00` and `0x02`, as its
//! backend's `check_policy` says. The cases are shared by every backend:
//! [`bits_testkit::suites::builder`].

bits_testkit::builder_tests!(
    bits_transport_native::Native,
    bits_transport_native::SUPPORTED_CERT_FLAGS
);
