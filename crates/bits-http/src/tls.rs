//! The one thing a TLS backend supplies: its handshake, with failures
//! already classified.

use std::future::Future;
use std::io;
use std::pin::Pin;

use bits_core::{BitsError, ConnectionPolicy};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A boxed, `Send` future, as [`TlsConnect::connect`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A TLS backend's handshake.
///
/// [`crate::HttpTransport`] opens the TCP connection, then hands it to
/// `connect` for every `https` URL. The backend verifies the server under
/// exactly `policy` and reports a failure as the policy's error
/// ([`BitsError::CertDateInvalid`], [`BitsError::UnknownCa`], …). The
/// error comes back from [`bits_core::Transport::send`] unchanged.
///
/// # Security
/// The transport keeps one connection pool per [`ConnectionPolicy`], so a
/// connection made here under one policy is never reused under another. A
/// backend that keeps its own TLS session cache must key it by the policy
/// too (a resumed session skips certificate verification).
pub trait TlsConnect: Send + Sync + 'static {
    /// The TLS stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Performs the handshake with `host` (a DNS name or an IP address, no
    /// brackets, no port) over `tcp`, verifying under `policy`.
    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<Self::Stream, BitsError>>;

    /// The chain the server presented on `stream`, DER, leaf first, as the
    /// server sent it (empty when the library does not tell).
    ///
    /// The transport hands it to [`ConnectionPolicy::check_server`] (pins,
    /// an embedder's validator) after a handshake under a policy that
    /// [`ConnectionPolicy::checks_server`], and `bits diagnose` shows it.
    /// A backend that returns less than the whole chain must refuse such
    /// policies in its `check_policy`.
    fn peer_chain(stream: &Self::Stream) -> Vec<Vec<u8>> {
        let _ = stream;
        Vec::new()
    }

    /// The application protocol the handshake on `stream` negotiated by
    /// ALPN (`b"h2"`, `b"http/1.1"`), or `None` when none was (the server
    /// ignored ALPN, or the backend cannot tell).
    ///
    /// A backend offers `h2` and `http/1.1`, in that order, on every
    /// handshake [`TlsConnect::connect`] makes (with an origin: the
    /// transport never speaks TLS to a proxy), and `http/1.1` alone when
    /// the policy asks for it ([`ConnectionPolicy::http1_only`]: the
    /// engine's choice for a job of one file). The transport speaks HTTP/2
    /// on the connection exactly when this is `h2`, and HTTP/1.1
    /// otherwise. ALPN changes nothing in how the server is verified: the
    /// same policy, the same checks, whichever protocol is chosen. A
    /// backend that cannot offer ALPN keeps this default (`None`) and so
    /// falls back to HTTP/1.1 quietly: a protocol choice, not a policy
    /// change.
    fn negotiated_alpn(stream: &Self::Stream) -> Option<Vec<u8>> {
        let _ = stream;
        None
    }

    /// The error a read or write failure on a connected stream stands
    /// for, when it is the backend's to say; `None` (the default) leaves it
    /// to the transport (`ConnectionReset`, `Timeout`, …).
    ///
    /// With TLS 1.3 the server judges the client's certificate after the
    /// client's handshake is complete, so a refusal (`certificate_required`,
    /// `unknown_ca`, …) arrives as an alert on the first read of the
    /// response: a backend maps it here to what the handshake would have
    /// failed with (`ClientCertNeeded`, `SecureFailure`;
    /// `docs/spec/http-options.md`, "Client certificate"). Called for every
    /// failed read or write of a TLS stream, so it must be cheap and must
    /// answer `None` for anything that is not the backend's own.
    fn classify_io(error: &io::Error) -> Option<BitsError> {
        let _ = error;
        None
    }
}

/// A [`TlsConnect`] that refuses every handshake with `E_NOTIMPL`: the TLS
/// side of [`crate::PlainHttp`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTls;

impl TlsConnect for NoTls {
    type Stream = TcpStream;

    fn connect(
        &self,
        host: &str,
        _tcp: TcpStream,
        _policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<TcpStream, BitsError>> {
        let what = format!("https to {host}: this transport has no TLS");
        Box::pin(async move { Err(BitsError::NotImplemented { what }) })
    }
}
