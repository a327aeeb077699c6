//! Batched durability: nothing is completed before its sync, batches sync
//! in the background, and a finished file is completed about a second after
//! it finished whatever the next file does.

use super::*;

#[tokio::test]
async fn files_are_reported_completed_only_after_a_batch_sync() {
    let mut f = Fixture::new(5);
    let s = Scripted::new((0..5).map(|n| ok(format!("body {n}").as_bytes())).collect());
    let mut rec = SyncChecker::default();
    let out = s.engine.run(&mut f.job, &mut rec).await;
    assert_eq!(out.state, JobState::Transferred);
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    // The bytes are counted before the checkpoint; `completed` waits for it.
    assert!(rec.whole_but_waiting);
    assert!(f
        .job
        .files
        .iter()
        .all(|x| x.completed && files::test_log::was_synced(&x.temp_name)));
    // One batch: the five files did not each cause a change report (only
    // CONNECTING, per-file headers, TRANSFERRING, the checkpoint, TRANSFERRED).
    assert!(rec.changes <= 5 + 4, "{} changes", rec.changes);
    // While the last checkpoint synced, the observer had a free moment to
    // save the five whole files (not yet completed).
    assert_eq!(rec.idle_waiting, vec![5]);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn fresh_files_ride_one_syncfs_and_a_file_with_older_bytes_gets_its_own_fsync() {
    let n = files::SYNCFS_FILES + 4;
    let mut f = Fixture::new(n);
    // File 2 holds bytes an earlier process wrote: their writeback may have
    // failed before this run watched the file system.
    std::fs::write(f.temp(2), b"bo").unwrap();
    // Its server ignores the Range: the 200 is written from byte 0.
    let s = Scripted::new((0..n).map(|k| ok(format!("body {k}").as_bytes())).collect());
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    for k in 0..n {
        let temp = f.temp(k);
        assert!(files::test_log::was_synced(&temp), "file {k}");
        assert_eq!(files::test_log::was_synced_by_syncfs(&temp), k != 2, "file {k}");
        assert_eq!(read(&temp), format!("body {k}").as_bytes());
    }
}

#[tokio::test]
async fn batches_sync_in_the_background_and_complete_before_transferred() {
    let n = CHECKPOINT_FILES + CHECKPOINT_FILES / 2;
    let mut f = Fixture::new(n);
    let s = Scripted::new((0..n).map(|_| ok(b"x")).collect());
    let mut rec = SyncChecker::default();
    assert_eq!(
        s.engine.run(&mut f.job, &mut rec).await.state,
        JobState::Transferred
    );
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    assert!(f
        .job
        .files
        .iter()
        .all(|x| x.completed && files::test_log::was_synced(&x.temp_name)));
}

#[tokio::test]
async fn a_failure_syncs_and_keeps_the_files_finished_before_it() {
    let mut f = Fixture::new(3);
    let s = Scripted::new(vec![ok(b"one"), ok(b"two"), resp(404, &[], &[])]);
    let mut rec = SyncChecker::default();
    assert_eq!(s.engine.run(&mut f.job, &mut rec).await.state, JobState::Error);
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    assert!(f.job.files[0].completed && f.job.files[1].completed && !f.job.files[2].completed);
    assert!(files::test_log::was_synced(&f.temp(1)));
    assert_eq!(f.job.error.as_ref().unwrap().file_index, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_run_never_leaves_an_unsynced_file_completed() {
    // The third response never ends: the run is dropped while files 0 and
    // 1 wait for their checkpoint.
    let mut f = Fixture::new(3);
    let stalled = Ok(Response {
        status: 200,
        headers: HeaderMap::new(),
        version: http::Version::HTTP_11,
        body: Box::new(HangingBody(VecDeque::new())),
    });
    let s = Scripted::new(vec![ok(b"one"), ok(b"two"), stalled]);
    let mut rec = SyncChecker::default();
    let run = s.engine.run(&mut f.job, &mut rec);
    // Paused clock: the timeout fires once the run waits, with no time passed
    // for the checkpoint interval.
    assert!(tokio::time::timeout(Duration::from_millis(100), run)
        .await
        .is_err());
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    assert!(f.job.files.iter().all(|x| !x.completed));
    assert_eq!(f.job.files[1].bytes_transferred, 3);
    // The next run asks for file 0 from its full length; a 416 at that size
    // makes it whole without a byte downloaded again.
    let s = Scripted::new(vec![
        resp(416, &[("content-range", "bytes */3")], &[]),
        resp(416, &[("content-range", "bytes */3")], &[]),
        ok(b"three"),
    ]);
    let mut rec = SyncChecker::default();
    assert_eq!(
        s.engine.run(&mut f.job, &mut rec).await.state,
        JobState::Transferred
    );
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    assert_eq!(s.header(0, "range").as_deref(), Some("bytes=3-"));
    assert_eq!(read(&f.temp(0)), b"one");
    assert!(f.job.files.iter().all(|x| x.completed));
}

/// Bytes in each chunk of a [`SlowBody`]: a whole write buffer, so each
/// chunk reaches the file (and the counters) at once.
const SLOW_CHUNK: usize = 64 * 1024;

/// A body of `left` chunks of [`SLOW_CHUNK`] bytes, one every `every` on
/// tokio's clock; `sent` counts the chunks it gave.
#[derive(Debug)]
struct SlowBody {
    left: usize,
    every: Duration,
    sent: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl BodyStream for SlowBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError> {
        if self.left == 0 {
            return Ok(None);
        }
        tokio::time::sleep(self.every).await;
        self.left -= 1;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Bytes::from(vec![b's'; SLOW_CHUNK])))
    }
}

/// A 200 whose body is `chunks` [`SlowBody`] chunks, one every 200 ms.
fn slow(chunks: usize, sent: &Arc<AtomicUsize>) -> Result<Response, BitsError> {
    let len = (chunks * SLOW_CHUNK).to_string();
    Ok(Response {
        status: 200,
        headers: headers(&[("content-length", &len), ("etag", "\"slow\"")]),
        version: http::Version::HTTP_11,
        body: Box::new(SlowBody {
            left: chunks,
            every: Duration::from_millis(200),
            sent: sent.clone(),
        }),
    })
}

/// Checks what [`SyncChecker`] checks, and notes when `on_change` first
/// reported file 0 completed: how long after the run started, and how many
/// bytes file 1 held then.
struct Timeline {
    sync: SyncChecker,
    started: tokio::time::Instant,
    completed: Option<(Duration, u64)>,
    /// `on_progress` saw file 0 completed before `on_change` reported it.
    unreported: bool,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            sync: SyncChecker::default(),
            started: tokio::time::Instant::now(),
            completed: None,
            unreported: false,
        }
    }
}

impl Observer for Timeline {
    fn on_progress(&mut self, job: &Job) {
        self.sync.on_progress(job);
        self.unreported |= job.files[0].completed && self.completed.is_none();
    }
    fn on_change(&mut self, job: &Job) {
        self.sync.on_change(job);
        if job.files[0].completed && self.completed.is_none() {
            self.completed = Some((self.started.elapsed(), job.files[1].bytes_transferred));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_finished_file_is_completed_while_the_next_one_streams_or_waits_for_its_answer() {
    let interval = CHECKPOINT_INTERVAL;
    // File 1's body takes 4 s, or its answer comes after 3 s; file 0
    // finishes at once (the paused clock moves only when all wait).
    let sent = Arc::new(AtomicUsize::new(0));
    let cases = [
        ("slow body", Duration::ZERO, slow(20, &sent)),
        ("slow answer", Duration::from_secs(3), ok(b"late")),
    ];
    for (case, delay, second) in cases {
        let mut f = Fixture::new(2);
        let script = vec![(Duration::ZERO, ok(b"small")), (delay, second)];
        let engine = sequential(InFlight::paced(&f, script));
        let mut rec = Timeline::new();
        let out = engine.run(&mut f.job, &mut rec).await;
        assert_eq!(out.state, JobState::Transferred, "{case}");
        assert_eq!(rec.sync.completed_before_sync, Vec::<usize>::new(), "{case}");
        assert!(!rec.unreported, "{case}");
        // One checkpoint interval after file 0 settled, well before file 1
        // ends: a quarter of its body in, or before its answer.
        let (at, bytes) = rec.completed.unwrap_or_else(|| panic!("{case}: never completed"));
        assert!(
            at >= interval && at < interval + Duration::from_millis(250),
            "{case}: {at:?}"
        );
        let expected = if delay.is_zero() { 4..6 } else { 0..1 };
        assert!(expected.contains(&(bytes / SLOW_CHUNK as u64)), "{case}: {bytes}");
        assert!(f.job.files.iter().all(|x| x.completed), "{case}");
    }
    assert_eq!(sent.load(Ordering::Relaxed), 20);
}

/// Removes file 0's temporary file once file 1 has bytes: its checkpoint,
/// due later, cannot sync it.
struct RemoveFirst(bool);

impl Observer for RemoveFirst {
    fn on_progress(&mut self, job: &Job) {
        if !self.0 && job.files[1].bytes_transferred > 0 {
            std::fs::remove_file(&job.files[0].temp_name).unwrap();
            self.0 = true;
        }
    }
    fn on_change(&mut self, _: &Job) {}
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_failing_while_the_next_file_streams_is_its_files_error_and_stops_that_body() {
    let mut f = Fixture::new(2);
    let sent = Arc::new(AtomicUsize::new(0));
    let script = vec![(Duration::ZERO, ok(b"small")), (Duration::ZERO, slow(20, &sent))];
    let engine = sequential(InFlight::paced(&f, script));
    let out = engine.run(&mut f.job, &mut RemoveFirst(false)).await;
    assert_eq!(out.state, JobState::Error);
    let e = f.job.error.as_ref().unwrap();
    assert_eq!(
        (e.code.0, e.context, e.file_index),
        (0x8007_0002, ErrorContext::LocalFile, Some(0))
    );
    assert!(f.job.files.iter().all(|x| !x.completed));
    // File 1 stopped at the failure, a second in; its bytes are kept.
    let sent = sent.load(Ordering::Relaxed);
    assert!((4..8).contains(&sent), "{sent} chunks");
    assert_eq!(read(&f.temp(1)).len(), sent * SLOW_CHUNK);
    assert_eq!(f.job.files[1].bytes_transferred, (sent * SLOW_CHUNK) as u64);
}

#[tokio::test]
async fn a_long_body_is_written_back_while_downloading_and_synced_at_the_end() {
    let mut f = Fixture::new(1);
    let chunk = Bytes::from(vec![b'w'; 1024 * 1024]);
    let n = (files::WRITEBACK_EVERY / chunk.len() as u64) as usize + 2;
    let len = (n * chunk.len()).to_string();
    let s = Scripted::new(vec![Ok(Response {
        status: 200,
        headers: headers(&[("content-length", &len), ("etag", "\"v1\"")]),
        version: http::Version::HTTP_11,
        body: Box::new(VecBody((0..n).map(|_| Ok(chunk.clone())).collect())),
    })]);
    let mut rec = SyncChecker::default();
    assert_eq!(
        s.engine.run(&mut f.job, &mut rec).await.state,
        JobState::Transferred
    );
    // A background sync ran during the body; the final one still made the
    // file durable before it was reported completed.
    assert!(files::test_log::kicks(&f.temp(0)) >= 1);
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    assert!(f.job.files[0].completed && files::test_log::was_synced(&f.temp(0)));
    assert_eq!(
        std::fs::metadata(f.temp(0)).unwrap().len(),
        (n * chunk.len()) as u64
    );
}
