//! The transfer engine: drives one job, file by file, through a
//! [`Transport`](crate::Transport).
//!
//! What [`Engine::run`] does, per file not yet transferred, in order:
//! - downloads into the file's hidden temporary name beside LOCAL (LOCAL is
//!   never touched before [`complete`]);
//! - resumes from the bytes already in the temporary file (the file on disk
//!   is trusted, not the counter) with `Range: bytes=N-`, plus `If-Range`
//!   when a validator (ETag, else Last-Modified) is known. A `200` (Range
//!   ignored, or content changed), a changed validator or a changed size
//!   restarts the file from byte 0; a `416` whose size equals N means the
//!   file is whole;
//! - follows redirects itself under the job's policy (policy.md), never
//!   sending credentials to another origin;
//! - writes through a buffer and counts only bytes the file holds;
//! - does a file's local work while the next file's request is in flight,
//!   not between the two: the last buffered bytes of a file are written,
//!   its modification time set and its counters finished once the next
//!   request is sent, and that file's temporary file is opened before its
//!   answer comes;
//! - makes finished files durable in batches: a file whose last byte is
//!   written counts its bytes at once but is marked `completed` only after
//!   a checkpoint synced it (every [`CHECKPOINT_FILES`] files,
//!   [`CHECKPOINT_BYTES`] bytes or [`CHECKPOINT_INTERVAL`], in the
//!   background while the next files download, a checkpoint due by time
//!   even in the middle of the next file, so a finished file is completed
//!   about a second after it finished however slow the next one is; and,
//!   waited for, before a failure is recorded and before the job reports
//!   TRANSFERRED). So neither the observer nor a store ever sees a file
//!   completed whose bytes a crash could still lose, and many small files
//!   cost a few syncs, not one each:
//!   a batch of many files is one `syncfs` of their file system (Linux),
//!   through a directory opened before they were written, so any failure
//!   to write them back is reported; a small batch is an `fsync` each.
//!   Either way a completed file's data and metadata (its size, the
//!   server's modification time) are on disk, so [`complete`] only renames.
//!   A file dropped before its checkpoint is asked again from its full
//!   length after a restart, and the server's `416` says it is whole.
//!
//! Failures become the job's error with the file's index: transient ones
//! (408/429/5xx, connect, reset, timeout) put the job in TRANSIENT_ERROR with
//! a retry delay, fatal ones in ERROR. A local write error is fatal (context
//! LOCAL_FILE) and keeps the bytes so far, so a later resume continues.
//!
//! Upload jobs have no wire protocol yet: running one puts it in ERROR with
//! `E_NOTIMPL`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

use crate::error::{BitsError, Hresult};
use crate::files::{self, TempWriter};
use crate::flags::RedirectPolicy;
use crate::httpdate;
use crate::job::{parse_remote_url, FileInfo, Job, JobType};
use crate::redirect;
use crate::state::{check_operation, Event, JobState, Operation};
use crate::transport::{Request, Response, SharedTransport};

/// A checkpoint syncs the finished files once this many wait. The last
/// batch of a job is synced while the job waits, so smaller batches end a
/// job of many small files sooner (2,000 × 16 KiB, the last checkpoint and
/// save, medians of 10 runs: 11.5 ms with 256 against 8.9 with 64 in one
/// A/B; 7.8 with 64 against 9.4 with 32 in another, whose more frequent
/// syncs begin to get in each other's way).
pub const CHECKPOINT_FILES: usize = 64;
/// … or once the finished files waiting hold this many bytes.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;
/// … or once the oldest finished file has waited this long.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Receives a job's progress and state changes while the engine runs it.
/// Calls come from the engine's task; keep them quick (throttle persistence
/// yourself).
pub trait Observer: Send {
    /// Bytes moved (called per chunk written; the job's counters are current).
    fn on_progress(&mut self, job: &Job);
    /// The job's state, error or files changed (a file finished, a
    /// restart).
    fn on_change(&mut self, job: &Job);
    /// File `i` changed in a way a restart needs to know at once: its
    /// remote name (a redirect reported under the job's policy), or its
    /// validator and size (the response it is being written from). A store
    /// that saves this promptly never downloads a large file twice after a
    /// crash. Defaults to [`Observer::on_change`].
    fn on_file_change(&mut self, job: &Job, i: usize) {
        let _ = i;
        self.on_change(job);
    }
    /// The engine is about to wait, with nothing else to do, for a
    /// checkpoint's sync (the files it marks completed after it come
    /// through [`Observer::on_change`]): a free moment to persist what
    /// [`Observer::on_progress`] left for later, so that the save after
    /// the sync is small. Defaults to nothing.
    fn on_idle(&mut self, job: &Job) {
        let _ = job;
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_progress(&mut self, _job: &Job) {}
    fn on_change(&mut self, _job: &Job) {}
}

/// How one run of [`Engine::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// The job's state now: TRANSFERRED, TRANSIENT_ERROR or ERROR (or the
    /// state it was in, when it was not runnable).
    pub state: JobState,
    /// For TRANSIENT_ERROR: how long to wait before the retry timer fires
    /// (the minimum retry delay, or a longer `Retry-After`).
    pub retry_after: Option<Duration>,
}

/// Timeouts and limits of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Redirect hops before `ERROR_WINHTTP_REDIRECT_FAILED` (10).
    pub max_redirects: usize,
    /// No byte for this long while reading a body is a transient timeout.
    pub read_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_redirects: 10,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Drives jobs through a transport.
#[derive(Debug, Clone)]
pub struct Engine {
    transport: SharedTransport,
    options: EngineOptions,
    headers: HeaderMap,
}

impl Engine {
    /// An engine over `transport` with default options.
    pub fn new(transport: SharedTransport) -> Engine {
        Engine::with_options(transport, EngineOptions::default())
    }

    /// An engine over `transport` with `options`.
    pub fn with_options(transport: SharedTransport, options: EngineOptions) -> Engine {
        Engine {
            transport,
            options,
            headers: HeaderMap::new(),
        }
    }

    /// Adds headers to every request (a `User-Agent`, an `Authorization`…).
    ///
    /// # Security
    /// `Authorization`, `Proxy-Authorization` and `Cookie` are sent only to
    /// the origin (scheme, host, port) of the file's own URL: after a
    /// redirect to another origin they are left out.
    pub fn with_request_headers(mut self, headers: HeaderMap) -> Engine {
        self.headers = headers;
        self
    }

    /// The transport.
    pub fn transport(&self) -> &SharedTransport {
        &self.transport
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Transfers the pending files of a QUEUED job until every file is done
    /// (TRANSFERRED), or a failure (TRANSIENT_ERROR or ERROR). The future is
    /// cancel-safe: dropping it (suspend, cancel, shutdown) leaves the
    /// temporary files and the job's counters consistent with each other.
    ///
    /// A job in CONNECTING or TRANSFERRING (a daemon restarted mid-transfer)
    /// is run too; any other state is returned as it is, untouched.
    pub async fn run(&self, job: &mut Job, observer: &mut dyn Observer) -> RunOutcome {
        match job.state() {
            JobState::Queued => {
                job.apply(Event::Scheduled);
                observer.on_change(job);
            }
            JobState::Connecting | JobState::Transferring => {}
            state => {
                return RunOutcome {
                    state,
                    retry_after: None,
                }
            }
        }
        if job.job_type != JobType::Download {
            let e = BitsError::NotImplemented {
                what: format!("{} jobs: bits has no upload protocol yet", job.job_type.as_str()),
            };
            return fail(job, observer, &e, None);
        }
        // Never transfer under a policy the transport cannot honour exactly.
        if let Err(e) = self.transport.check_policy(&job.connection_policy()) {
            return fail(job, observer, &e, None);
        }
        let mut unsynced = Unsynced::default();
        // Files before `from` are completed or waiting for their checkpoint.
        let mut from = 0;
        while let Some(i) = (from..job.files.len()).find(|&i| !job.files[i].completed) {
            from = i + 1;
            // Before its first byte: see files::Watched.
            unsynced.watch(&job.files[i].temp_name);
            match self.transfer_file(job, i, observer, &mut unsynced).await {
                // Written out while the next file's request is in flight.
                Ok(received) => unsynced.hold(received),
                Err((f, e)) => {
                    // The files finished before `f` are kept: synced and marked
                    // completed before the failure is recorded.
                    if let Err((f, e)) = unsynced.checkpoint(job, observer).await {
                        return fail(job, observer, &e, Some(f));
                    }
                    return fail(job, observer, &e, Some(f));
                }
            }
        }
        if let Err((f, e)) = unsynced.checkpoint(job, observer).await {
            return fail(job, observer, &e, Some(f));
        }
        job.apply(Event::AllFilesDone);
        observer.on_change(job);
        RunOutcome {
            state: job.state(),
            retry_after: None,
        }
    }

    /// Runs the job until it settles in TRANSFERRED or ERROR (or any state
    /// [`Engine::run`] does not run): after each TRANSIENT_ERROR it sleeps
    /// for the outcome's retry delay and fires the retry timer, or, when the
    /// no-progress timeout has run out, puts the job in ERROR.
    ///
    /// For simple embedders and examples; a scheduler that runs many jobs
    /// drives [`Engine::run`] and the timers itself.
    pub async fn run_until_settled(&self, job: &mut Job, observer: &mut dyn Observer) -> RunOutcome {
        loop {
            let outcome = self.run(job, observer).await;
            if outcome.state != JobState::TransientError {
                return outcome;
            }
            tokio::time::sleep(outcome.retry_after.unwrap_or_default()).await;
            let event = if job.no_progress_expired(SystemTime::now()) {
                Event::NoProgressTimeout
            } else {
                Event::RetryTimer
            };
            job.apply(event);
            observer.on_change(job);
            if job.state() != JobState::Queued {
                return RunOutcome {
                    state: job.state(),
                    retry_after: None,
                };
            }
        }
    }

    /// Receives file `i` completely, or fails (with the index of the file
    /// that failed). While its first request is in flight, the file before
    /// it (held by `unsynced`) is written out and queued for its checkpoint
    /// ([`Meanwhile`]); in any case that is done before this returns.
    async fn transfer_file(
        &self,
        job: &mut Job,
        i: usize,
        observer: &mut dyn Observer,
        unsynced: &mut Unsynced,
    ) -> Result<Received, (usize, BitsError)> {
        let mut meanwhile = Meanwhile {
            unsynced,
            settled: None,
            open: None,
            opened: None,
        };
        let received = self.receive_file(job, i, observer, &mut meanwhile).await;
        // Done now if no request was in flight. The previous file's
        // failure comes first: it happened first.
        meanwhile.settle(job, observer).await;
        meanwhile.settled.take().unwrap_or(Ok(()))?;
        received.map_err(|e| (i, e))
    }

    /// [`Engine::transfer_file`]'s work on file `i` itself.
    async fn receive_file(
        &self,
        job: &mut Job,
        i: usize,
        observer: &mut dyn Observer,
        meanwhile: &mut Meanwhile<'_>,
    ) -> Result<Received, BitsError> {
        let temp = job.files[i].temp_name.clone();
        let mut fresh = !job.files[i].restart;
        if job.files[i].restart {
            // Counters first, then the file, then the flag: dropped at any
            // point, the counters never claim bytes the file lacks and the
            // restart is not forgotten.
            reset(&mut job.files[i]);
            files::truncate(&temp)?;
            job.files[i].restart = false;
            observer.on_change(job);
        }
        let mut restarted = false;
        let mut first = true;
        loop {
            let found = files::disk_size(&temp)?;
            let on_disk = found.unwrap_or(0);
            if std::mem::take(&mut first) {
                fresh &= on_disk == 0;
            }
            if job.files[i].bytes_transferred != on_disk {
                job.files[i].bytes_transferred = on_disk;
                observer.on_progress(job);
            }
            if !restarted {
                meanwhile.open = Some((temp.clone(), found));
            }
            let response = self.fetch(job, i, on_disk, observer, meanwhile).await?;
            if job.state() != JobState::Transferring && job.apply(Event::Connected) == JobState::Transferring
            {
                observer.on_change(job);
            }
            match plan(&response, on_disk, &job.files[i])? {
                Plan::Whole => {
                    return Ok(Received {
                        file: i,
                        writer: None,
                        modified: None,
                        size: on_disk,
                        fresh,
                    })
                }
                Plan::Restart(why) => {
                    if restarted {
                        return Err(BitsError::InvalidServerResponse {
                            what: format!("{why}, again after restarting from byte 0"),
                        });
                    }
                    tracing::info!(file = i, "restarting from byte 0: {why}");
                    restarted = true;
                    reset(&mut job.files[i]);
                    files::truncate(&temp)?;
                    observer.on_change(job);
                }
                Plan::Write { offset, end, total } => {
                    let span = Span { offset, end, total };
                    if let Some(mut received) = self
                        .write_body(job, i, response, span, meanwhile, observer)
                        .await?
                    {
                        received.fresh = fresh;
                        return Ok(received);
                    }
                    // The server sent a shorter range than asked: ask for the rest.
                }
            }
        }
    }

    /// Streams `response` into file `i`'s temporary file from `offset`
    /// (into the file `meanwhile` opened while the request was in flight,
    /// when it opened it there), doing the earlier files' checkpoint work
    /// as it falls due ([`Meanwhile::alongside`]). Returns the file once
    /// every byte arrived, its last ones possibly still buffered, or `None`
    /// when the server sent less than the whole file (a 206 for a shorter
    /// range) and more must be asked for.
    async fn write_body(
        &self,
        job: &mut Job,
        i: usize,
        response: Response,
        span: Span,
        meanwhile: &mut Meanwhile<'_>,
        observer: &mut dyn Observer,
    ) -> Result<Option<Received>, BitsError> {
        let Span { offset, end, total } = span;
        let temp = job.files[i].temp_name.clone();
        let validator = validator_of(&response.headers);
        let modified = header_text(&response.headers, LAST_MODIFIED).and_then(|d| httpdate::parse(&d));
        if offset == 0 {
            reset(&mut job.files[i]);
        }
        let mut writer = match meanwhile.opened(offset) {
            Some(early) => early?,
            None => TempWriter::open_at(&temp, offset)?,
        };
        // The file now holds exactly the bytes of this content before
        // `offset`: only now may the validator say so.
        let file = &mut job.files[i];
        if offset == 0 || file.validator.is_none() {
            file.validator = validator;
        }
        file.bytes_total = total;
        observer.on_file_change(job, i);

        let mut body = response.body;
        let read_timeout = self.options.read_timeout;
        let result: Result<(), BitsError> = async {
            loop {
                let next = std::pin::pin!(tokio::time::timeout(read_timeout, body.next_chunk()));
                let chunk = match meanwhile.alongside(next, job, observer).await? {
                    Err(_) => {
                        return Err(BitsError::Timeout {
                            what: format!("no data for {} s", read_timeout.as_secs_f64()),
                        })
                    }
                    Ok(chunk) => chunk?,
                };
                let Some(chunk) = chunk else { return Ok(()) };
                let received = writer.position() + writer.buffered() + chunk.len() as u64;
                if end.is_some_and(|end| received > end) {
                    return Err(BitsError::InvalidServerResponse {
                        what: format!(
                            "the body is longer than the {} bytes announced",
                            end.unwrap_or(0) - offset
                        ),
                    });
                }
                if writer.push(&chunk)? {
                    moved(job, i, writer.position(), observer);
                }
            }
        }
        .await;
        let received = writer.position() + writer.buffered();
        let whole = end.is_none_or(|e| received >= e) && total.is_none_or(|t| received >= t);
        if result.is_ok() && whole {
            // Every byte is here: the last ones are written out later
            // (Unsynced::settle), while the next request is in flight.
            return Ok(Some(Received {
                file: i,
                writer: Some(writer),
                modified,
                size: received,
                fresh: false,
            }));
        }
        // Whatever happened, keep the bytes received: a retry resumes after them.
        let flushed = writer.flush();
        if writer.position() != job.files[i].bytes_transferred {
            moved(job, i, writer.position(), observer);
        }
        // A background writeback sync in flight is waited for: its error
        // (reported once) must not be lost to the final sync.
        let settled = writer.settle().await;
        // A local failure (disk full) outranks a network one: retrying
        // would not help.
        flushed?;
        settled?;
        result?;
        let done = writer.position();
        if let Some(end) = end {
            if done < end {
                return Err(BitsError::ConnectionReset {
                    reason: format!("the body ended after {} of {} bytes", done - offset, end - offset),
                });
            }
        }
        if done > offset {
            return Ok(None);
        }
        // (A whole body returned above: what is left is a shorter range.)
        Err(BitsError::InvalidServerResponse {
            what: "an empty partial response".into(),
        })
    }

    /// Sends the GET for file `i` from byte `offset`, following redirects
    /// under the job's policy, and runs `meanwhile` once while a request is
    /// in flight. Returns the first response that is not a redirect.
    async fn fetch(
        &self,
        job: &mut Job,
        i: usize,
        offset: u64,
        observer: &mut dyn Observer,
        meanwhile: &mut Meanwhile<'_>,
    ) -> Result<Response, BitsError> {
        meanwhile.before_sending(job, observer).await;
        let flags = job.security_flags;
        let policy = job.connection_policy();
        let origin = parse_remote_url(&job.files[i].remote_name)?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(RANGE, header_value(&format!("bytes={offset}-"))?);
            if let Some(v) = job.files[i]
                .validator
                .as_deref()
                .filter(|v| usable_in_if_range(v))
            {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.insert(IF_RANGE, v);
                }
            }
        }
        let mut url = origin.clone();
        let mut hops = 0;
        loop {
            let mut request = Request::get(url.clone(), policy.clone());
            request.headers = headers.clone();
            let same_origin = redirect::same_origin(&origin, &url);
            for (name, value) in &self.headers {
                if same_origin || !redirect::CREDENTIAL_HEADERS.contains(name) {
                    request.headers.append(name.clone(), value.clone());
                }
            }
            let mut sending = std::pin::pin!(self.transport.send(request));
            let response = match poll_once(sending.as_mut()).await {
                Poll::Ready(response) => {
                    meanwhile.settle(job, observer).await;
                    response
                }
                Poll::Pending => {
                    // The transport took the request; let its connection task
                    // write it, then work until the answer comes.
                    tokio::task::yield_now().await;
                    meanwhile.run(job, observer).await;
                    meanwhile.alongside(sending, job, observer).await?
                }
            }?;
            let Some(location) = redirect::location(response.status, &response.headers) else {
                if hops > 0 && flags.redirect_policy() == RedirectPolicy::AllowReport {
                    job.files[i].remote_name = url.to_string();
                    observer.on_file_change(job, i);
                }
                return Ok(response);
            };
            let target = redirect::resolve(&url, location)?;
            tracing::debug!(file = i, status = response.status, %target, "redirect");
            if let Err(e) = redirect::check(
                &url,
                response.status,
                &target,
                flags,
                hops,
                self.options.max_redirects,
            ) {
                if let BitsError::RedirectDisallowed { location, .. } = &e {
                    job.files[i].remote_name = location.clone();
                    observer.on_file_change(job, i);
                }
                return Err(e);
            }
            hops += 1;
            url = target;
        }
    }
}

/// Polls `future` once: `Pending` once it waits (a request handed to a
/// transport that sends it from its own task), else its output.
async fn poll_once<F: Future + Unpin>(mut future: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut future).poll(cx))).await
}

/// The bytes of a response to write, from `offset` to `end` (when known),
/// of a file of `total` bytes (when known).
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    end: Option<u64>,
    total: Option<u64>,
}

/// A file whose every byte arrived: its last bytes may still be buffered
/// in `writer`. [`Unsynced::settle`] writes them out, sets the server's
/// modification time, closes the file and counts it finished.
#[derive(Debug)]
struct Received {
    file: usize,
    /// `None` when the file was already whole on disk (a 416).
    writer: Option<TempWriter>,
    modified: Option<SystemTime>,
    size: u64,
    /// This run wrote every byte the file holds (it started empty or
    /// absent), which lets its checkpoint use `syncfs` ([`files::Watched`]).
    fresh: bool,
}

/// The local work a file's request does not wait for, done while it is in
/// flight (the round trip to the server is idle time for the engine): the
/// previous file is settled (written out, counted, queued for its
/// checkpoint) and this file's temporary file opened. That work was ~35 µs
/// of the ~225 µs each of 2,000 × 16 KiB files took over loopback HTTPS;
/// hiding it took the job from 0.45 s to 0.36 s (A/B, 10 rounds).
struct Meanwhile<'a> {
    unsynced: &'a mut Unsynced,
    /// What settling the previous file gave; `None` until it ran.
    settled: Option<SyncResult>,
    /// The temporary file to open, and its length (`None`: it does not
    /// exist).
    open: Option<(PathBuf, Option<u64>)>,
    opened: Option<Early>,
}

/// A temporary file opened before the response came.
struct Early {
    offset: u64,
    writer: Result<TempWriter, BitsError>,
    /// The file, when this open created it.
    created: Option<PathBuf>,
}

impl Meanwhile<'_> {
    /// While a request is in flight: settles the previous file (once) and
    /// opens this file's temporary file.
    async fn run(&mut self, job: &mut Job, observer: &mut dyn Observer) {
        self.settle(job, observer).await;
        if let Some((temp, found)) = self.open.take() {
            let (writer, created) = match found {
                Some(len) => (TempWriter::open_at(&temp, len), None),
                None => match TempWriter::create(&temp) {
                    Ok(Some(writer)) => (Ok(writer), Some(temp)),
                    Ok(None) => (TempWriter::open_at(&temp, 0), None),
                    Err(e) => (Err(e), None),
                },
            };
            self.opened = Some(Early {
                offset: found.unwrap_or(0),
                writer,
                created,
            });
        }
    }

    /// Settles the previous file before the request goes out when that
    /// means waiting for a sync (its own background writeback, or the batch
    /// before when a new one is due): no wait runs while a request is in
    /// flight, against its headers timeout, and a slow disk holds back the
    /// next request as it always did.
    async fn before_sending(&mut self, job: &mut Job, observer: &mut dyn Observer) {
        if self.unsynced.settling_waits() {
            self.settle(job, observer).await;
        }
    }

    async fn settle(&mut self, job: &mut Job, observer: &mut dyn Observer) {
        if self.settled.is_none() {
            self.settled = Some(self.unsynced.settle(job, observer).await);
        }
    }

    /// Awaits `future` (this file's answer, or the next chunk of its body)
    /// while doing the earlier files' checkpoint work as it falls due, so
    /// that a finished file is completed about [`CHECKPOINT_INTERVAL`]
    /// after it settled however long this file takes: a batch due by time
    /// starts syncing, a batch whose sync ended is marked
    /// ([`Unsynced::ready`]). No system call is added per chunk: each poll
    /// looks at a timer or the sync's task, and only when a batch waits.
    ///
    /// Fails only when such a sync failed: that failure becomes the settled
    /// one, which [`Engine::transfer_file`] reports first (it is the failed
    /// file's error), and the error returned here, never reported, stops
    /// this file.
    async fn alongside<F: Future>(
        &mut self,
        mut future: Pin<&mut F>,
        job: &mut Job,
        observer: &mut dyn Observer,
    ) -> Result<F::Output, BitsError> {
        loop {
            tokio::select! {
                biased;
                work = self.unsynced.ready(), if self.streaming() => {
                    if let Err(failed) = self.unsynced.step_ready(work, job, observer) {
                        self.settled = Some(Err(failed));
                        return Err(BitsError::Internal {
                            what: "stopped: an earlier file could not be synced".into(),
                        });
                    }
                }
                output = future.as_mut() => return Ok(output),
            }
        }
    }

    /// Whether [`Meanwhile::alongside`] has checkpoint work to watch: the
    /// previous file settled and a batch waits or syncs.
    fn streaming(&self) -> bool {
        matches!(self.settled, Some(Ok(()))) && self.unsynced.pending()
    }

    /// The temporary file opened early, if it was opened at `offset`
    /// (an error opening it is reported only if it is needed).
    fn opened(&mut self, offset: u64) -> Option<Result<TempWriter, BitsError>> {
        self.open = None;
        match self.opened.take() {
            Some(early) if early.offset == offset => Some(early.writer),
            other => {
                self.opened = other;
                None
            }
        }
    }
}

impl Drop for Meanwhile<'_> {
    /// A temporary file this created for a response that brought no body
    /// (an HTTP error, a refused redirect) is not left behind.
    fn drop(&mut self) {
        if let Some(Early {
            writer,
            created: Some(path),
            ..
        }) = self.opened.take()
        {
            drop(writer);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::debug!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// What to do with a response to a GET from byte `offset`.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Write the body at `offset`; it ends at `end` (when known); the whole
    /// file is `total` bytes (when known).
    Write {
        offset: u64,
        end: Option<u64>,
        total: Option<u64>,
    },
    /// The temporary file already holds the whole file (416 at its size).
    Whole,
    /// Discard the bytes so far and ask again from 0.
    Restart(String),
}

fn plan(response: &Response, offset: u64, file: &FileInfo) -> Result<Plan, BitsError> {
    let headers = &response.headers;
    match response.status {
        200 => {
            let len = content_length(headers);
            Ok(Plan::Write {
                offset: 0,
                end: len,
                total: len,
            })
        }
        206 => {
            let Some(ContentRange {
                range: Some((first, last)),
                total,
            }) = content_range(headers)
            else {
                return Err(BitsError::InvalidServerResponse {
                    what: "a 206 response without a valid Content-Range".into(),
                });
            };
            if first != offset {
                return restart_or(
                    offset,
                    format!("asked for bytes from {offset}, the server sent from {first}"),
                );
            }
            // Bytes on disk with no validator recorded for them (a daemon
            // killed before it saved the file's headers): if the server names
            // its content now, continuity cannot be proven, so start again
            // rather than risk joining two versions of the file.
            if file.validator.is_none() {
                if let Some(now) = validator_of(headers) {
                    return restart_or(
                        offset,
                        format!(
                            "no validator was recorded for the bytes on disk and the server now says {now}"
                        ),
                    );
                }
            }
            if let (Some(stored), Some(now)) = (
                file.validator.as_deref(),
                validator_like(headers, file.validator.as_deref()),
            ) {
                if stored != now {
                    return restart_or(
                        offset,
                        format!("the server's validator changed from {stored} to {now}"),
                    );
                }
            }
            if let (Some(before), Some(now)) = (file.bytes_total, total) {
                if offset > 0 && before != now {
                    return restart_or(offset, format!("the file's size changed from {before} to {now}"));
                }
            }
            Ok(Plan::Write {
                offset,
                end: Some(last + 1),
                total,
            })
        }
        416 if offset > 0 => {
            let total = content_range(headers).and_then(|c| c.total).or(file.bytes_total);
            if total == Some(offset) {
                Ok(Plan::Whole)
            } else {
                Ok(Plan::Restart(format!(
                    "the server cannot send bytes from {offset} (size {total:?})"
                )))
            }
        }
        status => Err(BitsError::HttpStatus {
            status,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::retry_after(v, SystemTime::now())),
        }),
    }
}

fn restart_or(offset: u64, why: String) -> Result<Plan, BitsError> {
    if offset == 0 {
        Err(BitsError::InvalidServerResponse { what: why })
    } else {
        Ok(Plan::Restart(why))
    }
}

/// A parsed `Content-Range: bytes first-last/total` (or `bytes */total`).
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    range: Option<(u64, u64)>,
    total: Option<u64>,
}

fn content_range(headers: &HeaderMap) -> Option<ContentRange> {
    let text = headers.get(CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = text.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            Some((a, b))
        }
    };
    Some(ContentRange { range, total })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The validator a response gives its content: the ETag, else Last-Modified.
fn validator_of(headers: &HeaderMap) -> Option<String> {
    header_text(headers, ETAG).or_else(|| header_text(headers, LAST_MODIFIED))
}

/// The response's validator of the same kind as `stored` (an ETag starts
/// with `"` or `W/`; anything else is a date), so that a server that sends
/// only one of them on a 206 is not taken for changed content.
fn validator_like(headers: &HeaderMap, stored: Option<&str>) -> Option<String> {
    match stored {
        Some(s) if is_etag(s) => header_text(headers, ETAG),
        Some(_) => header_text(headers, LAST_MODIFIED),
        None => None,
    }
}

fn is_etag(v: &str) -> bool {
    v.starts_with('"') || v.starts_with("W/")
}

/// A weak ETag must not be used in `If-Range` (RFC 9110 §13.1.5).
fn usable_in_if_range(v: &str) -> bool {
    !v.starts_with("W/")
}

fn header_text(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn header_value(text: &str) -> Result<HeaderValue, BitsError> {
    HeaderValue::from_str(text).map_err(|e| BitsError::Internal {
        what: format!("header {text:?}: {e}"),
    })
}

/// Forgets the bytes of a file (before they are cut from the disk).
fn reset(file: &mut FileInfo) {
    file.bytes_transferred = 0;
    file.validator = None;
    file.completed = false;
}

/// Bytes reached the temporary file.
fn moved(job: &mut Job, i: usize, position: u64, observer: &mut dyn Observer) {
    job.files[i].bytes_transferred = position;
    job.note_progress();
    if job.state() != JobState::Transferring && job.apply(Event::BytesMoved) == JobState::Transferring {
        observer.on_change(job);
    }
    observer.on_progress(job);
}

/// File `i` holds all its bytes (written, not yet synced): its counters
/// say so; `completed` waits for the checkpoint ([`Unsynced`]).
fn finish_file(job: &mut Job, i: usize, size: u64, observer: &mut dyn Observer) {
    let file = &mut job.files[i];
    file.bytes_transferred = size;
    file.bytes_total = Some(size);
    job.note_progress();
    observer.on_progress(job);
}

/// How a batch sync ended: the index (in the batch) of the first file that
/// could not be synced, and why.
type SyncResult = Result<(), (usize, BitsError)>;

/// Files whose every byte is written but not yet synced.
#[derive(Debug, Default)]
struct Unsynced {
    files: Vec<usize>,
    /// For each of `files`: whether this run wrote it from byte 0.
    fresh: Vec<bool>,
    /// The last file received, not yet settled.
    held: Option<Received>,
    bytes: u64,
    since: Option<Instant>,
    /// A batch being synced in the background: its files and the sync.
    syncing: Option<(Vec<usize>, tokio::task::JoinHandle<SyncResult>)>,
    /// Fires when the waiting files fall due by time ([`Unsynced::ready`]);
    /// kept from file to file, so it is armed once per batch.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The file systems written to, for batches synced with `syncfs`.
    watched: files::Watched,
}

/// Checkpoint work that needs no waiting, found by [`Unsynced::ready`].
#[derive(Debug)]
enum Ready {
    /// The background batch's sync ended.
    Synced(SyncResult),
    /// The waiting files fell due by time, and no batch syncs.
    Due,
}

impl Unsynced {
    /// Before a file is written: watches its file system.
    fn watch(&mut self, temp: &std::path::Path) {
        if let Some(dir) = temp.parent() {
            self.watched.watch(dir);
        }
    }

    /// Keeps a received file until [`Unsynced::settle`].
    fn hold(&mut self, received: Received) {
        debug_assert!(self.held.is_none(), "a held file was never settled");
        self.held = Some(received);
    }

    /// Settles the held file, if any: writes out its last bytes, sets its
    /// modification time (as BITS does: the server's), closes it, counts
    /// it finished and queues it for its checkpoint, which may start now.
    async fn settle(&mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        let Some(received) = self.held.take() else {
            return Ok(());
        };
        let i = received.file;
        if let Some(mut writer) = received.writer {
            let flushed = writer.flush();
            if flushed.is_err() && writer.position() != job.files[i].bytes_transferred {
                // What did reach the file is kept and counted.
                moved(job, i, writer.position(), observer);
            }
            // A background writeback sync in flight is waited for: its
            // error (reported once) must not be lost to the final sync.
            let settled = writer.settle().await;
            flushed.and(settled).map_err(|e| (i, e))?;
            if let Some(modified) = received.modified {
                writer.set_modified(modified);
            }
        }
        finish_file(job, i, received.size, observer);
        self.push(job, i, received.fresh);
        // A due batch syncs in the background while the next files
        // download; an earlier batch that is done gets marked.
        self.step(job, observer).await
    }

    /// Whether [`Unsynced::settle`] would wait for a sync now.
    fn settling_waits(&self) -> bool {
        let Some(held) = &self.held else {
            return false;
        };
        if held.writer.as_ref().is_some_and(TempWriter::syncing) {
            return true;
        }
        let syncing = self.syncing.as_ref().is_some_and(|(_, sync)| !sync.is_finished());
        // `step` after the held file joins the waiting ones.
        syncing && self.due_with(1, held.size)
    }

    fn push(&mut self, job: &Job, i: usize, fresh: bool) {
        self.files.push(i);
        self.fresh.push(fresh);
        self.bytes += job.files[i].bytes_transferred;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether a checkpoint is due.
    fn due(&self) -> bool {
        self.due_with(0, 0)
    }

    /// Whether a checkpoint would be due with `files` more files of
    /// `bytes` in all.
    fn due_with(&self, files: usize, bytes: u64) -> bool {
        self.files.len() + files >= CHECKPOINT_FILES
            || self.bytes + bytes >= CHECKPOINT_BYTES
            || self.since.is_some_and(|t| t.elapsed() >= CHECKPOINT_INTERVAL)
    }

    /// Between files: marks a background batch that finished; starts one
    /// when due (after the previous batch is marked: at most one syncs).
    async fn step(&mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        let finished = self.syncing.as_ref().is_some_and(|(_, sync)| sync.is_finished());
        if finished || (self.due() && self.syncing.is_some()) {
            self.finish(job, observer).await?;
        }
        if self.due() {
            self.start(job);
        }
        Ok(())
    }

    /// Whether files wait for their checkpoint or a batch syncs.
    fn pending(&self) -> bool {
        self.since.is_some() || self.syncing.is_some()
    }

    /// While the network is awaited: resolves once there is checkpoint work
    /// that needs no waiting: the background batch's sync ended, or, none
    /// syncing, the waiting files fell due by time. Cancel-safe; never
    /// resolves when nothing is [`Unsynced::pending`].
    async fn ready(&mut self) -> Ready {
        if let Some((_, sync)) = &mut self.syncing {
            return Ready::Synced(joined(sync.await));
        }
        let Some(since) = self.since else {
            return std::future::pending().await;
        };
        let deadline = since + CHECKPOINT_INTERVAL;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.await;
        Ready::Due
    }

    /// Does the work [`Unsynced::ready`] found: marks the batch whose sync
    /// ended (its error, if any, is returned as [`Unsynced::finish`]
    /// returns it) and starts the next one when it is due.
    fn step_ready(&mut self, ready: Ready, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        match ready {
            Ready::Synced(result) => {
                if let Some((waiting, _)) = self.syncing.take() {
                    mark(job, observer, &waiting, result)?;
                }
                if self.due() {
                    self.start(job);
                }
            }
            Ready::Due => self.start(job),
        }
        Ok(())
    }

    /// Syncs every waiting file and marks it completed: before a failure
    /// is recorded and before the job is TRANSFERRED.
    async fn checkpoint(
        &mut self,
        job: &mut Job,
        observer: &mut dyn Observer,
    ) -> Result<(), (usize, BitsError)> {
        self.settle(job, observer).await?;
        self.finish(job, observer).await?;
        self.start(job);
        self.finish(job, observer).await
    }

    /// Starts syncing the waiting files in the background (a dropped run
    /// leaves it to end by itself: the files stay unfinished in the job).
    fn start(&mut self, job: &Job) {
        if self.files.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.files);
        let fresh = std::mem::take(&mut self.fresh);
        self.bytes = 0;
        self.since = None;
        let paths: Vec<_> = waiting.iter().map(|&i| job.files[i].temp_name.clone()).collect();
        let groups = self.watched.groups(&paths, &fresh);
        self.syncing = Some((waiting, tokio::spawn(files::sync_paths(paths, groups))));
    }

    /// Waits for the background batch, then (only then) marks its files
    /// completed ([`mark`]).
    async fn finish(&mut self, job: &mut Job, observer: &mut dyn Observer) -> SyncResult {
        let Some((waiting, sync)) = self.syncing.take() else {
            return Ok(());
        };
        if !sync.is_finished() {
            // Lets a sync task spawned just now start its blocking work
            // first, so that the observer's work runs beside it.
            tokio::task::yield_now().await;
            observer.on_idle(job);
        }
        mark(job, observer, &waiting, joined(sync.await))
    }
}

/// A batch sync's result, a task that failed counting as its first file's
/// failure.
fn joined(sync: Result<SyncResult, tokio::task::JoinError>) -> SyncResult {
    sync.unwrap_or_else(|e| {
        Err((
            0,
            BitsError::Internal {
                what: format!("the sync task failed: {e}"),
            },
        ))
    })
}

/// Marks the files of a batch that its sync made durable completed and
/// tells the observer. A file that could not be synced stays unfinished and
/// is returned with its index, as are the ones after it; the ones before
/// it are marked completed.
fn mark(job: &mut Job, observer: &mut dyn Observer, waiting: &[usize], result: SyncResult) -> SyncResult {
    let synced = match &result {
        Ok(()) => waiting.len(),
        Err((n, _)) => *n,
    };
    for &i in &waiting[..synced] {
        job.files[i].completed = true;
    }
    if synced > 0 {
        if job.next_file().is_some() {
            job.apply(Event::FileDone);
        }
        observer.on_change(job);
    }
    result.map_err(|(n, e)| (waiting[n], e))
}

/// Records a failure and says when to retry.
fn fail(job: &mut Job, observer: &mut dyn Observer, error: &BitsError, file: Option<usize>) -> RunOutcome {
    let state = job.fail(error, file, SystemTime::now());
    tracing::info!(job = %job.id, ?file, code = %error.hresult(), %state, "{error}");
    observer.on_change(job);
    let retry_after = (state == JobState::TransientError).then(|| {
        let server = match error {
            BitsError::HttpStatus { retry_after, .. } => retry_after.unwrap_or(0),
            _ => 0,
        };
        Duration::from_secs(job.min_retry_delay.max(server))
    });
    RunOutcome { state, retry_after }
}

/// `complete`: moves every finished temporary file to its LOCAL name
/// atomically (rename, then fsync of the directories; the files themselves
/// were synced by the checkpoint that marked them completed) and puts the
/// job in ACKNOWLEDGED. A download in ERROR with some files finished keeps
/// those and drops the rest (`BG_S_PARTIAL_COMPLETE`).
///
/// If a rename fails, the job keeps its state (files already renamed stay
/// at LOCAL; calling `complete` again skips them: a missing temporary file
/// whose LOCAL exists) and the `LOCAL_FILE` error is returned. Unfinished
/// temporary files are deleted only once every rename succeeded. Stop any
/// [`Engine::run`] of the job first.
pub fn complete(job: &mut Job) -> Result<Hresult, BitsError> {
    check_operation(job.state(), job.job_type, Operation::Complete)?;
    let pairs: Vec<(&std::path::Path, &std::path::Path)> = job
        .files
        .iter()
        .filter(|f| f.completed)
        .map(|f| (f.temp_name.as_path(), f.local_name.as_path()))
        .collect();
    files::commit_all(&pairs)?;
    let mut dropped = 0;
    let mut undeleted = 0;
    for file in job.files.iter().filter(|f| !f.completed) {
        dropped += 1;
        if let Err(e) = files::remove(&file.temp_name) {
            tracing::warn!("cannot delete {}: {e}", file.temp_name.display());
            undeleted += 1;
        }
    }
    job.transition(Event::Complete);
    Ok(if dropped > 0 {
        Hresult::BG_S_PARTIAL_COMPLETE
    } else if undeleted > 0 {
        Hresult::BG_S_UNABLE_TO_DELETE_FILES
    } else {
        Hresult::S_OK
    })
}

/// `cancel`: deletes every temporary file and puts the job in CANCELLED.
/// Returns `BG_S_UNABLE_TO_DELETE_FILES` when some could not be removed
/// (missing ones are fine). LOCAL files are never touched.
pub fn cancel(job: &mut Job) -> Result<Hresult, BitsError> {
    check_operation(job.state(), job.job_type, Operation::Cancel)?;
    let mut undeleted = 0;
    for file in &job.files {
        if let Err(e) = files::remove(&file.temp_name) {
            tracing::warn!("cannot delete {}: {e}", file.temp_name.display());
            undeleted += 1;
        }
    }
    job.transition(Event::Cancel);
    Ok(if undeleted > 0 {
        Hresult::BG_S_UNABLE_TO_DELETE_FILES
    } else {
        Hresult::S_OK
    })
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
