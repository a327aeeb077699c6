//! Request bodies over https (a real TLS server on 127.0.0.1):
//! `Content-Length` or chunked, byte-exact, and a failing body source's own
//! error. The cases are shared with bits-http's plain-http tests:
//! [`bits_testkit::suites::bodies`].

bits_testkit::request_body_tests!(bits_transport_rustls::Rustls);
