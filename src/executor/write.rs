//! The writing thread: results in input order, each shard's files
//! committed when it is complete, its summary last.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};

use serde_json::Value;

use super::Stop;
use super::names::OutputFile;
use super::plan::shard_identity;
use super::progress::{Progress, ShardProgress};
use super::shards::{ShardSummary, Totals};
use super::shared::{BatchOutput, CsvRow, Event, POLL, Run};
use crate::record::{
    CsvResultWriter, CsvRowError, CsvWriteError, ErrorRecordWriter, ErrorStats, Instance,
    csv_header_bytes, decode,
};
use crate::storage::{ObjectWriter, Storage, StorageError, StorageExt, join_location};
use crate::trace;

/// An open shard's files.
pub(super) struct OpenShard {
    pub(super) index: usize,
    pub(super) results: Box<dyn ObjectWriter>,
    pub(super) errors: Box<dyn ObjectWriter>,
    pub(super) stats: ErrorStats,
    pub(super) predictions: u64,
    pub(super) errors_count: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) node_seconds: f64,
}

/// The writing side, on the calling thread: puts events back in input
/// order, writes and commits shards, keeps the counts.
pub(super) struct Writer<'r, 'a> {
    pub(super) run: &'r Run<'a>,
    pub(super) totals: &'r mut Totals,
    pub(super) progress: Vec<ShardProgress>,
    pub(super) csv_header: Option<Vec<String>>,
    pub(super) open: Option<OpenShard>,
    pub(super) observer_failed: std::cell::Cell<bool>,
}

impl<'r, 'a> Writer<'r, 'a> {
    pub(super) fn new(
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

    /// Writes and commits the shards as their events come; then, however
    /// that ended, waits for the stale files' deletion.
    pub(super) fn write(
        mut self,
        events: Receiver<(u64, Event)>,
        tokens: SyncSender<()>,
    ) -> Option<Stop> {
        let stop = self.write_events(events, tokens);
        let deleted = Self::stale_deleted(self.run).err();
        stop.or(deleted)
    }

    /// Waits for the whole deletion of the earlier run's stale files (it
    /// runs beside the first batches); its error, if it failed.
    fn stale_deleted(run: &Run<'_>) -> Result<(), Stop> {
        run.stale
            .wait()
            .map_err(|e| Stop::Invalid(super::storage_error(e)))
    }

    fn write_events(
        &mut self,
        events: Receiver<(u64, Event)>,
        tokens: SyncSender<()>,
    ) -> Option<Stop> {
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

    pub(super) fn handle(&mut self, event: Event) -> Result<(), Stop> {
        match event {
            Event::ShardStart { shard } => self.start(shard),
            Event::Batch(batch) => self.batch(batch),
            Event::ShardEnd { shard } => self.end(shard),
            Event::Fatal(message) => Err(Stop::Failed(message)),
        }
    }

    pub(super) fn start(&mut self, index: usize) -> Result<(), Stop> {
        let shard = &self.run.plan.shards[index];
        let storage = &self.run.executor.storage;
        let create = |location: &str| {
            // Its stale namesake deleted first where a deletion could
            // reach the upload under way (Azure's blocks).
            if !storage.upload_survives_delete(location) {
                self.run.stale.wait_for(location);
            }
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

    pub(super) fn batch(&mut self, mut batch: BatchOutput) -> Result<(), Stop> {
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
            // errors take their places among the chunk's other errors.
            let mut errors = ErrorRecordWriter::new(Vec::new());
            let mut rows: Option<CsvResultWriter<Vec<u8>>> = None;
            let mut row_error_places = Vec::new();
            for CsvRow {
                prediction,
                raw,
                source,
                position,
                place,
            } in batch.csv.drain(..)
            {
                if self.csv_header.is_none()
                    && let Value::Object(map) = &prediction
                    && !map.is_empty()
                {
                    let header: Vec<String> = map.keys().cloned().collect();
                    let location =
                        join_location(&plan.output_path, &OutputFile::CsvHeader.name(0, 1));
                    self.run.stale.wait_for(&location);
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
                        let instance = decode(self.run.decoding, &raw)
                            .ok()
                            .map(Instance::into_json);
                        let _ = errors.write(&source, &position, instance, None, &message);
                        batch.error_messages.push(message);
                        row_error_places.push(place);
                        batch.predictions -= 1;
                    }
                    Err(CsvWriteError::Io(e)) => {
                        return Err(write_failed("results", &shard.results_file, e));
                    }
                }
            }
            if !row_error_places.is_empty() {
                merge_errors(&mut batch, &row_error_places, &errors.into_inner());
            }
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
        // What came before this chunk, for the error limit.
        let errors_before = self.totals.committed_errors + open.errors_count;
        debug_assert_eq!(batch.error_places.len(), batch.error_messages.len());
        let read_before = self.totals.committed_predictions + open.predictions + errors_before;
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
        self.totals.retries += batch.retries;
        self.totals.deadline_hits += batch.deadline_hits;
        let progress = &mut self.progress[open.index];
        progress.records += batch.records;
        progress.predictions += batch.predictions;
        progress.errors += failed;
        progress.bytes += batch.bytes;
        self.report();
        if let Some(limit) = self.run.executor.config.max_error_count
            && errors_before + failed > limit
        {
            // Stopped at the record whose failure passed the limit, wherever
            // the chunks happened to end; before this chunk when the
            // resumed shards had passed it already.
            let past = usize::try_from(limit.saturating_sub(errors_before)).unwrap_or(usize::MAX);
            let (failed, read) = match batch.error_places.get(past) {
                Some(place) if errors_before <= limit => (limit + 1, read_before + place + 1),
                _ => (errors_before, read_before),
            };
            return Err(Stop::TooManyErrors {
                failed,
                limit,
                read,
            });
        }
        Ok(())
    }

    pub(super) fn end(&mut self, index: usize) -> Result<(), Stop> {
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
        // No deletion may reach a file once committed.
        for location in [
            &shard.errors_file,
            &shard.errors_stats_file,
            &shard.results_file,
            &shard.summary_file,
        ] {
            self.run.stale.wait_for(location);
        }
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
            trace::event!(warn, shard = index, error = %e, "shard output not committed");
            return Err(Stop::Failed(format!("cannot write output: {e}")));
        }
        trace::event!(
            info,
            shard = index,
            predictions = summary.predictions,
            errors = summary.errors,
            records = summary.records,
            "shard committed"
        );
        self.totals.committed_predictions += summary.predictions;
        self.totals.committed_errors += summary.errors;
        self.totals.committed_stats.merge(&summary.stats);
        self.progress[index].done = true;
        self.report();
        Ok(())
    }

    pub(super) fn report(&self) {
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
            retries: self.totals.retries,
            deadline_hits: self.totals.deadline_hits,
        };
        if catch_unwind(AssertUnwindSafe(|| observer.on_progress(&progress))).is_err() {
            self.observer_failed.set(true);
        }
    }
}

/// Puts a chunk's CSV row errors (each one's place among the chunk's
/// records, and their error lines, in order) among the worker's errors, so
/// that the errors file keeps the input order whatever the chunks.
fn merge_errors(batch: &mut BatchOutput, row_places: &[u64], row_lines: &[u8]) {
    let worker_places = std::mem::take(&mut batch.error_places);
    let worker_lines = std::mem::take(&mut batch.error_lines);
    let mut worker = worker_places
        .into_iter()
        .zip(worker_lines.split_inclusive(|&b| b == b'\n'))
        .peekable();
    let mut rows = row_places
        .iter()
        .copied()
        .zip(row_lines.split_inclusive(|&b| b == b'\n'))
        .peekable();
    loop {
        let next = match (worker.peek(), rows.peek()) {
            (Some(w), Some(r)) if w.0 < r.0 => worker.next(),
            (Some(_), None) => worker.next(),
            (_, Some(_)) => rows.next(),
            (None, None) => break,
        };
        let (place, line) = next.expect("looked at first");
        batch.error_places.push(place);
        batch.error_lines.extend_from_slice(line);
    }
}
