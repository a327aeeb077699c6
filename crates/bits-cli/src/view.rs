//! How jobs are printed: the JSON object of `docs/spec/cli.md` (stable
//! field names) and the human text of `info` and `list`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bits_core::http_options::is_credential_header;
use bits_core::{Job, JobState};
use serde_json::{json, Value};

use crate::daemon::NetworkView;

/// The job as `info --json`, `list --json` and `transfer --json` print it,
/// with `net`, its network use now ([`NetworkView::of`]).
pub fn job_json(job: &Job, net: &NetworkView) -> Value {
    let error = match (job.state(), &job.error) {
        (JobState::Error | JobState::TransientError, Some(e)) => json!({
            "code": e.code.to_string(),
            "context": e.context.as_str(),
            "message": e.message,
            "file_index": e.file_index,
        }),
        _ => Value::Null,
    };
    let files: Vec<Value> = job
        .files
        .iter()
        .map(|f| {
            json!({
                "remote_name": f.remote_name,
                "local_name": f.local_name.to_string_lossy(),
                "bytes_total": f.bytes_total,
                "bytes_transferred": f.bytes_transferred,
                "completed": f.completed,
                // What carried its last response (`http/1.1`, `h2`).
                "protocol": f.protocol,
            })
        })
        .collect();
    json!({
        "id": job.id.to_string(),
        "display_name": job.display_name,
        "type": job.job_type.as_str(),
        "state": job.state().as_str(),
        "backend": job.backend,
        "security_flags": job.security_flags.bits(),
        "priority": job.priority.as_str(),
                "min_retry_delay": job.min_retry_delay,
        "no_progress_timeout": job.no_progress_timeout,
        // Bytes per second; null: off.
        "max_rate": job.max_rate,
        // What it may use now: the lower of max_rate and the running
        // daemon's schedule (shared by its background jobs); 0: blocked;
        // null: unlimited. Where it comes from: "max_rate", "schedule".
        "rate_limit": net.rate_limit,
        "rate_limit_source": net.rate_limit_source,
        // How it yields to other traffic: "none", "paced", "window-clamp".
        "controller": net.controller,
        "yielding": net.yielding,
        "error": error,
        "files": files,
        "bytes_total": job.bytes_total(),
        "bytes_transferred": job.bytes_transferred(),
        "files_total": job.files.len(),
        "files_transferred": job.files_transferred(),
        "creation_time": rfc3339(job.creation_time),
        "modification_time": rfc3339(job.modification_time),
        "transfer_completion_time": job.transfer_completion_time.map(rfc3339),
        "custom_headers": match job.custom_headers() {
            Ok(Some(h)) => json!(h.lines()),
            // None, or write-only: never the values.
            Ok(None) | Err(_) => Value::Null,
        },
        "custom_headers_write_only": job.custom_headers_write_only,
        "client_certificate": job.client_certificate.as_ref().map(|c| json!({
            "path": c.file.path.to_string_lossy(),
            "key": c.file.key.as_ref().map(|k| k.to_string_lossy()),
            "subject": c.subject,
            "sha1": c.sha1.to_string(),
        })),
        "http_method": job.http_method().as_str(),
        "server_cert_pins": job.server_cert_pins.as_ref().map(ToString::to_string),
        "proxy": json!({
            "usage": job.proxy.usage().as_str(),
            "list": job.proxy.proxies().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "bypass": job.proxy.bypass(),
        }),
                // Never the password.
        "credentials": job.credentials().iter().map(|c| json!({
            "target": c.target.as_str(),
            "scheme": c.scheme.as_str(),
            "user": c.user,
        })).collect::<Vec<_>>(),
        "reply_file_name": job.reply_file_name().map(|p| p.to_string_lossy().into_owned()),
    })
}

/// The custom headers as `info` shows them to people: never a value once
/// they are write-only, and never the value of a header that carries
/// credentials (`docs/spec/http-options.md`, "Custom headers").
fn headers_text(job: &Job) -> Vec<String> {
    let Some(headers) = job.custom_headers_to_send() else {
        return Vec::new();
    };
    headers
        .iter()
        .map(|(name, value)| {
            if job.custom_headers_write_only {
                format!("{name}: <write-only>")
            } else if is_credential_header(name) {
                format!("{name}: <hidden>")
            } else {
                format!("{name}: {value}")
            }
        })
        .collect()
}

/// `info` without `--json`.
pub fn job_text(job: &Job, net: &NetworkView) -> String {
    let mut s = String::new();
    let total = job
        .bytes_total()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(s, "id:                  {}", job.id);
    let _ = writeln!(s, "display name:        {}", job.display_name);
    let _ = writeln!(s, "type:                {}", job.job_type.as_str());
    let _ = writeln!(s, "state:               {}", job.state().as_str());
    let _ = writeln!(s, "backend:             {}", job.backend);
    let _ = writeln!(s, "security flags:      {}", job.security_flags);
    let _ = writeln!(s, "priority:            {}", job.priority.as_str());
    let _ = writeln!(s, "min retry delay:     {} s", job.min_retry_delay);
    let _ = writeln!(s, "no-progress timeout: {} s", job.no_progress_timeout);
    let _ = writeln!(
        s,
        "max rate:            {}",
        job.max_rate.map_or("off".to_string(), |r| {
            format!("{}/s", bits_scheduler::Limit::Rate(r))
        })
    );
    let limit = match (net.rate_limit, net.rate_limit_source) {
        (None, _) => "off".to_string(),
        (Some(0), _) => "0 (blocked by the bandwidth schedule)".to_string(),
        (Some(r), Some("schedule")) => format!(
            "{}/s (bandwidth schedule, shared by its background jobs)",
            bits_scheduler::Limit::Rate(r)
        ),
        (Some(r), _) => format!("{}/s (max rate)", bits_scheduler::Limit::Rate(r)),
    };
    let _ = writeln!(s, "rate limit:          {limit}");
    let _ = writeln!(
        s,
        "controller:          {}{}",
        net.controller,
        if net.yielding { ", yielding" } else { "" }
    );
    let _ = writeln!(s, "http method:         {}", job.http_method());
    let headers = headers_text(job);
    if headers.is_empty() {
        let _ = writeln!(s, "custom headers:      none");
    }
    for (i, line) in headers.iter().enumerate() {
        let label = if i == 0 { "custom headers:" } else { "" };
        let _ = writeln!(s, "{label:<21}{line}");
    }
    match &job.client_certificate {
        Some(c) => {
            let _ = writeln!(s, "client certificate:  {}", c.file.path.display());
            if let Some(key) = &c.file.key {
                let _ = writeln!(s, "  key:               {}", key.display());
            }
            let _ = writeln!(s, "  subject:           {}", c.subject);
            let _ = writeln!(s, "  sha1:              {}", c.sha1);
        }
        None => {
            let _ = writeln!(s, "client certificate:  none");
        }
    }
    let _ = writeln!(
        s,
        "server cert pins:    {}",
        job.server_cert_pins
            .as_ref()
            .map_or_else(|| "none".to_string(), ToString::to_string)
    );
    // `preconfig`, `no_proxy`, or `override http://a:1;socks5h://b:2 bypass x.org;<local>`.
    let _ = writeln!(s, "proxy:               {}", job.proxy);
    // One line per target and scheme, never the password.
    if job.credentials().is_empty() {
        let _ = writeln!(s, "credentials:         none");
    }
    for (i, c) in job.credentials().iter().enumerate() {
        let label = if i == 0 { "credentials:" } else { "" };
        let _ = writeln!(s, "{label:<21}{} {} user {}", c.target, c.scheme, c.user);
    }
    let _ = writeln!(
        s,
        "progress:            {} / {} bytes, {} / {} files",
        job.bytes_transferred(),
        total,
        job.files_transferred(),
        job.files.len()
    );
    let _ = writeln!(s, "created:             {}", rfc3339(job.creation_time));
    let _ = writeln!(s, "modified:            {}", rfc3339(job.modification_time));
    if let Some(t) = job.transfer_completion_time {
        let _ = writeln!(s, "transferred:         {}", rfc3339(t));
    }
    if let (JobState::Error | JobState::TransientError, Some(e)) = (job.state(), &job.error) {
        let file = e.file_index.map(|i| format!(" (file {i})")).unwrap_or_default();
        let name = crate::error::hresult_name(e.code)
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "error:               {}{name} {}{file}: {}",
            e.code,
            e.context.as_str(),
            e.message
        );
    }
    let _ = writeln!(s, "files:");
    for (i, f) in job.files.iter().enumerate() {
        let total = f.bytes_total.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
        let done = if f.completed { ", done" } else { "" };
        let over = f
            .protocol
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  [{i}] {} -> {} ({} / {total} bytes{done}{over})",
            f.remote_name,
            f.local_name.display(),
            f.bytes_transferred
        );
    }
    s
}

/// `list` without `--json`: a header and one line per job.
pub fn list_text(jobs: &[Job]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36}  {:<15}  {:<10}  {:>21}  {:>7}  NAME",
        "ID", "STATE", "PRIORITY", "BYTES", "FILES"
    );
    for j in jobs {
        let total = j
            .bytes_total()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(
            s,
            "{:<36}  {:<15}  {:<10}  {:>21}  {:>7}  {}",
            j.id,
            j.state().as_str(),
            j.priority.as_str(),
            format!("{}/{}", j.bytes_transferred(), total),
            format!("{}/{}", j.files_transferred(), j.files.len()),
            j.display_name
        );
    }
    s
}

/// A UTC time as `YYYY-MM-DDTHH:MM:SSZ` (the epoch for a time before it).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    bits_http::diagnose::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bits_core::{AuthScheme, AuthTarget, BitsError, Credentials, JobType};
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn json_fields_per_cli_md() {
        let mut j = Job::new("nightly", JobType::Download, "openssl");
        j.add_file("https://mirror/x.bin", Path::new("/data/x.bin"))
            .unwrap();
        let v = job_json(&j, &NetworkView::of(&j, None));
        for k in [
            "id",
            "display_name",
            "type",
            "state",
            "backend",
            "security_flags",
            "priority",
            "min_retry_delay",
            "no_progress_timeout",
            "error",
            "files",
            "bytes_total",
            "bytes_transferred",
            "files_total",
            "files_transferred",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["type"], "DOWNLOAD");
        assert_eq!(v["state"], "SUSPENDED");
        assert_eq!(v["priority"], "NORMAL");
        assert_eq!(v["security_flags"], 0);
        assert_eq!(v["bytes_total"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["files"][0]["local_name"], "/data/x.bin");
        assert_eq!(v["files"][0]["bytes_total"], Value::Null);
        assert_eq!(v["files"][0]["protocol"], Value::Null);
        let mut over_h2 = j.clone();
        over_h2.files[0].protocol = Some("h2".into());
        assert_eq!(
            job_json(&over_h2, &NetworkView::of(&over_h2, None))["files"][0]["protocol"],
            "h2"
        );
        assert!(
            job_text(&over_h2, &NetworkView::of(&over_h2, None)).contains("bytes, h2)"),
            "{}",
            job_text(&over_h2, &NetworkView::of(&over_h2, None))
        );
        assert!(!job_text(&j, &NetworkView::of(&j, None)).contains("h2"));

        j.resume().unwrap();
        let not_found = BitsError::HttpStatus {
            status: 404,
            retry_after: None,
        };
        j.fail(&not_found, Some(0), std::time::SystemTime::now());
        assert_eq!(j.state(), JobState::Error);
        let v = job_json(&j, &NetworkView::of(&j, None));
        assert_eq!(v["error"]["code"], "0x80190194");
        assert_eq!(v["error"]["context"], "REMOTE_FILE");
        assert_eq!(v["error"]["file_index"], 0);
    }

    #[test]
    fn http_options_in_json_and_text() {
        let mut j = Job::new("h", JobType::Download, "openssl");
        let v = job_json(&j, &NetworkView::of(&j, None));
        assert_eq!(v["custom_headers"], Value::Null);
        assert_eq!(v["custom_headers_write_only"], false);
        assert_eq!(v["client_certificate"], Value::Null);
        assert_eq!(v["http_method"], "GET");
        assert_eq!(v["server_cert_pins"], Value::Null);
        assert_eq!(
            v["proxy"],
            json!({"usage": "preconfig", "list": [], "bypass": []})
        );
        let text = job_text(&j, &NetworkView::of(&j, None));
        assert!(text.contains("proxy:               preconfig\n"), "{text}");
        assert!(text.contains("http method:         GET\n"), "{text}");
        assert!(text.contains("custom headers:      none\n"), "{text}");

        j.set_custom_headers(&["X-Trace: t1", "Authorization: Bearer s3cret", "Cookie: c=1"])
            .unwrap();
        j.set_http_method("POST").unwrap();
        let pin = format!("sha256//{}", "A".repeat(43) + "=");
        let pins = bits_core::PinSet::parse(&pin).unwrap();
        j.set_server_cert_pins(pins, |_| Ok(())).unwrap();
        let proxy = bits_core::ProxySettings::parse(
            "override",
            Some("127.0.0.1:3128;socks5h://p:1"),
            Some("<local>"),
        )
        .unwrap();
        j.set_proxy_settings(proxy, |_| Ok(())).unwrap();
        let v = job_json(&j, &NetworkView::of(&j, None));
        assert_eq!(
            v["custom_headers"],
            json!(["X-Trace: t1", "Authorization: Bearer s3cret", "Cookie: c=1"])
        );
        assert_eq!(v["http_method"], "POST");
        assert_eq!(v["server_cert_pins"], pin.as_str());
        assert_eq!(
            v["proxy"],
            json!({
                "usage": "override",
                "list": ["http://127.0.0.1:3128", "socks5h://p:1"],
                "bypass": ["<local>"],
            })
        );
        let text = job_text(&j, &NetworkView::of(&j, None));
        assert!(text.contains("custom headers:      X-Trace: t1\n"), "{text}");
        assert!(
            text.contains("                     Authorization: <hidden>\n"),
            "{text}"
        );
        assert!(text.contains("Cookie: <hidden>"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("c=1"), "{text}");
        assert!(text.contains("http method:         POST"), "{text}");
        assert!(
            text.contains(
                "proxy:               override http://127.0.0.1:3128;socks5h://p:1 bypass <local>\n"
            ),
            "{text}"
        );

        assert_eq!(v["credentials"], json!([]));
        assert!(text.contains("credentials:         none\n"), "{text}");
        for (target, scheme, user) in [
            (AuthTarget::Server, AuthScheme::Basic, "alice"),
            (AuthTarget::Proxy, AuthScheme::Digest, "bob"),
        ] {
            j.set_credentials(Credentials::new(target, scheme, user, "pw-7f3a9c-SECRET").unwrap())
                .unwrap();
        }
        let v = job_json(&j, &NetworkView::of(&j, None));
        assert_eq!(
            v["credentials"],
            json!([
                {"target": "server", "scheme": "basic", "user": "alice"},
                {"target": "proxy", "scheme": "digest", "user": "bob"},
            ])
        );
        let text = job_text(&j, &NetworkView::of(&j, None));
        assert!(
            text.contains(
                "credentials:         server basic user alice\n                     proxy digest user bob\n"
            ),
            "{text}"
        );
        assert!(!v.to_string().contains("pw-7f3a9c") && !text.contains("pw-7f3a9c"));

        j.make_custom_headers_write_only().unwrap();
        let v = job_json(&j, &NetworkView::of(&j, None));
        assert_eq!(v["custom_headers"], Value::Null);
        assert_eq!(v["custom_headers_write_only"], true);
        let text = job_text(&j, &NetworkView::of(&j, None));
        assert!(text.contains("X-Trace: <write-only>"), "{text}");
        assert!(!text.contains("t1") && !text.contains("s3cret"), "{text}");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_668_674);
        assert_eq!(rfc3339(t), "2026-11-26T04:51:14Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
