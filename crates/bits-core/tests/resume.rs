//! Resume by Range against a real HTTP/1.1 server: 206 append, a server
//! that ignores Range, changed content, truncated bodies, the CRL restart.

mod support;

use bits_core::{JobState, SecurityFlags, Transport};
use support::*;

#[tokio::test]
async fn downloads_into_temp_files_and_never_touches_local() {
    let a = body(300_000);
    let mut env = Env::new(&[
        ("/a", Route::body(a.clone()).etag("\"a1\"")),
        ("/b", Route::body("tiny")),
    ]);
    let out = env.run().await;
    assert_eq!((out.state, out.retry_after), (JobState::Transferred, None));
    assert_eq!(read(&env.temp(0)), a);
    assert_eq!(read(&env.temp(1)), b"tiny");
    assert!(!env.local(0).exists() && !env.local(1).exists());
    assert_eq!(env.job.bytes_total(), Some(300_004));
    assert_eq!(env.job.files[0].validator.as_deref(), Some("\"a1\""));
    assert_eq!(env.ranges("/a"), [None]);
    assert_counters_match_disk(&env.job);
}

#[tokio::test]
async fn resumes_from_the_bytes_on_disk_with_range_and_if_range() {
    let a = body(200_000);
    let mut env = Env::new(&[("/a", Route::body(a.clone()).etag("\"a1\""))]);
    std::fs::write(env.temp(0), &a[..70_000]).unwrap();
    // A killed daemon recorded fewer bytes than reached the disk.
    env.job.files[0].bytes_transferred = 50_000;
    env.job.files[0].validator = Some("\"a1\"".into());
    assert_eq!(env.run().await.state, JobState::Transferred);
    let reqs = env.server.requests_for("/a");
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].range(), reqs[0].if_range()),
        (Some("bytes=70000-"), Some("\"a1\""))
    );
    assert_eq!(env.server.bytes_sent(), 130_000);
    assert_eq!(read(&env.temp(0)), a);
}

#[tokio::test]
async fn a_server_that_ignores_range_restarts_the_file() {
    let a = body(50_000);
    let mut env = Env::new(&[("/a", Route::body(a.clone()).ignore_range())]);
    std::fs::write(env.temp(0), b"stale bytes from another life").unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(env.ranges("/a"), [Some("bytes=29-".to_string())]);
    assert_eq!(read(&env.temp(0)), a);
    assert!(env.job.error.is_none());
}

#[tokio::test]
async fn changed_content_restarts_the_file() {
    let new = body(80_000);
    // ETag, then Last-Modified as the validator.
    for (route, stored) in [
        (Route::body(new.clone()).etag("\"v2\""), "\"v1\""),
        (
            Route::body(new.clone()).last_modified("Thu, 26 Nov 2026 05:00:00 GMT"),
            "Wed, 25 Nov 2026 05:00:00 GMT",
        ),
    ] {
        let mut env = Env::new(&[("/a", route)]);
        std::fs::write(env.temp(0), vec![0xEE; 30_000]).unwrap();
        env.job.files[0].validator = Some(stored.into());
        assert_eq!(env.run().await.state, JobState::Transferred);
        let reqs = env.server.requests_for("/a");
        assert_eq!(reqs[0].if_range(), Some(stored));
        assert_eq!(read(&env.temp(0)), new);
        assert_ne!(env.job.files[0].validator.as_deref(), Some(stored));
    }
}

#[tokio::test]
async fn content_changed_between_runs_is_detected_by_if_range() {
    let v1 = body(100_000);
    let mut v2 = body(100_000);
    v2.reverse();
    let mut env = Env::new(&[(
        "/a",
        Route::body(v1.clone()).etag("\"v1\"").truncate_first(1, 40_000),
    )]);
    assert_eq!(env.run().await.state, JobState::TransientError);
    assert_counters_match_disk(&env.job);
    env.server.set("/a", Route::body(v2.clone()).etag("\"v2\""));
    assert_eq!(env.retry().await.state, JobState::Transferred);
    assert_eq!(read(&env.temp(0)), v2);
}

#[tokio::test]
async fn a_truncated_body_is_kept_and_resumed() {
    let a = body(500_000);
    let mut env = Env::new(&[(
        "/a",
        Route::body(a.clone()).etag("\"a\"").truncate_first(1, 123_456),
    )]);
    let out = env.run().await;
    assert_eq!(out.state, JobState::TransientError);
    assert_eq!(env.error().unwrap().0, 0x8007_2EFE);
    let kept = env.job.files[0].bytes_transferred;
    assert!(kept > 0 && kept <= 123_456, "{kept}");
    assert_counters_match_disk(&env.job);
    assert_eq!(read(&env.temp(0))[..], a[..kept as usize]);

    assert_eq!(env.retry().await.state, JobState::Transferred);
    assert_eq!(env.ranges("/a")[1].as_deref(), Some(&*format!("bytes={kept}-")));
    assert_eq!(read(&env.temp(0)), a);
}

#[tokio::test]
async fn a_file_already_whole_on_disk_is_not_downloaded_again() {
    let a = body(10_000);
    let mut env = Env::new(&[("/a", Route::body(a.clone()).etag("\"a\""))]);
    std::fs::write(env.temp(0), &a).unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(env.server.bytes_sent(), 0);
    assert_eq!(env.job.files[0].bytes_total, Some(10_000));
}

#[tokio::test]
async fn chunked_bodies_get_their_size_at_the_end() {
    let a = body(150_000);
    let mut env = Env::new(&[("/a", Route::body(a.clone()).chunked())]);
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(env.job.files[0].bytes_total, Some(150_000));
    assert_eq!(read(&env.temp(0)), a);
}

#[tokio::test]
async fn enabling_crl_check_part_way_restarts_only_the_partial_file() {
    let (a, b) = (body(40_000), body(90_000));
    let mut env = Env::new(&[
        ("/a", Route::body(a.clone()).etag("\"a\"")),
        (
            "/b",
            Route::body(b.clone()).etag("\"b\"").truncate_first(1, 30_000),
        ),
    ]);
    assert_eq!(env.run().await.state, JobState::TransientError);
    assert!(env.job.files[0].completed);
    assert!(env.job.files[1].bytes_transferred > 0);

    let transport = bits_http::PlainHttp::new();
    env.job
        .set_security_flags(SecurityFlags::new(0x0001).unwrap(), |p| transport.check_policy(p))
        .unwrap();
    assert!(env.job.files[1].restart && !env.job.files[0].restart);
    assert_eq!(env.retry().await.state, JobState::Transferred);

    assert_eq!(
        env.server.requests_for("/a").len(),
        1,
        "the finished file is not touched"
    );
    assert_eq!(
        env.ranges("/b"),
        [None, None],
        "the partial file starts again from byte 0"
    );
    assert_eq!((read(&env.temp(0)), read(&env.temp(1))), (a, b));
    assert!(!env.job.files[1].restart);
}
