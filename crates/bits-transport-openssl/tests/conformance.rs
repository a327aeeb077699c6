//! The backend conformance matrix (bits-testkit): every leaf of the test
//! PKI under every flag value of the matrix, against real TLS servers. This
//! backend refuses nothing, must satisfy the policy's oracle everywhere,
//! and must report exactly the errors of `docs/spec/tls.md` appendix B (the
//! probe of OpenSSL's callback policy) where the matrix has them.
//!
//! `BITS_CONFORMANCE_OUT=<dir>` writes `<dir>/openssl.json` for
//! `cargo xtask conformance`.

use bits_testkit::backend;
use bits_testkit::conformance::{Outcome, Report};
use bits_testkit::pki::LeafKind;
use bits_transport_openssl::Openssl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_conforms_to_the_policy_matrix() {
    let report = backend::run_matrix::<Openssl>().await;
    report.write_json_if_requested().unwrap();
    report.assert_conforms();
    assert!(
        report.cases.iter().all(|c| c.outcome != Outcome::Refused),
        "this backend refuses no flag value"
    );
    assert_matches_appendix_b(&report);
}

/// Appendix B's columns, as certificate bits.
const COLUMNS: [u32; 13] = [
    0x00, 0x02, 0x04, 0x08, 0x10, 0x06, 0x0C, 0x0A, 0x1E, 0x01, 0x05, 0x09, 0x1F,
];

/// Appendix B's rows (probe names mapped to the testkit's leaves); a cell is
/// OK or the X509_V_ERR code the probe failed with.
#[rustfmt::skip]
const APPENDIX_B: [(LeafKind, [&str; 13]); 13] = {
    use LeafKind::*;
    [
        (Good, ["OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK"]),
        (Expired, ["10", "10", "OK", "10", "10", "OK", "OK", "10", "OK", "10", "OK", "10", "OK"]),
        (NotYet, ["9", "9", "OK", "9", "9", "OK", "OK", "9", "OK", "9", "OK", "9", "OK"]),
        (WrongHost, ["62", "OK", "62", "62", "62", "OK", "62", "OK", "OK", "62", "62", "62", "OK"]),
        (ClientAuth, ["26", "26", "26", "26", "OK", "26", "26", "26", "OK", "26", "26", "26", "OK"]),
        (Revoked, ["OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "23", "23", "23", "23"]),
        (UnknownCa, ["20", "20", "20", "OK", "20", "20", "OK", "OK", "OK", "20", "20", "3", "3"]),
        (ExpWrongHost, ["62", "10", "62", "62", "62", "OK", "62", "10", "OK", "62", "62", "62", "OK"]),
        (ExpUnknownCa, ["20", "20", "20", "10", "20", "20", "OK", "10", "OK", "20", "20", "3", "3"]),
        (WrongHostUnknownCa, ["20", "20", "20", "62", "20", "20", "62", "OK", "OK", "20", "20", "62", "3"]),
        (ClientWrongHost, ["26", "26", "26", "26", "62", "26", "26", "26", "OK", "26", "26", "26", "OK"]),
        (RevokedExpired, ["10", "10", "OK", "10", "10", "OK", "OK", "10", "OK", "23", "23", "23", "23"]),
        (SelfSigned, ["18", "18", "18", "OK", "18", "18", "OK", "OK", "OK", "18", "18", "3", "3"]),
    ]
};

/// The HRESULT this backend reports for an appendix B cell.
fn outcome_of(cell: &str) -> String {
    let hresult = match cell {
        "OK" => return "ok".to_owned(),
        "9" | "10" => "0x80072F05",
        "62" => "0x80072F06",
        "18" | "20" => "0x80072F0D",
        "26" => "0x80072F93",
        "23" => "0x80072F8A",
        "3" => "0x80072F19",
        other => panic!("appendix B has no code {other}"),
    };
    hresult.to_owned()
}

fn assert_matches_appendix_b(report: &Report) {
    let mut mismatches = Vec::new();
    for (leaf, cells) in APPENDIX_B {
        for (flags, cell) in COLUMNS.into_iter().zip(cells) {
            let case = report
                .case(leaf, flags)
                .unwrap_or_else(|| panic!("the matrix has no case {leaf} 0x{flags:02X}"));
            let got = case.outcome.to_string();
            let want = outcome_of(cell);
            if got != want {
                mismatches.push(format!(
                    "{leaf} under 0x{flags:02X}: got {got}, appendix B says {cell} ({want})"
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
