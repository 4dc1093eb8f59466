//! The job service: the `projects.jobs` methods over a [`JobStore`], and a
//! runner that takes queued jobs through the [`BatchExecutor`](crate::BatchExecutor).

mod caller;
mod filter;
mod local;
mod models;
mod runner;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, ValidationError};
use crate::model::{Etag, Job, State};
use crate::name::{JobName, ProjectName};
use crate::predict::CancelHandle;
use crate::state::Transition;

use crate::iam::{self, Caller, JOB_PERMISSIONS, Policy};
use crate::trace;
pub use caller::CallerView;
pub use local::LocalJobStore;
pub use models::{ListModelsResponse, ListVersionsResponse, ModelsResolver};
pub use runner::{LocalRunner, Runner, SlurmOptions, SlurmRunner};
pub use store::{InMemoryJobStore, JobRecord, JobStore, ModelRecord, ScanOrder};

use filter::Filter;
use store::read;

/// `pageSize` when a list request gives none (or 0).
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// The largest `pageSize`; larger requests are served 100 jobs a page.
pub const MAX_PAGE_SIZE: usize = 100;
/// The most bytes of (compact) JSON a `jobs.list` page gathers: a page
/// ends early, with a `nextPageToken`, once its jobs reach it, so a list of
/// large jobs holds a bounded amount of memory (a few MiB with the
/// pretty-printed answer), however many lists run at once. A page always
/// holds at least one job.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// How many times a service retries a write that lost a race with another
/// writer before giving up with `ABORTED`.
const MAX_WRITE_ATTEMPTS: usize = 64;

/// The message of a job found `PREPARING` or `RUNNING` when a service opens its store.
pub const INTERRUPTED_MESSAGE: &str = "the service stopped while the job was running (the process exited or the machine restarted); the output shards it committed are kept, and a new job with the same outputPath and inputs resumes from them";

/// The message of a job found `CANCELLING` when a service opens its store.
pub const INTERRUPTED_CANCEL_MESSAGE: &str =
    "Job cancelled by request; the service stopped before the run ended";

/// A `jobs.list` request.
///
/// # Example
/// ```
/// let request = batch_prediction::service::ListJobsRequest::new()
///     .set_filter("state=FAILED AND labels.team=ml")
///     .set_page_size(50);
/// assert_eq!(request.page_size, 50);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ListJobsRequest {
    /// The filter; empty lists every job. See [`JobService::list`].
    pub filter: String,
    /// Jobs per page: 0 means [`DEFAULT_PAGE_SIZE`]; above [`MAX_PAGE_SIZE`] means the maximum.
    pub page_size: i32,
    /// A previous response's `nextPageToken`, or empty for the first page.
    pub page_token: String,
}

impl ListJobsRequest {
    /// A request for the first page of every job.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `filter`.
    #[must_use]
    pub fn set_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = filter.into();
        self
    }

    /// Sets `pageSize`.
    #[must_use]
    pub fn set_page_size(mut self, page_size: i32) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets `pageToken`.
    #[must_use]
    pub fn set_page_token(mut self, page_token: impl Into<String>) -> Self {
        self.page_token = page_token.into();
        self
    }
}

/// A `jobs.list` response. An empty one serializes as `{}`, as the API's does.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ListJobsResponse {
    /// The page's jobs, newest first.
    pub jobs: Vec<Job>,
    /// The token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl ListJobsResponse {
    /// The response as the API's JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a list response always serializes")
    }
}

impl Serialize for ListJobsResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if !self.jobs.is_empty() {
            m.serialize_entry("jobs", &self.jobs)?;
        }
        if let Some(token) = &self.next_page_token {
            m.serialize_entry("nextPageToken", token)?;
        }
        m.end()
    }
}

/// Builds a [`JobService`].
#[must_use]
pub struct JobServiceBuilder {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    enforce_iam: bool,
    progress_interval: Duration,
    require_models: bool,
    external_runner: Option<String>,
}

impl fmt::Debug for JobServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobServiceBuilder")
            .field("store", &self.store)
            .field("enforce_iam", &self.enforce_iam)
            .field("progress_interval", &self.progress_interval)
            .finish_non_exhaustive()
    }
}

impl JobServiceBuilder {
    /// Takes times from `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks every [`CallerView`] call against the project's and the job's
    /// policies (default: off, for embedded use).
    pub fn with_iam_enforcement(mut self, on: bool) -> Self {
        self.enforce_iam = on;
        self
    }

    /// How often a running job's counts are written to the store (default: 1 s).
    pub fn with_progress_interval(mut self, interval: Duration) -> Self {
        self.progress_interval = interval;
        self
    }

    /// Refuses at `jobs.create`, with `NOT_FOUND`, a job whose `modelName`
    /// or `versionName` names a model or version the store does not hold,
    /// as AI Platform did (default: off, for services whose resolver knows
    /// its models another way, or that predict every model alike).
    pub fn with_models_required(mut self, on: bool) -> Self {
        self.require_models = on;
        self
    }

    /// Leaves to the [`Runner`] named `name` (its [`Runner::external`]) the
    /// unfinished jobs whose [`JobRecord::runner`] names it: they run
    /// outside this process (a Slurm cluster's), so opening the service
    /// does not fail them as interrupted, and that runner goes on following
    /// them (default: none; every unfinished job is interrupted).
    pub fn with_external_runner(mut self, name: impl Into<String>) -> Self {
        self.external_runner = Some(name.into());
        self
    }

    /// Opens the service: every job the store holds as `PREPARING` or
    /// `RUNNING` (a run that the last process did not finish) becomes
    /// `FAILED` with [`INTERRUPTED_MESSAGE`], and every `CANCELLING` one
    /// `CANCELLED` with [`INTERRUPTED_CANCEL_MESSAGE`], except the jobs of
    /// the [external runner](Self::with_external_runner).
    ///
    /// So a store is served by one service at a time: a second service
    /// built over a store that another one is running jobs from would fail
    /// those jobs. ([`LocalJobStore`] keeps other processes out with a lock.)
    ///
    /// # Errors
    /// The store's errors.
    pub fn build(self) -> Result<JobService, Error> {
        let service = JobService {
            store: self.store,
            clock: self.clock,
            enforce_iam: self.enforce_iam,
            progress_interval: self.progress_interval,
            project_policies: RwLock::default(),
            running: Mutex::default(),
            next_run_id: AtomicU64::new(0),
            created: (Mutex::new(0), Condvar::new()),
            require_models: self.require_models,
            operations: Mutex::default(),
            external_runner: self.external_runner,
        };
        service.recover()?;
        Ok(service)
    }
}

/// The `projects.jobs` API over a [`JobStore`]: create, get, list, patch,
/// cancel, and IAM, with the API's semantics, errors and JSON, plus a
/// runner ([`JobService::run_next`]) that executes queued jobs.
///
/// The methods on `JobService` itself act for the embedding service and
/// check no permission. [`JobService::caller`] gives a view whose methods
/// act for a [`Caller`] and, when the service was built
/// [with enforcement](JobServiceBuilder::with_iam_enforcement), answer
/// `PERMISSION_DENIED` unless the project's policy
/// ([`JobService::set_project_policy`]) or the job's grants the method's
/// permission:
///
/// | method | permission | checked on |
/// |---|---|---|
/// | create | `ml.jobs.create` | project |
/// | get | `ml.jobs.get` | project and job |
/// | list | `ml.jobs.list` | project |
/// | patch | `ml.jobs.update` | project and job |
/// | cancel | `ml.jobs.cancel` | project and job |
/// | getIamPolicy | `ml.jobs.getIamPolicy` | project and job |
/// | setIamPolicy | `ml.jobs.setIamPolicy` | project and job |
/// | testIamPermissions | none | — |
///
/// Choices where the API's public documentation is silent:
/// - a duplicate `jobId` is `ALREADY_EXISTS`; an etag mismatch `ABORTED`;
///   `cancel` of a finished job `FAILED_PRECONDITION`; an update mask with a
///   path other than `labels` and `etag`, or none, `INVALID_ARGUMENT`;
/// - labels may be patched on a finished job; a `cancel` of a `CANCELLING` job succeeds;
/// - `pageSize` above 100 is served 100 a page; jobs are listed newest
///   first, all of them (the hosted service hides jobs older than 90 days);
/// - a job's creator is not granted a role on it; `jobPosition` is not set;
/// - the job's etag and its policy's etag change independently: a patch
///   does not change the policy's etag, nor `setIamPolicy` the job's;
/// - while a job runs, its `predictionOutput` shows the counts of the
///   shards committed so far, written at most every
///   [progress interval](JobServiceBuilder::with_progress_interval): each
///   such write gives the job a new etag, so an etag-checked patch of a
///   running job may need a retry;
/// - project policies ([`JobService::set_project_policy`]) are held in
///   memory, not in the store: a service sets them when it starts.
///
/// # Example
/// ```
/// use batch_prediction::{InMemoryJobStore, Job, JobService, ProjectName, State};
/// use batch_prediction::service::ListJobsRequest;
///
/// let service = JobService::new(InMemoryJobStore::new())?;
/// let parent: ProjectName = "projects/my-proj".parse()?;
/// let job = Job::from_json(r#"{"jobId": "j1", "labels": {"team": "ml"}, "predictionInput": {
///     "dataFormat": "JSON", "inputPaths": ["gs://b/in/*"], "outputPath": "gs://b/out",
///     "region": "us-central1", "uri": "gs://b/model"}}"#)?;
/// let created = service.create(&parent, job)?;
/// assert_eq!(created.state(), State::Queued);
///
/// let page = service.list(&parent, &ListJobsRequest::new().set_filter("labels.team=ml"))?;
/// assert_eq!(page.jobs, [created.clone()]);
/// let name = parent.job("j1")?;
/// service.cancel(&name)?;
/// assert_eq!(service.get(&name)?.state(), State::Cancelled);
/// assert_eq!(service.list(&parent, &ListJobsRequest::new().set_filter("state=QUEUED"))?.to_json(), serde_json::json!({}));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JobService {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    enforce_iam: bool,
    progress_interval: Duration,
    project_policies: RwLock<HashMap<ProjectName, Policy>>,
    /// The runs of this service: the job, a run ID and its cancel handle.
    running: Mutex<HashMap<JobName, (u64, CancelHandle)>>,
    next_run_id: AtomicU64,
    /// Counts creates and cancels, so a runner can sleep until there is work.
    created: (Mutex<u64>, Condvar),
    /// The runner whose jobs run outside this process, if any.
    external_runner: Option<String>,
    /// Whether `jobs.create` checks that a named model exists.
    require_models: bool,
    /// The long-running operations of model and version writes, newest
    /// last (done when answered; kept for `operations.get`).
    operations: Mutex<std::collections::VecDeque<(String, Value)>>,
}

impl fmt::Debug for JobService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobService")
            .field("store", &self.store)
            .field("enforce_iam", &self.enforce_iam)
            .finish_non_exhaustive()
    }
}

impl JobService {
    /// A service over `store` with the defaults; see [`JobServiceBuilder::build`].
    ///
    /// # Errors
    /// The store's errors.
    pub fn new(store: impl JobStore) -> Result<JobService, Error> {
        Self::builder(store).build()
    }

    /// A builder for a service over `store`.
    pub fn builder(store: impl JobStore) -> JobServiceBuilder {
        JobServiceBuilder {
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
            enforce_iam: false,
            progress_interval: Duration::from_secs(1),
            require_models: false,
            external_runner: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn JobStore {
        &*self.store
    }

    /// Whether calls through [`JobService::caller`] are checked against IAM policies.
    pub fn enforces_iam(&self) -> bool {
        self.enforce_iam
    }

    /// A view of the service that acts for `caller`, checking permissions
    /// when the service enforces IAM.
    pub fn caller<'a>(&'a self, caller: &'a Caller) -> CallerView<'a> {
        CallerView {
            service: self,
            caller,
        }
    }

    /// Sets the IAM policy of a project, which applies to every job in it
    /// (projects are not resources of this API, so their policies are set
    /// here). Its `version` and `etag` are ignored.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a policy that breaks the rules of `setIamPolicy`.
    pub fn set_project_policy(&self, project: &ProjectName, policy: Policy) -> Result<(), Error> {
        check_policy(&policy)?;
        store::write(&self.project_policies).insert(project.clone(), policy);
        Ok(())
    }

    /// `jobs.create`: validates `job` (every violation, `INVALID_ARGUMENT`),
    /// ignores the output-only fields the client sent, sets `createTime`,
    /// state `QUEUED` and a fresh etag, and stores it.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT`, `ALREADY_EXISTS` for a `jobId` taken in the project,
    /// or the store's errors.
    pub fn create(&self, parent: &ProjectName, job: Job) -> Result<Job, Error> {
        self.create_as(None, parent, job)
    }

    /// `jobs.get`.
    ///
    /// # Errors
    /// `NOT_FOUND`, or the store's errors.
    pub fn get(&self, name: &JobName) -> Result<Job, Error> {
        self.get_as(None, name)
    }

    /// `jobs.list`: the project's jobs that pass `request.filter`, newest
    /// first, a page at a time.
    ///
    /// The filter language is a subset of [AIP-160](https://google.aip.dev/160):
    #[doc = include_str!("filter.md")]
    ///
    /// A filter has at most 2,048 characters, 64 comparisons and 16
    /// wildcards (`*`), so that matching it over a project stays cheap. A
    /// page holds at most `pageSize` jobs and ends early, with a
    /// `nextPageToken`, once its jobs reach [`MAX_PAGE_BYTES`] of JSON.
    ///
    /// Page tokens are opaque. A token holds the position of the last job
    /// returned and a fingerprint of the parent and filter: it stays correct
    /// while jobs are created (they are newer, so they never shift later
    /// pages), and a token used with another parent or filter is refused.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a malformed filter (with its position), a
    /// negative `pageSize` or a bad page token; the store's errors.
    pub fn list(
        &self,
        parent: &ProjectName,
        request: &ListJobsRequest,
    ) -> Result<ListJobsResponse, Error> {
        self.list_as(None, parent, request)
    }

    /// `jobs.patch`: `update_mask` (comma-separated) may name `labels`, which
    /// replaces the job's labels with `job.labels`, and `etag`, which makes
    /// the update conditional on `job.etag` being the current etag. Any
    /// change gives the job a new etag.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a missing or unsupported mask or bad labels;
    /// `NOT_FOUND`; `ABORTED` for an etag mismatch; the store's errors.
    pub fn patch(&self, name: &JobName, job: Job, update_mask: &str) -> Result<Job, Error> {
        self.patch_as(None, name, job, update_mask)
    }

    /// `jobs.cancel`: a `QUEUED` job becomes `CANCELLED`; a `PREPARING` or
    /// `RUNNING` one `CANCELLING`, and its run is told to stop (it becomes
    /// `CANCELLED` when the run ends). Cancelling a `CANCELLING` job does nothing.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` for a finished job; `NOT_FOUND`; the store's errors.
    pub fn cancel(&self, name: &JobName) -> Result<(), Error> {
        self.cancel_as(None, name)
    }

    /// `jobs.getIamPolicy`: the job's policy, at version 3 if it has
    /// conditional bindings and 1 otherwise. `requested_version` must be
    /// 0, 1 or 3 when given.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for another version, or a version below 3 for a
    /// policy with conditions; `NOT_FOUND`; the store's errors.
    pub fn get_iam_policy(
        &self,
        resource: &JobName,
        requested_version: Option<i32>,
    ) -> Result<Policy, Error> {
        self.get_iam_policy_as(None, resource, requested_version)
    }

    /// `jobs.setIamPolicy`: replaces the fields of the job's policy that
    /// `update_mask` names (`bindings`, `etag`, `auditConfigs`, `version`;
    /// default `bindings, etag`). When the mask has `etag` and `policy.etag`
    /// is set, it must be the current one.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a policy or mask that breaks the rules;
    /// `NOT_FOUND`; `ABORTED` for an etag mismatch; the store's errors.
    pub fn set_iam_policy(
        &self,
        resource: &JobName,
        policy: Policy,
        update_mask: Option<&str>,
    ) -> Result<Policy, Error> {
        self.set_iam_policy_as(None, resource, policy, update_mask)
    }

    /// `jobs.testIamPermissions`: the permissions among `permissions` the
    /// service grants (for the service itself, or without enforcement:
    /// every `ml.jobs.*` one asked for), in the order asked. A job that
    /// does not exist gives an empty list.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a wildcard such as `ml.*`; the store's errors.
    pub fn test_iam_permissions(
        &self,
        resource: &JobName,
        permissions: &[String],
    ) -> Result<Vec<String>, Error> {
        self.test_iam_permissions_as(None, resource, permissions)
    }

    // ---- implementations, for the service (caller None) or a caller ----

    fn create_as(
        &self,
        caller: Option<&Caller>,
        parent: &ProjectName,
        mut job: Job,
    ) -> Result<Job, Error> {
        self.check(caller, parent, None, iam::CREATE, &project_resource(parent))?;
        job.validate()?;
        if self.require_models {
            self.check_model_exists(&job)?;
        }
        let name = parent.job(job.job_id.as_deref().expect("validated"))?;
        job.clear_output_only();
        job.etag = None;
        job.apply(Transition::Queue, &*self.clock)?;
        let record = self.store.insert(JobRecord::new(name, job))?;
        trace::event!(debug, job = %record.name, op = "insert", revision = record.revision, "job store write");
        trace::event!(info, job = %record.name, state = %record.job.state(), "job created");
        self.notify_runners();
        Ok(present(&record))
    }

    fn get_as(&self, caller: Option<&Caller>, name: &JobName) -> Result<Job, Error> {
        let record = self.find(caller, name, iam::GET)?;
        Ok(present(&record))
    }

    fn list_as(
        &self,
        caller: Option<&Caller>,
        parent: &ProjectName,
        request: &ListJobsRequest,
    ) -> Result<ListJobsResponse, Error> {
        self.check(caller, parent, None, iam::LIST, &project_resource(parent))?;
        let filter = Filter::parse(&request.filter).map_err(|e| {
            Error::invalid_argument(
                "filter",
                format!("invalid filter {:?}: {e}", request.filter),
            )
        })?;
        let page_size = match request.page_size {
            n if n < 0 => {
                return Err(Error::invalid_argument(
                    "pageSize",
                    format!("pageSize must not be negative, got {n}"),
                ));
            }
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let fingerprint = fingerprint(parent, &request.filter);
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_page_token(token, fingerprint)?),
        };
        let mut jobs = Vec::new();
        let mut last = None;
        let mut more = false;
        let mut bytes = 0;
        // The store is scanned a slice of records at a time, each scan a
        // short hold of its lock, so a list over a large project never keeps
        // writers (creates in other projects) waiting for long.
        let mut cursor = after;
        loop {
            let mut visited = 0;
            let mut done = true;
            self.store.scan(
                Some(parent),
                ScanOrder::NewestFirst,
                cursor,
                &mut |record| {
                    if visited == SCAN_SLICE {
                        done = false;
                        return ControlFlow::Break(());
                    }
                    visited += 1;
                    cursor = Some(record.sequence);
                    if !filter.matches(&record.job) {
                        return ControlFlow::Continue(());
                    }
                    if jobs.len() == page_size || bytes >= MAX_PAGE_BYTES {
                        more = true;
                        return ControlFlow::Break(());
                    }
                    let job = present(record);
                    bytes += json_size(&job);
                    jobs.push(job);
                    last = Some(record.sequence);
                    ControlFlow::Continue(())
                },
            )?;
            if more || done {
                break;
            }
        }
        let next_page_token = match (more, last) {
            (true, Some(sequence)) => Some(encode_page_token(sequence, fingerprint)),
            _ => None,
        };
        Ok(ListJobsResponse {
            jobs,
            next_page_token,
        })
    }

    fn patch_as(
        &self,
        caller: Option<&Caller>,
        name: &JobName,
        job: Job,
        update_mask: &str,
    ) -> Result<Job, Error> {
        let paths = parse_mask(update_mask, &["labels", "etag"], "jobs.patch")?;
        let Some(paths) = paths else {
            return Err(Error::invalid_argument(
                "updateMask",
                "updateMask is required: name labels, etag or both",
            ));
        };
        let (set_labels, check_etag) = (paths.contains(&"labels"), paths.contains(&"etag"));
        if set_labels {
            job.validate_labels()?;
        }
        if check_etag && job.etag.is_none() {
            return Err(Error::invalid_argument(
                "etag",
                "updateMask names etag but the job has no etag",
            ));
        }
        self.find(caller, name, iam::UPDATE)?;
        let record = self.modify(name, |record| {
            if check_etag {
                let current = job_etag(record);
                let sent = job.etag.as_ref().expect("checked above");
                if *sent != current {
                    return Err(ErrorKind::EtagMismatch {
                        resource: job_resource(name),
                        sent: sent.to_string(),
                        current: current.to_string(),
                    }
                    .into());
                }
            }
            if set_labels {
                record.job.labels = job.labels.clone();
            }
            Ok(())
        })?;
        Ok(present(&record))
    }

    fn cancel_as(&self, caller: Option<&Caller>, name: &JobName) -> Result<(), Error> {
        self.find(caller, name, iam::CANCEL)?;
        let clock = &*self.clock;
        // Held across the write, so that a runner registers its run either
        // before (and is told here) or after (and sees the new state).
        let running = lock(&self.running);
        let handle = running.get(name).map(|(_, handle)| handle.clone());
        let record = self.modify(name, |record| {
            let outside = self.runs_outside(record);
            let job = &mut record.job;
            match (job.state(), &handle) {
                (State::Queued, _) => job.apply(Transition::cancel(), clock)?,
                // A runner outside this process holds the job: it stops
                // the run there and records the end.
                (State::Preparing | State::Running, None) if outside => {
                    job.apply(Transition::RequestCancel, clock)?
                }
                (State::Cancelling, None) if outside => {}
                (State::Preparing | State::Running, Some(_)) => {
                    job.apply(Transition::RequestCancel, clock)?
                }
                // No run of this service holds the job (its run ended
                // without recording the end): nothing is left to stop.
                (State::Preparing | State::Running, None) => {
                    job.apply(Transition::RequestCancel, clock)?;
                    job.apply(Transition::cancel(), clock)?;
                }
                (State::Cancelling, Some(_)) => {}
                (State::Cancelling, None) => job.apply(Transition::cancel(), clock)?,
                (state, _) => {
                    return Err(Error::failed_precondition(format!(
                        "job {:?} is already {state}; only QUEUED, PREPARING and RUNNING jobs can be cancelled",
                        name.to_string()
                    )));
                }
            }
            Ok(())
        })?;
        if record.job.state() == State::Cancelling
            && let Some(handle) = handle
        {
            handle.cancel();
        }
        drop(running);
        self.notify_runners();
        Ok(())
    }

    /// Whether `record`'s job is run by this service's external runner.
    fn runs_outside(&self, record: &JobRecord) -> bool {
        let name = record.runner.as_ref().and_then(|r| r["runner"].as_str());
        name.is_some() && name == self.external_runner.as_deref()
    }

    /// Wakes runners waiting in [`JobService::wait_for_change`].
    fn notify_runners(&self) {
        *lock(&self.created.0) += 1;
        self.created.1.notify_all();
    }

    fn get_iam_policy_as(
        &self,
        caller: Option<&Caller>,
        resource: &JobName,
        requested_version: Option<i32>,
    ) -> Result<Policy, Error> {
        if let Some(v) = requested_version.filter(|v| ![0, 1, 3].contains(v)) {
            return Err(Error::invalid_argument(
                "options.requestedPolicyVersion",
                format!("requestedPolicyVersion must be 0, 1 or 3, got {v}"),
            ));
        }
        let record = self.find(caller, resource, iam::GET_IAM_POLICY)?;
        if record.policy.has_conditions() && requested_version.unwrap_or(0) < 3 {
            return Err(Error::invalid_argument(
                "options.requestedPolicyVersion",
                format!(
                    "the policy of {} has conditional role bindings: request version 3",
                    job_resource(resource)
                ),
            ));
        }
        Ok(present_policy(&record))
    }

    fn set_iam_policy_as(
        &self,
        caller: Option<&Caller>,
        resource: &JobName,
        policy: Policy,
        update_mask: Option<&str>,
    ) -> Result<Policy, Error> {
        let paths = parse_mask(
            update_mask.unwrap_or(""),
            &["bindings", "etag", "auditConfigs", "version"],
            "setIamPolicy",
        )?
        .unwrap_or_else(|| vec!["bindings", "etag"]);
        check_policy(&policy)?;
        self.find(caller, resource, iam::SET_IAM_POLICY)?;
        let record = self.modify(resource, |record| {
            if paths.contains(&"etag")
                && let Some(sent) = &policy.etag
            {
                let current = policy_etag(record);
                if *sent != current {
                    return Err(ErrorKind::EtagMismatch {
                        resource: format!("the policy of {}", job_resource(resource)),
                        sent: sent.to_string(),
                        current: current.to_string(),
                    }
                    .into());
                }
            }
            if paths.contains(&"bindings") {
                record.policy.bindings = policy.bindings.clone();
            }
            if paths.contains(&"auditConfigs") {
                record.policy.audit_configs = policy.audit_configs.clone();
            }
            Ok(())
        })?;
        Ok(present_policy(&record))
    }

    fn test_iam_permissions_as(
        &self,
        caller: Option<&Caller>,
        resource: &JobName,
        permissions: &[String],
    ) -> Result<Vec<String>, Error> {
        for (i, p) in permissions.iter().enumerate() {
            if p.contains('*') {
                return Err(Error::invalid_argument(
                    format!("permissions[{i}]"),
                    format!("permission {p:?} has a wildcard; name each permission"),
                ));
            }
        }
        let Some(record) = self.store.get(resource)? else {
            return Ok(Vec::new());
        };
        let project = resource.parent();
        Ok(permissions
            .iter()
            .filter(|p| {
                JOB_PERMISSIONS.contains(&p.as_str())
                    && self.allowed(caller, &project, Some(&record.policy), p)
            })
            .cloned()
            .collect())
    }

    // ---- permissions ----

    fn allowed(
        &self,
        caller: Option<&Caller>,
        project: &ProjectName,
        job_policy: Option<&Policy>,
        permission: &str,
    ) -> bool {
        let Some(caller) = caller.filter(|_| self.enforce_iam) else {
            return true;
        };
        read(&self.project_policies)
            .get(project)
            .is_some_and(|p| p.grants(caller, permission))
            || job_policy.is_some_and(|p| p.grants(caller, permission))
    }

    pub(crate) fn check(
        &self,
        caller: Option<&Caller>,
        project: &ProjectName,
        job_policy: Option<&Policy>,
        permission: &str,
        resource: &str,
    ) -> Result<(), Error> {
        if self.allowed(caller, project, job_policy, permission) {
            return Ok(());
        }
        Err(ErrorKind::PermissionDenied {
            principal: caller.map(Caller::to_string).unwrap_or_default(),
            permission: permission.to_owned(),
            resource: resource.to_owned(),
        }
        .into())
    }

    /// The job's record, if `caller` may use `permission` on it. A caller
    /// without the permission on the project learns nothing of a job that
    /// does not exist: `PERMISSION_DENIED`, not `NOT_FOUND`.
    fn find(
        &self,
        caller: Option<&Caller>,
        name: &JobName,
        permission: &str,
    ) -> Result<JobRecord, Error> {
        let project = name.parent();
        match self.store.get(name)? {
            Some(record) => {
                self.check(
                    caller,
                    &project,
                    Some(&record.policy),
                    permission,
                    &job_resource(name),
                )?;
                Ok(record)
            }
            None => {
                self.check(caller, &project, None, permission, &job_resource(name))?;
                Err(Error::not_found(job_resource(name)))
            }
        }
    }

    // ---- writes ----

    fn modify(
        &self,
        name: &JobName,
        change: impl FnMut(&mut JobRecord) -> Result<(), Error>,
    ) -> Result<JobRecord, Error> {
        modify(&*self.store, name, change)
    }

    fn recover(&self) -> Result<(), Error> {
        let mut interrupted = Vec::new();
        self.store
            .scan(None, ScanOrder::OldestFirst, None, &mut |record| {
                if matches!(
                    record.job.state(),
                    State::Preparing | State::Running | State::Cancelling
                ) && !self.runs_outside(record)
                {
                    interrupted.push(record.name.clone());
                }
                ControlFlow::Continue(())
            })?;
        let clock = &*self.clock;
        for name in interrupted {
            self.modify(&name, |record| {
                // A job another runner ran outside the process may still
                // run there: say so, rather than that it stopped.
                let elsewhere = record
                    .runner
                    .as_ref()
                    .and_then(|r| r["runner"].as_str())
                    .map(|runner| {
                        format!(
                            "the service was opened without the runner {runner:?} that ran this job outside it, so it no longer follows the job; what it started there may still run (for Slurm, scancel the job's Slurm jobs, whose IDs the job store keeps)"
                        )
                    });
                let job = &mut record.job;
                let transition = match (job.state(), elsewhere) {
                    (State::Preparing | State::Running, Some(message)) => Transition::Fail(message),
                    (State::Cancelling, Some(message)) => Transition::Cancel(message),
                    (State::Preparing | State::Running, None) => {
                        Transition::fail(INTERRUPTED_MESSAGE)
                    }
                    (State::Cancelling, None) => {
                        Transition::Cancel(INTERRUPTED_CANCEL_MESSAGE.into())
                    }
                    _ => return Ok(()),
                };
                job.apply(transition, clock)?;
                Ok(())
            })?;
        }
        Ok(())
    }
}

// ---- helpers ----

/// Reads, changes and writes back a record, again if another writer got
/// there first. Gives the job a new revision if it changed, the policy
/// one if it changed, and writes nothing if neither did, nor the runner's
/// state (which changes no etag).
fn modify(
    store: &dyn JobStore,
    name: &JobName,
    mut change: impl FnMut(&mut JobRecord) -> Result<(), Error>,
) -> Result<JobRecord, Error> {
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let current = store
            .get(name)?
            .ok_or_else(|| Error::not_found(job_resource(name)))?;
        let mut next = current.clone();
        change(&mut next)?;
        let job_changed = next.job != current.job;
        let policy_changed = next.policy != current.policy;
        if !job_changed && !policy_changed && next.runner == current.runner {
            return Ok(current);
        }
        if job_changed {
            next.job_revision = current.revision + 1;
        }
        if policy_changed {
            next.policy_revision = current.revision + 1;
        }
        let (from, to) = (current.job.state(), next.job.state());
        match store.update(next) {
            Err(e) if matches!(e.kind(), ErrorKind::Conflict { .. }) => continue,
            Ok(written) => {
                trace::event!(debug, job = %name, op = "update", revision = written.revision, "job store write");
                if from != to {
                    trace::event!(info, job = %name, from = %from, state = %to, "job state changed");
                }
                return Ok(written);
            }
            other => return other,
        }
    }
    Err(store::conflict(name))
}

pub(crate) use crate::lock;

pub(crate) fn job_resource(name: &JobName) -> String {
    format!("job {:?}", name.to_string())
}

pub(crate) fn project_resource(project: &ProjectName) -> String {
    format!("project {:?}", project.to_string())
}

fn check_policy(policy: &Policy) -> Result<(), Error> {
    match ValidationError::of("policy", policy.violations("policy")) {
        None => Ok(()),
        Some(e) => Err(e.into()),
    }
}

/// The paths of a field mask, each one of `allowed`; `None` for an empty mask.
fn parse_mask<'a>(
    mask: &str,
    allowed: &[&'a str],
    method: &str,
) -> Result<Option<Vec<&'a str>>, Error> {
    let mut paths = Vec::new();
    for path in mask.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match allowed.iter().find(|a| **a == path) {
            Some(a) => paths.push(*a),
            None => {
                return Err(Error::invalid_argument(
                    "updateMask",
                    format!(
                        "updateMask path {path:?} is not supported by {method}; supported: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    Ok((!paths.is_empty()).then_some(paths))
}

/// The job as the API shows it: with its etag.
/// How many records one scan of a `jobs.list` visits before it lets go of
/// the store and goes on from where it stopped.
const SCAN_SLICE: usize = 256;

/// The size of `job` as compact JSON, counted without keeping the text.
fn json_size(job: &Job) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, &job.to_json());
    count.0
}

fn present(record: &JobRecord) -> Job {
    let mut job = record.job.clone();
    job.etag = Some(job_etag(record));
    job
}

fn present_policy(record: &JobRecord) -> Policy {
    let mut policy = record.policy.clone();
    policy.version = if policy.has_conditions() { 3 } else { 1 };
    policy.etag = Some(policy_etag(record));
    policy
}

fn job_etag(record: &JobRecord) -> Etag {
    derive_etag(record.sequence, record.job_revision, 0)
}

fn policy_etag(record: &JobRecord) -> Etag {
    derive_etag(record.sequence, record.policy_revision, 1)
}

/// An 8-byte etag, different for every revision of one job (and between a
/// job's and its policy's): a bijective mix of the revision, so it cannot
/// repeat, and opaque, so clients do not read meaning into it.
fn derive_etag(sequence: u64, revision: u64, domain: u64) -> Etag {
    let mut z = sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ domain.wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ revision;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Etag::from_bytes(z.to_be_bytes().to_vec())
}

/// FNV-1a over the parent and filter: stable across processes, so a token
/// outlives a restart of the service.
fn fingerprint(parent: &ProjectName, filter: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parent.to_string().bytes().chain([0]).chain(filter.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const TOKEN: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn encode_page_token(sequence: u64, fingerprint: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&sequence.to_be_bytes());
    bytes[8..].copy_from_slice(&fingerprint.to_be_bytes());
    TOKEN.encode(bytes)
}

fn decode_page_token(token: &str, fingerprint: u64) -> Result<u64, Error> {
    let bytes = TOKEN
        .decode(token)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| {
            Error::invalid_argument(
                "pageToken",
                format!("invalid page token {token:?}: use a nextPageToken of this method"),
            )
        })?;
    let sequence = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let issued_for = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    if issued_for != fingerprint {
        return Err(Error::invalid_argument(
            "pageToken",
            format!(
                "page token {token:?} was issued for another parent or filter; keep both unchanged while paging"
            ),
        ));
    }
    Ok(sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_by_revision_and_domain() {
        let mut seen = std::collections::HashSet::new();
        for sequence in 1..20 {
            for revision in 0..50 {
                for domain in 0..2 {
                    assert!(seen.insert(derive_etag(sequence, revision, domain)));
                }
            }
        }
        assert_eq!(derive_etag(1, 1, 0).as_bytes().len(), 8);
    }

    #[test]
    fn page_tokens_round_trip_and_bind_the_request() {
        let p: ProjectName = "projects/my-proj".parse().unwrap();
        let f = fingerprint(&p, "state=QUEUED");
        let token = encode_page_token(42, f);
        assert_eq!(decode_page_token(&token, f).unwrap(), 42);
        assert_ne!(f, fingerprint(&p, "state=FAILED"));
        let other = decode_page_token(&token, fingerprint(&p, "")).unwrap_err();
        assert!(
            other.to_string().contains("another parent or filter"),
            "{other}"
        );
        for bad in ["x", "!!!!", &TOKEN.encode([0u8; 15])] {
            let e = decode_page_token(bad, f).unwrap_err();
            assert_eq!(e.code(), crate::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(
            parse_mask(" labels , etag", &["labels", "etag"], "m").unwrap(),
            Some(vec!["labels", "etag"])
        );
        assert_eq!(parse_mask(" , ", &["labels"], "m").unwrap(), None);
        assert_eq!(
            parse_mask("state", &["labels", "etag"], "jobs.patch")
                .unwrap_err()
                .to_string(),
            "updateMask path \"state\" is not supported by jobs.patch; supported: labels, etag"
        );
    }
}
