//! Local files: the hidden temporary file a download goes into, and the
//! durable rename that makes it real on `complete`.
//!
//! Invariant the engine relies on: [`TempWriter::position`] counts only
//! bytes a `write` system call has handed to the kernel, so a job's counters
//! (copied from it) never claim more than the temporary file holds, even
//! when the engine's future is dropped halfway. Writes are small and go to
//! the page cache, so they run inline; `fdatasync`, which can block for
//! long, runs on the blocking pool, in batches ([`sync_paths`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::BitsError;

/// Bytes gathered before a write.
const BUFFER: usize = 64 * 1024;
/// A slow link still reports progress this often.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Every this many bytes written, [`TempWriter`] starts an `fdatasync` in
/// the background (one at a time), so the kernel writes the file back
/// while it downloads and the sync that makes it durable at the end has
/// only the last few MiB left, not the whole file.
pub(crate) const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;

/// The length of `path`, 0 when it does not exist.
pub(crate) fn disk_len(path: &Path) -> Result<u64, BitsError> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(BitsError::local("stat", path.display(), e)),
    }
}

/// Empties `path` if it exists.
pub(crate) fn truncate(path: &Path) -> Result<(), BitsError> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => f
            .set_len(0)
            .map_err(|e| BitsError::local("truncate", path.display(), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BitsError::local("open", path.display(), e)),
    }
}

/// Removes `path`; a missing file is fine.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// At most this many `fdatasync`s run at once in [`sync_paths`].
const SYNC_THREADS: usize = 32;

/// `fdatasync`s every file of `paths`, several at once on the blocking
/// pool: concurrent syncs share journal commits, so a batch of many small
/// files costs a few commits instead of one each. On failure, returns the
/// index (in `paths`) of the first file that could not be synced.
pub(crate) async fn sync_paths(paths: Vec<PathBuf>) -> Result<(), (usize, BitsError)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    if paths.is_empty() {
        return Ok(());
    }
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let workers = paths.len().min(SYNC_THREADS);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (paths, next) = (paths.clone(), next.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut failed: Option<(usize, io::Error)> = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(n) else { break };
                let synced = File::open(path).and_then(|f| f.sync_data());
                #[cfg(test)]
                if synced.is_ok() {
                    test_log::synced(path);
                }
                if let Err(e) = synced {
                    if failed.as_ref().is_none_or(|(m, _)| n < *m) {
                        failed = Some((n, e));
                    }
                }
            }
            failed
        }));
    }
    let mut first: Option<(usize, io::Error)> = None;
    for task in tasks {
        let failed = task.await.unwrap_or_else(|e| Some((0, io::Error::other(e))));
        if let Some((n, e)) = failed {
            if first.as_ref().is_none_or(|(m, _)| n < *m) {
                first = Some((n, e));
            }
        }
    }
    match first {
        None => Ok(()),
        Some((n, e)) => Err((n, BitsError::local("sync", paths[n].display(), e))),
    }
}

/// Moves finished temporary files to their LOCAL names durably, in three
/// passes so that many files cost few waits: fsync every file's data and
/// metadata (several at once), then rename each (same directory, so atomic:
/// LOCAL is either the old file or the whole new one, and no file is
/// renamed before every file is on disk), then fsync each directory once so
/// the renames survive a crash. A failed rename stops there: the files
/// renamed before it stay at LOCAL, their directories synced.
pub(crate) fn commit_all(pairs: &[(&Path, &Path)]) -> Result<(), BitsError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let workers = pairs.len().min(SYNC_THREADS);
    let failures: Vec<(usize, io::Error)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = None;
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some((temp, _)) = pairs.get(n) else { break };
                        if let Err(e) = File::open(temp).and_then(|f| f.sync_all()) {
                            failed = Some((n, e));
                            break;
                        }
                    }
                    failed
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                h.join()
                    .unwrap_or_else(|_| Some((0, io::Error::other("sync thread panicked"))))
            })
            .collect()
    });
    if let Some((n, e)) = failures.into_iter().min_by_key(|(n, _)| *n) {
        return Err(BitsError::local("sync", pairs[n].0.display(), e));
    }
    let mut dirs: Vec<&Path> = Vec::new();
    let mut renamed = Ok(());
    for (temp, local) in pairs {
        if let Err(e) = fs::rename(temp, local) {
            renamed = Err(BitsError::local("rename", temp.display(), e));
            break;
        }
        if let Some(dir) = local.parent() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    for dir in dirs {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BitsError::local("sync", dir.display(), e))?;
    }
    renamed
}

/// Appends a response body to a temporary file, buffered.
#[derive(Debug)]
pub(crate) struct TempWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    position: u64,
    last_write: Instant,
    /// `position` when the last background sync was started.
    kicked_at: u64,
    /// The background sync in flight, if any.
    kick: Option<tokio::task::JoinHandle<()>>,
    /// The error of a background sync, kept until reported.
    kick_error: Arc<Mutex<Option<io::Error>>>,
}

impl TempWriter {
    /// Opens (creating) `path` for writing at `offset`: anything beyond
    /// `offset` is cut off, so the file holds exactly the bytes counted.
    pub(crate) fn open_at(path: &Path, offset: u64) -> Result<TempWriter, BitsError> {
        let err = |op, e| BitsError::local(op, path.display(), e);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| err("create", e))?;
        // Only cut when there is something to cut: on ext4, truncating a
        // file to 0 (even an empty one) makes its `close` start writeback
        // (`auto_da_alloc`), one synchronous-ish flush per small file,
        // which the batched sync of the engine is there to avoid.
        let len = file.metadata().map_err(|e| err("stat", e))?.len();
        if len != offset {
            file.set_len(offset).map_err(|e| err("truncate", e))?;
        }
        file.seek(SeekFrom::Start(offset)).map_err(|e| err("seek", e))?;
        Ok(TempWriter {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(BUFFER),
            position: offset,
            last_write: Instant::now(),
            kicked_at: offset,
            kick: None,
            kick_error: Arc::default(),
        })
    }

    /// Bytes in the file (written, not merely buffered).
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Bytes received but still buffered.
    pub(crate) fn buffered(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Takes a chunk; returns true when this wrote to the file (the
    /// position moved).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<bool, BitsError> {
        if self.buf.is_empty() && chunk.len() >= BUFFER {
            self.write(chunk)?;
            return Ok(true);
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= BUFFER || self.last_write.elapsed() >= FLUSH_EVERY {
            self.flush()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes what is buffered.
    pub(crate) fn flush(&mut self) -> Result<(), BitsError> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            let result = self.write(&buf);
            self.buf = buf;
            self.buf.clear();
            result?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BitsError> {
        self.last_write = Instant::now();
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(0) => {
                    return Err(BitsError::local(
                        "write",
                        self.path.display(),
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => {
                    // Count each partial write: those bytes are in the file
                    // even if the next write fails (disk full).
                    self.position += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BitsError::local("write", self.path.display(), e)),
            }
        }
        self.kick_writeback()
    }

    /// Starts a background `fdatasync` every [`WRITEBACK_EVERY`] bytes,
    /// unless the previous one still runs. This only moves work earlier:
    /// durability still comes from the engine's sync after the last byte.
    /// A background sync that failed fails the transfer (its error is
    /// reported to this file description once, so the final sync on a
    /// new descriptor might not see it again).
    fn kick_writeback(&mut self) -> Result<(), BitsError> {
        if self.position - self.kicked_at < WRITEBACK_EVERY {
            return Ok(());
        }
        if let Some(kick) = &self.kick {
            if !kick.is_finished() {
                return Ok(());
            }
        }
        self.check_kick()?;
        // Outside a runtime (never in the engine) there is no blocking pool:
        // the final sync does all the work, as before.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let file = self
            .file
            .try_clone()
            .map_err(|e| BitsError::local("dup", self.path.display(), e))?;
        self.kicked_at = self.position;
        #[cfg(test)]
        test_log::kicked(&self.path);
        let slot = self.kick_error.clone();
        self.kick = Some(runtime.spawn_blocking(move || {
            if let Err(e) = file.sync_data() {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }));
        Ok(())
    }

    /// Returns the error of a finished background sync, once.
    fn check_kick(&mut self) -> Result<(), BitsError> {
        let failed = self.kick_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        match failed {
            Some(e) => Err(BitsError::local("sync", self.path.display(), e)),
            None => Ok(()),
        }
    }

    /// Waits for the background sync in flight, if any, and returns its
    /// error: called once the body ended, before the file may be finished.
    pub(crate) async fn settle(&mut self) -> Result<(), BitsError> {
        if let Some(kick) = self.kick.take() {
            if let Err(e) = kick.await {
                return Err(BitsError::local("sync", self.path.display(), io::Error::other(e)));
            }
        }
        self.check_kick()
    }

    /// Sets the file's modification time (best effort: a file system that
    /// refuses keeps the time of the download).
    pub(crate) fn set_modified(&self, time: SystemTime) {
        if let Err(e) = self.file.set_modified(time) {
            tracing::debug!("cannot set the mtime of {}: {e}", self.path.display());
        }
    }
}

/// Which files [`sync_paths`] synced, for tests that check nothing is
/// reported completed before its sync.
#[cfg(test)]
pub(crate) mod test_log {
    use std::collections::{HashMap, HashSet};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

    static KICKED: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

    /// Counts a background writeback sync started for `path`.
    pub(crate) fn kicked(path: &Path) {
        let mut map = KICKED.lock().unwrap_or_else(|e| e.into_inner());
        *map.get_or_insert_with(HashMap::new)
            .entry(path.to_path_buf())
            .or_default() += 1;
    }

    /// How many background writeback syncs were started for `path`.
    pub(crate) fn kicks(path: &Path) -> usize {
        let map = KICKED.lock().unwrap_or_else(|e| e.into_inner());
        map.as_ref().and_then(|m| m.get(path).copied()).unwrap_or(0)
    }

    pub(crate) fn synced(path: &Path) {
        let mut set = SYNCED.lock().unwrap_or_else(|e| e.into_inner());
        set.get_or_insert_with(HashSet::new).insert(path.to_path_buf());
    }

    /// Whether `path` was synced (paths are unique per test: temp dirs).
    pub(crate) fn was_synced(path: &Path) -> bool {
        let set = SYNCED.lock().unwrap_or_else(|e| e.into_inner());
        set.as_ref().is_some_and(|s| s.contains(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_counts_only_written_bytes_and_cuts_stale_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".t.tmp");
        fs::write(&p, b"0123456789").unwrap();
        let mut w = TempWriter::open_at(&p, 4).unwrap();
        assert_eq!(disk_len(&p).unwrap(), 4);
        assert!(!w.push(b"ab").unwrap());
        assert_eq!((w.position(), w.buffered()), (4, 2));
        w.flush().unwrap();
        assert_eq!((w.position(), w.buffered()), (6, 0));
        assert!(w.push(&vec![b'x'; BUFFER]).unwrap());
        assert_eq!(w.position(), 6 + BUFFER as u64);
        assert_eq!(disk_len(&p).unwrap(), w.position());
        assert_eq!(&fs::read(&p).unwrap()[..6], b"0123ab");
    }

    #[tokio::test]
    async fn long_bodies_start_writeback_while_writing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".big.tmp");
        let mut w = TempWriter::open_at(&p, 0).unwrap();
        let chunk = vec![b'y'; BUFFER];
        let total = WRITEBACK_EVERY + 4 * BUFFER as u64;
        while w.position() + w.buffered() < total {
            w.push(&chunk).unwrap();
        }
        w.flush().unwrap();
        w.settle().await.unwrap();
        assert_eq!(test_log::kicks(&p), 1);
        assert_eq!(disk_len(&p).unwrap(), total);
    }

    #[tokio::test]
    async fn short_bodies_start_no_writeback() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".small.tmp");
        let mut w = TempWriter::open_at(&p, 0).unwrap();
        w.push(&vec![b'z'; 3 * BUFFER]).unwrap();
        w.flush().unwrap();
        w.settle().await.unwrap();
        assert_eq!(test_log::kicks(&p), 0);
    }

    #[test]
    fn missing_files_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        assert_eq!(disk_len(&p).unwrap(), 0);
        truncate(&p).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
    }
}
