//! [`AzureStorage`]: Azure Blob Storage through Apache Arrow's `object_store`.

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;

use super::store::{Stores, backend_over_stores};
use crate::storage::{StorageError, StorageErrorKind};

/// The key of Azurite's development account, `devstoreaccount1`, which
/// Microsoft publishes for the emulators.
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azure Blob Storage: `az://CONTAINER/NAME`, in the storage account the
/// environment names.
///
/// [`from_env`](Self::from_env) reads the `AZURE_*` variables `object_store`
/// reads: the account (`AZURE_STORAGE_ACCOUNT_NAME`) and its credentials
/// (`AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, a service
/// principal's `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET` / `AZURE_TENANT_ID`,
/// workload identity's `AZURE_FEDERATED_TOKEN_FILE`), falling back to the
/// managed identity of the Azure machine the job runs on. With
/// `AZURE_STORAGE_USE_EMULATOR=true` it talks to Azurite, at
/// `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`), as its
/// well-known development account.
///
/// Objects carry their ETag, so a rewritten input is never taken for the one
/// a job read. Large objects go up as blocks, committed by one block list
/// when the writer commits: until then nothing is visible, and blocks never
/// committed are dropped by the service.
///
/// ```no_run
/// use std::io::Read;
///
/// use batch_prediction::Storage;
/// use batch_prediction::storage::AzureStorage;
///
/// // AZURE_STORAGE_ACCOUNT_NAME and a credential in the environment.
/// let azure = AzureStorage::from_env()?;
/// for object in azure.list("az://my-container/instances/")? {
///     let mut text = String::new();
///     azure.open(&object.location)?.read_to_string(&mut text)?;
///     println!("{}: {} lines", object.location, text.lines().count());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AzureStorage(Stores);

impl AzureStorage {
    /// A store configured from the `AZURE_*` variables of the environment.
    ///
    /// # Errors
    /// A [`StorageError`] when the runtime cannot start. Missing or wrong
    /// credentials show on the first request, naming the object.
    pub fn from_env() -> Result<AzureStorage, StorageError> {
        Self::with_builder(MicrosoftAzureBuilder::from_env())
    }

    /// Azurite (or another emulator) at `endpoint`, its blob service with
    /// the account as the path (`http://127.0.0.1:10000/devstoreaccount1`),
    /// signed with the development account's published key.
    ///
    /// # Errors
    /// A [`StorageError`] when `endpoint` names no account, or the runtime
    /// cannot start.
    pub fn emulator(endpoint: &str) -> Result<AzureStorage, StorageError> {
        let endpoint = endpoint.trim_end_matches('/');
        let account = endpoint
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, path)| path.rsplit('/').next().unwrap_or(path))
            .filter(|account| !account.is_empty())
            .ok_or_else(|| {
                StorageError::new(
                    StorageErrorKind::InvalidLocation,
                    endpoint,
                    "expected the emulator's blob endpoint with the account as its path, as http://127.0.0.1:10000/devstoreaccount1",
                )
            })?;
        Self::with_builder(
            MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_access_key(EMULATOR_KEY)
                .with_endpoint(endpoint.to_owned())
                .with_allow_http(endpoint.starts_with("http://")),
        )
    }

    fn with_builder(builder: MicrosoftAzureBuilder) -> Result<AzureStorage, StorageError> {
        let build = move |container: &str, retry| {
            let store = builder
                .clone()
                .with_container_name(container)
                .with_retry(retry)
                .build()?;
            Ok(Arc::new(store) as Arc<dyn object_store::ObjectStore>)
        };
        Stores::new("az", "Azure Blob Storage", Arc::new(build)).map(AzureStorage)
    }
}

backend_over_stores!(AzureStorage);
