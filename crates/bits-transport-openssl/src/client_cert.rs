//! Client certificates (`docs/spec/http-options.md`, "Client
//! certificate"), OpenSSL's part: parsing the files
//! `bits_http::client_cert::read` returns (PEM or PKCS#12), and telling
//! from a failed handshake or read whether the server demanded a
//! certificate or refused the one offered.
//!
//! What loads:
//! - PEM: the first `CERTIFICATE` block is the leaf, the others its chain
//!   (sent as they come); the key in the same file or in its own: PKCS#8
//!   (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`), SEC1
//!   (`BEGIN EC PRIVATE KEY`), or encrypted (`BEGIN ENCRYPTED PRIVATE
//!   KEY`, or a legacy `Proc-Type: 4,ENCRYPTED` block) opened with the
//!   job's password. Any key type OpenSSL signs with (RSA, ECDSA, Ed25519).
//! - PKCS#12 with the job's password (none: the empty one), with the
//!   algorithms of OpenSSL's default provider (PBES2 / AES, PBKDF2, SHA-2
//!   MACs, and 3DES); a file needing the legacy provider (RC2-40, the
//!   pre-2010 default) is `E_NOTIMPL`.

// Reason: one `SSL_ctrl` call (`SSL_get0_certificate_types`, a macro
// rust-openssl does not bind) to learn whether a TLS 1.2 server sent a
// CertificateRequest.
#![allow(unsafe_code)]

use std::io;
use std::ptr;

use bits_core::{BitsError, ClientCertificateFile};
use bits_http::client_cert::{ClientCertFiles, Format};
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::ssl::SslRef;
use openssl::x509::X509;

/// A client certificate ready for a handshake: the leaf, the chain to
/// send after it, the key.
pub(crate) struct Identity {
    pub(crate) leaf: X509,
    pub(crate) chain: Vec<X509>,
    pub(crate) key: PKey<Private>,
}

fn not_found(file: &ClientCertificateFile, what: impl std::fmt::Display) -> BitsError {
    BitsError::ClientCertNotFound {
        what: format!("{}: {what}", file.path.display()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parses what `bits_http::client_cert::read` returned for `file`.
///
/// # Errors
/// `CRYPT_E_NOT_FOUND` for no certificate, no key, or a key that is not
/// the leaf's; `ERROR_INVALID_PASSWORD` when the password does not open
/// it; `E_NOTIMPL` for a PKCS#12 OpenSSL's default provider cannot read.
pub(crate) fn parse(file: &ClientCertificateFile, files: &ClientCertFiles) -> Result<Identity, BitsError> {
    let identity = match files.format {
        Format::Pem => parse_pem(file, files)?,
        Format::Pkcs12 => parse_pkcs12(file, &files.cert)?,
    };
    let matches = identity
        .leaf
        .public_key()
        .is_ok_and(|public| public.public_eq(&identity.key));
    if !matches {
        return Err(not_found(file, "the private key is not the certificate's"));
    }
    Ok(identity)
}

fn parse_pem(file: &ClientCertificateFile, files: &ClientCertFiles) -> Result<Identity, BitsError> {
    let mut certs = X509::stack_from_pem(&files.cert)
        .map_err(|e| not_found(file, format!("no PEM certificate ({e})")))?
        .into_iter();
    let leaf = certs
        .next()
        .ok_or_else(|| not_found(file, "no CERTIFICATE block"))?;
    let chain: Vec<X509> = certs.collect();
    let (key_path, key_pem) = match (&file.key, &files.key) {
        (Some(path), Some(bytes)) => (path.as_path(), bytes.as_slice()),
        _ => (file.path.as_path(), files.cert.as_slice()),
    };
    if !contains(key_pem, b"PRIVATE KEY-----") {
        return Err(BitsError::ClientCertNotFound {
            what: format!("{}: no PRIVATE KEY block", key_path.display()),
        });
    }
    let encrypted = contains(key_pem, b"ENCRYPTED");
    let password = file.password.as_ref().map_or("", |p| p.expose());
    // Never the default callback: it would prompt on a terminal.
    let key = PKey::private_key_from_pem_passphrase(key_pem, password.as_bytes()).map_err(|e| {
        if encrypted {
            BitsError::InvalidPassword {
                path: key_path.display().to_string(),
            }
        } else {
            BitsError::ClientCertNotFound {
                what: format!("{}: the private key does not parse ({e})", key_path.display()),
            }
        }
    })?;
    Ok(Identity { leaf, chain, key })
}

/// `PKCS12_R_MAC_VERIFY_FAILURE`: the password does not open it.
const PKCS12_R_MAC_VERIFY_FAILURE: i32 = 113;
/// `ERR_LIB_PKCS12`.
const ERR_LIB_PKCS12: i32 = 35;
/// `ERR_LIB_EVP`.
const ERR_LIB_EVP: i32 = 6;
/// `EVP_R_UNSUPPORTED_ALGORITHM`.
const EVP_R_UNSUPPORTED_ALGORITHM: i32 = 156;
/// `ERR_R_UNSUPPORTED` (`268 | ERR_RFLAG_COMMON`): what a fetch of a
/// legacy-provider algorithm such as RC2-40 fails with.
const ERR_R_UNSUPPORTED: i32 = 0x8010C;

fn parse_pkcs12(file: &ClientCertificateFile, der: &[u8]) -> Result<Identity, BitsError> {
    let p12 = Pkcs12::from_der(der).map_err(|e| not_found(file, format!("not PKCS#12 ({e})")))?;
    let password = file.password.as_ref().map_or("", |p| p.expose());
    let parsed = p12.parse2(password).map_err(|e| pkcs12_error(file, &e))?;
    let leaf = parsed
        .cert
        .ok_or_else(|| not_found(file, "the PKCS#12 holds no certificate with its key"))?;
    let key = parsed
        .pkey
        .ok_or_else(|| not_found(file, "the PKCS#12 holds no private key"))?;
    let chain = parsed.ca.map(|s| s.into_iter().collect()).unwrap_or_default();
    Ok(Identity { leaf, chain, key })
}

fn pkcs12_error(file: &ClientCertificateFile, e: &ErrorStack) -> BitsError {
    let errors = e.errors();
    let mac = errors
        .iter()
        .any(|e| e.library_code() == ERR_LIB_PKCS12 && e.reason_code() == PKCS12_R_MAC_VERIFY_FAILURE);
    if mac {
        return BitsError::InvalidPassword {
            path: file.path.display().to_string(),
        };
    }
    let unsupported = errors.iter().any(|e| {
        e.reason_code() == ERR_R_UNSUPPORTED
            || (e.library_code() == ERR_LIB_EVP && e.reason_code() == EVP_R_UNSUPPORTED_ALGORITHM)
    });
    if unsupported {
        return BitsError::NotImplemented {
            what: format!(
                "{}: a PKCS#12 encrypted with an algorithm OpenSSL no longer loads by default (RC2 or DES of old exports; re-export it with AES: {e})",
                file.path.display()
            ),
        };
    }
    not_found(file, format!("the PKCS#12 does not open ({e})"))
}

/// `SSL_AD_REASON_OFFSET`: OpenSSL's reason code for a received alert is
/// this plus the alert's number.
const ALERT: i32 = openssl_sys::SSL_AD_REASON_OFFSET;
/// `ERR_LIB_SSL`.
const ERR_LIB_SSL: i32 = 20;
/// TLS 1.3 `certificate_required`.
const CERTIFICATE_REQUIRED: i32 = 116;
/// `handshake_failure`: what OpenSSL (and others) send a TLS 1.2 client
/// that answered a CertificateRequest with no certificate.
const HANDSHAKE_FAILURE: i32 = 40;
/// The alerts a server sends about the client's certificate:
/// `bad_certificate`, `unsupported_certificate`, `certificate_revoked`,
/// `certificate_expired`, `certificate_unknown`, `unknown_ca`,
/// `access_denied`, `decrypt_error` (its signature).
const CERT_ALERTS: [i32; 8] = [42, 43, 44, 45, 46, 48, 49, 51];

/// The alert the server sent, from OpenSSL's error queue.
fn received_alert(stack: &ErrorStack) -> Option<i32> {
    stack
        .errors()
        .iter()
        .filter(|e| e.library_code() == ERR_LIB_SSL)
        .map(|e| e.reason_code() - ALERT)
        .find(|alert| (0..256).contains(alert))
}

fn alert_name(alert: i32) -> &'static str {
    match alert {
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        49 => "access_denied",
        51 => "decrypt_error",
        116 => "certificate_required",
        _ => "alert",
    }
}

/// What a failed handshake means for client certificates, if anything:
/// - `certificate_required` (TLS 1.3) → `ClientCertNeeded`;
/// - after a TLS 1.2 CertificateRequest we answered with nothing,
///   `handshake_failure` (OpenSSL, nginx) or a certificate alert
///   (`bad_certificate`: Go) → `ClientCertNeeded`;
/// - a certificate alert while we offered one, or `handshake_failure`
///   after the server asked for it → `SecureFailure` saying the server
///   refused it.
///
/// A `handshake_failure` before any CertificateRequest (no common cipher,
/// …) is none of these: the transport's `SecureFailure`.
pub(crate) fn handshake_error(ssl: &SslRef, stack: &ErrorStack, offered: bool) -> Option<BitsError> {
    let alert = received_alert(stack)?;
    if alert == CERTIFICATE_REQUIRED {
        return Some(BitsError::ClientCertNeeded);
    }
    let about_certificate = CERT_ALERTS.contains(&alert);
    let asked = || tls12_certificate_requested(ssl);
    if !offered && (about_certificate || alert == HANDSHAKE_FAILURE) && asked() {
        return Some(BitsError::ClientCertNeeded);
    }
    if offered && (about_certificate || (alert == HANDSHAKE_FAILURE && asked())) {
        return Some(refused(alert));
    }
    None
}

fn refused(alert: i32) -> BitsError {
    BitsError::SecureFailure {
        reason: format!(
            "the server refused the client certificate (TLS alert {alert} {})",
            alert_name(alert)
        ),
    }
}

/// [`bits_http::TlsConnect::classify_io`]: with TLS 1.3 the server judges
/// the client's certificate after the client's handshake completed, so its
/// refusal is an alert on the first read: `certificate_required` →
/// `ClientCertNeeded`, a certificate alert → `SecureFailure`. Anything
/// else is the transport's to classify.
pub(crate) fn classify_io(e: &io::Error) -> Option<BitsError> {
    let ssl_error = e.get_ref()?.downcast_ref::<openssl::ssl::Error>()?;
    let alert = received_alert(ssl_error.ssl_error()?)?;
    if alert == CERTIFICATE_REQUIRED {
        return Some(BitsError::ClientCertNeeded);
    }
    CERT_ALERTS.contains(&alert).then(|| refused(alert))
}

/// `SSL_CTRL_GET_CLIENT_CERT_TYPES`.
const SSL_CTRL_GET_CLIENT_CERT_TYPES: i32 = 103;

/// Whether the server sent a TLS 1.2 CertificateRequest on this
/// connection (`SSL_get0_certificate_types` is non-zero only then: TLS 1.3
/// requests carry no certificate types).
fn tls12_certificate_requested(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is a live SSL borrowed for the call; with a null parg
    // SSL_CTRL_GET_CLIENT_CERT_TYPES only reads the connection's state
    // (ssl3_ctrl: `if (!s->s3.tmp.cert_req) return 0; ... return ctype_len`)
    // and writes nothing.
    let n =
        unsafe { openssl_sys::SSL_ctrl(ssl.as_ptr(), SSL_CTRL_GET_CLIENT_CERT_TYPES, 0, ptr::null_mut()) };
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_of_a_connected_stream_are_classified_only_when_about_certificates() {
        assert!(classify_io(&io::Error::other("plain")).is_none());
        assert!(classify_io(&io::ErrorKind::ConnectionReset.into()).is_none());
        assert_eq!(alert_name(116), "certificate_required");
        assert_eq!(refused(48).hresult().0, 0x8007_2F8F);
        assert!(refused(48).to_string().contains("unknown_ca"));
    }
}
