//! `Job::validate`: every rule, table-driven, with the exact violations.

use batch_prediction::{Code, DataFormat, Error, Job, ModelVersion, PredictionInput};
use serde_json::{Value, json};

/// A valid create request; each case below breaks it in one or more ways.
fn valid() -> Value {
    json!({
        "jobId": "census_batch_1",
        "labels": {"team": "engineering", "cost-center": "cc_42", "日本": "値"},
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": ["gs://b/in/*"],
            "outputPath": "gs://b/out",
            "region": "us-central1",
            "versionName": "projects/my-proj/models/census/versions/v1"
        }
    })
}

fn violations(job: &Value) -> Vec<(String, String)> {
    match Job::from_value(job.clone()).unwrap().validate() {
        Ok(()) => Vec::new(),
        Err(e) => e
            .violations()
            .iter()
            .map(|v| (v.field.clone(), v.description.clone()))
            .collect(),
    }
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut job = valid();
    edit(&mut job);
    job
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(f, d)| (f.to_string(), d.to_string()))
        .collect()
}

#[test]
fn valid_jobs_pass() {
    assert_eq!(violations(&valid()), pairs(&[]));
    let accepted = [
        with(|j| j["predictionInput"]["dataFormat"] = json!("TEXT")),
        with(|j| j["predictionInput"]["dataFormat"] = json!("TF_RECORD")),
        with(|j| j["predictionInput"]["dataFormat"] = json!("TF_RECORD_GZIP")),
        with(|j| j["predictionInput"]["outputDataFormat"] = json!("CSV")),
        with(|j| j["predictionInput"]["outputDataFormat"] = json!("TEXT")),
        // proto3's unset value: the default, JSON.
        with(|j| j["predictionInput"]["outputDataFormat"] = json!("DATA_FORMAT_UNSPECIFIED")),
        with(|j| j["predictionInput"]["batchSize"] = json!("1")),
        with(|j| j["predictionInput"]["maxWorkerCount"] = json!("1000000")), // no upper bound
        with(|j| j["predictionInput"]["batchSize"] = json!(i64::MAX)),
        with(|j| j["jobId"] = json!(format!("J{}", "_".repeat(127)))),
        with(|j| j["labels"] = json!({"k": ""})), // empty value
        with(|j| j["labels"] = json!({"a".repeat(63): "b".repeat(63)})),
        with(|j| j["labels"] = (0..64).map(|i| (format!("k{i}"), json!("v"))).collect()),
        // Output-only fields are ignored on create, as the API ignores them.
        with(|j| {
            j["state"] = json!("SUCCEEDED");
            j["createTime"] = json!("2019-01-01T00:00:00Z");
            j["predictionOutput"] = json!({"predictionCount": "-5"});
            j["jobPosition"] = json!("-1");
            j["errorMessage"] = json!("x");
        }),
    ];
    for job in accepted {
        assert_eq!(violations(&job), pairs(&[]), "{job}");
    }
    let by_model = |m: ModelVersion| {
        Job::new(
            "j",
            PredictionInput::new(DataFormat::Json, ["in"], "out", "local", m),
        )
    };
    by_model(ModelVersion::model("projects/p-1234/models/m").unwrap())
        .validate()
        .unwrap();
    by_model(ModelVersion::uri("file:///models/m"))
        .validate()
        .unwrap();
}

/// (how the valid job is broken, [(field, description)]).
#[test]
fn each_rule_reports_its_field() {
    type Case = (Value, &'static [(&'static str, &'static str)]);
    let long_key = "k".repeat(64);
    let cases: Vec<Case> = vec![
        (
            with(|j| {
                j.as_object_mut().unwrap().remove("jobId");
            }),
            &[("jobId", "required")],
        ),
        (with(|j| j["jobId"] = json!("")), &[("jobId", "required")]),
        (
            with(|j| j["jobId"] = json!("census-1")),
            &[(
                "jobId",
                "\"census-1\" has '-' at position 6: only letters, digits and underscores are allowed",
            )],
        ),
        (
            with(|j| j["jobId"] = json!("_x")),
            &[("jobId", "\"_x\" must start with a letter")],
        ),
        (
            with(|j| j["jobId"] = json!("a".repeat(129))),
            &[(
                "jobId",
                "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 129 characters long: at most 128 are allowed",
            )],
        ),
        (
            with(|j| j["labels"] = (0..65).map(|i| (format!("k{i:02}"), json!("v"))).collect()),
            &[("labels", "has 65 labels: at most 64 are allowed")],
        ),
        (
            with(|j| j["labels"] = json!({"": "v"})),
            &[("labels[\"\"]", "key is empty")],
        ),
        (
            with(|j| j["labels"] = json!({"Team": "v"})),
            &[(
                "labels[\"Team\"]",
                "key \"Team\" must start with a lowercase letter or an international character",
            )],
        ),
        (
            with(|j| j["labels"] = json!({"1team": "v"})),
            &[(
                "labels[\"1team\"]",
                "key \"1team\" must start with a lowercase letter or an international character",
            )],
        ),
        (
            with(|j| j["labels"] = json!({"team.a": "v"})),
            &[(
                "labels[\"team.a\"]",
                "key \"team.a\" has '.' at position 4: only lowercase letters, digits, underscores and dashes are allowed",
            )],
        ),
        (
            with(|j| j["labels"] = json!({"team": "Eng"})),
            &[(
                "labels[\"team\"]",
                "value \"Eng\" has 'E' at position 0: only lowercase letters, digits, underscores and dashes are allowed",
            )],
        ),
        (
            with(|j| j["labels"] = json!({"team": "a b"})),
            &[(
                "labels[\"team\"]",
                "value \"a b\" has ' ' at position 1: only lowercase letters, digits, underscores and dashes are allowed",
            )],
        ),
        (
            with(|j| j["labels"] = json!({long_key.clone(): "v".repeat(64)})),
            &[
                (
                    "labels[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"]",
                    "key \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\" is 64 characters long: at most 63 are allowed",
                ),
                (
                    "labels[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"]",
                    "value \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\" is 64 characters long: at most 63 are allowed",
                ),
            ],
        ),
        (
            with(|j| {
                j.as_object_mut().unwrap().remove("predictionInput");
            }),
            &[("predictionInput", "required")],
        ),
        (
            with(|j| {
                j.as_object_mut().unwrap().remove("predictionInput");
                j["trainingInput"] = json!({"scaleTier": "BASIC"});
            }),
            &[(
                "predictionInput",
                "required: training jobs (trainingInput) are not run by this crate",
            )],
        ),
        (
            with(|j| j["trainingInput"] = json!({"scaleTier": "BASIC"})),
            &[(
                "trainingInput",
                "must not be set with predictionInput: a job is either a training or a prediction job",
            )],
        ),
        (
            with(|j| {
                j["predictionInput"]
                    .as_object_mut()
                    .unwrap()
                    .remove("dataFormat");
            }),
            &[("predictionInput.dataFormat", "required")],
        ),
        (
            with(|j| j["predictionInput"]["dataFormat"] = json!("DATA_FORMAT_UNSPECIFIED")),
            &[(
                "predictionInput.dataFormat",
                "DATA_FORMAT_UNSPECIFIED is not a format: expected one of JSON, TEXT, TF_RECORD, TF_RECORD_GZIP",
            )],
        ),
        (
            with(|j| j["predictionInput"]["dataFormat"] = json!("CSV")),
            &[(
                "predictionInput.dataFormat",
                "CSV is an output format only: expected one of JSON, TEXT, TF_RECORD, TF_RECORD_GZIP",
            )],
        ),
        (
            with(|j| j["predictionInput"]["outputDataFormat"] = json!("TF_RECORD")),
            &[(
                "predictionInput.outputDataFormat",
                "TF_RECORD is an input format only: expected one of JSON, TEXT, CSV",
            )],
        ),
        (
            with(|j| j["predictionInput"]["outputDataFormat"] = json!("TF_RECORD_GZIP")),
            &[(
                "predictionInput.outputDataFormat",
                "TF_RECORD_GZIP is an input format only: expected one of JSON, TEXT, CSV",
            )],
        ),
        (
            with(|j| j["predictionInput"]["inputPaths"] = json!([])),
            &[("predictionInput.inputPaths", "required: at least one path")],
        ),
        (
            with(|j| j["predictionInput"]["inputPaths"] = json!(["a", ""])),
            &[("predictionInput.inputPaths[1]", "is empty")],
        ),
        (
            with(|j| j["predictionInput"]["outputPath"] = json!("")),
            &[("predictionInput.outputPath", "required")],
        ),
        (
            with(|j| {
                j["predictionInput"]
                    .as_object_mut()
                    .unwrap()
                    .remove("region");
            }),
            &[("predictionInput.region", "required")],
        ),
        (
            with(|j| {
                j["predictionInput"]
                    .as_object_mut()
                    .unwrap()
                    .remove("versionName");
            }),
            &[(
                "predictionInput",
                "one of modelName, versionName, uri is required",
            )],
        ),
        (
            with(|j| {
                j["predictionInput"]
                    .as_object_mut()
                    .unwrap()
                    .remove("versionName");
                j["predictionInput"]["uri"] = json!("");
            }),
            &[("predictionInput.uri", "is empty")],
        ),
        (
            with(|j| j["predictionInput"]["uri"] = json!("gs://m")),
            &[(
                "predictionInput",
                "versionName and uri are both set: set exactly one of modelName, versionName, uri",
            )],
        ),
        (
            with(|j| {
                j["predictionInput"]["uri"] = json!("gs://m");
                j["predictionInput"]["modelName"] = json!("projects/my-proj/models/m");
            }),
            &[(
                "predictionInput",
                "modelName, versionName and uri are all set: set exactly one of modelName, versionName, uri",
            )],
        ),
        (
            with(|j| j["predictionInput"]["versionName"] = json!("projects/my-proj/models/m")),
            &[(
                "predictionInput.versionName",
                "invalid version name \"projects/my-proj/models/m\": expected projects/{project}/models/{model}/versions/{version}",
            )],
        ),
        (
            with(|j| j["predictionInput"]["modelName"] = json!("projects/my-proj/models/m-1")),
            &[
                (
                    "predictionInput",
                    "modelName and versionName are both set: set exactly one of modelName, versionName, uri",
                ),
                (
                    "predictionInput.modelName",
                    "invalid model name \"projects/my-proj/models/m-1\": model name \"m-1\" has '-' at position 1: only letters, digits and underscores are allowed",
                ),
            ],
        ),
        (
            with(|j| j["labels"] = json!({"a\u{7}": "v"})),
            &[(
                "labels[\"a\\u0007\"]",
                "key \"a\\u{7}\" has '\\u{7}' at position 1: only lowercase letters, digits, underscores and dashes are allowed",
            )],
        ),
        (
            with(|j| j["predictionInput"]["batchSize"] = json!("0")),
            &[("predictionInput.batchSize", "must be positive, got 0")],
        ),
        (
            with(|j| j["predictionInput"]["maxWorkerCount"] = json!(-3)),
            &[("predictionInput.maxWorkerCount", "must be positive, got -3")],
        ),
    ];
    for (job, want) in cases {
        assert_eq!(violations(&job), pairs(want), "{job}");
    }
}

#[test]
fn every_violation_is_listed_not_just_the_first() {
    let job = json!({
        "jobId": "9lives",
        "labels": {"Bad": "ok", "good": "NO"},
        "predictionInput": {"dataFormat": "CSV", "outputDataFormat": "TF_RECORD", "inputPaths": [""],
                            "batchSize": "-1", "maxWorkerCount": "0"}
    });
    let got = violations(&job);
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "jobId",
            "labels[\"Bad\"]",
            "labels[\"good\"]",
            "predictionInput.dataFormat",
            "predictionInput.outputDataFormat",
            "predictionInput.inputPaths[0]",
            "predictionInput.outputPath",
            "predictionInput.region",
            "predictionInput",
            "predictionInput.batchSize",
            "predictionInput.maxWorkerCount",
        ]
    );
    let err: Error = Job::from_value(job).unwrap().validate().unwrap_err().into();
    assert_eq!(err.code(), Code::InvalidArgument);
    let body = err.to_status().to_json();
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(
        body["error"]["details"][0]["fieldViolations"]
            .as_array()
            .unwrap()
            .len(),
        11
    );
    assert!(err.to_string().starts_with("invalid job: jobId: \"9lives\" must start with a letter; labels[\"Bad\"]: key \"Bad\" must start with a lowercase letter or an international character; "));
}

/// The README's first command runs on this file: it must stay valid.
#[test]
fn bundled_sample_job_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample/job.json");
    let job = Job::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    job.validate().unwrap();
    let input = job.prediction_input.unwrap();
    assert_eq!(
        (
            input.effective_batch_size(),
            input.effective_max_worker_count()
        ),
        (8, 2)
    );
}
