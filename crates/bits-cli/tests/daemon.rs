//! The daemon: one per store, `ready` in the foreground, clean SIGTERM, and
//! nothing lost to `kill -9`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use bits_testkit::http::{HttpServer, Route};
use support::{content, Env};

/// A job downloading a throttled 1.5 MB file, resumed and under way.
fn slow_job(env: &Env, server: &HttpServer, len: usize) -> (String, Vec<u8>) {
    let body = content(len, 9);
    server.set(
        "/slow",
        Route::body(body.clone())
            .etag("\"slow-v1\"")
            .throttle(16 * 1024, Duration::from_millis(15)),
    );
    let id = env.create("slow");
    env.add_file(&id, &server.url("/slow"), "slow.bin");
    env.run(&["resume", &id]).ok();
    (id, body)
}

#[test]
fn foreground_daemon_says_ready_and_is_alone() {
    let env = Env::new();
    let mut child = support::spawn_ready(
        env.cmd(&["daemon", "--foreground"]).stderr(Stdio::null()),
        String::new,
    );
    assert_eq!(env.daemon_pid(), Some(child.id() as i32));
    // A second one refuses, naming the first.
    let r = env.run(&["daemon", "--foreground"]).fails(1, "0x800700AA");
    assert!(r.stderr.contains(&child.id().to_string()), "{r:?}");
    env.run(&["daemon"]).fails(1, "0x800700AA");
    support::kill(child.id() as i32, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!env.store.join("daemon.sock").exists());

    // `bits daemon` detaches one, which answers and logs.
    let r = env.run(&["daemon"]).ok();
    assert!(r.stdout.contains("running"), "{r:?}");
    assert!(env.daemon_pid().is_some());
}

#[test]
fn sigterm_saves_progress_and_the_job_resumes_later() {
    let env = Env::new();
    let server = HttpServer::start();
    let (id, body) = slow_job(&env, &server, 1_500_000);
    env.wait_for(&id, Duration::from_secs(20), |i| {
        i["bytes_transferred"].as_u64().unwrap_or(0) > 100_000
    });
    env.kill_daemon("TERM");
    let info = env.info(&id);
    assert_eq!(info["state"], "QUEUED", "{info:#}");
    let saved = info["bytes_transferred"].as_u64().unwrap();
    assert!(saved > 100_000, "{info:#}");
    server.clear_requests();
    // `wait` starts the daemon again; it carries on from the bytes on disk.
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("slow.bin")).unwrap(), body);
    let resumed = server.requests_for("/slow");
    assert!(
        resumed.iter().any(|r| r.range().is_some_and(|h| h != "bytes=0-")),
        "{resumed:?}"
    );
}

#[test]
fn kill_9_mid_transfer_loses_nothing() {
    let env = Env::new();
    let server = HttpServer::start();
    let (id, body) = slow_job(&env, &server, 1_500_000);
    assert!(server.wait_until(Duration::from_secs(20), |s| s.bytes_sent() > 300_000));
    env.kill_daemon("KILL");
    assert!(env.daemon_pid().is_none());
    let info = env.info(&id);
    assert!(
        ["TRANSFERRING", "CONNECTING"].contains(&info["state"].as_str().unwrap()),
        "{info:#}"
    );
    server.clear_requests();
    env.run(&["wait", &id]).ok();
    let info = env.info(&id);
    assert_eq!(info["state"], "TRANSFERRED");
    assert_eq!(info["bytes_transferred"], 1_500_000);
    let requests = server.requests_for("/slow");
    let first = requests.first().expect("the new daemon asked again");
    let start: u64 = first
        .range()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    assert!(start > 0, "resumed from the bytes on disk: {requests:?}");
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("slow.bin")).unwrap(), body);
}

/// The hidden temporary file of `name` in `dir` (`.NAME.bits-…tmp`), if any.
fn temp_of(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    let prefix = format!(".{name}.bits-");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
}

#[test]
fn kill_9_with_eight_files_in_flight_resumes_each_from_its_own_bytes() {
    let env = Env::new();
    let server = HttpServer::start();
    let len = 600_000;
    let id = env.create("eight");
    let bodies: Vec<Vec<u8>> = (0..8).map(|k| content(len, 20 + k as u8)).collect();
    for (k, body) in bodies.iter().enumerate() {
        let path = format!("/p{k}");
        let route = Route::body(body.clone()).etag(format!("\"p{k}\""));
        server.set(&path, route.throttle(8 * 1024, Duration::from_millis(10)));
        env.add_file(&id, &server.url(&path), &format!("p{k}.bin"));
    }
    env.run(&["resume", &id]).ok();
    assert!(server.wait_until(Duration::from_secs(30), |s| s.bytes_sent() > 8 * 100_000));
    env.kill_daemon("KILL");
    assert!(server.max_in_flight() >= 2, "files ran one at a time");
    // What each file holds at the kill: nothing writes to them any more.
    let held: Vec<u64> = (0..8)
        .map(|k| temp_of(&env.path(""), &format!("p{k}.bin")).map_or(0, |t| t.metadata().unwrap().len()))
        .collect();
    assert!(held.iter().filter(|&&b| b > 0).count() >= 2, "{held:?}");
    server.clear_requests();
    env.run(&["wait", &id]).ok();
    assert_eq!(env.info(&id)["state"], "TRANSFERRED");
    for (k, &had) in held.iter().enumerate() {
        let first = server.requests_for(&format!("/p{k}"));
        let range = first.first().and_then(|r| r.range()).map(str::to_owned);
        if had as usize == len {
            // Whole before the kill: asked from its full length, or not at all.
            assert!(
                range.is_none() || range == Some(format!("bytes={len}-")),
                "file {k}: {range:?}"
            );
        } else {
            assert_eq!(range, (had > 0).then(|| format!("bytes={had}-")), "file {k}");
        }
    }
    env.run(&["complete", &id]).ok();
    for (k, body) in bodies.iter().enumerate() {
        assert_eq!(
            &std::fs::read(env.path(&format!("p{k}.bin"))).unwrap(),
            body,
            "file {k}"
        );
    }
}

#[test]
fn monitor_follows_until_settled() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/m", Route::body(content(200_000, 5)));
    let id = env.create("mon");
    env.add_file(&id, &server.url("/m"), "m");
    env.run(&["resume", &id]).ok();
    let r = env.run(&["monitor", &id]).ok();
    assert!(r.stdout.contains("TRANSFERRED"), "{r:?}");
    let r = env.run(&["monitor"]).ok();
    assert!(r.stdout.contains("no active jobs"), "{r:?}");
}

#[test]
fn ctrl_c_during_transfer_suspends_the_job_and_keeps_its_bytes() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set(
        "/slow",
        Route::body(content(2_000_000, 8)).throttle(16 * 1024, Duration::from_millis(20)),
    );
    let local = env.path("slow.bin");
    let child = env
        .cmd(&[
            "transfer",
            "--json",
            "--name",
            "interrupted",
            &server.url("/slow"),
            local.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(server.wait_until(Duration::from_secs(20), |s| s.bytes_sent() > 100_000));
    support::kill(child.id() as i32, "INT");
    let r = support::to_run(child.wait_with_output().unwrap()).fails(130, "0x800704C7");
    assert!(r.stderr.contains("suspended"), "{r:?}");
    assert_eq!(r.json()["state"], "SUSPENDED");
    let info = env.info("interrupted");
    assert_eq!(info["state"], "SUSPENDED");
    assert!(!local.exists());
    assert_eq!(Env::temp_files(&env.data).len(), 1);
    env.run(&["cancel", "interrupted"]).ok();
}

#[test]
fn daemon_stop_saves_jobs_and_the_next_daemon_resumes_them() {
    let env = Env::new();
    // Nothing to stop is not an error.
    env.run(&["daemon", "--stop"]).ok();
    let server = HttpServer::start();
    let (id, body) = slow_job(&env, &server, 1_500_000);
    let pid = env.daemon_pid().expect("resume started a daemon");
    env.wait_for(&id, Duration::from_secs(20), |j| {
        j["bytes_transferred"].as_u64() > Some(0)
    });
    let r = env.run(&["daemon", "--stop"]).ok();
    assert!(
        r.stderr.contains("stopped") || r.stdout.contains("stopped"),
        "{r:?}"
    );
    assert!(support::wait_gone(pid, Duration::from_secs(10)));
    assert!(!env.store.join("daemon.sock").exists());
    assert_eq!(env.info(&id)["state"], "QUEUED");
    // `wait` starts a new daemon, which finishes the job from the bytes kept.
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("slow.bin")).unwrap(), body);
}

#[test]
fn a_subscriber_is_woken_by_every_state_change() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let env = Env::new();
    let server = HttpServer::start();
    let (id, _) = slow_job(&env, &server, 1_500_000);
    let mut sock = UnixStream::connect(env.store.join("daemon.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    sock.write_all(b"{\"request\":\"subscribe\"}\n").unwrap();
    let mut lines = BufReader::new(sock.try_clone().unwrap()).lines();
    let reply = lines.next().unwrap().unwrap();
    assert!(reply.contains("\"code\":0"), "{reply}");
    // A change made through the daemon wakes the subscriber.
    env.run(&["suspend", &id]).ok();
    assert_eq!(lines.next().unwrap().unwrap(), "{\"changed\":true}");
    env.run(&["cancel", &id]).ok();
    assert_eq!(lines.next().unwrap().unwrap(), "{\"changed\":true}");
}

/// Sends one raw request line to the daemon of `env` and returns its reply.
fn request(env: &Env, line: &str) -> String {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let mut sock = UnixStream::connect(env.store.join("daemon.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    writeln!(sock, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(sock).read_line(&mut reply).unwrap();
    reply
}

/// Sends `transfer`'s request for job `id`, as `bits transfer` does.
fn request_transfer(env: &Env, id: &str) {
    let reply = request(env, &format!("{{\"request\":\"transfer\",\"id\":\"{id}\"}}"));
    assert!(reply.contains("\"code\":0"), "{reply}");
}

#[test]
fn the_daemon_completes_a_transfer_job_and_answers_its_complete() {
    let env = Env::new();
    let server = HttpServer::start();
    let (id, body) = slow_job(&env, &server, 300_000);
    request_transfer(&env, &id);
    // Nobody sends `complete`: the daemon moves the file to LOCAL itself.
    let info = env.wait_for(&id, Duration::from_secs(30), |j| j["state"] == "ACKNOWLEDGED");
    assert_eq!(info["files"][0]["completed"], true);
    assert_eq!(std::fs::read(env.path("slow.bin")).unwrap(), body);
    assert!(Env::temp_files(&env.data).is_empty());
    // The `complete` of the command that asked gets the completion's
    // result, once; after that the job is final as any other.
    env.run(&["complete", &id]).ok();
    env.run(&["complete", &id]).fails(2, "0x80200002");
}

#[test]
fn an_operation_on_a_transfer_job_withdraws_its_completion() {
    let env = Env::new();
    let server = HttpServer::start();
    let (id, _) = slow_job(&env, &server, 1_000_000);
    request_transfer(&env, &id);
    // As Ctrl-C in `transfer` does: suspend, and later resume by hand.
    env.run(&["suspend", &id]).ok();
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    assert_eq!(env.info(&id)["state"], "TRANSFERRED");
    assert!(!env.path("slow.bin").exists());
    env.run(&["complete", &id]).ok();
    assert!(env.path("slow.bin").exists());
}
