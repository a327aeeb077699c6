//! What the CLI and the daemon say to each other: one JSON line per
//! [`Request`], answered by one [`Reply`] line, over `daemon.sock` in the
//! store folder; and the names of the files in that folder that the two
//! coordinate through.

use std::path::{Path, PathBuf};

use bits_core::Hresult;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Failure, DAEMON_BUSY};
use crate::ops::JobOp;

/// The socket's file name in the store folder.
pub const SOCKET_FILE: &str = "daemon.sock";
/// The daemon's lifetime lock file.
pub const DAEMON_LOCK: &str = "daemon.lock";
/// The short lock that orders direct edits with a daemon's start.
pub const STORE_LOCK: &str = "store.lock";
/// The log of a daemon started on demand.
pub const LOG_FILE: &str = "daemon.log";

/// A request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Is the daemon up? Answered with its pid.
    Ping,
    /// Stop: save every job as SIGTERM does, then exit (`bits daemon --stop`).
    Shutdown,
    /// Wake me when a job's state changes: answered with one reply, then
    /// the connection carries a [`CHANGED_LINE`] after every save that
    /// changed a job's state (a hint to read the database again, nothing
    /// more), until either side closes it.
    Subscribe,
    /// Run the scheduler now: `transfer` stores its job already QUEUED
    /// (a new job no daemon carries yet) and asks the daemon to pick it up,
    /// which spares the daemon reading and rewriting the whole job for a
    /// `resume`.
    Schedule,
    /// `transfer`'s request: run the scheduler now (as [`Request::Schedule`])
    /// and complete job `id` in the daemon as soon as it is TRANSFERRED,
    /// while the daemon still holds it (no second read of a job of many
    /// files, no round trip). Its TRANSFERRED state is saved but not
    /// announced to subscribers (the ACKNOWLEDGED one is). A `complete` of
    /// the job sent afterwards is answered with that completion's result.
    /// Any other operation on the job but `resume`, or the job ending
    /// otherwise, withdraws the request.
    Transfer {
        /// The job, stored QUEUED by the caller.
        id: Uuid,
    },
    /// Read the config file again (`bits daemon --reload`, as `SIGHUP`):
    /// answered with success, or with the refusal (bad input, its line
    /// and column), the schedule in force then staying.
    Reload,
    /// Apply an operation to a job.
    Job {
        /// The job.
        id: Uuid,
        /// What to do.
        op: JobOp,
    },
}

/// What a [`Request::Subscribe`] connection carries when a job's state
/// changed.
pub const CHANGED_LINE: &str = "{\"changed\":true}\n";

/// A reply line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The operation's HRESULT (a success code, or the failure's).
    pub code: u32,
    /// For a failure: what happened.
    #[serde(default)]
    pub message: String,
    /// For a failure: what to do.
    #[serde(default)]
    pub hint: String,
    /// For a failure: the exit status.
    #[serde(default)]
    pub exit: u8,
    /// The daemon's pid (ping).
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Reply {
    /// A success with `code`.
    pub fn ok(code: Hresult) -> Reply {
        Reply {
            code: code.0,
            message: String::new(),
            hint: String::new(),
            exit: 0,
            pid: None,
        }
    }

    /// A failure.
    pub fn failed(f: &Failure) -> Reply {
        Reply {
            code: f.code.0,
            message: f.message.clone(),
            hint: f.hint.clone(),
            exit: f.exit,
            pid: None,
        }
    }

    /// The success code, or the failure.
    pub fn into_result(self) -> Result<Hresult, Failure> {
        let code = Hresult(self.code);
        if code.is_success() {
            Ok(code)
        } else {
            Err(Failure::new(code, self.message, self.hint, self.exit))
        }
    }
}

/// A path of the store folder.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The "another daemon" failure.
pub fn busy(dir: &Path, pid: Option<u32>) -> Failure {
    let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    Failure::runtime(
        DAEMON_BUSY,
        format!("a bits daemon{who} already carries the store {}", dir.display()),
        "only one daemon per store runs; stop it first or use another --store",
    )
}
