//! The API's JSON, both ways: the reference's example exchanges, proto3 JSON
//! rules, unknown fields, and bad input with the exact error.

use batch_prediction::{Code, DataFormat, Etag, Job, ModelVersion, PredictionInput, State};
use serde_json::{Value, json};

/// Parses `value` as a job and writes it back.
fn round_trip(value: &Value) -> Value {
    Job::from_json(&value.to_string()).unwrap().to_json()
}

/// Example jobs in the shapes of the API reference
/// (<https://cloud.google.com/ai-platform/prediction/docs/reference/rest/v1/projects.jobs>),
/// and their round trips.
#[test]
fn reference_examples_round_trip() {
    let create = json!({"jobId":"census_batch_1","labels":{"team":"engineering"},
        "predictionInput":{"dataFormat":"JSON","inputPaths":["gs://b/in/*"],
        "outputPath":"gs://b/out","region":"us-central1",
        "versionName":"projects/my-proj/models/census/versions/v1","batchSize":"64","maxWorkerCount":"10"}});
    let response = json!({"jobId":"census_batch_1","createTime":"2019-01-01T00:00:00Z","state":"QUEUED",
        "labels":{"team":"engineering"},"etag":"BwWWja0YfJA=","predictionInput":create["predictionInput"]});
    let patch = json!({"labels":{"owner":"google","color":"blue"},"etag":"BwWWja0YfJA="});
    let finished = json!({"jobId":"census_batch_1","state":"SUCCEEDED",
        "createTime":"2019-01-01T00:00:00Z","startTime":"2019-01-01T00:01:00.500Z","endTime":"2019-01-01T00:11:00.123456789Z",
        "predictionInput":create["predictionInput"],
        "predictionOutput":{"outputPath":"gs://b/out","predictionCount":"1000","errorCount":"2","nodeHours":0.25}});
    let list_filter_job =
        json!({"jobId":"rnn_1","state":"FAILED","errorMessage":"model failed to load"});
    for example in [create, response, patch, finished, list_filter_job] {
        assert_eq!(round_trip(&example), example);
    }
}

#[test]
fn typed_fields_hold_what_was_sent() {
    let job = Job::from_json(
        r#"{"jobId":"j","state":"SUCCEEDED","etag":"BwWWja0YfJA=","jobPosition":3,
            "predictionInput":{"dataFormat":"TF_RECORD_GZIP","outputDataFormat":"CSV","inputPaths":["a","b"],
              "outputPath":"o","region":"r","modelName":"projects/my-proj/models/m","batchSize":16},
            "predictionOutput":{"predictionCount":"7","errorCount":1,"nodeHours":"0.5"}}"#,
    )
    .unwrap();
    assert_eq!(job.state(), State::Succeeded);
    assert_eq!(
        job.etag,
        Some(Etag::from_bytes([7, 5, 150, 141, 173, 24, 124, 144]))
    );
    assert_eq!(job.job_position, Some(3));
    let input = job.prediction_input.as_ref().unwrap();
    assert_eq!(input.data_format, Some(DataFormat::TfRecordGzip));
    assert_eq!(input.effective_output_data_format(), DataFormat::Csv);
    assert_eq!(
        input.model,
        Some(ModelVersion::model("projects/my-proj/models/m").unwrap())
    );
    assert_eq!(input.batch_size, Some(16));
    let output = job.prediction_output.as_ref().unwrap();
    assert_eq!(
        (
            output.prediction_count(),
            output.error_count(),
            output.node_hours()
        ),
        (7, 1, 0.5)
    );
    // int64 numbers and numeric strings come back as the API writes them.
    let out = job.to_json();
    assert_eq!(out["jobPosition"], "3");
    assert_eq!(out["predictionInput"]["batchSize"], "16");
    assert_eq!(out["predictionOutput"]["errorCount"], "1");
    assert_eq!(out["predictionOutput"]["nodeHours"], 0.5);
}

#[test]
fn absent_stays_absent_and_null_reads_as_absent() {
    let minimal = json!({"jobId": "j"});
    assert_eq!(round_trip(&minimal), minimal);
    let with_nulls = json!({"jobId": "j", "state": null, "labels": null, "etag": null,
        "trainingInput": null, "predictionInput": {"batchSize": null, "inputPaths": null, "uri": null}});
    assert_eq!(
        round_trip(&with_nulls),
        json!({"jobId": "j", "predictionInput": {}})
    );
    assert_eq!(Job::from_json("{}").unwrap(), Job::default());
    assert_eq!(Job::default().to_json(), json!({}));
}

#[test]
fn defaults_are_accessors_not_wire_values() {
    let job = Job::from_json(r#"{"predictionInput": {"dataFormat": "JSON"}}"#).unwrap();
    let input = job.prediction_input.as_ref().unwrap();
    assert_eq!(input.effective_output_data_format(), DataFormat::Json);
    assert_eq!(input.effective_batch_size(), 64);
    assert_eq!(input.effective_max_worker_count(), 10);
    assert_eq!(input.effective_signature_name(), "serving_default");
    assert_eq!(
        job.to_json(),
        json!({"predictionInput": {"dataFormat": "JSON"}})
    );
    let text = PredictionInput::default().set_output_data_format(DataFormat::Text);
    assert_eq!(
        text.effective_output_data_format(),
        DataFormat::Json,
        "TEXT output is JSON lines"
    );
}

#[test]
fn unknown_and_training_fields_survive() {
    let job = json!({
        "jobId": "j",
        "trainingInput": {"scaleTier": "BASIC", "workerCount": "3", "args": ["--x", "1"], "hyperparameters": {"goal": "MAXIMIZE"}},
        "trainingOutput": {"completedTrialCount": "4", "trials": [{"trialId": "1"}]},
        "somethingNew": {"nested": [1, 2.5, null, true]},
        "predictionInput": {
            "dataFormat": "JSON",
            "accelerator": {"count": "1", "type": "NVIDIA_TESLA_K80"},
            "framework": "TENSORFLOW"
        },
        "predictionOutput": {"futureField": "x"}
    });
    let parsed = Job::from_json(&job.to_string()).unwrap();
    assert_eq!(
        parsed.unknown_fields.keys().collect::<Vec<_>>(),
        ["somethingNew"]
    );
    let input = parsed.prediction_input.as_ref().unwrap();
    assert_eq!(
        input.unknown_fields.keys().collect::<Vec<_>>(),
        ["accelerator", "framework"]
    );
    assert_eq!(parsed.to_json(), job);
    // Unknown fields keep their order and values byte for byte.
    let text = serde_json::to_string(&parsed).unwrap();
    assert!(
        text.contains(
            r#""accelerator":{"count":"1","type":"NVIDIA_TESLA_K80"},"framework":"TENSORFLOW""#
        ),
        "{text}"
    );
}

#[test]
fn times_offsets_and_fractions() {
    let cases = [
        ("2019-01-01T00:00:00Z", "2019-01-01T00:00:00Z"),
        ("2019-01-01T05:30:00+05:30", "2019-01-01T00:00:00Z"),
        ("2018-12-31T19:00:00.1-05:00", "2019-01-01T00:00:00.100Z"),
        ("2019-01-01T00:00:00.123456Z", "2019-01-01T00:00:00.123456Z"),
        (
            "2019-01-01T00:00:00.000000001Z",
            "2019-01-01T00:00:00.000000001Z",
        ),
        ("2019-01-01t00:00:00z", "2019-01-01T00:00:00Z"),
    ];
    for (sent, written) in cases {
        let job = Job::from_value(json!({"createTime": sent})).unwrap();
        assert_eq!(job.to_json()["createTime"], written, "{sent}");
    }
}

/// Bad input, each with the exact error: the field, the value, what was expected.
#[test]
fn bad_inputs_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"predictionInput": {"batchSize": "abc"}}"#,
            "predictionInput.batchSize: invalid int64 \"abc\": expected an int64 as a decimal string or an integer at line 1 column 40",
        ),
        (
            r#"{"predictionInput": {"maxWorkerCount": 1.5}}"#,
            "predictionInput.maxWorkerCount: invalid int64 1.5: expected an int64 as a decimal string or an integer at line 1 column 43",
        ),
        (
            r#"{"jobPosition": "99999999999999999999"}"#,
            "jobPosition: \"99999999999999999999\" is out of the int64 range at line 1 column 39",
        ),
        (
            r#"{"predictionOutput": {"errorCount": []}}"#,
            "predictionOutput.errorCount: invalid int64 []: expected an int64 as a decimal string or an integer at line 1 column 39",
        ),
        (
            r#"{"createTime": "yesterday"}"#,
            "createTime: invalid timestamp \"yesterday\": expected RFC 3339 such as \"2014-10-02T15:01:23.045123456Z\" at line 1 column 27",
        ),
        (
            r#"{"etag": "not base64!"}"#,
            "etag: invalid base64 \"not base64!\": expected bytes in base64 at line 1 column 23",
        ),
        (
            r#"{"state": "DONE"}"#,
            "state: unknown value \"DONE\": expected one of STATE_UNSPECIFIED, QUEUED, PREPARING, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED at line 1 column 17",
        ),
        (
            r#"{"predictionInput": {"dataFormat": "json"}}"#,
            "predictionInput.dataFormat: unknown value \"json\": expected one of DATA_FORMAT_UNSPECIFIED, JSON, TEXT, TF_RECORD, TF_RECORD_GZIP, CSV at line 1 column 42",
        ),
        (
            r#"{"predictionInput": {"outputDataFormat": "FILE_LIST"}}"#,
            "predictionInput.outputDataFormat: unknown value \"FILE_LIST\": expected one of DATA_FORMAT_UNSPECIFIED, JSON, TEXT, TF_RECORD, TF_RECORD_GZIP, CSV at line 1 column 53",
        ),
        (
            r#"{"jobId": 7}"#,
            "jobId: expected a string, got 7 at line 1 column 12",
        ),
        (
            r#"{"predictionInput": {"inputPaths": "gs://b/x"}}"#,
            "predictionInput.inputPaths: expected a list of strings, got \"gs://b/x\" at line 1 column 46",
        ),
        (
            r#"{"predictionInput": {"inputPaths": ["a", 1]}}"#,
            "predictionInput.inputPaths[1]: expected a string, got 1 at line 1 column 44",
        ),
        (
            r#"{"labels": {"team": 1}}"#,
            "labels[\"team\"]: expected a string, got 1 at line 1 column 22",
        ),
        (
            r#"{"labels": ["team"]}"#,
            "labels: expected an object of strings, got a list at line 1 column 12",
        ),
        (
            r#"{"labels": {"a": "1", "a": "2"}}"#,
            "labels: duplicate key \"a\" at line 1 column 31",
        ),
        (
            r#"{"jobId": "a", "jobId": "b"}"#,
            "duplicate field \"jobId\" at line 1 column 22",
        ),
        (
            r#"{"predictionInput": {"region": "a", "region": "b"}}"#,
            "duplicate field \"predictionInput.region\" at line 1 column 44",
        ),
        (
            r#"{"predictionInput": {"batchSize": 1e300}}"#,
            "predictionInput.batchSize: 1e+300 is out of the int64 range that a JSON number holds exactly (±2^53): send it as a string at line 1 column 40",
        ),
        (
            r#"{"predictionInput": {"batchSize": 123456789012345678901234567890}}"#,
            "predictionInput.batchSize: 1.2345678901234568e+29 is out of the int64 range that a JSON number holds exactly (±2^53): send it as a string at line 1 column 65",
        ),
        (
            r#"{"endTime": "9999-12-31T23:59:59-01:00"}"#,
            "endTime: invalid timestamp \"9999-12-31T23:59:59-01:00\": out of range: expected 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z in UTC at line 1 column 40",
        ),
        (
            r#"{"endTime": "0000-01-01T00:00:00Z"}"#,
            "endTime: invalid timestamp \"0000-01-01T00:00:00Z\": out of range: expected 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z in UTC at line 1 column 35",
        ),
        (
            r#"{"endTime": "2016-12-31T23:59:60Z"}"#,
            "endTime: invalid timestamp \"2016-12-31T23:59:60Z\": leap seconds are not allowed at line 1 column 35",
        ),
        (
            r#"{"endTime": "2016-12-31T23:59:59.1234567891Z"}"#,
            "endTime: invalid timestamp \"2016-12-31T23:59:59.1234567891Z\": more than 9 fraction digits: expected at most nanoseconds at line 1 column 46",
        ),
        (
            r#"{"predictionInput": 5}"#,
            "invalid type: integer `5`, expected predictionInput to be a PredictionInput object at line 1 column 21",
        ),
        (
            r#"["jobId"]"#,
            "invalid type: sequence, expected a Job object at line 1 column 0",
        ),
        (
            r#"{"jobId": "j""#,
            "EOF while parsing an object at line 1 column 13",
        ),
        ("", "EOF while parsing a value at line 1 column 0"),
    ];
    let mut wrong = Vec::new();
    for (input, message) in cases {
        let err = Job::from_json(input).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{input}");
        let want = format!("invalid job JSON: {message}");
        if err.to_string() != want {
            wrong.push(format!("{input}\n  got:  {err}\n  want: {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn int64_accepts_integral_numbers_in_any_notation() {
    for (sent, written) in [
        (json!(64.0), "64"),
        (json!(6.4e1), "64"),
        (json!(-0.0), "0"),
        (json!(9007199254740992.0), "9007199254740992"),
    ] {
        let job = Job::from_value(json!({"predictionInput": {"batchSize": sent}})).unwrap();
        assert_eq!(
            job.to_json()["predictionInput"]["batchSize"],
            written,
            "{sent}"
        );
    }
    let job = Job::from_json(r#"{"jobPosition": 1e3}"#).unwrap();
    assert_eq!(job.job_position, Some(1000));
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "x".repeat(100_000);
    let err = Job::from_value(json!({"state": long}))
        .unwrap_err()
        .to_string();
    assert!(err.len() < 300, "{}", err.len());
    assert!(
        err.starts_with(&format!(
            "invalid job JSON: state: unknown value \"{}…: expected one of",
            "x".repeat(59)
        )),
        "{err}"
    );
}

#[test]
fn model_union_breaches_are_kept_for_validation_and_written_back() {
    let cases = [
        json!({"modelName": "projects/my-proj/models/m", "uri": "gs://m"}),
        json!({"uri": "a", "versionName": "projects/my-proj/models/m/versions/v", "modelName": "projects/my-proj/models/m"}),
        json!({"versionName": "projects/my-proj/models/m"}),
        json!({"modelName": "projects/my-proj/models/m-1", "versionName": "bad"}),
    ];
    for input in cases {
        let job = json!({"predictionInput": input});
        assert_eq!(Job::from_value(job.clone()).unwrap().to_json(), job);
    }
}

#[test]
fn unknown_fields_never_shadow_known_ones() {
    let mut job = Job::new("j", PredictionInput::default()).set_label("a", "b");
    job.unknown_fields.insert("jobId".into(), json!("evil"));
    job.unknown_fields.insert("labels".into(), json!({}));
    job.unknown_fields.insert("extra".into(), json!(1));
    let input = job.prediction_input.as_mut().unwrap();
    input.unknown_fields.insert("batchSize".into(), json!("1"));
    input.unknown_fields.insert("uri".into(), json!("x"));
    let text = serde_json::to_string(&job).unwrap();
    assert_eq!(
        text,
        r#"{"jobId":"j","labels":{"a":"b"},"predictionInput":{},"extra":1}"#
    );
}

#[test]
fn enum_and_etag_parsing_on_their_own() {
    assert_eq!(
        "TF_RECORD".parse::<DataFormat>().unwrap(),
        DataFormat::TfRecord
    );
    assert_eq!(
        "XML".parse::<DataFormat>().unwrap_err().to_string(),
        "unknown DataFormat value \"XML\": expected one of DATA_FORMAT_UNSPECIFIED, JSON, TEXT, TF_RECORD, TF_RECORD_GZIP, CSV"
    );
    assert_eq!(
        "queued".parse::<State>().unwrap_err().to_string(),
        "unknown State value \"queued\": expected one of STATE_UNSPECIFIED, QUEUED, PREPARING, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED"
    );
    for s in State::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        assert_eq!(
            serde_json::from_value::<State>(json!(s.to_string())).unwrap(),
            *s
        );
    }
    assert_eq!(
        "%%".parse::<Etag>().unwrap_err().to_string(),
        "invalid etag \"%%\": expected bytes in base64"
    );
    // URL-safe and unpadded base64 are read; standard padded base64 is written.
    let job = Job::from_value(json!({"etag": "-_8"})).unwrap();
    assert_eq!(job.to_json()["etag"], "+/8=");
}

#[test]
fn non_finite_node_hours_use_proto3_strings() {
    for (sent, written) in [
        (json!("NaN"), json!("NaN")),
        (json!("Infinity"), json!("Infinity")),
        (json!("-Infinity"), json!("-Infinity")),
    ] {
        let job = Job::from_value(json!({"predictionOutput": {"nodeHours": sent}})).unwrap();
        assert_eq!(job.to_json()["predictionOutput"]["nodeHours"], written);
    }
}
