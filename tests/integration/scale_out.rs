//! One job spread over several processes (`ShardSelection`, then
//! `BatchExecutor::merge`): the processes, run at once or in any order,
//! write byte for byte the files one process writes; a finished part run
//! again changes nothing; a failed part can be run again alone.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use batch_prediction::executor::ShardSelection;
use batch_prediction::predict::CancelHandle;
use batch_prediction::{
    BatchExecutor, EchoResolver, ExecutorConfig, Job, LocalStorage, RunSummary, State, SystemClock,
    Transition,
};
use serde_json::json;

const DIR: &str = "BATCH_PREDICTION_SCALE_DIR";
const PART: &str = "BATCH_PREDICTION_SCALE_PART";

fn job(root: &Path, out: &str) -> Job {
    let mut job = Job::from_value(json!({
        "jobId": "scaled",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [format!("{}/in/*.jsonl", root.display())],
            "outputPath": format!("{}/{out}", root.display()),
            "region": "local",
            "uri": "echo",
            "batchSize": "4"
        }
    }))
    .unwrap();
    job.apply(Transition::Queue, &SystemClock).unwrap();
    job
}

/// One plan shard per small input file, and three byte ranges of the
/// large one: nine shards.
fn executor(part: Option<ShardSelection>) -> BatchExecutor {
    let mut config = ExecutorConfig::default()
        .with_shard_target_bytes(1)
        .with_split_bytes(500)
        .with_max_threads(2);
    if let Some(part) = part {
        config = config.with_shard_selection(part);
    }
    BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(EchoResolver)).with_config(config)
}

fn run(root: &Path, out: &str, part: Option<ShardSelection>) -> (Job, RunSummary) {
    let mut job = job(root, out);
    let summary = executor(part).run(&mut job, &CancelHandle::new()).unwrap();
    (job, summary)
}

/// A part of the job, as a separate process runs it. Does nothing unless
/// run by `parts_in_separate_processes_write_what_one_process_writes`.
#[test]
#[ignore = "run as a child process by parts_in_separate_processes_write_what_one_process_writes"]
fn part_child() {
    let (Ok(root), Ok(part)) = (std::env::var(DIR), std::env::var(PART)) else {
        return;
    };
    let (job, summary) = run(Path::new(&root), "multi", Some(part.parse().unwrap()));
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
}

fn spawn_part(root: &Path, part: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "scale_out::part_child",
            "--test-threads=1",
        ])
        .env(DIR, root)
        .env(PART, part)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn merge(root: &Path) -> (Job, RunSummary) {
    let mut job = job(root, "multi");
    let summary = executor(None).merge(&mut job).unwrap();
    (job, summary)
}

#[test]
fn parts_in_separate_processes_write_what_one_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    for f in 0..6 {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!("{{\"file\": {f}, \"i\": {i}}}\n"));
        }
        if f % 2 == 0 {
            text.push_str("not json\n");
        }
        std::fs::write(root.join(format!("in/{f}.jsonl")), text).unwrap();
    }
    let large: String = (0..80).map(|i| format!("{{\"large\": {i}}}\n")).collect();
    assert!((1001..=1500).contains(&large.len()), "{}", large.len());
    std::fs::write(root.join("in/6.jsonl"), large).unwrap();
    let (single_job, single) = run(root, "single", None);
    assert_eq!(single.state, State::Succeeded);
    assert_eq!(
        (single.prediction_count, single.error_count, single.shards),
        (200, 3, 9)
    );

    // Four processes at once: shards 0, 4, 8; 1, 5; 2, 6; 3, 7 (6 to 8 are
    // the three byte ranges of the large file).
    let children: Vec<_> = (0..4)
        .map(|i| spawn_part(root, &format!("{i}/4")))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let (merged_job, merged) = merge(root);
    assert_eq!(
        merged.state,
        State::Succeeded,
        "{:?}",
        merged_job.error_message
    );
    assert_eq!(
        (merged.prediction_count, merged.error_count),
        (single.prediction_count, single.error_count)
    );
    assert_eq!(
        merged_job
            .prediction_output
            .as_ref()
            .unwrap()
            .prediction_count(),
        single_job
            .prediction_output
            .as_ref()
            .unwrap()
            .prediction_count()
    );
    // The shards' bytes add up to the inputs', byte ranges included.
    let read: u64 = (0..9)
        .map(|i| {
            let summary =
                std::fs::read(root.join(format!("single/prediction.summary-{i:05}-of-00009.json")))
                    .unwrap();
            let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
            summary["bytesRead"].as_u64().unwrap()
        })
        .sum();
    let inputs: u64 = std::fs::read_dir(root.join("in"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(read, inputs);
    let one = crate::output_files(&root.join("single"));
    assert_eq!(
        crate::output_files(&root.join("multi")),
        one,
        "byte for byte"
    );
    assert_eq!(
        one.len(),
        9 * 4,
        "results, errors, errors_stats and a summary per shard"
    );

    // A finished part run again changes nothing, not even its summaries.
    let summaries = |dir: &str| -> Vec<Vec<u8>> {
        (0..9)
            .map(|i| {
                std::fs::read(root.join(format!("{dir}/prediction.summary-{i:05}-of-00009.json")))
                    .unwrap()
            })
            .collect()
    };
    let before = summaries("multi");
    assert!(spawn_part(root, "2/4").wait().unwrap().success()); // shards 2 and 6, a byte range
    assert_eq!(summaries("multi"), before);
    assert_eq!(crate::output_files(&root.join("multi")), one);

    // A lost part: the merge names it; running that part alone repairs it.
    std::fs::remove_file(root.join("multi/prediction.results-00007-of-00009")).unwrap();
    let (broken_job, broken) = merge(root);
    assert_eq!(broken.state, State::Failed);
    assert_eq!(
        broken_job.error_message.as_deref(),
        Some(
            "cannot merge: 1 of 9 shards are not finished (plan shards 7); run them and merge again"
        )
    );
    assert!(spawn_part(root, "3/4").wait().unwrap().success());
    assert_eq!(merge(root).1.state, State::Succeeded);
    assert_eq!(crate::output_files(&root.join("multi")), one);
}

#[test]
fn csv_output_and_fresh_starts_are_not_spread_over_processes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::write(root.join("in/0.jsonl"), "{\"a\": 1}\n").unwrap();
    let part: ShardSelection = "0/2".parse().unwrap();
    let mut csv = job(root, "csv");
    csv.prediction_input.as_mut().unwrap().output_data_format =
        Some(batch_prediction::DataFormat::Csv);
    executor(Some(part))
        .run(&mut csv, &CancelHandle::new())
        .unwrap();
    assert_eq!(csv.state(), State::Failed);
    assert!(
        csv.error_message
            .unwrap()
            .starts_with("CSV output cannot be spread over processes")
    );
    let mut fresh = job(root, "fresh");
    let config = ExecutorConfig::default()
        .with_shard_selection(part)
        .with_resume(batch_prediction::executor::ResumeMode::Fresh);
    BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(EchoResolver))
        .with_config(config)
        .run(&mut fresh, &CancelHandle::new())
        .unwrap();
    assert_eq!(fresh.state(), State::Failed);
    assert!(
        fresh
            .error_message
            .unwrap()
            .starts_with("a fresh start cannot be one part's")
    );
    // A split size of 0 is taken as 1, and a file is cut into at most 10,000 ranges.
    let mut config = ExecutorConfig::default();
    config.split_bytes = 0;
    std::fs::write(root.join("in/0.jsonl"), "{\"a\": 1}\n".repeat(2000)).unwrap();
    let plan = BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(EchoResolver))
        .with_config(config)
        .plan(&job(root, "plan"))
        .unwrap();
    assert_eq!(plan.shards.len(), 10_000);
    assert_eq!(
        plan.shards.last().unwrap().byte_range.as_ref().unwrap().end,
        18_000
    );
}

#[test]
fn parts_must_be_i_of_n() {
    for bad in ["", "1", "4/4", "-1/2", "a/b", "0/0"] {
        let err = bad.parse::<ShardSelection>().unwrap_err();
        assert_eq!(err.code(), batch_prediction::Code::InvalidArgument, "{bad}");
    }
    assert_eq!("2/5".parse::<ShardSelection>().unwrap().to_string(), "2/5");
}
