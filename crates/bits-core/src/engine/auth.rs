//! Answering a server's `401` with the job's server credentials
//! (`docs/spec/http-options.md`, "Credentials").
//!
//! - A `401` is answered once, with the credentials of the scheme the
//!   challenge offers (Digest before Basic), only when the request went to
//!   the origin of the file's own URL (never after a redirect to another
//!   origin), and never with Basic over plain http.
//! - The answer is then kept for that origin for the rest of the job's
//!   run: later requests (the next file, a resumed Range) carry it first
//!   (Basic as it is, Digest with the next nonce count). Each run starts
//!   unchallenged; when a new run is challenged again with the very nonce
//!   of its last Digest answer (a resumed file), that answer goes on with
//!   its count: starting again at `nc=00000001` would be a replay to a
//!   server that checks counts.
//! - A second `401` to an answer made for that challenge (the same URL:
//!   after a redirect the kept answer is only sent first) is a refusal; a
//!   Digest `stale=true` is answered once more with the new nonce; a `401`
//!   to a kept answer (an expired nonce) is a new challenge.
//! - Every failure is `AuthFailed` 401 (`0x80190191`), fatal, its reason in
//!   the job's error and in the log, never a password or header value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{HeaderMap, HeaderValue};
use url::{Position, Url};
use uuid::Uuid;

use crate::credentials::{is_stale, Answer, AuthScheme, AuthTarget};
use crate::error::BitsError;
use crate::job::Job;

/// The answers kept per job and origin (shared by the engine's clones).
#[derive(Debug, Default, Clone)]
pub(super) struct ServerAuth {
    kept: Arc<Mutex<HashMap<(Uuid, String), Answer>>>,
    /// The answers of the job's last run, for their nonce counts only.
    retired: Arc<Mutex<HashMap<(Uuid, String), Answer>>>,
}

/// Where one request's exchange with a challenge stands.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// The request just sent carried an answer.
    pub(super) sent: bool,
    /// The URL whose challenge, in this fetch, the answer kept was made
    /// for: a `401` to it again is a refusal. After a redirect the answer
    /// goes first to the new URL, where a `401` is a new challenge.
    fresh: Option<Url>,
    /// A stale nonce of that URL was answered again already.
    restaled: bool,
}

impl ServerAuth {
    fn kept(&self) -> MutexGuard<'_, HashMap<(Uuid, String), Answer>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retired(&self) -> MutexGuard<'_, HashMap<(Uuid, String), Answer>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what `job` was answered with: a new run starts unchallenged
    /// (the answers are kept aside only to go on with a nonce's count).
    pub(super) fn forget(&self, job: Uuid) {
        let mut kept = self.kept();
        let mut retired = self.retired();
        retired.retain(|(id, _), _| *id != job);
        let ours: Vec<_> = kept.keys().filter(|(id, _)| *id == job).cloned().collect();
        for key in ours {
            if let Some(answer) = kept.remove(&key) {
                retired.insert(key, answer);
            }
        }
    }

    /// The `Authorization` for a request of `method` to `url`, when an
    /// answer is kept for its origin and `same_origin` (the URL is the
    /// file's own origin).
    pub(super) fn authorization(
        &self,
        job: Uuid,
        method: &str,
        url: &Url,
        same_origin: bool,
    ) -> Result<Option<HeaderValue>, BitsError> {
        if !same_origin {
            return Ok(None);
        }
        match self.kept().get_mut(&key(job, url)) {
            Some(answer) => answer
                .header(method, &url[Position::BeforePath..Position::AfterQuery])
                .map(Some),
            None => Ok(None),
        }
    }

    /// After a `401` to a request to `url` ([`Round::sent`]: it carried an
    /// answer):
    /// `Ok` when an answer is now kept and the request is to be sent
    /// again; the fatal error otherwise.
    pub(super) fn challenged(
        &self,
        job: &Job,
        file: usize,
        url: &Url,
        same_origin: bool,
        headers: &HeaderMap,
        round: &mut Round,
    ) -> Result<(), BitsError> {
        let key = key(job.id, url);
        let origin = &key.1;
        let refused = |why: String| {
            tracing::warn!(file, %origin, "{why}");
            Err(BitsError::AuthFailed { status: 401, why })
        };
        if round.fresh.as_ref() != Some(url) {
            round.fresh = None;
            round.restaled = false;
        }
        if round.sent {
            let answer = self.kept().remove(&key);
            if round.fresh.is_some() {
                if round.restaled || !is_stale(AuthTarget::Server, headers) {
                    let (scheme, user) = answer
                        .map(|a| (a.scheme(), a.credentials().user.clone()))
                        .unwrap_or((AuthScheme::Basic, String::new()));
                    return refused(format!(
                        "{origin} refused the job's {scheme} credentials for user {user:?}"
                    ));
                }
                round.restaled = true;
                tracing::debug!(file, %origin, "stale Digest nonce; answering the new one");
            }
        }
        let has_server_credentials = job.credentials().iter().any(|c| c.target == AuthTarget::Server);
        if !same_origin {
            return refused(if has_server_credentials {
                format!(
                    "{origin} asks for credentials after a redirect; they are never sent to another origin"
                )
            } else {
                format!("{origin} asks for credentials and the job has none")
            });
        }
        let answer = match Answer::for_challenge(AuthTarget::Server, headers, job.credentials()) {
            Ok(answer) => answer,
            Err(unanswered) => {
                return refused(format!(
                    "{origin}: {} (set them with set-credentials)",
                    unanswered.why
                ))
            }
        };
        if answer.scheme() == AuthScheme::Basic && url.scheme() == "http" {
            return refused(format!(
                "{origin} asks for Basic credentials over plain http, where anyone on the path could \
                 read the password; they are only sent over https (or use digest)"
            ));
        }
        let answer = match self.retired().remove(&key) {
            Some(earlier) if answer.continues(&earlier) => earlier,
            _ => answer,
        };
        tracing::debug!(file, %origin, scheme = %answer.scheme(), "answering the server's challenge");
        self.kept().insert(key, answer);
        round.fresh = Some(url.clone());
        Ok(())
    }
}

fn key(job: Uuid, url: &Url) -> (Uuid, String) {
    (job, url.origin().ascii_serialization())
}
