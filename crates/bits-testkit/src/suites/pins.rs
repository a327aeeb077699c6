//! Server-certificate pins and an embedder's validator
//! (`docs/spec/http-options.md`, "Server certificate validation"), against
//! real TLS servers of the test PKI, for every backend
//! ([`pin_tests!`](crate::pin_tests)).
//!
//! What a pin matches: "any certificate of the presented chain", read
//! literally: the certificates the server sent, as the backend reports
//! them ([`bits_http::TlsConnect::peer_chain`]), never a root the client
//! completed the path with. The test servers send the leaf and its
//! intermediates, not the root, so a pin of the root matches only a server
//! that sends the root too ([`start_with_root`]). Pinning a key the
//! server never shows would make the outcome depend on the client's trust
//! store (and under `IGNORE_UNKNOWN_CA` there is no path to a root at all);
//! pin the leaf or an intermediate instead.
//!
//! A backend that cannot see the presented chain (native-tls: the leaf
//! only) refuses pins and validators with `E_NOTIMPL`
//! ([`pins_and_validators_are_refused`]).

use std::pin::Pin as StdPin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bits_core::{
    BitsError, ConnectionPolicy, ErrorContext, Hresult, Pin, PinSet, Request, SecurityFlags, ServerCertCheck,
    ServerCertValidator, Transport,
};
use bits_http::{TlsBackend, TlsTransport};
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVersion};
use openssl::x509::X509;
use uuid::Uuid;

use crate::backend::with_pki;
use crate::http::{HttpServer, Route};
use crate::pki::{Leaf, LeafKind, TestPki};
use crate::tls::TlsServer;

/// The `sha256//` pin of a DER certificate's key.
///
/// # Panics
/// When `der` does not parse.
pub fn pin_of_der(der: &[u8]) -> Pin {
    Pin(bits_http::chain::spki_sha256(der).expect("a certificate"))
}

/// The `sha256//` pin of `cert`'s key.
pub fn pin_of(cert: &X509) -> Pin {
    pin_of_der(&cert.to_der().expect("DER"))
}

/// A pin no certificate of the test PKI has.
pub const WRONG_PIN: Pin = Pin([0x5A; 32]);

/// The pin set of `pins`.
pub fn pins(pins: &[Pin]) -> PinSet {
    let text: Vec<String> = pins.iter().map(Pin::to_string).collect();
    PinSet::parse(&text.join(";")).unwrap().expect("some pins")
}

/// The policy of certificate `flags` with `pins`.
pub fn pinned(flags: u32, p: &[Pin]) -> ConnectionPolicy {
    ConnectionPolicy::new(SecurityFlags::new(flags).unwrap()).with_pins(Some(pins(p)))
}

/// GETs `/file` under `policy` and reads the body: the status, or the error.
pub async fn get<T: Transport + ?Sized>(
    t: &T,
    url: url::Url,
    policy: ConnectionPolicy,
) -> Result<u16, BitsError> {
    let mut response = t.send(Request::get(url, policy)).await?;
    while response.body.next_chunk().await?.is_some() {}
    Ok(response.status)
}

/// A server presenting the `viaint` leaf, its intermediate **and the
/// root**: the one chain in which a pin of the root can match.
pub fn start_with_root(pki: &TestPki) -> HttpServer {
    let leaf: &Leaf = pki.leaf(LeafKind::ViaInt);
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .expect("TLS 1.2");
    b.set_private_key(leaf.key()).expect("key");
    b.set_certificate(leaf.cert()).expect("cert");
    for c in leaf.chain() {
        b.add_extra_chain_cert(c.clone()).expect("intermediate");
    }
    b.add_extra_chain_cert(pki.root_cert().clone()).expect("root");
    let acceptor = Arc::new(b.build());
    HttpServer::start_with_acceptor("https", move |tcp| {
        let acceptor = Arc::clone(&acceptor);
        async move {
            let ssl = Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
            let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
            StdPin::new(&mut s)
                .accept()
                .await
                .map_err(std::io::Error::other)?;
            Ok(s)
        }
    })
    .with("/file", Route::body(TlsServer::BODY))
}

fn url_of(server: &HttpServer) -> url::Url {
    url::Url::parse(&server.url("/file")).unwrap()
}

/// Asserts `e` is a pin or validator rejection with `code`: context
/// SERVER_CERTIFICATE_CALLBACK, transient.
pub fn assert_rejected(e: &BitsError, code: Hresult) {
    assert!(
        matches!(e, BitsError::ServerCertRejected { .. }),
        "expected ServerCertRejected, got {e:?}"
    );
    assert_eq!(e.hresult(), code, "{e}");
    assert_eq!(e.context(), ErrorContext::ServerCertificateCallback, "{e}");
    assert!(e.is_transient(), "a rejection is transient: {e}");
}

/// A pin of the leaf, or of an intermediate the server sends, passes; a
/// pin of the root passes only when the server sends the root (the
/// presented chain); any pin of a set is enough.
pub async fn pins_of_the_presented_chain_pass<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t = with_pki::<B>(pki);
    let leaf = pki.leaf(LeafKind::ViaInt);
    let server = TlsServer::start(leaf);
    let url = server.url("/file");
    let leaf_pin = pin_of(leaf.cert());
    let int_pin = pin_of(pki.intermediate_cert());
    let root_pin = pin_of(pki.root_cert());
    assert_eq!(get(&t, url.clone(), pinned(0, &[leaf_pin])).await.unwrap(), 200);
    assert_eq!(get(&t, url.clone(), pinned(0, &[int_pin])).await.unwrap(), 200);
    assert_eq!(
        get(&t, url.clone(), pinned(0, &[WRONG_PIN, int_pin]))
            .await
            .unwrap(),
        200
    );
    assert_eq!(server.request_count(), 3);
    // The root is not presented: its pin matches nothing sent.
    let e = get(&t, url.clone(), pinned(0, &[root_pin])).await.unwrap_err();
    assert_rejected(&e, Hresult::TRUST_E_FAIL);
    assert_eq!(server.request_count(), 3, "a rejected pin reached HTTP");
    // A server that sends the root: now its pin matches.
    let with_root = start_with_root(pki);
    assert_eq!(
        get(&t, url_of(&with_root), pinned(0, &[root_pin])).await.unwrap(),
        200
    );
    assert_eq!(with_root.requests().len(), 1);
}

/// A wrong pin: `TRUST_E_FAIL` (0x800B010B), `ServerCertRejected`, context
/// SERVER_CERTIFICATE_CALLBACK, transient, after a handshake that
/// succeeded, and no HTTP request reached the server.
pub async fn a_wrong_pin_is_rejected_before_any_request<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t = with_pki::<B>(pki);
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let e = get(&t, server.url("/file"), pinned(0, &[WRONG_PIN]))
        .await
        .unwrap_err();
    assert_rejected(&e, Hresult::TRUST_E_FAIL);
    assert_eq!(server.request_count(), 0, "a rejected pin reached HTTP");
    // The server counts its side of the handshake in its own thread, maybe
    // after the client has already hung up: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.handshakes_ok() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        server.handshakes_ok() >= 1,
        "the flags passed: the handshake completed"
    );
    // The same server without pins works: the rejection was the pin's.
    let ok = get(&t, server.url("/file"), ConnectionPolicy::default()).await;
    assert_eq!(ok.unwrap(), 200);
}

/// `IGNORE_UNKNOWN_CA` plus a pin trusts a self-signed server by its key
/// alone; a wrong pin under 0x8 is refused; the pin alone (0x0) is not
/// enough.
pub async fn a_pin_with_ignore_unknown_ca_trusts_a_self_signed_server_by_its_key<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t = with_pki::<B>(pki);
    let leaf = pki.leaf(LeafKind::SelfSigned);
    let server = TlsServer::start(leaf);
    let url = server.url("/file");
    let own = pin_of(leaf.cert());
    assert_eq!(get(&t, url.clone(), pinned(0x8, &[own])).await.unwrap(), 200);
    assert_eq!(server.request_count(), 1);
    let e = get(&t, url.clone(), pinned(0x8, &[WRONG_PIN])).await.unwrap_err();
    assert_rejected(&e, Hresult::TRUST_E_FAIL);
    let e = get(&t, url.clone(), pinned(0, &[own])).await.unwrap_err();
    assert_eq!(e.hresult(), Hresult::WINHTTP_SECURE_INVALID_CA, "{e}");
    assert_eq!(server.request_count(), 1);
}

/// # Security
/// A pin never makes a failing certificate pass: the flags are checked
/// first and a pin can only reject. An expired leaf with its own pin
/// under 0x0 still fails with the date error; likewise a wrong host and an
/// unknown CA.
pub async fn a_pin_never_makes_a_failing_certificate_pass<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t = with_pki::<B>(pki);
    for (kind, code) in [
        (LeafKind::Expired, Hresult::WINHTTP_SECURE_CERT_DATE_INVALID),
        (LeafKind::WrongHost, Hresult::WINHTTP_SECURE_CERT_CN_INVALID),
        (LeafKind::UnknownCa, Hresult::WINHTTP_SECURE_INVALID_CA),
        (LeafKind::ClientAuth, Hresult::WINHTTP_SECURE_CERT_WRONG_USAGE),
    ] {
        let leaf = pki.leaf(kind);
        let server = TlsServer::start(leaf);
        let e = get(&t, server.url("/file"), pinned(0, &[pin_of(leaf.cert())]))
            .await
            .expect_err("SECURITY: a pin made a failing certificate pass");
        assert_eq!(e.hresult(), code, "{kind}: {e}");
        assert_eq!(server.request_count(), 0, "{kind}");
    }
}

/// What a validator was given: the job, the file index, the leaf and the
/// presented chain (DER).
pub type Asked = (Uuid, usize, Vec<u8>, Vec<Vec<u8>>);

/// A validator that counts its calls and answers `answer`, recording what
/// it was given.
#[derive(Debug)]
pub struct Recording {
    /// What it answers.
    pub answer: Result<(), Hresult>,
    /// How many times it was asked.
    pub calls: AtomicUsize,
    /// The last (job, file index, leaf, chain) it was given.
    pub last: Mutex<Option<Asked>>,
}

impl Recording {
    /// A validator answering `answer`.
    pub fn new(answer: Result<(), Hresult>) -> Arc<Recording> {
        Arc::new(Recording {
            answer,
            calls: AtomicUsize::new(0),
            last: Mutex::new(None),
        })
    }

    /// How many times it was asked.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ServerCertValidator for Recording {
    fn validate(&self, job: Uuid, file_index: usize, leaf: &[u8], chain: &[Vec<u8>]) -> Result<(), Hresult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some((job, file_index, leaf.to_vec(), chain.to_vec()));
        self.answer
    }
}

fn with_validator(flags: u32, v: &Arc<Recording>, job: Uuid) -> (ConnectionPolicy, ServerCertCheck) {
    let check = ServerCertCheck::new(v.clone(), job);
    (
        ConnectionPolicy::new(SecurityFlags::new(flags).unwrap()).with_validator(Some(check.clone())),
        check,
    )
}

/// A rejecting validator fails the request with its own HRESULT,
/// `ServerCertRejected`, context SERVER_CERTIFICATE_CALLBACK, transient,
/// before any request; rejections are not cached (asked again).
pub async fn a_validator_rejects_with_its_hresult_before_any_request<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t: TlsTransport<B> = with_pki::<B>(pki);
    let leaf = pki.leaf(LeafKind::ViaInt);
    let server = TlsServer::start(leaf);
    let code = Hresult(0x8009_0010);
    let v = Recording::new(Err(code));
    let job = Uuid::new_v4();
    let (policy, check) = with_validator(0, &v, job);
    check.set_file_index(3);
    let e = get(&t, server.url("/file"), policy.clone()).await.unwrap_err();
    assert_rejected(&e, code);
    assert_eq!(server.request_count(), 0, "a rejection reached HTTP");
    assert_eq!(v.calls(), 1);
    let (got_job, index, got_leaf, chain) = v.last.lock().unwrap().clone().unwrap();
    assert_eq!(got_job, job);
    assert_eq!(index, 3);
    assert_eq!(got_leaf, leaf.cert_der());
    assert_eq!(chain.len(), 2, "the leaf and the intermediate the server sent");
    assert_eq!(chain[0], got_leaf);
    assert_eq!(chain[1], pki.intermediate_cert().to_der().unwrap());
    let e = get(&t, server.url("/file"), policy).await.unwrap_err();
    assert_rejected(&e, code);
    assert_eq!(v.calls(), 2, "a rejection is never cached");
}

/// An accepting validator is asked once per (host, port, certificate):
/// two connections (the pools cleared between them) ask it once.
pub async fn an_accepting_validator_is_asked_once_per_host_port_and_cert<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t: TlsTransport<B> = with_pki::<B>(pki);
    let server = TlsServer::start(pki.leaf(LeafKind::Good));
    let v = Recording::new(Ok(()));
    let (policy, _check) = with_validator(0, &v, Uuid::new_v4());
    assert_eq!(get(&t, server.url("/file"), policy.clone()).await.unwrap(), 200);
    t.http().clear_pools();
    assert_eq!(get(&t, server.url("/file"), policy.clone()).await.unwrap(), 200);
    assert_eq!(server.request_count(), 2);
    assert!(server.handshakes_ok() >= 2, "two connections were made");
    assert_eq!(v.calls(), 1, "the accepted certificate was cached");
    // Another port is another key: asked again.
    let other = TlsServer::start(pki.leaf(LeafKind::Good));
    assert_eq!(get(&t, other.url("/file"), policy).await.unwrap(), 200);
    assert_eq!(v.calls(), 2);
}

/// The validator is asked only after the flags passed: an unknown-CA
/// server under 0x0 fails with the CA error and never reaches it; under
/// 0x8 it does.
pub async fn the_validator_is_asked_only_after_the_flags_passed<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t: TlsTransport<B> = with_pki::<B>(pki);
    let server = TlsServer::start(pki.leaf(LeafKind::UnknownCa));
    let v = Recording::new(Ok(()));
    let (strict, _c) = with_validator(0, &v, Uuid::new_v4());
    let e = get(&t, server.url("/file"), strict).await.unwrap_err();
    assert_eq!(e.hresult(), Hresult::WINHTTP_SECURE_INVALID_CA, "{e}");
    assert_eq!(v.calls(), 0, "asked before the flags passed");
    let (relaxed, _c) = with_validator(0x8, &v, Uuid::new_v4());
    assert_eq!(get(&t, server.url("/file"), relaxed).await.unwrap(), 200);
    assert_eq!(v.calls(), 1);
}

/// A backend that cannot see the presented chain refuses pins and a
/// validator with `E_NOTIMPL`, in `check_policy` and in `send`, and no
/// request reaches the server.
pub async fn pins_and_validators_are_refused<B: TlsBackend>() {
    let pki = TestPki::shared();
    let t: TlsTransport<B> = with_pki::<B>(pki);
    let leaf = pki.leaf(LeafKind::Good);
    let server = TlsServer::start(leaf);
    let v = Recording::new(Ok(()));
    let (validated, _c) = with_validator(0, &v, Uuid::new_v4());
    for policy in [
        pinned(0, &[pin_of(leaf.cert())]),
        pinned(0x2, &[WRONG_PIN]),
        validated,
    ] {
        let e = B::check_policy(&policy).unwrap_err();
        assert_eq!(e.hresult(), Hresult::E_NOTIMPL, "{e}");
        let e = get(&t, server.url("/file"), policy).await.unwrap_err();
        assert_eq!(e.hresult(), Hresult::E_NOTIMPL, "{e}");
    }
    assert_eq!(v.calls(), 0);
    assert_eq!(server.request_count(), 0);
    assert_eq!(server.handshakes_ok(), 0, "refused before any connection");
}
