//! Request bodies as the server receives them, through any transport: a
//! body of known length arrives byte-exact with `Content-Length`, one of
//! unknown length arrives chunked and whole, and a body whose source fails
//! fails `send` with the source's own error.
//!
//! Each case takes the transport and a [`HttpServer`] it can reach (plain
//! http, or [`https_server`](crate::tls::https_server) with a leaf the
//! transport trusts) and sets its own routes on it:
//!
//! ```text
//! bits_testkit::request_body_tests!(bits_transport_openssl::Openssl);  // over https
//! bodies::bodies_of_known_length_arrive_byte_exact(&PlainHttp::new(), &HttpServer::start()).await;
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bits_core::{BitsError, BodySource, ConnectionPolicy, Method, Request, RequestBody, Response, Transport};
use bytes::Bytes;

use crate::http::{HttpServer, RecordedRequest, Route};

/// `len` bytes of a pattern that shows a shifted or dropped byte.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn send(
    t: &dyn Transport,
    server: &HttpServer,
    method: Method,
    path: &str,
    body: RequestBody,
) -> Result<Response, BitsError> {
    let url = server.url(path).parse().expect("a valid URL");
    t.send(Request::new(method, url, ConnectionPolicy::default()).with_body(body))
        .await
}

/// The one request the server recorded for `path`.
fn recorded(server: &HttpServer, path: &str) -> RecordedRequest {
    let mut reqs = server.requests_for(path);
    assert_eq!(reqs.len(), 1, "{path}: {reqs:?}");
    reqs.remove(0)
}

/// `PUT` and `POST` of a body held in memory, and of a reader of known
/// length, arrive byte-exact with `Content-Length` (and no
/// `Transfer-Encoding`); an empty body arrives empty.
pub async fn bodies_of_known_length_arrive_byte_exact(t: &dyn Transport, server: &HttpServer) {
    let big = data(300_000);
    let cases = [
        (
            "/put",
            Method::PUT,
            RequestBody::from_bytes(big.clone()),
            &big[..],
        ),
        (
            "/post",
            Method::POST,
            RequestBody::from_bytes(&b"a=1&b=2"[..]),
            b"a=1&b=2",
        ),
        (
            "/reader",
            Method::PUT,
            RequestBody::from_reader(io::Cursor::new(big.clone()), Some(big.len() as u64)),
            &big[..],
        ),
        ("/empty", Method::PUT, RequestBody::from_bytes(Bytes::new()), b""),
    ];
    for (path, method, body, expected) in cases {
        server.set(path, Route::status(201));
        let response = send(t, server, method.clone(), path, body).await.unwrap();
        assert_eq!(response.status, 201, "{path}");
        let got = recorded(server, path);
        assert_eq!(got.method, method.as_str(), "{path}");
        assert!(
            got.body[..] == *expected,
            "{path}: {} bytes arrived",
            got.body.len()
        );
        if !expected.is_empty() {
            assert_eq!(
                got.header("content-length"),
                Some(&*expected.len().to_string()),
                "{path}"
            );
        }
        assert_eq!(got.header("transfer-encoding"), None, "{path}");
    }
}

/// A reader of unknown length is sent chunked (no `Content-Length`) and
/// arrives whole, over several chunks.
pub async fn a_body_of_unknown_length_arrives_chunked_and_whole(t: &dyn Transport, server: &HttpServer) {
    let big = data(200_000);
    server.set("/chunked", Route::body("stored"));
    let mut response = send(
        t,
        server,
        Method::POST,
        "/chunked",
        RequestBody::from_reader(io::Cursor::new(big.clone()), None),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body.next_chunk().await.unwrap().as_deref(),
        Some(&b"stored"[..])
    );
    let got = recorded(server, "/chunked");
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert_eq!(got.header("content-length"), None);
    assert!(got.body[..] == big[..], "{} bytes arrived", got.body.len());
}

/// A body source that fails after its first chunk, with `error` (made
/// afresh, as each case needs its own).
struct FailsAfterOneChunk {
    first: Option<Bytes>,
    error: fn() -> BitsError,
}

impl BodySource for FailsAfterOneChunk {
    fn poll_chunk(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BitsError>>> {
        let this = self.get_mut();
        Poll::Ready(Some(match this.first.take() {
            Some(chunk) => Ok(chunk),
            None => Err((this.error)()),
        }))
    }
}

/// The error a failing source gives: a read of the file being sent failed
/// with `EIO`.
fn eio() -> BitsError {
    BitsError::local("read", "upload.bin", io::Error::from_raw_os_error(5))
}

/// A body source that fails after sending some bytes fails `send` with its
/// own error (its HRESULT, not a network one), for a body of known length
/// and for a chunked one; a reader that ends before its promised length
/// fails it too. The server never gets a whole request.
pub async fn a_body_that_fails_midway_fails_send_with_its_error(t: &dyn Transport, server: &HttpServer) {
    server.set("/fails", Route::status(201));
    let expected = eio().hresult();
    for length in [Some(100_000), None] {
        let source = FailsAfterOneChunk {
            first: Some(Bytes::from(data(16_384))),
            error: eio,
        };
        let err = send(
            t,
            server,
            Method::PUT,
            "/fails",
            RequestBody::from_source(length, source),
        )
        .await
        .unwrap_err();
        assert_eq!(err.hresult(), expected, "length {length:?}: {err}");
        assert!(
            matches!(err, BitsError::LocalFile { .. }),
            "length {length:?}: {err:?}"
        );
    }
    let short = RequestBody::from_reader(io::Cursor::new(data(10)), Some(11));
    let err = send(t, server, Method::PUT, "/fails", short).await.unwrap_err();
    assert!(matches!(err, BitsError::LocalFile { .. }), "{err:?}");
    assert!(err.to_string().contains("the request body"), "{err}");
    assert!(server.requests_for("/fails").is_empty());
}
