//! Changes to a stored job (`set-*`, `replace-remote-prefix`, `suspend`,
//! `cancel`), through the daemon when one carries the store, and `prune`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bits_core::{Hresult, Priority, SecurityFlags};

use super::Ctx;
use crate::error::Failure;
use crate::ipc;
use crate::ops::JobOp;

pub(super) fn simple_op(ctx: &Ctx, job: &str, op: JobOp) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    ipc::apply(&store, job.id, op)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn set_security_flags(ctx: &Ctx, job: &str, flags: &str) -> anyhow::Result<ExitCode> {
    let flags = SecurityFlags::parse(flags).map_err(Failure::from)?;
    simple_op(ctx, job, JobOp::SetSecurityFlags { flags: flags.bits() })
}

/// A `set-max-rate` / `--max-rate` value: bytes per second, or `None` for
/// `off`. 0 is refused (the job would never move: suspend it instead).
pub(super) fn parse_max_rate(text: &str) -> Result<Option<u64>, Failure> {
    let hint = "write 512K, 10M, 1.5G (bytes per second, 1024-based) or off";
    match bits_scheduler::Limit::parse(text) {
        Ok(bits_scheduler::Limit::Unlimited) => Ok(None),
        Ok(bits_scheduler::Limit::Rate(n)) => Ok(Some(n)),
        Ok(bits_scheduler::Limit::Blocked) => Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            "a max rate of 0 would never move the job",
            "suspend the job instead, or give a rate",
        )),
        Err(e) => Err(Failure::bad_input(Hresult::E_INVALIDARG, e.to_string(), hint)),
    }
}

pub(super) fn set_priority(ctx: &Ctx, job: &str, priority: &str) -> anyhow::Result<ExitCode> {
    let priority = Priority::parse(priority).map_err(Failure::from)?;
    simple_op(ctx, job, JobOp::SetPriority { priority })
}

pub(super) fn replace_remote_prefix(
    ctx: &Ctx,
    job: &str,
    old: String,
    new: String,
) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    let code = ipc::apply(
        &store,
        job.id,
        JobOp::ReplaceRemotePrefix {
            old: old.clone(),
            new,
        },
    )?;
    if code == Hresult::S_FALSE {
        out!(
            "no file of job {} starts with {old:?}; nothing changed (S_FALSE)",
            job.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn prune(ctx: &Ctx, older_than: u32) -> anyhow::Result<ExitCode> {
    let age = Duration::from_secs(u64::from(older_than) * 86_400);
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff = if older_than == 0 {
        SystemTime::now() + Duration::from_secs(1)
    } else {
        cutoff
    };
    let n = ctx.open()?.prune(cutoff)?;
    ctx.note(format!("pruned {n} final job(s) older than {older_than} day(s)"));
    Ok(ExitCode::SUCCESS)
}
