//! What `info --json` shows while a job runs, through the real binary and
//! daemon: a finished file shows as completed (and its bytes are kept)
//! while the next file is still downloading, and after a suspend.

mod support;

use std::time::{Duration, Instant};

use bits_testkit::http::{HttpServer, Route};
use serde_json::Value;
use support::{content, Env};

const SMALL: usize = 64 * 1024;
const SLOW: usize = 2 * 1024 * 1024;

#[test]
fn a_finished_file_shows_completed_while_the_next_one_downloads_and_after_a_suspend() {
    let env = Env::new();
    let server = HttpServer::start();
    let small = content(SMALL, 1);
    server.set("/small.bin", Route::body(small.clone()).etag("\"s1\""));
    // 512 KiB/s: 32 KiB every 62.5 ms, so file 1 takes at least 4 s.
    server.set(
        "/slow.bin",
        Route::body(content(SLOW, 2))
            .etag("\"l1\"")
            .throttle(32 * 1024, Duration::from_micros(62_500)),
    );
    let id = env.create("progress");
    for name in ["small.bin", "slow.bin"] {
        let local = env.path(name);
        env.run(&[
            "add-file",
            &id,
            &server.url(&format!("/{name}")),
            local.to_str().unwrap(),
        ])
        .ok();
    }

    env.run(&["resume", &id]).ok();
    let started = Instant::now();
    let file = |info: &Value, n: usize, key: &str| info["files"][n][key].clone();
    let mut whole = None;
    let info = loop {
        let info = env.info(&id);
        let at = started.elapsed();
        if whole.is_none() && file(&info, 0, "bytes_transferred") == SMALL {
            whole = Some(at);
        }
        if file(&info, 0, "completed") == true {
            eprintln!("file 0: all bytes counted at {whole:?}, completed at {at:?}");
            // The engine marks it about a second after it finished, the
            // daemon saves within another second: about 2 s in, against
            // the 4 s file 1 takes at least.
            assert!(at < Duration::from_millis(3500), "completed only at {at:?}");
            break info;
        }
        assert!(at < Duration::from_secs(20), "never completed: {info:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(info["state"], "TRANSFERRING", "{info:#}");
    assert_eq!(file(&info, 1, "completed"), false, "{info:#}");
    let slow_bytes = file(&info, 1, "bytes_transferred").as_u64().unwrap();
    assert!(slow_bytes < SLOW as u64, "{info:#}");

    // Suspended in the middle of file 1: file 0 stays completed, whole.
    env.run(&["suspend", &id]).ok();
    let info = env.info(&id);
    assert_eq!(info["state"], "SUSPENDED", "{info:#}");
    assert_eq!(file(&info, 0, "completed"), true, "{info:#}");
    assert_eq!(file(&info, 0, "bytes_transferred"), SMALL, "{info:#}");
    assert_eq!(file(&info, 1, "completed"), false, "{info:#}");
    assert!(file(&info, 1, "bytes_transferred").as_u64().unwrap() < SLOW as u64);
    let temp = Env::temp_files(&env.data)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".small.bin.")
        })
        .expect("file 0's temporary file");
    assert_eq!(std::fs::read(temp).unwrap(), small);
}

#[test]
fn a_finished_file_shows_completed_while_the_next_one_stalls() {
    let env = Env::new();
    let server = HttpServer::start();
    // File 0 takes about a second, so the job's first saves are old when it
    // finishes; file 1 is large (its validator is saved as soon as its
    // answer comes, right after file 0 finished), sends one chunk, then
    // stalls: no event comes to carry a throttled save.
    const FIRST: usize = 256 * 1024;
    server.set(
        "/first.bin",
        Route::body(content(FIRST, 3))
            .etag("\"f1\"")
            .throttle(32 * 1024, Duration::from_millis(125)),
    );
    server.set(
        "/stalled.bin",
        Route::body(content(SLOW, 4))
            .etag("\"s1\"")
            .throttle(64 * 1024, Duration::from_secs(5)),
    );
    let id = env.create("stall");
    for name in ["first.bin", "stalled.bin"] {
        let local = env.path(name);
        env.run(&[
            "add-file",
            &id,
            &server.url(&format!("/{name}")),
            local.to_str().unwrap(),
        ])
        .ok();
    }
    env.run(&["resume", &id]).ok();
    let started = Instant::now();
    let mut whole = None;
    loop {
        let info = env.info(&id);
        let at = started.elapsed();
        if whole.is_none() && info["files"][0]["bytes_transferred"] == FIRST {
            whole = Some(at);
        }
        if info["files"][0]["completed"] == true {
            let whole = whole.unwrap_or(at);
            eprintln!("file 0: all bytes counted at {whole:?}, completed at {at:?}");
            assert!(
                at - whole < Duration::from_millis(2500),
                "completed {:?} after",
                at - whole
            );
            assert!(
                info["files"][1]["bytes_transferred"].as_u64().unwrap() <= 64 * 1024,
                "file 1 is still stalled: {info:#}"
            );
            break;
        }
        assert!(at < Duration::from_secs(20), "never completed: {info:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.run(&["cancel", &id]).ok();
}
