//! The served folder, and the one way a URL path becomes a file under it.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::ServeError;

/// The prefix of the server's own hidden files (partial uploads and their
/// metadata): no URL may name one.
pub(crate) const RESERVED_PREFIX: &str = ".bits-";

/// The folder `bits serve` serves: every file it reads or writes is under
/// it, and nothing a client sends leads out of it.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// The folder `dir` (made absolute; it must exist and be a folder).
    ///
    /// # Errors
    /// When `dir` cannot be resolved or is not a folder.
    pub fn new(dir: &Path) -> io::Result<Root> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a folder", dir.display()),
            ));
        }
        Ok(Root { dir })
    }

    /// The folder, absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file under the root that `url_path` (a request's path, still
    /// percent-encoded, without its query) names.
    ///
    /// Refused with 400 `E_INVALIDARG`: no file name (`/`, a trailing `/`),
    /// an empty segment, a percent escape that is no byte or no UTF-8.
    /// Refused with 403 `E_ACCESSDENIED`: a `.` or `..` segment (decoded:
    /// `%2e%2e` too), a decoded `/`, `\` or NUL inside a segment, a segment
    /// naming the server's hidden files (`.bits-…` or a name with `.bits-`
    /// in it), and a symlink anywhere between the root and the file (the
    /// file itself included).
    ///
    /// # Errors
    /// As above.
    pub fn resolve(&self, url_path: &str) -> Result<PathBuf, ServeError> {
        let path = url_path.strip_prefix('/').unwrap_or(url_path);
        if path.is_empty() || path.ends_with('/') {
            return Err(ServeError::invalid(format!("{url_path:?} names no file")));
        }
        let mut file = self.dir.clone();
        for raw in path.split('/') {
            if raw.is_empty() {
                return Err(ServeError::invalid(format!("{url_path:?} has an empty segment")));
            }
            let segment = percent_decode(raw)
                .ok_or_else(|| ServeError::invalid(format!("{url_path:?} has a bad percent escape")))?;
            if segment == "." || segment == ".." {
                return Err(ServeError::denied(format!(
                    "{url_path:?} leads out of the served folder"
                )));
            }
            if segment.contains(['/', '\\', '\0']) {
                return Err(ServeError::denied(format!(
                    "{url_path:?} has a segment with a slash, backslash or NUL"
                )));
            }
            if segment.contains(RESERVED_PREFIX) {
                return Err(ServeError::denied(format!(
                    "{url_path:?} names a file the server keeps"
                )));
            }
            file.push(segment);
            self.refuse_symlink(&file, url_path)?;
        }
        Ok(file)
    }

    /// Creates the folders between the root and `file` (a path from
    /// [`Root::resolve`]), refusing any that became a symlink meanwhile.
    ///
    /// # Errors
    /// 403 for a symlink or a file where a folder should be; 500 for a
    /// local error (disk full: `0x80070070`).
    pub fn make_parents(&self, file: &Path) -> Result<(), ServeError> {
        let Some(parent) = file.parent() else {
            return Ok(());
        };
        let relative = parent
            .strip_prefix(&self.dir)
            .map_err(|_| ServeError::denied(format!("{} is outside the served folder", file.display())))?;
        let mut dir = self.dir.clone();
        for part in relative.components() {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ServeError::denied(format!("{} is a symlink", dir.display())))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ServeError::denied(format!("{} is not a folder", dir.display()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(ServeError::io(&format!("creating {}", dir.display()), &e)),
                },
                Err(e) => return Err(ServeError::io(&format!("reading {}", dir.display()), &e)),
            }
        }
        Ok(())
    }

    fn refuse_symlink(&self, path: &Path, url_path: &str) -> Result<(), ServeError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(ServeError::denied(format!(
                "{url_path:?} goes through a symlink under the served folder"
            ))),
            _ => Ok(()),
        }
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not
/// UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn a_path_maps_under_the_root_decoded() {
        let (_d, root) = root();
        assert_eq!(
            root.resolve("/a/b%20c.txt").unwrap(),
            root.dir().join("a/b c.txt")
        );
        assert_eq!(root.resolve("x").unwrap(), root.dir().join("x"));
    }

    #[test]
    fn every_way_out_is_refused() {
        let (_d, root) = root();
        for (path, status) in [
            ("/../etc/passwd", 403),
            ("/a/../../x", 403),
            ("/%2e%2e/x", 403),
            ("/%2E%2E/x", 403),
            ("/a/%2e%2e%2f%2e%2e%2fx", 403),
            ("/a%2fb", 403),
            ("/a%5cb", 403),
            ("/a%00b", 403),
            ("/./x", 403),
            ("/.bits-abc", 403),
            ("/x.bits-part", 403),
            ("/", 400),
            ("", 400),
            ("/a/", 400),
            ("/a//b", 400),
            ("/%zz", 400),
            ("/%ff", 400),
        ] {
            let e = root.resolve(path).unwrap_err();
            assert_eq!(e.status, status, "{path}: {e}");
        }
        // An absolute path in the URL stays under the root.
        assert_eq!(root.resolve("//etc/passwd").unwrap_err().status, 400);
        assert_eq!(
            root.resolve("/etc/passwd").unwrap(),
            root.dir().join("etc/passwd")
        );
    }

    #[test]
    fn a_symlink_planted_under_the_root_is_refused() {
        let (_d, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.dir().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), root.dir().join("f")).unwrap();
        assert_eq!(root.resolve("/out/x").unwrap_err().status, 403);
        assert_eq!(root.resolve("/f").unwrap_err().status, 403);
        // A folder made meanwhile through a symlink is refused too.
        let e = root.make_parents(&root.dir().join("out/sub/x")).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(!outside.path().join("sub").exists());
    }

    #[test]
    fn parents_are_made_under_the_root() {
        let (_d, root) = root();
        let file = root.resolve("/a/b/c.txt").unwrap();
        root.make_parents(&file).unwrap();
        assert!(root.dir().join("a/b").is_dir());
        std::fs::write(root.dir().join("plain"), b"").unwrap();
        let e = root.make_parents(&root.dir().join("plain/x")).unwrap_err();
        assert_eq!(e.status, 403);
    }
}
