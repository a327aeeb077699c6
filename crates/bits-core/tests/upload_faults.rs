//! Upload jobs through the real engine and plain-HTTP transport, against a
//! real bits-serve server behind a front that scripts what issue 17 lists:
//! a 503 storm (transient), a fatal 4xx, a server that forgets the session,
//! a 416 with the server's offset, a source changed mid-upload. The front
//! is an HTTP/1.1 server on 127.0.0.1 that hands each packet to
//! bits-serve's own handler unless the test's rule answers it itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bits_core::{Engine, Event, Job, JobState, JobType, NoObserver, Observer};
use bits_http::PlainHttp;
use bits_serve::{Limits, Root, Server, Sessions};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

mod support;

use support::{body, upload_job};

/// One packet as the front sees it, for the rule to judge.
struct Packet<'a> {
    /// For a Fragment: how many fragments came before it (to any path).
    fragment: Option<usize>,
    /// The URL path.
    path: &'a str,
    /// `BITS-Session-Id`.
    session: Option<&'a str>,
    /// The server's sessions: what one holds, or to make the server forget
    /// one.
    sessions: &'a Sessions,
}

/// What the front does with a packet.
enum Act {
    /// Hands it to bits-serve.
    Pass,
    /// Answers it itself with this status (its body read and dropped),
    /// with `BITS-Error-Code` when given (an Ack), else a bare answer, as
    /// a proxy or an overloaded front end gives.
    Answer(u16, Option<&'static str>),
    /// Hands it to bits-serve and holds the Ack this long.
    LateAck(Duration),
}

/// A packet as it went: its type, its `Content-Range` (first, last), the
/// answer's status and `BITS-Received-Content-Range`.
#[derive(Debug, Clone)]
struct Seen {
    kind: String,
    range: Option<(u64, u64)>,
    status: u16,
    received: Option<u64>,
}

type Rule = Box<dyn Fn(&Packet<'_>) -> Act + Send + Sync>;

struct Inner {
    server: Server,
    sessions: Sessions,
    rule: Rule,
    fragments: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// bits-serve on a temp root, behind the front.
struct Front {
    root: tempfile::TempDir,
    local: tempfile::TempDir,
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    async fn new(rule: impl Fn(&Packet<'_>) -> Act + Send + Sync + 'static) -> Front {
        let root = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(Root::new(root.path()).unwrap(), Limits::default());
        let inner = Arc::new(Inner {
            server: Server::new(sessions.clone()),
            sessions,
            rule: Box::new(rule),
            fragments: AtomicUsize::new(0),
            seen: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let inner = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let inner = Arc::clone(&inner);
                        async move { Ok::<_, Infallible>(inner.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        Front {
            root,
            local,
            addr,
            inner,
            task,
        }
    }

    /// A source file of `len` bytes, and a QUEUED upload job of it to
    /// `/up/NAME`.
    fn job(&self, name: &str, len: usize) -> (Job, PathBuf) {
        upload_job(self.local.path(), self.addr, JobType::Upload, name, len)
    }

    fn served(&self, name: &str) -> PathBuf {
        self.root.path().join("up").join(name)
    }

    /// The packets so far.
    fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// The packets so far of `kind`.
    fn seen_of(&self, kind: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.kind.eq_ignore_ascii_case(kind))
            .collect()
    }
}

impl Inner {
    async fn answer(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, std::io::Error>> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let kind = header("bits-packet-type").unwrap_or_default();
        let session = header("bits-session-id");
        let range = header("content-range").and_then(|r| {
            let (first, rest) = r.strip_prefix("bytes ")?.split_once('-')?;
            let last = rest.split('/').next()?;
            Some((first.parse().ok()?, last.parse().ok()?))
        });
        let fragment = kind
            .eq_ignore_ascii_case("fragment")
            .then(|| self.fragments.fetch_add(1, Ordering::SeqCst));
        let path = req.uri().path().to_owned();
        let act = (self.rule)(&Packet {
            fragment,
            path: &path,
            session: session.as_deref(),
            sessions: &self.sessions,
        });
        let response = match act {
            Act::Answer(status, code) => {
                let _ = req.into_body().collect().await;
                let mut r = Response::builder().status(status).header("content-length", "0");
                if let Some(code) = code {
                    r = r
                        .header("bits-packet-type", "Ack")
                        .header("bits-error-code", code)
                        .header("bits-error-context", "0x5");
                }
                r.body(Empty::new().map_err(|never| match never {}).boxed())
                    .unwrap()
            }
            Act::Pass => self.server.handle(req, false).await.map(BodyExt::boxed),
            Act::LateAck(late) => {
                let r = self.server.handle(req, false).await;
                tokio::time::sleep(late).await;
                r.map(BodyExt::boxed)
            }
        };
        let received = response
            .headers()
            .get("bits-received-content-range")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        self.seen.lock().unwrap().push(Seen {
            kind,
            range,
            status: response.status().as_u16(),
            received,
        });
        response
    }
}

fn engine() -> Engine {
    Engine::new(Arc::new(PlainHttp::new()))
}

/// The fragments that were answered 200/201, in order, are contiguous from
/// 0 to `total`: no byte was sent twice after its Ack, none skipped.
fn assert_contiguous(fragments: &[Seen], total: u64) {
    let mut at = 0;
    for f in fragments.iter().filter(|f| matches!(f.status, 200 | 201)) {
        let (first, last) = f.range.unwrap();
        assert_eq!(first, at, "{fragments:#?}");
        at = last + 1;
        assert_eq!(f.received, Some(at), "{fragments:#?}");
    }
    assert_eq!(at, total, "{fragments:#?}");
}

#[tokio::test]
async fn a_storm_of_5xx_is_transient_and_the_upload_goes_on_once_it_ends() {
    // From the third fragment on, seven packets in a row get the transient
    // statuses of upload.md (bare answers, as an overloaded front end
    // gives), then the server is back.
    const STORM: [u16; 7] = [503, 503, 502, 504, 500, 429, 408];
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    let front = Front::new(move |p| match p.fragment {
        Some(n) if n >= 2 => match STORM.get(count.fetch_add(1, Ordering::SeqCst)) {
            Some(&status) => Act::Answer(status, None),
            None => Act::Pass,
        },
        _ => Act::Pass,
    })
    .await;
    let total = 1_500_000;
    let (mut job, _) = front.job("storm.bin", total);
    let mut codes = Vec::new();
    for _ in 0..STORM.len() {
        let outcome = engine().run(&mut job, &mut NoObserver).await;
        assert_eq!(outcome.state, JobState::TransientError, "{:?}", job.error);
        codes.push(job.error.as_ref().unwrap().code.0);
        // The stored session and its offset are kept for the retry.
        assert!(job.files[0].upload.is_some());
        // What the scheduler's retry timer does.
        job.apply(Event::RetryTimer);
    }
    let expected: Vec<u32> = STORM.iter().map(|&s| 0x8019_0000 | s as u32).collect();
    assert_eq!(codes, expected);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert_eq!(std::fs::read(front.served("storm.bin")).unwrap(), body(total));
    assert_eq!(front.seen_of("Create-Session").len(), 1, "one session throughout");
    // Each retry went on from the server's offset.
    assert_contiguous(&front.seen_of("Fragment"), total as u64);
}

#[tokio::test]
async fn a_4xx_to_a_fragment_is_fatal_with_the_servers_code() {
    // The second fragment of each upload is refused; the name says how.
    let front = Front::new(|p| match (p.fragment, p.path) {
        (None, _) => Act::Pass,
        (Some(_), path) => {
            let first_of_its_upload = p.sessions.received(path, p.session.unwrap()).unwrap_or(0) == 0;
            match path.rsplit('/').next().unwrap() {
                _ if first_of_its_upload => Act::Pass,
                "coded.bin" => Act::Answer(400, Some("0x80070057")),
                "forbidden.bin" => Act::Answer(403, None),
                "gone.bin" => Act::Answer(404, None),
                "too-large.bin" => Act::Answer(413, None),
                _ => Act::Pass,
            }
        }
    })
    .await;
    for (name, code) in [
        ("coded.bin", 0x8007_0057),
        ("forbidden.bin", 0x8019_0193),
        ("gone.bin", 0x8019_0194),
        ("too-large.bin", 0x8019_019D),
    ] {
        let (mut job, _) = front.job(name, 500_000);
        let before = front.seen().len();
        let outcome = engine().run(&mut job, &mut NoObserver).await;
        assert_eq!(outcome.state, JobState::Error, "{name}: {:?}", job.error);
        let e = job.error.as_ref().unwrap();
        assert_eq!(e.code.0, code, "{name}: {e:?}");
        assert_eq!(e.file_index, Some(0), "{name}");
        // Create-Session, the fragment acknowledged, the one refused:
        // nothing after a fatal answer.
        let kinds: Vec<String> = front.seen()[before..].iter().map(|s| s.kind.clone()).collect();
        assert_eq!(kinds, ["Create-Session", "Fragment", "Fragment"], "{name}");
        assert!(!front.served(name).exists(), "{name}");
    }
}

#[tokio::test]
async fn a_server_that_forgets_the_session_mid_upload_gets_a_new_one_from_byte_0() {
    // Before the fourth fragment, the server loses the session (as an idle
    // expiry or a wiped disk would): bits-serve answers 500
    // BG_E_SESSION_NOT_FOUND.
    let front = Front::new(|p| {
        if p.fragment == Some(3) {
            p.sessions.cancel(p.path, p.session.unwrap()).unwrap();
        }
        Act::Pass
    })
    .await;
    let total = 2_000_000;
    let (mut job, _) = front.job("forgot.bin", total);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    assert_eq!(std::fs::read(front.served("forgot.bin")).unwrap(), body(total));
    assert_eq!(front.seen_of("Create-Session").len(), 2, "{:#?}", front.seen());
    let fragments = front.seen_of("Fragment");
    let lost = &fragments[3];
    assert_eq!(lost.status, 500, "{fragments:#?}");
    // The new session starts from byte 0 and is sent whole.
    assert_eq!(fragments[4].range.unwrap().0, 0, "{fragments:#?}");
    assert_contiguous(&fragments[4..], total as u64);
    assert_eq!(job.files[0].bytes_transferred, total as u64);
}

#[tokio::test]
async fn a_416_sends_the_client_back_to_the_offset_the_server_holds() {
    // The first run stops at the third fragment (a bare 503), its session
    // and offset stored.
    let stopped = Arc::new(AtomicUsize::new(0));
    let once = Arc::clone(&stopped);
    let front = Front::new(move |p| match p.fragment {
        Some(2) if once.fetch_add(1, Ordering::SeqCst) == 0 => Act::Answer(503, None),
        _ => Act::Pass,
    })
    .await;
    let total = 1_000_000;
    let (mut job, _) = front.job("gap.bin", total);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::TransientError, "{:?}", job.error);
    let held = job.files[0].upload.as_ref().unwrap().acked;
    assert!(held > 0 && held < total as u64, "{held}");
    // The job believes the server holds 100,000 bytes more than it does
    // (a server that lost what it acknowledged): the fragment it sends
    // leaves a gap, and bits-serve answers 416 with its offset.
    job.files[0].upload.as_mut().unwrap().acked = held + 100_000;
    job.apply(Event::RetryTimer);
    let outcome = engine().run(&mut job, &mut NoObserver).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    let fragments = front.seen_of("Fragment");
    let gap = fragments
        .iter()
        .position(|f| f.status == 416)
        .unwrap_or_else(|| panic!("no 416: {fragments:#?}"));
    assert_eq!(fragments[gap].range.unwrap().0, held + 100_000);
    assert_eq!(fragments[gap].received, Some(held), "the server's offset");
    assert_eq!(
        fragments[gap + 1].range.unwrap().0,
        held,
        "the next fragment starts there: {fragments:#?}"
    );
    assert_contiguous(&fragments, total as u64);
    assert_eq!(front.seen_of("Create-Session").len(), 1, "the same session");
    assert_eq!(std::fs::read(front.served("gap.bin")).unwrap(), body(total));
}

#[tokio::test]
async fn a_source_changed_mid_upload_fails_the_job_with_bg_e_local_file_changed() {
    // While the server takes the second fragment, the source changes:
    // `grown.bin` gets a byte more, `touched.bin` keeps its size and gets
    // another modification time.
    let local = tempfile::tempdir().unwrap();
    let dir = local.path().to_owned();
    let front = Front::new(move |p| {
        if p.fragment.is_some() && p.sessions.received(p.path, p.session.unwrap()).unwrap() > 0 {
            let name = p.path.rsplit('/').next().unwrap();
            let source = dir.join(name);
            let file = std::fs::OpenOptions::new().append(true).open(&source).unwrap();
            let modified = file.metadata().unwrap().modified().unwrap();
            if name == "grown.bin" {
                std::io::Write::write_all(&mut &file, b"!").unwrap();
            }
            file.set_modified(modified + Duration::from_secs(10)).unwrap();
        }
        Act::Pass
    })
    .await;
    for name in ["grown.bin", "touched.bin"] {
        let source = local.path().join(name);
        std::fs::write(&source, body(400_000)).unwrap();
        let mut job = Job::new("up", JobType::Upload, "plain");
        job.add_file(&format!("http://{}/up/{name}", front.addr), &source)
            .unwrap();
        job.resume().unwrap();
        let before = front.seen().len();
        let outcome = engine().run(&mut job, &mut NoObserver).await;
        assert_eq!(outcome.state, JobState::Error, "{name}: {:?}", job.error);
        let e = job.error.as_ref().unwrap();
        assert_eq!(e.code.0, 0x8020_001D, "{name}: {e:?}");
        assert_eq!(e.context.as_str(), "LOCAL_FILE", "{name}");
        // The changed file's bytes are not sent: no fragment after the
        // one during which it changed, no Close-Session.
        let kinds: Vec<String> = front.seen()[before..].iter().map(|s| s.kind.clone()).collect();
        assert_eq!(kinds, ["Create-Session", "Fragment", "Fragment"], "{name}");
        assert!(!front.served(name).exists(), "{name}");
    }
}

/// Counts `on_progress` calls and what each said of file 0.
#[derive(Default)]
struct Progress(Vec<u64>);

impl Observer for Progress {
    fn on_progress(&mut self, job: &Job) {
        self.0.push(job.files[0].bytes_transferred);
    }
    fn on_change(&mut self, _job: &Job) {}
}

#[tokio::test]
async fn a_fragment_in_flight_announces_the_progress_again_for_a_throttled_observer() {
    // The second fragment's Ack comes 1.5 s late. Meanwhile the observer
    // hears the first fragment's offset again, several times: one that
    // saves progress at most once a second (the daemon's) saves it then,
    // not only at the next Ack.
    let front = Front::new(|p| match p.fragment {
        Some(1) => Act::LateAck(Duration::from_millis(1500)),
        _ => Act::Pass,
    })
    .await;
    let (mut job, _) = front.job("late.bin", 300_000);
    let mut progress = Progress::default();
    let outcome = engine().run(&mut job, &mut progress).await;
    assert_eq!(outcome.state, JobState::Transferred, "{:?}", job.error);
    let first_ack = front.seen_of("Fragment")[0].received.unwrap();
    let again = progress.0.iter().filter(|&&b| b == first_ack).count();
    assert!(
        again >= 4,
        "{first_ack} announced {again} times: {:?}",
        progress.0
    );
    assert_eq!(progress.0.last(), Some(&300_000));
}
