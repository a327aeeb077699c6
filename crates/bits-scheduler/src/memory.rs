//! An in-memory source and sink for the tests: jobs in a map, every save
//! and every `changed` recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bits_core::{Job, JobState};
use uuid::Uuid;

use crate::seams::{Error, JobSource, StateSink};

/// What the sink was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A save at once, of a job in this state.
    Saved(JobState),
    /// A progress save, of a job in this state.
    Progress(JobState),
    /// `changed`.
    Changed,
}

/// Source and sink at once; clones share the jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    /// The jobs, each with the order it was added in (ties of priority and
    /// creation time go to the first added, as a store's row order does).
    jobs: HashMap<Uuid, (usize, Job)>,
    added: usize,
    /// Every save and `changed`, in order.
    log: Vec<(Uuid, Entry)>,
    /// `load` and `runnable` fail while set.
    broken: bool,
}

impl Memory {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces `job` (as another process would).
    pub(crate) fn put(&self, job: &Job) {
        let mut inner = self.inner();
        inner.added += 1;
        let added = inner.added;
        let order = inner.jobs.get(&job.id).map_or(added, |(n, _)| *n);
        inner.jobs.insert(job.id, (order, job.clone()));
    }

    /// Job `id` as last saved.
    pub(crate) fn get(&self, id: Uuid) -> Job {
        self.inner().jobs[&id].1.clone()
    }

    /// What the sink was told about job `id`, in order.
    pub(crate) fn log(&self, id: Uuid) -> Vec<Entry> {
        let inner = self.inner();
        inner.log.iter().filter(|e| e.0 == id).map(|e| e.1).collect()
    }

    /// How many times watchers were told about job `id`.
    pub(crate) fn changes(&self, id: Uuid) -> usize {
        self.log(id).iter().filter(|e| **e == Entry::Changed).count()
    }

    /// Makes reads fail (`true`) or work again.
    pub(crate) fn break_reads(&self, broken: bool) {
        self.inner().broken = broken;
    }

    fn record(&self, job: &Job, entry: Entry) {
        let mut inner = self.inner();
        inner.log.push((job.id, entry));
        let order = inner.jobs.get(&job.id).map_or(0, |(n, _)| *n);
        inner.jobs.insert(job.id, (order, job.clone()));
    }
}

impl JobSource for Memory {
    fn runnable(&self) -> Result<Vec<Uuid>, Error> {
        let inner = self.inner();
        if inner.broken {
            return Err("the memory is broken".into());
        }
        let mut jobs: Vec<&(usize, Job)> = inner
            .jobs
            .values()
            .filter(|(_, j)| {
                matches!(
                    j.state(),
                    JobState::Queued | JobState::Connecting | JobState::Transferring
                )
            })
            .collect();
        jobs.sort_by_key(|(n, j)| (j.priority, j.creation_time, *n));
        Ok(jobs.iter().map(|(_, j)| j.id).collect())
    }

    fn load(&self, id: Uuid) -> Result<Option<Job>, Error> {
        let inner = self.inner();
        if inner.broken {
            return Err("the memory is broken".into());
        }
        Ok(inner.jobs.get(&id).map(|(_, j)| j.clone()))
    }

    fn active(&self) -> Result<Vec<Job>, Error> {
        let inner = self.inner();
        let mut jobs: Vec<&(usize, Job)> = inner
            .jobs
            .values()
            .filter(|(_, j)| j.state().is_active())
            .collect();
        jobs.sort_by_key(|(n, _)| *n);
        Ok(jobs.iter().map(|(_, j)| j.clone()).collect())
    }
}

impl StateSink for Memory {
    fn save(&self, job: &Job) -> Result<(), Error> {
        self.record(job, Entry::Saved(job.state()));
        Ok(())
    }

    fn save_progress(&self, job: &Job) -> Result<(), Error> {
        self.record(job, Entry::Progress(job.state()));
        Ok(())
    }

    fn changed(&self, id: Uuid) {
        self.inner().log.push((id, Entry::Changed));
    }
}
