//! Real TLS servers (OpenSSL, TLS 1.2 and 1.3) on 127.0.0.1 serving a tiny
//! HTTP/1.1 responder, one per leaf.
//!
//! ```no_run
//! use bits_testkit::{pki::{LeafKind, TestPki}, tls::TlsServer};
//! let server = TlsServer::start(TestPki::shared().leaf(LeafKind::Good));
//! let url = server.url("/file");          // https://127.0.0.1:PORT/file
//! // … GET it: 200 and TlsServer::BODY (Range honoured: 206) …
//! assert_eq!(server.request_count(), 0);   // requests that reached HTTP
//! ```
//!
//! For HTTPS with the scriptable routes of [`crate::http`] (redirects, 503s,
//! truncation…), use [`https_server`].
//!
//! Paths: `/file` (any query) → 200 with [`TlsServer::BODY`], honouring a
//! single `Range: bytes=…` with 206 (or 416); anything else → 404. Every
//! Connections are kept alive (unless the client sends `Connection: close`),
//! so a client's pool is exercised. Every
//! request that got past the handshake is recorded ([`TlsServer::requests`]);
//! a certificate failure must leave no record.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVersion};
use tokio::net::TcpStream;
use url::Url;

use crate::http::HttpServer;
use crate::mini_http;
use crate::pki::Leaf;
use crate::server::ServerThread;

/// One request that reached HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent (`/file?case=3`).
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    handshakes_ok: AtomicUsize,
    handshakes_failed: AtomicUsize,
}

/// A TLS server presenting one leaf (and its chain); stops on drop.
#[derive(Debug)]
pub struct TlsServer {
    leaf: String,
    shared: Arc<Shared>,
    server: ServerThread,
}

impl TlsServer {
    /// The body of `/file`.
    pub const BODY: &'static [u8] =
        b"bits-testkit: this body came over TLS from 127.0.0.1. 0123456789abcdef\n";

    /// Starts a server on 127.0.0.1 on a free port presenting `leaf`.
    ///
    /// # Panics
    /// If the acceptor cannot be built or no port can be bound.
    pub fn start(leaf: &Leaf) -> TlsServer {
        let acceptor = acceptor_for(leaf);
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let server = ServerThread::spawn(leaf.name(), 0, false, move |tcp| {
            handle(acceptor.clone(), sh.clone(), tcp)
        })
        .expect("bind a TLS server on 127.0.0.1");
        TlsServer {
            leaf: leaf.name().to_owned(),
            shared,
            server,
        }
    }

    /// The name of the leaf it presents.
    pub fn leaf_name(&self) -> &str {
        &self.leaf
    }

    /// The bound address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT/path`; `path` starts with `/` and may hold a
    /// query.
    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("https://{}{path}", self.addr())).expect("a valid URL")
    }

    /// Every request that reached HTTP, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    /// How many requests reached HTTP.
    pub fn request_count(&self) -> usize {
        self.lock().len()
    }

    /// How many requests reached HTTP with exactly this target.
    pub fn requests_for(&self, target: &str) -> usize {
        self.lock().iter().filter(|r| r.target == target).count()
    }

    /// Completed TLS handshakes.
    pub fn handshakes_ok(&self) -> usize {
        self.shared.handshakes_ok.load(Ordering::SeqCst)
    }

    /// Handshakes that failed (the client refused the certificate, …).
    pub fn handshakes_failed(&self) -> usize {
        self.shared.handshakes_failed.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A TLS acceptor (TLS 1.2 and 1.3) presenting `leaf` and its chain.
///
/// # Panics
/// If OpenSSL refuses the leaf or its key.
pub fn acceptor_for(leaf: &Leaf) -> Arc<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("TLS acceptor builder");
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .expect("min TLS version");
    b.set_private_key(leaf.key()).expect("leaf key");
    b.set_certificate(leaf.cert()).expect("leaf certificate");
    for c in leaf.chain() {
        b.add_extra_chain_cert(c.clone()).expect("chain certificate");
    }
    b.check_private_key().expect("key matches certificate");
    Arc::new(b.build())
}

/// The scriptable [`HttpServer`] (routes, Range, redirects, scripted
/// failures, request log) served over TLS with `leaf`: for tests that need
/// HTTPS plus the HTTP behaviours of [`crate::http`]. Its URLs are
/// `https://127.0.0.1:PORT/…`.
pub fn https_server(leaf: &Leaf) -> HttpServer {
    let acceptor = acceptor_for(leaf);
    HttpServer::start_with_acceptor("https", move |tcp| {
        let acceptor = Arc::clone(&acceptor);
        async move {
            let ssl = Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
            let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
            Pin::new(&mut s).accept().await.map_err(std::io::Error::other)?;
            Ok(s)
        }
    })
}

async fn handle(acceptor: Arc<SslAcceptor>, shared: Arc<Shared>, tcp: TcpStream) {
    let Ok(ssl) = Ssl::new(acceptor.context()) else {
        return;
    };
    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
        return;
    };
    if Pin::new(&mut tls).accept().await.is_err() {
        shared.handshakes_failed.fetch_add(1, Ordering::SeqCst);
        return;
    }
    shared.handshakes_ok.fetch_add(1, Ordering::SeqCst);
    // Keep-alive: serve requests until the client closes or asks to.
    while let Ok(Some(head)) = mini_http::read_head(&mut tls).await {
        shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RecordedRequest {
                method: head.method.clone(),
                target: head.target.clone(),
                range: head.range.clone(),
            });
        let keep_alive = !head.close;
        if respond(&mut tls, &head, keep_alive).await.is_err() || !keep_alive {
            return;
        }
    }
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    head: &mini_http::RequestHead,
    keep_alive: bool,
) -> std::io::Result<()> {
    let send_body = head.method != "HEAD";
    if head.path() != "/file" {
        return mini_http::write_response_keep(tls, 404, &[], b"", send_body, keep_alive).await;
    }
    let body = TlsServer::BODY;
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
        ("ETag", "\"bits-testkit-body\"".to_owned()),
    ];
    match head
        .range
        .as_deref()
        .and_then(|r| mini_http::resolve_range(r, body.len()))
    {
        Some(Ok((start, end))) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{}", body.len())));
            let part = &body[start..=end];
            mini_http::write_response_keep(tls, 206, &headers, part, send_body, keep_alive).await
        }
        Some(Err(())) => {
            headers.push(("Content-Range", format!("bytes */{}", body.len())));
            mini_http::write_response_keep(tls, 416, &headers, b"", send_body, keep_alive).await
        }
        None => mini_http::write_response_keep(tls, 200, &headers, body, send_body, keep_alive).await,
    }
}
