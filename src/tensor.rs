//! The tensor contract the in-process model runtimes share (ONNX on tract
//! and onnxruntime, TensorFlow): instances read into input columns, from
//! [`Value`]s or straight from JSON lines' text, and output columns written
//! back as predictions. Each runtime's own module holds only how it loads
//! and runs a model.

// The TensorFlow predictor shares the JSON-lines fast path; the slow path
// from `Value`s here is the ONNX predictors' (TensorFlow's reads strings and
// free dimensions too, in its own module).
#![cfg_attr(not(any(feature = "onnx", feature = "ort")), allow(dead_code))]

use serde_json::{Map, Number, Value};

use crate::model::Job;
use crate::predict::{JsonPredictions, PASSTHROUGH_LABEL, PredictError};
use crate::record::Instance;

/// Whether `job` keeps the instance fields that name no input.
pub(crate) fn passthrough_of(job: &Job) -> bool {
    job.labels.get(PASSTHROUGH_LABEL).map(String::as_str) != Some("off")
}

/// The element types an input may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
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
pub(crate) struct InputSpec {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) shape: Vec<usize>,
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
pub(crate) enum Column {
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
        self.push_scalar(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Scalar::U64(u),
                (None, Some(i)) => Scalar::I64(i),
                _ => Scalar::F64(n.as_f64()?),
            },
            Value::String(s) => Scalar::Str(s),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    /// Appends one scalar, from a [`Value`] or straight from the text: one
    /// rule for both paths.
    fn push_scalar(&mut self, v: Scalar<'_>) -> Option<()> {
        let as_f64 = || match v {
            Scalar::F64(x) => Some(x),
            Scalar::U64(u) => Some(u as f64),
            Scalar::I64(i) => Some(i as f64),
            _ => None,
        };
        let as_i64 = || match v {
            Scalar::U64(u) => i64::try_from(u).ok(),
            Scalar::I64(i) => Some(i),
            _ => None,
        };
        match self {
            Column::F32(c) => c.push(match v {
                Scalar::Null => f32::NAN,
                _ => Some(as_f64()? as f32).filter(|x| x.is_finite())?,
            }),
            Column::F64(c) => c.push(match v {
                Scalar::Null => f64::NAN,
                _ => as_f64()?,
            }),
            Column::I32(c) => c.push(i32::try_from(as_i64()?).ok()?),
            Column::I64(c) => c.push(as_i64()?),
            Column::Bool(c) => match v {
                Scalar::Bool(b) => c.push(b),
                _ => return None,
            },
            Column::Str(c) => match v {
                Scalar::Str(s) => c.push(s.to_owned()),
                _ => return None,
            },
        }
        Some(())
    }
}

/// A JSON scalar, as an input column takes it.
#[derive(Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
}

/// Appends `value`, which must have `shape`, to `column`.
pub(crate) fn flatten(value: &Value, shape: &[usize], column: &mut Column) -> bool {
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
pub(crate) fn json_instances(batch: Vec<Instance>) -> Result<Vec<Value>, PredictError> {
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
pub(crate) fn field<'v>(
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
pub(crate) fn gather(
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
pub(crate) fn passthrough_fields(
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
/// per instance, into each instance's prediction: a bare value for `[]`,
/// nested arrays otherwise.
pub(crate) fn place(
    predictions: &mut [Map<String, Value>],
    name: &str,
    column: Vec<Value>,
    inner: &[usize],
) {
    let mut values = column.into_iter();
    for prediction in predictions {
        prediction.insert(name.to_owned(), nest(&mut values, inner));
    }
}

/// The shape after the batch dimension that the ONNX predictors write: one
/// value per instance (`[1]`, the `[N, 1]` column converters give a
/// regressor's value or a label) as a bare JSON value, as the original
/// library's `predict` returns it.
pub(crate) fn onnx_inner(inner: &[usize]) -> Vec<usize> {
    if inner == [1] {
        Vec::new()
    } else {
        inner.to_vec()
    }
}

/// The next values of a row-major output, nested as `shape`.
pub(crate) fn nest(values: &mut impl Iterator<Item = Value>, shape: &[usize]) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(values, rest)).collect()),
    }
}

/// The shortest decimal that reads back as this f32, as a JSON number;
/// `None` for NaN and infinities, which JSON cannot hold.
pub(crate) fn f32_json(v: f32) -> Option<Value> {
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

pub(crate) fn f64_json(v: f64) -> Option<Value> {
    Number::from_f64(v).map(Value::Number)
}

/// JSON numbers of float outputs; an error naming the output for NaN or
/// an infinity, which JSON cannot hold.
pub(crate) fn finite<T: Copy>(
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

/// An output's values for a batch, row-major: `f32`s as the model gave
/// them (the common case, written without a [`Value`] on the fast path),
/// anything else as JSON already.
pub(crate) enum OutValues {
    F32(Vec<f32>),
    Json(Vec<Value>),
}

/// One output of a batch: its name, values and shape after the batch
/// dimension.
pub(crate) struct OutColumn<'n> {
    pub(crate) name: &'n str,
    pub(crate) values: OutValues,
    pub(crate) inner: Vec<usize>,
}

impl OutValues {
    /// The values as JSON; an error naming output `name` for NaN or an
    /// infinity.
    fn into_json(self, name: &str) -> Result<Vec<Value>, PredictError> {
        match self {
            OutValues::F32(v) => finite(v, f32_json, name),
            OutValues::Json(v) => Ok(v),
        }
    }
}

/// The slow path's predictions: each instance's passthrough fields
/// (`values` being the batch's instances), then the outputs.
pub(crate) fn predictions_of(
    values: Vec<Value>,
    inputs: &[InputSpec],
    passthrough: bool,
    outputs: Vec<OutColumn<'_>>,
) -> Result<Vec<Value>, PredictError> {
    let mut predictions = passthrough_fields(values, inputs, passthrough);
    for OutColumn {
        name,
        values,
        inner,
    } in outputs
    {
        place(&mut predictions, name, values.into_json(name)?, &inner);
    }
    Ok(predictions.into_iter().map(Value::Object).collect())
}

/// The fast path of both ONNX predictors
/// ([`Predictor::predict_json_lines`](crate::Predictor::predict_json_lines)):
/// reads `lines` into input columns, runs them through `infer` (the
/// runtime's batch of `n` instances) and writes the predictions to `out`;
/// `false` wherever the slow path must take the batch.
pub(crate) fn predict_lines<'n>(
    lines: &[&[u8]],
    inputs: &[InputSpec],
    passthrough: bool,
    out: &mut JsonPredictions<'_>,
    infer: impl FnOnce(usize, Vec<Column>) -> Result<Vec<OutColumn<'n>>, PredictError>,
) -> bool {
    let Some(mut batch) = read_lines(lines, inputs, passthrough) else {
        return false;
    };
    infer(lines.len(), std::mem::take(&mut batch.columns))
        .ok()
        .and_then(|outputs| write_lines(&batch, &outputs, out))
        .is_some()
}

/// A batch of JSON lines read for the fast path
/// ([`Predictor::predict_json_lines`](crate::Predictor::predict_json_lines)):
/// the input columns, filled straight from the text, and each instance's
/// passthrough fields (instance `i`'s are `fields[ends[i - 1]..ends[i]]`,
/// each naming its field by index in `names`).
pub(crate) struct LineBatch {
    columns: Vec<Column>,
    names: Vec<String>,
    fields: Vec<(usize, Value)>,
    ends: Vec<usize>,
}

/// Reads `lines` as the slow path would decode and [`gather`] them; `None`
/// for any line it would not read exactly so (invalid JSON, a missing,
/// repeated or ill-shaped input, a `b64` field, a repeated field), which
/// leaves the batch to the slow path and its errors.
pub(crate) fn read_lines(
    lines: &[&[u8]],
    inputs: &[InputSpec],
    passthrough: bool,
) -> Option<LineBatch> {
    if inputs.is_empty() || inputs.len() > 64 {
        return None;
    }
    let mut batch = LineBatch {
        columns: inputs
            .iter()
            .map(|input| {
                Column::new(
                    input.kind,
                    lines.len() * input.shape.iter().product::<usize>(),
                )
            })
            .collect(),
        names: Vec::new(),
        fields: Vec::new(),
        ends: Vec::with_capacity(lines.len()),
    };
    for line in lines {
        let mut de = serde_json::Deserializer::from_slice(line);
        let object = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let read = if object {
            let start = batch.fields.len();
            serde::de::DeserializeSeed::deserialize(
                ObjectSeed {
                    inputs,
                    columns: &mut batch.columns,
                    kept: passthrough.then_some((&mut batch.names, &mut batch.fields, start)),
                },
                &mut de,
            )
        } else if inputs.len() == 1 {
            // A model of one input takes the whole instance.
            serde::de::DeserializeSeed::deserialize(
                FieldSeed {
                    shape: &inputs[0].shape,
                    top: true,
                    column: &mut batch.columns[0],
                },
                &mut de,
            )
        } else {
            return None;
        };
        read.ok()?;
        de.end().ok()?;
        batch.ends.push(batch.fields.len());
    }
    Some(batch)
}

/// A field name of an instance: an input's index, or another field's
/// index in the batch's names (`None` when it is not kept).
pub(crate) enum Key {
    Input(usize),
    Other(Option<usize>),
}

/// Reads a field name; other fields' names go into `names` once per batch.
pub(crate) struct KeySeed<'a> {
    inputs: &'a [InputSpec],
    names: Option<&'a mut Vec<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
        if let Some(i) = self.inputs.iter().position(|input| input.name == key) {
            return Ok(Key::Input(i));
        }
        // `{"b64": …}` alone is a binary instance: the slow path's.
        if key == "b64" {
            return Err(E::custom("a b64 field"));
        }
        Ok(Key::Other(self.names.map(|names| {
            names.iter().position(|n| n == key).unwrap_or_else(|| {
                names.push(key.to_owned());
                names.len() - 1
            })
        })))
    }
}

/// An object instance: its inputs into their columns, its other fields
/// into `kept` (with passthrough: the batch's names and fields, and where
/// this instance's fields start) or parsed and dropped.
pub(crate) struct ObjectSeed<'a> {
    inputs: &'a [InputSpec],
    columns: &'a mut [Column],
    kept: Option<Kept<'a>>,
}

/// Where an instance's passthrough fields go: the batch's names and
/// fields, and where this instance's fields start.
type Kept<'a> = (&'a mut Vec<String>, &'a mut Vec<(usize, Value)>, usize);

impl<'de> serde::de::DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an instance object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let mut seen = 0u64;
        loop {
            let key = KeySeed {
                inputs: self.inputs,
                names: self.kept.as_mut().map(|(names, _, _)| &mut **names),
            };
            let Some(key) = map.next_key_seed(key)? else {
                break;
            };
            match key {
                Key::Input(i) => {
                    if seen & (1 << i) != 0 {
                        return Err(A::Error::custom("a repeated input"));
                    }
                    seen |= 1 << i;
                    map.next_value_seed(FieldSeed {
                        shape: &self.inputs[i].shape,
                        top: true,
                        column: &mut self.columns[i],
                    })?;
                }
                Key::Other(name) => {
                    // Parsed in full even when dropped: the slow path
                    // refuses what `Value` refuses (a lone surrogate).
                    let value: Value = map.next_value()?;
                    if let (Some(name), Some((_, fields, start))) = (name, self.kept.as_mut()) {
                        if fields[*start..].iter().any(|(n, _)| *n == name) {
                            return Err(A::Error::custom("a repeated field"));
                        }
                        fields.push((name, value));
                    }
                }
            }
        }
        let all = if self.inputs.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.inputs.len()) - 1
        };
        if seen != all {
            return Err(A::Error::custom("a missing input"));
        }
        Ok(())
    }
}

/// One input's value, of `shape`, appended to `column` as [`flatten`] and
/// [`Column::push`] do; `top` for the field itself, where one value per
/// instance (shape `[1]`) may come bare.
pub(crate) struct FieldSeed<'a> {
    shape: &'a [usize],
    top: bool,
    column: &'a mut Column,
}

impl FieldSeed<'_> {
    /// Appends a scalar, if the shape wants one here: `Err` otherwise.
    fn scalar<E: serde::de::Error>(self, v: Scalar<'_>) -> Result<(), E> {
        let scalar_here = self.shape.is_empty() || (self.top && self.shape == [1]);
        if scalar_here && self.column.push_scalar(v).is_some() {
            Ok(())
        } else {
            Err(E::custom("not the input's type or shape"))
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an input value")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let Some((&n, rest)) = self.shape.split_first() else {
            return Err(A::Error::custom("an array where a scalar goes"));
        };
        let mut count = 0;
        while count <= n {
            let element = FieldSeed {
                shape: rest,
                top: false,
                column: &mut *self.column,
            };
            if seq.next_element_seed(element)?.is_none() {
                break;
            }
            count += 1;
        }
        if count == n {
            Ok(())
        } else {
            Err(A::Error::custom("an array of another length"))
        }
    }

    // The scalars, by the rule of `Column::push_scalar`.
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::U64(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::I64(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::F64(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }
}

/// Writes each instance's prediction, as the slow path's [`Value`] would be
/// written, to `out`; `None` (with part of it written, to be discarded)
/// where the slow path would differ or fail: a passthrough field named as
/// an output, NaN or an infinity, an output of an unexpected length.
pub(crate) fn write_lines(
    batch: &LineBatch,
    outputs: &[OutColumn<'_>],
    out: &mut JsonPredictions<'_>,
) -> Option<()> {
    let n = batch.ends.len();
    // Each name as written, `"name":`, once per batch.
    let key = |name: &str| {
        let mut text = serde_json::to_vec(name).ok()?;
        text.push(b':');
        Some(text)
    };
    let mut names = Vec::with_capacity(batch.names.len());
    for name in &batch.names {
        // The slow path would put the output in this field's place.
        if outputs.iter().any(|o| o.name == name) {
            return None;
        }
        names.push(key(name)?);
    }
    let mut columns = Vec::with_capacity(outputs.len());
    for output in outputs {
        let inner = &output.inner[..];
        let width: usize = inner.iter().product();
        let len = match &output.values {
            OutValues::F32(v) => v.len(),
            OutValues::Json(v) => v.len(),
        };
        if len != n * width {
            return None;
        }
        columns.push((key(output.name)?, inner, width));
    }
    let mut start = 0;
    for (row, &end) in batch.ends.iter().enumerate() {
        let buf = out.begin();
        buf.push(b'{');
        let mut first = true;
        let mut comma = |buf: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
        };
        for (name, value) in &batch.fields[start..end] {
            comma(buf);
            buf.extend_from_slice(&names[*name]);
            serde_json::to_writer(&mut *buf, value).ok()?;
        }
        start = end;
        for (output, (key, inner, width)) in outputs.iter().zip(&columns) {
            comma(buf);
            buf.extend_from_slice(key);
            let range = row * width..(row + 1) * width;
            match &output.values {
                OutValues::F32(v) => nested(buf, &v[range], inner, &write_f32)?,
                OutValues::Json(v) => nested(buf, &v[range], inner, &|buf, v| {
                    serde_json::to_writer(buf, v).ok()
                })?,
            }
        }
        buf.push(b'}');
    }
    Some(())
}

/// Writes `values` as JSON nested as `shape` (a bare value for `[]`).
pub(crate) fn nested<T>(
    buf: &mut Vec<u8>,
    values: &[T],
    shape: &[usize],
    write: &impl Fn(&mut Vec<u8>, &T) -> Option<()>,
) -> Option<()> {
    match shape.split_first() {
        None => write(buf, values.first()?),
        Some((&n, rest)) => {
            buf.push(b'[');
            let step: usize = rest.iter().product();
            for i in 0..n {
                if i > 0 {
                    buf.push(b',');
                }
                nested(buf, &values[i * step..(i + 1) * step], rest, write)?;
            }
            buf.push(b']');
            Some(())
        }
    }
}

/// An `f32` output value as the slow path writes it: the shortest decimal
/// that reads back ([`f32_json`]) laid out as `serde_json` lays out an
/// `f64`; `None` for NaN and infinities.
///
/// zmij lays out an `f32` as it does an `f64` except between 1e-7 and 1e-5,
/// and for exponents (checked over every finite `f32` when this was
/// written, and on a sample in the tests): those go the slow way.
pub(crate) fn write_f32(buf: &mut Vec<u8>, v: &f32) -> Option<()> {
    if !v.is_finite() {
        return None;
    }
    let mut b = zmij::Buffer::new();
    let text = b.format_finite(*v);
    if text.contains('e') || text.trim_start_matches('-').starts_with("0.0000") {
        serde_json::to_writer(buf, &f32_json(*v)?).ok()
    } else {
        buf.extend_from_slice(text.as_bytes());
        Some(())
    }
}

/// Checks that an output's first dimension is the batch.
pub(crate) fn batch_first<'s>(
    shape: &'s [usize],
    n: usize,
    name: &str,
) -> Result<&'s [usize], PredictError> {
    match shape.split_first() {
        Some((&first, inner)) if first == n => Ok(inner),
        _ => Err(PredictError::new(format!(
            "output {name:?} has shape {shape:?}, not a batch of {n} first"
        ))),
    }
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

    /// `write_f32` writes what the slow path's `Value` writes.
    fn check_f32_text(bits: u32) {
        let v = f32::from_bits(bits);
        let mut fast = Vec::new();
        match f32_json(v) {
            Some(json) => {
                write_f32(&mut fast, &v).unwrap();
                assert_eq!(
                    std::str::from_utf8(&fast).unwrap(),
                    serde_json::to_string(&json).unwrap(),
                    "{bits:#x}"
                );
            }
            None => assert_eq!(write_f32(&mut fast, &v), None, "{bits:#x}"),
        }
    }

    #[test]
    fn f32_outputs_are_written_as_their_json_values_are() {
        for bits in (0..u32::MAX).step_by(4_099) {
            check_f32_text(bits);
        }
        // Where zmij lays out an f32 unlike an f64: 1e-7 to 1e-5, exponents.
        for v in [
            1e-6f32,
            1.0000001e-6,
            9.999999e-6,
            1e-5,
            1.2e-5,
            1e-7,
            1e16,
            1e17,
            3e38,
            -1e-6,
        ] {
            check_f32_text(v.to_bits());
        }
    }

    /// Every f32, about 10 minutes on one core:
    /// `cargo test --release --features onnx -- --ignored every_f32`.
    #[test]
    #[ignore = "exhaustive; run by hand when write_f32 or zmij changes"]
    fn every_f32_output_is_written_as_its_json_value_is() {
        for bits in 0..=u32::MAX {
            check_f32_text(bits);
        }
    }
}
