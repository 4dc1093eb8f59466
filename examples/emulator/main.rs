//! A local emulator of the AI Platform `projects.jobs` API that Google's own
//! clients can talk to.
//!
//! ```text
//! cargo run --release --features rest --example emulator -- --port 8080 --root DIR [--predictor echo|onnx|ort]
//!     [--enforce-iam [--policy PROJECT=FILE]... [--admin MEMBER]...] [--max-body-bytes N]
//!     [--max-connections N] [--request-deadline SECONDS] [--buckets]
//! ```
//!
//! It serves the API on 127.0.0.1:PORT, keeps jobs in a durable store in
//! `DIR/.jobs`, maps `gs://BUCKET/PATH` in `inputPaths`, `outputPath` and
//! `uri` to `DIR/BUCKET/PATH` (and refuses anything outside DIR), and runs
//! created jobs in the background: `jobs.get` shows them move QUEUED →
//! RUNNING → SUCCEEDED with real counts, and `jobs.cancel` stops a running
//! one. With `--predictor echo` every model is the echo predictor; with
//! `--predictor ort` (built with `--features ort`, onnxruntime from
//! `ORT_DYLIB_PATH`), onnxruntime runs the ONNX model at the job's `uri`;
//! by default tract does (built with `--features onnx`), or, without that
//! feature, jobs fail saying no model can be loaded. One log line per request on
//! stderr; Ctrl-C cancels running jobs and stops cleanly. The HTTP server
//! (http.rs) bounds connections (256 by default), heads, bodies, the time
//! of every read and the time of a whole request (30 s by default).
//!
//! With `--buckets` (and the `cloud` feature), `gs://` and `s3://` are real
//! buckets instead, reached with the credentials and emulators the
//! environment names (see `CloudStorage`); other paths stay confined to DIR.
//!
//! Callers: `Authorization: Bearer user:alice@example.com` acts as that
//! principal; with `--enforce-iam` it needs a role on the project
//! (`--policy PROJECT=FILE`, repeatable: a policy JSON as setIamPolicy
//! takes it) or on the job (setIamPolicy), and everyone with no header is
//! anonymous; an `--admin MEMBER` may do everything. Without
//! `--enforce-iam`, everyone may do everything.

mod http;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batch_prediction::{
    BatchExecutor, Caller, EchoResolver, JobService, LocalJobStore, LocalStorage, ModelResolver,
    Policy, ProjectName, RestApi, RestRequest,
};

struct Options {
    port: u16,
    root: PathBuf,
    /// `echo`, `onnx`, `ort`, or `none` (no model runtime built in).
    predictor: String,
    enforce_iam: bool,
    max_body_bytes: usize,
    buckets: bool,
    /// Connections served at once; more get 503.
    max_connections: usize,
    /// The time a request's head and body have to arrive.
    request_deadline: Duration,
    /// `--policy PROJECT=FILE`: each project's policy.
    policies: Vec<(ProjectName, Policy)>,
    /// `--admin MEMBER`: callers who may do everything, everywhere.
    admins: Vec<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        root: PathBuf::new(),
        predictor: if cfg!(feature = "onnx") {
            "onnx"
        } else {
            "none"
        }
        .to_owned(),
        enforce_iam: false,
        max_body_bytes: batch_prediction::DEFAULT_MAX_BODY_BYTES,
        buckets: false,
        max_connections: 256,
        request_deadline: Duration::from_secs(30),
        policies: Vec::new(),
        admins: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    let mut port = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                port = Some(
                    value("--port")?
                        .parse()
                        .map_err(|e| format!("--port: {e}"))?,
                )
            }
            "--root" => options.root = PathBuf::from(value("--root")?),
            "--predictor" => match value("--predictor")?.as_str() {
                "echo" => options.predictor = "echo".into(),
                "onnx" if cfg!(feature = "onnx") => options.predictor = "onnx".into(),
                "ort" if cfg!(feature = "ort") => options.predictor = "ort".into(),
                other => {
                    return Err(format!(
                        "unknown predictor {other:?}: echo, onnx (with the onnx feature) or ort (with the ort feature)"
                    ));
                }
            },
            "--enforce-iam" => options.enforce_iam = true,
            "--buckets" if cfg!(feature = "cloud") => options.buckets = true,
            "--buckets" => return Err("--buckets needs the cloud feature".into()),
            "--max-body-bytes" => {
                options.max_body_bytes = value("--max-body-bytes")?
                    .parse()
                    .map_err(|e| format!("--max-body-bytes: {e}"))?
            }
            "--policy" => {
                let value = value("--policy")?;
                options.policies.push(project_policy(&value)?);
            }
            "--admin" => {
                let member = value("--admin")?;
                // The same check a caller's identity gets.
                Caller::new(&member).map_err(|e| format!("--admin {member:?}: {e}"))?;
                options.admins.push(member);
            }
            "--max-connections" => {
                options.max_connections = value("--max-connections")?
                    .parse::<usize>()
                    .map_err(|e| format!("--max-connections: {e}"))?
                    .max(1)
            }
            "--request-deadline" => {
                let seconds: f64 = value("--request-deadline")?
                    .parse()
                    .map_err(|e| format!("--request-deadline: {e}"))?;
                options.request_deadline = Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or("--request-deadline: a positive number of seconds")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.port = port.ok_or("--port is required")?;
    if options.root.as_os_str().is_empty() {
        return Err("--root is required".into());
    }
    Ok(options)
}

/// `PROJECT=FILE`: the project and the policy in FILE, as `setIamPolicy`
/// takes it (`{"policy": {...}}`) or the policy alone (`{"bindings": [...]}`).
fn project_policy(value: &str) -> Result<(ProjectName, Policy), String> {
    let (project, file) = value
        .split_once('=')
        .ok_or_else(|| format!("--policy {value:?}: expected PROJECT=FILE"))?;
    let project: ProjectName = format!("projects/{}", project.trim_start_matches("projects/"))
        .parse()
        .map_err(|e| format!("--policy {value:?}: {e}"))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--policy {value:?}: cannot read {file}: {e}"))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("--policy {value:?}: {file} is not JSON: {e}"))?;
    if let Some(inner) = json.get_mut("policy") {
        json = inner.take();
    }
    let policy =
        Policy::from_value(json).map_err(|e| format!("--policy {value:?}: {file}: {e}"))?;
    Ok((project, policy))
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

/// Refuses every model, saying how to get one.
fn no_model(
    model: &batch_prediction::ModelVersion,
    _: &batch_prediction::Job,
) -> Result<Arc<dyn batch_prediction::Predictor>, batch_prediction::PredictError> {
    Err(batch_prediction::PredictError::new(format!(
        "the emulator cannot load model {model}: start it with --predictor echo, or build it with --features onnx (or ort)"
    )))
}

/// The folders under DIR, and with `--buckets` real `gs://` and `s3://` buckets.
fn storage(options: &Options, local: LocalStorage) -> Arc<dyn batch_prediction::Storage> {
    #[cfg(feature = "cloud")]
    if options.buckets {
        return Arc::new(batch_prediction::CloudStorage::new(local));
    }
    let _ = options;
    Arc::new(local)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!(
                "error: {e}\nusage: emulator --port PORT --root DIR [--predictor echo|onnx|ort] [--enforce-iam [--policy PROJECT=FILE]... [--admin MEMBER]...] [--max-body-bytes N] [--max-connections N] [--request-deadline SECONDS] [--buckets]"
            );
            return ExitCode::from(2);
        }
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&options.root)?;
    let root = options.root.canonicalize()?;
    let service = Arc::new(
        JobService::builder(LocalJobStore::open(root.join(".jobs"))?)
            .with_iam_enforcement(options.enforce_iam)
            .build()?,
    );
    for (project, policy) in &options.policies {
        service.set_project_policy(project, policy.clone())?;
    }
    let mut api = RestApi::new(service.clone()).with_max_body_bytes(options.max_body_bytes);
    if !options.admins.is_empty() {
        let (admins, enforce) = (options.admins.clone(), options.enforce_iam);
        api = api.with_authenticator(move |request| caller_of(request, &admins, enforce));
    }
    let api = Arc::new(api);
    let storage = storage(&options, LocalStorage::confined(&root));
    // With the onnx or ort feature, a job's uri names an ONNX model under DIR (or on a bucket).
    let confined = LocalStorage::confined(&root);
    let _ = &confined;
    let resolver: Arc<dyn ModelResolver> = match options.predictor.as_str() {
        "echo" => Arc::new(EchoResolver),
        #[cfg(feature = "onnx")]
        "onnx" => Arc::new(
            batch_prediction::OnnxResolver::new(confined).with_buckets(Arc::clone(&storage)),
        ),
        #[cfg(feature = "ort")]
        "ort" => Arc::new(
            batch_prediction::OrtResolver::new(confined).with_buckets(Arc::clone(&storage)),
        ),
        _ => Arc::new(no_model),
    };
    let executor = BatchExecutor::new(storage, resolver);

    let listener = TcpListener::bind(("127.0.0.1", options.port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", options.port))?;
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let stopping = stopping.clone();
        ctrlc::set_handler(move || stopping.store(true, Ordering::SeqCst))?;
    }
    eprintln!(
        "serving the ml v1 jobs API on http://127.0.0.1:{} (root {}, jobs in {}); Ctrl-C stops",
        options.port,
        root.display(),
        root.join(".jobs").display()
    );
    let limits = http::Limits {
        max_connections: options.max_connections,
        max_head_bytes: 64 << 10,
        max_body_bytes: options.max_body_bytes,
        io_timeout: Duration::from_secs(10),
        request_deadline: options.request_deadline,
    };
    let handler = {
        let api = api.clone();
        Arc::new(move |request: RestRequest| api.handle(&request))
    };

    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            while !stopping.load(Ordering::SeqCst) {
                if let Err(e) = service.run_next_or_wait(&executor, Duration::from_millis(200)) {
                    eprintln!("runner: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        // Serves on this thread until Ctrl-C.
        if let Err(e) = http::serve(listener, limits, &stopping, handler) {
            eprintln!("server: {e}");
            stopping.store(true, Ordering::SeqCst);
        }
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
    eprintln!("stopped");
    Ok(())
}
