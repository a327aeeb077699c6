//! The TLS handshake: tokio-rustls under a per-connection [`PolicyVerifier`]
//! (`docs/spec/tls.md` §4.2) and, when the job has one, its client
//! certificate (`docs/spec/http-options.md`, "Client certificate"). With
//! CRLs, the verifier records which CRLs the path lacks and refuses;
//! [`RustlsConnector`] downloads them through bits-http's CRL cache and
//! reconnects ([`bits_http::crl_cache::crl_rounds`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bits_core::{BitsError, ConnectionPolicy};
use bits_http::builder::BuilderOptions;
use bits_http::crl_cache::{crl_rounds, CrlCache, CrlRequest, CrlRound, FailedHandshake, HandshakeFailure};
use bits_http::{BoxFuture, TlsConnect};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{ServerName, TrustAnchor};
use rustls::sign::CertifiedKey;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client_cert::{classify_alert, load_for_connect, ClientAuth, ClientAuthRecord};
use crate::crl::{CachedCrl, CrlNeed, Issuer};
use crate::verify::{PolicyVerifier, SharedRecord};

/// The TLS side of [`crate::RustlsTransport`]: [`RustlsHandshake`] with the
/// CRL cache and the reconnect-after-download flow of bits-http, and the
/// job's client certificate read again at every connection.
///
/// It is bits-http's `CrlConnector` flow written out here because a
/// handshake with a client certificate fails with errors of its own (the
/// files gone or changed, `ClientCertNeeded`), which bits-http's
/// `FailedHandshake` cannot carry.
///
/// Cloning is cheap and shares the CRL cache.
#[derive(Clone)]
pub struct RustlsConnector {
    inner: Arc<Inner>,
}

struct Inner {
    handshake: RustlsHandshake,
    crls: CrlCache<Vec<u8>>,
    /// How long one reconnect (after a CRL download) may take.
    reconnect_timeout: Duration,
}

impl fmt::Debug for RustlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsConnector")
            .field("handshake", &self.inner.handshake)
            .field("crls", &self.inner.crls)
            .finish_non_exhaustive()
    }
}

impl RustlsConnector {
    pub(crate) fn new<R>(handshake: RustlsHandshake, options: &BuilderOptions<R>) -> Self {
        RustlsConnector {
            inner: Arc::new(Inner {
                handshake,
                crls: CrlCache::new(options.crl_dir(), options.crl_fetch_timeout()),
                reconnect_timeout: options.http_options.connect_timeout,
            }),
        }
    }

    /// The backend's handshake.
    pub fn handshake(&self) -> &RustlsHandshake {
        &self.inner.handshake
    }

    async fn connect_tls(
        self,
        host: String,
        tcp: TcpStream,
        policy: ConnectionPolicy,
    ) -> Result<TlsStream<TcpStream>, BitsError> {
        let inner = &*self.inner;
        // Read at every connection: the files may be gone or changed since
        // the job chose the certificate.
        let client = match policy.client_certificate() {
            Some(stored) => Some(load_for_connect(stored, &inner.handshake.provider)?),
            None => None,
        };
        if !policy.flags().crl_check() {
            return inner
                .handshake
                .handshake_with(&host, tcp, &policy, None, client)
                .await
                .map_err(HandshakeFailure::into_error);
        }
        crl_rounds(tcp, inner.reconnect_timeout, |tcp, round| {
            inner.crl_round(&host, tcp, &policy, client.clone(), round)
        })
        .await
    }
}

impl Inner {
    /// One handshake of the CRL flow with the fresh CRLs, and the downloads
    /// of the CRLs it lacked.
    async fn crl_round(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
        client: Option<Arc<CertifiedKey>>,
        round: usize,
    ) -> CrlRound<TlsStream<TcpStream>> {
        let crls = self.crls.fresh();
        let had: Vec<String> = crls.iter().map(|c| c.url.clone()).collect();
        let result = self
            .handshake
            .handshake_with(host, tcp, policy, Some(crls), client)
            .await;
        CrlRound::after_handshake(result, host, round, async |needs| {
            let requests: Vec<_> = needs.iter().map(RustlsHandshake::crl_request).collect();
            self.crls.obtain(&requests, &had).await
        })
        .await
    }
}

impl TlsConnect for RustlsConnector {
    type Stream = TlsStream<TcpStream>;

    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<Self::Stream, BitsError>> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Box::pin(self.clone().connect_tls(host, tcp, policy.clone()))
    }

    fn peer_chain(stream: &Self::Stream) -> Vec<Vec<u8>> {
        RustlsHandshake::peer_chain(stream)
    }
}

/// A failed handshake: the verifier's record, or an error already decided
/// (the server wants a client certificate, or refused ours).
#[derive(Debug)]
pub(crate) struct Failed {
    base: FailedHandshake<CrlNeed>,
    error: Option<BitsError>,
}

impl HandshakeFailure for Failed {
    type CrlNeed = CrlNeed;

    fn take_crl_needs(&mut self) -> Vec<CrlNeed> {
        self.base.take_crl_needs()
    }

    fn into_error(self) -> BitsError {
        match self.error {
            Some(e) => e,
            None => self.base.into_error(),
        }
    }
}

impl From<FailedHandshake<CrlNeed>> for Failed {
    fn from(base: FailedHandshake<CrlNeed>) -> Self {
        Failed { base, error: None }
    }
}

/// One rustls handshake per connection, verifying the server under exactly
/// the certificate bits of the policy it is given (or refusing where that
/// cannot be decided), and offering the job's client certificate to a
/// server that asks.
pub struct RustlsHandshake {
    roots: Arc<Vec<TrustAnchor<'static>>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for RustlsHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsHandshake")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl RustlsHandshake {
    pub(crate) fn new(roots: Vec<TrustAnchor<'static>>) -> Self {
        RustlsHandshake {
            roots: Arc::new(roots),
            provider: Arc::new(crate::transport::provider()),
        }
    }

    /// One handshake with a fresh `ClientConfig` (its own verifier, its own
    /// client-certificate resolver, no session resumption: a resumed
    /// session skips verification, so none may cross policies, pitfall 9).
    /// `client` is the job's certificate, already read and checked.
    pub(crate) async fn handshake_with(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
        crls: Option<Vec<CachedCrl>>,
        client: Option<Arc<CertifiedKey>>,
    ) -> Result<TlsStream<TcpStream>, Failed> {
        let record = SharedRecord::default();
        let verifier = PolicyVerifier {
            roots: Arc::clone(&self.roots),
            flags: policy.flags(),
            crls: crls
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.url.clone(), c))
                .collect(),
            record: record.clone(),
            algs: self.provider.signature_verification_algorithms,
        };
        let auth = ClientAuthRecord::default();
        let resolver = ClientAuth {
            key: client,
            record: auth.clone(),
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Failed::from(FailedHandshake::other(format!("TLS setup: {e}"))))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            Failed::from(FailedHandshake::other(format!(
                "not a valid server name {host:?}: {e}"
            )))
        })?;
        match TlsConnector::from(Arc::new(config)).connect(name, tcp).await {
            Ok(stream) => Ok(stream),
            Err(e) => {
                let mut rec = record.lock();
                let tls = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                // The server's verdict on the client certificate, when the
                // verifier found nothing wrong with the server first.
                let subject = policy.client_certificate().map(|c| c.subject.as_str());
                let error = match (&rec.rejection, tls) {
                    (None, Some(tls)) => classify_alert(tls, auth.asked(), auth.offered(), subject),
                    _ => None,
                };
                // The classification comes from the verifier's own record.
                Err(Failed {
                    base: FailedHandshake {
                        rejection: rec.rejection.take(),
                        crl_needs: std::mem::take(&mut rec.crl_needs),
                        text: e.to_string(),
                        io: tls.is_none() && e.kind() != std::io::ErrorKind::InvalidData,
                    },
                    error,
                })
            }
        }
    }
}

impl RustlsHandshake {
    /// Every certificate of the path but the anchor needs its CRL.
    fn crl_request(need: &CrlNeed) -> CrlRequest<'_, Issuer<'_>> {
        CrlRequest {
            subject: &need.subject,
            urls: &need.urls,
            issuer: Some(Issuer(need)),
            required: true,
        }
    }

    /// The certificates the server sent, leaf first.
    fn peer_chain(stream: &TlsStream<TcpStream>) -> Vec<Vec<u8>> {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default()
    }
}
