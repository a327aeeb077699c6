//! Real TLS servers (OpenSSL, TLS 1.2 and 1.3) on 127.0.0.1, one per leaf:
//! the [`crate::http`] server behind a TLS acceptor.
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
//! single `Range: bytes=N-` or `bytes=N-M` with 206 (or 416 past the end);
//! anything else → 404. Connections are kept alive (unless the client sends
//! `Connection: close`), so a client's pool is exercised. Every request that
//! got past the handshake is recorded ([`TlsServer::requests`]); a
//! certificate failure must leave no record.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVersion};
use url::Url;

use crate::http::{self, HttpServer, Route};
use crate::pki::Leaf;

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

impl From<&http::RecordedRequest> for RecordedRequest {
    fn from(r: &http::RecordedRequest) -> RecordedRequest {
        RecordedRequest {
            method: r.method.clone(),
            target: r.target.clone(),
            range: r.range().map(str::to_owned),
        }
    }
}

/// A TLS server presenting one leaf (and its chain): an [`https_server`]
/// serving `/file`; stops on drop.
#[derive(Debug)]
pub struct TlsServer {
    leaf: String,
    server: HttpServer,
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
        let file = Route::body(TlsServer::BODY)
            .etag("\"bits-testkit-body\"")
            .header("Content-Type", "application/octet-stream");
        TlsServer {
            leaf: leaf.name().to_owned(),
            server: https_server(leaf).with("/file", file),
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
        Url::parse(&self.server.url(path)).expect("a valid URL")
    }

    /// Every request that reached HTTP, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests().iter().map(RecordedRequest::from).collect()
    }

    /// How many requests reached HTTP.
    pub fn request_count(&self) -> usize {
        self.server.requests().len()
    }

    /// How many requests reached HTTP with exactly this target.
    pub fn requests_for(&self, target: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// Completed TLS handshakes.
    pub fn handshakes_ok(&self) -> usize {
        self.server.handshakes_ok()
    }

    /// Handshakes that failed (the client refused the certificate, …).
    pub fn handshakes_failed(&self) -> usize {
        self.server.handshake_failures()
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
/// `https://127.0.0.1:PORT/…`; its handshakes are counted in
/// [`HttpServer::handshakes_ok`] and [`HttpServer::handshake_failures`].
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
