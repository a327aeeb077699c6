//! The backend conformance matrix (bits-testkit): every leaf of the test
//! PKI under every flag value of the matrix, against real TLS servers. This
//! backend refuses nothing and must satisfy the policy's oracle everywhere;
//! its accept/reject pattern must equal `docs/spec/tls.md` appendix B's
//! (OpenSSL) on every cell the matrix shares with it, as appendix C
//! observed for rustls. (The cases where rustls is narrower than OpenSSL
//! need chains the matrix does not serve; `chains` covers them.)
//!
//! `BITS_CONFORMANCE_OUT=<dir>` writes `<dir>/rustls.json` and
//! `<dir>/notes/rustls.md` (why its cells differ from OpenSSL's) for
//! `cargo xtask conformance`.

use bits_testkit::backend;
use bits_testkit::conformance::{Outcome, Report, OUT_ENV};
use bits_testkit::pki::LeafKind;
use bits_transport_rustls::Rustls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_conforms_to_the_policy_matrix() {
    let report = backend::run_matrix::<Rustls>().await;
    report.write_json_if_requested().unwrap();
    write_notes();
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
        "differs from docs/spec/tls.md appendix B:\n{}",
        mismatches.join("\n")
    );
}

/// Why this backend's cells differ from OpenSSL's, for docs/conformance.md.
const NOTES: &str = "\
Where rustls and OpenSSL differ:

- **Same verdict, another error.** For a certificate with several faults \
each engine reports the first it meets: webpki checks dates, then usage, \
then the issuer, then signatures and CRLs, and the host name last; OpenSSL \
checks the chain, then usage, the host name, CRLs, and dates last \
(`docs/spec/tls.md` §4.1, pitfall 3). Both fail; each error is one of the \
uncovered faults.
- **Narrower (fails where OpenSSL succeeds), in chains the matrix does not \
serve** (crates/bits-transport-rustls/tests/chains.rs):
  - `IGNORE_CERT_DATE_INVALID` is honoured by verifying again at a time \
every certificate of the chain is valid at; when there is no such instant \
(a leaf valid from today under an intermediate that expired last month) \
the date error stands (`0x80072F05`), where OpenSSL accepts.
  - `IGNORE_UNKNOWN_CA`: when a certificate named like the leaf's issuer is \
presented but no path forms through it, the case is not decided and \
`0x80072F0D` stands (a bad signature there is `0x80072F8F`, as with \
OpenSSL).
- A leaf whose issuer is absent under `IGNORE_UNKNOWN_CA` gets every check \
that needs no issuer (dates, usage, constraints, host name), as OpenSSL \
does; with `ENABLE_CRL_CHECK` its revocation cannot be checked \
(`0x80072F19`), as with OpenSSL.
- Checks webpki leaves out and OpenSSL makes are made by the backend \
itself: the leaf's keyUsage must allow a TLS server (ignorable by \
`IGNORE_CERT_WRONG_USAGE`, as OpenSSL's 26), and every presented CA \
certificate's keyUsage must allow keyCertSign (never ignorable, \
`0x80072F8F`).
";

fn write_notes() {
    let Some(dir) = std::env::var_os(OUT_ENV).filter(|d| !d.is_empty()) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir).join("notes");
    std::fs::create_dir_all(&dir).expect("create the notes directory");
    std::fs::write(dir.join("rustls.md"), NOTES).expect("write the notes");
}
