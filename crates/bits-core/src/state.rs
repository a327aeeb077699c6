//! The nine BITS job states and the transition table, as pure code
//! (`docs/spec/states.md`). [`next_state`] is the only place that decides a
//! job's next state: [`crate::Job`] keeps its state private and changes it
//! only through this table.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::BitsError;
use crate::job::JobType;

/// `BG_JOB_STATE`. Serialized as its name (`TRANSIENT_ERROR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Waiting for its turn.
    Queued,
    /// Connecting to the server.
    Connecting,
    /// Moving bytes.
    Transferring,
    /// Paused; new jobs start here.
    Suspended,
    /// Stopped by a fatal error; `resume` after fixing it.
    Error,
    /// Stopped by a recoverable error; retried after the minimum retry delay.
    TransientError,
    /// Every file is transferred; `complete` makes them real.
    Transferred,
    /// Completed (final).
    Acknowledged,
    /// Cancelled (final).
    Cancelled,
}

impl JobState {
    /// Every state, in `BG_JOB_STATE` order.
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Connecting,
        JobState::Transferring,
        JobState::Suspended,
        JobState::Error,
        JobState::TransientError,
        JobState::Transferred,
        JobState::Acknowledged,
        JobState::Cancelled,
    ];

    /// The name as `bits` prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Connecting => "CONNECTING",
            JobState::Transferring => "TRANSFERRING",
            JobState::Suspended => "SUSPENDED",
            JobState::Error => "ERROR",
            JobState::TransientError => "TRANSIENT_ERROR",
            JobState::Transferred => "TRANSFERRED",
            JobState::Acknowledged => "ACKNOWLEDGED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    /// ACKNOWLEDGED and CANCELLED: read-only, refused by every operation.
    pub const fn is_final(self) -> bool {
        matches!(self, JobState::Acknowledged | JobState::Cancelled)
    }

    /// QUEUED, CONNECTING, TRANSFERRING and TRANSIENT_ERROR: the daemon owes
    /// this job work (now or after its retry delay).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Connecting | JobState::Transferring | JobState::TransientError
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user (or the library API) asks of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `add-file`.
    AddFile,
    /// `set-security-flags`.
    SetSecurityFlags,
    /// `replace-remote-prefix`.
    ReplaceRemotePrefix,
    /// `set-priority`, `set-min-retry-delay`, `set-no-progress-timeout`,
    /// display name.
    SetProperty,
    /// `resume`.
    Resume,
    /// `suspend`.
    Suspend,
    /// `cancel`.
    Cancel,
    /// `complete`.
    Complete,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 8] = [
        Operation::AddFile,
        Operation::SetSecurityFlags,
        Operation::ReplaceRemotePrefix,
        Operation::SetProperty,
        Operation::Resume,
        Operation::Suspend,
        Operation::Cancel,
        Operation::Complete,
    ];

    /// The command name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::AddFile => "add-file",
            Operation::SetSecurityFlags => "set-security-flags",
            Operation::ReplaceRemotePrefix => "replace-remote-prefix",
            Operation::SetProperty => "set-property",
            Operation::Resume => "resume",
            Operation::Suspend => "suspend",
            Operation::Cancel => "cancel",
            Operation::Complete => "complete",
        }
    }
}

/// Whether `op` is allowed on a job of `job_type` in `state`. Refusal is
/// `BG_E_INVALID_STATE` and must change nothing. Other checks (no files,
/// an upload's second file) belong to the operation itself.
pub fn check_operation(state: JobState, job_type: JobType, op: Operation) -> Result<(), BitsError> {
    let allowed = match op {
        _ if state.is_final() => false,
        Operation::Complete if job_type != JobType::Download => state == JobState::Transferred,
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(BitsError::InvalidState {
            operation: op.as_str(),
            state: state.as_str(),
        })
    }
}

/// What happens to a job: the engine's and the scheduler's events, and the
/// user's operations that move it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The scheduler picked the job.
    Scheduled,
    /// A connection (and its TLS handshake) succeeded.
    Connected,
    /// Bytes arrived.
    BytesMoved,
    /// One file finished; others remain.
    FileDone,
    /// The last file finished.
    AllFilesDone,
    /// A recoverable failure.
    TransientFailure,
    /// A fatal failure.
    FatalFailure,
    /// The retry delay of a TRANSIENT_ERROR job ran out.
    RetryTimer,
    /// No byte moved for the no-progress timeout.
    NoProgressTimeout,
    /// The scheduler stopped a running transfer (preempted, shut down, or
    /// found interrupted by a crash): the job waits for its turn again.
    Stopped,
    /// `resume` of a job with files left to transfer.
    Resume,
    /// `resume` of a job whose every file is transferred.
    ResumeTransferred,
    /// `suspend`.
    Suspend,
    /// `complete`.
    Complete,
    /// `cancel`.
    Cancel,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 15] = [
        Event::Scheduled,
        Event::Connected,
        Event::BytesMoved,
        Event::FileDone,
        Event::AllFilesDone,
        Event::TransientFailure,
        Event::FatalFailure,
        Event::RetryTimer,
        Event::NoProgressTimeout,
        Event::Stopped,
        Event::Resume,
        Event::ResumeTransferred,
        Event::Suspend,
        Event::Complete,
        Event::Cancel,
    ];

    /// A user's operation rather than something that happened to the job.
    pub const fn is_operation(self) -> bool {
        matches!(
            self,
            Event::Resume | Event::ResumeTransferred | Event::Suspend | Event::Complete | Event::Cancel
        )
    }
}

/// The state after `event` in `state`. Events that do not apply to a state
/// (a late byte after `suspend`, a timer on a job already resumed) leave it
/// unchanged, so a stale engine task can never move a job the user stopped.
/// Final states never change. The operations' own checks (which job types
/// may `complete` where) are [`check_operation`]'s.
pub fn next_state(state: JobState, event: Event) -> JobState {
    use Event as E;
    use JobState as S;
    match (state, event) {
        (S::Acknowledged | S::Cancelled, _) => state,
        (S::Queued, E::Scheduled) => S::Connecting,
        (S::Connecting | S::Transferring, E::Connected | E::BytesMoved | E::FileDone) => S::Transferring,
        (S::Queued | S::Connecting | S::Transferring, E::AllFilesDone) => S::Transferred,
        (S::Queued | S::Connecting | S::Transferring, E::TransientFailure) => S::TransientError,
        (S::Queued | S::Connecting | S::Transferring | S::TransientError, E::FatalFailure) => S::Error,
        (S::TransientError, E::RetryTimer) => S::Queued,
        (S::TransientError, E::NoProgressTimeout) => S::Error,
        (S::Connecting | S::Transferring, E::Stopped) => S::Queued,
        (S::Suspended | S::Error | S::TransientError | S::Transferred, E::Resume) => S::Queued,
        (S::Suspended | S::Error | S::TransientError, E::ResumeTransferred) => S::Transferred,
        (_, E::Suspend) => S::Suspended,
        (_, E::Complete) => S::Acknowledged,
        (_, E::Cancel) => S::Cancelled,
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState as S;

    #[test]
    fn final_states_refuse_every_operation() {
        for t in [JobType::Download, JobType::Upload, JobType::UploadReply] {
            for s in [S::Acknowledged, S::Cancelled] {
                for op in Operation::ALL {
                    let e = check_operation(s, t, op).unwrap_err();
                    assert_eq!(e.hresult().0, 0x8020_0002, "{op:?} in {s}");
                }
            }
        }
    }

    #[test]
    fn non_final_states_allow_every_operation_on_downloads() {
        for s in S::ALL.into_iter().filter(|s| !s.is_final()) {
            for op in Operation::ALL {
                assert!(check_operation(s, JobType::Download, op).is_ok(), "{op:?} in {s}");
            }
        }
    }

    #[test]
    fn upload_complete_only_when_transferred() {
        for t in [JobType::Upload, JobType::UploadReply] {
            for s in S::ALL.into_iter().filter(|s| !s.is_final()) {
                let r = check_operation(s, t, Operation::Complete);
                assert_eq!(r.is_ok(), s == S::Transferred, "{t:?} complete in {s}");
            }
        }
    }

    /// The whole table, written out: (from, event) → to. Any pair not listed
    /// leaves the state unchanged.
    const TABLE: &[(JobState, Event, JobState)] = &[
        (S::Queued, Event::Scheduled, S::Connecting),
        (S::Queued, Event::AllFilesDone, S::Transferred),
        (S::Queued, Event::TransientFailure, S::TransientError),
        (S::Queued, Event::FatalFailure, S::Error),
        (S::Connecting, Event::Connected, S::Transferring),
        (S::Connecting, Event::BytesMoved, S::Transferring),
        (S::Connecting, Event::FileDone, S::Transferring),
        (S::Connecting, Event::AllFilesDone, S::Transferred),
        (S::Connecting, Event::TransientFailure, S::TransientError),
        (S::Connecting, Event::FatalFailure, S::Error),
        (S::Transferring, Event::AllFilesDone, S::Transferred),
        (S::Transferring, Event::TransientFailure, S::TransientError),
        (S::Transferring, Event::FatalFailure, S::Error),
        (S::TransientError, Event::RetryTimer, S::Queued),
        (S::TransientError, Event::NoProgressTimeout, S::Error),
        (S::TransientError, Event::FatalFailure, S::Error),
        (S::Connecting, Event::Stopped, S::Queued),
        (S::Transferring, Event::Stopped, S::Queued),
        (S::Suspended, Event::Resume, S::Queued),
        (S::Error, Event::Resume, S::Queued),
        (S::TransientError, Event::Resume, S::Queued),
        (S::Transferred, Event::Resume, S::Queued),
        (S::Suspended, Event::ResumeTransferred, S::Transferred),
        (S::Error, Event::ResumeTransferred, S::Transferred),
        (S::TransientError, Event::ResumeTransferred, S::Transferred),
        (S::Queued, Event::Suspend, S::Suspended),
        (S::Connecting, Event::Suspend, S::Suspended),
        (S::Transferring, Event::Suspend, S::Suspended),
        (S::Error, Event::Suspend, S::Suspended),
        (S::TransientError, Event::Suspend, S::Suspended),
        (S::Transferred, Event::Suspend, S::Suspended),
        (S::Queued, Event::Complete, S::Acknowledged),
        (S::Connecting, Event::Complete, S::Acknowledged),
        (S::Transferring, Event::Complete, S::Acknowledged),
        (S::Suspended, Event::Complete, S::Acknowledged),
        (S::Error, Event::Complete, S::Acknowledged),
        (S::TransientError, Event::Complete, S::Acknowledged),
        (S::Transferred, Event::Complete, S::Acknowledged),
        (S::Queued, Event::Cancel, S::Cancelled),
        (S::Connecting, Event::Cancel, S::Cancelled),
        (S::Transferring, Event::Cancel, S::Cancelled),
        (S::Suspended, Event::Cancel, S::Cancelled),
        (S::Error, Event::Cancel, S::Cancelled),
        (S::TransientError, Event::Cancel, S::Cancelled),
        (S::Transferred, Event::Cancel, S::Cancelled),
    ];

    #[test]
    fn every_state_event_pair() {
        for s in S::ALL {
            for e in Event::ALL {
                let expected = TABLE
                    .iter()
                    .find(|(from, ev, _)| *from == s && *ev == e)
                    .map(|(_, _, to)| *to)
                    .unwrap_or(s);
                assert_eq!(next_state(s, e), expected, "{s} + {e:?}");
            }
        }
    }

    #[test]
    fn suspended_error_and_final_states_ignore_engine_events() {
        for s in [
            S::Suspended,
            S::Error,
            S::Transferred,
            S::Acknowledged,
            S::Cancelled,
        ] {
            // The events the engine and the scheduler send while a job runs.
            for e in Event::ALL.into_iter().filter(|e| !e.is_operation()) {
                assert_eq!(next_state(s, e), s, "{s} + {e:?}");
            }
        }
    }

    #[test]
    fn final_states_never_change() {
        for s in [S::Acknowledged, S::Cancelled] {
            for e in Event::ALL {
                assert_eq!(next_state(s, e), s, "{s} + {e:?}");
            }
        }
    }

    #[test]
    fn names_and_json() {
        for s in S::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(S::TransientError.is_active());
        assert!(!S::Suspended.is_active());
    }
}
