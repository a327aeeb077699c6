//! HTTP/2 by ALPN (`docs/spec/network.md`, "Many files, many
//! connections"), the same on every backend: the backend's handshake
//! offers `h2` and `http/1.1`, a server that chooses `h2` gets HTTP/2
//! (hyper's server, [`Alpn::H2`]), one that does not gets HTTP/1.1, and a
//! connection is still never shared by two policies (flags, client
//! certificates, routes), however many streams it could carry.
//!
//! Each case runs within [`DEADLINE`]. Run by
//! [`http2_tests!`](crate::http2_tests); the conformance matrix over
//! HTTP/2 is [`crate::backend::run_matrix_over`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bits_core::{
    BitsError, ConnectionPolicy, Engine, Job, JobState, JobType, NoObserver, Request, SecurityFlags,
    Transport, Version,
};
use bits_http::proxy::ProxyEnv;
use bits_http::TlsBackend;
use url::Url;

use crate::http::{HttpServer, Route};
use crate::pki::{LeafKind, TestPki};
use crate::proxies::RealProxy;
use crate::temp::TempDir;
use crate::tls::{https_server_with, Alpn, ClientAuth, MaxTls, MtlsServer, TlsServer};

/// How long one case may take, servers and proxies included.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `case`, panicking if it takes longer than [`DEADLINE`].
pub async fn within<F: Future<Output = ()>>(case: F) {
    tokio::time::timeout(DEADLINE, case)
        .await
        .unwrap_or_else(|_| panic!("the case took longer than {DEADLINE:?}"));
}

/// A file of `n` bytes that no two offsets share by accident.
fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect()
}

/// Larger than hyper's default HTTP/2 stream window (2 MiB), so the
/// download needs flow-control updates to land whole.
const LARGE: usize = 3 << 20;

/// An https server presenting [`TestPki::shared`]'s good leaf, answering
/// ALPN as `alpn` says, serving `/large` ([`LARGE`] bytes, with an ETag)
/// and `/small`.
fn origin(alpn: Alpn) -> HttpServer {
    https_server_with(TestPki::shared().leaf(LeafKind::Good), alpn)
        .with("/large", Route::body(body(LARGE)).etag("\"large\""))
        .with("/small", Route::body(body(1000)))
}

/// The policy of certificate `flags` and nothing else.
fn flags(bits: u32) -> ConnectionPolicy {
    ConnectionPolicy::new(SecurityFlags::new(bits).expect("a valid flag value"))
}

/// GETs `url` under `policy` and reads the whole body: the status, the
/// version that carried it and the body, or the failure's HRESULT.
pub async fn fetch<T: Transport + ?Sized>(
    t: &T,
    url: &str,
    policy: &ConnectionPolicy,
) -> Result<(u16, Version, Vec<u8>), u32> {
    let code = |e: BitsError| e.hresult().0;
    let url = Url::parse(url).expect("a URL");
    let mut response = t.send(Request::get(url, policy.clone())).await.map_err(code)?;
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await.map_err(code)? {
        body.extend_from_slice(&chunk);
    }
    Ok((response.status, response.version, body))
}

/// A download job of `paths` of `server` run by the real engine over
/// backend `B` (trusting the shared PKI); its files checked against
/// `bodies` when TRANSFERRED. Returns the job.
async fn download<B: TlsBackend>(server: &HttpServer, paths: &[(&str, Vec<u8>)]) -> Job {
    let engine = Engine::new(Arc::new(crate::backend::with_pki::<B>(TestPki::shared())));
    let dir = TempDir::new("http2");
    let mut job = Job::new("http2", JobType::Download, "testkit");
    for (n, (path, _)) in paths.iter().enumerate() {
        job.add_file(&server.url(path), &dir.path().join(format!("f{n}")))
            .expect("a file");
    }
    job.resume().expect("resumed");
    let out = engine.run(&mut job, &mut NoObserver).await;
    assert_eq!(out.state, JobState::Transferred, "{:?}", job.error);
    for (n, (file, (_, want))) in job.files.iter().zip(paths).enumerate() {
        let got = std::fs::read(&file.temp_name).expect("the temporary file");
        assert!(
            got == *want,
            "file {n}: {} bytes, not the {} served",
            got.len(),
            want.len()
        );
    }
    job
}

/// A job of eleven files (one larger than a stream's window) from an
/// origin that offers h2 lands whole over HTTP/2: each file records `h2`,
/// the server saw every request over h2 on one connection (the files in
/// flight at once shared it as streams), and a response says `HTTP/2.0`.
pub async fn a_download_over_h2_lands_whole_and_reports_h2<B: TlsBackend>() {
    let server = origin(Alpn::H2);
    let small: Vec<String> = (0..10).map(|k| format!("/small{k}")).collect();
    for path in &small {
        server.set(path, Route::body(body(1000)));
    }
    let mut files = vec![("/large", body(LARGE))];
    files.extend(small.iter().map(|p| (p.as_str(), body(1000))));
    let job = download::<B>(&server, &files).await;
    for file in &job.files {
        assert_eq!(file.protocol.as_deref(), Some("h2"), "{}", file.remote_name);
    }
    let requests = server.requests();
    assert!(requests.iter().all(|r| r.protocol == "h2"), "{requests:#?}");
    assert!(
        requests.iter().all(|r| r.connection == requests[0].connection),
        "{requests:#?}"
    );
    assert_eq!(server.handshakes_ok(), 1);

    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let (status, version, got) = fetch(&t, &server.url("/small"), &flags(0))
        .await
        .expect("a response");
    assert_eq!((status, version), (200, Version::HTTP_2));
    assert_eq!(got, body(1000));
}

/// Once an origin answered over h2, more files than the connection limit
/// (8) are in flight at once: streams of the one connection.
pub async fn many_small_files_over_h2_run_as_many_streams<B: TlsBackend>() {
    let server = origin(Alpn::H2);
    let paths: Vec<String> = (0..48).map(|k| format!("/s{k}")).collect();
    for path in &paths {
        server.set(path, Route::body(body(2000)).delay(Duration::from_millis(100)));
    }
    let files: Vec<(&str, Vec<u8>)> = paths.iter().map(|p| (p.as_str(), body(2000))).collect();
    download::<B>(&server, &files).await;
    assert!(
        server.max_in_flight() > 8,
        "{} streams at once",
        server.max_in_flight()
    );
    let requests = server.requests();
    assert!(requests.iter().all(|r| r.connection == requests[0].connection));
}

/// An origin that does not choose h2 (it ignores ALPN, or chooses
/// `http/1.1`) is spoken to over HTTP/1.1, and each file records
/// `http/1.1`.
pub async fn an_http1_server_is_spoken_to_over_http1<B: TlsBackend>() {
    for alpn in [Alpn::Ignore, Alpn::Http11] {
        let server = origin(alpn);
        let job = download::<B>(&server, &[("/large", body(LARGE)), ("/small", body(1000))]).await;
        for file in &job.files {
            assert_eq!(
                file.protocol.as_deref(),
                Some("http/1.1"),
                "{alpn:?} {}",
                file.remote_name
            );
        }
        let requests = server.requests();
        assert!(
            requests.iter().all(|r| r.protocol == "http/1.1"),
            "{alpn:?} {requests:#?}"
        );
        let t = crate::backend::with_pki::<B>(TestPki::shared());
        let (status, version, _) = fetch(&t, &server.url("/small"), &flags(0))
            .await
            .expect("a response");
        assert_eq!((status, version), (200, Version::HTTP_11), "{alpn:?}");
    }
}

/// A job of one file offers only `http/1.1`, so an origin that would
/// choose h2 speaks HTTP/1.1 to it (one stream gains nothing from HTTP/2:
/// `ConnectionPolicy::http1_only`), and the file records `http/1.1`. At
/// the transport, the two offers are two pool keys: requests of each,
/// sent one after another and then all at once, each came on a connection
/// of its own offer, carried by its own protocol.
pub async fn a_job_of_one_file_speaks_http1_on_connections_of_its_own<B: TlsBackend>() {
    let server = origin(Alpn::H2);
    let job = download::<B>(&server, &[("/large", body(LARGE))]).await;
    assert_eq!(job.files[0].protocol.as_deref(), Some("http/1.1"));
    let requests = server.requests();
    assert!(
        requests.len() == 1 && requests[0].protocol == "http/1.1",
        "{requests:#?}"
    );

    let server = origin(Alpn::H2);
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let (h2, h1) = (flags(0), flags(0).with_http1_only(true));
    let (url_h2, url_h1) = (server.url("/small?offer=h2"), server.url("/small?offer=h1"));
    assert_eq!(fetch(&t, &url_h1, &h1).await.map(|r| r.1), Ok(Version::HTTP_11));
    assert_eq!(fetch(&t, &url_h2, &h2).await.map(|r| r.1), Ok(Version::HTTP_2));
    assert_eq!(fetch(&t, &url_h1, &h1).await.map(|r| r.1), Ok(Version::HTTP_11));
    assert_eq!(
        t.http().connections_made(&h1),
        1,
        "an idle HTTP/1.1 connection is reused"
    );
    let mixed = (0..8).map(|n| {
        let (url, policy) = if n % 2 == 0 {
            (&url_h2, &h2)
        } else {
            (&url_h1, &h1)
        };
        fetch(&t, url, policy)
    });
    for (n, result) in join_all(mixed).await.into_iter().enumerate() {
        let want = if n % 2 == 0 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        assert_eq!(result.map(|r| (r.0, r.1)), Ok((200, want)));
    }
    assert_eq!(t.http().connections_made(&h2), 1);
    let requests = server.requests();
    let connections = |target: &str, protocol: &str| -> Vec<usize> {
        let of: Vec<_> = requests.iter().filter(|r| r.target == target).collect();
        assert!(
            !of.is_empty() && of.iter().all(|r| r.protocol == protocol),
            "{target} over {protocol}: {requests:#?}"
        );
        of.iter().map(|r| r.connection).collect()
    };
    let on_h2 = connections("/small?offer=h2", "h2");
    let on_h1 = connections("/small?offer=h1", "http/1.1");
    assert!(on_h2.iter().all(|c| *c == on_h2[0]), "{requests:#?}");
    assert!(
        on_h1.iter().all(|c| !on_h2.contains(c)),
        "an HTTP/1.1-only request rode the h2 connection: {requests:#?}"
    );
}

/// Plain http is HTTP/1.1 (no h2c: nothing to negotiate with).
pub async fn plain_http_stays_http1<B: TlsBackend>() {
    let server = HttpServer::start().with("/small", Route::body(body(1000)));
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let (status, version, got) = fetch(&t, &server.url("/small"), &flags(0))
        .await
        .expect("a response");
    assert_eq!((status, version), (200, Version::HTTP_11));
    assert_eq!(got, body(1000));
    assert_eq!(server.requests()[0].protocol, "http/1.1");
}

/// Once an h2 connection is open, requests of its policy sent all at once
/// share it as streams: one handshake, one connection for them all.
pub async fn requests_of_one_policy_share_one_h2_connection<B: TlsBackend>() {
    let server = origin(Alpn::H2);
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let policy = flags(0);
    let url = server.url("/small");
    assert_eq!(fetch(&t, &url, &policy).await.map(|r| r.1), Ok(Version::HTTP_2));
    let all = (0..8).map(|_| fetch(&t, &url, &policy));
    for result in join_all(all).await {
        let (status, version, got) = result.expect("a response");
        assert_eq!((status, version), (200, Version::HTTP_2));
        assert_eq!(got, body(1000));
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 9);
    assert!(
        requests.iter().all(|r| r.connection == requests[0].connection),
        "{requests:#?}"
    );
    assert_eq!(server.handshakes_ok(), 1);
    assert_eq!(t.http().connections_made(&policy), 1);
}

/// Two policies that differ only in their flags (0x0 and 0x2: the good
/// leaf passes both, and every backend honours both), sending to one h2
/// origin one after another and then all at once, use two connections:
/// each request came on its own policy's.
pub async fn two_flag_values_to_one_h2_origin_use_two_connections<B: TlsBackend>() {
    let server = origin(Alpn::H2);
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let (a, b) = (flags(0), flags(0x2));
    let (url_a, url_b) = (server.url("/small?policy=a"), server.url("/small?policy=b"));
    assert_eq!(fetch(&t, &url_a, &a).await.map(|r| r.1), Ok(Version::HTTP_2));
    assert_eq!(fetch(&t, &url_b, &b).await.map(|r| r.1), Ok(Version::HTTP_2));
    let mixed = (0..8).map(|n| {
        let (url, policy) = if n % 2 == 0 { (&url_a, &a) } else { (&url_b, &b) };
        fetch(&t, url, policy)
    });
    for result in join_all(mixed).await {
        assert_eq!(result.map(|r| (r.0, r.1)), Ok((200, Version::HTTP_2)));
    }
    assert_eq!(server.handshakes_ok(), 2);
    assert_eq!(
        (t.http().connections_made(&a), t.http().connections_made(&b)),
        (1, 1)
    );
    assert_separate(&server, "/small?policy=a", "/small?policy=b");
}

/// The requests for `target_a` all came on one connection, those for
/// `target_b` on another.
fn assert_separate(server: &HttpServer, target_a: &str, target_b: &str) {
    let requests = server.requests();
    let on = |target: &str| -> Vec<usize> {
        requests
            .iter()
            .filter(|r| r.target == target)
            .map(|r| r.connection)
            .collect()
    };
    let (on_a, on_b) = (on(target_a), on(target_b));
    assert!(!on_a.is_empty() && !on_b.is_empty(), "{requests:#?}");
    assert!(on_a.iter().all(|c| *c == on_a[0]), "{requests:#?}");
    assert!(on_b.iter().all(|c| *c == on_b[0]), "{requests:#?}");
    assert_ne!(
        on_a[0], on_b[0],
        "two policies shared a connection: {requests:#?}"
    );
    assert!(requests.iter().all(|r| r.protocol == "h2"), "{requests:#?}");
}

/// An h2 connection verified under `IGNORE_CERT_CN_INVALID` (0x2) never
/// serves a strict request: each strict attempt is a new handshake that
/// fails `0x80072F06` and reaches no HTTP, while the relaxed policy keeps
/// its h2 connection.
pub async fn a_relaxed_h2_connection_never_serves_a_strict_request<B: TlsBackend>() {
    let server = TlsServer::start_with(TestPki::shared().leaf(LeafKind::WrongHost), Alpn::H2);
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let url = server.url("/file").to_string();
    let ok = |r: Result<(u16, Version, Vec<u8>), u32>| r.map(|(s, v, b)| (s, v, b == TlsServer::BODY));
    assert_eq!(
        ok(fetch(&t, &url, &flags(0x2)).await),
        Ok((200, Version::HTTP_2, true))
    );
    assert_eq!(ok(fetch(&t, &url, &flags(0)).await), Err(0x8007_2F06));
    assert_eq!(
        ok(fetch(&t, &url, &flags(0x2)).await),
        Ok((200, Version::HTTP_2, true))
    );
    assert_eq!(ok(fetch(&t, &url, &flags(0)).await), Err(0x8007_2F06));
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "strict requests reached HTTP: {requests:#?}");
    assert_eq!(requests[0].connection, requests[1].connection);
    assert_eq!(server.handshakes_ok(), 1);
    // The server counts a refused handshake once it has read the alert.
    assert!(
        eventually(|| server.handshakes_failed() >= 2).await,
        "each strict attempt was a handshake of its own: {} failed",
        server.handshakes_failed()
    );
}

/// Whether `condition` holds within five seconds (checked every 10 ms,
/// without blocking the runtime).
async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Two policies that differ only in their client certificate (none, and
/// the shared client leaf) to one h2 origin that asks for one use two
/// connections; each presented what its policy holds.
pub async fn two_client_certificates_to_one_h2_origin_use_two_connections<B: TlsBackend>() {
    let files = TestPki::shared().client_files();
    let chosen = B::load_client_certificate(&crate::suites::client_certs::pem(&files.combined_pem))
        .unwrap_or_else(|e| panic!("{} loads the shared client leaf: {e}", B::NAME));
    let server = MtlsServer::start_with(ClientAuth::Optional, MaxTls::Tls13, Alpn::H2);
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let without = crate::suites::client_certs::policy(None);
    let with = crate::suites::client_certs::policy(Some(chosen.clone()));
    let url = |who: &str| server.url(&format!("/file?cert={who}")).to_string();
    let tr = &t;
    let all = (0..6).map(|n| {
        let (url, policy) = if n % 2 == 0 {
            (url("none"), &without)
        } else {
            (url("leaf"), &with)
        };
        async move { fetch(tr, &url, policy).await }
    });
    // The first of each policy alone, so that each has its h2 connection
    // before the rest share it.
    assert_eq!(
        fetch(&t, &url("none"), &without).await.map(|r| r.1),
        Ok(Version::HTTP_2)
    );
    assert_eq!(
        fetch(&t, &url("leaf"), &with).await.map(|r| r.1),
        Ok(Version::HTTP_2)
    );
    for result in join_all(all).await {
        assert_eq!(result.map(|r| (r.0, r.1)), Ok((200, Version::HTTP_2)));
    }
    assert_eq!(server.handshakes_ok(), 2);
    let presented = server.presented();
    assert_eq!(presented.len(), 2);
    assert_eq!(presented[0], None);
    assert_eq!(presented[1].as_ref().map(|p| p.sha1), Some(chosen.sha1));
    assert_separate(server.http(), "/file?cert=none", "/file?cert=leaf");
}

/// A server that offers h2 and refuses the client's certificate (none
/// when it requires one: `0x80072F0C`; one from another CA: `0x80072F8F`)
/// is judged as over HTTP/1.1, with TLS 1.3 (the refusal is an alert read
/// after the client's handshake, when HTTP/2 has started) and TLS 1.2 (it
/// fails the handshake); no request reaches HTTP.
pub async fn a_refused_client_certificate_is_classified_as_over_http1<B: TlsBackend>() {
    use crate::suites::client_certs::{pem, policy, CERT_NEEDED, SECURE_FAILURE};
    let files = TestPki::shared().client_files();
    let unrelated = B::load_client_certificate(&pem(&files.unrelated_pem))
        .unwrap_or_else(|e| panic!("{} loads the unrelated leaf: {e}", B::NAME));
    for max in [MaxTls::Tls13, MaxTls::Tls12] {
        for alpn in [Alpn::H2, Alpn::Ignore] {
            for (cert, want) in [(None, CERT_NEEDED), (Some(unrelated.clone()), SECURE_FAILURE)] {
                let server = MtlsServer::start_with(ClientAuth::Required, max, alpn);
                let t = crate::backend::with_pki::<B>(TestPki::shared());
                let url = server.url("/file").to_string();
                let got = fetch(&t, &url, &policy(cert.clone())).await.map(|r| r.0);
                assert_eq!(got, Err(want), "{max:?} {alpn:?} certificate {}", cert.is_some());
                assert_eq!(server.request_count(), 0, "{max:?} {alpn:?}");
            }
        }
    }
}

/// https through tinyproxy's `CONNECT` tunnel offers h2 to the origin
/// (never to the proxy, spoken to in plain HTTP/1.1): the origin chose
/// it. A direct policy to the same origin uses a connection of its own.
pub async fn h2_is_offered_inside_a_connect_tunnel_and_a_route_keeps_its_connection<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let server = origin(Alpn::H2);
    let t = crate::suites::proxies::transport::<B>(ProxyEnv::empty());
    let tunnelled = crate::suites::proxies::policy(0, crate::suites::proxies::through(&proxy.url(), ""));
    let direct = flags(0);
    let (url_t, url_d) = (
        server.url("/small?route=proxy"),
        server.url("/small?route=direct"),
    );
    for _ in 0..2 {
        assert_eq!(
            fetch(&t, &url_t, &tunnelled).await.map(|r| r.1),
            Ok(Version::HTTP_2)
        );
        assert_eq!(fetch(&t, &url_d, &direct).await.map(|r| r.1), Ok(Version::HTTP_2));
    }
    let connects = proxy.connects();
    assert_eq!(connects.len(), 1, "one tunnel, reused: {connects:?}");
    assert!(
        connects[0].starts_with(&format!("{} ", server.addr())),
        "{connects:?}"
    );
    assert_eq!(server.handshakes_ok(), 2);
    assert_separate(&server, "/small?route=proxy", "/small?route=direct");
}

/// How long [`conformance_verdicts_are_the_same_over_h2`] may take: two
/// runs of the whole matrix.
pub const MATRIX_DEADLINE: Duration = Duration::from_secs(300);

/// The conformance matrix (pin rows included) against servers that choose
/// `h2` conforms, reaches exactly the verdicts it reaches over HTTP/1.1
/// (every accept, every reject and its HRESULT, every refusal), and every
/// case that succeeded was carried by h2: ALPN changes no verification.
pub async fn conformance_verdicts_are_the_same_over_h2<B: TlsBackend>() {
    let matrices = async {
        let h1 = crate::backend::run_matrix::<B>().await;
        let h2 = crate::backend::run_matrix_over::<B>(Alpn::H2).await;
        (h1, h2)
    };
    let (h1, h2) = tokio::time::timeout(MATRIX_DEADLINE, matrices)
        .await
        .unwrap_or_else(|_| panic!("the two matrices took longer than {MATRIX_DEADLINE:?}"));
    h2.assert_conforms();
    let differences = h2.verdict_differences(&h1);
    assert!(
        differences.is_empty(),
        "{} verdicts differ over h2:\n{}",
        B::NAME,
        differences.join("\n")
    );
    assert!(h2
        .cases
        .iter()
        .any(|c| c.outcome == crate::conformance::Outcome::Ok));
    let elsewhere = h2.not_carried_by("h2");
    assert!(
        elsewhere.is_empty(),
        "successes not carried by h2:\n{}",
        elsewhere.join("\n")
    );
    let elsewhere = h1.not_carried_by("http/1.1");
    assert!(elsewhere.is_empty(), "{}", elsewhere.join("\n"));
}

/// Awaits every future of `all` at once (the testkit has no `futures`).
async fn join_all<F: Future>(all: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = all.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut left = false;
        for (slot, fut) in done.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => *slot = Some(out),
                    std::task::Poll::Pending => left = true,
                }
            }
        }
        if left {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
