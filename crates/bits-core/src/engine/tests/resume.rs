//! Resume decisions: Range and If-Range, restarts, short and long bodies.

use super::*;

#[tokio::test]
async fn resumes_with_range_and_if_range() {
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"0123").unwrap();
    // The store recorded fewer bytes than the disk holds: the disk wins.
    f.job.files[0].bytes_transferred = 2;
    f.job.files[0].validator = Some("\"v1\"".into());
    let s = Scripted::new(vec![resp(
        206,
        &[("content-range", "bytes 4-9/10"), ("etag", "\"v1\"")],
        &[b"45", b"6789"],
    )]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.header(0, "range").as_deref(), Some("bytes=4-"));
    assert_eq!(s.header(0, "if-range").as_deref(), Some("\"v1\""));
    assert_eq!(read(&f.temp(0)), b"0123456789");
    assert_eq!(
        (f.job.files[0].bytes_total, f.job.files[0].bytes_transferred),
        (Some(10), 10)
    );
}

#[tokio::test]
async fn if_range_uses_last_modified_and_never_a_weak_etag() {
    for (validator, if_range) in [
        (
            "Tue, 15 Nov 1994 08:12:31 GMT",
            Some("Tue, 15 Nov 1994 08:12:31 GMT"),
        ),
        ("W/\"weak\"", None),
    ] {
        let mut f = Fixture::new(1);
        std::fs::write(f.temp(0), b"ab").unwrap();
        f.job.files[0].validator = Some(validator.into());
        let s = Scripted::new(vec![resp(206, &[("content-range", "bytes 2-2/3")], &[b"c"])]);
        assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
        assert_eq!(s.header(0, "if-range").as_deref(), if_range);
        assert_eq!(read(&f.temp(0)), b"abc");
    }
}

#[tokio::test]
async fn a_200_to_a_range_request_restarts_from_zero() {
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"OLDOLD").unwrap();
    f.job.files[0].validator = Some("\"v0\"".into());
    let s = Scripted::new(vec![ok(b"new content")]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(read(&f.temp(0)), b"new content");
    assert_eq!(f.job.files[0].validator.as_deref(), Some("\"v1\""));
    assert!(f.job.error.is_none());
}

#[tokio::test]
async fn bytes_on_disk_without_a_recorded_validator_restart_when_the_server_names_one() {
    // A daemon killed before it saved the file's headers: the temp file has
    // bytes but the job knows no validator. The server's 206 names one, so
    // whether the bytes on disk belong to it cannot be proven: start again.
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"old").unwrap();
    let s = Scripted::new(vec![
        resp(
            206,
            &[("content-range", "bytes 3-5/6"), ("etag", "\"v2\"")],
            &[b"NEW"],
        ),
        resp(200, &[("etag", "\"v2\"")], &[b"abcNEW"]),
    ]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.header(0, "range").as_deref(), Some("bytes=3-"));
    assert_eq!(s.header(1, "range"), None);
    assert_eq!(read(&f.temp(0)), b"abcNEW");
    // A server that names no validator at all is trusted to continue.
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"abc").unwrap();
    let s = Scripted::new(vec![resp(206, &[("content-range", "bytes 3-5/6")], &[b"NEW"])]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(read(&f.temp(0)), b"abcNEW");
}

#[tokio::test]
async fn a_changed_validator_or_size_restarts_from_zero() {
    for (list, stored_total) in [
        (
            vec![("content-range", "bytes 3-5/6"), ("etag", "\"v2\"")],
            Some(6),
        ),
        (
            vec![
                ("content-range", "bytes 3-5/6"),
                ("last-modified", "Wed, 16 Nov 1994 08:12:31 GMT"),
            ],
            None,
        ),
        (vec![("content-range", "bytes 3-5/6")], Some(99)),
        (vec![("content-range", "bytes 0-5/6")], None),
    ] {
        let mut f = Fixture::new(1);
        std::fs::write(f.temp(0), b"old").unwrap();
        let lm = list.iter().any(|(k, _)| *k == "last-modified");
        f.job.files[0].validator = Some(
            if lm {
                "Tue, 15 Nov 1994 08:12:31 GMT"
            } else {
                "\"v1\""
            }
            .into(),
        );
        f.job.files[0].bytes_total = stored_total;
        let s = Scripted::new(vec![resp(206, &list, &[b"XYZ"]), ok(b"fresh!")]);
        assert_eq!(run(&s, &mut f).await.state, JobState::Transferred, "{list:?}");
        assert_eq!(s.header(1, "range"), None);
        assert_eq!(read(&f.temp(0)), b"fresh!");
    }
}

#[tokio::test]
async fn a_416_at_the_full_size_means_the_file_is_whole() {
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"whole").unwrap();
    let s = Scripted::new(vec![resp(416, &[("content-range", "bytes */5")], &[])]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(
        (f.job.files[0].completed, f.job.files[0].bytes_total),
        (true, Some(5))
    );
    // A 416 at another size restarts the file.
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"too long").unwrap();
    let s = Scripted::new(vec![
        resp(416, &[("content-range", "bytes */5")], &[]),
        ok(b"short"),
    ]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(read(&f.temp(0)), b"short");
}

#[tokio::test]
async fn a_shorter_206_asks_for_the_rest() {
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"ab").unwrap();
    let s = Scripted::new(vec![
        resp(206, &[("content-range", "bytes 2-3/6")], &[b"cd"]),
        resp(206, &[("content-range", "bytes 4-5/6")], &[b"ef"]),
    ]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.header(1, "range").as_deref(), Some("bytes=4-"));
    assert_eq!(read(&f.temp(0)), b"abcdef");
}

#[tokio::test]
async fn the_restart_flag_truncates_first_and_is_cleared() {
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"partial").unwrap();
    f.job.files[0].restart = true;
    f.job.files[0].validator = Some("\"v1\"".into());
    let s = Scripted::new(vec![ok(b"again")]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.header(0, "range"), None);
    assert!(!f.job.files[0].restart);
    assert_eq!(read(&f.temp(0)), b"again");
}

#[tokio::test]
async fn a_body_that_ends_early_keeps_its_bytes_and_resumes() {
    for broken in [
        resp(200, &[("content-length", "10"), ("etag", "\"v1\"")], &[b"01234"]),
        Ok(Response {
            status: 200,
            headers: headers(&[("content-length", "10"), ("etag", "\"v1\"")]),
            version: http::Version::HTTP_11,
            body: Box::new(VecBody(VecDeque::from([
                Ok(Bytes::from_static(b"01234")),
                Err(BitsError::ConnectionReset { reason: "eof".into() }),
            ]))),
        }),
    ] {
        let mut f = Fixture::new(1);
        let s = Scripted::new(vec![
            broken,
            resp(
                206,
                &[("content-range", "bytes 5-9/10"), ("etag", "\"v1\"")],
                &[b"56789"],
            ),
        ]);
        assert_eq!(run(&s, &mut f).await.state, JobState::TransientError);
        assert_eq!(f.code(), Some(0x8007_2EFE));
        assert_eq!(read(&f.temp(0)), b"01234");
        assert_eq!(f.job.files[0].bytes_transferred, 5);
        f.job.apply(Event::RetryTimer);
        assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
        assert_eq!(s.header(1, "range").as_deref(), Some("bytes=5-"));
        assert_eq!(read(&f.temp(0)), b"0123456789");
    }
}

#[tokio::test]
async fn a_body_longer_than_announced_is_refused() {
    let mut f = Fixture::new(1);
    let s = Scripted::new(vec![resp(200, &[("content-length", "3")], &[b"ab", b"cd"])]);
    assert_eq!(run(&s, &mut f).await.state, JobState::TransientError);
    assert_eq!(f.code(), Some(0x8020_001B));
    assert!(f.job.files[0].bytes_transferred <= 3);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_run_leaves_counters_within_the_file() {
    let mut f = Fixture::new(1);
    let mut t = MockTransport::new();
    t.expect_check_policy().returning(|_| Ok(()));
    t.expect_send().returning(|_| {
        Ok(Response {
            status: 200,
            headers: headers(&[("content-length", "1000000")]),
            version: http::Version::HTTP_11,
            body: Box::new(HangingBody(VecDeque::from([
                Bytes::from(vec![1u8; 70_000]),
                Bytes::from(vec![2u8; 100]),
            ]))),
        })
    });
    let engine = sequential(Arc::new(t));
    let mut observer = NoObserver;
    let run = engine.run(&mut f.job, &mut observer);
    assert!(tokio::time::timeout(Duration::from_secs(1), run).await.is_err());
    let on_disk = std::fs::metadata(f.temp(0)).unwrap().len();
    assert!(f.job.files[0].bytes_transferred <= on_disk);
    assert_eq!(f.job.files[0].bytes_transferred, 70_000);
    // The bytes still buffered were written when the run was dropped.
    assert_eq!(on_disk, 70_100);
}

#[tokio::test]
async fn local_write_errors_are_fatal_local_file_errors() {
    let mut f = Fixture::new(1);
    let missing = f.dir.path().join("no/such/dir/f");
    f.job.files[0].local_name = missing.clone();
    f.job.files[0].temp_name = missing.with_file_name(".f.tmp");
    let s = Scripted::new(vec![ok(b"x")]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    let e = f.job.error.as_ref().unwrap();
    assert_eq!(
        (e.code.0, e.context, e.file_index),
        (0x8007_0002, ErrorContext::LocalFile, Some(0))
    );
}
