//! [`HttpTransport`]: a [`Transport`] over hyper-util's pooling client, one
//! pool per [`ConnectionPolicy`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bits_core::{
    BitsError, ConnectionPolicy, Method, ProxyScheme, ProxyUrl, Request, Response, Transport, YieldStatus,
};
use http::header::{HeaderValue, CONTENT_LENGTH, PROXY_AUTHORIZATION, USER_AGENT};
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use crate::body::{HyperBody, OutgoingBody};
use crate::classify;
use crate::connector::{PolicyConnector, StreamFault, ViaHttpProxy};
use crate::proxy::{ProxyEnv, Route};
use crate::proxy_auth::{ProxyAuth, Sent};
use crate::tls::TlsConnect;

/// The `User-Agent` sent when the request has none: `bits/<version>`.
pub const USER_AGENT_VALUE: &str = concat!("bits/", env!("CARGO_PKG_VERSION"));

/// Timeouts and pooling of an [`HttpTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// DNS + TCP connect (default 30 s).
    pub connect_timeout: Duration,
    /// The TLS handshake, after TCP (default 30 s).
    pub handshake_timeout: Duration,
    /// From sending the request to the end of the response headers,
    /// connecting included (default 60 s).
    pub headers_timeout: Duration,
    /// The longest wait for the next body bytes (default 60 s).
    pub idle_timeout: Duration,
    /// How long an idle pooled connection is kept (default 30 s).
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host and policy (default 4).
    pub pool_max_idle_per_host: usize,
    /// The `User-Agent` when the request has none (default `bits/<version>`).
    pub user_agent: String,
    /// The environment a `preconfig` policy routes by (default `None`:
    /// the process's, read once when the first transport is built,
    /// [`ProxyEnv::process`]). Tests and embedders give their own.
    pub proxy_env: Option<Arc<ProxyEnv>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(30),
            headers_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 4,
            user_agent: USER_AGENT_VALUE.to_owned(),
            proxy_env: None,
        }
    }
}

type PolicyCheck = dyn Fn(&ConnectionPolicy) -> Result<(), BitsError> + Send + Sync;
type PolicyClient<C> = Client<PolicyConnector<C>, OutgoingBody>;

struct Pool<C: TlsConnect> {
    client: PolicyClient<C>,
    made: Arc<AtomicUsize>,
    /// The answers to proxies' 407s kept for the policy (shared with its
    /// connector).
    auth: ProxyAuth,
}

struct Inner<C: TlsConnect> {
    name: &'static str,
    tls: Arc<C>,
    check: Box<PolicyCheck>,
    options: HttpOptions,
    /// What `preconfig` routes by.
    env: Arc<ProxyEnv>,
    pools: Mutex<HashMap<ConnectionPolicy, Pool<C>>>,
}

/// A [`Transport`] made of hyper-util's client (HTTP/1.1, and HTTP/2 where
/// the TLS handshake negotiates `h2` by ALPN) and a backend's
/// [`TlsConnect`].
///
/// - One client (connection pool) per [`ConnectionPolicy`], created on
///   first use, so a connection or TLS session made under one policy never
///   serves another (`docs/spec/tls.md`, pitfall 9). The policy holds the
///   proxy settings, so a connection through one proxy never serves a
///   request routed another way. An HTTP/2 connection, which many requests
///   share at once, lives in its policy's pool like any other: requests of
///   another policy never see it.
/// - Each connection goes the way [`crate::proxy`] routes its URL under
///   the policy's proxy settings (see [`crate::proxy`] for the rules and
///   the connector for the proxy protocols).
/// - Redirects are never followed: a 3xx is a [`Response`].
/// - Any status is a [`Response`]; errors are network failures only,
///   classified as the `classify` table of this crate's docs says.
/// - Adds `Host` and, when absent, `User-Agent: bits/<version>`; user info
///   in the URL is dropped, never sent.
/// - An http proxy's 407 is answered with the policy's proxy credentials
///   (once per challenge): for an http URL sent to it in absolute form,
///   the request is sent once more with `Proxy-Authorization` (one
///   without a body: a body cannot be sent again, so a 407 to it is
///   `AuthFailed` 407), and the answer is sent first to that proxy later.
///   `Proxy-Authorization` goes only to an http proxy, never direct or
///   through SOCKS.
///
/// Cloning is cheap and shares the pools. Pooled connections are driven by
/// tasks of the tokio runtime that made them: use one transport within one
/// runtime.
pub struct HttpTransport<C: TlsConnect> {
    inner: Arc<Inner<C>>,
}

impl<C: TlsConnect> Clone for HttpTransport<C> {
    fn clone(&self) -> Self {
        HttpTransport {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: TlsConnect> fmt::Debug for HttpTransport<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("name", &self.inner.name)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<C: TlsConnect> HttpTransport<C> {
    /// A transport named `name` doing TLS with `tls`; `check` is the
    /// backend's [`Transport::check_policy`]: `Ok` for exactly the policies
    /// the backend honours. [`Transport::send`] calls it too, so a request
    /// under a refused policy never reaches the network. The transport adds
    /// its own check of the proxy settings ([`crate::proxy::check`]).
    pub fn new(
        name: &'static str,
        tls: C,
        check: impl Fn(&ConnectionPolicy) -> Result<(), BitsError> + Send + Sync + 'static,
        options: HttpOptions,
    ) -> Self {
        HttpTransport {
            inner: Arc::new(Inner {
                name,
                tls: Arc::new(tls),
                check: Box::new(check),
                env: options.proxy_env.clone().unwrap_or_else(ProxyEnv::process),
                options,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The backend's TLS connector.
    pub fn tls(&self) -> &C {
        &self.inner.tls
    }

    /// The options.
    pub fn options(&self) -> &HttpOptions {
        &self.inner.options
    }

    /// The environment `preconfig` policies route by.
    pub fn proxy_env(&self) -> &ProxyEnv {
        &self.inner.env
    }

    /// The backend's check, then whether the policy's proxy settings can
    /// be routed.
    fn check(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        (self.inner.check)(policy)?;
        crate::proxy::check(policy.proxy(), &self.inner.env)
    }

    /// Connections (TCP, plus TLS for https) made so far under `policy`: a
    /// diagnostic for tests that pools are per policy.
    pub fn connections_made(&self, policy: &ConnectionPolicy) -> usize {
        self.lock_pools()
            .get(policy)
            .map_or(0, |p| p.made.load(Ordering::Relaxed))
    }

    /// Connections made so far under all policies.
    pub fn connections_made_total(&self) -> usize {
        self.lock_pools()
            .values()
            .map(|p| p.made.load(Ordering::Relaxed))
            .sum()
    }

    /// Drops every pooled connection (the next request connects afresh).
    pub fn clear_pools(&self) {
        self.lock_pools().clear();
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionPolicy, Pool<C>>> {
        self.inner
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn client_for(&self, policy: &ConnectionPolicy) -> (PolicyClient<C>, ProxyAuth) {
        let mut pools = self.lock_pools();
        if let Some(pool) = pools.get(policy) {
            return (pool.client.clone(), pool.auth.clone());
        }
        let pool = pools.entry(policy.clone()).or_insert_with(|| {
            let o = &self.inner.options;
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(o.connect_timeout));
            let made = Arc::new(AtomicUsize::new(0));
            let auth = ProxyAuth::default();
            let connector = PolicyConnector {
                http,
                tls: Arc::clone(&self.inner.tls),
                policy: policy.clone(),
                env: Arc::clone(&self.inner.env),
                handshake_timeout: o.handshake_timeout,
                made: Arc::clone(&made),
                auth: auth.clone(),
            };
            let client = Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(o.pool_idle_timeout)
                .pool_max_idle_per_host(o.pool_max_idle_per_host)
                // HTTP/2's windows follow the path's bandwidth-delay product
                // (BDP pings): hyper's fixed defaults (2 MiB per stream)
                // cap one file at about 100 MB/s at 20 ms a round trip.
                .http2_adaptive_window(true)
                .build(connector);
            Pool { client, made, auth }
        });
        (pool.client.clone(), pool.auth.clone())
    }

    /// The proxies an http URL goes to in absolute form under `policy`,
    /// when every proxy of its route is an http proxy (so any connection
    /// for it goes to one, and a `Proxy-Authorization` sent first reaches
    /// a proxy, never an origin).
    fn all_http_proxies(&self, policy: &ConnectionPolicy, url: &Url) -> Result<Vec<ProxyUrl>, BitsError> {
        if url.scheme() != "http" {
            return Ok(Vec::new());
        }
        let host = url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(
            match crate::proxy::route(policy.proxy(), &self.inner.env, "http", host)? {
                Route::Proxies(list) if list.iter().all(|p| p.scheme == ProxyScheme::Http) => list,
                _ => Vec::new(),
            },
        )
    }

    /// One round trip, within the headers timeout.
    async fn round_trip(
        &self,
        client: &PolicyClient<C>,
        req: http::Request<OutgoingBody>,
        authority: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, BitsError> {
        let headers_timeout = self.inner.options.headers_timeout;
        match tokio::time::timeout(headers_timeout, client.request(req)).await {
            Err(_) => Err(BitsError::Timeout {
                what: format!(
                    "no response headers from {authority} within {}s",
                    headers_timeout.as_secs_f32()
                ),
            }),
            Ok(Err(e)) => Err(classify::client_error(&e, authority)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    fn build_request(&self, request: Request) -> Result<(http::Request<OutgoingBody>, String), BitsError> {
        let url = &request.url;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(BitsError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        }
        let uri = to_uri(url)?;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        // An empty body still says so: hyper leaves `Content-Length: 0` out
        // for a method it does not know (`BITS_POST`), and servers (IIS)
        // may answer such a request 411.
        let empty_body = request.body.as_ref().is_some_and(|b| b.length() == Some(0));
        let mut req = http::Request::new(OutgoingBody(request.body));
        *req.method_mut() = request.method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        *headers = request.headers;
        if empty_body && !headers.contains_key(CONTENT_LENGTH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        if !headers.contains_key(USER_AGENT) {
            let ua = HeaderValue::from_str(&self.inner.options.user_agent)
                .unwrap_or_else(|_| HeaderValue::from_static(USER_AGENT_VALUE));
            headers.insert(USER_AGENT, ua);
        }
        Ok((req, authority))
    }
}

/// `url` without fragment and user info, as a hyper `Uri`. User info is
/// dropped, never sent: credentials come only from the job
/// (`bits_core::Credentials`), and bits-core refuses URLs that carry them.
fn to_uri(url: &Url) -> Result<Uri, BitsError> {
    let mut clean = url.clone();
    clean.set_fragment(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.as_str().parse::<Uri>().map_err(|e| BitsError::InvalidArg {
        what: format!("URL {clean} is not a valid HTTP request target: {e}"),
    })
}

#[async_trait]
impl<C: TlsConnect> Transport for HttpTransport<C> {
    fn name(&self) -> &str {
        self.inner.name
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        self.check(policy)
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        self.check(&request.policy)?;
        let (client, auth) = self.client_for(&request.policy);
        let policy = request.policy.clone();
        let head = request.method == Method::HEAD;
        let url = request.url.clone();
        let preemptive_to = self.all_http_proxies(&policy, &url)?;
        let (mut req, authority) = self.build_request(request)?;
        req.extensions_mut()
            .extend(crate::header_case::extensions().await);
        // The request target as sent to the proxy (the Digest uri).
        let target = req.uri().to_string();
        let method = req.method().as_str().to_owned();
        let mut sent = Sent::Nothing;
        for proxy in &preemptive_to {
            if let Some(value) = auth.preemptive(proxy, &method, &target)? {
                req.headers_mut().insert(PROXY_AUTHORIZATION, value);
                sent = Sent::Preemptive;
                break;
            }
        }
        // What a resend after a 407 needs; none for a request with a body.
        let again = req
            .body()
            .0
            .is_none()
            .then(|| (req.method().clone(), req.uri().clone(), req.headers().clone()));
        let mut response = self.round_trip(&client, req, &authority).await?;
        while response.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            // Only an http proxy's 407 is answered: a 407 from an origin
            // (direct, through SOCKS) is its response.
            let Some(ViaHttpProxy(proxy)) = response.extensions().get::<ViaHttpProxy>().cloned() else {
                break;
            };
            let Some((m, u, h)) = &again else {
                return Err(ProxyAuth::body_not_replayable(&proxy));
            };
            let (value, next) = auth.challenged(
                &proxy,
                sent,
                response.headers(),
                policy.proxy_credentials(),
                &method,
                &target,
            )?;
            sent = next;
            let mut next = http::Request::new(OutgoingBody(None));
            *next.method_mut() = m.clone();
            *next.uri_mut() = u.clone();
            *next.headers_mut() = h.clone();
            next.headers_mut().insert(PROXY_AUTHORIZATION, value);
            response = self.round_trip(&client, next, &authority).await?;
        }
        let (parts, incoming) = response.into_parts();
        tracing::debug!(
            backend = self.inner.name,
            %url,
            status = parts.status.as_u16(),
            version = ?parts.version,
            "response"
        );
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            version: parts.version,
            body: Box::new(HyperBody {
                fault: parts.extensions.get::<StreamFault>().cloned(),
                yielding: parts.extensions.get::<YieldStatus>().cloned(),
                incoming,
                idle: self.inner.options.idle_timeout,
                done: head,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_dropped_never_sent() {
        let url = Url::parse("http://us%20er:p%3Ass@127.0.0.1:8080/a?b=c#frag").unwrap();
        assert_eq!(to_uri(&url).unwrap().to_string(), "http://127.0.0.1:8080/a?b=c");
    }
}
