//! The work done while the network is awaited: the previous file is
//! settled and this file's temporary file opened while its request is in
//! flight, and the earlier files' checkpoint work done while its answer or
//! body is awaited.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::SystemTime;

use super::checkpoint::{SyncResult, Unsynced};
use super::Observer;
use crate::error::BitsError;
use crate::files::TempWriter;
use crate::job::Job;

/// Polls `future` once: `Pending` once it waits (a request handed to a
/// transport that sends it from its own task), else its output.
pub(super) async fn poll_once<F: Future + Unpin>(mut future: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut future).poll(cx))).await
}

/// A file whose every byte arrived: its last bytes may still be buffered
/// in `writer`. [`Unsynced::settle`] writes them out, sets the server's
/// modification time, closes the file and counts it finished.
#[derive(Debug)]
pub(super) struct Received {
    pub(super) file: usize,
    /// `None` when the file was already whole on disk (a 416).
    pub(super) writer: Option<TempWriter>,
    pub(super) modified: Option<SystemTime>,
    pub(super) size: u64,
    /// This run wrote every byte the file holds (it started empty or
    /// absent), which lets its checkpoint use `syncfs`
    /// ([`files::Watched`](crate::files::Watched)).
    pub(super) fresh: bool,
}

/// The local work a file's request does not wait for, done while the
/// network is awaited (idle time for the engine): while the request is in
/// flight, the previous file is settled (written out, counted, queued for
/// its checkpoint) and this file's temporary file opened; while its answer
/// or body is awaited, the earlier files' checkpoint work
/// ([`Meanwhile::alongside`]). For many small files that work is a sizeable
/// share of each file's time, so hiding it behind the round trip shortens
/// the job.
pub(super) struct Meanwhile<'a> {
    unsynced: &'a mut Unsynced,
    /// What settling the previous file gave; `None` until it ran.
    settled: Option<SyncResult>,
    /// The temporary file to open, and its length (`None`: it does not
    /// exist).
    open: Option<(PathBuf, Option<u64>)>,
    opened: Option<Early>,
}

/// A temporary file opened before the response came.
struct Early {
    offset: u64,
    writer: Result<TempWriter, BitsError>,
    /// The file, when this open created it.
    created: Option<PathBuf>,
}

impl<'a> Meanwhile<'a> {
    /// Nothing done yet, for a file after the ones `unsynced` holds.
    pub(super) fn new(unsynced: &'a mut Unsynced) -> Meanwhile<'a> {
        Meanwhile {
            unsynced,
            settled: None,
            open: None,
            opened: None,
        }
    }

    /// This file's temporary file, to open while its request is in flight,
    /// and its length (`None`: it does not exist).
    pub(super) fn will_open(&mut self, temp: PathBuf, found: Option<u64>) {
        self.open = Some((temp, found));
    }

    /// Settles the previous file now if no request was in flight, and
    /// returns how settling it went, or the checkpoint that failed while
    /// this file was awaited ([`Meanwhile::alongside`]).
    pub(super) async fn end(mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        self.settle(job, observer).await;
        self.settled.take().unwrap_or(Ok(()))
    }

    /// While a request is in flight: settles the previous file (once) and
    /// opens this file's temporary file.
    pub(super) async fn run(&mut self, job: &mut Job, observer: &mut dyn Observer) {
        self.settle(job, observer).await;
        if let Some((temp, found)) = self.open.take() {
            let (writer, created) = match found {
                Some(len) => (TempWriter::open_at(&temp, len), None),
                None => match TempWriter::create(&temp) {
                    Ok(Some(writer)) => (Ok(writer), Some(temp)),
                    Ok(None) => (TempWriter::open_at(&temp, 0), None),
                    Err(e) => (Err(e), None),
                },
            };
            self.opened = Some(Early {
                offset: found.unwrap_or(0),
                writer,
                created,
            });
        }
    }

    /// Settles the previous file before the request goes out when that
    /// means waiting for a sync (its own background writeback, or the batch
    /// before when a new one is due): no wait runs while a request is in
    /// flight, against its headers timeout, and a slow disk holds back the
    /// next request as it always did.
    pub(super) async fn before_sending(&mut self, job: &mut Job, observer: &mut dyn Observer) {
        if self.unsynced.settling_waits() {
            self.settle(job, observer).await;
        }
    }

    /// Settles the previous file, once ([`Unsynced::settle`]).
    pub(super) async fn settle(&mut self, job: &mut Job, observer: &mut dyn Observer) {
        if self.settled.is_none() {
            self.settled = Some(self.unsynced.settle(job, observer).await);
        }
    }

    /// Awaits `future` (this file's answer, or the next chunk of its body)
    /// while doing the earlier files' checkpoint work as it falls due, so
    /// that a finished file is completed about
    /// [`CHECKPOINT_INTERVAL`](super::CHECKPOINT_INTERVAL) after it settled
    /// however long this file takes: a batch due by time starts syncing, a
    /// batch whose sync ended is marked ([`Unsynced::ready`]). No system
    /// call or allocation is added per chunk: each poll looks at a timer
    /// (armed once per batch) or the sync's task; the body loop calls this
    /// only while [`Meanwhile::checkpoint_pending`].
    ///
    /// Fails only when such a sync failed: that failure becomes the settled
    /// one, which [`Engine::transfer_file`](super::Engine::transfer_file)
    /// reports first (it is the failed file's error), and the error
    /// returned here, never reported, stops this file.
    pub(super) async fn alongside<F: Future>(
        &mut self,
        mut future: Pin<&mut F>,
        job: &mut Job,
        observer: &mut dyn Observer,
    ) -> Result<F::Output, BitsError> {
        loop {
            tokio::select! {
                biased;
                work = self.unsynced.ready(), if self.checkpoint_pending() => {
                    if let Err(failed) = self.unsynced.step_ready(work, job, observer) {
                        self.settled = Some(Err(failed));
                        return Err(BitsError::Internal {
                            what: "stopped: an earlier file could not be synced".into(),
                        });
                    }
                }
                output = future.as_mut() => return Ok(output),
            }
        }
    }

    /// Whether [`Meanwhile::alongside`] has checkpoint work to watch: the
    /// previous file settled and a batch waits or syncs. Cheap: the body
    /// loop asks it for each chunk.
    pub(super) fn checkpoint_pending(&self) -> bool {
        matches!(self.settled, Some(Ok(()))) && self.unsynced.pending()
    }

    /// The temporary file opened early, if it was opened at `offset`
    /// (an error opening it is reported only if it is needed).
    pub(super) fn opened(&mut self, offset: u64) -> Option<Result<TempWriter, BitsError>> {
        self.open = None;
        match self.opened.take() {
            Some(early) if early.offset == offset => Some(early.writer),
            other => {
                self.opened = other;
                None
            }
        }
    }
}

impl Drop for Meanwhile<'_> {
    /// A temporary file this created for a response that brought no body
    /// (an HTTP error, a refused redirect) is not left behind.
    fn drop(&mut self) {
        if let Some(Early {
            writer,
            created: Some(path),
            ..
        }) = self.opened.take()
        {
            drop(writer);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::debug!("cannot remove {}: {e}", path.display());
            }
        }
    }
}
