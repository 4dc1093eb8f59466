//! What a run reports: [`RunSummary`] at the end, [`Progress`] to a
//! [`ProgressObserver`] on the way.

use std::time::Duration;

use crate::model::{Job, State};
use crate::record::ErrorStats;

/// What [`BatchExecutor::run`](super::BatchExecutor::run) did.
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
    /// Predictor calls this run tried again after a transient failure
    /// ([`PredictError::is_retryable`](crate::PredictError::is_retryable)).
    pub retries: u64,
    /// Predictor calls this run gave up on at the batch deadline
    /// ([`ExecutorConfig::batch_deadline`](crate::ExecutorConfig::batch_deadline)).
    pub deadline_hits: u64,
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
    /// Predictor calls tried again so far after a transient failure.
    pub retries: u64,
    /// Predictor calls given up on so far at the batch deadline.
    pub deadline_hits: u64,
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
    /// in the job [`BatchExecutor::run`](super::BatchExecutor::run) returns. Does nothing by default.
    fn on_state(&self, job: &Job) {
        let _ = job;
    }
}

impl<F: Fn(&Progress<'_>) + Send + Sync> ProgressObserver for F {
    fn on_progress(&self, progress: &Progress<'_>) {
        self(progress)
    }
}
