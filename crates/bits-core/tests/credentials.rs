//! The engine answering a server's `401` with the job's server credentials
//! (`docs/spec/http-options.md`, "Credentials"), against a real HTTP/1.1
//! server whose Digest check is written from RFC 7616 apart from the
//! client (`bits_testkit::http::Route::digest_auth`): what the server
//! receives is what counts.

mod support;

use bits_core::{AuthScheme, AuthTarget, Credentials, ErrorContext, JobState};
use bits_testkit::http::{DigestAlgorithm, RecordedRequest};
use support::*;

/// `0x80190191`: BG_E_HTTP_ERROR_401.
const E_401: u32 = 0x8019_0191;
const USER: &str = "Mufasa";
/// Distinctive, to look for it where it must not be.
const PASSWORD: &str = "Circle-of-Life-7f3a";

fn server_creds(scheme: AuthScheme, password: &str) -> Credentials {
    Credentials::new(AuthTarget::Server, scheme, USER, password).unwrap()
}

/// Gives the job server credentials of `scheme`.
fn give(env: &mut Env, scheme: AuthScheme, password: &str) {
    env.job.set_credentials(server_creds(scheme, password)).unwrap();
}

fn digest(algorithm: DigestAlgorithm, data: &[u8]) -> Route {
    Route::body(data.to_vec()).digest_auth(USER, PASSWORD, algorithm)
}

/// The `nc` of a Digest `Authorization`.
fn nc(r: &RecordedRequest) -> Option<String> {
    bits_testkit::http::parse_digest_authorization(r.authorization()?).map(|f| f["nc"].clone())
}

fn nonce(r: &RecordedRequest) -> Option<String> {
    bits_testkit::http::parse_digest_authorization(r.authorization()?).map(|f| f["nonce"].clone())
}

/// The job failed for good with `0x80190191` on file `file`; its message.
fn assert_refused(env: &Env, state: JobState, file: usize) -> String {
    assert_eq!(state, JobState::Error, "{:?}", env.job.error);
    assert_eq!(env.error(), Some((E_401, ErrorContext::RemoteFile, Some(file))));
    env.job.error.as_ref().unwrap().message.clone()
}

async fn digest_over_http(algorithm: DigestAlgorithm) {
    let (a, b) = (body(50_000), body(7_000));
    let mut env = Env::new(&[("/a", digest(algorithm, &a)), ("/b", digest(algorithm, &b))]);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    transferred(&mut env).await;
    assert_eq!((read(&env.temp(0)), read(&env.temp(1))), (a, b));
    // The first file: the challenge, then the answer.
    let first = env.server.requests_for("/a");
    assert_eq!(first.len(), 2, "{first:#?}");
    assert_eq!(first[0].authorization(), None);
    let answer = first[1].authorization().unwrap();
    assert!(answer.starts_with("Digest "), "{answer}");
    assert!(
        answer.contains(&format!("algorithm={}", algorithm.name())),
        "{answer}"
    );
    assert_eq!(nc(&first[1]).as_deref(), Some("00000001"));
    // The second file of the same origin: answered first, the next count.
    let second = env.server.requests_for("/b");
    assert_eq!(second.len(), 1, "{second:#?}");
    assert_eq!(nc(&second[0]).as_deref(), Some("00000002"));
    assert_eq!(nonce(&second[0]), nonce(&first[1]));
}

/// Runs the job, which must end TRANSFERRED.
async fn transferred(env: &mut Env) {
    assert_eq!(
        env.run().await.state,
        JobState::Transferred,
        "{:?}",
        env.job.error
    );
}

#[tokio::test]
async fn digest_md5_over_http_is_answered_once_then_first() {
    digest_over_http(DigestAlgorithm::Md5).await;
}

#[tokio::test]
async fn digest_sha256_over_http_is_answered_once_then_first() {
    digest_over_http(DigestAlgorithm::Sha256).await;
}

#[tokio::test]
async fn a_resumed_range_request_carries_the_answer() {
    let data = body(100_000);
    let mut env = Env::new(&[(
        "/a",
        digest(DigestAlgorithm::Sha256, &data)
            .etag("\"a1\"")
            .truncate_first(1, 30_000),
    )]);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    assert_eq!(env.run().await.state, JobState::TransientError);
    assert_eq!(
        env.retry().await.state,
        JobState::Transferred,
        "{:?}",
        env.job.error
    );
    assert_eq!(read(&env.temp(0)), data);
    let reqs = env.server.requests_for("/a");
    let resumed: Vec<_> = reqs.iter().filter(|r| r.range().is_some()).collect();
    let answered = resumed.last().expect("a Range request");
    assert_eq!(answered.range(), Some("bytes=30000-"));
    assert!(answered.authorization().unwrap().starts_with("Digest "));
    // Challenged again with the same nonce, the new run goes on with its
    // count (the server takes a repeated one for a replay).
    assert_eq!(nc(answered).as_deref(), Some("00000002"));
    // Each run starts unchallenged: at most challenge + answer per run.
    assert!(reqs.len() <= 4, "{reqs:#?}");
}

#[tokio::test]
async fn basic_over_plain_http_is_refused_and_never_sent() {
    let mut env = Env::new(&[("/a", Route::body("x").basic_auth(USER, PASSWORD))]);
    give(&mut env, AuthScheme::Basic, PASSWORD);
    let state = env.run().await.state;
    let message = assert_refused(&env, state, 0);
    assert!(message.contains("plain http"), "{message}");
    let reqs = env.server.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs.iter().all(|r| r.authorization().is_none()), "{reqs:#?}");
}

#[tokio::test]
async fn a_wrong_password_fails_for_good_after_one_answer() {
    let mut env = Env::new(&[("/a", digest(DigestAlgorithm::Md5, b"x"))]);
    give(&mut env, AuthScheme::Digest, "not-it");
    let out = env.run().await;
    assert_eq!(out.retry_after, None);
    let message = assert_refused(&env, out.state, 0);
    assert!(message.contains("refused") && message.contains(USER), "{message}");
    assert_eq!(env.server.requests().len(), 2);
}

#[tokio::test]
async fn no_credentials_fail_for_good_naming_set_credentials() {
    let mut env = Env::new(&[("/a", digest(DigestAlgorithm::Md5, b"x"))]);
    let state = env.run().await.state;
    let message = assert_refused(&env, state, 0);
    assert!(message.contains("set-credentials"), "{message}");
    assert_eq!(env.server.requests().len(), 1);
}

#[tokio::test]
async fn another_origin_after_a_redirect_gets_no_credentials() {
    let other = HttpServer::start();
    other.set("/file", digest(DigestAlgorithm::Md5, b"elsewhere"));
    // The first origin challenges too, and is answered.
    let mut env = Env::new(&[(
        "/start",
        Route::redirect(302, other.url("/file")).digest_auth(USER, PASSWORD, DigestAlgorithm::Md5),
    )]);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    let state = env.run().await.state;
    let message = assert_refused(&env, state, 0);
    assert!(message.contains("another origin"), "{message}");
    assert!(env.server.requests()[1].authorization().is_some());
    let theirs = other.requests();
    assert_eq!(theirs.len(), 1);
    assert!(theirs.iter().all(|r| r.authorization().is_none()), "{theirs:#?}");
}

#[tokio::test]
async fn a_same_origin_redirect_is_answered() {
    let mut env = Env::new(&[
        ("/start", Route::redirect(302, "/final")),
        ("/final", digest(DigestAlgorithm::Sha256, b"the file")),
    ])
    .files(1);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    transferred(&mut env).await;
    assert_eq!(read(&env.temp(0)), b"the file");
    let finals = env.server.requests_for("/final");
    assert_eq!(finals.len(), 2);
    assert!(finals[1].authorization().is_some());
}

#[tokio::test]
async fn a_stale_nonce_is_answered_once_more() {
    let mut env = Env::new(&[("/a", digest(DigestAlgorithm::Sha256, b"x").digest_stale_first(1))]);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    transferred(&mut env).await;
    let reqs = env.server.requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    assert_ne!(nonce(&reqs[1]), nonce(&reqs[2]));
    assert_eq!(nc(&reqs[2]).as_deref(), Some("00000001"));
}

#[tokio::test]
async fn a_second_stale_in_a_row_fails() {
    let mut env = Env::new(&[("/a", digest(DigestAlgorithm::Sha256, b"x").digest_stale_first(2))]);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    let state = env.run().await.state;
    assert_refused(&env, state, 0);
    assert_eq!(env.server.requests().len(), 3);
}

#[tokio::test]
async fn an_expired_kept_nonce_is_a_new_challenge() {
    let mut env = Env::new(&[
        ("/a", digest(DigestAlgorithm::Md5, b"a")),
        ("/b", digest(DigestAlgorithm::Md5, b"b").digest_stale_after(1)),
    ]);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    transferred(&mut env).await;
    let b = env.server.requests_for("/b");
    // Sent first with the kept nonce, told stale, answered with the new one.
    assert_eq!(b.len(), 2, "{b:#?}");
    assert_eq!(nc(&b[0]).as_deref(), Some("00000002"));
    assert_eq!(nc(&b[1]).as_deref(), Some("00000001"));
}

#[tokio::test]
async fn digest_is_preferred_over_basic() {
    let mut env = Env::new(&[(
        "/a",
        Route::body("x")
            .basic_auth(USER, PASSWORD)
            .digest_auth(USER, PASSWORD, DigestAlgorithm::Sha256),
    )]);
    give(&mut env, AuthScheme::Basic, PASSWORD);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    transferred(&mut env).await;
    let reqs = env.server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].authorization().unwrap().starts_with("Digest "));
}

#[tokio::test]
async fn the_password_is_never_in_the_jobs_or_errors_debug() {
    for password in [PASSWORD, "not-it-9c2e"] {
        let mut env = Env::new(&[("/a", digest(DigestAlgorithm::Md5, b"x"))]);
        give(&mut env, AuthScheme::Digest, password);
        give(&mut env, AuthScheme::Basic, password);
        env.run().await;
        let shown = format!("{:?} {:#?} {:?}", env.job, env.job, env.job.error);
        assert!(shown.contains(USER), "{shown}");
        assert!(!shown.contains(password), "{shown}");
    }
}

#[tokio::test]
async fn a_new_challenge_after_a_same_origin_redirect_is_answered() {
    // The answer made for /start is sent first to /final, which asks for
    // another (here: another algorithm, as another realm would): a new
    // challenge for a new request, not a refusal of the first answer.
    let mut env = Env::new(&[
        (
            "/start",
            Route::redirect(302, "/final").digest_auth(USER, PASSWORD, DigestAlgorithm::Sha256),
        ),
        ("/final", digest(DigestAlgorithm::Md5, b"the file")),
    ])
    .files(1);
    give(&mut env, AuthScheme::Digest, PASSWORD);
    transferred(&mut env).await;
    let finals = env.server.requests_for("/final");
    assert_eq!(finals.len(), 2, "{finals:#?}");
    assert!(finals[1].authorization().unwrap().contains("algorithm=MD5"));
}
