//! [`S3Storage`]: S3 and S3-compatible stores through Apache Arrow's `object_store`.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;

use super::store::{Stores, backend_over_stores};
use crate::storage::StorageError;

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
pub struct S3Storage(Stores);

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
        let build = move |bucket: &str, retry| {
            let store = builder
                .clone()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .build()?;
            Ok(Arc::new(store) as Arc<dyn object_store::ObjectStore>)
        };
        Stores::new("s3", "S3", Arc::new(build)).map(S3Storage)
    }
}

backend_over_stores!(S3Storage);
