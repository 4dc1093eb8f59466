//! ONNX models, on two runtimes: the pure-Rust `tract-onnx` (feature
//! `onnx`: [`OnnxPredictor`]) and onnxruntime (feature `ort`:
//! [`OrtPredictor`]). Both read instances and write predictions by the
//! contract in `crate::tensor` (which the TensorFlow predictor shares);
//! this module finds model files, each runtime's file holds only how it
//! loads and runs a model.

use std::sync::Arc;

use crate::predict::PredictError;
use crate::storage::{LocalStorage, Storage, StorageErrorKind, StorageExt, join_location};
#[allow(unused_imports)] // each runtime uses its part
use crate::tensor::{
    Column, InputSpec, Kind, OutColumn, OutValues, batch_first, f32_json, f64_json, finite, gather,
    json_instances, onnx_inner, passthrough_of, predict_lines, predictions_of,
};

#[cfg(feature = "ort")]
mod onnxruntime;
#[cfg(feature = "onnx")]
mod tract;

#[cfg(feature = "ort")]
pub use onnxruntime::{OrtOptions, OrtPredictor, OrtResolver};
#[cfg(feature = "onnx")]
pub use tract::{OnnxPredictor, OnnxResolver};

/// Where a resolver finds model files: the local file system (with its
/// `gs://` root), and buckets if it has them.
#[derive(Debug, Clone, Default)]
struct ModelFiles {
    storage: LocalStorage,
    buckets: Option<Arc<dyn Storage>>,
}

/// A model file found by [`ModelFiles::find`].
enum ModelFile {
    /// A local `.onnx` file, or a directory with `model.onnx`.
    Path(std::path::PathBuf),
    /// A model downloaded from a bucket: its object name and bytes.
    Bytes(String, Vec<u8>),
}

impl ModelFiles {
    /// The model at `uri`: on a bucket when it is `gs://`, `s3://` or
    /// `az://` and buckets were given, otherwise a local path.
    fn find(&self, uri: &str) -> Result<ModelFile, PredictError> {
        match &self.buckets {
            Some(buckets)
                if ["gs://", "s3://", "az://"]
                    .iter()
                    .any(|s| uri.starts_with(s)) =>
            {
                let object = match buckets.head(uri) {
                    Ok(_) => uri.to_owned(),
                    Err(e) if e.kind() == StorageErrorKind::NotFound => {
                        join_location(uri, "model.onnx")
                    }
                    Err(e) => return Err(PredictError::new(e.to_string())),
                };
                let bytes = buckets.read_bytes(&object).map_err(|e| {
                    PredictError::new(if object == uri {
                        e.to_string()
                    } else {
                        format!("{e} (no object at {uri:?} either)")
                    })
                })?;
                Ok(ModelFile::Bytes(object, bytes))
            }
            _ => self
                .storage
                .resolve(uri)
                .map(ModelFile::Path)
                .map_err(|e| PredictError::new(e.to_string())),
        }
    }
}

/// `e`, a load error of the model at local `path`, with that path shown as
/// the job's `uri` (`gs://…` mapped into a root): a service's job errors
/// name no local directory.
fn shown_as(e: PredictError, path: &std::path::Path, uri: &str) -> PredictError {
    let local = path.display().to_string();
    let uri = uri.trim_end_matches('/');
    if local == uri || local.is_empty() {
        return e;
    }
    PredictError::new(e.to_string().replace(&local, uri))
}

/// The `.onnx` file at `path`: the path itself, or `model.onnx` in it when
/// it is a directory; an error naming it when there is no such file.
fn model_path(path: &std::path::Path) -> Result<std::path::PathBuf, PredictError> {
    let file = if path.is_dir() {
        path.join("model.onnx")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(PredictError::new(format!(
            "ONNX model {}: no such file",
            file.display()
        )));
    }
    Ok(file)
}
