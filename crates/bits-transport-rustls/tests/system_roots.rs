//! `system_roots(true)` trusts what `rustls-native-certs` finds, where
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the platform store as OpenSSL
//! defines; `system_roots(false)` trusts only the builder's roots. The test
//! runs itself again as a child process with the variables set, so no
//! environment is changed in a process that has threads.
#![cfg(not(any(target_os = "macos", target_os = "windows")))]

use std::process::Command;

use bits_core::{ConnectionPolicy, Request, Transport};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_rustls::RustlsTransport;

const CHILD: &str = "BITS_RUSTLS_ENV_ROOTS_CHILD";
const TEST: &str = "ssl_cert_file_replaces_the_system_roots";

#[test]
fn ssl_cert_file_replaces_the_system_roots() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, TestPki::shared().root_pem()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SSL_CERT_FILE", &bundle)
        .env("SSL_CERT_DIR", dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

async fn get(t: &RustlsTransport, server: &TlsServer) -> Result<u16, u32> {
    let req = Request::get(server.url("/file"), ConnectionPolicy::default());
    t.send(req).await.map(|r| r.status).map_err(|e| e.hresult().0)
}

fn child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = TestPki::shared();
        let server = TlsServer::start(pki.leaf(LeafKind::Good));
        let cache = std::env::temp_dir().join("bits-rustls-system-roots-never-used");

        let system = RustlsTransport::builder().crl_cache_dir(&cache).build().unwrap();
        assert_eq!(get(&system, &server).await, Ok(200));

        let none = RustlsTransport::builder()
            .system_roots(false)
            .crl_cache_dir(&cache)
            .build()
            .unwrap();
        assert_eq!(get(&none, &server).await, Err(0x8007_2F0D));

        let explicit = RustlsTransport::builder()
            .system_roots(false)
            .add_root_der(pki.root_der())
            .unwrap()
            .crl_cache_dir(&cache)
            .build()
            .unwrap();
        assert_eq!(get(&explicit, &server).await, Ok(200));
    });
}
