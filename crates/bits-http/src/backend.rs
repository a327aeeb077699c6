//! What a TLS backend supplies ([`TlsBackend`]), and the transport and
//! builder every backend shares ([`TlsTransport`], [`TlsTransportBuilder`]).

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bits_core::{
    BitsError, ClientCertificate, ClientCertificateFile, ConnectionPolicy, Request, Response, Transport,
};

use crate::builder::BuilderOptions;
use crate::tls::TlsConnect;
use crate::transport::{HttpOptions, HttpTransport};

/// A TLS backend: the few things that are its own. [`TlsTransport`] and
/// [`TlsTransportBuilder`] do the rest, the same way for every backend.
///
/// A backend crate implements it on a type of its own (`Openssl`,
/// `Rustls`, `Native`) and names the results
/// (`pub type OpensslTransport = TlsTransport<Openssl>`).
///
/// # Security
/// [`TlsBackend::check_policy`] must refuse, with `E_NOTIMPL`, every
/// policy the connector cannot honour exactly: [`TlsTransport`] calls it
/// before any connection, and nothing else stands between a policy and
/// the connector.
pub trait TlsBackend: Sized + Send + Sync + 'static {
    /// The backend's name, as [`Transport::name`] reports it (`openssl`, …).
    const NAME: &'static str;

    /// A trusted root in the backend's form (a parsed certificate, a trust
    /// anchor, …).
    type Root: Clone + Send + Sync + 'static;

    /// The handshake the transport runs for every `https` connection.
    type Connector: TlsConnect;

    /// The client certificate files [`TlsBackend::load_client_certificate`]
    /// loads (none by default); it refuses every other form with
    /// `E_NOTIMPL`.
    const CLIENT_CERT_FORMATS: crate::client_cert::Formats = crate::client_cert::Formats::NONE;

    /// The certificates of a PEM bundle (one or more `CERTIFICATE` blocks).
    ///
    /// # Errors
    /// `InvalidArg` when the bundle cannot be parsed or holds no
    /// certificate ([`crate::builder::pem_roots`] says so for both).
    fn roots_from_pem(pem: &[u8]) -> Result<Vec<Self::Root>, BitsError>;

    /// One DER certificate.
    ///
    /// # Errors
    /// `InvalidArg` when it cannot be parsed or used as a root.
    fn root_from_der(der: &[u8]) -> Result<Self::Root, BitsError>;

    /// The connector for `options`: their roots, the system's roots too
    /// when [`BuilderOptions::system_roots`] (found the backend's way), and
    /// the CRL cache when the backend checks CRLs.
    ///
    /// # Errors
    /// Whatever the TLS library fails to set up with.
    fn connector(options: BuilderOptions<Self::Root>) -> Result<Self::Connector, BitsError>;

    /// The backend's [`Transport::check_policy`], decided from the policy
    /// alone: `Ok` for exactly the policies the connector honours.
    ///
    /// # Errors
    /// `NotImplemented` (`E_NOTIMPL`) for every other policy.
    fn check_policy(policy: &ConnectionPolicy) -> Result<(), BitsError>;

    /// Reads and checks a client certificate file as it is set on a job
    /// (`docs/spec/http-options.md`, "Client certificate"): it parses, the
    /// key matches the certificate, the password opens it, a key file is
    /// not readable by group or others. Returns what the job stores.
    ///
    /// # Errors
    /// `0x80070002` (no such file), `CRYPT_E_NOT_FOUND` (no certificate or
    /// key, or they differ), `ERROR_INVALID_PASSWORD`, `E_ACCESSDENIED` (a
    /// key others may read), `E_NOTIMPL` for a format the backend cannot
    /// load (the default: no client certificates at all).
    fn load_client_certificate(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
        Err(BitsError::NotImplemented {
            what: format!(
                "client certificate {}: the {} backend does not load client certificates",
                file.path.display(),
                Self::NAME
            ),
        })
    }
}

/// A [`Transport`] made of a backend's connector and [`HttpTransport`]:
/// named [`TlsBackend::NAME`], refusing what [`TlsBackend::check_policy`]
/// refuses before any connection.
///
/// Build it with [`TlsTransport::builder`]. Cloning is cheap and shares
/// the connection pools (and the backend's CRL cache).
///
/// # Security
/// Connections are pooled per [`ConnectionPolicy`], so a connection
/// verified under a relaxed policy never serves a stricter one; each
/// backend's crate documentation says how its handshake honours a policy.
pub struct TlsTransport<B: TlsBackend> {
    http: HttpTransport<B::Connector>,
}

impl<B: TlsBackend> Clone for TlsTransport<B> {
    fn clone(&self) -> Self {
        TlsTransport {
            http: self.http.clone(),
        }
    }
}

impl<B: TlsBackend> fmt::Debug for TlsTransport<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("backend", &B::NAME)
            .field("http", &self.http)
            .finish()
    }
}

impl<B: TlsBackend> TlsTransport<B> {
    /// A builder with the defaults: the system's roots, the default CRL
    /// cache directory, default [`HttpOptions`].
    pub fn builder() -> TlsTransportBuilder<B> {
        TlsTransportBuilder::default()
    }

    /// A transport with the builder's defaults.
    ///
    /// # Errors
    /// As [`TlsTransportBuilder::build`].
    pub fn new() -> Result<Self, BitsError> {
        Self::builder().build()
    }

    /// The HTTP plumbing underneath (its connector, connection counters,
    /// pools).
    pub fn http(&self) -> &HttpTransport<B::Connector> {
        &self.http
    }
}

#[async_trait]
impl<B: TlsBackend> Transport for TlsTransport<B> {
    fn name(&self) -> &str {
        B::NAME
    }

    /// [`TlsBackend::check_policy`], then whether the proxy settings can
    /// be routed (every backend routes the same way, in this crate).
    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        self.http.check_policy(policy)
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        // HttpTransport calls B::check_policy and the proxy check before
        // touching the network.
        self.http.send(request).await
    }
}

/// Builds a [`TlsTransport`]: trusted roots, system roots, the CRL cache
/// directory and [`HttpOptions`], the same settings for every backend.
///
/// ```no_run
/// # fn demo<B: bits_http::TlsBackend>(pem: &[u8]) -> Result<(), bits_core::BitsError> {
/// let transport = bits_http::TlsTransport::<B>::builder()
///     .add_root_pem(pem)?
///     .system_roots(false)
///     .crl_cache_dir("/var/cache/bits-crl")
///     .build()?;
/// # let _ = transport; Ok(()) }
/// ```
pub struct TlsTransportBuilder<B: TlsBackend> {
    options: BuilderOptions<B::Root>,
}

impl<B: TlsBackend> Default for TlsTransportBuilder<B> {
    fn default() -> Self {
        TlsTransportBuilder {
            options: BuilderOptions::default(),
        }
    }
}

impl<B: TlsBackend> Clone for TlsTransportBuilder<B> {
    fn clone(&self) -> Self {
        TlsTransportBuilder {
            options: self.options.clone(),
        }
    }
}

impl<B: TlsBackend> fmt::Debug for TlsTransportBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        f.debug_struct("TlsTransportBuilder")
            .field("backend", &B::NAME)
            .field("roots", &o.roots.len())
            .field("system_roots", &o.system_roots)
            .field("crl_cache_dir", &o.crl_cache_dir)
            .field("http_options", &o.http_options)
            .finish()
    }
}

impl<B: TlsBackend> TlsTransportBuilder<B> {
    /// Trusts the certificates of a PEM bundle (one or more `CERTIFICATE`
    /// blocks).
    ///
    /// # Errors
    /// `E_INVALIDARG` when it holds none or cannot be parsed.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, BitsError> {
        self.options.roots.extend(B::roots_from_pem(pem)?);
        Ok(self)
    }

    /// Trusts one DER certificate.
    ///
    /// # Errors
    /// `E_INVALIDARG` when it cannot be parsed or used as a root.
    pub fn add_root_der(mut self, der: &[u8]) -> Result<Self, BitsError> {
        self.options.roots.push(B::root_from_der(der)?);
        Ok(self)
    }

    /// Whether the system's roots are trusted too (default `true`), as the
    /// backend finds them (its crate documentation says how). On Linux
    /// every backend lets `SSL_CERT_FILE` and `SSL_CERT_DIR` replace the
    /// system's locations, as OpenSSL defines them. Roots added with
    /// [`TlsTransportBuilder::add_root_pem`] are trusted either way.
    pub fn system_roots(mut self, yes: bool) -> Self {
        self.options.system_roots = yes;
        self
    }

    /// Where downloaded CRLs are kept (default
    /// [`crate::crl_cache::default_crl_cache_dir`]: `bits-crl` under
    /// `$XDG_CACHE_HOME`, else `~/.cache`), in the format every
    /// CRL-checking backend shares. Created on first use. A backend that
    /// never checks CRLs (native: it refuses `ENABLE_CRL_CHECK`) ignores
    /// it.
    pub fn crl_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.crl_cache_dir = Some(dir.into());
        self
    }

    /// Timeouts and pooling (default [`HttpOptions::default`]). CRL
    /// downloads get half the handshake timeout
    /// ([`BuilderOptions::crl_fetch_timeout`]).
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.options.http_options = options;
        self
    }

    /// The transport.
    ///
    /// # Errors
    /// What [`TlsBackend::connector`] fails with (the TLS library cannot
    /// set up a context or load the system's roots).
    pub fn build(self) -> Result<TlsTransport<B>, BitsError> {
        let http_options = self.options.http_options.clone();
        let connector = B::connector(self.options)?;
        Ok(TlsTransport {
            http: HttpTransport::new(B::NAME, connector, B::check_policy, http_options),
        })
    }
}
