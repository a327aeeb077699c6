//! The TLS handshake: tokio-rustls under a per-connection [`PolicyVerifier`],
//! and the two-phase CRL flow (tls-mapping §2.5, §4.2): the verifier records
//! which CRLs the path lacks and refuses; the connector downloads them and
//! reconnects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bits_core::{BitsError, ConnectionPolicy, SecurityFlags};
use bits_http::crl_cache::{crl_rounds, CrlRound, HandshakeFailure};
use bits_http::{BoxFuture, TlsConnect};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{ServerName, TrustAnchor};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::crl::CrlCache;
use crate::verify::{Fault, PolicyVerifier, SharedRecord};

/// The TLS side of [`crate::RustlsTransport`]: one handshake per
/// connection, verifying the server under exactly the certificate bits of
/// the flags it is given (or refusing where that cannot be decided).
///
/// Cloning is cheap and shares the roots and the CRL cache.
#[derive(Clone)]
pub struct RustlsConnector {
    inner: Arc<Inner>,
}

struct Inner {
    roots: Arc<Vec<TrustAnchor<'static>>>,
    provider: Arc<CryptoProvider>,
    crls: CrlCache,
    /// How long one reconnect (after a CRL download) may take.
    reconnect_timeout: Duration,
}

impl fmt::Debug for RustlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsConnector")
            .field("roots", &self.inner.roots.len())
            .field("crls", &self.inner.crls)
            .finish_non_exhaustive()
    }
}

/// Why one handshake failed.
struct Failure {
    rejection: Option<(Fault, String)>,
    crl_needs: Vec<crate::crl::CrlNeed>,
    /// rustls' or the socket's words.
    text: String,
    /// The socket failed rather than TLS or verification.
    io: bool,
}

impl HandshakeFailure for Failure {
    type CrlNeed = crate::crl::CrlNeed;

    fn take_crl_needs(&mut self) -> Vec<crate::crl::CrlNeed> {
        std::mem::take(&mut self.crl_needs)
    }

    /// The classification, from the verifier's own record.
    fn into_error(self) -> BitsError {
        match self.rejection {
            Some((fault, detail)) => {
                tracing::debug!(?fault, %detail, "certificate refused");
                fault.to_error(&detail)
            }
            None if self.io => BitsError::ConnectionReset {
                reason: format!("during the TLS handshake: {}", self.text),
            },
            None => BitsError::SecureFailure { reason: self.text },
        }
    }
}

impl RustlsConnector {
    pub(crate) fn new(roots: Vec<TrustAnchor<'static>>, crls: CrlCache, reconnect_timeout: Duration) -> Self {
        RustlsConnector {
            inner: Arc::new(Inner {
                roots: Arc::new(roots),
                provider: Arc::new(rustls::crypto::ring::default_provider()),
                crls,
                reconnect_timeout,
            }),
        }
    }

    /// The handshake under `flags`, with the CRL flow when 0x1 is set.
    async fn connect_tls(
        self,
        host: String,
        tcp: TcpStream,
        flags: SecurityFlags,
    ) -> Result<TlsStream<TcpStream>, BitsError> {
        if !flags.crl_check() {
            return self
                .handshake(&host, tcp, flags)
                .await
                .map_err(Failure::into_error);
        }
        crl_rounds(tcp, self.inner.reconnect_timeout, |tcp, round| {
            self.crl_round(&host, tcp, flags, round)
        })
        .await
    }

    /// One handshake of the CRL flow (its verifier gets the fresh CRLs),
    /// and the downloads of the CRLs it lacked.
    async fn crl_round(
        &self,
        host: &str,
        tcp: TcpStream,
        flags: SecurityFlags,
        round: usize,
    ) -> CrlRound<TlsStream<TcpStream>> {
        let had: Vec<String> = self.inner.crls.fresh().into_keys().collect();
        let result = self.handshake(host, tcp, flags).await;
        CrlRound::after_handshake(result, host, round, async |needs| {
            self.inner.crls.obtain(needs, &had).await
        })
        .await
    }

    /// One handshake with a fresh `ClientConfig` (its own verifier, no
    /// session resumption: a resumed session skips verification, so none
    /// may cross policies, pitfall 9).
    async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        flags: SecurityFlags,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let setup = |text: String| Failure {
            rejection: None,
            crl_needs: Vec::new(),
            text,
            io: false,
        };
        let record = SharedRecord::default();
        let verifier = PolicyVerifier {
            roots: Arc::clone(&self.inner.roots),
            flags,
            crls: if flags.crl_check() {
                self.inner.crls.fresh()
            } else {
                Default::default()
            },
            record: record.clone(),
            algs: self.inner.provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.inner.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| setup(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| setup(format!("not a valid server name {host:?}: {e}")))?;
        match TlsConnector::from(Arc::new(config)).connect(name, tcp).await {
            Ok(stream) => Ok(stream),
            Err(e) => {
                let mut rec = record.lock();
                let tls = e
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
                Err(Failure {
                    rejection: rec.rejection.take(),
                    crl_needs: std::mem::take(&mut rec.crl_needs),
                    text: e.to_string(),
                    io: !tls && e.kind() != std::io::ErrorKind::InvalidData,
                })
            }
        }
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
        Box::pin(self.clone().connect_tls(host, tcp, policy.flags()))
    }
}
