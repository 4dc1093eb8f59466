//! [`S3Storage`]: S3 and S3-compatible stores through Apache Arrow's `object_store`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{
    ChunkReader, Feeder, Part, Parts, RetryPolicy, Runtime, Upload, UploadTarget, next_part, pump,
    shared_runtime, split_location,
};
use crate::storage::{ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind};

/// S3 and S3-compatible stores (MinIO, R2, Ceph): `s3://BUCKET/NAME`.
///
/// [`from_env`](Self::from_env) takes what the AWS SDKs take: the default
/// credential chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, web
/// identity, the container and instance metadata), `AWS_REGION`, and
/// `AWS_ENDPOINT_URL` for an S3-compatible server (plain `http://` is
/// allowed for such an endpoint). Requests use path-style addressing.
///
/// Objects carry their ETag, so a rewritten input is never taken for the one
/// a job read.
#[derive(Clone)]
pub struct S3Storage {
    builder: AmazonS3Builder,
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
    runtime: Arc<Runtime>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// A store configured from the environment, as the AWS SDKs are.
    ///
    /// # Errors
    /// A [`StorageError`] when the runtime cannot start.
    pub fn from_env() -> Result<S3Storage, StorageError> {
        let mut builder = AmazonS3Builder::from_env();
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder.with_allow_http(endpoint.starts_with("http://"));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        Self::with_builder(builder)
    }

    /// A server at `endpoint` (such as MinIO or a test server) with static
    /// credentials; `http://` endpoints are allowed.
    ///
    /// # Errors
    /// A [`StorageError`] when the runtime cannot start.
    pub fn with_endpoint(
        endpoint: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<S3Storage, StorageError> {
        Self::with_builder(
            AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_region(region)
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key),
        )
    }

    fn with_builder(builder: AmazonS3Builder) -> Result<S3Storage, StorageError> {
        Ok(S3Storage {
            builder,
            stores: Arc::default(),
            runtime: shared_runtime()?,
            retry: RetryPolicy::default(),
        })
    }

    /// Retries transient failures by `retry` (the default: [`RetryPolicy::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
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
        let store: Arc<dyn ObjectStore> = Arc::new(
            self.builder
                .clone()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .build()
                .map_err(|e| StorageError::other(location, "cannot configure S3 for", e))?,
        );
        stores.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// The store and object path of `location`.
    fn object(&self, location: &str) -> Result<(Arc<dyn ObjectStore>, Path), StorageError> {
        let (bucket, name) = split_location(location, "s3", false)?;
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

impl Storage for S3Storage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_until(prefix, &|| false)
    }

    fn list_until(
        &self,
        prefix: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let (bucket, name_prefix) = split_location(prefix, "s3", true)?;
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
                if e.to_string().contains("NoSuchBucket") {
                    super::gcs::no_bucket(bucket, prefix).with_source(e)
                } else {
                    error(prefix, "list", e)
                }
            })?
            .ok_or_else(|| StorageError::cancelled(prefix))?;
        let mut found: Vec<ObjectMeta> = objects
            .into_iter()
            .map(|o| ObjectMeta {
                location: format!("s3://{bucket}/{}", o.location),
                size: o.size,
                last_modified: Some(o.last_modified),
                etag: o.e_tag,
            })
            .collect();
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        let o = self.head_object(location)?;
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
        let meta = self.head_object(location)?;
        if offset >= meta.size {
            return Ok(Box::new(ChunkReader::empty()));
        }
        let (store, path) = self.object(location)?;
        let (reader, tx) = ChunkReader::new();
        let at_location = location.to_owned();
        // Pinned to the ETag just seen: a resumed read reads the same bytes.
        let open = move |at: u64| {
            let (store, path, location) = (Arc::clone(&store), path.clone(), at_location.clone());
            let options = GetOptions {
                range: Some(GetRange::Offset(at)),
                if_match: meta.e_tag.clone(),
                ..GetOptions::default()
            };
            async move {
                let failed = move |e| error(&location, "read", e);
                match store.get_opts(&path, options).await {
                    Ok(body) => Ok(body.into_stream().map_err(failed)),
                    Err(e) => Err(failed(e)),
                }
            }
        };
        let feeder = Feeder::new(tx);
        self.runtime.spawn(pump(
            feeder,
            location.to_owned(),
            offset,
            Some(meta.size),
            self.retry,
            open,
        ));
        Ok(Box::new(reader))
    }

    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let (store, path) = self.object(location)?;
        Ok(Box::new(Upload::new(S3Target {
            storage: self.clone(),
            store,
            path,
            location: location.to_owned(),
        })))
    }

    fn delete(&self, location: &str) -> Result<(), StorageError> {
        // S3 answers a delete of a missing object with success: look first.
        self.head_object(location)?;
        let (store, path) = self.object(location)?;
        self.runtime
            .block_on(async move { store.delete(&path).await })
            .map_err(|e| error(location, "delete", e))
    }
}

/// Where an S3 upload goes.
struct S3Target {
    storage: S3Storage,
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
}

/// How many parts of one object upload at once.
const PARTS_IN_FLIGHT: usize = 4;

impl UploadTarget for S3Target {
    fn location(&self) -> &str {
        &self.location
    }

    /// A multipart upload: up to [`PARTS_IN_FLIGHT`] parts at once, completed after the last.
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
