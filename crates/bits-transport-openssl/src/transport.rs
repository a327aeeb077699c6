//! [`OpensslTransport`] and its builder.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bits_core::{BitsError, ConnectionPolicy, Request, Response, Transport};
use bits_http::builder::{pem_roots, BuilderOptions};
use bits_http::{HttpOptions, HttpTransport};
use openssl::x509::X509;

use crate::connector::OpensslConnector;
use crate::crl::CrlCache;

/// The backend's name, as [`Transport::name`] reports it.
const NAME: &str = "openssl";

/// A [`Transport`] doing TLS with OpenSSL, honouring every value of the
/// security flags exactly (all 32 certificate combinations, CRL checking
/// included).
///
/// Build it with [`OpensslTransport::builder`]. Cloning is cheap and shares
/// the connection pools and the CRL cache.
///
/// # Security
/// Each `IGNORE_*` flag relaxes exactly its own check; every other check
/// still applies. Connections are pooled per certificate-flag value and TLS
/// sessions are never resumed, so a connection verified under a relaxed
/// policy never serves a stricter one.
#[derive(Clone, Debug)]
pub struct OpensslTransport {
    http: HttpTransport<OpensslConnector>,
}

impl OpensslTransport {
    /// A builder with the defaults: system roots, the default CRL cache
    /// directory, default [`HttpOptions`].
    pub fn builder() -> OpensslTransportBuilder {
        OpensslTransportBuilder::default()
    }

    /// The HTTP plumbing underneath (connection counters, pools).
    pub fn http(&self) -> &HttpTransport<OpensslConnector> {
        &self.http
    }
}

#[async_trait]
impl Transport for OpensslTransport {
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
/// alone (no transport needs building): every policy is honoured, since
/// OpenSSL's verify callback sees each error one at a time and each flag
/// relaxes exactly its own category (`docs/spec/tls.md`).
pub fn check_policy(_policy: &ConnectionPolicy) -> Result<(), BitsError> {
    Ok(())
}

/// Builds an [`OpensslTransport`].
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
#[derive(Default)]
pub struct OpensslTransportBuilder {
    options: BuilderOptions<X509>,
}

impl fmt::Debug for OpensslTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.options.fmt_as("OpensslTransportBuilder", f)
    }
}

impl OpensslTransportBuilder {
    /// Trusts the certificates of a PEM bundle (one or more `CERTIFICATE`
    /// blocks). `E_INVALIDARG` when it holds none or cannot be parsed.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, BitsError> {
        self.options.roots.extend(pem_roots(X509::stack_from_pem(pem))?);
        Ok(self)
    }

    /// Trusts one DER certificate. `E_INVALIDARG` when it cannot be parsed.
    pub fn add_root_der(mut self, der: &[u8]) -> Result<Self, BitsError> {
        let cert = X509::from_der(der).map_err(|e| BitsError::InvalidArg {
            what: format!("root certificate is not valid DER: {e}"),
        })?;
        self.options.roots.push(cert);
        Ok(self)
    }

    /// Whether OpenSSL's default roots are trusted too (default `true`).
    /// They are found as OpenSSL's `X509_STORE_set_default_paths` says:
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` replace the built-in locations.
    pub fn system_roots(mut self, yes: bool) -> Self {
        self.options.system_roots = yes;
        self
    }

    /// Where downloaded CRLs are kept (default: `bits-crl` under
    /// `$XDG_CACHE_HOME`, else `~/.cache`). Created on first use.
    pub fn crl_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.crl_cache_dir = Some(dir.into());
        self
    }

    /// Timeouts and pooling (default [`HttpOptions::default`]). CRL
    /// downloads get half the handshake timeout, so that an unreachable
    /// CRL is reported as such rather than as a handshake timeout.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.options.http_options = options;
        self
    }

    /// The transport. Fails (`SecureFailure`) only when OpenSSL cannot set
    /// up a TLS context or load the default roots.
    pub fn build(self) -> Result<OpensslTransport, BitsError> {
        let o = self.options;
        let crls = CrlCache::new(o.crl_dir(), o.crl_fetch_timeout());
        let connector = OpensslConnector::new(o.roots, o.system_roots, crls, o.http_options.connect_timeout)?;
        let http = HttpTransport::new(NAME, connector, check_policy, o.http_options);
        Ok(OpensslTransport { http })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_roots_are_invalid_arguments() {
        let e = OpensslTransport::builder().add_root_pem(b"not pem").unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
        let e = OpensslTransport::builder().add_root_der(b"\x30\x00").unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
    }

    #[test]
    fn every_valid_flag_value_is_accepted() {
        let t = OpensslTransport::builder().system_roots(false).build().unwrap();
        assert_eq!(t.name(), "openssl");
        for bits in 0..0x2000 {
            if let Ok(flags) = bits_core::SecurityFlags::new(bits) {
                assert!(t.check_policy(&ConnectionPolicy::new(flags)).is_ok(), "{flags}");
            }
        }
        assert_eq!(bits_core::transport::supported_cert_flags(check_policy).len(), 32);
    }
}
