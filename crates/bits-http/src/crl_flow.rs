//! The two-phase CRL flow (`docs/spec/tls.md` §2.5), written once for every
//! CRL-checking backend: a handshake with the fresh CRLs the cache holds;
//! when it fails for want of CRLs, download them and connect again.
//!
//! The backend supplies one handshake ([`CrlHandshake`]); [`CrlConnector`]
//! is the [`TlsConnect`] around it, with the CRL cache and the rounds.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bits_core::{BitsError, CertFault, ConnectionPolicy};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::builder::BuilderOptions;
use crate::crl_cache::{CachedCrl, CrlCache, CrlIssuer, CrlRequest};
use crate::tls::{BoxFuture, TlsConnect};

/// One TLS handshake of a CRL-checking backend, under a policy and with
/// the CRLs it is given: what the backend supplies to [`CrlConnector`].
///
/// # Security
/// The handshake must verify the server under exactly `policy` and never
/// resume a TLS session (a resumed session skips verification). With
/// CRLs (`Some`), every certificate the backend checks for revocation must
/// be covered by one of them; when one is missing the handshake fails and
/// says which it lacked ([`FailedHandshake::crl_needs`]), never succeeds.
pub trait CrlHandshake: fmt::Debug + Send + Sync + 'static {
    /// The TLS stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The backend's parsed CRL, as the cache keeps it.
    type Crl: Send + Sync + 'static;
    /// What a failed handshake records about one CRL it lacked.
    type CrlNeed: Send + Sync + 'static;
    /// The issuer a [`CrlHandshake::CrlNeed`] names, judging the CRLs the
    /// cache finds for it.
    type Issuer<'a>: CrlIssuer<Crl = Self::Crl> + Send + Sync;

    /// Performs the handshake with `host` (a DNS name or an IP address, no
    /// brackets) over `tcp`, verifying under `policy`. `crls` is `Some`
    /// exactly when the policy asks for CRL checking: the fresh CRLs the
    /// cache holds, for the verifier to use.
    fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
        crls: Option<Vec<CachedCrl<Self::Crl>>>,
    ) -> impl Future<Output = Result<Self::Stream, FailedHandshake<Self::CrlNeed>>> + Send;

    /// What the cache is asked for `need`: the certificate, its CDP URLs,
    /// its issuer, and whether failing to get its CRL fails the connection.
    fn crl_request(need: &Self::CrlNeed) -> CrlRequest<'_, Self::Issuer<'_>>;

    /// The chain the server presented ([`TlsConnect::peer_chain`]).
    fn peer_chain(stream: &Self::Stream) -> Vec<Vec<u8>>;

    /// [`TlsConnect::negotiated_alpn`]: the protocol the handshake chose
    /// by ALPN (default: `None`, HTTP/1.1). Every handshake, a reconnect
    /// after a CRL download included, offers `h2` and `http/1.1` (or
    /// `http/1.1` alone: [`ConnectionPolicy::http1_only`]).
    fn negotiated_alpn(stream: &Self::Stream) -> Option<Vec<u8>> {
        let _ = stream;
        None
    }

    /// [`TlsConnect::classify_io`]: the error a failed read or write of a
    /// connected stream stands for, when it is the backend's to say
    /// (default: `None`).
    fn classify_io(error: &std::io::Error) -> Option<BitsError> {
        let _ = error;
        None
    }
}

/// A [`TlsConnect`] for a CRL-checking backend: its [`CrlHandshake`], the
/// CRL cache, and the flow between them. Without `ENABLE_CRL_CHECK` it is
/// one handshake; with it, each round's handshake gets the fresh CRLs the
/// cache holds, and a handshake that lacked some is followed by their
/// download and a new connection ([`crl_rounds`]).
///
/// Cloning is cheap and shares the CRL cache.
pub struct CrlConnector<H: CrlHandshake> {
    inner: Arc<Inner<H>>,
}

struct Inner<H: CrlHandshake> {
    handshake: H,
    crls: CrlCache<H::Crl>,
    /// How long one reconnect (after a CRL download) may take.
    reconnect_timeout: Duration,
}

impl<H: CrlHandshake> Clone for CrlConnector<H> {
    fn clone(&self) -> Self {
        CrlConnector {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H: CrlHandshake> fmt::Debug for CrlConnector<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlConnector")
            .field("handshake", &self.inner.handshake)
            .field("crls", &self.inner.crls)
            .finish_non_exhaustive()
    }
}

impl<H: CrlHandshake> CrlConnector<H> {
    /// `handshake` with the CRL cache `options` describe
    /// ([`BuilderOptions::crl_dir`], [`BuilderOptions::crl_fetch_timeout`]);
    /// a reconnect after a download gets the connect timeout.
    pub fn new<R>(handshake: H, options: &BuilderOptions<R>) -> Self {
        CrlConnector {
            inner: Arc::new(Inner {
                handshake,
                crls: CrlCache::new(options.crl_dir(), options.crl_fetch_timeout()),
                reconnect_timeout: options.http_options.connect_timeout,
            }),
        }
    }

    /// The backend's handshake.
    pub fn handshake(&self) -> &H {
        &self.inner.handshake
    }

    async fn connect_tls(
        self,
        host: String,
        tcp: TcpStream,
        policy: ConnectionPolicy,
    ) -> Result<H::Stream, BitsError> {
        let inner = &*self.inner;
        if !policy.flags().crl_check() {
            return inner
                .handshake
                .handshake(&host, tcp, &policy, None)
                .await
                .map_err(HandshakeFailure::into_error);
        }
        crl_rounds(tcp, inner.reconnect_timeout, |tcp, round| {
            inner.crl_round(&host, tcp, &policy, round)
        })
        .await
    }
}

impl<H: CrlHandshake> Inner<H> {
    /// One handshake of the CRL flow with the fresh CRLs, and the downloads
    /// of the CRLs it lacked.
    async fn crl_round(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
        round: usize,
    ) -> CrlRound<H::Stream> {
        let crls = self.crls.fresh();
        let had: Vec<String> = crls.iter().map(|c| c.url.clone()).collect();
        let result = self.handshake.handshake(host, tcp, policy, Some(crls)).await;
        CrlRound::after_handshake(result, host, round, async |needs| {
            let requests: Vec<_> = needs.iter().map(H::crl_request).collect();
            self.crls.obtain(&requests, &had).await
        })
        .await
    }
}

impl<H: CrlHandshake> TlsConnect for CrlConnector<H> {
    type Stream = H::Stream;

    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<H::Stream, BitsError>> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Box::pin(self.clone().connect_tls(host, tcp, policy.clone()))
    }

    fn peer_chain(stream: &H::Stream) -> Vec<Vec<u8>> {
        H::peer_chain(stream)
    }

    fn negotiated_alpn(stream: &H::Stream) -> Option<Vec<u8>> {
        H::negotiated_alpn(stream)
    }

    fn classify_io(error: &std::io::Error) -> Option<BitsError> {
        H::classify_io(error)
    }
}

/// Why one handshake failed, as the backend recorded it: what
/// [`CrlHandshake::handshake`] returns.
#[derive(Debug)]
pub struct FailedHandshake<N> {
    /// The certificate fault the verifier refused the server for, with
    /// its detail (from the verifier's own record, never from the TLS
    /// library's error, which may name a fault the policy ignored).
    pub rejection: Option<(CertFault, String)>,
    /// The CRLs the handshake lacked; empty when it failed for another
    /// reason.
    pub crl_needs: Vec<N>,
    /// The TLS library's or the socket's words.
    pub text: String,
    /// Whether the socket failed (a reset, a broken pipe) rather than TLS
    /// or verification.
    pub io: bool,
    /// The error, when the backend already knows it and it is not a
    /// certificate fault of the server: a client certificate file that is
    /// gone or changed (`0x80070002`, `CRYPT_E_NOT_FOUND`), a server that
    /// demands a client certificate (`0x80072F0C`). It wins over
    /// everything else; [`FailedHandshake::classified`] makes one.
    pub error: Option<BitsError>,
}

impl<N> FailedHandshake<N> {
    /// A failure before or outside the exchange with the server (setting
    /// up TLS, a name TLS cannot use): `SecureFailure` with `text`.
    pub fn other(text: impl Into<String>) -> Self {
        FailedHandshake {
            rejection: None,
            crl_needs: Vec::new(),
            text: text.into(),
            io: false,
            error: None,
        }
    }

    /// A failure the backend has already classified: `error`, as is.
    pub fn classified(error: BitsError) -> Self {
        FailedHandshake {
            text: error.to_string(),
            error: Some(error),
            ..FailedHandshake::other(String::new())
        }
    }
}

impl<N> HandshakeFailure for FailedHandshake<N> {
    type CrlNeed = N;

    fn take_crl_needs(&mut self) -> Vec<N> {
        std::mem::take(&mut self.crl_needs)
    }

    /// [`FailedHandshake::error`] when set; else the certificate fault's error; else `ConnectionReset` for a socket
    /// failure (the network's fault and transient, as a reset before TLS
    /// would be); else `SecureFailure`.
    fn into_error(self) -> BitsError {
        if let Some(e) = self.error {
            return e;
        }
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

/// The most handshakes one CRL-checked connection makes: each retry must
/// follow the download of a CRL the previous one lacked (one per chain
/// level).
pub const MAX_CRL_ROUNDS: usize = 4;

/// What one round of [`crl_rounds`] came to.
#[derive(Debug)]
pub enum CrlRound<S> {
    /// The handshake succeeded.
    Connected(S),
    /// CRLs were downloaded that the handshake lacked: try again on a new
    /// connection.
    Retry,
    /// The connection fails with this error.
    Fail(BitsError),
}

impl<S> CrlRound<S> {
    /// The round after a handshake that failed for want of CRLs, given what
    /// [`CrlCache::obtain`] said: retry when it got something new; fail
    /// with the handshake's own error (`error`) when every CRL was already
    /// there (revocation cannot be checked); `CertRevocationFailed` when a
    /// CRL cannot be had.
    pub fn after_obtain(obtained: Result<bool, String>, error: impl FnOnce() -> BitsError) -> Self {
        match obtained {
            Ok(true) => CrlRound::Retry,
            Ok(false) => CrlRound::Fail(error()),
            Err(reason) => CrlRound::Fail(BitsError::CertRevocationFailed { reason }),
        }
    }
}

/// A failed handshake of the CRL flow, as the backend recorded it: the CRLs
/// it lacked, and the error it comes to.
pub trait HandshakeFailure {
    /// The backend's description of a CRL the handshake lacked, as its
    /// cache's `obtain` takes it.
    type CrlNeed;

    /// Takes the CRLs the handshake lacked out of the failure: empty when it
    /// failed for another reason.
    fn take_crl_needs(&mut self) -> Vec<Self::CrlNeed>;

    /// The error the connection fails with, classified by the backend.
    fn into_error(self) -> BitsError;
}

impl<S> CrlRound<S> {
    /// The round after one handshake of the CRL flow (`result`, to `host`,
    /// in round number `round`): connected when it succeeded; its own error
    /// when it failed for another reason than missing CRLs; otherwise
    /// `obtain` fetches the missing CRLs (the backend's [`CrlCache::obtain`])
    /// and [`CrlRound::after_obtain`] decides.
    pub async fn after_handshake<F: HandshakeFailure>(
        result: Result<S, F>,
        host: &str,
        round: usize,
        obtain: impl AsyncFnOnce(&[F::CrlNeed]) -> Result<bool, String>,
    ) -> Self {
        let mut failure = match result {
            Ok(stream) => return CrlRound::Connected(stream),
            Err(failure) => failure,
        };
        let needs = failure.take_crl_needs();
        if needs.is_empty() {
            return CrlRound::Fail(failure.into_error());
        }
        tracing::debug!(%host, round, "handshake needs CRLs");
        // Ok(false) fails with the handshake's error: the handshake held
        // every CRL the chain names and still found none usable, so
        // revocation cannot be checked.
        let obtained = obtain(&needs).await;
        CrlRound::after_obtain(obtained, || failure.into_error())
    }
}

/// The reconnect loop of the two-phase CRL flow: runs `round` (one
/// handshake, and the CRL downloads it asks for) on `tcp`, then on a new
/// connection to the same address (within `reconnect_timeout`) as long as
/// it says [`CrlRound::Retry`], at most [`MAX_CRL_ROUNDS`] times. `round`
/// gets the socket and the round's number.
///
/// # Errors
/// `round`'s error; `ConnectionReset` when `tcp` is already lost;
/// `CannotConnect` / `Timeout` when reconnecting fails;
/// `CertRevocationFailed` when the rounds run out.
pub async fn crl_rounds<S, F, Fut>(
    tcp: TcpStream,
    reconnect_timeout: Duration,
    mut round: F,
) -> Result<S, BitsError>
where
    F: FnMut(TcpStream, usize) -> Fut,
    Fut: Future<Output = CrlRound<S>>,
{
    let addr = tcp.peer_addr().map_err(|e| BitsError::ConnectionReset {
        reason: format!("socket lost before the TLS handshake: {e}"),
    })?;
    let mut tcp = Some(tcp);
    for n in 0..MAX_CRL_ROUNDS {
        let tcp = match tcp.take() {
            Some(tcp) => tcp,
            None => reconnect(addr, reconnect_timeout).await?,
        };
        match round(tcp, n).await {
            CrlRound::Connected(stream) => return Ok(stream),
            CrlRound::Retry => {}
            CrlRound::Fail(e) => return Err(e),
        }
    }
    Err(BitsError::CertRevocationFailed {
        reason: format!("still missing CRLs after {MAX_CRL_ROUNDS} downloads"),
    })
}

/// A new connection to `addr` after a CRL download; when the connection
/// went through a proxy, a new one through the same route
/// ([`crate::connector::PROXIED_DIAL`]: `addr` is the proxy's).
async fn reconnect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, BitsError> {
    if let Ok(dial) = crate::connector::PROXIED_DIAL.try_with(std::sync::Arc::clone) {
        return match tokio::time::timeout(timeout, dial()).await {
            Ok(result) => result,
            Err(_) => Err(BitsError::Timeout {
                what: format!("reconnecting through the proxy {addr} after a CRL download"),
            }),
        };
    }
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(BitsError::CannotConnect {
            host: addr.to_string(),
            reason: format!("reconnecting after a CRL download: {e}"),
        }),
        Err(_) => Err(BitsError::Timeout {
            what: format!("reconnecting to {addr} after a CRL download"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_handshake_is_its_fault_else_a_reset_else_a_secure_failure() {
        let failure = |rejection, io| FailedHandshake::<()> {
            rejection,
            crl_needs: Vec::new(),
            text: "alert 42".to_owned(),
            io,
            error: None,
        };
        let date = Some((CertFault::Date, "expired".to_owned()));
        assert_eq!(failure(date.clone(), true).into_error().hresult().0, 0x8007_2F05);
        assert_eq!(failure(date, false).into_error().hresult().0, 0x8007_2F05);
        let reset = failure(None, true).into_error();
        assert_eq!(reset.hresult().0, 0x8007_2EFE);
        assert!(
            reset.to_string().contains("during the TLS handshake: alert 42"),
            "{reset}"
        );
        let other = FailedHandshake::<()>::other("TLS setup: no memory").into_error();
        assert_eq!(other.hresult().0, 0x8007_2F8F);
        assert!(other.to_string().contains("TLS setup: no memory"), "{other}");
        // A classified error wins over everything.
        let mut needed = FailedHandshake::<()>::classified(BitsError::ClientCertNeeded);
        needed.rejection = Some((CertFault::Date, "expired".to_owned()));
        needed.io = true;
        assert_eq!(needed.into_error().hresult().0, 0x8007_2F0C);
    }
}
