//! The transfer engine: drives one job, file by file, through a
//! [`Transport`](crate::Transport).
//!
//! (Signatures fixed; bodies are being written — see issue 2.)

use std::time::Duration;

use crate::error::{BitsError, Hresult};
use crate::job::Job;
use crate::state::JobState;
use crate::transport::SharedTransport;

/// Receives a job's progress and state changes while the engine runs it.
/// Calls come from the engine's task; keep them quick (throttle persistence
/// yourself).
pub trait Observer: Send {
    /// Bytes moved (called per chunk written; the job's counters are current).
    fn on_progress(&mut self, job: &Job);
    /// The job's state, error or files changed (a redirect report, a file
    /// finished, a restart).
    fn on_change(&mut self, job: &Job);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_progress(&mut self, _job: &Job) {}
    fn on_change(&mut self, _job: &Job) {}
}

/// How one run of [`Engine::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// The job's state now: TRANSFERRED, TRANSIENT_ERROR or ERROR (or the
    /// state it was in, when it was not runnable).
    pub state: JobState,
    /// For TRANSIENT_ERROR: how long to wait before the retry timer fires
    /// (the minimum retry delay, or a longer `Retry-After`).
    pub retry_after: Option<Duration>,
}

/// Timeouts and limits of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Redirect hops before `ERROR_WINHTTP_REDIRECT_FAILED` (10).
    pub max_redirects: usize,
    /// No byte for this long while reading a body is a transient timeout.
    pub read_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_redirects: 10,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Drives jobs through a transport.
#[derive(Debug, Clone)]
pub struct Engine {
    transport: SharedTransport,
    options: EngineOptions,
}

impl Engine {
    /// An engine over `transport` with default options.
    pub fn new(transport: SharedTransport) -> Engine {
        Engine::with_options(transport, EngineOptions::default())
    }

    /// An engine over `transport` with `options`.
    pub fn with_options(transport: SharedTransport, options: EngineOptions) -> Engine {
        Engine { transport, options }
    }

    /// The transport.
    pub fn transport(&self) -> &SharedTransport {
        &self.transport
    }

    /// Transfers the pending files of a QUEUED job until every file is done
    /// (TRANSFERRED), or a failure (TRANSIENT_ERROR or ERROR). The future is
    /// cancel-safe: dropping it (suspend, cancel, shutdown) leaves the
    /// temporary files and the job's counters consistent with each other.
    pub async fn run(&self, job: &mut Job, observer: &mut dyn Observer) -> RunOutcome {
        let _ = (&self.options, job, observer);
        todo!("engine body")
    }
}

/// `complete`: moves every finished temporary file to its LOCAL name
/// atomically (fsync, rename) and puts the job in ACKNOWLEDGED. A download in
/// ERROR with some files finished keeps those and drops the rest
/// (`BG_S_PARTIAL_COMPLETE`).
pub fn complete(job: &mut Job) -> Result<Hresult, BitsError> {
    let _ = job;
    todo!("complete")
}

/// `cancel`: deletes every temporary file and puts the job in CANCELLED.
pub fn cancel(job: &mut Job) -> Result<Hresult, BitsError> {
    let _ = job;
    todo!("cancel")
}
