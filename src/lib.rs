//! Google Cloud AI Platform (API `ml` v1) batch prediction jobs, on your own
//! machine, with your own model.
//!
//! This crate speaks the `projects.jobs` API's JSON exactly and owns the rules
//! around it:
//!
//! - **Wire models**: [`Job`], [`PredictionInput`], [`PredictionOutput`],
//!   [`DataFormat`], [`State`], the [`ModelVersion`] union and [`Etag`], read
//!   and written as the REST API does (int64 as strings, RFC 3339 UTC times,
//!   base64 etags, unknown fields kept), with errors that name the field.
//! - **Resource names**: [`ProjectName`], [`ModelName`], [`VersionName`],
//!   [`JobName`], checked segment by segment.
//! - **Validation**: [`Job::validate`] lists every rule a `jobs.create`
//!   request breaks, each with its field path.
//! - **State machine**: [`Job::apply`] moves a job through
//!   QUEUED → PREPARING → RUNNING → SUCCEEDED / FAILED / CANCELLED and keeps
//!   its timestamps consistent, from an injectable [`Clock`].
//! - **Errors**: every [`Error`] maps to a canonical [`Code`] and renders as
//!   the API's error body through [`Status`].
//! - **Running jobs**: [`BatchExecutor`] runs a job over its inputs in
//!   [`Storage`] with a [`Predictor`], streaming, on worker threads.
//! - **The jobs API**: [`JobService`] has every `projects.jobs` method over
//!   a [`JobStore`] ([`InMemoryJobStore`], or the durable [`LocalJobStore`]),
//!   with IAM [`Policy`](iam::Policy) checks, and runs queued jobs. With the `rest`
//!   feature, `RestApi` serves it as the REST API Google's clients speak.
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `cli` | the `batch-prediction` command line: run, validate and plan jobs here; submit, describe, list and cancel them as `gcloud ai-platform jobs` does |
//! | `cloud` | `GcsStorage`, `S3Storage`, `AzureStorage` and `CloudStorage`: jobs on real Cloud Storage, S3 and Azure Blob Storage buckets |
//! | `onnx` | `OnnxPredictor` and `OnnxResolver`: ONNX models run by the pure-Rust `tract-onnx` |
//! | `ort` | `OrtPredictor` and `OrtResolver`: ONNX models run by onnxruntime (every operator, the whole `ai.onnx.ml` domain: scikit-learn, XGBoost, LightGBM, Keras models), loaded at run time from `ORT_DYLIB_PATH`; needs Rust 1.92 |
//! | `rest` | `RestApi`: the `projects.jobs` REST API over a [`JobService`] |
//! | `tensorflow` | `TensorflowPredictor` and `TensorflowResolver`: TensorFlow SavedModels (the format AI Platform ran), by the job's `signatureName`, on TensorFlow's C library loaded at run time from `TENSORFLOW_DYLIB_PATH` (`libtensorflow_cc.so.2` from the `tensorflow-cpu` wheel) |
//! | `testing` | the conformance suites for [`Storage`] and [`JobStore`], fault injection |
//! | `tracing` | spans and events through `tracing` (a job, its shards, batch retries and failures, commits, the job store's writes), with fields a log pipeline can index; nothing is printed by the library |
//!
//! None is on by default. Without `cloud` the crate does not talk to Google
//! or AWS: it is for services and tests that run or emulate batch
//! prediction themselves, over the storage they give it.
//!
//! # Quick start
//! ```
//! use batch_prediction::{
//!     DataFormat, Job, ManualClock, ModelVersion, PredictionInput, State, Transition,
//! };
//!
//! // A create request, as a client would send it.
//! let job = Job::from_json(r#"{
//!     "jobId": "census_batch_1",
//!     "labels": {"team": "engineering"},
//!     "predictionInput": {
//!         "dataFormat": "JSON",
//!         "inputPaths": ["gs://b/in/*"],
//!         "outputPath": "gs://b/out",
//!         "region": "us-central1",
//!         "versionName": "projects/my-proj/models/census/versions/v1",
//!         "batchSize": 64
//!     }
//! }"#)?;
//! job.validate()?;
//!
//! // The same job, built in code.
//! let built = Job::new(
//!     "census_batch_1",
//!     PredictionInput::new(
//!         DataFormat::Json,
//!         ["gs://b/in/*"],
//!         "gs://b/out",
//!         "us-central1",
//!         ModelVersion::version("projects/my-proj/models/census/versions/v1")?,
//!     )
//!     .set_batch_size(64),
//! )
//! .set_label("team", "engineering");
//! assert_eq!(built, job);
//!
//! // Move it through its life with a test clock.
//! let clock = ManualClock::new("2026-01-01T00:00:00Z".parse()?);
//! let mut job = job;
//! job.apply(Transition::Queue, &clock)?;
//! assert_eq!(job.state(), State::Queued);
//! assert_eq!(job.to_json()["createTime"], "2026-01-01T00:00:00Z");
//! assert_eq!(job.to_json()["predictionInput"]["batchSize"], "64"); // int64 as a string
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//! The main types are at the root; each family is in a module of its own:
//!
//! | module | what is in it |
//! |---|---|
//! | [`model`] | the wire types: [`Job`], [`PredictionInput`], [`PredictionOutput`], [`DataFormat`], [`State`], [`ModelVersion`], [`Etag`] |
//! | [`name`] | resource names: [`ProjectName`], [`ModelName`], [`VersionName`], [`JobName`] |
//! | [`validate`] | the limits [`Job::validate`] checks |
//! | [`state`] | the state machine: [`Transition`] and the transition diagram |
//! | [`clock`] | [`Clock`], [`SystemClock`], [`ManualClock`] |
//! | [`error`] | [`Error`], [`ErrorKind`] and the errors they carry |
//! | [`status`] | [`Code`], [`Status`]: canonical codes and the API's error body |
//! | [`storage`] | [`Storage`] and its backends, objects, wildcards |
//! | [`record`] | record I/O: readers, decoders, checksums, the output writers and file names |
//! | [`predict`] | [`Predictor`], [`ModelResolver`] and the predictors that come with the crate |
//! | [`executor`] | [`BatchExecutor`]: configuration, plans, progress, summaries, shards |
//! | [`retry`] | [`RetryPolicy`] |
//! | [`service`] | [`JobService`] and the job stores, list requests |
//! | [`iam`] | policies, bindings, roles, permissions and callers |
//! | `rest` | (feature `rest`) `RestApi`: the REST API over a [`JobService`] |
//! | `remote` | (feature `remote`) `RemotePredictor`: models behind a model server |
//! | `onnx` | (features `onnx`, `ort`) the ONNX predictors |
//! | `tensorflow` | (feature `tensorflow`) SavedModels: the library, signatures, the predictor |
//! | `testing` | (feature `testing`) conformance suites and fault injection |

#![deny(missing_docs, rustdoc::broken_intra_doc_links)]
#![warn(missing_debug_implementations)]
#![deny(unsafe_code)] // allowed in two places only: src/record/crc.rs, and TensorFlow's C API in src/tensorflow/

pub mod clock;
pub mod error;
pub mod executor;
pub mod iam;
pub mod model;
pub mod name;
#[cfg(any(feature = "onnx", feature = "ort"))]
pub mod onnx;
pub mod predict;
pub mod record;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(feature = "rest")]
pub mod rest;
pub mod retry;
pub mod service;
pub mod state;
pub mod status;
pub mod storage;
#[cfg(any(feature = "onnx", feature = "ort", feature = "tensorflow"))]
mod tensor;
#[cfg(feature = "tensorflow")]
pub mod tensorflow;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;
mod transcode;
pub mod validate;

/// Locks `m`, taking the data as it is if a thread panicked holding it
/// (every user of this keeps its data consistent at each step).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use executor::{BatchExecutor, ExecutorConfig, RunSummary};
pub use model::{DataFormat, Etag, Job, ModelVersion, PredictionInput, PredictionOutput, State};
pub use name::{JobName, ModelName, ProjectName, VersionName};
#[cfg(feature = "onnx")]
pub use onnx::{OnnxPredictor, OnnxResolver};
#[cfg(feature = "ort")]
pub use onnx::{OrtPredictor, OrtResolver};
pub use predict::{
    EchoPredictor, EchoResolver, ModelResolver, PredictContext, PredictError, Predictor,
    predictor_fn,
};
pub use record::Instance;
#[cfg(feature = "remote")]
pub use remote::{RemotePredictor, RemoteResolver};
#[cfg(feature = "rest")]
pub use rest::RestApi;
pub use retry::RetryPolicy;
pub use service::{InMemoryJobStore, JobService, JobStore, LocalJobStore};
pub use state::Transition;
pub use status::{Code, Status};
#[cfg(feature = "cloud")]
pub use storage::CloudStorage;
pub use storage::{InMemoryStorage, LocalStorage, Storage, StorageExt};
#[cfg(feature = "tensorflow")]
pub use tensorflow::{TensorflowPredictor, TensorflowResolver};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
