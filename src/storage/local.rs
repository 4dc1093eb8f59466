//! [`LocalStorage`]: the local file system, with `gs://` mapped into a root.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use super::{ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind};

/// The marker in the names of files being written; listings skip them.
const TEMP_MARKER: &str = ".bp-tmp.";

/// The local file system as a [`Storage`].
///
/// Locations it serves:
/// - plain paths, relative to the working directory or absolute (`data/in.json`);
/// - `file://` URIs with an absolute path (`file:///data/in.json`, percent-escapes decoded);
/// - with a root ([`with_gcs_root`](Self::with_gcs_root) or
///   [`confined`](Self::confined)), `gs://BUCKET/PATH`, read and written at
///   `ROOT/BUCKET/PATH`, so a job written for the cloud runs locally
///   unchanged. A `gs://` location with a `.` or `..` segment, or an empty
///   one, is refused: it cannot escape the root.
///
/// [`confined`](Self::confined) storage serves nothing outside its root:
/// relative paths resolve under the root, absolute paths and `file://` URIs
/// must lie inside it, and `..` is refused everywhere. Use it where locations
/// come from untrusted clients (an emulator). Symbolic links inside the root
/// are followed.
///
/// Objects carry an etag made of the file's device, inode and status-change
/// time (on Unix), so a rewritten file never passes for the one a job read,
/// even with its modification time restored.
///
/// Writes go to a hidden temporary file in the target directory
/// (`.NAME.bp-tmp.PID.N`), which is flushed, fsynced and renamed into place on
/// commit, and the directory fsynced; a dropped writer removes its temporary
/// file. Listings skip such files and do not follow symbolic links to
/// directories. Names that are not UTF-8 cannot be locations and are not listed.
///
/// # Example
/// ```
/// use batch_prediction::{LocalStorage, Storage, StorageExt};
///
/// let root = std::env::temp_dir().join(format!("bp-doc-{}", std::process::id()));
/// let storage = LocalStorage::with_gcs_root(&root);
/// storage.put_bytes("gs://bucket/in/a.json", b"{}\n")?;
/// assert!(root.join("bucket/in/a.json").is_file());
/// assert_eq!(storage.list("gs://bucket/in/")?[0].location, "gs://bucket/in/a.json");
/// assert!(storage.open("gs://bucket/../etc/passwd").is_err());
/// # std::fs::remove_dir_all(&root)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocalStorage {
    root: Option<PathBuf>,
    confined: bool,
}

impl LocalStorage {
    /// Plain paths and `file://` URIs; `gs://` locations are refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`new`](Self::new), and `gs://BUCKET/PATH` maps to `root/BUCKET/PATH`.
    pub fn with_gcs_root(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: Some(root.into()),
            confined: false,
        }
    }

    /// Only what lies inside `root`: `gs://BUCKET/PATH` maps to
    /// `root/BUCKET/PATH`, relative paths resolve under `root`, and anything
    /// else outside it is refused. So are names starting with `.` right
    /// under `root` (no bucket name starts with one): they stay private to
    /// whoever owns the root, such as the emulator's job store in `root/.jobs`.
    pub fn confined(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: Some(root.into()),
            confined: true,
        }
    }

    /// The root `gs://` locations map into, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The file-system path of `location`.
    ///
    /// # Errors
    /// [`StorageErrorKind::InvalidLocation`] for a location this storage
    /// does not serve or that would escape its root.
    pub fn resolve(&self, location: &str) -> Result<PathBuf, StorageError> {
        let invalid =
            |why: &str| StorageError::new(StorageErrorKind::InvalidLocation, location, why);
        if let Some(rest) = location.strip_prefix("gs://") {
            let Some(root) = &self.root else {
                return Err(invalid(
                    "gs:// locations need a root directory (LocalStorage::with_gcs_root)",
                ));
            };
            let mut path = root.clone();
            let segments: Vec<&str> = rest.split('/').collect();
            for (i, segment) in segments.iter().enumerate() {
                let last = i + 1 == segments.len();
                match *segment {
                    "" if last => {}
                    "" => return Err(invalid("empty path segment")),
                    "." | ".." => {
                        return Err(invalid("'.' and '..' segments would escape the root"));
                    }
                    s if s.contains('\\') || (cfg!(windows) && s.contains(':')) => {
                        return Err(invalid("'\\' is not allowed in a path segment"));
                    }
                    s if i == 0 && self.confined && s.starts_with('.') => {
                        return Err(invalid(PRIVATE));
                    }
                    s => path.push(s),
                }
            }
            if self.confined {
                beneath(root, &path).map_err(invalid)?;
            }
            return Ok(path);
        }
        let plain = if let Some(rest) = location.strip_prefix("file://") {
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                return Err(invalid("expected file:///ABSOLUTE/PATH"));
            }
            PathBuf::from(percent_decode(rest).ok_or_else(|| invalid("bad %-escape"))?)
        } else if location.contains("://") {
            return Err(invalid(
                "unsupported scheme: expected a path, file:// or gs://",
            ));
        } else {
            PathBuf::from(location)
        };
        if !self.confined {
            return Ok(plain);
        }
        let root = self.root.as_deref().expect("confined storage has a root");
        if plain.components().any(|c| c == Component::ParentDir) {
            return Err(invalid("'..' would escape the root"));
        }
        let path = if plain.is_absolute() {
            if !plain.starts_with(root) {
                return Err(invalid("outside the storage root"));
            }
            plain
        } else {
            root.join(plain)
        };
        let top = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.components().next());
        if top.is_some_and(|c| c.as_os_str().to_string_lossy().starts_with('.')) {
            return Err(invalid(PRIVATE));
        }
        beneath(root, &path).map_err(invalid)?;
        Ok(path)
    }

    fn meta(location: String, metadata: &fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            location,
            size: metadata.len(),
            last_modified: metadata.modified().ok().map(DateTime::<Utc>::from),
            etag: file_version(metadata),
        }
    }
}

/// Whether `path` stays under `root` once symbolic links are followed, and
/// out of the private dot-names at the top of the root: checked on the
/// deepest part of `path` that exists. (A link made between this check and
/// the use of the path is not caught: confinement guards against jobs that
/// name paths, not against someone who can write links into the root.)
fn beneath(root: &Path, path: &Path) -> Result<(), &'static str> {
    let Ok(root) = root.canonicalize() else {
        return Ok(()); // no root yet: nothing in it can lead out
    };
    let mut existing = path;
    while fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(()),
        }
    }
    let Ok(real) = existing.canonicalize() else {
        return Err("a symbolic link that leads nowhere");
    };
    let Ok(inside) = real.strip_prefix(&root) else {
        return Err("a symbolic link leads outside the storage root");
    };
    if inside
        .components()
        .next()
        .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    {
        return Err(PRIVATE);
    }
    Ok(())
}

/// `path` with its deepest existing ancestor made canonical and the rest
/// appended (`.` dropped, `..` applied to what is appended: nothing below an
/// ancestor that does not exist can be a link).
fn canonical_key(path: &Path) -> Option<String> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let mut existing = path;
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    let base = loop {
        match fs::canonicalize(existing) {
            Ok(real) => break real,
            Err(_) => {
                let name = existing.file_name()?;
                rest.push(name);
                existing = existing.parent()?;
                if existing.as_os_str().is_empty() {
                    existing = Path::new(".");
                }
            }
        }
    };
    let mut key = base;
    for name in rest.into_iter().rev() {
        if name == ".." {
            key.pop();
        } else {
            key.push(name);
        }
    }
    key.to_str().map(str::to_owned)
}

/// Why a confined storage refuses a dot-name at the top of its root.
const PRIVATE: &str = "names starting with '.' at the top of the storage root are private";

/// A version tag that changes whenever the file's content can have changed:
/// device, inode and status-change time, which no user can set back (unlike
/// the modification time, which `cp -p`, `rsync -t` and `tar` restore).
#[cfg(unix)]
fn file_version(metadata: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    Some(format!(
        "{:x}-{:x}-{}.{:09}",
        metadata.dev(),
        metadata.ino(),
        metadata.ctime(),
        metadata.ctime_nsec()
    ))
}

#[cfg(not(unix))]
fn file_version(_: &fs::Metadata) -> Option<String> {
    None
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// Every file below `dir`, as (path relative to `dir` with `/`, metadata);
/// symbolic links to directories are not followed.
fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, fs::Metadata)>,
    location: &str,
) -> Result<(), StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(location, "list", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(location, "list", e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_temp(&name) {
            continue;
        }
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        push_entry(&entry.path(), child_rel, out, location)?;
    }
    Ok(())
}

fn push_entry(
    path: &Path,
    rel: String,
    out: &mut Vec<(String, fs::Metadata)>,
    location: &str,
) -> Result<(), StorageError> {
    let link = fs::symlink_metadata(path).map_err(|e| StorageError::io(location, "list", e))?;
    if link.is_dir() {
        return walk(path, &rel, out, location);
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => out.push((rel, meta)),
        Ok(_) => {} // a link to a directory, a socket…
        Err(e) if e.kind() == io::ErrorKind::NotFound => {} // a dangling link, or removed meanwhile
        Err(e) => return Err(StorageError::io(location, "list", e)),
    }
    Ok(())
}

impl LocalStorage {
    /// The file of `location`, open for reading: a regular file only.
    fn open_file(&self, location: &str) -> Result<File, StorageError> {
        let path = self.resolve(location)?;
        let file = File::open(&path).map_err(|e| StorageError::io(location, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| StorageError::io(location, "open", e))?;
        if !meta.is_file() {
            return Err(StorageError::new(
                StorageErrorKind::NotFound,
                location,
                "no object (a directory or special file) at",
            ));
        }
        Ok(file)
    }
}

impl Storage for LocalStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let (dir_part, name_prefix) = match prefix.rfind('/') {
            Some(i) => prefix.split_at(i + 1),
            None => ("", prefix),
        };
        let dir = match dir_part {
            "" => self.resolve(".")?,
            d => self.resolve(d)?,
        };
        // The dot-names at the top of a confined root are private: not listed.
        let hide_dot_names = self.confined
            && self
                .root
                .as_deref()
                .is_some_and(|root| dir.as_path() == root);
        let mut found = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(StorageError::io(prefix, "list", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(prefix, "list", e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(name_prefix)
                || is_temp(&name)
                || (hide_dot_names && name.starts_with('.'))
            {
                continue;
            }
            push_entry(&entry.path(), name, &mut found, prefix)?;
        }
        let mut metas: Vec<ObjectMeta> = found
            .into_iter()
            .map(|(rel, meta)| Self::meta(format!("{dir_part}{rel}"), &meta))
            .collect();
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas)
    }

    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        let path = self.resolve(location)?;
        let meta =
            fs::metadata(&path).map_err(|e| StorageError::io(location, "read metadata of", e))?;
        if !meta.is_file() {
            return Err(StorageError::new(
                StorageErrorKind::NotFound,
                location,
                "no object (a directory or special file) at",
            ));
        }
        Ok(Self::meta(location.to_owned(), &meta))
    }

    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        Ok(Box::new(self.open_file(location)?))
    }

    fn open_at(&self, location: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        use std::io::{Seek, SeekFrom};
        let mut file = self.open_file(location)?;
        // Past the end, reads find nothing.
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| StorageError::io(location, "seek in", e))?;
        Ok(Box::new(file))
    }

    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.resolve(location)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Err(StorageError::new(
                StorageErrorKind::InvalidLocation,
                location,
                "expected a file name",
            ));
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_owned()
        };
        let name = name.to_owned();
        fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(location, "create the directory of", e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}{TEMP_MARKER}{}.{n}", std::process::id()));
        let file = File::create(&temp).map_err(|e| StorageError::io(location, "create", e))?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            path,
            dir,
            location: location.to_owned(),
            written: 0,
            syncer: None,
        }))
    }

    fn delete(&self, location: &str) -> Result<(), StorageError> {
        let path = self.resolve(location)?;
        fs::remove_file(&path).map_err(|e| StorageError::io(location, "delete", e))
    }

    /// The canonical file-system path (links and `.`/`..` resolved), also
    /// for a path that does not exist yet: its deepest existing ancestor
    /// made canonical, and the rest appended.
    fn object_key(&self, location: &str) -> String {
        self.resolve(location)
            .ok()
            .and_then(|p| canonical_key(&p))
            .unwrap_or_else(|| location.to_owned())
    }

    /// A temporary file, renamed into place at commit.
    fn upload_survives_delete(&self, _location: &str) -> bool {
        true
    }
}

struct LocalWriter {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    location: String,
    /// Bytes written so far.
    written: u64,
    /// Syncs a large file's data as it grows, once it passed [`SYNC_EVERY`].
    syncer: Option<Syncer>,
}

/// A large file's data is synced on a thread of its own every this many
/// bytes, so that the sync at commit, which the caller waits for, finds
/// little left to write (it syncs everything, as it always did).
const SYNC_EVERY: u64 = 8 << 20;

/// The thread that syncs a file's data while it is written, and how to
/// wake it (a full channel means a sync is already due).
struct Syncer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<Option<io::Error>>>,
}

impl Syncer {
    /// Starts one on its own handle of `file`; `None` if it cannot.
    fn start(file: &File) -> Option<Syncer> {
        let file = file.try_clone().ok()?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("bp-sync".into())
            .spawn(move || {
                // The first error is the commit's to report: the kernel
                // tells a write-back error once, to this sync, not again
                // to the commit's.
                while woken.recv().is_ok() {
                    if let Err(e) = file.sync_data() {
                        return Some(e);
                    }
                }
                None
            })
            .ok()?;
        Some(Syncer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }

    /// Stops it, waiting for a sync under way; the error one met.
    fn stop(&mut self) -> Option<io::Error> {
        self.wake.take();
        let thread = self.thread.take()?;
        thread
            .join()
            .unwrap_or_else(|_| Some(io::Error::other("the background sync panicked")))
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl LocalWriter {
    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("write after commit"))
    }

    /// Counts `n` more bytes written; each [`SYNC_EVERY`] of them wakes the syncer.
    fn wrote(&mut self, n: usize) {
        let before = self.written;
        self.written += n as u64;
        if self.written / SYNC_EVERY == before / SYNC_EVERY {
            return;
        }
        if self.syncer.is_none() {
            self.syncer = self
                .file
                .as_ref()
                .and_then(|file| Syncer::start(file.get_ref()));
        }
        if let Some(syncer) = &self.syncer {
            syncer.wake();
        }
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file()?.write(buf)?;
        self.wrote(n);
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_all(buf)?;
        self.wrote(buf.len());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl LocalWriter {
    fn finish(&self, writer: BufWriter<File>) -> Result<ObjectMeta, StorageError> {
        let err = |op: &str, e: io::Error| StorageError::io(self.location.as_str(), op, e);
        let file = writer
            .into_inner()
            .map_err(|e| err("write", e.into_error()))?;
        file.sync_all().map_err(|e| err("sync", e))?;
        let meta = file.metadata().map_err(|e| err("read metadata of", e))?;
        drop(file);
        fs::rename(&self.temp, &self.path).map_err(|e| err("publish", e))?;
        // Make the rename itself durable.
        let dir = File::open(&self.dir).map_err(|e| err("sync the directory of", e))?;
        dir.sync_all()
            .map_err(|e| err("sync the directory of", e))?;
        Ok(LocalStorage::meta(self.location.clone(), &meta))
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        // No sync of ours under way beside the last one; an error one met
        // fails the commit, as the commit's own sync would have.
        if let Some(error) = self.syncer.take().and_then(|mut syncer| syncer.stop()) {
            return Err(StorageError::io(self.location.as_str(), "sync", error));
        }
        let writer = self.file.take().ok_or_else(|| {
            StorageError::new(
                StorageErrorKind::Other,
                self.location.as_str(),
                "committed twice:",
            )
        })?;
        let result = self.finish(writer);
        if result.is_err() {
            // Nothing may appear under the final name; the temporary file goes too.
            let _ = fs::remove_file(&self.temp);
        }
        result
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned: nothing may appear under the final name.
            let _ = fs::remove_file(&self.temp);
        }
    }
}
