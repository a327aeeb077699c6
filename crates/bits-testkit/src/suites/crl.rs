//! `BG_SSL_ENABLE_CRL_CHECK` against real TLS servers and a real CRL server
//! on 127.0.0.1, with the shared test PKI re-issued to name each case's own
//! CRL server (so request counts are that case's alone).
//!
//! ```text
//! #[tokio::test]
//! async fn a_pem_crl_is_accepted() {
//!     crl::a_pem_crl_is_accepted(&backend::with_pki_and_crl_cache::<Openssl>).await;
//! }
//! ```
//!
//! `make(pki, cache_dir)` builds a transport trusting `pki`'s root only,
//! with its CRL cache in `cache_dir`. The cache file for a CDP `url` is
//! `<cache_dir>/<sha256(url) hex>.crl`, in every backend.

use std::path::{Path, PathBuf};

use bits_core::{BitsError, ConnectionPolicy, Request, SecurityFlags, Transport};

use crate::crl::CrlServer;
use crate::pki::{LeafKind, TestPki};
use crate::temp::TempDir;
use crate::tls::TlsServer;

const CRL: u32 = SecurityFlags::ENABLE_CRL_CHECK;

/// A CRL server serving the fresh CRLs, and the PKI whose CDPs name it.
fn setup() -> (CrlServer, TestPki) {
    let crls = CrlServer::start();
    crls.serve_pki(TestPki::shared());
    let pki = TestPki::shared().with_crl_base(&crls.base_url());
    (crls, pki)
}

/// GETs `/file` under `flags` and reads the whole body: `Ok(())` when it is
/// the server's body, the HRESULT otherwise.
async fn get<T: Transport>(t: &T, server: &TlsServer, flags: u32) -> Result<(), u32> {
    let flags = SecurityFlags::new(flags).unwrap();
    let result: Result<Vec<u8>, BitsError> = async {
        let mut response = t
            .send(Request::get(server.url("/file"), ConnectionPolicy::new(flags)))
            .await?;
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

/// The cache file for `url`: `<dir>/<sha256(url) hex>.crl`.
fn cache_file(dir: &Path, url: &str) -> PathBuf {
    let hex: String = openssl::sha::sha256(url.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("{hex}.crl"))
}

/// A revoked leaf fails `ERROR_INTERNET_SEC_CERT_REVOKED` under `ENABLE_CRL_CHECK`, even with every ignore flag, and reaches no HTTP.
pub async fn revoked_with_crl_check_fails_revoked_and_reaches_no_http<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = make(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    // Every ignore flag together still does not cover a revocation.
    assert_eq!(get(&t, &server, 0x1F).await, Err(0x8007_2F8A));
    assert_eq!(server.request_count(), 0);
    assert_eq!(crls.requests("/root.crl"), 1);
}

/// Without `ENABLE_CRL_CHECK` a revoked leaf passes and no CRL is fetched or cached.
pub async fn without_crl_check_a_revoked_certificate_passes_and_no_crl_is_fetched<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = make(&pki, cache.path());
    assert_eq!(get(&t, &server, 0).await, Ok(()));
    assert_eq!(get(&t, &server, 0x1E).await, Ok(()));
    assert_eq!(crls.total_requests(), 0);
    assert_eq!(cached_files(cache.path()), 0);
}

/// A good leaf passes and the CRL is fetched once: later connections and another transport on the same cache dir use the cache. `clear_pools` drops the transport's pooled connections.
pub async fn a_good_certificate_passes_and_the_crl_is_fetched_once<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
    clear_pools: &dyn Fn(&T),
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = make(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Ok(()));
    assert_eq!(crls.requests("/root.crl"), 1);
    // A second transfer (new connection: pools are per flag value) within
    // nextUpdate uses the cached CRL.
    clear_pools(&t);
    assert_eq!(get(&t, &server, CRL).await, Ok(()));
    assert_eq!(get(&t, &server, CRL | 0x2).await, Ok(()));
    assert_eq!(crls.requests("/root.crl"), 1);
    assert_eq!(cached_files(cache.path()), 1);
    // Another transport (another process, say) uses the disk cache.
    let t2 = make(&pki, cache.path());
    assert_eq!(get(&t2, &server, CRL).await, Ok(()));
    assert_eq!(crls.requests("/root.crl"), 1);
}

/// The whole chain is checked: the intermediate's CRL and the root's.
pub async fn the_whole_chain_is_checked_intermediate_crl_included<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::ViaInt));
    let t = make(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Ok(()));
    assert_eq!(crls.requests("/int.crl"), 1);
    assert_eq!(crls.requests("/root.crl"), 1);
    // Without the root's CRL (for the intermediate) the check fails.
    let cache2 = TempDir::new("crl-suite");
    crls.set_status("/root.crl", 404);
    let t2 = make(&pki, cache2.path());
    assert_eq!(get(&t2, &server, CRL).await, Err(0x8007_2F19));
}

/// A CDP answering 404, or nobody listening at it, fails `ERROR_INTERNET_SEC_CERT_NO_REV` and caches nothing.
pub async fn an_unreachable_crl_fails_revocation_check<T: Transport>(make: &dyn Fn(&TestPki, &Path) -> T) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let t = make(&pki, cache.path());
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

/// A badly signed CRL is rejected and kept neither on disk nor in memory.
pub async fn a_badly_signed_crl_is_rejected_and_never_cached<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = make(&pki, cache.path());
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

/// Garbage, or a CRL of another issuer, fails the revocation check.
pub async fn garbage_instead_of_a_crl_fails_revocation_check<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = make(&pki, cache.path());
    crls.set("/root.crl", b"this is not a CRL".to_vec());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    // A CRL for another issuer (the intermediate's) is no better.
    crls.set("/root.crl", pki.intermediate_crl_der());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    assert_eq!(cached_files(cache.path()), 0);
}

/// A PEM CRL is accepted (and says revoked).
pub async fn a_pem_crl_is_accepted<T: Transport>(make: &dyn Fn(&TestPki, &Path) -> T) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = make(&pki, cache.path());
    crls.set("/root.crl", pki.root_crl_pem());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
}

/// A served CRL past its nextUpdate is rejected, even with every ignore flag, and not cached.
pub async fn a_stale_served_crl_is_rejected_and_not_cached<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = make(&pki, cache.path());
    crls.set("/root.crl", pki.stale_root_crl_der());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F19));
    // Even with every ignore flag: a stale CRL is not a date fault.
    assert_eq!(get(&t, &server, CRL | 0x1E).await, Err(0x8007_2F19));
    assert_eq!(cached_files(cache.path()), 0);
}

/// A stale cached CRL is downloaded again and the cache file replaced.
pub async fn a_stale_cached_crl_is_downloaded_again<T: Transport>(make: &dyn Fn(&TestPki, &Path) -> T) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let path = cache_file(cache.path(), &crls.url("/root.crl"));
    std::fs::write(&path, pki.stale_root_crl_der()).unwrap();
    let t = make(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 1);
    // The cache now holds the fresh CRL.
    assert_eq!(std::fs::read(&path).unwrap(), pki.root_crl_der());
}

/// A cache file with a bad signature is not trusted: the CRL is downloaded.
pub async fn a_tampered_cache_file_is_not_trusted<T: Transport>(make: &dyn Fn(&TestPki, &Path) -> T) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let path = cache_file(cache.path(), &crls.url("/root.crl"));
    std::fs::write(&path, pki.badsig_root_crl_der()).unwrap();
    let t = make(&pki, cache.path());
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 1);
}

/// An unknown CA fails as such; with the CA ignored, the revocation cannot be checked; no CRL is fetched.
pub async fn crl_check_with_an_unknown_ca_cannot_check_revocation<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let t = make(&pki, cache.path());
    let server = TlsServer::start(pki.leaf(LeafKind::UnknownCa));
    // CA not ignored: unknown CA first.
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F0D));
    // CA ignored: the rogue CA is not there to verify a CRL with.
    assert_eq!(get(&t, &server, CRL | 0x8).await, Err(0x8007_2F19));
    assert_eq!(crls.total_requests(), 0);
    assert_eq!(server.request_count(), 0);
}

/// Concurrent connections download a CRL once.
pub async fn concurrent_connections_download_a_crl_once<T: Transport>(make: &dyn Fn(&TestPki, &Path) -> T) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = make(&pki, cache.path());
    // Different flag values: different pools, so two connections.
    let (a, b, c) = tokio::join!(
        get(&t, &server, CRL),
        get(&t, &server, CRL | 0x2),
        get(&t, &server, CRL | 0x4)
    );
    assert_eq!((a, b, c), (Ok(()), Ok(()), Ok(())));
    assert_eq!(crls.requests("/root.crl"), 1);
}

/// An unwritable cache dir still checks revocation (the CRL kept in memory).
pub async fn an_unwritable_cache_still_checks_revocation<T: Transport>(make: &dyn Fn(&TestPki, &Path) -> T) {
    let (crls, pki) = setup();
    let dir = TempDir::new("crl-suite");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let server = TlsServer::start(pki.leaf(LeafKind::Revoked));
    let t = make(&pki, &file.join("cache"));
    assert_eq!(get(&t, &server, CRL).await, Err(0x8007_2F8A));
    // Kept in memory for this transport.
    assert_eq!(get(&t, &server, CRL | 0x2).await, Err(0x8007_2F8A));
    assert_eq!(crls.requests("/root.crl"), 1);
}

/// `IGNORE_CERT_DATE_INVALID` ignores neither a revocation nor a stale CRL; an expired leaf passes under 0x5 only with a CRL fresh now.
pub async fn ignoring_dates_does_not_ignore_a_stale_crl_nor_a_revocation<T: Transport>(
    make: &dyn Fn(&TestPki, &Path) -> T,
) {
    let (crls, pki) = setup();
    let cache = TempDir::new("crl-suite");
    let t = make(&pki, cache.path());
    // Expired and revoked: the shifted verification time must not make the
    // revocation (judged against a fresh CRL) disappear.
    let server = TlsServer::start(pki.leaf(LeafKind::RevokedExpired));
    assert_eq!(get(&t, &server, CRL | 0x4).await, Err(0x8007_2F8A));
    // An expired leaf is accepted under 0x5 only with a CRL fresh now.
    let expired = TlsServer::start(pki.leaf(LeafKind::Expired));
    assert_eq!(get(&t, &expired, CRL | 0x4).await, Ok(()));
    let cache2 = TempDir::new("crl-suite");
    let t2 = make(&pki, cache2.path());
    crls.set("/root.crl", pki.stale_root_crl_der());
    assert_eq!(get(&t2, &expired, CRL | 0x4).await, Err(0x8007_2F19));
}
