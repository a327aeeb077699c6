//! What to do with a response to a GET: write its body, take the file as
//! whole, or restart it; from its status, `Content-Range`, `Content-Length`
//! and validators.

use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED, RETRY_AFTER};
use http::HeaderMap;

use crate::error::BitsError;
use crate::httpdate;
use crate::job::FileInfo;
use crate::transport::Response;

/// What to do with a response to a GET from byte `offset`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Write the body at `offset`; it ends at `end` (when known); the whole
    /// file is `total` bytes (when known).
    Write {
        offset: u64,
        end: Option<u64>,
        total: Option<u64>,
    },
    /// The temporary file already holds the whole file (416 at its size).
    Whole,
    /// Discard the bytes so far and ask again from 0.
    Restart(String),
}

pub(super) fn plan(response: &Response, offset: u64, file: &FileInfo) -> Result<Plan, BitsError> {
    let headers = &response.headers;
    match response.status {
        200 => {
            let len = content_length(headers);
            Ok(Plan::Write {
                offset: 0,
                end: len,
                total: len,
            })
        }
        206 => {
            let Some(ContentRange {
                range: Some((first, last)),
                total,
            }) = content_range(headers)
            else {
                return Err(BitsError::InvalidServerResponse {
                    what: "a 206 response without a valid Content-Range".into(),
                });
            };
            if first != offset {
                return restart_or(
                    offset,
                    format!("asked for bytes from {offset}, the server sent from {first}"),
                );
            }
            // Bytes on disk with no validator recorded for them (a daemon
            // killed before it saved the file's headers): if the server names
            // its content now, continuity cannot be proven, so start again
            // rather than risk joining two versions of the file.
            if file.validator.is_none() {
                if let Some(now) = validator_of(headers) {
                    return restart_or(
                        offset,
                        format!(
                            "no validator was recorded for the bytes on disk and the server now says {now}"
                        ),
                    );
                }
            }
            if let (Some(stored), Some(now)) = (
                file.validator.as_deref(),
                validator_like(headers, file.validator.as_deref()),
            ) {
                if stored != now {
                    return restart_or(
                        offset,
                        format!("the server's validator changed from {stored} to {now}"),
                    );
                }
            }
            if let (Some(before), Some(now)) = (file.bytes_total, total) {
                if offset > 0 && before != now {
                    return restart_or(offset, format!("the file's size changed from {before} to {now}"));
                }
            }
            Ok(Plan::Write {
                offset,
                end: Some(last + 1),
                total,
            })
        }
        416 if offset > 0 => {
            let total = content_range(headers).and_then(|c| c.total).or(file.bytes_total);
            if total == Some(offset) {
                Ok(Plan::Whole)
            } else {
                Ok(Plan::Restart(format!(
                    "the server cannot send bytes from {offset} (size {total:?})"
                )))
            }
        }
        status => Err(BitsError::HttpStatus {
            status,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::retry_after(v, SystemTime::now())),
        }),
    }
}

fn restart_or(offset: u64, why: String) -> Result<Plan, BitsError> {
    if offset == 0 {
        Err(BitsError::InvalidServerResponse { what: why })
    } else {
        Ok(Plan::Restart(why))
    }
}

/// A parsed `Content-Range: bytes first-last/total` (or `bytes */total`).
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    range: Option<(u64, u64)>,
    total: Option<u64>,
}

fn content_range(headers: &HeaderMap) -> Option<ContentRange> {
    let text = headers.get(CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = text.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            Some((a, b))
        }
    };
    Some(ContentRange { range, total })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The validator a response gives its content: the ETag, else Last-Modified.
pub(super) fn validator_of(headers: &HeaderMap) -> Option<String> {
    header_text(headers, ETAG).or_else(|| header_text(headers, LAST_MODIFIED))
}

/// The response's validator of the same kind as `stored` (an ETag starts
/// with `"` or `W/`; anything else is a date), so that a server that sends
/// only one of them on a 206 is not taken for changed content.
fn validator_like(headers: &HeaderMap, stored: Option<&str>) -> Option<String> {
    match stored {
        Some(s) if is_etag(s) => header_text(headers, ETAG),
        Some(_) => header_text(headers, LAST_MODIFIED),
        None => None,
    }
}

fn is_etag(v: &str) -> bool {
    v.starts_with('"') || v.starts_with("W/")
}

/// A weak ETag must not be used in `If-Range` (RFC 9110 §13.1.5).
pub(super) fn usable_in_if_range(v: &str) -> bool {
    !v.starts_with("W/")
}

/// The server's modification time of the content, from Last-Modified.
pub(super) fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    header_text(headers, LAST_MODIFIED).and_then(|d| httpdate::parse(&d))
}

fn header_text(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        let cr = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_RANGE, v.parse().unwrap());
            content_range(&headers)
        };
        assert_eq!(
            cr("bytes 0-9/10"),
            Some(ContentRange {
                range: Some((0, 9)),
                total: Some(10)
            })
        );
        assert_eq!(
            cr("bytes 5-9/*"),
            Some(ContentRange {
                range: Some((5, 9)),
                total: None
            })
        );
        assert_eq!(
            cr("bytes */10"),
            Some(ContentRange {
                range: None,
                total: Some(10)
            })
        );
        for bad in [
            "bytes 9-5/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes x-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(cr(bad), None, "{bad}");
        }
    }
}
