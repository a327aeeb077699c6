//! `BG_SSL_ENABLE_CRL_CHECK` against real TLS servers and a real CRL server
//! on 127.0.0.1. The cases are shared by every backend:
//! [`bits_testkit::suites::crl`].

use std::path::Path;

use bits_testkit::pki::TestPki;
use bits_testkit::suites::crl;
use bits_transport_openssl::OpensslTransport;

fn transport(pki: &TestPki, cache: &Path) -> OpensslTransport {
    OpensslTransport::builder()
        .add_root_pem(pki.root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(cache)
        .build()
        .unwrap()
}

#[tokio::test]
async fn revoked_with_crl_check_fails_revoked_and_reaches_no_http() {
    crl::revoked_with_crl_check_fails_revoked_and_reaches_no_http(&transport).await;
}

#[tokio::test]
async fn without_crl_check_a_revoked_certificate_passes_and_no_crl_is_fetched() {
    crl::without_crl_check_a_revoked_certificate_passes_and_no_crl_is_fetched(&transport).await;
}

#[tokio::test]
async fn a_good_certificate_passes_and_the_crl_is_fetched_once() {
    crl::a_good_certificate_passes_and_the_crl_is_fetched_once(&transport, &|t| t.http().clear_pools()).await;
}

#[tokio::test]
async fn the_whole_chain_is_checked_intermediate_crl_included() {
    crl::the_whole_chain_is_checked_intermediate_crl_included(&transport).await;
}

#[tokio::test]
async fn an_unreachable_crl_fails_revocation_check() {
    crl::an_unreachable_crl_fails_revocation_check(&transport).await;
}

#[tokio::test]
async fn a_badly_signed_crl_is_rejected_and_never_cached() {
    crl::a_badly_signed_crl_is_rejected_and_never_cached(&transport).await;
}

#[tokio::test]
async fn garbage_instead_of_a_crl_fails_revocation_check() {
    crl::garbage_instead_of_a_crl_fails_revocation_check(&transport).await;
}

#[tokio::test]
async fn a_pem_crl_is_accepted() {
    crl::a_pem_crl_is_accepted(&transport).await;
}

#[tokio::test]
async fn a_stale_served_crl_is_rejected_and_not_cached() {
    crl::a_stale_served_crl_is_rejected_and_not_cached(&transport).await;
}

#[tokio::test]
async fn a_stale_cached_crl_is_downloaded_again() {
    crl::a_stale_cached_crl_is_downloaded_again(&transport).await;
}

#[tokio::test]
async fn a_tampered_cache_file_is_not_trusted() {
    crl::a_tampered_cache_file_is_not_trusted(&transport).await;
}

#[tokio::test]
async fn crl_check_with_an_unknown_ca_cannot_check_revocation() {
    crl::crl_check_with_an_unknown_ca_cannot_check_revocation(&transport).await;
}

#[tokio::test]
async fn concurrent_connections_download_a_crl_once() {
    crl::concurrent_connections_download_a_crl_once(&transport).await;
}

#[tokio::test]
async fn an_unwritable_cache_still_checks_revocation() {
    crl::an_unwritable_cache_still_checks_revocation(&transport).await;
}

#[tokio::test]
async fn ignoring_dates_does_not_ignore_a_stale_crl_nor_a_revocation() {
    crl::ignoring_dates_does_not_ignore_a_stale_crl_nor_a_revocation(&transport).await;
}
