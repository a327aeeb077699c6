//! The HTTP side of `bits serve`: each request a packet ([MC-BUP]) or a
//! plain `GET`/`HEAD` of a finished file, answered over any stream (the
//! caller adds TLS).
//!
//! - `BITS_POST` with `BITS-Packet-Type` `Ping`, `Create-Session`,
//!   `Fragment`, `Close-Session` or `Cancel-Session` (case-insensitive):
//!   every answer is an Ack (`BITS-Packet-Type: Ack`, `Content-Length`),
//!   carrying `BITS-Error-Code` and `BITS-Error-Context: 0x5` when its
//!   status is not 200, and `BITS-Received-Content-Range` after a fragment
//!   or a gap (416).
//! - The packets of one session are handled one at a time.
//! - Upload-reply ([`Server::with_reply_command`]): the last fragment's Ack
//!   carries `BITS-Reply-URL`, `/.bits-reply/ID` on this server.
//! - `GET`/`HEAD` of a file under the root, with one `Range`
//!   (`bytes=a-b`, `a-`, `-n`) and `If-Range` against the file's `ETag`;
//!   partial uploads and the server's own files are never served.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::error::ServeError;
use crate::session::{ContentRange, Sessions};
use crate::tls::Acceptor;

/// The BITS 1.5 upload protocol, the one this server speaks.
pub const PROTOCOL: &str = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

/// The answers of `bits serve`, shared by its connections.
#[derive(Debug)]
pub struct Server {
    sessions: Sessions,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    reply_command: Option<PathBuf>,
    reply_timeout: Duration,
    host_id: Option<HostId>,
}

/// How long a reply command may run by default (choice: a reply is a
/// short answer, and the client's packet waits for it).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a Create-Session Ack says of the host later packets go to.
#[derive(Debug, Clone)]
struct HostId {
    host: HeaderValue,
    fallback: Option<HeaderValue>,
}

/// Where replies are served: `/.bits-reply/ID/UPLOAD-PATH` (the session id
/// is the capability, the upload's path says where its files are; the
/// server's own files are never served otherwise). `/.bits-reply/ID`, the
/// form of earlier versions, is still served (found by a walk of the root).
const REPLY_PREFIX: &str = "/.bits-reply/";

/// A response body: nothing, or a span of a file read as it is sent.
#[derive(Debug)]
pub struct ServeBody(Inner);

#[derive(Debug)]
enum Inner {
    Empty,
    File { file: tokio::fs::File, left: u64 },
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Inner::File { file, left } = &mut self.get_mut().0 else {
            return Poll::Ready(None);
        };
        if *left == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; (*left).min(64 << 10) as usize];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file got shorter while it was sent",
                    ))));
                }
                *left -= n as u64;
                buf.truncate(n);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Inner::Empty | Inner::File { left: 0, .. })
    }

    fn size_hint(&self) -> SizeHint {
        match self.0 {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::File { left, .. } => SizeHint::with_exact(left),
        }
    }
}

/// A fragment being written: logs the bytes it wrote when its handling
/// ends before its Ack, however it ends (a body error, a local error, or
/// hyper dropping the handler when the connection dies mid-body), so the
/// log counts every byte written (`written=`, as the Ack's line does).
struct CutShort<'a> {
    writer: Option<crate::session::FragmentWriter>,
    id: &'a str,
}

impl Drop for CutShort<'_> {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            tracing::debug!(session = %self.id, written = writer.written(), "fragment cut short");
        }
    }
}

fn empty() -> ServeBody {
    ServeBody(Inner::Empty)
}

impl Server {
    /// A server of `sessions` (and of the finished files under their root).
    pub fn new(sessions: Sessions) -> Server {
        Server {
            sessions,
            locks: Mutex::default(),
            reply_command: None,
            reply_timeout: REPLY_TIMEOUT,
            host_id: None,
        }
    }

    /// Server farms ([MC-BUP] `BITS-Host-Id`): every Create-Session Ack
    /// names `host` (this server's own name or address behind a load
    /// balancer), and clients send the session's later packets there, on
    /// the URL's scheme, port and path; `fallback` is how long a client
    /// keeps trying it before it returns to the URL's own host
    /// (`BITS-Host-Id-Fallback-Timeout`, whole seconds; without it a client
    /// never falls back).
    ///
    /// # Errors
    /// `E_INVALIDARG` when `host` is not a header value.
    pub fn with_host_id(mut self, host: &str, fallback: Option<Duration>) -> Result<Server, ServeError> {
        let host = HeaderValue::from_str(host)
            .ok()
            .filter(|_| !host.is_empty())
            .ok_or_else(|| ServeError::invalid(format!("host id {host:?} is not a host name")))?;
        let fallback = fallback.map(|f| HeaderValue::from(f.as_secs()));
        self.host_id = Some(HostId { host, fallback });
        Ok(self)
    }

    /// Upload-reply: on a session's last fragment, `program` runs with the
    /// uploaded file's path as its one argument (the file is whole and
    /// synced, not yet at its destination); its standard output is the
    /// reply, served at the `BITS-Reply-URL` of that fragment's Ack until
    /// the session closes. A failure (it cannot start, or exits non-zero)
    /// is a 500 Ack with context 0x7, and the next try runs it again.
    #[must_use]
    pub fn with_reply_command(mut self, program: PathBuf) -> Server {
        self.reply_command = Some(program);
        self
    }

    /// How long the reply command may run ([`REPLY_TIMEOUT`] unless set):
    /// beyond, it is killed and the fragment's Ack is the 500 of a failed
    /// command.
    #[must_use]
    pub fn with_reply_timeout(mut self, timeout: Duration) -> Server {
        self.reply_timeout = timeout;
        self
    }

    /// Accepts connections on `listener` until the task is dropped (over
    /// TLS when `tls` is given, each handshake in its connection's task),
    /// and deletes idle sessions every ten minutes.
    pub async fn run(self: Arc<Self>, listener: TcpListener, tls: Option<Acceptor>) {
        let expiry = Arc::clone(&self);
        let _sweeper = AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let gone = expiry.sessions.expire(SystemTime::now());
                if gone > 0 {
                    tracing::info!(sessions = gone, "idle sessions deleted");
                }
            }
        }));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tracing::debug!(%peer, "connection");
            let server = Arc::clone(&self);
            match tls.clone() {
                None => {
                    tokio::spawn(server.serve_connection(tcp));
                }
                Some(tls) => {
                    tokio::spawn(async move {
                        match tls.accept(tcp).await {
                            Ok(stream) => server.serve_connection_https(stream).await,
                            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        }
                    });
                }
            }
        }
    }

    /// Serves one connection (plain TCP, or a TLS stream the caller
    /// accepted) until the client closes it.
    pub async fn serve_connection<S>(self: Arc<Self>, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.connection(io, false).await;
    }

    /// [`Server::serve_connection`] for a TLS stream: reply URLs say
    /// `https`.
    pub async fn serve_connection_https<S>(self: Arc<Self>, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.connection(io, true).await;
    }

    async fn connection<S>(self: Arc<Self>, io: S, https: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| {
            let server = Arc::clone(&self);
            async move { Ok::<_, Infallible>(server.handle(req, https).await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(error = %e, "connection ended");
        }
    }

    /// The answer to one request (`https`: it came over TLS).
    pub async fn handle(&self, req: Request<Incoming>, https: bool) -> Response<ServeBody> {
        let path = req.uri().path().to_owned();
        match req.method().as_str() {
            "BITS_POST" => self.packet(&path, req, https).await,
            "GET" | "HEAD" => {
                self.file(&path, req.method() == Method::HEAD, req.headers())
                    .await
            }
            _ => {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                r.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("BITS_POST, GET, HEAD"),
                );
                r
            }
        }
    }

    async fn packet(&self, path: &str, req: Request<Incoming>, https: bool) -> Response<ServeBody> {
        let headers = req.headers().clone();
        let kind = text(&headers, "bits-packet-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let id = text(&headers, "bits-session-id").map(str::to_owned);
        let result = match (kind.as_str(), &id) {
            ("ping", _) => Ok(ack(None)),
            ("create-session", _) => self.create(path, &headers),
            ("fragment" | "close-session" | "cancel-session", None) => Err(ServeError::invalid(format!(
                "a {kind} packet without BITS-Session-Id"
            ))),
            ("fragment", Some(id)) => {
                let lock = self.lock(id);
                let _one_at_a_time = lock.lock().await;
                let mut body = req.into_body();
                let answer = self.fragment(path, id, &headers, &mut body, https).await;
                if answer.is_err() {
                    drain(&mut body, &headers).await;
                }
                answer
            }
            ("close-session", Some(id)) => {
                let lock = self.lock(id);
                let _one_at_a_time = lock.lock().await;
                self.sessions.close(path, id).map(|_| ack(Some(id)))
            }
            ("cancel-session", Some(id)) => {
                let lock = self.lock(id);
                let _one_at_a_time = lock.lock().await;
                self.sessions.cancel(path, id).map(|()| ack(Some(id)))
            }
            ("", _) => Err(ServeError::invalid("a BITS_POST without BITS-Packet-Type")),
            (other, _) => Err(ServeError::invalid(format!("unknown packet type {other:?}"))),
        };
        result.unwrap_or_else(|e| {
            tracing::info!(%path, packet = %kind, status = e.status, code = %e.code, "{}", e.what);
            refusal(&e, id.as_deref())
        })
    }

    fn create(&self, path: &str, headers: &HeaderMap) -> Result<Response<ServeBody>, ServeError> {
        let offered = text(headers, "bits-supported-protocols").unwrap_or_default();
        if !offered
            .split_whitespace()
            .any(|p| p.eq_ignore_ascii_case(PROTOCOL))
        {
            return Err(ServeError::invalid(format!(
                "BITS-Supported-Protocols {offered:?} does not offer {PROTOCOL}"
            )));
        }
        let id = self.sessions.create(path)?;
        let mut r = ack(Some(&id));
        let h = r.headers_mut();
        h.insert("bits-protocol", HeaderValue::from_static(PROTOCOL));
        h.insert("accept-encoding", HeaderValue::from_static("Identity"));
        if let Some(host_id) = &self.host_id {
            h.insert("bits-host-id", host_id.host.clone());
            if let Some(f) = &host_id.fallback {
                h.insert("bits-host-id-fallback-timeout", f.clone());
            }
        }
        Ok(r)
    }

    async fn fragment(
        &self,
        path: &str,
        id: &str,
        headers: &HeaderMap,
        body: &mut Incoming,
        https: bool,
    ) -> Result<Response<ServeBody>, ServeError> {
        if let Some(encoding) = text(headers, CONTENT_ENCODING.as_str()) {
            if !encoding.eq_ignore_ascii_case("identity") {
                return Err(ServeError::invalid(format!(
                    "Content-Encoding {encoding:?}; only identity"
                )));
            }
        }
        let range = ContentRange::parse(
            text(headers, CONTENT_RANGE.as_str())
                .ok_or_else(|| ServeError::invalid("a fragment without Content-Range"))?,
        )?;
        let length = match text(headers, CONTENT_LENGTH.as_str()) {
            Some(n) => Some(
                n.parse::<u64>()
                    .map_err(|_| ServeError::invalid(format!("Content-Length {n:?}")))?,
            ),
            None => None,
        };
        let mut cut = CutShort {
            writer: Some(self.sessions.fragment(path, id, range, length)?),
            id,
        };
        let writer = cut.writer.as_mut().expect("just set");
        while let Some(frame) = body.frame().await {
            // What arrived is kept; the client learns the offset from its
            // next packet's Ack (and `cut` logs what was written).
            let frame = frame.map_err(|e| ServeError::invalid(format!("the fragment's body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                writer.write(&data)?;
            }
        }
        let done = cut.writer.take().expect("still here").finish()?;
        tracing::debug!(
            session = %id,
            range = %format!("{}-{}/{}", range.first, range.last, range.total),
            written = done.written,
            received = done.received,
            "fragment"
        );
        let mut r = ack(Some(id));
        r.headers_mut()
            .insert("bits-received-content-range", HeaderValue::from(done.received));
        if let (true, Some(program)) = (done.complete, &self.reply_command) {
            self.make_reply(path, id, program).await?;
            let host = text(headers, "host").unwrap_or_default();
            let scheme = if https { "https" } else { "http" };
            let url = if host.is_empty() {
                format!("{REPLY_PREFIX}{id}{path}")
            } else {
                format!("{scheme}://{host}{REPLY_PREFIX}{id}{path}")
            };
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert("bits-reply-url", v);
            }
        }
        Ok(r)
    }

    /// Runs the reply command on session `id`'s whole upload, once: its
    /// output goes to the session's reply file (written beside, renamed).
    async fn make_reply(&self, path: &str, id: &str, program: &Path) -> Result<(), ServeError> {
        let Some((upload, reply)) = self.sessions.whole(path, id)? else {
            return Err(ServeError::invalid("a reply before the upload is whole"));
        };
        if reply.exists() {
            return Ok(());
        }
        let partial = reply.with_extension("reply-new");
        let out = std::fs::File::create(&partial).map_err(|e| ServeError::io("creating the reply", &e))?;
        let run = tokio::process::Command::new(program)
            .arg(&upload)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .kill_on_drop(true)
            .status();
        // On timeout the dropped future kills the command (kill_on_drop).
        let Ok(status) = tokio::time::timeout(self.reply_timeout, run).await else {
            let _ = std::fs::remove_file(&partial);
            return Err(ServeError::application(format!(
                "the reply command {} did not finish within {} s",
                program.display(),
                self.reply_timeout.as_secs_f64()
            )));
        };
        match status {
            Ok(s) if s.success() => {
                std::fs::rename(&partial, &reply).map_err(|e| ServeError::io("keeping the reply", &e))
            }
            Ok(s) => {
                let _ = std::fs::remove_file(&partial);
                Err(ServeError::application(format!(
                    "the reply command {} exited with {s}",
                    program.display()
                )))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(ServeError::application(format!(
                    "the reply command {} did not start: {e}",
                    program.display()
                )))
            }
        }
    }

    async fn file(&self, path: &str, head: bool, headers: &HeaderMap) -> Response<ServeBody> {
        let status = |code: StatusCode| {
            let mut r = Response::new(empty());
            *r.status_mut() = code;
            r
        };
        let file = match path.strip_prefix(REPLY_PREFIX) {
            // The id as sent: its braces percent-encoded by most clients.
            Some(rest) => match rest.split_once('/') {
                Some((id, upload)) => crate::root::percent_decode(id)
                    .and_then(|id| self.sessions.reply_at(&format!("/{upload}"), &id)),
                None => crate::root::percent_decode(rest).and_then(|id| self.sessions.reply_of(&id)),
            },
            None => self.sessions.root().resolve(path).ok(),
        };
        let Some(file) = file else {
            return status(StatusCode::NOT_FOUND);
        };
        let Ok(mut f) = tokio::fs::File::open(&file).await else {
            return status(StatusCode::NOT_FOUND);
        };
        let Ok(meta) = f.metadata().await else {
            return status(StatusCode::NOT_FOUND);
        };
        if !meta.is_file() {
            return status(StatusCode::NOT_FOUND);
        }
        let size = meta.len();
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let etag = format!("\"{size:x}-{:x}\"", modified.as_nanos());
        let if_range_ok = text(headers, IF_RANGE.as_str()).is_none_or(|v| v == etag);
        let span = match text(headers, RANGE.as_str()).filter(|_| if_range_ok) {
            None => None,
            Some(range) => match byte_range(range, size) {
                Some(span) => Some(span),
                None => {
                    let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
                    r.headers_mut().insert(
                        CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
                    );
                    return r;
                }
            },
        };
        let (first, len) = span.map_or((0, size), |(a, b)| (a, b - a + 1));
        let mut r = if head {
            Response::new(empty())
        } else {
            if f.seek(SeekFrom::Start(first)).await.is_err() {
                return status(StatusCode::INTERNAL_SERVER_ERROR);
            }
            Response::new(ServeBody(Inner::File { file: f, left: len }))
        };
        let h = r.headers_mut();
        h.insert(ETAG, HeaderValue::from_str(&etag).expect("ASCII"));
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if let Some((a, b)) = span {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")).expect("ASCII"),
            );
        }
        r
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the locks nobody holds, so ended sessions leave nothing.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }
}

/// Ends the sweeper when [`Server::run`] ends (its task dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One `Range: bytes=…` spec against a file of `size` bytes: the
/// inclusive span, or `None` when unsatisfiable or malformed.
fn byte_range(text: &str, size: u64) -> Option<(u64, u64)> {
    let spec = text.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let first: u64 = a.parse().ok()?;
    let last = if b.is_empty() {
        size - 1
    } else {
        b.parse::<u64>().ok()?.min(size - 1)
    };
    (first <= last && first < size).then_some((first, last))
}

/// The longest body of a refused fragment that [`drain`] reads.
const DRAIN_LIMIT: u64 = 16 << 20;
/// How long [`drain`] reads at most.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Reads and drops what is left of a refused fragment's body (a session
/// unknown, a gap, ...: refused before its bytes were read), when its
/// `Content-Length` is at most [`DRAIN_LIMIT`], for at most
/// [`DRAIN_TIME`]. The client is still sending it: had the connection
/// closed with bytes unread, the client would get a reset while it writes
/// and never read the Ack (a lost session would be a network error, not
/// `BG_E_SESSION_NOT_FOUND`). A longer or unsized body is not read: the
/// connection closes.
async fn drain(body: &mut Incoming, headers: &HeaderMap) {
    let length = text(headers, CONTENT_LENGTH.as_str()).and_then(|n| n.parse::<u64>().ok());
    if length.is_none_or(|n| n > DRAIN_LIMIT) {
        return;
    }
    let read = async { while let Some(Ok(_)) = body.frame().await {} };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A 200 Ack.
fn ack(id: Option<&str>) -> Response<ServeBody> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert("bits-packet-type", HeaderValue::from_static("Ack"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    if let Some(v) = id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert("bits-session-id", v);
    }
    r
}

/// The Ack of a refused packet.
fn refusal(e: &ServeError, id: Option<&str>) -> Response<ServeBody> {
    let mut r = ack(id);
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        "bits-error-code",
        HeaderValue::from_str(&e.code.to_string()).expect("ASCII"),
    );
    h.insert(
        "bits-error-context",
        HeaderValue::from_str(&format!("{:#x}", e.context)).expect("ASCII"),
    );
    if let Some(received) = e.received {
        h.insert("bits-received-content-range", HeaderValue::from(received));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=90-500", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-500", 100), Some((0, 99)));
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-0",
            "bytes=x-",
        ] {
            assert_eq!(byte_range(bad, 100), None, "{bad}");
        }
        assert_eq!(byte_range("bytes=0-", 0), None);
    }
}
