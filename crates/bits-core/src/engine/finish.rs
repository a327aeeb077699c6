//! Finishing a job: `complete` moves its finished files to their LOCAL
//! names, `cancel` deletes its temporary files.

use crate::error::{BitsError, Hresult};
use crate::files;
use crate::job::{FileInfo, Job, JobType};
use crate::state::{check_operation, Event, Operation};

/// `complete`: for an upload, only the state (ACKNOWLEDGED: the server
/// committed the file at Close-Session). For a download, moves every
/// finished temporary file to its LOCAL name
/// atomically (rename, then fsync of the directories; the files themselves
/// were synced by the checkpoint that marked them completed) and puts the
/// job in ACKNOWLEDGED. A download in ERROR with some files finished keeps
/// those and drops the rest (`BG_S_PARTIAL_COMPLETE`).
///
/// If a rename fails, the job keeps its state (files already renamed stay
/// at LOCAL; calling `complete` again skips them: a missing temporary file
/// whose LOCAL exists) and the `LOCAL_FILE` error is returned. Unfinished
/// temporary files are deleted only once every rename succeeded. Stop any
/// [`Engine::run`](super::Engine::run) of the job first.
pub fn complete(job: &mut Job) -> Result<Hresult, BitsError> {
    check_operation(job.state(), job.job_type, Operation::Complete)?;
    if job.job_type != JobType::Download {
        // The file is on the server, committed by Close-Session; an
        // upload-reply job's reply moves to its reply file name.
        if let (Some(temp), Some(reply)) = (job.reply_temp_name(), job.reply_file_name()) {
            files::commit_all(&[(temp.as_path(), reply.as_path())])?;
        }
        job.transition(Event::Complete);
        return Ok(Hresult::S_OK);
    }
    let pairs: Vec<(&std::path::Path, &std::path::Path)> = job
        .files
        .iter()
        .filter(|f| f.completed)
        .map(|f| (f.temp_name.as_path(), f.local_name.as_path()))
        .collect();
    files::commit_all(&pairs)?;
    let dropped = job.files.iter().filter(|f| !f.completed).count();
    let undeleted = remove_temps(job.files.iter().filter(|f| !f.completed));
    job.transition(Event::Complete);
    Ok(if dropped > 0 {
        Hresult::BG_S_PARTIAL_COMPLETE
    } else if undeleted > 0 {
        Hresult::BG_S_UNABLE_TO_DELETE_FILES
    } else {
        Hresult::S_OK
    })
}

/// `cancel`: deletes every temporary file and puts the job in CANCELLED.
/// Returns `BG_S_UNABLE_TO_DELETE_FILES` when some could not be removed
/// (missing ones are fine). LOCAL files are never touched.
pub fn cancel(job: &mut Job) -> Result<Hresult, BitsError> {
    check_operation(job.state(), job.job_type, Operation::Cancel)?;
    let mut undeleted = remove_temps(&job.files);
    if let Some(temp) = job.reply_temp_name() {
        if let Err(e) = files::remove(&temp) {
            tracing::warn!("cannot delete {}: {e}", temp.display());
            undeleted += 1;
        }
    }
    job.transition(Event::Cancel);
    Ok(if undeleted > 0 {
        Hresult::BG_S_UNABLE_TO_DELETE_FILES
    } else {
        Hresult::S_OK
    })
}

/// Deletes the temporary files of `list` (a missing one is fine) and
/// returns how many could not be.
fn remove_temps<'a>(list: impl IntoIterator<Item = &'a FileInfo>) -> usize {
    let mut undeleted = 0;
    for file in list {
        if let Err(e) = files::remove(&file.temp_name) {
            tracing::warn!("cannot delete {}: {e}", file.temp_name.display());
            undeleted += 1;
        }
    }
    undeleted
}
