//! The cloud half of the comparison harness (`benches/compare_cloud.py`):
//! moves objects and runs the echo job through `CloudStorage`, with
//! credentials and emulators from the environment.
//!
//! ```text
//! cloud_helper get LOCATION            read an object to the end; prints "SECONDS BYTES"
//! cloud_helper put FILE LOCATION       upload a file; prints "SECONDS BYTES"
//! cloud_helper job PATTERN OUTPUT N    the echo job with N workers; prints "SECONDS PREDICTIONS"
//! ```

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use batch_prediction::executor::ResumeMode;
use batch_prediction::predict::CancelHandle;
use batch_prediction::{
    BatchExecutor, CloudStorage, EchoResolver, ExecutorConfig, Job, LocalStorage, State, Storage,
    SystemClock, Transition,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let storage = CloudStorage::new(LocalStorage::new());
    let start = Instant::now();
    let count = match a.as_slice() {
        ["get", location] => {
            let mut reader = storage.open(location).expect("open");
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match reader.read(&mut buf).expect("read") {
                    0 => break total,
                    n => total += n as u64,
                }
            }
        }
        ["put", file, location] => {
            let mut input = std::fs::File::open(file).expect("open the file");
            let mut writer = storage.create(location).expect("create");
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match input.read(&mut buf).expect("read") {
                    0 => break,
                    n => writer.write_all(&buf[..n]).expect("write"),
                }
            }
            writer.commit().expect("commit").size
        }
        ["job", pattern, output, workers] => {
            let mut job = Job::from_value(serde_json::json!({
                "jobId": "cloud_compare",
                "predictionInput": {
                    "dataFormat": "JSON", "inputPaths": [pattern], "outputPath": output,
                    "region": "local", "uri": "echo", "batchSize": "64",
                    "maxWorkerCount": workers
                }
            }))
            .expect("job");
            job.apply(Transition::Queue, &SystemClock).expect("queue");
            let config = ExecutorConfig::default().with_resume(ResumeMode::Fresh);
            let summary = BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver))
                .with_config(config)
                .run(&mut job, &CancelHandle::new())
                .expect("run");
            assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
            summary.prediction_count
        }
        _ => {
            eprintln!(
                "usage: cloud_helper get LOCATION | put FILE LOCATION | job PATTERN OUTPUT WORKERS"
            );
            std::process::exit(2);
        }
    };
    println!("{:.6} {count}", start.elapsed().as_secs_f64());
}
