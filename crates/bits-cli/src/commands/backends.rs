//! `backends`: the compiled-in TLS backends and the certificate-flag
//! values each honours.

use std::process::ExitCode;

use super::Ctx;
use crate::backend::{self, Backend};
use crate::error::Failure;

pub(super) fn backends(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for (i, b) in Backend::compiled().into_iter().enumerate() {
        let (flags, problem) = match b.transport(&ctx.dir) {
            Ok(t) => (
                bits_core::transport::supported_cert_flags(|p| t.check_policy(p)),
                None,
            ),
            Err(e) => (Vec::new(), Some(Failure::from_bits(&e).to_string())),
        };
        rows.push((
            b.name(),
            i == 0,
            flags,
            problem,
            b.client_cert_formats(),
            b.honours_pins(),
        ));
    }
    if ctx.global.json {
        let array: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, default, flags, problem, certs, pins)| {
                serde_json::json!({
                    "name": name,
                    "default": default,
                    "supported_cert_flags": flags,
                    "supported_cert_flags_hex": flags.iter().map(|f| format!("0x{f:04X}")).collect::<Vec<_>>(),
                    "client_certificates": {
                        "pem": certs.pem,
                        "non_pkcs8_keys": certs.non_pkcs8_keys,
                        "encrypted_keys": certs.encrypted_keys,
                        "pkcs12": certs.pkcs12,
                    },
                    "server_cert_pins": pins,
                    "error": problem,
                })
            })
            .collect();
        out!("{}", serde_json::Value::Array(array));
        return Ok(ExitCode::SUCCESS);
    }
    for (name, default, flags, problem, certs, pins) in &rows {
        let mark = if *default { " (default)" } else { "" };
        out!("{name}{mark}");
        if let Some(p) = problem {
            out!("  unavailable: {p}");
            continue;
        }
        let hex: Vec<String> = flags.iter().map(|f| format!("0x{f:04X}")).collect();
        if flags.len() == 32 {
            out!("  certificate flags honoured: all 32 values, 0x0000 to 0x001F");
        } else {
            out!(
                "  certificate flags honoured ({} of 32): {}; others are refused with 0x80004001 E_NOTIMPL",
                flags.len(),
                hex.join(" ")
            );
        }
        out!("  redirect bits 0x0000 0x0100 0x0200, with or without 0x0800: always");
        out!(
            "  client certificates: {}; other forms are refused with 0x80004001 E_NOTIMPL",
            certs.describe()
        );
        if *pins {
            out!("  server certificate pins and validators: honoured");
        } else {
            out!("  server certificate pins and validators: refused with 0x80004001 E_NOTIMPL (the backend sees only the leaf)");
        }
    }
    let missing: Vec<&str> = backend::KNOWN
        .iter()
        .copied()
        .filter(|k| rows.iter().all(|(n, ..)| n != k))
        .collect();
    if !missing.is_empty() {
        out!("not compiled in: {}", missing.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
