//! What the transport needs of a presented chain without a TLS library:
//! each certificate's key, as a `sha256//` pin hashes it.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SHA-256 of the DER SubjectPublicKeyInfo of a DER certificate (what
/// a `sha256//` pin is), or `None` when it does not parse.
pub fn spki_sha256(der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

/// [`spki_sha256`] of each certificate of `chain` that parses.
pub fn spki_sha256_all(chain: &[Vec<u8>]) -> Vec<[u8; 32]> {
    chain.iter().filter_map(|c| spki_sha256(c)).collect()
}
