//! The bandwidth schedule of the daemon's config file (`network.md`, "The
//! bandwidth schedule"; BITS's group policy, on Linux a file): which rate
//! background jobs may use at a given local wall-clock time. Pure code:
//! parsing, evaluation and reload; applying the result (throttling,
//! `BG_E_BLOCKED_BY_POLICY`) is the scheduler's.
//!
//! ## The file
//! `$XDG_CONFIG_HOME/bits/config.toml` ([`default_config_path`]); the full
//! description with an example is `docs/config.md`.
//!
//! ```toml
//! # Maintenance rules are matched first (BITS's maintenance schedule
//! # supersedes its work schedule).
//! [[maintenance.rule]]
//! days = "Sat"
//! hours = "02:00-04:00"
//! rate = "off"              # unlimited
//!
//! [[bandwidth.rule]]
//! days = "Mon-Fri"
//! hours = "08:00-17:00"
//! priorities = ["normal", "low"]
//! rate = "512K"             # bytes per second, 1024-based
//!
//! [[bandwidth.rule]]
//! days = "Mon-Fri"
//! hours = "08:00-17:00"
//! rate = "2M"               # HIGH, which the rule above left out
//!
//! [[bandwidth.rule]]
//! days = "Fri"
//! hours = "22:00-06:00"     # Friday 22:00 to Saturday 06:00
//! rate = 0                  # blocked
//! ```
//!
//! - `[bandwidth]` and `[maintenance]` each hold a list of rules,
//!   `[[bandwidth.rule]]` and `[[maintenance.rule]]`. Every other key or
//!   section is refused (so a misspelt one is not silently ignored).
//! - `days`: `*` (every day, also when left out), a day (`Sat`), a range
//!   (`Mon-Fri`; it may wrap: `Fri-Mon` is Friday to Monday), or a
//!   comma-separated list of those (`Mon,Wed`, `Mon-Wed,Sat`). Day names
//!   are English, three letters or in full, any case.
//! - `hours`: `HH:MM-HH:MM` on the local wall clock, the start included
//!   and the end excluded (`24:00` may end a window); `*` or left out is
//!   the whole day. A window whose end is before its start crosses
//!   midnight and **belongs to the day it starts on**: `days = "Fri"`,
//!   `hours = "22:00-06:00"` is Friday 22:00 to Saturday 06:00 (as BITS's
//!   own schedule reads a window).
//! - `priorities`: a list of `high`, `normal`, `low` (any case); left out,
//!   every background priority. `foreground` is refused: FOREGROUND jobs
//!   are never limited by the schedule.
//! - `rate`: bytes per second, a string with an optional `K`, `M` or `G`
//!   (1024-based, as curl's `--limit-rate`; any case; decimals allowed:
//!   `"1.5G"`, rounded down to a whole byte) or a whole number; `0` blocks
//!   (the jobs go to TRANSIENT_ERROR with `BG_E_BLOCKED_BY_POLICY` until
//!   the window ends); `"off"` is unlimited.
//!
//! ## How a time is judged
//! FOREGROUND is never limited. Otherwise the maintenance rules are
//! tried in order, then the bandwidth rules in order, and the first that
//! matches the day, the minute and the priority gives the limit; no
//! matching rule means unlimited ([`Schedule::limit_at`]). A per-job cap
//! combines with it through [`Limit::min`]: the lower wins.
//!
//! ## Errors
//! A malformed file is refused whole, with the line and column (1-based,
//! the column in characters) of what is wrong: a TOML syntax error, a bad
//! day, hour range, rate or priority, an unknown key, a missing `rate`
//! ([`ScheduleError`]). [`ScheduleHolder::reload`] keeps the schedule it
//! had when the new file is refused.
//!
//! ## Local time
//! The caller builds a [`LocalTime`] (a weekday and a minute of the day),
//! so evaluation is pure and tests choose their clock ([`Clock`]).
//! [`LocalTime::from_system_time`] reads the local time zone through
//! `libc::localtime_r` rather than a date crate: the C library already
//! knows the zone (`TZ`, `/etc/localtime`) and its daylight-saving rules,
//! and two libc calls do not justify chrono, `jiff` or `time` (whose local
//! offset is refused in a multi-threaded process) as a dependency. glibc
//! reads the zone once per process: a daemon notices a changed system
//! zone when it restarts.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bits_core::{BitsError, Event, Priority};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Minutes in a day.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// Minutes in a week: [`Schedule::next_change_after`] looks no further.
pub const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY as u32;

/// What the schedule allows background jobs at a given time.
///
/// Ordered from the most to the least restrictive (`Blocked` <
/// `Rate(n)` < `Rate(m)` for n < m < `Unlimited`), so the lower of two
/// limits is [`Ord::min`] (or [`Limit::min`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// A rate of 0: no background transfer (`BG_E_BLOCKED_BY_POLICY`).
    Blocked,
    /// At most this many bytes per second (never 0), shared by the jobs
    /// the limit applies to.
    Rate(u64),
    /// No limit.
    Unlimited,
}

impl Limit {
    /// Parses a rate as the config file and `set-max-rate` write it:
    /// `off`, `0`, a whole number of bytes per second, or a number (with
    /// decimals) followed by `K`, `M` or `G` (1024-based, any case),
    /// rounded down to whole bytes. A rate that is not 0 but rounds down to
    /// 0 bytes is refused rather than read as blocking.
    pub fn parse(text: &str) -> Result<Limit, ParseLimitError> {
        let bad = |why: &str| ParseLimitError(format!("bad rate {text:?}: {why}"));
        let t = text.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(Limit::Unlimited);
        }
        let (number, multiplier) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_uppercase() {
                    'K' => 1 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    _ => return Err(bad(
                        "write bytes per second with an optional K, M or G (1024-based), 0 to block, or off",
                    )),
                };
                (&t[..i], m)
            }
            _ => (t, 1),
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty())
            || !digits(whole)
            || !digits(fraction)
            || (number.contains('.') && (whole.is_empty() || fraction.is_empty()))
        {
            return Err(bad(
                "write bytes per second with an optional K, M or G (1024-based), 0 to block, or off",
            ));
        }
        if fraction.len() > 9 {
            return Err(bad("at most 9 decimals"));
        }
        let too_large = || bad("too large");
        let whole: u64 = whole.parse().map_err(|_| too_large())?;
        let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
        if !fraction.is_empty() {
            let scale = 10u128.pow(fraction.len() as u32);
            let f: u128 = fraction.parse().expect("digits");
            let part = u64::try_from(f * u128::from(multiplier) / scale).map_err(|_| too_large())?;
            bytes = bytes.checked_add(part).ok_or_else(too_large)?;
        }
        if bytes == 0 {
            let zero = whole == 0 && fraction.bytes().all(|b| b == b'0');
            return if zero {
                Ok(Limit::Blocked)
            } else {
                Err(bad("less than one byte per second; write 0 to block"))
            };
        }
        Ok(Limit::Rate(bytes))
    }

    /// The lower (more restrictive) of two limits: a per-job cap and the
    /// schedule's.
    pub fn min(self, other: Limit) -> Limit {
        Ord::min(self, other)
    }

    /// True for [`Limit::Blocked`].
    pub const fn is_blocked(self) -> bool {
        matches!(self, Limit::Blocked)
    }

    /// The rate in bytes per second, `None` when unlimited (and `Some(0)`
    /// when blocked).
    pub const fn bytes_per_second(self) -> Option<u64> {
        match self {
            Limit::Blocked => Some(0),
            Limit::Rate(n) => Some(n),
            Limit::Unlimited => None,
        }
    }
}

/// As the file writes it, in the largest unit that is exact: `off`, `0`,
/// `512K`, `10M`, `1G`, `1536` (`Limit::parse` reads it back).
impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Limit::Unlimited => f.write_str("off"),
            Limit::Blocked => f.write_str("0"),
            Limit::Rate(n) => {
                for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
                    if n % size == 0 {
                        return write!(f, "{}{unit}", n / size);
                    }
                }
                write!(f, "{n}")
            }
        }
    }
}

/// A rate that [`Limit::parse`] refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseLimitError(String);

impl fmt::Display for ParseLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseLimitError {}

/// A day of the week, Monday first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// 0 for Monday to 6 for Sunday.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The day of [`Weekday::index`] `i` modulo 7.
    pub const fn from_index(i: u8) -> Weekday {
        Weekday::ALL[(i % 7) as usize]
    }

    /// The next day (Sunday's is Monday).
    pub const fn succ(self) -> Weekday {
        Weekday::from_index(self.index() + 1)
    }

    /// The three-letter English name (`Mon`).
    pub const fn as_str(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self as usize]
    }

    /// Parses an English day name, three letters or in full, any case.
    pub fn parse(text: &str) -> Option<Weekday> {
        const FULL: [&str; 7] = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        let t = text.trim().to_ascii_lowercase();
        FULL.iter()
            .position(|full| t == *full || t == full[..3])
            .map(|i| Weekday::from_index(i as u8))
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local wall-clock time to the minute, as the schedule judges it: a
/// weekday and a minute of that day (0 to 1439).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalTime {
    weekday: Weekday,
    minute_of_day: u16,
}

impl LocalTime {
    /// `hour:minute` on `weekday`.
    ///
    /// # Panics
    /// When `hour` > 23 or `minute` > 59.
    pub const fn new(weekday: Weekday, hour: u8, minute: u8) -> LocalTime {
        assert!(hour < 24 && minute < 60, "a local time is 00:00 to 23:59");
        LocalTime {
            weekday,
            minute_of_day: hour as u16 * 60 + minute as u16,
        }
    }

    /// The day.
    pub const fn weekday(self) -> Weekday {
        self.weekday
    }

    /// Minutes since midnight, 0 to 1439.
    pub const fn minute_of_day(self) -> u16 {
        self.minute_of_day
    }

    /// Minutes since Monday 00:00, 0 to 10079.
    pub const fn minute_of_week(self) -> u32 {
        self.weekday.index() as u32 * MINUTES_PER_DAY as u32 + self.minute_of_day as u32
    }

    /// The time `minute` minutes after Monday 00:00 (modulo a week).
    pub const fn from_minute_of_week(minute: u32) -> LocalTime {
        let m = minute % MINUTES_PER_WEEK;
        LocalTime {
            weekday: Weekday::from_index((m / MINUTES_PER_DAY as u32) as u8),
            minute_of_day: (m % MINUTES_PER_DAY as u32) as u16,
        }
    }

    /// The time `minutes` later on the wall clock (wrapping over the week).
    pub const fn plus_minutes(self, minutes: u32) -> LocalTime {
        LocalTime::from_minute_of_week(self.minute_of_week() + minutes % MINUTES_PER_WEEK)
    }

    /// The local time of `t` in the process's time zone (`TZ`, else
    /// `/etc/localtime`), through `localtime_r`; in UTC if the C library
    /// cannot convert it (a time outside its range).
    pub fn from_system_time(t: SystemTime) -> LocalTime {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => {
                let before = e.duration();
                let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                // 0.5 s before the epoch is 23:59:59 of the day before.
                -whole - i64::from(before.subsec_nanos() > 0)
            }
        };
        local_tm(secs).unwrap_or_else(|| {
            let days = secs.div_euclid(86_400);
            let second_of_day = secs.rem_euclid(86_400);
            // 1970-01-01 was a Thursday (index 3).
            LocalTime {
                weekday: Weekday::from_index((days + 3).rem_euclid(7) as u8),
                minute_of_day: (second_of_day / 60) as u16,
            }
        })
    }

    /// The local time now.
    pub fn now() -> LocalTime {
        LocalTime::from_system_time(SystemTime::now())
    }
}

/// `Fri 22:00`.
impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}",
            self.weekday,
            self.minute_of_day / 60,
            self.minute_of_day % 60
        )
    }
}

/// `localtime_r(secs)` as a weekday and minute; `None` when the C library
/// refuses (a time outside its range). The one `unsafe` of the crate.
#[allow(unsafe_code)]
fn local_tm(secs: i64) -> Option<LocalTime> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: `tm` is plain C data for which all-zero bytes are valid (its
    // `tm_zone` pointer becomes null); `localtime_r` is the thread-safe
    // form, writes only into the `tm` it is given and reads `t` by
    // pointer for the duration of the call. It may read `TZ` from the
    // environment, which this process does not change while running.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    let hour = u8::try_from(tm.tm_hour).ok().filter(|h| *h < 24)?;
    let minute = u8::try_from(tm.tm_min).ok().filter(|m| *m < 60)?;
    // tm_wday: 0 is Sunday.
    let wday = u8::try_from(tm.tm_wday).ok().filter(|d| *d < 7)?;
    Some(LocalTime::new(Weekday::from_index(wday + 6), hour, minute))
}

/// How long until the next minute starts on the wall clock: the daemon
/// re-evaluates the schedule there (`network.md`: at least once a
/// minute), which also lands on every boundary of a window, all of them
/// being whole minutes.
pub fn until_next_minute(now: SystemTime) -> Duration {
    let into = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => Duration::new(d.as_secs() % 60, d.subsec_nanos()),
        Err(_) => Duration::ZERO,
    };
    Duration::from_secs(60) - into
}

/// Where the local time comes from: the system's, or a test's.
pub trait Clock {
    /// The local wall-clock time now.
    fn now(&self) -> LocalTime;
}

/// The system clock in the local time zone ([`LocalTime::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> LocalTime {
        LocalTime::now()
    }
}

impl<F: Fn() -> LocalTime> Clock for F {
    fn now(&self) -> LocalTime {
        self()
    }
}

/// The background priorities a rule may name, as a bit set.
const HIGH: u8 = 1;
const NORMAL: u8 = 2;
const LOW: u8 = 4;
const BACKGROUND: u8 = HIGH | NORMAL | LOW;

/// The background priorities, highest first.
pub const BACKGROUND_PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

fn priority_bit(p: Priority) -> u8 {
    match p {
        Priority::Foreground => 0,
        Priority::High => HIGH,
        Priority::Normal => NORMAL,
        Priority::Low => LOW,
    }
}

/// One rule, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// Bit `i`: [`Weekday::from_index`]`(i)`.
    days: u8,
    /// The first minute of the window, 0 to 1439.
    start: u16,
    /// The minute after its last, 1 to 1440; below `start` when the
    /// window crosses midnight into the next day.
    end: u16,
    /// A bit set of `HIGH`, `NORMAL`, `LOW`.
    priorities: u8,
    limit: Limit,
}

impl Rule {
    fn has_day(&self, day: Weekday) -> bool {
        self.days & (1 << day.index()) != 0
    }

    fn covers(&self, t: LocalTime) -> bool {
        let m = t.minute_of_day();
        if self.start < self.end {
            self.has_day(t.weekday()) && (self.start..self.end).contains(&m)
        } else {
            // Across midnight: the evening of a day it names, or the
            // morning after one.
            (self.has_day(t.weekday()) && m >= self.start)
                || (self.has_day(Weekday::from_index(t.weekday().index() + 6)) && m < self.end)
        }
    }

    /// The minutes of the week at which the rule starts or stops covering.
    fn boundaries(&self) -> impl Iterator<Item = u32> + '_ {
        let day = u32::from(MINUTES_PER_DAY);
        Weekday::ALL
            .into_iter()
            .filter(|d| self.has_day(*d))
            .flat_map(move |d| {
                let base = u32::from(d.index()) * day;
                let end = if self.start < self.end {
                    base + u32::from(self.end)
                } else {
                    base + day + u32::from(self.end)
                };
                [
                    (base + u32::from(self.start)) % MINUTES_PER_WEEK,
                    end % MINUTES_PER_WEEK,
                ]
            })
    }
}

/// The bandwidth schedule: maintenance rules, then bandwidth rules, first
/// match wins. The default (and a missing file's) has no rule: unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    maintenance: Vec<Rule>,
    bandwidth: Vec<Rule>,
}

impl Schedule {
    /// Parses the text of a config file ([`ScheduleError::Invalid`] with
    /// no path when it is refused).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let file: RawFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| Position::of(text, s.start));
            ScheduleError::Invalid {
                path: None,
                at,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        let rules = |section: RawSection| -> Result<Vec<Rule>, ScheduleError> {
            section.rule.into_iter().map(|r| r.into_rule(text)).collect()
        };
        Ok(Schedule {
            maintenance: rules(file.maintenance)?,
            bandwidth: rules(file.bandwidth)?,
        })
    }

    /// Reads the config file at `path`. A missing file is the empty
    /// schedule (unlimited); an unreadable or malformed one is refused.
    pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Schedule::default()),
            Err(source) => {
                return Err(ScheduleError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let text = String::from_utf8(text).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let before = String::from_utf8_lossy(&bytes[..valid]);
            ScheduleError::Invalid {
                path: Some(path.to_owned()),
                at: Some(Position::of(&before, valid)),
                message: "not UTF-8 text".to_owned(),
            }
        })?;
        Schedule::parse(&text).map_err(|e| e.with_path(path))
    }

    /// True when the schedule has no rule (nothing is ever limited).
    pub fn is_empty(&self) -> bool {
        self.maintenance.is_empty() && self.bandwidth.is_empty()
    }

    /// The limit for a job of `priority` at `when`: FOREGROUND is never
    /// limited; otherwise the first maintenance rule, then the first
    /// bandwidth rule, that covers the day, the minute and the priority;
    /// unlimited when none does.
    pub fn limit_at(&self, when: LocalTime, priority: Priority) -> Limit {
        let bit = priority_bit(priority);
        if bit == 0 {
            return Limit::Unlimited;
        }
        self.maintenance
            .iter()
            .chain(&self.bandwidth)
            .find(|r| r.priorities & bit != 0 && r.covers(when))
            .map_or(Limit::Unlimited, |r| r.limit)
    }

    /// Which rule gives `priority`'s limit at `when` (counted over the
    /// maintenance rules, then the bandwidth rules, from 0); `None` when
    /// none does (or FOREGROUND). Priorities governed by the same rule
    /// share its rate.
    pub fn rule_at(&self, when: LocalTime, priority: Priority) -> Option<usize> {
        let bit = priority_bit(priority);
        if bit == 0 {
            return None;
        }
        self.maintenance
            .iter()
            .chain(&self.bandwidth)
            .position(|r| r.priorities & bit != 0 && r.covers(when))
    }

    /// In how many minutes (counted from the start of `now`'s minute, 1 to
    /// a week) the limit of some background priority changes next: at the
    /// start of minute `now + n` it differs from the limit at `now`.
    /// `None` when it never changes (no rule, or rules that cover the
    /// whole week). The daemon still re-evaluates at least once a minute
    /// ([`until_next_minute`]), as the wall clock may jump; this tells how
    /// long a state lasts (say, until when a job is blocked).
    pub fn next_change_after(&self, now: LocalTime) -> Option<u32> {
        let current = BACKGROUND_PRIORITIES.map(|p| self.limit_at(now, p));
        let start = now.minute_of_week();
        let mut ahead: Vec<u32> = self
            .maintenance
            .iter()
            .chain(&self.bandwidth)
            .flat_map(Rule::boundaries)
            .map(|b| (b + MINUTES_PER_WEEK - start) % MINUTES_PER_WEEK)
            .filter(|n| *n != 0)
            .collect();
        ahead.sort_unstable();
        ahead.dedup();
        ahead.into_iter().find(|n| {
            let then = now.plus_minutes(*n);
            BACKGROUND_PRIORITIES.map(|p| self.limit_at(then, p)) != current
        })
    }
}

/// Where a problem is in a file: 1-based line and column, the column in
/// characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to its length and
    /// to a character boundary).
    pub fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A config file refused: unreadable, or malformed at a line and column.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The file exists but could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not a valid config: TOML syntax, or a rule's value.
    Invalid {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// Where, when known (always, for what `toml` reports with a span).
        at: Option<Position>,
        /// What is wrong.
        message: String,
    },
}

impl ScheduleError {
    /// Where in the file the problem is.
    pub fn position(&self) -> Option<Position> {
        match self {
            ScheduleError::Invalid { at, .. } => *at,
            ScheduleError::Io { .. } => None,
        }
    }

    /// What is wrong, without the file and position.
    pub fn message(&self) -> String {
        match self {
            ScheduleError::Invalid { message, .. } => message.clone(),
            ScheduleError::Io { source, .. } => source.to_string(),
        }
    }

    fn with_path(self, file: &Path) -> ScheduleError {
        match self {
            ScheduleError::Invalid { at, message, .. } => ScheduleError::Invalid {
                path: Some(file.to_owned()),
                at,
                message,
            },
            other => other,
        }
    }

    /// The job-operation error the CLI reports (`E_INVALIDARG`, exit 2):
    /// the same one line.
    pub fn to_bits_error(&self) -> BitsError {
        BitsError::InvalidArg {
            what: self.to_string(),
        }
    }
}

/// `FILE:LINE:COLUMN: what` (as compilers write it), or `FILE: what`.
impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ScheduleError::Invalid { path, at, message } => {
                if let Some(path) = path {
                    write!(f, "{}:", path.display())?;
                }
                if let Some(at) = at {
                    write!(f, "{at}:")?;
                }
                if path.is_some() || at.is_some() {
                    f.write_str(" ")?;
                }
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for ScheduleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScheduleError::Io { source, .. } => Some(source),
            ScheduleError::Invalid { .. } => None,
        }
    }
}

/// The daemon's schedule, reloaded on `SIGHUP` or `bits daemon --reload`:
/// a reload that fails keeps the schedule it had.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleHolder {
    current: Schedule,
}

impl ScheduleHolder {
    /// Holds `schedule`.
    pub fn new(schedule: Schedule) -> ScheduleHolder {
        ScheduleHolder { current: schedule }
    }

    /// Loads `path` at the daemon's start (a refusal means the daemon does
    /// not start: exit 2).
    pub fn load(path: &Path) -> Result<ScheduleHolder, ScheduleError> {
        Schedule::load(path).map(ScheduleHolder::new)
    }

    /// The schedule in force.
    pub fn schedule(&self) -> &Schedule {
        &self.current
    }

    /// Reads `path` again: the new schedule replaces the old one, or, when
    /// the file is refused, the old one stays and the error says why.
    /// A file removed since is the empty schedule, as at start.
    pub fn reload(&mut self, path: &Path) -> Result<&Schedule, ScheduleError> {
        self.current = Schedule::load(path)?;
        Ok(&self.current)
    }

    /// The limit for `priority` now on `clock`.
    pub fn limit_now(&self, clock: &impl Clock, priority: Priority) -> Limit {
        self.current.limit_at(clock.now(), priority)
    }
}

/// A background priority's blocking started or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockChange {
    /// A rate of 0 began: the jobs of this priority that would run go to
    /// TRANSIENT_ERROR with [`blocked_error`].
    Blocked(Priority),
    /// It ended: those jobs go back to QUEUED.
    Released(Priority),
}

impl BlockChange {
    /// The event of the state table (`bits_core::state::next_state`) it
    /// means for a job of its priority: `TransientFailure` (with
    /// [`blocked_error`]) for a job that would run, QUEUED to
    /// TRANSIENT_ERROR; `RetryTimer` for a job in TRANSIENT_ERROR with
    /// `BG_E_BLOCKED_BY_POLICY` (and no other), back to QUEUED.
    pub const fn event(self) -> Event {
        match self {
            BlockChange::Blocked(_) => Event::TransientFailure,
            BlockChange::Released(_) => Event::RetryTimer,
        }
    }

    /// The priority it concerns.
    pub const fn priority(self) -> Priority {
        match self {
            BlockChange::Blocked(p) | BlockChange::Released(p) => p,
        }
    }
}

/// Watches the schedule's rate-0 windows per background priority, so the
/// scheduler acts once at each edge (after each minute's evaluation or a
/// reload) rather than on every check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockWatch {
    /// A bit set of `HIGH`, `NORMAL`, `LOW`.
    blocked: u8,
}

impl BlockWatch {
    /// Nothing blocked yet.
    pub fn new() -> BlockWatch {
        BlockWatch::default()
    }

    /// Whether `priority` was blocked at the last [`BlockWatch::update`].
    pub fn is_blocked(&self, priority: Priority) -> bool {
        self.blocked & priority_bit(priority) != 0
    }

    /// Evaluates `schedule` at `now` and returns what changed since the
    /// last update, highest priority first.
    pub fn update(&mut self, schedule: &Schedule, now: LocalTime) -> Vec<BlockChange> {
        let mut changes = Vec::new();
        for p in BACKGROUND_PRIORITIES {
            let bit = priority_bit(p);
            let blocked = schedule.limit_at(now, p).is_blocked();
            if blocked != (self.blocked & bit != 0) {
                self.blocked ^= bit;
                changes.push(if blocked {
                    BlockChange::Blocked(p)
                } else {
                    BlockChange::Released(p)
                });
            }
        }
        changes
    }
}

/// The error a job blocked by the schedule shows:
/// `BG_E_BLOCKED_BY_POLICY` (0x8020003E), transient.
pub fn blocked_error() -> BitsError {
    BitsError::BlockedByPolicy
}

/// The config file's default place: `$XDG_CONFIG_HOME/bits/config.toml`,
/// else `$HOME/.config/bits/config.toml`; `None` with neither.
pub fn default_config_path() -> Option<PathBuf> {
    config_path_from(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
}

/// [`default_config_path`] from the values of `XDG_CONFIG_HOME` and
/// `HOME`: an empty or relative `XDG_CONFIG_HOME` is ignored, as the XDG
/// base directory specification says.
pub fn config_path_from(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let xdg = xdg_config_home.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = match xdg {
        Some(p) => p,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("bits").join("config.toml"))
}

// ---- The file's shape, as serde reads it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    bandwidth: RawSection,
    #[serde(default)]
    maintenance: RawSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSection {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    days: Option<Days>,
    #[serde(default)]
    hours: Option<Hours>,
    /// Checked after the rest so that a bad name's position is its own,
    /// not the list's.
    #[serde(default)]
    priorities: Option<toml::Spanned<Vec<toml::Spanned<String>>>>,
    rate: Rate,
}

impl RawRule {
    fn into_rule(self, text: &str) -> Result<Rule, ScheduleError> {
        let refuse = |offset: usize, message: String| ScheduleError::Invalid {
            path: None,
            at: Some(Position::of(text, offset)),
            message,
        };
        let priorities = match self.priorities {
            None => BACKGROUND,
            Some(list) if list.get_ref().is_empty() => {
                return Err(refuse(
                    list.span().start,
                    "priorities is empty: it would match nothing; leave it out for every background priority"
                        .to_owned(),
                ))
            }
            Some(list) => {
                let mut set = 0;
                for name in list.into_inner() {
                    set |= priority_bit_named(name.get_ref()).map_err(|m| refuse(name.span().start, m))?;
                }
                set
            }
        };
        let Hours(start, end) = self.hours.unwrap_or(Hours(0, MINUTES_PER_DAY));
        Ok(Rule {
            days: self.days.map_or(0x7F, |d| d.0),
            start,
            end,
            priorities,
            limit: self.rate.0,
        })
    }
}

/// A day set, bit `i` for [`Weekday::from_index`]`(i)`.
struct Days(u8);

impl Days {
    fn parse(text: &str) -> Result<Days, String> {
        let day = |name: &str| {
            Weekday::parse(name).ok_or_else(|| {
                format!(
                    "bad day {:?} in days {text:?}: a day is Mon, Tue, Wed, Thu, Fri, Sat or Sun",
                    name.trim()
                )
            })
        };
        let mut set = 0u8;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "bad days {text:?}: write *, a day (Sat), a range (Mon-Fri) or a list (Mon,Wed)"
                ));
            }
            if item == "*" {
                set = 0x7F;
            } else if let Some((from, to)) = item.split_once('-') {
                let (from, to) = (day(from)?, day(to)?);
                let mut d = from;
                loop {
                    set |= 1 << d.index();
                    if d == to {
                        break;
                    }
                    d = d.succ();
                }
            } else {
                set |= 1 << day(item)?.index();
            }
        }
        Ok(Days(set))
    }
}

/// A window's start and end minute ([`Rule::start`], [`Rule::end`]).
struct Hours(u16, u16);

impl Hours {
    fn parse(text: &str) -> Result<Hours, String> {
        let t = text.trim();
        if t == "*" {
            return Ok(Hours(0, MINUTES_PER_DAY));
        }
        let usage =
            || format!("bad hours {text:?}: write HH:MM-HH:MM (such as 08:00-17:00 or 22:00-06:00) or *");
        let (from, to) = t.split_once('-').ok_or_else(usage)?;
        let clock = |s: &str, may_be_24: bool| -> Result<u16, String> {
            let (h, m) = s.trim().split_once(':').ok_or_else(usage)?;
            let number = |d: &str, max_len: usize| {
                (!d.is_empty() && d.len() <= max_len && d.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| d.parse::<u16>().expect("digits"))
            };
            let (h, m) = match (number(h, 2), (m.len() == 2).then(|| number(m, 2)).flatten()) {
                (Some(h), Some(m)) => (h, m),
                _ => return Err(usage()),
            };
            if m > 59 || h > 24 || (h == 24 && (m != 0 || !may_be_24)) {
                return Err(format!(
                    "bad hours {text:?}: {} is not a time of day (00:00 to 23:59; 24:00 may end a window)",
                    s.trim()
                ));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (clock(from, false)?, clock(to, true)?);
        if start == end {
            return Err(format!(
                "bad hours {text:?}: the window is empty; write * for the whole day"
            ));
        }
        Ok(Hours(start, end))
    }
}

/// The bit of a priority named in a `priorities` list.
fn priority_bit_named(text: &str) -> Result<u8, String> {
    match Priority::parse(text) {
        Ok(Priority::Foreground) => Err(format!(
            "priority {text:?}: FOREGROUND jobs are never limited by the schedule; name high, normal or low"
        )),
        Ok(p) => Ok(priority_bit(p)),
        Err(_) => Err(format!("unknown priority {text:?}: one of high, normal, low")),
    }
}

/// A rule's rate.
struct Rate(Limit);

/// Deserializes a string and checks it with `parse`.
fn from_str_with<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, Days::parse)
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, Hours::parse)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Rate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate: \"512K\", \"10M\", \"1.5G\", a whole number of bytes per second, 0 to block, or \"off\"")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Rate, E> {
                let n = u64::try_from(n)
                    .map_err(|_| E::custom(format!("bad rate {n}: a rate is not negative")))?;
                Ok(Rate(if n == 0 { Limit::Blocked } else { Limit::Rate(n) }))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Rate, E> {
                Ok(Rate(if n == 0 { Limit::Blocked } else { Limit::Rate(n) }))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Rate, E> {
                Err(E::custom(format!(
                    "bad rate {n}: write a fraction as a string with its unit (\"1.5M\"), or whole bytes per second"
                )))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Rate, E> {
                Limit::parse(s).map(Rate).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}
