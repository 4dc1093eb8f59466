//! TensorFlow's C API, opened at run time from `libtensorflow_cc.so.2`
//! (the library the PyPI wheel `tensorflow-cpu` ships), once per process
//! and never closed.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable that names the library's path.
pub const DYLIB_VARIABLE: &str = "TENSORFLOW_DYLIB_PATH";

/// The library's file name, looked up on the system's search path when
/// [`DYLIB_VARIABLE`] is not set.
pub const DYLIB_NAME: &str = "libtensorflow_cc.so.2";

/// The oldest TensorFlow whose C API has every function used here (the
/// `TF_TString` functions came in 2.4).
const MIN_VERSION: (u32, u32) = (2, 4);

/// `RTLD_NODELETE` (glibc and musl): the library stays mapped even if a
/// handle is closed. TensorFlow registers exit handlers that jump into it.
#[cfg(target_os = "linux")]
const RTLD_NODELETE: c_int = 0x1000;
#[cfg(not(target_os = "linux"))]
const RTLD_NODELETE: c_int = 0x80;

// The C API's opaque types.
#[repr(C)]
pub(super) struct TfStatus([u8; 0]);
#[repr(C)]
pub(super) struct TfGraph([u8; 0]);
#[repr(C)]
pub(super) struct TfSessionOptions([u8; 0]);
#[repr(C)]
pub(super) struct TfSession([u8; 0]);
#[repr(C)]
pub(super) struct TfOperation([u8; 0]);
#[repr(C)]
pub(super) struct TfTensor([u8; 0]);

/// `TF_Buffer`.
#[repr(C)]
pub(super) struct TfBuffer {
    pub data: *const c_void,
    pub length: usize,
    pub data_deallocator: Option<unsafe extern "C" fn(*mut c_void, usize)>,
}

/// `TF_Output`: an operation's output by index.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct TfOutput {
    pub oper: *mut TfOperation,
    pub index: c_int,
}

/// `TF_TString`: 24 bytes, opaque; only the `TF_String*` functions touch it.
#[repr(C, align(8))]
pub(super) struct TfTString([u8; 24]);

/// The functions of the C API used here.
#[allow(clippy::type_complexity)]
pub(super) struct Api {
    pub path: PathBuf,
    pub version: String,
    pub new_status: unsafe extern "C" fn() -> *mut TfStatus,
    pub delete_status: unsafe extern "C" fn(*mut TfStatus),
    pub get_code: unsafe extern "C" fn(*const TfStatus) -> c_int,
    pub message: unsafe extern "C" fn(*const TfStatus) -> *const c_char,
    pub new_buffer: unsafe extern "C" fn() -> *mut TfBuffer,
    pub delete_buffer: unsafe extern "C" fn(*mut TfBuffer),
    pub new_graph: unsafe extern "C" fn() -> *mut TfGraph,
    pub delete_graph: unsafe extern "C" fn(*mut TfGraph),
    pub new_session_options: unsafe extern "C" fn() -> *mut TfSessionOptions,
    pub delete_session_options: unsafe extern "C" fn(*mut TfSessionOptions),
    pub set_config:
        unsafe extern "C" fn(*mut TfSessionOptions, *const c_void, usize, *mut TfStatus),
    pub load_session_from_saved_model: unsafe extern "C" fn(
        *const TfSessionOptions,
        *const TfBuffer,
        *const c_char,
        *const *const c_char,
        c_int,
        *mut TfGraph,
        *mut TfBuffer,
        *mut TfStatus,
    ) -> *mut TfSession,
    pub close_session: unsafe extern "C" fn(*mut TfSession, *mut TfStatus),
    pub delete_session: unsafe extern "C" fn(*mut TfSession, *mut TfStatus),
    pub graph_operation_by_name:
        unsafe extern "C" fn(*mut TfGraph, *const c_char) -> *mut TfOperation,
    pub session_run: unsafe extern "C" fn(
        *mut TfSession,
        *const TfBuffer,
        *const TfOutput,
        *const *mut TfTensor,
        c_int,
        *const TfOutput,
        *mut *mut TfTensor,
        c_int,
        *const *const TfOperation,
        c_int,
        *mut TfBuffer,
        *mut TfStatus,
    ),
    pub allocate_tensor: unsafe extern "C" fn(c_int, *const i64, c_int, usize) -> *mut TfTensor,
    pub delete_tensor: unsafe extern "C" fn(*mut TfTensor),
    pub tensor_type: unsafe extern "C" fn(*const TfTensor) -> c_int,
    pub num_dims: unsafe extern "C" fn(*const TfTensor) -> c_int,
    pub dim: unsafe extern "C" fn(*const TfTensor, c_int) -> i64,
    pub tensor_byte_size: unsafe extern "C" fn(*const TfTensor) -> usize,
    pub tensor_data: unsafe extern "C" fn(*const TfTensor) -> *mut c_void,
    pub string_init: unsafe extern "C" fn(*mut TfTString),
    pub string_copy: unsafe extern "C" fn(*mut TfTString, *const c_char, usize),
    pub string_data: unsafe extern "C" fn(*const TfTString) -> *const c_char,
    pub string_size: unsafe extern "C" fn(*const TfTString) -> usize,
    pub string_dealloc: unsafe extern "C" fn(*mut TfTString),
}

/// The process's one copy of the library, opened on first use from
/// `library`, else [`DYLIB_VARIABLE`], else the search path. A process
/// holds one TensorFlow: asking for another file once one is open is an
/// error.
pub(super) fn api(library: Option<&Path>) -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    let api = API
        .get_or_init(|| open(library))
        .as_ref()
        .map_err(Clone::clone)?;
    if let Some(asked) = library
        && std::fs::canonicalize(asked).ok().as_deref() != Some(api.path.as_path())
    {
        return Err(format!(
            "TensorFlow's library is open from {} already; a process holds one, so {} cannot be opened too",
            api.path.display(),
            asked.display()
        ));
    }
    Ok(api)
}

/// Where TensorFlow's library is and which version it is, opening it if
/// it is not open yet (from `library`, else [`DYLIB_VARIABLE`], else the
/// library search path): a check that a machine can run SavedModels
/// before any job.
///
/// # Errors
/// What is wrong: no library there (with how to get one), a version
/// older than 2.4, a missing function, or another library open already.
pub fn library_version(library: Option<&Path>) -> Result<(PathBuf, String), String> {
    api(library).map(|api| (api.path.clone(), api.version.clone()))
}

/// How to get the library, for the errors that say it is missing.
fn how_to_get() -> String {
    format!(
        "`pip install tensorflow-cpu` ships it as site-packages/tensorflow/{DYLIB_NAME} \
         (`python -c 'import tensorflow, os; print(os.path.dirname(tensorflow.__file__))'` prints \
         that folder); set {DYLIB_VARIABLE} to its path"
    )
}

fn open(library: Option<&Path>) -> Result<Api, String> {
    let given = library
        .map(|p| p.as_os_str().to_owned())
        .or_else(|| std::env::var_os(DYLIB_VARIABLE).filter(|v| !v.is_empty()));
    let target: PathBuf = match &given {
        // Canonical: through a symbolic link, the library's $ORIGIN (where it
        // finds libtensorflow_framework.so.2) would be the link's folder.
        Some(path) => std::fs::canonicalize(path).map_err(|e| {
            format!(
                "{DYLIB_VARIABLE}={}: {e}; {}",
                Path::new(path).display(),
                how_to_get()
            )
        })?,
        None => PathBuf::from(DYLIB_NAME),
    };
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL | RTLD_NODELETE;
    // SAFETY: opening TensorFlow runs its static initializers, which only
    // register kernels and ops; the library is never unloaded (see below).
    // Its lines from loading are hidden as TF_CPP_MIN_LOG_LEVEL asks,
    // which TensorFlow itself applies only later (see `quiet`).
    let library = super::quiet::while_loading(|| unsafe {
        libloading::os::unix::Library::open(Some(&target), flags)
    })
    .map_err(|e| match &given {
        Some(_) => format!(
            "cannot open TensorFlow's library at {DYLIB_VARIABLE}={}: {e}",
            target.display()
        ),
        None => format!(
            "TensorFlow's library {DYLIB_NAME} is not on the library search path and \
                 {DYLIB_VARIABLE} is not set ({e}); {}",
            how_to_get()
        ),
    })?;
    let shown = target.display().to_string();
    macro_rules! get {
        ($name:literal) => {{
            // SAFETY: the symbol is the C API function of that name, whose C
            // signature the field's type spells out (TensorFlow's c_api.h,
            // tf_tensor.h, tf_tstring.h, tf_status.h, tf_buffer.h).
            let symbol = unsafe { library.get($name) }.map_err(|e| {
                format!(
                    "TensorFlow's library at {shown} has no function {}: {e}",
                    $name
                )
            })?;
            *symbol
        }};
    }
    let version_fn: unsafe extern "C" fn() -> *const c_char = get!("TF_Version");
    // SAFETY: TF_Version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(version_fn()) }
        .to_string_lossy()
        .into_owned();
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().flatten(), parts.next().flatten());
    if !matches!((major, minor), (Some(a), Some(b)) if (a, b) >= MIN_VERSION) {
        return Err(format!(
            "TensorFlow's library at {shown} is version {version}; SavedModels need {}.{} or newer",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    let api = Api {
        path: std::fs::canonicalize(&target).unwrap_or(target.clone()),
        version,
        new_status: get!("TF_NewStatus"),
        delete_status: get!("TF_DeleteStatus"),
        get_code: get!("TF_GetCode"),
        message: get!("TF_Message"),
        new_buffer: get!("TF_NewBuffer"),
        delete_buffer: get!("TF_DeleteBuffer"),
        new_graph: get!("TF_NewGraph"),
        delete_graph: get!("TF_DeleteGraph"),
        new_session_options: get!("TF_NewSessionOptions"),
        delete_session_options: get!("TF_DeleteSessionOptions"),
        set_config: get!("TF_SetConfig"),
        load_session_from_saved_model: get!("TF_LoadSessionFromSavedModel"),
        close_session: get!("TF_CloseSession"),
        delete_session: get!("TF_DeleteSession"),
        graph_operation_by_name: get!("TF_GraphOperationByName"),
        session_run: get!("TF_SessionRun"),
        allocate_tensor: get!("TF_AllocateTensor"),
        delete_tensor: get!("TF_DeleteTensor"),
        tensor_type: get!("TF_TensorType"),
        num_dims: get!("TF_NumDims"),
        dim: get!("TF_Dim"),
        tensor_byte_size: get!("TF_TensorByteSize"),
        tensor_data: get!("TF_TensorData"),
        string_init: get!("TF_StringInit"),
        string_copy: get!("TF_StringCopy"),
        string_data: get!("TF_StringGetDataPointer"),
        string_size: get!("TF_StringGetSize"),
        string_dealloc: get!("TF_StringDealloc"),
    };
    // Never unloaded: TensorFlow's exit handlers run from its own code.
    std::mem::forget(library);
    Ok(api)
}

/// A `TF_Status`, deleted when dropped.
pub(super) struct Status<'a> {
    api: &'a Api,
    pub raw: *mut TfStatus,
}

impl<'a> Status<'a> {
    pub fn new(api: &'a Api) -> Self {
        // SAFETY: TF_NewStatus has no preconditions.
        Status {
            api,
            raw: unsafe { (api.new_status)() },
        }
    }

    /// `Err` with TensorFlow's message when the status is not OK.
    pub fn check(&self) -> Result<(), String> {
        // SAFETY: `raw` is a live status; the message lives as long as it.
        unsafe {
            if (self.api.get_code)(self.raw) == 0 {
                return Ok(());
            }
            let code = (self.api.get_code)(self.raw);
            let message = CStr::from_ptr((self.api.message)(self.raw)).to_string_lossy();
            Err(format!("{} ({})", message.trim(), code_name(code)))
        }
    }
}

impl Drop for Status<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from TF_NewStatus and is deleted once.
        unsafe { (self.api.delete_status)(self.raw) }
    }
}

/// TensorFlow's status code names (`TF_Code`, the canonical codes).
fn code_name(code: c_int) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "an unknown code",
    }
}
