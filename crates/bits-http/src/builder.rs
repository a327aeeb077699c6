//! The settings [`crate::TlsTransportBuilder`] collects for every backend
//! ([`BuilderOptions`]), their defaults, the CRL cache they describe, and
//! how a backend's parse of a root becomes the builder's error
//! ([`pem_roots`], [`der_root`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bits_core::BitsError;

use crate::crl_cache::default_crl_cache_dir;
use crate::HttpOptions;

/// The settings of a backend's builder, as [`crate::TlsBackend::connector`]
/// gets them. `R` is the backend's form of a trusted root (a parsed
/// certificate, a trust anchor, ...).
#[derive(Clone, Debug)]
pub struct BuilderOptions<R> {
    /// The caller's roots (default none).
    pub roots: Vec<R>,
    /// Whether the system's roots are trusted too (default `true`).
    pub system_roots: bool,
    /// Where downloaded CRLs are kept; `None` (the default) means
    /// [`default_crl_cache_dir`].
    pub crl_cache_dir: Option<PathBuf>,
    /// Timeouts and pooling (default [`HttpOptions::default`]).
    pub http_options: HttpOptions,
}

impl<R> Default for BuilderOptions<R> {
    fn default() -> Self {
        BuilderOptions {
            roots: Vec::new(),
            system_roots: true,
            crl_cache_dir: None,
            http_options: HttpOptions::default(),
        }
    }
}

impl<R> BuilderOptions<R> {
    /// The CRL cache directory: the one set, else [`default_crl_cache_dir`].
    pub fn crl_dir(&self) -> PathBuf {
        self.crl_cache_dir.clone().unwrap_or_else(default_crl_cache_dir)
    }

    /// How long one CRL download may take: half the handshake timeout (at
    /// least 100 ms), so that an unreachable CRL is reported as such rather
    /// than as a handshake timeout.
    pub fn crl_fetch_timeout(&self) -> Duration {
        (self.http_options.handshake_timeout / 2).max(Duration::from_millis(100))
    }
}

/// The certificates a backend's PEM parser found in a bundle of roots
/// (`parsed`): `E_INVALIDARG` when it could not parse the bundle or found
/// no certificate in it.
///
/// # Errors
/// `InvalidArg` in those two cases.
pub fn pem_roots<C, E: fmt::Display>(parsed: Result<Vec<C>, E>) -> Result<Vec<C>, BitsError> {
    let certs = parsed.map_err(|e| BitsError::InvalidArg {
        what: format!("root certificates are not valid PEM: {e}"),
    })?;
    if certs.is_empty() {
        return Err(BitsError::InvalidArg {
            what: "the PEM holds no certificate".to_owned(),
        });
    }
    Ok(certs)
}

/// The certificate a backend's DER parser made of one root (`parsed`):
/// `E_INVALIDARG` when it could not parse it.
///
/// # Errors
/// `InvalidArg` in that case.
pub fn der_root<C, E: fmt::Display>(parsed: Result<C, E>) -> Result<C, BitsError> {
    parsed.map_err(|e| BitsError::InvalidArg {
        what: format!("root certificate is not valid DER: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_trust_the_system_and_use_the_default_crl_dir() {
        let o = BuilderOptions::<()>::default();
        assert!(o.roots.is_empty());
        assert!(o.system_roots);
        assert_eq!(o.crl_dir(), default_crl_cache_dir());
        assert_eq!(o.http_options, HttpOptions::default());
    }

    #[test]
    fn crl_downloads_get_half_the_handshake_timeout_and_at_least_100_ms() {
        let check = |handshake_ms: u64, expected_ms: u64| {
            let mut o = BuilderOptions::<()>::default();
            o.http_options.handshake_timeout = Duration::from_millis(handshake_ms);
            assert_eq!(
                o.crl_fetch_timeout(),
                Duration::from_millis(expected_ms),
                "{handshake_ms}"
            );
        };
        check(30_000, 15_000);
        check(300, 150);
        check(150, 100);
        check(0, 100);
    }

    #[test]
    fn a_set_crl_dir_wins() {
        let o = BuilderOptions::<()> {
            crl_cache_dir: Some(PathBuf::from("/c")),
            ..Default::default()
        };
        assert_eq!(o.crl_dir(), PathBuf::from("/c"));
    }

    #[test]
    fn pem_roots_refuse_unparsable_and_empty_bundles() {
        let e = pem_roots::<u8, _>(Err("bad base64")).unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
        assert!(e.to_string().contains("not valid PEM: bad base64"), "{e}");
        let e = pem_roots::<u8, &str>(Ok(vec![])).unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
        assert_eq!(pem_roots::<u8, &str>(Ok(vec![1, 2])).unwrap(), [1, 2]);
    }

    #[test]
    fn der_root_refuses_what_does_not_parse() {
        let e = der_root::<u8, _>(Err("short")).unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0057);
        assert!(e.to_string().contains("not valid DER: short"), "{e}");
        assert_eq!(der_root::<u8, &str>(Ok(3)).unwrap(), 3);
    }
}
