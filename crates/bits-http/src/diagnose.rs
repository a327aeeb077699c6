//! `bits diagnose` (`docs/spec/cli.md`): TLS handshakes only, never an HTTP
//! request. For one backend: the chain the server presents, every
//! certificate fault found, and the least security-flags value under which
//! the backend accepts the server (or why none does).
//!
//! How it decides, from handshakes alone (the backend's own verification,
//! exactly as a transfer would run it; `docs/spec/policy.md` for the flags):
//!
//! - Candidates are the 16 combinations of the four `IGNORE_*` bits (plus
//!   `ENABLE_CRL_CHECK` with `crl`), ordered by how many bits they ignore,
//!   then by value. A value the backend's `check_policy` refuses
//!   (`E_NOTIMPL`) is skipped and listed as refused, never tried.
//! - The loosest value the backend honours is tried first: when it fails,
//!   no stricter value can pass, so the search stops there and says why.
//! - A fault is **present** when some handshake failed with its error (a
//!   conforming backend reports only a fault its flags leave uncovered),
//!   **absent** when a handshake succeeded under flags that do not cover
//!   it, and **unknown** otherwise (the backend honours no value that
//!   tells, or a fault nothing covers hides it). Under `crl`, revocation is
//!   judged the same way from the handshakes with `ENABLE_CRL_CHECK`.
//! - The chain comes from the loosest successful handshake, as the backend
//!   tells it ([`TlsConnect::peer_chain`]; native-tls gives the leaf only).
//!
//! # Security
//! Nothing here changes what a transfer accepts: each handshake runs under
//! one [`ConnectionPolicy`] the backend honours, its stream is dropped
//! without a byte of HTTP, and a pin or validator plays no part.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bits_core::{BitsError, CertFault, ConnectionPolicy, Hresult, Pin, PinSet, SecurityFlags};
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::backend::TlsBackend;
use crate::tls::TlsConnect;

/// The four ignorable faults, in the order a report lists them.
pub const IGNORABLE: [CertFault; 4] = [
    CertFault::Date,
    CertFault::Cn,
    CertFault::UnknownCa,
    CertFault::Usage,
];

/// Where to connect: an `https` URL's host (no brackets) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A DNS name or an IP address, no brackets.
    pub host: String,
    /// The port (443 when the URL names none).
    pub port: u16,
}

impl Target {
    /// The target of an `https://` URL.
    ///
    /// # Errors
    /// `E_INVALIDARG` when `url` does not parse, is not `https`, or names
    /// no host.
    pub fn from_url(url: &str) -> Result<Target, BitsError> {
        let bad = |why: &str| BitsError::InvalidArg {
            what: format!("URL {url:?}: {why}"),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad("diagnose looks at a TLS server: the URL must be https://"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(bad("no host")),
        };
        Ok(Target {
            host,
            port: parsed.port().unwrap_or(443),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What [`diagnose`] does besides the four ignorable faults.
#[derive(Clone, Debug)]
pub struct DiagnoseOptions {
    /// Also check revocation (`ENABLE_CRL_CHECK`): the least value then
    /// includes 0x0001.
    pub crl: bool,
    /// How long one TCP connect plus handshake may take.
    pub timeout: Duration,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        DiagnoseOptions {
            crl: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One certificate of the presented chain, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// `CN=…, O=…`.
    pub subject: String,
    /// The issuer's name.
    pub issuer: String,
    /// notBefore, RFC 3339 UTC.
    pub not_before: String,
    /// notAfter, RFC 3339 UTC.
    pub not_after: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Subject alternative names: `DNS:…`, `IP:…`, `URI:…`, `email:…`.
    pub names: Vec<String>,
    /// The `sha256//` pin of its key (`--pin` takes it as is).
    pub pin: Pin,
}

impl CertInfo {
    /// Reads a DER certificate; `None` when it does not parse.
    pub fn from_der(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let v = cert.validity();
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                names.push(match n {
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => format!("IP:{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                        16 => {
                            let a: [u8; 16] = (*b).try_into().unwrap_or([0; 16]);
                            format!("IP:{}", std::net::Ipv6Addr::from(a))
                        }
                        _ => "IP:?".to_owned(),
                    },
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::RFC822Name(m) => format!("email:{m}"),
                    other => format!("{other:?}"),
                });
            }
        }
        Some(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: rfc3339(v.not_before.timestamp()),
            not_after: rfc3339(v.not_after.timestamp()),
            not_before_unix: v.not_before.timestamp(),
            not_after_unix: v.not_after.timestamp(),
            names,
            pin: Pin(crate::chain::spki_sha256(der)?),
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (seconds; negative before 1970).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// What happened under one flag value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handshake succeeded (and the connection was dropped unused).
    Accepted,
    /// The handshake failed with this HRESULT and message.
    Failed(Hresult, String),
    /// The backend's `check_policy` refuses the value (`E_NOTIMPL`), with
    /// its reason; nothing was tried.
    Refused(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Accepted => f.write_str("accepted"),
            Outcome::Failed(h, _) => write!(f, "{h}"),
            Outcome::Refused(_) => f.write_str("refused"),
        }
    }
}

/// Whether a fault was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// A handshake failed with its error.
    Present,
    /// A handshake succeeded under flags that do not cover it.
    Absent,
    /// No handshake the backend honours tells.
    Unknown,
}

impl Presence {
    /// `present`, `absent`, `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Presence::Present => "present",
            Presence::Absent => "absent",
            Presence::Unknown => "unknown",
        }
    }
}

/// One fault and whether it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The fault: one of [`IGNORABLE`], or with `crl`
    /// [`CertFault::Revoked`] / [`CertFault::RevocationFailed`].
    pub fault: CertFault,
    /// Found, not found, or cannot tell.
    pub presence: Presence,
    /// The handshake that decided it (`failed with … under 0x0016`).
    pub evidence: String,
}

/// The name a report gives a fault: `date`, `name`, `unknown_ca`, `usage`,
/// `revoked`, `revocation_unchecked`, `other`.
pub const fn fault_name(fault: CertFault) -> &'static str {
    match fault {
        CertFault::Date => "date",
        CertFault::Cn => "name",
        CertFault::UnknownCa => "unknown_ca",
        CertFault::Usage => "usage",
        CertFault::Revoked => "revoked",
        CertFault::RevocationFailed => "revocation_unchecked",
        CertFault::Other => "other",
    }
}

/// The fault a handshake error names, if it is a certificate fault.
pub fn fault_of(code: Hresult) -> Option<CertFault> {
    Some(match code {
        Hresult::WINHTTP_SECURE_CERT_DATE_INVALID => CertFault::Date,
        Hresult::WINHTTP_SECURE_CERT_CN_INVALID => CertFault::Cn,
        Hresult::WINHTTP_SECURE_INVALID_CA => CertFault::UnknownCa,
        Hresult::WINHTTP_SECURE_CERT_WRONG_USAGE => CertFault::Usage,
        Hresult::WINHTTP_SECURE_CERT_REVOKED => CertFault::Revoked,
        Hresult::WINHTTP_SECURE_CERT_REV_FAILED => CertFault::RevocationFailed,
        Hresult::WINHTTP_SECURE_FAILURE => CertFault::Other,
        _ => return None,
    })
}

/// One backend's diagnosis of one server.
#[derive(Clone, Debug)]
pub struct Diagnosis {
    /// [`TlsBackend::NAME`].
    pub backend: &'static str,
    /// The server.
    pub target: Target,
    /// Whether revocation was checked.
    pub crl: bool,
    /// The presented chain, leaf first, from the loosest successful
    /// handshake; empty when none succeeded.
    pub chain: Vec<CertInfo>,
    /// The flags of the handshake the chain comes from.
    pub chain_flags: Option<SecurityFlags>,
    /// Whether the backend shows the whole presented chain; `false` when
    /// it tells only the leaf (native-tls): it then refuses pins too.
    pub whole_chain: bool,
    /// The four ignorable faults, then (with `crl`) revocation.
    pub findings: Vec<Finding>,
    /// Every flag value considered, in the order tried, and its outcome.
    pub tries: Vec<(SecurityFlags, Outcome)>,
    /// The least value that accepts the server (fewest ignore bits, then
    /// smallest), if one does.
    pub least_flags: Option<SecurityFlags>,
    /// Why no value accepts it, when none does.
    pub why_none: Option<String>,
}

impl Diagnosis {
    /// The finding for `fault`, if it was judged.
    pub fn finding(&self, fault: CertFault) -> Option<&Finding> {
        self.findings.iter().find(|f| f.fault == fault)
    }

    /// The faults found present.
    pub fn present(&self) -> Vec<CertFault> {
        self.findings
            .iter()
            .filter(|f| f.presence == Presence::Present)
            .map(|f| f.fault)
            .collect()
    }

    /// The outcome under `flags`, if it was considered.
    pub fn outcome(&self, flags: u32) -> Option<&Outcome> {
        self.tries.iter().find(|(f, _)| f.bits() == flags).map(|(_, o)| o)
    }

    /// The values the backend refused (`E_NOTIMPL`), ascending.
    pub fn refused(&self) -> Vec<SecurityFlags> {
        let mut out: Vec<SecurityFlags> = self
            .tries
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Refused(_)))
            .map(|(f, _)| *f)
            .collect();
        out.sort_by_key(|f| f.bits());
        out
    }
}

/// The candidate values: every combination of the `IGNORE_*` bits, with
/// `ENABLE_CRL_CHECK` when `crl`, ordered by how many bits they ignore,
/// then by value.
pub fn candidates(crl: bool) -> Vec<u32> {
    let base = if crl { SecurityFlags::ENABLE_CRL_CHECK } else { 0 };
    let mut out: Vec<u32> = (0..=SecurityFlags::IGNORE_MASK)
        .filter(|v| v & !SecurityFlags::IGNORE_MASK == 0)
        .map(|v| v | base)
        .collect();
    out.sort_by_key(|v| ((v & SecurityFlags::IGNORE_MASK).count_ones(), *v));
    out
}

/// Opens a TCP connection to `target` within `timeout`.
///
/// # Errors
/// `NameNotResolved`, `CannotConnect` or `Timeout`.
pub async fn connect_tcp(target: &Target, timeout: Duration) -> Result<TcpStream, BitsError> {
    let addr = format!("{target}");
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host(&addr)
            .await
            .map_err(|_| BitsError::NameNotResolved {
                host: target.host.clone(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(BitsError::NameNotResolved {
                host: target.host.clone(),
            });
        }
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(BitsError::CannotConnect {
            host: addr.clone(),
            reason: last.map(|e| e.to_string()).unwrap_or_default(),
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(BitsError::Timeout {
            what: format!("connecting to {addr} took longer than {}s", timeout.as_secs_f32()),
        }),
    }
}

/// The policy a diagnosis tries for `bits`.
fn policy(bits: u32) -> ConnectionPolicy {
    ConnectionPolicy::new(SecurityFlags::new(bits).expect("certificate bits"))
}

struct Runner<'a, C: TlsConnect> {
    connector: &'a C,
    check: fn(&ConnectionPolicy) -> Result<(), BitsError>,
    target: &'a Target,
    timeout: Duration,
    order: Vec<u32>,
    results: BTreeMap<u32, Outcome>,
    chain: Option<(u32, Vec<Vec<u8>>)>,
}

impl<C: TlsConnect> Runner<'_, C> {
    /// The outcome under `bits`, handshaking once per value. A failure to
    /// reach the server at all is the error.
    async fn get(&mut self, bits: u32) -> Result<Outcome, BitsError> {
        if let Some(o) = self.results.get(&bits) {
            return Ok(o.clone());
        }
        let policy = policy(bits);
        let outcome = match (self.check)(&policy) {
            Err(e) => Outcome::Refused(e.to_string()),
            Ok(()) => {
                let tcp = connect_tcp(self.target, self.timeout).await?;
                let handshake = self.connector.connect(&self.target.host, tcp, &policy);
                match tokio::time::timeout(self.timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        let chain = C::peer_chain(&stream);
                        drop(stream);
                        // The loosest success comes first (tried first).
                        if self.chain.is_none() {
                            self.chain = Some((bits, chain));
                        }
                        Outcome::Accepted
                    }
                    Ok(Err(e)) => Outcome::Failed(e.hresult(), e.to_string()),
                    Err(_) => Outcome::Failed(
                        Hresult::WINHTTP_TIMEOUT,
                        format!("the handshake took longer than {}s", self.timeout.as_secs_f32()),
                    ),
                }
            }
        };
        self.order.push(bits);
        self.results.insert(bits, outcome.clone());
        Ok(outcome)
    }
}

/// Diagnoses `target` with backend `B`'s handshake (`connector`, built
/// with the roots a transfer would trust): TLS only, no HTTP request.
///
/// # Errors
/// The first TCP connection's failure (`NameNotResolved`,
/// `CannotConnect`, `Timeout`): the server cannot be reached. Everything
/// after that, handshake failures included, is in the [`Diagnosis`].
pub async fn diagnose<B: TlsBackend>(
    connector: &B::Connector,
    target: &Target,
    options: &DiagnoseOptions,
) -> Result<Diagnosis, BitsError> {
    // Reachable at all? (Exit 1 in the CLI.)
    drop(connect_tcp(target, options.timeout).await?);
    let mut run = Runner {
        connector,
        check: B::check_policy,
        target,
        timeout: options.timeout,
        order: Vec::new(),
        results: BTreeMap::new(),
        chain: None,
    };
    let loosest_first = |crl: bool| {
        let mut c = candidates(crl);
        c.reverse();
        c
    };
    // The faults, from the loosest honoured value and the values that
    // leave exactly one ignorable fault uncovered.
    let mut loosest_plain = None;
    for v in loosest_first(false) {
        if !matches!(run.get(v).await?, Outcome::Refused(_)) {
            loosest_plain = Some(v);
            break;
        }
    }
    if loosest_plain.is_some() {
        for fault in IGNORABLE {
            run.get(SecurityFlags::IGNORE_MASK & !fault.ignored_by()).await?;
        }
    }
    // The least value, in candidate order, after the loosest honoured one
    // (when it fails, every stricter value does too).
    let mut least = None;
    let mut why_none = None;
    let space = candidates(options.crl);
    let mut loosest = None;
    for v in loosest_first(options.crl) {
        match run.get(v).await? {
            Outcome::Refused(_) => continue,
            o => {
                loosest = Some((v, o));
                break;
            }
        }
    }
    match loosest {
        None => {
            why_none = Some(format!(
                "the {} backend refuses every value{}",
                B::NAME,
                if options.crl { " with ENABLE_CRL_CHECK" } else { "" }
            ))
        }
        Some((v, Outcome::Failed(h, msg))) => {
            for c in &space {
                // Still list what the backend refuses.
                if (run.check)(&policy(*c)).is_err() {
                    run.get(*c).await?;
                }
            }
            let refused_looser = space
                .iter()
                .any(|c| c & v == v && *c != v && (run.check)(&policy(*c)).is_err());
            why_none = Some(format!(
                "even the loosest value it honours, 0x{v:04X}, fails with {h} ({msg}){}",
                if refused_looser {
                    "; looser values are refused by the backend (E_NOTIMPL)"
                } else {
                    ""
                }
            ));
        }
        Some((_, _)) => {
            for c in &space {
                if run.get(*c).await? == Outcome::Accepted {
                    least = Some(*c);
                    break;
                }
            }
            // Refused values below the least are already listed; list the
            // rest the backend refuses too.
            for c in &space {
                if (run.check)(&policy(*c)).is_err() {
                    run.get(*c).await?;
                }
            }
        }
    }
    let findings = judge(&run.results, options.crl);
    let whole_chain =
        B::check_policy(&ConnectionPolicy::default().with_pins(PinSet::parse(&Pin([0; 32]).to_string())?))
            .is_ok();
    let (chain_flags, chain) = match &run.chain {
        Some((bits, chain)) => (
            Some(SecurityFlags::new(*bits)?),
            chain.iter().filter_map(|c| CertInfo::from_der(c)).collect(),
        ),
        None => (None, Vec::new()),
    };
    let tries = run
        .order
        .iter()
        .map(|b| {
            (
                SecurityFlags::new(*b).expect("certificate bits"),
                run.results[b].clone(),
            )
        })
        .collect();
    Ok(Diagnosis {
        backend: B::NAME,
        target: target.clone(),
        crl: options.crl,
        chain,
        chain_flags,
        whole_chain,
        findings,
        tries,
        least_flags: least.map(|v| SecurityFlags::new(v).expect("certificate bits")),
        why_none,
    })
}

/// Judges every fault from the outcomes (module documentation).
fn judge(results: &BTreeMap<u32, Outcome>, crl: bool) -> Vec<Finding> {
    let mut faults: Vec<CertFault> = IGNORABLE.to_vec();
    if crl {
        faults.extend([CertFault::Revoked, CertFault::RevocationFailed]);
    }
    faults
        .into_iter()
        .map(|fault| {
            let fails_with_it =
                |o: &Outcome| matches!(o, Outcome::Failed(h, _) if fault_of(*h) == Some(fault));
            // The clearest evidence: the value that leaves only this fault
            // uncovered; else any failure with its error.
            let only = SecurityFlags::IGNORE_MASK & !fault.ignored_by();
            let failed = results
                .get_key_value(&only)
                .filter(|(_, o)| fails_with_it(o))
                .or_else(|| results.iter().find(|(_, o)| fails_with_it(o)));
            if let Some((v, Outcome::Failed(h, _))) = failed {
                return Finding {
                    fault,
                    presence: Presence::Present,
                    evidence: format!("failed with {h} under 0x{v:04X}"),
                };
            }
            let passed = results.iter().find(|(v, o)| {
                **o == Outcome::Accepted
                    && match fault.ignored_by() {
                        0 => *v & SecurityFlags::ENABLE_CRL_CHECK != 0,
                        bit => *v & bit == 0,
                    }
            });
            match passed {
                Some((v, _)) => Finding {
                    fault,
                    presence: Presence::Absent,
                    evidence: format!("accepted under 0x{v:04X}"),
                },
                None => Finding {
                    fault,
                    presence: Presence::Unknown,
                    evidence: "no handshake the backend honours tells".to_owned(),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_by_ignore_bits_then_value() {
        let c = candidates(false);
        assert_eq!(c.len(), 16);
        assert_eq!(&c[..6], &[0x00, 0x02, 0x04, 0x08, 0x10, 0x06]);
        assert_eq!(c[15], 0x1E);
        let c = candidates(true);
        assert_eq!(&c[..3], &[0x01, 0x03, 0x05]);
        assert_eq!(c[15], 0x1F);
    }

    #[test]
    fn urls_give_a_target_or_invalid_arg() {
        assert_eq!(
            Target::from_url("https://example.com/x").unwrap(),
            Target {
                host: "example.com".into(),
                port: 443
            }
        );
        let t = Target::from_url("https://[::1]:8443/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.to_string(), "[::1]:8443");
        for bad in ["http://example.com/", "not a url", "https://"] {
            assert_eq!(
                Target::from_url(bad).unwrap_err().hresult(),
                Hresult::E_INVALIDARG,
                "{bad}"
            );
        }
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn faults_are_judged_from_failures_and_successes() {
        let date = Hresult::WINHTTP_SECURE_CERT_DATE_INVALID;
        let results: BTreeMap<u32, Outcome> = [
            (0x1E, Outcome::Accepted),
            (0x1A, Outcome::Failed(date, String::new())),
            (0x16, Outcome::Accepted),
            (0x0C, Outcome::Refused(String::new())),
        ]
        .into();
        let f = judge(&results, false);
        assert_eq!(f[0].presence, Presence::Present);
        assert_eq!(f[2].presence, Presence::Absent);
        assert_eq!(f[1].presence, Presence::Unknown);
        assert_eq!(f.len(), 4);
    }
}
