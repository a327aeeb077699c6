//! Credentials through the real binary (`docs/spec/http-options.md`,
//! "Credentials"; `docs/spec/cli.md`, `set-credentials` /
//! `remove-credentials`): the password read from a file, a variable or
//! standard input and answered to a real https server's Basic challenge;
//! kept in the store across a daemon restart; shown nowhere (`info`,
//! `list`, `-vv` output, `daemon.log` at trace, argv, errors); bad input
//! refused with exit 2; and `user:pass@` URLs refused.

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use bits_testkit::http::{DigestAlgorithm, HttpServer, Route};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::proxies::RealProxy;
use bits_testkit::tls::https_server;
use serde_json::json;
use support::{content, to_run, Env, Run};

/// The password of every test: distinctive, so that a grep finds it
/// wherever it leaked.
const PASSWORD: &str = "pw-7f3a9c-SECRET";

/// What a Basic header built from the password would carry: a leak of the
/// header is a leak of the password.
fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Panics when `text` (named `what`) holds the password, or the Basic
/// value made of it.
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(PASSWORD), "{what} shows the password:\n{text}");
    assert!(
        !text.contains(&basic("alice", PASSWORD)),
        "{what} shows the Basic value of the password:\n{text}"
    );
}

/// An https origin (the good leaf) serving `body` at `/secret` only to
/// `Authorization: Basic base64(alice:PASSWORD)`; anything else gets 401
/// with `WWW-Authenticate: Basic realm=...`.
fn guarded_origin(body: &[u8]) -> HttpServer {
    https_server(TestPki::shared().leaf(LeafKind::Good)).with(
        "/secret",
        Route::body(body.to_vec()).require_authorization(format!("Basic {}", basic("alice", PASSWORD))),
    )
}

/// The NUL-separated argv of process `pid`, joined with spaces.
fn argv(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// `bits ARGS --password-stdin` fed `input`; the argv of the running
/// command is checked while it waits for its standard input.
fn run_with_stdin(env: &Env, args: &[&str], input: &str) -> Run {
    let mut child = env
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Right after the fork /proc shows the test's own argv: wait for the exec.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut cmdline = argv(child.id());
    while !cmdline.contains("--password-stdin") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        cmdline = argv(child.id());
    }
    assert!(cmdline.contains("--password-stdin"), "{cmdline}");
    assert_no_secret("the argv of set-credentials --password-stdin", &cmdline);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    to_run(child.wait_with_output().unwrap())
}

/// Everything a command printed, for the leak check.
fn printed(r: &Run) -> String {
    format!("{}\n{}", r.stdout, r.stderr)
}

#[test]
fn basic_over_https_from_a_file_a_variable_and_stdin_and_the_password_shows_nowhere() {
    let env = Env::trusting_test_root().env("BITS_PW", PASSWORD);
    let body = content(100_000, 7);
    let origin = guarded_origin(&body);
    let pw_file = env.tmp.path().join("pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\nnot the password\n")).unwrap();
    let mut seen = String::new();
    let mut run = |r: Run| {
        seen.push_str(&printed(&r));
        r
    };

    // The daemon at its most verbose (trace) from the start, so that every
    // set-credentials below goes through the socket and its log.
    run(env.run(&["-vv", "daemon"]).ok());
    let daemon = env.daemon_pid().expect("a daemon");

    let sources: [(&str, &[&str]); 3] = [
        ("file", &["--password-file", pw_file.to_str().unwrap()]),
        ("env", &["--password-env", "BITS_PW"]),
        ("stdin", &["--password-stdin"]),
    ];
    for (name, source) in sources {
        let id = env.create(name);
        env.add_file(&id, &origin.url("/secret"), name);
        let mut args = vec!["-vv", "set-credentials", id.as_str(), "server", "basic", "alice"];
        args.extend_from_slice(source);
        let r = if name == "stdin" {
            // The first line only, as the file's.
            run_with_stdin(&env, &args, &format!("{PASSWORD}\nnot the password\n"))
        } else {
            env.run(&args)
        };
        run(r.ok());
        let info = run(env.run(&["info", "--json", &id]).ok()).json();
        assert_eq!(
            info["credentials"],
            json!([{"target": "server", "scheme": "basic", "user": "alice"}]),
            "{name}"
        );
        let text = run(env.run(&["info", &id]).ok()).stdout;
        assert!(
            text.contains("credentials:         server basic user alice\n"),
            "{text}"
        );
        run(env.run(&["-vv", "resume", &id]).ok());
        run(env.run(&["-vv", "wait", &id]).ok());
        run(env.run(&["-vv", "complete", &id]).ok());
        assert_eq!(std::fs::read(env.path(name)).unwrap(), body, "{name}");
    }
    // The server challenged each job once, then took its answer.
    let requests = origin.requests_for("/secret");
    let answered = requests.iter().filter(|r| r.authorization().is_some()).count();
    assert!(answered >= 3, "{requests:?}");

    // Wrong password: ERROR 0x80190191, not retried, the line names the
    // user and never a password.
    let id = env.create("wrong");
    env.add_file(&id, &origin.url("/secret"), "wrong");
    std::fs::write(&pw_file, "pw-7f3a9c-WRONG\n").unwrap();
    run(env
        .run(&[
            "set-credentials",
            &id,
            "server",
            "basic",
            "alice",
            "--password-file",
        ])
        .fails(2, "0x80070057"));
    run(env
        .run(&[
            "set-credentials",
            &id,
            "server",
            "basic",
            "alice",
            "--password-file",
            pw_file.to_str().unwrap(),
        ])
        .ok());
    run(env.run(&["-vv", "resume", &id]).ok());
    let r = run(env.run(&["-vv", "wait", &id]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("0x80190191"), "{r:?}");
    assert!(!r.stderr.contains("pw-7f3a9c"), "{r:?}");
    let info = run(env.run(&["info", "--json", &id]).ok()).json();
    assert_eq!(info["state"], "ERROR");
    assert!(!info.to_string().contains("pw-7f3a9c"), "{info}");

    // Nowhere else either: list, the daemon's argv and its trace log.
    run(env.run(&["list", "--all"]).ok());
    run(env.run(&["list", "--all", "--json"]).ok());
    run(env.run(&["-vv", "list", "--all", "--json"]).ok());
    assert_no_secret("the commands' output", &seen);
    assert!(!seen.contains("pw-7f3a9c-WRONG"), "{seen}");
    assert_no_secret("the daemon's argv", &argv(daemon as u32));
    let log = std::fs::read_to_string(env.store.join("daemon.log")).unwrap();
    // The log is the trace one, and it saw the credentials set (user only).
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    assert!(log.contains("SetCredentials") && log.contains("alice"), "{log}");
    assert_no_secret("daemon.log", &log);
    assert!(!log.contains("pw-7f3a9c-WRONG"), "{log}");
}

#[test]
fn digest_over_plain_http_and_basic_never_over_it() {
    let env = Env::new().env("BITS_PW", PASSWORD);
    let body = content(60_000, 5);
    let origin = HttpServer::start()
        .with(
            "/digest",
            Route::body(body.clone()).digest_auth("alice", PASSWORD, DigestAlgorithm::Sha256),
        )
        .with("/basic", Route::body(body.clone()).basic_auth("alice", PASSWORD));
    let mut seen = String::new();
    for (name, scheme) in [("digest", "digest"), ("basic", "basic")] {
        let id = env.create(name);
        env.add_file(&id, &origin.url(&format!("/{name}")), name);
        env.run(&[
            "set-credentials",
            &id,
            "server",
            scheme,
            "alice",
            "--password-env",
            "BITS_PW",
        ])
        .ok();
        seen.push_str(&printed(&env.run(&["-vv", "resume", &id]).ok()));
        let r = env.run(&["-vv", "wait", &id]);
        seen.push_str(&printed(&r));
        if name == "digest" {
            r.ok();
            env.run(&["complete", &id]).ok();
            assert_eq!(std::fs::read(env.path(name)).unwrap(), body);
        } else {
            // Basic over plain http: refused before anything is sent.
            assert_eq!(r.code, 1, "{r:?}");
            assert!(
                r.stderr.contains("0x80190191") && r.stderr.contains("http"),
                "{r:?}"
            );
            let sent = origin.requests_for("/basic");
            assert!(sent.iter().all(|q| q.authorization().is_none()), "{sent:?}");
        }
    }
    let digest = origin.requests_for("/digest");
    assert!(
        digest
            .iter()
            .any(|q| q.authorization().is_some_and(|a| a.starts_with("Digest "))),
        "{digest:?}"
    );
    assert_no_secret("the commands' output", &seen);
    let log = std::fs::read_to_string(env.store.join("daemon.log")).unwrap();
    assert_no_secret("daemon.log", &log);
}

#[test]
fn credentials_persist_in_the_private_store_across_a_daemon_restart() {
    let env = Env::trusting_test_root();
    let body = content(50_000, 3);
    let origin = guarded_origin(&body);
    let id = env.create("kept");
    env.add_file(&id, &origin.url("/secret"), "kept");
    env.run(&["daemon"]).ok();
    let r = run_with_stdin(
        &env,
        &[
            "set-credentials",
            &id,
            "server",
            "basic",
            "alice",
            "--password-stdin",
        ],
        PASSWORD,
    );
    r.ok();
    env.run(&[
        "set-credentials",
        &id,
        "proxy",
        "digest",
        "bob",
        "--password-env",
        "HOME",
    ])
    .ok();
    let pid = env.daemon_pid().expect("a daemon");
    env.run(&["daemon", "--stop"]).ok();
    assert!(
        support::wait_gone(pid, Duration::from_secs(10)),
        "the daemon did not stop"
    );

    // The password is in the store (the database or its journal) and only
    // there, in files nobody else may read.
    let dir = std::fs::metadata(&env.store).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir, 0o700);
    let mut holders = Vec::new();
    for entry in std::fs::read_dir(&env.store).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()) {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
            holders.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(!holders.is_empty(), "the password is not in the store");
    assert!(holders.iter().all(|h| h.starts_with("jobs.db")), "{holders:?}");

    // A new daemon reads them back, and answers with the stored password.
    let expected = json!([
        {"target": "server", "scheme": "basic", "user": "alice"},
        {"target": "proxy", "scheme": "digest", "user": "bob"},
    ]);
    assert_eq!(env.info(&id)["credentials"], expected);
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("kept")).unwrap(), body);
    assert_eq!(env.info(&id)["credentials"], expected);
}

#[test]
fn remove_credentials_and_bad_input() {
    let env = Env::new().env("BITS_PW", PASSWORD);
    let id = env.create("bad");
    let set = |rest: &[&str]| {
        let mut args = vec!["set-credentials", id.as_str()];
        args.extend_from_slice(rest);
        env.run(&args)
    };
    set(&["server", "basic", "alice", "--password-env", "BITS_PW"]).ok();
    set(&["proxy", "basic", "carol", "--password-env", "BITS_PW"]).ok();
    // Setting again replaces the set of that target and scheme.
    set(&["server", "BASIC", "bob", "--password-env", "BITS_PW"]).ok();
    assert_eq!(
        env.info(&id)["credentials"],
        json!([
            {"target": "proxy", "scheme": "basic", "user": "carol"},
            {"target": "server", "scheme": "basic", "user": "bob"},
        ])
    );
    env.run(&["remove-credentials", &id, "server", "basic"]).ok();
    assert_eq!(
        env.info(&id)["credentials"],
        json!([{"target": "proxy", "scheme": "basic", "user": "carol"}])
    );
    // None set is not an error, as in BITS.
    env.run(&["remove-credentials", &id, "server", "digest"]).ok();
    env.run(&["remove-credentials", &id, "proxy", "basic"]).ok();
    assert_eq!(env.info(&id)["credentials"], json!([]));
    let text = env.run(&["info", &id]).ok().stdout;
    assert!(text.contains("credentials:         none\n"), "{text}");

    let mut errors = String::new();
    for scheme in ["ntlm", "negotiate", "passport"] {
        let r = set(&["server", scheme, "alice", "--password-env", "BITS_PW"]).fails(2, "0x80004001");
        errors.push_str(&r.stderr);
        env.run(&["remove-credentials", &id, "proxy", scheme])
            .fails(2, "0x80004001");
    }
    for (target, scheme) in [("server", "bearer"), ("origin", "basic")] {
        let r = set(&[target, scheme, "alice", "--password-env", "BITS_PW"]).fails(2, "0x80070057");
        errors.push_str(&r.stderr);
        env.run(&["remove-credentials", &id, target, scheme])
            .fails(2, "0x80070057");
    }
    // Exactly one password source (clap's usage errors are exit 2 too).
    set(&["server", "basic", "alice"]).fails(2, "0x80070057");
    let r = set(&[
        "server",
        "basic",
        "alice",
        "--password-env",
        "BITS_PW",
        "--password-stdin",
    ])
    .fails(2, "0x80070057");
    errors.push_str(&r.stderr);
    // A source that gives nothing is named, and changes nothing.
    let r = set(&["server", "basic", "alice", "--password-env", "BITS_NOT_SET"]).fails(2, "0x80070057");
    assert!(r.stderr.contains("BITS_NOT_SET"), "{r:?}");
    let missing = env.tmp.path().join("no-such-file");
    let r = set(&[
        "server",
        "basic",
        "alice",
        "--password-file",
        missing.to_str().unwrap(),
    ])
    .fails(2, "0x80070002");
    assert!(r.stderr.contains("no-such-file"), "{r:?}");
    // Stdin is /dev/null here: empty.
    let r = set(&["server", "basic", "alice", "--password-stdin"]).fails(2, "0x80070057");
    assert!(r.stderr.contains("--password-stdin"), "{r:?}");
    // Bad user names: never naming the password.
    for user in ["", "al:ice"] {
        let r = set(&["server", "basic", user, "--password-env", "BITS_PW"]).fails(2, "0x80070057");
        errors.push_str(&r.stderr);
    }
    // A final job takes none.
    env.run(&["cancel", &id]).ok();
    let r = set(&["server", "basic", "alice", "--password-env", "BITS_PW"]).fails(2, "0x80200002");
    errors.push_str(&r.stderr);
    assert_eq!(env.info(&id)["credentials"], json!([]));
    assert_no_secret("the errors", &errors);
}

#[test]
fn user_info_in_a_url_is_refused_without_repeating_the_password() {
    let env = Env::new();
    let id = env.create("userinfo");
    let local = env.path("f");
    let local = local.to_str().unwrap();
    for url in [
        format!("https://alice:{PASSWORD}@127.0.0.1:9/f"),
        format!("http://alice:{PASSWORD}@example.org/f"),
        format!("https://:{PASSWORD}@example.org/f"),
        // Not even a valid URL (the port): still never repeated.
        format!("https://alice:{PASSWORD}@127.0.0.1:99999/f"),
    ] {
        let r = env.run(&["add-file", &id, &url, local]).fails(2, "0x80070057");
        assert!(
            r.stderr.contains("set-credentials") || r.stderr.contains("port"),
            "{r:?}"
        );
        assert_no_secret("add-file's error", &r.stderr);
        let r = env
            .run(&["transfer", "--json", &url, local])
            .fails(2, "0x80070057");
        assert_no_secret("transfer's error", &r.stderr);
        assert_eq!(r.stdout, "", "{r:?}");
    }
    // Nor a proxy's.
    let proxy = format!("http://alice:{PASSWORD}@127.0.0.1:3128");
    let r = env
        .run(&["set-proxy-settings", &id, "override", &proxy])
        .fails(2, "0x80070057");
    assert_no_secret("set-proxy-settings' error", &r.stderr);
    let r = env
        .run(&["transfer", "--proxy", &proxy, "https://127.0.0.1:9/f", local])
        .fails(2, "0x80070057");
    assert_no_secret("transfer --proxy's error", &r.stderr);
    // Nothing was added, and no transfer job was created.
    let info = env.info(&id);
    assert_eq!(info["files"], json!([]));
    let list = env.run(&["list", "--all", "--json"]).ok();
    assert_eq!(list.json().as_array().map(Vec::len), Some(1), "{list:?}");
}

#[test]
fn proxy_basic_credentials_through_a_real_tinyproxy() {
    let env = Env::trusting_test_root().env("BITS_PROXY_PW", PASSWORD);
    let proxy = RealProxy::tinyproxy_with(&format!("BasicAuth alice {PASSWORD}"));
    let body = content(80_000, 9);
    let origin =
        https_server(TestPki::shared().leaf(LeafKind::Good)).with("/file", Route::body(body.clone()));
    let id = env.create("px-auth");
    env.add_file(&id, &origin.url("/file"), "px-auth");
    env.run(&["set-proxy-settings", &id, "override", &proxy.url()])
        .ok();
    env.run(&[
        "set-credentials",
        &id,
        "proxy",
        "basic",
        "alice",
        "--password-env",
        "BITS_PROXY_PW",
    ])
    .ok();
    env.run(&["-vv", "resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(env.path("px-auth")).unwrap(), body);
    assert!(proxy
        .connects()
        .iter()
        .any(|c| c.starts_with(&origin.addr().to_string())));
    let log = std::fs::read_to_string(env.store.join("daemon.log")).unwrap();
    assert_no_secret("daemon.log", &log);
}

#[test]
fn a_challenge_without_credentials_fails_the_job() {
    let env = Env::trusting_test_root();
    let origin = guarded_origin(b"never");
    let r = env.run(&[
        "transfer",
        "--no-progress-timeout",
        "0",
        &origin.url("/secret"),
        env.path("none").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("0x80190191"), "{r:?}");
    assert!(!env.path("none").exists());
}
