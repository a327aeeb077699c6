//! The bandwidth schedule (`network.md`, "The bandwidth schedule"): every
//! rule form, overlaps, maintenance first, windows across midnight,
//! `next_change_after`, a rate of 0 across its boundary on an injected
//! clock, malformed files refused at their line and column, and a reload
//! that keeps the old schedule when the new file is refused. Pure code.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bits_core::state::next_state;
use bits_core::{Event, Hresult, JobState, Priority};
use bits_scheduler::schedule::{
    blocked_error, config_path_from, until_next_minute, BACKGROUND_PRIORITIES, MINUTES_PER_WEEK,
};
use bits_scheduler::{
    BlockChange, BlockWatch, Limit, LocalTime, Schedule, ScheduleError, ScheduleHolder, Weekday,
};
use Priority::{Foreground, High, Low, Normal};
use Weekday::{Fri, Mon, Sat, Sun, Thu, Tue, Wed};

const K: u64 = 1024;
const M: u64 = 1024 * 1024;
const G: u64 = 1024 * 1024 * 1024;

fn at(day: Weekday, hour: u8, minute: u8) -> LocalTime {
    LocalTime::new(day, hour, minute)
}

fn schedule(text: &str) -> Schedule {
    Schedule::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// One bandwidth rule with `fields` (and its rate) as the only rule.
fn one_rule(fields: &str) -> Schedule {
    schedule(&format!("[[bandwidth.rule]]\n{fields}\n"))
}

/// The days a one-rule schedule (whole days) limits NORMAL on.
fn days_of(days: &str) -> Vec<Weekday> {
    let s = one_rule(&format!("days = {days:?}\nrate = \"1M\""));
    Weekday::ALL
        .into_iter()
        .filter(|d| s.limit_at(at(*d, 12, 0), Normal) == Limit::Rate(M))
        .collect()
}

#[test]
fn days_single_range_list_wrapping_and_star() {
    assert_eq!(days_of("Sat"), [Sat]);
    assert_eq!(days_of("Mon-Fri"), [Mon, Tue, Wed, Thu, Fri]);
    assert_eq!(days_of("Mon,Wed"), [Mon, Wed]);
    assert_eq!(days_of("Mon-Wed, Sat"), [Mon, Tue, Wed, Sat]);
    assert_eq!(days_of("Fri-Mon"), [Mon, Fri, Sat, Sun]);
    assert_eq!(days_of("Sun-Sun"), [Sun]);
    assert_eq!(days_of("*"), Weekday::ALL);
    assert_eq!(days_of("monday,TUESDAY,wed"), [Mon, Tue, Wed]);
    // Left out: every day.
    let s = one_rule("rate = \"1M\"");
    for d in Weekday::ALL {
        assert_eq!(s.limit_at(at(d, 0, 0), Low), Limit::Rate(M), "{d}");
    }
}

#[test]
fn hours_start_included_end_excluded_and_all_day() {
    let s = one_rule("days = \"Mon\"\nhours = \"08:00-17:30\"\nrate = \"1M\"");
    assert_eq!(s.limit_at(at(Mon, 7, 59), Normal), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Mon, 8, 0), Normal), Limit::Rate(M));
    assert_eq!(s.limit_at(at(Mon, 17, 29), Normal), Limit::Rate(M));
    assert_eq!(s.limit_at(at(Mon, 17, 30), Normal), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Tue, 9, 0), Normal), Limit::Unlimited);

    let s = one_rule("hours = \"8:05-24:00\"\nrate = \"1M\"");
    assert_eq!(s.limit_at(at(Tue, 8, 4), High), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Tue, 8, 5), High), Limit::Rate(M));
    assert_eq!(s.limit_at(at(Tue, 23, 59), High), Limit::Rate(M));
    assert_eq!(s.limit_at(at(Wed, 0, 0), High), Limit::Unlimited);

    for hours in ["hours = \"*\"\n", ""] {
        let s = one_rule(&format!("days = \"Wed\"\n{hours}rate = \"1M\""));
        assert_eq!(s.limit_at(at(Wed, 0, 0), Low), Limit::Rate(M));
        assert_eq!(s.limit_at(at(Wed, 23, 59), Low), Limit::Rate(M));
        assert_eq!(s.limit_at(at(Thu, 0, 0), Low), Limit::Unlimited);
        assert_eq!(s.limit_at(at(Tue, 23, 59), Low), Limit::Unlimited);
    }
}

#[test]
fn a_window_across_midnight_belongs_to_the_day_it_starts_on() {
    let s = one_rule("days = \"Fri\"\nhours = \"22:00-06:00\"\nrate = 0");
    assert_eq!(s.limit_at(at(Fri, 21, 59), Normal), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Fri, 22, 0), Normal), Limit::Blocked);
    assert_eq!(s.limit_at(at(Fri, 23, 59), Normal), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sat, 0, 0), Normal), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sat, 2, 0), Normal), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sat, 5, 59), Normal), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sat, 6, 0), Normal), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Sat, 22, 0), Normal), Limit::Unlimited);
    // Friday morning belongs to Thursday's window, which this rule has not.
    assert_eq!(s.limit_at(at(Fri, 2, 0), Normal), Limit::Unlimited);

    // Sunday night into Monday: across the end of the week.
    let s = one_rule("days = \"Sun\"\nhours = \"23:00-01:00\"\nrate = \"64K\"");
    assert_eq!(s.limit_at(at(Sun, 23, 30), Low), Limit::Rate(64 * K));
    assert_eq!(s.limit_at(at(Mon, 0, 30), Low), Limit::Rate(64 * K));
    assert_eq!(s.limit_at(at(Mon, 1, 0), Low), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Sun, 0, 30), Low), Limit::Unlimited);
}

#[test]
fn priorities_subset_and_default_every_background_priority() {
    let s = one_rule("priorities = [\"low\", \"Normal\"]\nrate = \"256K\"");
    assert_eq!(s.limit_at(at(Mon, 10, 0), Low), Limit::Rate(256 * K));
    assert_eq!(s.limit_at(at(Mon, 10, 0), Normal), Limit::Rate(256 * K));
    assert_eq!(s.limit_at(at(Mon, 10, 0), High), Limit::Unlimited);

    let s = one_rule("priorities = [\"HIGH\"]\nrate = \"256K\"");
    assert_eq!(s.limit_at(at(Mon, 10, 0), High), Limit::Rate(256 * K));
    assert_eq!(s.limit_at(at(Mon, 10, 0), Low), Limit::Unlimited);

    let s = one_rule("rate = \"256K\"");
    for p in BACKGROUND_PRIORITIES {
        assert_eq!(s.limit_at(at(Mon, 10, 0), p), Limit::Rate(256 * K), "{p:?}");
    }
}

#[test]
fn rates_in_the_file_k_m_g_decimals_zero_off_and_whole_bytes() {
    for (rate, limit) in [
        ("\"512K\"", Limit::Rate(512 * K)),
        ("\"512k\"", Limit::Rate(512 * K)),
        ("\"10M\"", Limit::Rate(10 * M)),
        ("\"1.5G\"", Limit::Rate(3 * G / 2)),
        ("\"0.5M\"", Limit::Rate(512 * K)),
        ("\"2g\"", Limit::Rate(2 * G)),
        ("\"1500\"", Limit::Rate(1500)),
        ("1500", Limit::Rate(1500)),
        ("0", Limit::Blocked),
        ("\"0\"", Limit::Blocked),
        ("\"0K\"", Limit::Blocked),
        ("\"off\"", Limit::Unlimited),
        ("\"OFF\"", Limit::Unlimited),
    ] {
        let s = one_rule(&format!("rate = {rate}"));
        assert_eq!(s.limit_at(at(Thu, 12, 0), Normal), limit, "rate = {rate}");
    }
}

#[test]
fn limit_parse_rounds_down_and_refuses_what_is_not_a_rate() {
    assert_eq!(Limit::parse("1.5K"), Ok(Limit::Rate(1536)));
    assert_eq!(Limit::parse("1.0001K"), Ok(Limit::Rate(1024)));
    assert_eq!(Limit::parse("0.001K"), Ok(Limit::Rate(1)));
    assert_eq!(Limit::parse(" 10M "), Ok(Limit::Rate(10 * M)));
    assert_eq!(Limit::parse("0.0"), Ok(Limit::Blocked));
    assert_eq!(Limit::parse("16777215G"), Ok(Limit::Rate(16_777_215 * G)));
    for bad in [
        "",
        "K",
        "-1",
        "x",
        "12X",
        "1.5.2M",
        ".5M",
        "5.M",
        "1 M",
        "1KB",
        "0.0001K",
        "99999999999999999999",
        "17179869184G",
        "1.0000000001K",
    ] {
        let e = Limit::parse(bad).unwrap_err();
        assert!(e.to_string().starts_with("bad rate"), "{bad:?}: {e}");
    }
    // Bytes are whole (rounded down), but what is not 0 never blocks.
    assert_eq!(Limit::parse("1.5"), Ok(Limit::Rate(1)));
    assert!(Limit::parse("0.0001K")
        .unwrap_err()
        .to_string()
        .contains("write 0 to block"));

    // What it prints, it reads back.
    for l in [
        Limit::Unlimited,
        Limit::Blocked,
        Limit::Rate(512 * K),
        Limit::Rate(10 * M),
        Limit::Rate(3 * G),
        Limit::Rate(1536),
        Limit::Rate(1),
    ] {
        assert_eq!(Limit::parse(&l.to_string()), Ok(l), "{l}");
    }
    assert_eq!(Limit::Rate(512 * K).to_string(), "512K");
    assert_eq!(Limit::Rate(1536).to_string(), "1536");
}

#[test]
fn the_lower_limit_wins_when_a_job_cap_meets_the_schedule() {
    assert_eq!(Limit::Rate(M).min(Limit::Unlimited), Limit::Rate(M));
    assert_eq!(Limit::Rate(M).min(Limit::Rate(K)), Limit::Rate(K));
    assert_eq!(Limit::Rate(K).min(Limit::Blocked), Limit::Blocked);
    assert_eq!(Limit::Unlimited.min(Limit::Unlimited), Limit::Unlimited);
    assert_eq!(Limit::Blocked.bytes_per_second(), Some(0));
    assert_eq!(Limit::Unlimited.bytes_per_second(), None);
}

#[test]
fn overlapping_rules_the_first_that_matches_wins() {
    let s = schedule(
        r#"
[[bandwidth.rule]]
days = "Mon-Fri"
hours = "12:00-13:00"
priorities = ["low"]
rate = 0

[[bandwidth.rule]]
days = "Mon-Fri"
hours = "08:00-17:00"
rate = "1M"

[[bandwidth.rule]]
days = "*"
rate = "10M"
"#,
    );
    assert_eq!(s.limit_at(at(Wed, 12, 30), Low), Limit::Blocked);
    // The first rule names only LOW: NORMAL falls to the second.
    assert_eq!(s.limit_at(at(Wed, 12, 30), Normal), Limit::Rate(M));
    assert_eq!(s.limit_at(at(Wed, 9, 0), Low), Limit::Rate(M));
    assert_eq!(s.limit_at(at(Wed, 18, 0), Low), Limit::Rate(10 * M));
    assert_eq!(s.limit_at(at(Sat, 12, 30), Low), Limit::Rate(10 * M));
}

#[test]
fn maintenance_rules_are_matched_before_bandwidth_rules() {
    // Written after the bandwidth rules, still matched first.
    let s = schedule(
        r#"
[[bandwidth.rule]]
days = "*"
rate = 0

[[maintenance.rule]]
days = "Sat"
hours = "02:00-04:00"
priorities = ["high", "normal"]
rate = "off"

[[maintenance.rule]]
days = "Sat"
hours = "02:00-04:00"
rate = "5M"
"#,
    );
    assert_eq!(s.limit_at(at(Sat, 3, 0), High), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Sat, 3, 0), Normal), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Sat, 3, 0), Low), Limit::Rate(5 * M));
    assert_eq!(s.limit_at(at(Sat, 4, 0), High), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sun, 3, 0), Normal), Limit::Blocked);

    // Inline tables are the same lists.
    let inline = schedule(
        r#"
bandwidth.rule = [{ days = "*", rate = 0 }]
maintenance.rule = [
  { days = "Sat", hours = "02:00-04:00", priorities = ["high", "normal"], rate = "off" },
  { days = "Sat", hours = "02:00-04:00", rate = "5M" },
]
"#,
    );
    assert_eq!(inline, s);
}

#[test]
fn foreground_is_never_limited() {
    let s = schedule("[[maintenance.rule]]\nrate = 0\n[[bandwidth.rule]]\nrate = \"1K\"\n");
    for t in [at(Mon, 0, 0), at(Wed, 12, 0), at(Sun, 23, 59)] {
        assert_eq!(s.limit_at(t, Foreground), Limit::Unlimited);
        assert_eq!(s.limit_at(t, Low), Limit::Blocked);
    }
}

#[test]
fn no_rule_is_unlimited() {
    for text in [
        "",
        "# nothing\n",
        "[bandwidth]\n[maintenance]\n",
        "bandwidth.rule = []\n",
    ] {
        let s = schedule(text);
        assert!(s.is_empty(), "{text:?}");
        assert_eq!(s, Schedule::default());
        for p in BACKGROUND_PRIORITIES {
            assert_eq!(s.limit_at(at(Tue, 10, 0), p), Limit::Unlimited);
        }
        assert_eq!(s.next_change_after(at(Tue, 10, 0)), None);
    }
    let s = one_rule("days = \"Sat\"\nrate = \"1M\"");
    assert_eq!(s.limit_at(at(Fri, 12, 0), Normal), Limit::Unlimited);
}

#[test]
fn next_change_after_lands_on_the_boundaries() {
    let s = one_rule("days = \"Mon-Fri\"\nhours = \"08:00-17:00\"\nrate = \"512K\"");
    assert_eq!(s.next_change_after(at(Mon, 7, 59)), Some(1));
    assert_eq!(s.next_change_after(at(Mon, 0, 0)), Some(8 * 60));
    assert_eq!(s.next_change_after(at(Mon, 8, 0)), Some(9 * 60));
    assert_eq!(s.next_change_after(at(Mon, 16, 59)), Some(1));
    assert_eq!(s.next_change_after(at(Mon, 17, 0)), Some(15 * 60));
    // Friday evening: next Monday morning, over the weekend and the week's end.
    assert_eq!(s.next_change_after(at(Fri, 17, 0)), Some((2 * 24 + 15) * 60));
    assert_eq!(s.next_change_after(at(Sun, 23, 59)), Some(8 * 60 + 1));

    // Across midnight: the window ends the next morning.
    let s = one_rule("days = \"Fri\"\nhours = \"22:00-06:00\"\nrate = 0");
    assert_eq!(s.next_change_after(at(Fri, 23, 0)), Some(7 * 60));
    assert_eq!(s.next_change_after(at(Sat, 5, 59)), Some(1));
    assert_eq!(
        s.next_change_after(at(Sat, 6, 0)),
        Some(MINUTES_PER_WEEK - 8 * 60)
    );

    // Two rules back to back with the same rate: no change at 12:00.
    let s = schedule(
        "[[bandwidth.rule]]\nhours = \"08:00-12:00\"\nrate = \"1M\"\n\
         [[bandwidth.rule]]\nhours = \"12:00-17:00\"\nrate = \"1M\"\n",
    );
    assert_eq!(s.next_change_after(at(Tue, 8, 0)), Some(9 * 60));

    // A change for one priority is a change.
    let s = one_rule("hours = \"10:00-11:00\"\npriorities = [\"low\"]\nrate = 0");
    assert_eq!(s.next_change_after(at(Tue, 9, 0)), Some(60));

    // Rules that hold all week never change.
    let s = one_rule("days = \"*\"\nhours = \"*\"\nrate = \"1M\"");
    assert_eq!(s.next_change_after(at(Tue, 9, 0)), None);
    let s = one_rule("hours = \"00:00-24:00\"\nrate = 0");
    assert_eq!(s.next_change_after(at(Tue, 9, 0)), None);

    // Whatever the time, the limit holds until then and changes there.
    let s = schedule(
        "[[maintenance.rule]]\ndays = \"Sat\"\nhours = \"23:00-01:30\"\npriorities = [\"high\"]\nrate = \"off\"\n\
         [[bandwidth.rule]]\ndays = \"Fri-Mon\"\nhours = \"20:00-07:15\"\nrate = 0\n\
         [[bandwidth.rule]]\ndays = \"Tue,Thu\"\nrate = \"3M\"\n",
    );
    let limits = |t: LocalTime| BACKGROUND_PRIORITIES.map(|p| s.limit_at(t, p));
    for start in (0..MINUTES_PER_WEEK).step_by(7) {
        let now = LocalTime::from_minute_of_week(start);
        let n = s.next_change_after(now).expect("this schedule changes");
        for k in 1..n {
            assert_eq!(limits(now.plus_minutes(k)), limits(now), "{now} + {k}");
        }
        assert_ne!(limits(now.plus_minutes(n)), limits(now), "{now} + {n}");
    }
}

#[test]
fn an_injected_clock_across_a_zero_window_blocks_then_releases() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[[bandwidth.rule]]\ndays = \"Mon-Fri\"\nhours = \"09:00-18:00\"\nrate = 0\n\
          [[bandwidth.rule]]\ndays = \"Mon-Fri\"\nhours = \"18:00-20:00\"\npriorities = [\"low\"]\nrate = \"256K\"\n",
    )
    .unwrap();
    let holder = ScheduleHolder::load(file.path()).unwrap();
    let now = Cell::new(at(Fri, 8, 59));
    let clock = || now.get();
    let mut watch = BlockWatch::new();
    let mut job = JobState::Queued;

    // Before the window: nothing blocked, the job stays QUEUED.
    assert_eq!(holder.limit_now(&clock, Low), Limit::Unlimited);
    assert_eq!(watch.update(holder.schedule(), clock()), []);

    // 09:00: every background priority blocked; the job goes to
    // TRANSIENT_ERROR with BG_E_BLOCKED_BY_POLICY.
    now.set(at(Fri, 9, 0));
    assert_eq!(holder.limit_now(&clock, Low), Limit::Blocked);
    assert_eq!(holder.limit_now(&clock, Foreground), Limit::Unlimited);
    let changes = watch.update(holder.schedule(), clock());
    assert_eq!(
        changes,
        [
            BlockChange::Blocked(High),
            BlockChange::Blocked(Normal),
            BlockChange::Blocked(Low)
        ]
    );
    let error = blocked_error();
    assert_eq!(error.hresult(), Hresult(0x8020_003E));
    assert_eq!(error.hresult(), Hresult::BG_E_BLOCKED_BY_POLICY);
    assert!(error.is_transient());
    job = next_state(job, changes[2].event());
    assert_eq!(job, JobState::TransientError);
    assert!(watch.is_blocked(Low));
    let until = holder.schedule().next_change_after(clock());
    assert_eq!(until, Some(9 * 60));

    // A minute later and just before the end: still blocked, no new edge.
    for t in [at(Fri, 9, 1), at(Fri, 17, 59)] {
        now.set(t);
        assert_eq!(holder.limit_now(&clock, Low), Limit::Blocked);
        assert_eq!(watch.update(holder.schedule(), clock()), []);
    }

    // 18:00, the boundary: released; LOW gets its rate, the job is QUEUED.
    now.set(at(Fri, 9, 0).plus_minutes(until.unwrap()));
    assert_eq!(clock(), at(Fri, 18, 0));
    assert_eq!(holder.limit_now(&clock, Low), Limit::Rate(256 * K));
    assert_eq!(holder.limit_now(&clock, High), Limit::Unlimited);
    let changes = watch.update(holder.schedule(), clock());
    assert_eq!(
        changes,
        [
            BlockChange::Released(High),
            BlockChange::Released(Normal),
            BlockChange::Released(Low)
        ]
    );
    assert_eq!(changes[2].priority(), Low);
    assert_eq!(changes[2].event(), Event::RetryTimer);
    job = next_state(job, changes[2].event());
    assert_eq!(job, JobState::Queued);
    assert!(!watch.is_blocked(Low));
}

#[test]
fn a_blocked_priority_is_released_by_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[[bandwidth.rule]]\npriorities = [\"low\"]\nrate = 0\n").unwrap();
    let mut holder = ScheduleHolder::load(&path).unwrap();
    let mut watch = BlockWatch::new();
    let t = at(Tue, 12, 0);
    assert_eq!(watch.update(holder.schedule(), t), [BlockChange::Blocked(Low)]);
    std::fs::write(
        &path,
        "[[bandwidth.rule]]\npriorities = [\"low\"]\nrate = \"1M\"\n",
    )
    .unwrap();
    holder.reload(&path).unwrap();
    assert_eq!(watch.update(holder.schedule(), t), [BlockChange::Released(Low)]);
}

/// The error of `text`, as `line:column` and message.
fn refused(text: &str) -> (String, String) {
    match Schedule::parse(text) {
        Ok(s) => panic!("accepted: {s:?}\n{text}"),
        Err(e) => (
            e.position().map(|p| p.to_string()).unwrap_or_default(),
            e.message(),
        ),
    }
}

/// Checks every case, then reports every mismatch at once.
#[derive(Default)]
struct Refusals(Vec<String>);

impl Refusals {
    fn check(&mut self, text: &str, position: &str, message: &str) {
        let (at, what) = refused(text);
        if at != position || !what.contains(message) {
            self.0.push(format!(
                "{text:?}\n  got {at} {what:?}\n  want {position} containing {message:?}"
            ));
        }
    }
}

impl Drop for Refusals {
    fn drop(&mut self) {
        if !self.0.is_empty() && !std::thread::panicking() {
            panic!("{}", self.0.join("\n"));
        }
    }
}

#[test]
fn malformed_files_are_refused_at_their_line_and_column() {
    let mut r = Refusals::default();
    let rule = "[[bandwidth.rule]]\n";
    // TOML syntax.
    r.check(
        &format!("{rule}days = \"Mon-Fri\"\nrate = \"512K\n"),
        "3:13",
        "invalid basic string",
    );
    r.check(
        &format!("{rule}rate = \"1M\"\nrate = \"2M\"\n"),
        "3:1",
        "duplicate key",
    );
    r.check("[[bandwidth.rule]\nrate = 0\n", "1:18", "unclosed array table");
    // A bad day, with the value's position.
    r.check(
        &format!("{rule}days = \"Mon-Fry\"\nrate = \"1M\"\n"),
        "2:8",
        "bad day \"Fry\"",
    );
    r.check(
        &format!("{rule}days = \"Mon,,Tue\"\nrate = \"1M\"\n"),
        "2:8",
        "bad days",
    );
    r.check(
        &format!("{rule}days = 5\nrate = \"1M\"\n"),
        "2:8",
        "expected a string",
    );
    // A bad hour range.
    r.check(
        &format!("{rule}days = \"Mon\"\nhours = \"08:00-25:00\"\nrate = \"1M\"\n"),
        "3:9",
        "25:00 is not a time of day",
    );
    r.check(
        &format!("{rule}hours = \"8-17\"\nrate = \"1M\"\n"),
        "2:9",
        "write HH:MM-HH:MM",
    );
    r.check(
        &format!("{rule}hours = \"24:00-06:00\"\nrate = \"1M\"\n"),
        "2:9",
        "not a time of day",
    );
    r.check(
        &format!("{rule}hours = \"08:00-08:00\"\nrate = \"1M\"\n"),
        "2:9",
        "empty",
    );
    r.check(
        &format!("{rule}hours = \"08:60-09:00\"\nrate = \"1M\"\n"),
        "2:9",
        "not a time of day",
    );
    // A bad rate.
    r.check(&format!("{rule}rate = \"12X\"\n"), "2:8", "bad rate \"12X\"");
    r.check(&format!("{rule}rate = -5\n"), "2:8", "not negative");
    r.check(&format!("{rule}rate = 1.5\n"), "2:8", "as a string");
    // An unknown or foreground priority, at the element; an empty list.
    r.check(
        &format!("{rule}priorities = [\"low\", \"urgent\"]\nrate = \"1M\"\n"),
        "2:22",
        "unknown priority \"urgent\"",
    );
    r.check(
        &format!("{rule}priorities = [\"foreground\"]\nrate = \"1M\"\n"),
        "2:15",
        "never limited",
    );
    r.check(
        &format!("{rule}priorities = []\nrate = \"1M\"\n"),
        "2:14",
        "empty",
    );
    // Unknown keys: in a rule, in a section, a section.
    r.check(
        &format!("{rule}rate = \"1M\"\nspeed = \"1M\"\n"),
        "3:1",
        "unknown field `speed`",
    );
    r.check("[bandwidth]\nrules = []\n", "2:1", "unknown field `rules`");
    r.check("# the schedule\n[bandwith]\n", "2:2", "unknown field `bandwith`");
    // A rule without a rate.
    r.check(
        "\n[[maintenance.rule]]\ndays = \"Sat\"\n",
        "2:1",
        "missing field `rate`",
    );
    // Columns count characters, not bytes.
    r.check(
        &format!("{rule}# ééé\ndays = \"Mön\"\nrate = 0\n"),
        "3:8",
        "bad day",
    );
}

#[test]
fn load_missing_file_is_empty_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config.toml");
    assert_eq!(Schedule::load(&missing).unwrap(), Schedule::default());

    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[bandwidth.rule]]\ndays = \"Mon-Fry\"\nrate = \"1M\"\n").unwrap();
    let e = Schedule::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:8: bad day \"Fry\" in days \"Mon-Fry\": a day is Mon, Tue, Wed, Thu, Fri, Sat or Sun",
            path.display()
        )
    );
    assert!(matches!(e, ScheduleError::Invalid { .. }));
    let b = e.to_bits_error();
    assert_eq!(b.hresult(), Hresult::E_INVALIDARG);
    assert!(b.to_string().contains(":2:8: bad day"), "{b}");

    std::fs::write(&path, b"# caf\xe9\nrate = 0\n").unwrap();
    let e = Schedule::load(&path).unwrap_err();
    assert_eq!(e.position().unwrap().to_string(), "1:6");
    assert!(e.to_string().ends_with(":1:6: not UTF-8 text"), "{e}");

    // A folder is not a file: an I/O error, no position.
    let e = Schedule::load(dir.path()).unwrap_err();
    assert!(matches!(e, ScheduleError::Io { .. }), "{e:?}");
    assert_eq!(e.position(), None);
}

#[test]
fn reload_keeps_the_old_schedule_when_the_new_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[[bandwidth.rule]]\nrate = \"1M\"\n").unwrap();
    let mut holder = ScheduleHolder::load(&path).unwrap();
    let t = at(Mon, 10, 0);
    assert_eq!(holder.schedule().limit_at(t, Normal), Limit::Rate(M));

    // A malformed file: refused with its position, the old schedule stays.
    std::fs::write(&path, "[[bandwidth.rule]]\nrate = \"2M\"\nhours = \"9-5\"\n").unwrap();
    let before = holder.clone();
    let e = holder.reload(&path).unwrap_err();
    assert_eq!(e.position().unwrap().to_string(), "3:9");
    assert_eq!(holder, before);
    assert_eq!(holder.schedule().limit_at(t, Normal), Limit::Rate(M));

    // An unreadable one too.
    let e = holder.reload(dir.path()).unwrap_err();
    assert!(matches!(e, ScheduleError::Io { .. }));
    assert_eq!(holder.schedule().limit_at(t, Normal), Limit::Rate(M));

    // A good file replaces it.
    std::fs::write(&path, "[[bandwidth.rule]]\nrate = \"2M\"\n").unwrap();
    let s = holder.reload(&path).unwrap();
    assert_eq!(s.limit_at(t, Normal), Limit::Rate(2 * M));
    assert_eq!(holder.schedule().limit_at(t, Normal), Limit::Rate(2 * M));

    // A removed file is the empty schedule, as at start.
    std::fs::remove_file(&path).unwrap();
    holder.reload(&path).unwrap();
    assert!(holder.schedule().is_empty());

    // A refused file at start: no holder (the daemon exits 2).
    std::fs::write(&path, "rate = 0\n").unwrap();
    assert!(ScheduleHolder::load(&path).is_err());
}

/// The full example of `docs/config.md` parses and means what the page says.
#[test]
fn the_example_of_docs_config_md() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md")).unwrap();
    let example = page
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block");
    let s = schedule(example);
    assert_eq!(s.limit_at(at(Wed, 10, 0), Normal), Limit::Rate(512 * K));
    assert_eq!(s.limit_at(at(Wed, 10, 0), High), Limit::Rate(512 * K));
    assert_eq!(s.limit_at(at(Wed, 10, 0), Low), Limit::Blocked);
    assert_eq!(s.next_change_after(at(Wed, 10, 0)), Some(7 * 60));
    assert_eq!(s.limit_at(at(Fri, 23, 0), High), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sat, 2, 0), High), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Sat, 2, 0), Normal), Limit::Unlimited);
    assert_eq!(s.limit_at(at(Sat, 2, 0), Low), Limit::Rate(20 * M));
    assert_eq!(s.limit_at(at(Sat, 5, 30), Normal), Limit::Blocked);
    assert_eq!(s.limit_at(at(Sat, 6, 0), Normal), Limit::Rate(3 * G / 2));
    assert_eq!(s.limit_at(at(Sun, 3, 0), Low), Limit::Rate(20 * M));
    assert_eq!(s.limit_at(at(Wed, 10, 0), Foreground), Limit::Unlimited);
}

#[test]
fn local_time_arithmetic_over_the_week() {
    let t = at(Sun, 23, 59);
    assert_eq!(t.minute_of_week(), MINUTES_PER_WEEK - 1);
    assert_eq!(t.plus_minutes(1), at(Mon, 0, 0));
    assert_eq!(t.plus_minutes(MINUTES_PER_WEEK), t);
    assert_eq!(at(Fri, 22, 0).plus_minutes(4 * 60), at(Sat, 2, 0));
    assert_eq!(LocalTime::from_minute_of_week(24 * 60 + 61), at(Tue, 1, 1));
    assert_eq!(at(Fri, 8, 5).to_string(), "Fri 08:05");
    assert_eq!(Weekday::parse("Thursday"), Some(Thu));
    assert_eq!(Weekday::parse("thu"), Some(Thu));
    assert_eq!(Weekday::parse("th"), None);
}

#[test]
fn until_next_minute_is_at_most_a_minute() {
    let t = UNIX_EPOCH + Duration::from_millis(1_704_425_400_000 + 12_500);
    assert_eq!(until_next_minute(t), Duration::from_millis(47_500));
    let t = UNIX_EPOCH + Duration::from_secs(1_704_425_400);
    assert_eq!(until_next_minute(t), Duration::from_secs(60));
}

#[test]
fn default_config_path_follows_xdg() {
    let p = |x: Option<&str>, h: Option<&str>| config_path_from(x.map(Into::into), h.map(Into::into));
    assert_eq!(
        p(Some("/x/conf"), Some("/home/u")).unwrap(),
        Path::new("/x/conf/bits/config.toml")
    );
    assert_eq!(
        p(None, Some("/home/u")).unwrap(),
        Path::new("/home/u/.config/bits/config.toml")
    );
    // Relative or empty XDG_CONFIG_HOME is ignored.
    assert_eq!(
        p(Some("conf"), Some("/home/u")).unwrap(),
        Path::new("/home/u/.config/bits/config.toml")
    );
    assert_eq!(
        p(Some(""), Some("/home/u")).unwrap(),
        Path::new("/home/u/.config/bits/config.toml")
    );
    assert_eq!(p(None, None), None);
}

/// The environment variable that makes [`local_time_in_tz_child`] check
/// instead of pass: set by [`local_time_follows_the_time_zone`] in the
/// child processes it starts, each with its own `TZ`.
const CHILD: &str = "BITS_SCHEDULE_TZ_CHILD";

/// `localtime_r` reads `TZ` once per process, so each zone is checked in a
/// child process of this test binary (POSIX `TZ` strings: no tz database
/// needed).
#[test]
fn local_time_follows_the_time_zone() {
    for tz in ["UTC0", "EST5EDT,M3.2.0,M11.1.0"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "local_time_in_tz_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("TZ", tz)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "TZ={tz}:\n{log}");
        assert!(
            log.contains("checked TZ="),
            "the child checked nothing for TZ={tz}:\n{log}"
        );
    }
}

/// Run by [`local_time_follows_the_time_zone`] in a child process; passes
/// at once anywhere else.
#[test]
fn local_time_in_tz_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let tz = std::env::var("TZ").unwrap();
    let t = |secs: u64| LocalTime::from_system_time(UNIX_EPOCH + Duration::from_secs(secs));
    // 2024-01-05 03:30 UTC (a Friday), 2024-07-05 03:30 UTC, and
    // 2024-03-10 06:30 / 07:30 UTC, either side of the US switch to summer time.
    let (winter, summer, before_switch, after_switch) = (
        t(1_704_425_400),
        t(1_720_150_200),
        t(1_710_055_800 - 3600),
        t(1_710_055_800),
    );
    match tz.as_str() {
        "UTC0" => {
            assert_eq!(winter, at(Fri, 3, 30));
            assert_eq!(summer, at(Fri, 3, 30));
            assert_eq!(after_switch, at(Sun, 7, 30));
            assert_eq!(
                LocalTime::from_system_time(UNIX_EPOCH - Duration::from_millis(500)),
                at(Wed, 23, 59)
            );
        }
        _ => {
            assert_eq!(winter, at(Thu, 22, 30));
            assert_eq!(summer, at(Thu, 23, 30));
            assert_eq!(before_switch, at(Sun, 1, 30));
            assert_eq!(after_switch, at(Sun, 3, 30));
        }
    }
    let now = SystemTime::now();
    let _ = LocalTime::from_system_time(now);
    println!("checked TZ={tz}");
}
