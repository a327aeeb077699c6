//! Backend test suites written once (STYLE.md item 13) and run by every TLS
//! backend's `tests/`, like [`conformance`](crate::conformance).
//!
//! Each case is a `pub async fn` that panics on the first failed assertion;
//! a backend's test file runs them all for its backend type through
//! [`isolation_tests!`](crate::isolation_tests), [`crl_tests!`](crate::crl_tests),
//! [`chain_tests!`](crate::chain_tests),
//! [`system_roots_tests!`](crate::system_roots_tests),
//! [`builder_tests!`](crate::builder_tests),
//! [`request_body_tests!`](crate::request_body_tests),
//! [`client_cert_tests!`](crate::client_cert_tests),
//! [`pin_tests!`](crate::pin_tests),
//! [`diagnose_tests!`](crate::diagnose_tests),
//! [`proxy_tests!`](crate::proxy_tests),
//! [`credential_tests!`](crate::credential_tests) and
//! [`http2_tests!`](crate::http2_tests) (one test per case),
//! or one by one with a transport or handshake from
//! [`backend`](crate::backend). A factory must trust the given
//! [`TestPki`](crate::pki::TestPki)'s root only (no system roots).

pub mod bodies;
pub mod builder;
pub mod chains;
pub mod client_certs;
pub mod credentials;
pub mod crl;
pub mod diagnose;
pub mod hostnames;
pub mod http2;
pub mod isolation;
mod macros;
pub mod pins;
pub mod proxies;
pub mod system_roots;

use bits_core::{ConnectionPolicy, Request, SecurityFlags, Transport};

use crate::tls::TlsServer;

/// GETs `/file` from `server` under `flags` and reads the whole body:
/// the status, or the HRESULT of the failure.
pub async fn get_status<T: Transport + ?Sized>(t: &T, server: &TlsServer, flags: u32) -> Result<u16, u32> {
    let req = Request::get(
        server.url("/file"),
        ConnectionPolicy::new(SecurityFlags::new(flags).unwrap()),
    );
    match t.send(req).await {
        Ok(mut response) => {
            while response
                .body
                .next_chunk()
                .await
                .map_err(|e| e.hresult().0)?
                .is_some()
            {}
            Ok(response.status)
        }
        Err(e) => Err(e.hresult().0),
    }
}
