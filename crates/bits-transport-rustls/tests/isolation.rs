//! A connection verified under relaxed flags never serves a stricter
//! request (pools per flag value, one `ClientConfig` per handshake, resumption
//! disabled).

use bits_core::{Request, SecurityFlags, Transport};
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_rustls::RustlsTransport;

fn transport() -> RustlsTransport {
    let cache = std::env::temp_dir().join("bits-rustls-isolation-test-never-used");
    RustlsTransport::builder()
        .add_root_pem(TestPki::shared().root_pem())
        .unwrap()
        .system_roots(false)
        .crl_cache_dir(cache)
        .build()
        .unwrap()
}

async fn get(t: &RustlsTransport, server: &TlsServer, flags: u32) -> Result<u16, u32> {
    let req = Request::get(server.url("/file"), SecurityFlags::new(flags).unwrap());
    match t.send(req).await {
        Ok(mut response) => {
            while response
                .body
                .next_chunk()
                .await
                .map_err(|e| e.hresult().0)?
                .is_some()
            {}
            Ok(response.status)
        }
        Err(e) => Err(e.hresult().0),
    }
}

#[tokio::test]
async fn a_connection_made_under_ignore_unknown_ca_never_serves_strict_requests() {
    let server = TlsServer::start(TestPki::shared().leaf(LeafKind::UnknownCa));
    let t = transport();
    assert_eq!(get(&t, &server, 0x8).await, Ok(200));
    assert_eq!(get(&t, &server, 0x8).await, Ok(200));
    assert_eq!(get(&t, &server, 0).await, Err(0x8007_2F0D));
    assert_eq!(get(&t, &server, 0x4).await, Err(0x8007_2F0D));
    // Redirect bits share the certificate policy: same pool, still fine.
    assert_eq!(get(&t, &server, 0x208).await, Ok(200));
    assert_eq!(get(&t, &server, 0).await, Err(0x8007_2F0D));
    // Two strict requests reached no HTTP.
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_connection_made_under_ignore_cn_never_serves_strict_requests() {
    let server = TlsServer::start(TestPki::shared().leaf(LeafKind::WrongHost));
    let t = transport();
    assert_eq!(get(&t, &server, 0x2).await, Ok(200));
    assert_eq!(get(&t, &server, 0).await, Err(0x8007_2F06));
    assert_eq!(get(&t, &server, 0x1C).await, Err(0x8007_2F06));
    assert_eq!(get(&t, &server, 0x2).await, Ok(200));
    assert_eq!(server.request_count(), 2);
    // Each failed strict attempt was a new handshake, not a reused one.
    assert!(server.handshakes_failed() >= 2);
}
