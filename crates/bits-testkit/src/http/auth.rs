//! The server's side of HTTP authentication, for routes that challenge as
//! real servers do: Basic (RFC 7617) and Digest (RFC 7616, MD5 and SHA-256,
//! qop `auth`).
//!
//! Written here from the RFCs with `md-5` and `sha2`, not with the client
//! crate under test (`http-auth`), so a client bug cannot agree with itself;
//! [`digest_response`] is checked against the RFC's own examples.

use std::collections::HashMap;

use base64::Engine as _;
use sha2::Digest as _;

/// The realm every challenge names.
pub const REALM: &str = "bits-testkit";

/// A Digest algorithm the server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `MD5` (the RFC 2617 default).
    Md5,
    /// `SHA-256`.
    Sha256,
}

impl DigestAlgorithm {
    /// The name in challenges and answers: `MD5` or `SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// The lower-case hex hash of `text`.
    pub fn hash(self, text: &str) -> String {
        let bytes: Vec<u8> = match self {
            DigestAlgorithm::Md5 => md5::Md5::digest(text.as_bytes()).to_vec(),
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(text.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The fields of one Digest exchange (RFC 7616 section 3.4.1), to compute
/// the `response` a client must send.
#[derive(Clone, Copy, Debug)]
pub struct DigestInput<'a> {
    /// The algorithm.
    pub algorithm: DigestAlgorithm,
    /// The user name.
    pub user: &'a str,
    /// The realm.
    pub realm: &'a str,
    /// The password.
    pub password: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The `uri` field (the request target).
    pub uri: &'a str,
    /// The server's nonce.
    pub nonce: &'a str,
    /// The nonce count, 8 hex digits as sent (`00000001`).
    pub nc: &'a str,
    /// The client's nonce.
    pub cnonce: &'a str,
    /// The qop (`auth`).
    pub qop: &'a str,
}

/// `response = H(H(user:realm:password):nonce:nc:cnonce:qop:H(method:uri))`.
pub fn digest_response(d: &DigestInput<'_>) -> String {
    let h = |text: &str| d.algorithm.hash(text);
    let ha1 = h(&format!("{}:{}:{}", d.user, d.realm, d.password));
    let ha2 = h(&format!("{}:{}", d.method, d.uri));
    h(&format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        d.nonce, d.nc, d.cnonce, d.qop
    ))
}

/// The parameters of an `Authorization: Digest …` value, names lower-cased,
/// quoted strings unquoted; `None` when it is not Digest or not well formed.
pub fn parse_digest_authorization(value: &str) -> Option<HashMap<String, String>> {
    let value = value.trim_start();
    let (scheme, mut rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut fields = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(fields);
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (text, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => text.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => text.push(c),
                }
            };
            (text, &quoted[end + 1..])
        } else {
            let end = after.find([',', ' ', '\t']).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        fields.insert(name, text);
        rest = tail;
    }
}

/// Who a route lets in.
#[derive(Clone, Debug, Default)]
pub(super) struct Guard {
    pub(super) basic: Option<(String, String)>,
    pub(super) digest: Option<DigestGuard>,
}

#[derive(Clone, Debug)]
pub(super) struct DigestGuard {
    pub(super) user: String,
    pub(super) password: String,
    pub(super) algorithm: DigestAlgorithm,
    /// A nonce answers this many requests, then is stale.
    pub(super) stale_after: Option<u32>,
    /// The first this many right answers are told their nonce is stale.
    pub(super) stale_first: u32,
}

/// The nonces a route handed out (kept with its route's counters).
#[derive(Debug, Default)]
pub(super) struct NonceState {
    opaque: String,
    current: String,
    /// Every nonce issued, with the highest nonce count seen for it.
    issued: HashMap<String, u32>,
    uses: u32,
    staled: u32,
}

impl NonceState {
    fn rotate(&mut self) {
        if self.opaque.is_empty() {
            self.opaque = uuid::Uuid::new_v4().simple().to_string();
        }
        self.current = uuid::Uuid::new_v4().simple().to_string();
        self.issued.insert(self.current.clone(), 0);
        self.uses = 0;
    }
}

/// What the guard says to a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Let it in.
    Pass,
    /// 401 with these `WWW-Authenticate` values.
    Challenge(Vec<String>),
}

impl Guard {
    /// The Digest algorithm, when the guard takes Digest.
    pub(super) fn algorithm(&self) -> Option<DigestAlgorithm> {
        self.digest.as_ref().map(|d| d.algorithm)
    }

    pub(super) fn is_set(&self) -> bool {
        self.basic.is_some() || self.digest.is_some()
    }

    /// Checks a request of `method` to `target` carrying `authorization`.
    pub(super) fn check(
        &self,
        state: &mut NonceState,
        method: &str,
        target: &str,
        authorization: Option<&str>,
    ) -> Verdict {
        if state.current.is_empty() {
            state.rotate();
        }
        let mut stale = false;
        if let Some(value) = authorization {
            if let Some((user, password)) = &self.basic {
                let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                if let Some((scheme, token)) = value.trim().split_once(' ') {
                    if scheme.eq_ignore_ascii_case("basic") && token.trim() == expected {
                        return Verdict::Pass;
                    }
                }
            }
            if let Some(digest) = &self.digest {
                match digest.check(state, method, target, value) {
                    Some(true) => return Verdict::Pass,
                    Some(false) => stale = true,
                    None => {}
                }
            }
        }
        let mut challenges = Vec::new();
        if let Some(digest) = &self.digest {
            challenges.push(format!(
                "Digest realm=\"{REALM}\", qop=\"auth\", algorithm={}, nonce=\"{}\", opaque=\"{}\"{}",
                digest.algorithm.name(),
                state.current,
                state.opaque,
                if stale { ", stale=true" } else { "" }
            ));
        }
        if self.basic.is_some() {
            challenges.push(format!("Basic realm=\"{REALM}\""));
        }
        Verdict::Challenge(challenges)
    }
}

impl DigestGuard {
    /// `Some(true)`: a right answer; `Some(false)`: right but its nonce is
    /// stale (a new one is current); `None`: wrong.
    fn check(&self, state: &mut NonceState, method: &str, target: &str, value: &str) -> Option<bool> {
        let f = parse_digest_authorization(value)?;
        let field = |name: &str| f.get(name).map(String::as_str);
        let algorithm = field("algorithm").unwrap_or("MD5");
        if field("username")? != self.user
            || field("realm")? != REALM
            || field("uri")? != target
            || field("qop")? != "auth"
            || !algorithm.eq_ignore_ascii_case(self.algorithm.name())
            || field("opaque")? != state.opaque
        {
            return None;
        }
        let nonce = field("nonce")?;
        let nc_text = field("nc")?;
        let nc = u32::from_str_radix(nc_text, 16).ok()?;
        let expected = digest_response(&DigestInput {
            algorithm: self.algorithm,
            user: &self.user,
            realm: REALM,
            password: &self.password,
            method,
            uri: target,
            nonce,
            nc: nc_text,
            cnonce: field("cnonce")?,
            qop: "auth",
        });
        if field("response")? != expected {
            return None;
        }
        let seen = state.issued.get_mut(nonce)?;
        if nc <= *seen {
            return None; // a replayed count
        }
        *seen = nc;
        if nonce != state.current {
            return Some(false);
        }
        if state.staled < self.stale_first || self.stale_after.is_some_and(|n| state.uses >= n) {
            state.staled += 1;
            state.rotate();
            return Some(false);
        }
        state.uses += 1;
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 section 3.9.1.
    #[test]
    fn digest_response_is_the_rfc_7616_examples() {
        for (algorithm, response) in [
            (DigestAlgorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                DigestAlgorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let input = DigestInput {
                algorithm,
                user: "Mufasa",
                realm: "http-auth@example.org",
                password: "Circle of Life",
                method: "GET",
                uri: "/dir/index.html",
                nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                nc: "00000001",
                cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                qop: "auth",
            };
            assert_eq!(digest_response(&input), response, "{algorithm:?}");
        }
    }

    #[test]
    fn an_authorization_is_parsed_with_quotes_and_escapes() {
        let f = parse_digest_authorization(
            "Digest username=\"Mu\\\"fasa\", realm=\"a, b\",nc=00000001 , qop=auth, uri=\"/x?y=1\"",
        )
        .unwrap();
        assert_eq!(f["username"], "Mu\"fasa");
        assert_eq!(f["realm"], "a, b");
        assert_eq!(f["nc"], "00000001");
        assert_eq!(f["qop"], "auth");
        assert_eq!(f["uri"], "/x?y=1");
        assert!(parse_digest_authorization("Basic abc").is_none());
        assert!(parse_digest_authorization("Digest username=\"open").is_none());
    }

    fn answer(state: &NonceState, uri: &str, nc: &str, password: &str) -> String {
        let response = digest_response(&DigestInput {
            algorithm: DigestAlgorithm::Sha256,
            user: "u",
            realm: REALM,
            password,
            method: "GET",
            uri,
            nonce: &state.current,
            nc,
            cnonce: "c",
            qop: "auth",
        });
        format!(
            "Digest username=\"u\", realm=\"{REALM}\", uri=\"{uri}\", algorithm=SHA-256, nonce=\"{}\", \
             nc={nc}, cnonce=\"c\", qop=auth, response=\"{response}\", opaque=\"{}\"",
            state.current, state.opaque
        )
    }

    fn digest_guard(stale_after: Option<u32>, stale_first: u32) -> Guard {
        Guard {
            basic: None,
            digest: Some(DigestGuard {
                user: "u".into(),
                password: "p".into(),
                algorithm: DigestAlgorithm::Sha256,
                stale_after,
                stale_first,
            }),
        }
    }

    /// Answers for `uri` with count `nc` and `password`, sends it as a
    /// `method` request to `target`.
    fn ask(
        guard: &Guard,
        s: &mut NonceState,
        method: &str,
        target: &str,
        uri: &str,
        nc: &str,
        password: &str,
    ) -> Verdict {
        let value = answer(s, uri, nc, password);
        guard.check(s, method, target, Some(&value))
    }

    #[test]
    fn digest_checks_the_response_the_uri_and_the_count() {
        let guard = digest_guard(None, 0);
        let mut s = NonceState::default();
        let Verdict::Challenge(c) = guard.check(&mut s, "GET", "/f", None) else {
            panic!()
        };
        assert!(c[0].starts_with("Digest realm=\"bits-testkit\", qop=\"auth\", algorithm=SHA-256"));
        assert!(!c[0].contains("stale"));
        assert_eq!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000001", "p"),
            Verdict::Pass
        );
        // The same count again is a replay; another target, password or
        // method is wrong.
        assert_ne!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000001", "p"),
            Verdict::Pass
        );
        assert_ne!(
            ask(&guard, &mut s, "GET", "/f", "/g", "00000002", "p"),
            Verdict::Pass
        );
        assert_ne!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000003", "x"),
            Verdict::Pass
        );
        assert_ne!(
            ask(&guard, &mut s, "HEAD", "/f", "/f", "00000004", "p"),
            Verdict::Pass
        );
        assert_eq!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000005", "p"),
            Verdict::Pass
        );
    }

    #[test]
    fn a_nonce_goes_stale_after_its_uses() {
        let guard = digest_guard(Some(1), 0);
        let mut s = NonceState::default();
        guard.check(&mut s, "GET", "/f", None);
        let first = s.current.clone();
        assert_eq!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000001", "p"),
            Verdict::Pass
        );
        let Verdict::Challenge(c) = ask(&guard, &mut s, "GET", "/f", "/f", "00000002", "p") else {
            panic!()
        };
        assert!(c[0].ends_with("stale=true"), "{c:?}");
        assert_ne!(s.current, first);
        assert_eq!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000001", "p"),
            Verdict::Pass
        );
    }

    #[test]
    fn the_first_answers_can_be_told_stale() {
        let guard = digest_guard(None, 1);
        let mut s = NonceState::default();
        guard.check(&mut s, "GET", "/f", None);
        let Verdict::Challenge(c) = ask(&guard, &mut s, "GET", "/f", "/f", "00000001", "p") else {
            panic!()
        };
        assert!(c[0].ends_with("stale=true"), "{c:?}");
        assert_eq!(
            ask(&guard, &mut s, "GET", "/f", "/f", "00000001", "p"),
            Verdict::Pass
        );
    }

    #[test]
    fn basic_lets_in_the_right_pair_only() {
        let guard = Guard {
            basic: Some(("Aladdin".into(), "open sesame".into())),
            digest: None,
        };
        let mut s = NonceState::default();
        assert_eq!(
            guard.check(&mut s, "GET", "/", Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")),
            Verdict::Pass
        );
        assert_eq!(
            guard.check(&mut s, "GET", "/", Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZA==")),
            Verdict::Challenge(vec!["Basic realm=\"bits-testkit\"".into()])
        );
    }
}
