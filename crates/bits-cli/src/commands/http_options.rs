//! The rest of BITS's `IBackgroundCopyJobHttpOptions` family
//! (`docs/spec/http-options.md`): custom headers, the client certificate,
//! the HTTP method, the server certificate pins and the proxy settings,
//! set and read.
//!
//! Setters go the way of every change to a stored job ([`ipc::apply`]:
//! through the daemon when one carries the store, which stops a running
//! transfer first, so the change applies from the job's next request).
//! What needs the command's own context is done here before: a client
//! certificate is read (relative paths from the current directory, the
//! password from a file or the environment) and checked by the job's
//! backend; pins and proxy settings are parsed.

use std::path::Path;
use std::process::ExitCode;

use bits_core::{
    AuthScheme, AuthTarget, ClientCertificate, ClientCertificateFile, Credentials, Hresult, Job, Operation,
    Password, PinSet, ProxySettings, ProxyUsage,
};

use super::Ctx;
use crate::backend::Backend;
use crate::cli::{CertSecrets, PasswordSource};
use crate::error::Failure;
use crate::ipc;
use crate::ops::{HeaderLines, JobOp};
use crate::store;

pub(super) fn set_custom_headers(ctx: &Ctx, job: &str, headers: Vec<String>) -> anyhow::Result<ExitCode> {
    super::edit::simple_op(
        ctx,
        job,
        JobOp::SetCustomHeaders {
            headers: HeaderLines(headers),
        },
    )
}

pub(super) fn get_custom_headers(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    let headers = job.custom_headers().map_err(|e| {
        Failure::from_bits(&e).with_hint(
            "they are still sent, and `bits set-custom-headers JOB ...` replaces them, but they can never be read again",
        )
    })?;
    if let Some(headers) = headers {
        for line in headers.lines() {
            out!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn set_client_certificate(
    ctx: &Ctx,
    job: &str,
    file: &Path,
    secrets: &CertSecrets,
) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    // The state first, so a final job says "invalid state" whatever its file.
    bits_core::state::check_operation(job.state(), job.job_type, Operation::SetProperty)
        .map_err(Failure::from)?;
    let backend = Backend::from_name(&job.backend)?;
    let certificate = load_certificate(backend, file, secrets)?;
    ipc::apply(
        &store,
        job.id,
        JobOp::SetClientCertificate {
            certificate: Some(certificate),
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the password of a client certificate the way `secrets` says
/// (never from argv), makes the paths absolute, and has `backend` read
/// and check the files.
pub(super) fn load_certificate(
    backend: Backend,
    file: &Path,
    secrets: &CertSecrets,
) -> Result<ClientCertificate, Failure> {
    let file = ClientCertificateFile {
        path: store::absolute(file)?,
        key: secrets.key.as_deref().map(store::absolute).transpose()?,
        password: password(secrets)?,
    };
    backend.load_client_certificate(&file).map_err(|e| {
        let f = Failure::from_bits(&e);
        if e.hresult() == Hresult::E_NOTIMPL {
            f.with_hint(format!(
                "nothing was changed; the {} backend cannot offer client certificates (yet)",
                backend.name()
            ))
        } else {
            f
        }
    })
}

fn password(secrets: &CertSecrets) -> Result<Option<Password>, Failure> {
    read_password(
        secrets.password_file.as_deref(),
        secrets.password_env.as_deref(),
        false,
    )
}

/// A password from the source a command names, never from argv: the first
/// line of a file, without its line ending (as `--password-file` of curl
/// and ssh-keygen's passphrase files), an environment variable's value, or
/// the first line of standard input. `Ok(None)` when none is named. An
/// error names the source, never a password.
pub(super) fn read_password(
    file: Option<&Path>,
    env: Option<&str>,
    stdin: bool,
) -> Result<Option<Password>, Failure> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                Hresult::FILE_NOT_FOUND
            } else {
                Hresult::E_ACCESSDENIED
            };
            Failure::bad_input(
                code,
                format!("cannot read the password file {}: {e}", path.display()),
                "nothing was changed; check the path",
            )
        })?;
        let first = text.lines().next().unwrap_or("");
        return Ok(Some(Password::new(first)));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(value) => Ok(Some(Password::new(value))),
            Err(_) => Err(Failure::bad_input(
                Hresult::E_INVALIDARG,
                format!("the environment variable {var} named by --password-env is not set (or not UTF-8)"),
                "nothing was changed; export it first",
            )),
        };
    }
    if stdin {
        use std::io::BufRead as _;
        let mut line = String::new();
        let n = std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            Failure::bad_input(
                Hresult::E_INVALIDARG,
                format!(
                    "cannot read the password from standard input (--password-stdin): {}",
                    e.kind()
                ),
                "nothing was changed; pipe the password in as one UTF-8 line",
            )
        })?;
        if n == 0 {
            return Err(Failure::bad_input(
                Hresult::E_INVALIDARG,
                "--password-stdin found standard input empty",
                "nothing was changed; pipe the password in as one line",
            ));
        }
        let first = line.lines().next().unwrap_or("");
        return Ok(Some(Password::new(first)));
    }
    Ok(None)
}

/// `set-credentials`: the target and scheme first (an unknown one is
/// `E_INVALIDARG`, ntlm/negotiate/passport `E_NOTIMPL`, before the password
/// is read), then the password from its source, then the change as any
/// other setter's.
pub(super) fn set_credentials(
    ctx: &Ctx,
    job: &str,
    target: &str,
    scheme: &str,
    user: &str,
    source: &PasswordSource,
) -> anyhow::Result<ExitCode> {
    let (target, scheme) = parse_credentials_key(target, scheme)?;
    let password = read_password(
        source.password_file.as_deref(),
        source.password_env.as_deref(),
        source.password_stdin,
    )?
    .ok_or_else(|| {
        Failure::bad_input(
            Hresult::E_INVALIDARG,
            "set-credentials needs the password",
            "nothing was changed; give --password-file F, --password-env VAR or --password-stdin",
        )
    })?;
    let credentials = Credentials::new(target, scheme, user, password.expose())
        .map_err(|e| Failure::from_bits(&e).with_hint("nothing was changed"))?;
    super::edit::simple_op(ctx, job, JobOp::SetCredentials { credentials })
}

pub(super) fn remove_credentials(
    ctx: &Ctx,
    job: &str,
    target: &str,
    scheme: &str,
) -> anyhow::Result<ExitCode> {
    let (target, scheme) = parse_credentials_key(target, scheme)?;
    super::edit::simple_op(ctx, job, JobOp::RemoveCredentials { target, scheme })
}

/// `server|proxy` and `basic|digest` from the command line.
fn parse_credentials_key(target: &str, scheme: &str) -> Result<(AuthTarget, AuthScheme), Failure> {
    let target = AuthTarget::parse(target)
        .map_err(|e| Failure::from_bits(&e).with_hint("nothing was changed; give server or proxy"))?;
    let scheme = AuthScheme::parse(scheme)
        .and_then(|s| s.check_supported().map(|()| s))
        .map_err(|e| {
            Failure::from_bits(&e).with_hint("nothing was changed; bits answers basic and digest challenges")
        })?;
    Ok((target, scheme))
}

pub(super) fn get_client_certificate(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    if let Some(c) = &job.client_certificate {
        out!("{}", c.file.path.display());
        out!("{}", c.subject);
        out!("{}", c.sha1);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn set_http_method(ctx: &Ctx, job: &str, method: &str) -> anyhow::Result<ExitCode> {
    super::edit::simple_op(
        ctx,
        job,
        JobOp::SetHttpMethod {
            method: method.to_string(),
        },
    )
}

pub(super) fn get_http_method(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    out!("{}", job.http_method());
    Ok(ExitCode::SUCCESS)
}

/// Pins from the command line: `Ok(None)` for none (or an empty text).
pub(super) fn parse_pins(text: Option<&str>) -> Result<Option<PinSet>, Failure> {
    PinSet::parse(text.unwrap_or("")).map_err(|e| {
        Failure::from_bits(&e).with_hint(
            "nothing was changed; give sha256// and the base64 of the SHA-256 of the server's DER SubjectPublicKeyInfo (`bits diagnose URL` prints it), several separated by ;",
        )
    })
}

pub(super) fn set_server_cert_pins(ctx: &Ctx, job: &str, pins: Option<&str>) -> anyhow::Result<ExitCode> {
    let pins = parse_pins(pins)?;
    super::edit::simple_op(ctx, job, JobOp::SetServerCertPins { pins })
}

pub(super) fn get_server_cert_pins(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    if let Some(pins) = &job.server_cert_pins {
        out!("{pins}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Proxy settings from the command line (`docs/spec/http-options.md`,
/// "Proxies"): bad input is `E_INVALIDARG`, a scheme bits does not speak
/// `E_NOTIMPL`, both exit 2 with nothing changed.
pub(super) fn parse_proxy(
    usage: &str,
    proxies: Option<&str>,
    bypass: Option<&str>,
) -> Result<ProxySettings, Failure> {
    ProxySettings::parse(usage, proxies, bypass).map_err(|e| {
        let hint = if e.hresult() == Hresult::E_NOTIMPL {
            "nothing was changed; bits speaks http://HOST:PORT and socks5h://HOST:PORT proxies"
        } else {
            "nothing was changed; give preconfig, no_proxy, or override PROXIES [BYPASS] \
             (`bits set-proxy-settings --help` shows the syntax)"
        };
        Failure::from_bits(&e).with_hint(hint)
    })
}

/// A proxy setting the job's backend refused (`E_NOTIMPL`) says so.
fn proxy_refused(f: Failure, backend: Backend) -> Failure {
    if f.code == Hresult::E_NOTIMPL {
        f.with_hint(format!(
            "nothing was changed; the {} backend cannot route connections that way (yet)",
            backend.name()
        ))
    } else {
        f
    }
}

pub(super) fn set_proxy_settings(
    ctx: &Ctx,
    job: &str,
    usage: &str,
    proxies: Option<&str>,
    bypass: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let proxy = parse_proxy(usage, proxies, bypass)?;
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    let backend = Backend::from_name(&job.backend)?;
    ipc::apply(&store, job.id, JobOp::SetProxySettings { proxy }).map_err(|f| proxy_refused(f, backend))?;
    Ok(ExitCode::SUCCESS)
}

/// The lines of `get-proxy-settings`: the usage; for override, the
/// proxies and the bypass list, each `;`-separated (the bypass line empty
/// when there is none), as `set-proxy-settings` takes them back.
pub(super) fn proxy_lines(proxy: &ProxySettings) -> Vec<String> {
    let mut lines = vec![proxy.usage().as_str().to_string()];
    if proxy.usage() == ProxyUsage::Override {
        let list: Vec<String> = proxy.proxies().iter().map(ToString::to_string).collect();
        lines.push(list.join(";"));
        lines.push(proxy.bypass().join(";"));
    }
    lines
}

pub(super) fn get_proxy_settings(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let job = ctx.open()?.resolve(job)?;
    for line in proxy_lines(&job.proxy) {
        out!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `transfer --proxy URL [--noproxy LIST]`: `override URL LIST`, or
/// `no_proxy` for `--proxy none` (or an empty URL, as curl's `--proxy ""`).
pub(super) fn transfer_proxy(proxy: &str, noproxy: Option<&str>) -> Result<ProxySettings, Failure> {
    let direct = proxy.trim().is_empty() || proxy.trim().eq_ignore_ascii_case("none");
    if direct && noproxy.is_some() {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            "--noproxy is the bypass list of a proxy, and --proxy none names none",
            "nothing was changed; drop --noproxy, or give --proxy URL",
        ));
    }
    if direct {
        return Ok(ProxySettings::no_proxy());
    }
    parse_proxy("override", Some(proxy), noproxy)
}

/// What `transfer` sets on its new job beyond flags and timeouts, in the
/// order and with the checks of the setters above.
pub(super) fn configure_new_job(
    job: &mut Job,
    backend: Backend,
    headers: &[String],
    certificate: Option<&Path>,
    secrets: &CertSecrets,
    pins: Option<&str>,
    proxy: Option<ProxySettings>,
) -> Result<(), Failure> {
    if !headers.is_empty() {
        job.set_custom_headers(headers).map_err(Failure::from)?;
    }
    match certificate {
        Some(file) => {
            let certificate = load_certificate(backend, file, secrets)?;
            job.set_client_certificate(Some(certificate), |p| backend.check_policy(p))
                .map_err(Failure::from)?;
        }
        None if secrets.key.is_some()
            || secrets.password_file.is_some()
            || secrets.password_env.is_some() =>
        {
            return Err(Failure::bad_input(
                Hresult::E_INVALIDARG,
                "--key, --password-file and --password-env go with --client-certificate",
                "nothing was changed; add --client-certificate FILE",
            ));
        }
        None => {}
    }
    if pins.is_some() {
        let pins = parse_pins(pins)?;
        job.set_server_cert_pins(pins, |p| backend.check_policy(p))
            .map_err(Failure::from)?;
    }
    if let Some(proxy) = proxy {
        job.set_proxy_settings(proxy, |p| backend.check_policy(p))
            .map_err(|e| proxy_refused(Failure::from_bits(&e), backend))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_lines_are_what_set_takes_back() {
        let o = parse_proxy(
            "override",
            Some("127.0.0.1:3128 socks5h://p:1"),
            Some("<local>;.x.org"),
        )
        .unwrap();
        let lines = proxy_lines(&o);
        assert_eq!(
            lines,
            [
                "override",
                "http://127.0.0.1:3128;socks5h://p:1",
                "<local>;.x.org"
            ]
        );
        assert_eq!(
            parse_proxy(&lines[0], Some(&lines[1]), Some(&lines[2])).unwrap(),
            o
        );
        assert_eq!(proxy_lines(&ProxySettings::no_proxy()), ["no_proxy"]);
        assert_eq!(proxy_lines(&ProxySettings::preconfig()), ["preconfig"]);
    }

    #[test]
    fn transfer_proxy_is_override_or_none() {
        let o = transfer_proxy("http://127.0.0.1:3128", Some("<local>")).unwrap();
        assert_eq!(o.usage(), ProxyUsage::Override);
        assert_eq!(o.bypass(), ["<local>"]);
        for direct in ["none", "NONE", ""] {
            assert_eq!(transfer_proxy(direct, None).unwrap(), ProxySettings::no_proxy());
        }
        let f = transfer_proxy("none", Some("<local>")).unwrap_err();
        assert_eq!((f.code, f.exit), (Hresult::E_INVALIDARG, 2));
        let f = transfer_proxy("socks4://127.0.0.1:1", None).unwrap_err();
        assert_eq!((f.code, f.exit), (Hresult::E_NOTIMPL, 2));
        assert!(f.hint.contains("socks5h://"), "{}", f.hint);
    }
}
