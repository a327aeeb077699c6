//! The `tower_service::Service<Uri>` hyper-util's client connects through:
//! TCP by `HttpConnector`, then the backend's TLS for https.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bits_core::{BitsError, SecurityFlags};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::classify;
use crate::tls::{BoxFuture, TlsConnect};

/// A classified connect failure, carried through hyper-util's error chain
/// and taken out again by [`classify::client_error`].
pub(crate) struct ConnectFailure(Mutex<Option<BitsError>>);

impl ConnectFailure {
    pub(crate) fn new(e: BitsError) -> Self {
        ConnectFailure(Mutex::new(Some(e)))
    }

    /// Takes the error out (once).
    pub(crate) fn take(&self) -> Option<BitsError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl fmt::Debug for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => write!(f, "ConnectFailure({e:?})"),
            None => f.write_str("ConnectFailure(taken)"),
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => fmt::Display::fmt(e, f),
            None => f.write_str("connect failed"),
        }
    }
}

impl StdError for ConnectFailure {}

/// A plain TCP or a TLS stream.
pub(crate) enum MaybeTls<S> {
    Plain(TcpStream),
    Tls(S),
}

impl<S> Connection for MaybeTls<S> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Connects for one policy (one value of the certificate flags).
pub(crate) struct PolicyConnector<C> {
    pub(crate) http: HttpConnector,
    pub(crate) tls: Arc<C>,
    pub(crate) flags: SecurityFlags,
    pub(crate) handshake_timeout: Duration,
    /// Connections established (TCP, plus TLS for https) by this connector.
    pub(crate) made: Arc<AtomicUsize>,
}

impl<C> Clone for PolicyConnector<C> {
    fn clone(&self) -> Self {
        PolicyConnector {
            http: self.http.clone(),
            tls: Arc::clone(&self.tls),
            flags: self.flags,
            handshake_timeout: self.handshake_timeout,
            made: Arc::clone(&self.made),
        }
    }
}

impl<C: TlsConnect> Service<Uri> for PolicyConnector<C> {
    type Response = TokioIo<MaybeTls<C::Stream>>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = Arc::clone(&self.tls);
        let flags = self.flags;
        let handshake_timeout = self.handshake_timeout;
        let made = Arc::clone(&self.made);
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| host.clone());
            let boxed =
                |e: BitsError| -> Box<dyn StdError + Send + Sync> { Box::new(ConnectFailure::new(e)) };
            let tcp = http
                .call(uri)
                .await
                .map_err(|e| boxed(classify::tcp_error(&e, &authority)))?
                .into_inner();
            let stream = if https {
                let handshake = tls.connect(&host, tcp, flags);
                match tokio::time::timeout(handshake_timeout, handshake).await {
                    Ok(Ok(s)) => MaybeTls::Tls(s),
                    Ok(Err(e)) => return Err(boxed(e)),
                    Err(_) => {
                        return Err(boxed(BitsError::Timeout {
                            what: format!(
                                "TLS handshake with {authority} took longer than {}s",
                                handshake_timeout.as_secs_f32()
                            ),
                        }))
                    }
                }
            } else {
                MaybeTls::Plain(tcp)
            };
            made.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%authority, https, flags = %flags, "connected");
            Ok(TokioIo::new(stream))
        })
    }
}
