//! The `batch-prediction` command line: each subcommand run as a user runs
//! it, here and against the emulator.

use std::process::{Command, Output};

use serde_json::{Value, json};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batch-prediction"))
        .args(args)
        .env_remove("CLOUDSDK_CORE_PROJECT")
        .env_remove("BATCH_PREDICTION_ENDPOINT")
        .env_remove("CLOUDSDK_AUTH_ACCESS_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the bundled sample job writing into `dir`.
fn sample_job(dir: &std::path::Path) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut job: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/examples/sample/job.json")).unwrap(),
    )
    .unwrap();
    job["predictionInput"]["inputPaths"] =
        json!([format!("{root}/examples/sample/instances.jsonl")]);
    job["predictionInput"]["outputPath"] = json!(dir.join("out"));
    let path = dir.join("job.json");
    std::fs::write(&path, job.to_string()).unwrap();
    path
}

#[test]
fn verbose_logs_the_jobs_events_on_stderr_and_a_bad_rust_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = sample_job(dir.path());
    let job = job.to_str().unwrap();
    let quiet = cli(&["run", job, "--predictor", "echo"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet.stderr));
    assert!(
        !text(&quiet.stderr).contains("batch_prediction"),
        "{}",
        text(&quiet.stderr)
    );
    let loud = cli(&["-v", "run", job, "--predictor", "echo", "--fresh"]);
    assert_eq!(loud.status.code(), Some(0), "{}", text(&loud.stderr));
    let log = text(&loud.stderr);
    for event in [
        "job running",
        "shard committed",
        "job ended state=SUCCEEDED",
    ] {
        assert!(
            log.contains(event) && log.contains("job{job="),
            "{event}: {log}"
        );
    }
    assert!(!log.contains("DEBUG"), "-v is info: {log}");
    // The finished job's JSON alone on stdout, still.
    let finished: Value = serde_json::from_slice(&loud.stdout).unwrap();
    assert_eq!(finished["state"], "SUCCEEDED");

    let bad = Command::new(env!("CARGO_BIN_EXE_batch-prediction"))
        .args(["run", job, "--predictor", "echo"])
        .env("RUST_LOG", "batch_prediction=[")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("RUST_LOG="),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn durations_past_a_day_are_refused_naming_the_flag() {
    for args in [
        &["run", "job.json", "--batch-deadline", "1e19"][..],
        &["serve", "--root", "r", "--request-deadline", "86401"][..],
    ] {
        let refused = cli(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let message = text(&refused.stderr);
        assert!(
            message.contains(args[args.len() - 2]) && message.contains("at most 86400"),
            "{message}"
        );
    }
}

#[test]
fn run_validate_and_plan_a_job_here() {
    let dir = tempfile::tempdir().unwrap();
    let job = sample_job(dir.path());
    let job = job.to_str().unwrap();

    let valid = cli(&["validate", job]);
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid.stderr));
    assert!(text(&valid.stdout).ends_with("a valid jobs.create request\n"));
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"jobId": "1bad", "predictionInput": {"dataFormat": "CSV"}}"#,
    )
    .unwrap();
    let invalid = cli(&["validate", bad.to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(
        text(&invalid.stdout).contains("jobId: \"1bad\" must start with a letter\n"),
        "{}",
        text(&invalid.stdout)
    );
    assert!(
        text(&invalid.stderr).ends_with(": 6 violations\n"),
        "{}",
        text(&invalid.stderr)
    );

    let plan = cli(&["plan", job]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(
        text(&plan.stdout).starts_with("1 input file, "),
        "{}",
        text(&plan.stdout)
    );
    assert!(
        text(&plan.stdout).contains(", 1 shard, "),
        "{}",
        text(&plan.stdout)
    );

    let run = cli(&["run", job, "--predictor", "echo"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let finished: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(finished["state"], "SUCCEEDED");
    assert_eq!(finished["predictionOutput"]["predictionCount"], "21");
    let summary = text(&run.stderr);
    assert!(
        summary.contains("SUCCEEDED: 21 predictions, 1 error, 22 records in "),
        "{summary}"
    );
    // A missing file is a usage error, exit 2.
    let missing = cli(&["run", "no-such-job.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read no-such-job.json"));
}

#[test]
fn submit_prediction_takes_gclouds_flags_and_runs_here() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let input = format!("{root}/examples/sample/instances.jsonl");
    let output = dir.path().join("out");
    let out = output.to_str().unwrap();
    let submitted = cli(&[
        "submit",
        "prediction",
        "census_1",
        "--model-dir",
        "gs://b/model",
        "--input-paths",
        &input,
        "--output-path",
        out,
        "--region",
        "us-central1",
        "--data-format",
        "json",
        "--batch-size",
        "7",
        "--max-worker-count",
        "2",
        "--labels",
        "team=ml,env=dev",
        "--predictor",
        "echo",
        "--format",
        "json",
    ]);
    assert_eq!(
        submitted.status.code(),
        Some(0),
        "{}",
        text(&submitted.stderr)
    );
    let job: Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(job["jobId"], "census_1");
    assert_eq!(job["state"], "SUCCEEDED");
    assert_eq!(job["labels"], json!({"env": "dev", "team": "ml"}));
    assert_eq!(job["predictionInput"]["batchSize"], "7");
    assert_eq!(job["predictionInput"]["maxWorkerCount"], "2");
    assert_eq!(job["predictionInput"]["uri"], "gs://b/model");
    assert!(output.join("prediction.results-00000-of-00001").is_file());

    // gcloud's spellings only; errors name the flag.
    let wrong = cli(&[
        "submit",
        "prediction",
        "j",
        "--model-dir",
        "m",
        "--input-paths",
        "x",
        "--output-path",
        "y",
        "--region",
        "r",
        "--data-format",
        "TF_RECORD",
    ]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains("--data-format"),
        "{}",
        text(&wrong.stderr)
    );
    let labels = cli(&[
        "submit",
        "prediction",
        "j",
        "--model-dir",
        "m",
        "--input-paths",
        "x",
        "--output-path",
        "y",
        "--region",
        "r",
        "--data-format",
        "tf-record",
        "--labels",
        "novalue",
    ]);
    assert_eq!(labels.status.code(), Some(2));
    assert!(
        text(&labels.stderr).contains("\"novalue\" is not KEY=VALUE"),
        "{}",
        text(&labels.stderr)
    );
    // --model needs a project.
    let model = cli(&[
        "submit",
        "prediction",
        "j",
        "--model",
        "census",
        "--input-paths",
        "x",
        "--output-path",
        "y",
        "--region",
        "r",
        "--data-format",
        "json",
    ]);
    assert_eq!(model.status.code(), Some(2));
    assert!(text(&model.stderr).contains("set --project or CLOUDSDK_CORE_PROJECT"));
}

#[cfg(feature = "rest")]
#[test]
fn submit_describe_list_and_cancel_on_the_emulator() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("data")).unwrap();
    std::fs::write(
        root.path().join("data/in.jsonl"),
        "{\"x\": 1}\n{\"x\": 2}\n",
    )
    .unwrap();
    let emulator = crate::Emulator::start(root, &["--predictor", "echo"], &[]);
    let port = emulator.port;
    let endpoint = format!("http://127.0.0.1:{port}");
    let service = ["--endpoint", endpoint.as_str(), "--project", "cli-project"];
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(service);
        cli(&all)
    };

    let submitted = with(&[
        "submit",
        "prediction",
        "remote_1",
        "--model-dir",
        "gs://models/m",
        "--input-paths",
        "gs://data/in.jsonl",
        "--output-path",
        "gs://data/out",
        "--region",
        "us-central1",
        "--data-format",
        "json",
        "--labels",
        "team=ml",
        "--wait",
        "--format",
        "json",
    ]);
    assert_eq!(
        submitted.status.code(),
        Some(0),
        "{}",
        text(&submitted.stderr)
    );
    let job: Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(job["state"], "SUCCEEDED");
    assert_eq!(job["predictionOutput"]["predictionCount"], "2");
    assert!(text(&submitted.stderr).contains("Job [remote_1] submitted successfully."));

    let described = with(&["describe", "remote_1", "--format", "json"]);
    let described: Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(described["jobId"], "remote_1");
    let table = with(&["describe", "remote_1"]);
    assert!(
        text(&table.stdout).contains("state: SUCCEEDED\n"),
        "{}",
        text(&table.stdout)
    );

    let listed = with(&["list", "--filter", "labels.team=ml", "--format", "json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    // `--json` is `--format json`, for scripts.
    let none = with(&["list", "--filter", "labels.team=ops", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&none.stdout).unwrap(),
        json!({"jobs": []})
    );
    let table = with(&["list"]);
    let lines: Vec<String> = text(&table.stdout).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("JOB_ID"), "{lines:?}");
    assert!(lines[1].starts_with("remote_1  SUCCEEDED"), "{lines:?}");
    assert!(text(&table.stderr).contains("1 job in project cli-project"));

    // Cancelling a finished job: the service's error, exit 1.
    let cancelled = with(&["cancel", "remote_1"]);
    assert_eq!(cancelled.status.code(), Some(1));
    assert!(
        text(&cancelled.stderr).starts_with("FAILED_PRECONDITION (400): "),
        "{}",
        text(&cancelled.stderr)
    );
    let missing = with(&["describe", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).starts_with("NOT_FOUND (404): "));
    // A project is required for the service's commands.
    let no_project = cli(&["list", "--endpoint", &endpoint]);
    assert_eq!(no_project.status.code(), Some(2));
    assert!(text(&no_project.stderr).contains("give --project (or set CLOUDSDK_CORE_PROJECT)"));
}

/// A jobs.create request over `dir/in/*.jsonl` writing into `dir/OUT`.
fn parted_job(dir: &std::path::Path, out: &str) -> String {
    let path = dir.join(format!("{out}.json"));
    let body = json!({
        "jobId": "parted",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [format!("{}/in/*.jsonl", dir.display())],
            "outputPath": dir.join(out),
            "region": "local",
            "uri": "echo",
            "batchSize": "4"
        }
    });
    std::fs::write(&path, body.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The scale-out flow the README and `examples/scale-out/` give, through the
/// binary: the same create request run as `--shard I/N` parts (at once, in
/// separate processes), then `--merge`, which once failed on the create
/// request ("invalid state transition from STATE_UNSPECIFIED to PREPARING").
#[test]
fn parts_then_merge_of_a_create_request_write_what_one_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    for f in 0..5 {
        let mut text: String = (0..30)
            .map(|i| format!("{{\"file\": {f}, \"i\": {i}}}\n"))
            .collect();
        if f % 2 == 1 {
            text.push_str("{not json\n");
        }
        std::fs::write(root.join(format!("in/{f}.jsonl")), text).unwrap();
    }
    // Shards of at most 300 bytes: every file alone, and split into ranges.
    let shape = ["--predictor", "echo", "--shard-bytes", "300"];
    let single = parted_job(root, "single");
    let one = cli(&[&["run", &single][..], &shape[..]].concat());
    assert_eq!(one.status.code(), Some(0), "{}", text(&one.stderr));
    let plan = cli(&["plan", &single, "--shard-bytes", "300"]);
    let plan = text(&plan.stdout);
    let shards: usize = plan
        .split(", ")
        .find_map(|part| part.strip_suffix(" shards"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(shards >= 6, "{plan}");

    let multi = parted_job(root, "multi");
    let part = |i: usize| {
        std::process::Command::new(env!("CARGO_BIN_EXE_batch-prediction"))
            .args(["run", &multi, "--shard", &format!("{i}/3")])
            .args(shape)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let merge = |extra: &[&str]| cli(&[&["run", &multi, "--merge"][..], extra].concat());
    // Parts 0 and 2 at once, in separate processes.
    std::thread::scope(|scope| {
        let parts: Vec<_> = [0, 2].map(|i| scope.spawn(move || part(i))).into();
        for done in parts {
            let out = done.join().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
    });
    // Merged too early: FAILED, naming the shards of part 1.
    let early = merge(&shape[2..]);
    assert_eq!(early.status.code(), Some(1), "{}", text(&early.stderr));
    let failed: Value = serde_json::from_slice(&early.stdout).unwrap();
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let message = failed["errorMessage"].as_str().unwrap();
    assert!(message.contains("1, 4"), "{message}");
    // Part 1, then the merge: the finished job.
    let out = part(1);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let merged = merge(&shape[2..]);
    assert_eq!(merged.status.code(), Some(0), "{}", text(&merged.stderr));
    let done: Value = serde_json::from_slice(&merged.stdout).unwrap();
    let whole: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["jobId"], "parted");
    assert_eq!(
        (
            &done["predictionOutput"]["predictionCount"],
            &done["predictionOutput"]["errorCount"]
        ),
        (&json!("150"), &json!("2"))
    );
    assert_eq!(
        done["predictionOutput"]["predictionCount"],
        whole["predictionOutput"]["predictionCount"]
    );
    assert_eq!(
        crate::output_files(&root.join("multi")),
        crate::output_files(&root.join("single"))
    );
    // A merge that plans other shards than the parts ran finds none of its own.
    let other = merge(&[]);
    assert_eq!(other.status.code(), Some(1), "{}", text(&other.stderr));
    let failed: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(failed["state"], "FAILED", "{failed}");
    // A size that is not one is refused, naming the flag.
    let bad = cli(&["run", &multi, "--shard-bytes", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--shard-bytes"),
        "{}",
        text(&bad.stderr)
    );
}

/// A request to a service, its status and JSON (with ureq, the command line's client).
#[cfg(feature = "onnx")]
fn http(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, body) => agent.post(url).send_json(body.unwrap_or_else(|| json!({}))),
    }
    .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap())
}

/// Jobs written for AI Platform name their model by `modelName` or
/// `versionName`: `serve` takes the models and versions `gcloud` creates and
/// runs a job on its version's `deploymentUri` (refusing one naming a model
/// it lacks), and `run` finds the model through that service's models API
/// (`--models URL`) or through a local registry folder (`--models DIR`).
#[cfg(feature = "onnx")]
#[test]
fn jobs_naming_models_run_on_serve_and_with_run_models() {
    let root = env!("CARGO_MANIFEST_DIR");
    let emu_root = tempfile::tempdir().unwrap();
    // The model in the emulator's bucket, the instances beside it.
    let copy = |to: &std::path::Path| {
        std::fs::create_dir_all(to).unwrap();
        std::fs::copy(
            format!("{root}/examples/iris/model/model.onnx"),
            to.join("model.onnx"),
        )
        .unwrap();
    };
    copy(&emu_root.path().join("bucket/models/iris/v1"));
    std::fs::create_dir_all(emu_root.path().join("bucket/in")).unwrap();
    std::fs::copy(
        format!("{root}/examples/iris/instances.jsonl"),
        emu_root.path().join("bucket/in/instances.jsonl"),
    )
    .unwrap();
    let emulator = crate::Emulator::start(emu_root, &["--predictor", "onnx"], &[]);
    let base = format!("http://127.0.0.1:{}", emulator.port);
    let v1 = format!("{base}/v1/projects/my-proj");
    let job = |id: &str, model: Value| {
        let mut body = json!({"jobId": id, "predictionInput": {
            "dataFormat": "TEXT", "inputPaths": ["gs://bucket/in/*.jsonl"],
            "outputPath": format!("gs://bucket/out/{id}"), "region": "us-central1"}});
        for (k, v) in model.as_object().unwrap() {
            body["predictionInput"][k] = v.clone();
        }
        body
    };
    let (status, error) = http(
        "POST",
        &format!("{v1}/jobs"),
        Some(job(
            "missing",
            json!({"modelName": "projects/my-proj/models/iris"}),
        )),
    );
    assert_eq!(status, 404, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("projects/my-proj/models/iris"),
        "{error}"
    );
    let (status, _) = http(
        "POST",
        &format!("{v1}/models"),
        Some(json!({"name": "iris"})),
    );
    assert_eq!(status, 200);
    let (status, op) = http(
        "POST",
        &format!("{v1}/models/iris/versions"),
        Some(
            // An ONNX model: the API has no `framework` for it.
            json!({"name": "v1", "deploymentUri": "gs://bucket/models/iris/v1",
                    "framework": "FRAMEWORK_UNSPECIFIED", "runtimeVersion": "2.11"}),
        ),
    );
    assert_eq!((status, &op["done"]), (200, &json!(true)), "{op}");
    let (status, _) = http(
        "POST",
        &format!("{v1}/jobs"),
        Some(job(
            "by_model",
            json!({"modelName": "projects/my-proj/models/iris"}),
        )),
    );
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let done = loop {
        let (_, got) = http("GET", &format!("{v1}/jobs/by_model"), None);
        if ["SUCCEEDED", "FAILED", "CANCELLED"].contains(&got["state"].as_str().unwrap_or("")) {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "{got}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // TEXT lines are JSON instances for an ONNX model: 30 predicted, the
    // malformed one an error.
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "30", "{done}");
    assert_eq!(done["predictionOutput"]["errorCount"], "1", "{done}");

    // `run` with the service's models API: a job file naming the version.
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.json");
    let write_job = |model: Value, out: &str| {
        let mut body = job("local", model);
        body["predictionInput"]["inputPaths"] =
            json!([format!("{root}/examples/iris/instances.jsonl")]);
        body["predictionInput"]["outputPath"] = json!(dir.path().join(out));
        std::fs::write(&job_file, body.to_string()).unwrap();
    };
    write_job(
        json!({"versionName": "projects/my-proj/models/iris/versions/v1"}),
        "out-service",
    );
    let out = cli(&[
        "run",
        job_file.to_str().unwrap(),
        "--predictor",
        "onnx",
        "--models",
        &base,
        "--gcs-root",
        emulator.root.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let finished: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(finished["predictionOutput"]["predictionCount"], "30");

    // `run` with a local registry: PROJECT/MODEL/VERSION/, DEFAULT naming the default.
    let registry = dir.path().join("registry");
    // v1 holds no model: a run that picked it instead of the default fails.
    std::fs::create_dir_all(registry.join("my-proj/iris/v1")).unwrap();
    copy(&registry.join("my-proj/iris/v2"));
    write_job(
        json!({"modelName": "projects/my-proj/models/iris"}),
        "out-registry",
    );
    let registry_arg = registry.to_str().unwrap();
    let onnx = ["--predictor", "onnx"];
    let ambiguous = cli(&[
        &["run", job_file.to_str().unwrap(), "--models", registry_arg][..],
        &onnx,
    ]
    .concat());
    assert_eq!(ambiguous.status.code(), Some(1));
    assert!(
        text(&ambiguous.stderr).contains("no ") && text(&ambiguous.stderr).contains("DEFAULT"),
        "{}",
        text(&ambiguous.stderr)
    );
    std::fs::write(registry.join("my-proj/iris/DEFAULT"), "v2\n").unwrap();
    let out = cli(&[
        "run",
        job_file.to_str().unwrap(),
        "--models",
        registry_arg,
        "--fresh",
        "--predictor",
        "onnx",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Without a registry, the name is refused, saying how to give one.
    let out = cli(&[&["run", job_file.to_str().unwrap(), "--fresh"][..], &onnx].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--models"),
        "{}",
        text(&out.stderr)
    );
}
