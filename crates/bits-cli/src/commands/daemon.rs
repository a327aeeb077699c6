//! `daemon`: run it in the foreground, start it detached, or stop it.

use std::path::PathBuf;
use std::process::ExitCode;

use bits_core::Hresult;

use super::Ctx;
use crate::error::Failure;
use crate::ipc;

/// `bits daemon [--foreground] [--config FILE]`.
pub(super) fn start(ctx: &Ctx, foreground: bool, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // The detached daemon runs in the store folder: a relative path is
    // this command's.
    let config = config.map(|c| std::path::absolute(&c).unwrap_or(c));
    if foreground {
        Ok(crate::daemon::run(&ctx.dir, config)?)
    } else {
        start_detached(ctx, config)
    }
}

/// `bits daemon --reload`: the running daemon reads its config file
/// again; a refused file exits 2 with its line and column, the daemon
/// keeping the schedule it had. With no daemon, the default config file is
/// checked, so a mistake shows before a daemon refuses to start.
pub(super) fn reload(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let Some(mut client) = ipc::Client::connect(&ctx.dir) else {
        if let Some(path) = bits_scheduler::schedule::default_config_path() {
            bits_scheduler::Schedule::load(&path).map_err(|e| {
                Failure::bad_input(
                    Hresult::E_INVALIDARG,
                    format!("the config file is refused: {e}"),
                    "fix it (docs/config.md)",
                )
            })?;
        }
        ctx.note(format!(
            "no bits daemon is running for store {}; the config file is read when one starts",
            ctx.dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    };
    client.call(&ipc::Request::Reload)?.into_result()?;
    ctx.note("the bits daemon read its config file again");
    Ok(ExitCode::SUCCESS)
}

/// `bits daemon --stop`.
pub(super) fn stop(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let Some(mut client) = ipc::Client::connect(&ctx.dir) else {
        ctx.note(format!(
            "no bits daemon is running for store {}",
            ctx.dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let pid = client.call(&ipc::Request::Ping)?.pid.unwrap_or(0);
    // The daemon may close the socket before its acknowledgement is written:
    // either way, whether it is gone is what the loop below checks.
    let _ = client.call(&ipc::Request::Shutdown);
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ipc::Client::connect(&ctx.dir).is_some() {
        if std::time::Instant::now() > deadline {
            return Err(Failure::runtime(
                Hresult::WINHTTP_TIMEOUT,
                format!("the bits daemon (pid {pid}) did not stop within 30 s"),
                format!("see {}", ipc::path(&ctx.dir, ipc::LOG_FILE).display()),
            )
            .into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctx.note(format!(
        "bits daemon (pid {pid}) stopped; its jobs resume at the next start"
    ));
    Ok(ExitCode::SUCCESS)
}

fn start_detached(ctx: &Ctx, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if let Some(mut c) = ipc::Client::connect(&ctx.dir) {
        let pid = c.call(&ipc::Request::Ping).ok().and_then(|r| r.pid);
        return Err(ipc::busy(&ctx.dir, pid).into());
    }
    let mut client = ipc::ensure_daemon_with(&ctx.dir, ctx.global.verbose, config.as_deref())?;
    let pid = client.call(&ipc::Request::Ping)?.pid.unwrap_or(0);
    ctx.note(format!(
        "bits daemon running (pid {pid}) for store {}; log: {}",
        ctx.dir.display(),
        ipc::path(&ctx.dir, ipc::LOG_FILE).display()
    ));
    Ok(ExitCode::SUCCESS)
}
