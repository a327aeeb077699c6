//! A TLS backend's transport set up for tests, written once for every
//! backend (`B` is its [`TlsBackend`]: `Openssl`, `Rustls`, `Native`):
//! trusting only the roots a test names, never the system's.
//!
//! ```text
//! use bits_transport_openssl::Openssl;
//!
//! let t = backend::with_pki::<Openssl>(TestPki::shared());
//! assert_eq!(backend::handshake::<Openssl>(backend::pki_roots(), addr, "localhost".into(), 0).await, Ok(()));
//! ```
//!
//! The suites' macros ([`isolation_tests!`](crate::isolation_tests),
//! [`crl_tests!`](crate::crl_tests), [`chain_tests!`](crate::chain_tests),
//! [`system_roots_tests!`](crate::system_roots_tests),
//! [`client_cert_tests!`](crate::client_cert_tests)) take the backend type
//! and build their transports here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bits_core::{ConnectionPolicy, SecurityFlags};
use bits_http::{TlsBackend, TlsConnect, TlsTransport, TlsTransportBuilder};
use tokio::net::TcpStream;

use crate::conformance::{self, Report};
use crate::http::HttpServer;
use crate::pki::{LeafKind, TestPki};
use crate::temp::TempDir;
use crate::tls::Alpn;

/// The CRL cache directory of transports whose tests never check CRLs (no
/// `ENABLE_CRL_CHECK`): nothing is ever written there.
pub fn unused_crl_cache() -> PathBuf {
    std::env::temp_dir().join("bits-testkit-crl-cache-never-used")
}

/// A builder trusting the DER certificates `roots` only.
///
/// # Panics
/// When the backend refuses one of them.
pub fn builder<B: TlsBackend>(roots: &[Vec<u8>]) -> TlsTransportBuilder<B> {
    roots.iter().fold(
        TlsTransport::<B>::builder()
            .system_roots(false)
            .crl_cache_dir(unused_crl_cache()),
        |b, der| b.add_root_der(der).expect("the backend takes the test root"),
    )
}

/// A transport trusting the DER certificates `roots` only (its CRL cache is
/// [`unused_crl_cache`]).
///
/// # Panics
/// When the backend refuses a root or cannot build.
pub fn with_roots<B: TlsBackend>(roots: &[Vec<u8>]) -> TlsTransport<B> {
    builder::<B>(roots).build().expect("a transport")
}

/// A transport trusting `pki`'s root only, from its PEM (its CRL cache is
/// [`unused_crl_cache`]).
///
/// # Panics
/// When the backend refuses the root or cannot build.
pub fn with_pki<B: TlsBackend>(pki: &TestPki) -> TlsTransport<B> {
    with_pki_and_crl_cache::<B>(pki, &unused_crl_cache())
}

/// A transport trusting `pki`'s root only, from its PEM, with its CRL cache
/// in `crl_cache`.
///
/// # Panics
/// When the backend refuses the root or cannot build.
pub fn with_pki_and_crl_cache<B: TlsBackend>(pki: &TestPki, crl_cache: &Path) -> TlsTransport<B> {
    TlsTransport::<B>::builder()
        .add_root_pem(pki.root_pem())
        .expect("the backend takes the test root")
        .system_roots(false)
        .crl_cache_dir(crl_cache)
        .build()
        .expect("a transport")
}

/// The scriptable [`HttpServer`] over TLS
/// ([`crate::tls::https_server`]), presenting [`TestPki::shared`]'s good
/// leaf (valid for `127.0.0.1`), and a transport trusting that PKI.
pub fn https_server<B: TlsBackend>() -> (TlsTransport<B>, HttpServer) {
    let pki = TestPki::shared();
    (
        with_pki::<B>(pki),
        crate::tls::https_server(pki.leaf(LeafKind::Good)),
    )
}

/// Drops every pooled connection of `t` (the next request connects afresh).
pub fn clear_pools<B: TlsBackend>(t: &TlsTransport<B>) {
    t.http().clear_pools();
}

/// [`TestPki::shared`]'s root, DER, as the one root of [`handshake`].
pub fn pki_roots() -> Vec<Vec<u8>> {
    vec![TestPki::shared().root_der().to_vec()]
}

/// The backend's own handshake (its connector, no HTTP) over a new TCP
/// connection to `addr`, naming the server `host`, under the certificate
/// `flags`, trusting the DER certificates `roots` only: `Ok(())` or the
/// failure's HRESULT.
///
/// # Panics
/// When `addr` refuses the TCP connection or `flags` is not a valid value.
pub async fn handshake<B: TlsBackend>(
    roots: Vec<Vec<u8>>,
    addr: SocketAddr,
    host: String,
    flags: u32,
) -> Result<(), u32> {
    let t = with_roots::<B>(&roots);
    let tcp = TcpStream::connect(addr).await.expect("the server accepts TCP");
    let policy = ConnectionPolicy::new(SecurityFlags::new(flags).expect("a valid flag value"));
    t.http()
        .tls()
        .connect(&host, tcp, &policy)
        .await
        .map(|_| ())
        .map_err(|e| e.hresult().0)
}

/// A handshake future, as the suites' handshake types return it.
pub type HandshakeFuture = Pin<Box<dyn Future<Output = Result<(), u32>>>>;

/// [`handshake`] naming the server `127.0.0.1`: a
/// [`suites::chains::Handshake`](crate::suites::chains::Handshake).
pub fn chain_handshake<B: TlsBackend>(roots: Vec<Vec<u8>>, addr: SocketAddr, flags: u32) -> HandshakeFuture {
    Box::pin(handshake::<B>(roots, addr, "127.0.0.1".to_owned(), flags))
}

/// [`handshake`] trusting [`pki_roots`]: a
/// [`suites::hostnames::HostHandshake`](crate::suites::hostnames::HostHandshake).
pub fn host_handshake<B: TlsBackend>(addr: SocketAddr, host: String, flags: u32) -> HandshakeFuture {
    Box::pin(handshake::<B>(pki_roots(), addr, host, flags))
}

/// The conformance matrix ([`conformance::run_matrix`]) against the
/// backend, trusting the matrix PKI's root only, with a CRL cache of its
/// own, named [`TlsBackend::NAME`].
pub async fn run_matrix<B: TlsBackend>() -> Report {
    run_matrix_over::<B>(Alpn::Ignore).await
}

/// [`run_matrix`] against servers that answer ALPN as `alpn` says
/// ([`conformance::run_matrix_over`]; [`Alpn::H2`]: the matrix over
/// HTTP/2).
pub async fn run_matrix_over<B: TlsBackend>(alpn: Alpn) -> Report {
    let crl_cache = TempDir::new("conformance-crl");
    let dir = crl_cache.path().to_owned();
    let mut report = conformance::run_matrix_over(B::NAME, alpn, &|pki| {
        Arc::new(with_pki_and_crl_cache::<B>(pki, &dir))
    })
    .await;
    report.client_certificates = Some(B::CLIENT_CERT_FORMATS.describe());
    report
}
