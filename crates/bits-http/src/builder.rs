//! What the builders of the CRL-checking backends (`OpensslTransportBuilder`,
//! `RustlsTransportBuilder`) have in common: the settings they collect,
//! their defaults, the CRL cache those settings describe, and how a PEM
//! bundle of roots is accepted.
//!
//! Each backend keeps its own builder type, methods and docs (what "system
//! roots" means differs); the builder stores a [`BuilderOptions`] and reads
//! the shared rules from it, so they are written once.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bits_core::BitsError;

use crate::crl_cache::default_crl_cache_dir;
use crate::HttpOptions;

/// The settings of a CRL-checking backend's builder. `R` is the backend's
/// form of a trusted root (a parsed certificate, a trust anchor, ...).
#[derive(Debug)]
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

    /// Formats the settings as the fields of a struct called `name`, for a
    /// builder's `Debug` (the same output as deriving it on a builder that
    /// held these four fields itself).
    ///
    /// # Errors
    /// The formatter's.
    pub fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        R: fmt::Debug,
    {
        f.debug_struct(name)
            .field("roots", &self.roots)
            .field("system_roots", &self.system_roots)
            .field("crl_cache_dir", &self.crl_cache_dir)
            .field("http_options", &self.http_options)
            .finish()
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
    fn debug_is_that_of_a_struct_with_the_four_fields() {
        #[derive(Debug)]
        #[expect(dead_code, reason = "the fields are there to be printed by the derived Debug")]
        struct SomeBuilder {
            roots: Vec<u8>,
            system_roots: bool,
            crl_cache_dir: Option<PathBuf>,
            http_options: HttpOptions,
        }
        struct Wrapped(BuilderOptions<u8>);
        impl fmt::Debug for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt_as("SomeBuilder", f)
            }
        }
        let o = BuilderOptions {
            roots: vec![7],
            system_roots: false,
            crl_cache_dir: Some(PathBuf::from("/c")),
            http_options: HttpOptions::default(),
        };
        let derived = SomeBuilder {
            roots: o.roots.clone(),
            system_roots: o.system_roots,
            crl_cache_dir: o.crl_cache_dir.clone(),
            http_options: o.http_options.clone(),
        };
        assert_eq!(format!("{:?}", Wrapped(o)), format!("{derived:?}"));
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
}
