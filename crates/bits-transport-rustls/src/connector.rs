//! The TLS handshake: tokio-rustls under a per-connection [`PolicyVerifier`]
//! (`docs/spec/tls.md` §4.2) and, when the job has one, its client
//! certificate (`docs/spec/http-options.md`, "Client certificate"). With
//! CRLs, the verifier records which CRLs the path lacks and refuses;
//! `bits_http::crl_cache::CrlConnector` downloads them and reconnects.

use std::fmt;
use std::sync::Arc;

use bits_core::{BitsError, ConnectionPolicy};
use bits_http::crl_cache::{CrlConnector, CrlHandshake, CrlRequest, FailedHandshake};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{ServerName, TrustAnchor};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client_cert::{classify_alert, load_for_connect, ClientAuth, ClientAuthRecord};
use crate::crl::{CachedCrl, CrlNeed, Issuer};
use crate::verify::{PolicyVerifier, SharedRecord};

/// The TLS side of [`crate::RustlsTransport`]: [`RustlsHandshake`] with the
/// CRL cache and the reconnect-after-download flow of bits-http.
pub type RustlsConnector = CrlConnector<RustlsHandshake>;

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
}

impl CrlHandshake for RustlsHandshake {
    type Stream = TlsStream<TcpStream>;
    type Crl = Vec<u8>;
    type CrlNeed = CrlNeed;
    type Issuer<'a> = Issuer<'a>;

    /// One handshake with a fresh `ClientConfig` (its own verifier, its own
    /// client-certificate resolver, no session resumption: a resumed
    /// session skips verification, so none may cross policies, pitfall 9).
    /// The job's client certificate is read again at every handshake: the
    /// files may be gone or changed since the job chose it.
    async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
        crls: Option<Vec<CachedCrl>>,
    ) -> Result<TlsStream<TcpStream>, FailedHandshake<CrlNeed>> {
        let client = match policy.client_certificate() {
            Some(stored) => {
                Some(load_for_connect(stored, &self.provider).map_err(FailedHandshake::classified)?)
            }
            None => None,
        };
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
            .map_err(|e| FailedHandshake::other(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(resolver));
        // HTTP/2 where the server chooses it, else HTTP/1.1; HTTP/1.1 alone
        // when the policy asks. ALPN is only the protocol: the verifier is
        // the same either way.
        config.alpn_protocols = if policy.http1_only() {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| FailedHandshake::other(format!("not a valid server name {host:?}: {e}")))?;
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
                Err(FailedHandshake {
                    rejection: rec.rejection.take(),
                    crl_needs: std::mem::take(&mut rec.crl_needs),
                    text: e.to_string(),
                    io: tls.is_none() && e.kind() != std::io::ErrorKind::InvalidData,
                    error,
                })
            }
        }
    }

    /// A server's alert about the client certificate after a TLS 1.3
    /// handshake (see the crate documentation, "Client certificates").
    fn classify_io(error: &std::io::Error) -> Option<BitsError> {
        crate::client_cert::classify_io(error)
    }

    /// Every certificate of the path but the anchor needs its CRL.
    fn crl_request(need: &CrlNeed) -> CrlRequest<'_, Issuer<'_>> {
        CrlRequest {
            subject: &need.subject,
            urls: &need.urls,
            issuer: Some(Issuer(need)),
            required: true,
        }
    }

    /// The protocol the server chose from the offer (`h2`, `http/1.1`).
    fn negotiated_alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
        stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
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
