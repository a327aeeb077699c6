//! Proxy settings through the real binary (`docs/spec/http-options.md`,
//! "Proxies"; `docs/spec/cli.md`, `set-proxy-settings`): set, read back and
//! shown by `info`; bad input refused with the job unchanged; and transfers
//! through REAL proxies on 127.0.0.1 (tinyproxy for http and `CONNECT`,
//! microsocks for SOCKS5): `--proxy`, the proxy variables a daemon started
//! on demand inherits, `no_proxy`, a change on a running job, and `kill -9`
//! mid-transfer.

mod support;

use std::time::Duration;

use bits_testkit::http::{HttpServer, Route};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::proxies::{free_port, RealProxy};
use bits_testkit::tls::https_server;
use serde_json::json;
use support::{content, Env};

/// A job with one file, SUSPENDED.
fn job_with_file(env: &Env, name: &str) -> String {
    let id = env.create(name);
    env.run(&[
        "add-file",
        &id,
        "https://127.0.0.1:9/file",
        env.path(name).to_str().unwrap(),
    ])
    .ok();
    id
}

fn get(env: &Env, id: &str) -> Vec<String> {
    env.run(&["get-proxy-settings", id])
        .ok()
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn set_get_and_info_round_trip() {
    let env = Env::new();
    let id = job_with_file(&env, "px");
    // The default: the daemon's environment.
    assert_eq!(get(&env, &id), ["preconfig"]);
    assert_eq!(
        env.info(&id)["proxy"],
        json!({"usage": "preconfig", "list": [], "bypass": []})
    );

    env.run(&[
        "set-proxy-settings",
        &id,
        "override",
        "http://127.0.0.1:3128;socks5h://[::1]:1080 proxy.example",
        "<local>;.example.org 10.0.0.0/8",
    ])
    .ok();
    let lines = get(&env, &id);
    assert_eq!(
        lines,
        [
            "override",
            "http://127.0.0.1:3128;socks5h://[::1]:1080;http://proxy.example:1080",
            "<local>;.example.org;10.0.0.0/8",
        ]
    );
    let expected = json!({
        "usage": "override",
        "list": ["http://127.0.0.1:3128", "socks5h://[::1]:1080", "http://proxy.example:1080"],
        "bypass": ["<local>", ".example.org", "10.0.0.0/8"],
    });
    assert_eq!(env.info(&id)["proxy"], expected);
    let text = env.run(&["info", &id]).ok().stdout;
    assert!(
        text.contains(
            "proxy:               override http://127.0.0.1:3128;socks5h://[::1]:1080;http://proxy.example:1080 bypass <local>;.example.org;10.0.0.0/8\n"
        ),
        "{text}"
    );

    // What get prints, set takes back: the same settings.
    let other = job_with_file(&env, "px2");
    env.run(&["set-proxy-settings", &other, &lines[0], &lines[1], &lines[2]])
        .ok();
    assert_eq!(env.info(&other)["proxy"], expected);

    // No bypass list: an empty third line.
    env.run(&["set-proxy-settings", &id, "override", "127.0.0.1:3128"])
        .ok();
    assert_eq!(get(&env, &id), ["override", "http://127.0.0.1:3128", ""]);

    env.run(&["set-proxy-settings", &id, "NO_PROXY"]).ok();
    assert_eq!(get(&env, &id), ["no_proxy"]);
    assert_eq!(
        env.info(&id)["proxy"],
        json!({"usage": "no_proxy", "list": [], "bypass": []})
    );
    assert!(env
        .run(&["info", &id])
        .ok()
        .stdout
        .contains("proxy:               no_proxy\n"));
    env.run(&["set-proxy-settings", &id, "preconfig"]).ok();
    assert_eq!(get(&env, &id), ["preconfig"]);

    // In every state but the final ones: a job in ERROR takes it.
    let r = env.run(&[
        "transfer",
        "--no-progress-timeout",
        "0",
        "--name",
        "failed",
        "http://127.0.0.1:9/nothing-listens",
        env.path("failed").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(env.info("failed")["state"], "ERROR");
    env.run(&["set-proxy-settings", "failed", "no_proxy"]).ok();
    assert_eq!(get(&env, "failed"), ["no_proxy"]);
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let env = Env::new();
    let id = job_with_file(&env, "bad");
    env.run(&[
        "set-proxy-settings",
        &id,
        "override",
        "http://127.0.0.1:3128",
        "<local>",
    ])
    .ok();
    let before = env.info(&id)["proxy"].clone();
    for (args, code) in [
        (vec!["auto"], "0x80070057"),
        (vec!["override"], "0x80070057"),
        (vec!["override", " ; "], "0x80070057"),
        (vec!["preconfig", "http://127.0.0.1:3128"], "0x80070057"),
        (vec!["no_proxy", "", "<local>"], "0x80070057"),
        (vec!["override", "http://user:pw@127.0.0.1:3128"], "0x80070057"),
        (vec!["override", "http://127.0.0.1:3128/path"], "0x80070057"),
        (vec!["override", "127.0.0.1:0"], "0x80070057"),
        (vec!["override", "127.0.0.1:3128", "bad host!"], "0x80070057"),
        (vec!["override", "https://127.0.0.1:3128"], "0x80004001"),
        (vec!["override", "socks5://127.0.0.1:1080"], "0x80004001"),
        (
            vec!["override", "127.0.0.1:3128;socks4://127.0.0.1:1080"],
            "0x80004001",
        ),
    ] {
        let mut full = vec!["set-proxy-settings", id.as_str()];
        full.extend(args.iter().copied());
        env.run(&full).fails(2, code);
        assert_eq!(env.info(&id)["proxy"], before, "{args:?}");
    }
    // Too many arguments is clap's refusal, the same exit.
    env.run(&["set-proxy-settings", &id, "override", "a:1", "b", "c"])
        .fails(2, "0x80070057");
    env.run(&["set-proxy-settings", "no-such-job", "no_proxy"])
        .fails(2, "0x80200001");

    // A final job refuses it: BG_E_INVALID_STATE.
    env.run(&["cancel", &id]).ok();
    env.run(&["set-proxy-settings", &id, "no_proxy"])
        .fails(2, "0x80200002");
    assert_eq!(env.info(&id)["proxy"], before);

    // transfer refuses a bad --proxy before creating any job.
    for (args, code) in [
        (vec!["--proxy", "https://127.0.0.1:3128"], "0x80004001"),
        (vec!["--proxy", "http://127.0.0.1:99999"], "0x80070057"),
        (vec!["--proxy", "none", "--noproxy", "<local>"], "0x80070057"),
        (
            vec!["--proxy", "127.0.0.1:3128", "--noproxy", "bad host!"],
            "0x80070057",
        ),
        // --noproxy is the bypass list of --proxy.
        (vec!["--noproxy", "<local>"], "0x80070057"),
    ] {
        let mut full = vec!["transfer", "--name", "refused"];
        full.extend(args.iter().copied());
        let local = env.path("refused");
        full.extend(["https://127.0.0.1:9/x", local.to_str().unwrap()]);
        env.run(&full).fails(2, code);
        assert!(!local.exists());
    }
    let all = env.run(&["list", "--all", "--json"]).ok().json();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|j| j["display_name"] != "refused"),
        "{all:#}"
    );
}

/// An https origin (the good leaf, valid for 127.0.0.1) serving `path`.
fn https_origin(path: &str, body: &[u8]) -> HttpServer {
    https_server(TestPki::shared().leaf(LeafKind::Good))
        .with(path, Route::body(body.to_vec()).etag("\"px-v1\""))
}

/// The `CONNECT` tunnels tinyproxy opened to `origin`.
fn connects_to(proxy: &RealProxy, origin: &HttpServer) -> usize {
    let target = format!("{} HTTP/1.", origin.addr());
    proxy.connects().iter().filter(|c| c.starts_with(&target)).count()
}

fn transfer_through_tinyproxy(backend: &str) {
    let env = Env::trusting_test_root();
    let proxy = RealProxy::tinyproxy();
    let body = content(200_000, 1);
    let origin = https_origin("/file", &body);
    let local = env.path("out.bin");
    let r = env
        .run(&[
            "--backend",
            backend,
            "transfer",
            "--json",
            "--proxy",
            &proxy.url(),
            &origin.url("/file"),
            local.to_str().unwrap(),
        ])
        .ok();
    let job = r.json();
    assert_eq!(job["backend"], backend);
    assert_eq!(
        job["proxy"],
        json!({"usage": "override", "list": [proxy.url()], "bypass": []})
    );
    assert_eq!(std::fs::read(&local).unwrap(), body);
    assert!(connects_to(&proxy, &origin) >= 1, "{}", proxy.log());
    // TLS ran end to end: the proxy saw tunnels only, never the request.
    let requests = proxy.requests();
    assert!(requests.iter().all(|r| r.starts_with("CONNECT ")), "{requests:?}");
    assert!(!origin.requests_for("/file").is_empty());
}

#[cfg(feature = "openssl")]
#[test]
fn openssl_transfers_https_through_a_connect_tunnel() {
    transfer_through_tinyproxy("openssl");
}

#[cfg(feature = "rustls")]
#[test]
fn rustls_transfers_https_through_a_connect_tunnel() {
    transfer_through_tinyproxy("rustls");
}

#[cfg(feature = "native")]
#[test]
fn native_transfers_https_through_a_connect_tunnel() {
    transfer_through_tinyproxy("native");
}

#[test]
fn http_through_tinyproxy_is_an_absolute_form_request() {
    let env = Env::new();
    let proxy = RealProxy::tinyproxy();
    let body = content(50_000, 2);
    let origin = HttpServer::start().with("/plain", Route::body(body.clone()));
    let local = env.path("plain.bin");
    env.run(&[
        "transfer",
        "--proxy",
        &proxy.url(),
        &origin.url("/plain"),
        local.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    let wanted = format!("GET {} HTTP/1.", origin.url("/plain"));
    let absolute = |proxy: &RealProxy| proxy.requests().iter().filter(|r| r.starts_with(&wanted)).count();
    assert_eq!(absolute(&proxy), 1, "{:?}", proxy.requests());

    // A list is tried in order: the first refuses connections, the second carries it.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let local = env.path("second.bin");
    env.run(&[
        "transfer",
        "--proxy",
        &format!("{dead};{}", proxy.url()),
        &origin.url("/plain"),
        local.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    assert_eq!(absolute(&proxy), 2, "{:?}", proxy.requests());
}

#[test]
fn socks5h_through_microsocks_and_a_dead_proxy_is_0x80072efd() {
    let env = Env::trusting_test_root();
    let socks = RealProxy::microsocks();
    let body = content(50_000, 3);
    let origin = https_origin("/s", &body);
    let local = env.path("s.bin");
    env.run(&[
        "transfer",
        "--proxy",
        &socks.url(),
        &origin.url("/s"),
        local.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);

    // Nobody listens there: cannot connect to the proxy, transient (fatal
    // here at once with a no-progress timeout of 0); the origin never hears.
    origin.clear_requests();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let local = env.path("dead.bin");
    let r = env.run(&[
        "transfer",
        "--json",
        "--no-progress-timeout",
        "0",
        "--proxy",
        &dead,
        &origin.url("/s"),
        local.to_str().unwrap(),
    ]);
    let job = r.json();
    r.fails(1, "0x80072EFD");
    assert_eq!(job["state"], "ERROR");
    assert_eq!(job["error"]["code"], "0x80072EFD");
    assert!(origin.requests().is_empty());
    assert!(!local.exists());
}

#[test]
fn the_daemon_started_on_demand_inherits_https_proxy_and_no_proxy_jobs_go_direct() {
    let proxy = RealProxy::tinyproxy();
    let env = Env::trusting_test_root().env("https_proxy", proxy.url());
    let body = content(100_000, 4);
    let origin = https_origin("/env", &body);
    let local = env.path("env.bin");
    // No daemon runs: transfer starts one, with this environment.
    assert!(env.daemon_pid().is_none());
    env.run(&["transfer", &origin.url("/env"), local.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    assert_eq!(connects_to(&proxy, &origin), 1, "{}", proxy.log());

    // The same daemon, the same environment: a no_proxy job goes direct.
    let id = env.create("direct");
    let local = env.path("direct.bin");
    env.run(&["add-file", &id, &origin.url("/env"), local.to_str().unwrap()])
        .ok();
    env.run(&["set-proxy-settings", &id, "no_proxy"]).ok();
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    assert_eq!(connects_to(&proxy, &origin), 1, "{}", proxy.log());
    assert_eq!(origin.requests_for("/env").len(), 2);

    // And an override whose bypass list names the origin goes direct too.
    let local = env.path("bypassed.bin");
    env.run(&[
        "transfer",
        "--proxy",
        &proxy.url(),
        "--noproxy",
        "127.0.0.0/8",
        &origin.url("/env"),
        local.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    assert_eq!(connects_to(&proxy, &origin), 1, "{}", proxy.log());
}

#[test]
fn upper_case_http_proxy_is_ignored_as_curl_does() {
    let proxy = RealProxy::tinyproxy();
    let env = Env::new().env("HTTP_PROXY", proxy.url());
    let body = content(10_000, 5);
    let origin = HttpServer::start().with("/up", Route::body(body.clone()));
    let local = env.path("up.bin");
    env.run(&["transfer", &origin.url("/up"), local.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    // --proxy none is direct whatever the environment.
    let env = Env::new().env("http_proxy", proxy.url());
    env.run(&[
        "transfer",
        "--proxy",
        "none",
        &origin.url("/up"),
        env.path("none.bin").to_str().unwrap(),
    ])
    .ok();
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
}

/// A job downloading a throttled 1.5 MB file over https, resumed and
/// under way (as `tests/daemon.rs` `slow_job`).
fn slow_https_job(env: &Env, origin: &HttpServer, proxy: Option<&RealProxy>) -> (String, Vec<u8>) {
    let body = content(1_500_000, 9);
    origin.set(
        "/slow",
        Route::body(body.clone())
            .etag("\"slow-v1\"")
            .throttle(16 * 1024, Duration::from_millis(15)),
    );
    let id = env.create("slow");
    env.add_file(&id, &origin.url("/slow"), "slow.bin");
    if let Some(proxy) = proxy {
        env.run(&["set-proxy-settings", &id, "override", &proxy.url()])
            .ok();
    }
    env.run(&["resume", &id]).ok();
    (id, body)
}

/// Where the first request for `/slow` since the last clear started.
fn first_range_start(origin: &HttpServer) -> u64 {
    let requests = origin.requests_for("/slow");
    let first = requests.first().expect("asked again");
    first
        .range()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0)
}

#[test]
fn kill_9_mid_transfer_through_a_proxy_resumes_through_it_with_range() {
    let env = Env::trusting_test_root();
    let proxy = RealProxy::tinyproxy();
    let origin = https_server(TestPki::shared().leaf(LeafKind::Good));
    let (id, body) = slow_https_job(&env, &origin, Some(&proxy));
    assert!(origin.wait_until(Duration::from_secs(20), |s| s.bytes_sent() > 300_000));
    assert_eq!(connects_to(&proxy, &origin), 1, "{}", proxy.log());
    env.kill_daemon("KILL");
    assert!(env.daemon_pid().is_none());
    origin.clear_requests();
    // `wait` starts the next daemon, which takes the job up again.
    env.run(&["wait", &id]).ok();
    let info = env.info(&id);
    assert_eq!(info["state"], "TRANSFERRED");
    assert_eq!(info["bytes_transferred"], 1_500_000);
    assert!(first_range_start(&origin) > 0, "{:?}", origin.requests());
    assert!(connects_to(&proxy, &origin) >= 2, "{}", proxy.log());
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("slow.bin")).unwrap(), body);
}

#[test]
fn a_running_job_moves_to_its_new_proxy_with_its_next_request() {
    let env = Env::trusting_test_root();
    let proxy = RealProxy::tinyproxy();
    let origin = https_server(TestPki::shared().leaf(LeafKind::Good));
    // Direct first (no proxy variable anywhere).
    let (id, body) = slow_https_job(&env, &origin, None);
    assert!(origin.wait_until(Duration::from_secs(20), |s| s.bytes_sent() > 300_000));
    assert_eq!(connects_to(&proxy, &origin), 0);
    origin.clear_requests();
    env.run(&["set-proxy-settings", &id, "override", &proxy.url()])
        .ok();
    env.run(&["wait", &id]).ok();
    assert!(first_range_start(&origin) > 0, "{:?}", origin.requests());
    assert!(connects_to(&proxy, &origin) >= 1, "{}", proxy.log());
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("slow.bin")).unwrap(), body);
}

#[test]
fn an_environment_proxy_bits_cannot_honour_fails_the_job_never_direct() {
    // socks5:// resolves names locally: refused (E_NOTIMPL), not ignored.
    let env = Env::trusting_test_root().env("https_proxy", format!("socks5://127.0.0.1:{}", free_port()));
    let body = content(10_000, 6);
    let origin = https_origin("/f", &body);
    let local = env.path("f.bin");
    let r = env.run(&[
        "transfer",
        "--json",
        "--name",
        "env-refused",
        &origin.url("/f"),
        local.to_str().unwrap(),
    ]);
    let job = r.json();
    let r = r.fails(1, "0x80004001");
    assert!(r.stderr.contains("https_proxy"), "{r:?}");
    assert_eq!(job["state"], "ERROR");
    assert!(origin.requests().is_empty(), "nothing went direct");
    assert!(!local.exists());
    // The job's own usage wins over the environment: no_proxy, then direct.
    env.run(&["set-proxy-settings", "env-refused", "no_proxy"]).ok();
    env.run(&["resume", "env-refused"]).ok();
    env.run(&["wait", "env-refused"]).ok();
    env.run(&["complete", "env-refused"]).ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
}
