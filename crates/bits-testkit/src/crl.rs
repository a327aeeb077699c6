//! A plain HTTP server on 127.0.0.1 serving CRLs, swappable at runtime, that
//! counts requests per path.
//!
//! ```no_run
//! use bits_testkit::{crl::CrlServer, pki::TestPki};
//! let pki = TestPki::shared();
//! let crls = CrlServer::start();              // 127.0.0.1:<free port>, every path 404
//! crls.serve_pki(pki);                        // /root.crl and /int.crl, fresh
//! let pki = pki.with_crl_base(&crls.base_url()); // leaves whose CDP is this server
//! crls.set("/root.crl", pki.stale_root_crl_der()); // now serve a stale one
//! crls.set_status("/root.crl", 404);            // … or none
//! assert_eq!(crls.requests("/root.crl"), 0);
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::net::{TcpListener, TcpSocket};

use crate::http::{HttpServer, Route};
use crate::pki::TestPki;

/// What the server answers on one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlResponse {
    /// `200` with these bytes (`Content-Type: application/pkix-crl`).
    Bytes(Vec<u8>),
    /// This status (with [`HttpServer`]'s short text body).
    Status(u16),
}

impl CrlResponse {
    fn route(self) -> Route {
        match self {
            CrlResponse::Bytes(bytes) => Route::body(bytes)
                .ignore_range()
                .header("Content-Type", "application/pkix-crl"),
            CrlResponse::Status(status) => Route::status(status),
        }
    }
}

/// A CRL server on 127.0.0.1 (an [`HttpServer`] with one request per
/// connection); stops on drop.
#[derive(Debug)]
pub struct CrlServer {
    server: HttpServer,
}

impl CrlServer {
    /// Starts a server on 127.0.0.1 on a free port; every path answers 404
    /// until [`CrlServer::set`].
    ///
    /// # Panics
    /// If no port can be bound.
    pub fn start() -> CrlServer {
        Self::start_on(0, false).expect("start the CRL server on 127.0.0.1")
    }

    /// Starts a server on `port` (with `SO_REUSEPORT` when `reuse_port`).
    pub(crate) fn start_on(port: u16, reuse_port: bool) -> std::io::Result<CrlServer> {
        let server = HttpServer::start_with_listener(move || bind(port, reuse_port))?;
        server.set_close_connections(true);
        Ok(CrlServer { server })
    }

    /// Serves `pki`'s fresh root CRL at `/root.crl` and its intermediate CRL
    /// at `/int.crl` (the paths the PKI's CDPs name).
    pub fn serve_pki(&self, pki: &TestPki) {
        self.set("/root.crl", pki.root_crl_der());
        self.set("/int.crl", pki.intermediate_crl_der());
    }

    /// Serves `bytes` on `path` from now on.
    pub fn set(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.set_response(path, CrlResponse::Bytes(bytes.into()));
    }

    /// Answers `status` on `path` from now on.
    pub fn set_status(&self, path: &str, status: u16) {
        self.set_response(path, CrlResponse::Status(status));
    }

    /// Sets what `path` answers.
    pub fn set_response(&self, path: &str, response: CrlResponse) {
        self.server.set(path, response.route());
    }

    /// Forgets `path`: it answers 404.
    pub fn remove(&self, path: &str) {
        self.server.remove(path);
    }

    /// How many requests for `path` (query ignored) arrived so far.
    pub fn requests(&self, path: &str) -> usize {
        self.server.requests_for(path).len()
    }

    /// How many requests arrived so far, all paths together.
    pub fn total_requests(&self) -> usize {
        self.server.requests().len()
    }

    /// Resets every request count to zero.
    pub fn reset_counts(&self) {
        self.server.clear_requests();
    }

    /// The bound address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `http://127.0.0.1:PORT/path`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}

/// Listens on 127.0.0.1:`port` (0: any free port), with `SO_REUSEPORT` when
/// `reuse_port` (the shared fixed-port server of [`TestPki::shared`]).
fn bind(port: u16, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}
