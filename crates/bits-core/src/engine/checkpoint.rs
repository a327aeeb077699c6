//! Batched durability: a finished file is marked `completed` only once a
//! checkpoint synced it, and a checkpoint syncs many files at once, in the
//! background while the next files download.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::pipeline::Received;
use super::{moved, Observer};
use crate::error::BitsError;
use crate::files::{self, TempWriter};
use crate::job::Job;
use crate::state::Event;

/// A checkpoint syncs the finished files once this many wait. The last
/// batch of a job is synced while the job waits, so smaller batches end a
/// job of many small files sooner; much smaller ones sync so often that
/// their syncs get in each other's way.
pub const CHECKPOINT_FILES: usize = 64;
/// … or once the finished files waiting hold this many bytes.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;
/// … or once the oldest finished file has waited this long.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// File `i` holds all its bytes (written, not yet synced): its counters
/// say so; `completed` waits for the checkpoint ([`Unsynced`]).
fn finish_file(job: &mut Job, i: usize, size: u64, observer: &mut dyn Observer) {
    let file = &mut job.files[i];
    file.bytes_transferred = size;
    file.bytes_total = Some(size);
    job.note_progress();
    observer.on_progress(job);
}

/// How a batch sync ended: the index (in the batch) of the first file that
/// could not be synced, and why.
pub(super) type SyncResult = Result<(), (usize, BitsError)>;

/// Files whose every byte is written but not yet synced.
#[derive(Debug, Default)]
pub(super) struct Unsynced {
    files: Vec<usize>,
    /// For each of `files`: whether this run wrote it from byte 0.
    fresh: Vec<bool>,
    /// The last file received, not yet settled.
    held: Option<Received>,
    bytes: u64,
    since: Option<Instant>,
    /// A batch being synced in the background: its files and the sync.
    syncing: Option<(Vec<usize>, tokio::task::JoinHandle<SyncResult>)>,
    /// Fires when the waiting files fall due by time ([`Unsynced::ready`]);
    /// kept from file to file, so it is armed once per batch.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The file systems written to, for batches synced with `syncfs`.
    watched: files::Watched,
}

/// Checkpoint work that needs no waiting, found by [`Unsynced::ready`].
#[derive(Debug)]
pub(super) enum Ready {
    /// The background batch's sync ended.
    Synced(SyncResult),
    /// The waiting files fell due by time, and no batch syncs.
    Due,
}

impl Unsynced {
    /// Before a file is written: watches its file system.
    pub(super) fn watch(&mut self, temp: &Path) {
        if let Some(dir) = temp.parent() {
            self.watched.watch(dir);
        }
    }

    /// Keeps a received file until [`Unsynced::settle`].
    pub(super) fn hold(&mut self, received: Received) {
        debug_assert!(self.held.is_none(), "a held file was never settled");
        self.held = Some(received);
    }

    /// Settles the held file, if any: writes out its last bytes, sets its
    /// modification time (as BITS does: the server's), closes it, counts
    /// it finished and queues it for its checkpoint, which may start now.
    pub(super) async fn settle(&mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        let Some(received) = self.held.take() else {
            return Ok(());
        };
        let i = received.file;
        if let Some(mut writer) = received.writer {
            let flushed = writer.flush();
            if flushed.is_err() && writer.position() != job.files[i].bytes_transferred {
                // What did reach the file is kept and counted.
                moved(job, i, writer.position(), observer);
            }
            // A background writeback sync in flight is waited for: its
            // error (reported once) must not be lost to the final sync.
            let settled = writer.settle().await;
            flushed.and(settled).map_err(|e| (i, e))?;
            if let Some(modified) = received.modified {
                writer.set_modified(modified);
            }
        }
        finish_file(job, i, received.size, observer);
        self.push(job, i, received.fresh);
        // A due batch syncs in the background while the next files
        // download; an earlier batch that is done gets marked.
        self.step(job, observer).await
    }

    /// Whether [`Unsynced::settle`] would wait for a sync now.
    pub(super) fn settling_waits(&self) -> bool {
        let Some(held) = &self.held else {
            return false;
        };
        if held.writer.as_ref().is_some_and(TempWriter::syncing) {
            return true;
        }
        let syncing = self.syncing.as_ref().is_some_and(|(_, sync)| !sync.is_finished());
        // `step` after the held file joins the waiting ones.
        syncing && self.due_with(1, held.size)
    }

    fn push(&mut self, job: &Job, i: usize, fresh: bool) {
        self.files.push(i);
        self.fresh.push(fresh);
        self.bytes += job.files[i].bytes_transferred;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether a checkpoint is due.
    fn due(&self) -> bool {
        self.due_with(0, 0)
    }

    /// Whether a checkpoint would be due with `files` more files of
    /// `bytes` in all.
    fn due_with(&self, files: usize, bytes: u64) -> bool {
        self.files.len() + files >= CHECKPOINT_FILES
            || self.bytes + bytes >= CHECKPOINT_BYTES
            || self.since.is_some_and(|t| t.elapsed() >= CHECKPOINT_INTERVAL)
    }

    /// Between files: marks a background batch that finished; starts one
    /// when due (after the previous batch is marked: at most one syncs).
    async fn step(&mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        let finished = self.syncing.as_ref().is_some_and(|(_, sync)| sync.is_finished());
        if finished || (self.due() && self.syncing.is_some()) {
            self.finish(job, observer).await?;
        }
        if self.due() {
            self.start(job);
        }
        Ok(())
    }

    /// Whether files wait for their checkpoint or a batch syncs.
    pub(super) fn pending(&self) -> bool {
        self.since.is_some() || self.syncing.is_some()
    }

    /// While the network is awaited: resolves once there is checkpoint work
    /// that needs no waiting: the background batch's sync ended, or, none
    /// syncing, the waiting files fell due by time. Cancel-safe; never
    /// resolves when nothing is [`Unsynced::pending`].
    pub(super) async fn ready(&mut self) -> Ready {
        if let Some((_, sync)) = &mut self.syncing {
            return Ready::Synced(joined(sync.await));
        }
        let Some(since) = self.since else {
            return std::future::pending().await;
        };
        let deadline = since + CHECKPOINT_INTERVAL;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.await;
        Ready::Due
    }

    /// Does the work [`Unsynced::ready`] found: marks the batch whose sync
    /// ended (its error, if any, is returned as [`Unsynced::finish`]
    /// returns it) and starts the next one when it is due.
    pub(super) fn step_ready(
        &mut self,
        ready: Ready,
        job: &mut Job,
        observer: &mut dyn Observer,
    ) -> SyncResult {
        match ready {
            Ready::Synced(result) => {
                if let Some((waiting, _)) = self.syncing.take() {
                    mark(job, observer, &waiting, result)?;
                }
                if self.due() {
                    self.start(job);
                }
            }
            Ready::Due => self.start(job),
        }
        Ok(())
    }

    /// Syncs every waiting file and marks it completed: before a failure
    /// is recorded and before the job is TRANSFERRED.
    pub(super) async fn checkpoint(
        &mut self,
        job: &mut Job,
        observer: &mut dyn Observer,
    ) -> Result<(), (usize, BitsError)> {
        self.settle(job, observer).await?;
        self.finish(job, observer).await?;
        self.start(job);
        self.finish(job, observer).await
    }

    /// Starts syncing the waiting files in the background (a dropped run
    /// leaves it to end by itself: the files stay unfinished in the job).
    fn start(&mut self, job: &Job) {
        if self.files.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.files);
        let fresh = std::mem::take(&mut self.fresh);
        self.bytes = 0;
        self.since = None;
        let paths: Vec<_> = waiting.iter().map(|&i| job.files[i].temp_name.clone()).collect();
        let groups = self.watched.groups(&paths, &fresh);
        self.syncing = Some((waiting, tokio::spawn(files::sync_paths(paths, groups))));
    }

    /// Waits for the background batch, then (only then) marks its files
    /// completed ([`mark`]).
    async fn finish(&mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        let Some((waiting, sync)) = self.syncing.take() else {
            return Ok(());
        };
        if !sync.is_finished() {
            // Lets a sync task spawned just now start its blocking work
            // first, so that the observer's work runs beside it.
            tokio::task::yield_now().await;
            observer.on_idle(job);
        }
        mark(job, observer, &waiting, joined(sync.await))
    }
}

/// A batch sync's result, a task that failed counting as its first file's
/// failure.
fn joined(sync: Result<SyncResult, tokio::task::JoinError>) -> SyncResult {
    sync.unwrap_or_else(|e| {
        Err((
            0,
            BitsError::Internal {
                what: format!("the sync task failed: {e}"),
            },
        ))
    })
}

/// Marks the files of a batch that its sync made durable completed and
/// tells the observer. A file that could not be synced stays unfinished and
/// is returned with its index, as are the ones after it; the ones before
/// it are marked completed.
fn mark(job: &mut Job, observer: &mut dyn Observer, waiting: &[usize], result: SyncResult) -> SyncResult {
    let synced = match &result {
        Ok(()) => waiting.len(),
        Err((n, _)) => *n,
    };
    for &i in &waiting[..synced] {
        job.files[i].completed = true;
    }
    if synced > 0 {
        if job.next_file().is_some() {
            job.apply(Event::FileDone);
        }
        observer.on_change(job);
    }
    result.map_err(|(n, e)| (waiting[n], e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settling_never_waits_for_a_sync_while_a_request_is_in_flight() {
        let held = |size| Received {
            file: 0,
            writer: None,
            modified: None,
            size,
            fresh: true,
        };
        let mut u = Unsynced::default();
        assert!(!u.settling_waits());
        u.hold(held(10));
        // Nothing syncing: settling starts a batch at most, without waiting.
        u.files = vec![1; CHECKPOINT_FILES];
        assert!(!u.settling_waits());
        // A batch still syncing, and the held file makes the next one due (by
        // count, then by bytes): settling would wait, so it happens first.
        let never = tokio::spawn(std::future::pending::<SyncResult>());
        u.syncing = Some((vec![2], never));
        u.files = vec![1; CHECKPOINT_FILES - 1];
        assert!(u.settling_waits());
        u.files = vec![1];
        assert!(!u.settling_waits());
        u.held = Some(held(CHECKPOINT_BYTES));
        assert!(u.settling_waits());
        if let Some((_, sync)) = u.syncing.take() {
            sync.abort();
        }
    }
}
