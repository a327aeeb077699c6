//! Bodies both ways: [`bits_core::BodyStream`] over hyper's `Incoming`,
//! with an idle timeout, and a [`bits_core::RequestBody`] as hyper's
//! outgoing body.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bits_core::{BitsError, BodyStream, RequestBody, YieldStatus};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::classify;
use crate::connector::{Classified, StreamFault};

/// A request's body as hyper sends it: none, or the request's chunks (with
/// `Content-Length` when its length is known). A chunk's error fails the
/// request with that error ([`classify::client_error`] takes it out).
#[derive(Debug)]
pub(crate) struct OutgoingBody(pub(crate) Option<RequestBody>);

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = Classified;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Classified>>> {
        let Some(body) = &mut self.get_mut().0 else {
            return Poll::Ready(None);
        };
        body.poll_chunk(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data).map_err(Classified::new)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.length() == Some(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.as_ref().map(RequestBody::length) {
            None => SizeHint::with_exact(0),
            Some(Some(n)) => SizeHint::with_exact(n),
            Some(None) => SizeHint::default(),
        }
    }
}

/// A response body read frame by frame; each frame must arrive within the
/// idle timeout.
pub(crate) struct HyperBody {
    pub(crate) incoming: Incoming,
    pub(crate) idle: Duration,
    pub(crate) done: bool,
    /// The connection's record of a failure its backend classified (a
    /// TLS connection's; HTTP/2 reports it without the classification).
    pub(crate) fault: Option<StreamFault>,
    /// How the connection yields, when it does ([`crate::yielding`]).
    pub(crate) yielding: Option<YieldStatus>,
}

impl fmt::Debug for HyperBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperBody")
            .field("idle", &self.idle)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl BodyStream for HyperBody {
    fn yielding(&self) -> Option<YieldStatus> {
        self.yielding.clone()
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError> {
        while !self.done {
            let frame = match tokio::time::timeout(self.idle, self.incoming.frame()).await {
                Err(_) => {
                    self.done = true;
                    return Err(BitsError::Timeout {
                        what: format!("no body bytes for {}s", self.idle.as_secs_f32()),
                    });
                }
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    self.done = true;
                    if let Some(kept) = self.fault.as_ref().and_then(StreamFault::error) {
                        return Err(kept);
                    }
                    return Err(classify::hyper_error(&e, "reading the body"));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
            // Trailers or an empty frame: read on.
        }
        Ok(None)
    }
}
