//! How an executor runs: [`ExecutorConfig`], [`ResumeMode`] and the
//! [`ShardSelection`] of one process among many.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::record::ReadOptions;
use crate::retry::RetryPolicy;

/// The default of [`ExecutorConfig::shard_target_bytes`]: 64 MiB.
pub const SHARD_TARGET_BYTES: u64 = 64 << 20;

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

/// Settings of a [`BatchExecutor`](super::BatchExecutor), beyond what the job itself says.
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
    /// Fail the job once more instances than this have failed. It stops at
    /// the instance whose failure passes the limit (in input order), and
    /// its message counts the instances read up to it.
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
    /// How long one predictor call may take (by default: off, but 60 s for
    /// a predictor whose calls wait on a server,
    /// [`Predictor::calls_mostly_wait`](crate::Predictor::calls_mostly_wait)). A call past
    /// it fails its batch, which is then split as any failed batch is, so
    /// that instances that hang a model end as errors and the rest are
    /// predicted; the job never waits on one call for longer. The call
    /// sees it as [`PredictContext::deadline`](crate::PredictContext::deadline).
    pub batch_deadline: Option<Duration>,
    /// How calls that fail with a [retryable](crate::PredictError::is_retryable)
    /// error are tried again: by default 5 retries, waiting 100 ms and
    /// doubling to at most 10 s (or the error's `retry_after`, up to that
    /// cap), within 2 minutes, shared by a batch and its parts. A batch
    /// still failing after them is split as any failed batch is, without
    /// more retries, so that an instance that brings a server down ends as
    /// an error and the others are predicted.
    pub predict_retries: RetryPolicy,
    /// Adaptive batches (off by default): each worker starts at the job's
    /// `batchSize`, doubles it while the predictor's throughput (instances
    /// per second of its calls) rises by a tenth or more, steps back once it
    /// does not, and halves it below any batch that fails as too large
    /// ([`PredictError::too_large`](crate::PredictError::too_large), or past
    /// the batch deadline). Batches stay within a chunk of the input (about
    /// 1,024 instances, or one `batchSize` when larger). The output is the
    /// same as with fixed batches: results do not depend on how instances
    /// are batched.
    pub adaptive_batch: bool,
}

/// Which of a plan's shards one process runs when a job is spread over
/// `count` processes: shard `k` belongs to process `k % count`. Every
/// process plans the same shards (the plan depends only on the job and its
/// inputs), writes exactly the files of its own, and
/// [`BatchExecutor::merge`](super::BatchExecutor::merge) then combines their summaries.
///
/// # Example
/// ```
/// use batch_prediction::executor::ShardSelection;
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
            .field("batch_deadline", &self.batch_deadline)
            .field("predict_retries", &self.predict_retries)
            .field("adaptive_batch", &self.adaptive_batch)
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
            batch_deadline: None,
            predict_retries: RetryPolicy::default()
                .with_max_retries(5)
                .with_backoff(Duration::from_millis(100), Duration::from_secs(10))
                .with_max_elapsed(Duration::from_secs(120)),
            adaptive_batch: false,
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

    /// Sets [`batch_deadline`](Self::batch_deadline).
    #[must_use]
    pub fn with_batch_deadline(mut self, deadline: Duration) -> Self {
        self.batch_deadline = Some(deadline);
        self
    }

    /// Sets [`predict_retries`](Self::predict_retries) (`max_retries` 0: no retries).
    #[must_use]
    pub fn with_predict_retries(mut self, policy: RetryPolicy) -> Self {
        self.predict_retries = policy;
        self
    }

    /// Sets [`adaptive_batch`](Self::adaptive_batch).
    #[must_use]
    pub fn with_adaptive_batch(mut self, adaptive: bool) -> Self {
        self.adaptive_batch = adaptive;
        self
    }

    /// Whether this run does plan shard `shard`.
    pub(super) fn selects(&self, shard: usize) -> bool {
        self.shard_selection.is_none_or(|s| s.contains(shard))
    }

    pub(super) fn threads(&self) -> usize {
        match self.max_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}
