//! The schema of the store's database and the checks made when it is
//! opened: connection settings, `PRAGMA user_version` and the
//! [`MIGRATIONS`] that take an older database to [`SCHEMA_VERSION`], and the
//! damage checks (a cut file, `quick_check`).

use std::fs::{self, File};
use std::io;
use std::time::Duration;

use rusqlite::TransactionBehavior;

use super::{corrupt, layout, sql_failure, Store};
use crate::error::{Failure, STORE_TOO_NEW};

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

impl Store {
    pub(super) fn prepare(&self) -> rusqlite::Result<()> {
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
        // fsyncs the database itself, which a command's insert or a save
        // of a running job should not wait for. The limit stays
        // as the backstop of a store without a daemon.
        self.conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};
             PRAGMA journal_size_limit = 4194304;"
        ))?;
        layout::make_journal_private(&self.db);
        Ok(())
    }

    pub(super) fn user_version(&self) -> Result<i64, Failure> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_failure(&self.db, &e))
    }

    pub(super) fn check_version(&self) -> Result<(), Failure> {
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

    pub(super) fn migrate(&self) -> Result<(), Failure> {
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
    pub(super) fn check_length(&self) -> Result<(), Failure> {
        use std::io::Read;
        let mut header = [0u8; 100];
        let len = match File::open(&self.db).and_then(|mut f| {
            f.read_exact(&mut header)?;
            f.metadata()
        }) {
            Ok(meta) => meta.len(),
            // Shorter than a header: a new database, not written yet.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(layout::io_failure("read", &self.db, &e)),
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
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use rusqlite::{params, Connection};

    use super::super::tests::{file_rows, job_with_files};
    use super::super::{rows::from_json, rows::head_of, DB_FILE};
    use super::*;
    use crate::error::STORE_CORRUPT;
    use bits_core::Job;

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
}
