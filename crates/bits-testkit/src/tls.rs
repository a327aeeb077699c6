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
//! truncation…), use [`https_server`]. For a server that asks for client
//! certificates, [`MtlsServer`].
//!
//! Paths: `/file` (any query) → 200 with [`TlsServer::BODY`], honouring a
//! single `Range: bytes=N-` or `bytes=N-M` with 206 (or 416 past the end);
//! anything else → 404. Connections are kept alive (unless the client sends
//! `Connection: close`), so a client's pool is exercised. Every request that
//! got past the handshake is recorded ([`TlsServer::requests`]); a
//! certificate failure must leave no record.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bits_core::Thumbprint;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use openssl::x509::X509Ref;
use tokio::io::AsyncReadExt;
use url::Url;

use crate::http::{self, HttpServer, Route};
use crate::pki::{Leaf, LeafKind, TestPki};

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

/// Whether an [`MtlsServer`] asks for a client certificate or demands one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// It asks (a CertificateRequest); a client without one is served.
    Optional,
    /// It asks and refuses a client without one (`FAIL_IF_NO_PEER_CERT`:
    /// TLS 1.3 alert `certificate_required` (116), TLS 1.2
    /// `handshake_failure` (40)).
    Required,
}

/// The highest TLS version an [`MtlsServer`] speaks (it speaks TLS 1.2 at
/// least).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxTls {
    /// TLS 1.2 only: a refused client certificate fails the client's
    /// handshake.
    Tls12,
    /// TLS 1.3: the server refuses a client certificate after the client's
    /// handshake completed, so the client learns it on its first read (its
    /// request was already written, and never reaches HTTP).
    Tls13,
}

/// The client certificate a handshake presented, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedCert {
    /// Its subject's common name.
    pub cn: String,
    /// Its SHA-1 thumbprint.
    pub sha1: Thumbprint,
}

/// A TLS server presenting [`TestPki::shared`]'s good leaf (valid for
/// 127.0.0.1 and localhost) that asks for a client certificate and
/// verifies it against the client root CA ([`TestPki::client_root_cert`]);
/// the client must send the client intermediate. It serves `/file` (200,
/// [`TlsServer::BODY`]) and the scriptable routes of [`HttpServer`], logs
/// every request with its headers ([`MtlsServer::requests`]), counts
/// handshakes, and records what each successful handshake presented
/// ([`MtlsServer::presented`]). No session cache, no tickets: every
/// connection is a full handshake. Stops on drop.
///
/// A refused handshake leaves no request in the log: the server drains
/// what the client sent (a TLS 1.3 client has already written its request)
/// until the client closes, so the client reads the alert rather than a
/// reset.
#[derive(Debug)]
pub struct MtlsServer {
    server: HttpServer,
    presented: Arc<Mutex<Vec<Option<PresentedCert>>>>,
}

impl MtlsServer {
    /// Starts a server on 127.0.0.1 on a free port.
    ///
    /// # Panics
    /// If the acceptor cannot be built or no port can be bound.
    pub fn start(auth: ClientAuth, max: MaxTls) -> MtlsServer {
        let pki = TestPki::shared();
        let leaf = pki.leaf(LeafKind::Good);
        let mut b =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("TLS acceptor builder");
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .expect("min TLS version");
        let max_version = match max {
            MaxTls::Tls12 => SslVersion::TLS1_2,
            MaxTls::Tls13 => SslVersion::TLS1_3,
        };
        b.set_max_proto_version(Some(max_version))
            .expect("max TLS version");
        b.set_private_key(leaf.key()).expect("leaf key");
        b.set_certificate(leaf.cert()).expect("leaf certificate");
        b.check_private_key().expect("key matches certificate");
        b.cert_store_mut()
            .add_cert(pki.client_root_cert().clone())
            .expect("trust the client root");
        let mut names = Stack::new().expect("a name stack");
        names
            .push(
                pki.client_root_cert()
                    .subject_name()
                    .to_owned()
                    .expect("copy a name"),
            )
            .expect("push a name");
        b.set_client_ca_list(names);
        let mode = match auth {
            ClientAuth::Optional => SslVerifyMode::PEER,
            ClientAuth::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        };
        b.set_verify(mode);
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        b.set_session_id_context(b"bits-testkit-mtls")
            .expect("session id context");
        b.set_num_tickets(0).expect("no tickets");
        let acceptor = Arc::new(b.build());
        let presented = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&presented);
        let server = HttpServer::start_with_acceptor("https", move |tcp| {
            let acceptor = Arc::clone(&acceptor);
            let record = Arc::clone(&record);
            async move {
                let ssl = Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
                let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
                match Pin::new(&mut s).accept().await {
                    Ok(()) => {
                        let seen = s.ssl().peer_certificate().map(|c| presented_cert(&c));
                        record.lock().unwrap_or_else(PoisonError::into_inner).push(seen);
                        Ok(s)
                    }
                    Err(e) => {
                        // Let the client read the alert: drain until it
                        // closes (or a second passes), then close.
                        let mut sink = [0u8; 4096];
                        let drain =
                            async { while matches!(s.get_mut().read(&mut sink).await, Ok(n) if n > 0) {} };
                        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                        Err(std::io::Error::other(e))
                    }
                }
            }
        });
        let file = Route::body(TlsServer::BODY)
            .etag("\"bits-testkit-body\"")
            .header("Content-Type", "application/octet-stream");
        MtlsServer {
            server: server.with("/file", file),
            presented,
        }
    }

    /// The scriptable server underneath (routes, counters, request log).
    pub fn http(&self) -> &HttpServer {
        &self.server
    }

    /// The bound address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> Url {
        Url::parse(&self.server.url(path)).expect("a valid URL")
    }

    /// Every request that reached HTTP, with its headers.
    pub fn requests(&self) -> Vec<http::RecordedRequest> {
        self.server.requests()
    }

    /// How many requests reached HTTP.
    pub fn request_count(&self) -> usize {
        self.server.requests().len()
    }

    /// What each successful handshake presented, in order (`None`: no
    /// client certificate).
    pub fn presented(&self) -> Vec<Option<PresentedCert>> {
        self.presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Completed TLS handshakes.
    pub fn handshakes_ok(&self) -> usize {
        self.server.handshakes_ok()
    }

    /// Refused TLS handshakes (counted once the client has closed, or a
    /// second after the refusal: see [`HttpServer::wait_until`]).
    pub fn handshakes_failed(&self) -> usize {
        self.server.handshake_failures()
    }
}

fn presented_cert(cert: &X509Ref) -> PresentedCert {
    let cn = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let digest = cert
        .digest(MessageDigest::sha1())
        .expect("SHA-1 of a certificate");
    let mut sha1 = [0u8; 20];
    sha1.copy_from_slice(&digest);
    PresentedCert {
        cn,
        sha1: Thumbprint(sha1),
    }
}
