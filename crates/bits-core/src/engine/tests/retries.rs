//! Transient and fatal failures, retry delays and timeouts.

use super::*;

#[tokio::test]
async fn transient_statuses_retry_after_the_longer_of_min_delay_and_retry_after() {
    for status in [408, 429, 500, 502, 503, 504] {
        for (retry_after, min, expected) in [(None, 600, 600), (Some("900"), 600, 900), (Some("10"), 60, 60)]
        {
            let mut f = Fixture::new(1);
            f.job.set_min_retry_delay(min).unwrap();
            let list: Vec<(&str, &str)> = retry_after.map(|r| ("retry-after", r)).into_iter().collect();
            let s = Scripted::new(vec![resp(status, &list, &[])]);
            let out = run(&s, &mut f).await;
            assert_eq!(
                out,
                RunOutcome {
                    state: JobState::TransientError,
                    retry_after: Some(Duration::from_secs(expected))
                },
                "{status} {retry_after:?}"
            );
            assert_eq!(f.code(), Some(0x8019_0000 | u32::from(status)));
            assert!(f.job.no_progress_since.is_some());
        }
    }
}

#[tokio::test]
async fn transport_failures_are_transient() {
    for (e, code) in [
        (
            BitsError::CannotConnect {
                host: "h:80".into(),
                reason: "refused".into(),
            },
            0x8007_2EFD,
        ),
        (
            BitsError::ConnectionReset {
                reason: "reset".into(),
            },
            0x8007_2EFE,
        ),
        (
            BitsError::Timeout {
                what: "headers".into(),
            },
            0x8007_2EE2,
        ),
        (BitsError::NameNotResolved { host: "h".into() }, 0x8007_2EE7),
    ] {
        let mut f = Fixture::new(1);
        let s = Scripted::new(vec![Err(e)]);
        let out = run(&s, &mut f).await;
        assert_eq!(out.state, JobState::TransientError);
        assert_eq!(out.retry_after, Some(Duration::from_secs(600)));
        let err = f.job.error.as_ref().unwrap();
        assert_eq!(
            (err.code.0, err.context, err.file_index),
            (code, ErrorContext::GeneralTransport, Some(0))
        );
    }
}

#[tokio::test]
async fn zero_no_progress_timeout_makes_transient_errors_fatal() {
    let mut f = Fixture::new(1);
    f.job.set_no_progress_timeout(0).unwrap();
    let s = Scripted::new(vec![resp(503, &[("retry-after", "1")], &[])]);
    assert_eq!(
        run(&s, &mut f).await,
        RunOutcome {
            state: JobState::Error,
            retry_after: None
        }
    );
    assert_eq!(f.code(), Some(0x8019_01F7));
}

#[tokio::test]
async fn fatal_statuses_and_errors_carry_the_file_index() {
    for status in [400, 401, 403, 404, 410, 501] {
        let mut f = Fixture::new(2);
        let s = Scripted::new(vec![ok(b"one"), resp(status, &[("retry-after", "5")], &[])]);
        assert_eq!(
            run(&s, &mut f).await,
            RunOutcome {
                state: JobState::Error,
                retry_after: None
            }
        );
        let e = f.job.error.as_ref().unwrap();
        assert_eq!(
            (e.code.0, e.context, e.file_index),
            (0x8019_0000 | u32::from(status), ErrorContext::RemoteFile, Some(1))
        );
        assert!(f.job.files[0].completed && !f.job.files[1].completed);
    }
    let mut f = Fixture::new(1);
    let s = Scripted::new(vec![Err(BitsError::UnknownCa)]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    assert_eq!(f.code(), Some(0x8007_2F0D));
}

#[tokio::test(start_paused = true)]
async fn run_until_settled_retries_transient_errors() {
    let mut f = Fixture::new(1);
    f.job.set_min_retry_delay(5).unwrap();
    let s = Scripted::new(vec![
        resp(503, &[("retry-after", "30")], &[]),
        Err(BitsError::ConnectionReset { reason: "r".into() }),
        ok(b"done"),
    ]);
    let mut rec = Recorder::default();
    let started = tokio::time::Instant::now();
    let out = s.engine.run_until_settled(&mut f.job, &mut rec).await;
    assert_eq!(out.state, JobState::Transferred);
    assert_eq!(started.elapsed(), Duration::from_secs(35));
    assert_eq!(read(&f.temp(0)), b"done");
    assert!(rec.states.contains(&JobState::TransientError) && rec.states.contains(&JobState::Queued));
}

#[tokio::test(start_paused = true)]
async fn run_until_settled_stops_on_fatal_errors() {
    let mut f = Fixture::new(1);
    let s = Scripted::new(vec![resp(404, &[], &[])]);
    assert_eq!(
        s.engine
            .run_until_settled(&mut f.job, &mut NoObserver)
            .await
            .state,
        JobState::Error
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_body_times_out_and_keeps_its_bytes() {
    let mut f = Fixture::new(1);
    let options = EngineOptions {
        read_timeout: Duration::from_secs(7),
        ..EngineOptions::default()
    };
    let s = Scripted::with(vec![], options, HeaderMap::new());
    let mut t = MockTransport::new();
    t.expect_check_policy().returning(|_| Ok(()));
    t.expect_send().times(1).returning(|_| {
        Ok(Response {
            status: 200,
            headers: headers(&[("content-length", "10")]),
            version: http::Version::HTTP_11,
            body: Box::new(HangingBody(VecDeque::from([Bytes::from_static(b"abc")]))),
        })
    });
    let engine = Engine::with_options(Arc::new(t), s.engine.options().clone());
    let out = engine.run(&mut f.job, &mut NoObserver).await;
    assert_eq!(out.state, JobState::TransientError);
    assert_eq!(f.code(), Some(0x8007_2EE2));
    assert_eq!(read(&f.temp(0)), b"abc");
    assert_eq!(f.job.files[0].bytes_transferred, 3);
}
