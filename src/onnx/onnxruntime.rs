//! The onnxruntime predictor (cargo feature `ort`): a model run by
//! onnxruntime through the `ort` crate, with the library loaded at run time.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynMapValueType, DynValue, Tensor, TensorElementType, ValueType};
use serde_json::{Map, Value};

use super::{
    Column, InputSpec, Kind, ModelFile, ModelFiles, OutColumn, OutValues, batch_first, f32_json,
    f64_json, finite, gather, json_instances, model_path, onnx_inner, passthrough_of,
    predict_lines, predictions_of, shown_as,
};
use crate::model::{DataFormat, Job, ModelVersion};
use crate::predict::{JsonPredictions, ModelResolver, PredictContext, PredictError, Predictor};
use crate::record::Instance;
use crate::storage::{LocalStorage, Storage};

/// The variable naming the onnxruntime library (`libonnxruntime.so.1.N.M`
/// on Linux), as the `ort` crate and onnxruntime's own tools read it.
const DYLIB_VARIABLE: &str = "ORT_DYLIB_PATH";

/// How [`OrtPredictor`] runs a model.
///
/// ```
/// use batch_prediction::onnx::OrtOptions;
///
/// let options = OrtOptions::new().with_intra_threads(2);
/// assert_eq!(options.intra_threads(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct OrtOptions {
    intra_threads: usize,
    library: Option<PathBuf>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            intra_threads: 1,
            library: None,
        }
    }
}

impl OrtOptions {
    /// One intra-op thread per session, the library from `ORT_DYLIB_PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The threads each session runs one batch on (at least 1; default 1).
    ///
    /// Each worker of a job has a session of its own, so the default keeps
    /// a job's `maxWorkerCount` its CPU budget; more threads help a job
    /// with fewer workers than cores and large batches. With more than one,
    /// onnxruntime sums a tree ensemble's trees in parallel, in an order of
    /// its own, so such a model's values may move in the last bits from run
    /// to run (networks stay bit-identical); with one, results are
    /// byte-identical whatever the number of workers.
    #[must_use]
    pub fn with_intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = threads.max(1);
        self
    }

    /// Loads onnxruntime from `path` rather than from `ORT_DYLIB_PATH`
    /// (or, when that is unset, the system's `libonnxruntime`).
    ///
    /// onnxruntime is loaded once per process: the first model loaded picks
    /// the library, and later paths are not looked at.
    #[must_use]
    pub fn with_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.library = Some(path.into());
        self
    }

    /// The threads each session runs one batch on.
    pub fn intra_threads(&self) -> usize {
        self.intra_threads
    }
}

/// The process's onnxruntime environment, made when the first model loads.
/// A failed load is not remembered: a later call may name a good library.
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Loads onnxruntime (once per process) and returns its environment.
fn environment(options: &OrtOptions) -> Result<Environment, PredictError> {
    let mut env = ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(env) = &*env {
        return Ok(env.clone());
    }
    let library = match (&options.library, std::env::var_os(DYLIB_VARIABLE)) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(format!(
            "{}onnxruntime{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )),
    };
    let cannot = |why: String| {
        PredictError::new(format!(
            "onnxruntime: cannot load the library {}: {why}. Set {DYLIB_VARIABLE} to onnxruntime's \
             shared library, version 1.17 or newer: `pip install onnxruntime` puts it at \
             site-packages/onnxruntime/capi/libonnxruntime.so.<version>",
            library.display()
        ))
    };
    // A path (not a bare name the system's search path resolves) that names
    // no file: say so, rather than the loader's "dlopen failed".
    if library.components().count() > 1 && !library.exists() {
        return Err(cannot("no such file".to_owned()));
    }
    // The loader checks the file and its version and returns errors, but a
    // library that passes and then misbehaves panics inside `ort`: that
    // too becomes this error, never a crash of the job.
    let built = catch_unwind(AssertUnwindSafe(|| {
        ort::init_from(&library)
            .map_err(|e| e.to_string())?
            .with_name("batch-prediction")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the library panicked while loading".to_owned())
    })
    .and_then(|r| r)
    .map_err(cannot)?;
    *env = Some(built.clone());
    Ok(built)
}

/// What an output holds, checked when the model loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    /// A tensor whose first dimension is the batch.
    Tensor,
    /// A sequence of one map per instance (the `ZipMap` of a classifier's
    /// probabilities), each a JSON object `{label: probability}`.
    Maps,
}

/// Where a session is made from.
enum Model {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// A [`Predictor`] that runs an ONNX model with onnxruntime, through the
/// `ort` crate (feature `ort`).
///
/// onnxruntime runs every standard operator and the whole `ai.onnx.ml`
/// domain, so scikit-learn, XGBoost, LightGBM and Keras models converted
/// to ONNX run here (`ZipMap`, tree ensembles, scalers, encoders, string
/// inputs), where [`OnnxPredictor`](crate::OnnxPredictor) (tract) runs a
/// subset.
///
/// **The library.** Nothing is downloaded at build time: onnxruntime is
/// loaded when the first model loads, from [`OrtOptions::with_library`],
/// else `ORT_DYLIB_PATH`, else the system's `libonnxruntime`. The PyPI
/// wheel ships it: after `pip install onnxruntime`, it is
/// `site-packages/onnxruntime/capi/libonnxruntime.so.<version>`. Any
/// onnxruntime from 1.17 on is accepted. A missing or wrong library is an
/// error of the model load, naming the file, not a crash.
///
/// **Threads.** onnxruntime runs a session one call at a time, so each
/// worker that predicts takes a session of its own from a pool (made when
/// it first needs one, from the model loaded once), with
/// [`OrtOptions::intra_threads`] threads each (1 by default: the job's
/// `maxWorkerCount` stays its CPU budget). Results are byte-identical
/// whatever the number of workers; more intra-op threads may move a tree
/// ensemble's values in the last bits (see [`OrtOptions::with_intra_threads`]).
///
/// **Inputs and outputs** are those of [`OnnxPredictor`](crate::OnnxPredictor):
/// object instances feed inputs by name, other fields pass through (a
/// `key`), a wrong field is an error of its instance naming the input and
/// what it expected; `int64` values stay exact. In addition: string inputs
/// take JSON strings; a JSON `null` feeds a float input NaN (the missing
/// value imputers and tree models handle); string outputs (a classifier's
/// labels) are JSON strings; a sequence of maps (`ZipMap`, a classifier's
/// probabilities) gives each instance an object `{label: probability}`. A
/// model whose batch dimension is fixed at 1 runs one instance per call.
/// One value per instance (an `[N, 1]` output, as converters write a
/// regressor's value) is a bare JSON value, and an `[N, 1]` input takes a
/// bare value or an array of one.
///
/// # Example
/// ```no_run
/// use batch_prediction::{Instance, OrtPredictor, PredictContext, Predictor};
/// use batch_prediction::onnx::OrtOptions;
/// use batch_prediction::predict::CancelHandle;
/// use serde_json::json;
///
/// // With ORT_DYLIB_PATH naming libonnxruntime.so:
/// let model = OrtPredictor::load("tests/data/onnx/classifier.onnx", &OrtOptions::new())?;
/// let batch = vec![Instance::Json(json!({"key": "a", "features": [5.1, 3.5, 1.4, 0.2]}))];
/// let cancel = CancelHandle::new();
/// let predictions = model.predict(batch, &PredictContext::new("serving_default", &cancel, 0))?;
/// assert_eq!(predictions[0]["key"], "a");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OrtPredictor {
    model: Model,
    options: OrtOptions,
    inputs: Vec<InputSpec>,
    outputs: Vec<(String, OutputKind)>,
    /// Whether the model's batch dimension is fixed at 1.
    one_per_call: bool,
    passthrough: bool,
    source: String,
    /// Sessions not running a batch now.
    idle: Mutex<Vec<Session>>,
}

impl fmt::Debug for OrtPredictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtPredictor")
            .field("source", &self.source)
            .field("options", &self.options)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("one_per_call", &self.one_per_call)
            .field("passthrough", &self.passthrough)
            .finish_non_exhaustive()
    }
}

impl OrtPredictor {
    /// Loads the model at `path`: an `.onnx` file, or a directory holding
    /// `model.onnx` (external weights beside it are found).
    ///
    /// # Errors
    /// A [`PredictError`] naming the file and why: missing, onnxruntime not
    /// loadable, onnxruntime's own message for a model it refuses (not
    /// ONNX, truncated, an opset newer than it knows), an input or output
    /// of a type this predictor cannot feed or read.
    pub fn load(
        path: impl AsRef<Path>,
        options: &OrtOptions,
    ) -> Result<OrtPredictor, PredictError> {
        let file = model_path(path.as_ref())?;
        let name = file.display().to_string();
        Self::from_model(name, Model::File(file), options)
    }

    /// Loads the model serialized in `bytes` (an `.onnx` file's content,
    /// with its weights inside it); `name` says where it came from in error
    /// messages.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn from_bytes(
        name: &str,
        bytes: Vec<u8>,
        options: &OrtOptions,
    ) -> Result<OrtPredictor, PredictError> {
        Self::from_model(name.to_owned(), Model::Bytes(bytes), options)
    }

    fn from_model(
        source: String,
        model: Model,
        options: &OrtOptions,
    ) -> Result<OrtPredictor, PredictError> {
        let environment = environment(options)?;
        let session = new_session(&environment, &model, options, &source)?;
        let fail = |why: String| PredictError::new(format!("ONNX model {source}: {why}"));
        let mut inputs = Vec::new();
        let mut one_per_call = false;
        for input in session.inputs() {
            let name = input.name();
            let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
                return Err(fail(format!(
                    "input {name:?} is a {}, not a tensor; this predictor feeds tensors",
                    input.dtype()
                )));
            };
            let kind = match ty {
                TensorElementType::Float32 => Kind::F32,
                TensorElementType::Float64 => Kind::F64,
                TensorElementType::Int32 => Kind::I32,
                TensorElementType::Int64 => Kind::I64,
                TensorElementType::Bool => Kind::Bool,
                TensorElementType::String => Kind::Str,
                other => {
                    return Err(fail(format!(
                        "input {name:?} has type {other}; this predictor feeds float, double, int32, int64, bool and string inputs"
                    )));
                }
            };
            let Some((&first, rest)) = shape.split_first() else {
                return Err(fail(format!(
                    "input {name:?} is a scalar; inputs need a batch dimension"
                )));
            };
            match first {
                1 => one_per_call = true,
                d if d < 0 => {}
                d => {
                    return Err(fail(format!(
                        "input {name:?} has a fixed batch of {d}; the first dimension must be free (or 1)"
                    )));
                }
            }
            let mut dims = Vec::new();
            for (d, &size) in rest.iter().enumerate() {
                dims.push(usize::try_from(size).map_err(|_| {
                    fail(format!(
                        "input {name:?} has no fixed size in dimension {}; only the first (batch) dimension may vary",
                        d + 1
                    ))
                })?);
            }
            inputs.push(InputSpec {
                name: name.to_owned(),
                kind,
                shape: dims,
            });
        }
        let mut outputs = Vec::new();
        for output in session.outputs() {
            let name = output.name();
            let kind = match output.dtype() {
                ValueType::Tensor { ty, .. } if json_tensor(*ty) => OutputKind::Tensor,
                ValueType::Sequence(element) if matches!(&**element, ValueType::Map { key, value } if json_map(key, value)) => {
                    OutputKind::Maps
                }
                other => {
                    return Err(fail(format!(
                        "output {name:?} is a {other}, which has no JSON form here"
                    )));
                }
            };
            outputs.push((name.to_owned(), kind));
        }
        Ok(OrtPredictor {
            model,
            options: options.clone(),
            inputs,
            outputs,
            one_per_call,
            passthrough: true,
            source,
            idle: Mutex::new(vec![session]),
        })
    }

    /// Copies (`true`, the default) or leaves out the instance fields that
    /// name no input.
    #[must_use]
    pub fn with_passthrough(mut self, on: bool) -> Self {
        self.passthrough = on;
        self
    }

    /// The model's input names, in order.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|i| i.name.as_str()).collect()
    }

    /// The model's output names, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// A session for one call: an idle one, or a new one.
    fn take_session(&self) -> Result<Session, PredictError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(session) => Ok(session),
            None => new_session(
                &environment(&self.options)?,
                &self.model,
                &self.options,
                &self.source,
            ),
        }
    }

    /// Runs `values` (all of the batch, or one instance for a model fixed
    /// at a batch of 1) through `session`.
    fn run(&self, session: &mut Session, values: Vec<Value>) -> Result<Vec<Value>, PredictError> {
        let columns = self
            .inputs
            .iter()
            .map(|input| gather(&values, input, &self.inputs))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self.infer(session, values.len(), columns)?;
        predictions_of(values, &self.inputs, self.passthrough, outputs)
    }

    /// Runs a batch of `n` instances, whose inputs are `columns`, through
    /// `session`: its outputs, in order.
    fn infer(
        &self,
        session: &mut Session,
        n: usize,
        columns: Vec<Column>,
    ) -> Result<Vec<OutColumn<'_>>, PredictError> {
        let mut feeds: Vec<(String, DynValue)> = Vec::with_capacity(self.inputs.len());
        for (input, column) in self.inputs.iter().zip(columns) {
            let mut shape = vec![n];
            shape.extend(&input.shape);
            let tensor = tensor(column, shape)
                .map_err(|e| PredictError::new(format!("input {:?}: {e}", input.name)))?;
            feeds.push((input.name.clone(), tensor));
        }
        let outputs = session
            .run(feeds)
            .map_err(|e| PredictError::new(format!("the ONNX model failed: {e}")))?;
        let mut columns = Vec::with_capacity(self.outputs.len());
        for (name, kind) in &self.outputs {
            let value = outputs.get(name.as_str()).ok_or_else(|| {
                PredictError::new(format!("the model returned no output {name:?}"))
            })?;
            match kind {
                OutputKind::Tensor => {
                    let shape: Vec<usize> = match value.dtype() {
                        ValueType::Tensor { shape, .. } => shape
                            .iter()
                            .map(|&d| usize::try_from(d).unwrap_or(0))
                            .collect(),
                        other => {
                            return Err(PredictError::new(format!(
                                "output {name:?} is a {other}, not a tensor"
                            )));
                        }
                    };
                    let inner = onnx_inner(batch_first(&shape, n, name)?);
                    columns.push(OutColumn {
                        name,
                        values: tensor_values(value, name)?,
                        inner,
                    });
                }
                OutputKind::Maps => {
                    let maps = value
                        .try_extract_sequence::<DynMapValueType>()
                        .map_err(|e| PredictError::new(format!("output {name:?}: {e}")))?;
                    if maps.len() != n {
                        return Err(PredictError::new(format!(
                            "output {name:?} holds {} maps for a batch of {n}",
                            maps.len()
                        )));
                    }
                    let values = maps
                        .iter()
                        .map(|map| map_json(map, name))
                        .collect::<Result<Vec<_>, _>>()?;
                    columns.push(OutColumn {
                        name,
                        values: OutValues::Json(values),
                        inner: Vec::new(),
                    });
                }
            }
        }
        Ok(columns)
    }

    /// Returns `session` to the idle ones.
    fn give_back(&self, session: Session) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
    }
}

/// A new session of `model`, with `options`' threads and every graph
/// optimization.
fn new_session(
    environment: &Environment,
    model: &Model,
    options: &OrtOptions,
    source: &str,
) -> Result<Session, PredictError> {
    let fail = |e: String| PredictError::new(format!("ONNX model {source}: onnxruntime: {e}"));
    let builder = Session::builder(environment)
        .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
        .and_then(|b| Ok(b.with_intra_threads(options.intra_threads)?))
        .and_then(|b| Ok(b.with_inter_threads(1)?))
        .and_then(|b| Ok(b.with_parallel_execution(false)?));
    let mut builder = builder.map_err(|e| fail(e.to_string()))?;
    match model {
        Model::File(path) => builder.commit_from_file(path),
        Model::Bytes(bytes) => builder.commit_from_memory(bytes),
    }
    .map_err(|e| fail(e.to_string()))
}

/// A tensor of `shape` holding `column`.
fn tensor(column: Column, shape: Vec<usize>) -> ort::Result<DynValue> {
    Ok(match column {
        Column::F32(c) => Tensor::from_array((shape, c))?.into_dyn(),
        Column::F64(c) => Tensor::from_array((shape, c))?.into_dyn(),
        Column::I32(c) => Tensor::from_array((shape, c))?.into_dyn(),
        Column::I64(c) => Tensor::from_array((shape, c))?.into_dyn(),
        Column::Bool(c) => Tensor::from_array((shape, c))?.into_dyn(),
        Column::Str(c) => Tensor::from_string_array((shape, c.as_slice()))?.into_dyn(),
    })
}

/// Whether a tensor of `ty` has a JSON form here.
fn json_tensor(ty: TensorElementType) -> bool {
    use TensorElementType as T;
    matches!(
        ty,
        T::Float32
            | T::Float64
            | T::Int8
            | T::Int16
            | T::Int32
            | T::Int64
            | T::Uint8
            | T::Uint16
            | T::Uint32
            | T::Uint64
            | T::Bool
            | T::String
    )
}

/// Whether a map of `key` to `value` has a JSON form here.
fn json_map(key: &TensorElementType, value: &TensorElementType) -> bool {
    matches!(key, TensorElementType::String | TensorElementType::Int64)
        && matches!(
            value,
            TensorElementType::Float32 | TensorElementType::Float64
        )
}

/// A tensor output's values, row-major: `f32`s as they are, others as JSON.
fn tensor_values(value: &DynValue, name: &str) -> Result<OutValues, PredictError> {
    if let ValueType::Tensor {
        ty: TensorElementType::Float32,
        ..
    } = value.dtype()
    {
        let (_, values) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| PredictError::new(format!("output {name:?}: {e}")))?;
        return Ok(OutValues::F32(values.to_vec()));
    }
    tensor_json(value, name).map(OutValues::Json)
}

/// A tensor output's values as JSON, row-major.
fn tensor_json(value: &DynValue, name: &str) -> Result<Vec<Value>, PredictError> {
    use TensorElementType as T;
    let error = |e: ort::Error| PredictError::new(format!("output {name:?}: {e}"));
    fn ints<X: ort::value::PrimitiveTensorElementType + Copy + Into<i64>>(
        value: &DynValue,
    ) -> ort::Result<Vec<Value>> {
        Ok(value
            .try_extract_tensor::<X>()?
            .1
            .iter()
            .map(|&x| Value::from(x.into()))
            .collect())
    }
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(PredictError::new(format!(
            "output {name:?} is not a tensor"
        )));
    };
    match ty {
        T::Float32 => finite(
            value
                .try_extract_tensor::<f32>()
                .map_err(error)?
                .1
                .iter()
                .copied(),
            f32_json,
            name,
        ),
        T::Float64 => finite(
            value
                .try_extract_tensor::<f64>()
                .map_err(error)?
                .1
                .iter()
                .copied(),
            f64_json,
            name,
        ),
        T::Int8 => ints::<i8>(value).map_err(error),
        T::Int16 => ints::<i16>(value).map_err(error),
        T::Int32 => ints::<i32>(value).map_err(error),
        T::Int64 => ints::<i64>(value).map_err(error),
        T::Uint8 => ints::<u8>(value).map_err(error),
        T::Uint16 => ints::<u16>(value).map_err(error),
        T::Uint32 => ints::<u32>(value).map_err(error),
        T::Uint64 => Ok(value
            .try_extract_tensor::<u64>()
            .map_err(error)?
            .1
            .iter()
            .map(|&x| Value::from(x))
            .collect()),
        T::Bool => Ok(value
            .try_extract_tensor::<bool>()
            .map_err(error)?
            .1
            .iter()
            .map(|&x| Value::Bool(x))
            .collect()),
        T::String => Ok(value
            .try_extract_strings()
            .map_err(error)?
            .1
            .into_iter()
            .map(Value::String)
            .collect()),
        other => Err(PredictError::new(format!(
            "output {name:?} has type {other}, which has no JSON form here"
        ))),
    }
}

/// One instance's map (a `ZipMap` entry) as a JSON object, in the map's
/// order (onnxruntime's maps are sorted by key, as a classifier's classes are).
fn map_json(map: &ort::value::DynMap, name: &str) -> Result<Value, PredictError> {
    let error = |e: ort::Error| PredictError::new(format!("output {name:?}: {e}"));
    let ValueType::Map { key, value } = map.dtype() else {
        return Err(PredictError::new(format!(
            "output {name:?} holds a non-map"
        )));
    };
    let entries: Vec<(String, Option<Value>)> = match (key, value) {
        (TensorElementType::String, TensorElementType::Float32) => map
            .try_extract_key_values::<String, f32>()
            .map_err(error)?
            .into_iter()
            .map(|(k, v)| (k, f32_json(v)))
            .collect(),
        (TensorElementType::String, TensorElementType::Float64) => map
            .try_extract_key_values::<String, f64>()
            .map_err(error)?
            .into_iter()
            .map(|(k, v)| (k, f64_json(v)))
            .collect(),
        (TensorElementType::Int64, TensorElementType::Float32) => map
            .try_extract_key_values::<i64, f32>()
            .map_err(error)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), f32_json(v)))
            .collect(),
        (TensorElementType::Int64, TensorElementType::Float64) => map
            .try_extract_key_values::<i64, f64>()
            .map_err(error)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), f64_json(v)))
            .collect(),
        (key, value) => {
            return Err(PredictError::new(format!(
                "output {name:?} is a map of {key} to {value}, which has no JSON form here"
            )));
        }
    };
    let mut object = Map::with_capacity(entries.len());
    for (k, v) in entries {
        let v = v.ok_or_else(|| {
            PredictError::new(format!(
                "output {name:?} holds NaN or an infinity, which JSON cannot hold"
            ))
        })?;
        object.insert(k, v);
    }
    Ok(Value::Object(object))
}

impl Predictor for OrtPredictor {
    /// `false`: an ONNX model takes tensors, so TEXT lines and TFRecord
    /// records are JSON instances, as AI Platform read them for any model
    /// but a string-input TensorFlow signature.
    fn takes_raw_records(&self, _: DataFormat) -> bool {
        false
    }

    fn predict(
        &self,
        batch: Vec<Instance>,
        _: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        let values = json_instances(batch)?;
        let mut session = self.take_session()?;
        let result = if self.one_per_call {
            let mut all = Vec::with_capacity(values.len());
            let mut failed = None;
            for value in values {
                match self.run(&mut session, vec![value]) {
                    Ok(mut one) => all.append(&mut one),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            failed.map_or(Ok(all), Err)
        } else {
            self.run(&mut session, values)
        };
        self.give_back(session);
        result
    }

    /// Reads the numbers of each line straight into the input tensors and
    /// writes the outputs without building `Value`s (see
    /// [`Predictor::predict_json_lines`]); a model fixed at a batch of 1
    /// takes the usual path.
    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        _: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        if self.one_per_call {
            return false;
        }
        let Ok(mut session) = self.take_session() else {
            return false;
        };
        let took = predict_lines(lines, &self.inputs, self.passthrough, out, |n, columns| {
            self.infer(&mut session, n, columns)
        });
        self.give_back(session);
        took
    }
}

/// Resolves a job's `uri` to an [`OrtPredictor`], finding the model as
/// [`OnnxResolver`](crate::OnnxResolver) does: a local path, a `file://`
/// URI, a `gs://` location in the root of the given [`LocalStorage`], or
/// with [`with_buckets`](Self::with_buckets) a `gs://` or `s3://` object;
/// an `.onnx` file or a directory with `model.onnx`.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{BatchExecutor, LocalStorage, OrtResolver};
/// use batch_prediction::onnx::OrtOptions;
///
/// let storage = LocalStorage::new();
/// let resolver = OrtResolver::new(storage.clone()).with_options(OrtOptions::new().with_intra_threads(1));
/// let executor = BatchExecutor::new(Arc::new(storage), Arc::new(resolver));
/// ```
#[derive(Debug, Clone, Default)]
pub struct OrtResolver {
    files: ModelFiles,
    options: OrtOptions,
}

impl OrtResolver {
    /// A resolver that finds model files as `storage` finds objects, with
    /// the default [`OrtOptions`].
    pub fn new(storage: LocalStorage) -> Self {
        OrtResolver {
            files: ModelFiles {
                storage,
                buckets: None,
            },
            options: OrtOptions::default(),
        }
    }

    /// Reads `gs://` and `s3://` models from `buckets` (such as a
    /// [`CloudStorage`](crate::CloudStorage)), downloaded once per job into
    /// memory.
    #[must_use]
    pub fn with_buckets(mut self, buckets: Arc<dyn Storage>) -> Self {
        self.files.buckets = Some(buckets);
        self
    }

    /// Runs the models with `options`.
    #[must_use]
    pub fn with_options(mut self, options: OrtOptions) -> Self {
        self.options = options;
        self
    }
}

impl ModelResolver for OrtResolver {
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        let ModelVersion::Uri(uri) = model else {
            return Err(PredictError::new(format!(
                "the onnxruntime resolver loads models from predictionInput.uri, not {model}"
            )));
        };
        let predictor = match self.files.find(uri)? {
            ModelFile::Path(path) => {
                OrtPredictor::load(&path, &self.options).map_err(|e| shown_as(e, &path, uri))?
            }
            ModelFile::Bytes(name, bytes) => OrtPredictor::from_bytes(&name, bytes, &self.options)?,
        };
        Ok(Arc::new(predictor.with_passthrough(passthrough_of(job))))
    }
}
