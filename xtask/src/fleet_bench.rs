//! `cargo xtask bench --fleet N`: one spec of small files to one agent
//! alone, then to N agents at once (each with a small store and root of
//! its own, all on this machine), against the bench's nginx and a local
//! `nats-server -js`. Measures the time from `bits fleet submit` until
//! every agent's state in `BITS_STATE` is ACKNOWLEDGED, each agent's peak
//! RSS (`VmHWM`), and the state messages per job (the growth of the
//! `KV_BITS_STATE` stream's last sequence, from nats-server's `/jsz`).
//! Not a timed test: the numbers are only comparable within one run.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

/// What one round measured.
struct Round {
    agents: usize,
    elapsed: Duration,
    rss_max_kib: u64,
    rss_mean_kib: u64,
    messages: u64,
}

/// Runs the benchmark: `files` are paths under `base`.
pub fn run(bits: &Path, work: &Path, base: &str, ca: &Path, files: &[String], n: usize) -> Result<()> {
    ensure!(n >= 1, "--fleet needs at least one agent");
    let nats = Nats::start(work)?;
    let spec = work.join("fleet-spec.json");
    let entries: Vec<Value> = files
        .iter()
        .map(|f| json!({"remote_name": format!("{base}/{f}"), "local_name": f}))
        .collect();
    fs::write(&spec, json!({ "files": entries }).to_string())?;
    println!(
        "fleet: {} files per spec, nats-server on {}, agents trust {}",
        files.len(),
        nats.url(),
        ca.display()
    );
    let one = round(bits, work, &nats, ca, &spec, 1)?;
    let many = round(bits, work, &nats, ca, &spec, n)?;
    println!(
        "\n| agents | until all ACKNOWLEDGED | peak RSS per agent (max / mean) | state messages per job |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    for r in [&one, &many] {
        println!(
            "| {} | {:.2} s | {:.1} / {:.1} MiB | {:.1} |",
            r.agents,
            r.elapsed.as_secs_f64(),
            r.rss_max_kib as f64 / 1024.0,
            r.rss_mean_kib as f64 / 1024.0,
            r.messages as f64 / r.agents as f64
        );
    }
    println!(
        "\n{n} agents took {:.1}x the time of one (aim: at most 3x); the largest agent peaked at {:.1} MiB (aim: 32 MiB)",
        many.elapsed.as_secs_f64() / one.elapsed.as_secs_f64(),
        many.rss_max_kib as f64 / 1024.0
    );
    Ok(())
}

fn round(bits: &Path, work: &Path, nats: &Nats, ca: &Path, spec: &Path, k: usize) -> Result<Round> {
    let group = format!("bench{k}");
    let dir = work.join(format!("fleet-{k}"));
    let mut agents = Agents(Vec::new());
    for i in 0..k {
        let home = dir.join(format!("a{i}"));
        fs::create_dir_all(home.join("root"))?;
        let log = fs::File::create(home.join("agent.log"))?;
        let mut child = Command::new(bits)
            .arg("--store")
            .arg(home.join("store"))
            .args(["agent", "--nats", &nats.url(), "--group", &group, "--name"])
            .arg(format!("{group}-a{i}"))
            .arg("--root")
            .arg(home.join("root"))
            .env("SSL_CERT_FILE", ca)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start bits agent")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        ensure!(
            line.trim() == "ready",
            "agent {i} did not start: see {}",
            home.join("agent.log").display()
        );
        agents.0.push(child);
    }
    // Every agent connected (in BITS_AGENTS) before the clock starts.
    wait(Duration::from_secs(120), "the agents to connect", || {
        let v = fleet(bits, nats, &["agents"])?;
        let n = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| {
                        r["name"]
                            .as_str()
                            .is_some_and(|s| s.starts_with(&format!("{group}-")))
                    })
                    .count()
            })
            .unwrap_or(0);
        Ok(n == k)
    })?;
    let before = nats.state_seq()?;
    let start = Instant::now();
    let out = Command::new(bits)
        .args(["fleet", "submit", "--nats", &nats.url(), "--group", &group])
        .arg(spec)
        .output()?;
    ensure!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait(Duration::from_secs(600), "every agent ACKNOWLEDGED", || {
        let v = fleet(bits, nats, &["status", &id])?;
        Ok(v["summary"]["ACKNOWLEDGED"].as_u64() == Some(k as u64))
    })?;
    let elapsed = start.elapsed();
    // Late progress writes, if any, land within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let messages = nats.state_seq()? - before;
    let rss: Vec<u64> = agents.0.iter().map(|c| peak_rss_kib(c.id())).collect();
    println!(
        "{k} agent(s): {:.2} s, {messages} state messages",
        elapsed.as_secs_f64()
    );
    Ok(Round {
        agents: k,
        elapsed,
        rss_max_kib: rss.iter().copied().max().unwrap_or(0),
        rss_mean_kib: rss.iter().sum::<u64>() / rss.len().max(1) as u64,
        messages,
    })
}

fn fleet(bits: &Path, nats: &Nats, args: &[&str]) -> Result<Value> {
    let out = Command::new(bits)
        .args(["--json", "fleet", args[0], "--nats", &nats.url()])
        .args(&args[1..])
        .output()?;
    if !out.status.success() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn wait(timeout: Duration, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The agents of a round, stopped (SIGTERM by PID) when dropped.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// `nats-server -js` with its monitoring port, stopped when dropped.
struct Nats {
    child: Child,
    port: u16,
    monitor: u16,
}

impl Nats {
    fn start(work: &Path) -> Result<Nats> {
        let port = free_port()?;
        let monitor = free_port()?;
        let dir: PathBuf = work.join("nats");
        fs::create_dir_all(&dir)?;
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &monitor.to_string(),
                "-sd",
            ])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("nats.log"))?)
            .spawn()
            .context("start nats-server (apt-get install nats-server)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nats { child, port, monitor })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The last sequence of the `KV_BITS_STATE` stream: every state written.
    fn state_seq(&self) -> Result<u64> {
        let out = Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{}/jsz?streams=true", self.monitor),
            ])
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout).context("nats-server's /jsz")?;
        let seq = v["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == "KV_BITS_STATE")
            .and_then(|s| s["state"]["last_seq"].as_u64())
            .unwrap_or(0);
        Ok(seq)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
