//! What `info --json` shows while a job runs, through the real binary and
//! daemon: a finished file shows as completed (and its bytes are kept)
//! while the next file is still downloading or stalled, and after a
//! suspend.

mod support;

use std::time::{Duration, Instant};

use bits_testkit::http::{HttpServer, Route};
use serde_json::Value;
use support::{content, Env};

const SMALL: usize = 64 * 1024;
const SLOW: usize = 2 * 1024 * 1024;

/// A job of `files` (name and route, served by `server`), resumed: its id
/// and when it was resumed.
fn resumed(env: &Env, server: &HttpServer, files: Vec<(&str, Route)>) -> (String, Instant) {
    let id = env.create("progress");
    for (name, route) in files {
        server.set(&format!("/{name}"), route);
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
    (id, Instant::now())
}

/// Polls `info --json` until file 0, of `size` bytes, shows completed:
/// when all its bytes were counted, when it showed completed (both since
/// `started`), and that `info`.
fn until_first_completed(env: &Env, id: &str, started: Instant, size: usize) -> (Duration, Duration, Value) {
    let mut whole = None;
    loop {
        let info = env.info(id);
        let at = started.elapsed();
        if whole.is_none() && info["files"][0]["bytes_transferred"] == size {
            whole = Some(at);
        }
        if info["files"][0]["completed"] == true {
            let whole = whole.unwrap_or(at);
            eprintln!("file 0: all bytes counted at {whole:?}, completed at {at:?}");
            return (whole, at, info);
        }
        assert!(at < Duration::from_secs(20), "never completed: {info:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_finished_file_shows_completed_while_the_next_one_downloads_and_after_a_suspend() {
    let env = Env::new();
    let server = HttpServer::start();
    let small = content(SMALL, 1);
    // 512 KiB/s: 32 KiB every 62.5 ms, so file 1 takes at least 4 s.
    let slow = Route::body(content(SLOW, 2))
        .etag("\"l1\"")
        .throttle(32 * 1024, Duration::from_micros(62_500));
    let files = vec![
        ("small.bin", Route::body(small.clone()).etag("\"s1\"")),
        ("slow.bin", slow),
    ];
    let (id, started) = resumed(&env, &server, files);
    let file = |info: &Value, n: usize, key: &str| info["files"][n][key].clone();
    let (_, at, info) = until_first_completed(&env, &id, started, SMALL);
    // The engine marks it about a second after it finished, and the daemon
    // saves that at once: about 1 s in, against the 4 s file 1 takes.
    assert!(at < Duration::from_millis(3500), "completed only at {at:?}");
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
    let first = Route::body(content(FIRST, 3))
        .etag("\"f1\"")
        .throttle(32 * 1024, Duration::from_millis(125));
    let stalled = Route::body(content(SLOW, 4))
        .etag("\"s1\"")
        .throttle(64 * 1024, Duration::from_secs(5));
    let (id, started) = resumed(
        &env,
        &server,
        vec![("first.bin", first), ("stalled.bin", stalled)],
    );
    let (whole, at, info) = until_first_completed(&env, &id, started, FIRST);
    assert!(
        at - whole < Duration::from_millis(2500),
        "completed {:?} after",
        at - whole
    );
    assert!(
        info["files"][1]["bytes_transferred"].as_u64().unwrap() <= 64 * 1024,
        "file 1 is still stalled: {info:#}"
    );
    env.run(&["cancel", &id]).ok();
}
