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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;

use crate::mini_http;
use crate::pki::TestPki;
use crate::server::ServerThread;

/// What the server answers on one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlResponse {
    /// `200` with these bytes (`Content-Type: application/pkix-crl`).
    Bytes(Vec<u8>),
    /// This status and an empty body.
    Status(u16),
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, CrlResponse>,
    counts: HashMap<String, usize>,
}

/// A CRL server on 127.0.0.1; stops on drop.
#[derive(Debug)]
pub struct CrlServer {
    state: Arc<Mutex<State>>,
    server: ServerThread,
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
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let server = ServerThread::spawn("crl", port, reuse_port, move |stream| handle(st.clone(), stream))?;
        Ok(CrlServer { state, server })
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

    /// Answers `status` (empty body) on `path` from now on.
    pub fn set_status(&self, path: &str, status: u16) {
        self.set_response(path, CrlResponse::Status(status));
    }

    /// Sets what `path` answers.
    pub fn set_response(&self, path: &str, response: CrlResponse) {
        self.lock().routes.insert(path.to_owned(), response);
    }

    /// Forgets `path`: it answers 404.
    pub fn remove(&self, path: &str) {
        self.lock().routes.remove(path);
    }

    /// How many requests for `path` (query ignored) arrived so far.
    pub fn requests(&self, path: &str) -> usize {
        self.lock().counts.get(path).copied().unwrap_or(0)
    }

    /// How many requests arrived so far, all paths together.
    pub fn total_requests(&self) -> usize {
        self.lock().counts.values().sum()
    }

    /// Resets every request count to zero.
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    /// The bound address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:PORT/path`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn handle(state: Arc<Mutex<State>>, mut stream: TcpStream) {
    let Ok(Some(head)) = mini_http::read_head(&mut stream).await else {
        return;
    };
    let response = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        *st.counts.entry(head.path().to_owned()).or_default() += 1;
        st.routes.get(head.path()).cloned()
    };
    let send_body = head.method != "HEAD";
    let _ = match response {
        Some(CrlResponse::Bytes(bytes)) => {
            let headers = [("Content-Type", "application/pkix-crl".to_owned())];
            mini_http::write_response(&mut stream, 200, &headers, &bytes, send_body).await
        }
        Some(CrlResponse::Status(status)) => {
            mini_http::write_response(&mut stream, status, &[], b"", send_body).await
        }
        None => mini_http::write_response(&mut stream, 404, &[], b"", send_body).await,
    };
}
