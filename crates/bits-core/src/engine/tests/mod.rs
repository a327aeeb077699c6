//! Unit tests of the engine over scripted transports and real temporary
//! files: the flow of a job here; the pipeline, checkpoints, redirects,
//! retries, resume decisions, and complete and cancel in the submodules.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{AUTHORIZATION, USER_AGENT};

use super::*;
use crate::error::{ErrorContext, Hresult};
use crate::flags::SecurityFlags;
use crate::policy::ConnectionPolicy;
use crate::transport::{BodyStream, MockTransport, Transport};

mod checkpoint;
mod finish;
mod http_options;
mod pipeline;
mod redirects;
mod resume;
mod retries;

/// A body made of chunks (or errors), then the end.
#[derive(Debug)]
struct VecBody(VecDeque<Result<Bytes, BitsError>>);

#[async_trait::async_trait]
impl BodyStream for VecBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError> {
        match self.0.pop_front() {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

/// A body that yields its chunks, then never another byte.
#[derive(Debug)]
struct HangingBody(VecDeque<Bytes>);

#[async_trait::async_trait]
impl BodyStream for HangingBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError> {
        match self.0.pop_front() {
            Some(b) => Ok(Some(b)),
            None => std::future::pending().await,
        }
    }
}

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn resp(status: u16, list: &[(&str, &str)], chunks: &[&[u8]]) -> Result<Response, BitsError> {
    Ok(Response {
        status,
        headers: headers(list),
        version: http::Version::HTTP_11,
        body: Box::new(VecBody(
            chunks.iter().map(|c| Ok(Bytes::copy_from_slice(c))).collect(),
        )),
    })
}

/// 200 with Content-Length and an ETag.
fn ok(body: &[u8]) -> Result<Response, BitsError> {
    let len = body.len().to_string();
    resp(200, &[("content-length", &len), ("etag", "\"v1\"")], &[body])
}

fn redirect(status: u16, location: &str) -> Result<Response, BitsError> {
    resp(status, &[("location", location)], &[])
}

/// A transport that answers from a script and records every request.
struct Scripted {
    engine: Engine,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// One file at a time: these tests follow the sequential pipeline
/// (`tests/parallel.rs` runs files in flight against real servers).
fn one_at_a_time() -> EngineOptions {
    EngineOptions {
        connections_per_origin: 1,
        ..EngineOptions::default()
    }
}

/// An engine over `t` that moves one file at a time.
fn sequential(t: SharedTransport) -> Engine {
    Engine::with_options(t, one_at_a_time())
}

impl Scripted {
    fn new(script: Vec<Result<Response, BitsError>>) -> Scripted {
        Scripted::with(script, one_at_a_time(), HeaderMap::new())
    }

    fn with(script: Vec<Result<Response, BitsError>>, options: EngineOptions, extra: HeaderMap) -> Scripted {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let script = Mutex::new(VecDeque::from(script));
        let mut t = MockTransport::new();
        t.expect_check_policy().returning(|_| Ok(()));
        t.expect_name().return_const("mock".to_string());
        t.expect_send().returning(move |req| {
            let url = req.url.clone();
            seen.lock().unwrap().push(req);
            script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected request {url}"))
        });
        Scripted {
            engine: Engine::with_options(Arc::new(t), options).with_request_headers(extra),
            requests,
        }
    }

    fn urls(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.url.to_string())
            .collect()
    }

    fn header(&self, n: usize, name: &str) -> Option<String> {
        self.requests.lock().unwrap()[n]
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// Records what the engine reports.
#[derive(Default)]
struct Recorder {
    states: Vec<JobState>,
    progress: Vec<u64>,
}

impl Observer for Recorder {
    fn on_progress(&mut self, job: &Job) {
        self.progress.push(job.bytes_transferred());
    }
    fn on_change(&mut self, job: &Job) {
        if self.states.last() != Some(&job.state()) {
            self.states.push(job.state());
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    job: Job,
}

impl Fixture {
    fn new(files: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut job = Job::new("t", JobType::Download, "mock");
        for n in 0..files {
            job.add_file(&format!("http://h/f{n}"), &dir.path().join(format!("f{n}")))
                .unwrap();
        }
        job.resume().unwrap();
        Fixture { dir, job }
    }

    fn flags(mut self, bits: u32) -> Fixture {
        self.job.security_flags = SecurityFlags::new(bits).unwrap();
        self
    }

    fn url(mut self, url: &str) -> Fixture {
        self.job.files[0].remote_name = url.into();
        self
    }

    fn temp(&self, n: usize) -> PathBuf {
        self.job.files[n].temp_name.clone()
    }

    fn local(&self, n: usize) -> PathBuf {
        self.job.files[n].local_name.clone()
    }

    fn code(&self) -> Option<u32> {
        self.job.error.as_ref().map(|e| e.code.0)
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

async fn run(s: &Scripted, f: &mut Fixture) -> RunOutcome {
    s.engine.run(&mut f.job, &mut NoObserver).await
}

/// A transport whose answers take a turn of the runtime, as a real one's
/// do (its connection task writes the request), or the delay scripted with
/// them (on tokio's clock): for each request, the length of every temporary
/// file when it was handed over and when its answer was taken (`None`: no
/// such file).
#[derive(Debug)]
struct InFlight {
    script: Mutex<VecDeque<(Duration, Result<Response, BitsError>)>>,
    temps: Vec<PathBuf>,
    seen: Mutex<Vec<[Vec<Option<u64>>; 2]>>,
}

impl InFlight {
    fn new(f: &Fixture, script: Vec<Result<Response, BitsError>>) -> Arc<InFlight> {
        InFlight::paced(f, script.into_iter().map(|r| (Duration::ZERO, r)).collect())
    }

    /// Each answer after its delay (none: a turn of the runtime).
    fn paced(f: &Fixture, script: Vec<(Duration, Result<Response, BitsError>)>) -> Arc<InFlight> {
        Arc::new(InFlight {
            script: Mutex::new(VecDeque::from(script)),
            temps: (0..f.job.files.len()).map(|n| f.temp(n)).collect(),
            seen: Mutex::default(),
        })
    }

    fn lengths(&self) -> Vec<Option<u64>> {
        self.temps
            .iter()
            .map(|t| std::fs::metadata(t).ok().map(|m| m.len()))
            .collect()
    }
}

#[async_trait::async_trait]
impl Transport for InFlight {
    fn name(&self) -> &str {
        "in-flight"
    }
    fn check_policy(&self, _: &ConnectionPolicy) -> Result<(), BitsError> {
        Ok(())
    }
    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        let handed = self.lengths();
        let next = self.script.lock().unwrap().pop_front();
        let (delay, response) = next.unwrap_or_else(|| panic!("unexpected request {}", request.url));
        if delay.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(delay).await;
        }
        self.seen.lock().unwrap().push([handed, self.lengths()]);
        response
    }
}

/// Checks, at every report, that no file is completed before its sync,
/// and records whether a file's bytes were seen counted while it waited.
#[derive(Default)]
struct SyncChecker {
    completed_before_sync: Vec<usize>,
    whole_but_waiting: bool,
    changes: usize,
    /// At each `on_idle`: how many files were whole but waiting for their
    /// sync.
    idle_waiting: Vec<usize>,
}

impl SyncChecker {
    fn check(&mut self, job: &Job) {
        for (i, f) in job.files.iter().enumerate() {
            if f.completed && !files::test_log::was_synced(&f.temp_name) {
                self.completed_before_sync.push(i);
            }
            if !f.completed && f.bytes_total.is_some_and(|t| t > 0 && f.bytes_transferred == t) {
                self.whole_but_waiting = true;
            }
        }
    }
}

impl Observer for SyncChecker {
    fn on_progress(&mut self, job: &Job) {
        self.check(job);
    }
    fn on_change(&mut self, job: &Job) {
        self.changes += 1;
        self.check(job);
    }
    fn on_idle(&mut self, job: &Job) {
        self.check(job);
        let waiting = job
            .files
            .iter()
            .filter(|f| !f.completed && f.bytes_total.is_some_and(|t| f.bytes_transferred == t))
            .count();
        self.idle_waiting.push(waiting);
    }
}

#[tokio::test]
async fn downloads_into_the_temp_file_and_never_writes_local() {
    let mut f = Fixture::new(2);
    let s = Scripted::new(vec![
        resp(200, &[("content-length", "6")], &[b"abc", b"def"]),
        ok(b"second"),
    ]);
    let mut rec = Recorder::default();
    let out = s.engine.run(&mut f.job, &mut rec).await;
    assert_eq!(
        out,
        RunOutcome {
            state: JobState::Transferred,
            retry_after: None
        }
    );
    assert_eq!(
        rec.states,
        [
            JobState::Connecting,
            JobState::Transferring,
            JobState::Transferred
        ]
    );
    assert_eq!(rec.progress.last(), Some(&12));
    assert_eq!(read(&f.temp(0)), b"abcdef");
    assert_eq!(read(&f.temp(1)), b"second");
    assert!(!f.local(0).exists() && !f.local(1).exists());
    assert_eq!(
        (
            f.job.bytes_total(),
            f.job.bytes_transferred(),
            f.job.files_transferred()
        ),
        (Some(12), 12, 2)
    );
    assert_eq!(f.job.files[1].validator.as_deref(), Some("\"v1\""));
    assert!(f.job.transfer_completion_time.is_some() && f.job.error.is_none());
    assert_eq!(s.urls(), ["http://h/f0", "http://h/f1"]);
    assert_eq!(s.header(0, "range"), None);
}

#[tokio::test]
async fn each_file_records_the_protocol_of_its_last_response() {
    let mut f = Fixture::new(2);
    let h2 = |r: Result<Response, BitsError>| {
        r.map(|mut r| {
            r.version = http::Version::HTTP_2;
            r
        })
    };
    // File 0: a redirect over http/1.1, the file itself over h2.
    let s = Scripted::new(vec![
        redirect(302, "https://h/moved"),
        h2(ok(b"first")),
        ok(b"second"),
    ]);
    assert_eq!(f.job.files[0].protocol, None);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(f.job.files[0].protocol.as_deref(), Some("h2"));
    assert_eq!(f.job.files[1].protocol.as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn unknown_length_is_set_when_the_body_ends() {
    let mut f = Fixture::new(1);
    let s = Scripted::new(vec![resp(200, &[], &[b"chunk", b"ed"])]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(f.job.files[0].bytes_total, Some(7));
    assert_eq!(f.job.files[0].validator, None);
}

#[tokio::test]
async fn runs_only_runnable_jobs() {
    for state in [
        JobState::Suspended,
        JobState::Error,
        JobState::TransientError,
        JobState::Transferred,
    ] {
        let mut f = Fixture::new(1);
        match state {
            JobState::Suspended => f.job.suspend().unwrap(),
            JobState::Transferred => {
                f.job.apply(Event::AllFilesDone);
            }
            _ => {
                let e = if state == JobState::Error {
                    BitsError::UnknownCa
                } else {
                    BitsError::ConnectionReset { reason: "r".into() }
                };
                f.job.fail(&e, Some(0), SystemTime::now());
            }
        }
        assert_eq!(f.job.state(), state);
        let s = Scripted::new(vec![]);
        assert_eq!(
            run(&s, &mut f).await,
            RunOutcome {
                state,
                retry_after: None
            }
        );
        assert!(s.urls().is_empty());
    }
}

#[tokio::test]
async fn flags_the_transport_refuses_are_never_used() {
    let mut f = Fixture::new(1).flags(0x4);
    let mut t = MockTransport::new();
    t.expect_check_policy()
        .returning(|_| Err(BitsError::NotImplemented { what: "0x4".into() }));
    t.expect_send().never();
    let out = sequential(Arc::new(t)).run(&mut f.job, &mut NoObserver).await;
    assert_eq!((out.state, f.code()), (JobState::Error, Some(0x8000_4001)));
}
