//! `bits daemon`: the service that carries every active job of one store.
//!
//! - **One per store**: it holds `daemon.lock` (`flock`) for its lifetime; a
//!   second daemon exits 1 naming the first one's pid.
//! - **Scheduling** is a [`bits_scheduler::Scheduler`] over the SQLite
//!   store ([`sqlite`]): at most [`bits_scheduler::MAX_PARALLEL`] jobs
//!   transfer at once, by priority (FOREGROUND > HIGH > NORMAL > LOW), then
//!   age, a higher priority preempting a lower one; a TRANSIENT_ERROR job
//!   waits for the engine's retry delay (the minimum retry delay, or a
//!   longer `Retry-After`), then goes back to QUEUED, or to ERROR when its
//!   no-progress timeout runs out first.
//! - **Operations** arrive over the socket (see [`crate::ipc`]); a running
//!   job's transfer is stopped (its engine future dropped, which the engine
//!   makes safe) before any change but `resume` applies.
//! - **`transfer`'s jobs** are completed here as soon as they are
//!   TRANSFERRED ([`ipc::Request::Transfer`]): the daemon holds the job then, so
//!   the command neither reads it nor waits for a second round trip.
//! - **Persistence**: progress is saved every second; state and error
//!   changes, a reported redirect and the validator of a file over a MiB
//!   at once ([`bits_scheduler::Persist`]). SIGTERM/SIGINT stop every
//!   transfer, save it as QUEUED and exit 0; after `kill -9` the next
//!   daemon resumes every active job from the bytes in its temporary file.
//! - **Memory** holds only the jobs running now and the ids and timers of
//!   TRANSIENT_ERROR jobs; everything else lives in the database. Final jobs
//!   older than 30 days are pruned at start and then daily.
//!
//! It runs on a single-threaded tokio runtime with a `LocalSet`: the
//! engine's tasks are I/O-bound, and one thread keeps the scheduler free of
//! locks.

mod bandwidth;
mod checkpoints;
mod service;
mod sqlite;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bits_core::{Hresult, Job};
use bits_scheduler::Scheduler;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::backend;
use crate::error::{Failure, EXIT_OK};
use crate::ipc::{self, accept_loop, Changes, Pending};
use crate::store::{self, Store};
use bandwidth::DaemonSchedule;
pub use bandwidth::{NetworkView, Published};
use checkpoints::Checkpoints;
use service::Daemon;
use sqlite::StoreJobs;

/// `SIGXFSZ` on Linux: ignored, so that a file-size limit is an `EFBIG`
/// write error (a LOCAL_FILE error of the job) instead of killing us.
const SIGXFSZ: i32 = 25;

/// Told of every save of a job: a change of state, error or files at
/// once, progress at most every second. Called on the daemon's thread:
/// it must not block.
pub type SaveListener = Arc<dyn Fn(&Job) + Send + Sync>;

/// What an embedder adds to the daemon without the daemon knowing what
/// it is (`bits agent`'s NATS side): one more source of jobs and a
/// listener of their saves. The default adds nothing.
#[derive(Default)]
pub struct Hooks {
    /// Told of every save ([`SaveListener`]).
    pub on_save: Option<SaveListener>,
    /// Called once the daemon is ready, with the sender of its requests:
    /// the source stores its jobs in the store as `bits transfer` does,
    /// then sends [`ipc::Request`]s as a socket client would.
    pub intake: Option<Box<dyn FnOnce(mpsc::UnboundedSender<Pending>) + Send>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_save", &self.on_save.is_some())
            .field("intake", &self.intake.is_some())
            .finish()
    }
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT. Prints
/// `ready` on stdout once it accepts commands. `config`: the config file
/// (the bandwidth schedule), else the default one; a malformed one is
/// refused (exit 2) before anything starts.
pub fn run(dir: &Path, config: Option<PathBuf>) -> Result<ExitCode, Failure> {
    run_with(dir, config, Hooks::default())
}

/// [`run`] with an embedder's [`Hooks`].
pub fn run_with(dir: &Path, config: Option<PathBuf>, hooks: Hooks) -> Result<ExitCode, Failure> {
    let schedule = DaemonSchedule::load(dir, config)?;
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
    let changes = Changes::default();
    let jobs = StoreJobs::new(store, changes.clone()).with_listener(hooks.on_save);
    let transports_dir = dir.to_path_buf();
    let scheduler = Scheduler::new(jobs.clone(), jobs.clone(), move |name: &str| {
        backend::transport_for(name, &transports_dir)
    });
    let mut scheduler = schedule.attach(scheduler);
    scheduler.recover().map_err(failure)?;
    let checkpoints = Checkpoints::start(dir)?;
    let sock = ipc::path(dir, ipc::SOCKET_FILE);
    let listener = bind(&sock)?;

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
        tokio::task::spawn_local(accept_loop(listener, req_tx.clone(), changes.clone()));
        let mut daemon = Daemon::new(jobs, scheduler, changes, checkpoints, schedule);
        daemon.start().await;
        drop(store_lock);
        if let Some(intake) = hooks.intake {
            intake(req_tx);
        }
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready").and_then(|()| out.flush());
        }
        tracing::info!(store = %dir.display(), pid = std::process::id(), "daemon ready");
        daemon.serve(req_rx, &mut signals).await;
        daemon.shutdown().await;
        let _ = std::fs::remove_file(&sock);
        tracing::info!("daemon stopped");
        Ok::<_, Failure>(())
    });
    result.map(|()| ExitCode::from(EXIT_OK))
}

/// Binds the daemon's socket (`0600`), replacing a stale one.
fn bind(sock: &Path) -> Result<UnixListener, Failure> {
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).map_err(|e| {
        let f = store::io_failure("listen on", sock, &e);
        if e.kind() == std::io::ErrorKind::InvalidInput {
            f.with_hint("the socket path is too long; use a shorter --store path")
        } else {
            f
        }
    })?;
    let _ = std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600));
    listener
        .set_nonblocking(true)
        .map_err(|e| store::io_failure("listen on", sock, &e))?;
    Ok(listener)
}

/// A failure of the scheduler's seams as the command reports it: the
/// store's own failure when it is one.
fn failure(e: bits_scheduler::Error) -> Failure {
    match e.downcast::<Failure>() {
        Ok(f) => *f,
        Err(e) => Failure::runtime(Hresult::E_FAIL, e.to_string(), ""),
    }
}

/// The signals the daemon handles.
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
