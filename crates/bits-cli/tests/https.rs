//! HTTPS through the real binary, against real TLS servers on 127.0.0.1 with
//! the test PKI; the trusted root comes in through `SSL_CERT_FILE`, as it
//! would for a user.

mod support;

use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::{Alpn, TlsServer};
use support::Env;

fn check_backend(backend: &str, ignore_date_supported: bool) {
    let env = Env::trusting_test_root();
    let pki = TestPki::shared();
    let good = TlsServer::start(pki.leaf(LeafKind::Good));
    let expired = TlsServer::start(pki.leaf(LeafKind::Expired));

    let local = env.path("good.txt");
    let r = env
        .run(&[
            "--backend",
            backend,
            "transfer",
            "--json",
            good.url("/file").as_str(),
            local.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(r.json()["backend"], backend);
    assert_eq!(std::fs::read(&local).unwrap(), TlsServer::BODY);

    let local = env.path("expired.txt");
    let r = env.run(&[
        "--backend",
        backend,
        "transfer",
        "--json",
        "--no-progress-timeout",
        "5",
        expired.url("/file").as_str(),
        local.to_str().unwrap(),
    ]);
    let j = r.json();
    r.fails(1, "0x80072F05");
    assert_eq!(j["state"], "ERROR");
    assert_eq!(j["error"]["code"], "0x80072F05");
    assert_eq!(j["error"]["context"], "REMOTE_FILE");
    assert!(!local.exists());
    assert_eq!(
        expired.request_count(),
        0,
        "no HTTP request after a refused handshake"
    );

    let url = expired.url("/file");
    let args = [
        "--backend",
        backend,
        "transfer",
        "--security-flags",
        "0x4",
        url.as_str(),
        local.to_str().unwrap(),
    ];
    if ignore_date_supported {
        env.run(&args).ok();
        assert_eq!(std::fs::read(&local).unwrap(), TlsServer::BODY);
    } else {
        env.run(&args).fails(2, "0x80004001");
        assert!(!local.exists());
    }
}

#[cfg(feature = "openssl")]
#[test]
fn openssl_good_expired_and_ignore_date() {
    check_backend("openssl", true);
}

#[cfg(feature = "rustls")]
#[test]
fn rustls_good_expired_and_ignore_date() {
    check_backend("rustls", true);
}

#[cfg(feature = "native")]
#[test]
fn native_good_expired_and_refuses_ignore_date() {
    check_backend("native", false);
}

#[cfg(feature = "openssl")]
#[test]
fn the_system_roots_do_not_trust_the_test_pki() {
    // Without SSL_CERT_FILE the test root is unknown: 0x80072F0D.
    let env = Env::new().env("SSL_CERT_FILE", "/nonexistent/roots.pem");
    let good = TlsServer::start(TestPki::shared().leaf(LeafKind::Good));
    let url = good.url("/file");
    let run = env
        .run(&[
            "--backend",
            "openssl",
            "transfer",
            url.as_str(),
            env.path("x").to_str().unwrap(),
        ])
        .fails(1, "0x80072F0D");
    // The line points at the tool that says why.
    assert!(
        run.stderr.contains(&format!("bits diagnose {url}")),
        "{}",
        run.stderr
    );
}

/// `info --json` says per file which protocol carried it: `h2` from a
/// server that chooses HTTP/2 by ALPN for a job of several files,
/// `http/1.1` for a job of one file (it offers only `http/1.1`: one stream
/// gains nothing from HTTP/2) and from a server that ignores ALPN; `info`
/// prints it too, and the server saw the same protocol.
fn check_protocol(backend: &str) {
    let env = Env::trusting_test_root();
    let leaf = TestPki::shared().leaf(LeafKind::Good);
    for (alpn, files, protocol) in [
        (Alpn::H2, 2, "h2"),
        (Alpn::H2, 1, "http/1.1"),
        (Alpn::Ignore, 2, "http/1.1"),
    ] {
        let server = TlsServer::start_with(leaf, alpn);
        let url = server.url("/file");
        let locals: Vec<_> = (0..files)
            .map(|i| env.path(&format!("{}-{files}-{i}.txt", alpn.as_str())))
            .collect();
        let mut args = vec!["--backend", backend, "transfer", "--json"];
        for local in &locals {
            args.extend([url.as_str(), local.to_str().unwrap()]);
        }
        let r = env.run(&args).ok();
        let case = format!("{alpn:?}, {files} files");
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let info = env.run(&["info", "--json", &id]).ok();
        for (i, local) in locals.iter().enumerate() {
            assert_eq!(std::fs::read(local).unwrap(), TlsServer::BODY, "{case}");
            assert_eq!(r.json()["files"][i]["protocol"], protocol, "{case}");
            assert_eq!(info.json()["files"][i]["protocol"], protocol, "{case}");
        }
        let text = env.run(&["info", &id]).ok();
        assert!(
            text.stdout.contains(&format!("bytes, done, {protocol})")),
            "{case}: {}",
            text.stdout
        );
        let requests = server.requests();
        assert_eq!(requests.len(), files, "{case}");
        assert!(
            requests.iter().all(|q| q.protocol == protocol),
            "{case}: {requests:#?}"
        );
    }
}

#[cfg(feature = "openssl")]
#[test]
fn openssl_info_says_which_protocol_carried_each_file() {
    check_protocol("openssl");
}

#[cfg(feature = "rustls")]
#[test]
fn rustls_info_says_which_protocol_carried_each_file() {
    check_protocol("rustls");
}

#[cfg(feature = "native")]
#[test]
fn native_info_says_which_protocol_carried_each_file() {
    check_protocol("native");
}
