//! The ONNX predictor (cargo feature `onnx`): a model file run by the
//! pure-Rust `tract-onnx`, loaded and optimized once per job and shared by
//! every worker.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use super::{
    Column, InputSpec, Kind, ModelFile, ModelFiles, OutColumn, OutValues, batch_first, f64_json,
    finite, gather, json_instances, model_path, onnx_inner, passthrough_of, predict_lines,
    predictions_of, shown_as,
};
use crate::model::{DataFormat, Job, ModelVersion};
use crate::predict::{JsonPredictions, ModelResolver, PredictContext, PredictError, Predictor};
use crate::record::Instance;
use crate::storage::{LocalStorage, Storage};

impl Kind {
    fn of(dt: DatumType) -> Option<Kind> {
        Some(match dt {
            DatumType::F32 => Kind::F32,
            DatumType::F64 => Kind::F64,
            DatumType::I32 => Kind::I32,
            DatumType::I64 => Kind::I64,
            DatumType::Bool => Kind::Bool,
            _ => return None,
        })
    }
}

impl Column {
    fn into_tensor(self, shape: &[usize]) -> TractResult<Tensor> {
        match self {
            Column::F32(c) => Tensor::from_shape(shape, &c),
            Column::F64(c) => Tensor::from_shape(shape, &c),
            Column::I32(c) => Tensor::from_shape(shape, &c),
            Column::I64(c) => Tensor::from_shape(shape, &c),
            Column::Bool(c) => Tensor::from_shape(shape, &c),
            Column::Str(_) => Err(TractError::msg(
                "tract runs no string inputs (the model was refused when it loaded)",
            )),
        }
    }
}

/// The error of a model tract cannot parse.
fn unreadable(name: &str, e: &TractError) -> PredictError {
    let why = format!("{e:#}");
    // A file that parses but holds a node tract cannot build (attributes
    // it does not accept) is tract's gap, not the file's.
    let hint = if why.contains("Building node") {
        format!("; {ORT_HINT}")
    } else {
        String::new()
    };
    PredictError::new(format!("ONNX model {name}: cannot read it: {why}{hint}"))
}

/// The name of the first `TreeEnsembleClassifier` whose labels tract would
/// compute wrongly: two classes and every leaf scoring class 0 (one score,
/// the positive class's). tract-onnx 0.23.9 gets its probabilities right
/// but takes the label from an argmax over that single score, so it
/// inverts labels (the model-family tests show it on LightGBM's binary
/// classifier); such a model is refused rather than mislabelled.
fn mislabelled_binary_trees(proto: &tract_onnx::pb::ModelProto) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    graph
        .node
        .iter()
        .filter(|node| node.op_type == "TreeEnsembleClassifier")
        .find(|node| {
            let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
            let classes = attr("classlabels_int64s").map_or(0, |a| a.ints.len())
                + attr("classlabels_strings").map_or(0, |a| a.strings.len());
            let one_score = attr("class_ids").is_some_and(|a| a.ints.iter().all(|&c| c == 0));
            classes < 3 && one_score
        })
        .map(|node| node.name.clone())
}

/// The newest opset of the standard ONNX domain tract-onnx 0.23 is tested
/// with (it says so itself, and only warns); a model stamped with a newer one
/// is refused, since operators change meaning between opsets.
const NEWEST_OPSET: i64 = 18;

/// What a load error says when the model is beyond tract.
const ORT_HINT: &str = "onnxruntime runs the whole ONNX standard: build with the `ort` feature and use OrtPredictor (`--predictor ort`)";

/// A [`Predictor`] that runs an ONNX model with `tract-onnx`.
///
/// The model is loaded and optimized once, with a symbolic batch dimension
/// (whatever the file says, often nothing or a fixed 1), and every batch
/// goes through one run of the optimized plan, which all workers share.
///
/// **Inputs.** An instance that is a JSON object feeds each model input from
/// the field of the same name; any other instance (an array, a number)
/// feeds a model that has exactly one input. Values are nested arrays of
/// the input's shape after the batch dimension (a scalar for a rank-1
/// input, a scalar or an array of one for an `[N, 1]` input), of numbers
/// for float inputs, integers for int inputs, booleans for bool inputs. A missing field, a wrong shape or a wrong type is an
/// error of that instance, saying which input and what was expected;
/// binary (`{"b64": …}`) instances cannot feed a model.
///
/// **Outputs.** One JSON object per instance, keyed by output name: floats
/// as JSON numbers (`f32` values printed as the shortest decimal that reads
/// back as the same `f32`), int64 values exactly (`2^60 + 1` stays itself),
/// booleans as booleans, nested as the output's shape after the batch
/// dimension; one value per instance (an output of shape `[N]` or
/// `[N, 1]`, as converters give a regressor's value) is a bare value.
///
/// **Passthrough.** Fields of an object instance that name no input are
/// copied unchanged into that instance's prediction, so a `key` survives
/// (something the hosted service could not do); a model output of the same
/// name wins. A job turns this off with the label
/// [`bp-passthrough: off`](crate::predict::PASSTHROUGH_LABEL).
///
/// **signatureName** has no meaning for ONNX, whose models have one graph:
/// it is ignored.
///
/// What works is what `tract-onnx` 0.23.9 supports: the standard operator
/// set (opset 9 to 18), and of `ai.onnx.ml` the linear and tree classifiers
/// but not `Scaler`, `ZipMap` or `TreeEnsembleRegressor`. Inputs and
/// outputs of string type are refused when the model loads.
///
/// # Example
/// ```
/// use batch_prediction::{Instance, OnnxPredictor, PredictContext, Predictor};
/// use batch_prediction::predict::CancelHandle;
/// use serde_json::json;
///
/// let model = OnnxPredictor::load("tests/data/onnx/classifier.onnx")?;
/// assert_eq!(model.input_names(), ["features"]);
/// let batch = vec![Instance::Json(json!({"key": "a", "features": [5.1, 3.5, 1.4, 0.2]}))];
/// let cancel = CancelHandle::new();
/// let predictions = model.predict(batch, &PredictContext::new("serving_default", &cancel, 0))?;
/// assert_eq!(predictions[0]["key"], "a");
/// assert_eq!(predictions[0]["probabilities"].as_array().unwrap().len(), 3);
/// assert!(predictions[0]["class_id"].is_i64());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OnnxPredictor {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    passthrough: bool,
    source: String,
}

impl fmt::Debug for OnnxPredictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxPredictor")
            .field("source", &self.source)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("passthrough", &self.passthrough)
            .finish_non_exhaustive()
    }
}

impl OnnxPredictor {
    /// Loads and optimizes the model at `path`: an `.onnx` file, or a
    /// directory holding `model.onnx`.
    ///
    /// # Errors
    /// A [`PredictError`] naming the file and why: missing, not an ONNX
    /// model, an operator tract does not support, an input or output of a
    /// type this predictor cannot feed or read.
    pub fn load(path: impl AsRef<Path>) -> Result<OnnxPredictor, PredictError> {
        let file = model_path(path.as_ref())?;
        let name = file.display().to_string();
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_path(&file)
            .map_err(|e| unreadable(&name, &e))?;
        // External weights are found beside the file.
        let dir = file.parent().and_then(Path::to_str);
        Self::from_proto(&name, &proto, dir)
    }

    /// Loads and optimizes the model serialized in `bytes` (an `.onnx`
    /// file's content, with its weights inside it); `name` says where it
    /// came from in error messages.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<OnnxPredictor, PredictError> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| unreadable(name, &e))?;
        Self::from_proto(name, &proto, None)
    }

    fn from_proto(
        name: &str,
        proto: &tract_onnx::pb::ModelProto,
        dir: Option<&str>,
    ) -> Result<OnnxPredictor, PredictError> {
        let opset = proto
            .opset_import
            .iter()
            .find(|import| import.domain.is_empty() || import.domain == "ai.onnx")
            .map_or(0, |import| import.version);
        if opset > NEWEST_OPSET {
            return Err(PredictError::new(format!(
                "ONNX model {name}: it imports opset {opset} of the standard ONNX domain, and \
                 tract-onnx 0.23 is tested with opsets 9 to {NEWEST_OPSET}: a newer operator \
                 set may change what an operator computes; {ORT_HINT}"
            )));
        }
        if let Some(node) = mislabelled_binary_trees(proto) {
            return Err(PredictError::new(format!(
                "ONNX model {name}: node {node:?} is a binary TreeEnsembleClassifier with one \
                 score per leaf (as LightGBM's converter writes), whose labels tract-onnx 0.23 \
                 gets wrong; {ORT_HINT}"
            )));
        }
        let parsed = tract_onnx::onnx()
            .parse(proto, dir)
            .map_err(|e| unreadable(name, &e))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(PredictError::new(format!(
                "ONNX model {name}: cannot read it: nothing in the file produces {}",
                parsed.unresolved_inputs.join(", ")
            )));
        }
        Self::from_model(name, parsed.model)
    }

    fn from_model(name: &str, mut model: InferenceModel) -> Result<OnnxPredictor, PredictError> {
        let fail = |why: String| PredictError::new(format!("ONNX model {name}: {why}"));
        let mut missing: Vec<String> = Vec::new();
        for node in model.nodes() {
            let op = node.op.name();
            if let Some(op) = op
                .strip_prefix("Unimplemented(")
                .and_then(|o| o.strip_suffix(')'))
                && !missing.iter().any(|m| m == op)
            {
                missing.push(op.to_owned());
            }
        }
        if !missing.is_empty() {
            return Err(fail(format!(
                "tract-onnx has no implementation of the operator{} {}; {ORT_HINT}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            )));
        }
        let batch = model.sym("N");
        let mut inputs = Vec::new();
        for i in 0..model.inputs.len() {
            let name = model.node(model.inputs[i].node).name.clone();
            let fact = model
                .input_fact(i)
                .map_err(|e| fail(format!("input {name:?}: {e}")))?
                .clone();
            let dt = fact
                .datum_type
                .concretize()
                .ok_or_else(|| fail(format!("input {name:?} has no element type")))?;
            let kind = Kind::of(dt).ok_or_else(|| {
                fail(format!(
                    "input {name:?} has type {dt:?}; this predictor feeds f32, f64, i32, i64 and bool inputs"
                ))
            })?;
            let mut shape = Vec::new();
            for (d, dim) in fact.shape.dims().enumerate().skip(1) {
                let size = dim
                    .concretize()
                    .and_then(|d| d.to_usize().ok())
                    .ok_or_else(|| {
                        fail(format!(
                            "input {name:?} has no fixed size in dimension {d}; only the first (batch) dimension may vary"
                        ))
                    })?;
                shape.push(size);
            }
            if fact.shape.dims().count() == 0 {
                return Err(fail(format!(
                    "input {name:?} is a scalar; inputs need a batch dimension"
                )));
            }
            let mut dims: TVec<TDim> = tvec![batch.clone().into()];
            dims.extend(shape.iter().map(|&s| TDim::from(s)));
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, dims))
                .map_err(|e| fail(format!("input {name:?}: {e}")))?;
            inputs.push(InputSpec { name, kind, shape });
        }
        let typed = model.into_optimized().map_err(|e| {
            fail(format!(
                "cannot optimize it for a batch dimension: {e}; {ORT_HINT}"
            ))
        })?;
        let outputs = typed
            .outputs
            .iter()
            .map(|&o| {
                typed
                    .outlet_label(o)
                    .map(str::to_owned)
                    .unwrap_or_else(|| typed.node(o.node).name.clone())
            })
            .collect();
        let plan = typed
            .into_runnable()
            .map_err(|e| fail(format!("cannot plan it: {e}")))?;
        Ok(OnnxPredictor {
            plan,
            inputs,
            outputs,
            passthrough: true,
            source: name.to_owned(),
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
        self.outputs.iter().map(String::as_str).collect()
    }
}

impl Predictor for OnnxPredictor {
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
        let columns = self
            .inputs
            .iter()
            .map(|input| gather(&values, input, &self.inputs))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self.infer(values.len(), columns)?;
        predictions_of(values, &self.inputs, self.passthrough, outputs)
    }

    /// Reads the numbers of each line straight into the input tensors and
    /// writes the outputs without building `Value`s (see
    /// [`Predictor::predict_json_lines`]).
    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        _: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        predict_lines(lines, &self.inputs, self.passthrough, out, |n, columns| {
            self.infer(n, columns)
        })
    }
}

impl OnnxPredictor {
    /// Runs a batch of `n` instances, whose inputs are `columns`: its
    /// outputs, in order.
    fn infer(&self, n: usize, columns: Vec<Column>) -> Result<Vec<OutColumn<'_>>, PredictError> {
        let mut tensors: TVec<TValue> = TVec::new();
        for (input, column) in self.inputs.iter().zip(columns) {
            let mut shape = vec![n];
            shape.extend(&input.shape);
            let tensor = column
                .into_tensor(&shape)
                .map_err(|e| PredictError::new(format!("input {:?}: {e}", input.name)))?;
            tensors.push(tensor.into_tvalue());
        }
        let outputs = self
            .plan
            .run(tensors)
            .map_err(|e| PredictError::new(format!("the ONNX model failed: {e}")))?;
        let mut columns = Vec::with_capacity(self.outputs.len());
        for (name, output) in self.outputs.iter().zip(outputs.iter()) {
            let inner = onnx_inner(batch_first(output.shape(), n, name)?);
            let values = match output.datum_type() {
                DatumType::F32 => OutValues::F32(plain::<f32>(output, name)?),
                DatumType::F64 => {
                    OutValues::Json(finite(plain::<f64>(output, name)?, f64_json, name)?)
                }
                DatumType::Bool => OutValues::Json(
                    plain::<bool>(output, name)?
                        .into_iter()
                        .map(Value::Bool)
                        .collect(),
                ),
                DatumType::U64 => OutValues::Json(
                    plain::<u64>(output, name)?
                        .into_iter()
                        .map(Value::from)
                        .collect(),
                ),
                dt if dt.is_integer() => {
                    let cast = output.cast_to::<i64>().map_err(output_error(name))?;
                    OutValues::Json(
                        plain::<i64>(&cast, name)?
                            .into_iter()
                            .map(Value::from)
                            .collect(),
                    )
                }
                dt => {
                    return Err(PredictError::new(format!(
                        "output {name:?} has type {dt:?}, which has no JSON form here"
                    )));
                }
            };
            columns.push(OutColumn {
                name,
                values,
                inner,
            });
        }
        Ok(columns)
    }
}

/// The values of an output tensor, in row-major order.
fn plain<T: Datum + Copy>(tensor: &Tensor, name: &str) -> Result<Vec<T>, PredictError> {
    Ok(tensor
        .to_plain_array_view::<T>()
        .map_err(output_error(name))?
        .iter()
        .copied()
        .collect())
}

fn output_error(name: &str) -> impl Fn(TractError) -> PredictError + '_ {
    move |e| PredictError::new(format!("output {name:?}: {e}"))
}

/// Resolves a job's `uri` to an [`OnnxPredictor`]: a local path, a
/// `file://` URI, or a `gs://` location in the root of the given
/// [`LocalStorage`], naming an `.onnx` file or a directory with
/// `model.onnx`. `modelName` and `versionName` are refused: name models by
/// `uri`, or map names to files with a [`ModelRegistry`](crate::predict::ModelRegistry).
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{BatchExecutor, LocalStorage, OnnxResolver};
///
/// let storage = LocalStorage::new();
/// let executor = BatchExecutor::new(Arc::new(storage.clone()), Arc::new(OnnxResolver::new(storage)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct OnnxResolver {
    files: ModelFiles,
}

impl OnnxResolver {
    /// A resolver that finds model files as `storage` finds objects.
    pub fn new(storage: LocalStorage) -> Self {
        OnnxResolver {
            files: ModelFiles {
                storage,
                buckets: None,
            },
        }
    }

    /// Reads `gs://` and `s3://` models from `buckets` (such as a
    /// [`CloudStorage`](crate::CloudStorage)): the `.onnx` object at the
    /// `uri`, or `model.onnx` under it, downloaded once per job into memory.
    #[must_use]
    pub fn with_buckets(mut self, buckets: Arc<dyn Storage>) -> Self {
        self.files.buckets = Some(buckets);
        self
    }
}

impl ModelResolver for OnnxResolver {
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        let ModelVersion::Uri(uri) = model else {
            return Err(PredictError::new(format!(
                "the ONNX resolver loads models from predictionInput.uri, not {model}"
            )));
        };
        let predictor = match self.files.find(uri)? {
            ModelFile::Path(path) => {
                OnnxPredictor::load(&path).map_err(|e| shown_as(e, &path, uri))?
            }
            ModelFile::Bytes(name, bytes) => OnnxPredictor::from_bytes(&name, &bytes)?,
        };
        Ok(Arc::new(predictor.with_passthrough(passthrough_of(job))))
    }
}
