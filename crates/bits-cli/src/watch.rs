//! Following jobs until they settle: `wait`, `monitor` and `transfer`.
//!
//! It reads each job's state column every 50 ms, and at once when the
//! daemon says a job's state changed (a `subscribe` connection, see
//! [`ipc::Subscription`]), so the end of a job is noticed without waiting
//! for the next poll; it reads the whole job (the daemon saves progress
//! every second) every 200 ms when drawing, or once it settled; it
//! draws one indicatif bar per job on a terminal, and starts the daemon
//! again if it goes away while a job still needs it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bits_core::{Job, JobState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::signal::unix::SignalKind;
use uuid::Uuid;

use crate::error::Failure;
use crate::ipc;
use crate::store::Store;

/// How often the jobs' states are read.
const POLL: Duration = Duration::from_millis(50);
/// How often whole jobs are read to draw their bars.
const DRAW: Duration = Duration::from_millis(200);
/// How often the daemon is checked.
const CHECK_DAEMON: Duration = Duration::from_secs(1);

/// Set by Ctrl-C once [`catch_interrupt`] ran.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on Ctrl-C (SIGINT) makes [`follow`] return early with
/// [`Followed::Interrupted`] instead of killing the process. Returns once
/// the handler is installed (at most a second).
pub fn catch_interrupt() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("sigint".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_io().build() else {
            return;
        };
        // `signal` installs the handler when called, not when first polled.
        let installed = rt.block_on(async { tokio::signal::unix::signal(SignalKind::interrupt()) });
        let _ = ready_tx.send(());
        let Ok(mut sigint) = installed else { return };
        rt.block_on(async {
            if sigint.recv().await.is_some() {
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        });
    });
    if spawned.is_ok() {
        let _ = ready_rx.recv_timeout(Duration::from_secs(1));
    }
}

/// How [`follow`] ended.
#[derive(Debug)]
pub enum Followed {
    /// Every job settled (or disappeared); the jobs as they ended.
    Settled(Vec<Job>),
    /// Ctrl-C.
    Interrupted,
}

/// A state in which a job needs nothing more from the daemon.
pub fn settled(state: JobState) -> bool {
    !state.is_active()
}

/// Whether progress bars should be drawn: stderr is a terminal and not `-q`.
pub fn show_bars(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// Follows `ids` until each one settles; returns the jobs as they ended
/// (in the order of `ids`), with their files when `whole` or `bars` (else
/// only their heads: see [`Store::head`]). A job that disappears meanwhile
/// (pruned) is reported CANCELLED.
pub fn follow(
    store: &Store,
    ids: &[Uuid],
    whole: bool,
    bars: bool,
    verbose: u8,
) -> Result<Followed, Failure> {
    let multi = MultiProgress::with_draw_target(if bars {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut tracked: Vec<(Uuid, Option<ProgressBar>, Option<Job>)> =
        ids.iter().map(|id| (*id, None, None)).collect();
    // Before the first read: a change after it wakes the loop.
    let mut subscription = ipc::Subscription::open(store.dir());
    let mut checked = Instant::now();
    let mut drawn: Option<Instant> = None;
    loop {
        let mut all_settled = true;
        let draw_now = bars && drawn.is_none_or(|t| t.elapsed() >= DRAW);
        if draw_now {
            drawn = Some(Instant::now());
        }
        for (id, bar, last) in tracked.iter_mut() {
            if last.as_ref().is_some_and(|j| settled(j.state())) {
                continue;
            }
            // Between reads of the whole job, its state column says
            // whether it still runs.
            if last.is_some() && !draw_now {
                if let Some(state) = store.state_text(*id)? {
                    if is_active_text(&state) {
                        all_settled = false;
                        continue;
                    }
                }
            }
            let read = if whole || bars {
                store.get(*id)?
            } else {
                store.head(*id)?
            };
            let Some(job) = read else {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                *last = Some(gone(*id, last.take()));
                continue;
            };
            if bars {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::hidden();
                    b.set_prefix(short_name(&job));
                    draw(&b, &job);
                    let b = multi.add(b);
                    b.enable_steady_tick(Duration::from_millis(250));
                    b
                });
                draw(b, &job);
                if settled(job.state()) {
                    b.finish();
                }
            }
            if !settled(job.state()) {
                all_settled = false;
            }
            *last = Some(job);
        }
        if all_settled {
            break;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            for (_, bar, _) in &tracked {
                if let Some(b) = bar {
                    b.abandon();
                }
            }
            return Ok(Followed::Interrupted);
        }
        if checked.elapsed() >= CHECK_DAEMON {
            checked = Instant::now();
            if !ipc::daemon_alive(store.dir()) {
                tracing::warn!("the daemon is gone; starting it again");
                ipc::ensure_daemon(store.dir(), verbose)?;
                subscription = ipc::Subscription::open(store.dir());
            }
        }
        match &mut subscription {
            Some(s) => s.wait(POLL),
            None => std::thread::sleep(POLL),
        }
    }
    Ok(Followed::Settled(
        tracked.into_iter().filter_map(|(_, _, job)| job).collect(),
    ))
}

/// Whether a state column's text names an active state.
fn is_active_text(state: &str) -> bool {
    JobState::ALL.iter().any(|s| s.as_str() == state && s.is_active())
}

/// A job that left the store while followed, as it is reported: its last
/// copy, CANCELLED.
fn gone(id: Uuid, last: Option<Job>) -> Job {
    let mut job = last.unwrap_or_else(|| {
        let mut j = Job::new("", bits_core::JobType::Download, "");
        j.id = id;
        j
    });
    // The job's files are not ours to delete any more: cancel it without
    // them, then give them back for the report.
    let files = std::mem::take(&mut job.files);
    if let Err(e) = bits_core::engine::cancel(&mut job) {
        tracing::debug!(job = %id, "a job that left the store: {e}");
    }
    job.files = files;
    job
}

fn short_name(job: &Job) -> String {
    let name: String = job.display_name.chars().take(20).collect();
    format!("{name:<20}")
}

fn draw(bar: &ProgressBar, job: &Job) {
    let state = match (&job.state(), &job.error) {
        (JobState::Error | JobState::TransientError, Some(e)) => {
            format!("{} {}", job.state().as_str(), e.code)
        }
        _ => job.state().as_str().to_string(),
    };
    match job.bytes_total() {
        Some(total) if total > 0 => {
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_length(total);
        }
        _ => {
            bar.set_style(
                ProgressStyle::with_template("{prefix} {spinner} {bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
        }
    }
    bar.set_position(job.bytes_transferred());
    bar.set_message(format!(
        "{}/{} files {state}",
        job.files_transferred(),
        job.files.len()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_texts_are_active_exactly_when_their_states_are() {
        for state in JobState::ALL {
            assert_eq!(is_active_text(state.as_str()), state.is_active(), "{state:?}");
        }
        assert!(!is_active_text("BOGUS"));
    }
}
