//! The `tracing` feature: a job's spans and events reach the subscriber of
//! the thread that runs it, worker threads included, with fields a log
//! pipeline can index; the service reports creates, state changes and its
//! store's writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_prediction::predict::CancelHandle;
use batch_prediction::{
    BatchExecutor, DataFormat, EchoResolver, ExecutorConfig, InMemoryJobStore, InMemoryStorage,
    Instance, Job, JobService, ModelVersion, PredictError, PredictionInput, Predictor, ProjectName,
    RetryPolicy, State, SystemClock, Transition, predictor_fn,
};
use serde_json::json;

/// What a subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Runs `f` with a subscriber of its own (not the global one: worker
/// threads must be handed it), and returns what it wrote.
fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// The lines of `log` that contain every one of `parts`.
fn lines_with<'a>(log: &'a str, parts: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .collect()
}

fn job(id: &str) -> Job {
    Job::new(
        id,
        PredictionInput::new(
            DataFormat::Json,
            ["gs://b/in/*"],
            "gs://b/out",
            "local",
            ModelVersion::uri("model"),
        )
        .set_batch_size(4)
        .set_max_worker_count(2),
    )
}

fn inputs() -> InMemoryStorage {
    let storage = InMemoryStorage::new();
    for (file, xs) in [("a.jsonl", 0..10), ("b.jsonl", 10..20)] {
        let lines: String = xs.map(|x| format!("{{\"x\": {x}}}\n")).collect();
        storage.put(&format!("gs://b/in/{file}"), lines.into_bytes());
    }
    storage
}

#[test]
fn a_job_reports_its_shards_retries_and_failures_inside_its_span() {
    // The first call is refused for a transient reason; instance 13 fails.
    let refused = AtomicBool::new(false);
    let predictor = predictor_fn(move |batch: Vec<Instance>, _: &_| {
        if !refused.swap(true, Ordering::SeqCst) {
            return Err(PredictError::new("the server is busy").retryable());
        }
        if batch.iter().any(|i| i.to_json()["x"] == 13) {
            return Err(PredictError::new("x = 13 is unlucky"));
        }
        Ok(batch
            .iter()
            .map(|i| json!({"y": i.to_json()["x"]}))
            .collect())
    });
    let predictor: Arc<dyn Predictor> = Arc::new(predictor);
    // A shard per file.
    let config = ExecutorConfig::default()
        .with_shard_target_bytes(1)
        .with_predict_retries(
            RetryPolicy::default().with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
        );
    let executor = BatchExecutor::new(
        Arc::new(inputs()),
        Arc::new(
            move |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
                Ok(Arc::clone(&predictor))
            },
        ),
    )
    .with_config(config);
    let mut job = job("traced_job");
    job.apply(Transition::Queue, &SystemClock).unwrap();
    let (summary, log) = capture(|| executor.run(&mut job, &CancelHandle::new()).unwrap());
    assert_eq!(summary.state, State::Succeeded, "{log}");
    assert_eq!((summary.prediction_count, summary.error_count), (19, 1));

    // Every event, from the calling thread or a worker, is in the job's span.
    let span = "job{job=\"traced_job\"}";
    for line in log.lines() {
        assert!(line.contains(span), "outside the job's span: {line}\n{log}");
    }
    assert_eq!(
        lines_with(&log, &["job running", "files=2", "shards=2", "resumed=0"]).len(),
        1,
        "{log}"
    );
    for shard in ["shard=0", "shard=1"] {
        assert_eq!(
            lines_with(&log, &["shard committed", shard, "records=10"]).len(),
            1,
            "{log}"
        );
    }
    assert_eq!(
        lines_with(
            &log,
            &[
                "WARN",
                "predictor call failed; retrying",
                "attempt=1",
                "the server is busy"
            ]
        )
        .len(),
        1,
        "{log}"
    );
    assert!(
        !lines_with(
            &log,
            &[
                "WARN",
                "batch failed; splitting it",
                "instances=4",
                "unlucky"
            ]
        )
        .is_empty(),
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &["DEBUG", "instance failed", "unlucky"]).len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(
            &log,
            &[
                "job ended",
                "state=SUCCEEDED",
                "predictions=19",
                "errors=1",
                "records=20",
                "retries=1"
            ]
        )
        .len(),
        1,
        "{log}"
    );
}

#[test]
fn the_service_reports_creates_state_changes_and_store_writes() {
    let service = JobService::builder(InMemoryJobStore::new())
        .build()
        .unwrap();
    let executor = BatchExecutor::new(Arc::new(inputs()), Arc::new(EchoResolver));
    let project: ProjectName = "projects/trace-project".parse().unwrap();
    let ((), log) = capture(|| {
        service.create(&project, job("served_job")).unwrap();
        let ran = service.run_next(&executor).unwrap().unwrap();
        assert_eq!(ran.state(), State::Succeeded);
    });
    let name = "job=projects/trace-project/jobs/served_job";
    assert_eq!(
        lines_with(&log, &["INFO", "job created", name, "state=QUEUED"]).len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(
            &log,
            &[
                "DEBUG",
                "job store write",
                name,
                "op=\"insert\"",
                "revision=1"
            ]
        )
        .len(),
        1,
        "{log}"
    );
    for (from, to) in [("QUEUED", "PREPARING"), ("RUNNING", "SUCCEEDED")] {
        assert_eq!(
            lines_with(
                &log,
                &[
                    "job state changed",
                    name,
                    &format!("from={from}"),
                    &format!("state={to}")
                ]
            )
            .len(),
            1,
            "{log}"
        );
    }
    // The run in between, in its job's span.
    assert_eq!(
        lines_with(
            &log,
            &["job{job=\"served_job\"}", "job ended", "state=SUCCEEDED"]
        )
        .len(),
        1,
        "{log}"
    );
}
