//! `BG_SSL_ENABLE_CRL_CHECK` (rustls backend) against real TLS servers and a real CRL server
//! on 127.0.0.1, with the shared test PKI re-issued to name this test's own
//! CRL server (so request counts are this test's alone).

use std::path::Path;

use bits_core::{BitsError, Request, SecurityFlags, Transport};
use bits_testkit::crl::CrlServer;
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_rustls::RustlsTransport;

const CRL: u32 = SecurityFlags::ENABLE_CRL_CHECK;

/// A CRL server serving the fresh CRLs, and the PKI whose CDPs name it.
fn setup() -> (CrlServer, TestPki) {
    let crls = CrlServer::start();
    crls.serve_pki(TestPki::shared());
    let pki = TestPki::shared().with_crl_base(&crls.base_url());
    (crls, pki)
}

fn transport(pki: &TestPki, cache: &Path) -> RustlsTransport {
    RustlsTransport::builder()
        .add_root_pem(pki.root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(cache)
        .build()
        .unwrap()
}

/// GETs `/file` under `flags` and reads the whole body: `Ok(())` when it is
/// the server's body, the HRESULT otherwise.
async fn get(t: &RustlsTransport, server: &TlsServer, flags: u32) -> Result<(), u32> {
    let flags = SecurityFlags::new(flags).unwrap();
    let result: Result<Vec<u8>, BitsError> = async {
        let mut response = t.send(Request::get(server.url("/file"), flags)).await?;
        assert_eq!(response.status, 200);
        let mut body = Vec::new();
        while let Some(chunk) = response.body.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
    .await;
    match result {
        Ok(body) => {
            assert_eq!(body, TlsServer::BODY);
            Ok(())
        }
        Err(e) => Err(e.hresult().0),
    }
}

fn cached_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".crl"))
                .count()
        })
        .unwrap_or(0)
}

/// The cache file for `url`: `<dir>/<sha256(url) hex>.crl` (the OpenSSL
/// backend's name for it too).
fn cache_file(dir: &Path, url: &str) -> std::path::PathBuf {
    let sha256 = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap()
        .common
        .hash_provider
        .hash(url.as_bytes());
    let hex: String = sha256.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.crl"))
}

#[tokio::test]
async fn revoked_with_crl_check_fails_revoked_and_reaches_no_http() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = transport(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    // Every ignore flag together still does not cover a revocation.
    assert_eq!(get(&t, &server, 0x1F).await, Err(0x8007_2F8A));
    assert_eq!(server.request_count(), 0);
    assert_eq!(crls.requests("/root.crl"), 1);
}

#[tokio::test]
async fn without_crl_check_a_revoked_certificate_passes_and_no_crl_is_fetched() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = transport(&pki, cache.path());
    assert_eq!(get(&t, &server, 0).await, Ok(()));
    assert_eq!(get(&t, &server, 0x1E).await, Ok(()));
    assert_eq!(crls.total_requests(), 0);
    assert_eq!(cached_files(cache.path()), 0);
}

#[tokio::test]
async fn a_good_certificate_passes_and_the_crl_is_fetched_once() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = transport(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Ok(()));
    assert_eq!(crls.requests("/root.crl"), 1);
    // A second transfer (new connection: pools are per flag value) within
    // nextUpdate uses the cached CRL.
    t.http().clear_pools();
    assert_eq!(get(&t, &server, CRL).await, Ok(()));
    assert_eq!(get(&t, &server, CRL | 0x2).await, Ok(()));
    assert_eq!(crls.requests("/root.crl"), 1);
    assert_eq!(cached_files(cache.path()), 1);
    // Another transport (another process, say) uses the disk cache.
    let t2 = transport(&pki, cache.path());
    assert_eq!(get(&t2, &server, CRL).await, Ok(()));
    assert_eq!(crls.requests("/root.crl"), 1);
}

#[tokio::test]
async fn the_whole_chain_is_checked_intermediate_crl_included() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::ViaInt));
    let t = transport(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Ok(()));
    assert_eq!(crls.requests("/int.crl"), 1);
    assert_eq!(crls.requests("/root.crl"), 1);
    // Without the root's CRL (for the intermediate) the check fails.
    let cache2 = tempfile::tempdir().unwrap();
    crls.set_status("/root.crl", 404);
    let t2 = transport(&pki, cache2.path());
    assert_eq!(get(&t2, &server, CRL).await, Err(0x8007_2F19));
}

#[tokio::test]
async fn an_unreachable_crl_fails_revocation_check() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let t = transport(&pki, cache.path());
    // The CDP answers 404.
    let server = TlsServer::start(pki.leaf(LeafKind::CrlUnreachable));
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    assert_eq!(get(&t, &server, CRL | 0x1E).await, Err(0x8007_2F19));
    assert_eq!(server.request_count(), 0);
    // Nobody listens at the CDP.
    let good = TlsServer::start(pki.leaf(LeafKind::Good));
    drop(crls);
    assert_eq!(get(&t, &good, CRL).await, Err(0x8007_2F19));
    assert_eq!(good.request_count(), 0);
    assert_eq!(cached_files(cache.path()), 0);
}

#[tokio::test]
async fn a_badly_signed_crl_is_rejected_and_never_cached() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = transport(&pki, cache.path());
    crls.set("/root.crl", pki.badsig_root_crl_der());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    assert_eq!(crls.requests("/root.crl"), 1);
    assert_eq!(cached_files(cache.path()), 0);
    // Not kept in memory either: the next transfer downloads again, and
    // the good CRL now says revoked.
    crls.set("/root.crl", pki.root_crl_der());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 2);
}

#[tokio::test]
async fn garbage_instead_of_a_crl_fails_revocation_check() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = transport(&pki, cache.path());
    crls.set("/root.crl", b"this is not a CRL".to_vec());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    // A CRL for another issuer (the intermediate's) is no better.
    crls.set("/root.crl", pki.intermediate_crl_der());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    assert_eq!(cached_files(cache.path()), 0);
}

#[tokio::test]
async fn a_pem_crl_is_accepted() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = transport(&pki, cache.path());
    crls.set("/root.crl", pki.root_crl_pem());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
}

#[tokio::test]
async fn a_stale_served_crl_is_rejected_and_not_cached() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = transport(&pki, cache.path());
    crls.set("/root.crl", pki.stale_root_crl_der());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    // Even with every ignore flag: a stale CRL is not a date fault.
    assert_eq!(get(&t, &server, CRL | 0x1E).await, Err(0x8007_2F19));
    assert_eq!(cached_files(cache.path()), 0);
}

#[tokio::test]
async fn a_stale_cached_crl_is_downloaded_again() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let path = cache_file(cache.path(), &crls.url("/root.crl"));
    std::fs::write(&path, pki.stale_root_crl_der()).unwrap();
    let t = transport(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 1);
    // The cache now holds the fresh CRL.
    assert_eq!(std::fs::read(&path).unwrap(), pki.root_crl_der());
}

#[tokio::test]
async fn a_tampered_cache_file_is_not_trusted() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let path = cache_file(cache.path(), &crls.url("/root.crl"));
    std::fs::write(&path, pki.badsig_root_crl_der()).unwrap();
    let t = transport(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 1);
}

#[tokio::test]
async fn crl_check_with_an_unknown_ca_cannot_check_revocation() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let t = transport(&pki, cache.path());
    let server = TlsServer::start(pki.leaf(LeafKind::UnknownCa));
    // CA not ignored: unknown CA first.
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F0D));
    // CA ignored: the rogue CA is not there to verify a CRL with.
    assert_eq!(get(&t, &server, CRL | 0x8).await, Err(0x8007_2F19));
    assert_eq!(crls.total_requests(), 0);
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn concurrent_connections_download_a_crl_once() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = transport(&pki, cache.path());
    // Different flag values: different pools, so two connections.
    let (a, b, c) = tokio::join!(
        get(&t, &server, CRL),
        get(&t, &server, CRL | 0x2),
        get(&t, &server, CRL | 0x4)
    );
    assert_eq!((a, b, c), (Ok(()), Ok(()), Ok(())));
    assert_eq!(crls.requests("/root.crl"), 1);
}

#[tokio::test]
async fn an_unwritable_cache_still_checks_revocation() {
    let (crls, pki) = setup();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = transport(&pki, &file.join("cache"));
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    // Kept in memory for this transport.
    assert_eq!(get(&t, &server, CRL | 0x2).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 1);
}

#[tokio::test]
async fn ignoring_dates_does_not_ignore_a_stale_crl_nor_a_revocation() {
    let (crls, pki) = setup();
    let cache = tempfile::tempdir().unwrap();
    let t = transport(&pki, cache.path());
    // Expired and revoked: the shifted verification time must not make the
    // revocation (judged against a fresh CRL) disappear.
    let server = TlsServer::start(pki.leaf(LeafKind::RevokedExpired));
    assert_eq!(get(&t, &server, CRL | 0x4).await, Err(0x8007_2F8A));
    // An expired leaf is accepted under 0x5 only with a CRL fresh now.
    let expired = TlsServer::start(pki.leaf(LeafKind::Expired));
    assert_eq!(get(&t, &expired, CRL | 0x4).await, Ok(()));
    let cache2 = tempfile::tempdir().unwrap();
    let t2 = transport(&pki, cache2.path());
    crls.set("/root.crl", pki.stale_root_crl_der());
    assert_eq!(get(&t2, &expired, CRL | 0x4).await, Err(0x8007_2F19));
}
