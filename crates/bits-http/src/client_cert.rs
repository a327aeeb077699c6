//! Client certificate files (`docs/spec/http-options.md`, "Client
//! certificate"): what every backend does the same way around its own
//! parsing. Reading the files (a missing one is `0x80070002`, a private
//! key others may read is `E_ACCESSDENIED`), telling PEM from PKCS#12,
//! the leaf's SHA-1 thumbprint and subject, and the connect-time check
//! that the file still holds the certificate the job chose.
//!
//! A backend's [`crate::TlsBackend::load_client_certificate`] is then:
//! [`read`], parse [`ClientCertFiles`] its own way (checking the key
//! matches and the password opens it), and [`chosen`] of the leaf. Its
//! handshake does the same at each new connection, then
//! [`check_unchanged`].

use std::fs;
use std::io;
use std::path::Path;

use bits_core::{BitsError, ClientCertificate, ClientCertificateFile, Thumbprint};
use sha1::{Digest, Sha1};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The client certificate files a backend loads
/// ([`crate::TlsBackend::CLIENT_CERT_FORMATS`]); every other form it refuses
/// with `E_NOTIMPL` when it is set on a job. `bits backends` and
/// `docs/backends.md` show it, and the testkit's client-certificate suite
/// tests each backend against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    /// PEM: the certificate (and its chain) with a PKCS#8 key
    /// (`BEGIN PRIVATE KEY`), in the same file or its own.
    pub pem: bool,
    /// PEM keys that are not PKCS#8 (`BEGIN RSA PRIVATE KEY`, `BEGIN EC
    /// PRIVATE KEY`).
    pub non_pkcs8_keys: bool,
    /// Encrypted PEM keys, opened with the job's password.
    pub encrypted_keys: bool,
    /// PKCS#12 (`.p12`, `.pfx`), opened with the job's password.
    pub pkcs12: bool,
}

impl Formats {
    /// None at all: the backend offers no client certificates.
    pub const NONE: Formats = Formats {
        pem: false,
        non_pkcs8_keys: false,
        encrypted_keys: false,
        pkcs12: false,
    };

    /// One line for people: `PEM (PKCS#8, PKCS#1 or SEC1 key), PKCS#12`.
    pub fn describe(&self) -> String {
        if !self.pem && !self.pkcs12 {
            return "none".to_owned();
        }
        let mut parts = Vec::new();
        if self.pem {
            let mut keys = String::from(if self.non_pkcs8_keys {
                "PKCS#8, PKCS#1 or SEC1 key"
            } else {
                "PKCS#8 key only"
            });
            if self.encrypted_keys {
                keys.push_str(", encrypted or not");
            }
            parts.push(format!("PEM ({keys})"));
        }
        parts.push(if self.pkcs12 { "PKCS#12" } else { "no PKCS#12" }.to_owned());
        parts.join(", ")
    }
}

/// How a certificate file is encoded (detected by content).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PEM: `CERTIFICATE` blocks, and the key unless it is in a file of
    /// its own.
    Pem,
    /// PKCS#12 (`.p12`, `.pfx`): a DER `SEQUENCE`.
    Pkcs12,
}

/// The bytes of a client certificate's files, read and checked.
#[derive(Clone)]
pub struct ClientCertFiles {
    /// How [`ClientCertFiles::cert`] is encoded.
    pub format: Format,
    /// The certificate file.
    pub cert: Vec<u8>,
    /// The key file, when the key is in a file of its own.
    pub key: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientCertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertFiles")
            .field("format", &self.format)
            .field("cert", &self.cert.len())
            .field("key", &self.key.as_ref().map(Vec::len))
            .finish()
    }
}

/// Reads the files `file` names.
///
/// # Errors
/// `0x80070002` for a missing file; `E_ACCESSDENIED` for a file that holds
/// a private key (the key file, a PEM with a key, a PKCS#12) and that its
/// owner's group or others may read, or one that cannot be read;
/// `CRYPT_E_NOT_FOUND` for a PKCS#12 file given a separate key.
pub fn read(file: &ClientCertificateFile) -> Result<ClientCertFiles, BitsError> {
    let cert = read_one(&file.path)?;
    let format = if cert.first() == Some(&0x30) {
        Format::Pkcs12
    } else {
        Format::Pem
    };
    let key = match &file.key {
        Some(path) => {
            if format == Format::Pkcs12 {
                return Err(BitsError::ClientCertNotFound {
                    what: format!(
                        "{} is PKCS#12, which holds its own key: give no separate key file",
                        file.path.display()
                    ),
                });
            }
            let key = read_one(path)?;
            check_private(path)?;
            Some(key)
        }
        None => None,
    };
    let cert_has_key = format == Format::Pkcs12 || contains(&cert, b"PRIVATE KEY-----");
    if cert_has_key {
        check_private(&file.path)?;
    }
    Ok(ClientCertFiles { format, cert, key })
}

fn read_one(path: &Path) -> Result<Vec<u8>, BitsError> {
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => BitsError::FileNotFound {
            path: path.display().to_string(),
        },
        _ => BitsError::AccessDenied {
            what: format!("cannot read {}: {e}", path.display()),
        },
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A file holding a private key must be its owner's alone, as ssh
/// requires of its keys.
fn check_private(path: &Path) -> Result<(), BitsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|e| BitsError::AccessDenied {
            what: format!("cannot read {}: {e}", path.display()),
        })?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(BitsError::AccessDenied {
                what: format!(
                    "{} holds a private key that others can read (mode {:o}): run chmod 600 {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

/// The SHA-1 thumbprint of a DER certificate.
pub fn thumbprint(der: &[u8]) -> Thumbprint {
    Thumbprint(Sha1::digest(der).into())
}

/// The subject of a DER certificate (`CN=…, O=…`), or `?` when it does not
/// parse.
pub fn subject(der: &[u8]) -> String {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// What a job stores of `file` whose leaf (DER) is `leaf`.
pub fn chosen(file: &ClientCertificateFile, leaf: &[u8]) -> ClientCertificate {
    ClientCertificate {
        file: file.clone(),
        sha1: thumbprint(leaf),
        subject: subject(leaf),
    }
}

/// At connect time: the file's leaf (DER) must still be the one the job
/// chose.
///
/// # Errors
/// `CRYPT_E_NOT_FOUND` (fatal) when its thumbprint differs.
pub fn check_unchanged(stored: &ClientCertificate, leaf: &[u8]) -> Result<(), BitsError> {
    let now = thumbprint(leaf);
    if now == stored.sha1 {
        return Ok(());
    }
    Err(BitsError::ClientCertNotFound {
        what: format!(
            "{} no longer holds the certificate set on the job (sha1 {}, now {now}): set it again",
            stored.file.path.display(),
            stored.sha1
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path, key: Option<&Path>) -> ClientCertificateFile {
        ClientCertificateFile {
            path: path.to_path_buf(),
            key: key.map(Path::to_path_buf),
            password: None,
        }
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn missing_files_and_readable_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let e = read(&file(&missing, None)).unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0002);

        let pem = dir.path().join("c.pem");
        fs::write(&pem, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
        chmod(&pem, 0o644);
        let key = dir.path().join("k.pem");
        fs::write(&key, "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n").unwrap();
        chmod(&key, 0o640);
        // A certificate alone may be world-readable; its key may not.
        let e = read(&file(&pem, Some(&key))).unwrap_err();
        assert_eq!(e.hresult().0, 0x8007_0005);
        assert!(e.to_string().contains("chmod 600"), "{e}");
        chmod(&key, 0o600);
        let files = read(&file(&pem, Some(&key))).unwrap();
        assert_eq!(files.format, Format::Pem);

        // A PEM holding its key is a key file.
        let both = dir.path().join("both.pem");
        fs::write(
            &both,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n",
        )
        .unwrap();
        chmod(&both, 0o604);
        assert_eq!(read(&file(&both, None)).unwrap_err().hresult().0, 0x8007_0005);

        // PKCS#12 is told by content, and holds its own key.
        let p12 = dir.path().join("id.bin");
        fs::write(&p12, [0x30, 0x82, 0x01]).unwrap();
        chmod(&p12, 0o600);
        assert_eq!(read(&file(&p12, None)).unwrap().format, Format::Pkcs12);
        assert_eq!(
            read(&file(&p12, Some(&key))).unwrap_err().hresult().0,
            0x8009_2004
        );
    }

    #[test]
    fn formats_describe_themselves() {
        assert_eq!(Formats::NONE.describe(), "none");
        let all = Formats {
            pem: true,
            non_pkcs8_keys: true,
            encrypted_keys: true,
            pkcs12: true,
        };
        assert_eq!(
            all.describe(),
            "PEM (PKCS#8, PKCS#1 or SEC1 key, encrypted or not), PKCS#12"
        );
        let pem = Formats {
            pem: true,
            ..Formats::NONE
        };
        assert_eq!(pem.describe(), "PEM (PKCS#8 key only), no PKCS#12");
    }

    #[test]
    fn a_changed_leaf_is_not_found() {
        let stored = chosen(&file(Path::new("/x.pem"), None), b"one");
        check_unchanged(&stored, b"one").unwrap();
        let e = check_unchanged(&stored, b"two").unwrap_err();
        assert_eq!(e.hresult().0, 0x8009_2004);
        assert!(!e.is_transient());
    }
}
