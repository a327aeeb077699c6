//! A yielding connection's window is really clamped (read back from the
//! client's own socket with getsockopt), a FOREGROUND one's is not, and
//! downloads under the controller (clamped or paced) arrive whole; an
//! upload's writes are paced by a controller of their own and arrive whole.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

use bits_core::{ConnectionPolicy, Request, RequestBody, Response, Transport, YieldController};
use bits_http::yielding::{force_paced_reads, window_clamp};
use bits_http::PlainHttp;
use bits_testkit::http::{HttpServer, Route};
use url::Url;

/// The tests switch a process-wide setting: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SIZE: usize = 8 << 20;

fn payload() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

/// The descriptors of this process's TCP sockets connected to `port` on
/// 127.0.0.1 (the client ends: `/proc/net/tcp`'s remote address, then the
/// socket inode among `/proc/self/fd`).
fn client_fds(port: u16) -> Vec<i32> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // 01: ESTABLISHED.
            (cols.get(2) == Some(&remote.as_str()) && cols.get(3) == Some(&"01")).then(|| cols[9].to_owned())
        })
        .collect();
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if inodes.iter().any(|i| link == format!("socket:[{i}]")) {
            fds.push(entry.file_name().to_string_lossy().parse().unwrap());
        }
    }
    fds
}

async fn rest(r: &mut Response, mut out: Vec<u8>) -> Vec<u8> {
    while let Some(c) = r.body.next_chunk().await.unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

/// Downloads the payload under `policy`; returns the response's yielding
/// report, a fresh socket's clamp, the clamp of the client socket once the
/// body is in (the connection idle in its pool, so nothing moves it), and
/// the body.
async fn download(policy: ConnectionPolicy) -> (Option<(YieldController, u64)>, u32, u32, Vec<u8>) {
    let server = HttpServer::start().with("/big", Route::body(payload()));
    let port = Url::parse(&server.url("/big")).unwrap().port().unwrap();
    // A fresh connection's clamp, as the kernel chooses it.
    let fresh = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let default = window_clamp(fresh.as_raw_fd()).unwrap();
    drop(fresh);
    let t = PlainHttp::new();
    let mut r = t
        .send(Request::get(Url::parse(&server.url("/big")).unwrap(), policy))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let body = rest(&mut r, Vec::new()).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let fds = client_fds(port);
    assert_eq!(fds.len(), 1, "one connection to the server: {fds:?}");
    let clamp = window_clamp(fds[0]).unwrap();
    let yielding = r.yielding().map(|y| (y.controller(), y.limit()));
    (yielding, default, clamp, body)
}

#[tokio::test]
async fn a_yielding_connection_has_its_window_clamped() {
    let _serial = SERIAL.lock().await;
    if bits_http::yielding::controller_in_use() != YieldController::WindowClamp {
        eprintln!("skipped: this kernel cannot clamp mid-stream");
        return;
    }
    let (yielding, default, clamp, body) = download(ConnectionPolicy::default().with_yielding(true)).await;
    let (controller, limit) = yielding.expect("a yielding response says so");
    assert_eq!(controller, YieldController::WindowClamp);
    // The socket holds the controller's window, read back from the kernel.
    assert_eq!(u64::from(clamp), limit, "default {default}");
    assert!(clamp >= 2 * 536, "never under two segments: {clamp}");
    // The controller starts at two segments and grows by at most a
    // sixteenth of what arrives while the path's RTT is this short.
    assert!(limit <= 2 * 65_536 + (SIZE as u64) / 16 + 65_536, "{limit}");
    assert!(body == payload(), "the body arrives whole ({} bytes)", body.len());
}

#[tokio::test]
async fn a_foreground_connection_is_not_clamped() {
    let _serial = SERIAL.lock().await;
    let (yielding, default, clamp, body) = download(ConnectionPolicy::default()).await;
    assert!(yielding.is_none());
    // Receive-buffer autotuning may raise it; nothing lowers it.
    assert!(clamp >= default, "clamp {clamp} vs default {default}");
    assert!(body == payload(), "the body arrives whole ({} bytes)", body.len());
}

#[tokio::test]
async fn paced_reads_download_whole() {
    let _serial = SERIAL.lock().await;
    force_paced_reads(true);
    let (yielding, default, clamp, body) = download(ConnectionPolicy::default().with_yielding(true)).await;
    force_paced_reads(false);
    let (controller, limit) = yielding.expect("a yielding response says so");
    assert_eq!(controller, YieldController::PacedReads);
    assert!(limit >= 2 * 536, "{limit}");
    // Paced, not clamped.
    assert!(clamp >= default, "clamp {clamp} vs default {default}");
    assert!(body == payload(), "the body arrives whole ({} bytes)", body.len());
}

#[tokio::test]
async fn a_yielding_upload_is_paced_and_arrives_whole() {
    let _serial = SERIAL.lock().await;
    let server = HttpServer::start().with("/up", Route::status(201));
    let t = PlainHttp::new();
    let url = Url::parse(&server.url("/up")).unwrap();
    let started = std::time::Instant::now();
    let r = t
        .send(
            Request::new(
                http::Method::PUT,
                url,
                ConnectionPolicy::default().with_yielding(true),
            )
            .with_body(RequestBody::from_bytes(payload())),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let (_, limit) = r
        .yielding()
        .map(|y| (y.controller(), y.limit()))
        .expect("a yielding response says so");
    // The send side's window (two segments at first, grown by what the
    // peer acknowledged at loopback's tiny RTT), not the receive side's.
    assert!(limit >= 2 * 536, "{limit}");
    let got = server.requests_for("/up");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].body[..] == payload()[..],
        "{} bytes arrived",
        got[0].body.len()
    );
    // (Here as fast as a FOREGROUND upload: the debug test server is the
    // bottleneck, and an idle loopback adds no queueing delay.)
    eprintln!(
        "8 MiB paced upload on loopback: {:?}, window {limit}",
        started.elapsed()
    );
}
