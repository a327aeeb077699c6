//! # bits-scheduler
//!
//! Runs the jobs of a store: which jobs transfer now, starting and
//! stopping their [`bits_core::Engine`] runs, retry and no-progress
//! timers, and saving each running job as it goes. The `bits` daemon runs
//! one over its SQLite store; an agent that takes jobs from elsewhere runs
//! the same [`Scheduler`] over its own source and sink instead of a second
//! daemon.
//!
//! ## The seams
//! - A [`JobSource`]: where jobs come from and how they are found (the
//!   runnable ids in priority order, one job, the jobs to recover at
//!   start).
//! - A [`StateSink`]: where a job's state goes (a save at once, a
//!   throttled progress save, and telling watchers a state changed).
//! - [`Transports`]: the transport for a job's backend name (any
//!   `Fn(&str) -> Result<SharedTransport, BitsError>` is one).
//!
//! One object may be both source and sink (the daemon's SQLite store is).
//!
//! ## What it does
//! - [`Scheduler`]: at most [`MAX_PARALLEL`] jobs at once, by priority
//!   then age; preemption of a lower-priority job when the slots are
//!   full; retry and no-progress timers for TRANSIENT_ERROR jobs; stopping
//!   a transfer and saving where it got; recovery after a crash; holding a
//!   job once TRANSFERRED for its caller to complete ([`Scheduler::hold`]).
//! - [`Persist`]: the engine [`bits_core::Observer`] that saves a running
//!   job through a sink, at once for what a restart needs and throttled
//!   for progress.
//! - [`schedule`]: the bandwidth schedule of the config file (days ×
//!   hours × priorities → a rate, `0` blocking with
//!   `BG_E_BLOCKED_BY_POLICY`, maintenance rules first), parsed with its
//!   errors' line and column, evaluated at a [`LocalTime`], and reloaded
//!   by [`ScheduleHolder`] keeping the old schedule on error. Pure code;
//!   [`Bandwidth`] applies it: it evaluates the schedule at each window's
//!   boundary (and at least once a minute) on a [`WallClock`], sets the
//!   rates of the daemon-wide [`bits_core::SharedLimiter`] that the
//!   scheduler hands to every job ([`Scheduler::with_shared_limiter`]),
//!   and tells which priorities are blocked ([`Scheduler::set_blocked`]:
//!   TRANSIENT_ERROR with `BG_E_BLOCKED_BY_POLICY`, QUEUED again when the
//!   window ends).
//!
//! ## What it does not do
//! - Store anything: the source and the sink do (the `bits` CLI's is
//!   SQLite; this crate has no database, TLS or command-line dependency).
//! - Apply users' operations (`suspend`, `cancel`, `set-*`…): the caller
//!   applies them to its store, after [`Scheduler::stop`] for a running
//!   job, and then calls [`Scheduler::job_changed`].
//! - Complete jobs: a held job is handed back in [`Ended::held`].
//! - Listen on a socket, handle signals or take locks: the process that
//!   runs it does.
//!
//! ## Threading
//! It runs inside a [`tokio::task::LocalSet`] (the daemon's is on a
//! current-thread runtime): each transfer is a `spawn_local` task. The
//! engine's work is I/O-bound, and one thread keeps the scheduler, the
//! transfers' observers and the sink free of contention.
//!
//! ## Why the defaults are what they are
//! - [`MAX_PARALLEL`] = 4: a few jobs at once keep the link busy while one
//!   waits on a slow server, and few enough leave each a useful share of
//!   the bandwidth and the disk ([`Scheduler::with_max_parallel`] changes
//!   it).
//! - [`SAVE_INTERVAL`] = 1 s: a job of many small files is not saved once
//!   per file, and a crash loses at most a second of counters, which the
//!   engine recovers from the temporary files anyway.
//! - [`SAVE_FILE_AT_ONCE`] = 1 MiB: a larger file's validator is saved as
//!   soon as its response arrives, so a crash never costs its bytes on
//!   disk; a smaller one costs at most that much downloaded again.

#![deny(missing_docs)]

mod bandwidth;
mod persist;
pub mod schedule;
mod scheduler;
mod seams;
mod timers;

#[cfg(test)]
mod memory;

pub use bandwidth::{Bandwidth, StartedClock, SystemWallClock, WallClock, EVALUATE_AT_LEAST_EVERY};
pub use persist::{Persist, SAVE_FILE_AT_ONCE, SAVE_INTERVAL};
pub use schedule::{
    BlockChange, BlockWatch, Clock, Limit, LocalTime, Schedule, ScheduleError, ScheduleHolder, SystemClock,
    Weekday,
};
pub use scheduler::{Due, Ended, Scheduler, MAX_PARALLEL};
pub use seams::{Error, JobSource, StateSink, Transports};
