//! Client certificates (`docs/spec/http-options.md`, "Client certificate")
//! on native-tls: what it can load, read when set on a job and again at
//! every connection, and the server's answer classified.
//!
//! - **PEM:** the certificate (and its chain after it) with a PKCS#8 key
//!   (`PRIVATE KEY`), in the same file or one of its own:
//!   `Identity::from_pkcs8`. native-tls takes no other key form, so a
//!   PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or encrypted key
//!   is refused with `E_NOTIMPL`, saying how to convert it
//!   (`openssl pkcs8 -topk8 -nocrypt`).
//! - **PKCS#12:** refused with `E_NOTIMPL`. native-tls would open it
//!   (`Identity::from_pkcs12`), but it never tells which certificate is
//!   inside, and the job must store that certificate's SHA-1 thumbprint
//!   (BITS selects a certificate by it) and check it again at every
//!   connection. Reading it otherwise needs a second PKCS#12 reader: this
//!   crate must not use OpenSSL directly (it is the platform's TLS), and
//!   the one pure-Rust reader (`p12-keystore`) pulls in pre-release
//!   RustCrypto crates in its current version (its last release on stable
//!   ones, 29 crates). Convert to PEM
//!   (`openssl pkcs12 -in id.p12 -nodes -out id.pem`) or use the openssl
//!   backend.
//! - **Key and certificate must match:** a connector is built with the
//!   identity at set time; the TLS library refuses a key that is not the
//!   certificate's (OpenSSL: "key values mismatch") → `CRYPT_E_NOT_FOUND`.

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile};
use bits_http::client_cert::{self, Format};

/// An identity native-tls can present, and its leaf (DER).
pub(crate) struct Loaded {
    pub(crate) identity: native_tls::Identity,
    pub(crate) leaf: Vec<u8>,
}

/// Reads and checks `file` as it is set on a job: what the job stores.
///
/// # Errors
/// As [`bits_http::TlsBackend::load_client_certificate`]; `E_NOTIMPL` for
/// PKCS#12 and for a key that is not plain PKCS#8.
pub(crate) fn load_for_job(file: &ClientCertificateFile) -> Result<ClientCertificate, BitsError> {
    let loaded = load(file)?;
    // The TLS library checks the key against the certificate when it is
    // given both.
    let mut b = native_tls::TlsConnector::builder();
    b.identity(loaded.identity);
    b.build().map_err(|e| mismatch(file, &e))?;
    Ok(client_cert::chosen(file, &loaded.leaf))
}

/// At connect time: the files read and checked again, the leaf still the
/// one the job chose.
///
/// # Errors
/// As [`load_for_job`]; `CRYPT_E_NOT_FOUND` when the leaf changed.
pub(crate) fn load_for_connect(stored: &ClientCertificate) -> Result<native_tls::Identity, BitsError> {
    let loaded = load(&stored.file)?;
    client_cert::check_unchanged(stored, &loaded.leaf)?;
    Ok(loaded.identity)
}

/// A connector that cannot be built with the identity: on OpenSSL the key
/// is not the certificate's ("key values mismatch").
pub(crate) fn mismatch(file: &ClientCertificateFile, e: &native_tls::Error) -> BitsError {
    let key = file.key.as_ref().unwrap_or(&file.path);
    BitsError::ClientCertNotFound {
        what: format!(
            "the private key in {} cannot be used with the certificate in {}: {e}",
            key.display(),
            file.path.display()
        ),
    }
}

fn load(file: &ClientCertificateFile) -> Result<Loaded, BitsError> {
    let files = client_cert::read(file)?;
    let path = file.path.display().to_string();
    if files.format == Format::Pkcs12 {
        return Err(BitsError::NotImplemented {
            what: format!(
                "client certificate {path} is PKCS#12, which the native backend does not load: \
                 native-tls never tells which certificate a PKCS#12 holds, and the job must keep \
                 its thumbprint; convert it to PEM with \
                 `openssl pkcs12 -in {path} -nodes -out client.pem` (then chmod 600 client.pem), \
                 or use the openssl backend"
            ),
        });
    }
    let cert_blocks = pem_blocks(&files.cert);
    let certs: Vec<&Block<'_>> = cert_blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
    let Some(first) = certs.first() else {
        return Err(BitsError::ClientCertNotFound {
            what: format!("no CERTIFICATE in {path}"),
        });
    };
    let leaf = native_tls::Certificate::from_pem(first.text)
        .and_then(|c| c.to_der())
        .map_err(|e| BitsError::ClientCertNotFound {
            what: format!("the certificate in {path} cannot be parsed: {e}"),
        })?;
    let (key_where, key_blocks) = match (&files.key, &file.key) {
        (Some(bytes), Some(kp)) => (kp.display().to_string(), pem_blocks(bytes)),
        _ => (path.clone(), cert_blocks.clone()),
    };
    let keys: Vec<&Block<'_>> = key_blocks
        .iter()
        .filter(|b| b.label.ends_with("PRIVATE KEY"))
        .collect();
    let key = match keys.as_slice() {
        [key] => key,
        [] => {
            return Err(BitsError::ClientCertNotFound {
                what: format!("no private key in {key_where}"),
            })
        }
        many => {
            return Err(BitsError::ClientCertNotFound {
                what: format!("{} private keys in {key_where}: give exactly one", many.len()),
            })
        }
    };
    if key.label != "PRIVATE KEY" || key.text.windows(9).any(|w| w == b"Proc-Type") {
        return Err(BitsError::NotImplemented {
            what: format!(
                "the key in {key_where} is `{}`, and native-tls takes only an unencrypted PKCS#8 \
                 PRIVATE KEY: convert it with `openssl pkcs8 -topk8 -nocrypt -in {key_where} \
                 -out key.pem` (then chmod 600 key.pem), or use the openssl or rustls backend",
                key.label
            ),
        });
    }
    let chain: Vec<u8> = certs
        .iter()
        .flat_map(|b| b.text.iter().copied().chain(*b"\n"))
        .collect();
    let identity =
        native_tls::Identity::from_pkcs8(&chain, key.text).map_err(|e| BitsError::ClientCertNotFound {
            what: format!("{path} and its key cannot be loaded: {e}"),
        })?;
    Ok(Loaded { identity, leaf })
}

/// One PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`, …) and its
/// text, from `-----BEGIN` to the end of `-----END …-----`.
#[derive(Clone, Debug)]
struct Block<'a> {
    label: String,
    text: &'a [u8],
}

/// The PEM blocks of `bytes`, in order; text between them is skipped.
fn pem_blocks(bytes: &[u8]) -> Vec<Block<'_>> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let find = |from: usize, needle: &[u8]| {
        bytes
            .get(from..)
            .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
            .map(|i| from + i)
    };
    let mut blocks = Vec::new();
    let mut at = 0;
    while let Some(start) = find(at, BEGIN) {
        let label_start = start + BEGIN.len();
        let Some(label_end) = find(label_start, DASHES) else {
            break;
        };
        let label = String::from_utf8_lossy(&bytes[label_start..label_end]).into_owned();
        let end_marker = [b"-----END ".as_slice(), label.as_bytes(), DASHES].concat();
        let Some(end) = find(label_end, &end_marker) else {
            break;
        };
        let stop = end + end_marker.len();
        blocks.push(Block {
            label,
            text: &bytes[start..stop],
        });
        at = stop;
    }
    blocks
}

/// The error a handshake's failure comes to when it concerns the client
/// certificate, from OpenSSL's words in native-tls's error (the only
/// place they are): the server demanding one the job has none of
/// (`ClientCertNeeded`), or refusing the one offered (`SecureFailure`
/// naming the alert). `None` for anything else.
///
/// native-tls cannot tell whether the server asked for a certificate, so
/// without one a TLS 1.2 `handshake_failure` alert is taken as the demand
/// (what OpenSSL servers send when a certificate is required and none
/// comes; a server refusing for another reason would read as this too).
pub(crate) fn classify_alert(text: &str, offered: bool) -> Option<BitsError> {
    const ABOUT_CLIENT_CERT: &[&str] = &[
        "alert certificate required",
        "alert handshake failure",
        "alert bad certificate",
        "alert unsupported certificate",
        "alert certificate revoked",
        "alert certificate expired",
        "alert certificate unknown",
        "alert unknown ca",
        "alert access denied",
        "alert decrypt error",
    ];
    let alert = ABOUT_CLIENT_CERT.iter().find(|a| text.contains(*a))?;
    if offered {
        Some(BitsError::SecureFailure {
            reason: format!("the server refused the client certificate ({alert}): {text}"),
        })
    } else if *alert == "alert certificate required" || *alert == "alert handshake failure" {
        Some(BitsError::ClientCertNeeded)
    } else {
        None
    }
}

/// A read or write of a connected stream that failed on the server's
/// alert about the client certificate, from OpenSSL's words: with TLS 1.3
/// the server judges the client's certificate after the client's
/// handshake is complete, so its refusal arrives on the first read of the
/// response, and after the handshake such an alert can concern nothing
/// else. `certificate required` → `ClientCertNeeded`; a certificate alert
/// → `SecureFailure`. `None` for any other error.
pub(crate) fn classify_io(e: &std::io::Error) -> Option<BitsError> {
    // Only an error with a TLS error inside can carry an alert.
    e.get_ref()?;
    let text = e.to_string();
    if !text.contains(" alert ") {
        return None;
    }
    if text.contains("alert certificate required") {
        return Some(BitsError::ClientCertNeeded);
    }
    classify_alert(&text, true).filter(|_| !text.contains("alert handshake failure"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_alerts_after_the_handshake() {
        let io = |text: &str| std::io::Error::other(text.to_owned());
        let hr = |e: Option<BitsError>| e.map(|e| e.hresult().0);
        let needed = "error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:\
                      ../ssl/record/rec_layer_s3.c:1601:SSL alert number 116";
        assert_eq!(hr(classify_io(&io(needed))), Some(0x8007_2F0C));
        let ca = "error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:\
                  ../ssl/record/rec_layer_s3.c:1601:SSL alert number 48";
        assert_eq!(hr(classify_io(&io(ca))), Some(0x8007_2F8F));
        assert_eq!(hr(classify_io(&io("sslv3 alert handshake failure"))), None);
        assert_eq!(hr(classify_io(&io("unexpected eof while reading"))), None);
        assert_eq!(hr(classify_io(&std::io::ErrorKind::ConnectionReset.into())), None);
    }

    #[test]
    fn pem_blocks_in_order_with_their_labels() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                    text\n-----BEGIN RSA PRIVATE KEY-----\nBBBB\n-----END RSA PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nCC";
        let blocks = pem_blocks(pem);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(
            blocks[0].text,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
        );
        assert_eq!(blocks[1].label, "RSA PRIVATE KEY");
    }

    #[test]
    fn openssl_alerts_about_the_client_certificate() {
        let hr = |e: Option<BitsError>| e.map(|e| e.hresult().0);
        let needed = "error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required";
        assert_eq!(hr(classify_alert(needed, false)), Some(0x8007_2F0C));
        let hs = "error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure";
        assert_eq!(hr(classify_alert(hs, false)), Some(0x8007_2F0C));
        let ca = "error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca";
        let e = classify_alert(ca, true).unwrap();
        assert_eq!(e.hresult().0, 0x8007_2F8F);
        assert!(e.to_string().contains("refused the client certificate"), "{e}");
        assert_eq!(hr(classify_alert(hs, true)), Some(0x8007_2F8F));
        assert_eq!(hr(classify_alert(ca, false)), None);
        assert_eq!(hr(classify_alert("certificate verify failed", false)), None);
    }
}
