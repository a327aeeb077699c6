//! The OpenSSL backend as bits-http's [`TlsBackend`]: [`OpensslTransport`],
//! its builder and its policy check.

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, ConnectionPolicy};
use bits_http::builder::{der_root, pem_roots, BuilderOptions};
use bits_http::crl_cache::CrlConnector;
use bits_http::{TlsBackend, TlsTransport, TlsTransportBuilder};
use openssl::x509::X509;

use crate::connector::{OpensslConnector, OpensslHandshake};

/// The OpenSSL backend: roots as OpenSSL `X509`s, its connector, its policy
/// check. Named in [`OpensslTransport`] and [`OpensslTransportBuilder`].
#[derive(Debug)]
pub enum Openssl {}

impl TlsBackend for Openssl {
    const NAME: &'static str = "openssl";
    type Root = X509;
    type Connector = OpensslConnector;
    const CLIENT_CERT_FORMATS: bits_http::client_cert::Formats = bits_http::client_cert::Formats {
        pem: true,
        non_pkcs8_keys: true,
        encrypted_keys: true,
        pkcs12: true,
    };

    fn roots_from_pem(pem: &[u8]) -> Result<Vec<X509>, BitsError> {
        pem_roots(X509::stack_from_pem(pem))
    }

    fn root_from_der(der: &[u8]) -> Result<X509, BitsError> {
        der_root(X509::from_der(der))
    }

    /// Fails (`SecureFailure`) only when OpenSSL cannot set up a TLS context
    /// or load the default roots.
    fn connector(mut options: BuilderOptions<X509>) -> Result<OpensslConnector, BitsError> {
        let handshake = OpensslHandshake::new(std::mem::take(&mut options.roots), options.system_roots)?;
        Ok(CrlConnector::new(handshake, &options))
    }

    fn check_policy(policy: &ConnectionPolicy) -> Result<(), BitsError> {
        check_policy(policy)
    }

    /// PEM (leaf, chain, key in the same file or its own; PKCS#8, PKCS#1,
    /// SEC1 or encrypted keys) or PKCS#12 with the password: see the crate
    /// documentation, "Client certificates".
    fn load_client_certificate(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
        let files = bits_http::client_cert::read(file)?;
        let identity = crate::client_cert::parse(file, &files)?;
        let der = identity
            .leaf
            .to_der()
            .map_err(|e| BitsError::ClientCertNotFound {
                what: format!("{}: cannot encode the leaf ({e})", file.path.display()),
            })?;
        Ok(bits_http::client_cert::chosen(file, &der))
    }
}

/// A [`bits_core::Transport`] doing TLS with OpenSSL, honouring every value
/// of the security flags exactly (all 32 certificate combinations, CRL
/// checking included).
///
/// Build it with [`OpensslTransport::builder`]. Cloning is cheap and shares
/// the connection pools and the CRL cache.
///
/// # Security
/// Each `IGNORE_*` flag relaxes exactly its own check; every other check
/// still applies. Connections are pooled per certificate-flag value and TLS
/// sessions are never resumed, so a connection verified under a relaxed
/// policy never serves a stricter one.
pub type OpensslTransport = TlsTransport<Openssl>;

/// Builds an [`OpensslTransport`]. The system roots are OpenSSL's default
/// verify paths (`X509_STORE_set_default_paths`): `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` replace the built-in locations.
///
/// ```no_run
/// # fn main() -> Result<(), bits_core::BitsError> {
/// # let pem: &[u8] = b"";
/// let transport = bits_transport_openssl::OpensslTransport::builder()
///     .add_root_pem(pem)?
///     .system_roots(false)
///     .crl_cache_dir("/var/cache/bits-crl")
///     .build()?;
/// # Ok(()) }
/// ```
pub type OpensslTransportBuilder = TlsTransportBuilder<Openssl>;

/// The backend's [`bits_core::Transport::check_policy`], decided from the
/// policy alone (no transport needs building): every policy is honoured,
/// since OpenSSL's verify callback sees each error one at a time and each
/// flag relaxes exactly its own category (`docs/spec/tls.md`), the whole
/// chain is there for pins and validators, and a client certificate is
/// offered as it was loaded (`docs/spec/http-options.md`).
/// Yielding ([`ConnectionPolicy::yielding`]) is accepted: it is no TLS
/// property; bits-http's connector clamps the socket's window the same for
/// every backend.
pub fn check_policy(policy: &ConnectionPolicy) -> Result<(), BitsError> {
    let _ = policy;
    Ok(())
}
