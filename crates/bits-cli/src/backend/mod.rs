//! The TLS backends compiled into this `bits`, chosen by name.
//!
//! This is the only place in the workspace with `cfg(feature = "openssl")` /
//! `cfg(feature = "rustls")` / `cfg(feature = "native")`: one [`Backend`] enum with a variant per
//! compiled-in backend, one module per backend that builds its transport,
//! and [`disabled`] for the names this build knows but left out, so that
//! `--backend openssl` in a build without it is refused with a clear line
//! (`E_NOTIMPL`, exit 2) rather than "unknown backend".

use std::path::Path;

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, ConnectionPolicy, SharedTransport};

use crate::error::Failure;

#[cfg(not(any(feature = "openssl", feature = "rustls", feature = "native")))]
compile_error!(
    "bits-cli needs at least one TLS backend: build with `--features openssl`, `--features rustls` and/or `--features native`"
);

mod diagnose;
mod disabled;
#[cfg(feature = "native")]
mod native;
#[cfg(feature = "openssl")]
mod openssl;
#[cfg(feature = "rustls")]
mod rustls;

/// Every backend name a `bits` build may know, in the order that picks the
/// default (the first compiled in).
pub const KNOWN: &[&str] = &["openssl", "rustls", "native"];

/// A backend compiled into this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// OpenSSL (`bits-transport-openssl`): every flag value, with CRL checking.
    #[cfg(feature = "openssl")]
    Openssl,
    /// rustls with rustls-webpki (`bits-transport-rustls`): every flag
    /// value, with CRL checking; narrower than OpenSSL in rare chains.
    #[cfg(feature = "rustls")]
    Rustls,
    /// The platform's TLS through native-tls (`bits-transport-native`).
    #[cfg(feature = "native")]
    Native,
}

impl Backend {
    /// The backends of this build, default first.
    pub fn compiled() -> Vec<Backend> {
        vec![
            #[cfg(feature = "openssl")]
            Backend::Openssl,
            #[cfg(feature = "rustls")]
            Backend::Rustls,
            #[cfg(feature = "native")]
            Backend::Native,
        ]
    }

    /// The default backend: the first compiled in, in the order openssl, rustls, native.
    pub fn default_backend() -> Backend {
        Backend::compiled()[0]
    }

    /// The backend's name, as jobs store it and `--backend` takes it.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "openssl")]
            Backend::Openssl => "openssl",
            #[cfg(feature = "rustls")]
            Backend::Rustls => "rustls",
            #[cfg(feature = "native")]
            Backend::Native => "native",
        }
    }

    /// The backend called `name`. A name this build knows but was built
    /// without is `E_NOTIMPL`; any other name is `E_INVALIDARG`.
    pub fn from_name(name: &str) -> Result<Backend, Failure> {
        let wanted = name.trim().to_ascii_lowercase();
        if let Some(b) = Backend::compiled().into_iter().find(|b| b.name() == wanted) {
            return Ok(b);
        }
        Err(disabled::refuse(name))
    }

    /// Whether the backend honours `policy` exactly (`E_NOTIMPL` when not),
    /// decided without building its transport (no roots are loaded).
    pub fn check_policy(self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        match self {
            #[cfg(feature = "openssl")]
            Backend::Openssl => openssl::check_policy(policy),
            #[cfg(feature = "rustls")]
            Backend::Rustls => rustls::check_policy(policy),
            #[cfg(feature = "native")]
            Backend::Native => native::check_policy(policy),
        }
    }

    /// Reads and checks a client certificate file as the backend will offer
    /// it (`docs/spec/http-options.md`, "Client certificate"), returning
    /// what a job stores.
    ///
    /// The checks every backend shares run first, whatever the backend
    /// ([`bits_http::client_cert::read`]: a missing file is `0x80070002`, a
    /// private key its group or others can read `E_ACCESSDENIED`), then
    /// the backend's own parsing (`CRYPT_E_NOT_FOUND`,
    /// `ERROR_INVALID_PASSWORD`, or `E_NOTIMPL` from a backend that does not
    /// offer client certificates).
    pub fn load_client_certificate(
        self,
        file: &ClientCertificateFile,
    ) -> Result<ClientCertificate, BitsError> {
        bits_http::client_cert::read(file)?;
        match self {
            #[cfg(feature = "openssl")]
            Backend::Openssl => openssl::load_client_certificate(file),
            #[cfg(feature = "rustls")]
            Backend::Rustls => rustls::load_client_certificate(file),
            #[cfg(feature = "native")]
            Backend::Native => native::load_client_certificate(file),
        }
    }

    /// The client certificate files the backend loads.
    pub fn client_cert_formats(self) -> bits_http::client_cert::Formats {
        match self {
            #[cfg(feature = "openssl")]
            Backend::Openssl => {
                <bits_transport_openssl::Openssl as bits_http::TlsBackend>::CLIENT_CERT_FORMATS
            }
            #[cfg(feature = "rustls")]
            Backend::Rustls => <bits_transport_rustls::Rustls as bits_http::TlsBackend>::CLIENT_CERT_FORMATS,
            #[cfg(feature = "native")]
            Backend::Native => <bits_transport_native::Native as bits_http::TlsBackend>::CLIENT_CERT_FORMATS,
        }
    }

    /// Whether the backend honours server certificate pins (it must see
    /// the whole presented chain).
    pub fn honours_pins(self) -> bool {
        let pin = bits_core::PinSet::parse(&format!("sha256//{}", "A".repeat(43) + "="))
            .ok()
            .flatten();
        self.check_policy(&ConnectionPolicy::default().with_pins(pin))
            .is_ok()
    }

    /// Builds the backend's transport: the system's trusted roots (which
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` replace), with the CRL cache in the
    /// store folder where the backend has one.
    pub fn transport(self, store_dir: &Path) -> Result<SharedTransport, BitsError> {
        let _ = store_dir;
        match self {
            #[cfg(feature = "openssl")]
            Backend::Openssl => openssl::transport(store_dir),
            #[cfg(feature = "rustls")]
            Backend::Rustls => rustls::transport(store_dir),
            #[cfg(feature = "native")]
            Backend::Native => native::transport(),
        }
    }
}

/// The backend a job names: `E_NOTIMPL` when this build has no such backend.
pub fn named(name: &str) -> Result<Backend, BitsError> {
    Backend::from_name(name).map_err(|f| BitsError::NotImplemented { what: f.message })
}

/// The transport for the backend a job names: `E_NOTIMPL` when this build
/// has no such backend.
pub fn transport_for(name: &str, store_dir: &Path) -> Result<SharedTransport, BitsError> {
    named(name)?.transport(store_dir)
}

/// The names of the compiled-in backends, comma-separated.
pub fn compiled_names() -> String {
    Backend::compiled()
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_first_compiled_and_names_round_trip() {
        let all = Backend::compiled();
        assert!(!all.is_empty());
        assert_eq!(Backend::default_backend(), all[0]);
        for b in all {
            assert_eq!(Backend::from_name(b.name()).unwrap(), b);
            assert_eq!(Backend::from_name(&b.name().to_uppercase()).unwrap(), b);
        }
    }

    #[test]
    fn each_backends_check_agrees_with_its_transport_without_building_one() {
        let dir = std::env::temp_dir();
        for b in Backend::compiled() {
            let transport = b.transport(&dir).unwrap();
            for bits in 0..=bits_core::SecurityFlags::CERT_MASK {
                let policy = ConnectionPolicy::new(bits_core::SecurityFlags::new(bits).unwrap());
                assert_eq!(
                    b.check_policy(&policy).is_ok(),
                    transport.check_policy(&policy).is_ok(),
                    "{} 0x{bits:02X}",
                    b.name()
                );
            }
        }
    }

    #[test]
    fn unknown_name_is_invalid_arg() {
        let f = Backend::from_name("gnutls").unwrap_err();
        assert_eq!(f.code, bits_core::Hresult::E_INVALIDARG);
        assert_eq!(f.exit, 2);
    }

    #[test]
    fn known_but_disabled_is_not_implemented() {
        for name in KNOWN {
            if Backend::compiled().iter().all(|b| b.name() != *name) {
                let f = Backend::from_name(name).unwrap_err();
                assert_eq!(f.code, bits_core::Hresult::E_NOTIMPL, "{name}");
                assert!(f.message.contains("built without"), "{}", f.message);
            }
        }
    }
}
