//! The life of a job through the real binary and daemon: create, add files,
//! resume, wait, complete; cancel; HTTP errors; `transfer --json`; two
//! stores side by side.

mod support;

use std::time::Duration;

use bits_testkit::http::{HttpServer, Route};
use support::{content, Env};

#[test]
fn create_add_resume_wait_complete() {
    let env = Env::new();
    let server = HttpServer::start();
    let a = content(300_000, 1);
    let b = content(5_000, 2);
    server.set("/a.bin", Route::body(a.clone()).etag("\"a1\""));
    server.set("/b.bin", Route::body(b.clone()));

    let id = env.create("nightly");
    let info = env.info(&id);
    assert_eq!(info["state"], "SUSPENDED");
    assert_eq!(info["files_total"], 0);

    let la = env.path("a.bin");
    env.run(&["add-file", "nightly", &server.url("/a.bin"), la.to_str().unwrap()])
        .ok();
    // A relative LOCAL is taken from the current directory.
    env.cmd(&["add-file", &id, &server.url("/b.bin"), "b.bin"])
        .current_dir(&env.data)
        .status()
        .unwrap();
    let info = env.info(&id);
    assert_eq!(info["files_total"], 2);
    assert_eq!(
        info["files"][1]["local_name"],
        env.path("b.bin").to_str().unwrap()
    );
    assert_eq!(info["bytes_total"], serde_json::Value::Null);

    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    let info = env.info(&id);
    assert_eq!(info["state"], "TRANSFERRED");
    assert_eq!(info["bytes_total"], 305_000);
    assert_eq!(info["bytes_transferred"], 305_000);
    assert_eq!(info["files_transferred"], 2);
    // Nothing at LOCAL before complete.
    assert!(!la.exists());
    assert!(!env.path("b.bin").exists());

    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(&la).unwrap(), a);
    assert_eq!(std::fs::read(env.path("b.bin")).unwrap(), b);
    assert!(Env::temp_files(&env.data).is_empty());
    let info = env.info(&id);
    assert_eq!(info["state"], "ACKNOWLEDGED");

    // Final jobs leave `list`, stay in `list --all` and `info`, until pruned.
    let list = env.run(&["list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 0);
    let all = env.run(&["list", "--all", "--json"]).ok().json();
    assert_eq!(all[0]["id"], id.as_str());
    env.run(&["complete", &id]).fails(2, "0x80200002");
    env.run(&["prune", "--older-than", "0"]).ok();
    env.run(&["info", &id]).fails(2, "0x80200001");
}

#[test]
fn cancel_removes_temporary_files() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set(
        "/slow",
        Route::body(content(2_000_000, 3)).throttle(16 * 1024, Duration::from_millis(20)),
    );
    let id = env.create("slow");
    let local = env.path("slow.bin");
    env.run(&["add-file", &id, &server.url("/slow"), local.to_str().unwrap()])
        .ok();
    env.run(&["resume", &id]).ok();
    env.wait_for(&id, Duration::from_secs(20), |i| {
        i["bytes_transferred"].as_u64().unwrap_or(0) > 0
    });
    assert!(!Env::temp_files(&env.data).is_empty());
    env.run(&["cancel", &id]).ok();
    assert_eq!(env.info(&id)["state"], "CANCELLED");
    assert!(Env::temp_files(&env.data).is_empty(), "temp files left");
    assert!(!local.exists());
    env.run(&["resume", &id]).fails(2, "0x80200002");
}

#[test]
fn http_404_is_an_error_with_its_code() {
    let env = Env::new();
    let server = HttpServer::start();
    let id = env.create("missing");
    let local = env.path("x.bin");
    env.run(&["add-file", &id, &server.url("/nothing"), local.to_str().unwrap()])
        .ok();
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).fails(1, "0x80190194");
    let info = env.info(&id);
    assert_eq!(info["state"], "ERROR");
    assert_eq!(info["error"]["code"], "0x80190194");
    assert_eq!(info["error"]["context"], "REMOTE_FILE");
    assert_eq!(info["error"]["file_index"], 0);
    assert!(!local.exists());

    // Fix the URL and resume: the same job finishes.
    server.set("/fixed", Route::body("fixed"));
    env.run(&[
        "replace-remote-prefix",
        &id,
        &server.url("/nothing"),
        &server.url("/fixed"),
    ])
    .ok();
    let r = env
        .run(&["replace-remote-prefix", &id, "http://nowhere/", "http://x/"])
        .ok();
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(&local).unwrap(), b"fixed");
}

#[test]
fn http_503_is_transient_then_error_after_no_progress_timeout() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/busy", Route::status(503));
    let id = env.create("busy");
    env.add_file(&id, &server.url("/busy"), "busy.bin");
    env.run(&["set-min-retry-delay", &id, "1"]).ok();
    assert_eq!(env.info(&id)["min_retry_delay"], 5, "stored as the floor");
    env.run(&["set-no-progress-timeout", &id, "2"]).ok();
    env.run(&["resume", &id]).ok();
    let info = env.wait_for(&id, Duration::from_secs(10), |i| {
        i["state"] == "TRANSIENT_ERROR" || i["state"] == "ERROR"
    });
    assert_eq!(
        info["state"], "TRANSIENT_ERROR",
        "first a transient error: {info:#}"
    );
    assert_eq!(info["error"]["code"], "0x801901F7");
    env.run(&["wait", &id]).fails(1, "0x801901F7");
    let info = env.info(&id);
    assert_eq!(info["state"], "ERROR");
    assert_eq!(info["error"]["code"], "0x801901F7");
}

#[test]
fn transfer_json_success_and_failure() {
    let env = Env::new();
    let server = HttpServer::start();
    let body = content(70_000, 4);
    server.set("/f", Route::body(body.clone()));
    let local = env.path("f.bin");
    let r = env
        .run(&[
            "transfer",
            "--json",
            "--name",
            "oneshot",
            &server.url("/f"),
            local.to_str().unwrap(),
        ])
        .ok();
    let j = r.json();
    assert_eq!(j["state"], "ACKNOWLEDGED");
    assert_eq!(j["display_name"], "oneshot");
    assert_eq!(j["type"], "DOWNLOAD");
    assert_eq!(j["priority"], "NORMAL");
    assert_eq!(j["security_flags"], 0);
    assert_eq!(j["min_retry_delay"], 600);
    assert_eq!(j["no_progress_timeout"], 1_209_600);
    assert_eq!(j["error"], serde_json::Value::Null);
    assert_eq!(j["bytes_total"], 70_000);
    assert_eq!(j["bytes_transferred"], 70_000);
    assert_eq!(j["files_total"], 1);
    assert_eq!(j["files_transferred"], 1);
    assert_eq!(j["files"][0]["remote_name"], server.url("/f"));
    assert_eq!(j["files"][0]["completed"], true);
    assert!(j["backend"].is_string());
    assert_eq!(std::fs::read(&local).unwrap(), body);

    // A fatal error: exit 1, the job stays in ERROR, nothing at LOCAL.
    let missing = env.path("missing.bin");
    let r = env.run(&[
        "--json",
        "transfer",
        "--retry-delay",
        "5",
        "--no-progress-timeout",
        "60",
        &server.url("/gone"),
        missing.to_str().unwrap(),
    ]);
    let j = r.json();
    let r = r.fails(1, "0x80190194");
    assert_eq!(j["state"], "ERROR", "{r:?}");
    assert_eq!(j["error"]["code"], "0x80190194");
    assert_eq!(j["error"]["context"], "REMOTE_FILE");
    assert_eq!(j["min_retry_delay"], 5);
    assert_eq!(j["no_progress_timeout"], 60);
    assert!(!missing.exists());
    let id = j["id"].as_str().unwrap();
    assert_eq!(env.info(id)["state"], "ERROR");
}

#[test]
fn two_stores_do_not_see_each_other() {
    let one = Env::new();
    let two = Env::new();
    let server = HttpServer::start();
    server.set("/x", Route::body("x"));
    let a = one.create("same-name");
    let b = two.create("same-name");
    for (env, id) in [(&one, &a), (&two, &b)] {
        env.run(&["add-file", id, &server.url("/x"), env.path("x").to_str().unwrap()])
            .ok();
        env.run(&["resume", id]).ok();
        env.run(&["wait", id]).ok();
    }
    assert_ne!(one.daemon_pid(), two.daemon_pid(), "a daemon per store");
    for (env, mine, theirs) in [(&one, &a, &b), (&two, &b, &a)] {
        let list = env.run(&["list", "--all", "--json"]).ok().json();
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![mine.as_str()]);
        env.run(&["info", theirs]).fails(2, "0x80200001");
        assert_eq!(env.info("same-name")["id"], mine.as_str());
    }
}

#[test]
fn priority_and_properties_round_trip() {
    let env = Env::new();
    let id = env.create("props");
    env.run(&["set-priority", &id, "high"]).ok();
    env.run(&["set-min-retry-delay", &id, "60"]).ok();
    env.run(&["set-no-progress-timeout", &id, "0"]).ok();
    env.run(&["set-security-flags", &id, "0x0200"]).ok();
    let info = env.info(&id);
    assert_eq!(info["priority"], "HIGH");
    assert_eq!(info["min_retry_delay"], 60);
    assert_eq!(info["no_progress_timeout"], 0);
    assert_eq!(info["security_flags"], 512);
    let r = env.run(&["get-security-flags", &id]).ok();
    assert_eq!(r.stdout.trim(), "0x0200");
    env.run(&["suspend", &id]).ok();
    env.run(&["resume", &id]).fails(2, "0x80200003");
    assert_eq!(env.info(&id)["state"], "SUSPENDED");
}

#[test]
fn complete_of_a_job_in_error_keeps_the_finished_files() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/one", Route::body("one"));
    let id = env.create("partial");
    let one = env.path("one");
    let two = env.path("two");
    env.run(&["add-file", &id, &server.url("/one"), one.to_str().unwrap()])
        .ok();
    env.run(&["add-file", &id, &server.url("/two"), two.to_str().unwrap()])
        .ok();
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).fails(1, "0x80190194");
    assert_eq!(env.info(&id)["error"]["file_index"], 1);
    let r = env.run(&["complete", &id]).ok();
    assert!(r.stderr.contains("0x00200017"), "{r:?}");
    assert!(r.stderr.contains("BG_S_PARTIAL_COMPLETE"), "{r:?}");
    assert_eq!(std::fs::read(&one).unwrap(), b"one");
    assert!(!two.exists());
    assert!(Env::temp_files(&env.data).is_empty());
    assert_eq!(env.info(&id)["state"], "ACKNOWLEDGED");
}

#[test]
fn higher_priority_runs_first_and_preempts() {
    let env = Env::new();
    let server = HttpServer::start();
    // Long enough to still be running when the test is done looking.
    server.set(
        "/slow",
        Route::body(content(4_000_000, 6)).throttle(4 * 1024, Duration::from_millis(20)),
    );
    let add = |name: &str, priority: &str| {
        let id = env.create(name);
        env.run(&[
            "add-file",
            &id,
            &server.url("/slow"),
            env.path(name).to_str().unwrap(),
        ])
        .ok();
        env.run(&["set-priority", &id, priority]).ok();
        id
    };
    let normal: Vec<String> = (0..4).map(|i| add(&format!("n{i}"), "normal")).collect();
    let low = add("low", "low");
    for id in &normal {
        env.run(&["resume", id]).ok();
    }
    for id in &normal {
        env.wait_for(id, Duration::from_secs(20), |i| i["state"] == "TRANSFERRING");
    }
    // Every slot is taken by a NORMAL job: the LOW one waits its turn.
    env.run(&["resume", &low]).ok();
    assert_eq!(env.info(&low)["state"], "QUEUED");
    // A HIGH job takes the slot of the youngest NORMAL one.
    let high = add("high", "high");
    env.run(&["resume", &high]).ok();
    env.wait_for(&high, Duration::from_secs(20), |i| i["state"] == "TRANSFERRING");
    let youngest = env.info(&normal[3]);
    assert_eq!(youngest["state"], "QUEUED", "{youngest:#}");
    assert_eq!(env.info(&low)["state"], "QUEUED");
    for id in normal.iter().chain([&low, &high]) {
        env.run(&["cancel", id]).ok();
    }
    assert!(Env::temp_files(&env.data).is_empty());
}

#[test]
fn a_transient_error_is_retried_after_the_retry_delay() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/flaky", Route::body("second time lucky").fail_first(1, 503));
    let id = env.create("flaky");
    let local = env.path("flaky");
    env.run(&["add-file", &id, &server.url("/flaky"), local.to_str().unwrap()])
        .ok();
    env.run(&["set-min-retry-delay", &id, "5"]).ok();
    env.run(&["resume", &id]).ok();
    env.wait_for(&id, Duration::from_secs(10), |i| i["state"] == "TRANSIENT_ERROR");
    env.run(&["wait", &id]).ok();
    assert_eq!(server.requests_for("/flaky").len(), 2);
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(&local).unwrap(), b"second time lucky");
}

#[test]
fn resume_retries_a_transient_error_at_once() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/flaky", Route::body("now").fail_first(1, 500).retry_after(3600));
    let id = env.create("flaky");
    env.add_file(&id, &server.url("/flaky"), "f");
    env.run(&["resume", &id]).ok();
    let info = env.wait_for(&id, Duration::from_secs(10), |i| i["state"] == "TRANSIENT_ERROR");
    assert_eq!(info["error"]["code"], "0x801901F4");
    // The retry timer says an hour; resume does not wait for it.
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    assert_eq!(env.info(&id)["error"], serde_json::Value::Null);
}
