//! The persistent job store: one SQLite database per store folder.
//!
//! # Layout of a store folder (created `0700`)
//! | file | what |
//! | --- | --- |
//! | `jobs.db` (+ `-wal`, `-shm`) | the jobs, `0600`, WAL journal |
//! | `daemon.lock` | `flock`ed by the one daemon that carries the store |
//! | `store.lock` | short `flock` that orders "is a daemon up?" with direct edits |
//! | `daemon.sock` | the daemon's Unix socket, `0600` |
//! | `daemon.log` | stdout/stderr of a daemon started on demand |
//! | `crl/` | the OpenSSL backend's CRL cache |
//!
//! # Schema
//! `PRAGMA user_version` holds the schema version; [`MIGRATIONS`] takes a
//! database from any older version to [`SCHEMA_VERSION`] inside one
//! transaction. A database from a newer `bits` is refused
//! (`ERROR_REVISION_MISMATCH`, exit 2) and a damaged one too
//! (`ERROR_FILE_CORRUPT`, exit 2): the store never deletes or rewrites a
//! database it cannot read.
//!
//! Version 2 has two tables. `jobs`: the id, display name, state, priority
//! and times as columns (for lookups, ordering and pruning), the [`Job`]
//! without its files as JSON (serde, so that new job fields need no
//! migration) and `gen`, which every save increments. `files`: one row per
//! file (job id, index, the [`bits_core::FileInfo`] as JSON), deleted with
//! its job. Version 1 kept the files inside the job's JSON, so every save
//! of a job of 2,000 files rewrote 660 KB; now a save writes the job's row
//! and the rows of the files that changed since this connection last read
//! or wrote them (known by a hash of each file, trusted only while `gen`
//! says no other connection wrote the job since).
//!
//! # Durability
//! WAL with `synchronous = NORMAL`: a commit survives the process being
//! killed; the daemon saves progress every second.
//! Progress counters are advisory anyway: the engine resumes from the
//! length of the temporary file on disk.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use bits_core::{BitsError, FileInfo, Hresult, Job, Priority};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::error::{Failure, STORE_CORRUPT, STORE_TOO_NEW};

/// A commit that leaves more WAL pages than this checkpoints (SQLite's
/// `wal_autocheckpoint`): 16 MiB, a backstop; see [`Store::checkpoint`].
const AUTOCHECKPOINT_PAGES: u32 = 4000;

/// How often a daemon's background [`Store::checkpoint`] runs when no job
/// ends meanwhile.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Migration `i` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 0 → 1: the jobs table.
    "CREATE TABLE jobs (
        id          TEXT PRIMARY KEY NOT NULL,
        name        TEXT NOT NULL,
        state       TEXT NOT NULL,
        priority    INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL,
        job         TEXT NOT NULL
    );
    CREATE INDEX jobs_name ON jobs(name);
    CREATE INDEX jobs_state ON jobs(state, priority, created_ms);",
    // 1 → 2: files move out of the job's JSON into rows of their own.
    "ALTER TABLE jobs ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE files (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx    INTEGER NOT NULL,
        file   TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    ) WITHOUT ROWID;
    INSERT INTO files (job_id, idx, file)
        SELECT jobs.id, f.key, f.value FROM jobs, json_each(jobs.job, '$.files') AS f;
    UPDATE jobs SET job = json_set(job, '$.files', json('[]'));",
];

/// The database file's name inside the store folder.
pub const DB_FILE: &str = "jobs.db";

/// States that the daemon carries now or after a retry delay.
const ACTIVE_STATES: &str = "('QUEUED','CONNECTING','TRANSFERRING','TRANSIENT_ERROR')";
/// States the scheduler may run now.
const RUNNABLE_STATES: &str = "('QUEUED','CONNECTING','TRANSFERRING')";
/// Final states.
const FINAL_STATES: &str = "('ACKNOWLEDGED','CANCELLED')";

/// Where the store lives: `--store DIR`, else `$BITS_STORE`, else
/// `$XDG_STATE_HOME/bits`, else `~/.local/state/bits`. The result is
/// absolute (a relative DIR is taken from the current directory).
pub fn resolve_dir(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = if let Some(d) = flag {
        d.to_path_buf()
    } else if let Some(d) = env("BITS_STORE") {
        d
    } else if let Some(d) = env("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        d.join("bits")
    } else if let Some(home) = env("HOME") {
        home.join(".local/state/bits")
    } else {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            "no store folder: neither --store, $BITS_STORE, $XDG_STATE_HOME nor $HOME is set",
            "pass --store DIR",
        ));
    };
    absolute(&dir)
}

/// `path` made absolute against the current directory (no symlink
/// resolution, so the user's names stay).
pub fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| {
        Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("cannot make {} absolute: {e}", path.display()),
            "give an absolute path",
        )
    })
}

/// Creates the store folder (`0700`) and its parents when missing.
pub fn ensure_dir(dir: &Path) -> Result<(), Failure> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| io_failure("create", parent, &e))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_failure("create", dir, &e)),
    }
}

/// A failure about a file of the store, as `HRESULT_FROM_WIN32` of the OS error.
pub fn io_failure(what: &str, path: &Path, e: &io::Error) -> Failure {
    let code = Hresult::from_win32(bits_core::error::os_error_to_win32(e.raw_os_error().unwrap_or(0)));
    let code = if code.is_success() { Hresult::E_FAIL } else { code };
    Failure::runtime(
        code,
        format!("cannot {what} {}: {e}", path.display()),
        "check the store folder's permissions and free space",
    )
}

/// Creates (`0600`) or opens a small file of the store folder, such as a lock file.
pub fn open_private(path: &Path) -> Result<File, Failure> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_failure("open", path, &e))
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    db: PathBuf,
    known: Known,
}

/// What this connection last read or wrote of a few jobs' files: the
/// job's `gen` then and the [`file_hash`] of each file, so a save writes only
/// the rows that changed. Bounded: a daemon that runs for months keeps at
/// most [`Known::MAX`] jobs, and forgets a job once it is final.
#[derive(Debug, Default)]
struct Known(std::cell::RefCell<HashMap<Uuid, Rows>>);

#[derive(Debug)]
struct Rows {
    gen: i64,
    hashes: Vec<u64>,
}

impl Known {
    const MAX: usize = 64;

    /// The rows of `id` as known at `gen`, if that is still the job's
    /// generation.
    fn take(&self, id: Uuid, gen: Option<i64>) -> Option<Rows> {
        let rows = self.0.borrow_mut().remove(&id)?;
        (Some(rows.gen) == gen).then_some(rows)
    }

    fn put(&self, job: &Job, rows: Rows) {
        let mut map = self.0.borrow_mut();
        if job.state().is_final() {
            map.remove(&job.id);
            return;
        }
        if map.len() >= Self::MAX && !map.contains_key(&job.id) {
            map.clear();
        }
        map.insert(job.id, rows);
    }

    fn forget(&self, id: Uuid) {
        self.0.borrow_mut().remove(&id);
    }
}

impl Store {
    /// Opens the store in `dir`, creating the folder (`0700`) and the
    /// database (`0600`) when missing and migrating an older schema.
    pub fn open(dir: &Path) -> Result<Store, Failure> {
        ensure_dir(dir)?;
        let db = dir.join(DB_FILE);
        if !db.exists() {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&db)
            {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_failure("create", &db, &e)),
            }
        }
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_failure(&db, &e))?;
        let store = Store {
            conn,
            dir: dir.to_path_buf(),
            db,
            known: Known::default(),
        };
        store.prepare().map_err(|e| sql_failure(&store.db, &e))?;
        store.check_version()?;
        store.migrate()?;
        store.check_length()?;
        Ok(store)
    }

    /// Copies what the WAL holds back into the database without waiting
    /// for (or blocking) any reader or writer (`wal_checkpoint(PASSIVE)`),
    /// so that the next commit restarts a short WAL instead of paying an
    /// automatic checkpoint. The daemon runs it on a thread of its own.
    pub fn checkpoint(&self) -> Result<(), Failure> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| sql_failure(&self.db, &e))
    }

    /// The store folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    #[cfg(test)]
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    fn prepare(&self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        // Reading the header first makes a file that is not a database
        // fail here, before anything is written.
        let _: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "the store database is not in WAL mode");
        }
        // A running daemon checkpoints in the background after every job
        // and every [`CHECKPOINT_EVERY`] (see [`Store::checkpoint`]): a
        // commit that passes AUTOCHECKPOINT_PAGES copies the WAL back and
        // fsyncs the database itself (some 20 ms), which a command's insert
        // or a save of a running job should not wait for. The limit stays
        // as the backstop of a store without a daemon.
        self.conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};
             PRAGMA journal_size_limit = 4194304;"
        ))?;
        for suffix in ["-wal", "-shm"] {
            let mut p = self.db.clone().into_os_string();
            p.push(suffix);
            let p = PathBuf::from(p);
            if let Ok(meta) = fs::metadata(&p) {
                if meta.permissions().mode() & 0o077 != 0 {
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
                }
            }
        }
        Ok(())
    }

    fn user_version(&self) -> Result<i64, Failure> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_failure(&self.db, &e))
    }

    fn check_version(&self) -> Result<(), Failure> {
        let v = self.user_version()?;
        if v > SCHEMA_VERSION {
            return Err(Failure::bad_input(
                STORE_TOO_NEW,
                format!(
                    "the store {} has schema version {v}, newer than this bits knows (up to {SCHEMA_VERSION})",
                    self.db.display()
                ),
                "nothing was changed; use the newer bits that wrote it, or another --store",
            ));
        }
        if v < 0 {
            return Err(corrupt(&self.db, &format!("schema version {v}")));
        }
        Ok(())
    }

    fn migrate(&self) -> Result<(), Failure> {
        let run = || -> rusqlite::Result<()> {
            let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if v >= SCHEMA_VERSION {
                return Ok(());
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
                tx.execute_batch(sql)?;
                tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            }
            tx.commit()
        };
        if self.user_version()? >= SCHEMA_VERSION {
            return Ok(());
        }
        run().map_err(|e| sql_failure(&self.db, &e))?;
        self.check_version()
    }

    /// A database file shorter than its header says (cut by a full disk or
    /// a partial copy) is damaged. A cheap check for every command; the
    /// whole-file [`Store::check_integrity`] is the daemon's, at its start,
    /// since it reads every page (a command's cost would grow with the
    /// store). Other damage shows when a page is read: SQLite reports it
    /// and [`sql_failure`] makes it `ERROR_FILE_CORRUPT` as well.
    fn check_length(&self) -> Result<(), Failure> {
        use std::io::Read;
        let mut header = [0u8; 100];
        let len = match File::open(&self.db).and_then(|mut f| {
            f.read_exact(&mut header)?;
            f.metadata()
        }) {
            Ok(meta) => meta.len(),
            // Shorter than a header: a new database, not written yet.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io_failure("read", &self.db, &e)),
        };
        let be32 =
            |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65_536,
            n => u64::from(n),
        };
        // The size in the header counts only when it is as recent as the
        // last change (the "version-valid-for" rule of the file format).
        let pages = u64::from(be32(28));
        if be32(92) == be32(24) && pages * page_size > len {
            // With a WAL beside it, a checkpoint may be under way: SQLite
            // writes page 1 (with the new size) before the pages after it,
            // so the file is short for a moment. Only a file at rest (no
            // WAL, or an empty one) is judged.
            let mut wal = self.db.clone().into_os_string();
            wal.push("-wal");
            if fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Ok(());
            }
            return Err(corrupt(
                &self.db,
                &format!("the file holds {len} bytes, its header says {pages} pages of {page_size}"),
            ));
        }
        Ok(())
    }

    /// `PRAGMA quick_check`: reads every page.
    pub fn check_integrity(&self) -> Result<(), Failure> {
        let rows: Vec<String> = (|| {
            let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        })()
        .map_err(|e| sql_failure(&self.db, &e))?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(())
        } else {
            Err(corrupt(&self.db, &rows.join("; ")))
        }
    }

    /// Inserts a new job.
    pub fn insert(&self, job: &Job) -> Result<(), Failure> {
        save_on(&self.conn, &self.db, &self.known, job, Write::Insert)
    }

    /// Writes a job's current state (insert or replace).
    pub fn save(&self, job: &Job) -> Result<(), Failure> {
        save_on(&self.conn, &self.db, &self.known, job, Write::Upsert)
    }

    /// The job with this id.
    pub fn get(&self, id: Uuid) -> Result<Option<Job>, Failure> {
        get_on(&self.conn, &self.db, &self.known, id)
    }

    /// Job `id` without its files (`files` is empty): for a caller that
    /// needs its state, error or times, not the rows of 2,000 files.
    pub fn head(&self, id: Uuid) -> Result<Option<Job>, Failure> {
        let head: Option<String> = self
            .conn
            .prepare_cached("SELECT job FROM jobs WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row(params![id.to_string()], |r| r.get(0)).optional())
            .map_err(|e| sql_failure(&self.db, &e))?;
        head.map(|text| from_json(&self.db, &text)).transpose()
    }

    /// The state column of job `id` (as [`bits_core::JobState::as_str`]
    /// writes it): a cheap check without reading the whole job.
    pub fn state_text(&self, id: Uuid) -> Result<Option<String>, Failure> {
        self.conn
            .query_row(
                "SELECT state FROM jobs WHERE id = ?1",
                params![id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql_failure(&self.db, &e))
    }

    /// Reads job `id`, lets `f` change a copy, and writes the copy back when
    /// `f` says so — all in one transaction, so a refused operation changes
    /// nothing and two processes never interleave.
    pub fn update<T>(
        &self,
        id: Uuid,
        f: impl FnOnce(&mut Job) -> (Result<T, BitsError>, bool),
    ) -> Result<Result<T, BitsError>, Failure> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| sql_failure(&self.db, &e))?;
        let Some(mut job) = get_on(&tx, &self.db, &self.known, id)? else {
            return Ok(Err(BitsError::NotFound { job: id.to_string() }));
        };
        let before = job.clone();
        let (result, save_anyway) = f(&mut job);
        if (result.is_ok() || save_anyway) && job != before {
            save_on(&tx, &self.db, &self.known, &job, Write::Upsert)?;
        }
        if let Err(e) = tx.commit() {
            self.known.forget(id);
            return Err(sql_failure(&self.db, &e));
        }
        Ok(result)
    }

    /// Finds a job by id or display name. A name shared by several jobs
    /// picks the one that is not final when there is exactly one;
    /// otherwise it is ambiguous (`E_INVALIDARG`, listing the ids).
    pub fn resolve(&self, text: &str) -> Result<Job, Failure> {
        if let Ok(id) = Uuid::parse_str(text.trim()) {
            if let Some(job) = self.get(id)? {
                return Ok(job);
            }
        }
        let jobs = self.query(
            "SELECT job FROM jobs WHERE name = ?1 ORDER BY created_ms, rowid",
            params![text],
        )?;
        let pick = |jobs: Vec<&Job>| -> Option<Job> {
            if jobs.len() == 1 {
                Some(jobs[0].clone())
            } else {
                None
            }
        };
        let live: Vec<&Job> = jobs.iter().filter(|j| !j.state().is_final()).collect();
        if let Some(j) = pick(live.clone()) {
            return Ok(j);
        }
        if live.is_empty() {
            if let Some(j) = pick(jobs.iter().collect()) {
                return Ok(j);
            }
        }
        if jobs.is_empty() {
            return Err(Failure::from_bits(&BitsError::NotFound {
                job: format!("{text:?} in store {}", self.dir.display()),
            }));
        }
        let ids: Vec<String> = jobs
            .iter()
            .map(|j| format!("{} ({})", j.id, j.state().as_str()))
            .collect();
        Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("the name {text:?} is ambiguous: jobs {}", ids.join(", ")),
            "name the job by its id",
        ))
    }

    /// The jobs that are not final, oldest first; with `all`, the final
    /// ones too.
    pub fn list(&self, all: bool) -> Result<Vec<Job>, Failure> {
        let sql = if all {
            "SELECT job FROM jobs ORDER BY created_ms, rowid".to_string()
        } else {
            format!("SELECT job FROM jobs WHERE state NOT IN {FINAL_STATES} ORDER BY created_ms, rowid")
        };
        self.query(&sql, [])
    }

    /// Jobs the daemon owes work (QUEUED, CONNECTING, TRANSFERRING,
    /// TRANSIENT_ERROR).
    pub fn active(&self) -> Result<Vec<Job>, Failure> {
        self.query(
            &format!("SELECT job FROM jobs WHERE state IN {ACTIVE_STATES} ORDER BY created_ms, rowid"),
            [],
        )
    }

    /// Ids of the jobs that may run now, highest priority first, then
    /// oldest first.
    pub fn runnable_ids(&self) -> Result<Vec<Uuid>, Failure> {
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT id FROM jobs WHERE state IN {RUNNABLE_STATES}
                 ORDER BY priority, created_ms, rowid"
            ))?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        };
        let ids = run().map_err(|e| sql_failure(&self.db, &e))?;
        ids.iter()
            .map(|s| Uuid::parse_str(s).map_err(|_| corrupt(&self.db, &format!("job id {s:?}"))))
            .collect()
    }

    /// Forgets ACKNOWLEDGED and CANCELLED jobs last changed before `cutoff`.
    /// Returns how many.
    pub fn prune(&self, cutoff: SystemTime) -> Result<usize, Failure> {
        self.conn
            .execute(
                &format!("DELETE FROM jobs WHERE state IN {FINAL_STATES} AND modified_ms < ?1"),
                params![millis(cutoff)],
            )
            .map_err(|e| sql_failure(&self.db, &e))
    }

    /// Jobs whose JSON `sql` selects, each with its files (one snapshot).
    fn query<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<Job>, Failure> {
        snapshot(&self.conn, &self.db, || {
            let run = || -> rusqlite::Result<Vec<String>> {
                let mut stmt = self.conn.prepare_cached(sql)?;
                let rows = stmt.query_map(p, |r| r.get::<_, String>(0))?;
                rows.collect()
            };
            let rows = run().map_err(|e| sql_failure(&self.db, &e))?;
            rows.iter()
                .map(|s| {
                    let mut job = from_json(&self.db, s)?;
                    job.files = read_files(&self.conn, &self.db, job.id)?.0;
                    Ok(job)
                })
                .collect()
        })
    }
}

/// Runs `read` in one read transaction (a savepoint: inside a caller's
/// transaction it is part of it), so a job's row and its files' rows come
/// from the same save.
fn snapshot<T>(
    conn: &Connection,
    db: &Path,
    read: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    conn.execute_batch("SAVEPOINT read_job")
        .map_err(|e| sql_failure(db, &e))?;
    let result = read();
    let _ = conn.execute_batch("RELEASE read_job");
    result
}

fn get_on(conn: &Connection, db: &Path, known: &Known, id: Uuid) -> Result<Option<Job>, Failure> {
    snapshot(conn, db, || get_in(conn, db, known, id))
}

fn get_in(conn: &Connection, db: &Path, known: &Known, id: Uuid) -> Result<Option<Job>, Failure> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT job, gen FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| sql_failure(db, &e))?;
    let Some((head, gen)) = row else {
        return Ok(None);
    };
    let mut job = from_json(db, &head)?;
    let (files, hashes) = read_files(conn, db, id)?;
    job.files = files;
    known.put(&job, Rows { gen, hashes });
    Ok(Some(job))
}

/// The files of job `id` in order, and the [`file_hash`] of each.
fn read_files(conn: &Connection, db: &Path, id: Uuid) -> Result<(Vec<FileInfo>, Vec<u64>), Failure> {
    let texts: Vec<String> = conn
        .prepare_cached("SELECT file FROM files WHERE job_id = ?1 ORDER BY idx")
        .and_then(|mut stmt| stmt.query_map(params![id.to_string()], |r| r.get(0))?.collect())
        .map_err(|e| sql_failure(db, &e))?;
    let mut files = Vec::with_capacity(texts.len());
    let mut hashes = Vec::with_capacity(texts.len());
    for text in &texts {
        let file: FileInfo = serde_json::from_str(text)
            .map_err(|e| corrupt(db, &format!("a file record of job {id} does not parse ({e})")))?;
        hashes.push(file_hash(&file));
        files.push(file);
    }
    Ok((files, hashes))
}

/// What [`write_job`] compares to find the file rows that changed: a hash
/// of the file itself, not of its JSON, so that the rows that did not
/// change cost no serialization (a save of 2,000 files serialized them all,
/// some 1.5 ms, several times per job).
fn file_hash(file: &FileInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    file.hash(&mut h);
    h.finish()
}

/// How [`save_on`] writes the job's row.
#[derive(Clone, Copy, PartialEq)]
enum Write {
    /// A new job: an existing id is an error.
    Insert,
    /// Insert or replace.
    Upsert,
}

/// Writes `job`: its row and the rows of the files that changed since this
/// connection last read or wrote it (all of them when another connection
/// wrote it since, or this one never saw it), in one savepoint.
fn save_on(conn: &Connection, db: &Path, known: &Known, job: &Job, how: Write) -> Result<(), Failure> {
    let fail = |e: rusqlite::Error| sql_failure(db, &e);
    conn.execute_batch("SAVEPOINT save_job").map_err(fail)?;
    let written = write_job(conn, db, known, job, how);
    match written {
        Ok(rows) => {
            conn.execute_batch("RELEASE save_job").map_err(fail)?;
            known.put(job, rows);
            Ok(())
        }
        Err(f) => {
            known.forget(job.id);
            let _ = conn.execute_batch("ROLLBACK TO save_job; RELEASE save_job");
            Err(f)
        }
    }
}

fn write_job(conn: &Connection, db: &Path, known: &Known, job: &Job, how: Write) -> Result<Rows, Failure> {
    let fail = |e: rusqlite::Error| sql_failure(db, &e);
    let id = job.id.to_string();
    let gen: Option<i64> = conn
        .prepare_cached("SELECT gen FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![id], |r| r.get(0)).optional())
        .map_err(fail)?;
    let sql = match how {
        Write::Insert => {
            "INSERT INTO jobs (id, name, state, priority, created_ms, modified_ms, job, gen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        }
        Write::Upsert => {
            "INSERT INTO jobs (id, name, state, priority, created_ms, modified_ms, job, gen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(id) DO UPDATE SET name = ?2, state = ?3, priority = ?4,
                 modified_ms = ?6, job = ?7, gen = ?8"
        }
    };
    let new_gen = gen.unwrap_or(0) + 1;
    let head = serde_json::to_string(&head_of(job)).map_err(|e| serialize_failure(job, &e))?;
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                id,
                job.display_name,
                job.state().as_str(),
                priority_rank(job.priority),
                millis(job.creation_time),
                millis(job.modification_time),
                head,
                new_gen
            ])
        })
        .map_err(fail)?;
    let old = known.take(job.id, gen);
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO files (job_id, idx, file) VALUES (?1, ?2, ?3)
             ON CONFLICT(job_id, idx) DO UPDATE SET file = ?3",
        )
        .map_err(fail)?;
    let mut hashes = Vec::with_capacity(job.files.len());
    for (idx, file) in job.files.iter().enumerate() {
        let hash = file_hash(file);
        if old.as_ref().and_then(|o| o.hashes.get(idx)) != Some(&hash) {
            let text = serde_json::to_string(file).map_err(|e| serialize_failure(job, &e))?;
            stmt.execute(params![id, idx as i64, text]).map_err(fail)?;
        }
        hashes.push(hash);
    }
    if old.is_none_or(|o| o.hashes.len() > job.files.len()) {
        conn.prepare_cached("DELETE FROM files WHERE job_id = ?1 AND idx >= ?2")
            .and_then(|mut stmt| stmt.execute(params![id, job.files.len() as i64]))
            .map_err(fail)?;
    }
    Ok(Rows { gen: new_gen, hashes })
}

/// The job without its files (they are rows of `files`).
fn head_of(job: &Job) -> Job {
    job.without_files()
}

fn serialize_failure(job: &Job, e: &serde_json::Error) -> Failure {
    Failure::runtime(
        Hresult::E_FAIL,
        format!("cannot serialize job {}: {e}", job.id),
        "",
    )
}

fn from_json(db: &Path, text: &str) -> Result<Job, Failure> {
    serde_json::from_str(text).map_err(|e| corrupt(db, &format!("a job record does not parse ({e})")))
}

fn priority_rank(p: Priority) -> i64 {
    match p {
        Priority::Foreground => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn corrupt(db: &Path, what: &str) -> Failure {
    Failure::bad_input(
        STORE_CORRUPT,
        format!("the store database {} is damaged: {what}", db.display()),
        "bits changed nothing; restore it from a backup, or move it aside to start an empty store",
    )
}

/// Maps a SQLite error: a file that is not a database or is malformed is
/// [`STORE_CORRUPT`] (exit 2); anything else `E_FAIL` (exit 1).
pub fn sql_failure(db: &Path, e: &rusqlite::Error) -> Failure {
    if let rusqlite::Error::SqliteFailure(err, _) = e {
        match err.code {
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                return corrupt(db, &e.to_string());
            }
            ErrorCode::DiskFull => {
                return Failure::runtime(
                    Hresult(0x8007_0070),
                    format!("the store database {} cannot grow: {e}", db.display()),
                    "free some space and run the command again",
                );
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return Failure::runtime(
                    Hresult(0x8007_00AA),
                    format!("the store database {} stayed locked: {e}", db.display()),
                    "run the command again",
                );
            }
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
                return Failure::runtime(
                    Hresult(0x8007_0005),
                    format!("cannot open the store database {}: {e}", db.display()),
                    "check the store folder's owner and permissions",
                );
            }
            _ => {}
        }
    }
    Failure::runtime(
        Hresult::E_FAIL,
        format!("store database {}: {e}", db.display()),
        "run again with -v for details",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bits_core::{Event, JobState, JobType};

    fn job(name: &str) -> Job {
        Job::new(name, JobType::Download, "openssl")
    }

    #[test]
    fn state_text_reads_the_state_column() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut j = job("s");
        j.add_file("https://example.com/a", Path::new("/tmp/a")).unwrap();
        store.insert(&j).unwrap();
        assert_eq!(store.state_text(j.id).unwrap().as_deref(), Some("SUSPENDED"));
        j.resume().unwrap();
        j.apply(Event::Scheduled);
        j.apply(Event::Connected);
        store.save(&j).unwrap();
        assert_eq!(store.state_text(j.id).unwrap().as_deref(), Some("TRANSFERRING"));
        assert_eq!(store.state_text(Uuid::new_v4()).unwrap(), None);
    }

    #[test]
    fn head_reads_a_job_without_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut j = job("h");
        j.add_file("https://example.com/a", Path::new("/tmp/a")).unwrap();
        store.insert(&j).unwrap();
        let head = store.head(j.id).unwrap().unwrap();
        assert!(head.files.is_empty());
        assert_eq!(head.state(), j.state());
        assert_eq!(head.display_name, "h");
        assert_eq!(store.get(j.id).unwrap().unwrap().files.len(), 1);
        assert!(store.head(Uuid::new_v4()).unwrap().is_none());
    }

    #[test]
    fn a_checkpoint_copies_the_wal_back_into_the_database() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let checkpointer = Store::open(tmp.path()).unwrap();
        let mut j = job("c");
        for n in 0..200 {
            j.add_file(
                &format!("https://example.com/{n}"),
                Path::new(&format!("/tmp/c{n}")),
            )
            .unwrap();
        }
        store.insert(&j).unwrap();
        let len = || fs::metadata(store.db_path()).unwrap().len();
        // Under the automatic checkpoint's threshold, the rows are only in
        // the WAL.
        let before = len();
        checkpointer.checkpoint().unwrap();
        assert!(len() > before + 4096 * 10, "{before} -> {}", len());
        assert_eq!(store.get(j.id).unwrap().unwrap().files.len(), 200);
    }

    #[test]
    fn creates_private_folder_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/store");
        let store = Store::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let db = fs::metadata(store.db_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(db, 0o600);
        assert_eq!(store.user_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn round_trip_update_and_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let a = job("a");
        let b1 = job("b");
        let b2 = job("b");
        for j in [&a, &b1, &b2] {
            store.insert(j).unwrap();
        }
        assert_eq!(store.get(a.id).unwrap().unwrap(), a);
        assert_eq!(store.resolve("a").unwrap().id, a.id);
        assert_eq!(store.resolve(&a.id.to_string()).unwrap().id, a.id);
        let amb = store.resolve("b").unwrap_err();
        assert_eq!(amb.code, Hresult::E_INVALIDARG);
        assert!(amb.message.contains(&b1.id.to_string()));
        assert_eq!(store.resolve("zzz").unwrap_err().code, Hresult::BG_E_NOT_FOUND);

        // A refused operation changes nothing.
        let r = store.update(a.id, |j| (j.resume().map(|_| ()), false)).unwrap();
        assert_eq!(r.unwrap_err().hresult(), Hresult::BG_E_EMPTY);
        assert_eq!(store.get(a.id).unwrap().unwrap(), a);

        // Cancelling b1 makes "b" unique among live jobs.
        store
            .update(b1.id, |j| (bits_core::engine::cancel(j).map(|_| ()), false))
            .unwrap()
            .unwrap();
        assert_eq!(store.resolve("b").unwrap().id, b2.id);
        assert_eq!(store.list(false).unwrap().len(), 2);
        assert_eq!(store.list(true).unwrap().len(), 3);
        assert_eq!(
            store.prune(SystemTime::now() + Duration::from_secs(1)).unwrap(),
            1
        );
        assert_eq!(store.list(true).unwrap().len(), 2);
    }

    #[test]
    fn newer_schema_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        let db = tmp.path().join(DB_FILE);
        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = Store::open(tmp.path()).unwrap_err();
        assert_eq!(e.code, STORE_TOO_NEW);
        assert_eq!(e.exit, 2);
        let v: i64 = Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 99);
    }

    #[test]
    fn garbage_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join(DB_FILE);
        fs::write(&db, vec![b'x'; 5000]).unwrap();
        let e = Store::open(tmp.path()).unwrap_err();
        assert_eq!(e.code, STORE_CORRUPT, "{e}");
        assert_eq!(fs::read(&db).unwrap(), vec![b'x'; 5000]);
    }

    #[test]
    fn a_file_shorter_than_its_header_is_refused_and_a_growing_wal_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for n in 0..40 {
            let mut job = Job::new(format!("j{n}"), bits_core::JobType::Download, "openssl");
            job.add_file("http://127.0.0.1/x", &tmp.path().join("x")).unwrap();
            store.insert(&job).unwrap();
            // Pages only in the WAL, beyond the main file: still fine.
            drop(Store::open(tmp.path()).unwrap());
        }
        store.check_integrity().unwrap();
        drop(store);
        // Closing the last connection checkpoints: the main file is whole.
        let db = tmp.path().join(DB_FILE);
        let len = fs::metadata(&db).unwrap().len();
        drop(Store::open(tmp.path()).unwrap());
        let f = OpenOptions::new().write(true).open(&db).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(tmp.path().join(format!("{DB_FILE}{suffix}")));
        }
        let before = fs::read(&db).unwrap();
        let e = Store::open(tmp.path()).unwrap_err();
        assert_eq!((e.code, e.exit), (STORE_CORRUPT, 2), "{e}");
        assert_eq!(fs::read(&db).unwrap(), before);
    }

    fn job_with_files(name: &str, dir: &Path, n: usize) -> Job {
        let mut job = job(name);
        for k in 0..n {
            job.add_file(&format!("http://127.0.0.1/{k}"), &dir.join(format!("f{k}")))
                .unwrap();
        }
        job
    }

    fn file_rows(store: &Store, id: Uuid) -> Vec<(i64, String)> {
        let mut stmt = store
            .conn
            .prepare("SELECT idx, file FROM files WHERE job_id = ?1 ORDER BY idx")
            .unwrap();
        let rows = stmt
            .query_map(params![id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_version_1_store_moves_its_files_into_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join(DB_FILE);
        let old = job_with_files("old", tmp.path(), 3);
        let mut other = job_with_files("other", tmp.path(), 1);
        other.files[0].bytes_transferred = 7;
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
            for j in [&old, &other] {
                conn.execute(
                    "INSERT INTO jobs (id, name, state, priority, created_ms, modified_ms, job)
                     VALUES (?1, ?2, ?3, 2, 0, 0, ?4)",
                    params![
                        j.id.to_string(),
                        j.display_name,
                        j.state().as_str(),
                        serde_json::to_string(j).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.user_version().unwrap(), 2);
        assert_eq!(store.get(old.id).unwrap().unwrap(), old);
        assert_eq!(store.get(other.id).unwrap().unwrap(), other);
        assert_eq!(store.list(true).unwrap(), vec![old.clone(), other.clone()]);
        assert_eq!(file_rows(&store, old.id).len(), 3);
        let head: String = store
            .conn
            .query_row(
                "SELECT job FROM jobs WHERE id = ?1",
                params![old.id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(from_json(&db, &head).unwrap(), head_of(&old));
    }

    #[test]
    fn a_save_writes_only_the_files_that_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut j = job_with_files("many", tmp.path(), 50);
        store.insert(&j).unwrap();
        j.files[7].bytes_transferred = 100;
        j.resume().unwrap();
        j.apply(Event::Scheduled);
        j.apply(Event::Connected);
        let before = store.conn.total_changes();
        store.save(&j).unwrap();
        // The job's row and file 7's.
        assert_eq!(store.conn.total_changes() - before, 2);
        assert_eq!(store.get(j.id).unwrap().unwrap(), j);
        // Fewer files (not a BITS operation, but the rows must follow).
        j.files.truncate(10);
        store.save(&j).unwrap();
        assert_eq!(file_rows(&store, j.id).len(), 10);
        assert_eq!(store.get(j.id).unwrap().unwrap(), j);
    }

    #[test]
    fn another_writer_makes_the_next_save_write_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Store::open(tmp.path()).unwrap();
        let b = Store::open(tmp.path()).unwrap();
        let mut mine = job_with_files("shared", tmp.path(), 4);
        a.insert(&mine).unwrap();
        // B changes file 0 behind A's back.
        let mut theirs = b.get(mine.id).unwrap().unwrap();
        theirs.files[0].bytes_transferred = 5;
        b.save(&theirs).unwrap();
        // A saves its own copy with file 2 changed: its copy wins whole,
        // file 0 included, although A never changed file 0 itself.
        mine.files[2].bytes_transferred = 9;
        a.save(&mine).unwrap();
        assert_eq!(b.get(mine.id).unwrap().unwrap(), mine);
    }

    #[test]
    fn pruning_a_job_deletes_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut j = job_with_files("old", tmp.path(), 3);
        bits_core::engine::complete(&mut j).unwrap();
        assert_eq!(j.state(), JobState::Acknowledged);
        store.insert(&j).unwrap();
        assert_eq!(
            store.prune(SystemTime::now() + Duration::from_secs(60)).unwrap(),
            1
        );
        assert!(file_rows(&store, j.id).is_empty());
    }
}
