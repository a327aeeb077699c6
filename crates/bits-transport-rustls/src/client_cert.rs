//! Client certificates (`docs/spec/http-options.md`, "Client certificate")
//! on rustls: PEM files only, read and checked when set on a job and again
//! at every connection, offered to any server that asks, and the server's
//! answer classified.
//!
//! - **Formats.** A PEM file holding the certificate, optionally its chain
//!   after it, and the private key (PKCS#8 `PRIVATE KEY`, PKCS#1
//!   `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`), or the key in a PEM file
//!   of its own. Keys rustls' ring provider signs with: RSA (2048–8192
//!   bits), ECDSA P-256 and P-384, Ed25519.
//! - **Refused with `E_NOTIMPL`:** PKCS#12 (rustls reads no PKCS#12 and no
//!   well-kept pure-Rust PKCS#12 reader is among this project's
//!   dependencies), encrypted PEM keys (rustls-pemfile cannot decrypt
//!   them), and key types ring cannot sign with.
//! - **Key and certificate must match:** rustls' `CertifiedKey::keys_match`
//!   compares the key's SubjectPublicKeyInfo with the leaf's;
//!   `CRYPT_E_NOT_FOUND` when they differ.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile};
use bits_http::client_cert::{self, Format};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, InconsistentKeys, SignatureScheme};
use rustls_pemfile::Item;

/// Reads and checks `file` as it is set on a job: what the job stores.
///
/// # Errors
/// As [`bits_http::TlsBackend::load_client_certificate`]; `E_NOTIMPL` for
/// PKCS#12, an encrypted key, a key ring cannot sign with.
pub(crate) fn load_for_job(
    file: &ClientCertificateFile,
    provider: &CryptoProvider,
) -> Result<ClientCertificate, BitsError> {
    let key = load(file, provider)?;
    Ok(client_cert::chosen(file, leaf(&key)))
}

/// At connect time: the files read and checked again, and the leaf still
/// the one the job chose.
///
/// # Errors
/// As [`load_for_job`]; `CRYPT_E_NOT_FOUND` when the leaf changed.
pub(crate) fn load_for_connect(
    stored: &ClientCertificate,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, BitsError> {
    let key = load(&stored.file, provider)?;
    client_cert::check_unchanged(stored, leaf(&key))?;
    Ok(Arc::new(key))
}

fn leaf(key: &CertifiedKey) -> &[u8] {
    // `load` never builds a CertifiedKey without a certificate.
    key.cert.first().map_or(&[], |c| c.as_ref())
}

/// The certificate chain and signing key of `file`.
fn load(file: &ClientCertificateFile, provider: &CryptoProvider) -> Result<CertifiedKey, BitsError> {
    let files = client_cert::read(file)?;
    let path = file.path.display();
    if files.format == Format::Pkcs12 {
        return Err(BitsError::NotImplemented {
            what: format!(
                "client certificate {path} is PKCS#12, which the rustls backend does not read \
                 (rustls has no PKCS#12 reader, and no well-kept pure-Rust one is among this \
                 project's dependencies): convert it to PEM with \
                 `openssl pkcs12 -in {path} -nodes -out client.pem`, or use the openssl backend"
            ),
        });
    }
    let (certs, cert_keys) = pem_items(&files.cert, &path.to_string())?;
    let key_path = file.key.as_ref().map(|k| k.display().to_string());
    let keys = match (&files.key, &key_path) {
        (Some(bytes), Some(kp)) => pem_items(bytes, kp)?.1,
        _ => cert_keys,
    };
    let key_where = key_path.unwrap_or_else(|| path.to_string());
    if certs.is_empty() {
        return Err(BitsError::ClientCertNotFound {
            what: format!("no CERTIFICATE in {path}"),
        });
    }
    let key = match <[PrivateKeyDer<'static>; 1]>::try_from(keys) {
        Ok([key]) => key,
        Err(keys) if keys.is_empty() => {
            return Err(BitsError::ClientCertNotFound {
                what: format!(
                    "no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in {key_where}"
                ),
            })
        }
        Err(keys) => {
            return Err(BitsError::ClientCertNotFound {
                what: format!("{} private keys in {key_where}: give exactly one", keys.len()),
            })
        }
    };
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| BitsError::NotImplemented {
            what: format!(
                "the private key in {key_where} is not one the rustls backend signs with \
                 (RSA 2048-8192 bits, ECDSA P-256/P-384, Ed25519): {e}"
            ),
        })?;
    let key = CertifiedKey::new(certs, signer);
    match key.keys_match() {
        Ok(()) => Ok(key),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(BitsError::ClientCertNotFound {
                what: format!("the private key in {key_where} is not the key of the certificate in {path}"),
            })
        }
        // ring's keys all tell their public key; a key that does not
        // cannot be shown to match, so it is not used.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Err(BitsError::NotImplemented {
            what: format!("cannot check that the private key in {key_where} matches {path}"),
        }),
        Err(e) => Err(BitsError::ClientCertNotFound {
            what: format!("the certificate in {path} cannot be parsed: {e}"),
        }),
    }
}

/// The certificates (in file order) and private keys of a PEM file.
fn pem_items(
    bytes: &[u8],
    path: &str,
) -> Result<(Vec<CertificateDer<'static>>, Vec<PrivateKeyDer<'static>>), BitsError> {
    if contains(bytes, b"ENCRYPTED PRIVATE KEY-----") || contains(bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(BitsError::NotImplemented {
            what: format!(
                "{path} holds an encrypted private key, which the rustls backend cannot decrypt: \
                 decrypt it (`openssl pkey -in {path} -out key.pem`, then chmod 600 key.pem) \
                 or use the openssl backend"
            ),
        });
    }
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for item in rustls_pemfile::read_all(&mut &bytes[..]) {
        match item {
            Ok(Item::X509Certificate(c)) => certs.push(c),
            Ok(Item::Pkcs8Key(k)) => keys.push(PrivateKeyDer::Pkcs8(k)),
            Ok(Item::Pkcs1Key(k)) => keys.push(PrivateKeyDer::Pkcs1(k)),
            Ok(Item::Sec1Key(k)) => keys.push(PrivateKeyDer::Sec1(k)),
            Ok(_) => {}
            Err(e) => {
                return Err(BitsError::ClientCertNotFound {
                    what: format!("{path} is not a PEM file rustls can read: {e}"),
                })
            }
        }
    }
    Ok((certs, keys))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What one handshake's client side saw: whether the server asked for a
/// certificate, and whether one was sent.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientAuthRecord {
    asked: Arc<AtomicBool>,
    offered: Arc<AtomicBool>,
}

impl ClientAuthRecord {
    /// Whether the server sent a CertificateRequest.
    pub(crate) fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Whether a certificate was sent in answer.
    pub(crate) fn offered(&self) -> bool {
        self.offered.load(Ordering::Relaxed)
    }
}

/// The client side of one handshake: the job's certificate (or none),
/// offered to any server that asks (as BITS and curl do), recording what
/// happened for the classification.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    pub(crate) key: Option<Arc<CertifiedKey>>,
    pub(crate) record: ClientAuthRecord,
}

impl ResolvesClientCert for ClientAuth {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.record.asked.store(true, Ordering::Relaxed);
        let key = self.key.as_ref()?;
        // rustls sends an empty Certificate when the key can sign with
        // none of the server's schemes.
        if key.key.choose_scheme(sigschemes).is_some() {
            self.record.offered.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(key))
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// The error a server's alert comes to when it concerns the client
/// certificate: `ClientCertNeeded` when the server asked for one and got
/// none (TLS 1.3 `certificate_required`; TLS 1.2 servers send
/// `handshake_failure` or a certificate alert), `SecureFailure` naming the
/// refusal when it rejected the one offered. `None` for any other failure.
pub(crate) fn classify_alert(
    err: &rustls::Error,
    asked: bool,
    offered: bool,
    subject: Option<&str>,
) -> Option<BitsError> {
    let rustls::Error::AlertReceived(alert) = err else {
        return None;
    };
    let about_client_cert = matches!(
        alert,
        AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
    ) || refuses_a_certificate(alert);
    if !about_client_cert {
        return None;
    }
    if !offered && (asked || *alert == AlertDescription::CertificateRequired) {
        return Some(BitsError::ClientCertNeeded);
    }
    if offered {
        return Some(BitsError::SecureFailure {
            reason: format!(
                "the server refused the client certificate {} (alert {alert:?})",
                subject.unwrap_or("?")
            ),
        });
    }
    None
}

/// A read or write of a connected stream that failed on the server's
/// alert about the client certificate: with TLS 1.3 the server judges the
/// client's certificate after the client's handshake is complete, so its
/// refusal arrives on the first read of the response. After the handshake
/// such an alert can concern nothing else. `certificate_required` →
/// `ClientCertNeeded`; a certificate alert → `SecureFailure`. `None` for
/// any other error.
pub(crate) fn classify_io(e: &std::io::Error) -> Option<BitsError> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::AlertReceived(alert) = tls else {
        return None;
    };
    match alert {
        AlertDescription::CertificateRequired => Some(BitsError::ClientCertNeeded),
        a if refuses_a_certificate(a) => Some(BitsError::SecureFailure {
            reason: format!("the server refused the client certificate (alert {alert:?})"),
        }),
        _ => None,
    }
}

/// The alerts a server sends when it refuses the certificate it was given.
fn refuses_a_certificate(alert: &AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_after_the_handshake() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let hr = |e: Option<BitsError>| e.map(|e| e.hresult().0);
        let alert = |a| io(rustls::Error::AlertReceived(a));
        assert_eq!(
            hr(classify_io(&alert(AlertDescription::CertificateRequired))),
            Some(0x8007_2F0C)
        );
        assert_eq!(
            hr(classify_io(&alert(AlertDescription::UnknownCA))),
            Some(0x8007_2F8F)
        );
        assert_eq!(
            hr(classify_io(&alert(AlertDescription::BadCertificate))),
            Some(0x8007_2F8F)
        );
        assert_eq!(hr(classify_io(&alert(AlertDescription::CloseNotify))), None);
        assert_eq!(hr(classify_io(&io(rustls::Error::DecryptError))), None);
        assert_eq!(hr(classify_io(&std::io::ErrorKind::ConnectionReset.into())), None);
    }

    #[test]
    fn alerts_about_the_client_certificate() {
        let alert = |a| rustls::Error::AlertReceived(a);
        let hr = |e: Option<BitsError>| e.map(|e| e.hresult().0);
        // Asked, none sent: needed, whatever the TLS version's alert.
        for a in [
            AlertDescription::CertificateRequired,
            AlertDescription::HandshakeFailure,
        ] {
            assert_eq!(
                hr(classify_alert(&alert(a), true, false, None)),
                Some(0x8007_2F0C)
            );
        }
        // TLS 1.3's alert says so even when the request went unseen.
        assert_eq!(
            hr(classify_alert(
                &alert(AlertDescription::CertificateRequired),
                false,
                false,
                None
            )),
            Some(0x8007_2F0C)
        );
        // Ours refused: a secure failure naming it.
        for a in [AlertDescription::UnknownCA, AlertDescription::BadCertificate] {
            let e = classify_alert(&alert(a), true, true, Some("CN=me")).unwrap();
            assert_eq!(e.hresult().0, 0x8007_2F8F);
            assert!(e.to_string().contains("CN=me"), "{e}");
        }
        // Not about client certificates.
        assert!(classify_alert(&alert(AlertDescription::ProtocolVersion), true, false, None).is_none());
        assert!(classify_alert(&alert(AlertDescription::HandshakeFailure), false, false, None).is_none());
        assert!(classify_alert(&rustls::Error::DecryptError, true, false, None).is_none());
    }
}
