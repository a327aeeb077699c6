//! The seam between the engine and the network: one HTTP request at a time,
//! under a job's [`ConnectionPolicy`]. Backends (OpenSSL, native-tls, …)
//! implement [`Transport`]; bits-core itself has no TLS dependency.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
pub use http::{Method, Version};
use tokio::io::{AsyncRead, ReadBuf};
use url::Url;

use crate::error::BitsError;
use crate::flags::SecurityFlags;
use crate::policy::ConnectionPolicy;

/// One HTTP request.
#[derive(Debug)]
pub struct Request {
    /// The method: GET for downloads, unless the job sets another
    /// ([`crate::Job::set_http_method`]).
    pub method: Method,
    /// An absolute http or https URL.
    pub url: Url,
    /// Extra headers (Range, If-Range, Authorization…). The transport adds
    /// Host and User-Agent, and Content-Length for a body of known length.
    pub headers: HeaderMap,
    /// The body, streamed; `None` sends none.
    pub body: Option<RequestBody>,
    /// What the connection must be made under: the transport verifies the
    /// server under exactly this policy and never lets a connection made
    /// under another one carry the request.
    pub policy: ConnectionPolicy,
}

impl Request {
    /// A request without a body.
    pub fn new(method: Method, url: Url, policy: ConnectionPolicy) -> Request {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            policy,
        }
    }

    /// A GET of `url` under `policy`.
    pub fn get(url: Url, policy: ConnectionPolicy) -> Request {
        Request::new(Method::GET, url, policy)
    }

    /// A HEAD of `url` under `policy`.
    pub fn head(url: Url, policy: ConnectionPolicy) -> Request {
        Request::new(Method::HEAD, url, policy)
    }

    /// This request with `body`.
    #[must_use]
    pub fn with_body(mut self, body: RequestBody) -> Request {
        self.body = Some(body);
        self
    }
}

/// Where the chunks of a streamed request body come from.
pub trait BodySource: Send {
    /// The next chunk, `None` at the end, or the error that ends the body.
    fn poll_chunk(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BitsError>>>;
}

/// A request body: chunks from a [`BodySource`], and its length when known
/// (sent as `Content-Length`; unknown is sent chunked).
pub struct RequestBody {
    length: Option<u64>,
    source: Pin<Box<dyn BodySource>>,
}

impl RequestBody {
    /// A body of the chunks `source` gives, `length` bytes in all when
    /// known. A source that ends before `length` fails the request.
    pub fn from_source(length: Option<u64>, source: impl BodySource + 'static) -> RequestBody {
        RequestBody {
            length,
            source: Box::pin(source),
        }
    }

    /// A body held in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> RequestBody {
        let bytes = bytes.into();
        RequestBody::from_source(Some(bytes.len() as u64), Once(Some(bytes)))
    }

    /// A body read from `reader` (a file at the offset to send from) until
    /// `length` bytes are read, or its end when `length` is `None`.
    pub fn from_reader(reader: impl AsyncRead + Send + 'static, length: Option<u64>) -> RequestBody {
        RequestBody::from_source(
            length,
            Reader {
                reader: Box::pin(reader),
                left: length,
            },
        )
    }

    /// `len` bytes of `file` from `offset`, read ahead in tokio's blocking
    /// pool a chunk at a time (the next chunk is read while the transport
    /// sends this one). A file that ends before fails the request.
    ///
    /// Call it within a tokio runtime: its reads are spawned there.
    pub fn from_file_span(file: std::fs::File, offset: u64, len: u64) -> RequestBody {
        RequestBody::from_source(
            Some(len),
            FileSpan {
                file: Arc::new(file),
                next: offset,
                left: len,
                reading: None,
            },
        )
    }

    /// The length, when known.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The next chunk: `None` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BitsError>>> {
        self.source.as_mut().poll_chunk(cx)
    }

    /// The next chunk: `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, BitsError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// One chunk, then the end.
struct Once(Option<Bytes>);

impl BodySource for Once {
    fn poll_chunk(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BitsError>>> {
        Poll::Ready(self.get_mut().0.take().filter(|b| !b.is_empty()).map(Ok))
    }
}

/// A span of a file, read ahead: [`RequestBody::from_file_span`].
struct FileSpan {
    file: Arc<std::fs::File>,
    /// The offset of the next chunk to read.
    next: u64,
    /// Bytes not yet asked for.
    left: u64,
    /// The chunk being read.
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

/// The chunk a [`FileSpan`] reads at once: large enough that a hop to the
/// blocking pool costs nothing next to it, small enough to keep two in
/// memory.
const FILE_CHUNK: u64 = 256 << 10;

impl FileSpan {
    /// Starts reading the next chunk, if any is left.
    fn read_ahead(&mut self) {
        if self.left == 0 {
            return;
        }
        let n = self.left.min(FILE_CHUNK);
        let (file, at) = (self.file.clone(), self.next);
        self.next += n;
        self.left -= n;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, at)?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl BodySource for FileSpan {
    fn poll_chunk(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BitsError>>> {
        let this = self.get_mut();
        if this.reading.is_none() {
            this.read_ahead();
        }
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready(read) = Pin::new(reading).poll(cx) else {
            return Poll::Pending;
        };
        this.reading = None;
        match read {
            Ok(Ok(chunk)) => {
                this.read_ahead();
                Poll::Ready(Some(Ok(chunk)))
            }
            Ok(Err(e)) => Poll::Ready(Some(Err(BitsError::local("read", "the request body", e)))),
            Err(e) => Poll::Ready(Some(Err(BitsError::Internal {
                what: format!("reading the request body: {e}"),
            }))),
        }
    }
}

/// Reads of an [`AsyncRead`], at most `left` bytes.
struct Reader {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    left: Option<u64>,
}

/// The largest chunk a [`Reader`] reads at once.
const READ_CHUNK: usize = 64 << 10;

impl BodySource for Reader {
    fn poll_chunk(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BitsError>>> {
        let this = self.get_mut();
        let want = this
            .left
            .map_or(READ_CHUNK, |left| left.min(READ_CHUNK as u64) as usize);
        if want == 0 {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::zeroed(want);
        let mut read = ReadBuf::new(&mut buf);
        match this.reader.as_mut().poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(BitsError::local("read", "the request body", e)))),
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    // The end: early when a length was promised.
                    return Poll::Ready(this.left.map(|left| {
                        Err(BitsError::local(
                            "read",
                            "the request body",
                            std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("it ended {left} bytes early"),
                            ),
                        ))
                    }));
                }
                if let Some(left) = &mut this.left {
                    *left -= n as u64;
                }
                buf.truncate(n);
                Poll::Ready(Some(Ok(buf.freeze())))
            }
        }
    }
}

/// A streaming response body.
#[async_trait]
pub trait BodyStream: Send + fmt::Debug {
    /// The next chunk, or `None` at the end. A connection that closes before
    /// the promised length is an error (`ConnectionReset`), never a short
    /// success.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError>;

    /// How the connection carrying this body yields to other traffic, when
    /// it does (a [`ConnectionPolicy::yielding`] policy's); `None` for a
    /// connection that takes the bandwidth it can get, and by default.
    fn yielding(&self) -> Option<YieldStatus> {
        None
    }
}

/// Which controller keeps a yielding connection out of other traffic's
/// way (`network.md`, "Yielding to other traffic"; `bits info` says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum YieldController {
    /// The receive window limited with `TCP_WINDOW_CLAMP` from a
    /// receiver-side LEDBAT controller (the kernel clamps mid-stream:
    /// Linux 6.7 and later).
    WindowClamp,
    /// The same controller's window turned into paced reads (a kernel
    /// that cannot clamp mid-stream).
    PacedReads,
}

impl YieldController {
    /// The name `bits` shows: `window-clamp` or `paced-reads`.
    pub const fn as_str(self) -> &'static str {
        match self {
            YieldController::WindowClamp => "window-clamp",
            YieldController::PacedReads => "paced-reads",
        }
    }
}

impl fmt::Display for YieldController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A yielding connection's controller and its current limit, shared with
/// the connection (clones see the same, live values): what the engine or
/// `bits info` reads while a body streams.
#[derive(Clone, Debug)]
pub struct YieldStatus {
    controller: YieldController,
    limit: Arc<std::sync::atomic::AtomicU64>,
}

impl YieldStatus {
    /// A status for `controller` with a limit of `limit` bytes.
    pub fn new(controller: YieldController, limit: u64) -> Self {
        YieldStatus {
            controller,
            limit: Arc::new(std::sync::atomic::AtomicU64::new(limit)),
        }
    }

    /// The controller in use.
    pub fn controller(&self) -> YieldController {
        self.controller
    }

    /// The current limit, in bytes: the window clamped to (as the kernel
    /// reports it back) or the paced window (bytes per RTT).
    pub fn limit(&self) -> u64 {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new current limit (the connection's).
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An HTTP response: any status (a 404 or a 302 is a response, not an error).
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The HTTP version that carried it: `HTTP_11` (or `HTTP_10`), or
    /// `HTTP_2` when the connection negotiated `h2` by ALPN.
    pub version: Version,
    /// The body, streamed.
    pub body: Box<dyn BodyStream>,
}

impl Response {
    /// The protocol that carried the response by its ALPN name
    /// (`http/1.1`, `h2`; `http/1.0`, `http/0.9`, `h3`), as
    /// [`crate::FileInfo::protocol`] records it.
    pub fn protocol(&self) -> &'static str {
        protocol_name(self.version)
    }

    /// How the connection that carried it yields to other traffic
    /// ([`BodyStream::yielding`]).
    pub fn yielding(&self) -> Option<YieldStatus> {
        self.body.yielding()
    }
}

/// `version` by its ALPN protocol id (RFC 7301's registry): `http/1.1`,
/// `h2`, …; an unknown version is `http/1.1`, what hyper speaks unless
/// told otherwise.
pub fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "http/0.9",
        Version::HTTP_10 => "http/1.0",
        Version::HTTP_2 => "h2",
        Version::HTTP_3 => "h3",
        _ => "http/1.1",
    }
}

/// A way to issue HTTP requests under a BITS [`ConnectionPolicy`].
///
/// Implementations must:
/// - never follow redirects (the engine applies the job's redirect policy);
/// - verify the server exactly as [`Request::policy`] says, and report a
///   failure as the policy's error ([`BitsError::CertDateInvalid`],
///   [`BitsError::UnknownCa`], …), before any HTTP request reaches the
///   server;
/// - never reuse a connection or TLS session made under another policy;
/// - refuse in [`Transport::check_policy`], with `E_NOTIMPL`, every policy
///   they cannot honour exactly. Never ignore more than asked.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// The backend's name (`openssl`, `native`, …).
    fn name(&self) -> &str;

    /// `Ok` when this transport honours `policy` exactly; `E_NOTIMPL`
    /// ([`BitsError::NotImplemented`]) otherwise. Cheap: it decides from the
    /// policy alone, without connecting.
    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError>;

    /// Sends one request and returns the response headers; the body streams.
    async fn send(&self, request: Request) -> Result<Response, BitsError>;
}

/// A shareable transport.
pub type SharedTransport = Arc<dyn Transport>;

/// The certificate-flag values (0x00..=0x1F) that `check` accepts (a
/// transport's [`Transport::check_policy`], or a backend's own check), for
/// a CLI or docs to print before any transfer.
pub fn supported_cert_flags(check: impl Fn(&ConnectionPolicy) -> Result<(), BitsError>) -> Vec<u32> {
    (0..=SecurityFlags::CERT_MASK)
        .filter(|&bits| {
            SecurityFlags::new(bits)
                .map(|f| check(&ConnectionPolicy::new(f)).is_ok())
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + ?Sized>() {}

    #[test]
    fn transport_is_object_safe_send_and_sync() {
        assert_send_sync::<dyn Transport>();
        let t: Box<dyn Transport> = Box::new(MockTransport::new());
        let _ = format!("{t:?}");
    }

    #[test]
    fn supported_cert_flags_asks_check_policy() {
        let mut t = MockTransport::new();
        t.expect_check_policy().returning(|p| {
            if p.flags().bits() & !0x2 == 0 {
                Ok(())
            } else {
                Err(BitsError::NotImplemented { what: "x".into() })
            }
        });
        assert_eq!(supported_cert_flags(|p| t.check_policy(p)), vec![0, 2]);
    }

    fn drain(mut body: RequestBody) -> Result<Vec<u8>, BitsError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut all = Vec::new();
            while let Some(chunk) = body.next_chunk().await {
                all.extend_from_slice(&chunk?);
            }
            Ok(all)
        })
    }

    #[test]
    fn bodies_from_bytes_and_readers() {
        let body = RequestBody::from_bytes(&b"hello"[..]);
        assert_eq!(body.length(), Some(5));
        assert_eq!(drain(body).unwrap(), b"hello");
        assert!(drain(RequestBody::from_bytes(Bytes::new())).unwrap().is_empty());
        let data: Vec<u8> = (0..200_000u32).map(|n| n as u8).collect();
        let body = RequestBody::from_reader(std::io::Cursor::new(data.clone()), Some(150_000));
        assert_eq!(drain(body).unwrap(), &data[..150_000]);
        let body = RequestBody::from_reader(std::io::Cursor::new(data.clone()), None);
        assert_eq!(body.length(), None);
        assert_eq!(drain(body).unwrap(), data);
        // A reader shorter than the length promised fails the body.
        let short = RequestBody::from_reader(std::io::Cursor::new(vec![1u8; 10]), Some(11));
        assert!(drain(short).is_err());
    }
}
