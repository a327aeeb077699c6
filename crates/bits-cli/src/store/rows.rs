//! How a job becomes rows and back: the job's row in `jobs` (its head as
//! JSON, without files) and one row per file in `files`, read in one
//! snapshot, and a save that writes only the file rows whose hash changed
//! since this connection last read or wrote the job.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bits_core::{FileInfo, Hresult, Job, Priority};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{corrupt, sql_failure};
use crate::error::Failure;

/// What this connection last read or wrote of a few jobs' files: the
/// job's `gen` then and the [`file_hash`] of each file, so a save writes only
/// the rows that changed. Bounded: a daemon that runs for months keeps at
/// most [`Known::MAX`] jobs, and forgets a job once it is final.
#[derive(Debug, Default)]
pub(super) struct Known(std::cell::RefCell<HashMap<Uuid, Rows>>);

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

    pub(super) fn forget(&self, id: Uuid) {
        self.0.borrow_mut().remove(&id);
    }
}

/// Runs `read` in one read transaction (a savepoint: inside a caller's
/// transaction it is part of it), so a job's row and its files' rows come
/// from the same save.
pub(super) fn snapshot<T>(
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

pub(super) fn get_on(conn: &Connection, db: &Path, known: &Known, id: Uuid) -> Result<Option<Job>, Failure> {
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
pub(super) fn read_files(
    conn: &Connection,
    db: &Path,
    id: Uuid,
) -> Result<(Vec<FileInfo>, Vec<u64>), Failure> {
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
/// change cost no serialization: a save serializes only the files it
/// writes.
fn file_hash(file: &FileInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    file.hash(&mut h);
    h.finish()
}

/// How [`save_on`] writes the job's row.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Write {
    /// A new job: an existing id is an error.
    Insert,
    /// Insert or replace.
    Upsert,
}

/// Writes `job`: its row and the rows of the files that changed since this
/// connection last read or wrote it (all of them when another connection
/// wrote it since, or this one never saw it), in one savepoint.
pub(super) fn save_on(
    conn: &Connection,
    db: &Path,
    known: &Known,
    job: &Job,
    how: Write,
) -> Result<(), Failure> {
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
pub(super) fn head_of(job: &Job) -> Job {
    job.without_files()
}

fn serialize_failure(job: &Job, e: &serde_json::Error) -> Failure {
    Failure::runtime(
        Hresult::E_FAIL,
        format!("cannot serialize job {}: {e}", job.id),
        "",
    )
}

pub(super) fn from_json(db: &Path, text: &str) -> Result<Job, Failure> {
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
pub(super) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::tests::{file_rows, job_with_files};
    use super::super::Store;
    use bits_core::{Event, JobState};

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
