//! [`PlainHttp`] (bits-http's own transport, no TLS) through a REAL
//! tinyproxy: the routing is bits-http's, so it holds without a TLS
//! backend too. The TLS cases are in bits-testkit's `suites::proxies`, run
//! by every backend.

use std::sync::Arc;

use bits_core::{ConnectionPolicy, ProxySettings, Request, Transport};
use bits_http::proxy::ProxyEnv;
use bits_http::{HttpOptions, PlainHttp};
use bits_testkit::http::{HttpServer, Route};
use bits_testkit::proxies::RealProxy;
use url::Url;

fn plain(env: ProxyEnv) -> PlainHttp {
    PlainHttp::with_options(HttpOptions {
        proxy_env: Some(Arc::new(env)),
        ..HttpOptions::default()
    })
}

async fn status(t: &PlainHttp, url: &str, proxy: ProxySettings) -> u16 {
    let policy = ConnectionPolicy::default().with_proxy(proxy);
    let mut r = t
        .send(Request::get(Url::parse(url).unwrap(), policy))
        .await
        .unwrap();
    while r.body.next_chunk().await.unwrap().is_some() {}
    r.status
}

#[tokio::test]
async fn proxies_plain_http_goes_absolute_form_through_http_proxy_from_the_environment() {
    let proxy = RealProxy::tinyproxy();
    let origin = HttpServer::start().with("/a", Route::body("a"));
    let url = origin.url("/a");
    let env = {
        let p = proxy.url();
        ProxyEnv::from_lookup(move |name| (name == "http_proxy").then(|| p.clone()))
    };
    let t = plain(env);
    assert_eq!(status(&t, &url, ProxySettings::preconfig()).await, 200);
    assert_eq!(proxy.requests(), vec![format!("GET {url} HTTP/1.1")]);
    // The origin got it from the proxy, in origin-form.
    assert_eq!(origin.requests()[0].target, "/a");
    // no_proxy: direct, the proxy sees nothing more.
    assert_eq!(status(&t, &url, ProxySettings::no_proxy()).await, 200);
    assert_eq!(proxy.requests().len(), 1);
    // A status from the proxy for an http URL is a response, as from a
    // server: tinyproxy cannot reach a closed port.
    let closed = format!("http://127.0.0.1:{}/x", bits_testkit::proxies::free_port());
    assert_eq!(status(&t, &closed, ProxySettings::preconfig()).await, 500);
}

#[test]
fn proxies_preconfig_with_an_unusable_variable_is_refused_by_check_policy() {
    let env = ProxyEnv::from_lookup(|name| (name == "https_proxy").then(|| "https://p:1".to_owned()));
    let t = plain(env);
    let preconfig = ConnectionPolicy::default();
    let e = t.check_policy(&preconfig).unwrap_err();
    assert_eq!(e.hresult().0, 0x8000_4001, "{e}");
    assert!(e.to_string().contains("https_proxy"), "{e}");
    assert!(t
        .check_policy(&preconfig.clone().with_proxy(ProxySettings::no_proxy()))
        .is_ok());
}

/// Proxy credentials through [`PlainHttp`]: an absolute-form request to a
/// proxy that wants Basic credentials is answered once and resent; a host
/// the same policy bypasses goes direct and never gets the kept
/// `Proxy-Authorization`; a request with a body that draws a 407 fails
/// `0x80190197` (its body cannot be sent again), never sent twice.
#[tokio::test]
async fn proxies_plain_http_answers_a_proxy_407_and_never_sends_proxy_credentials_direct() {
    use bits_core::{AuthScheme, AuthTarget, Credentials, Method, RequestBody};
    let proxy = RealProxy::tinyproxy_with("BasicAuth alice s3cret");
    let origin = HttpServer::start().with("/a", Route::body("a"));
    let t = plain(ProxyEnv::empty());
    let creds = [Credentials::new(AuthTarget::Proxy, AuthScheme::Basic, "alice", "s3cret").unwrap()];
    let policy = ConnectionPolicy::default()
        .with_proxy(ProxySettings::override_with(&proxy.url(), "localhost").unwrap())
        .with_proxy_credentials(&creds);
    let send = |url: String| {
        let policy = policy.clone();
        let t = t.clone();
        async move {
            let mut r = t.send(Request::get(Url::parse(&url).unwrap(), policy)).await?;
            while r.body.next_chunk().await?.is_some() {}
            Ok::<u16, bits_core::BitsError>(r.status)
        }
    };
    let url = origin.url("/a");
    assert_eq!(send(url.clone()).await.unwrap(), 200);
    assert_eq!(
        proxy.requests().len(),
        2,
        "challenged, answered: {:?}",
        proxy.requests()
    );
    // Bypassed: direct, without the kept answer.
    assert_eq!(send(url.replace("127.0.0.1", "localhost")).await.unwrap(), 200);
    assert_eq!(proxy.requests().len(), 2);
    assert_eq!(origin.requests().len(), 2);
    assert!(origin
        .requests()
        .iter()
        .all(|r| r.header("proxy-authorization").is_none()));
    // A body cannot be sent again: a fresh policy (no kept answer) draws
    // the 407 and fails.
    let fresh = ConnectionPolicy::default()
        .with_proxy(ProxySettings::override_with(&proxy.url(), "").unwrap())
        .with_proxy_credentials(&creds);
    let post =
        Request::new(Method::POST, Url::parse(&url).unwrap(), fresh).with_body(RequestBody::from_bytes("x"));
    let e = t.send(post).await.unwrap_err();
    assert_eq!(e.hresult().0, 0x8019_0197, "{e}");
    assert!(e.to_string().contains("cannot be sent again"), "{e}");
    assert_eq!(proxy.requests().len(), 3, "{:?}", proxy.requests());
}
