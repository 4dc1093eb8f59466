//! Pluggable object storage: the only way the executor reads inputs and
//! writes outputs.
//!
//! [`Storage`] is the small object-safe trait a backend implements;
//! [`StorageExt`] adds what is built on it, such as expanding the wildcards of
//! a job's `inputPaths`. Two backends ship: [`LocalStorage`] (the file system,
//! optionally mapping `gs://bucket/path` into a root directory) and
//! [`InMemoryStorage`] (for tests and fixtures).
//!
//! # Implementing a cloud store
//!
//! A backend for a real object store implements the five methods; the
//! contract below is what the executor relies on. A sketch for Cloud Storage,
//! with a blocking client of your choice:
//!
//! ```
//! use std::io::{Read, Write};
//! use batch_prediction::{Storage};
//! use batch_prediction::storage::{ObjectMeta, ObjectWriter, StorageError};
//!
//! #[derive(Debug)]
//! struct Gcs { /* a blocking HTTP client, credentials */ }
//!
//! impl Storage for Gcs {
//!     fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
//!         // objects.list with `prefix`, following nextPageToken; map each item
//!         // to ObjectMeta { location: "gs://bucket/name", size, last_modified, etag }
//!         // and sort by location.
//!         # unimplemented!()
//!     }
//!     fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
//!         // objects.get (metadata); 404 -> StorageError::not_found(location)
//!         # unimplemented!()
//!     }
//!     fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
//!         // objects.get?alt=media as a streaming body
//!         # unimplemented!()
//!     }
//!     fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
//!         // a resumable upload session; `commit` finalizes it, so the object
//!         // appears only then; dropping the writer cancels the session
//!         # unimplemented!()
//!     }
//!     fn delete(&self, location: &str) -> Result<(), StorageError> {
//!         # unimplemented!()
//!     }
//! }
//! ```

#[cfg(feature = "cloud")]
mod cloud;
pub(crate) mod glob;
mod local;
mod memory;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};

#[cfg(feature = "cloud")]
pub use cloud::{AzureStorage, CloudStorage, GcsStorage, S3Storage};
pub use local::LocalStorage;
pub use memory::InMemoryStorage;

use crate::status::Code;

/// What a listing or a `head` tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// The object's location, in the form it was asked for (`gs://b/x`, `file:///x`, `dir/x`).
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, where the backend knows.
    pub last_modified: Option<DateTime<Utc>>,
    /// A backend-defined version tag that changes whenever the content does, where the backend has one.
    pub etag: Option<String>,
}

impl ObjectMeta {
    /// Metadata with a location and size only.
    pub fn new(location: impl Into<String>, size: u64) -> Self {
        ObjectMeta {
            location: location.into(),
            size,
            last_modified: None,
            etag: None,
        }
    }
}

/// An object being written. Nothing is visible under its location until
/// [`commit`](ObjectWriter::commit) succeeds; dropping the writer without
/// committing abandons the write and leaves nothing behind.
pub trait ObjectWriter: Write + Send {
    /// Finishes the write: flushes, makes the object durable, and publishes it
    /// under its location in one step (replacing any object there).
    ///
    /// # Errors
    /// A [`StorageError`] when the object could not be made durable or
    /// published; the location is then unchanged.
    fn commit(self: Box<Self>) -> Result<ObjectMeta, StorageError>;
}

/// An object store.
///
/// # Contract
/// - **Locations** are strings as a job names them. A backend decides which
///   forms it serves (`gs://…`, `file://…`, plain paths) and refuses the
///   others with [`StorageErrorKind::InvalidLocation`].
/// - [`list`](Storage::list) returns every object whose location starts with
///   `prefix` — at any depth, as object stores list — sorted by location,
///   each once. A prefix that matches nothing is an empty list, not an error.
/// - [`head`](Storage::head), [`open`](Storage::open) and
///   [`delete`](Storage::delete) of a missing object fail with
///   [`StorageErrorKind::NotFound`].
/// - [`create`](Storage::create) is atomic: the object appears under its
///   location only when [`ObjectWriter::commit`] succeeds, complete; a failed
///   or abandoned write leaves nothing under that location.
/// - All methods may be called from many threads at once.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Every object whose location starts with `prefix`, sorted by location.
    ///
    /// # Errors
    /// A [`StorageError`] when the store cannot be listed.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// [`list`](Self::list), giving up with a
    /// [`StorageErrorKind::Cancelled`] error once `stop` returns `true`:
    /// a backend whose listing takes many requests (a page each) asks
    /// between them, so a cancelled job does not wait for a listing of
    /// millions of objects. The default asks once, before listing.
    ///
    /// # Errors
    /// As [`list`](Self::list), and `Cancelled`.
    fn list_until(
        &self,
        prefix: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        if stop() {
            return Err(StorageError::cancelled(prefix));
        }
        self.list(prefix)
    }

    /// The metadata of one object.
    ///
    /// # Errors
    /// [`StorageErrorKind::NotFound`] for a missing object, or another
    /// [`StorageError`].
    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError>;

    /// Opens an object for a streaming read.
    ///
    /// # Errors
    /// [`StorageErrorKind::NotFound`] for a missing object, or another
    /// [`StorageError`].
    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError>;

    /// Opens an object for a streaming read from byte `offset` on (the end
    /// of the object if it is shorter). The default opens it and skips
    /// `offset` bytes; a backend that can seek should.
    ///
    /// # Errors
    /// As [`Storage::open`], and a read error while skipping.
    fn open_at(&self, location: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let mut reader = self.open(location)?;
        std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink())
            .map_err(|e| StorageError::io(location, "read", e))?;
        Ok(reader)
    }

    /// Starts an atomic write of an object (see the contract).
    ///
    /// # Errors
    /// A [`StorageError`] when the write cannot be started.
    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// Deletes an object.
    ///
    /// # Errors
    /// [`StorageErrorKind::NotFound`] for a missing object, or another
    /// [`StorageError`].
    fn delete(&self, location: &str) -> Result<(), StorageError>;

    /// A key that is the same for every location naming the same object
    /// (`dir/a.json`, `dir/./a.json`, `file:///…/dir/a.json`), so that
    /// overlapping patterns read each object once, and a job's output
    /// directory is recognised among its inputs however either is spelled.
    /// It must also be defined for locations that do not exist yet
    /// (directories, objects not yet written), and key a directory so that
    /// the key of an object in it is the directory's key, `/`, and the
    /// object's name. The default is the location itself, right for stores
    /// with one name per object.
    fn object_key(&self, location: &str) -> String {
        location.to_owned()
    }

    /// Whether an object being written at `location` (created, not yet
    /// committed) survives a [`delete`](Storage::delete) of the object
    /// already there, so that a caller may run the two at once. The
    /// default, `false`, is right for stores that tie an upload under way
    /// to the name (Azure's uncommitted blocks go with the blob); a store
    /// that writes aside and publishes at commit (a temporary file and a
    /// rename, a resumable or multipart upload) answers `true`.
    fn upload_survives_delete(&self, location: &str) -> bool {
        let _ = location;
        false
    }
}

/// A storage behind dynamic dispatch.
pub type DynStorage = dyn Storage;

macro_rules! forward_storage {
    ($($ptr:ty),*) => {$(
        impl<S: Storage + ?Sized> Storage for $ptr {
            fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
                (**self).list(prefix)
            }
            fn list_until(
                &self,
                prefix: &str,
                stop: &(dyn Fn() -> bool + Sync),
            ) -> Result<Vec<ObjectMeta>, StorageError> {
                (**self).list_until(prefix, stop)
            }
            fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
                (**self).head(location)
            }
            fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
                (**self).open(location)
            }
            fn open_at(
                &self,
                location: &str,
                offset: u64,
            ) -> Result<Box<dyn Read + Send>, StorageError> {
                (**self).open_at(location, offset)
            }
            fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
                (**self).create(location)
            }
            fn delete(&self, location: &str) -> Result<(), StorageError> {
                (**self).delete(location)
            }
            fn object_key(&self, location: &str) -> String {
                (**self).object_key(location)
            }
            fn upload_survives_delete(&self, location: &str) -> bool {
                (**self).upload_survives_delete(location)
            }
        }
    )*};
}
forward_storage!(Arc<S>, Box<S>);

/// Conveniences built on [`Storage`], for every storage.
pub trait StorageExt: Storage {
    /// Expands a job's `inputPaths`: each pattern may hold Cloud Storage
    /// wildcards (`*` within a segment, `**` across segments, `?`, `[…]`);
    /// a pattern without any names one object. The matches of all patterns
    /// come back sorted by location and each object once, however many
    /// patterns or names reach it ([`Storage::object_key`]).
    ///
    /// # Errors
    /// [`StorageErrorKind::NoMatch`] naming the first pattern that matches
    /// nothing, [`StorageErrorKind::InvalidLocation`] for a malformed pattern,
    /// or the storage's own error.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::{InMemoryStorage, StorageExt};
    ///
    /// let storage = InMemoryStorage::new();
    /// for name in ["gs://b/in/a.json", "gs://b/in/b.json", "gs://b/in/sub/c.json", "gs://b/other"] {
    ///     storage.put(name, b"{}\n".to_vec());
    /// }
    /// let found = storage.expand(&["gs://b/in/*.json", "gs://b/in/a.json"])?;
    /// let names: Vec<&str> = found.iter().map(|m| m.location.as_str()).collect();
    /// assert_eq!(names, ["gs://b/in/a.json", "gs://b/in/b.json"]);
    ///
    /// let err = storage.expand(&["gs://b/missing*"]).unwrap_err();
    /// assert_eq!(err.to_string(), "no object matches \"gs://b/missing*\"");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn expand<P: AsRef<str>>(&self, patterns: &[P]) -> Result<Vec<ObjectMeta>, StorageError> {
        self.expand_until(patterns, &|| false)
    }

    /// [`expand`](Self::expand), giving up with a
    /// [`StorageErrorKind::Cancelled`] error once `stop` returns `true`,
    /// asked before each pattern and between the pages of each listing
    /// ([`Storage::list_until`]).
    ///
    /// # Errors
    /// As [`expand`](Self::expand), and `Cancelled`.
    fn expand_until<P: AsRef<str>>(
        &self,
        patterns: &[P],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut found: BTreeMap<String, ObjectMeta> = BTreeMap::new();
        let mut keys: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut add = |meta: ObjectMeta| {
            if keys.insert(self.object_key(&meta.location)) {
                found.insert(meta.location.clone(), meta);
            }
        };
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if stop() {
                return Err(StorageError::cancelled(pattern));
            }
            let mut matched = false;
            if glob::has_wildcard(pattern) {
                let compiled = glob::Pattern::new(pattern).map_err(|reason| {
                    StorageError::new(
                        StorageErrorKind::InvalidLocation,
                        pattern,
                        format!("invalid wildcard pattern: {reason}"),
                    )
                })?;
                for meta in self.list_until(compiled.literal_prefix(pattern), stop)? {
                    if compiled.matches(&meta.location) {
                        matched = true;
                        add(meta);
                    }
                }
            } else {
                match self.head(pattern) {
                    Ok(meta) => {
                        matched = true;
                        add(meta);
                    }
                    Err(e) if e.kind() == StorageErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if !matched {
                return Err(StorageError::new(
                    StorageErrorKind::NoMatch,
                    pattern,
                    String::new(),
                ));
            }
        }
        Ok(found.into_values().collect())
    }

    /// Writes `bytes` to `location` atomically.
    ///
    /// # Errors
    /// The storage's error.
    fn put_bytes(&self, location: &str, bytes: &[u8]) -> Result<ObjectMeta, StorageError> {
        let mut writer = self.create(location)?;
        writer
            .write_all(bytes)
            .map_err(|e| StorageError::io(location, "write", e))?;
        writer.commit()
    }

    /// Reads a whole object; for small objects such as summaries and fixtures.
    ///
    /// # Errors
    /// The storage's error.
    fn read_bytes(&self, location: &str) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::new();
        self.open(location)?
            .read_to_end(&mut out)
            .map_err(|e| StorageError::io(location, "read", e))?;
        Ok(out)
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

/// Joins an output location and a file name with one `/`.
///
/// ```
/// assert_eq!(batch_prediction::storage::join_location("gs://b/out/", "prediction.results-00000-of-00001"),
///            "gs://b/out/prediction.results-00000-of-00001");
/// ```
pub fn join_location(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

/// What kind of storage failure a [`StorageError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The object does not exist.
    NotFound,
    /// A wildcard pattern or location matched no object.
    NoMatch,
    /// Access was refused.
    PermissionDenied,
    /// The location is not one this storage serves, or escapes its root.
    InvalidLocation,
    /// Any other failure (I/O, network, the backend's own errors).
    Other,
    /// The caller gave up ([`Storage::list_until`]'s `stop`).
    Cancelled,
}

/// A storage failure: what, where, and why.
///
/// The message names the location: `cannot open "data/in.json": permission denied`.
#[derive(Debug)]
pub struct StorageError {
    kind: StorageErrorKind,
    location: String,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StorageError {
    /// An error of `kind` at `location`, with a message saying why.
    pub fn new(
        kind: StorageErrorKind,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StorageError {
            kind,
            location: location.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A [`StorageErrorKind::NotFound`] error for `location`.
    pub fn not_found(location: impl Into<String>) -> Self {
        StorageError::new(StorageErrorKind::NotFound, location, "")
    }

    /// A listing of `location` given up because its caller asked
    /// ([`Storage::list_until`]).
    pub fn cancelled(location: impl Into<String>) -> Self {
        StorageError::new(StorageErrorKind::Cancelled, location, "gave up listing")
    }

    /// An error from an I/O failure during `operation` (e.g. `"open"`), with
    /// the kind taken from the I/O error.
    pub fn io(location: impl Into<String>, operation: &str, error: io::Error) -> Self {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => StorageErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
            _ => StorageErrorKind::Other,
        };
        StorageError {
            kind,
            location: location.into(),
            message: format!("cannot {operation}"),
            source: Some(Box::new(error)),
        }
    }

    /// Wraps an error from a custom backend.
    pub fn other(
        location: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StorageError {
            kind: StorageErrorKind::Other,
            location: location.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The same error with `source` as its cause.
    #[cfg_attr(not(feature = "cloud"), allow(dead_code))]
    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The location or pattern the error is about.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The canonical code to report: NOT_FOUND, PERMISSION_DENIED,
    /// INVALID_ARGUMENT, UNAVAILABLE or CANCELLED.
    pub fn code(&self) -> Code {
        match self.kind {
            StorageErrorKind::NotFound | StorageErrorKind::NoMatch => Code::NotFound,
            StorageErrorKind::PermissionDenied => Code::PermissionDenied,
            StorageErrorKind::InvalidLocation => Code::InvalidArgument,
            StorageErrorKind::Other => Code::Unavailable,
            StorageErrorKind::Cancelled => Code::Cancelled,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = &self.location;
        match (self.kind, self.message.is_empty()) {
            (StorageErrorKind::NotFound, true) => write!(f, "{location:?} not found")?,
            (StorageErrorKind::NoMatch, true) => write!(f, "no object matches {location:?}")?,
            (StorageErrorKind::InvalidLocation, _) => {
                write!(f, "invalid location {location:?}: {}", self.message)?;
            }
            (_, true) => write!(f, "storage error at {location:?}")?,
            (_, false) => write!(f, "{} {location:?}", self.message)?,
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        let cases = [
            (
                StorageError::not_found("gs://b/x"),
                "\"gs://b/x\" not found",
                Code::NotFound,
            ),
            (
                StorageError::new(StorageErrorKind::NoMatch, "gs://b/*.json", ""),
                "no object matches \"gs://b/*.json\"",
                Code::NotFound,
            ),
            (
                StorageError::io(
                    "data/in.json",
                    "open",
                    io::Error::new(io::ErrorKind::PermissionDenied, "permission denied"),
                ),
                "cannot open \"data/in.json\": permission denied",
                Code::PermissionDenied,
            ),
            (
                StorageError::new(
                    StorageErrorKind::InvalidLocation,
                    "gs://b/../x",
                    "escapes the root",
                ),
                "invalid location \"gs://b/../x\": escapes the root",
                Code::InvalidArgument,
            ),
            (
                StorageError::other("gs://b/x", "upload failed for", "503 from server"),
                "upload failed for \"gs://b/x\": 503 from server",
                Code::Unavailable,
            ),
        ];
        for (err, message, code) in cases {
            assert_eq!(err.to_string(), message);
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn join() {
        assert_eq!(join_location("out", "f"), "out/f");
        assert_eq!(join_location("out//", "f"), "out/f");
        assert_eq!(join_location("gs://b", "f"), "gs://b/f");
    }
}
