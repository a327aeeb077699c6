//! A scriptable HTTP/1.1 server on 127.0.0.1 for tests, with routes that can
//! be changed while it runs.
//!
//! ```no_run
//! use bits_testkit::http::{HttpServer, Route};
//!
//! let server = HttpServer::start();
//! server.set("/file", Route::body(vec![7u8; 100_000]).etag("\"v1\""));
//! server.set("/gone", Route::status(404));
//! server.set("/busy", Route::status(503).retry_after(7));
//! server.set("/flaky", Route::body("ok").fail_first(2, 503));
//! server.set("/cut", Route::body(vec![1u8; 1000]).truncate_after(400));
//! let url = server.url("/file"); // http://127.0.0.1:<port>/file
//! // … run the client …
//! assert_eq!(server.requests_for("/file").len(), 1);
//! ```
//!
//! The server runs on its own thread with its own tokio runtime, so it works
//! from sync tests and from `#[tokio::test]` alike; it stops when dropped,
//! and the drop panics if a connection handler panicked.
//!
//! What a [`Route`] can do: serve bytes honouring `Range: bytes=N-` and
//! `bytes=N-M` (206 + `Content-Range`; 416 past the end), `HEAD`, `ETag` and
//! `Last-Modified` validators with `If-Range`; ignore Range (always 200);
//! answer a bare status (with `Retry-After`); redirect with any status (with
//! or without `Location`); send the full `Content-Length` and then close
//! after K body bytes; send chunked without `Content-Length`; throttle
//! (sleep after each chunk); fail the first N requests with a status; require
//! an `Authorization` value; challenge as a real server with Basic
//! ([`Route::basic_auth`]) or Digest ([`Route::digest_auth`], MD5 or
//! SHA-256, with nonces that go stale); delay the headers; hang up without
//! answering.
//! A route answers every method alike (`GET`, `PUT`, `POST`, `DELETE`, …);
//! `HEAD` gets the headers only. A request's body (`Content-Length` bytes
//! or chunked) is read whole before the answer. Every request that arrived
//! whole is recorded ([`RecordedRequest`], its body included).
//! An unknown path is a 404. Connections are kept alive unless the client
//! says `Connection: close` (or speaks HTTP/1.0 without `keep-alive`), a
//! route closes, or [`HttpServer::set_close_connections`] asks for one
//! request per connection.
//!
//! # Serving over TLS (for the PKI/TLS module)
//! The protocol handling is generic over the stream: use
//! [`HttpServer::start_with_acceptor`] with a closure that turns each
//! accepted [`TcpStream`] into a TLS stream, e.g. with `tokio-openssl`:
//!
//! ```text
//! let acceptor: Arc<SslAcceptor> = …;
//! let server = HttpServer::start_with_acceptor("https", move |tcp| {
//!     let acceptor = Arc::clone(&acceptor);
//!     async move {
//!         let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(io::Error::other)?;
//!         let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(io::Error::other)?;
//!         std::pin::Pin::new(&mut s).accept().await.map_err(io::Error::other)?;
//!         Ok(s)
//!     }
//! });
//! server.url("/x"); // https://127.0.0.1:<port>/x
//! ```
//!
//! (That is [`crate::tls::https_server`].) A completed handshake is counted
//! in [`HttpServer::handshakes_ok`]; a failed one (the client refused the
//! certificate) in [`HttpServer::handshake_failures`], and no request is
//! recorded; both in [`HttpServer::connections`]. To drive connections from your own accept loop
//! instead, share a [`ServerState`] and call [`serve_connection`] on each
//! stream.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod auth;

pub use auth::{digest_response, parse_digest_authorization, DigestAlgorithm, DigestInput, REALM};

/// The largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body accepted.
const MAX_BODY: usize = 64 << 20;
/// Body bytes written at a time when no throttle is set.
const WRITE_CHUNK: usize = 64 * 1024;

/// What a route answers.
#[derive(Clone, Debug)]
enum Kind {
    Body(Bytes),
    Status(u16),
    Redirect { status: u16, location: Option<String> },
    HangUp,
}

/// How one path answers. Build with [`Route::body`], [`Route::status`],
/// [`Route::redirect`] or [`Route::redirect_without_location`], then chain
/// options.
#[derive(Clone, Debug)]
pub struct Route {
    kind: Kind,
    etag: Option<String>,
    last_modified: Option<String>,
    ignore_range: bool,
    truncate_after: Option<usize>,
    truncate_times: u32,
    chunked: bool,
    throttle: Option<(usize, Duration)>,
    fail_first: Option<(u32, u16)>,
    retry_after: Option<String>,
    authorization: Option<String>,
    method: Option<String>,
    headers: Vec<(String, String)>,
    close: bool,
    delay: Option<Duration>,
    guard: auth::Guard,
}

impl Route {
    fn new(kind: Kind) -> Route {
        Route {
            kind,
            etag: None,
            last_modified: None,
            ignore_range: false,
            truncate_after: None,
            truncate_times: 0,
            chunked: false,
            throttle: None,
            fail_first: None,
            retry_after: None,
            authorization: None,
            method: None,
            headers: Vec::new(),
            close: false,
            delay: None,
            guard: auth::Guard::default(),
        }
    }

    /// Serves `body` (200, or 206 for a satisfiable Range).
    pub fn body(body: impl Into<Bytes>) -> Route {
        Route::new(Kind::Body(body.into()))
    }

    /// Answers `status` with a short text body (e.g. 404, 503).
    pub fn status(status: u16) -> Route {
        Route::new(Kind::Status(status))
    }

    /// Answers `status` (any 3xx, or anything) with `Location: location`
    /// (sent as given: absolute or relative).
    pub fn redirect(status: u16, location: impl Into<String>) -> Route {
        Route::new(Kind::Redirect {
            status,
            location: Some(location.into()),
        })
    }

    /// Answers `status` without a `Location` header.
    pub fn redirect_without_location(status: u16) -> Route {
        Route::new(Kind::Redirect {
            status,
            location: None,
        })
    }

    /// Reads the request, then closes the connection without answering (the
    /// client sees the connection end before any response header).
    pub fn hang_up() -> Route {
        Route::new(Kind::HangUp)
    }

    /// Waits `delay` before sending the response headers, whatever the
    /// answer (to trip a client's header timeout).
    pub fn delay(mut self, delay: Duration) -> Route {
        self.delay = Some(delay);
        self
    }

    /// Sends `ETag: etag` (give the quotes: `"\"v1\""`); `If-Range` matches it.
    pub fn etag(mut self, etag: impl Into<String>) -> Route {
        self.etag = Some(etag.into());
        self
    }

    /// Sends `Last-Modified: date`; an `If-Range` equal to it matches.
    pub fn last_modified(mut self, date: impl Into<String>) -> Route {
        self.last_modified = Some(date.into());
        self
    }

    /// Ignores `Range`: always 200 with the whole body.
    pub fn ignore_range(mut self) -> Route {
        self.ignore_range = true;
        self
    }

    /// Every GET: sends the headers as usual (with the full
    /// `Content-Length`), then only `bytes` body bytes, then closes.
    pub fn truncate_after(self, bytes: usize) -> Route {
        self.truncate_first(u32::MAX, bytes)
    }

    /// The first `times` GETs of this route are cut after `bytes` body
    /// bytes as in [`Route::truncate_after`]; later ones are whole.
    pub fn truncate_first(mut self, times: u32, bytes: usize) -> Route {
        self.truncate_after = Some(bytes);
        self.truncate_times = times;
        self
    }

    /// `Transfer-Encoding: chunked`, no `Content-Length`.
    pub fn chunked(mut self) -> Route {
        self.chunked = true;
        self
    }

    /// Writes the body `chunk` bytes at a time and sleeps `delay` after each.
    pub fn throttle(mut self, chunk: usize, delay: Duration) -> Route {
        self.throttle = Some((chunk.max(1), delay));
        self
    }

    /// The first `times` requests get `status` (with `Retry-After` if set);
    /// the following ones are served normally.
    pub fn fail_first(mut self, times: u32, status: u16) -> Route {
        self.fail_first = Some((times, status));
        self
    }

    /// Sends `Retry-After: seconds` with a status answer (a [`Route::status`]
    /// or a [`Route::fail_first`] failure).
    pub fn retry_after(mut self, seconds: u64) -> Route {
        self.retry_after = Some(seconds.to_string());
        self
    }

    /// Sends `Retry-After: value` as given (e.g. an HTTP date).
    pub fn retry_after_raw(mut self, value: impl Into<String>) -> Route {
        self.retry_after = Some(value.into());
        self
    }

    /// Answers 401 (with `WWW-Authenticate: Basic realm="bits-testkit"`)
    /// unless the request's `Authorization` is exactly `value`.
    pub fn require_authorization(mut self, value: impl Into<String>) -> Route {
        self.authorization = Some(value.into());
        self
    }

    /// Challenges as a real server does: a request without the right
    /// `Authorization: Basic` for `user` and `password` gets 401 with
    /// `WWW-Authenticate: Basic realm="bits-testkit"`; the right one gets
    /// the route's answer. With [`Route::digest_auth`] too, both are offered
    /// (Digest first) and either lets in.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Route {
        self.guard.basic = Some((user.into(), password.into()));
        self
    }

    /// Challenges with RFC 7616 Digest (`realm="bits-testkit"`, qop
    /// `auth`, `algorithm`, a server nonce and an opaque) and lets in a
    /// request whose answer is right: user name, realm, opaque, a nonce the
    /// server issued (one set for all its routes of that algorithm), `uri` equal to the request target, a nonce count above
    /// the last one seen for that nonce, and the response computed here
    /// (not by the client crate under test). A right answer with a replaced
    /// nonce gets 401 `stale=true` with the current one.
    pub fn digest_auth(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
        algorithm: DigestAlgorithm,
    ) -> Route {
        self.guard.digest = Some(auth::DigestGuard {
            user: user.into(),
            password: password.into(),
            algorithm,
            stale_after: None,
            stale_first: 0,
        });
        self
    }

    /// With [`Route::digest_auth`]: a nonce lets in `uses` requests; the
    /// next right answer with it gets 401 `stale=true` and a new nonce.
    pub fn digest_stale_after(mut self, uses: u32) -> Route {
        if let Some(d) = &mut self.guard.digest {
            d.stale_after = Some(uses);
        }
        self
    }

    /// With [`Route::digest_auth`]: the first `times` right answers get
    /// 401 `stale=true` and a new nonce (each), as from a server whose
    /// nonces expire at once.
    pub fn digest_stale_first(mut self, times: u32) -> Route {
        if let Some(d) = &mut self.guard.digest {
            d.stale_first = times;
        }
        self
    }

    /// Answers 405 (with `Allow: METHOD`) to any other method, as an
    /// endpoint that takes only POST does.
    pub fn only_method(mut self, method: impl Into<String>) -> Route {
        self.method = Some(method.into());
        self
    }

    /// Adds a response header. It replaces a header of the same name that
    /// the server would send itself (such as `Content-Type: text/plain`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Route {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends `Connection: close` and closes after each response.
    pub fn close_connection(mut self) -> Route {
        self.close = true;
        self
    }
}

/// One request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent (`/file?x=1`).
    pub target: String,
    /// The target without its query.
    pub path: String,
    /// Every header, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The header names as they were on the wire (their case kept), in
    /// order.
    pub names_as_sent: Vec<String>,
    /// The body as it arrived (`Content-Length` bytes, or the chunks of a
    /// chunked body joined); empty when there was none.
    pub body: Bytes,
    /// Which connection it came on (1 for the first accepted).
    pub connection: usize,
    /// The protocol that carried it, by its ALPN name: `http/1.1`,
    /// `http/1.0`, or `h2` (a connection that chose it,
    /// [`HttpServer::start_with_alpn_acceptor`]).
    pub protocol: &'static str,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Range` header.
    pub fn range(&self) -> Option<&str> {
        self.header("range")
    }

    /// The `If-Range` header.
    pub fn if_range(&self) -> Option<&str> {
        self.header("if-range")
    }

    /// The `Authorization` header.
    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

#[derive(Debug)]
struct Entry {
    route: Route,
    hits: u32,
    truncated: u32,
}

/// The routes, the request log and the counters of a server, shareable
/// between accept loops (see [`serve_connection`]).
#[derive(Debug, Default)]
pub struct ServerState {
    routes: Mutex<HashMap<String, Entry>>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
    handshakes_ok: AtomicUsize,
    handshake_failures: AtomicUsize,
    close_connections: AtomicBool,
    bytes_sent: AtomicU64,
    /// Requests being answered now, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    panics: Mutex<Vec<String>>,
    /// The Digest nonces handed out, one set per algorithm for the whole
    /// server, as a real server shares a protection space's nonces between
    /// its paths (and another space has its own).
    nonces: Mutex<HashMap<Option<DigestAlgorithm>, auth::NonceState>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ServerState {
    /// An empty state: no routes, nothing recorded.
    pub fn new() -> Arc<ServerState> {
        Arc::new(ServerState::default())
    }

    /// Sets (or replaces) the route of `path` (without query), resetting
    /// its fail/truncate counters.
    pub fn set(&self, path: &str, route: Route) {
        lock(&self.routes).insert(
            normalize(path),
            Entry {
                route,
                hits: 0,
                truncated: 0,
            },
        );
    }

    /// Removes the route of `path` (it becomes a 404).
    pub fn remove(&self, path: &str) {
        lock(&self.routes).remove(&normalize(path));
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.requests).clear();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Body bytes written so far, over all responses.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }

    /// Counts an accepted connection and returns its number (from 1).
    /// The most requests answered at once (from the request read to the
    /// last byte of its answer; over HTTP/2, streams of any connection).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn connection_accepted(&self) -> usize {
        self.connections.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Connections whose [`HttpServer::start_with_acceptor`] acceptor failed.
    pub fn handshake_failures(&self) -> usize {
        self.handshake_failures.load(Ordering::SeqCst)
    }

    /// Connections whose [`HttpServer::start_with_acceptor`] acceptor
    /// succeeded (counted before their first request is read); always 0
    /// for a plain server.
    pub fn handshakes_ok(&self) -> usize {
        self.handshakes_ok.load(Ordering::SeqCst)
    }

    /// With `true`, every response says `Connection: close` and its
    /// connection is closed (one request per connection, 404s included);
    /// with `false` (the default), connections are kept alive unless a
    /// route or the client asks otherwise.
    pub fn set_close_connections(&self, close: bool) {
        self.close_connections.store(close, Ordering::SeqCst);
    }

    fn closes_connections(&self) -> bool {
        self.close_connections.load(Ordering::SeqCst)
    }

    fn record_panic(&self, what: String) {
        lock(&self.panics).push(what);
    }
}

fn normalize(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

type BoxIo = Box<dyn IoStream>;
/// The accepted stream, and whether it speaks HTTP/2 (its ALPN chose `h2`).
type AcceptFuture = Pin<Box<dyn Future<Output = io::Result<(BoxIo, bool)>> + Send>>;
type AcceptFn = Arc<dyn Fn(TcpStream) -> AcceptFuture + Send + Sync>;
type BindFn = Box<dyn FnOnce() -> io::Result<tokio::net::TcpListener> + Send>;

/// 127.0.0.1 on a free port (call inside the server's runtime).
fn bind_free_port() -> io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// An accepted stream, boxed.
trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// A running server on 127.0.0.1. Stops on drop.
pub struct HttpServer {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<ServerState>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Starts a plain-HTTP server on 127.0.0.1 on a free port. Panics if it
    /// cannot (a test-setup failure).
    pub fn start() -> HttpServer {
        HttpServer::spawn("http", Box::new(bind_free_port), None)
            .expect("start the test HTTP server on 127.0.0.1")
    }

    /// Starts a server whose connections first go through `accept` (a TLS
    /// handshake, typically); `scheme` is what [`HttpServer::url`] prints.
    /// A connection whose `accept` fails is counted and closed.
    pub fn start_with_acceptor<F, Fut, S>(scheme: &'static str, accept: F) -> HttpServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let accept: AcceptFn = Arc::new(move |tcp| {
            let fut = accept(tcp);
            Box::pin(async move { fut.await.map(|s| (Box::new(s) as BoxIo, false)) })
        });
        HttpServer::spawn(scheme, Box::new(bind_free_port), Some(accept))
            .expect("start the test server on 127.0.0.1")
    }

    /// [`HttpServer::start_with_acceptor`] for an acceptor that also says
    /// whether the connection speaks HTTP/2 (`true`: its TLS handshake
    /// chose `h2` by ALPN, as [`crate::tls::https_server_with`] does).
    /// An HTTP/2 connection is served by hyper's server, its requests as
    /// HTTP/1.1 ones are: the same routes, the same log (each request's
    /// [`RecordedRequest::protocol`] is `h2`), the same counters. What
    /// HTTP/2 has no words for becomes the nearest it has: a truncated
    /// body, a hang-up or a handler's error reset the stream
    /// (`RST_STREAM`); `Connection: close` and
    /// [`HttpServer::set_close_connections`] do not apply (one connection
    /// carries many requests at once); a chunked route is a body of
    /// unknown length.
    pub fn start_with_alpn_acceptor<F, Fut, S>(scheme: &'static str, accept: F) -> HttpServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<(S, bool)>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let accept: AcceptFn = Arc::new(move |tcp| {
            let fut = accept(tcp);
            Box::pin(async move { fut.await.map(|(s, h2)| (Box::new(s) as BoxIo, h2)) })
        });
        HttpServer::spawn(scheme, Box::new(bind_free_port), Some(accept))
            .expect("start the test server on 127.0.0.1")
    }

    /// Starts a plain-HTTP server on the listener `bind` returns (bind it to
    /// 127.0.0.1). `bind` runs on the server's own thread, inside its tokio
    /// runtime (a tokio listener belongs to the runtime that made it), so it
    /// can set socket options first, e.g. `SO_REUSEPORT` through
    /// [`tokio::net::TcpSocket`]. Returns `bind`'s error (a port in use, …).
    pub fn start_with_listener<F>(bind: F) -> io::Result<HttpServer>
    where
        F: FnOnce() -> io::Result<tokio::net::TcpListener> + Send + 'static,
    {
        HttpServer::spawn("http", Box::new(bind), None)
    }

    /// Adds a route and returns the server (for building in one expression).
    pub fn with(self, path: &str, route: Route) -> HttpServer {
        self.set(path, route);
        self
    }

    fn spawn(scheme: &'static str, bind: BindFn, accept: Option<AcceptFn>) -> io::Result<HttpServer> {
        let state = ServerState::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("testkit-{scheme}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match bind().and_then(|l| Ok((l.local_addr()?, l))) {
                        Ok((addr, listener)) => {
                            let _ = ready_tx.send(Ok(addr));
                            listener
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    accept_loop(listener, thread_state, accept, shutdown_rx).await;
                });
            })?;
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("the test server thread died before binding"));
            }
        };
        Ok(HttpServer {
            addr,
            scheme,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (or the acceptor's scheme), no slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The URL of `path` (a leading `/` is added if missing).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base_url())
        } else {
            format!("{}/{path}", self.base_url())
        }
    }

    /// The shared state (routes, log, counters).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Sets (or replaces, while running) the route of `path`.
    pub fn set(&self, path: &str, route: Route) {
        self.state.set(path, route);
    }

    /// Removes the route of `path` (it becomes a 404).
    pub fn remove(&self, path: &str) {
        self.state.remove(path);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// The requests whose path (without query) is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        let path = normalize(path);
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections()
    }

    /// The most requests answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight()
    }

    /// Connections whose acceptor (TLS handshake) failed.
    pub fn handshake_failures(&self) -> usize {
        self.state.handshake_failures()
    }

    /// Connections whose acceptor (TLS handshake) succeeded.
    pub fn handshakes_ok(&self) -> usize {
        self.state.handshakes_ok()
    }

    /// See [`ServerState::set_close_connections`]: one request per
    /// connection, every response with `Connection: close`.
    pub fn set_close_connections(&self, close: bool) {
        self.state.set_close_connections(close);
    }

    /// Body bytes written so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent()
    }

    /// Polls `condition` every 10 ms until it holds (`true`) or `timeout`
    /// passes (`false`). Blocks the calling thread: from async code, use
    /// it only with a multi-threaded runtime or through `spawn_blocking`.
    pub fn wait_until(&self, timeout: Duration, condition: impl Fn(&HttpServer) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let joined = self.thread.take().map(JoinHandle::join);
        if std::thread::panicking() {
            return;
        }
        if let Some(Err(_)) = joined {
            panic!("the test HTTP server thread panicked");
        }
        let panics = lock(&self.state.panics).clone();
        if !panics.is_empty() {
            panic!("the test HTTP server panicked: {}", panics.join("; "));
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    accept: Option<AcceptFn>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let id = state.connection_accepted();
        let _ = tcp.set_nodelay(true);
        let conn_state = Arc::clone(&state);
        let accept = accept.clone();
        let task = tokio::spawn(async move {
            match accept {
                None => serve_connection_numbered(tcp, &conn_state, id).await,
                Some(accept) => match accept(tcp).await {
                    Ok((stream, true)) => {
                        conn_state.handshakes_ok.fetch_add(1, Ordering::SeqCst);
                        serve_h2(stream, conn_state, id).await;
                    }
                    Ok((stream, false)) => {
                        conn_state.handshakes_ok.fetch_add(1, Ordering::SeqCst);
                        serve_connection_numbered(stream, &conn_state, id).await;
                    }
                    Err(_) => {
                        conn_state.handshake_failures.fetch_add(1, Ordering::SeqCst);
                    }
                },
            }
        });
        let watch_state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Err(e) = task.await {
                if e.is_panic() {
                    let payload = e.into_panic();
                    let text = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "a connection handler panicked".to_owned());
                    watch_state.record_panic(text);
                }
            }
        });
    }
}

/// Serves HTTP/1.1 requests on `stream` (keep-alive) until the peer closes,
/// a route closes, or an I/O error; counts the connection in `state`.
pub async fn serve_connection<S>(stream: S, state: Arc<ServerState>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = state.connection_accepted();
    serve_connection_numbered(stream, &state, id).await;
}

async fn serve_connection_numbered<S>(mut stream: S, state: &ServerState, id: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (request, client_keeps_alive) = match read_request(&mut stream, &mut buf, id).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => break,
        };
        lock(&state.requests).push(request.clone());
        let plan = plan_response(state, &request);
        let keep_alive = !plan.close && client_keeps_alive && !state.closes_connections();
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let written = write_response(&mut stream, &plan, keep_alive, state).await;
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        match written {
            Ok(true) if keep_alive => {}
            _ => break,
        }
    }
    let _ = stream.shutdown().await;
}

/// Serves an HTTP/2 connection (hyper's server) until the client or an
/// error ends it: each request read whole, recorded, answered from the
/// same [`Plan`] as over HTTP/1.1 ([`h2_answer`]).
async fn serve_h2<S>(stream: S, state: Arc<ServerState>, id: usize)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| h2_answer(req, Arc::clone(&state), id));
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// The body of an HTTP/2 answer: frames from a task that paces them
/// ([`Plan::throttle`]) and aborts the stream where a plan truncates.
type H2Body = http_body_util::channel::Channel<Bytes, io::Error>;

/// One HTTP/2 request: recorded like an HTTP/1.1 one, answered from its
/// [`Plan`]. An `Err` (a hang-up, a request body too long) resets the
/// stream.
async fn h2_answer(
    req: hyper::Request<hyper::body::Incoming>,
    state: Arc<ServerState>,
    id: usize,
) -> io::Result<hyper::Response<H2Body>> {
    use http_body_util::BodyExt;

    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        .to_bytes();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let request = RecordedRequest {
        path: normalize(&target),
        method: parts.method.as_str().to_owned(),
        target,
        // HTTP/2 sends every name lower case (RFC 9113 §8.2).
        names_as_sent: parts.headers.iter().map(|(n, _)| n.as_str().to_owned()).collect(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        connection: id,
        protocol: "h2",
    };
    lock(&state.requests).push(request.clone());
    let answering = Answering::new(&state);
    let plan = plan_response(&state, &request);
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    if plan.hang_up {
        return Err(io::Error::other("the route hangs up"));
    }
    let mut response = hyper::Response::builder().status(plan.status);
    for (name, value) in &plan.headers {
        // HTTP/2 has no connection-specific headers (RFC 9113 §8.2.2).
        if !["connection", "keep-alive", "transfer-encoding"].contains(&name.to_ascii_lowercase().as_str()) {
            response = response.header(name.as_str(), value.as_str());
        }
    }
    if let Some(len) = plan.content_length {
        response = response.header("content-length", len);
    }
    let (mut tx, body) = H2Body::new(1);
    if !plan.no_body {
        tokio::spawn(async move {
            let _answering = answering;
            for piece in plan.pieces() {
                let n = piece.len();
                if tx.send_data(plan.body.slice(piece)).await.is_err() {
                    return;
                }
                state.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
                if let Some((_, delay)) = plan.throttle {
                    tokio::time::sleep(delay).await;
                }
            }
            if plan.truncate_after.is_some() {
                tx.abort(io::Error::other("the route truncates the body"));
            }
        });
    }
    response
        .body(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// A request being answered, counted in [`ServerState::max_in_flight`]
/// until dropped.
struct Answering(Arc<ServerState>);

impl Answering {
    fn new(state: &Arc<ServerState>) -> Answering {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Answering(Arc::clone(state))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether the client lets the connection stay open: not when it says
/// `Connection: close`, nor when it speaks HTTP/1.0 without
/// `Connection: keep-alive`.
fn wants_keep_alive(r: &RecordedRequest, http10: bool) -> bool {
    let has = |token: &str| {
        r.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    !has("close") && (!http10 || has("keep-alive"))
}

/// Reads one request (its head, then its body: `Content-Length` bytes or
/// chunked); `None` at a clean EOF. With the request comes whether the
/// client keeps the connection alive.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    id: usize,
) -> io::Result<Option<(RecordedRequest, bool)>> {
    if buf.is_empty() && read_more(stream, buf).await? == 0 {
        return Ok(None);
    }
    let head = read_through(stream, buf, b"\r\n\r\n", "request head").await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let http10 = parts.next() == Some("HTTP/1.0");
    let pairs: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let names_as_sent = pairs.iter().map(|(n, _)| n.trim().to_owned()).collect();
    let headers: Vec<(String, String)> = (pairs.iter())
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut request = RecordedRequest {
        path: normalize(&target),
        method,
        target,
        headers,
        names_as_sent,
        body: Bytes::new(),
        connection: id,
        protocol: if http10 { "http/1.0" } else { "http/1.1" },
    };
    request.body = read_body(stream, buf, &request).await?;
    let keep_alive = wants_keep_alive(&request, http10);
    Ok(Some((request, keep_alive)))
}

/// Reads what the stream has into `buf`: how many bytes (0 at its end).
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Reads on until `buf` holds `n` bytes; the stream's end before that is
/// `UnexpectedEof`.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    while buf.len() < n {
        if read_more(stream, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Takes what comes before `end` off the front of `buf` (and `end` too),
/// reading as needed; more than [`MAX_HEAD`] bytes without it is an error
/// saying `what` is too long.
async fn read_through<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    end: &[u8],
    what: &str,
) -> io::Result<Vec<u8>> {
    loop {
        if let Some(at) = buf.windows(end.len()).position(|w| w == end) {
            let mut taken: Vec<u8> = buf.drain(..at + end.len()).collect();
            taken.truncate(at);
            return Ok(taken);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what} too long"),
            ));
        }
        fill(stream, buf, buf.len() + 1).await?;
    }
}

/// Takes a line (without its CRLF) off the front of `buf`.
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    read_through(stream, buf, b"\r\n", "line").await
}

/// The request's body: chunked when `Transfer-Encoding` ends in `chunked`
/// (RFC 9112 §7.1; extensions and trailers are read and dropped), else
/// `Content-Length` bytes, else none.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    request: &RecordedRequest,
) -> io::Result<Bytes> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let chunked = request
        .header("transfer-encoding")
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let line = read_line(stream, buf).await?;
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                while !read_line(stream, buf).await?.is_empty() {}
                return Ok(body.into());
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("request body too long"));
            }
            fill(stream, buf, size + 2).await?;
            body.extend(buf.drain(..size));
            if buf.drain(..2).as_slice() != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
    };
    if length > MAX_BODY {
        return Err(invalid("request body too long"));
    }
    fill(stream, buf, length).await?;
    Ok(buf.drain(..length).collect::<Vec<u8>>().into())
}

/// What to send.
#[derive(Debug)]
struct Plan {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body (empty for HEAD).
    body: Bytes,
    /// Send `Content-Length: content_length` (None: chunked).
    content_length: Option<u64>,
    /// Stop after this many body bytes and close.
    truncate_after: Option<usize>,
    throttle: Option<(usize, Duration)>,
    close: bool,
    /// No body at all, not even a chunked terminator (HEAD, 204, 304).
    no_body: bool,
    /// Wait this long before the headers.
    delay: Option<Duration>,
    /// Send nothing; close.
    hang_up: bool,
}

impl Plan {
    /// The body as it goes out, over HTTP/1.1 and HTTP/2 alike: ranges of
    /// `body` one write (or throttle) chunk long, up to where a truncating
    /// plan stops.
    fn pieces(&self) -> impl Iterator<Item = std::ops::Range<usize>> {
        let limit = self
            .truncate_after
            .map_or(self.body.len(), |k| k.min(self.body.len()));
        let chunk = self.throttle.map_or(WRITE_CHUNK, |(c, _)| c);
        (0..limit)
            .step_by(chunk)
            .map(move |start| start..(start + chunk).min(limit))
    }

    fn simple(status: u16, text: String, head: bool) -> Plan {
        let bodiless = no_body_status(status);
        let text = if bodiless { String::new() } else { text };
        let len = text.len() as u64;
        Plan {
            status,
            headers: if bodiless {
                Vec::new()
            } else {
                vec![("Content-Type".into(), "text/plain".into())]
            },
            body: if head { Bytes::new() } else { Bytes::from(text) },
            content_length: (!bodiless).then_some(len),
            truncate_after: None,
            throttle: None,
            close: false,
            no_body: head || bodiless,
            delay: None,
            hang_up: false,
        }
    }
}

/// 1xx, 204 and 304 responses never have a body (RFC 9112 §6.3).
fn no_body_status(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

fn plan_response(state: &ServerState, req: &RecordedRequest) -> Plan {
    let head = req.method.eq_ignore_ascii_case("HEAD");
    let mut routes = lock(&state.routes);
    let Some(entry) = routes.get_mut(&req.path) else {
        return Plan::simple(404, format!("no route for {}\n", req.path), head);
    };
    entry.hits = entry.hits.saturating_add(1);
    let route = entry.route.clone();
    let extra = &route.headers;

    if let Some(only) = &route.method {
        if !req.method.eq_ignore_ascii_case(only) {
            let mut plan = Plan::simple(405, format!("only {only} here\n"), head);
            plan.headers.push(("Allow".into(), only.clone()));
            add_route_headers(&mut plan.headers, extra);
            return plan;
        }
    }
    if route.guard.is_set() {
        let verdict = route.guard.check(
            lock(&state.nonces).entry(route.guard.algorithm()).or_default(),
            &req.method,
            &req.target,
            req.authorization(),
        );
        if let auth::Verdict::Challenge(challenges) = verdict {
            let mut plan = Plan::simple(401, "authorization required\n".into(), head);
            for c in challenges {
                plan.headers.push(("WWW-Authenticate".into(), c));
            }
            add_route_headers(&mut plan.headers, extra);
            plan.close = route.close;
            plan.delay = route.delay;
            return plan;
        }
    }
    if let Some(expected) = &route.authorization {
        if req.authorization() != Some(expected.as_str()) {
            let mut plan = Plan::simple(401, "authorization required\n".into(), head);
            plan.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"bits-testkit\"".into()));
            add_route_headers(&mut plan.headers, extra);
            plan.close = route.close;
            plan.delay = route.delay;
            return plan;
        }
    }
    if let Some((times, status)) = route.fail_first {
        if entry.hits <= times {
            let mut plan = Plan::simple(status, format!("scripted failure {status}\n"), head);
            if let Some(ra) = &route.retry_after {
                plan.headers.push(("Retry-After".into(), ra.clone()));
            }
            add_route_headers(&mut plan.headers, extra);
            plan.close = route.close;
            plan.delay = route.delay;
            return plan;
        }
    }
    let mut plan = match &route.kind {
        Kind::HangUp => Plan {
            hang_up: true,
            close: true,
            ..Plan::simple(200, String::new(), true)
        },
        Kind::Status(status) => {
            let mut plan = Plan::simple(*status, format!("status {status}\n"), head);
            if let Some(ra) = &route.retry_after {
                plan.headers.push(("Retry-After".into(), ra.clone()));
            }
            plan
        }
        Kind::Redirect { status, location } => {
            let mut plan = Plan::simple(*status, format!("redirect {status}\n"), head);
            if let Some(loc) = location {
                plan.headers.push(("Location".into(), loc.clone()));
            }
            plan
        }
        Kind::Body(body) => {
            let plan = plan_body(&route, body, req, head);
            if !head && plan.status < 300 {
                if let Some(after) = route.truncate_after {
                    if entry.truncated < route.truncate_times {
                        entry.truncated += 1;
                        let mut headers = plan.headers;
                        add_route_headers(&mut headers, extra);
                        return Plan {
                            truncate_after: Some(after),
                            headers,
                            close: true,
                            delay: route.delay,
                            ..plan
                        };
                    }
                }
            }
            plan
        }
    };
    add_route_headers(&mut plan.headers, extra);
    plan.close |= route.close;
    plan.delay = route.delay;
    plan
}

/// Appends a route's own headers; each replaces any header of that name the
/// server put there itself (a route's `Content-Type` wins over `text/plain`).
fn add_route_headers(headers: &mut Vec<(String, String)>, route_headers: &[(String, String)]) {
    headers.retain(|(name, _)| !route_headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)));
    headers.extend(route_headers.iter().cloned());
}

fn plan_body(route: &Route, body: &Bytes, req: &RecordedRequest, head: bool) -> Plan {
    let total = body.len() as u64;
    let mut headers = Vec::new();
    if let Some(etag) = &route.etag {
        headers.push(("ETag".to_owned(), etag.clone()));
    }
    if let Some(lm) = &route.last_modified {
        headers.push(("Last-Modified".to_owned(), lm.clone()));
    }
    if !route.ignore_range {
        headers.push(("Accept-Ranges".to_owned(), "bytes".to_owned()));
    }
    let range = if route.ignore_range || !if_range_matches(route, req) {
        None
    } else {
        req.range().and_then(parse_range)
    };
    let (status, slice) = match range {
        None => (200, body.clone()),
        Some((start, _)) if start >= total => {
            headers.push(("Content-Range".to_owned(), format!("bytes */{total}")));
            let mut plan = Plan::simple(416, String::new(), head);
            plan.headers.append(&mut headers);
            return plan;
        }
        Some((start, end)) => {
            let last = end.map_or(total - 1, |e| e.min(total - 1));
            headers.push((
                "Content-Range".to_owned(),
                format!("bytes {start}-{last}/{total}"),
            ));
            (206, body.slice(start as usize..=last as usize))
        }
    };
    let len = slice.len() as u64;
    Plan {
        status,
        headers,
        body: if head { Bytes::new() } else { slice },
        content_length: if route.chunked { None } else { Some(len) },
        truncate_after: None,
        throttle: route.throttle,
        close: false,
        no_body: head,
        delay: None,
        hang_up: false,
    }
}

/// `If-Range` absent, or equal to the route's strong ETag or Last-Modified.
fn if_range_matches(route: &Route, req: &RecordedRequest) -> bool {
    let Some(value) = req.if_range() else {
        return true;
    };
    if value.starts_with('"') || value.starts_with("W/") {
        route
            .etag
            .as_deref()
            .is_some_and(|e| e == value && !e.starts_with("W/"))
    } else {
        route.last_modified.as_deref() == Some(value)
    }
}

/// `bytes=N-` or `bytes=N-M` → (N, M); anything else (suffix, several
/// ranges, garbage) → None, i.e. the whole body.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = end.trim();
    if end.is_empty() {
        return Some((start, None));
    }
    let end: u64 = end.parse().ok()?;
    (end >= start).then_some((start, Some(end)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes the response; `Ok(true)` when it was complete (the connection may
/// serve another request).
async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    plan: &Plan,
    keep_alive: bool,
    state: &ServerState,
) -> io::Result<bool> {
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    if plan.hang_up {
        return Ok(false);
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", plan.status, reason(plan.status));
    match plan.content_length {
        Some(len) => head.push_str(&format!("Content-Length: {len}\r\n")),
        None if no_body_status(plan.status) => {}
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    for (name, value) in &plan.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;

    for piece in plan.pieces() {
        let n = piece.len();
        let piece = &plan.body[piece];
        if plan.content_length.is_none() {
            stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            stream.write_all(piece).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(piece).await?;
        }
        state.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
        if let Some((_, delay)) = plan.throttle {
            stream.flush().await?;
            tokio::time::sleep(delay).await;
        }
    }
    if plan.truncate_after.is_some() {
        stream.flush().await?;
        return Ok(false);
    }
    if plan.content_length.is_none() && !plan.no_body {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_range_accepts_open_and_closed_single_ranges() {
        assert_eq!(parse_range("bytes=0-"), Some((0, None)));
        assert_eq!(parse_range("bytes=500-"), Some((500, None)));
        assert_eq!(parse_range("bytes=5-9"), Some((5, Some(9))));
        assert_eq!(parse_range("bytes=9-5"), None);
        assert_eq!(parse_range("bytes=-5"), None);
        assert_eq!(parse_range("bytes=0-1,3-4"), None);
        assert_eq!(parse_range("items=0-"), None);
    }

    fn request(headers: &[(&str, &str)]) -> RecordedRequest {
        RecordedRequest {
            method: "GET".into(),
            target: "/f".into(),
            path: "/f".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            names_as_sent: headers.iter().map(|(n, _)| (*n).to_owned()).collect(),
            body: Bytes::new(),
            connection: 1,
            protocol: "http/1.1",
        }
    }

    #[test]
    fn if_range_compares_strong_etags_and_dates_exactly() {
        let route = Route::body("x")
            .etag("\"v1\"")
            .last_modified("Wed, 21 Oct 2015 07:28:00 GMT");
        assert!(if_range_matches(&route, &request(&[])));
        assert!(if_range_matches(&route, &request(&[("if-range", "\"v1\"")])));
        assert!(!if_range_matches(&route, &request(&[("if-range", "\"v2\"")])));
        assert!(if_range_matches(
            &route,
            &request(&[("if-range", "Wed, 21 Oct 2015 07:28:00 GMT")])
        ));
        assert!(!if_range_matches(
            &route,
            &request(&[("if-range", "Thu, 22 Oct 2015 07:28:00 GMT")])
        ));
        let weak = Route::body("x").etag("W/\"v1\"");
        assert!(!if_range_matches(&weak, &request(&[("if-range", "W/\"v1\"")])));
    }

    #[test]
    fn http10_and_connection_close_end_keep_alive() {
        assert!(wants_keep_alive(&request(&[]), false));
        assert!(!wants_keep_alive(&request(&[("connection", "close")]), false));
        assert!(!wants_keep_alive(&request(&[("connection", "TE, Close")]), false));
        assert!(!wants_keep_alive(&request(&[]), true));
        assert!(wants_keep_alive(&request(&[("connection", "keep-alive")]), true));
    }

    #[test]
    fn a_route_header_replaces_the_servers_own() {
        let state = ServerState::new();
        state.set(
            "/f",
            Route::status(404).header("content-type", "application/x-test"),
        );
        let plan = plan_response(&state, &request(&[]));
        let types: Vec<_> = plan
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(types, ["application/x-test"]);
    }

    /// Sends `raw` on a fresh connection, ends its sending side, and reads
    /// until the server closes.
    fn exchange(addr: SocketAddr, raw: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn close_connections_serves_one_request_per_connection() {
        let server = HttpServer::start().with("/f", Route::body("x"));
        server.set_close_connections(true);
        // No `Connection: close` from the client: the server still closes,
        // after a 404 as after a 200.
        let out = exchange(server.addr(), "GET /f HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("Connection: close\r\n"),
            "{out}"
        );
        let out = exchange(server.addr(), "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        // HTTP/1.0 closes by default too, without the flag.
        server.set_close_connections(false);
        let out = exchange(server.addr(), "GET /f HTTP/1.0\r\n\r\n");
        assert!(out.ends_with("\r\n\r\nx"), "{out}");
        assert_eq!(server.requests().len(), 3);
    }

    #[test]
    fn start_with_listener_serves_on_it_or_returns_its_error() {
        let refused = HttpServer::start_with_listener(|| Err(io::Error::other("no port")));
        assert_eq!(refused.unwrap_err().to_string(), "no port");
        let server = HttpServer::start_with_listener(bind_free_port).unwrap();
        server.set("/f", Route::body("yes"));
        let out = exchange(server.addr(), "GET /f HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(out.ends_with("\r\n\r\nyes"), "{out}");
        assert_eq!(server.base_url(), format!("http://{}", server.addr()));
    }

    #[test]
    fn handshakes_are_counted_before_the_first_request() {
        let server = HttpServer::start_with_acceptor("http", |tcp| async move { Ok(tcp) });
        server.set("/f", Route::body("x"));
        assert_eq!(server.handshakes_ok(), 0);
        exchange(server.addr(), "GET /f HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!((server.handshakes_ok(), server.handshake_failures()), (1, 0));
        assert_eq!(
            HttpServer::start().with("/f", Route::body("x")).handshakes_ok(),
            0
        );
    }

    #[test]
    fn routes_answer_any_method_and_bodies_are_recorded_whole() {
        let server = HttpServer::start()
            .with("/f", Route::body("x"))
            .with("/made", Route::status(201));
        let out = exchange(
            server.addr(),
            "PUT /made HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
             POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n\
             DELETE /f HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 201 Created\r\n"), "{out}");
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        let reqs = server.requests();
        let seen: Vec<(&str, &[u8])> = reqs.iter().map(|r| (r.method.as_str(), &r.body[..])).collect();
        assert_eq!(
            seen,
            [
                ("PUT", &b"hello"[..]),
                ("POST", &b"abc0123456789"[..]),
                ("DELETE", &b""[..])
            ]
        );
        assert!(reqs.iter().all(|r| r.connection == 1));
    }

    #[test]
    fn a_body_cut_short_leaves_no_record() {
        let server = HttpServer::start().with("/f", Route::body("x"));
        let out = exchange(
            server.addr(),
            "PUT /f HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
        );
        assert_eq!(out, "");
        let out = exchange(
            server.addr(),
            "PUT /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
        );
        assert_eq!(out, "");
        let out = exchange(
            server.addr(),
            "PUT /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        );
        assert_eq!(out, "");
        assert!(server.requests().is_empty());
    }
}
