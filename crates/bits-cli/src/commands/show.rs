//! Reading jobs: `info`, `list`, `get-security-flags`.

use std::process::ExitCode;

use super::Ctx;
use crate::view;

pub(super) fn info(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    ctx.print_job(&job);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn list(ctx: &Ctx, all: bool) -> anyhow::Result<ExitCode> {
    let jobs = ctx.open()?.list(all)?;
    if ctx.global.json {
        let published = crate::daemon::Published::read(&ctx.dir);
        let array: Vec<_> = jobs
            .iter()
            .map(|j| view::job_json(j, &crate::daemon::NetworkView::of(j, published.as_ref())))
            .collect();
        out!("{}", serde_json::Value::Array(array));
    } else {
        out_raw!("{}", view::list_text(&jobs));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn security_flags(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    out!("{}", job.security_flags);
    Ok(ExitCode::SUCCESS)
}
