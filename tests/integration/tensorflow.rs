//! TensorFlow SavedModels (feature `tensorflow`) against TensorFlow's own
//! outputs for the same models and instances (tests/data/tensorflow/models/
//! expected.json, written with the models by make_models.py there). The
//! tests need TensorFlow's C library, which `tests/tensorflow/library.sh`
//! installs from PyPI under target/ (or `TENSORFLOW_DYLIB_PATH` names):
//! without it they say SKIP, and under CI (`CI=true`) fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use batch_prediction::predict::CancelHandle;
use batch_prediction::tensorflow::{TensorflowOptions, TensorflowPredictor};
use batch_prediction::{
    BatchExecutor, DataFormat, Instance, Job, LocalStorage, PredictContext, Predictor, RunSummary,
    State, SystemClock, TensorflowResolver, Transition,
};
use serde_json::{Value, json};

use crate::data_path;

/// TensorFlow's library: `TENSORFLOW_DYLIB_PATH`, else the one
/// `tests/tensorflow/library.sh` installs; `None` (SKIP) when there is
/// none, which under CI is a failure.
pub fn library() -> Option<&'static Path> {
    static LIBRARY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tensorflow/library.sh");
    crate::library_or_skip(
        LIBRARY.get_or_init(|| crate::find_library("TENSORFLOW_DYLIB_PATH", script)),
        "TensorFlow library",
    )
}

fn options() -> TensorflowOptions {
    TensorflowOptions::new().with_library(library().expect("checked by the test"))
}

fn model(name: &str) -> PathBuf {
    data_path(&format!("tensorflow/models/{name}"))
}

fn expected() -> Value {
    let text = std::fs::read_to_string(model("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A queued job over `inputs` in `format`, its model the SavedModel `uri`.
fn job(inputs: &[String], output: &Path, format: &str, uri: &str, extra: Value) -> Job {
    let mut body = json!({
        "jobId": "tf_job",
        "predictionInput": {
            "dataFormat": format,
            "inputPaths": inputs,
            "outputPath": output,
            "region": "local",
            "uri": uri,
            "batchSize": "7"
        }
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body["predictionInput"][k] = v;
        }
    }
    let mut job = Job::from_value(body).unwrap();
    job.apply(Transition::Queue, &SystemClock).unwrap();
    job
}

fn run_with(job: &mut Job, options: TensorflowOptions) -> RunSummary {
    let resolver = TensorflowResolver::new(LocalStorage::new()).with_options(options);
    BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(resolver))
        .run(job, &CancelHandle::new())
        .unwrap()
}

/// The result lines of a finished job, in order.
fn results(output: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("prediction.results-"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// The error file entries of a finished job.
fn errors(output: &Path) -> Vec<Value> {
    std::fs::read_dir(output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("prediction.errors-"))
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// `ours`, a float32 output as this crate printed it, is exactly the
/// float32 TensorFlow computed (`theirs`, the double it is).
fn same_f32(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_f32(x, y))
        }
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
        }
        _ => false,
    }
}

#[test]
fn a_keras_mlp_predicts_what_tensorflow_predicts() {
    if library().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = data_path("tensorflow/examples.jsonl");
    let uri = model("mlp");
    let mut job = job(
        &[input.display().to_string()],
        &dir.path().join("out"),
        "JSON",
        uri.to_str().unwrap(),
        Value::Null,
    );
    let summary = run_with(&mut job, options());
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (100, 0));
    let want = expected();
    let want = want["mlp"]["predictions"].as_array().unwrap();
    let got = results(&dir.path().join("out"));
    assert_eq!(got.len(), 100);
    for (i, (ours, theirs)) in got.iter().zip(want).enumerate() {
        // The key passes through; the one output keeps its alias.
        assert_eq!(ours["id"], json!(i), "{ours}");
        assert!(
            same_f32(&ours["output_0"], theirs),
            "{i}: {ours} != {theirs}"
        );
    }
    // Threads and sessions change nothing: one shared session whose steps
    // run on a pool of 2 threads (its intra-op setting may not take: the
    // process's first session sized TensorFlow's one intra-op pool).
    let mut shared = job.clone();
    shared.prediction_input.as_mut().unwrap().output_path =
        Some(dir.path().join("shared").display().to_string());
    shared.state = None;
    shared.clear_output_only();
    shared.apply(Transition::Queue, &SystemClock).unwrap();
    let summary = run_with(
        &mut shared,
        options()
            .with_shared_session(true)
            .with_intra_threads(2)
            .with_inter_threads(2),
    );
    assert_eq!(summary.state, State::Succeeded);
    assert_eq!(
        std::fs::read(dir.path().join("shared/prediction.results-00000-of-00001")).unwrap(),
        std::fs::read(dir.path().join("out/prediction.results-00000-of-00001")).unwrap()
    );
}

#[test]
fn several_inputs_of_three_dtypes_and_two_outputs() {
    if library().is_none() {
        return;
    }
    let predictor =
        TensorflowPredictor::load(model("multi"), "serving_default", options()).unwrap();
    let sig = predictor.signature();
    let names = |specs: &[batch_prediction::tensorflow::TensorSpec]| {
        specs.iter().map(|s| s.alias.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&sig.inputs), ["count", "features", "word"]);
    assert_eq!(names(&sig.outputs), ["next", "score"]);
    assert!(!sig.takes_raw_records());
    let want = expected();
    let instances: Vec<Instance> = want["multi"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Instance::Json(v.clone()))
        .collect();
    let cancel = CancelHandle::new();
    let got = predictor
        .predict(
            instances,
            &PredictContext::new("serving_default", &cancel, 0),
        )
        .unwrap();
    let want = want["multi"]["predictions"].as_array().unwrap();
    for (ours, theirs) in got.iter().zip(want) {
        assert_eq!(ours["key"], theirs["key"]);
        // int64 exact, past 2^53.
        assert_eq!(ours["next"], theirs["next"], "{ours}");
        assert!(
            same_f32(&ours["score"], &theirs["score"]),
            "{ours} != {theirs}"
        );
        assert_eq!(
            ours.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["key", "next", "score"]
        );
    }
    assert_eq!(got[1]["next"], json!(9_007_199_254_740_994_i64));

    // A bad instance is its own error, naming the input; the rest predict.
    let bad = [
        (
            json!({"features": [1, 2], "count": 1, "word": "a"}),
            "input \"features\"",
        ),
        (
            json!({"features": [1, 2, 3], "count": 1.5, "word": "a"}),
            "input \"count\"",
        ),
        (
            json!({"features": [1, 2, 3], "count": 1, "word": 7}),
            "input \"word\"",
        ),
        (
            json!({"features": [1, 2, 3], "word": "a"}),
            "no field \"count\"",
        ),
        (json!([1, 2, 3]), "an object with a field for each"),
    ];
    for (instance, says) in bad {
        let e = predictor
            .predict(
                vec![Instance::Json(instance.clone())],
                &PredictContext::new("serving_default", &cancel, 0),
            )
            .unwrap_err();
        assert!(e.to_string().contains(says), "{instance}: {e}");
    }
}

#[test]
fn the_jobs_signature_name_picks_the_signature() {
    if library().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let want = expected();
    let lines: String = want["signatures"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| format!("{}\n", json!({"x": x})))
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let uri = model("signatures");
    for (signature, alias) in [("serving_default", "y"), ("tripled", "z")] {
        let out = dir.path().join(signature);
        let extra = json!({"signatureName": signature});
        let mut job = job(
            &[input.display().to_string()],
            &out,
            "JSON",
            uri.to_str().unwrap(),
            extra,
        );
        let summary = run_with(&mut job, options());
        assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
        let got: Vec<Value> = results(&out);
        let theirs = want["signatures"][signature].as_array().unwrap();
        for (ours, theirs) in got.iter().zip(theirs) {
            // An object of the outputs by alias, one output as well.
            assert!(
                same_f32(&ours[alias], theirs),
                "{alias}: {ours} != {theirs}"
            );
            assert_eq!(ours.as_object().unwrap().len(), 1, "{ours}");
        }
    }
    // An unknown signature fails the job, naming those the model has.
    let mut job = job(
        &[input.display().to_string()],
        &dir.path().join("unknown"),
        "JSON",
        uri.to_str().unwrap(),
        json!({"signatureName": "predict"}),
    );
    let summary = run_with(&mut job, options());
    assert_eq!(summary.state, State::Failed);
    let message = job.error_message.unwrap();
    assert!(
        message.contains("no signature \"predict\"")
            && message.contains("\"serving_default\", \"tripled\""),
        "{message}"
    );
}

#[test]
fn serialized_examples_from_tfrecord_files_go_to_the_signature_as_they_are() {
    if library().is_none() {
        return;
    }
    let want = expected();
    let want = want["parse_example"].as_array().unwrap();
    for (file, format) in [
        ("examples.tfrecord", "TF_RECORD"),
        ("examples.tfrecord.gz", "TF_RECORD_GZIP"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let input = data_path(&format!("tensorflow/{file}"));
        let uri = model("parse_example");
        let mut job = job(
            &[input.display().to_string()],
            &dir.path().join("out"),
            format,
            uri.to_str().unwrap(),
            Value::Null,
        );
        let summary = run_with(&mut job, options());
        assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
        assert_eq!((summary.prediction_count, summary.error_count), (100, 0));
        let got = results(&dir.path().join("out"));
        assert_eq!(got.len(), want.len());
        for (ours, theirs) in got.iter().zip(want) {
            assert_eq!(ours["id"], theirs["id"]);
            assert!(
                same_f32(&ours["total"], &theirs["total"]),
                "{ours} != {theirs}"
            );
        }
    }
}

#[test]
fn a_record_the_signature_cannot_parse_is_that_records_error() {
    if library().is_none() {
        return;
    }
    // A TFRecord file of two serialized Examples around a record that is
    // none: TensorFlow's parse fails on it alone (its message), the others
    // predict.
    let dir = tempfile::tempdir().unwrap();
    let records: Value = serde_json::from_str(
        &std::fs::read_to_string(data_path("tensorflow/records.json")).unwrap(),
    )
    .unwrap();
    let first = base64_decode(records["records_b64"][0].as_str().unwrap());
    let mut frames = batch_prediction::record::TfRecordWriter::new(Vec::new());
    for record in [&first[..], b"not a proto", &first[..]] {
        frames.write(record).unwrap();
    }
    let input = dir.path().join("in.tfrecord");
    std::fs::write(&input, frames.into_inner()).unwrap();
    let out = dir.path().join("out");
    let mut job = job(
        &[input.display().to_string()],
        &out,
        "TF_RECORD",
        model("parse_example").to_str().unwrap(),
        Value::Null,
    );
    let summary = run_with(&mut job, options());
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (2, 1));
    let errors = errors(&out);
    assert_eq!(errors[0]["record"], json!(1), "{errors:?}");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("TensorFlow: "),
        "{errors:?}"
    );
}

#[test]
fn strings_in_and_out_and_lines_as_they_are() {
    if library().is_none() {
        return;
    }
    let want = expected();
    let bytes = |key: &str| -> Vec<Vec<u8>> {
        want["strings"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| base64_decode(v.as_str().unwrap()))
            .collect()
    };
    let (inputs, outputs) = (bytes("inputs_b64"), bytes("outputs_b64"));
    let predictor =
        TensorflowPredictor::load(model("strings"), "serving_default", options()).unwrap();
    // A string, or bytes ({"b64": …}, a record); out as text, or
    // {"b64": …} when it is not UTF-8.
    let batch: Vec<Instance> = inputs
        .iter()
        .map(|b| match String::from_utf8(b.clone()) {
            Ok(text) => Instance::Json(json!(text)),
            Err(_) => Instance::Bytes(b.clone()),
        })
        .collect();
    let cancel = CancelHandle::new();
    let got = predictor
        .predict(batch, &PredictContext::new("serving_default", &cancel, 0))
        .unwrap();
    for (ours, theirs) in got.iter().zip(&outputs) {
        let want = match std::str::from_utf8(theirs) {
            Ok(text) => json!({"upper": text}),
            Err(_) => json!({"upper": batch_prediction::record::bytes_to_json(theirs)}),
        };
        assert_eq!(ours, &want);
    }
    // JSON and TEXT lines go in as they are, JSON or not, as AI Platform
    // gave them to a signature of one string.
    let dir = tempfile::tempdir().unwrap();
    let lines = "hello world\n{\"not\": \"parsed\"}\n\"quoted\"\n{not json\n";
    let input = dir.path().join("in.txt");
    std::fs::write(&input, lines).unwrap();
    for format in ["TEXT", "JSON"] {
        let out = dir.path().join(format);
        let mut job = job(
            &[input.display().to_string()],
            &out,
            format,
            model("strings").to_str().unwrap(),
            Value::Null,
        );
        let summary = run_with(&mut job, options());
        assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
        assert_eq!(summary.error_count, 0);
        assert_eq!(
            results(&out),
            [
                json!({"upper": "HELLO WORLD"}),
                json!({"upper": "{\"NOT\": \"PARSED\"}"}),
                json!({"upper": "\"QUOTED\""}),
                json!({"upper": "{NOT JSON"})
            ],
            "{format}"
        );
    }
}

/// Standard base64, for the fixtures.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = Instance::from_json(json!({"b64": text})).unwrap();
    match value {
        Instance::Bytes(bytes) => bytes,
        Instance::Json(_) => unreachable!("a b64 object decodes to bytes"),
    }
}

#[test]
fn text_lines_are_json_instances_for_other_signatures() {
    if library().is_none() {
        return;
    }
    // gcloud submits JSON lines as TEXT: the MLP reads them as JSON, and a
    // line that is not JSON is that line's error.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = std::fs::read_to_string(data_path("tensorflow/examples.jsonl")).unwrap();
    lines.push_str("{not json\n");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out");
    let mut job = job(
        &[input.display().to_string()],
        &out,
        "TEXT",
        model("mlp").to_str().unwrap(),
        Value::Null,
    );
    let summary = run_with(&mut job, options());
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    assert_eq!((summary.prediction_count, summary.error_count), (100, 1));
    let errors = errors(&out);
    assert_eq!(errors[0]["line"], json!(101));
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
}

#[test]
fn models_tensorflow_cannot_load_fail_the_job_with_its_message() {
    if library().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let to = dir.path().join(name);
        copy_dir(&model("mlp"), &to);
        to
    };
    // A truncated saved_model.pb.
    let truncated = copy("truncated");
    let pb = std::fs::read(truncated.join("saved_model.pb")).unwrap();
    std::fs::write(truncated.join("saved_model.pb"), &pb[..pb.len() / 2]).unwrap();
    // No variables/.
    let unvaried = copy("no_variables");
    std::fs::remove_dir_all(unvaried.join("variables")).unwrap();
    // An op this TensorFlow does not have (the graph's Relu renamed).
    let custom = copy("custom_op");
    let renamed = replace_all(&pb, b"Relu", b"Rxlu");
    assert_ne!(renamed, pb);
    std::fs::write(custom.join("saved_model.pb"), renamed).unwrap();
    // No saved_model.pb at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let input = data_path("tensorflow/examples.jsonl");
    for (folder, says) in [
        (&truncated, "TensorFlow SavedModel"),
        (&unvaried, "TensorFlow SavedModel"),
        (&custom, "Rxlu"),
        (&empty, "no saved_model.pb"),
    ] {
        let out = dir
            .path()
            .join(format!("out-{}", folder.display()).replace('/', "_"));
        let mut job = job(
            &[input.display().to_string()],
            &out,
            "JSON",
            folder.to_str().unwrap(),
            Value::Null,
        );
        let summary = run_with(&mut job, options());
        assert_eq!(summary.state, State::Failed, "{}", folder.display());
        let message = job.error_message.unwrap();
        assert!(message.contains(says), "{}: {message}", folder.display());
    }
    // A tag the model does not have.
    let e = TensorflowPredictor::load(
        model("mlp"),
        "serving_default",
        options().with_tags(["gpu"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("gpu"), "{e}");
    // Another library than the one open: one TensorFlow per process.
    let e = TensorflowPredictor::load(
        model("mlp"),
        "serving_default",
        TensorflowOptions::new().with_library("/usr/lib/libc.so.6"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("a process holds one"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn raw_records_go_only_to_a_signature_of_one_string() {
    if library().is_none() {
        return;
    }
    let strings =
        TensorflowPredictor::load(model("strings"), "serving_default", options()).unwrap();
    let mlp = TensorflowPredictor::load(model("mlp"), "serving_default", options()).unwrap();
    for format in [
        DataFormat::Text,
        DataFormat::TfRecord,
        DataFormat::TfRecordGzip,
    ] {
        assert!(strings.takes_raw_records(format));
        assert!(!mlp.takes_raw_records(format));
    }
}

/// The command line: `--predictor auto` (the default) finds the SavedModel,
/// and a missing library is named with how to get it.
#[cfg(feature = "cli")]
#[test]
fn the_command_line_runs_savedmodels_and_names_a_missing_library() {
    let Some(library) = library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.json");
    let body = json!({
        "jobId": "cli_tf",
        "predictionInput": {
            "dataFormat": "TF_RECORD",
            "inputPaths": [data_path("tensorflow/examples.tfrecord")],
            "outputPath": dir.path().join("out"),
            "region": "local",
            "uri": model("parse_example"),
        }
    });
    std::fs::write(&job_file, body.to_string()).unwrap();
    let run = |env: &[(&str, &std::ffi::OsStr)], args: &[&str]| {
        std::process::Command::new(crate::cli_program())
            .arg("run")
            .arg(&job_file)
            .args(args)
            .env_remove("TENSORFLOW_DYLIB_PATH")
            .env_remove("TF_CPP_MIN_LOG_LEVEL")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = run(&[("TENSORFLOW_DYLIB_PATH", library.as_os_str())], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["predictionOutput"]["predictionCount"], "100");
    // TensorFlow's INFO lines are quiet by default, those it prints while
    // its library loads (before it reads TF_CPP_MIN_LOG_LEVEL) too.
    assert!(!stderr.contains("Reading SavedModel"), "{stderr}");
    assert!(!stderr.contains("oneDNN"), "{stderr}");
    assert!(!stderr.contains("absl::InitializeLog"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "only the summary: {stderr}");
    // Asked for, they show.
    let out = run(
        &[
            ("TENSORFLOW_DYLIB_PATH", library.as_os_str()),
            ("TF_CPP_MIN_LOG_LEVEL", "0".as_ref()),
        ],
        &["--fresh"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Reading SavedModel"), "{stderr}");

    let missing = dir.path().join("no-such-library.so");
    let out = run(
        &[("TENSORFLOW_DYLIB_PATH", missing.as_os_str())],
        &["--predictor", "tensorflow", "--fresh"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TENSORFLOW_DYLIB_PATH") && stderr.contains("pip install tensorflow-cpu"),
        "{stderr}"
    );
}

/// The JSON-lines fast path (`predict_json_lines`, for signatures of
/// fixed-shape numeric inputs) writes exactly what `predict` returns, and
/// leaves every batch it cannot read so to `predict`.
#[test]
fn the_fast_path_writes_what_predict_returns() {
    if library().is_none() {
        return;
    }
    let mlp = TensorflowPredictor::load(model("mlp"), "serving_default", options()).unwrap();
    let cancel = CancelHandle::new();
    let ctx = PredictContext::new("serving_default", &cancel, 0);
    let mut lines: Vec<String> = std::fs::read_to_string(data_path("tensorflow/examples.jsonl"))
        .unwrap()
        .lines()
        .take(20)
        .map(str::to_owned)
        .collect();
    // Integers, null (NaN in), a bare instance, extra fields, spaces,
    // exponents.
    lines.extend(
        [
            r#"{"x": [1, 2, 3, 4], "key": "k"}"#,
            r#"{"x": [null, 2, 3, 4]}"#,
            r#"[0.5, -1e-3, 2E2, 0]"#,
            r#" { "tag": [1, {"a": null}], "x" : [1.5, 2.5, 3.5, 4.5] } "#,
        ]
        .map(str::to_owned),
    );
    let mut buf = Vec::new();
    let mut out = batch_prediction::predict::JsonPredictions::new(&mut buf);
    let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    assert!(mlp.predict_json_lines(&refs, &ctx, &mut out));
    out.finish();
    let batch: Vec<Instance> = lines
        .iter()
        .map(|l| Instance::from_json(serde_json::from_str(l).unwrap()).unwrap())
        .collect();
    let slow: String = mlp
        .predict(batch, &ctx)
        .unwrap()
        .iter()
        .map(|v| format!("{}\n", serde_json::to_string(v).unwrap()))
        .collect();
    assert_eq!(String::from_utf8(buf).unwrap(), slow);
    // What the fast path leaves to the usual one: a wrong shape, a string,
    // a b64 instance, invalid JSON.
    for line in [
        r#"{"x": [1, 2, 3]}"#,
        r#"{"x": ["1", 2, 3, 4]}"#,
        r#"{"b64": "aGk="}"#,
        "{not json",
    ] {
        let mut buf = Vec::new();
        let mut out = batch_prediction::predict::JsonPredictions::new(&mut buf);
        assert!(
            !mlp.predict_json_lines(&[line.as_bytes()], &ctx, &mut out),
            "{line}"
        );
    }
    // Signatures with a string input have no fast path.
    let strings =
        TensorflowPredictor::load(model("strings"), "serving_default", options()).unwrap();
    let mut buf = Vec::new();
    let mut out = batch_prediction::predict::JsonPredictions::new(&mut buf);
    assert!(!strings.predict_json_lines(&[b"\"a\""], &ctx, &mut out));
}

/// This thread's voluntary context switches so far (Linux): each time it
/// blocked, as it does waiting for another thread to finish its work.
#[cfg(target_os = "linux")]
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .expect("a voluntary_ctxt_switches line")
        .trim()
        .parse()
        .unwrap()
}

/// By default a session runs each step's ops in the thread that calls it
/// (TensorFlow honors a negative `inter_op_parallelism_threads` only
/// without per-session pools): run on a pool, every batch would wait for
/// the pool's thread, about one blocking wait per call, which took the
/// Keras MLP job from 0.9 s to 1.9 s per million instances.
#[cfg(target_os = "linux")]
#[test]
fn sessions_run_their_ops_in_the_calling_thread() {
    if library().is_none() {
        return;
    }
    let mlp = TensorflowPredictor::load(model("mlp"), "serving_default", options()).unwrap();
    let cancel = CancelHandle::new();
    let ctx = PredictContext::new("serving_default", &cancel, 0);
    let batch: Vec<Instance> = (0..64)
        .map(|i| Instance::Json(json!({"x": [i, 1.5, -2, 0.25]})))
        .collect();
    // The session is made, and its first step run, before counting.
    mlp.predict(batch.clone(), &ctx).unwrap();
    let calls = 300;
    let before = voluntary_switches();
    for _ in 0..calls {
        let got = mlp.predict(batch.clone(), &ctx).unwrap();
        assert_eq!(got.len(), 64);
    }
    let waits = voluntary_switches() - before;
    // Page faults on a busy machine may block now and then; a pool would
    // make it about once per call.
    assert!(
        waits < calls / 5,
        "the calling thread blocked {waits} times in {calls} calls: ops ran on another thread"
    );
}
