//! The CLI's side: a [`Client`] connection, a [`Subscription`] to state
//! changes, applying an operation through the daemon or directly, and
//! starting a daemon on demand.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bits_core::Hresult;
use uuid::Uuid;

use super::protocol::{path, Reply, Request, DAEMON_LOCK, LOG_FILE, SOCKET_FILE, STORE_LOCK};
use crate::error::{Failure, DAEMON_DOWN, EXIT_FAILURE};
use crate::ops::JobOp;
use crate::store::{self, Store};

/// A connection to a running daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon of the store in `dir`, if one answers.
    pub fn connect(dir: &Path) -> Option<Client> {
        let stream = UnixStream::connect(path(dir, SOCKET_FILE)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
        let writer = stream.try_clone().ok()?;
        let mut c = Client {
            reader: BufReader::new(stream),
            writer,
        };
        c.call(&Request::Ping).ok()?;
        Some(c)
    }

    /// Sends one request and reads its reply.
    pub fn call(&mut self, request: &Request) -> Result<Reply, Failure> {
        let lost = |e: &dyn std::fmt::Display| {
            Failure::runtime(
                DAEMON_DOWN,
                format!("lost the connection to the bits daemon: {e}"),
                "run the command again; `bits daemon --foreground` shows why the daemon stops",
            )
        };
        let mut line = serde_json::to_string(request).map_err(|e| lost(&e))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| lost(&e))?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(|e| lost(&e))?;
        if n == 0 {
            return Err(lost(&"the daemon closed the connection"));
        }
        serde_json::from_str(&answer).map_err(|e| lost(&e))
    }

    /// Applies `op` to job `id` through the daemon.
    pub fn job_op(&mut self, id: Uuid, op: JobOp) -> Result<Hresult, Failure> {
        self.call(&Request::Job { id, op })?.into_result()
    }
}

/// A [`Request::Subscribe`] connection: lets a command that follows jobs
/// sleep until a job's state changes instead of a whole poll interval.
#[derive(Debug)]
pub struct Subscription {
    reader: BufReader<UnixStream>,
    /// The daemon closed the connection (it stopped, or is older than
    /// `subscribe`): [`Subscription::wait`] just sleeps.
    closed: bool,
}

impl Subscription {
    /// Subscribes to the daemon of the store in `dir`, if one answers.
    pub fn open(dir: &Path) -> Option<Subscription> {
        let mut client = Client::connect(dir)?;
        client.call(&Request::Subscribe).ok()?.into_result().ok()?;
        Some(Subscription {
            reader: client.reader,
            closed: false,
        })
    }

    /// Waits until a job's state changed or `timeout` passed.
    pub fn wait(&mut self, timeout: Duration) {
        if self.closed {
            std::thread::sleep(timeout);
            return;
        }
        let _ = self.reader.get_ref().set_read_timeout(Some(timeout));
        let mut line = String::new();
        if let Ok(0) = self.reader.read_line(&mut line) {
            self.closed = true;
            std::thread::sleep(timeout);
        }
    }
}

/// Whether a daemon answers for the store in `dir`.
pub fn daemon_alive(dir: &Path) -> bool {
    Client::connect(dir).is_some()
}

/// Applies `op` to job `id`: through the daemon when one carries the store,
/// else directly in the database (under `store.lock`, so that no daemon
/// starts meanwhile).
pub fn apply(store: &Store, id: Uuid, op: JobOp) -> Result<Hresult, Failure> {
    let lock = store::open_private(&path(store.dir(), STORE_LOCK))?;
    lock.lock()
        .map_err(|e| store::io_failure("lock", &path(store.dir(), STORE_LOCK), &e))?;
    if let Some(mut client) = Client::connect(store.dir()) {
        drop(lock);
        return client.job_op(id, op);
    }
    let result = crate::ops::apply_stored(store, id, &op);
    drop(lock);
    result
}

/// Applies `op` through the daemon, starting it first when none runs.
pub fn apply_via_daemon(store: &Store, id: Uuid, op: JobOp, verbose: u8) -> Result<Hresult, Failure> {
    let mut client = ensure_daemon(store.dir(), verbose)?;
    client.job_op(id, op)
}

/// Makes the daemon (started when none runs) pick up job `id`, which the
/// caller stored QUEUED, and complete it once TRANSFERRED
/// ([`Request::Transfer`]). A daemon older than that gets a
/// [`Request::Schedule`], and one older still a `resume`: the caller
/// completes the job itself when it sees it TRANSFERRED.
pub fn transfer_via_daemon(store: &Store, id: Uuid, verbose: u8) -> Result<(), Failure> {
    let mut client = ensure_daemon(store.dir(), verbose)?;
    if client.call(&Request::Transfer { id })?.into_result().is_ok() {
        return Ok(());
    }
    if client.call(&Request::Schedule)?.into_result().is_err() {
        client.job_op(id, JobOp::Resume)?;
    }
    Ok(())
}

/// Connects to the daemon of the store in `dir`, starting one when none
/// answers, and waits (up to 15 s) until it accepts commands.
pub fn ensure_daemon(dir: &Path, verbose: u8) -> Result<Client, Failure> {
    ensure_daemon_with(dir, verbose, None)
}

/// [`ensure_daemon`], a daemon it starts reading `config` rather than the
/// default config file.
pub fn ensure_daemon_with(dir: &Path, verbose: u8, config: Option<&Path>) -> Result<Client, Failure> {
    if let Some(c) = Client::connect(dir) {
        return Ok(c);
    }
    let (mut child, log, log_start) = spawn_daemon(dir, verbose, config)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(c) = Client::connect(dir) {
            return Ok(c);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Exit 1 of "another daemon holds the store" means one started
            // concurrently: keep waiting for it to answer.
            if status.code() != Some(i32::from(EXIT_FAILURE)) || !lock_held(dir) {
                return Err(Failure::runtime(
                    DAEMON_DOWN,
                    format!(
                        "the bits daemon exited ({status}) before it was ready: {}",
                        log_tail(&log, log_start)
                    ),
                    format!("see {}", log.display()),
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::runtime(
                DAEMON_DOWN,
                "the bits daemon did not become ready within 15 s",
                format!("see {}", log.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `bits daemon --foreground` for the store in `dir`, detached: its
/// own process group, stdin closed, stdout and stderr appended to
/// `daemon.log`. Returns the child, the log's path, and where this start's
/// output begins in it.
///
/// The daemon inherits this command's whole environment, unchanged: the
/// proxy variables (`https_proxy`, `http_proxy`, `all_proxy`, `no_proxy`)
/// it routes `preconfig` jobs by (`docs/spec/http-options.md`, "Proxies"),
/// and `SSL_CERT_FILE` / `SSL_CERT_DIR`. A daemon already running keeps
/// its own.
///
/// `config`: `--config FILE` for the daemon.
fn spawn_daemon(
    dir: &Path,
    verbose: u8,
    config: Option<&Path>,
) -> Result<(std::process::Child, PathBuf, u64), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    store::ensure_dir(dir)?;
    let log = path(dir, LOG_FILE);
    // Keep one previous log; start afresh past 1 MiB.
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20) {
        let _ = std::fs::rename(&log, path(dir, "daemon.log.1"));
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .map_err(|e| store::io_failure("open", &log, &e))?;
    let start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let err = out.try_clone().map_err(|e| store::io_failure("open", &log, &e))?;
    let exe = std::env::current_exe().map_err(|e| {
        Failure::runtime(
            Hresult::E_FAIL,
            format!("cannot find the bits executable to start the daemon: {e}"),
            "start it yourself with `bits daemon`",
        )
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon").arg("--foreground").arg("--store").arg(dir);
    for _ in 0..verbose {
        cmd.arg("-v");
    }
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    // No env_clear: the environment is the daemon's configuration too.
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    let child = cmd.spawn().map_err(|e| {
        Failure::runtime(
            DAEMON_DOWN,
            format!("cannot start the bits daemon: {e}"),
            "start it yourself with `bits daemon --foreground`",
        )
    })?;
    Ok((child, log, start))
}

/// Whether some process holds the daemon lock of the store in `dir`.
pub fn lock_held(dir: &Path) -> bool {
    let Ok(f) = File::open(path(dir, DAEMON_LOCK)) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
}

fn log_tail(log: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.seek(SeekFrom::Start(start));
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn a_daemon_that_knows_neither_transfer_nor_schedule_gets_a_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let listener = UnixListener::bind(path(tmp.path(), SOCKET_FILE)).unwrap();
        // An older daemon: `transfer` and `schedule` are bad requests to it.
        let old_daemon = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(stream).lines() {
                let line = line.unwrap();
                let reply = if line.contains("\"transfer\"") || line.contains("\"schedule\"") {
                    Reply::failed(&Failure::bad_input(
                        Hresult::E_INVALIDARG,
                        "bad request to the daemon: unknown variant",
                        "",
                    ))
                } else {
                    Reply::ok(Hresult::S_OK)
                };
                writeln!(writer, "{}", serde_json::to_string(&reply).unwrap()).unwrap();
                seen.push(line);
                if seen.len() == 4 {
                    break;
                }
            }
            seen
        });
        let id = Uuid::new_v4();
        transfer_via_daemon(&store, id, 0).unwrap();
        let seen = old_daemon.join().unwrap();
        assert!(
            seen[0].contains("\"ping\"")
                && seen[1].contains("\"transfer\"")
                && seen[2].contains("\"schedule\""),
            "{seen:?}"
        );
        let last: Request = serde_json::from_str(&seen[3]).unwrap();
        assert!(
            matches!(last, Request::Job { id: i, op: JobOp::Resume } if i == id),
            "{last:?}"
        );
    }
}
