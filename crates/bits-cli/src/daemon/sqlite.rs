//! The SQLite store as the scheduler's [`JobSource`] and [`StateSink`],
//! with `subscribe` connections as the watchers a state change wakes.

use std::sync::{Arc, Mutex, MutexGuard};

use bits_core::Job;
use bits_scheduler::{Error, JobSource, StateSink};
use uuid::Uuid;

use super::SaveListener;
use crate::ipc::Changes;
use crate::store::Store;

/// The daemon's store, shared by the scheduler (through the seams), the
/// transfers' observers and the daemon's own edits (operations, prune).
/// A mutex rather than a `RefCell` because the engine's observers are
/// `Send`; every user runs on the daemon's one thread, so it is never
/// contended.
#[derive(Clone)]
pub(super) struct StoreJobs {
    store: Arc<Mutex<Store>>,
    changes: Changes,
    /// Told of every save ([`super::Hooks::on_save`]).
    listener: Option<SaveListener>,
}

impl std::fmt::Debug for StoreJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreJobs")
            .field("store", &self.store)
            .field("listener", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl StoreJobs {
    pub(super) fn new(store: Store, changes: Changes) -> StoreJobs {
        StoreJobs {
            store: Arc::new(Mutex::new(store)),
            changes,
            listener: None,
        }
    }

    /// Tells `listener` of every save from now on.
    pub(super) fn with_listener(mut self, listener: Option<SaveListener>) -> StoreJobs {
        self.listener = listener;
        self
    }

    /// Job `id` was changed in the store by the daemon's own edit (an
    /// operation): the listener, if any, is told as of a save.
    pub(super) fn saved(&self, id: Uuid) {
        if let Some(listener) = &self.listener {
            if let Ok(Some(job)) = self.store().get(id) {
                listener(&job);
            }
        }
    }

    /// The store, for an edit of the daemon's own.
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobSource for StoreJobs {
    fn runnable(&self) -> Result<Vec<Uuid>, Error> {
        Ok(self.store().runnable_ids()?)
    }

    fn load(&self, id: Uuid) -> Result<Option<Job>, Error> {
        Ok(self.store().get(id)?)
    }

    fn active(&self) -> Result<Vec<Job>, Error> {
        Ok(self.store().active()?)
    }
}

impl StateSink for StoreJobs {
    fn save(&self, job: &Job) -> Result<(), Error> {
        self.store().save(job)?;
        if let Some(listener) = &self.listener {
            listener(job);
        }
        Ok(())
    }

    fn changed(&self, _id: Uuid) {
        self.changes.announce();
    }
}

#[cfg(test)]
mod tests {
    use bits_core::{Event, JobState, JobType, Priority};

    use super::*;

    #[test]
    fn the_store_gives_runnable_jobs_by_priority_then_age_and_keeps_saves() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = StoreJobs::new(Store::open(tmp.path()).unwrap(), Changes::default());
        let job = |name: &str, priority: Priority| {
            let mut j = Job::new(name, JobType::Download, "openssl");
            j.add_file("http://127.0.0.1/x", &tmp.path().join(name)).unwrap();
            j.set_priority(priority).unwrap();
            j.resume().unwrap();
            jobs.store().insert(&j).unwrap();
            j
        };
        let old = job("old", Priority::Normal);
        let mut waiting = job("waiting", Priority::Foreground);
        let new = job("new", Priority::Normal);
        let low = job("low", Priority::Low);
        let high = job("high", Priority::High);
        waiting.apply(Event::Scheduled);
        waiting.fail(
            &bits_core::BitsError::Timeout { what: "test".into() },
            None,
            std::time::SystemTime::now(),
        );
        StateSink::save(&jobs, &waiting).unwrap();
        assert_eq!(jobs.runnable().unwrap(), [high.id, old.id, new.id, low.id]);
        assert_eq!(
            jobs.load(waiting.id).unwrap().unwrap().state(),
            JobState::TransientError
        );
        assert_eq!(jobs.active().unwrap().len(), 5);
        assert!(jobs.load(Uuid::new_v4()).unwrap().is_none());
    }
}
