//! `projects.models`, `projects.models.versions` and `projects.operations`
//! on a [`JobService`], as far as batch prediction needs them: models
//! created, read, listed and deleted; versions created (naming their model
//! directory), read, listed, deleted and made the default; the
//! long-running operations that version writes answer with. And
//! [`ModelsResolver`], through which a job's `modelName` or `versionName`
//! runs the version's model directory.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::store::ModelRecord;
use super::{CallerView, JobService, lock, project_resource};
use crate::error::{Error, ErrorKind};
use crate::iam::{self, Caller};
use crate::model::{Job, Model, ModelVersion, Version, wire};
use crate::name::{ModelName, ProjectName, VersionName};
use crate::predict::{ModelResolver, PredictError, Predictor};

/// How many finished operations a service keeps for `operations.get`.
const KEPT_OPERATIONS: usize = 1000;

/// A model's region when its `create` names none, as the API's reference says.
const DEFAULT_REGION: &str = "us-central1";

/// A `models.list` page.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ListModelsResponse {
    /// The models, by name.
    pub models: Vec<Model>,
    /// The next page's token, if there is one.
    pub next_page_token: Option<String>,
}

impl ListModelsResponse {
    /// The response as the API's JSON (`{}` when empty).
    pub fn to_json(&self) -> Value {
        page_json(
            "models",
            self.models.iter().map(Model::to_json),
            &self.next_page_token,
        )
    }
}

/// A `versions.list` page.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ListVersionsResponse {
    /// The versions, by name.
    pub versions: Vec<Version>,
    /// The next page's token, if there is one.
    pub next_page_token: Option<String>,
}

impl ListVersionsResponse {
    /// The response as the API's JSON (`{}` when empty).
    pub fn to_json(&self) -> Value {
        page_json(
            "versions",
            self.versions.iter().map(Version::to_json),
            &self.next_page_token,
        )
    }
}

fn page_json(key: &str, items: impl Iterator<Item = Value>, next: &Option<String>) -> Value {
    let items: Vec<Value> = items.collect();
    let mut out = serde_json::Map::new();
    if !items.is_empty() {
        out.insert(key.to_owned(), Value::Array(items));
    }
    if let Some(token) = next {
        out.insert("nextPageToken".to_owned(), json!(token));
    }
    Value::Object(out)
}

fn model_resource(name: &ModelName) -> String {
    format!("model {:?}", name.to_string())
}

fn version_resource(name: &VersionName) -> String {
    format!("version {:?}", name.to_string())
}

/// The ID a create request names (`census`, or the full resource name
/// under `parent`); `INVALID_ARGUMENT` otherwise.
fn short_id(given: Option<&str>, parent: &str, kind: &str, what: &str) -> Result<String, Error> {
    let given = given.ok_or_else(|| {
        Error::invalid_argument(format!("{kind}.name"), format!("a {kind} needs a name"))
    })?;
    let prefix = format!("{parent}/{what}/");
    let id = given.strip_prefix(&prefix).unwrap_or(given);
    Ok(id.to_owned())
}

/// A page of `items` (sorted by name) after the token's name.
fn page<T: Clone>(
    items: &[T],
    name: impl Fn(&T) -> String,
    page_size: i32,
    token: &str,
) -> Result<(Vec<T>, Option<String>), Error> {
    let size = match page_size {
        n if n < 0 => {
            return Err(Error::invalid_argument(
                "pageSize",
                format!("pageSize must not be negative, got {n}"),
            ));
        }
        0 => super::DEFAULT_PAGE_SIZE,
        n => (n as usize).min(super::MAX_PAGE_SIZE),
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start = if token.is_empty() {
        0
    } else {
        let after = engine
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Error::invalid_argument(
                    "pageToken",
                    format!("invalid page token {token:?}: use a nextPageToken of this method"),
                )
            })?;
        items.iter().take_while(|i| name(i) <= after).count()
    };
    let chunk: Vec<T> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + chunk.len() < items.len())
        .then(|| chunk.last().map(|last| engine.encode(name(last))))
        .flatten();
    Ok((chunk, next))
}

impl JobService {
    /// `models.create`: a model named by `model.name` (its ID, `census`, or
    /// its full name) under `parent`. Its other fields are kept as given,
    /// except that `regions` is `["us-central1"]` when it names none, as the
    /// API's is; `defaultVersion` is the service's.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a name that breaks the rules or more than one
    /// region, `ALREADY_EXISTS`,
    /// or the store's errors (`UNIMPLEMENTED` for a store that keeps no models).
    pub fn create_model(&self, parent: &ProjectName, model: Model) -> Result<Model, Error> {
        self.create_model_as(None, parent, model)
    }

    /// `models.get`: the model, with its `defaultVersion`.
    ///
    /// # Errors
    /// `NOT_FOUND`, or the store's errors.
    pub fn get_model(&self, name: &ModelName) -> Result<Model, Error> {
        self.get_model_as(None, name)
    }

    /// `models.list`: the project's models by name, `page_size` at a time
    /// (0: 20; at most 100), after `page_token`.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a bad page size or token, or the store's errors.
    pub fn list_models(
        &self,
        parent: &ProjectName,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListModelsResponse, Error> {
        self.list_models_as(None, parent, page_size, page_token)
    }

    /// `models.delete`: a model without versions; the answer is a finished
    /// long-running operation.
    ///
    /// # Errors
    /// `NOT_FOUND`; `FAILED_PRECONDITION` while it has versions (delete
    /// them first, as AI Platform asked); the store's errors.
    pub fn delete_model(&self, name: &ModelName) -> Result<Value, Error> {
        self.delete_model_as(None, name)
    }

    /// `versions.create`: a version of `parent` named by `version.name`,
    /// with its `deploymentUri` (required: the model directory) and the rest
    /// kept as given (`framework`, one of the API's values;
    /// `runtimeVersion`, `pythonVersion`, `machineType`…); `createTime`,
    /// `state` (`READY`) and `isDefault` are the service's. The runtime is
    /// chosen by the model directory's contents, never by `framework` (the
    /// API has no value for ONNX: leave it out, or say
    /// `FRAMEWORK_UNSPECIFIED`). A model's first version becomes its
    /// default. The answer is a finished long-running operation holding
    /// the version.
    ///
    /// # Errors
    /// `NOT_FOUND` for the model, `INVALID_ARGUMENT`, `ALREADY_EXISTS`, or
    /// the store's errors.
    pub fn create_version(&self, parent: &ModelName, version: Version) -> Result<Value, Error> {
        self.create_version_as(None, parent, version)
    }

    /// `versions.get`.
    ///
    /// # Errors
    /// `NOT_FOUND`, or the store's errors.
    pub fn get_version(&self, name: &VersionName) -> Result<Version, Error> {
        self.get_version_as(None, name)
    }

    /// `versions.list`: the model's versions, by name.
    ///
    /// # Errors
    /// `NOT_FOUND` for the model, `INVALID_ARGUMENT` for a bad page size or
    /// token, or the store's errors.
    pub fn list_versions(
        &self,
        parent: &ModelName,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListVersionsResponse, Error> {
        self.list_versions_as(None, parent, page_size, page_token)
    }

    /// `versions.delete`: the answer is a finished long-running operation.
    ///
    /// # Errors
    /// `NOT_FOUND`; `FAILED_PRECONDITION` for the default version while the
    /// model has others (make another the default first); the store's errors.
    pub fn delete_version(&self, name: &VersionName) -> Result<Value, Error> {
        self.delete_version_as(None, name)
    }

    /// `versions.setDefault`: the version, now the model's default.
    ///
    /// # Errors
    /// `NOT_FOUND`, or the store's errors.
    pub fn set_default_version(&self, name: &VersionName) -> Result<Version, Error> {
        self.set_default_version_as(None, name)
    }

    /// `operations.get`: an operation a model or version write answered
    /// with (the last 1,000 are kept, in memory).
    ///
    /// # Errors
    /// `NOT_FOUND`.
    pub fn get_operation(&self, name: &str) -> Result<Value, Error> {
        self.get_operation_as(None, name)
    }

    /// The version a job's `modelName` (its default version) or
    /// `versionName` names; `None` for a `uri`.
    ///
    /// # Errors
    /// `NOT_FOUND` naming the model or version (and saying to create it
    /// first), or the store's errors.
    pub fn version_of(&self, model: &ModelVersion) -> Result<Option<Version>, Error> {
        let (model_name, version) = match model {
            ModelVersion::Uri(_) => return Ok(None),
            ModelVersion::Model(name) => (name.clone(), None),
            ModelVersion::Version(name) => (name.model_name(), Some(name)),
        };
        let missing = |what: String| {
            Error::external(
                crate::Code::NotFound,
                format!("{what} not found"),
                "create it first (gcloud ai-platform models create, then versions create)",
            )
        };
        let record = self
            .store()
            .get_model(&model_name)?
            .ok_or_else(|| missing(model_resource(&model_name)))?;
        let found = match version {
            Some(v) => record.version(v.version()).cloned(),
            None => record
                .default_version
                .as_deref()
                .and_then(|id| record.version(id))
                .cloned(),
        };
        match (found, version) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(v)) => Err(missing(version_resource(v))),
            (None, None) => Err(missing(format!(
                "a default version of {}",
                model_resource(&model_name)
            ))),
        }
    }

    /// For `jobs.create` with models required: the named model exists.
    pub(super) fn check_model_exists(&self, job: &Job) -> Result<(), Error> {
        match job.prediction_input.as_ref().and_then(|i| i.model.as_ref()) {
            Some(model) => self.version_of(model).map(|_| ()),
            None => Ok(()),
        }
    }

    // ---- for a caller ----

    fn model_record(
        &self,
        caller: Option<&Caller>,
        name: &ModelName,
        permission: &str,
    ) -> Result<ModelRecord, Error> {
        self.check(
            caller,
            &name.parent(),
            None,
            permission,
            &model_resource(name),
        )?;
        self.store()
            .get_model(name)?
            .ok_or_else(|| Error::not_found(model_resource(name)))
    }

    /// The model as the API shows it: with its default version.
    fn present_model(record: &ModelRecord) -> Model {
        let mut model = record.model.clone();
        let default = record
            .default_version
            .as_deref()
            .and_then(|id| record.version(id));
        model.set(
            "defaultVersion",
            default.map_or(Value::Null, Version::to_json),
        );
        model
    }

    /// Keeps `operation` for `operations.get` and returns it.
    fn finished_operation(
        &self,
        project: &ProjectName,
        kind: &str,
        model: &ModelName,
        version: Option<&Version>,
        response: Value,
    ) -> Value {
        let now = self.clock.now();
        let mut kept = lock(&self.operations);
        // The time in nanoseconds names the operation; where a kept one
        // already has that name (a coarse clock, or a fake one that has not
        // moved), the next free nanosecond does, so no two share a name.
        let mut nanos = now.timestamp_nanos_opt().unwrap_or_default();
        let name = loop {
            let id = format!("{}_{}-{nanos}", kind.to_ascii_lowercase(), model.model());
            let name = format!("{project}/operations/{id}");
            if !kept.iter().any(|(n, _)| *n == name) {
                break name;
            }
            nanos += 1;
        };
        let now = wire::format_timestamp(&now);
        let mut metadata = json!({
            "@type": "type.googleapis.com/google.cloud.ml.v1.OperationMetadata",
            "createTime": now,
            "startTime": now,
            "endTime": now,
            "operationType": kind,
            "modelName": model.to_string(),
        });
        if let Some(v) = version {
            metadata["version"] = v.to_json();
        }
        let operation = json!({
            "name": name,
            "metadata": metadata,
            "done": true,
            "response": response,
        });
        if kept.len() >= KEPT_OPERATIONS {
            kept.pop_front();
        }
        kept.push_back((name, operation.clone()));
        operation
    }

    /// Applies `change` to the model's record and stores it, retrying a
    /// write that lost a race.
    fn change_model<T>(
        &self,
        name: &ModelName,
        mut change: impl FnMut(&mut ModelRecord) -> Result<T, Error>,
    ) -> Result<(T, ModelRecord), Error> {
        for _ in 0..super::MAX_WRITE_ATTEMPTS {
            let mut record = self
                .store()
                .get_model(name)?
                .ok_or_else(|| Error::not_found(model_resource(name)))?;
            let out = change(&mut record)?;
            match self.store().put_model(record) {
                Ok(stored) => return Ok((out, stored)),
                Err(e) if matches!(e.kind(), ErrorKind::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ErrorKind::Conflict {
            resource: model_resource(name),
        }
        .into())
    }

    pub(super) fn create_model_as(
        &self,
        caller: Option<&Caller>,
        parent: &ProjectName,
        mut model: Model,
    ) -> Result<Model, Error> {
        self.check(
            caller,
            parent,
            None,
            iam::MODELS_CREATE,
            &project_resource(parent),
        )?;
        let id = short_id(model.name(), &parent.to_string(), "model", "models")?;
        let name = parent.model(&id)?;
        model.set("name", json!(name.to_string()));
        model.set("defaultVersion", Value::Null);
        model.set("etag", Value::Null);
        // "Only one region per model is supported. Defaults to
        // 'us-central1' if nothing is set." (the API's reference)
        match model.regions().as_slice() {
            [] => model.set("regions", json!([DEFAULT_REGION])),
            [_] => {}
            many => {
                return Err(Error::invalid_argument(
                    "model.regions",
                    format!("only one region per model is supported, not {}", many.len()),
                ));
            }
        }
        let stored = self.store().put_model(ModelRecord::new(name, model))?;
        Ok(Self::present_model(&stored))
    }

    pub(super) fn get_model_as(
        &self,
        caller: Option<&Caller>,
        name: &ModelName,
    ) -> Result<Model, Error> {
        let record = self.model_record(caller, name, iam::MODELS_GET)?;
        Ok(Self::present_model(&record))
    }

    pub(super) fn list_models_as(
        &self,
        caller: Option<&Caller>,
        parent: &ProjectName,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListModelsResponse, Error> {
        self.check(
            caller,
            parent,
            None,
            iam::MODELS_LIST,
            &project_resource(parent),
        )?;
        let records = self.store().list_models(parent)?;
        let (chunk, next) = page(&records, |r| r.name.to_string(), page_size, page_token)?;
        Ok(ListModelsResponse {
            models: chunk.iter().map(Self::present_model).collect(),
            next_page_token: next,
        })
    }

    pub(super) fn delete_model_as(
        &self,
        caller: Option<&Caller>,
        name: &ModelName,
    ) -> Result<Value, Error> {
        let record = self.model_record(caller, name, iam::MODELS_DELETE)?;
        if !record.versions.is_empty() {
            return Err(Error::failed_precondition(format!(
                "model {:?} has {} version(s): delete them first",
                name.to_string(),
                record.versions.len()
            )));
        }
        self.store().delete_model(name, record.revision)?;
        Ok(self.finished_operation(
            &name.parent(),
            "DELETE_MODEL",
            name,
            None,
            json!({"@type": "type.googleapis.com/google.protobuf.Empty"}),
        ))
    }

    pub(super) fn create_version_as(
        &self,
        caller: Option<&Caller>,
        parent: &ModelName,
        mut version: Version,
    ) -> Result<Value, Error> {
        self.check(
            caller,
            &parent.parent(),
            None,
            iam::VERSIONS_CREATE,
            &model_resource(parent),
        )?;
        let id = short_id(version.name(), &parent.to_string(), "version", "versions")?;
        let name = parent.version(&id)?;
        if version.deployment_uri().is_none_or(str::is_empty) {
            return Err(Error::invalid_argument(
                "version.deploymentUri",
                "a version needs a deploymentUri: the model directory",
            ));
        }
        version.set("name", json!(name.to_string()));
        version.set(
            "createTime",
            json!(wire::format_timestamp(&self.clock.now())),
        );
        version.set("state", json!("READY"));
        version.set("etag", Value::Null);
        let (created, _) = self.change_model(parent, |record| {
            if record.version(&id).is_some() {
                return Err(Error::already_exists(version_resource(&name)));
            }
            let mut v = version.clone();
            // A model's first version becomes its default.
            let first = record.default_version.is_none();
            v.set("isDefault", json!(first));
            if first {
                record.default_version = Some(id.clone());
            }
            record.versions.push(v.clone());
            Ok(v)
        })?;
        let mut response = created.to_json();
        response["@type"] = json!("type.googleapis.com/google.cloud.ml.v1.Version");
        Ok(self.finished_operation(
            &parent.parent(),
            "CREATE_VERSION",
            parent,
            Some(&created),
            response,
        ))
    }

    pub(super) fn get_version_as(
        &self,
        caller: Option<&Caller>,
        name: &VersionName,
    ) -> Result<Version, Error> {
        let record = self.model_record(caller, &name.model_name(), iam::VERSIONS_GET)?;
        record
            .version(name.version())
            .cloned()
            .ok_or_else(|| Error::not_found(version_resource(name)))
    }

    pub(super) fn list_versions_as(
        &self,
        caller: Option<&Caller>,
        parent: &ModelName,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListVersionsResponse, Error> {
        let record = self.model_record(caller, parent, iam::VERSIONS_LIST)?;
        let mut versions = record.versions.clone();
        versions.sort_by(|a, b| a.name().cmp(&b.name()));
        let (chunk, next) = page(
            &versions,
            |v| v.name().unwrap_or_default().to_owned(),
            page_size,
            page_token,
        )?;
        Ok(ListVersionsResponse {
            versions: chunk,
            next_page_token: next,
        })
    }

    pub(super) fn delete_version_as(
        &self,
        caller: Option<&Caller>,
        name: &VersionName,
    ) -> Result<Value, Error> {
        let model = name.model_name();
        self.model_record(caller, &model, iam::VERSIONS_DELETE)?;
        let id = name.version().to_owned();
        let (deleted, _) = self.change_model(&model, |record| {
            let at = record
                .versions
                .iter()
                .position(|v| v.name().and_then(|n| n.rsplit('/').next()) == Some(id.as_str()))
                .ok_or_else(|| Error::not_found(version_resource(name)))?;
            if record.default_version.as_deref() == Some(id.as_str()) && record.versions.len() > 1 {
                return Err(Error::failed_precondition(format!(
                    "version {:?} is the default version of its model, which has others: make another the default first",
                    name.to_string()
                )));
            }
            if record.default_version.as_deref() == Some(id.as_str()) {
                record.default_version = None;
            }
            Ok(record.versions.remove(at))
        })?;
        Ok(self.finished_operation(
            &model.parent(),
            "DELETE_VERSION",
            &model,
            Some(&deleted),
            json!({"@type": "type.googleapis.com/google.protobuf.Empty"}),
        ))
    }

    pub(super) fn set_default_version_as(
        &self,
        caller: Option<&Caller>,
        name: &VersionName,
    ) -> Result<Version, Error> {
        let model = name.model_name();
        self.model_record(caller, &model, iam::MODELS_UPDATE)?;
        let id = name.version().to_owned();
        let (version, _) = self.change_model(&model, |record| {
            if record.version(&id).is_none() {
                return Err(Error::not_found(version_resource(name)));
            }
            let mut chosen = None;
            for v in &mut record.versions {
                let this = v.name().and_then(|n| n.rsplit('/').next()) == Some(id.as_str());
                v.set("isDefault", json!(this));
                if this {
                    chosen = Some(v.clone());
                }
            }
            record.default_version = Some(id.clone());
            Ok(chosen.expect("checked above"))
        })?;
        Ok(version)
    }

    pub(super) fn get_operation_as(
        &self,
        caller: Option<&Caller>,
        name: &str,
    ) -> Result<Value, Error> {
        let resource = format!("operation {name:?}");
        let project = name
            .split("/operations/")
            .next()
            .and_then(|p| p.parse::<ProjectName>().ok())
            .filter(|_| name.contains("/operations/"))
            .ok_or_else(|| {
                Error::invalid_argument(
                    "name",
                    format!("{name:?} is not an operation name (projects/P/operations/ID)"),
                )
            })?;
        self.check(caller, &project, None, iam::OPERATIONS_GET, &resource)?;
        lock(&self.operations)
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, op)| op.clone())
            .ok_or_else(|| Error::not_found(resource))
    }
}

impl CallerView<'_> {
    /// [`JobService::create_model`] for the caller (`ml.models.create` on the project).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::create_model`].
    pub fn create_model(&self, parent: &ProjectName, model: Model) -> Result<Model, Error> {
        self.service
            .create_model_as(Some(self.caller), parent, model)
    }

    /// [`JobService::get_model`] for the caller (`ml.models.get`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::get_model`].
    pub fn get_model(&self, name: &ModelName) -> Result<Model, Error> {
        self.service.get_model_as(Some(self.caller), name)
    }

    /// [`JobService::list_models`] for the caller (`ml.models.list`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::list_models`].
    pub fn list_models(
        &self,
        parent: &ProjectName,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListModelsResponse, Error> {
        self.service
            .list_models_as(Some(self.caller), parent, page_size, page_token)
    }

    /// [`JobService::delete_model`] for the caller (`ml.models.delete`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::delete_model`].
    pub fn delete_model(&self, name: &ModelName) -> Result<Value, Error> {
        self.service.delete_model_as(Some(self.caller), name)
    }

    /// [`JobService::create_version`] for the caller (`ml.versions.create`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::create_version`].
    pub fn create_version(&self, parent: &ModelName, version: Version) -> Result<Value, Error> {
        self.service
            .create_version_as(Some(self.caller), parent, version)
    }

    /// [`JobService::get_version`] for the caller (`ml.versions.get`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::get_version`].
    pub fn get_version(&self, name: &VersionName) -> Result<Version, Error> {
        self.service.get_version_as(Some(self.caller), name)
    }

    /// [`JobService::list_versions`] for the caller (`ml.versions.list`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::list_versions`].
    pub fn list_versions(
        &self,
        parent: &ModelName,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListVersionsResponse, Error> {
        self.service
            .list_versions_as(Some(self.caller), parent, page_size, page_token)
    }

    /// [`JobService::delete_version`] for the caller (`ml.versions.delete`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::delete_version`].
    pub fn delete_version(&self, name: &VersionName) -> Result<Value, Error> {
        self.service.delete_version_as(Some(self.caller), name)
    }

    /// [`JobService::set_default_version`] for the caller (`ml.models.update`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::set_default_version`].
    pub fn set_default_version(&self, name: &VersionName) -> Result<Version, Error> {
        self.service.set_default_version_as(Some(self.caller), name)
    }

    /// [`JobService::get_operation`] for the caller (`ml.operations.get`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::get_operation`].
    pub fn get_operation(&self, name: &str) -> Result<Value, Error> {
        self.service.get_operation_as(Some(self.caller), name)
    }
}

/// A resolver for a service's jobs that name their model by `modelName`
/// or `versionName`: the version's `deploymentUri` is given to `inner` as
/// the job's `uri` would be, and a `uri` goes to `inner` as it is.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{EchoResolver, InMemoryJobStore, JobService};
/// use batch_prediction::service::ModelsResolver;
///
/// let service = Arc::new(JobService::new(InMemoryJobStore::new())?);
/// let resolver = ModelsResolver::new(Arc::clone(&service), Arc::new(EchoResolver));
/// # let _ = resolver;
/// # Ok::<(), batch_prediction::Error>(())
/// ```
pub struct ModelsResolver {
    service: Arc<JobService>,
    inner: Arc<dyn ModelResolver>,
}

impl std::fmt::Debug for ModelsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelsResolver").finish_non_exhaustive()
    }
}

impl ModelsResolver {
    /// Resolves names through `service`'s models, then loads with `inner`.
    pub fn new(service: Arc<JobService>, inner: Arc<dyn ModelResolver>) -> Self {
        ModelsResolver { service, inner }
    }
}

impl ModelResolver for ModelsResolver {
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        match self
            .service
            .version_of(model)
            .map_err(|e| PredictError::new(e.to_string()))?
        {
            None => self.inner.resolve(model, job),
            Some(version) => {
                let uri = version.deployment_uri().ok_or_else(|| {
                    PredictError::new(format!(
                        "version {:?} has no deploymentUri",
                        version.name().unwrap_or_default()
                    ))
                })?;
                self.inner.resolve(&ModelVersion::Uri(uri.to_owned()), job)
            }
        }
    }
}
