//! A SavedModel's signatures, read from the `MetaGraphDef` that
//! `TF_LoadSessionFromSavedModel` hands back: the subset of TensorFlow's
//! protos (`meta_graph.proto`, `tensor_shape.proto`) that names each
//! signature's inputs and outputs, their graph tensors, dtypes and shapes.

use std::collections::BTreeMap;
use std::fmt;

/// `MetaGraphDef`: only `signature_def` (field 5) is read; every other
/// field is skipped by the decoder.
#[derive(Clone, PartialEq, prost::Message)]
struct MetaGraphDef {
    #[prost(message, optional, tag = "2")]
    graph_def: Option<GraphDef>,
    #[prost(btree_map = "string, message", tag = "5")]
    signature_def: BTreeMap<String, SignatureDef>,
}

/// `GraphDef`: its nodes (field 1).
#[derive(Clone, PartialEq, prost::Message)]
struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeDef>,
}

/// `NodeDef`: only its op type (field 2).
#[derive(Clone, PartialEq, prost::Message)]
struct NodeDef {
    #[prost(string, tag = "2")]
    op: String,
}

/// What a SavedModel's MetaGraphDef says: its signatures, by name, and
/// whether its graph holds variables (which must then be restored from
/// `variables/`).
pub(super) struct MetaGraph {
    pub signatures: BTreeMap<String, RawSignature>,
    pub has_variables: bool,
}

/// `SignatureDef`.
#[derive(Clone, PartialEq, prost::Message)]
struct SignatureDef {
    #[prost(btree_map = "string, message", tag = "1")]
    inputs: BTreeMap<String, TensorInfo>,
    #[prost(btree_map = "string, message", tag = "2")]
    outputs: BTreeMap<String, TensorInfo>,
    #[prost(string, tag = "3")]
    method_name: String,
}

/// `TensorInfo`: a dense tensor's `name` (field 1 of the `encoding`
/// oneof); a sparse (4) or composite (5) tensor has no name here.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorInfo {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, tag = "2")]
    dtype: i32,
    #[prost(message, optional, tag = "3")]
    tensor_shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    unknown_rank: bool,
}

/// `TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

/// The element types a signature's tensors may have here (`TF_DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DType {
    /// `DT_FLOAT`.
    F32,
    /// `DT_DOUBLE`.
    F64,
    /// `DT_INT8`.
    I8,
    /// `DT_INT16`.
    I16,
    /// `DT_INT32`.
    I32,
    /// `DT_INT64`.
    I64,
    /// `DT_UINT8`.
    U8,
    /// `DT_UINT16`.
    U16,
    /// `DT_UINT32`.
    U32,
    /// `DT_UINT64`.
    U64,
    /// `DT_BOOL`.
    Bool,
    /// `DT_STRING`: bytes, UTF-8 or not.
    String,
}

impl DType {
    /// The type of a `TF_DataType` / `DataType` number; `None` for one this
    /// crate does not feed or read (half floats, complex, resources, …).
    pub(super) fn from_tf(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::F64,
            3 => DType::I32,
            4 => DType::U8,
            5 => DType::I16,
            6 => DType::I8,
            7 => DType::String,
            9 => DType::I64,
            10 => DType::Bool,
            17 => DType::U16,
            22 => DType::U32,
            23 => DType::U64,
            _ => return None,
        })
    }

    /// The `TF_DataType` number.
    pub(super) fn tf_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::I32 => 3,
            DType::U8 => 4,
            DType::I16 => 5,
            DType::I8 => 6,
            DType::String => 7,
            DType::I64 => 9,
            DType::Bool => 10,
            DType::U16 => 17,
            DType::U32 => 22,
            DType::U64 => 23,
        }
    }

    /// Bytes per element (a `TF_TString` for strings).
    pub(super) fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::String => 24,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
        })
    }
}

/// One input or output of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorSpec {
    /// Its alias: the key instances and predictions use.
    pub alias: String,
    /// The graph operation it is an output of (`serving_default_x`).
    pub operation: String,
    /// Which output of that operation (`:0`).
    pub index: i32,
    /// Its element type.
    pub dtype: DType,
    /// Its shape after the batch dimension; `-1` where any size goes;
    /// `None` when the signature does not say (unknown rank).
    pub shape: Option<Vec<i64>>,
}

/// One signature of a SavedModel: its inputs and outputs, by alias in
/// alphabetical order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Signature {
    /// Its name (`serving_default`).
    pub name: String,
    /// Its inputs.
    pub inputs: Vec<TensorSpec>,
    /// Its outputs.
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Whether the signature takes each record as it is: its one input is
    /// a string tensor of one string per instance (a serialized
    /// `tf.train.Example`, a line of text).
    pub fn takes_raw_records(&self) -> bool {
        matches!(&self.inputs[..], [only] if only.dtype == DType::String
            && only.shape.as_deref().is_none_or(<[i64]>::is_empty))
    }
}

/// What a `MetaGraphDef` (serialized) says: its signatures, leaving out
/// TensorFlow's own (`__saved_model_init_op`), and whether it has variables.
pub(super) fn meta_graph(meta_graph_def: &[u8]) -> Result<MetaGraph, String> {
    let meta: MetaGraphDef = prost::Message::decode(meta_graph_def)
        .map_err(|e| format!("the SavedModel's MetaGraphDef cannot be read: {e}"))?;
    let has_variables = meta.graph_def.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| matches!(n.op.as_str(), "VarHandleOp" | "VariableV2" | "Variable"))
    });
    Ok(MetaGraph {
        signatures: meta
            .signature_def
            .into_iter()
            .filter(|(name, _)| !name.starts_with("__"))
            .map(|(name, def)| (name, RawSignature(def)))
            .collect(),
        has_variables,
    })
}

/// The signatures of a `MetaGraphDef`, by name.
#[cfg(test)]
fn signatures(meta_graph_def: &[u8]) -> Result<BTreeMap<String, RawSignature>, String> {
    meta_graph(meta_graph_def).map(|m| m.signatures)
}

/// A signature as the proto has it, checked by [`RawSignature::check`].
#[derive(Debug)]
pub(super) struct RawSignature(SignatureDef);

impl RawSignature {
    /// The signature, or why this crate cannot run it: a sparse or
    /// composite tensor, a dtype it does not handle, an input without a
    /// batch dimension, a malformed tensor name.
    pub fn check(self, name: &str) -> Result<Signature, String> {
        let specs = |map: BTreeMap<String, TensorInfo>, kind: &str| {
            map.into_iter()
                .map(|(alias, info)| spec(name, kind, alias, info))
                .collect::<Result<Vec<_>, String>>()
        };
        let inputs = specs(self.0.inputs, "input")?;
        let outputs = specs(self.0.outputs, "output")?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(format!(
                "signature {name:?} has no {}",
                if inputs.is_empty() {
                    "inputs"
                } else {
                    "outputs"
                }
            ));
        }
        Ok(Signature {
            name: name.to_owned(),
            inputs,
            outputs,
        })
    }
}

fn spec(
    signature: &str,
    kind: &str,
    alias: String,
    info: TensorInfo,
) -> Result<TensorSpec, String> {
    let place = || format!("signature {signature:?}, {kind} {alias:?}");
    let Some(tensor) = info.name else {
        return Err(format!(
            "{}: a sparse or composite tensor, which this crate cannot feed or read",
            place()
        ));
    };
    let (operation, index) = match tensor.rsplit_once(':') {
        Some((op, i)) => (op.to_owned(), i.parse::<i32>().ok()),
        None => (tensor.clone(), Some(0)),
    };
    let index = index.ok_or_else(|| format!("{}: malformed tensor name {tensor:?}", place()))?;
    let dtype = DType::from_tf(info.dtype).ok_or_else(|| {
        format!(
            "{}: dtype {} (TensorFlow's DataType number), which this crate cannot feed or read",
            place(),
            info.dtype
        )
    })?;
    let shape = match info.tensor_shape {
        None => None,
        Some(shape) if shape.unknown_rank => None,
        Some(shape) => {
            let Some((batch, rest)) = shape.dim.split_first() else {
                return Err(format!(
                    "{}: a scalar, with no batch dimension; batch prediction needs one",
                    place()
                ));
            };
            if batch.size > 1 {
                return Err(format!(
                    "{}: its first dimension is fixed at {}, not a batch dimension",
                    place(),
                    batch.size
                ));
            }
            Some(rest.iter().map(|d| d.size.max(-1)).collect())
        }
    };
    Ok(TensorSpec {
        alias,
        operation,
        index,
        dtype,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn info(name: &str, dtype: i32, dims: &[i64]) -> TensorInfo {
        TensorInfo {
            name: Some(name.to_owned()),
            dtype,
            tensor_shape: Some(TensorShapeProto {
                dim: dims.iter().map(|&size| Dim { size }).collect(),
                unknown_rank: false,
            }),
        }
    }

    fn encoded(inputs: Vec<(&str, TensorInfo)>, outputs: Vec<(&str, TensorInfo)>) -> Vec<u8> {
        let def = SignatureDef {
            inputs: inputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            outputs: outputs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            method_name: "tensorflow/serving/predict".into(),
        };
        MetaGraphDef {
            graph_def: None,
            signature_def: [
                ("serving_default".to_owned(), def.clone()),
                ("__saved_model_init_op".to_owned(), def),
            ]
            .into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn signatures_name_their_tensors_dtypes_and_shapes() {
        let bytes = encoded(
            vec![("x", info("serving_default_x:0", 1, &[-1, 4]))],
            vec![("y", info("StatefulPartitionedCall:1", 9, &[-1]))],
        );
        let all = signatures(&bytes).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["serving_default"]);
        let sig = all
            .into_values()
            .next()
            .unwrap()
            .check("serving_default")
            .unwrap();
        assert_eq!(sig.inputs[0].operation, "serving_default_x");
        assert_eq!(sig.inputs[0].shape, Some(vec![4]));
        assert_eq!(
            (sig.outputs[0].index, sig.outputs[0].dtype),
            (1, DType::I64)
        );
        assert!(!sig.takes_raw_records());
    }

    #[test]
    fn what_cannot_run_is_named() {
        let check = |input: TensorInfo| {
            let bytes = encoded(vec![("in", input)], vec![("out", info("o:0", 1, &[-1]))]);
            let raw = signatures(&bytes)
                .unwrap()
                .remove("serving_default")
                .unwrap();
            raw.check("serving_default").unwrap_err()
        };
        let sparse = TensorInfo {
            name: None,
            ..info("", 1, &[-1])
        };
        assert!(check(sparse).contains("sparse or composite"));
        assert!(check(info("a:0", 19, &[-1])).contains("dtype 19"));
        assert!(check(info("a:0", 1, &[])).contains("no batch dimension"));
        assert!(check(info("a:0", 1, &[3, 2])).contains("fixed at 3"));
        assert!(check(info("a:x", 1, &[-1])).contains("malformed tensor name"));
        assert!(
            signatures(b"\xff\xff")
                .unwrap_err()
                .contains("MetaGraphDef")
        );
    }

    #[test]
    fn one_string_per_instance_takes_raw_records() {
        let bytes = encoded(
            vec![("examples", info("e:0", 7, &[-1]))],
            vec![("out", info("o:0", 1, &[-1]))],
        );
        let raw = signatures(&bytes)
            .unwrap()
            .remove("serving_default")
            .unwrap();
        assert!(raw.check("serving_default").unwrap().takes_raw_records());
    }
}
