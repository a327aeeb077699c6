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
//! - `Close-Session` after the last Ack; the job is TRANSFERRED.
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

use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use url::Url;

use super::{auth, moved, Engine, Observer};
use crate::error::{BitsError, ErrorContext, Hresult};
use crate::job::{parse_remote_url, Job, UploadSession};
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
                    let id = self.create_session(job, i, &url, policy, &source).await?;
                    let s = UploadSession {
                        id,
                        acked: 0,
                        source_len: len,
                        source_modified: modified,
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
                Ok(()) => break,
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
        let id = job.files[i]
            .upload
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let response = self
            .packet(
                job,
                i,
                &url,
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
                    &url,
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
    ) -> Result<String, BitsError> {
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
        tracing::debug!(file = i, session = %id, "upload session created");
        Ok(id.to_owned())
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
    ) -> Result<(), BitsError> {
        let total = session.source_len;
        let mut acked = session.acked;
        let mut size = FIRST_FRAGMENT;
        let mut stalls = 0;
        while acked < total {
            check_unchanged(source, session)?;
            let n = size.min(total - acked);
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
            let response = self
                .packet(
                    job,
                    i,
                    url,
                    policy,
                    "Fragment",
                    &extra,
                    Body::File {
                        path: source,
                        offset: acked,
                        len: n,
                    },
                )
                .await?;
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
            acked = next;
            if let Some(s) = job.files[i].upload.as_mut() {
                s.acked = acked;
            }
            moved(job, i, acked, observer);
            let took = started.elapsed();
            if took < Duration::from_secs(2) && n == size {
                size = (size * 2).min(MAX_FRAGMENT);
            } else if took > Duration::from_secs(10) {
                size = (size / 2).max(FIRST_FRAGMENT);
            }
        }
        check_unchanged(source, session)
    }

    /// Sends one packet (`BITS_POST` with `BITS-Packet-Type: kind`) with
    /// the job's headers and `extra`, answering a `401` with the job's
    /// credentials; a 3xx is fatal.
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
        let method = Method::from_bytes(b"BITS_POST").expect("a token");
        let mut headers = self.headers_for(job.custom_headers_to_send());
        headers.insert("bits-packet-type", HeaderValue::from_str(kind).expect("a token"));
        for (name, value) in extra {
            let value = HeaderValue::from_str(value).map_err(|_| BitsError::InvalidArg {
                what: format!("{name} {value:?} is no header value"),
            })?;
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a token");
            headers.insert(name, value);
        }
        let mut round = auth::Round::default();
        loop {
            let mut request = Request::new(method.clone(), url.clone(), policy.clone());
            request.headers = headers.clone();
            let answer = self.auth.authorization(job.id, method.as_str(), url, true)?;
            round.sent = answer.is_some();
            if let Some(answer) = answer {
                request.headers.insert(http::header::AUTHORIZATION, answer);
            }
            request.body = Some(body.open()?);
            if let Some(check) = policy.validator() {
                check.set_file_index(i);
            }
            let response = self.transport.send(request).await?;
            if response.status == 401 {
                self.auth
                    .challenged(job, i, url, true, &response.headers, &mut round)?;
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

/// A packet's body.
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    /// None (`Content-Length: 0`).
    Empty,
    /// `len` bytes of `path` from `offset`.
    File { path: &'a Path, offset: u64, len: u64 },
}

impl Body<'_> {
    fn open(self) -> Result<RequestBody, BitsError> {
        match self {
            Body::Empty => Ok(RequestBody::from_bytes(bytes::Bytes::new())),
            Body::File { path, offset, len } => {
                let mut file =
                    std::fs::File::open(path).map_err(|e| BitsError::local("open", path.display(), e))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| BitsError::local("seek", path.display(), e))?;
                Ok(RequestBody::from_reader(
                    tokio::fs::File::from_std(file),
                    Some(len),
                ))
            }
        }
    }
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
