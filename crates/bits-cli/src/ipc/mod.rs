//! How the `bits` command and the daemon talk.
//!
//! # Architecture
//! - **The database is the truth for reading.** `info`, `list`, `wait`,
//!   `monitor` read the store directly (SQLite in WAL mode lets them read
//!   while the daemon writes); the daemon saves a running job's progress at
//!   least every second and every state change at once.
//! - **One writer per job at a time.** While a daemon carries the store,
//!   every change to an existing job (`add-file`, `set-*`, `resume`,
//!   `suspend`, `complete`, `cancel`, `replace-remote-prefix`) is sent to it
//!   over a Unix socket, `daemon.sock` in the store folder (`0600`), as one
//!   line of JSON ([`Request`]) answered by one line ([`Reply`]). The daemon
//!   stops the job's transfer first when it is running (so no engine task
//!   writes a stale copy over the change), applies the same
//!   [`crate::ops::apply`] the CLI would, saves, and reschedules. With no
//!   daemon, the CLI applies the change to the database itself, in one
//!   transaction.
//! - **No race with a starting daemon.** "Is a daemon up?" and the direct
//!   edit happen under a short `flock` of `store.lock`; a daemon takes the
//!   same lock while it binds its socket and loads the jobs. The daemon's
//!   lifetime lock is `daemon.lock` (`flock`, non-blocking: a second daemon
//!   exits 1).
//! - **Started on demand.** `resume`, `monitor`, `wait` and `transfer` start
//!   `bits daemon --foreground` in its own process group, stdin closed,
//!   output appended to `daemon.log`, and wait until its socket answers a
//!   ping. `wait`/`monitor`/`transfer` start it again if it dies while they
//!   wait, so a killed daemon resumes its jobs from the bytes on disk.
//! - `create` only inserts a new SUSPENDED job, which no daemon is carrying,
//!   so it writes the database directly even while a daemon runs; so does
//!   `prune`, which only deletes final jobs.

mod client;
mod protocol;
mod server;

pub use client::{
    apply, apply_via_daemon, daemon_alive, ensure_daemon, ensure_daemon_with, transfer_via_daemon, Client,
    Subscription,
};
pub use protocol::{busy, path, Reply, Request, DAEMON_LOCK, LOG_FILE, SOCKET_FILE, STORE_LOCK};
pub use server::{accept_loop, Changes, Pending};
