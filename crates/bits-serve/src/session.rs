//! Upload sessions on disk: the server side of `Create-Session`,
//! `Fragment`, `Close-Session` and `Cancel-Session`.
//!
//! A session of destination `dir/name` is two hidden files beside it:
//! `dir/.name.bits-ID.part` (the bytes received, contiguous from 0) and
//! `dir/.name.bits-ID.meta` (the upload's total once a fragment told it).
//! Nothing else holds state, so a server killed at any point restarts with
//! every session and every byte it wrote:
//! - the offset received is the partial file's length: bytes of a fragment
//!   cut short are kept (they are the right bytes at the right place) and
//!   the client's next packet learns the offset from the Ack;
//! - the metadata is replaced atomically (written beside, renamed);
//! - the last fragment's bytes are synced before its Ack, and
//!   `Close-Session` links the partial file to its destination (or renames
//!   it over one when overwriting is allowed) and syncs the folder: the
//!   file appears whole or not at all.
//!
//! One packet of a session at a time (MC-BUP allows one request in flight):
//! the HTTP layer serializes the packets of a session.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::root::{Root, RESERVED_PREFIX};

/// What a server accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest upload (its total), if limited: beyond, 500
    /// `BG_E_TOO_LARGE`.
    pub max_upload_size: Option<u64>,
    /// Whether a finished upload may replace an existing file (else 409).
    pub allow_overwrite: bool,
    /// How long a session may sit idle before [`Sessions::expire`] deletes
    /// it.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_upload_size: None,
            allow_overwrite: false,
            idle: Duration::from_secs(24 * 3600),
        }
    }
}

/// A fragment's `Content-Range: bytes FIRST-LAST/TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The offset of its first byte.
    pub first: u64,
    /// The offset of its last byte (inclusive).
    pub last: u64,
    /// The whole upload's length.
    pub total: u64,
}

impl ContentRange {
    /// Parses `bytes a-b/total` with `a <= b < total`; 400 `E_INVALIDARG`
    /// otherwise (an unknown total `*` included: MC-BUP needs it).
    ///
    /// # Errors
    /// As above.
    pub fn parse(text: &str) -> Result<ContentRange, ServeError> {
        let bad = || ServeError::invalid(format!("malformed Content-Range {text:?}"));
        let rest = text.trim().strip_prefix("bytes").ok_or_else(bad)?.trim_start();
        let (span, total) = rest.split_once('/').ok_or_else(bad)?;
        let (first, last) = span.split_once('-').ok_or_else(bad)?;
        let number = |s: &str| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<u64>().map_err(|_| bad())
        };
        let range = ContentRange {
            first: number(first)?,
            last: number(last)?,
            total: number(total)?,
        };
        if range.first > range.last || range.last >= range.total {
            return Err(bad());
        }
        Ok(range)
    }

    /// The number of bytes it carries.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The upload sessions of a [`Root`].
#[derive(Debug, Clone)]
pub struct Sessions {
    root: Root,
    limits: Limits,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    /// Set by the first fragment; every later one must agree.
    total: Option<u64>,
}

/// Where a session lives on disk.
#[derive(Debug)]
struct Place {
    destination: PathBuf,
    part: PathBuf,
    meta: PathBuf,
    /// The reply of an upload-reply session, once made.
    reply: PathBuf,
}

/// The Ack of a fragment: the offset expected next
/// (`BITS-Received-Content-Range`), and whether the upload is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentAck {
    /// Bytes the server holds, contiguous from 0.
    pub received: u64,
    /// Bytes this fragment added (an overlap adds only what was missing).
    pub written: u64,
    /// `received` reached the total.
    pub complete: bool,
}

impl Sessions {
    /// The sessions of uploads under `root`.
    pub fn new(root: Root, limits: Limits) -> Sessions {
        Sessions { root, limits }
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// `Create-Session` for the file `url_path` names: a new session's id
    /// (`{GUID}`, upper case, as IIS makes them).
    ///
    /// # Errors
    /// The path's refusals ([`Root::resolve`]); 409 when the destination
    /// exists and overwriting is not allowed, or is a folder; 500 for a
    /// local error.
    pub fn create(&self, url_path: &str) -> Result<String, ServeError> {
        let destination = self.root.resolve(url_path)?;
        self.check_destination(&destination)?;
        self.root.make_parents(&destination)?;
        let id = format!("{{{}}}", uuid::Uuid::new_v4().to_string().to_uppercase());
        let place = place(&destination, &id)?;
        File::options()
            .write(true)
            .create_new(true)
            .open(&place.part)
            .map_err(|e| ServeError::io("creating the partial file", &e))?;
        write_meta(&place.meta, &Meta::default())?;
        tracing::debug!(session = %id, destination = %destination.display(), "session created");
        Ok(id)
    }

    /// How many bytes session `id` of `url_path` holds.
    ///
    /// # Errors
    /// 500 `BG_E_SESSION_NOT_FOUND` for an unknown (or expired, or
    /// malformed) id, or one of another destination.
    pub fn received(&self, url_path: &str, id: &str) -> Result<u64, ServeError> {
        let place = self.find(url_path, id)?;
        part_len(&place.part)
    }

    /// The start of `Fragment` `range` (with its `Content-Length`, which
    /// must be present and equal the range's length) for session `id`: a
    /// writer that skips the bytes the server already holds and writes
    /// the rest.
    ///
    /// # Errors
    /// 400 for a missing or wrong `Content-Length` or a total that
    /// changed; 416 with the offset expected for a gap; 500
    /// `BG_E_TOO_LARGE` over the size limit; 500 `BG_E_SESSION_NOT_FOUND`.
    pub fn fragment(
        &self,
        url_path: &str,
        id: &str,
        range: ContentRange,
        content_length: Option<u64>,
    ) -> Result<FragmentWriter, ServeError> {
        let place = self.find(url_path, id)?;
        match content_length {
            None => return Err(ServeError::invalid("a fragment without Content-Length")),
            Some(n) if n != range.len() => {
                return Err(ServeError::invalid(format!(
                    "Content-Length {n} does not match Content-Range {}-{} ({} bytes)",
                    range.first,
                    range.last,
                    range.len()
                )))
            }
            Some(_) => {}
        }
        let mut meta = read_meta(&place.meta)?;
        match meta.total {
            Some(total) if total != range.total => {
                return Err(ServeError::invalid(format!(
                    "the upload's total changed from {total} to {}",
                    range.total
                )))
            }
            Some(_) => {}
            None => {
                if let Some(max) = self.limits.max_upload_size.filter(|&max| range.total > max) {
                    return Err(ServeError::too_large(format!(
                        "an upload of {} bytes; this server takes at most {max}",
                        range.total
                    )));
                }
                meta.total = Some(range.total);
                write_meta(&place.meta, &meta)?;
            }
        }
        let received = part_len(&place.part)?;
        if range.first > received {
            return Err(ServeError::gap(
                received,
                format!(
                    "a fragment from byte {} but the server has {received}",
                    range.first
                ),
            ));
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&place.part)
            .map_err(|e| ServeError::io("opening the partial file", &e))?;
        Ok(FragmentWriter {
            file,
            skip: received - range.first,
            received,
            total: range.total,
            before: received,
            unflushed: received,
        })
    }

    /// `Close-Session`: a whole upload appears at its destination
    /// atomically (a hard link, so an existing file is never replaced
    /// unless overwriting is allowed: then a rename); an unfinished one is
    /// deleted (MC-BUP: Close-Session before the last fragment discards
    /// it). A session that received no fragment is an empty file (a
    /// Fragment cannot carry zero bytes; choice). Returns whether the file
    /// was committed.
    ///
    /// # Errors
    /// 409 when the destination appeared meanwhile and may not be
    /// replaced (the session is kept: the client may cancel it);
    /// 500 `BG_E_SESSION_NOT_FOUND`; 500 for a local error.
    pub fn close(&self, url_path: &str, id: &str) -> Result<bool, ServeError> {
        let place = self.find(url_path, id)?;
        let meta = read_meta(&place.meta)?;
        let received = part_len(&place.part)?;
        // No fragment at all (a Fragment needs a byte): an empty upload.
        if meta.total.unwrap_or(0) != received {
            remove(&place);
            tracing::debug!(session = %id, received, "closed before its last fragment: discarded");
            return Ok(false);
        }
        File::open(&place.part)
            .and_then(|f| f.sync_all())
            .map_err(|e| ServeError::io("syncing the upload", &e))?;
        if self.limits.allow_overwrite {
            self.check_destination(&place.destination)?;
            fs::rename(&place.part, &place.destination)
        } else {
            fs::hard_link(&place.part, &place.destination).and_then(|()| fs::remove_file(&place.part))
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ServeError::exists(format!(
                "{} exists and this server does not overwrite",
                place.destination.display()
            )),
            _ => ServeError::io("committing the upload", &e),
        })?;
        let _ = fs::remove_file(&place.meta);
        let _ = fs::remove_file(&place.reply);
        sync_parent(&place.destination)?;
        tracing::info!(session = %id, destination = %place.destination.display(), bytes = received, "upload committed");
        Ok(true)
    }

    /// For a session whose every byte arrived: the partial file (the
    /// upload, whole, not yet at its destination) and where its reply is
    /// kept (`None` when the upload is not whole).
    ///
    /// # Errors
    /// 500 `BG_E_SESSION_NOT_FOUND`.
    pub fn whole(&self, url_path: &str, id: &str) -> Result<Option<(PathBuf, PathBuf)>, ServeError> {
        let place = self.find(url_path, id)?;
        let meta = read_meta(&place.meta)?;
        let received = part_len(&place.part)?;
        Ok((meta.total == Some(received)).then_some((place.part, place.reply)))
    }

    /// The reply file of session `id` of the upload to `url_path`: `None`
    /// for a malformed id or path, or no reply.
    pub fn reply_at(&self, url_path: &str, id: &str) -> Option<PathBuf> {
        let destination = self.root.resolve(url_path).ok()?;
        let reply = place(&destination, id).ok()?.reply;
        reply.is_file().then_some(reply)
    }

    /// The reply file of session `id`, by id alone, searched for under the
    /// whole root: for the reply URLs of earlier versions, which named no
    /// upload path (`/.bits-reply/ID`). `None` for a malformed id or no
    /// reply.
    pub fn reply_of(&self, id: &str) -> Option<PathBuf> {
        if !valid_id(id) {
            return None;
        }
        let suffix = format!("{RESERVED_PREFIX}{id}.reply");
        let mut folders = vec![self.root.dir().to_path_buf()];
        while let Some(dir) = folders.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    folders.push(entry.path());
                } else if kind.is_file() && entry.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)) {
                    return Some(entry.path());
                }
            }
        }
        None
    }

    /// `Cancel-Session`: the partial file and its metadata are deleted.
    ///
    /// # Errors
    /// 500 `BG_E_SESSION_NOT_FOUND`.
    pub fn cancel(&self, url_path: &str, id: &str) -> Result<(), ServeError> {
        let place = self.find(url_path, id)?;
        remove(&place);
        tracing::debug!(session = %id, "session cancelled");
        Ok(())
    }

    /// Deletes the sessions under the root idle for longer than
    /// [`Limits::idle`] at `now` (by the last change of their files);
    /// returns how many.
    pub fn expire(&self, now: SystemTime) -> usize {
        let mut gone = 0;
        let mut folders = vec![self.root.dir().to_path_buf()];
        while let Some(dir) = folders.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                let path = entry.path();
                if kind.is_dir() {
                    folders.push(path);
                    continue;
                }
                let name = entry.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".part")) else {
                    continue;
                };
                if !stem.contains(RESERVED_PREFIX) {
                    continue;
                }
                let meta_path = dir.join(format!("{stem}.meta"));
                let last = [&path, &meta_path]
                    .iter()
                    .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
                    .max();
                if last.is_some_and(|t| now.duration_since(t).unwrap_or_default() > self.limits.idle) {
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_file(&meta_path);
                    let _ = fs::remove_file(dir.join(format!("{stem}.reply")));
                    gone += 1;
                }
            }
        }
        gone
    }

    fn check_destination(&self, destination: &Path) -> Result<(), ServeError> {
        match fs::symlink_metadata(destination) {
            Ok(m) if m.is_dir() => Err(ServeError::exists(format!(
                "{} is a folder",
                destination.display()
            ))),
            Ok(_) if !self.limits.allow_overwrite => Err(ServeError::exists(format!(
                "{} exists and this server does not overwrite",
                destination.display()
            ))),
            _ => Ok(()),
        }
    }

    fn find(&self, url_path: &str, id: &str) -> Result<Place, ServeError> {
        let destination = self.root.resolve(url_path)?;
        let place =
            place(&destination, id).map_err(|_| ServeError::no_session(format!("no session {id:?}")))?;
        if !place.part.is_file() || !place.meta.is_file() {
            return Err(ServeError::no_session(format!("no session {id} for {url_path}")));
        }
        Ok(place)
    }
}

/// Writes one fragment's new bytes: the first `skip` bytes the body
/// carries are already on disk (an overlap) and are dropped, never
/// rewritten.
#[derive(Debug)]
pub struct FragmentWriter {
    file: File,
    skip: u64,
    received: u64,
    total: u64,
    /// `received` when the fragment began.
    before: u64,
    /// Where the bytes not yet sent to the disk begin.
    unflushed: u64,
}

/// Written bytes past which their writeback is started (see
/// [`FragmentWriter::start_writeback`]).
const WRITEBACK_EVERY: u64 = 8 << 20;

impl FragmentWriter {
    /// Writes the part of `chunk` (the body's next bytes) not yet held.
    ///
    /// # Errors
    /// 500 for a local error (disk full: `0x80070070`); the bytes written
    /// before it are kept.
    pub fn write(&mut self, mut chunk: &[u8]) -> Result<(), ServeError> {
        let skipped = self.skip.min(chunk.len() as u64) as usize;
        self.skip -= skipped as u64;
        chunk = &chunk[skipped..];
        let room = (self.total - self.received).min(chunk.len() as u64) as usize;
        if room > 0 {
            self.file
                .write_all(&chunk[..room])
                .map_err(|e| ServeError::io("writing the fragment", &e))?;
            self.received += room as u64;
            if self.received - self.unflushed >= WRITEBACK_EVERY {
                self.start_writeback();
            }
        }
        Ok(())
    }

    /// Starts writing the bytes received since the last call to the disk,
    /// without waiting (`POSIX_FADV_DONTNEED` on Linux starts the
    /// writeback of a range's dirty pages, and drops its clean ones from
    /// the cache: an upload does not evict what the server's readers
    /// use). Without it the kernel would hold a whole upload dirty (its
    /// threshold is a share of memory) and the last fragment's sync would
    /// write all of it while the client waits: this way the disk works
    /// while the network does, and the final sync has only the tail left.
    /// Best effort: a failure changes nothing but the timing.
    fn start_writeback(&mut self) {
        let len = self.received - self.unflushed;
        if len == 0 {
            return;
        }
        let _ = rustix::fs::fadvise(
            &self.file,
            self.unflushed,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
        self.unflushed = self.received;
    }

    /// Bytes written so far (kept even when the body is cut short).
    pub fn written(&self) -> u64 {
        self.received - self.before
    }

    /// The fragment's end: its Ack. The last fragment's bytes are synced
    /// first, so an Ack that says "complete" is on disk.
    ///
    /// # Errors
    /// 500 for a failed sync.
    pub fn finish(mut self) -> Result<FragmentAck, ServeError> {
        let complete = self.received == self.total;
        if !complete {
            self.start_writeback();
        }
        if complete {
            self.file
                .sync_all()
                .map_err(|e| ServeError::io("syncing the upload", &e))?;
        }
        Ok(FragmentAck {
            received: self.received,
            written: self.received - self.before,
            complete,
        })
    }
}

/// The hidden files of session `id` of `destination`; the id must be a
/// `{GUID}`-like token (it is part of a file name).
fn place(destination: &Path, id: &str) -> Result<Place, ServeError> {
    let ok = valid_id(id);
    let name = destination.file_name().and_then(|n| n.to_str());
    let (true, Some(name)) = (ok, name) else {
        return Err(ServeError::no_session(format!("no session {id:?}")));
    };
    let dir = destination.parent().unwrap_or(Path::new("/"));
    Ok(Place {
        destination: destination.to_path_buf(),
        part: dir.join(format!(".{name}{RESERVED_PREFIX}{id}.part")),
        meta: dir.join(format!(".{name}{RESERVED_PREFIX}{id}.meta")),
        reply: dir.join(format!(".{name}{RESERVED_PREFIX}{id}.reply")),
    })
}

/// A session id as this server makes them (it becomes part of a file
/// name): letters, digits, braces and dashes, at most 100.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"{}-".contains(&b))
}

fn part_len(part: &Path) -> Result<u64, ServeError> {
    fs::metadata(part)
        .map(|m| m.len())
        .map_err(|e| ServeError::io("reading the partial file", &e))
}

fn read_meta(path: &Path) -> Result<Meta, ServeError> {
    let text = fs::read(path).map_err(|e| ServeError::io("reading the session", &e))?;
    serde_json::from_slice(&text).map_err(|e| ServeError::io("reading the session", &io::Error::other(e)))
}

/// Replaces the metadata atomically: written beside, synced, renamed.
fn write_meta(path: &Path, meta: &Meta) -> Result<(), ServeError> {
    let tmp = path.with_extension("meta-new");
    let text =
        serde_json::to_vec(meta).map_err(|e| ServeError::io("writing the session", &io::Error::other(e)))?;
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ServeError::io("writing the session", &e)
    })
}

fn sync_parent(path: &Path) -> Result<(), ServeError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ServeError::io("syncing the folder", &e))
}

fn remove(place: &Place) {
    let _ = fs::remove_file(&place.part);
    let _ = fs::remove_file(&place.meta);
    let _ = fs::remove_file(&place.reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(limits: Limits) -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::new(Root::new(dir.path()).unwrap(), limits);
        (dir, s)
    }

    fn range(text: &str) -> ContentRange {
        ContentRange::parse(text).unwrap()
    }

    /// Sends `body` as the fragment `first..` of a `total`-byte upload.
    fn send(
        s: &Sessions,
        path: &str,
        id: &str,
        first: u64,
        body: &[u8],
        total: u64,
    ) -> Result<FragmentAck, ServeError> {
        let r = ContentRange {
            first,
            last: first + body.len() as u64 - 1,
            total,
        };
        let mut w = s.fragment(path, id, r, Some(body.len() as u64))?;
        w.write(body)?;
        w.finish()
    }

    /// Hidden files in `dir` (the session's own).
    fn hidden(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn content_ranges_parse_strictly() {
        assert_eq!(
            range("bytes 0-9/10"),
            ContentRange {
                first: 0,
                last: 9,
                total: 10
            }
        );
        assert_eq!(range("bytes 128-212/1000").len(), 85);
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes 0-9/*",
            "0-9/10",
            "bytes -9/10",
            "bytes 0-9",
            "bytes +1-2/3",
            "bytes 0-x/10",
        ] {
            assert_eq!(ContentRange::parse(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn an_upload_in_fragments_appears_whole_only_on_close() {
        let (dir, s) = sessions(Limits::default());
        let id = s.create("/up/f.bin").unwrap();
        assert!(id.starts_with('{') && id.ends_with('}'), "{id}");
        assert_eq!(
            send(&s, "/up/f.bin", &id, 0, b"hello ", 11).unwrap(),
            FragmentAck {
                received: 6,
                written: 6,
                complete: false
            }
        );
        assert!(!dir.path().join("up/f.bin").exists());
        assert_eq!(
            send(&s, "/up/f.bin", &id, 6, b"world", 11).unwrap(),
            FragmentAck {
                received: 11,
                written: 5,
                complete: true
            }
        );
        assert!(
            !dir.path().join("up/f.bin").exists(),
            "never visible before Close-Session"
        );
        assert!(s.close("/up/f.bin", &id).unwrap());
        assert_eq!(fs::read(dir.path().join("up/f.bin")).unwrap(), b"hello world");
        assert!(
            hidden(&dir.path().join("up")).is_empty(),
            "{:?}",
            hidden(&dir.path().join("up"))
        );
        assert_eq!(s.received("/up/f.bin", &id).unwrap_err().status, 500);
    }

    #[test]
    fn a_gap_is_416_with_the_offset_expected() {
        let (_dir, s) = sessions(Limits::default());
        let id = s.create("/f").unwrap();
        send(&s, "/f", &id, 0, b"abc", 10).unwrap();
        let e = send(&s, "/f", &id, 5, b"fgh", 10).unwrap_err();
        assert_eq!((e.status, e.received), (416, Some(3)));
        assert_eq!(s.received("/f", &id).unwrap(), 3);
    }

    #[test]
    fn an_overlap_writes_only_its_new_bytes_and_never_rewrites() {
        let (dir, s) = sessions(Limits::default());
        let id = s.create("/f").unwrap();
        send(&s, "/f", &id, 0, b"abcd", 8).unwrap();
        // Bytes 2..6 again, with different content for the held part: the
        // held bytes stay, only 4 and 5 are new.
        assert_eq!(send(&s, "/f", &id, 2, b"XXef", 8).unwrap().received, 6);
        // Entirely held already: nothing written.
        let ack = send(&s, "/f", &id, 0, b"ZZ", 8).unwrap();
        assert_eq!((ack.received, ack.written), (6, 0));
        send(&s, "/f", &id, 6, b"gh", 8).unwrap();
        s.close("/f", &id).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"abcdefgh");
    }

    #[test]
    fn a_changed_total_or_a_wrong_length_is_400() {
        let (_dir, s) = sessions(Limits::default());
        let id = s.create("/f").unwrap();
        send(&s, "/f", &id, 0, b"ab", 10).unwrap();
        assert_eq!(send(&s, "/f", &id, 2, b"cd", 11).unwrap_err().status, 400);
        let r = range("bytes 2-3/10");
        assert_eq!(s.fragment("/f", &id, r, None).unwrap_err().status, 400);
        assert_eq!(s.fragment("/f", &id, r, Some(3)).unwrap_err().status, 400);
    }

    #[test]
    fn over_the_size_limit_is_too_large() {
        let (_dir, s) = sessions(Limits {
            max_upload_size: Some(4),
            ..Limits::default()
        });
        let id = s.create("/f").unwrap();
        let e = send(&s, "/f", &id, 0, b"ab", 5).unwrap_err();
        assert_eq!((e.status, e.code.0), (500, 0x8020_0020));
        send(&s, "/f", &id, 0, b"abcd", 4).unwrap();
    }

    #[test]
    fn unknown_and_foreign_sessions_are_not_found() {
        let (_dir, s) = sessions(Limits::default());
        let id = s.create("/a").unwrap();
        for (path, sid) in [
            ("/a", "{00000000-0000-0000-0000-000000000000}"),
            ("/b", id.as_str()),
            ("/a", "../../x"),
            ("/a", ""),
        ] {
            let e = s.received(path, sid).unwrap_err();
            assert_eq!((e.status, e.code.0), (500, 0x8020_001F), "{path} {sid}");
        }
    }

    #[test]
    fn sessions_survive_a_restart_with_every_byte_written() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let s = Sessions::new(Root::new(dir.path()).unwrap(), Limits::default());
            let id = s.create("/f").unwrap();
            // A fragment cut short: 3 of its 6 bytes arrived.
            let mut w = s.fragment("/f", &id, range("bytes 0-5/6"), Some(6)).unwrap();
            w.write(b"abc").unwrap();
            drop(w);
            id
        };
        let s = Sessions::new(Root::new(dir.path()).unwrap(), Limits::default());
        assert_eq!(s.received("/f", &id).unwrap(), 3);
        send(&s, "/f", &id, 3, b"def", 6).unwrap();
        assert!(s.close("/f", &id).unwrap());
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"abcdef");
    }

    #[test]
    fn an_existing_destination_is_409_unless_overwriting() {
        let (dir, s) = sessions(Limits::default());
        fs::write(dir.path().join("f"), b"old").unwrap();
        assert_eq!(s.create("/f").unwrap_err().status, 409);
        // Two sessions for one destination: the first to close wins.
        let a = s.create("/g").unwrap();
        let b = s.create("/g").unwrap();
        send(&s, "/g", &a, 0, b"A", 1).unwrap();
        send(&s, "/g", &b, 0, b"B", 1).unwrap();
        assert!(s.close("/g", &a).unwrap());
        assert_eq!(s.close("/g", &b).unwrap_err().status, 409);
        assert_eq!(fs::read(dir.path().join("g")).unwrap(), b"A");
        s.cancel("/g", &b).unwrap();

        let (dir, s) = sessions(Limits {
            allow_overwrite: true,
            ..Limits::default()
        });
        fs::write(dir.path().join("f"), b"old").unwrap();
        let id = s.create("/f").unwrap();
        send(&s, "/f", &id, 0, b"new", 3).unwrap();
        assert!(s.close("/f", &id).unwrap());
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn close_before_the_last_fragment_and_cancel_discard_the_upload() {
        let (dir, s) = sessions(Limits::default());
        let id = s.create("/f").unwrap();
        send(&s, "/f", &id, 0, b"ab", 4).unwrap();
        assert!(!s.close("/f", &id).unwrap());
        assert!(!dir.path().join("f").exists());
        assert!(hidden(dir.path()).is_empty());
        let id = s.create("/f").unwrap();
        send(&s, "/f", &id, 0, b"ab", 4).unwrap();
        s.cancel("/f", &id).unwrap();
        assert!(hidden(dir.path()).is_empty());
        assert_eq!(s.cancel("/f", &id).unwrap_err().status, 500);
    }

    #[test]
    fn idle_sessions_expire() {
        let (dir, s) = sessions(Limits {
            idle: Duration::from_secs(60),
            ..Limits::default()
        });
        let id = s.create("/sub/f").unwrap();
        assert_eq!(s.expire(SystemTime::now()), 0);
        assert_eq!(s.expire(SystemTime::now() + Duration::from_secs(120)), 1);
        assert!(hidden(&dir.path().join("sub")).is_empty());
        assert_eq!(s.received("/sub/f", &id).unwrap_err().status, 500);
    }

    #[test]
    fn the_session_files_cannot_be_named_by_a_url() {
        let (_dir, s) = sessions(Limits::default());
        let id = s.create("/f").unwrap();
        let part = format!("/.f.bits-{id}.part");
        assert_eq!(s.create(&part).unwrap_err().status, 403);
    }
}
