//! `bits daemon`: the service that carries every active job of one store.
//!
//! - **One per store**: it holds `daemon.lock` (`flock`) for its lifetime; a
//!   second daemon exits 1 naming the first one's pid.
//! - **Scheduling**: at most [`MAX_PARALLEL`] jobs transfer at once, picked
//!   by priority (FOREGROUND > HIGH > NORMAL > LOW), then age. A queued job
//!   of higher priority preempts a running one of lower priority when every
//!   slot is taken (the preempted job goes back to QUEUED, as at the end of
//!   a BITS time slice, and resumes from its bytes on disk).
//! - **Retries**: a TRANSIENT_ERROR job waits for the engine's retry delay
//!   (the minimum retry delay, or a longer `Retry-After`), then goes back to
//!   QUEUED; when the no-progress timeout runs out first, it goes to ERROR.
//! - **Operations** arrive over the socket (see [`crate::ipc`]); a running
//!   job's transfer is stopped (its engine future dropped, which the engine
//!   makes safe) before any change but `resume` applies.
//! - **`transfer`'s jobs** are completed here as soon as they are
//!   TRANSFERRED ([`Request::Transfer`]): the daemon holds the job then, so
//!   the command neither reads it nor waits for a second round trip.
//! - **Persistence**: progress is saved every second; state and error
//!   changes, a reported redirect and the validator of a file over a MiB
//!   at once. SIGTERM/SIGINT stop every transfer, save it as
//!   QUEUED and exit 0; after `kill -9` the next daemon resumes every
//!   active job from the bytes in its temporary file.
//! - **Memory** holds only the jobs running now and the ids and timers of
//!   TRANSIENT_ERROR jobs; everything else lives in the database. Final jobs
//!   older than 30 days are pruned at start and then daily.
//!
//! It runs on a single-threaded tokio runtime: the engine's tasks are
//! I/O-bound, and one thread keeps the scheduler free of locks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bits_core::{
    BitsError, Engine, Event, Hresult, Job, JobError, JobState, Observer, RunOutcome, SharedTransport,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::backend;
use crate::error::{Failure, EXIT_OK};
use crate::ipc::{self, accept_loop, Changes, Pending, Reply, Request};
use crate::ops::{self, JobOp};
use crate::store::{self, Store};

/// Jobs that transfer at once.
pub const MAX_PARALLEL: usize = 4;
/// Final jobs older than this are pruned by the daemon.
pub const PRUNE_AGE: Duration = Duration::from_secs(30 * 86_400);
/// How many results of completions the daemon did for `transfer`
/// ([`Request::Transfer`]) it keeps for their `complete` to read.
const COMPLETIONS_KEPT: usize = 64;
/// Progress is saved this often.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// A file larger than this (or of unknown size) has its validator saved
/// as soon as its response arrives: after a crash, its bytes on disk are
/// resumed instead of downloaded again (at most this much is lost).
const SAVE_FILE_AT_ONCE: u64 = 1 << 20;
/// `SIGXFSZ` on Linux: ignored, so that a file-size limit is an `EFBIG`
/// write error (a LOCAL_FILE error of the job) instead of killing us.
const SIGXFSZ: i32 = 25;

type Shared = Arc<Mutex<Store>>;

fn lock(store: &Shared) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT. Prints
/// `ready` on stdout once it accepts commands.
pub fn run(dir: &Path) -> Result<ExitCode, Failure> {
    store::ensure_dir(dir)?;
    let lock_path = ipc::path(dir, ipc::DAEMON_LOCK);
    let mut lifetime = store::open_private(&lock_path)?;
    if lifetime.try_lock().is_err() {
        let pid = std::fs::read_to_string(&lock_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        return Err(ipc::busy(dir, pid));
    }
    let _ = lifetime.set_len(0);
    let _ = writeln!(lifetime, "{}", std::process::id());

    // Bind and load under store.lock: a CLI that saw no daemon finishes its
    // direct edit first, and one that comes later finds the socket.
    let store_lock_path = ipc::path(dir, ipc::STORE_LOCK);
    let store_lock = store::open_private(&store_lock_path)?;
    store_lock
        .lock()
        .map_err(|e| store::io_failure("lock", &store_lock_path, &e))?;
    let store = Store::open(dir)?;
    store.check_integrity()?;
    let recovered = recover(&store)?;
    let checkpoints = Checkpoints::start(dir)?;
    let sock = ipc::path(dir, ipc::SOCKET_FILE);
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(|e| {
        let f = store::io_failure("listen on", &sock, &e);
        if e.kind() == std::io::ErrorKind::InvalidInput {
            f.with_hint("the socket path is too long; use a shorter --store path")
        } else {
            f
        }
    })?;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    listener
        .set_nonblocking(true)
        .map_err(|e| store::io_failure("listen on", &sock, &e))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(Hresult::E_FAIL, format!("cannot start the runtime: {e}"), ""))?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| store::io_failure("listen on", &sock, &e))?;
        let mut signals = Signals::new()?;
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let changes = Changes::default();
        tokio::task::spawn_local(accept_loop(listener, req_tx, changes.clone()));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut daemon = Daemon {
            dir: dir.to_path_buf(),
            store: Arc::new(Mutex::new(store)),
            transports: HashMap::new(),
            running: HashMap::new(),
            waiting: HashMap::new(),
            done_tx,
            next_gen: 0,
            changes,
            completing: HashSet::new(),
            completed: VecDeque::new(),
            checkpoints,
        };
        daemon.prune();
        for job in recovered {
            daemon.wait_for_retry(&job, None);
        }
        daemon.schedule().await;
        drop(store_lock);
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready").and_then(|()| out.flush());
        }
        tracing::info!(store = %dir.display(), pid = std::process::id(), "daemon ready");
        daemon.serve(req_rx, done_rx, &mut signals).await;
        daemon.shutdown().await;
        let _ = std::fs::remove_file(&sock);
        tracing::info!("daemon stopped");
        Ok::<_, Failure>(())
    });
    result.map(|()| ExitCode::from(EXIT_OK))
}

/// After a crash, jobs caught CONNECTING or TRANSFERRING go back to QUEUED.
/// Returns the TRANSIENT_ERROR jobs, whose retry timers must be re-armed.
fn recover(store: &Store) -> Result<Vec<Job>, Failure> {
    let mut waiting = Vec::new();
    for mut job in store.active()? {
        match job.state() {
            JobState::Connecting | JobState::Transferring => {
                job.apply(Event::Stopped);
                store.save(&job)?;
            }
            JobState::TransientError => waiting.push(job),
            _ => {}
        }
    }
    Ok(waiting)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    xfsz: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Failure> {
        let mk = |k: SignalKind| {
            signal(k)
                .map_err(|e| Failure::runtime(Hresult::E_FAIL, format!("cannot handle signals: {e}"), ""))
        };
        Ok(Signals {
            term: mk(SignalKind::terminate())?,
            int: mk(SignalKind::interrupt())?,
            hup: mk(SignalKind::hangup())?,
            xfsz: mk(SignalKind::from_raw(SIGXFSZ))?,
        })
    }
}

struct Running {
    generation: u64,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<(Job, Option<RunOutcome>)>,
}

/// When a TRANSIENT_ERROR job wakes up.
#[derive(Debug, Clone, Copy)]
struct Wake {
    retry_at: Instant,
    give_up_at: Option<Instant>,
}

impl Wake {
    fn at(&self) -> Instant {
        match self.give_up_at {
            Some(g) => g.min(self.retry_at),
            None => self.retry_at,
        }
    }
}

struct Daemon {
    dir: PathBuf,
    store: Shared,
    transports: HashMap<String, SharedTransport>,
    running: HashMap<Uuid, Running>,
    waiting: HashMap<Uuid, Wake>,
    done_tx: mpsc::UnboundedSender<(Uuid, u64)>,
    next_gen: u64,
    changes: Changes,
    /// Jobs to complete as soon as they are TRANSFERRED ([`Request::Transfer`]).
    completing: HashSet<Uuid>,
    /// The results of those completions, answered to the `complete` that
    /// `transfer` sends once it sees its job settled (the latest
    /// [`COMPLETIONS_KEPT`]: one whose command went away is forgotten).
    completed: VecDeque<(Uuid, Reply)>,
    checkpoints: Checkpoints,
}

/// The thread that checkpoints the store's WAL ([`Store::checkpoint`],
/// on a connection of its own) after every job that ends and every
/// [`store::CHECKPOINT_EVERY`], so that neither a command's commit nor a
/// save of a running job pays for an automatic checkpoint.
struct Checkpoints(std::sync::mpsc::SyncSender<()>);

impl Checkpoints {
    fn start(dir: &Path) -> Result<Checkpoints, Failure> {
        use std::sync::mpsc::RecvTimeoutError;
        let store = Store::open(dir)?;
        // One request waiting is enough: more would copy the same WAL.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || loop {
                match rx.recv_timeout(store::CHECKPOINT_EVERY) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {
                        if let Err(f) = store.checkpoint() {
                            tracing::warn!("cannot checkpoint the store: {f}");
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| Failure::runtime(Hresult::E_FAIL, format!("cannot start a thread: {e}"), ""))?;
        Ok(Checkpoints(tx))
    }

    fn request(&self) {
        let _ = self.0.try_send(());
    }
}

impl Daemon {
    async fn serve(
        &mut self,
        mut requests: mpsc::UnboundedReceiver<Pending>,
        mut done: mpsc::UnboundedReceiver<(Uuid, u64)>,
        signals: &mut Signals,
    ) {
        let mut prune = tokio::time::interval(Duration::from_secs(86_400));
        prune.tick().await;
        loop {
            let wake = self
                .waiting
                .values()
                .map(Wake::at)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
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
                Some((id, generation)) = done.recv() => self.finished(id, generation).await,
                _ = tokio::time::sleep_until(wake.into()) => self.timers(),
                _ = prune.tick() => self.prune(),
                _ = signals.term.recv() => { tracing::info!("SIGTERM"); return; }
                _ = signals.int.recv() => { tracing::info!("SIGINT"); return; }
                _ = signals.hup.recv() => tracing::debug!("SIGHUP ignored"),
                _ = signals.xfsz.recv() => tracing::debug!("SIGXFSZ: a file reached the size limit"),
            }
            self.schedule().await;
        }
    }

    fn save(&self, job: &Job) {
        self.save_quietly(job);
        self.changes.announce();
    }

    /// Saves without waking subscribers.
    fn save_quietly(&self, job: &Job) {
        if let Err(f) = lock(&self.store).save(job) {
            tracing::error!(job = %job.id, "cannot save the job: {f}");
        }
    }

    fn load(&self, id: Uuid) -> Option<Job> {
        match lock(&self.store).get(id) {
            Ok(job) => job,
            Err(f) => {
                tracing::error!(job = %id, "cannot read the job: {f}");
                None
            }
        }
    }

    fn transport(&mut self, backend_name: &str) -> Result<SharedTransport, BitsError> {
        if let Some(t) = self.transports.get(backend_name) {
            return Ok(t.clone());
        }
        let t = backend::transport_for(backend_name, &self.dir)?;
        self.transports.insert(backend_name.to_string(), t.clone());
        Ok(t)
    }

    async fn handle(&mut self, request: Request) -> Reply {
        // `schedule` and `transfer` need only the answer: the scheduler runs
        // after every request.
        let (id, op) = match request {
            Request::Job { id, op } => (id, op),
            Request::Transfer { id } => {
                self.completing.insert(id);
                return Reply::ok(Hresult::S_OK);
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
            self.completing.remove(&id);
        }
        if op.stops_transfer() && self.running.contains_key(&id) {
            self.stop(id).await;
        }
        let result = ops::apply_stored(&lock(&self.store), id, &op);
        self.changes.announce();
        // The job may have left TRANSIENT_ERROR (resume, suspend, cancel…),
        // or changed its timeouts while waiting.
        if let Some(old) = self.waiting.remove(&id) {
            if let Some(job) = self.load(id).filter(|j| j.state() == JobState::TransientError) {
                let left = old.retry_at.saturating_duration_since(Instant::now());
                self.wait_for_retry(&job, Some(left));
            }
        }
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

    /// Puts the right jobs in the running slots: the first
    /// [`MAX_PARALLEL`] runnable ones by priority, then age.
    async fn schedule(&mut self) {
        let ids = match lock(&self.store).runnable_ids() {
            Ok(ids) => ids,
            Err(f) => {
                tracing::error!("cannot list runnable jobs: {f}");
                return;
            }
        };
        let wanted: Vec<Uuid> = ids.into_iter().take(MAX_PARALLEL).collect();
        let preempted: Vec<Uuid> = self
            .running
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in preempted {
            tracing::info!(job = %id, "preempted by a job of higher priority");
            self.stop(id).await;
        }
        for id in wanted {
            if !self.running.contains_key(&id) {
                self.start(id);
            }
        }
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
        let engine = Engine::new(transport);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        self.next_gen += 1;
        let generation = self.next_gen;
        let store = self.store.clone();
        let changes = self.changes.clone();
        let done = self.done_tx.clone();
        tracing::info!(job = %id, name = %job.display_name, "transfer starts");
        let completing = self.completing.contains(&id);
        let handle = tokio::task::spawn_local(async move {
            let mut observer = Persist::new(store, changes, &job);
            observer.hold_transferred = completing;
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

    /// Stops the running transfer of `id` and saves where it got.
    async fn stop(&mut self, id: Uuid) {
        let Some(mut running) = self.running.remove(&id) else {
            return;
        };
        if let Some(stop) = running.stop.take() {
            let _ = stop.send(());
        }
        self.settle(id, running.handle).await;
    }

    /// A transfer task ended by itself.
    async fn finished(&mut self, id: Uuid, generation: u64) {
        let current = self.running.get(&id).is_some_and(|r| r.generation == generation);
        if !current {
            return; // already settled by stop()
        }
        if let Some(running) = self.running.remove(&id) {
            self.settle(id, running.handle).await;
        }
    }

    async fn settle(&mut self, id: Uuid, handle: JoinHandle<(Job, Option<RunOutcome>)>) {
        match handle.await {
            Ok((mut job, None)) => {
                // Stopped mid-transfer: back in the queue, counters as the
                // engine left them (it resumes from the file on disk).
                job.apply(Event::Stopped);
                self.save(&job);
            }
            Ok((job, Some(outcome))) => {
                let complete = match outcome.state {
                    JobState::TransientError
                    | JobState::Queued
                    | JobState::Connecting
                    | JobState::Transferring => false,
                    _ => self.completing.remove(&id) && job.state() == JobState::Transferred,
                };
                if complete {
                    self.save_quietly(&job);
                    tracing::info!(job = %id, state = job.state().as_str(), "transfer ended");
                    self.complete(job);
                    self.checkpoints.request();
                    return;
                }
                self.save(&job);
                self.checkpoints.request();
                tracing::info!(job = %id, state = job.state().as_str(), "transfer ended");
                match outcome.state {
                    JobState::TransientError => self.wait_for_retry(&job, outcome.retry_after),
                    JobState::Queued | JobState::Connecting | JobState::Transferring => {
                        // Not expected from the engine: an ERROR the user
                        // sees rather than a job that spins.
                        let mut job = job;
                        let e = BitsError::Internal {
                            what: format!("a transfer ended with the job {}", job.state()),
                        };
                        job.fail(&e, None, SystemTime::now());
                        self.save(&job);
                    }
                    _ => {}
                }
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
            }
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
            self.save(&job);
        } else {
            self.changes.announce();
        }
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

    /// Arms the timers of a TRANSIENT_ERROR job: retry after `retry_after`
    /// (or, for a job found at start, its minimum retry delay counted from
    /// its last change); give up when the no-progress timeout runs out.
    fn wait_for_retry(&mut self, job: &Job, retry_after: Option<Duration>) {
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
            now.checked_add(left + Duration::from_millis(20))
        });
        self.waiting.insert(job.id, Wake { retry_at, give_up_at });
    }

    /// Fires due retry and no-progress timers.
    fn timers(&mut self) {
        let now = Instant::now();
        let due: Vec<(Uuid, Wake)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.at() <= now)
            .map(|(id, w)| (*id, *w))
            .collect();
        for (id, wake) in due {
            self.waiting.remove(&id);
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
                self.waiting.insert(
                    id,
                    Wake {
                        retry_at: wake.retry_at,
                        give_up_at: Some(now + Duration::from_millis(100)),
                    },
                );
                continue;
            }
            self.save(&job);
        }
    }

    fn prune(&self) {
        let cutoff = SystemTime::now()
            .checked_sub(PRUNE_AGE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match lock(&self.store).prune(cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} final jobs older than 30 days"),
            Err(f) => tracing::warn!("cannot prune: {f}"),
        }
    }

    async fn shutdown(&mut self) {
        let ids: Vec<Uuid> = self.running.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// Saves a running job. At once: a change of its state, error or number
/// of files, a remote name changed by a reported redirect, and the
/// validator of a file over [`SAVE_FILE_AT_ONCE`] (so a crash never costs
/// a large file's bytes on disk). Everything else (byte progress, a small
/// file's headers, a file completed) at most every [`SAVE_INTERVAL`]: a job
/// of many small files is not rewritten once per file, and a large file
/// costs a save a second. Whatever a throttled save leaves out, the engine
/// recovers from the temporary files after a crash (a whole file is asked
/// from its full length and the `416` says so; a small file without its
/// validator restarts, at most [`SAVE_FILE_AT_ONCE`] again); the engine
/// marks a file completed only once its bytes are synced.
struct Persist {
    store: Shared,
    changes: Changes,
    saved_at: Instant,
    /// What, in the last save, must be saved at once when it changes.
    saved_key: SaveKey,
    /// The daemon completes the job once TRANSFERRED ([`Request::Transfer`]):
    /// that save wakes no subscriber, the completion's does.
    hold_transferred: bool,
}

/// The parts of a job saved at once when they change.
#[derive(Debug, PartialEq)]
struct SaveKey {
    state: JobState,
    error: Option<JobError>,
    remotes: Vec<String>,
}

impl SaveKey {
    fn of(job: &Job) -> SaveKey {
        SaveKey {
            state: job.state(),
            error: job.error.clone(),
            remotes: job.files.iter().map(|f| f.remote_name.clone()).collect(),
        }
    }

    /// Whether `job` differs from this key in what the engine reports
    /// through `on_change` (remote names come through `on_file_change`:
    /// comparing them all on every call would cost a job of n files n²).
    fn differs(&self, job: &Job) -> bool {
        self.state != job.state() || self.error != job.error || self.remotes.len() != job.files.len()
    }
}

impl Persist {
    fn new(store: Shared, changes: Changes, job: &Job) -> Persist {
        Persist {
            store,
            changes,
            saved_at: Instant::now(),
            saved_key: SaveKey::of(job),
            hold_transferred: false,
        }
    }

    fn save(&mut self, job: &Job) {
        if let Err(f) = lock(&self.store).save(job) {
            tracing::error!(job = %job.id, "cannot save progress: {f}");
        }
        self.saved_at = Instant::now();
        if self.saved_key.state != job.state()
            && !(self.hold_transferred && job.state() == JobState::Transferred)
        {
            self.changes.announce();
        }
        self.saved_key = SaveKey::of(job);
    }

    /// The throttle: a second passed since the last save.
    fn due(&self) -> bool {
        self.saved_at.elapsed() >= SAVE_INTERVAL
    }
}

impl Observer for Persist {
    fn on_progress(&mut self, job: &Job) {
        if self.due() {
            self.save(job);
        }
    }

    fn on_change(&mut self, job: &Job) {
        if self.saved_key.differs(job) || self.due() {
            self.save(job);
        }
    }

    /// The engine waits for a sync: saving now shortens the save after it
    /// (for the last checkpoint of 2,000 small files, 5 ms of rows written
    /// while the disk works instead of after).
    fn on_idle(&mut self, job: &Job) {
        self.save(job);
    }

    fn on_file_change(&mut self, job: &Job, i: usize) {
        let Some(file) = job.files.get(i) else {
            return self.on_change(job);
        };
        let moved = self.saved_key.remotes.get(i) != Some(&file.remote_name);
        let large = file.validator.is_some() && file.bytes_total.is_none_or(|t| t > SAVE_FILE_AT_ONCE);
        if moved || large || self.saved_key.differs(job) || self.due() {
            self.save(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(files: usize) -> (tempfile::TempDir, Shared, Job) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut job = Job::new("t", bits_core::JobType::Download, "openssl");
        for n in 0..files {
            job.add_file(
                &format!("http://127.0.0.1/f{n}"),
                &tmp.path().join(format!("f{n}")),
            )
            .unwrap();
        }
        job.resume().unwrap();
        store.insert(&job).unwrap();
        (tmp, Arc::new(Mutex::new(store)), job)
    }

    fn stored(store: &Shared, id: Uuid) -> Job {
        lock(store).get(id).unwrap().unwrap()
    }

    /// A job of `files` files in TRANSFERRING, saved, and its `Persist`.
    fn transferring(files: usize) -> (tempfile::TempDir, Shared, Job, Persist) {
        let (tmp, store, mut job) = setup(files);
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        let mut p = Persist::new(store.clone(), Changes::default(), &job);
        p.on_change(&job);
        (tmp, store, job, p)
    }

    #[test]
    fn state_error_and_remote_name_changes_are_saved_at_once() {
        let (_tmp, store, mut job) = setup(2);
        let mut p = Persist::new(store.clone(), Changes::default(), &job);
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        p.on_change(&job);
        assert_eq!(stored(&store, job.id).state(), JobState::Transferring);
        job.files[1].remote_name = "http://127.0.0.1/moved".into();
        p.on_file_change(&job, 1);
        assert_eq!(
            stored(&store, job.id).files[1].remote_name,
            "http://127.0.0.1/moved"
        );
        job.fail(&BitsError::UnknownCa, Some(0), SystemTime::now());
        p.on_change(&job);
        assert_eq!(stored(&store, job.id), job);
    }

    #[test]
    fn file_details_and_small_progress_wait_for_the_throttle() {
        let (_tmp, store, mut job, mut p) = transferring(2);
        // A small file's headers, its bytes and its completion: not saved at once.
        job.files[0].validator = Some("\"v\"".into());
        job.files[0].bytes_total = Some(10);
        p.on_file_change(&job, 0);
        job.files[0].bytes_transferred = 10;
        p.on_progress(&job);
        job.files[0].completed = true;
        p.on_change(&job);
        // Nor many MiB of progress.
        job.files[1].bytes_transferred = 64 << 20;
        p.on_progress(&job);
        let saved = stored(&store, job.id);
        assert_eq!(saved.files[0].validator, None);
        assert!(!saved.files[0].completed);
        assert_eq!(saved.bytes_transferred(), 0);
        // A second passed: everything is saved.
        p.saved_at -= SAVE_INTERVAL;
        p.on_progress(&job);
        assert_eq!(stored(&store, job.id), job);
        // And the final state change flushes everything.
        job.files[1].completed = true;
        job.apply(Event::AllFilesDone);
        p.on_change(&job);
        assert_eq!(stored(&store, job.id), job);
    }

    #[test]
    fn an_idle_moment_saves_what_the_throttle_held() {
        let (_tmp, store, mut job, mut p) = transferring(2);
        job.files[0].bytes_total = Some(10);
        job.files[0].bytes_transferred = 10;
        p.on_progress(&job);
        assert_eq!(stored(&store, job.id).bytes_transferred(), 0);
        p.on_idle(&job);
        assert_eq!(stored(&store, job.id), job);
    }

    #[test]
    fn saves_that_change_the_state_wake_subscribers() {
        let (_tmp, store, mut job) = setup(1);
        let changes = Changes::default();
        let rx = changes.subscribe();
        let mut p = Persist::new(store.clone(), changes, &job);
        job.files[0].bytes_transferred = 1;
        p.saved_at -= SAVE_INTERVAL;
        p.on_progress(&job);
        assert_eq!(*rx.borrow(), 0, "progress wakes nobody");
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        p.on_change(&job);
        assert_eq!(*rx.borrow(), 1);
    }

    #[test]
    fn a_job_the_daemon_completes_is_saved_transferred_without_waking_anyone() {
        let (_tmp, store, mut job) = setup(1);
        let changes = Changes::default();
        let rx = changes.subscribe();
        let mut p = Persist::new(store.clone(), changes, &job);
        p.hold_transferred = true;
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        p.on_change(&job);
        assert_eq!(*rx.borrow(), 1);
        job.apply(Event::AllFilesDone);
        p.on_change(&job);
        assert_eq!(stored(&store, job.id).state(), JobState::Transferred);
        assert_eq!(*rx.borrow(), 1, "the completion's save wakes them");
    }

    #[test]
    fn a_large_files_validator_is_saved_at_once() {
        let (_tmp, store, mut job, mut p) = transferring(2);
        for total in [Some(SAVE_FILE_AT_ONCE + 1), None] {
            job.files[1].validator = Some(format!("\"{total:?}\""));
            job.files[1].bytes_total = total;
            p.on_file_change(&job, 1);
            assert_eq!(stored(&store, job.id), job, "size {total:?}");
        }
    }
}
