//! The shared CRL cache against a real CRL server on 127.0.0.1, with a
//! stand-in backend whose "CRLs" are `FAKECRL <issuer> <thisUpdate>
//! <nextUpdate>` lines (the real parsers are the backends' business).

use std::sync::Arc;
use std::time::Duration;

use bits_http::crl_cache::{
    crl_rounds, now_unix, write_atomically, CrlCache, CrlIssuer, CrlRequest, CrlRound, CrlWindow,
    HandshakeFailure,
};
use bits_testkit::crl::CrlServer;

/// A parsed fake CRL.
#[derive(Debug, PartialEq, Eq)]
struct FakeCrl {
    issuer: String,
    window: CrlWindow,
}

/// The issuer `name`, accepting fake CRLs that name it.
struct Issuer(&'static str);

impl CrlIssuer for Issuer {
    type Crl = FakeCrl;

    fn parse(&self, bytes: &[u8]) -> Result<FakeCrl, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not text")?;
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            ["FAKECRL", issuer, this, next] => Ok(FakeCrl {
                issuer: (*issuer).to_owned(),
                window: CrlWindow {
                    this_update: this.parse().map_err(|_| "bad thisUpdate")?,
                    next_update: Some(next.parse().map_err(|_| "bad nextUpdate")?),
                },
            }),
            _ => Err("not a CRL".to_owned()),
        }
    }

    fn verify(&self, crl: &FakeCrl) -> Result<CrlWindow, String> {
        if crl.issuer == self.0 {
            Ok(crl.window)
        } else {
            Err(format!("issued by someone other than {}", self.0))
        }
    }

    fn to_der(&self, crl: &FakeCrl) -> Result<Vec<u8>, String> {
        let w = crl.window;
        Ok(format!(
            "FAKECRL {} {} {}",
            crl.issuer,
            w.this_update,
            w.next_update.unwrap_or(0)
        )
        .into_bytes())
    }
}

fn fresh_crl(issuer: &str) -> Vec<u8> {
    let now = now_unix();
    format!("FAKECRL {issuer} {} {}", now - 3600, now + 86_400).into_bytes()
}

fn stale_crl(issuer: &str) -> Vec<u8> {
    let now = now_unix();
    format!("FAKECRL {issuer} {} {}", now - 7200, now - 3600).into_bytes()
}

fn cache(dir: &tempfile::TempDir) -> CrlCache<FakeCrl> {
    CrlCache::new(dir.path().to_owned(), Duration::from_secs(10))
}

fn request<'a>(urls: &'a [String], issuer: &'static str) -> CrlRequest<'a, Issuer> {
    CrlRequest {
        subject: "CN=leaf",
        urls,
        issuer: Some(Issuer(issuer)),
        required: true,
    }
}

#[tokio::test]
async fn a_fresh_crl_is_used_from_memory_then_disk_without_downloading_again() {
    let server = CrlServer::start();
    // Made once: a CRL made again a second later differs (its dates).
    let served = fresh_crl("root");
    server.set("/root.crl", served.clone());
    let urls = vec![server.url("/root.crl")];
    let dir = tempfile::tempdir().unwrap();

    let first = cache(&dir);
    assert_eq!(first.obtain(&[request(&urls, "root")], &[]).await, Ok(true));
    assert_eq!(server.requests("/root.crl"), 1);
    assert_eq!(std::fs::read(first.path_for(&urls[0])).unwrap(), served);
    let fresh = first.fresh();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].url, urls[0]);

    // From memory: nothing new, nothing downloaded.
    assert_eq!(first.obtain(&[request(&urls, "root")], &urls).await, Ok(false));
    // From disk, in another cache (another process, another backend).
    let second = cache(&dir);
    assert_eq!(second.obtain(&[request(&urls, "root")], &[]).await, Ok(true));
    assert_eq!(server.requests("/root.crl"), 1);
    assert_eq!(second.fresh().len(), 1);
}

#[tokio::test]
async fn a_stale_cached_crl_is_downloaded_again() {
    let server = CrlServer::start();
    let served = fresh_crl("root");
    server.set("/root.crl", served.clone());
    let urls = vec![server.url("/root.crl")];
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    std::fs::write(cache.path_for(&urls[0]), stale_crl("root")).unwrap();

    assert_eq!(cache.obtain(&[request(&urls, "root")], &[]).await, Ok(true));
    assert_eq!(server.requests("/root.crl"), 1);
    assert_eq!(std::fs::read(cache.path_for(&urls[0])).unwrap(), served);
}

#[tokio::test]
async fn an_invalid_crl_is_never_cached() {
    let server = CrlServer::start();
    let urls = vec![server.url("/root.crl")];
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    for (bytes, why) in [
        (stale_crl("root"), "stale"),
        (fresh_crl("someone-else"), "someone other"),
        (b"garbage".to_vec(), "not a CRL"),
    ] {
        server.set("/root.crl", bytes);
        let err = cache.obtain(&[request(&urls, "root")], &[]).await.unwrap_err();
        assert!(err.contains(why), "{err}");
        assert!(!cache.path_for(&urls[0]).exists(), "{why}: cached on disk");
        assert!(cache.fresh().is_empty(), "{why}: kept in memory");
    }
    // Each attempt downloaded again: nothing was remembered.
    assert_eq!(server.requests("/root.crl"), 3);
    server.set_status("/root.crl", 404);
    assert!(cache.obtain(&[request(&urls, "root")], &[]).await.is_err());
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn a_crl_on_disk_is_verified_again() {
    let server = CrlServer::start();
    server.set("/root.crl", fresh_crl("root"));
    let urls = vec![server.url("/root.crl")];
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    std::fs::write(cache.path_for(&urls[0]), fresh_crl("someone-else")).unwrap();
    assert_eq!(cache.obtain(&[request(&urls, "root")], &[]).await, Ok(true));
    assert_eq!(server.requests("/root.crl"), 1);
}

#[tokio::test]
async fn the_next_cdp_is_tried_and_best_effort_requests_do_not_fail() {
    let server = CrlServer::start();
    server.set("/b.crl", fresh_crl("root"));
    let urls = vec![server.url("/a.crl"), server.url("/b.crl")];
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    assert_eq!(cache.obtain(&[request(&urls, "root")], &[]).await, Ok(true));
    assert_eq!(server.requests("/a.crl"), 1);

    let none: Vec<String> = Vec::new();
    let optional = CrlRequest {
        subject: "CN=int",
        urls: &none,
        issuer: Some(Issuer("root")),
        required: false,
    };
    assert_eq!(cache.obtain(&[optional], &urls[1..]).await, Ok(false));
    let orphan = CrlRequest {
        subject: "CN=int",
        urls: &urls,
        issuer: None::<Issuer>,
        required: true,
    };
    let err = cache.obtain(&[orphan], &[]).await.unwrap_err();
    assert!(err.contains("not in the chain"), "{err}");
    let err = cache.obtain(&[request(&none, "root")], &[]).await.unwrap_err();
    assert!(err.contains("names no http CRL distribution point"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_download_once() {
    let server = CrlServer::start();
    server.set("/root.crl", fresh_crl("root"));
    let urls = Arc::new(vec![server.url("/root.crl")]);
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(cache(&dir));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, urls) = (Arc::clone(&cache), Arc::clone(&urls));
            tokio::spawn(async move { cache.obtain(&[request(&urls, "root")], &[]).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(true));
    }
    assert_eq!(server.requests("/root.crl"), 1);
}

#[tokio::test]
async fn writes_are_atomic_and_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("x.crl");
    write_atomically(&path, b"one").await.unwrap();
    write_atomically(&path, b"two").await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let names = |d: &std::path::Path| -> Vec<_> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert_eq!(names(path.parent().unwrap()), ["x.crl"]);

    // The rename fails (a directory is in the way): the old content stays
    // and the temporary file is removed.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(blocked.join("inside")).unwrap();
    assert!(write_atomically(&blocked, b"new").await.is_err());
    let mut left = names(dir.path());
    left.sort();
    assert_eq!(left, ["blocked", "sub"]);
    assert_eq!(names(&blocked), ["inside"]);
}

#[tokio::test]
async fn crl_rounds_reconnect_after_each_retry_and_give_up_after_the_last() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    let got = crl_rounds(tcp, Duration::from_secs(10), |tcp, n| {
        seen.push((n, tcp.peer_addr().unwrap()));
        async move {
            if n < 1 {
                CrlRound::Retry
            } else {
                CrlRound::Connected(n)
            }
        }
    })
    .await;
    assert_eq!(got.unwrap(), 1);
    assert_eq!(seen, [(0, addr), (1, addr)]);

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = crl_rounds(tcp, Duration::from_secs(10), |_, _| async {
        CrlRound::<()>::Retry
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, bits_core::BitsError::CertRevocationFailed { .. }),
        "{err}"
    );
    accepts.abort();
}

/// A handshake failure that lacked the CRLs `needs` (URLs).
struct FakeFailure {
    needs: Vec<&'static str>,
}

impl HandshakeFailure for FakeFailure {
    type CrlNeed = &'static str;

    fn take_crl_needs(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.needs)
    }

    fn into_error(self) -> bits_core::BitsError {
        bits_core::BitsError::CertCnInvalid
    }
}

#[tokio::test]
async fn after_handshake_obtains_only_what_a_failed_handshake_lacked() {
    /// `handshake`, then `obtain` (when asked) saying `obtained`: the round,
    /// as text, and what `obtain` was asked for.
    async fn check(
        handshake: Result<u8, &[&'static str]>,
        obtained: Result<bool, &str>,
        expected: &str,
        expected_asked: Option<&[&str]>,
    ) {
        let mut asked = None;
        let result = handshake.map_err(|needs| FakeFailure {
            needs: needs.to_vec(),
        });
        let round = CrlRound::after_handshake(result, "host", 0, async |needs: &[&'static str]| {
            asked = Some(needs.to_vec());
            obtained.map_err(str::to_owned)
        })
        .await;
        let got = match round {
            CrlRound::Connected(n) => format!("connected {n}"),
            CrlRound::Retry => "retry".to_owned(),
            CrlRound::Fail(e) => format!("fail {:#010X}", e.hresult().0),
        };
        assert_eq!(got, expected, "{handshake:?} {obtained:?}");
        assert_eq!(asked.as_deref(), expected_asked, "{handshake:?} {obtained:?}");
    }
    let needs: &[&str] = &["http://ca/root.crl"];
    check(Ok(7), Ok(true), "connected 7", None).await;
    // A failure for any other reason than CRLs is the handshake's own error.
    check(Err(&[]), Ok(true), "fail 0x80072F06", None).await;
    check(Err(needs), Ok(true), "retry", Some(needs)).await;
    // Nothing new: the handshake's own error.
    check(Err(needs), Ok(false), "fail 0x80072F06", Some(needs)).await;
    // A CRL that cannot be had: revocation check failed.
    check(Err(needs), Err("down"), "fail 0x80072F19", Some(needs)).await;
}
