//! Routing through proxies (`docs/spec/http-options.md`, "Proxies"), the
//! same on every backend: REAL tinyproxy (HTTP, `CONNECT`) and microsocks
//! (SOCKS5) from [`crate::proxies`], real TLS and HTTP servers on
//! 127.0.0.1. Each transport is given its environment
//! ([`bits_http::proxy::ProxyEnv`], empty unless a case sets one), so no
//! case reads or changes the test process's environment.
//!
//! Run by [`proxy_tests!`](crate::proxy_tests).

use std::sync::Arc;

use bits_core::{
    AuthScheme, AuthTarget, BitsError, ConnectionPolicy, Credentials, ProxySettings, Request, SecurityFlags,
    Transport,
};
use bits_http::proxy::ProxyEnv;
use bits_http::{HttpOptions, TlsBackend, TlsTransport};
use url::Url;

use crate::crl::CrlServer;
use crate::http::{HttpServer, Route};
use crate::pki::{LeafKind, TestPki};
use crate::proxies::{free_port, DigestProxy, RealProxy};
use crate::temp::TempDir;
use crate::tls::TlsServer;

const DATE: u32 = 0x8007_2F05;
const CANNOT_CONNECT: u32 = 0x8007_2EFD;
const E_NOTIMPL: u32 = 0x8000_4001;
const HTTP_403: u32 = 0x8019_0193;
const HTTP_407: u32 = 0x8019_0197;

/// The user and password the guarded proxies of these cases take.
const USER: &str = "proxyuser";
const PASSWORD: &str = "proxy-secret";

/// The body every origin of these cases serves at `/file`.
pub const BODY: &[u8] = b"bits-testkit: through a proxy, or not\n";

/// A transport trusting [`TestPki::shared`]'s root, routing `preconfig`
/// by `env` (never the process's).
pub fn transport<B: TlsBackend>(env: ProxyEnv) -> TlsTransport<B> {
    transport_with::<B>(TestPki::shared(), &crate::backend::unused_crl_cache(), env)
}

/// A transport trusting `pki`'s root, its CRL cache in `crl_cache`,
/// routing `preconfig` by `env`.
pub fn transport_with<B: TlsBackend>(
    pki: &TestPki,
    crl_cache: &std::path::Path,
    env: ProxyEnv,
) -> TlsTransport<B> {
    TlsTransport::<B>::builder()
        .add_root_pem(pki.root_pem())
        .expect("the backend takes the test root")
        .system_roots(false)
        .crl_cache_dir(crl_cache)
        .http_options(HttpOptions {
            proxy_env: Some(Arc::new(env)),
            ..HttpOptions::default()
        })
        .build()
        .expect("a transport")
}

/// An https origin presenting `leaf`, serving [`BODY`] at `/file`.
pub fn https_origin(leaf: LeafKind) -> HttpServer {
    crate::tls::https_server(TestPki::shared().leaf(leaf)).with("/file", Route::body(BODY))
}

/// A plain http origin serving [`BODY`] at `/file`.
pub fn http_origin() -> HttpServer {
    HttpServer::start().with("/file", Route::body(BODY))
}

/// `override` through `proxies`, bypassing `bypass`.
pub fn through(proxies: &str, bypass: &str) -> ProxySettings {
    ProxySettings::override_with(proxies, bypass).expect("valid proxy settings")
}

/// The policy of certificate `flags` routed by `proxy`.
pub fn policy(flags: u32, proxy: ProxySettings) -> ConnectionPolicy {
    ConnectionPolicy::new(SecurityFlags::new(flags).expect("a valid flag value")).with_proxy(proxy)
}

/// GETs `url` and reads the whole body: the status (the body checked to
/// be [`BODY`] on a 200), or the error.
pub async fn get<T: Transport + ?Sized>(
    t: &T,
    url: &str,
    policy: &ConnectionPolicy,
) -> Result<u16, BitsError> {
    let url = Url::parse(url).expect("a URL");
    let mut response = t.send(Request::get(url, policy.clone())).await?;
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await? {
        body.extend_from_slice(&chunk);
    }
    if response.status == 200 {
        assert_eq!(body, BODY, "the origin's body");
    }
    Ok(response.status)
}

fn code(r: Result<u16, BitsError>) -> Result<u16, u32> {
    r.map_err(|e| e.hresult().0)
}

fn gets(proxy: &RealProxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| !r.starts_with("CONNECT "))
        .collect()
}

/// https through tinyproxy's `CONNECT` under 0x0: 200; the proxy logged
/// the tunnel to the origin's address and no request; the origin served
/// the request itself.
pub async fn https_goes_through_a_connect_tunnel<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let p = policy(0, through(&proxy.url(), ""));
    assert_eq!(code(get(&t, &origin.url("/file"), &p).await), Ok(200));
    let connects = proxy.connects();
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert!(
        connects[0].starts_with(&format!("{} ", origin.addr())),
        "{connects:?}"
    );
    assert!(
        gets(&proxy).is_empty(),
        "the proxy saw a request: {:?}",
        proxy.requests()
    );
    assert_eq!(origin.requests_for("/file").len(), 1, "the origin served it");
}

/// The flags apply to the origin through the tunnel: an expired origin
/// fails 0x80072F05 under 0x0; under 0x4 (`IGNORE_DATE`) it passes when
/// the backend honours 0x4, and is refused with `E_NOTIMPL` before any
/// connection when it does not. The proxy only ever sees `CONNECT`.
pub async fn the_flags_apply_to_the_origin_through_the_tunnel<B: TlsBackend>(honours_ignore_date: bool) {
    let proxy = RealProxy::tinyproxy();
    let origin = https_origin(LeafKind::Expired);
    let t = transport::<B>(ProxyEnv::empty());
    let url = origin.url("/file");
    assert_eq!(
        code(get(&t, &url, &policy(0, through(&proxy.url(), ""))).await),
        Err(DATE)
    );
    assert_eq!(proxy.connects().len(), 1);
    let relaxed = policy(0x4, through(&proxy.url(), ""));
    if honours_ignore_date {
        assert_eq!(code(get(&t, &url, &relaxed).await), Ok(200));
        assert_eq!(proxy.connects().len(), 2);
        assert_eq!(origin.requests_for("/file").len(), 1);
    } else {
        assert_eq!(
            t.check_policy(&relaxed).map_err(|e| e.hresult().0),
            Err(E_NOTIMPL)
        );
        assert_eq!(code(get(&t, &url, &relaxed).await), Err(E_NOTIMPL));
        assert_eq!(proxy.connects().len(), 1, "a refused policy never connects");
    }
    assert!(gets(&proxy).is_empty(), "{:?}", proxy.requests());
}

/// http through tinyproxy: an absolute-form request to the proxy, which
/// the origin then serves.
pub async fn http_goes_to_the_proxy_in_absolute_form<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let origin = http_origin();
    let t = transport::<B>(ProxyEnv::empty());
    let url = origin.url("/file");
    assert_eq!(
        code(get(&t, &url, &policy(0, through(&proxy.url(), ""))).await),
        Ok(200)
    );
    assert_eq!(proxy.requests(), vec![format!("GET {url} HTTP/1.1")]);
    assert!(proxy.connects().is_empty());
    assert_eq!(origin.requests_for("/file").len(), 1);
}

/// SOCKS5 through microsocks (the proxy resolving names), for https (TLS
/// end to end under the flags) and for http; an origin the proxy cannot
/// reach is `CannotConnect`.
pub async fn socks5_carries_https_and_http<B: TlsBackend>() {
    let socks = RealProxy::microsocks();
    let tls = https_origin(LeafKind::Good);
    let plain = http_origin();
    let t = transport::<B>(ProxyEnv::empty());
    let p = policy(0, through(&socks.url(), ""));
    assert_eq!(code(get(&t, &tls.url("/file"), &p).await), Ok(200));
    // `localhost`: a name the proxy resolves (socks5h).
    let by_name = plain.url("/file").replace("127.0.0.1", "localhost");
    assert_eq!(code(get(&t, &by_name, &p).await), Ok(200));
    assert_eq!(tls.requests_for("/file").len(), 1);
    assert_eq!(plain.requests_for("/file").len(), 1);
    // Plain http through SOCKS is a tunnel: origin-form, as direct.
    assert_eq!(plain.requests()[0].target, "/file");
    // The flags still apply to the origin.
    let expired = https_origin(LeafKind::Expired);
    assert_eq!(code(get(&t, &expired.url("/file"), &p).await), Err(DATE));
    // The proxy cannot reach the origin (its SOCKS reply says so):
    // CannotConnect, transient, with the proxy's words.
    let nowhere = format!("https://127.0.0.1:{}/file", free_port());
    let err = get(&t, &nowhere, &p).await.unwrap_err();
    assert_eq!(err.hresult().0, CANNOT_CONNECT, "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&socks.url()), "{err}");
}

/// An override list whose first proxy refuses connections: the second
/// carries the request.
pub async fn the_next_proxy_is_tried_when_one_refuses_connections<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let closed = format!("http://127.0.0.1:{}", free_port());
    let p = policy(0, through(&format!("{closed} {}", proxy.url()), ""));
    assert_eq!(code(get(&t, &origin.url("/file"), &p).await), Ok(200));
    assert_eq!(proxy.connects().len(), 1);
}

/// Bypassed hosts go direct: `127.0.0.1` for the address, `<local>` for
/// `localhost`; the proxy sees nothing.
pub async fn bypassed_hosts_go_direct<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let url = origin.url("/file");
    let p = policy(0, through(&proxy.url(), "example.org 127.0.0.1"));
    assert_eq!(code(get(&t, &url, &p).await), Ok(200));
    let local = policy(0, through(&proxy.url(), "<local>"));
    let localhost = url.replace("127.0.0.1", "localhost");
    assert_eq!(code(get(&t, &localhost, &local).await), Ok(200));
    assert_eq!(origin.requests_for("/file").len(), 2);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    // The same `<local>` list does not bypass the address.
    assert_eq!(code(get(&t, &url, &local).await), Ok(200));
    assert_eq!(proxy.connects().len(), 1);
}

/// `no_proxy` is direct even with proxy variables set; `preconfig` under
/// the same environment goes through the proxy (`https_proxy`), except for
/// hosts in its `no_proxy`, and never by the upper-case `HTTP_PROXY`.
pub async fn no_proxy_is_direct_and_preconfig_follows_the_environment<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let tls = https_origin(LeafKind::Good);
    let plain = http_origin();
    let env = |extra: &[(&str, String)]| {
        let mut vars = vec![
            ("https_proxy", proxy.url()),
            ("HTTP_PROXY", proxy.url()),
            ("ALL_PROXY", String::new()),
        ];
        vars.extend(extra.iter().cloned());
        ProxyEnv::from_lookup(move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
    };
    let t = transport::<B>(env(&[]));
    let direct = policy(0, ProxySettings::no_proxy());
    assert_eq!(code(get(&t, &tls.url("/file"), &direct).await), Ok(200));
    assert_eq!(code(get(&t, &plain.url("/file"), &direct).await), Ok(200));
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    let preconfig = policy(0, ProxySettings::preconfig());
    assert_eq!(code(get(&t, &tls.url("/file"), &preconfig).await), Ok(200));
    assert_eq!(proxy.connects().len(), 1, "https_proxy");
    // http: HTTP_PROXY is ignored and ALL_PROXY is empty: direct.
    assert_eq!(code(get(&t, &plain.url("/file"), &preconfig).await), Ok(200));
    assert!(gets(&proxy).is_empty(), "{:?}", proxy.requests());
    let excepted = transport::<B>(env(&[("no_proxy", "example.org,127.0.0.0/8".into())]));
    assert_eq!(code(get(&excepted, &tls.url("/file"), &preconfig).await), Ok(200));
    assert_eq!(proxy.connects().len(), 1, "no_proxy");
    assert_eq!(tls.requests_for("/file").len(), 3);
}

/// A proxy that answers `CONNECT` with 403 (tinyproxy allowing port 443
/// only): `BG_E_HTTP_ERROR_403`, fatal, and the origin sees nothing; no
/// later proxy of the list is tried. One that demands credentials (407):
/// `0x80190197`, fatal.
pub async fn a_proxy_refusing_the_tunnel_is_its_http_status<B: TlsBackend>() {
    let strict = RealProxy::tinyproxy_with("ConnectPort 443");
    let second = RealProxy::tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let p = policy(0, through(&format!("{} {}", strict.url(), second.url()), ""));
    let err = get(&t, &origin.url("/file"), &p).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_403, "{err}");
    assert!(!err.is_transient());
    assert_eq!(strict.connects().len(), 1);
    assert!(second.requests().is_empty(), "no fallback after an answer");
    assert_eq!(origin.requests().len(), 0);
    assert_eq!(origin.handshakes_ok(), 0);
    // A proxy that wants credentials the job does not have: 407 is
    // `0x80190197`, fatal, for https and http URLs alike.
    let guarded = RealProxy::tinyproxy_with("BasicAuth user secret");
    let p = policy(0, through(&guarded.url(), ""));
    let err = get(&t, &origin.url("/file"), &p).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(!err.is_transient());
    let plain = http_origin();
    assert_eq!(code(get(&t, &plain.url("/file"), &p).await), Err(HTTP_407));
    assert!(plain.requests().is_empty());
}

/// Proxy credentials of `scheme` for `user` with `password`.
pub fn proxy_credentials(scheme: AuthScheme, user: &str, password: &str) -> Credentials {
    Credentials::new(AuthTarget::Proxy, scheme, user, password).expect("valid credentials")
}

/// `policy(flags, through(proxy))` with basic proxy credentials `user`,
/// `password`.
fn guarded_policy(flags: u32, proxy: &RealProxy, user: &str, password: &str) -> ConnectionPolicy {
    policy(flags, through(&proxy.url(), "")).with_proxy_credentials(&[proxy_credentials(
        AuthScheme::Basic,
        user,
        password,
    )])
}

/// tinyproxy with `BasicAuth` [`USER`] [`PASSWORD`].
fn guarded_tinyproxy() -> RealProxy {
    RealProxy::tinyproxy_with(&format!("BasicAuth {USER} {PASSWORD}"))
}

/// https through a `CONNECT` tunnel of a proxy that wants Basic
/// credentials: the first `CONNECT` draws a 407, the second (on a new
/// connection) carries the answer and opens the tunnel; a later tunnel to
/// the same proxy sends the answer first (one `CONNECT`). The flags still
/// apply to the origin.
pub async fn https_through_a_proxy_with_basic_credentials<B: TlsBackend>() {
    let proxy = guarded_tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let other = https_origin(LeafKind::Good);
    let expired = https_origin(LeafKind::Expired);
    let t = transport::<B>(ProxyEnv::empty());
    let p = guarded_policy(0, &proxy, USER, PASSWORD);
    assert_eq!(code(get(&t, &origin.url("/file"), &p).await), Ok(200));
    let connects = proxy.connects();
    assert_eq!(connects.len(), 2, "challenged, then answered: {connects:?}");
    assert!(connects
        .iter()
        .all(|c| c.starts_with(&format!("{} ", origin.addr()))));
    assert_eq!(origin.requests_for("/file").len(), 1);
    // Another origin, a new tunnel: the answer goes first.
    assert_eq!(code(get(&t, &other.url("/file"), &p).await), Ok(200));
    assert_eq!(proxy.connects().len(), 3, "pre-emptive: {:?}", proxy.connects());
    // The flags apply to the origin, not the proxy.
    assert_eq!(code(get(&t, &expired.url("/file"), &p).await), Err(DATE));
    assert_eq!(proxy.connects().len(), 4, "{:?}", proxy.connects());
    assert!(gets(&proxy).is_empty(), "{:?}", proxy.requests());
}

/// http through a proxy that wants Basic credentials: the absolute-form
/// request draws a 407 and is sent once more with the answer; a later
/// request sends it first (one request).
pub async fn http_through_a_proxy_with_basic_credentials<B: TlsBackend>() {
    let proxy = guarded_tinyproxy();
    let origin = http_origin();
    let t = transport::<B>(ProxyEnv::empty());
    let p = guarded_policy(0, &proxy, USER, PASSWORD);
    let url = origin.url("/file");
    assert_eq!(code(get(&t, &url, &p).await), Ok(200));
    let line = format!("GET {url} HTTP/1.1");
    assert_eq!(proxy.requests(), vec![line.clone(), line.clone()]);
    assert_eq!(origin.requests_for("/file").len(), 1);
    assert!(
        origin.requests()[0].header("proxy-authorization").is_none(),
        "the proxy does not pass its credentials on"
    );
    // Another origin (a new connection to the proxy: tinyproxy closes
    // each one after its response, without saying so): the answer goes
    // first.
    let other = http_origin();
    assert_eq!(code(get(&t, &other.url("/file"), &p).await), Ok(200));
    assert_eq!(proxy.requests().len(), 3, "pre-emptive: {:?}", proxy.requests());
    assert_eq!(other.requests_for("/file").len(), 1);
}

/// Credentials the proxy refuses: `0x80190197`, fatal, after exactly one
/// answer (two `CONNECT`s, two requests: no loop), naming the user and
/// never the password (tinyproxy refuses with 401, see below). No credentials at all: one `CONNECT`, and the
/// message says how to set them.
pub async fn a_proxy_refusing_credentials_is_407_after_one_answer<B: TlsBackend>() {
    let proxy = guarded_tinyproxy();
    let tls = https_origin(LeafKind::Good);
    let plain = http_origin();
    let t = transport::<B>(ProxyEnv::empty());
    let none = policy(0, through(&proxy.url(), ""));
    let err = get(&t, &tls.url("/file"), &none).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("set-credentials"), "{err}");
    assert_eq!(proxy.connects().len(), 1);
    let wrong = guarded_policy(0, &proxy, USER, "not-the-password");
    let err = get(&t, &tls.url("/file"), &wrong).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains(USER) && text.contains("refused"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert_eq!(proxy.connects().len(), 3, "one answer: {:?}", proxy.connects());
    // tinyproxy answers refused credentials with 401 (to `CONNECT` that
    // is the proxy's refusal, above); to an absolute-form request it
    // cannot be told from the origin's 401: it is the response, after
    // exactly one answer.
    assert_eq!(code(get(&t, &plain.url("/file"), &wrong).await), Ok(401));
    assert_eq!(gets(&proxy).len(), 2, "one answer: {:?}", proxy.requests());
    assert!(plain.requests().is_empty());
    assert_eq!(tls.requests().len(), 0);
}

/// A tunnel a proxy opened for one user never carries a request of a
/// policy with other credentials, or none: pools are per policy, and the
/// policy holds the proxy credentials. Each policy makes its own
/// `CONNECT`s, and the kept answer is its own.
pub async fn an_authenticated_tunnel_never_serves_other_credentials<B: TlsBackend>() {
    let proxy = guarded_tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let url = origin.url("/file");
    let good = guarded_policy(0, &proxy, USER, PASSWORD);
    assert_eq!(code(get(&t, &url, &good).await), Ok(200));
    assert_eq!(code(get(&t, &url, &good).await), Ok(200));
    assert_eq!(proxy.connects().len(), 2, "one tunnel, reused");
    let none = policy(0, through(&proxy.url(), ""));
    assert_eq!(code(get(&t, &url, &none).await), Err(HTTP_407));
    assert_eq!(proxy.connects().len(), 3);
    let other = guarded_policy(0, &proxy, "someone-else", PASSWORD);
    assert_eq!(code(get(&t, &url, &other).await), Err(HTTP_407));
    assert_eq!(proxy.connects().len(), 5, "{:?}", proxy.connects());
    assert_eq!(origin.requests_for("/file").len(), 2);
    assert_eq!(t.http().connections_made(&none), 0);
}

/// SOCKS5 with a user name and password (RFC 1929, microsocks `-u -P`)
/// from basic proxy credentials, for https and http; a wrong password, no
/// credentials, or digest ones only: `0x80190197`, fatal, naming the
/// user, never the password.
pub async fn socks5_with_a_user_name_and_password<B: TlsBackend>() {
    let socks = RealProxy::microsocks_with_auth(USER, PASSWORD);
    let tls = https_origin(LeafKind::Good);
    let plain = http_origin();
    let t = transport::<B>(ProxyEnv::empty());
    let p = guarded_policy(0, &socks, USER, PASSWORD);
    assert_eq!(code(get(&t, &tls.url("/file"), &p).await), Ok(200));
    assert_eq!(code(get(&t, &plain.url("/file"), &p).await), Ok(200));
    assert_eq!(tls.requests_for("/file").len(), 1);
    assert_eq!(plain.requests_for("/file").len(), 1);
    assert!(
        plain.requests()[0].header("proxy-authorization").is_none(),
        "nothing for the proxy reaches the origin"
    );
    let wrong = guarded_policy(0, &socks, USER, "not-the-password");
    let err = get(&t, &tls.url("/file"), &wrong).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains(USER), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    let none = policy(0, through(&socks.url(), ""));
    let err = get(&t, &plain.url("/file"), &none).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(err.to_string().contains("set-credentials"), "{err}");
    let digest = policy(0, through(&socks.url(), "")).with_proxy_credentials(&[proxy_credentials(
        AuthScheme::Digest,
        USER,
        PASSWORD,
    )]);
    let err = get(&t, &tls.url("/file"), &digest).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(err.to_string().contains("basic only"), "{err}");
    assert_eq!(tls.requests_for("/file").len(), 1);
    assert_eq!(plain.requests_for("/file").len(), 1);
}

/// Proxies that refuse connections: `CannotConnect` (0x80072EFD),
/// transient, naming them.
pub async fn unreachable_proxies_are_cannot_connect<B: TlsBackend>() {
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let (a, b) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("socks5h://127.0.0.1:{}", free_port()),
    );
    let p = policy(0, through(&format!("{a};{b}"), ""));
    let err = get(&t, &origin.url("/file"), &p).await.unwrap_err();
    assert_eq!(err.hresult().0, CANNOT_CONNECT, "{err}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains(&a) && text.contains(&b), "{text}");
    assert_eq!(origin.connections(), 0);
}

/// A connection made through a proxy never serves a policy without it
/// (nor the reverse): pools are per policy, and the policy holds the
/// proxy settings.
pub async fn a_proxied_connection_never_serves_a_direct_policy<B: TlsBackend>() {
    let proxy = RealProxy::tinyproxy();
    let origin = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let url = origin.url("/file");
    let proxied = policy(0, through(&proxy.url(), ""));
    let direct = policy(0, ProxySettings::no_proxy());
    for p in [&proxied, &direct, &proxied, &direct] {
        assert_eq!(code(get(&t, &url, p).await), Ok(200));
    }
    assert_eq!(t.http().connections_made(&proxied), 1);
    assert_eq!(t.http().connections_made(&direct), 1);
    assert_eq!(proxy.connects().len(), 1, "one tunnel, reused");
    let conns: Vec<usize> = origin.requests().iter().map(|r| r.connection).collect();
    assert_eq!(conns.len(), 4);
    assert_eq!(conns[0], conns[2]);
    assert_eq!(conns[1], conns[3]);
    assert_ne!(conns[0], conns[1]);
}

/// `ENABLE_CRL_CHECK` through a `CONNECT` tunnel: the first handshake
/// lacks the CRL, which is downloaded (by the process environment's route:
/// direct here), and the reconnect goes through the proxy again (a second
/// `CONNECT`), never to the proxy's address as if it were the origin.
pub async fn crl_checking_reconnects_through_the_same_proxy<B: TlsBackend>() {
    let crls = CrlServer::start();
    crls.serve_pki(TestPki::shared());
    let pki = TestPki::shared().with_crl_base(&crls.base_url());
    let origin = TlsServer::start(pki.leaf(LeafKind::Good));
    let cache = TempDir::new("proxied-crl");
    let proxy = RealProxy::tinyproxy();
    let t = transport_with::<B>(&pki, cache.path(), ProxyEnv::empty());
    let p = policy(SecurityFlags::ENABLE_CRL_CHECK, through(&proxy.url(), ""));
    let status = async {
        let mut r = t.send(Request::get(origin.url("/file"), p.clone())).await?;
        while r.body.next_chunk().await?.is_some() {}
        Ok::<u16, BitsError>(r.status)
    };
    assert_eq!(code(status.await), Ok(200));
    assert_eq!(crls.requests("/root.crl"), 1);
    let connects = proxy.connects();
    assert_eq!(
        connects.len(),
        2,
        "the reconnect went through the proxy: {connects:?}"
    );
    assert!(connects
        .iter()
        .all(|c| c.starts_with(&format!("{} ", origin.addr()))));
    assert_eq!(origin.request_count(), 1);
}

/// A proxy that wants Digest (SHA-256) for `CONNECT` (the scripted
/// [`DigestProxy`]: neither real proxy speaks Digest): one challenged
/// `CONNECT`, one answered (`nc` 1); a later tunnel answers first with
/// the next nonce count (one `CONNECT`); a wrong password is `0x80190197`
/// after exactly one answer.
pub async fn https_through_a_proxy_with_digest_credentials<B: TlsBackend>() {
    let proxy = DigestProxy::start(USER, PASSWORD);
    let origin = https_origin(LeafKind::Good);
    let other = https_origin(LeafKind::Good);
    let t = transport::<B>(ProxyEnv::empty());
    let digest = |password: &str| {
        policy(0, through(&proxy.url(), "")).with_proxy_credentials(&[proxy_credentials(
            AuthScheme::Digest,
            USER,
            password,
        )])
    };
    let p = digest(PASSWORD);
    assert_eq!(code(get(&t, &origin.url("/file"), &p).await), Ok(200));
    let seen = proxy.connects();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].nc.as_deref(), seen[0].accepted), (None, false));
    assert_eq!(
        (seen[1].nc.as_deref(), seen[1].accepted),
        (Some("00000001"), true)
    );
    assert_eq!(seen[1].target, origin.addr().to_string());
    assert_eq!(code(get(&t, &other.url("/file"), &p).await), Ok(200));
    let seen = proxy.connects();
    assert_eq!(seen.len(), 3, "pre-emptive: {seen:?}");
    assert_eq!(
        (seen[2].nc.as_deref(), seen[2].accepted),
        (Some("00000002"), true)
    );
    let wrong = digest("not-the-password");
    let err = get(&t, &origin.url("/file"), &wrong).await.unwrap_err();
    assert_eq!(err.hresult().0, HTTP_407, "{err}");
    assert!(err.to_string().contains("digest credentials for user"), "{err}");
    assert_eq!(proxy.connects().len(), 5, "one answer: {:?}", proxy.connects());
}

/// `ENABLE_CRL_CHECK` through a proxy that wants Basic credentials: the
/// reconnect after the CRL download takes the same authenticated way,
/// sending the kept answer first (three `CONNECT`s: challenged, answered,
/// the reconnect's).
pub async fn crl_reconnect_goes_through_an_authenticated_proxy<B: TlsBackend>() {
    let crls = CrlServer::start();
    crls.serve_pki(TestPki::shared());
    let pki = TestPki::shared().with_crl_base(&crls.base_url());
    let origin = TlsServer::start(pki.leaf(LeafKind::Good));
    let cache = TempDir::new("proxied-crl-auth");
    let proxy = guarded_tinyproxy();
    let t = transport_with::<B>(&pki, cache.path(), ProxyEnv::empty());
    let p = guarded_policy(SecurityFlags::ENABLE_CRL_CHECK, &proxy, USER, PASSWORD);
    let status = async {
        let mut r = t.send(Request::get(origin.url("/file"), p.clone())).await?;
        while r.body.next_chunk().await?.is_some() {}
        Ok::<u16, BitsError>(r.status)
    };
    assert_eq!(code(status.await), Ok(200));
    assert_eq!(crls.requests("/root.crl"), 1);
    let connects = proxy.connects();
    assert_eq!(connects.len(), 3, "{connects:?}");
    assert!(connects
        .iter()
        .all(|c| c.starts_with(&format!("{} ", origin.addr()))));
    assert_eq!(origin.request_count(), 1);
}
