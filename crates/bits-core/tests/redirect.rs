//! Redirects against a real HTTP/1.1 server, per `docs/spec/policy.md`.

mod support;

use bits_core::{ErrorContext, JobState};
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use support::*;

const STATUSES: [u16; 6] = [300, 301, 302, 303, 307, 308];

fn redirecting(status: u16) -> Env {
    Env::new(&[
        ("/start", Route::redirect(status, "/final")),
        ("/final", Route::body("the file").etag("\"f\"")),
    ])
    .files(1)
}

#[tokio::test]
async fn silent_follows_and_keeps_the_remote_name() {
    for status in STATUSES {
        let mut env = redirecting(status);
        assert_eq!(env.run().await.state, JobState::Transferred, "{status}");
        assert_eq!(read(&env.temp(0)), b"the file");
        assert_eq!(env.job.files[0].remote_name, env.server.url("/start"));
    }
}

#[tokio::test]
async fn report_follows_and_reports_the_final_url() {
    for status in STATUSES {
        let mut env = redirecting(status).flags(0x0100);
        assert_eq!(env.run().await.state, JobState::Transferred, "{status}");
        assert_eq!(env.job.files[0].remote_name, env.server.url("/final"));
    }
}

#[tokio::test]
async fn disallow_is_an_error_naming_the_status_and_the_target() {
    for status in STATUSES {
        let mut env = redirecting(status).flags(0x0200);
        let out = env.run().await;
        assert_eq!((out.state, out.retry_after), (JobState::Error, None));
        assert_eq!(
            env.error(),
            Some((0x8007_0000 | u32::from(status), ErrorContext::RemoteFile, Some(0)))
        );
        assert_eq!(env.job.files[0].remote_name, env.server.url("/final"));
        assert!(env.server.requests_for("/final").is_empty());
        assert!(!env.temp(0).exists());
    }
}

#[tokio::test]
async fn a_redirect_without_location_is_an_http_error() {
    for status in STATUSES {
        let mut env = Env::new(&[("/x", Route::redirect_without_location(status))]);
        assert_eq!(env.run().await.state, JobState::Error);
        assert_eq!(env.error().unwrap().0, 0x8019_0000 | u32::from(status));
    }
}

#[tokio::test]
async fn ten_hops_are_followed_eleven_are_not() {
    for (hops, state) in [(10, JobState::Transferred), (11, JobState::Error)] {
        let mut routes: Vec<(String, Route)> = (0..hops)
            .map(|k| (format!("/h{k}"), Route::redirect(302, format!("/h{}", k + 1))))
            .collect();
        routes.push((format!("/h{hops}"), Route::body("end")));
        let refs: Vec<(&str, Route)> = routes.iter().map(|(p, r)| (p.as_str(), r.clone())).collect();
        let mut env = Env::new(&refs).files(1);
        assert_eq!(env.run().await.state, state, "{hops} hops");
        if state == JobState::Error {
            assert_eq!(env.error().unwrap().0, 0x8007_2F7C);
            assert_eq!(env.server.requests().len(), 11);
        }
    }
}

#[tokio::test]
async fn redirects_to_other_schemes_are_refused() {
    for target in ["ftp://127.0.0.1/x", "file:///etc/passwd"] {
        let mut env = Env::new(&[("/x", Route::redirect(302, target))]);
        assert_eq!(env.run().await.state, JobState::Error);
        assert_eq!(env.error().unwrap().0, 0x8007_2F7C);
    }
}

#[tokio::test]
async fn authorization_never_reaches_another_origin() {
    let other = HttpServer::start();
    other.set("/file", Route::body("elsewhere"));
    let mut env = Env::new(&[
        (
            "/start",
            Route::redirect(302, "/same").require_authorization("Bearer t0ken"),
        ),
        (
            "/same",
            Route::redirect(307, other.url("/file")).require_authorization("Bearer t0ken"),
        ),
    ])
    .files(1);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
    headers.insert(USER_AGENT, HeaderValue::from_static("embedder/1"));
    env.engine = engine().with_request_headers(headers);
    assert_eq!(env.run().await.state, JobState::Transferred);
    let seen = other.requests_for("/file");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization(), None);
    assert_eq!(seen[0].header("user-agent"), Some("embedder/1"));
    assert_eq!(read(&env.temp(0)), b"elsewhere");
}

#[tokio::test]
async fn a_resume_keeps_its_range_across_a_redirect() {
    let data = body(60_000);
    let mut env = Env::new(&[
        ("/start", Route::redirect(301, "/final")),
        ("/final", Route::body(data.clone()).etag("\"f\"")),
    ])
    .files(1);
    std::fs::write(env.temp(0), &data[..1000]).unwrap();
    env.job.files[0].validator = Some("\"f\"".into());
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(env.ranges("/final"), [Some("bytes=1000-".to_string())]);
    assert_eq!(read(&env.temp(0)), data);
}
