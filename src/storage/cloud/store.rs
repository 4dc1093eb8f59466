//! [`Stores`]: the [`Storage`] over Apache Arrow's `object_store` that
//! [`S3Storage`](super::S3Storage) and [`AzureStorage`](super::AzureStorage)
//! share: one store per bucket (container), made on first use.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    BackoffConfig, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{
    ChunkReader, Part, Parts, RetryPolicy, Runtime, Upload, UploadTarget, next_part, pump,
    shared_runtime, split_location,
};
use crate::storage::{ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind};

/// Makes the store of one bucket, with the retries it is to make.
pub(super) type Build =
    dyn Fn(&str, RetryConfig) -> object_store::Result<Arc<dyn ObjectStore>> + Send + Sync;

/// A [`Storage`] for the locations `SCHEME://BUCKET/NAME` of one service.
#[derive(Clone)]
pub(super) struct Stores {
    /// `s3` or `az`.
    scheme: &'static str,
    /// The service's name, for messages.
    service: &'static str,
    build: Arc<Build>,
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
    runtime: Arc<Runtime>,
    pub(super) retry: RetryPolicy,
    /// What the last listings said of each object: its size and ETag.
    listed: super::Listed<(u64, Option<String>)>,
}

/// For a public newtype around [`Stores`]: its `Debug`, its `with_retry`,
/// and its [`Storage`] through the `Stores`.
macro_rules! backend_over_stores {
    ($t:ident) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("retry", &self.0.retry)
                    .finish_non_exhaustive()
            }
        }

        impl $t {
            /// Retries transient failures by `retry` (the default: [`RetryPolicy::default`]).
            ///
            /// [`RetryPolicy::default`]: crate::RetryPolicy::default
            #[must_use]
            pub fn with_retry(self, retry: crate::RetryPolicy) -> Self {
                $t(self.0.with_retry(retry))
            }
        }

        impl crate::storage::Storage for $t {
            fn list(
                &self,
                prefix: &str,
            ) -> Result<Vec<crate::storage::ObjectMeta>, crate::storage::StorageError> {
                self.0.list(prefix)
            }
            fn list_until(
                &self,
                prefix: &str,
                stop: &(dyn Fn() -> bool + Sync),
            ) -> Result<Vec<crate::storage::ObjectMeta>, crate::storage::StorageError> {
                self.0.list_until(prefix, stop)
            }
            fn head(
                &self,
                location: &str,
            ) -> Result<crate::storage::ObjectMeta, crate::storage::StorageError> {
                self.0.head(location)
            }
            fn open(
                &self,
                location: &str,
            ) -> Result<Box<dyn std::io::Read + Send>, crate::storage::StorageError> {
                self.0.open(location)
            }
            fn open_at(
                &self,
                location: &str,
                offset: u64,
            ) -> Result<Box<dyn std::io::Read + Send>, crate::storage::StorageError> {
                self.0.open_at(location, offset)
            }
            fn create(
                &self,
                location: &str,
            ) -> Result<Box<dyn crate::storage::ObjectWriter>, crate::storage::StorageError> {
                self.0.create(location)
            }
            fn delete(&self, location: &str) -> Result<(), crate::storage::StorageError> {
                self.0.delete(location)
            }
            fn upload_survives_delete(&self, location: &str) -> bool {
                self.0.upload_survives_delete(location)
            }
        }
    };
}
pub(super) use backend_over_stores;

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("scheme", &self.scheme)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Stores {
    pub(super) fn new(
        scheme: &'static str,
        service: &'static str,
        build: Arc<Build>,
    ) -> Result<Stores, StorageError> {
        Ok(Stores {
            scheme,
            service,
            build,
            stores: Arc::default(),
            runtime: shared_runtime()?,
            retry: RetryPolicy::default(),
            listed: super::Listed::default(),
        })
    }

    /// Retries transient failures by `retry`; stores already made are made again.
    pub(super) fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self.stores = Arc::default();
        self
    }

    /// The store of `bucket`, made on first use.
    fn store(&self, bucket: &str, location: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.retry.initial_backoff,
                max_backoff: self.retry.max_backoff,
                base: 2.0,
            },
            max_retries: self.retry.max_retries as usize,
            retry_timeout: self.retry.max_elapsed,
        };
        let store = (self.build)(bucket, retry).map_err(|e| {
            StorageError::other(
                location,
                format!("cannot configure {} for", self.service),
                e,
            )
        })?;
        stores.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// The store and object path of `location`.
    fn object(&self, location: &str) -> Result<(Arc<dyn ObjectStore>, Path), StorageError> {
        let (bucket, name) = split_location(location, self.scheme, false)?;
        let path = Path::parse(name).map_err(|e| {
            StorageError::new(
                StorageErrorKind::InvalidLocation,
                location,
                format!("not an object name: {e}"),
            )
        })?;
        Ok((self.store(bucket, location)?, path))
    }

    fn head_object(&self, location: &str) -> Result<object_store::ObjectMeta, StorageError> {
        let (store, path) = self.object(location)?;
        self.runtime
            .block_on(async move { store.head(&path).await })
            .map_err(|e| error(location, "read the metadata of", e))
    }
}

fn error(location: &str, operation: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::not_found(location),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StorageError::new(
            StorageErrorKind::PermissionDenied,
            location,
            format!("cannot {operation}"),
        )
        .with_source(e),
        e => StorageError::other(location, format!("cannot {operation}"), e),
    }
}

impl Storage for Stores {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_until(prefix, &|| false)
    }

    fn list_until(
        &self,
        prefix: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let (bucket, name_prefix) = split_location(prefix, self.scheme, true)?;
        // object_store lists by directory: list the one the prefix is in,
        // and keep the names that start with the prefix.
        let dir = match name_prefix.rfind('/') {
            Some(i) => &name_prefix[..i],
            None => "",
        };
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(Path::parse(dir).map_err(|e| {
                StorageError::new(
                    StorageErrorKind::InvalidLocation,
                    prefix,
                    format!("not an object name prefix: {e}"),
                )
            })?)
        };
        let store = self.store(bucket, prefix)?;
        let wanted = name_prefix.to_owned();
        let objects = self
            .runtime
            .block_on_until(
                |stopped| async move {
                    let stopped = move || stopped.load(std::sync::atomic::Ordering::SeqCst);
                    if stopped() {
                        return Ok(None);
                    }
                    let mut listing = store.list(dir_path.as_ref());
                    let mut found = Vec::new();
                    // Asked at each item: the client fetches a page at a time,
                    // so a stop ends the listing before its next request.
                    while let Some(item) = listing.next().await {
                        if stopped() {
                            return Ok(None);
                        }
                        let item = item?;
                        if item.location.as_ref().starts_with(&wanted) {
                            found.push(item);
                        }
                    }
                    Ok(Some(found))
                },
                stop,
            )
            .ok_or_else(|| StorageError::cancelled(prefix))?
            .map_err(|e: object_store::Error| {
                // S3 says NoSuchBucket, Azure ContainerNotFound.
                let text = e.to_string();
                if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") {
                    super::gcs::no_bucket(bucket, prefix).with_source(e)
                } else {
                    error(prefix, "list", e)
                }
            })?
            .ok_or_else(|| StorageError::cancelled(prefix))?;
        let mut found: Vec<ObjectMeta> = objects
            .into_iter()
            .map(|o| {
                let location = format!("{}://{bucket}/{}", self.scheme, o.location);
                self.listed
                    .remember(location.clone(), (o.size, o.e_tag.clone()));
                ObjectMeta {
                    location,
                    size: o.size,
                    last_modified: Some(o.last_modified),
                    etag: o.e_tag,
                }
            })
            .collect();
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        let o = self.head_object(location)?;
        // What a caller just saw is what its read will read.
        self.listed
            .remember(location.to_owned(), (o.size, o.e_tag.clone()));
        Ok(ObjectMeta {
            location: location.to_owned(),
            size: o.size,
            last_modified: Some(o.last_modified),
            etag: o.e_tag,
        })
    }

    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.open_at(location, 0)
    }

    fn open_at(&self, location: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        // Listed just now (a job's inputs are), or asked for.
        let listed = self.listed.take(location);
        let from_listing = listed.is_some();
        let (size, e_tag) = match listed {
            Some(known) => known,
            None => {
                let meta = self.head_object(location)?;
                (meta.size, meta.e_tag)
            }
        };
        if offset >= size {
            return Ok(Box::new(ChunkReader::empty()));
        }
        let (store, path) = self.object(location)?;
        let (reader, feeder) = ChunkReader::new();
        let at_location = location.to_owned();
        // Pinned to the ETag just seen: a resumed read reads the same bytes.
        let open = move |at: u64| {
            let (store, path, location) = (Arc::clone(&store), path.clone(), at_location.clone());
            let options = GetOptions {
                // From the start, no Range: some servers copy a ranged body.
                range: (at > 0).then_some(GetRange::Offset(at)),
                if_match: e_tag.clone(),
                ..GetOptions::default()
            };
            async move {
                let failed = move |e| match e {
                    // The version listed is gone: say so.
                    e @ object_store::Error::Precondition { .. } if from_listing => {
                        super::replaced(&location, error(&location, "read", e))
                    }
                    e => error(&location, "read", e),
                };
                match store.get_opts(&path, options).await {
                    Ok(body) => Ok(body.into_stream().map_err(failed)),
                    Err(e) => Err(failed(e)),
                }
            }
        };
        self.runtime.spawn(pump(
            feeder,
            location.to_owned(),
            offset,
            Some(size),
            self.retry,
            open,
        ));
        Ok(Box::new(reader))
    }

    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let (store, path) = self.object(location)?;
        Ok(Box::new(Upload::new(StoreTarget {
            storage: self.clone(),
            store,
            path,
            location: location.to_owned(),
        })))
    }

    /// S3's multipart upload is its own until completed; Azure's
    /// uncommitted blocks belong to the blob and go with it.
    fn upload_survives_delete(&self, _location: &str) -> bool {
        self.scheme == "s3"
    }

    fn delete(&self, location: &str) -> Result<(), StorageError> {
        self.listed.take(location);
        // S3 answers a delete of a missing object with success: look first.
        self.head_object(location)?;
        let (store, path) = self.object(location)?;
        self.runtime
            .block_on(async move { store.delete(&path).await })
            .map_err(|e| error(location, "delete", e))
    }
}

/// Where an upload through `object_store` goes.
struct StoreTarget {
    storage: Stores,
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
}

/// How many parts of one object upload at once.
const PARTS_IN_FLIGHT: usize = 4;

impl UploadTarget for StoreTarget {
    fn location(&self) -> &str {
        &self.location
    }

    fn forget_listed(&self) {
        self.storage.listed.take(&self.location);
    }

    /// A multipart upload (S3) or blocks and a block list (Azure): up to
    /// [`PARTS_IN_FLIGHT`] parts at once, completed after the last.
    fn start(&self) -> Parts {
        let (parts, chunks, done) = Parts::new();
        let (store, path) = (Arc::clone(&self.store), self.path.clone());
        let location = self.location.clone();
        self.storage.runtime.spawn(async move {
            let failed = |e| error(&location, "upload", e);
            let mut upload = match store.put_multipart(&path).await {
                Ok(upload) => upload,
                Err(e) => {
                    let _ = done.send(Err(failed(e)));
                    return;
                }
            };
            let mut in_flight = FuturesUnordered::new();
            let outcome = loop {
                let (data, last) = match next_part(&chunks) {
                    Some(Part::Chunk(data)) => (data, false),
                    Some(Part::Last(data)) => (data, true),
                    None => {
                        // The writer was dropped without commit: nothing appears.
                        drop(in_flight);
                        let _ = upload.abort().await;
                        return;
                    }
                };
                if !data.is_empty() {
                    in_flight.push(upload.put_part(PutPayload::from(data)));
                }
                let limit = if last { 0 } else { PARTS_IN_FLIGHT - 1 };
                let mut result = Ok(());
                while in_flight.len() > limit {
                    if let Some(Err(e)) = in_flight.next().await {
                        result = Err(e);
                        break;
                    }
                }
                match result {
                    Err(e) => break Err(e),
                    Ok(()) if last => break upload.complete().await.map(|_| ()),
                    Ok(()) => {}
                }
            };
            if outcome.is_err() {
                drop(in_flight);
                let _ = upload.abort().await;
            }
            let _ = done.send(outcome.map_err(failed));
        });
        parts
    }
    fn put(&self, data: Vec<u8>) -> Result<ObjectMeta, StorageError> {
        let payload = PutPayload::from(data);
        let size = payload.content_length() as u64;
        let (store, path) = (Arc::clone(&self.store), self.path.clone());
        let put = self
            .storage
            .runtime
            .block_on(async move { store.put(&path, payload).await })
            .map_err(|e| error(&self.location, "upload", e))?;
        let mut committed = ObjectMeta::new(self.location.clone(), size);
        committed.etag = put.e_tag;
        Ok(committed)
    }
}
