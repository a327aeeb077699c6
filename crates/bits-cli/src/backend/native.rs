//! The native-tls backend (`--features native`).

use std::sync::Arc;

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, SharedTransport};
use bits_http::TlsBackend;
pub use bits_transport_native::check_policy;
use bits_transport_native::{Native, NativeTransport};

/// A native-tls transport over the system roots (`SSL_CERT_FILE` /
/// `SSL_CERT_DIR` replace them).
pub fn transport() -> Result<SharedTransport, BitsError> {
    let t = NativeTransport::builder().build()?;
    Ok(Arc::new(t))
}

/// Reads and checks a client certificate as this backend will offer it
/// (its [`TlsBackend::load_client_certificate`]).
pub fn load_client_certificate(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
    <Native as TlsBackend>::load_client_certificate(file)
}
