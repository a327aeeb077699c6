//! Server credentials over https (`docs/spec/http-options.md`,
//! "Credentials"), the same on every backend: a job run by the real
//! [`bits_core::Engine`] over the backend's transport (the engine answers
//! the `401`, not the transport) against the scriptable server over TLS
//! ([`crate::tls::https_server`]), whose Basic and Digest checks are
//! written apart from the client ([`Route::basic_auth`],
//! [`Route::digest_auth`]). Plain http is covered once, in bits-core's
//! `tests/credentials.rs`.
//!
//! Run by [`credential_tests!`](crate::credential_tests).

use std::sync::Arc;

use bits_core::{AuthScheme, AuthTarget, Credentials, Engine, Job, JobState, JobType, NoObserver};
use bits_http::TlsBackend;

use crate::http::{parse_digest_authorization, DigestAlgorithm, HttpServer, RecordedRequest, Route};
use crate::pki::{LeafKind, TestPki};
use crate::temp::TempDir;

/// `0x80190191`: BG_E_HTTP_ERROR_401.
const E_401: u32 = 0x8019_0191;
const USER: &str = "Mufasa";
const PASSWORD: &str = "Circle of Life";

/// What the files of [`run_job`]'s job are.
fn body(n: usize) -> Vec<u8> {
    (0..5_000 + n * 1_000)
        .map(|i| (i % 251) as u8 ^ n as u8)
        .collect()
}

/// An https server presenting [`TestPki::shared`]'s good leaf, serving
/// `/a` and `/b` ([`body`] 0 and 1) behind `guard`.
fn https_server(guard: impl Fn(Route) -> Route) -> HttpServer {
    crate::tls::https_server(TestPki::shared().leaf(LeafKind::Good))
        .with("/a", guard(Route::body(body(0))))
        .with("/b", guard(Route::body(body(1))))
}

/// Runs a job of `/a` and `/b` of `server` with `credentials` through the
/// engine over backend `B`'s transport (trusting the shared PKI): the
/// job, its files checked when TRANSFERRED.
pub async fn run_job<B: TlsBackend>(server: &HttpServer, credentials: &[Credentials]) -> Job {
    let engine = Engine::new(Arc::new(crate::backend::with_pki::<B>(TestPki::shared())));
    let dir = TempDir::new("credentials");
    let mut job = Job::new("credentials", JobType::Download, "testkit");
    for (n, path) in ["/a", "/b"].iter().enumerate() {
        job.add_file(&server.url(path), &dir.path().join(format!("f{n}")))
            .expect("a file");
    }
    for c in credentials {
        job.set_credentials(c.clone()).expect("credentials");
    }
    job.resume().expect("resumed");
    let out = engine.run(&mut job, &mut NoObserver).await;
    if out.state == JobState::Transferred {
        for (n, file) in job.files.iter().enumerate() {
            assert_eq!(
                std::fs::read(&file.temp_name).expect("the file"),
                body(n),
                "file {n}"
            );
        }
    }
    job
}

fn server_creds(scheme: AuthScheme, password: &str) -> Credentials {
    Credentials::new(AuthTarget::Server, scheme, USER, password).expect("credentials")
}

fn nc(r: &RecordedRequest) -> Option<String> {
    parse_digest_authorization(r.authorization()?).map(|f| f["nc"].clone())
}

/// Basic over https: `/a` challenged then answered (2 requests), `/b` of
/// the same origin sent the answer first (1 request).
pub async fn basic_over_https_is_answered_then_sent_first<B: TlsBackend>() {
    let server = https_server(|r| r.basic_auth(USER, PASSWORD));
    let job = run_job::<B>(&server, &[server_creds(AuthScheme::Basic, PASSWORD)]).await;
    assert_eq!(job.state(), JobState::Transferred, "{:?}", job.error);
    let a = server.requests_for("/a");
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0].authorization(), None);
    assert_eq!(a[1].authorization(), Some("Basic TXVmYXNhOkNpcmNsZSBvZiBMaWZl"));
    let b = server.requests_for("/b");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(b[0].authorization(), a[1].authorization());
}

/// Digest of `algorithm` over https: challenged, answered (`nc=00000001`),
/// then the second file answered first (`nc=00000002`).
pub async fn digest_over_https_is_answered_then_sent_first<B: TlsBackend>(algorithm: DigestAlgorithm) {
    let server = https_server(|r| r.digest_auth(USER, PASSWORD, algorithm));
    let job = run_job::<B>(&server, &[server_creds(AuthScheme::Digest, PASSWORD)]).await;
    assert_eq!(job.state(), JobState::Transferred, "{:?}", job.error);
    let a = server.requests_for("/a");
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0].authorization(), None);
    let answer = a[1].authorization().expect("an answer");
    assert!(
        answer.contains(&format!("algorithm={}", algorithm.name())),
        "{answer}"
    );
    assert_eq!(nc(&a[1]).as_deref(), Some("00000001"));
    let b = server.requests_for("/b");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(nc(&b[0]).as_deref(), Some("00000002"));
}

/// A wrong Basic password over https: answered once, then ERROR
/// `0x80190191` for good (2 requests, no retry timer).
pub async fn a_wrong_password_fails_once<B: TlsBackend>() {
    let server = https_server(|r| r.basic_auth(USER, PASSWORD));
    let job = run_job::<B>(&server, &[server_creds(AuthScheme::Basic, "not it")]).await;
    assert_eq!(job.state(), JobState::Error, "{:?}", job.error);
    let error = job.error.as_ref().expect("an error");
    assert_eq!((error.code.0, error.file_index), (E_401, Some(0)));
    assert!(!format!("{job:?}").contains("not it"));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert!(reqs[1].authorization().is_some());
}
