//! A fleet on one machine (`fleet.md`): a real nats-server with JetStream
//! on 127.0.0.1, `bits agent`s each with a store and a root of its own,
//! and the operator's `bits fleet` commands, against the test HTTP server.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use bits_fleet::async_nats;
use bits_testkit::http::{HttpServer, Route};
use bits_testkit::nats::NatsServer;
use bits_testkit::pki::{LeafKind, TestPki};
use futures_util::StreamExt;
use serde_json::Value;
use support::{content, kill, spawn_ready, wait_gone, Env, Run};

/// One agent: its world (store, root = `env.data`) and its process.
struct Agent {
    env: Env,
    name: String,
    groups: Vec<String>,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Agent {
    fn new(name: &str, groups: &[&str]) -> Agent {
        Agent {
            env: Env::new(),
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            child: None,
            extra: Vec::new(),
        }
    }

    /// Starts `bits agent` and waits for its `ready`.
    fn start(&mut self, nats: &NatsServer) {
        self.start_at(&nats.url());
    }

    /// [`Agent::start`] on NATS at `url` (several, a `tls://` one).
    fn start_at(&mut self, url: &str) {
        let root = self.env.data.to_str().unwrap().to_string();
        let mut args = vec!["agent", "--nats", url, "--root", &root, "--name", &self.name]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        for g in &self.groups {
            args.push("--group".into());
            args.push(g.clone());
        }
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.env.tmp.path().join("agent.log"))
            .unwrap();
        let child = spawn_ready(self.env.cmd(&args).stderr(log), || {
            format!("agent {}: {}", self.name, self.log())
        });
        self.child = Some(child);
    }

    /// Its log once it holds `text` (20 s at most).
    fn log_until(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with `signal` and waits until it is gone.
    fn stop(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            kill(child.id() as i32, signal);
            wait_gone(child.id() as i32, Duration::from_secs(10));
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.tmp.path().join("agent.log")).unwrap_or_default()
    }

    /// Every job of its store.
    fn jobs(&self) -> Vec<Value> {
        self.env
            .run(&["list", "--all", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop("KILL");
    }
}

/// `bits fleet …` (no store needed: an operator's machine has none).
fn fleet(nats: &NatsServer, args: &[&str]) -> Run {
    fleet_at(&nats.url(), &[], args)
}

/// `bits fleet SUB --nats URL OPTIONS ARGS…` for `args` = `[SUB, ARGS…]`.
fn fleet_at(url: &str, options: &[&str], args: &[&str]) -> Run {
    let env = Env::new();
    let mut all = vec!["fleet", args[0], "--nats", url];
    all.extend_from_slice(options);
    all.extend_from_slice(&args[1..]);
    env.run(&all)
}

fn write_spec(dir: &std::path::Path, name: &str, spec: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, spec.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// `fleet status --json`'s rows once `cond` holds for them (20 s at most).
fn status_until(nats: &NatsServer, spec: &str, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    status_until_at(&nats.url(), &[], spec, what, cond)
}

/// [`status_until`] through `fleet_at(url, options, …)`.
fn status_until_at(
    url: &str,
    options: &[&str],
    spec: &str,
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = fleet_at(url, options, &["status", spec, "--json"]);
        let rows = if run.code == 0 {
            run.json()["agents"].as_array().unwrap().clone()
        } else {
            Vec::new()
        };
        if cond(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {rows:#?} {run:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn states(rows: &[Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["agent"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all_in(rows: &[Value], n: usize, state: &str) -> bool {
    rows.len() == n && rows.iter().all(|r| r["state"] == state)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_group_spec_lands_on_every_agent_an_agent_spec_on_one_and_a_stopped_agent_gets_both_when_back() {
    let nats = NatsServer::start();
    let server = HttpServer::start()
        .with("/a.bin", Route::body(content(200_000, 1)))
        .with("/b.bin", Route::body(content(50_000, 2)))
        .with("/c.bin", Route::body(content(70_000, 3)));
    let mut agents: Vec<Agent> = ["a1", "a2", "a3"]
        .iter()
        .map(|n| Agent::new(n, &["web"]))
        .collect();
    for a in &mut agents {
        a.start(&nats);
    }
    let tmp = tempfile::tempdir().unwrap();
    let id1 = "00000000-0000-4000-8000-000000000001";
    let spec1 = write_spec(
        tmp.path(),
        "one.json",
        &serde_json::json!({
            "id": id1,
            "display_name": "nightly",
            "files": [
                {"remote_name": server.url("/a.bin"), "local_name": "pkg/a.bin"},
                {"remote_name": server.url("/b.bin"), "local_name": "b.bin"},
            ],
        }),
    );
    let out = fleet(&nats, &["submit", "--group", "web", &spec1]).ok();
    assert_eq!(out.stdout.trim(), id1);
    let rows = status_until(&nats, id1, "three ACKNOWLEDGED", |r| all_in(r, 3, "ACKNOWLEDGED"));
    assert_eq!(
        states(&rows),
        [
            ("a1", "ACKNOWLEDGED"),
            ("a2", "ACKNOWLEDGED"),
            ("a3", "ACKNOWLEDGED")
        ]
        .map(|(a, s)| (a.to_string(), s.to_string()))
    );
    for r in &rows {
        assert_eq!(r["id"], id1);
        assert_eq!(r["bytes_transferred"], 250_000);
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    for a in &agents {
        assert_eq!(
            std::fs::read(a.env.data.join("pkg/a.bin")).unwrap(),
            content(200_000, 1)
        );
        assert_eq!(
            std::fs::read(a.env.data.join("b.bin")).unwrap(),
            content(50_000, 2)
        );
        let jobs = a.jobs();
        assert_eq!(jobs.len(), 1, "{jobs:#?}");
        assert_eq!(jobs[0]["id"], id1, "the local job has the spec's id");
    }
    // The table: one row per agent and a summary line.
    let table = fleet(&nats, &["status", id1]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("AGENT"), "{table}");
    assert!(
        lines[1].starts_with("a1") && lines[1].contains("ACKNOWLEDGED") && lines[1].contains("2/2"),
        "{table}"
    );
    assert_eq!(lines[4], "3 agents: 3 ACKNOWLEDGED");
    let listed = fleet(&nats, &["agents", "--json"]).ok().json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1", "a2", "a3"]);

    // a3 is down while a group spec and a spec for a2 alone are published.
    agents[2].stop("TERM");
    let id2 = "00000000-0000-4000-8000-000000000002";
    let spec2 = write_spec(
        tmp.path(),
        "two.json",
        &serde_json::json!({"id": id2, "files": [{"remote_name": server.url("/c.bin"), "local_name": "c.bin"}]}),
    );
    fleet(&nats, &["submit", "--group", "web", &spec2]).ok();
    let id3 = "00000000-0000-4000-8000-000000000003";
    let spec3 = write_spec(
        tmp.path(),
        "three.json",
        &serde_json::json!({"id": id3, "files": [{"remote_name": server.url("/c.bin"), "local_name": "only-a2.bin"}]}),
    );
    fleet(&nats, &["submit", "--agent", "a2", &spec3]).ok();
    status_until(&nats, id2, "a1 and a2", |r| all_in(r, 2, "ACKNOWLEDGED"));
    agents[2].start(&nats);
    let rows = status_until(&nats, id2, "a3 too", |r| all_in(r, 3, "ACKNOWLEDGED"));
    assert_eq!(rows[2]["agent"], "a3");
    let rows = status_until(&nats, id3, "a2 only", |r| all_in(r, 1, "ACKNOWLEDGED"));
    assert_eq!(rows[0]["agent"], "a2");
    assert!(agents[1].env.data.join("only-a2.bin").exists());
    for a in [&agents[0], &agents[2]] {
        assert!(!a.env.data.join("only-a2.bin").exists());
        assert_eq!(a.jobs().len(), 2, "{}", a.name);
    }
    // Specs are fetched once per agent and file.
    assert_eq!(server.requests_for("/a.bin").len(), 3);
    assert_eq!(server.requests_for("/c.bin").len(), 4);
}

#[test]
fn specs_outside_the_root_with_disallowed_flags_or_malformed_make_no_file() {
    let nats = NatsServer::start();
    let server = HttpServer::start().with("/a.bin", Route::body(content(10_000, 4)));
    let mut agent = Agent::new("solo", &[]);
    agent.start(&nats);
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside.bin");
    let escape = "00000000-0000-4000-8000-00000000000a";
    let flags = "00000000-0000-4000-8000-00000000000b";
    for (id, local, extra) in [
        (escape, outside.to_str().unwrap(), serde_json::json!(null)),
        (escape, "../x.bin", serde_json::json!(null)),
        (flags, "x.bin", serde_json::json!(8)),
    ] {
        let mut spec = serde_json::json!({"id": id, "files": [{"remote_name": server.url("/a.bin"), "local_name": local}]});
        if !extra.is_null() {
            spec["security_flags"] = extra;
        }
        let path = write_spec(tmp.path(), &format!("{id}.json"), &spec);
        fleet(&nats, &["submit", "--agent", "solo", &path]).ok();
    }
    for id in [escape, flags] {
        let rows = status_until(&nats, id, "ERROR", |r| all_in(r, 1, "ERROR"));
        assert_eq!(rows[0]["error"]["code"], "0x80070005", "{rows:#?}");
    }
    // A malformed spec published as is: acked and reported.
    let rt = runtime();
    let reason = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let mut rejected = client.subscribe("bits.rejected.solo").await.unwrap();
        client.flush().await.unwrap();
        let js = async_nats::jetstream::new(client);
        for bad in [
            &b"{\"id\":\"00000000-0000-4000-8000-00000000000c\",\"files\":[],\"oops\":1}"[..],
            b"not json",
        ] {
            js.publish("bits.jobs.agent.solo", bad.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut reasons = Vec::new();
        for _ in 0..2 {
            let m = tokio::time::timeout(Duration::from_secs(10), rejected.next())
                .await
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            reasons.push(v["reason"].as_str().unwrap().to_string());
        }
        // Acked: nothing left for the agent's consumer.
        let stream = js.get_stream("BITS_JOBS").await.unwrap();
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("solo__agent")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = consumer.info().await.unwrap();
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reasons
    });
    assert!(reason[0].contains("unknown field `oops`"), "{reason:?}");
    assert!(reason[1].contains("not a job spec"), "{reason:?}");
    // The operator's submit refuses a malformed spec before publishing.
    let bad = write_spec(
        tmp.path(),
        "bad.json",
        &serde_json::json!({"files": [], "prority": 1}),
    );
    fleet(&nats, &["submit", "--agent", "solo", &bad]).fails(2, "0x80070057");
    // Nothing fetched, nothing written; two jobs in ERROR.
    assert!(server.requests().is_empty());
    assert!(!outside.exists() && !tmp.path().join("x.bin").exists());
    assert_eq!(std::fs::read_dir(&agent.env.data).unwrap().count(), 0);
    let jobs = agent.jobs();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(jobs.iter().all(|j| j["state"] == "ERROR"));
}

#[test]
fn a_spec_delivered_again_makes_no_second_job_and_a_cancel_withdraws_one() {
    let nats = NatsServer::start();
    let server = HttpServer::start()
        .with("/a.bin", Route::body(content(30_000, 5)))
        .with(
            "/slow.bin",
            Route::body(content(4_000_000, 6)).throttle(16 * 1024, Duration::from_millis(20)),
        );
    let mut agent = Agent::new("r1", &["g"]);
    agent.start(&nats);
    let tmp = tempfile::tempdir().unwrap();
    let id = "00000000-0000-4000-8000-000000000021";
    let spec = write_spec(
        tmp.path(),
        "a.json",
        &serde_json::json!({"id": id, "files": [{"remote_name": server.url("/a.bin"), "local_name": "a.bin"}]}),
    );
    // To the group and to the agent: two deliveries of one spec.
    fleet(&nats, &["submit", "--group", "g", &spec]).ok();
    fleet(&nats, &["submit", "--agent", "r1", &spec]).ok();
    status_until(&nats, id, "ACKNOWLEDGED", |r| all_in(r, 1, "ACKNOWLEDGED"));
    // The ack lost: the agent's durable consumers are gone while it is
    // down, so every spec is delivered again when it starts.
    agent.stop("KILL");
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let stream = async_nats::jetstream::new(client)
            .get_stream("BITS_JOBS")
            .await
            .unwrap();
        stream.delete_consumer("r1__agent").await.unwrap();
        stream.delete_consumer("r1__group__g").await.unwrap();
    });
    agent.start(&nats);
    // A later spec on the same consumer: once it is in, the earlier ones were taken.
    let slow = "00000000-0000-4000-8000-000000000022";
    let slow_spec = write_spec(
        tmp.path(),
        "slow.json",
        &serde_json::json!({"id": slow, "files": [{"remote_name": server.url("/slow.bin"), "local_name": "slow.bin"}]}),
    );
    fleet(&nats, &["submit", "--agent", "r1", &slow_spec]).ok();
    status_until(&nats, slow, "TRANSFERRING", |r| {
        r.len() == 1 && r[0]["state"] == "TRANSFERRING" && r[0]["bytes_transferred"].as_u64() > Some(0)
    });
    let jobs = agent.jobs();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert_eq!(server.requests_for("/a.bin").len(), 1, "fetched once");
    // Withdrawn mid-transfer: CANCELLED, its temporary file gone, nothing at LOCAL.
    fleet(&nats, &["cancel", slow]).ok();
    status_until(&nats, slow, "CANCELLED", |r| all_in(r, 1, "CANCELLED"));
    assert!(!agent.env.data.join("slow.bin").exists());
    assert!(Env::temp_files(&agent.env.data).is_empty());
}

#[test]
fn an_agent_killed_mid_job_resumes_it_and_nats_down_mid_job_loses_no_state() {
    let mut nats = NatsServer::start();
    let server = HttpServer::start().with(
        "/big.bin",
        Route::body(content(2_000_000, 7)).throttle(16 * 1024, Duration::from_millis(40)),
    );
    let mut agent = Agent::new("k1", &["g"]);
    agent.start(&nats);
    let tmp = tempfile::tempdir().unwrap();
    let id = "00000000-0000-4000-8000-000000000031";
    let spec = write_spec(
        tmp.path(),
        "big.json",
        &serde_json::json!({"id": id, "files": [{"remote_name": server.url("/big.bin"), "local_name": "big.bin"}]}),
    );
    fleet(&nats, &["submit", "--group", "g", &spec]).ok();
    // Killed early in the job, as the agent's own store says: waiting
    // through NATS (`fleet status`) took seconds under load, and once the
    // job was nearly done its resumed rest could end before anyone saw it
    // transferring.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.jobs().is_empty() {
        assert!(Instant::now() < deadline, "the agent never took the job");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.env.wait_for(id, Duration::from_secs(20), |j| {
        j["bytes_transferred"].as_u64().unwrap_or(0) >= 100_000
    });
    agent.stop("KILL");
    agent.start(&nats);
    // NATS goes away while the job goes on, and comes back after it ended.
    // "Going on" as the agent's own store says: a `fleet status` through
    // NATS can take seconds on a busy machine, longer than the job's rest.
    agent
        .env
        .wait_for(id, Duration::from_secs(20), |j| j["state"] == "TRANSFERRING");
    nats.stop();
    agent
        .env
        .wait_for(id, Duration::from_secs(30), |j| j["state"] == "ACKNOWLEDGED");
    nats.start_again();
    let rows = status_until(&nats, id, "ACKNOWLEDGED after the outage", |r| {
        all_in(r, 1, "ACKNOWLEDGED")
    });
    assert_eq!(rows[0]["bytes_transferred"], 2_000_000);
    assert_eq!(
        std::fs::read(agent.env.data.join("big.bin")).unwrap(),
        content(2_000_000, 7)
    );
    assert_eq!(agent.jobs().len(), 1);
    // Resumed from the bytes on disk, not from 0.
    let requests = server.requests_for("/big.bin");
    assert!(requests.len() >= 2, "{}", requests.len());
    assert!(
        requests[1..].iter().any(|r| r.range().is_some()),
        "the restart asked for a range"
    );
}

/// `text` in `dir/name`, mode 0600 as a secret's; its path.
fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

/// Spec `id` fetching `url` to `local`, written in `dir`; its path.
fn one_file_spec(dir: &std::path::Path, id: &str, url: &str, local: &str) -> String {
    write_spec(
        dir,
        &format!("{id}.json"),
        &serde_json::json!({"id": id, "files": [{"remote_name": url, "local_name": local}]}),
    )
}

/// An operator's command refused at once (well within the 5 s connect
/// timeout), exit 1, naming `hresult` and `text`.
fn refused(url: &str, options: &[&str], hresult: &str, text: &str) {
    let started = Instant::now();
    let r = fleet_at(url, options, &["agents"]).fails(1, hresult);
    assert!(r.stderr.contains(text), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused after {:?}",
        started.elapsed()
    );
}

/// The names `fleet agents --json` lists.
fn agent_names(url: &str, options: &[&str]) -> Vec<String> {
    let listed = fleet_at(url, options, &["agents", "--json"]).ok().json();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_token_from_a_file_lets_agent_and_operator_in_and_a_wrong_one_is_refused_at_once() {
    let nats = NatsServer::start_with("authorization { token: \"fleet-s3cret-token\" }\n");
    let url = nats.url();
    let server = HttpServer::start().with("/t.bin", Route::body(content(20_000, 11)));
    let tmp = tempfile::tempdir().unwrap();
    let good = secret_file(tmp.path(), "token", "fleet-s3cret-token\n");
    let wrong = secret_file(tmp.path(), "wrong", "not-the-token\n");
    let ok = ["--token-file", good.as_str()];
    let mut agent = Agent::new("t1", &[]);
    agent.extra = vec!["--token-file".into(), good.clone()];
    agent.start(&nats);
    // The secret is on no command line.
    let pid = agent.child.as_ref().unwrap().id();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    let id = "00000000-0000-4000-8000-000000000041";
    let spec = one_file_spec(tmp.path(), id, &server.url("/t.bin"), "t.bin");
    fleet_at(&url, &ok, &["submit", "--agent", "t1", &spec]).ok();
    status_until_at(&url, &ok, id, "ACKNOWLEDGED", |r| all_in(r, 1, "ACKNOWLEDGED"));
    assert_eq!(
        std::fs::read(agent.env.data.join("t.bin")).unwrap(),
        content(20_000, 11)
    );
    // A wrong token, and none: refused at once, and said so.
    refused(
        &url,
        &["--token-file", &wrong],
        "0x80070005",
        "refused the credentials",
    );
    refused(&url, &[], "0x80070005", "refused the credentials");
    // An agent with the wrong one comes up (its local jobs go on) and logs why NATS is not there.
    let mut stranger = Agent::new("t2", &[]);
    stranger.extra = vec!["--token-file".into(), wrong.clone()];
    stranger.start(&nats);
    let log = stranger.log_until("refused the credentials");
    assert!(
        log.contains("--token-file") && !log.contains("not-the-token"),
        "{log}"
    );
    assert_eq!(agent_names(&url, &ok), ["t1"]);
    // Files that hold no token, or are not there: exit 2, one line, nothing done.
    let empty = secret_file(tmp.path(), "empty", "\n");
    fleet_at(&url, &["--token-file", &empty], &["agents"]).fails(2, "0x80070057");
    let missing = tmp.path().join("missing").to_str().unwrap().to_string();
    fleet_at(&url, &["--token-file", &missing], &["agents"]).fails(2, "0x80070002");
    fleet_at(&url, &["--token-file", &good, "--creds", &good], &["agents"]).fails(2, "0x80070057");
    let env = Env::new();
    let root = env.data.to_str().unwrap().to_string();
    env.run(&["agent", "--nats", &url, "--root", &root, "--token-file", &missing])
        .fails(2, "0x80070002");
    assert_eq!(env.daemon_pid(), None);
}

#[test]
fn an_nkey_seed_from_a_file_signs_in_and_a_bad_seed_is_refused_before_connecting() {
    let user = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ));
    let url = nats.url();
    let server = HttpServer::start().with("/n.bin", Route::body(content(30_000, 12)));
    let tmp = tempfile::tempdir().unwrap();
    let seed = secret_file(tmp.path(), "user.nk", &format!("{}\n", user.seed().unwrap()));
    let ok = ["--nkey", seed.as_str()];
    let mut agent = Agent::new("n1", &["g"]);
    agent.extra = vec!["--nkey".into(), seed.clone()];
    agent.start(&nats);
    let id = "00000000-0000-4000-8000-000000000042";
    let spec = one_file_spec(tmp.path(), id, &server.url("/n.bin"), "n.bin");
    fleet_at(&url, &ok, &["submit", "--group", "g", &spec]).ok();
    status_until_at(&url, &ok, id, "ACKNOWLEDGED", |r| all_in(r, 1, "ACKNOWLEDGED"));
    assert_eq!(
        std::fs::read(agent.env.data.join("n.bin")).unwrap(),
        content(30_000, 12)
    );
    // Another user's seed: the server does not know it.
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let other = secret_file(tmp.path(), "other.nk", &other);
    refused(&url, &["--nkey", &other], "0x80070005", "refused the credentials");
    // Not a user's seed, not a seed: exit 2 before any connection.
    let account = nkeys::KeyPair::new_account().seed().unwrap();
    let account = secret_file(tmp.path(), "account.nk", &account);
    let r = fleet_at(&url, &["--nkey", &account], &["agents"]).fails(2, "0x80070057");
    assert!(r.stderr.contains("not a user's"), "{r:?}");
    let garbage = secret_file(tmp.path(), "garbage.nk", "SUNOTASEED\n");
    fleet_at(&url, &["--nkey", &garbage], &["agents"]).fails(2, "0x80070057");
    let env = Env::new();
    let root = env.data.to_str().unwrap().to_string();
    env.run(&["agent", "--nats", &url, "--root", &root, "--nkey", &garbage])
        .fails(2, "0x80070057");
    assert_eq!(env.daemon_pid(), None);
}

/// JWTs of NATS's operator mode (nats-io/jwt v2 claims), signed by hand.
mod jwt {
    use base64::Engine;
    use serde_json::{json, Value};

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A JWT saying `nats` about `subject`, issued by `issuer`.
    pub fn encode(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "jti": format!("{}{iat}", &subject[1..20]),
            "iat": iat,
            "iss": issuer.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        let signed = format!(
            "{}.{}",
            b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
            b64(claims.to_string().as_bytes())
        );
        let signature = issuer.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(&signature))
    }

    pub fn operator(op: &nkeys::KeyPair) -> String {
        encode(
            op,
            &op.public_key(),
            "bits-test",
            json!({"type": "operator", "version": 2}),
        )
    }

    /// An account with no limits, and with JetStream if `jetstream` (the
    /// system account has none).
    pub fn account(op: &nkeys::KeyPair, account: &nkeys::KeyPair, name: &str, jetstream: bool) -> String {
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[k] = json!(-1);
            }
        }
        encode(
            op,
            &account.public_key(),
            name,
            json!({"type": "account", "version": 2, "limits": limits,
                   "default_permissions": {"pub": {}, "sub": {}}}),
        )
    }

    /// `user`'s `.creds` file text, the user issued by `account`.
    pub fn creds(account: &nkeys::KeyPair, user: &nkeys::KeyPair) -> String {
        let jwt = encode(
            account,
            &user.public_key(),
            "agent",
            json!({"type": "user", "version": 2, "pub": {}, "sub": {},
                   "subs": -1, "data": -1, "payload": -1}),
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
    }
}

#[test]
fn a_creds_file_signs_in_under_an_operator_and_a_user_of_an_unknown_account_is_refused() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let tmp = tempfile::tempdir().unwrap();
    let op_jwt = tmp.path().join("operator.jwt");
    std::fs::write(&op_jwt, jwt::operator(&operator)).unwrap();
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let nats = NatsServer::start_with(&format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
        op_jwt.display(),
        system.public_key(),
        system.public_key(),
        jwt::account(&operator, &system, "SYS", false),
        account.public_key(),
        jwt::account(&operator, &account, "fleet", true)
    ));
    let url = nats.url();
    let server = HttpServer::start().with("/c.bin", Route::body(content(25_000, 13)));
    let creds = secret_file(
        tmp.path(),
        "agent.creds",
        &jwt::creds(&account, &nkeys::KeyPair::new_user()),
    );
    let ok = ["--creds", creds.as_str()];
    let mut agent = Agent::new("c1", &[]);
    agent.extra = vec!["--creds".into(), creds.clone()];
    agent.start(&nats);
    let id = "00000000-0000-4000-8000-000000000043";
    let spec = one_file_spec(tmp.path(), id, &server.url("/c.bin"), "c.bin");
    fleet_at(&url, &ok, &["submit", "--agent", "c1", &spec]).ok();
    let rows = status_until_at(&url, &ok, id, "ACKNOWLEDGED", |r| all_in(r, 1, "ACKNOWLEDGED"));
    assert_eq!(rows[0]["bytes_transferred"], 25_000, "{}", nats.log());
    // A user of an account the server does not know.
    let foreign = secret_file(
        tmp.path(),
        "foreign.creds",
        &jwt::creds(&nkeys::KeyPair::new_account(), &nkeys::KeyPair::new_user()),
    );
    refused(
        &url,
        &["--creds", &foreign],
        "0x80070005",
        "refused the credentials",
    );
    let bad = secret_file(tmp.path(), "bad.creds", "just text\n");
    let r = fleet_at(&url, &["--creds", &bad], &["agents"]).fails(2, "0x80070057");
    assert!(r.stderr.contains("not a NATS credentials file"), "{r:?}");
}

/// nats-server's `tls` block serving the test PKI's `kind` leaf (its files
/// written in `dir`), plus `extra` settings.
fn tls_config(dir: &std::path::Path, kind: LeafKind, extra: &str) -> String {
    let leaf = TestPki::shared().leaf(kind);
    let cert = dir.join(format!("{}.pem", leaf.name()));
    let key = dir.join(format!("{}.key", leaf.name()));
    std::fs::write(&cert, leaf.chain_pem()).unwrap();
    std::fs::write(&key, leaf.key_pem()).unwrap();
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  {extra}\n}}\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn tls_is_verified_in_full_a_trusted_server_serves_and_an_unknown_ca_or_a_wrong_host_is_refused() {
    let pki = TestPki::shared();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root.pem");
    std::fs::write(&root, pki.root_pem()).unwrap();
    let root = root.to_str().unwrap().to_string();
    let trusted = ["--nats-ca", root.as_str()];
    let nats = NatsServer::start_with(&tls_config(tmp.path(), LeafKind::Good, ""));
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let server = HttpServer::start().with("/s.bin", Route::body(content(40_000, 14)));
    let mut agent = Agent::new("s1", &[]);
    agent.extra = vec!["--nats-ca".into(), root.clone()];
    agent.start_at(&url);
    let id = "00000000-0000-4000-8000-000000000044";
    let spec = one_file_spec(tmp.path(), id, &server.url("/s.bin"), "s.bin");
    fleet_at(&url, &trusted, &["submit", "--agent", "s1", &spec]).ok();
    status_until_at(&url, &trusted, id, "ACKNOWLEDGED", |r| {
        all_in(r, 1, "ACKNOWLEDGED")
    });
    assert_eq!(
        std::fs::read(agent.env.data.join("s.bin")).unwrap(),
        content(40_000, 14)
    );
    // The system's roots do not know the test CA.
    refused(&url, &[], "0x80072F0D", "--nats-ca");
    let mut stranger = Agent::new("s2", &[]);
    stranger.start_at(&url);
    stranger.log_until("--nats-ca");
    assert_eq!(agent_names(&url, &trusted), ["s1"]);
    // A certificate for another host, one from an unknown CA: refused even with the root.
    let wrong = NatsServer::start_with(&tls_config(tmp.path(), LeafKind::WrongHost, ""));
    let wrong_url = format!("tls://127.0.0.1:{}", wrong.port());
    refused(&wrong_url, &trusted, "0x80072F06", "not valid for name");
    let rogue = NatsServer::start_with(&tls_config(tmp.path(), LeafKind::UnknownCa, ""));
    let rogue_url = format!("tls://127.0.0.1:{}", rogue.port());
    refused(&rogue_url, &trusted, "0x80072F0D", "UnknownIssuer");
    // A server that verifies clients: the test client certificate gets in, no certificate does not.
    let files = pki.client_files();
    let mtls = NatsServer::start_with(&tls_config(
        tmp.path(),
        LeafKind::Good,
        &format!("ca_file: \"{}\"\n  verify: true", files.client_root_pem.display()),
    ));
    let mtls_url = format!("tls://127.0.0.1:{}", mtls.port());
    let cert = files.cert_pem.to_str().unwrap();
    let key = files.key_pem.to_str().unwrap();
    let with_cert = ["--nats-ca", root.as_str(), "--nats-cert", cert, "--nats-key", key];
    assert!(agent_names(&mtls_url, &with_cert).is_empty());
    refused(&mtls_url, &trusted, "0x80072F8F", "--nats-cert");
    fleet_at(&mtls_url, &["--nats-cert", cert], &["agents"]).fails(2, "0x80070057");
}

#[test]
fn progress_reaches_the_state_bucket_at_most_once_a_second_and_every_state_change_at_once() {
    let nats = NatsServer::start();
    let len = 3_000_000;
    let server = HttpServer::start().with(
        "/slow.bin",
        Route::body(content(len, 15)).throttle(16 * 1024, Duration::from_millis(20)),
    );
    let mut agent = Agent::new("p1", &[]);
    agent.start(&nats);
    let id = "00000000-0000-4000-8000-000000000051";
    // Every write of the job's key, as the stream takes it.
    let (subscribed, ready) = std::sync::mpsc::channel();
    let url = nats.url();
    let watcher = std::thread::spawn(move || {
        runtime().block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            let mut writes = client.subscribe(format!("$KV.BITS_STATE.{id}.p1")).await.unwrap();
            client.flush().await.unwrap();
            subscribed.send(()).unwrap();
            let mut seen: Vec<(Instant, Value)> = Vec::new();
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(60), writes.next()).await {
                let view: Value = serde_json::from_slice(&m.payload).unwrap();
                let last = view["state"] == "ACKNOWLEDGED";
                seen.push((Instant::now(), view));
                if last {
                    break;
                }
            }
            seen
        })
    });
    ready.recv_timeout(Duration::from_secs(10)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let spec = one_file_spec(tmp.path(), id, &server.url("/slow.bin"), "slow.bin");
    fleet(&nats, &["submit", "--agent", "p1", &spec]).ok();
    let writes = watcher.join().unwrap();
    let states: Vec<&str> = writes.iter().map(|(_, v)| v["state"].as_str().unwrap()).collect();
    assert_eq!(states.last(), Some(&"ACKNOWLEDGED"), "{states:?}");
    let mut changes = states.clone();
    changes.dedup();
    let progress: std::collections::BTreeSet<u64> = writes
        .iter()
        .filter(|(_, v)| v["state"] == "TRANSFERRING")
        .filter_map(|(_, v)| v["bytes_transferred"].as_u64())
        .filter(|b| *b > 0 && *b < len as u64)
        .collect();
    let span = writes.last().unwrap().0 - writes[0].0;
    eprintln!(
        "{} writes in {span:?}: states {changes:?}, {} progress values: {progress:?}",
        writes.len(),
        progress.len()
    );
    assert!(span > Duration::from_secs(2), "the job took {span:?}");
    assert!(progress.len() >= 2, "progress written more than once: {states:?}");
    // At most one progress write a second, beside one write per state change.
    let bound = span.as_secs() as usize + 1 + changes.len() + 2;
    assert!(
        writes.len() <= bound,
        "{} writes > {bound}: {states:?}",
        writes.len()
    );
}
