//! ONNX models, on two runtimes: the pure-Rust `tract-onnx` (feature
//! `onnx`: [`OnnxPredictor`]) and onnxruntime (feature `ort`:
//! [`OrtPredictor`]). Both read instances and write predictions the same
//! way; this module holds that shared contract, each runtime's file holds
//! only how it loads and runs a model.

use std::sync::Arc;

use serde_json::{Map, Number, Value};

use crate::model::Job;
use crate::predict::PredictError;
use crate::record::Instance;
use crate::storage::{LocalStorage, Storage, StorageErrorKind, StorageExt, join_location};

#[cfg(feature = "ort")]
mod onnxruntime;
#[cfg(feature = "onnx")]
mod tract;

#[cfg(feature = "ort")]
pub use onnxruntime::{OrtOptions, OrtPredictor, OrtResolver};
#[cfg(feature = "onnx")]
pub use tract::{OnnxPredictor, OnnxResolver};

/// The label a job sets to `off` to leave out of its predictions the
/// instance fields that name no model input, which the ONNX predictors
/// (`OnnxPredictor`, `OrtPredictor`) otherwise pass through (a `key`).
pub const PASSTHROUGH_LABEL: &str = "bp-passthrough";

/// Whether `job` keeps the instance fields that name no input.
fn passthrough_of(job: &Job) -> bool {
    job.labels.get(PASSTHROUGH_LABEL).map(String::as_str) != Some("off")
}

/// The element types an input may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F32,
    F64,
    I32,
    I64,
    Bool,
    /// UTF-8 strings (onnxruntime only; tract refuses string inputs).
    #[cfg_attr(not(feature = "ort"), allow(dead_code))]
    Str,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::F32 | Kind::F64 => "numbers",
            Kind::I32 | Kind::I64 => "integers",
            Kind::Bool => "booleans",
            Kind::Str => "strings",
        }
    }
}

/// One model input: its name, element type and shape after the batch dimension.
#[derive(Debug, Clone)]
struct InputSpec {
    name: String,
    kind: Kind,
    shape: Vec<usize>,
}

impl InputSpec {
    fn describe(&self) -> String {
        if self.shape.is_empty() {
            format!("one of {}", self.kind.describe())
        } else if self.shape == [1] {
            format!("one of {} (or an array of one)", self.kind.describe())
        } else {
            format!("{} of shape {:?}", self.kind.describe(), self.shape)
        }
    }
}

/// A column of a batch being gathered for one input, in row-major order.
enum Column {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Column {
    fn new(kind: Kind, capacity: usize) -> Column {
        match kind {
            Kind::F32 => Column::F32(Vec::with_capacity(capacity)),
            Kind::F64 => Column::F64(Vec::with_capacity(capacity)),
            Kind::I32 => Column::I32(Vec::with_capacity(capacity)),
            Kind::I64 => Column::I64(Vec::with_capacity(capacity)),
            Kind::Bool => Column::Bool(Vec::with_capacity(capacity)),
            Kind::Str => Column::Str(Vec::with_capacity(capacity)),
        }
    }

    /// Appends one scalar; `None` when it is not of the column's kind.
    ///
    /// A JSON `null` feeds a float input NaN, the missing value that
    /// imputers and tree models handle; a number too large for an `f32` is
    /// refused rather than turned into an infinity.
    fn push(&mut self, v: &Value) -> Option<()> {
        match self {
            Column::F32(c) => c.push(match v {
                Value::Null => f32::NAN,
                v => Some(v.as_f64()? as f32).filter(|x| x.is_finite())?,
            }),
            Column::F64(c) => c.push(match v {
                Value::Null => f64::NAN,
                v => v.as_f64()?,
            }),
            Column::I32(c) => c.push(i32::try_from(v.as_i64()?).ok()?),
            Column::I64(c) => c.push(v.as_i64()?),
            Column::Bool(c) => c.push(v.as_bool()?),
            Column::Str(c) => c.push(v.as_str()?.to_owned()),
        }
        Some(())
    }
}

/// Appends `value`, which must have `shape`, to `column`.
fn flatten(value: &Value, shape: &[usize], column: &mut Column) -> bool {
    match shape.split_first() {
        None => column.push(value).is_some(),
        Some((&n, rest)) => match value {
            Value::Array(items) if items.len() == n => {
                items.iter().all(|item| flatten(item, rest, column))
            }
            _ => false,
        },
    }
}

/// The JSON values of a batch; binary instances cannot feed a model.
fn json_instances(batch: Vec<Instance>) -> Result<Vec<Value>, PredictError> {
    batch
        .into_iter()
        .map(|instance| match instance {
            Instance::Json(v) => Ok(v),
            Instance::Bytes(_) => Err(PredictError::new(
                "a binary ({\"b64\": …}) instance cannot feed an ONNX model",
            )),
        })
        .collect()
}

/// The value of `input` in `instance`: the field of that name of an
/// object, or the whole instance for a model of one input.
fn field<'v>(
    instance: &'v Value,
    input: &InputSpec,
    inputs: &[InputSpec],
) -> Result<&'v Value, PredictError> {
    match instance {
        Value::Object(map) => map.get(&input.name).ok_or_else(|| {
            PredictError::new(format!(
                "the instance has no field {:?} for the model's input of that name (expected {})",
                input.name,
                input.describe()
            ))
        }),
        other if inputs.len() == 1 => Ok(other),
        _ => Err(PredictError::new(format!(
            "the model has {} inputs ({}): an instance must be an object with a field for each",
            inputs.len(),
            inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The column of `input` over `values`; an error naming the input and what
/// it expected at the first instance that does not fit.
fn gather(
    values: &[Value],
    input: &InputSpec,
    inputs: &[InputSpec],
) -> Result<Column, PredictError> {
    let per_instance: usize = input.shape.iter().product();
    let mut column = Column::new(input.kind, values.len() * per_instance);
    for value in values {
        let field = field(value, input, inputs)?;
        // One value per instance (`[N, 1]`, as converters declare each
        // column of a table) may come bare: `"red"` as well as `["red"]`.
        let shape = match (&input.shape[..], field) {
            ([1], v) if !v.is_array() => &[][..],
            (shape, _) => shape,
        };
        if !flatten(field, shape, &mut column) {
            let mut shown = field.to_string();
            if shown.len() > 80 {
                shown = format!("{}…", shown.chars().take(80).collect::<String>());
            }
            // The value goes in the source: errors_stats groups failures by
            // message, the error file keeps the value.
            return Err(PredictError::with_source(
                format!("input {:?}: expected {}", input.name, input.describe()),
                format!("got {shown}"),
            ));
        }
    }
    Ok(column)
}

/// Each instance's prediction before the outputs go in: with passthrough,
/// the fields of an object instance that name no input. The instance's own
/// map becomes its prediction, its inputs taken out (in order), so nothing
/// is copied.
fn passthrough_fields(
    values: Vec<Value>,
    inputs: &[InputSpec],
    passthrough: bool,
) -> Vec<Map<String, Value>> {
    values
        .into_iter()
        .map(|v| match v {
            Value::Object(mut map) if passthrough => {
                for input in inputs {
                    map.shift_remove(&input.name);
                }
                map
            }
            _ => Map::new(),
        })
        .collect()
}

/// Puts one output, whose row-major `column` holds `inner`-shaped values
/// per instance, into each instance's prediction. One value per instance
/// (`inner` `[]` or `[1]`, the `[N, 1]` column converters give a
/// regressor's value or a label) is a bare JSON value, as the original
/// library's `predict` returns it; any other shape nests arrays.
fn place(predictions: &mut [Map<String, Value>], name: &str, column: Vec<Value>, inner: &[usize]) {
    let inner = if inner == [1] { &[][..] } else { inner };
    let mut values = column.into_iter();
    for prediction in predictions {
        prediction.insert(name.to_owned(), nest(&mut values, inner));
    }
}

/// The next values of a row-major output, nested as `shape`.
fn nest(values: &mut impl Iterator<Item = Value>, shape: &[usize]) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(values, rest)).collect()),
    }
}

/// The shortest decimal that reads back as this f32, as a JSON number;
/// `None` for NaN and infinities, which JSON cannot hold.
fn f32_json(v: f32) -> Option<Value> {
    if !v.is_finite() {
        return None;
    }
    zmij::Buffer::new()
        .format_finite(v)
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

fn f64_json(v: f64) -> Option<Value> {
    Number::from_f64(v).map(Value::Number)
}

/// JSON numbers of float outputs; an error naming the output for NaN or
/// an infinity, which JSON cannot hold.
fn finite<T: Copy>(
    values: impl IntoIterator<Item = T>,
    json: fn(T) -> Option<Value>,
    name: &str,
) -> Result<Vec<Value>, PredictError> {
    values
        .into_iter()
        .map(|v| {
            json(v).ok_or_else(|| {
                PredictError::new(format!(
                    "output {name:?} holds NaN or an infinity, which JSON cannot hold"
                ))
            })
        })
        .collect()
}

/// Checks that an output's first dimension is the batch.
fn batch_first<'s>(shape: &'s [usize], n: usize, name: &str) -> Result<&'s [usize], PredictError> {
    match shape.split_first() {
        Some((&first, inner)) if first == n => Ok(inner),
        _ => Err(PredictError::new(format!(
            "output {name:?} has shape {shape:?}, not a batch of {n} first"
        ))),
    }
}

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
    /// The model at `uri`: on a bucket when it is `gs://` or `s3://` and
    /// buckets were given, otherwise a local path.
    fn find(&self, uri: &str) -> Result<ModelFile, PredictError> {
        match &self.buckets {
            Some(buckets) if uri.starts_with("gs://") || uri.starts_with("s3://") => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_outputs_print_as_the_shortest_decimal_that_reads_back() {
        for (v, shown) in [
            (0.1f32, "0.1"),
            (0.323_869_38, "0.32386938"),
            (-2.5, "-2.5"),
            (3.0e38, "3e+38"),
            (f32::MAX, "3.4028235e+38"),
            (1.0e-45, "1e-45"),
            (f32::MIN_POSITIVE, "1.1754944e-38"),
            (16_777_216.0, "16777216.0"),
            (0.0, "0.0"),
        ] {
            let json = f32_json(v).unwrap();
            assert_eq!(json.as_f64().unwrap() as f32, v, "{v:e} reads back");
            assert_eq!(json.to_string(), shown, "{v:e}");
        }
        // Every exponent and many mantissas read back exactly.
        for bits in (0..u32::MAX).step_by(9_973) {
            let v = f32::from_bits(bits);
            match f32_json(v) {
                Some(json) => assert_eq!(json.as_f64().unwrap() as f32, v, "{bits:#x}"),
                None => assert!(!v.is_finite(), "{bits:#x}"),
            }
        }
        assert_eq!(f32_json(f32::NAN), None);
        assert_eq!(f32_json(f32::NEG_INFINITY), None);
    }
}
