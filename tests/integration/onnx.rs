//! The ONNX predictors, tract (`onnx`) and onnxruntime (`ort`), against
//! onnxruntime's outputs for the same models and inputs
//! (tests/data/onnx/expected.json, made by make_models.py there). Each test
//! runs on every backend built; the `ort` backend needs the onnxruntime
//! library, which `tests/ort/library.sh` installs from PyPI under target/
//! (or `ORT_DYLIB_PATH` names): without it, its tests say SKIP, and under CI
//! (`CI=true`) fail.

use std::path::Path;
use std::sync::Arc;

use batch_prediction::predict::CancelHandle;
use batch_prediction::{
    BatchExecutor, Instance, Job, LocalStorage, ModelResolver, PredictContext, Predictor, State,
    SystemClock, Transition,
};
use serde_json::{Value, json};

/// A predictor this build has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `OnnxPredictor`, on tract.
    #[cfg(feature = "onnx")]
    Tract,
    /// `OrtPredictor`, on onnxruntime.
    #[cfg(feature = "ort")]
    Ort,
}

/// The backends this build has and can run here.
pub fn backends() -> Vec<Backend> {
    [
        #[cfg(feature = "onnx")]
        Some(Backend::Tract),
        #[cfg(feature = "ort")]
        ort_library().map(|_| Backend::Ort),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The onnxruntime library: `ORT_DYLIB_PATH`, else the one
/// `tests/ort/library.sh` installs; `None` (SKIP) when there is none, which
/// under CI is a failure.
#[cfg(feature = "ort")]
pub fn ort_library() -> Option<&'static Path> {
    static LIBRARY: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ort/library.sh");
    crate::library_or_skip(
        LIBRARY.get_or_init(|| crate::find_library("ORT_DYLIB_PATH", script)),
        "onnxruntime library (the ort backend)",
    )
}

#[cfg(feature = "ort")]
fn ort_options() -> batch_prediction::onnx::OrtOptions {
    batch_prediction::onnx::OrtOptions::new()
        .with_library(ort_library().expect("backends() checked"))
}

impl Backend {
    /// Loads the model at `path` (a file, or a directory holding `model.onnx`).
    pub fn load(self, path: &Path) -> Result<Arc<dyn Predictor>, String> {
        match self {
            #[cfg(feature = "onnx")]
            Backend::Tract => batch_prediction::OnnxPredictor::load(path)
                .map(|m| Arc::new(m) as Arc<dyn Predictor>)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "ort")]
            Backend::Ort => batch_prediction::OrtPredictor::load(path, &ort_options())
                .map(|m| Arc::new(m) as Arc<dyn Predictor>)
                .map_err(|e| e.to_string()),
        }
    }

    /// The model's input and output names, in the file's order.
    pub fn names(self, path: &Path) -> (Vec<String>, Vec<String>) {
        let own = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        match self {
            #[cfg(feature = "onnx")]
            Backend::Tract => {
                let m = batch_prediction::OnnxPredictor::load(path).unwrap();
                (own(m.input_names()), own(m.output_names()))
            }
            #[cfg(feature = "ort")]
            Backend::Ort => {
                let m = batch_prediction::OrtPredictor::load(path, &ort_options()).unwrap();
                (own(m.input_names()), own(m.output_names()))
            }
        }
    }

    /// The resolver a job on this backend runs with.
    pub fn resolver(self, storage: LocalStorage) -> Arc<dyn ModelResolver> {
        match self {
            #[cfg(feature = "onnx")]
            Backend::Tract => Arc::new(batch_prediction::OnnxResolver::new(storage)),
            #[cfg(feature = "ort")]
            Backend::Ort => {
                Arc::new(batch_prediction::OrtResolver::new(storage).with_options(ort_options()))
            }
        }
    }
}

fn expected() -> Value {
    let text = std::fs::read_to_string(crate::data_path("onnx/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model(backend: Backend, name: &str) -> Arc<dyn Predictor> {
    backend
        .load(&crate::data_path(&format!("onnx/{name}")))
        .unwrap()
}

/// Predicts one batch.
pub fn predict(model: &dyn Predictor, instances: Vec<Value>) -> Result<Vec<Value>, String> {
    let cancel = CancelHandle::new();
    let ctx = PredictContext::new("serving_default", &cancel, 0);
    model
        .predict(instances.into_iter().map(Instance::Json).collect(), &ctx)
        .map_err(|e| e.to_string())
}

/// Asserts `a` is `b` within 1e-5 (relative to values above 1), number by
/// number through arrays.
pub fn close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                close(x, y, &format!("{at}[{i}]"));
            }
        }
        _ => {
            let (x, y) = (
                a.as_f64()
                    .unwrap_or_else(|| panic!("{at}: {a} is not a number")),
                b.as_f64().unwrap(),
            );
            let tolerance = 1e-5 * y.abs().max(1.0);
            assert!((x - y).abs() <= tolerance, "{at}: {x} vs the oracle's {y}");
        }
    }
}

#[test]
fn classifier_matches_onnxruntime_in_one_batch() {
    for backend in backends() {
        classifier_matches_onnxruntime_on(backend);
    }
}

fn classifier_matches_onnxruntime_on(backend: Backend) {
    let (inputs, outputs) = backend.names(&crate::data_path("onnx/classifier.onnx"));
    assert_eq!(inputs, ["features"]);
    assert_eq!(outputs, ["probabilities", "class_id"]);
    let model = model(backend, "classifier.onnx");
    let cases = expected()["classifier"].as_array().unwrap().clone();
    let instances: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut instance = c["instance"].clone();
            instance["key"] = json!(i);
            instance
        })
        .collect();
    let predictions = predict(&*model, instances).unwrap();
    assert_eq!(predictions.len(), cases.len());
    for (i, (p, c)) in predictions.iter().zip(&cases).enumerate() {
        close(
            &p["probabilities"],
            &c["probabilities"],
            &format!("{backend:?} {i}"),
        );
        assert_eq!(p["class_id"], c["class_id"], "{i}: int64 exact");
        assert_eq!(p["key"], json!(i), "passthrough keeps the key");
        assert_eq!(p.get("features"), None, "inputs are not echoed");
    }
}

#[test]
fn a_fixed_batch_of_one_in_the_file_still_runs_whole_batches() {
    for backend in backends() {
        fixed_batch_of_one_on(backend);
    }
}

fn fixed_batch_of_one_on(backend: Backend) {
    let model = model(backend, "two_inputs.onnx");
    let cases = expected()["two_inputs"].as_array().unwrap().clone();
    let predictions = predict(
        &*model,
        cases.iter().map(|c| c["instance"].clone()).collect(),
    )
    .unwrap();
    for (p, c) in predictions.iter().zip(&cases) {
        close(&p["total"], &c["total"], "total");
        assert_eq!(p["b_twice"], c["b_twice"], "int64 beyond 2^53 stays exact");
    }
    assert_eq!(
        predictions[1]["b_twice"].as_i64(),
        Some(2305843009213693954)
    );
}

#[test]
fn bad_instances_are_errors_that_say_which_input_and_what_was_expected() {
    for backend in backends() {
        bad_instances_on(backend);
    }
}

fn bad_instances_on(backend: Backend) {
    let classifier = &*model(backend, "classifier.onnx");
    let two = &*model(backend, "two_inputs.onnx");
    let table: [(&dyn Predictor, Value, &str); 7] = [
        (
            classifier,
            json!({"key": 1}),
            "the instance has no field \"features\" for the model's input of that name (expected numbers of shape [4])",
        ),
        (
            classifier,
            json!({"features": [1.0, 2.0]}),
            "input \"features\": expected numbers of shape [4]: got [1.0,2.0]",
        ),
        (
            classifier,
            json!({"features": [1.0, "2", 3.0, 4.0]}),
            "input \"features\": expected numbers of shape [4]: got [1.0,\"2\",3.0,4.0]",
        ),
        (
            two,
            json!({"a": [1.0, 2.0], "b": 1.5}),
            "input \"b\": expected one of integers: got 1.5",
        ),
        (
            two,
            json!([1.0, 2.0]),
            "the model has 2 inputs (a, b): an instance must be an object with a field for each",
        ),
        (
            classifier,
            json!([[1.0, 2.0, 3.0, 4.0]]),
            "input \"features\": expected numbers of shape [4]: got [[1.0,2.0,3.0,4.0]]",
        ),
        (
            classifier,
            json!(null),
            "input \"features\": expected numbers of shape [4]: got null",
        ),
    ];
    for (model, instance, message) in table {
        assert_eq!(
            predict(model, vec![instance.clone()]).unwrap_err(),
            message,
            "{backend:?}: {instance}"
        );
    }
    // Numbers an f32 cannot hold are refused; an output JSON cannot hold
    // (an f32 sum overflowing to infinity) is an error, not a null.
    assert_eq!(
        predict(classifier, vec![json!({"features": [1e39, 1.0, 1.0, 1.0]})]).unwrap_err(),
        "input \"features\": expected numbers of shape [4]: got [1e+39,1.0,1.0,1.0]"
    );
    assert_eq!(
        predict(two, vec![json!({"a": [3e38, 3e38], "b": 1})]).unwrap_err(),
        "output \"total\" holds NaN or an infinity, which JSON cannot hold"
    );
    // A non-object instance feeds a one-input model.
    let bare = predict(classifier, vec![json!([5.1, 3.5, 1.4, 0.2])]).unwrap();
    assert_eq!(bare[0].as_object().unwrap().len(), 2);
    // Binary instances cannot feed a model.
    let cancel = CancelHandle::new();
    let err = classifier
        .predict(
            vec![Instance::Bytes(b"x".to_vec())],
            &PredictContext::new("", &cancel, 0),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a binary ({\"b64\": …}) instance cannot feed an ONNX model",
        "{backend:?}"
    );
}

#[test]
fn models_that_cannot_load_say_why() {
    for backend in backends() {
        let missing = backend
            .load(&crate::data_path("onnx/missing.onnx"))
            .err()
            .unwrap();
        assert!(
            missing.ends_with("missing.onnx: no such file"),
            "{backend:?}: {missing}"
        );
        let broken = backend
            .load(&crate::data_path("onnx/broken.onnx"))
            .err()
            .unwrap();
        // The runtime's own message, after the file's name.
        let why = match backend {
            #[cfg(feature = "onnx")]
            Backend::Tract => "broken.onnx: cannot read it",
            #[cfg(feature = "ort")]
            Backend::Ort => "broken.onnx: onnxruntime: Load model from",
        };
        assert!(broken.contains(why), "{backend:?}: {broken}");
        #[cfg(feature = "ort")]
        if backend == Backend::Ort {
            assert!(broken.ends_with("Protobuf parsing failed."), "{broken}");
        }
        // A directory holding model.onnx loads.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/iris/model");
        assert_eq!(backend.names(&dir).0, ["features"], "{backend:?}");
    }
}

fn iris_job(labels: &[(&str, &str)], model: &str) -> Job {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = tempfile::tempdir().unwrap().keep();
    let mut job = Job::from_value(json!({
        "jobId": "iris",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [format!("{root}/examples/iris/instances.jsonl")],
            "outputPath": out.display().to_string(),
            "region": "local",
            "uri": format!("{root}/{model}"),
            "batchSize": "8"
        }
    }))
    .unwrap()
    .set_labels(labels.iter().copied());
    job.apply(Transition::Queue, &SystemClock).unwrap();
    job
}

#[test]
fn a_job_runs_the_bundled_model_and_isolates_the_bad_instance() {
    for backend in backends() {
        bundled_model_job_on(backend);
    }
}

fn bundled_model_job_on(backend: Backend) {
    let storage = LocalStorage::new();
    let executor = BatchExecutor::new(Arc::new(storage.clone()), backend.resolver(storage));
    for (labels, passthrough) in [(vec![], true), (vec![("bp-passthrough", "off")], false)] {
        let mut job = iris_job(&labels, "examples/iris/model");
        let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
        assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
        assert_eq!((summary.prediction_count, summary.error_count), (30, 1));
        let out = job
            .prediction_input
            .as_ref()
            .unwrap()
            .output_path
            .clone()
            .unwrap();
        let results =
            std::fs::read_to_string(format!("{out}/prediction.results-00000-of-00001")).unwrap();
        let first: Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
        assert_eq!(first.get("key").is_some(), passthrough, "{first}");
        assert!(first["class_id"].is_i64());
        let errors =
            std::fs::read_to_string(format!("{out}/prediction.errors_stats-00000-of-00001"))
                .unwrap();
        assert_eq!(
            errors, "('input \"features\": expected numbers of shape [4]', 1)\n",
            "errors_stats groups by the message, without the value"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
    // A missing model fails the job with the loader's message.
    let mut job = iris_job(&[], "examples/iris/no-such-model");
    let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
    assert_eq!(summary.state, State::Failed);
    assert!(
        job.error_message
            .as_deref()
            .unwrap()
            .contains("no such file"),
        "{:?}",
        job.error_message
    );
}

/// A missing or wrong onnxruntime library fails the job at model load with a
/// message naming the file and how to get the library; nothing crashes. In
/// processes of their own, since a process loads onnxruntime once.
#[cfg(all(feature = "ort", feature = "cli"))]
#[test]
fn a_missing_or_wrong_onnxruntime_library_fails_the_job_and_says_why() {
    let program = crate::cli_program();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let not_a_library = crate::data_path("onnx/broken.onnx");
    for (library, why) in [
        (root.join("no-such-dir/libonnxruntime.so"), "no such file"),
        (not_a_library, "dlopen failed"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let job = out.path().join("job.json");
        std::fs::write(
            &job,
            json!({
                "jobId": "ort_library",
                "predictionInput": {
                    "dataFormat": "JSON",
                    "inputPaths": [root.join("examples/iris/instances.jsonl")],
                    "outputPath": out.path().join("output"),
                    "region": "local",
                    "uri": root.join("examples/iris/model"),
                }
            })
            .to_string(),
        )
        .unwrap();
        let run = std::process::Command::new(&program)
            .args(["run", "--predictor", "ort"])
            .arg(&job)
            .env("ORT_DYLIB_PATH", &library)
            .output()
            .unwrap();
        let stdout: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(stdout["state"], "FAILED", "{stdout}");
        let message = stdout["errorMessage"].as_str().unwrap();
        let expected = format!(
            "failed to load: onnxruntime: cannot load the library {}: ",
            library.display()
        );
        assert!(message.contains(&expected), "{message}");
        assert!(message.contains(why), "{message}");
        assert!(
            message.contains("Set ORT_DYLIB_PATH to onnxruntime's shared library"),
            "{message}"
        );
        assert_eq!(run.status.code(), Some(1), "a failed job, not a crash");
    }
}

/// One HTTP/1.1 request to the emulator on loopback; the JSON body of the
/// response.
#[cfg(all(feature = "ort", feature = "cli"))]
fn http(method: &str, port: u16, path: &str, body: Option<&Value>) -> Value {
    use std::io::{Read, Write};
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, json) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{response}"));
    serde_json::from_str(json).unwrap_or_else(|_| panic!("{response}"))
}

/// `batch-prediction serve --predictor ort` runs a job's model on onnxruntime: a
/// gradient-boosting regressor, which tract cannot load.
#[cfg(all(feature = "ort", feature = "cli"))]
#[test]
fn the_emulator_runs_models_on_onnxruntime() {
    let Some(library) = ort_library() else { return };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("models")).unwrap();
    std::fs::create_dir_all(root.path().join("data")).unwrap();
    std::fs::copy(
        crate::data_path("models/sklearn_gradient_boosting_regressor.onnx"),
        root.path().join("models/model.onnx"),
    )
    .unwrap();
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::data_path("models/expected.json")).unwrap(),
    )
    .unwrap();
    let case = &cases["sklearn_gradient_boosting_regressor"];
    let instances = case["instances"].as_array().unwrap();
    let lines: String = instances.iter().map(|i| format!("{i}\n")).collect();
    std::fs::write(root.path().join("data/in.jsonl"), lines).unwrap();
    let emulator = crate::Emulator::start(
        root,
        &["--predictor", "ort"],
        &[("ORT_DYLIB_PATH", library.as_os_str())],
    );
    let (port, root) = (emulator.port, &emulator.root);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let jobs = "/v1/projects/ort-test/jobs";
    let created = http(
        "POST",
        port,
        jobs,
        Some(&json!({
            "jobId": "on_ort",
            "predictionInput": {
                "dataFormat": "JSON", "inputPaths": ["gs://data/in.jsonl"],
                "outputPath": "gs://data/out", "region": "us-central1", "uri": "gs://models/model.onnx"
            }
        })),
    );
    assert_eq!(created["state"], "QUEUED", "{created}");
    let done = loop {
        let job = http("GET", port, &format!("{jobs}/on_ort"), None);
        if matches!(job["state"].as_str(), Some("SUCCEEDED" | "FAILED")) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {job}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(
        done["predictionOutput"]["predictionCount"],
        instances.len().to_string()
    );
    let results = std::fs::read_to_string(
        root.path()
            .join("data/out/prediction.results-00000-of-00001"),
    )
    .unwrap();
    for (i, (line, want)) in results
        .lines()
        .zip(case["expected"].as_array().unwrap())
        .enumerate()
    {
        let got: Value = serde_json::from_str(line).unwrap();
        close(&got["variable"], &want["variable"], &format!("[{i}]"));
    }
}

/// A model under a service's root (`gs://` mapped into a directory) that
/// cannot load is named by its URI in the job's error, never by the local
/// directory the service keeps it in.
#[test]
fn load_errors_name_the_models_uri_not_the_local_directory() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("models")).unwrap();
    std::fs::copy(
        crate::data_path("onnx/broken.onnx"),
        root.path().join("models/broken.onnx"),
    )
    .unwrap();
    let job = Job::from_value(json!({"jobId": "j"})).unwrap();
    for backend in backends() {
        let resolver = backend.resolver(LocalStorage::confined(root.path()));
        for (uri, shown) in [
            ("gs://models/broken.onnx", "gs://models/broken.onnx"),
            (
                "gs://models/missing",
                "ONNX model gs://models/missing: no such file",
            ),
        ] {
            let err = resolver
                .resolve(&batch_prediction::ModelVersion::uri(uri), &job)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(shown), "{backend:?} {uri}: {err}");
            assert!(
                !err.contains(&root.path().display().to_string()),
                "{backend:?} {uri}: {err}"
            );
        }
    }
}
