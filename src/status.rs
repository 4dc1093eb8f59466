//! Canonical codes (`google.rpc.Code`) and the API's JSON error body.
//!
//! A leaf module: everything else maps its errors to a [`Code`] and renders
//! them through [`Status`].

use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};

/// The canonical error codes of Google APIs (`google.rpc.Code`), without `OK`.
///
/// [`Code::as_str`] is the `status` string of the API's error body,
/// [`Code::number`] the `google.rpc.Code` value and [`Code::http_status`] the
/// HTTP status from the code's documented HTTP mapping.
///
/// # Example
/// ```
/// use batch_prediction::Code;
///
/// let code: Code = "ABORTED".parse()?;
/// assert_eq!(code, Code::Aborted);
/// assert_eq!((code.number(), code.http_status()), (10, 409));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The operation was cancelled, typically by the caller.
    Cancelled,
    /// Unknown error.
    Unknown,
    /// The client specified an invalid argument.
    InvalidArgument,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded,
    /// A requested entity was not found.
    NotFound,
    /// The entity that a client tried to create already exists.
    AlreadyExists,
    /// The caller does not have permission to execute the operation.
    PermissionDenied,
    /// A resource, such as a quota, has been exhausted.
    ResourceExhausted,
    /// The system is not in a state required for the operation.
    FailedPrecondition,
    /// The operation was aborted, typically by a concurrency conflict such as an etag mismatch.
    Aborted,
    /// The operation was attempted past the valid range.
    OutOfRange,
    /// The operation is not implemented or supported.
    Unimplemented,
    /// An internal invariant was broken.
    Internal,
    /// The service is currently unavailable.
    Unavailable,
    /// Unrecoverable data loss or corruption.
    DataLoss,
    /// The request does not have valid authentication credentials.
    Unauthenticated,
}

impl Code {
    /// Every code, in `google.rpc.Code` number order.
    pub const ALL: [Code; 16] = [
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The name used as `status` in the error body, e.g. `"INVALID_ARGUMENT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The `google.rpc.Code` number, e.g. 3 for `INVALID_ARGUMENT`.
    pub fn number(self) -> i32 {
        match self {
            Code::Cancelled => 1,
            Code::Unknown => 2,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::DataLoss => 15,
            Code::Unauthenticated => 16,
        }
    }

    /// The HTTP status of the code's documented HTTP mapping, e.g. 404 for `NOT_FOUND`.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Cancelled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown [`Code`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status code {input:?}: expected a google.rpc.Code name such as \"NOT_FOUND\"")]
pub struct UnknownCode {
    input: String,
}

impl FromStr for Code {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Code::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode {
                input: s.to_owned(),
            })
    }
}

/// An error as the API reports it: a [`Code`], a message and optional details.
///
/// [`Status::to_json`] renders the body a Google API answers with,
/// `{"error": {"code": 404, "message": "…", "status": "NOT_FOUND"}}`, where
/// `code` is the HTTP status; [`Status::from_json`] reads one back.
///
/// # Example
/// ```
/// use batch_prediction::{Code, Status};
/// use serde_json::json;
///
/// let status = Status::new(Code::NotFound, "job \"projects/p/jobs/j\" not found");
/// assert_eq!(
///     status.to_json(),
///     json!({"error": {"code": 404, "message": "job \"projects/p/jobs/j\" not found", "status": "NOT_FOUND"}})
/// );
/// assert_eq!(Status::from_json(&status.to_json())?, status);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// The canonical code.
    pub code: Code,
    /// A developer-facing message.
    pub message: String,
    /// Typed details, each an object with an `@type` key (e.g. `google.rpc.BadRequest`).
    pub details: Vec<Value>,
}

impl Status {
    /// A status with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Adds a detail object, which should carry an `@type` key.
    #[must_use]
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.details.push(detail);
        self
    }

    /// The HTTP status to answer with: [`Code::http_status`].
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// The API's JSON error body. `details` appears only when there are some.
    pub fn to_json(&self) -> Value {
        let mut error = json!({
            "code": self.code.http_status(),
            "message": self.message,
            "status": self.code.as_str(),
        });
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details.clone());
        }
        json!({ "error": error })
    }

    /// Reads an API error body back.
    ///
    /// # Errors
    /// [`MalformedStatus`] when the value is not `{"error": {…}}` with a known
    /// `status` string and a string `message`.
    pub fn from_json(body: &Value) -> Result<Status, MalformedStatus> {
        let malformed = |why: &str| MalformedStatus {
            reason: why.to_owned(),
        };
        let error = body
            .get("error")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("expected an object with an \"error\" object"))?;
        let status = error
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("expected a string \"error.status\""))?;
        let code = status
            .parse()
            .map_err(|e: UnknownCode| malformed(&e.to_string()))?;
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("expected a string \"error.message\""))?;
        let details = match error.get("details") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(malformed("expected \"error.details\" to be an array")),
        };
        Ok(Status {
            code,
            message: message.to_owned(),
            details,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The error of [`Status::from_json`] on a body that is not an API error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed error body: {reason}")]
pub struct MalformedStatus {
    reason: String,
}
