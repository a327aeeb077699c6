//! A latency proxy for `cargo xtask bench --rtt MS`: a TCP relay on 127.0.0.1
//! that delays each direction by half the round-trip time, keeps the bytes'
//! order, and does not limit bandwidth.
//!
//! Why: on 127.0.0.1 a round trip costs microseconds, so a benchmark there
//! hides whatever a client pays per round trip (handshakes, one request after
//! another, flow-control windows). This kernel has no `netem`, so the delay
//! is made in user space, as toxiproxy does: the clients connect to the proxy
//! and the proxy to nginx.
//!
//! How: each accepted connection gets its own connection to the upstream and
//! a pipe per direction. A reader thread reads a chunk at time `t` and queues
//! it, due at `t + rtt/2`; a writer thread sleeps until each chunk is due and
//! writes it on. The reader keeps reading while earlier chunks wait, so the
//! pipe holds a bandwidth-delay product and a transfer's throughput is not
//! divided by the delay; a request and its response cost one RTT, as on a
//! real link. An end of stream is delayed like the bytes before it, then
//! passed on as a half-close (`shutdown(Write)`); an error on either side
//! closes both. `TCP_NODELAY` is set on both sockets, so the proxy adds no
//! Nagle delay to the one it models. A new connection also waits one RTT
//! before its first byte is read: on a real link the TCP handshake costs one
//! round trip before the client's first byte leaves (here the kernel
//! completes the client's `connect` at once).
//!
//! What it does not model: loss and retransmission, jitter, reordering, a
//! bandwidth limit (the link is as fast as loopback), and TCP's own reaction
//! to the delay: each leg is a loopback connection, so slow start and the TCP
//! windows see no RTT (end-to-end windows do: HTTP/2's flow control and TLS
//! round trips pay it in full). An error (a reset) on one side closes both at
//! once, not after the delay, and the other side sees an end of stream rather
//! than a reset. Each direction queues at most [`QUEUE_CAP`] bytes (then its
//! reader waits), so one connection carries at most `QUEUE_CAP / (rtt/2)`
//! bytes a second each way (1.25 GiB/s at 100 ms).

use std::collections::VecDeque;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The bytes one direction of a connection may hold while they wait for
/// their due time; the reader waits beyond it, so memory stays bounded.
const QUEUE_CAP: usize = 64 << 20;

/// The most one read takes from a socket (one queued chunk).
const CHUNK: usize = 64 << 10;

/// How long the proxy waits for the upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A delay proxy on 127.0.0.1 in front of `upstream`. Dropping it stops
/// accepting, closes every connection it relays (both sockets) and joins
/// its threads.
pub struct LatencyProxy {
    addr: SocketAddr,
    rtt: Duration,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl LatencyProxy {
    /// Listens on 127.0.0.1 (a free port) and relays each connection to
    /// `upstream`, each direction delayed by `rtt / 2`; `rtt` zero relays
    /// without waiting.
    pub fn start(upstream: SocketAddr, rtt: Duration) -> Result<LatencyProxy> {
        Self::start_with_cap(upstream, rtt, QUEUE_CAP)
    }

    fn start_with_cap(upstream: SocketAddr, rtt: Duration, cap: usize) -> Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the latency proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            rtt,
            cap,
            registry: Mutex::new(Registry::default()),
            wake: Condvar::new(),
            accepted: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("latency-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .context("starting the latency proxy's thread")?
        };
        Ok(LatencyProxy {
            addr,
            rtt,
            shared,
            accept: Some(accept),
        })
    }

    /// Where the clients connect (127.0.0.1 and the port it listens on).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connections accepted so far, so a bench can check its clients
    /// went through the proxy.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LatencyProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyProxy")
            .field("addr", &self.addr)
            .field("rtt", &self.rtt)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.shared.stop();
        // Wakes the accept thread, which sees the flag and ends (dropping
        // the listener).
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // No connection thread starts after the accept thread ended; each
        // one ends now that its sockets are shut down or it saw the flag.
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// What the proxy's threads share.
struct Shared {
    upstream: SocketAddr,
    rtt: Duration,
    cap: usize,
    registry: Mutex<Registry>,
    /// Wakes connections waiting out their handshake delay when the proxy stops.
    wake: Condvar,
    accepted: AtomicU64,
    /// The connection threads not yet seen to end, joined on drop.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The live connections, so dropping the proxy can close them.
#[derive(Default)]
struct Registry {
    stopping: bool,
    conns: Vec<Arc<Conn>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        lock(&self.registry).stopping
    }

    /// Stops: every registered connection is closed, and one that registers
    /// later closes itself (the flag and the list share one lock).
    fn stop(&self) {
        let mut registry = lock(&self.registry);
        registry.stopping = true;
        for conn in &registry.conns {
            conn.abort();
        }
        self.wake.notify_all();
    }

    /// Adds `conn`, unless the proxy is stopping (then false).
    fn register(&self, conn: &Arc<Conn>) -> bool {
        let mut registry = lock(&self.registry);
        if registry.stopping {
            return false;
        }
        registry.conns.push(Arc::clone(conn));
        true
    }

    fn deregister(&self, conn: &Arc<Conn>) {
        lock(&self.registry).conns.retain(|c| !Arc::ptr_eq(c, conn));
    }

    /// Sleeps for `d` unless the proxy stops first (then false).
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut registry = lock(&self.registry);
        loop {
            if registry.stopping {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            registry = self
                .wake
                .wait_timeout(registry, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A lock that survives a panicked holder (the state stays consistent: each
/// holder changes it in one step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let client = match stream {
            Ok(s) => s,
            // Out of file descriptors, say: wait instead of spinning.
            Err(_) => {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let conn_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("latency-conn".into())
            .spawn(move || relay(client, &conn_shared));
        // If the thread cannot start, the client was dropped with the
        // closure: it sees the connection closed.
        if let Ok(handle) = spawned {
            let mut threads = lock(&shared.threads);
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
    }
}

/// One relayed connection: its two sockets and a pipe per direction.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// Client to server.
    up: Pipe,
    /// Server to client.
    down: Pipe,
}

impl Conn {
    /// Closes both sides at once: every thread of the connection wakes and ends.
    fn abort(&self) {
        self.up.abort();
        self.down.abort();
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// Relays one accepted connection until both directions end or one fails.
fn relay(client: TcpStream, shared: &Shared) {
    // The TCP handshake's round trip, which the kernel skipped for the client.
    if !shared.sleep(shared.rtt) {
        return;
    }
    let server = match TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            // The client sees its connection closed; this says why.
            eprintln!("latency proxy: connecting to {}: {e}", shared.upstream);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let conn = Arc::new(Conn {
        client,
        server,
        up: Pipe::default(),
        down: Pipe::default(),
    });
    if !shared.register(&conn) {
        return;
    }
    let half = shared.rtt / 2;
    let cap = shared.cap;
    let c = &*conn;
    let named = |name: &str| thread::Builder::new().name(name.into());
    thread::scope(|s| {
        let started = [
            named("latency-up-read").spawn_scoped(s, move || read_side(c, &c.client, &c.up, half, cap)),
            named("latency-up-write").spawn_scoped(s, move || write_side(c, &c.server, &c.up)),
            named("latency-down-read").spawn_scoped(s, move || read_side(c, &c.server, &c.down, half, cap)),
        ];
        if started.iter().any(Result::is_err) {
            c.abort();
        }
        write_side(c, &c.client, &c.down);
    });
    shared.deregister(&conn);
}

/// One direction's queue: chunks with their due times, then the end of stream.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    /// Signals both ends: a chunk or the end queued, room made, an abort.
    changed: Condvar,
}

#[derive(Default)]
struct PipeState {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    /// The bytes in `chunks`.
    bytes: usize,
    /// When the end of stream is due (the reader read EOF).
    eof: Option<Instant>,
    aborted: bool,
}

impl Pipe {
    fn abort(&self) {
        lock(&self.state).aborted = true;
        self.changed.notify_all();
    }
}

/// Reads `from` into `pipe`, each chunk due `half` after it was read;
/// waits while the pipe holds `cap` bytes or more.
fn read_side(conn: &Conn, from: &TcpStream, pipe: &Pipe, half: Duration, cap: usize) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return conn.abort(),
        };
        let due = Instant::now() + half;
        let mut state = lock(&pipe.state);
        while state.bytes >= cap && !state.aborted {
            state = pipe.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.aborted {
            return;
        }
        if n == 0 {
            state.eof = Some(due);
            pipe.changed.notify_all();
            return;
        }
        state.chunks.push_back((due, buf[..n].to_vec()));
        state.bytes += n;
        pipe.changed.notify_all();
    }
}

/// Writes `pipe`'s chunks to `to`, each at its due time, in order; at the
/// end of stream shuts down `to`'s write half.
fn write_side(conn: &Conn, to: &TcpStream, pipe: &Pipe) {
    loop {
        let chunk = {
            let mut state = lock(&pipe.state);
            loop {
                if state.aborted {
                    return;
                }
                let due = match (state.chunks.front(), state.eof) {
                    (Some((due, _)), _) => *due,
                    (None, Some(due)) => due,
                    (None, None) => {
                        state = pipe.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                };
                let now = Instant::now();
                if now < due {
                    state = pipe
                        .changed
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                match state.chunks.pop_front() {
                    Some((_, chunk)) => {
                        state.bytes -= chunk.len();
                        pipe.changed.notify_all();
                        break chunk;
                    }
                    None => {
                        drop(state);
                        let _ = to.shutdown(Shutdown::Write);
                        return;
                    }
                }
            }
        };
        if (&*to).write_all(&chunk).is_err() {
            return conn.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An echo server for one connection: echoes until EOF, then shuts down
    /// its write half and sends the number of bytes it echoed.
    fn echo_once() -> (SocketAddr, mpsc::Receiver<u64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let (mut r, mut w) = (&s, &s);
            let n = std::io::copy(&mut r, &mut w).unwrap_or(u64::MAX);
            let _ = s.shutdown(Shutdown::Write);
            let _ = tx.send(n);
        });
        (addr, rx)
    }

    fn connect(proxy: &LatencyProxy) -> TcpStream {
        let c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_nodelay(true).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    /// One byte there and back; how long it took.
    fn round_trip(c: &mut TcpStream) -> Duration {
        let start = Instant::now();
        c.write_all(b"x").unwrap();
        let mut b = [0u8];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        start.elapsed()
    }

    /// Reads until the connection ends (EOF or an error); fails on a timeout.
    fn assert_closed(c: &mut TcpStream) {
        let mut buf = [0u8; 64];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    assert!(
                        !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                        "still open"
                    );
                    return;
                }
            }
        }
    }

    /// xorshift64*: pseudo-random bytes, the same for a seed.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn a_round_trip_costs_one_rtt_and_a_new_connection_one_more() {
        let (echo, _) = echo_once();
        let proxy = LatencyProxy::start(echo, ms(100)).unwrap();
        let start = Instant::now();
        let mut c = connect(&proxy);
        let first = round_trip(&mut c);
        let connected = start.elapsed();
        let second = round_trip(&mut c);
        assert!(
            connected >= ms(200) && connected < ms(400),
            "connect + round trip {connected:?}"
        );
        assert!(first >= ms(200), "first round trip {first:?}");
        assert!(second >= ms(100) && second < ms(300), "round trip {second:?}");
        assert_eq!(proxy.connections(), 1);
    }

    #[test]
    fn no_rtt_adds_no_delay() {
        let (echo, _) = echo_once();
        let proxy = LatencyProxy::start(echo, Duration::ZERO).unwrap();
        let start = Instant::now();
        let mut c = connect(&proxy);
        round_trip(&mut c);
        let second = round_trip(&mut c);
        assert!(
            start.elapsed() < ms(50),
            "connect + 2 round trips {:?}",
            start.elapsed()
        );
        assert!(second < ms(50), "round trip {second:?}");
    }

    #[test]
    fn the_delay_keeps_order_and_does_not_cap_bandwidth() {
        const LEN: usize = 32 << 20;
        let (echo, echoed) = echo_once();
        let proxy = LatencyProxy::start(echo, ms(20)).unwrap();
        let data = Arc::new(noise(LEN, 0x9e37_79b9_7f4a_7c15));
        let start = Instant::now();
        let mut c = connect(&proxy);
        let writer = {
            let (mut w, data) = (c.try_clone().unwrap(), Arc::clone(&data));
            thread::spawn(move || {
                // Odd sizes, so the proxy's chunks do not line up with ours.
                for part in data.chunks(12_345) {
                    w.write_all(part).unwrap();
                }
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::with_capacity(LEN);
        c.read_to_end(&mut back).unwrap();
        let took = start.elapsed();
        writer.join().unwrap();
        assert_eq!(echoed.recv().unwrap(), LEN as u64);
        assert_eq!(back.len(), LEN);
        assert!(back == *data, "the bytes came back changed or out of order");
        // At least 512 chunks of 64 KiB each way: one RTT apiece would be 10 s.
        assert!(took < Duration::from_secs(5), "32 MiB echoed in {took:?}");
    }

    #[test]
    fn a_half_close_arrives_after_the_bytes_before_it() {
        const LEN: usize = 256 << 10;
        let (echo, echoed) = echo_once();
        let proxy = LatencyProxy::start(echo, ms(100)).unwrap();
        let mut c = connect(&proxy);
        let data = noise(LEN, 7);
        let reader = {
            let mut r = c.try_clone().unwrap();
            thread::spawn(move || {
                let mut back = Vec::new();
                r.read_to_end(&mut back).unwrap();
                (back, Instant::now())
            })
        };
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let closed = Instant::now();
        // The echo server saw the end of stream after every byte...
        let n = echoed.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(n, LEN as u64);
        // ...and the client, its half still open, reads them all, then EOF
        // one RTT later at the earliest (there and back).
        let (back, eof) = reader.join().unwrap();
        assert!(back == data, "{} bytes back of {LEN}", back.len());
        assert!(eof - closed >= ms(100), "EOF after {:?}", eof - closed);
    }

    #[test]
    fn a_full_queue_stops_the_reader() {
        const LEN: usize = 4 << 20;
        const CAP: usize = 64 << 10;
        // A sink: counts to EOF and answers with the count.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let n = std::io::copy(&mut s, &mut std::io::sink()).unwrap();
            s.write_all(&n.to_le_bytes()).unwrap();
        });
        let proxy = LatencyProxy::start_with_cap(sink, ms(20), CAP).unwrap();
        let mut c = connect(&proxy);
        // Past the handshake delay, so only the queue slows what follows.
        thread::sleep(ms(40));
        let start = Instant::now();
        c.write_all(&noise(LEN, 3)).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut n = [0u8; 8];
        c.read_exact(&mut n).unwrap();
        let took = start.elapsed();
        assert_eq!(u64::from_le_bytes(n), LEN as u64);
        // At most CAP + one chunk wait 10 ms at a time: 4 MiB takes 32 such waits.
        assert!(took >= ms(250), "4 MiB through a 64 KiB queue in {took:?}");
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections_and_stops_accepting() {
        let (echo, echoed) = echo_once();
        let proxy = LatencyProxy::start(echo, ms(400)).unwrap();
        let addr = proxy.addr();
        let mut c = connect(&proxy);
        round_trip(&mut c);
        // A byte waiting 200 ms in the pipe: the drop does not wait for it.
        c.write_all(b"y").unwrap();
        let start = Instant::now();
        drop(proxy);
        assert!(start.elapsed() < ms(150), "drop took {:?}", start.elapsed());
        assert_closed(&mut c);
        // The upstream side was closed too.
        echoed.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn dropping_the_proxy_cuts_a_handshake_delay_short() {
        let (echo, _) = echo_once();
        let proxy = LatencyProxy::start(echo, Duration::from_secs(60)).unwrap();
        let mut c = connect(&proxy);
        c.write_all(b"x").unwrap();
        while proxy.connections() == 0 {
            thread::sleep(ms(1));
        }
        let start = Instant::now();
        drop(proxy);
        assert!(start.elapsed() < ms(500), "drop took {:?}", start.elapsed());
        assert_closed(&mut c);
    }

    #[test]
    fn a_refused_upstream_closes_the_client() {
        let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let proxy = LatencyProxy::start(gone, Duration::ZERO).unwrap();
        let mut c = connect(&proxy);
        assert_closed(&mut c);
    }
}
