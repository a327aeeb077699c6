//! The conformance runner itself, driven by two reference transports built
//! here on the openssl crate: a strict one (honours only flags 0, refuses the
//! rest) that must conform, and a broadening one (accepts any certificate
//! under any flags) that the runner must catch.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bits_core::{BitsError, BodyStream, ConnectionPolicy, Request, Response, Transport};
use bits_testkit::conformance::{
    run_matrix, run_matrix_with, Outcome, PinKind, MATRIX_FLAGS, PIN_FLAGS, PIN_ROWS,
};
use bits_testkit::pki::{LeafKind, TestPki};
use bytes::Bytes;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct WholeBody(Option<Bytes>);

#[async_trait]
impl BodyStream for WholeBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError> {
        Ok(self.0.take())
    }
}

/// A minimal HTTPS GET over OpenSSL: `strict` verifies against the test
/// root (host name included), otherwise verification is off entirely.
#[derive(Debug)]
struct RefTransport {
    name: &'static str,
    strict: bool,
    connector: SslConnector,
}

impl RefTransport {
    fn new(name: &'static str, pki: &TestPki, strict: bool) -> RefTransport {
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(pki.root_cert().clone()).unwrap();
        b.set_cert_store(store.build());
        b.set_verify(if strict {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        RefTransport {
            name,
            strict,
            connector: b.build(),
        }
    }
}

/// X509_V_ERR_* → policy error (`docs/spec/tls.md` §2.2).
fn classify(code: i32) -> BitsError {
    match code {
        9 | 10 => BitsError::CertDateInvalid,
        62 | 64 => BitsError::CertCnInvalid,
        2 | 18 | 19 | 20 | 21 => BitsError::UnknownCa,
        26 => BitsError::CertWrongUsage,
        23 => BitsError::CertRevoked,
        _ => BitsError::SecureFailure {
            reason: format!("verify result {code}"),
        },
    }
}

#[async_trait]
impl Transport for RefTransport {
    fn name(&self) -> &str {
        self.name
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        // It never checks pins: the strict one refuses them, as it must.
        if self.strict && policy.checks_server() {
            return Err(BitsError::NotImplemented {
                what: "reference transport checks no pins".into(),
            });
        }
        if !self.strict || policy.flags().cert_bits() == 0 {
            Ok(())
        } else {
            Err(BitsError::NotImplemented {
                what: format!("reference transport honours only 0, not {policy}"),
            })
        }
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        self.check_policy(&request.policy)?;
        let host = request.url.host_str().unwrap_or_default().to_owned();
        let port = request.url.port().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| BitsError::CannotConnect {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let ssl = self.connector.configure().unwrap().into_ssl(&host).unwrap();
        let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        if Pin::new(&mut s).connect().await.is_err() {
            return Err(classify(s.ssl().verify_result().as_raw()));
        }
        let target = match request.url.query() {
            Some(q) => format!("{}?{q}", request.url.path()),
            None => request.url.path().to_owned(),
        };
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let io = |e: std::io::Error| BitsError::ConnectionReset {
            reason: e.to_string(),
        };
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(io)?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
            BitsError::InvalidServerResponse {
                what: "no header end".into(),
            }
        })?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok(Response {
            status,
            headers: http::HeaderMap::new(),
            version: http::Version::HTTP_11,
            body: Box::new(WholeBody(Some(Bytes::copy_from_slice(&raw[split + 4..])))),
        })
    }
}

#[tokio::test]
async fn a_strict_transport_conforms_and_refuses_the_rest() {
    let report = run_matrix("strict", &|pki| Arc::new(RefTransport::new("strict", pki, true))).await;
    report.assert_conforms();
    assert_eq!(report.cases.len(), 15 * MATRIX_FLAGS.len());
    assert_eq!(report.case(LeafKind::Good, 0).unwrap().outcome, Outcome::Ok);
    assert_eq!(
        report.case(LeafKind::Good, 0x1E).unwrap().outcome,
        Outcome::Refused
    );
    assert_eq!(report.case(LeafKind::ViaInt, 0).unwrap().outcome, Outcome::Ok);
    // Without CRL checking, revoked and crlunreachable are fine.
    assert_eq!(report.case(LeafKind::Revoked, 0).unwrap().outcome, Outcome::Ok);
    assert_eq!(
        report.case(LeafKind::Expired, 0).unwrap().outcome.to_string(),
        "0x80072F05"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["backend"], "strict");
    let first = &json["cases"][0];
    assert_eq!(first["server"], "good");
    assert_eq!(first["flags"], "0x0000");
    assert_eq!(first["outcome"], "ok");
    assert!(first["faults"].as_array().unwrap().is_empty());
}

/// Takes pins (flags 0 only) and ignores them: the pin rows catch it.
#[derive(Debug)]
struct IgnoresPins(RefTransport);

#[async_trait]
impl Transport for IgnoresPins {
    fn name(&self) -> &str {
        "ignores-pins"
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        self.0.check_policy(&policy.clone().with_pins(None))
    }

    async fn send(&self, mut request: Request) -> Result<Response, BitsError> {
        request.policy = request.policy.clone().with_pins(None);
        self.0.send(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strict_transport_refuses_every_pin_case_and_one_that_ignores_pins_is_caught() {
    let report = run_matrix("strict", &|pki| Arc::new(RefTransport::new("strict", pki, true))).await;
    assert_eq!(report.pins.len(), PIN_ROWS.len() * PIN_FLAGS.len());
    assert!(report
        .pins
        .iter()
        .all(|c| c.outcome == Outcome::Refused && c.problems.is_empty()));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["pins"][0]["pin"], "leaf");
    assert_eq!(json["pins"][0]["outcome"], "refused");

    let report = run_matrix("ignores-pins", &|pki| {
        Arc::new(IgnoresPins(RefTransport::new("strict", pki, true)))
    })
    .await;
    let wrong = report.pin_case(LeafKind::Good, PinKind::Wrong, 0).unwrap();
    assert_eq!(wrong.outcome, Outcome::Ok);
    assert!(
        wrong.problems.iter().any(|p| p.contains("SUCCEEDED")),
        "{:?}",
        wrong.problems
    );
    let own = report.pin_case(LeafKind::Good, PinKind::Leaf, 0).unwrap();
    assert!(own.problems.is_empty(), "{:?}", own.problems);
    // The flags still rule first: an expired leaf with its own pin fails.
    let expired = report.pin_case(LeafKind::Expired, PinKind::Leaf, 0).unwrap();
    assert_eq!(expired.outcome.to_string(), "0x80072F05");
    assert!(expired.problems.is_empty(), "{:?}", expired.problems);
    let panic = std::panic::catch_unwind(|| report.assert_conforms()).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("pin cases"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadening_transport_is_caught() {
    let report = run_matrix_with("broad", &[0x00, 0x04], &|pki| {
        Arc::new(RefTransport::new("broad", pki, false))
    })
    .await;
    let bad: Vec<_> = report.mismatches().collect();
    // Every faulty leaf except revoked/crlunreachable (not faults without CRL) is accepted wrongly.
    assert!(bad.iter().any(|c| c.server == LeafKind::Expired && c.flags == 0));
    assert!(bad
        .iter()
        .any(|c| c.server == LeafKind::ExpUnknownCa && c.flags == 0x04));
    assert!(!bad
        .iter()
        .any(|c| c.server == LeafKind::Expired && c.flags == 0x04));
    assert!(bad
        .iter()
        .all(|c| c.problems.iter().any(|p| p.contains("SUCCEEDED"))));
    let panic = std::panic::catch_unwind(|| report.assert_conforms()).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("exp_unknownca"), "{text}");
}

/// Refuses every non-zero value with the wrong HRESULT, and then ignores
/// its own refusal in `send`.
#[derive(Debug)]
struct Inconsistent(RefTransport);

#[async_trait]
impl Transport for Inconsistent {
    fn name(&self) -> &str {
        "inconsistent"
    }

    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        if policy.flags().cert_bits() == 0 {
            Ok(())
        } else {
            Err(BitsError::InvalidArg { what: "no".into() })
        }
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        self.0.send(request).await
    }
}

#[tokio::test]
async fn wrong_refusal_codes_and_sends_past_a_refusal_are_caught() {
    let report = run_matrix_with("inconsistent", &[0x04], &|pki| {
        Arc::new(Inconsistent(RefTransport::new("broad", pki, false)))
    })
    .await;
    let good = report.case(LeafKind::Good, 0x04).unwrap();
    assert_eq!(good.outcome.to_string(), "0x80070057");
    assert!(
        good.problems.iter().any(|p| p.contains("must be E_NOTIMPL")),
        "{:?}",
        good.problems
    );
    assert!(
        good.problems.iter().any(|p| p.contains("SUCCEEDED")),
        "{:?}",
        good.problems
    );
    assert!(
        good.problems.iter().any(|p| p.contains("reached the server")),
        "{:?}",
        good.problems
    );
}
