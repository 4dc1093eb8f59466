//! `serve`: a local emulator of the AI Platform `projects.jobs` API that
//! Google's own clients can talk to.
//!
//! It serves the API on HOST:PORT (127.0.0.1:8080 by default), keeps jobs
//! in a durable store in `ROOT/.jobs`, maps `gs://BUCKET/PATH` in
//! `inputPaths`, `outputPath` and `uri` to `ROOT/BUCKET/PATH` (and refuses
//! anything outside ROOT), and runs created jobs in the background:
//! `jobs.get` shows them move QUEUED → RUNNING → SUCCEEDED with real counts,
//! and `jobs.cancel` stops a running one. With `--buckets` (and the `cloud`
//! feature), `gs://`, `s3://` and `az://` are real buckets instead.
//!
//! Callers: `Authorization: Bearer user:alice@example.com` acts as that
//! principal; with `--enforce-iam` it needs a role on the project
//! (`--policy PROJECT=FILE`) or on the job (setIamPolicy), and everyone
//! with no header is anonymous; an `--admin MEMBER` may do everything.
//! Without `--enforce-iam`, everyone may do everything.
//!
//! Ctrl-C (or SIGTERM) stops it: running jobs end CANCELLED, not cut off.
//!
//! With `--engine slurm`, jobs run on a Slurm cluster instead: each is an
//! array of parts plus a merge, submitted with `sbatch` and followed with
//! `scontrol` (see `SlurmRunner`). Stopping `serve` leaves them running
//! there; started again over the same ROOT, it goes on following them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batch_prediction::iam::{Caller, Policy};
use batch_prediction::rest::RestRequest;
use batch_prediction::service::{LocalRunner, Runner, SlurmOptions, SlurmRunner};
use batch_prediction::{
    BatchExecutor, ExecutorConfig, JobService, LocalJobStore, LocalStorage, ModelResolver,
    ProjectName, RestApi, Storage,
};
use clap::Args;

use crate::Exit;
use crate::http::{self, Limits};

/// `serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The folder that holds the jobs (ROOT/.jobs) and stands for Cloud
    /// Storage: `gs://BUCKET/PATH` is ROOT/BUCKET/PATH.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The port to listen on (0 picks a free one, and says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to listen on: 0.0.0.0 serves other machines too.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The model runtime for every job: `auto` (the default: by what the
    /// model's folder holds, `saved_model.pb` on `tensorflow`, `model.onnx`
    /// on `ort` when built with it, else `onnx`), `tensorflow` (with the
    /// `tensorflow` feature), `onnx` (tract, with the `onnx` feature), `ort`
    /// (onnxruntime, with the `ort` feature) or `echo` (each instance
    /// predicted as itself). A job whose model this build cannot run fails,
    /// saying which feature runs it.
    #[arg(long, default_value = "auto", value_parser = ["auto", "echo", "tensorflow", "onnx", "ort"])]
    predictor: String,
    /// Check every call against IAM policies: the project's (`--policy`)
    /// and the job's (setIamPolicy).
    #[arg(long)]
    enforce_iam: bool,
    /// A project's policy, `PROJECT=FILE`: a policy JSON as setIamPolicy
    /// takes it (repeatable).
    #[arg(long = "policy", value_name = "PROJECT=FILE", value_parser = project_policy)]
    policies: Vec<(ProjectName, Policy)>,
    /// A caller who may do everything, e.g. `user:admin@example.com` (repeatable).
    #[arg(long = "admin", value_name = "MEMBER", value_parser = admin)]
    admins: Vec<String>,
    /// The largest request body; larger ones get 413.
    #[arg(long, value_name = "N", default_value_t = batch_prediction::rest::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Connections served at once; more get 503.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// The time a request's head may take, and then its body and handling
    /// (408 past it).
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = crate::local::seconds)]
    request_deadline: Duration,
    /// `gs://`, `s3://` and `az://` are real buckets, reached with the credentials
    /// and emulators the environment names (needs the `cloud` feature).
    #[arg(long)]
    buckets: bool,
    /// Plan shards of about this size (default 64MiB), as `run
    /// --shard-bytes` does: with `--engine slurm` a job has min(maxWorkerCount,
    /// shards) parts.
    #[arg(long, value_name = "BYTES", value_parser = crate::local::byte_size)]
    shard_bytes: Option<u64>,
    /// Where jobs run: `local` (the default: in this process) or `slurm`
    /// (on the Slurm cluster that `sbatch` reaches, as an array of parts
    /// plus a merge, running this program on the nodes).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    engine: String,
    #[command(flatten)]
    slurm: SlurmArgs,
}

/// `serve --engine slurm`'s options.
#[derive(Debug, Args)]
#[command(next_help_heading = "With --engine slurm")]
struct SlurmArgs {
    /// The `batch-prediction` the nodes run (default: this program).
    #[arg(long, value_name = "PATH")]
    slurm_program: Option<PathBuf>,
    /// Where each job's files and logs go, on a file system the nodes share
    /// (default: ROOT/.jobs/slurm).
    #[arg(long, value_name = "DIR")]
    slurm_dir: Option<PathBuf>,
    /// The partition of every part and merge (sbatch --partition).
    #[arg(long, value_name = "NAME")]
    slurm_partition: Option<String>,
    /// The account charged (sbatch --account).
    #[arg(long, value_name = "NAME")]
    slurm_account: Option<String>,
    /// The time limit of each part and merge (sbatch --time, e.g. 2:00:00).
    #[arg(long, value_name = "LIMIT")]
    slurm_time: Option<String>,
    /// The CPUs of each part (sbatch --cpus-per-task), and its threads.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    slurm_cpus: u32,
    /// The memory of each part (sbatch --mem, e.g. 4G; default: none asked).
    #[arg(long, value_name = "SIZE")]
    slurm_mem: Option<String>,
    /// One more `#SBATCH` line for the scripts, e.g. `--qos=low` (repeatable).
    #[arg(long = "slurm-option", value_name = "OPTION")]
    slurm_options: Vec<String>,
    /// How many times a part or merge that did not complete is submitted again.
    #[arg(long, value_name = "N", default_value_t = 1)]
    slurm_retries: u32,
}

/// `PROJECT=FILE`: the project and the policy in FILE, as `setIamPolicy`
/// takes it (`{"policy": {...}}`) or the policy alone (`{"bindings": [...]}`).
fn project_policy(value: &str) -> Result<(ProjectName, Policy), String> {
    let (project, file) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?}: expected PROJECT=FILE"))?;
    let project: ProjectName = format!("projects/{}", project.trim_start_matches("projects/"))
        .parse()
        .map_err(|e| format!("{value:?}: {e}"))?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{file} is not JSON: {e}"))?;
    if let Some(inner) = json.get_mut("policy") {
        json = inner.take();
    }
    let policy = Policy::from_value(json).map_err(|e| format!("{file}: {e}"))?;
    Ok((project, policy))
}

/// A member as a caller's identity is checked.
fn admin(member: &str) -> Result<String, String> {
    Caller::new(member).map_err(|e| e.to_string())?;
    Ok(member.to_owned())
}

/// The caller of a request, as the REST layer finds it from a bearer
/// principal, except that an `--admin` member acts as the service itself.
fn caller_of(
    request: &RestRequest,
    admins: &[String],
    enforce: bool,
) -> Result<Option<Caller>, batch_prediction::Error> {
    let caller = RestApi::bearer_caller(request, enforce)?;
    let admin = caller
        .as_ref()
        .and_then(Caller::identity)
        .is_some_and(|who| admins.iter().any(|a| a.eq_ignore_ascii_case(who)));
    Ok(if admin { None } else { caller })
}

/// The folders under ROOT, and with `--buckets` real `gs://`, `s3://` and `az://` buckets.
fn storage(args: &ServeArgs, local: LocalStorage) -> Result<Arc<dyn Storage>, Exit> {
    if args.buckets {
        #[cfg(feature = "cloud")]
        return Ok(Arc::new(batch_prediction::CloudStorage::new(local)));
        #[cfg(not(feature = "cloud"))]
        return Err(Exit::Usage(
            "--buckets: this program was built without the `cloud` feature (cargo install batch-prediction --features cli,cloud)".into(),
        ));
    }
    Ok(Arc::new(local))
}

/// The model runtime `--predictor` names, reading models under ROOT (or on a bucket).
fn resolver(
    args: &ServeArgs,
    confined: LocalStorage,
    storage: &Arc<dyn Storage>,
) -> Result<Arc<dyn ModelResolver>, Exit> {
    // One intra-op thread per session, as `run`'s default.
    crate::local::runtime(&args.predictor, confined, storage, 1)
        .expect("clap allows only the runtimes of `runtime`")
        .map_err(Exit::Usage)
}

/// Runs the emulator until Ctrl-C or SIGTERM.
pub fn serve(args: &ServeArgs) -> Exit {
    match start(args) {
        Ok(exit) => exit,
        Err(e) => Exit::Failed(format!("serve: {e}")),
    }
}

fn start(args: &ServeArgs) -> Result<Exit, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.root)
        .map_err(|e| format!("cannot create {}: {e}", args.root.display()))?;
    let root = args.root.canonicalize()?;
    // The echo predictor answers for every model name, so the emulator stays
    // usable for clients that never create models; any other runtime needs
    // the model a job names to exist (NOT_FOUND at jobs.create, as AI
    // Platform answered).
    let echo = args.predictor == "echo";
    if args.engine != "slurm" && args.slurm.given() {
        return Ok(Exit::Usage(
            "the --slurm-* options are for --engine slurm".into(),
        ));
    }
    let mut builder = JobService::builder(LocalJobStore::open(root.join(".jobs"))?)
        .with_iam_enforcement(args.enforce_iam)
        .with_models_required(!echo);
    if args.engine == "slurm" {
        builder = builder.with_external_runner(SlurmRunner::NAME);
    }
    let service = Arc::new(builder.build()?);
    for (project, policy) in &args.policies {
        service.set_project_policy(project, policy.clone())?;
    }
    let mut api = RestApi::new(service.clone()).with_max_body_bytes(args.max_body_bytes);
    if !args.admins.is_empty() {
        let (admins, enforce) = (args.admins.clone(), args.enforce_iam);
        api = api.with_authenticator(move |request| caller_of(request, &admins, enforce));
    }
    let storage = match storage(args, LocalStorage::confined(&root)) {
        Ok(storage) => storage,
        Err(exit) => return Ok(exit),
    };
    let resolver = match resolver(args, LocalStorage::confined(&root), &storage) {
        Ok(resolver) => resolver,
        Err(exit) => return Ok(exit),
    };
    // A job's modelName or versionName runs that version's deploymentUri.
    let resolver: Arc<dyn ModelResolver> = if echo {
        resolver
    } else {
        Arc::new(batch_prediction::service::ModelsResolver::new(
            Arc::clone(&service),
            resolver,
        ))
    };
    let mut config = ExecutorConfig::default();
    if let Some(bytes) = args.shard_bytes {
        config = config
            .with_shard_target_bytes(bytes)
            .with_split_bytes(bytes);
    }
    let executor = BatchExecutor::new(storage, resolver).with_config(config);
    let runner: Box<dyn Runner> = match args.engine.as_str() {
        "slurm" => Box::new(SlurmRunner::new(executor, slurm_options(args, &root)?)),
        _ => Box::new(LocalRunner::new(executor)),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve")
        .enable_all()
        .build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((args.host, args.port)))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let address = listener.local_addr()?;
    eprintln!(
        "serving the ml v1 jobs API on http://{address} (root {}, jobs in {}, run {}); Ctrl-C stops",
        root.display(),
        root.join(".jobs").display(),
        if args.engine == "slurm" {
            "on Slurm"
        } else {
            "here"
        }
    );
    let limits = Limits {
        max_connections: args.max_connections as usize,
        max_head_bytes: 64 << 10,
        max_body_bytes: args.max_body_bytes,
        request_deadline: args.request_deadline,
    };
    let handler: Arc<http::Handler> = Arc::new(move |request: RestRequest| api.handle(&request));

    let stopping = AtomicBool::new(false);
    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            while !stopping.load(Ordering::SeqCst) {
                if let Err(e) = runner.run_once(&service, Duration::from_millis(200)) {
                    eprintln!("runner: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        runtime.block_on(http::serve(listener, limits, handler, stop_signal()));
        stopping.store(true, Ordering::SeqCst);
        // Running jobs end CANCELLED, not interrupted: cancel them until
        // the runner, which takes no new job now, has finished.
        while !runner.is_finished() {
            for name in service.running_jobs() {
                if let Err(e) = service.cancel(&name) {
                    eprintln!("cancelling {name}: {e}");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = runner.join();
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("stopped");
    Ok(Exit::Ok)
}

impl SlurmArgs {
    /// Whether any option differs from its default.
    fn given(&self) -> bool {
        self.slurm_program.is_some()
            || self.slurm_dir.is_some()
            || self.slurm_partition.is_some()
            || self.slurm_account.is_some()
            || self.slurm_time.is_some()
            || self.slurm_mem.is_some()
            || !self.slurm_options.is_empty()
            || self.slurm_cpus != 2
            || self.slurm_retries != 1
    }
}

/// The Slurm runner's options from `--slurm-*`: parts run this program
/// (or `--slurm-program`) with the same storage and runtime as `serve`.
fn slurm_options(
    args: &ServeArgs,
    root: &std::path::Path,
) -> Result<SlurmOptions, Box<dyn std::error::Error>> {
    let a = &args.slurm;
    // The nodes run the scripts from the job's folder: absolute paths only.
    let program = match &a.slurm_program {
        Some(program) => program
            .canonicalize()
            .map_err(|e| format!("--slurm-program {}: {e}", program.display()))?,
        None => std::env::current_exe().map_err(|e| {
            format!("cannot tell where this program is (give --slurm-program): {e}")
        })?,
    };
    let work_dir = a
        .slurm_dir
        .clone()
        .unwrap_or_else(|| root.join(".jobs").join("slurm"));
    let work_dir = std::fs::create_dir_all(&work_dir)
        .and_then(|()| work_dir.canonicalize())
        .map_err(|e| format!("--slurm-dir {}: {e}", work_dir.display()))?;
    // Slurm's commands must be here, or every job would wait for them.
    match std::process::Command::new("sbatch")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(format!(
                "--engine slurm: `sbatch --version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Err(e) => {
            return Err(format!(
                "--engine slurm: cannot run sbatch ({e}): install Slurm's client commands (Debian: slurm-client) and put them on PATH"
            )
            .into());
        }
    }
    let mut part_args = vec!["--predictor".to_owned(), args.predictor.clone()];
    if let Some(bytes) = args.shard_bytes {
        part_args.push("--shard-bytes".into());
        part_args.push(bytes.to_string());
    }
    if !args.buckets {
        part_args.push("--gcs-root".into());
        part_args.push(root.to_string_lossy().into_owned());
    }
    let mut options = SlurmOptions::new(program, work_dir)
        .with_args(part_args)
        .with_cpus_per_part(a.slurm_cpus)
        .with_retries(a.slurm_retries);
    if let Some(p) = &a.slurm_partition {
        options = options.with_partition(p);
    }
    if let Some(account) = &a.slurm_account {
        options = options.with_account(account);
    }
    if let Some(t) = &a.slurm_time {
        options = options.with_time_limit(t);
    }
    if let Some(m) = &a.slurm_mem {
        options = options.with_mem_per_part(m);
    }
    for line in &a.slurm_options {
        options = options.with_sbatch_line(line);
    }
    Ok(options)
}

/// Completes on Ctrl-C, or on SIGTERM (as Kubernetes and systemd stop a service).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                () = ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    ctrl_c().await;
}

/// Completes on Ctrl-C; never, where that signal cannot be caught.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
