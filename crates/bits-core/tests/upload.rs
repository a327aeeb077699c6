//! Upload jobs through the real engine, the real plain-HTTP transport and
//! a real `bits serve` server (bits-serve on 127.0.0.1): what lands on the
//! server's disk is what counts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bits_core::{Engine, Job, JobState, JobType, NoObserver, UploadSession};
use bits_http::PlainHttp;
use bits_serve::{ContentRange, Limits, Root, Server, Sessions};

mod support;

use support::{body, upload_job};

/// A `bits serve` on a temp root, and a temp folder for sources.
struct World {
    root: tempfile::TempDir,
    local: tempfile::TempDir,
    addr: SocketAddr,
    sessions: Sessions,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl World {
    async fn new(limits: Limits) -> World {
        World::with(limits, None).await
    }

    /// A server that answers upload-reply jobs with `reply` (a program).
    async fn replying(reply: PathBuf) -> World {
        World::with(Limits::default(), Some(reply)).await
    }

    async fn with(limits: Limits, reply: Option<PathBuf>) -> World {
        World::serving(limits, |server| match reply {
            Some(reply) => server.with_reply_command(reply),
            None => server,
        })
        .await
    }

    /// A server that names `host` in its Create-Session Acks
    /// (`BITS-Host-Id`), with `fallback`.
    async fn farm(host: &str, fallback: Option<std::time::Duration>) -> World {
        World::serving(Limits::default(), |server| {
            server.with_host_id(host, fallback).unwrap()
        })
        .await
    }

    async fn serving(limits: Limits, setup: impl FnOnce(Server) -> Server) -> World {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(Root::new(root.path()).unwrap(), limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = setup(Server::new(sessions.clone()));
        let task = tokio::spawn(Arc::new(server).run(listener, None));
        World {
            root,
            local,
            addr,
            sessions,
            task,
        }
    }

    /// A source file of `len` bytes, and a QUEUED upload job of it to
    /// `/up/NAME`.
    fn job(&self, name: &str, len: usize) -> (Job, PathBuf) {
        self.job_of(JobType::Upload, name, len)
    }

    fn job_of(&self, kind: JobType, name: &str, len: usize) -> (Job, PathBuf) {
        upload_job(self.local.path(), self.addr, kind, name, len)
    }

    fn served(&self, name: &str) -> PathBuf {
        self.root.path().join("up").join(name)
    }

    /// The hidden files left in the upload folder.
    fn leftovers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.path().join("up")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }
}

fn engine() -> Engine {
    Engine::new(Arc::new(PlainHttp::new()))
}

/// The session a daemon stored: `id`, `acked` bytes acknowledged, of a
/// `len`-byte source as `source` is now.
fn session(id: impl Into<String>, acked: u64, len: u64, source: &Path) -> UploadSession {
    UploadSession {
        id: id.into(),
        acked,
        source_len: len,
        source_modified: std::fs::metadata(source).unwrap().modified().ok(),
        reply_url: None,
        host_id: None,
        host_id_fallback: None,
    }
}

#[tokio::test]
async fn an_upload_lands_whole_on_the_server_in_growing_fragments() {
    let w = World::new(Limits::default()).await;
    let (mut job, source) = w.job("a.bin", 3_000_000);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert_eq!(
        std::fs::read(w.served("a.bin")).unwrap(),
        std::fs::read(&source).unwrap()
    );
    assert_eq!(job.files[0].bytes_transferred, 3_000_000);
    assert_eq!(job.files[0].bytes_total, Some(3_000_000));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    bits_core::engine::complete(&mut job).unwrap();
    assert_eq!(job.state(), JobState::Acknowledged);
    // The source is left as it was.
    assert_eq!(std::fs::read(&source).unwrap(), body(3_000_000));
}

#[tokio::test]
async fn an_empty_file_and_a_one_byte_file_upload() {
    let w = World::new(Limits::default()).await;
    for len in [0, 1] {
        let name = format!("f{len}");
        let (mut job, _) = w.job(&name, len);
        assert_eq!(
            engine().run(&mut job, &mut NoObserver).await.state,
            JobState::Transferred,
            "{len}: {:?}",
            job.error
        );
        assert_eq!(std::fs::read(w.served(&name)).unwrap().len(), len);
    }
}

#[tokio::test]
async fn a_stored_session_is_continued_from_what_the_server_holds() {
    let w = World::new(Limits::default()).await;
    let (mut job, source) = w.job("b.bin", 500_000);
    // The session a killed daemon left: the server holds 200,000 bytes,
    // the job remembers an older Ack (100,000).
    let id = w.sessions.create("/up/b.bin").unwrap();
    let data = body(500_000);
    let range = ContentRange {
        first: 0,
        last: 199_999,
        total: 500_000,
    };
    let mut writer = w
        .sessions
        .fragment("/up/b.bin", &id, range, Some(200_000))
        .unwrap();
    writer.write(&data[..200_000]).unwrap();
    writer.finish().unwrap();
    job.files[0].upload = Some(session(id.clone(), 100_000, 500_000, &source));
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::Transferred,
        "{:?}",
        job.error
    );
    assert_eq!(job.files[0].upload.as_ref().unwrap().id, id, "the same session");
    assert_eq!(std::fs::read(w.served("b.bin")).unwrap(), data);
}

#[tokio::test]
async fn a_session_the_server_lost_starts_again_from_byte_0() {
    let w = World::new(Limits::default()).await;
    let (mut job, source) = w.job("c.bin", 100_000);
    job.files[0].upload = Some(session(
        "{00000000-0000-0000-0000-000000000000}",
        50_000,
        100_000,
        &source,
    ));
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::Transferred,
        "{:?}",
        job.error
    );
    assert_ne!(
        job.files[0].upload.as_ref().unwrap().id,
        "{00000000-0000-0000-0000-000000000000}"
    );
    assert_eq!(std::fs::read(w.served("c.bin")).unwrap(), body(100_000));
}

#[tokio::test]
async fn a_source_that_changed_since_the_session_began_fails_the_job() {
    let w = World::new(Limits::default()).await;
    let (mut job, source) = w.job("d.bin", 1000);
    let id = w.sessions.create("/up/d.bin").unwrap();
    // The job remembers a source of 999 bytes; it has 1000 now.
    job.files[0].upload = Some(session(id, 0, 999, &source));
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Error);
    let e = job.error.as_ref().unwrap();
    assert_eq!(e.code.0, 0x8020_001D, "{e:?}");
    assert!(!w.served("d.bin").exists());
}

#[tokio::test]
async fn server_refusals_carry_the_servers_code() {
    let w = World::new(Limits {
        max_upload_size: Some(1000),
        ..Limits::default()
    })
    .await;
    // An existing destination: 409 E_ACCESSDENIED, fatal.
    std::fs::create_dir_all(w.root.path().join("up")).unwrap();
    std::fs::write(w.served("e.bin"), b"old").unwrap();
    let (mut job, _) = w.job("e.bin", 10);
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::Error
    );
    assert_eq!(job.error.as_ref().unwrap().code.0, 0x8007_0005);
    assert_eq!(std::fs::read(w.served("e.bin")).unwrap(), b"old");
    // Over the server's limit: 500 BG_E_TOO_LARGE, transient as every 500.
    let (mut job, _) = w.job("f.bin", 2000);
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::TransientError
    );
    assert_eq!(job.error.as_ref().unwrap().code.0, 0x8020_0020);
    // A missing source: 0x80070002, fatal.
    let (mut job, source) = w.job("g.bin", 10);
    std::fs::remove_file(&source).unwrap();
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::Error
    );
    assert_eq!(job.error.as_ref().unwrap().code.0, 0x8007_0002);
}

#[tokio::test]
async fn cancel_session_deletes_what_the_server_holds() {
    let w = World::new(Limits::default()).await;
    let (mut job, source) = w.job("h.bin", 1000);
    let id = w.sessions.create("/up/h.bin").unwrap();
    job.files[0].upload = Some(session(id.clone(), 0, 1000, &source));
    assert_eq!(w.leftovers().len(), 2, "{:?}", w.leftovers());
    engine().cancel_upload_sessions(&job).await;
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    bits_core::engine::cancel(&mut job).unwrap();
    assert_eq!(job.state(), JobState::Cancelled);
    // A server that is gone: cancel still works.
    drop(w);
    engine().cancel_upload_sessions(&job).await;
}

/// A reply program: prints "reply to N bytes".
fn reply_program(dir: &Path) -> PathBuf {
    let script = dir.join("reply.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'reply to %s bytes' \"$(wc -c < \"$1\")\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn an_upload_reply_job_fetches_its_reply_and_complete_moves_it() {
    let programs = tempfile::tempdir().unwrap();
    let w = World::replying(reply_program(programs.path())).await;
    let (mut job, source) = w.job_of(JobType::UploadReply, "r.bin", 200_000);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert_eq!(std::fs::read(w.served("r.bin")).unwrap(), body(200_000));
    let reply = job.reply_file_name().unwrap();
    assert_eq!(reply, source.with_file_name("r.bin.reply"), "the default");
    assert!(!reply.exists(), "only on complete");
    bits_core::engine::complete(&mut job).unwrap();
    assert_eq!(std::fs::read_to_string(&reply).unwrap(), "reply to 200000 bytes");
    assert!(!job.reply_temp_name().unwrap().exists());
}

#[tokio::test]
async fn a_reply_resumes_with_range_and_a_lost_reply_url_is_asked_again() {
    let programs = tempfile::tempdir().unwrap();
    let w = World::replying(reply_program(programs.path())).await;
    let (mut job, source) = w.job_of(JobType::UploadReply, "s.bin", 5000);
    let elsewhere = w.local.path().join("answers.txt");
    job.set_reply_file_name(&elsewhere).unwrap();
    // The whole upload is on the server; the job stopped before it saved
    // the reply URL, with 6 bytes of the reply already received.
    let id = w.sessions.create("/up/s.bin").unwrap();
    let range = ContentRange {
        first: 0,
        last: 4999,
        total: 5000,
    };
    let mut writer = w.sessions.fragment("/up/s.bin", &id, range, Some(5000)).unwrap();
    writer.write(&body(5000)).unwrap();
    writer.finish().unwrap();
    job.files[0].upload = Some(session(id, 5000, 5000, &source));
    std::fs::write(job.reply_temp_name().unwrap(), b"reply ").unwrap();
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::Transferred,
        "{:?}",
        job.error
    );
    bits_core::engine::complete(&mut job).unwrap();
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        "reply to 5000 bytes"
    );
}

#[test]
fn the_reply_file_name_is_for_upload_reply_jobs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let mut up = Job::new("u", JobType::Upload, "plain");
    assert_eq!(
        up.set_reply_file_name(&dir.path().join("r"))
            .unwrap_err()
            .hresult()
            .0,
        0x8000_4001
    );
    let mut reply = Job::new("r", JobType::UploadReply, "plain");
    assert_eq!(
        reply
            .set_reply_file_name(Path::new("relative"))
            .unwrap_err()
            .hresult()
            .0,
        0x8007_0057
    );
    reply
        .add_file("http://127.0.0.1:1/x", &dir.path().join("f"))
        .unwrap();
    assert_eq!(reply.reply_file_name().unwrap(), dir.path().join("f.reply"));
    up.add_file("http://127.0.0.1:1/x", &dir.path().join("f"))
        .unwrap();
    assert_eq!(up.reply_file_name(), None);
}

#[test]
fn an_upload_takes_one_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::new("up", JobType::Upload, "plain");
    let missing = dir.path().join("missing");
    let e = job.add_file("http://127.0.0.1:1/x", &missing).unwrap_err();
    assert_eq!(e.hresult().0, 0x8007_0002);
    let e = job.add_file("http://127.0.0.1:1/x", dir.path()).unwrap_err();
    assert_eq!(e.hresult().0, 0x8007_0002);
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    job.add_file("http://127.0.0.1:1/x", &dir.path().join("f"))
        .unwrap();
    let e = job
        .add_file("http://127.0.0.1:1/y", &dir.path().join("f"))
        .unwrap_err();
    assert_eq!(e.hresult().0, 0x8020_001C);
}

/// The packets on the wire, checked against MC-BUP's text
/// (`bits-reference.md` §5), not against our server: a scripted server
/// (bits-testkit) that answers every packet with a fixed Ack records what
/// the client sent. Header names compare case-insensitively (HTTP).
#[tokio::test]
async fn the_packets_carry_mc_bups_headers() {
    use bits_testkit::http::{HttpServer, Route};
    const GUID: &str = "{7df0354d-249b-430f-820d-3d2a9bef4931}";
    let server = HttpServer::start().with(
        "/up/one.bin",
        Route::body("")
            .header("BITS-Packet-Type", "Ack")
            .header("BITS-Protocol", GUID)
            .header("BITS-Session-Id", "{S-1}")
            .header("BITS-Received-Content-Range", "1"),
    );
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("one.bin");
    std::fs::write(&source, b"x").unwrap();
    let mut job = Job::new("up", JobType::Upload, "plain");
    job.add_file(&server.url("/up/one.bin"), &source).unwrap();
    job.resume().unwrap();
    assert_eq!(
        engine().run(&mut job, &mut NoObserver).await.state,
        JobState::Transferred,
        "{:?}",
        job.error
    );
    let reqs = server.requests();
    let kinds: Vec<&str> = reqs
        .iter()
        .map(|r| r.header("bits-packet-type").unwrap())
        .collect();
    assert_eq!(kinds, ["Create-Session", "Fragment", "Close-Session"]);
    for r in &reqs {
        assert_eq!(r.method, "BITS_POST");
        assert!(
            r.header("content-length").is_some(),
            "every packet has a Content-Length: {r:?}"
        );
    }
    let create = &reqs[0];
    assert_eq!(create.header("bits-supported-protocols"), Some(GUID));
    assert_eq!(create.header("content-name"), Some("one.bin"));
    assert_eq!(create.header("bits-session-id"), None);
    let fragment = &reqs[1];
    assert_eq!(fragment.header("bits-session-id"), Some("{S-1}"));
    assert_eq!(fragment.header("content-range"), Some("bytes 0-0/1"));
    assert_eq!(fragment.header("content-length"), Some("1"));
    assert_eq!(
        fragment.header("content-name"),
        Some("one.bin"),
        "on the first fragment"
    );
    assert_eq!(fragment.header("content-encoding"), None, "identity: omitted");
    assert_eq!(&fragment.body[..], b"x");
    assert_eq!(reqs[2].header("bits-session-id"), Some("{S-1}"));
    assert_eq!(reqs[2].header("content-length"), Some("0"));
    // The names in MC-BUP's case, on the wire.
    let sent =
        |r: &bits_testkit::http::RecordedRequest, name: &str| r.names_as_sent.iter().any(|n| n == name);
    for name in [
        "BITS-Packet-Type",
        "BITS-Supported-Protocols",
        "Content-Name",
        "Content-Length",
    ] {
        assert!(sent(create, name), "{name} in {:?}", create.names_as_sent);
    }
    for name in [
        "BITS-Packet-Type",
        "BITS-Session-Id",
        "Content-Range",
        "Content-Length",
    ] {
        assert!(sent(fragment, name), "{name} in {:?}", fragment.names_as_sent);
    }
    assert!(sent(&reqs[2], "BITS-Session-Id"), "{:?}", reqs[2].names_as_sent);
}

/// The farm's other machine: a server of `w`'s root on 127.0.0.2, `w`'s
/// port; counts the connections it accepts.
async fn farm_peer(w: &World) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.2", w.addr.port()))
        .await
        .unwrap();
    let sessions = Sessions::new(Root::new(w.root.path()).unwrap(), Limits::default());
    let server = Arc::new(Server::new(sessions));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(server.clone().serve_connection(io));
        }
    });
    (accepted, task)
}

#[tokio::test]
async fn packets_after_create_session_go_to_the_bits_host_id() {
    let w = World::farm("127.0.0.2", None).await;
    let (accepted, peer) = farm_peer(&w).await;
    let (mut job, source) = w.job("farm.bin", 1_000_000);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    peer.abort();
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "no packet reached the host id"
    );
    let session = job.files[0].upload.as_ref().unwrap();
    assert_eq!(session.host_id.as_deref(), Some("127.0.0.2"));
    assert_eq!(session.host_id_fallback, None);
    assert_eq!(
        std::fs::read(w.served("farm.bin")).unwrap(),
        std::fs::read(&source).unwrap()
    );
}

#[tokio::test]
async fn an_unreachable_bits_host_id_is_left_after_its_fallback_timeout_and_not_before() {
    // No fallback timeout: the host id's failure is the job's (transient).
    let w = World::farm("127.0.0.2", None).await;
    let (mut job, _) = w.job("stuck.bin", 10_000);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::TransientError);
    assert_eq!(job.error.as_ref().unwrap().code.0, 0x8007_2EFD, "{:?}", job.error);
    assert!(
        w.leftovers().iter().any(|n| n.ends_with(".part")),
        "{:?}",
        w.leftovers()
    );

    // A fallback of one second: tried for a second, then the URL's host.
    let w = World::farm("127.0.0.2", Some(std::time::Duration::from_secs(1))).await;
    let (mut job, source) = w.job("back.bin", 300_000);
    let started = std::time::Instant::now();
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let session = job.files[0].upload.as_ref().unwrap();
    assert_eq!(session.host_id, None, "the fallback is stored");
    assert_eq!(session.host_id_fallback, Some(1));
    assert_eq!(
        std::fs::read(w.served("back.bin")).unwrap(),
        std::fs::read(&source).unwrap()
    );
}

#[tokio::test]
async fn a_capped_upload_keeps_to_its_rate() {
    let w = World::new(Limits::default()).await;
    let (mut job, source) = w.job("capped.bin", 1_536 << 10);
    job.set_max_rate(Some(512 << 10)).unwrap();
    let started = std::time::Instant::now();
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    let took = started.elapsed();
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert_eq!(
        std::fs::read(w.served("capped.bin")).unwrap(),
        std::fs::read(&source).unwrap()
    );
    // 1.5 MiB at 512 KiB/s: three seconds, less the first quarter second's
    // fragment that goes at once.
    assert!(took >= std::time::Duration::from_millis(2_600), "{took:?}");
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}
