//! The daemon's loop: requests from the socket, the scheduler's work,
//! pruning and signals, one at a time on the daemon's thread.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bits_core::{Hresult, Job};
use bits_scheduler::{Ended, Scheduler, StateSink};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bandwidth::DaemonSchedule;
use super::checkpoints::Checkpoints;
use super::sqlite::StoreJobs;
use super::Signals;
use crate::error::Failure;
use crate::ipc::{Changes, Pending, Reply, Request};
use crate::ops::{self, JobOp};

/// Final jobs older than this are pruned by the daemon.
pub const PRUNE_AGE: Duration = Duration::from_secs(30 * 86_400);
/// How often the daemon prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(86_400);
/// How many results of completions the daemon did for `transfer`
/// ([`Request::Transfer`]) it keeps for their `complete` to read.
const COMPLETIONS_KEPT: usize = 64;

pub(super) struct Daemon {
    jobs: StoreJobs,
    scheduler: Scheduler,
    changes: Changes,
    /// The results of the completions done for `transfer`
    /// ([`Request::Transfer`], [`Scheduler::hold`]), answered to the
    /// `complete` that `transfer` sends once it sees its job settled (the
    /// latest [`COMPLETIONS_KEPT`]: one whose command went away is
    /// forgotten).
    completed: VecDeque<(Uuid, Reply)>,
    checkpoints: Checkpoints,
    /// The bandwidth schedule.
    schedule: DaemonSchedule,
}

impl Daemon {
    pub(super) fn new(
        jobs: StoreJobs,
        scheduler: Scheduler,
        changes: Changes,
        checkpoints: Checkpoints,
        schedule: DaemonSchedule,
    ) -> Daemon {
        Daemon {
            jobs,
            scheduler,
            changes,
            completed: VecDeque::new(),
            checkpoints,
            schedule,
        }
    }

    /// Prunes, applies the bandwidth schedule and starts the jobs that may
    /// run.
    pub(super) async fn start(&mut self) {
        self.prune();
        let ended = self.schedule.apply(&mut self.scheduler).await;
        self.ended(ended);
        let ended = self.scheduler.schedule().await;
        self.ended(ended);
    }

    /// Serves until a shutdown request, SIGTERM or SIGINT.
    pub(super) async fn serve(
        &mut self,
        mut requests: mpsc::UnboundedReceiver<Pending>,
        signals: &mut Signals,
    ) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.tick().await;
        loop {
            tokio::select! {
                Some((request, reply)) = requests.recv() => {
                    if matches!(request, Request::Shutdown) {
                        tracing::info!("shutdown requested");
                        let _ = reply.send(Reply::ok(Hresult::S_OK));
                        return;
                    }
                    let answer = self.handle(request).await;
                    let _ = reply.send(answer);
                }
                due = self.scheduler.due() => {
                    let ended = self.scheduler.advance(due).await;
                    self.ended(ended);
                }
                _ = prune.tick() => self.prune(),
                _ = signals.term.recv() => { tracing::info!("SIGTERM"); return; }
                _ = signals.int.recv() => { tracing::info!("SIGINT"); return; }
                () = self.schedule.due() => {
                    let ended = self.schedule.apply(&mut self.scheduler).await;
                    self.ended(ended);
                }
                _ = signals.hup.recv() => {
                    tracing::info!("SIGHUP: reading the config file again");
                    let _ = self.reload().await;
                }
                _ = signals.xfsz.recv() => tracing::debug!("SIGXFSZ: a file reached the size limit"),
            }
            let ended = self.scheduler.schedule().await;
            self.ended(ended);
        }
    }

    /// Stops every transfer, saving each as QUEUED.
    pub(super) async fn shutdown(&mut self) {
        let ended = self.scheduler.shutdown().await;
        self.ended(ended);
        self.schedule.unpublish();
    }

    /// Reads the config file again and applies it; a refused file leaves
    /// the schedule in force.
    async fn reload(&mut self) -> Result<(), Failure> {
        self.schedule.reload()?;
        let ended = self.schedule.apply(&mut self.scheduler).await;
        self.ended(ended);
        Ok(())
    }

    async fn handle(&mut self, request: Request) -> Reply {
        // `schedule` and `transfer` need only the answer: the scheduler runs
        // after every request.
        let (id, op) = match request {
            Request::Job { id, op } => (id, op),
            Request::Transfer { id } => {
                self.scheduler.hold(id);
                return Reply::ok(Hresult::S_OK);
            }
            Request::Reload => {
                return match self.reload().await {
                    Ok(()) => Reply::ok(Hresult::S_OK),
                    Err(f) => Reply::failed(&f),
                };
            }
            _ => {
                return Reply {
                    pid: Some(std::process::id()),
                    ..Reply::ok(Hresult::S_OK)
                }
            }
        };
        if op == JobOp::Complete {
            if let Some(n) = self.completed.iter().position(|(done, _)| *done == id) {
                if let Some((_, reply)) = self.completed.remove(n) {
                    return reply;
                }
            }
        }
        // Whoever sends an operation but `resume` takes the job over from
        // `transfer` (Ctrl-C suspends it; a later resume does not complete).
        if op != JobOp::Resume {
            self.scheduler.release(id);
        }
        if op.stops_transfer() {
            let ended = self.scheduler.stop(id).await;
            self.ended(ended);
        }
        if op == JobOp::Cancel {
            self.cancel_upload_sessions(id);
        }
        let result = ops::apply_stored(&self.jobs.store(), id, &op);
        self.jobs.saved(id);
        self.changes.announce();
        // The job may have left TRANSIENT_ERROR (resume, suspend, cancel…),
        // or changed its timeouts while waiting.
        self.scheduler.job_changed(id);
        match result {
            Ok(code) => {
                tracing::info!(job = %id, ?op, "{code}");
                Reply::ok(code)
            }
            Err(f) => {
                tracing::info!(job = %id, ?op, "refused: {f}");
                Reply::failed(&f)
            }
        }
    }

    /// Before an upload job is cancelled: `Cancel-Session` for its open
    /// session, in the background and best effort (`docs/spec/upload.md`),
    /// so the server deletes what it holds.
    fn cancel_upload_sessions(&mut self, id: uuid::Uuid) {
        let job = match self.jobs.store().get(id) {
            Ok(Some(job)) => job,
            _ => return,
        };
        let open = job.files.iter().any(|f| f.upload.is_some() && !f.completed);
        if !open || job.state().is_final() {
            return;
        }
        match self.scheduler.engine(&job.backend) {
            Ok(engine) => {
                tokio::task::spawn_local(async move { engine.cancel_upload_sessions(&job).await });
            }
            Err(e) => tracing::info!(job = %id, "no Cancel-Session: {e}"),
        }
    }

    /// What follows a transfer that ended: a held job is completed, and
    /// the store checkpointed.
    fn ended(&mut self, ended: impl IntoIterator<Item = Ended>) {
        for e in ended {
            if let Some(job) = e.held {
                self.complete(job);
            }
            self.checkpoints.request();
        }
    }

    /// Completes a TRANSFERRED job that `transfer` asked for
    /// ([`Request::Transfer`]), from the copy the transfer task left, which
    /// is the stored one: while the daemon carries the store nobody else
    /// writes its jobs.
    fn complete(&mut self, mut job: Job) {
        let id = job.id;
        let (result, save_anyway) = ops::apply(&mut job, &JobOp::Complete);
        if result.is_ok() || save_anyway {
            if let Err(e) = self.jobs.save(&job) {
                tracing::error!(job = %id, "cannot save the job: {e}");
            }
        }
        self.changes.announce();
        let reply = match result {
            Ok(code) => {
                tracing::info!(job = %id, "completed for transfer: {code}");
                Reply::ok(code)
            }
            Err(e) => {
                let f = Failure::from_bits(&e);
                tracing::info!(job = %id, "completing for transfer failed: {f}");
                Reply::failed(&f)
            }
        };
        if self.completed.len() == COMPLETIONS_KEPT {
            self.completed.pop_front();
        }
        self.completed.push_back((id, reply));
    }

    fn prune(&self) {
        let cutoff = SystemTime::now()
            .checked_sub(PRUNE_AGE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match self.jobs.store().prune(cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} final jobs older than 30 days"),
            Err(f) => tracing::warn!("cannot prune: {f}"),
        }
    }
}
