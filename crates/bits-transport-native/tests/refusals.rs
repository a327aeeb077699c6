//! The native backend refuses exactly the flag values native-tls cannot
//! honour, and honours the others exactly: `0x02` accepts a wrong host name
//! and still rejects every other fault ("relax narrowly"). Real TLS servers
//! on 127.0.0.1 with the shared test PKI.

use bits_core::{BitsError, ConnectionPolicy, Request, SecurityFlags, Transport};
use bits_testkit::backend;
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use bits_transport_native::{refusal_reason, Native, NativeTransport, SUPPORTED_CERT_FLAGS};
use url::Url;

const OK: u32 = 0;
const DATE: u32 = 0x8007_2F05;
const CN: u32 = 0x8007_2F06;
const CA: u32 = 0x8007_2F0D;
const USAGE: u32 = 0x8007_2F93;
const E_NOTIMPL: u32 = 0x8000_4001;

const POLICIES: [u32; 3] = [0x000, 0x100, 0x200];
const HTTPS_TO_HTTP: [u32; 2] = [0x000, 0x800];

fn transport() -> NativeTransport {
    backend::with_pki::<Native>(TestPki::shared())
}

fn flags(bits: u32) -> SecurityFlags {
    SecurityFlags::new(bits).expect("a valid flag value")
}

/// GETs `url` under `bits`: `Ok(body)` or the error's HRESULT.
async fn get(t: &dyn Transport, url: Url, bits: u32) -> Result<Vec<u8>, (u32, String)> {
    let fail = |e: BitsError| (e.hresult().0, e.to_string());
    let mut resp = t
        .send(Request::get(url, ConnectionPolicy::new(flags(bits))))
        .await
        .map_err(fail)?;
    assert_eq!(resp.status, 200);
    let mut body = Vec::new();
    while let Some(chunk) = resp.body.next_chunk().await.map_err(fail)? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn every_valid_value() -> impl Iterator<Item = u32> {
    (0..=SecurityFlags::CERT_MASK).flat_map(|cert| {
        POLICIES
            .iter()
            .flat_map(move |p| HTTPS_TO_HTTP.iter().map(move |h| cert | p | h))
    })
}

#[test]
fn check_flags_refuses_exactly_what_native_tls_cannot_honour() {
    let t = transport();
    let mut checked = 0;
    for bits in every_valid_value() {
        let cert = bits & SecurityFlags::CERT_MASK;
        let expected_ok = cert == 0x00 || cert == 0x02;
        let got = t.check_policy(&ConnectionPolicy::new(flags(bits)));
        match (&got, expected_ok) {
            (Ok(()), true) => {}
            (Err(e), false) => {
                assert_eq!(e.hresult().0, E_NOTIMPL, "0x{bits:04X}: {e}");
                let why = refusal_reason(bits).expect("a refused value has a reason");
                assert!(e.to_string().contains(why), "0x{bits:04X}: {e}");
            }
            _ => panic!(
                "0x{bits:04X}: expected {}, got {got:?}",
                if expected_ok { "Ok" } else { "E_NOTIMPL" }
            ),
        }
        assert_eq!(SUPPORTED_CERT_FLAGS.contains(&cert), expected_ok);
        assert_eq!(refusal_reason(bits).is_none(), expected_ok);
        checked += 1;
    }
    assert_eq!(checked, 32 * 3 * 2);
}

#[tokio::test]
async fn a_refused_value_never_reaches_the_network() {
    let server = TlsServer::start(TestPki::shared().leaf(LeafKind::Good));
    let t = transport();
    for bits in every_valid_value().filter(|b| refusal_reason(*b).is_some()) {
        let got = get(&t, server.url("/file"), bits).await;
        assert_eq!(got.map_err(|e| e.0), Err(E_NOTIMPL), "0x{bits:04X}");
    }
    assert_eq!(server.handshakes_ok() + server.handshakes_failed(), 0);
    assert_eq!(server.request_count(), 0);
}

/// Expected outcome under 0x00 and under 0x02, for each leaf. Where a leaf
/// has several faults, native-tls on Linux reports OpenSSL's first: chain,
/// then purpose, then host name, then dates (`docs/spec/tls.md` §2.3).
const EXPECTED: &[(LeafKind, u32, u32)] = &[
    (LeafKind::Good, OK, OK),
    (LeafKind::Expired, DATE, DATE),
    (LeafKind::NotYet, DATE, DATE),
    (LeafKind::WrongHost, CN, OK),
    (LeafKind::UnknownCa, CA, CA),
    (LeafKind::SelfSigned, CA, CA),
    (LeafKind::ClientAuth, USAGE, USAGE),
    // No CRL check was asked for: a revoked certificate is not a fault.
    (LeafKind::Revoked, OK, OK),
    (LeafKind::CrlUnreachable, OK, OK),
    (LeafKind::ExpWrongHost, CN, DATE),
    (LeafKind::ExpUnknownCa, CA, CA),
    (LeafKind::WrongHostUnknownCa, CA, CA),
    (LeafKind::ClientWrongHost, USAGE, USAGE),
    (LeafKind::RevokedExpired, DATE, DATE),
    (LeafKind::ViaInt, OK, OK),
];

#[tokio::test]
async fn honoured_values_relax_exactly_the_host_name_check() {
    assert_eq!(EXPECTED.len(), LeafKind::ALL.len());
    let pki = TestPki::shared();
    let t = transport();
    for &(kind, strict, ignore_cn) in EXPECTED {
        let server = TlsServer::start(pki.leaf(kind));
        // The redirect bits ride along and change nothing here.
        for (bits, expected) in [
            (0x0000, strict),
            (0x0002, ignore_cn),
            (0x0200, strict),
            (0x0902, ignore_cn),
        ] {
            let got = get(&t, server.url("/file"), bits).await;
            let uncovered = kind.uncovered_faults(bits);
            match got {
                Ok(body) => {
                    assert_eq!(expected, OK, "{kind} under 0x{bits:04X} was accepted");
                    assert!(uncovered.is_empty(), "{kind} under 0x{bits:04X}: {uncovered:?}");
                    assert_eq!(body, TlsServer::BODY);
                }
                Err((code, text)) => {
                    assert_eq!(code, expected, "{kind} under 0x{bits:04X}: {text}");
                    assert!(
                        uncovered.iter().any(|f| f.hresult().0 == code),
                        "{kind} under 0x{bits:04X}: 0x{code:08X} is not one of {uncovered:?}"
                    );
                }
            }
        }
        if strict != OK && ignore_cn != OK {
            assert_eq!(
                server.request_count(),
                0,
                "{kind}: a refused certificate got a request"
            );
        }
    }
}

/// Pitfall 9 of `docs/spec/tls.md`: the testkit's TLS server keeps connections alive, so the
/// 0x02 connection stays pooled; a 0x00 request to the same server must
/// not reuse it but make (and fail) its own handshake. (The server counts
/// failed handshakes asynchronously, so that count is not asserted.)
#[tokio::test]
async fn a_connection_made_under_0x02_never_serves_0x00() {
    let server = TlsServer::start(TestPki::shared().leaf(LeafKind::WrongHost));
    let t = transport();
    let url = server.url("/file");
    assert!(get(&t, url.clone(), 0x02).await.is_ok());
    assert_eq!(get(&t, url.clone(), 0x00).await.map_err(|e| e.0), Err(CN));
    assert!(get(&t, url.clone(), 0x02).await.is_ok());
    assert_eq!(get(&t, url, 0x00).await.map_err(|e| e.0), Err(CN));
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.handshakes_ok(), 1, "the 0x02 connection was reused");
    assert_eq!(t.http().connections_made(&ConnectionPolicy::new(flags(0x02))), 1);
    assert_eq!(t.http().connections_made(&ConnectionPolicy::new(flags(0x00))), 0);
}
