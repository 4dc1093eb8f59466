//! The executor's throughput against the bare cost of the same work, and
//! how it scales from 1 to 2 workers, printed as ratios; optionally its peak
//! memory on a 10 MB and a 1 GB input.
//!
//! ```text
//! cargo run --release --example executor_throughput -- [RECORDS] [--rounds N] [--rss]
//! ```
//!
//! With RECORDS (default 200000) `{"key": N, "x": [4 floats]}` instances in
//! memory, it times, in alternating rounds with the median of 5 (or N):
//! - the bare cost: one thread parsing each JSON line with serde_json and
//!   writing it back (and, as the echo predictor must, writing a copy); or reading the TFRecord frames and writing each as a
//!   `{"b64": …}` line (the echo job's work), and reading them alone;
//! - the echo job through `BatchExecutor` with 1 and 2 workers (batches of 64),
//!   on JSON and TFRecord input;
//! - a CPU-bound predictor (a few µs of arithmetic per instance) with 1 and 2 workers.
//!
//! `--rss` also writes 10 MB and 1 GB JSON-lines files to a temporary
//! directory, runs the echo job on each in a child process, and prints the
//! child's peak resident memory (VmHWM).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_prediction::predict::CancelHandle;
use batch_prediction::record::{RawReader, ReadOptions, TfRecordWriter};
use batch_prediction::{
    BatchExecutor, DataFormat, EchoPredictor, ExecutorConfig, InMemoryStorage, Job, LocalStorage,
    ModelVersion, PredictError, PredictionInput, Predictor, State, Storage, SystemClock,
    Transition,
};
use serde_json::{Value, json};

#[path = "shared/cpu_bound.rs"]
mod cpu_bound;
use cpu_bound::cpu_bound;

/// Alternating rounds per case, unless `--rounds N` says otherwise.
const ROUNDS: usize = 5;

/// The measured cases, in the order each round runs them.
const CASES: [&str; 10] = [
    "bare json",
    "bare json clone",
    "echo json 1w",
    "echo json 2w",
    "bare tfrecord",
    "bare tfrecord echo",
    "echo tfrecord 1w",
    "echo tfrecord 2w",
    "cpu json 1w",
    "cpu json 2w",
];

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn instances(records: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..records {
        let f = i as f64;
        writeln!(
            out,
            "{}",
            json!({"key": i, "x": [f * 0.1, -2.3 + f, 1.25, 0.5 / (f + 1.0)]})
        )
        .unwrap();
    }
    out
}

fn job(format: DataFormat, input: &str, output: &str, workers: i64) -> Job {
    let mut job = Job::new(
        "bench",
        PredictionInput::new(format, [input], output, "local", ModelVersion::uri("m"))
            .set_batch_size(64)
            .set_max_worker_count(workers),
    );
    job.apply(Transition::Queue, &SystemClock).unwrap();
    job
}

fn run_job(
    storage: &Arc<dyn Storage>,
    predictor: Arc<dyn Predictor>,
    mut job: Job,
    records: usize,
) -> Duration {
    let resolver = move |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
        Ok(Arc::clone(&predictor))
    };
    let executor = BatchExecutor::new(Arc::clone(storage), Arc::new(resolver)).with_config(
        ExecutorConfig::default().with_resume(batch_prediction::executor::ResumeMode::Fresh),
    );
    let start = Instant::now();
    let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        (summary.state, summary.prediction_count as usize),
        (State::Succeeded, records),
        "{:?}",
        job.error_message
    );
    elapsed
}

/// Parsing each line and writing it back; with `clone`, writing a copy of
/// the parsed value, as the echo predictor (which borrows its batch) must.
fn bare_json(lines: &[u8], clone: bool) -> Duration {
    let start = Instant::now();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let value: Value = serde_json::from_slice(line).unwrap();
        if clone {
            let copy = value.clone();
            serde_json::to_writer(&mut out, &copy).unwrap();
        } else {
            serde_json::to_writer(&mut out, &value).unwrap();
        }
        out.push(b'\n');
    }
    std::hint::black_box(out);
    start.elapsed()
}

/// Reading the frames; with `echo`, also writing each record as a
/// `{"b64": …}` line, which is the echo job's own work.
fn bare_tfrecord(file: &[u8], records: usize, echo: bool) -> Duration {
    let start = Instant::now();
    let mut reader = RawReader::new(
        DataFormat::TfRecord,
        "bare",
        Box::new(std::io::Cursor::new(file.to_vec())),
        ReadOptions::default(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut n = 0;
    while let Some(item) = reader.read_into(&mut buf) {
        item.unwrap();
        if echo {
            serde_json::to_writer(&mut out, &batch_prediction::record::bytes_to_json(&buf))
                .unwrap();
            out.push(b'\n');
        }
        buf.clear();
        n += 1;
    }
    assert_eq!(n, records);
    std::hint::black_box(out);
    start.elapsed()
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn child_rss(path: &str, output: &str) {
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new());
    let mut job = job(DataFormat::Json, path, output, 2);
    let executor = BatchExecutor::new(storage, Arc::new(batch_prediction::EchoResolver))
        .with_config(
            ExecutorConfig::default().with_resume(batch_prediction::executor::ResumeMode::Fresh),
        );
    let summary = executor.run(&mut job, &CancelHandle::new()).unwrap();
    assert_eq!(summary.state, State::Succeeded);
    println!(
        "{} {} {}",
        peak_rss_kb(),
        summary.prediction_count,
        summary.elapsed.as_secs_f64()
    );
}

fn rss(records_small: usize) {
    let dir = std::env::temp_dir().join(format!("bp-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, target) in [("10MB", 10_000_000usize), ("1GB", 1_000_000_000)] {
        let path = dir.join(format!("{name}.jsonl"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let chunk = instances(records_small.min(100_000));
        let mut written = 0;
        while written < target {
            file.write_all(&chunk).unwrap();
            written += chunk.len();
        }
        file.flush().unwrap();
        drop(file);
        let output = dir.join(format!("{name}-out"));
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--child-rss",
                path.to_str().unwrap(),
                output.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        println!(
            "peak RSS, echo job, 2 workers, {name} input ({} MB): {} kB ({} predictions in {} s)",
            written / 1_000_000,
            fields.first().unwrap_or(&"?"),
            fields.get(1).unwrap_or(&"?"),
            fields.get(2).unwrap_or(&"?")
        );
        std::fs::remove_file(&path).ok();
        std::fs::remove_dir_all(&output).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child-rss") {
        child_rss(&args[1], &args[2]);
        return;
    }
    let only_case = args.iter().position(|a| a == "--only").map(|i| i + 1);
    let case_arg = args.iter().position(|a| a == "--case").map(|i| i + 1);
    let rounds_arg = args.iter().position(|a| a == "--rounds").map(|i| i + 1);
    let rounds: usize = rounds_arg.map_or(ROUNDS, |i| {
        args.get(i)
            .and_then(|n| n.parse().ok())
            .expect("--rounds N")
    });
    let records: usize = args
        .iter()
        .enumerate()
        .find(|&(i, a)| {
            !a.starts_with("--") && ![only_case, case_arg, rounds_arg].contains(&Some(i))
        })
        .map_or(200_000, |(_, s)| s.parse().expect("RECORDS"));
    let lines = instances(records);
    let mut tf = TfRecordWriter::new(Vec::new());
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        tf.write(line).unwrap();
    }
    let tfrecord = tf.into_inner();
    let memory = InMemoryStorage::new();
    memory.put("mem://in/data.jsonl", lines.clone());
    memory.put("mem://in/data.tfrecord", tfrecord.clone());
    let storage: Arc<dyn Storage> = Arc::new(memory);
    let echo: Arc<dyn Predictor> = Arc::new(EchoPredictor);
    let cpu = cpu_bound();

    let run_case = |case: &str| -> Duration {
        let (predictor, format, input, workers) = match case {
            "bare json" => return bare_json(&lines, false),
            "bare json clone" => return bare_json(&lines, true),
            "bare tfrecord" => return bare_tfrecord(&tfrecord, records, false),
            "bare tfrecord echo" => return bare_tfrecord(&tfrecord, records, true),
            "echo json 1w" => (&echo, DataFormat::Json, "mem://in/data.jsonl", 1),
            "echo json 2w" => (&echo, DataFormat::Json, "mem://in/data.jsonl", 2),
            "echo tfrecord 1w" => (&echo, DataFormat::TfRecord, "mem://in/data.tfrecord", 1),
            "echo tfrecord 2w" => (&echo, DataFormat::TfRecord, "mem://in/data.tfrecord", 2),
            "cpu json 1w" => (&cpu, DataFormat::Json, "mem://in/data.jsonl", 1),
            "cpu json 2w" => (&cpu, DataFormat::Json, "mem://in/data.jsonl", 2),
            other => panic!("unknown case {other:?}"),
        };
        run_job(
            &storage,
            predictor.clone(),
            job(format, input, "mem://out/case", workers),
            records,
        )
    };

    // `--only CASE` runs one case ten times in this process, for a profiler
    // (`valgrind --tool=callgrind` counts instructions repeatably); "setup"
    // is the data generation alone, to subtract.
    if let Some(i) = only_case {
        let case = args.get(i).expect("--only CASE").as_str();
        if case != "setup" {
            for _ in 0..10 {
                run_case(case);
            }
        }
        return;
    }
    // `--case CASE` runs one case once and prints its time in nanoseconds:
    // what each measurement below is, in a fresh process.
    if let Some(i) = case_arg {
        let case = args.get(i).expect("--case CASE").as_str();
        println!("{}", run_case(case).as_nanos());
        return;
    }

    // Each measurement runs in a process of its own, so that no case
    // inherits another's heap or threads; rounds alternate the cases so
    // that the machine's drift falls on all of them alike.
    let exe = std::env::current_exe().expect("the running executable");
    let mut t: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for _ in 0..rounds {
        for case in CASES {
            let output = std::process::Command::new(&exe)
                .args(["--case", case, &records.to_string()])
                .output()
                .expect("run a case");
            assert!(output.status.success(), "{case}: {output:?}");
            let nanos: u64 = String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("nanoseconds");
            t.entry(case).or_default().push(Duration::from_nanos(nanos));
        }
    }
    let m: std::collections::BTreeMap<&str, f64> =
        t.into_iter().map(|(k, v)| (k, median(v))).collect();
    let mb = lines.len() as f64 / 1e6;
    let tf_mb = tfrecord.len() as f64 / 1e6;
    println!(
        "{records} instances ({mb:.1} MB as JSON lines, {tf_mb:.1} MB as TFRecord), in memory; medians of {rounds} alternating rounds, each run in a process of its own"
    );
    println!("{:<18} {:>12} {:>10}", "case", "records/s", "MB/s");
    for (name, secs) in &m {
        let size = if name.contains("tfrecord") { tf_mb } else { mb };
        println!(
            "{name:<18} {:>12.0} {:>10.1}",
            records as f64 / secs,
            size / secs
        );
    }
    let ratio = |a: &str, b: &str| m[b] / m[a];
    println!(
        "executor 1w / bare, JSON echo      (speed; ≥ 0.80 means under 25% added): {:.3}",
        ratio("echo json 1w", "bare json")
    );
    println!(
        "executor 1w / bare with the echo's clone, JSON (speed):                  {:.3}",
        ratio("echo json 1w", "bare json clone")
    );
    println!(
        "executor 1w / bare, TFRecord echo  (speed; ≥ 0.80 means under 25% added): {:.3}",
        ratio("echo tfrecord 1w", "bare tfrecord echo")
    );
    println!(
        "executor 1w / plain TFRecord read  (speed):                              {:.3}",
        ratio("echo tfrecord 1w", "bare tfrecord")
    );
    println!(
        "2 workers / 1 worker, JSON echo        (target ≥ 1.6): {:.3}",
        ratio("echo json 2w", "echo json 1w")
    );
    println!(
        "2 workers / 1 worker, TFRecord echo    (target ≥ 1.6): {:.3}",
        ratio("echo tfrecord 2w", "echo tfrecord 1w")
    );
    println!(
        "2 workers / 1 worker, CPU-bound        (target ≥ 1.8): {:.3}",
        ratio("cpu json 2w", "cpu json 1w")
    );
    if args.iter().any(|a| a == "--rss") {
        rss(records);
    }
}
