//! One run's threads: the framing thread, the workers and the writer,
//! and the state they share.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::read::{ChunkCost, RawBatch, RawItem};
use super::shards::{ShardSummary, Totals};
use super::work::BatchOutput;
use super::write::Writer;
use super::{BatchExecutor, Plan, Stop, panic_message};
use crate::model::DataFormat;
use crate::predict::{CancelHandle, Predictor};
use crate::trace;

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

    /// The reading thread's work; a panic fails the run.
    fn read_guarded(
        &self,
        to_run: &[usize],
        work_tx: std::sync::mpsc::SyncSender<RawBatch>,
        done: std::sync::mpsc::SyncSender<(u64, Event)>,
        tokens: std::sync::mpsc::Receiver<()>,
    ) {
        let read = catch_unwind(AssertUnwindSafe(|| {
            self.read(to_run, work_tx, done, tokens)
        }));
        if let Err(payload) = read {
            self.fail(format!(
                "reading the input failed: {}",
                panic_message(&*payload)
            ));
        }
    }

    pub(super) fn execute(
        &self,
        resumed: BTreeMap<usize, ShardSummary>,
        totals: &mut Totals,
    ) -> Option<Stop> {
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
        // The threads report in the job's span, to the caller's subscriber.
        let context = trace::Context::current();
        std::thread::scope(|scope| {
            let reader_done = done_tx.clone();
            // No thread may unwind out of the scope: a panic (in a storage
            // backend, say) fails the run instead.
            // Named threads, for profilers and debuggers. A thread that
            // cannot start fails the run; the others then find their
            // channels closed and leave.
            let spawned = std::thread::Builder::new()
                .name("bp-reader".into())
                .spawn_scoped(scope, {
                    let context = context.clone();
                    move || {
                        context.scope(|| self.read_guarded(&to_run, work_tx, reader_done, token_rx))
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
                    .spawn_scoped(scope, {
                        let context = context.clone();
                        move || {
                            context.scope(|| {
                                let worked = catch_unwind(AssertUnwindSafe(|| {
                                    self.work(worker, &work, done)
                                }));
                                if let Err(payload) = worked {
                                    self.fail(format!(
                                        "a worker failed: {}",
                                        panic_message(&*payload)
                                    ));
                                }
                            })
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
}
