//! HttpTransport and PlainHttp against the real test server on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bits_core::{BitsError, ConnectionPolicy, Hresult, Request, Response, SecurityFlags, Transport};
use bits_http::{BoxFuture, HttpOptions, HttpTransport, PlainHttp, TlsConnect};
use bits_testkit::http::{HttpServer, Route};
use http::HeaderValue;
use tokio::net::TcpStream;
use url::Url;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn flags(bits: u32) -> SecurityFlags {
    SecurityFlags::new(bits).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn collect(response: &mut Response) -> Result<Vec<u8>, BitsError> {
    let mut out = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn get_streams_the_whole_body_and_sends_user_agent_and_host() {
    let body = data(300_000);
    let server = HttpServer::start().with("/f", Route::body(body.clone()).etag("\"v1\""));
    let t = PlainHttp::new();
    let mut r = t
        .send(Request::get(url(&server.url("/f")), ConnectionPolicy::default()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "etag"), Some("\"v1\""));
    assert_eq!(header(&r, "content-length"), Some("300000"));
    assert_eq!(collect(&mut r).await.unwrap(), body);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].header("user-agent"), Some(bits_http::USER_AGENT_VALUE));
    assert_eq!(reqs[0].header("host"), Some(server.addr().to_string().as_str()));
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let server = HttpServer::start().with("/f", Route::body(data(1234)));
    let t = PlainHttp::new();
    let mut r = t
        .send(Request::head(url(&server.url("/f")), ConnectionPolicy::default()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-length"), Some("1234"));
    assert_eq!(collect(&mut r).await.unwrap(), Vec::<u8>::new());
    assert_eq!(server.requests()[0].method, "HEAD");
}

#[tokio::test]
async fn range_gives_206_with_the_tail() {
    let body = data(10_000);
    let server = HttpServer::start().with("/f", Route::body(body.clone()).etag("\"v1\""));
    let t = PlainHttp::new();
    let mut req = Request::get(url(&server.url("/f")), ConnectionPolicy::default());
    req.headers
        .insert("range", HeaderValue::from_static("bytes=4000-"));
    req.headers.insert("if-range", HeaderValue::from_static("\"v1\""));
    let mut r = t.send(req).await.unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(header(&r, "content-range"), Some("bytes 4000-9999/10000"));
    assert_eq!(collect(&mut r).await.unwrap(), &body[4000..]);
    let rec = &server.requests()[0];
    assert_eq!(rec.range(), Some("bytes=4000-"));
    assert_eq!(rec.if_range(), Some("\"v1\""));
}

#[tokio::test]
async fn statuses_and_redirects_are_responses_not_errors() {
    let server = HttpServer::start()
        .with("/gone", Route::status(404))
        .with("/busy", Route::status(503).retry_after(7))
        .with("/moved", Route::redirect(302, "/elsewhere"))
        .with("/bare", Route::redirect_without_location(301));
    let t = PlainHttp::new();
    let send = |path: &str| t.send(Request::get(url(&server.url(path)), ConnectionPolicy::default()));
    assert_eq!(send("/gone").await.unwrap().status, 404);
    assert_eq!(send("/nowhere").await.unwrap().status, 404);
    let busy = send("/busy").await.unwrap();
    assert_eq!(busy.status, 503);
    assert_eq!(bits_http::retry_after_secs(&busy.headers), Some(7));
    let moved = send("/moved").await.unwrap();
    assert_eq!(moved.status, 302);
    assert_eq!(header(&moved, "location"), Some("/elsewhere"));
    let bare = send("/bare").await.unwrap();
    assert_eq!(bare.status, 301);
    assert_eq!(header(&bare, "location"), None);
    // Never followed.
    assert!(server.requests_for("/elsewhere").is_empty());
}

#[tokio::test]
async fn a_body_cut_short_is_connection_reset_from_next_chunk() {
    let server = HttpServer::start().with("/cut", Route::body(data(100_000)).truncate_after(30_000));
    let t = PlainHttp::new();
    let mut r = t
        .send(Request::get(
            url(&server.url("/cut")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let mut got = 0;
    let err = loop {
        match r.body.next_chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("a truncated body ended as a success after {got} bytes"),
            Err(e) => break e,
        }
    };
    assert!(got <= 30_000, "{got}");
    assert_eq!(err.hresult(), Hresult::WINHTTP_CONNECTION_ERROR, "{err}");
    assert!(matches!(err, BitsError::ConnectionReset { .. }), "{err:?}");
}

#[tokio::test]
async fn chunked_bodies_without_length_are_read_to_the_end() {
    let body = data(200_000);
    let server = HttpServer::start().with("/c", Route::body(body.clone()).chunked());
    let t = PlainHttp::new();
    let mut r = t
        .send(Request::get(url(&server.url("/c")), ConnectionPolicy::default()))
        .await
        .unwrap();
    assert_eq!(header(&r, "content-length"), None);
    assert_eq!(collect(&mut r).await.unwrap(), body);
}

#[tokio::test]
async fn a_chunked_body_cut_short_is_connection_reset() {
    let server = HttpServer::start().with("/c", Route::body(data(200_000)).chunked().truncate_after(70_000));
    let t = PlainHttp::new();
    let mut r = t
        .send(Request::get(url(&server.url("/c")), ConnectionPolicy::default()))
        .await
        .unwrap();
    let err = collect(&mut r).await.unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_CONNECTION_ERROR, "{err}");
}

#[tokio::test]
async fn connection_refused_is_cannot_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = PlainHttp::new();
    let err = t
        .send(Request::get(
            url(&format!("http://127.0.0.1:{port}/x")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult(0x8007_2EFD), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn no_response_headers_in_time_is_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let t = PlainHttp::with_options(HttpOptions {
        headers_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    });
    let err = t
        .send(Request::get(
            url(&format!("http://{addr}/x")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_TIMEOUT, "{err}");
    silent.abort();
}

#[tokio::test]
async fn a_stalled_body_is_timeout() {
    let server = HttpServer::start().with(
        "/slow",
        Route::body(data(10_000)).throttle(1000, Duration::from_secs(30)),
    );
    let t = PlainHttp::with_options(HttpOptions {
        idle_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    });
    let mut r = t
        .send(Request::get(
            url(&server.url("/slow")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap();
    let err = collect(&mut r).await.unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_TIMEOUT, "{err}");
}

#[tokio::test]
async fn https_on_plain_http_is_e_notimpl_and_nothing_connects() {
    let server = HttpServer::start().with("/f", Route::body("x"));
    let t = PlainHttp::new();
    let https = server.url("/f").replacen("http:", "https:", 1);
    let err = t
        .send(Request::get(url(&https), ConnectionPolicy::default()))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::E_NOTIMPL, "{err}");
    assert_eq!(server.connections(), 0);
    assert_eq!(t.name(), "plain");
    for bits in [0, 0x1F, 0x21F, 0x91F] {
        assert!(t.check_policy(&ConnectionPolicy::new(flags(bits))).is_ok());
    }
}

#[tokio::test]
async fn other_schemes_are_unrecognized() {
    let t = PlainHttp::new();
    let err = t
        .send(Request::get(
            url("ftp://127.0.0.1/x"),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_UNRECOGNIZED_SCHEME, "{err}");
}

#[tokio::test]
async fn user_info_in_a_url_is_never_sent() {
    let server = HttpServer::start().with(
        "/private",
        Route::body("secret").require_authorization("Basic dXNlcjpwYXNz"),
    );
    let t = PlainHttp::new();
    let with_creds = server.url("/private").replacen("://", "://user:pass@", 1);
    let r = t
        .send(Request::get(url(&with_creds), ConnectionPolicy::default()))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let reqs = server.requests();
    assert_eq!(reqs[0].authorization(), None);
    assert_eq!(reqs[0].header("host"), Some(server.addr().to_string().as_str()));
}

async fn get_all(t: &dyn Transport, u: &str, f: SecurityFlags) -> Vec<u8> {
    let mut r = t
        .send(Request::get(url(u), ConnectionPolicy::new(f)))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let body = collect(&mut r).await.unwrap();
    // Let hyper return the connection to its pool (it does so
    // asynchronously once the body has ended).
    tokio::time::sleep(Duration::from_millis(30)).await;
    body
}

#[tokio::test]
async fn sequential_requests_under_one_policy_reuse_a_connection() {
    let server = HttpServer::start().with("/f", Route::body(data(5000)));
    let t = PlainHttp::new();
    for _ in 0..5 {
        get_all(&t, &server.url("/f"), SecurityFlags::DEFAULT).await;
    }
    let used = server.connections();
    assert!(used < 5, "5 sequential requests used {used} connections");
    assert_eq!(t.http().connections_made(&ConnectionPolicy::default()), used);
}

/// A "TLS" connector that does no TLS at all (so it can talk to the plain
/// test server through an https URL) and records what it was asked.
#[derive(Clone, Default)]
struct RecordingTls {
    seen: Arc<Mutex<Vec<(String, u32)>>>,
    fail_with_date: bool,
}

impl TlsConnect for RecordingTls {
    type Stream = TcpStream;

    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<TcpStream, BitsError>> {
        self.seen
            .lock()
            .unwrap()
            .push((host.to_owned(), policy.flags().bits()));
        let fail = self.fail_with_date;
        Box::pin(async move {
            if fail {
                Err(BitsError::CertDateInvalid)
            } else {
                Ok(tcp)
            }
        })
    }
}

fn https(server: &HttpServer, path: &str) -> String {
    server.url(path).replacen("http:", "https:", 1)
}

#[tokio::test]
async fn each_certificate_policy_has_its_own_pool() {
    let server = HttpServer::start().with("/f", Route::body(data(5000)));
    let tls = RecordingTls::default();
    let seen = Arc::clone(&tls.seen);
    let t = HttpTransport::new("recording", tls, |_| Ok(()), HttpOptions::default());
    let strict = flags(0x0000);
    let relaxed = flags(0x0004);
    for _ in 0..3 {
        get_all(&t, &https(&server, "/f"), strict).await;
    }
    let after_strict = server.connections();
    assert!(after_strict < 3, "{after_strict}");
    // Another certificate policy never gets the pooled connection.
    get_all(&t, &https(&server, "/f"), relaxed).await;
    assert_eq!(server.connections(), after_strict + 1);
    assert_eq!(t.connections_made(&ConnectionPolicy::new(relaxed)), 1);
    // The redirect-policy bits do not split pools, and never reach the backend.
    get_all(&t, &https(&server, "/f"), flags(0x0204)).await;
    assert_eq!(t.connections_made(&ConnectionPolicy::new(relaxed)), 1);
    assert_eq!(server.connections(), after_strict + 1);
    assert_eq!(t.connections_made_total(), after_strict + 1);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(host, _)| host == "127.0.0.1"), "{seen:?}");
    assert!(seen.iter().any(|(_, bits)| *bits == 0x0004), "{seen:?}");
    assert!(seen.iter().all(|(_, bits)| *bits <= 0x1F), "{seen:?}");
}

#[tokio::test]
async fn a_handshake_error_comes_back_unchanged() {
    let server = HttpServer::start().with("/f", Route::body("x"));
    let tls = RecordingTls {
        fail_with_date: true,
        ..RecordingTls::default()
    };
    let t = HttpTransport::new("recording", tls, |_| Ok(()), HttpOptions::default());
    let err = t
        .send(Request::get(
            url(&https(&server, "/f")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, BitsError::CertDateInvalid), "{err:?}");
    assert_eq!(err.hresult(), Hresult(0x8007_2F05));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_refused_flag_value_never_reaches_the_network() {
    let server = HttpServer::start().with("/f", Route::body("x"));
    let t = HttpTransport::new(
        "picky",
        RecordingTls::default(),
        |p: &ConnectionPolicy| {
            if p.flags().cert_bits() & !0x2 == 0 {
                Ok(())
            } else {
                Err(BitsError::NotImplemented { what: format!("{p}") })
            }
        },
        HttpOptions::default(),
    );
    assert_eq!(t.name(), "picky");
    assert!(t.check_policy(&ConnectionPolicy::new(flags(0x2))).is_ok());
    let err = t
        .send(Request::get(
            url(&https(&server, "/f")),
            ConnectionPolicy::new(flags(0x4)),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::E_NOTIMPL);
    assert_eq!(server.connections(), 0);
}

#[test]
fn transports_are_object_safe_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PlainHttp>();
    assert_send_sync::<HttpTransport<RecordingTls>>();
    let t: Box<dyn Transport> = Box::new(PlainHttp::new());
    assert_eq!(t.name(), "plain");
    assert!(format!("{t:?}").contains("plain"));
}

#[tokio::test]
async fn a_connection_closed_before_the_headers_is_connection_reset() {
    let server = HttpServer::start().with("/bye", Route::hang_up());
    let t = PlainHttp::new();
    let err = t
        .send(Request::get(
            url(&server.url("/bye")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_CONNECTION_ERROR, "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn headers_later_than_the_timeout_are_timeout() {
    let server = HttpServer::start().with("/late", Route::body("x").delay(Duration::from_secs(30)));
    let t = PlainHttp::with_options(HttpOptions {
        headers_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    });
    let err = t
        .send(Request::get(
            url(&server.url("/late")),
            ConnectionPolicy::default(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, BitsError::Timeout { .. }), "{err:?}");
}
