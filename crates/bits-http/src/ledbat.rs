//! Yielding to other traffic: the receiver-side LEDBAT controller (rLEDBAT,
//! RFC 9840), as pure code.
//!
//! A background download (HIGH, NORMAL, LOW) limits the window it
//! advertises so that the queueing delay it adds to the path stays near a
//! target (the spec's `network.md`, "Yielding to other traffic"). This module
//! is the arithmetic only: [`LedbatController`] turns RTT samples (what
//! `TCP_INFO` reports) and the bytes received into the window to clamp to
//! (`TCP_WINDOW_CLAMP`); [`Pacer`] turns that window into a read (or write)
//! allowance where the kernel cannot clamp mid-stream
//! ([`supports_midstream_clamp`]). Time is always an argument: nothing here
//! reads a clock, sleeps or touches a socket, so recorded traces drive it in
//! tests. FOREGROUND jobs never build a controller.
//!
//! ## Where the rules come from
//! RFC 9840 runs a LEDBAT-family controller at the receiver and applies its
//! window as the advertised receive window (RFC 9840 §4.1:
//! `RCV.WND = min(RLWND, flow-control window)`), with the queueing delay
//! estimated from round-trip times (§4.2.1) instead of one-way delays, and it
//! uses the LEDBAT++ variant of the controller (draft-irtf-iccrg-ledbat-plus-plus,
//! "LEDBAT++" below) because RTTs are a noisier, self-inflating signal. The
//! pieces:
//!
//! | rule | source |
//! | --- | --- |
//! | window = min(controller, ceiling the caller gives: the flow-control window) | RFC 9840 §4.1 |
//! | target 60 ms, configurable | RFC 9840 (LEDBAT++ target); RFC 6817 §2.5 caps it at 100 ms |
//! | queueing delay = filtered RTT − base RTT | RFC 9840 §4.2.1; RFC 6817 §2.4.2 |
//! | base RTT = minimum over the last 10 minutes, kept as one minimum per minute | RFC 6817 §2.4.2 (`BASE_HISTORY`, §2.5: 10) |
//! | current RTT = minimum of the last 4 samples | RFC 6817 §2.4.2 (`CURRENT_FILTER`); RFC 9840 §4.2.1 (filter RTT noise) |
//! | gain = 1 / min(16, ⌈2·target / base⌉) (≤ 1, as RFC 6817 §2.5 requires) | LEDBAT++ dynamic gain, used by RFC 9840 |
//! | below target: `W += gain · off_target · bytes · MSS / W`, `off_target = (target − delay) / target`, so at most `gain` MSS per RTT | RFC 6817 §2.4.2 |
//! | above target, once per RTT: `W += max(gain·MSS − W·(delay/target − 1), −W/2)` | LEDBAT++ multiplicative decrease, used by RFC 9840 |
//! | a retransmission halves the window, once per RTT | RFC 9840 §4.3 |
//! | slow start `W += gain · bytes`, left when the delay passes ¾ of the target | LEDBAT++ modified slow start |
//! | periodic slowdown: 2 segments for 2 RTTs, slow start back, the next one 9 × its duration later | LEDBAT++ periodic slowdown, used by RFC 9840 |
//! | never below 2 segments | RFC 6817 §2.5 (`MIN_CWND` = 2); network.md |
//!
//! ## Choices
//! - The periodic slowdown is on by default. RFC 9840 measures RTTs, and a
//!   flow that keeps its own queue standing never sees the path's empty RTT
//!   again: without a slowdown its base delay drifts up with its own queue
//!   (and a late-coming background flow never sees an empty path at all),
//!   so it stops yielding. The slowdown costs at most a tenth of the time.
//!   [`LedbatConfig::with_periodic_slowdown`] turns it off (tests, uploads
//!   that are measured another way).
//! - Above the target, a decrease formula that comes out positive (the delay
//!   only just over the target) leaves the window as it is rather than
//!   growing it: the window never grows while the delay is over the target.
//! - The window given is where the clamp should be. RFC 9840 §4.1.1 forbids
//!   shrinking an advertised window; Linux's mid-stream `TCP_WINDOW_CLAMP`
//!   (6.7) does not retract the right edge, it stops advancing it until
//!   the data in flight drains to the new size, which is that rule.
//! - RFC 6817 §2.4.2's cap of the window at what is in flight plus one MSS
//!   (`ALLOWED_INCREASE`) is not applied: the receiver does not see the
//!   sender's flight size, and the clamp is only an upper bound.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The default queueing-delay target: 60 ms (RFC 9840's, from LEDBAT++;
/// RFC 6817 §2.5 allows at most 100 ms).
pub const DEFAULT_TARGET: Duration = Duration::from_millis(60);

/// How many per-minute minimums make the base delay (RFC 6817 §2.5
/// `BASE_HISTORY`): the base is the minimum RTT of the last 10 minutes.
pub const BASE_HISTORY: usize = 10;

/// The length of one base-history bucket (RFC 6817 §2.4.2: one minimum per
/// minute).
pub const BASE_BUCKET: Duration = Duration::from_secs(60);

/// How many recent samples the current-delay filter takes the minimum of
/// (RFC 6817 §2.4.2 `CURRENT_FILTER`).
pub const CURRENT_FILTER: usize = 4;

/// The floor of the window, in segments (RFC 6817 §2.5 `MIN_CWND`; the
/// spec: a background job still moves "a small amount of data").
pub const MIN_WINDOW_SEGMENTS: u64 = 2;

/// The largest divisor of the dynamic gain (LEDBAT++: the gain is
/// `1 / min(16, ⌈2·target / base⌉)`).
pub const MAX_GAIN_DIVISOR: u32 = 16;

/// LEDBAT++'s multiplicative-decrease constant (`Constant` = 1).
const DECREASE_CONSTANT: f64 = 1.0;

/// LEDBAT++: slow start ends when the queueing delay passes this fraction of
/// the target.
const SLOW_START_EXIT: f64 = 0.75;

/// LEDBAT++: a slowdown holds the window at its floor for this many RTTs.
const SLOWDOWN_HOLD_RTTS: u32 = 2;

/// LEDBAT++: the first slowdown starts this many RTTs after the initial slow
/// start ends.
const FIRST_SLOWDOWN_RTTS: u32 = 2;

/// LEDBAT++: the next slowdown starts this many times the last one's
/// duration after it ended (so slowdowns take at most a tenth of the time).
const SLOWDOWN_INTERVAL_MULTIPLIER: u32 = 9;

/// How the controller's gain is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gain {
    /// LEDBAT++'s dynamic gain, `1 / min(16, ⌈2·target / base⌉)`: a path
    /// with a short base RTT (more RTTs per second) grows more slowly per
    /// RTT, so background flows on short and long paths grow alike per
    /// second. RFC 9840 uses it; the default.
    Dynamic,
    /// A fixed gain, clamped to (0, 1] (RFC 6817 §2.5: GAIN MUST be at most
    /// 1; RFC 6817's own default is 1).
    Fixed(f64),
}

/// The settings of a [`LedbatController`].
#[derive(Debug, Clone, PartialEq)]
pub struct LedbatConfig {
    target: Duration,
    gain: Gain,
    mss: u64,
    max_window: u64,
    initial_window: Option<u64>,
    current_filter: usize,
    periodic_slowdown: bool,
}

impl LedbatConfig {
    /// The defaults (target 60 ms, dynamic gain, periodic slowdown, an
    /// initial window of 2 segments) for a connection whose segments are
    /// `mss` bytes and whose flow-control window (the ceiling) is
    /// `max_window` bytes.
    pub fn new(mss: u64, max_window: u64) -> Self {
        Self {
            target: DEFAULT_TARGET,
            gain: Gain::Dynamic,
            mss: mss.max(1),
            max_window,
            initial_window: None,
            current_filter: CURRENT_FILTER,
            periodic_slowdown: true,
        }
    }

    /// A queueing-delay target other than 60 ms (at least 1 ms).
    pub fn with_target(mut self, target: Duration) -> Self {
        self.target = target.max(Duration::from_millis(1));
        self
    }

    /// A gain rule other than [`Gain::Dynamic`].
    pub fn with_gain(mut self, gain: Gain) -> Self {
        self.gain = gain;
        self
    }

    /// The window before any sample (default: 2 segments, RFC 6817 §2.5
    /// `INIT_CWND`); kept within the floor and the ceiling.
    pub fn with_initial_window(mut self, bytes: u64) -> Self {
        self.initial_window = Some(bytes);
        self
    }

    /// How many recent RTT samples the current delay is the minimum of
    /// (default 4; at least 1).
    pub fn with_current_filter(mut self, samples: usize) -> Self {
        self.current_filter = samples.max(1);
        self
    }

    /// Whether to run LEDBAT++'s periodic slowdown (default: yes; see the
    /// module's "Choices").
    pub fn with_periodic_slowdown(mut self, on: bool) -> Self {
        self.periodic_slowdown = on;
        self
    }

    /// The queueing-delay target.
    pub fn target(&self) -> Duration {
        self.target
    }
}

/// Where the controller is in LEDBAT++'s cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Growing by `gain · bytes` up to `ssthresh`. `after_slowdown` tells a
    /// ramp back after a slowdown from the initial slow start.
    SlowStart { after_slowdown: bool },
    /// Growing and shrinking with the queueing delay.
    Avoidance,
    /// A periodic slowdown: the window held at its floor until `until`.
    Slowdown { until: Instant },
}

/// The receiver-side LEDBAT controller of one connection (RFC 9840).
///
/// Feed it every RTT sample with [`on_sample`](Self::on_sample); it answers
/// the window, in bytes, to advertise at most (the value for
/// `TCP_WINDOW_CLAMP`, or for a [`Pacer`]). See the module documentation for
/// the rules and where each comes from.
#[derive(Debug, Clone)]
pub struct LedbatController {
    config: LedbatConfig,
    /// Origin of the per-minute buckets: the first sample's time.
    origin: Option<Instant>,
    /// (minute since `origin`, minimum RTT in that minute), oldest first.
    base_history: VecDeque<(u64, Duration)>,
    /// The most recent RTT samples, oldest first.
    recent: VecDeque<Duration>,
    /// The window, in bytes (fractional: growth per sample can be tiny).
    window: f64,
    /// Where slow start stops.
    ssthresh: f64,
    phase: Phase,
    /// When the window was last decreased (once per RTT).
    last_decrease: Option<Instant>,
    /// When the next periodic slowdown starts.
    next_slowdown: Option<Instant>,
    /// When the current (or last) slowdown started.
    slowdown_started: Option<Instant>,
}

impl LedbatController {
    /// A controller with `config`, in slow start at its initial window.
    pub fn new(config: LedbatConfig) -> Self {
        let initial = config.initial_window.unwrap_or(MIN_WINDOW_SEGMENTS * config.mss);
        let mut controller = Self {
            origin: None,
            base_history: VecDeque::with_capacity(BASE_HISTORY + 1),
            recent: VecDeque::with_capacity(config.current_filter + 1),
            window: initial as f64,
            ssthresh: f64::INFINITY,
            phase: Phase::SlowStart {
                after_slowdown: false,
            },
            last_decrease: None,
            next_slowdown: None,
            slowdown_started: None,
            config,
        };
        controller.clamp();
        controller
    }

    /// One RTT sample taken at `now`, with the bytes received (or, for
    /// uploads, acknowledged) since the previous sample; returns the window
    /// in bytes. A zero `rtt` (no measurement yet) changes nothing.
    pub fn on_sample(&mut self, now: Instant, rtt: Duration, bytes: u64) -> u64 {
        if rtt.is_zero() {
            return self.window();
        }
        self.update_base(now, rtt);
        self.recent.push_back(rtt);
        while self.recent.len() > self.config.current_filter {
            self.recent.pop_front();
        }
        let rtt = self.current_delay().unwrap_or(rtt);
        let queuing = self.queuing_delay().unwrap_or_default();
        let bytes = bytes as f64;

        if let Phase::Slowdown { until } = self.phase {
            // LEDBAT++ periodic slowdown: hold at the floor, then ramp back
            // with slow start to the window from before it.
            if now < until {
                return self.window();
            }
            self.phase = Phase::SlowStart { after_slowdown: true };
        }

        if self.phase == Phase::Avoidance
            && self.config.periodic_slowdown
            && self.next_slowdown.is_some_and(|at| now >= at)
        {
            self.ssthresh = self.window;
            self.window = self.floor();
            self.slowdown_started = Some(now);
            self.next_slowdown = None;
            self.phase = Phase::Slowdown {
                until: now + rtt * SLOWDOWN_HOLD_RTTS,
            };
            return self.window();
        }

        if let Phase::SlowStart { after_slowdown } = self.phase {
            let exit_delay = self.config.target.mul_f64(SLOW_START_EXIT);
            if queuing > exit_delay {
                // LEDBAT++ modified slow start: leave it before the target.
                self.ssthresh = self.window;
                self.leave_slow_start(now, rtt, after_slowdown);
            } else {
                self.window += self.gain() * bytes;
                let ceiling = self.ceiling() as f64;
                if self.window >= self.ssthresh || self.window >= ceiling {
                    self.window = self.window.min(self.ssthresh);
                    self.clamp();
                    self.leave_slow_start(now, rtt, after_slowdown);
                } else {
                    self.clamp();
                }
                return self.window();
            }
        }

        let target = self.config.target.as_secs_f64();
        let delay = queuing.as_secs_f64();
        let mss = self.config.mss as f64;
        if delay <= target {
            // RFC 6817 §2.4.2: cwnd += GAIN * off_target * bytes * MSS / cwnd.
            let off_target = (target - delay) / target;
            self.window += self.gain() * off_target * bytes * mss / self.window;
        } else if self.may_decrease(now, rtt) {
            // LEDBAT++ multiplicative decrease, once per RTT, at most half.
            let over = delay / target - 1.0;
            let change = (self.gain() * mss - DECREASE_CONSTANT * self.window * over).max(-self.window / 2.0);
            if change < 0.0 {
                self.window += change;
                self.last_decrease = Some(now);
            }
        }
        self.clamp();
        self.window()
    }

    /// A retransmission seen at `now` (RFC 9840 §4.3): the window halves,
    /// at most once per RTT, and slow start ends.
    pub fn on_retransmission(&mut self, now: Instant) {
        let rtt = self.current_delay().unwrap_or(self.config.target);
        match self.phase {
            Phase::Slowdown { .. } => {
                // Already at the floor: the ramp back stops at half.
                self.ssthresh = (self.ssthresh / 2.0).max(self.floor());
            }
            Phase::SlowStart { after_slowdown } => {
                self.window /= 2.0;
                self.clamp();
                self.ssthresh = self.window;
                self.last_decrease = Some(now);
                self.leave_slow_start(now, rtt, after_slowdown);
            }
            Phase::Avoidance => {
                if self.may_decrease(now, rtt) {
                    self.window /= 2.0;
                    self.clamp();
                    self.last_decrease = Some(now);
                }
            }
        }
    }

    /// The window to clamp to, in bytes: never below two segments, never
    /// above the ceiling.
    pub fn window(&self) -> u64 {
        self.window.round() as u64
    }

    /// The base delay: the minimum RTT of the last 10 minutes, or `None`
    /// before the first sample.
    pub fn base_delay(&self) -> Option<Duration> {
        self.base_history.iter().map(|&(_, d)| d).min()
    }

    /// The current delay: the minimum of the last few samples.
    pub fn current_delay(&self) -> Option<Duration> {
        self.recent.iter().copied().min()
    }

    /// The queueing delay: current delay minus base delay.
    pub fn queuing_delay(&self) -> Option<Duration> {
        Some(self.current_delay()?.saturating_sub(self.base_delay()?))
    }

    /// The gain in use (see [`Gain`]); with no base delay yet, the smallest
    /// dynamic gain, 1/16.
    pub fn gain(&self) -> f64 {
        match self.config.gain {
            Gain::Fixed(g) if g > 0.0 => g.min(1.0),
            Gain::Fixed(_) => 1.0 / f64::from(MAX_GAIN_DIVISOR),
            Gain::Dynamic => {
                let divisor = match self.base_delay() {
                    Some(base) if !base.is_zero() => {
                        let ratio = 2.0 * self.config.target.as_secs_f64() / base.as_secs_f64();
                        ratio.ceil().clamp(1.0, f64::from(MAX_GAIN_DIVISOR))
                    }
                    _ => f64::from(MAX_GAIN_DIVISOR),
                };
                1.0 / divisor
            }
        }
    }

    /// Whether a periodic slowdown holds the window at its floor now.
    pub fn in_slowdown(&self) -> bool {
        matches!(self.phase, Phase::Slowdown { .. })
    }

    /// Whether the controller is still (or again) in slow start.
    pub fn in_slow_start(&self) -> bool {
        matches!(self.phase, Phase::SlowStart { .. })
    }

    /// When the next periodic slowdown is due, if one is scheduled.
    pub fn next_slowdown(&self) -> Option<Instant> {
        self.next_slowdown
    }

    /// A new ceiling (the flow-control window grew or shrank); the window
    /// follows it down at once.
    pub fn set_max_window(&mut self, bytes: u64) {
        self.config.max_window = bytes;
        self.clamp();
    }

    /// A new segment size (the floor is two of them).
    pub fn set_mss(&mut self, mss: u64) {
        self.config.mss = mss.max(1);
        self.clamp();
    }

    /// The settings.
    pub fn config(&self) -> &LedbatConfig {
        &self.config
    }

    /// RFC 6817 §2.4.2 `update_base_delay`: one minimum per minute, the
    /// last `BASE_HISTORY` minutes kept. A minute with no sample has no
    /// bucket, so the history is the last 10 minutes of time, not the last
    /// 10 buckets.
    fn update_base(&mut self, now: Instant, rtt: Duration) {
        let origin = *self.origin.get_or_insert(now);
        let minute = now.saturating_duration_since(origin).as_secs() / BASE_BUCKET.as_secs();
        match self.base_history.back_mut() {
            // A sample from a minute already passed (an out-of-order clock)
            // counts in the newest bucket.
            Some((last, min)) if *last >= minute => *min = (*min).min(rtt),
            _ => self.base_history.push_back((minute, rtt)),
        }
        let newest = self.base_history.back().map_or(minute, |&(m, _)| m);
        while self
            .base_history
            .front()
            .is_some_and(|&(m, _)| m + (BASE_HISTORY as u64) <= newest)
        {
            self.base_history.pop_front();
        }
    }

    fn may_decrease(&self, now: Instant, rtt: Duration) -> bool {
        self.last_decrease
            .is_none_or(|last| now.saturating_duration_since(last) >= rtt)
    }

    fn leave_slow_start(&mut self, now: Instant, rtt: Duration, after_slowdown: bool) {
        self.phase = Phase::Avoidance;
        if !self.config.periodic_slowdown {
            return;
        }
        self.next_slowdown = Some(match (after_slowdown, self.slowdown_started) {
            (true, Some(started)) => {
                let took = now.saturating_duration_since(started);
                now + took * SLOWDOWN_INTERVAL_MULTIPLIER
            }
            _ => now + rtt * FIRST_SLOWDOWN_RTTS,
        });
    }

    fn floor(&self) -> f64 {
        (MIN_WINDOW_SEGMENTS * self.config.mss) as f64
    }

    fn ceiling(&self) -> u64 {
        self.config.max_window.max(MIN_WINDOW_SEGMENTS * self.config.mss)
    }

    fn clamp(&mut self) {
        self.window = self.window.clamp(self.floor(), self.ceiling() as f64);
    }
}

/// Paced reads (or writes) where the kernel cannot clamp the window
/// mid-stream: a token bucket filled at `window / RTT` bytes a second,
/// holding at most one window, so the bytes moved over any RTT are about
/// the controller's window.
///
/// [`consume`](Self::consume) takes what was actually read, even past the
/// allowance (a read fills the buffer it is given): the excess is a debt
/// the next allowances repay.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Bytes a second.
    rate: f64,
    /// The most the bucket holds: one window.
    burst: f64,
    /// Available bytes; negative is a debt.
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A pacer at `window / rtt`, empty at `now`.
    pub fn new(now: Instant, window: u64, rtt: Duration) -> Self {
        let mut pacer = Self {
            rate: 0.0,
            burst: 0.0,
            tokens: 0.0,
            last: now,
        };
        pacer.set_rate(now, window, rtt);
        pacer
    }

    /// A new window or RTT from the controller, from `now` on (what was
    /// earned until `now` is kept, up to the new window).
    pub fn set_rate(&mut self, now: Instant, window: u64, rtt: Duration) {
        self.refill(now);
        let rtt = rtt.max(Duration::from_micros(1)).as_secs_f64();
        self.burst = window as f64;
        self.rate = self.burst / rtt;
        self.tokens = self.tokens.min(self.burst);
    }

    /// The bytes that may be read (or written) at `now`.
    pub fn allowance(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.max(0.0).floor() as u64
    }

    /// `n` bytes were read (or written).
    pub fn consume(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// How long after `now` until `n` bytes (at most one window) are
    /// allowed; zero if they are now.
    pub fn time_until(&self, now: Instant, n: u64) -> Duration {
        let tokens = self.tokens_at(now);
        let want = (n as f64).min(self.burst);
        if tokens >= want || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((want - tokens) / self.rate)
    }

    /// The rate, in bytes a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst)
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            self.tokens = self.tokens_at(now);
            self.last = now;
        }
    }
}

/// Whether a kernel (its `uname -r`, e.g. `6.8.12-arch1`) applies a
/// `TCP_WINDOW_CLAMP` set mid-stream: Linux 6.7 and later ("tcp: fix mid
/// stream window clamp"). Before it, a clamp set on an established
/// connection could collapse the window or be ignored, so bits paces reads
/// instead (network.md: "Linux 6.7, or 6.6.y with the fix").
///
/// 6.6.y is answered `false`: which 6.6 stable release (if any) carries
/// the fix is not known here, and a wrong `true` would leave a background
/// job not yielding, while a wrong `false` only paces reads that a clamp
/// could have limited. Anything that does not start with `MAJOR.MINOR` is
/// `false`.
pub fn supports_midstream_clamp(kernel_release: &str) -> bool {
    let mut parts = kernel_release.trim().splitn(3, '.');
    let major = parts
        .next()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| {
        let digits: &str = &p[..p.bytes().take_while(u8::is_ascii_digit).count()];
        digits.parse::<u32>().ok()
    });
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 7),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 1448;
    const CEILING: u64 = 4 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A window-limited sender: one sample per RTT carrying one window of
    /// bytes. Returns the window after each sample.
    struct Trace {
        c: LedbatController,
        now: Instant,
    }

    impl Trace {
        fn new(config: LedbatConfig) -> Self {
            Self {
                c: LedbatController::new(config),
                now: Instant::now(),
            }
        }

        fn quiet() -> Self {
            Self::new(LedbatConfig::new(MSS, CEILING).with_periodic_slowdown(false))
        }

        /// One RTT of `rtt`: one sample with a window's worth of bytes.
        fn rtt(&mut self, rtt: Duration) -> u64 {
            self.now += rtt;
            let bytes = self.c.window();
            self.c.on_sample(self.now, rtt, bytes)
        }

        fn rtts(&mut self, n: usize, rtt: Duration) -> Vec<u64> {
            (0..n).map(|_| self.rtt(rtt)).collect()
        }

        /// From the start: the base RTT of `base` until slow start ends at
        /// the ceiling.
        fn at_ceiling(base: Duration) -> Self {
            let mut t = Self::quiet();
            t.rtts(200, base);
            assert_eq!(t.c.window(), CEILING);
            assert!(!t.c.in_slow_start());
            t
        }
    }

    #[test]
    fn ledbat_rising_delay_shrinks_the_window() {
        let mut t = Trace::at_ceiling(ms(20));
        // The path's queue grows: RTT 20 ms, then 120 ms (100 ms over the
        // base, 40 over the target).
        let windows = t.rtts(20, ms(120));
        assert!(windows.windows(2).all(|w| w[1] <= w[0]), "{windows:?}");
        // At most half per RTT (LEDBAT++), and it did shrink.
        assert!(windows[0] >= CEILING / 2, "{windows:?}");
        assert!(*windows.last().unwrap() < CEILING / 8, "{windows:?}");
        assert_eq!(t.c.queuing_delay(), Some(ms(100)));
    }

    #[test]
    fn ledbat_decreases_at_most_once_per_rtt() {
        let mut t = Trace::at_ceiling(ms(20));
        // Fill the filter with high samples, then many samples in one RTT.
        t.rtts(4, ms(120));
        let before = t.c.window();
        for _ in 0..10 {
            t.now += ms(5);
            t.c.on_sample(t.now, ms(120), 1000);
        }
        assert_eq!(t.c.window(), before, "no second cut within the RTT");
        // One RTT after the last cut, the next.
        t.now += ms(70);
        t.c.on_sample(t.now, ms(120), 1000);
        assert!(t.c.window() < before);
    }

    #[test]
    fn ledbat_falling_delay_grows_by_the_gain_rule() {
        let mut t = Trace::at_ceiling(ms(20));
        t.rtts(30, ms(120));
        let low = t.c.window();
        assert!(low < CEILING / 8);
        // Back to the base: queueing delay 0, off_target 1.
        let windows = t.rtts(50, ms(20));
        // Dynamic gain at base 20 ms, target 60 ms: 1 / ceil(120 / 20) = 1/6.
        assert!((t.c.gain() - 1.0 / 6.0).abs() < 1e-9);
        let bound = t.c.gain() * MSS as f64;
        let mut previous = low;
        for w in windows {
            let growth = w as f64 - previous as f64;
            assert!(growth > 0.0, "{previous} -> {w}");
            // One byte of rounding either side.
            assert!(growth <= bound + 1.5, "{previous} -> {w}: over {bound}");
            assert!(growth >= bound - 1.5, "{previous} -> {w}: under {bound}");
            previous = w;
        }
    }

    #[test]
    fn ledbat_growth_is_proportional_to_the_distance_to_the_target() {
        let mut t = Trace::at_ceiling(ms(20));
        t.rtts(30, ms(120));
        // 30 ms of queueing: off_target = (60 - 30) / 60 = 1/2.
        t.rtts(4, ms(50));
        let before = t.c.window();
        // The RTT's bytes in ten samples: the bound still holds.
        for _ in 0..10 {
            t.now += ms(5);
            t.c.on_sample(t.now, ms(50), before / 10);
        }
        let growth = t.c.window() as f64 - before as f64;
        let bound = t.c.gain() * 0.5 * MSS as f64;
        assert!(growth > 0.0 && growth <= bound + 1.5, "{growth} vs {bound}");
        assert!(growth >= bound * 0.9, "{growth} vs {bound}");
    }

    #[test]
    fn ledbat_fixed_gain_one_grows_at_most_one_mss_per_rtt() {
        let config = LedbatConfig::new(MSS, CEILING)
            .with_gain(Gain::Fixed(1.0))
            .with_periodic_slowdown(false)
            .with_initial_window(10 * MSS);
        let mut t = Trace::new(config);
        // Leave slow start on delay, then come back down.
        t.rtts(1, ms(20));
        t.rtts(4, ms(70));
        assert!(!t.c.in_slow_start());
        t.rtts(4, ms(20));
        let mut previous = t.c.window();
        for w in t.rtts(20, ms(20)) {
            // One MSS per RTT, give or take a byte of rounding.
            let growth = w - previous;
            assert!(growth <= MSS + 1 && growth + 1 >= MSS, "{previous} -> {w}");
            previous = w;
        }
        assert_eq!(
            Trace::new(LedbatConfig::new(MSS, CEILING).with_gain(Gain::Fixed(3.0)))
                .c
                .gain(),
            1.0
        );
    }

    #[test]
    fn ledbat_never_below_two_segments() {
        let mut t = Trace::at_ceiling(ms(20));
        for w in t.rtts(100, ms(500)) {
            assert!(w >= 2 * MSS, "{w}");
        }
        assert_eq!(t.c.window(), 2 * MSS);
        for _ in 0..10 {
            t.now += ms(500);
            t.c.on_retransmission(t.now);
            assert_eq!(t.c.window(), 2 * MSS);
        }
        // A larger segment raises the floor.
        t.c.set_mss(9000);
        assert_eq!(t.c.window(), 18_000);
        // A ceiling under two segments does not lower it.
        t.c.set_max_window(1000);
        assert_eq!(t.c.window(), 18_000);
    }

    #[test]
    fn ledbat_never_above_the_ceiling() {
        let mut t = Trace::quiet();
        for w in t.rtts(500, ms(20)) {
            assert!(w <= CEILING, "{w}");
        }
        assert_eq!(t.c.window(), CEILING);
        // The flow-control window shrinks: the window follows at once.
        t.c.set_max_window(CEILING / 4);
        assert_eq!(t.c.window(), CEILING / 4);
        for w in t.rtts(100, ms(20)) {
            assert_eq!(w, CEILING / 4);
        }
    }

    #[test]
    fn ledbat_base_delay_expires_after_ten_minutes() {
        let t0 = Instant::now();
        let mut c = LedbatController::new(LedbatConfig::new(MSS, CEILING));
        // A 10 ms RTT at the start, then 30 ms every 10 s.
        c.on_sample(t0, ms(10), MSS);
        let mut at = Duration::ZERO;
        while at < Duration::from_secs(9 * 60) {
            at += Duration::from_secs(10);
            c.on_sample(t0 + at, ms(30), MSS);
        }
        assert_eq!(c.base_delay(), Some(ms(10)), "9 minutes later it counts");
        while at < Duration::from_secs(11 * 60) {
            at += Duration::from_secs(10);
            c.on_sample(t0 + at, ms(30), MSS);
        }
        assert_eq!(c.base_delay(), Some(ms(30)), "11 minutes later it does not");
        assert_eq!(c.queuing_delay(), Some(Duration::ZERO));
    }

    #[test]
    fn ledbat_base_delay_expires_across_a_silent_gap() {
        let t0 = Instant::now();
        let mut c = LedbatController::new(LedbatConfig::new(MSS, CEILING));
        c.on_sample(t0, ms(10), MSS);
        // No samples for 11 minutes (an idle connection), then one.
        c.on_sample(t0 + Duration::from_secs(11 * 60), ms(40), MSS);
        assert_eq!(c.base_delay(), Some(ms(40)));
    }

    #[test]
    fn ledbat_filter_ignores_a_single_outlier() {
        let mut t = Trace::at_ceiling(ms(20));
        t.rtts(30, ms(120));
        t.rtts(20, ms(20));
        let before = t.c.window();
        // One delayed ACK's worth of RTT, among normal ones.
        let after = t.rtt(ms(500));
        assert!(after >= before, "{before} -> {after}");
        assert_eq!(t.c.queuing_delay(), Some(Duration::ZERO));
        let after = t.rtts(3, ms(20));
        assert!(after.iter().all(|&w| w > before), "{after:?}");
    }

    #[test]
    fn ledbat_zero_rtt_changes_nothing() {
        let mut c = LedbatController::new(LedbatConfig::new(MSS, CEILING));
        let w = c.window();
        assert_eq!(c.on_sample(Instant::now(), Duration::ZERO, 1 << 20), w);
        assert_eq!(c.base_delay(), None);
        assert_eq!(c.gain(), 1.0 / 16.0);
    }

    #[test]
    fn ledbat_slow_start_ends_at_three_quarters_of_the_target() {
        let mut t = Trace::new(LedbatConfig::new(MSS, CEILING).with_periodic_slowdown(false));
        assert_eq!(t.c.window(), 2 * MSS);
        let grown = t.rtts(10, ms(20));
        assert!(grown.windows(2).all(|w| w[1] > w[0]), "{grown:?}");
        assert!(t.c.in_slow_start());
        // 40 ms of queueing: under 45 ms, still slow start.
        t.rtts(4, ms(60));
        assert!(t.c.in_slow_start());
        // 50 ms: over 3/4 of 60, slow start ends; under the target, no cut.
        let before = t.c.window();
        t.rtts(4, ms(70));
        assert!(!t.c.in_slow_start());
        assert!(t.c.window() >= before);
    }

    #[test]
    fn ledbat_retransmission_halves_once_per_rtt() {
        let mut t = Trace::at_ceiling(ms(20));
        t.now += ms(20);
        t.c.on_retransmission(t.now);
        assert_eq!(t.c.window(), CEILING / 2);
        t.now += ms(5);
        t.c.on_retransmission(t.now);
        assert_eq!(t.c.window(), CEILING / 2, "same RTT");
        t.now += ms(20);
        t.c.on_retransmission(t.now);
        assert_eq!(t.c.window(), CEILING / 4);
    }

    /// The RTT a bits job saw (`tcpi_rcv_rtt`, ms) every ~100 ms in `cargo xtask bench
    /// --background` case 3, from the moment curl starts beside a bits job
    /// holding 305 KiB at ~52 ms (the queue's base is ~0.1 ms).
    const LATE_FLOW_RTTS: [u64; 26] = [
        52, 54, 61, 72, 62, 56, 58, 63, 65, 65, 67, 67, 68, 70, 72, 74, 76, 78, 79, 80, 84, 87, 90, 93, 96,
        100,
    ];

    #[test]
    fn ledbat_yields_to_a_late_flow_as_recorded_in_the_bench() {
        let config = LedbatConfig::new(MSS, CEILING)
            .with_periodic_slowdown(false)
            .with_initial_window(312_320);
        let mut c = LedbatController::new(config);
        let mut now = Instant::now();
        // The base, then the standing queue that ends slow start where it is.
        c.on_sample(now, Duration::from_micros(100), 0);
        for _ in 0..4 {
            now += ms(52);
            c.on_sample(now, ms(52), 0);
        }
        assert!(!c.in_slow_start());
        let start = c.window();
        // Replayed open loop: a sample every 10 ms carrying what the window
        // lets through in 10 ms.
        let mut windows = Vec::new();
        for rtt in LATE_FLOW_RTTS {
            for _ in 0..10 {
                now += ms(10);
                let bytes = c.window() * 10 / rtt;
                c.on_sample(now, ms(rtt), bytes);
            }
            windows.push(c.window());
        }
        // Over the target (60 ms) for good from the eighth sample on: it
        // never grows again; halved after ~1.1 s.
        assert!(windows[7..].windows(2).all(|w| w[1] <= w[0]), "{windows:?}");
        assert!(windows[10] <= start / 2, "{windows:?}");
        assert!(windows[9] > start / 2, "{windows:?}");
        // LEDBAT++'s decrease is W·(delay/target − 1) per RTT: gentle while
        // the delay is just over the target, so the floor takes over 2 s
        // (what curl loses beside bits, against its throughput alone).
        assert!(windows[19] > 2 * MSS, "{windows:?}");
        assert_eq!(*windows.last().unwrap(), 2 * MSS, "{windows:?}");
    }

    #[test]
    fn ledbat_periodic_slowdown_measures_the_base_again() {
        let mut t = Trace::new(LedbatConfig::new(MSS, CEILING));
        // Slow start from the base, until the queue passes 45 ms.
        t.rtts(40, ms(20));
        assert!(t.c.in_slow_start());
        t.rtts(4, ms(70));
        assert!(!t.c.in_slow_start());
        let exit = t.now;
        let first = t.c.next_slowdown().expect("scheduled after slow start");
        // LEDBAT++: two RTTs after slow start ends.
        assert_eq!(first - exit, ms(140));
        let mut before = t.c.window();
        while !t.c.in_slowdown() {
            before = t.c.window();
            t.rtt(ms(70));
        }
        let started = t.now;
        assert!(started >= first);
        assert_eq!(t.c.window(), 2 * MSS);
        // Held at two segments for two RTTs; the queue drains meanwhile.
        t.rtt(ms(20));
        assert_eq!(t.c.window(), 2 * MSS);
        assert!(t.c.in_slowdown());
        // Then slow start back to where it was.
        while t.c.in_slowdown() || t.c.in_slow_start() {
            t.rtt(ms(20));
            assert!(t.c.window() <= before);
        }
        let ended = t.now;
        assert_eq!(t.c.window(), before);
        let next = t.c.next_slowdown().expect("the next one");
        assert_eq!(next - ended, (ended - started) * 9);
    }

    #[test]
    fn pacer_allows_about_one_window_per_rtt() {
        let t0 = Instant::now();
        let window = 64 * 1024;
        let rtt = ms(50);
        let mut p = Pacer::new(t0, window, rtt);
        assert_eq!(p.allowance(t0), 0);
        // A reader taking everything it is allowed, every millisecond.
        let mut read_in = |from: Duration, to: Duration| {
            let mut total = 0;
            let mut at = from;
            while at < to {
                at += ms(1);
                let n = p.allowance(t0 + at);
                p.consume(n);
                total += n;
            }
            total
        };
        read_in(Duration::ZERO, ms(100));
        let one_rtt = read_in(ms(100), ms(150));
        let error = (one_rtt as f64 - window as f64).abs() / window as f64;
        assert!(error < 0.01, "{one_rtt} vs {window}");
    }

    #[test]
    fn pacer_idle_earns_at_most_one_window_and_debts_are_repaid() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 10_000, ms(10));
        assert_eq!(p.allowance(t0 + Duration::from_secs(5)), 10_000);
        assert_eq!(p.time_until(t0 + Duration::from_secs(5), 10_000), Duration::ZERO);
        // A read that returned more than allowed.
        p.consume(15_000);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(p.allowance(now), 0);
        // 5,000 of debt and 1,000 wanted: 6,000 bytes at 1,000,000 B/s.
        let wait = p.time_until(now, 1_000);
        assert!(wait.abs_diff(ms(6)) < Duration::from_micros(1), "{wait:?}");
        assert_eq!(p.allowance(now + ms(5)), 0);
        let allowed = p.allowance(now + ms(6) + Duration::from_micros(1));
        assert!((1_000..=1_001).contains(&allowed), "{allowed}");
        // A smaller window from the controller: the rate follows.
        p.set_rate(now + ms(7), 1_000, ms(10));
        assert!(p.allowance(now + ms(7)) <= 1_000);
        assert!((p.rate() - 100_000.0).abs() < 1e-6);
    }

    #[test]
    fn midstream_clamp_by_kernel_release() {
        fn check(release: &str, expected: bool) {
            assert_eq!(supports_midstream_clamp(release), expected, "{release:?}");
        }
        check("6.7.0", true);
        check("6.7", true);
        check("6.7.0-rc1", true);
        check("6.8.12-arch1", true);
        check("6.10.3+", true);
        check("7.0.0-generic", true);
        check(" 6.9.1-300.fc40.x86_64\n", true);
        check("6.6.0", false);
        check("6.6.30-1-lts", false);
        check("6.1.0-28-amd64", false);
        check("5.15.0", false);
        check("4.19.0-26-amd64", false);
        check("", false);
        check("garbage", false);
        check("6", false);
        check("6.", false);
        check("v6.8.0", false);
        check("6.x.1", false);
        check("-6.8", false);
        check("99999999999.1", false);
    }
}
