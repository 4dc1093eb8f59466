//! A local emulator of the AI Platform `projects.jobs` API that Google's own
//! clients can talk to.
//!
//! ```text
//! cargo run --release --features rest --example emulator -- --port 8080 --root DIR [--predictor echo]
//!     [--enforce-iam] [--max-body-bytes N]
//! ```
//!
//! It serves the API on 127.0.0.1:PORT, keeps jobs in a durable store in
//! `DIR/.jobs`, maps `gs://BUCKET/PATH` in `inputPaths`, `outputPath` and
//! `uri` to `DIR/BUCKET/PATH` (and refuses anything outside DIR), and runs
//! created jobs in the background: `jobs.get` shows them move QUEUED →
//! RUNNING → SUCCEEDED with real counts, and `jobs.cancel` stops a running
//! one. With `--predictor echo` every model is the echo predictor; without
//! it, jobs fail saying no model can be loaded. One log line per request on
//! stderr; Ctrl-C cancels running jobs and stops cleanly.
//!
//! Callers: `Authorization: Bearer user:alice@example.com` acts as that
//! principal; with `--enforce-iam` it needs a role on the job (set one with
//! setIamPolicy), and everyone with no header is anonymous. Without
//! `--enforce-iam`, everyone may do everything.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use batch_prediction::{
    BatchExecutor, EchoResolver, Job, JobService, LocalJobStore, LocalStorage, ModelResolver,
    ModelVersion, PredictError, Predictor, RestApi, RestRequest,
};

struct Options {
    port: u16,
    root: PathBuf,
    echo: bool,
    enforce_iam: bool,
    max_body_bytes: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        root: PathBuf::new(),
        echo: false,
        enforce_iam: false,
        max_body_bytes: batch_prediction::DEFAULT_MAX_BODY_BYTES,
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
                "echo" => options.echo = true,
                other => return Err(format!("unknown predictor {other:?}: only echo")),
            },
            "--enforce-iam" => options.enforce_iam = true,
            "--max-body-bytes" => {
                options.max_body_bytes = value("--max-body-bytes")?
                    .parse()
                    .map_err(|e| format!("--max-body-bytes: {e}"))?
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

/// Refuses every model, saying how to get one.
fn no_model(model: &ModelVersion, _: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
    Err(PredictError::new(format!(
        "the emulator cannot load model {model}: start it with --predictor echo"
    )))
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!(
                "error: {e}\nusage: emulator --port PORT --root DIR [--predictor echo] [--enforce-iam] [--max-body-bytes N]"
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
    let api = Arc::new(RestApi::new(service.clone()).with_max_body_bytes(options.max_body_bytes));
    let resolver: Arc<dyn ModelResolver> = if options.echo {
        Arc::new(EchoResolver)
    } else {
        Arc::new(no_model)
    };
    let executor = BatchExecutor::new(Arc::new(LocalStorage::confined(&root)), resolver);

    let server = Arc::new(
        tiny_http::Server::http(("127.0.0.1", options.port))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", options.port))?,
    );
    let stopping = Arc::new(AtomicBool::new(false));
    let http_threads = 4;
    {
        let (server, stopping) = (server.clone(), stopping.clone());
        ctrlc::set_handler(move || {
            if !stopping.swap(true, Ordering::SeqCst) {
                for _ in 0..http_threads {
                    server.unblock();
                }
            }
        })?;
    }
    eprintln!(
        "serving the ml v1 jobs API on http://127.0.0.1:{} (root {}, jobs in {}); Ctrl-C stops",
        options.port,
        root.display(),
        root.join(".jobs").display()
    );

    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            while !stopping.load(Ordering::SeqCst) {
                if let Err(e) = service.run_next_or_wait(&executor, Duration::from_millis(200)) {
                    eprintln!("runner: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        for _ in 0..http_threads {
            let (server, api) = (&server, &api);
            s.spawn(move || {
                while let Ok(request) = server.recv() {
                    respond(api, request);
                }
            });
        }
        // Ctrl-C: the HTTP threads end when unblocked; running jobs are
        // cancelled so they end CANCELLED, not interrupted.
        while !stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for name in service.running_jobs() {
            if let Err(e) = service.cancel(&name) {
                eprintln!("cancelling {name}: {e}");
            }
        }
        let _ = runner.join();
    });
    eprintln!("stopped");
    Ok(())
}

fn respond(api: &RestApi, mut request: tiny_http::Request) {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    let mut rest = RestRequest::new(method.clone(), &url);
    for header in request.headers() {
        rest = rest.with_header(header.field.as_str().as_str(), header.value.as_str());
    }
    // Read one byte past the limit, so the API can refuse the body as too large.
    let mut body = Vec::new();
    let limit = api.max_body_bytes() as u64 + 1;
    let response = match request.as_reader().take(limit).read_to_end(&mut body) {
        Ok(_) => api.handle(&rest.with_body(body)),
        Err(e) => {
            eprintln!("{method} {url}: reading the body: {e}");
            return;
        }
    };
    let status = response.status;
    let mut reply = tiny_http::Response::from_data(response.body).with_status_code(status);
    for (name, value) in &response.headers {
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            reply.add_header(header);
        }
    }
    if let Err(e) = request.respond(reply) {
        eprintln!("{method} {url}: sending the response: {e}");
    }
    eprintln!(
        "{method} {url} -> {status} ({:.1} ms)",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
