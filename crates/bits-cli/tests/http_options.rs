//! Custom headers, the client certificate, the HTTP method and server
//! certificate pins (`docs/spec/http-options.md`) through the real binary,
//! its store and daemon, and real servers on 127.0.0.1.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bits_testkit::http::{HttpServer, Route};
use bits_testkit::pki::{LeafKind, TestPki};
use serde_json::Value;
use support::{content, Env};

const SECRET: &str = "Bearer s3cret-t0ken";

fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().collect()
}

/// A job downloading a throttled file, resumed and under way.
fn running_job(env: &Env, server: &HttpServer, backend: Option<&str>) -> String {
    server.set(
        "/slow",
        Route::body(content(2_000_000, 5)).throttle(16 * 1024, Duration::from_millis(20)),
    );
    let id = match backend {
        Some(b) => env
            .run(&["--backend", b, "create", "slow"])
            .ok()
            .stdout
            .trim()
            .to_string(),
        None => env.create("slow"),
    };
    env.add_file(&id, &server.url("/slow"), "slow.bin");
    env.run(&["resume", &id]).ok();
    id
}

#[test]
fn custom_headers_round_trip_refusals_and_write_only() {
    let env = Env::new();
    let id = env.create("h");
    // None set: nothing, exit 0.
    assert_eq!(env.run(&["get-custom-headers", &id]).ok().stdout, "");

    let auth = format!("Authorization: {SECRET}");
    env.run(&["set-custom-headers", &id, "X-Trace: t1", &auth]).ok();
    let got = env.run(&["get-custom-headers", &id]).ok();
    assert_eq!(lines(&got.stdout), ["X-Trace: t1", auth.as_str()]);
    let info = env.info(&id);
    assert_eq!(info["custom_headers"], serde_json::json!(["X-Trace: t1", auth]));
    assert_eq!(info["custom_headers_write_only"], false);
    // People never see the value of a credential header.
    let text = env.run(&["info", &id]).ok().stdout;
    assert!(text.contains("X-Trace: t1"), "{text}");
    assert!(text.contains("Authorization: <hidden>"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");

    // Refusals: one line, the HRESULT, exit 2, the job unchanged.
    let before = env.info(&id);
    let r = env
        .run(&["set-custom-headers", &id, "Range: bytes=0-"])
        .fails(2, "0x80070057");
    assert!(r.stderr.contains("Range"), "{r:?}");
    env.run(&["set-custom-headers", &id, "BITS-Packet-Type: Ping"])
        .fails(2, "0x80070057");
    env.run(&["set-custom-headers", &id, "no colon"])
        .fails(2, "0x80070057");
    let long = format!("X-Long: {}", "a".repeat(16_384));
    let r = env
        .run(&["set-custom-headers", &id, "X-Ok: 1", &long])
        .fails(2, "0x80200021");
    assert!(!r.stderr.contains("aaaa"), "{r:?}");
    assert_eq!(env.info(&id), before);

    // Write-only: for good; still replaceable, never readable.
    env.run(&["make-custom-headers-write-only", &id]).ok();
    let r = env.run(&["get-custom-headers", &id]).fails(2, "0x80070005");
    assert!(!r.stderr.contains("s3cret") && r.stdout.is_empty(), "{r:?}");
    let info = env.info(&id);
    assert_eq!(info["custom_headers"], Value::Null);
    assert_eq!(info["custom_headers_write_only"], true);
    let list = env.run(&["list", "--json"]).ok();
    assert!(
        !list.stdout.contains("s3cret") && !list.stdout.contains("t1"),
        "{list:?}"
    );
    assert_eq!(list.json()[0]["custom_headers"], Value::Null);
    let text = env.run(&["info", &id]).ok().stdout;
    assert!(!text.contains("s3cret") && !text.contains("t1"), "{text}");
    assert!(text.contains("X-Trace: <write-only>"), "{text}");

    env.run(&["set-custom-headers", &id, "X-Other: 2"]).ok();
    env.run(&["get-custom-headers", &id]).fails(2, "0x80070005");
    assert_eq!(env.info(&id)["custom_headers_write_only"], true);

    // None removes them; a final job refuses every setter.
    env.run(&["set-custom-headers", &id]).ok();
    env.run(&["cancel", &id]).ok();
    env.run(&["set-custom-headers", &id, "X-A: 1"])
        .fails(2, "0x80200002");
    env.run(&["make-custom-headers-write-only", &id])
        .fails(2, "0x80200002");
}

#[test]
fn header_values_never_reach_the_daemon_log() {
    let env = Env::new();
    let server = HttpServer::start();
    let id = running_job(&env, &server, None);
    let auth = format!("Authorization: {SECRET}");
    // The daemon carries the job: the change goes through it (and its log).
    env.run(&["-vv", "set-custom-headers", &id, &auth, "X-Visible-Name: v4lue"])
        .ok();
    env.run(&["-vv", "make-custom-headers-write-only", &id]).ok();
    // A refused one too (the daemon logs refusals).
    env.run(&["set-custom-headers", &id, "Authorization s3cret-typo"])
        .fails(2, "0x80070057");
    env.run(&["cancel", &id]).ok();
    // And `transfer -vv`, whose daemon logs at trace level.
    server.set("/small", Route::body(content(1000, 2)));
    env.kill_daemon("TERM");
    let local = env.path("small");
    let r = env
        .run(&[
            "-vv",
            "transfer",
            "--header",
            &auth,
            "--header",
            "Cookie: s3cret-cookie",
            &server.url("/small"),
            local.to_str().unwrap(),
        ])
        .ok();
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    let log = std::fs::read_to_string(env.store.join("daemon.log")).unwrap();
    assert!(log.contains("X-Visible-Name"), "the operation is logged: {log}");
    assert!(!log.contains("s3cret") && !log.contains("v4lue"), "{log}");
}

#[test]
fn http_method_priority_and_resume() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/f", Route::body(content(1000, 1)));
    let id = env.create("m");
    assert_eq!(env.run(&["get-http-method", &id]).ok().stdout, "GET\n");
    assert_eq!(env.info(&id)["http_method"], "GET");
    env.run(&["set-http-method", &id, "post"]).fails(2, "0x80070057");
    env.run(&["set-http-method", &id, "POST"]).ok();
    assert_eq!(env.run(&["get-http-method", &id]).ok().stdout, "POST\n");
    let info = env.info(&id);
    assert_eq!(info["http_method"], "POST");
    assert_eq!(info["priority"], "FOREGROUND");
    let r = env.run(&["set-priority", &id, "low"]).fails(2, "0x80200071");
    assert!(r.stderr.contains("FOREGROUND"), "{r:?}");
    assert!(env
        .run(&["info", &id])
        .ok()
        .stdout
        .contains("http method:         POST"));
    // Back to GET, then resumed: the method is fixed from then on.
    env.run(&["set-http-method", &id, "GET"]).ok();
    env.run(&["set-priority", &id, "low"]).ok();
    env.add_file(&id, &server.url("/f"), "f");
    env.run(&["resume", &id]).ok();
    env.run(&["set-http-method", &id, "POST"]).fails(2, "0x80200002");
    env.run(&["wait", &id]).ok();
    env.run(&["set-http-method", &id, "POST"]).fails(2, "0x80200002");

    let up = env
        .run(&["create", "--upload", "u"])
        .ok()
        .stdout
        .trim()
        .to_string();
    env.run(&["set-http-method", &up, "POST"]).fails(2, "0x80004001");
}

/// `sha256//` and the base64 of the SHA-256 of `der`'s SubjectPublicKeyInfo.
#[cfg(any(feature = "openssl", feature = "rustls"))]
fn pin_of(der: &[u8]) -> String {
    bits_core::Pin(bits_http::chain::spki_sha256(der).unwrap()).to_string()
}

fn other_pin(byte: u8) -> String {
    bits_core::Pin([byte; 32]).to_string()
}

#[cfg(any(feature = "openssl", feature = "rustls"))]
fn pin_backend() -> &'static str {
    if cfg!(feature = "openssl") {
        "openssl"
    } else {
        "rustls"
    }
}

#[cfg(any(feature = "openssl", feature = "rustls"))]
#[test]
fn pins_round_trip_and_only_while_suspended() {
    let env = Env::new();
    let backend = pin_backend();
    let id = env
        .run(&["--backend", backend, "create", "p"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(env.run(&["get-server-cert-pins", &id]).ok().stdout, "");
    for bad in ["sha1//AAAA", "sha256//AAAA", "sha256//not base64!", "nothing"] {
        env.run(&["set-server-cert-pins", &id, bad])
            .fails(2, "0x80070057");
    }
    assert_eq!(env.info(&id)["server_cert_pins"], Value::Null);
    let (a, b) = (other_pin(1), other_pin(2));
    env.run(&["set-server-cert-pins", &id, &format!("{a} ; {b}")])
        .ok();
    let want = format!("{a};{b}");
    assert_eq!(
        env.run(&["get-server-cert-pins", &id]).ok().stdout,
        format!("{want}\n")
    );
    assert_eq!(env.info(&id)["server_cert_pins"], want.as_str());
    // None removes them.
    env.run(&["set-server-cert-pins", &id]).ok();
    assert_eq!(env.run(&["get-server-cert-pins", &id]).ok().stdout, "");

    // Not while the job is active.
    let server = HttpServer::start();
    let run = running_job(&env, &server, Some(backend));
    env.run(&["set-server-cert-pins", &run, &a])
        .fails(2, "0x80200075");
    env.run(&["set-server-cert-pins", &run]).fails(2, "0x80200075");
    env.run(&["suspend", &run]).ok();
    env.run(&["set-server-cert-pins", &run, &a]).ok();
    env.run(&["cancel", &run]).ok();
    env.run(&["set-server-cert-pins", &run]).fails(2, "0x80200002");
}

#[cfg(feature = "native")]
#[test]
fn native_refuses_pins() {
    let env = Env::new();
    let id = env
        .run(&["--backend", "native", "create", "p"])
        .ok()
        .stdout
        .trim()
        .to_string();
    env.run(&["set-server-cert-pins", &id, &other_pin(1)])
        .fails(2, "0x80004001");
    assert_eq!(env.info(&id)["server_cert_pins"], Value::Null);
    let url = "https://127.0.0.1:1/x";
    let local = env.path("x");
    env.run(&[
        "--backend",
        "native",
        "transfer",
        "--pin",
        &other_pin(1),
        url,
        local.to_str().unwrap(),
    ])
    .fails(2, "0x80004001");
}

#[cfg(any(feature = "openssl", feature = "rustls"))]
#[test]
fn transfer_with_a_pin_over_https() {
    use bits_testkit::tls::TlsServer;
    let env = Env::new();
    let root = env.tmp.path().join("root.pem");
    std::fs::write(&root, TestPki::shared().root_pem()).unwrap();
    let env = env.env("SSL_CERT_FILE", root.to_str().unwrap());
    let leaf = TestPki::shared().leaf(LeafKind::Good);
    let server = TlsServer::start(leaf);
    let backend = pin_backend();
    let url = server.url("/file");

    // The server's own key among others: it passes.
    let right = format!("{};{}", other_pin(7), pin_of(&leaf.cert_der()));
    let local = env.path("pinned");
    let r = env
        .run(&[
            "--backend",
            backend,
            "transfer",
            "--json",
            "--pin",
            &right,
            url.as_str(),
            local.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(r.json()["server_cert_pins"], right.as_str());
    assert_eq!(std::fs::read(&local).unwrap(), TlsServer::BODY);

    // Another key: refused after the handshake, before any request.
    let before = server.request_count();
    let local = env.path("mismatch");
    let r = env.run(&[
        "--backend",
        backend,
        "transfer",
        "--json",
        "--no-progress-timeout",
        "0",
        "--pin",
        &other_pin(9),
        url.as_str(),
        local.to_str().unwrap(),
    ]);
    let j = r.json();
    r.fails(1, "0x800B010B");
    assert_eq!(j["error"]["code"], "0x800B010B");
    assert_eq!(j["error"]["context"], "SERVER_CERTIFICATE_CALLBACK");
    assert_eq!(server.request_count(), before, "no HTTP request");
    assert!(!local.exists());

    // A bad pin: nothing is created.
    env.run(&[
        "transfer",
        "--pin",
        "sha256//x",
        url.as_str(),
        local.to_str().unwrap(),
    ])
    .fails(2, "0x80070057");
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

#[test]
fn client_certificate_files_are_checked_first() {
    let env = Env::new();
    let leaf = TestPki::shared().leaf(LeafKind::Good);
    let id = env.create("c");
    assert_eq!(env.run(&["get-client-certificate", &id]).ok().stdout, "");
    assert_eq!(env.info(&id)["client_certificate"], Value::Null);

    // No such file.
    let missing = env.path("missing.pem");
    env.run(&["set-client-certificate", &id, missing.to_str().unwrap()])
        .fails(2, "0x80070002");
    // A relative one is looked for in the current directory.
    let r = support::to_run(
        env.cmd(&["set-client-certificate", &id, "missing.pem"])
            .current_dir(&env.data)
            .output()
            .unwrap(),
    )
    .fails(2, "0x80070002");
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{r:?}");

    // A key its group or others can read: E_ACCESSDENIED, saying chmod 600.
    let cert = write_mode(&env.path("cert.pem"), &leaf.cert_pem(), 0o644);
    let key = write_mode(&env.path("key.pem"), &leaf.key_pem(), 0o640);
    let r = env
        .run(&[
            "set-client-certificate",
            &id,
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .fails(2, "0x80070005");
    assert!(r.stderr.contains("chmod 600"), "{r:?}");
    let mut both = leaf.cert_pem();
    both.extend(leaf.key_pem());
    let both = write_mode(&env.path("both.pem"), &both, 0o604);
    env.run(&["set-client-certificate", &id, both.to_str().unwrap()])
        .fails(2, "0x80070005");
    // A missing key file.
    env.run(&[
        "set-client-certificate",
        &id,
        cert.to_str().unwrap(),
        "--key",
        "nokey.pem",
    ])
    .fails(2, "0x80070002");
    assert_eq!(env.info(&id)["client_certificate"], Value::Null);

    // A password never comes from argv.
    let r = env
        .run(&[
            "set-client-certificate",
            &id,
            both.to_str().unwrap(),
            "--password",
            "hunter2",
        ])
        .fails(2, "0x80070057");
    assert!(!r.stderr.contains("hunter2"), "{r:?}");
    env.run(&[
        "set-client-certificate",
        &id,
        both.to_str().unwrap(),
        "--password-env",
        "BITS_TEST_SURELY_UNSET",
    ])
    .fails(2, "0x80070057");
    env.run(&[
        "set-client-certificate",
        &id,
        both.to_str().unwrap(),
        "--password-file",
        "/nonexistent/pw",
    ])
    .fails(2, "0x80070002");

    // A final job: the state is checked before the file.
    env.run(&["cancel", &id]).ok();
    env.run(&["set-client-certificate", &id, missing.to_str().unwrap()])
        .fails(2, "0x80200002");
    env.run(&["remove-client-certificate", &id])
        .fails(2, "0x80200002");
}

/// A good certificate and key (`0600`), on each backend: the backend
/// either takes it (get prints the absolute path, the subject and the
/// thumbprint) or refuses it with `E_NOTIMPL` (exit 2, job unchanged);
/// never anything else.
#[test]
fn a_good_client_certificate_is_taken_or_refused_with_e_notimpl() {
    let env = Env::new();
    let leaf = TestPki::shared().leaf(LeafKind::Good);
    let mut both = leaf.cert_pem();
    both.extend(leaf.key_pem());
    write_mode(&env.path("client.pem"), &both, 0o600);
    for backend in ["openssl", "rustls", "native"] {
        let created = env.run(&["--backend", backend, "create", backend]);
        if created.code != 0 {
            continue; // not compiled in
        }
        let id = created.stdout.trim().to_string();
        // Relative: resolved against the current directory.
        let r = support::to_run(
            env.cmd(&["set-client-certificate", &id, "client.pem"])
                .current_dir(&env.data)
                .output()
                .unwrap(),
        );
        if r.code == 0 {
            let got = env.run(&["get-client-certificate", &id]).ok();
            let got = lines(&got.stdout);
            assert_eq!(got.len(), 3, "{got:?}");
            assert_eq!(got[0], env.path("client.pem").to_str().unwrap());
            assert!(got[1].contains("CN="), "{got:?}");
            assert!(
                got[2].len() == 40 && got[2].bytes().all(|b| b.is_ascii_hexdigit()),
                "{got:?}"
            );
            let info = env.info(&id);
            assert_eq!(info["client_certificate"]["path"], got[0]);
            assert_eq!(info["client_certificate"]["sha1"], got[2]);
            env.run(&["remove-client-certificate", &id]).ok();
            assert_eq!(env.run(&["get-client-certificate", &id]).ok().stdout, "");
        } else {
            let r = r.fails(2, "0x80004001");
            assert!(r.stderr.contains(backend), "{r:?}");
        }
        assert_eq!(env.info(&id)["client_certificate"], Value::Null);
    }
}

#[test]
fn transfer_checks_its_options_before_creating_a_job() {
    let env = Env::new();
    let server = HttpServer::start();
    server.set("/f", Route::body(content(100, 3)));
    let url = server.url("/f");
    let local = env.path("f");
    let l = local.to_str().unwrap();
    env.run(&["transfer", "--header", "Host: x", &url, l])
        .fails(2, "0x80070057");
    env.run(&["transfer", "--client-certificate", "nothere.pem", &url, l])
        .fails(2, "0x80070002");
    env.run(&["transfer", "--key", "k.pem", &url, l])
        .fails(2, "0x80070057");
    env.run(&["transfer", "--password", "hunter2", &url, l])
        .fails(2, "0x80070057");
    env.run(&["transfer", "--priority", "urgent", &url, l])
        .fails(2, "0x80070057");
    assert_eq!(
        env.run(&["list", "--all", "--json"]).ok().json(),
        serde_json::json!([])
    );
    assert!(!local.exists());

    let r = env
        .run(&[
            "transfer",
            "--json",
            "--priority",
            "high",
            "--header",
            "X-Trace: t1",
            &url,
            l,
        ])
        .ok();
    let j = r.json();
    assert_eq!(j["priority"], "HIGH");
    assert_eq!(j["custom_headers"], serde_json::json!(["X-Trace: t1"]));
    assert_eq!(j["http_method"], "GET");
    assert_eq!(j["client_certificate"], Value::Null);
}
