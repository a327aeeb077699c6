//! [`PlainHttp`] (http:// only) and [`fetch_plain`] (one GET, for CRLs).

use std::time::Duration;

use async_trait::async_trait;
use bits_core::{BitsError, ConnectionPolicy, Request, Response, Transport};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use url::Url;

use crate::tls::NoTls;
use crate::transport::{HttpOptions, HttpTransport};

/// A [`Transport`] for `http://` URLs only, on the same plumbing as the TLS
/// backends. An `https` request is refused with `E_NOTIMPL`
/// ([`BitsError::NotImplemented`]) before anything is sent.
///
/// [`Transport::check_policy`] accepts every certificate policy (they
/// concern only https, which this transport never does) and refuses only
/// proxy settings that cannot be routed ([`crate::proxy::check`]). Its name
/// is `plain`.
#[derive(Clone, Debug)]
pub struct PlainHttp {
    inner: HttpTransport<NoTls>,
}

impl Default for PlainHttp {
    fn default() -> Self {
        PlainHttp::new()
    }
}

impl PlainHttp {
    /// With default [`HttpOptions`].
    pub fn new() -> Self {
        PlainHttp::with_options(HttpOptions::default())
    }

    /// With `options`.
    pub fn with_options(options: HttpOptions) -> Self {
        PlainHttp {
            inner: HttpTransport::new("plain", NoTls, |_| Ok(()), options),
        }
    }

    /// The underlying [`HttpTransport`] (for its connection counters).
    pub fn http(&self) -> &HttpTransport<NoTls> {
        &self.inner
    }
}

#[async_trait]
impl Transport for PlainHttp {
    fn name(&self) -> &str {
        "plain"
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        self.inner.check_policy(policy)
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        if request.url.scheme() == "https" {
            return Err(BitsError::NotImplemented {
                what: format!(
                    "{}: this transport has no TLS (use a TLS backend for https)",
                    request.url
                ),
            });
        }
        self.inner.send(request).await
    }
}

/// `Retry-After` in seconds, when the header holds a number of seconds (an
/// HTTP date gives `None`).
pub fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One plain-HTTP GET of `url` (no redirects followed), all within
/// `timeout`, the body at most `max_len` bytes. For downloading CRLs.
///
/// Errors: a scheme other than http (`UnsupportedScheme`; https is
/// `NotImplemented`), any status but 200 (`HttpStatus`, a 3xx included), a
/// body over `max_len` (`InvalidServerResponse`), and the network failures
/// of [`HttpTransport`].
pub async fn fetch_plain(url: &Url, timeout: Duration, max_len: usize) -> Result<Bytes, BitsError> {
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(BitsError::NotImplemented {
                what: format!("{url}: fetch_plain has no TLS"),
            })
        }
        other => {
            return Err(BitsError::UnsupportedScheme {
                scheme: other.to_owned(),
            })
        }
    }
    let options = HttpOptions {
        connect_timeout: timeout,
        headers_timeout: timeout,
        idle_timeout: timeout,
        pool_max_idle_per_host: 0,
        ..HttpOptions::default()
    };
    let transport = PlainHttp::with_options(options);
    let fetch = async {
        let mut response = transport
            .send(Request::get(url.clone(), ConnectionPolicy::default()))
            .await?;
        if response.status != 200 {
            return Err(BitsError::HttpStatus {
                status: response.status,
                retry_after: retry_after_secs(&response.headers),
            });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.body.next_chunk().await? {
            if body.len() + chunk.len() > max_len {
                return Err(BitsError::InvalidServerResponse {
                    what: format!("{url}: body larger than {max_len} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(result) => result,
        Err(_) => Err(BitsError::Timeout {
            what: format!("fetching {url} took longer than {}s", timeout.as_secs_f32()),
        }),
    }
}
