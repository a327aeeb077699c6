//! Custom headers on the wire (`docs/spec/http-options.md`, "Custom
//! headers"): what `--header` and `set-custom-headers` set reaches every
//! request of the job, over http and https, a change to a running job
//! applies from its next request, and no value reaches `-v` output or the
//! daemon's log.

mod support;

use std::time::Duration;

use bits_testkit::http::{HttpServer, Route};
use support::{content, Env};

const SECRET: &str = "Bearer s3cret-t0ken";

fn transfer_with_headers(env: &Env, server: &HttpServer, backend: Option<&str>) {
    let body = content(50_000, 4);
    server.set("/h", Route::body(body.clone()));
    let local = env.path(&format!("h-{}", backend.unwrap_or("default")));
    let auth = format!("Authorization: {SECRET}");
    let mut args = vec![];
    if let Some(b) = backend {
        args.extend(["--backend", b]);
    }
    let url = server.url("/h");
    args.extend([
        "-vv",
        "transfer",
        "--header",
        "X-Trace: t1",
        "--header",
        &auth,
        url.as_str(),
        local.to_str().unwrap(),
    ]);
    let r = env.run(&args).ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    let requests = server.requests_for("/h");
    assert!(!requests.is_empty());
    for req in &requests {
        assert_eq!(req.header("x-trace"), Some("t1"), "{req:?}");
        assert_eq!(req.authorization(), Some(SECRET), "{req:?}");
    }
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    let log = std::fs::read_to_string(env.store.join("daemon.log")).unwrap_or_default();
    assert!(!log.contains("s3cret"), "{log}");
}

#[test]
fn headers_reach_every_request_over_http() {
    let env = Env::new();
    let server = HttpServer::start();
    transfer_with_headers(&env, &server, None);
}

#[cfg(feature = "openssl")]
#[test]
fn headers_reach_every_request_over_https_with_openssl() {
    use bits_testkit::pki::{LeafKind, TestPki};
    let env = Env::new();
    let root = env.tmp.path().join("root.pem");
    std::fs::write(&root, TestPki::shared().root_pem()).unwrap();
    let env = env.env("SSL_CERT_FILE", root.to_str().unwrap());
    let server = bits_testkit::tls::https_server(TestPki::shared().leaf(LeafKind::Good));
    transfer_with_headers(&env, &server, Some("openssl"));
}

#[test]
fn a_running_job_sends_new_headers_from_its_next_request() {
    let env = Env::new();
    let server = HttpServer::start();
    let body = content(1_500_000, 6);
    server.set(
        "/slow",
        Route::body(body.clone())
            .etag("\"v1\"")
            .throttle(16 * 1024, Duration::from_millis(15)),
    );
    let id = env.create("slow");
    let local = env.path("slow.bin");
    env.run(&["add-file", &id, &server.url("/slow"), local.to_str().unwrap()])
        .ok();
    env.run(&["set-custom-headers", &id, "X-Phase: one"]).ok();
    env.run(&["resume", &id]).ok();
    env.wait_for(&id, Duration::from_secs(20), |j| {
        j["bytes_transferred"].as_u64().unwrap_or(0) > 100_000
    });
    env.run(&["set-custom-headers", &id, "X-Phase: two"]).ok();
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    let phases: Vec<String> = server
        .requests_for("/slow")
        .iter()
        .map(|r| r.header("x-phase").unwrap_or("none").to_string())
        .collect();
    assert_eq!(phases.first().map(String::as_str), Some("one"), "{phases:?}");
    assert_eq!(phases.last().map(String::as_str), Some("two"), "{phases:?}");
}
