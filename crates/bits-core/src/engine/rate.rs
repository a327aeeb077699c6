//! A job's own rate cap ([`Job::max_rate`](crate::Job::max_rate), `bits
//! set-max-rate`): a token bucket the download loop draws from after each
//! chunk it receives. Reading no faster than the cap lets TCP's flow
//! control slow the sender; nothing is dropped. A background job run by a
//! daemon also draws from its portion of the daemon-wide limiter
//! ([`crate::bandwidth::SharedLimiter`], the bandwidth schedule): it waits
//! for the later of the two, so the lower rate wins ([`RateCap::for_job`]).
//!
//! The bucket holds at most a tenth of a second of bytes (16 KiB at
//! least), so over any 10 s window a capped download moves at most 1 %
//! more than the cap (`docs/spec/network.md`: within 5 %). Written by hand
//! rather than with `governor` (cells of a `u32` count, built for request
//! rates) or `async-speed-limit` (wraps the reader, which the engine does
//! not own): it is a few lines, and the daemon-wide limiter of the
//! bandwidth schedule will need shares per priority that neither gives.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bandwidth::Share;
use crate::job::Job;

/// What one run of one job draws from: its own cap and its portion of the
/// daemon's shared limiter.
#[derive(Debug)]
pub(super) struct RateCap {
    /// Behind a lock: a job's files in flight at once share one cap.
    own: Option<Mutex<Bucket>>,
    shared: Option<Share>,
}

impl RateCap {
    /// The cap of one run of `job`: its [`Job::max_rate`] and, for a
    /// background job given the daemon's limiter
    /// ([`Job::set_shared_limiter`]), its portion of it; `None` when
    /// neither limits it.
    pub(super) fn for_job(job: &Job) -> Option<RateCap> {
        let shared = job
            .shared_limiter()
            .and_then(|l| l.join(job.priority, job.max_rate));
        let own = job.max_rate.map(|rate| Mutex::new(Bucket::new(rate)));
        (own.is_some() || shared.is_some()).then_some(RateCap { own, shared })
    }

    /// The rate it holds to now, bytes per second: the lower of the two;
    /// `None` when neither limits it now.
    pub(super) fn rate(&self) -> Option<u64> {
        let own = self.own.as_ref().map(|b| lock(b).rate as u64);
        let shared = self.shared.as_ref().and_then(Share::rate);
        match (own, shared) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Accounts for `n` bytes received; sleeps while either bucket is in
    /// debt.
    pub(super) async fn take(&self, n: usize) {
        let now = Instant::now();
        let own = self
            .own
            .as_ref()
            .map_or(Duration::ZERO, |b| lock(b).charge(now, n));
        let shared = self.shared.as_ref().map_or(Duration::ZERO, |s| s.charge(now, n));
        let wait = own.max(shared);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

fn lock(bucket: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(|p| p.into_inner())
}

/// The token bucket of a job's own cap.
#[derive(Debug)]
struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// The most the bucket holds.
    burst: f64,
    /// What it holds now; negative: a debt, slept off.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
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
        let mut cap = Bucket::new(1 << 20);
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
        let mut cap = Bucket::new(rate);
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
        let mut cap = Bucket::new(1 << 20);
        let later = cap.last + Duration::from_secs(60);
        assert_eq!(cap.charge(later, 0), Duration::ZERO);
        assert!(cap.tokens <= cap.burst);
    }
}
