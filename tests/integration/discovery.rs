//! Conformance with the API's discovery document (`tests/data/ml.v1.discovery.json`,
//! revision 20251213): every property of the Job, PredictionInput and
//! PredictionOutput schemas is a typed field here, every enum value is known,
//! and every int64 is written as a string.

use std::collections::BTreeSet;

use batch_prediction::{DataFormat, Job, State};
use serde_json::{Map, Value, json};

fn discovery() -> Value {
    let text = std::fs::read_to_string(crate::data_path("ml.v1.discovery.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Map<String, Value> {
    doc["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name}"))
}

/// A valid sample value for a property of the discovery document.
fn sample(doc: &Value, name: &str, prop: &Value, depth: usize) -> Value {
    match name {
        // Fields whose values this crate checks beyond their JSON type.
        "modelName" => return json!("projects/my-proj/models/census"),
        "versionName" => return json!("projects/my-proj/models/census/versions/v1"),
        "state" => return json!("RUNNING"),
        "dataFormat" => return json!("TF_RECORD"),
        "outputDataFormat" => return json!("CSV"),
        _ => {}
    }
    if let Some(r) = prop.get("$ref").and_then(Value::as_str) {
        if depth > 5 {
            return json!({});
        }
        let props = schema(doc, r);
        return Value::Object(
            props
                .iter()
                .map(|(k, p)| (k.clone(), sample(doc, k, p, depth + 1)))
                .collect(),
        );
    }
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        return values.last().unwrap().clone();
    }
    match (
        prop["type"].as_str(),
        prop.get("format").and_then(Value::as_str),
    ) {
        (Some("string"), Some("int64" | "uint64")) => json!("1234567890123"),
        (Some("string"), Some("google-datetime")) => json!("2019-01-01T00:00:00.123Z"),
        (Some("string"), Some("google-duration")) => json!("3.5s"),
        (Some("string"), Some("byte")) => json!("AAEC"),
        (Some("string"), _) => json!(format!("{name} value")),
        (Some("integer"), _) => json!(7),
        (Some("number"), _) => json!(0.25),
        (Some("boolean"), _) => json!(true),
        (Some("array"), _) => json!([sample(doc, name, &prop["items"], depth + 1)]),
        (Some("object"), _) => match prop.get("additionalProperties") {
            Some(item) => json!({"key": sample(doc, name, item, depth + 1)}),
            None => json!({}),
        },
        other => panic!("unhandled property type {other:?} for {name}"),
    }
}

/// A job with every property of the Job schema set, in each form of the model union.
fn every_field_jobs(doc: &Value) -> Vec<Value> {
    let job_schema = json!({"$ref": "GoogleCloudMlV1__Job"});
    let full = sample(doc, "job", &job_schema, 0);
    ["modelName", "versionName", "uri"]
        .iter()
        .map(|keep| {
            let mut job = full.clone();
            let input = job["predictionInput"].as_object_mut().unwrap();
            for key in ["modelName", "versionName", "uri"] {
                if key != *keep {
                    input.remove(key);
                }
            }
            job
        })
        .collect()
}

#[test]
fn every_schema_field_round_trips_into_typed_fields() {
    let doc = discovery();
    for value in every_field_jobs(&doc) {
        let job = Job::from_value(value.clone()).unwrap();
        assert!(job.unknown_fields.is_empty(), "{:?}", job.unknown_fields);
        assert!(
            job.prediction_input
                .as_ref()
                .unwrap()
                .unknown_fields
                .is_empty()
        );
        assert!(
            job.prediction_output
                .as_ref()
                .unwrap()
                .unknown_fields
                .is_empty()
        );
        assert!(job.training_input.is_some() && job.training_output.is_some());
        assert_eq!(job.to_json(), value);
    }
}

#[test]
fn every_field_we_write_is_in_the_schema() {
    let doc = discovery();
    let full = Job::from_value(every_field_jobs(&doc).remove(0))
        .unwrap()
        .to_json();
    for (schema_name, object) in [
        ("GoogleCloudMlV1__Job", &full),
        ("GoogleCloudMlV1__PredictionInput", &full["predictionInput"]),
        (
            "GoogleCloudMlV1__PredictionOutput",
            &full["predictionOutput"],
        ),
    ] {
        let known: BTreeSet<&String> = schema(&doc, schema_name).keys().collect();
        let written: BTreeSet<&String> = object.as_object().unwrap().keys().collect();
        let mut expected = known.clone();
        if schema_name.ends_with("PredictionInput") {
            // One of the union's three keys is written at a time.
            expected.retain(|k| !["versionName", "uri"].contains(&k.as_str()));
        }
        assert_eq!(written, expected, "{schema_name}");
    }
}

#[test]
fn enums_match_the_schema_exactly() {
    let doc = discovery();
    let names = |schema_name: &str, field: &str| -> Vec<String> {
        schema(&doc, schema_name)[field]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let states: Vec<String> = State::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(states, names("GoogleCloudMlV1__Job", "state"));
    let formats: Vec<String> = DataFormat::ALL.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        formats,
        names("GoogleCloudMlV1__PredictionInput", "dataFormat")
    );
    assert_eq!(
        formats,
        names("GoogleCloudMlV1__PredictionInput", "outputDataFormat")
    );
    for value in names("GoogleCloudMlV1__Job", "state") {
        let job = Job::from_value(json!({"state": value})).unwrap();
        assert_eq!(job.to_json()["state"], json!(value));
    }
}

#[test]
fn every_int64_is_read_from_a_number_and_written_as_a_string() {
    let doc = discovery();
    let mut checked = 0;
    for (schema_name, wrap) in [
        ("GoogleCloudMlV1__Job", None),
        ("GoogleCloudMlV1__PredictionInput", Some("predictionInput")),
        (
            "GoogleCloudMlV1__PredictionOutput",
            Some("predictionOutput"),
        ),
    ] {
        for (field, prop) in schema(&doc, schema_name) {
            if prop.get("format").and_then(Value::as_str) != Some("int64") {
                continue;
            }
            let inner = json!({ field.as_str(): 9007199254740993i64 });
            let value = match wrap {
                None => inner,
                Some(outer) => json!({ outer: inner }),
            };
            let out = Job::from_value(value).unwrap().to_json();
            let got = match wrap {
                None => &out[field.as_str()],
                Some(outer) => &out[outer][field.as_str()],
            };
            assert_eq!(got, &json!("9007199254740993"), "{schema_name}.{field}");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 5,
        "batchSize, maxWorkerCount, jobPosition, predictionCount, errorCount"
    );
}

#[test]
fn iam_policy_and_list_response_match_their_schemas() {
    let doc = discovery();
    let full = sample(&doc, "policy", &json!({"$ref": "GoogleIamV1__Policy"}), 0);
    assert!(full["bindings"][0]["condition"]["expression"].is_string());
    let policy = batch_prediction::iam::Policy::from_value(full.clone()).unwrap();
    assert_eq!(policy.to_json(), full, "every Policy field round-trips");

    let mut response = batch_prediction::service::ListJobsResponse::default();
    response.jobs.push(Job::default().set_job_id("j1"));
    response.next_page_token = Some("t".into());
    let written: BTreeSet<String> = response
        .to_json()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let known: BTreeSet<String> = schema(&doc, "GoogleCloudMlV1__ListJobsResponse")
        .keys()
        .cloned()
        .collect();
    assert_eq!(written, known);
}
