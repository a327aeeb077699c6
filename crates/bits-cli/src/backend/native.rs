//! The native-tls backend (`--features native`).

use std::sync::Arc;

use bits_core::{BitsError, SharedTransport};
pub use bits_transport_native::check_policy;
use bits_transport_native::NativeTransport;

/// A native-tls transport over the system roots (`SSL_CERT_FILE` /
/// `SSL_CERT_DIR` replace them).
pub fn transport() -> Result<SharedTransport, BitsError> {
    let t = NativeTransport::builder().build()?;
    Ok(Arc::new(t))
}
