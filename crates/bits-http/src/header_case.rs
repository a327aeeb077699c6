//! Header names on the wire in the case the protocols' texts write them.
//!
//! HTTP field names are case-insensitive (RFC 9110 §5.1), and hyper writes
//! every name lower case. [MC-BUP] writes its packets' headers as
//! `BITS-Packet-Type`, `BITS-Session-Id`, ..., and an upload client is
//! asked to send them so (issue 17: a Windows server must understand
//! them), so HTTP/1.1 requests carry their names in the case of [`NAMES`]
//! (HTTP/2 sends every name lower case by its own rule).
//!
//! How: hyper writes a request's names in the case of a `HeaderCaseMap`
//! in its extensions. That type is private to hyper, which fills one only
//! when it parses a message with `preserve_header_case`; so hyper parses,
//! once per process and in memory, a response that names every header of
//! [`NAMES`], and each request gets a copy of that response's extensions.
//! A name not in the list goes out lower case, as before.

use bytes::Bytes;
use http::Extensions;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

/// The names sent in this case: [MC-BUP]'s packet headers, and the
/// standard ones bits sends, as their RFCs write them.
pub const NAMES: &[&str] = &[
    "BITS-Packet-Type",
    "BITS-Session-Id",
    "BITS-Supported-Protocols",
    "Content-Name",
    "Content-Range",
    "Content-Length",
    "Content-Encoding",
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Range",
    "If-Range",
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
];

/// Extensions that make hyper write [`NAMES`] in their case; empty when
/// hyper could not make them (names then go out lower case).
pub(crate) async fn extensions() -> Extensions {
    static CASES: OnceCell<Extensions> = OnceCell::const_new();
    CASES
        .get_or_init(|| async {
            // In memory it takes microseconds; a bound all the same, so no
            // request could ever wait on it.
            let parsed = tokio::time::timeout(std::time::Duration::from_secs(5), parse()).await;
            parsed
                .unwrap_or_else(|_| Err("timed out".into()))
                .unwrap_or_else(|e| {
                    tracing::debug!("no header case map ({e}): names go out lower case");
                    Extensions::new()
                })
        })
        .await
        .clone()
}

/// hyper's client parses a response naming every header of [`NAMES`],
/// served from memory; its extensions hold the case of each name.
async fn parse() -> Result<Extensions, String> {
    use tokio::io::AsyncReadExt;
    let (ours, mut theirs) = tokio::io::duplex(16 << 10);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(ours))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = tokio::spawn(sender.send_request(http::Request::new(Empty::new())));
    // The request's head first (an answer before it would be refused),
    // then the answer.
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = theirs.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the request ended early".into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for name in NAMES.iter().filter(|n| **n != "Content-Length") {
        head.push_str(name);
        head.push_str(": x\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    theirs
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    driver.abort();
    Ok(response.map_err(|e| e.to_string())?.extensions().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's names written by a hyper client connection with the
    /// extensions, read back raw.
    async fn names_on_the_wire(headers: &[(&str, &str)]) -> Vec<String> {
        use tokio::io::AsyncReadExt;
        let (ours, mut theirs) = tokio::io::duplex(16 << 10);
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(ours))
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        let mut request = http::Request::new(Empty::new());
        for (n, v) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        request.extensions_mut().extend(extensions().await);
        let _pending = tokio::spawn(sender.send_request(request));
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = theirs.read(&mut buf).await.unwrap();
            assert!(n > 0, "the head ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        driver.abort();
        String::from_utf8_lossy(&seen)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn names_go_out_in_their_case_and_others_lower_case() {
        let names = names_on_the_wire(&[
            ("bits-packet-type", "Fragment"),
            ("bits-session-id", "{1}"),
            ("content-range", "bytes 0-0/1"),
            ("x-other", "1"),
        ])
        .await;
        assert_eq!(
            names,
            ["BITS-Packet-Type", "BITS-Session-Id", "Content-Range", "x-other"]
        );
    }
}
