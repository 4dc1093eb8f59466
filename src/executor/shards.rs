//! Shards across runs and processes: what an earlier run finished (resume),
//! stale output deleted, shard summaries, and [`BatchExecutor::merge`].

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::names::{OUTPUT_FILE_PREFIX, OutputFile, is_output_file_name};
use super::plan::{settings, shard_identity};
use super::{BatchExecutor, Plan, ResumeMode, RunSummary, Stop, storage_error};
use crate::error::{Error, InvalidTransition};
use crate::lock;
use crate::model::{DataFormat, Job, State};
use crate::record::ErrorStats;
use crate::state::Transition;
use crate::storage::{
    ObjectMeta, Storage, StorageError, StorageErrorKind, StorageExt, join_location,
};
use crate::trace;

impl BatchExecutor {
    /// Reads the summaries an earlier run left, decides which shards are
    /// done, and names the output files to delete (those not kept: of
    /// another plan, or of shards this run writes again), after checking
    /// that none of them is an input.
    pub(super) fn prepare_output(
        &self,
        plan: &Plan,
        settings: &Value,
    ) -> Result<(BTreeMap<usize, ShardSummary>, Vec<String>), Error> {
        let prefix = join_location(&plan.output_path, OUTPUT_FILE_PREFIX);
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
        let header = join_location(&plan.output_path, &OutputFile::CsvHeader.name(0, 1));
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
        let mut stale = Vec::new();
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
                stale.push(meta.location.clone());
            }
        }
        Ok((resumed, stale))
    }

    /// Deletes the output files `prepare_output` named, on a thread of its
    /// own, so that the run's first batches need not wait for it (a large
    /// file takes a while to unlink, a bucket a request per object): first
    /// those this run writes again, in the order it writes them. The
    /// run's writer waits for each of those before it commits it, and,
    /// where a deletion could reach an upload under way
    /// ([`Storage::upload_survives_delete`]), before it creates it, so no
    /// deletion reaches a file of this run; and for the whole deletion
    /// before the run ends.
    pub(super) fn delete_stale(&self, plan: &Plan, mut stale: Vec<String>) -> StaleDeletion {
        let order: std::collections::HashMap<&str, usize> = plan
            .shards
            .iter()
            .flat_map(|s| {
                [
                    s.results_file.as_str(),
                    s.errors_file.as_str(),
                    s.errors_stats_file.as_str(),
                    s.summary_file.as_str(),
                ]
            })
            .enumerate()
            .map(|(i, location)| (location, i))
            .collect();
        stale.sort_by_key(|location| order.get(location.as_str()).copied().unwrap_or(usize::MAX));
        let shared = Arc::new(StaleShared {
            pending: Mutex::new(stale.iter().cloned().collect()),
            deleted: Condvar::new(),
        });
        let deletion = StaleDeletion {
            shared: Arc::clone(&shared),
            thread: Mutex::new(None),
            outcome: Mutex::new(None),
        };
        if stale.is_empty() {
            return deletion;
        }
        let storage = Arc::clone(&self.storage);
        let spawned = std::thread::Builder::new().name("bp-stale".into()).spawn({
            let (storage, shared, stale) =
                (Arc::clone(&storage), Arc::clone(&shared), stale.clone());
            move || delete_all(&*storage, &stale, &shared)
        });
        match spawned {
            Ok(thread) => *lock(&deletion.thread) = Some(thread),
            // No thread: here and now.
            Err(_) => *lock(&deletion.outcome) = Some(delete_all(&*storage, &stale, &shared)),
        }
        deletion
    }
}

impl BatchExecutor {
    /// The summaries of the shards among `wanted` that an earlier run
    /// finished: a summary of this plan, and its files all there as committed.
    pub(super) fn finished_shards(
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
    /// [`ShardSelection`](super::ShardSelection)s wrote into the job's end: a `QUEUED` job becomes
    /// `SUCCEEDED` with `predictionOutput` summed over every shard (or
    /// `FAILED` if the thresholds say so), without running anything. If a
    /// shard is not finished (no summary of this plan, or its files not as
    /// committed), the job becomes `FAILED` naming the shards to run again.
    /// Merging again after that, or twice, gives the same result.
    ///
    /// # Errors
    /// Only [`InvalidTransition`] when the job is not `QUEUED`.
    pub fn merge(&self, job: &mut Job) -> Result<RunSummary, Error> {
        let context = trace::span!(
            INFO,
            "merge",
            job = job.job_id.as_deref().unwrap_or_default()
        );
        context.scope(|| self.merge_here(job))
    }

    /// [`merge`](Self::merge), inside its span.
    fn merge_here(&self, job: &mut Job) -> Result<RunSummary, Error> {
        let started = Instant::now();
        if job.state() != State::Queued {
            return Err(InvalidTransition {
                from: job.state(),
                to: State::Preparing,
            }
            .into());
        }
        job.apply(Transition::Prepare, &*self.config.clock)?;
        let mut plan = None;
        let mut totals = Totals::default();
        let stop = self.merge_prepared(job, &mut plan, &mut totals).err();
        Ok(self.finish(job, plan.as_ref(), stop, totals, started))
    }

    /// The merge of a `PREPARING` job; `Err` when a shard is missing or a
    /// threshold is crossed.
    fn merge_prepared(
        &self,
        job: &mut Job,
        plan: &mut Option<Plan>,
        totals: &mut Totals,
    ) -> Result<(), Stop> {
        let plan: &Plan = plan.insert(self.plan(job).map_err(Stop::Invalid)?);
        totals.shards = plan.shards.len();
        job.apply(Transition::Run, &*self.config.clock)
            .map_err(|e| Stop::Invalid(e.into()))?;
        let settings = settings(job, plan, &self.config);
        let prefix = join_location(&plan.output_path, OUTPUT_FILE_PREFIX);
        let existing = self
            .storage
            .list(&prefix)
            .map_err(|e| Stop::Invalid(e.into()))?;
        let ours: Vec<&ObjectMeta> = existing.iter().collect();
        let finished = self
            .finished_shards(plan, &settings, &ours, |_| true)
            .map_err(Stop::Invalid)?;
        for summary in finished.values() {
            totals.add_finished(summary);
        }
        let missing: Vec<usize> = (0..plan.shards.len())
            .filter(|i| !finished.contains_key(i))
            .collect();
        if !missing.is_empty() {
            return Err(Stop::Unfinished {
                missing,
                shards: plan.shards.len(),
            });
        }
        match self.config.max_error_count {
            Some(limit) if totals.committed_errors > limit => Err(Stop::TooManyErrors {
                failed: totals.committed_errors,
                limit,
                read: totals.committed_predictions + totals.committed_errors,
            }),
            _ => Ok(()),
        }
    }
}

/// Deletes `stale`, one after another, each then no longer pending; a
/// file already gone is no error. However it ends (an error, a panic), no
/// location is left pending, so that no writer waits forever.
fn delete_all(
    storage: &dyn Storage,
    stale: &[String],
    shared: &StaleShared,
) -> Result<(), StorageError> {
    struct Release<'a>(&'a StaleShared);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            lock(&self.0.pending).clear();
            self.0.deleted.notify_all();
        }
    }
    let _release = Release(shared);
    for location in stale {
        match storage.delete(location) {
            // Another part of the job deleted it first.
            Err(e) if e.kind() == StorageErrorKind::NotFound => {}
            other => other?,
        }
        lock(&shared.pending).remove(location);
        shared.deleted.notify_all();
    }
    Ok(())
}

/// What the deleting thread and the writer share: the locations still to
/// delete.
pub(super) struct StaleShared {
    pending: Mutex<std::collections::HashSet<String>>,
    deleted: Condvar,
}

/// The deletion of a run's stale output files.
pub(super) struct StaleDeletion {
    shared: Arc<StaleShared>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<(), StorageError>>>>,
    /// Its outcome, when it ran on the calling thread.
    outcome: Mutex<Option<Result<(), StorageError>>>,
}

impl StaleDeletion {
    /// Waits until `location` is no longer to be deleted (deleted, or the
    /// deletion ended early: its error comes from [`wait`](Self::wait)).
    pub(super) fn wait_for(&self, location: &str) {
        let pending = lock(&self.shared.pending);
        let _unused = self
            .shared
            .deleted
            .wait_while(pending, |pending| pending.contains(location))
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Waits for the whole deletion to end; its outcome (taken once: `Ok`
    /// after that).
    pub(super) fn wait(&self) -> Result<(), StorageError> {
        if let Some(thread) = lock(&self.thread).take() {
            return thread.join().unwrap_or_else(|payload| {
                Err(StorageError::new(
                    StorageErrorKind::Other,
                    "",
                    format!(
                        "deleting the earlier run's output files panicked: {}",
                        super::panic_message(&*payload)
                    ),
                ))
            });
        }
        lock(&self.outcome).take().unwrap_or(Ok(()))
    }
}

/// A committed shard's record of what it read and wrote.
#[derive(Debug, Clone)]
pub(super) struct ShardSummary {
    pub(super) identity: Value,
    pub(super) predictions: u64,
    pub(super) errors: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) node_seconds: f64,
    pub(super) stats: ErrorStats,
    pub(super) csv_header: Option<Vec<String>>,
    /// The sizes of the shard's results, errors and errors_stats files, as committed.
    pub(super) sizes: [u64; 3],
}

impl ShardSummary {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
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

    pub(super) fn parse(bytes: &[u8]) -> Option<ShardSummary> {
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

    pub(super) fn matches(&self, identity: Value) -> bool {
        self.identity == identity
    }
}

#[derive(Default)]
pub(super) struct Totals {
    pub(super) shards: usize,
    pub(super) shards_resumed: usize,
    pub(super) committed_predictions: u64,
    pub(super) committed_errors: u64,
    pub(super) committed_stats: ErrorStats,
    pub(super) records_read: u64,
    pub(super) node_seconds: f64,
    /// This run's predictor calls tried again, and past the batch deadline.
    pub(super) retries: u64,
    pub(super) deadline_hits: u64,
}

impl Totals {
    /// Counts a shard an earlier run (or another process) finished.
    pub(super) fn add_finished(&mut self, summary: &ShardSummary) {
        self.shards_resumed += 1;
        self.committed_predictions += summary.predictions;
        self.committed_errors += summary.errors;
        self.committed_stats.merge(&summary.stats);
        self.node_seconds += summary.node_seconds;
        self.records_read += summary.records;
    }
}
