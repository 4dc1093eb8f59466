//! [`GcsStorage`]: Google Cloud Storage through its JSON API (`gcloud-storage`).

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{
    ChunkSize, ResumableUploadClient, UploadStatus,
};

use super::{
    ChunkReader, Part, Parts, RetryPolicy, Runtime, Upload, UploadTarget, next_part, pump,
    shared_runtime, split_location,
};
use crate::storage::{ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind};

/// Google Cloud Storage: `gs://BUCKET/NAME`.
///
/// [`from_env`](Self::from_env) finds credentials the standard way
/// (Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, the
/// gcloud CLI's, or the metadata server on Google Cloud), or, when
/// `STORAGE_EMULATOR_HOST` is set (e.g. `http://127.0.0.1:4443`), talks to
/// that emulator without credentials, as Google's own SDKs do.
///
/// Objects carry their generation as etag, so a rewritten input is never
/// taken for the one a job read. Objects stored with `Content-Encoding:
/// gzip` are read as the server serves them to a client that does not ask
/// for gzip: decompressed.
#[derive(Clone)]
pub struct GcsStorage {
    client: Client,
    runtime: Arc<Runtime>,
    retry: RetryPolicy,
    endpoint: String,
    /// After a chunk fails, ask the server how much of it it kept (Cloud
    /// Storage's protocol). Not on an emulator: fake-gcs-server finalizes
    /// the upload on that query, and appends whatever chunk it is sent, so
    /// there the chunk is sent again whole.
    query_status: bool,
    /// What the last listings said of each object.
    listed: super::Listed<Known>,
}

/// What a read needs to know of an object: its generation, size, and
/// whether it is served decompressed (`Content-Encoding: gzip`).
#[derive(Debug, Clone, Copy)]
struct Known {
    generation: i64,
    size: u64,
    transcoded: bool,
}

impl Known {
    fn of(object: &Object) -> Known {
        Known {
            generation: object.generation,
            size: u64::try_from(object.size).unwrap_or(0),
            transcoded: object
                .content_encoding
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case("gzip")),
        }
    }
}

impl std::fmt::Debug for GcsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStorage")
            .field("endpoint", &self.endpoint)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GcsStorage {
    /// The emulator at `STORAGE_EMULATOR_HOST` if that is set, else Cloud
    /// Storage with Application Default Credentials.
    ///
    /// # Errors
    /// A [`StorageError`] when no credentials can be found.
    pub fn from_env() -> Result<GcsStorage, StorageError> {
        match std::env::var("STORAGE_EMULATOR_HOST") {
            Ok(host) if !host.is_empty() => Self::emulator(&host),
            _ => {
                let runtime = shared_runtime()?;
                let config = runtime
                    .block_on(ClientConfig::default().with_auth())
                    .map_err(|e| {
                        StorageError::new(
                            StorageErrorKind::Other,
                            "gs://",
                            format!(
                                "no Google Cloud credentials (Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, or run on Google Cloud): {e}"
                            ),
                        )
                    })?;
                Ok(Self::with_config(config, runtime, true))
            }
        }
    }

    /// A server at `endpoint` (`http://HOST:PORT`, as `STORAGE_EMULATOR_HOST`
    /// gives it; `http://` is assumed without a scheme), without credentials.
    ///
    /// # Errors
    /// A [`StorageError`] when the runtime cannot start.
    pub fn emulator(endpoint: &str) -> Result<GcsStorage, StorageError> {
        let endpoint = if endpoint.contains("://") {
            endpoint.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", endpoint.trim_end_matches('/'))
        };
        let config = ClientConfig {
            storage_endpoint: endpoint,
            ..ClientConfig::default()
        }
        .anonymous();
        Ok(Self::with_config(config, shared_runtime()?, false))
    }

    fn with_config(config: ClientConfig, runtime: Arc<Runtime>, query_status: bool) -> GcsStorage {
        let endpoint = config.storage_endpoint.clone();
        GcsStorage {
            client: Client::new(config),
            runtime,
            retry: RetryPolicy::default(),
            endpoint,
            query_status,
            listed: super::Listed::default(),
        }
    }

    /// Retries transient failures by `retry` (the default: [`RetryPolicy::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn head_object(&self, location: &str) -> Result<Object, StorageError> {
        let (bucket, name) = split_location(location, "gs", false)?;
        let request = GetObjectRequest {
            bucket: bucket.to_owned(),
            object: name.to_owned(),
            ..GetObjectRequest::default()
        };
        let (client, retry) = (self.client.clone(), self.retry);
        self.runtime
            .block_on(async move { retry.run(transient, || client.get_object(&request)).await })
            .map_err(|e| error(location, "read the metadata of", e))
    }
}

/// Sends the bytes `data` of a resumable upload, from offset `sent` (the
/// last chunk when `total` is given), until the server holds them all.
///
/// A transient failure is retried by `retry`. With `query_status` (Cloud
/// Storage) the resend starts where a status query says the server's copy
/// ends. Without it (an emulator: fake-gcs-server finalizes the upload on a
/// status query, and appends whatever chunk it is sent) the chunk is sent
/// again whole, and only after the server (or a proxy) answered with an
/// error: after a dropped connection the chunk may have been kept, and
/// sending it again would store its bytes twice. A chunk the server keeps
/// only in part is completed; an answer that shows no progress is retried.
async fn send_chunk(
    session: &ResumableUploadClient,
    data: Bytes,
    sent: u64,
    total: Option<u64>,
    retry: RetryPolicy,
    query_status: bool,
) -> Result<(), GcsError> {
    let end = sent + data.len() as u64;
    let started = std::time::Instant::now();
    // Where the server's copy ends, as far as this chunk is concerned.
    let mut held = sent;
    let mut tries = 0;
    loop {
        let outcome = if held < end {
            let from = usize::try_from(held - sent).expect("within the chunk");
            let chunk = ChunkSize::new(held, end - 1, total);
            session
                .upload_multiple_chunk(data.slice(from..), &chunk)
                .await
        } else if total.is_some() {
            // All held, but the object is not made yet.
            session.status(total).await
        } else {
            return Ok(());
        };
        let (error, again) = match outcome {
            // The last chunk makes the object (fake-gcs-server also
            // answers other chunks so).
            Ok(UploadStatus::Ok(_)) => return Ok(()),
            // Kept, whole or in part: go on from there.
            Ok(UploadStatus::ResumeIncomplete(range)) if range.last_byte >= held => {
                held = (range.last_byte + 1).min(end);
                continue;
            }
            // fake-gcs-server acknowledges chunks without a Range.
            Ok(UploadStatus::NotStarted) if total.is_none() && !query_status => return Ok(()),
            Ok(status) => (
                GcsError::InvalidRangeHeader(format!(
                    "the server kept none of bytes {held}-{} of the upload: {status:?}",
                    end - 1
                )),
                true,
            ),
            Err(e) => {
                let again = transient(&e) && (query_status || answered(&e));
                (e, again)
            }
        };
        if !again || tries >= retry.max_retries || started.elapsed() >= retry.max_elapsed {
            return Err(error);
        }
        tries += 1;
        tokio::time::sleep(retry.backoff(tries)).await;
        if !query_status {
            continue;
        }
        // What did the server keep of what we sent?
        match session.status(None).await {
            Ok(UploadStatus::ResumeIncomplete(range)) if range.last_byte >= held => {
                held = (range.last_byte + 1).min(end);
            }
            // The last chunk arrived and made the object; only its answer was lost.
            Ok(UploadStatus::Ok(_)) if total.is_some() => return Ok(()),
            _ => {}
        }
    }
}

/// Whether the server (or a proxy before it) answered with a status, so
/// that the request was refused rather than lost in transit.
fn answered(e: &GcsError) -> bool {
    match e {
        GcsError::Response(_) => true,
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => e.status().is_some(),
        _ => false,
    }
}

/// Whether a failure is worth another try: 408, 429, 5xx, and transport errors.
fn transient(e: &GcsError) -> bool {
    match e {
        GcsError::Response(r) => matches!(r.code, 408 | 429 | 500..=599),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => match e.status() {
            Some(status) => matches!(status.as_u16(), 408 | 429 | 500..=599),
            None => e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
        },
        GcsError::HttpMiddleware(_) => true,
        _ => false,
    }
}

fn error(location: &str, operation: &str, e: GcsError) -> StorageError {
    let status = match &e {
        GcsError::Response(r) => Some(r.code),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => e.status().map(|s| s.as_u16()),
        _ => None,
    };
    let kind = match status {
        Some(404) => StorageErrorKind::NotFound,
        Some(401 | 403) => StorageErrorKind::PermissionDenied,
        _ => StorageErrorKind::Other,
    };
    if kind == StorageErrorKind::NotFound {
        return StorageError::not_found(location);
    }
    StorageError::new(kind, location, format!("cannot {operation}")).with_source(e)
}

/// The error of a listing in a bucket that does not exist.
pub(super) fn no_bucket(bucket: &str, prefix: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::NotFound,
        prefix,
        format!("no bucket named {bucket:?} (it does not exist) holds"),
    )
}

fn meta(bucket: &str, object: &Object) -> ObjectMeta {
    ObjectMeta {
        location: format!("gs://{bucket}/{}", object.name),
        size: u64::try_from(object.size).unwrap_or(0),
        last_modified: object
            .updated
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.unix_timestamp(), t.nanosecond())),
        etag: Some(object.generation.to_string()),
    }
}

impl Storage for GcsStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_until(prefix, &|| false)
    }

    fn list_until(
        &self,
        prefix: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let (bucket, name_prefix) = split_location(prefix, "gs", true)?;
        let (client, retry) = (self.client.clone(), self.retry);
        let request = ListObjectsRequest {
            bucket: bucket.to_owned(),
            prefix: (!name_prefix.is_empty()).then(|| name_prefix.to_owned()),
            ..ListObjectsRequest::default()
        };
        let objects = self
            .runtime
            .block_on_until(
                |stopped| async move {
                    let mut objects = Vec::new();
                    let mut request = request;
                    loop {
                        // Asked before each page's request.
                        if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                            return Ok(None);
                        }
                        let page = retry
                            .run(transient, || client.list_objects(&request))
                            .await?;
                        objects.extend(page.items.unwrap_or_default());
                        match page.next_page_token {
                            Some(token) if !token.is_empty() => request.page_token = Some(token),
                            _ => return Ok(Some(objects)),
                        }
                    }
                },
                stop,
            )
            .ok_or_else(|| StorageError::cancelled(prefix))?
            .map_err(|e| match error(prefix, "list", e) {
                // Listing a prefix finds nothing, or fails: a 404 is the bucket's.
                e if e.kind() == StorageErrorKind::NotFound => no_bucket(bucket, prefix),
                e => e,
            })?
            .ok_or_else(|| StorageError::cancelled(prefix))?;
        let mut found: Vec<ObjectMeta> = objects
            .iter()
            .map(|o| {
                let found = meta(bucket, o);
                self.listed.remember(found.location.clone(), Known::of(o));
                found
            })
            .collect();
        found.sort_by(|a, b| a.location.cmp(&b.location));
        found.dedup_by(|a, b| a.location == b.location);
        Ok(found)
    }

    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        let (bucket, _) = split_location(location, "gs", false)?;
        let object = self.head_object(location)?;
        // What a caller just saw is what its read will read.
        self.listed
            .remember(location.to_owned(), Known::of(&object));
        let mut found = meta(bucket, &object);
        found.location = location.to_owned();
        Ok(found)
    }

    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.open_at(location, 0)
    }

    /// Objects stored with `Content-Encoding: gzip` are served decompressed
    /// (decompressive transcoding), from their start whatever the range
    /// asked for: they are read from the start, a dropped connection is
    /// resumed by skipping what was read, and reading from an offset is
    /// refused (their size is the compressed one, so offsets into the
    /// decompressed content cannot be planned).
    fn open_at(&self, location: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        // Listed just now (a job's inputs are), or asked for.
        let listed = self.listed.take(location);
        let from_listing = listed.is_some();
        let known = match listed {
            Some(known) => known,
            None => Known::of(&self.head_object(location)?),
        };
        let (size, transcoded) = (known.size, known.transcoded);
        if transcoded && offset > 0 {
            return Err(StorageError::other(
                location,
                format!("cannot read from byte {offset} of"),
                "it is stored with Content-Encoding: gzip, which Cloud Storage serves decompressed from its start, so no byte range of it can be read (as a job split into ranges would); store it without that encoding, or in smaller objects",
            ));
        }
        if offset >= size && !transcoded {
            return Ok(Box::new(ChunkReader::empty()));
        }
        let (bucket, name) = split_location(location, "gs", false)?;
        // Pinned to the generation seen: a resumed read reads the same bytes.
        let request = GetObjectRequest {
            bucket: bucket.to_owned(),
            object: name.to_owned(),
            generation: Some(known.generation),
            ..GetObjectRequest::default()
        };
        let client = self.client.clone();
        let retry = self.retry;
        let (reader, feeder) = ChunkReader::new();
        let at_location = location.to_owned();
        let open = move |at: u64| {
            let (client, request, location) =
                (client.clone(), request.clone(), at_location.clone());
            // A transcoded object comes whole whatever the range: `pump`
            // skips. From the start, no Range: some servers copy a ranged body.
            let range = if transcoded || at == 0 {
                Range(None, None)
            } else {
                Range(Some(at), None)
            };
            async move {
                let body = retry
                    .run(transient, || {
                        client.download_streamed_object(&request, &range)
                    })
                    .await;
                let failed = move |e| match error(&location, "read", e) {
                    // The version listed is gone: say so, not "not found".
                    e if from_listing && e.kind() == StorageErrorKind::NotFound => {
                        super::replaced(&location, e)
                    }
                    e => e,
                };
                match body {
                    Ok(body) => Ok(Box::pin(body.map_err(failed))),
                    Err(e) => Err(failed(e)),
                }
            }
        };
        let size = (!transcoded).then_some(size);
        self.runtime
            .spawn(pump(feeder, location.to_owned(), offset, size, retry, open));
        Ok(Box::new(reader))
    }

    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let (bucket, name) = split_location(location, "gs", false)?;
        Ok(Box::new(Upload::new(GcsTarget {
            storage: self.clone(),
            location: location.to_owned(),
            bucket: bucket.to_owned(),
            name: name.to_owned(),
        })))
    }

    /// One request at commit, or a resumable session finalized then.
    fn upload_survives_delete(&self, _location: &str) -> bool {
        true
    }

    fn delete(&self, location: &str) -> Result<(), StorageError> {
        self.listed.take(location);
        let (bucket, name) = split_location(location, "gs", false)?;
        let request = DeleteObjectRequest {
            bucket: bucket.to_owned(),
            object: name.to_owned(),
            ..DeleteObjectRequest::default()
        };
        let (client, retry) = (self.client.clone(), self.retry);
        self.runtime
            .block_on(async move {
                retry
                    .run(transient, || client.delete_object(&request))
                    .await
            })
            .map_err(|e| error(location, "delete", e))
    }
}

/// Where a Cloud Storage upload goes.
struct GcsTarget {
    storage: GcsStorage,
    location: String,
    bucket: String,
    name: String,
}

impl UploadTarget for GcsTarget {
    fn location(&self) -> &str {
        &self.location
    }

    fn forget_listed(&self) {
        self.storage.listed.take(&self.location);
    }

    /// A resumable session: parts sent in order, finalized with the last.
    fn start(&self) -> Parts {
        let (parts, chunks, done) = Parts::new();
        let client = self.storage.client.clone();
        let request = UploadObjectRequest {
            bucket: self.bucket.clone(),
            ..UploadObjectRequest::default()
        };
        let object = Object {
            name: self.name.clone(),
            ..Object::default()
        };
        let location = self.location.clone();
        let (retry, query_status) = (self.storage.retry, self.storage.query_status);
        self.storage.runtime.spawn(async move {
            let failed = |e| error(&location, "upload", e);
            let session = match client
                .prepare_resumable_upload(&request, &UploadType::Multipart(Box::new(object)))
                .await
            {
                Ok(session) => session,
                Err(e) => {
                    let _ = done.send(Err(failed(e)));
                    return;
                }
            };
            let mut sent = 0u64;
            loop {
                let (data, last) = match next_part(&chunks) {
                    Some(Part::Chunk(data)) => (data, false),
                    Some(Part::Last(data)) => (data, true),
                    None => {
                        // The writer was dropped without commit: nothing appears.
                        let _ = session.cancel().await;
                        return;
                    }
                };
                let len = data.len() as u64;
                let total = last.then_some(sent + len);
                let result = if len == 0 {
                    // Finalize with nothing more to send.
                    retry
                        .run(transient, || session.status(total))
                        .await
                        .map(|_| ())
                } else {
                    let chunk = Bytes::from(data);
                    send_chunk(&session, chunk, sent, total, retry, query_status).await
                };
                if let Err(e) = result {
                    let _ = session.cancel().await;
                    let _ = done.send(Err(failed(e)));
                    return;
                }
                sent += len;
                if last {
                    let _ = done.send(Ok(()));
                    return;
                }
            }
        });
        parts
    }

    fn put(&self, data: Vec<u8>) -> Result<ObjectMeta, StorageError> {
        let client = self.storage.client.clone();
        let retry = self.storage.retry;
        let request = UploadObjectRequest {
            bucket: self.bucket.clone(),
            ..UploadObjectRequest::default()
        };
        let media = UploadType::Simple(Media::new(self.name.clone()));
        let data = Bytes::from(data);
        let object = self
            .storage
            .runtime
            .block_on(async move {
                retry
                    .run(transient, || {
                        client.upload_object(&request, data.clone(), &media)
                    })
                    .await
            })
            .map_err(|e| error(&self.location, "upload", e))?;
        let mut committed = meta(&self.bucket, &object);
        committed.location = self.location.clone();
        Ok(committed)
    }
}
