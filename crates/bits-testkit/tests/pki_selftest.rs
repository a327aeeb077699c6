//! The test PKI is what it claims to be, checked with the openssl crate
//! directly and with a plain `SslConnector`: no backend involved.

use std::pin::Pin;

use bits_testkit::crl::CrlServer;
use bits_testkit::pki::{Fault, LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use openssl::asn1::Asn1Time;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{CrlStatus, X509StoreContext, X509VerifyResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now() -> Asn1Time {
    Asn1Time::days_from_now(0).unwrap()
}

fn cdp_uris(cert: &openssl::x509::X509Ref) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return vec![];
    };
    points
        .iter()
        .filter_map(|dp| dp.distpoint())
        .filter_map(|n| n.fullname())
        .flat_map(|names| {
            names
                .iter()
                .filter_map(|g| g.uri().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Verifies `kind`'s chain against the trusted root, without host checks;
/// returns the OpenSSL verify result code.
fn verify_code(pki: &TestPki, kind: LeafKind) -> i32 {
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(pki.root_cert().clone()).unwrap();
    let store = store.build();
    let leaf = pki.leaf(kind);
    let mut chain = Stack::new().unwrap();
    for c in leaf.chain() {
        chain.push(c.clone()).unwrap();
    }
    let mut ctx = X509StoreContext::new().unwrap();
    ctx.init(&store, leaf.cert(), &chain, |c| {
        c.verify_cert()?;
        Ok(c.error())
    })
    .unwrap()
    .as_raw()
}

#[test]
fn leaves_have_the_claimed_dates_names_and_issuers() {
    let pki = TestPki::shared();
    let now = now();
    for leaf in pki.leaves() {
        let c = leaf.cert();
        let date_bad = leaf.faults().contains(&Fault::Date);
        let valid_now = c.not_before() <= now && c.not_after() > now;
        assert_eq!(valid_now, !date_bad, "{}: validity", leaf.name());
        assert_eq!(cdp_uris(c).len(), 1, "{}: one CDP", leaf.name());
        assert!(
            cdp_uris(c)[0].starts_with(pki.crl_base()),
            "{}: CDP base",
            leaf.name()
        );
        assert!(
            leaf.key().public_eq(&c.public_key().unwrap()),
            "{}: key",
            leaf.name()
        );
    }
    assert!(pki.leaf(LeafKind::Expired).cert().not_after() < now);
    assert!(pki.leaf(LeafKind::NotYet).cert().not_before() > now);
    // Chain verification codes, as Appendix B of `docs/spec/tls.md` lists them
    // (host names are not checked here).
    use LeafKind::*;
    let expect = [
        (Good, 0),
        (Expired, 10),
        (NotYet, 9),
        (WrongHost, 0),
        (UnknownCa, 20),
        (SelfSigned, 18),
        (Revoked, 0),
        (CrlUnreachable, 0),
        (ViaInt, 0),
        (RevokedExpired, 10),
    ];
    for (kind, code) in expect {
        assert_eq!(verify_code(pki, kind), code, "{kind}");
    }
}

#[test]
fn crls_list_what_they_claim_and_verify_against_their_issuer() {
    let pki = TestPki::shared();
    let root_key = pki.root_cert().public_key().unwrap();
    let now = now();
    let crl = pki.root_crl();
    assert!(crl.verify(&root_key).unwrap());
    assert!(*crl.next_update().unwrap() > now);
    assert!(crl.last_update() <= now);
    for leaf in pki.leaves() {
        let revoked = matches!(crl.get_by_cert(leaf.cert()), CrlStatus::Revoked(_));
        assert_eq!(
            revoked,
            leaf.faults().contains(&Fault::Revoked),
            "{}",
            leaf.name()
        );
    }
    let int_key = pki.intermediate_cert().public_key().unwrap();
    assert!(pki.intermediate_crl().verify(&int_key).unwrap());
    assert!(matches!(
        pki.intermediate_crl()
            .get_by_cert(pki.leaf(LeafKind::ViaInt).cert()),
        CrlStatus::NotRevoked
    ));
    let stale = pki.stale_root_crl();
    assert!(stale.verify(&root_key).unwrap());
    assert!(*stale.next_update().unwrap() < now);
    let bad = pki.badsig_root_crl();
    assert_eq!(
        bad.issuer_name().to_der().unwrap(),
        crl.issuer_name().to_der().unwrap()
    );
    assert!(!bad.verify(&root_key).unwrap());
    // DER accessors round-trip.
    assert_eq!(
        openssl::x509::X509Crl::from_der(pki.root_crl_der())
            .unwrap()
            .to_der()
            .unwrap(),
        pki.root_crl_der()
    );
}

#[test]
fn shared_is_stable_within_a_process_and_reissue_keeps_keys() {
    let a = TestPki::shared();
    let b = TestPki::shared();
    assert!(std::ptr::eq(a, b));
    let other = a.with_crl_base("http://127.0.0.1:1");
    for (x, y) in a.leaves().iter().zip(other.leaves()) {
        assert!(x.key().public_eq(y.key()));
        assert_eq!(
            x.cert().serial_number().to_bn().unwrap(),
            y.cert().serial_number().to_bn().unwrap()
        );
        assert!(cdp_uris(y.cert())[0].starts_with("http://127.0.0.1:1/"));
    }
    assert_eq!(a.root_pem(), other.root_pem());
    // What this process uses is what is cached on disk for every other
    // test process (nextest runs each test in its own process).
    let cached = std::fs::read_to_string(TestPki::shared_cache_dir().join("pki-v1.json")).unwrap();
    let cached: serde_json::Value = serde_json::from_str(&cached).unwrap();
    assert_eq!(cached["root_cert"].as_str().unwrap().as_bytes(), a.root_pem());
}

async fn get_over_tls(connector: &SslConnector, server: &TlsServer, host: &str) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(server.addr())
        .await
        .map_err(|e| e.to_string())?;
    let ssl = connector.configure().unwrap().into_ssl(host).unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    if let Err(e) = Pin::new(&mut s).connect().await {
        return Err(format!("{e}: verify result {}", s.ssl().verify_result().as_raw()));
    }
    s.write_all(b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test]
async fn plain_ssl_connector_accepts_good_and_rejects_expired() {
    let pki = TestPki::shared();
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(pki.root_cert().clone()).unwrap();
    b.set_verify_cert_store(store.build()).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(pki.root_cert().clone()).unwrap();
    b.set_cert_store(store.build());
    let connector = b.build();

    let good = TlsServer::start(pki.leaf(LeafKind::Good));
    let body = get_over_tls(&connector, &good, "127.0.0.1").await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(body.ends_with(TlsServer::BODY));
    assert_eq!(good.request_count(), 1);

    let via = TlsServer::start(pki.leaf(LeafKind::ViaInt));
    get_over_tls(&connector, &via, "localhost").await.unwrap();

    for kind in [
        LeafKind::Expired,
        LeafKind::WrongHost,
        LeafKind::UnknownCa,
        LeafKind::ClientAuth,
    ] {
        let server = TlsServer::start(pki.leaf(kind));
        let err = get_over_tls(&connector, &server, "127.0.0.1").await.unwrap_err();
        assert!(err.contains("verify"), "{kind}: {err}");
        assert_eq!(server.request_count(), 0, "{kind}: no HTTP request may arrive");
    }
}

#[tokio::test]
async fn tls_server_honours_range() {
    let pki = TestPki::shared();
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let connector = b.build();
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let ssl = connector.configure().unwrap().into_ssl("localhost").unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s.write_all(b"GET /file?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=2-5\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 206"), "{text}");
    assert!(out.ends_with(&TlsServer::BODY[2..=5]));
    assert_eq!(server.requests()[0].range.as_deref(), Some("bytes=2-5"));
    assert_eq!(server.requests_for("/file?x=1"), 1);
}

#[test]
fn shared_crl_port_serves_the_fresh_root_crl() {
    let pki = TestPki::shared();
    let fetch = |path: &str| -> Vec<u8> {
        use std::io::{Read, Write};
        let addr = pki.crl_base().trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    };
    let root = fetch("/root.crl");
    assert!(root.starts_with(b"HTTP/1.1 200"));
    assert!(root.ends_with(pki.root_crl_der()));
    assert!(fetch("/int.crl").ends_with(pki.intermediate_crl_der()));
    assert!(fetch("/unreachable.crl").starts_with(b"HTTP/1.1 404"));
}

#[test]
fn crl_server_swaps_and_counts() {
    let pki = TestPki::shared();
    let server = CrlServer::start();
    server.serve_pki(pki);
    let fetch = |path: &str| -> Vec<u8> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    };
    assert!(fetch("/root.crl").ends_with(pki.root_crl_der()));
    server.set("/root.crl", pki.stale_root_crl_der());
    assert!(fetch("/root.crl").ends_with(pki.stale_root_crl_der()));
    server.set_status("/root.crl", 404);
    assert!(fetch("/root.crl").starts_with(b"HTTP/1.1 404"));
    assert_eq!(server.requests("/root.crl"), 3);
    assert_eq!(server.requests("/int.crl"), 0);
    assert_eq!(X509VerifyResult::OK.as_raw(), 0);
}

#[tokio::test]
async fn scriptable_https_server_serves_routes_over_tls() {
    use bits_testkit::http::Route;
    let pki = TestPki::shared();
    let server = bits_testkit::tls::https_server(pki.leaf(LeafKind::Good));
    server.set("/file", Route::body(TlsServer::BODY.to_vec()));
    assert!(server.url("/file").starts_with("https://127.0.0.1:"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(pki.root_cert().clone()).unwrap();
    b.set_cert_store(store.build());
    let connector = b.build();
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let ssl = connector.configure().unwrap().into_ssl("127.0.0.1").unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s.write_all(b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(out.ends_with(TlsServer::BODY));
}
