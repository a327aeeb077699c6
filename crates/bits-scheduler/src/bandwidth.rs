//! The bandwidth schedule applied: [`Bandwidth`] holds the config file's
//! schedule and the daemon-wide [`SharedLimiter`], evaluates the schedule
//! on a [`WallClock`], sets the limiter's rates and says which background
//! priorities are blocked, for [`crate::Scheduler::set_blocked`]. The
//! process that runs the scheduler (the daemon, an agent) drives it:
//!
//! ```no_run
//! # async fn drive(mut scheduler: bits_scheduler::Scheduler, mut bw: bits_scheduler::Bandwidth) {
//! loop {
//!     tokio::time::sleep(bw.until_next_evaluation()).await;
//!     if let Some(blocked) = bw.evaluate() {
//!         let _ended = scheduler.set_blocked(&blocked).await;
//!         let _ = scheduler.schedule().await;
//!     }
//! }
//! # }
//! ```
//!
//! It wakes at the next boundary of a window
//! ([`Schedule::next_change_after`]), and at least once a minute
//! (`network.md`: the wall clock may jump: a suspended machine, a changed
//! time), never by polling faster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bits_core::{PoolRate, Priority, SharedLimiter};

use crate::schedule::{
    until_next_minute, BlockWatch, Limit, LocalTime, Schedule, ScheduleError, ScheduleHolder, Weekday,
    BACKGROUND_PRIORITIES,
};

/// The longest wait between two evaluations.
pub const EVALUATE_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// How long after a window's boundary the evaluation happens, so that it
/// lands in the new minute.
const PAST_BOUNDARY: Duration = Duration::from_millis(20);

/// A wall clock to the second, as the schedule judges it.
pub trait WallClock: Send {
    /// The local time now, to the minute, and how far into that minute.
    fn now(&self) -> (LocalTime, Duration);

    /// How many of its seconds pass in a real second (1 but for tests).
    fn pace(&self) -> u32 {
        1
    }
}

/// The system's clock in the local time zone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> (LocalTime, Duration) {
        let t = SystemTime::now();
        let into = EVALUATE_AT_LEAST_EVERY.saturating_sub(until_next_minute(t));
        (LocalTime::from_system_time(t), into)
    }
}

/// A clock that starts at a chosen local time and then runs at the real
/// pace or faster: for tests, which cannot wait for a real window to
/// begin, nor a minute for it to end.
#[derive(Clone, Copy, Debug)]
pub struct StartedClock {
    /// Seconds since Monday 00:00 at `at`.
    start: Duration,
    at: Instant,
    pace: u32,
}

impl StartedClock {
    /// A clock reading `weekday hour:minute:second` now.
    pub fn starting_at(weekday: Weekday, hour: u8, minute: u8, second: u8) -> StartedClock {
        let minutes = LocalTime::new(weekday, hour, minute).minute_of_week();
        StartedClock {
            start: Duration::from_secs(u64::from(minutes) * 60 + u64::from(second.min(59))),
            at: Instant::now(),
            pace: 1,
        }
    }

    /// The same clock running `pace` times faster than the real one.
    pub fn faster(mut self, pace: u32) -> StartedClock {
        self.pace = pace.max(1);
        self
    }

    /// Parses `Mon 07:59:58` (a day, then `HH:MM` or `HH:MM:SS`), then
    /// optionally a pace: `Mon 07:59 x10` runs ten times faster.
    pub fn parse(text: &str) -> Result<StartedClock, String> {
        let bad = || {
            format!(
                "bad clock {text:?}: write a day and a time, such as \"Mon 07:59:58\" or \"Mon 07:59 x10\""
            )
        };
        let mut words = text.split_whitespace();
        let (day, time) = (words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
        let pace = match words.next() {
            None => 1,
            Some(p) => p
                .strip_prefix('x')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(bad)?,
        };
        if words.next().is_some() {
            return Err(bad());
        }
        let day = Weekday::parse(day).ok_or_else(bad)?;
        let parts: Vec<u8> = time
            .trim()
            .split(':')
            .map(|p| p.parse::<u8>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let (h, m, sec) = match parts[..] {
            [h, m] => (h, m, 0),
            [h, m, s] => (h, m, s),
            _ => return Err(bad()),
        };
        if h > 23 || m > 59 || sec > 59 {
            return Err(bad());
        }
        Ok(StartedClock::starting_at(day, h, m, sec).faster(pace))
    }
}

impl WallClock for StartedClock {
    fn now(&self) -> (LocalTime, Duration) {
        let t = self.start + self.at.elapsed() * self.pace;
        let secs = t.as_secs();
        let minute = u32::try_from(secs / 60 % u64::from(crate::schedule::MINUTES_PER_WEEK)).unwrap_or(0);
        let into = Duration::new(secs % 60, t.subsec_nanos());
        (LocalTime::from_minute_of_week(minute), into)
    }

    fn pace(&self) -> u32 {
        self.pace
    }
}

/// The schedule of a config file, applied: see the module's text.
pub struct Bandwidth {
    path: PathBuf,
    holder: ScheduleHolder,
    limiter: SharedLimiter,
    watch: BlockWatch,
    clock: Box<dyn WallClock>,
    /// The limits of HIGH, NORMAL, LOW at the last evaluation.
    limits: [Limit; 3],
    /// The blocked set must be told at the next evaluation (start, reload).
    tell: bool,
}

impl std::fmt::Debug for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bandwidth")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Bandwidth {
    /// Loads the config file at `path` (missing: nothing is limited). A
    /// malformed file is refused: the daemon does not start.
    pub fn load(path: &Path, clock: Box<dyn WallClock>) -> Result<Bandwidth, ScheduleError> {
        Ok(Bandwidth {
            path: path.to_owned(),
            holder: ScheduleHolder::load(path)?,
            limiter: SharedLimiter::new(),
            watch: BlockWatch::new(),
            clock,
            limits: [Limit::Unlimited; 3],
            tell: true,
        })
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schedule in force.
    pub fn schedule(&self) -> &Schedule {
        self.holder.schedule()
    }

    /// The daemon-wide limiter whose rates [`Bandwidth::evaluate`] sets:
    /// hand it to the scheduler ([`crate::Scheduler::with_shared_limiter`]).
    pub fn limiter(&self) -> SharedLimiter {
        self.limiter.clone()
    }

    /// Reads the config file again: on error the schedule in force stays.
    /// Evaluate after it.
    pub fn reload(&mut self) -> Result<(), ScheduleError> {
        self.holder.reload(&self.path)?;
        self.tell = true;
        Ok(())
    }

    /// The limits of HIGH, NORMAL and LOW at the last evaluation.
    pub fn limits(&self) -> [Limit; 3] {
        self.limits
    }

    /// The limit of `priority` at the last evaluation (FOREGROUND:
    /// unlimited).
    pub fn limit_of(&self, priority: Priority) -> Limit {
        BACKGROUND_PRIORITIES
            .iter()
            .position(|p| *p == priority)
            .map_or(Limit::Unlimited, |i| self.limits[i])
    }

    /// The local time now on its clock.
    pub fn now(&self) -> LocalTime {
        self.clock.now().0
    }

    /// Evaluates the schedule now: sets the limiter's rates, and returns
    /// the blocked background priorities when they changed since the last
    /// evaluation (and at the first one, and after a reload), for
    /// [`crate::Scheduler::set_blocked`].
    pub fn evaluate(&mut self) -> Option<Vec<Priority>> {
        let (now, _) = self.clock.now();
        let schedule = self.holder.schedule();
        let limits = BACKGROUND_PRIORITIES.map(|p| schedule.limit_at(now, p));
        let rates =
            BACKGROUND_PRIORITIES.map(|p| match (schedule.limit_at(now, p), schedule.rule_at(now, p)) {
                (Limit::Unlimited, _) | (_, None) => PoolRate::Unlimited,
                (Limit::Blocked, Some(pool)) => PoolRate::Shared { pool, rate: 0 },
                (Limit::Rate(rate), Some(pool)) => PoolRate::Shared { pool, rate },
            });
        self.limiter.set_rates(rates);
        if limits != self.limits {
            tracing::info!(
                high = %limits[0], normal = %limits[1], low = %limits[2],
                "bandwidth schedule: background rates per second"
            );
        }
        self.limits = limits;
        let changes = self.watch.update(schedule, now);
        let tell = std::mem::take(&mut self.tell);
        if changes.is_empty() && !tell {
            return None;
        }
        Some(
            BACKGROUND_PRIORITIES
                .into_iter()
                .filter(|p| self.watch.is_blocked(*p))
                .collect(),
        )
    }

    /// How long until the next evaluation is due: just past the next
    /// boundary of a window, and at most [`EVALUATE_AT_LEAST_EVERY`].
    pub fn until_next_evaluation(&self) -> Duration {
        let (now, into) = self.clock.now();
        let on_clock = match self.holder.schedule().next_change_after(now) {
            Some(n) => Duration::from_secs(u64::from(n) * 60)
                .saturating_sub(into)
                .min(EVALUATE_AT_LEAST_EVERY),
            None => EVALUATE_AT_LEAST_EVERY,
        };
        on_clock / self.clock.pace() + PAST_BOUNDARY
    }

    /// When the limits of the last evaluation next change, as a local
    /// time: `None` when never (no rule changes within a week).
    pub fn next_change(&self) -> Option<LocalTime> {
        let (now, _) = self.clock.now();
        self.holder
            .schedule()
            .next_change_after(now)
            .map(|n| LocalTime::from_minute_of_week(now.minute_of_week() + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bandwidth(text: &str, clock: StartedClock) -> Bandwidth {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Bandwidth::load(&path, Box::new(clock)).unwrap()
    }

    #[test]
    fn a_started_clock_reads_its_time() {
        let c = StartedClock::parse("Sun 23:59:58").unwrap();
        let (t, into) = c.now();
        assert_eq!(t, LocalTime::new(Weekday::Sun, 23, 59));
        assert!(into >= Duration::from_secs(58));
        assert!(StartedClock::parse("Sun 24:00").is_err());
        assert!(StartedClock::parse("Fry 10:00").is_err());
        assert!(StartedClock::parse("Mon 10:00 x0").is_err());
        let fast = StartedClock::parse("Mon 07:59 x10").unwrap();
        assert_eq!(fast.pace(), 10);
    }

    #[test]
    fn evaluation_blocks_then_wakes_at_the_boundary() {
        let mut bw = bandwidth(
            "[[bandwidth.rule]]\ndays = \"Mon\"\nhours = \"00:00-08:00\"\npriorities = [\"low\"]\nrate = 0\n\n[[bandwidth.rule]]\nrate = \"1M\"\n",
            StartedClock::starting_at(Weekday::Mon, 7, 59, 30),
        );
        assert_eq!(bw.evaluate(), Some(vec![Priority::Low]));
        assert_eq!(bw.evaluate(), None);
        assert_eq!(
            bw.limits(),
            [Limit::Rate(1 << 20), Limit::Rate(1 << 20), Limit::Blocked]
        );
        assert_eq!(bw.limiter().pool_rate(Priority::High), Some(1 << 20));
        let wait = bw.until_next_evaluation();
        assert!(
            wait <= Duration::from_secs(31) && wait >= Duration::from_secs(29),
            "{wait:?}"
        );
        assert_eq!(bw.next_change(), Some(LocalTime::new(Weekday::Mon, 8, 0)));
    }

    #[test]
    fn a_schedule_that_never_changes_is_evaluated_once_a_minute() {
        let bw = bandwidth("", StartedClock::starting_at(Weekday::Tue, 1, 0, 0));
        assert_eq!(
            bw.until_next_evaluation(),
            EVALUATE_AT_LEAST_EVERY + PAST_BOUNDARY
        );
        assert_eq!(bw.next_change(), None);
    }
}
