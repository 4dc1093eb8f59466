//! [`TensorflowPredictor`]: instances in, as TensorFlow Serving's row
//! format and AI Platform read them; predictions out, one per instance.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Number, Value};

use super::library::{Api, api};
use super::session::{Bound, Session, Tensor};
use super::signature::{DType, Signature, TensorSpec};
use crate::model::{DataFormat, Job, ModelVersion};
use crate::predict::JsonPredictions;
use crate::predict::{PredictContext, PredictError, Predictor};
use crate::record::Instance;
use crate::storage::{LocalStorage, Storage, StorageExt, join_location};
use crate::tensor::{self, Column, InputSpec, Kind, OutColumn, OutValues, f32_json};

/// How SavedModels run: sessions, their threads, the tags to load.
///
/// By default every worker thread of a job gets a session of its own that
/// runs each step's operations one after another in that worker's thread,
/// each operation on one thread, so that a job's `maxWorkerCount` stays
/// its CPU budget. Results do not depend on these settings.
///
/// TensorFlow keeps one intra-op pool per process, made with the first
/// session: [`intra_threads`](Self::intra_threads) takes effect for the
/// first session a process makes, and later sessions share its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorflowOptions {
    /// Threads one operation may use (`intra_op_parallelism_threads`), in
    /// the process's one intra-op pool (see above). Default 1.
    pub intra_threads: u32,
    /// Operations run at once (`inter_op_parallelism_threads`): 0, the
    /// default, runs them one after another in the thread that calls the
    /// session, with no hand-off; N runs them on a pool of N threads of the
    /// session's own. A graph whose step needs two operations running at
    /// once (a queue's dequeue waiting for an enqueue in the same step;
    /// serving signatures do not do this) needs N of 2 or more.
    pub inter_threads: u32,
    /// One session shared by every worker instead of one each (less
    /// memory for a large model; the session's threads then serve all).
    pub shared_session: bool,
    /// The MetaGraph's tags (`serve`).
    pub tags: Vec<String>,
    /// TensorFlow's library (`libtensorflow_cc.so.2`), instead of
    /// `TENSORFLOW_DYLIB_PATH` or the search path.
    pub library: Option<PathBuf>,
}

impl Default for TensorflowOptions {
    fn default() -> Self {
        TensorflowOptions {
            intra_threads: 1,
            inter_threads: 0,
            shared_session: false,
            tags: vec!["serve".to_owned()],
            library: None,
        }
    }
}

impl TensorflowOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`intra_threads`](Self::intra_threads) (at least 1).
    #[must_use]
    pub fn with_intra_threads(mut self, n: u32) -> Self {
        self.intra_threads = n.max(1);
        self
    }

    /// Sets [`inter_threads`](Self::inter_threads) (at least 1).
    #[must_use]
    pub fn with_inter_threads(mut self, n: u32) -> Self {
        self.inter_threads = n.max(1);
        self
    }

    /// Sets [`shared_session`](Self::shared_session).
    #[must_use]
    pub fn with_shared_session(mut self, shared: bool) -> Self {
        self.shared_session = shared;
        self
    }

    /// Sets [`library`](Self::library): the path of `libtensorflow_cc.so.2`.
    /// The first load of a process opens it; a process holds one.
    #[must_use]
    pub fn with_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.library = Some(path.into());
        self
    }

    /// Sets [`tags`](Self::tags).
    #[must_use]
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
}

/// The most sessions one predictor opens: workers beyond it share them.
const MAX_SESSIONS: usize = 64;

/// A TensorFlow SavedModel, run in this process by TensorFlow's C library
/// (feature `tensorflow`): predictions equal TensorFlow's own.
///
/// The library (`libtensorflow_cc.so.2`, as the PyPI wheel `tensorflow-cpu`
/// ships it) is opened at the first load, from `TENSORFLOW_DYLIB_PATH` or
/// the library search path, and kept for the life of the process.
///
/// Instances follow TensorFlow Serving's row format, as AI Platform read
/// them: for a signature of one input, the instance is that input's value
/// (or an object with a field named after the input); otherwise an object
/// with a field per input alias. `{"b64": "…"}` gives bytes to a string
/// input; other fields of an object (a `key`) are copied into its
/// prediction unless the job's `bp-passthrough` label is `off`. Values are
/// checked against the signature's dtypes and shapes before the call, so a
/// bad instance is that instance's error. A prediction is an object of the
/// outputs by alias (and the copied fields), as AI Platform wrote its
/// results; a string output is text, or `{"b64": …}` when its alias ends in
/// `_bytes` or it is not UTF-8.
///
/// A signature whose one input is a string per instance takes records as
/// they are ([`Predictor::takes_raw_records`]), as AI Platform gave them:
/// a TFRecord record's bytes (a serialized `tf.train.Example`), a JSON or
/// TEXT line as its text.
///
/// # Example
/// ```no_run
/// use batch_prediction::tensorflow::{TensorflowOptions, TensorflowPredictor};
///
/// let model = TensorflowPredictor::load("model/", "serving_default", TensorflowOptions::new())?;
/// println!("{:?}", model.signature().inputs);
/// # Ok::<(), batch_prediction::PredictError>(())
/// ```
pub struct TensorflowPredictor {
    api: &'static Api,
    dir: PathBuf,
    options: TensorflowOptions,
    signature: Signature,
    sessions: Vec<OnceLock<Result<Arc<Bound>, String>>>,
    /// The signature's inputs for the JSON-lines fast path, when it has one.
    fast_inputs: Option<Vec<InputSpec>>,
    passthrough: bool,
    /// A bucket's model copied to this folder, removed when dropped.
    copied: Option<PathBuf>,
}

impl std::fmt::Debug for TensorflowPredictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorflowPredictor")
            .field("dir", &self.dir)
            .field("signature", &self.signature.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TensorflowPredictor {
    /// Loads the SavedModel in `dir` (`saved_model.pb`, `variables/`) and
    /// picks the signature `signature_name`.
    ///
    /// # Errors
    /// TensorFlow's library missing or too old; TensorFlow's own message
    /// for a model it cannot load (a truncated `saved_model.pb`, missing
    /// variables, an unknown tag, an op this build lacks); a signature the
    /// model does not have (naming those it has), or one with a tensor
    /// this crate cannot feed or read.
    pub fn load(
        dir: impl AsRef<Path>,
        signature_name: &str,
        options: TensorflowOptions,
    ) -> Result<TensorflowPredictor, PredictError> {
        let dir = dir.as_ref();
        let shown = dir.display();
        if !dir.join("saved_model.pb").is_file() && !dir.join("saved_model.pbtxt").is_file() {
            return Err(PredictError::new(format!(
                "TensorFlow SavedModel {shown}: no saved_model.pb in that folder"
            )));
        }
        let api = api(options.library.as_deref()).map_err(PredictError::new)?;
        let (session, mut signatures) = Session::load(
            api,
            dir,
            &options.tags,
            options.intra_threads,
            options.inter_threads,
        )
        .map_err(|e| PredictError::new(format!("TensorFlow SavedModel {shown}: {e}")))?;
        let Some(raw) = signatures.remove(signature_name) else {
            let names: Vec<String> = signatures.keys().map(|k| format!("{k:?}")).collect();
            return Err(PredictError::new(format!(
                "TensorFlow SavedModel {shown} has no signature {signature_name:?}; it has {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        };
        let signature = raw
            .check(signature_name)
            .map_err(|e| PredictError::new(format!("TensorFlow SavedModel {shown}: {e}")))?;
        let first = Bound::new(session, &signature)
            .map_err(|e| PredictError::new(format!("TensorFlow SavedModel {shown}: {e}")))?;
        let slots = if options.shared_session {
            1
        } else {
            MAX_SESSIONS
        };
        let sessions: Vec<_> = (0..slots).map(|_| OnceLock::new()).collect();
        let _ = sessions[0].set(Ok(Arc::new(first)));
        Ok(TensorflowPredictor {
            api,
            dir: dir.to_path_buf(),
            options,
            fast_inputs: fast_inputs(&signature),
            signature,
            sessions,
            passthrough: true,
            copied: None,
        })
    }

    /// The same predictor, copying an object instance's fields that name no
    /// input into its prediction (`true`, the default) or not.
    #[must_use]
    pub fn with_passthrough(mut self, passthrough: bool) -> Self {
        self.passthrough = passthrough;
        self
    }

    /// The signature it runs.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The session of `worker`, loaded on its first call.
    fn session(&self, worker: usize) -> Result<Arc<Bound>, PredictError> {
        let slot = &self.sessions[worker % self.sessions.len()];
        slot.get_or_init(|| {
            let (session, _) = Session::load(
                self.api,
                &self.dir,
                &self.options.tags,
                self.options.intra_threads,
                self.options.inter_threads,
            )?;
            Bound::new(session, &self.signature).map(Arc::new)
        })
        .clone()
        .map_err(|e| PredictError::new(format!("TensorFlow session: {e}")))
    }

    /// The input tensors of a batch.
    fn feeds(&self, batch: &[Instance]) -> Result<Vec<Tensor>, PredictError> {
        let inputs = &self.signature.inputs;
        inputs
            .iter()
            .map(|input| {
                let values = batch
                    .iter()
                    .map(|instance| field(instance, input, inputs))
                    .collect::<Result<Vec<_>, _>>()?;
                column(self.api, input, &values)
            })
            .collect()
    }
}

impl Drop for TensorflowPredictor {
    fn drop(&mut self) {
        if let Some(dir) = self.copied.take() {
            self.sessions.clear();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// An input's value in one instance, as the JSON it is or bytes.
enum Given<'a> {
    Json(&'a Value),
    Bytes(&'a [u8]),
}

/// The value of `input` in `instance`.
fn field<'a>(
    instance: &'a Instance,
    input: &TensorSpec,
    inputs: &[TensorSpec],
) -> Result<Given<'a>, PredictError> {
    let value = match instance {
        Instance::Bytes(bytes) if inputs.len() == 1 => return Ok(Given::Bytes(bytes)),
        Instance::Bytes(_) => {
            return Err(PredictError::new(format!(
                "a binary instance (a TFRecord record, or {{\"b64\": …}}) feeds only a signature of one input; this one has {}",
                aliases(inputs)
            )));
        }
        Instance::Json(value) => value,
    };
    match value {
        Value::Object(map) if !is_b64(map) => map.get(&input.alias).map(Given::Json).ok_or_else(|| {
            PredictError::new(format!(
                "the instance has no field {:?} for the signature's input of that name (expected {})",
                input.alias,
                describe(input)
            ))
        }),
        other if inputs.len() == 1 => Ok(Given::Json(other)),
        _ => Err(PredictError::new(format!(
            "the signature has {} inputs ({}): an instance must be an object with a field for each",
            inputs.len(),
            aliases(inputs)
        ))),
    }
}

fn aliases(inputs: &[TensorSpec]) -> String {
    inputs
        .iter()
        .map(|i| i.alias.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether an object is `{"b64": "…"}`, a binary value.
fn is_b64(map: &Map<String, Value>) -> bool {
    map.len() == 1 && matches!(map.get("b64"), Some(Value::String(_)))
}

/// What an input takes, in errors.
fn describe(input: &TensorSpec) -> String {
    match input.shape.as_deref() {
        Some([]) => format!("one {} value", input.dtype),
        Some(shape) => format!("{} of shape {}", input.dtype, shown_shape(shape)),
        None => format!("{} values", input.dtype),
    }
}

/// `[4]`, `[?, 3]`.
fn shown_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| if d < 0 { "?".to_owned() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The shape of an input's value (bytes are a scalar).
fn shape_of(value: &Given<'_>) -> Vec<i64> {
    match value {
        Given::Json(v) => crate::model::wire::json_shape(v),
        Given::Bytes(_) => Vec::new(),
    }
}

/// The input tensor of `values` (one per instance): their common shape
/// after the batch dimension, checked against the signature's, then each
/// element converted to the input's dtype.
fn column(
    api: &'static Api,
    input: &TensorSpec,
    values: &[Given<'_>],
) -> Result<Tensor, PredictError> {
    let bad = |value: &Given<'_>, why: &str| {
        let mut shown = match value {
            Given::Json(v) => v.to_string(),
            Given::Bytes(b) => format!("{} bytes", b.len()),
        };
        if shown.len() > 80 {
            shown = format!("{}…", shown.chars().take(80).collect::<String>());
        }
        // The value goes in the source: errors_stats groups failures by
        // message, the error file keeps the value.
        PredictError::with_source(
            format!("input {:?}: expected {}{why}", input.alias, describe(input)),
            format!("got {shown}"),
        )
    };
    // The batch's shape: the signature's, with each free dimension taken from
    // the first instance (a batch is one tensor: every instance must agree).
    let first = values.first().map(shape_of).unwrap_or_default();
    let shape: Vec<i64> = match input.shape.as_deref() {
        Some(declared) => {
            // One value per instance may come bare (`[N, 1]`): `"red"` as well as `["red"]`.
            if declared == [1] && first.is_empty() {
                vec![]
            } else {
                if declared.len() != first.len() && !values.is_empty() {
                    return Err(bad(&values[0], ""));
                }
                declared
                    .iter()
                    .zip(first.iter().chain(std::iter::repeat(&0)))
                    .map(|(&d, &f)| if d < 0 { f } else { d })
                    .collect()
            }
        }
        None => first,
    };
    let per: usize = shape.iter().map(|&d| d as usize).product();
    let mut dims = Vec::with_capacity(shape.len() + 1);
    dims.push(values.len() as i64);
    dims.extend(
        if input.shape.as_deref() == Some(&[1][..]) && shape.is_empty() {
            vec![1]
        } else {
            shape.clone()
        },
    );
    let mismatch =
        if input.shape.as_deref().is_some_and(|d| d.contains(&-1)) || input.shape.is_none() {
            ", the same for every instance of a batch"
        } else {
            ""
        };
    if input.dtype == DType::String {
        let mut strings: Vec<Cow<'_, [u8]>> = Vec::with_capacity(values.len() * per);
        for value in values {
            if !strings_of(value, &shape, &mut strings)? {
                return Err(bad(value, mismatch));
            }
        }
        return Ok(Tensor::from_strings(
            api,
            &dims,
            strings.iter().map(|s| &s[..]),
        ));
    }
    let mut data = Vec::with_capacity(values.len() * per * input.dtype.size());
    for value in values {
        let Given::Json(v) = value else {
            return Err(bad(value, ""));
        };
        if !numbers_of(v, &shape, input.dtype, &mut data) {
            return Err(bad(value, mismatch));
        }
    }
    Ok(Tensor::from_bytes(api, input.dtype, &dims, &data))
}

/// Appends the strings of `value`, which must have `shape`; `Ok(false)`
/// when it does not; an error for invalid base64.
fn strings_of<'a>(
    value: &Given<'a>,
    shape: &[i64],
    out: &mut Vec<Cow<'a, [u8]>>,
) -> Result<bool, PredictError> {
    match (value, shape.split_first()) {
        (Given::Bytes(b), None) => {
            out.push(Cow::Borrowed(b));
            Ok(true)
        }
        (Given::Bytes(_), Some(_)) => Ok(false),
        (Given::Json(v), None) => match v {
            Value::String(s) => {
                out.push(Cow::Borrowed(s.as_bytes()));
                Ok(true)
            }
            Value::Object(map) if is_b64(map) => {
                let Some(Value::String(text)) = map.get("b64") else {
                    return Ok(false);
                };
                let bytes = crate::model::wire::decode_base64(text)
                    .ok_or_else(|| PredictError::new("invalid base64 in a {\"b64\": …} value"))?;
                out.push(Cow::Owned(bytes));
                Ok(true)
            }
            _ => Ok(false),
        },
        (Given::Json(Value::Array(items)), Some((&n, rest))) if items.len() as i64 == n => {
            for item in items {
                if !strings_of(&Given::Json(item), rest, out)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Appends the elements of `value`, which must have `shape`, as `dtype`'s
/// native bytes; `false` when it does not fit.
fn numbers_of(value: &Value, shape: &[i64], dtype: DType, out: &mut Vec<u8>) -> bool {
    match shape.split_first() {
        None => push_scalar(value, dtype, out),
        Some((&n, rest)) => match value {
            Value::Array(items) if items.len() as i64 == n => {
                items.iter().all(|item| numbers_of(item, rest, dtype, out))
            }
            _ => false,
        },
    }
}

/// Appends one scalar as `dtype`: integers exactly (never from a float),
/// floats from any number (`null` is NaN, the missing value), a float32
/// refused when too large for one.
fn push_scalar(value: &Value, dtype: DType, out: &mut Vec<u8>) -> bool {
    let int = || match value {
        Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
        _ => None,
    };
    let float = || match value {
        Value::Number(n) => n.as_f64(),
        Value::Null => Some(f64::NAN),
        _ => None,
    };
    macro_rules! int_as {
        ($t:ty) => {
            match int().and_then(|i| <$t>::try_from(i).ok()) {
                Some(v) => out.extend_from_slice(&v.to_ne_bytes()),
                None => return false,
            }
        };
    }
    match dtype {
        DType::F32 => match float() {
            Some(x) if x.is_nan() || (x as f32).is_finite() => {
                out.extend_from_slice(&(x as f32).to_ne_bytes())
            }
            _ => return false,
        },
        DType::F64 => match float() {
            Some(x) => out.extend_from_slice(&x.to_ne_bytes()),
            None => return false,
        },
        DType::I8 => int_as!(i8),
        DType::I16 => int_as!(i16),
        DType::I32 => int_as!(i32),
        DType::I64 => int_as!(i64),
        DType::U8 => int_as!(u8),
        DType::U16 => int_as!(u16),
        DType::U32 => int_as!(u32),
        DType::U64 => int_as!(u64),
        DType::Bool => match value {
            Value::Bool(b) => out.push(u8::from(*b)),
            _ => return false,
        },
        DType::String => return false,
    }
    true
}

/// An output tensor's values, row-major, as JSON.
fn output_values(
    tensor: &Tensor,
    spec: &TensorSpec,
    count: usize,
) -> Result<Vec<Value>, PredictError> {
    let (dtype, code) = tensor.dtype();
    let dtype = dtype.ok_or_else(|| {
        PredictError::new(format!(
            "output {:?} is of dtype {code} (TensorFlow's number), which this crate cannot read",
            spec.alias
        ))
    })?;
    if dtype == DType::String {
        // As AI Platform wrote them: an alias ending in `_bytes` as
        // {"b64": …}, others as text (and as {"b64": …} when not UTF-8,
        // which JSON cannot hold as a string).
        let binary = spec.alias.ends_with("_bytes");
        return Ok(tensor
            .strings(count)
            .into_iter()
            .map(|s| match std::str::from_utf8(s) {
                Ok(text) if !binary => Value::String(text.to_owned()),
                _ => crate::record::bytes_to_json(s),
            })
            .collect());
    }
    let bytes = tensor.bytes();
    if bytes.len() != count * dtype.size() {
        return Err(PredictError::new(format!(
            "output {:?}: {} bytes for {count} {dtype} values",
            spec.alias,
            bytes.len()
        )));
    }
    let nonfinite = || {
        PredictError::new(format!(
            "output {:?} holds NaN or an infinity, which JSON cannot hold",
            spec.alias
        ))
    };
    macro_rules! each {
        ($t:ty, $json:expr) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| {
                    let v = <$t>::from_ne_bytes(c.try_into().expect("chunks of the size"));
                    #[allow(clippy::redundant_closure_call)]
                    ($json)(v)
                })
                .collect::<Option<Vec<Value>>>()
                .ok_or_else(nonfinite)
        };
    }
    match dtype {
        DType::F32 => each!(f32, f32_json),
        DType::F64 => each!(f64, |v: f64| Number::from_f64(v).map(Value::Number)),
        DType::I8 => each!(i8, |v: i8| Some(Value::from(v))),
        DType::I16 => each!(i16, |v: i16| Some(Value::from(v))),
        DType::I32 => each!(i32, |v: i32| Some(Value::from(v))),
        DType::I64 => each!(i64, |v: i64| Some(Value::from(v))),
        DType::U8 => each!(u8, |v: u8| Some(Value::from(v))),
        DType::U16 => each!(u16, |v: u16| Some(Value::from(v))),
        DType::U32 => each!(u32, |v: u32| Some(Value::from(v))),
        DType::U64 => each!(u64, |v: u64| Some(Value::from(v))),
        DType::Bool => Ok(bytes.iter().map(|&b| Value::Bool(b != 0)).collect()),
        DType::String => unreachable!("handled above"),
    }
}

impl Predictor for TensorflowPredictor {
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        let n = batch.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let tensors = self.feeds(&batch)?;
        let outputs = self
            .session(ctx.worker())?
            .run(tensors)
            .map_err(|e| PredictError::new(format!("TensorFlow: {e}")))?;
        // Each instance's copied fields, then its outputs.
        let mut predictions: Vec<Map<String, Value>> = batch
            .into_iter()
            .map(|instance| match instance {
                Instance::Json(Value::Object(mut map)) if self.passthrough && !is_b64(&map) => {
                    for input in &self.signature.inputs {
                        map.shift_remove(&input.alias);
                    }
                    map
                }
                _ => Map::new(),
            })
            .collect();
        for (tensor, spec) in outputs.iter().zip(&self.signature.outputs) {
            let dims = tensor.dims();
            if dims.first() != Some(&(n as i64)) {
                return Err(PredictError::new(format!(
                    "output {:?} has shape {}, not one row per instance of a batch of {n}",
                    spec.alias,
                    shown_shape(&dims)
                )));
            }
            let count = dims.iter().product::<i64>().max(0) as usize;
            let inner: Vec<usize> = dims[1..].iter().map(|&d| d.max(0) as usize).collect();
            let values = output_values(tensor, spec, count)?;
            tensor::place(&mut predictions, &spec.alias, values, &inner);
        }
        Ok(predictions.into_iter().map(Value::Object).collect())
    }

    fn takes_raw_records(&self, _format: DataFormat) -> bool {
        self.signature.takes_raw_records()
    }

    /// For a signature of fixed-shape numeric and boolean inputs: reads the
    /// lines' numbers straight into the input tensors and writes the
    /// predictions without building [`Value`]s, exactly as `predict` would.
    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        ctx: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        let Some(inputs) = &self.fast_inputs else {
            return false;
        };
        tensor::predict_lines(lines, inputs, self.passthrough, out, |n, columns| {
            let tensors = columns
                .into_iter()
                .zip(inputs)
                .map(|(column, spec)| self.fed(column, spec, n))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| PredictError::new("a column of another type"))?;
            let outputs = self
                .session(ctx.worker())?
                .run(tensors)
                .map_err(PredictError::new)?;
            outputs
                .iter()
                .zip(&self.signature.outputs)
                .map(|(t, spec)| out_column(t, spec, n))
                .collect()
        })
    }
}

impl TensorflowPredictor {
    /// The input tensor of a column the fast path read.
    fn fed(&self, column: Column, spec: &InputSpec, n: usize) -> Option<Tensor> {
        let mut dims = vec![n as i64];
        dims.extend(spec.shape.iter().map(|&d| d as i64));
        Some(match column {
            Column::F32(v) => Tensor::from_values(self.api, DType::F32, &dims, &v),
            Column::F64(v) => Tensor::from_values(self.api, DType::F64, &dims, &v),
            Column::I32(v) => Tensor::from_values(self.api, DType::I32, &dims, &v),
            Column::I64(v) => Tensor::from_values(self.api, DType::I64, &dims, &v),
            Column::Bool(v) => Tensor::from_values(self.api, DType::Bool, &dims, &v),
            Column::Str(_) => return None,
        })
    }
}

/// The fast path's inputs: the signature's, when each is float32, float64,
/// int32, int64 or bool of a fixed shape after the batch dimension.
fn fast_inputs(signature: &Signature) -> Option<Vec<InputSpec>> {
    signature
        .inputs
        .iter()
        .map(|input| {
            let kind = match input.dtype {
                DType::F32 => Kind::F32,
                DType::F64 => Kind::F64,
                DType::I32 => Kind::I32,
                DType::I64 => Kind::I64,
                DType::Bool => Kind::Bool,
                _ => return None,
            };
            let shape = input
                .shape
                .as_ref()?
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<Vec<usize>>>()?;
            Some(InputSpec {
                name: input.alias.clone(),
                kind,
                shape,
            })
        })
        .collect()
}

/// An output of a batch of `n` for the fast path: float32 values as they
/// are, any other as JSON.
fn out_column<'s>(
    tensor: &Tensor,
    spec: &'s TensorSpec,
    n: usize,
) -> Result<OutColumn<'s>, PredictError> {
    let dims = tensor.dims();
    if dims.first() != Some(&(n as i64)) {
        return Err(PredictError::new(format!(
            "output {:?} has shape {}, not one row per instance of a batch of {n}",
            spec.alias,
            shown_shape(&dims)
        )));
    }
    let inner: Vec<usize> = dims[1..].iter().map(|&d| d.max(0) as usize).collect();
    let count = n * inner.iter().product::<usize>();
    let values = match tensor.dtype().0 {
        Some(DType::F32) if tensor.bytes().len() == count * 4 => OutValues::F32(
            tensor
                .bytes()
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        _ => OutValues::Json(output_values(tensor, spec, count)?),
    };
    Ok(OutColumn {
        name: &spec.alias,
        values,
        inner,
    })
}

/// Loads the SavedModel a job names by `uri` with [`TensorflowPredictor`]:
/// a local folder, `gs://` mapped by the storage's root, or (with
/// [`with_buckets`](Self::with_buckets)) a folder on a bucket, copied to a
/// temporary folder first. The job's `signatureName` picks the signature
/// (`serving_default` by default); its `bp-passthrough` label, whether
/// fields are copied.
#[derive(Clone)]
pub struct TensorflowResolver {
    storage: LocalStorage,
    buckets: Option<Arc<dyn Storage>>,
    options: TensorflowOptions,
}

impl std::fmt::Debug for TensorflowResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorflowResolver")
            .field("storage", &self.storage)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TensorflowResolver {
    /// A resolver reading local paths (and `gs://` mapped) through `storage`.
    pub fn new(storage: LocalStorage) -> Self {
        TensorflowResolver {
            storage,
            buckets: None,
            options: TensorflowOptions::default(),
        }
    }

    /// The same, reading `gs://`, `s3://` and `az://` models from `buckets`.
    #[must_use]
    pub fn with_buckets(mut self, buckets: Arc<dyn Storage>) -> Self {
        self.buckets = Some(buckets);
        self
    }

    /// The same, loading with `options`.
    #[must_use]
    pub fn with_options(mut self, options: TensorflowOptions) -> Self {
        self.options = options;
        self
    }

    /// The model folder at `uri`, copied from its bucket when it is on one.
    fn folder(&self, uri: &str) -> Result<(PathBuf, bool), PredictError> {
        match &self.buckets {
            Some(buckets)
                if ["gs://", "s3://", "az://"]
                    .iter()
                    .any(|s| uri.starts_with(s)) =>
            {
                copy_folder(&**buckets, uri).map(|dir| (dir, true))
            }
            _ => self
                .storage
                .resolve(uri)
                .map(|dir| (dir, false))
                .map_err(|e| PredictError::new(e.to_string())),
        }
    }
}

/// Copies the objects under `uri/` into a new temporary folder.
fn copy_folder(buckets: &dyn Storage, uri: &str) -> Result<PathBuf, PredictError> {
    let prefix = join_location(uri.trim_end_matches('/'), "");
    let objects = buckets
        .list(&prefix)
        .map_err(|e| PredictError::new(e.to_string()))?;
    if !objects
        .iter()
        .any(|o| o.location.ends_with("/saved_model.pb"))
    {
        return Err(PredictError::new(format!(
            "TensorFlow SavedModel {uri}: no saved_model.pb under it"
        )));
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "batch-prediction-savedmodel-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let copy = || -> Result<(), String> {
        for object in &objects {
            let relative = &object.location[prefix.len()..];
            if relative.is_empty() || relative.ends_with('/') {
                continue;
            }
            if relative
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(format!(
                    "{}: not a file name in the model's folder",
                    object.location
                ));
            }
            let path = dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let bytes = buckets
                .read_bytes(&object.location)
                .map_err(|e| e.to_string())?;
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        PredictError::new(format!("TensorFlow SavedModel {uri}: copying it here: {e}"))
    })?;
    Ok(dir)
}

impl crate::predict::ModelResolver for TensorflowResolver {
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        let ModelVersion::Uri(uri) = model else {
            return Err(PredictError::new(format!(
                "the TensorFlow resolver loads models from predictionInput.uri, not {model}"
            )));
        };
        let signature = job
            .prediction_input
            .as_ref()
            .map_or("serving_default", |input| input.effective_signature_name());
        let (dir, copied) = self.folder(uri)?;
        let loaded = TensorflowPredictor::load(&dir, signature, self.options.clone());
        let mut predictor = match loaded {
            Ok(p) => p,
            Err(e) => {
                if copied {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                let local = dir.display().to_string();
                let uri = uri.trim_end_matches('/');
                return Err(if local == uri {
                    e
                } else {
                    PredictError::new(e.to_string().replace(&local, uri))
                });
            }
        };
        if copied {
            predictor.copied = Some(dir.clone());
        }
        Ok(Arc::new(
            predictor.with_passthrough(tensor::passthrough_of(job)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dtype: DType, shape: Option<Vec<i64>>) -> TensorSpec {
        TensorSpec {
            alias: "x".into(),
            operation: "op".into(),
            index: 0,
            dtype,
            shape,
        }
    }

    #[test]
    fn scalars_convert_exactly_or_not_at_all() {
        let mut out = Vec::new();
        assert!(push_scalar(
            &serde_json::json!(9007199254740993u64),
            DType::I64,
            &mut out
        ));
        assert_eq!(
            i64::from_ne_bytes(out[..8].try_into().unwrap()),
            9_007_199_254_740_993
        );
        assert!(!push_scalar(&serde_json::json!(1.5), DType::I64, &mut out));
        assert!(!push_scalar(&serde_json::json!(300), DType::U8, &mut out));
        assert!(!push_scalar(&serde_json::json!(-1), DType::U32, &mut out));
        assert!(!push_scalar(&serde_json::json!(1e39), DType::F32, &mut out));
        assert!(!push_scalar(&serde_json::json!("1"), DType::F32, &mut out));
        assert!(!push_scalar(&serde_json::json!(1), DType::Bool, &mut out));
        out.clear();
        assert!(push_scalar(&Value::Null, DType::F32, &mut out));
        assert!(f32::from_ne_bytes(out[..4].try_into().unwrap()).is_nan());
    }

    #[test]
    fn instances_name_the_input_they_lack() {
        let inputs = vec![
            spec(DType::F32, Some(vec![2])),
            TensorSpec {
                alias: "y".into(),
                ..spec(DType::I64, Some(vec![]))
            },
        ];
        let missing = Instance::Json(serde_json::json!({"x": [1, 2]}));
        let Err(e) = field(&missing, &inputs[1], &inputs) else {
            panic!("a missing field")
        };
        assert!(e.message().contains("no field \"y\""), "{e}");
        let bare = Instance::Json(serde_json::json!([1, 2]));
        let Err(e) = field(&bare, &inputs[0], &inputs) else {
            panic!("a bare value for two inputs")
        };
        assert!(e.message().contains("x, y"), "{e}");
        let bytes = Instance::Bytes(vec![1]);
        assert!(field(&bytes, &inputs[0], &inputs).is_err());
    }

    #[test]
    fn shapes_nest_and_print() {
        let flat = (0..6).map(Value::from);
        assert_eq!(
            crate::tensor::nest(&mut flat.into_iter(), &[2, 3]),
            serde_json::json!([[0, 1, 2], [3, 4, 5]])
        );
        assert_eq!(shown_shape(&[-1, 3]), "[?, 3]");
        assert_eq!(
            shape_of(&Given::Json(&serde_json::json!([[1, 2, 3], [4, 5, 6]]))),
            [2, 3]
        );
    }
}
