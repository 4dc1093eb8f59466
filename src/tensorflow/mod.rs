//! TensorFlow SavedModels, the format AI Platform's batch prediction ran,
//! run in this process on TensorFlow's own kernels (feature `tensorflow`).
//!
//! - [`library`](library_version): TensorFlow's C API, opened at run time
//!   from `libtensorflow_cc.so.2` (`TENSORFLOW_DYLIB_PATH`, else the
//!   library search path), as the PyPI wheel `tensorflow-cpu` ships it;
//!   nothing is downloaded at build time, no Python runs. With
//!   `TF_CPP_MIN_LOG_LEVEL` set, the lines TensorFlow logs while it loads
//!   (before it reads that variable) are hidden as the variable asks.
//! - [`Signature`]: a SavedModel's signatures, read from the MetaGraphDef
//!   TensorFlow hands back when it loads the model, never guessed.
//! - [`TensorflowPredictor`] and [`TensorflowResolver`]: instances in, as
//!   TensorFlow Serving's row format reads them; predictions out.
//!
//! A failure inside TensorFlow that it reports (a model it cannot load, an
//! op it lacks, a kernel's error on a batch) is an error like any other: a
//! job FAILED with TensorFlow's message, or a batch split until the
//! instance that fails is found. A C++ `CHECK` failure inside TensorFlow
//! aborts the process and cannot be caught; the executor commits each
//! shard's files whole (a summary last), so nothing half-written is
//! committed and running the job again resumes from the shards it finished.

#[allow(unsafe_code)]
mod library;
mod predictor;
mod quiet;
#[allow(unsafe_code)]
mod session;
mod signature;

pub use library::{DYLIB_NAME, DYLIB_VARIABLE, library_version};
pub use predictor::{TensorflowOptions, TensorflowPredictor, TensorflowResolver};
pub use signature::{DType, Signature, TensorSpec};
