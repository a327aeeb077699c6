//! Local files: the hidden temporary file a download goes into, and the
//! durable rename that makes it real on `complete`.
//!
//! Invariant the engine relies on: [`TempWriter::position`] counts only
//! bytes a `write` system call has handed to the kernel, so a job's counters
//! (copied from it) never claim more than the temporary file holds, even
//! when the engine's future is dropped halfway. Writes are small and go to
//! the page cache, so they run inline; the checkpoint syncs (`syncfs`, or
//! `fsync` per file), which can block for long, run on the blocking pool,
//! in batches ([`sync_paths`]). A file they synced has its data and its
//! metadata (size, modification time) on disk, so [`commit_all`] has only
//! the renames left to make durable.

use std::collections::HashMap;
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

/// The length of `path`, `None` when it does not exist.
pub(crate) fn disk_size(path: &Path) -> Result<Option<u64>, BitsError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
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

/// At most this many `fsync`s run at once in [`sync_paths`].
const SYNC_THREADS: usize = 32;

/// A batch of at least this many files is made durable with one `syncfs`
/// per file system (Linux) instead of one `fsync` per file: on ext4 each
/// `fsync` also flushes the disk's cache, so 2,000 small files cost 2,000
/// flushes; one `syncfs` writes them all back and flushes once. Smaller
/// batches (one large file, say) keep `fsync`, so they never wait for
/// other programs' dirty data on the same file system.
pub(crate) const SYNCFS_FILES: usize = 16;

/// The file systems a run writes temporary files to, each watched through
/// a directory opened *before* the first byte of this run was written
/// there.
///
/// Why the opening time matters: `syncfs(fd)` reports every writeback
/// error of the whole file system that happened since `fd` was opened (or
/// since its last `syncfs`), whoever else saw it (Linux 5.8+). Opened
/// before our writes, the directory's descriptor hears of any failure to
/// write them back; a `syncfs` that reports nothing means every one of
/// them is on disk. A `syncfs` that reports an error (maybe another
/// program's file) falls back to `fsync` per file, which tells whose, and
/// retires the watcher: that `syncfs` consumed the error, so a file of a
/// later batch whose writeback failed then would go unreported. Its file
/// system gets `fsync` per file for the rest of the run.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// Directory → index in `fs`.
    dirs: HashMap<PathBuf, usize>,
    /// One watcher per file system (device number).
    fs: Vec<(u64, Arc<Watcher>)>,
}

/// An open directory of a file system, and whether a `syncfs` through it
/// ever failed.
#[derive(Debug)]
struct Watcher {
    dir: File,
    failed: std::sync::atomic::AtomicBool,
}

impl Watcher {
    fn retired(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `syncfs` through this watcher; a failure retires it.
    fn syncfs(&self) -> io::Result<()> {
        let result = syncfs(&self.dir);
        if let Err(e) = &result {
            self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("syncfs failed ({e}): syncing each file instead");
        }
        result
    }
}

/// Files of a batch (indices into its paths) on one watched file system.
#[derive(Debug)]
pub(crate) struct FsGroup {
    watcher: Arc<Watcher>,
    files: Vec<usize>,
}

impl Watched {
    /// Watches the file system of `dir`, where a temporary file is about
    /// to be written. Cheap after the first call for a directory; a
    /// directory that cannot be opened leaves its files to `fsync`.
    pub(crate) fn watch(&mut self, dir: &Path) {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            if self.dirs.contains_key(dir) {
                return;
            }
            let Ok(opened) = File::open(dir) else { return };
            let Ok(meta) = opened.metadata() else { return };
            let n = match self.fs.iter().position(|(dev, _)| *dev == meta.dev()) {
                Some(n) => n,
                None => {
                    let watcher = Watcher {
                        dir: opened,
                        failed: false.into(),
                    };
                    self.fs.push((meta.dev(), Arc::new(watcher)));
                    self.fs.len() - 1
                }
            };
            self.dirs.insert(dir.to_path_buf(), n);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = dir;
    }

    /// Groups the batch `paths` by watched file system, for [`sync_paths`].
    /// Only files this run wrote from byte 0 (`fresh`) may ride a `syncfs`:
    /// bytes an earlier process wrote could have failed writeback before
    /// the directory was opened. A batch under [`SYNCFS_FILES`] gets no
    /// groups.
    pub(crate) fn groups(&self, paths: &[PathBuf], fresh: &[bool]) -> Vec<FsGroup> {
        if paths.len() < SYNCFS_FILES {
            return Vec::new();
        }
        let mut groups: Vec<FsGroup> = Vec::new();
        for (k, path) in paths.iter().enumerate() {
            if !fresh.get(k).copied().unwrap_or(false) {
                continue;
            }
            let Some(&n) = path.parent().and_then(|d| self.dirs.get(d)) else {
                continue;
            };
            let watcher = &self.fs[n].1;
            if watcher.retired() {
                continue;
            }
            match groups.iter_mut().find(|g| Arc::ptr_eq(&g.watcher, watcher)) {
                Some(g) => g.files.push(k),
                None => groups.push(FsGroup {
                    watcher: watcher.clone(),
                    files: vec![k],
                }),
            }
        }
        groups
    }
}

/// `syncfs` on the file system of `dir`.
#[cfg(target_os = "linux")]
fn syncfs(dir: &File) -> io::Result<()> {
    rustix::fs::syncfs(dir).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_dir: &File) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Makes every file of `paths` durable, data and metadata (its size, and
/// the modification time the engine set before the checkpoint): the files
/// of each group with one `syncfs` of its file system, the rest (and a
/// group whose `syncfs` failed) with `fsync`, several at once on the
/// blocking pool. On failure, returns the index (in `paths`) of the first
/// file that could not be synced.
///
/// [`commit_all`] relies on this: a file is marked `completed` only after
/// this synced it, so `complete` syncs no file's data again.
pub(crate) async fn sync_paths(paths: Vec<PathBuf>, groups: Vec<FsGroup>) -> Result<(), (usize, BitsError)> {
    let mut done = vec![false; paths.len()];
    for group in groups {
        let FsGroup { watcher, files } = group;
        let synced = tokio::task::spawn_blocking(move || watcher.syncfs()).await;
        if let Ok(Ok(())) = synced {
            for n in files {
                done[n] = true;
                #[cfg(test)]
                test_log::synced_by_syncfs(&paths[n]);
            }
        }
    }
    let each: Vec<usize> = (0..paths.len()).filter(|&n| !done[n]).collect();
    fsync_each(paths, each).await
}

/// `fsync`s (data and metadata) the files `each` (indices into `paths`),
/// several at once on the blocking pool: concurrent syncs share journal
/// commits.
async fn fsync_each(paths: Vec<PathBuf>, each: Vec<usize>) -> Result<(), (usize, BitsError)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if each.is_empty() {
        return Ok(());
    }
    let paths = Arc::new(paths);
    let each = Arc::new(each);
    let next = Arc::new(AtomicUsize::new(0));
    let workers = each.len().min(SYNC_THREADS);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (paths, each, next) = (paths.clone(), each.clone(), next.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut failed: Option<(usize, io::Error)> = None;
            while let Some(&n) = each.get(next.fetch_add(1, Ordering::Relaxed)) {
                let path = &paths[n];
                let synced = File::open(path).and_then(|f| f.sync_all());
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
        let failed = task
            .await
            .unwrap_or_else(|e| Some((each[0], io::Error::other(e))));
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

/// Moves finished temporary files to their LOCAL names durably: renames
/// each (same directory, so atomic: LOCAL is either the old file or the
/// whole new one), then fsyncs each directory once so the renames survive
/// a crash.
///
/// No file's data or metadata is synced here: the engine marks a file
/// `completed` (and only completed files come here) once its checkpoint
/// synced it, data and metadata, whichever way ([`sync_paths`]). So every
/// temporary file is already durable before the first rename, and the
/// renames are all that is left.
///
/// A rename that fails stops there, and its error is returned once the
/// directories of the files renamed before it are synced: those stay at
/// LOCAL. One exception, for a `complete` called again after such a
/// failure: a temporary file that is missing while its LOCAL exists was
/// renamed by the earlier call and is skipped (its directory is synced
/// again, in case that call could not). Only then, on `NotFound`, is
/// anything stat'ed.
pub(crate) fn commit_all(pairs: &[(&Path, &Path)]) -> Result<(), BitsError> {
    let mut dirs: Vec<&Path> = Vec::new();
    let mut renamed = Ok(());
    for (temp, local) in pairs {
        match fs::rename(temp, local) {
            Ok(()) => {}
            // Renamed by an earlier `complete` that failed on a later file.
            Err(e) if e.kind() == io::ErrorKind::NotFound && local.exists() => {}
            Err(e) => {
                renamed = Err(BitsError::local("rename", temp.display(), e));
                break;
            }
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
        Ok(TempWriter::new(file, path, offset))
    }

    /// Creates `path` for writing from byte 0, or returns `None` if it
    /// exists (two system calls fewer than [`TempWriter::open_at`]).
    pub(crate) fn create(path: &Path) -> Result<Option<TempWriter>, BitsError> {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => Ok(Some(TempWriter::new(file, path, 0))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(BitsError::local("create", path.display(), e)),
        }
    }

    fn new(file: File, path: &Path, offset: u64) -> TempWriter {
        TempWriter {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(BUFFER),
            position: offset,
            last_write: Instant::now(),
            kicked_at: offset,
            kick: None,
            kick_error: Arc::default(),
        }
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

    /// Whether a background sync is still running ([`TempWriter::settle`]
    /// would wait for it).
    pub(crate) fn syncing(&self) -> bool {
        self.kick.as_ref().is_some_and(|kick| !kick.is_finished())
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

impl Drop for TempWriter {
    /// Bytes received but still buffered reach the file (best effort) when
    /// a run is dropped: a resume trusts the file on disk, not the counters.
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.flush();
        }
    }
}

/// Which files [`sync_paths`] synced (by `syncfs` or their own `fsync`),
/// for tests that check nothing is reported completed before its sync.
#[cfg(test)]
pub(crate) mod test_log {
    use std::collections::{HashMap, HashSet};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

    static BY_SYNCFS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

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

    /// `path` was synced as part of a `syncfs` batch.
    pub(crate) fn synced_by_syncfs(path: &Path) {
        synced(path);
        let mut set = BY_SYNCFS.lock().unwrap_or_else(|e| e.into_inner());
        set.get_or_insert_with(HashSet::new).insert(path.to_path_buf());
    }

    /// Whether `path` was synced by a `syncfs` batch rather than its own
    /// `fsync`.
    pub(crate) fn was_synced_by_syncfs(path: &Path) -> bool {
        let set = BY_SYNCFS.lock().unwrap_or_else(|e| e.into_inner());
        set.as_ref().is_some_and(|s| s.contains(path))
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
    fn create_makes_a_new_file_or_leaves_an_existing_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".t.tmp");
        assert_eq!(disk_size(&p).unwrap(), None);
        let mut w = TempWriter::create(&p).unwrap().unwrap();
        assert_eq!(disk_size(&p).unwrap(), Some(0));
        w.push(b"abc").unwrap();
        // Dropped: what it buffered is written.
        drop(w);
        assert!(TempWriter::create(&p).unwrap().is_none());
        assert_eq!(fs::read(&p).unwrap(), b"abc");
    }

    #[test]
    fn writer_counts_only_written_bytes_and_cuts_stale_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".t.tmp");
        fs::write(&p, b"0123456789").unwrap();
        let mut w = TempWriter::open_at(&p, 4).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 4);
        assert!(!w.push(b"ab").unwrap());
        assert_eq!((w.position(), w.buffered()), (4, 2));
        w.flush().unwrap();
        assert_eq!((w.position(), w.buffered()), (6, 0));
        assert!(w.push(&vec![b'x'; BUFFER]).unwrap());
        assert_eq!(w.position(), 6 + BUFFER as u64);
        assert_eq!(fs::metadata(&p).unwrap().len(), w.position());
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
        assert_eq!(fs::metadata(&p).unwrap().len(), total);
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

    #[cfg(target_os = "linux")]
    #[test]
    fn only_large_batches_of_fresh_files_in_watched_directories_ride_a_syncfs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let unwatched = tempfile::tempdir().unwrap();
        let mut w = Watched::default();
        w.watch(a.path());
        w.watch(b.path());
        w.watch(a.path());
        // Two directories of one file system share one watcher.
        assert_eq!((w.dirs.len(), w.fs.len()), (2, 1));
        let mut paths: Vec<PathBuf> = (0..SYNCFS_FILES)
            .map(|n| [a.path(), b.path()][n % 2].join(format!(".f{n}")))
            .collect();
        paths.push(unwatched.path().join(".u"));
        let mut fresh = vec![true; paths.len()];
        fresh[3] = false;
        let groups = w.groups(&paths, &fresh);
        assert_eq!(groups.len(), 1);
        let expected: Vec<usize> = (0..SYNCFS_FILES).filter(|&n| n != 3).collect();
        assert_eq!(groups[0].files, expected);
        // A small batch gets fsync for every file.
        assert!(w.groups(&paths[..SYNCFS_FILES - 1], &fresh).is_empty());
        // So does every batch once a syncfs through the watcher failed.
        w.fs[0].1.failed.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(w.groups(&paths, &fresh).is_empty());
    }

    #[tokio::test]
    async fn a_batch_syncs_every_file_grouped_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watched::default();
        w.watch(dir.path());
        let paths: Vec<PathBuf> = (0..SYNCFS_FILES + 2)
            .map(|n| dir.path().join(format!(".s{n}")))
            .collect();
        for p in &paths {
            fs::write(p, b"data").unwrap();
        }
        let mut fresh = vec![true; paths.len()];
        fresh[0] = false;
        let groups = w.groups(&paths, &fresh);
        sync_paths(paths.clone(), groups).await.unwrap();
        assert!(paths.iter().all(|p| test_log::was_synced(p)));
        // A missing file is reported with its index, whatever its group.
        let mut gone = paths.clone();
        gone[5] = dir.path().join("missing");
        let err = sync_paths(gone, Vec::new()).await.unwrap_err();
        assert_eq!(err.0, 5);
    }

    #[test]
    fn commit_all_moves_many_files_and_few() {
        let dir = tempfile::tempdir().unwrap();
        for count in [SYNCFS_FILES + 3, 2] {
            let pairs: Vec<(PathBuf, PathBuf)> = (0..count)
                .map(|n| {
                    let temp = dir.path().join(format!(".c{count}-{n}.tmp"));
                    fs::write(&temp, format!("{n}")).unwrap();
                    (temp, dir.path().join(format!("c{count}-{n}")))
                })
                .collect();
            let refs: Vec<(&Path, &Path)> = pairs.iter().map(|(t, l)| (t.as_path(), l.as_path())).collect();
            commit_all(&refs).unwrap();
            for (n, (temp, local)) in pairs.iter().enumerate() {
                assert!(!temp.exists());
                assert_eq!(fs::read_to_string(local).unwrap(), n.to_string());
            }
        }
    }

    #[test]
    fn commit_all_skips_files_already_renamed_and_refuses_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let temp = |n: usize| dir.path().join(format!(".r{n}.tmp"));
        let local = |n: usize| dir.path().join(format!("r{n}"));
        let (temps, locals): (Vec<PathBuf>, Vec<PathBuf>) = (0..3).map(|n| (temp(n), local(n))).unzip();
        let refs: Vec<(&Path, &Path)> = temps
            .iter()
            .zip(&locals)
            .map(|(t, l)| (t.as_path(), l.as_path()))
            .collect();
        // File 0 was renamed by an earlier call; 1 and 2 wait.
        fs::write(&locals[0], b"0").unwrap();
        fs::write(&temps[1], b"1").unwrap();
        fs::write(&temps[2], b"2").unwrap();
        commit_all(&refs).unwrap();
        for n in 0..3 {
            assert!(!temps[n].exists());
            assert_eq!(fs::read_to_string(&locals[n]).unwrap(), n.to_string());
        }
        // A temporary file missing with no LOCAL either is an error, and
        // stops the renames there.
        fs::remove_file(&locals[1]).unwrap();
        fs::write(&temps[2], b"new 2").unwrap();
        let e = commit_all(&refs).unwrap_err();
        assert_eq!(e.context(), crate::error::ErrorContext::LocalFile);
        assert!(e.to_string().contains(".r1.tmp"), "{e}");
        assert!(!locals[1].exists());
        assert_eq!(fs::read_to_string(&temps[2]).unwrap(), "new 2");
        assert_eq!(fs::read_to_string(&locals[2]).unwrap(), "2");
    }

    #[test]
    fn missing_files_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        assert_eq!(disk_size(&p).unwrap(), None);
        truncate(&p).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
    }
}
