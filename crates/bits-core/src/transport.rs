//! The seam between the engine and the network: one HTTP request at a time,
//! under a job's security flags. Backends (OpenSSL, native-tls, …) implement
//! [`Transport`]; bits-core itself has no TLS dependency.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;
use url::Url;

use crate::error::BitsError;
use crate::flags::SecurityFlags;

/// The HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET: the body is the file (or part of it).
    Get,
    /// HEAD: headers only.
    Head,
}

/// One HTTP request.
#[derive(Clone, Debug)]
pub struct Request {
    /// GET or HEAD.
    pub method: Method,
    /// An absolute http or https URL.
    pub url: Url,
    /// Extra headers (Range, If-Range, Authorization…). The transport adds
    /// Host and User-Agent.
    pub headers: HeaderMap,
    /// The job's flags; the transport verifies the server under exactly the
    /// certificate part of them.
    pub flags: SecurityFlags,
}

impl Request {
    /// A GET of `url` under `flags`.
    pub fn get(url: Url, flags: SecurityFlags) -> Request {
        Request {
            method: Method::Get,
            url,
            headers: HeaderMap::new(),
            flags,
        }
    }

    /// A HEAD of `url` under `flags`.
    pub fn head(url: Url, flags: SecurityFlags) -> Request {
        Request {
            method: Method::Head,
            ..Request::get(url, flags)
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
}

/// An HTTP response: any status (a 404 or a 302 is a response, not an error).
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, streamed.
    pub body: Box<dyn BodyStream>,
}

/// A way to issue HTTP requests under BITS security flags.
///
/// Implementations must:
/// - never follow redirects (the engine applies the job's redirect policy);
/// - verify the server exactly as the certificate bits of
///   [`Request::flags`] say, and report a failure as the policy's error
///   ([`BitsError::CertDateInvalid`], [`BitsError::UnknownCa`], …), before
///   any HTTP request reaches the server;
/// - never reuse a connection or TLS session made under other flags;
/// - refuse in [`Transport::check_flags`], with `E_NOTIMPL`, every value they
///   cannot honour exactly. Never ignore more than asked.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// The backend's name (`openssl`, `native`, …).
    fn name(&self) -> &str;

    /// `Ok` when this transport honours `flags` exactly; `E_NOTIMPL`
    /// ([`BitsError::NotImplemented`]) otherwise.
    fn check_flags(&self, flags: SecurityFlags) -> Result<(), BitsError>;

    /// Sends one request and returns the response headers; the body streams.
    async fn send(&self, request: Request) -> Result<Response, BitsError>;
}

/// A shareable transport.
pub type SharedTransport = Arc<dyn Transport>;

/// The certificate-flag values (0x00..=0x1F) that `transport` honours, for a
/// CLI or docs to print before any transfer.
pub fn supported_cert_flags(transport: &dyn Transport) -> Vec<u32> {
    (0..=SecurityFlags::CERT_MASK)
        .filter(|&bits| {
            SecurityFlags::new(bits)
                .map(|f| transport.check_flags(f).is_ok())
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
    fn supported_cert_flags_asks_check_flags() {
        let mut t = MockTransport::new();
        t.expect_check_flags().returning(|f| {
            if f.bits() & !0x2 == 0 {
                Ok(())
            } else {
                Err(BitsError::NotImplemented { what: "x".into() })
            }
        });
        assert_eq!(supported_cert_flags(&t), vec![0, 2]);
    }
}
