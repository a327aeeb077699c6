//! The redirect rules of `docs/spec/policy.md` ("Redirects"), as pure
//! decisions: the engine asks, for each 3xx response, whether it is a
//! redirect at all, where it points, and whether this job may follow it.
//! Transports never follow redirects themselves.

use http::header::LOCATION;
use http::HeaderMap;
use url::Url;

use crate::error::BitsError;
use crate::flags::{RedirectPolicy, SecurityFlags};

/// The statuses that redirect when they carry a `Location` (300 only with
/// one, like the others; a 3xx without `Location` is `BG_E_HTTP_ERROR_S`).
pub(crate) const REDIRECT_STATUSES: [u16; 6] = [300, 301, 302, 303, 307, 308];

/// The `Location` of a redirect response, or `None` when the response is not
/// a redirect (not a redirect status, or no usable `Location`).
pub(crate) fn location(status: u16, headers: &HeaderMap) -> Option<&str> {
    if !REDIRECT_STATUSES.contains(&status) {
        return None;
    }
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

/// Resolves a `Location` (absolute or relative) against the URL that was
/// requested. A value that is no URL at all cannot be followed:
/// `ERROR_WINHTTP_REDIRECT_FAILED`.
///
/// User info in the `Location` (`https://user:pw@host/`) is dropped: never
/// sent, never kept as a remote name, never logged.
pub(crate) fn resolve(current: &Url, location: &str) -> Result<Url, BitsError> {
    let mut target = current.join(location).map_err(|e| BitsError::RedirectFailed {
        reason: format!("the server redirected to {location:?}, which is not a valid URL ({e})"),
    })?;
    if !target.username().is_empty() || target.password().is_some() {
        let _ = target.set_username("");
        let _ = target.set_password(None);
        tracing::debug!(%target, "user info in a redirect's Location dropped");
    }
    Ok(target)
}

/// Decides whether a job with `flags` may follow the redirect from `current`
/// to `target` (`status`), when `hops` redirects were already followed for
/// this request and at most `max_hops` may be.
///
/// In this order:
/// 1. a target scheme other than http/https is always refused
///    (`RedirectFailed`, whatever the policy: such a URL could not even
///    become the file's remote name);
/// 2. DISALLOW refuses every other redirect (`RedirectDisallowed`, the code
///    is `HRESULT_FROM_WIN32(status)`);
/// 3. https → http needs `ALLOW_HTTPS_TO_HTTP` (`RedirectFailed`);
/// 4. more than `max_hops` redirects are refused (`RedirectFailed`).
pub(crate) fn check(
    current: &Url,
    status: u16,
    target: &Url,
    flags: SecurityFlags,
    hops: usize,
    max_hops: usize,
) -> Result<(), BitsError> {
    if !matches!(target.scheme(), "http" | "https") || target.host_str().is_none_or(str::is_empty) {
        return Err(BitsError::RedirectFailed {
            reason: format!(
                "the server redirected to {target}; only http and https URLs with a host are followed"
            ),
        });
    }
    if flags.redirect_policy() == RedirectPolicy::Disallow {
        return Err(BitsError::RedirectDisallowed {
            status,
            location: target.to_string(),
        });
    }
    if current.scheme() == "https" && target.scheme() == "http" && !flags.allow_https_to_http() {
        return Err(BitsError::RedirectFailed {
            reason: format!(
                "the server redirected from https to {target}; set BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP (0x0800) to allow it"
            ),
        });
    }
    if hops >= max_hops {
        return Err(BitsError::RedirectFailed {
            reason: format!("more than {max_hops} redirects (last to {target})"),
        });
    }
    Ok(())
}

/// Same scheme, host and port (the port a scheme implies counts as given).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn flags(bits: u32) -> SecurityFlags {
        SecurityFlags::new(bits).unwrap()
    }

    #[test]
    fn only_redirect_statuses_with_a_location_redirect() {
        let mut h = HeaderMap::new();
        for s in REDIRECT_STATUSES {
            assert_eq!(location(s, &h), None, "{s} without Location");
        }
        h.insert(LOCATION, HeaderValue::from_static(" /next "));
        for s in REDIRECT_STATUSES {
            assert_eq!(location(s, &h), Some("/next"), "{s}");
        }
        for s in [200, 204, 304, 305, 306, 404] {
            assert_eq!(location(s, &h), None, "{s}");
        }
        h.insert(LOCATION, HeaderValue::from_static(""));
        assert_eq!(location(302, &h), None);
    }

    #[test]
    fn relative_locations_resolve_against_the_current_url() {
        let cur = url("https://h:8443/dir/file?q=1");
        assert_eq!(resolve(&cur, "/other").unwrap().as_str(), "https://h:8443/other");
        assert_eq!(resolve(&cur, "sib").unwrap().as_str(), "https://h:8443/dir/sib");
        assert_eq!(resolve(&cur, "//g/x").unwrap().as_str(), "https://g/x");
        assert_eq!(resolve(&cur, "http://g/x").unwrap().as_str(), "http://g/x");
        assert_eq!(resolve(&cur, "http://[::1").unwrap_err().hresult().0, 0x8007_2F7C);
    }

    fn code(r: Result<(), BitsError>) -> u32 {
        r.map(|()| 0).unwrap_or_else(|e| e.hresult().0)
    }

    #[test]
    fn check_rules() {
        let https = url("https://h/a");
        let http = url("http://h/a");
        // Plain follows under SILENT and REPORT.
        for f in [0x000, 0x100, 0x800, 0x900] {
            assert_eq!(code(check(&http, 302, &url("http://g/b"), flags(f), 0, 10)), 0);
            assert_eq!(code(check(&https, 302, &url("https://g/b"), flags(f), 0, 10)), 0);
        }
        // https → http only with 0x800.
        for (f, expected) in [(0x000, 0x8007_2F7C), (0x100, 0x8007_2F7C), (0x800, 0), (0x900, 0)] {
            assert_eq!(
                code(check(&https, 301, &http, flags(f), 0, 10)),
                expected,
                "{f:#x}"
            );
        }
        // DISALLOW: every status gives HRESULT_FROM_WIN32(status), even
        // https → http with 0x800 set.
        for (s, expected) in [
            (300, 0x8007_012C),
            (301, 0x8007_012D),
            (302, 0x8007_012E),
            (303, 0x8007_012F),
            (307, 0x8007_0133),
            (308, 0x8007_0134),
        ] {
            assert_eq!(
                code(check(&http, s, &url("http://g/"), flags(0x200), 0, 10)),
                expected
            );
            assert_eq!(code(check(&https, s, &http, flags(0xA00), 0, 10)), expected);
        }
        // Other schemes: always refused, whatever the policy.
        for f in [0x000, 0x100, 0x200, 0x800] {
            for t in ["ftp://h/x", "file:///etc/passwd", "smb://h/s", "data:,x"] {
                assert_eq!(
                    code(check(&http, 302, &url(t), flags(f), 0, 10)),
                    0x8007_2F7C,
                    "{t}"
                );
            }
        }
        // Hop limit: the 10th redirect is followed, the 11th is not.
        assert_eq!(code(check(&http, 302, &http, flags(0), 9, 10)), 0);
        assert_eq!(code(check(&http, 302, &http, flags(0), 10, 10)), 0x8007_2F7C);
    }

    #[test]
    fn origins() {
        assert!(same_origin(&url("http://H/a"), &url("http://h:80/b")));
        assert!(same_origin(&url("https://h/a"), &url("https://h:443/b")));
        assert!(!same_origin(&url("http://h/a"), &url("https://h/a")));
        assert!(!same_origin(&url("http://h/a"), &url("http://h:8080/a")));
        assert!(!same_origin(&url("http://h/a"), &url("http://g/a")));
    }
}
