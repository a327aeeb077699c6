//! `bits diagnose` through the real binary, against a real TLS server per
//! leaf of the test PKI (the root trusted through `SSL_CERT_FILE`, as a
//! user would): the `--json` object's faults and least flags per backend
//! equal the conformance oracle (`LeafKind::effective_faults`,
//! `uncovered_faults`), no HTTP request reaches a server, and the exit
//! statuses are 0 (ran), 1 (unreachable), 2 (bad URL).

mod support;

use bits_testkit::pki::{Fault, LeafKind, TestPki};
use bits_testkit::tls::TlsServer;
use serde_json::Value;
use support::Env;

/// Each compiled backend and the certificate-flag values it honours, as
/// `bits backends --json` says.
fn backends(env: &Env) -> Vec<(String, Vec<u32>)> {
    let v = env.run(&["--json", "backends"]).ok().json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let flags = b["supported_cert_flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_u64().unwrap() as u32)
                .collect();
            (b["name"].as_str().unwrap().to_owned(), flags)
        })
        .collect()
}

fn json_name(f: Fault) -> &'static str {
    match f {
        Fault::Date => "date",
        Fault::Cn => "name",
        Fault::Ca => "unknown_ca",
        Fault::Usage => "usage",
        Fault::Revoked => "revoked",
        Fault::CrlUnreachable => "revocation_unchecked",
    }
}

/// The oracle's least flags: fewest ignore bits, then smallest, among
/// the values the backend honours.
fn expected_least(kind: LeafKind, honoured: &[u32]) -> Option<String> {
    let mut candidates: Vec<u32> = (0..=0x1Eu32).filter(|v| v & 1 == 0).collect();
    candidates.sort_by_key(|v| (v.count_ones(), *v));
    candidates
        .into_iter()
        .find(|v| honoured.contains(v) && kind.uncovered_faults(*v).is_empty())
        .map(|v| format!("0x{v:04X}"))
}

#[test]
fn diagnose_json_agrees_with_the_matrix_on_every_leaf_and_sends_no_request() {
    let env = Env::trusting_test_root();
    let pki = TestPki::shared();
    let backends = backends(&env);
    assert!(!backends.is_empty());
    let mut problems = Vec::new();
    for kind in LeafKind::ALL {
        let server = TlsServer::start(pki.leaf(kind));
        let url = server.url("/file");
        let out: Value = env.run(&["--json", "diagnose", url.as_str()]).ok().json();
        assert_eq!(out["port"], server.addr().port());
        assert_eq!(out["crl"], false);
        let effective = kind.effective_faults(0);
        for (name, honoured) in &backends {
            let d = out["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["backend"] == name.as_str())
                .unwrap_or_else(|| panic!("no {name} in {out}"));
            let honours_all = (0..=0x1Eu32)
                .filter(|v| v & 1 == 0)
                .all(|v| honoured.contains(&v));
            for f in [Fault::Date, Fault::Cn, Fault::Ca, Fault::Usage] {
                let present = &d["faults"][json_name(f)]["present"];
                let is = effective.contains(&f);
                let ok = match present {
                    Value::Bool(p) => *p == is,
                    Value::Null => !honours_all,
                    _ => false,
                };
                if !ok {
                    problems.push(format!(
                        "{kind} on {name}: {f} present = {present}, oracle {effective:?}"
                    ));
                }
            }
            let want = expected_least(kind, honoured);
            let got = d["least_flags"].as_str().map(str::to_owned);
            if got != want {
                problems.push(format!(
                    "{kind} on {name}: least flags {got:?}, oracle {want:?} ({})",
                    d["why_none"]
                ));
            }
            if got.is_none() && !d["why_none"].is_string() {
                problems.push(format!("{kind} on {name}: no least flags and no reason"));
            }
            // Each value the backend refuses is listed as refused.
            for r in d["refused"].as_array().unwrap() {
                let v = u32::from_str_radix(r.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
                if honoured.contains(&v) {
                    problems.push(format!(
                        "{kind} on {name}: 0x{v:04X} listed as refused but honoured"
                    ));
                }
            }
        }
        if server.request_count() != 0 {
            problems.push(format!(
                "{kind}: {} HTTP requests reached the server",
                server.request_count()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// A backend that completes a handshake under loose flags shows the chain;
// native alone honours none that accept this leaf.
#[cfg(any(feature = "openssl", feature = "rustls"))]
#[test]
fn the_text_report_shows_the_chain_faults_and_least_flags() {
    let env = Env::trusting_test_root();
    let pki = TestPki::shared();
    let leaf = pki.leaf(LeafKind::ExpUnknownCa);
    let server = TlsServer::start(leaf);
    let r = env.run(&["diagnose", server.url("/").as_str()]).ok();
    let text = r.stdout;
    for (name, _) in backends(&env) {
        assert!(text.contains(&format!("\n{name}:\n")), "{text}");
    }
    assert!(text.contains("chain presented"), "{text}");
    assert!(text.contains("sha256//"), "{text}");
    assert!(text.contains("least flags 0x000C"), "{text}");
    assert!(text.contains("date (0x0004)"), "{text}");
    assert!(text.contains("unknown CA (0x0008)"), "{text}");
    assert!(!text.contains("name (0x0002) ["), "{text}");
    assert_eq!(server.request_count(), 0);
    eprintln!("{text}");
}

#[test]
fn exit_statuses_say_ran_unreachable_or_bad_url() {
    let env = Env::trusting_test_root();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    env.run(&["diagnose", &format!("https://127.0.0.1:{port}/")])
        .fails(1, "0x80072EFD");
    env.run(&["diagnose", "http://127.0.0.1/"]).fails(2, "0x80070057");
    env.run(&["diagnose", "not a url"]).fails(2, "0x80070057");
    env.run(&["diagnose", "--backend", "gnutls", "https://127.0.0.1/"])
        .fails(2, "0x80070057");
}
