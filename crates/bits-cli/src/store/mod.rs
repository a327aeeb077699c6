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
//! `PRAGMA user_version` holds the schema version; [`schema::MIGRATIONS`]
//! takes a database from any older version to [`schema::SCHEMA_VERSION`]
//! inside one transaction. A database from a newer `bits` is refused
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
//! rewrote every file of the job, however few had changed; now a save
//! writes the job's row and the rows of the files that changed since this
//! connection last read or wrote them (known by a hash of each file, trusted only while `gen`
//! says no other connection wrote the job since).
//!
//! # Durability
//! WAL with `synchronous = NORMAL`: a commit survives the process being
//! killed; the daemon saves progress every second.
//! Progress counters are advisory anyway: the engine resumes from the
//! length of the temporary file on disk.

mod layout;
mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bits_core::{BitsError, Hresult, Job};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

pub use layout::{absolute, ensure_dir, io_failure, open_private, resolve_dir, DB_FILE};
use rows::{from_json, get_on, millis, read_files, save_on, snapshot, Known, Write};
pub use schema::CHECKPOINT_EVERY;

use crate::error::{Failure, STORE_CORRUPT};

/// States that the daemon carries now or after a retry delay.
const ACTIVE_STATES: &str = "('QUEUED','CONNECTING','TRANSFERRING','TRANSIENT_ERROR')";
/// States the scheduler may run now.
const RUNNABLE_STATES: &str = "('QUEUED','CONNECTING','TRANSFERRING')";
/// Final states.
const FINAL_STATES: &str = "('ACKNOWLEDGED','CANCELLED')";

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    db: PathBuf,
    known: Known,
}

impl Store {
    /// Opens the store in `dir`, creating the folder (`0700`) and the
    /// database (`0600`) when missing and migrating an older schema.
    pub fn open(dir: &Path) -> Result<Store, Failure> {
        ensure_dir(dir)?;
        let db = dir.join(DB_FILE);
        layout::create_db(&db)?;
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
    /// needs its state, error or times, not the rows of all its files.
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
pub(super) mod tests {
    use std::fs;
    use std::time::{Duration, SystemTime};

    use super::*;
    use bits_core::{Event, JobType};

    pub(super) fn job(name: &str) -> Job {
        Job::new(name, JobType::Download, "openssl")
    }

    pub(super) fn job_with_files(name: &str, dir: &Path, n: usize) -> Job {
        let mut job = job(name);
        for k in 0..n {
            job.add_file(&format!("http://127.0.0.1/{k}"), &dir.join(format!("f{k}")))
                .unwrap();
        }
        job
    }

    pub(super) fn file_rows(store: &Store, id: Uuid) -> Vec<(i64, String)> {
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
}
