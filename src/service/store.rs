//! Job stores: where a [`JobService`](crate::JobService) keeps its jobs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, RwLock};

use crate::error::{Error, ErrorKind};
use crate::iam::Policy;
use crate::model::{Job, Model, Version};
use crate::name::{JobName, ModelName, ProjectName};

/// One job as a store holds it: the job, its IAM policy, and the numbers a
/// store assigns.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobRecord {
    /// The job's resource name.
    pub name: JobName,
    /// The job. Its `etag` is not stored: the service derives it from
    /// `sequence` and `job_revision`.
    pub job: Job,
    /// The job's IAM policy (bindings and audit configs; no version or etag).
    pub policy: Policy,
    /// Creation order in the store, from 1: set by [`JobStore::insert`],
    /// greater than that of every record inserted before.
    pub sequence: u64,
    /// The compare-and-swap key: set to 1 by [`JobStore::insert`] and
    /// increased by 1 by every [`JobStore::update`].
    pub revision: u64,
    /// The `revision` at which the job last changed (its etag's source).
    pub job_revision: u64,
    /// The `revision` at which the policy last changed; 0 if never set.
    pub policy_revision: u64,
    /// What a runner that runs the job outside this process keeps with it,
    /// to follow it across restarts (a [`SlurmRunner`](super::SlurmRunner)'s
    /// Slurm job IDs); `None` for jobs that run in the process. Its
    /// `"runner"` field names the runner. Not part of the job: a change
    /// of it alone gives the job no new etag. A service opened without
    /// that runner fails the job, saying what may still run.
    pub runner: Option<serde_json::Value>,
}

impl JobRecord {
    /// A record of a new job, to insert.
    pub fn new(name: JobName, job: Job) -> Self {
        JobRecord {
            name,
            job,
            policy: Policy::default(),
            sequence: 0,
            revision: 0,
            job_revision: 1,
            policy_revision: 0,
            runner: None,
        }
    }
}

/// One model as a store holds it, with its versions: written and read
/// whole, so a new default version and the version it replaces change in
/// one write.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModelRecord {
    /// The model's resource name.
    pub name: ModelName,
    /// The model, as created (its `name` the full resource name; no
    /// `defaultVersion`, which the service fills in from `versions`).
    pub model: Model,
    /// Its versions, oldest first (each `name` the full resource name).
    pub versions: Vec<Version>,
    /// The ID of the default version, if it has versions.
    pub default_version: Option<String>,
    /// The compare-and-swap key: 0 for a record not stored yet; set to 1
    /// by the first [`JobStore::put_model`], increased by 1 by every other.
    pub revision: u64,
}

impl ModelRecord {
    /// A record of a new model, to store.
    pub fn new(name: ModelName, model: Model) -> Self {
        ModelRecord {
            name,
            model,
            versions: Vec::new(),
            default_version: None,
            revision: 0,
        }
    }

    /// The version with ID `id`.
    pub fn version(&self, id: &str) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.name().and_then(|n| n.rsplit('/').next()) == Some(id))
    }

    /// The record as JSON (how a durable store keeps it).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name.to_string(),
            "model": self.model.to_json(),
            "versions": self.versions.iter().map(Version::to_json).collect::<Vec<_>>(),
            "defaultVersion": self.default_version,
            "revision": self.revision,
        })
    }

    /// A record from [`to_json`](Self::to_json)'s JSON.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming what is missing or malformed.
    pub fn from_json(value: serde_json::Value) -> Result<ModelRecord, Error> {
        let bad = |why: &str| Error::invalid_argument("model record", why.to_owned());
        let name = value["name"]
            .as_str()
            .ok_or_else(|| bad("no name"))?
            .parse::<ModelName>()
            .map_err(|e| bad(&e.to_string()))?;
        let versions = match &value["versions"] {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| Version::from_json(v.clone()))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad("no versions list")),
        };
        Ok(ModelRecord {
            name,
            model: Model::from_json(value["model"].clone())?,
            versions,
            default_version: value["defaultVersion"].as_str().map(str::to_owned),
            revision: value["revision"]
                .as_u64()
                .ok_or_else(|| bad("no revision"))?,
        })
    }
}

/// The error of a model method on a store that keeps no models.
fn no_models() -> Error {
    Error::external(
        crate::Code::Unimplemented,
        "job store",
        "this job store keeps no models (the crate's InMemoryJobStore and LocalJobStore do)",
    )
}

/// Keeps `record` in `models` if its revision is the stored one (0 for a
/// new model), returning what was stored.
pub(crate) fn put_model_in(
    models: &mut BTreeMap<String, ModelRecord>,
    mut record: ModelRecord,
) -> Result<ModelRecord, Error> {
    let key = record.name.to_string();
    match (models.get(&key), record.revision) {
        (None, 0) => {}
        (Some(_), 0) => {
            return Err(Error::already_exists(format!("model {key:?}")));
        }
        (None, _) => return Err(Error::not_found(format!("model {key:?}"))),
        (Some(stored), n) if stored.revision != n => {
            return Err(ErrorKind::Conflict {
                resource: format!("model {key:?}"),
            }
            .into());
        }
        (Some(_), _) => {}
    }
    record.revision = record.revision.checked_add(1).ok_or_else(exhausted)?;
    models.insert(key, record.clone());
    Ok(record)
}

/// Removes the model `name` from `models` if its revision is `revision`.
pub(crate) fn remove_model_in(
    models: &mut BTreeMap<String, ModelRecord>,
    name: &ModelName,
    revision: u64,
) -> Result<(), Error> {
    let key = name.to_string();
    match models.get(&key) {
        None => Err(Error::not_found(format!("model {key:?}"))),
        Some(stored) if stored.revision != revision => Err(ErrorKind::Conflict {
            resource: format!("model {key:?}"),
        }
        .into()),
        Some(_) => {
            models.remove(&key);
            Ok(())
        }
    }
}

/// The models of `project` in `models`, by name.
pub(crate) fn models_of(
    models: &BTreeMap<String, ModelRecord>,
    project: &ProjectName,
) -> Vec<ModelRecord> {
    let prefix = format!("{project}/models/");
    models
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(_, r)| r.clone())
        .collect()
}

/// Which way [`JobStore::scan`] walks the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOrder {
    /// Oldest first: increasing `sequence`.
    OldestFirst,
    /// Newest first: decreasing `sequence`.
    NewestFirst,
}

/// A place to keep jobs, with compare-and-swap updates.
///
/// # Contract
/// - [`insert`](JobStore::insert) fails with
///   [`Code::AlreadyExists`](crate::Code::AlreadyExists) when the name is
///   taken; otherwise it stores the record with a `sequence` greater than
///   every earlier one and `revision` 1, and returns what it stored.
/// - [`update`](JobStore::update) replaces the record only if the stored
///   `revision` equals the given one, storing `revision + 1`; otherwise it
///   fails with [`ErrorKind::Conflict`] (code `ABORTED`), or
///   [`Code::NotFound`](crate::Code::NotFound) when there is no record.
///   `sequence` never changes.
/// - A write that returned `Ok` is seen by every later call (and, for a
///   durable store, survives a crash); a write that failed changed nothing.
/// - [`scan`](JobStore::scan) visits a consistent view in `sequence` order;
///   the visitor must not call back into the store.
///
/// `testing::job_store_conformance` (cargo feature `testing`) checks a
/// store against this contract.
pub trait JobStore: Send + Sync + fmt::Debug + 'static {
    /// The record of `name`, if there is one.
    ///
    /// # Errors
    /// Only the store's own failures.
    fn get(&self, name: &JobName) -> Result<Option<JobRecord>, Error>;

    /// Stores a new record; see the contract.
    ///
    /// # Errors
    /// `ALREADY_EXISTS`, or the store's own failures.
    fn insert(&self, record: JobRecord) -> Result<JobRecord, Error>;

    /// Replaces a record if nobody changed it since it was read; see the contract.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`], `NOT_FOUND`, or the store's own failures.
    fn update(&self, record: JobRecord) -> Result<JobRecord, Error>;

    /// Visits the records of `project` (or of every project), in `order`,
    /// starting after the record with sequence `after` (exclusive), until
    /// `visit` breaks.
    ///
    /// # Errors
    /// Only the store's own failures.
    fn scan(
        &self,
        project: Option<&ProjectName>,
        order: ScanOrder,
        after: Option<u64>,
        visit: &mut dyn FnMut(&JobRecord) -> ControlFlow<()>,
    ) -> Result<(), Error>;

    /// The model `name`, with its versions, if there is one.
    ///
    /// The model methods have default bodies that answer `UNIMPLEMENTED`,
    /// so a store written for jobs alone keeps working; the crate's stores
    /// keep models.
    ///
    /// # Errors
    /// `UNIMPLEMENTED` for a store that keeps no models, or its own failures.
    fn get_model(&self, name: &ModelName) -> Result<Option<ModelRecord>, Error> {
        let _ = name;
        Err(no_models())
    }

    /// Stores `record` if its `revision` is the stored one (0: a new model),
    /// returning it with `revision + 1`; durable, as job writes are.
    ///
    /// # Errors
    /// `ALREADY_EXISTS` (revision 0, the name taken), `NOT_FOUND`,
    /// [`ErrorKind::Conflict`], `UNIMPLEMENTED`, or the store's own failures.
    fn put_model(&self, record: ModelRecord) -> Result<ModelRecord, Error> {
        let _ = record;
        Err(no_models())
    }

    /// Removes the model `name` if its stored revision is `revision`.
    ///
    /// # Errors
    /// `NOT_FOUND`, [`ErrorKind::Conflict`], `UNIMPLEMENTED`, or the
    /// store's own failures.
    fn delete_model(&self, name: &ModelName, revision: u64) -> Result<(), Error> {
        let _ = (name, revision);
        Err(no_models())
    }

    /// The models of `project`, by name.
    ///
    /// # Errors
    /// `UNIMPLEMENTED`, or the store's own failures.
    fn list_models(&self, project: &ProjectName) -> Result<Vec<ModelRecord>, Error> {
        let _ = project;
        Err(no_models())
    }
}

fn exhausted() -> Error {
    Error::external(
        crate::Code::Internal,
        "job store",
        "sequence or revision numbers exhausted",
    )
}

/// The conflict error of [`JobStore::update`].
pub(crate) fn conflict(name: &JobName) -> Error {
    ErrorKind::Conflict {
        resource: format!("job {:?}", name.to_string()),
    }
    .into()
}

macro_rules! forward_job_store {
    ($($ptr:ty),*) => {$(
        impl<S: JobStore + ?Sized> JobStore for $ptr {
            fn get(&self, name: &JobName) -> Result<Option<JobRecord>, Error> {
                (**self).get(name)
            }
            fn insert(&self, record: JobRecord) -> Result<JobRecord, Error> {
                (**self).insert(record)
            }
            fn update(&self, record: JobRecord) -> Result<JobRecord, Error> {
                (**self).update(record)
            }
            fn scan(
                &self,
                project: Option<&ProjectName>,
                order: ScanOrder,
                after: Option<u64>,
                visit: &mut dyn FnMut(&JobRecord) -> ControlFlow<()>,
            ) -> Result<(), Error> {
                (**self).scan(project, order, after, visit)
            }
            fn get_model(&self, name: &ModelName) -> Result<Option<ModelRecord>, Error> {
                (**self).get_model(name)
            }
            fn put_model(&self, record: ModelRecord) -> Result<ModelRecord, Error> {
                (**self).put_model(record)
            }
            fn delete_model(&self, name: &ModelName, revision: u64) -> Result<(), Error> {
                (**self).delete_model(name, revision)
            }
            fn list_models(&self, project: &ProjectName) -> Result<Vec<ModelRecord>, Error> {
                (**self).list_models(project)
            }
        }
    )*};
}
forward_job_store!(Arc<S>, Box<S>);

/// The records of a store, indexed: shared by [`InMemoryJobStore`] and
/// the durable [`LocalJobStore`](crate::LocalJobStore).
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_name: HashMap<JobName, Arc<JobRecord>>,
    by_sequence: BTreeMap<u64, Arc<JobRecord>>,
    by_project: HashMap<ProjectName, BTreeMap<u64, Arc<JobRecord>>>,
    last_sequence: u64,
}

impl Index {
    pub(crate) fn get(&self, name: &JobName) -> Option<&JobRecord> {
        self.by_name.get(name).map(|r| &**r)
    }

    /// The record `insert` would store, or the error it would give.
    pub(crate) fn prepare_insert(&self, mut record: JobRecord) -> Result<JobRecord, Error> {
        if self.by_name.contains_key(&record.name) {
            return Err(Error::already_exists(format!(
                "job {:?}",
                record.name.to_string()
            )));
        }
        record.sequence = self.last_sequence.checked_add(1).ok_or_else(exhausted)?;
        record.revision = 1;
        Ok(record)
    }

    /// The record `update` would store, or the error it would give.
    pub(crate) fn prepare_update(&self, mut record: JobRecord) -> Result<JobRecord, Error> {
        let Some(current) = self.by_name.get(&record.name) else {
            return Err(Error::not_found(format!(
                "job {:?}",
                record.name.to_string()
            )));
        };
        if current.revision != record.revision {
            return Err(conflict(&record.name));
        }
        record.sequence = current.sequence;
        record.revision = record.revision.checked_add(1).ok_or_else(exhausted)?;
        Ok(record)
    }

    /// Puts a prepared (or loaded) record in place.
    pub(crate) fn put(&mut self, record: JobRecord) {
        let record = Arc::new(record);
        self.last_sequence = self.last_sequence.max(record.sequence);
        self.by_name.insert(record.name.clone(), record.clone());
        self.by_sequence.insert(record.sequence, record.clone());
        self.by_project
            .entry(record.name.parent())
            .or_default()
            .insert(record.sequence, record);
    }

    pub(crate) fn scan(
        &self,
        project: Option<&ProjectName>,
        order: ScanOrder,
        after: Option<u64>,
        visit: &mut dyn FnMut(&JobRecord) -> ControlFlow<()>,
    ) {
        let map = match project {
            Some(p) => match self.by_project.get(p) {
                Some(map) => map,
                None => return,
            },
            None => &self.by_sequence,
        };
        let mut walk = |records: &mut dyn Iterator<Item = &Arc<JobRecord>>| {
            for r in records {
                if visit(r).is_break() {
                    break;
                }
            }
        };
        match (order, after) {
            (ScanOrder::OldestFirst, None) => walk(&mut map.values()),
            (ScanOrder::OldestFirst, Some(s)) => walk(
                &mut map
                    .range((Bound::Excluded(s), Bound::Unbounded))
                    .map(|(_, r)| r),
            ),
            (ScanOrder::NewestFirst, None) => walk(&mut map.values().rev()),
            (ScanOrder::NewestFirst, Some(s)) => walk(&mut map.range(..s).rev().map(|(_, r)| r)),
        }
    }
}

/// A job store in memory: fast, and gone with the process. The default for
/// tests and embedded use.
///
/// # Example
/// ```
/// use batch_prediction::{InMemoryJobStore, Job, JobName, JobStore};
/// use batch_prediction::service::JobRecord;
///
/// let store = InMemoryJobStore::new();
/// let name: JobName = "projects/my-proj/jobs/j1".parse()?;
/// let stored = store.insert(JobRecord::new(name.clone(), Job::default()))?;
/// assert_eq!((stored.sequence, stored.revision), (1, 1));
/// assert!(store.insert(JobRecord::new(name.clone(), Job::default())).is_err());
/// let updated = store.update(stored.clone())?;
/// assert_eq!(updated.revision, 2);
/// assert!(store.update(stored).is_err(), "revision 1 is stale");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct InMemoryJobStore {
    index: RwLock<Index>,
    models: RwLock<BTreeMap<String, ModelRecord>>,
}

impl InMemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl InMemoryJobStore {
    /// Checks `record` with `prepare` (insert or update) and keeps it.
    fn write(
        &self,
        record: JobRecord,
        prepare: fn(&Index, JobRecord) -> Result<JobRecord, Error>,
    ) -> Result<JobRecord, Error> {
        let mut index = write(&self.index);
        let record = prepare(&index, record)?;
        index.put(record.clone());
        Ok(record)
    }
}

impl JobStore for InMemoryJobStore {
    fn get(&self, name: &JobName) -> Result<Option<JobRecord>, Error> {
        Ok(read(&self.index).get(name).cloned())
    }

    fn insert(&self, record: JobRecord) -> Result<JobRecord, Error> {
        self.write(record, Index::prepare_insert)
    }

    fn update(&self, record: JobRecord) -> Result<JobRecord, Error> {
        self.write(record, Index::prepare_update)
    }

    fn scan(
        &self,
        project: Option<&ProjectName>,
        order: ScanOrder,
        after: Option<u64>,
        visit: &mut dyn FnMut(&JobRecord) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        read(&self.index).scan(project, order, after, visit);
        Ok(())
    }

    fn get_model(&self, name: &ModelName) -> Result<Option<ModelRecord>, Error> {
        Ok(read(&self.models).get(&name.to_string()).cloned())
    }

    fn put_model(&self, record: ModelRecord) -> Result<ModelRecord, Error> {
        put_model_in(&mut write(&self.models), record)
    }

    fn delete_model(&self, name: &ModelName, revision: u64) -> Result<(), Error> {
        remove_model_in(&mut write(&self.models), name, revision)
    }

    fn list_models(&self, project: &ProjectName) -> Result<Vec<ModelRecord>, Error> {
        Ok(models_of(&read(&self.models), project))
    }
}

/// A read lock that survives a panic elsewhere: the index is only changed
/// by `put`, which cannot leave it half-done.
pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
