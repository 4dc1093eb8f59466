//! The integration tests: one binary, one module per area.

mod discovery;
mod executor;
mod job_store;
#[cfg(feature = "onnx")]
mod onnx;
mod props;
mod records;
#[cfg(feature = "rest")]
mod rest;
mod scale_out;
mod service;
mod state;
mod storage;
mod validation;
mod wire;

use std::path::PathBuf;

/// A file under `tests/data`.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
