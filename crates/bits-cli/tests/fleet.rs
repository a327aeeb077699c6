//! A fleet on one machine (`fleet.md`): a real nats-server with JetStream
//! on 127.0.0.1, `bits agent`s each with a store and a root of its own,
//! and the operator's `bits fleet` commands, against the test HTTP server.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use bits_fleet::async_nats;
use bits_testkit::http::{HttpServer, Route};
use bits_testkit::nats::NatsServer;
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
        Route::body(content(2_000_000, 7)).throttle(16 * 1024, Duration::from_millis(25)),
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
    status_until(&nats, id, "bytes moving", |r| {
        r.len() == 1 && r[0]["bytes_transferred"].as_u64().unwrap_or(0) >= 100_000
    });
    agent.stop("KILL");
    agent.start(&nats);
    // NATS goes away while the job goes on, and comes back after it ended.
    status_until(&nats, id, "running again", |r| {
        r.len() == 1 && r[0]["state"] == "TRANSFERRING"
    });
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
