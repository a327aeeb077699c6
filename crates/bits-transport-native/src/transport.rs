//! `NativeTransport` and its builder.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bits_core::{BitsError, ConnectionPolicy, Request, Response, Transport};
use bits_http::{HttpOptions, HttpTransport};

use crate::connector::{NativeConnector, TrustConfig};
use crate::policy::check_policy;

/// The backend's name, as [`Transport::name`] returns it.
pub const NAME: &str = "native";

/// A [`Transport`] whose TLS is native-tls: exact for certificate flags
/// `0x00` and `0x02`, `E_NOTIMPL` for every other value (see the crate's
/// `# Security` section).
///
/// Build it with [`NativeTransport::builder`]. Cloning is cheap and shares
/// the connection pools.
#[derive(Clone)]
pub struct NativeTransport {
    http: HttpTransport<NativeConnector>,
}

impl fmt::Debug for NativeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeTransport")
            .field("http", &self.http)
            .finish()
    }
}

impl NativeTransport {
    /// A builder: system roots, no extra roots, default HTTP options.
    pub fn builder() -> NativeTransportBuilder {
        NativeTransportBuilder::default()
    }

    /// A transport that trusts the system's roots, with default options.
    pub fn new() -> Result<Self, BitsError> {
        Self::builder().build()
    }

    /// The shared HTTP plumbing underneath (for diagnostics such as
    /// [`HttpTransport::connections_made`]).
    pub fn http(&self) -> &HttpTransport<NativeConnector> {
        &self.http
    }
}

#[async_trait]
impl Transport for NativeTransport {
    fn name(&self) -> &str {
        NAME
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        check_policy(policy)
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        // HttpTransport calls check_policy (ours) before touching the network.
        Transport::send(&self.http, request).await
    }
}

/// Builds a [`NativeTransport`].
///
/// ```no_run
/// # fn main() -> Result<(), bits_core::BitsError> {
/// let pem = std::fs::read("root.pem").expect("read root");
/// let transport = bits_transport_native::NativeTransport::builder()
///     .add_root_pem(&pem)?
///     .system_roots(false)
///     .build()?;
/// # let _ = transport; Ok(()) }
/// ```
#[derive(Clone)]
pub struct NativeTransportBuilder {
    trust: TrustConfig,
    options: HttpOptions,
}

impl Default for NativeTransportBuilder {
    fn default() -> Self {
        NativeTransportBuilder {
            trust: TrustConfig {
                roots: Vec::new(),
                system_roots: true,
            },
            options: HttpOptions::default(),
        }
    }
}

impl fmt::Debug for NativeTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeTransportBuilder")
            .field("extra_roots", &self.trust.roots.len())
            .field("system_roots", &self.trust.system_roots)
            .field("options", &self.options)
            .finish()
    }
}

impl NativeTransportBuilder {
    /// Trusts every certificate in `pem` (one or more `BEGIN CERTIFICATE`
    /// blocks) as a root. `E_INVALIDARG` when it holds none or one does not
    /// parse.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, BitsError> {
        let certs = native_tls::Certificate::stack_from_pem(pem).map_err(|e| BitsError::InvalidArg {
            what: format!("root certificate PEM does not parse: {e}"),
        })?;
        if certs.is_empty() {
            return Err(BitsError::InvalidArg {
                what: "root certificate PEM holds no certificate".into(),
            });
        }
        self.trust.roots.extend(certs);
        Ok(self)
    }

    /// Trusts the DER certificate `der` as a root. `E_INVALIDARG` when it
    /// does not parse.
    pub fn add_root_der(mut self, der: &[u8]) -> Result<Self, BitsError> {
        let cert = native_tls::Certificate::from_der(der).map_err(|e| BitsError::InvalidArg {
            what: format!("root certificate DER does not parse: {e}"),
        })?;
        self.trust.roots.push(cert);
        Ok(self)
    }

    /// Whether the platform's roots are trusted too (default `true`).
    /// `false` maps to native-tls's `disable_built_in_roots`.
    ///
    /// On Linux (and other OpenSSL platforms), when `SSL_CERT_FILE` or
    /// `SSL_CERT_DIR` is set, the certificates they name *replace* the
    /// system store, as OpenSSL defines (native-tls alone would add the
    /// system directories to them). Roots added with
    /// [`NativeTransportBuilder::add_root_pem`] are trusted either way.
    pub fn system_roots(mut self, yes: bool) -> Self {
        self.trust.system_roots = yes;
        self
    }

    /// Accepted for symmetry with the openssl backend and ignored: this
    /// backend refuses `BG_SSL_ENABLE_CRL_CHECK`, so it never reads a CRL.
    pub fn crl_cache_dir(self, _dir: impl Into<PathBuf>) -> Self {
        self
    }

    /// Timeouts and pooling of the HTTP layer.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.options = options;
        self
    }

    /// Creates the transport (and its TLS contexts).
    pub fn build(self) -> Result<NativeTransport, BitsError> {
        let trust = self.trust.resolve(|name| std::env::var_os(name));
        let connector = NativeConnector::new(&trust)?;
        Ok(NativeTransport {
            http: HttpTransport::new(NAME, connector, check_policy, self.options),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn transport_is_send_sync_and_named() {
        assert_send_sync::<NativeTransport>();
        let t: Box<dyn Transport> = Box::new(NativeTransport::builder().system_roots(false).build().unwrap());
        assert_eq!(t.name(), "native");
        assert_eq!(
            bits_core::transport::supported_cert_flags(|p| t.check_policy(p)),
            vec![0x00, 0x02]
        );
        assert!(format!("{t:?}").contains("NativeTransport"));
    }

    #[test]
    fn bad_roots_are_invalid_arguments() {
        let e = NativeTransport::builder().add_root_pem(b"not pem").unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
        let e = NativeTransport::builder()
            .add_root_der(b"\x30\x03junk")
            .unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
    }

    #[test]
    fn crl_cache_dir_is_accepted_and_ignored() {
        let t = NativeTransport::builder()
            .crl_cache_dir("/nonexistent")
            .system_roots(false)
            .build()
            .unwrap();
        let crl = ConnectionPolicy::new(bits_core::SecurityFlags::new(0x01).unwrap());
        assert!(t.check_policy(&crl).is_err());
    }
}
