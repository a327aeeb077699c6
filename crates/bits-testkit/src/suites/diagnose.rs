//! `bits diagnose` ([`bits_http::diagnose`]) against every leaf of the test
//! PKI, per backend ([`diagnose_tests!`](crate::diagnose_tests)): the
//! faults found and the least flags equal what the conformance oracle says
//! for that leaf ([`LeafKind::effective_faults`],
//! [`LeafKind::uncovered_faults`]), so the two can never disagree; and no
//! HTTP request ever reaches a server.

use bits_core::{CertFault, ConnectionPolicy, SecurityFlags};
use bits_http::diagnose::{self, DiagnoseOptions, Diagnosis, Presence, Target, IGNORABLE};
use bits_http::TlsBackend;

use crate::backend::with_pki_and_crl_cache;
use crate::crl::CrlServer;
use crate::pki::{Fault, LeafKind, TestPki};
use crate::temp::TempDir;
use crate::tls::TlsServer;

/// The testkit's fault for a diagnosed one.
pub fn fault_of(f: CertFault) -> Option<Fault> {
    Some(match f {
        CertFault::Date => Fault::Date,
        CertFault::Cn => Fault::Cn,
        CertFault::UnknownCa => Fault::Ca,
        CertFault::Usage => Fault::Usage,
        CertFault::Revoked => Fault::Revoked,
        CertFault::RevocationFailed => Fault::CrlUnreachable,
        CertFault::Other => return None,
    })
}

/// What the oracle says the least flags of `kind` are on a backend that
/// honours what `check` accepts: the first candidate
/// ([`diagnose::candidates`]) honoured and leaving no fault uncovered.
pub fn expected_least(
    kind: LeafKind,
    crl: bool,
    check: fn(&ConnectionPolicy) -> Result<(), bits_core::BitsError>,
) -> Option<u32> {
    diagnose::candidates(crl).into_iter().find(|v| {
        check(&ConnectionPolicy::new(SecurityFlags::new(*v).unwrap())).is_ok()
            && kind.uncovered_faults(*v).is_empty()
    })
}

/// Checks one diagnosis against the oracle; returns every disagreement.
pub fn disagreements<B: TlsBackend>(kind: LeafKind, crl: bool, d: &Diagnosis) -> Vec<String> {
    let mut out = Vec::new();
    let crl_bits = if crl { SecurityFlags::ENABLE_CRL_CHECK } else { 0 };
    let effective = kind.effective_faults(crl_bits);
    let honours_all = diagnose::candidates(false)
        .into_iter()
        .all(|v| B::check_policy(&ConnectionPolicy::new(SecurityFlags::new(v).unwrap())).is_ok());
    for f in &d.findings {
        let Some(fault) = fault_of(f.fault) else { continue };
        let is = effective.contains(&fault);
        match f.presence {
            Presence::Present if !is => {
                out.push(format!("{kind}: {fault} found, the oracle has {effective:?}"))
            }
            Presence::Absent if is => out.push(format!(
                "{kind}: {fault} said absent, the oracle has {effective:?}"
            )),
            Presence::Unknown if honours_all && IGNORABLE.contains(&f.fault) => out.push(format!(
                "{kind}: {fault} unknown on a backend that honours every value"
            )),
            _ => {}
        }
    }
    if honours_all {
        let found: Vec<Fault> = d.present().into_iter().filter_map(fault_of).collect();
        for fault in &effective {
            if !found.contains(fault) {
                out.push(format!(
                    "{kind}: {fault} not found ({found:?}; oracle {effective:?})"
                ));
            }
        }
    }
    let want = expected_least(kind, crl, B::check_policy);
    let got = d.least_flags.map(SecurityFlags::bits);
    if want != got {
        out.push(format!(
            "{kind}: least flags {got:04X?}, the oracle says {want:04X?} ({:?})",
            d.why_none
        ));
    }
    if got.is_none() && d.why_none.is_none() {
        out.push(format!("{kind}: no least flags and no reason"));
    }
    if let Some(v) = got {
        if B::check_policy(&ConnectionPolicy::new(SecurityFlags::new(v).unwrap())).is_err() {
            out.push(format!(
                "{kind}: least flags 0x{v:04X} are refused by the backend"
            ));
        }
    }
    out
}

/// Diagnoses every leaf of the test PKI (with `crl`, revocation too,
/// against a CRL server of its own) and compares with the oracle; checks
/// the chain shown and that no HTTP request reached any server.
pub async fn diagnose_agrees_with_the_matrix<B: TlsBackend>(crl: bool) {
    let crls = CrlServer::start();
    crls.serve_pki(TestPki::shared());
    let pki = TestPki::shared().with_crl_base(&crls.base_url());
    let cache = TempDir::new("diagnose-crl");
    let t = with_pki_and_crl_cache::<B>(&pki, cache.path());
    let options = DiagnoseOptions {
        crl,
        ..DiagnoseOptions::default()
    };
    let mut problems = Vec::new();
    for kind in LeafKind::ALL {
        let leaf = pki.leaf(kind);
        let server = TlsServer::start(leaf);
        let target = Target::from_url(server.url("/").as_str()).unwrap();
        let d = diagnose::diagnose::<B>(t.http().tls(), &target, &options)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        problems.extend(disagreements::<B>(kind, crl, &d));
        if server.request_count() != 0 {
            problems.push(format!(
                "{kind}: {} HTTP requests reached the server",
                server.request_count()
            ));
        }
        // The chain, when a handshake succeeded: the leaf first, its pin.
        if let Some(first) = d.chain.first() {
            let pin = crate::suites::pins::pin_of(leaf.cert());
            if first.pin != pin {
                problems.push(format!("{kind}: the chain's first certificate is not the leaf"));
            }
            if d.whole_chain && d.chain.len() != 1 + leaf.chain().len() {
                problems.push(format!(
                    "{kind}: {} certificates shown, the server sent {}",
                    d.chain.len(),
                    1 + leaf.chain().len()
                ));
            }
        } else if d.tries.iter().any(|(_, o)| *o == diagnose::Outcome::Accepted) {
            problems.push(format!("{kind}: a handshake succeeded but no chain is shown"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} diagnose disagrees with the matrix:\n{}",
        B::NAME,
        problems.join("\n")
    );
}

/// A port nobody listens on: the error (the CLI's exit 1), not a diagnosis.
pub async fn an_unreachable_server_is_an_error<B: TlsBackend>() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = crate::backend::with_pki::<B>(TestPki::shared());
    let target = Target::from_url(&format!("https://127.0.0.1:{port}/")).unwrap();
    let e = diagnose::diagnose::<B>(t.http().tls(), &target, &DiagnoseOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.hresult(), bits_core::Hresult::WINHTTP_CANNOT_CONNECT, "{e}");
}
