//! A job spec (`fleet.md`, "Job specs"): the JSON an operator publishes,
//! and how an agent turns it into a local [`Job`] under its own policy.
//!
//! Two kinds of refusal, kept apart on purpose:
//! - **Malformed** ([`Rejection`]): the document is wrong for every agent
//!   (not JSON, an unknown or missing field, no file, a bad URL, priority
//!   or proxy list). It makes no job; the agent acks it and reports it on
//!   `bits.rejected.<agent>`.
//! - **Not allowed here**: a local path outside the agent's root, a
//!   security-flag bit the agent does not allow (`E_ACCESSDENIED`), or a
//!   value its transport cannot honour (`E_NOTIMPL`). The job is stored in
//!   ERROR with that HRESULT, so the operator sees why in `fleet status`,
//!   and nothing is ever written for it.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use bits_core::{BitsError, ConnectionPolicy, Job, JobType, Priority, ProxySettings, SecurityFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The security-flag bits an agent allows unless told otherwise: CRL
/// checking (0x0001) and the redirect policies (0x0F00). Ignoring a
/// certificate fault needs the agent's owner to allow it.
pub const DEFAULT_ALLOW_FLAGS: u32 = 0x0F01;

/// A job spec as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The spec id, chosen by the submitter; each agent's local job has
    /// this id, so a spec delivered twice makes one job.
    pub id: Uuid,
    /// The job's display name (default: `fleet-` and the id's first 8
    /// hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `DOWNLOAD` (default), `UPLOAD` or `UPLOAD_REPLY`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<SpecType>,
    /// The files, at least one.
    pub files: Vec<SpecFile>,
    /// Security flags: a number, or a string in decimal or `0x` hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_flags: Option<Flags>,
    /// `FOREGROUND`, `HIGH`, `NORMAL` (default) or `LOW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Seconds before a retry after a transient error (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_delay: Option<u64>,
    /// Seconds without progress before a transient error is fatal
    /// (default 1209600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_progress_timeout: Option<u64>,
    /// `"Name: value"` lines sent with every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_headers: Vec<String>,
    /// Proxy usage (default: preconfig, the agent's environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<SpecProxy>,
    /// Whether the agent completes the job itself once TRANSFERRED
    /// (default yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// The job type of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpecType {
    /// A download.
    Download,
    /// An upload.
    Upload,
    /// An upload with a reply.
    UploadReply,
}

/// One file of a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// The http or https URL.
    pub remote_name: String,
    /// Where it goes: relative to the agent's root, or absolute (and then
    /// under the root).
    pub local_name: PathBuf,
}

/// Security flags as a number or as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Flags {
    /// `512`.
    Number(u32),
    /// `"0x0200"` or `"512"`.
    Text(String),
}

/// A spec's proxy usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecProxy {
    /// `preconfig`, `no_proxy` or `override`.
    pub usage: String,
    /// For `override`: the proxies, separated by `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// For `override`: the bypass list, separated by `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<String>,
}

/// Why a spec makes no job at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// What an agent allows a spec to do.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The download root, canonical.
    pub root: PathBuf,
    /// The security-flag bits a spec may set.
    pub allow_flags: u32,
    /// The backend the agent's jobs use.
    pub backend: String,
}

impl Spec {
    /// Parses a spec: any JSON that is not exactly a spec (an unknown
    /// field included) is a [`Rejection`], as is a spec with no file.
    pub fn parse(bytes: &[u8]) -> Result<Spec, Rejection> {
        let spec: Spec =
            serde_json::from_slice(bytes).map_err(|e| Rejection(format!("not a job spec: {e}")))?;
        if spec.files.is_empty() {
            return Err(Rejection("the spec has no file".into()));
        }
        Ok(spec)
    }

    /// Whether the agent completes the job itself.
    pub fn completes(&self) -> bool {
        self.complete.unwrap_or(true)
    }

    /// The local job of this spec under `policy`: QUEUED when allowed, in
    /// ERROR with the reason when not (`check` is the backend's
    /// `check_policy`). A malformed value is a [`Rejection`]. The folders
    /// of allowed files are not created here: see [`make_folders`].
    pub fn to_job(
        &self,
        policy: &Policy,
        check: impl Fn(&ConnectionPolicy) -> Result<(), BitsError>,
    ) -> Result<Job, Rejection> {
        let reject = |what: &str, e: BitsError| Rejection(format!("{what}: {e}"));
        let job_type = match self.job_type.unwrap_or(SpecType::Download) {
            SpecType::Download => JobType::Download,
            SpecType::Upload => JobType::Upload,
            SpecType::UploadReply => JobType::UploadReply,
        };
        let name = self
            .display_name
            .clone()
            .unwrap_or_else(|| format!("fleet-{}", &self.id.simple().to_string()[..8]));
        let mut job = Job::new(name, job_type, policy.backend.clone());
        job.id = self.id;
        if let Some(p) = &self.priority {
            let p = Priority::parse(p).map_err(|e| reject("priority", e))?;
            job.set_priority(p).map_err(|e| reject("priority", e))?;
        }
        if let Some(s) = self.min_retry_delay {
            job.set_min_retry_delay(s)
                .map_err(|e| reject("min_retry_delay", e))?;
        }
        if let Some(s) = self.no_progress_timeout {
            job.set_no_progress_timeout(s)
                .map_err(|e| reject("no_progress_timeout", e))?;
        }
        if !self.custom_headers.is_empty() {
            job.set_custom_headers(&self.custom_headers)
                .map_err(|e| reject("custom_headers", e))?;
        }
        // Every file is added (so `fleet status` shows them), the first
        // one outside the root remembered.
        let mut denied: Option<(BitsError, usize)> = None;
        for (i, f) in self.files.iter().enumerate() {
            let local = policy.root.join(&f.local_name);
            let local = lexical(&local).ok_or_else(|| {
                Rejection(format!(
                    "local name {} leaves the file system root",
                    f.local_name.display()
                ))
            })?;
            if denied.is_none() {
                if let Err(e) = contained(&local, &policy.root) {
                    denied = Some((e, i));
                }
            }
            if job_type != JobType::Download && denied.is_some() {
                // An upload's source outside the root is never looked at.
                continue;
            }
            job.add_file(&f.remote_name, &local)
                .map_err(|e| reject(&format!("file {i}"), e))?;
        }
        let flags = match &self.security_flags {
            None => SecurityFlags::DEFAULT.bits(),
            Some(Flags::Number(n)) => *n,
            Some(Flags::Text(t)) => SecurityFlags::parse(t)
                .map(SecurityFlags::bits)
                .or_else(|e| match e {
                    BitsError::NotImplemented { .. } => parse_bits(t).ok_or(e),
                    e => Err(e),
                })
                .map_err(|e| reject("security_flags", e))?,
        };
        if denied.is_none() && flags & !policy.allow_flags != 0 {
            denied = Some((
                BitsError::AccessDenied {
                    what: format!(
                        "security flags 0x{flags:04X} set 0x{:04X}, which this agent does not allow (--allow-flags 0x{:04X})",
                        flags & !policy.allow_flags,
                        policy.allow_flags
                    ),
                },
                usize::MAX,
            ));
        }
        if denied.is_none() {
            let set = SecurityFlags::new(flags).and_then(|f| job.set_security_flags(f, &check));
            if let Err(e) = set {
                denied = Some((e, usize::MAX));
            }
        }
        if let Some(p) = &self.proxy {
            let settings = ProxySettings::parse(&p.usage, p.list.as_deref(), p.bypass.as_deref())
                .map_err(|e| reject("proxy", e))?;
            if let Err(e) = job.set_proxy_settings(settings, &check) {
                if denied.is_none() {
                    denied = Some((e, usize::MAX));
                }
            }
        }
        if job.files.is_empty() {
            // An upload whose one source is outside the root: the job
            // cannot be resumed into ERROR without a file, so it is refused.
            let (e, _) = denied.unwrap_or((BitsError::Empty, 0));
            return Err(Rejection(e.to_string()));
        }
        job.resume().map_err(|e| reject("resume", e))?;
        if let Some((e, i)) = denied {
            let index = (i != usize::MAX).then_some(i);
            job.fail(&e, index, SystemTime::now());
        }
        Ok(job)
    }
}

/// Parses a number in decimal or `0x` hex, whatever bits it sets.
fn parse_bits(text: &str) -> Option<u32> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// `path` with `.` and `..` resolved without the file system; `None` when
/// `..` climbs above `/`.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// Whether `local` (lexically normal) lies under `root` (canonical), also
/// through the symlinks of its folders that exist now.
fn contained(local: &Path, root: &Path) -> Result<(), BitsError> {
    let outside = || BitsError::AccessDenied {
        what: format!(
            "local name {} is outside the agent's root {}",
            local.display(),
            root.display()
        ),
    };
    if !local.starts_with(root) || local == root {
        return Err(outside());
    }
    // The deepest folder that exists, resolved: a symlink in the root
    // that points elsewhere leaves it.
    let mut folder = local.parent();
    while let Some(f) = folder {
        if let Ok(real) = f.canonicalize() {
            return if real.starts_with(root) {
                Ok(())
            } else {
                Err(outside())
            };
        }
        folder = f.parent();
    }
    Err(outside())
}

/// Creates the missing folders of a download job's files (all under the
/// root, as [`Spec::to_job`] checked), before the job is stored.
///
/// # Errors
/// The folder and the OS error, for a job the caller then puts in ERROR.
pub fn make_folders(job: &Job, root: &Path) -> Result<(), BitsError> {
    if job.job_type != JobType::Download {
        return Ok(());
    }
    for (i, f) in job.files.iter().enumerate() {
        let Some(folder) = f.local_name.parent() else {
            continue;
        };
        std::fs::create_dir_all(folder).map_err(|source| BitsError::LocalFile {
            operation: "create the folder",
            path: folder.display().to_string(),
            source,
        })?;
        // Created through no symlink leaving the root.
        contained(&f.local_name, root).map_err(|e| {
            tracing::warn!(file = i, "{e}");
            e
        })?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
