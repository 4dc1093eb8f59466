//! The batch executor: runs a prediction [`Job`] over its inputs with a
//! user's model, and never loses or miscounts a record.
//!
//! # How a run goes
//! 1. **PREPARING**: the job is validated, its `inputPaths` expanded
//!    ([`BatchExecutor::plan`]), and its model resolved and loaded once.
//! 2. **RUNNING**: one thread frames the input files into batches of
//!    `batchSize` instances (and, beyond the API, at most
//!    [`ExecutorConfig::max_batch_bytes`]); up to `maxWorkerCount` worker
//!    threads (capped by [`ExecutorConfig::max_threads`]) decode and predict
//!    them; the calling thread writes the results in input order. At most a
//!    few batches per worker are in flight, so memory stays bounded whatever
//!    the input size.
//! 3. **SUCCEEDED**, **FAILED** or **CANCELLED**, with `predictionOutput`.
//!
//! # Output
//! The inputs (sorted by location) are cut into shards of consecutive files:
//! a shard takes files until it holds at least
//! [`ExecutorConfig::shard_target_bytes`] (64 MiB unless set). Shard `S` of
//! `N` writes, under
//! `outputPath`, `prediction.results-SSSSS-of-NNNNN` (`.csv` for CSV
//! output), `prediction.errors_stats-SSSSS-of-NNNNN`,
//! `prediction.errors-SSSSS-of-NNNNN` and, last, its summary
//! `prediction.summary-SSSSS-of-NNNNN.json` (see the record module for the
//! formats). Each file is committed atomically when its shard is complete.
//! The shards and every byte of the results, errors and errors_stats files
//! depend only on the job, its inputs, the shard size and the model's
//! predictions — not on the number of threads or their timing.
//!
//! # Nothing lost, nothing miscounted
//! - A batch whose `predict` call fails, panics or returns the wrong number
//!   of predictions is split in halves, recursively, until the failing
//!   instances are isolated; the others still get their predictions.
//! - Every damaged record is a located error ([`RecordError`](crate::record::RecordError)).
//! - `instances read = predictionCount + errorCount`, and `predictionCount`
//!   is the number of lines in the committed result files — also when the
//!   job fails or is cancelled, since only complete shards are counted.
//! - Files that cannot be listed, opened or written end the job FAILED with
//!   a message naming the file.
//!
//! # Resume
//! A shard whose summary is in `outputPath` from an earlier run of the same
//! plan — the same input files with the same sizes, modification times and
//! etags, the same formats, model and signature — is not run again; its
//! counts are taken from the summary. Files of the output families that do
//! not belong to the current plan are deleted. [`ResumeMode::Fresh`] runs
//! everything again.
//!
//! # A job never reads or deletes its own output
//! The `prediction.*` names above belong to the job in its `outputPath`: a
//! run writes them and deletes stale ones. So a job whose `inputPaths` can
//! match such a name there (`gs://b/out/prediction.results-*` or
//! `gs://b/**` with `outputPath` `gs://b/out`) is refused — by
//! [`Job::validate`] when the text shows it, and again by
//! [`BatchExecutor::plan`] through the storage's
//! [`object_key`](crate::Storage::object_key), so `gs://b/out/`,
//! `gs://b/./out` and a symbolic link to the directory are the same place
//! — before anything is read, written or deleted; the job ends `FAILED`
//! with a message naming both. Deleting stale outputs never touches an
//! input of the plan.
//!
//! # Where each stage lives
//! - `config.rs`: [`ExecutorConfig`], [`ResumeMode`], [`ShardSelection`];
//! - `plan.rs`: [`BatchExecutor::plan`]: patterns expanded, shards and byte
//!   ranges, the fingerprints a finished shard is recognised by;
//! - `overlap.rs`: the guard against a job reading its own output;
//! - `names.rs`: [`OutputFile`], the output file names;
//! - `shards.rs`: resume, stale output, shard summaries, [`BatchExecutor::merge`];
//! - `run.rs`: one run's threads and the state they share;
//! - `read.rs`: the framing thread; `work.rs`: the workers and batch
//!   isolation; `write.rs`: the writer and the commits;
//! - `progress.rs`: [`RunSummary`], [`Progress`], [`ProgressObserver`];
//! - this file: [`BatchExecutor`] and the course of [`BatchExecutor::run`].

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, InvalidTransition};
use crate::model::{DataFormat, Job, PredictionOutput, State};
use crate::predict::{CancelHandle, ModelResolver, Predictor};
use crate::state::Transition;
use crate::storage::{Storage, StorageError};
use crate::trace;

use self::plan::settings;
use self::shards::Totals;
use self::shared::{ChunkCost, Pool, Run};

mod call;
mod config;
mod names;
pub(crate) mod overlap;
mod plan;
mod prefetch;
mod progress;
mod read;
mod run;
mod shards;
mod shared;
mod work;
mod write;

pub use config::{ExecutorConfig, ResumeMode, SHARD_TARGET_BYTES, ShardSelection};
pub use names::{OutputFile, SUMMARY_FILE_PREFIX};
pub use plan::{Plan, PlannedShard};
pub use progress::{Progress, ProgressObserver, RunSummary, ShardProgress};

/// Runs batch prediction jobs against a [`Storage`] with models from a
/// [`ModelResolver`].
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{
///     BatchExecutor, DataFormat, EchoResolver, InMemoryStorage, Job, ModelVersion,
///     PredictionInput, State, StorageExt, SystemClock, Transition,
/// };
/// use batch_prediction::predict::CancelHandle;
///
/// let storage = InMemoryStorage::new();
/// storage.put("gs://b/in/1.jsonl", "{\"x\": 1}\n{\"x\": 2}\nnot json\n");
/// let mut job = Job::new(
///     "echo_1",
///     PredictionInput::new(DataFormat::Json, ["gs://b/in/*"], "gs://b/out", "local", ModelVersion::uri("echo")),
/// );
/// job.apply(Transition::Queue, &SystemClock)?;
///
/// let executor = BatchExecutor::new(Arc::new(storage.clone()), Arc::new(EchoResolver));
/// let summary = executor.run(&mut job, &CancelHandle::new())?;
/// assert_eq!(summary.state, State::Succeeded);
/// let output = job.prediction_output.as_ref().unwrap();
/// assert_eq!((output.prediction_count(), output.error_count()), (2, 1));
/// assert_eq!(storage.read_bytes("gs://b/out/prediction.results-00000-of-00001")?, b"{\"x\":1}\n{\"x\":2}\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BatchExecutor {
    storage: Arc<dyn Storage>,
    resolver: Arc<dyn ModelResolver>,
    config: ExecutorConfig,
    observer: Option<Arc<dyn ProgressObserver>>,
}

impl fmt::Debug for BatchExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchExecutor")
            .field("storage", &self.storage)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a run stopped before it finished its shards; its `Display` is the
/// job's `errorMessage`.
#[derive(Debug)]
enum Stop {
    /// `cancel` was asked for.
    Cancelled,
    /// The job could not be planned or its output prepared: invalid, an
    /// input pattern that matches nothing, a storage that cannot be listed.
    Invalid(Error),
    /// The model failed to load.
    ModelLoad { model: String, reason: String },
    /// The progress observer panicked.
    ObserverPanicked(String),
    /// One part of a job spread over processes cannot run as asked.
    NotSpreadable(&'static str),
    /// More instances failed than `max_error_count` allows.
    TooManyErrors { failed: u64, limit: u64, read: u64 },
    /// A larger share of the instances failed than `max_error_ratio` allows.
    ErrorRatio {
        failed: u64,
        instances: u64,
        limit: f64,
    },
    /// `merge` found shards no part finished.
    Unfinished { missing: Vec<usize>, shards: usize },
    /// Reading, predicting or writing failed, as the message says.
    Failed(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Cancelled => f.write_str("cancelled"),
            Stop::Invalid(e) => write!(f, "{e}"),
            Stop::ModelLoad { model, reason } => {
                write!(f, "model \"{model}\" failed to load: {reason}")
            }
            Stop::ObserverPanicked(message) => {
                write!(f, "the progress observer panicked: {message}")
            }
            Stop::NotSpreadable(why) => f.write_str(why),
            Stop::TooManyErrors {
                failed,
                limit,
                read,
            } => write!(
                f,
                "too many errors: {failed} instances failed, over the limit of {limit} ({read} instances read)"
            ),
            Stop::ErrorRatio {
                failed,
                instances,
                limit,
            } => write!(
                f,
                "error ratio {:.4} ({failed} of {instances} instances failed) is over the limit of {limit}",
                *failed as f64 / *instances as f64
            ),
            Stop::Unfinished { missing, shards } => {
                let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "cannot merge: {} of {shards} shards are not finished (plan shards {}); run them and merge again",
                    missing.len(),
                    list.join(", ")
                )
            }
            Stop::Failed(message) => f.write_str(message),
        }
    }
}

impl BatchExecutor {
    /// An executor over `storage`, loading models with `resolver`.
    pub fn new(storage: Arc<dyn Storage>, resolver: Arc<dyn ModelResolver>) -> Self {
        BatchExecutor {
            storage,
            resolver,
            config: ExecutorConfig::default(),
            observer: None,
        }
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ExecutorConfig) -> Self {
        self.config = config;
        self
    }

    /// Reports progress to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn ProgressObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// The progress observer, if there is one.
    pub fn observer(&self) -> Option<&Arc<dyn ProgressObserver>> {
        self.observer.as_ref()
    }

    /// Runs a `QUEUED` job (or one a service already moved to `PREPARING`)
    /// to its end: `SUCCEEDED`, `FAILED` (with an
    /// `errorMessage` saying which file and why, or which threshold) or
    /// `CANCELLED` (when `cancel` is used). The job is updated in place —
    /// state, times and `predictionOutput` — and a summary returned.
    ///
    /// # Errors
    /// Only [`InvalidTransition`] when the job is neither `QUEUED` nor
    /// `PREPARING`; every other failure is the job's, recorded in it.
    pub fn run(&self, job: &mut Job, cancel: &CancelHandle) -> Result<RunSummary, Error> {
        let context = trace::span!(
            INFO,
            "job",
            job = job.job_id.as_deref().unwrap_or_default(),
            shard_selection = self.config.shard_selection.map(|s| s.to_string()),
        );
        context.scope(|| self.run_here(job, cancel))
    }

    /// [`run`](Self::run), inside the job's span.
    fn run_here(&self, job: &mut Job, cancel: &CancelHandle) -> Result<RunSummary, Error> {
        let started = Instant::now();
        let queued = match job.state() {
            State::Queued => {
                job.apply(Transition::Prepare, &*self.config.clock)?;
                true
            }
            State::Preparing => false,
            other => {
                return Err(InvalidTransition {
                    from: other,
                    to: State::Preparing,
                }
                .into());
            }
        };
        let mut plan = None;
        let mut totals = Totals::default();
        let stop = self
            .run_prepared(job, queued, cancel, started, &mut plan, &mut totals)
            .err();
        Ok(self.finish(job, plan.as_ref(), stop, totals, started))
    }

    /// The run of a `PREPARING` job, up to its last shard; `Err` when it
    /// stops early. `plan` and `totals` are what it got to.
    fn run_prepared(
        &self,
        job: &mut Job,
        queued: bool,
        cancel: &CancelHandle,
        started: Instant,
        plan: &mut Option<Plan>,
        totals: &mut Totals,
    ) -> Result<(), Stop> {
        if queued {
            self.notify_state(job)?;
        }
        let plan = plan.insert(self.plan_until(job, Some(cancel))?);
        totals.shards = plan.shards.len();
        let predictor = self.load_model(job)?;
        if predictor.calls_mostly_wait() {
            // Workers that mostly wait on a server: as many as the job
            // allows (maxWorkerCount), whatever the cores.
            let allowed = job
                .prediction_input
                .as_ref()
                .map_or(1, |i| i.effective_max_worker_count());
            plan.workers = usize::try_from(allowed)
                .unwrap_or(usize::MAX)
                .clamp(1, 1024);
        }
        let plan: &Plan = plan;
        if cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        job.apply(Transition::Run, &*self.config.clock)
            .map_err(|e| Stop::Invalid(e.into()))?;
        self.notify_state(job)?;
        if self.config.shard_selection.is_some() {
            if plan.output_format == DataFormat::Csv {
                return Err(Stop::NotSpreadable(
                    "CSV output cannot be spread over processes: its header columns come from the job's first prediction, which one part cannot know; use JSON output",
                ));
            }
            if self.config.resume == ResumeMode::Fresh {
                return Err(Stop::NotSpreadable(
                    "a fresh start cannot be one part's: a part deletes only its own shards, so the others' earlier output would be merged with the new; clear outputPath once, then run the parts",
                ));
            }
        }
        let settings = settings(job, plan, &self.config);
        let (resumed, stale) = self
            .prepare_output(plan, &settings)
            .map_err(Stop::Invalid)?;
        // Deleted while the first batches run (see `delete_stale`).
        let stale = self.delete_stale(plan, stale);
        trace::event!(
            info,
            files = plan.inputs.len(),
            bytes = plan.total_bytes,
            shards = plan.shards.len(),
            resumed = resumed.len(),
            workers = plan.workers,
            "job running"
        );
        let signature = job
            .prediction_input
            .as_ref()
            .map(|i| i.effective_signature_name().to_owned())
            .unwrap_or_default();
        // Lines and records as they are (a JSON line as its text), or JSON instances.
        let decoding = match plan.data_format {
            format if !predictor.takes_raw_records(format) => DataFormat::Json,
            DataFormat::Json => DataFormat::Text,
            format => format,
        };
        let run = Run {
            executor: self,
            plan,
            settings,
            decoding,
            predictor,
            signature,
            cancel,
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            started,
            raw_buffers: Pool::default(),
            item_lists: Pool::default(),
            result_buffers: Pool::default(),
            chunk_cost: ChunkCost::default(),
            stale,
        };
        match run.execute(resumed, totals) {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Resolves and loads the job's model once; a failing or panicking
    /// loader fails the job with its message.
    fn load_model(&self, job: &Job) -> Result<Arc<dyn Predictor>, Stop> {
        let model = job
            .prediction_input
            .as_ref()
            .and_then(|i| i.model.clone())
            .expect("validated");
        catch_unwind(AssertUnwindSafe(|| {
            self.resolver
                .resolve(&model, job)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|payload| Err(format!("the loader panicked: {}", panic_message(&*payload))))
        .map_err(|reason| Stop::ModelLoad {
            model: model.to_string(),
            reason,
        })
    }

    /// Tells the observer of a state change; a panicking observer fails the job.
    fn notify_state(&self, job: &Job) -> Result<(), Stop> {
        let Some(observer) = &self.observer else {
            return Ok(());
        };
        catch_unwind(AssertUnwindSafe(|| observer.on_state(job)))
            .map_err(|payload| Stop::ObserverPanicked(panic_message(&*payload)))
    }

    /// Sets `predictionOutput` and the final state.
    fn finish(
        &self,
        job: &mut Job,
        plan: Option<&Plan>,
        stop: Option<Stop>,
        totals: Totals,
        started: Instant,
    ) -> RunSummary {
        let clock = &*self.config.clock;
        let output_path = plan.map(|p| p.output_path.clone()).or_else(|| {
            job.prediction_input
                .as_ref()
                .and_then(|i| i.output_path.clone())
        });
        job.prediction_output = Some(PredictionOutput {
            output_path,
            prediction_count: Some(totals.committed_predictions as i64),
            error_count: Some(totals.committed_errors as i64),
            node_hours: Some(totals.node_seconds / 3600.0),
            ..PredictionOutput::default()
        });
        let stop = stop.or_else(|| self.ratio_exceeded(&totals));
        // Each move below is legal from RUNNING or PREPARING; a refusal would be a bug here.
        let moved = match stop {
            None => job.apply(Transition::Succeed, clock),
            Some(Stop::Cancelled) => job
                .apply(Transition::RequestCancel, clock)
                .and_then(|()| job.apply(Transition::cancel(), clock)),
            Some(failure) => job.apply(Transition::Fail(failure.to_string()), clock),
        };
        debug_assert!(moved.is_ok(), "{moved:?}");
        trace::event!(
            info,
            state = %job.state(),
            predictions = totals.committed_predictions,
            errors = totals.committed_errors,
            records = totals.records_read,
            retries = totals.retries,
            deadline_hits = totals.deadline_hits,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error_message = job.error_message.as_deref(),
            "job ended"
        );
        RunSummary {
            state: job.state(),
            prediction_count: totals.committed_predictions,
            error_count: totals.committed_errors,
            records_read: totals.records_read,
            shards: totals.shards,
            shards_resumed: totals.shards_resumed,
            node_seconds: totals.node_seconds,
            error_stats: totals.committed_stats,
            elapsed: started.elapsed(),
            retries: totals.retries,
            deadline_hits: totals.deadline_hits,
        }
    }

    fn ratio_exceeded(&self, totals: &Totals) -> Option<Stop> {
        let limit = self.config.max_error_ratio?;
        let instances = totals.committed_predictions + totals.committed_errors;
        let ratio = if instances == 0 {
            0.0
        } else {
            totals.committed_errors as f64 / instances as f64
        };
        (ratio > limit).then_some(Stop::ErrorRatio {
            failed: totals.committed_errors,
            instances,
            limit,
        })
    }
}

fn storage_error(e: StorageError) -> Error {
    e.into()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned())
}
