//! [`bits_core::BodyStream`] over hyper's `Incoming`, with an idle timeout.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bits_core::{BitsError, BodyStream};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::classify;

/// A response body read frame by frame; each frame must arrive within the
/// idle timeout.
pub(crate) struct HyperBody {
    pub(crate) incoming: Incoming,
    pub(crate) idle: Duration,
    pub(crate) done: bool,
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
