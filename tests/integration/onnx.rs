//! The ONNX predictor against onnxruntime's outputs for the same models and
//! inputs (tests/data/onnx/expected.json, made by make_models.py there).

use std::sync::Arc;

use batch_prediction::{
    BatchExecutor, CancelHandle, Instance, Job, LocalStorage, OnnxPredictor, OnnxResolver,
    PredictContext, Predictor, State, SystemClock, Transition,
};
use serde_json::{Value, json};

fn expected() -> Value {
    let text = std::fs::read_to_string(crate::data_path("onnx/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model(name: &str) -> OnnxPredictor {
    OnnxPredictor::load(crate::data_path(&format!("onnx/{name}"))).unwrap()
}

fn predict(model: &OnnxPredictor, instances: Vec<Value>) -> Result<Vec<Value>, String> {
    let cancel = CancelHandle::new();
    let ctx = PredictContext::new("serving_default", &cancel, 0);
    model
        .predict(instances.into_iter().map(Instance::Json).collect(), &ctx)
        .map_err(|e| e.to_string())
}

fn close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                close(x, y, &format!("{at}[{i}]"));
            }
        }
        _ => {
            let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let tolerance = 1e-5 * y.abs().max(1.0);
            assert!((x - y).abs() <= tolerance, "{at}: {x} vs onnxruntime's {y}");
        }
    }
}

#[test]
fn classifier_matches_onnxruntime_in_one_batch() {
    let model = model("classifier.onnx");
    assert_eq!(model.input_names(), ["features"]);
    assert_eq!(model.output_names(), ["probabilities", "class_id"]);
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
    let predictions = predict(&model, instances).unwrap();
    assert_eq!(predictions.len(), cases.len());
    for (i, (p, c)) in predictions.iter().zip(&cases).enumerate() {
        close(&p["probabilities"], &c["probabilities"], &format!("{i}"));
        assert_eq!(p["class_id"], c["class_id"], "{i}: int64 exact");
        assert_eq!(p["key"], json!(i), "passthrough keeps the key");
        assert_eq!(p.get("features"), None, "inputs are not echoed");
    }
}

#[test]
fn a_fixed_batch_of_one_in_the_file_still_runs_whole_batches() {
    let model = model("two_inputs.onnx");
    let cases = expected()["two_inputs"].as_array().unwrap().clone();
    let predictions = predict(
        &model,
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
    let classifier = model("classifier.onnx");
    let two = model("two_inputs.onnx");
    let table: [(&OnnxPredictor, Value, &str); 7] = [
        (
            &classifier,
            json!({"key": 1}),
            "the instance has no field \"features\" for the model's input of that name (expected numbers of shape [4])",
        ),
        (
            &classifier,
            json!({"features": [1.0, 2.0]}),
            "input \"features\": expected numbers of shape [4]: got [1.0,2.0]",
        ),
        (
            &classifier,
            json!({"features": [1.0, "2", 3.0, 4.0]}),
            "input \"features\": expected numbers of shape [4]: got [1.0,\"2\",3.0,4.0]",
        ),
        (
            &two,
            json!({"a": [1.0, 2.0], "b": 1.5}),
            "input \"b\": expected one of integers: got 1.5",
        ),
        (
            &two,
            json!([1.0, 2.0]),
            "the model has 2 inputs (a, b): an instance must be an object with a field for each",
        ),
        (
            &classifier,
            json!([[1.0, 2.0, 3.0, 4.0]]),
            "input \"features\": expected numbers of shape [4]: got [[1.0,2.0,3.0,4.0]]",
        ),
        (
            &classifier,
            json!(null),
            "input \"features\": expected numbers of shape [4]: got null",
        ),
    ];
    for (model, instance, message) in table {
        assert_eq!(
            predict(model, vec![instance.clone()]).unwrap_err(),
            message,
            "{instance}"
        );
    }
    // Numbers an f32 cannot hold are refused; an output JSON cannot hold
    // (an f32 sum overflowing to infinity) is an error, not a null.
    assert_eq!(
        predict(
            &classifier,
            vec![json!({"features": [1e39, 1.0, 1.0, 1.0]})]
        )
        .unwrap_err(),
        "input \"features\": expected numbers of shape [4]: got [1e+39,1.0,1.0,1.0]"
    );
    assert_eq!(
        predict(&two, vec![json!({"a": [3e38, 3e38], "b": 1})]).unwrap_err(),
        "output \"total\" holds NaN or an infinity, which JSON cannot hold"
    );
    // A non-object instance feeds a one-input model.
    let bare = predict(&classifier, vec![json!([5.1, 3.5, 1.4, 0.2])]).unwrap();
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
        "a binary ({\"b64\": …}) instance cannot feed an ONNX model"
    );
}

#[test]
fn models_that_cannot_load_say_why() {
    let missing = OnnxPredictor::load(crate::data_path("onnx/missing.onnx")).unwrap_err();
    assert!(
        missing.to_string().ends_with("missing.onnx: no such file"),
        "{missing}"
    );
    let broken = OnnxPredictor::load(crate::data_path("onnx/broken.onnx")).unwrap_err();
    assert!(
        broken.to_string().contains("broken.onnx: cannot read it"),
        "{broken}"
    );
    // A directory holding model.onnx loads.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/iris/model");
    assert_eq!(
        OnnxPredictor::load(dir).unwrap().input_names(),
        ["features"]
    );
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
    let storage = LocalStorage::new();
    let executor = BatchExecutor::new(
        Arc::new(storage.clone()),
        Arc::new(OnnxResolver::new(storage)),
    );
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
