//! A job's own rate cap ([`Job::max_rate`](crate::Job::max_rate), `bits
//! set-max-rate`): a token bucket the download loop draws from after each
//! chunk it receives. Reading no faster than the cap lets TCP's flow
//! control slow the sender; nothing is dropped.
//!
//! The bucket holds at most a tenth of a second of bytes (16 KiB at
//! least), so over any 10 s window a capped download moves at most 1 %
//! more than the cap (`docs/spec/network.md`: within 5 %). Written by hand
//! rather than with `governor` (cells of a `u32` count, built for request
//! rates) or `async-speed-limit` (wraps the reader, which the engine does
//! not own): it is a few lines, and the daemon-wide limiter of the
//! bandwidth schedule will need shares per priority that neither gives.

use std::time::{Duration, Instant};

/// The bucket of one run of one job.
#[derive(Debug)]
pub(super) struct RateCap {
    /// Bytes per second.
    rate: f64,
    /// The most the bucket holds.
    burst: f64,
    /// What it holds now; negative: a debt, slept off.
    tokens: f64,
    last: Instant,
}

impl RateCap {
    pub(super) fn new(rate: u64) -> RateCap {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        RateCap {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Accounts for `n` bytes received; sleeps while the bucket is in
    /// debt.
    pub(super) async fn take(&mut self, n: usize) {
        let wait = self.charge(Instant::now(), n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Refills the bucket up to `now`, takes `n` bytes: how long to wait
    /// before the next byte is due.
    fn charge(&mut self, now: Instant, n: usize) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut cap = RateCap::new(1 << 20);
        let t0 = cap.last;
        // A tenth of a second's bytes pass at once...
        assert_eq!(cap.charge(t0, 100 << 10), Duration::ZERO);
        // ...then each MiB costs a second.
        let wait = cap.charge(t0, 1 << 20);
        assert!(
            (wait.as_secs_f64() - 1.0 - 100.0 / 1024.0 + 0.1).abs() < 0.01,
            "{wait:?}"
        );
    }

    #[test]
    fn over_ten_seconds_the_bytes_stay_within_the_cap() {
        let rate = 512 << 10;
        let mut cap = RateCap::new(rate);
        let mut now = cap.last;
        let mut moved = 0u64;
        let end = now + Duration::from_secs(10);
        while now < end {
            now += cap.charge(now, 16 << 10);
            moved += 16 << 10;
        }
        let limit = rate as f64 * 10.0;
        assert!(moved as f64 <= limit * 1.02, "{moved} bytes in 10 s");
        assert!(moved as f64 >= limit * 0.98, "{moved} bytes in 10 s");
    }

    #[test]
    fn an_idle_spell_earns_one_burst_only() {
        let mut cap = RateCap::new(1 << 20);
        let later = cap.last + Duration::from_secs(60);
        assert_eq!(cap.charge(later, 0), Duration::ZERO);
        assert!(cap.tokens <= cap.burst);
    }
}
