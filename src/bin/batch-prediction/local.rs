//! `run`, `validate`, `plan` and a `submit` without `--endpoint`: jobs run
//! on this machine.

use std::sync::Arc;
use std::time::Duration;

use batch_prediction::executor::{Progress, ResumeMode, ShardSelection};
use batch_prediction::predict::CancelHandle;
use batch_prediction::{
    BatchExecutor, EchoResolver, ExecutorConfig, Job, LocalStorage, ModelResolver, State, Storage,
    SystemClock, Transition,
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Exit, Format, count};

/// Where a job's files are, and how they are cut into shards.
#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    /// Read and write `gs://BUCKET/PATH` at DIR/BUCKET/PATH, not on Cloud Storage.
    #[arg(long, value_name = "DIR")]
    pub gcs_root: Option<String>,
    /// Plan shards of about this size (default 64MiB): input files are
    /// grouped, and larger JSON and TEXT files split, up to it. The output
    /// file names depend on it, so every `--shard` part and the `--merge`
    /// of a job must give the same value. Bytes, or with a K, M or G suffix
    /// (KiB, MiB and GiB).
    #[arg(long, value_name = "BYTES", value_parser = byte_size)]
    pub shard_bytes: Option<u64>,
}

/// A positive size: bytes, or with a K, M or G suffix (`KiB`, `MiB`,
/// `GiB` and `KB`, `MB`, `GB` read the same, as powers of 1024).
pub fn byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => 0,
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(format!(
            "{text:?}: expected a positive size in bytes, such as 1048576, 512K, 64M or 1G"
        )),
    }
}

/// How a job runs here.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// The model runtime: `auto` (by what the model's folder holds:
    /// `saved_model.pb` runs on `tensorflow`, `model.onnx` on `ort` when
    /// built with it, else `onnx`), `tensorflow` (a SavedModel, on
    /// TensorFlow's library from TENSORFLOW_DYLIB_PATH, with the
    /// `tensorflow` feature), `onnx` (tract, with the `onnx` feature), `ort`
    /// (onnxruntime from ORT_DYLIB_PATH, with the `ort` feature), `remote`
    /// (a model server, with the `remote` feature) or `echo` (each instance
    /// predicted as itself).
    #[arg(long, default_value = "auto")]
    predictor: String,
    /// Where a job's `modelName` or `versionName` is found: a folder of
    /// `PROJECT/MODEL/VERSION/` model directories (the default version named
    /// in `PROJECT/MODEL/DEFAULT`, or the only one), or the URL of a service's
    /// models API (`batch-prediction serve`), whose version's deploymentUri
    /// is the model directory.
    #[arg(long, value_name = "DIR|URL", env = "BATCH_PREDICTION_MODELS")]
    models: Option<String>,
    /// With `ort` and `tensorflow`: threads one operation may use (`ort`:
    /// per worker's session; `tensorflow`: in the process's one pool).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    intra_threads: u32,
    /// At most this many worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Fail the job once more than N instances failed.
    #[arg(long, value_name = "N")]
    max_errors: Option<u64>,
    /// Fail the job when more than this share of the instances failed.
    #[arg(long, value_name = "RATIO")]
    max_error_ratio: Option<f64>,
    /// Ignore the shards an earlier run finished.
    #[arg(long)]
    fresh: bool,
    /// With `remote`: the model server's base URL, e.g. `http://127.0.0.1:8080`
    /// (`run` takes it as `--endpoint` too).
    #[arg(long, value_name = "URL")]
    model_endpoint: Option<String>,
    /// With `remote`: `tfserving` (TensorFlow Serving's REST API, as AI
    /// Platform online prediction and KServe v1 speak it) or `v2` (the Open
    /// Inference Protocol of KServe v2, MLServer and Triton).
    #[arg(long, default_value = "tfserving", value_parser = ["tfserving", "v2"])]
    protocol: String,
    /// With `remote`: the server's model name, for a job that names its model
    /// by uri, or instead of the job's model (`run` takes it as `--model` too).
    /// Otherwise the last segments of the job's modelName or versionName are
    /// the server's model and version.
    #[arg(long, value_name = "NAME")]
    server_model: Option<String>,
    /// With `remote`: a header for every request, e.g. `Authorization: Bearer TOKEN`
    /// (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// How long one predictor call may take before its batch fails (and is
    /// split to find the instances that hang): default 60 with `remote`, no
    /// limit otherwise.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    batch_deadline: Option<Duration>,
    /// Retries of a predictor call that failed for a transient reason (an
    /// HTTP 429 or 503, a dropped connection), waiting 100 ms, doubling up
    /// to 10 s (or the server's Retry-After).
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_retries: u32,
    /// Let each worker's batch size follow the predictor: doubled from
    /// the job's batchSize while throughput rises, halved below a batch that
    /// was too large (HTTP 413, or past the deadline). The output is the same.
    #[arg(long)]
    adaptive_batch: bool,
    #[command(flatten)]
    files: FilesArgs,
}

/// A positive number of seconds, at most a day.
pub fn seconds(text: &str) -> Result<Duration, String> {
    const DAY: f64 = 86_400.0;
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= DAY => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{text:?}: expected a positive number of seconds, at most {DAY} (a day)"
        )),
    }
}

/// `NAME: VALUE`.
fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?}: expected NAME: VALUE")),
    }
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A jobs.create request body (or a job a service wrote).
    job: String,
    #[command(flatten)]
    options: RunOptions,
    /// Run only part I (from 0) of N: the shards k with k % N == I.
    #[arg(long, value_name = "I/N", conflicts_with = "merge")]
    shard: Option<ShardSelection>,
    /// Combine the parts' summaries into the finished job; runs nothing.
    #[arg(long)]
    merge: bool,
    /// `json` (the default) prints the finished job as the API's JSON; `table` a summary.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// `--format json` (the default here), as the other commands take it.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// With `--predictor remote`: the model server's base URL (`--model-endpoint`).
    #[arg(long, value_name = "URL", conflicts_with = "model_endpoint")]
    endpoint: Option<String>,
    /// With `--predictor remote`: the server's model name (`--server-model`).
    #[arg(long, value_name = "NAME", conflicts_with = "server_model")]
    model: Option<String>,
}

fn read_job(path: &str) -> Result<Job, Exit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::Usage(format!("cannot read {path}: {e}")))?;
    Job::from_json(&text).map_err(|e| Exit::Usage(format!("{path}: {e}")))
}

fn local_storage(args: &FilesArgs) -> LocalStorage {
    match &args.gcs_root {
        Some(root) => LocalStorage::with_gcs_root(root),
        None => LocalStorage::new(),
    }
}

/// With the `cloud` feature, `gs://`, `s3://` and `az://` are real buckets (unless
/// `--gcs-root` maps `gs://` into a directory).
fn storage(args: &FilesArgs, local: LocalStorage) -> Arc<dyn Storage> {
    #[cfg(feature = "cloud")]
    if args.gcs_root.is_none() {
        return Arc::new(batch_prediction::CloudStorage::new(local));
    }
    let _ = args;
    Arc::new(local)
}

fn resolver(
    options: &RunOptions,
    local: LocalStorage,
    storage: &Arc<dyn Storage>,
) -> Result<Arc<dyn ModelResolver>, String> {
    match options.predictor.as_str() {
        #[cfg(feature = "remote")]
        "remote" => {
            let endpoint = options.model_endpoint.as_deref().ok_or(
                "--predictor remote: give the model server's URL (--endpoint URL, or --model-endpoint URL with submit)",
            )?;
            let mut resolver =
                batch_prediction::RemoteResolver::new(endpoint, options.protocol.parse()?);
            for (name, value) in &options.headers {
                resolver = resolver.with_header(name, value);
            }
            if let Some(model) = &options.server_model {
                resolver = resolver.with_model(model);
            }
            Ok(Arc::new(resolver))
        }
        #[cfg(not(feature = "remote"))]
        "remote" => Err(without("remote")),
        "echo" => Ok(Arc::new(EchoResolver)),
        name => {
            let inner =
                runtime(name, local, storage, options.intra_threads).unwrap_or_else(|| {
                    Err(format!(
                        "--predictor {name:?}: expected auto, tensorflow, onnx, ort, remote or echo"
                    ))
                })?;
            Ok(Arc::new(crate::registry::NamedModels {
                registry: options.models.as_deref().map(|models| {
                    crate::registry::Registry::parse(
                        models,
                        std::env::var("CLOUDSDK_AUTH_ACCESS_TOKEN").ok(),
                    )
                }),
                inner,
            }))
        }
    }
}

/// The model runtimes that run in this process, by name: `auto`, `echo`,
/// `tensorflow`, `onnx` and `ort` (with `intra_threads` per session),
/// reading models through `local` and, on buckets, `storage`. `None` for
/// another name; an error for one this build lacks.
pub fn runtime(
    name: &str,
    local: LocalStorage,
    storage: &Arc<dyn Storage>,
    intra_threads: u32,
) -> Option<Result<Arc<dyn ModelResolver>, String>> {
    let _ = (&local, storage, intra_threads);
    Some(match name {
        "auto" => Ok(Arc::new(AutoResolver {
            local,
            storage: Arc::clone(storage),
            intra_threads,
        })),
        "echo" => Ok(Arc::new(EchoResolver)),
        #[cfg(feature = "tensorflow")]
        "tensorflow" => Ok(Arc::new(
            batch_prediction::TensorflowResolver::new(local)
                .with_buckets(Arc::clone(storage))
                .with_options(
                    batch_prediction::tensorflow::TensorflowOptions::new()
                        .with_intra_threads(intra_threads),
                ),
        )),
        #[cfg(not(feature = "tensorflow"))]
        "tensorflow" => Err(without("tensorflow")),
        #[cfg(feature = "onnx")]
        "onnx" => Ok(Arc::new(
            batch_prediction::OnnxResolver::new(local).with_buckets(Arc::clone(storage)),
        )),
        #[cfg(feature = "ort")]
        "ort" => Ok(Arc::new(
            batch_prediction::OrtResolver::new(local)
                .with_buckets(Arc::clone(storage))
                .with_options(
                    batch_prediction::onnx::OrtOptions::new()
                        .with_intra_threads(intra_threads as usize),
                ),
        )),
        #[cfg(not(feature = "onnx"))]
        "onnx" => Err(without("onnx")),
        #[cfg(not(feature = "ort"))]
        "ort" => Err(without("ort")),
        _ => return None,
    })
}

/// What a model's folder holds, for `--predictor auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelKind {
    /// `saved_model.pb`.
    SavedModel,
    /// `model.onnx`, or the uri is an `.onnx` file.
    Onnx,
}

/// What the model at `uri` is: read from the local folder (`gs://` mapped
/// by a root) or, on a bucket, from its objects.
fn model_kind(
    uri: &str,
    local: &LocalStorage,
    storage: &Arc<dyn Storage>,
) -> Result<ModelKind, String> {
    let trimmed = uri.trim_end_matches('/');
    if let Ok(path) = local.resolve(trimmed) {
        if path.join("saved_model.pb").is_file() || path.join("saved_model.pbtxt").is_file() {
            return Ok(ModelKind::SavedModel);
        }
        if path.join("model.onnx").is_file() || (path.is_file() && trimmed.ends_with(".onnx")) {
            return Ok(ModelKind::Onnx);
        }
    }
    let at = |name: &str| storage.head(&format!("{trimmed}/{name}")).is_ok();
    if ["gs://", "s3://", "az://"]
        .iter()
        .any(|s| uri.starts_with(s))
    {
        if at("saved_model.pb") {
            return Ok(ModelKind::SavedModel);
        }
        if at("model.onnx") || (trimmed.ends_with(".onnx") && storage.head(trimmed).is_ok()) {
            return Ok(ModelKind::Onnx);
        }
    }
    Err(format!(
        "--predictor auto: the model at {uri} holds neither saved_model.pb (a TensorFlow SavedModel) nor model.onnx; name the runtime with --predictor"
    ))
}

/// `--predictor auto`: each job's model runs on the runtime its folder asks
/// for, or fails saying what it found and which feature runs it.
struct AutoResolver {
    local: LocalStorage,
    storage: Arc<dyn Storage>,
    intra_threads: u32,
}

impl ModelResolver for AutoResolver {
    fn resolve(
        &self,
        model: &batch_prediction::ModelVersion,
        job: &Job,
    ) -> Result<Arc<dyn batch_prediction::Predictor>, batch_prediction::PredictError> {
        use batch_prediction::PredictError;
        let batch_prediction::ModelVersion::Uri(uri) = model else {
            return Err(PredictError::new(format!(
                "--predictor auto loads models from predictionInput.uri, not {model}"
            )));
        };
        let kind = model_kind(uri, &self.local, &self.storage).map_err(PredictError::new)?;
        let (name, found) = match kind {
            ModelKind::SavedModel => ("tensorflow", "a TensorFlow SavedModel (saved_model.pb)"),
            ModelKind::Onnx if cfg!(feature = "ort") || !cfg!(feature = "onnx") => {
                ("ort", "an ONNX model")
            }
            ModelKind::Onnx => ("onnx", "an ONNX model"),
        };
        let resolver = runtime(name, self.local.clone(), &self.storage, self.intra_threads)
            .expect("a runtime of this program")
            .map_err(|_| {
                let features = if kind == ModelKind::Onnx { "onnx (or ort)" } else { name };
                let cli = if kind == ModelKind::Onnx { "onnx" } else { name };
                PredictError::new(format!(
                    "the model at {uri} is {found}, and this program was built without the `{features}` feature that runs it (cargo install batch-prediction --features cli,{cli})"
                ))
            })?;
        resolver.resolve(model, job)
    }
}

/// Why a predictor this build lacks cannot run.
#[cfg(any(
    not(feature = "onnx"),
    not(feature = "ort"),
    not(feature = "remote"),
    not(feature = "tensorflow")
))]
fn without(feature: &str) -> String {
    format!(
        "--predictor {feature}: this program was built without the `{feature}` feature (cargo install batch-prediction --features cli,{feature})"
    )
}

fn executor(options: &RunOptions, shard: Option<ShardSelection>) -> Result<BatchExecutor, Exit> {
    let local = local_storage(&options.files);
    let storage = storage(&options.files, local.clone());
    let resolver = resolver(options, local, &storage).map_err(Exit::Usage)?;
    let mut config = shaped(ExecutorConfig::default(), &options.files);
    if let Some(n) = options.threads {
        config = config.with_max_threads(n);
    }
    if let Some(n) = options.max_errors {
        config = config.with_max_error_count(n);
    }
    if let Some(r) = options.max_error_ratio {
        config = config.with_max_error_ratio(r);
    }
    if options.fresh {
        config = config.with_resume(ResumeMode::Fresh);
    }
    if let Some(shard) = shard {
        config = config.with_shard_selection(shard);
    }
    // Without --batch-deadline: none, or 60 s for a remote predictor (the
    // executor's default for predictors that wait on a server).
    if let Some(d) = options.batch_deadline {
        config = config.with_batch_deadline(d);
    }
    let retries = config.predict_retries.with_max_retries(options.max_retries);
    config = config
        .with_predict_retries(retries)
        .with_adaptive_batch(options.adaptive_batch);
    Ok(BatchExecutor::new(storage, resolver)
        .with_config(config)
        .with_observer(Arc::new(progress_bar())))
}

/// A progress bar on stderr (drawn only on a terminal): bytes read, rate,
/// time left, and the counts so far.
fn progress_bar() -> impl Fn(&Progress<'_>) + Send + Sync {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {percent:>3}% {binary_bytes_per_sec} ETA {eta}  {msg}",
        )
        .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    move |p: &Progress<'_>| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.bytes_read.min(p.total_bytes));
        bar.set_message(format!(
            "{}, {}, {}, shards {}/{}",
            count(p.records_read, "record"),
            count(p.predictions, "prediction"),
            count(p.errors, "error"),
            p.shards_done,
            p.shards.len()
        ));
        if p.shards_done == p.shards.len() {
            bar.finish_and_clear();
        }
    }
}

pub fn run(args: &RunArgs) -> Exit {
    let job = match read_job(&args.job) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    let mut options = args.options.clone();
    if let Some(endpoint) = &args.endpoint {
        options.model_endpoint = Some(endpoint.clone());
    }
    if let Some(model) = &args.model {
        options.server_model = Some(model.clone());
    }
    if args.merge {
        let executor = match executor(&options, None) {
            Ok(e) => e,
            Err(exit) => return exit,
        };
        // The job file every part ran: a create request, queued as `run` queues it.
        let mut job = match queued(job) {
            Ok(job) => job,
            Err(exit) => return exit,
        };
        return finish(executor.merge(&mut job), job, args.format);
    }
    match executor(&options, args.shard) {
        Ok(executor) => execute(&executor, job, args.format),
        Err(exit) => exit,
    }
}

/// Runs `job` (a jobs.create request) here, as `submit` does without an endpoint.
pub fn run_job(job: Job, options: &RunOptions, format: Format) -> Exit {
    match executor(options, None) {
        Ok(executor) => execute(&executor, job, format),
        Err(exit) => exit,
    }
}

/// `job` ready to run: a create request (no state) is queued as the service
/// queues it, its output-only fields cleared; a job a service wrote is
/// taken as it is.
fn queued(mut job: Job) -> Result<Job, Exit> {
    if job.state.is_none() {
        job.clear_output_only();
        job.apply(Transition::Queue, &SystemClock)
            .map_err(|e| Exit::Usage(e.to_string()))?;
    }
    Ok(job)
}

/// `config` with the plan's shard size from `files`, when given.
fn shaped(config: ExecutorConfig, files: &FilesArgs) -> ExecutorConfig {
    match files.shard_bytes {
        Some(bytes) => config
            .with_shard_target_bytes(bytes)
            .with_split_bytes(bytes),
        None => config,
    }
}

fn execute(executor: &BatchExecutor, job: Job, format: Format) -> Exit {
    let mut job = match queued(job) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    let result = executor.run(&mut job, &CancelHandle::new());
    finish(result, job, format)
}

fn finish(
    result: Result<batch_prediction::RunSummary, batch_prediction::Error>,
    job: Job,
    format: Format,
) -> Exit {
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => return Exit::Usage(e.to_string()),
    };
    eprintln!(
        "{}: {}, {}, {} in {:.2} s ({} of {} resumed)",
        summary.state,
        count(summary.prediction_count, "prediction"),
        count(summary.error_count, "error"),
        count(summary.records_read, "record"),
        summary.elapsed.as_secs_f64(),
        summary.shards_resumed,
        count(summary.shards as u64, "shard"),
    );
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&job).expect("a job serializes")
        ),
        Format::Table => crate::endpoint::print_job(&job.to_json()),
    }
    if summary.state == State::Succeeded {
        Exit::Ok
    } else {
        Exit::Failed(format!(
            "job {}: {}",
            summary.state,
            job.error_message.as_deref().unwrap_or("")
        ))
    }
}

pub fn validate(path: &str) -> Exit {
    let job = match read_job(path) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    match job.validate() {
        Ok(()) => {
            println!("{path}: a valid jobs.create request");
            Exit::Ok
        }
        Err(e) => {
            for violation in e.violations() {
                println!("{}: {}", violation.field, violation.description);
            }
            Exit::Failed(format!(
                "{path}: {}",
                count(e.violations().len() as u64, "violation")
            ))
        }
    }
}

pub fn plan(path: &str, files: &FilesArgs) -> Exit {
    let job = match read_job(path) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    let local = local_storage(files);
    let storage = storage(files, local);
    let executor = BatchExecutor::new(storage, Arc::new(EchoResolver))
        .with_config(shaped(ExecutorConfig::default(), files));
    match executor.plan(&job) {
        Ok(plan) => {
            println!(
                "{}, {} bytes, {}, batches of {}, {}",
                count(plan.inputs.len() as u64, "input file"),
                plan.total_bytes,
                count(plan.shards.len() as u64, "shard"),
                plan.batch_size,
                count(plan.workers as u64, "worker")
            );
            for shard in &plan.shards {
                let files: Vec<&str> = plan.inputs[shard.inputs.clone()]
                    .iter()
                    .map(|m| m.location.as_str())
                    .collect();
                println!(
                    "shard {}: {} bytes from {} -> {}",
                    shard.index,
                    shard.bytes,
                    files.join(", "),
                    shard.results_file
                );
            }
            Exit::Ok
        }
        Err(e) => Exit::Failed(format!("{path}: {e}")),
    }
}
