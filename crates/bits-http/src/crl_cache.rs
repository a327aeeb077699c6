//! The CRL cache every TLS backend shares for `BG_SSL_ENABLE_CRL_CHECK`:
//! download from a certificate's http CRL distribution points, a cache in
//! memory and on disk, and ([`CrlConnector`]) the reconnect-after-download
//! flow of the two-phase CRL check (`docs/spec/tls.md` §2.5).
//!
//! Only what a CRL *is* and how a handshake uses it differ between
//! backends: each one parses and verifies CRLs its own way through
//! [`CrlIssuer`] (OpenSSL's `X509Crl::verify`, webpki + ring, ...) and
//! supplies its handshake through [`CrlHandshake`]. Everything else is
//! here, once:
//!
//! - A CRL is used only when the backend accepts it for the issuer at hand
//!   and it is fresh against the **real** clock (`thisUpdate <= now <
//!   nextUpdate`), whatever time the certificate check itself runs at
//!   (`docs/spec/tls.md`, pitfall 7). A CRL that fails any of this is never cached
//!   nor used; a cached one is used while fresh and downloaded again once
//!   stale.
//! - The disk cache holds one DER file per CDP URL, `<dir>/<hex
//!   sha256(url)>.crl`, written through a temporary file and a rename
//!   ([`write_atomically`]) so a reader never sees half a CRL. Every backend
//!   shares the format (and, by default, the directory:
//!   [`default_crl_cache_dir`]). Whatever is read back is verified again.
//! - One lock per URL, so that concurrent connections download it once.
//! - A handshake that lacks CRLs fails, says which ([`HandshakeFailure`]),
//!   and the connection is made again once they are downloaded, at most
//!   [`MAX_CRL_ROUNDS`] times ([`crl_rounds`], [`CrlRound`]).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use url::Url;

pub use crate::crl_flow::{
    crl_rounds, CrlConnector, CrlHandshake, CrlRound, FailedHandshake, HandshakeFailure, MAX_CRL_ROUNDS,
};

/// The largest CRL accepted (CRLs of public CAs are far smaller).
pub const MAX_CRL_LEN: usize = 16 * 1024 * 1024;

/// A CRL's validity window, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlWindow {
    /// `thisUpdate` (OpenSSL's `lastUpdate`).
    pub this_update: i64,
    /// `nextUpdate`; `None` when the CRL has none (RFC 5280 §5.1.2.5
    /// requires it), and then it can never be judged fresh.
    pub next_update: Option<i64>,
}

impl CrlWindow {
    /// `Ok` when `this_update <= now < next_update`, else why not.
    pub fn check_fresh(&self, now: i64) -> Result<(), String> {
        if self.this_update > now {
            return Err(format!("not yet valid (thisUpdate {})", self.this_update));
        }
        match self.next_update {
            Some(next) if next > now => Ok(()),
            Some(next) => Err(format!("stale (nextUpdate {next})")),
            None => Err("it has no nextUpdate".to_owned()),
        }
    }
}

/// What a backend knows about CRLs, for one issuing certificate: how to
/// parse a CRL and whether that issuer issued and signed it.
pub trait CrlIssuer {
    /// The backend's parsed CRL, as kept in memory.
    type Crl: Send + Sync + 'static;

    /// The CRL in `bytes` (DER, or PEM when the backend accepts it).
    fn parse(&self, bytes: &[u8]) -> Result<Self::Crl, String>;

    /// `Ok(window)` when `crl` is usable and was issued and signed by this
    /// issuer; freshness is checked by the cache, against the window.
    fn verify(&self, crl: &Self::Crl) -> Result<CrlWindow, String>;

    /// The DER of `crl`, for the disk cache.
    fn to_der(&self, crl: &Self::Crl) -> Result<Vec<u8>, String>;
}

/// One certificate's CRL requirement, for [`CrlCache::obtain`].
#[derive(Debug)]
pub struct CrlRequest<'a, I> {
    /// The certificate, for messages.
    pub subject: &'a str,
    /// Its http CDP URLs, tried in order.
    pub urls: &'a [String],
    /// Its issuer; `None` when the issuer is not in the chain (then no CRL
    /// can be verified).
    pub issuer: Option<I>,
    /// Whether failing to obtain this CRL fails [`CrlCache::obtain`];
    /// otherwise it is best effort (logged only).
    pub required: bool,
}

/// A CRL in memory, fresh when it was handed out by [`CrlCache::fresh`].
#[derive(Debug)]
pub struct CachedCrl<T> {
    /// The CDP URL it came from.
    pub url: String,
    /// The backend's parsed CRL.
    pub crl: Arc<T>,
    /// Its validity window.
    pub window: CrlWindow,
}

impl<T> Clone for CachedCrl<T> {
    fn clone(&self) -> Self {
        CachedCrl {
            url: self.url.clone(),
            crl: Arc::clone(&self.crl),
            window: self.window,
        }
    }
}

/// The CRLs one transport knows, in memory and on disk (see the module
/// documentation).
pub struct CrlCache<T> {
    dir: PathBuf,
    fetch_timeout: Duration,
    memory: Mutex<HashMap<String, CachedCrl<T>>>,
    /// One lock per URL so that concurrent connections download it once.
    url_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl<T> fmt::Debug for CrlCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlCache")
            .field("dir", &self.dir)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish_non_exhaustive()
    }
}

/// The real clock, in seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<T: Send + Sync + 'static> CrlCache<T> {
    /// A cache on disk under `dir` (created on the first write); downloads
    /// take at most `fetch_timeout` each.
    pub fn new(dir: PathBuf, fetch_timeout: Duration) -> Self {
        CrlCache {
            dir,
            fetch_timeout,
            memory: Mutex::new(HashMap::new()),
            url_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The fresh CRLs in memory (stale ones are dropped), for one
    /// handshake.
    pub fn fresh(&self) -> Vec<CachedCrl<T>> {
        let now = now_unix();
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.retain(|_, crl| crl.window.check_fresh(now).is_ok());
        memory.values().cloned().collect()
    }

    /// Makes sure a verified, fresh CRL for each of `requests` is in
    /// memory, from memory, disk or a CDP. `Ok(true)` when at least one of
    /// them was not among `had` (the URLs the last handshake held), so a new
    /// handshake can get further. `Err(reason)` when a required one cannot
    /// be had; the others are best effort.
    pub async fn obtain<I: CrlIssuer<Crl = T>>(
        &self,
        requests: &[CrlRequest<'_, I>],
        had: &[String],
    ) -> Result<bool, String> {
        let mut progressed = false;
        for request in requests {
            match self.obtain_one(request).await {
                Ok(url) => progressed |= !had.contains(&url),
                Err(reason) if request.required => return Err(reason),
                Err(reason) => tracing::debug!(%reason, "CRL not obtained (not yet needed)"),
            }
        }
        Ok(progressed)
    }

    /// The URL whose CRL for `request` is now in memory.
    async fn obtain_one<I: CrlIssuer<Crl = T>>(&self, request: &CrlRequest<'_, I>) -> Result<String, String> {
        if request.urls.is_empty() {
            return Err(format!(
                "the certificate {} names no http CRL distribution point",
                request.subject
            ));
        }
        let Some(issuer) = &request.issuer else {
            return Err(format!(
                "the issuer of {} is not in the chain, so its CRL cannot be verified",
                request.subject
            ));
        };
        let mut errors = Vec::new();
        for url in request.urls {
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
            if let Some((crl, window)) = read_cached(&path, issuer).await {
                tracing::debug!(%url, path = %path.display(), "CRL from the disk cache");
                self.remember(url, crl, window);
                return Ok(url.clone());
            }
            match self.download(url, issuer).await {
                Ok((crl, window, der)) => {
                    if let Err(e) = write_atomically(&path, &der).await {
                        // Still usable for this process; say why it is not kept.
                        tracing::warn!(path = %path.display(), error = %e, "cannot cache CRL");
                    }
                    self.remember(url, crl, window);
                    return Ok(url.clone());
                }
                Err(e) => errors.push(format!("CRL {url}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    fn in_memory<I: CrlIssuer<Crl = T>>(&self, url: &str, issuer: &I) -> bool {
        let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory
            .get(url)
            .is_some_and(|cached| validate(issuer, &cached.crl).is_ok())
    }

    fn remember(&self, url: &str, crl: T, window: CrlWindow) {
        let cached = CachedCrl {
            url: url.to_owned(),
            crl: Arc::new(crl),
            window,
        };
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url.to_owned(), cached);
    }

    fn url_lock(&self, url: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.url_locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(url.to_owned()).or_default())
    }

    /// Where the CRL of `url` is cached: `<dir>/<hex sha256(url)>.crl`.
    pub fn path_for(&self, url: &str) -> PathBuf {
        self.dir.join(cache_file_name(url))
    }

    /// Downloads, parses and validates the CRL at `url`; returns it with its
    /// DER for the disk cache.
    async fn download<I: CrlIssuer<Crl = T>>(
        &self,
        url: &str,
        issuer: &I,
    ) -> Result<(T, CrlWindow, Vec<u8>), String> {
        let parsed = Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        tracing::debug!(%url, "downloading CRL");
        let body = crate::fetch_plain(&parsed, self.fetch_timeout, MAX_CRL_LEN)
            .await
            .map_err(|e| format!("cannot download: {e}"))?;
        let crl = issuer.parse(&body)?;
        let window = validate(issuer, &crl)?;
        let der = issuer.to_der(&crl)?;
        Ok((crl, window, der))
    }
}

/// `<hex sha256(url)>.crl`, the cache file name of `url` (every backend's).
pub fn cache_file_name(url: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(url.as_bytes());
    let mut name = String::with_capacity(68);
    for b in digest.iter() {
        let _ = write!(name, "{b:02x}");
    }
    name.push_str(".crl");
    name
}

/// The backend's verdict on `crl` for `issuer`, then freshness now.
fn validate<I: CrlIssuer>(issuer: &I, crl: &I::Crl) -> Result<CrlWindow, String> {
    let window = issuer.verify(crl)?;
    window.check_fresh(now_unix())?;
    Ok(window)
}

/// The cached CRL at `path` when it is there, parses, verifies and is fresh.
async fn read_cached<I: CrlIssuer>(path: &Path, issuer: &I) -> Option<(I::Crl, CrlWindow)> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let crl = issuer.parse(&bytes).ok()?;
    match validate(issuer, &crl) {
        Ok(window) => Some((crl, window)),
        Err(reason) => {
            tracing::debug!(path = %path.display(), %reason, "cached CRL not used");
            None
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (created if missing) and a rename, so a reader sees the old file or the
/// new one, never half of one. On failure the temporary file is removed.
///
/// # Errors
/// Whatever creating the directory, writing or renaming fails with.
pub async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

/// The default CRL cache directory, shared by every backend:
/// `$XDG_CACHE_HOME/bits-crl` when that is an absolute path, else
/// `$HOME/.cache/bits-crl`, else `bits-crl` in the temporary directory.
pub fn default_crl_cache_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        xdg.join("bits-crl")
    } else if let Some(home) = absolute("HOME") {
        home.join(".cache").join("bits-crl")
    } else {
        std::env::temp_dir().join("bits-crl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_file_names_are_the_url_hash() {
        let cache: CrlCache<()> = CrlCache::new(PathBuf::from("/c"), Duration::from_secs(1));
        let a = cache.path_for("http://127.0.0.1:1/a.crl");
        assert_ne!(a, cache.path_for("http://127.0.0.1:1/b.crl"));
        assert_eq!(a, cache.path_for("http://127.0.0.1:1/a.crl"));
        assert_eq!(a.parent(), Some(Path::new("/c")));
        // SHA-256 of "abc", as a known answer.
        assert_eq!(
            cache_file_name("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.crl"
        );
    }

    #[test]
    fn freshness_is_this_update_to_next_update() {
        let w = |this, next| CrlWindow {
            this_update: this,
            next_update: next,
        };
        assert!(w(10, Some(20)).check_fresh(10).is_ok());
        assert!(w(10, Some(20)).check_fresh(19).is_ok());
        assert!(w(10, Some(20)).check_fresh(20).unwrap_err().contains("stale"));
        assert!(w(10, Some(20))
            .check_fresh(9)
            .unwrap_err()
            .contains("not yet valid"));
        assert!(w(10, None).check_fresh(15).unwrap_err().contains("nextUpdate"));
    }
}
