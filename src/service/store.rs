//! Job stores: where a [`JobService`](crate::JobService) keeps its jobs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, RwLock};

use crate::error::{Error, ErrorKind};
use crate::iam::Policy;
use crate::model::Job;
use crate::name::{JobName, ProjectName};

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
        }
    }
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
}

/// A read lock that survives a panic elsewhere: the index is only changed
/// by `put`, which cannot leave it half-done.
pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
