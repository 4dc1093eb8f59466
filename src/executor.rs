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
//! - Every damaged record is a located error ([`RecordError`]).
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

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{Value, json};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, InvalidTransition, ValidationError, Violation};
use crate::model::{DataFormat, Job, PredictionOutput, State};
use crate::predict::{CancelHandle, ModelResolver, PredictContext, Predictor};
use crate::record::{
    CSV_HEADER_FILE, CsvResultWriter, CsvRowError, CsvWriteError, ERRORS_FILE_PREFIX,
    ERRORS_STATS_FILE_PREFIX, ErrorRecordWriter, ErrorStats, Instance, Position,
    RESULTS_FILE_PREFIX, RawReader, ReadOptions, RecordError, RecordErrorKind, csv_header_bytes,
    decode, masked_crc32c, shard_file_name,
};
use crate::state::Transition;
use crate::storage::{
    ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind, StorageExt, join_location,
};

/// The default of [`ExecutorConfig::shard_target_bytes`]: 64 MiB.
pub const SHARD_TARGET_BYTES: u64 = 64 << 20;

/// The base name of per-shard summaries.
pub const SUMMARY_FILE_PREFIX: &str = "prediction.summary";

/// How long a blocked thread waits before it checks for a stop.
const POLL: Duration = Duration::from_millis(20);

/// The framing thread hands workers chunks of whole batches holding about
/// this many instances, so that threads meet once per chunk, not per batch.
const CHUNK_INSTANCES: usize = 1024;

/// … and a chunk ends at the first batch boundary past this many bytes.
const CHUNK_BYTES: usize = 1 << 20;

/// A pool of buffers handed between threads, so that big buffers are
/// reused instead of being allocated in one thread and freed in another.
struct Pool<T>(Mutex<Vec<Vec<T>>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(Mutex::new(Vec::new()))
    }
}

impl<T> Pool<T> {
    fn take(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<T>) {
        buf.clear();
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 64 {
            pool.push(buf);
        }
    }
}

/// Whether a run reuses the shards an earlier run of the same plan finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResumeMode {
    /// Skip shards whose summary matches the plan; run the rest.
    #[default]
    Auto,
    /// Delete earlier output and run every shard.
    Fresh,
}

/// Settings of a [`BatchExecutor`], beyond what the job itself says.
#[derive(Clone)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// The most worker threads, whatever the job's `maxWorkerCount`; 0 means
    /// the machine's available parallelism.
    pub max_threads: usize,
    /// Beyond the API: a batch also ends once its records hold this many bytes.
    pub max_batch_bytes: Option<usize>,
    /// Record reading settings (the record size limit).
    pub read_options: ReadOptions,
    /// Fail the job once more instances than this have failed.
    pub max_error_count: Option<u64>,
    /// Fail the job when, at the end, more than this fraction of instances failed.
    pub max_error_ratio: Option<f64>,
    /// Resume finished shards, or start afresh.
    pub resume: ResumeMode,
    /// A shard takes consecutive input files until it holds at least this
    /// many bytes. Keep it fixed for a job: output names depend on it.
    pub shard_target_bytes: u64,
    /// A JSON or TEXT file larger than this is split into byte ranges of at
    /// most this size (and at most 10,000 ranges), a shard each (a line
    /// belongs to the range it starts in), so that one large file spreads
    /// over workers' shards and processes. Keep it fixed for a job: output
    /// names depend on it.
    pub split_bytes: u64,
    /// Where state changes take their times from.
    pub clock: Arc<dyn Clock>,
    /// Run only some of the plan's shards (one of several processes).
    pub shard_selection: Option<ShardSelection>,
}

/// Which of a plan's shards one process runs when a job is spread over
/// `count` processes: shard `k` belongs to process `k % count`. Every
/// process plans the same shards (the plan depends only on the job and its
/// inputs), writes exactly the files of its own, and
/// [`BatchExecutor::merge`] then combines their summaries.
///
/// # Example
/// ```
/// use batch_prediction::ShardSelection;
///
/// let part: ShardSelection = "1/3".parse()?;
/// assert_eq!((part.index(), part.count()), (1, 3));
/// assert!(part.contains(4) && !part.contains(3));
/// assert!("3/3".parse::<ShardSelection>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSelection {
    index: usize,
    count: usize,
}

impl ShardSelection {
    /// Part `index` (from 0) of `count`.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, Error> {
        if index >= count {
            return Err(Error::invalid_argument(
                "shard",
                format!("shard {index}/{count}: expected I/N with 0 <= I < N"),
            ));
        }
        Ok(ShardSelection { index, count })
    }

    /// This part's number, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of parts.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether plan shard `shard` is this part's.
    pub fn contains(&self, shard: usize) -> bool {
        shard % self.count == self.index
    }
}

impl std::str::FromStr for ShardSelection {
    type Err = Error;

    /// Reads `I/N`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid_argument(
                "shard",
                format!("invalid shard {s:?}: expected I/N with 0 <= I < N"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        ShardSelection::new(i, n).map_err(|_| bad())
    }
}

impl fmt::Display for ShardSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl fmt::Debug for ExecutorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorConfig")
            .field("max_threads", &self.max_threads)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("read_options", &self.read_options)
            .field("max_error_count", &self.max_error_count)
            .field("max_error_ratio", &self.max_error_ratio)
            .field("resume", &self.resume)
            .field("shard_target_bytes", &self.shard_target_bytes)
            .field("split_bytes", &self.split_bytes)
            .field("shard_selection", &self.shard_selection)
            .finish_non_exhaustive()
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_threads: 0,
            max_batch_bytes: None,
            read_options: ReadOptions::default(),
            max_error_count: None,
            max_error_ratio: None,
            resume: ResumeMode::Auto,
            shard_target_bytes: SHARD_TARGET_BYTES,
            split_bytes: SHARD_TARGET_BYTES,
            clock: Arc::new(SystemClock),
            shard_selection: None,
        }
    }
}

impl ExecutorConfig {
    /// Sets [`max_threads`](Self::max_threads).
    #[must_use]
    pub fn with_max_threads(mut self, n: usize) -> Self {
        self.max_threads = n;
        self
    }

    /// Sets [`max_batch_bytes`](Self::max_batch_bytes).
    #[must_use]
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = Some(bytes);
        self
    }

    /// Sets [`read_options`](Self::read_options).
    #[must_use]
    pub fn with_read_options(mut self, options: ReadOptions) -> Self {
        self.read_options = options;
        self
    }

    /// Sets [`max_error_count`](Self::max_error_count).
    #[must_use]
    pub fn with_max_error_count(mut self, n: u64) -> Self {
        self.max_error_count = Some(n);
        self
    }

    /// Sets [`max_error_ratio`](Self::max_error_ratio).
    #[must_use]
    pub fn with_max_error_ratio(mut self, ratio: f64) -> Self {
        self.max_error_ratio = Some(ratio);
        self
    }

    /// Sets [`resume`](Self::resume).
    #[must_use]
    pub fn with_resume(mut self, mode: ResumeMode) -> Self {
        self.resume = mode;
        self
    }

    /// Sets [`shard_target_bytes`](Self::shard_target_bytes).
    #[must_use]
    pub fn with_shard_target_bytes(mut self, bytes: u64) -> Self {
        self.shard_target_bytes = bytes;
        self
    }

    /// Sets [`clock`](Self::clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`split_bytes`](Self::split_bytes) (at least 1).
    #[must_use]
    pub fn with_split_bytes(mut self, bytes: u64) -> Self {
        self.split_bytes = bytes.max(1);
        self
    }

    /// Runs only the plan shards of `selection`; see [`ShardSelection`].
    #[must_use]
    pub fn with_shard_selection(mut self, selection: ShardSelection) -> Self {
        self.shard_selection = Some(selection);
        self
    }

    /// Whether this run does plan shard `shard`.
    fn selects(&self, shard: usize) -> bool {
        self.shard_selection.is_none_or(|s| s.contains(shard))
    }

    fn threads(&self) -> usize {
        match self.max_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

/// One shard of a [`Plan`]: consecutive input files and the files it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedShard {
    /// The shard's number, from 0.
    pub index: usize,
    /// Its input files, as indexes into [`Plan::inputs`].
    pub inputs: Range<usize>,
    /// For one byte range of a split file (then `inputs` holds that one
    /// file): the bytes whose lines the shard reads.
    pub byte_range: Option<Range<u64>>,
    /// The size of its input files.
    pub bytes: u64,
    /// Its results file.
    pub results_file: String,
    /// Its error statistics file.
    pub errors_stats_file: String,
    /// Its per-instance error file.
    pub errors_file: String,
    /// Its summary, written last.
    pub summary_file: String,
}

/// What a job would do: its inputs, shards and output files
/// ([`BatchExecutor::plan`], a dry run).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The job's `outputPath`.
    pub output_path: String,
    /// The input format.
    pub data_format: DataFormat,
    /// The output format (JSON or CSV).
    pub output_format: DataFormat,
    /// The matched input files, sorted by location, with their sizes and versions.
    pub inputs: Vec<ObjectMeta>,
    /// The shards.
    pub shards: Vec<PlannedShard>,
    /// The size of all inputs.
    pub total_bytes: u64,
    /// Instances per batch.
    pub batch_size: usize,
    /// Worker threads.
    pub workers: usize,
}

/// What [`BatchExecutor::run`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunSummary {
    /// The job's final state.
    pub state: State,
    /// Predictions in the committed result files.
    pub prediction_count: u64,
    /// Failed instances in the committed shards.
    pub error_count: u64,
    /// Records read, committed or not, with those of resumed shards.
    pub records_read: u64,
    /// Shards in the plan (0 when planning failed).
    pub shards: usize,
    /// Shards taken from an earlier run.
    pub shards_resumed: usize,
    /// Worker busy time, in seconds (for `nodeHours`).
    pub node_seconds: f64,
    /// Failed instances by message, in the committed shards.
    pub error_stats: ErrorStats,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// The progress of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShardProgress {
    /// Records read (instances and damaged records).
    pub records: u64,
    /// Predictions made.
    pub predictions: u64,
    /// Failed instances.
    pub errors: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// The size of the shard's inputs.
    pub total_bytes: u64,
    /// Whether the shard is committed (or was resumed).
    pub done: bool,
}

/// A snapshot of a running job, for a progress bar or a service's status.
#[derive(Debug)]
#[non_exhaustive]
pub struct Progress<'a> {
    /// Records read so far (instances and damaged records).
    pub records_read: u64,
    /// Predictions made so far.
    pub predictions: u64,
    /// Instances failed so far.
    pub errors: u64,
    /// Input bytes read so far (uncompressed for gzip inputs).
    pub bytes_read: u64,
    /// The size of all inputs (compressed for gzip inputs).
    pub total_bytes: u64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Shards committed or resumed.
    pub shards_done: usize,
    /// Every shard's progress.
    pub shards: &'a [ShardProgress],
}

/// Receives progress from the writing thread, after every batch and shard.
///
/// Closures `Fn(&Progress)` are observers. Keep them quick: they run on the
/// thread that writes the results.
pub trait ProgressObserver: Send + Sync {
    /// Called with the current progress.
    fn on_progress(&self, progress: &Progress<'_>);

    /// Called on the calling thread after the job moves to `PREPARING` and
    /// to `RUNNING`, so a service can record the move; the final state is
    /// in the job [`BatchExecutor::run`] returns. Does nothing by default.
    fn on_state(&self, job: &Job) {
        let _ = job;
    }
}

impl<F: Fn(&Progress<'_>) + Send + Sync> ProgressObserver for F {
    fn on_progress(&self, progress: &Progress<'_>) {
        self(progress)
    }
}

/// Runs batch prediction jobs against a [`Storage`] with models from a
/// [`ModelResolver`].
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{
///     BatchExecutor, CancelHandle, DataFormat, EchoResolver, InMemoryStorage, Job, ModelVersion,
///     PredictionInput, State, StorageExt, SystemClock, Transition,
/// };
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

/// The most byte ranges one file is split into.
const MAX_RANGES_PER_FILE: u64 = 10_000;

/// Why a run stopped early.
enum Stop {
    Failed(String),
    Cancelled,
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

    /// A dry run: validates the job, expands its input patterns, and tells
    /// which files, shards and output files it would have, without loading
    /// the model or writing anything.
    ///
    /// # Errors
    /// The job's [`ValidationError`](crate::ValidationError) (also for
    /// input patterns that can match the job's own output files, compared
    /// through the storage), or the storage's error for a pattern that
    /// matches nothing or cannot be listed.
    pub fn plan(&self, job: &Job) -> Result<Plan, Error> {
        job.validate()?;
        let input = job.prediction_input.as_ref().expect("validated");
        let given_output_path = input.output_path.as_deref().expect("validated");
        let output_path = given_output_path.trim_end_matches('/').to_owned();
        self.refuse_own_output(&input.input_paths, given_output_path, None)?;
        let inputs: Vec<ObjectMeta> = self
            .storage
            .expand(&input.input_paths)
            .map_err(storage_error)?;
        self.refuse_own_output(&input.input_paths, given_output_path, Some(&inputs))?;
        let output_format = input.effective_output_data_format();
        let data_format = input.data_format.expect("validated");
        let splittable = matches!(data_format, DataFormat::Json | DataFormat::Text);
        // (files, bytes, byte range of a split file)
        let mut ranges: Vec<(Range<usize>, u64, Option<Range<u64>>)> = Vec::new();
        for (i, meta) in inputs.iter().enumerate() {
            let split = self.config.split_bytes.max(1);
            if splittable && meta.size > split {
                // At most MAX_RANGES_PER_FILE ranges, whatever split_bytes says.
                let parts = meta.size.div_ceil(split).min(MAX_RANGES_PER_FILE);
                let cut = |k: u64| {
                    // k * size / parts without overflow
                    (u128::from(k) * u128::from(meta.size) / u128::from(parts)) as u64
                };
                for k in 0..parts {
                    let (start, end) = (cut(k), cut(k + 1));
                    ranges.push((i..i + 1, end - start, Some(start..end)));
                }
                continue;
            }
            match ranges.last_mut() {
                Some((range, bytes, None)) if *bytes < self.config.shard_target_bytes => {
                    range.end = i + 1;
                    *bytes += meta.size;
                }
                _ => ranges.push((i..i + 1, meta.size, None)),
            }
        }
        let count = ranges.len();
        let shards = ranges
            .into_iter()
            .enumerate()
            .map(|(index, (inputs, bytes, byte_range))| {
                let at = |prefix: &str, suffix: &str| {
                    join_location(
                        &output_path,
                        &format!("{}{suffix}", shard_file_name(prefix, index, count)),
                    )
                };
                PlannedShard {
                    index,
                    inputs,
                    byte_range,
                    bytes,
                    results_file: at(
                        RESULTS_FILE_PREFIX,
                        if output_format == DataFormat::Csv {
                            ".csv"
                        } else {
                            ""
                        },
                    ),
                    errors_stats_file: at(ERRORS_STATS_FILE_PREFIX, ""),
                    errors_file: at(ERRORS_FILE_PREFIX, ""),
                    summary_file: at(SUMMARY_FILE_PREFIX, ".json"),
                }
            })
            .collect();
        let batch_size = usize::try_from(input.effective_batch_size()).unwrap_or(usize::MAX);
        let workers = usize::try_from(input.effective_max_worker_count())
            .unwrap_or(usize::MAX)
            .min(self.config.threads())
            .max(1);
        Ok(Plan {
            output_path,
            data_format: input.data_format.expect("validated"),
            output_format,
            total_bytes: inputs.iter().map(|m| m.size).sum(),
            inputs,
            shards,
            batch_size,
            workers,
        })
    }

    /// Refuses a job whose input patterns can match (or, given the objects
    /// they matched, did match) a file the job writes into its output
    /// directory, with the locations compared through the storage, so a
    /// run never reads or deletes its own output, however either is spelled.
    fn refuse_own_output(
        &self,
        patterns: &[String],
        output_path: &str,
        matched: Option<&[ObjectMeta]>,
    ) -> Result<(), Error> {
        let storage: &dyn Storage = &*self.storage;
        let found = match matched {
            None => {
                let samples = sample_output_names();
                let keys = crate::overlap::Keys::Storage(storage);
                patterns.iter().enumerate().find_map(|(i, pattern)| {
                    crate::overlap::pattern_reaches_output(
                        pattern,
                        output_path,
                        &samples,
                        is_output_file_name,
                        &keys,
                    )
                    .map(|example| (i, example))
                })
            }
            Some(objects) => objects
                .iter()
                .find(|m| {
                    crate::overlap::is_own_output(
                        storage,
                        &m.location,
                        output_path,
                        is_output_file_name,
                    )
                })
                .map(|m| {
                    let i = patterns
                        .iter()
                        .position(|p| {
                            crate::storage::glob::Pattern::new(p)
                                .is_ok_and(|g| g.matches(&m.location))
                        })
                        .unwrap_or(0);
                    (i, m.location.clone())
                }),
        };
        match found {
            None => Ok(()),
            Some((i, example)) => Err(ValidationError::from_violations(vec![Violation {
                field: "predictionInput.outputPath".to_owned(),
                description: crate::validate::overlap_message(
                    output_path,
                    i,
                    &patterns[i],
                    &example,
                ),
            }])
            .expect("one violation")
            .into()),
        }
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
        let started = Instant::now();
        let clock = &*self.config.clock;
        match job.state() {
            State::Queued => {
                job.apply(Transition::Prepare, clock)?;
                if let Err(stop) = self.notify_state(job) {
                    return Ok(self.finish(job, None, Some(stop), Totals::default(), started));
                }
            }
            State::Preparing => {}
            other => {
                return Err(InvalidTransition {
                    from: other,
                    to: State::Preparing,
                }
                .into());
            }
        }
        let mut totals = Totals::default();
        let plan = match self.plan(job) {
            Ok(plan) => plan,
            Err(e) => {
                return Ok(self.finish(
                    job,
                    None,
                    Some(Stop::Failed(e.to_string())),
                    totals,
                    started,
                ));
            }
        };
        totals.shards = plan.shards.len();
        let model = job
            .prediction_input
            .as_ref()
            .and_then(|i| i.model.clone())
            .expect("validated");
        let resolved = catch_unwind(AssertUnwindSafe(|| {
            self.resolver
                .resolve(&model, job)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|payload| {
            Err(format!("the loader panicked: {}", panic_message(&*payload)))
        });
        let predictor = match resolved {
            Ok(p) => p,
            Err(e) => {
                let stop = Stop::Failed(format!("model \"{model}\" failed to load: {e}"));
                return Ok(self.finish(job, Some(&plan), Some(stop), totals, started));
            }
        };
        if cancel.is_cancelled() {
            return Ok(self.finish(job, Some(&plan), Some(Stop::Cancelled), totals, started));
        }
        job.apply(Transition::Run, clock)?;
        if let Err(stop) = self.notify_state(job) {
            return Ok(self.finish(job, Some(&plan), Some(stop), totals, started));
        }
        if self.config.shard_selection.is_some() {
            let refused = if plan.output_format == DataFormat::Csv {
                Some(
                    "CSV output cannot be spread over processes: its header columns come from the job's first prediction, which one part cannot know; use JSON output",
                )
            } else if self.config.resume == ResumeMode::Fresh {
                Some(
                    "a fresh start cannot be one part's: a part deletes only its own shards, so the others' earlier output would be merged with the new; clear outputPath once, then run the parts",
                )
            } else {
                None
            };
            if let Some(why) = refused {
                let stop = Stop::Failed(why.to_owned());
                return Ok(self.finish(job, Some(&plan), Some(stop), totals, started));
            }
        }
        let settings = settings(job, &plan, &self.config);
        let resumed = match self.prepare_output(&plan, &settings) {
            Ok(resumed) => resumed,
            Err(e) => {
                let stop = Stop::Failed(e.to_string());
                return Ok(self.finish(job, Some(&plan), Some(stop), totals, started));
            }
        };
        let signature = job
            .prediction_input
            .as_ref()
            .map(|i| i.effective_signature_name().to_owned())
            .unwrap_or_default();
        let run = Run {
            executor: self,
            plan: &plan,
            settings,
            predictor,
            signature,
            cancel,
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            started,
            raw_buffers: Pool::default(),
            item_lists: Pool::default(),
            result_buffers: Pool::default(),
        };
        let stop = run.execute(resumed, &mut totals);
        Ok(self.finish(job, Some(&plan), stop, totals, started))
    }

    /// Tells the observer of a state change; a panicking observer fails the job.
    fn notify_state(&self, job: &Job) -> Result<(), Stop> {
        let Some(observer) = &self.observer else {
            return Ok(());
        };
        catch_unwind(AssertUnwindSafe(|| observer.on_state(job))).map_err(|payload| {
            Stop::Failed(format!(
                "the progress observer panicked: {}",
                panic_message(&*payload)
            ))
        })
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
            Some(Stop::Failed(message)) => job.apply(Transition::Fail(message), clock),
            Some(Stop::Cancelled) => job
                .apply(Transition::RequestCancel, clock)
                .and_then(|()| job.apply(Transition::cancel(), clock)),
        };
        debug_assert!(moved.is_ok(), "{moved:?}");
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
        (ratio > limit).then(|| {
            Stop::Failed(format!(
                "error ratio {ratio:.4} ({} of {instances} instances failed) is over the limit of {limit}",
                totals.committed_errors
            ))
        })
    }

    /// Reads the summaries an earlier run left, decides which shards are
    /// done, and deletes output files that do not belong to this plan.
    fn prepare_output(
        &self,
        plan: &Plan,
        settings: &Value,
    ) -> Result<BTreeMap<usize, ShardSummary>, Error> {
        let prefix = join_location(&plan.output_path, "prediction.");
        let existing = self.storage.list(&prefix).map_err(storage_error)?;
        let ours: Vec<&ObjectMeta> = existing
            .iter()
            .filter(|m| {
                m.location
                    .strip_prefix(&plan.output_path)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(is_output_file_name)
            })
            .collect();
        let resumed = if self.config.resume == ResumeMode::Auto {
            self.finished_shards(plan, settings, &ours, |i| self.config.selects(i))?
        } else {
            BTreeMap::new()
        };
        // Kept: the shards taken as they are, and those of other processes.
        let mut keep: Vec<&str> = Vec::new();
        for shard in plan
            .shards
            .iter()
            .filter(|s| resumed.contains_key(&s.index) || !self.config.selects(s.index))
        {
            keep.extend([
                shard.results_file.as_str(),
                shard.errors_file.as_str(),
                shard.errors_stats_file.as_str(),
                shard.summary_file.as_str(),
            ]);
        }
        let header = join_location(&plan.output_path, CSV_HEADER_FILE);
        if plan.output_format == DataFormat::Csv
            && (!resumed.is_empty() || self.config.shard_selection.is_some())
        {
            keep.push(&header);
        }
        // The guard in `plan` refuses jobs whose inputs are their outputs;
        // this makes sure no deletion ever reaches an input all the same.
        let inputs: std::collections::HashSet<String> = plan
            .inputs
            .iter()
            .map(|m| self.storage.object_key(&m.location))
            .collect();
        for meta in ours {
            if inputs.contains(&self.storage.object_key(&meta.location)) {
                return Err(StorageError::new(
                    StorageErrorKind::InvalidLocation,
                    &meta.location,
                    "an input of this job lies among its output files; it is neither deleted nor overwritten",
                )
                .into());
            }
            if !keep.contains(&meta.location.as_str()) {
                match self.storage.delete(&meta.location) {
                    // Another part of the job deleted it first.
                    Err(e) if e.kind() == StorageErrorKind::NotFound => {}
                    other => other.map_err(storage_error)?,
                }
            }
        }
        Ok(resumed)
    }
}

impl BatchExecutor {
    /// The summaries of the shards among `wanted` that an earlier run
    /// finished: a summary of this plan, and its files all there as committed.
    fn finished_shards(
        &self,
        plan: &Plan,
        settings: &Value,
        ours: &[&ObjectMeta],
        wanted: impl Fn(usize) -> bool,
    ) -> Result<BTreeMap<usize, ShardSummary>, Error> {
        let mut finished = BTreeMap::new();
        for shard in plan.shards.iter().filter(|s| wanted(s.index)) {
            if !ours.iter().any(|m| m.location == shard.summary_file) {
                continue;
            }
            let bytes = self
                .storage
                .read_bytes(&shard.summary_file)
                .map_err(storage_error)?;
            let Some(summary) = ShardSummary::parse(&bytes)
                .filter(|s| s.matches(shard_identity(plan, shard, settings)))
            else {
                continue;
            };
            let files = [
                &shard.results_file,
                &shard.errors_file,
                &shard.errors_stats_file,
            ];
            let intact = files
                .iter()
                .zip(summary.sizes)
                .all(|(file, size)| ours.iter().any(|m| &&m.location == file && m.size == size));
            if intact {
                finished.insert(shard.index, summary);
            }
        }
        Ok(finished)
    }

    /// Combines what the processes of a job spread with
    /// [`ShardSelection`]s wrote into the job's end: a `QUEUED` job becomes
    /// `SUCCEEDED` with `predictionOutput` summed over every shard (or
    /// `FAILED` if the thresholds say so), without running anything. If a
    /// shard is not finished (no summary of this plan, or its files not as
    /// committed), the job becomes `FAILED` naming the shards to run again.
    /// Merging again after that, or twice, gives the same result.
    ///
    /// # Errors
    /// Only [`InvalidTransition`] when the job is not `QUEUED`.
    pub fn merge(&self, job: &mut Job) -> Result<RunSummary, Error> {
        let started = Instant::now();
        if job.state() != State::Queued {
            return Err(InvalidTransition {
                from: job.state(),
                to: State::Preparing,
            }
            .into());
        }
        let clock = &*self.config.clock;
        job.apply(Transition::Prepare, clock)?;
        let mut totals = Totals::default();
        let plan = match self.plan(job) {
            Ok(plan) => plan,
            Err(e) => {
                let stop = Stop::Failed(e.to_string());
                return Ok(self.finish(job, None, Some(stop), totals, started));
            }
        };
        totals.shards = plan.shards.len();
        job.apply(Transition::Run, clock)?;
        let settings = settings(job, &plan, &self.config);
        let prefix = join_location(&plan.output_path, "prediction.");
        let finished = match self.storage.list(&prefix) {
            Ok(existing) => {
                let ours: Vec<&ObjectMeta> = existing.iter().collect();
                self.finished_shards(&plan, &settings, &ours, |_| true)
            }
            Err(e) => Err(storage_error(e)),
        };
        let finished = match finished {
            Ok(finished) => finished,
            Err(e) => {
                let stop = Stop::Failed(e.to_string());
                return Ok(self.finish(job, Some(&plan), Some(stop), totals, started));
            }
        };
        let missing: Vec<String> = (0..plan.shards.len())
            .filter(|i| !finished.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        for summary in finished.values() {
            totals.add_finished(summary);
        }
        let stop = (!missing.is_empty()).then(|| {
            Stop::Failed(format!(
                "cannot merge: {} of {} shards are not finished (plan shards {}); run them and merge again",
                missing.len(),
                plan.shards.len(),
                missing.join(", ")
            ))
        });
        let stop = stop.or_else(|| {
            self.config
                .max_error_count
                .filter(|&limit| totals.committed_errors > limit)
                .map(|limit| {
                    Stop::Failed(format!(
                        "{} instances failed, over the limit of {limit}",
                        totals.committed_errors
                    ))
                })
        });
        Ok(self.finish(job, Some(&plan), stop, totals, started))
    }
}

/// One name of each kind of file a run writes into `outputPath`, for the
/// check that no input pattern can match them.
pub(crate) fn sample_output_names() -> Vec<String> {
    let shard = |prefix: &str, suffix: &str| format!("{}{suffix}", shard_file_name(prefix, 0, 1));
    vec![
        shard(RESULTS_FILE_PREFIX, ""),
        shard(RESULTS_FILE_PREFIX, ".csv"),
        shard(ERRORS_STATS_FILE_PREFIX, ""),
        shard(ERRORS_FILE_PREFIX, ""),
        shard(SUMMARY_FILE_PREFIX, ".json"),
        CSV_HEADER_FILE.to_owned(),
    ]
}

/// Whether `name` is one of the files a run writes into `outputPath`.
pub(crate) fn is_output_file_name(name: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^prediction\.(?:(?:results|errors_stats|errors)-\d{5,}-of-\d{5,}|results-\d{5,}-of-\d{5,}\.csv|summary-\d{5,}-of-\d{5,}\.json|results_header\.csv)$",
        )
        .expect("valid regex")
    })
    .is_match(name)
}

fn storage_error(e: StorageError) -> Error {
    e.into()
}

/// What a shard's output depends on besides its inputs.
fn settings(job: &Job, plan: &Plan, config: &ExecutorConfig) -> Value {
    let input = job.prediction_input.as_ref().expect("validated");
    json!({
        "dataFormat": plan.data_format.as_str(),
        "outputDataFormat": plan.output_format.as_str(),
        "model": input.model.as_ref().map(ToString::to_string),
        "signatureName": input.effective_signature_name(),
        "maxRecordBytes": config.read_options.max_record_bytes,
        "shardCount": plan.shards.len(),
    })
}

/// The part of a summary that must match for a shard to be resumed.
fn shard_identity(plan: &Plan, shard: &PlannedShard, settings: &Value) -> Value {
    let inputs: Vec<Value> = plan.inputs[shard.inputs.clone()]
        .iter()
        .map(|m| {
            json!({
                "location": m.location,
                "size": m.size,
                "lastModified": m.last_modified.map(|t| crate::model::wire::format_timestamp(&t)),
                "etag": m.etag,
            })
        })
        .collect();
    let mut identity = json!({"shard": shard.index, "inputs": inputs, "settings": settings});
    if let Some(range) = &shard.byte_range {
        identity["byteRange"] = json!([range.start, range.end]);
    }
    identity
}

/// A committed shard's record of what it read and wrote.
#[derive(Debug, Clone)]
struct ShardSummary {
    identity: Value,
    predictions: u64,
    errors: u64,
    records: u64,
    bytes: u64,
    node_seconds: f64,
    stats: ErrorStats,
    csv_header: Option<Vec<String>>,
    /// The sizes of the shard's results, errors and errors_stats files, as committed.
    sizes: [u64; 3],
}

impl ShardSummary {
    fn to_bytes(&self) -> Vec<u8> {
        let stats: Vec<Value> = self.stats.counts().map(|(m, c)| json!([m, c])).collect();
        let mut value = self.identity.clone();
        let object = value.as_object_mut().expect("identity is an object");
        object.insert("predictionCount".into(), self.predictions.into());
        object.insert("errorCount".into(), self.errors.into());
        object.insert("recordsRead".into(), self.records.into());
        object.insert("bytesRead".into(), self.bytes.into());
        object.insert("nodeSeconds".into(), self.node_seconds.into());
        object.insert("errorStats".into(), stats.into());
        object.insert("csvHeader".into(), json!(self.csv_header));
        object.insert(
            "fileSizes".into(),
            json!({"results": self.sizes[0], "errors": self.sizes[1], "errorsStats": self.sizes[2]}),
        );
        let mut out = serde_json::to_vec_pretty(&value).expect("JSON");
        out.push(b'\n');
        out
    }

    fn parse(bytes: &[u8]) -> Option<ShardSummary> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let mut stats = ErrorStats::default();
        for entry in value.get("errorStats")?.as_array()? {
            stats.add(entry.get(0)?.as_str()?, entry.get(1)?.as_u64()?);
        }
        let csv_header = match value.get("csvHeader") {
            Some(Value::Array(names)) => Some(
                names
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => None,
        };
        let mut identity = json!({
            "shard": value.get("shard")?,
            "inputs": value.get("inputs")?,
            "settings": value.get("settings")?,
        });
        if let Some(range) = value.get("byteRange") {
            identity["byteRange"] = range.clone();
        }
        Some(ShardSummary {
            identity,
            predictions: value.get("predictionCount")?.as_u64()?,
            errors: value.get("errorCount")?.as_u64()?,
            records: value.get("recordsRead")?.as_u64()?,
            bytes: value.get("bytesRead")?.as_u64()?,
            node_seconds: value.get("nodeSeconds")?.as_f64()?,
            stats,
            csv_header,
            sizes: {
                let sizes = value.get("fileSizes")?;
                [
                    sizes.get("results")?.as_u64()?,
                    sizes.get("errors")?.as_u64()?,
                    sizes.get("errorsStats")?.as_u64()?,
                ]
            },
        })
    }

    fn matches(&self, identity: Value) -> bool {
        self.identity == identity
    }
}

#[derive(Default)]
struct Totals {
    shards: usize,
    shards_resumed: usize,
    committed_predictions: u64,
    committed_errors: u64,
    committed_stats: ErrorStats,
    records_read: u64,
    node_seconds: f64,
}

impl Totals {
    /// Counts a shard an earlier run (or another process) finished.
    fn add_finished(&mut self, summary: &ShardSummary) {
        self.shards_resumed += 1;
        self.committed_predictions += summary.predictions;
        self.committed_errors += summary.errors;
        self.committed_stats.merge(&summary.stats);
        self.node_seconds += summary.node_seconds;
        self.records_read += summary.records;
    }
}

/// Whole batches of raw records from one file, framed but not decoded.
struct RawBatch {
    seq: u64,
    source: Arc<str>,
    data: Vec<u8>,
    items: Vec<RawItem>,
    instances: usize,
    bytes: u64,
}

enum RawItem {
    Record {
        position: Position,
        range: Range<usize>,
        /// The stored data checksum, for the worker to check (TFRecords).
        crc: Option<u32>,
    },
    Damaged(Box<RecordError>),
}

/// What a worker made of a batch.
#[derive(Default)]
struct BatchOutput {
    /// JSON output: the result lines, ready to write.
    results: Vec<u8>,
    /// CSV output: (prediction, raw record, source, position), formatted by the writer.
    csv: Vec<(Value, Vec<u8>, Arc<str>, Position)>,
    /// Error file lines, ready to write.
    error_lines: Vec<u8>,
    /// The message of each failed instance, for errors_stats.
    error_messages: Vec<String>,
    predictions: u64,
    records: u64,
    bytes: u64,
    busy: Duration,
}

/// What reaches the writing thread, in input order by `seq`.
enum Event {
    ShardStart { shard: usize },
    Batch(BatchOutput),
    ShardEnd { shard: usize },
    Fatal(String),
}

/// One run's shared state.
struct Run<'a> {
    executor: &'a BatchExecutor,
    plan: &'a Plan,
    settings: Value,
    predictor: Arc<dyn Predictor>,
    signature: String,
    cancel: &'a CancelHandle,
    /// Set when the run must stop early (cancel, failure).
    stop: AtomicBool,
    /// Why a thread gave up, when it could not say so in order (a panic).
    failure: Mutex<Option<String>>,
    started: Instant,
    /// Buffers of raw records (framing thread → workers → back).
    raw_buffers: Pool<u8>,
    /// The lists of a chunk's records, likewise.
    item_lists: Pool<RawItem>,
    /// Buffers of result lines (workers → writer → back).
    result_buffers: Pool<u8>,
}

impl Run<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_cancelled()
    }

    /// Records why the run must fail and stops it (the first reason wins).
    fn fail(&self, message: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(message);
        self.stop.store(true, Ordering::Relaxed);
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn execute(&self, resumed: BTreeMap<usize, ShardSummary>, totals: &mut Totals) -> Option<Stop> {
        let window = self.plan.workers * 2 + 2;
        let (work_tx, work_rx) = sync_channel::<RawBatch>(self.plan.workers);
        let (done_tx, done_rx) = sync_channel::<(u64, Event)>(window + 4);
        let (token_tx, token_rx) = sync_channel::<()>(window);
        for _ in 0..window {
            token_tx.send(()).expect("room for every token");
        }
        // Owned by the workers alone: when the last one leaves, the receiver
        // goes with it and a reader blocked on a full queue is released.
        let work_rx = Arc::new(Mutex::new(work_rx));
        let to_run: Vec<usize> = (0..self.plan.shards.len())
            .filter(|i| !resumed.contains_key(i) && self.executor.config.selects(*i))
            .collect();
        std::thread::scope(|scope| {
            let reader_done = done_tx.clone();
            // No thread may unwind out of the scope: a panic (in a storage
            // backend, say) fails the run instead.
            // Named threads, for profilers and debuggers. A thread that
            // cannot start fails the run; the others then find their
            // channels closed and leave.
            let spawned = std::thread::Builder::new()
                .name("bp-reader".into())
                .spawn_scoped(scope, move || {
                    let read = catch_unwind(AssertUnwindSafe(|| {
                        self.read(&to_run, work_tx, reader_done, token_rx)
                    }));
                    if let Err(payload) = read {
                        self.fail(format!(
                            "reading the input failed: {}",
                            panic_message(&*payload)
                        ));
                    }
                });
            if let Err(e) = spawned {
                self.fail(format!("cannot start the reading thread: {e}"));
            }
            for worker in 0..self.plan.workers {
                let done = done_tx.clone();
                let work = Arc::clone(&work_rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("bp-worker-{worker}"))
                    .spawn_scoped(scope, move || {
                        let worked =
                            catch_unwind(AssertUnwindSafe(|| self.work(worker, &work, done)));
                        if let Err(payload) = worked {
                            self.fail(format!("a worker failed: {}", panic_message(&*payload)));
                        }
                    });
                if let Err(e) = spawned {
                    self.fail(format!("cannot start worker thread {worker}: {e}"));
                }
            }
            drop(done_tx);
            drop(work_rx);
            let stop = Writer::new(self, resumed, totals).write(done_rx, token_tx);
            // Whatever happened, let every thread see it and leave.
            self.stop.store(true, Ordering::Relaxed);
            stop
        })
    }

    /// The framing thread: reads the shards' files into batches.
    fn read(
        &self,
        shards: &[usize],
        work: SyncSender<RawBatch>,
        done: SyncSender<(u64, Event)>,
        tokens: Receiver<()>,
    ) {
        let mut seq = 0u64;
        let send_event = |seq: &mut u64, event: Event| {
            let ok = done.send((*seq, event)).is_ok();
            *seq += 1;
            ok
        };
        let options = self.executor.config.read_options;
        let batch_size = self.plan.batch_size;
        // Whole batches per chunk: about CHUNK_INSTANCES, at least one batch.
        let chunk_instances = batch_size.saturating_mul((CHUNK_INSTANCES / batch_size).max(1));
        // Damaged records ride along, but not without bound.
        let max_items = chunk_instances.saturating_mul(2).max(64);
        // With a byte limit on batches, chunks hold no more either, so that
        // memory stays within workers × the limit.
        let max_chunk_bytes = self.executor.config.max_batch_bytes.unwrap_or(usize::MAX);
        for &shard in shards {
            if self.stopping() || !send_event(&mut seq, Event::ShardStart { shard }) {
                return;
            }
            let byte_range = self.plan.shards[shard].byte_range.clone();
            for meta in &self.plan.inputs[self.plan.shards[shard].inputs.clone()] {
                let location = meta.location.as_str();
                let storage = &self.executor.storage;
                let opened = match &byte_range {
                    // A range's reader starts one byte early, to find where
                    // the first line that starts in the range begins.
                    Some(range) => storage.open_at(location, range.start.saturating_sub(1)),
                    None => storage.open(location),
                };
                let framed = opened.map_err(|e| e.to_string()).and_then(|r| {
                    match &byte_range {
                        // The last range reads to the file's end as it is
                        // now, as an unsplit file is read.
                        Some(range) => RawReader::new_range(
                            self.plan.data_format,
                            location,
                            r,
                            options,
                            range.start..if range.end >= meta.size {
                                u64::MAX
                            } else {
                                range.end
                            },
                        ),
                        None => RawReader::new(self.plan.data_format, location, r, options),
                    }
                    .map_err(|e| e.to_string())
                });
                let mut reader = match framed {
                    Ok(mut reader) => {
                        reader.defer_data_checksums();
                        reader
                    }
                    Err(message) => {
                        send_event(&mut seq, Event::Fatal(message));
                        return;
                    }
                };
                let source: Arc<str> = Arc::from(location);
                let mut consumed = 0;
                loop {
                    let mut batch = RawBatch {
                        seq: 0,
                        source: Arc::clone(&source),
                        data: self.raw_buffers.take(),
                        items: {
                            let mut items = self.item_lists.take();
                            items.reserve(chunk_instances.min(4096));
                            items
                        },
                        instances: 0,
                        bytes: 0,
                    };
                    let mut ended = false;
                    // The bytes of the chunk's records: its data also holds
                    // the framing copied along with runs of records (line
                    // endings, TFRecord headers), which the limits ignore.
                    let mut record_bytes = 0;
                    loop {
                        let at_boundary = batch.instances.is_multiple_of(batch_size);
                        let full = batch.instances >= chunk_instances
                            || (at_boundary && batch.instances > 0 && record_bytes >= CHUNK_BYTES)
                            || record_bytes >= max_chunk_bytes
                            || batch.items.len() >= max_items;
                        if full {
                            break;
                        }
                        // The records whole in the read buffer, in one go,
                        // up to the next batch boundary and within the
                        // chunk's limits; the per-record path for anything
                        // else. Either way the chunk ends where it would if
                        // every record were read alone.
                        let to_boundary = batch_size - batch.instances % batch_size;
                        let most = to_boundary
                            .min(chunk_instances - batch.instances)
                            .min(max_items - batch.items.len());
                        let room = max_chunk_bytes - record_bytes;
                        let items = &mut batch.items;
                        let ran =
                            reader.read_run(&mut batch.data, most, room, |position, range, crc| {
                                record_bytes += range.len();
                                items.push(RawItem::Record {
                                    position,
                                    range,
                                    crc,
                                });
                            });
                        if ran > 0 {
                            batch.instances += ran;
                            continue;
                        }
                        let start = batch.data.len();
                        match reader.read_into(&mut batch.data) {
                            None => {
                                ended = true;
                                break;
                            }
                            Some(Ok(position)) => {
                                record_bytes += batch.data.len() - start;
                                batch.items.push(RawItem::Record {
                                    position,
                                    range: start..batch.data.len(),
                                    crc: reader.take_data_checksum(),
                                });
                                batch.instances += 1;
                            }
                            Some(Err(e)) if matches!(e.kind, RecordErrorKind::Io(_)) => {
                                // The storage failed, not the file: the rest of it was never read.
                                let message = format!("cannot read {location:?}: {}", e.message());
                                self.raw_buffers.give(batch.data);
                                self.item_lists.give(batch.items);
                                send_event(&mut seq, Event::Fatal(message));
                                return;
                            }
                            Some(Err(e)) => batch.items.push(RawItem::Damaged(Box::new(e))),
                        }
                    }
                    let now = reader.bytes_read();
                    batch.bytes = now - consumed;
                    consumed = now;
                    if batch.items.is_empty() && batch.bytes == 0 {
                        self.raw_buffers.give(batch.data);
                        self.item_lists.give(batch.items);
                    } else {
                        // Wait for room in the window of batches in flight.
                        loop {
                            match tokens.recv_timeout(POLL) {
                                Ok(()) => break,
                                Err(RecvTimeoutError::Timeout) if !self.stopping() => {}
                                Err(_) => return,
                            }
                        }
                        batch.seq = seq;
                        seq += 1;
                        if work.send(batch).is_err() {
                            return;
                        }
                    }
                    if ended {
                        break;
                    }
                    if self.stopping() {
                        return;
                    }
                }
            }
            if !send_event(&mut seq, Event::ShardEnd { shard }) {
                return;
            }
        }
    }

    /// A worker thread: decodes, predicts and formats batches.
    fn work(
        &self,
        worker: usize,
        work: &Mutex<Receiver<RawBatch>>,
        done: SyncSender<(u64, Event)>,
    ) {
        let ctx = PredictContext::new(&self.signature, self.cancel, worker);
        // Kept from chunk to chunk, so that its lists do not grow anew each time.
        let mut pending = Pending::default();
        loop {
            let next = {
                // A panic cannot happen while the lock is held; recover the guard anyway.
                let rx = work.lock().unwrap_or_else(|e| e.into_inner());
                rx.recv_timeout(POLL)
            };
            let batch = match next {
                Ok(batch) => batch,
                Err(RecvTimeoutError::Timeout) if !self.stopping() => continue,
                Err(_) => return,
            };
            if self.stopping() {
                return;
            }
            let seq = batch.seq;
            let Some(output) = self.process(batch, &ctx, &mut pending) else {
                return; // stopping
            };
            if done.send((seq, Event::Batch(output))).is_err() {
                return;
            }
        }
    }

    /// Decodes a chunk, predicts it batch by batch, and formats the results
    /// and the errors, each in input order. One batch at a time is decoded,
    /// so few values are alive at once. `None` when the run stops meanwhile:
    /// the chunk is abandoned at the next batch boundary.
    fn process(
        &self,
        batch: RawBatch,
        ctx: &PredictContext<'_>,
        pending: &mut Pending,
    ) -> Option<BatchOutput> {
        let started = Instant::now();
        let mut out = BatchOutput {
            results: self.result_buffers.take(),
            records: batch.items.len() as u64,
            bytes: batch.bytes,
            ..BatchOutput::default()
        };
        pending.clear();
        let mut errors = ErrorRecordWriter::new(Vec::new());
        let batch_size = self.plan.batch_size;
        let max_bytes = self.executor.config.max_batch_bytes.unwrap_or(usize::MAX);
        for item in &batch.items {
            match item {
                RawItem::Record {
                    position,
                    range,
                    crc,
                } => {
                    let raw = &batch.data[range.clone()];
                    // A TFRecord's data checksum, checked here rather than on
                    // the framing thread, which all workers wait on.
                    let damaged = crc.and_then(|stored| {
                        let computed = masked_crc32c(raw);
                        (stored != computed)
                            .then_some(RecordErrorKind::DataChecksum { stored, computed })
                    });
                    match damaged.map_or_else(|| decode(self.plan.data_format, raw), Err) {
                        Ok(instance) => {
                            pending.slots.push(Slot::Instance(pending.instances.len()));
                            if pending.instances.capacity() == 0 {
                                // The predictor kept the last batch: the
                                // spare, with room for a whole one.
                                pending.instances = std::mem::take(&mut pending.spare);
                                pending.instances.reserve(batch_size.min(4096));
                            }
                            pending.instances.push(instance);
                            pending.ranges.push(range.clone());
                            pending.positions.push(*position);
                            pending.bytes += raw.len();
                        }
                        Err(kind) => {
                            let e = RecordError {
                                source: Arc::clone(&batch.source),
                                position: *position,
                                kind,
                                raw: Some(raw.to_vec()),
                            };
                            pending.slots.push(Slot::Damaged(Box::new(e)));
                        }
                    }
                }
                RawItem::Damaged(e) => pending.slots.push(Slot::Damaged(e.clone())),
            }
            if (pending.instances.len() >= batch_size || pending.bytes >= max_bytes)
                && !self.flush(pending, &batch, ctx, &mut out, &mut errors)
            {
                return None;
            }
        }
        if !self.flush(pending, &batch, ctx, &mut out, &mut errors) {
            return None;
        }
        self.raw_buffers.give(batch.data);
        self.item_lists.give(batch.items);
        out.error_lines = errors.into_inner();
        out.busy = started.elapsed();
        Some(out)
    }

    /// Predicts the pending batch and writes its items out in input order;
    /// `false` when the run is stopping.
    fn flush(
        &self,
        pending: &mut Pending,
        batch: &RawBatch,
        ctx: &PredictContext<'_>,
        out: &mut BatchOutput,
        errors: &mut ErrorRecordWriter<Vec<u8>>,
    ) -> bool {
        if self.stopping() {
            return false;
        }
        let csv = self.plan.output_format == DataFormat::Csv;
        let records = Records {
            format: self.plan.data_format,
            data: &batch.data,
            ranges: &pending.ranges,
        };
        pending.results.clear();
        let instances = std::mem::take(&mut pending.instances);
        if !instances.is_empty() {
            let span = 0..instances.len();
            let stopping = || self.stopping();
            let iso = Isolation {
                predictor: &*self.predictor,
                records: &records,
                ctx,
                stopping: &stopping,
                spare_room: 2 * self.plan.batch_size.min(4096),
            };
            isolate(
                &iso,
                instances,
                span,
                &mut pending.results,
                &mut pending.spare,
            );
            if pending.results.len() < pending.ranges.len() {
                return false;
            }
        }
        // The instance as JSON, for the error file: decoded again from its record.
        let instance_json = |i: usize| records.decode(i..i + 1).pop().map(Instance::into_json);
        let mut results = pending.results.drain(..);
        for slot in pending.slots.drain(..) {
            let (position, instance, raw, failure) = match slot {
                Slot::Damaged(e) => {
                    let failure = Failure {
                        stats: e.stats_message(),
                        full: e.message(),
                    };
                    let raw = e.raw.is_some().then(|| e.raw_json());
                    (e.position, None, raw, failure)
                }
                Slot::Instance(i) => match results.next().expect("one result per instance") {
                    Ok(prediction) if csv => {
                        let raw = batch.data[pending.ranges[i].clone()].to_vec();
                        out.csv.push((
                            prediction,
                            raw,
                            Arc::clone(&batch.source),
                            pending.positions[i],
                        ));
                        out.predictions += 1;
                        continue;
                    }
                    Ok(prediction) => {
                        serde_json::to_writer(&mut out.results, &prediction)
                            .expect("JSON into memory");
                        out.results.push(b'\n');
                        out.predictions += 1;
                        continue;
                    }
                    Err(failure) => (pending.positions[i], instance_json(i), None, failure),
                },
            };
            // Writing into memory cannot fail.
            let _ = errors.write(&batch.source, &position, instance, raw, &failure.full);
            out.error_messages.push(failure.stats);
        }
        drop(results);
        pending.ranges.clear();
        pending.positions.clear();
        pending.bytes = 0;
        true
    }
}

/// An item's fate before prediction: an instance (by index) or a damaged record.
enum Slot {
    Instance(usize),
    Damaged(Box<RecordError>),
}

/// The batch being gathered by a worker, with the errors between its instances.
#[derive(Default)]
struct Pending {
    slots: Vec<Slot>,
    instances: Vec<Instance>,
    /// Each instance's record in the chunk's data.
    ranges: Vec<Range<usize>>,
    positions: Vec<Position>,
    bytes: usize,
    results: Vec<Result<Value, Failure>>,
    /// An empty vector with room, to hold the next batch.
    spare: Vec<Instance>,
}

impl Pending {
    /// Empties it for a new chunk, keeping the room it has: a safeguard, as
    /// a chunk that was not abandoned leaves it empty, and an abandoned one
    /// ends the worker.
    fn clear(&mut self) {
        self.slots.clear();
        self.instances.clear();
        self.ranges.clear();
        self.positions.clear();
        self.bytes = 0;
        self.results.clear();
    }
}

/// Why an instance failed: the message for `errors_stats` (without
/// details) and the full one for the error file.
#[derive(Debug, Clone)]
struct Failure {
    stats: String,
    full: String,
}

impl Failure {
    fn same(message: String) -> Self {
        Failure {
            stats: message.clone(),
            full: message,
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned())
}

/// Calls the predictor once with `batch`, turning an error, a panic or a
/// wrong count into a [`Failure`]. Everything that runs user code (the
/// error's `Display`, dropping a panic payload) stays inside the guard.
fn call(
    predictor: &dyn Predictor,
    batch: Vec<Instance>,
    ctx: &PredictContext<'_>,
) -> Result<Vec<Value>, Failure> {
    let expected = batch.len();
    let outcome = catch_unwind(AssertUnwindSafe(|| match predictor.predict(batch, ctx) {
        Ok(predictions) if predictions.len() == expected => Ok(predictions),
        Ok(predictions) => Err(Failure::same(format!(
            "wrong number of predictions: expected {expected}, got {}",
            predictions.len()
        ))),
        Err(e) => Err(Failure {
            stats: e.message().to_owned(),
            full: e.to_string(),
        }),
    }));
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = catch_unwind(AssertUnwindSafe(|| {
                let message = panic_message(&*payload);
                drop(payload);
                message
            }))
            .unwrap_or_else(|_| "a payload that panicked".to_owned());
            Err(Failure::same(format!("predictor panicked: {message}")))
        }
    }
}

/// The records of a batch, to decode its instances again when a part of it
/// must be retried (the predictor owns what it was given).
struct Records<'a> {
    format: DataFormat,
    data: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl Records<'_> {
    fn decode(&self, range: Range<usize>) -> Vec<Instance> {
        self.ranges[range]
            .iter()
            .map(|r| {
                decode(self.format, &self.data[r.clone()])
                    .expect("a record decodes as it did before")
            })
            .collect()
    }
}

/// What [`isolate`] works with besides the batch.
struct Isolation<'r> {
    predictor: &'r dyn Predictor,
    /// The batch's records, decoded again for retries.
    records: &'r Records<'r>,
    ctx: &'r PredictContext<'r>,
    stopping: &'r dyn Fn() -> bool,
    /// The most room a spare vector keeps (a predictor may return vectors
    /// with far more room than predictions).
    spare_room: usize,
}

/// Predicts `batch` (the decoded records of `span`), splitting it in halves
/// on failure until the failing instances are alone; pushes one result per
/// instance, in order — unless `stopping` says to give up, which leaves
/// `out` short. The allocation of the predictions' vector, emptied, is
/// left in `spare` for the next batch when it has more room than `spare`
/// (and no more than `spare_room`): a predictor that maps its batch in
/// place (as [`EchoPredictor`](crate::EchoPredictor) does) then gets the
/// same one back each time, and the worker makes no large allocation per
/// batch (with glibc's allocator, each one first sweeps up the small blocks
/// the batch before freed).
fn isolate(
    iso: &Isolation<'_>,
    batch: Vec<Instance>,
    span: Range<usize>,
    out: &mut Vec<Result<Value, Failure>>,
    spare: &mut Vec<Instance>,
) {
    if (iso.stopping)() {
        return;
    }
    let len = batch.len();
    match call(iso.predictor, batch, iso.ctx) {
        Ok(mut predictions) => {
            out.extend(predictions.drain(..).map(Ok));
            let room = predictions.capacity();
            if room > spare.capacity() && room <= iso.spare_room {
                // Empty, and Value and Instance have one size: the vector
                // is rebuilt in its own allocation.
                *spare = predictions.into_iter().map(Instance::Json).collect();
            }
        }
        Err(failure) if len == 1 => out.push(Err(failure)),
        Err(_) => {
            let mid = span.start + len / 2;
            for half in [span.start..mid, mid..span.end] {
                let batch = iso.records.decode(half.clone());
                isolate(iso, batch, half, out, spare);
            }
        }
    }
}

/// An open shard's files.
struct OpenShard {
    index: usize,
    results: Box<dyn ObjectWriter>,
    errors: Box<dyn ObjectWriter>,
    stats: ErrorStats,
    predictions: u64,
    errors_count: u64,
    records: u64,
    bytes: u64,
    node_seconds: f64,
}

/// The writing side, on the calling thread: puts events back in input
/// order, writes and commits shards, keeps the counts.
struct Writer<'r, 'a> {
    run: &'r Run<'a>,
    totals: &'r mut Totals,
    progress: Vec<ShardProgress>,
    csv_header: Option<Vec<String>>,
    open: Option<OpenShard>,
    observer_failed: std::cell::Cell<bool>,
}

impl<'r, 'a> Writer<'r, 'a> {
    fn new(
        run: &'r Run<'a>,
        resumed: BTreeMap<usize, ShardSummary>,
        totals: &'r mut Totals,
    ) -> Self {
        let mut progress: Vec<ShardProgress> = run
            .plan
            .shards
            .iter()
            .map(|s| ShardProgress {
                total_bytes: s.bytes,
                ..ShardProgress::default()
            })
            .collect();
        let mut csv_header = None;
        for (index, summary) in resumed {
            totals.add_finished(&summary);
            csv_header = csv_header.or(summary.csv_header);
            progress[index] = ShardProgress {
                records: summary.records,
                predictions: summary.predictions,
                errors: summary.errors,
                bytes: summary.bytes,
                total_bytes: progress[index].total_bytes,
                done: true,
            };
        }
        Writer {
            run,
            totals,
            progress,
            csv_header,
            open: None,
            observer_failed: std::cell::Cell::new(false),
        }
    }

    fn write(mut self, events: Receiver<(u64, Event)>, tokens: SyncSender<()>) -> Option<Stop> {
        let mut pending: BTreeMap<u64, Event> = BTreeMap::new();
        let mut next = 0u64;
        self.report();
        loop {
            if let Some(message) = self.run.failure() {
                return Some(Stop::Failed(message));
            }
            if self.run.cancel.is_cancelled() {
                return Some(Stop::Cancelled);
            }
            match events.recv_timeout(POLL) {
                Ok((seq, event)) => {
                    pending.insert(seq, event);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Some(event) = pending.remove(&next) {
                next += 1;
                let is_batch = matches!(event, Event::Batch(_));
                if let Err(stop) = self.handle(event) {
                    return Some(stop);
                }
                if is_batch {
                    // Room for one more batch in flight; never blocks (tokens are conserved).
                    let _ = tokens.try_send(());
                }
            }
        }
        // Every sender is gone. Unless a stop was asked for, every shard must be done.
        if let Some(message) = self.run.failure() {
            return Some(Stop::Failed(message));
        }
        if self.run.cancel.is_cancelled() {
            return Some(Stop::Cancelled);
        }
        let config = &self.run.executor.config;
        let selected = (0..self.progress.len()).filter(|&i| config.selects(i));
        let (done, wanted) = selected.fold((0, 0), |(d, w), i| {
            (d + usize::from(self.progress[i].done), w + 1)
        });
        if !pending.is_empty() || self.open.is_some() || done < wanted {
            return Some(Stop::Failed(format!(
                "internal error: the run ended with {done} of {wanted} shards done"
            )));
        }
        None
    }

    fn handle(&mut self, event: Event) -> Result<(), Stop> {
        match event {
            Event::ShardStart { shard } => self.start(shard),
            Event::Batch(batch) => self.batch(batch),
            Event::ShardEnd { shard } => self.end(shard),
            Event::Fatal(message) => Err(Stop::Failed(message)),
        }
    }

    fn start(&mut self, index: usize) -> Result<(), Stop> {
        let shard = &self.run.plan.shards[index];
        let storage = &self.run.executor.storage;
        let create = |location: &str| {
            storage
                .create(location)
                .map_err(|e| Stop::Failed(format!("cannot write output: {e}")))
        };
        self.open = Some(OpenShard {
            index,
            results: create(&shard.results_file)?,
            errors: create(&shard.errors_file)?,
            stats: ErrorStats::default(),
            predictions: 0,
            errors_count: 0,
            records: 0,
            bytes: 0,
            node_seconds: 0.0,
        });
        Ok(())
    }

    fn batch(&mut self, mut batch: BatchOutput) -> Result<(), Stop> {
        let write_failed = |what: &str, location: &str, e: std::io::Error| {
            Stop::Failed(format!(
                "cannot write output: cannot write {what} {location:?}: {e}"
            ))
        };
        let plan = self.run.plan;
        let open = self
            .open
            .as_mut()
            .expect("a batch comes between a shard's start and end");
        let shard = &plan.shards[open.index];
        if !batch.csv.is_empty() {
            // CSV: the header is the keys of the job's first prediction, in
            // input order, that is an object with at least one key. Row
            // errors are listed after the chunk's other errors.
            let mut errors = ErrorRecordWriter::new(Vec::new());
            let mut rows: Option<CsvResultWriter<Vec<u8>>> = None;
            for (prediction, raw, source, position) in batch.csv.drain(..) {
                if self.csv_header.is_none()
                    && let Value::Object(map) = &prediction
                    && !map.is_empty()
                {
                    let header: Vec<String> = map.keys().cloned().collect();
                    let location = join_location(&plan.output_path, CSV_HEADER_FILE);
                    self.run
                        .executor
                        .storage
                        .put_bytes(&location, &csv_header_bytes(&header))
                        .map_err(|e| Stop::Failed(format!("cannot write output: {e}")))?;
                    self.csv_header = Some(header);
                }
                let written = match &self.csv_header {
                    None if prediction.is_object() => {
                        Err(CsvWriteError::Row(CsvRowError::NoColumns))
                    }
                    None => Err(CsvWriteError::Row(CsvRowError::NotAnObject(
                        crate::model::wire::show(&prediction),
                    ))),
                    Some(header) => rows
                        .get_or_insert_with(|| CsvResultWriter::new(Vec::new(), header.clone()))
                        .write(&prediction),
                };
                match written {
                    Ok(()) => {}
                    Err(CsvWriteError::Row(e)) => {
                        let message = e.to_string();
                        let instance = decode(plan.data_format, &raw).ok().map(Instance::into_json);
                        let _ = errors.write(&source, &position, instance, None, &message);
                        batch.error_messages.push(message);
                        batch.predictions -= 1;
                    }
                    Err(CsvWriteError::Io(e)) => {
                        return Err(write_failed("results", &shard.results_file, e));
                    }
                }
            }
            batch.error_lines.extend(errors.into_inner());
            batch.results =
                rows.map_or_else(Vec::new, |w| w.into_inner().expect("CSV into memory"));
        }
        open.results
            .write_all(&batch.results)
            .map_err(|e| write_failed("results", &shard.results_file, e))?;
        self.run
            .result_buffers
            .give(std::mem::take(&mut batch.results));
        open.errors
            .write_all(&batch.error_lines)
            .map_err(|e| write_failed("errors", &shard.errors_file, e))?;
        let failed = batch.error_messages.len() as u64;
        for message in &batch.error_messages {
            open.stats.add(message, 1);
        }
        open.predictions += batch.predictions;
        open.errors_count += failed;
        open.records += batch.records;
        open.bytes += batch.bytes;
        open.node_seconds += batch.busy.as_secs_f64();
        self.totals.records_read += batch.records;
        self.totals.node_seconds += batch.busy.as_secs_f64();
        let progress = &mut self.progress[open.index];
        progress.records += batch.records;
        progress.predictions += batch.predictions;
        progress.errors += failed;
        progress.bytes += batch.bytes;
        self.report();
        if let Some(limit) = self.run.executor.config.max_error_count {
            let errors = self.totals.committed_errors + self.errors_in_open();
            if errors > limit {
                return Err(Stop::Failed(format!(
                    "too many errors: {errors} instances failed, over the limit of {limit} ({} instances read)",
                    self.totals.committed_predictions + self.predictions_in_open() + errors
                )));
            }
        }
        Ok(())
    }

    fn errors_in_open(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.errors_count)
    }

    fn predictions_in_open(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.predictions)
    }

    fn end(&mut self, index: usize) -> Result<(), Stop> {
        let open = self.open.take().expect("a shard ends after it starts");
        debug_assert_eq!(open.index, index);
        let shard = &self.run.plan.shards[index];
        let summary = ShardSummary {
            identity: shard_identity(self.run.plan, shard, &self.run.settings),
            predictions: open.predictions,
            errors: open.errors_count,
            records: open.records,
            bytes: open.bytes,
            node_seconds: open.node_seconds,
            stats: open.stats,
            csv_header: self.csv_header.clone(),
            sizes: [0; 3],
        };
        let storage = &self.run.executor.storage;
        let mut summary = summary;
        // The summary goes last: a shard counts as done only when all its files are.
        let mut committed: Vec<&str> = Vec::new();
        let result = (|| {
            summary.sizes[1] = open.errors.commit()?.size;
            committed.push(&shard.errors_file);
            summary.sizes[2] = storage
                .put_bytes(&shard.errors_stats_file, &summary.stats.to_bytes())?
                .size;
            committed.push(&shard.errors_stats_file);
            summary.sizes[0] = open.results.commit()?.size;
            committed.push(&shard.results_file);
            storage.put_bytes(&shard.summary_file, &summary.to_bytes())?;
            Ok::<(), StorageError>(())
        })();
        if let Err(e) = result {
            // Take back what this shard committed, so no file outlives its count.
            for location in committed {
                let _ = storage.delete(location);
            }
            return Err(Stop::Failed(format!("cannot write output: {e}")));
        }
        self.totals.committed_predictions += summary.predictions;
        self.totals.committed_errors += summary.errors;
        self.totals.committed_stats.merge(&summary.stats);
        self.progress[index].done = true;
        self.report();
        Ok(())
    }

    fn report(&self) {
        let Some(observer) = &self.run.executor.observer else {
            return;
        };
        // Resumed shards count with their summaries' numbers; this run's as they go.
        // An observer that panics is not called again; the job goes on.
        if self.observer_failed.get() {
            return;
        }
        let records: u64 = self.progress.iter().map(|p| p.records).sum();
        let predictions: u64 = self.progress.iter().map(|p| p.predictions).sum();
        let errors: u64 = self.progress.iter().map(|p| p.errors).sum();
        let bytes: u64 = self.progress.iter().map(|p| p.bytes).sum();
        let progress = Progress {
            records_read: records,
            predictions,
            errors,
            bytes_read: bytes,
            total_bytes: self.run.plan.total_bytes,
            elapsed: self.run.started.elapsed(),
            shards_done: self.progress.iter().filter(|p| p.done).count(),
            shards: &self.progress,
        };
        if catch_unwind(AssertUnwindSafe(|| observer.on_progress(&progress))).is_err() {
            self.observer_failed.set(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::Instance;

    /// Workers turn the emptied vector of a batch's predictions into the
    /// next batch's vector of instances (`isolate`): without a new
    /// allocation only while a `Value` and an `Instance` have one layout.
    #[test]
    fn predictions_vectors_become_instance_vectors_in_place() {
        assert_eq!(size_of::<Value>(), size_of::<Instance>());
        assert_eq!(align_of::<Value>(), align_of::<Instance>());
        let predictions: Vec<Value> = Vec::with_capacity(64);
        let at = predictions.as_ptr() as usize;
        let instances: Vec<Instance> = predictions.into_iter().map(Instance::Json).collect();
        assert_eq!(instances.as_ptr() as usize, at, "the same allocation");
        assert!(instances.capacity() >= 64);
    }
}
