//! The operations a user asks of an existing job, as data, so that the same
//! code applies them whether the CLI edits the store itself (no daemon
//! running) or the daemon does (after stopping the job's transfer).

use std::path::PathBuf;

use bits_core::{engine, BitsError, Hresult, Job, Priority, SecurityFlags};
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
    /// `resume`.
    Resume,
    /// `suspend`.
    Suspend,
    /// `complete`.
    Complete,
    /// `cancel`.
    Cancel,
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
        JobOp::SetMinRetryDelay { seconds } => {
            (job.set_min_retry_delay(*seconds).map(|()| Hresult::S_OK), false)
        }
        JobOp::SetNoProgressTimeout { seconds } => (
            job.set_no_progress_timeout(*seconds).map(|()| Hresult::S_OK),
            false,
        ),
        JobOp::SetPriority { priority } => (job.set_priority(*priority).map(|()| Hresult::S_OK), false),
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
