//! Runs a batch prediction job on this machine.
//!
//! ```text
//! cargo run --release --example batch_predict -- JOB.json [options]
//!
//!   JOB.json                 a jobs.create request body: local paths or file:// in
//!                            inputPaths and outputPath; with the `cloud` feature, gs:// and
//!                            s3:// buckets (credentials and emulators from the environment)
//!   --predictor NAME         the model to run: `onnx` (with the `onnx` feature, and then the
//!                            default) runs the ONNX model at the job's uri with tract; `ort`
//!                            (with the `ort` feature) runs it with onnxruntime, loaded from
//!                            ORT_DYLIB_PATH; `echo` predicts each instance as itself (the
//!                            default without the `onnx` feature)
//!   --intra-threads N        with `ort`: threads per worker's session (default 1)
//!   --gcs-root DIR           read and write gs://BUCKET/PATH at DIR/BUCKET/PATH, not on Cloud Storage
//!   --threads N              at most N worker threads (default: all cores)
//!   --max-errors N           fail the job once more than N instances failed
//!   --max-error-ratio R      fail the job when more than R of the instances failed
//!   --fresh                  ignore shards an earlier run finished
//!   --plan                   print what would run, and stop
//!   --shard I/N              run only part I (from 0) of N: the plan shards k with k % N == I
//!                            (one process of N, e.g. a Kubernetes Indexed Job; see examples/scale-out)
//!   --merge                  combine the parts' summaries into the finished job; runs nothing
//! ```
//!
//! Shows progress on stderr, prints the finished job as the API's JSON on
//! stdout, and exits 0 when it SUCCEEDED; otherwise 1, with the
//! `errorMessage` on stderr (2 for a bad command line or job file).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_prediction::{
    BatchExecutor, CancelHandle, EchoResolver, ExecutorConfig, Job, LocalStorage, ModelResolver,
    Progress, ResumeMode, State, Storage, SystemClock, Transition,
};

const USAGE: &str = "usage: batch_predict JOB.json [--predictor onnx|ort|echo] [--intra-threads N] [--gcs-root DIR] [--threads N] \
                     [--max-errors N] [--max-error-ratio R] [--fresh] [--plan] [--shard I/N] [--merge]";

struct Args {
    job: String,
    predictor: String,
    intra_threads: usize,
    gcs_root: Option<String>,
    config: ExecutorConfig,
    plan_only: bool,
    merge: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut job = None;
    let mut predictor = if cfg!(feature = "onnx") {
        "onnx"
    } else {
        "echo"
    }
    .to_owned();
    let mut gcs_root = None;
    let mut intra_threads = 1;
    let mut config = ExecutorConfig::default();
    let mut plan_only = false;
    let mut merge = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--predictor" => predictor = value("--predictor")?,
            "--gcs-root" => gcs_root = Some(value("--gcs-root")?),
            "--intra-threads" => {
                let n = value("--intra-threads")?;
                intra_threads = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--intra-threads: not a positive number: {n:?}"))?;
            }
            "--threads" => {
                let n = value("--threads")?;
                config = config.with_max_threads(
                    n.parse()
                        .map_err(|_| format!("--threads: not a number: {n:?}"))?,
                );
            }
            "--max-errors" => {
                let n = value("--max-errors")?;
                config = config.with_max_error_count(
                    n.parse()
                        .map_err(|_| format!("--max-errors: not a number: {n:?}"))?,
                );
            }
            "--max-error-ratio" => {
                let r = value("--max-error-ratio")?;
                config = config.with_max_error_ratio(
                    r.parse()
                        .map_err(|_| format!("--max-error-ratio: not a number: {r:?}"))?,
                );
            }
            "--fresh" => config = config.with_resume(ResumeMode::Fresh),
            "--plan" => plan_only = true,
            "--merge" => merge = true,
            "--shard" => {
                let part = value("--shard")?;
                config = config.with_shard_selection(
                    part.parse::<batch_prediction::ShardSelection>()
                        .map_err(|e| e.to_string())?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            path if job.is_none() => job = Some(path.to_owned()),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    Ok(Args {
        job: job.ok_or("missing JOB.json")?,
        predictor,
        intra_threads,
        gcs_root,
        config,
        plan_only,
        merge,
    })
}

/// Where the job's files are: with the `cloud` feature, `gs://` and `s3://`
/// are real buckets (unless `--gcs-root` maps `gs://` into a directory);
/// without it, local paths (and `gs://` under `--gcs-root`) only.
fn storage(args: &Args, local: LocalStorage) -> Arc<dyn Storage> {
    #[cfg(feature = "cloud")]
    if args.gcs_root.is_none() {
        return Arc::new(batch_prediction::CloudStorage::new(local));
    }
    let _ = args;
    Arc::new(local)
}

fn resolver(
    args: &Args,
    local: LocalStorage,
    storage: &Arc<dyn Storage>,
) -> Result<Arc<dyn ModelResolver>, String> {
    let _ = (&local, storage, args.intra_threads);
    match args.predictor.as_str() {
        "echo" => Ok(Arc::new(EchoResolver)),
        #[cfg(feature = "onnx")]
        "onnx" => Ok(Arc::new(
            batch_prediction::OnnxResolver::new(local).with_buckets(Arc::clone(storage)),
        )),
        #[cfg(not(feature = "onnx"))]
        "onnx" => {
            Err("the onnx predictor needs the onnx feature: cargo run --features onnx …".into())
        }
        #[cfg(feature = "ort")]
        "ort" => Ok(Arc::new(
            batch_prediction::OrtResolver::new(local)
                .with_buckets(Arc::clone(storage))
                .with_options(
                    batch_prediction::OrtOptions::new().with_intra_threads(args.intra_threads),
                ),
        )),
        #[cfg(not(feature = "ort"))]
        "ort" => Err("the ort predictor needs the ort feature: cargo run --features ort …".into()),
        other => Err(format!(
            "unknown predictor {other:?}: expected onnx, ort or echo"
        )),
    }
}

/// A one-line progress bar, redrawn at most ten times a second.
fn progress_bar() -> impl Fn(&Progress<'_>) + Send + Sync {
    let last = Mutex::new(Instant::now() - Duration::from_secs(1));
    let terminal = std::io::stderr().is_terminal();
    move |p: &Progress<'_>| {
        let finished = p.shards_done == p.shards.len();
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if !terminal || (!finished && last.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Instant::now();
        let fraction = if p.total_bytes == 0 {
            1.0
        } else {
            (p.bytes_read as f64 / p.total_bytes as f64).min(1.0)
        };
        let width = 30;
        let filled = (fraction * width as f64) as usize;
        let rate = p.bytes_read as f64 / 1e6 / p.elapsed.as_secs_f64().max(1e-9);
        eprint!(
            "\r[{}{}] {:5.1}%  {} records  {} predictions  {} errors  {:.1} MB/s  shards {}/{} ",
            "=".repeat(filled),
            " ".repeat(width - filled),
            fraction * 100.0,
            p.records_read,
            p.predictions,
            p.errors,
            rate,
            p.shards_done,
            p.shards.len()
        );
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("batch_predict: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&args.job) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("batch_predict: cannot read {}: {e}", args.job);
            return ExitCode::from(2);
        }
    };
    let mut job = match Job::from_json(&text) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("batch_predict: {}: {e}", args.job);
            return ExitCode::from(2);
        }
    };
    let local = match &args.gcs_root {
        Some(root) => LocalStorage::with_gcs_root(root),
        None => LocalStorage::new(),
    };
    let storage = storage(&args, local.clone());
    let resolver = match resolver(&args, local, &storage) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("batch_predict: {message}");
            return ExitCode::from(2);
        }
    };
    let executor = BatchExecutor::new(storage, resolver)
        .with_config(args.config)
        .with_observer(Arc::new(progress_bar()));

    if args.plan_only {
        return match executor.plan(&job) {
            Ok(plan) => {
                println!(
                    "{} input files, {} bytes, {} shards, batches of {}, {} workers",
                    plan.inputs.len(),
                    plan.total_bytes,
                    plan.shards.len(),
                    plan.batch_size,
                    plan.workers
                );
                for shard in &plan.shards {
                    let files: Vec<&str> = plan.inputs[shard.inputs.clone()]
                        .iter()
                        .map(|m| m.location.as_str())
                        .collect();
                    println!(
                        "shard {}: {} bytes from {:?} -> {}",
                        shard.index, shard.bytes, files, shard.results_file
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("batch_predict: {e}");
                ExitCode::from(1)
            }
        };
    }

    // A create request: queue it as the service would.
    if job.state.is_none() {
        job.clear_output_only();
        if let Err(e) = job.apply(Transition::Queue, &SystemClock) {
            eprintln!("batch_predict: {e}");
            return ExitCode::from(2);
        }
    }
    let cancel = CancelHandle::new();
    let summary = match if args.merge {
        executor.merge(&mut job)
    } else {
        executor.run(&mut job, &cancel)
    } {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("batch_predict: {e}");
            return ExitCode::from(2);
        }
    };
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    eprintln!(
        "{}: {} predictions, {} errors, {} records in {:.2} s ({} of {} shards resumed)",
        summary.state,
        summary.prediction_count,
        summary.error_count,
        summary.records_read,
        summary.elapsed.as_secs_f64(),
        summary.shards_resumed,
        summary.shards
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&job).expect("a job serializes")
    );
    if summary.state == State::Succeeded {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "job {}: {}",
            summary.state,
            job.error_message.as_deref().unwrap_or("")
        );
        ExitCode::from(1)
    }
}
