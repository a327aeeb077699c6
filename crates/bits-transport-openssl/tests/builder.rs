//! The builder and the transport as every backend's: bad roots are invalid
//! arguments, and the transport honours every certificate-flag value, as
//! its backend's `check_policy` says. The cases are shared by every
//! backend: [`bits_testkit::suites::builder`].

bits_testkit::builder_tests!(bits_transport_openssl::Openssl, &(0..=0x1F).collect::<Vec<u32>>());
