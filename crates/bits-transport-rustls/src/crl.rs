//! CRLs for `BG_SSL_ENABLE_CRL_CHECK`, the rustls backend's part: parsing
//! and verification with webpki + ring. The cache (memory, disk in the
//! format every backend shares, download, freshness against the **real**
//! clock whatever time the certificate check runs at, `docs/spec/tls.md`,
//! pitfall 7) is `bits_http::crl_cache`.
//!
//! A CRL is used only when webpki can parse it, its issuer name is the
//! issuing certificate's subject, its signature verifies with that
//! certificate's key, and it is fresh (`thisUpdate <= now < nextUpdate`).
//! A CRL that fails any of this is never cached nor used.

use bits_http::crl_cache::{self, CrlIssuer, CrlWindow};

use crate::der;

/// A CRL (its DER) that passed [`validate`] and was fresh, with its URL.
pub(crate) type CachedCrl = crl_cache::CachedCrl<Vec<u8>>;

/// What one certificate of a verified path needs for its revocation check.
#[derive(Clone, Debug)]
pub struct CrlNeed {
    /// The certificate, for messages.
    pub(crate) subject: String,
    /// Its http CDP URLs.
    pub(crate) urls: Vec<String>,
    /// The issuer's subject (webpki's raw DN contents).
    pub(crate) issuer_subject: Vec<u8>,
    /// The issuer's SubjectPublicKeyInfo (DER).
    pub(crate) issuer_spki: Vec<u8>,
}

/// The issuer of a [`CrlNeed`], judging the CRLs (DER) it may have issued.
#[derive(Debug)]
pub struct Issuer<'a>(pub(crate) &'a CrlNeed);

impl CrlIssuer for Issuer<'_> {
    type Crl = Vec<u8>;

    fn parse(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        to_der(bytes)
    }

    fn verify(&self, der: &Vec<u8>) -> Result<CrlWindow, String> {
        validate(der, self.0)
    }

    fn to_der(&self, der: &Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(der.clone())
    }
}

/// DER from DER or PEM bytes.
fn to_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let mut reader = trimmed;
        let first = rustls_pemfile::crls(&mut reader).next();
        match first {
            Some(Ok(crl)) => Ok(crl.as_ref().to_vec()),
            _ => Err("not a PEM CRL".to_owned()),
        }
    } else {
        Ok(bytes.to_vec())
    }
}

/// The validity window of the CRL in `der` when webpki can use it and it
/// was issued and signed by `need`'s issuer (freshness is the cache's to
/// check).
pub(crate) fn validate(der: &[u8], need: &CrlNeed) -> Result<CrlWindow, String> {
    let crl =
        webpki::BorrowedCertRevocationList::from_der(der).map_err(|e| format!("not a usable CRL ({e:?})"))?;
    let crl = webpki::CertRevocationList::Borrowed(crl);
    if crl.issuer() != need.issuer_subject.as_slice() {
        return Err(format!(
            "issued by someone other than the issuer of {}",
            need.subject
        ));
    }
    let parts = der::crl_parts(der).ok_or("its structure cannot be read")?;
    if !signature_ok(&parts, &need.issuer_spki) {
        return Err(format!(
            "its signature does not verify with the key of the issuer of {}",
            need.subject
        ));
    }
    Ok(CrlWindow {
        this_update: parts.this_update,
        next_update: parts.next_update,
    })
}

/// Whether the CRL's signature verifies with `spki` under an algorithm the
/// ring provider supports (the algorithm identifiers must match exactly).
fn signature_ok(parts: &der::CrlParts<'_>, spki: &[u8]) -> bool {
    let Some((key_alg, key)) = der::spki_parts(spki) else {
        return false;
    };
    let provider = rustls::crypto::ring::default_provider();
    provider
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|alg| {
            alg.signature_alg_id().as_ref() == parts.sig_alg && alg.public_key_alg_id().as_ref() == key_alg
        })
        .any(|alg| alg.verify_signature(key, parts.tbs, parts.signature).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_crl() {
        let need = CrlNeed {
            subject: "x".into(),
            urls: vec![],
            issuer_subject: vec![],
            issuer_spki: vec![],
        };
        assert!(validate(b"hello", &need).is_err());
        let pem = b"-----BEGIN X509 CRL-----\nxx\n-----END X509 CRL-----\n";
        assert!(to_der(pem)
            .and_then(|der| validate(&der, &need).map(|_| ()))
            .is_err());
    }
}
