//! native-tls handshake errors → policy errors.
//!
//! native-tls exposes no typed verification result on any platform, so the
//! only route is its error text (`docs/spec/tls.md` §1.3):
//! - Linux and other OpenSSL platforms: the `Debug` form carries
//!   `X509VerifyResult { code: N, … }`; `N` is mapped with the same table as
//!   the openssl backend ([`from_x509_code`]).
//! - Windows (SChannel): an `io::Error` made from an HRESULT, visible only as
//!   `(os error N)` in the text.
//! - macOS (Security.framework): an `OSStatus`, visible as `code: N` in the
//!   `Debug` form.
//!
//! Only the Linux route is exercised by this crate's tests; the Windows and
//! macOS parsers are unit-tested on sample text but have never seen a real
//! handshake. A socket error under the handshake (reset, broken pipe) is a
//! transient [`BitsError::ConnectionReset`]; whatever else cannot be
//! classified is [`BitsError::SecureFailure`] (`0x80072F8F`): a failure is
//! never turned into a success, only possibly into a less specific error.

use bits_core::BitsError;

/// Classifies a failed native-tls handshake; `offered` says whether the
/// job's client certificate was given to it.
pub(crate) fn classify(err: &native_tls::Error, offered: bool) -> BitsError {
    let debug = format!("{err:?}");
    let display = err.to_string();
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let found = from_openssl_debug(&debug);
    #[cfg(target_os = "windows")]
    let found = from_windows_text(&display).or_else(|| from_windows_text(&debug));
    #[cfg(target_os = "macos")]
    let found = from_macos_debug(&debug);
    found
        .or_else(|| crate::client_cert::classify_alert(&format!("{display} {debug}"), offered))
        .or_else(|| socket_error(err))
        .unwrap_or(BitsError::SecureFailure { reason: display })
}

/// An OS socket error (a reset, a broken pipe) under the handshake is a
/// transient [`BitsError::ConnectionReset`], as the openssl backend and
/// bits-http classify it; the retry verifies afresh. Found through the typed
/// `source()` chain (on OpenSSL platforms native-tls exposes the
/// `io::Error` there), not the text.
fn socket_error(err: &(dyn std::error::Error + 'static)) -> Option<BitsError> {
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(BitsError::ConnectionReset {
                reason: format!("during the TLS handshake: {io}"),
            });
        }
        cur = e.source();
    }
    None
}

/// The integer right after `marker` in `text`, if any.
fn number_after(text: &str, marker: &str) -> Option<i64> {
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let end = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

/// OpenSSL: parses `X509VerifyResult { code: N` out of the error's `Debug`
/// text. Code 0 (`X509_V_OK`) means the failure was not a verification
/// failure: `None`.
#[cfg_attr(any(target_os = "macos", target_os = "windows"), allow(dead_code))]
pub(crate) fn from_openssl_debug(debug: &str) -> Option<BitsError> {
    let code = number_after(debug, "X509VerifyResult { code: ")?;
    let code = i32::try_from(code).ok()?;
    (code != 0).then(|| from_x509_code(code, debug))
}

/// The one table from OpenSSL's `X509_V_ERR_*` codes (`openssl/x509_vfy.h`,
/// described in `man 1 openssl-verify`, "Diagnostics") to policy errors,
/// as `docs/spec/tls.md` §2.2 lays it out.
pub(crate) fn from_x509_code(code: i32, text: &str) -> BitsError {
    match code {
        // X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
        9 | 10 => BitsError::CertDateInvalid,
        // X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        62 | 64 => BitsError::CertCnInvalid,
        // UNABLE_TO_GET_ISSUER_CERT, DEPTH_ZERO_SELF_SIGNED_CERT,
        // SELF_SIGNED_CERT_IN_CHAIN, UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        // UNABLE_TO_VERIFY_LEAF_SIGNATURE
        2 | 18 | 19 | 20 | 21 => BitsError::UnknownCa,
        // X509_V_ERR_INVALID_PURPOSE (sslserver purpose: EKU and keyUsage)
        26 => BitsError::CertWrongUsage,
        // X509_V_ERR_CERT_REVOKED
        23 => BitsError::CertRevoked,
        // UNABLE_TO_GET_CRL, CRL_NOT_YET_VALID, CRL_HAS_EXPIRED (CRL dates
        // are not certificate dates), and the CRL issuer / signature /
        // scope / path / field errors: 33 UNABLE_TO_GET_CRL_ISSUER,
        // 8 CRL_SIGNATURE_FAILURE, 5 UNABLE_TO_DECRYPT_CRL_SIGNATURE,
        // 35 KEYUSAGE_NO_CRL_SIGN, 44 DIFFERENT_CRL_SCOPE, 54 CRL_PATH_VALIDATION_ERROR,
        // 15/16 ERROR_IN_CRL_LAST/NEXT_UPDATE_FIELD, 36 UNHANDLED_CRITICAL_CRL_EXTENSION
        3 | 11 | 12 | 33 | 8 | 5 | 35 | 44 | 54 | 15 | 16 | 36 => BitsError::CertRevocationFailed {
            reason: format!("OpenSSL verify error {code}"),
        },
        // Anything else (7 bad signature, 24/79 invalid CA, 25 path length,
        // 34 unhandled critical extension, weak keys or digests…).
        _ => BitsError::SecureFailure {
            reason: format!("OpenSSL verify error {code}: {text}"),
        },
    }
}

/// Windows (SChannel): the HRESULT in `(os error N)`, as the Windows SDK's
/// `winerror.h` names it. Never run on Windows by these tests.
#[cfg_attr(not(target_os = "windows"), allow(dead_code))]
pub(crate) fn from_windows_text(text: &str) -> Option<BitsError> {
    let code = number_after(text, "os error ")?;
    // HRESULTs print as negative i32s; take the 32-bit pattern.
    let hr = code as i32 as u32;
    Some(match hr {
        // CERT_E_EXPIRED, SEC_E_CERT_EXPIRED
        0x800B_0101 | 0x8009_0328 => BitsError::CertDateInvalid,
        // CERT_E_CN_NO_MATCH, SEC_E_WRONG_PRINCIPAL
        0x800B_010F | 0x8009_0322 => BitsError::CertCnInvalid,
        // CERT_E_UNTRUSTEDROOT, CERT_E_CHAINING, CERT_E_UNTRUSTEDCA, SEC_E_UNTRUSTED_ROOT
        0x800B_0109 | 0x800B_010A | 0x800B_0112 | 0x8009_0325 => BitsError::UnknownCa,
        // CERT_E_WRONG_USAGE
        0x800B_0110 => BitsError::CertWrongUsage,
        // CRYPT_E_REVOKED
        0x8009_2010 => BitsError::CertRevoked,
        // CRYPT_E_NO_REVOCATION_CHECK, CRYPT_E_REVOCATION_OFFLINE
        0x8009_2012 | 0x8009_2013 => BitsError::CertRevocationFailed {
            reason: format!("SChannel 0x{hr:08X}"),
        },
        _ => return None,
    })
}

/// macOS (Security.framework): the `OSStatus` in `code: N` of the `Debug`
/// text, as `SecBase.h` / `SecureTransport.h` name it. Never run on macOS
/// by these tests. The generic "not trusted" (-67843) is ambiguous and left
/// unclassified.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) fn from_macos_debug(debug: &str) -> Option<BitsError> {
    let code = number_after(debug, "code: ")?;
    Some(match code {
        // errSSLCertExpired, errSSLCertNotYetValid, errSecCertificateExpired,
        // errSecCertificateNotValidYet
        -9814 | -9815 | -67818 | -67819 => BitsError::CertDateInvalid,
        // errSSLHostNameMismatch, errSecHostNameMismatch
        -9843 | -67602 => BitsError::CertCnInvalid,
        // errSSLUnknownRootCert, errSSLNoRootCert
        -9812 | -9813 => BitsError::UnknownCa,
        // errSecInvalidExtendedKeyUsage
        -67609 => BitsError::CertWrongUsage,
        // errSecCertificateRevoked
        -67820 => BitsError::CertRevoked,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hr(e: Option<BitsError>) -> Option<u32> {
        e.map(|e| e.hresult().0)
    }

    /// The real Debug text of a native-tls 0.2 error on OpenSSL 3, from the
    /// probe of `docs/spec/tls.md` §1.3, with the code replaced.
    fn openssl_debug(code: i32) -> String {
        format!(
            "Error(Ssl(Error {{ code: ErrorCode(1), cause: Some(Ssl(ErrorStack([Error {{ code: 167772294, \
             library: \"SSL routines\", function: \"tls_post_process_server_certificate\", reason: \
             \"certificate verify failed\", file: \"../ssl/statem/statem_clnt.c\", line: 1889 }}]))) }}, \
             X509VerifyResult {{ code: {code}, error: \"whatever\" }}))"
        )
    }

    #[test]
    fn openssl_codes_map_as_the_openssl_backend_does() {
        let table: &[(&[i32], u32)] = &[
            (&[9, 10], 0x8007_2F05),
            (&[62, 64], 0x8007_2F06),
            (&[2, 18, 19, 20, 21], 0x8007_2F0D),
            (&[26], 0x8007_2F93),
            (&[23], 0x8007_2F8A),
            (&[3, 11, 12, 33, 8, 5, 35, 44, 54, 15, 16, 36], 0x8007_2F19),
            (&[7, 24, 25, 34, 79, 66, 1, 999], 0x8007_2F8F),
        ];
        for (codes, expected) in table {
            for code in *codes {
                assert_eq!(
                    hr(from_openssl_debug(&openssl_debug(*code))),
                    Some(*expected),
                    "code {code}"
                );
            }
        }
    }

    #[test]
    fn openssl_without_a_verify_failure_is_unclassified() {
        assert_eq!(hr(from_openssl_debug(&openssl_debug(0))), None);
        assert_eq!(hr(from_openssl_debug("Normal(ErrorStack([]))")), None);
        assert_eq!(hr(from_openssl_debug("X509VerifyResult { code: x")), None);
        assert_eq!(
            hr(from_openssl_debug("X509VerifyResult { code: 99999999999")),
            None
        );
    }

    #[test]
    fn windows_hresults_in_text() {
        let check = |code: u32, expected: Option<u32>| {
            let text = format!("A certificate problem (os error {})", code as i32);
            assert_eq!(hr(from_windows_text(&text)), expected, "0x{code:08X}");
        };
        check(0x800B_0101, Some(0x8007_2F05));
        check(0x8009_0328, Some(0x8007_2F05));
        check(0x800B_010F, Some(0x8007_2F06));
        check(0x800B_0109, Some(0x8007_2F0D));
        check(0x800B_010A, Some(0x8007_2F0D));
        check(0x800B_0110, Some(0x8007_2F93));
        check(0x8009_2010, Some(0x8007_2F8A));
        check(0x8009_2013, Some(0x8007_2F19));
        check(0x8009_6004, None);
        assert_eq!(hr(from_windows_text("no code here")), None);
    }

    #[test]
    fn macos_osstatus_in_debug() {
        let check = |code: i64, expected: Option<u32>| {
            let text = format!("Error {{ code: {code}, message: \"x\" }}");
            assert_eq!(hr(from_macos_debug(&text)), expected, "{code}");
        };
        check(-9814, Some(0x8007_2F05));
        check(-67818, Some(0x8007_2F05));
        check(-9843, Some(0x8007_2F06));
        check(-9812, Some(0x8007_2F0D));
        check(-67609, Some(0x8007_2F93));
        check(-67820, Some(0x8007_2F8A));
        check(-67843, None);
    }
}
