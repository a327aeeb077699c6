//! Running jobs: `resume`, `complete`, `wait`, `monitor` and the
//! one-shot `transfer`, which start the daemon when needed and follow
//! jobs until they settle.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use bits_core::{BitsError, Hresult, Job, JobState, JobType, Priority, SecurityFlags};

use super::create::{check_local, check_name};
use super::Ctx;
use crate::cli::TransferArgs;
use crate::error::Failure;
use crate::ipc;
use crate::ops::JobOp;
use crate::store::Store;
use crate::watch;

pub(super) fn resume(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    // Refuse what resume refuses (no files, final state) before starting a daemon.
    job.clone().resume().map_err(Failure::from)?;
    ipc::apply_via_daemon(&store, job.id, JobOp::Resume, ctx.global.verbose)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn complete(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    let code = ipc::apply(&store, job.id, JobOp::Complete)?;
    report_complete(ctx, &store, job.id, code);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn report_complete(ctx: &Ctx, store: &Store, id: uuid::Uuid, code: Hresult) {
    if code == Hresult::BG_S_PARTIAL_COMPLETE {
        let kept = store
            .get(id)
            .ok()
            .flatten()
            .map(|j| j.files.iter().filter(|f| f.completed).count())
            .unwrap_or(0);
        err!(
            "bits: {code} BG_S_PARTIAL_COMPLETE: job {id} completed with only its {kept} finished file(s); the others were dropped"
        );
    } else if code == Hresult::BG_S_UNABLE_TO_DELETE_FILES {
        err!("bits: {code} BG_S_UNABLE_TO_DELETE_FILES: job {id} completed, but some temporary files could not be removed");
    } else if ctx.global.verbose > 0 {
        err!("bits: job {id} completed");
    }
}

pub(super) fn wait(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    if job.state().is_final() || job.state() == JobState::Suspended {
        return Err(Failure::from_bits(&BitsError::InvalidState {
            operation: "wait",
            state: job.state().as_str(),
        })
        .with_hint(if job.state() == JobState::Suspended {
            "nothing to wait for; `bits resume JOB` first"
        } else {
            "nothing to wait for; `bits info JOB` shows the job"
        })
        .into());
    }
    if job.state().is_active() {
        ipc::ensure_daemon(store.dir(), ctx.global.verbose)?;
    }
    let bars = watch::show_bars(ctx.global.quiet);
    let ended = settled(watch::follow(&store, &[job.id], false, bars, ctx.global.verbose)?);
    let job = ended.into_iter().next().unwrap_or(job);
    settle_exit(&store, &job)
}

/// Exit 0 for TRANSFERRED (or already ACKNOWLEDGED), 1 with the error line
/// otherwise.
pub(super) fn settle_exit(store: &Store, job: &Job) -> anyhow::Result<ExitCode> {
    match job.state() {
        JobState::Transferred | JobState::Acknowledged => Ok(ExitCode::SUCCESS),
        _ => Err(job_failure(store, job).into()),
    }
}

/// The HRESULTs of a server certificate refused under the flags
/// (`docs/spec/policy.md`), which `bits diagnose` explains.
fn is_server_cert_failure(code: Hresult) -> bool {
    [
        Hresult::WINHTTP_SECURE_CERT_DATE_INVALID,
        Hresult::WINHTTP_SECURE_CERT_CN_INVALID,
        Hresult::WINHTTP_SECURE_INVALID_CA,
        Hresult::WINHTTP_SECURE_CERT_WRONG_USAGE,
        Hresult::WINHTTP_SECURE_CERT_REVOKED,
        Hresult::WINHTTP_SECURE_CERT_REV_FAILED,
    ]
    .contains(&code)
}

/// The one line for a job that did not transfer. `job` may be a head
/// without files (as watchers read it); the store gives the failed file's
/// URL when the line needs it.
pub(super) fn job_failure(store: &Store, job: &Job) -> Failure {
    let id = job.id;
    match (job.state(), &job.error) {
        (JobState::Error, Some(e)) => {
            let mut hint = format!(
                "`bits info {id}` shows it; fix the cause and `bits resume {id}`, or `bits cancel {id}`"
            );
            // A server certificate the flags refused: diagnose says why, and
            // the least flags that would accept it.
            let url = match (is_server_cert_failure(e.code), e.file_index) {
                (true, Some(i)) => match job.files.get(i) {
                    Some(f) => Some(f.remote_name.clone()),
                    None => store
                        .get(id)
                        .ok()
                        .flatten()
                        .and_then(|j| j.files.get(i).map(|f| f.remote_name.clone())),
                },
                _ => None,
            };
            if let Some(url) = url.filter(|u| u.starts_with("https://")) {
                hint = format!(
                    "`bits diagnose {url}` shows the server's chain, its faults and the least flags that accept it; {hint}"
                );
            }
            Failure::runtime(
                e.code,
                format!("job {id} is in ERROR ({}): {}", e.context.as_str(), e.message),
                hint,
            )
        }
        (state, _) => Failure::runtime(
            Hresult::E_FAIL,
            format!(
                "job {id} stopped in state {} before it transferred",
                state.as_str()
            ),
            format!("`bits info {id}` shows it"),
        ),
    }
}

pub(super) fn monitor(ctx: &Ctx, job: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let ids: Vec<uuid::Uuid> = match job {
        Some(j) => vec![store.resolve(j)?.id],
        None => store.active()?.iter().map(|j| j.id).collect(),
    };
    if ids.is_empty() {
        ctx.note("no active jobs");
        return Ok(ExitCode::SUCCESS);
    }
    ipc::ensure_daemon(store.dir(), ctx.global.verbose)?;
    let bars = watch::show_bars(ctx.global.quiet);
    let ended = settled(watch::follow(&store, &ids, true, bars, ctx.global.verbose)?);
    if !bars {
        for j in &ended {
            ctx.note(format!(
                "{} {} {}/{} bytes {}",
                j.id,
                j.state().as_str(),
                j.bytes_transferred(),
                j.bytes_total()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                j.display_name
            ));
        }
    }
    if job.is_some() {
        if let Some(j) = ended.first() {
            if j.state() == JobState::Error {
                return Err(job_failure(&store, j).into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn transfer(ctx: &Ctx, args: TransferArgs) -> anyhow::Result<ExitCode> {
    if !args.pairs.len().is_multiple_of(2) {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!(
                "transfer takes URL LOCAL pairs; {} is left without a LOCAL",
                args.pairs.last().map(String::as_str).unwrap_or("")
            ),
            "nothing was changed; give a LOCAL path after each URL",
        )
        .into());
    }
    if args.upload && args.pairs.len() != 2 {
        return Err(Failure::bad_input(
            Hresult::BG_E_TOO_MANY_FILES,
            "transfer --upload sends one file: give FILE URL",
            "nothing was changed; one upload per transfer",
        )
        .into());
    }
    let backend = ctx.backend()?;
    let name = args.name.unwrap_or_else(|| "transfer".to_string());
    check_name(&name)?;
    let job_type = if args.upload {
        JobType::Upload
    } else {
        JobType::Download
    };
    let mut job = Job::new(name, job_type, backend.name());
    if let Some(text) = &args.security_flags {
        let flags = SecurityFlags::parse(text).map_err(Failure::from)?;
        job.set_security_flags(flags, |p| backend.check_policy(p))
            .map_err(Failure::from)?;
    }
    if let Some(s) = args.retry_delay {
        job.set_min_retry_delay(u64::from(s)).map_err(Failure::from)?;
    }
    if let Some(s) = args.no_progress_timeout {
        job.set_no_progress_timeout(u64::from(s)).map_err(Failure::from)?;
    }
    if let Some(p) = &args.priority {
        job.set_priority(Priority::parse(p).map_err(Failure::from)?)
            .map_err(Failure::from)?;
    }
    if let Some(rate) = &args.max_rate {
        job.set_max_rate(super::edit::parse_max_rate(rate)?)
            .map_err(Failure::from)?;
    }
    let proxy = args
        .proxy
        .as_deref()
        .map(|p| super::http_options::transfer_proxy(p, args.noproxy.as_deref()))
        .transpose()?;
    super::http_options::configure_new_job(
        &mut job,
        backend,
        &args.headers,
        args.client_certificate.as_deref(),
        &args.secrets,
        args.pins.as_deref(),
        proxy,
    )?;
    let mut writable = HashSet::new();
    if args.upload {
        // FILE URL, or URL FILE as bitsadmin has it: the URL is the one
        // with a scheme.
        let is_url = |t: &str| {
            let t = t.to_ascii_lowercase();
            t.starts_with("http://") || t.starts_with("https://")
        };
        let (url, file) = if is_url(&args.pairs[0]) && !is_url(&args.pairs[1]) {
            (&args.pairs[0], &args.pairs[1])
        } else {
            (&args.pairs[1], &args.pairs[0])
        };
        let file = std::path::absolute(file).map_err(|e| {
            Failure::bad_input(
                Hresult::E_INVALIDARG,
                format!("{file}: {e}"),
                "give the file to send",
            )
        })?;
        job.add_file(url, &file).map_err(Failure::from)?;
    }
    for pair in args.pairs.chunks(2).filter(|_| !args.upload) {
        // Only LOCAL is checked here: `add_file` checks the URL, so each
        // URL is parsed once.
        let local = check_local(Path::new(&pair[1]), &mut writable)?;
        job.add_file(&pair[0], &local).map_err(Failure::from)?;
    }
    // Stored QUEUED: no daemon carries a new job, and the daemon needs
    // only to be told to look (reading and rewriting a job of many files
    // for a `resume` costs more than the rest of the start).
    job.resume().map_err(Failure::from)?;
    let store = ctx.open()?;
    store.insert(&job)?;
    let id = job.id;
    let verbose = ctx.global.verbose;
    watch::catch_interrupt();
    ipc::transfer_via_daemon(&store, id, verbose)?;
    let bars = watch::show_bars(ctx.global.quiet);
    let ended = match watch::follow(&store, &[id], ctx.global.json, bars, verbose)? {
        watch::Followed::Settled(jobs) => jobs,
        watch::Followed::Interrupted => return interrupted(ctx, &store, id),
    };
    let mut job = ended.into_iter().next().unwrap_or(job);
    let mut result = Ok(ExitCode::SUCCESS);
    // The daemon completes the job itself (`ipc::Request::Transfer`); the
    // `complete` sent here gets that completion's result, or does the work
    // when the daemon could not (an older one, or one started again).
    if matches!(job.state(), JobState::Transferred | JobState::Acknowledged) {
        match ipc::apply(&store, id, JobOp::Complete) {
            Ok(code) => report_complete(ctx, &store, id, code),
            // Completed by a daemon that has since stopped, and with it
            // the result it kept.
            Err(_) if job.state() == JobState::Acknowledged => {}
            Err(f) => result = Err(f),
        }
        // The job as complete left it, for --json (reading a job of many
        // files is not free).
        if ctx.global.json {
            if let Some(j) = store.get(id)? {
                job = j;
            }
        }
    } else {
        result = Err(job_failure(&store, &job));
    }
    if ctx.global.json {
        out!("{}", ctx.job_json(&job));
        let _ = std::io::stdout().flush();
    }
    Ok(result?)
}

/// Ctrl-C during `transfer`: the job is suspended, with every byte so far
/// kept, and the line says how to finish or drop it. Exit 130, as a shell
/// reports an interrupted command.
pub(super) fn interrupted(ctx: &Ctx, store: &Store, id: uuid::Uuid) -> anyhow::Result<ExitCode> {
    let suspended = ipc::apply(store, id, JobOp::Suspend);
    let job = store.get(id)?;
    if ctx.global.json {
        if let Some(j) = &job {
            out!("{}", ctx.job_json(j));
        }
    }
    let kept = job.map(|j| j.bytes_transferred()).unwrap_or(0);
    let what = match suspended {
        Ok(_) => format!("job {id} is suspended with {kept} bytes kept"),
        Err(f) => format!("job {id} could not be suspended ({f})"),
    };
    err!(
        "bits: 0x800704C7 ERROR_CANCELLED: transfer interrupted; {what}; `bits resume {id}` and `bits wait {id}` then `bits complete {id}` finish it, `bits cancel {id}` drops it"
    );
    Ok(ExitCode::from(130))
}

/// The jobs of a [`watch::follow`] that cannot be interrupted.
pub(super) fn settled(followed: watch::Followed) -> Vec<Job> {
    match followed {
        watch::Followed::Settled(jobs) => jobs,
        watch::Followed::Interrupted => Vec::new(),
    }
}
