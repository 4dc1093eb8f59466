//! A job never reads or deletes its own output: a job whose `inputPaths`
//! can match the files it writes into `outputPath` is refused before
//! anything is read, written or deleted, however the two are spelled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use batch_prediction::predict::CancelHandle;
use batch_prediction::{
    BatchExecutor, EchoResolver, ExecutorConfig, InMemoryStorage, Job, LocalStorage, State,
    Storage, StorageExt, SystemClock, Transition,
};
use proptest::prelude::*;
use serde_json::json;

fn job(inputs: &[&str], output: &str) -> Job {
    let mut job = Job::from_value(json!({
        "jobId": "own_output",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": inputs,
            "outputPath": output,
            "region": "local",
            "uri": "echo",
        }
    }))
    .unwrap();
    job.apply(Transition::Queue, &SystemClock).unwrap();
    job
}

fn run(storage: Arc<dyn Storage>, inputs: &[&str], output: &str) -> Job {
    let mut job = job(inputs, output);
    BatchExecutor::new(storage, Arc::new(EchoResolver))
        .with_config(ExecutorConfig::default().with_max_threads(2))
        .run(&mut job, &CancelHandle::new())
        .unwrap();
    job
}

/// Every file under `dir`, by path relative to it, with its bytes; links
/// to directories are not followed.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_refused(job: &Job, output: &str, pattern: &str) {
    assert_eq!(job.state(), State::Failed, "{job:?}");
    let message = job.error_message.as_deref().unwrap();
    assert!(
        message.contains("predictionInput.outputPath")
            && message.contains(&format!("\"{output}\" overlaps inputPaths["))
            && message.contains(&format!("\"{pattern}\"")),
        "{message}"
    );
}

/// Three lines under `gs://b/in`, and a finished job's output under `gs://b/out`.
fn earlier_results(storage: &InMemoryStorage) {
    storage.put(
        "gs://b/in/a.jsonl",
        b"{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n".to_vec(),
    );
    let done = run(Arc::new(storage.clone()), &["gs://b/in/*"], "gs://b/out");
    assert_eq!(done.state(), State::Succeeded);
}

#[test]
fn earlier_results_as_inputs_with_the_same_output_path_are_refused() {
    for output in ["gs://b/out", "gs://b/out/", "gs://b/./out", "gs://b//out"] {
        let storage = InMemoryStorage::new();
        earlier_results(&storage);
        let before: Vec<(String, Vec<u8>)> = storage
            .locations()
            .into_iter()
            .map(|l| (l.clone(), storage.get(&l).unwrap()))
            .collect();
        let pattern = "gs://b/out/prediction.results-*";
        // Seen at jobs.create: the field, both locations.
        let err = job(&[pattern], output).validate().unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            ["predictionInput.outputPath"]
        );
        // And by the executor: FAILED, nothing deleted or changed.
        let job = run(Arc::new(storage.clone()), &[pattern], output);
        assert_refused(&job, output, pattern);
        let after: Vec<(String, Vec<u8>)> = storage
            .locations()
            .into_iter()
            .map(|l| (l.clone(), storage.get(&l).unwrap()))
            .collect();
        assert_eq!(before, after, "{output}");
    }
}

#[test]
fn earlier_results_are_inputs_of_a_job_writing_elsewhere() {
    let storage = InMemoryStorage::new();
    earlier_results(&storage);
    let job = run(
        Arc::new(storage.clone()),
        &["gs://b/out/prediction.results-*"],
        "gs://b/out2",
    );
    assert_eq!(job.state(), State::Succeeded, "{:?}", job.error_message);
    let output = job.prediction_output.unwrap();
    assert_eq!(output.prediction_count, Some(3));
    assert!(
        storage
            .get("gs://b/out/prediction.results-00000-of-00001")
            .is_some()
    );
}

#[test]
fn patterns_that_cover_the_output_directory_are_refused() {
    for (pattern, output) in [
        ("gs://b/**", "gs://b/out"),
        ("gs://b/*/prediction.*", "gs://b/out/"),
        ("gs://b/in/*", "gs://b/in"),
        ("gs://b/in/*.json", "gs://b/in"), // the shard summaries are .json
        ("gs://b/in/prediction.errors-00000-of-00001", "gs://b/in/"),
        ("data/*", "./data/"),
        ("*", "."),
    ] {
        let err = job(&[pattern], output).validate().unwrap_err();
        assert!(
            err.to_string().contains("overlaps inputPaths[0]"),
            "{pattern} -> {output}: {err}"
        );
    }
    for (pattern, output) in [
        ("gs://b/in/*", "gs://b/in/out"), // `*` stays within a segment
        ("gs://b/in/*.jsonl", "gs://b/in"),
        ("gs://b/in/**", "gs://b/out"),
        ("gs://b/out/sub/*", "gs://b/out"),
        ("gs://b/out/prediction.results-*", "gs://b/output"),
        ("gs://b/out/a.json", "gs://b/out"),
    ] {
        assert!(
            job(&[pattern], output).validate().is_ok(),
            "{pattern} -> {output}"
        );
    }
}

/// A directory with `in/a.jsonl`, an earlier job's output in `in` (written
/// by a job whose `*.jsonl` pattern cannot match it), and `link -> in`.
fn local_layout() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().display().to_string();
    std::fs::create_dir_all(format!("{root}/in")).unwrap();
    std::fs::write(format!("{root}/in/a.jsonl"), b"{\"x\":1}\n{\"x\":2}\n").unwrap();
    std::os::unix::fs::symlink(format!("{root}/in"), format!("{root}/link")).unwrap();
    let storage = Arc::new(LocalStorage::with_gcs_root(&root));
    let done = run(
        storage,
        &[&format!("{root}/in/*.jsonl")],
        &format!("{root}/in"),
    );
    assert_eq!(done.state(), State::Succeeded, "{:?}", done.error_message);
    assert!(Path::new(&format!("{root}/in/prediction.results-00000-of-00001")).is_file());
    (dir, root)
}

#[test]
fn a_rerun_naming_the_input_directory_in_another_spelling_is_refused() {
    let (dir, root) = local_layout();
    let before = tree(dir.path());
    for (pattern, output) in [
        (format!("{root}/in/*"), format!("{root}/./in")),
        (format!("{root}/in/*"), format!("{root}/in/")),
        (format!("{root}/./in/**"), format!("{root}//in")),
        (format!("file://{root}/in/*"), format!("{root}/in")),
        ("gs://in/*".to_owned(), format!("{root}/in")),
        (format!("{root}/in/*"), "gs://in/".to_owned()),
        // Seen only through the storage: the link.
        (format!("{root}/in/*"), format!("{root}/link")),
        (format!("{root}/link/*"), format!("{root}/in")),
        // Seen only once the pattern matched an earlier output.
        (
            format!("{root}/link/prediction.results-0000[0-9]-of-0000[1-9]"),
            format!("{root}/in/"),
        ),
    ] {
        let storage = Arc::new(LocalStorage::with_gcs_root(&root));
        let job = run(storage, &[&pattern], &output);
        assert_refused(&job, &output, &pattern);
        assert_eq!(tree(dir.path()), before, "{pattern} -> {output}");
    }
}

#[cfg(feature = "cli")]
#[test]
fn the_command_line_refuses_a_job_reading_its_own_output() {
    let exe = crate::cli_program();
    let (dir, root) = local_layout();
    let before = tree(dir.path());
    let job_file = dir.path().join("job.json");
    for output in [format!("{root}/./in"), format!("{root}/link")] {
        std::fs::write(
            &job_file,
            json!({
                "jobId": "cli",
                "predictionInput": {
                    "dataFormat": "JSON", "inputPaths": [format!("{root}/in/*")],
                    "outputPath": output, "region": "local", "uri": "echo"
                }
            })
            .to_string(),
        )
        .unwrap();
        let out = std::process::Command::new(&exe)
            .arg("run")
            .arg(&job_file)
            .args(["--predictor", "echo"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("job FAILED") && stderr.contains("overlaps inputPaths[0]"),
            "{stderr}"
        );
        std::fs::remove_file(&job_file).unwrap();
        assert_eq!(tree(dir.path()), before, "{output}");
    }
}

/// A spelling of `dir` (relative to `root`, e.g. `in`) by `how`.
fn spell(root: &str, dir: &str, how: u8) -> String {
    match how % 7 {
        0 => format!("{root}/{dir}"),
        1 => format!("{root}/./{dir}/"),
        2 => format!("{root}//{dir}"),
        3 => format!("file://{root}/{dir}"),
        4 => format!("gs://{dir}"),
        5 => format!("{root}/link/../{dir}"),
        // Through the link to `in`, where that leads to `dir`.
        _ => match dir.strip_prefix("in") {
            Some(rest) => format!("{root}/link{rest}"),
            None => format!("{root}/{dir}"),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the spellings, no byte of an input is changed or removed;
    /// the job succeeds with every input line predicted, or is refused and
    /// changes nothing at all.
    #[test]
    fn no_input_byte_is_changed_or_removed(
        input_dir in 0usize..3,
        input_spelling in any::<u8>(),
        tail in 0usize..6,
        output_dir in 0usize..4,
        output_spelling in any::<u8>(),
    ) {
        let (dir, root) = local_layout();
        let input_dir = ["in", "in/sub", "other"][input_dir];
        for d in ["in/sub", "other"] {
            std::fs::create_dir_all(format!("{root}/{d}")).unwrap();
            std::fs::write(format!("{root}/{d}/b.jsonl"), b"{\"y\":1}\n").unwrap();
        }
        let tail = ["*", "**", "prediction.results-*", "*.jsonl", "prediction.*", "*-of-*"][tail];
        let pattern = format!("{}/{tail}", spell(&root, input_dir, input_spelling).trim_end_matches('/'));
        let output = spell(&root, ["in", "in/sub", "other", "out"][output_dir], output_spelling);
        let storage = Arc::new(LocalStorage::with_gcs_root(&root));
        let inputs: BTreeMap<String, Vec<u8>> = match storage.expand(&[&pattern]) {
            Ok(found) => found.iter().map(|m| (m.location.clone(), storage.read_bytes(&m.location).unwrap())).collect(),
            Err(_) => BTreeMap::new(),
        };
        let before = tree(dir.path());
        let job = run(storage.clone(), &[&pattern], &output);
        for (location, bytes) in &inputs {
            prop_assert_eq!(&storage.read_bytes(location).ok(), &Some(bytes.clone()), "{} changed", location);
        }
        match job.state() {
            State::Succeeded => {
                let lines: usize = inputs.values().map(|b| b.iter().filter(|&&c| c == b'\n').count()).sum();
                let output = job.prediction_output.as_ref().unwrap();
                let read = output.prediction_count.unwrap() + output.error_count.unwrap();
                prop_assert_eq!(read, lines as i64);
            }
            _ => {
                let message = job.error_message.clone().unwrap_or_default();
                prop_assert!(
                    message.contains("overlaps inputPaths[0]") || message.contains("no object matches"),
                    "{}", message
                );
                prop_assert_eq!(tree(dir.path()), before);
            }
        }
    }
}
