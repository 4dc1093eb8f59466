//! Real object stores (feature `cloud`): [`GcsStorage`] for Cloud Storage
//! (`gs://BUCKET/PATH`), [`S3Storage`] for S3 and S3-compatible stores
//! (`s3://BUCKET/PATH`), [`AzureStorage`] for Azure Blob Storage
//! (`az://CONTAINER/PATH`), and [`CloudStorage`], which routes each location
//! to one of them by its scheme and everything else to a [`LocalStorage`].
//!
//! Both clients are async; each backend owns a small Tokio runtime and waits
//! for it on the calling thread, so the crate stays synchronous for its
//! users, and calling it from a thread that is itself inside a Tokio
//! runtime (an axum handler, say) does not panic.
//!
//! Reads stream with read-ahead: a task on the runtime pulls the object's
//! body into a bounded queue of chunks while the caller reads. A read that
//! fails mid-object is resumed from the byte it reached, pinned to the
//! object's generation (GCS) or etag (S3, Azure), so no byte is lost or read
//! twice. Writes are uploads that become visible only when committed: one
//! request for a small object, a resumable (GCS), multipart (S3) or block
//! list (Azure) upload for a large one; a writer dropped without commit
//! cancels its upload (on Azure, the blocks it sent stay uncommitted, and
//! the service drops them).

mod azure;
mod gcs;
mod s3;
mod store;

use std::future::Future;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::retry::RetryPolicy;

pub use azure::AzureStorage;
pub use gcs::GcsStorage;
pub use s3::S3Storage;

use super::{LocalStorage, ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind};

/// How many chunks of an object a reader holds ahead of the caller.
const READ_AHEAD_CHUNKS: usize = 16;

/// The size of the parts a large object is uploaded in: a multiple of
/// 256 KiB (GCS's resumable chunk unit) and at least 5 MiB (S3's smallest part).
pub(crate) const UPLOAD_PART_BYTES: usize = 8 << 20;

/// What the last listing or `head` told about each object, so that reading
/// an object just listed (as a job reads its inputs) takes one request, not
/// a metadata request and then the read: on a store tens of milliseconds
/// away, that halves the wait before each small object's first byte.
/// An entry is used once (a later open asks again), replaced by every
/// listing or `head` of the object (so a read follows the caller's last
/// look, as a job's plan does), forgotten when this storage writes or
/// deletes the object, and the whole map is dropped when it reaches
/// [`Listed::MAX`] entries, so it stays small. Reads from an entry are
/// pinned to that version, as those from a metadata request are to the
/// version it saw.
#[derive(Debug)]
pub(crate) struct Listed<T> {
    entries: Arc<Mutex<std::collections::HashMap<String, T>>>,
}

impl<T> Clone for Listed<T> {
    fn clone(&self) -> Self {
        Listed {
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            entries: Arc::default(),
        }
    }
}

impl<T> Listed<T> {
    /// The most entries kept.
    pub(crate) const MAX: usize = 100_000;

    /// Remembers what a listing said of `location`.
    pub(crate) fn remember(&self, location: String, value: T) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX {
            entries.clear();
        }
        entries.insert(location, value);
    }

    /// What a listing said of `location`, once.
    pub(crate) fn take(&self, location: &str) -> Option<T> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(location)
    }
}

/// The error of reading an object whose listed version is gone: another
/// writer replaced or deleted it after the listing.
pub(crate) fn replaced(location: &str, cause: StorageError) -> StorageError {
    StorageError::new(
        StorageErrorKind::Other,
        location,
        "cannot read the version listed moments before: another writer replaced or deleted the object since (a job reads its inputs as it listed them)",
    )
    .with_source(cause)
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails for good, or the policy is
    /// spent; `transient` tells the errors worth another try.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        transient: impl Fn(&E) -> bool,
        mut attempt: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = std::time::Instant::now();
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(e)
                    if transient(&e)
                        && tries < self.max_retries
                        && started.elapsed() < self.max_elapsed =>
                {
                    tries += 1;
                    tokio::time::sleep(self.backoff(tries)).await;
                }
                other => return other,
            }
        }
    }
}

/// The runtime a backend's async client runs on.
#[derive(Debug)]
pub(crate) struct Runtime(tokio::runtime::Runtime);

impl Runtime {
    fn new() -> Result<Arc<Runtime>, StorageError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bp-storage")
            .enable_all()
            .build()
            .map(|rt| Arc::new(Runtime(rt)))
            .map_err(|e| StorageError::io("", "start the storage runtime", e))
    }

    /// Runs `future` on the runtime and waits for it on this thread, which
    /// may itself be inside another Tokio runtime.
    pub(crate) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        self.0.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .expect("the storage runtime ran the task to its end")
    }

    /// [`block_on`](Self::block_on) for a task that can be given up:
    /// `stop` is asked on this thread every 50 ms while the task runs, and
    /// once it says `true` this returns `None` at once, even while a
    /// request hangs. The task gets a flag, raised then, to end itself
    /// before its next request; its result is dropped.
    pub(crate) fn block_on_until<M, F>(
        &self,
        make: M,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Option<F::Output>
    where
        M: FnOnce(Arc<AtomicBool>) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if stop() {
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        let future = make(Arc::clone(&flag));
        let (tx, rx) = sync_channel(1);
        self.0.spawn(async move {
            let _ = tx.send(future.await);
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(output) => return Some(output),
                Err(RecvTimeoutError::Timeout) if stop() => {
                    flag.store(true, Ordering::SeqCst);
                    return None;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the storage runtime dropped a task it was running")
                }
            }
        }
    }

    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(future);
    }
}

/// The one runtime all cloud backends of a process share, made once and
/// never dropped (a runtime dropped inside another one panics, and the
/// first caller may well be inside one).
pub(crate) fn shared_runtime() -> Result<Arc<Runtime>, StorageError> {
    static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = &*slot {
        return Ok(Arc::clone(rt));
    }
    let rt = Runtime::new()?;
    *slot = Some(Arc::clone(&rt));
    Ok(rt)
}

/// A location's bucket and object name: `SCHEME://BUCKET/NAME`. With
/// `prefix`, the name may be empty or end in `/` (a listing prefix).
pub(crate) fn split_location<'a>(
    location: &'a str,
    scheme: &str,
    prefix: bool,
) -> Result<(&'a str, &'a str), StorageError> {
    let invalid = |why: &str| StorageError::new(StorageErrorKind::InvalidLocation, location, why);
    let rest = location
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| invalid(&format!("expected {scheme}://BUCKET/NAME")))?;
    let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("no bucket name"));
    }
    if bucket.contains(['*', '?', '[']) {
        return Err(invalid("wildcards in bucket names are not supported"));
    }
    if name.is_empty() && !prefix {
        return Err(invalid("no object name after the bucket"));
    }
    let segments: Vec<&str> = name.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => return Err(invalid("'.' and '..' segments are not object names")),
            "" if !(name.is_empty() || (last && prefix)) => {
                return Err(invalid("empty path segment"));
            }
            _ => {}
        }
    }
    Ok((bucket, name))
}

/// Chunks of an object's body, read ahead by a task on the runtime.
///
/// The chunks are buffers of [`GATHER_BYTES`] that go back and forth
/// between the task and the reader: the task copies the body into a spare
/// one, the reader hands each back once it has read it. Memory that is
/// used again is not faulted in, zeroed and given back to the system for
/// every chunk, which cost more than the network did.
pub(crate) struct ChunkReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    /// A reader, and the feeder its task fills it through; at most
    /// [`READ_AHEAD_CHUNKS`] chunks wait in between.
    pub(crate) fn new() -> (ChunkReader, Feeder) {
        let (tx, rx) = sync_channel(READ_AHEAD_CHUNKS);
        let (spare_tx, spare_rx) = sync_channel(READ_AHEAD_CHUNKS + 1);
        (
            ChunkReader {
                chunks: rx,
                spare: spare_tx,
                current: Vec::new(),
                at: 0,
            },
            Feeder {
                tx,
                spare: spare_rx,
                gathered: Vec::new(),
            },
        )
    }

    /// A reader of nothing.
    pub(crate) fn empty() -> ChunkReader {
        let (reader, _) = Self::new();
        reader
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            let mut spent = std::mem::take(&mut self.current);
            self.at = 0;
            if spent.capacity() > 0 {
                spent.clear();
                // Dropped if the task has spares enough, or is gone.
                let _ = self.spare.try_send(spent);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the feeder is done: end of object
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The size of the chunks a reader's feeder hands over: one hand-over per
/// body chunk of a few KiB costs more than the copy.
const GATHER_BYTES: usize = 256 << 10;

/// The task's end of a [`ChunkReader`]: copies the body into buffers the
/// reader gave back, and waits (without holding up the runtime's other
/// tasks) while the reader is [`READ_AHEAD_CHUNKS`] behind, so memory stays
/// bounded. The client's own buffers are let go at once, so it can reuse them.
pub(crate) struct Feeder {
    tx: SyncSender<io::Result<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    gathered: Vec<u8>,
}

impl Feeder {
    /// Hands `item` over; `false` once the reader is gone.
    fn send(&self, item: io::Result<Vec<u8>>) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(item)) => {
                tokio::task::block_in_place(|| self.tx.send(item).is_ok())
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Takes the next bytes of the body; `false` once the reader is gone.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.gathered.capacity() == 0 {
                self.gathered = self
                    .spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(GATHER_BYTES));
            }
            let n = (GATHER_BYTES - self.gathered.len()).min(bytes.len());
            self.gathered.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.gathered.len() >= GATHER_BYTES && !self.flush() {
                return false;
            }
        }
        true
    }

    /// Hands over what is gathered; `false` once the reader is gone.
    pub(crate) fn flush(&mut self) -> bool {
        if self.gathered.is_empty() {
            return true;
        }
        let gathered = std::mem::take(&mut self.gathered);
        self.send(Ok(gathered))
    }

    /// Hands over what is gathered, then `error`.
    pub(crate) fn fail(mut self, error: StorageError) {
        if self.flush() {
            self.send(Err(io::Error::other(error)));
        }
    }
}

/// A part of an upload, handed from the writer to the upload task.
pub(crate) enum Part {
    /// A whole part; more follow.
    Chunk(Vec<u8>),
    /// The rest (possibly empty): the upload ends with it.
    Last(Vec<u8>),
}

/// The writer's end of an upload task: parts go in (at most one waits
/// while another uploads, so memory stays bounded), the outcome comes back.
/// Dropping it without [`finish`](Parts::finish) tells the task to cancel.
pub(crate) struct Parts {
    parts: SyncSender<Part>,
    done: Receiver<Result<(), StorageError>>,
    failed: Option<StorageError>,
}

impl Parts {
    /// The writer's end, the task's end of the parts, and where the task
    /// sends its outcome.
    pub(crate) fn new() -> (Parts, Receiver<Part>, SyncSender<Result<(), StorageError>>) {
        let (parts, chunks) = sync_channel(1);
        let (done_tx, done) = sync_channel(1);
        (
            Parts {
                parts,
                done,
                failed: None,
            },
            chunks,
            done_tx,
        )
    }

    /// Hands a part to the task; its error if it has already failed.
    pub(crate) fn send(&mut self, part: Part) -> Result<(), StorageError> {
        if let Some(e) = &self.failed {
            return Err(StorageError::new(e.kind(), e.location(), e.to_string()));
        }
        if self.parts.send(part).is_err() {
            // The task ended early: it says why.
            let e = self.outcome().err().unwrap_or_else(|| {
                StorageError::new(StorageErrorKind::Other, "", "the upload task ended early")
            });
            self.failed = Some(StorageError::new(e.kind(), e.location(), e.to_string()));
            return Err(e);
        }
        Ok(())
    }

    /// Sends the last part and waits for the upload to end.
    pub(crate) fn finish(mut self, last: Vec<u8>) -> Result<(), StorageError> {
        self.send(Part::Last(last))?;
        self.outcome()
    }

    fn outcome(&self) -> Result<(), StorageError> {
        self.done.recv().unwrap_or_else(|_| {
            Err(StorageError::new(
                StorageErrorKind::Other,
                "",
                "the upload task ended without an outcome",
            ))
        })
    }
}

/// The next part for an upload task, waited for without holding up the
/// runtime's other tasks; `None` when the writer is gone.
pub(crate) fn next_part(parts: &Receiver<Part>) -> Option<Part> {
    tokio::task::block_in_place(|| parts.recv().ok())
}

/// Where an [`Upload`] goes: the backend's half of a writer.
pub(crate) trait UploadTarget: Send {
    /// The location being written.
    fn location(&self) -> &str;
    /// Starts the task that uploads whole parts, in the backend's way.
    fn start(&self) -> Parts;
    /// Uploads a small object in one request.
    fn put(&self, data: Vec<u8>) -> Result<ObjectMeta, StorageError>;
    /// Forgets what listings said of the location (a new version is
    /// there now, or about to be).
    fn forget_listed(&self);
}

/// A cloud [`ObjectWriter`]: one request when the object fits in one part,
/// else an upload task (resumable or multipart) that sends whole parts
/// while the caller writes the next; the object appears only when the
/// upload completes, and a writer dropped before commit cancels it.
pub(crate) struct Upload<T> {
    target: T,
    buffer: PartBuffer,
}

impl<T: UploadTarget> Upload<T> {
    pub(crate) fn new(target: T) -> Upload<T> {
        Upload {
            target,
            buffer: PartBuffer::default(),
        }
    }
}

impl<T: UploadTarget> io::Write for Upload<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let target = &self.target;
        self.buffer.write(buf, || target.start())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: UploadTarget> ObjectWriter for Upload<T> {
    fn commit(mut self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        let written = self.buffer.written();
        // Whatever the outcome, the listed version may be gone.
        self.target.forget_listed();
        let committed = match self.buffer.finish() {
            (data, Some(parts)) => parts
                .finish(data)
                .map(|()| ObjectMeta::new(self.target.location(), written)),
            (data, None) => self.target.put(data),
        };
        self.target.forget_listed();
        committed
    }
}

/// What an upload writer has: the bytes not yet handed over, the upload
/// task once a whole part started it, and the count of bytes written.
#[derive(Default)]
pub(crate) struct PartBuffer {
    buffer: Vec<u8>,
    parts: Option<Parts>,
    written: u64,
}

impl PartBuffer {
    /// Takes `buf`; hands whole parts to the upload task, which `start`
    /// starts on the first one.
    pub(crate) fn write(&mut self, buf: &[u8], start: impl FnOnce() -> Parts) -> io::Result<()> {
        self.buffer.extend_from_slice(buf);
        self.written += buf.len() as u64;
        if self.buffer.len() >= UPLOAD_PART_BYTES {
            let parts = self.parts.get_or_insert_with(start);
            while self.buffer.len() >= UPLOAD_PART_BYTES {
                let rest = self.buffer.split_off(UPLOAD_PART_BYTES);
                let part = std::mem::replace(&mut self.buffer, rest);
                parts.send(Part::Chunk(part)).map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    /// The bytes written.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// The bytes not handed over, and the upload task if one started (which
    /// then wants them as its last part).
    pub(crate) fn finish(&mut self) -> (Vec<u8>, Option<Parts>) {
        (std::mem::take(&mut self.buffer), self.parts.take())
    }
}

/// Streams an object's body into `feeder` from byte `offset`, opening it
/// again after a dropped connection or a body that ends early, up to
/// `retry`'s bounds. `open(at)` gives the body from byte `at`; with `size`
/// `None` the server always sends the whole body (a transcoded object), so
/// the bytes already delivered are skipped instead, and the body's end is
/// the object's.
pub(crate) async fn pump<F, Fut, S>(
    mut feeder: Feeder,
    location: String,
    offset: u64,
    size: Option<u64>,
    retry: RetryPolicy,
    mut open: F,
) where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<S, StorageError>>,
    S: futures_util::Stream<Item = Result<Bytes, StorageError>> + Unpin,
{
    use futures_util::StreamExt;
    let mut at = offset;
    let mut failures = 0;
    let started = std::time::Instant::now();
    loop {
        let mut skip = if size.is_none() { at } else { 0 };
        let mut body = match open(at).await {
            Ok(body) => body,
            Err(e) => return feeder.fail(e),
        };
        let mut broken = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(mut chunk) => {
                    let dropped = skip.min(chunk.len() as u64);
                    skip -= dropped;
                    chunk = chunk.slice(dropped as usize..);
                    at += chunk.len() as u64;
                    if !feeder.push(&chunk) {
                        return; // the reader is gone
                    }
                }
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        let broken = match (broken, size) {
            (Some(e), _) => e,
            (None, Some(size)) if at < size => StorageError::other(
                &location,
                "cannot read",
                format!("the body ended at byte {at} of {size}"),
            ),
            (None, _) => {
                feeder.flush();
                return;
            }
        };
        if failures >= retry.max_retries || started.elapsed() >= retry.max_elapsed {
            return feeder.fail(broken);
        }
        failures += 1;
        tokio::time::sleep(retry.backoff(failures)).await;
    }
}

/// [`LocalStorage`] for plain paths and `file://`, [`GcsStorage`] for
/// `gs://`, [`S3Storage`] for `s3://`, [`AzureStorage`] for `az://`: a job
/// may read from one store and write to another. The cloud backends are
/// made on first use, from the environment ([`GcsStorage::from_env`],
/// [`S3Storage::from_env`], [`AzureStorage::from_env`]), so a job that never
/// names a bucket needs no credentials.
#[derive(Debug, Default)]
pub struct CloudStorage {
    local: LocalStorage,
    gcs: OnceLock<Result<GcsStorage, StorageError>>,
    s3: OnceLock<Result<S3Storage, StorageError>>,
    azure: OnceLock<Result<AzureStorage, StorageError>>,
}

impl CloudStorage {
    /// Local paths through `local`; buckets from the environment.
    pub fn new(local: LocalStorage) -> Self {
        CloudStorage {
            local,
            ..CloudStorage::default()
        }
    }

    /// Uses `gcs` for `gs://` instead of one made from the environment.
    #[must_use]
    pub fn with_gcs(self, gcs: GcsStorage) -> Self {
        let _ = self.gcs.set(Ok(gcs));
        self
    }

    /// Uses `s3` for `s3://` instead of one made from the environment.
    #[must_use]
    pub fn with_s3(self, s3: S3Storage) -> Self {
        let _ = self.s3.set(Ok(s3));
        self
    }

    /// Uses `azure` for `az://` instead of one made from the environment.
    #[must_use]
    pub fn with_azure(self, azure: AzureStorage) -> Self {
        let _ = self.azure.set(Ok(azure));
        self
    }

    fn route(&self, location: &str) -> Result<&dyn Storage, StorageError> {
        if location.starts_with("gs://") {
            made(self.gcs.get_or_init(GcsStorage::from_env), location)
        } else if location.starts_with("s3://") {
            made(self.s3.get_or_init(S3Storage::from_env), location)
        } else if location.starts_with("az://") {
            made(self.azure.get_or_init(AzureStorage::from_env), location)
        } else {
            Ok(&self.local)
        }
    }
}

/// The backend a [`CloudStorage`] made, or why it could not, for `location`.
fn made<'a, S: Storage>(
    slot: &'a Result<S, StorageError>,
    location: &str,
) -> Result<&'a dyn Storage, StorageError> {
    match slot {
        Ok(storage) => Ok(storage),
        Err(e) => Err(StorageError::new(e.kind(), location, e.to_string())),
    }
}

impl Storage for CloudStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.route(prefix)?.list(prefix)
    }
    fn list_until(
        &self,
        prefix: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        self.route(prefix)?.list_until(prefix, stop)
    }
    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        self.route(location)?.head(location)
    }
    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.route(location)?.open(location)
    }
    fn open_at(&self, location: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        self.route(location)?.open_at(location, offset)
    }
    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.route(location)?.create(location)
    }
    fn delete(&self, location: &str) -> Result<(), StorageError> {
        self.route(location)?.delete(location)
    }
    fn object_key(&self, location: &str) -> String {
        match self.route(location) {
            Ok(storage) => storage.object_key(location),
            Err(_) => location.to_owned(),
        }
    }

    fn upload_survives_delete(&self, location: &str) -> bool {
        self.route(location)
            .is_ok_and(|storage| storage.upload_survives_delete(location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_bucket_and_name() {
        assert_eq!(
            split_location("gs://b/x/y", "gs", false).unwrap(),
            ("b", "x/y")
        );
        assert_eq!(split_location("s3://b/", "s3", true).unwrap(), ("b", ""));
        assert_eq!(split_location("s3://b", "s3", true).unwrap(), ("b", ""));
        assert_eq!(
            split_location("gs://b/in/", "gs", true).unwrap(),
            ("b", "in/")
        );
        for (location, prefix, why) in [
            ("gs://", false, "no bucket name"),
            ("gs:///x", false, "no bucket name"),
            ("gs://b", false, "no object name"),
            ("gs://b/", false, "no object name"),
            ("gs://b/../x", false, "'.' and '..'"),
            ("gs://b/./x", true, "'.' and '..'"),
            ("gs://b/x//y", false, "empty path segment"),
            ("gs://b*/x", true, "wildcards in bucket names"),
            ("s3://b/x", false, "expected gs://"),
        ] {
            let err = split_location(location, "gs", prefix).unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::InvalidLocation, "{location}");
            assert!(err.to_string().contains(why), "{location}: {err}");
        }
    }

    /// An object of `len` bytes that differ from offset to offset.
    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// How a fake server's body goes for one request.
    #[derive(Clone, Copy)]
    enum Body {
        /// The rest of the object, in the given chunk sizes (cycled).
        Whole,
        /// Ends without an error after this many bytes.
        EndsAfter(usize),
        /// Fails after this many bytes.
        FailsAfter(usize),
    }

    /// Reads `data` through `pump` and a [`ChunkReader`], the server's
    /// bodies going as `bodies` says, one per request; what the reader
    /// read (or its error) and the offsets the requests asked for.
    fn pumped(data: &[u8], bodies: &[Body], retries: u32) -> (Result<Vec<u8>, String>, Vec<u64>) {
        let size = data.len() as u64;
        let data = Bytes::from(data.to_vec());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(std::collections::VecDeque::from(
            bodies.to_vec(),
        )));
        let open = {
            let asked = Arc::clone(&asked);
            move |at: u64| {
                asked.lock().unwrap().push(at);
                let body = requests.lock().unwrap().pop_front().unwrap_or(Body::Whole);
                let rest = data.slice(at as usize..);
                async move {
                    // Chunk sizes around the reader's 256 KiB buffers.
                    let sizes = [100 << 10, 300 << 10, 1, 256 << 10, 7];
                    let (limit, fails) = match body {
                        Body::Whole => (rest.len(), false),
                        Body::EndsAfter(n) => (n.min(rest.len()), false),
                        Body::FailsAfter(n) => (n.min(rest.len()), true),
                    };
                    let mut items = Vec::new();
                    let mut at = 0;
                    for size in sizes.iter().cycle() {
                        if at >= limit {
                            break;
                        }
                        let end = (at + size).min(limit);
                        items.push(Ok(rest.slice(at..end)));
                        at = end;
                    }
                    if fails {
                        items.push(Err(StorageError::other("gs://b/o", "cannot read", "reset")));
                    }
                    Ok::<_, StorageError>(futures_util::stream::iter(items))
                }
            }
        };
        let retry = RetryPolicy::default()
            .with_max_retries(retries)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(1));
        let (mut reader, feeder) = ChunkReader::new();
        shared_runtime().unwrap().spawn(pump(
            feeder,
            "gs://b/o".to_owned(),
            0,
            Some(size),
            retry,
            open,
        ));
        let mut read = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let outcome = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(read),
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(e) => break Err(format!("{e} after {} bytes", read.len())),
            }
        };
        let asked = asked.lock().unwrap().clone();
        (outcome, asked)
    }

    #[test]
    fn a_read_resumes_where_its_body_broke_off_and_loses_no_byte() {
        let data = object(3 << 20);
        // Whole: one request, from the start.
        let (read, asked) = pumped(&data, &[Body::Whole], 0);
        assert!(read.unwrap() == data);
        assert_eq!(asked, [0]);
        // A body that ends early, then one that fails: each next request
        // asks from the byte reached, and every byte comes once.
        let (cut, failed) = ((700 << 10) + 3, 1 << 20);
        let bodies = [Body::EndsAfter(cut), Body::FailsAfter(failed), Body::Whole];
        let (read, asked) = pumped(&data, &bodies, 3);
        assert!(read.unwrap() == data);
        assert_eq!(asked, [0, cut as u64, (cut + failed) as u64]);
    }

    #[test]
    fn a_read_that_keeps_failing_hands_over_what_came_then_the_error() {
        let data = object(1 << 20);
        let bodies = [Body::FailsAfter(300 << 10), Body::FailsAfter(5)];
        let (read, asked) = pumped(&data, &bodies, 1);
        let err = read.unwrap_err();
        assert!(
            err.contains("reset") && err.ends_with(&format!("after {} bytes", (300 << 10) + 5)),
            "{err}"
        );
        assert_eq!(asked, [0, 300 << 10]);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let policy =
            RetryPolicy::default().with_backoff(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..20 {
            let wait = policy.backoff(attempt);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(1));
            assert!(wait <= base && wait >= base / 2, "{attempt}: {wait:?}");
        }
    }
}
