//! The state a run's threads share, and what they hand each other: the
//! framing thread's chunks ([`RawBatch`]), the workers' outputs
//! ([`BatchOutput`]) and the writer's [`Event`]s, with the buffer pools and
//! the chunk sizing they share. The three stages (`read.rs`, `work.rs`,
//! `write.rs`) depend on this file; `run.rs` starts and joins them.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BatchExecutor, Plan};
use crate::model::DataFormat;
use crate::predict::{CancelHandle, Predictor};
use crate::record::{Position, RecordError};

/// How long a blocked thread waits before it checks for a stop.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// A pool of buffers handed between threads, so that big buffers are
/// reused instead of being allocated in one thread and freed in another.
pub(super) struct Pool<T>(Mutex<Vec<Vec<T>>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(Mutex::new(Vec::new()))
    }
}

impl<T> Pool<T> {
    pub(super) fn take(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub(super) fn give(&self, mut buf: Vec<T>) {
        buf.clear();
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 64 {
            pool.push(buf);
        }
    }
}

/// What reaches the writing thread, in input order by `seq`.
pub(super) enum Event {
    ShardStart { shard: usize },
    Batch(BatchOutput),
    ShardEnd { shard: usize },
    Fatal(String),
}

/// One run's shared state.
pub(super) struct Run<'a> {
    pub(super) executor: &'a BatchExecutor,
    pub(super) plan: &'a Plan,
    pub(super) settings: Value,
    pub(super) predictor: Arc<dyn Predictor>,
    /// How records are decoded into instances
    /// ([`Predictor::takes_raw_records`]): as JSON instances (`JSON`), or
    /// as they are: lines as strings (`TEXT`), records as bytes (TFRecord).
    pub(super) decoding: DataFormat,
    pub(super) signature: String,
    pub(super) cancel: &'a CancelHandle,
    /// Set when the run must stop early (cancel, failure).
    pub(super) stop: AtomicBool,
    /// Why a thread gave up, when it could not say so in order (a panic).
    pub(super) failure: Mutex<Option<String>>,
    pub(super) started: Instant,
    /// Buffers of raw records (framing thread → workers → back).
    pub(super) raw_buffers: Pool<u8>,
    /// The lists of a chunk's records, likewise.
    pub(super) item_lists: Pool<RawItem>,
    /// Buffers of result lines (workers → writer → back).
    pub(super) result_buffers: Pool<u8>,
    /// The workers' time per instance, which sizes the chunks.
    pub(super) chunk_cost: ChunkCost,
    /// The deletion of the earlier run's output files this run does not keep.
    pub(super) stale: super::shards::StaleDeletion,
}

impl Run<'_> {
    /// How the input files are framed into records: as the plan's format
    /// says, but TEXT lines read as JSON instances are framed as JSON lines
    /// are (blank lines skipped, not records).
    pub(super) fn framing(&self) -> DataFormat {
        match (self.plan.data_format, self.decoding) {
            (DataFormat::Text, DataFormat::Json) => DataFormat::Json,
            (format, _) => format,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_cancelled()
    }

    /// Records why the run must fail and stops it (the first reason wins).
    pub(super) fn fail(&self, message: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(message);
        self.stop.store(true, Ordering::Relaxed);
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// With adaptive batches, the framing thread hands workers chunks of whole
/// batches holding about this many instances, the most a batch may grow to.
pub(super) const CHUNK_INSTANCES: usize = 1024;

/// The instances of a chunk for batches of `batch_size`: about
/// [`CHUNK_INSTANCES`], whole batches, at least one.
pub(super) fn chunk_instances(batch_size: usize) -> usize {
    whole_batches(CHUNK_INSTANCES, batch_size)
}

/// `instances` rounded down to whole batches of `batch_size`, at least one.
fn whole_batches(instances: usize, batch_size: usize) -> usize {
    batch_size.saturating_mul((instances / batch_size.max(1)).max(1))
}

/// Otherwise a chunk holds about this much of a worker's time, as measured
/// on the chunks before ([`ChunkCost`]): long enough that the threads'
/// meeting once per chunk (a few tens of microseconds) costs a few percent
/// at most, short enough that a slow predictor's batches spread over every
/// worker, and that workers finish together.
pub(super) const CHUNK_WORK: Duration = Duration::from_millis(2);

/// … and at most this many instances.
pub(super) const MAX_CHUNK_INSTANCES: usize = 4096;

/// The workers' time per instance, as they measure it on each chunk (a
/// moving average, in nanoseconds; 0 before the first chunk), from which
/// the framing thread sizes the next chunks.
#[derive(Debug, Default)]
pub(super) struct ChunkCost(AtomicU64);

impl ChunkCost {
    /// A worker spent `busy` on a chunk of `records` records.
    pub(super) fn record(&self, busy: Duration, records: u64) {
        if records == 0 {
            return;
        }
        let nanos = u64::try_from(busy.as_nanos() / u128::from(records)).unwrap_or(u64::MAX);
        let before = self.0.load(Ordering::Relaxed);
        // Workers may race here; a lost update only slows the average.
        let after = if before == 0 {
            nanos
        } else {
            before - before / 4 + nanos / 4
        };
        self.0.store(after.max(1), Ordering::Relaxed);
    }

    /// The instances of the next chunk for batches of `batch_size`: whole
    /// batches holding about [`CHUNK_WORK`], at most
    /// [`MAX_CHUNK_INSTANCES`], one batch before any chunk was measured.
    pub(super) fn chunk_instances(&self, batch_size: usize) -> usize {
        let nanos = self.0.load(Ordering::Relaxed);
        if nanos == 0 {
            return whole_batches(batch_size, batch_size);
        }
        let fit = usize::try_from(CHUNK_WORK.as_nanos() as u64 / nanos).unwrap_or(usize::MAX);
        whole_batches(fit.min(MAX_CHUNK_INSTANCES), batch_size)
    }
}

/// … and a chunk ends at the first batch boundary past this many bytes.
pub(super) const CHUNK_BYTES: usize = 1 << 20;

/// Whole batches of raw records from one file, framed but not decoded.
pub(super) struct RawBatch {
    pub(super) seq: u64,
    pub(super) source: Arc<str>,
    pub(super) data: Vec<u8>,
    pub(super) items: Vec<RawItem>,
    pub(super) instances: usize,
    pub(super) bytes: u64,
}

pub(super) enum RawItem {
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
pub(super) struct BatchOutput {
    /// JSON output: the result lines, ready to write.
    pub(super) results: Vec<u8>,
    /// CSV output, formatted by the writer.
    pub(super) csv: Vec<CsvRow>,
    /// Error file lines, ready to write.
    pub(super) error_lines: Vec<u8>,
    /// The message of each failed instance, for errors_stats.
    pub(super) error_messages: Vec<String>,
    /// Each failed instance's place among the chunk's records (from 0), in
    /// order, so that `max_error_count` stops at the very record past it.
    pub(super) error_places: Vec<u64>,
    pub(super) predictions: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) busy: Duration,
    /// Predictor calls tried again after a transient failure.
    pub(super) retries: u64,
    /// Predictor calls past the batch deadline.
    pub(super) deadline_hits: u64,
}

/// A prediction for a CSV row, with what an error record about it needs.
pub(super) struct CsvRow {
    pub(super) prediction: Value,
    /// The instance's record.
    pub(super) raw: Vec<u8>,
    pub(super) source: Arc<str>,
    pub(super) position: Position,
    /// The record's place among the chunk's records.
    pub(super) place: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_about_chunk_work_in_whole_batches() {
        let cost = ChunkCost::default();
        assert_eq!(
            cost.chunk_instances(64),
            64,
            "one batch before any is measured"
        );
        assert_eq!(
            cost.chunk_instances(100_000),
            100_000,
            "a batch is never cut"
        );
        // 1 µs an instance: 2,000 instances, in whole batches.
        cost.record(Duration::from_micros(1024), 1024);
        assert_eq!(cost.chunk_instances(64), 1984);
        assert_eq!(cost.chunk_instances(3000), 3000);
        // A fast predictor: at most MAX_CHUNK_INSTANCES.
        let fast = ChunkCost::default();
        fast.record(Duration::from_micros(100), 1000);
        assert_eq!(fast.chunk_instances(64), MAX_CHUNK_INSTANCES);
        // A slow one: a batch each.
        let slow = ChunkCost::default();
        slow.record(Duration::from_millis(640), 64);
        assert_eq!(slow.chunk_instances(64), 64);
        assert_eq!(slow.chunk_instances(1), 1);
        // The average follows the chunks, a quarter at a time.
        cost.record(Duration::from_micros(5 * 1024), 1024);
        assert_eq!(cost.0.load(Ordering::Relaxed), 2000);
        cost.record(Duration::ZERO, 0);
        assert_eq!(
            cost.0.load(Ordering::Relaxed),
            2000,
            "an empty chunk says nothing"
        );
    }
}
