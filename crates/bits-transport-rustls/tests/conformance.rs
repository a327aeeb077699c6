//! The backend conformance matrix (bits-testkit): every leaf of the test
//! PKI under every flag value of the matrix, against real TLS servers. This
//! backend refuses nothing and must satisfy the policy's oracle everywhere;
//! its accept/reject pattern must equal tls-mapping.md appendix B's
//! (OpenSSL) on every cell the matrix shares with it, as appendix C
//! observed for rustls. (The cases where rustls is narrower than OpenSSL
//! need chains the matrix does not serve; `chains` covers them.)
//!
//! `BITS_CONFORMANCE_OUT=<dir>` writes `<dir>/rustls.json` for
//! `cargo xtask conformance`.

use std::sync::Arc;

use bits_testkit::conformance::{run_matrix, Outcome, Report};
use bits_testkit::pki::LeafKind;
use bits_transport_rustls::RustlsTransport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_conforms_to_the_policy_matrix() {
    let crl_cache = tempfile::tempdir().unwrap();
    let dir = crl_cache.path().to_owned();
    let report = run_matrix("rustls", &|pki| {
        Arc::new(
            RustlsTransport::builder()
                .add_root_pem(pki.root_pem())
                .unwrap()
                .system_roots(false)
                .crl_cache_dir(&dir)
                .build()
                .unwrap(),
        )
    })
    .await;
    report.write_json_if_requested().unwrap();
    report.assert_conforms();
    assert!(
        report.cases.iter().all(|c| c.outcome != Outcome::Refused),
        "this backend refuses no flag value"
    );
    assert_accepts_as_appendix_b(&report);
}

/// Appendix B's columns, as certificate bits.
const COLUMNS: [u32; 13] = [
    0x00, 0x02, 0x04, 0x08, 0x10, 0x06, 0x0C, 0x0A, 0x1E, 0x01, 0x05, 0x09, 0x1F,
];

/// Appendix B's rows, `true` = OK. Appendix C: rustls accepts and rejects
/// exactly these (its reported error may differ where several faults
/// apply, since webpki checks in another order).
#[rustfmt::skip]
const APPENDIX_B_OK: [(LeafKind, [bool; 13]); 13] = {
    use LeafKind::*;
    const T: bool = true;
    const F: bool = false;
    [
        (Good, [T, T, T, T, T, T, T, T, T, T, T, T, T]),
        (Expired, [F, F, T, F, F, T, T, F, T, F, T, F, T]),
        (NotYet, [F, F, T, F, F, T, T, F, T, F, T, F, T]),
        (WrongHost, [F, T, F, F, F, T, F, T, T, F, F, F, T]),
        (ClientAuth, [F, F, F, F, T, F, F, F, T, F, F, F, T]),
        (Revoked, [T, T, T, T, T, T, T, T, T, F, F, F, F]),
        (UnknownCa, [F, F, F, T, F, F, T, T, T, F, F, F, F]),
        (ExpWrongHost, [F, F, F, F, F, T, F, F, T, F, F, F, T]),
        (ExpUnknownCa, [F, F, F, F, F, F, T, F, T, F, F, F, F]),
        (WrongHostUnknownCa, [F, F, F, F, F, F, F, T, T, F, F, F, F]),
        (ClientWrongHost, [F, F, F, F, F, F, F, F, T, F, F, F, T]),
        (RevokedExpired, [F, F, T, F, F, T, T, F, T, F, F, F, F]),
        (SelfSigned, [F, F, F, T, F, F, T, T, T, F, F, F, F]),
    ]
};

fn assert_accepts_as_appendix_b(report: &Report) {
    let mut mismatches = Vec::new();
    for (leaf, cells) in APPENDIX_B_OK {
        for (flags, ok) in COLUMNS.into_iter().zip(cells) {
            let case = report
                .case(leaf, flags)
                .unwrap_or_else(|| panic!("the matrix has no case {leaf} 0x{flags:02X}"));
            if (case.outcome == Outcome::Ok) != ok {
                mismatches.push(format!(
                    "{leaf} under 0x{flags:02X}: got {}, appendix B says {}",
                    case.outcome,
                    if ok { "OK" } else { "a failure" }
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "differs from tls-mapping appendix B:\n{}",
        mismatches.join("\n")
    );
}
