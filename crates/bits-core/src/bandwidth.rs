//! The daemon-wide bandwidth of background jobs (`network.md`, "The
//! bandwidth schedule"): one [`SharedLimiter`] for every background job a
//! daemon runs, its rates set by the schedule, split among the jobs that
//! run by priority; and what `bits info` tells about a job's network use
//! ([`Controller`]).
//!
//! ## How a rate is split
//! The schedule gives each background priority a pool (the rule that
//! matched it) and the pool's rate; jobs whose priorities fall in the same
//! pool share its rate. Within a pool each running job gets a weight by
//! its priority, HIGH 4, NORMAL 2, LOW 1 (choice: `network.md` says a
//! higher priority "gets the larger share", not how much larger), and the
//! rate is divided in proportion to the weights, except that a job whose
//! own cap (`max_rate`) is below its portion keeps its cap and leaves the
//! rest to the others (water-filling). The portions add up to the pool's
//! rate, so the pool never goes over it; a job that moves slower than its
//! portion (a slow server) does not hand the rest to the others (choice:
//! a fixed split is predictable, and it is recomputed whenever a job
//! starts or ends or the schedule changes).
//!
//! Each job draws from its own token bucket at its portion, holding at
//! most a tenth of a second of bytes (16 KiB at least), as the per-job cap
//! does (`engine/rate.rs`): over any 10 s window the pool moves at most
//! about 1 % over its rate.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::job::Priority;

/// The weights of HIGH, NORMAL and LOW jobs in a shared pool.
pub const PRIORITY_WEIGHTS: [u64; 3] = [4, 2, 1];

/// What a background priority may use now, as the daemon's schedule says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolRate {
    /// No limit.
    Unlimited,
    /// `rate` bytes per second (0: blocked), shared by every job of the
    /// priorities whose pool is `pool` (the schedule's rule).
    Shared {
        /// Which pool (the same number: the same shared rate).
        pool: usize,
        /// Bytes per second.
        rate: u64,
    },
}

/// The daemon-wide limiter of background jobs. Clones share it. A
/// scheduler hands it to each job it runs ([`crate::Job::set_shared_limiter`]),
/// and the engine's rate cap draws from it; FOREGROUND jobs never do.
#[derive(Clone, Default)]
pub struct SharedLimiter(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    /// HIGH, NORMAL, LOW.
    rates: [Option<(usize, u64)>; 3],
    members: HashMap<u64, Member>,
    next_id: u64,
}

struct Member {
    priority: usize,
    cap: Option<u64>,
    /// Bytes per second, `None`: unlimited.
    share: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SharedLimiter")
            .field("rates", &inner.rates)
            .field("members", &inner.members.len())
            .finish()
    }
}

fn index(p: Priority) -> Option<usize> {
    match p {
        Priority::Foreground => None,
        Priority::High => Some(0),
        Priority::Normal => Some(1),
        Priority::Low => Some(2),
    }
}

impl SharedLimiter {
    /// A limiter that limits nothing until [`SharedLimiter::set_rates`].
    pub fn new() -> SharedLimiter {
        SharedLimiter::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the rates of HIGH, NORMAL and LOW (in that order); running
    /// jobs take their new portions at their next chunk.
    pub fn set_rates(&self, rates: [PoolRate; 3]) {
        let mut inner = self.lock();
        inner.rates = rates.map(|r| match r {
            PoolRate::Unlimited => None,
            PoolRate::Shared { pool, rate } => Some((pool, rate)),
        });
        inner.split();
    }

    /// The rate of `priority`'s pool now: `None` when unlimited (and for
    /// FOREGROUND).
    pub fn pool_rate(&self, priority: Priority) -> Option<u64> {
        let i = index(priority)?;
        self.lock().rates[i].map(|(_, r)| r)
    }

    /// Joins a job of `priority` with its own cap `cap`: `None` for
    /// FOREGROUND, which the schedule never limits. The job leaves when
    /// the [`Share`] is dropped.
    pub fn join(&self, priority: Priority, cap: Option<u64>) -> Option<Share> {
        let i = index(priority)?;
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.members.insert(
            id,
            Member {
                priority: i,
                cap,
                share: None,
                tokens: 0.0,
                last: Instant::now(),
            },
        );
        inner.split();
        let m = inner.members.get_mut(&id).expect("just inserted");
        m.tokens = m.share.map_or(0.0, burst);
        Some(Share {
            limiter: self.clone(),
            id,
        })
    }
}

/// The most a bucket of `rate` holds: a tenth of a second, 16 KiB at
/// least.
fn burst(rate: f64) -> f64 {
    (rate / 10.0).max(16.0 * 1024.0)
}

impl Inner {
    /// Recomputes every member's portion.
    fn split(&mut self) {
        let mut pools: HashMap<usize, (u64, Vec<u64>)> = HashMap::new();
        for (&id, m) in &mut self.members {
            match self.rates[m.priority] {
                None => m.share = None,
                Some((pool, rate)) => pools.entry(pool).or_insert((rate, Vec::new())).1.push(id),
            }
        }
        for (rate, ids) in pools.into_values() {
            let mut left = rate as f64;
            let mut open: Vec<u64> = ids;
            loop {
                let weights: u64 = open
                    .iter()
                    .map(|id| PRIORITY_WEIGHTS[self.members[id].priority])
                    .sum();
                if weights == 0 {
                    break;
                }
                let unit = left / weights as f64;
                let (capped, rest): (Vec<u64>, Vec<u64>) = open.iter().partition(|id| {
                    let m = &self.members[*id];
                    m.cap
                        .is_some_and(|c| (c as f64) < unit * PRIORITY_WEIGHTS[m.priority] as f64)
                });
                if capped.is_empty() {
                    for id in &rest {
                        let m = self.members.get_mut(id).expect("a member");
                        m.share = Some(unit * PRIORITY_WEIGHTS[m.priority] as f64);
                    }
                    break;
                }
                for id in &capped {
                    let m = self.members.get_mut(id).expect("a member");
                    let c = m.cap.expect("capped") as f64;
                    m.share = Some(c);
                    left -= c;
                }
                open = rest;
            }
        }
    }
}

/// A running job's portion of a [`SharedLimiter`]; it leaves the pool when
/// dropped.
pub struct Share {
    limiter: SharedLimiter,
    id: u64,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("id", &self.id)
            .field("rate", &self.rate())
            .finish()
    }
}

impl Share {
    /// This job's portion now, bytes per second; `None`: unlimited.
    pub fn rate(&self) -> Option<u64> {
        let inner = self.limiter.lock();
        inner
            .members
            .get(&self.id)
            .and_then(|m| m.share)
            .map(|r| r as u64)
    }

    /// Accounts for `n` bytes moved at `now`: how long to wait before the
    /// next byte is due. A portion of 0 (blocked: the scheduler stops the
    /// job) waits a second at a time.
    pub fn charge(&self, now: Instant, n: usize) -> Duration {
        let mut inner = self.limiter.lock();
        let Some(m) = inner.members.get_mut(&self.id) else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(m.last).as_secs_f64();
        m.last = now;
        let Some(rate) = m.share else {
            m.tokens = 0.0;
            return Duration::ZERO;
        };
        if rate < 1.0 {
            return Duration::from_secs(1);
        }
        m.tokens = (m.tokens + elapsed * rate).min(burst(rate)) - n as f64;
        if m.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-m.tokens / rate)
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut inner = self.limiter.lock();
        inner.members.remove(&self.id);
        inner.split();
    }
}

/// A job's handle on its daemon's [`SharedLimiter`], held by the
/// [`crate::Job`] for its run: not the job's data (never stored; any two
/// are equal).
#[derive(Clone, Debug, Default)]
pub struct LimiterSlot(pub Option<SharedLimiter>);

impl PartialEq for LimiterSlot {
    fn eq(&self, _: &LimiterSlot) -> bool {
        true
    }
}

impl Eq for LimiterSlot {}

/// How a transfer yields to other traffic (`network.md`, "Yielding to
/// other traffic"), as `bits info` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Controller {
    /// It does not yield (FOREGROUND, or no controller drives it yet).
    #[default]
    None,
    /// A LEDBAT controller paces its reads (the kernel cannot clamp the
    /// window mid-stream).
    Paced,
    /// A LEDBAT controller clamps the advertised window
    /// (`TCP_WINDOW_CLAMP`).
    WindowClamp,
}

impl Controller {
    /// `none`, `paced`, `window-clamp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Controller::None => "none",
            Controller::Paced => "paced",
            Controller::WindowClamp => "window-clamp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(r: u64) -> [PoolRate; 3] {
        [PoolRate::Shared { pool: 0, rate: r }; 3]
    }

    #[test]
    fn one_pool_is_split_by_priority() {
        let l = SharedLimiter::new();
        l.set_rates(rates(7000));
        let high = l.join(Priority::High, None).unwrap();
        let low = l.join(Priority::Low, None).unwrap();
        assert_eq!(high.rate(), Some(5600));
        assert_eq!(low.rate(), Some(1400));
        assert!(l.join(Priority::Foreground, None).is_none());
        drop(high);
        assert_eq!(low.rate(), Some(7000));
    }

    #[test]
    fn a_job_capped_below_its_portion_leaves_the_rest_to_the_others() {
        let l = SharedLimiter::new();
        l.set_rates(rates(10_000));
        let a = l.join(Priority::Normal, Some(1000)).unwrap();
        let b = l.join(Priority::Normal, None).unwrap();
        assert_eq!(a.rate(), Some(1000));
        assert_eq!(b.rate(), Some(9000));
    }

    #[test]
    fn pools_are_apart_and_unlimited_priorities_are_not_limited() {
        let l = SharedLimiter::new();
        l.set_rates([
            PoolRate::Unlimited,
            PoolRate::Shared { pool: 1, rate: 4000 },
            PoolRate::Shared { pool: 2, rate: 2000 },
        ]);
        let h = l.join(Priority::High, None).unwrap();
        let n = l.join(Priority::Normal, None).unwrap();
        let w = l.join(Priority::Low, None).unwrap();
        assert_eq!((h.rate(), n.rate(), w.rate()), (None, Some(4000), Some(2000)));
        assert_eq!(h.charge(Instant::now(), 1 << 30), Duration::ZERO);
        l.set_rates([PoolRate::Unlimited; 3]);
        assert_eq!(n.rate(), None);
    }

    #[test]
    fn two_members_over_ten_seconds_stay_within_the_pool() {
        let rate = 1 << 20;
        let l = SharedLimiter::new();
        l.set_rates(rates(rate));
        let members = [
            l.join(Priority::Normal, None).unwrap(),
            l.join(Priority::Normal, None).unwrap(),
        ];
        let start = Instant::now();
        let mut next = [start; 2];
        let mut moved = 0u64;
        let end = start + Duration::from_secs(10);
        loop {
            let i = if next[0] <= next[1] { 0 } else { 1 };
            if next[i] >= end {
                break;
            }
            next[i] += members[i].charge(next[i], 16 << 10);
            moved += 16 << 10;
        }
        let limit = rate as f64 * 10.0;
        assert!(moved as f64 <= limit * 1.03, "{moved}");
        assert!(moved as f64 >= limit * 0.97, "{moved}");
    }
}
