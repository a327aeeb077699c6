//! The transfer engine: drives one job through a
//! [`Transport`](crate::Transport).
//!
//! A download job with several files to go moves up to
//! [`EngineOptions::connections_per_origin`] of them at once per origin,
//! started in the job's order (`parallel`: each file runs the flow below on
//! a job of its own, and the run's loop applies what it reports: one
//! writer; a rate cap, the job's own or its share of the daemon's, is
//! shared by its files in flight). With one file to go, a limit of one or a
//! server-certificate validator, files go one at a time with the pipelining
//! below.
//!
//! What [`Engine::run`] does, per file not yet transferred:
//! - downloads into the file's hidden temporary name beside LOCAL (LOCAL is
//!   never touched before [`complete`]);
//! - resumes from the bytes already in the temporary file (the file on disk
//!   is trusted, not the counter) with `Range: bytes=N-`, plus `If-Range`
//!   when a validator (ETag, else Last-Modified) is known. A `200` (Range
//!   ignored, or content changed), a changed validator or a changed size
//!   restarts the file from byte 0; a `416` whose size equals N means the
//!   file is whole;
//! - follows redirects itself under the job's policy (`docs/spec/policy.md`), never
//!   sending credentials to another origin;
//! - records which protocol carried the file's last response
//!   ([`FileInfo::protocol`]: `http/1.1`, or `h2` where TLS negotiated it);
//! - sends the job's custom headers ([`Job::custom_headers_to_send`]) with
//!   the engine's own ([`Engine::with_request_headers`]) on every request
//!   of every file, resumed ones and redirected ones included; one rule for
//!   both: `Authorization`, `Proxy-Authorization` and `Cookie`
//!   ([`is_credential_header`]) go only to the origin (scheme, host, port)
//!   of the file's own URL, every other header to any origin
//!   (`docs/spec/http-options.md`, "Custom headers"). Header values are
//!   never logged, only names;
//! - answers a server's `401` with the job's server credentials
//!   ([`Job::set_credentials`]): once, Digest before Basic, only to the
//!   origin of the file's own URL, never Basic over plain http; the answer
//!   is then sent first to that origin for the rest of the run (`auth.rs`
//!   has the rules). Every failure is fatal `0x80190191` with its reason;
//! - with a custom HTTP method ([`Job::has_custom_http_method`]) sends that
//!   method with no body, and never `HEAD` (the engine sends none anyway),
//!   `Range` or `If-Range`: a file with bytes on disk starts again from byte
//!   0, its temporary file truncated (`docs/spec/http-options.md`, "HTTP
//!   method"); a redirect (303 included) keeps the method; a `206` is
//!   refused (there is no `Range` to ask for the rest with); every failure
//!   is fatal ([`Job::fail`]) and a resume restarts every unfinished file
//!   ([`Job::resume`]);
//! - asks the job's server-certificate validator, when the embedder set one
//!   ([`Engine::set_server_cert_validator`]), through the policy every
//!   request carries: `job.connection_policy()` with the job's
//!   [`ServerCertCheck`], told the index of the file before each request;
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
//!   cost a few syncs, not one each: a batch of many files is one `syncfs`
//!   of their file system (Linux), through a directory opened before they
//!   were written, so any failure to write them back is reported; a small
//!   batch is an `fsync` each.
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
//! Upload and upload-reply jobs speak the BITS upload protocol
//! (`upload.rs`).
//!
//! Here: the engine and the flow of one file (request, redirects, body).
//! Beside it: `parallel` (files in flight at once), `plan` (what a response means for the file: write, whole or
//! restart), `pipeline` (the work done while the network is awaited),
//! `checkpoint` (batched durability) and `finish` ([`complete`] and
//! [`cancel`], which need no transport).

mod auth;
mod checkpoint;
mod finish;
mod parallel;
mod pipeline;
mod plan;
mod rate;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue};
use uuid::Uuid;

use crate::bandwidth::Controller;
use crate::error::BitsError;
use crate::files::{self, TempWriter};
use crate::flags::RedirectPolicy;
use crate::http_options::{
    is_credential_header, CustomHeaders, PinSet, ServerCertCheck, ServerCertValidator,
};
use crate::job::{parse_remote_url, FileInfo, Job, JobType};
use crate::policy::ConnectionPolicy;
use crate::redirect;
use crate::state::{check_operation, Event, JobState, Operation};
use crate::transport::{Request, Response, SharedTransport, YieldController};

use checkpoint::Unsynced;
use pipeline::{poll_once, Meanwhile, Received};
use plan::{plan, usable_in_if_range, validator_of, Plan};

pub use checkpoint::{CHECKPOINT_BYTES, CHECKPOINT_FILES, CHECKPOINT_INTERVAL};
pub use finish::{cancel, complete};

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
    /// Files of a download job in flight at once per origin (scheme, host,
    /// port), each on a connection of its own over HTTP/1.1 or a stream of
    /// a shared one over HTTP/2 (8; `docs/spec/network.md`, "Many files,
    /// many connections"). 1 moves one file at a time, as BITS does.
    pub connections_per_origin: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_redirects: 10,
            read_timeout: Duration::from_secs(60),
            connections_per_origin: 8,
        }
    }
}

/// Drives jobs through a transport.
///
/// Clones share the server-certificate validators set on any of them
/// ([`Engine::set_server_cert_validator`]).
#[derive(Debug, Clone)]
pub struct Engine {
    transport: SharedTransport,
    options: EngineOptions,
    headers: HeaderMap,
    validators: Arc<Mutex<HashMap<Uuid, JobValidator>>>,
    auth: auth::ServerAuth,
}

/// A job's validator as the engine keeps it: the check its connections
/// carry (one per job, kept across runs so that accepted certificates stay
/// cached), and the pins the job had when that check was made (new pins
/// make a new check: the cache is cleared).
#[derive(Debug)]
struct JobValidator {
    validator: Arc<dyn ServerCertValidator>,
    pins: Option<PinSet>,
    check: ServerCertCheck,
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
            validators: Arc::default(),
            auth: auth::ServerAuth::default(),
        }
    }

    /// Adds headers to every request of every job (a `User-Agent`, an
    /// `Authorization`…). A job's own custom headers
    /// ([`Job::set_custom_headers`]) are sent with them; a name the job
    /// sets replaces the engine's header of that name.
    ///
    /// # Security
    /// `Authorization`, `Proxy-Authorization` and `Cookie` (the engine's or
    /// the job's) are sent only to the origin (scheme, host, port) of the
    /// file's own URL: after a redirect to another origin they are left
    /// out. Header values are never logged.
    pub fn with_request_headers(mut self, headers: HeaderMap) -> Engine {
        self.headers = headers;
        self
    }

    /// Sets (or, with `None`, removes) `job`'s server-certificate validator
    /// (BITS's `IBackgroundCopyJobHttpOptions3::SetServerCertificateValidationInterface`;
    /// `docs/spec/http-options.md`, "Server certificate validation").
    ///
    /// From the next [`Engine::run`] of that job on, every connection is
    /// checked by it after the transport verified the server under the
    /// job's flags and pins, before any HTTP request; it is told the job's
    /// id and the index of the file being requested, and can only reject
    /// (TRANSIENT_ERROR, context SERVER_CERTIFICATE_CALLBACK). A (host,
    /// port, certificate) it accepted is not asked about again for this
    /// job; setting the validator again, or new pins on the job, forgets
    /// them.
    ///
    /// The engine keeps it (clones of this engine share it) and never
    /// persists it: an embedder that keeps jobs across restarts sets it
    /// again after one, before resuming the job. Removing it (`None`) when
    /// the job is done frees it.
    ///
    /// # Errors
    /// `BG_E_INVALID_STATE` for an ACKNOWLEDGED or CANCELLED job;
    /// `BG_E_READ_ONLY_WHEN_JOB_ACTIVE` unless the job is SUSPENDED;
    /// `E_NOTIMPL` when the transport cannot honour a validator
    /// ([`crate::Transport::check_policy`]). Nothing changes on an error.
    pub fn set_server_cert_validator(
        &self,
        job: &Job,
        validator: Option<Arc<dyn ServerCertValidator>>,
    ) -> Result<(), BitsError> {
        check_operation(job.state(), job.job_type, Operation::SetProperty)?;
        if job.state() != JobState::Suspended {
            return Err(BitsError::ReadOnlyWhenJobActive {
                what: "the server certificate validator",
                state: job.state().as_str(),
            });
        }
        let Some(validator) = validator else {
            self.validators().remove(&job.id);
            return Ok(());
        };
        let check = ServerCertCheck::new(validator.clone(), job.id);
        self.transport
            .check_policy(&job.connection_policy().with_validator(Some(check.clone())))?;
        self.validators().insert(
            job.id,
            JobValidator {
                validator,
                pins: job.server_cert_pins.clone(),
                check,
            },
        );
        Ok(())
    }

    /// The server-certificate validator set for the job `id`, if any.
    pub fn server_cert_validator(&self, id: Uuid) -> Option<Arc<dyn ServerCertValidator>> {
        self.validators().get(&id).map(|v| v.validator.clone())
    }

    fn validators(&self) -> MutexGuard<'_, HashMap<Uuid, JobValidator>> {
        self.validators.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `job`'s connections are made under: its own policy, with the
    /// check of its validator when one is set (made anew when the job's
    /// pins changed since, which clears its cache).
    fn policy_of(&self, job: &Job) -> ConnectionPolicy {
        let check = self.validators().get_mut(&job.id).map(|v| {
            if v.pins != job.server_cert_pins {
                v.check = ServerCertCheck::new(v.validator.clone(), job.id);
                v.pins = job.server_cert_pins.clone();
            }
            v.check.clone()
        });
        job.connection_policy().with_validator(check)
    }

    /// The headers every request of a job carries besides `Range` and
    /// `If-Range`: the engine's own, then the job's custom headers; a name
    /// the job sets replaces the engine's header of that name.
    fn headers_for(&self, custom: Option<&CustomHeaders>) -> HeaderMap {
        let Some(custom) = custom.map(CustomHeaders::to_header_map) else {
            return self.headers.clone();
        };
        let mut all = HeaderMap::with_capacity(self.headers.len() + custom.len());
        for (name, value) in self.headers.iter().filter(|(n, _)| !custom.contains_key(*n)) {
            all.append(name.clone(), value.clone());
        }
        for (name, value) in &custom {
            all.append(name.clone(), value.clone());
        }
        all
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
        self.auth.forget(job.id);
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

        // Never transfer under a policy the transport cannot honour exactly.
        let policy = self.policy_of(job);
        if let Err(e) = self.transport.check_policy(&policy) {
            return fail(job, observer, &e, None);
        }
        if job.job_type != JobType::Download {
            if let Some(i) = job.next_file() {
                if let Err(e) = self.upload_file(job, i, &policy, observer).await {
                    return fail(job, observer, &e, Some(i));
                }
                job.files[i].completed = true;
            }
            job.apply(Event::AllFilesDone);
            observer.on_change(job);
            return RunOutcome {
                state: job.state(),
                retry_after: None,
            };
        }
        if self.runs_in_parallel(job, &policy) {
            return self.run_parallel(job, &policy, observer).await;
        }
        let mut unsynced = Unsynced::default();
        let cap = rate::RateCap::for_job(job);
        // Files before `from` are completed or waiting for their checkpoint.
        let mut from = 0;
        while let Some(i) = (from..job.files.len()).find(|&i| !job.files[i].completed) {
            from = i + 1;
            // Before its first byte: see files::Watched.
            unsynced.watch(&job.files[i].temp_name);
            match self
                .transfer_file(job, i, &policy, observer, &mut unsynced, cap.as_ref())
                .await
            {
                // Written out while the next file's request is in flight.
                Ok(received) => unsynced.hold(received),
                Err(failed) => return end_run(job, observer, &mut unsynced, Some(failed)).await,
            }
        }
        end_run(job, observer, &mut unsynced, None).await
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
        policy: &ConnectionPolicy,
        observer: &mut dyn Observer,
        unsynced: &mut Unsynced,
        cap: Option<&rate::RateCap>,
    ) -> Result<Received, (usize, BitsError)> {
        let mut meanwhile = Meanwhile::new(unsynced);
        let received = self
            .receive_file(job, i, policy, observer, &mut meanwhile, cap)
            .await;
        // The previous file's failure comes first: it happened first.
        meanwhile.end(job, observer).await?;
        received.map_err(|e| (i, e))
    }

    /// [`Engine::transfer_file`]'s work on file `i` itself.
    async fn receive_file(
        &self,
        job: &mut Job,
        i: usize,
        policy: &ConnectionPolicy,
        observer: &mut dyn Observer,
        meanwhile: &mut Meanwhile<'_>,
        cap: Option<&rate::RateCap>,
    ) -> Result<Received, BitsError> {
        let temp = job.files[i].temp_name.clone();
        // A custom method sends no Range (docs/spec/http-options.md, "HTTP
        // method"): bytes on disk, whatever the counters say, are dropped.
        let custom_method = job.has_custom_http_method();
        let restart =
            job.files[i].restart || (custom_method && files::disk_size(&temp)?.is_some_and(|n| n > 0));
        let mut fresh = !restart;
        if restart {
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
                meanwhile.will_open(temp.clone(), found);
            }
            let response = self.fetch(job, i, on_disk, policy, observer, meanwhile).await?;
            // Saved with the file's next change (its validator, its
            // completion), not at once: it informs, no restart needs it.
            let protocol = response.protocol();
            if job.files[i].protocol.as_deref() != Some(protocol) {
                job.files[i].protocol = Some(protocol.to_owned());
            }
            // What `info` shows of the connection's yielding (saved with
            // the next change, as the protocol is).
            (job.controller, job.yielding) = match response.yielding().map(|s| s.controller()) {
                Some(YieldController::WindowClamp) => (Controller::WindowClamp, true),
                Some(YieldController::PacedReads) => (Controller::Paced, true),
                None => (Controller::None, false),
            };
            if job.state() != JobState::Transferring && job.apply(Event::Connected) == JobState::Transferring
            {
                observer.on_change(job);
            }
            if custom_method && response.status == 206 {
                // Part of the file, and no Range to ask for the rest with.
                return Err(BitsError::InvalidServerResponse {
                    what: format!(
                        "a 206 (partial content) to a {} request without Range",
                        job.http_method()
                    ),
                });
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
                        .write_body(job, i, response, span, meanwhile, observer, cap)
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
    #[allow(clippy::too_many_arguments)]
    async fn write_body(
        &self,
        job: &mut Job,
        i: usize,
        response: Response,
        span: Span,
        meanwhile: &mut Meanwhile<'_>,
        observer: &mut dyn Observer,
        cap: Option<&rate::RateCap>,
    ) -> Result<Option<Received>, BitsError> {
        let Span { offset, end, total } = span;
        let temp = job.files[i].temp_name.clone();
        let validator = validator_of(&response.headers);
        let modified = plan::last_modified(&response.headers);
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
                let next = tokio::time::timeout(read_timeout, body.next_chunk());
                // A plain await unless earlier files have checkpoint work:
                // the loop of a lone large file stays as lean as it was.
                let next = if meanwhile.checkpoint_pending() {
                    meanwhile.alongside(std::pin::pin!(next), job, observer).await?
                } else {
                    next.await
                };
                let chunk = match next {
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
                // Paid for before it counts: a chunk read ahead while the
                // cap slept (hyper buffers up to ~400 KiB) never shows as
                // moved before its time.
                if let Some(cap) = cap {
                    cap.take(chunk.len()).await;
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

    /// Sends the request for file `i` (the job's method: GET unless set)
    /// from byte `offset` under `policy`, with the engine's and the job's
    /// headers, following redirects under the job's flags, and runs
    /// `meanwhile` once while a request is in flight. Returns the first
    /// response that is not a redirect.
    async fn fetch(
        &self,
        job: &mut Job,
        i: usize,
        offset: u64,
        policy: &ConnectionPolicy,
        observer: &mut dyn Observer,
        meanwhile: &mut Meanwhile<'_>,
    ) -> Result<Response, BitsError> {
        meanwhile.before_sending(job, observer).await;
        let flags = job.security_flags;
        let method = job.http_method();
        let origin = parse_remote_url(&job.files[i].remote_name)?;
        let extra = self.headers_for(job.custom_headers_to_send());
        let mut headers = HeaderMap::new();
        // Never a Range with a custom method (receive_file empties the file).
        debug_assert!(offset == 0 || !job.has_custom_http_method());
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
        let mut round = auth::Round::default();
        loop {
            let mut request = Request::new(method.clone(), url.clone(), policy.clone());
            request.headers = headers.clone();
            let same_origin = redirect::same_origin(&origin, &url);
            let mut withheld = Vec::new();
            for (name, value) in &extra {
                if same_origin || !is_credential_header(name.as_str()) {
                    request.headers.append(name.clone(), value.clone());
                } else if !withheld.contains(&name.as_str()) {
                    withheld.push(name.as_str());
                }
            }
            if !withheld.is_empty() {
                // Names only: values may be secrets.
                tracing::debug!(file = i, headers = ?withheld, "credentials not sent to another origin");
            }
            let answer = self
                .auth
                .authorization(job.id, method.as_str(), &url, same_origin)?;
            round.sent = answer.is_some();
            if let Some(answer) = answer {
                request.headers.insert(AUTHORIZATION, answer);
            }
            if let Some(check) = policy.validator() {
                check.set_file_index(i);
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
            if response.status == 401 {
                self.auth
                    .challenged(job, i, &url, same_origin, &response.headers, &mut round)?;
                continue;
            }
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

/// The bytes of a response to write, from `offset` to `end` (when known),
/// of a file of `total` bytes (when known).
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    end: Option<u64>,
    total: Option<u64>,
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

/// Ends a download run: the files finished are kept (synced and marked
/// completed), then `failure` (a file's index and error) is recorded, or
/// the job is TRANSFERRED.
async fn end_run(
    job: &mut Job,
    observer: &mut dyn Observer,
    unsynced: &mut Unsynced,
    failure: Option<(usize, BitsError)>,
) -> RunOutcome {
    if let Err((f, e)) = unsynced.checkpoint(job, observer).await {
        return fail(job, observer, &e, Some(f));
    }
    if let Some((f, e)) = failure {
        return fail(job, observer, &e, Some(f));
    }
    job.apply(Event::AllFilesDone);
    observer.on_change(job);
    RunOutcome {
        state: job.state(),
        retry_after: None,
    }
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

#[cfg(test)]
mod tests;
