//! Planning: the job's input patterns expanded, the guard against a job
//! reading its own output, the files cut into shards and byte ranges, and
//! the fingerprints that tell a finished shard from a changed one.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use serde_json::{Value, json};

use super::names::OutputFile;
use super::overlap;
use super::{BatchExecutor, ExecutorConfig, Stop, storage_error};
use crate::error::{Error, ValidationError, Violation};
use crate::model::{DataFormat, Job};
use crate::predict::CancelHandle;
use crate::storage::{ObjectMeta, Storage, StorageErrorKind, StorageExt, glob, join_location};

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

/// The most byte ranges one file is split into.
pub(super) const MAX_RANGES_PER_FILE: u64 = 10_000;

impl BatchExecutor {
    /// A dry run: validates the job, expands its input patterns, and tells
    /// which files, shards and output files it would have, without loading
    /// the model or writing anything.
    ///
    /// # Errors
    /// The job's [`ValidationError`] (also for
    /// input patterns that can match the job's own output files, compared
    /// through the storage), or the storage's error for a pattern that
    /// matches nothing or cannot be listed.
    pub fn plan(&self, job: &Job) -> Result<Plan, Error> {
        self.plan_until(job, None).map_err(|stop| match stop {
            Stop::Invalid(e) => e,
            // Without a handle nothing cancels; a stop of another kind is not planning's.
            other => Error::failed_precondition(format!("planning stopped: {other:?}")),
        })
    }

    /// [`plan`](Self::plan), stopping with [`Stop::Cancelled`] between input
    /// patterns once `cancel` is used, so a job with many patterns (each a
    /// listing) does not hold its runner after a cancel. A pattern given
    /// twice is expanded once.
    pub(super) fn plan_until(
        &self,
        job: &Job,
        cancel: Option<&CancelHandle>,
    ) -> Result<Plan, Stop> {
        job.validate().map_err(|e| Stop::Invalid(e.into()))?;
        let input = job.prediction_input.as_ref().expect("validated");
        let given_output_path = input.output_path.as_deref().expect("validated");
        let output_path = given_output_path.trim_end_matches('/').to_owned();
        self.refuse_own_output(&input.input_paths, given_output_path, None)
            .map_err(Stop::Invalid)?;
        let inputs = self.expand_inputs(&input.input_paths, cancel)?;
        self.refuse_own_output(&input.input_paths, given_output_path, Some(&inputs))
            .map_err(Stop::Invalid)?;
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
                let at = |kind: OutputFile| join_location(&output_path, &kind.name(index, count));
                PlannedShard {
                    index,
                    inputs,
                    byte_range,
                    bytes,
                    results_file: at(if output_format == DataFormat::Csv {
                        OutputFile::CsvResults
                    } else {
                        OutputFile::Results
                    }),
                    errors_stats_file: at(OutputFile::ErrorsStats),
                    errors_file: at(OutputFile::Errors),
                    summary_file: at(OutputFile::Summary),
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

    /// The objects `patterns` match, each once, in order of location, as
    /// [`StorageExt::expand`] gives them, but one distinct pattern at a
    /// time, with `cancel` checked before each and between the pages of
    /// each listing.
    fn expand_inputs(
        &self,
        patterns: &[String],
        cancel: Option<&CancelHandle>,
    ) -> Result<Vec<ObjectMeta>, Stop> {
        let mut seen_patterns: HashSet<&str> = HashSet::new();
        let mut found: BTreeMap<String, ObjectMeta> = BTreeMap::new();
        let mut keys: HashSet<String> = HashSet::new();
        for pattern in patterns {
            if !seen_patterns.insert(pattern.as_str()) {
                continue;
            }
            let stop = || cancel.is_some_and(CancelHandle::is_cancelled);
            let matched = self
                .storage
                .expand_until(std::slice::from_ref(pattern), &stop)
                .map_err(|e| match e.kind() {
                    StorageErrorKind::Cancelled => Stop::Cancelled,
                    _ => Stop::Invalid(storage_error(e)),
                })?;
            for meta in matched {
                if keys.insert(self.storage.object_key(&meta.location)) {
                    found.insert(meta.location.clone(), meta);
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// Refuses a job whose input patterns can match (or, given the objects
    /// they matched, did match) a file the job writes into its output
    /// directory, with the locations compared through the storage, so a
    /// run never reads or deletes its own output, however either is spelled.
    pub(super) fn refuse_own_output(
        &self,
        patterns: &[String],
        output_path: &str,
        matched: Option<&[ObjectMeta]>,
    ) -> Result<(), Error> {
        let storage: &dyn Storage = &*self.storage;
        let found = match matched {
            None => {
                let keys = overlap::Keys::Storage(storage);
                overlap::patterns_reaching_output(patterns, output_path, &keys).next()
            }
            Some(objects) => overlap::first_own_output(storage, objects, output_path).map(|m| {
                let i = patterns
                    .iter()
                    .position(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(&m.location)))
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
}

/// What a shard's output depends on besides its inputs.
pub(super) fn settings(job: &Job, plan: &Plan, config: &ExecutorConfig) -> Value {
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
pub(super) fn shard_identity(plan: &Plan, shard: &PlannedShard, settings: &Value) -> Value {
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
