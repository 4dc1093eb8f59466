//! The model families users have (scikit-learn, XGBoost, LightGBM, Keras),
//! converted by their own converters, through whole jobs on each backend:
//! JSON lines in, results out, compared with what the original library
//! computed (tests/data/models/expected.json, made by make_models.py there).
//! Labels compare exactly, probabilities and values within 1e-5. The
//! README's support table is [`TRACT_RUNS`]; onnxruntime runs every model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use batch_prediction::predict::{CancelHandle, JsonPredictions};
use batch_prediction::{
    BatchExecutor, Job, LocalStorage, PredictContext, PredictError, Predictor, State, SystemClock,
    Transition,
};
use serde_json::{Value, json};

use crate::onnx::{Backend, backends, close};

/// The models tract runs; for every other, loading fails with an error
/// that says why (the operators tract lacks, when that is why) and points
/// to the `ort` feature.
#[cfg(feature = "onnx")]
const TRACT_RUNS: &[&str] = &[
    "keras_mlp",
    "sklearn_random_forest_classifier",
    "xgboost_multiclass",
];

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(crate::data_path("models/expected.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(models) => models,
        _ => panic!("expected.json holds an object"),
    }
}

/// A job's outcome: the job, its results in input order (and their bytes),
/// and its error file entries.
struct Run {
    job: Job,
    results: Vec<Value>,
    bytes: Vec<u8>,
    errors: Vec<Value>,
}

/// The model file `name` under tests/data/models.
fn model_file(name: &str) -> PathBuf {
    crate::data_path(&format!("models/{name}.onnx"))
}

/// Runs the model at `uri` on `instances` (each given a `key` when it is
/// an object) as a job on `backend`, with batches of 5 and `workers`
/// workers.
fn run_job(backend: Backend, uri: &Path, instances: &[Value], workers: i64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("instances.jsonl");
    let lines: Vec<String> = instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let mut instance = instance.clone();
            if let Value::Object(fields) = &mut instance {
                fields.insert("key".into(), json!(i));
            }
            instance.to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let mut job = Job::from_value(json!({
        "jobId": "models",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [input],
            "outputPath": out,
            "region": "local",
            "uri": uri,
            "batchSize": "5",
            "maxWorkerCount": workers.to_string(),
        }
    }))
    .unwrap();
    job.apply(Transition::Queue, &SystemClock).unwrap();
    let storage = LocalStorage::new();
    let executor = BatchExecutor::new(Arc::new(storage.clone()), backend.resolver(storage));
    executor.run(&mut job, &CancelHandle::new()).unwrap();
    let files = |kind: &str| -> Vec<u8> {
        let mut shards: Vec<PathBuf> = std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(kind))
            .collect();
        shards.sort();
        shards
            .iter()
            .flat_map(|shard| std::fs::read(shard).unwrap())
            .collect()
    };
    let lines = |bytes: &[u8]| -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let bytes = files("prediction.results-");
    Run {
        results: lines(&bytes),
        errors: lines(&files("prediction.errors-")),
        bytes,
        job,
    }
}

/// Compares one output with the library's value: exactly, or within 1e-5
/// through arrays and `{label: probability}` objects.
fn matches(got: &Value, want: &Value, exact: bool, at: &str) {
    match (got, want) {
        _ if exact => assert_eq!(got, want, "{at}: labels compare exactly"),
        (Value::Object(g), Value::Object(w)) => {
            let (gk, wk): (Vec<_>, Vec<_>) = (g.keys().collect(), w.keys().collect());
            let (mut gs, mut ws) = (gk.clone(), wk.clone());
            gs.sort();
            ws.sort();
            assert_eq!(gs, ws, "{at}: the classes");
            for (k, w) in w {
                close(&g[k], w, &format!("{at}.{k}"));
            }
        }
        _ => close(got, want, at),
    }
}

#[test]
fn every_model_family_matches_its_own_library_through_a_job() {
    let models = expected();
    assert_eq!(models.len(), 16, "make_models.py writes 16 models");
    for backend in backends() {
        for (name, case) in &models {
            let instances = case["instances"].as_array().unwrap();
            let Run { job, results, .. } = run_job(backend, &model_file(name), instances, 2);
            let at = format!("{backend:?} {name}");
            let runs = match backend {
                #[cfg(feature = "onnx")]
                Backend::Tract => TRACT_RUNS.contains(&name.as_str()),
                #[cfg(feature = "ort")]
                Backend::Ort => true,
            };
            if !runs {
                assert_eq!(
                    job.state,
                    Some(State::Failed),
                    "{at}: the table says tract cannot run it"
                );
                let message = job.error_message.as_deref().unwrap_or_default();
                assert!(
                    message.ends_with(
                        "onnxruntime runs the whole ONNX standard: build with the `ort` feature and use OrtPredictor (`--predictor ort`)"
                    ),
                    "{at}: {message}"
                );
                continue;
            }
            assert_eq!(
                job.state,
                Some(State::Succeeded),
                "{at}: {:?}",
                job.error_message
            );
            let output = job.prediction_output.as_ref().unwrap();
            assert_eq!(output.error_count, Some(0), "{at}");
            let wanted = case["expected"].as_array().unwrap();
            assert_eq!(results.len(), wanted.len(), "{at}");
            let exact: Vec<&str> = case["exact"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            for (i, (got, want)) in results.iter().zip(wanted).enumerate() {
                assert_eq!(got["key"], json!(i), "{at}: results keep the input order");
                for (output, value) in want.as_object().unwrap() {
                    matches(
                        &got[output],
                        value,
                        exact.contains(&output.as_str()),
                        &format!("{at} [{i}] {output}"),
                    );
                }
                assert_eq!(
                    got.as_object().unwrap().len(),
                    want.as_object().unwrap().len() + 1,
                    "{at} [{i}]: the outputs and the key, nothing else: {got}"
                );
            }
        }
    }
}

/// The ORT_HINT every tract refusal ends with.
#[cfg(feature = "onnx")]
const ORT_HINT: &str = "onnxruntime runs the whole ONNX standard: build with the `ort` feature and use OrtPredictor (`--predictor ort`)";

#[test]
fn a_model_that_cannot_load_fails_the_job_with_the_runtimes_message() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(model_file("sklearn_gradient_boosting_regressor")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let not_onnx = crate::data_path("onnx/broken.onnx");
    let future = model_file("future_opset");
    let instance = [json!({"features": [1.0, 2.0, 3.0, 4.0]})];
    for backend in backends() {
        let expected: [(&Path, &str); 3] = match backend {
            #[cfg(feature = "onnx")]
            Backend::Tract => [
                (&truncated, "truncated.onnx: cannot read it: "),
                (&not_onnx, "broken.onnx: cannot read it: "),
                (
                    &future,
                    "future_opset.onnx: it imports opset 99 of the standard ONNX domain, and tract-onnx 0.23 is tested with opsets 9 to 18",
                ),
            ],
            #[cfg(feature = "ort")]
            Backend::Ort => [
                (&truncated, "truncated.onnx failed:Protobuf parsing failed."),
                (&not_onnx, "broken.onnx failed:Protobuf parsing failed."),
                (
                    &future,
                    "Opset 99 is under development and support for this is limited.",
                ),
            ],
        };
        for (model, why) in expected {
            let Run { job, errors, .. } = run_job(backend, model, &instance, 1);
            assert_eq!(job.state, Some(State::Failed), "{backend:?} {model:?}");
            let message = job.error_message.as_deref().unwrap();
            assert!(
                message.starts_with(&format!(
                    "model {:?} failed to load: ",
                    model.display().to_string()
                )),
                "{backend:?}: {message}"
            );
            assert!(message.contains(why), "{backend:?}: {message}");
            assert!(errors.is_empty(), "nothing was predicted");
        }
        #[cfg(feature = "onnx")]
        if backend == Backend::Tract {
            let Run { job, .. } = run_job(backend, &future, &instance, 1);
            assert!(job.error_message.unwrap().ends_with(ORT_HINT));
        }
    }
}

/// Good instances with bad ones between them: each bad one is an error of
/// its own, naming the input, and every good one is predicted as the
/// library predicts it.
fn check_isolation(backend: Backend, model: &str, bad: &[(Value, &str)]) {
    let case = &expected()[model];
    let good = case["instances"].as_array().unwrap();
    let wanted = case["expected"].as_array().unwrap();
    let mut instances = Vec::new();
    for (i, instance) in good.iter().enumerate() {
        instances.push(instance.clone());
        if let Some((b, _)) = bad.get(i) {
            instances.push(b.clone());
        }
    }
    let Run {
        job,
        results,
        errors,
        ..
    } = run_job(backend, &model_file(model), &instances, 2);
    let at = format!("{backend:?} {model}");
    assert_eq!(
        job.state,
        Some(State::Succeeded),
        "{at}: {:?}",
        job.error_message
    );
    let output = job.prediction_output.as_ref().unwrap();
    assert_eq!(output.prediction_count, Some(good.len() as i64), "{at}");
    assert_eq!(output.error_count, Some(bad.len() as i64), "{at}");
    let exact: Vec<&str> = case["exact"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for (i, (got, want)) in results.iter().zip(wanted).enumerate() {
        for (name, value) in want.as_object().unwrap() {
            matches(
                &got[name],
                value,
                exact.contains(&name.as_str()),
                &format!("{at} [{i}] {name}"),
            );
        }
    }
    assert_eq!(errors.len(), bad.len(), "{at}: {errors:?}");
    for (error, (instance, message)) in errors.iter().zip(bad) {
        let mut instance = instance.clone();
        if let Value::Object(fields) = &mut instance {
            fields.remove("key");
        }
        let mut logged = error["instance"].clone();
        if let Value::Object(fields) = &mut logged {
            fields.remove("key");
        }
        assert_eq!(logged, instance, "{at}");
        assert!(
            error["error"].as_str().unwrap().starts_with(message),
            "{at}: {error}"
        );
    }
}

#[test]
fn bad_instances_are_errors_of_their_own_and_the_rest_is_predicted() {
    let one_input = [
        (
            json!({"features": [1.0, 2.0, "3", 4.0]}),
            "input \"features\": expected numbers of shape [4]: got [1.0,2.0,\"3\",4.0]",
        ),
        (
            json!({"features": [[1.0, 2.0, 3.0, 4.0]]}),
            "input \"features\": expected numbers of shape [4]: got [[",
        ),
        (
            json!({"values": [1.0, 2.0, 3.0, 4.0]}),
            "the instance has no field \"features\" for the model's input of that name",
        ),
        (
            json!({"features": [1.0, 2.0, 1e39, 4.0]}),
            "input \"features\": expected numbers of shape [4]: got [1.0,2.0,1e+39,4.0]",
        ),
        (
            json!({"features": [1.0, null, 3.0, 4.0, 5.0]}),
            "input \"features\": expected numbers of shape [4]",
        ),
    ];
    for backend in backends() {
        check_isolation(backend, "xgboost_multiclass", &one_input);
    }
    #[cfg(feature = "ort")]
    if backends().contains(&Backend::Ort) {
        // Three inputs, one a string column; a bare value or an array of
        // one feeds each.
        check_isolation(
            Backend::Ort,
            "sklearn_column_transformer",
            &[
                (
                    json!({"color": 5, "size": 1.0, "weight": 1.0}),
                    "input \"color\": expected one of strings (or an array of one): got 5",
                ),
                (
                    json!({"color": "red", "size": [[1.0]], "weight": 1.0}),
                    "input \"size\": expected one of numbers (or an array of one): got [[1.0]]",
                ),
                (
                    json!({"color": "red", "size": 1.0}),
                    "the instance has no field \"weight\" for the model's input of that name (expected one of numbers (or an array of one))",
                ),
                (
                    json!(["red", 1.0, 1.0]),
                    "the model has 3 inputs (color, size, weight): an instance must be an object with a field for each",
                ),
                (
                    json!({"color": ["red", "blue"], "size": 1.0, "weight": 1.0}),
                    "input \"color\": expected one of strings (or an array of one): got [\"red\",\"blue\"]",
                ),
                (
                    json!({"color": ["red"], "size": [1.0], "weight": "heavy"}),
                    "input \"weight\": expected one of numbers (or an array of one): got \"heavy\"",
                ),
            ],
        );
    }
}

#[test]
fn results_are_byte_identical_whatever_the_workers() {
    for backend in backends() {
        let model = match backend {
            #[cfg(feature = "onnx")]
            Backend::Tract => "xgboost_multiclass",
            #[cfg(feature = "ort")]
            Backend::Ort => "sklearn_gradient_boosting_multiclass",
        };
        let case = &expected()[model];
        let instances: Vec<Value> = case["instances"]
            .as_array()
            .unwrap()
            .iter()
            .cycle()
            .take(60)
            .cloned()
            .collect();
        let one = run_job(backend, &model_file(model), &instances, 1);
        assert_eq!(one.results.len(), 60, "{backend:?}");
        for workers in [2, 4] {
            let many = run_job(backend, &model_file(model), &instances, workers);
            assert!(
                one.bytes == many.bytes,
                "{backend:?} {model}: {workers} workers wrote other bytes than 1"
            );
        }
    }
}

/// Intra-op threads split a batch's work inside onnxruntime: a network's
/// results stay the same to the bit, but a tree ensemble sums its trees in
/// another order (onnxruntime's own choice), so its values may move in the
/// last bits, within 1e-5 of the library's, and labels never change. The
/// default of one thread per worker is what makes results byte-identical
/// whatever the number of workers.
#[cfg(feature = "ort")]
#[test]
fn intra_op_threads_change_at_most_the_last_bits_of_tree_sums() {
    use batch_prediction::onnx::OrtOptions;
    use batch_prediction::{OrtPredictor, Predictor};
    let Some(library) = crate::onnx::ort_library() else {
        return;
    };
    let models = expected();
    for (model, bit_identical) in [
        ("keras_mlp", true),
        ("sklearn_logistic_multiclass", true),
        ("sklearn_gradient_boosting_multiclass", false),
        ("lightgbm_regressor", false),
    ] {
        let case = &models[model];
        let n = case["instances"].as_array().unwrap().len();
        let instances: Vec<Value> = case["instances"]
            .as_array()
            .unwrap()
            .iter()
            .cycle()
            .take(n * 20)
            .cloned()
            .collect();
        let predict = |threads: usize| {
            let options = OrtOptions::new()
                .with_library(library)
                .with_intra_threads(threads);
            let predictor = OrtPredictor::load(model_file(model), &options).unwrap();
            crate::onnx::predict(&predictor as &dyn Predictor, instances.clone()).unwrap()
        };
        let one = predict(1);
        let exact: Vec<&str> = case["exact"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        for threads in [2, 4] {
            let many = predict(threads);
            if bit_identical {
                assert!(
                    many == one,
                    "{model}: {threads} intra-op threads changed bits"
                );
            }
            for (i, (got, want)) in many
                .iter()
                .zip(case["expected"].as_array().unwrap().iter().cycle())
                .enumerate()
            {
                for (name, value) in want.as_object().unwrap() {
                    matches(
                        &got[name],
                        value,
                        exact.contains(&name.as_str()),
                        &format!("{model} {threads} threads [{i}] {name}"),
                    );
                }
            }
        }
    }
}

/// A predictor with only `predict`: the usual path, which the fast path
/// (`predict_json_lines`) must match byte for byte.
struct UsualPath(Arc<dyn Predictor>);

impl Predictor for UsualPath {
    fn predict(
        &self,
        batch: Vec<batch_prediction::Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        self.0.predict(batch, ctx)
    }
}

/// A predictor's both paths, counting the batches the fast path took.
struct Counted(Arc<dyn Predictor>, Arc<AtomicU64>);

impl Predictor for Counted {
    fn predict(
        &self,
        batch: Vec<batch_prediction::Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        self.0.predict(batch, ctx)
    }

    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        ctx: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        let took = self.0.predict_json_lines(lines, ctx, out);
        if took {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        took
    }
}

/// `value` as JSON text with its numbers written another way: floats in
/// exponent form, whole floats as integers; the first number `null` when
/// `null_first`.
fn respelled(value: &Value, null_first: &mut bool) -> String {
    match value {
        Value::Number(_) if std::mem::take(null_first) => "null".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) if n.is_f64() => format!("{f:e}"),
            _ => n.to_string(),
        },
        Value::Array(items) => format!(
            "[ {} ]",
            items
                .iter()
                .map(|v| respelled(v, null_first))
                .collect::<Vec<_>>()
                .join(" , ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}:{}", json!(k), respelled(v, null_first)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Lines that test the fast path's reading against the usual path's, in
/// batches of one:
/// each instance as written, respelled, with a `null`, with spaces and an
/// escaped key, with its fields repeated, with a field named as an output,
/// bare (for a model of one input); and lines no path predicts. With how
/// many lines, from the first, the fast path takes.
fn tricky_lines(
    instances: &[Value],
    inputs: &[String],
    outputs: &[String],
) -> (Vec<String>, usize) {
    // Lines the fast path takes, then lines it leaves to the usual path.
    let (mut taken, mut left) = (Vec::new(), Vec::new());
    for (i, instance) in instances.iter().enumerate() {
        let body = instance.to_string();
        let body = &body[1..body.len() - 1];
        taken.push(format!("{{\"key\":{i},{body}}}"));
        let mut no = false;
        taken.push(format!(
            "{{\"key\":{i},{}",
            &respelled(instance, &mut no)[1..]
        ));
        taken.push(format!(
            "  {{ \"key\" : \"k\\\"\\u00e9\\n{i}\" , {body} }}\t"
        ));
        taken.push(format!(
            "{{{body},\"meta\":{{\"a\":[1,{{\"b\":null}}],\"c\":\"\\ud83d\\ude00\"}}}}"
        ));
        if inputs.len() == 1 {
            taken.push(instance[&inputs[0]].to_string());
        }
        let mut yes = true;
        left.push(format!(
            "{{\"key\":{i},{}",
            &respelled(instance, &mut yes)[1..]
        ));
        left.push(format!("{{\"key\":{i},\"key\":{},{body}}}", i + 1));
        left.push(format!("{{\"key\":{i},{body},{body}}}"));
        left.push(format!("{{\"{}\":{i},{body}}}", outputs[0]));
        if inputs.len() == 1 {
            left.push(format!(
                "{{\"{}\":{}}}",
                inputs[0],
                json!([instance[&inputs[0]]])
            ));
        }
    }
    left.extend(
        [
            "{\"b64\": \"aGk=\"}",
            "not json",
            "[1,",
            "7",
            "{}",
            "{\"key\": \"\\ud800\"}",
            "\"text\"",
        ]
        .map(str::to_owned),
    );
    let count = taken.len();
    taken.extend(left);
    (taken, count)
}

/// Runs `lines` through the model at `uri` on `backend`, through the fast
/// path or only the usual one: the results, errors and errors_stats files,
/// and the batches the fast path took. (Not run concurrently: the input
/// file is the same one each time.)
fn run_lines(
    backend: Backend,
    uri: &Path,
    lines: &[String],
    fast: bool,
    passthrough: bool,
    batch: u32,
) -> (String, String, String, u64) {
    // One input path for every run, as errors name it.
    static INPUTS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let inputs = INPUTS.get_or_init(|| tempfile::tempdir().unwrap());
    let input = inputs.path().join("instances.jsonl");
    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut job = Job::from_value(json!({
        "jobId": "paths",
        "labels": {"bp-passthrough": if passthrough { "on" } else { "off" }},
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [input],
            "outputPath": out,
            "region": "local",
            "uri": uri,
            "batchSize": batch.to_string(),
            "maxWorkerCount": "2",
        }
    }))
    .unwrap();
    job.apply(Transition::Queue, &SystemClock).unwrap();
    let storage = LocalStorage::new();
    let inner = backend.resolver(storage.clone());
    let taken = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&taken);
    let resolver = move |model: &batch_prediction::ModelVersion,
                         job: &Job|
          -> Result<Arc<dyn Predictor>, PredictError> {
        let predictor = inner.resolve(model, job)?;
        Ok(if fast {
            Arc::new(Counted(predictor, Arc::clone(&count)))
        } else {
            Arc::new(UsualPath(predictor))
        })
    };
    let executor = BatchExecutor::new(Arc::new(storage), Arc::new(resolver));
    executor.run(&mut job, &CancelHandle::new()).unwrap();
    assert_eq!(job.state, Some(State::Succeeded), "{:?}", job.error_message);
    let file = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    (
        file("prediction.results-00000-of-00001"),
        file("prediction.errors-00000-of-00001"),
        file("prediction.errors_stats-00000-of-00001"),
        taken.load(Ordering::Relaxed),
    )
}

/// The ONNX predictors' fast path (numbers read straight from the text,
/// outputs written without `Value`s) writes exactly what their usual path
/// writes: every model family, on every backend that runs it, with and
/// without passthrough, on lines meant to catch it out.
#[test]
fn the_fast_path_writes_what_the_usual_path_writes_for_every_model_family() {
    for backend in backends() {
        for (name, case) in &expected() {
            #[cfg(feature = "onnx")]
            if backend == Backend::Tract && !TRACT_RUNS.contains(&name.as_str()) {
                continue;
            }
            let uri = model_file(name);
            let (inputs, outputs) = backend.names(&uri);
            let instances = case["instances"].as_array().unwrap();
            let (lines, takes) = tricky_lines(instances, &inputs, &outputs);
            for passthrough in [true, false] {
                let at = format!("{backend:?} {name} passthrough {passthrough}");
                // Batches of one: each line meets the fast path alone.
                let usual = run_lines(backend, &uri, &lines, false, passthrough, 1);
                let fast = run_lines(backend, &uri, &lines, true, passthrough, 1);
                assert_eq!(fast.0, usual.0, "{at}: results");
                assert_eq!(fast.1, usual.1, "{at}: errors");
                assert_eq!(fast.2, usual.2, "{at}: errors_stats");
                // And more: a `null` where a tree model takes it as missing;
                // without passthrough, a repeated `key` and a field named as
                // an output, dropped as the usual path drops them.
                assert!(
                    fast.3 >= takes as u64,
                    "{at}: the fast path took {} lines",
                    fast.3
                );
            }
            let clean: Vec<String> = instances.iter().map(Value::to_string).collect();
            let (_, _, _, taken) = run_lines(backend, &uri, &clean, true, true, 4);
            assert_eq!(
                taken,
                clean.len().div_ceil(4) as u64,
                "{backend:?} {name}: the fast path takes every clean batch"
            );
        }
    }
}
