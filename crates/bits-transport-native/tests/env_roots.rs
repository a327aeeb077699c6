//! `SSL_CERT_FILE` replaces the system store for the default builder, as
//! OpenSSL defines (and as the `bits` CLI and demo rely on). The test runs
//! itself again as a child process with the variable set, so no
//! environment is changed in a process that has threads.
//! (native-tls on Windows and macOS does not read these variables.)
#![cfg(not(any(target_os = "macos", target_os = "windows")))]

use std::process::Command;

use bits_core::{ConnectionPolicy, Request, Transport};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_native::NativeTransport;

const CHILD: &str = "BITS_NATIVE_ENV_ROOTS_CHILD";
const TEST: &str = "ssl_cert_file_names_the_trusted_roots";

#[test]
fn ssl_cert_file_names_the_trusted_roots() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let dir = std::env::temp_dir().join(format!("bits-native-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root.pem");
    std::fs::write(&root, TestPki::shared().root_pem()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SSL_CERT_FILE", &root)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

fn child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = TestPki::shared();
        let server = TlsServer::start(pki.leaf(LeafKind::Good));
        let t = NativeTransport::new().expect("a transport with default roots");
        let resp = t
            .send(Request::get(server.url("/file"), ConnectionPolicy::default()))
            .await
            .expect("the root named by SSL_CERT_FILE is trusted");
        assert_eq!(resp.status, 200);

        // The rogue CA's leaf is still refused: the file adds nothing else.
        let rogue = TlsServer::start(pki.leaf(LeafKind::UnknownCa));
        let err = t
            .send(Request::get(rogue.url("/file"), ConnectionPolicy::default()))
            .await
            .unwrap_err();
        assert_eq!(err.hresult().0, 0x8007_2F0D);
    });
}
