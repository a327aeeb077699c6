//! The rustls backend (`--features rustls`).

use std::path::Path;
use std::sync::Arc;

use bits_core::{BitsError, SharedTransport};
pub use bits_transport_rustls::check_policy;
use bits_transport_rustls::RustlsTransport;

/// A rustls transport over the system roots (`SSL_CERT_FILE` /
/// `SSL_CERT_DIR` replace them), caching CRLs in `<store>/crl` (the same
/// files the OpenSSL backend keeps there).
pub fn transport(store_dir: &Path) -> Result<SharedTransport, BitsError> {
    let t = RustlsTransport::builder()
        .crl_cache_dir(store_dir.join("crl"))
        .build()?;
    Ok(Arc::new(t))
}
