//! [`RustlsTransport`] and its builder.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bits_core::{BitsError, ConnectionPolicy, Request, Response, Transport};
use bits_http::builder::{pem_roots, BuilderOptions};
use bits_http::{HttpOptions, HttpTransport};
use rustls::pki_types::{CertificateDer, TrustAnchor};

use crate::connector::RustlsConnector;
use crate::crl::CrlCache;

/// The backend's name, as [`Transport::name`] reports it.
const NAME: &str = "rustls";

/// A [`Transport`] doing TLS with rustls (ring provider) and verifying with
/// rustls-webpki under the security flags: every value is accepted; each
/// flag relaxes exactly its own check, or the transfer fails where that
/// cannot be decided (see the crate documentation).
///
/// Build it with [`RustlsTransport::builder`]. Cloning is cheap and shares
/// the connection pools and the CRL cache.
#[derive(Clone, Debug)]
pub struct RustlsTransport {
    http: HttpTransport<RustlsConnector>,
}

impl RustlsTransport {
    /// A builder with the defaults: system roots, the default CRL cache
    /// directory, default [`HttpOptions`].
    pub fn builder() -> RustlsTransportBuilder {
        RustlsTransportBuilder::default()
    }

    /// The HTTP plumbing underneath (connection counters, pools).
    pub fn http(&self) -> &HttpTransport<RustlsConnector> {
        &self.http
    }
}

#[async_trait]
impl Transport for RustlsTransport {
    fn name(&self) -> &str {
        NAME
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        check_policy(policy)
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        self.http.send(request).await
    }
}

/// The backend's [`Transport::check_policy`], decided from the policy
/// alone (no transport needs building): every policy is accepted; each
/// certificate flag is honoured exactly or, in the cases the crate
/// documentation lists, more narrowly (the transfer fails with the fault's
/// error); never more broadly.
pub fn check_policy(_policy: &ConnectionPolicy) -> Result<(), BitsError> {
    Ok(())
}

/// Builds a [`RustlsTransport`].
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
#[derive(Default)]
pub struct RustlsTransportBuilder {
    options: BuilderOptions<TrustAnchor<'static>>,
}

impl fmt::Debug for RustlsTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.options.fmt_as("RustlsTransportBuilder", f)
    }
}

fn anchor(der: &[u8]) -> Result<TrustAnchor<'static>, BitsError> {
    let cert = CertificateDer::from(der);
    webpki::anchor_from_trusted_cert(&cert)
        .map(|a| a.to_owned())
        .map_err(|e| BitsError::InvalidArg {
            what: format!("root certificate cannot be used as a trust anchor: {e:?}"),
        })
}

impl RustlsTransportBuilder {
    /// Trusts the certificates of a PEM bundle (one or more `CERTIFICATE`
    /// blocks). `E_INVALIDARG` when it holds none or one cannot be parsed.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, BitsError> {
        let mut reader = pem;
        let certs: Vec<CertificateDer<'static>> =
            pem_roots(rustls_pemfile::certs(&mut reader).collect::<Result<_, _>>())?;
        for cert in &certs {
            self.options.roots.push(anchor(cert)?);
        }
        Ok(self)
    }

    /// Trusts one DER certificate. `E_INVALIDARG` when it cannot be parsed.
    pub fn add_root_der(mut self, der: &[u8]) -> Result<Self, BitsError> {
        self.options.roots.push(anchor(der)?);
        Ok(self)
    }

    /// Whether the system's roots are trusted too (default `true`), as
    /// `rustls-native-certs` finds them: `SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// replace the platform's locations, as OpenSSL defines them.
    pub fn system_roots(mut self, yes: bool) -> Self {
        self.options.system_roots = yes;
        self
    }

    /// Where downloaded CRLs are kept (default: `bits-crl` under
    /// `$XDG_CACHE_HOME`, else `~/.cache`; the same files the OpenSSL
    /// backend writes). Created on first use.
    pub fn crl_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.crl_cache_dir = Some(dir.into());
        self
    }

    /// Timeouts and pooling (default [`HttpOptions::default`]). CRL
    /// downloads get half the handshake timeout.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.options.http_options = options;
        self
    }

    /// The transport. Unreadable or unusable system certificates are
    /// skipped (logged), as OpenSSL skips them; this never fails today but
    /// returns `Result` like the other backends' builders.
    pub fn build(self) -> Result<RustlsTransport, BitsError> {
        let o = self.options;
        let crls = CrlCache::new(o.crl_dir(), o.crl_fetch_timeout());
        let mut roots = o.roots;
        if o.system_roots {
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
        let connector = RustlsConnector::new(roots, crls, o.http_options.connect_timeout);
        let http = HttpTransport::new(NAME, connector, check_policy, o.http_options);
        Ok(RustlsTransport { http })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_roots_are_invalid_arguments() {
        let e = RustlsTransport::builder().add_root_pem(b"not pem").unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
        let e = RustlsTransport::builder().add_root_der(b"\x30\x00").unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
    }

    #[test]
    fn every_valid_flag_value_is_accepted() {
        let t = RustlsTransport::builder().system_roots(false).build().unwrap();
        assert_eq!(t.name(), "rustls");
        for bits in 0..0x2000 {
            if let Ok(flags) = bits_core::SecurityFlags::new(bits) {
                assert!(t.check_policy(&ConnectionPolicy::new(flags)).is_ok(), "{flags}");
            }
        }
        assert_eq!(bits_core::transport::supported_cert_flags(check_policy).len(), 32);
    }
}
