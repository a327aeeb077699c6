//! The verify callback: which `X509_V_ERR_*` codes each security flag may
//! ignore, and how a rejected handshake becomes a policy error.
//!
//! OpenSSL calls the callback once per error it finds (and once per
//! certificate with `preverify_ok` set). Returning `true` for an error makes
//! verification go on and report the next one (`docs/spec/tls.md` §2.3), so a
//! callback that returns `true` only for the categories the flags cover, on
//! every call, is exact: nothing outside the mask slips through (pitfall 2).
//!
//! The callback keeps its own record of the first error it refused:
//! `SslRef::verify_result()` is non-zero even after a successful handshake
//! with ignored errors, and names OpenSSL's error, not ours, when our own date
//! compensation refused (`docs/spec/tls.md`, pitfall 5 and §2.4 item 3).

use std::os::raw::c_int;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bits_core::SecurityFlags;
use openssl::asn1::Asn1Time;
use openssl::x509::{X509Ref, X509StoreContextRef, X509VerifyResult, X509};
use openssl_sys as ffi;

/// What kind of certificate fault an OpenSSL verify error is, in policy terms.
pub(crate) use bits_core::CertFault as Fault;

/// The §2.2 table of `docs/spec/tls.md`: `X509_V_ERR_*` → policy category.
///
/// Codes and meanings follow OpenSSL's `openssl-verify(1)` ("VERIFY
/// OPERATION" / "Diagnostics") and `X509_STORE_CTX_get_error(3)`; the
/// ordering notes are the probe results of `docs/spec/tls.md` §2.3.
pub(crate) fn classify(code: c_int) -> Fault {
    match code {
        // "Hostname mismatch" / "IP address mismatch": X509_VERIFY_PARAM's
        // host or IP check (set1_host / set1_ip) failed.
        ffi::X509_V_ERR_HOSTNAME_MISMATCH | ffi::X509_V_ERR_IP_ADDRESS_MISMATCH => Fault::Cn,
        // "certificate is not yet valid" / "certificate has expired": the
        // notBefore/notAfter of a certificate (any depth). NOT 11/12 below,
        // which are CRL dates (pitfall 6).
        ffi::X509_V_ERR_CERT_NOT_YET_VALID | ffi::X509_V_ERR_CERT_HAS_EXPIRED => Fault::Date,
        // "unable to get issuer certificate" (2), "self-signed certificate"
        // (18, depth 0), "self-signed certificate in certificate chain" (19),
        // "unable to get local issuer certificate" (20), "unable to verify
        // the first certificate" (21, emitted right after 20 once 20 is
        // ignored): chain building did not reach a trusted root.
        ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | ffi::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | ffi::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | ffi::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE => Fault::UnknownCa,
        // "unsuitable certificate purpose": the sslserver purpose check
        // (extendedKeyUsage, and the leaf's keyUsage) at any depth.
        ffi::X509_V_ERR_INVALID_PURPOSE => Fault::Usage,
        // "certificate revoked".
        ffi::X509_V_ERR_CERT_REVOKED => Fault::Revoked,
        // "unable to get certificate CRL" (3), "CRL is not yet valid" (11),
        // "CRL has expired" (12), "unable to get CRL issuer certificate" (33),
        // "CRL signature failure" (8), "unable to decrypt CRL's signature"
        // (5), "key usage does not include CRL signing" (35), "Different CRL
        // scope" (44), "CRL path validation error" (54), "format error in
        // CRL's lastUpdate/nextUpdate field" (15/16), "unhandled critical
        // CRL extension" (36): the revocation status is unknown.
        ffi::X509_V_ERR_UNABLE_TO_GET_CRL
        | ffi::X509_V_ERR_CRL_NOT_YET_VALID
        | ffi::X509_V_ERR_CRL_HAS_EXPIRED
        | ffi::X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER
        | ffi::X509_V_ERR_CRL_SIGNATURE_FAILURE
        | ffi::X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE
        | ffi::X509_V_ERR_KEYUSAGE_NO_CRL_SIGN
        | ffi::X509_V_ERR_DIFFERENT_CRL_SCOPE
        | ffi::X509_V_ERR_CRL_PATH_VALIDATION_ERROR
        | ffi::X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD
        | ffi::X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD
        | ffi::X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION => Fault::RevocationFailed,
        // Everything else: bad certificate signature (7), invalid CA (24/79),
        // path length (25), unhandled critical extension (34), weak keys or
        // digests (66/67/68), name constraints, policy… No flag covers them.
        _ => Fault::Other,
    }
}

/// The error the callback refused, first one only.
#[derive(Clone, Debug)]
pub(crate) struct Rejection {
    /// Its category.
    pub(crate) fault: Fault,
    /// The `X509_V_ERR_*` code, or `X509_V_ERR_CERT_HAS_EXPIRED` /
    /// `…NOT_YET_VALID` for our own date compensation.
    pub(crate) code: c_int,
    /// The depth in the chain (0 = leaf).
    pub(crate) depth: u32,
    /// Words for logs and `SecureFailure`/`CertRevocationFailed` reasons.
    pub(crate) detail: String,
}

/// One certificate of the chain whose CRL verification wants.
#[derive(Clone, Debug)]
pub struct CrlNeed {
    /// The certificate's subject, for messages.
    pub(crate) subject: String,
    /// Its CRL distribution points (http URLs only), in order.
    pub(crate) urls: Vec<String>,
    /// Its issuer, when the chain holds it: the key a CRL must be signed by.
    pub(crate) issuer: Option<X509>,
    /// True for the certificate OpenSSL reported as lacking a CRL.
    pub(crate) reported: bool,
}

/// What one handshake's callback saw.
#[derive(Debug, Default)]
pub(crate) struct VerifyRecord {
    /// The first error refused (the handshake failed on it).
    pub(crate) rejection: Option<Rejection>,
    /// Set when the refusal was "no usable CRL": the chain's certificates,
    /// their CDPs and issuers, so that the CRLs can be fetched and the
    /// handshake retried (`docs/spec/tls.md` §2.5).
    pub(crate) crl_needs: Vec<CrlNeed>,
}

/// Per-connection state shared between the callback and the connector.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedRecord(Arc<Mutex<VerifyRecord>>);

impl SharedRecord {
    pub(crate) fn lock(&self) -> MutexGuard<'_, VerifyRecord> {
        // The callback never panics while holding the lock; if something
        // did, the record is still the best information there is.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The verify callback for one connection under `flags`.
pub(crate) fn callback(
    flags: SecurityFlags,
    record: SharedRecord,
) -> impl Fn(bool, &mut X509StoreContextRef) -> bool + Send + Sync + 'static {
    move |preverify_ok, ctx| {
        if preverify_ok {
            return true;
        }
        let code = ctx.error().as_raw();
        let depth = ctx.error_depth();
        let fault = classify(code);
        let mut decision = if fault.covered_by(flags) {
            Decision::Accept
        } else {
            Decision::Refuse(fault, code, ctx.error().error_string())
        };
        // Pitfall 4: when chain building stops at an untrusted certificate
        // above the leaf, OpenSSL 3 never checks that certificate's dates
        // (internal_verify starts one level below a non-self-issued top).
        // Ignoring UNKNOWN_CA must not also ignore that, unless DATE is
        // ignored too. At depth 0 OpenSSL checks the lone leaf itself (and
        // reports 9/10 later), which keeps the reported order of appendix B.
        if decision == Decision::Accept
            && fault == Fault::UnknownCa
            && depth > 0
            && !flags.contains(SecurityFlags::IGNORE_CERT_DATE_INVALID)
        {
            if let Some(date_code) = ctx.current_cert().and_then(date_error) {
                let words = if date_code == ffi::X509_V_ERR_CERT_NOT_YET_VALID {
                    "untrusted top certificate is not yet valid"
                } else {
                    "untrusted top certificate has expired"
                };
                decision = Decision::Refuse(Fault::Date, date_code, words);
            }
        }
        match decision {
            Decision::Accept => true,
            Decision::Refuse(fault, code, words) => {
                let mut rec = record.lock();
                if rec.rejection.is_none() {
                    let subject = ctx.current_cert().map(subject_text).unwrap_or_default();
                    rec.rejection = Some(Rejection {
                        fault,
                        code,
                        depth,
                        detail: format!(
                            "{words} (X509_V_ERR {code}) at depth {depth}{}",
                            if subject.is_empty() {
                                String::new()
                            } else {
                                format!(", {subject}")
                            }
                        ),
                    });
                    if needs_crl(code) {
                        rec.crl_needs = chain_needs(ctx, depth);
                    }
                }
                false
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Accept,
    /// The category, the code, and OpenSSL's words for it.
    Refuse(Fault, c_int, &'static str),
}

/// The errors that mean "no usable CRL in the store": worth a download and
/// a second handshake.
fn needs_crl(code: c_int) -> bool {
    matches!(
        code,
        ffi::X509_V_ERR_UNABLE_TO_GET_CRL
            | ffi::X509_V_ERR_CRL_HAS_EXPIRED
            | ffi::X509_V_ERR_CRL_NOT_YET_VALID
    )
}

/// `Some(9 or 10)` when `cert` is not valid now (fail closed when the clock
/// or the fields cannot be read).
pub(crate) fn date_error(cert: &X509Ref) -> Option<c_int> {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return Some(ffi::X509_V_ERR_CERT_HAS_EXPIRED);
    };
    if cert.not_before() > now {
        Some(ffi::X509_V_ERR_CERT_NOT_YET_VALID)
    } else if cert.not_after() < now {
        Some(ffi::X509_V_ERR_CERT_HAS_EXPIRED)
    } else {
        None
    }
}

/// The subject of `cert` as `CN=…, O=…`, for messages.
pub(crate) fn subject_text(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The http CRL distribution points of `cert`, in order.
pub(crate) fn http_cdps(cert: &X509Ref) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|dp| dp.distpoint())
        .filter_map(|name| name.fullname())
        .flat_map(|names| names.iter())
        .filter_map(|gn| gn.uri())
        .filter(|uri| {
            uri.get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        })
        .map(str::to_owned)
        .collect()
}

/// Every certificate of the chain being verified that a CRL may be needed
/// for: all but a self-signed top (CRL_CHECK_ALL does not require the
/// root's own CRL), with its issuer when the chain holds it.
fn chain_needs(ctx: &X509StoreContextRef, reported_depth: u32) -> Vec<CrlNeed> {
    let Some(chain) = ctx.chain() else {
        return Vec::new();
    };
    let certs: Vec<&X509Ref> = chain.iter().collect();
    let mut needs = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        let self_signed = cert.issued(cert) == X509VerifyResult::OK;
        if self_signed && i + 1 == certs.len() && i > 0 {
            continue;
        }
        let issuer = certs
            .get(i + 1)
            .filter(|issuer| issuer.issued(cert) == X509VerifyResult::OK)
            .or(if self_signed { Some(cert) } else { None })
            .map(|issuer| (*issuer).to_owned());
        needs.push(CrlNeed {
            subject: subject_text(cert),
            urls: http_cdps(cert),
            issuer,
            reported: u32::try_from(i).is_ok_and(|d| d == reported_depth),
        });
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_tls_mapping_2_2() {
        let cases: &[(&[c_int], Fault)] = &[
            (&[62, 64], Fault::Cn),
            (&[9, 10], Fault::Date),
            (&[2, 18, 19, 20, 21], Fault::UnknownCa),
            (&[26], Fault::Usage),
            (&[23], Fault::Revoked),
            (
                &[3, 11, 12, 33, 8, 5, 35, 44, 54, 15, 16, 36],
                Fault::RevocationFailed,
            ),
            (&[1, 7, 13, 14, 22, 24, 25, 34, 63, 66, 67, 68, 79], Fault::Other),
        ];
        for (codes, fault) in cases {
            for &code in *codes {
                assert_eq!(classify(code), *fault, "code {code}");
            }
        }
    }

    #[test]
    fn each_fault_is_covered_by_exactly_its_own_flag() {
        for bits in 0..=0x1F_u32 {
            let flags = SecurityFlags::new(bits).unwrap();
            assert_eq!(Fault::Cn.covered_by(flags), bits & 0x02 != 0);
            assert_eq!(Fault::Date.covered_by(flags), bits & 0x04 != 0);
            assert_eq!(Fault::UnknownCa.covered_by(flags), bits & 0x08 != 0);
            assert_eq!(Fault::Usage.covered_by(flags), bits & 0x10 != 0);
            assert!(!Fault::Revoked.covered_by(flags));
            assert!(!Fault::RevocationFailed.covered_by(flags));
            assert!(!Fault::Other.covered_by(flags));
        }
    }

    #[test]
    fn faults_map_to_policy_hresults() {
        let cases = [
            (Fault::Cn, 0x8007_2F06),
            (Fault::Date, 0x8007_2F05),
            (Fault::UnknownCa, 0x8007_2F0D),
            (Fault::Usage, 0x8007_2F93),
            (Fault::Revoked, 0x8007_2F8A),
            (Fault::RevocationFailed, 0x8007_2F19),
            (Fault::Other, 0x8007_2F8F),
        ];
        for (fault, hr) in cases {
            assert_eq!(fault.to_error("x").hresult().0, hr, "{fault:?}");
        }
    }
}
