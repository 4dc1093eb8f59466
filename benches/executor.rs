//! The executor end to end on in-memory data: the echo job on JSON and
//! TFRecord input with 1 and 2 workers (records/s). `examples/executor_throughput.rs`
//! prints the same as ratios to the bare cost.

use std::io::Write;
use std::sync::Arc;

use batch_prediction::executor::ResumeMode;
use batch_prediction::predict::CancelHandle;
use batch_prediction::record::TfRecordWriter;
use batch_prediction::{
    BatchExecutor, DataFormat, EchoResolver, ExecutorConfig, InMemoryStorage, Job, ModelVersion,
    PredictionInput, State, Storage, SystemClock, Transition,
};
use criterion::{Criterion, Throughput};
use serde_json::json;

const RECORDS: usize = 20_000;

pub fn define(c: &mut Criterion) {
    let storage = InMemoryStorage::new();
    let mut lines = Vec::new();
    let mut tf = TfRecordWriter::new(Vec::new());
    for i in 0..RECORDS {
        let f = i as f64;
        let line = json!({"key": i, "x": [f * 0.1, -2.3 + f, 1.25, 0.5 / (f + 1.0)]}).to_string();
        writeln!(lines, "{line}").unwrap();
        tf.write(line.as_bytes()).unwrap();
    }
    storage.put("mem://in/data.jsonl", lines);
    storage.put("mem://in/data.tfrecord", tf.into_inner());
    let storage: Arc<dyn Storage> = Arc::new(storage);
    let executor = BatchExecutor::new(storage, Arc::new(EchoResolver))
        .with_config(ExecutorConfig::default().with_resume(ResumeMode::Fresh));

    let mut group = c.benchmark_group("executor");
    group.sample_size(20);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, format, input) in [
        ("echo_json", DataFormat::Json, "mem://in/data.jsonl"),
        (
            "echo_tfrecord",
            DataFormat::TfRecord,
            "mem://in/data.tfrecord",
        ),
    ] {
        for workers in [1, 2] {
            group.bench_function(format!("{name}_{workers}w"), |b| {
                b.iter(|| {
                    let mut job = Job::new(
                        "bench",
                        PredictionInput::new(
                            format,
                            [input],
                            "mem://out",
                            "local",
                            ModelVersion::uri("m"),
                        )
                        .set_max_worker_count(workers),
                    );
                    job.apply(Transition::Queue, &SystemClock).unwrap();
                    let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
                    assert_eq!(
                        (summary.state, summary.prediction_count),
                        (State::Succeeded, RECORDS as u64)
                    );
                })
            });
        }
    }
    group.finish();
}
