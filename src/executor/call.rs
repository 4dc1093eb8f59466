//! Predictor calls: one call, its failure as a [`Failure`], and the batch
//! deadline, on a watched thread for predictors that do not keep it
//! themselves.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::panic_message;
use crate::predict::{CancelHandle, PredictContext, Predictor};
use crate::record::Instance;
use crate::trace;

/// Why an instance failed: the message for `errors_stats` (without
/// details) and the full one for the error file; and whether the failure
/// is worth another try.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) stats: String,
    pub(super) full: String,
    /// `Some` for a transient failure, with the wait the server asked for.
    pub(super) retry: Option<Option<Duration>>,
    /// The batch was too large for the model (or past the deadline).
    pub(super) too_large: bool,
    /// The job cannot go on ([`PredictError::fatal`](crate::PredictError::fatal)).
    pub(super) fatal: bool,
}

impl Failure {
    pub(super) fn same(message: String) -> Self {
        Failure {
            stats: message.clone(),
            full: message,
            retry: None,
            too_large: false,
            fatal: false,
        }
    }
}

/// Calls the predictor once with `batch`, turning an error, a panic or a
/// wrong count into a [`Failure`]. Everything that runs user code (the
/// error's `Display`, dropping a panic payload) stays inside the guard.
pub(super) fn call(
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
            retry: e.is_retryable().then(|| e.retry_after()),
            too_large: e.is_too_large(),
            fatal: e.is_fatal(),
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

/// Counts of one batch's calls, for progress and the run's summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) retries: Cell<u64>,
    pub(super) deadline_hits: Cell<u64>,
    /// A call of the batch failed as too large.
    pub(super) too_large: Cell<bool>,
}

/// A worker's calls of its job's predictor, under the job's batch
/// deadline if it has one. A predictor that keeps the deadline itself
/// ([`Predictor::honors_deadline`]) is called on the worker's thread with
/// the deadline in its context; any other is called on a helper thread the
/// worker waits on, up to the deadline. A call past it is abandoned on its
/// helper (which ends when the call returns, its result dropped), and the
/// next call gets a new helper.
pub(super) struct Caller {
    predictor: Arc<dyn Predictor>,
    deadline: Option<Duration>,
    watched: bool,
    helper: RefCell<Option<Helper>>,
    /// The worker's batch size, when batches adapt.
    pub(super) adaptive: Option<Adaptive>,
}

/// The batch deadline of a predictor whose calls mostly wait
/// ([`Predictor::calls_mostly_wait`]), when the job sets none.
pub(super) const WAITING_DEADLINE: Duration = Duration::from_secs(60);

/// A helper thread's ends: batches in, outcomes out.
struct Helper {
    calls: SyncSender<Call>,
    outcomes: Receiver<Result<Vec<Value>, Failure>>,
}

/// One call for a helper thread, with what its context borrows.
struct Call {
    batch: Vec<Instance>,
    signature: Arc<str>,
    cancel: CancelHandle,
    worker: usize,
    deadline: Instant,
}

impl Caller {
    pub(super) fn new(
        predictor: Arc<dyn Predictor>,
        deadline: Option<Duration>,
        adaptive: Option<Adaptive>,
    ) -> Self {
        // Calls that wait on a server have a deadline even when the job
        // sets none.
        let deadline =
            deadline.or_else(|| predictor.calls_mostly_wait().then_some(WAITING_DEADLINE));
        let watched = deadline.is_some() && !predictor.honors_deadline();
        Caller {
            predictor,
            deadline,
            watched,
            helper: RefCell::new(None),
            adaptive,
        }
    }

    /// Whether calls go through [`Caller::call`] only: a watched predictor
    /// is not offered the JSON-lines fast path, whose lines the worker
    /// owns.
    pub(super) fn fast_path(&self) -> bool {
        !self.watched
    }

    /// Calls the predictor with `batch`; a call past the deadline is a
    /// [`Failure`] saying so, counted in `tally`. `stopping` ends the
    /// wait early (the call's result then does not matter).
    pub(super) fn call(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
        tally: &Tally,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Vec<Value>, Failure> {
        let Some(limit) = self.deadline else {
            return call(&*self.predictor, batch, ctx);
        };
        let deadline = Instant::now() + limit;
        let late = || {
            tally.deadline_hits.set(tally.deadline_hits.get() + 1);
            trace::event!(
                warn,
                deadline_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "predictor call past its deadline"
            );
            Err(Failure {
                too_large: true,
                ..Failure::same(format!(
                    "the batch took longer than its deadline of {}",
                    seconds(limit)
                ))
            })
        };
        if !self.watched {
            let ctx = ctx.clone().with_deadline(deadline);
            let result = call(&*self.predictor, batch, &ctx);
            return match result {
                Err(_) if Instant::now() >= deadline => late(),
                other => other,
            };
        }
        let mut helper = self.helper.borrow_mut();
        let ends = helper.get_or_insert_with(|| spawn_helper(Arc::clone(&self.predictor)));
        let sent = ends.calls.send(Call {
            batch,
            signature: Arc::from(ctx.signature_name()),
            cancel: ctx.cancel.clone(),
            worker: ctx.worker(),
            deadline,
        });
        if sent.is_err() {
            *helper = None;
            return Err(Failure::same("the predictor's call thread ended".into()));
        }
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match ends.outcomes.recv_timeout(wait) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if stopping() {
                        *helper = None;
                        return Err(Failure::same("the run stopped".into()));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Abandoned: the helper ends when the call returns.
                    *helper = None;
                    return late();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    *helper = None;
                    return Err(Failure::same("the predictor's call thread ended".into()));
                }
            }
        }
    }
}

/// A worker's batch size when batches adapt
/// ([`ExecutorConfig::adaptive_batch`](super::ExecutorConfig::adaptive_batch)):
/// doubled after each [`PROBE_BATCHES`] batches whose throughput beat the
/// size before by a tenth, stepped back and settled once one does not, and
/// halved below a batch that failed as too large.
#[derive(Debug)]
pub(super) struct Adaptive {
    size: Cell<usize>,
    ceiling: Cell<usize>,
    /// The throughput of the size before, while growing; `None` once settled.
    growing: Cell<Option<f64>>,
    /// This size's batches so far: how many, their instances and call time.
    batches: Cell<u32>,
    instances: Cell<u64>,
    busy: Cell<Duration>,
}

/// Batches measured at each size before the next step.
pub(super) const PROBE_BATCHES: u32 = 4;

impl Adaptive {
    /// From `start`, up to `ceiling`.
    pub(super) fn new(start: usize, ceiling: usize) -> Self {
        Adaptive {
            size: Cell::new(start.max(1)),
            ceiling: Cell::new(ceiling.max(start).max(1)),
            growing: Cell::new(Some(0.0)),
            batches: Cell::new(0),
            instances: Cell::new(0),
            busy: Cell::new(Duration::ZERO),
        }
    }

    /// The size of the next batch.
    pub(super) fn size(&self) -> usize {
        self.size.get()
    }

    /// A batch of `n` instances predicted in `took`.
    pub(super) fn done(&self, n: usize, took: Duration) {
        let Some(before) = self.growing.get() else {
            return;
        };
        self.batches.set(self.batches.get() + 1);
        self.instances.set(self.instances.get() + n as u64);
        self.busy.set(self.busy.get() + took);
        if self.batches.get() < PROBE_BATCHES {
            return;
        }
        let rate = self.instances.get() as f64 / self.busy.get().as_secs_f64().max(1e-9);
        let size = self.size.get();
        if rate >= before * 1.1 && size < self.ceiling.get() {
            self.growing.set(Some(rate));
            self.size.set((size * 2).min(self.ceiling.get()));
        } else {
            if rate < before * 1.1 {
                self.size.set((size / 2).max(1));
            }
            self.growing.set(None);
        }
        self.batches.set(0);
        self.instances.set(0);
        self.busy.set(Duration::ZERO);
    }

    /// A batch of `n` instances failed as too large.
    pub(super) fn too_large(&self, n: usize) {
        let ceiling = (n / 2).max(1).min(self.ceiling.get());
        self.ceiling.set(ceiling);
        self.size.set(self.size.get().min(ceiling));
        self.growing.set(None);
    }
}

/// A helper thread that makes the calls it is sent, until its caller drops
/// its end.
fn spawn_helper(predictor: Arc<dyn Predictor>) -> Helper {
    let (calls, inbox) = sync_channel::<Call>(0);
    let (outbox, outcomes) = sync_channel(1);
    // A thread that cannot start drops its ends of the channels: the call
    // then fails, saying so.
    let _detached = std::thread::Builder::new()
        .name("bp-predict".into())
        .spawn(move || {
            while let Ok(Call {
                batch,
                signature,
                cancel,
                worker,
                deadline,
            }) = inbox.recv()
            {
                let ctx = PredictContext::new(&signature, &cancel, worker).with_deadline(deadline);
                if outbox.send(call(&*predictor, batch, &ctx)).is_err() {
                    return;
                }
            }
        });
    Helper { calls, outcomes }
}

/// `1.5 s`, `60 s`.
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}
