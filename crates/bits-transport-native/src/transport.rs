//! The native-tls backend as bits-http's [`TlsBackend`]:
//! [`NativeTransport`], its builder.

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, ConnectionPolicy};
use bits_http::builder::{der_root, pem_roots, BuilderOptions};
use bits_http::{TlsBackend, TlsTransport, TlsTransportBuilder};

use crate::connector::{NativeConnector, TrustConfig};
use crate::policy::check_policy;

/// The backend's name, as [`bits_core::Transport::name`] returns it.
pub const NAME: &str = "native";

/// The native-tls backend: roots as native-tls certificates, its
/// connector, its policy check. Named in [`NativeTransport`] and
/// [`NativeTransportBuilder`].
#[derive(Debug)]
pub enum Native {}

impl TlsBackend for Native {
    const NAME: &'static str = NAME;
    type Root = native_tls::Certificate;
    type Connector = NativeConnector;
    const CLIENT_CERT_FORMATS: bits_http::client_cert::Formats = bits_http::client_cert::Formats {
        pem: true,
        non_pkcs8_keys: false,
        encrypted_keys: false,
        pkcs12: false,
    };

    fn roots_from_pem(pem: &[u8]) -> Result<Vec<native_tls::Certificate>, BitsError> {
        pem_roots(native_tls::Certificate::stack_from_pem(pem))
    }

    fn root_from_der(der: &[u8]) -> Result<native_tls::Certificate, BitsError> {
        der_root(native_tls::Certificate::from_der(der))
    }

    /// Creates the TLS contexts. The CRL cache directory is ignored: this
    /// backend refuses `BG_SSL_ENABLE_CRL_CHECK`, so it never reads a CRL.
    fn connector(options: BuilderOptions<native_tls::Certificate>) -> Result<NativeConnector, BitsError> {
        let trust = TrustConfig {
            roots: options.roots,
            system_roots: options.system_roots,
        };
        NativeConnector::new(&trust.resolve(|name| std::env::var_os(name)))
    }

    fn check_policy(policy: &ConnectionPolicy) -> Result<(), BitsError> {
        check_policy(policy)
    }

    /// PEM with a PKCS#8 key only (native-tls's `Identity::from_pkcs8`);
    /// PKCS#12 and other key forms are `E_NOTIMPL` (see the crate
    /// documentation).
    fn load_client_certificate(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
        crate::client_cert::load_for_job(file)
    }
}

/// A [`bits_core::Transport`] whose TLS is native-tls: exact for
/// certificate flags `0x00` and `0x02`, `E_NOTIMPL` for every other value
/// (see the crate's `# Security` section).
///
/// Build it with [`NativeTransport::builder`], or take the defaults (the
/// system's roots) with [`NativeTransport::new`]. Cloning is cheap and
/// shares the connection pools.
pub type NativeTransport = TlsTransport<Native>;

/// Builds a [`NativeTransport`].
///
/// The system roots are native-tls's built-in ones (`false` maps to its
/// `disable_built_in_roots`). On Linux (and other OpenSSL platforms), when
/// `SSL_CERT_FILE` or `SSL_CERT_DIR` is set, the certificates they name
/// *replace* the system store, as OpenSSL defines (native-tls alone would
/// add the system directories to them). The CRL cache directory is
/// accepted for symmetry with the other backends and ignored.
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
pub type NativeTransportBuilder = TlsTransportBuilder<Native>;

#[cfg(test)]
mod tests {
    use bits_core::Transport;

    use super::*;

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
