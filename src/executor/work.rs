//! The workers: decode, predict and format batches, and isolate the
//! instances of a batch that fails.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::call::{Adaptive, Caller, Failure, Tally};
use super::shared::{BatchOutput, CsvRow, Event, POLL, RawBatch, RawItem, Run, chunk_instances};
use crate::model::DataFormat;
use crate::predict::{JsonPredictions, PredictContext};
use crate::record::{
    ErrorRecordWriter, Instance, Position, RecordError, RecordErrorKind, decode, masked_crc32c,
    masked_crc32c_4,
};
use crate::retry::RetryPolicy;
use crate::trace;

impl Run<'_> {
    /// A worker thread: decodes, predicts and formats batches.
    pub(super) fn work(
        &self,
        worker: usize,
        work: &Mutex<Receiver<RawBatch>>,
        done: SyncSender<(u64, Event)>,
    ) {
        let ctx = PredictContext::new(&self.signature, self.cancel, worker);
        let batch_size = self.plan.batch_size;
        let adaptive = (self.executor.config.adaptive_batch)
            .then(|| Adaptive::new(batch_size, chunk_instances(batch_size)));
        let caller = Caller::new(
            Arc::clone(&self.predictor),
            self.executor.config.batch_deadline,
            adaptive,
        );
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
            let Some(output) = self.process(batch, &ctx, &caller, &mut pending) else {
                return; // stopping
            };
            self.chunk_cost.record(output.busy, output.records);
            if done.send((seq, Event::Batch(output))).is_err() {
                return;
            }
        }
    }

    /// Decodes a chunk, predicts it batch by batch, and formats the results
    /// and the errors, each in input order. One batch at a time is decoded,
    /// so few values are alive at once. `None` when the run stops meanwhile:
    /// the chunk is abandoned at the next batch boundary.
    pub(super) fn process(
        &self,
        batch: RawBatch,
        ctx: &PredictContext<'_>,
        caller: &Caller,
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
        let max_bytes = self.executor.config.max_batch_bytes.unwrap_or(usize::MAX);
        // JSON lines into JSON lines: the predictor may take the batch's text
        // as it is (Predictor::predict_json_lines), so lines are decoded
        // only if it does not.
        let lines = self.decoding == DataFormat::Json
            && self.plan.output_format != DataFormat::Csv
            && caller.fast_path();
        // A TFRecord's data checksum, checked here rather than on the
        // framing thread, which all workers wait on: the chunk's at once,
        // four at a time.
        checksums(&batch, &mut pending.checksums);
        let mut next_checksum = 0;
        for item in &batch.items {
            match item {
                RawItem::Record {
                    position,
                    range,
                    crc,
                } => {
                    pending.bytes += range.len();
                    if lines && crc.is_none() {
                        pending.slots.push(Slot::Line(pending.lines.len()));
                        pending.lines.push((*position, range.clone()));
                    } else {
                        let crc = crc.map(|stored| {
                            next_checksum += 1;
                            (stored, pending.checksums[next_checksum - 1])
                        });
                        self.admit(pending, &batch, *position, range.clone(), crc);
                    }
                }
                RawItem::Damaged(e) => pending.slots.push(Slot::Damaged(e.clone())),
            }
            let batch_size = caller
                .adaptive
                .as_ref()
                .map_or(self.plan.batch_size, Adaptive::size);
            if (pending.instances.len() + pending.lines.len() >= batch_size
                || pending.bytes >= max_bytes)
                && !self.flush(pending, &batch, ctx, caller, &mut out, &mut errors)
            {
                return None;
            }
        }
        if !self.flush(pending, &batch, ctx, caller, &mut out, &mut errors) {
            return None;
        }
        self.raw_buffers.give(batch.data);
        self.item_lists.give(batch.items);
        out.error_lines = errors.into_inner();
        out.busy = started.elapsed();
        Some(out)
    }

    /// Decodes the record at `range` of the chunk into the pending batch: an
    /// instance, or a damaged record in its place (when `crc`, its stored
    /// and computed data checksums, differ).
    fn admit(
        &self,
        pending: &mut Pending,
        batch: &RawBatch,
        position: Position,
        range: Range<usize>,
        crc: Option<(u32, u32)>,
    ) {
        let raw = &batch.data[range.clone()];
        let damaged = crc.and_then(|(stored, computed)| {
            (stored != computed).then_some(RecordErrorKind::DataChecksum { stored, computed })
        });
        match damaged.map_or_else(|| decode(self.decoding, raw), Err) {
            Ok(instance) => {
                pending.slots.push(Slot::Instance(pending.instances.len()));
                if pending.instances.capacity() == 0 {
                    // The predictor kept the last batch: the spare, with
                    // room for a whole one.
                    pending.instances = std::mem::take(&mut pending.spare);
                    pending.instances.reserve(self.plan.batch_size.min(4096));
                }
                pending.instances.push(instance);
                pending.ranges.push(range);
                pending.positions.push(position);
            }
            Err(kind) => {
                let e = RecordError {
                    source: Arc::clone(&batch.source),
                    position,
                    kind,
                    raw: Some(raw.to_vec()),
                };
                pending.slots.push(Slot::Damaged(Box::new(e)));
            }
        }
    }

    /// Offers the pending lines to the predictor's fast path
    /// ([`Predictor::predict_json_lines`]); `true` when it took them, their
    /// predictions then written to `out`.
    fn predict_lines(
        &self,
        pending: &Pending,
        batch: &RawBatch,
        ctx: &PredictContext<'_>,
        out: &mut BatchOutput,
    ) -> bool {
        let lines: Vec<&[u8]> = pending
            .lines
            .iter()
            .map(|(_, range)| &batch.data[range.clone()])
            .collect();
        let mut predictions = JsonPredictions::new(&mut out.results);
        let took = match catch_unwind(AssertUnwindSafe(|| {
            self.predictor
                .predict_json_lines(&lines, ctx, &mut predictions)
        })) {
            Ok(took) => took,
            Err(payload) => {
                // A panic is a refusal: `predict` then meets the batch.
                let _ = catch_unwind(AssertUnwindSafe(|| drop(payload)));
                false
            }
        };
        if took && predictions.len() == lines.len() {
            predictions.finish();
            out.predictions += lines.len() as u64;
            true
        } else {
            predictions.discard();
            false
        }
    }

    /// Predicts the pending batch and writes its items out in input order;
    /// `false` when the run is stopping.
    pub(super) fn flush(
        &self,
        pending: &mut Pending,
        batch: &RawBatch,
        ctx: &PredictContext<'_>,
        caller: &Caller,
        out: &mut BatchOutput,
        errors: &mut ErrorRecordWriter<Vec<u8>>,
    ) -> bool {
        if self.stopping() {
            return false;
        }
        // The place in the chunk of this batch's first record.
        let first = out.predictions + out.error_messages.len() as u64;
        let (began, n) = (
            Instant::now(),
            pending.instances.len() + pending.lines.len(),
        );
        let tally = Tally::default();
        if !pending.lines.is_empty() && !self.predict_lines(pending, batch, ctx, out) {
            // Refused: the lines are decoded and go the usual way.
            let slots = std::mem::take(&mut pending.slots);
            let lines = std::mem::take(&mut pending.lines);
            for slot in slots {
                match slot {
                    Slot::Line(i) => {
                        let (position, range) = lines[i].clone();
                        self.admit(pending, batch, position, range, None);
                    }
                    other => pending.slots.push(other),
                }
            }
        }
        let csv = self.plan.output_format == DataFormat::Csv;
        let records = Records {
            format: self.decoding,
            data: &batch.data,
            ranges: &pending.ranges,
        };
        pending.results.clear();
        let instances = std::mem::take(&mut pending.instances);
        if !instances.is_empty() {
            let span = 0..instances.len();
            let stopping = || self.stopping();
            let iso = Isolation {
                caller,
                records: &records,
                ctx,
                stopping: &stopping,
                fail: &|message| self.fail(message),
                spare_room: 2 * self.plan.batch_size.min(4096),
                retries: &self.executor.config.predict_retries,
                tally: &tally,
                began: Instant::now(),
                whole: span.len(),
            };
            isolate(
                &iso,
                instances,
                span,
                &mut pending.results,
                &mut pending.spare,
            );
            out.retries += tally.retries.get();
            out.deadline_hits += tally.deadline_hits.get();
            if pending.results.len() < pending.ranges.len() {
                return false;
            }
        }
        // The instance as JSON, for the error file: decoded again from its record.
        let instance_json = |i: usize| records.decode(i..i + 1).pop().map(Instance::into_json);
        let mut results = pending.results.drain(..);
        for (place, slot) in (first..).zip(pending.slots.drain(..)) {
            let (position, instance, raw, failure) = match slot {
                Slot::Damaged(e) => {
                    let failure = Failure {
                        stats: e.stats_message(),
                        full: e.message(),
                        retry: None,
                        too_large: false,
                        fatal: false,
                    };
                    let raw = e.raw.is_some().then(|| e.raw_json());
                    (e.position, None, raw, failure)
                }
                // Predicted on the fast path, written already.
                Slot::Line(_) => continue,
                Slot::Instance(i) => match results.next().expect("one result per instance") {
                    Ok(prediction) if csv => {
                        let raw = batch.data[pending.ranges[i].clone()].to_vec();
                        out.csv.push(CsvRow {
                            prediction,
                            raw,
                            source: Arc::clone(&batch.source),
                            position: pending.positions[i],
                            place,
                        });
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
            out.error_places.push(place);
        }
        drop(results);
        pending.lines.clear();
        pending.ranges.clear();
        pending.positions.clear();
        pending.bytes = 0;
        if let Some(adaptive) = caller.adaptive.as_ref().filter(|_| n > 0) {
            if tally.too_large.get() {
                adaptive.too_large(n);
            } else {
                adaptive.done(n, began.elapsed());
            }
        }
        true
    }
}

/// An item's fate before prediction: an instance (by index) or a damaged record.
pub(super) enum Slot {
    /// A JSON line not decoded yet (by index in `Pending::lines`).
    Line(usize),
    Instance(usize),
    Damaged(Box<RecordError>),
}

/// The masked data checksum of each of the chunk's records that carries a
/// stored one ([`RawItem::Record`]'s `crc`), in order, into `out`: four at
/// a time ([`masked_crc32c_4`]), as the framing thread would.
fn checksums(batch: &RawBatch, out: &mut Vec<u32>) {
    out.clear();
    let mut group: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for item in &batch.items {
        if let RawItem::Record {
            range,
            crc: Some(_),
            ..
        } = item
        {
            group[n] = &batch.data[range.clone()];
            n += 1;
            if n == 4 {
                out.extend(masked_crc32c_4(group));
                n = 0;
            }
        }
    }
    out.extend(group[..n].iter().map(|data| masked_crc32c(data)));
}

/// The batch being gathered by a worker, with the errors between its instances.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) slots: Vec<Slot>,
    /// JSON lines kept as text for the predictor's fast path: each one's
    /// position and record in the chunk's data.
    pub(super) lines: Vec<(Position, Range<usize>)>,
    pub(super) instances: Vec<Instance>,
    /// Each instance's record in the chunk's data.
    pub(super) ranges: Vec<Range<usize>>,
    pub(super) positions: Vec<Position>,
    pub(super) bytes: usize,
    pub(super) results: Vec<Result<Value, Failure>>,
    /// An empty vector with room, to hold the next batch.
    pub(super) spare: Vec<Instance>,
    /// The chunk's TFRecord data checksums, computed, in record order.
    pub(super) checksums: Vec<u32>,
}

impl Pending {
    /// Empties it for a new chunk, keeping the room it has: a safeguard, as
    /// a chunk that was not abandoned leaves it empty, and an abandoned one
    /// ends the worker.
    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.lines.clear();
        self.instances.clear();
        self.ranges.clear();
        self.positions.clear();
        self.bytes = 0;
        self.results.clear();
        self.checksums.clear();
    }
}

/// The records of a batch, to decode its instances again when a part of it
/// must be retried (the predictor owns what it was given).
pub(super) struct Records<'a> {
    pub(super) format: DataFormat,
    pub(super) data: &'a [u8],
    pub(super) ranges: &'a [Range<usize>],
}

impl Records<'_> {
    pub(super) fn decode(&self, range: Range<usize>) -> Vec<Instance> {
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
pub(super) struct Isolation<'r> {
    pub(super) caller: &'r Caller,
    /// The batch's records, decoded again for retries.
    pub(super) records: &'r Records<'r>,
    pub(super) ctx: &'r PredictContext<'r>,
    pub(super) stopping: &'r dyn Fn() -> bool,
    /// Stops the run, FAILED with this message (a fatal predictor error).
    pub(super) fail: &'r dyn Fn(String),
    /// The most room a spare vector keeps (a predictor may return vectors
    /// with far more room than predictions).
    pub(super) spare_room: usize,
    /// How transient failures are tried again.
    pub(super) retries: &'r RetryPolicy,
    pub(super) tally: &'r Tally,
    /// When the batch's first call began (for the retry policy's time bound).
    pub(super) began: Instant,
    /// The instances of the whole batch (its splits are logged below it).
    pub(super) whole: usize,
}

/// Predicts `batch` (the decoded records of `span`), splitting it in halves
/// on failure until the failing instances are alone; pushes one result per
/// instance, in order — unless `stopping` says to give up, which leaves
/// `out` short. A transient failure is tried again with the same batch, by
/// the retry policy, whose retries the batch and all its parts share; once
/// they are spent, it is split as any failure is (so that an instance that
/// brings a server down is found, in at most twice as many calls as the
/// batch has instances). The
/// allocation of the predictions' vector, emptied, is
/// left in `spare` for the next batch when it has more room than `spare`
/// (and no more than `spare_room`): a predictor that maps its batch in
/// place (as [`EchoPredictor`](crate::EchoPredictor) does) then gets the
/// same one back each time, and the worker makes no large allocation per
/// batch (with glibc's allocator, each one first sweeps up the small blocks
/// the batch before freed).
pub(super) fn isolate(
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
    let mut batch = batch;
    let failure = loop {
        match iso.caller.call(batch, iso.ctx, iso.tally, iso.stopping) {
            Ok(mut predictions) => {
                out.extend(predictions.drain(..).map(Ok));
                let room = predictions.capacity();
                if room > spare.capacity() && room <= iso.spare_room {
                    // Empty, and Value and Instance have one size: the
                    // vector is rebuilt in its own allocation.
                    *spare = predictions.into_iter().map(Instance::Json).collect();
                }
                return;
            }
            Err(failure) => match failure.retry {
                _ if failure.fatal => {
                    // The job cannot go on: no retry, no split.
                    trace::event!(error, error = %failure.full, "predictor failed fatally");
                    (iso.fail)(failure.full);
                    return;
                }
                // The retries are the whole batch's, shared by its parts.
                Some(asked)
                    if iso.tally.retries.get() < u64::from(iso.retries.max_retries)
                        && iso.began.elapsed() < iso.retries.max_elapsed =>
                {
                    let tries = iso.tally.retries.get() as u32 + 1;
                    iso.tally.retries.set(u64::from(tries));
                    let wait = iso
                        .retries
                        .backoff(tries)
                        .max(asked.unwrap_or_default())
                        .min(iso.retries.max_backoff);
                    trace::event!(
                        warn,
                        attempt = tries,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        instances = len,
                        error = %failure.full,
                        "predictor call failed; retrying"
                    );
                    if !sleep(wait, iso.stopping) {
                        return;
                    }
                    batch = iso.records.decode(span.clone());
                }
                _ => {
                    if failure.too_large {
                        iso.tally.too_large.set(true);
                    }
                    break failure;
                }
            },
        }
    };
    if len == 1 {
        trace::event!(debug, error = %failure.full, "instance failed");
        out.push(Err(failure));
        return;
    }
    // Once for the batch, not again for each of its parts (each failing
    // instance has its own "instance failed").
    if len == iso.whole {
        trace::event!(
            warn,
            instances = len,
            error = %failure.full,
            "batch failed; splitting it"
        );
    }
    let mid = span.start + len / 2;
    for half in [span.start..mid, mid..span.end] {
        let batch = iso.records.decode(half.clone());
        isolate(iso, batch, half, out, spare);
    }
}

/// Waits `wait`, or less if `stopping` says so (then `false`).
fn sleep(wait: Duration, stopping: &dyn Fn() -> bool) -> bool {
    let until = Instant::now() + wait;
    loop {
        if stopping() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(POLL));
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
    pub(super) fn predictions_vectors_become_instance_vectors_in_place() {
        assert_eq!(size_of::<Value>(), size_of::<Instance>());
        assert_eq!(align_of::<Value>(), align_of::<Instance>());
        let predictions: Vec<Value> = Vec::with_capacity(64);
        let at = predictions.as_ptr() as usize;
        let instances: Vec<Instance> = predictions.into_iter().map(Instance::Json).collect();
        assert_eq!(instances.as_ptr() as usize, at, "the same allocation");
        assert!(instances.capacity() >= 64);
    }
}
