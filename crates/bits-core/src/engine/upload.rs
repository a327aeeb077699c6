//! Upload jobs: the client side of the BITS upload protocol ([MC-BUP],
//! `docs/spec/upload.md`, "The client, packet by packet").
//!
//! - `Create-Session` (`BITS-Supported-Protocols`, `Content-Name`) opens a
//!   session; its id is stored with the job at once (`FileInfo::upload`,
//!   saved through [`Observer::on_file_change`]), so a restart continues
//!   the same session.
//! - `Fragment`s with `Content-Range: bytes a-b/total` from the offset the
//!   server acknowledged: every Ack's `BITS-Received-Content-Range` is the
//!   truth (a 416 included). The size adapts: 64 KiB first, doubling while
//!   Acks come back within two seconds, up to 8 MiB; halved when one takes
//!   longer than ten.
//! - Progress (`bytes_transferred`) is the offset the server acknowledged,
//!   never bytes merely sent (socket buffers hold megabytes the server may
//!   never get). While a fragment is in flight it is announced again every
//!   [`PROGRESS_TICK`], so an observer that saves at most once a second
//!   saves each Ack's offset about a second later, as a download's bytes.
//! - `Close-Session` after the last Ack; the job is TRANSFERRED.
//! - A Create-Session Ack's `BITS-Host-Id` (server farms) sends the
//!   session's later packets to that host; once it has been unreachable
//!   (no connection, or its name unresolved) for its
//!   `BITS-Host-Id-Fallback-Timeout`, counted from the first failure of
//!   this run, packets return to the URL's own host for good (stored). No
//!   fallback timeout: a failure is the job's (transient) error.
//! - The source must not change: its size and modification time are taken
//!   when the session begins and checked before every fragment and after
//!   the last (`BG_E_LOCAL_FILE_CHANGED`, fatal).
//! - [`Engine::cancel_upload_sessions`] sends `Cancel-Session` before a
//!   job is cancelled (best effort).
//! - Every packet is `BITS_POST` to the remote name, with the engine's and
//!   the job's headers, under the job's connection policy, its `401`
//!   answered with the job's credentials as for downloads; a 3xx is fatal
//!   (no packet goes to another URL). An Ack's `BITS-Error-Code` is the
//!   job's code; `BG_E_SESSION_NOT_FOUND` starts a new session from byte 0
//!   (once per run); other statuses are transient or fatal as for
//!   downloads.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use url::Url;

use super::{auth, moved, Engine, Observer};
use crate::error::{BitsError, ErrorContext, Hresult};
use crate::job::{parse_remote_url, Job, JobType, UploadSession};
use crate::policy::ConnectionPolicy;
use crate::transport::{Request, RequestBody, Response};

/// The BITS 1.5 upload protocol.
pub const PROTOCOL: &str = "{7df0354d-249b-430f-820d-3d2a9bef4931}";
/// The first fragment's size.
const FIRST_FRAGMENT: u64 = 64 << 10;
/// The largest fragment.
const MAX_FRAGMENT: u64 = 8 << 20;
/// Acks that do not move the offset before the server is called broken.
const STALLS: u32 = 5;
/// How often a fragment in flight announces the job's progress again.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

impl Engine {
    /// Uploads file `i` of `job` (its LOCAL to its remote name) and closes
    /// the session.
    pub(super) async fn upload_file(
        &self,
        job: &mut Job,
        i: usize,
        policy: &ConnectionPolicy,
        observer: &mut dyn Observer,
    ) -> Result<(), BitsError> {
        let url = parse_remote_url(&job.files[i].remote_name)?;
        let source = job.files[i].local_name.clone();
        let (len, modified) = source_state(&source)?;
        let mut renewed = false;
        loop {
            let session = match job.files[i].upload.clone() {
                Some(s) => {
                    if (s.source_len, s.source_modified) != (len, modified) {
                        return Err(changed(&source));
                    }
                    s
                }
                None => {
                    let created = self.create_session(job, i, &url, policy, &source).await?;
                    let s = UploadSession {
                        source_len: len,
                        source_modified: modified,
                        ..created
                    };
                    job.files[i].upload = Some(s.clone());
                    job.files[i].bytes_total = Some(len);
                    observer.on_file_change(job, i);
                    s
                }
            };
            match self
                .send_fragments(job, i, &url, policy, observer, &session, &source)
                .await
            {
                Ok(reply_url) => {
                    if let (Some(r), Some(s)) = (reply_url, job.files[i].upload.as_mut()) {
                        s.reply_url = Some(r);
                    }
                    break;
                }
                Err(e) if e.hresult() == Hresult::BG_E_SESSION_NOT_FOUND && !renewed => {
                    tracing::info!(
                        file = i,
                        "the server lost the upload session; a new one from byte 0"
                    );
                    renewed = true;
                    job.files[i].upload = None;
                    moved(job, i, 0, observer);
                }
                Err(e) => return Err(e),
            }
        }
        if job.job_type == JobType::UploadReply {
            self.receive_reply(job, i, &url, policy, &source).await?;
        }
        let id = job.files[i]
            .upload
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let response = self
            .packet(
                job,
                i,
                &session_url(&url, job.files[i].upload.as_ref()),
                policy,
                "Close-Session",
                &[("bits-session-id", &id)],
                Body::Empty,
            )
            .await?;
        if !matches!(response.status, 200 | 201) {
            return Err(refused(&response, "Close-Session"));
        }
        tracing::debug!(file = i, session = %id, "upload closed");
        Ok(())
    }

    /// `Cancel-Session` for each open upload session of `job`, best effort
    /// (`docs/spec/upload.md`: `cancel` sends it when a session is open):
    /// the server deletes what it holds. Call it before
    /// [`cancel`](super::cancel), which forgets the sessions with the job.
    /// Failures are logged, never returned: the job is cancelled anyway.
    pub async fn cancel_upload_sessions(&self, job: &Job) {
        if job.job_type == crate::job::JobType::Download {
            return;
        }
        let policy = self.policy_of(job);
        for (i, file) in job.files.iter().enumerate() {
            let (Some(session), false) = (&file.upload, file.completed) else {
                continue;
            };
            let Ok(url) = parse_remote_url(&file.remote_name) else {
                continue;
            };
            let sent = self
                .packet(
                    job,
                    i,
                    &session_url(&url, Some(session)),
                    &policy,
                    "Cancel-Session",
                    &[("bits-session-id", &session.id)],
                    Body::Empty,
                )
                .await;
            match sent {
                Ok(r) if matches!(r.status, 200 | 201) => {
                    tracing::debug!(file = i, session = %session.id, "upload session cancelled");
                }
                Ok(r) => tracing::info!(file = i, status = r.status, "the server refused Cancel-Session"),
                Err(e) => tracing::info!(file = i, error = %e, "Cancel-Session not delivered"),
            }
        }
    }

    async fn create_session(
        &self,
        job: &Job,
        i: usize,
        url: &Url,
        policy: &ConnectionPolicy,
        source: &Path,
    ) -> Result<UploadSession, BitsError> {
        let name = content_name(source);
        let response = self
            .packet(
                job,
                i,
                url,
                policy,
                "Create-Session",
                &[("bits-supported-protocols", PROTOCOL), ("content-name", &name)],
                Body::Empty,
            )
            .await?;
        if !matches!(response.status, 200 | 201) {
            return Err(refused(&response, "Create-Session"));
        }
        let protocol = header(&response.headers, "bits-protocol").unwrap_or_default();
        if !protocol.eq_ignore_ascii_case(PROTOCOL) {
            return Err(BitsError::InvalidServerResponse {
                what: format!("the upload server chose protocol {protocol:?}, not {PROTOCOL}"),
            });
        }
        let id = header(&response.headers, "bits-session-id")
            .filter(|id| !id.is_empty() && id.len() <= 100)
            .ok_or_else(|| BitsError::InvalidServerResponse {
                what: "the Create-Session Ack has no usable BITS-Session-Id".into(),
            })?;
        let host_id = header(&response.headers, "bits-host-id")
            .filter(|h| !h.is_empty())
            .and_then(|h| {
                if url.clone().set_host(Some(h)).is_ok() {
                    Some(h.to_owned())
                } else {
                    tracing::info!(file = i, host_id = %h, "BITS-Host-Id is not a host name; ignored");
                    None
                }
            });
        let host_id_fallback = header(&response.headers, "bits-host-id-fallback-timeout")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| host_id.is_some());
        tracing::debug!(file = i, session = %id, host_id = ?host_id, "upload session created");
        Ok(UploadSession {
            id: id.to_owned(),
            acked: 0,
            source_len: 0,
            source_modified: None,
            reply_url: None,
            host_id,
            host_id_fallback,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_fragments(
        &self,
        job: &mut Job,
        i: usize,
        url: &Url,
        policy: &ConnectionPolicy,
        observer: &mut dyn Observer,
        session: &UploadSession,
        source: &Path,
    ) -> Result<Option<String>, BitsError> {
        let total = session.source_len;
        let mut reply_url = None;
        let mut acked = session.acked;
        let mut size = FIRST_FRAGMENT;
        let mut stalls = 0;
        // A capped job sends fragments of at most a quarter second of its
        // rate and waits after each as the cap says: over any 10 s the
        // bytes stay within a few percent of it.
        // The rate is the lower of the job's cap and its portion of the
        // daemon's shared limiter, which may change between fragments.
        let cap = super::rate::RateCap::for_job(job);
        let mut host_id_failing = None;
        while acked < total {
            check_unchanged(source, session)?;
            let most = cap
                .as_ref()
                .and_then(super::rate::RateCap::rate)
                .map_or(MAX_FRAGMENT, |r| (r / 4).clamp(16 << 10, MAX_FRAGMENT));
            let n = size.min(most).min(total - acked);
            let range = format!("bytes {acked}-{}/{total}", acked + n - 1);
            let name = content_name(source);
            let mut extra = vec![
                ("bits-session-id", session.id.as_str()),
                ("content-range", &range),
            ];
            if acked == 0 {
                extra.push(("content-name", &name));
            }
            let started = Instant::now();
            let to = session_url(url, job.files[i].upload.as_ref());
            let fragment = self.packet(
                job,
                i,
                &to,
                policy,
                "Fragment",
                &extra,
                Body::File {
                    path: source,
                    offset: acked,
                    len: n,
                },
            );
            let sent = announcing(fragment, job, observer).await;
            let response = match sent {
                Err(e) if unreachable(&e) => {
                    self.host_id_unreachable(job, i, e, &mut host_id_failing, observer)
                        .await?;
                    continue;
                }
                sent => sent?,
            };
            if !matches!(response.status, 200 | 201 | 416) {
                return Err(refused(&response, "Fragment"));
            }
            let next = header(&response.headers, "bits-received-content-range")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&next| next <= total)
                .ok_or_else(|| BitsError::InvalidServerResponse {
                    what: format!(
                        "the Ack of fragment {range} (HTTP {}) has no usable BITS-Received-Content-Range",
                        response.status
                    ),
                })?;
            if next <= acked {
                stalls += 1;
                if stalls >= STALLS {
                    return Err(BitsError::InvalidServerResponse {
                        what: format!(
                            "the upload server acknowledged no new byte {STALLS} times (at {next})"
                        ),
                    });
                }
            } else {
                stalls = 0;
            }
            if let Some(r) = header(&response.headers, "bits-reply-url") {
                reply_url = Some(r.to_owned());
            }
            acked = next;
            if let Some(s) = job.files[i].upload.as_mut() {
                s.acked = acked;
            }
            moved(job, i, acked, observer);
            if let Some(cap) = &cap {
                cap.take(n as usize).await;
            }
            let took = started.elapsed();
            if took < Duration::from_secs(2) && n == size {
                size = (size * 2).min(MAX_FRAGMENT);
            } else if took > Duration::from_secs(10) {
                size = (size / 2).max(FIRST_FRAGMENT);
            }
        }
        check_unchanged(source, session)?;
        Ok(reply_url)
    }

    /// A packet to the session's `BITS-Host-Id` could not connect: waits a
    /// second and returns to try again while its fallback timeout (counted
    /// from `failing`, the first failure) runs; once it has passed, forgets
    /// the host id (stored) so packets go to the URL's own host. `error`
    /// is returned when the session has no host id or no fallback.
    async fn host_id_unreachable(
        &self,
        job: &mut Job,
        i: usize,
        error: BitsError,
        failing: &mut Option<Instant>,
        observer: &mut dyn Observer,
    ) -> Result<(), BitsError> {
        let Some(session) = job.files[i].upload.as_mut() else {
            return Err(error);
        };
        let (Some(host), Some(secs)) = (&session.host_id, session.host_id_fallback) else {
            return Err(error);
        };
        let since = *failing.get_or_insert_with(Instant::now);
        let timeout = Duration::from_secs(secs);
        if since.elapsed() < timeout {
            tracing::debug!(file = i, host_id = %host, error = %error, "BITS-Host-Id unreachable; trying again");
            tokio::time::sleep(Duration::from_secs(1).min(timeout - since.elapsed())).await;
            return Ok(());
        }
        tracing::info!(
            file = i,
            host_id = %host,
            "BITS-Host-Id unreachable for its fallback timeout ({secs} s); packets go to the URL's host"
        );
        session.host_id = None;
        observer.on_file_change(job, i);
        Ok(())
    }

    /// Upload-reply: the reply of the whole upload, into the job's reply
    /// temporary file (`docs/spec/upload.md`: an ordinary download, with
    /// Range resume). Its URL is the last fragment's `BITS-Reply-URL`; a
    /// job that has none (stopped after that Ack, before saving it) sends
    /// the last byte again for a new Ack.
    async fn receive_reply(
        &self,
        job: &mut Job,
        i: usize,
        url: &Url,
        policy: &ConnectionPolicy,
        source: &Path,
    ) -> Result<(), BitsError> {
        let session = job.files[i].upload.clone().ok_or_else(|| BitsError::Internal {
            what: "a reply without a session".into(),
        })?;
        let reply = match session.reply_url.clone() {
            Some(r) => r,
            None => {
                let r = self.ask_reply_url(job, i, url, policy, source, &session).await?;
                if let Some(s) = job.files[i].upload.as_mut() {
                    s.reply_url = Some(r.clone());
                }
                r
            }
        };
        // With a BITS-Host-Id the reply is that host's, and so are the
        // credentials: it is the session's origin.
        let base = session_url(url, Some(&session));
        let reply_url = base.join(&reply).map_err(|e| BitsError::InvalidServerResponse {
            what: format!("BITS-Reply-URL {reply:?} is not a URL: {e}"),
        })?;
        if !matches!(reply_url.scheme(), "http" | "https") {
            return Err(BitsError::InvalidServerResponse {
                what: format!("BITS-Reply-URL {reply_url} is not http or https"),
            });
        }
        let temp = job.reply_temp_name().ok_or_else(|| BitsError::Internal {
            what: "an upload-reply job without a reply file name".into(),
        })?;
        let have = std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0);
        let mut headers = HeaderMap::new();
        if have > 0 {
            headers.insert(
                http::header::RANGE,
                HeaderValue::from_str(&format!("bytes={have}-")).expect("ASCII"),
            );
        }
        let same_origin = crate::redirect::same_origin(&base, &reply_url);
        let mut response = self
            .exchange(
                job,
                i,
                &reply_url,
                policy,
                Method::GET,
                headers,
                Body::None,
                same_origin,
            )
            .await?;
        let append = match response.status {
            200 => false,
            206 if content_range_start(&response.headers) == Some(have) => true,
            416 if have > 0 => return Ok(()),
            status => {
                return Err(BitsError::HttpStatus {
                    status,
                    retry_after: None,
                })
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&temp)
            .map_err(|e| BitsError::local("create", temp.display(), e))?;
        while let Some(chunk) = response.body.next_chunk().await? {
            std::io::Write::write_all(&mut file, &chunk)
                .map_err(|e| BitsError::local("write", temp.display(), e))?;
        }
        file.sync_all()
            .map_err(|e| BitsError::local("sync", temp.display(), e))?;
        tracing::debug!(file = i, "upload reply received");
        Ok(())
    }

    /// The last fragment again (its last byte; an empty upload: no range),
    /// for the `BITS-Reply-URL` of its Ack.
    async fn ask_reply_url(
        &self,
        job: &Job,
        i: usize,
        url: &Url,
        policy: &ConnectionPolicy,
        source: &Path,
        session: &UploadSession,
    ) -> Result<String, BitsError> {
        let total = session.source_len;
        let last = total.saturating_sub(1);
        let range = format!("bytes {last}-{last}/{total}");
        let mut extra = vec![("bits-session-id", session.id.as_str())];
        let body = if total == 0 {
            Body::Empty
        } else {
            extra.push(("content-range", &range));
            Body::File {
                path: source,
                offset: last,
                len: 1,
            }
        };
        let to = session_url(url, Some(session));
        let response = self.packet(job, i, &to, policy, "Fragment", &extra, body).await?;
        if !matches!(response.status, 200 | 201) {
            return Err(refused(&response, "Fragment"));
        }
        header(&response.headers, "bits-reply-url")
            .map(str::to_owned)
            .ok_or_else(|| BitsError::InvalidServerResponse {
                what: "the last fragment's Ack has no BITS-Reply-URL (an upload-reply job needs one)".into(),
            })
    }

    /// Sends one packet (`BITS_POST` with `BITS-Packet-Type: kind`) with
    /// `extra` headers to the upload URL.
    #[allow(clippy::too_many_arguments)]
    async fn packet(
        &self,
        job: &Job,
        i: usize,
        url: &Url,
        policy: &ConnectionPolicy,
        kind: &str,
        extra: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response, BitsError> {
        let mut headers = HeaderMap::new();
        headers.insert("bits-packet-type", HeaderValue::from_str(kind).expect("a token"));
        for (name, value) in extra {
            let value = HeaderValue::from_str(value).map_err(|_| BitsError::InvalidArg {
                what: format!("{name} {value:?} is no header value"),
            })?;
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a token");
            headers.insert(name, value);
        }
        let method = Method::from_bytes(b"BITS_POST").expect("a token");
        self.exchange(job, i, url, policy, method, headers, body, true)
            .await
    }

    /// One request of an upload job with the engine's and the job's
    /// headers (credential headers only to `same_origin`) and `headers`,
    /// answering a `401` with the job's credentials (`same_origin` only);
    /// a 3xx is fatal: no request goes to another URL.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        job: &Job,
        i: usize,
        url: &Url,
        policy: &ConnectionPolicy,
        method: Method,
        headers: HeaderMap,
        body: Body<'_>,
        same_origin: bool,
    ) -> Result<Response, BitsError> {
        let mut all = HeaderMap::new();
        for (name, value) in &self.headers_for(job.custom_headers_to_send()) {
            if same_origin || !crate::http_options::is_credential_header(name.as_str()) {
                all.append(name.clone(), value.clone());
            }
        }
        for (name, value) in headers {
            if let Some(name) = name {
                all.insert(name, value);
            }
        }
        let mut round = auth::Round::default();
        loop {
            let mut request = Request::new(method.clone(), url.clone(), policy.clone());
            request.headers = all.clone();
            let answer = self
                .auth
                .authorization(job.id, method.as_str(), url, same_origin)?;
            round.sent = answer.is_some();
            if let Some(answer) = answer {
                request.headers.insert(http::header::AUTHORIZATION, answer);
            }
            request.body = body.open()?;
            if let Some(check) = policy.validator() {
                check.set_file_index(i);
            }
            let response = self.transport.send(request).await?;
            if response.status == 401 {
                self.auth
                    .challenged(job, i, url, same_origin, &response.headers, &mut round)?;
                continue;
            }
            if (300..400).contains(&response.status) {
                return Err(BitsError::HttpStatus {
                    status: response.status,
                    retry_after: None,
                });
            }
            return Ok(response);
        }
    }
}

/// A request's body.
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    /// None at all (a GET).
    None,
    /// Zero bytes (`Content-Length: 0`: every packet has one).
    Empty,
    /// `len` bytes of `path` from `offset`.
    File { path: &'a Path, offset: u64, len: u64 },
}

impl Body<'_> {
    fn open(self) -> Result<Option<RequestBody>, BitsError> {
        match self {
            Body::None => Ok(None),
            Body::Empty => Ok(Some(RequestBody::from_bytes(bytes::Bytes::new()))),
            Body::File { path, offset, len } => {
                let file =
                    std::fs::File::open(path).map_err(|e| BitsError::local("open", path.display(), e))?;
                Ok(Some(RequestBody::from_file_span(file, offset, len)))
            }
        }
    }
}

/// Awaits `request` (a fragment), announcing `job`'s progress again every
/// [`PROGRESS_TICK`] meanwhile. An observer that saves progress at most
/// once a second (the daemon's `Persist`) has left the last Acks unsaved
/// when they came within a second of its last save; announced again, the
/// offset the server acknowledged is saved about a second later, as a
/// download's bytes are, rather than at the next Ack, which a fragment on
/// a slow link keeps away for seconds.
async fn announcing<T>(
    request: impl std::future::Future<Output = T>,
    job: &Job,
    observer: &mut dyn Observer,
) -> T {
    tokio::pin!(request);
    let start = tokio::time::Instant::now() + PROGRESS_TICK;
    let mut tick = tokio::time::interval_at(start, PROGRESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            answer = &mut request => return answer,
            _ = tick.tick() => observer.on_progress(job),
        }
    }
}

/// Where the session's packets go: `url`, on its `BITS-Host-Id` if it has
/// one.
fn session_url(url: &Url, session: Option<&UploadSession>) -> Url {
    let mut to = url.clone();
    match session.and_then(|s| s.host_id.as_deref()) {
        Some(host) if to.set_host(Some(host)).is_ok() => to,
        _ => url.clone(),
    }
}

/// A failure to reach the host at all (no connection, name unresolved):
/// what sends packets back from an unreachable `BITS-Host-Id`.
fn unreachable(error: &BitsError) -> bool {
    matches!(
        error,
        BitsError::CannotConnect { .. } | BitsError::NameNotResolved { .. }
    )
}

/// The source's size and modification time.
fn source_state(source: &Path) -> Result<(u64, Option<SystemTime>), BitsError> {
    match std::fs::metadata(source) {
        Ok(m) if m.is_file() => Ok((m.len(), m.modified().ok())),
        Ok(_) => Err(BitsError::FileNotFound {
            path: source.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BitsError::FileNotFound {
            path: source.display().to_string(),
        }),
        Err(e) => Err(BitsError::local("read", source.display(), e)),
    }
}

fn check_unchanged(source: &Path, session: &UploadSession) -> Result<(), BitsError> {
    let now = source_state(source)?;
    if now != (session.source_len, session.source_modified) {
        return Err(changed(source));
    }
    Ok(())
}

fn changed(source: &Path) -> BitsError {
    BitsError::LocalFileChanged {
        path: source.display().to_string(),
    }
}

/// `Content-Name`: the source's file name (its non-ASCII characters
/// dropped: a header value is ASCII).
fn content_name(source: &Path) -> String {
    source
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .collect()
        })
        .unwrap_or_default()
}

/// The first byte of a 206's `Content-Range: bytes a-b/total`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    header(headers, "content-range")?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The error of an Ack that refused `packet`.
fn refused(response: &Response, packet: &str) -> BitsError {
    let status = response.status;
    let code = header(&response.headers, "bits-error-code")
        .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x").trim_start_matches("0X"), 16).ok())
        .map_or(Hresult::http_status(status), Hresult);
    let context = match header(&response.headers, "bits-error-context") {
        Some(c) if c.eq_ignore_ascii_case("0x7") || c == "7" => ErrorContext::RemoteApplication,
        _ => ErrorContext::RemoteFile,
    };
    BitsError::UploadRefused {
        status,
        code,
        context,
        what: format!("{packet} refused"),
    }
}
