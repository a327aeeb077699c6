//! The LEDBAT controller ([`crate::ledbat`]) on a real socket: a yielding
//! connection's reads sample `TCP_INFO` and apply the controller's window
//! with `TCP_WINDOW_CLAMP`, or pace themselves where the kernel cannot
//! clamp mid-stream (`network.md`, "Yielding to other traffic").
//!
//! It runs inside the connection's `poll_read` (no task of its own): a
//! connection is only sampled while bytes arrive, which is when its
//! window matters, and the socket is known to be open.
//!
//! ## Choices
//! - The RTT is `tcpi_rcv_rtt`, the kernel's receiver-side estimate from
//!   TCP timestamps (RFC 7323's echo of the ACKs this end sends), which is
//!   what RFC 9840 measures: `tcpi_rtt` is the sender's smoothed RTT and
//!   moves only when this end's own data is acknowledged, so on a download
//!   it stays at the handshake's value. `tcpi_rtt` is used only until a
//!   first receiver sample exists.
//! - A retransmission is seen as an out-of-order arrival
//!   (`tcpi_rcv_ooopack` grew): the receiver sees a hole before the
//!   sender's retransmission fills it.
//! - The segment size is `tcpi_advmss` (the largest segment this end
//!   accepts), so the two-segment floor is never under two real segments.
//! - The ceiling (the flow-control window) is the most the kernel's
//!   receive-buffer autotuning can open: half of `tcp_rmem`'s maximum
//!   (the kernel keeps about half of a buffer for overhead). A fresh
//!   socket's own clamp is no ceiling: it starts at 64 KiB and autotuning
//!   raises it.
//! - Samples are taken at most every [`SAMPLE_EVERY`]; the controller's
//!   growth is per byte, so how often it is fed does not change its pace.
//! - Writes (an upload: bits sending) run under a second controller of
//!   the same kind ([`SendPacing`]), fed from the same `TCP_INFO` by the
//!   sender's side of it: `tcpi_rtt` (the smoothed RTT of what this end
//!   sends, from its ACKs), `tcpi_bytes_acked` for the growth and
//!   `tcpi_total_retrans` for a loss. Its window becomes paced writes
//!   (the same [`Pacer`] as paced reads): the kernel has no clamp for what
//!   a socket sends. Only a bulk send is paced: a connection's first
//!   [`PACE_WRITES_AFTER`] bytes (request heads, small bodies) go at once,
//!   and a connection that has read more than it wrote is a download whose
//!   writes are requests, never paced (2,000 requests over one h2
//!   connection must not wait on a send window).

#![allow(unsafe_code)] // getsockopt/setsockopt on the connection's own descriptor.

use std::future::Future as _;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bits_core::{YieldController, YieldStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ledbat::{supports_midstream_clamp, LedbatConfig, LedbatController, Pacer, MIN_WINDOW_SEGMENTS};

/// The shortest time between two `TCP_INFO` samples of a connection.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// The bytes a yielding connection writes before its writes are paced.
pub const PACE_WRITES_AFTER: u64 = 64 * 1024;

/// The segment size assumed when the kernel reports none.
const DEFAULT_MSS: u64 = 1448;

static FORCE_PACED: AtomicBool = AtomicBool::new(false);

/// Makes new yielding connections of this process pace their reads even
/// where the kernel clamps mid-stream (tests of the fallback).
#[doc(hidden)]
pub fn force_paced_reads(on: bool) {
    FORCE_PACED.store(on, Ordering::Relaxed);
}

/// The controller this process's yielding connections use: the window
/// clamp on Linux 6.7 and later ([`supports_midstream_clamp`]), else paced
/// reads.
pub fn controller_in_use() -> YieldController {
    static KERNEL: OnceLock<bool> = OnceLock::new();
    let clamps = *KERNEL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| supports_midstream_clamp(&r))
    });
    if clamps && !FORCE_PACED.load(Ordering::Relaxed) {
        YieldController::WindowClamp
    } else {
        YieldController::PacedReads
    }
}

/// What one `TCP_INFO` read gives the controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSample {
    /// The receiver-side RTT (`tcpi_rcv_rtt`), else the smoothed RTT
    /// (`tcpi_rtt`); zero when neither is known.
    pub rtt: Duration,
    /// `tcpi_bytes_received`.
    pub bytes_received: u64,
    /// `tcpi_rcv_ooopack`: packets that arrived out of order.
    pub out_of_order: u32,
    /// `tcpi_advmss`.
    pub advmss: u32,
    /// The sender's smoothed RTT (`tcpi_rtt`): what the ACKs of this end's
    /// own data took; zero when unknown.
    pub send_rtt: Duration,
    /// `tcpi_bytes_acked`: bytes this end sent that the peer acknowledged.
    pub bytes_acked: u64,
    /// `tcpi_total_retrans`: segments this end sent again.
    pub retransmits: u32,
    /// `tcpi_snd_mss`.
    pub send_mss: u32,
}

/// The largest window the kernel's receive buffers allow: half of the
/// third field of `/proc/sys/net/ipv4/tcp_rmem` (4 MiB when unreadable).
fn flow_control_ceiling() -> u64 {
    static CEILING: OnceLock<u64> = OnceLock::new();
    *CEILING.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse::<u64>().ok())
            .map_or(4 << 20, |max| max / 2)
    })
}

/// The identity of the socket `fd` names (its inode), to tell whether a
/// descriptor still names the same socket.
pub(crate) fn socket_id(fd: RawFd) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// Reads `TCP_INFO` of `fd`.
pub fn tcp_info(fd: RawFd) -> io::Result<TcpSample> {
    // SAFETY: tcp_info is plain old data; zeroes are a valid value, and the
    // kernel writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let rtt_us = if info.tcpi_rcv_rtt != 0 {
        info.tcpi_rcv_rtt
    } else {
        info.tcpi_rtt
    };
    Ok(TcpSample {
        rtt: Duration::from_micros(u64::from(rtt_us)),
        bytes_received: info.tcpi_bytes_received,
        out_of_order: info.tcpi_rcv_ooopack,
        advmss: info.tcpi_advmss,
        send_rtt: Duration::from_micros(u64::from(info.tcpi_rtt)),
        bytes_acked: info.tcpi_bytes_acked,
        retransmits: info.tcpi_total_retrans,
        send_mss: info.tcpi_snd_mss,
    })
}

/// Reads `TCP_WINDOW_CLAMP` of `fd`.
pub fn window_clamp(fd: RawFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_WINDOW_CLAMP,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).unwrap_or(0))
}

/// Sets `TCP_WINDOW_CLAMP` of `fd` to `bytes`.
pub fn set_window_clamp(fd: RawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a valid c_int for the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_WINDOW_CLAMP,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The LEDBAT controller of what a yielding connection sends, as pure
/// code (no socket): fed with `TCP_INFO`'s sender fields, it says how many
/// bytes may be written now. Unpaced until [`PACE_WRITES_AFTER`] bytes
/// were written, and while the connection read more than it wrote.
#[derive(Debug)]
pub struct SendPacing {
    controller: LedbatController,
    pacer: Pacer,
    written: u64,
    /// Bytes the connection read: more than it wrote, it is a download.
    read: u64,
    /// The last sample's cumulative `bytes_acked` and `retransmits`.
    last: Option<(u64, u32)>,
    rtt: Duration,
}

impl SendPacing {
    /// Segments of `mss` bytes, windows up to `ceiling`, at `now`.
    pub fn new(now: Instant, mss: u64, ceiling: u64) -> Self {
        let controller =
            LedbatController::new(LedbatConfig::new(mss, ceiling.max(MIN_WINDOW_SEGMENTS * mss)));
        let rtt = Duration::from_millis(100);
        let pacer = Pacer::new(now, controller.window(), rtt);
        SendPacing {
            controller,
            pacer,
            written: 0,
            read: 0,
            last: None,
            rtt,
        }
    }

    /// A `TCP_INFO` reading at `now`: the sender's RTT and the cumulative
    /// bytes acknowledged and segments retransmitted.
    pub fn on_sample(&mut self, now: Instant, rtt: Duration, bytes_acked: u64, retransmits: u32) {
        let (acked, lost) = match self.last {
            Some((a, r)) => (bytes_acked.saturating_sub(a), retransmits > r),
            None => (0, false),
        };
        self.last = Some((bytes_acked, retransmits));
        if lost {
            self.controller.on_retransmission(now);
        }
        if rtt.is_zero() {
            return;
        }
        self.rtt = rtt;
        self.controller.on_sample(now, rtt, acked);
        self.pacer.set_rate(now, self.controller.window(), rtt);
    }

    /// Whether writes are paced: a bulk send, more written than read.
    pub fn engaged(&self) -> bool {
        self.written >= PACE_WRITES_AFTER && self.written > self.read
    }

    /// `n` bytes were read from the connection.
    pub fn on_read(&mut self, n: u64) {
        self.read += n;
    }

    /// The bytes that may be written at `now` (`u64::MAX` while unpaced;
    /// a connection's first write is cut at [`PACE_WRITES_AFTER`], where
    /// pacing may start).
    pub fn allowance(&mut self, now: Instant) -> u64 {
        if self.engaged() {
            self.pacer.allowance(now)
        } else if self.written < PACE_WRITES_AFTER {
            PACE_WRITES_AFTER - self.written
        } else {
            u64::MAX
        }
    }

    /// How long after `now` until `n` bytes may be written.
    pub fn time_until(&self, now: Instant, n: u64) -> Duration {
        self.pacer.time_until(now, n)
    }

    /// `n` bytes were written.
    pub fn consume(&mut self, n: u64) {
        let before = self.engaged();
        self.written += n;
        if before {
            self.pacer.consume(n);
        }
    }

    /// The controller's window.
    pub fn window(&self) -> u64 {
        self.controller.window()
    }

    /// The pacing rate, bytes a second.
    pub fn rate(&self) -> f64 {
        self.pacer.rate()
    }
}

/// What hands out bytes over time: the pacer of reads, the send side.
trait Allowance {
    /// The bytes that may move at `now`.
    fn allowance(&mut self, now: Instant) -> u64;
    /// How long after `now` until `n` bytes may move.
    fn time_until(&self, now: Instant, n: u64) -> Duration;
}

impl Allowance for Pacer {
    fn allowance(&mut self, now: Instant) -> u64 {
        Pacer::allowance(self, now)
    }
    fn time_until(&self, now: Instant, n: u64) -> Duration {
        Pacer::time_until(self, now, n)
    }
}

impl Allowance for SendPacing {
    fn allowance(&mut self, now: Instant) -> u64 {
        SendPacing::allowance(self, now)
    }
    fn time_until(&self, now: Instant, n: u64) -> Duration {
        SendPacing::time_until(self, now, n)
    }
}

/// `Ready` with what `a` allows (more than 0) from `now` on, or `Pending`
/// with `sleep` armed for when `want` bytes will be (at least 1 ms on).
fn poll_allowance(
    a: &mut impl Allowance,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
    mut now: Instant,
    want: u64,
) -> Poll<u64> {
    loop {
        let allowance = a.allowance(now);
        if allowance > 0 {
            return Poll::Ready(allowance);
        }
        let wait = a.time_until(now, want).max(Duration::from_millis(1));
        let deadline = tokio::time::Instant::now() + wait;
        let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().reset(deadline);
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        now = Instant::now();
    }
}

/// `fd`'s `TCP_INFO` when the last sample (`last`, then set to `now`) is
/// at least [`SAMPLE_EVERY`] old.
fn sample_due(last: &mut Option<Instant>, now: Instant, fd: RawFd) -> Option<TcpSample> {
    if last.is_some_and(|at| now.duration_since(at) < SAMPLE_EVERY) {
        return None;
    }
    *last = Some(now);
    tcp_info(fd).ok()
}

/// The controller of one yielding connection, driven from its reads.
pub(crate) struct Yielder {
    /// The connection's socket: owned by the stream this yielder sits
    /// beside, so open whenever a read runs.
    fd: RawFd,
    controller: LedbatController,
    /// `Some` when reads are paced instead of the window clamped.
    pacer: Option<Pacer>,
    status: YieldStatus,
    last_sample: Option<Instant>,
    last: TcpSample,
    /// The clamp last set.
    clamp: u32,
    /// What the kernel held just after it was set (at least its own
    /// minimum), to see autotuning move it.
    held: u32,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What the connection sends, paced by a controller of its own.
    send: SendPacing,
    last_send_sample: Option<Instant>,
    write_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for Yielder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Yielder")
            .field("fd", &self.fd)
            .field("controller", &self.status.controller())
            .field("window", &self.controller.window())
            .finish_non_exhaustive()
    }
}

impl Yielder {
    /// A yielder for the connected TCP socket `fd`: the window clamped to
    /// the controller's initial window (two segments) at once.
    pub(crate) fn new(fd: RawFd) -> Self {
        let now = Instant::now();
        let first = tcp_info(fd).unwrap_or_default();
        let mss = match first.advmss {
            0 => DEFAULT_MSS,
            m => u64::from(m),
        };
        let ceiling = flow_control_ceiling().max(MIN_WINDOW_SEGMENTS * mss);
        let controller = LedbatController::new(LedbatConfig::new(mss, ceiling));
        let window = controller.window();
        let kind = controller_in_use();
        let rtt = if first.rtt.is_zero() {
            Duration::from_millis(100)
        } else {
            first.rtt
        };
        let pacer = (kind == YieldController::PacedReads).then(|| Pacer::new(now, window, rtt));
        let send_mss = match first.send_mss {
            0 => DEFAULT_MSS,
            m => u64::from(m),
        };
        let mut yielder = Yielder {
            fd,
            controller,
            pacer,
            status: YieldStatus::new(kind, window),
            last_sample: None,
            last: first,
            clamp: 0,
            held: 0,
            sleep: None,
            send: SendPacing::new(now, send_mss, ceiling),
            last_send_sample: None,
            write_sleep: None,
        };
        yielder.apply(now, rtt);
        yielder
    }

    /// The status shared with responses.
    pub(crate) fn status(&self) -> YieldStatus {
        self.status.clone()
    }

    /// A `TCP_INFO` sample fed to the controller, at most every
    /// [`SAMPLE_EVERY`].
    fn sample(&mut self, now: Instant) {
        let Some(info) = sample_due(&mut self.last_sample, now, self.fd) else {
            return;
        };
        let bytes = info.bytes_received.saturating_sub(self.last.bytes_received);
        if info.out_of_order > self.last.out_of_order {
            self.controller.on_retransmission(now);
        }
        if info.advmss != 0 && info.advmss != self.last.advmss {
            self.controller.set_mss(u64::from(info.advmss));
        }
        self.last = info;
        self.controller.on_sample(now, info.rtt, bytes);
        self.apply(now, info.rtt);
    }

    /// Puts the controller's window in force: the clamp, or the pacer's
    /// rate.
    fn apply(&mut self, now: Instant, rtt: Duration) {
        let window = self.controller.window();
        match &mut self.pacer {
            Some(pacer) => {
                if !rtt.is_zero() {
                    pacer.set_rate(now, window, rtt);
                }
                self.status.set_limit(window);
            }
            None => {
                let wanted = u32::try_from(window).unwrap_or(u32::MAX);
                // Receive-buffer autotuning raises the clamp with the
                // buffer (Linux's `tcp_rcv_space_adjust`: "make the window
                // clamp follow along"), so an unchanged window is put back
                // whenever the kernel moved it since it was set.
                let moved = window_clamp(self.fd).is_ok_and(|now| now != self.held);
                if (wanted != self.clamp || moved) && set_window_clamp(self.fd, wanted).is_ok() {
                    self.clamp = wanted;
                    // What the kernel holds (it keeps at least its own minimum).
                    self.held = window_clamp(self.fd).unwrap_or(wanted);
                    self.status.set_limit(u64::from(self.held));
                }
            }
        }
    }

    /// A read of `inner` under the controller: sampled first; when paced,
    /// no more than the allowance, and nothing until some is allowed.
    pub(crate) fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let now = Instant::now();
        self.sample(now);
        let Some(pacer) = &mut self.pacer else {
            let before = buf.filled().len();
            let result = Pin::new(inner).poll_read(cx, buf);
            self.send.on_read((buf.filled().len() - before) as u64);
            return result;
        };
        let Poll::Ready(allowance) = poll_allowance(pacer, &mut self.sleep, cx, now, buf.remaining() as u64)
        else {
            return Poll::Pending;
        };
        let n = usize::try_from(allowance)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(n));
        let result = Pin::new(inner).poll_read(cx, &mut sub);
        let read = sub.filled().len();
        buf.advance(read);
        pacer.consume(read as u64);
        self.send.on_read(read as u64);
        result
    }

    /// The send side's `TCP_INFO` sample, at most every [`SAMPLE_EVERY`]
    /// (the receive side's samples stay with the reads: during an upload
    /// its RTT does not move).
    fn sample_send(&mut self, now: Instant) {
        let Some(info) = sample_due(&mut self.last_send_sample, now, self.fd) else {
            return;
        };
        self.send
            .on_sample(now, info.send_rtt, info.bytes_acked, info.retransmits);
        if self.send.engaged() {
            self.status.set_limit(self.send.window());
        }
    }

    /// A write to `inner` under the send side's controller: the first
    /// [`PACE_WRITES_AFTER`] bytes at once, then no more than the
    /// allowance, and nothing until some is allowed.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let now = Instant::now();
        self.sample_send(now);
        let Poll::Ready(allowance) =
            poll_allowance(&mut self.send, &mut self.write_sleep, cx, now, buf.len() as u64)
        else {
            return Poll::Pending;
        };
        let n = usize::try_from(allowance).unwrap_or(usize::MAX).min(buf.len());
        let result = Pin::new(inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(written)) = &result {
            self.send.consume(*written as u64);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 1448;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Samples every `step` for `count` steps at `rtt`, each acknowledging
    /// what the pacer let through since the last one; the clock after.
    fn run(
        p: &mut SendPacing,
        mut now: Instant,
        rtt: Duration,
        step: Duration,
        count: u32,
        acked: &mut u64,
    ) -> Instant {
        for _ in 0..count {
            now += step;
            let n = p.allowance(now);
            p.consume(n);
            *acked += n;
            p.on_sample(now, rtt, *acked, 0);
        }
        now
    }

    #[test]
    fn a_connections_first_bytes_go_at_once_and_then_writes_are_paced() {
        let now = Instant::now();
        let mut p = SendPacing::new(now, MSS, 4 << 20);
        assert!(!p.engaged());
        // A request head, then a small body: all allowed at once.
        assert_eq!(p.allowance(now), PACE_WRITES_AFTER);
        p.consume(500);
        assert_eq!(p.allowance(now), PACE_WRITES_AFTER - 500);
        p.consume(PACE_WRITES_AFTER - 500);
        assert!(p.engaged());
        // From then on, no more than the pacer's allowance: one window
        // (two segments at first) per RTT.
        p.on_sample(now, ms(20), 0, 0);
        let later = now + ms(20);
        let allowed = p.allowance(later);
        assert!(allowed <= 2 * MSS + 1, "{allowed}");
        p.consume(allowed);
        assert_eq!(p.allowance(later), 0);
        assert!(p.time_until(later, MSS) > Duration::ZERO);
    }

    #[test]
    fn a_download_connections_requests_are_never_paced() {
        let now = Instant::now();
        let mut p = SendPacing::new(now, MSS, 4 << 20);
        // 2,000 requests of 200 bytes, each answered with 16 KiB.
        for _ in 0..2000 {
            // Never a wait: at most a write cut in two where pacing could start.
            let mut left = 200;
            while left > 0 {
                let allowed = p.allowance(now);
                assert!(allowed > 0);
                p.consume(allowed.min(left));
                left -= allowed.min(left);
            }
            p.on_read(16 << 10);
            p.on_sample(now, ms(20), 0, 0);
        }
        assert!(!p.engaged());
        // Had it written more than it read, it would be an upload: paced.
        p.consume(40 << 20);
        assert!(p.engaged());
    }

    #[test]
    fn rising_delay_slows_the_writes_and_falling_delay_speeds_them_up() {
        let start = Instant::now();
        let mut p = SendPacing::new(start, MSS, 16 << 20);
        p.consume(PACE_WRITES_AFTER);
        let mut acked = 0;
        // An idle path (20 ms): the window grows.
        let now = run(&mut p, start, ms(20), ms(20), 300, &mut acked);
        let grown = p.window();
        assert!(grown > 8 * MSS, "{grown}");
        let fast = p.rate();
        // 100 ms of queueing (above the 60 ms target): it shrinks.
        let now = run(&mut p, now, ms(120), ms(120), 40, &mut acked);
        let shrunk = p.window();
        assert!(shrunk < grown / 2, "{shrunk} vs {grown}");
        assert!(p.rate() < fast / 4.0, "{} vs {fast}", p.rate());
        // Never under two segments.
        assert!(shrunk >= 2 * MSS, "{shrunk}");
        // The queue drains: it grows again.
        run(&mut p, now, ms(20), ms(20), 300, &mut acked);
        assert!(p.window() > shrunk, "{} vs {shrunk}", p.window());
    }

    #[test]
    fn a_retransmission_halves_the_window() {
        let start = Instant::now();
        let mut p = SendPacing::new(start, MSS, 16 << 20);
        p.consume(PACE_WRITES_AFTER);
        let mut acked = 0;
        let now = run(&mut p, start, ms(20), ms(20), 300, &mut acked);
        let before = p.window();
        p.on_sample(now + ms(20), ms(20), acked, 1);
        assert!(p.window() <= before / 2 + 1, "{} vs {before}", p.window());
    }
}
