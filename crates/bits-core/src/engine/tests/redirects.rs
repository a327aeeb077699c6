//! Every redirect rule of the job's policy.

use super::*;

const STATUSES: [u16; 6] = [300, 301, 302, 303, 307, 308];

#[tokio::test]
async fn every_redirect_status_under_every_policy() {
    for status in STATUSES {
        // SILENT: follows, remote name unchanged.
        let mut f = Fixture::new(1);
        let s = Scripted::new(vec![redirect(status, "http://g/final"), ok(b"x")]);
        assert_eq!(run(&s, &mut f).await.state, JobState::Transferred, "{status}");
        assert_eq!(s.urls(), ["http://h/f0", "http://g/final"]);
        assert_eq!(f.job.files[0].remote_name, "http://h/f0");

        // REPORT: follows, remote name is the final URL.
        let mut f = Fixture::new(1).flags(0x100);
        let s = Scripted::new(vec![
            redirect(status, "http://g/mid"),
            redirect(302, "/final"),
            ok(b"x"),
        ]);
        assert_eq!(run(&s, &mut f).await.state, JobState::Transferred, "{status}");
        assert_eq!(f.job.files[0].remote_name, "http://g/final");

        // DISALLOW: ERROR with HRESULT_FROM_WIN32(status), remote name is the target.
        let mut f = Fixture::new(1).flags(0x200);
        let s = Scripted::new(vec![redirect(status, "http://g/final")]);
        let out = run(&s, &mut f).await;
        assert_eq!(
            out,
            RunOutcome {
                state: JobState::Error,
                retry_after: None
            },
            "{status}"
        );
        assert_eq!(f.code(), Some(0x8007_0000 | u32::from(status)));
        let e = f.job.error.as_ref().unwrap();
        assert_eq!((e.context, e.file_index), (ErrorContext::RemoteFile, Some(0)));
        assert_eq!(f.job.files[0].remote_name, "http://g/final");
        assert!(!f.temp(0).exists());
    }
}

#[tokio::test]
async fn a_3xx_without_location_is_an_http_error() {
    for status in [300, 301, 302, 303, 304, 307, 308] {
        let mut f = Fixture::new(1);
        let s = Scripted::new(vec![resp(status, &[], &[])]);
        assert_eq!(run(&s, &mut f).await.state, JobState::Error);
        assert_eq!(f.code(), Some(0x8019_0000 | u32::from(status)));
    }
    // 304 and 305 are never redirects, Location or not.
    let mut f = Fixture::new(1);
    let s = Scripted::new(vec![redirect(305, "http://g/")]);
    run(&s, &mut f).await;
    assert_eq!(f.code(), Some(0x8019_0131));
}

#[tokio::test]
async fn relative_locations_resolve_against_the_current_url() {
    let mut f = Fixture::new(1).url("http://h/dir/file").flags(0x100);
    let s = Scripted::new(vec![
        redirect(301, "../other/x?y=1"),
        redirect(302, "z"),
        ok(b"x"),
    ]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(
        s.urls(),
        ["http://h/dir/file", "http://h/other/x?y=1", "http://h/other/z"]
    );
    assert_eq!(f.job.files[0].remote_name, "http://h/other/z");
}

#[tokio::test]
async fn https_to_http_needs_0x800() {
    for (bits, state, code) in [
        (0x000, JobState::Error, Some(0x8007_2F7C)),
        (0x100, JobState::Error, Some(0x8007_2F7C)),
        (0x800, JobState::Transferred, None),
        (0x900, JobState::Transferred, None),
        (0xA00, JobState::Error, Some(0x8007_012E)),
    ] {
        let mut f = Fixture::new(1).url("https://h/f").flags(bits);
        let s = Scripted::new(vec![redirect(302, "http://h/f"), ok(b"x")]);
        assert_eq!(run(&s, &mut f).await.state, state, "{bits:#x}");
        assert_eq!(f.code(), code, "{bits:#x}");
        let expected = if matches!(bits, 0x900 | 0xA00) {
            "http://h/f"
        } else {
            "https://h/f"
        };
        assert_eq!(f.job.files[0].remote_name, expected);
    }
    // http → https is always fine.
    let mut f = Fixture::new(1);
    let s = Scripted::new(vec![redirect(301, "https://h/f"), ok(b"x")]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
}

#[tokio::test]
async fn other_schemes_are_always_refused() {
    for bits in [0x000, 0x100, 0x200, 0x800] {
        for target in ["ftp://h/f", "file:///etc/passwd", "smb://h/share"] {
            let mut f = Fixture::new(1).flags(bits);
            let s = Scripted::new(vec![redirect(302, target)]);
            assert_eq!(run(&s, &mut f).await.state, JobState::Error);
            assert_eq!(f.code(), Some(0x8007_2F7C), "{target} {bits:#x}");
            assert_eq!(f.job.files[0].remote_name, "http://h/f0");
        }
    }
}

#[tokio::test]
async fn at_most_ten_hops() {
    let chain = |n: usize| {
        let mut v: Vec<_> = (0..n).map(|k| redirect(302, &format!("/hop{k}"))).collect();
        v.push(ok(b"x"));
        v
    };
    let mut f = Fixture::new(1);
    let s = Scripted::new(chain(10));
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.urls().len(), 11);

    let mut f = Fixture::new(1);
    let s = Scripted::new(chain(11));
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    assert_eq!(f.code(), Some(0x8007_2F7C));
    assert_eq!(s.urls().len(), 11);
}

#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    let extra = headers(&[
        ("authorization", "Basic c2VjcmV0"),
        ("cookie", "s=1"),
        ("user-agent", "t/1"),
    ]);
    let mut f = Fixture::new(1).flags(0x800);
    let s = Scripted::with(
        vec![
            redirect(302, "/same"),
            redirect(302, "http://h:8080/port"),
            redirect(302, "http://other/x"),
            redirect(302, "https://h/scheme"),
            redirect(302, "http://h/back"),
            ok(b"x"),
        ],
        EngineOptions::default(),
        extra,
    );
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    let sent: Vec<_> = (0..6)
        .map(|n| s.header(n, AUTHORIZATION.as_str()).is_some())
        .collect();
    assert_eq!(sent, [true, true, false, false, false, true]);
    let cookies: Vec<_> = (0..6).map(|n| s.header(n, "cookie").is_some()).collect();
    assert_eq!(cookies, sent);
    assert!((0..6).all(|n| s.header(n, USER_AGENT.as_str()).as_deref() == Some("t/1")));
}

#[tokio::test]
async fn range_headers_follow_redirects() {
    let mut f = Fixture::new(1);
    std::fs::write(f.temp(0), b"abcd").unwrap();
    f.job.files[0].validator = Some("\"v1\"".into());
    let s = Scripted::new(vec![
        redirect(307, "http://g/f"),
        resp(
            206,
            &[("content-range", "bytes 4-5/6"), ("etag", "\"v1\"")],
            &[b"ef"],
        ),
    ]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.header(1, "range").as_deref(), Some("bytes=4-"));
    assert_eq!(s.header(1, "if-range").as_deref(), Some("\"v1\""));
    assert_eq!(read(&f.temp(0)), b"abcdef");
}
