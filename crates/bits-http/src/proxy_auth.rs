//! Answering an http proxy's `407` with the job's proxy credentials
//! (`docs/spec/http-options.md`, "Credentials"), the one way both paths
//! to an http proxy use: the `CONNECT` of a tunnel (the connector) and an
//! absolute-form request (the transport).
//!
//! - A `407` the credentials can answer ([`bits_core::Answer`]: Digest
//!   before Basic) is answered once; the request (or `CONNECT`, on a new
//!   connection) is sent again with `Proxy-Authorization`. A `407` to that
//!   answer is a refusal: `AuthFailed` 407, fatal, never a loop; unless it
//!   is a Digest challenge marked `stale` (the nonce refused, not the
//!   password), which is answered once more, once.
//! - The answer is kept per proxy, in state shared by every connection of
//!   the policy (so of the same credentials: pools are keyed by the
//!   policy): later requests to that proxy send it first (Basic as is,
//!   Digest with its next nonce count). A `407` to such a pre-emptive
//!   answer is a new challenge (a new nonce, say), answered once more.
//! - A `407` without usable credentials: `AuthFailed` 407 naming what the
//!   proxy asked for and how to set credentials.
//!
//! Only names, schemes and users are logged, never a header's value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bits_core::{Answer, AuthTarget, BitsError, Credentials, ProxyUrl};
use http::{HeaderMap, HeaderValue};

/// What the last request to a proxy carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// No `Proxy-Authorization`.
    Nothing,
    /// A kept answer, sent before any challenge.
    Preemptive,
    /// An answer made for the challenge just received.
    Answered,
    /// An answer made for a Digest challenge marked `stale` (a new nonce)
    /// that came in reply to an answer: the last one allowed.
    AnsweredStale,
}

/// The answers kept per proxy, shared by a policy's connector and
/// transport (cloning shares them).
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyAuth {
    answers: Arc<Mutex<HashMap<ProxyUrl, Answer>>>,
}

impl ProxyAuth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProxyUrl, Answer>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Proxy-Authorization` to send first to `proxy` for `method uri`
    /// (the request target as sent: `host:port` for `CONNECT`, the
    /// absolute URL otherwise), when an answer to it is kept.
    ///
    /// # Errors
    /// As [`Answer::header`].
    pub(crate) fn preemptive(
        &self,
        proxy: &ProxyUrl,
        method: &str,
        uri: &str,
    ) -> Result<Option<HeaderValue>, BitsError> {
        let mut answers = self.lock();
        let Some(answer) = answers.get_mut(proxy) else {
            return Ok(None);
        };
        tracing::debug!(
            %proxy,
            scheme = %answer.scheme(),
            user = %answer.credentials().user,
            "proxy credentials sent pre-emptively"
        );
        answer.header(method, uri).map(Some)
    }

    /// `proxy` answered `407` with `headers` to a request that carried
    /// `sent`: the `Proxy-Authorization` to send it again with (the answer
    /// kept for later requests) and what that request then carries, or
    /// why not.
    ///
    /// # Errors
    /// `AuthFailed` 407: the proxy refused an answer made for its
    /// challenge, or no credentials answer it.
    pub(crate) fn challenged(
        &self,
        proxy: &ProxyUrl,
        sent: Sent,
        headers: &HeaderMap,
        credentials: &[Credentials],
        method: &str,
        uri: &str,
    ) -> Result<(HeaderValue, Sent), BitsError> {
        let next = match sent {
            Sent::Nothing | Sent::Preemptive => Sent::Answered,
            Sent::Answered if bits_core::credentials::is_stale(AuthTarget::Proxy, headers) => {
                Sent::AnsweredStale
            }
            Sent::Answered | Sent::AnsweredStale => return Err(self.refused(proxy)),
        };
        let mut answers = self.lock();
        let mut answer = Answer::for_challenge(AuthTarget::Proxy, headers, credentials).map_err(|u| {
            BitsError::AuthFailed {
                status: 407,
                why: format!(
                    "proxy {proxy} wants credentials: {}; `bits set-credentials JOB proxy basic|digest USER` sets them",
                    u.why
                ),
            }
        })?;
        tracing::debug!(
            %proxy,
            scheme = %answer.scheme(),
            user = %answer.credentials().user,
            after = ?sent,
            "answering the proxy's 407"
        );
        let value = answer.header(method, uri)?;
        answers.insert(proxy.clone(), answer);
        Ok((value, next))
    }

    /// `proxy` refused the answer kept for it (which is dropped):
    /// `AuthFailed` 407 naming the scheme and user.
    pub(crate) fn refused(&self, proxy: &ProxyUrl) -> BitsError {
        let why = match self.lock().remove(proxy) {
            Some(a) => format!(
                "proxy {proxy} refused the job's {} credentials for user {}",
                a.scheme(),
                a.credentials().user
            ),
            None => format!("proxy {proxy} refused the job's credentials"),
        };
        tracing::debug!(%proxy, "the proxy refused the credentials");
        BitsError::AuthFailed { status: 407, why }
    }

    /// The error for a `407` to a request whose body cannot be sent again.
    pub(crate) fn body_not_replayable(proxy: &ProxyUrl) -> BitsError {
        BitsError::AuthFailed {
            status: 407,
            why: format!(
                "proxy {proxy} asked for credentials after a request body was sent, \
                 which cannot be sent again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use bits_core::AuthScheme;

    use super::*;

    fn proxy() -> ProxyUrl {
        ProxyUrl::parse("http://127.0.0.1:3128").unwrap()
    }

    fn challenge(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::PROXY_AUTHENTICATE,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn basic() -> Vec<Credentials> {
        vec![Credentials::new(AuthTarget::Proxy, AuthScheme::Basic, "alice", "s3cret").unwrap()]
    }

    #[test]
    fn a_challenge_is_answered_once_and_the_answer_kept() {
        let auth = ProxyAuth::default();
        let p = proxy();
        assert_eq!(auth.preemptive(&p, "CONNECT", "o:443").unwrap(), None);
        let h = challenge("Basic realm=\"x\"");
        let v = auth
            .challenged(&p, Sent::Nothing, &h, &basic(), "CONNECT", "o:443")
            .unwrap()
            .0;
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Basic YWxpY2U6czNjcmV0");
        // Kept: the clones share it, and send it first.
        let clone = auth.clone();
        assert_eq!(clone.preemptive(&p, "CONNECT", "o:443").unwrap(), Some(v.clone()));
        // A 407 to a pre-emptive answer is a new challenge.
        assert!(auth
            .challenged(&p, Sent::Preemptive, &h, &basic(), "CONNECT", "o:443")
            .is_ok());
        // A 407 to an answer made for the challenge is a refusal, naming
        // the user, never the password; the answer is no longer kept.
        let e = auth
            .challenged(&p, Sent::Answered, &h, &basic(), "CONNECT", "o:443")
            .unwrap_err();
        assert_eq!(e.hresult().0, 0x8019_0197);
        let text = e.to_string();
        assert!(text.contains("basic credentials for user alice"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(auth.preemptive(&p, "CONNECT", "o:443").unwrap(), None);
    }

    #[test]
    fn a_stale_digest_challenge_to_an_answer_is_answered_once_more_only() {
        let auth = ProxyAuth::default();
        let p = proxy();
        let creds = [Credentials::new(AuthTarget::Proxy, AuthScheme::Digest, "alice", "s3cret").unwrap()];
        let fresh = challenge("Digest realm=\"x\", nonce=\"n1\", qop=\"auth\", algorithm=SHA-256");
        let stale =
            challenge("Digest realm=\"x\", nonce=\"n2\", qop=\"auth\", algorithm=SHA-256, stale=true");
        let (_, sent) = auth
            .challenged(&p, Sent::Nothing, &fresh, &creds, "CONNECT", "o:443")
            .unwrap();
        assert_eq!(sent, Sent::Answered);
        let (v, sent) = auth
            .challenged(&p, sent, &stale, &creds, "CONNECT", "o:443")
            .unwrap();
        assert_eq!(sent, Sent::AnsweredStale);
        assert!(v.to_str().unwrap().contains("nonce=\"n2\""));
        let e = auth
            .challenged(&p, sent, &stale, &creds, "CONNECT", "o:443")
            .unwrap_err();
        assert!(e.to_string().contains("digest credentials for user alice"), "{e}");
        // Not stale: a refusal at once.
        let (_, sent) = auth
            .challenged(&p, Sent::Nothing, &fresh, &creds, "CONNECT", "o:443")
            .unwrap();
        assert!(auth
            .challenged(&p, sent, &fresh, &creds, "CONNECT", "o:443")
            .is_err());
    }

    #[test]
    fn no_usable_credentials_say_what_the_proxy_wants_and_how_to_set_them() {
        let auth = ProxyAuth::default();
        let e = auth
            .challenged(
                &proxy(),
                Sent::Nothing,
                &challenge("Negotiate"),
                &basic(),
                "GET",
                "http://o/",
            )
            .unwrap_err();
        assert_eq!(e.hresult().0, 0x8019_0197);
        let text = e.to_string();
        assert!(
            text.contains("Negotiate") && text.contains("set-credentials"),
            "{text}"
        );
        let e = auth
            .challenged(
                &proxy(),
                Sent::Nothing,
                &challenge("Basic realm=\"x\""),
                &[],
                "GET",
                "http://o/",
            )
            .unwrap_err();
        assert!(e.to_string().contains("no proxy credentials"), "{e}");
    }
}
