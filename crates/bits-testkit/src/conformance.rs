//! The backend conformance matrix, written once and run by every backend.
//!
//! # Use
//!
//! ```text
//! // crates/bits-transport-openssl/tests/conformance.rs
//! use bits_testkit::backend;
//! use bits_transport_openssl::Openssl;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn conformance() {
//!     let report = backend::run_matrix::<Openssl>().await;
//!     report.write_json_if_requested().unwrap(); // $BITS_CONFORMANCE_OUT/openssl.json
//!     report.assert_conforms();                  // panics with a table of every mismatch
//! }
//! ```
//!
//! [`crate::backend::run_matrix`] builds the backend's transport; with
//! [`run_matrix`] a test passes its own factory, which is called once, with
//! the PKI the servers use, and must trust [`TestPki::root_pem`] only. The
//! runner works on a current-thread runtime too.
//!
//! # What runs
//!
//! One [`TlsServer`] per [`LeafKind`] and one [`CrlServer`] (the PKI is
//! [`TestPki::shared`] re-issued with this server in its CDPs, so CRL fetches
//! never depend on another process). Every leaf is tried under every value
//! of [`MATRIX_FLAGS`]: all 32 certificate-flag values, from 0x1F (everything)
//! down to 0 (full verification). Leaves run in parallel; the flag values of one leaf
//! run one after another, the most permissive first, against one transport,
//! so a transport that reuses a pooled connection or TLS session across flag
//! values accepts a stricter case and is caught.
//!
//! For each case: if `check_flags` refuses, the outcome is `refused`, the
//! refusal must be `E_NOTIMPL`, and a `send` under those flags must not
//! succeed either. Otherwise the runner GETs `/file?case=…` and records `ok`
//! (200 with [`TlsServer::BODY`]) or the error's HRESULT.
//!
//! # The oracle (`docs/spec/policy.md`)
//!
//! [`LeafKind::uncovered_faults`]: a leaf's faults, where `REVOKED` and
//! `CRL_UNREACHABLE` count only with `ENABLE_CRL_CHECK` and are never
//! ignorable, and a `CA` fault under `ENABLE_CRL_CHECK` also means the CRL
//! cannot be checked (`CRL_UNREACHABLE`). The case must succeed iff no fault
//! is uncovered; a failure's HRESULT must be that of one of the uncovered
//! faults (engines differ in which they report first); a certificate failure
//! must leave no HTTP request on the server; `check_flags(0)` must never
//! refuse.
//!
//! # Pin rows
//!
//! [`run_matrix`] (not [`run_matrix_with`]) also runs every [`PIN_ROWS`]
//! row (a leaf and what is pinned: its own key, the CA its server sends,
//! the root, which is trusted but never sent, or a wrong key) under each of
//! [`PIN_FLAGS`], on the same servers ([`expected_pin`]): the flags are
//! judged first, exactly as without a pin (a pin never makes a failing
//! certificate pass); then the pin must match a certificate of the
//! presented chain, else `TRUST_E_FAIL` (0x800B010B, transient, context
//! SERVER_CERTIFICATE_CALLBACK) with no HTTP request. A backend that
//! cannot see the presented chain refuses every pin case with `E_NOTIMPL`.
//!
//! # Over HTTP/2
//!
//! [`run_matrix_over`] runs the same cases (pin rows included) against
//! servers that answer the client's ALPN offer as an [`Alpn`] says: with
//! [`Alpn::H2`] a transport that offers `h2` is served over HTTP/2
//! (hyper's server). The oracle is the same: ALPN must change no verdict.
//! Each case records the protocol that carried its request
//! ([`CaseResult::protocol`]); [`Report::verdict_differences`] lists the
//! cases whose outcome differs between two reports (HTTP/2 against
//! HTTP/1.1), [`Report::not_carried_by`] the successful cases another
//! protocol carried.
//!
//! # JSON (`BITS_CONFORMANCE_OUT`)
//!
//! `{"backend":"openssl","cases":[{"server":"expired","faults":["DATE"],
//! "flags":"0x0004","outcome":"ok","expected":"ok","problems":[]}]}` with
//! `outcome` = `ok` | an HRESULT (`0x80072F05`) | `refused` | `timeout`,
//! `expected` = `ok` or the acceptable HRESULTs joined by `|`, and
//! `problems` empty when the case conforms. Cases are in [`LeafKind::ALL`]
//! order, flags ascending. Then `"pins":[{"server":"selfsigned","faults":["CA"],
//! "pin":"leaf","flags":"0x0008","outcome":"ok","expected":"ok","problems":[]}]`
//! in [`PIN_ROWS`] order, [`PIN_FLAGS`] order (absent when no pin case ran).

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bits_core::error::{BitsError, ErrorContext, Hresult};
use bits_core::flags::SecurityFlags;
use bits_core::transport::{Request, Transport};
use bits_core::{ConnectionPolicy, Pin, PinSet};
use serde::Serialize;

use crate::crl::CrlServer;
use crate::pki::{Fault, LeafKind, TestPki};
use crate::tls::{Alpn, TlsServer};

/// The certificate-flag values every leaf is tried under, most permissive
/// first (the order one leaf's cases run in).
///
/// All 32 values, in descending order: a value comes after every value that
/// relaxes more than it (a superset of its bits is a larger number).
pub const MATRIX_FLAGS: [u32; 32] = {
    let mut all = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        all[i] = 0x1F - i as u32;
        i += 1;
    }
    all
};

/// How long one case may take (handshake, CRL fetch, body).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable naming the directory for the JSON report.
pub const OUT_ENV: &str = "BITS_CONFORMANCE_OUT";

/// What the oracle demands of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The request must succeed.
    Ok,
    /// The request must fail with one of these HRESULTs.
    Fail(Vec<Hresult>),
}

impl Expected {
    /// The oracle for `kind` under the certificate bits `flags`.
    pub fn of(kind: LeafKind, flags: u32) -> Expected {
        let uncovered = kind.uncovered_faults(flags);
        if uncovered.is_empty() {
            Expected::Ok
        } else {
            let mut codes: Vec<Hresult> = uncovered.iter().map(|f| f.hresult()).collect();
            codes.dedup();
            Expected::Fail(codes)
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Ok => f.write_str("ok"),
            Expected::Fail(codes) => {
                let codes: Vec<String> = codes.iter().map(|h| hex(*h)).collect();
                f.write_str(&codes.join("|"))
            }
        }
    }
}

/// What happened in one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with the expected body.
    Ok,
    /// The request failed with this HRESULT.
    Failed(Hresult),
    /// `check_flags` refused the value with `E_NOTIMPL`.
    Refused,
    /// `check_flags` refused the value with another HRESULT (a mismatch).
    RefusedWith(Hresult),
    /// The case did not finish within [`CASE_TIMEOUT`].
    Timeout,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed(h) | Outcome::RefusedWith(h) => f.write_str(&hex(*h)),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Timeout => f.write_str("timeout"),
        }
    }
}

/// Compares with the JSON spelling (`"ok"`, `"refused"`, `"0x80072F05"`).
impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.to_string().as_str() == *other
    }
}

/// Compares with the JSON spelling (`"ok"`, `"refused"`, `"0x80072F05"`).
impl PartialEq<str> for Outcome {
    fn eq(&self, other: &str) -> bool {
        self.to_string().as_str() == other
    }
}

fn hex(h: Hresult) -> String {
    format!("0x{:08X}", h.0)
}

/// One case of the matrix and its result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The leaf the server presented.
    pub server: LeafKind,
    /// The certificate bits tried.
    pub flags: u32,
    /// What happened.
    pub outcome: Outcome,
    /// What the oracle demands.
    pub expected: Expected,
    /// The error's message when the request failed (for humans).
    pub message: Option<String>,
    /// Every way the case breaks the policy; empty when it conforms.
    pub problems: Vec<String>,
    /// The protocol that carried the case's request (`http/1.1`, `h2`);
    /// `None` when no request reached the server.
    pub protocol: Option<&'static str>,
}

impl CaseResult {
    /// Whether the case conforms.
    pub fn conforms(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The result of [`run_matrix`].
#[derive(Clone, Debug)]
pub struct Report {
    /// The backend name given to [`run_matrix`].
    pub backend: String,
    /// The transport's own [`Transport::name`].
    pub transport_name: String,
    /// Every case, in [`LeafKind::ALL`] order, flags ascending.
    pub cases: Vec<CaseResult>,
    /// The pin rows ([`PIN_ROWS`] × [`PIN_FLAGS`]), in that order; empty
    /// for [`run_matrix_with`].
    pub pins: Vec<PinCaseResult>,
    /// How long the whole matrix took.
    pub elapsed: Duration,
    /// The client certificate files the backend loads, in words
    /// (`TlsBackend::CLIENT_CERT_FORMATS`), when the runner knows the
    /// backend type.
    pub client_certificates: Option<String>,
    /// What the servers did with the client's ALPN offer.
    pub alpn: Alpn,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    backend: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificates: Option<&'a str>,
    cases: Vec<JsonCase>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pins: Vec<JsonPinCase>,
}

#[derive(Serialize)]
struct JsonPinCase {
    server: &'static str,
    faults: Vec<&'static str>,
    pin: &'static str,
    flags: String,
    outcome: String,
    expected: String,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct JsonCase {
    server: &'static str,
    faults: Vec<&'static str>,
    flags: String,
    outcome: String,
    expected: String,
    problems: Vec<String>,
}

impl Report {
    /// The cases that break the policy.
    pub fn mismatches(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases.iter().filter(|c| !c.conforms())
    }

    /// The pin cases that break the policy.
    pub fn pin_mismatches(&self) -> impl Iterator<Item = &PinCaseResult> {
        self.pins.iter().filter(|c| !c.problems.is_empty())
    }

    /// The pin case for `server` with `pin` under `flags`, if it ran.
    pub fn pin_case(&self, server: LeafKind, pin: PinKind, flags: u32) -> Option<&PinCaseResult> {
        self.pins
            .iter()
            .find(|c| c.server == server && c.pin == pin && c.flags == flags)
    }

    /// The case for `server` under `flags`, if the matrix ran it.
    pub fn case(&self, server: LeafKind, flags: u32) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.server == server && c.flags == flags)
    }

    /// Every case (pin cases included) whose outcome differs from that of
    /// the same case in `other`, or that only one of them ran, in words:
    /// empty when both reached the same verdicts (e.g. over HTTP/2 and
    /// over HTTP/1.1).
    pub fn verdict_differences(&self, other: &Report) -> Vec<String> {
        let (me, them) = (self.alpn.as_str(), other.alpn.as_str());
        let mut out = Vec::new();
        for c in &self.cases {
            match other.case(c.server, c.flags) {
                Some(o) if o.outcome == c.outcome => {}
                Some(o) => out.push(format!(
                    "{} 0x{:02X}: {} over {me}, {} over {them}",
                    c.server, c.flags, c.outcome, o.outcome
                )),
                None => out.push(format!("{} 0x{:02X}: ran over {me} only", c.server, c.flags)),
            }
        }
        for c in &self.pins {
            match other.pin_case(c.server, c.pin, c.flags) {
                Some(o) if o.outcome == c.outcome => {}
                Some(o) => out.push(format!(
                    "{} pin {} 0x{:02X}: {} over {me}, {} over {them}",
                    c.server,
                    c.pin.as_str(),
                    c.flags,
                    c.outcome,
                    o.outcome
                )),
                None => out.push(format!(
                    "{} pin {} 0x{:02X}: ran over {me} only",
                    c.server,
                    c.pin.as_str(),
                    c.flags
                )),
            }
        }
        let missing = other
            .cases
            .iter()
            .filter(|o| self.case(o.server, o.flags).is_none());
        for o in missing {
            out.push(format!("{} 0x{:02X}: ran over {them} only", o.server, o.flags));
        }
        let missing = other
            .pins
            .iter()
            .filter(|o| self.pin_case(o.server, o.pin, o.flags).is_none());
        for o in missing {
            out.push(format!(
                "{} pin {} 0x{:02X}: ran over {them} only",
                o.server,
                o.pin.as_str(),
                o.flags
            ));
        }
        out
    }

    /// Every successful case (pin cases included) whose request another
    /// protocol than `protocol` carried, in words.
    pub fn not_carried_by(&self, protocol: &str) -> Vec<String> {
        let cases = self
            .cases
            .iter()
            .filter(|c| c.outcome == Outcome::Ok && c.protocol != Some(protocol))
            .map(|c| format!("{} 0x{:02X}: carried by {:?}", c.server, c.flags, c.protocol));
        let pins = self
            .pins
            .iter()
            .filter(|c| c.outcome == Outcome::Ok && c.protocol != Some(protocol))
            .map(|c| {
                format!(
                    "{} pin {} 0x{:02X}: carried by {:?}",
                    c.server,
                    c.pin.as_str(),
                    c.flags,
                    c.protocol
                )
            });
        cases.chain(pins).collect()
    }

    /// The report as the brief's JSON.
    pub fn to_json(&self) -> String {
        let cases = self
            .cases
            .iter()
            .map(|c| JsonCase {
                server: c.server.name(),
                faults: c.server.faults().iter().map(|f| f.as_str()).collect(),
                flags: format!("0x{:04X}", c.flags),
                outcome: c.outcome.to_string(),
                expected: c.expected.to_string(),
                problems: c.problems.clone(),
            })
            .collect();
        let pins = self
            .pins
            .iter()
            .map(|c| JsonPinCase {
                server: c.server.name(),
                faults: c.server.faults().iter().map(|f| f.as_str()).collect(),
                pin: c.pin.as_str(),
                flags: format!("0x{:04X}", c.flags),
                outcome: c.outcome.to_string(),
                expected: c.expected.to_string(),
                problems: c.problems.clone(),
            })
            .collect();
        serde_json::to_string_pretty(&JsonReport {
            backend: &self.backend,
            client_certificates: self.client_certificates.as_deref(),
            cases,
            pins,
        })
        .expect("serialize the conformance report")
    }

    /// Writes `$BITS_CONFORMANCE_OUT/<backend>.json` when the variable is set
    /// (creating the directory); returns the path written.
    pub fn write_json_if_requested(&self) -> std::io::Result<Option<PathBuf>> {
        let Some(dir) = std::env::var_os(OUT_ENV).filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.backend));
        std::fs::write(&path, self.to_json() + "\n")?;
        Ok(Some(path))
    }

    /// The full matrix as a text table (leaf rows, flag columns).
    pub fn table(&self) -> String {
        let mut flags: Vec<u32> = self.cases.iter().map(|c| c.flags).collect();
        flags.sort_unstable();
        flags.dedup();
        let mut out = format!("{:<34}", "server (faults)");
        for f in &flags {
            let _ = write!(out, " {:>10}", format!("0x{f:02X}"));
        }
        out.push('\n');
        for kind in LeafKind::ALL {
            let faults: Vec<&str> = kind.faults().iter().map(|f| f.as_str()).collect();
            let _ = write!(out, "{:<34}", format!("{kind} [{}]", faults.join(",")));
            for f in &flags {
                let cell = match self.case(kind, *f) {
                    Some(c) if c.conforms() => c.outcome.to_string(),
                    Some(c) => format!("!{}", c.outcome),
                    None => "-".into(),
                };
                let _ = write!(out, " {cell:>10}");
            }
            out.push('\n');
        }
        out
    }

    /// Panics, with a readable table of every mismatch, unless every case
    /// conforms and the transport is named as the backend.
    pub fn assert_conforms(&self) {
        let mut msg = String::new();
        if self.transport_name != self.backend {
            let _ = writeln!(
                msg,
                "the transport calls itself {:?}, the matrix ran it as {:?}",
                self.transport_name, self.backend
            );
        }
        let bad: Vec<&CaseResult> = self.mismatches().collect();
        if !bad.is_empty() {
            let _ = writeln!(
                msg,
                "{} of {} conformance cases of backend {:?} break the policy:",
                bad.len(),
                self.cases.len(),
                self.backend
            );
            let _ = writeln!(
                msg,
                "{:<20} {:<6} {:<26} {:<12} problem",
                "server", "flags", "expected", "outcome"
            );
            for c in bad {
                for p in &c.problems {
                    let _ = writeln!(
                        msg,
                        "{:<20} 0x{:02X}   {:<26} {:<12} {p}",
                        c.server.name(),
                        c.flags,
                        c.expected.to_string(),
                        c.outcome.to_string()
                    );
                }
                if let Some(m) = &c.message {
                    let _ = writeln!(msg, "{:<20} error message: {m}", "");
                }
            }
            let _ = writeln!(msg, "\nfull matrix (! = mismatch):\n{}", self.table());
        }
        let bad_pins: Vec<&PinCaseResult> = self.pin_mismatches().collect();
        if !bad_pins.is_empty() {
            let _ = writeln!(
                msg,
                "{} of {} pin cases of backend {:?} break the policy:",
                bad_pins.len(),
                self.pins.len(),
                self.backend
            );
            for c in bad_pins {
                for p in &c.problems {
                    let _ = writeln!(
                        msg,
                        "{:<20} pin {:<16} 0x{:02X}   expected {:<12} got {:<12} {p}",
                        c.server.name(),
                        c.pin.as_str(),
                        c.flags,
                        c.expected.to_string(),
                        c.outcome.to_string()
                    );
                }
                if let Some(m) = &c.message {
                    let _ = writeln!(msg, "{:<20} error message: {m}", "");
                }
            }
        }
        if !msg.is_empty() {
            panic!("{msg}");
        }
    }
}

struct Fixture {
    pki: TestPki,
    // Kept alive for the whole run; the leaves' CDPs name it.
    _crl: CrlServer,
    servers: Vec<Arc<TlsServer>>,
}

impl Fixture {
    fn start(alpn: Alpn) -> Fixture {
        let crl = CrlServer::start();
        crl.serve_pki(TestPki::shared());
        let pki = TestPki::shared().with_crl_base(&crl.base_url());
        let servers = LeafKind::ALL
            .iter()
            .map(|k| Arc::new(TlsServer::start_with(pki.leaf(*k), alpn)))
            .collect();
        Fixture {
            pki,
            _crl: crl,
            servers,
        }
    }
}

/// Runs the whole matrix against the transport `make` builds (called once,
/// with the PKI the servers present) and returns the report. `backend` names
/// the JSON file and must equal the transport's [`Transport::name`].
pub async fn run_matrix(backend: &str, make: &dyn Fn(&TestPki) -> Arc<dyn Transport>) -> Report {
    run_all(backend, &MATRIX_FLAGS, true, Alpn::Ignore, make).await
}

/// [`run_matrix`] against servers that answer the client's ALPN offer as
/// `alpn` says (with [`Alpn::H2`], over HTTP/2 for a transport that offers
/// `h2`): the same cases, the same oracle.
pub async fn run_matrix_over(
    backend: &str,
    alpn: Alpn,
    make: &dyn Fn(&TestPki) -> Arc<dyn Transport>,
) -> Report {
    run_all(backend, &MATRIX_FLAGS, true, alpn, make).await
}

/// [`run_matrix`] over chosen certificate-flag values (each 0..=0x1F); they
/// run in the order given for each leaf.
pub async fn run_matrix_with(
    backend: &str,
    flags: &[u32],
    make: &dyn Fn(&TestPki) -> Arc<dyn Transport>,
) -> Report {
    run_all(backend, flags, false, Alpn::Ignore, make).await
}

async fn run_all(
    backend: &str,
    flags: &[u32],
    with_pins: bool,
    alpn: Alpn,
    make: &dyn Fn(&TestPki) -> Arc<dyn Transport>,
) -> Report {
    let started = Instant::now();
    // Servers start on their own threads; do it off the async worker.
    let fixture = Fixture::start(alpn);
    let transport = make(&fixture.pki);
    let transport_name = transport.name().to_owned();
    let flags: Arc<Vec<u32>> = Arc::new(flags.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, kind) in LeafKind::ALL.into_iter().enumerate() {
        let server = fixture.servers[i].clone();
        let transport = transport.clone();
        let flags = flags.clone();
        let pki = fixture.pki.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for (n, &f) in flags.iter().enumerate() {
                let id = i * 100 + n;
                out.push(run_case(&*transport, &server, kind, f, id).await);
            }
            let mut pins = Vec::new();
            if with_pins {
                let rows = PIN_ROWS.iter().filter(|(k, _)| *k == kind);
                for (n, (_, pin)) in rows.enumerate() {
                    for (m, &f) in PIN_FLAGS.iter().enumerate() {
                        let id = 10_000 + i * 100 + n * 10 + m;
                        pins.push(run_pin_case(&*transport, &server, &pki, kind, *pin, f, id).await);
                    }
                }
            }
            (out, pins)
        });
    }
    let mut cases = Vec::new();
    let mut pins = Vec::new();
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok((mut c, mut p)) => {
                cases.append(&mut c);
                pins.append(&mut p);
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    cases.sort_by_key(|c| (c.server, c.flags));
    let row = |c: &PinCaseResult| PIN_ROWS.iter().position(|r| *r == (c.server, c.pin));
    pins.sort_by_key(|c| (row(c), PIN_FLAGS.iter().position(|f| *f == c.flags)));
    drop(fixture);
    Report {
        backend: backend.to_owned(),
        transport_name,
        cases,
        pins,
        elapsed: started.elapsed(),
        client_certificates: None,
        alpn,
    }
}

/// The protocol that carried the request for `target`, if one arrived.
fn carried(server: &TlsServer, target: &str) -> Option<&'static str> {
    server
        .requests()
        .into_iter()
        .find(|r| r.target == target)
        .map(|r| r.protocol)
}

/// Which key a pin row pins (`docs/spec/http-options.md`, "Server
/// certificate validation": the connection passes when any certificate of
/// the presented chain matches any pin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinKind {
    /// The leaf's own key.
    Leaf,
    /// The key of the CA certificate the server sends after the leaf.
    SentCa,
    /// The test root's key: the root is trusted but never sent, so it is
    /// not part of the presented chain and its pin matches nothing.
    Root,
    /// A key no certificate has.
    Wrong,
}

impl PinKind {
    /// `leaf`, `sent CA`, `root (not sent)`, `wrong`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PinKind::Leaf => "leaf",
            PinKind::SentCa => "sent CA",
            PinKind::Root => "root (not sent)",
            PinKind::Wrong => "wrong",
        }
    }

    /// The `sha256//` pin of this kind for `kind`'s server.
    ///
    /// # Panics
    /// [`PinKind::SentCa`] for a leaf whose server sends no CA.
    pub fn pin(self, pki: &TestPki, kind: LeafKind) -> Pin {
        let of = |c: &openssl::x509::X509| {
            Pin(bits_http::chain::spki_sha256(&c.to_der().expect("DER")).expect("a certificate"))
        };
        let leaf = pki.leaf(kind);
        match self {
            PinKind::Leaf => of(leaf.cert()),
            PinKind::SentCa => of(leaf.chain().first().expect("the server sends a CA")),
            PinKind::Root => of(pki.root_cert()),
            PinKind::Wrong => Pin([0x5A; 32]),
        }
    }

    /// Whether the pin matches a certificate `kind`'s server presents.
    pub fn presented(self, kind: LeafKind) -> bool {
        match self {
            PinKind::Leaf => true,
            PinKind::SentCa => matches!(kind, LeafKind::ViaInt | LeafKind::CrlUnreachable),
            PinKind::Root | PinKind::Wrong => false,
        }
    }
}

/// The pin rows: every leaf with its own pin and with a wrong one, the
/// sent intermediate of the two leaves whose servers send one, and the
/// root's pin (never presented).
pub const PIN_ROWS: [(LeafKind, PinKind); 34] = {
    let mut rows = [(LeafKind::Good, PinKind::Leaf); 34];
    let mut i = 0;
    while i < 15 {
        rows[2 * i] = (LeafKind::ALL[i], PinKind::Leaf);
        rows[2 * i + 1] = (LeafKind::ALL[i], PinKind::Wrong);
        i += 1;
    }
    rows[30] = (LeafKind::ViaInt, PinKind::SentCa);
    rows[31] = (LeafKind::CrlUnreachable, PinKind::SentCa);
    rows[32] = (LeafKind::Good, PinKind::Root);
    rows[33] = (LeafKind::ViaInt, PinKind::Root);
    rows
};

/// The flag values of the pin rows: none, `IGNORE_UNKNOWN_CA` (with a pin:
/// trust a self-signed server by its key), and every `IGNORE_*` bit.
pub const PIN_FLAGS: [u32; 3] = [0x00, 0x08, 0x1E];

/// The oracle of a pin case: the flags first (a pin never makes a failing
/// certificate pass), then the pin (`TRUST_E_FAIL` when it matches
/// nothing presented).
pub fn expected_pin(kind: LeafKind, pin: PinKind, flags: u32) -> Expected {
    match Expected::of(kind, flags) {
        Expected::Ok if !pin.presented(kind) => Expected::Fail(vec![Hresult::TRUST_E_FAIL]),
        e => e,
    }
}

/// One pin case and its result.
#[derive(Clone, Debug)]
pub struct PinCaseResult {
    /// The leaf the server presented.
    pub server: LeafKind,
    /// What was pinned.
    pub pin: PinKind,
    /// The certificate bits tried.
    pub flags: u32,
    /// What happened.
    pub outcome: Outcome,
    /// What the oracle demands ([`expected_pin`]).
    pub expected: Expected,
    /// The error's message, when it failed.
    pub message: Option<String>,
    /// Every way the case breaks the policy; empty when it conforms.
    pub problems: Vec<String>,
    /// The protocol that carried the case's request; `None` when none
    /// reached the server.
    pub protocol: Option<&'static str>,
}

async fn run_pin_case(
    transport: &dyn Transport,
    server: &TlsServer,
    pki: &TestPki,
    kind: LeafKind,
    pin: PinKind,
    flags: u32,
    id: usize,
) -> PinCaseResult {
    let expected = expected_pin(kind, pin, flags);
    let target = format!("/file?case={id}&flags=0x{flags:02X}&pin");
    let url = server.url(&target);
    let pins = PinSet::parse(&pin.pin(pki, kind).to_string())
        .expect("a pin")
        .expect("one pin");
    let policy =
        ConnectionPolicy::new(SecurityFlags::new(flags).expect("certificate bits")).with_pins(Some(pins));
    let mut problems = Vec::new();
    let mut message = None;
    let refusal = transport.check_policy(&policy).err();
    let result = tokio::time::timeout(CASE_TIMEOUT, fetch(transport, Request::get(url, policy))).await;
    let arrived = server.requests_for(&target);
    let outcome = if let Some(e) = refusal {
        message = Some(e.to_string());
        if e.hresult() != Hresult::E_NOTIMPL {
            problems.push(format!(
                "check_policy refused pins with {}; a refusal must be E_NOTIMPL",
                hex(e.hresult())
            ));
        }
        if let Ok(Ok(_)) = result {
            problems.push("check_policy refused pins but send() under them SUCCEEDED (broadening)".into());
        }
        if arrived != 0 {
            problems.push("an HTTP request reached the server under a refused policy".into());
        }
        return PinCaseResult {
            server: kind,
            pin,
            flags,
            outcome: Outcome::Refused,
            expected,
            message,
            problems,
            protocol: carried(server, &target),
        };
    } else {
        match result {
            Err(_) => Outcome::Timeout,
            Ok(Ok((200, body))) if body == TlsServer::BODY => Outcome::Ok,
            Ok(Ok((status, _))) => {
                problems.push(format!("status {status} or a body that differs"));
                Outcome::Ok
            }
            Ok(Err(e)) => {
                message = Some(e.to_string());
                if e.hresult() == Hresult::TRUST_E_FAIL
                    && (e.context() != ErrorContext::ServerCertificateCallback || !e.is_transient())
                {
                    problems.push(
                        "a pin rejection must be transient, context SERVER_CERTIFICATE_CALLBACK".into(),
                    );
                }
                Outcome::Failed(e.hresult())
            }
        }
    };
    match (&expected, &outcome) {
        (Expected::Ok, Outcome::Ok) if arrived != 1 => problems.push(format!(
            "the server saw {arrived} requests for this case, expected 1"
        )),
        (Expected::Ok, Outcome::Ok) => {}
        (Expected::Ok, o) => {
            problems.push(format!("{o} but the flags cover every fault and the pin matches"))
        }
        (Expected::Fail(_), Outcome::Ok) => problems.push(
            "SUCCEEDED although the flags or the pin refuse it (security bug: broader than asked)".into(),
        ),
        (Expected::Fail(codes), Outcome::Failed(h)) => {
            if !codes.contains(h) {
                problems.push(format!("failed with {}, expected one of {expected}", hex(*h)));
            }
            if arrived != 0 {
                problems.push(format!(
                    "a rejection, yet {arrived} HTTP request(s) reached the server"
                ));
            }
        }
        (_, o) => problems.push(format!("{o}")),
    }
    PinCaseResult {
        server: kind,
        pin,
        flags,
        outcome,
        expected,
        message,
        problems,
        protocol: carried(server, &target),
    }
}

async fn run_case(
    transport: &dyn Transport,
    server: &TlsServer,
    kind: LeafKind,
    flags: u32,
    id: usize,
) -> CaseResult {
    let expected = Expected::of(kind, flags);
    let target = format!("/file?case={id}&flags=0x{flags:02X}");
    let url = server.url(&target);
    let sec = SecurityFlags::new(flags).expect("matrix flags are certificate bits");
    let mut problems = Vec::new();
    let mut message = None;

    if let Err(e) = transport.check_policy(&ConnectionPolicy::new(sec)) {
        let code = e.hresult();
        let outcome = if code == Hresult::E_NOTIMPL {
            Outcome::Refused
        } else {
            problems.push(format!(
                "check_flags refused with {} ({e}); a refusal must be E_NOTIMPL 0x80004001",
                hex(code)
            ));
            Outcome::RefusedWith(code)
        };
        if flags == 0 {
            problems.push("check_flags refused the default flags 0; every transport must honour them".into());
        }
        // A refused value must not work through send() either.
        let sent = tokio::time::timeout(
            CASE_TIMEOUT,
            fetch(transport, Request::get(url, ConnectionPolicy::new(sec))),
        )
        .await;
        if let Ok(Ok(_)) = sent {
            problems
                .push("check_flags refused these flags but send() under them SUCCEEDED (broadening)".into());
        }
        if server.requests_for(&target) != 0 {
            problems.push("an HTTP request reached the server under refused flags".into());
        }
        return CaseResult {
            server: kind,
            flags,
            outcome,
            expected,
            message: Some(e.to_string()),
            problems,
            protocol: carried(server, &target),
        };
    }

    let result = tokio::time::timeout(
        CASE_TIMEOUT,
        fetch(transport, Request::get(url, ConnectionPolicy::new(sec))),
    )
    .await;
    let arrived = server.requests_for(&target);
    let outcome = match result {
        Err(_) => {
            problems.push(format!("no result within {CASE_TIMEOUT:?}"));
            Outcome::Timeout
        }
        Ok(Ok((status, body))) => {
            if status != 200 {
                problems.push(format!("status {status}, expected 200"));
            } else if body != TlsServer::BODY {
                problems.push(format!(
                    "body of {} bytes differs from the served one",
                    body.len()
                ));
            }
            if arrived != 1 {
                problems.push(format!(
                    "the server saw {arrived} requests for this case, expected 1"
                ));
            }
            Outcome::Ok
        }
        Ok(Err(e)) => {
            message = Some(e.to_string());
            Outcome::Failed(e.hresult())
        }
    };
    match (&expected, &outcome) {
        (Expected::Ok, Outcome::Failed(h)) => {
            problems.push(format!("failed with {} but the flags cover every fault", hex(*h)));
        }
        (Expected::Fail(_), Outcome::Ok) => {
            let faults: Vec<&str> = kind
                .uncovered_faults(flags)
                .iter()
                .map(|f| Fault::as_str(*f))
                .collect();
            problems.push(format!(
                "SUCCEEDED although the flags leave {} uncovered (security bug: broader than asked)",
                faults.join(", ")
            ));
        }
        (Expected::Fail(codes), Outcome::Failed(h)) => {
            if !codes.contains(h) {
                problems.push(format!("failed with {}, expected one of {expected}", hex(*h)));
            }
            if arrived != 0 {
                problems.push(format!(
                    "a certificate failure, yet {arrived} HTTP request(s) reached the server"
                ));
            }
        }
        _ => {}
    }
    CaseResult {
        server: kind,
        flags,
        outcome,
        expected,
        message,
        problems,
        protocol: carried(server, &target),
    }
}

/// Sends `request` and reads the whole body.
async fn fetch(transport: &dyn Transport, request: Request) -> Result<(u16, Vec<u8>), BitsError> {
    let mut response = transport.send(request).await?;
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok((response.status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_examples() {
        use LeafKind::*;
        let date = Hresult::WINHTTP_SECURE_CERT_DATE_INVALID;
        let cn = Hresult::WINHTTP_SECURE_CERT_CN_INVALID;
        let ca = Hresult::WINHTTP_SECURE_INVALID_CA;
        let rev_failed = Hresult::WINHTTP_SECURE_CERT_REV_FAILED;
        let revoked = Hresult::WINHTTP_SECURE_CERT_REVOKED;
        assert_eq!(Expected::of(Good, 0), Expected::Ok);
        assert_eq!(Expected::of(Expired, 0x02), Expected::Fail(vec![date]));
        assert_eq!(Expected::of(ExpWrongHost, 0), Expected::Fail(vec![date, cn]));
        assert_eq!(Expected::of(ExpWrongHost, 0x06), Expected::Ok);
        assert_eq!(Expected::of(UnknownCa, 0x09), Expected::Fail(vec![rev_failed]));
        assert_eq!(
            Expected::of(UnknownCa, 0x01),
            Expected::Fail(vec![ca, rev_failed])
        );
        assert_eq!(Expected::of(Revoked, 0x1E), Expected::Ok);
        assert_eq!(Expected::of(Revoked, 0x1F), Expected::Fail(vec![revoked]));
        assert_eq!(Expected::of(RevokedExpired, 0x05), Expected::Fail(vec![revoked]));
        assert_eq!(
            Expected::of(RevokedExpired, 0x01),
            Expected::Fail(vec![revoked, date])
        );
        assert_eq!(
            Expected::of(CrlUnreachable, 0x01),
            Expected::Fail(vec![rev_failed])
        );
        assert_eq!(Expected::of(ViaInt, 0x1F), Expected::Ok);
        assert_eq!(Expected::of(ExpWrongHost, 0).to_string(), "0x80072F05|0x80072F06");
        assert!(Outcome::Refused == "refused");
        assert!(Outcome::Failed(date) == "0x80072F05");
        assert!(Outcome::Ok != "refused");
    }

    #[test]
    fn matrix_flags_are_distinct_certificate_bits() {
        let mut seen = std::collections::HashSet::new();
        for f in MATRIX_FLAGS {
            assert!(f <= SecurityFlags::CERT_MASK);
            assert!(seen.insert(f));
        }
        assert_eq!(seen.len(), 32);
        // Supersets first: no value is followed by one that relaxes more.
        for (i, a) in MATRIX_FLAGS.iter().enumerate() {
            for b in &MATRIX_FLAGS[i + 1..] {
                assert!(b & a != *a || a == b, "0x{b:02X} after 0x{a:02X}");
            }
        }
    }
}
