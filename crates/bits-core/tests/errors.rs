//! HTTP and local errors against a real HTTP/1.1 server: fatal statuses,
//! transient ones with their retry delay, recovery, local write failures.

mod support;

use std::time::Duration;

use bits_core::{ErrorContext, JobState, NoObserver};
use support::*;

#[tokio::test]
async fn a_404_is_fatal() {
    let mut env = Env::new(&[("/ok", Route::body("fine")), ("/missing", Route::status(404))]);
    env.server.remove("/missing");
    let out = env.run().await;
    assert_eq!((out.state, out.retry_after), (JobState::Error, None));
    assert_eq!(
        env.error(),
        Some((0x8019_0194, ErrorContext::RemoteFile, Some(1)))
    );
    assert!(env.job.files[0].completed);
    assert_eq!(env.server.requests_for("/missing").len(), 1);
}

#[tokio::test]
async fn a_503_is_transient_and_honours_a_longer_retry_after() {
    let mut env = Env::new(&[("/busy", Route::body("later").fail_first(1, 503).retry_after(700))]);
    let out = env.run().await;
    assert_eq!(out.state, JobState::TransientError);
    assert_eq!(out.retry_after, Some(Duration::from_secs(700)));
    assert_eq!(
        env.error(),
        Some((0x8019_01F7, ErrorContext::RemoteFile, Some(0)))
    );
    // Recovered: the retry succeeds.
    assert_eq!(env.retry().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), b"later");
    assert!(env.job.error.is_none());
}

#[tokio::test]
async fn a_shorter_retry_after_waits_the_minimum_retry_delay() {
    let mut env = Env::new(&[("/busy", Route::status(503).retry_after(1))]);
    env.job.set_min_retry_delay(30).unwrap();
    assert_eq!(env.run().await.retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn no_progress_timeout_zero_makes_a_503_fatal() {
    let mut env = Env::new(&[("/busy", Route::status(503))]);
    env.job.set_no_progress_timeout(0).unwrap();
    assert_eq!(env.run().await.state, JobState::Error);
    assert_eq!(env.error().unwrap().0, 0x8019_01F7);
}

#[tokio::test]
async fn run_until_settled_retries_until_the_server_recovers() {
    let mut env = Env::new(&[("/flaky", Route::body("at last").fail_first(2, 503))]);
    // Below the 5 s floor of set_min_retry_delay, to keep the test fast.
    env.job.min_retry_delay = 0;
    let out = env.engine.run_until_settled(&mut env.job, &mut NoObserver).await;
    assert_eq!(out.state, JobState::Transferred);
    assert_eq!(env.server.requests_for("/flaky").len(), 3);
    assert_eq!(read(&env.temp(0)), b"at last");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let mut env = Env::new(&[("/a", Route::body("x"))]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    env.job.files[0].remote_name = format!("http://127.0.0.1:{port}/a");
    assert_eq!(env.run().await.state, JobState::TransientError);
    assert_eq!(env.error().unwrap().1, ErrorContext::GeneralTransport);
}

#[tokio::test]
async fn a_local_write_failure_is_fatal_and_keeps_nothing_at_local() {
    let mut env = Env::new(&[("/a", Route::body(body(1000)))]);
    let missing = env.dir.path().join("gone/f0");
    env.job.files[0].local_name = missing.clone();
    env.job.files[0].temp_name = missing.with_file_name(".f0.tmp");
    assert_eq!(env.run().await.state, JobState::Error);
    assert_eq!(env.error(), Some((0x8007_0002, ErrorContext::LocalFile, Some(0))));
    assert!(!missing.exists());
}
