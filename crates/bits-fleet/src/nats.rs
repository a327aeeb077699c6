//! The NATS side shared by agents and operators: names of subjects,
//! stream and buckets, connecting, and creating what is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::rustls::{self, CertificateError};
use bits_core::Hresult;
use uuid::Uuid;

/// The stream of specs (and of cancels, so a cancel published while an
/// agent is down still reaches it).
pub const STREAM: &str = "BITS_JOBS";
/// Latest state per `<spec id>.<agent name>`.
pub const STATE_BUCKET: &str = "BITS_STATE";
/// Latest record per agent name.
pub const AGENTS_BUCKET: &str = "BITS_AGENTS";
/// How long the stream keeps a spec for agents that have not consumed it
/// yet (a new agent of a group gets the group's specs of this period).
pub const SPEC_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// The subject of a group's specs.
pub fn group_subject(group: &str) -> String {
    format!("bits.jobs.group.{group}")
}

/// The subject of one agent's specs.
pub fn agent_subject(agent: &str) -> String {
    format!("bits.jobs.agent.{agent}")
}

/// The subject that withdraws spec `id`.
pub fn cancel_subject(id: Uuid) -> String {
    format!("bits.cancel.{id}")
}

/// Where an agent reports the specs it could not parse.
pub fn rejected_subject(agent: &str) -> String {
    format!("bits.rejected.{agent}")
}

/// The `BITS_STATE` key of an agent's state of spec `id`.
pub fn state_key(id: Uuid, agent: &str) -> String {
    format!("{id}.{agent}")
}

/// Whether `name` can be an agent or group name: one NATS subject token
/// and a consumer name (letters, digits, `-`, `_`; at most 64).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How to reach NATS.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `nats://host:port` (or `tls://`), several separated by commas.
    pub url: String,
    /// Who the client is, if anyone.
    pub auth: Auth,
    /// The TLS options beyond the URL's scheme.
    pub tls: Tls,
}

/// A client's credentials: each is a file, read when connecting, so no
/// secret is ever on a command line (`ps` shows argv to every user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// None: the server lets anyone in.
    #[default]
    None,
    /// A `.creds` file: a user JWT and its nkey seed (operator mode).
    Creds(PathBuf),
    /// A file holding a user's nkey seed (`SU…`): the server knows the
    /// user's public key (`authorization { users = [ { nkey: U… } ] }`).
    Nkey(PathBuf),
    /// A file holding the token (`authorization { token: … }`); one
    /// trailing newline is not part of it.
    Token(PathBuf),
}

/// TLS beyond what `tls://` asks: the connection is always verified in
/// full (chain to a trusted root, the URL's host in the certificate);
/// these options only say what to trust and who the client is.
///
/// # Security
/// There is no option to skip a check. A private CA is trusted by naming
/// it ([`Tls::ca`]), which then replaces the system's roots for NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM root certificate(s) to trust instead of the system's; given,
    /// TLS is required whatever the URL's scheme.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate chain (leaf first), for servers that
    /// verify clients (`tls { verify: true }`); needs [`Tls::key`].
    pub cert: Option<PathBuf>,
    /// The PEM private key of [`Tls::cert`].
    pub key: Option<PathBuf>,
}

/// Why NATS did not answer, or would not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A file an option names does not exist or cannot be read. Fatal;
    /// `0x80070002`.
    #[error("{0}")]
    NoFile(String),
    /// An option's value is not one: a bad URL, a file that holds no
    /// seed, token, credentials or certificate. Fatal; `E_INVALIDARG`.
    #[error("{0}")]
    BadOption(String),
    /// The server refused the credentials (or their absence). Fatal until
    /// they change; `E_ACCESSDENIED`.
    #[error("{0}")]
    Refused(String),
    /// The server's certificate does not chain to a trusted root. Fatal;
    /// `WINHTTP_SECURE_INVALID_CA` (`0x80072F0D`).
    #[error("{0}")]
    UnknownCa(String),
    /// The server's certificate does not name the URL's host. Fatal;
    /// `WINHTTP_SECURE_CERT_CN_INVALID` (`0x80072F06`).
    #[error("{0}")]
    WrongHost(String),
    /// Another TLS failure (an expired certificate, no TLS on the
    /// server, a client certificate refused). Fatal;
    /// `WINHTTP_SECURE_FAILURE` (`0x80072F8F`).
    #[error("{0}")]
    Tls(String),
    /// No server answered, or it failed mid-way. Transient;
    /// `WINHTTP_CANNOT_CONNECT` (`0x80072EFD`).
    #[error("{0}")]
    Unavailable(String),
}

impl NatsError {
    pub(crate) fn from(what: &str, e: impl std::fmt::Display) -> NatsError {
        NatsError::Unavailable(format!("{what}: {e}"))
    }

    /// The HRESULT of this error (see each variant).
    pub fn hresult(&self) -> Hresult {
        match self {
            NatsError::NoFile(_) => Hresult::FILE_NOT_FOUND,
            NatsError::BadOption(_) => Hresult::E_INVALIDARG,
            NatsError::Refused(_) => Hresult::E_ACCESSDENIED,
            NatsError::UnknownCa(_) => Hresult::WINHTTP_SECURE_INVALID_CA,
            NatsError::WrongHost(_) => Hresult::WINHTTP_SECURE_CERT_CN_INVALID,
            NatsError::Tls(_) => Hresult::WINHTTP_SECURE_FAILURE,
            NatsError::Unavailable(_) => Hresult::WINHTTP_CANNOT_CONNECT,
        }
    }

    /// What to do about it, naming the options.
    pub fn hint(&self) -> &'static str {
        match self {
            NatsError::NoFile(_) | NatsError::BadOption(_) => "give a file that holds what the option names",
            NatsError::Refused(_) => {
                "check --creds, --nkey or --token-file against the server's authorization"
            }
            NatsError::UnknownCa(_) => "give the CA that issued the server's certificate with --nats-ca",
            NatsError::WrongHost(_) => "use the host name the server's certificate names in --nats",
            NatsError::Tls(_) => "check the server's TLS settings, --nats-ca, --nats-cert and --nats-key",
            NatsError::Unavailable(_) => "check --nats and that nats-server runs with JetStream (-js)",
        }
    }

    /// Whether trying again without changing an option cannot help.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, NatsError::Unavailable(_))
    }

    /// A failed connect, classified: refused credentials, the TLS
    /// faults, or unavailable.
    fn connecting(url: &str, e: &async_nats::ConnectError) -> NatsError {
        use async_nats::ConnectErrorKind as K;
        let message = format!("cannot connect to NATS at {url}: {e}");
        // The handshake's verdict comes as a TLS or an IO error, whichever
        // step met it: look for a certificate fault under either.
        match (e.kind(), tls_fault(e)) {
            (K::AuthorizationViolation | K::Authentication, _) => {
                NatsError::Refused(format!("NATS at {url} refused the credentials: {e}"))
            }
            (_, Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))) => {
                NatsError::UnknownCa(message)
            }
            (
                _,
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )),
            ) => NatsError::WrongHost(message),
            // Anything else the handshake met: an expired certificate, the
            // server's alert on a missing or refused client certificate.
            (K::Tls, _) | (_, Some(_)) => NatsError::Tls(message),
            _ => NatsError::Unavailable(message),
        }
    }
}

/// The TLS failure under a connect error, if that is what it was.
fn tls_fault(e: &async_nats::ConnectError) -> Option<rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        // An io::Error's source() skips the error it wraps: look inside.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(err), inner].into_iter().flatten() {
            if let Some(r) = candidate.downcast_ref::<rustls::Error>() {
                return Some(r.clone());
            }
        }
        next = err.source();
    }
    None
}

/// The text of `path`, read for `option`: a missing file and an empty
/// one are refused, naming the option.
fn read_secret(option: &str, path: &Path) -> Result<String, NatsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NatsError::NoFile(format!("{option} {}: cannot read it: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(NatsError::BadOption(format!(
            "{option} {}: the file is empty",
            path.display()
        )));
    }
    Ok(text)
}

fn pem_certificates(option: &str, path: &Path) -> Result<usize, NatsError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bytes = std::fs::read(path)
        .map_err(|e| NatsError::NoFile(format!("{option} {}: cannot read it: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NatsError::BadOption(format!("{option} {}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(NatsError::BadOption(format!(
            "{option} {}: holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs.len())
}

impl Auth {
    /// Reads the secret and sets it on `options`.
    fn apply(&self, options: async_nats::ConnectOptions) -> Result<async_nats::ConnectOptions, NatsError> {
        match self {
            Auth::None => Ok(options),
            Auth::Creds(path) => {
                let text = read_secret("--creds", path)?;
                options.credentials(&text).map_err(|e| {
                    NatsError::BadOption(format!(
                        "--creds {}: not a NATS credentials file (a user JWT and nkey seed): {e}",
                        path.display()
                    ))
                })
            }
            Auth::Nkey(path) => {
                let seed = read_secret("--nkey", path)?.trim().to_string();
                match nkeys::KeyPair::from_seed(&seed) {
                    Ok(k) if k.key_pair_type() == nkeys::KeyPairType::User => Ok(options.nkey(seed)),
                    Ok(_) => Err(NatsError::BadOption(format!(
                        "--nkey {}: the seed is not a user's (SU…)",
                        path.display()
                    ))),
                    Err(e) => Err(NatsError::BadOption(format!(
                        "--nkey {}: not an nkey seed: {e}",
                        path.display()
                    ))),
                }
            }
            Auth::Token(path) => {
                let text = read_secret("--token-file", path)?;
                Ok(options.token(text.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

impl Tls {
    fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, NatsError> {
        if let Some(ca) = &self.ca {
            pem_certificates("--nats-ca", ca)?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                pem_certificates("--nats-cert", cert)?;
                let bytes = std::fs::read(key).map_err(|e| {
                    NatsError::NoFile(format!("--nats-key {}: cannot read it: {e}", key.display()))
                })?;
                use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
                PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                    NatsError::BadOption(format!("--nats-key {}: no PEM private key: {e}", key.display()))
                })?;
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                return Err(NatsError::BadOption(
                    "--nats-cert and --nats-key go together".into(),
                ))
            }
        }
        Ok(options)
    }
}

impl Connect {
    /// The client options: credentials, TLS, and a quick retry when the
    /// server comes back (at most 2 s between attempts).
    pub(crate) fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, NatsError> {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(100).clamp(100, 2000))
            });
        let options = self.auth.apply(options)?;
        self.tls.apply(options)
    }

    /// Checks every option before any connection: the URL, and that each
    /// file holds what its option says (a seed, a token, credentials,
    /// certificates, a key).
    ///
    /// # Errors
    /// [`NatsError::NoFile`] and [`NatsError::BadOption`], naming the option.
    pub fn check(&self) -> Result<(), NatsError> {
        self.addrs()?;
        self.options("check").map(|_| ())
    }

    /// The server addresses.
    ///
    /// # Errors
    /// A URL that is not one.
    pub fn addrs(&self) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
        self.url
            .split(',')
            .map(|u| {
                u.trim()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| NatsError::BadOption(format!("bad NATS URL {u:?}: {e}")))
            })
            .collect()
    }

    /// Connects once (an operator's command): fails when no server
    /// answers within 5 s, at once when one refuses the credentials or
    /// its certificate.
    pub async fn connect(&self) -> Result<async_nats::Client, NatsError> {
        self.connect_with(self.options("bits fleet")?).await
    }

    /// Connects once with `options` (made by [`Connect::options`]).
    pub(crate) async fn connect_with(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, NatsError> {
        let addrs = self.addrs()?;
        options
            .connect(addrs)
            .await
            .map_err(|e| NatsError::connecting(&self.url, &e))
    }
}

/// The stream and the buckets, created when missing (as found otherwise).
#[derive(Debug, Clone)]
pub struct Fleet {
    /// JetStream.
    pub js: jetstream::Context,
    /// `BITS_JOBS`.
    pub stream: stream::Stream,
    /// `BITS_STATE`.
    pub states: kv::Store,
    /// `BITS_AGENTS`.
    pub agents: kv::Store,
}

impl Fleet {
    /// Finds or creates the stream and the buckets.
    pub async fn open(client: async_nats::Client) -> Result<Fleet, NatsError> {
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["bits.jobs.>".into(), "bits.cancel.>".into()],
                max_age: SPEC_MAX_AGE,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::from("cannot open the stream BITS_JOBS", e))?;
        let states = bucket(&js, STATE_BUCKET).await?;
        let agents = bucket(&js, AGENTS_BUCKET).await?;
        Ok(Fleet {
            js,
            stream,
            states,
            agents,
        })
    }

    /// Whether spec `id` was withdrawn (`bits.cancel.<id>` is in the
    /// stream).
    pub async fn cancelled(&self, id: Uuid) -> Result<bool, NatsError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&cancel_subject(id))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(NatsError::from("cannot look for a cancel", e)),
        }
    }
}

async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, NatsError> {
    if let Ok(kv) = js.get_key_value(name).await {
        return Ok(kv);
    }
    // The bucket's stream as `create_key_value` makes it, made here: that
    // call first reads the account's info, which this client cannot parse
    // from nats-server 2.9.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::from(&format!("cannot create the bucket {name}"), e))?;
    js.get_key_value(name)
        .await
        .map_err(|e| NatsError::from(&format!("cannot open the bucket {name}"), e))
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-03T05:42:28.123Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_796_276_548_123);
        assert_eq!(rfc3339(t), "2026-12-03T05:42:28.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert!(valid_name("web-01_a"));
        for bad in ["", "a.b", "a*", "a b", ">", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
