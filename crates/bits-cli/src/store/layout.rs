//! Where a store folder is and how its files are made: `--store` and the
//! environment, the folder (`0700`), small private files (`0600`) such as
//! the lock files, and the failure an OS error about one of them becomes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bits_core::Hresult;

use crate::error::Failure;

/// The database file's name inside the store folder.
pub const DB_FILE: &str = "jobs.db";

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

/// Creates the database file (`0600`) when missing, so that SQLite never
/// creates it with the umask's mode.
pub(super) fn create_db(db: &Path) -> Result<(), Failure> {
    if db.exists() {
        return Ok(());
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_failure("create", db, &e)),
    }
}

/// Makes the database's `-wal` and `-shm` files `0600` when others may
/// read them: they hold the jobs as much as the database does.
pub(super) fn make_journal_private(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["-wal", "-shm"] {
        let mut p = db.to_path_buf().into_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        if let Ok(meta) = fs::metadata(&p) {
            if meta.permissions().mode() & 0o077 != 0 {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::schema::SCHEMA_VERSION;
    use super::super::Store;
    use super::*;

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
}
