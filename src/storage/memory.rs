//! [`InMemoryStorage`]: objects in a map, for tests and fixtures.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Utc;

use super::{ObjectMeta, ObjectWriter, Storage, StorageError};

#[derive(Debug)]
struct Object {
    /// Shared with open readers; a `Vec` so that committing a write moves it, not copies it.
    bytes: Arc<Vec<u8>>,
    meta: ObjectMeta,
}

#[derive(Debug, Default)]
struct Inner {
    objects: RwLock<BTreeMap<String, Object>>,
    generation: AtomicU64,
}

/// Objects held in memory under any location string. Cloning shares the
/// objects.
///
/// Each write gets a fresh `etag` (a generation number), so a changed object
/// is never taken for the one read before.
///
/// # Example
/// ```
/// use batch_prediction::{InMemoryStorage, Storage, StorageExt};
///
/// let storage = InMemoryStorage::new();
/// storage.put("gs://b/in.json", b"{\"x\": 1}\n".to_vec());
/// assert_eq!(storage.read_bytes("gs://b/in.json")?, b"{\"x\": 1}\n");
/// assert_eq!(storage.list("gs://b/")?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryStorage {
    inner: Arc<Inner>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `bytes` at `location` at once, replacing what was there.
    pub fn put(&self, location: &str, bytes: impl Into<Vec<u8>>) -> ObjectMeta {
        self.inner.insert(location, bytes.into())
    }

    /// The bytes at `location`, if any.
    pub fn get(&self, location: &str) -> Option<Vec<u8>> {
        self.inner.read().get(location).map(|o| o.bytes.to_vec())
    }

    /// Every location held, sorted.
    pub fn locations(&self) -> Vec<String> {
        self.inner.read().keys().cloned().collect()
    }
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Object>> {
        // The map is only changed by whole inserts and removes; a panic elsewhere cannot leave it torn.
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Object>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, location: &str, bytes: Vec<u8>) -> ObjectMeta {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let meta = ObjectMeta {
            location: location.to_owned(),
            size: bytes.len() as u64,
            last_modified: Some(Utc::now()),
            etag: Some(generation.to_string()),
        };
        let object = Object {
            bytes: Arc::new(bytes),
            meta: meta.clone(),
        };
        self.write().insert(location.to_owned(), object);
        meta
    }
}

impl Storage for InMemoryStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        Ok(self
            .inner
            .read()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, o)| o.meta.clone())
            .collect())
    }

    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        self.inner
            .read()
            .get(location)
            .map(|o| o.meta.clone())
            .ok_or_else(|| StorageError::not_found(location))
    }

    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let bytes = self
            .inner
            .read()
            .get(location)
            .map(|o| Arc::clone(&o.bytes))
            .ok_or_else(|| StorageError::not_found(location))?;
        Ok(Box::new(Cursor::new(SharedBytes(bytes))))
    }

    fn open_at(&self, location: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let mut reader = Cursor::new(SharedBytes(
            self.inner
                .read()
                .get(location)
                .map(|o| Arc::clone(&o.bytes))
                .ok_or_else(|| StorageError::not_found(location))?,
        ));
        reader.set_position(offset);
        Ok(Box::new(reader))
    }

    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(MemoryWriter {
            inner: Arc::clone(&self.inner),
            location: location.to_owned(),
            buffer: Vec::new(),
        }))
    }

    /// Written to a buffer, stored at commit.
    fn upload_survives_delete(&self, _location: &str) -> bool {
        true
    }

    fn delete(&self, location: &str) -> Result<(), StorageError> {
        self.inner
            .write()
            .remove(location)
            .map(|_| ())
            .ok_or_else(|| StorageError::not_found(location))
    }
}

struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

struct MemoryWriter {
    inner: Arc<Inner>,
    location: String,
    buffer: Vec<u8>,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemoryWriter {
    fn commit(self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        let MemoryWriter {
            inner,
            location,
            buffer,
        } = *self;
        Ok(inner.insert(&location, buffer))
    }
}
