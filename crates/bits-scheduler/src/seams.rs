//! The two seams a [`crate::Scheduler`] runs between, a [`JobSource`] and a
//! [`StateSink`], and [`Transports`], how it gets a job's transport.
//!
//! Every call is synchronous and made on the scheduler's thread (the
//! sink's also from the transfers' observers, on that same thread): the
//! engine's [`bits_core::Observer`] is synchronous, and a scheduler that
//! never waits on its store between two transfers' awaits needs no locks.
//! A source or sink over the network keeps a local view and sends its
//! writes from a task of its own rather than waiting for the peer.

use bits_core::{BitsError, Job, SharedTransport};
use uuid::Uuid;

/// What a source or sink failed with. The scheduler logs it and goes on:
/// a job it cannot load is skipped until the next pass, and a save that
/// failed is made again by the next one.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where jobs come from and how they are found.
pub trait JobSource {
    /// The ids of the jobs that may run now (QUEUED, CONNECTING or
    /// TRANSFERRING), in the order they get a slot: highest priority
    /// first (FOREGROUND, HIGH, NORMAL, LOW), then oldest first.
    fn runnable(&self) -> Result<Vec<Uuid>, Error>;

    /// Job `id` with its files as last saved, or `None` when it is gone.
    fn load(&self, id: Uuid) -> Result<Option<Job>, Error>;

    /// The jobs to recover when the scheduler starts: every job in
    /// QUEUED, CONNECTING, TRANSFERRING or TRANSIENT_ERROR.
    fn active(&self) -> Result<Vec<Job>, Error>;
}

/// Where a job's state goes.
///
/// `Send + Sync` because the observer of each transfer holds it, and the
/// engine's observers are `Send`.
pub trait StateSink: Send + Sync {
    /// Saves `job` now: a change of its state, error or files, which a
    /// restart must find.
    fn save(&self, job: &Job) -> Result<(), Error>;

    /// Saves a running `job`'s progress: called at most every
    /// [`crate::SAVE_INTERVAL`] per transfer, and when the engine waits
    /// for a sync. Losing one costs only a re-download of what the
    /// temporary files do not hold. Defaults to [`StateSink::save`].
    fn save_progress(&self, job: &Job) -> Result<(), Error> {
        self.save(job)
    }

    /// Tells whoever watches that job `id`'s state changed; called after
    /// the save that changed it.
    fn changed(&self, id: Uuid);
}

/// How the scheduler gets a transport for a job's backend name
/// ([`Job::backend`]). The scheduler asks once per name and keeps what
/// it got (with its connection pool and caches) for every later job of
/// that backend; a failure is not kept, so the next job asks again.
pub trait Transports {
    /// The transport of backend `name`; `E_NOTIMPL` for a name this
    /// build cannot serve. A job whose backend fails goes to ERROR with
    /// that error.
    fn transport(&self, name: &str) -> Result<SharedTransport, BitsError>;
}

impl<F> Transports for F
where
    F: Fn(&str) -> Result<SharedTransport, BitsError>,
{
    fn transport(&self, name: &str) -> Result<SharedTransport, BitsError> {
        self(name)
    }
}
