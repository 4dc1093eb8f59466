//! The batch executor: counts, isolation of failures, determinism, storage
//! failures, cancellation, thresholds, resume, progress.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use batch_prediction::executor::ResumeMode;
use batch_prediction::predict::{CancelHandle, FaultyPredictor, PredictContext};
use batch_prediction::testing::{Fault, FaultyStorage};
use batch_prediction::{
    BatchExecutor, DataFormat, EchoPredictor, EchoResolver, ExecutorConfig, InMemoryStorage,
    Instance, Job, ManualClock, ModelVersion, PredictError, PredictionInput, Predictor, RunSummary,
    State, Storage, Transition, predictor_fn,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::data_path(&format!("tensorflow/{name}"))).unwrap()
}

/// A storage holding the JSON-lines fixture under `gs://b/in/NAME` for each name.
fn fixture_storage(names: &[&str]) -> InMemoryStorage {
    let storage = InMemoryStorage::new();
    for name in names {
        storage.put(&format!("gs://b/in/{name}"), fixture("examples.jsonl"));
    }
    storage
}

fn queued_job(format: DataFormat, patterns: &[&str], batch_size: i64, workers: i64) -> Job {
    let mut job = Job::new(
        "test_job",
        PredictionInput::new(
            format,
            patterns.iter().copied(),
            "gs://b/out",
            "local",
            ModelVersion::uri("model"),
        )
        .set_batch_size(batch_size)
        .set_max_worker_count(workers),
    );
    job.apply(Transition::Queue, &clock()).unwrap();
    job
}

fn clock() -> ManualClock {
    ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap())
}

fn resolver_for(predictor: Arc<dyn Predictor>) -> Arc<dyn batch_prediction::ModelResolver> {
    Arc::new(
        move |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
            Ok(Arc::clone(&predictor))
        },
    )
}

fn run_with(
    storage: Arc<dyn Storage>,
    predictor: Arc<dyn Predictor>,
    config: ExecutorConfig,
    job: &mut Job,
) -> RunSummary {
    BatchExecutor::new(storage, resolver_for(predictor))
        .with_config(config)
        .run(job, &CancelHandle::new())
        .unwrap()
}

/// Every file under `gs://b/out/`, by name, with its bytes.
fn outputs(storage: &InMemoryStorage) -> Vec<(String, Vec<u8>)> {
    storage
        .locations()
        .into_iter()
        .filter_map(|l| l.strip_prefix("gs://b/out/").map(str::to_owned))
        .map(|name| {
            let bytes = storage.get(&format!("gs://b/out/{name}")).unwrap();
            (name, bytes)
        })
        .collect()
}

/// [`outputs`] without the summary files, which hold times: the results and
/// errors, to compare between runs.
fn outputs_but_summaries(storage: &InMemoryStorage) -> Vec<(String, Vec<u8>)> {
    outputs(storage)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("prediction.summary"))
        .collect()
}

fn lines_of(storage: &InMemoryStorage, prefix: &str) -> Vec<String> {
    outputs(storage)
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .flat_map(|(_, bytes)| {
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The invariants every finished run must hold.
fn check_accounting(storage: &InMemoryStorage, job: &Job, summary: &RunSummary) {
    let output = job.prediction_output.as_ref().unwrap();
    let results = lines_of(storage, "prediction.results-");
    let errors = lines_of(storage, "prediction.errors-");
    assert_eq!(
        output.prediction_count(),
        results.len() as i64,
        "predictionCount = result lines"
    );
    assert_eq!(
        output.error_count(),
        errors.len() as i64,
        "errorCount = error file lines"
    );
    assert_eq!(
        summary.error_stats.total(),
        summary.error_count,
        "errors_stats adds up to errorCount"
    );
    let stats_total: u64 = lines_of(storage, "prediction.errors_stats-")
        .iter()
        .map(|l| {
            l.rsplit(", ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        stats_total, summary.error_count,
        "errors_stats files add up to errorCount"
    );
    if summary.state == State::Succeeded {
        assert_eq!(
            summary.records_read,
            summary.prediction_count + summary.error_count,
            "read = predicted + failed"
        );
    }
    // No file is half-written: every shard that has results has its summary,
    // and every summary has all its files.
    for (name, _) in outputs(storage) {
        if let Some(rest) = name.strip_prefix("prediction.results-") {
            let summary = format!("prediction.summary-{}.json", rest.trim_end_matches(".csv"));
            assert!(
                storage.get(&format!("gs://b/out/{summary}")).is_some(),
                "{name} without {summary}"
            );
        }
        if let Some(rest) = name.strip_prefix("prediction.summary-") {
            let shard = rest.trim_end_matches(".json");
            for family in ["errors", "errors_stats"] {
                let file = format!("gs://b/out/prediction.{family}-{shard}");
                assert!(storage.get(&file).is_some(), "{name} without {file}");
            }
            let results = format!("gs://b/out/prediction.results-{shard}");
            assert!(
                storage.get(&results).is_some() || storage.get(&format!("{results}.csv")).is_some(),
                "{name} without its results"
            );
        }
    }
}

#[test]
fn echo_over_tensorflow_fixtures_in_every_format() {
    let records: Value = serde_json::from_slice(&fixture("records.json")).unwrap();
    let b64: Vec<Value> = records["records_b64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"b64": r}))
        .collect();
    for (format, file) in [
        (DataFormat::Json, "examples.jsonl"),
        (DataFormat::TfRecord, "examples.tfrecord"),
        (DataFormat::TfRecordGzip, "examples.tfrecord.gz"),
    ] {
        let storage = InMemoryStorage::new();
        storage.put(&format!("gs://b/in/{file}"), fixture(file));
        let mut job = queued_job(format, &["gs://b/in/*"], 7, 2);
        let summary = run_with(
            Arc::new(storage.clone()),
            Arc::new(EchoPredictor),
            ExecutorConfig::default(),
            &mut job,
        );
        assert_eq!(
            summary.state,
            State::Succeeded,
            "{format}: {:?}",
            job.error_message
        );
        assert_eq!(
            (summary.prediction_count, summary.error_count),
            (100, 0),
            "{format}"
        );
        check_accounting(&storage, &job, &summary);
        let results: Vec<Value> = lines_of(&storage, "prediction.results-")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if format == DataFormat::Json {
            let want: Vec<Value> = String::from_utf8(fixture(file))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(results, want, "echo of JSON lines, in input order");
        } else {
            assert_eq!(
                results, b64,
                "{format}: records as {{\"b64\": …}}, in order"
            );
        }
        assert_eq!(
            storage
                .get("gs://b/out/prediction.errors_stats-00000-of-00001")
                .unwrap(),
            b""
        );
    }
}

#[test]
fn lifecycle_times_and_node_hours() {
    let storage = fixture_storage(&["a.jsonl"]);
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 10, 1);
    let clock = Arc::new(clock());
    let config = ExecutorConfig::default().with_clock(clock.clone());
    let slow = predictor_fn(|batch: Vec<Instance>, _: &_| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        Ok(batch.iter().map(|_| json!(1)).collect())
    });
    let summary = run_with(Arc::new(storage), Arc::new(slow), config, &mut job);
    assert_eq!(job.state(), State::Succeeded);
    assert!(job.start_time.is_some() && job.end_time.is_some());
    let output = job.prediction_output.as_ref().unwrap();
    assert_eq!(output.output_path.as_deref(), Some("gs://b/out"));
    assert!(
        output.node_hours() > 0.0 && summary.node_seconds >= 0.02,
        "{}",
        summary.node_seconds
    );
    assert_eq!(job.to_json()["predictionOutput"]["predictionCount"], "100");
    // Only a QUEUED job runs.
    let err = BatchExecutor::new(Arc::new(InMemoryStorage::new()), Arc::new(EchoResolver))
        .run(&mut job, &CancelHandle::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid state transition from SUCCEEDED to PREPARING"
    );
}

/// Instances whose `id` is in the set fail (error, panic or miscount); the
/// rest are predicted.
#[test]
fn failing_instances_are_isolated_and_the_rest_predicted() {
    let bad_ids = [3u64, 4, 17, 50, 99];
    let is_bad =
        move |i: &Instance| bad_ids.contains(&i.to_json()["id"].as_u64().unwrap_or(u64::MAX));
    let cases: Vec<(Arc<dyn Predictor>, &str)> = vec![
        (
            Arc::new(FaultyPredictor::new(EchoPredictor).fail_when(is_bad)),
            "injected failure",
        ),
        (
            Arc::new(FaultyPredictor::new(EchoPredictor).panic_when(is_bad)),
            "predictor panicked: injected panic",
        ),
        (
            Arc::new(FaultyPredictor::new(EchoPredictor).miscount_when(is_bad)),
            "wrong number of predictions: expected 1, got 0",
        ),
    ];
    for (predictor, message) in cases {
        let storage = fixture_storage(&["a.jsonl"]);
        let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 16, 2);
        let summary = run_with(
            Arc::new(storage.clone()),
            predictor,
            ExecutorConfig::default(),
            &mut job,
        );
        assert_eq!(
            summary.state,
            State::Succeeded,
            "record errors do not fail the job by default"
        );
        assert_eq!(
            (summary.prediction_count, summary.error_count),
            (95, 5),
            "{message}"
        );
        check_accounting(&storage, &job, &summary);
        let predicted: Vec<u64> = lines_of(&storage, "prediction.results-")
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            predicted,
            (0..100)
                .filter(|i| !bad_ids.contains(i))
                .collect::<Vec<_>>()
        );
        let failed: Vec<Value> = lines_of(&storage, "prediction.errors-")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let failed_ids: Vec<u64> = failed
            .iter()
            .map(|e| e["instance"]["id"].as_u64().unwrap())
            .collect();
        assert_eq!(failed_ids, bad_ids);
        assert_eq!(failed[0]["source"], "gs://b/in/a.jsonl");
        assert_eq!(failed[0]["line"], 4);
        assert_eq!(failed[0]["error"], message);
        assert_eq!(
            String::from_utf8(
                storage
                    .get("gs://b/out/prediction.errors_stats-00000-of-00001")
                    .unwrap()
            )
            .unwrap(),
            format!("('{message}', 5)\n")
        );
    }
}

/// The workers check data checksums four records at a time: a bad one is
/// found in whichever place of its group of four it sits, or in the group
/// left over at a chunk's end, and nothing else is flagged.
#[test]
fn a_bad_data_checksum_is_found_in_every_place_of_a_group() {
    let records: Vec<Vec<u8>> = (0..23u8)
        .map(|i| {
            (0..(5 + 7 * usize::from(i) % 61))
                .map(|b| b as u8 ^ i)
                .collect()
        })
        .collect();
    let bad = [0usize, 5, 10, 15, 20, 21, 22];
    let mut w = batch_prediction::record::TfRecordWriter::new(Vec::new());
    let mut offsets = Vec::new();
    let mut at = 0;
    for r in &records {
        offsets.push(at);
        w.write(r).unwrap();
        at += r.len() + 16;
    }
    let mut file = w.into_inner();
    for &k in &bad {
        file[offsets[k] + 12 + records[k].len() / 2] ^= 0x10;
    }
    for workers in [1, 2] {
        let storage = InMemoryStorage::new();
        storage.put("gs://b/in/a.tfrecord", file.clone());
        let mut job = queued_job(DataFormat::TfRecord, &["gs://b/in/a.tfrecord"], 6, workers);
        let summary = run_with(
            Arc::new(storage.clone()),
            Arc::new(EchoPredictor),
            ExecutorConfig::default(),
            &mut job,
        );
        assert_eq!(summary.state, State::Succeeded);
        assert_eq!((summary.prediction_count, summary.error_count), (16, 7));
        check_accounting(&storage, &job, &summary);
        let flagged: Vec<(u64, u64)> = lines_of(&storage, "prediction.errors-")
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .inspect(|e| {
                let message = e["error"].as_str().unwrap();
                assert!(message.starts_with("data checksum mismatch"), "{e}");
            })
            .map(|e| (e["record"].as_u64().unwrap(), e["byte"].as_u64().unwrap()))
            .collect();
        let want: Vec<(u64, u64)> = bad.iter().map(|&k| (k as u64, offsets[k] as u64)).collect();
        assert_eq!(flagged, want, "{workers} workers");
    }
}

#[test]
fn damaged_inputs_are_counted_and_reported_not_fatal() {
    let storage = InMemoryStorage::new();
    let mut damaged = fixture("examples.tfrecord");
    // Flip a data byte of record 2 and cut the file inside record 90.
    damaged[2 * 64 + 20] ^= 0xFF;
    let len = u64::from_le_bytes(damaged[..8].try_into().unwrap()) as usize;
    damaged.truncate(90 * (len + 16) + 20);
    storage.put("gs://b/in/a.tfrecord", damaged);
    storage.put("gs://b/in/b.tfrecord", fixture("examples.tfrecord"));
    let mut job = queued_job(DataFormat::TfRecord, &["gs://b/in/*.tfrecord"], 8, 2);
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(summary.state, State::Succeeded);
    // 89 good records + 1 bad checksum + 1 truncated frame from a; 100 from b.
    assert_eq!(
        (
            summary.prediction_count,
            summary.error_count,
            summary.records_read
        ),
        (189, 2, 191)
    );
    check_accounting(&storage, &job, &summary);
    let errors: Vec<Value> = lines_of(&storage, "prediction.errors-")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("data checksum mismatch"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0]["record"], 2);
    // The workers check data checksums (off the framing thread): the error
    // is exactly the one the reader itself gives for that record.
    let from_reader = batch_prediction::record::InstanceReader::new(
        DataFormat::TfRecord,
        "gs://b/in/a.tfrecord",
        storage.open("gs://b/in/a.tfrecord").unwrap(),
        batch_prediction::record::ReadOptions::default(),
    )
    .unwrap()
    .find_map(Result::err)
    .unwrap();
    assert_eq!(errors[0]["error"], from_reader.message());
    assert_eq!(errors[0]["byte"], from_reader.position.byte);
    assert_eq!(
        errors[1]["error"],
        "file ends inside a record; 20 bytes left unread"
    );
    assert_eq!(errors[1]["instance"], Value::Null);
}

/// A predictor that sleeps a random-ish time, to shake the threads' timing.
fn jittery() -> Arc<dyn Predictor> {
    let n = AtomicU64::new(0);
    Arc::new(predictor_fn(move |batch: Vec<Instance>, _: &_| {
        let k = n.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_micros((k * 7919) % 3000));
        if batch
            .iter()
            .any(|i| i.to_json()["id"].as_u64().is_some_and(|id| id % 13 == 0))
        {
            return Err(PredictError::new("id divisible by 13"));
        }
        Ok(batch
            .iter()
            .map(|i| json!({"echo": i.to_json(), "n": !batch.is_empty()}))
            .collect())
    }))
}

#[test]
fn output_is_byte_identical_whatever_the_threads() {
    // Damaged lines in the input, and (second pass) chunks cut by a byte limit.
    let mut damaged = fixture("examples.jsonl");
    damaged.extend_from_slice(b"{oops\n\xff\n");
    for max_batch_bytes in [None, Some(300)] {
        let mut runs = Vec::new();
        for (threads, workers) in [(1, 1), (2, 2), (4, 4), (8, 3)] {
            let storage = InMemoryStorage::new();
            for i in 0..5 {
                storage.put(&format!("gs://b/in/part-{i}.jsonl"), damaged.clone());
            }
            let mut job = queued_job(DataFormat::Json, &["gs://b/in/part-*"], 6, workers);
            let mut config = ExecutorConfig::default()
                .with_max_threads(threads)
                .with_shard_target_bytes(9000);
            if let Some(bytes) = max_batch_bytes {
                config = config.with_max_batch_bytes(bytes);
            }
            let summary = run_with(Arc::new(storage.clone()), jittery(), config, &mut job);
            assert_eq!(summary.state, State::Succeeded);
            assert_eq!(summary.shards, 3, "9000-byte shards over five 4.7 kB files");
            assert_eq!(summary.records_read, 5 * 102);
            check_accounting(&storage, &job, &summary);
            runs.push(outputs_but_summaries(&storage));
        }
        assert_eq!(runs[0].len(), 9, "3 shards × results, errors, errors_stats");
        for run in &runs[1..] {
            assert_eq!(run, &runs[0]);
        }
    }
}

/// `max_batch_bytes` counts the records' bytes only: not the TFRecord
/// framing, line endings or blank lines the framing thread copies along
/// with runs of records.
#[test]
fn batch_byte_limit_counts_record_bytes_only() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sizes);
    let recorder: Arc<dyn Predictor> =
        Arc::new(predictor_fn(move |batch: Vec<Instance>, _: &_| {
            seen.lock().unwrap().push(batch.len());
            Ok(batch.into_iter().map(Instance::into_json).collect())
        }));
    let mut frames = batch_prediction::record::TfRecordWriter::new(Vec::new());
    for i in 0..200u32 {
        frames.write(&i.to_le_bytes()).unwrap();
    }
    let lines = "{}\n\n  \n".repeat(20);
    for (format, data, batch_size, limit, want) in [
        (
            DataFormat::TfRecord,
            frames.into_inner(),
            64,
            256,
            vec![64, 64, 64, 8],
        ),
        (DataFormat::Json, lines.into_bytes(), 10, 8, vec![4; 5]),
    ] {
        sizes.lock().unwrap().clear();
        let storage = InMemoryStorage::new();
        storage.put("gs://b/in/f", data);
        let mut job = queued_job(format, &["gs://b/in/f"], batch_size, 1);
        let config = ExecutorConfig::default().with_max_batch_bytes(limit);
        let summary = run_with(
            Arc::new(storage.clone()),
            Arc::clone(&recorder),
            config,
            &mut job,
        );
        assert_eq!(summary.state, State::Succeeded, "{format}");
        assert_eq!(*sizes.lock().unwrap(), want, "{format}");
    }
}

/// An echo job over two one-file shards whose storage fails `fault` on
/// locations containing `pattern`; returns the storage behind the faults.
fn echo_two_shards_with(fault: Fault, pattern: &str) -> (InMemoryStorage, Job, RunSummary) {
    let inner = fixture_storage(&["1.jsonl", "2.jsonl"]);
    let storage = Arc::new(FaultyStorage::new(inner.clone()).fail(fault, pattern));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    let config = ExecutorConfig::default().with_shard_target_bytes(1);
    let summary = run_with(storage.clone(), Arc::new(EchoPredictor), config, &mut job);
    assert!(
        storage.faults_hit() >= 1,
        "{fault:?} on {pattern} was injected"
    );
    (inner, job, summary)
}

#[test]
fn unreadable_and_missing_inputs_fail_the_job_naming_the_file() {
    // A pattern that matches nothing.
    let storage = InMemoryStorage::new();
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*.jsonl"], 10, 1);
    let summary = run_with(
        Arc::new(storage),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("no object matches \"gs://b/in/*.jsonl\"")
    );
    assert_eq!(
        job.prediction_output.as_ref().unwrap().prediction_count(),
        0
    );

    // A file that cannot be opened, or whose reading fails midway (a storage
    // failure, not damage in the file), in the second of two shards: the job
    // fails naming the file, and the first shard stays committed.
    for fault in [Fault::Open, Fault::ReadAfter(100)] {
        let (inner, job, summary) = echo_two_shards_with(fault, "in/2.jsonl");
        match fault {
            Fault::Open => {
                assert_eq!(summary.state, State::Failed, "{fault:?}");
                assert_eq!(
                    job.error_message.as_deref(),
                    Some("injected open failure \"gs://b/in/2.jsonl\"")
                );
            }
            _ => {
                assert_eq!(summary.state, State::Failed, "{fault:?}");
                assert_eq!(
                    job.error_message.as_deref(),
                    Some("cannot read \"gs://b/in/2.jsonl\": read error: injected read failure")
                );
                assert_eq!(
                    (summary.prediction_count, summary.error_count),
                    (100, 0),
                    "shard 0 only"
                );
            }
        }
        check_accounting(&inner, &job, &summary);
        assert!(
            inner
                .get("gs://b/out/prediction.results-00000-of-00002")
                .is_some(),
            "{fault:?}: shard 0 committed"
        );
    }
}

#[test]
fn unwritable_output_fails_the_job_and_leaves_no_partial_file() {
    for (fault, pattern, message) in [
        (
            Fault::Create,
            "prediction.results-00001",
            "cannot write output: injected create failure \"gs://b/out/prediction.results-00001-of-00002\"",
        ),
        (
            Fault::WriteAfter(50),
            "prediction.results-00001",
            "cannot write output: cannot write results \"gs://b/out/prediction.results-00001-of-00002\": injected write failure",
        ),
        (
            Fault::Commit,
            "prediction.errors-00001",
            "cannot write output: injected commit failure \"gs://b/out/prediction.errors-00001-of-00002\"",
        ),
    ] {
        let (inner, job, summary) = echo_two_shards_with(fault, pattern);
        assert_eq!(summary.state, State::Failed, "{fault:?}");
        assert_eq!(job.error_message.as_deref(), Some(message), "{fault:?}");
        assert_eq!(
            (summary.prediction_count, summary.error_count),
            (100, 0),
            "{fault:?}: shard 0 only"
        );
        check_accounting(&inner, &job, &summary);
        assert!(
            inner
                .get("gs://b/out/prediction.summary-00001-of-00002.json")
                .is_none()
        );
    }
}

#[test]
fn model_load_failure_fails_the_job_with_the_loaders_message() {
    let storage = fixture_storage(&["a.jsonl"]);
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let resolver = Arc::new(
        |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
            Err(PredictError::new("no such file: model/model.onnx"))
        },
    );
    let summary = BatchExecutor::new(Arc::new(storage.clone()), resolver)
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("model \"model\" failed to load: no such file: model/model.onnx")
    );
    assert!(outputs(&storage).is_empty(), "nothing written");
}

#[test]
fn error_thresholds_fail_the_job_with_the_numbers() {
    let failing = || -> Arc<dyn Predictor> {
        Arc::new(
            FaultyPredictor::new(EchoPredictor)
                .fail_when(|i| i.to_json()["id"].as_u64().is_some_and(|id| id % 10 == 0)),
        )
    };
    let storage = InMemoryStorage::new();
    for i in 0..3 {
        storage.put(&format!("gs://b/in/{i}.jsonl"), fixture("examples.jsonl"));
    }
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let config = ExecutorConfig::default()
        .with_max_error_count(5)
        .with_shard_target_bytes(1);
    let summary = run_with(Arc::new(storage.clone()), failing(), config, &mut job);
    assert_eq!(summary.state, State::Failed);
    assert!(
        summary.records_read < 300,
        "stopped early: {} records read",
        summary.records_read
    );
    assert_eq!(
        (summary.prediction_count, summary.error_count),
        (0, 0),
        "no shard completed"
    );
    assert_eq!(
        job.error_message.as_deref(),
        Some("too many errors: 6 instances failed, over the limit of 5 (51 instances read)"),
        "stopped at the 6th failure (id 50), wherever the chunks ended"
    );
    check_accounting(&storage, &job, &summary);

    // CSV rows that cannot be written count in their places too: ids 0 and
    // 10 fail in the predictor, 5 and 15 have other columns (the writer
    // finds those after the worker's errors of the same chunk).
    let storage = InMemoryStorage::new();
    let lines: String = (0..100)
        .map(|i| match i % 10 {
            5 => format!("{{\"id\": {i}, \"z\": 1}}\n"),
            _ => format!("{{\"id\": {i}, \"x\": 1}}\n"),
        })
        .collect();
    storage.put("gs://b/in/a.jsonl", lines.into_bytes());
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 20, 1);
    job.prediction_input.as_mut().unwrap().output_data_format = Some(DataFormat::Csv);
    let config = ExecutorConfig::default().with_max_error_count(2);
    let summary = run_with(Arc::new(storage.clone()), failing(), config, &mut job);
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("too many errors: 3 instances failed, over the limit of 2 (11 instances read)")
    );

    let storage = fixture_storage(&["a.jsonl"]);
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let summary = run_with(
        Arc::new(storage.clone()),
        failing(),
        ExecutorConfig::default().with_max_error_ratio(0.05),
        &mut job,
    );
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("error ratio 0.1000 (10 of 100 instances failed) is over the limit of 0.05")
    );
    assert_eq!(
        summary.prediction_count, 90,
        "the files are complete; only the verdict changes"
    );
    check_accounting(&storage, &job, &summary);
}

/// A limit passed already by the shards a run resumes stops it at its first
/// chunk, counting what those shards hold.
#[test]
fn an_error_limit_passed_by_resumed_shards_says_so() {
    let failing = || -> Arc<dyn Predictor> {
        Arc::new(
            FaultyPredictor::new(EchoPredictor)
                .fail_when(|i| i.to_json()["id"].as_u64().is_some_and(|id| id % 10 == 0)),
        )
    };
    let storage = fixture_storage(&["a.jsonl", "b.jsonl"]);
    let config = ExecutorConfig::default().with_shard_target_bytes(1);
    // The first shard alone, with no limit: 10 of its 100 instances fail.
    let first = batch_prediction::executor::ShardSelection::new(0, 2).unwrap();
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let summary = run_with(
        Arc::new(storage.clone()),
        failing(),
        config.clone().with_shard_selection(first),
        &mut job,
    );
    assert_eq!((summary.state, summary.error_count), (State::Succeeded, 10));
    // Then the whole job, resumed, under a limit of 5.
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let summary = run_with(
        Arc::new(storage.clone()),
        failing(),
        config.with_max_error_count(5),
        &mut job,
    );
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("too many errors: 10 instances failed, over the limit of 5 (100 instances read)")
    );
}

/// CSV rows that cannot be written take their places among the other
/// errors of their chunk: the errors file keeps the input order.
#[test]
fn csv_row_errors_keep_their_places_in_the_errors_file() {
    let (storage, job, summary) = echo_to_csv(
        b"{\"id\": 1, \"x\": 1}\n{\"id\": 2, \"y\": 1}\nbad\n7\n{\"id\": 5, \"x\": 5}\n[\n",
        6,
    );
    assert_eq!(
        (summary.prediction_count, summary.error_count),
        (2, 4),
        "{:?}",
        job.error_message
    );
    let lines: Vec<u64> = lines_of(&storage, "prediction.errors-")
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lines, [2, 3, 4, 6], "in input order");
}

#[test]
fn cancel_stops_at_a_batch_boundary_and_keeps_only_complete_shards() {
    let inner = InMemoryStorage::new();
    for i in 0..4 {
        inner.put(&format!("gs://b/in/{i}.jsonl"), fixture("examples.jsonl"));
    }
    let cancel = CancelHandle::new();
    let calls = Arc::new(AtomicU64::new(0));
    let predictor = {
        let cancel = cancel.clone();
        let calls = Arc::clone(&calls);
        predictor_fn(move |batch: Vec<Instance>, _: &_| {
            // Cancel from "another thread" once the second shard is under way.
            if calls.fetch_add(1, Ordering::SeqCst) == 15 {
                cancel.cancel();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(batch.iter().map(Instance::to_json).collect())
        })
    };
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    let summary = BatchExecutor::new(Arc::new(inner.clone()), resolver_for(Arc::new(predictor)))
        .with_config(ExecutorConfig::default().with_shard_target_bytes(1))
        .run(&mut job, &cancel)
        .unwrap();
    assert_eq!(summary.state, State::Cancelled);
    assert_eq!(
        job.error_message.as_deref(),
        Some("Job cancelled by request")
    );
    assert!(
        calls.load(Ordering::SeqCst) < 40,
        "stopped early: {} calls",
        calls.load(Ordering::SeqCst)
    );
    assert_eq!(
        summary.prediction_count % 100,
        0,
        "whole shards only: {}",
        summary.prediction_count
    );
    assert!(summary.prediction_count < 400);
    check_accounting(&inner, &job, &summary);

    // Cancelled before it starts running.
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    let summary = BatchExecutor::new(Arc::new(inner), Arc::new(EchoResolver))
        .run(&mut job, &cancel)
        .unwrap();
    assert_eq!(
        (summary.state, summary.prediction_count),
        (State::Cancelled, 0)
    );
}

#[test]
fn resume_skips_finished_shards_and_redoes_changed_ones() {
    let inner = InMemoryStorage::new();
    for i in 0..3 {
        inner.put(&format!("gs://b/in/{i}.jsonl"), fixture("examples.jsonl"));
    }
    let config = ExecutorConfig::default().with_shard_target_bytes(1);
    let calls = Arc::new(FaultyPredictor::new(EchoPredictor));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    run_with(
        Arc::new(inner.clone()),
        calls.clone(),
        config.clone(),
        &mut job,
    );
    assert_eq!(calls.calls(), 30);
    let fresh = outputs(&inner);

    // Lose shard 1 (as a crash before its summary would): only it runs again.
    inner
        .delete("gs://b/out/prediction.summary-00001-of-00003.json")
        .unwrap();
    inner
        .delete("gs://b/out/prediction.results-00001-of-00003")
        .unwrap();
    let calls = Arc::new(FaultyPredictor::new(EchoPredictor));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    let summary = run_with(
        Arc::new(inner.clone()),
        calls.clone(),
        config.clone(),
        &mut job,
    );
    assert_eq!(calls.calls(), 10, "one shard of ten batches");
    assert_eq!(
        (summary.shards_resumed, summary.prediction_count),
        (2, 300),
        "counts of the whole job"
    );
    let resumed = outputs_but_summaries(&inner);
    let fresh_results: Vec<_> = fresh
        .iter()
        .filter(|(n, _)| !n.starts_with("prediction.summary"))
        .cloned()
        .collect();
    assert_eq!(resumed, fresh_results, "the same files as one run");
    check_accounting(&inner, &job, &summary);

    // A changed input is never taken for a finished one.
    inner.put("gs://b/in/2.jsonl", b"{\"id\": 1}\n".to_vec());
    let calls = Arc::new(FaultyPredictor::new(EchoPredictor));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    let summary = run_with(
        Arc::new(inner.clone()),
        calls.clone(),
        config.clone(),
        &mut job,
    );
    assert_eq!(
        (
            calls.calls(),
            summary.shards_resumed,
            summary.prediction_count
        ),
        (1, 2, 201)
    );

    // A fresh run does everything again, and removes files of other plans.
    inner.put(
        "gs://b/out/prediction.results-00007-of-00009",
        b"stale".to_vec(),
    );
    let calls = Arc::new(FaultyPredictor::new(EchoPredictor));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 2);
    let summary = run_with(
        Arc::new(inner.clone()),
        calls.clone(),
        config.with_resume(ResumeMode::Fresh),
        &mut job,
    );
    assert_eq!((calls.calls(), summary.shards_resumed), (21, 0));
    assert!(
        inner
            .get("gs://b/out/prediction.results-00007-of-00009")
            .is_none()
    );
    check_accounting(&inner, &job, &summary);
}

/// The echo job over `lines` with CSV output, in batches of `batch_size`.
fn echo_to_csv(lines: &[u8], batch_size: i64) -> (InMemoryStorage, Job, RunSummary) {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/a.jsonl", lines.to_vec());
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], batch_size, 1);
    job.prediction_input.as_mut().unwrap().output_data_format = Some(DataFormat::Csv);
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    (storage, job, summary)
}

#[test]
fn csv_output_has_a_header_file_and_rows() {
    let (storage, _, summary) = echo_to_csv(
        b"{\"id\": 1, \"x\": [1, 2]}\n{\"id\": 2, \"x\": \"a,b\"}\n{\"id\": 3, \"y\": 1}\n7\n",
        2,
    );
    assert_eq!(summary.state, State::Succeeded);
    assert_eq!(
        storage
            .get("gs://b/out/prediction.results_header.csv")
            .unwrap(),
        b"id,x\r\n"
    );
    assert_eq!(
        String::from_utf8(
            storage
                .get("gs://b/out/prediction.results-00000-of-00001.csv")
                .unwrap()
        )
        .unwrap(),
        "1,\"[1,2]\"\r\n2,\"a,b\"\r\n"
    );
    assert_eq!((summary.prediction_count, summary.error_count), (2, 2));
    let errors = lines_of(&storage, "prediction.errors-");
    assert!(
        errors[0].contains("output \\\"y\\\" is not a column of the CSV header (columns: id, x)"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("a CSV result must be a JSON object"),
        "{}",
        errors[1]
    );
}

#[test]
fn progress_is_reported_and_adds_up() {
    let storage = fixture_storage(&["a.jsonl", "b.jsonl"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let seen = Arc::clone(&seen);
        move |p: &batch_prediction::executor::Progress<'_>| {
            seen.lock().unwrap().push((
                p.records_read,
                p.predictions,
                p.errors,
                p.bytes_read,
                p.shards_done,
                p.shards.len(),
            ));
        }
    };
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 25, 2);
    BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver))
        .with_config(ExecutorConfig::default().with_shard_target_bytes(1))
        .with_observer(Arc::new(observer))
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    let seen = seen.lock().unwrap();
    let last = *seen.last().unwrap();
    let size = fixture("examples.jsonl").len() as u64;
    assert_eq!(last, (200, 200, 0, 2 * size, 2, 2));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "monotonic");
    assert!(
        seen.len() >= 5,
        "a report at the start, after each chunk and each shard: {}",
        seen.len()
    );
}

/// Records the states `on_state` reports; panics on RUNNING if told to.
struct StateLog {
    states: Mutex<Vec<State>>,
    panic_on_running: bool,
}

impl batch_prediction::executor::ProgressObserver for StateLog {
    fn on_progress(&self, _: &batch_prediction::executor::Progress<'_>) {}
    fn on_state(&self, job: &Job) {
        self.states.lock().unwrap().push(job.state());
        assert!(
            !(self.panic_on_running && job.state() == State::Running),
            "observer bug"
        );
    }
}

#[test]
fn state_changes_are_reported_and_a_claimed_job_can_run() {
    for (start, expected) in [
        (State::Queued, vec![State::Preparing, State::Running]),
        (State::Preparing, vec![State::Running]),
    ] {
        let log = Arc::new(StateLog {
            states: Mutex::new(Vec::new()),
            panic_on_running: false,
        });
        let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 25, 1);
        if start == State::Preparing {
            job.apply(Transition::Prepare, &clock()).unwrap();
        }
        let summary = BatchExecutor::new(
            Arc::new(fixture_storage(&["a.jsonl"])),
            Arc::new(EchoResolver),
        )
        .with_observer(log.clone())
        .run(&mut job, &CancelHandle::new())
        .unwrap();
        assert_eq!(summary.state, State::Succeeded);
        assert_eq!(*log.states.lock().unwrap(), expected, "from {start}");
    }
    // A job that is neither QUEUED nor PREPARING is refused, unchanged.
    let mut running = queued_job(DataFormat::Json, &["gs://b/in/*"], 25, 1);
    running.apply(Transition::Prepare, &clock()).unwrap();
    running.apply(Transition::Run, &clock()).unwrap();
    let before = running.clone();
    let err = BatchExecutor::new(Arc::new(InMemoryStorage::new()), Arc::new(EchoResolver))
        .run(&mut running, &CancelHandle::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid state transition from RUNNING to PREPARING"
    );
    assert_eq!(running, before);
    // An observer that panics on a state change fails the job, saying so.
    let log = Arc::new(StateLog {
        states: Mutex::new(Vec::new()),
        panic_on_running: true,
    });
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 25, 1);
    let summary = BatchExecutor::new(
        Arc::new(fixture_storage(&["a.jsonl"])),
        Arc::new(EchoResolver),
    )
    .with_observer(log)
    .run(&mut job, &CancelHandle::new())
    .unwrap();
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("the progress observer panicked: observer bug")
    );
}

#[test]
fn plan_is_a_dry_run() {
    let storage = InMemoryStorage::new();
    for name in ["a.jsonl", "b.jsonl", "c.jsonl"] {
        storage.put(&format!("gs://b/in/{name}"), fixture("examples.jsonl"));
    }
    let job = queued_job(DataFormat::Json, &["gs://b/in/*.jsonl"], 64, 10);
    let executor = BatchExecutor::new(Arc::new(storage.clone()), Arc::new(EchoResolver))
        .with_config(
            ExecutorConfig::default()
                .with_shard_target_bytes(9000)
                .with_max_threads(3),
        );
    let plan = executor.plan(&job).unwrap();
    let names: Vec<&str> = plan.inputs.iter().map(|m| m.location.as_str()).collect();
    assert_eq!(
        names,
        [
            "gs://b/in/a.jsonl",
            "gs://b/in/b.jsonl",
            "gs://b/in/c.jsonl"
        ]
    );
    assert_eq!(plan.shards.len(), 2);
    assert_eq!(plan.shards[0].inputs, 0..2);
    assert_eq!(
        plan.shards[1].results_file,
        "gs://b/out/prediction.results-00001-of-00002"
    );
    assert_eq!((plan.batch_size, plan.workers), (64, 3));
    assert_eq!(plan.total_bytes, 3 * fixture("examples.jsonl").len() as u64);
    assert!(outputs(&storage).is_empty(), "a plan writes nothing");
    let mut invalid = job.clone();
    invalid.prediction_input.as_mut().unwrap().batch_size = Some(0);
    assert_eq!(
        executor.plan(&invalid).unwrap_err().to_string(),
        "invalid job: predictionInput.batchSize: must be positive, got 0"
    );
}

#[test]
fn empty_inputs_make_empty_shards() {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/empty.jsonl", Vec::new());
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(
        (summary.state, summary.prediction_count, summary.error_count),
        (State::Succeeded, 0, 0)
    );
    assert_eq!(
        storage
            .get("gs://b/out/prediction.results-00000-of-00001")
            .unwrap(),
        b""
    );
    assert_eq!(
        storage
            .get("gs://b/out/prediction.errors_stats-00000-of-00001")
            .unwrap(),
        b""
    );
}

/// The README's first command runs this job: it must keep working, with these counts.
#[test]
fn bundled_sample_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/sample/job.json")).unwrap();
    let mut job = Job::from_json(&text).unwrap();
    let input = job.prediction_input.as_mut().unwrap();
    input.input_paths = vec![
        root.join("examples/sample/instances.jsonl")
            .display()
            .to_string(),
    ];
    input.output_path = Some(dir.path().join("out").display().to_string());
    job.apply(Transition::Queue, &clock()).unwrap();
    let executor = BatchExecutor::new(
        Arc::new(batch_prediction::LocalStorage::new()),
        Arc::new(EchoResolver),
    );
    let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
    assert_eq!(
        (summary.state, summary.prediction_count, summary.error_count),
        (State::Succeeded, 21, 1)
    );
    let errors =
        std::fs::read_to_string(dir.path().join("out/prediction.errors-00000-of-00001")).unwrap();
    assert!(errors.contains("\"line\":21"), "{errors}");
    // Run again: the finished shard is resumed, not redone.
    let mut again = Job::from_json(&serde_json::to_string(&job).unwrap()).unwrap();
    again.state = None;
    again.apply(Transition::Queue, &clock()).unwrap();
    let summary = executor.run(&mut again, &CancelHandle::new()).unwrap();
    assert_eq!((summary.shards_resumed, summary.prediction_count), (1, 21));
}

/// A predictor whose error's `Display` panics, a resolver that panics, an
/// observer that panics: the job ends, never hangs, never unwinds out of `run`.
#[test]
fn user_code_that_panics_anywhere_never_hangs_the_job() {
    #[derive(Debug)]
    struct Boom;
    impl std::fmt::Display for Boom {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display of the cause panicked")
        }
    }
    impl std::error::Error for Boom {}
    let storage = InMemoryStorage::new();
    let big: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("{{\"id\": {i}}}\n").into_bytes())
        .collect();
    storage.put("gs://b/in/a.jsonl", big);
    let predictor = predictor_fn(|batch: Vec<Instance>, _: &_| {
        if batch.iter().any(|i| i.to_json()["id"] == 5000) {
            return Err(PredictError::with_source("bad batch", Boom));
        }
        Ok(batch.into_iter().map(Instance::into_json).collect())
    });
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 64, 2);
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(predictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(
        summary.state,
        State::Succeeded,
        "the panic is contained like any predictor panic"
    );
    assert_eq!(summary.error_count, 1);
    let errors = lines_of(&storage, "prediction.errors-");
    assert!(
        errors[0].contains("predictor panicked: display of the cause panicked"),
        "{}",
        errors[0]
    );

    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 64, 2);
    let resolver = Arc::new(
        |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
            panic!("no model here")
        },
    );
    let summary = BatchExecutor::new(Arc::new(storage.clone()), resolver)
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    assert_eq!(summary.state, State::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("model \"model\" failed to load: the loader panicked: no model here")
    );

    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 64, 2);
    let observer = |_: &batch_prediction::executor::Progress<'_>| panic!("observer bug");
    let summary = BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver))
        .with_config(ExecutorConfig::default().with_resume(ResumeMode::Fresh))
        .with_observer(Arc::new(observer))
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    assert_eq!(
        (summary.state, summary.prediction_count),
        (State::Succeeded, 20_000),
        "an observer's panic does not stop the job"
    );
}

/// Cancel stops at the next batch, not at the end of a chunk.
#[test]
fn cancel_stops_within_a_chunk() {
    let storage = InMemoryStorage::new();
    let lines: Vec<u8> = (0..2000)
        .flat_map(|i| format!("{{\"id\": {i}}}\n").into_bytes())
        .collect();
    storage.put("gs://b/in/a.jsonl", lines);
    let cancel = CancelHandle::new();
    let calls = Arc::new(AtomicU64::new(0));
    let predictor = {
        let (cancel, calls) = (cancel.clone(), Arc::clone(&calls));
        predictor_fn(move |batch: Vec<Instance>, _: &_| {
            if calls.fetch_add(1, Ordering::SeqCst) == 10 {
                cancel.cancel();
            }
            Ok(batch.into_iter().map(Instance::into_json).collect())
        })
    };
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 1, 1);
    let summary = BatchExecutor::new(Arc::new(storage), resolver_for(Arc::new(predictor)))
        .run(&mut job, &cancel)
        .unwrap();
    assert_eq!(summary.state, State::Cancelled);
    let calls = calls.load(Ordering::SeqCst);
    assert!(calls <= 12, "{calls} calls after a cancel at call 11");
}

/// A slow predictor's batches spread over the workers even in a small job:
/// chunks hold about 2 ms of a worker's time as measured so far, and one
/// batch before that. Every call waits until two workers have called (at
/// most 30 s in all, then the test fails): with chunks of a fixed 1,024
/// instances, the job's four batches would all sit in one worker's chunk.
#[test]
fn a_slow_predictors_batches_spread_over_the_workers() {
    let storage = InMemoryStorage::new();
    let lines: Vec<u8> = (0..256)
        .flat_map(|i| format!("{{\"id\": {i}}}\n").into_bytes())
        .collect();
    storage.put("gs://b/in/a.jsonl", lines);
    let seen = Arc::new((Mutex::new(BTreeSet::new()), Condvar::new()));
    let predictor = {
        let seen = Arc::clone(&seen);
        let deadline = Instant::now() + Duration::from_secs(30);
        predictor_fn(move |batch: Vec<Instance>, ctx: &PredictContext<'_>| {
            let (workers, changed) = &*seen;
            let mut workers = workers.lock().unwrap();
            workers.insert(ctx.worker());
            changed.notify_all();
            while workers.len() < 2 && Instant::now() < deadline {
                workers = changed
                    .wait_timeout(workers, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            Ok(batch.into_iter().map(Instance::into_json).collect())
        })
    };
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 64, 2);
    let summary = run_with(
        Arc::new(storage),
        Arc::new(predictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(summary.state, State::Succeeded);
    assert_eq!(summary.prediction_count, 256);
    let workers = seen.0.lock().unwrap().len();
    assert_eq!(workers, 2, "every batch went to one worker");
}

#[test]
fn resume_checks_the_shards_files_and_the_inputs_version() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, b"{\"id\": 1}\n").unwrap();
    let out = dir.path().join("out");
    let make_job = || {
        let input = PredictionInput::new(
            DataFormat::Json,
            [input.display().to_string()],
            out.display().to_string(),
            "local",
            ModelVersion::uri("m"),
        );
        let mut job = Job::new("j", input);
        job.apply(Transition::Queue, &clock()).unwrap();
        job
    };
    let executor = BatchExecutor::new(
        Arc::new(batch_prediction::LocalStorage::new()),
        Arc::new(EchoResolver),
    );
    executor.run(&mut make_job(), &CancelHandle::new()).unwrap();
    let results = out.join("prediction.results-00000-of-00001");
    assert_eq!(std::fs::read(&results).unwrap(), b"{\"id\":1}\n");
    let summary = executor.run(&mut make_job(), &CancelHandle::new()).unwrap();
    assert_eq!(summary.shards_resumed, 1, "unchanged: resumed");

    // A lost results file is not taken for a finished shard.
    std::fs::remove_file(&results).unwrap();
    let summary = executor.run(&mut make_job(), &CancelHandle::new()).unwrap();
    assert_eq!(summary.shards_resumed, 0);
    assert_eq!(std::fs::read(&results).unwrap(), b"{\"id\":1}\n");

    // Same size, modification time restored (as cp -p or rsync -t do): still a new version.
    let mtime = std::fs::metadata(&input).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&input, b"{\"id\": 2}\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&input)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let summary = executor.run(&mut make_job(), &CancelHandle::new()).unwrap();
    assert_eq!(summary.shards_resumed, 0, "a rewritten input is read again");
    assert_eq!(std::fs::read(&results).unwrap(), b"{\"id\":2}\n");
}

#[test]
fn an_object_named_twice_is_read_once_and_a_job_covering_its_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.jsonl"), b"{\"id\": 1}\n").unwrap();
    let base = dir.path().display().to_string();
    // The output lies inside the input tree.
    let out = format!("{base}/in/out");
    let make_job = |patterns: Vec<String>| {
        let input = PredictionInput::new(
            DataFormat::Json,
            patterns,
            out.clone(),
            "local",
            ModelVersion::uri("m"),
        );
        let mut job = Job::new("j", input);
        job.apply(Transition::Queue, &clock()).unwrap();
        job
    };
    let executor = BatchExecutor::new(
        Arc::new(batch_prediction::LocalStorage::new()),
        Arc::new(EchoResolver),
    );
    let patterns = vec![
        format!("{base}/in/*.jsonl"),
        format!("{base}/in/./a.jsonl"),
        format!("file://{base}/in/a.jsonl"),
    ];
    let summary = executor
        .run(&mut make_job(patterns), &CancelHandle::new())
        .unwrap();
    assert_eq!(summary.prediction_count, 1, "one file, however it is named");
    // A ** pattern covers the output: refused, the first run's output kept.
    let mut job = make_job(vec![format!("{base}/in/**")]);
    let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
    assert_eq!(summary.state, State::Failed);
    assert!(
        job.error_message
            .as_deref()
            .unwrap()
            .contains("overlaps inputPaths[0]"),
        "{:?}",
        job.error_message
    );
    assert!(std::path::Path::new(&format!("{out}/prediction.results-00000-of-00001")).is_file());
}

#[test]
fn errors_stats_group_messages_without_their_details() {
    let storage = InMemoryStorage::new();
    storage.put(
        "gs://b/in/a.jsonl",
        b"{bad\n  {also\n{\"b64\": \"%%\"}\n{\"b64\": \"!!\"}\n".to_vec(),
    );
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(summary.error_count, 4);
    assert_eq!(
        String::from_utf8(
            storage
                .get("gs://b/out/prediction.errors_stats-00000-of-00001")
                .unwrap()
        )
        .unwrap(),
        "('invalid JSON: key must be a string', 2)\n('invalid base64 in {\"b64\": …} instance', 2)\n"
    );
    // The error file keeps the details, and the raw lines apart from instances.
    let errors: Vec<Value> = lines_of(&storage, "prediction.errors-")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        errors[1]["error"],
        "invalid JSON: key must be a string at line 1 column 4"
    );
    assert_eq!(
        (&errors[0]["instance"], &errors[0]["raw"]),
        (&Value::Null, &json!("{bad"))
    );
}

#[test]
fn csv_header_comes_from_the_first_object_with_outputs() {
    let storage = InMemoryStorage::new();
    storage.put(
        "gs://b/in/a.jsonl",
        b"7\n{}\n{\"a\": \"x\\ny\"}\n{\"a\": 2}\n{}\n".to_vec(),
    );
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
    job.prediction_input.as_mut().unwrap().output_data_format = Some(DataFormat::Csv);
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(
        storage
            .get("gs://b/out/prediction.results_header.csv")
            .unwrap(),
        b"a\r\n"
    );
    assert_eq!(
        String::from_utf8(
            storage
                .get("gs://b/out/prediction.results-00000-of-00001.csv")
                .unwrap()
        )
        .unwrap(),
        "\"x\ny\"\r\n2\r\n\"\"\r\n", // one empty cell is written "" (as Python's csv does)
        "a quoted field may span lines: predictionCount counts rows"
    );
    assert_eq!((summary.prediction_count, summary.error_count), (3, 2));
}

/// A file split into byte ranges, a shard each, yields every line exactly
/// once, whatever the split: the same predictions in the same order, the
/// same damaged lines at the same bytes.
#[test]
fn byte_ranges_of_a_split_file_read_every_line_once() {
    let mut text = String::new();
    for i in 0..12 {
        text.push_str(&format!(
            "{{\"i\": {i}, \"pad\": \"{}\"}}\n",
            "x".repeat(i * 3)
        ));
        if i % 4 == 1 {
            text.push_str("\r\n"); // a blank CRLF line, skipped
        }
        if i == 5 {
            text.push_str("not json\r\n");
        }
    }
    text.push_str("{\"i\": \"last, without a newline\"}");
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/big.jsonl", text.clone());
    let run = |split: u64| {
        let out = format!("gs://b/out{split}");
        let mut job = queued_job(DataFormat::Json, &["gs://b/in/big.jsonl"], 2, 2);
        job.prediction_input.as_mut().unwrap().output_path = Some(out.clone());
        let summary = run_with(
            Arc::new(storage.clone()),
            Arc::new(EchoPredictor),
            ExecutorConfig::default().with_split_bytes(split),
            &mut job,
        );
        assert_eq!(summary.state, State::Succeeded, "split {split}");
        let (all, errors) = crate::results_and_errors(&storage, &out);
        (summary, all, errors)
    };
    let (whole, whole_results, whole_errors) = run(u64::MAX);
    assert_eq!(whole.shards, 1);
    assert_eq!((whole.prediction_count, whole.error_count), (13, 1));
    for split in 1..=text.len() as u64 + 1 {
        let (summary, results, errors) = run(split);
        let expected_shards = (text.len() as u64).div_ceil(split).max(1) as usize;
        assert_eq!(summary.shards, expected_shards, "split {split}");
        assert_eq!(
            (
                summary.prediction_count,
                summary.error_count,
                summary.records_read
            ),
            (
                whole.prediction_count,
                whole.error_count,
                whole.records_read
            ),
            "split {split}"
        );
        assert_eq!(
            results, whole_results,
            "split {split}: same lines, same order"
        );
        assert_eq!(
            errors, whole_errors,
            "split {split}: same damage, same bytes"
        );
    }
}

#[test]
fn run_and_merge_say_the_same_of_the_same_error_limit() {
    let storage = InMemoryStorage::new();
    storage.put(
        "gs://b/in/a.jsonl",
        b"{\"x\":1}\nbad\nbad\n{\"x\":2}\n".to_vec(),
    );
    let limited = ExecutorConfig::default().with_max_error_count(1);
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 1, 1);
    run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        limited.clone(),
        &mut job,
    );
    let ran = job.error_message.clone().unwrap();
    // The same job, run as the only part of one, then merged under the limit.
    let mut part = queued_job(DataFormat::Json, &["gs://b/in/*"], 1, 1);
    let whole = batch_prediction::executor::ShardSelection::new(0, 1).unwrap();
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default().with_shard_selection(whole),
        &mut part,
    );
    assert_eq!(summary.state, State::Succeeded);
    let mut merged = queued_job(DataFormat::Json, &["gs://b/in/*"], 1, 1);
    BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver))
        .with_config(limited)
        .merge(&mut merged)
        .unwrap();
    let merge_message = merged.error_message.unwrap();
    let expected = "too many errors: 2 instances failed, over the limit of 1 (";
    assert!(ran.starts_with(expected), "{ran}");
    assert_eq!(merge_message, format!("{expected}4 instances read)"));
}

/// A storage that counts its listings and uses `cancel` at the `at`th.
#[derive(Debug)]
struct CancelAtListing {
    inner: InMemoryStorage,
    lists: AtomicU64,
    at: u64,
    cancel: CancelHandle,
}

impl Storage for CancelAtListing {
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<batch_prediction::storage::ObjectMeta>, batch_prediction::storage::StorageError>
    {
        if self.lists.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            self.cancel.cancel();
        }
        self.inner.list(prefix)
    }
    fn head(
        &self,
        location: &str,
    ) -> Result<batch_prediction::storage::ObjectMeta, batch_prediction::storage::StorageError>
    {
        self.inner.head(location)
    }
    fn open(
        &self,
        location: &str,
    ) -> Result<Box<dyn std::io::Read + Send>, batch_prediction::storage::StorageError> {
        self.inner.open(location)
    }
    fn create(
        &self,
        location: &str,
    ) -> Result<
        Box<dyn batch_prediction::storage::ObjectWriter>,
        batch_prediction::storage::StorageError,
    > {
        self.inner.create(location)
    }
    fn delete(&self, location: &str) -> Result<(), batch_prediction::storage::StorageError> {
        self.inner.delete(location)
    }
}

fn many_patterns_job(patterns: Vec<String>) -> Job {
    let mut job = Job::new(
        "many",
        PredictionInput::new(
            DataFormat::Json,
            patterns,
            "gs://b/out",
            "local",
            ModelVersion::uri("m"),
        ),
    );
    job.apply(Transition::Queue, &clock()).unwrap();
    job
}

#[test]
fn planning_expands_a_repeated_pattern_once_and_stops_between_patterns_on_cancel() {
    let inner = InMemoryStorage::new();
    for i in 0..50 {
        inner.put(
            &format!("gs://b/in/{i:02}/a.jsonl"),
            b"{\"x\": 1}\n".to_vec(),
        );
    }
    // The same pattern 1,000 times is one listing, and the job reads its
    // one file once.
    let cancel = CancelHandle::new();
    let storage = Arc::new(CancelAtListing {
        inner: inner.clone(),
        lists: AtomicU64::new(0),
        at: u64::MAX,
        cancel: cancel.clone(),
    });
    let executor = BatchExecutor::new(storage.clone(), Arc::new(EchoResolver));
    let mut job = many_patterns_job(vec!["gs://b/in/07/*".to_owned(); 1000]);
    let summary = executor.run(&mut job, &cancel).unwrap();
    assert_eq!((summary.state, summary.records_read), (State::Succeeded, 1));
    let lists = storage.lists.load(Ordering::SeqCst);
    assert!(lists < 10, "{lists} listings for one distinct pattern");
    // 50 distinct patterns, cancelled during the 3rd listing: the plan
    // stops before the 4th, and the job is CANCELLED, not planned on.
    let cancel = CancelHandle::new();
    let storage = Arc::new(CancelAtListing {
        inner,
        lists: AtomicU64::new(0),
        at: 3,
        cancel: cancel.clone(),
    });
    let executor = BatchExecutor::new(storage.clone(), Arc::new(EchoResolver));
    let mut job = many_patterns_job((0..50).map(|i| format!("gs://b/in/{i:02}/*")).collect());
    let summary = executor.run(&mut job, &cancel).unwrap();
    assert_eq!(summary.state, State::Cancelled, "{:?}", job.error_message);
    assert_eq!(summary.records_read, 0);
    assert!(
        storage.lists.load(Ordering::SeqCst) <= 4,
        "{} listings after a cancel at the 3rd",
        storage.lists.load(Ordering::SeqCst)
    );
}

#[test]
fn input_paths_are_bounded_in_count_and_length() {
    let job = |paths: Vec<String>| {
        Job::new(
            "bounded",
            PredictionInput::new(
                DataFormat::Json,
                paths,
                "gs://b/out",
                "local",
                ModelVersion::uri("m"),
            ),
        )
    };
    assert!(
        job(vec![
            "gs://b/in/*".to_owned();
            batch_prediction::validate::MAX_INPUT_PATHS
        ])
        .validate()
        .is_ok()
    );
    let err = job(vec![
        "gs://b/in/*".to_owned();
        batch_prediction::validate::MAX_INPUT_PATHS + 1
    ])
    .validate()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid job: predictionInput.inputPaths: 1001 paths: at most 1000 (a wildcard matches many files in one)"
    );
    let long = format!("gs://b/{}", "x".repeat(5000));
    let err = job(vec!["gs://b/in/*".to_owned(), long])
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid job: predictionInput.inputPaths[1]: 5007 bytes: at most 4096"
    );
}

/// How [`Lines`] treats the batches offered to its fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastPath {
    /// Has none (the trait's default).
    None,
    /// Takes every batch it can write exactly as `predict` would.
    Honest,
    /// Writes one prediction too few.
    ShortByOne,
    /// Panics on batches holding id 7.
    PanicsAtSeven,
    /// Writes part of a batch, then refuses it.
    WritesThenRefuses,
}

/// `{"id": N, …}` → `{"id": N, "twice": 2N}`, with a fast path that
/// behaves as its [`FastPath`] says; counts the batches that path took.
struct Lines {
    fast: FastPath,
    taken: AtomicU64,
}

impl Lines {
    fn new(fast: FastPath) -> Arc<Self> {
        Arc::new(Lines {
            fast,
            taken: AtomicU64::new(0),
        })
    }

    fn prediction(instance: &Value) -> Option<Value> {
        let id = instance.as_object()?.get("id")?.as_u64()?;
        Some(json!({"id": id, "twice": id.checked_mul(2)?}))
    }
}

impl Predictor for Lines {
    fn predict(
        &self,
        batch: Vec<Instance>,
        _: &batch_prediction::PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        batch
            .iter()
            .map(|instance| match instance {
                Instance::Json(v) => Lines::prediction(v),
                Instance::Bytes(_) => None,
            })
            .map(|p| p.ok_or_else(|| PredictError::new("no id")))
            .collect()
    }

    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        _: &batch_prediction::PredictContext<'_>,
        out: &mut batch_prediction::predict::JsonPredictions<'_>,
    ) -> bool {
        if self.fast == FastPath::None {
            return false;
        }
        let mut predictions = Vec::new();
        for line in lines {
            let Ok(value) = serde_json::from_slice::<Value>(line) else {
                return false;
            };
            if value.get("b64").is_some() {
                return false;
            }
            let Some(prediction) = Lines::prediction(&value) else {
                return false;
            };
            predictions.push(prediction);
        }
        let ids: Vec<u64> = predictions
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect();
        if self.fast == FastPath::PanicsAtSeven && ids.contains(&7) {
            panic!("the fast path panics at 7");
        }
        let keep = match self.fast {
            FastPath::ShortByOne => predictions.len() - 1,
            _ => predictions.len(),
        };
        for prediction in &predictions[..keep] {
            serde_json::to_writer(out.begin(), prediction).unwrap();
        }
        if self.fast == FastPath::WritesThenRefuses && ids.contains(&7) {
            return false;
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The fast path for JSON lines (`Predictor::predict_json_lines`) changes
/// nothing a job writes, whatever it does: it takes clean batches, and a
/// refusal, a wrong count or a panic sends the batch down the usual path,
/// bad lines and all. CSV output never offers it.
#[test]
fn the_fast_path_for_json_lines_writes_what_the_usual_path_writes() {
    let mut input = fixture("examples.jsonl");
    // Bad lines among the good: invalid JSON, a binary instance, no id, a
    // wide id, blank lines, spaces around an instance.
    input.extend_from_slice(
        b"{\"id\": 100, \"x\": [1]}\nnot json\n{\"b64\": \"aGk=\"}\n\n{\"x\": 1}\n  {\"id\":101}  \n{\"id\": 18446744073709551615}\n{\"id\": 102,\n",
    );
    input.extend_from_slice(&fixture("examples.jsonl"));
    let run = |fast: FastPath, format: DataFormat, output: DataFormat, batch: i64| {
        let storage = InMemoryStorage::new();
        storage.put("gs://b/in/a.jsonl", input.clone());
        let mut job = queued_job(format, &["gs://b/in/*"], batch, 2);
        job.prediction_input.as_mut().unwrap().output_data_format = Some(output);
        let predictor = Lines::new(fast);
        let summary = run_with(
            Arc::new(storage.clone()),
            Arc::clone(&predictor) as Arc<dyn Predictor>,
            ExecutorConfig::default(),
            &mut job,
        );
        assert_eq!(summary.state, State::Succeeded, "{fast:?}");
        check_accounting(&storage, &job, &summary);
        // Every file as text, but the summary's times.
        let files: Vec<(String, String)> = outputs(&storage)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("prediction.summary-"))
            .map(|(name, bytes)| (name, String::from_utf8(bytes).unwrap()))
            .collect();
        let counts = (summary.prediction_count, summary.error_count);
        (files, counts, predictor.taken.load(Ordering::Relaxed))
    };
    for batch in [1, 4, 16] {
        let (usual, counts, _) = run(FastPath::None, DataFormat::Json, DataFormat::Json, batch);
        assert_eq!(counts, (202, 5));
        for fast in [
            FastPath::Honest,
            FastPath::ShortByOne,
            FastPath::PanicsAtSeven,
            FastPath::WritesThenRefuses,
        ] {
            let (got, _, taken) = run(fast, DataFormat::Json, DataFormat::Json, batch);
            assert_eq!(got, usual, "{fast:?}, batches of {batch}");
            match fast {
                FastPath::Honest | FastPath::PanicsAtSeven | FastPath::WritesThenRefuses => {
                    assert!(taken > 0, "{fast:?}: the fast path took no batch")
                }
                _ => {}
            }
        }
    }
    // CSV output never offers it; TEXT lines, JSON instances for a predictor
    // that does not take them as they are, do.
    let (usual, _, _) = run(FastPath::None, DataFormat::Json, DataFormat::Csv, 4);
    let (got, _, taken) = run(FastPath::Honest, DataFormat::Json, DataFormat::Csv, 4);
    assert_eq!(got, usual, "JSON into CSV");
    assert_eq!(taken, 0, "JSON into CSV offers no fast path");
    let (usual, counts, _) = run(FastPath::None, DataFormat::Text, DataFormat::Json, 4);
    assert_eq!(counts, (202, 5), "TEXT lines are JSON instances");
    let (got, _, taken) = run(FastPath::Honest, DataFormat::Text, DataFormat::Json, 4);
    assert_eq!(got, usual, "TEXT into JSON");
    assert!(taken > 0, "TEXT into JSON offers the fast path");
}

/// `n` JSON-lines instances `{"k": i}`, with `{"k": i, "hang": true}` at
/// the indexes in `hang`.
fn keyed_lines(n: usize, hang: &[usize]) -> Vec<u8> {
    (0..n)
        .map(|i| {
            if hang.contains(&i) {
                format!("{{\"k\": {i}, \"hang\": true}}\n")
            } else {
                format!("{{\"k\": {i}}}\n")
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// A predictor that never returns for a batch holding a `hang` instance
/// (until the test drops its sender), and echoes anything else.
fn hanging(release: std::sync::mpsc::Receiver<()>) -> Arc<dyn Predictor> {
    let release = Mutex::new(release);
    Arc::new(predictor_fn(move |batch: Vec<Instance>, ctx: &_| {
        let hangs = batch
            .iter()
            .any(|i| matches!(i, Instance::Json(v) if v["hang"] == true));
        if hangs {
            // Blocks until the test ends (the sender is dropped).
            let _ = release.lock().unwrap().recv();
        }
        EchoPredictor.predict(batch, ctx)
    }))
}

/// An in-process predictor that hangs on some instances: with a batch
/// deadline, those instances end as errors, found by splitting, the rest
/// are predicted, and the job does not wait on the hung calls.
#[test]
fn a_batch_deadline_turns_instances_that_hang_into_errors() {
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/a.jsonl", keyed_lines(20, &[5]));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 8, 2);
    let seen = Arc::new(AtomicU64::new(0));
    let observed = Arc::clone(&seen);
    let summary = BatchExecutor::new(Arc::new(storage.clone()), resolver_for(hanging(release)))
        .with_config(
            ExecutorConfig::default().with_batch_deadline(std::time::Duration::from_secs(1)),
        )
        .with_observer(Arc::new(
            move |p: &batch_prediction::executor::Progress<'_>| {
                observed.fetch_max(p.deadline_hits, Ordering::Relaxed);
            },
        ))
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    drop(hold);
    assert_eq!(summary.state, State::Succeeded);
    assert_eq!((summary.prediction_count, summary.error_count), (19, 1));
    // The batch of 8 holding it, then the halves holding it: 8, 4, 2, 1.
    assert_eq!(summary.deadline_hits, 4);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        4,
        "progress shows the deadline hits"
    );
    assert_eq!(summary.retries, 0);
    check_accounting(&storage, &job, &summary);
    let errors: Vec<Value> = lines_of(&storage, "prediction.errors-")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["instance"], json!({"k": 5, "hang": true}));
    assert_eq!(
        errors[0]["error"],
        "the batch took longer than its deadline of 1 s"
    );
    let results = lines_of(&storage, "prediction.results-");
    assert_eq!(results.len(), 19);
    assert!(!results.iter().any(|l| l.contains("hang")));
}

/// A predictor whose first calls fail with retryable errors: the batches
/// are tried again, and the output is what a run without failures writes.
#[test]
fn transient_failures_are_retried_and_change_nothing() {
    let run = |predictor: Arc<dyn Predictor>| {
        let storage = InMemoryStorage::new();
        storage.put("gs://b/in/a.jsonl", keyed_lines(50, &[]));
        let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 8, 2);
        let policy = batch_prediction::RetryPolicy::default()
            .with_max_retries(5)
            .with_backoff(
                std::time::Duration::from_millis(1),
                std::time::Duration::from_millis(5),
            );
        let summary = run_with(
            Arc::new(storage.clone()),
            predictor,
            ExecutorConfig::default().with_predict_retries(policy),
            &mut job,
        );
        check_accounting(&storage, &job, &summary);
        (summary, outputs_but_summaries(&storage))
    };
    let calls = AtomicU64::new(0);
    let flaky: Arc<dyn Predictor> =
        Arc::new(predictor_fn(
            move |batch: Vec<Instance>, ctx: &_| match calls.fetch_add(1, Ordering::Relaxed) {
                0 => Err(PredictError::new("the server is busy")
                    .with_retry_after(std::time::Duration::ZERO)),
                1 | 2 => Err(PredictError::new("the server is busy").retryable()),
                _ => EchoPredictor.predict(batch, ctx),
            },
        ));
    let (summary, files) = run(flaky);
    assert_eq!(summary.state, State::Succeeded);
    assert_eq!(
        (
            summary.prediction_count,
            summary.error_count,
            summary.retries
        ),
        (50, 0, 3)
    );
    let (clean, want) = run(Arc::new(EchoPredictor));
    assert_eq!(clean.retries, 0);
    assert_eq!(files, want, "the same files, byte for byte");
}

/// A transient failure that outlasts the retries: the batch is split as
/// any failed batch is, its parts not retried again, and every instance
/// ends with the error.
#[test]
fn spent_retries_leave_the_batch_to_splitting() {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/a.jsonl", keyed_lines(20, &[]));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 8, 1);
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let down: Arc<dyn Predictor> = Arc::new(predictor_fn(move |_: Vec<Instance>, _: &_| {
        counted.fetch_add(1, Ordering::Relaxed);
        Err::<Vec<Value>, _>(PredictError::new("the server is down").retryable())
    }));
    let policy = batch_prediction::RetryPolicy::default()
        .with_max_retries(2)
        .with_backoff(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(2),
        );
    let summary = run_with(
        Arc::new(storage.clone()),
        down,
        ExecutorConfig::default().with_predict_retries(policy),
        &mut job,
    );
    check_accounting(&storage, &job, &summary);
    assert_eq!((summary.prediction_count, summary.error_count), (0, 20));
    // 3 batches (8, 8, 4), each tried 3 times, then split down to single
    // instances: 14 more calls for a batch of 8, 6 for one of 4.
    assert_eq!(calls.load(Ordering::Relaxed), 3 * 3 + 14 + 14 + 6);
    assert_eq!(summary.retries, 6);
    assert!(
        lines_of(&storage, "prediction.errors-")
            .iter()
            .all(|l| l.contains("\"error\":\"the server is down\"")),
    );
}

/// A predictor that refuses batches of more than 16 instances as too large:
/// with adaptive batches each worker's batches shrink below that after one
/// refusal, and the output is byte for byte that of fixed batches.
#[test]
fn adaptive_batches_shrink_below_too_large_and_change_nothing() {
    let run = |adaptive: bool| {
        let storage = InMemoryStorage::new();
        storage.put("gs://b/in/a.jsonl", keyed_lines(2000, &[]));
        let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 64, 2);
        let refused = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&refused);
        let picky: Arc<dyn Predictor> =
            Arc::new(predictor_fn(move |batch: Vec<Instance>, ctx: &_| {
                if batch.len() > 16 {
                    counted.fetch_add(1, Ordering::Relaxed);
                    return Err(PredictError::new("payload too large").too_large());
                }
                EchoPredictor.predict(batch, ctx)
            }));
        let summary = run_with(
            Arc::new(storage.clone()),
            picky,
            ExecutorConfig::default().with_adaptive_batch(adaptive),
            &mut job,
        );
        check_accounting(&storage, &job, &summary);
        assert_eq!((summary.prediction_count, summary.error_count), (2000, 0));
        (
            refused.load(Ordering::Relaxed),
            outputs_but_summaries(&storage),
        )
    };
    let (fixed_refusals, fixed) = run(false);
    let (adaptive_refusals, adaptive) = run(true);
    assert_eq!(adaptive, fixed, "the same files, byte for byte");
    // Fixed: each of the 31 batches of 64 is refused, then its halves of 32
    // (the last batch, of 16, is not).
    assert_eq!(fixed_refusals, 31 * 3);
    // Adaptive: per worker, a batch of 64 and its halves, then one of 32;
    // then none.
    assert!(adaptive_refusals <= 2 * 4, "{adaptive_refusals} refusals");
}

/// Adaptive batches grow while throughput rises: a predictor whose calls
/// cost a fixed overhead gets batches larger than the job's batchSize.
#[test]
fn adaptive_batches_grow_while_throughput_rises() {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/a.jsonl", keyed_lines(4096, &[]));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 16, 1);
    let largest = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&largest);
    let overhead: Arc<dyn Predictor> =
        Arc::new(predictor_fn(move |batch: Vec<Instance>, ctx: &_| {
            seen.fetch_max(batch.len() as u64, Ordering::Relaxed);
            // A round trip's cost, whatever the batch's size.
            std::thread::sleep(std::time::Duration::from_millis(2));
            EchoPredictor.predict(batch, ctx)
        }));
    let summary = run_with(
        Arc::new(storage.clone()),
        overhead,
        ExecutorConfig::default().with_adaptive_batch(true),
        &mut job,
    );
    check_accounting(&storage, &job, &summary);
    assert_eq!(summary.prediction_count, 4096);
    assert!(
        largest.load(Ordering::Relaxed) > 16,
        "batches grew: {largest:?}"
    );
}

/// A predictor whose calls mostly wait gets `maxWorkerCount` workers, not
/// one per core (six calls are in flight at once, on any machine), and a
/// 60 s batch deadline though the job sets none.
#[test]
fn predictors_that_mostly_wait_get_max_worker_count_workers() {
    struct Waits {
        in_flight: Mutex<usize>,
        changed: std::sync::Condvar,
        most: AtomicU64,
    }
    impl Predictor for Waits {
        fn predict(
            &self,
            batch: Vec<Instance>,
            ctx: &batch_prediction::PredictContext<'_>,
        ) -> Result<Vec<Value>, PredictError> {
            // Calls that wait get a deadline though the job sets none.
            let left = ctx.deadline().expect("a deadline") - std::time::Instant::now();
            assert!(
                left > std::time::Duration::from_secs(30)
                    && left <= std::time::Duration::from_secs(60)
            );
            let mut n = self.in_flight.lock().unwrap();
            *n += 1;
            self.most.fetch_max(*n as u64, Ordering::SeqCst);
            self.changed.notify_all();
            // Each call waits (up to 10 s) until six are in flight, once.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.most.load(Ordering::SeqCst) < 6 && std::time::Instant::now() < until {
                n = self
                    .changed
                    .wait_timeout(n, std::time::Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            *n -= 1;
            drop(n);
            EchoPredictor.predict(batch, ctx)
        }

        fn calls_mostly_wait(&self) -> bool {
            true
        }
    }
    let storage = InMemoryStorage::new();
    // Six chunks of one batch each.
    storage.put("gs://b/in/a.jsonl", keyed_lines(6 * 1024, &[]));
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/a.jsonl"], 1024, 6);
    let waits = Arc::new(Waits {
        in_flight: Mutex::new(0),
        changed: std::sync::Condvar::new(),
        most: AtomicU64::new(0),
    });
    let summary = run_with(
        Arc::new(storage.clone()),
        Arc::clone(&waits) as Arc<dyn Predictor>,
        ExecutorConfig::default().with_max_threads(1),
        &mut job,
    );
    check_accounting(&storage, &job, &summary);
    assert_eq!(summary.prediction_count, 6 * 1024);
    assert_eq!(waits.most.load(Ordering::SeqCst), 6);
}

/// A predictor that says whether it takes records as they are, and echoes.
struct RawOrNot(bool);

impl Predictor for RawOrNot {
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        EchoPredictor.predict(batch, ctx)
    }

    fn takes_raw_records(&self, _: DataFormat) -> bool {
        self.0
    }
}

/// TEXT lines and TFRecord records as AI Platform read them: JSON
/// instances (a line that is not JSON is its error), unless the predictor
/// takes them as they are (`Predictor::takes_raw_records`).
#[test]
fn text_lines_and_records_are_json_instances_unless_the_predictor_takes_them_raw() {
    let text = b"{\"x\": 1}\n{not json\n\n\"s\"\n".to_vec();
    let mut frames = batch_prediction::record::TfRecordWriter::new(Vec::new());
    for record in [&b"{\"x\": 1}"[..], b"{not json", b"\"s\""] {
        frames.write(record).unwrap();
    }
    let records = frames.into_inner();
    let run = |format: DataFormat, bytes: &[u8], predictor: Arc<dyn Predictor>| {
        let storage = InMemoryStorage::new();
        storage.put("gs://b/in/a", bytes.to_vec());
        let mut job = queued_job(format, &["gs://b/in/*"], 2, 1);
        let summary = run_with(
            Arc::new(storage.clone()),
            predictor,
            ExecutorConfig::default(),
            &mut job,
        );
        assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
        check_accounting(&storage, &job, &summary);
        let errors: Vec<Value> = lines_of(&storage, "prediction.errors-")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines_of(&storage, "prediction.results-"), errors)
    };
    // The echo predictor: TEXT lines as JSON (the blank line skipped, as a
    // JSON line's), TFRecord records as bytes.
    let (results, errors) = run(DataFormat::Text, &text, Arc::new(EchoPredictor));
    assert_eq!(results, ["{\"x\":1}", "\"s\""]);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (&errors[0]["line"], &errors[0]["raw"]),
        (&json!(2), &json!("{not json"))
    );
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON")
    );
    let (results, errors) = run(DataFormat::TfRecord, &records, Arc::new(EchoPredictor));
    assert_eq!(results.len(), 3);
    assert!(errors.is_empty());
    assert_eq!(results[0], "{\"b64\":\"eyJ4IjogMX0=\"}");
    // A model that takes JSON instances: TFRecord records parsed too.
    let (results, errors) = run(DataFormat::TfRecord, &records, Arc::new(RawOrNot(false)));
    assert_eq!(results, ["{\"x\":1}", "\"s\""]);
    assert_eq!(errors[0]["record"], json!(1));
    // One that takes them as they are: every line as its text, blank too.
    let (results, errors) = run(DataFormat::Text, &text, Arc::new(RawOrNot(true)));
    assert_eq!(
        results,
        [
            "\"{\\\"x\\\": 1}\"",
            "\"{not json\"",
            "\"\"",
            "\"\\\"s\\\"\""
        ]
    );
    assert!(errors.is_empty());
    let (results, _) = run(DataFormat::Json, &text, Arc::new(RawOrNot(true)));
    assert_eq!(
        results,
        ["\"{\\\"x\\\": 1}\"", "\"{not json\"", "\"\\\"s\\\"\""]
    );
}

/// A storage whose `open` takes a while, as a request for a remote
/// object's first byte does, counting the opens under way at once.
struct SlowOpens {
    inner: InMemoryStorage,
    now: AtomicU64,
    most: AtomicU64,
}

impl std::fmt::Debug for SlowOpens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowOpens")
    }
}

impl Storage for SlowOpens {
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<batch_prediction::storage::ObjectMeta>, batch_prediction::storage::StorageError>
    {
        self.inner.list(prefix)
    }

    fn head(
        &self,
        location: &str,
    ) -> Result<batch_prediction::storage::ObjectMeta, batch_prediction::storage::StorageError>
    {
        self.inner.head(location)
    }

    fn open(
        &self,
        location: &str,
    ) -> Result<Box<dyn std::io::Read + Send>, batch_prediction::storage::StorageError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.inner.open(location)
    }

    fn create(
        &self,
        location: &str,
    ) -> Result<
        Box<dyn batch_prediction::storage::ObjectWriter>,
        batch_prediction::storage::StorageError,
    > {
        self.inner.create(location)
    }

    fn delete(&self, location: &str) -> Result<(), batch_prediction::storage::StorageError> {
        self.inner.delete(location)
    }
}

/// Many small objects are fetched ahead of the reader, several at once
/// (a bounded number), and the job writes what it writes when each is
/// opened in turn.
#[test]
fn small_objects_are_fetched_ahead_and_change_nothing() {
    let inner = InMemoryStorage::new();
    for f in 0..60 {
        let mut lines: String = (0..5)
            .map(|i| format!("{{\"f\": {f}, \"i\": {i}}}\n"))
            .collect();
        if f % 7 == 0 {
            lines.push_str("not json\n");
        }
        inner.put(&format!("gs://b/in/{f:03}.jsonl"), lines.into_bytes());
    }
    let plain = inner.clone();
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 4, 2);
    let one_by_one = run_with(
        Arc::new(plain.clone()),
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    let expected = outputs_but_summaries(&plain);
    for location in plain.locations() {
        if location.starts_with("gs://b/out/") {
            plain.delete(&location).unwrap();
        }
    }
    let slow = Arc::new(SlowOpens {
        inner: inner.clone(),
        now: AtomicU64::new(0),
        most: AtomicU64::new(0),
    });
    let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 4, 2);
    let ahead = run_with(
        Arc::clone(&slow) as Arc<dyn Storage>,
        Arc::new(EchoPredictor),
        ExecutorConfig::default(),
        &mut job,
    );
    assert_eq!(ahead.state, State::Succeeded);
    assert_eq!(
        (ahead.prediction_count, ahead.error_count),
        (one_by_one.prediction_count, one_by_one.error_count)
    );
    assert_eq!(outputs_but_summaries(&inner), expected);
    let most = slow.most.load(Ordering::SeqCst);
    assert!((2..=9).contains(&most), "{most} opens at once");
}

/// A storage whose deletes wait until the job has predicted, that logs
/// creates, deletes and commits in order, and that says `survives` of
/// [`Storage::upload_survives_delete`].
struct SlowDeletes {
    inner: InMemoryStorage,
    predicted: Arc<(Mutex<bool>, Condvar)>,
    log: Arc<Mutex<Vec<String>>>,
    survives: bool,
}

impl std::fmt::Debug for SlowDeletes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowDeletes")
    }
}

struct LoggedWriter {
    inner: Box<dyn batch_prediction::storage::ObjectWriter>,
    location: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl std::io::Write for LoggedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl batch_prediction::storage::ObjectWriter for LoggedWriter {
    fn commit(
        self: Box<Self>,
    ) -> Result<batch_prediction::storage::ObjectMeta, batch_prediction::storage::StorageError>
    {
        self.log
            .lock()
            .unwrap()
            .push(format!("commit {}", self.location));
        self.inner.commit()
    }
}

impl Storage for SlowDeletes {
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<batch_prediction::storage::ObjectMeta>, batch_prediction::storage::StorageError>
    {
        self.inner.list(prefix)
    }
    fn head(
        &self,
        location: &str,
    ) -> Result<batch_prediction::storage::ObjectMeta, batch_prediction::storage::StorageError>
    {
        self.inner.head(location)
    }
    fn open(
        &self,
        location: &str,
    ) -> Result<Box<dyn std::io::Read + Send>, batch_prediction::storage::StorageError> {
        self.inner.open(location)
    }
    fn create(
        &self,
        location: &str,
    ) -> Result<
        Box<dyn batch_prediction::storage::ObjectWriter>,
        batch_prediction::storage::StorageError,
    > {
        self.log.lock().unwrap().push(format!("create {location}"));
        Ok(Box::new(LoggedWriter {
            inner: self.inner.create(location)?,
            location: location.to_owned(),
            log: Arc::clone(&self.log),
        }))
    }
    fn delete(&self, location: &str) -> Result<(), batch_prediction::storage::StorageError> {
        let (flag, woken) = &*self.predicted;
        let guard = flag.lock().unwrap();
        let _ = woken
            .wait_timeout_while(guard, Duration::from_secs(30), |predicted| !*predicted)
            .unwrap();
        if self.survives {
            // Where the executor may create first, give a commit that
            // does not wait for this deletion the time to happen before it
            // (a run that waits as it must commits nothing meanwhile).
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until
                && !self
                    .log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.starts_with("commit "))
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.log.lock().unwrap().push(format!("delete {location}"));
        self.inner.delete(location)
    }
    fn upload_survives_delete(&self, _location: &str) -> bool {
        self.survives
    }
}

/// The earlier run's output files are deleted while the new run predicts
/// (a delete here waits for the first prediction, which an executor that
/// deleted first would never make), each before the new run commits a file
/// of that name, and, where an upload would not survive the deletion,
/// before it creates one: no deletion reaches a file, or an upload, of the
/// new run.
#[test]
fn stale_outputs_are_deleted_beside_the_first_batches_before_their_names_are_written() {
    let inner = fixture_storage(&["a.jsonl"]);
    let run = |storage: Arc<dyn Storage>, predicted: Option<Arc<(Mutex<bool>, Condvar)>>| {
        let predictor = predictor_fn(move |batch: Vec<Instance>, _: &_| {
            if let Some(predicted) = &predicted {
                *predicted.0.lock().unwrap() = true;
                predicted.1.notify_all();
            }
            Ok(batch.iter().map(Instance::to_json).collect())
        });
        let mut job = queued_job(DataFormat::Json, &["gs://b/in/*"], 10, 1);
        BatchExecutor::new(storage, resolver_for(Arc::new(predictor)))
            .with_config(ExecutorConfig::default().with_resume(ResumeMode::Fresh))
            .run(&mut job, &CancelHandle::new())
            .unwrap()
    };
    let first = run(Arc::new(inner.clone()), None);
    assert_eq!(first.state, State::Succeeded);
    let before = crate::results_and_errors(&inner, "gs://b/out");

    for survives in [false, true] {
        let predicted = Arc::new((Mutex::new(false), Condvar::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let storage = SlowDeletes {
            inner: inner.clone(),
            predicted: Arc::clone(&predicted),
            log: Arc::clone(&log),
            survives,
        };
        let started = Instant::now();
        let second = run(Arc::new(storage), Some(predicted));
        assert_eq!(second.state, State::Succeeded);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the deletes waited out their timeout: the run deleted before predicting"
        );
        let log = log.lock().unwrap().clone();
        let deletes = log.iter().filter(|l| l.starts_with("delete ")).count();
        assert_eq!(deletes, 4, "the earlier run's four files: {log:?}");
        // Before the name's commit always; before its create unless an
        // upload survives the deletion.
        let first_write = if survives { "commit" } else { "create" };
        for (i, entry) in log.iter().enumerate() {
            if let Some(location) = entry.strip_prefix("delete ") {
                let written = log
                    .iter()
                    .position(|l| *l == format!("{first_write} {location}"));
                assert!(
                    written.is_some_and(|w| w > i),
                    "survives {survives}, {location}: {log:?}"
                );
            }
        }
        assert_eq!(crate::results_and_errors(&inner, "gs://b/out"), before);
    }
}
