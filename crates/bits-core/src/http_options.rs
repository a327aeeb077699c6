//! The rest of BITS's `IBackgroundCopyJobHttpOptions` family
//! (`docs/spec/http-options.md`): custom headers, the HTTP method, a
//! client certificate, and server-certificate validation (pins stored with
//! the job; a validator an embedder sets on the engine).
//!
//! Everything here is checked when it is set; a transport honours the
//! connection part of it through [`crate::ConnectionPolicy`].

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{BitsError, Hresult};

/// The most characters custom headers may take: every line with its CRLF,
/// plus one for the terminating NUL.
pub const MAX_CUSTOM_HEADERS_CHARS: usize = 16_384;

/// Headers the engine owns: refused as custom headers (`E_INVALIDARG`),
/// as is every `BITS-*` header.
pub const ENGINE_OWNED_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "range",
    "if-range",
];

/// Headers that carry credentials: never sent to another origin after a
/// redirect, and their values never logged.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Whether `name` (any case) carries credentials ([`CREDENTIAL_HEADERS`]).
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A job's custom headers (`SetCustomHeaders`): `Name: value` lines, sent
/// on every request of every file.
///
/// `Debug` shows the names only: values may be secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomHeaders {
    lines: Vec<(String, String)>,
}

impl CustomHeaders {
    /// Parses `Name: value` lines. None at all is `Ok(None)`: the job's
    /// headers are removed.
    ///
    /// # Errors
    /// `E_INVALIDARG` for a line without `:`, a name that is not an HTTP
    /// token, a value with CR, LF or NUL, or a header the engine owns
    /// ([`ENGINE_OWNED_HEADERS`], `BITS-*`); `BG_E_STRING_TOO_LONG` when
    /// the lines, each with its CRLF, plus one, pass
    /// [`MAX_CUSTOM_HEADERS_CHARS`].
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Option<CustomHeaders>, BitsError> {
        if lines.is_empty() {
            return Ok(None);
        }
        let total = lines
            .iter()
            .map(|l| l.as_ref().chars().count() + 2)
            .sum::<usize>()
            + 1;
        if total > MAX_CUSTOM_HEADERS_CHARS {
            return Err(BitsError::StringTooLong {
                what: format!(
                    "custom headers take {total} characters (each line with its CRLF, plus one); at most {MAX_CUSTOM_HEADERS_CHARS}"
                ),
            });
        }
        let mut parsed = Vec::with_capacity(lines.len());
        for line in lines {
            let line = line.as_ref();
            let bad = |why: String| BitsError::InvalidArg { what: why };
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad("a custom header is not of the form \"Name: value\"".into()))?;
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(bad(format!("custom header name {name:?} is not an HTTP token")));
            }
            let lower = name.to_ascii_lowercase();
            if ENGINE_OWNED_HEADERS.contains(&lower.as_str()) || lower.starts_with("bits-") {
                return Err(bad(format!(
                    "header {name} is the engine's own and cannot be set as a custom header"
                )));
            }
            let value = value.trim_matches([' ', '\t']);
            if value.contains(['\r', '\n', '\0']) {
                return Err(bad(format!(
                    "the value of custom header {name} holds CR, LF or NUL"
                )));
            }
            HeaderValue::from_str(value).map_err(|_| {
                bad(format!(
                    "the value of custom header {name} is not a valid header value"
                ))
            })?;
            parsed.push((name.to_owned(), value.to_owned()));
        }
        Ok(Some(CustomHeaders { lines: parsed }))
    }

    /// The headers, as (name, value), in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The lines as set, `Name: value` each.
    pub fn lines(&self) -> Vec<String> {
        self.iter().map(|(n, v)| format!("{n}: {v}")).collect()
    }

    /// The headers as a map, appended in order (a name given twice is
    /// sent twice).
    pub fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.iter() {
            // Both were checked by `parse`.
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }
}

impl fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.lines.iter().map(|(n, _)| format!("{n}: …")))
            .finish()
    }
}

impl Serialize for CustomHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.lines().serialize(s)
    }
}

impl<'de> Deserialize<'de> for CustomHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let lines = Vec::<String>::deserialize(d)?;
        CustomHeaders::parse(&lines)
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| serde::de::Error::custom("custom headers with no line"))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks an HTTP method for `SetHttpMethod`: an HTTP token, upper case.
///
/// # Errors
/// `E_INVALIDARG` otherwise.
pub fn parse_http_method(text: &str) -> Result<http::Method, BitsError> {
    let ok = !text.is_empty() && text.bytes().all(is_tchar) && !text.bytes().any(|b| b.is_ascii_lowercase());
    if !ok {
        return Err(BitsError::InvalidArg {
            what: format!("HTTP method {text:?} is not an upper-case HTTP token (GET, POST, …)"),
        });
    }
    http::Method::from_bytes(text.as_bytes()).map_err(|_| BitsError::InvalidArg {
        what: format!("HTTP method {text:?} is not valid"),
    })
}

/// A password (for a PKCS#12 file). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Where a client certificate is: a PEM file (certificate, optional
/// chain, and the key unless `key` names it) or a PKCS#12 file (detected
/// by content) opened with `password`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientCertificateFile {
    /// The certificate file (PEM or PKCS#12), absolute.
    pub path: PathBuf,
    /// The private key, when it is in a file of its own (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The PKCS#12 password.
    #[serde(default)]
    pub password: Option<Password>,
}

/// A SHA-1 thumbprint of a DER certificate (how BITS selects a client
/// certificate). Shown and stored as 40 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint(pub [u8; 20]);

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

impl std::str::FromStr for Thumbprint {
    type Err = BitsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BitsError::InvalidArg {
            what: format!("thumbprint {s:?} is not 40 hex digits"),
        };
        if s.len() != 40 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Thumbprint(out))
    }
}

impl Serialize for Thumbprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Thumbprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A client certificate a job has chosen: its file, checked when it was
/// set (it parsed, the key matched, the password opened it), and the
/// leaf's thumbprint and subject then. At connect time the transport reads
/// the file again and refuses a leaf whose thumbprint differs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientCertificate {
    /// Where it is.
    pub file: ClientCertificateFile,
    /// The leaf's SHA-1 thumbprint when it was set.
    pub sha1: Thumbprint,
    /// The leaf's subject, for people (`CN=…, O=…`).
    pub subject: String,
}

/// A `sha256//<base64>` pin: the SHA-256 of a DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256//{}", BASE64.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// A job's server-certificate pins (curl's `--pinnedpubkey` form): the
/// server passes when any certificate of the chain it presents has the
/// key of any pin.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PinSet(Vec<Pin>);

impl PinSet {
    /// Parses `sha256//…;sha256//…` (spaces around `;` allowed). An empty
    /// text is `Ok(None)`: the pins are removed.
    ///
    /// # Errors
    /// `E_INVALIDARG` for a pin that is not `sha256//` and the base64 of 32
    /// bytes.
    pub fn parse(text: &str) -> Result<Option<PinSet>, BitsError> {
        let mut pins = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || BitsError::InvalidArg {
                what: format!("pin {part:?} is not sha256// and the base64 of a 32-byte SHA-256"),
            };
            let b64 = part.strip_prefix("sha256//").ok_or_else(bad)?;
            let bytes = BASE64.decode(b64).map_err(|_| bad())?;
            let digest: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
            if !pins.contains(&Pin(digest)) {
                pins.push(Pin(digest));
            }
        }
        Ok((!pins.is_empty()).then_some(PinSet(pins)))
    }

    /// The pins.
    pub fn pins(&self) -> &[Pin] {
        &self.0
    }

    /// Whether any of `spki_sha256` (one per certificate presented) is
    /// pinned.
    pub fn matches_any(&self, spki_sha256: &[[u8; 32]]) -> bool {
        spki_sha256.iter().any(|h| self.0.contains(&Pin(*h)))
    }
}

/// `sha256//…;sha256//…`.
impl fmt::Display for PinSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pin) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{pin}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PinSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinSet({self})")
    }
}

impl Serialize for PinSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PinSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PinSet::parse(&text)
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| serde::de::Error::custom("an empty pin set"))
    }
}

/// An embedder's server-certificate validator (BITS's
/// `IBackgroundCopyServerCertificateValidationCallback`), set on the
/// [`crate::Engine`]; never persisted.
///
/// It is asked only after the transport verified the server under the
/// job's flags, before any HTTP request on the connection, and it can only
/// reject.
pub trait ServerCertValidator: Send + Sync + fmt::Debug {
    /// `Ok(())` accepts; `Err(code)` rejects with that HRESULT (the job
    /// goes to TRANSIENT_ERROR, context SERVER_CERTIFICATE_CALLBACK).
    /// `chain` is the presented chain in DER, leaf first.
    fn validate(&self, job: Uuid, file_index: usize, leaf: &[u8], chain: &[Vec<u8>]) -> Result<(), Hresult>;
}

type Accepted = HashSet<(String, u16, Vec<u8>)>;

/// A job's validator as its connections carry it: the validator, the job,
/// the file being requested, and the (host, port, leaf) triples already
/// accepted (never asked again; rejections are never kept).
///
/// Two checks are equal only when they are the same one (a clone), so a
/// connection checked for one job never serves another, and a new check
/// (the validator set again) starts with an empty cache.
#[derive(Clone)]
pub struct ServerCertCheck {
    validator: Arc<dyn ServerCertValidator>,
    job: Uuid,
    file_index: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Accepted>>,
}

impl ServerCertCheck {
    /// A check of `job`'s servers by `validator`, with nothing accepted yet.
    pub fn new(validator: Arc<dyn ServerCertValidator>, job: Uuid) -> ServerCertCheck {
        ServerCertCheck {
            validator,
            job,
            file_index: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The file the next connections are made for (the engine sets it
    /// before each request).
    pub fn set_file_index(&self, index: usize) {
        self.file_index.store(index, Ordering::Relaxed);
    }

    /// Asks the validator about `chain` (DER, leaf first) presented by
    /// `host:port`, unless that leaf was accepted there before.
    ///
    /// # Errors
    /// [`BitsError::ServerCertRejected`] with the validator's HRESULT.
    pub fn check(&self, host: &str, port: u16, chain: &[Vec<u8>]) -> Result<(), BitsError> {
        let Some(leaf) = chain.first() else {
            return Err(BitsError::ServerCertRejected {
                code: Hresult::TRUST_E_FAIL,
                what: format!("{host}:{port} presented no certificate"),
            });
        };
        let key = (host.to_owned(), port, leaf.clone());
        let mut accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        if accepted.contains(&key) {
            return Ok(());
        }
        let file_index = self.file_index.load(Ordering::Relaxed);
        match self.validator.validate(self.job, file_index, leaf, chain) {
            Ok(()) => {
                accepted.insert(key);
                Ok(())
            }
            Err(code) => Err(BitsError::ServerCertRejected {
                code,
                what: format!("the job's validator refused the certificate of {host}:{port} ({code})"),
            }),
        }
    }
}

impl PartialEq for ServerCertCheck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.accepted, &other.accepted)
    }
}

impl Eq for ServerCertCheck {}

impl std::hash::Hash for ServerCertCheck {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.accepted), state);
    }
}

impl fmt::Debug for ServerCertCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertCheck")
            .field("validator", &self.validator)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_headers_parse_and_refuse() {
        let h = CustomHeaders::parse(&["X-Token: abc ", "Accept:text/plain"])
            .unwrap()
            .unwrap();
        assert_eq!(h.lines(), ["X-Token: abc", "Accept: text/plain"]);
        assert_eq!(h.to_header_map()["x-token"], "abc");
        assert!(!format!("{h:?}").contains("abc"));
        assert!(CustomHeaders::parse::<&str>(&[]).unwrap().is_none());
        for bad in [
            "Range: bytes=0-",
            "BITS-Packet-Type: x",
            "host: a",
            "No colon",
            "Bad Name: x",
            ": x",
        ] {
            let e = CustomHeaders::parse(&[bad]).unwrap_err();
            assert_eq!(e.hresult(), Hresult::E_INVALIDARG, "{bad}");
        }
        let e = CustomHeaders::parse(&["X: a\u{0}b"]).unwrap_err();
        assert_eq!(e.hresult(), Hresult::E_INVALIDARG);
    }

    #[test]
    fn custom_headers_count_crlf_and_the_nul() {
        // "X: " + value + CRLF + NUL = 16,384 exactly.
        let fits = format!("X: {}", "a".repeat(MAX_CUSTOM_HEADERS_CHARS - 3 - 3));
        assert!(CustomHeaders::parse(&[&fits]).is_ok());
        let over = format!("{fits}a");
        let e = CustomHeaders::parse(&[&over]).unwrap_err();
        assert_eq!(e.hresult(), Hresult::BG_E_STRING_TOO_LONG);
    }

    #[test]
    fn methods_are_upper_case_tokens() {
        assert_eq!(parse_http_method("POST").unwrap(), http::Method::POST);
        assert_eq!(parse_http_method("PROPFIND").unwrap().as_str(), "PROPFIND");
        for bad in ["post", "", "GE T", "GET\r"] {
            assert_eq!(
                parse_http_method(bad).unwrap_err().hresult(),
                Hresult::E_INVALIDARG
            );
        }
    }

    #[test]
    fn pins_parse_print_and_match() {
        let a = format!("sha256//{}", BASE64.encode([1u8; 32]));
        let b = format!("sha256//{}", BASE64.encode([2u8; 32]));
        let set = PinSet::parse(&format!("{a} ; {b};")).unwrap().unwrap();
        assert_eq!(set.to_string(), format!("{a};{b}"));
        assert!(set.matches_any(&[[9; 32], [2; 32]]));
        assert!(!set.matches_any(&[[9; 32]]));
        assert!(PinSet::parse("").unwrap().is_none());
        for bad in ["sha1//AAAA", "sha256//notbase64!", "sha256//AAAA"] {
            assert_eq!(PinSet::parse(bad).unwrap_err().hresult(), Hresult::E_INVALIDARG);
        }
    }

    #[test]
    fn thumbprints_round_trip() {
        let t = Thumbprint([0xab; 20]);
        assert_eq!(t.to_string().parse::<Thumbprint>().unwrap(), t);
        assert!("xyz".parse::<Thumbprint>().is_err());
    }

    #[derive(Debug)]
    struct Counting(Mutex<Vec<usize>>, Result<(), Hresult>);

    impl ServerCertValidator for Counting {
        fn validate(&self, _: Uuid, file: usize, _: &[u8], _: &[Vec<u8>]) -> Result<(), Hresult> {
            self.0.lock().unwrap().push(file);
            self.1
        }
    }

    #[test]
    fn acceptances_are_cached_rejections_are_not() {
        let yes = Arc::new(Counting(Mutex::new(Vec::new()), Ok(())));
        let check = ServerCertCheck::new(yes.clone(), Uuid::nil());
        let chain = vec![vec![1, 2, 3]];
        check.set_file_index(2);
        check.check("h", 443, &chain).unwrap();
        check.check("h", 443, &chain).unwrap();
        check.check("h", 444, &chain).unwrap();
        assert_eq!(*yes.0.lock().unwrap(), [2, 2]);
        assert_eq!(check, check.clone());
        assert_ne!(check, ServerCertCheck::new(yes, Uuid::nil()));

        let no = Arc::new(Counting(Mutex::new(Vec::new()), Err(Hresult(0x8000_FFFF))));
        let check = ServerCertCheck::new(no.clone(), Uuid::nil());
        for _ in 0..2 {
            let e = check.check("h", 443, &chain).unwrap_err();
            assert_eq!(e.hresult(), Hresult(0x8000_FFFF));
            assert!(e.is_transient());
        }
        assert_eq!(no.0.lock().unwrap().len(), 2);
    }
}
