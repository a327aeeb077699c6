//! `#[tokio::test]` lists running every shared case of a suite, so each
//! backend's test file names its backend once (STYLE.md item 13), e.g.
//! `crl_tests!(bits_transport_openssl::Openssl)`; the transports come from
//! [`backend`](crate::backend). The tests keep the names they had in the
//! backends' own files.

/// One `#[tokio::test]` per [`suites::isolation`](crate::suites::isolation)
/// case: `isolation_tests!(Backend)`.
#[macro_export]
macro_rules! isolation_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn a_connection_made_under_ignore_unknown_ca_never_serves_strict_requests() {
            $crate::suites::isolation::ignore_unknown_ca_never_serves_strict_requests(
                &$crate::backend::with_pki::<$backend>,
            )
            .await;
        }
        #[tokio::test]
        async fn a_connection_made_under_ignore_cn_never_serves_strict_requests() {
            $crate::suites::isolation::ignore_cn_never_serves_strict_requests(
                &$crate::backend::with_pki::<$backend>,
            )
            .await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::crl`](crate::suites::crl) case:
/// `crl_tests!(Backend)`.
#[macro_export]
macro_rules! crl_tests {
    ($backend:ty) => {
        $crate::crl_tests!(@cases &$crate::backend::with_pki_and_crl_cache::<$backend>, &$crate::backend::clear_pools::<$backend>);
    };
    (@cases $make:expr, $clear_pools:expr) => {
        #[tokio::test]
        async fn revoked_with_crl_check_fails_revoked_and_reaches_no_http() {
            $crate::suites::crl::revoked_with_crl_check_fails_revoked_and_reaches_no_http($make).await;
        }
        #[tokio::test]
        async fn without_crl_check_a_revoked_certificate_passes_and_no_crl_is_fetched() {
            $crate::suites::crl::without_crl_check_a_revoked_certificate_passes_and_no_crl_is_fetched($make)
                .await;
        }
        #[tokio::test]
        async fn a_good_certificate_passes_and_the_crl_is_fetched_once() {
            $crate::suites::crl::a_good_certificate_passes_and_the_crl_is_fetched_once($make, $clear_pools)
                .await;
        }
        #[tokio::test]
        async fn the_whole_chain_is_checked_intermediate_crl_included() {
            $crate::suites::crl::the_whole_chain_is_checked_intermediate_crl_included($make).await;
        }
        #[tokio::test]
        async fn an_unreachable_crl_fails_revocation_check() {
            $crate::suites::crl::an_unreachable_crl_fails_revocation_check($make).await;
        }
        #[tokio::test]
        async fn a_badly_signed_crl_is_rejected_and_never_cached() {
            $crate::suites::crl::a_badly_signed_crl_is_rejected_and_never_cached($make).await;
        }
        #[tokio::test]
        async fn garbage_instead_of_a_crl_fails_revocation_check() {
            $crate::suites::crl::garbage_instead_of_a_crl_fails_revocation_check($make).await;
        }
        #[tokio::test]
        async fn a_pem_crl_is_accepted() {
            $crate::suites::crl::a_pem_crl_is_accepted($make).await;
        }
        #[tokio::test]
        async fn a_stale_served_crl_is_rejected_and_not_cached() {
            $crate::suites::crl::a_stale_served_crl_is_rejected_and_not_cached($make).await;
        }
        #[tokio::test]
        async fn a_stale_cached_crl_is_downloaded_again() {
            $crate::suites::crl::a_stale_cached_crl_is_downloaded_again($make).await;
        }
        #[tokio::test]
        async fn a_tampered_cache_file_is_not_trusted() {
            $crate::suites::crl::a_tampered_cache_file_is_not_trusted($make).await;
        }
        #[tokio::test]
        async fn crl_check_with_an_unknown_ca_cannot_check_revocation() {
            $crate::suites::crl::crl_check_with_an_unknown_ca_cannot_check_revocation($make).await;
        }
        #[tokio::test]
        async fn concurrent_connections_download_a_crl_once() {
            $crate::suites::crl::concurrent_connections_download_a_crl_once($make).await;
        }
        #[tokio::test]
        async fn an_unwritable_cache_still_checks_revocation() {
            $crate::suites::crl::an_unwritable_cache_still_checks_revocation($make).await;
        }
        #[tokio::test]
        async fn ignoring_dates_does_not_ignore_a_stale_crl_nor_a_revocation() {
            $crate::suites::crl::ignoring_dates_does_not_ignore_a_stale_crl_nor_a_revocation($make).await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::chains`](crate::suites::chains) case:
/// `chain_tests!(Backend)`, through the backend's own connector
/// ([`backend::chain_handshake`](crate::backend::chain_handshake)).
#[macro_export]
macro_rules! chain_tests {
    ($backend:ty) => {
        $crate::chain_tests!(@cases &$crate::backend::chain_handshake::<$backend>);
    };
    (@cases $handshake:expr) => {
        #[tokio::test]
        async fn ignoring_an_unknown_ca_does_not_ignore_a_not_yet_valid_untrusted_intermediate() {
            $crate::suites::chains::ignoring_an_unknown_ca_does_not_ignore_a_not_yet_valid_untrusted_intermediate($handshake).await;
        }
        #[tokio::test]
        async fn a_valid_untrusted_chain_passes_with_ignore_unknown_ca_only() {
            $crate::suites::chains::a_valid_untrusted_chain_passes_with_ignore_unknown_ca_only($handshake).await;
        }
        #[tokio::test]
        async fn a_bad_signature_is_refused_under_every_ignore_flag() {
            $crate::suites::chains::a_bad_signature_is_refused_under_every_ignore_flag($handshake).await;
        }
        #[tokio::test]
        async fn a_leaf_whose_issuer_is_absent_gets_every_check_it_can_under_ignore_unknown_ca() {
            $crate::suites::chains::a_leaf_whose_issuer_is_absent_gets_every_check_it_can_under_ignore_unknown_ca($handshake).await;
        }
        #[tokio::test]
        async fn a_leaf_issued_by_a_non_ca_is_refused_under_every_ignore_flag() {
            $crate::suites::chains::a_leaf_issued_by_a_non_ca_is_refused_under_every_ignore_flag($handshake).await;
        }
        #[tokio::test]
        async fn a_server_that_does_not_speak_tls_is_a_secure_failure() {
            $crate::suites::chains::a_server_that_does_not_speak_tls_is_a_secure_failure($handshake).await;
        }
        #[tokio::test]
        async fn a_reset_during_the_handshake_is_a_transient_connection_reset() {
            $crate::suites::chains::a_reset_during_the_handshake_is_a_transient_connection_reset($handshake).await;
        }
        #[tokio::test]
        async fn a_leaf_key_usage_without_tls_use_is_a_usage_fault() {
            $crate::suites::chains::a_leaf_key_usage_without_tls_use_is_a_usage_fault($handshake).await;
        }
        #[tokio::test]
        async fn an_intermediate_without_cert_sign_usage_is_refused_under_every_flag() {
            $crate::suites::chains::an_intermediate_without_cert_sign_usage_is_refused_under_every_flag($handshake).await;
        }
    };
}

/// The [`suites::system_roots`](crate::suites::system_roots) test,
/// `ssl_cert_file_replaces_the_system_roots`: `system_roots_tests!(Backend)`.
#[macro_export]
macro_rules! system_roots_tests {
    ($backend:ty) => {
        #[test]
        fn ssl_cert_file_replaces_the_system_roots() {
            $crate::suites::system_roots::ssl_cert_file_replaces_the_system_roots::<$backend>(
                &$crate::suites::system_roots::test_path(
                    module_path!(),
                    "ssl_cert_file_replaces_the_system_roots",
                ),
            );
        }
    };
}

/// One `#[test]` per [`suites::builder`](crate::suites::builder) case:
/// `builder_tests!(Backend, supported)`, `supported` the certificate-flag
/// values the backend honours.
#[macro_export]
macro_rules! builder_tests {
    ($backend:ty, $supported:expr) => {
        #[test]
        fn bad_roots_are_invalid_arguments() {
            $crate::suites::builder::bad_roots_are_invalid_arguments::<$backend>();
        }
        #[test]
        fn the_transport_checks_policies_as_its_backend() {
            $crate::suites::builder::the_transport_checks_policies_as_its_backend::<$backend>($supported);
        }
    };
}

/// One `#[tokio::test]` per [`suites::bodies`](crate::suites::bodies) case,
/// over https ([`backend::https_server`](crate::backend::https_server)):
/// `request_body_tests!(Backend)`.
#[macro_export]
macro_rules! request_body_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn bodies_of_known_length_arrive_byte_exact() {
            let (t, server) = $crate::backend::https_server::<$backend>();
            $crate::suites::bodies::bodies_of_known_length_arrive_byte_exact(&t, &server).await;
        }
        #[tokio::test]
        async fn a_body_of_unknown_length_arrives_chunked_and_whole() {
            let (t, server) = $crate::backend::https_server::<$backend>();
            $crate::suites::bodies::a_body_of_unknown_length_arrives_chunked_and_whole(&t, &server).await;
        }
        #[tokio::test]
        async fn a_body_that_fails_midway_fails_send_with_its_error() {
            let (t, server) = $crate::backend::https_server::<$backend>();
            $crate::suites::bodies::a_body_that_fails_midway_fails_send_with_its_error(&t, &server).await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::pins`](crate::suites::pins) case:
/// `pin_tests!(Backend)` for a backend that sees the presented chain, or
/// `pin_tests!(Backend, refused)` for one that refuses pins and validators
/// with `E_NOTIMPL` (native-tls: the leaf only).
#[macro_export]
macro_rules! pin_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn pins_of_the_presented_chain_pass() {
            $crate::suites::pins::pins_of_the_presented_chain_pass::<$backend>().await;
        }
        #[tokio::test]
        async fn a_wrong_pin_is_rejected_before_any_request() {
            $crate::suites::pins::a_wrong_pin_is_rejected_before_any_request::<$backend>().await;
        }
        #[tokio::test]
        async fn a_pin_with_ignore_unknown_ca_trusts_a_self_signed_server_by_its_key() {
            $crate::suites::pins::a_pin_with_ignore_unknown_ca_trusts_a_self_signed_server_by_its_key::<
                $backend,
            >()
            .await;
        }
        #[tokio::test]
        async fn security_a_pin_never_makes_a_failing_certificate_pass() {
            $crate::suites::pins::a_pin_never_makes_a_failing_certificate_pass::<$backend>().await;
        }
        #[tokio::test]
        async fn a_validator_rejects_with_its_hresult_before_any_request() {
            $crate::suites::pins::a_validator_rejects_with_its_hresult_before_any_request::<$backend>().await;
        }
        #[tokio::test]
        async fn an_accepting_validator_is_asked_once_per_host_port_and_cert() {
            $crate::suites::pins::an_accepting_validator_is_asked_once_per_host_port_and_cert::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn the_validator_is_asked_only_after_the_flags_passed() {
            $crate::suites::pins::the_validator_is_asked_only_after_the_flags_passed::<$backend>().await;
        }
    };
    ($backend:ty, refused) => {
        #[tokio::test]
        async fn pins_and_validators_are_refused_with_e_notimpl() {
            $crate::suites::pins::pins_and_validators_are_refused::<$backend>().await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::diagnose`](crate::suites::diagnose)
/// case: `diagnose_tests!(Backend)`.
#[macro_export]
macro_rules! diagnose_tests {
    ($backend:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn diagnose_agrees_with_the_matrix_on_every_leaf() {
            $crate::suites::diagnose::diagnose_agrees_with_the_matrix::<$backend>(false).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn diagnose_with_crl_agrees_with_the_matrix_on_every_leaf() {
            $crate::suites::diagnose::diagnose_agrees_with_the_matrix::<$backend>(true).await;
        }
        #[tokio::test]
        async fn diagnose_of_an_unreachable_server_is_an_error() {
            $crate::suites::diagnose::an_unreachable_server_is_an_error::<$backend>().await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::client_certs`](crate::suites::client_certs)
/// case: `client_cert_tests!(Backend)`, checking the backend against the
/// formats it declares (`TlsBackend::CLIENT_CERT_FORMATS`)
/// (it must refuse the others with `E_NOTIMPL` when they are set).
#[macro_export]
macro_rules! client_cert_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn client_cert_required_and_given_succeeds_and_the_server_sees_it() {
            $crate::suites::client_certs::required_and_given_succeeds_and_the_server_sees_it::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn client_cert_required_and_absent_is_cert_needed_and_sends_no_request() {
            $crate::suites::client_certs::required_and_absent_is_cert_needed_and_sends_no_request::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn client_cert_from_another_ca_is_a_secure_failure() {
            $crate::suites::client_certs::a_certificate_from_another_ca_is_a_secure_failure::<$backend>().await;
        }
        #[tokio::test]
        async fn client_cert_file_replaced_after_it_was_set_is_not_found() {
            $crate::suites::client_certs::a_certificate_file_replaced_after_it_was_set_is_not_found::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn client_cert_key_others_can_read_is_refused_at_load() {
            $crate::suites::client_certs::a_key_others_can_read_is_refused_at_load::<$backend>().await;
        }
        #[tokio::test]
        async fn client_cert_pkcs12_needs_its_password() {
            $crate::suites::client_certs::pkcs12_needs_its_password::<$backend>().await;
        }
        #[tokio::test]
        async fn client_cert_non_pkcs8_keys_load_or_are_refused_at_load() {
            $crate::suites::client_certs::non_pkcs8_keys_load_or_are_refused_at_load::<$backend>().await;
        }
        #[tokio::test]
        async fn client_cert_missing_or_mismatched_files_are_refused_at_load() {
            $crate::suites::client_certs::missing_or_mismatched_files_are_refused_at_load::<$backend>().await;
        }
        #[tokio::test]
        async fn client_cert_optional_and_absent_succeeds() {
            $crate::suites::client_certs::optional_and_absent_succeeds::<$backend>().await;
        }
        #[tokio::test]
        async fn client_cert_never_reuses_a_connection_made_without_one() {
            $crate::suites::client_certs::a_certificate_never_reuses_a_connection_made_without_one::<$backend>()
                .await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::proxies`](crate::suites::proxies)
/// case, with real tinyproxy and microsocks: `proxy_tests!(Backend)` for a
/// backend that honours `IGNORE_DATE` (0x4) and `ENABLE_CRL_CHECK`, or
/// `proxy_tests!(Backend, refuses_ignore_date_and_crl)` for one that
/// refuses both (native: the refusal of 0x4 is checked instead, and the CRL
/// case is left out).
#[macro_export]
macro_rules! proxy_tests {
    ($backend:ty) => {
        $crate::proxy_tests!(@cases $backend, true);
        #[tokio::test]
        async fn proxies_crl_checking_reconnects_through_the_same_proxy() {
            $crate::suites::proxies::crl_checking_reconnects_through_the_same_proxy::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_crl_reconnect_goes_through_an_authenticated_proxy() {
            $crate::suites::proxies::crl_reconnect_goes_through_an_authenticated_proxy::<$backend>().await;
        }
    };
    ($backend:ty, refuses_ignore_date_and_crl) => {
        $crate::proxy_tests!(@cases $backend, false);
    };
    (@cases $backend:ty, $honours_ignore_date:expr) => {
        #[tokio::test]
        async fn proxies_https_goes_through_a_connect_tunnel() {
            $crate::suites::proxies::https_goes_through_a_connect_tunnel::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_the_flags_apply_to_the_origin_through_the_tunnel() {
            $crate::suites::proxies::the_flags_apply_to_the_origin_through_the_tunnel::<$backend>(
                $honours_ignore_date,
            )
            .await;
        }
        #[tokio::test]
        async fn proxies_http_goes_to_the_proxy_in_absolute_form() {
            $crate::suites::proxies::http_goes_to_the_proxy_in_absolute_form::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_socks5_carries_https_and_http() {
            $crate::suites::proxies::socks5_carries_https_and_http::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_the_next_proxy_is_tried_when_one_refuses_connections() {
            $crate::suites::proxies::the_next_proxy_is_tried_when_one_refuses_connections::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_bypassed_hosts_go_direct() {
            $crate::suites::proxies::bypassed_hosts_go_direct::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_no_proxy_is_direct_and_preconfig_follows_the_environment() {
            $crate::suites::proxies::no_proxy_is_direct_and_preconfig_follows_the_environment::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn proxies_a_proxy_refusing_the_tunnel_is_its_http_status() {
            $crate::suites::proxies::a_proxy_refusing_the_tunnel_is_its_http_status::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_unreachable_proxies_are_cannot_connect() {
            $crate::suites::proxies::unreachable_proxies_are_cannot_connect::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_a_proxied_connection_never_serves_a_direct_policy() {
            $crate::suites::proxies::a_proxied_connection_never_serves_a_direct_policy::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_https_through_a_proxy_with_basic_credentials() {
            $crate::suites::proxies::https_through_a_proxy_with_basic_credentials::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_http_through_a_proxy_with_basic_credentials() {
            $crate::suites::proxies::http_through_a_proxy_with_basic_credentials::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_a_proxy_refusing_credentials_is_407_after_one_answer() {
            $crate::suites::proxies::a_proxy_refusing_credentials_is_407_after_one_answer::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_an_authenticated_tunnel_never_serves_other_credentials() {
            $crate::suites::proxies::an_authenticated_tunnel_never_serves_other_credentials::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn proxies_socks5_with_a_user_name_and_password() {
            $crate::suites::proxies::socks5_with_a_user_name_and_password::<$backend>().await;
        }
        #[tokio::test]
        async fn proxies_https_through_a_proxy_with_digest_credentials() {
            $crate::suites::proxies::https_through_a_proxy_with_digest_credentials::<$backend>().await;
        }
    };
}

/// The cases of [`suites::credentials`](crate::suites::credentials) for
/// `$backend`, one test per case: server credentials over https, answered
/// by the engine over the backend's transport.
#[macro_export]
macro_rules! credential_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn credentials_basic_over_https_is_answered_then_sent_first() {
            $crate::suites::credentials::basic_over_https_is_answered_then_sent_first::<$backend>().await;
        }
        #[tokio::test]
        async fn credentials_digest_md5_over_https_is_answered_then_sent_first() {
            $crate::suites::credentials::digest_over_https_is_answered_then_sent_first::<$backend>(
                $crate::http::DigestAlgorithm::Md5,
            )
            .await;
        }
        #[tokio::test]
        async fn credentials_digest_sha256_over_https_is_answered_then_sent_first() {
            $crate::suites::credentials::digest_over_https_is_answered_then_sent_first::<$backend>(
                $crate::http::DigestAlgorithm::Sha256,
            )
            .await;
        }
        #[tokio::test]
        async fn credentials_a_wrong_password_fails_once() {
            $crate::suites::credentials::a_wrong_password_fails_once::<$backend>().await;
        }
    };
}

/// One `#[tokio::test]` per [`suites::http2`](crate::suites::http2) case:
/// `http2_tests!(Backend)`, each within
/// [`suites::http2::DEADLINE`](crate::suites::http2::DEADLINE).
#[macro_export]
macro_rules! http2_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn h2_a_download_over_h2_lands_whole_and_reports_h2() {
            $crate::suites::http2::within($crate::suites::http2::a_download_over_h2_lands_whole_and_reports_h2::<
                $backend,
            >())
            .await;
        }
        #[tokio::test]
        async fn h2_an_http1_server_is_spoken_to_over_http1() {
            $crate::suites::http2::within($crate::suites::http2::an_http1_server_is_spoken_to_over_http1::<$backend>())
                .await;
        }
        #[tokio::test]
        async fn h2_many_small_files_over_h2_run_as_many_streams() {
            $crate::suites::http2::within(
                $crate::suites::http2::many_small_files_over_h2_run_as_many_streams::<$backend>(),
            )
            .await;
        }
        #[tokio::test]
        async fn h2_a_job_of_one_file_speaks_http1_on_connections_of_its_own() {
            $crate::suites::http2::within(
                $crate::suites::http2::a_job_of_one_file_speaks_http1_on_connections_of_its_own::<$backend>(),
            )
            .await;
        }
        #[tokio::test]
        async fn h2_plain_http_stays_http1() {
            $crate::suites::http2::within($crate::suites::http2::plain_http_stays_http1::<$backend>()).await;
        }
        #[tokio::test]
        async fn h2_requests_of_one_policy_share_one_h2_connection() {
            $crate::suites::http2::within(
                $crate::suites::http2::requests_of_one_policy_share_one_h2_connection::<$backend>(),
            )
            .await;
        }
        #[tokio::test]
        async fn h2_two_flag_values_to_one_h2_origin_use_two_connections() {
            $crate::suites::http2::within(
                $crate::suites::http2::two_flag_values_to_one_h2_origin_use_two_connections::<$backend>(),
            )
            .await;
        }
        #[tokio::test]
        async fn h2_a_relaxed_h2_connection_never_serves_a_strict_request() {
            $crate::suites::http2::within(
                $crate::suites::http2::a_relaxed_h2_connection_never_serves_a_strict_request::<$backend>(),
            )
            .await;
        }
        #[tokio::test]
        async fn h2_two_client_certificates_to_one_h2_origin_use_two_connections() {
            $crate::suites::http2::within(
                $crate::suites::http2::two_client_certificates_to_one_h2_origin_use_two_connections::<$backend>(),
            )
            .await;
        }
        #[tokio::test]
        async fn h2_a_refused_client_certificate_is_classified_as_over_http1() {
            $crate::suites::http2::within(
                $crate::suites::http2::a_refused_client_certificate_is_classified_as_over_http1::<$backend>(),
            )
            .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn h2_conformance_verdicts_are_the_same_over_h2() {
            $crate::suites::http2::conformance_verdicts_are_the_same_over_h2::<$backend>().await;
        }
        #[tokio::test]
        async fn h2_is_offered_inside_a_connect_tunnel_and_a_route_keeps_its_connection() {
            $crate::suites::http2::within(
                $crate::suites::http2::h2_is_offered_inside_a_connect_tunnel_and_a_route_keeps_its_connection::<
                    $backend,
                >(),
            )
            .await;
        }
    };
}
