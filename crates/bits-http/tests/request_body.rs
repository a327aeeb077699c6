//! Request bodies through HttpTransport (PlainHttp) to the real test server
//! on 127.0.0.1: `Content-Length` or chunked, byte-exact, and a failing
//! body source's own error. The cases are shared with the TLS backends,
//! which run them over https: [`bits_testkit::suites::bodies`].

use std::time::Duration;

use bits_http::PlainHttp;
use bits_testkit::http::HttpServer;
use bits_testkit::suites::bodies;

#[tokio::test]
async fn bodies_of_known_length_arrive_byte_exact() {
    bodies::bodies_of_known_length_arrive_byte_exact(&PlainHttp::new(), &HttpServer::start()).await;
}

#[tokio::test]
async fn a_body_of_unknown_length_arrives_chunked_and_whole() {
    bodies::a_body_of_unknown_length_arrives_chunked_and_whole(&PlainHttp::new(), &HttpServer::start()).await;
}

#[tokio::test]
async fn a_body_that_fails_midway_fails_send_with_its_error() {
    let server = HttpServer::start();
    bodies::a_body_that_fails_midway_fails_send_with_its_error(&PlainHttp::new(), &server).await;
    // The requests did reach the server (their heads and first chunks):
    // the bodies failed on the way, not before connecting.
    assert!(server.wait_until(Duration::from_secs(5), |s| s.connections() >= 1));
}
