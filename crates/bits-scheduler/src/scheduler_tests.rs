//! The scheduler through its seams: an in-memory source and sink, and a
//! real `PlainHttp` transport against a test server on 127.0.0.1 (the
//! timer tests need no transport).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bits_core::{BitsError, Hresult, Job, JobState, JobType, Priority, SharedTransport};
use bits_http::PlainHttp;
use bits_testkit::http::{HttpServer, Route};
use uuid::Uuid;

use super::*;
use crate::memory::{Entry, Memory};

/// Runs `f` as the daemon runs the scheduler: one thread, a `LocalSet`.
fn local<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// A scheduler over `memory` whose "plain" backend is `PlainHttp`; any
/// other backend name is `E_NOTIMPL`.
fn scheduler(memory: &Memory) -> Scheduler {
    let plain: SharedTransport = Arc::new(PlainHttp::new());
    let transports = move |name: &str| -> Result<SharedTransport, BitsError> {
        match name {
            "plain" => Ok(plain.clone()),
            other => Err(BitsError::NotImplemented {
                what: format!("backend {other}"),
            }),
        }
    };
    Scheduler::new(memory.clone(), memory.clone(), transports)
}

/// What the transfer tests start from: a folder for the files, a test
/// server on 127.0.0.1 and an empty memory.
struct Fixture {
    dir: tempfile::TempDir,
    server: HttpServer,
    memory: Memory,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            server: HttpServer::start(),
            memory: Memory::default(),
        }
    }

    /// Serves `route` at `path` and stores a QUEUED job of that one file.
    fn queued(&self, path: &str, route: Route, priority: Priority) -> Uuid {
        self.server.set(path, route);
        let mut job = Job::new(path, JobType::Download, "plain");
        job.add_file(&self.server.url(path), &self.dir.path().join(&path[1..]))
            .unwrap();
        job.set_priority(priority).unwrap();
        job.resume().unwrap();
        self.memory.put(&job);
        job.id
    }
}

/// A route that takes a while: 1 MB, 16 KiB every 20 ms.
fn slow(len: usize) -> Route {
    Route::body(vec![7u8; len]).throttle(16 * 1024, Duration::from_millis(20))
}

/// Drives `s` (as the daemon's loop does) until `done` holds of `memory`;
/// returns the transfers that ended meanwhile.
async fn drive(s: &mut Scheduler, memory: &Memory, done: impl Fn(&Memory) -> bool) -> Vec<Ended> {
    let mut ended = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    ended.extend(s.schedule().await);
    while !done(memory) {
        let due = tokio::time::timeout_at(deadline, s.due())
            .await
            .expect("the jobs settle within 30 s");
        ended.extend(s.advance(due).await);
        ended.extend(s.schedule().await);
    }
    ended
}

/// Lets the transfers run until `server` has sent more than `bytes`.
async fn until_sent(server: &HttpServer, bytes: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.bytes_sent() <= bytes {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server sent {}",
            server.bytes_sent()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn state(memory: &Memory, id: Uuid) -> JobState {
    memory.get(id).state()
}

/// A job that failed transiently, as a scheduler left it.
fn transient(memory: &Memory, dir: &Path) -> Job {
    let mut job = Job::new("t", JobType::Download, "plain");
    job.add_file("http://127.0.0.1:9/x", &dir.join("x")).unwrap();
    job.resume().unwrap();
    job.apply(bits_core::Event::Scheduled);
    let e = BitsError::Timeout { what: "test".into() };
    assert_eq!(job.fail(&e, Some(0), SystemTime::now()), JobState::TransientError);
    memory.put(&job);
    job
}

#[test]
fn a_queued_job_transfers_and_its_end_is_reported() {
    let f = Fixture::new();
    let id = f.queued("/a", Route::body(vec![1u8; 100_000]), Priority::Normal);
    let ended = local(async {
        let mut s = scheduler(&f.memory);
        drive(&mut s, &f.memory, |m| state(m, id) == JobState::Transferred).await
    });
    assert!(
        matches!(&ended[..], [Ended { id: i, state: JobState::Transferred, held: None }] if *i == id),
        "{ended:?}"
    );
    let log = f.memory.log(id);
    assert_eq!(
        &log[log.len() - 2..],
        [Entry::Saved(JobState::Transferred), Entry::Changed],
        "{log:?}"
    );
    assert_eq!(f.memory.get(id).bytes_transferred(), 100_000);
}

#[test]
fn slots_go_by_priority_then_age() {
    let f = Fixture::new();
    let old = f.queued("/old", slow(1_000_000), Priority::Normal);
    let new = f.queued("/new", slow(1_000_000), Priority::Normal);
    let high = f.queued("/high", slow(1_000_000), Priority::High);
    local(async {
        let mut s = scheduler(&f.memory).with_max_parallel(2);
        assert!(s.schedule().await.is_empty());
        assert!(s.is_running(high) && s.is_running(old) && !s.is_running(new));
        let _ = s.shutdown().await;
    });
    for id in [old, new, high] {
        assert_eq!(state(&f.memory, id), JobState::Queued);
    }
}

#[test]
fn a_higher_priority_job_preempts_and_the_preempted_one_resumes_later() {
    let f = Fixture::new();
    let low = f.queued("/low", slow(1_000_000), Priority::Low);
    local(async {
        let mut s = scheduler(&f.memory).with_max_parallel(1);
        assert!(s.schedule().await.is_empty());
        until_sent(&f.server, 100_000).await;
        let high = f.queued("/high", Route::body(vec![2u8; 50_000]), Priority::High);
        assert!(s.schedule().await.is_empty());
        assert!(s.is_running(high) && !s.is_running(low));
        let preempted = f.memory.get(low);
        assert_eq!(preempted.state(), JobState::Queued);
        assert!(preempted.bytes_transferred() > 0, "saved where it got");
        drive(&mut s, &f.memory, |m| {
            state(m, high) == JobState::Transferred && state(m, low) == JobState::Transferred
        })
        .await;
    });
    let again = f.server.requests_for("/low");
    assert!(
        again.iter().any(|r| r.range().is_some_and(|h| h != "bytes=0-")),
        "resumed from the bytes on disk: {again:?}"
    );
}

#[test]
fn stopping_a_transfer_saves_it_queued_with_its_bytes() {
    let f = Fixture::new();
    let id = f.queued("/slow", slow(1_000_000), Priority::Normal);
    local(async {
        let mut s = scheduler(&f.memory);
        assert!(s.schedule().await.is_empty());
        until_sent(&f.server, 100_000).await;
        assert!(s.stop(id).await.is_none(), "stopped, not ended");
        assert!(!s.is_running(id));
        assert!(s.stop(id).await.is_none(), "stopping twice is nothing");
    });
    let job = f.memory.get(id);
    assert_eq!(job.state(), JobState::Queued);
    assert!(job.bytes_transferred() > 0);
    assert_eq!(f.memory.log(id).last(), Some(&Entry::Changed));
}

#[test]
fn a_transient_error_waits_for_its_retry_delay_then_runs_again() {
    let f = Fixture::new();
    let id = f.queued("/flaky", Route::status(503), Priority::Normal);
    let mut job = f.memory.get(id);
    job.min_retry_delay = 0;
    f.memory.put(&job);
    local(async {
        let mut s = scheduler(&f.memory);
        let ended = drive(&mut s, &f.memory, |m| state(m, id) == JobState::TransientError).await;
        assert!(
            matches!(
                &ended[..],
                [Ended {
                    state: JobState::TransientError,
                    ..
                }]
            ),
            "{ended:?}"
        );
        assert!(s.timers.contains(id));
        f.server.set("/flaky", Route::body(vec![3u8; 1000]));
        drive(&mut s, &f.memory, |m| state(m, id) == JobState::Transferred).await;
    });
    let log = f.memory.log(id);
    assert!(
        log.contains(&Entry::Saved(JobState::Queued)),
        "the retry timer fired: {log:?}"
    );
}

#[test]
fn a_held_job_is_handed_over_transferred_without_telling_watchers() {
    let f = Fixture::new();
    let id = f.queued("/mine", Route::body(vec![4u8; 10_000]), Priority::Normal);
    let ended = local(async {
        let mut s = scheduler(&f.memory);
        s.hold(id);
        let ended = drive(&mut s, &f.memory, |m| state(m, id) == JobState::Transferred).await;
        assert!(!s.release(id), "the hold was used");
        ended
    });
    let [Ended {
        held: Some(job),
        state: JobState::Transferred,
        ..
    }] = &ended[..]
    else {
        panic!("{ended:?}");
    };
    assert_eq!(job, &f.memory.get(id));
    let log = f.memory.log(id);
    let saved = log
        .iter()
        .position(|e| *e == Entry::Saved(JobState::Transferred))
        .unwrap();
    assert!(!log[saved..].contains(&Entry::Changed), "{log:?}");
}

#[test]
fn a_job_whose_backend_cannot_be_built_goes_to_error() {
    let tmp = tempfile::tempdir().unwrap();
    let memory = Memory::default();
    let mut job = Job::new("j", JobType::Download, "gnutls");
    job.add_file("http://127.0.0.1:9/x", &tmp.path().join("x"))
        .unwrap();
    job.resume().unwrap();
    memory.put(&job);
    local(async {
        let mut s = scheduler(&memory);
        assert!(s.schedule().await.is_empty());
        assert!(!s.is_running(job.id));
    });
    let job = memory.get(job.id);
    assert_eq!(job.state(), JobState::Error);
    assert_eq!(job.error.unwrap().code, Hresult::E_NOTIMPL);
    assert_eq!(memory.changes(job.id), 1);
}

#[test]
fn a_source_that_fails_skips_a_pass() {
    let f = Fixture::new();
    let id = f.queued("/a", Route::body(vec![5u8; 1000]), Priority::Normal);
    local(async {
        let mut s = scheduler(&f.memory);
        f.memory.break_reads(true);
        assert!(s.schedule().await.is_empty());
        assert!(!s.is_running(id));
        f.memory.break_reads(false);
        drive(&mut s, &f.memory, |m| state(m, id) == JobState::Transferred).await;
    });
}

#[test]
fn recovery_requeues_interrupted_jobs_and_rearms_waiting_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpServer::start();
    let memory = Memory::default();
    // Caught TRANSFERRING by a crash.
    let mut caught = Job::new("caught", JobType::Download, "plain");
    caught.add_file(&server.url("/c"), &tmp.path().join("c")).unwrap();
    caught.resume().unwrap();
    caught.apply(bits_core::Event::Scheduled);
    caught.apply(bits_core::Event::Connected);
    memory.put(&caught);
    // Waiting for a retry that is long due.
    let mut due = transient(&memory, tmp.path());
    due.modification_time -= Duration::from_secs(3600);
    memory.put(&due);
    // Waiting for a retry ten minutes away.
    let later = transient(&memory, tmp.path());
    let mut s = scheduler(&memory);
    s.recover().unwrap();
    assert_eq!(memory.log(caught.id), [Entry::Saved(JobState::Queued)]);
    assert!(s.timers.contains(due.id) && s.timers.contains(later.id));
    local(async {
        let woke = s.due().await;
        assert!(s.advance(woke).await.is_none());
    });
    assert_eq!(state(&memory, due.id), JobState::Queued);
    assert_eq!(state(&memory, later.id), JobState::TransientError);
    assert!(s.timers.contains(later.id) && !s.timers.contains(due.id));
}

#[test]
fn a_waiting_job_without_progress_for_its_timeout_goes_to_error() {
    let tmp = tempfile::tempdir().unwrap();
    let memory = Memory::default();
    let mut job = transient(&memory, tmp.path());
    job.no_progress_timeout = 60;
    job.no_progress_since = Some(SystemTime::now() - Duration::from_secs(61));
    memory.put(&job);
    let mut s = scheduler(&memory);
    s.recover().unwrap();
    local(async {
        let woke = s.due().await;
        assert!(s.advance(woke).await.is_none());
    });
    assert_eq!(state(&memory, job.id), JobState::Error);
    assert!(!s.timers.contains(job.id));
    assert_eq!(memory.changes(job.id), 1);
}

#[test]
fn a_change_made_outside_updates_a_waiting_jobs_timers() {
    let tmp = tempfile::tempdir().unwrap();
    let memory = Memory::default();
    let waiting = transient(&memory, tmp.path());
    let mut left = transient(&memory, tmp.path());
    let mut s = scheduler(&memory);
    s.recover().unwrap();
    let retry_at = s.timers.remove(waiting.id).unwrap().retry_at;
    s.timers.arm(&waiting, None);
    // A shorter no-progress timeout: the same retry, an earlier deadline.
    let mut shorter = memory.get(waiting.id);
    shorter.no_progress_timeout = 30;
    memory.put(&shorter);
    s.job_changed(waiting.id);
    let wake = s.timers.remove(waiting.id).unwrap();
    assert!(wake.retry_at.duration_since(retry_at) < Duration::from_secs(1));
    assert!(wake.give_up_at.unwrap() < retry_at);
    // Suspended: its timers go.
    left.suspend().unwrap();
    memory.put(&left);
    s.job_changed(left.id);
    assert!(!s.timers.contains(left.id));
}

fn blocked_by_policy(memory: &Memory, id: Uuid) -> bool {
    let job = memory.get(id);
    job.state() == JobState::TransientError
        && job.error.as_ref().map(|e| e.code) == Some(Hresult::BG_E_BLOCKED_BY_POLICY)
}

#[test]
fn a_blocked_priority_stops_its_running_job_keeping_its_bytes_and_a_release_queues_it() {
    let f = Fixture::new();
    let id = f.queued("/slow.bin", slow(1_000_000), Priority::Normal);
    local(async {
        let mut s = scheduler(&f.memory);
        assert!(s.schedule().await.is_empty());
        until_sent(&f.server, 100_000).await;
        let ended = s.set_blocked(&[Priority::Normal, Priority::Foreground]).await;
        assert!(ended.is_empty());
        assert!(!s.is_running(id));
        assert!(blocked_by_policy(&f.memory, id), "{:?}", f.memory.get(id));
        let job = f.memory.get(id);
        assert_eq!(job.error.as_ref().unwrap().file_index, None);
        // Nothing restarts it while the window lasts.
        assert!(s.schedule().await.is_empty());
        assert!(!s.is_running(id));
        assert!(blocked_by_policy(&f.memory, id));
        // The window ends: QUEUED, then it runs to the end from its bytes.
        assert!(s.set_blocked(&[]).await.is_empty());
        assert_eq!(state(&f.memory, id), JobState::Queued);
        drive(&mut s, &f.memory, |m| m.get(id).state() == JobState::Transferred).await;
        let ranges = f.server.requests().iter().filter(|r| r.range().is_some()).count();
        assert_eq!(ranges, 1, "resumed from its bytes on disk");
    });
}

#[test]
fn a_job_of_a_blocked_priority_is_blocked_when_it_would_start_and_foreground_never_is() {
    let f = Fixture::new();
    let low = f.queued("/low.bin", Route::body(vec![1u8; 1000]), Priority::Low);
    let fg = f.queued("/fg.bin", Route::body(vec![2u8; 1000]), Priority::Foreground);
    let high = f.queued("/high.bin", Route::body(vec![3u8; 1000]), Priority::High);
    local(async {
        let mut s = scheduler(&f.memory);
        assert!(s
            .set_blocked(&[Priority::Low, Priority::Foreground])
            .await
            .is_empty());
        drive(&mut s, &f.memory, |m| {
            m.get(fg).state() == JobState::Transferred && m.get(high).state() == JobState::Transferred
        })
        .await;
        assert!(blocked_by_policy(&f.memory, low));
        // Its priority changes to one not blocked: it runs.
        let mut job = f.memory.get(low);
        job.priority = Priority::Normal;
        f.memory.put(&job);
        s.job_changed(low);
        assert_eq!(state(&f.memory, low), JobState::Queued);
        drive(&mut s, &f.memory, |m| m.get(low).state() == JobState::Transferred).await;
    });
}

#[test]
fn after_a_restart_a_job_blocked_before_runs_when_its_window_is_over() {
    let f = Fixture::new();
    let id = f.queued("/x.bin", Route::body(vec![1u8; 10]), Priority::Normal);
    let mut job = f.memory.get(id);
    job.apply(bits_core::Event::TransientFailure);
    job.error = Some(BitsError::BlockedByPolicy.to_job_error(None));
    f.memory.put(&job);
    local(async {
        let mut s = scheduler(&f.memory);
        s.recover().unwrap();
        assert!(blocked_by_policy(&f.memory, id));
        assert!(s.set_blocked(&[Priority::Low]).await.is_empty());
        assert_eq!(state(&f.memory, id), JobState::Queued);
        drive(&mut s, &f.memory, |m| m.get(id).state() == JobState::Transferred).await;
    });
}
