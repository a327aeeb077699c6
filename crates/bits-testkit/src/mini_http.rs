//! A deliberately tiny HTTP/1.1 request reader and response writer, shared by
//! the CRL server (one request per connection, `Connection: close`) and the
//! TLS server (keep-alive, so a client's connection pool gets exercised).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent (`/file?case=3`).
    pub target: String,
    /// The value of the `Range` header, if any.
    pub range: Option<String>,
    /// The client sent `Connection: close` (or spoke HTTP/1.0).
    pub close: bool,
}

impl RequestHead {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Reads one request head; `Ok(None)` when the peer closed before sending one.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Option<RequestHead>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(&buf) {
            return parse_head(&buf[..end]).map(Some);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_head(head: &[u8]) -> io::Result<RequestHead> {
    let text = std::str::from_utf8(head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let mut close = parts.next() == Some("HTTP/1.0");
    let mut range = None;
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("range") {
            range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        range,
        close,
    })
}

/// Writes a complete response and closes the write side.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    extra_headers: &[(&str, String)],
    body: &[u8],
    send_body: bool,
) -> io::Result<()> {
    write_response_keep(s, status, extra_headers, body, send_body, false).await
}

/// Writes a complete response; unless `keep_alive`, says `Connection: close`
/// and closes the write side.
pub(crate) async fn write_response_keep<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    extra_headers: &[(&str, String)],
    body: &[u8],
    send_body: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n", body.len());
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    if send_body {
        s.write_all(body).await?;
    }
    s.flush().await?;
    if keep_alive {
        Ok(())
    } else {
        s.shutdown().await
    }
}

/// Resolves a `Range: bytes=a-b` header against a body of `len` bytes:
/// `Some(Ok((start, end_inclusive)))` for a satisfiable single range,
/// `Some(Err(()))` for an unsatisfiable one, `None` to ignore the header.
pub(crate) fn resolve_range(header: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if len == 0 {
        return Some(Err(()));
    }
    let range = if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: usize = a.parse().ok()?;
        let end = if b.is_empty() {
            len - 1
        } else {
            b.parse::<usize>().ok()?.min(len - 1)
        };
        if start >= len || start > end {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve_range("bytes=0-3", 10), Some(Ok((0, 3))));
        assert_eq!(resolve_range("bytes=5-", 10), Some(Ok((5, 9))));
        assert_eq!(resolve_range("bytes=-4", 10), Some(Ok((6, 9))));
        assert_eq!(resolve_range("bytes=8-100", 10), Some(Ok((8, 9))));
        assert_eq!(resolve_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(resolve_range("bytes=0-1,3-4", 10), None);
        assert_eq!(resolve_range("items=0-1", 10), None);
    }

    #[test]
    fn parses_a_head() {
        let h = parse_head(b"GET /file?case=1 HTTP/1.1\r\nHost: x\r\nrange: bytes=1-2").unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path(), "/file");
        assert_eq!(h.range.as_deref(), Some("bytes=1-2"));
        assert!(!h.close);
        assert!(parse_head(b"GET / HTTP/1.1\r\nConnection: close").unwrap().close);
        assert!(parse_head(b"GET / HTTP/1.0").unwrap().close);
    }
}
