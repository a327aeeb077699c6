//! The client-certificate part of the test PKI (`docs/spec/http-options.md`,
//! "Client certificate"): a client root CA and its intermediate, a client
//! leaf they issue, and an unrelated CA with a leaf of its own, all P-256
//! with SHA-256 signatures, valid as long as the good server leaves.
//!
//! | certificate | issued by | notes |
//! |---|---|---|
//! | client root ("bits test client root CA") | itself | what [`crate::tls::MtlsServer`] trusts for clients |
//! | client intermediate ("bits test client intermediate CA") | client root | never trusted by the server: the client must send it |
//! | client leaf ("bits test client") | client intermediate | EKU clientAuth |
//! | unrelated CA ("bits unrelated client CA") | itself | never trusted by anyone |
//! | unrelated leaf ("bits unrelated client") | unrelated CA | EKU clientAuth: the "wrong CA" case |
//!
//! [`TestPki::shared`](super::TestPki::shared) caches them in
//! `client-pki-v1.json` next to `pki-v1.json` (a file of their own, so the
//! server PKI's cache keeps its format for every process sharing the
//! directory), regenerated when missing, unreadable or within 30 days of
//! expiry, and writes them as files ([`ClientCertPaths`]) in
//! `client-certs/`, under the same lock, rewriting a file only when its
//! content differs. Tests that change a file (its mode, its
//! content) work on a copy ([`ClientCertPaths::copy_to`]).

use std::fs;
use std::path::{Path, PathBuf};

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509};
use serde::{Deserialize, Serialize};

use super::{
    name, new_key, now, pem_string, self_signed_ca, serial, time, write_cache, Ca, DAY, GOOD_DAYS,
    MIN_REMAINING,
};

/// The client part's cache file, next to the server PKI's.
const CLIENT_CACHE_FILE: &str = "client-pki-v1.json";

/// The password of [`ClientCertPaths::pkcs12`].
pub const PKCS12_PASSWORD: &str = "bits-testkit p12 password";

/// The subject CN of the client leaf.
pub const CLIENT_CN: &str = "bits test client";

/// The subject CN of the unrelated CA's client leaf.
pub const UNRELATED_CN: &str = "bits unrelated client";

/// The client CAs and leaves (see the module docs).
#[derive(Clone)]
pub(super) struct ClientPki {
    pub(super) root: Ca,
    pub(super) intermediate: Ca,
    pub(super) leaf: X509,
    pub(super) leaf_key: PKey<Private>,
    pub(super) unrelated: Ca,
    pub(super) unrelated_leaf: X509,
    pub(super) unrelated_key: PKey<Private>,
    /// The PKCS#12 of the leaf, its key and the intermediate, under
    /// [`PKCS12_PASSWORD`] (kept so the file never changes between runs).
    pub(super) pkcs12: Vec<u8>,
}

impl ClientPki {
    pub(super) fn generate(epoch: i64) -> Result<ClientPki, ErrorStack> {
        let root = self_signed_ca(&new_key()?, "bits test client root CA", 20, epoch)?;
        let intermediate_key = new_key()?;
        let intermediate = Ca {
            cert: issue(
                &root,
                &intermediate_key,
                "bits test client intermediate CA",
                21,
                epoch,
                true,
            )?,
            key: intermediate_key,
        };
        let leaf_key = new_key()?;
        let leaf = issue(&intermediate, &leaf_key, CLIENT_CN, 22, epoch, false)?;
        let unrelated = self_signed_ca(&new_key()?, "bits unrelated client CA", 23, epoch)?;
        let unrelated_key = new_key()?;
        let unrelated_leaf = issue(&unrelated, &unrelated_key, UNRELATED_CN, 24, epoch, false)?;
        let pkcs12 = pkcs12(&leaf, &leaf_key, &intermediate.cert)?;
        Ok(ClientPki {
            root,
            intermediate,
            leaf,
            leaf_key,
            unrelated,
            unrelated_leaf,
            unrelated_key,
            pkcs12,
        })
    }

    /// The files, by name: (file name, content, private).
    fn files(&self) -> Result<Vec<NamedFile>, ErrorStack> {
        let leaf_and_chain = [self.leaf.to_pem()?, self.intermediate.cert.to_pem()?].concat();
        let pkcs8 = self.leaf_key.private_key_to_pem_pkcs8()?;
        let sec1 = self.leaf_key.ec_key()?.private_key_to_pem()?;
        let unrelated = [
            self.unrelated_leaf.to_pem()?,
            self.unrelated_key.private_key_to_pem_pkcs8()?,
        ]
        .concat();
        Ok(vec![
            (
                FILE_COMBINED,
                [leaf_and_chain.clone(), pkcs8.clone()].concat(),
                true,
            ),
            (FILE_CERT, leaf_and_chain.clone(), false),
            (FILE_KEY, pkcs8, true),
            (FILE_KEY_SEC1, sec1.clone(), true),
            (FILE_COMBINED_SEC1, [leaf_and_chain, sec1].concat(), true),
            (FILE_PKCS12, self.pkcs12.clone(), true),
            (FILE_UNRELATED, unrelated, true),
            (FILE_ROOT, self.root.cert.to_pem()?, false),
        ])
    }

    /// Writes the files into `dir` (created), each only when its content
    /// differs, atomically, private ones mode 0600.
    pub(super) fn write_files(&self, dir: &Path) -> Result<ClientCertPaths, String> {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        for (file, content, private) in self.files().map_err(|e| e.to_string())? {
            write_if_changed(&dir.join(file), &content, if private { 0o600 } else { 0o644 })?;
        }
        Ok(ClientCertPaths::in_dir(dir))
    }
}

/// A file's name, its content, and whether it holds a private key.
type NamedFile = (&'static str, Vec<u8>, bool);

/// The client part cached in `dir` if it is there and fresh, else a new one
/// (cached). The caller holds the directory's lock.
pub(super) fn load_or_generate(dir: &Path) -> Result<ClientPki, String> {
    let file = dir.join(CLIENT_CACHE_FILE);
    let cached = fs::read_to_string(&file)
        .ok()
        .and_then(|text| serde_json::from_str::<ClientCache>(&text).ok())
        .and_then(|cache| cache.into_pki().ok());
    let horizon = time(now() + MIN_REMAINING).map_err(|e| e.to_string())?;
    if let Some(pki) = cached {
        if pki.leaf.not_after() > horizon && pki.unrelated_leaf.not_after() > horizon {
            return Ok(pki);
        }
    }
    let pki = ClientPki::generate(now()).map_err(|e| e.to_string())?;
    let cache = ClientCache::from_pki(&pki).map_err(|e| e.to_string())?;
    write_cache(&file, &cache)?;
    Ok(pki)
}

/// [`ClientPki`] as cached: PEM, and the PKCS#12 in hex.
#[derive(Serialize, Deserialize)]
struct ClientCache {
    root_cert: String,
    root_key: String,
    intermediate_cert: String,
    intermediate_key: String,
    leaf_cert: String,
    leaf_key: String,
    unrelated_ca_cert: String,
    unrelated_ca_key: String,
    unrelated_leaf_cert: String,
    unrelated_leaf_key: String,
    pkcs12_hex: String,
}

impl ClientCache {
    fn from_pki(pki: &ClientPki) -> Result<ClientCache, ErrorStack> {
        let cert = |c: &X509| c.to_pem().map(pem_string);
        let key = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().map(pem_string);
        Ok(ClientCache {
            root_cert: cert(&pki.root.cert)?,
            root_key: key(&pki.root.key)?,
            intermediate_cert: cert(&pki.intermediate.cert)?,
            intermediate_key: key(&pki.intermediate.key)?,
            leaf_cert: cert(&pki.leaf)?,
            leaf_key: key(&pki.leaf_key)?,
            unrelated_ca_cert: cert(&pki.unrelated.cert)?,
            unrelated_ca_key: key(&pki.unrelated.key)?,
            unrelated_leaf_cert: cert(&pki.unrelated_leaf)?,
            unrelated_leaf_key: key(&pki.unrelated_key)?,
            pkcs12_hex: pki.pkcs12.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    fn into_pki(self) -> Result<ClientPki, String> {
        let e = |e: ErrorStack| e.to_string();
        let cert = |pem: &str| X509::from_pem(pem.as_bytes()).map_err(e);
        let key = |pem: &str| PKey::private_key_from_pem(pem.as_bytes()).map_err(e);
        let ca = |c: &str, k: &str| -> Result<Ca, String> {
            Ok(Ca {
                cert: cert(c)?,
                key: key(k)?,
            })
        };
        Ok(ClientPki {
            root: ca(&self.root_cert, &self.root_key)?,
            intermediate: ca(&self.intermediate_cert, &self.intermediate_key)?,
            leaf: cert(&self.leaf_cert)?,
            leaf_key: key(&self.leaf_key)?,
            unrelated: ca(&self.unrelated_ca_cert, &self.unrelated_ca_key)?,
            unrelated_leaf: cert(&self.unrelated_leaf_cert)?,
            unrelated_key: key(&self.unrelated_leaf_key)?,
            pkcs12: unhex(&self.pkcs12_hex).ok_or("the cached PKCS#12 is not hex")?,
        })
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

const FILE_COMBINED: &str = "client.pem";
const FILE_CERT: &str = "client-cert.pem";
const FILE_KEY: &str = "client-key.pem";
const FILE_KEY_SEC1: &str = "client-key-sec1.pem";
const FILE_COMBINED_SEC1: &str = "client-sec1.pem";
const FILE_PKCS12: &str = "client.p12";
const FILE_UNRELATED: &str = "unrelated-client.pem";
const FILE_ROOT: &str = "client-root.pem";

/// Where [`TestPki::shared`](super::TestPki::shared) wrote the client
/// certificate files. Never change them in place: see
/// [`ClientCertPaths::copy_to`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertPaths {
    /// The directory holding them all.
    pub dir: PathBuf,
    /// The client leaf, the intermediate, then the key (PKCS#8 `BEGIN
    /// PRIVATE KEY`); mode 0600.
    pub combined_pem: PathBuf,
    /// The client leaf and the intermediate, no key; mode 0644.
    pub cert_pem: PathBuf,
    /// The leaf's key alone, PKCS#8 (`BEGIN PRIVATE KEY`); mode 0600.
    pub key_pem: PathBuf,
    /// The leaf's key alone, SEC1 (`BEGIN EC PRIVATE KEY`, not PKCS#8);
    /// mode 0600.
    pub key_sec1_pem: PathBuf,
    /// The leaf, the intermediate and the SEC1 key in one file; mode 0600.
    pub combined_sec1_pem: PathBuf,
    /// PKCS#12 of the leaf, its key and the intermediate (PBES2
    /// AES-256-CBC with PBKDF2, MAC SHA-256: OpenSSL 3's defaults, which
    /// OpenSSL 1.1.1 reads too), password [`PKCS12_PASSWORD`]; mode 0600.
    pub pkcs12: PathBuf,
    /// The unrelated CA's leaf and its PKCS#8 key; mode 0600.
    pub unrelated_pem: PathBuf,
    /// The client root CA, PEM (what the server trusts for clients).
    pub client_root_pem: PathBuf,
}

impl ClientCertPaths {
    fn in_dir(dir: &Path) -> ClientCertPaths {
        ClientCertPaths {
            dir: dir.to_owned(),
            combined_pem: dir.join(FILE_COMBINED),
            cert_pem: dir.join(FILE_CERT),
            key_pem: dir.join(FILE_KEY),
            key_sec1_pem: dir.join(FILE_KEY_SEC1),
            combined_sec1_pem: dir.join(FILE_COMBINED_SEC1),
            pkcs12: dir.join(FILE_PKCS12),
            unrelated_pem: dir.join(FILE_UNRELATED),
            client_root_pem: dir.join(FILE_ROOT),
        }
    }

    /// The password of [`ClientCertPaths::pkcs12`].
    pub fn pkcs12_password(&self) -> &'static str {
        PKCS12_PASSWORD
    }

    /// Copies every file into `dir` (created), keeping their modes: for
    /// tests that change a file after a job chose it.
    ///
    /// # Panics
    /// When a file cannot be copied.
    pub fn copy_to(&self, dir: &Path) -> ClientCertPaths {
        fs::create_dir_all(dir).expect("create the copy's directory");
        for entry in fs::read_dir(&self.dir).expect("read the client certificate directory") {
            let entry = entry.expect("a directory entry");
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".tmp") {
                continue;
            }
            fs::copy(entry.path(), dir.join(&name)).expect("copy a client certificate file");
        }
        ClientCertPaths::in_dir(dir)
    }
}

/// A CA (`ca`) or client leaf issued by `issuer`, valid as the good leaves.
fn issue(
    issuer: &Ca,
    key: &PKey<Private>,
    cn: &str,
    serial_no: u32,
    epoch: i64,
    ca: bool,
) -> Result<X509, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_serial_number(&*serial(serial_no)?)?;
    b.set_subject_name(&*name(cn)?)?;
    b.set_issuer_name(issuer.cert.subject_name())?;
    b.set_pubkey(key)?;
    b.set_not_before(&*time(epoch - DAY)?)?;
    b.set_not_after(&*time(epoch + GOOD_DAYS * DAY)?)?;
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    } else {
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&issuer.cert), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&issuer.cert), None))?;
    b.append_extension(aki)?;
    b.sign(&issuer.key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn pkcs12(leaf: &X509, key: &PKey<Private>, intermediate: &X509) -> Result<Vec<u8>, ErrorStack> {
    let mut ca = Stack::new()?;
    ca.push(intermediate.clone())?;
    Pkcs12::builder()
        .name(CLIENT_CN)
        .pkey(key)
        .cert(leaf)
        .ca(ca)
        .key_algorithm(Nid::AES_256_CBC)
        .cert_algorithm(Nid::AES_256_CBC)
        .mac_md(MessageDigest::sha256())
        .build2(PKCS12_PASSWORD)?
        .to_der()
}

fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    let same_mode = {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode)
        }
        #[cfg(not(unix))]
        {
            true
        }
    };
    if same_mode && fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let _ = fs::remove_file(&tmp);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(mode);
            let mut f = options.open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(content)?;
            f.sync_all()?;
        }
        #[cfg(not(unix))]
        {
            let mut f = options.open(&tmp)?;
            f.write_all(content)?;
        }
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_cache_is_reused_and_garbage_is_replaced() {
        let dir = std::env::temp_dir().join(format!("bits-testkit-client-pki-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let der = |pki: &ClientPki| pki.leaf.to_der().unwrap();
        let first = load_or_generate(&dir).unwrap();
        let again = load_or_generate(&dir).unwrap();
        assert_eq!(der(&first), der(&again));
        assert_eq!(first.pkcs12, again.pkcs12);
        fs::write(dir.join(CLIENT_CACHE_FILE), "not json").unwrap();
        assert_ne!(der(&load_or_generate(&dir).unwrap()), der(&first));
        // The files are written once and keep their modes.
        let paths = first.write_files(&dir.join("files")).unwrap();
        let before = fs::metadata(&paths.pkcs12).unwrap().modified().unwrap();
        first.write_files(&dir.join("files")).unwrap();
        assert_eq!(fs::metadata(&paths.pkcs12).unwrap().modified().unwrap(), before);
        let _ = fs::remove_dir_all(&dir);
    }
}
