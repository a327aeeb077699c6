//! Which way a connection goes (`docs/spec/http-options.md`, "Proxies"):
//! direct, or through a list of proxies tried in order, decided per
//! request URL (scheme and host) from the policy's
//! [`ProxySettings`].
//!
//! - `preconfig`: the environment, read as curl reads it ([`ProxyEnv`]):
//!   `https_proxy`, then `HTTPS_PROXY`, for https URLs; `http_proxy`
//!   (lower case only: curl ignores `HTTP_PROXY`) for http URLs; when that
//!   variable is not set, `all_proxy`, then `ALL_PROXY`; `no_proxy`, then
//!   `NO_PROXY`, for exceptions. The first variable that is set wins, even
//!   when empty; an empty value means direct. The process environment is
//!   read once, when the first transport is built: a daemon routes by the
//!   environment of the command that started it.
//! - `no_proxy`: direct.
//! - `override`: the job's proxies, in order, unless the host matches its
//!   bypass list.
//!
//! `no_proxy` and bypass entries, as curl matches them: a host name
//! matches an entry equal to it or to one of its parent domains (a leading
//! dot is ignored: `example.org` and `.example.org` both match
//! `a.example.org`), case-insensitively; an IP address matches an equal
//! address or a CIDR (`10.0.0.0/8`, `fd00::/8`) holding it, and never a
//! name; `*` matches everything (in `no_proxy`, curl's rule: only as the
//! whole value). A bypass list also takes `<local>`: every host name
//! without a dot (an IP address is not a name).
//!
//! hyper-util's `Matcher` is not used: it reads the upper-case
//! `HTTP_PROXY` (curl does not), its `*` does not match IP addresses
//! (curl's does), it knows no `<local>`, and it holds one proxy per scheme
//! where an override holds a list.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bits_core::{BitsError, ProxySettings, ProxyUrl, ProxyUsage};

/// The proxy variables of an environment, as curl reads them (see the
/// [module documentation](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    https: Option<EnvVar>,
    http: Option<EnvVar>,
    all: Option<EnvVar>,
    no_proxy: Option<EnvVar>,
}

/// One variable that is set: its name and value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EnvVar {
    name: &'static str,
    value: String,
}

impl ProxyEnv {
    /// No proxy variables at all: everything direct.
    pub fn empty() -> ProxyEnv {
        ProxyEnv::default()
    }

    /// The variables `lookup` gives (`None` for a variable that is not
    /// set), read as curl reads them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|name| {
                lookup(name).map(|value| EnvVar {
                    name,
                    value: value.trim().to_owned(),
                })
            })
        };
        ProxyEnv {
            https: first(&["https_proxy", "HTTPS_PROXY"]),
            // curl never reads HTTP_PROXY: in CGI programs it is set from
            // the request's `Proxy:` header.
            http: first(&["http_proxy"]),
            all: first(&["all_proxy", "ALL_PROXY"]),
            no_proxy: first(&["no_proxy", "NO_PROXY"]),
        }
    }

    /// The process's environment, read once, at the first call.
    pub fn process() -> Arc<ProxyEnv> {
        static PROCESS: OnceLock<Arc<ProxyEnv>> = OnceLock::new();
        Arc::clone(PROCESS.get_or_init(|| Arc::new(ProxyEnv::from_lookup(|name| std::env::var(name).ok()))))
    }

    /// The variable an URL of `scheme` is routed by, if any is set.
    fn var_for(&self, scheme: &str) -> Option<&EnvVar> {
        let own = match scheme {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        };
        own.or(self.all.as_ref())
    }

    /// The proxy for a URL of `scheme` to `host` (no brackets): `None`
    /// for direct.
    ///
    /// # Errors
    /// As [`ProxyEnv::check`], for the variable this URL needs.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Result<Option<ProxyUrl>, BitsError> {
        let Some(var) = self.var_for(scheme) else {
            return Ok(None);
        };
        if var.value.is_empty() {
            return Ok(None);
        }
        if let Some(no) = &self.no_proxy {
            if no_proxy_matches(&no.value, host) {
                return Ok(None);
            }
        }
        parse_var(var).map(Some)
    }

    /// `Ok` when every proxy variable that is set can be honoured.
    ///
    /// # Errors
    /// `E_NOTIMPL` for a proxy bits does not speak (`https://`,
    /// `socks4://`, `socks5://`, which resolves names locally) or one with
    /// user information (credentials are never taken from a URL: the job's
    /// proxy credentials answer a proxy);
    /// `E_INVALIDARG` for a malformed one. Either names the variable.
    pub fn check(&self) -> Result<(), BitsError> {
        for var in [&self.https, &self.http, &self.all].into_iter().flatten() {
            if !var.value.is_empty() {
                parse_var(var)?;
            }
        }
        Ok(())
    }
}

fn parse_var(var: &EnvVar) -> Result<ProxyUrl, BitsError> {
    let advice = "set the job's proxy usage to override or no_proxy, or fix the variable \
                  in the environment of the command that starts the daemon";
    if var.value.contains('@') {
        return Err(BitsError::NotImplemented {
            what: format!(
                "{}: credentials in a proxy URL are never used (set the job's with \
                 `bits set-credentials JOB proxy basic|digest USER`); {advice}",
                var.name
            ),
        });
    }
    ProxyUrl::parse(&var.value).map_err(|e| match e {
        BitsError::NotImplemented { what } => BitsError::NotImplemented {
            what: format!("{}: {what}; {advice}", var.name),
        },
        BitsError::InvalidArg { what } => BitsError::InvalidArg {
            what: format!("{}: {what}; {advice}", var.name),
        },
        other => other,
    })
}

/// Where a connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to the origin.
    Direct,
    /// Through the first of these proxies that accepts a TCP connection.
    Proxies(Vec<ProxyUrl>),
}

/// The route of a request to `scheme://host` (`host` without brackets)
/// under `settings`, `env` standing for the environment.
///
/// # Errors
/// Under `preconfig`, as [`ProxyEnv::proxy_for`].
pub fn route(settings: &ProxySettings, env: &ProxyEnv, scheme: &str, host: &str) -> Result<Route, BitsError> {
    match settings.usage() {
        ProxyUsage::NoProxy => Ok(Route::Direct),
        ProxyUsage::Preconfig => Ok(match env.proxy_for(scheme, host)? {
            Some(proxy) => Route::Proxies(vec![proxy]),
            None => Route::Direct,
        }),
        ProxyUsage::Override => {
            if bypassed(settings.bypass(), host) {
                Ok(Route::Direct)
            } else {
                Ok(Route::Proxies(settings.proxies().to_vec()))
            }
        }
    }
}

/// `Ok` when connections under `settings` can be routed as they say.
///
/// # Errors
/// Under `preconfig`, as [`ProxyEnv::check`].
pub fn check(settings: &ProxySettings, env: &ProxyEnv) -> Result<(), BitsError> {
    match settings.usage() {
        ProxyUsage::Preconfig => env.check(),
        ProxyUsage::NoProxy | ProxyUsage::Override => Ok(()),
    }
}

/// A host as `no_proxy` entries are matched against it.
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl<'a> Host<'a> {
    fn new(host: &'a str) -> Host<'a> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.strip_suffix('.').unwrap_or(host)),
        }
    }
}

/// curl's `no_proxy` (`Curl_check_noproxy`): `*` alone matches every
/// host; otherwise entries separated by commas or blanks.
fn no_proxy_matches(value: &str, host: &str) -> bool {
    if value.trim() == "*" {
        return true;
    }
    let host = Host::new(host);
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .any(|entry| entry_matches(entry, &host))
}

/// The override's bypass list: as `no_proxy`, plus `<local>` and `*`
/// anywhere in the list.
fn bypassed(list: &[String], host: &str) -> bool {
    let host = Host::new(host);
    list.iter().any(|entry| match entry.as_str() {
        "*" => true,
        e if e.eq_ignore_ascii_case("<local>") => matches!(host, Host::Name(n) if !n.contains('.')),
        e => entry_matches(e, &host),
    })
}

fn entry_matches(entry: &str, host: &Host<'_>) -> bool {
    match host {
        Host::Name(name) => {
            let entry = entry.strip_prefix('.').unwrap_or(entry);
            let entry = entry.strip_suffix('.').unwrap_or(entry);
            if entry.is_empty() {
                return false;
            }
            if entry.len() == name.len() {
                return entry.eq_ignore_ascii_case(name);
            }
            entry.len() < name.len()
                && name.as_bytes()[name.len() - entry.len() - 1] == b'.'
                && name[name.len() - entry.len()..].eq_ignore_ascii_case(entry)
        }
        Host::Ip(ip) => {
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            match entry.split_once('/') {
                None => entry.parse::<IpAddr>().is_ok_and(|e| e == *ip),
                Some((net, bits)) => {
                    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
                        return false;
                    };
                    in_cidr(*ip, net, bits)
                }
            }
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bits_core::Hresult;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProxyEnv::from_lookup(|name| map.get(name).cloned())
    }

    fn proxy(env: &ProxyEnv, scheme: &str, host: &str) -> Option<String> {
        env.proxy_for(scheme, host).unwrap().map(|p| p.to_string())
    }

    #[test]
    fn upper_case_http_proxy_is_ignored_as_curl_does() {
        let e = env(&[("HTTP_PROXY", "http://upper:1")]);
        assert_eq!(proxy(&e, "http", "example.org"), None);
        let e = env(&[("HTTP_PROXY", "http://upper:1"), ("http_proxy", "http://lower:2")]);
        assert_eq!(
            proxy(&e, "http", "example.org").as_deref(),
            Some("http://lower:2")
        );
        // HTTP_PROXY never stands in for all_proxy either.
        let e = env(&[("HTTP_PROXY", "http://upper:1"), ("ALL_PROXY", "socks5h://all:3")]);
        assert_eq!(
            proxy(&e, "http", "example.org").as_deref(),
            Some("socks5h://all:3")
        );
    }

    #[test]
    fn https_proxy_both_cases_lower_first_and_all_proxy_for_both() {
        let e = env(&[("HTTPS_PROXY", "http://upper:1")]);
        assert_eq!(
            proxy(&e, "https", "example.org").as_deref(),
            Some("http://upper:1")
        );
        assert_eq!(
            proxy(&e, "http", "example.org"),
            None,
            "https_proxy is for https URLs only"
        );
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ]);
        assert_eq!(
            proxy(&e, "https", "example.org").as_deref(),
            Some("http://lower:2")
        );
        let e = env(&[("all_proxy", "socks5h://all:3"), ("ALL_PROXY", "http://ALL:4")]);
        assert_eq!(proxy(&e, "https", "x").as_deref(), Some("socks5h://all:3"));
        assert_eq!(proxy(&e, "http", "x").as_deref(), Some("socks5h://all:3"));
        let e = env(&[("ALL_PROXY", "proxy.example:3128")]);
        assert_eq!(
            proxy(&e, "https", "x").as_deref(),
            Some("http://proxy.example:3128")
        );
        // The scheme's own variable wins over all_proxy; an empty one means
        // direct (curl: set, so all_proxy is not consulted).
        let e = env(&[("https_proxy", "http://own:1"), ("all_proxy", "http://all:2")]);
        assert_eq!(proxy(&e, "https", "x").as_deref(), Some("http://own:1"));
        let e = env(&[("https_proxy", ""), ("all_proxy", "http://all:2")]);
        assert_eq!(proxy(&e, "https", "x"), None);
        assert_eq!(proxy(&ProxyEnv::empty(), "https", "x"), None);
    }

    #[test]
    fn no_proxy_suffixes_ips_cidrs_and_star() {
        let with = |no: &str| env(&[("https_proxy", "http://p:1"), ("no_proxy", no)]);
        let direct = |no: &str, host: &str| proxy(&with(no), "https", host).is_none();
        assert!(direct("example.org", "example.org"));
        assert!(direct("example.org", "a.b.EXAMPLE.org"));
        assert!(direct(".example.org", "a.example.org"));
        assert!(direct(".example.org", "example.org"));
        assert!(direct("example.org", "example.org."));
        assert!(!direct("example.org", "badexample.org"));
        assert!(!direct("a.example.org", "example.org"));
        assert!(direct("x.net, 10.1.2.3 ,y.net", "10.1.2.3"));
        assert!(direct("x.net 10.0.0.0/8", "10.200.1.1"));
        assert!(!direct("10.0.0.0/8", "11.0.0.1"));
        assert!(direct("::1", "[::1]"));
        assert!(direct("fd00::/8", "fd12::5"));
        assert!(!direct("fd00::/8", "fe80::1"));
        // A name never matches an address entry, nor an address a name.
        assert!(!direct("127.0.0.1", "localhost"));
        assert!(!direct("localhost", "127.0.0.1"));
        assert!(direct("*", "anything.example"));
        assert!(direct(" * ", "192.0.2.1"));
        // curl: `*` counts only as the whole value.
        assert!(!direct("x.net,*", "anything.example"));
        assert!(!direct("", "example.org"));
        // NO_PROXY when no_proxy is unset; no_proxy first.
        let e = env(&[("https_proxy", "http://p:1"), ("NO_PROXY", "example.org")]);
        assert_eq!(proxy(&e, "https", "example.org"), None);
        let e = env(&[
            ("https_proxy", "http://p:1"),
            ("no_proxy", "other.org"),
            ("NO_PROXY", "example.org"),
        ]);
        assert!(proxy(&e, "https", "example.org").is_some());
    }

    #[test]
    fn unusable_variables_are_refused_naming_them() {
        for (value, code) in [
            ("https://p:1", Hresult::E_NOTIMPL),
            ("socks5://p:1", Hresult::E_NOTIMPL),
            ("http://user:pw@p:1", Hresult::E_NOTIMPL),
            ("http://p:99999", Hresult::E_INVALIDARG),
        ] {
            let e = env(&[("https_proxy", value)]);
            let err = e.check().unwrap_err();
            assert_eq!(err.hresult(), code, "{value}");
            assert!(err.to_string().contains("https_proxy"), "{err}");
            assert_eq!(e.proxy_for("https", "x").unwrap_err().hresult(), code);
            // An http URL does not use it.
            assert_eq!(e.proxy_for("http", "x").unwrap(), None);
        }
        assert!(env(&[("https_proxy", "")]).check().is_ok());
        assert!(env(&[("HTTP_PROXY", "https://ignored:1")]).check().is_ok());
    }

    #[test]
    fn routes_by_usage() {
        let e = env(&[("https_proxy", "http://env:1")]);
        let preconfig = ProxySettings::preconfig();
        assert_eq!(
            route(&preconfig, &e, "https", "example.org").unwrap(),
            Route::Proxies(vec![ProxyUrl::parse("http://env:1").unwrap()])
        );
        assert_eq!(
            route(&preconfig, &e, "http", "example.org").unwrap(),
            Route::Direct
        );
        assert_eq!(
            route(&ProxySettings::no_proxy(), &e, "https", "example.org").unwrap(),
            Route::Direct
        );
        let o = ProxySettings::override_with("http://a:1 socks5h://b:2", "<local>;.corp.example;10.0.0.0/8")
            .unwrap();
        let proxied = |host: &str| route(&o, &e, "https", host).unwrap() != Route::Direct;
        assert_eq!(
            route(&o, &ProxyEnv::empty(), "http", "example.org").unwrap(),
            Route::Proxies(o.proxies().to_vec())
        );
        assert!(!proxied("localhost"));
        assert!(!proxied("intranet"));
        assert!(proxied("example.org"));
        assert!(!proxied("build.corp.example"));
        assert!(!proxied("10.9.8.7"));
        assert!(proxied("127.0.0.1"), "<local> is for names, not addresses");
        assert!(proxied("[::1]"), "<local> is for names, not addresses");
        let star = ProxySettings::override_with("http://a:1", "x.org;*").unwrap();
        assert_eq!(route(&star, &e, "https", "192.0.2.1").unwrap(), Route::Direct);
    }
}
