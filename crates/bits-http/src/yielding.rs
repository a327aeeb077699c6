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
use tokio::io::{AsyncRead, ReadBuf};

use crate::ledbat::{supports_midstream_clamp, LedbatConfig, LedbatController, Pacer, MIN_WINDOW_SEGMENTS};

/// The shortest time between two `TCP_INFO` samples of a connection.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(2);

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
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
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
        let mut yielder = Yielder {
            fd,
            controller,
            pacer,
            status: YieldStatus::new(kind, window),
            last_sample: None,
            last: first,
            clamp: 0,
            sleep: None,
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
        if self
            .last_sample
            .is_some_and(|at| now.duration_since(at) < SAMPLE_EVERY)
        {
            return;
        }
        self.last_sample = Some(now);
        let Ok(info) = tcp_info(self.fd) else { return };
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
                if wanted != self.clamp && set_window_clamp(self.fd, wanted).is_ok() {
                    self.clamp = wanted;
                    // What the kernel holds (it keeps at least its own minimum).
                    self.status
                        .set_limit(window_clamp(self.fd).map_or(window, u64::from));
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
            return Pin::new(inner).poll_read(cx, buf);
        };
        let mut now = now;
        let allowance = loop {
            let allowance = pacer.allowance(now);
            if allowance > 0 {
                break allowance;
            }
            let wait = pacer
                .time_until(now, buf.remaining() as u64)
                .max(Duration::from_millis(1));
            let deadline = tokio::time::Instant::now() + wait;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            sleep.as_mut().reset(deadline);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            now = Instant::now();
        };
        let n = usize::try_from(allowance)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(n));
        let result = Pin::new(inner).poll_read(cx, &mut sub);
        let read = sub.filled().len();
        buf.advance(read);
        pacer.consume(read as u64);
        result
    }
}
