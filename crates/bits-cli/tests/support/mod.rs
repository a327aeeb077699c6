//! Shared helpers of the end-to-end tests: a temporary store per test, the
//! real `bits` binary, and a guard that stops every daemon the test started.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `bits` binary under test.
pub const BITS: &str = env!("CARGO_BIN_EXE_bits");

/// One test's world: a temp folder with a store and a data folder. Dropping
/// it stops the store's daemon (SIGTERM, then SIGKILL).
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub data: PathBuf,
    pub envs: Vec<(String, String)>,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts exit 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    /// Asserts a failure: exit `code`, exactly one stderr line naming `hresult`.
    pub fn fails(self, code: i32, hresult: &str) -> Run {
        assert_eq!(self.code, code, "exit status: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one stderr line expected: {self:?}");
        assert!(
            lines[0].contains(hresult),
            "stderr should name {hresult}: {self:?}"
        );
        self
    }
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new().prefix("bits-e2e").tempdir().unwrap();
        let store = tmp.path().join("store");
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        Env {
            tmp,
            store,
            data,
            envs: Vec::new(),
        }
    }

    /// A test world whose commands (and the daemons they start) trust the
    /// test PKI's root through `SSL_CERT_FILE`, instead of the system's.
    pub fn trusting_test_root() -> Env {
        let env = Env::new();
        let pem = env.tmp.path().join("root.pem");
        std::fs::write(&pem, bits_testkit::pki::TestPki::shared().root_pem()).unwrap();
        let pem = pem.to_str().unwrap().to_string();
        env.env("SSL_CERT_FILE", pem)
    }

    /// `bits add-file JOB URL <data>/LOCAL`, which must succeed.
    pub fn add_file(&self, job: &str, url: &str, local: &str) {
        let local = self.path(local);
        self.run(&["add-file", job, url, local.to_str().unwrap()]).ok();
    }

    /// Sets an environment variable for every command (and so for a daemon
    /// they start).
    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Env {
        self.envs.push((k.to_string(), v.as_ref().to_string()));
        self
    }

    /// A `bits` command on this store, with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BITS);
        c.arg("--store").arg(&self.store).args(args);
        for k in [
            "BITS_STORE",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "BITS_LOG",
            "RUST_LOG",
            // The daemon routes preconfig jobs by these: a test sets them
            // itself, or none.
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
            "BITS_TEST_CLOCK",
        ] {
            c.env_remove(k);
        }
        // The user's own config file (a bandwidth schedule) never applies
        // to a test: a test writes one here.
        c.env("XDG_CONFIG_HOME", self.config_home());
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs `bits ARGS` and collects what it did.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run bits");
        to_run(out)
    }

    /// `XDG_CONFIG_HOME` of this test's commands and daemons.
    pub fn config_home(&self) -> PathBuf {
        self.tmp.path().join("config")
    }

    /// Writes the config file (`$XDG_CONFIG_HOME/bits/config.toml`) the
    /// daemon reads; returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let dir = self.config_home().join("bits");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A path in the data folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    /// `bits create NAME` → the id.
    pub fn create(&self, name: &str) -> String {
        self.run(&["create", name]).ok().stdout.trim().to_string()
    }

    /// `bits info --json JOB`.
    pub fn info(&self, job: &str) -> Value {
        self.run(&["info", "--json", job]).ok().json()
    }

    /// Polls `info` until `cond` holds, or panics after `timeout`.
    pub fn wait_for(&self, job: &str, timeout: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.info(job);
            if cond(&info) {
                return info;
            }
            assert!(Instant::now() < deadline, "timed out; last info: {info:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the store's daemon, when one holds the lock.
    pub fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.store.join("daemon.lock")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Sends `signal` to the daemon and waits until it is gone.
    pub fn kill_daemon(&self, signal: &str) {
        if let Some(pid) = self.daemon_pid() {
            kill(pid, signal);
            wait_gone(pid, Duration::from_secs(10));
        }
    }

    /// Files in `dir` whose name contains `.bits-` (temporary files).
    pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".bits-"))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            kill(pid, "TERM");
            if !wait_gone(pid, Duration::from_secs(5)) {
                kill(pid, "KILL");
                wait_gone(pid, Duration::from_secs(5));
            }
        }
    }
}

pub fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Spawns a foreground daemon (`daemon --foreground`, `agent`, or a shell
/// that execs one) with its stdout piped and waits for its first line,
/// which must be `ready`; `context` says what to show when it is not
/// (its log). The caller sets stderr and ends the child.
pub fn spawn_ready(cmd: &mut Command, context: impl FnOnce() -> String) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn the daemon");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line != "ready\n" {
        let _ = child.kill();
        let _ = child.wait();
        panic!("expected `ready`, got {line:?}: {}", context());
    }
    child
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

pub fn kill(pid: i32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Deterministic test content.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}
