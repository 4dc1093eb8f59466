//! Models in a model server (feature `remote`), against real servers
//! started on loopback by `tests/remote/servers.sh`: KServe (a scikit-learn
//! classifier over its v1 and v2 protocols) and Seldon MLServer (its
//! scikit-learn runtime over v2). Without them (no Python, no PyPI) each
//! test says SKIP; under CI (`CI=true`) that is a failure.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use batch_prediction::predict::CancelHandle;
use batch_prediction::remote::Protocol;
use batch_prediction::{
    BatchExecutor, DataFormat, ExecutorConfig, InMemoryStorage, Job, ModelResolver, ModelVersion,
    PredictionInput, RemoteResolver, RetryPolicy, RunSummary, State, SystemClock, Transition,
};
use serde_json::Value;

use crate::{FaultProxy, required, start_servers};

struct Servers {
    kserve: String,
    mlserver: String,
    /// `instances.jsonl` (300 `{"key", "x"}`) and `expected.jsonl` (the
    /// model's own predictions, in process).
    data: std::path::PathBuf,
}

/// The servers, started once for this test binary (they stop when it exits).
fn servers() -> Option<&'static Servers> {
    static SERVERS: OnceLock<Result<Servers, String>> = OnceLock::new();
    let started = SERVERS.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/remote/servers.sh");
        let [kserve, mlserver, data] = start_servers(script, ["KSERVE", "MLSERVER", "DATA"])?;
        Ok(Servers {
            kserve,
            mlserver,
            data: data.into(),
        })
    });
    required(started, "model servers")
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A job over `instances` (JSON lines) naming `model`, run by `resolver`.
fn run(
    resolver: impl ModelResolver + 'static,
    instances: &[u8],
    model: ModelVersion,
    configure: impl FnOnce(PredictionInput) -> PredictionInput,
) -> (RunSummary, Job, InMemoryStorage) {
    run_with(
        resolver,
        instances,
        model,
        configure,
        ExecutorConfig::default(),
    )
}

/// [`run`] with an executor configuration.
fn run_with(
    resolver: impl ModelResolver + 'static,
    instances: &[u8],
    model: ModelVersion,
    configure: impl FnOnce(PredictionInput) -> PredictionInput,
    config: ExecutorConfig,
) -> (RunSummary, Job, InMemoryStorage) {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/instances.jsonl", instances.to_vec());
    let input = PredictionInput::new(
        DataFormat::Json,
        ["gs://b/in/instances.jsonl"],
        "gs://b/out",
        "us-central1",
        model,
    )
    .set_batch_size(64)
    .set_max_worker_count(2);
    let mut job = Job::new("remote_test", configure(input));
    job.apply(Transition::Queue, &SystemClock).unwrap();
    let summary = BatchExecutor::new(Arc::new(storage.clone()), Arc::new(resolver))
        .with_config(config)
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    (summary, job, storage)
}

/// Every line of the output files whose names start with `prefix`.
fn output(storage: &InMemoryStorage, prefix: &str) -> Vec<Value> {
    let mut names: Vec<String> = storage
        .locations()
        .into_iter()
        .filter(|l| l.starts_with(&format!("gs://b/out/{prefix}")))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            String::from_utf8(storage.get(n).unwrap())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn model() -> ModelVersion {
    ModelVersion::model("projects/my-project/models/iris").unwrap()
}

/// The same label, and probabilities within 1e-12 of the model's own.
fn assert_matches_in_process(
    results: &[Value],
    expected: &[Value],
    label: &str,
    probabilities: bool,
) {
    assert_eq!(results.len(), expected.len());
    for (got, want) in results.iter().zip(expected) {
        assert_eq!(got["key"], want["key"], "{got}");
        assert_eq!(got[label], want["label"], "{got}");
        if probabilities {
            let got_p = got["probabilities"].as_array().unwrap();
            let want_p = want["probabilities"].as_array().unwrap();
            assert_eq!(got_p.len(), 3);
            for (g, w) in got_p.iter().zip(want_p) {
                assert!(
                    (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-12,
                    "{got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn kserve_v1_predictions_equal_the_models_own() {
    let Some(servers) = servers() else { return };
    let instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    let expected = lines(&servers.data.join("expected.jsonl"));
    let resolver = RemoteResolver::new(&servers.kserve, Protocol::TfServing)
        .with_header("X-Test-Token", "secret");
    let (summary, job, storage) = run(resolver, &instances, model(), |i| {
        i.set_signature_name("scores")
    });
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (300, 0));
    let results = output(&storage, "prediction.results-");
    assert_matches_in_process(&results, &expected, "label", true);
    // The job's signatureName and the configured header reached the server.
    assert!(
        results
            .iter()
            .all(|r| r["signature"] == "scores" && r["token"] == "secret"),
        "{}",
        results[0]
    );
    // The default signature is not sent.
    let (_, _, storage) = run(
        RemoteResolver::new(&servers.kserve, Protocol::TfServing),
        &instances[..200],
        model(),
        |i| i,
    );
    assert!(
        output(&storage, "prediction.results-")
            .iter()
            .all(|r| r.get("signature").is_none())
    );
}

#[test]
fn kserve_v2_tensors_equal_the_models_own() {
    let Some(servers) = servers() else { return };
    let instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    let expected = lines(&servers.data.join("expected.jsonl"));
    let (summary, job, storage) = run(
        RemoteResolver::new(&servers.kserve, Protocol::V2),
        &instances,
        model(),
        |i| i,
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (300, 0));
    // `key` passes through; `x`, the input, does not; one field per output.
    let results = output(&storage, "prediction.results-");
    assert_eq!(
        results[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["key", "label", "probabilities"]
    );
    assert_matches_in_process(&results, &expected, "label", true);
}

#[test]
fn mlserver_v2_with_a_version_equals_the_models_own() {
    let Some(servers) = servers() else { return };
    let instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    let expected = lines(&servers.data.join("expected.jsonl"));
    let version = ModelVersion::version("projects/my-project/models/iris/versions/v1").unwrap();
    let (summary, job, storage) = run(
        RemoteResolver::new(&servers.mlserver, Protocol::V2),
        &instances,
        version,
        |i| i,
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    // MLServer's scikit-learn runtime answers `predict`, of shape [N, 1]:
    // one bare value per instance.
    let results = output(&storage, "prediction.results-");
    assert_matches_in_process(&results, &expected, "predict", false);
}

/// Bad instances among good ones: each is that instance's error, with the
/// server's message or ours, and every other instance is predicted.
#[test]
fn bad_instances_are_their_own_errors_on_every_server() {
    let Some(servers) = servers() else { return };
    let mut text = String::new();
    for k in 0..150 {
        match k {
            17 => text.push_str("{\"key\": 17, \"x\": [1, 2, 3]}\n"),
            99 => text.push_str("{\"key\": 99, \"x\": [1, 2, \"three\", 4]}\n"),
            _ => text.push_str(&format!("{{\"key\": {k}, \"x\": [{k}, 0.5, -1, 2]}}\n")),
        }
    }
    let version = ModelVersion::version("projects/my-project/models/iris/versions/v1").unwrap();
    let cases: [(&str, RemoteResolver, ModelVersion); 3] = [
        (
            "kserve v1",
            RemoteResolver::new(&servers.kserve, Protocol::TfServing),
            model(),
        ),
        (
            "kserve v2",
            RemoteResolver::new(&servers.kserve, Protocol::V2),
            model(),
        ),
        (
            "mlserver",
            RemoteResolver::new(&servers.mlserver, Protocol::V2),
            version,
        ),
    ];
    for (name, resolver, model) in cases {
        let (summary, job, storage) = run(resolver, text.as_bytes(), model, |i| i);
        assert_eq!(
            summary.state,
            State::Succeeded,
            "{name}: {:?}",
            job.error_message
        );
        assert_eq!(
            (summary.prediction_count, summary.error_count),
            (148, 2),
            "{name}: {:?}",
            output(&storage, "prediction.errors-")
        );
        let errors = output(&storage, "prediction.errors-");
        let keys: Vec<&Value> = errors.iter().map(|e| &e["instance"]["key"]).collect();
        assert_eq!(keys, [17, 99], "{name}: {errors:?}");
        for e in &errors {
            assert!(!e["error"].as_str().unwrap().is_empty(), "{name}: {e}");
        }
    }
}

#[test]
fn a_model_the_server_lacks_or_a_server_that_is_down_fails_the_job_before_predicting() {
    let Some(servers) = servers() else { return };
    let instances = b"{\"key\": 1, \"x\": [1, 2, 3, 4]}\n";
    let missing = ModelVersion::model("projects/my-project/models/absent").unwrap();
    for protocol in [Protocol::TfServing, Protocol::V2] {
        let (summary, job, storage) = run(
            RemoteResolver::new(&servers.kserve, protocol),
            instances,
            missing.clone(),
            |i| i,
        );
        assert_eq!(summary.state, State::Failed);
        let message = job.error_message.clone().unwrap();
        assert!(
            message.contains("\"absent\"") && message.contains("404"),
            "{protocol}: {message}"
        );
        assert!(output(&storage, "prediction.results-").is_empty());
    }
    // Nothing listens on the port of a listener just closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = RemoteResolver::new(format!("http://127.0.0.1:{port}"), Protocol::V2);
    let (summary, job, _) = run(down, instances, model(), |i| i);
    assert_eq!(summary.state, State::Failed);
    let message = job.error_message.clone().unwrap();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    // A job that names its model by uri needs the server's name for it.
    let uri = ModelVersion::uri("gs://models/iris");
    let (summary, job, _) = run(
        RemoteResolver::new(&servers.kserve, Protocol::V2),
        instances,
        uri.clone(),
        |i| i,
    );
    assert_eq!(summary.state, State::Failed);
    assert!(job.error_message.clone().unwrap().contains("--model NAME"));
    let named = RemoteResolver::new(&servers.kserve, Protocol::V2).with_model("iris");
    let (summary, job, _) = run(named, instances, uri, |i| i);
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
}

/// Quick retries, for the tests with faults.
fn quick(retries: u32) -> ExecutorConfig {
    ExecutorConfig::default().with_predict_retries(
        RetryPolicy::default()
            .with_max_retries(retries)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(20)),
    )
}

/// A server that sheds load (503 with `Retry-After`) for a while: the
/// batches are retried, the job succeeds, and its results are those of a
/// run without the faults.
#[test]
fn a_503_storm_is_retried_and_changes_nothing() {
    let Some(servers) = servers() else { return };
    let instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    let (clean, _, want) = run(
        RemoteResolver::new(&servers.kserve, Protocol::V2),
        &instances,
        model(),
        |i| i,
    );
    assert_eq!(clean.retries, 0);
    let proxy = FaultProxy::start(&servers.kserve, "fail-post:6");
    let (summary, job, got) = run_with(
        RemoteResolver::new(&proxy.url, Protocol::V2),
        &instances,
        model(),
        |i| i,
        quick(10),
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!(proxy.stats()["failed"], 6);
    assert_eq!(
        (
            summary.prediction_count,
            summary.error_count,
            summary.retries
        ),
        (300, 0, 6)
    );
    assert_eq!(
        output(&got, "prediction.results-"),
        output(&want, "prediction.results-")
    );
}

/// A server that keeps failing past the retries: each batch, tried three
/// times, is then split down to single instances, each failing with the
/// server's status; the job ends, every record accounted for.
#[test]
fn a_server_that_keeps_failing_fails_every_instance_after_the_retries() {
    let Some(servers) = servers() else { return };
    let instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    let proxy = FaultProxy::start(&servers.kserve, "fail-post:1000000");
    let (summary, _, storage) = run_with(
        RemoteResolver::new(&proxy.url, Protocol::TfServing),
        &instances,
        model(),
        |i| i,
        quick(2),
    );
    // 300 instances in batches of 64 (4 of 64, one of 44): 3 tries each,
    // then 2n - 2 calls to split a batch of n down to single instances.
    assert_eq!(
        (
            summary.prediction_count,
            summary.error_count,
            summary.retries
        ),
        (0, 300, 10)
    );
    assert_eq!(proxy.stats()["failed"], 4 * (3 + 126) + (3 + 86));
    let errors = output(&storage, "prediction.errors-");
    assert!(
        errors
            .iter()
            .all(|e| e["error"] == "the model server answered 503 Service Unavailable"),
        "{}",
        errors[0]
    );
}

/// A server that hangs on some instances: past the batch deadline the
/// call is dropped, the batch split, and only those instances fail.
#[test]
fn a_server_that_hangs_on_an_instance_fails_only_that_instance() {
    let Some(servers) = servers() else { return };
    let mut text = String::new();
    for k in 0..100 {
        let hang = if k == 10 { r#", "hang": 1"# } else { "" };
        text.push_str(&format!(r#"{{"key": {k}, "x": [1, 2, 3, 4]{hang}}}"#));
        text.push('\n');
    }
    let proxy = FaultProxy::start(&servers.kserve, "hang-if:\"hang\"");
    let (summary, job, storage) = run_with(
        RemoteResolver::new(&proxy.url, Protocol::TfServing),
        text.as_bytes(),
        model(),
        |i| i,
        quick(2).with_batch_deadline(Duration::from_secs(1)),
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (99, 1));
    // The batch of 64 holding it, then the halves holding it: 64 to 1.
    assert_eq!(summary.deadline_hits, 7);
    let errors = output(&storage, "prediction.errors-");
    assert_eq!(errors[0]["instance"]["key"], 10);
    assert_eq!(
        errors[0]["error"],
        "the batch took longer than its deadline of 1 s"
    );
}

/// A TF Serving answer with an instance's own error in its place: that
/// instance's error, the others predicted.
#[test]
fn an_error_in_an_instances_place_is_that_instances_error() {
    let Some(servers) = servers() else { return };
    let mut text = String::new();
    for k in 0..40 {
        let x = if k == 13 {
            "[0, 0, 0, 0]"
        } else {
            "[1, 2, 3, 4]"
        };
        text.push_str(&format!("{{\"key\": {k}, \"x\": {x}}}\n"));
    }
    let (summary, job, storage) = run(
        RemoteResolver::new(&servers.kserve, Protocol::TfServing),
        text.as_bytes(),
        model(),
        |i| i,
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (39, 1));
    let errors = output(&storage, "prediction.errors-");
    assert_eq!(errors[0]["instance"]["key"], 13);
    assert_eq!(
        errors[0]["error"],
        "the model server answered with an error for an instance: all-zero features"
    );
}

/// Answers that do not fit the batch: every instance an error saying
/// what was wrong, never a panic, the job finished.
#[test]
fn malformed_answers_are_errors_of_their_instances() {
    let Some(servers) = servers() else { return };
    let instances = b"{\"key\": 1, \"x\": [1, 2, 3, 4]}\n{\"key\": 2, \"x\": [4, 3, 2, 1]}\n";
    let cases = [
        (
            Protocol::TfServing,
            r#"{"predictions": []}"#,
            "the model server returned 0 predictions for 1 instance",
        ),
        (
            Protocol::TfServing,
            "<html>oops</html>",
            "the model server's answer is not JSON: <html>oops</html>",
        ),
        (
            Protocol::TfServing,
            r#"{"outputs": []}"#,
            r#"the model server's answer has no "predictions" array: {"outputs":[]}"#,
        ),
        (
            Protocol::V2,
            r#"{"outputs": [{"name": "y", "shape": [5], "data": [1, 2, 3, 4, 5]}]}"#,
            r#"output "y" has shape [5], not one row for each of 1 instance"#,
        ),
        (
            Protocol::V2,
            r#"{"model_name": "iris"}"#,
            r#"the model server's answer has no "outputs" array: {"model_name":"iris"}"#,
        ),
    ];
    for (protocol, body, message) in cases {
        let proxy = FaultProxy::start(&servers.kserve, &format!("reply:{body}"));
        let (summary, job, storage) = run_with(
            RemoteResolver::new(&proxy.url, protocol),
            instances,
            model(),
            |i| i,
            quick(0),
        );
        assert_eq!(
            summary.state,
            State::Succeeded,
            "{body}: {:?}",
            job.error_message
        );
        assert_eq!(
            (summary.prediction_count, summary.error_count),
            (0, 2),
            "{body}"
        );
        for e in output(&storage, "prediction.errors-") {
            assert_eq!(e["error"], message, "{body}");
        }
    }
}

/// A server that refuses large payloads (413): adaptive batches shrink
/// below its limit, the job succeeds, and few requests are refused.
#[test]
fn adaptive_batches_shrink_below_a_servers_payload_limit() {
    let Some(servers) = servers() else { return };
    let instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    let (_, _, want) = run(
        RemoteResolver::new(&servers.kserve, Protocol::TfServing),
        &instances,
        model(),
        |i| i,
    );
    // About 40 bytes an instance: a batch of 64 is over 2,000 bytes, 32 are not.
    let proxy = FaultProxy::start(&servers.kserve, "max-body:1600");
    let (summary, job, got) = run_with(
        RemoteResolver::new(&proxy.url, Protocol::TfServing),
        &instances,
        model(),
        |i| i,
        quick(0).with_adaptive_batch(true),
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (300, 0));
    assert_eq!(
        output(&got, "prediction.results-"),
        output(&want, "prediction.results-")
    );
    let refused = proxy.stats()["failed"].as_u64().unwrap();
    assert!((1..=8).contains(&refused), "{refused} requests refused");
}

/// A server that goes away mid-job (its listener killed), with the retry
/// policy the command line gives (`--max-retries 2`: 100 ms, doubling): once
/// connections have failed for a while with no answer between, the job
/// stops FAILED, naming the server and the last error, instead of spending
/// every batch's retries and splits on a server that is gone (it once slept
/// in back-off for over 12 minutes). The shards it finished are kept, and
/// the same job run again, with the server up, resumes from them.
#[test]
fn a_server_killed_mid_job_stops_the_job_and_a_rerun_resumes() {
    let Some(servers) = servers() else { return };
    let storage = InMemoryStorage::new();
    for f in 0..4 {
        let text: String = (0..500)
            .map(|k| format!("{{\"key\": {}, \"x\": [1, 2, 3, 4]}}\n", f * 10_000 + k))
            .collect();
        storage.put(&format!("gs://b/in/{f}.jsonl"), text.into_bytes());
    }
    let input = PredictionInput::new(
        DataFormat::Json,
        ["gs://b/in/*.jsonl"],
        "gs://b/out",
        "us-central1",
        model(),
    )
    .set_batch_size(4)
    .set_max_worker_count(1);
    let config = ExecutorConfig::default()
        .with_shard_target_bytes(1)
        .with_max_threads(1)
        .with_predict_retries(RetryPolicy::default().with_max_retries(2));
    let proxy = FaultProxy::start(&servers.kserve, "pass");
    let url = proxy.url.clone();
    let alive = Arc::new(std::sync::Mutex::new(Some(proxy)));
    let kill = Arc::clone(&alive);
    let mut job = Job::new("killed", input.clone());
    job.apply(Transition::Queue, &SystemClock).unwrap();
    let started = std::time::Instant::now();
    let summary = BatchExecutor::new(
        Arc::new(storage.clone()),
        Arc::new(RemoteResolver::new(&url, Protocol::TfServing)),
    )
    .with_config(config.clone())
    .with_observer(Arc::new(
        move |p: &batch_prediction::executor::Progress<'_>| {
            if p.predictions >= 1_000 {
                drop(kill.lock().unwrap().take());
            }
        },
    ))
    .run(&mut job, &CancelHandle::new())
    .unwrap();
    // Generous: the default gives up after 8 failures over 10 s; the point is
    // that it ends, where it once slept for more than 12 minutes.
    let took = started.elapsed();
    eprintln!("the job with a killed server ended in {took:?}");
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert!(alive.lock().unwrap().is_none(), "the server was killed");
    assert_eq!(summary.state, State::Failed, "{summary:?}");
    let message = job.error_message.clone().unwrap();
    assert!(
        message.contains(&format!(
            "the model server at {url}/v1/models/iris:predict is unreachable"
        )) && message.contains("failed"),
        "{message}"
    );
    let committed = storage
        .locations()
        .into_iter()
        .filter(|l| l.starts_with("gs://b/out/prediction.summary-"))
        .count();
    assert!((2..4).contains(&committed), "{committed} shards committed");

    // The same job, the server up: the finished shards are resumed.
    let mut again = Job::new("killed", input);
    again.apply(Transition::Queue, &SystemClock).unwrap();
    let summary = BatchExecutor::new(
        Arc::new(storage.clone()),
        Arc::new(RemoteResolver::new(&servers.kserve, Protocol::TfServing)),
    )
    .with_config(config)
    .run(&mut again, &CancelHandle::new())
    .unwrap();
    assert_eq!(summary.state, State::Succeeded, "{:?}", again.error_message);
    assert_eq!(summary.shards_resumed, committed);
    assert_eq!((summary.prediction_count, summary.error_count), (2_000, 0));
}

/// A v2 model that declares no inputs (MLServer's `iris_bare`): an object
/// instance of one field besides its `key` sends that field as the input
/// named after it, and the key passes through, as on v1; an object of two
/// fields besides the key is that instance's error, saying what to send.
#[test]
fn an_undeclared_v2_input_is_the_one_field_besides_the_key() {
    let Some(servers) = servers() else { return };
    let mut instances = std::fs::read(servers.data.join("instances.jsonl")).unwrap();
    instances.extend_from_slice(b"{\"key\": \"two\", \"x\": [1, 2, 3, 4], \"y\": 1}\n");
    let expected = lines(&servers.data.join("expected.jsonl"));
    let bare = ModelVersion::model("projects/my-project/models/iris_bare").unwrap();
    let (summary, job, storage) = run(
        RemoteResolver::new(&servers.mlserver, Protocol::V2),
        &instances,
        bare,
        |i| i,
    );
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (300, 1));
    let results = output(&storage, "prediction.results-");
    assert_eq!(
        results[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["key", "predict"]
    );
    assert_matches_in_process(&results, &expected, "predict", false);
    let errors = output(&storage, "prediction.errors-");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("one field besides \"key\""),
        "{errors:?}"
    );
}

/// The command line: `run --predictor remote --endpoint URL --protocol v2`.
#[cfg(feature = "cli")]
#[test]
fn the_command_line_runs_a_job_on_a_model_server() {
    let Some(servers) = servers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = dir.path().join("job.json");
    std::fs::write(
        &job,
        serde_json::json!({
            "jobId": "remote_cli",
            "predictionInput": {
                "dataFormat": "JSON",
                "inputPaths": [servers.data.join("instances.jsonl")],
                "outputPath": out,
                "region": "us-central1",
                "uri": "gs://models/iris",
            }
        })
        .to_string(),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(crate::cli_program())
            .arg("run")
            .arg(&job)
            .args(["--predictor", "remote", "--endpoint", &servers.kserve])
            .args(extra)
            .output()
            .unwrap()
    };
    let done = run(&["--protocol", "v2", "--model", "iris"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let finished: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(finished["state"], "SUCCEEDED");
    assert_eq!(finished["predictionOutput"]["predictionCount"], "300");
    // Without --model, a uri job cannot name the server's model.
    let failed = run(&["--protocol", "v2", "--fresh"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("--model NAME"));
}
