//! The shared conformance matrix (bits-testkit) against the native backend:
//! every leaf of the test PKI under all 32 certificate-flag values, real
//! TLS on 127.0.0.1. Each case must conform to the policy or be refused
//! with E_NOTIMPL by `check_policy`; here exactly 0x00 and 0x02 run.
//!
//! With `BITS_CONFORMANCE_OUT=<dir>` it also writes `<dir>/native.json` and
//! `<dir>/reasons/native.json` (why each refused flag bit is refused), which
//! `cargo xtask conformance` turns into docs/conformance.md and
//! docs/backends.md.

use bits_testkit::backend;
use bits_testkit::conformance::{Outcome, OUT_ENV};
use bits_transport_native::{refusal_reason, Native, SUPPORTED_CERT_FLAGS};

fn write_reasons() {
    let Some(dir) = std::env::var_os(OUT_ENV).filter(|d| !d.is_empty()) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir).join("reasons");
    std::fs::create_dir_all(&dir).expect("create the reasons directory");
    let reasons: serde_json::Map<String, serde_json::Value> = [0x01u32, 0x02, 0x04, 0x08, 0x10, 0x1E]
        .into_iter()
        .filter_map(|bit| Some((format!("0x{bit:04X}"), refusal_reason(bit)?.into())))
        .collect();
    let text = serde_json::to_string_pretty(&reasons).expect("serialize reasons");
    std::fs::write(dir.join("native.json"), text + "\n").expect("write reasons");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_backend_conforms_or_refuses_every_value() {
    // The matrix runs all 32 values most permissive first, so a pooled
    // 0x02 connection would be caught serving the 0x00 case that runs last.
    let report = backend::run_matrix::<Native>().await;
    report.write_json_if_requested().expect("write the JSON report");
    write_reasons();
    report.assert_conforms();

    for case in &report.cases {
        let honoured = SUPPORTED_CERT_FLAGS.contains(&case.flags);
        assert_eq!(
            case.outcome != Outcome::Refused,
            honoured,
            "{} under 0x{:02X}: {}",
            case.server,
            case.flags,
            case.outcome
        );
    }
    assert_eq!(report.cases.len(), 15 * 32);
}
