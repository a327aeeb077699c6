//! The handshake: one native-tls connector per honoured certificate-flag
//! value, errors classified.

use std::fmt;

use bits_core::{BitsError, SecurityFlags};
use bits_http::{BoxFuture, TlsConnect};
use tokio::net::TcpStream;

use crate::classify::classify;
use crate::policy::check_flags;

/// [`TlsConnect`] on native-tls: the platform's TLS stack (OpenSSL on
/// Linux, SChannel on Windows, Security.framework on macOS).
///
/// It holds one connector per honoured value, each with its own TLS
/// context, so nothing (session cache included) is shared between
/// policies:
/// - `0x00`: full verification;
/// - `0x02`: `danger_accept_invalid_hostnames(true)`, which skips the
///   host-name check and nothing else.
///
/// Any other certificate value is refused with `E_NOTIMPL` before a byte
/// is sent (the transport's `check_flags` refuses it earlier still).
#[derive(Clone)]
pub struct NativeConnector {
    strict: tokio_native_tls::TlsConnector,
    ignore_cn: tokio_native_tls::TlsConnector,
}

impl fmt::Debug for NativeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeConnector").finish_non_exhaustive()
    }
}

/// Roots and trust settings shared by both connectors.
#[derive(Clone, Default)]
pub(crate) struct TrustConfig {
    pub(crate) roots: Vec<native_tls::Certificate>,
    pub(crate) system_roots: bool,
}

impl NativeConnector {
    pub(crate) fn new(trust: &TrustConfig) -> Result<Self, BitsError> {
        Ok(NativeConnector {
            strict: make(trust, false)?,
            ignore_cn: make(trust, true)?,
        })
    }

    fn for_flags(&self, flags: SecurityFlags) -> Result<&tokio_native_tls::TlsConnector, BitsError> {
        check_flags(flags)?;
        match flags.cert_bits() {
            0x00 => Ok(&self.strict),
            0x02 => Ok(&self.ignore_cn),
            // check_flags allows exactly SUPPORTED_CERT_FLAGS.
            other => Err(BitsError::Internal {
                what: format!("native connector has no policy for 0x{other:04X}"),
            }),
        }
    }
}

fn make(trust: &TrustConfig, ignore_cn: bool) -> Result<tokio_native_tls::TlsConnector, BitsError> {
    let mut b = native_tls::TlsConnector::builder();
    b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    b.disable_built_in_roots(!trust.system_roots);
    for root in &trust.roots {
        b.add_root_certificate(root.clone());
    }
    // The only relaxation native-tls offers that is exactly one BITS flag.
    // danger_accept_invalid_certs is never used: it turns off every check
    // (tls-mapping.md pitfall 1).
    b.danger_accept_invalid_hostnames(ignore_cn);
    let connector = b.build().map_err(|e| BitsError::Internal {
        what: format!("cannot create a native-tls connector: {e}"),
    })?;
    Ok(connector.into())
}

impl TlsConnect for NativeConnector {
    type Stream = tokio_native_tls::TlsStream<TcpStream>;

    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        flags: SecurityFlags,
    ) -> BoxFuture<'static, Result<Self::Stream, BitsError>> {
        let connector = self.for_flags(flags).cloned();
        let host = host.to_owned();
        Box::pin(async move {
            let connector = connector?;
            connector.connect(&host, tcp).await.map_err(|e| classify(&e))
        })
    }
}
