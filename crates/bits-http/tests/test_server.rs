//! The scripted behaviours of bits_testkit::http, seen through PlainHttp
//! (which the engine and CLI tests rely on).

use std::time::Duration;

use bits_core::{ConnectionPolicy, Request, Response, Transport};
use bits_http::PlainHttp;
use bits_testkit::http::{HttpServer, Route};
use http::HeaderValue;
use url::Url;

async fn get(t: &PlainHttp, u: &str, headers: &[(&'static str, &'static str)]) -> Response {
    let mut req = Request::get(Url::parse(u).unwrap(), ConnectionPolicy::default());
    for (n, v) in headers {
        req.headers.insert(*n, HeaderValue::from_static(v));
    }
    t.send(req).await.unwrap()
}

async fn body(r: &mut Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = r.body.next_chunk().await.unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn if_range_with_a_stale_validator_gets_the_whole_body() {
    let server = HttpServer::start().with(
        "/f",
        Route::body("0123456789")
            .etag("\"v2\"")
            .last_modified("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    let t = PlainHttp::new();
    let u = server.url("/f");
    let mut r = get(&t, &u, &[("range", "bytes=4-"), ("if-range", "\"v1\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(body(&mut r).await, b"0123456789");
    let mut r = get(
        &t,
        &u,
        &[
            ("range", "bytes=4-"),
            ("if-range", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(body(&mut r).await, b"456789");
    let mut r = get(&t, &u, &[("range", "bytes=2-3")]).await;
    assert_eq!(header(&r, "content-range"), Some("bytes 2-3/10"));
    assert_eq!(body(&mut r).await, b"23");
    let r = get(&t, &u, &[("range", "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(header(&r, "content-range"), Some("bytes */10"));
}

#[tokio::test]
async fn ignore_range_always_sends_200() {
    let server = HttpServer::start().with("/f", Route::body("0123456789").ignore_range());
    let t = PlainHttp::new();
    let mut r = get(&t, &server.url("/f"), &[("range", "bytes=4-")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-range"), None);
    assert_eq!(body(&mut r).await, b"0123456789");
}

#[tokio::test]
async fn fail_first_then_succeed_and_set_resets_the_script() {
    let server = HttpServer::start().with("/f", Route::body("ok").fail_first(2, 503).retry_after(3));
    let t = PlainHttp::new();
    let u = server.url("/f");
    for _ in 0..2 {
        let r = get(&t, &u, &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("3"));
    }
    let mut r = get(&t, &u, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(body(&mut r).await, b"ok");
    server.set("/f", Route::body("new").fail_first(1, 500));
    assert_eq!(get(&t, &u, &[]).await.status, 500);
    let mut r = get(&t, &u, &[]).await;
    assert_eq!(body(&mut r).await, b"new");
    assert_eq!(server.requests_for("/f").len(), 5);
}

#[tokio::test]
async fn truncate_first_cuts_only_the_first_gets() {
    let server = HttpServer::start().with("/f", Route::body(vec![5u8; 5000]).truncate_first(1, 1000));
    let t = PlainHttp::new();
    let u = server.url("/f");
    let mut r = get(&t, &u, &[]).await;
    let mut got = 0;
    let err = loop {
        match r.body.next_chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("not truncated"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, 1000, "{err}");
    let mut r = get(&t, &u, &[("range", "bytes=1000-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(body(&mut r).await.len(), 4000);
    assert_eq!(server.connections(), 2);
}

#[test]
fn usable_from_sync_code_with_wait_until() {
    let server = HttpServer::start().with("/f", Route::body("x"));
    assert!(server.url("f").ends_with("/f"));
    let addr = server.addr();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /f?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nx"), "{out}");
    })
    .join()
    .unwrap();
    assert!(server.wait_until(Duration::from_secs(5), |s| s.requests().len() == 1));
    let r = &server.requests()[0];
    assert_eq!((r.path.as_str(), r.target.as_str()), ("/f", "/f?q=1"));
    assert_eq!(server.bytes_sent(), 1);
}

#[tokio::test]
async fn bodiless_answers_keep_the_connection_usable() {
    let server = HttpServer::start()
        .with("/c", Route::body(vec![1u8; 3000]).chunked())
        .with("/empty", Route::status(204))
        .with("/f", Route::body("x"));
    let t = PlainHttp::new();
    let head = Request::head(
        Url::parse(&server.url("/c")).unwrap(),
        ConnectionPolicy::default(),
    );
    let mut r = t.send(head).await.unwrap();
    assert_eq!(header(&r, "transfer-encoding"), Some("chunked"));
    assert!(body(&mut r).await.is_empty());
    let mut r = get(&t, &server.url("/empty"), &[]).await;
    assert_eq!(r.status, 204);
    assert!(body(&mut r).await.is_empty());
    // The same connection still parses cleanly.
    let mut r = get(&t, &server.url("/f"), &[]).await;
    assert_eq!(body(&mut r).await, b"x");
    let mut r = get(&t, &server.url("/c"), &[]).await;
    assert_eq!(body(&mut r).await.len(), 3000);
}

#[tokio::test]
async fn an_acceptor_wraps_each_connection_and_its_failures_are_counted() {
    let server = HttpServer::start_with_acceptor("http", |tcp| async move { Ok(tcp) })
        .with("/f", Route::body("through the acceptor"));
    let t = PlainHttp::new();
    let mut r = get(&t, &server.url("/f"), &[]).await;
    assert_eq!(body(&mut r).await, b"through the acceptor");

    let refusing = HttpServer::start_with_acceptor("http", |_tcp| async move {
        Err::<tokio::net::TcpStream, _>(std::io::Error::other("handshake refused"))
    });
    let req = Request::get(
        Url::parse(&refusing.url("/f")).unwrap(),
        ConnectionPolicy::default(),
    );
    let err = t.send(req).await.unwrap_err();
    assert_eq!(err.hresult(), bits_core::Hresult::WINHTTP_CONNECTION_ERROR);
    // The server may count the failure just after the client saw the close.
    assert!(refusing.wait_until(Duration::from_secs(5), |s| s.handshake_failures() == 1));
    assert!(refusing.requests().is_empty());
}

#[tokio::test]
async fn extra_headers_close_remove_and_clear() {
    let server = HttpServer::start().with("/f", Route::body("x").header("X-Test", "1").close_connection());
    let t = PlainHttp::new();
    let r = get(&t, &server.url("/f"), &[]).await;
    assert_eq!(header(&r, "x-test"), Some("1"));
    assert_eq!(header(&r, "connection"), Some("close"));
    drop(r);
    get(&t, &server.url("/f"), &[]).await;
    assert_eq!(server.connections(), 2);
    server.remove("/f");
    assert_eq!(get(&t, &server.url("/f"), &[]).await.status, 404);
    assert_eq!(server.requests().len(), 3);
    server.clear_requests();
    assert!(server.requests().is_empty());
}
