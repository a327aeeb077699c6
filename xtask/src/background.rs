//! `cargo xtask bench --background`: does a background bits job get out of
//! the way of the user's traffic (issue 19)? A real bottleneck, a real
//! foreground flow, all on 127.0.0.1 inside a network namespace of its own.
//!
//! What it does:
//! 1. builds `bits` in release mode and writes the data once (under
//!    `target/bench-data/background/`);
//! 2. makes a network namespace (`ip netns add`), sets its loopback's MTU
//!    to 1500 and sends what the servers send (source port 8080 or 7007)
//!    and what the uploads send (destination port 8081, nginx's WebDAV, or
//!    8082, `bits serve`) through a `tbf` of 50 Mbit/s with a 250 ms queue:
//!    lo's ingress redirects it to an ifb holding the tbf (this kernel has
//!    no netem). ACKs and requests pass unshaped; the queue is not the
//!    sender's own (see [`Netns::create`]);
//! 3. runs itself inside it (`ip netns exec NS xtask bench --background
//!    --in-netns ...`): nginx (plain http, `sendfile`; WebDAV `PUT` on a
//!    port of its own), `bits serve` (plain http) and a TCP echo server on
//!    127.0.0.1, then `--runs` rounds of the cases, interleaved:
//!    1. curl alone (the foreground baseline);
//!    2. bits background (NORMAL) alone;
//!    3. curl started 4 s into a bits background download;
//!    4. curl started 4 s into a plain second curl (the "no yielding"
//!       reference);
//!    5. bits `--max-rate 2M` alone (its file's size read every 250 ms);
//!    6. curl `-T` alone (an upload to nginx's WebDAV `PUT`: the upload
//!       baseline);
//!    7. that upload started 4 s into a bits background upload (to `bits
//!       serve`);
//!    8. that upload started 4 s into a second plain `curl -T` (the "no
//!       yielding" reference for uploads);
//!
//!    and all the while a probe: a 1-byte TCP ping through the bottleneck
//!    every 100 ms, whose RTT above the idle one is the queueing delay the
//!    case adds. Every download, and every upload curl finished, is
//!    checked with `sha256sum` (outside the timing);
//! 4. deletes the namespace, even when a case failed: the processes still
//!    in it (ours: `ip netns pids`) are killed by pid first;
//! 5. prints the table and writes it to `docs/background.md` (the README
//!    quotes it).
//!
//! Goals (issue 19): in 3, curl keeps ≥ 90 % of its throughput of 1 (4 is
//! the same beside a flow that does not yield: in its first 10 s a late
//! Cubic flow behind a full 250 ms drop-tail queue gets a few percent,
//! not the half it converges to over a minute or so); in 2, bits uses ≥ 90 % of the link; bits alone adds
//! ≤ 80 ms of queueing delay (its target is 60 ms); in 5 the rate is within
//! 5 % of 2 MiB/s over every 10 s window. Uploads: the download goal carried
//! over, in 7 curl's upload keeps ≥ 90 % of its throughput of 6 (8 is the
//! reference).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::util;

const USAGE: &str = "\
usage: cargo xtask bench --background [--runs N] [--cc NAME] [--keep]
  --runs N   rounds of the eight cases, interleaved (default 3)
  --cc NAME  the namespace's TCP congestion control (default cubic, Linux's
             default and most servers'; bbr keeps its own queue short)
  --keep     keep the work directory (downloads, logs, stores)";

/// The bottleneck: `tbf` rate and queue.
const RATE_MBIT: u64 = 50;
const QUEUE_MS: u64 = 250;
/// The link in bytes a second.
const LINK: f64 = (RATE_MBIT * 1_000_000 / 8) as f64;

/// The foreground file (curl's): about 8 s of the link.
const FG_SIZE: u64 = 48 << 20;
/// The foreground curl's time limit: its throughput is what it got by then.
const FG_SECONDS: u64 = 10;
/// bits alone: about 11 s of the link.
const ALONE_SIZE: u64 = 64 << 20;
/// The background download the foreground flow meets (never finishes
/// during a case).
const BIG_SIZE: u64 = 1 << 30;
/// `--max-rate 2M`: 2 MiB/s for about 20 s.
const RATE_SIZE: u64 = 40 << 20;
const MAX_RATE: f64 = (2 << 20) as f64;

/// The namespace's ifb device, which holds the bottleneck.
const IFB: &str = "ifb0";

/// The ports inside the namespace: nginx's downloads, nginx's WebDAV
/// uploads, `bits serve`, the probe's echo. The uploads' servers have ports
/// of their own so that the bottleneck can take what is sent to them
/// without taking the downloads' ACKs (sent to 8080).
const HTTP_PORT: u16 = 8080;
const DAV_PORT: u16 = 8081;
const SERVE_PORT: u16 = 8082;
const ECHO_PORT: u16 = 7007;

/// How long the competing flow runs before the timed curl starts.
const HEAD_START: Duration = Duration::from_secs(4);

/// Runs the task: `args` are those after `--background`.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--in-netns") {
        return inside(&args[1..]);
    }
    let mut runs = 3usize;
    let mut keep = false;
    let mut cc = "cubic".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .context("--runs needs a value")?
                    .parse()
                    .context("--runs")?
            }
            "--cc" => cc = it.next().context("--cc needs a value")?.clone(),
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    ensure!(runs >= 1, "--runs must be at least 1");
    ensure!(
        is_root(),
        "the background bench makes a network namespace: run it as root"
    );
    for tool in ["/usr/sbin/nginx", "/usr/bin/curl", "/usr/bin/sha256sum"] {
        ensure!(Path::new(tool).exists(), "{tool} is missing");
    }
    util::run_checked(&mut util::cargo_with(&[
        "build",
        "--release",
        "-q",
        "-p",
        "bits-cli",
    ]))?;
    let target = util::target_dir();
    let bits = target.join("release/bits");
    let data = make_data(&target.join("bench-data/background"))?;
    let work = target.join(format!("bench-background-{}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;

    Netns::delete_stale();
    let ns = Netns::create(&format!("bitsbench{}", std::process::id()), &cc)?;
    let exe = std::env::current_exe()?;
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args(["bench", "--background", "--in-netns"])
        .arg(&work)
        .arg(&bits)
        .arg(&data)
        .arg(runs.to_string())
        .arg(&cc)
        .status()
        .context("running the cases inside the namespace")?;
    drop(ns);
    ensure!(status.success(), "the cases failed ({status})");

    let report = fs::read_to_string(work.join("report.md"))?;
    println!("\n{report}");
    let doc = util::project_root().join("docs/background.md");
    fs::write(&doc, report)?;
    println!("written to {}", doc.display());
    if keep {
        println!("work directory kept: {}", work.display());
    } else {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A network namespace with the bottleneck on its loopback; deleted on
/// drop, after the processes still in it are killed by pid.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str, cc: &str) -> Result<Netns> {
        run_quiet(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.into() };
        let exec = |args: &[&str]| -> Result<()> {
            run_quiet(Command::new("ip").args(["netns", "exec", name]).args(args))
        };
        exec(&["ip", "link", "set", "lo", "mtu", "1500", "up"])?;
        // The namespace's sysctl may be read-only: the congestion control
        // is a route attribute instead (nginx's accepted connections take
        // it from the route too).
        for dst in ["127.0.0.0/8", "127.0.0.1"] {
            exec(&[
                "ip",
                "route",
                "change",
                "local",
                dst,
                "dev",
                "lo",
                "proto",
                "kernel",
                "scope",
                "host",
                "src",
                "127.0.0.1",
                "table",
                "local",
                "congctl",
                cc,
            ])?;
        }
        // The bottleneck is on the way in: lo's ingress redirects the
        // server-to-client direction (nginx's data, the echo's replies) to
        // an ifb whose tbf is the queue. By then lo has orphaned the
        // packets, so the queue is not charged to the sending socket, as a
        // router's queue is not: a tbf on lo's egress holds the sender's
        // own packets, and TCP Small Queues caps what a socket keeps there
        // (two of its TSO packets), which kept the queue near 20 ms and
        // starved any flow that started late (its TSO packets are small).
        // ACKs and requests pass unshaped, as on a link shaped one way.
        //
        // Uploads flow the other way: the client sends, so their data is
        // what goes to the server's port. On lo every packet leaves through
        // lo's egress and comes back in through lo's ingress once, so the
        // same ingress hook sees an upload's data as `dport` DAV_PORT or
        // SERVE_PORT and redirects it into the same tbf (one bottleneck,
        // shared by both directions, as a half-duplex link); the servers'
        // ACKs (from those ports) pass unshaped. Downloads never use those
        // ports, so their ACKs and requests (to HTTP_PORT) stay unshaped.
        exec(&["ip", "link", "add", IFB, "type", "ifb"])?;
        exec(&["ip", "link", "set", IFB, "up"])?;
        exec(&[
            "tc",
            "qdisc",
            "add",
            "dev",
            IFB,
            "root",
            "tbf",
            "rate",
            &format!("{RATE_MBIT}mbit"),
            "burst",
            "32kb",
            "latency",
            &format!("{QUEUE_MS}ms"),
        ])?;
        exec(&["tc", "qdisc", "add", "dev", "lo", "handle", "ffff:", "ingress"])?;
        let from = [HTTP_PORT, ECHO_PORT].map(|p| ("sport", p));
        let to = [DAV_PORT, SERVE_PORT].map(|p| ("dport", p));
        for (dir, port) in from.into_iter().chain(to) {
            exec(&[
                "tc",
                "filter",
                "add",
                "dev",
                "lo",
                "parent",
                "ffff:",
                "protocol",
                "ip",
                "prio",
                "1",
                "u32",
                "match",
                "ip",
                dir,
                &port.to_string(),
                "0xffff",
                "action",
                "mirred",
                "egress",
                "redirect",
                "dev",
                IFB,
            ])?;
        }
        println!(
            "namespace {name}: lo mtu 1500, from ports {HTTP_PORT} and {ECHO_PORT} and to ports \
             {DAV_PORT} and {SERVE_PORT} through tbf {RATE_MBIT} Mbit/s, queue {QUEUE_MS} ms"
        );
        Ok(ns)
    }
}

impl Netns {
    /// Deletes the namespaces an earlier bench left when it was killed
    /// (`bitsbenchPID` whose PID is gone): a drop never ran for them.
    fn delete_stale() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(pid) = name.strip_prefix("bitsbench") else {
                continue;
            };
            if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
                drop(Netns {
                    name: name.to_owned(),
                });
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only the bench's own processes run in it (nginx, bits, curl).
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        match Command::new("ip").args(["netns", "del", &self.name]).status() {
            Ok(s) if s.success() => println!("namespace {} deleted", self.name),
            _ => eprintln!("could not delete namespace {}: `ip netns del {0}`", self.name),
        }
    }
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The files, written once: random bytes, except the background file that
/// no case downloads whole (sparse).
fn make_data(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    for (name, size) in [
        ("fg.bin", FG_SIZE),
        ("alone.bin", ALONE_SIZE),
        ("rate.bin", RATE_SIZE),
    ] {
        let path = dir.join(name);
        if fs::metadata(&path).map(|m| m.len()).ok() == Some(size) {
            continue;
        }
        let mut out = fs::File::create(&path)?;
        let mut urandom = fs::File::open("/dev/urandom")?.take(size);
        std::io::copy(&mut urandom, &mut out)?;
    }
    let big = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dir.join("big.bin"))?;
    big.set_len(BIG_SIZE)?;
    Ok(dir.to_path_buf())
}

// ------------------------------------------------------------ inside the namespace

fn inside(args: &[String]) -> Result<()> {
    let [work, bits, data, runs, cc] = args else {
        bail!("--in-netns WORK BITS DATA RUNS CC");
    };
    let work = PathBuf::from(work);
    let bits = PathBuf::from(bits);
    let data = PathBuf::from(data);
    let runs: usize = runs.parse()?;
    let nginx = start_nginx(&work, &data)?;
    let serve = start_serve(&work, &bits)?;
    let _echo = echo_server()?;
    let mut cases = Cases {
        work: work.clone(),
        bits,
        data,
        dav: work.join("nginx/dav/dav"),
        seq: 0,
        base_rtt: 0.0,
        rows: Vec::new(),
        cc: cc.clone(),
    };
    // The idle path's RTT: the probe alone for 2 s.
    let probe = Probe::start()?;
    std::thread::sleep(Duration::from_secs(2));
    cases.base_rtt = median(probe.stop());
    println!("idle probe RTT {:.2} ms", cases.base_rtt);
    let result = (|| -> Result<()> {
        for round in 1..=runs {
            println!("round {round}/{runs}");
            cases.curl_alone()?;
            cases.bits_alone()?;
            cases.curl_with_bits()?;
            cases.curl_with_curl()?;
            cases.bits_max_rate()?;
            cases.curl_up_alone()?;
            cases.curl_up_with_bits()?;
            cases.curl_up_with_curl()?;
        }
        Ok(())
    })();
    drop(serve);
    drop(nginx);
    result?;
    fs::write(work.join("report.md"), cases.report(runs))?;
    Ok(())
}

/// One case's measurement in one round.
#[derive(Clone, Debug)]
struct Row {
    case: Case,
    /// The measured flow's throughput, bytes a second.
    rate: f64,
    /// The probe's RTT above the idle one: median and 95th percentile, ms.
    delay_median: f64,
    delay_p95: f64,
    /// `--max-rate`: the largest deviation from the cap over the 10 s
    /// windows (a fraction).
    window_error: Option<f64>,
    /// A background bits upload: its throughput before curl started and
    /// while curl ran, bytes a second.
    background: Option<(f64, f64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    CurlAlone,
    BitsAlone,
    CurlWithBits,
    CurlWithCurl,
    BitsMaxRate,
    UpAlone,
    UpWithBits,
    UpWithCurl,
}

impl Case {
    const ALL: [Case; 8] = [
        Case::CurlAlone,
        Case::BitsAlone,
        Case::CurlWithBits,
        Case::CurlWithCurl,
        Case::BitsMaxRate,
        Case::UpAlone,
        Case::UpWithBits,
        Case::UpWithCurl,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::CurlAlone => "(1) curl alone",
            Case::BitsAlone => "(2) bits background alone",
            Case::CurlWithBits => "(3) curl while bits background runs",
            Case::CurlWithCurl => "(4) curl while a second curl runs",
            Case::BitsMaxRate => "(5) bits --max-rate 2M alone",
            Case::UpAlone => "(6) curl upload alone",
            Case::UpWithBits => "(7) curl upload while bits background uploads",
            Case::UpWithCurl => "(8) curl upload while a second curl uploads",
        }
    }
}

struct Cases {
    work: PathBuf,
    bits: PathBuf,
    data: PathBuf,
    /// Where nginx writes curl's uploads.
    dav: PathBuf,
    seq: u32,
    base_rtt: f64,
    rows: Vec<Row>,
    /// The namespace's congestion control (nginx's, as a sender).
    cc: String,
}

impl Cases {
    fn url(name: &str) -> String {
        format!("http://127.0.0.1:{HTTP_PORT}/{name}")
    }

    fn fresh(&mut self, what: &str) -> Result<PathBuf> {
        self.seq += 1;
        let dir = self.work.join(format!("out/{}-{what}", self.seq));
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn record(&mut self, case: Case, rate: f64, rtts: Vec<f64>, window_error: Option<f64>) {
        self.record_with(case, rate, rtts, window_error, None);
    }

    fn record_with(
        &mut self,
        case: Case,
        rate: f64,
        rtts: Vec<f64>,
        window_error: Option<f64>,
        background: Option<(f64, f64)>,
    ) {
        let added: Vec<f64> = rtts.iter().map(|r| (r - self.base_rtt).max(0.0)).collect();
        let row = Row {
            case,
            rate,
            delay_median: median(added.clone()),
            delay_p95: percentile(added, 0.95),
            window_error,
            background,
        };
        println!(
            "  {:<48} {:>6.2} MB/s  +{:.1} ms (p95 +{:.1}){}{}",
            case.label(),
            rate / 1e6,
            row.delay_median,
            row.delay_p95,
            window_error.map_or(String::new(), |e| format!(
                "  worst 10 s window {:+.1} %",
                e * 100.0
            )),
            background.map_or(String::new(), |(before, beside)| format!(
                "  bits {:.2} MB/s before curl, {:.2} beside it",
                before / 1e6,
                beside / 1e6
            ))
        );
        self.rows.push(row);
    }

    /// `curl` of the foreground file into `dir` for at most
    /// [`FG_SECONDS`]: its throughput, and the file to check when it is
    /// whole.
    fn timed_curl(&self, dir: &Path) -> Result<Timed> {
        let out = dir.join("fg.bin");
        let result = Command::new("curl")
            .args(["-s", "-f", "--max-time", &FG_SECONDS.to_string()])
            .args(["-w", "%{size_download} %{time_total}", "-o"])
            .arg(&out)
            .arg(Self::url("fg.bin"))
            .output()
            .context("starting curl")?;
        // 28: --max-time ran out, the bytes so far count.
        let code = result.status.code();
        ensure!(matches!(code, Some(0 | 28)), "curl failed ({})", result.status);
        let text = String::from_utf8_lossy(&result.stdout);
        let mut fields = text.split_whitespace();
        let bytes: f64 = fields.next().context("curl -w")?.parse()?;
        let secs: f64 = fields.next().context("curl -w")?.parse()?;
        Ok(Timed {
            rate: bytes / secs,
            whole: (code == Some(0)).then_some(out),
            remove: false,
        })
    }

    /// A timed curl's throughput once its file, if whole, is checked (and
    /// removed if asked): after the probe stopped, so that the probe never
    /// samples the idle link while `sha256sum` runs (seconds on this machine).
    fn checked(&self, timed: Timed) -> Result<f64> {
        if let Some(got) = &timed.whole {
            self.check(got, "fg.bin")?;
            if timed.remove {
                fs::remove_file(got)?;
            }
        }
        Ok(timed.rate)
    }

    /// `curl -T` of the foreground file to nginx's WebDAV for at most
    /// [`FG_SECONDS`]: its throughput. A finished upload is to be checked on
    /// nginx's disk (and removed); one still running when the time is up
    /// counts what nginx's TCP acknowledged by then (`ss`'s `bytes_acked`),
    /// as a timed-out download counts what arrived: curl's own count
    /// (`size_upload`) would include what still sits in its socket buffer
    /// and in the queue.
    fn timed_upload(&mut self) -> Result<Timed> {
        self.seq += 1;
        let name = format!("{}-fg.bin", self.seq);
        let start = Instant::now();
        let mut curl = Proc(
            Command::new("curl")
                .args(["-s", "-f", "-o", "/dev/null"])
                .args(["-w", "%{size_upload} %{time_total}", "-T"])
                .arg(self.data.join("fg.bin"))
                .arg(format!("http://127.0.0.1:{DAV_PORT}/dav/{name}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting curl -T")?,
        );
        let limit = Duration::from_secs(FG_SECONDS);
        while start.elapsed() < limit {
            if let Some(status) = curl.0.try_wait()? {
                ensure!(status.success(), "curl -T failed ({status})");
                let mut text = String::new();
                curl.0
                    .stdout
                    .take()
                    .context("curl's stdout")?
                    .read_to_string(&mut text)?;
                let mut fields = text.split_whitespace();
                let bytes: f64 = fields.next().context("curl -w")?.parse()?;
                let secs: f64 = fields.next().context("curl -w")?.parse()?;
                return Ok(Timed {
                    rate: bytes / secs,
                    whole: Some(self.dav.join(&name)),
                    remove: true,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let acked = acked_bytes(DAV_PORT, curl.0.id())?;
        let secs = start.elapsed().as_secs_f64();
        curl.kill();
        Ok(Timed {
            rate: acked as f64 / secs,
            whole: None,
            remove: false,
        })
    }

    fn check(&self, got: &Path, name: &str) -> Result<()> {
        ensure!(
            sha256(got)? == sha256(&self.data.join(name))?,
            "{} differs from {name}",
            got.display()
        );
        Ok(())
    }

    fn curl_alone(&mut self) -> Result<()> {
        let dir = self.fresh("curl")?;
        let probe = Probe::start()?;
        let timed = self.timed_curl(&dir);
        let rtts = probe.stop();
        let rate = self.checked(timed?)?;
        self.record(Case::CurlAlone, rate, rtts, None);
        Ok(())
    }

    fn bits_alone(&mut self) -> Result<()> {
        let dir = self.fresh("bits")?;
        let bits = Bits::new(&self.bits, &dir);
        let out = dir.join("alone.bin");
        let probe = Probe::start()?;
        let start = Instant::now();
        bits.transfer(&Self::url("alone.bin"), &out, &[])?.wait_ok()?;
        let secs = start.elapsed().as_secs_f64();
        let rtts = probe.stop();
        bits.stop_daemon();
        self.check(&out, "alone.bin")?;
        self.record(Case::BitsAlone, ALONE_SIZE as f64 / secs, rtts, None);
        Ok(())
    }

    fn curl_with_bits(&mut self) -> Result<()> {
        let dir = self.fresh("curl-bits")?;
        let bits = Bits::new(&self.bits, &dir);
        let mut background = bits.transfer(&Self::url("big.bin"), &dir.join("big.bin"), &[])?;
        std::thread::sleep(HEAD_START);
        let probe = Probe::start()?;
        let timed = self.timed_curl(&dir);
        let rtts = probe.stop();
        background.kill();
        bits.stop_daemon();
        let rate = self.checked(timed?)?;
        self.record(Case::CurlWithBits, rate, rtts, None);
        Ok(())
    }

    fn curl_with_curl(&mut self) -> Result<()> {
        let dir = self.fresh("curl-curl")?;
        let mut background = Proc(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null"])
                .arg(Self::url("big.bin"))
                .stdin(Stdio::null())
                .spawn()?,
        );
        std::thread::sleep(HEAD_START);
        let probe = Probe::start()?;
        let timed = self.timed_curl(&dir);
        let rtts = probe.stop();
        background.kill();
        let rate = self.checked(timed?)?;
        self.record(Case::CurlWithCurl, rate, rtts, None);
        Ok(())
    }

    fn bits_max_rate(&mut self) -> Result<()> {
        let dir = self.fresh("bits-rate")?;
        let bits = Bits::new(&self.bits, &dir);
        let out = dir.join("rate.bin");
        let probe = Probe::start()?;
        let start = Instant::now();
        let mut transfer = bits.transfer(&Self::url("rate.bin"), &out, &["--max-rate", "2M"])?;
        // The bytes on disk (the hidden temporary file, then the file) every 250 ms.
        let mut sizes: Vec<(f64, u64)> = Vec::new();
        loop {
            sizes.push((start.elapsed().as_secs_f64(), dir_bytes(&dir)));
            if transfer.0.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let secs = start.elapsed().as_secs_f64();
        let rtts = probe.stop();
        transfer.wait_ok()?;
        bits.stop_daemon();
        self.check(&out, "rate.bin")?;
        // Every 10 s window from the first byte to the last sample.
        let first = sizes.iter().find(|(_, b)| *b > 0).map_or(0.0, |(t, _)| *t);
        let mut worst: f64 = 0.0;
        for &(t0, b0) in sizes.iter().filter(|(t, _)| *t >= first) {
            let Some(&(t1, b1)) = sizes.iter().find(|(t, _)| *t >= t0 + 10.0) else {
                break;
            };
            let rate = (b1 - b0) as f64 / (t1 - t0);
            let error = rate / MAX_RATE - 1.0;
            if error.abs() > worst.abs() {
                worst = error;
            }
        }
        self.record(Case::BitsMaxRate, RATE_SIZE as f64 / secs, rtts, Some(worst));
        Ok(())
    }

    fn curl_up_alone(&mut self) -> Result<()> {
        let probe = Probe::start()?;
        let timed = self.timed_upload();
        let rtts = probe.stop();
        let rate = self.checked(timed?)?;
        self.record(Case::UpAlone, rate, rtts, None);
        Ok(())
    }

    fn curl_up_with_bits(&mut self) -> Result<()> {
        let dir = self.fresh("up-bits")?;
        let bits = Bits::new(&self.bits, &dir);
        // Under a folder of its own on the server: its bytes there (the
        // session's partial file) are what it has sent.
        let sent = self.work.join(format!("serve/{}", self.seq));
        fs::create_dir_all(&sent)?;
        let url = format!("http://127.0.0.1:{SERVE_PORT}/{}/big.bin", self.seq);
        let start = Instant::now();
        let mut background = bits.upload(&self.data.join("big.bin"), &url)?;
        std::thread::sleep(HEAD_START);
        let (head, before) = (start.elapsed().as_secs_f64(), tree_bytes(&sent));
        let probe = Probe::start()?;
        let timed = self.timed_upload();
        let rtts = probe.stop();
        let (window, beside) = (start.elapsed().as_secs_f64() - head, tree_bytes(&sent));
        background.kill();
        bits.stop_daemon();
        let _ = fs::remove_dir_all(&sent);
        ensure!(
            before > 0,
            "the bits background upload sent nothing in {head:.1} s"
        );
        let background = (
            before as f64 / head,
            beside.saturating_sub(before) as f64 / window,
        );
        let rate = self.checked(timed?)?;
        self.record_with(Case::UpWithBits, rate, rtts, None, Some(background));
        Ok(())
    }

    fn curl_up_with_curl(&mut self) -> Result<()> {
        let mut background = Proc(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-T"])
                .arg(self.data.join("big.bin"))
                .arg(format!("http://127.0.0.1:{DAV_PORT}/dav/{}-big.bin", self.seq))
                .stdin(Stdio::null())
                .spawn()?,
        );
        std::thread::sleep(HEAD_START);
        let probe = Probe::start()?;
        let timed = self.timed_upload();
        let rtts = probe.stop();
        background.kill();
        let rate = self.checked(timed?)?;
        self.record(Case::UpWithCurl, rate, rtts, None);
        Ok(())
    }

    fn report(&self, runs: usize) -> String {
        let med = |case: Case, f: fn(&Row) -> f64| -> f64 {
            median(self.rows.iter().filter(|r| r.case == case).map(f).collect())
        };
        let rounds = |case: Case| -> Vec<&Row> { self.rows.iter().filter(|r| r.case == case).collect() };
        // Per-round ratios against that round's curl alone (its download,
        // or its upload).
        let per_round = |case: Case| -> Vec<f64> {
            let alone = rounds(match case {
                Case::UpWithBits | Case::UpWithCurl => Case::UpAlone,
                _ => Case::CurlAlone,
            });
            let with = rounds(case);
            alone.iter().zip(&with).map(|(a, w)| w.rate / a.rate).collect()
        };
        let ratio = |case: Case| -> f64 { median(per_round(case)) };
        let each = |case: Case| -> String {
            let v: Vec<String> = per_round(case)
                .iter()
                .map(|r| format!("{:.0}", r * 100.0))
                .collect();
            format!("{} %", v.join(", "))
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<!-- generated by `cargo xtask bench --background`; do not edit -->\n\
             # Background jobs yielding to other traffic\n\n\
             `cargo xtask bench --background --runs {runs} --cc {cc}`: a network namespace of its own, its \
             loopback at MTU 1500, what the servers send (nginx's data, the probe's replies) and what \
             the uploads send (to nginx's WebDAV `PUT` and to `bits serve`, on ports of their own) \
             through one `tbf` {RATE_MBIT} Mbit/s with a {QUEUE_MS} ms queue on an ifb at lo's ingress (so, \
             as at a router, the queue is not the sending socket's own; ACKs and requests pass \
             unshaped), TCP congestion control {cc} (nginx and the uploading clients send with it), \
             nginx (http, sendfile), `bits serve` (http) and the clients on 127.0.0.1 inside it; medians \
             of {runs} interleaved rounds. Queueing delay: a 1-byte TCP ping through the bottleneck every \
             100 ms while the measured flow runs (its SHA-256 check comes after), its RTT above the idle \
             path's ({:.2} ms). bits jobs are NORMAL (background) \
             priority; every download, and every upload curl finished, is SHA-256-checked.\n\n\
             | case | MB/s | of the link | added delay, median | p95 |\n\
             | --- | ---: | ---: | ---: | ---: |",
            self.base_rtt,
            cc = self.cc,
        );
        for case in Case::ALL {
            let rate = med(case, |r| r.rate);
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.0} % | {:.1} ms | {:.1} ms |",
                case.label(),
                rate / 1e6,
                rate / LINK * 100.0,
                med(case, |r| r.delay_median),
                med(case, |r| r.delay_p95),
            );
        }
        let with_bits = ratio(Case::CurlWithBits);
        let with_curl = ratio(Case::CurlWithCurl);
        let up_with_bits = ratio(Case::UpWithBits);
        let up_with_curl = ratio(Case::UpWithCurl);
        let bits_link = med(Case::BitsAlone, |r| r.rate) / LINK;
        let bits_delay = med(Case::BitsAlone, |r| r.delay_median);
        let worst_window = rounds(Case::BitsMaxRate)
            .iter()
            .filter_map(|r| r.window_error)
            .fold(0.0f64, |w, e| if e.abs() > w.abs() { e } else { w });
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        let _ = writeln!(
            s,
            "\n| goal | measured | |\n| --- | ---: | --- |\n\
             | curl beside bits keeps ≥ 90 % of its throughput alone | {:.0} % (rounds {}) | {} |\n\
             | (reference: curl beside a second curl, which does not yield) | {:.0} % (rounds {}) | |\n\
             | bits alone uses ≥ 90 % of the link | {:.0} % | {} |\n\
             | bits alone adds ≤ 80 ms of queueing delay (median) | {:.1} ms | {} |\n\
             | `--max-rate 2M` within 5 % over every 10 s window | worst {:+.1} % | {} |\n\
             | curl's upload beside a bits background upload keeps ≥ 90 % of its throughput alone | \
             {:.0} % (rounds {}) | {} |\n\
             | (reference: curl's upload beside a second curl upload) | {:.0} % (rounds {}) | |",
            with_bits * 100.0,
            each(Case::CurlWithBits),
            verdict(with_bits >= 0.90),
            with_curl * 100.0,
            each(Case::CurlWithCurl),
            bits_link * 100.0,
            verdict(bits_link >= 0.90),
            bits_delay,
            verdict(bits_delay <= 80.0),
            worst_window * 100.0,
            verdict(worst_window.abs() <= 0.05),
            up_with_bits * 100.0,
            each(Case::UpWithBits),
            verdict(up_with_bits >= 0.90),
            up_with_curl * 100.0,
            each(Case::UpWithCurl),
        );
        let _ = writeln!(
            s,
            "\nbits alone's time includes its start (the CLI, the daemon on demand, the controller's \
             slow start from two segments); a curl beside another flow starts {} s after it; curl's \
             throughput is what it fetched in at most {FG_SECONDS} s. The reference (4) is the same \
             measurement beside a flow that does not yield: its curl joins a {QUEUE_MS} ms drop-tail queue \
             the first flow keeps full, leaves slow start on the first losses, and {cc} shares out over \
             tens of seconds (each of its cycles takes seconds at this RTT), so in its first \
             {FG_SECONDS} s it gets far less than the half it converges towards.",
            HEAD_START.as_secs(),
            cc = self.cc,
        );
        let background: Vec<(f64, f64)> = rounds(Case::UpWithBits)
            .iter()
            .filter_map(|r| r.background)
            .collect();
        let mbs = |v: Vec<String>| v.join(", ");
        let _ = writeln!(
            s,
            "\nUploads (6-8) are the same measurements the other way: curl `-T` of the same {} MiB file \
             to nginx's WebDAV `PUT`, for at most {FG_SECONDS} s; when time runs out its throughput counts \
             the bytes nginx's TCP had acknowledged (`ss`'s `bytes_acked`), not those still in curl's \
             socket buffer or the queue. The bits background upload (7) is a NORMAL-priority upload job \
             (the BITS upload protocol) to `bits serve`, which paces its writes with a LEDBAT controller \
             fed by the sender's RTT; it sent {} MB/s in its {} s head start and {} MB/s beside curl \
             (per round, from the session's bytes on the server's disk). The upload goal is the download \
             goal (3) carried over to uploads: the issue states it for downloads only.",
            FG_SIZE >> 20,
            mbs(background.iter().map(|b| format!("{:.2}", b.0 / 1e6)).collect()),
            HEAD_START.as_secs(),
            mbs(background.iter().map(|b| format!("{:.2}", b.1 / 1e6)).collect()),
        );
        s
    }
}

/// A timed curl: its throughput (bytes a second) and, when it finished, the
/// file to check against `fg.bin` (and whether to remove it then).
struct Timed {
    rate: f64,
    whole: Option<PathBuf>,
    remove: bool,
}

/// What the established TCP connections to 127.0.0.1:`dport` of process
/// `pid` had sent and had acknowledged (`bytes_acked`, from `ss -tinp`).
fn acked_bytes(dport: u16, pid: u32) -> Result<u64> {
    let out = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .arg(format!("dport = :{dport}"))
        .output()
        .context("starting ss")?;
    ensure!(out.status.success(), "ss failed ({})", out.status);
    // A socket's line, then its TCP_INFO on an indented line.
    let ours = format!("pid={pid},");
    let mut total = 0;
    let mut theirs = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.starts_with(char::is_whitespace) {
            theirs = line.contains(&ours);
        } else if theirs {
            if let Some(n) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_acked:"))
            {
                total += n.parse::<u64>().context("ss's bytes_acked")?;
            }
        }
    }
    ensure!(total > 0, "no connection of pid {pid} to port {dport} in `ss`");
    Ok(total)
}

/// The bytes of the files under `dir`, hidden ones included, at any depth.
fn tree_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => tree_bytes(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The bytes of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned())
}

fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// A child killed (by pid) and reaped on drop.
struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn wait_ok(&mut self) -> Result<()> {
        let status = self.0.wait()?;
        ensure!(status.success(), "exited with {status}");
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// bits with a store of its own (its daemon started on demand).
struct Bits {
    bits: PathBuf,
    store: PathBuf,
}

impl Bits {
    fn new(bits: &Path, dir: &Path) -> Bits {
        Bits {
            bits: bits.to_path_buf(),
            store: dir.join("store"),
        }
    }

    /// `bits transfer --priority normal URL LOCAL EXTRA`, running.
    fn transfer(&self, url: &str, local: &Path, extra: &[&str]) -> Result<Proc> {
        let child = Command::new(&self.bits)
            .arg("--store")
            .arg(&self.store)
            .args(["transfer", "--priority", "normal"])
            .args(extra)
            .arg(url)
            .arg(local)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting bits transfer")?;
        Ok(Proc(child))
    }

    /// `bits transfer --priority normal --upload FILE URL`, running.
    fn upload(&self, file: &Path, url: &str) -> Result<Proc> {
        let child = Command::new(&self.bits)
            .arg("--store")
            .arg(&self.store)
            .args(["transfer", "--priority", "normal", "--upload"])
            .arg(file)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting bits transfer --upload")?;
        Ok(Proc(child))
    }

    fn stop_daemon(&self) {
        let _ = Command::new(&self.bits)
            .arg("--store")
            .arg(&self.store)
            .args(["daemon", "--stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// nginx on 127.0.0.1:HTTP_PORT (http, sendfile), serving `root`; stopped
/// on drop.
fn start_nginx(work: &Path, root: &Path) -> Result<util::Nginx> {
    let dir = work.join("nginx");
    fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    let conf = format!(
        r#"user root root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    sendfile on;
    keepalive_timeout 65;
    server {{
        listen 127.0.0.1:{HTTP_PORT};
        root {root};
        location / {{ }}
    }}
    server {{
        listen 127.0.0.1:{DAV_PORT};
        {dav}
    }}
}}
"#,
        root = root.display(),
        dav = util::nginx_dav_location(&dir.join("dav")),
    );
    util::Nginx::start(&dir, &conf, HTTP_PORT)
}

/// `bits serve` (plain http) on 127.0.0.1:SERVE_PORT, its root
/// `work/serve`; killed on drop.
fn start_serve(work: &Path, bits: &Path) -> Result<Proc> {
    let root = work.join("serve");
    fs::create_dir_all(&root)?;
    let log = work.join("serve.log");
    let child = Command::new(bits)
        .arg("--store")
        .arg(work.join("serve-store"))
        .arg("serve")
        .arg("--root")
        .arg(&root)
        .args(["--listen", &format!("127.0.0.1:{SERVE_PORT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting bits serve")?;
    let mut serve = Proc(child);
    util::await_listening(&mut serve.0, SERVE_PORT, "bits serve", &log)?;
    Ok(serve)
}

/// A TCP echo server on 127.0.0.1:ECHO_PORT, a thread per connection.
fn echo_server() -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", ECHO_PORT))?;
    Ok(std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.set_nodelay(true);
                let mut byte = [0u8; 1];
                while conn.read_exact(&mut byte).is_ok() {
                    if conn.write_all(&byte).is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

/// The probe: a 1-byte ping through the bottleneck every 100 ms on one TCP
/// connection; [`Probe::stop`] gives the RTTs in ms.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<f64>>,
}

impl Probe {
    fn start() -> Result<Probe> {
        let mut conn = TcpStream::connect(("127.0.0.1", ECHO_PORT))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rtts = Vec::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let mut byte = [7u8; 1];
                if conn.write_all(&byte).is_err() || conn.read_exact(&mut byte).is_err() {
                    break;
                }
                rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
                next += Duration::from_millis(100);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            rtts
        });
        Ok(Probe { stop, thread })
    }

    fn stop(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
