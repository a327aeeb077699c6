//! [`Persist`], the observer that saves a running job through a
//! [`StateSink`]: what a restart needs at once, progress throttled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bits_core::{Job, JobError, JobState, Observer};

use crate::seams::StateSink;

/// Progress is saved this often.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// A file larger than this (or of unknown size) has its validator saved
/// as soon as its response arrives: after a crash, its bytes on disk are
/// resumed instead of downloaded again (at most this much is lost).
pub const SAVE_FILE_AT_ONCE: u64 = 1 << 20;

/// Saves a running job. At once: a change of its state, error or number
/// of files, files newly completed (the engine marks them a batch at a
/// time, once synced, so a user sees a finished file as completed whatever
/// the next file does), a remote name changed by a reported redirect, and
/// the validator of a file over [`SAVE_FILE_AT_ONCE`] (so a crash never
/// costs a large file's bytes on disk). Everything else (byte progress, a
/// small file's headers) at most every [`SAVE_INTERVAL`]: a job of many
/// small files is not rewritten once per file, and a large file costs a
/// save a second. Whatever a throttled save leaves out, the engine
/// recovers from the temporary files after a crash (a whole file is asked
/// from its full length and the `416` says so; a small file without its
/// validator restarts, at most [`SAVE_FILE_AT_ONCE`] again); the engine
/// marks a file completed only once its bytes are synced.
///
/// A save that changed the job's state is followed by
/// [`StateSink::changed`].
pub struct Persist {
    sink: Arc<dyn StateSink>,
    pub(crate) saved_at: Instant,
    /// What, in the last save, must be saved at once when it changes.
    saved_key: SaveKey,
    /// The caller completes the job once TRANSFERRED
    /// ([`crate::Scheduler::hold`]): that save tells no watcher; the
    /// completion's save does.
    pub(crate) hold_transferred: bool,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("saved_at", &self.saved_at)
            .field("saved_key", &self.saved_key)
            .field("hold_transferred", &self.hold_transferred)
            .finish_non_exhaustive()
    }
}

/// The parts of a job saved at once when they change.
#[derive(Debug, PartialEq)]
struct SaveKey {
    state: JobState,
    error: Option<JobError>,
    remotes: Vec<String>,
    /// Each file's upload session id: a new one is saved at once, so a
    /// restart continues that session.
    sessions: Vec<Option<String>>,
    completed: usize,
}

impl SaveKey {
    fn of(job: &Job) -> SaveKey {
        SaveKey {
            state: job.state(),
            error: job.error.clone(),
            remotes: job.files.iter().map(|f| f.remote_name.clone()).collect(),
            sessions: job
                .files
                .iter()
                .map(|f| f.upload.as_ref().map(|u| u.id.clone()))
                .collect(),
            completed: job.files_transferred(),
        }
    }

    /// Whether `job` differs from this key in what the engine reports
    /// through `on_change` (remote names come through `on_file_change`:
    /// comparing them all on every call would cost a job of n files n²).
    fn differs(&self, job: &Job) -> bool {
        self.state != job.state() || self.error != job.error || self.remotes.len() != job.files.len()
    }
}

/// Why [`Persist`] saves: which of the sink's saves it calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Why {
    /// Something a restart needs at once.
    Change,
    /// The throttle, or an idle moment.
    Progress,
}

impl Persist {
    /// An observer for `job` (as last saved) that saves through `sink`.
    pub fn new(sink: Arc<dyn StateSink>, job: &Job) -> Persist {
        Persist {
            sink,
            saved_at: Instant::now(),
            saved_key: SaveKey::of(job),
            hold_transferred: false,
        }
    }

    fn save(&mut self, job: &Job, why: Why) {
        let saved = match why {
            Why::Change => self.sink.save(job),
            Why::Progress => self.sink.save_progress(job),
        };
        if let Err(e) = saved {
            tracing::error!(job = %job.id, "cannot save progress: {e}");
        }
        self.saved_at = Instant::now();
        if self.saved_key.state != job.state()
            && !(self.hold_transferred && job.state() == JobState::Transferred)
        {
            self.sink.changed(job.id);
        }
        self.saved_key = SaveKey::of(job);
    }

    /// The throttle: [`SAVE_INTERVAL`] passed since the last save.
    fn due(&self) -> bool {
        self.saved_at.elapsed() >= SAVE_INTERVAL
    }
}

impl Observer for Persist {
    fn on_progress(&mut self, job: &Job) {
        if self.due() {
            self.save(job, Why::Progress);
        }
    }

    fn on_change(&mut self, job: &Job) {
        // Files completed are counted here, not in `SaveKey::differs`: the
        // engine marks them through `on_change`, and counting them on every
        // `on_file_change` would cost a job of n files n².
        if self.saved_key.differs(job) || self.saved_key.completed != job.files_transferred() {
            self.save(job, Why::Change);
        } else if self.due() {
            self.save(job, Why::Progress);
        }
    }

    /// The engine waits for a sync: saving now leaves less for the save
    /// after it, and the rows are written while the disk works rather
    /// than after.
    fn on_idle(&mut self, job: &Job) {
        self.save(job, Why::Progress);
    }

    fn on_file_change(&mut self, job: &Job, i: usize) {
        let Some(file) = job.files.get(i) else {
            return self.on_change(job);
        };
        let moved = self.saved_key.remotes.get(i) != Some(&file.remote_name)
            || self.saved_key.sessions.get(i).cloned().flatten()
                != file.upload.as_ref().map(|u| u.id.clone());
        let large = file.validator.is_some() && file.bytes_total.is_none_or(|t| t > SAVE_FILE_AT_ONCE);
        if moved || large || self.saved_key.differs(job) {
            self.save(job, Why::Change);
        } else if self.due() {
            self.save(job, Why::Progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bits_core::{BitsError, Event};

    use super::*;
    use crate::memory::{Entry, Memory};

    fn setup(files: usize) -> (tempfile::TempDir, Memory, Job) {
        let tmp = tempfile::tempdir().unwrap();
        let memory = Memory::default();
        let mut job = Job::new("t", bits_core::JobType::Download, "openssl");
        for n in 0..files {
            job.add_file(
                &format!("http://127.0.0.1/f{n}"),
                &tmp.path().join(format!("f{n}")),
            )
            .unwrap();
        }
        job.resume().unwrap();
        memory.put(&job);
        (tmp, memory, job)
    }

    fn persist(memory: &Memory, job: &Job) -> Persist {
        Persist::new(Arc::new(memory.clone()), job)
    }

    /// A job of `files` files in TRANSFERRING, saved, and its `Persist`.
    fn transferring(files: usize) -> (tempfile::TempDir, Memory, Job, Persist) {
        let (tmp, memory, mut job) = setup(files);
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        let mut p = persist(&memory, &job);
        p.on_change(&job);
        (tmp, memory, job, p)
    }

    #[test]
    fn state_error_and_remote_name_changes_are_saved_at_once() {
        let (_tmp, memory, mut job) = setup(2);
        let mut p = persist(&memory, &job);
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        p.on_change(&job);
        assert_eq!(memory.get(job.id).state(), JobState::Transferring);
        job.files[1].remote_name = "http://127.0.0.1/moved".into();
        p.on_file_change(&job, 1);
        assert_eq!(memory.get(job.id).files[1].remote_name, "http://127.0.0.1/moved");
        job.fail(&BitsError::UnknownCa, Some(0), SystemTime::now());
        p.on_change(&job);
        assert_eq!(memory.get(job.id), job);
        assert!(
            memory
                .log(job.id)
                .iter()
                .all(|e| !matches!(e, Entry::Progress(_))),
            "none of them is a progress save: {:?}",
            memory.log(job.id)
        );
    }

    #[test]
    fn a_new_upload_session_is_saved_at_once() {
        let (_tmp, memory, mut job, mut p) = transferring(1);
        job.files[0].upload = Some(bits_core::UploadSession {
            id: "{S1}".into(),
            acked: 0,
            source_len: 10,
            source_modified: None,
            reply_url: None,
            host_id: None,
            host_id_fallback: None,
        });
        p.on_file_change(&job, 0);
        assert_eq!(memory.get(job.id).files[0].upload.as_ref().unwrap().id, "{S1}");
        // Its acknowledged bytes wait for the throttle like any progress.
        job.files[0].upload.as_mut().unwrap().acked = 5;
        p.on_file_change(&job, 0);
        assert_eq!(memory.get(job.id).files[0].upload.as_ref().unwrap().acked, 0);
    }

    #[test]
    fn file_details_and_small_progress_wait_for_the_throttle() {
        let (_tmp, memory, mut job, mut p) = transferring(2);
        // A small file's headers and its bytes: not saved at once.
        job.files[0].validator = Some("\"v\"".into());
        job.files[0].bytes_total = Some(10);
        p.on_file_change(&job, 0);
        job.files[0].bytes_transferred = 10;
        p.on_progress(&job);
        p.on_change(&job);
        // Nor many MiB of progress.
        job.files[1].bytes_transferred = 64 << 20;
        p.on_progress(&job);
        let saved = memory.get(job.id);
        assert_eq!(saved.files[0].validator, None);
        assert_eq!(saved.bytes_transferred(), 0);
        // A second passed: everything is saved, as progress.
        p.saved_at -= SAVE_INTERVAL;
        p.on_progress(&job);
        assert_eq!(memory.get(job.id), job);
        assert_eq!(
            memory.log(job.id).last(),
            Some(&Entry::Progress(JobState::Transferring))
        );
        // And the final state change flushes everything.
        job.files[1].completed = true;
        job.apply(Event::AllFilesDone);
        p.on_change(&job);
        assert_eq!(memory.get(job.id), job);
    }

    #[test]
    fn files_completed_are_saved_at_once_whatever_the_throttle() {
        let (_tmp, memory, mut job, mut p) = transferring(3);
        job.files[1].bytes_transferred = 5;
        p.on_progress(&job);
        assert_eq!(memory.get(job.id).bytes_transferred(), 0);
        // The engine marks a synced batch and says so through on_change.
        job.files[0].completed = true;
        p.on_change(&job);
        let saved = memory.get(job.id);
        assert!(saved.files[0].completed);
        assert_eq!(saved, job, "what the throttle held goes with it");
        // Nothing new completed: the throttle again.
        job.files[1].bytes_transferred = 6;
        p.on_change(&job);
        assert_eq!(memory.get(job.id).files[1].bytes_transferred, 5);
        assert_eq!(memory.changes(job.id), 0, "a completed file wakes no watcher");
    }

    #[test]
    fn an_idle_moment_saves_what_the_throttle_held() {
        let (_tmp, memory, mut job, mut p) = transferring(2);
        job.files[0].bytes_total = Some(10);
        job.files[0].bytes_transferred = 10;
        p.on_progress(&job);
        assert_eq!(memory.get(job.id).bytes_transferred(), 0);
        p.on_idle(&job);
        assert_eq!(memory.get(job.id), job);
    }

    #[test]
    fn saves_that_change_the_state_wake_subscribers() {
        let (_tmp, memory, mut job) = setup(1);
        let mut p = persist(&memory, &job);
        job.files[0].bytes_transferred = 1;
        p.saved_at -= SAVE_INTERVAL;
        p.on_progress(&job);
        assert_eq!(memory.changes(job.id), 0, "progress wakes nobody");
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        p.on_change(&job);
        assert_eq!(memory.changes(job.id), 1);
    }

    #[test]
    fn a_held_job_is_saved_transferred_without_waking_anyone() {
        let (_tmp, memory, mut job) = setup(1);
        let mut p = persist(&memory, &job);
        p.hold_transferred = true;
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        p.on_change(&job);
        assert_eq!(memory.changes(job.id), 1);
        job.apply(Event::AllFilesDone);
        p.on_change(&job);
        assert_eq!(memory.get(job.id).state(), JobState::Transferred);
        assert_eq!(memory.changes(job.id), 1, "the completion's save wakes them");
    }

    #[test]
    fn a_large_files_validator_is_saved_at_once() {
        let (_tmp, memory, mut job, mut p) = transferring(2);
        for total in [Some(SAVE_FILE_AT_ONCE + 1), None] {
            job.files[1].validator = Some(format!("\"{total:?}\""));
            job.files[1].bytes_total = total;
            p.on_file_change(&job, 1);
            assert_eq!(memory.get(job.id), job, "size {total:?}");
        }
    }
}
