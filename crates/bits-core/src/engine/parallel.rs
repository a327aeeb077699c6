//! Several files of a download job in flight at once
//! (`docs/spec/network.md`, "Many files, many connections").
//!
//! One writer: the run's own loop ([`Engine::run_parallel`]) is the only
//! code that changes the job or talks to the observer. Each file in flight
//! runs the same flow as a lone file ([`Engine::receive_file`]) on a job of
//! its own holding just that file (its counters, validator and temporary
//! file are its own), and relays what it would tell an observer
//! ([`Relay`]); the loop applies each report to the real job in the order
//! it came, settles each file as it finishes and checkpoints finished files
//! in batches as the sequential run does. The files in flight are futures
//! of the run's own task, not spawned tasks: dropping the run (suspend,
//! cancel, shutdown) drops them at once, their buffered bytes written out
//! ([`TempWriter`](crate::files::TempWriter) flushes on drop), so no file
//! is written after the run is gone.

use std::collections::HashMap;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tracing::Instrument;

use super::checkpoint::Unsynced;
use super::pipeline::{Meanwhile, Received};
use super::{end_run, moved, rate, Engine, Observer, RunOutcome};
use crate::bandwidth::Controller;
use crate::error::BitsError;
use crate::files;
use crate::job::{FileInfo, Job};
use crate::policy::ConnectionPolicy;
use crate::state::{Event, JobState};

/// What a file in flight reported, for the run's loop to apply.
#[derive(Debug)]
struct Report {
    /// The file's index in the real job.
    file: usize,
    what: Reported,
}

#[derive(Debug)]
enum Reported {
    /// Bytes reached its temporary file ([`Observer::on_progress`]).
    Moved(u64),
    /// It changed ([`Observer::on_change`], or with `file_change`
    /// [`Observer::on_file_change`]): its state now, and whether its job
    /// (of one file) is transferring.
    Changed {
        info: Box<FileInfo>,
        transferring: bool,
        file_change: bool,
        /// How its connection yields ([`Job::controller`], [`Job::yielding`]).
        controller: Controller,
        yielding: bool,
    },
}

impl Report {
    /// Whether the file's server has answered its request (its job of one
    /// file is transferring), and over which protocol.
    fn answered(&self) -> Option<&str> {
        match &self.what {
            Reported::Changed {
                transferring: true,
                info,
                ..
            } => Some(info.protocol.as_deref().unwrap_or_default()),
            _ => None,
        }
    }
}

/// The observer of a file in flight: relays to the run's loop.
#[derive(Debug)]
struct Relay {
    file: usize,
    to: UnboundedSender<Report>,
}

impl Relay {
    fn send(&self, what: Reported) {
        // The loop holds the receiver for as long as any file runs.
        let _ = self.to.send(Report {
            file: self.file,
            what,
        });
    }

    fn changed(&self, job: &Job, file_change: bool) {
        self.send(Reported::Changed {
            info: Box::new(job.files[0].clone()),
            transferring: job.state() == JobState::Transferring,
            file_change,
            controller: job.controller,
            yielding: job.yielding,
        });
    }
}

impl Observer for Relay {
    fn on_progress(&mut self, job: &Job) {
        self.send(Reported::Moved(job.files[0].bytes_transferred));
    }
    fn on_change(&mut self, job: &Job) {
        self.changed(job, false);
    }
    fn on_file_change(&mut self, job: &Job, _i: usize) {
        self.changed(job, true);
    }
}

/// Applies a file's report to the real job and tells the observer.
fn apply(job: &mut Job, observer: &mut dyn Observer, report: Report) {
    let i = report.file;
    match report.what {
        Reported::Moved(position) => moved(job, i, position, observer),
        Reported::Changed {
            info,
            transferring,
            file_change,
            controller,
            yielding,
        } => {
            (job.controller, job.yielding) = (controller, yielding);
            // A file's job of one file reports its first answer as a change
            // (CONNECTING to TRANSFERRING); the real job changes state once,
            // and a file changed only in its protocol (saved with its next
            // change, as in a sequential run) is no change to report.
            let mut before = std::mem::replace(&mut job.files[i], *info);
            before.protocol.clone_from(&job.files[i].protocol);
            let changed = before != job.files[i];
            let connected = transferring
                && job.state() != JobState::Transferring
                && job.apply(Event::Connected) == JobState::Transferring;
            if file_change {
                observer.on_file_change(job, i);
            }
            if connected || (changed && !file_change) {
                observer.on_change(job);
            }
        }
    }
}

/// Files in flight at once to an origin that answered over HTTP/2: they
/// share one connection as streams, so the connection limit does not bound
/// them; this does (servers allow 100 or more streams: nginx 128, the RFC
/// recommends at least 100). At 20 ms a round trip, 2,000 small files are
/// about 63 round trips instead of 250.
pub(super) const H2_FILES_IN_FLIGHT: usize = 32;

/// Notes the first answer from a file's origin: how many of its files may
/// be in flight from now on (`limit` over HTTP/1.1, a connection each;
/// [`H2_FILES_IN_FLIGHT`] over HTTP/2, streams of one connection).
fn hear(heard: &mut HashMap<String, usize>, origins: &HashMap<usize, String>, report: &Report, limit: usize) {
    if let (Some(protocol), Some(origin)) = (report.answered(), origins.get(&report.file)) {
        if !heard.contains_key(origin) {
            let room = if protocol == "h2" {
                H2_FILES_IN_FLIGHT.max(limit)
            } else {
                limit
            };
            heard.insert(origin.clone(), room);
        }
    }
}

/// The origin (scheme, host, port) a file is fetched from, which its
/// connection limit counts against.
fn origin_of(file: &FileInfo) -> String {
    url::Url::parse(&file.remote_name)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// How one file in flight ended: its index, its origin, its state as its
/// own job left it, and the file received or why not.
type Ended = (usize, String, FileInfo, Result<Received, BitsError>);

impl Engine {
    /// Whether a run of `job` moves several files at once: a download
    /// with more than one file to go, under a limit above one, with no
    /// server-certificate validator (which is told the exact file each
    /// connection is for: with one file at a time it always is).
    pub(super) fn runs_in_parallel(&self, job: &Job, policy: &ConnectionPolicy) -> bool {
        self.options.connections_per_origin > 1
            && policy.validator().is_none()
            && job.files.iter().filter(|f| !f.completed).nth(1).is_some()
    }

    /// Runs the pending files of a download job (CONNECTING or
    /// TRANSFERRING, its policy checked), up to
    /// [`EngineOptions::connections_per_origin`](super::EngineOptions::connections_per_origin)
    /// of them at once per origin ([`H2_FILES_IN_FLIGHT`] to an origin that
    /// answered over HTTP/2), started in the job's order. The first
    /// failure stops the others (their bytes kept on disk) and is
    /// recorded, after the files finished before it are checkpointed.
    pub(super) async fn run_parallel(
        &self,
        job: &mut Job,
        policy: &ConnectionPolicy,
        observer: &mut dyn Observer,
    ) -> RunOutcome {
        let limit = self.options.connections_per_origin.max(1);
        // The job without its files, cloned for each file in flight.
        let files = std::mem::take(&mut job.files);
        let bare = job.clone();
        job.files = files;

        let pending: Vec<usize> = (0..job.files.len())
            .filter(|&i| !job.files[i].completed)
            .collect();
        // One cap for all its files (the job's own, its share of the
        // daemon's limiter).
        let cap = rate::RateCap::for_job(job);
        let (to, mut reports) = unbounded_channel();
        let mut unsynced = Unsynced::default();
        let mut running = FuturesUnordered::new();
        let mut per_origin: HashMap<String, usize> = HashMap::new();
        // Origins that answered a file's request, and how many files may
        // be in flight to each: the limit over HTTP/1.1 (a connection per
        // file), more over HTTP/2 (streams of one connection).
        let mut heard: HashMap<String, usize> = HashMap::new();
        let mut origins: HashMap<usize, String> = HashMap::new();
        let mut next = 0;
        let failure = loop {
            // Start files in the job's order while their origin has room.
            while let Some(&i) = pending.get(next) {
                let origin = origin_of(&job.files[i]);
                let count = per_origin.entry(origin.clone()).or_default();
                // One file goes first to an origin not yet heard from, so the
                // others find what its answer taught: the connection (one
                // to share over HTTP/2), an authentication answer to send
                // first.
                if *count >= heard.get(&origin).copied().unwrap_or(1) {
                    break;
                }
                *count += 1;
                next += 1;
                // Before its first byte: see files::Watched.
                unsynced.watch(&job.files[i].temp_name);
                let mut own = bare.clone();
                own.files.push(job.files[i].clone());
                let relay = Relay {
                    file: i,
                    to: to.clone(),
                };
                origins.insert(i, origin.clone());
                let alone = self.receive_alone(own, i, origin, policy, cap.as_ref(), relay);
                running.push(alone.instrument(tracing::debug_span!("file", index = i)));
            }
            if running.is_empty() {
                break None;
            }
            tokio::select! {
                biased;
                Some(report) = reports.recv() => {
                    hear(&mut heard, &origins, &report, limit);
                    apply(job, observer, report);
                }
                work = unsynced.ready(), if unsynced.pending() => {
                    if let Err(failed) = unsynced.step_ready(work, job, observer) {
                        break Some(failed);
                    }
                }
                Some((i, origin, info, result)) = running.next() => {
                    // What it reported before it ended comes first (a
                    // small file's first answer often ends with it).
                    while let Ok(report) = reports.try_recv() {
                        hear(&mut heard, &origins, &report, limit);
                        apply(job, observer, report);
                    }
                    if let Some(count) = per_origin.get_mut(&origin) {
                        *count -= 1;
                    }
                    origins.remove(&i);
                    heard.entry(origin).or_insert(limit);
                    job.files[i] = info;
                    match result {
                        Ok(received) => {
                            unsynced.hold(received);
                            if let Err(failed) = unsynced.settle(job, observer).await {
                                break Some(failed);
                            }
                        }
                        Err(e) => break Some((i, e)),
                    }
                }
            }
        };
        // The others stop here, their bytes kept: written out as their
        // writers drop, then counted from the disk, which a resume trusts.
        drop(running);
        while let Ok(report) = reports.try_recv() {
            apply(job, observer, report);
        }
        for &i in origins.keys() {
            let on_disk = files::disk_size(&job.files[i].temp_name).ok().flatten();
            if let Some(size) = on_disk.filter(|&n| n != job.files[i].bytes_transferred) {
                moved(job, i, size, observer);
            }
        }
        end_run(job, observer, &mut unsynced, failure).await
    }

    /// Receives file `i` of the real job on `own`, a job holding just that
    /// file, reporting through `relay`.
    async fn receive_alone(
        &self,
        mut own: Job,
        i: usize,
        origin: String,
        policy: &ConnectionPolicy,
        cap: Option<&rate::RateCap>,
        mut relay: Relay,
    ) -> Ended {
        // Nothing is held before it: its Meanwhile only opens its
        // temporary file while its request is in flight.
        let mut nothing = Unsynced::default();
        let mut meanwhile = Meanwhile::new(&mut nothing);
        let result = self
            .receive_file(&mut own, 0, policy, &mut relay, &mut meanwhile, cap)
            .await
            .map(|received| Received { file: i, ..received });
        drop(meanwhile);
        let info = own.files.swap_remove(0);
        (i, origin, info, result)
    }
}
