//! Job JSON: parsing (with every check) and writing, and validation.

use std::hint::black_box;

use batch_prediction::Job;
use criterion::{Criterion, Throughput};

const FULL_JOB: &str = r#"{"jobId":"census_batch_1","createTime":"2019-01-01T00:00:00Z","startTime":"2019-01-01T00:01:00.123Z",
"endTime":"2019-01-01T00:11:00.123456789Z","state":"SUCCEEDED","labels":{"team":"engineering","env":"prod","cost-center":"cc_42"},
"etag":"BwWWja0YfJA=","predictionInput":{"dataFormat":"TF_RECORD_GZIP","outputDataFormat":"JSON","inputPaths":["gs://b/in/part-*","gs://b/extra/**"],
"outputPath":"gs://b/out","region":"us-central1","versionName":"projects/my-proj/models/census/versions/v1",
"runtimeVersion":"2.11","signatureName":"serving_default","batchSize":"64","maxWorkerCount":"10",
"accelerator":{"count":"1","type":"NVIDIA_TESLA_T4"}},
"predictionOutput":{"outputPath":"gs://b/out","predictionCount":"1000000","errorCount":"12","nodeHours":0.25}}"#;

pub fn define(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Bytes(FULL_JOB.len() as u64));
    group.bench_function("parse_full_job", |b| {
        b.iter(|| {
            let job = Job::from_json(black_box(FULL_JOB)).unwrap();
            assert!(job.prediction_output.is_some());
            job
        })
    });
    let job = Job::from_json(FULL_JOB).unwrap();
    group.bench_function("write_full_job", |b| {
        b.iter(|| {
            let text = serde_json::to_string(black_box(&job)).unwrap();
            assert!(text.len() > 500);
            text
        })
    });
    group.bench_function("validate_full_job", |b| {
        b.iter(|| black_box(&job).validate().unwrap())
    });
    group.finish();
}
