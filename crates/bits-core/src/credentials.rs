//! Credentials a job answers authentication challenges with
//! (`SetCredentials` / `RemoveCredentials`, `docs/spec/http-options.md`
//! "Credentials"), and the answers themselves ([`Answer`]), shared by the
//! engine (a server's `401`) and bits-http (a proxy's `407`).
//!
//! Honoured: `basic` (RFC 7617) and `digest` (RFC 7616: MD5, SHA-256 and
//! SHA-512-256, their `-sess` forms, qop `auth`; computed by the
//! `http-auth` crate), for the `server` and the `proxy` target. Refused
//! with `E_NOTIMPL` when set, never silently ignored: `ntlm`, `negotiate`
//! and `passport`.
//!
//! The password is stored in the job (so in the store, folder 0700, file
//! 0600) and never shown: [`Credentials`]'s `Debug` leaves it out, nothing
//! displays it, and the header values made from it are marked sensitive.

use std::fmt;

use http::header::{HeaderName, AUTHORIZATION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::error::BitsError;

/// Whom the credentials are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthTarget {
    /// The server of the file (a `401` challenge in `WWW-Authenticate`).
    Server,
    /// A proxy (a `407` challenge in `Proxy-Authenticate`).
    Proxy,
}

impl AuthTarget {
    /// `server` or `proxy`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthTarget::Server => "server",
            AuthTarget::Proxy => "proxy",
        }
    }

    /// Parses `server` or `proxy` (case-insensitive); `E_INVALIDARG` otherwise.
    pub fn parse(text: &str) -> Result<AuthTarget, BitsError> {
        match text.to_ascii_lowercase().as_str() {
            "server" => Ok(AuthTarget::Server),
            "proxy" => Ok(AuthTarget::Proxy),
            _ => Err(BitsError::InvalidArg {
                what: format!("credentials target {text:?} (expected server or proxy)"),
            }),
        }
    }

    /// The status that challenges this target: `401` or `407`.
    pub fn status(self) -> u16 {
        match self {
            AuthTarget::Server => 401,
            AuthTarget::Proxy => 407,
        }
    }

    /// The header the challenge comes in (`WWW-Authenticate`,
    /// `Proxy-Authenticate`).
    pub fn challenge_header(self) -> HeaderName {
        match self {
            AuthTarget::Server => WWW_AUTHENTICATE,
            AuthTarget::Proxy => PROXY_AUTHENTICATE,
        }
    }

    /// The header the answer goes in (`Authorization`,
    /// `Proxy-Authorization`).
    pub fn answer_header(self) -> HeaderName {
        match self {
            AuthTarget::Server => AUTHORIZATION,
            AuthTarget::Proxy => PROXY_AUTHORIZATION,
        }
    }
}

impl fmt::Display for AuthTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authentication scheme of BITS (`BG_AUTH_SCHEME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// RFC 7617 Basic.
    Basic,
    /// RFC 7616 Digest.
    Digest,
    /// NTLM; refused with `E_NOTIMPL`.
    Ntlm,
    /// Negotiate (Kerberos/SPNEGO); refused with `E_NOTIMPL`.
    Negotiate,
    /// Passport; refused with `E_NOTIMPL`.
    Passport,
}

impl AuthScheme {
    /// The scheme's name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Basic => "basic",
            AuthScheme::Digest => "digest",
            AuthScheme::Ntlm => "ntlm",
            AuthScheme::Negotiate => "negotiate",
            AuthScheme::Passport => "passport",
        }
    }

    /// Parses a scheme's name (case-insensitive); `E_INVALIDARG` for an
    /// unknown one.
    pub fn parse(text: &str) -> Result<AuthScheme, BitsError> {
        match text.to_ascii_lowercase().as_str() {
            "basic" => Ok(AuthScheme::Basic),
            "digest" => Ok(AuthScheme::Digest),
            "ntlm" => Ok(AuthScheme::Ntlm),
            "negotiate" => Ok(AuthScheme::Negotiate),
            "passport" => Ok(AuthScheme::Passport),
            _ => Err(BitsError::InvalidArg {
                what: format!("authentication scheme {text:?} (expected basic or digest)"),
            }),
        }
    }

    /// `E_NOTIMPL` for the schemes bits does not implement (`ntlm`,
    /// `negotiate`, `passport`).
    pub fn check_supported(self) -> Result<(), BitsError> {
        match self {
            AuthScheme::Basic | AuthScheme::Digest => Ok(()),
            other => Err(BitsError::NotImplemented {
                what: format!("the {other} authentication scheme (only basic and digest are implemented)"),
            }),
        }
    }
}

impl fmt::Display for AuthScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest user name BITS takes (`BG_E_USERNAME_TOO_LARGE` beyond).
pub const MAX_USER: usize = 300;
/// The longest password (`BG_E_PASSWORD_TOO_LARGE` beyond; the BITS
/// documentation's number, 65,535 characters).
pub const MAX_PASSWORD: usize = 65_535;

/// A user name and password for a target and scheme.
///
/// Equality and hashing include the password: a connection a proxy
/// authenticated for one password is never reused for another.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credentials {
    /// Server or proxy.
    pub target: AuthTarget,
    /// The scheme they answer.
    pub scheme: AuthScheme,
    /// The user name.
    pub user: String,
    /// The password: never in `Debug`, logs or errors.
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("target", &self.target)
            .field("scheme", &self.scheme)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials, checked: `E_NOTIMPL` for `ntlm`, `negotiate` and
    /// `passport`; `E_INVALIDARG` for an empty user name, a user name with
    /// a colon (Basic cannot carry it), or a control character in either
    /// part (never naming the password).
    pub fn new(
        target: AuthTarget,
        scheme: AuthScheme,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Credentials, BitsError> {
        scheme.check_supported()?;
        let user = user.into();
        let password = password.into();
        let bad_user = if user.is_empty() {
            Some("is empty")
        } else if user.contains(':') {
            Some("contains a colon")
        } else if user.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        };
        if let Some(why) = bad_user {
            return Err(BitsError::InvalidArg {
                what: format!("the credentials' user name {why}"),
            });
        }
        if user.chars().count() > MAX_USER {
            return Err(BitsError::CredentialsTooLarge {
                code: crate::error::Hresult::BG_E_USERNAME_TOO_LARGE,
                what: format!("the credentials' user name is over {MAX_USER} characters"),
            });
        }
        if password.chars().count() > MAX_PASSWORD {
            return Err(BitsError::CredentialsTooLarge {
                code: crate::error::Hresult::BG_E_PASSWORD_TOO_LARGE,
                what: format!("the password is over {MAX_PASSWORD} characters"),
            });
        }
        if password.chars().any(char::is_control) {
            return Err(BitsError::InvalidArg {
                what: "the password contains a control character".into(),
            });
        }
        Ok(Credentials {
            target,
            scheme,
            user,
            password,
        })
    }

    /// The password, to send.
    pub fn password(&self) -> &str {
        &self.password
    }
}

/// How one origin's (or one proxy's) challenges are answered: made from a
/// challenge and the credentials that answer it, then giving the header of
/// each request to that origin (Digest counts its requests: `nc`).
pub struct Answer {
    credentials: Credentials,
    client: Client,
}

enum Client {
    Basic,
    Digest(Box<http_auth::DigestClient>),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// What a challenge offers, for an error to name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unanswered {
    /// The schemes offered, as sent (`Basic`, `Digest`, `Negotiate`, …).
    pub offered: Vec<String>,
    /// Why none was answered.
    pub why: String,
}

impl Answer {
    /// The answer to the challenges of `target` in `headers`
    /// (`WWW-Authenticate` or `Proxy-Authenticate`) with the first of
    /// `credentials` (those of `target`) whose scheme is offered: Digest
    /// before Basic when both are offered and set. An offered Digest of an
    /// unknown algorithm or without qop `auth` is skipped.
    ///
    /// # Errors
    /// [`Unanswered`] when no offered scheme has credentials.
    pub fn for_challenge(
        target: AuthTarget,
        headers: &HeaderMap,
        credentials: &[Credentials],
    ) -> Result<Answer, Unanswered> {
        let texts: Vec<&str> = headers
            .get_all(target.challenge_header())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut challenges = Vec::new();
        for text in &texts {
            if let Ok(parsed) = http_auth::parse_challenges(text) {
                challenges.extend(parsed);
            }
        }
        let offered: Vec<String> = challenges.iter().map(|c| c.scheme.to_owned()).collect();
        let ours = |scheme: AuthScheme| {
            credentials
                .iter()
                .find(|c| c.target == target && c.scheme == scheme)
        };
        let mut skipped = Vec::new();
        if let Some(creds) = ours(AuthScheme::Digest) {
            for challenge in challenges
                .iter()
                .filter(|c| c.scheme.eq_ignore_ascii_case("digest"))
            {
                match http_auth::DigestClient::try_from(challenge) {
                    Ok(client) => {
                        return Ok(Answer {
                            credentials: creds.clone(),
                            client: Client::Digest(Box::new(client)),
                        })
                    }
                    Err(e) => skipped.push(format!("a Digest challenge bits cannot answer ({e})")),
                }
            }
        }
        if let Some(creds) = ours(AuthScheme::Basic) {
            if challenges.iter().any(|c| c.scheme.eq_ignore_ascii_case("basic")) {
                return Ok(Answer {
                    credentials: creds.clone(),
                    client: Client::Basic,
                });
            }
        }
        let have: Vec<&str> = credentials
            .iter()
            .filter(|c| c.target == target)
            .map(|c| c.scheme.as_str())
            .collect();
        let asks = if offered.is_empty() {
            "no scheme bits can read".to_owned()
        } else {
            offered.join(", ")
        };
        let mut why = if have.is_empty() {
            format!("it asks for {asks} and the job has no {target} credentials")
        } else {
            format!(
                "it asks for {asks} and the job has {target} credentials for {} only",
                have.join(", ")
            )
        };
        for s in skipped {
            why.push_str("; ");
            why.push_str(&s);
        }
        Err(Unanswered { offered, why })
    }

    /// True when `self` (just made from a challenge) answers the same
    /// Digest challenge as `earlier` (same nonce, realm, algorithm, opaque)
    /// with the same credentials: `earlier` is then to be used instead, so
    /// the nonce count goes on from where it was rather than starting again
    /// at 1 (a server that checks counts takes a repeated one for a replay).
    pub fn continues(&self, earlier: &Answer) -> bool {
        match (&self.client, &earlier.client) {
            (Client::Digest(new), Client::Digest(old)) => {
                self.credentials == earlier.credentials
                    && new.nonce() == old.nonce()
                    && new.realm() == old.realm()
                    && new.opaque() == old.opaque()
                    && new.algorithm() == old.algorithm()
                    && new.session() == old.session()
            }
            _ => false,
        }
    }

    /// The scheme answered.
    pub fn scheme(&self) -> AuthScheme {
        self.credentials.scheme
    }

    /// The credentials answering (for their user name).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The `Authorization` / `Proxy-Authorization` value for a request of
    /// `method` to `uri` (the request target as sent: a path and query to
    /// an origin, `host:port` for `CONNECT`, the absolute URL to a proxy),
    /// marked sensitive.
    ///
    /// # Errors
    /// `Internal` when the digest cannot be computed (a nonce count
    /// exhausted); never naming the password.
    pub fn header(&mut self, method: &str, uri: &str) -> Result<HeaderValue, BitsError> {
        let text = match &mut self.client {
            Client::Basic => {
                http_auth::basic::encode_credentials(&self.credentials.user, &self.credentials.password)
            }
            Client::Digest(client) => client
                .respond(&http_auth::PasswordParams {
                    username: &self.credentials.user,
                    password: &self.credentials.password,
                    uri,
                    method,
                    body: None,
                })
                .map_err(|e| BitsError::Internal {
                    what: format!("cannot answer the Digest challenge: {e}"),
                })?,
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| BitsError::Internal {
            what: "the credentials make no valid header value".into(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `text` with the user information of every URL in it
/// (`scheme://user:password@host`) replaced by `…`, so that a password
/// typed into a URL (which bits refuses) is not repeated by the line that
/// refuses it, nor by a log that records the failure. The authority is
/// taken to end at the first `/`, `?`, `#`, quote or white space.
pub fn without_user_info(text: &str) -> String {
    if !text.contains("://") || !text.contains('@') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push('…');
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// True when the challenges of `target` in `headers` include a Digest
/// challenge marked `stale=true`: the server refused the nonce, not the
/// password, and a new answer with the new nonce is due.
pub fn is_stale(target: AuthTarget, headers: &HeaderMap) -> bool {
    headers
        .get_all(target.challenge_header())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|t| http_auth::parse_challenges(t).ok())
        .flatten()
        .filter(|c| c.scheme.eq_ignore_ascii_case("digest"))
        .filter_map(|c| http_auth::DigestClient::try_from(&c).ok())
        .any(|c| c.stale())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Hresult;

    fn creds(target: AuthTarget, scheme: AuthScheme) -> Credentials {
        Credentials::new(target, scheme, "Mufasa", "Circle of Life").unwrap()
    }

    fn challenged(target: AuthTarget, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(target.challenge_header(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn user_info_of_urls_in_a_text_is_masked() {
        let text = "remote name \"https://u:hunter3@h:99999/x\" and proxy http://alice:pw@[::1]:3128, https://h/@x?a=b@c";
        assert_eq!(
            without_user_info(text),
            "remote name \"https://…@h:99999/x\" and proxy http://…@[::1]:3128, https://h/@x?a=b@c"
        );
        assert_eq!(without_user_info("no url @ all"), "no url @ all");
    }

    #[test]
    fn the_password_is_never_in_debug() {
        let c = Credentials::new(AuthTarget::Server, AuthScheme::Basic, "alice", "s3cr3t-pw").unwrap();
        let mut a = Answer::for_challenge(
            AuthTarget::Server,
            &challenged(AuthTarget::Server, &["Basic realm=\"r\""]),
            std::slice::from_ref(&c),
        )
        .unwrap();
        let shown = format!("{c:?} {c:#?} {a:?} {:?}", a.header("GET", "/").unwrap());
        assert!(shown.contains("alice"));
        assert!(!shown.contains("s3cr3t-pw"));
        assert!(!shown.contains("YWxpY2U6czNjcjN0LXB3"), "{shown}");
    }

    #[test]
    fn ntlm_negotiate_and_passport_are_refused_with_e_notimpl() {
        for scheme in [AuthScheme::Ntlm, AuthScheme::Negotiate, AuthScheme::Passport] {
            for target in [AuthTarget::Server, AuthTarget::Proxy] {
                let e = Credentials::new(target, scheme, "u", "p").unwrap_err();
                assert_eq!(e.hresult(), Hresult::E_NOTIMPL, "{target} {scheme}");
            }
        }
        for scheme in [AuthScheme::Basic, AuthScheme::Digest] {
            for target in [AuthTarget::Server, AuthTarget::Proxy] {
                Credentials::new(target, scheme, "u", "p").unwrap();
            }
        }
    }

    #[test]
    fn bad_user_names_are_invalid_args() {
        for user in ["", "a:b", "a\nb"] {
            let e = Credentials::new(AuthTarget::Server, AuthScheme::Basic, user, "p").unwrap_err();
            assert_eq!(e.hresult(), Hresult::E_INVALIDARG, "{user:?}");
        }
        let e = Credentials::new(AuthTarget::Server, AuthScheme::Basic, "u", "p\r\nX: y").unwrap_err();
        assert_eq!(e.hresult(), Hresult::E_INVALIDARG);
        assert!(!e.to_string().contains("X: y"));
    }

    #[test]
    fn user_names_and_passwords_have_bits_limits() {
        Credentials::new(
            AuthTarget::Server,
            AuthScheme::Basic,
            "u".repeat(300),
            "p".repeat(65_535),
        )
        .unwrap();
        let e = Credentials::new(AuthTarget::Server, AuthScheme::Basic, "u".repeat(301), "p").unwrap_err();
        assert_eq!(e.hresult().0, 0x8020_0025);
        let e = Credentials::new(AuthTarget::Server, AuthScheme::Basic, "u", "p".repeat(65_536)).unwrap_err();
        assert_eq!(e.hresult().0, 0x8020_0026);
        assert!(!e.to_string().contains("ppp"));
    }

    #[test]
    fn basic_is_base64_of_user_colon_password() {
        let c = Credentials::new(AuthTarget::Server, AuthScheme::Basic, "Aladdin", "open sesame").unwrap();
        let mut a = Answer::for_challenge(
            AuthTarget::Server,
            &challenged(AuthTarget::Server, &["Basic realm=\"WallyWorld\""]),
            &[c],
        )
        .unwrap();
        assert_eq!(
            a.header("GET", "/").unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(a.header("GET", "/").unwrap().is_sensitive());
    }

    /// RFC 7616 section 3.9.1: the SHA-256 and MD5 examples (the RFC's
    /// own cnonce, so the response is the RFC's).
    #[test]
    fn digest_answers_are_the_rfc_7616_examples() {
        let challenge = |alg: &str| {
            format!(
                "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )
        };
        for (alg, response) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let mut client =
                http_auth::DigestClient::try_from(&http_auth::parse_challenges(&challenge(alg)).unwrap()[0])
                    .unwrap();
            let text = client
                .respond_with_testing_cnonce(
                    &http_auth::PasswordParams {
                        username: "Mufasa",
                        password: "Circle of Life",
                        uri: "/dir/index.html",
                        method: "GET",
                        body: None,
                    },
                    "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                )
                .unwrap();
            assert!(
                text.contains(&format!("response=\"{response}\"")),
                "{alg}: {text}"
            );
        }
    }

    #[test]
    fn digest_is_preferred_when_both_are_offered_and_set() {
        let both = [
            creds(AuthTarget::Server, AuthScheme::Basic),
            creds(AuthTarget::Server, AuthScheme::Digest),
        ];
        let h = challenged(
            AuthTarget::Server,
            &[
                "Basic realm=\"r\"",
                "Digest realm=\"r\", qop=\"auth\", nonce=\"n\", algorithm=SHA-256",
            ],
        );
        let mut a = Answer::for_challenge(AuthTarget::Server, &h, &both).unwrap();
        assert_eq!(a.scheme(), AuthScheme::Digest);
        let first = a.header("GET", "/x").unwrap();
        let second = a.header("GET", "/x").unwrap();
        assert!(first.to_str().unwrap().contains("nc=00000001"), "{first:?}");
        assert!(second.to_str().unwrap().contains("nc=00000002"), "{second:?}");
        // Basic only when Digest is not set.
        let a = Answer::for_challenge(AuthTarget::Server, &h, &both[..1]).unwrap();
        assert_eq!(a.scheme(), AuthScheme::Basic);
    }

    #[test]
    fn an_unanswered_challenge_says_what_was_asked_and_what_the_job_has() {
        let h = challenged(AuthTarget::Server, &["Negotiate", "Basic realm=\"r\""]);
        let e = Answer::for_challenge(AuthTarget::Server, &h, &[]).unwrap_err();
        assert_eq!(e.offered, ["Negotiate", "Basic"]);
        assert!(e.why.contains("no server credentials"), "{}", e.why);
        let e = Answer::for_challenge(
            AuthTarget::Server,
            &h,
            &[creds(AuthTarget::Server, AuthScheme::Digest)],
        )
        .unwrap_err();
        assert!(e.why.contains("credentials for digest only"), "{}", e.why);
        // Proxy credentials never answer a server, nor the other way round.
        let e = Answer::for_challenge(
            AuthTarget::Server,
            &h,
            &[creds(AuthTarget::Proxy, AuthScheme::Basic)],
        )
        .unwrap_err();
        assert!(e.why.contains("no server credentials"), "{}", e.why);
        let p = challenged(AuthTarget::Proxy, &["Basic realm=\"proxy\""]);
        assert!(Answer::for_challenge(
            AuthTarget::Proxy,
            &p,
            &[creds(AuthTarget::Server, AuthScheme::Basic)]
        )
        .is_err());
        assert!(Answer::for_challenge(
            AuthTarget::Proxy,
            &p,
            &[creds(AuthTarget::Proxy, AuthScheme::Basic)]
        )
        .is_ok());
    }

    #[test]
    fn a_digest_of_an_unknown_algorithm_is_skipped_for_basic() {
        let h = challenged(
            AuthTarget::Server,
            &[
                "Digest realm=\"r\", qop=\"auth\", nonce=\"n\", algorithm=SHA-1",
                "Basic realm=\"r\"",
            ],
        );
        let both = [
            creds(AuthTarget::Server, AuthScheme::Digest),
            creds(AuthTarget::Server, AuthScheme::Basic),
        ];
        assert_eq!(
            Answer::for_challenge(AuthTarget::Server, &h, &both)
                .unwrap()
                .scheme(),
            AuthScheme::Basic
        );
        let e = Answer::for_challenge(AuthTarget::Server, &h, &both[..1]).unwrap_err();
        assert!(e.why.contains("cannot answer"), "{}", e.why);
    }

    #[test]
    fn stale_is_read_from_a_digest_challenge() {
        let stale = challenged(
            AuthTarget::Server,
            &["Digest realm=\"r\", qop=\"auth\", nonce=\"m\", stale=true"],
        );
        assert!(is_stale(AuthTarget::Server, &stale));
        assert!(!is_stale(AuthTarget::Proxy, &stale));
        let fresh = challenged(
            AuthTarget::Server,
            &["Digest realm=\"r\", qop=\"auth\", nonce=\"m\""],
        );
        assert!(!is_stale(AuthTarget::Server, &fresh));
    }
}
