//! One run's threads: starts the framing thread, the workers and the
//! writer over the state they share (`shared.rs`), and joins them.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use super::shards::{ShardSummary, Totals};
use super::shared::{Event, RawBatch, Run};
use super::write::Writer;
use super::{Stop, panic_message};
use crate::trace;

impl Run<'_> {
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
