//! `SSL_CERT_FILE` replaces the system store for the default builder, as
//! OpenSSL defines (and as the `bits` CLI and demo rely on). One test in its
//! own binary: it sets the variables before any other thread exists.
//! (native-tls on Windows and macOS does not read these variables.)
#![cfg(not(any(target_os = "macos", target_os = "windows")))]

use bits_core::{Request, SecurityFlags, Transport};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_native::NativeTransport;

#[tokio::test(flavor = "current_thread")]
async fn ssl_cert_file_names_the_trusted_roots() {
    let pki = TestPki::shared();
    let dir = std::env::temp_dir().join(format!("bits-native-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root.pem");
    std::fs::write(&root, pki.root_pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", &root);
    std::env::remove_var("SSL_CERT_DIR");

    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let t = NativeTransport::new().expect("a transport with default roots");
    let resp = t
        .send(Request::get(server.url("/file"), SecurityFlags::DEFAULT))
        .await
        .expect("the root named by SSL_CERT_FILE is trusted");
    assert_eq!(resp.status, 200);

    // The rogue CA's leaf is still refused: the file adds nothing else.
    let rogue = TlsServer::start(pki.leaf(LeafKind::UnknownCa));
    let err = t
        .send(Request::get(rogue.url("/file"), SecurityFlags::DEFAULT))
        .await
        .unwrap_err();
    assert_eq!(err.hresult().0, 0x8007_2F0D);
    std::fs::remove_dir_all(&dir).unwrap();
}
