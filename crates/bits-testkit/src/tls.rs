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
//! ALPN ([`Alpn`]): by default a server ignores the client's offer, so the
//! connection is HTTP/1.1 without a word; [`TlsServer::start_with`] and
//! [`https_server_with`] can choose `http/1.1` by ALPN, or `h2` (HTTP/2,
//! hyper's server) for a client that offers it and `http/1.1` for one
//! that offers only that. Every request records the protocol that carried
//! it ([`RecordedRequest::protocol`]).
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
use openssl::ssl::{
    select_next_proto, AlpnError, Ssl, SslAcceptor, SslMethod, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
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
    /// The protocol that carried it: `http/1.1` or `h2`.
    pub protocol: &'static str,
    /// Which connection it came on (1 for the first accepted).
    pub connection: usize,
}

impl From<&http::RecordedRequest> for RecordedRequest {
    fn from(r: &http::RecordedRequest) -> RecordedRequest {
        RecordedRequest {
            method: r.method.clone(),
            target: r.target.clone(),
            range: r.range().map(str::to_owned),
            protocol: r.protocol,
            connection: r.connection,
        }
    }
}

/// What a test TLS server does with the client's ALPN offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// Ignores it (no ALPN extension in the answer): HTTP/1.1, unsaid. The
    /// default, and what [`TlsServer::start`] and [`https_server`] do.
    #[default]
    Ignore,
    /// Chooses `http/1.1` when offered (else nothing): HTTP/1.1, said.
    Http11,
    /// Chooses `h2` when offered, else `http/1.1` when offered: HTTP/2
    /// (hyper's server) for a client that offers it.
    H2,
}

impl Alpn {
    /// The protocols the server takes, most preferred first, in ALPN's
    /// wire form; `None` for [`Alpn::Ignore`].
    fn wire(self) -> Option<&'static [u8]> {
        match self {
            Alpn::Ignore => None,
            Alpn::Http11 => Some(b"\x08http/1.1"),
            Alpn::H2 => Some(b"\x02h2\x08http/1.1"),
        }
    }

    /// `h1`, `h1-alpn`, `h2`: for test and report names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alpn::Ignore => "h1",
            Alpn::Http11 => "h1-alpn",
            Alpn::H2 => "h2",
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
        TlsServer::start_with(leaf, Alpn::Ignore)
    }

    /// [`TlsServer::start`], answering the client's ALPN offer as `alpn`
    /// says (with [`Alpn::H2`], HTTP/2 for a client that offers `h2`).
    ///
    /// # Panics
    /// If the acceptor cannot be built or no port can be bound.
    pub fn start_with(leaf: &Leaf, alpn: Alpn) -> TlsServer {
        let file = Route::body(TlsServer::BODY)
            .etag("\"bits-testkit-body\"")
            .header("Content-Type", "application/octet-stream");
        TlsServer {
            leaf: leaf.name().to_owned(),
            server: https_server_with(leaf, alpn).with("/file", file),
        }
    }

    /// The scriptable server underneath (routes, counters, request log).
    pub fn http(&self) -> &HttpServer {
        &self.server
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
    acceptor_with(leaf, Alpn::Ignore)
}

/// [`acceptor_for`], answering the client's ALPN offer as `alpn` says.
///
/// # Panics
/// If OpenSSL refuses the leaf or its key.
pub fn acceptor_with(leaf: &Leaf, alpn: Alpn) -> Arc<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("TLS acceptor builder");
    if let Some(ours) = alpn.wire() {
        // The first of ours the client offers; none: no ALPN in the answer.
        b.set_alpn_select_callback(move |_, offered| {
            select_next_proto(ours, offered).ok_or(AlpnError::NOACK)
        });
    }
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
    https_server_with(leaf, Alpn::Ignore)
}

/// [`https_server`], answering the client's ALPN offer as `alpn` says: a
/// connection that chose `h2` is served over HTTP/2
/// ([`HttpServer::start_with_alpn_acceptor`]).
pub fn https_server_with(leaf: &Leaf, alpn: Alpn) -> HttpServer {
    let acceptor = acceptor_with(leaf, alpn);
    HttpServer::start_with_alpn_acceptor("https", move |tcp| {
        let acceptor = Arc::clone(&acceptor);
        async move {
            let ssl = Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
            let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
            Pin::new(&mut s).accept().await.map_err(std::io::Error::other)?;
            let h2 = s.ssl().selected_alpn_protocol() == Some(b"h2");
            Ok((s, h2))
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
        MtlsServer::start_with(auth, max, Alpn::Ignore)
    }

    /// [`MtlsServer::start`], answering the client's ALPN offer as `alpn`
    /// says (with [`Alpn::H2`], HTTP/2 for a client that offers `h2`).
    ///
    /// # Panics
    /// If the acceptor cannot be built or no port can be bound.
    pub fn start_with(auth: ClientAuth, max: MaxTls, alpn: Alpn) -> MtlsServer {
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
        if let Some(ours) = alpn.wire() {
            b.set_alpn_select_callback(move |_, offered| {
                select_next_proto(ours, offered).ok_or(AlpnError::NOACK)
            });
        }
        let acceptor = Arc::new(b.build());
        let presented = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&presented);
        let server = HttpServer::start_with_alpn_acceptor("https", move |tcp| {
            let acceptor = Arc::clone(&acceptor);
            let record = Arc::clone(&record);
            async move {
                let ssl = Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
                let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
                match Pin::new(&mut s).accept().await {
                    Ok(()) => {
                        let seen = s.ssl().peer_certificate().map(|c| presented_cert(&c));
                        record.lock().unwrap_or_else(PoisonError::into_inner).push(seen);
                        let h2 = s.ssl().selected_alpn_protocol() == Some(b"h2");
                        Ok((s, h2))
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
