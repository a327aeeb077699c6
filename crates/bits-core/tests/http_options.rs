//! The HttpOptions a job carries into its requests, against a real HTTP/1.1
//! server (`docs/spec/http-options.md`, "Custom headers" and "HTTP
//! method"): what the server receives is what counts.

mod support;

use bits_core::{ErrorContext, JobState};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use support::*;

/// Every value of header `name` in a recorded request.
fn all<'a>(r: &'a bits_testkit::http::RecordedRequest, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn custom_headers_go_on_the_get_and_on_the_resumed_range_request() {
    let data = body(100_000);
    let mut env = Env::new(&[(
        "/a",
        Route::body(data.clone()).etag("\"a1\"").truncate_first(1, 30_000),
    )]);
    env.job
        .set_custom_headers(&["X-Custom: one", "Authorization: Bearer job", "X-Custom: two"])
        .unwrap();
    // Cut after 30,000 bytes: TRANSIENT_ERROR, the bytes kept.
    assert_eq!(env.run().await.state, JobState::TransientError);
    assert_eq!(env.retry().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), data);
    let reqs = env.server.requests_for("/a");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range(), Some("bytes=30000-"));
    for r in &reqs {
        assert_eq!(r.method, "GET");
        assert_eq!(all(r, "x-custom"), ["one", "two"]);
        assert_eq!(r.authorization(), Some("Bearer job"));
    }
}

#[tokio::test]
async fn custom_headers_follow_a_same_origin_redirect_credentials_included() {
    let mut env = Env::new(&[
        ("/start", Route::redirect(302, "/final")),
        ("/final", Route::body("the file")),
    ])
    .files(1);
    env.job
        .set_custom_headers(&[
            "X-Custom: c",
            "Cookie: session=s3cr3t",
            "Authorization: Bearer job",
        ])
        .unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    let reqs = env.server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            (r.header("x-custom"), r.header("cookie"), r.authorization()),
            (Some("c"), Some("session=s3cr3t"), Some("Bearer job")),
            "{}",
            r.path
        );
    }
}

#[tokio::test]
async fn another_origin_gets_the_custom_headers_but_no_credentials() {
    let other = HttpServer::start();
    other.set("/file", Route::body("elsewhere"));
    let mut env = Env::new(&[("/start", Route::redirect(307, other.url("/file")))]);
    env.job
        .set_custom_headers(&[
            "X-Custom: kept",
            "Authorization: Bearer job",
            "Proxy-Authorization: Basic cHJveHk=",
        ])
        .unwrap();
    // The engine's own credential header follows the same rule.
    let mut engine_headers = HeaderMap::new();
    engine_headers.insert(COOKIE, HeaderValue::from_static("engine=cookie"));
    engine_headers.insert("x-engine", HeaderValue::from_static("e"));
    env.engine = engine().with_request_headers(engine_headers);
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), b"elsewhere");

    let first = &env.server.requests_for("/start")[0];
    assert_eq!(first.authorization(), Some("Bearer job"));
    assert_eq!(first.header("proxy-authorization"), Some("Basic cHJveHk="));
    assert_eq!(first.header("cookie"), Some("engine=cookie"));
    let there = other.requests_for("/file");
    assert_eq!(there.len(), 1);
    assert_eq!(
        (there[0].header("x-custom"), there[0].header("x-engine")),
        (Some("kept"), Some("e"))
    );
    for credential in ["authorization", "proxy-authorization", "cookie"] {
        assert_eq!(there[0].header(credential), None, "{credential}");
    }
}

fn with_method(env: &mut Env, method: &str) {
    env.job.suspend().unwrap();
    env.job.resumed = false;
    env.job.set_http_method(method).unwrap();
    env.job.resume().unwrap();
}

#[tokio::test]
async fn a_post_job_sends_post_with_no_body() {
    let mut env = Env::new(&[("/api", Route::body("answer").only_method("POST"))]);
    with_method(&mut env, "POST");
    env.job.set_custom_headers(&["X-Custom: c"]).unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), b"answer");
    let reqs = env.server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert!(reqs[0].body.is_empty());
    assert!(matches!(reqs[0].header("content-length"), None | Some("0")));
    assert_eq!(reqs[0].header("transfer-encoding"), None);
    assert_eq!(reqs[0].header("x-custom"), Some("c"));
}

#[tokio::test]
async fn a_get_job_on_a_post_only_endpoint_fails_with_405() {
    let mut env = Env::new(&[("/api", Route::body("answer").only_method("POST"))]);
    assert_eq!(env.run().await.state, JobState::Error);
    assert_eq!(env.job.error.as_ref().unwrap().code.0, 0x8019_0195);
    assert_eq!(env.server.requests()[0].method, "GET");
}

#[tokio::test]
async fn a_custom_method_never_resumes_it_restarts_from_byte_0() {
    let data = body(80_000);
    let mut env = Env::new(&[(
        "/a",
        Route::body(data.clone()).etag("\"a1\"").truncate_first(1, 20_000),
    )]);
    with_method(&mut env, "POST");
    // A transient failure (the body cut short) is fatal; the bytes stay.
    let out = env.run().await;
    assert_eq!((out.state, out.retry_after), (JobState::Error, None));
    assert_eq!(env.error().map(|e| e.0), Some(0x8007_2EFE));
    assert_eq!(std::fs::metadata(env.temp(0)).unwrap().len(), 20_000);
    // Resume: from byte 0, no Range, no If-Range.
    env.job.resume().unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), data);
    let reqs = env.server.requests_for("/a");
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!((r.method.as_str(), r.range(), r.if_range()), ("POST", None, None));
    }
    assert_eq!(env.server.bytes_sent(), 100_000);
    assert_counters_match_disk(&env.job);
}

#[tokio::test]
async fn a_custom_method_drops_bytes_on_disk_the_counters_do_not_know() {
    let data = body(50_000);
    let mut env = Env::new(&[("/a", Route::body(data.clone()).etag("\"a1\""))]);
    with_method(&mut env, "PROPFIND");
    // A daemon killed before it saved: bytes on disk, counters at 0, no
    // restart flag.
    std::fs::write(env.temp(0), &data[..10_000]).unwrap();
    env.job.files[0].validator = Some("\"a1\"".into());
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), data);
    let reqs = env.server.requests_for("/a");
    assert_eq!((reqs[0].method.as_str(), reqs[0].range()), ("PROPFIND", None));
    assert_eq!(env.server.bytes_sent(), 50_000);
}

#[tokio::test]
async fn a_503_is_fatal_with_a_custom_method_and_transient_without() {
    for (method, state) in [("GET", JobState::TransientError), ("POST", JobState::Error)] {
        let mut env = Env::new(&[("/busy", Route::status(503).retry_after(5))]);
        with_method(&mut env, method);
        let out = env.run().await;
        assert_eq!(out.state, state, "{method}");
        assert_eq!(
            env.error(),
            Some((0x8019_01F7, ErrorContext::RemoteFile, Some(0))),
            "{method}"
        );
        assert_eq!(env.server.requests()[0].method, method);
    }
}
