//! `diagnose URL [--crl]`: TLS handshakes only, no HTTP request, on each
//! compiled backend (or `--backend B`): the presented chain, every
//! certificate fault, the least security-flags value each backend accepts
//! the server under (`bits_http::diagnose`; `docs/spec/cli.md`). Exit 0
//! when the diagnosis ran, 1 when the server cannot be reached, 2 on a bad
//! URL.

use std::fmt::Write as _;
use std::process::ExitCode;

use bits_core::CertFault;
use bits_http::diagnose::{fault_name, DiagnoseOptions, Diagnosis, Outcome, Presence, Target};
use serde_json::{json, Value};

use super::Ctx;
use crate::backend::Backend;
use crate::error::Failure;

pub(super) fn diagnose(ctx: &Ctx, url: &str, crl: bool) -> anyhow::Result<ExitCode> {
    let target = Target::from_url(url).map_err(|e| Failure::from_bits(&e))?;
    let backends = match &ctx.global.backend {
        Some(name) => vec![Backend::from_name(name)?],
        None => Backend::compiled(),
    };
    let options = DiagnoseOptions {
        crl,
        ..DiagnoseOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for b in backends {
        let d = runtime
            .block_on(b.diagnose(&ctx.dir, &target, &options))
            .map_err(|e| {
                let f = Failure::from_bits(&e);
                Failure::runtime(
                    f.code,
                    format!("cannot reach {target}: {}", f.message),
                    "check the URL's host and port, and that the server is up",
                )
            })?;
        results.push(d);
    }
    if ctx.global.json {
        out!("{}", to_json(url, &target, crl, &results));
    } else {
        out_raw!("{}", to_text(&target, &results));
    }
    Ok(ExitCode::SUCCESS)
}

fn flags_hex(bits: u32) -> String {
    format!("0x{bits:04X}")
}

fn faults_json(d: &Diagnosis) -> Value {
    let mut map = serde_json::Map::new();
    for f in &d.findings {
        let present = match f.presence {
            Presence::Present => Value::Bool(true),
            Presence::Absent => Value::Bool(false),
            Presence::Unknown => Value::Null,
        };
        map.insert(
            fault_name(f.fault).to_owned(),
            json!({"present": present, "evidence": f.evidence}),
        );
    }
    Value::Object(map)
}

/// The `--json` object (its fields are in `bits diagnose --help`).
pub(crate) fn to_json(url: &str, target: &Target, crl: bool, results: &[Diagnosis]) -> Value {
    let backends: Vec<Value> = results
        .iter()
        .map(|d| {
            json!({
                "backend": d.backend,
                "chain": d.chain.iter().map(|c| json!({
                    "subject": c.subject,
                    "issuer": c.issuer,
                    "not_before": c.not_before,
                    "not_after": c.not_after,
                    "names": c.names,
                    "pin": c.pin.to_string(),
                })).collect::<Vec<_>>(),
                "chain_flags": d.chain_flags.map(|f| flags_hex(f.bits())),
                "whole_chain": d.whole_chain,
                "faults": faults_json(d),
                "least_flags": d.least_flags.map(|f| flags_hex(f.bits())),
                "why_none": d.why_none,
                "refused": d.refused().iter().map(|f| flags_hex(f.bits())).collect::<Vec<_>>(),
                "tries": d.tries.iter().map(|(f, o)| json!({
                    "flags": flags_hex(f.bits()),
                    "outcome": o.to_string(),
                    "message": match o {
                        Outcome::Accepted => None,
                        Outcome::Failed(_, m) | Outcome::Refused(m) => Some(m.clone()),
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "url": url,
        "host": target.host,
        "port": target.port,
        "crl": crl,
        "backends": backends,
    })
}

fn fault_label(f: CertFault) -> &'static str {
    match f {
        CertFault::Date => "date (0x0004)",
        CertFault::Cn => "name (0x0002)",
        CertFault::UnknownCa => "unknown CA (0x0008)",
        CertFault::Usage => "usage (0x0010)",
        CertFault::Revoked => "revoked",
        CertFault::RevocationFailed => "revocation unchecked",
        CertFault::Other => "other",
    }
}

/// The readable report: the chain once (from the backend that showed the
/// most of it), then each backend's faults and least flags.
pub(crate) fn to_text(target: &Target, results: &[Diagnosis]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "server {target} (TLS handshakes only, no HTTP request)");
    // The first backend (the default) among those that showed the most.
    let shown = results
        .iter()
        .rev()
        .max_by_key(|d| (d.chain.len(), d.whole_chain));
    match shown {
        Some(d) if !d.chain.is_empty() => {
            let how = d.chain_flags.map(|f| flags_hex(f.bits())).unwrap_or_default();
            let _ = writeln!(out, "\nchain presented (as {} saw it under {how}):", d.backend);
            for (i, c) in d.chain.iter().enumerate() {
                let _ = writeln!(out, "  [{i}] subject  {}", c.subject);
                let _ = writeln!(out, "      issuer   {}", c.issuer);
                let _ = writeln!(out, "      valid    {} to {}", c.not_before, c.not_after);
                if !c.names.is_empty() {
                    let _ = writeln!(out, "      names    {}", c.names.join(", "));
                }
                let _ = writeln!(out, "      pin      {}", c.pin);
            }
            if !d.whole_chain {
                let _ = writeln!(out, "  ({} shows only the leaf of the chain)", d.backend);
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "\nchain presented: unknown (no backend completed a handshake)"
            );
        }
    }
    for d in results {
        let _ = writeln!(out, "\n{}:", d.backend);
        let mut present = Vec::new();
        let mut unknown = Vec::new();
        for f in &d.findings {
            match f.presence {
                Presence::Present => present.push(format!("{} [{}]", fault_label(f.fault), f.evidence)),
                Presence::Unknown => unknown.push(fault_label(f.fault)),
                Presence::Absent => {}
            }
        }
        if present.is_empty() {
            let _ = writeln!(out, "  faults      none found");
        } else {
            let _ = writeln!(out, "  faults      {}", present.join("; "));
        }
        if !unknown.is_empty() {
            let _ = writeln!(
                out,
                "  cannot tell {} (no value this backend honours decides it)",
                unknown.join(", ")
            );
        }
        match (d.least_flags, &d.why_none) {
            (Some(f), _) => {
                let _ = writeln!(out, "  least flags {}", flags_hex(f.bits()));
            }
            (None, Some(why)) => {
                let _ = writeln!(out, "  least flags none: {why}");
            }
            (None, None) => {
                let _ = writeln!(out, "  least flags none");
            }
        }
        let refused = d.refused();
        if !refused.is_empty() {
            let list: Vec<String> = refused.iter().map(|f| flags_hex(f.bits())).collect();
            let _ = writeln!(
                out,
                "  refused     {} (E_NOTIMPL: not honoured exactly)",
                list.join(" ")
            );
        }
    }
    out
}
