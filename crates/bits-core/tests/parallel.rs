//! Several files of a job in flight at once against a real HTTP server on
//! 127.0.0.1 (`docs/spec/network.md`, "Many files, many connections"):
//! up to the per-origin limit, started in the job's order, each file
//! finishing on its own, the first failure stopping the rest with their
//! bytes kept.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bits_core::{Engine, EngineOptions, JobState, NoObserver};
use bits_http::PlainHttp;
use support::*;

/// The body of file `n` of a test job.
fn body_of(n: usize, len: usize) -> Vec<u8> {
    let mut b = body(len);
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    b
}

fn routes(n: usize, len: usize, route: impl Fn(usize, Route) -> Route) -> Vec<(String, Route)> {
    (0..n)
        .map(|k| (format!("/f{k}"), route(k, Route::body(body_of(k, len)))))
        .collect()
}

fn env(routes: &[(String, Route)]) -> Env {
    let borrowed: Vec<(&str, Route)> = routes.iter().map(|(p, r)| (p.as_str(), r.clone())).collect();
    Env::new(&borrowed)
}

#[tokio::test]
async fn files_run_in_parallel_up_to_the_limit_per_origin_in_the_jobs_order() {
    let n = 40;
    // Each answer waits a little: the files overlap only if they run at once.
    let routes = routes(n, 3000, |_, r| r.delay(Duration::from_millis(40)));
    let mut env = env(&routes);
    assert_eq!(env.run().await.state, JobState::Transferred);
    for k in 0..n {
        assert_eq!(read(&env.temp(k)), body_of(k, 3000), "file {k}");
        assert!(env.job.files[k].completed);
    }
    let most = env.server.max_in_flight();
    assert!((2..=8).contains(&most), "{most} requests at once");
    // The first file goes alone (what its answer teaches serves the rest),
    // then the files start in the job's order: a request for file k is
    // never sent before one for file k - 8.
    let order: Vec<usize> = env
        .server
        .requests()
        .iter()
        .map(|r| r.path[2..].parse().unwrap())
        .collect();
    assert_eq!(order[0], 0);
    for (at, &k) in order.iter().enumerate() {
        assert!(k < at + 8, "file {k} requested {at}th: {order:?}");
    }
    assert_counters_match_disk(&env.job);
}

#[tokio::test]
async fn a_limit_of_one_moves_one_file_at_a_time() {
    let routes = routes(6, 100, |_, r| r.delay(Duration::from_millis(20)));
    let mut env = env(&routes);
    let options = EngineOptions {
        connections_per_origin: 1,
        ..EngineOptions::default()
    };
    env.engine = Engine::with_options(Arc::new(PlainHttp::new()), options);
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(env.server.max_in_flight(), 1);
    assert_eq!(env.server.connections(), 1);
}

#[tokio::test]
async fn each_file_ends_as_if_it_ran_alone() {
    // Fifty files: one is missing (404), one is cut short the first time,
    // one has older bytes on disk from content that has since changed.
    let (missing, cut, changed, len) = (17, 5, 30, 20_000);
    let routes = routes(50, len, |k, r| match k {
        _ if k == missing => Route::status(404),
        _ if k == cut => r.truncate_first(1, 7000).etag("\"cut\""),
        _ if k == changed => r.etag("\"new\""),
        _ => r,
    });
    let mut env = env(&routes);
    std::fs::write(env.temp(changed), vec![0xEE; 4000]).unwrap();
    env.job.files[changed].bytes_transferred = 4000;
    env.job.files[changed].validator = Some("\"old\"".into());

    let mut fatal = None;
    for _ in 0..6 {
        let outcome = env.run().await;
        assert_counters_match_disk(&env.job);
        match outcome.state {
            JobState::Transferred => break,
            JobState::TransientError => {
                // The cut file: resumed from its own bytes next time.
                assert_eq!(env.error().unwrap().2, Some(cut));
                env.job.apply(bits_core::Event::RetryTimer);
            }
            JobState::Error => {
                let (code, _, file) = env.error().unwrap();
                assert_eq!(file, Some(missing));
                assert_eq!(code, 0x8019_0194, "{:#x}", code);
                fatal = Some(code);
                // The admin fixes the server, then resumes the job.
                env.server
                    .set(&format!("/f{missing}"), Route::body(body_of(missing, len)));
                env.job.resume().unwrap();
            }
            other => panic!("{other}: {:?}", env.job.error),
        }
    }
    assert_eq!(env.job.state(), JobState::Transferred, "{:?}", env.job.error);
    assert!(fatal.is_some(), "the missing file stopped the job once");
    for k in 0..50 {
        assert_eq!(read(&env.temp(k)), body_of(k, len), "file {k}");
    }
    // The cut file asked for the rest of itself, with its validator.
    let cut_requests = env.server.requests_for(&format!("/f{cut}"));
    let last = cut_requests.last().unwrap();
    assert_eq!(last.range(), Some("bytes=7000-"));
    assert_eq!(last.if_range(), Some("\"cut\""));
    // The changed file started again from byte 0.
    assert_eq!(env.job.files[changed].validator.as_deref(), Some("\"new\""));
}

#[tokio::test]
async fn a_fatal_error_stops_the_others_and_keeps_their_bytes() {
    let len = 400_000;
    // Eight slow files, then a missing one among them.
    let routes = routes(8, len, |k, r| match k {
        3 => Route::status(404).delay(Duration::from_millis(300)),
        _ => r.throttle(8192, Duration::from_millis(10)),
    });
    let mut env = env(&routes);
    assert_eq!(env.run().await.state, JobState::Error);
    assert_eq!(env.error().unwrap().2, Some(3));
    assert_counters_match_disk(&env.job);
    let kept: Vec<u64> = (0..8).map(|k| env.job.files[k].bytes_transferred).collect();
    assert!(
        kept.iter()
            .enumerate()
            .any(|(k, &b)| k != 3 && b > 0 && b < len as u64),
        "{kept:?}"
    );
    // Fixed and resumed: each file continues from its own bytes.
    env.server.set("/f3", Route::body(body_of(3, len)));
    for k in 0..8 {
        if k != 3 {
            env.server.set(&format!("/f{k}"), Route::body(body_of(k, len)));
        }
    }
    env.server.clear_requests();
    env.job.resume().unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    for (k, &had) in kept.iter().enumerate() {
        assert_eq!(read(&env.temp(k)), body_of(k, len), "file {k}");
        let first = env.server.requests_for(&format!("/f{k}"))[0]
            .range()
            .map(str::to_owned);
        let asked = (had > 0).then(|| format!("bytes={had}-"));
        assert_eq!(first, asked, "file {k}");
    }
}

#[tokio::test]
async fn a_dropped_run_keeps_every_file_in_flight_and_resumes_each_from_its_own_bytes() {
    let len = 300_000;
    let routes = routes(10, len, |_, r| r.throttle(4096, Duration::from_millis(5)));
    let mut env = env(&routes);
    // Suspend (or a daemon's end) drops the run mid-flight.
    let mut nothing = NoObserver;
    let run = env.engine.run(&mut env.job, &mut nothing);
    assert!(tokio::time::timeout(Duration::from_millis(400), run)
        .await
        .is_err());
    // Each file's counter claims no byte its file lacks (the buffered bytes
    // reached the disk as the run dropped; a resume trusts the disk).
    for f in &env.job.files {
        let on_disk = std::fs::metadata(&f.temp_name).map_or(0, |m| m.len());
        assert!(f.bytes_transferred <= on_disk, "{}", f.temp_name.display());
    }
    let on_disk: Vec<u64> = (0..10)
        .map(|k| std::fs::metadata(env.temp(k)).map_or(0, |m| m.len()))
        .collect();
    assert!(on_disk.iter().filter(|&&b| b > 0).count() >= 2, "{on_disk:?}");
    for k in 0..10 {
        env.server.set(&format!("/f{k}"), Route::body(body_of(k, len)));
    }
    env.server.clear_requests();
    assert_eq!(env.run().await.state, JobState::Transferred);
    for (k, &had) in on_disk.iter().enumerate() {
        assert_eq!(read(&env.temp(k)), body_of(k, len), "file {k}");
        let first = env.server.requests_for(&format!("/f{k}"))[0]
            .range()
            .map(str::to_owned);
        assert_eq!(first, (had > 0).then(|| format!("bytes={had}-")), "file {k}");
    }
}
