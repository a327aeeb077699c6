//! `bits serve`'s server against hand-built MC-BUP packets: raw bytes on a
//! real TCP connection to 127.0.0.1, written from the protocol's text
//! (`bits-reference.md` §5), not by our client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bits_serve::{Limits, Root, Server, Sessions, PROTOCOL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Serving {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(root: &Path, limits: Limits) -> Serving {
    serve_with(Server::new(Sessions::new(Root::new(root).unwrap(), limits))).await
}

async fn serve_with(server: Server) -> Serving {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(Arc::new(server).run(listener, None));
    Serving { addr, task }
}

/// An answer: status, headers (names lower case), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `head` (request line and headers, `\r\n`-separated, without the
/// blank line) and `body` on a new connection; reads one answer.
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let raw = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(raw.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).await.unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: all[end..].to_vec(),
    }
}

async fn create(addr: SocketAddr, path: &str) -> Answer {
    send(
        addr,
        &format!(
            "BITS_POST {path} HTTP/1.1\r\nBITS-Packet-Type: Create-Session\r\n\
             BITS-Supported-Protocols: {PROTOCOL}\r\nContent-Name: f\r\nContent-Length: 0"
        ),
        b"",
    )
    .await
}

async fn fragment(addr: SocketAddr, path: &str, id: &str, first: u64, bytes: &[u8], total: u64) -> Answer {
    let last = first + bytes.len() as u64 - 1;
    send(
        addr,
        &format!(
            "BITS_POST {path} HTTP/1.1\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: {id}\r\n\
             Content-Range: bytes {first}-{last}/{total}\r\nContent-Length: {}",
            bytes.len()
        ),
        bytes,
    )
    .await
}

async fn packet(addr: SocketAddr, path: &str, kind: &str, id: &str) -> Answer {
    send(
        addr,
        &format!("BITS_POST {path} HTTP/1.1\r\nBITS-Packet-Type: {kind}\r\nBITS-Session-Id: {id}\r\nContent-Length: 0"),
        b"",
    )
    .await
}

fn is_ack(a: &Answer) {
    assert_eq!(a.h("bits-packet-type"), Some("Ack"), "{a:?}");
    assert!(a.h("content-length").is_some(), "{a:?}");
}

#[tokio::test]
async fn an_upload_packet_by_packet_then_served_with_range() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    let ping = send(
        s.addr,
        "BITS_POST /up/f.txt HTTP/1.1\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0",
        b"",
    )
    .await;
    assert_eq!(ping.status, 200);
    is_ack(&ping);

    let c = create(s.addr, "/up/f.txt").await;
    assert_eq!(c.status, 200, "{c:?}");
    is_ack(&c);
    assert_eq!(c.h("bits-protocol"), Some(PROTOCOL));
    assert_eq!(c.h("accept-encoding"), Some("Identity"));
    let id = c.h("bits-session-id").unwrap().to_owned();

    let f = fragment(s.addr, "/up/f.txt", &id, 0, b"hello ", 11).await;
    assert_eq!(
        (f.status, f.h("bits-received-content-range")),
        (200, Some("6")),
        "{f:?}"
    );
    is_ack(&f);
    assert!(f.h("bits-error-code").is_none());
    // Not served before Close-Session.
    assert_eq!(send(s.addr, "GET /up/f.txt HTTP/1.1", b"").await.status, 404);
    let f = fragment(s.addr, "/up/f.txt", &id, 6, b"world", 11).await;
    assert_eq!(f.h("bits-received-content-range"), Some("11"));
    let close = packet(s.addr, "/up/f.txt", "Close-Session", &id).await;
    assert_eq!(close.status, 200);
    is_ack(&close);
    assert_eq!(
        std::fs::read(dir.path().join("up/f.txt")).unwrap(),
        b"hello world"
    );

    let get = send(s.addr, "GET /up/f.txt HTTP/1.1", b"").await;
    assert_eq!((get.status, get.body.as_slice()), (200, &b"hello world"[..]));
    let etag = get.h("etag").unwrap().to_owned();
    let part = send(s.addr, "GET /up/f.txt HTTP/1.1\r\nRange: bytes=6-", b"").await;
    assert_eq!((part.status, part.body.as_slice()), (206, &b"world"[..]));
    assert_eq!(part.h("content-range"), Some("bytes 6-10/11"));
    let same = send(
        s.addr,
        &format!("GET /up/f.txt HTTP/1.1\r\nRange: bytes=6-\r\nIf-Range: {etag}"),
        b"",
    )
    .await;
    assert_eq!(same.status, 206);
    let changed = send(
        s.addr,
        "GET /up/f.txt HTTP/1.1\r\nRange: bytes=6-\r\nIf-Range: \"other\"",
        b"",
    )
    .await;
    assert_eq!(changed.status, 200);
    let head = send(s.addr, "HEAD /up/f.txt HTTP/1.1", b"").await;
    assert_eq!((head.status, head.h("content-length")), (200, Some("11")));
    assert_eq!(
        send(s.addr, "GET /up/f.txt HTTP/1.1\r\nRange: bytes=11-", b"")
            .await
            .status,
        416
    );
}

#[tokio::test]
async fn gaps_overlaps_and_changed_totals() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    let id = create(s.addr, "/f")
        .await
        .h("bits-session-id")
        .unwrap()
        .to_owned();
    fragment(s.addr, "/f", &id, 0, b"abcd", 8).await;
    let gap = fragment(s.addr, "/f", &id, 6, b"gh", 8).await;
    assert_eq!(gap.status, 416);
    is_ack(&gap);
    assert_eq!(gap.h("bits-received-content-range"), Some("4"));
    assert_eq!(gap.h("bits-error-context"), Some("0x5"));
    let overlap = fragment(s.addr, "/f", &id, 2, b"XXef", 8).await;
    assert_eq!(overlap.h("bits-received-content-range"), Some("6"));
    let changed = fragment(s.addr, "/f", &id, 6, b"gh", 9).await;
    assert_eq!(
        (changed.status, changed.h("bits-error-code")),
        (400, Some("0x80070057"))
    );
    fragment(s.addr, "/f", &id, 6, b"gh", 8).await;
    packet(s.addr, "/f", "Close-Session", &id).await;
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abcdefgh");
}

#[tokio::test]
async fn malformed_unknown_and_forbidden_packets() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(
        dir.path(),
        Limits {
            max_upload_size: Some(100),
            ..Limits::default()
        },
    )
    .await;
    let id = create(s.addr, "/f")
        .await
        .h("bits-session-id")
        .unwrap()
        .to_owned();
    // No Content-Length: no body; refused.
    let a = send(
        s.addr,
        &format!("BITS_POST /f HTTP/1.1\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: {id}\r\nContent-Range: bytes 0-3/4"),
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.h("bits-error-code")),
        (400, Some("0x80070057")),
        "{a:?}"
    );
    let a = packet(s.addr, "/f", "Frobnicate", &id).await;
    assert_eq!(a.status, 400);
    let a = send(s.addr, "BITS_POST /f HTTP/1.1\r\nContent-Length: 0", b"").await;
    assert_eq!(a.status, 400);
    let a = packet(s.addr, "/f", "Fragment", "{00000000-0000-0000-0000-000000000000}").await;
    assert_eq!(a.status, 400, "no Content-Range comes first");
    let a = fragment(s.addr, "/f", "{00000000-0000-0000-0000-000000000000}", 0, b"x", 1).await;
    assert_eq!((a.status, a.h("bits-error-code")), (500, Some("0x8020001F")));
    let a = fragment(s.addr, "/f", &id, 0, b"x", 101).await;
    assert_eq!((a.status, a.h("bits-error-code")), (500, Some("0x80200020")));
    let a = send(
        s.addr,
        "BITS_POST /f HTTP/1.1\r\nBITS-Packet-Type: Create-Session\r\nBITS-Supported-Protocols: {00000000-0000-0000-0000-000000000000}\r\nContent-Length: 0",
        b"",
    )
    .await;
    assert_eq!(a.status, 400);
    for path in ["/../x", "/%2e%2e/x", "/a/..%2f..%2fx"] {
        let a = create(s.addr, path).await;
        assert_eq!(
            (a.status, a.h("bits-error-code")),
            (403, Some("0x80070005")),
            "{path}"
        );
    }
    // The partial file is never served, by name or by traversal.
    let part = format!("/.f.bits-{id}.part");
    assert_eq!(
        send(s.addr, &format!("GET {part} HTTP/1.1"), b"").await.status,
        404
    );
    std::fs::write(dir.path().join("exists"), b"x").unwrap();
    assert_eq!(create(s.addr, "/exists").await.status, 409);
    assert_eq!(
        send(s.addr, "PUT /f HTTP/1.1\r\nContent-Length: 0", b"")
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn a_restarted_server_continues_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    let id = create(s.addr, "/f")
        .await
        .h("bits-session-id")
        .unwrap()
        .to_owned();
    fragment(s.addr, "/f", &id, 0, b"abc", 6).await;
    drop(s);
    let s = serve(dir.path(), Limits::default()).await;
    let gap = fragment(s.addr, "/f", &id, 5, b"f", 6).await;
    assert_eq!(gap.h("bits-received-content-range"), Some("3"));
    fragment(s.addr, "/f", &id, 3, b"def", 6).await;
    assert_eq!(packet(s.addr, "/f", "Close-Session", &id).await.status, 200);
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abcdef");
}

#[tokio::test]
async fn upload_reply_runs_the_command_once_and_serves_its_output_until_close() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let script = dir.path().join("reply.sh");
    let count = dir.path().join("runs");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> {}\nprintf 'got %s bytes' \"$(wc -c < \"$1\")\"\n",
            count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server =
        Server::new(Sessions::new(Root::new(&root).unwrap(), Limits::default())).with_reply_command(script);
    let s = serve_with(server).await;
    let id = create(s.addr, "/r.txt")
        .await
        .h("bits-session-id")
        .unwrap()
        .to_owned();
    let first = fragment(s.addr, "/r.txt", &id, 0, b"abc", 6).await;
    assert!(first.h("bits-reply-url").is_none(), "only on the last fragment");
    let last = fragment(s.addr, "/r.txt", &id, 3, b"def", 6).await;
    let url = last.h("bits-reply-url").expect("a reply URL").to_owned();
    assert_eq!(url, format!("http://{}/.bits-reply/{id}/r.txt", s.addr));
    // The last fragment again (a client that lost the Ack): same reply, no new run.
    let again = fragment(s.addr, "/r.txt", &id, 3, b"def", 6).await;
    assert_eq!(again.h("bits-reply-url"), Some(url.as_str()));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    let path = url.split_once(&s.addr.to_string()).unwrap().1.to_owned();
    let reply = send(s.addr, &format!("GET {path} HTTP/1.1"), b"").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"got 6 bytes"[..]));
    // The form of earlier versions (no upload path) still finds it; the
    // id with another upload's path does not.
    let old = send(s.addr, &format!("GET /.bits-reply/{id} HTTP/1.1"), b"").await;
    assert_eq!((old.status, old.body.as_slice()), (200, &b"got 6 bytes"[..]));
    let elsewhere = format!("GET /.bits-reply/{id}/other.txt HTTP/1.1");
    assert_eq!(send(s.addr, &elsewhere, b"").await.status, 404);
    assert_eq!(packet(s.addr, "/r.txt", "Close-Session", &id).await.status, 200);
    assert_eq!(
        send(s.addr, &format!("GET {path} HTTP/1.1"), b"").await.status,
        404
    );
    assert_eq!(std::fs::read(root.join("r.txt")).unwrap(), b"abcdef");
}

/// Uploads one byte as `/r` to `server`, whose reply command fails: the
/// last fragment's answer is a 500 of the application (context 0x7).
async fn upload_one_byte_to_a_failing_reply(server: Server) -> Answer {
    let s = serve_with(server).await;
    let id = create(s.addr, "/r")
        .await
        .h("bits-session-id")
        .unwrap()
        .to_owned();
    let a = fragment(s.addr, "/r", &id, 0, b"x", 1).await;
    assert_eq!((a.status, a.h("bits-error-context")), (500, Some("0x7")), "{a:?}");
    a
}

#[tokio::test]
async fn a_failing_reply_command_is_a_500_of_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(Sessions::new(Root::new(dir.path()).unwrap(), Limits::default()))
        .with_reply_command("/bin/false".into());
    let a = upload_one_byte_to_a_failing_reply(server).await;
    assert_eq!(a.h("bits-error-code"), Some("0x80004005"));
}

#[tokio::test]
async fn a_reply_command_that_runs_too_long_is_killed_and_a_500_of_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow.sh");
    let started = dir.path().join("started");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho $$ > {}\nexec sleep 30\n", started.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let server = Server::new(Sessions::new(Root::new(&root).unwrap(), Limits::default()))
        .with_reply_command(script)
        .with_reply_timeout(std::time::Duration::from_millis(300));
    upload_one_byte_to_a_failing_reply(server).await;
    // The command was killed, not left running.
    let pid = std::fs::read_to_string(&started).unwrap().trim().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the reply command still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A fragment refused before its bytes are read (an unknown session, a
/// gap) still gets its Ack when the client sends the whole body first, as
/// clients do: the server reads what is left instead of closing on it
/// (which reset the client's connection mid-write, so a lost session came
/// back as a network error instead of `BG_E_SESSION_NOT_FOUND`).
#[tokio::test]
async fn a_large_fragment_refused_before_its_body_is_read_still_gets_its_ack() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    let bytes = vec![7u8; 4 << 20];
    let total = 3 * bytes.len() as u64;
    let lost = fragment(
        s.addr,
        "/big",
        "{00000000-0000-0000-0000-000000000000}",
        0,
        &bytes,
        total,
    )
    .await;
    assert_eq!(lost.status, 500, "{lost:?}");
    is_ack(&lost);
    assert_eq!(lost.h("bits-error-code"), Some("0x8020001F"), "{lost:?}");
    let id = create(s.addr, "/big")
        .await
        .h("bits-session-id")
        .unwrap()
        .to_owned();
    let gap = fragment(s.addr, "/big", &id, bytes.len() as u64, &bytes, total).await;
    assert_eq!(gap.status, 416, "{gap:?}");
    assert_eq!(gap.h("bits-received-content-range"), Some("0"), "{gap:?}");
}
