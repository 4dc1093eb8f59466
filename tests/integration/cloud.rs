//! Real object stores (feature `cloud`), against real servers started on
//! loopback by `tests/cloud/servers.sh` (moto for S3, fake-gcs-server for
//! Cloud Storage) and `tests/cloud/azurite.sh` (Azurite for Azure Blob
//! Storage). Without them (no Python, no PyPI, no Node.js) each test says
//! SKIP; under CI (`CI=true`) that is a failure.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use batch_prediction::predict::CancelHandle;
use batch_prediction::storage::{AzureStorage, GcsStorage, S3Storage, StorageErrorKind};
use batch_prediction::testing::storage_conformance;
use batch_prediction::{
    BatchExecutor, CloudStorage, EchoResolver, ExecutorConfig, Job, LocalStorage, RetryPolicy,
    State, Storage, StorageExt, SystemClock, Transition,
};
use serde_json::json;

struct Servers {
    s3: String,
    gcs: String,
    /// Azurite's blob service, when it could be started (else SKIP said why).
    az: Option<String>,
    /// A bucket on each, and an Azure container of the same name.
    bucket: String,
}

/// The servers, started once for this test binary (they stop when it exits).
fn servers() -> Option<&'static Servers> {
    static SERVERS: OnceLock<Result<Servers, String>> = OnceLock::new();
    let started = SERVERS.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloud/servers.sh");
        let [s3, gcs, bucket] = start_servers(
            script,
            ["AWS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST", "BUCKET"],
        )?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloud/azurite.sh");
        let azurite = start_servers(script, ["AZURITE_BLOB_STORAGE_URL", "BUCKET"]).and_then(
            |[url, container]| {
                if container == bucket {
                    Ok(url)
                } else {
                    Err(format!(
                        "Azurite's container is {container:?}, not {bucket:?}"
                    ))
                }
            },
        );
        let az = required(Box::leak(Box::new(azurite)), "Azurite (Azure's emulator)").cloned();
        Ok(Servers {
            s3,
            gcs,
            az,
            bucket,
        })
    });
    required(started, "cloud test servers")
}

/// Each server that runs, as its scheme and endpoint.
fn schemes(servers: &Servers) -> Vec<(&'static str, &str)> {
    let mut all = vec![("gs", servers.gcs.as_str()), ("s3", servers.s3.as_str())];
    all.extend(servers.az.as_deref().map(|az| ("az", az)));
    all
}

/// A short retry policy: tests should fail fast, not wait minutes.
fn quick() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(3)
        .with_backoff(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(100),
        )
        .with_max_elapsed(std::time::Duration::from_secs(10))
}

fn gcs(servers: &Servers) -> GcsStorage {
    GcsStorage::emulator(&servers.gcs)
        .unwrap()
        .with_retry(quick())
}

fn s3(servers: &Servers) -> S3Storage {
    s3_at(&servers.s3)
}

fn s3_at(endpoint: &str) -> S3Storage {
    S3Storage::with_endpoint(endpoint, "us-east-1", "test", "test")
        .unwrap()
        .with_retry(quick())
}

fn azure_at(endpoint: &str) -> AzureStorage {
    AzureStorage::emulator(&format!("{endpoint}/devstoreaccount1"))
        .unwrap()
        .with_retry(quick())
}

/// The backend of `scheme` at `endpoint` (a server, or a proxy before one).
fn backend_at(scheme: &str, endpoint: &str) -> Arc<dyn Storage> {
    match scheme {
        "gs" => Arc::new(GcsStorage::emulator(endpoint).unwrap().with_retry(quick())),
        "az" => Arc::new(azure_at(endpoint)),
        _ => Arc::new(s3_at(endpoint)),
    }
}

/// Local paths, and every server's bucket.
fn cloud(servers: &Servers) -> CloudStorage {
    let storage = CloudStorage::new(LocalStorage::new())
        .with_gcs(gcs(servers))
        .with_s3(s3(servers));
    match &servers.az {
        Some(az) => storage.with_azure(azure_at(az)),
        None => storage,
    }
}

/// The variables the vendors' SDKs read, pointing at the servers (for
/// the programs the `rest` and `cli` tests start).
#[cfg(feature = "rest")]
fn server_env(servers: &Servers) -> [(&'static str, &std::ffi::OsStr); 5] {
    [
        ("STORAGE_EMULATOR_HOST", servers.gcs.as_ref()),
        ("AWS_ENDPOINT_URL", servers.s3.as_ref()),
        ("AWS_ACCESS_KEY_ID", "test".as_ref()),
        ("AWS_SECRET_ACCESS_KEY", "test".as_ref()),
        ("AWS_REGION", "us-east-1".as_ref()),
    ]
}

/// A fresh prefix for one test: `SCHEME://BUCKET/NAME-NANOS`.
fn fresh(scheme: &str, servers: &Servers, name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{scheme}://{}/{name}-{nanos}", servers.bucket)
}

/// Every backend, each with a fresh prefix for `name`.
fn backends(servers: &Servers, name: &str) -> Vec<(Arc<dyn Storage>, String)> {
    schemes(servers)
        .into_iter()
        .map(|(scheme, endpoint)| (backend_at(scheme, endpoint), fresh(scheme, servers, name)))
        .collect()
}

#[test]
fn every_backend_keeps_the_storage_contract() {
    let Some(servers) = servers() else { return };
    for (storage, base) in backends(servers, "conformance") {
        storage_conformance(&*storage, &base);
    }
}

/// Bytes that differ from offset to offset, so a misplaced range shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn large_objects_go_up_in_parts_and_read_back_from_any_offset() {
    let Some(servers) = servers() else { return };
    let data = pattern(20 << 20); // three parts of 8 MiB
    for (storage, base) in backends(servers, "large") {
        let location = format!("{base}/big.bin");
        let mut writer = storage.create(&location).unwrap();
        for chunk in data.chunks(1 << 20) {
            writer.write_all(chunk).unwrap();
        }
        assert!(
            storage.head(&location).is_err(),
            "{location}: visible before commit"
        );
        let meta = writer.commit().unwrap();
        assert_eq!(meta.size, data.len() as u64, "{location}");
        assert_eq!(storage.read_bytes(&location).unwrap(), data, "{location}");
        for offset in [1u64, (8 << 20) - 1, 8 << 20, 19 << 20] {
            let mut tail = Vec::new();
            storage
                .open_at(&location, offset)
                .unwrap()
                .read_to_end(&mut tail)
                .unwrap();
            assert!(
                tail == data[offset as usize..],
                "{location}: open_at {offset}"
            );
        }
        // A large write abandoned after parts went up leaves nothing.
        let abandoned = format!("{base}/abandoned.bin");
        {
            let mut writer = storage.create(&abandoned).unwrap();
            writer.write_all(&data).unwrap();
        }
        assert_eq!(
            storage.head(&abandoned).err().map(|e| e.kind()),
            Some(StorageErrorKind::NotFound),
            "{abandoned}"
        );
    }
}

#[test]
fn calls_from_inside_a_tokio_runtime_do_not_panic() {
    let Some(servers) = servers() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (storage, base) in backends(servers, "in-runtime") {
        let location = format!("{base}/x.json");
        let read = runtime.block_on(async {
            storage.put_bytes(&location, b"{}\n").unwrap();
            storage.read_bytes(&location).unwrap()
        });
        assert_eq!(read, b"{}\n");
    }
}

#[test]
fn malformed_and_missing_locations_are_clear_errors() {
    let Some(servers) = servers() else { return };
    let storage = cloud(servers);
    for location in [
        "gs://",
        "gs:///x",
        "s3://b/../x",
        "gs://b/x//y",
        "az://",
        "az://c/./x",
    ] {
        let err = storage.head(location).unwrap_err();
        assert_eq!(
            err.kind(),
            StorageErrorKind::InvalidLocation,
            "{location}: {err}"
        );
    }
    for (scheme, _) in schemes(servers) {
        let location = format!("{scheme}://{}/no/such/object", servers.bucket);
        let err = storage.head(&location).unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::NotFound, "{location}: {err}");
        assert!(err.to_string().contains(&location), "{err}");
    }
    // Azurite's endpoint names the account as its path.
    let err = AzureStorage::emulator("http://127.0.0.1:10000").unwrap_err();
    assert_eq!(err.kind(), StorageErrorKind::InvalidLocation, "{err}");
    assert!(err.to_string().contains("devstoreaccount1"), "{err}");
    let err = storage.list("gs://no-such-bucket-here/x").unwrap_err();
    assert!(
        err.to_string().contains("gs://no-such-bucket-here/x"),
        "{err}"
    );
}

fn job(inputs: &[String], output: &str, format: &str) -> Job {
    let mut job = Job::from_value(json!({
        "jobId": "cloud",
        "predictionInput": {
            "dataFormat": format,
            "inputPaths": inputs,
            "outputPath": output,
            "region": "local",
            "uri": "echo",
            "batchSize": "7",
        }
    }))
    .unwrap();
    job.apply(Transition::Queue, &SystemClock).unwrap();
    job
}

/// The results and errors files under `output`, by name.
fn outputs(storage: &dyn Storage, output: &str) -> Vec<(String, Vec<u8>)> {
    storage
        .list(&format!("{output}/prediction."))
        .unwrap()
        .into_iter()
        .filter(|m| !m.location.contains("prediction.summary"))
        .map(|m| {
            let name = m.location.rsplit('/').next().unwrap().to_owned();
            let bytes = storage.read_bytes(&m.location).unwrap();
            // Error entries name their input file, which differs from store
            // to store: compare how many there are.
            let bytes = if name.starts_with("prediction.errors-") {
                bytes
                    .split(|&b| b == b'\n')
                    .count()
                    .to_string()
                    .into_bytes()
            } else {
                bytes
            };
            (name, bytes)
        })
        .collect()
}

#[test]
fn jobs_on_buckets_write_what_they_write_on_local_files() {
    let Some(servers) = servers() else { return };
    let storage: Arc<dyn Storage> = Arc::new(cloud(servers));
    let local = tempfile::tempdir().unwrap();
    let root = local.path().display().to_string();
    let mut lines = String::new();
    for i in 0..500 {
        lines.push_str(&json!({"key": i, "x": [i, 0.5]}).to_string());
        lines.push('\n');
        if i % 97 == 0 {
            lines.push_str("not json\n");
        }
    }
    let mut frames = batch_prediction::record::TfRecordWriter::new(Vec::new());
    for i in 0..300u32 {
        frames.write(&i.to_le_bytes()).unwrap();
    }
    let tfrecord = frames.into_inner();
    let cases = [
        ("JSON", "a.jsonl", lines.as_bytes().to_vec()),
        ("TEXT", "a.txt", lines.as_bytes().to_vec()),
        ("TF_RECORD", "a.tfrecord", tfrecord),
        (
            "TF_RECORD_GZIP",
            "a.tfrecord.gz",
            std::fs::read(crate::data_path("tensorflow/examples.tfrecord.gz")).unwrap(),
        ),
    ];
    for (format, name, bytes) in cases {
        // The same input on the local disk, on GCS, on S3 (and on Azure); output on another store.
        let gs_in = fresh("gs", servers, "job-in");
        let s3_in = fresh("s3", servers, "job-in");
        for dir in [format!("{root}/{format}"), gs_in.clone(), s3_in.clone()] {
            for part in ["1", "2"] {
                storage
                    .put_bytes(&format!("{dir}/{part}-{name}"), &bytes)
                    .unwrap();
            }
        }
        let mut runs = vec![
            (
                format!("{root}/{format}/*-{name}"),
                format!("{root}/{format}-out"),
            ),
            (format!("{gs_in}/*-{name}"), fresh("s3", servers, "job-out")),
            (format!("{s3_in}/*-{name}"), fresh("gs", servers, "job-out")),
        ];
        if servers.az.is_some() {
            // On Azure and back: in from a container, out to another one.
            let az_in = fresh("az", servers, "job-in");
            for part in ["1", "2"] {
                storage
                    .put_bytes(&format!("{az_in}/{part}-{name}"), &bytes)
                    .unwrap();
            }
            runs.push((format!("{az_in}/*-{name}"), fresh("az", servers, "job-out")));
        }
        let mut seen = Vec::new();
        for (pattern, output) in runs {
            let mut job = job(std::slice::from_ref(&pattern), &output, format);
            let summary = BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver))
                .with_config(ExecutorConfig::default().with_max_threads(2))
                .run(&mut job, &CancelHandle::new())
                .unwrap();
            assert_eq!(
                summary.state,
                State::Succeeded,
                "{pattern}: {:?}",
                job.error_message
            );
            // Run again: resumed from the summaries on the bucket, nothing redone.
            let mut again = self::job(std::slice::from_ref(&pattern), &output, format);
            let resumed = BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver))
                .run(&mut again, &CancelHandle::new())
                .unwrap();
            assert_eq!(
                (resumed.state, resumed.shards_resumed),
                (State::Succeeded, resumed.shards),
                "{pattern}"
            );
            seen.push((pattern, outputs(&*storage, &output)));
        }
        let (first, expected) = &seen[0];
        assert!(!expected.is_empty());
        for (pattern, got) in &seen[1..] {
            assert!(got == expected, "{pattern} wrote other files than {first}");
        }
    }
}

/// A `jobs.create` request in `dir` for the echo job over `INPUT/*.jsonl`,
/// as the command line reads it.
#[cfg(feature = "cli")]
fn cli_job_file(
    dir: &std::path::Path,
    job_id: &str,
    input: &str,
    output: &str,
) -> std::path::PathBuf {
    let job_file = dir.join("job.json");
    let body = json!({
        "jobId": job_id,
        "predictionInput": {
            "dataFormat": "JSON", "inputPaths": [format!("{input}/*.jsonl")],
            "outputPath": output, "region": "local", "uri": "echo"
        }
    });
    std::fs::write(&job_file, body.to_string()).unwrap();
    job_file
}

#[cfg(feature = "cli")]
#[test]
fn the_command_line_reads_one_bucket_and_writes_another() {
    let Some(servers) = servers() else { return };
    let exe = crate::cli_program();
    let storage = cloud(servers);
    let input = fresh("gs", servers, "cli-in");
    let output = fresh("s3", servers, "cli-out");
    storage
        .put_bytes(
            &format!("{input}/a.jsonl"),
            b"{\"x\": 1}\n{\"x\": 2}\nnot json\n",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job_file = cli_job_file(dir.path(), "cli_cloud", &input, &output);
    let out = std::process::Command::new(&exe)
        .envs(server_env(servers))
        .arg("run")
        .arg(&job_file)
        .args(["--predictor", "echo"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(
        (
            &done["predictionOutput"]["predictionCount"],
            &done["predictionOutput"]["errorCount"]
        ),
        (&json!("2"), &json!("1"))
    );
    assert_eq!(
        storage
            .read_bytes(&format!("{output}/prediction.results-00000-of-00001"))
            .unwrap(),
        b"{\"x\":1}\n{\"x\":2}\n"
    );
}

/// The scale-out flow through the binary on buckets: `--shard I/N` parts of
/// one create request, then `--merge`, write what one run writes.
#[cfg(feature = "cli")]
#[test]
fn command_line_parts_on_a_bucket_merge_into_what_one_run_writes() {
    let Some(servers) = servers() else { return };
    let exe = crate::cli_program();
    let storage = cloud(servers);
    let input = fresh("gs", servers, "cli-parts-in");
    for i in 0..4 {
        let lines: String = (0..25)
            .map(|j| format!("{{\"x\": {}}}\n", i * 100 + j))
            .collect();
        storage
            .put_bytes(&format!("{input}/{i}.jsonl"), lines.as_bytes())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |job: &std::path::Path, extra: &[&str]| {
        let out = std::process::Command::new(&exe)
            .envs(server_env(servers))
            .arg("run")
            .arg(job)
            .args(["--predictor", "echo", "--shard-bytes", "200"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let whole = fresh("gs", servers, "cli-parts-whole");
    std::fs::create_dir(dir.path().join("whole")).unwrap();
    let one = run(
        &cli_job_file(&dir.path().join("whole"), "cli_parts", &input, &whole),
        &[],
    );
    let parted = fresh("gs", servers, "cli-parts-merged");
    let job = cli_job_file(dir.path(), "cli_parts", &input, &parted);
    for i in [2, 0, 1] {
        run(&job, &["--shard", &format!("{i}/3")]);
    }
    let done = run(&job, &["--merge"]);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], json!("100"));
    assert_eq!(
        done["predictionOutput"]["predictionCount"],
        one["predictionOutput"]["predictionCount"]
    );
    let written = outputs(&storage, &parted);
    let results = written
        .iter()
        .filter(|(name, _)| name.starts_with("prediction.results-"))
        .count();
    assert_eq!(results, 8, "{written:?}");
    assert!(written == outputs(&storage, &whole));
}

/// The command line finds Azurite through the variables the README names,
/// and without an account says so, naming the location.
#[cfg(feature = "cli")]
#[test]
fn the_command_line_takes_azure_from_the_environment() {
    let Some(servers) = servers() else { return };
    let Some(az) = &servers.az else { return };
    let exe = crate::cli_program();
    let storage = cloud(servers);
    let input = fresh("az", servers, "cli-in");
    let output = fresh("az", servers, "cli-out");
    storage
        .put_bytes(&format!("{input}/a.jsonl"), b"{\"x\": 1}\n")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job_file = cli_job_file(dir.path(), "cli_azure", &input, &output);
    let run = |env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(&exe);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AZURE")) {
            command.env_remove(key);
        }
        command
            .envs(env.iter().copied())
            .arg("run")
            .arg(&job_file)
            .args(["--predictor", "echo"])
            .output()
            .unwrap()
    };
    let out = run(&[
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", az),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        storage
            .read_bytes(&format!("{output}/prediction.results-00000-of-00001"))
            .unwrap(),
        b"{\"x\":1}\n"
    );
    // No account named, and not the emulator: a clear error, naming the input.
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&input) && stderr.contains("Azure") && stderr.contains("ccount"),
        "{stderr}"
    );
}

use crate::FaultProxy as Proxy;
use crate::{required, start_servers};

#[test]
fn a_connection_dropped_mid_object_resumes_from_the_byte_it_reached() {
    let Some(servers) = servers() else { return };
    let data = pattern(3 << 20);
    for (scheme, upstream) in schemes(servers) {
        let location = format!("{}/cut.bin", fresh(scheme, servers, "cut"));
        let direct = backend_at(scheme, upstream);
        direct.put_bytes(&location, &data).unwrap();
        let proxy = Proxy::start(upstream, "cut");
        let through = backend_at(scheme, &proxy.url);
        let read = through.read_bytes(&location).unwrap();
        assert!(
            read == data,
            "{location}: {} bytes read, {} stored",
            read.len(),
            data.len()
        );
        let stats = proxy.stats();
        assert_eq!(stats["cuts"], 1, "{location}: {stats}");
        assert!(
            stats["ranges"].as_array().unwrap().iter().any(|r| r
                .as_str()
                .unwrap()
                .starts_with(&format!("bytes={}-", 1 << 20))),
            "{location}: resumed from the byte reached: {stats}"
        );
    }
}

#[test]
fn parts_refused_or_dropped_mid_upload_are_sent_again() {
    let Some(servers) = servers() else { return };
    let data = pattern(20 << 20); // three parts of 8 MiB
    for (scheme, upstream) in schemes(servers) {
        for mode in ["fail-parts:2", "drop-parts:1"] {
            let location = format!("{}/resent.bin", fresh(scheme, servers, "resent"));
            let proxy = Proxy::start(upstream, mode);
            let through = backend_at(scheme, &proxy.url);
            let mut writer = through.create(&location).unwrap();
            for chunk in data.chunks(1 << 20) {
                writer.write_all(chunk).unwrap();
            }
            if scheme == "gs" && mode.starts_with("drop") {
                // On the emulator a chunk lost in transit may have been
                // kept, and fake-gcs-server would append it again: the
                // upload fails, and nothing appears.
                let failed = writer.commit().map(|_| ()).unwrap_err();
                assert!(failed.to_string().contains(&location), "{failed}");
                assert_eq!(
                    backend_at(scheme, upstream)
                        .head(&location)
                        .err()
                        .map(|e| e.kind()),
                    Some(StorageErrorKind::NotFound),
                    "{location}"
                );
                continue;
            }
            let meta = writer
                .commit()
                .unwrap_or_else(|e| panic!("{location} ({mode}): {e}"));
            assert_eq!(meta.size, data.len() as u64, "{location} ({mode})");
            // The faults happened, and the object is whole.
            let failed = mode.rsplit(':').next().unwrap().parse::<u64>().unwrap();
            assert_eq!(
                proxy.stats()["failed"],
                failed,
                "{location} ({mode}): {}",
                proxy.stats()
            );
            let read = backend_at(scheme, upstream).read_bytes(&location).unwrap();
            assert!(read == data, "{location} ({mode}): {} bytes", read.len());
        }
    }
}

#[test]
fn a_503_storm_is_retried_and_an_endless_one_fails_the_job_saying_why() {
    let Some(servers) = servers() else { return };
    for (scheme, upstream) in schemes(servers) {
        let base = fresh(scheme, servers, "storm");
        let direct = backend_at(scheme, upstream);
        direct
            .put_bytes(&format!("{base}/in/a.jsonl"), b"{\"x\": 1}\n")
            .unwrap();
        for (failures, succeeds) in [(3, true), (1000, false)] {
            let proxy = Proxy::start(upstream, &format!("fail:{failures}"));
            let through = backend_at(scheme, &proxy.url);
            let output = format!("{base}/out-{failures}");
            let mut job = job(&[format!("{base}/in/*.jsonl")], &output, "JSON");
            let summary = BatchExecutor::new(Arc::clone(&through), Arc::new(EchoResolver))
                .run(&mut job, &CancelHandle::new())
                .unwrap();
            if succeeds {
                assert_eq!(
                    summary.state,
                    State::Succeeded,
                    "{scheme}: {:?}",
                    job.error_message
                );
                assert_eq!(
                    direct
                        .read_bytes(&format!("{output}/prediction.results-00000-of-00001"))
                        .unwrap(),
                    b"{\"x\":1}\n"
                );
            } else {
                assert_eq!(summary.state, State::Failed, "{scheme}");
                let message = job.error_message.unwrap();
                assert!(
                    message.contains(&base) && message.contains("503"),
                    "{scheme}: {message}"
                );
                assert!(
                    direct.list(&format!("{output}/")).unwrap().is_empty(),
                    "{scheme}: nothing written"
                );
            }
        }
    }
}

#[cfg(feature = "onnx")]
#[test]
fn onnx_models_load_from_a_bucket() {
    let Some(servers) = servers() else { return };
    let storage: Arc<dyn Storage> = Arc::new(cloud(servers));
    let model = std::fs::read(crate::data_path("../../examples/iris/model/model.onnx")).unwrap();
    let resolver =
        batch_prediction::OnnxResolver::new(LocalStorage::new()).with_buckets(Arc::clone(&storage));
    let model_dir = crate::data_path("../../examples/iris/model")
        .display()
        .to_string();
    let mut expected = None;
    let local_dir = tempfile::tempdir().unwrap();
    for scheme in ["file", "gs", "s3"] {
        let base = if scheme == "file" {
            local_dir.path().display().to_string()
        } else {
            fresh(scheme, servers, "model")
        };
        storage
            .put_bytes(&format!("{base}/iris/model.onnx"), &model)
            .unwrap();
        storage
            .put_bytes(
                &format!("{base}/in/a.jsonl"),
                b"{\"key\": 1, \"features\": [5.1, 3.5, 1.4, 0.2]}\n",
            )
            .unwrap();
        let uris = if scheme == "file" {
            vec![model_dir.clone()]
        } else {
            vec![format!("{base}/iris"), format!("{base}/iris/model.onnx")]
        };
        for uri in uris {
            let mut job = Job::from_value(json!({
                "jobId": "bucket_model",
                "predictionInput": {
                    "dataFormat": "JSON", "inputPaths": [format!("{base}/in/*")],
                    "outputPath": format!("{base}/out"), "region": "local", "uri": uri
                }
            }))
            .unwrap();
            job.apply(Transition::Queue, &SystemClock).unwrap();
            let summary = BatchExecutor::new(Arc::clone(&storage), Arc::new(resolver.clone()))
                .with_config(
                    ExecutorConfig::default()
                        .with_resume(batch_prediction::executor::ResumeMode::Fresh),
                )
                .run(&mut job, &CancelHandle::new())
                .unwrap();
            assert_eq!(
                summary.state,
                State::Succeeded,
                "{uri}: {:?}",
                job.error_message
            );
            let line = storage
                .read_bytes(&format!("{base}/out/prediction.results-00000-of-00001"))
                .unwrap();
            let prediction: serde_json::Value = serde_json::from_slice(&line).unwrap();
            // The same prediction as the model loaded from the local file.
            assert_eq!(
                expected.get_or_insert(prediction.clone()),
                &prediction,
                "{uri}"
            );
        }
        let mut job = Job::from_value(json!({
            "jobId": "missing_model",
            "predictionInput": {
                "dataFormat": "JSON", "inputPaths": [format!("{base}/in/*")],
                "outputPath": format!("{base}/out2"), "region": "local", "uri": format!("{base}/nothing")
            }
        }))
        .unwrap();
        job.apply(Transition::Queue, &SystemClock).unwrap();
        BatchExecutor::new(Arc::clone(&storage), Arc::new(resolver.clone()))
            .run(&mut job, &CancelHandle::new())
            .unwrap();
        let message = job.error_message.unwrap();
        assert!(message.contains(&format!("{base}/nothing")), "{message}");
    }
}

#[test]
fn parts_of_one_job_on_a_bucket_merge_into_what_one_run_writes() {
    let Some(servers) = servers() else { return };
    let storage: Arc<dyn Storage> = Arc::new(cloud(servers));
    let input = fresh("s3", servers, "parts-in");
    for i in 0..5 {
        let lines: String = (0..40)
            .map(|j| format!("{{\"x\": {}}}\n", i * 100 + j))
            .collect();
        storage
            .put_bytes(&format!("{input}/{i}.jsonl"), lines.as_bytes())
            .unwrap();
    }
    let executor = |part: Option<batch_prediction::executor::ShardSelection>| {
        let mut config = ExecutorConfig::default().with_shard_target_bytes(1);
        if let Some(part) = part {
            config = config.with_shard_selection(part);
        }
        BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver)).with_config(config)
    };
    let pattern = format!("{input}/*.jsonl");
    let whole = fresh("gs", servers, "parts-whole");
    let mut one = job(std::slice::from_ref(&pattern), &whole, "JSON");
    assert_eq!(
        executor(None)
            .run(&mut one, &CancelHandle::new())
            .unwrap()
            .state,
        State::Succeeded
    );
    // Three parts at once, each with its own executor, then the merge.
    let parted = fresh("gs", servers, "parts-merged");
    std::thread::scope(|scope| {
        for i in 0..3 {
            let (pattern, parted, executor) = (&pattern, &parted, &executor);
            scope.spawn(move || {
                let part = batch_prediction::executor::ShardSelection::new(i, 3).unwrap();
                let mut job = job(std::slice::from_ref(pattern), parted, "JSON");
                let summary = executor(Some(part))
                    .run(&mut job, &CancelHandle::new())
                    .unwrap();
                assert_eq!(
                    summary.state,
                    State::Succeeded,
                    "part {i}: {:?}",
                    job.error_message
                );
            });
        }
    });
    let mut merged = job(std::slice::from_ref(&pattern), &parted, "JSON");
    let summary = executor(None).merge(&mut merged).unwrap();
    assert_eq!(
        summary.state,
        State::Succeeded,
        "{:?}",
        merged.error_message
    );
    assert_eq!(summary.prediction_count, 200);
    assert!(outputs(&*storage, &parted) == outputs(&*storage, &whole));
}

#[test]
fn csv_output_and_a_cancelled_job_on_a_bucket() {
    let Some(servers) = servers() else { return };
    let storage: Arc<dyn Storage> = Arc::new(gcs(servers));
    let base = fresh("gs", servers, "csv");
    storage
        .put_bytes(
            &format!("{base}/in/a.jsonl"),
            b"{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\": \"y,z\"}\n",
        )
        .unwrap();
    let mut csv = Job::from_value(json!({
        "jobId": "csv",
        "predictionInput": {
            "dataFormat": "JSON", "outputDataFormat": "CSV", "inputPaths": [format!("{base}/in/*")],
            "outputPath": format!("{base}/out"), "region": "local", "uri": "echo"
        }
    }))
    .unwrap();
    csv.apply(Transition::Queue, &SystemClock).unwrap();
    let summary = BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver))
        .run(&mut csv, &CancelHandle::new())
        .unwrap();
    assert_eq!(summary.state, State::Succeeded, "{:?}", csv.error_message);
    assert_eq!(
        storage
            .read_bytes(&format!("{base}/out/prediction.results-00000-of-00001.csv"))
            .unwrap(),
        b"1,x\r\n2,\"y,z\"\r\n"
    );
    assert_eq!(
        storage
            .read_bytes(&format!("{base}/out/prediction.results_header.csv"))
            .unwrap(),
        b"a,b\r\n"
    );
    // Cancelled before it starts: CANCELLED, nothing written.
    let cancel = CancelHandle::new();
    cancel.cancel();
    let mut cancelled = job(
        &[format!("{base}/in/*")],
        &format!("{base}/cancelled"),
        "JSON",
    );
    let summary = BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver))
        .run(&mut cancelled, &cancel)
        .unwrap();
    assert_eq!(summary.state, State::Cancelled);
    assert!(
        storage
            .list(&format!("{base}/cancelled/"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn gzip_encoded_objects_on_cloud_storage_are_read_decompressed_and_never_by_range() {
    let Some(servers) = servers() else { return };
    let content = b"{\"x\": 1}\n{\"x\": 2}\n{\"x\": 3}\n";
    let mut gzip = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gzip.stdin.take().unwrap().write_all(content).unwrap();
    let compressed = gzip.wait_with_output().unwrap().stdout;
    let base = fresh("gs", servers, "transcoded");
    let name = format!(
        "{}/in/a.jsonl",
        base.split_once(&format!("gs://{}/", servers.bucket))
            .unwrap()
            .1
    );
    // An upload with Content-Encoding: gzip in its metadata, as `gsutil cp -Z` makes.
    let mut body = Vec::new();
    body.extend_from_slice(b"--BOUNDARY\r\nContent-Type: application/json\r\n\r\n");
    body.extend_from_slice(
        json!({"name": name, "contentEncoding": "gzip"})
            .to_string()
            .as_bytes(),
    );
    body.extend_from_slice(b"\r\n--BOUNDARY\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(&compressed);
    body.extend_from_slice(b"\r\n--BOUNDARY--\r\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), &body).unwrap();
    let upload = std::process::Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: multipart/related; boundary=BOUNDARY",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", dir.path().join("body").display()))
        .arg(format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart",
            servers.gcs, servers.bucket
        ))
        .output()
        .unwrap();
    assert!(
        upload.status.success(),
        "{}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let storage: Arc<dyn Storage> = Arc::new(gcs(servers));
    let location = format!("{base}/in/a.jsonl");
    assert_eq!(storage.read_bytes(&location).unwrap(), content);
    let err = storage.open_at(&location, 3).err().expect("refused");
    assert!(err.to_string().contains("Content-Encoding: gzip"), "{err}");
    let mut job = job(&[format!("{base}/in/*")], &format!("{base}/out"), "JSON");
    let summary = BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver))
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    assert_eq!(
        (summary.state, summary.prediction_count),
        (State::Succeeded, 3),
        "{:?}",
        job.error_message
    );
}

// The emulator is `batch-prediction serve`, of the `cli` feature.
#[cfg(feature = "cli")]
#[test]
fn the_emulator_runs_jobs_on_real_buckets() {
    let Some(servers) = servers() else { return };
    let emulator = crate::Emulator::start(
        tempfile::tempdir().unwrap(),
        &["--predictor", "echo", "--buckets"],
        &server_env(servers),
    );
    let port = emulator.port;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let input = fresh("gs", servers, "emulator-in");
    let output = fresh("s3", servers, "emulator-out");
    gcs(servers)
        .put_bytes(&format!("{input}/a.jsonl"), b"{\"x\": 1}\n{\"x\": 2}\n")
        .unwrap();
    let api = format!("http://127.0.0.1:{port}/v1/projects/bucket-test/jobs");
    let created = crate::curl(
        "POST",
        &api,
        Some(&json!({
            "jobId": "on_buckets",
            "predictionInput": {
                "dataFormat": "JSON", "inputPaths": [format!("{input}/*")],
                "outputPath": output, "region": "us-central1", "uri": "gs://models/echo"
            }
        })),
    );
    assert_eq!(created["state"], "QUEUED", "{created}");
    let done = loop {
        let job = crate::curl("GET", &format!("{api}/on_buckets"), None);
        if matches!(job["state"].as_str(), Some("SUCCEEDED" | "FAILED")) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {job}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "2", "{done}");
    assert_eq!(
        s3(servers)
            .read_bytes(&format!("{output}/prediction.results-00000-of-00001"))
            .unwrap(),
        b"{\"x\":1}\n{\"x\":2}\n"
    );
}

#[test]
fn a_missing_bucket_fails_the_job_before_it_predicts() {
    let Some(servers) = servers() else { return };
    let storage: Arc<dyn Storage> = Arc::new(cloud(servers));
    let input = fresh("gs", servers, "missing-bucket");
    storage
        .put_bytes(&format!("{input}/a.jsonl"), b"{\"x\": 1}\n")
        .unwrap();
    let mut cases = vec![
        (
            format!("{input}/*"),
            "gs://no-such-bucket-out/o".to_owned(),
            "gs://no-such-bucket-out/o",
        ),
        (
            format!("{input}/*"),
            "s3://no-such-bucket-out/o".to_owned(),
            "s3://no-such-bucket-out/o",
        ),
        (
            "s3://no-such-bucket-in/*".to_owned(),
            format!("{input}-out"),
            "s3://no-such-bucket-in/",
        ),
    ];
    if servers.az.is_some() {
        cases.push((
            "az://no-such-container-in/*".to_owned(),
            format!("{input}-out"),
            "az://no-such-container-in/",
        ));
        cases.push((
            format!("{input}/*"),
            "az://no-such-container-out/o".to_owned(),
            "az://no-such-container-out/o",
        ));
    }
    for (inputs, output, named) in cases {
        let mut job = job(std::slice::from_ref(&inputs), &output, "JSON");
        let summary = BatchExecutor::new(Arc::clone(&storage), Arc::new(EchoResolver))
            .run(&mut job, &CancelHandle::new())
            .unwrap();
        assert_eq!(
            (summary.state, summary.records_read),
            (State::Failed, 0),
            "{inputs} -> {output}"
        );
        let message = job.error_message.unwrap();
        assert!(
            message.contains(named) && message.contains("does not exist"),
            "{inputs} -> {output}: {message}"
        );
    }
}

#[test]
fn a_listing_that_hangs_is_given_up_as_soon_as_its_caller_stops() {
    let Some(servers) = servers() else { return };
    for (scheme, upstream) in schemes(servers) {
        let base = fresh(scheme, servers, "hang");
        backend_at(scheme, upstream)
            .put_bytes(&format!("{base}/in/a.jsonl"), b"{\"x\": 1}\n")
            .unwrap();
        let proxy = Proxy::start(upstream, "hang-list");
        let through = backend_at(scheme, &proxy.url);
        let started = std::time::Instant::now();
        let stop = || started.elapsed() > std::time::Duration::from_millis(300);
        let err = through
            .list_until(&format!("{base}/in/"), &stop)
            .unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::Cancelled, "{scheme}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{scheme}: gave up after {:?}, while the listing hangs for 60 s",
            started.elapsed()
        );
        assert_eq!(
            proxy.stats()["hung"],
            1,
            "{scheme}: the listing reached the proxy"
        );
        // Through a job: a cancel ends its planning, the job CANCELLED.
        let cancel = CancelHandle::new();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                cancel.cancel();
            })
        };
        let mut job = job(
            &[format!("{base}/in/*.jsonl")],
            &format!("{base}/out"),
            "JSON",
        );
        let started = std::time::Instant::now();
        let summary = BatchExecutor::new(Arc::clone(&through), Arc::new(EchoResolver))
            .run(&mut job, &cancel)
            .unwrap();
        canceller.join().unwrap();
        assert_eq!(
            summary.state,
            State::Cancelled,
            "{scheme}: {:?}",
            job.error_message
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{scheme}: the cancelled job took {:?}",
            started.elapsed()
        );
    }
}

/// `examples/scale-out/k8s-indexed-job.yaml`, as far as it can be checked
/// without a Kubernetes API server (none installs from the registries
/// here): its job file, every index's container command run here with
/// `JOB_COMPLETION_INDEX` set, `completions` equal to the N of
/// `--shard I/N`, then the merge Job's command, over a fake-gcs-server
/// bucket standing for `gs://my-bucket`: the merged job's files are byte for
/// byte one process's.
#[cfg(all(feature = "cli", feature = "ort"))]
#[test]
fn the_kubernetes_indexed_job_runs_as_written_and_merges_into_one_runs_files() {
    let Some(servers) = servers() else { return };
    let Some(ort) = crate::onnx::ort_library() else {
        return;
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let yaml =
        std::fs::read_to_string(format!("{root}/examples/scale-out/k8s-indexed-job.yaml")).unwrap();
    let documents: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(
        documents.len(),
        3,
        "a ConfigMap, the parts Job, the merge Job"
    );
    // The ConfigMap's job.json: the block under `job.json: |`.
    let job_json: String = documents[0]
        .lines()
        .skip_while(|l| l.trim() != "job.json: |")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let job: serde_json::Value = serde_json::from_str(&job_json).unwrap();
    assert_eq!(job["predictionInput"]["uri"], "gs://my-bucket/iris/model");
    // The parts: completions, and the one container's shell command.
    let parts = documents[1];
    let completions: usize = parts
        .lines()
        .find_map(|l| l.trim().strip_prefix("completions:"))
        .and_then(|v| v.split('#').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("completions: N");
    let command = parts
        .lines()
        .skip_while(|l| l.trim() != "args:")
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("- "))
        .expect("args: - COMMAND")
        .to_owned();
    assert!(parts.contains(r#"command: ["sh", "-c"]"#), "{parts}");
    assert!(
        command.contains(&format!(
            "--shard \"${{JOB_COMPLETION_INDEX}}/{completions}\""
        )),
        "completions ({completions}) must be the N of --shard I/N: {command}"
    );
    let merge_line = documents[2]
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .expect("the merge Job's command");
    let merge: Vec<String> = serde_json::from_str(merge_line).unwrap();

    // gs://my-bucket is a fresh prefix of the emulator's bucket; the model
    // and the instances are put where the job file says.
    let storage = cloud(servers);
    let bucket = fresh("gs", servers, "k8s");
    let rewrite = |text: &str| text.replace("gs://my-bucket", &bucket);
    for i in 0..3 {
        let lines =
            std::fs::read_to_string(format!("{root}/examples/iris/instances.jsonl")).unwrap();
        storage
            .put_bytes(
                &format!("{bucket}/iris/instances/{i}.jsonl"),
                lines.as_bytes(),
            )
            .unwrap();
    }
    storage
        .put_bytes(
            &format!("{bucket}/iris/model/model.onnx"),
            &std::fs::read(format!("{root}/examples/iris/model/model.onnx")).unwrap(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("job.json"), rewrite(&job_json)).unwrap();
    // `batch-prediction` on the PATH, as in the image.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(crate::cli_program(), bin.join("batch-prediction")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config_path = config.join("job.json").display().to_string();
    let container = |mut command: std::process::Command| {
        let out = command
            .envs(server_env(servers))
            .env("PATH", &path)
            .env("ORT_DYLIB_PATH", ort)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{command:?}: {stderr}");
        out
    };
    for index in 0..completions {
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", &command.replace("/config/job.json", &config_path)])
            .env("JOB_COMPLETION_INDEX", index.to_string());
        container(sh);
    }
    let mut merge_command = std::process::Command::new(&merge[0]);
    merge_command.args(
        merge[1..]
            .iter()
            .map(|a| a.replace("/config/job.json", &config_path)),
    );
    let merged: serde_json::Value =
        serde_json::from_slice(&container(merge_command).stdout).unwrap();
    assert_eq!(merged["state"], "SUCCEEDED", "{merged}");
    assert_eq!(
        merged["predictionOutput"]["predictionCount"], "90",
        "{merged}"
    );

    // One process, the same job into another folder: the same files.
    let mut whole: serde_json::Value = serde_json::from_str(&rewrite(&job_json)).unwrap();
    let one = format!("{bucket}/iris/one-process");
    whole["predictionInput"]["outputPath"] = json!(one);
    let whole_path = dir.path().join("whole.json");
    std::fs::write(&whole_path, whole.to_string()).unwrap();
    let mut single = std::process::Command::new("batch-prediction");
    single.arg("run").arg(&whole_path);
    container(single);
    let parted = outputs(&storage, &format!("{bucket}/iris/predictions"));
    assert!(!parted.is_empty());
    assert!(parted == outputs(&storage, &one));
}

/// The Slurm example over a Cloud Storage bucket (fake-gcs-server): the
/// parts share nothing but the bucket, and the merged files are one
/// process's.
#[cfg(feature = "cli")]
#[test]
fn the_slurm_array_over_a_bucket_merges_into_one_processs_files() {
    let Some(servers) = servers() else { return };
    let Some((cluster, _turn)) = crate::slurm::cluster() else {
        return;
    };
    let storage = cloud(servers);
    let input = fresh("gs", servers, "slurm-in");
    for f in 0..6 {
        let lines: String = (0..40)
            .map(|i| format!("{{\"file\": {f}, \"i\": {i}}}\n"))
            .collect();
        storage
            .put_bytes(&format!("{input}/{f}.jsonl"), lines.as_bytes())
            .unwrap();
    }
    let env: Vec<(&str, String)> = server_env(servers)
        .iter()
        .map(|(k, v)| (*k, v.to_string_lossy().into_owned()))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // One process.
    let whole = fresh("gs", servers, "slurm-whole");
    std::fs::create_dir(dir.path().join("w")).unwrap();
    let whole_job = cli_job_file(&dir.path().join("w"), "slurm_bucket", &input, &whole);
    let out = std::process::Command::new(crate::cli_program())
        .envs(server_env(servers))
        .arg("run")
        .arg(&whole_job)
        .args(crate::slurm::SHAPE.split(' '))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three parts on the cluster, then the merge.
    let parted = fresh("gs", servers, "slurm-parted");
    let job = cli_job_file(dir.path(), "slurm_bucket", &input, &parted);
    let array = crate::slurm::submit_parts(cluster, &job, "0-2", 3, &logs, &env);
    let done = crate::slurm::merge(cluster, &job, &array, &logs, &env);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    let written = outputs(&storage, &parted);
    assert!(written.len() >= 3, "{written:?}");
    assert!(written == outputs(&storage, &whole));
}

/// Objects just listed are read with one request each (the listing told
/// their version and size), on every backend; one this storage rewrote
/// after the listing, or deleted and wrote again, is read as it is now.
#[test]
fn listed_objects_are_read_with_one_request_and_rewritten_ones_afresh() {
    let Some(servers) = servers() else { return };
    for (scheme, upstream) in schemes(servers) {
        let prefix = fresh(scheme, servers, "listed");
        let direct = backend_at(scheme, upstream);
        for i in 0..5 {
            direct
                .put_bytes(
                    &format!("{prefix}/{i}.jsonl"),
                    format!("{{\"i\": {i}}}\n").as_bytes(),
                )
                .unwrap();
        }
        let proxy = Proxy::start(upstream, "pass");
        let through = backend_at(scheme, &proxy.url);
        let listed = through.list(&format!("{prefix}/")).unwrap();
        assert_eq!(listed.len(), 5, "{prefix}");
        let rewritten = format!("{prefix}/3.jsonl");
        through
            .put_bytes(&rewritten, b"{\"i\": \"again\"}\n")
            .unwrap();
        through.delete(&format!("{prefix}/4.jsonl")).unwrap();
        through
            .put_bytes(&format!("{prefix}/4.jsonl"), b"{\"i\": \"anew\"}\n")
            .unwrap();
        let before = proxy.stats()["requests"].as_array().unwrap().len();
        let mut read = Vec::new();
        for meta in &listed {
            read.push(String::from_utf8(through.read_bytes(&meta.location).unwrap()).unwrap());
        }
        assert_eq!(
            read,
            [
                "{\"i\": 0}\n",
                "{\"i\": 1}\n",
                "{\"i\": 2}\n",
                "{\"i\": \"again\"}\n",
                "{\"i\": \"anew\"}\n"
            ],
            "{prefix}"
        );
        let stats = proxy.stats();
        let requests = &stats["requests"].as_array().unwrap()[before..];
        // One request for each object still as listed; the two written
        // since are asked about first.
        assert_eq!(requests.len(), 3 + 2 * 2, "{prefix}: {requests:?}");
        // A second read of a listed object asks again.
        through.read_bytes(&listed[0].location).unwrap();
        let again = proxy.stats()["requests"].as_array().unwrap().len();
        assert_eq!(again - before - requests.len(), 2, "{prefix}");
    }
}

/// An object another writer replaced after this storage listed it is not
/// read silently as either version: the read fails, naming it.
#[test]
fn an_object_replaced_by_another_writer_after_the_listing_fails_its_read() {
    let Some(servers) = servers() else { return };
    for (scheme, upstream) in schemes(servers) {
        let prefix = fresh(scheme, servers, "replaced");
        let location = format!("{prefix}/a.jsonl");
        let (reader, writer) = (backend_at(scheme, upstream), backend_at(scheme, upstream));
        writer.put_bytes(&location, b"{\"v\": 1}\n").unwrap();
        assert_eq!(reader.list(&format!("{prefix}/")).unwrap().len(), 1);
        writer
            .put_bytes(&location, b"{\"v\": 2, \"longer\": true}\n")
            .unwrap();
        let error = reader.read_bytes(&location).unwrap_err().to_string();
        assert!(
            error.contains(&location) && error.contains("another writer replaced or deleted"),
            "{error}"
        );
        // Listed again, it reads as it is now.
        reader.list(&format!("{prefix}/")).unwrap();
        assert_eq!(
            reader.read_bytes(&location).unwrap(),
            b"{\"v\": 2, \"longer\": true}\n"
        );
        // Listed, replaced, then looked at with `head` (as a job's plan
        // looks at an input named without a wildcard): read as seen last.
        reader.list(&format!("{prefix}/")).unwrap();
        writer.put_bytes(&location, b"{\"v\": 3}\n").unwrap();
        assert_eq!(reader.head(&location).unwrap().size, 9);
        assert_eq!(reader.read_bytes(&location).unwrap(), b"{\"v\": 3}\n");
    }
}

/// Which stores let a deletion run beside an upload to the same name:
/// all but Azure, whose uncommitted blocks go with the blob.
#[test]
fn uploads_survive_deletes_everywhere_but_on_azure() {
    let Some(servers) = servers() else { return };
    let storage = cloud(servers);
    for (scheme, _) in schemes(servers) {
        let location = format!("{scheme}://{}/x", servers.bucket);
        assert_eq!(
            storage.upload_survives_delete(&location),
            scheme != "az",
            "{location}"
        );
    }
    assert!(storage.upload_survives_delete("/tmp/x"));
    assert!(batch_prediction::InMemoryStorage::new().upload_survives_delete("gs://b/x"));
}
