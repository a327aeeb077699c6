//! Server credentials over https (Basic, Digest MD5 and SHA-256, a wrong
//! password), answered by the engine over this backend's transport: the
//! shared cases of [`bits_testkit::suites::credentials`].

bits_testkit::credential_tests!(bits_transport_openssl::Openssl);
