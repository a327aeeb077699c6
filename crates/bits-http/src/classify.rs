//! Every network failure → its BITS error, in one place.
//!
//! | failure | error | HRESULT |
//! | --- | --- | --- |
//! | a [`BitsError`] from the backend's handshake | itself, unchanged | |
//! | a stream error the backend classified ([`crate::TlsConnect::classify_io`]: a TLS 1.3 alert refusing the client certificate, …), inside the I/O error or, over HTTP/2, kept with the connection | the backend's | |
//! | DNS lookup failed | `NameNotResolved` | `0x80072EE7` |
//! | TCP connect timed out; no headers or no body bytes in time | `Timeout` | `0x80072EE2` |
//! | TCP connect refused, unreachable, … | `CannotConnect` | `0x80072EFD` |
//! | reset, or closed before the headers or the body ended | `ConnectionReset` | `0x80072EFE` |
//! | a response hyper cannot parse | `InvalidServerResponse` | `0x8020001B` |

use std::error::Error as StdError;
use std::io;

use bits_core::BitsError;

use crate::connector::{Classified, StreamFault};

/// The error and its sources, joined by `": "`.
pub(crate) fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        next = s.source();
    }
    text
}

/// The first error of type `T` in the chain starting at `e`.
fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = next {
        if let Some(t) = s.downcast_ref::<T>() {
            return Some(t);
        }
        next = s.source();
    }
    None
}

/// A failure of hyper-util's `HttpConnector` (DNS or TCP).
pub(crate) fn tcp_error(e: &(dyn StdError + 'static), authority: &str) -> BitsError {
    if e.to_string() == "dns error" {
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(h, _)| h);
        return BitsError::NameNotResolved {
            host: host.to_owned(),
        };
    }
    if let Some(io) = find::<io::Error>(e) {
        if io.kind() == io::ErrorKind::TimedOut {
            return BitsError::Timeout {
                what: format!("connecting to {authority}"),
            };
        }
    }
    BitsError::CannotConnect {
        host: authority.to_owned(),
        reason: chain_text(e),
    }
}

/// A failure of `Client::request` (before the response headers).
pub(crate) fn client_error(e: &hyper_util::client::legacy::Error, authority: &str) -> BitsError {
    let dyn_e: &(dyn StdError + 'static) = e;
    if let Some(taken) = find::<Classified>(dyn_e).and_then(Classified::take) {
        return taken;
    }
    // HTTP/2 drops the classification on the way: the connection kept it.
    if let Some(kept) = e.connect_info().and_then(StreamFault::of) {
        return kept;
    }
    if let Some(h) = find::<hyper::Error>(dyn_e) {
        return hyper_error(h, "before the response headers");
    }
    if e.is_connect() {
        return BitsError::CannotConnect {
            host: authority.to_owned(),
            reason: chain_text(dyn_e),
        };
    }
    if let Some(io) = find::<io::Error>(dyn_e) {
        return io_error(io, "before the response headers");
    }
    BitsError::ConnectionReset {
        reason: chain_text(dyn_e),
    }
}

/// A hyper error while reading the response (`when` says which part).
pub(crate) fn hyper_error(e: &hyper::Error, when: &str) -> BitsError {
    let text = chain_text(e);
    if e.is_timeout() {
        return BitsError::Timeout {
            what: format!("{when}: {text}"),
        };
    }
    if e.is_parse() || e.is_parse_status() {
        return BitsError::InvalidServerResponse {
            what: format!("{when}: {text}"),
        };
    }
    if let Some(io) = find::<io::Error>(e) {
        return io_error(io, when);
    }
    BitsError::ConnectionReset {
        reason: format!("{when}: {text}"),
    }
}

pub(crate) fn io_error(e: &io::Error, when: &str) -> BitsError {
    if let Some(taken) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Classified>())
        .and_then(Classified::take)
    {
        return taken;
    }
    if e.kind() == io::ErrorKind::TimedOut {
        BitsError::Timeout {
            what: format!("{when}: {e}"),
        }
    } else {
        BitsError::ConnectionReset {
            reason: format!("{when}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake(&'static str, Option<io::Error>);

    impl std::fmt::Display for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Fake {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    fn check(e: Fake, authority: &str, code: u32) -> BitsError {
        let got = tcp_error(&e, authority);
        assert_eq!(got.hresult().0, code, "{got:?}");
        got
    }

    #[test]
    fn tcp_failures_by_kind() {
        let dns = check(
            Fake("dns error", Some(io::Error::other("no such host"))),
            "example.invalid:443",
            0x8007_2EE7,
        );
        assert!(matches!(dns, BitsError::NameNotResolved { ref host } if host == "example.invalid"));
        check(
            Fake("tcp connect error", Some(io::ErrorKind::ConnectionRefused.into())),
            "127.0.0.1:1",
            0x8007_2EFD,
        );
        check(
            Fake("tcp connect error", Some(io::ErrorKind::TimedOut.into())),
            "127.0.0.1:1",
            0x8007_2EE2,
        );
        check(Fake("tcp open error", None), "127.0.0.1:1", 0x8007_2EFD);
    }

    #[test]
    fn chain_text_joins_sources_once() {
        let e = Fake("tcp connect error", Some(io::Error::other("refused")));
        assert_eq!(chain_text(&e), "tcp connect error: refused");
    }
}
