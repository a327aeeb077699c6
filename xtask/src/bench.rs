//! `cargo xtask bench`: `bits transfer` against `curl` and `aria2c` over real
//! HTTPS on 127.0.0.1, in one run, interleaved.
//!
//! What it does, in order:
//! 1. installs what is missing (`nginx-light`, `aria2`, `time`, `curl`,
//!    `openssl`) with `apt-get` when it runs as root, else says what to install;
//! 2. builds `bits` in release mode;
//! 3. makes a throwaway PKI with the `openssl` CLI (a root and a leaf for
//!    `IP:127.0.0.1`; xtask depends on none of our crates);
//! 4. writes the data once (cached under `target/bench-data/`): one file of
//!    random bytes (`--size`, 1 GiB by default) and `--count` files of 16 KiB
//!    (2,000 by default), with their SHA-256 sums;
//! 5. starts nginx on 127.0.0.1 (one worker, `sendfile`, keep-alive, HTTP/1.1,
//!    a prefix in the work directory, WebDAV `PUT` under `/dav/` for curl's
//!    uploads) and, for the `up` workload, `bits serve` over https with the
//!    same certificate, under `/usr/bin/time -v` (its peak RSS is read and
//!    reset through `/proc` around each bits upload, as the daemon's);
//! 6. starts one `bits daemon --foreground` under `/usr/bin/time -v` for the
//!    whole bits series, with a store in the work directory and
//!    `SSL_CERT_FILE` pointing at the bench root;
//! 7. for each RTT of `--rtt` (default 0 only; above 0 the clients reach
//!    nginx and `bits serve` through a [`LatencyProxy`] that delays each way
//!    by half the RTT, since this kernel has no netem), for each workload,
//!    runs every tool once to warm up, then `--runs` times, interleaved
//!    (curl, bits, aria2c, bits-native, curl, ...; `curl-parallel` on
//!    `many` only, `curl-h2` on `many` and `one`, `curl+sync` (curl, then
//!    `sync -f` of its file, timed) on `one` only). Each run is
//!    wrapped in `/usr/bin/time -v` (peak RSS, CPU). For bits the daemon does
//!    the transfer, so its CPU is read from `/proc/PID/stat` before and after
//!    each run and its peak RSS from `VmHWM`, reset before each run through
//!    `/proc/PID/clear_refs`; a bits run costs the CLI's CPU plus the
//!    daemon's. Each run also records the whole machine's busy CPU time
//!    (`/proc/stat`'s `cpu` line: user + nice + system + irq + softirq +
//!    steal), which counts work not charged to the tool's process: nginx's
//!    encryption, the kernel's flusher threads writing back for `syncfs`,
//!    softirqs (and anything else the machine runs meanwhile). Every
//!    download, and every uploaded file on the server's disk, is checked
//!    with `sha256sum` (outside the timing), so a broken run cannot look
//!    fast; aria2c, which cannot upload, sits out `up`;
//! 8. with the `one` workload, checks kill -9 mid-transfer: starts a job on
//!    a fresh daemon, SIGKILLs it once a quarter of the file is on disk,
//!    starts it again and counts the bytes fetched again (the temporary
//!    file's size once the daemon is dead minus the `Range` start nginx
//!    logged for the resumed request), then checks the SHA-256;
//! 9. prints a Markdown table (bits rows: CPU = CLI + daemon, RSS = daemon's
//!    and CLI's) and the goals as ratios within this run; the report is also
//!    written to `<work>/report.md` (`--keep` keeps it).
//!
//! Output directories: every run (and the kill -9 check) writes into a
//! fresh directory, `<work>/out/<tag>` (the tag is the run's `?r=N` in
//! nginx's log; `out/kill9` for the check), and nothing is deleted between
//! runs but the `one` file, right after its check (a single inode, so the
//! disk holds at most one copy of it). Why: on ext4 (this machine's has no
//! journal), deleting thousands of files makes the inode allocations of the
//! next ~30-300 s in that block group scan past every recently deleted
//! inode (`recently_deleted()` in `find_inode_bit`), a penalty on whichever
//! tool runs after a delete (`docs/benchmarks.md` has the profile). The `many`
//! downloads go with the work directory once the bench is over. Since they
//! stay, `sync -f` writes back whatever is dirty before each timed run
//! (outside the timing), so an earlier run's files are never written back
//! during (and charged to) a later one, e.g. by bits' `syncfs`.
//!
//! The numbers are only comparable within one run: the machine may be busy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::latency::LatencyProxy;
use crate::util;

const USAGE: &str = "\
usage: cargo xtask bench [--size SIZE] [--count N] [--runs N] [--backends LIST]
                         [--tools LIST] [--workloads LIST] [--rtt LIST] [--keep]
                         [--priority P] [--readme]
  --size SIZE       the large file (K/M/G suffixes are binary; default 1G)
  --count N         the number of 16 KiB files (default 2000)
  --runs N          timed runs per tool and workload, after one warm-up (default 5)
  --backends LIST   bits backends, comma-separated (default openssl,native)
  --tools LIST      peers, comma-separated: curl (one connection, HTTP/1.1),
                    curl+sync (curl, then `sync -f` of its file, timed: the one
                    file as durable as bits makes it),
                    curl-parallel (--parallel --parallel-max 16, HTTP/1.1),
                    curl-h2 (the same over HTTP/2), aria2c (-j16 -x4)
                    (default all five; curl+sync runs `one` only, curl-parallel
                    `many` only, curl-h2 both)
  --rtt LIST        round-trip times in ms, comma-separated (default 0): above
                    0 the clients reach nginx and bits serve through a latency
                    proxy (xtask/src/latency.rs) that delays each way by half
  --workloads LIST  one,many,up (default all three; up: the big file uploaded,
                    bits to `bits serve` against curl's PUT to nginx)
  --keep            keep the work directory (downloads, logs, store)
  --priority P      `bits transfer --priority P` (default: none, BITS's NORMAL,
                    a background job whose connections yield)
  --readme          also write the report, with the machine and the date,
                    into README.md between its bench markers
  --fleet N         instead: a spec of 20 small files to one `bits agent`, then to N
                    at once, over a local nats-server (time until all ACKNOWLEDGED,
                    peak RSS per agent, state messages per job)
       cargo xtask bench --background [--runs N] [--keep]
                    background jobs yielding to curl behind a 50 Mbit/s bottleneck
                    in a network namespace (root; xtask/src/background.rs)";

/// The README's generated benchmark section lies between these lines.
const README_BEGIN: &str = "<!-- generated by `cargo xtask bench --readme`: do not edit -->";
const README_END: &str = "<!-- end of the generated benchmark -->";

/// The size of each small file.
const SMALL: u64 = 16 * 1024;

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(i) = args.iter().position(|a| a == "--background") {
        let mut rest = args.to_vec();
        rest.remove(i);
        return crate::background::run(&rest);
    }
    let opts = Options::parse(args)?;
    let target = util::target_dir();

    ensure_tools()?;
    util::run_checked(&mut util::cargo_with(&[
        "build",
        "--release",
        "-q",
        "-p",
        "bits-cli",
    ]))?;
    let bits = target.join("release/bits");

    let work = target.join(format!("bench-{}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let pki = make_pki(&work)?;
    if let Some(n) = opts.fleet {
        let data = make_data(&target.join("bench-data"), 1, 20)?;
        println!("{}", machine_note());
        let nginx = start_nginx(&work, &data.dir, &pki)?;
        let base = format!("https://127.0.0.1:{}", nginx.port);
        let result = crate::fleet_bench::run(&bits, &work, &base, &pki.root, &data.small, n);
        drop(nginx);
        if !opts.keep {
            let _ = fs::remove_dir_all(&work);
        }
        return result;
    }
    let data = make_data(&target.join("bench-data"), opts.size, opts.count)?;

    println!("{}", machine_note());
    let nginx = start_nginx(&work, &data.dir, &pki)?;
    let base = format!("https://127.0.0.1:{}", nginx.port);
    println!("nginx on {base}, serving {}", data.dir.display());

    let store = work.join("store");
    let daemon = Daemon::start(&bits, &store, &pki.root, &work)?;
    let serve = if opts.workloads.contains(&Workload::Up) {
        let s = Serve::start(&bits, &pki, &work)?;
        println!("bits serve on https://127.0.0.1:{}", s.port);
        Some(s)
    } else {
        None
    };
    let mut bench = Bench {
        work: work.clone(),
        bits: bits.clone(),
        store: store.clone(),
        ca: pki.root.clone(),
        daemon,
        serve,
        nginx_base: base.clone(),
        base,
        serve_base: String::new(),
        rtt: 0,
        nginx_dav: work.join("nginx/dav/dav"),
        data,
        results: BTreeMap::new(),
        seq: 0,
        daemon_rss: Vec::new(),
        priority: opts.priority.clone(),
    };

    let mut tools: Vec<Tool> = Vec::new();
    for (i, backend) in opts.backends.iter().enumerate() {
        // Interleave: curl, bits, aria2c, bits-native...
        if let Some(peer) = opts.peers.get(i) {
            tools.push(peer.clone());
        }
        tools.push(Tool::Bits(backend.clone()));
    }
    for peer in opts.peers.iter().skip(opts.backends.len()) {
        tools.push(peer.clone());
    }

    let nginx_addr: std::net::SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let result = (|| -> Result<()> {
        for &rtt in &opts.rtts {
            // The proxies live for this RTT's runs; at 0 the clients connect directly.
            let delay = Duration::from_millis(rtt);
            let nginx_proxy = (rtt > 0)
                .then(|| LatencyProxy::start(nginx_addr, delay))
                .transpose()?;
            let serve_port = bench.serve.as_ref().map(|s| s.port);
            let serve_proxy = match serve_port {
                Some(port) if rtt > 0 => Some(LatencyProxy::start(([127, 0, 0, 1], port).into(), delay)?),
                _ => None,
            };
            bench.rtt = rtt;
            bench.base = match &nginx_proxy {
                Some(p) => format!("https://{}", p.addr()),
                None => bench.nginx_base.clone(),
            };
            bench.serve_base = match (&serve_proxy, serve_port) {
                (Some(p), _) => format!("https://{}", p.addr()),
                (None, Some(port)) => format!("https://127.0.0.1:{port}"),
                (None, None) => String::new(),
            };
            if rtt > 0 {
                println!("RTT {rtt} ms: nginx through {}", bench.base);
            }
            bench.series(&opts, &tools)?;
            for (name, proxy) in [("nginx", &nginx_proxy), ("bits serve", &serve_proxy)] {
                if let Some(p) = proxy {
                    println!(
                        "RTT {rtt} ms: {} connections to {name} went through the proxy",
                        p.connections()
                    );
                }
            }
        }
        Ok(())
    })();
    bench.base = bench.nginx_base.clone();

    let daemon_total = bench.daemon.stop(&bits, &store, &pki.root);
    let serve_total = bench.serve.take().map(Serve::stop);
    let kill9 = match (&result, opts.workloads.contains(&Workload::One)) {
        (Ok(()), true) => Some(bench.kill9().context("kill -9 check")),
        _ => None,
    };
    drop(nginx);
    result?;
    bench.server_spans(&work.join("nginx/access.log"))?;
    let kill9 = match kill9 {
        Some(Ok(k)) => Some(k.finish(&work.join("nginx/access.log"), bench.data.big_size)?),
        Some(Err(e)) => Some(format!("failed: {e:#}")),
        None => None,
    };

    let mut report = bench.report(&opts, daemon_total.ok(), serve_total.and_then(Result::ok));
    if let Some(k) = kill9 {
        report = report.replace(KILL9_TODO, &format!("- kill -9 mid-transfer: {k}\n"));
    }
    println!("\n{report}");
    fs::write(work.join("report.md"), &report)?;
    if opts.readme {
        write_readme(&report)?;
    }
    if opts.keep {
        println!("work directory kept: {}", work.display());
    } else {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

/// Replaces README.md's generated benchmark section with `report`, headed
/// by the machine (CPU model and count, kernel) and the date.
fn write_readme(report: &str) -> Result<()> {
    let path = util::project_root().join("README.md");
    let readme = fs::read_to_string(&path).context("reading README.md")?;
    let (Some(begin), Some(end)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        bail!("README.md has no bench markers ({README_BEGIN} … {README_END})");
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let section = format!(
        "{README_BEGIN}\nMeasured {} on {cores} × {cpu}, Linux {}.\n\n{}\n",
        date.trim(),
        kernel.trim(),
        report.trim_end()
    );
    let updated = format!("{}{section}{}", &readme[..begin], &readme[end..]);
    fs::write(&path, updated).context("writing README.md")?;
    println!("README.md: benchmark section updated");
    Ok(())
}

#[derive(Clone, Debug)]
struct Options {
    size: u64,
    count: usize,
    runs: usize,
    backends: Vec<String>,
    peers: Vec<Tool>,
    workloads: Vec<Workload>,
    rtts: Vec<u64>,
    keep: bool,
    readme: bool,
    /// `bits transfer --priority`: none is BITS's NORMAL (a background job,
    /// which yields: LEDBAT on its connections).
    priority: Option<String>,
    /// `--fleet N`: the fleet benchmark instead ([`crate::fleet_bench`]).
    fleet: Option<usize>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            size: 1 << 30,
            count: 2000,
            runs: 5,
            backends: vec!["openssl".into(), "native".into()],
            peers: vec![
                Tool::Curl,
                Tool::CurlSync,
                Tool::Aria2,
                Tool::CurlParallel { h2: false },
                Tool::CurlParallel { h2: true },
            ],
            workloads: vec![Workload::One, Workload::Many, Workload::Up],
            rtts: vec![0],
            keep: false,
            priority: None,
            readme: false,
            fleet: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value = || -> Result<String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))
            };
            match name {
                "--size" => o.size = parse_size(&value()?)?,
                "--count" => o.count = value()?.parse().context("--count")?,
                "--runs" => o.runs = value()?.parse().context("--runs")?,
                "--backends" => o.backends = list(&value()?),
                "--tools" => {
                    o.peers = list(&value()?)
                        .iter()
                        .map(|t| match t.as_str() {
                            "curl" => Ok(Tool::Curl),
                            "curl+sync" | "curl-sync" => Ok(Tool::CurlSync),
                            "curl-parallel" => Ok(Tool::CurlParallel { h2: false }),
                            "curl-h2" => Ok(Tool::CurlParallel { h2: true }),
                            "aria2c" | "aria2" => Ok(Tool::Aria2),
                            other => bail!(
                                "unknown tool {other:?} (curl, curl+sync, curl-parallel, curl-h2, aria2c)"
                            ),
                        })
                        .collect::<Result<_>>()?
                }
                "--workloads" => {
                    o.workloads = list(&value()?)
                        .iter()
                        .map(|t| match t.as_str() {
                            "one" => Ok(Workload::One),
                            "many" => Ok(Workload::Many),
                            "up" => Ok(Workload::Up),
                            other => bail!("unknown workload {other:?} (one, many, up)"),
                        })
                        .collect::<Result<_>>()?
                }
                "--rtt" => {
                    o.rtts = list(&value()?)
                        .iter()
                        .map(|t| t.parse().with_context(|| format!("--rtt: bad {t:?}")))
                        .collect::<Result<_>>()?
                }
                "--keep" => o.keep = true,
                "--priority" => o.priority = Some(value()?),
                "--readme" => o.readme = true,
                "--fleet" => o.fleet = Some(value()?.parse().context("--fleet")?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other:?}\n{USAGE}"),
            }
        }
        ensure!(o.runs >= 1, "--runs must be at least 1");
        ensure!(!o.rtts.is_empty(), "--rtt needs at least one value");
        ensure!(o.size >= 1, "--size must be at least 1 byte");
        Ok(o)
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `1G`, `256M`, `512K`, `1GiB`, `1000`: binary multiples.
fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size {text:?}"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size {text:?} too large"))
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Curl,
    /// curl, then `sync -f` on what it wrote, inside the timing: the one
    /// file made as durable as bits makes it (bits syncs before `complete`;
    /// curl leaves the writeback to the kernel, after the run).
    CurlSync,
    /// `curl --parallel --parallel-max 16`, over HTTP/2 when `h2`.
    CurlParallel {
        h2: bool,
    },
    Aria2,
    Bits(String),
}

impl Tool {
    fn name(&self) -> String {
        match self {
            Tool::Curl => "curl".into(),
            Tool::CurlSync => "curl+sync".into(),
            Tool::CurlParallel { h2: false } => "curl-parallel".into(),
            Tool::CurlParallel { h2: true } => "curl-h2".into(),
            Tool::Aria2 => "aria2c".into(),
            Tool::Bits(b) => format!("bits ({b})"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    One,
    Many,
    /// The big file uploaded: bits to `bits serve`, curl (`-T`, a WebDAV
    /// `PUT`) to nginx.
    Up,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::One => "one",
            Workload::Many => "many",
            Workload::Up => "up",
        }
    }

    /// Whether `tool` takes part (aria2c cannot upload; `--parallel` differs
    /// from curl on many files only, but on the one file curl-h2 is the
    /// HTTP/2 peer bits' one stream is measured against).
    fn runs(self, tool: &Tool) -> bool {
        match tool {
            Tool::Aria2 => self != Workload::Up,
            Tool::CurlParallel { h2: false } => self == Workload::Many,
            Tool::CurlParallel { h2: true } => self != Workload::Up,
            Tool::CurlSync => self == Workload::One,
            Tool::Curl | Tool::Bits(_) => true,
        }
    }
}

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: f64,
    /// CPU seconds: the tool's, plus the daemon's during the run for bits.
    cpu: f64,
    /// Busy CPU seconds of the whole machine during the run (`/proc/stat`):
    /// nginx, kernel threads and softirqs included.
    machine_cpu: f64,
    /// Peak RSS of the process that moved the bytes (the daemon for bits).
    rss_kib: u64,
    /// For bits: the CLI's own peak RSS.
    cli_rss_kib: Option<u64>,
    /// For a bits upload: the peak RSS of `bits serve`.
    serve_rss_kib: Option<u64>,
    /// The run's tag (`?r=N` on its URLs), to find its requests in nginx's log.
    tag: u64,
    /// Seconds from the start of the run's first request to the end of its
    /// last, as nginx saw them (filled in from the access log at the end).
    server: Option<f64>,
}

/// A tool's medians on one workload.
#[derive(Clone, Copy, Debug)]
struct Medians {
    wall: f64,
    cpu: f64,
    machine_cpu: f64,
}

/// One number of a [`Sample`].
type Metric = fn(&Sample) -> f64;

/// A ratio of bits to curl taken round by round.
struct Paired {
    /// The median of the per-round ratios (the goal's number).
    median: f64,
    min: f64,
    max: f64,
    /// The ratio of the two medians, for reference.
    of_medians: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------- tools

/// Installs the packages whose commands are missing (as root, with apt-get).
fn ensure_tools() -> Result<()> {
    let wanted = [
        ("/usr/sbin/nginx", "nginx-light"),
        ("/usr/bin/aria2c", "aria2"),
        ("/usr/bin/time", "time"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/openssl", "openssl"),
        ("/usr/bin/sha256sum", "coreutils"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing tools; install them with: sudo apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    util::run_checked(Command::new("apt-get").arg("update").arg("-q"))?;
    util::run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q"])
            .args(&missing),
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn machine_note() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let curl = first_line(Command::new("curl").arg("-V"));
    let aria = first_line(Command::new("aria2c").arg("-v"));
    let nginx = Command::new("/usr/sbin/nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    format!(
        "machine: {cores} cores, load {}\n{curl}\n{aria}\n{nginx}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Runs `cmd` with its output captured; fails with its stderr unless it succeeds.
fn quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------- PKI

struct Pki {
    root: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

/// A root CA and a leaf for `IP:127.0.0.1`, with the openssl CLI.
fn make_pki(work: &Path) -> Result<Pki> {
    let dir = work.join("pki");
    fs::create_dir_all(&dir)?;
    let p = |n: &str| dir.join(n);
    quiet(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=bits bench root",
            ])
            .arg("-keyout")
            .arg(p("root.key"))
            .arg("-out")
            .arg(p("root.pem"))
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]),
    )?;
    quiet(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(p("leaf.key"))
            .arg("-out")
            .arg(p("leaf.csr")),
    )?;
    fs::write(
        p("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )?;
    quiet(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
            .arg("-in")
            .arg(p("leaf.csr"))
            .arg("-CA")
            .arg(p("root.pem"))
            .arg("-CAkey")
            .arg(p("root.key"))
            .arg("-extfile")
            .arg(p("leaf.ext"))
            .arg("-out")
            .arg(p("leaf.pem")),
    )?;
    let chain = format!(
        "{}{}",
        fs::read_to_string(p("leaf.pem"))?,
        fs::read_to_string(p("root.pem"))?
    );
    fs::write(p("chain.pem"), chain)?;
    Ok(Pki {
        root: p("root.pem"),
        chain: p("chain.pem"),
        key: p("leaf.key"),
    })
}

// ---------------------------------------------------------------- data

struct Data {
    /// nginx's document root.
    dir: PathBuf,
    /// `one/<size>.bin`, relative to `dir`.
    big: String,
    big_size: u64,
    big_sum: String,
    /// `many-<n>/f00000.bin`..., relative to `dir`.
    small: Vec<String>,
    /// `sha256sum` lines for the small files, with bare names.
    small_sums: String,
}

/// Writes the data once; a later run with the same size and count reuses it.
fn make_data(dir: &Path, size: u64, count: usize) -> Result<Data> {
    let one = dir.join("one");
    fs::create_dir_all(&one)?;
    let big = format!("one/{size}.bin");
    let big_path = dir.join(&big);
    let big_sum_path = dir.join(format!("one/{size}.sha256"));
    if !big_sum_path.exists() || fs::metadata(&big_path).map(|m| m.len()).ok() != Some(size) {
        eprintln!("writing {size} random bytes to {}", big_path.display());
        random_file(&big_path, size)?;
        let sum = sha256(&big_path)?;
        fs::write(&big_sum_path, sum)?;
    }
    let big_sum = fs::read_to_string(&big_sum_path)?.trim().to_string();

    let many = format!("many-{count}");
    let many_dir = dir.join(&many);
    let sums_path = dir.join(format!("{many}.sha256"));
    let names: Vec<String> = (0..count).map(|i| format!("f{i:05}.bin")).collect();
    if !sums_path.exists() {
        eprintln!(
            "writing {count} files of {SMALL} random bytes to {}",
            many_dir.display()
        );
        fs::create_dir_all(&many_dir)?;
        for name in &names {
            random_file(&many_dir.join(name), SMALL)?;
        }
        let mut sums = String::new();
        for chunk in names.chunks(500) {
            sums.push_str(&quiet(
                Command::new("sha256sum").args(chunk).current_dir(&many_dir),
            )?);
        }
        fs::write(&sums_path, sums)?;
    }
    Ok(Data {
        dir: dir.to_path_buf(),
        big,
        big_size: size,
        big_sum,
        small: names.iter().map(|n| format!("{many}/{n}")).collect(),
        small_sums: fs::read_to_string(&sums_path)?,
    })
}

fn random_file(path: &Path, size: u64) -> Result<()> {
    let mut src = fs::File::open("/dev/urandom")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n])?;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    let out = quiet(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or("").to_string())
}

// ---------------------------------------------------------------- nginx

/// nginx on a free port of 127.0.0.1 (https, http2), serving `docroot`;
/// stopped on drop.
fn start_nginx(work: &Path, docroot: &Path, pki: &Pki) -> Result<util::Nginx> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = work.join("nginx");
    fs::create_dir_all(dir.join("tmp"))?;
    let user = if is_root() { "user root root;" } else { "" };
    let d = dir.display();
    let conf = format!(
        r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{ application/octet-stream bin; }}
    default_type application/octet-stream;
    log_format bytes '$request_uri $status $bytes_sent $connection "$http_range" $msec $request_time';
    access_log {d}/access.log bytes buffer=64k;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server {{
                listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
                root {root};
        location / {{ }}
        # The `up` workload: curl -T writes here (nginx's temporary body
        # file, renamed into place once whole).
        {dav}
    }}
}}
"#,
        chain = pki.chain.display(),
        key = pki.key.display(),
        root = docroot.display(),
        dav = util::nginx_dav_location(&dir.join("dav")),
    );
    util::Nginx::start(&dir, &conf, port)
}

// ---------------------------------------------------------------- the bits daemon

/// A long-running process under `/usr/bin/time -v` (the bits daemon, `bits
/// serve`): `time` is the child, `pid` the process measured through `/proc`.
struct Timed {
    time: Child,
    pid: u32,
    time_out: PathBuf,
}

impl Timed {
    /// Runs `PROGRAM ARGS` (`program`: a command whose program and arguments
    /// are set, never spawned) under `/usr/bin/time -v -o time_out` and waits
    /// for the first line of its standard output that starts with `ready`:
    /// returns it with the process.
    fn start(program: &Command, time_out: PathBuf, ready: &str) -> Result<(Timed, String)> {
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("-v").arg("-o").arg(&time_out).arg(program.get_program());
        cmd.args(program.get_args());
        for (k, v) in program.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let name = program.get_program().to_string_lossy().into_owned();
        // Its log (`BITS_LOG=...` to ask for more) stays beside its account,
        // in the work directory `--keep` keeps, one start after another.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(time_out.with_extension("log"))
            .context("opening a log")?;
        let mut time = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = time.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with(ready) => break line,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = time.wait();
                    bail!("{name} ended before it said {ready:?}");
                }
            }
        };
        // Keep reading (and dropping) its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", time.id()))
            .context("reading the measured pid from /proc")?;
        let pid = children
            .split_whitespace()
            .next()
            .context("/usr/bin/time has no child")?
            .parse()?;
        Ok((Timed { time, pid, time_out }, line))
    }

    /// CPU seconds so far (user + system), from `/proc/PID/stat`.
    fn cpu(&self) -> Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // After the command name: state is field 3, utime 14 and stime 15.
        let utime: f64 = fields.get(11).context("utime")?.parse()?;
        let stime: f64 = fields.get(12).context("stime")?.parse()?;
        Ok((utime + stime) / clock_ticks())
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS.
    fn reset_peak(&self) -> Result<()> {
        fs::write(format!("/proc/{}/clear_refs", self.pid), "5").context("resetting VmHWM")
    }

    /// Peak RSS in KiB since the last reset.
    fn peak_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// RSS in KiB now.
    fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("no {field}"))?
            .parse()
            .with_context(|| field.to_string())
    }
}

/// `bits daemon --foreground`, for the whole series.
struct Daemon(Timed);

impl std::ops::Deref for Daemon {
    type Target = Timed;
    fn deref(&self) -> &Timed {
        &self.0
    }
}

impl Daemon {
    fn start(bits: &Path, store: &Path, ca: &Path, work: &Path) -> Result<Daemon> {
        let mut cmd = Command::new(bits);
        cmd.arg("--store")
            .arg(store)
            .args(["daemon", "--foreground"])
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR");
        let (timed, _) = Timed::start(&cmd, work.join("daemon.time"), "ready")?;
        Ok(Daemon(timed))
    }

    /// `bits daemon --stop`; returns `/usr/bin/time -v`'s account of the whole series.
    fn stop(&mut self, bits: &Path, store: &Path, ca: &Path) -> Result<TimeV> {
        let _ = Command::new(bits)
            .arg("--store")
            .arg(store)
            .args(["daemon", "--stop"])
            .env("SSL_CERT_FILE", ca)
            .stderr(Stdio::null())
            .status();
        self.0.time.wait()?;
        TimeV::read(&self.time_out)
    }
}

/// `bits serve` over https with the bench PKI, for the whole series: the
/// server of the `up` workload.
struct Serve {
    timed: Timed,
    port: u16,
    root: PathBuf,
}

impl Serve {
    fn start(bits: &Path, pki: &Pki, work: &Path) -> Result<Serve> {
        let root = work.join("serve");
        fs::create_dir_all(&root)?;
        let mut cmd = Command::new(bits);
        cmd.arg("serve")
            .arg("--root")
            .arg(&root)
            .arg("--cert")
            .arg(&pki.chain)
            .arg("--key")
            .arg(&pki.key)
            .args(["--listen", "127.0.0.1:0"]);
        let (timed, line) = Timed::start(&cmd, work.join("serve.time"), "listening ")?;
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("bits serve said {line:?}"))?;
        Ok(Serve { timed, port, root })
    }

    /// SIGTERM; returns `/usr/bin/time -v`'s account of the whole series.
    fn stop(mut self) -> Result<TimeV> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.timed.pid.to_string())
            .status();
        self.timed.time.wait()?;
        TimeV::read(&self.timed.time_out)
    }
}

/// `USER_HZ` (`getconf CLK_TCK`), the unit of `/proc`'s CPU times; asked once.
fn clock_ticks() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The whole machine's busy CPU time so far, in `USER_HZ` ticks: the sum of
/// user, nice, system, irq, softirq and steal from `/proc/stat`'s `cpu` line
/// (guest time is already in user; idle and iowait are not busy).
fn machine_busy_ticks() -> Result<u64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().context("odd /proc/stat"))
        .collect::<Result<_>>()?;
    ensure!(f.len() >= 8, "/proc/stat's cpu line has {} fields", f.len());
    // user nice system idle iowait irq softirq steal ...
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// What `/usr/bin/time -v` reports.
#[derive(Clone, Copy, Debug, Default)]
struct TimeV {
    cpu: f64,
    rss_kib: u64,
}

impl TimeV {
    fn read(path: &Path) -> Result<TimeV> {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut t = TimeV::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some((k, v)) = line.rsplit_once(": ") {
                match k {
                    "User time (seconds)" | "System time (seconds)" => t.cpu += v.parse::<f64>()?,
                    "Maximum resident set size (kbytes)" => t.rss_kib = v.parse()?,
                    _ => {}
                }
            }
        }
        Ok(t)
    }
}

// ---------------------------------------------------------------- runs

struct Bench {
    work: PathBuf,
    bits: PathBuf,
    store: PathBuf,
    ca: PathBuf,
    daemon: Daemon,
    /// `bits serve`, for the `up` workload.
    serve: Option<Serve>,
    /// nginx's own address (`https://127.0.0.1:PORT`).
    nginx_base: String,
    /// Where the clients reach nginx at the current RTT: nginx, or the
    /// latency proxy in front of it.
    base: String,
    /// Where the clients reach `bits serve` at the current RTT.
    serve_base: String,
    /// The current RTT, ms.
    rtt: u64,
    /// Where nginx writes curl's uploads.
    nginx_dav: PathBuf,
    data: Data,
    /// By RTT (ms), workload and tool.
    results: BTreeMap<(u64, Workload, Tool), Vec<Sample>>,
    /// The next run's tag.
    seq: u64,
    /// The daemon's RSS (KiB) after each bits run, with the run's workload:
    /// whether it grows with the jobs it has finished (they stay in the
    /// store, ACKNOWLEDGED).
    daemon_rss: Vec<(Workload, u64)>,
    /// `--priority` for `bits transfer`.
    priority: Option<String>,
}

impl Bench {
    /// Every workload at the current RTT: a warm-up round, then `--runs`
    /// rounds, the tools interleaved in each.
    fn series(&mut self, opts: &Options, tools: &[Tool]) -> Result<()> {
        for workload in &opts.workloads {
            for round in 0..=opts.runs {
                let label = if round == 0 {
                    "warm-up".to_string()
                } else {
                    format!("run {round}/{}", opts.runs)
                };
                for tool in tools.iter().filter(|t| workload.runs(t)) {
                    let sample = self.once(tool, *workload).with_context(|| {
                        format!("{} {} at {} ms ({label})", tool.name(), workload.name(), self.rtt)
                    })?;
                    eprintln!(
                        "  {label:<9} {:>3} ms {:<14} {:<5} {:>8.3} s  cpu {:>7.3} s  machine cpu {:>7.3} s  rss {:>7.1} MiB",
                        self.rtt,
                        tool.name(),
                        workload.name(),
                        sample.wall,
                        sample.cpu,
                        sample.machine_cpu,
                        mib(sample.rss_kib)
                    );
                    if round > 0 {
                        self.results
                            .entry((self.rtt, *workload, tool.clone()))
                            .or_default()
                            .push(sample);
                    }
                }
            }
        }
        Ok(())
    }

    /// One run of `tool` on `workload`: timed, measured, checked.
    fn once(&mut self, tool: &Tool, workload: Workload) -> Result<Sample> {
        self.seq += 1;
        let tag = self.seq;
        // A fresh directory, never a deleted and remade one (see the module doc).
        let out = self.fresh_out(&tag.to_string())?;
        let time_out = self.work.join("run.time");
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("-v").arg("-o").arg(&time_out);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let urls: Vec<String> = match workload {
            Workload::One => vec![format!("{}/{}?r={tag}", self.base, self.data.big)],
            Workload::Up => vec![match (tool, &self.serve) {
                (Tool::Bits(_), Some(_)) => format!("{}/up/{tag}.bin", self.serve_base),
                _ => format!("{}/dav/{tag}.bin?r={tag}", self.base),
            }],
            Workload::Many => self
                .data
                .small
                .iter()
                .map(|p| format!("{}/{p}?r={tag}", self.base))
                .collect(),
        };
        let names: Vec<String> = match workload {
            Workload::One | Workload::Up => vec!["big.bin".into()],
            Workload::Many => self
                .data
                .small
                .iter()
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .collect(),
        };
        let big = self.data.dir.join(&self.data.big);
        match tool {
            Tool::Curl if workload == Workload::Up => {
                cmd.args([
                    "curl",
                    "-sS",
                    "--fail",
                    "--http1.1",
                    "-o",
                    "/dev/null",
                    "--cacert",
                ])
                .arg(&self.ca)
                .arg("-T")
                .arg(&big)
                .args(&urls);
            }
            Tool::Curl | Tool::CurlSync | Tool::CurlParallel { .. } => {
                if *tool == Tool::CurlSync {
                    // `sh -c SCRIPT $0 $@...`: $0 is the file to sync.
                    cmd.args(["sh", "-c", r#"curl "$@" && exec sync -f "$0""#])
                        .arg(out.join(&names[0]));
                } else {
                    cmd.arg("curl");
                }
                cmd.args(["-sS", "--fail", "--cacert"]).arg(&self.ca);
                match tool {
                    Tool::CurlParallel { h2 } => {
                        cmd.args(["--parallel", "--parallel-max", "16"]);
                        cmd.arg(if *h2 { "--http2" } else { "--http1.1" });
                    }
                    _ => {
                        cmd.arg("--http1.1");
                    }
                }
                cmd.arg("--output-dir").arg(&out);
                for (url, name) in urls.iter().zip(&names) {
                    cmd.arg("-o").arg(name).arg(url);
                }
            }
            Tool::Aria2 => {
                let input = self.work.join("aria2.input");
                let mut list = String::new();
                for (url, name) in urls.iter().zip(&names) {
                    let _ = writeln!(list, "{url}\n  out={name}");
                }
                fs::write(&input, list)?;
                cmd.arg("aria2c")
                    .arg(format!("--ca-certificate={}", self.ca.display()))
                    .args([
                        "-q",
                        "-j16",
                        "-x4",
                        "--allow-overwrite=true",
                        "--auto-file-renaming=false",
                        "--summary-interval=0",
                    ])
                    .arg("-d")
                    .arg(&out)
                    .arg("-i")
                    .arg(&input);
            }
            Tool::Bits(backend) => {
                // Forget the jobs of earlier runs (outside the timing) so the
                // store does not grow from run to run.
                quiet(Command::new(&self.bits).arg("--store").arg(&self.store).args([
                    "prune",
                    "--older-than",
                    "0",
                    "-q",
                ]))?;
                cmd.arg(&self.bits)
                    .arg("--store")
                    .arg(&self.store)
                    .args(["transfer", "--backend", backend])
                    .env("SSL_CERT_FILE", &self.ca)
                    .env_remove("SSL_CERT_DIR");
                if let Some(p) = &self.priority {
                    cmd.args(["--priority", p]);
                }
                if workload == Workload::Up {
                    cmd.arg("--upload").arg(&big).args(&urls);
                } else {
                    for (url, name) in urls.iter().zip(&names) {
                        cmd.arg(url).arg(out.join(name));
                    }
                }
            }
        }

        // Earlier runs' downloads stay on disk: write back what they (and the
        // prune above) left dirty now, so no later run pays for it.
        quiet(Command::new("sync").arg("-f").arg(&out))?;
        let is_bits = matches!(tool, Tool::Bits(_));
        let cpu_before = if is_bits {
            self.daemon.reset_peak()?;
            self.daemon.cpu()?
        } else {
            0.0
        };
        let serve = self
            .serve
            .as_ref()
            .filter(|_| is_bits && workload == Workload::Up);
        if let Some(serve) = serve {
            serve.timed.reset_peak()?;
        }
        // Read last before and first after the command: no process of ours
        // runs in between but the timed one.
        let machine_before = machine_busy_ticks()?;
        let start = Instant::now();
        let output = cmd.output().context("running the tool")?;
        let wall = start.elapsed().as_secs_f64();
        let machine_cpu = machine_busy_ticks()?.saturating_sub(machine_before) as f64 / clock_ticks();
        if !output.status.success() {
            bail!(
                "exit {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let time = TimeV::read(&time_out)?;
        let sample = if is_bits {
            let daemon_cpu = self.daemon.cpu()? - cpu_before;
            self.daemon_rss.push((workload, self.daemon.rss_kib()?));
            Sample {
                wall,
                cpu: time.cpu + daemon_cpu,
                machine_cpu,
                rss_kib: self.daemon.peak_kib()?,
                cli_rss_kib: Some(time.rss_kib),
                serve_rss_kib: serve.map(|s| s.timed.peak_kib()).transpose()?,
                tag,
                server: None,
            }
        } else {
            Sample {
                wall,
                cpu: time.cpu,
                machine_cpu,
                rss_kib: time.rss_kib,
                cli_rss_kib: None,
                serve_rss_kib: None,
                tag,
                server: None,
            }
        };
        let received = match (workload, &self.serve) {
            (Workload::One, _) => out.join("big.bin"),
            (Workload::Up, Some(serve)) if is_bits => serve.root.join(format!("up/{tag}.bin")),
            (Workload::Up, _) => self.nginx_dav.join(format!("{tag}.bin")),
            (Workload::Many, _) => out.clone(),
        };
        self.verify(workload, &received)?;
        if workload != Workload::Many {
            // One inode; keeps the disk to one copy of the big file.
            fs::remove_file(&received).context("removing the checked big file")?;
        }
        Ok(sample)
    }

    /// `<work>/out/<name>`, which must not exist yet.
    fn fresh_out(&self, name: &str) -> Result<PathBuf> {
        let parent = self.work.join("out");
        fs::create_dir_all(&parent)?;
        let out = parent.join(name);
        fs::create_dir(&out).with_context(|| format!("creating {}", out.display()))?;
        Ok(out)
    }

    /// Every byte received is the byte sent: `out` is the big file (`one`,
    /// `up`) or the folder of the small ones.
    fn verify(&self, workload: Workload, out: &Path) -> Result<()> {
        match workload {
            Workload::One | Workload::Up => {
                let got = sha256(out)?;
                ensure!(
                    got == self.data.big_sum,
                    "big.bin has SHA-256 {got}, want {}",
                    self.data.big_sum
                );
            }
            Workload::Many => {
                let sums = self.work.join("many.sha256");
                fs::write(&sums, &self.data.small_sums)?;
                quiet(
                    Command::new("sha256sum")
                        .args(["-c", "--quiet", "--strict"])
                        .arg(&sums)
                        .current_dir(out),
                )
                .context("a small file differs from the served one")?;
            }
        }
        Ok(())
    }

    fn bytes(&self, workload: Workload) -> u64 {
        match workload {
            Workload::One | Workload::Up => self.data.big_size,
            Workload::Many => self.data.small.len() as u64 * SMALL,
        }
    }

    /// bits against curl on `workload`, round by round: `metric` of bits
    /// over curl's (curl's over bits' when `inverse`, for a throughput).
    fn paired(
        &self,
        rtt: u64,
        workload: Workload,
        bits: &Tool,
        metric: Metric,
        inverse: bool,
    ) -> Option<Paired> {
        let b = self.results.get(&(rtt, workload, bits.clone()))?;
        let c = self.results.get(&(rtt, workload, Tool::Curl))?;
        paired(b, c, metric, inverse)
    }

    /// Round by round, the fastest peer's run (any tool but bits) on
    /// `workload` at `rtt`.
    fn best_peer(&self, rtt: u64, workload: Workload) -> Vec<Sample> {
        let peers: Vec<&Vec<Sample>> = (self.results.iter())
            .filter(|((r, w, t), _)| *r == rtt && *w == workload && !matches!(t, Tool::Bits(_)))
            .map(|(_, s)| s)
            .collect();
        let rounds = peers.iter().map(|s| s.len()).min().unwrap_or(0);
        (0..rounds)
            .filter_map(|i| (peers.iter().map(|s| s[i])).min_by(|a, b| a.wall.total_cmp(&b.wall)))
            .collect()
    }

    /// The Markdown table and the goals.
    fn report(&self, opts: &Options, daemon_total: Option<TimeV>, serve_total: Option<TimeV>) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            "`cargo xtask bench --size {} --count {} --runs {} --rtt {}`: median of {} runs after one warm-up; \
             one = one file of {:.0} MiB, many = {} files of 16 KiB in one job/command, \
             up = the one file uploaded (bits to `bits serve`, curl `-T` to nginx's WebDAV PUT); \
             HTTPS (TLS 1.3) on 127.0.0.1. `bits serve` syncs an upload before its last Ack and \
             its folder at Close-Session (the file is durable when acknowledged); nginx syncs \
             neither, so curl's upload number is an upper bound. nginx s: from the start of the run's first request \
             to the end of its last, as nginx logged them. machine CPU s: the whole machine's busy CPU \
             time during the run (/proc/stat), so nginx, kernel writeback and softirqs included, and \
                          anything else the machine ran meanwhile. RTT ms: above 0, through a latency proxy \
             that delays each way by half (xtask/src/latency.rs; nginx offers h2 and http/1.1). \
             bits jobs: priority {}.\n",
            opts.size,
            opts.count,
            opts.runs,
            opts.rtts.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
            opts.runs,
            self.data.big_size as f64 / 1048576.0,
            opts.count,
            opts.priority.as_deref().unwrap_or("normal (BITS's default: a background job)")
        );
        r.push_str(
            "| RTT ms | tool | workload | median wall s | nginx s | MB/s | peak RSS MiB | CPU s | CPU s/GiB | machine CPU s | bits/peer wall |\n",
        );
        r.push_str("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let mut medians: BTreeMap<(u64, Workload, Tool), Medians> = BTreeMap::new();
        for ((rtt, w, tool), samples) in &self.results {
            let m = Medians {
                wall: median(samples.iter().map(|s| s.wall).collect()),
                cpu: median(samples.iter().map(|s| s.cpu).collect()),
                machine_cpu: median(samples.iter().map(|s| s.machine_cpu).collect()),
            };
            medians.insert((*rtt, *w, tool.clone()), m);
        }
        let reference = |rtt: u64, w: Workload| {
            opts.backends
                .first()
                .and_then(|b| medians.get(&(rtt, w, Tool::Bits(b.clone()))))
                .map(|m| m.wall)
        };
        for ((rtt, w, tool), samples) in &self.results {
            let Medians {
                wall,
                cpu,
                machine_cpu,
            } = medians[&(*rtt, *w, tool.clone())];
            let rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            let bytes = self.bytes(*w) as f64;
            let spans: Vec<f64> = samples.iter().filter_map(|s| s.server).collect();
            let server = if spans.is_empty() {
                "?".to_string()
            } else {
                format!("{:.3}", median(spans))
            };
            let mut rss_text = match samples.iter().filter_map(|s| s.cli_rss_kib).max() {
                Some(cli) => format!("{:.1} daemon, {:.1} cli", mib(rss), mib(cli)),
                None => format!("{:.1}", mib(rss)),
            };
            if let Some(serve) = samples.iter().filter_map(|s| s.serve_rss_kib).max() {
                let _ = write!(rss_text, ", {:.1} serve", mib(serve));
            }
            let ratio = match (tool, reference(*rtt, *w)) {
                (Tool::Bits(_), _) | (_, None) => "".to_string(),
                (_, Some(bits)) => format!("{:.2}", bits / wall),
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {:.3} | {} | {:.1} | {} | {:.3} | {:.2} | {:.2} | {} |",
                rtt,
                tool.name(),
                w.name(),
                wall,
                server,
                bytes / 1e6 / wall,
                rss_text,
                cpu,
                cpu / (bytes / 1073741824.0),
                machine_cpu,
                ratio
            );
        }
        if let Some(t) = daemon_total {
            let _ = writeln!(
                r,
                "\nbits daemon over the whole bits series (`/usr/bin/time -v`): {:.2} CPU s, peak RSS {:.1} MiB.",
                                t.cpu,
                mib(t.rss_kib)
            );
        }
        if let Some(t) = serve_total {
            let _ = writeln!(
                r,
                "\n`bits serve` over the whole series: {:.2} CPU s, peak RSS {:.1} MiB.",
                t.cpu,
                mib(t.rss_kib)
            );
        }

        r.push_str(
            "\nGoals (ratios within this run). Each ratio pairs the runs of one round (the tools run \
             back to back, so a slow spell of the machine hits both): the median of those per-round \
             ratios, their range, and for reference the ratio of the medians above.\n",
        );
        for (&rtt, backend) in (opts.rtts.iter()).flat_map(|r| opts.backends.iter().map(move |b| (r, b))) {
            let bits = Tool::Bits(backend.clone());
            let goals: [(Workload, &str, Metric, bool, &str); 8] = [
                (
                    Workload::One,
                    "throughput / curl",
                    |s| s.wall,
                    true,
                    "(goal >= 1.00)",
                ),
                (
                    Workload::One,
                    "CPU s/GiB / curl",
                    |s| s.cpu,
                    false,
                    "(goal <= 1.20)",
                ),
                (
                    Workload::One,
                    "machine CPU, bits/curl",
                    |s| s.machine_cpu,
                    false,
                    "(shown for context; nginx's work included)",
                ),
                (
                    Workload::Many,
                    "wall / curl (one reused connection)",
                    |s| s.wall,
                    false,
                    "(goal <= 1.00)",
                ),
                (Workload::Many, "CPU / curl", |s| s.cpu, false, "(goal <= 1.20)"),
                (
                    Workload::Up,
                    "upload throughput / curl to nginx",
                    |s| s.wall,
                    true,
                    "(goal >= 0.80)",
                ),
                (
                    Workload::Up,
                    "machine CPU, bits/curl",
                    |s| s.machine_cpu,
                    false,
                    "(shown for context; the server's work included)",
                ),
                (
                    Workload::Many,
                    "machine CPU, bits/curl",
                    |s| s.machine_cpu,
                    false,
                    "(shown for context; nginx's work included)",
                ),
            ];
            for (workload, what, metric, inverse, goal) in goals {
                let Some(p) = self.paired(rtt, workload, &bits, metric, inverse) else {
                    continue;
                };
                let label = match workload {
                    Workload::One => "one file".to_string(),
                    Workload::Many => format!("{} files", opts.count),
                    Workload::Up => "upload".to_string(),
                };
                let _ = writeln!(
                    r,
                    "- {rtt} ms, {label}, bits ({backend}) {what}: {:.2} (rounds {:.2}-{:.2}; medians {:.2}) {goal}",
                    p.median, p.min, p.max, p.of_medians
                );
            }
            // For context: curl with the file made durable inside its time.
            let one = |t: &Tool| self.results.get(&(rtt, Workload::One, t.clone()));
            if let (Some(b), Some(c)) = (one(&bits), one(&Tool::CurlSync)) {
                if let Some(p) = paired(b, c, |s| s.wall, true) {
                    let _ = writeln!(
                        r,
                        "- {rtt} ms, one file, bits ({backend}) throughput / curl+sync: {:.2} (rounds {:.2}-{:.2}) \
                         (shown for context: curl, then its file synced, as bits syncs before it says TRANSFERRED)",
                        p.median, p.min, p.max
                    );
                }
            }
            // Issue 18: on a link with latency, against the fastest peer of each round.
            let best = self.best_peer(rtt, Workload::Many);
            if let (true, Some(b)) = (rtt > 0, self.results.get(&(rtt, Workload::Many, bits.clone()))) {
                if let Some(p) = paired(b, &best, |s| s.wall, false) {
                    let _ = writeln!(
                        r,
                        "- {rtt} ms, {} files, bits ({backend}) wall / the round's fastest peer: {:.2} (rounds {:.2}-{:.2}) (goal <= 1.00)",
                        opts.count, p.median, p.min, p.max
                    );
                }
                if let Some(p) = self.paired(rtt, Workload::Many, &bits, |s| s.wall, true) {
                    let _ = writeln!(
                        r,
                        "- {rtt} ms, {} files, bits ({backend}) speed / one-connection curl: {:.1}x (rounds {:.1}-{:.1}) (goal >= 10)",
                        opts.count, p.median, p.min, p.max
                    );
                }
            }
        }
        let worst = self
            .results
            .iter()
            .filter(|((_, _, t), _)| matches!(t, Tool::Bits(_)))
            .flat_map(|(_, s)| s.iter().flat_map(|s| [s.rss_kib, s.cli_rss_kib.unwrap_or(0)]))
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            r,
            "- peak RSS of any bits process: {:.1} MiB (goal <= 32 MiB)",
            mib(worst)
        );
        let serve_worst = (self.results.values().flatten())
            .filter_map(|s| s.serve_rss_kib)
            .max();
        if let Some(kib) = serve_worst {
            let _ = writeln!(
                r,
                "- peak RSS of `bits serve` during an upload: {:.1} MiB (goal <= 32 MiB)",
                mib(kib)
            );
        }
        // Compared within the last workload: a 2,000-file job and a 1 GiB
        // one leave different (bounded) buffers behind.
        if let Some(&(last_workload, last)) = self.daemon_rss.last() {
            let same: Vec<u64> = (self.daemon_rss.iter())
                .filter(|(w, _)| *w == last_workload)
                .map(|(_, rss)| *rss)
                .collect();
            let _ = writeln!(
                r,
                "- daemon RSS after its first {} job: {:.1} MiB; after its last, job {} of the series (every job kept in the store): {:.1} MiB (goal: no growth with finished jobs)",
                last_workload.name(),
                mib(same[0]),
                self.daemon_rss.len(),
                mib(last)
            );
        }
        r.push_str(KILL9_TODO);
        r
    }
}

impl Bench {
    /// Fills in each sample's server-side span from nginx's access log.
    fn server_spans(&mut self, access_log: &Path) -> Result<()> {
        let log = fs::read_to_string(access_log).context("reading nginx's access log")?;
        // tag -> (first start, last end), in seconds since the epoch.
        let mut spans: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for line in log.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(tag) = f
                .first()
                .and_then(|u| u.split("?r=").nth(1))
                .and_then(|t| t.parse().ok())
            else {
                continue;
            };
            let (Some(end), Some(took)) = (
                f.get(5).and_then(|v| v.parse::<f64>().ok()),
                f.get(6).and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            let span = spans.entry(tag).or_insert((f64::MAX, 0.0));
            span.0 = span.0.min(end - took);
            span.1 = span.1.max(end);
        }
        for samples in self.results.values_mut() {
            for s in samples {
                s.server = spans.get(&s.tag).map(|(a, b)| b - a);
            }
        }
        Ok(())
    }
}

const KILL9_TODO: &str = "- kill -9 mid-transfer re-download: not measured in this run\n";

/// What the kill -9 check left to count once nginx has flushed its log.
struct Kill9 {
    outcome: String,
    /// The temporary file's size once the daemon was dead.
    on_disk: u64,
}

impl Kill9 {
    /// Bytes nginx sent for the check's URL beyond one copy of the file.
    fn finish(self, access_log: &Path, size: u64) -> Result<String> {
        if !self.outcome.is_empty() {
            return Ok(self.outcome);
        }
        let log = fs::read_to_string(access_log)?;
        let mut sent = 0u64;
        let mut requests = 0;
        let mut resumed_at = None;
        for line in log.lines().filter(|l| l.contains("?kill9")) {
            requests += 1;
            sent += line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if let Some(from) = line
                .split("\"bytes=")
                .nth(1)
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                resumed_at = Some(from);
            }
        }
        let lost = match resumed_at {
            Some(from) => format!(
                "{:.3} MiB of the {} bytes on disk at the kill re-downloaded (resumed at byte {from}; goal <= 1 MiB)",
                self.on_disk.saturating_sub(from) as f64 / 1048576.0,
                self.on_disk
            ),
            None => format!(
                "no Range request after the kill: all {} bytes on disk re-downloaded (goal <= 1 MiB)",
                self.on_disk
            ),
        };
        Ok(format!(
            "{lost}; on the wire {requests} requests, {:.3} MiB sent beyond the file (context, not a goal: \
             what was in flight when the daemon died, socket buffers and HTTP/2's window, lost with it)",
            sent.saturating_sub(size) as f64 / 1048576.0
        ))
    }
}

impl Bench {
    /// Starts a one-file job, kills the daemon with SIGKILL once a quarter of
    /// the file is on disk, restarts it, lets the job finish and checks it.
    fn kill9(&mut self) -> Result<Kill9> {
        let out = self.fresh_out("kill9")?;
        let bits = |args: &[&str]| -> Result<String> {
            let mut c = Command::new(&self.bits);
            c.arg("--store")
                .arg(&self.store)
                .args(args)
                .env("SSL_CERT_FILE", &self.ca);
            Ok(quiet(&mut c)?.trim().to_string())
        };
        let mut daemon = Daemon::start(&self.bits, &self.store, &self.ca, &self.work)?;
        let id = bits(&["create", "kill9"])?;
        let local = out.join("big.bin");
        let url = format!("{}/{}?kill9", self.base, self.data.big);
        bits(&["add-file", &id, &url, local.to_str().context("utf-8 path")?])?;
        bits(&["resume", &id])?;
        let quarter = self.data.big_size / 4;
        let deadline = Instant::now() + Duration::from_secs(120);
        let killed_at = loop {
            let on_disk = fs::read_dir(&out)?
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0);
            if on_disk >= quarter {
                quiet(Command::new("kill").arg("-KILL").arg(daemon.pid.to_string()))?;
                let _ = daemon.0.time.wait();
                break on_disk;
            }
            if local.exists() || Instant::now() > deadline {
                let _ = daemon.stop(&self.bits, &self.store, &self.ca);
                return Ok(Kill9 {
                    outcome: "not measured: the file finished before a quarter was seen on disk".into(),
                    on_disk: 0,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let on_disk = fs::read_dir(&out)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        eprintln!(
            "  kill -9 of the daemon at {killed_at} bytes on disk ({on_disk} once dead); restarting it"
        );
        let mut daemon = Daemon::start(&self.bits, &self.store, &self.ca, &self.work)?;
        let waited = bits(&["wait", &id]);
        let completed = waited.and_then(|_| bits(&["complete", &id]));
        let _ = daemon.stop(&self.bits, &self.store, &self.ca);
        completed?;
        let got = sha256(&local)?;
        ensure!(
            got == self.data.big_sum,
            "after kill -9 the file has SHA-256 {got}"
        );
        fs::remove_file(&local).context("removing the checked kill -9 file")?;
        Ok(Kill9 {
            outcome: String::new(),
            on_disk,
        })
    }
}

/// `b` against `c`, run by run (the same round): `metric` of `b` over `c`'s
/// (`c`'s over `b`'s when `inverse`, for a throughput).
fn paired(b: &[Sample], c: &[Sample], metric: Metric, inverse: bool) -> Option<Paired> {
    let ratio = |b: f64, c: f64| if inverse { c / b } else { b / c };
    let rounds: Vec<f64> = b
        .iter()
        .zip(c)
        .map(|(b, c)| ratio(metric(b), metric(c)))
        .collect();
    if rounds.is_empty() {
        return None;
    }
    let min = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Paired {
        median: median(rounds),
        min,
        max,
        of_medians: ratio(
            median(b.iter().map(metric).collect()),
            median(c.iter().map(metric).collect()),
        ),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn ratios_pair_the_runs_of_a_round() {
        let run = |wall: f64| Sample {
            wall,
            cpu: wall,
            machine_cpu: wall,
            rss_kib: 0,
            cli_rss_kib: None,
            serve_rss_kib: None,
            tag: 0,
            server: None,
        };
        let bits = [run(1.0), run(4.0), run(1.2)];
        let curl = [run(1.0), run(2.0), run(2.0)];
        let p = paired(&bits, &curl, |s| s.wall, false).unwrap();
        assert_eq!((p.median, p.min, p.max), (1.0, 0.6, 2.0));
        assert_eq!(p.of_medians, 1.2 / 2.0);
        // A throughput is curl's time over bits'.
        let t = paired(&bits, &curl, |s| s.wall, true).unwrap();
        assert_eq!((t.median, t.max), (1.0, 1.0 / 0.6));
        assert!(paired(&[], &curl, |s| s.wall, false).is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
