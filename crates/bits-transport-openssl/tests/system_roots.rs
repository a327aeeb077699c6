//! `system_roots(true)` trusts OpenSSL's default verify paths, which
//! honour `SSL_CERT_FILE`; `system_roots(false)` does not. One test in this
//! file, so it has its process (and environment) to itself.

use bits_core::{ConnectionPolicy, Request, Transport};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_openssl::OpensslTransport;

async fn get(t: &OpensslTransport, server: &TlsServer) -> Result<u16, u32> {
    let req = Request::get(server.url("/file"), ConnectionPolicy::default());
    t.send(req).await.map(|r| r.status).map_err(|e| e.hresult().0)
}

#[tokio::test]
async fn ssl_cert_file_replaces_the_system_roots() {
    let pki = TestPki::shared();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, pki.root_pem()).unwrap();
    // Set before any OpenSSL store reads it, and nobody else in this
    // process reads the environment concurrently.
    std::env::set_var("SSL_CERT_FILE", &bundle);
    std::env::set_var("SSL_CERT_DIR", dir.path().join("no-such-dir"));
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let cache = dir.path().join("crl");

    let system = OpensslTransport::builder().crl_cache_dir(&cache).build().unwrap();
    assert_eq!(get(&system, &server).await, Ok(200));

    let none = OpensslTransport::builder()
        .system_roots(false)
        .crl_cache_dir(&cache)
        .build()
        .unwrap();
    assert_eq!(get(&none, &server).await, Err(0x8007_2F0D));

    let explicit = OpensslTransport::builder()
        .system_roots(false)
        .add_root_der(pki.root_der())
        .unwrap()
        .crl_cache_dir(&cache)
        .build()
        .unwrap();
    assert_eq!(get(&explicit, &server).await, Ok(200));
}
