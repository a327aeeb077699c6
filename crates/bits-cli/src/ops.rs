//! The operations a user asks of an existing job, as data, so that the same
//! code applies them whether the CLI edits the store itself (no daemon
//! running) or the daemon does (after stopping the job's transfer).

use std::fmt;
use std::path::PathBuf;

use bits_core::{
    engine, AuthScheme, AuthTarget, BitsError, ClientCertificate, Credentials, Hresult, Job, PinSet,
    Priority, ProxySettings, SecurityFlags,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend;
use crate::error::Failure;
use crate::store::Store;

/// One operation on one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum JobOp {
    /// `add-file`: LOCAL is already absolute and its folder checked.
    AddFile {
        /// The remote URL.
        url: String,
        /// The absolute local path.
        local: PathBuf,
    },
    /// `set-security-flags`.
    SetSecurityFlags {
        /// The raw value (validated again here).
        flags: u32,
    },
    /// `replace-remote-prefix`.
    ReplaceRemotePrefix {
        /// The prefix to replace.
        old: String,
        /// Its replacement.
        new: String,
    },
    /// `set-max-rate`.
    SetMaxRate {
        /// Bytes per second; `None`: off.
        rate: Option<u64>,
    },
    /// `set-min-retry-delay`.
    SetMinRetryDelay {
        /// Seconds.
        seconds: u64,
    },
    /// `set-no-progress-timeout`.
    SetNoProgressTimeout {
        /// Seconds.
        seconds: u64,
    },
    /// `set-priority`.
    SetPriority {
        /// The new priority.
        priority: Priority,
    },
    /// `set-custom-headers` (none: removes them).
    SetCustomHeaders {
        /// The `Name: value` lines, checked by [`Job::set_custom_headers`].
        headers: HeaderLines,
    },
    /// `make-custom-headers-write-only`.
    MakeCustomHeadersWriteOnly,
    /// `set-client-certificate` (with the certificate the job's backend
    /// loaded and checked in the command) and `remove-client-certificate`
    /// (`None`).
    SetClientCertificate {
        /// What the job stores.
        certificate: Option<ClientCertificate>,
    },
    /// `set-http-method`.
    SetHttpMethod {
        /// The method (checked by [`Job::set_http_method`]).
        method: String,
    },
    /// `set-server-cert-pins` (`None`: removes them).
    SetServerCertPins {
        /// The pins.
        pins: Option<PinSet>,
    },
    /// `set-proxy-settings` (parsed by the command; checked again here by
    /// the job's backend).
    SetProxySettings {
        /// The new settings.
        proxy: ProxySettings,
    },
    /// `set-credentials`. The socket carries the password (the socket is
    /// the user's own, 0600); `Debug`, which the daemon logs, never shows
    /// it ([`Credentials`]'s own `Debug` leaves it out).
    SetCredentials {
        /// What the job stores.
        credentials: Credentials,
    },
    /// `remove-credentials`.
    RemoveCredentials {
        /// Server or proxy.
        target: AuthTarget,
        /// The scheme.
        scheme: AuthScheme,
    },
    /// `set-reply-file-name` (made absolute by the command).
    SetReplyFileName {
        /// The reply's path.
        path: std::path::PathBuf,
    },
    /// `resume`.
    Resume,
    /// `suspend`.
    Suspend,
    /// `complete`.
    Complete,
    /// `cancel`.
    Cancel,
}

/// Custom header lines on their way to a job. `Debug` (which the daemon's
/// log uses for every operation) shows the names only: values may be
/// secrets (`docs/spec/http-options.md`, "Custom headers").
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeaderLines(pub Vec<String>);

impl fmt::Debug for HeaderLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A name only when it is a plain token: a line typed without its
        // colon may hold a value.
        let name = |line: &str| match line.split_once(':') {
            Some((n, _))
                if !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
            {
                format!("{n}: …")
            }
            _ => "(not a header)".to_string(),
        };
        f.debug_list().entries(self.0.iter().map(|l| name(l))).finish()
    }
}

impl JobOp {
    /// Whether a running transfer of the job must stop before the operation
    /// applies (everything but `resume`, which leaves an active job alone).
    pub fn stops_transfer(&self) -> bool {
        !matches!(self, JobOp::Resume)
    }
}

/// Applies `op` to `job`. Returns the success code (`S_OK`, `S_FALSE`,
/// `BG_S_PARTIAL_COMPLETE`…) and whether the job must be saved even on
/// failure (`complete` and `cancel` touch files, so whatever they managed
/// is recorded).
pub fn apply(job: &mut Job, op: &JobOp) -> (Result<Hresult, BitsError>, bool) {
    match op {
        JobOp::AddFile { url, local } => (job.add_file(url, local).map(|()| Hresult::S_OK), false),
        JobOp::SetSecurityFlags { flags } => {
            let result = SecurityFlags::new(*flags).and_then(|flags| {
                // The state check first, so a final job says "invalid state"
                // whatever its backend.
                bits_core::state::check_operation(
                    job.state(),
                    job.job_type,
                    bits_core::Operation::SetSecurityFlags,
                )?;
                let backend = backend::named(&job.backend)?;
                job.set_security_flags(flags, |p| backend.check_policy(p))
            });
            (result.map(|()| Hresult::S_OK), false)
        }
        JobOp::ReplaceRemotePrefix { old, new } => (job.replace_remote_prefix(old, new), false),
        JobOp::SetMaxRate { rate } => (job.set_max_rate(*rate).map(|()| Hresult::S_OK), false),
        JobOp::SetMinRetryDelay { seconds } => {
            (job.set_min_retry_delay(*seconds).map(|()| Hresult::S_OK), false)
        }
        JobOp::SetNoProgressTimeout { seconds } => (
            job.set_no_progress_timeout(*seconds).map(|()| Hresult::S_OK),
            false,
        ),
        JobOp::SetPriority { priority } => (job.set_priority(*priority).map(|()| Hresult::S_OK), false),
        JobOp::SetCustomHeaders { headers } => {
            (job.set_custom_headers(&headers.0).map(|()| Hresult::S_OK), false)
        }
        JobOp::MakeCustomHeadersWriteOnly => (
            job.make_custom_headers_write_only().map(|()| Hresult::S_OK),
            false,
        ),
        JobOp::SetClientCertificate { certificate } => {
            let name = job.backend.clone();
            let result =
                job.set_client_certificate(certificate.clone(), |p| backend::named(&name)?.check_policy(p));
            (result.map(|()| Hresult::S_OK), false)
        }
        JobOp::SetHttpMethod { method } => (job.set_http_method(method).map(|()| Hresult::S_OK), false),
        JobOp::SetServerCertPins { pins } => {
            let name = job.backend.clone();
            let result = job.set_server_cert_pins(pins.clone(), |p| backend::named(&name)?.check_policy(p));
            (result.map(|()| Hresult::S_OK), false)
        }
        JobOp::SetProxySettings { proxy } => {
            let result = bits_core::state::check_operation(
                job.state(),
                job.job_type,
                bits_core::Operation::SetProperty,
            )
            .and_then(|()| {
                // The state first, so a final job says "invalid state"
                // whatever its backend.
                let backend = backend::named(&job.backend)?;
                job.set_proxy_settings(proxy.clone(), |p| backend.check_policy(p))
            });
            (result.map(|()| Hresult::S_OK), false)
        }
        JobOp::SetCredentials { credentials } => (
            job.set_credentials(credentials.clone()).map(|()| Hresult::S_OK),
            false,
        ),
        JobOp::RemoveCredentials { target, scheme } => (
            job.remove_credentials(*target, *scheme).map(|()| Hresult::S_OK),
            false,
        ),
        JobOp::SetReplyFileName { path } => (job.set_reply_file_name(path).map(|()| Hresult::S_OK), false),
        JobOp::Resume => (job.resume().map(|()| Hresult::S_OK), false),
        JobOp::Suspend => (job.suspend().map(|()| Hresult::S_OK), false),
        JobOp::Complete => (engine::complete(job), true),
        JobOp::Cancel => (engine::cancel(job), true),
    }
}

/// Applies `op` to job `id` in the store, in one transaction.
pub fn apply_stored(store: &Store, id: Uuid, op: &JobOp) -> Result<Hresult, Failure> {
    store
        .update(id, |job| apply(job, op))?
        .map_err(|e| Failure::from_bits(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_never_reach_the_log() {
        let op = JobOp::SetCustomHeaders {
            headers: HeaderLines(vec![
                "Authorization: Bearer s3cret".into(),
                "X-A:b".into(),
                "Authorization Bearer t0ken".into(),
                "Authorization Bearer t0ken: x".into(),
            ]),
        };
        let text = format!("{op:?}");
        assert!(text.contains("Authorization") && text.contains("X-A"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains(":b"), "{text}");
        assert!(!text.contains("t0ken"), "{text}");
        // The socket carries them whole.
        let line = serde_json::to_string(&op).unwrap();
        assert!(line.contains("Bearer s3cret"), "{line}");
        assert_eq!(serde_json::from_str::<JobOp>(&line).unwrap(), op);
    }

    #[test]
    fn passwords_never_reach_the_log() {
        let credentials =
            Credentials::new(AuthTarget::Proxy, AuthScheme::Digest, "alice", "pw-7f3a9c-SECRET").unwrap();
        let op = JobOp::SetCredentials { credentials };
        let text = format!("{op:?}");
        assert!(text.contains("alice") && text.contains("Digest"), "{text}");
        assert!(!text.contains("pw-7f3a9c"), "{text}");
        let request = crate::ipc::Request::Job {
            id: Uuid::new_v4(),
            op: op.clone(),
        };
        assert!(!format!("{request:?}").contains("pw-7f3a9c"));
        // The socket carries it whole.
        let line = serde_json::to_string(&op).unwrap();
        assert!(line.contains("pw-7f3a9c-SECRET"), "{line}");
        assert_eq!(serde_json::from_str::<JobOp>(&line).unwrap(), op);
    }

    #[test]
    fn a_refused_setter_leaves_the_job_unchanged() {
        let mut job = Job::new("j", bits_core::JobType::Download, "openssl");
        let before = job.clone();
        let long = format!("X: {}", "a".repeat(16_384));
        for (op, code) in [
            (
                JobOp::SetCustomHeaders {
                    headers: HeaderLines(vec!["Range: bytes=0-".into()]),
                },
                Hresult::E_INVALIDARG,
            ),
            (
                JobOp::SetCustomHeaders {
                    headers: HeaderLines(vec![long]),
                },
                Hresult::BG_E_STRING_TOO_LONG,
            ),
            (
                JobOp::SetHttpMethod {
                    method: "post".into(),
                },
                Hresult::E_INVALIDARG,
            ),
        ] {
            let (result, _) = apply(&mut job, &op);
            assert_eq!(result.unwrap_err().hresult(), code, "{op:?}");
            assert_eq!(job, before, "{op:?}");
        }
    }
}
