//! `bits diagnose` per backend: each backend's own handshake
//! (`bits_http::diagnose`), with the roots a transfer would trust.

use std::path::Path;

use bits_core::BitsError;
use bits_http::diagnose::{self, DiagnoseOptions, Diagnosis, Target};
use bits_http::{TlsBackend, TlsTransport};

use super::Backend;

/// Runs the diagnosis of `target` on backend `B`: its transport as
/// `Backend::transport` builds it (system roots, which `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` replace; CRLs cached in `<store>/crl`).
async fn run<B: TlsBackend>(
    store_dir: &Path,
    target: &Target,
    options: &DiagnoseOptions,
) -> Result<Diagnosis, BitsError> {
    let transport = TlsTransport::<B>::builder()
        .crl_cache_dir(store_dir.join("crl"))
        .build()?;
    diagnose::diagnose::<B>(transport.http().tls(), target, options).await
}

impl Backend {
    /// The backend's diagnosis of `target` (TLS handshakes only).
    ///
    /// # Errors
    /// The server cannot be reached, or the backend cannot be set up.
    pub async fn diagnose(
        self,
        store_dir: &Path,
        target: &Target,
        options: &DiagnoseOptions,
    ) -> Result<Diagnosis, BitsError> {
        let _ = (store_dir, target, options);
        match self {
            #[cfg(feature = "openssl")]
            Backend::Openssl => run::<bits_transport_openssl::Openssl>(store_dir, target, options).await,
            #[cfg(feature = "rustls")]
            Backend::Rustls => run::<bits_transport_rustls::Rustls>(store_dir, target, options).await,
            #[cfg(feature = "native")]
            Backend::Native => run::<bits_transport_native::Native>(store_dir, target, options).await,
        }
    }
}
