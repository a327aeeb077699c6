//! The `tower_service::Service<Uri>` hyper-util's client connects through:
//! TCP by `HttpConnector`, directly or through the proxies the policy's
//! route names ([`PolicyConnector`]), then the backend's TLS for https.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bits_core::{AuthScheme, BitsError, ConnectionPolicy, Credentials, ProxyScheme, ProxyUrl};
use http::Uri;
use hyper_util::client::legacy::connect::proxy::SocksV5;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::classify;
use crate::proxy::{ProxyEnv, Route};
use crate::proxy_auth::{ProxyAuth, Sent};
use crate::tls::{BoxFuture, TlsConnect};
use crate::yielding::Yielder;

/// A failure already classified (a connect failure, a request body's
/// error), carried through hyper's error chain and taken out again by
/// [`classify::client_error`].
pub(crate) struct Classified(Mutex<Option<BitsError>>);

impl Classified {
    pub(crate) fn new(e: BitsError) -> Self {
        Classified(Mutex::new(Some(e)))
    }

    /// Takes the error out (once).
    pub(crate) fn take(&self) -> Option<BitsError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => write!(f, "Classified({e:?})"),
            None => f.write_str("Classified(taken)"),
        }
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => fmt::Display::fmt(e, f),
            None => f.write_str("connect failed"),
        }
    }
}

impl StdError for Classified {}

/// A plain TCP or a TLS stream.
pub(crate) enum MaybeTls<S> {
    /// Plain TCP; `http_proxy` the http proxy it goes to, which then
    /// gets absolute-form requests.
    Plain {
        tcp: TcpStream,
        http_proxy: Option<ProxyUrl>,
    },
    /// TLS with the origin; `h2` when ALPN chose HTTP/2
    /// ([`TlsConnect::negotiated_alpn`]).
    Tls { stream: Coalesce<S>, h2: bool },
}

impl<S> Connection for MaybeTls<S> {
    fn connected(&self) -> Connected {
        match self {
            // hyper-util's client sends absolute-form requests on a
            // connection marked as proxied; the response says which proxy
            // (for its 407, [`ViaHttpProxy`]).
            MaybeTls::Plain {
                http_proxy: Some(proxy),
                ..
            } => Connected::new().proxy(true).extra(ViaHttpProxy(proxy.clone())),
            // hyper-util's client speaks HTTP/2 on it, and shares it
            // between the requests of its pool (one policy, one origin).
            // Every response and request error of the connection carries
            // its fault record ([`StreamFault`]).
            MaybeTls::Tls { stream, h2 } => {
                let connected = Connected::new().extra(stream.fault.clone());
                if *h2 {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
            MaybeTls::Plain { .. } => Connected::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain { tcp: s, .. } => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls { stream: s, .. } => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// A connection as hyper-util's client holds it: the stream, and for a
/// yielding policy ([`ConnectionPolicy::yielding`]) the LEDBAT controllers
/// its reads and writes drive ([`crate::yielding`]).
pub(crate) struct Conn<S> {
    io: MaybeTls<S>,
    yielder: Option<Box<Yielder>>,
}

impl<S> Conn<S> {
    /// `io`, yielding when `yielding` (the controller is set up on the TCP
    /// socket `fd` at once).
    fn new(io: MaybeTls<S>, fd: RawFd, yielding: bool) -> Self {
        Conn {
            io,
            yielder: yielding.then(|| Box::new(Yielder::new(fd))),
        }
    }
}

impl<S> Connection for Conn<S> {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        match &self.yielder {
            // Every response of the connection says how it yields.
            Some(y) => connected.extra(y.status()),
            None => connected,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.yielder {
            Some(y) => y.poll_read(&mut this.io, cx, buf),
            None => Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &mut this.yielder {
            Some(y) => y.poll_write(&mut this.io, cx, buf),
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.yielder.is_some() {
            // Paced writes take one buffer at a time.
            let buf = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
            return self.poll_write(cx, buf);
        }
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.yielder.is_none() && self.io.is_write_vectored()
    }
}

/// In a response's extensions: the http proxy the request went to in
/// absolute form.
#[derive(Clone, Debug)]
pub(crate) struct ViaHttpProxy(pub(crate) ProxyUrl);

/// A TLS stream whose reads fill the caller's buffer with as many records
/// as are ready, not one: TLS libraries return one record (at most
/// 16 KiB) per read and hyper makes each read a body chunk, which costs a
/// task wakeup, timers and a file write, so fewer, larger chunks make a
/// download cheaper.
///
/// It also hands every read or write error to the backend's
/// [`TlsConnect::classify_io`]: an error it classifies travels on inside
/// the `io::Error` (as [`Classified`], same kind) for
/// [`classify`] to take out.
pub(crate) struct Coalesce<S> {
    inner: S,
    /// An error met after some bytes were already returned: the next read
    /// reports it.
    deferred: Option<io::Error>,
    /// The backend's [`TlsConnect::classify_io`].
    classify: fn(&io::Error) -> Option<BitsError>,
    /// The first error the backend classified, for whoever HTTP/2 tells
    /// of it without the classification.
    fault: StreamFault,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S, classify: fn(&io::Error) -> Option<BitsError>) -> Self {
        Coalesce {
            inner,
            deferred: None,
            classify,
            fault: StreamFault {
                first: Arc::default(),
                classify,
            },
        }
    }

    /// `e`, carrying the backend's classification when it has one (and
    /// then kept in [`StreamFault`]).
    fn classified(&self, e: io::Error) -> io::Error {
        match (self.classify)(&e) {
            Some(bits) => {
                let carried = io::Error::new(e.kind(), Classified::new(bits));
                self.fault.record(e);
                carried
            }
            None => e,
        }
    }
}

/// The first read or write error of a TLS connection that the backend
/// classified ([`TlsConnect::classify_io`]: a TLS 1.3 server's alert
/// refusing the client certificate), kept with the connection.
///
/// Over HTTP/1.1 the classified error reaches the request inside the
/// `io::Error` ([`Classified`]). HTTP/2 reads the socket in its own task
/// and hands each stream the error's kind and words only, so the
/// classification would be lost (a refused certificate would look like a
/// reset); hyper-util gives every request error and response of the
/// connection this record ([`Connected::extra`]), and
/// [`classify::client_error`] and the response body ask it. It keeps the
/// original error and classifies it again for each asker, so every
/// stream of the connection learns the same.
#[derive(Clone)]
pub(crate) struct StreamFault {
    first: Arc<Mutex<Option<io::Error>>>,
    classify: fn(&io::Error) -> Option<BitsError>,
}

impl StreamFault {
    fn record(&self, e: io::Error) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// The backend's error for the connection's classified failure, if
    /// it had one.
    pub(crate) fn error(&self) -> Option<BitsError> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        first.as_ref().and_then(self.classify)
    }

    /// [`StreamFault::error`] of the connection `connected` describes.
    pub(crate) fn of(connected: &Connected) -> Option<BitsError> {
        let mut extras = http::Extensions::new();
        connected.get_extras(&mut extras);
        extras.get::<StreamFault>()?.error()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.deferred.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                // A full buffer, or the end of the stream (nothing added).
                Poll::Ready(Ok(())) if buf.remaining() == 0 || buf.filled().len() == before => {
                    return Poll::Ready(Ok(()))
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if buf.filled().len() > start => {
                    this.deferred = Some(this.classified(e));
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(this.classified(e))),
                // Nothing more ready: hand over what was read. The waker
                // the inner stream registered only makes a spare wakeup.
                Poll::Pending if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.classified(e))),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.classified(e))),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.classified(e))),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain { tcp: s, .. } => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls { stream: s, .. } => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain { tcp: s, .. } => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls { stream: s, .. } => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain { tcp: s, .. } => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls { stream: s, .. } => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain { tcp: s, .. } => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls { stream: s, .. } => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain { tcp: s, .. } => s.is_write_vectored(),
            MaybeTls::Tls { stream: s, .. } => s.is_write_vectored(),
        }
    }
}

/// Connects for one [`ConnectionPolicy`], by the route its proxy settings
/// give each URL ([`crate::proxy::route`]):
///
/// - direct: TCP to the origin (`HttpConnector`), then the backend's TLS
///   for https;
/// - through proxies: TCP to the first proxy of the list that accepts the
///   connection (a refusal, an unreachable or unresolvable proxy, a
///   connect timeout: the next; all of them: `CannotConnect` naming them),
///   then by the proxy's kind and the URL's scheme:
///   - http proxy, http URL: the connection itself, marked proxied, so
///     hyper-util's client sends absolute-form requests to the proxy;
///   - http proxy, https URL: `CONNECT host:port` by hand (a 2xx answer
///     opens the tunnel; status S is `HttpStatus` S, no fallback), then the
///     backend's TLS with the origin's host name under the policy. A 407
///     is answered with the policy's proxy credentials on a new connection
///     to the same proxy ([`crate::proxy_auth`]); the answer is kept for
///     the later tunnels of the policy;
///   - SOCKS5 (`socks5h`): hyper-util's `SocksV5`, the proxy resolving the
///     name (a failure reply is `CannotConnect` with its words), with the
///     policy's basic proxy credentials as RFC 1929 user name and password
///     when it has some, then TLS for https.
///
/// The policy's flags, client certificate, pins and validator apply to
/// the origin only: the proxy is spoken to in plain TCP. A reconnect after
/// a CRL download takes the same route ([`PROXIED_DIAL`]).
///
/// hyper-util's `Tunnel` is not used for `CONNECT`: it reports every
/// status but 200 and 407 as "unsuccessful", without the status, which
/// `BG_E_HTTP_ERROR_S` needs.
pub(crate) struct PolicyConnector<C> {
    pub(crate) http: HttpConnector,
    pub(crate) tls: Arc<C>,
    pub(crate) policy: ConnectionPolicy,
    /// The environment `preconfig` routes by.
    pub(crate) env: Arc<ProxyEnv>,
    pub(crate) handshake_timeout: Duration,
    /// Connections established (TCP, plus TLS for https) by this connector.
    pub(crate) made: Arc<AtomicUsize>,
    /// The answers to proxies' 407s kept for this policy (shared with the
    /// transport's absolute-form requests).
    pub(crate) auth: ProxyAuth,
}

impl<C> Clone for PolicyConnector<C> {
    fn clone(&self) -> Self {
        PolicyConnector {
            http: self.http.clone(),
            tls: Arc::clone(&self.tls),
            policy: self.policy.clone(),
            env: Arc::clone(&self.env),
            handshake_timeout: self.handshake_timeout,
            made: Arc::clone(&self.made),
            auth: self.auth.clone(),
        }
    }
}

/// Opens a new TCP stream to the origin through the same proxy route.
pub(crate) type Dial = Arc<dyn Fn() -> BoxFuture<'static, Result<TcpStream, BitsError>> + Send + Sync>;

tokio::task_local! {
    /// Set around the TLS handshake of a connection through a proxy: how a
    /// reconnect after a CRL download reaches the origin again
    /// ([`crate::crl_cache::crl_rounds`]), instead of the socket's peer
    /// address (the proxy's).
    pub(crate) static PROXIED_DIAL: Dial;
}

impl<C: TlsConnect> Service<Uri> for PolicyConnector<C> {
    type Response = TokioIo<Conn<C::Stream>>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = Arc::clone(&self.tls);
        let policy = self.policy.clone();
        let env = Arc::clone(&self.env);
        let handshake_timeout = self.handshake_timeout;
        let made = Arc::clone(&self.made);
        let auth = self.auth.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| host.clone());
            let boxed = |e: BitsError| -> Box<dyn StdError + Send + Sync> { Box::new(Classified::new(e)) };
            let route = crate::proxy::route(policy.proxy(), &env, uri.scheme_str().unwrap_or("http"), &host)
                .map_err(boxed)?;
            let (tcp, dial) = match route {
                Route::Direct => {
                    let tcp = http
                        .call(uri.clone())
                        .await
                        .map_err(|e| boxed(classify::tcp_error(&e, &authority)))?
                        .into_inner();
                    (tcp, None)
                }
                Route::Proxies(proxies) => {
                    let hop = Hop {
                        http,
                        proxies: Arc::new(proxies),
                        host: host.clone(),
                        port,
                        https,
                        timeout: handshake_timeout,
                        auth,
                        credentials: policy.proxy_credentials().into(),
                    };
                    let (tcp, proxy) = hop.clone().open().await.map_err(boxed)?;
                    if !https {
                        made.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%authority, %proxy, %policy, "connected through a proxy");
                        let http_proxy = (proxy.scheme == ProxyScheme::Http).then_some(proxy);
                        let fd = tcp.as_raw_fd();
                        let io = MaybeTls::Plain { tcp, http_proxy };
                        return Ok(TokioIo::new(Conn::new(io, fd, policy.yielding())));
                    }
                    tracing::debug!(%authority, %proxy, "tunnel open");
                    let dial: Dial = Arc::new(move || {
                        let hop = hop.clone();
                        Box::pin(async move { hop.open().await.map(|(tcp, _)| tcp) })
                    });
                    (tcp, Some(dial))
                }
            };
            // The TCP socket, owned by the stream from here on (unless a
            // CRL round reconnected: checked below).
            let fd = tcp.as_raw_fd();
            let socket = crate::yielding::socket_id(fd);
            let stream = if https {
                let handshake = tls.connect(&host, tcp, &policy);
                let handshake = async move {
                    match dial {
                        Some(dial) => PROXIED_DIAL.scope(dial, handshake).await,
                        None => handshake.await,
                    }
                };
                match tokio::time::timeout(handshake_timeout, handshake).await {
                    Ok(Ok(s)) => {
                        if policy.checks_server() {
                            // After the flags passed, before any request.
                            let chain = C::peer_chain(&s);
                            let keys = crate::chain::spki_sha256_all(&chain);
                            policy.check_server(&host, port, &chain, &keys).map_err(boxed)?;
                        }
                        // Plain http is never h2 (no h2c): only TLS offers it.
                        let h2 = C::negotiated_alpn(&s).as_deref() == Some(b"h2");
                        MaybeTls::Tls {
                            stream: Coalesce::new(s, C::classify_io),
                            h2,
                        }
                    }
                    Ok(Err(e)) => return Err(boxed(e)),
                    Err(_) => {
                        return Err(boxed(BitsError::Timeout {
                            what: format!(
                                "TLS handshake with {authority} took longer than {}s",
                                handshake_timeout.as_secs_f32()
                            ),
                        }))
                    }
                }
            } else {
                MaybeTls::Plain {
                    tcp,
                    http_proxy: None,
                }
            };
            made.fetch_add(1, Ordering::Relaxed);
            let h2 = matches!(stream, MaybeTls::Tls { h2: true, .. });
            tracing::debug!(%authority, https, h2, %policy, "connected");
            let mut yielding = policy.yielding();
            if yielding && (socket.is_none() || crate::yielding::socket_id(fd) != socket) {
                // The handshake reconnected (after a CRL download): the
                // stream's socket is not the one `fd` named.
                tracing::warn!(%authority, "a reconnected TLS stream cannot be clamped: this connection does not yield");
                yielding = false;
            }
            Ok(TokioIo::new(Conn::new(stream, fd, yielding)))
        })
    }
}

/// The way to an origin through a list of proxies.
#[derive(Clone)]
struct Hop {
    http: HttpConnector,
    proxies: Arc<Vec<ProxyUrl>>,
    /// The origin's host (no brackets) and port.
    host: String,
    port: u16,
    https: bool,
    /// For the exchange with the proxy (`CONNECT`, SOCKS5).
    timeout: Duration,
    /// The answers to 407s kept for the policy.
    auth: ProxyAuth,
    /// The policy's proxy credentials.
    credentials: Arc<[Credentials]>,
}

impl Hop {
    /// A TCP stream to the first proxy that accepts one, and past it to
    /// the origin: through its `CONNECT` tunnel (http proxy, https URL) or
    /// its SOCKS5 connection. For an http URL through an http proxy, the
    /// stream to the proxy itself.
    async fn open(mut self) -> Result<(TcpStream, ProxyUrl), BitsError> {
        let (tcp, proxy) = self.first_proxy().await?;
        let target = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let exchange = async {
            match proxy.scheme {
                ProxyScheme::Http if !self.https => Ok(tcp),
                ProxyScheme::Http => self.tunnel(tcp, &target, &proxy).await,
                ProxyScheme::Socks5h => socks5(tcp, &target, self.https, &proxy, &self.credentials).await,
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(tcp)) => Ok((tcp, proxy)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BitsError::Timeout {
                what: format!(
                    "proxy {proxy} did not open the way to {target} within {}s",
                    self.timeout.as_secs_f32()
                ),
            }),
        }
    }

    /// A `CONNECT` tunnel to `target` through the http `proxy`, `tcp`
    /// connected to it: a kept answer sent first; a 407 answered once on a
    /// new connection to the proxy ([`crate::proxy_auth`]).
    async fn tunnel(
        &self,
        mut tcp: TcpStream,
        target: &str,
        proxy: &ProxyUrl,
    ) -> Result<TcpStream, BitsError> {
        let mut authorization = self.auth.preemptive(proxy, "CONNECT", target)?;
        let mut sent = if authorization.is_some() {
            Sent::Preemptive
        } else {
            Sent::Nothing
        };
        loop {
            let headers = match connect_tunnel(tcp, target, proxy, authorization.as_ref()).await? {
                Ok(tcp) => return Ok(tcp),
                // tinyproxy answers credentials it refuses with 401: from
                // the proxy, to `CONNECT`, that can only be a refusal.
                Err((401, _)) if sent != Sent::Nothing => return Err(self.auth.refused(proxy)),
                Err((401, _)) => {
                    return Err(BitsError::HttpStatus {
                        status: 401,
                        retry_after: None,
                    })
                }
                Err((_, challenge)) => challenge,
            };
            let (value, next) =
                self.auth
                    .challenged(proxy, sent, &headers, &self.credentials, "CONNECT", target)?;
            authorization = Some(value);
            sent = next;
            // Many proxies close the connection after a 407: always a new one.
            let mut http = self.http.clone();
            tcp = dial_proxy(&mut http, proxy)
                .await
                .map_err(|why| BitsError::CannotConnect {
                    host: format!("proxy {proxy}"),
                    reason: why,
                })?;
        }
    }

    /// TCP to the first proxy of the list that accepts it.
    async fn first_proxy(&mut self) -> Result<(TcpStream, ProxyUrl), BitsError> {
        let mut failures = Vec::new();
        for proxy in self.proxies.iter() {
            match dial_proxy(&mut self.http, proxy).await {
                Ok(tcp) => return Ok((tcp, proxy.clone())),
                Err(why) => failures.push(format!("{proxy}: {why}")),
            }
        }
        let names: Vec<String> = self.proxies.iter().map(ToString::to_string).collect();
        Err(BitsError::CannotConnect {
            host: if names.len() == 1 {
                format!("proxy {}", names[0])
            } else {
                format!("proxies {}", names.join(", "))
            },
            reason: failures.join("; "),
        })
    }
}

/// TCP to `proxy`, or why not (the connect error's words).
async fn dial_proxy(http: &mut HttpConnector, proxy: &ProxyUrl) -> Result<TcpStream, String> {
    let host = if proxy.host.contains(':') {
        format!("[{}]", proxy.host)
    } else {
        proxy.host.clone()
    };
    let uri = format!("http://{host}:{}", proxy.port)
        .parse::<Uri>()
        .map_err(|e| e.to_string())?;
    match http.call(uri).await {
        Ok(tcp) => Ok(tcp.into_inner()),
        Err(e) => {
            let e: &(dyn StdError + 'static) = &e;
            let why = classify::tcp_error(e, &format!("{}:{}", proxy.host, proxy.port));
            tracing::debug!(%proxy, error = %why, "proxy refused the connection");
            Err(classify::chain_text(e))
        }
    }
}

/// Sends `CONNECT target` on `tcp` (with `Proxy-Authorization:
/// authorization` when given) and reads the proxy's answer: the tunnel on
/// a 2xx; the status and headers of a 407 or 401 (`Err` inside);
/// `HttpStatus` S for another status.
async fn connect_tunnel(
    mut tcp: TcpStream,
    target: &str,
    proxy: &ProxyUrl,
    authorization: Option<&http::HeaderValue>,
) -> Result<Result<TcpStream, (u16, http::HeaderMap)>, BitsError> {
    let reset = |e: io::Error| BitsError::ConnectionReset {
        reason: format!("proxy {proxy} during CONNECT {target}: {e}"),
    };
    let mut request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {}\r\n",
        crate::USER_AGENT_VALUE
    )
    .into_bytes();
    if let Some(value) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    tcp.write_all(&request).await.map_err(reset)?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = tcp.read(&mut buf).await.map_err(reset)?;
        if n == 0 {
            return Err(BitsError::ConnectionReset {
                reason: format!("proxy {proxy} closed the connection before answering CONNECT {target}"),
            });
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if answer.len() > 16 * 1024 {
            return Err(BitsError::InvalidServerResponse {
                what: format!("proxy {proxy}: an answer to CONNECT longer than 16 KiB"),
            });
        }
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| {
            let mut parts = l.split_whitespace();
            let version = parts.next()?;
            let code = parts.next()?;
            version
                .starts_with("HTTP/1.")
                .then_some(code)?
                .parse::<u16>()
                .ok()
        })
        .ok_or_else(|| BitsError::InvalidServerResponse {
            what: format!(
                "proxy {proxy}: not an HTTP answer to CONNECT: {:?}",
                head.lines().next().unwrap_or_default()
            ),
        })?;
    if !(200..300).contains(&status) {
        let mut headers = http::HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.trim().as_bytes()),
                    http::HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(n, v);
                }
            }
        }
        if status == 407 || status == 401 {
            tracing::debug!(%proxy, %target, status, "the proxy wants credentials for the tunnel");
            return Ok(Err((status, headers)));
        }
        tracing::debug!(%proxy, %target, status, "the proxy refused the tunnel");
        return Err(BitsError::HttpStatus {
            status,
            retry_after: crate::retry_after_secs(&headers),
        });
    }
    if answer.len() > end {
        // The origin speaks only after the client's first TLS message.
        return Err(BitsError::InvalidServerResponse {
            what: format!("proxy {proxy}: bytes after its answer to CONNECT, before the TLS handshake"),
        });
    }
    Ok(Ok(tcp))
}

/// A SOCKS5 `CONNECT` to `target` on `tcp` (hyper-util's `SocksV5`, the
/// name resolved by the proxy), offering the first basic proxy
/// credentials of `credentials` as RFC 1929 user name and password when
/// there are some (SOCKS5 has no Digest).
///
/// A refused authentication is `AuthFailed` 407 (fatal): the proxy
/// refusing the user name and password, or wanting them when the job has
/// no basic proxy credentials. hyper-util's error type is private: the
/// refusals are told apart by its words ([`socks5_auth_refusal`]). Every
/// other failure is `CannotConnect` with the proxy's words ("host
/// unreachable", "connection refused", …): the proxy could not reach the
/// origin, as a direct connection could not.
async fn socks5(
    tcp: TcpStream,
    target: &str,
    https: bool,
    proxy: &ProxyUrl,
    credentials: &[Credentials],
) -> Result<TcpStream, BitsError> {
    let scheme = if https { "https" } else { "http" };
    let proxy_uri = format!("http://{}:{}", proxy.host, proxy.port)
        .parse::<Uri>()
        .unwrap_or_default();
    let dst = format!("{scheme}://{target}")
        .parse::<Uri>()
        .map_err(|e| BitsError::InvalidArg {
            what: format!("{target}: {e}"),
        })?;
    let mut socks = SocksV5::new(proxy_uri, Connected1(Some(tcp))).local_dns(false);
    let basic = credentials.iter().find(|c| c.scheme == AuthScheme::Basic);
    if let Some(c) = basic {
        tracing::debug!(%proxy, user = %c.user, "SOCKS5 with a user name and password");
        socks = socks.with_auth(c.user.clone(), c.password().to_owned());
    }
    match socks.call(dst).await {
        Ok(io) => Ok(io.into_inner()),
        Err(e) => {
            tracing::debug!(%proxy, %target, error = %e, "SOCKS5 failed");
            if let Some(why) = socks5_auth_refusal(&e.to_string(), proxy, basic, credentials) {
                return Err(BitsError::AuthFailed { status: 407, why });
            }
            Err(BitsError::CannotConnect {
                host: format!("{target} through proxy {proxy}"),
                reason: e.to_string(),
            })
        }
    }
}

/// Why a SOCKS5 failure whose words are `words` (hyper-util's
/// `SocksV5Error::Auth` messages) is an authentication refusal, if it is
/// one; `basic` the credentials offered.
fn socks5_auth_refusal(
    words: &str,
    proxy: &ProxyUrl,
    basic: Option<&Credentials>,
    credentials: &[Credentials],
) -> Option<String> {
    let refused = words.ends_with("credentials not accepted");
    let unsupported = words.ends_with("server does not support user/pass authentication");
    let mismatch = words.ends_with("server implements authentication incorrectly");
    match basic {
        Some(c) if refused => Some(format!(
            "proxy {proxy} refused the job's basic credentials for user {}",
            c.user
        )),
        // The proxy accepts none of the methods offered.
        Some(c) if unsupported => Some(format!(
            "proxy {proxy} does not take a user name and password (offered for user {})",
            c.user
        )),
        None if unsupported || mismatch => {
            let have = if credentials.is_empty() {
                "the job has no proxy credentials".to_owned()
            } else {
                "the job has digest proxy credentials only".to_owned()
            };
            Some(format!(
                "SOCKS5 proxy {proxy} wants a user name and password and {have} (SOCKS5 takes basic only); \
                 `bits set-credentials JOB proxy basic USER` sets them"
            ))
        }
        _ => None,
    }
}

/// A connector that hands out one TCP stream already connected to the
/// proxy, so that [`SocksV5`] does only the SOCKS5 exchange and the
/// proxy's connect failures stay ours to classify (its own error type is
/// not public).
struct Connected1(Option<TcpStream>);

impl Service<Uri> for Connected1 {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<TokioIo<TcpStream>, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _proxy: Uri) -> Self::Future {
        std::future::ready(
            self.0
                .take()
                .map(TokioIo::new)
                .ok_or_else(|| io::Error::other("the proxy connection was already used")),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Plays back a script: each step is some bytes, "not ready", or an error.
    enum Step {
        Data(&'static [u8]),
        NotReady,
        Fail,
    }

    struct Script(VecDeque<Step>);

    impl AsyncRead for Script {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.get_mut().0.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(Step::Data(d)) => {
                    buf.put_slice(d);
                    Poll::Ready(Ok(()))
                }
                Some(Step::NotReady) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Step::Fail) => Poll::Ready(Err(io::Error::other("record MAC"))),
            }
        }
    }

    fn unclassified(_: &io::Error) -> Option<BitsError> {
        None
    }

    fn script<const N: usize>(steps: [Step; N]) -> Coalesce<Script> {
        Coalesce::new(Script(steps.into()), unclassified)
    }

    async fn read_once(s: &mut Coalesce<Script>, cap: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; cap];
        let n = s.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    #[tokio::test]
    async fn reads_join_records_until_nothing_is_ready() {
        use Step::*;
        let mut s = script([Data(b"ab"), Data(b"cd"), NotReady, Data(b"ef"), Data(b"gh")]);
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"abcd");
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"efgh");
        // The end of the stream reads as 0 bytes.
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_full_buffer_ends_the_read() {
        use Step::*;
        let mut s = script([Data(b"ab"), Data(b"cd"), Data(b"ef")]);
        assert_eq!(read_once(&mut s, 4).await.unwrap(), b"abcd");
        assert_eq!(read_once(&mut s, 4).await.unwrap(), b"ef");
    }

    #[tokio::test]
    async fn an_error_after_bytes_comes_with_the_next_read() {
        use Step::*;
        let mut s = script([Data(b"ab"), Fail, Data(b"never")]);
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"ab");
        let e = read_once(&mut s, 64).await.unwrap_err();
        assert_eq!(e.to_string(), "record MAC");
    }

    /// A backend that says "record MAC" means the server refused the
    /// client certificate.
    fn refused(e: &io::Error) -> Option<BitsError> {
        (e.to_string() == "record MAC").then_some(BitsError::ClientCertNeeded)
    }

    #[tokio::test]
    async fn the_backend_classifies_stream_errors_and_the_transport_takes_them_out() {
        use Step::*;
        for steps in [vec![Fail], vec![Data(b"ab"), Fail]] {
            let mut s = Coalesce::new(Script(steps.into()), refused);
            let mut e = read_once(&mut s, 64).await;
            if e.is_ok() {
                e = read_once(&mut s, 64).await;
            }
            let e = e.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Other);
            let bits = classify::io_error(&e, "reading");
            assert_eq!(bits.hresult().0, 0x8007_2F0C, "{bits:?}");
        }
        // Unclassified errors stay the transport's.
        let mut s = script([Fail]);
        let e = read_once(&mut s, 64).await.unwrap_err();
        assert_eq!(classify::io_error(&e, "reading").hresult().0, 0x8007_2EFE);
    }

    /// One proxy that answers whatever `CONNECT` with `answer` and then
    /// closes: the edge cases real proxies do not produce (the real ones
    /// are in bits-testkit's `suites::proxies`).
    async fn scripted_connect(answer: &'static [u8]) -> Result<TcpStream, BitsError> {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer).await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let proxy = ProxyUrl::parse(&format!("http://{addr}")).unwrap();
        match connect_tunnel(tcp, "origin.example:443", &proxy, None).await? {
            Ok(tcp) => Ok(tcp),
            Err((status, _challenge)) => Err(BitsError::HttpStatus {
                status,
                retry_after: None,
            }),
        }
    }

    #[tokio::test]
    async fn proxies_connect_answers_scripted() {
        assert!(scripted_connect(b"HTTP/1.0 200 Connection established\r\n\r\n")
            .await
            .is_ok());
        assert!(scripted_connect(b"HTTP/1.1 204 OK\r\nX: y\r\n\r\n").await.is_ok());
        let e = scripted_connect(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(e.hresult().0, 0x8019_0197, "{e}");
        assert!(!e.is_transient());
        let e = scripted_connect(b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\n\r\n")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                BitsError::HttpStatus {
                    status: 503,
                    retry_after: Some(7)
                }
            ),
            "{e:?}"
        );
        assert!(e.is_transient());
        let e = scripted_connect(b"SSH-2.0-OpenSSH\r\n\r\n").await.unwrap_err();
        assert_eq!(e.hresult().0, 0x8020_001B, "{e}");
        let e = scripted_connect(b"HTTP/1.1 200 OK\r\n\r\nearly bytes")
            .await
            .unwrap_err();
        assert_eq!(e.hresult().0, 0x8020_001B, "{e}");
        let e = scripted_connect(b"HTTP/1.1 200 OK\r\n").await.unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_2EFE, "closed mid-answer: {e}");
    }
}
