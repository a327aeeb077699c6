//! CRLs for `BG_SSL_ENABLE_CRL_CHECK`: download from the certificates' http
//! CRL distribution points, verification, and a cache in memory and on disk.
//!
//! A CRL is used only when webpki can parse it, its issuer name is the
//! issuing certificate's subject, its signature verifies with that
//! certificate's key, and it is fresh against the **real** clock
//! (`thisUpdate <= now < nextUpdate`), whatever time the certificate check
//! itself runs at (tls-mapping pitfall 7). A CRL that fails any of this is
//! never cached nor used; a cached one is used while fresh and downloaded
//! again once stale.
//!
//! The disk cache is the OpenSSL backend's format: one DER file per CDP URL,
//! named by the SHA-256 of the URL (`<hex>.crl`), written through a
//! temporary file and a rename; whatever is read back is verified again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use url::Url;

use crate::der;

/// The largest CRL accepted (CRLs of public CAs are far smaller).
const MAX_CRL_LEN: usize = 16 * 1024 * 1024;

/// A CRL that passed [`validate`].
#[derive(Clone, Debug)]
pub(crate) struct CachedCrl {
    pub(crate) der: Arc<Vec<u8>>,
    this_update: i64,
    next_update: i64,
}

/// What one certificate of a verified path needs for its revocation check.
#[derive(Clone, Debug)]
pub(crate) struct CrlNeed {
    /// The certificate, for messages.
    pub(crate) subject: String,
    /// Its http CDP URLs.
    pub(crate) urls: Vec<String>,
    /// The issuer's subject (webpki's raw DN contents).
    pub(crate) issuer_subject: Vec<u8>,
    /// The issuer's SubjectPublicKeyInfo (DER).
    pub(crate) issuer_spki: Vec<u8>,
}

/// The CRLs this transport knows, in memory and on disk.
pub(crate) struct CrlCache {
    dir: PathBuf,
    fetch_timeout: Duration,
    memory: Mutex<HashMap<String, CachedCrl>>,
    /// One lock per URL so that concurrent connections download it once.
    url_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for CrlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlCache")
            .field("dir", &self.dir)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl CrlCache {
    pub(crate) fn new(dir: PathBuf, fetch_timeout: Duration) -> Self {
        CrlCache {
            dir,
            fetch_timeout,
            memory: Mutex::new(HashMap::new()),
            url_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The fresh CRLs in memory by URL (stale ones are dropped), for one
    /// handshake's verifier.
    pub(crate) fn fresh(&self) -> HashMap<String, CachedCrl> {
        let now = now_unix();
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.retain(|_, crl| crl.is_fresh(now));
        memory.clone()
    }

    /// Makes sure a verified, fresh CRL for each of `needs` is in memory,
    /// from memory, disk or a CDP. `Ok(true)` when at least one is not among
    /// `had` (the URLs the last handshake's verifier held), so a new
    /// handshake can get further; `Err(reason)` when one cannot be had.
    pub(crate) async fn obtain(&self, needs: &[CrlNeed], had: &[String]) -> Result<bool, String> {
        let mut progressed = false;
        for need in needs {
            let url = self.obtain_one(need).await?;
            progressed |= !had.contains(&url);
        }
        Ok(progressed)
    }

    /// The URL whose CRL for `need` is now in memory.
    async fn obtain_one(&self, need: &CrlNeed) -> Result<String, String> {
        if need.urls.is_empty() {
            return Err(format!(
                "the certificate {} names no http CRL distribution point",
                need.subject
            ));
        }
        let mut errors = Vec::new();
        for url in &need.urls {
            if self.in_memory(url, need) {
                return Ok(url.clone());
            }
            let lock = self.url_lock(url);
            let _guard = lock.lock().await;
            // Another connection may have fetched it while we waited.
            if self.in_memory(url, need) {
                return Ok(url.clone());
            }
            let path = self.path_for(url);
            if let Some(crl) = read_cached(&path, need).await {
                tracing::debug!(%url, path = %path.display(), "CRL from the disk cache");
                self.remember(url, crl);
                return Ok(url.clone());
            }
            match self.download(url, need).await {
                Ok(crl) => {
                    if let Err(e) = write_atomically(&path, &crl.der).await {
                        // Still usable for this process; say why it is not kept.
                        tracing::warn!(path = %path.display(), error = %e, "cannot cache CRL");
                    }
                    self.remember(url, crl);
                    return Ok(url.clone());
                }
                Err(e) => errors.push(format!("CRL {url}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    fn in_memory(&self, url: &str, need: &CrlNeed) -> bool {
        let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory
            .get(url)
            .is_some_and(|crl| validate(&crl.der, need).is_ok())
    }

    fn remember(&self, url: &str, crl: CachedCrl) {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url.to_owned(), crl);
    }

    fn url_lock(&self, url: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.url_locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(url.to_owned()).or_default())
    }

    /// `<dir>/<sha256(url) in hex>.crl`, as the OpenSSL backend names it.
    fn path_for(&self, url: &str) -> PathBuf {
        let mut name = String::with_capacity(68);
        for b in sha256(url.as_bytes()) {
            let _ = write!(name, "{b:02x}");
        }
        name.push_str(".crl");
        self.dir.join(name)
    }

    async fn download(&self, url: &str, need: &CrlNeed) -> Result<CachedCrl, String> {
        let parsed = Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        tracing::debug!(%url, "downloading CRL");
        let body = bits_http::fetch_plain(&parsed, self.fetch_timeout, MAX_CRL_LEN)
            .await
            .map_err(|e| format!("cannot download: {e}"))?;
        let der = to_der(&body)?;
        validate(&der, need)
    }
}

impl CachedCrl {
    fn is_fresh(&self, now: i64) -> bool {
        self.this_update <= now && now < self.next_update
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    // The ring provider's SHA-256, through a TLS 1.3 suite's hash.
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|s| s.common.hash_provider.hash(bytes).as_ref().to_vec())
        .unwrap_or_default()
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

/// The CRL in `der` when webpki can use it, it was issued and signed by
/// `need`'s issuer, and it is fresh now.
pub(crate) fn validate(der: &[u8], need: &CrlNeed) -> Result<CachedCrl, String> {
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
    let Some(next_update) = parts.next_update else {
        // RFC 5280 §5.1.2.5 requires it; without it freshness is unknowable.
        return Err("it has no nextUpdate".to_owned());
    };
    let cached = CachedCrl {
        der: Arc::new(der.to_vec()),
        this_update: parts.this_update,
        next_update,
    };
    let now = now_unix();
    if parts.this_update > now {
        return Err(format!("not yet valid (thisUpdate {})", parts.this_update));
    }
    if !cached.is_fresh(now) {
        return Err(format!("stale (nextUpdate {next_update})"));
    }
    Ok(cached)
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

/// The cached CRL at `path` when it is there and passes [`validate`].
async fn read_cached(path: &Path, need: &CrlNeed) -> Option<CachedCrl> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let der = to_der(&bytes).ok()?;
    match validate(&der, need) {
        Ok(crl) => Some(crl),
        Err(reason) => {
            tracing::debug!(path = %path.display(), %reason, "cached CRL not used");
            None
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("crl"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = async {
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_file_names_are_the_url_hash() {
        let cache = CrlCache::new(PathBuf::from("/c"), Duration::from_secs(1));
        let a = cache.path_for("http://127.0.0.1:1/a.crl");
        assert_ne!(a, cache.path_for("http://127.0.0.1:1/b.crl"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64 + 4);
        // SHA-256 of "abc", as a known answer.
        let abc: String = sha256(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            abc,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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
