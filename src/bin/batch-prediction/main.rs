//! `batch-prediction`: AI Platform batch prediction jobs on this machine,
//! with the subcommands and flags of `gcloud ai-platform jobs`.
//!
//! ```text
//! batch-prediction run JOB.json [--predictor auto|tensorflow|onnx|ort|remote|echo] …   run a jobs.create body here
//! batch-prediction validate JOB.json                              check it as jobs.create does
//! batch-prediction plan JOB.json                                  its files, shards and outputs
//! batch-prediction submit prediction JOB_ID --model-dir … --input-paths … --output-path …
//!                  --region … --data-format json [--endpoint URL [--wait]]
//! batch-prediction describe JOB_ID --endpoint URL
//! batch-prediction list [--filter EXPR] --endpoint URL
//! batch-prediction cancel JOB_ID --endpoint URL
//! batch-prediction serve --root DIR [--port 8080] [--predictor auto|tensorflow|onnx|ort|echo] …   the jobs API here
//! ```
//!
//! Exit codes: 0 when the job SUCCEEDED (or the request did), 1 when it
//! failed, 2 for a bad command line or job file.

mod endpoint;
mod http;
mod local;
mod registry;
mod serve;

use std::process::ExitCode;

use batch_prediction::{DataFormat, Job, ModelVersion, PredictionInput};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// AI Platform (ml v1) batch prediction jobs, run here with your own model,
/// or on a service that serves the jobs API.
#[derive(Debug, Parser)]
#[command(name = "batch-prediction", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log what the crate does on stderr: `-v` jobs, shards, retries and
    /// failures; `-vv` also each store write and failed instance; `-vvv`
    /// everything. `RUST_LOG` (e.g. `batch_prediction=debug`) overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a job here: JOB.json is a jobs.create request body.
    Run(Box<local::RunArgs>),
    /// Checks a job as jobs.create does, listing every rule it breaks.
    Validate {
        /// A jobs.create request body.
        job: String,
    },
    /// Shows what a job would read and write: files, shards and outputs.
    Plan {
        /// A jobs.create request body.
        job: String,
        #[command(flatten)]
        files: local::FilesArgs,
    },
    /// Submits a job, as `gcloud ai-platform jobs submit`.
    #[command(subcommand)]
    Submit(Submit),
    /// Shows a job of a service (`--endpoint`).
    Describe {
        /// The job's ID.
        job_id: String,
        #[command(flatten)]
        service: endpoint::ServiceArgs,
    },
    /// Lists the jobs of a project on a service (`--endpoint`), newest first.
    List {
        /// Only the jobs that pass this filter, e.g. `state=SUCCEEDED AND labels.team=ml`.
        #[arg(long)]
        filter: Option<String>,
        /// At most this many jobs (all when not given).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        service: endpoint::ServiceArgs,
    },
    /// Cancels a job of a service (`--endpoint`).
    Cancel {
        /// The job's ID.
        job_id: String,
        #[command(flatten)]
        service: endpoint::ServiceArgs,
    },
    /// Serves the jobs API here (an emulator of AI Platform's), running
    /// the jobs created on it; Google's own clients can talk to it.
    Serve(Box<serve::ServeArgs>),
}

#[derive(Debug, Subcommand)]
enum Submit {
    /// Submits a batch prediction job, with the flags of `gcloud ai-platform
    /// jobs submit prediction`. Without `--endpoint` it runs here.
    Prediction(Box<SubmitPrediction>),
}

/// The flags of `gcloud ai-platform jobs submit prediction`.
#[derive(Debug, Args)]
struct SubmitPrediction {
    /// The job's ID: a letter, then letters, digits and underscores.
    job_id: String,
    /// The model: a directory (or `.onnx` file) path or `gs://` URI.
    #[arg(long, conflicts_with_all = ["model", "version"], required_unless_present = "model")]
    model_dir: Option<String>,
    /// The model's name on the service (its default version, or `--version`).
    #[arg(long)]
    model: Option<String>,
    /// The version of `--model`.
    #[arg(long, requires = "model")]
    version: Option<String>,
    /// The instances: paths or `gs://` URIs, comma-separated; wildcards allowed.
    #[arg(long, value_delimiter = ',', required = true)]
    input_paths: Vec<String>,
    /// Where the results go.
    #[arg(long)]
    output_path: String,
    /// The region the job runs in.
    #[arg(long)]
    region: String,
    /// The format of the input files.
    #[arg(long, value_enum)]
    data_format: InputFormat,
    /// The format of the results (JSON by default).
    #[arg(long, value_enum)]
    output_data_format: Option<OutputFormat>,
    /// Instances per batch (64 by default).
    #[arg(long)]
    batch_size: Option<i64>,
    /// Workers at most (10 by default).
    #[arg(long)]
    max_worker_count: Option<i64>,
    /// The signature of the model to run.
    #[arg(long)]
    signature_name: Option<String>,
    /// The runtime version (kept in the job; this crate runs the model itself).
    #[arg(long)]
    runtime_version: Option<String>,
    /// Labels, `KEY=VALUE,…`.
    #[arg(long, value_delimiter = ',', value_parser = label)]
    labels: Vec<(String, String)>,
    #[command(flatten)]
    service: endpoint::ServiceArgs,
    /// With `--endpoint`: follow the job until it ends, and exit as `run` does.
    #[arg(long, requires = "endpoint")]
    wait: bool,
    #[command(flatten)]
    run: local::RunOptions,
}

/// `--data-format`, as gcloud spells it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum InputFormat {
    Json,
    Text,
    TfRecord,
    TfRecordGzip,
}

/// `--output-data-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
    Text,
    Csv,
}

fn label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

impl SubmitPrediction {
    /// The jobs.create request these flags make.
    fn job(&self, project: Option<&str>) -> Result<Job, String> {
        let model = match (&self.model_dir, &self.model, &self.version) {
            (Some(dir), _, _) => ModelVersion::uri(dir.clone()),
            (None, Some(model), version) => {
                let project = project.ok_or(
                    "--model names a model of a project: set --project or CLOUDSDK_CORE_PROJECT",
                )?;
                let name = match version {
                    Some(v) => format!("projects/{project}/models/{model}/versions/{v}"),
                    None => format!("projects/{project}/models/{model}"),
                };
                if version.is_some() {
                    ModelVersion::version(&name)
                } else {
                    ModelVersion::model(&name)
                }
                .map_err(|e| format!("--model: {e}"))?
            }
            (None, None, _) => return Err("give --model-dir or --model".into()),
        };
        let format = match self.data_format {
            InputFormat::Json => DataFormat::Json,
            InputFormat::Text => DataFormat::Text,
            InputFormat::TfRecord => DataFormat::TfRecord,
            InputFormat::TfRecordGzip => DataFormat::TfRecordGzip,
        };
        let mut input = PredictionInput::new(
            format,
            self.input_paths.clone(),
            self.output_path.clone(),
            self.region.clone(),
            model,
        );
        if let Some(f) = self.output_data_format {
            input = input.set_output_data_format(match f {
                OutputFormat::Json => DataFormat::Json,
                OutputFormat::Text => DataFormat::Text,
                OutputFormat::Csv => DataFormat::Csv,
            });
        }
        if let Some(n) = self.batch_size {
            input = input.set_batch_size(n);
        }
        if let Some(n) = self.max_worker_count {
            input = input.set_max_worker_count(n);
        }
        if let Some(s) = &self.signature_name {
            input = input.set_signature_name(s.clone());
        }
        if let Some(v) = &self.runtime_version {
            input = input.set_runtime_version(v.clone());
        }
        Ok(Job::new(self.job_id.clone(), input).set_labels(self.labels.iter().cloned()))
    }
}

/// How a command ended: its exit code.
#[derive(Debug)]
enum Exit {
    /// The job (or request) succeeded.
    Ok,
    /// The job failed or was cancelled, or the service refused: said on stderr.
    Failed(String),
    /// A bad command line or job file: said on stderr.
    Usage(String),
}

fn main() -> ExitCode {
    // TensorFlow logs each model load on stderr at INFO: quiet to errors,
    // unless the user chose a level (`TF_CPP_MIN_LOG_LEVEL=0` shows them).
    #[cfg(feature = "tensorflow")]
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        // SAFETY: nothing else runs yet: no thread reads the environment.
        unsafe { std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2") };
    }
    let cli = Cli::parse();
    if let Err(message) = log_to_stderr(cli.verbose) {
        eprintln!("batch-prediction: {message}");
        return ExitCode::from(2);
    }
    let exit = match cli.command {
        Command::Run(args) => local::run(&args),
        Command::Validate { job } => local::validate(&job),
        Command::Plan { job, files } => local::plan(&job, &files),
        Command::Submit(Submit::Prediction(submit)) => submit_prediction(&submit),
        Command::Describe { job_id, service } => endpoint::describe(&service, &job_id),
        Command::List {
            filter,
            limit,
            service,
        } => endpoint::list(&service, filter.as_deref(), limit),
        Command::Cancel { job_id, service } => endpoint::cancel(&service, &job_id),
        Command::Serve(args) => serve::serve(&args),
    };
    match exit {
        Exit::Ok => ExitCode::SUCCESS,
        Exit::Failed(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
        Exit::Usage(message) => {
            eprintln!("batch-prediction: {message}");
            ExitCode::from(2)
        }
    }
}

/// Turns the library's `tracing` events into lines on stderr, as `-v` or
/// `RUST_LOG` asks; nothing without either.
fn log_to_stderr(verbose: u8) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| format!("RUST_LOG={directives:?}: {e}"))?
        }
        _ => EnvFilter::new(match verbose {
            0 => return Ok(()),
            1 => "batch_prediction=info",
            2 => "batch_prediction=debug",
            _ => "batch_prediction=trace",
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

fn submit_prediction(submit: &SubmitPrediction) -> Exit {
    let job = match submit.job(submit.service.project.as_deref()) {
        Ok(job) => job,
        Err(message) => return Exit::Usage(message),
    };
    match &submit.service.endpoint {
        Some(_) => endpoint::submit(&submit.service, job, submit.wait),
        None => local::run_job(job, &submit.run, submit.service.format),
    }
}

/// `--format`: a readable table (the default) or the API's JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum Format {
    #[default]
    Table,
    Json,
}

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the whole command tree (unique names, valid
    /// defaults), which otherwise run only when a subcommand is used.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
