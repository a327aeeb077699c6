//! The certificate policy: rustls-webpki driven directly, so that each
//! security flag relaxes exactly its own check (`docs/spec/tls.md` §4.2).
//!
//! - **0x02** (CN): the name check (`verify_is_valid_for_subject_name`) is
//!   skipped; everything else is the same.
//! - **0x10** (usage): [`AnyEku`] instead of `KeyUsage::server_auth()`, for
//!   every certificate of the path (as OpenSSL's purpose check).
//! - **0x04** (dates): on `CertExpired` / `CertNotValidYet` the window
//!   `[lo, hi]` of acceptable instants narrows and verification runs again
//!   at `now` clamped into it. When no single instant lies in every
//!   certificate's validity, the date error stands (narrower than OpenSSL,
//!   never broader).
//! - **0x08** (unknown CA): on `UnknownIssuer` the presented certificates
//!   become ad-hoc anchors (signatures still checked). webpki checks no
//!   anchor's dates, EKU or constraints (pitfall 8), so a second run with no
//!   anchors at all must end in `UnknownIssuer`: webpki checks every
//!   node's own properties before looking for its issuer and ranks any
//!   such failure above `UnknownIssuer`. When the leaf's issuer is absent
//!   from the presented certificates and the trusted roots, only that
//!   second run applies (the leaf's signature cannot be checked without
//!   its issuer, as with OpenSSL's 20+21). When an issuer with the leaf's
//!   issuer name is present but no path forms, the case is not decided:
//!   `UnknownCa` (0x80072F0D) stands.
//! - **0x01** (CRL): only for a path to a trusted root; each certificate of
//!   the path but the anchor needs a fresh CRL from its CDP, checked by
//!   webpki (`Chain`, `Deny`, expiration ignored because freshness was
//!   judged by the cache against the real clock). A missing CRL fails the
//!   handshake with a "need CRL" record; the connector downloads and
//!   retries. A path that needed 0x08 cannot have its CRLs verified:
//!   `CertRevocationFailed`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bits_core::SecurityFlags;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use webpki::{EndEntityCert, Error as PkiError, ExtendedKeyUsageValidator, KeyPurposeIdIter, KeyUsage};

use crate::crl::{CachedCrl, CrlNeed};
use crate::der;

/// How many times the date window may narrow (each narrowing removes one
/// certificate's bound; paths are short).
const MAX_DATE_ROUNDS: usize = 8;

/// A certificate fault in policy terms.
pub(crate) use bits_core::CertFault as Fault;

/// webpki's error → policy category (both plain and `…Context` forms).
#[allow(deprecated)] // the plain forms are still emitted by some paths
fn classify(e: &PkiError) -> Fault {
    match e {
        PkiError::CertExpired { .. } | PkiError::CertNotValidYet { .. } => Fault::Date,
        PkiError::UnknownIssuer => Fault::UnknownCa,
        PkiError::RequiredEkuNotFound | PkiError::RequiredEkuNotFoundContext(_) => Fault::Usage,
        PkiError::CertNotValidForName(_) => Fault::Cn,
        PkiError::CertRevoked => Fault::Revoked,
        PkiError::UnknownRevocationStatus
        | PkiError::CrlExpired { .. }
        | PkiError::InvalidCrlNumber
        | PkiError::InvalidCrlSignatureForPublicKey
        | PkiError::IssuerNotCrlSigner
        | PkiError::UnsupportedCrlIssuingDistributionPoint
        | PkiError::UnsupportedCrlVersion
        | PkiError::UnsupportedDeltaCrl
        | PkiError::UnsupportedIndirectCrl
        | PkiError::UnsupportedRevocationReason
        | PkiError::UnsupportedRevocationReasonsPartitioning
        | PkiError::UnsupportedCrlSignatureAlgorithm
        | PkiError::UnsupportedCrlSignatureAlgorithmContext(_)
        | PkiError::UnsupportedCrlSignatureAlgorithmForPublicKey
        | PkiError::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => Fault::RevocationFailed,
        _ => Fault::Other,
    }
}

/// What the verifier found, for the connector (the first refusal only).
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) rejection: Option<(Fault, String)>,
    /// Set when the path was fine but CRLs are missing.
    pub(crate) crl_needs: Vec<CrlNeed>,
}

/// The record shared by a verifier and its connector.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedRecord(Arc<Mutex<Record>>);

impl SharedRecord {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts any extended key usage (or none): 0x10.
struct AnyEku;

impl ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), PkiError> {
        // Still reject a malformed extension.
        for id in iter {
            id?;
        }
        Ok(())
    }
}

/// The usage check the flags ask for.
enum Eku {
    ServerAuth,
    Any,
}

impl ExtendedKeyUsageValidator for Eku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), PkiError> {
        match self {
            Eku::ServerAuth => KeyUsage::server_auth().validate(iter),
            Eku::Any => AnyEku.validate(iter),
        }
    }
}

/// How a path was accepted.
enum Accepted {
    /// To a trusted root: the path's certificates (leaf first) and the
    /// anchor, for the CRL needs.
    Trusted {
        chain: Vec<CertificateDer<'static>>,
        anchor_subject: Vec<u8>,
        anchor_spki: Vec<u8>,
    },
    /// Only with 0x08 (promoted anchors or leaf only).
    Untrusted,
}

/// One handshake's verifier: the trusted roots, the flags, the fresh CRLs
/// the connector had, and the record it reads back.
pub(crate) struct PolicyVerifier {
    pub(crate) roots: Arc<Vec<TrustAnchor<'static>>>,
    pub(crate) flags: SecurityFlags,
    pub(crate) crls: HashMap<String, CachedCrl>,
    pub(crate) record: SharedRecord,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PolicyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyVerifier")
            .field("roots", &self.roots.len())
            .field("flags", &self.flags)
            .field("crls", &self.crls.len())
            .finish_non_exhaustive()
    }
}

fn unix(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

fn at(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

impl PolicyVerifier {
    fn ignores(&self, bit: u32) -> bool {
        self.flags.contains(bit)
    }

    fn eku(&self) -> Eku {
        if self.ignores(SecurityFlags::IGNORE_CERT_WRONG_USAGE) {
            Eku::Any
        } else {
            Eku::ServerAuth
        }
    }

    /// Runs `attempt` at `now`, and with 0x04 at `now` clamped into the
    /// window every date error so far allows. Returns the result and the
    /// time it was reached at.
    fn narrowed<T>(
        &self,
        now: UnixTime,
        mut attempt: impl FnMut(UnixTime) -> Result<T, PkiError>,
    ) -> Result<(T, UnixTime), PkiError> {
        let real = unix(now);
        let (mut lo, mut hi) = (0, i64::MAX);
        let mut t = now;
        for _ in 0..MAX_DATE_ROUNDS {
            let err = match attempt(t) {
                Ok(v) => return Ok((v, t)),
                Err(e) => e,
            };
            if !self.ignores(SecurityFlags::IGNORE_CERT_DATE_INVALID) {
                return Err(err);
            }
            match &err {
                PkiError::CertExpired { not_after, .. } => hi = hi.min(unix(*not_after)),
                PkiError::CertNotValidYet { not_before, .. } => lo = lo.max(unix(*not_before)),
                _ => return Err(err),
            }
            if lo > hi {
                // No instant fits every certificate: refuse (narrower).
                return Err(err);
            }
            t = at(real.clamp(lo, hi));
        }
        Err(PkiError::CertExpired {
            time: now,
            not_after: now,
        })
    }

    /// The chain check under the flags (no revocation, no name).
    fn check_path(
        &self,
        ee: &EndEntityCert<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(Accepted, UnixTime), (Fault, String)> {
        let algs = self.algs.all;
        let strict = self.narrowed(now, |t| {
            ee.verify_for_usage(algs, &self.roots, intermediates, t, self.eku(), None, None)
                .map(|path| {
                    let mut chain = vec![CertificateDer::from(end_entity.as_ref().to_vec())];
                    chain.extend(
                        path.intermediate_certificates()
                            .map(|c| CertificateDer::from(c.der().as_ref().to_vec())),
                    );
                    Accepted::Trusted {
                        chain,
                        anchor_subject: path.anchor().subject.as_ref().to_vec(),
                        anchor_spki: path.anchor().subject_public_key_info.as_ref().to_vec(),
                    }
                })
        });
        match strict {
            Ok(found) => return Ok(found),
            Err(PkiError::UnknownIssuer) if self.ignores(SecurityFlags::IGNORE_UNKNOWN_CA) => {}
            Err(e) => return Err((classify(&e), format!("{e:?}"))),
        }
        // 0x08: the presented certificates as ad-hoc anchors.
        let mut anchors: Vec<TrustAnchor<'_>> = self.roots.iter().cloned().collect();
        let presented: Vec<&CertificateDer<'_>> = std::iter::once(end_entity).chain(intermediates).collect();
        for cert in &presented {
            if let Ok(anchor) = webpki::anchor_from_trusted_cert(cert) {
                anchors.push(anchor);
            }
        }
        let leaf_issuer_known = anchors.iter().any(|a| a.subject.as_ref() == ee.issuer());
        let promoted = self.narrowed(now, |t| {
            match ee.verify_for_usage(algs, &anchors, intermediates, t, self.eku(), None, None) {
                Ok(_) => {}
                // The leaf's issuer is nowhere: only the issuer-independent
                // checks below can apply.
                Err(PkiError::UnknownIssuer) if !leaf_issuer_known => {}
                Err(e) => return Err(e),
            }
            // No anchors: every node's own dates, constraints and EKU, the
            // promoted ones included, must pass before the issuer search.
            match ee.verify_for_usage(algs, &[], intermediates, t, self.eku(), None, None) {
                Err(PkiError::UnknownIssuer) => Ok(Accepted::Untrusted),
                Err(e) => Err(e),
                Ok(_) => Err(PkiError::UnknownIssuer),
            }
        });
        promoted.map_err(|e| {
            let fault = classify(&e);
            let detail = if fault == Fault::UnknownCa && leaf_issuer_known {
                "the presented chain forms no path; not decided under IGNORE_UNKNOWN_CA".to_owned()
            } else {
                format!("{e:?}")
            };
            (fault, detail)
        })
    }

    /// The revocation check of a trusted path at `t`. `Err` with
    /// [`Fault::RevocationFailed`] and non-empty needs when CRLs are
    /// missing.
    fn check_revocation(
        &self,
        ee: &EndEntityCert<'_>,
        intermediates: &[CertificateDer<'_>],
        accepted: &Accepted,
        t: UnixTime,
    ) -> Result<(), (Fault, String, Vec<CrlNeed>)> {
        let Accepted::Trusted {
            chain,
            anchor_subject,
            anchor_spki,
        } = accepted
        else {
            return Err((
                Fault::RevocationFailed,
                "the chain reaches no trusted root, so its CRLs cannot be verified".to_owned(),
                Vec::new(),
            ));
        };
        let mut needs = Vec::new();
        for (i, cert) in chain.iter().enumerate() {
            let (issuer_subject, issuer_spki) = match chain.get(i + 1) {
                Some(issuer) => match EndEntityCert::try_from(issuer) {
                    Ok(c) => (
                        c.subject().to_vec(),
                        c.subject_public_key_info().as_ref().to_vec(),
                    ),
                    Err(e) => return Err((Fault::RevocationFailed, format!("{e:?}"), Vec::new())),
                },
                None => (anchor_subject.clone(), anchor_spki.clone()),
            };
            let subject = match EndEntityCert::try_from(cert) {
                Ok(c) => format!("at depth {i} (serial {:02x?})", c.serial()),
                Err(_) => format!("at depth {i}"),
            };
            needs.push(CrlNeed {
                subject,
                urls: der::cdp_http_urls(cert),
                issuer_subject,
                issuer_spki,
            });
        }
        if let Some(bare) = needs.iter().find(|n| n.urls.is_empty()) {
            return Err((
                Fault::RevocationFailed,
                format!(
                    "the certificate {} names no http CRL distribution point",
                    bare.subject
                ),
                Vec::new(),
            ));
        }
        let mut owned = Vec::new();
        let mut missing = Vec::new();
        for need in &needs {
            let found = need.urls.iter().find_map(|u| self.crls.get(u));
            match found.map(|c| webpki::OwnedCertRevocationList::from_der(&c.crl)) {
                Some(Ok(crl)) => owned.push(webpki::CertRevocationList::Owned(crl)),
                _ => missing.push(need.clone()),
            }
        }
        if !missing.is_empty() {
            return Err((Fault::RevocationFailed, "CRLs needed".to_owned(), missing));
        }
        let refs: Vec<&webpki::CertRevocationList<'_>> = owned.iter().collect();
        let options = webpki::RevocationOptionsBuilder::new(&refs)
            .map_err(|_| (Fault::RevocationFailed, "no CRL".to_owned(), Vec::new()))?
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build();
        match ee.verify_for_usage(
            self.algs.all,
            &self.roots,
            intermediates,
            t,
            self.eku(),
            Some(options),
            None,
        ) {
            Ok(_) => Ok(()),
            Err(PkiError::CertRevoked) => Err((Fault::Revoked, "revoked".to_owned(), Vec::new())),
            // Any other failure here is about the CRLs (the path passed
            // without them at this very time).
            Err(e) => Err((Fault::RevocationFailed, format!("{e:?}"), Vec::new())),
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), (Fault, String, Vec<CrlNeed>)> {
        let ee = EndEntityCert::try_from(end_entity)
            .map_err(|e| (Fault::Other, format!("unusable certificate: {e:?}"), Vec::new()))?;
        let (accepted, t) = self
            .check_path(&ee, end_entity, intermediates, now)
            .map_err(|(f, d)| (f, d, Vec::new()))?;
        // webpki ignores a CA's keyUsage; OpenSSL refuses an issuer without
        // keyCertSign, and no flag covers it: refuse any presented one.
        for cert in intermediates {
            if der::key_usage_allows_cert_sign(cert) != Some(true) {
                return Err((
                    Fault::Other,
                    "a presented CA certificate's key usage does not allow signing certificates".to_owned(),
                    Vec::new(),
                ));
            }
        }
        // webpki ignores keyUsage; OpenSSL's server purpose (and so the
        // other backends) checks the leaf's, under the same flag as EKU.
        if !self.ignores(SecurityFlags::IGNORE_CERT_WRONG_USAGE) {
            match der::key_usage_allows_tls_server(end_entity) {
                Some(true) => {}
                Some(false) => {
                    return Err((
                        Fault::Usage,
                        "the key usage allows no TLS server use".to_owned(),
                        Vec::new(),
                    ))
                }
                None => {
                    return Err((
                        Fault::Other,
                        "the certificate's extensions cannot be read".to_owned(),
                        Vec::new(),
                    ))
                }
            }
        }
        if !self.ignores(SecurityFlags::IGNORE_CERT_CN_INVALID) {
            ee.verify_is_valid_for_subject_name(server_name)
                .map_err(|e| (Fault::Cn, format!("{e:?}"), Vec::new()))?;
        }
        if self.flags.crl_check() {
            self.check_revocation(&ee, intermediates, &accepted, t)?;
        }
        Ok(())
    }
}

impl ServerCertVerifier for PolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, server_name, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err((fault, detail, needs)) => {
                let mut rec = self.record.lock();
                if rec.rejection.is_none() {
                    rec.rejection = Some((fault, detail.clone()));
                    rec.crl_needs = needs;
                }
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(PolicyRefusal(detail))),
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The error handed to rustls; the connector classifies from the record.
#[derive(Debug)]
struct PolicyRefusal(String);

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate refused by policy: {}", self.0)
    }
}

impl std::error::Error for PolicyRefusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_errors_map_to_policy_faults() {
        let t = UnixTime::now();
        assert_eq!(
            classify(&PkiError::CertExpired {
                time: t,
                not_after: t
            }),
            Fault::Date
        );
        assert_eq!(classify(&PkiError::UnknownIssuer), Fault::UnknownCa);
        assert_eq!(classify(&PkiError::CertRevoked), Fault::Revoked);
        assert_eq!(classify(&PkiError::InvalidSignatureForPublicKey), Fault::Other);
        assert_eq!(Fault::RevocationFailed.to_error("x").hresult().0, 0x8007_2F19);
    }
}
