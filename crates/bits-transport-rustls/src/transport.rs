//! The rustls backend as bits-http's [`TlsBackend`]: [`RustlsTransport`],
//! its builder and its policy check.

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, ConnectionPolicy};
use bits_http::builder::{pem_roots, BuilderOptions};
use bits_http::crl_cache::CrlConnector;
use bits_http::{TlsBackend, TlsTransport, TlsTransportBuilder};
use rustls::pki_types::{CertificateDer, TrustAnchor};

use crate::connector::{RustlsConnector, RustlsHandshake};

/// The rustls backend: roots as webpki trust anchors, its connector, its
/// policy check. Named in [`RustlsTransport`] and [`RustlsTransportBuilder`].
#[derive(Debug)]
pub enum Rustls {}

impl TlsBackend for Rustls {
    const NAME: &'static str = "rustls";
    type Root = TrustAnchor<'static>;
    type Connector = RustlsConnector;
    const CLIENT_CERT_FORMATS: bits_http::client_cert::Formats = bits_http::client_cert::Formats {
        pem: true,
        non_pkcs8_keys: true,
        encrypted_keys: false,
        pkcs12: false,
    };

    /// Each certificate must also be usable as a trust anchor.
    fn roots_from_pem(pem: &[u8]) -> Result<Vec<TrustAnchor<'static>>, BitsError> {
        let mut reader = pem;
        let certs: Vec<CertificateDer<'static>> =
            pem_roots(rustls_pemfile::certs(&mut reader).collect::<Result<_, _>>())?;
        certs.iter().map(|cert| anchor(cert)).collect()
    }

    fn root_from_der(der: &[u8]) -> Result<TrustAnchor<'static>, BitsError> {
        anchor(der)
    }

    /// The system's roots are what `rustls-native-certs` finds; unreadable
    /// or unusable ones are skipped (logged), as OpenSSL skips them. This
    /// never fails today.
    fn connector(options: BuilderOptions<TrustAnchor<'static>>) -> Result<RustlsConnector, BitsError> {
        let mut roots = options.roots.clone();
        if options.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "system root store");
            }
            for cert in &found.certs {
                match anchor(cert) {
                    Ok(a) => roots.push(a),
                    Err(e) => tracing::debug!(error = %e, "system root skipped"),
                }
            }
        }
        Ok(CrlConnector::new(RustlsHandshake::new(roots), &options))
    }

    fn check_policy(policy: &ConnectionPolicy) -> Result<(), BitsError> {
        check_policy(policy)
    }

    /// PEM only: the certificate (and its chain), the key in PKCS#8,
    /// PKCS#1 (RSA) or SEC1 (EC) form, in the same file or its own; the key
    /// must be the leaf's. PKCS#12 and encrypted keys are `E_NOTIMPL` (see
    /// the crate documentation).
    fn load_client_certificate(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
        crate::client_cert::load_for_job(file, &provider())
    }
}

/// The crypto provider of every handshake and key: ring.
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn anchor(der: &[u8]) -> Result<TrustAnchor<'static>, BitsError> {
    let cert = CertificateDer::from(der);
    webpki::anchor_from_trusted_cert(&cert)
        .map(|a| a.to_owned())
        .map_err(|e| BitsError::InvalidArg {
            what: format!("root certificate cannot be used as a trust anchor: {e:?}"),
        })
}

/// A [`bits_core::Transport`] doing TLS with rustls (ring provider) and
/// verifying with rustls-webpki under the security flags: every value is
/// accepted; each flag relaxes exactly its own check, or the transfer fails
/// where that cannot be decided (see the crate documentation).
///
/// Build it with [`RustlsTransport::builder`]. Cloning is cheap and shares
/// the connection pools and the CRL cache.
///
/// # Security
/// Never broader than the flags: where a relaxation cannot be decided
/// exactly, the transfer fails with the fault's error. Connections are
/// pooled per certificate-flag value and TLS sessions are never resumed.
pub type RustlsTransport = TlsTransport<Rustls>;

/// Builds a [`RustlsTransport`]. The system roots are what
/// `rustls-native-certs` finds: `SSL_CERT_FILE` and `SSL_CERT_DIR` replace
/// the platform's locations, as OpenSSL defines them. Its CRL cache holds
/// the same files the OpenSSL backend writes.
///
/// ```no_run
/// # fn main() -> Result<(), bits_core::BitsError> {
/// # let pem: &[u8] = b"";
/// let transport = bits_transport_rustls::RustlsTransport::builder()
///     .add_root_pem(pem)?
///     .system_roots(false)
///     .crl_cache_dir("/var/cache/bits-crl")
///     .build()?;
/// # Ok(()) }
/// ```
pub type RustlsTransportBuilder = TlsTransportBuilder<Rustls>;

/// The backend's [`bits_core::Transport::check_policy`], decided from the
/// policy alone (no transport needs building): every policy is accepted;
/// each certificate flag is honoured exactly or, in the cases the crate
/// documentation lists, more narrowly (the transfer fails with the fault's
/// error); never more broadly. A client certificate is accepted: only one
/// `load_client_certificate` read (PEM) can have been set on a job, and it
/// is read and checked again at every connection.
/// Yielding ([`ConnectionPolicy::yielding`]) is accepted: it is no TLS
/// property; bits-http's connector clamps the socket's window the same for
/// every backend.
pub fn check_policy(_policy: &ConnectionPolicy) -> Result<(), BitsError> {
    Ok(())
}
