//! # bits-core
//!
//! The engine-independent heart of **bits**, a Linux take on the Windows
//! Background Intelligent Transfer Service: jobs and their files, the nine
//! BITS job states, security flags, errors as HRESULTs, retry and
//! no-progress rules, resume by HTTP Range, and temporary files that become
//! real only on `complete`.
//!
//! It talks to the network only through the [`Transport`] trait, so it has no
//! TLS dependency of its own. The `bits-transport-openssl` and
//! `bits-transport-native` crates provide transports; an embedder may bring
//! its own.
//!
//! ## What it does not do
//! - TLS, HTTP connection handling (that is a transport's job; the shared
//!   hyper-util plumbing lives in `bits-http`).
//! - Persistence: [`Job`] is `serde`-serializable so that a store (the
//!   `bits` CLI uses SQLite) can keep it.
//! - Scheduling several jobs: `bits-scheduler` does that (the `bits`
//!   daemon runs it over its SQLite store).
//! - Uploads: upload and upload-reply jobs can be created and stored, but
//!   there is no upload protocol yet; running one puts it in ERROR with
//!   `E_NOTIMPL`.
//!
//! ## How to embed
//! 1. **Pick a transport.** `bits-transport-openssl` or
//!    `bits-transport-native` for https, `bits_http::PlainHttp` for http
//!    only, or your own [`Transport`] (`examples/embed.rs` serves files from
//!    memory). A transport never follows redirects, refuses in
//!    [`Transport::check_policy`] every policy it cannot honour exactly,
//!    reports certificate failures as the matching [`BitsError`], and fails
//!    a body that ends before its length with `ConnectionReset`.
//! 2. **Make a [`Job`]**: [`Job::add_file`] (absolute LOCAL; the bytes go to
//!    a hidden temporary file beside it), [`Job::set_security_flags`]
//!    (checked against the transport's [`Transport::check_policy`]), then
//!    [`Job::resume`] (QUEUED). The HTTP options
//!    (`docs/spec/http-options.md`) are set on the job too:
//!    [`Job::set_custom_headers`] (sent on every request of every file),
//!    [`Job::set_http_method`] (before the first resume; no body, no
//!    `Range`, every failure fatal), [`Job::set_client_certificate`] and
//!    [`Job::set_server_cert_pins`] (stored with the job).
//! 3. **Validate servers yourself**, if you want to: while the job is
//!    SUSPENDED, [`Engine::set_server_cert_validator`] gives the engine a
//!    [`ServerCertValidator`] for that job. It is asked, after the
//!    transport verified the server under the job's flags and pins and
//!    before any request, with the job's id, the file's index and the
//!    chain; it can only reject (TRANSIENT_ERROR, context
//!    SERVER_CERTIFICATE_CALLBACK). Certificates it accepted are not asked
//!    about again for that job. The engine keeps it (its clones share it)
//!    and never persists it: set it again after a restart, before the job
//!    resumes.
//! 4. **Run it** with an [`Engine`]. [`Engine::run`] makes one attempt and
//!    returns a [`RunOutcome`]: TRANSFERRED, ERROR, or TRANSIENT_ERROR with
//!    the delay after which the scheduler applies [`Event::RetryTimer`] (or
//!    [`Event::NoProgressTimeout`] once [`Job::no_progress_expired`]).
//!    [`Engine::run_until_settled`] does that loop for you.
//! 5. **Watch it** with an [`Observer`]; persist the job there (throttled)
//!    if you keep jobs across restarts. The counters never claim more bytes
//!    than the temporary files hold, so any saved copy resumes safely (the
//!    engine trusts the bytes on disk, and resumes with `Range`).
//! 6. **Stop it** by dropping the future of `run` (it is cancel-safe), then
//!    [`Job::suspend`] or [`engine::cancel`] (deletes the temporary files).
//! 7. **Finish it** with [`engine::complete`]: each finished file is
//!    fsync'd and renamed onto LOCAL atomically; nothing is written at LOCAL
//!    before that.
//!
//! ```
//! use std::path::Path;
//!
//! use bits_core::engine::complete;
//! use bits_core::{Engine, Job, JobState, JobType, NoObserver, SharedTransport};
//!
//! async fn download(transport: SharedTransport, url: &str, to: &Path) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut job = Job::new("my download", JobType::Download, transport.name());
//!     job.add_file(url, to)?;
//!     job.resume()?;
//!     let outcome = Engine::new(transport).run_until_settled(&mut job, &mut NoObserver).await;
//!     if outcome.state != JobState::Transferred {
//!         let e = job.error.expect("ERROR carries an error");
//!         return Err(format!("{}: {}", e.code, e.message).into());
//!     }
//!     complete(&mut job)?;
//!     Ok(())
//! }
//! ```
//!
//! ## What the engine does beyond BITS
//! - A server that ignores `Range` (200), or whose ETag, Last-Modified or
//!   size changed, restarts the file from byte 0 instead of failing.
//! - No `Content-Length` (chunked) is fine: the size is known when the body
//!   ends.
//! - 308 redirects are handled like 307; credentials (`Authorization`,
//!   `Proxy-Authorization`, `Cookie`), given with
//!   [`Engine::with_request_headers`] or as a job's custom headers, never
//!   reach another origin (BITS sends custom headers everywhere; curl does
//!   not). Header values are never logged.
//!
//! ## Why the defaults are what they are
//! Flags default to `0x0000` (full verification, no CRL check, silent
//! redirects, no https→http), the minimum retry delay to 600 s and the
//! no-progress timeout to 14 days, as in Windows BITS.

#![deny(missing_docs)]

pub mod bandwidth;
pub mod credentials;
pub mod engine;
pub mod error;
mod files;
pub mod flags;
pub mod http_options;
mod httpdate;
pub mod job;
pub mod policy;
pub mod proxy;
mod redirect;
pub mod state;
pub mod transport;

pub use bandwidth::{Controller, PoolRate, Share, SharedLimiter};
pub use credentials::{without_user_info, Answer, AuthScheme, AuthTarget, Credentials};
pub use engine::{Engine, EngineOptions, NoObserver, Observer, RunOutcome};
pub use error::{BitsError, CertFault, ErrorContext, Hresult, JobError};
pub use flags::{RedirectPolicy, SecurityFlags};
pub use http_options::{
    ClientCertificate, ClientCertificateFile, CustomHeaders, Password, Pin, PinSet, ServerCertCheck,
    ServerCertValidator, Thumbprint,
};
pub use job::{FileInfo, Job, JobType, Priority, UploadSession};
pub use policy::ConnectionPolicy;
pub use proxy::{ProxyScheme, ProxySettings, ProxyUrl, ProxyUsage};
pub use state::{Event, JobState, Operation};
pub use transport::{
    BodySource, BodyStream, Method, Request, RequestBody, Response, SharedTransport, Transport, Version,
    YieldController, YieldStatus,
};
