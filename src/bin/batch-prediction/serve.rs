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

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batch_prediction::iam::{Caller, Policy};
use batch_prediction::rest::RestRequest;
use batch_prediction::{
    BatchExecutor, JobService, LocalJobStore, LocalStorage, ModelResolver, ProjectName, RestApi,
    Storage,
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
    let service = Arc::new(
        JobService::builder(LocalJobStore::open(root.join(".jobs"))?)
            .with_iam_enforcement(args.enforce_iam)
            .with_models_required(!echo)
            .build()?,
    );
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
    let executor = BatchExecutor::new(storage, resolver);

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
        "serving the ml v1 jobs API on http://{address} (root {}, jobs in {}); Ctrl-C stops",
        root.display(),
        root.join(".jobs").display()
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
                if let Err(e) = service.run_next_or_wait(&executor, Duration::from_millis(200)) {
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
