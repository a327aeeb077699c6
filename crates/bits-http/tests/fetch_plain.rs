//! fetch_plain: one GET for a CRL download.

use std::time::Duration;

use bits_core::{BitsError, Hresult};
use bits_http::fetch_plain;
use bits_testkit::http::{HttpServer, Route};
use url::Url;

const T: Duration = Duration::from_secs(10);

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[tokio::test]
async fn fetches_a_200_body() {
    let server = HttpServer::start().with("/ca.crl", Route::body(vec![9u8; 5000]));
    let body = fetch_plain(&url(&server.url("/ca.crl")), T, 1 << 20)
        .await
        .unwrap();
    assert_eq!(&body[..], &[9u8; 5000][..]);
}

#[tokio::test]
async fn any_other_status_is_an_http_error_and_redirects_are_not_followed() {
    let server = HttpServer::start()
        .with("/gone", Route::status(404))
        .with("/moved", Route::redirect(302, "/ca.crl"))
        .with("/ca.crl", Route::body("crl"));
    let err = fetch_plain(&url(&server.url("/gone")), T, 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::http_status(404));
    let err = fetch_plain(&url(&server.url("/moved")), T, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BitsError::HttpStatus { status: 302, .. }),
        "{err:?}"
    );
    assert!(server.requests_for("/ca.crl").is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let server = HttpServer::start().with("/big", Route::body(vec![0u8; 10_000]));
    let err = fetch_plain(&url(&server.url("/big")), T, 1000).await.unwrap_err();
    assert!(matches!(err, BitsError::InvalidServerResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn a_truncated_body_is_connection_reset() {
    let server = HttpServer::start().with("/cut", Route::body(vec![0u8; 10_000]).truncate_after(100));
    let err = fetch_plain(&url(&server.url("/cut")), T, 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_CONNECTION_ERROR, "{err}");
}

#[tokio::test]
async fn only_http_is_fetched() {
    let err = fetch_plain(&url("https://127.0.0.1:1/ca.crl"), T, 10)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::E_NOTIMPL);
    let err = fetch_plain(&url("ldap://127.0.0.1/ca.crl"), T, 10)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Hresult::WINHTTP_UNRECOGNIZED_SCHEME);
}
