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
//! - Scheduling several jobs: the `bits` daemon does that.
//!
//! ## Why the defaults are what they are
//! Flags default to `0x0000` (full verification, no CRL check, silent
//! redirects, no https→http), the minimum retry delay to 600 s and the
//! no-progress timeout to 14 days, as in Windows BITS.

#![deny(missing_docs)]

pub mod engine;
pub mod error;
mod files;
pub mod flags;
pub mod job;
mod redirect;
pub mod state;
pub mod transport;

pub use engine::{Engine, EngineOptions, NoObserver, Observer, RunOutcome};
pub use error::{BitsError, ErrorContext, Hresult, JobError};
pub use flags::{RedirectPolicy, SecurityFlags};
pub use job::{FileInfo, Job, JobType, Priority};
pub use state::{Event, JobState, Operation};
pub use transport::{BodyStream, Method, Request, Response, SharedTransport, Transport};
