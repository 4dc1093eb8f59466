//! The bare cost of a TensorFlow job, for `compare_helper tf-bare`: the
//! same C API calls as `TensorflowPredictor` makes, in one hand-written
//! loop, with no executor and no instance contract. Each line is parsed
//! into a typed struct (its `key`, its `x` straight into four `f32`s),
//! gathered into batches of 64, fed to the SavedModel's `serving_default`
//! session (one intra-op thread, and each run's ops in the calling thread,
//! as the predictor's), and each instance's key and output written as a
//! JSON line.

use std::ffi::{CString, c_char, c_int, c_void};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

use batch_prediction::tensorflow::{TensorflowOptions, TensorflowPredictor};

#[repr(C)]
struct Buffer {
    data: *const c_void,
    length: usize,
    free: Option<unsafe extern "C" fn(*mut c_void, usize)>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Output {
    oper: *mut c_void,
    index: c_int,
}

type Opaque = *mut c_void;

/// The C API functions the loop calls, from the library the crate opened.
struct Api {
    new_status: unsafe extern "C" fn() -> Opaque,
    get_code: unsafe extern "C" fn(Opaque) -> c_int,
    new_graph: unsafe extern "C" fn() -> Opaque,
    new_session_options: unsafe extern "C" fn() -> Opaque,
    set_config: unsafe extern "C" fn(Opaque, *const c_void, usize, Opaque),
    load: unsafe extern "C" fn(
        Opaque,
        *const Buffer,
        *const c_char,
        *const *const c_char,
        c_int,
        Opaque,
        *mut Buffer,
        Opaque,
    ) -> Opaque,
    op_by_name: unsafe extern "C" fn(Opaque, *const c_char) -> Opaque,
    run: unsafe extern "C" fn(
        Opaque,
        *const Buffer,
        *const Output,
        *const Opaque,
        c_int,
        *const Output,
        *mut Opaque,
        c_int,
        *const Opaque,
        c_int,
        *mut Buffer,
        Opaque,
    ),
    allocate: unsafe extern "C" fn(c_int, *const i64, c_int, usize) -> Opaque,
    delete_tensor: unsafe extern "C" fn(Opaque),
    data: unsafe extern "C" fn(Opaque) -> *mut c_void,
    byte_size: unsafe extern "C" fn(Opaque) -> usize,
}

/// An instance as a hand-written loop would read it.
#[derive(serde::Deserialize)]
struct Typed {
    key: serde_json::Value,
    x: [f32; 4],
}

/// One prediction line: `{"key": …, "output_0": [f32; 3]}`.
#[derive(serde::Serialize)]
struct Row<'a> {
    key: &'a serde_json::Value,
    output_0: &'a [f32],
}

pub fn tf_bare(model: &str, input: &str, output: &str) -> (f64, u64) {
    // The crate opens the library (TENSORFLOW_DYLIB_PATH) and reads the
    // signature: the loop then calls the same library by the same names.
    let predictor = TensorflowPredictor::load(model, "serving_default", TensorflowOptions::new())
        .expect("model");
    let (path, _) = batch_prediction::tensorflow::library_version(None).expect("library");
    let signature = predictor.signature().clone();
    let (feed, fetch) = (&signature.inputs[0], &signature.outputs[0]);
    // SAFETY: the library is open already (RTLD_NODELETE); each symbol is
    // the C API function whose signature the field spells out.
    let lib = unsafe { libloading::Library::new(&path) }.expect("library");
    macro_rules! get {
        ($name:literal) => {
            *unsafe { lib.get($name) }.expect($name)
        };
    }
    let api = Api {
        new_status: get!("TF_NewStatus"),
        get_code: get!("TF_GetCode"),
        new_graph: get!("TF_NewGraph"),
        new_session_options: get!("TF_NewSessionOptions"),
        set_config: get!("TF_SetConfig"),
        load: get!("TF_LoadSessionFromSavedModel"),
        op_by_name: get!("TF_GraphOperationByName"),
        run: get!("TF_SessionRun"),
        allocate: get!("TF_AllocateTensor"),
        delete_tensor: get!("TF_DeleteTensor"),
        data: get!("TF_TensorData"),
        byte_size: get!("TF_TensorByteSize"),
    };
    let dir = CString::new(model).expect("path");
    let tag = CString::new("serve").expect("tag");
    let tags = [tag.as_ptr()];
    // SAFETY: plain C API calls with live arguments; the session, graph and
    // tensors live until the process ends or are deleted after use.
    let (session, input_op, output_op, status) = unsafe {
        let status = (api.new_status)();
        let options = (api.new_session_options)();
        // intra 1, inter -1 (ops in the calling thread; TensorFlow honors
        // it only without per-session pools).
        let config = [
            0x10u8, 1, 0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        (api.set_config)(options, config.as_ptr().cast(), config.len(), status);
        let graph = (api.new_graph)();
        let session = (api.load)(
            options,
            std::ptr::null(),
            dir.as_ptr(),
            tags.as_ptr(),
            1,
            graph,
            std::ptr::null_mut(),
            status,
        );
        assert_eq!((api.get_code)(status), 0, "load");
        let name = |op: &str| CString::new(op).expect("op");
        let input_op = (api.op_by_name)(graph, name(&feed.operation).as_ptr());
        let output_op = (api.op_by_name)(graph, name(&fetch.operation).as_ptr());
        assert!(!input_op.is_null() && !output_op.is_null());
        (session, input_op, output_op, status)
    };
    let feeds = [Output {
        oper: input_op,
        index: feed.index,
    }];
    let fetches = [Output {
        oper: output_op,
        index: fetch.index,
    }];

    let start = Instant::now();
    let reader = BufReader::with_capacity(256 << 10, std::fs::File::open(input).expect("input"));
    let mut out =
        BufWriter::with_capacity(256 << 10, std::fs::File::create(output).expect("output"));
    let (mut xs, mut keys): (Vec<f32>, Vec<serde_json::Value>) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    let flush = |xs: &mut Vec<f32>,
                 keys: &mut Vec<serde_json::Value>,
                 out: &mut BufWriter<std::fs::File>| {
        if keys.is_empty() {
            return;
        }
        let rows = keys.len();
        // SAFETY: a float tensor of rows × 4, filled from `xs`; the output
        // tensor TensorFlow returns is read within its byte size, then deleted.
        unsafe {
            let dims = [rows as i64, 4];
            let tensor = (api.allocate)(1, dims.as_ptr(), 2, xs.len() * 4);
            std::ptr::copy_nonoverlapping(xs.as_ptr(), (api.data)(tensor).cast::<f32>(), xs.len());
            let mut result: Opaque = std::ptr::null_mut();
            (api.run)(
                session,
                std::ptr::null(),
                feeds.as_ptr(),
                &tensor,
                1,
                fetches.as_ptr(),
                &mut result,
                1,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                status,
            );
            assert_eq!((api.get_code)(status), 0, "run");
            (api.delete_tensor)(tensor);
            let values = std::slice::from_raw_parts(
                (api.data)(result).cast::<f32>(),
                (api.byte_size)(result) / 4,
            );
            let width = values.len() / rows;
            for (row, key) in keys.iter().enumerate() {
                let row = Row {
                    key,
                    output_0: &values[row * width..(row + 1) * width],
                };
                serde_json::to_writer(&mut *out, &row).expect("write");
                out.write_all(b"\n").expect("write");
            }
            (api.delete_tensor)(result);
        }
        xs.clear();
        keys.clear();
    };
    for line in reader.split(b'\n') {
        let line = line.expect("read");
        if line.is_empty() {
            continue;
        }
        let instance: Typed = serde_json::from_slice(&line).expect("an instance");
        xs.extend_from_slice(&instance.x);
        keys.push(instance.key);
        n += 1;
        if keys.len() == 64 {
            flush(&mut xs, &mut keys, &mut out);
        }
    }
    flush(&mut xs, &mut keys, &mut out);
    let file = out.into_inner().expect("flush");
    file.sync_all().expect("sync");
    (start.elapsed().as_secs_f64(), n)
}
