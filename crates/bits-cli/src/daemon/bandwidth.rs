//! The daemon's bandwidth schedule (`network.md`, "The bandwidth
//! schedule"; `docs/config.md`): the config file loaded at start (a
//! malformed one: the daemon does not start, exit 2), read again on
//! `SIGHUP` or `bits daemon --reload` (a malformed one is reported and the
//! schedule in force stays), evaluated at each window's boundary and at
//! least once a minute ([`bits_scheduler::Bandwidth`]), and applied through
//! the scheduler (blocked priorities, the shared limiter's rates).
//!
//! What is in force is published in the store folder, `bandwidth.json`
//! ([`Published`]), for `bits info` (which reads the store, not the
//! daemon) to show a job's current limit; the daemon removes it when it
//! stops.
//!
//! Tests choose the time: a debug build (never a release one) honours
//! `BITS_TEST_CLOCK="Mon 07:59:58"`, a clock that starts there when the
//! daemon starts and runs at the real pace, or faster with a pace:
//! `"Mon 07:59:40 x10"` (a window's minute then lasts 6 s).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bits_core::{Hresult, Job, JobState, Priority};
use bits_scheduler::schedule::default_config_path;
use bits_scheduler::{Bandwidth, Ended, Limit, Scheduler, SystemWallClock, WallClock};
use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::ipc;
use crate::store;

/// The file in the store folder that says what the running daemon's
/// schedule allows now.
pub const PUBLISHED_FILE: &str = "bandwidth.json";

/// The debug-build variable that sets the daemon's clock (tests); a
/// release build never reads it.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const TEST_CLOCK_VAR: &str = "BITS_TEST_CLOCK";

/// The schedule of a running daemon.
pub(super) struct DaemonSchedule {
    bandwidth: Bandwidth,
    dir: PathBuf,
    /// When the next evaluation is due.
    wake: tokio::time::Instant,
    /// The last reload's refusal, kept for `bandwidth.json`.
    reload_error: Option<String>,
}

impl DaemonSchedule {
    /// Loads the config file: `config`, else the default place. A
    /// malformed file is bad input (exit 2) naming its line and column.
    pub(super) fn load(dir: &Path, config: Option<PathBuf>) -> Result<DaemonSchedule, Failure> {
        let path = config.or_else(default_config_path).unwrap_or_default();
        let bandwidth = Bandwidth::load(&path, clock()?).map_err(|e| refused(&e))?;
        if !bandwidth.schedule().is_empty() {
            tracing::info!(config = %path.display(), "bandwidth schedule loaded");
        }
        Ok(DaemonSchedule {
            bandwidth,
            dir: dir.to_owned(),
            wake: tokio::time::Instant::now(),
            reload_error: None,
        })
    }

    /// The scheduler, handed the daemon-wide limiter.
    pub(super) fn attach(&self, scheduler: Scheduler) -> Scheduler {
        scheduler.with_shared_limiter(self.bandwidth.limiter())
    }

    /// Until the next evaluation is due. Cancel-safe.
    pub(super) async fn due(&self) {
        tokio::time::sleep_until(self.wake).await;
    }

    /// Evaluates the schedule now and applies what changed: the
    /// limiter's rates, the blocked priorities. Call
    /// [`Scheduler::schedule`] after it.
    #[must_use = "a held job is handed over in `Ended::held`"]
    pub(super) async fn apply(&mut self, scheduler: &mut Scheduler) -> Vec<Ended> {
        let blocked = self.bandwidth.evaluate();
        self.wake = tokio::time::Instant::now() + self.bandwidth.until_next_evaluation();
        let ended = match blocked {
            Some(blocked) => {
                tracing::info!(?blocked, "bandwidth schedule: blocked background priorities");
                scheduler.set_blocked(&blocked).await
            }
            None => Vec::new(),
        };
        self.publish();
        ended
    }

    /// Reads the config file again (`SIGHUP`, `bits daemon --reload`):
    /// on error the schedule in force stays and the error is returned.
    /// Apply after it.
    pub(super) fn reload(&mut self) -> Result<(), Failure> {
        match self.bandwidth.reload() {
            Ok(()) => {
                tracing::info!(config = %self.bandwidth.path().display(), "bandwidth schedule reloaded");
                self.reload_error = None;
                self.wake = tokio::time::Instant::now();
                Ok(())
            }
            Err(e) => {
                tracing::warn!("the config file is refused; the schedule in force stays: {e}");
                self.reload_error = Some(e.to_string());
                self.publish();
                Err(refused(&e))
            }
        }
    }

    /// Writes `bandwidth.json` (atomically: a temporary file renamed).
    fn publish(&self) {
        let p = Published {
            pid: std::process::id(),
            config: self.bandwidth.path().to_string_lossy().into_owned(),
            high: rate(self.bandwidth.limits()[0]),
            normal: rate(self.bandwidth.limits()[1]),
            low: rate(self.bandwidth.limits()[2]),
            next_change: self.bandwidth.next_change().map(|t| {
                format!(
                    "{} {:02}:{:02}",
                    t.weekday(),
                    t.minute_of_day() / 60,
                    t.minute_of_day() % 60
                )
            }),
            reload_error: self.reload_error.clone(),
        };
        let path = ipc::path(&self.dir, PUBLISHED_FILE);
        let tmp = ipc::path(&self.dir, ".bandwidth.json.tmp");
        let written = (|| -> std::io::Result<()> {
            let _ = std::fs::remove_file(&tmp);
            let mut f = store::open_private(&tmp).map_err(std::io::Error::other)?;
            f.write_all(
                serde_json::to_string(&p)
                    .map_err(std::io::Error::other)?
                    .as_bytes(),
            )?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    /// Removes `bandwidth.json` (the daemon stops).
    pub(super) fn unpublish(&self) {
        let _ = std::fs::remove_file(ipc::path(&self.dir, PUBLISHED_FILE));
    }
}

/// A refused config file: bad input (exit 2), one line with its line and
/// column.
fn refused(e: &bits_scheduler::ScheduleError) -> Failure {
    Failure::bad_input(
        Hresult::E_INVALIDARG,
        format!("the config file is refused: {e}"),
        "fix it (docs/config.md); a running daemon keeps the schedule it had",
    )
}

/// The daemon's clock: the system's, or in a debug build the one
/// `BITS_TEST_CLOCK` sets.
fn clock() -> Result<Box<dyn WallClock>, Failure> {
    #[cfg(debug_assertions)]
    if let Ok(text) = std::env::var(TEST_CLOCK_VAR) {
        let c = bits_scheduler::StartedClock::parse(&text)
            .map_err(|e| Failure::bad_input(Hresult::E_INVALIDARG, format!("{TEST_CLOCK_VAR}: {e}"), ""))?;
        tracing::warn!("{TEST_CLOCK_VAR}: the schedule is judged on a test clock starting at {text}");
        return Ok(Box::new(c));
    }
    Ok(Box::new(SystemWallClock))
}

/// A limit as `bandwidth.json` writes it: bytes per second, 0 blocked,
/// `None` unlimited.
fn rate(l: Limit) -> Option<u64> {
    l.bytes_per_second()
}

/// What the running daemon's schedule allows now (`bandwidth.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Published {
    /// The daemon's pid (a file left by a killed daemon is ignored).
    pub pid: u32,
    /// Its config file.
    pub config: String,
    /// HIGH's rate, bytes per second (0: blocked; `None`: unlimited).
    pub high: Option<u64>,
    /// NORMAL's.
    pub normal: Option<u64>,
    /// LOW's.
    pub low: Option<u64>,
    /// When the rates next change (`Mon 08:00`), if within a week.
    pub next_change: Option<String>,
    /// The last reload's refusal, when the file was refused.
    pub reload_error: Option<String>,
}

impl Published {
    /// What the store's running daemon published; `None` when no daemon
    /// runs (no file, or its daemon is gone).
    pub fn read(dir: &Path) -> Option<Published> {
        let text = std::fs::read_to_string(ipc::path(dir, PUBLISHED_FILE)).ok()?;
        let p: Published = serde_json::from_str(&text).ok()?;
        Path::new(&format!("/proc/{}", p.pid)).exists().then_some(p)
    }

    /// The schedule's rate for `priority` now: `Some(None)` unlimited,
    /// `Some(Some(0))` blocked; FOREGROUND is never limited.
    fn rate_of(&self, priority: Priority) -> Option<u64> {
        match priority {
            Priority::Foreground => None,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

/// A job's network use as `bits info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkView {
    /// Bytes per second it may use now: the lower of its own cap and its
    /// schedule's rate (shared by the jobs of that rate); 0 blocked,
    /// `None` unlimited.
    pub rate_limit: Option<u64>,
    /// Where that limit comes from: `max_rate` or `schedule`.
    pub rate_limit_source: Option<&'static str>,
    /// `none`, `paced`, `window-clamp`.
    pub controller: &'static str,
    /// Whether its controller holds it back for other traffic now.
    pub yielding: bool,
}

impl NetworkView {
    /// For `job`, with what the running daemon published (`None`: no
    /// daemon, so no schedule in force).
    pub fn of(job: &Job, published: Option<&Published>) -> NetworkView {
        let schedule = published.and_then(|p| p.rate_of(job.priority));
        let (rate_limit, rate_limit_source) = match (job.max_rate, schedule) {
            (Some(own), Some(s)) if s < own => (Some(s), Some("schedule")),
            (Some(own), _) => (Some(own), Some("max_rate")),
            (None, Some(s)) => (Some(s), Some("schedule")),
            (None, None) => (None, None),
        };
        let running = matches!(job.state(), JobState::Connecting | JobState::Transferring);
        NetworkView {
            rate_limit,
            rate_limit_source,
            controller: if running { job.controller.as_str() } else { "none" },
            yielding: running && job.yielding,
        }
    }
}
