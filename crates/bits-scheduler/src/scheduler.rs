//! [`Scheduler`]: which jobs run, starting and stopping their transfers,
//! and what happens when one ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bits_core::{
    BitsError, Engine, Event, Hresult, Job, JobState, Priority, RunOutcome, SharedLimiter, SharedTransport,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::persist::Persist;
use crate::seams::{Error, JobSource, StateSink, Transports};
use crate::timers::Timers;

/// Jobs that transfer at once, unless [`Scheduler::with_max_parallel`]
/// says otherwise.
pub const MAX_PARALLEL: usize = 4;

/// How long [`Scheduler::due`] sleeps when no timer is armed (it wakes
/// earlier when a transfer ends).
const IDLE: Duration = Duration::from_secs(3600);

/// Runs the jobs of a [`JobSource`], saving their state to a
/// [`StateSink`].
///
/// At most [`MAX_PARALLEL`] jobs transfer at once, picked in the source's
/// order (priority, then age). A runnable job of higher priority preempts
/// a running one of lower priority when every slot is taken: the
/// preempted job goes back to QUEUED, as at the end of a BITS time slice,
/// and resumes from its bytes on disk. A TRANSIENT_ERROR job waits for the
/// engine's retry delay, then goes back to QUEUED; when its no-progress
/// timeout runs out first, it goes to ERROR.
///
/// It must run inside a [`tokio::task::LocalSet`]: each transfer is a
/// `spawn_local` task, so the scheduler and its transfers share one
/// thread and need no locks. The caller drives it:
///
/// ```no_run
/// # async fn drive(mut scheduler: bits_scheduler::Scheduler) {
/// scheduler.recover().expect("the source answers");
/// loop {
///     tokio::select! {
///         due = scheduler.due() => {
///             if let Some(ended) = scheduler.advance(due).await {
///                 // e.g. complete `ended.held`, compact the store
///             }
///         }
///         // … the caller's own events: requests that change jobs
///         // (`stop` the job first, then `job_changed`), new jobs, shutdown …
///     }
///     let _ = scheduler.schedule().await;
/// }
/// # }
/// ```
pub struct Scheduler {
    source: Box<dyn JobSource>,
    sink: Arc<dyn StateSink>,
    transports: Box<dyn Transports>,
    /// The transports built so far, by backend name.
    built: HashMap<String, SharedTransport>,
    max_parallel: usize,
    running: HashMap<Uuid, Running>,
    timers: Timers,
    /// Jobs handed to the caller once TRANSFERRED ([`Scheduler::hold`]).
    held: HashSet<Uuid>,
    done_tx: mpsc::UnboundedSender<(Uuid, u64)>,
    done_rx: mpsc::UnboundedReceiver<(Uuid, u64)>,
    next_gen: u64,
    /// Handed to every job it runs ([`Scheduler::with_shared_limiter`]).
    limiter: Option<SharedLimiter>,
    /// The background priorities the bandwidth schedule blocks now
    /// ([`Scheduler::set_blocked`]).
    blocked: Vec<Priority>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("max_parallel", &self.max_parallel)
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("timers", &self.timers)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

/// A running transfer.
struct Running {
    /// Tells a transfer's end from an older one's of the same job.
    generation: u64,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<(Job, Option<RunOutcome>)>,
}

/// A transfer that ended by itself (not stopped), after the scheduler
/// saved where it got: for the caller to act on, e.g. to compact its
/// store, run a notification, or complete a held job.
#[derive(Debug)]
pub struct Ended {
    /// The job.
    pub id: Uuid,
    /// Its state now: TRANSFERRED, TRANSIENT_ERROR (its retry timer is
    /// armed) or ERROR.
    pub state: JobState,
    /// The job, when it was held ([`Scheduler::hold`]) and is TRANSFERRED:
    /// saved, but no watcher told. The caller finishes it.
    pub held: Option<Job>,
}

/// Work for [`Scheduler::advance`], from [`Scheduler::due`].
#[derive(Debug)]
pub struct Due(DueKind);

#[derive(Debug)]
enum DueKind {
    /// Transfer `generation` of a job ended.
    Ended(Uuid, u64),
    /// A timer may be due.
    Timers,
}

impl Scheduler {
    /// A scheduler that runs `source`'s jobs, saves them to `sink`, and
    /// asks `transports` for each backend's transport. Nothing runs until
    /// [`Scheduler::schedule`].
    pub fn new(
        source: impl JobSource + 'static,
        sink: impl StateSink + 'static,
        transports: impl Transports + 'static,
    ) -> Scheduler {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Scheduler {
            source: Box::new(source),
            sink: Arc::new(sink),
            transports: Box::new(transports),
            built: HashMap::new(),
            max_parallel: MAX_PARALLEL,
            running: HashMap::new(),
            timers: Timers::default(),
            held: HashSet::new(),
            done_tx,
            done_rx,
            next_gen: 0,
            limiter: None,
            blocked: Vec::new(),
        }
    }

    /// Hands `limiter` (the daemon-wide limiter of background jobs, whose
    /// rates the bandwidth schedule sets) to every job it runs
    /// ([`Job::set_shared_limiter`]).
    pub fn with_shared_limiter(mut self, limiter: SharedLimiter) -> Scheduler {
        self.limiter = Some(limiter);
        self
    }

    /// The bandwidth schedule blocks (a rate of 0) exactly the background
    /// priorities in `blocked` from now on (`network.md`): a running job of
    /// one of them is stopped, its bytes kept, and goes to TRANSIENT_ERROR
    /// with `BG_E_BLOCKED_BY_POLICY`, as does any of them that would
    /// start; a job waiting that way whose priority is no longer blocked
    /// goes back to QUEUED. FOREGROUND is never blocked. Call
    /// [`Scheduler::schedule`] after it.
    #[must_use = "a held job is handed over in `Ended::held`"]
    pub async fn set_blocked(&mut self, blocked: &[Priority]) -> Vec<Ended> {
        self.blocked = blocked
            .iter()
            .copied()
            .filter(|p| *p != Priority::Foreground)
            .collect();
        let mut ended = Vec::new();
        let ids: Vec<Uuid> = self.running.keys().copied().collect();
        for id in ids {
            let blocked_now = self.load(id).is_some_and(|j| self.is_blocked(j.priority));
            if blocked_now {
                tracing::info!(job = %id, "blocked by the bandwidth schedule");
                ended.extend(self.stop_as(id, true).await);
            }
        }
        let waiting = match self.source.active() {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!("cannot list active jobs: {e}");
                return ended;
            }
        };
        for mut job in waiting {
            if is_blocked_by_policy(&job) && !self.is_blocked(job.priority) {
                self.timers.remove(job.id);
                job.apply(Event::RetryTimer);
                tracing::info!(job = %job.id, "the bandwidth schedule lets it run again");
                self.save(&job);
            }
        }
        ended
    }

    fn is_blocked(&self, p: Priority) -> bool {
        self.blocked.contains(&p)
    }

    /// Runs at most `n` jobs at once (at least one).
    pub fn with_max_parallel(mut self, n: usize) -> Scheduler {
        self.max_parallel = n.max(1);
        self
    }

    /// Picks up where a previous scheduler of the same source stopped,
    /// even after a crash: a job caught CONNECTING or TRANSFERRING goes
    /// back to QUEUED (saved at once), and a TRANSIENT_ERROR job gets its
    /// timers again, its retry delay counted from its last change, except
    /// one the schedule blocked: [`Scheduler::set_blocked`] releases it.
    pub fn recover(&mut self) -> Result<(), Error> {
        for mut job in self.source.active()? {
            match job.state() {
                JobState::Connecting | JobState::Transferring => {
                    job.apply(Event::Stopped);
                    self.sink.save(&job)?;
                }
                // One the schedule blocked waits for its window's end
                // (`set_blocked`), not for a retry timer.
                JobState::TransientError if !is_blocked_by_policy(&job) => self.timers.arm(&job, None),
                _ => {}
            }
        }
        Ok(())
    }

    /// Puts the right jobs in the running slots: the first
    /// [`MAX_PARALLEL`] runnable ones in the source's order, stopping any
    /// other that runs. Returns the transfers among those stopped that
    /// had ended by themselves meanwhile.
    #[must_use = "a held job is handed over in `Ended::held`"]
    pub async fn schedule(&mut self) -> Vec<Ended> {
        // A job the schedule blocks leaves the runnable ones when it would
        // start: list them again until every job wanted may run.
        let wanted: Vec<Uuid> = loop {
            let ids = match self.source.runnable() {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("cannot list runnable jobs: {e}");
                    return Vec::new();
                }
            };
            let wanted: Vec<Uuid> = ids.into_iter().take(self.max_parallel).collect();
            if self.blocked.is_empty() {
                break wanted;
            }
            let mut any = false;
            for id in &wanted {
                if !self.running.contains_key(id) {
                    any |= self.block_if_blocked(*id);
                }
            }
            if !any {
                break wanted;
            }
        };
        let preempted: Vec<Uuid> = self
            .running
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        let mut ended = Vec::new();
        for id in preempted {
            tracing::info!(job = %id, "preempted by a job of higher priority");
            ended.extend(self.stop(id).await);
        }
        for id in wanted {
            if !self.running.contains_key(&id) {
                self.start(id);
            }
        }
        ended
    }

    /// Whether job `id`'s transfer runs now.
    pub fn is_running(&self, id: Uuid) -> bool {
        self.running.contains_key(&id)
    }

    /// Stops job `id`'s transfer, if it runs, and saves where it got:
    /// QUEUED, with its counters as the engine left them (the engine
    /// resumes from the bytes on disk). Returns the transfer when it had
    /// ended by itself before the stop reached it.
    #[must_use = "a held job is handed over in `Ended::held`"]
    pub async fn stop(&mut self, id: Uuid) -> Option<Ended> {
        self.stop_as(id, false).await
    }

    /// [`Scheduler::stop`]; `blocked`: the schedule stopped it, so it goes
    /// to TRANSIENT_ERROR with `BG_E_BLOCKED_BY_POLICY` (saved once).
    async fn stop_as(&mut self, id: Uuid, blocked: bool) -> Option<Ended> {
        let mut running = self.running.remove(&id)?;
        if let Some(stop) = running.stop.take() {
            let _ = stop.send(());
        }
        self.settle(id, running.handle, blocked).await
    }

    /// Puts job `id`, QUEUED, in TRANSIENT_ERROR with
    /// `BG_E_BLOCKED_BY_POLICY` when the schedule blocks its priority;
    /// returns whether it did.
    fn block_if_blocked(&mut self, id: Uuid) -> bool {
        let Some(mut job) = self.load(id) else {
            return false;
        };
        if !self.is_blocked(job.priority) || job.state() != JobState::Queued {
            return false;
        }
        block(&mut job);
        tracing::info!(job = %id, "blocked by the bandwidth schedule");
        self.save(&job);
        true
    }

    /// Stops every transfer, saving each as [`Scheduler::stop`] does.
    #[must_use = "a held job is handed over in `Ended::held`"]
    pub async fn shutdown(&mut self) -> Vec<Ended> {
        let ids: Vec<Uuid> = self.running.keys().copied().collect();
        let mut ended = Vec::new();
        for id in ids {
            ended.extend(self.stop(id).await);
        }
        ended
    }

    /// Hands job `id` to the caller once TRANSFERRED: that state is saved
    /// without telling watchers, and [`Ended::held`] carries the job, for
    /// the caller to complete it while it holds the only copy (`bits
    /// transfer` does). A run that ends otherwise but in TRANSIENT_ERROR
    /// drops the hold.
    pub fn hold(&mut self, id: Uuid) {
        self.held.insert(id);
    }

    /// Drops the hold on job `id`; returns whether it had one.
    pub fn release(&mut self, id: Uuid) -> bool {
        self.held.remove(&id)
    }

    /// Takes note that job `id` was changed outside the scheduler (an
    /// operation the caller applied to the source, with its transfer
    /// stopped first): a TRANSIENT_ERROR job keeps its retry time and
    /// gets a no-progress deadline from its new timeout; a job that left
    /// TRANSIENT_ERROR loses its timers.
    pub fn job_changed(&mut self, id: Uuid) {
        // A job the schedule blocked whose priority it no longer blocks
        // (`set-priority`) runs again.
        if !self.running.contains_key(&id) {
            if let Some(mut job) = self.load(id).filter(is_blocked_by_policy) {
                if !self.is_blocked(job.priority) {
                    self.timers.remove(id);
                    job.apply(Event::RetryTimer);
                    self.save(&job);
                    return;
                }
            }
        }
        let Some(old) = self.timers.remove(id) else {
            return;
        };
        if let Some(job) = self.load(id).filter(|j| j.state() == JobState::TransientError) {
            let left = old.retry_at.saturating_duration_since(Instant::now());
            self.timers.arm(&job, Some(left));
        }
    }

    /// Waits until there is work for [`Scheduler::advance`]: a transfer
    /// ended, or a timer is due. Cancel-safe: use it in `select!`.
    pub async fn due(&mut self) -> Due {
        let wake = self.timers.next().unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            Some((id, generation)) = self.done_rx.recv() => Due(DueKind::Ended(id, generation)),
            _ = tokio::time::sleep_until(wake.into()) => Due(DueKind::Timers),
        }
    }

    /// Does the work [`Scheduler::due`] found: settles a transfer that
    /// ended (returned), or fires due timers (a job retries: QUEUED, or
    /// its no-progress timeout ran out: ERROR). Call
    /// [`Scheduler::schedule`] after it.
    #[must_use = "a held job is handed over in `Ended::held`"]
    pub async fn advance(&mut self, due: Due) -> Option<Ended> {
        match due.0 {
            DueKind::Ended(id, generation) => self.finished(id, generation).await,
            DueKind::Timers => {
                self.fire_timers();
                None
            }
        }
    }

    /// Saves `job` and tells watchers.
    fn save(&self, job: &Job) {
        self.save_quietly(job);
        self.sink.changed(job.id);
    }

    /// Saves without telling watchers.
    fn save_quietly(&self, job: &Job) {
        if let Err(e) = self.sink.save(job) {
            tracing::error!(job = %job.id, "cannot save the job: {e}");
        }
    }

    fn load(&self, id: Uuid) -> Option<Job> {
        match self.source.load(id) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job = %id, "cannot read the job: {e}");
                None
            }
        }
    }

    /// An engine over the transport of `backend_name` (built once per
    /// name, as for the runs): for work beside a job's run, such as the
    /// `Cancel-Session` of a cancelled upload
    /// ([`Engine::cancel_upload_sessions`]).
    ///
    /// # Errors
    /// When no transport can be built for that backend.
    pub fn engine(&mut self, backend_name: &str) -> Result<Engine, BitsError> {
        self.transport(backend_name).map(Engine::new)
    }

    fn transport(&mut self, backend_name: &str) -> Result<SharedTransport, BitsError> {
        if let Some(t) = self.built.get(backend_name) {
            return Ok(t.clone());
        }
        let t = self.transports.transport(backend_name)?;
        self.built.insert(backend_name.to_string(), t.clone());
        Ok(t)
    }

    fn start(&mut self, id: Uuid) {
        let Some(mut job) = self.load(id) else { return };
        if !matches!(
            job.state(),
            JobState::Queued | JobState::Connecting | JobState::Transferring
        ) {
            return;
        }
        let transport = match self.transport(&job.backend) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(job = %id, "cannot run: {e}");
                job.fail(&e, None, SystemTime::now());
                self.save(&job);
                return;
            }
        };
        job.set_shared_limiter(self.limiter.clone());
        let engine = Engine::new(transport);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        self.next_gen += 1;
        let generation = self.next_gen;
        let mut observer = Persist::new(self.sink.clone(), &job);
        observer.hold_transferred = self.held.contains(&id);
        let done = self.done_tx.clone();
        tracing::info!(job = %id, name = %job.display_name, "transfer starts");
        let handle = tokio::task::spawn_local(async move {
            let outcome = tokio::select! {
                biased;
                _ = stop_rx => None,
                outcome = engine.run(&mut job, &mut observer) => Some(outcome),
            };
            let _ = done.send((id, generation));
            (job, outcome)
        });
        self.running.insert(
            id,
            Running {
                generation,
                stop: Some(stop_tx),
                handle,
            },
        );
    }

    /// A transfer task ended by itself.
    async fn finished(&mut self, id: Uuid, generation: u64) -> Option<Ended> {
        let current = self.running.get(&id).is_some_and(|r| r.generation == generation);
        if !current {
            return None; // already settled by stop()
        }
        let running = self.running.remove(&id)?;
        self.settle(id, running.handle, false).await
    }

    async fn settle(
        &mut self,
        id: Uuid,
        handle: JoinHandle<(Job, Option<RunOutcome>)>,
        blocked: bool,
    ) -> Option<Ended> {
        match handle.await {
            Ok((mut job, None)) => {
                // Stopped mid-transfer: back in the queue, counters as the
                // engine left them (it resumes from the file on disk).
                job.apply(Event::Stopped);
                job.set_shared_limiter(None);
                job.yielding = false;
                job.controller = bits_core::Controller::None;
                if blocked {
                    block(&mut job);
                }
                self.save(&job);
                None
            }
            Ok((mut job, Some(outcome))) => {
                job.set_shared_limiter(None);
                job.yielding = false;
                job.controller = bits_core::Controller::None;
                let held = match outcome.state {
                    JobState::TransientError
                    | JobState::Queued
                    | JobState::Connecting
                    | JobState::Transferring => false,
                    _ => self.held.remove(&id) && job.state() == JobState::Transferred,
                };
                if held {
                    self.save_quietly(&job);
                    tracing::info!(job = %id, state = job.state().as_str(), "transfer ended");
                    return Some(Ended {
                        id,
                        state: job.state(),
                        held: Some(job),
                    });
                }
                self.save(&job);
                tracing::info!(job = %id, state = job.state().as_str(), "transfer ended");
                match outcome.state {
                    JobState::TransientError => self.timers.arm(&job, outcome.retry_after),
                    JobState::Queued | JobState::Connecting | JobState::Transferring => {
                        // Not expected from the engine: an ERROR the user
                        // sees rather than a job that spins.
                        let e = BitsError::Internal {
                            what: format!("a transfer ended with the job {}", job.state()),
                        };
                        job.fail(&e, None, SystemTime::now());
                        self.save(&job);
                    }
                    _ => {}
                }
                Some(Ended {
                    id,
                    state: job.state(),
                    held: None,
                })
            }
            Err(e) => {
                tracing::error!(job = %id, "the transfer task failed: {e}");
                if let Some(mut job) = self.load(id) {
                    if job.state().is_active() {
                        let err = BitsError::Internal {
                            what: format!("the transfer task failed: {e}"),
                        };
                        job.fail(&err, None, SystemTime::now());
                        self.save(&job);
                    }
                }
                None
            }
        }
    }

    /// Fires due retry and no-progress timers.
    ///
    /// A job blocked by the schedule waits for the window's end
    /// ([`Scheduler::set_blocked`]), not for its timers; one whose timer
    /// fires while still blocked (after a restart) goes QUEUED and is
    /// blocked again before it starts.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        for (id, wake) in self.timers.take_due(now) {
            let Some(mut job) = self.load(id) else { continue };
            if job.state() != JobState::TransientError {
                continue;
            }
            if job.no_progress_expired(SystemTime::now()) {
                job.apply(Event::NoProgressTimeout);
                tracing::info!(job = %id, "no progress for {} s: ERROR", job.no_progress_timeout);
            } else if now >= wake.retry_at {
                job.apply(Event::RetryTimer);
                tracing::info!(job = %id, "retrying");
            } else {
                // The no-progress deadline came a little early for the
                // job's own clock: look again shortly.
                self.timers.insert(id, wake.look_again(now));
                continue;
            }
            self.save(&job);
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;

/// A QUEUED job the schedule blocks: TRANSIENT_ERROR with
/// `BG_E_BLOCKED_BY_POLICY`, its bytes and its no-progress clock as they
/// were (a window of the schedule is no failure of the job's; and never
/// ERROR, whatever its HTTP method, as [`Job::fail`] would make it).
fn block(job: &mut Job) {
    if job.apply(Event::TransientFailure) == JobState::TransientError {
        job.error = Some(BitsError::BlockedByPolicy.to_job_error(None));
    }
}

/// Whether `job` waits in TRANSIENT_ERROR for the schedule.
fn is_blocked_by_policy(job: &Job) -> bool {
    job.state() == JobState::TransientError
        && job
            .error
            .as_ref()
            .is_some_and(|e| e.code == Hresult::BG_E_BLOCKED_BY_POLICY)
}
