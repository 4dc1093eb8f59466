//! A SavedModel loaded into a TensorFlow session, and the tensors that go
//! in and out of it: each C object owned by a Rust value that deletes it.

use std::collections::BTreeMap;
use std::ffi::{CString, c_int};
use std::path::Path;

use super::library::{Api, Status, TfBuffer, TfGraph, TfOutput, TfSession, TfTString, TfTensor};
use super::signature::{self, DType, RawSignature, Signature, TensorSpec};

/// A session over a loaded SavedModel, and its graph.
pub(super) struct Session {
    api: &'static Api,
    session: *mut TfSession,
    graph: *mut TfGraph,
}

// SAFETY: TensorFlow's sessions and graphs are thread-safe for `TF_SessionRun`
// and `TF_GraphOperationByName` (c_api.h: "Session is thread-safe"); the
// pointers are only deleted in `drop`, which has the value to itself.
unsafe impl Send for Session {}
// SAFETY: as above: every `&self` method is a thread-safe C API call.
unsafe impl Sync for Session {}

/// A `TF_Buffer` from `TF_NewBuffer`, deleted when dropped.
struct Buffer {
    api: &'static Api,
    raw: *mut TfBuffer,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: `raw` came from TF_NewBuffer and is deleted once.
        unsafe { (self.api.delete_buffer)(self.raw) }
    }
}

/// The `ConfigProto` bytes of a session's thread settings:
/// `intra_op_parallelism_threads` (field 2), `inter_op_parallelism_threads`
/// (5), `use_per_session_threads` (9), as protobuf's wire format writes
/// them (varints after their tags).
fn config_proto(intra: u32, inter: i32, per_session: bool) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for (tag, value) in [
        (2u64, intra as u64),
        // A negative int32 is sign-extended to ten bytes, as protobuf does.
        (5, i64::from(inter) as u64),
        (9, per_session as u64),
    ] {
        if value != 0 {
            varint(&mut out, tag << 3);
            varint(&mut out, value);
        }
    }
    out
}

impl Session {
    /// Loads the SavedModel in `dir` with `tags`, and the signatures its
    /// MetaGraphDef holds.
    pub fn load(
        api: &'static Api,
        dir: &Path,
        tags: &[String],
        intra_threads: u32,
        inter_threads: u32,
    ) -> Result<(Session, BTreeMap<String, RawSignature>), String> {
        // TensorFlow loads a graph whose variables/ is missing without a
        // word (as a model without variables), then fails every batch:
        // refused here, once the graph says it has variables.
        let has_index = dir.join("variables").join("variables.index").is_file();
        let dir_c = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
        let tags_c: Vec<CString> = tags
            .iter()
            .map(|t| CString::new(t.as_str()).map_err(|_| format!("tag {t:?} has a NUL byte")))
            .collect::<Result<_, _>>()?;
        let tag_ptrs: Vec<*const std::ffi::c_char> = tags_c.iter().map(|t| t.as_ptr()).collect();
        let status = Status::new(api);
        // 0: each run's ops in the calling thread (TensorFlow's negative
        // inter_op_parallelism_threads), no hand-off to a pool. TensorFlow
        // honors that only without per-session pools (`DirectSession`: with
        // `use_per_session_threads` it makes a pool of its own whatever
        // the sign), which then handed every step
        // to another thread and waited for it: the MLP job took twice as
        // long. N: a pool of N threads of the session's own.
        let inter = match inter_threads {
            0 => -1,
            n => i32::try_from(n).unwrap_or(i32::MAX),
        };
        let config = config_proto(intra_threads, inter, inter > 0);
        // SAFETY: every pointer passed is live for the calls; the graph,
        // options and buffer are deleted below or owned by the session.
        unsafe {
            let options = (api.new_session_options)();
            (api.set_config)(options, config.as_ptr().cast(), config.len(), status.raw);
            if let Err(e) = status.check() {
                (api.delete_session_options)(options);
                return Err(format!(
                    "TensorFlow refused the session's thread settings: {e}"
                ));
            }
            let graph = (api.new_graph)();
            let meta = Buffer {
                api,
                raw: (api.new_buffer)(),
            };
            let session = (api.load_session_from_saved_model)(
                options,
                std::ptr::null(),
                dir_c.as_ptr(),
                tag_ptrs.as_ptr(),
                tag_ptrs.len() as c_int,
                graph,
                meta.raw,
                status.raw,
            );
            (api.delete_session_options)(options);
            if let Err(e) = status.check() {
                (api.delete_graph)(graph);
                return Err(e);
            }
            if session.is_null() {
                (api.delete_graph)(graph);
                return Err("TensorFlow returned no session and no error".into());
            }
            let session = Session {
                api,
                session,
                graph,
            };
            let bytes =
                std::slice::from_raw_parts((*meta.raw).data.cast::<u8>(), (*meta.raw).length);
            let meta = signature::meta_graph(bytes)?;
            if meta.has_variables && !has_index {
                return Err(
                    "its graph has variables, but variables/variables.index is missing (copy the whole SavedModel folder)"
                        .into(),
                );
            }
            Ok((session, meta.signatures))
        }
    }

    /// The graph output `operation:index`; an error naming it when the
    /// graph has no such operation.
    pub fn output(&self, operation: &str, index: i32) -> Result<TfOutput, String> {
        let name = CString::new(operation)
            .map_err(|_| format!("operation {operation:?} has a NUL byte"))?;
        // SAFETY: the graph is live; the name is NUL-terminated.
        let oper = unsafe { (self.api.graph_operation_by_name)(self.graph, name.as_ptr()) };
        if oper.is_null() {
            return Err(format!("the graph has no operation {operation:?}"));
        }
        Ok(TfOutput { oper, index })
    }

    /// Runs the graph: feeds `inputs` and fetches `outputs`.
    pub fn run(
        &self,
        inputs: &[(TfOutput, Tensor)],
        outputs: &[TfOutput],
    ) -> Result<Vec<Tensor>, String> {
        let status = Status::new(self.api);
        let feeds: Vec<TfOutput> = inputs.iter().map(|(o, _)| *o).collect();
        let values: Vec<*mut TfTensor> = inputs.iter().map(|(_, t)| t.raw).collect();
        let mut fetched: Vec<*mut TfTensor> = vec![std::ptr::null_mut(); outputs.len()];
        // SAFETY: the arrays have the lengths passed; TF_SessionRun does not
        // take ownership of the input tensors and gives the output ones to us.
        unsafe {
            (self.api.session_run)(
                self.session,
                std::ptr::null(),
                feeds.as_ptr(),
                values.as_ptr(),
                feeds.len() as c_int,
                outputs.as_ptr(),
                fetched.as_mut_ptr(),
                outputs.len() as c_int,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                status.raw,
            );
        }
        let owned: Vec<Tensor> = fetched
            .into_iter()
            .filter(|t| !t.is_null())
            .map(|raw| Tensor {
                api: self.api,
                raw,
                strings_ours: false,
            })
            .collect();
        status.check()?;
        if owned.len() != outputs.len() {
            return Err("TensorFlow returned fewer outputs than asked for".into());
        }
        Ok(owned)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let status = Status::new(self.api);
        // SAFETY: the session and graph are live and deleted once, the
        // session first (it refers to the graph).
        unsafe {
            (self.api.close_session)(self.session, status.raw);
            (self.api.delete_session)(self.session, status.raw);
            (self.api.delete_graph)(self.graph);
        }
    }
}

/// A session with the graph outputs of a signature's inputs and outputs.
pub(super) struct Bound {
    session: Session,
    feeds: Vec<TfOutput>,
    fetches: Vec<TfOutput>,
}

// SAFETY: the operation pointers in `feeds` and `fetches` belong to the
// session's graph, which lives as long as `session`, and are only read.
unsafe impl Send for Bound {}
// SAFETY: as above; `Session` is `Sync`.
unsafe impl Sync for Bound {}

impl Bound {
    /// `session` with the graph outputs of `signature`'s tensors; an error
    /// naming an operation the graph lacks.
    pub fn new(session: Session, signature: &Signature) -> Result<Bound, String> {
        let find = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| session.output(&s.operation, s.index))
                .collect::<Result<Vec<_>, _>>()
        };
        let feeds = find(&signature.inputs)?;
        let fetches = find(&signature.outputs)?;
        Ok(Bound {
            session,
            feeds,
            fetches,
        })
    }

    /// Runs the signature: `inputs` in the order of its inputs, its outputs
    /// back in the order of its outputs.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let fed: Vec<(TfOutput, Tensor)> = self.feeds.iter().copied().zip(inputs).collect();
        self.session.run(&fed, &self.fetches)
    }
}

/// Element types whose bytes are TensorFlow's for their dtype.
pub(super) trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for f64 {}
impl Plain for i32 {}
impl Plain for i64 {}
impl Plain for bool {}

/// A tensor: one we made to feed, or one TensorFlow returned.
pub(super) struct Tensor {
    api: &'static Api,
    raw: *mut TfTensor,
    /// A string tensor we allocated: its strings are ours to free before
    /// the tensor (TF_DeleteTensor frees the buffer, not the strings).
    strings_ours: bool,
}

// SAFETY: a tensor is a plain buffer owned by this value alone.
unsafe impl Send for Tensor {}

impl Tensor {
    /// A tensor of `dtype` and `dims` holding `data`, the raw bytes of its
    /// elements in row-major order (not for strings).
    pub fn from_bytes(api: &'static Api, dtype: DType, dims: &[i64], data: &[u8]) -> Tensor {
        debug_assert_ne!(dtype, DType::String);
        // SAFETY: the tensor is allocated with exactly data.len() bytes, which
        // are then copied in.
        unsafe {
            let raw = (api.allocate_tensor)(
                dtype.tf_code(),
                dims.as_ptr(),
                dims.len() as c_int,
                data.len(),
            );
            if !data.is_empty() {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    (api.tensor_data)(raw).cast::<u8>(),
                    data.len(),
                );
            }
            Tensor {
                api,
                raw,
                strings_ours: false,
            }
        }
    }

    /// A tensor of `dtype` and `dims` holding `values` (elements whose bytes
    /// are the dtype's: `f32`, `f64`, `i32`, `i64`, `bool`).
    pub fn from_values<T: Plain>(
        api: &'static Api,
        dtype: DType,
        dims: &[i64],
        values: &[T],
    ) -> Tensor {
        debug_assert_eq!(std::mem::size_of::<T>(), dtype.size());
        // SAFETY: `Plain` types have no padding and every byte initialized.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        Tensor::from_bytes(api, dtype, dims, bytes)
    }

    /// A string tensor of `dims` holding `strings` in row-major order.
    pub fn from_strings<'s>(
        api: &'static Api,
        dims: &[i64],
        strings: impl ExactSizeIterator<Item = &'s [u8]>,
    ) -> Tensor {
        let n = strings.len();
        // SAFETY: n TF_TStrings are allocated, each initialized before it
        // is written; the tensor frees them in `drop`.
        unsafe {
            let raw = (api.allocate_tensor)(
                DType::String.tf_code(),
                dims.as_ptr(),
                dims.len() as c_int,
                n * std::mem::size_of::<TfTString>(),
            );
            let base = (api.tensor_data)(raw).cast::<TfTString>();
            for (i, s) in strings.enumerate() {
                let slot = base.add(i);
                (api.string_init)(slot);
                (api.string_copy)(slot, s.as_ptr().cast(), s.len());
            }
            Tensor {
                api,
                raw,
                strings_ours: true,
            }
        }
    }

    /// Its element type, if one this crate reads, and the raw code.
    pub fn dtype(&self) -> (Option<DType>, i32) {
        // SAFETY: the tensor is live.
        let code = unsafe { (self.api.tensor_type)(self.raw) };
        (DType::from_tf(code), code)
    }

    /// Its dimensions.
    pub fn dims(&self) -> Vec<i64> {
        // SAFETY: the tensor is live; dim indexes are below its rank.
        unsafe {
            let n = (self.api.num_dims)(self.raw);
            (0..n).map(|i| (self.api.dim)(self.raw, i)).collect()
        }
    }

    /// Its bytes (for a non-string tensor).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the data pointer and byte size describe one live buffer.
        unsafe {
            let len = (self.api.tensor_byte_size)(self.raw);
            if len == 0 {
                return &[];
            }
            std::slice::from_raw_parts((self.api.tensor_data)(self.raw).cast::<u8>(), len)
        }
    }

    /// Its elements, for a string tensor of `count` elements.
    pub fn strings(&self, count: usize) -> Vec<&[u8]> {
        // SAFETY: a string tensor's buffer holds `count` TF_TStrings (the
        // caller took `count` from its dims), each readable until drop.
        unsafe {
            let base = (self.api.tensor_data)(self.raw).cast::<TfTString>();
            (0..count)
                .map(|i| {
                    let s = base.add(i);
                    let len = (self.api.string_size)(s);
                    if len == 0 {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts((self.api.string_data)(s).cast::<u8>(), len)
                    }
                })
                .collect()
        }
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: the tensor is live and deleted once; the strings we
        // initialized are freed first.
        unsafe {
            if self.strings_ours {
                let count = self.dims().iter().product::<i64>().max(0) as usize;
                let base = (self.api.tensor_data)(self.raw).cast::<TfTString>();
                for i in 0..count {
                    (self.api.string_dealloc)(base.add(i));
                }
            }
            (self.api.delete_tensor)(self.raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::config_proto;

    #[test]
    fn thread_settings_are_a_config_proto() {
        // intra 1, inter 1, per-session pools: tags 0x10, 0x28, 0x48.
        assert_eq!(config_proto(1, 1, true), [0x10, 1, 0x28, 1, 0x48, 1]);
        assert_eq!(config_proto(300, 0, false), [0x10, 0xac, 0x02]);
        let caller = config_proto(1, -1, false);
        assert_eq!(caller[..3], [0x10, 1, 0x28]);
        assert_eq!(
            caller[3..],
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }
}
