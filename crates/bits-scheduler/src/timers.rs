//! The timers of TRANSIENT_ERROR jobs: when each retries, and when its
//! no-progress timeout runs out. Only ids and instants: the jobs stay in
//! the source until a timer fires.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use bits_core::Job;
use uuid::Uuid;

/// How long after its deadline a no-progress timer fires, so that the
/// job's own clock ([`Job::no_progress_expired`], wall time) agrees it ran
/// out.
const GIVE_UP_SLACK: Duration = Duration::from_millis(20);

/// When a timer that fired before the job's clock agreed looks again.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// When a TRANSIENT_ERROR job wakes up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wake {
    pub(crate) retry_at: Instant,
    pub(crate) give_up_at: Option<Instant>,
}

impl Wake {
    fn at(&self) -> Instant {
        match self.give_up_at {
            Some(g) => g.min(self.retry_at),
            None => self.retry_at,
        }
    }

    /// The same retry, with the no-progress check made again shortly.
    pub(crate) fn look_again(self, now: Instant) -> Wake {
        Wake {
            retry_at: self.retry_at,
            give_up_at: Some(now + LOOK_AGAIN),
        }
    }
}

/// The waiting TRANSIENT_ERROR jobs.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    waiting: HashMap<Uuid, Wake>,
}

impl Timers {
    /// Arms the timers of a TRANSIENT_ERROR job: retry after `retry_after`
    /// (or, for a job found at start, its minimum retry delay counted from
    /// its last change); give up when the no-progress timeout runs out.
    pub(crate) fn arm(&mut self, job: &Job, retry_after: Option<Duration>) {
        let now = Instant::now();
        let now_sys = SystemTime::now();
        let delay = retry_after.unwrap_or_else(|| {
            let since_change = now_sys.duration_since(job.modification_time).unwrap_or_default();
            Duration::from_secs(job.min_retry_delay).saturating_sub(since_change)
        });
        let retry_at = now
            .checked_add(delay)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let give_up_at = job.no_progress_since.and_then(|since| {
            let deadline = since.checked_add(Duration::from_secs(job.no_progress_timeout))?;
            let left = deadline.duration_since(now_sys).unwrap_or_default();
            now.checked_add(left + GIVE_UP_SLACK)
        });
        self.waiting.insert(job.id, Wake { retry_at, give_up_at });
    }

    /// Sets job `id`'s timers.
    pub(crate) fn insert(&mut self, id: Uuid, wake: Wake) {
        self.waiting.insert(id, wake);
    }

    /// Removes job `id`'s timers, returning them.
    pub(crate) fn remove(&mut self, id: Uuid) -> Option<Wake> {
        self.waiting.remove(&id)
    }

    /// When the next timer fires, if any is armed.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.waiting.values().map(Wake::at).min()
    }

    /// Removes and returns the timers due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(Uuid, Wake)> {
        let due: Vec<(Uuid, Wake)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.at() <= now)
            .map(|(id, w)| (*id, *w))
            .collect();
        for (id, _) in &due {
            self.waiting.remove(id);
        }
        due
    }

    /// Whether job `id` waits.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: Uuid) -> bool {
        self.waiting.contains_key(&id)
    }
}
