//! A job's proxy settings (BITS's `SetProxySettings`;
//! `docs/spec/http-options.md`, "Proxies"): whether its connections use
//! the daemon's environment, no proxy, or a list of its own with a bypass
//! list. Checked when set; a transport routes each connection by them
//! through [`crate::ConnectionPolicy::proxy`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::BitsError;

/// The port of a proxy URL that names none (curl's default).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// How a proxy is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyScheme {
    /// An HTTP proxy: absolute-form requests for http URLs, a `CONNECT`
    /// tunnel for https.
    Http,
    /// SOCKS5, the proxy resolving host names (`socks5h://`).
    Socks5h,
}

/// One proxy: `http://host:port` or `socks5h://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProxyUrl {
    /// How it is spoken to.
    pub scheme: ProxyScheme,
    /// Its host name or IP address (no brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl ProxyUrl {
    /// Parses `http://host:port`, `socks5h://host:port` or a bare
    /// `host:port` (http). A missing port is [`DEFAULT_PROXY_PORT`].
    ///
    /// # Errors
    /// `E_NOTIMPL` for another scheme (`https://`, `socks4://`, and
    /// `socks5://`, which resolves names locally); `E_INVALIDARG` for a
    /// malformed one, or one with a path or user information.
    pub fn parse(text: &str) -> Result<ProxyUrl, BitsError> {
        // Never repeat a password typed into the URL.
        let shown = crate::credentials::without_user_info(text);
        let bad = |why: &str| BitsError::InvalidArg {
            what: format!("proxy {shown:?}: {why}"),
        };
        let (scheme, rest) = match text.split_once("://") {
            None => (ProxyScheme::Http, text),
            Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
                "http" => (ProxyScheme::Http, rest),
                "socks5h" => (ProxyScheme::Socks5h, rest),
                other => {
                    return Err(BitsError::NotImplemented {
                        what: format!(
                            "proxy {shown:?}: scheme {other}:// (bits speaks http:// and socks5h:// proxies)"
                        ),
                    })
                }
            },
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(bad("no host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("a proxy is host:port only (no path, no user information)"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an unclosed [IPv6 address]"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the [IPv6 address]")),
            };
            (host.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PROXY_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not 1 to 65535"))?,
        };
        Ok(ProxyUrl { scheme, host, port })
    }
}

/// `http://host:port`, `socks5h://[::1]:port`.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5h => "socks5h",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `BG_JOB_PROXY_USAGE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyUsage {
    /// The daemon's environment, read as curl reads it (`https_proxy`,
    /// lower-case `http_proxy`, `all_proxy`, `no_proxy`).
    #[default]
    Preconfig,
    /// Always direct.
    NoProxy,
    /// The job's own proxy list, tried in order, and bypass list.
    Override,
}

impl ProxyUsage {
    /// `preconfig`, `no_proxy`, `override`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyUsage::Preconfig => "preconfig",
            ProxyUsage::NoProxy => "no_proxy",
            ProxyUsage::Override => "override",
        }
    }
}

/// A job's proxy settings. The default is [`ProxyUsage::Preconfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProxySettings {
    usage: ProxyUsage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    proxies: Vec<ProxyUrl>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bypass: Vec<String>,
}

impl ProxySettings {
    /// The daemon's environment (the default).
    pub const fn preconfig() -> ProxySettings {
        ProxySettings {
            usage: ProxyUsage::Preconfig,
            proxies: Vec::new(),
            bypass: Vec::new(),
        }
    }

    /// Always direct.
    pub fn no_proxy() -> ProxySettings {
        ProxySettings {
            usage: ProxyUsage::NoProxy,
            ..ProxySettings::default()
        }
    }

    /// The job's own list: `proxies` (space- or `;`-separated proxy URLs,
    /// at least one, tried in order) and `bypass` (the same separators;
    /// host names, domain suffixes, `*`, IP addresses, CIDRs, and `<local>`
    /// for every host name without a dot).
    ///
    /// # Errors
    /// As [`ProxyUrl::parse`]; `E_INVALIDARG` for an empty proxy list or a
    /// bypass entry that is not a host, suffix, address or CIDR.
    pub fn override_with(proxies: &str, bypass: &str) -> Result<ProxySettings, BitsError> {
        let proxies = split_list(proxies)
            .map(ProxyUrl::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if proxies.is_empty() {
            return Err(BitsError::InvalidArg {
                what: "override needs at least one proxy".into(),
            });
        }
        let bypass = split_list(bypass)
            .map(|b| check_bypass(b).map(|()| b.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProxySettings {
            usage: ProxyUsage::Override,
            proxies,
            bypass,
        })
    }

    /// Parses the command line's form: `preconfig`, `no_proxy`, or
    /// `override` with its lists.
    ///
    /// # Errors
    /// `E_INVALIDARG` for another usage, or lists given with `preconfig`
    /// or `no_proxy`; as [`ProxySettings::override_with`].
    pub fn parse(
        usage: &str,
        proxies: Option<&str>,
        bypass: Option<&str>,
    ) -> Result<ProxySettings, BitsError> {
        let lists = proxies.is_some() || bypass.is_some();
        match usage.to_ascii_lowercase().as_str() {
            "preconfig" | "no_proxy" if lists => Err(BitsError::InvalidArg {
                what: format!("proxy usage {usage} takes no proxy or bypass list"),
            }),
            "preconfig" => Ok(ProxySettings::preconfig()),
            "no_proxy" => Ok(ProxySettings::no_proxy()),
            "override" => ProxySettings::override_with(proxies.unwrap_or(""), bypass.unwrap_or("")),
            _ => Err(BitsError::InvalidArg {
                what: format!("proxy usage {usage:?} is not one of preconfig, no_proxy, override"),
            }),
        }
    }

    /// The usage.
    pub fn usage(&self) -> ProxyUsage {
        self.usage
    }

    /// The proxies (override), in the order they are tried.
    pub fn proxies(&self) -> &[ProxyUrl] {
        &self.proxies
    }

    /// The bypass list (override), as given.
    pub fn bypass(&self) -> &[String] {
        &self.bypass
    }
}

/// `preconfig`, `no_proxy`, or `override http://a:1;socks5h://b:2 bypass x.org;<local>`.
impl fmt::Display for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.usage.as_str())?;
        if self.usage == ProxyUsage::Override {
            let list: Vec<String> = self.proxies.iter().map(ToString::to_string).collect();
            write!(f, " {}", list.join(";"))?;
            if !self.bypass.is_empty() {
                write!(f, " bypass {}", self.bypass.join(";"))?;
            }
        }
        Ok(())
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn check_bypass(entry: &str) -> Result<(), BitsError> {
    let ok = entry == "*"
        || entry.eq_ignore_ascii_case("<local>")
        || entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/[]*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BitsError::InvalidArg {
            what: format!("bypass entry {entry:?} is not a host, domain suffix, address, CIDR or <local>"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Hresult;

    #[test]
    fn proxy_urls() {
        let p = ProxyUrl::parse("http://proxy.example:3128").unwrap();
        assert_eq!(
            (p.scheme, p.host.as_str(), p.port),
            (ProxyScheme::Http, "proxy.example", 3128)
        );
        assert_eq!(
            ProxyUrl::parse("127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            ProxyUrl::parse("socks5h://[::1]:1080/").unwrap().to_string(),
            "socks5h://[::1]:1080"
        );
        assert_eq!(ProxyUrl::parse("http://p").unwrap().port, DEFAULT_PROXY_PORT);
        for refused in ["https://p:1", "socks5://p:1", "socks4://p:1"] {
            assert_eq!(
                ProxyUrl::parse(refused).unwrap_err().hresult(),
                Hresult::E_NOTIMPL,
                "{refused}"
            );
        }
        for bad in [
            "",
            "http://",
            "http://u:pw@p:1",
            "http://p:1/x",
            "p:0",
            "p:99999",
            "[::1",
        ] {
            assert_eq!(
                ProxyUrl::parse(bad).unwrap_err().hresult(),
                Hresult::E_INVALIDARG,
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_parse_and_show() {
        assert_eq!(
            ProxySettings::parse("preconfig", None, None).unwrap(),
            ProxySettings::default()
        );
        assert_eq!(
            ProxySettings::parse("NO_PROXY", None, None).unwrap().usage(),
            ProxyUsage::NoProxy
        );
        let o = ProxySettings::parse(
            "override",
            Some("http://a:1 socks5h://b:2"),
            Some("x.org;<local>;10.0.0.0/8"),
        )
        .unwrap();
        assert_eq!(o.proxies().len(), 2);
        assert_eq!(
            o.to_string(),
            "override http://a:1;socks5h://b:2 bypass x.org;<local>;10.0.0.0/8"
        );
        for (u, p, b) in [
            ("override", None, None),
            ("override", Some(" ; "), None),
            ("preconfig", Some("http://a:1"), None),
            ("auto", None, None),
            ("override", Some("a:1"), Some("bad host!")),
        ] {
            assert_eq!(
                ProxySettings::parse(u, p, b).unwrap_err().hresult(),
                Hresult::E_INVALIDARG,
                "{u} {p:?} {b:?}"
            );
        }
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<ProxySettings>(&json).unwrap(), o);
        assert_eq!(
            serde_json::to_string(&ProxySettings::default()).unwrap(),
            r#"{"usage":"preconfig"}"#
        );
    }
}
