//! [`ConnectionPolicy`]: everything a connection is made under, so that a
//! pooled connection or TLS session serves only requests of the same policy.

use std::fmt;

use crate::credentials::{AuthTarget, Credentials};
use crate::error::{BitsError, Hresult};
use crate::flags::SecurityFlags;
use crate::http_options::{ClientCertificate, PinSet, ServerCertCheck};
use crate::proxy::ProxySettings;

/// What a connection is made under: the certificate part of the job's
/// security flags, its client certificate, its server-certificate
/// validation (pins, an embedder's validator), its proxy settings (which
/// route each connection takes) and proxy credentials, whether it yields to
/// other traffic, and whether it offers HTTP/2.
///
/// A transport keys its connection pools (and any TLS session cache) by
/// the whole value, hands it to its TLS handshake, and refuses, in
/// [`crate::Transport::check_policy`], every value it cannot honour exactly.
/// Two requests under equal policies may share a connection; under
/// different ones, never.
///
/// # Security
/// The redirect bits of the flags are not part of it: redirects are the
/// engine's, and no connection depends on them.
///
/// Server-certificate validation ([`ConnectionPolicy::check_server`]) runs
/// only after the handshake verified the server under the flags, and can
/// only reject.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionPolicy {
    flags: SecurityFlags,
    client_certificate: Option<ClientCertificate>,
    pins: Option<PinSet>,
    validator: Option<ServerCertCheck>,
    proxy: ProxySettings,
    proxy_credentials: Vec<Credentials>,
    yielding: bool,
    http1_only: bool,
}

impl ConnectionPolicy {
    /// The policy of `flags`: their certificate part
    /// ([`SecurityFlags::cert_part`]).
    pub const fn new(flags: SecurityFlags) -> ConnectionPolicy {
        ConnectionPolicy {
            flags: flags.cert_part(),
            client_certificate: None,
            pins: None,
            validator: None,
            proxy: ProxySettings::preconfig(),
            proxy_credentials: Vec::new(),
            yielding: false,
            http1_only: false,
        }
    }

    /// This policy with the certificate part of `flags` instead of its own.
    #[must_use]
    pub const fn with_flags(mut self, flags: SecurityFlags) -> ConnectionPolicy {
        self.flags = flags.cert_part();
        self
    }

    /// The certificate flags the server is verified under (CRL check and
    /// the four ignores; never a redirect bit).
    pub const fn flags(&self) -> SecurityFlags {
        self.flags
    }

    /// This policy offering `certificate` to servers that ask for one.
    #[must_use]
    pub fn with_client_certificate(mut self, certificate: Option<ClientCertificate>) -> ConnectionPolicy {
        self.client_certificate = certificate;
        self
    }

    /// The client certificate offered to servers that ask for one.
    pub fn client_certificate(&self) -> Option<&ClientCertificate> {
        self.client_certificate.as_ref()
    }

    /// This policy requiring the server's chain to match one of `pins`.
    #[must_use]
    pub fn with_pins(mut self, pins: Option<PinSet>) -> ConnectionPolicy {
        self.pins = pins;
        self
    }

    /// The pins the server's chain must match.
    pub fn pins(&self) -> Option<&PinSet> {
        self.pins.as_ref()
    }

    /// This policy asking `check` about every server (after the flags).
    #[must_use]
    pub fn with_validator(mut self, check: Option<ServerCertCheck>) -> ConnectionPolicy {
        self.validator = check;
        self
    }

    /// The embedder's validator, as the job's connections carry it.
    pub fn validator(&self) -> Option<&ServerCertCheck> {
        self.validator.as_ref()
    }

    /// This policy routing connections by `proxy`.
    #[must_use]
    pub fn with_proxy(mut self, proxy: ProxySettings) -> ConnectionPolicy {
        self.proxy = proxy;
        self
    }

    /// How connections are routed: the daemon's environment (the
    /// default), direct, or the job's own proxies. The job's flags and
    /// client certificate apply to the origin, never to a proxy.
    pub fn proxy(&self) -> &ProxySettings {
        &self.proxy
    }

    /// This policy with the job's credentials for proxies (those of other
    /// targets are dropped): what a proxy's `407` is answered with. They
    /// key the pools too, so a tunnel a proxy opened for one user never
    /// carries another's requests.
    #[must_use]
    pub fn with_proxy_credentials(mut self, credentials: &[Credentials]) -> ConnectionPolicy {
        self.proxy_credentials = credentials
            .iter()
            .filter(|c| c.target == AuthTarget::Proxy)
            .cloned()
            .collect();
        self
    }

    /// The credentials a proxy's `407` is answered with.
    pub fn proxy_credentials(&self) -> &[Credentials] {
        &self.proxy_credentials
    }

    /// This policy's connections yielding to other traffic (`true`) or
    /// taking the bandwidth they can get (`false`, the default): a
    /// background job's (HIGH, NORMAL, LOW; `network.md`, "Priorities
    /// decide who yields"). A yielding connection limits the window it
    /// advertises with a receiver-side LEDBAT controller (bits-http's
    /// `ledbat`); it is part of the pool key, so a yielding connection never
    /// serves a FOREGROUND request nor the other way round. It is no TLS
    /// property: every backend honours it (the socket is bits-http's).
    #[must_use]
    pub const fn with_yielding(mut self, yielding: bool) -> ConnectionPolicy {
        self.yielding = yielding;
        self
    }

    /// Whether this policy's connections yield to other traffic.
    pub const fn yielding(&self) -> bool {
        self.yielding
    }

    /// This policy's https connections offering only `http/1.1` by ALPN
    /// (`true`), or `h2` then `http/1.1` (`false`, the default: HTTP/2
    /// where the server chooses it). The engine asks for HTTP/1.1 for a job
    /// of one file: one stream gains nothing from HTTP/2's multiplexing and
    /// pays its flow-control window's round trips and its framing (the
    /// repository's `docs/benchmarks.md`, "One large file over HTTP/2"). It is
    /// part of the pool key, so an HTTP/1.1-only request never rides an h2
    /// connection. It is no verification property: the server is verified
    /// under the same flags whichever protocol is offered.
    #[must_use]
    pub const fn with_http1_only(mut self, http1_only: bool) -> ConnectionPolicy {
        self.http1_only = http1_only;
        self
    }

    /// Whether this policy's connections offer only `http/1.1` by ALPN.
    pub const fn http1_only(&self) -> bool {
        self.http1_only
    }

    /// Whether [`ConnectionPolicy::check_server`] has anything to check:
    /// a transport that cannot see the presented chain must refuse such a
    /// policy.
    pub fn checks_server(&self) -> bool {
        self.pins.is_some() || self.validator.is_some()
    }

    /// The job's own server-certificate validation, run by the transport
    /// after its handshake verified `host:port` under the flags and before
    /// any HTTP request: the pins against `spki_sha256` (the SHA-256 of
    /// each presented certificate's DER SubjectPublicKeyInfo), then the
    /// validator with `chain` (DER, leaf first).
    ///
    /// # Errors
    /// [`BitsError::ServerCertRejected`]: `TRUST_E_FAIL` when no key is
    /// pinned, else the validator's HRESULT.
    pub fn check_server(
        &self,
        host: &str,
        port: u16,
        chain: &[Vec<u8>],
        spki_sha256: &[[u8; 32]],
    ) -> Result<(), BitsError> {
        if let Some(pins) = &self.pins {
            if !pins.matches_any(spki_sha256) {
                return Err(BitsError::ServerCertRejected {
                    code: Hresult::TRUST_E_FAIL,
                    what: format!(
                        "no certificate {host}:{port} presented has a key pinned by the job ({} presented)",
                        spki_sha256.len()
                    ),
                });
            }
        }
        if let Some(check) = &self.validator {
            check.check(host, port, chain)?;
        }
        Ok(())
    }
}

/// Displays as `flags 0x0004`, then `, client certificate <sha1>`,
/// `, N pins`, `, a validator`, the proxy, `, yielding` and
/// `, http/1.1 only` when present.
impl fmt::Display for ConnectionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flags {}", self.flags)?;
        if let Some(c) = &self.client_certificate {
            write!(f, ", client certificate {}", c.sha1)?;
        }
        if let Some(p) = &self.pins {
            write!(f, ", {} pins", p.pins().len())?;
        }
        if self.validator.is_some() {
            f.write_str(", a validator")?;
        }
        if self.proxy != ProxySettings::preconfig() {
            write!(f, ", proxy {}", self.proxy)?;
        }
        for c in &self.proxy_credentials {
            // The user only: never the password.
            write!(f, ", proxy {} credentials for {}", c.scheme, c.user)?;
        }
        if self.yielding {
            f.write_str(", yielding")?;
        }
        if self.http1_only {
            f.write_str(", http/1.1 only")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_certificate_part_of_the_flags_counts() {
        let report = SecurityFlags::new(0x0104).unwrap();
        let silent = SecurityFlags::new(0x0004).unwrap();
        assert_eq!(ConnectionPolicy::new(report), ConnectionPolicy::new(silent));
        assert_eq!(ConnectionPolicy::new(report).flags().bits(), 0x0004);
        assert_ne!(
            ConnectionPolicy::new(silent),
            ConnectionPolicy::new(SecurityFlags::DEFAULT)
        );
        let changed = ConnectionPolicy::default().with_flags(SecurityFlags::new(0x0A01).unwrap());
        assert_eq!(changed.flags().bits(), 0x0001);
        assert_eq!(changed.to_string(), "flags 0x0001");
    }

    #[test]
    fn yielding_is_part_of_the_key() {
        let plain = ConnectionPolicy::default();
        assert!(!plain.yielding());
        let yielding = plain.clone().with_yielding(true);
        assert!(yielding.yielding());
        assert_ne!(plain, yielding);
        assert_eq!(yielding.to_string(), "flags 0x0000, yielding");
        assert_eq!(yielding.with_yielding(false), plain);
    }

    #[test]
    fn http1_only_is_part_of_the_key() {
        let plain = ConnectionPolicy::default();
        assert!(!plain.http1_only());
        assert_eq!(plain, ConnectionPolicy::new(SecurityFlags::DEFAULT));
        let h1 = plain.clone().with_http1_only(true);
        assert!(h1.http1_only());
        assert_ne!(plain, h1);
        assert_eq!(h1.to_string(), "flags 0x0000, http/1.1 only");
        assert_eq!(h1.with_http1_only(false), plain);
    }
}
