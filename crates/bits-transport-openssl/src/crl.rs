//! CRLs for `BG_SSL_ENABLE_CRL_CHECK`: download from the certificates' CRL
//! distribution points, verification, and a cache in memory and on disk.
//!
//! A CRL is used only when its issuer name is the issuing certificate's
//! subject, its signature verifies with that certificate's public key, and
//! it is fresh (`lastUpdate <= now < nextUpdate`). A CRL that fails any of
//! this is never cached nor used. A cached CRL is used while fresh; a stale
//! one is downloaded again.
//!
//! The disk cache holds one DER file per CDP URL, named by the SHA-256 of the
//! URL and written through a temporary file and a rename, so a reader never
//! sees half a CRL. Whatever is read back from disk is verified again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::x509::{X509Crl, X509Ref};
use url::Url;

use crate::verify::{subject_text, CrlNeed};

/// The largest CRL accepted (CRLs of public CAs are far smaller).
const MAX_CRL_LEN: usize = 16 * 1024 * 1024;

/// A CRL that passed [`validate`], with the URL it came from.
#[derive(Clone)]
pub(crate) struct CachedCrl {
    pub(crate) url: String,
    pub(crate) crl: Arc<X509Crl>,
}

/// The CRLs this transport knows, in memory and on disk.
pub(crate) struct CrlCache {
    dir: PathBuf,
    fetch_timeout: Duration,
    memory: Mutex<HashMap<String, Arc<X509Crl>>>,
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

impl CrlCache {
    pub(crate) fn new(dir: PathBuf, fetch_timeout: Duration) -> Self {
        CrlCache {
            dir,
            fetch_timeout,
            memory: Mutex::new(HashMap::new()),
            url_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The fresh CRLs in memory (stale ones are dropped), for a
    /// connection's store.
    pub(crate) fn fresh(&self) -> Vec<CachedCrl> {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.retain(|_, crl| freshness(crl).is_ok());
        memory
            .iter()
            .map(|(url, crl)| CachedCrl {
                url: url.clone(),
                crl: Arc::clone(crl),
            })
            .collect()
    }

    /// Makes sure a verified, fresh CRL for each of `needs` is in memory,
    /// from memory, disk or its CDP. `Ok(true)` when at least one of them
    /// was not among `had` (the URLs the last handshake's store held), so a
    /// new handshake can get further. `Err(reason)` when the certificate
    /// OpenSSL reported can have no usable CRL; the other certificates are
    /// best effort (OpenSSL will report them on the next handshake).
    pub(crate) async fn obtain(&self, needs: &[CrlNeed], had: &[String]) -> Result<bool, String> {
        let mut progressed = false;
        for need in needs {
            match self.obtain_one(need).await {
                Ok(url) => progressed |= !had.contains(&url),
                Err(reason) if need.reported => return Err(reason),
                Err(reason) => tracing::debug!(%reason, "CRL not obtained (not yet needed)"),
            }
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
        let Some(issuer) = &need.issuer else {
            return Err(format!(
                "the issuer of {} is not in the chain, so its CRL cannot be verified",
                need.subject
            ));
        };
        let mut errors = Vec::new();
        for url in &need.urls {
            if self.in_memory(url, issuer) {
                return Ok(url.clone());
            }
            let lock = self.url_lock(url);
            let _guard = lock.lock().await;
            // Another connection may have fetched it while we waited.
            if self.in_memory(url, issuer) {
                return Ok(url.clone());
            }
            let path = self.path_for(url);
            if let Some(crl) = read_cached(&path, issuer).await {
                tracing::debug!(%url, path = %path.display(), "CRL from the disk cache");
                self.remember(url, crl);
                return Ok(url.clone());
            }
            match self.download(url, issuer).await {
                Ok((crl, der)) => {
                    if let Err(e) = write_atomically(&path, &der).await {
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

    fn in_memory(&self, url: &str, issuer: &X509Ref) -> bool {
        let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.get(url).is_some_and(|crl| validate(crl, issuer).is_ok())
    }

    fn remember(&self, url: &str, crl: X509Crl) {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url.to_owned(), Arc::new(crl));
    }

    fn url_lock(&self, url: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.url_locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(url.to_owned()).or_default())
    }

    /// `<dir>/<sha256(url) in hex>.crl`.
    fn path_for(&self, url: &str) -> PathBuf {
        let digest = openssl::sha::sha256(url.as_bytes());
        let mut name = String::with_capacity(68);
        for b in digest {
            let _ = write!(name, "{b:02x}");
        }
        name.push_str(".crl");
        self.dir.join(name)
    }

    /// Downloads, parses and validates the CRL at `url`; returns it with its
    /// DER for the cache.
    async fn download(&self, url: &str, issuer: &X509Ref) -> Result<(X509Crl, Vec<u8>), String> {
        let parsed = Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        tracing::debug!(%url, "downloading CRL");
        let body = bits_http::fetch_plain(&parsed, self.fetch_timeout, MAX_CRL_LEN)
            .await
            .map_err(|e| format!("cannot download: {e}"))?;
        let crl = parse(&body)?;
        validate(&crl, issuer)?;
        let der = crl.to_der().map_err(|e| format!("cannot re-encode: {e}"))?;
        Ok((crl, der))
    }
}

/// A CRL from DER or PEM bytes.
fn parse(bytes: &[u8]) -> Result<X509Crl, String> {
    let trimmed = bytes.trim_ascii_start();
    let result = if trimmed.starts_with(b"-----BEGIN") {
        X509Crl::from_pem(trimmed)
    } else {
        X509Crl::from_der(bytes)
    };
    result.map_err(|e| format!("not a CRL ({e})"))
}

/// `Ok` when `crl` was issued and signed by `issuer` and is fresh.
pub(crate) fn validate(crl: &X509Crl, issuer: &X509Ref) -> Result<(), String> {
    let crl_issuer = crl.issuer_name().to_der().map_err(|e| e.to_string())?;
    let cert_subject = issuer.subject_name().to_der().map_err(|e| e.to_string())?;
    if crl_issuer != cert_subject {
        return Err(format!("issued by someone other than {}", subject_text(issuer)));
    }
    let key = issuer.public_key().map_err(|e| e.to_string())?;
    if !crl.verify(&key).unwrap_or(false) {
        return Err(format!(
            "its signature does not verify with the key of {}",
            subject_text(issuer)
        ));
    }
    freshness(crl)
}

/// `Ok` when `lastUpdate <= now < nextUpdate`. A CRL without nextUpdate
/// (which RFC 5280 §5.1.2.5 requires) can never be judged fresh.
fn freshness(crl: &X509Crl) -> Result<(), String> {
    let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
    if crl.last_update() > now {
        return Err(format!("not yet valid (lastUpdate {})", crl.last_update()));
    }
    match crl.next_update() {
        Some(next) if next > now => Ok(()),
        Some(next) => Err(format!("stale (nextUpdate {next})")),
        None => Err("it has no nextUpdate".to_owned()),
    }
}

/// The cached CRL at `path` when it is there, parses, verifies and is fresh.
async fn read_cached(path: &Path, issuer: &X509Ref) -> Option<X509Crl> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let crl = parse(&bytes).ok()?;
    match validate(&crl, issuer) {
        Ok(()) => Some(crl),
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
        let b = cache.path_for("http://127.0.0.1:1/b.crl");
        assert_ne!(a, b);
        assert_eq!(a, cache.path_for("http://127.0.0.1:1/a.crl"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64 + 4);
        assert!(name.ends_with(".crl"));
    }

    #[test]
    fn garbage_is_not_a_crl() {
        assert!(parse(b"hello").is_err());
        assert!(parse(b"-----BEGIN X509 CRL-----\nxx\n-----END X509 CRL-----\n").is_err());
    }
}
