//! `create` and `add-file`, and the checks of names and local paths that
//! `transfer` shares.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bits_core::{Hresult, Job, JobType};

use super::Ctx;
use crate::error::Failure;
use crate::ipc;
use crate::ops::JobOp;
use crate::store;

pub(super) fn create(ctx: &Ctx, upload: bool, upload_reply: bool, name: &str) -> anyhow::Result<ExitCode> {
    let backend = ctx.backend()?;
    check_name(name)?;
    let job_type = match (upload, upload_reply) {
        (_, true) => JobType::UploadReply,
        (true, false) => JobType::Upload,
        (false, false) => JobType::Download,
    };
    let job = Job::new(name, job_type, backend.name());
    let store = ctx.open()?;
    store.insert(&job)?;
    if ctx.global.json {
        out!("{}", ctx.job_json(&job));
    } else {
        out!("{}", job.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Display names: 1 to 256 characters (BITS' limit), no control characters.
pub(super) fn check_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("display name {name:?} must be 1 to 256 characters without control characters"),
            "nothing was changed; choose another name",
        ));
    }
    Ok(())
}

/// Checks a file to add: the URL parses as http/https, then
/// [`check_local`].
pub(super) fn check_file(
    url: &str,
    local: &Path,
    writable: &mut HashSet<PathBuf>,
) -> Result<PathBuf, Failure> {
    bits_core::job::parse_remote_url(url).map_err(Failure::from)?;
    check_local(local, writable)
}

/// Checks the LOCAL of a file to add: it becomes absolute, names a file
/// (not a folder), and its folder exists and takes new files. Returns it
/// made absolute. `writable` holds the folders already found to take new
/// files: a command adding many files to one folder probes it once (a
/// probe creates and deletes a file, which is dearer than the rest of
/// adding one).
pub(super) fn check_local(local: &Path, writable: &mut HashSet<PathBuf>) -> Result<PathBuf, Failure> {
    let local = store::absolute(local)?;
    if local.file_name().is_none() || local.is_dir() {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("local name {} is a folder, not a file", local.display()),
            "nothing was changed; give the path of the file to write",
        ));
    }
    let folder = local.parent().unwrap_or(Path::new("/"));
    if writable.contains(folder) {
        return Ok(local);
    }
    if !folder.is_dir() {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!(
                "the folder {} of local name {} does not exist",
                folder.display(),
                local.display()
            ),
            "nothing was changed; create the folder first",
        ));
    }
    // Really try: permissions, read-only mounts and ACLs all show here.
    let probe = folder.join(format!(".bits-probe-{}", uuid::Uuid::new_v4().simple()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            writable.insert(folder.to_path_buf());
            Ok(local)
        }
        Err(e) => {
            let code =
                Hresult::from_win32(bits_core::error::os_error_to_win32(e.raw_os_error().unwrap_or(0)));
            Err(Failure::bad_input(
                if code.is_success() {
                    Hresult::E_INVALIDARG
                } else {
                    code
                },
                format!(
                    "cannot write in the folder {} of local name {}: {e}",
                    folder.display(),
                    local.display()
                ),
                "nothing was changed; choose a folder you can write to",
            ))
        }
    }
}

pub(super) fn add_file(ctx: &Ctx, job: &str, url: &str, local: &Path) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    let local = check_file(url, local, &mut HashSet::new())?;
    ipc::apply(
        &store,
        job.id,
        JobOp::AddFile {
            url: url.to_string(),
            local,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `set-reply-file-name JOB PATH`: a relative PATH is taken from the
/// current directory.
pub(super) fn set_reply_file_name(ctx: &Ctx, job: &str, path: &Path) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(path).map_err(|e| {
        Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("{}: {e}", path.display()),
            "nothing was changed; give the reply's path",
        )
    })?;
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    ipc::apply(&store, job.id, JobOp::SetReplyFileName { path })?;
    Ok(ExitCode::SUCCESS)
}

/// `get-reply-file-name JOB`: the reply's path (nothing for a job that is
/// not upload-reply).
pub(super) fn get_reply_file_name(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    if let Some(path) = job.reply_file_name() {
        out!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
