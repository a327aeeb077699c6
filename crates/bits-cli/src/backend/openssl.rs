//! The OpenSSL backend (`--features openssl`).

use std::path::Path;
use std::sync::Arc;

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, SharedTransport};
use bits_http::TlsBackend;
pub use bits_transport_openssl::check_policy;
use bits_transport_openssl::{Openssl, OpensslTransport};

/// An OpenSSL transport over the system roots (`SSL_CERT_FILE` /
/// `SSL_CERT_DIR` replace them), caching CRLs in `<store>/crl`.
pub fn transport(store_dir: &Path) -> Result<SharedTransport, BitsError> {
    let t = OpensslTransport::builder()
        .crl_cache_dir(store_dir.join("crl"))
        .build()?;
    Ok(Arc::new(t))
}

/// Reads and checks a client certificate as this backend will offer it
/// (its [`TlsBackend::load_client_certificate`]).
pub fn load_client_certificate(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
    <Openssl as TlsBackend>::load_client_certificate(file)
}
