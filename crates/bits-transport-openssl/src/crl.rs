//! CRLs for `BG_SSL_ENABLE_CRL_CHECK`, OpenSSL's part: parsing and
//! verification. The cache (memory, disk, download, freshness against the
//! real clock) is `bits_http::crl_cache`, shared with the other backends.
//!
//! A CRL is used only when its issuer name is the issuing certificate's
//! subject, its signature verifies with that certificate's public key, and
//! it is fresh (`lastUpdate <= now < nextUpdate`). A CRL that fails any of
//! this is never cached nor used.

use std::fmt;

use bits_http::crl_cache::{self, CrlIssuer, CrlWindow};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{X509Crl, X509Ref};

use crate::verify::subject_text;

/// A CRL that passed [`Issuer::verify`] and was fresh, with its URL.
pub(crate) type CachedCrl = crl_cache::CachedCrl<X509Crl>;

/// An issuing certificate, judging the CRLs it may have issued.
pub struct Issuer<'a>(pub(crate) &'a X509Ref);

impl fmt::Debug for Issuer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Issuer").field(&subject_text(self.0)).finish()
    }
}

impl CrlIssuer for Issuer<'_> {
    type Crl = X509Crl;

    fn parse(&self, bytes: &[u8]) -> Result<X509Crl, String> {
        parse(bytes)
    }

    fn verify(&self, crl: &X509Crl) -> Result<CrlWindow, String> {
        verify(crl, self.0)
    }

    fn to_der(&self, crl: &X509Crl) -> Result<Vec<u8>, String> {
        crl.to_der().map_err(|e| format!("cannot re-encode: {e}"))
    }
}

/// A CRL from DER or PEM bytes.
fn parse(bytes: &[u8]) -> Result<X509Crl, String> {
    let trimmed = bytes.trim_ascii_start();
    let result = if trimmed.starts_with(b"-----BEGIN") {
        X509Crl::from_pem(trimmed)
    } else {
        X509Crl::from_der(bytes)
    };
    result.map_err(|e| format!("not a CRL ({e})"))
}

/// The validity window of `crl` when it was issued and signed by `issuer`
/// (freshness is the cache's to check).
fn verify(crl: &X509Crl, issuer: &X509Ref) -> Result<CrlWindow, String> {
    let crl_issuer = crl.issuer_name().to_der().map_err(|e| e.to_string())?;
    let cert_subject = issuer.subject_name().to_der().map_err(|e| e.to_string())?;
    if crl_issuer != cert_subject {
        return Err(format!("issued by someone other than {}", subject_text(issuer)));
    }
    let key = issuer.public_key().map_err(|e| e.to_string())?;
    if !crl.verify(&key).unwrap_or(false) {
        return Err(format!(
            "its signature does not verify with the key of {}",
            subject_text(issuer)
        ));
    }
    Ok(CrlWindow {
        this_update: unix_time(crl.last_update())?,
        next_update: crl.next_update().map(unix_time).transpose()?,
    })
}

/// `time` in seconds since the Unix epoch.
fn unix_time(time: &Asn1TimeRef) -> Result<i64, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let diff = epoch.diff(time).map_err(|e| e.to_string())?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_crl() {
        assert!(parse(b"hello").is_err());
        assert!(parse(b"-----BEGIN X509 CRL-----\nxx\n-----END X509 CRL-----\n").is_err());
    }

    #[test]
    fn asn1_times_become_unix_seconds() {
        for t in [0, 86_399, 86_400, 1_764_000_000, 4_102_444_800] {
            let time = Asn1Time::from_unix(t).unwrap();
            assert_eq!(unix_time(&time), Ok(t));
        }
    }
}
