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

use bits_core::{BitsError, ConnectionPolicy};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::classify;
use crate::tls::{BoxFuture, TlsConnect};

/// A failure already classified (a connect failure, a request body's
/// error), carried through hyper's error chain and taken out again by
/// [`classify::client_error`].
pub(crate) struct Classified(Mutex<Option<BitsError>>);

impl Classified {
    pub(crate) fn new(e: BitsError) -> Self {
        Classified(Mutex::new(Some(e)))
    }

    /// Takes the error out (once).
    pub(crate) fn take(&self) -> Option<BitsError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => write!(f, "Classified({e:?})"),
            None => f.write_str("Classified(taken)"),
        }
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => fmt::Display::fmt(e, f),
            None => f.write_str("connect failed"),
        }
    }
}

impl StdError for Classified {}

/// A plain TCP or a TLS stream.
pub(crate) enum MaybeTls<S> {
    Plain(TcpStream),
    Tls(Coalesce<S>),
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

/// A TLS stream whose reads fill the caller's buffer with as many records
/// as are ready, not one: TLS libraries return one record (at most
/// 16 KiB) per read and hyper makes each read a body chunk, which costs a
/// task wakeup, timers and a file write, so fewer, larger chunks make a
/// download cheaper.
///
/// It also hands every read or write error to the backend's
/// [`TlsConnect::classify_io`]: an error it classifies travels on inside
/// the `io::Error` (as [`Classified`], same kind) for
/// [`classify`] to take out.
pub(crate) struct Coalesce<S> {
    inner: S,
    /// An error met after some bytes were already returned: the next read
    /// reports it.
    deferred: Option<io::Error>,
    /// The backend's [`TlsConnect::classify_io`].
    classify: fn(&io::Error) -> Option<BitsError>,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S, classify: fn(&io::Error) -> Option<BitsError>) -> Self {
        Coalesce {
            inner,
            deferred: None,
            classify,
        }
    }

    /// `e`, carrying the backend's classification when it has one.
    fn classified(&self, e: io::Error) -> io::Error {
        match (self.classify)(&e) {
            Some(bits) => io::Error::new(e.kind(), Classified::new(bits)),
            None => e,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.deferred.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                // A full buffer, or the end of the stream (nothing added).
                Poll::Ready(Ok(())) if buf.remaining() == 0 || buf.filled().len() == before => {
                    return Poll::Ready(Ok(()))
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if buf.filled().len() > start => {
                    this.deferred = Some(this.classified(e));
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(this.classified(e))),
                // Nothing more ready: hand over what was read. The waker
                // the inner stream registered only makes a spare wakeup.
                Poll::Pending if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.classified(e))),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.classified(e))),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.classified(e))),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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

/// Connects for one [`ConnectionPolicy`].
pub(crate) struct PolicyConnector<C> {
    pub(crate) http: HttpConnector,
    pub(crate) tls: Arc<C>,
    pub(crate) policy: ConnectionPolicy,
    pub(crate) handshake_timeout: Duration,
    /// Connections established (TCP, plus TLS for https) by this connector.
    pub(crate) made: Arc<AtomicUsize>,
}

impl<C> Clone for PolicyConnector<C> {
    fn clone(&self) -> Self {
        PolicyConnector {
            http: self.http.clone(),
            tls: Arc::clone(&self.tls),
            policy: self.policy.clone(),
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
        let policy = self.policy.clone();
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
            let boxed = |e: BitsError| -> Box<dyn StdError + Send + Sync> { Box::new(Classified::new(e)) };
            let tcp = http
                .call(uri.clone())
                .await
                .map_err(|e| boxed(classify::tcp_error(&e, &authority)))?
                .into_inner();
            let stream = if https {
                let handshake = tls.connect(&host, tcp, &policy);
                match tokio::time::timeout(handshake_timeout, handshake).await {
                    Ok(Ok(s)) => {
                        if policy.checks_server() {
                            // After the flags passed, before any request.
                            let chain = C::peer_chain(&s);
                            let port = uri.port_u16().unwrap_or(443);
                            let keys = crate::chain::spki_sha256_all(&chain);
                            policy.check_server(&host, port, &chain, &keys).map_err(boxed)?;
                        }
                        MaybeTls::Tls(Coalesce::new(s, C::classify_io))
                    }
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
            tracing::debug!(%authority, https, %policy, "connected");
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Plays back a script: each step is some bytes, "not ready", or an error.
    enum Step {
        Data(&'static [u8]),
        NotReady,
        Fail,
    }

    struct Script(VecDeque<Step>);

    impl AsyncRead for Script {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.get_mut().0.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(Step::Data(d)) => {
                    buf.put_slice(d);
                    Poll::Ready(Ok(()))
                }
                Some(Step::NotReady) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Step::Fail) => Poll::Ready(Err(io::Error::other("record MAC"))),
            }
        }
    }

    fn unclassified(_: &io::Error) -> Option<BitsError> {
        None
    }

    fn script<const N: usize>(steps: [Step; N]) -> Coalesce<Script> {
        Coalesce::new(Script(steps.into()), unclassified)
    }

    async fn read_once(s: &mut Coalesce<Script>, cap: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; cap];
        let n = s.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    #[tokio::test]
    async fn reads_join_records_until_nothing_is_ready() {
        use Step::*;
        let mut s = script([Data(b"ab"), Data(b"cd"), NotReady, Data(b"ef"), Data(b"gh")]);
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"abcd");
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"efgh");
        // The end of the stream reads as 0 bytes.
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_full_buffer_ends_the_read() {
        use Step::*;
        let mut s = script([Data(b"ab"), Data(b"cd"), Data(b"ef")]);
        assert_eq!(read_once(&mut s, 4).await.unwrap(), b"abcd");
        assert_eq!(read_once(&mut s, 4).await.unwrap(), b"ef");
    }

    #[tokio::test]
    async fn an_error_after_bytes_comes_with_the_next_read() {
        use Step::*;
        let mut s = script([Data(b"ab"), Fail, Data(b"never")]);
        assert_eq!(read_once(&mut s, 64).await.unwrap(), b"ab");
        let e = read_once(&mut s, 64).await.unwrap_err();
        assert_eq!(e.to_string(), "record MAC");
    }

    /// A backend that says "record MAC" means the server refused the
    /// client certificate.
    fn refused(e: &io::Error) -> Option<BitsError> {
        (e.to_string() == "record MAC").then_some(BitsError::ClientCertNeeded)
    }

    #[tokio::test]
    async fn the_backend_classifies_stream_errors_and_the_transport_takes_them_out() {
        use Step::*;
        for steps in [vec![Fail], vec![Data(b"ab"), Fail]] {
            let mut s = Coalesce::new(Script(steps.into()), refused);
            let mut e = read_once(&mut s, 64).await;
            if e.is_ok() {
                e = read_once(&mut s, 64).await;
            }
            let e = e.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Other);
            let bits = classify::io_error(&e, "reading");
            assert_eq!(bits.hresult().0, 0x8007_2F0C, "{bits:?}");
        }
        // Unclassified errors stay the transport's.
        let mut s = script([Fail]);
        let e = read_once(&mut s, 64).await.unwrap_err();
        assert_eq!(classify::io_error(&e, "reading").hresult().0, 0x8007_2EFE);
    }
}
