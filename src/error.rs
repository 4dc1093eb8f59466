//! The crate's errors.
//!
//! Every error this crate returns maps to a [`Code`], the `google.rpc.Code` a
//! service would answer with, and renders as the API's error body through
//! [`Status`] (both in `status.rs`). The messages of the errors outside
//! storage and the executor live in this file so they can be reviewed together:
//! lowercase, no trailing period, the offending input quoted, and what was
//! expected.

use std::fmt;

use serde_json::{Value, json};

use crate::State;
use crate::status::{Code, Status};

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The segment of a resource name that an [`InvalidName`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// `projects/{project}`.
    Project,
    /// `projects/{project}/models/{model}`.
    Model,
    /// `projects/{project}/models/{model}/versions/{version}`.
    Version,
    /// `projects/{project}/jobs/{job}`.
    Job,
}

impl NameKind {
    /// The kind in words, as used in messages: `"project"`, `"model"`, `"version"`, `"job"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Project => "project",
            NameKind::Model => "model",
            NameKind::Version => "version",
            NameKind::Job => "job",
        }
    }

    /// The template of a full name of this kind, e.g. `projects/{project}/jobs/{job}`.
    pub fn template(self) -> &'static str {
        match self {
            NameKind::Project => "projects/{project}",
            NameKind::Model => "projects/{project}/models/{model}",
            NameKind::Version => "projects/{project}/models/{model}/versions/{version}",
            NameKind::Job => "projects/{project}/jobs/{job}",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource name or ID that breaks the documented rules.
///
/// The message says which name, which segment and why:
/// `invalid job name "projects/my-proj/jobs/1st": job ID "1st" must start with a letter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {input:?}: {reason}")]
pub struct InvalidName {
    pub(crate) kind: NameKind,
    pub(crate) input: String,
    pub(crate) segment: Option<NameKind>,
    pub(crate) reason: String,
}

impl InvalidName {
    /// The kind of name that was being parsed.
    pub fn kind(&self) -> NameKind {
        self.kind
    }

    /// The whole input.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The segment that broke a rule, or `None` when the overall shape was wrong.
    pub fn segment(&self) -> Option<NameKind> {
        self.segment
    }

    /// Why the name was refused, without the name itself.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Always [`Code::InvalidArgument`].
    pub fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

/// One broken rule of a [`ValidationError`]: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The lowerCamelCase path of the field, e.g. `predictionInput.batchSize` or `labels["Team"]`.
    pub field: String,
    /// What is wrong, e.g. `must be positive, got 0`.
    pub description: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Every rule a `jobs.create` request breaks, not just the first.
///
/// Made by [`Job::validate`](crate::Job::validate). Renders as a
/// `google.rpc.BadRequest` detail in [`Error::to_status`], the way Google APIs
/// report field violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {subject}: {}", join_violations(.violations))]
pub struct ValidationError {
    subject: &'static str,
    violations: Vec<Violation>,
}

fn join_violations(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(Violation::to_string).collect();
    parts.join("; ")
}

impl ValidationError {
    /// A validation error from its violations; `None` when there are none.
    pub fn from_violations(violations: Vec<Violation>) -> Option<Self> {
        Self::of("job", violations)
    }

    /// A validation error of another message than a job, e.g. `"policy"`.
    pub(crate) fn of(subject: &'static str, violations: Vec<Violation>) -> Option<Self> {
        (!violations.is_empty()).then_some(ValidationError {
            subject,
            violations,
        })
    }

    /// The violations, in the order of the fields on the wire.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The field paths of the violations, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.violations.iter().map(|v| v.field.as_str())
    }

    /// Always [`Code::InvalidArgument`].
    pub fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

/// A state change that the job state machine does not allow; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid state transition from {from} to {to}")]
pub struct InvalidTransition {
    pub(crate) from: State,
    pub(crate) to: State,
}

impl InvalidTransition {
    /// The state the job was in (`STATE_UNSPECIFIED` for a job with no state).
    pub fn from(&self) -> State {
        self.from
    }

    /// The state that was asked for.
    pub fn to(&self) -> State {
        self.to
    }

    /// Always [`Code::FailedPrecondition`]: the job is not in a state that allows the change.
    pub fn code(&self) -> Code {
        Code::FailedPrecondition
    }
}

/// The crate's error: an [`ErrorKind`] behind a box, so `Result<T>` stays small.
///
/// Branch on [`Error::code`] to answer a caller, or on [`Error::kind`] for
/// the details.
#[derive(Debug)]
pub struct Error {
    kind: Box<ErrorKind>,
}

/// What went wrong, with its context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A resource name broke its rules.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A job failed validation.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A state change the state machine forbids.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// JSON that is not a well-formed message of the API.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// What was being read, e.g. `"job"`.
        what: &'static str,
        /// The parser's error; its message names the field and its line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The resource does not exist.
    #[error("{resource} not found")]
    NotFound {
        /// The resource, e.g. `job "projects/p/jobs/j"`.
        resource: String,
    },
    /// The resource exists already.
    #[error("{resource} already exists")]
    AlreadyExists {
        /// The resource, e.g. `job "projects/p/jobs/j"`.
        resource: String,
    },
    /// A request argument other than a job is malformed: a filter, a page
    /// token, an update mask, a policy version.
    #[error("{message}")]
    InvalidArgument {
        /// The request field, e.g. `filter` or `updateMask`.
        field: String,
        /// What is wrong, quoting the input.
        message: String,
    },
    /// A store write lost a race: the record changed since it was read.
    /// Services retry these; a caller that sees one may retry too.
    #[error("concurrent update of {resource}; read it again and retry")]
    Conflict {
        /// The resource, e.g. `job "projects/p/jobs/j"`.
        resource: String,
    },
    /// The etag sent does not match the stored one: the resource changed since it was read.
    #[error(
        "etag mismatch for {resource}: sent {sent:?}, current {current:?}; read it again and retry"
    )]
    EtagMismatch {
        /// The resource, e.g. `job "projects/p/jobs/j"`.
        resource: String,
        /// The etag sent, in base64.
        sent: String,
        /// The current etag, in base64.
        current: String,
    },
    /// The resource is not in a state that allows the operation.
    #[error("{message}")]
    FailedPrecondition {
        /// What state the resource is in and what the operation needs.
        message: String,
    },
    /// The caller lacks a permission.
    #[error("permission {permission:?} denied on {resource} for {principal:?}")]
    PermissionDenied {
        /// The principal, e.g. `user:alice@example.com`.
        principal: String,
        /// The permission, e.g. `ml.jobs.cancel`.
        permission: String,
        /// The resource, e.g. `job "projects/p/jobs/j"`.
        resource: String,
    },
    /// A storage failure: which object, what operation, why.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// An error from user code: a custom store, storage or predictor.
    #[error("{message}: {source}")]
    External {
        /// The canonical code to report.
        code: Code,
        /// What was being done.
        message: String,
        /// The user's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl ErrorKind {
    /// The canonical code of this kind of error.
    pub fn code(&self) -> Code {
        match self {
            ErrorKind::InvalidName(e) => e.code(),
            ErrorKind::Validation(e) => e.code(),
            ErrorKind::InvalidTransition(e) => e.code(),
            ErrorKind::Json { .. } => Code::InvalidArgument,
            ErrorKind::NotFound { .. } => Code::NotFound,
            ErrorKind::AlreadyExists { .. } => Code::AlreadyExists,
            ErrorKind::InvalidArgument { .. } => Code::InvalidArgument,
            ErrorKind::Conflict { .. } => Code::Aborted,
            ErrorKind::EtagMismatch { .. } => Code::Aborted,
            ErrorKind::FailedPrecondition { .. } => Code::FailedPrecondition,
            ErrorKind::PermissionDenied { .. } => Code::PermissionDenied,
            ErrorKind::Storage(e) => e.code(),
            ErrorKind::External { code, .. } => *code,
        }
    }
}

impl Error {
    /// The kind of error, with its context.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Unwraps the kind.
    pub fn into_kind(self) -> ErrorKind {
        *self.kind
    }

    /// The canonical code to answer a caller with.
    pub fn code(&self) -> Code {
        self.kind.code()
    }

    /// The error as the API reports it. A [`ValidationError`] carries a
    /// `google.rpc.BadRequest` detail with one `fieldViolations` entry per
    /// violation.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::{Error, JobName};
    ///
    /// let err = Error::not_found(format!("job {:?}", "projects/p/jobs/j"));
    /// let body = err.to_status().to_json();
    /// assert_eq!(body["error"]["code"], 404);
    /// assert_eq!(body["error"]["status"], "NOT_FOUND");
    /// assert_eq!(body["error"]["message"], "job \"projects/p/jobs/j\" not found");
    /// ```
    pub fn to_status(&self) -> Status {
        let status = Status::new(self.code(), self.to_string());
        match &*self.kind {
            ErrorKind::Validation(v) => {
                let violations: Vec<Value> = v
                    .violations()
                    .iter()
                    .map(|v| json!({"field": v.field, "description": v.description}))
                    .collect();
                status.with_detail(json!({
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": violations,
                }))
            }
            ErrorKind::InvalidArgument { field, message } => status.with_detail(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": message}],
            })),
            _ => status,
        }
    }

    /// A [`ErrorKind::NotFound`] error for `resource`, e.g. `job "projects/p/jobs/j"`.
    pub fn not_found(resource: impl Into<String>) -> Self {
        ErrorKind::NotFound {
            resource: resource.into(),
        }
        .into()
    }

    /// An [`ErrorKind::AlreadyExists`] error for `resource`.
    pub fn already_exists(resource: impl Into<String>) -> Self {
        ErrorKind::AlreadyExists {
            resource: resource.into(),
        }
        .into()
    }

    /// A [`ErrorKind::FailedPrecondition`] error with its message.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        ErrorKind::FailedPrecondition {
            message: message.into(),
        }
        .into()
    }

    /// An [`ErrorKind::External`] error wrapping an error from user code.
    pub fn external(
        code: Code,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        ErrorKind::External {
            code,
            message: message.into(),
            source: source.into(),
        }
        .into()
    }

    /// An [`ErrorKind::InvalidArgument`] error for the request field `field`.
    pub fn invalid_argument(field: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorKind::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
        .into()
    }

    pub(crate) fn json(what: &'static str, source: serde_json::Error) -> Self {
        ErrorKind::Json { what, source }.into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error {
            kind: Box::new(kind),
        }
    }
}

macro_rules! into_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                ErrorKind::from(e).into()
            }
        }
    )*};
}
into_error!(
    InvalidName,
    ValidationError,
    InvalidTransition,
    crate::storage::StorageError
);

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_send_sync_static::<Error>();
        assert_send_sync_static::<InvalidName>();
        assert_send_sync_static::<ValidationError>();
        assert_send_sync_static::<InvalidTransition>();
        assert_eq!(
            std::mem::size_of::<Error>(),
            std::mem::size_of::<usize>(),
            "Error stays one pointer wide"
        );
    }

    #[test]
    fn code_table() {
        // (code, name, number, HTTP) from google.rpc.Code and its HTTP mapping.
        let table = [
            (Code::Cancelled, "CANCELLED", 1, 499),
            (Code::Unknown, "UNKNOWN", 2, 500),
            (Code::InvalidArgument, "INVALID_ARGUMENT", 3, 400),
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED", 4, 504),
            (Code::NotFound, "NOT_FOUND", 5, 404),
            (Code::AlreadyExists, "ALREADY_EXISTS", 6, 409),
            (Code::PermissionDenied, "PERMISSION_DENIED", 7, 403),
            (Code::ResourceExhausted, "RESOURCE_EXHAUSTED", 8, 429),
            (Code::FailedPrecondition, "FAILED_PRECONDITION", 9, 400),
            (Code::Aborted, "ABORTED", 10, 409),
            (Code::OutOfRange, "OUT_OF_RANGE", 11, 400),
            (Code::Unimplemented, "UNIMPLEMENTED", 12, 501),
            (Code::Internal, "INTERNAL", 13, 500),
            (Code::Unavailable, "UNAVAILABLE", 14, 503),
            (Code::DataLoss, "DATA_LOSS", 15, 500),
            (Code::Unauthenticated, "UNAUTHENTICATED", 16, 401),
        ];
        assert_eq!(table.len(), Code::ALL.len());
        for (code, name, number, http) in table {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.to_string(), name);
            assert_eq!(code.number(), number);
            assert_eq!(code.http_status(), http);
            assert_eq!(name.parse::<Code>(), Ok(code));
        }
        assert_eq!(
            "OK".parse::<Code>().unwrap_err().to_string(),
            "unknown status code \"OK\": expected a google.rpc.Code name such as \"NOT_FOUND\""
        );
    }

    #[test]
    fn error_kinds_map_to_codes_and_bodies() {
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::not_found("job \"projects/p/jobs/j\""),
                Code::NotFound,
                "job \"projects/p/jobs/j\" not found",
            ),
            (
                Error::already_exists("job \"projects/p/jobs/j\""),
                Code::AlreadyExists,
                "job \"projects/p/jobs/j\" already exists",
            ),
            (
                ErrorKind::EtagMismatch {
                    resource: "job \"projects/p/jobs/j\"".into(),
                    sent: "AAE=".into(),
                    current: "AAI=".into(),
                }
                .into(),
                Code::Aborted,
                "etag mismatch for job \"projects/p/jobs/j\": sent \"AAE=\", current \"AAI=\"; read it again and retry",
            ),
            (
                Error::failed_precondition("job \"projects/p/jobs/j\" is SUCCEEDED"),
                Code::FailedPrecondition,
                "job \"projects/p/jobs/j\" is SUCCEEDED",
            ),
            (
                ErrorKind::PermissionDenied {
                    principal: "user:alice@example.com".into(),
                    permission: "ml.jobs.cancel".into(),
                    resource: "job \"projects/p/jobs/j\"".into(),
                }
                .into(),
                Code::PermissionDenied,
                "permission \"ml.jobs.cancel\" denied on job \"projects/p/jobs/j\" for \"user:alice@example.com\"",
            ),
            (
                InvalidTransition {
                    from: State::Succeeded,
                    to: State::Running,
                }
                .into(),
                Code::FailedPrecondition,
                "invalid state transition from SUCCEEDED to RUNNING",
            ),
            (
                Error::external(Code::Unavailable, "store write failed", "disk full"),
                Code::Unavailable,
                "store write failed: disk full",
            ),
        ];
        for (err, code, message) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.to_string(), message);
            let body = err.to_status().to_json();
            assert_eq!(
                body,
                json!({"error": {"code": code.http_status(), "message": message, "status": code.as_str()}})
            );
        }
    }

    #[test]
    fn validation_error_renders_bad_request_detail() {
        let err: Error = ValidationError::from_violations(vec![
            Violation {
                field: "jobId".into(),
                description: "required".into(),
            },
            Violation {
                field: "predictionInput.batchSize".into(),
                description: "must be positive, got 0".into(),
            },
        ])
        .unwrap()
        .into();
        assert_eq!(
            err.to_string(),
            "invalid job: jobId: required; predictionInput.batchSize: must be positive, got 0"
        );
        assert_eq!(
            err.to_status().to_json(),
            json!({"error": {
                "code": 400,
                "message": "invalid job: jobId: required; predictionInput.batchSize: must be positive, got 0",
                "status": "INVALID_ARGUMENT",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": "jobId", "description": "required"},
                        {"field": "predictionInput.batchSize", "description": "must be positive, got 0"}
                    ]
                }]
            }})
        );
        assert!(ValidationError::from_violations(Vec::new()).is_none());
    }

    #[test]
    fn status_from_json_rejects_malformed_bodies() {
        let cases = [
            (
                json!({}),
                "malformed error body: expected an object with an \"error\" object",
            ),
            (
                json!({"error": {"message": "m"}}),
                "malformed error body: expected a string \"error.status\"",
            ),
            (
                json!({"error": {"status": "NOPE", "message": "m"}}),
                "malformed error body: unknown status code \"NOPE\": expected a google.rpc.Code name such as \"NOT_FOUND\"",
            ),
            (
                json!({"error": {"status": "NOT_FOUND"}}),
                "malformed error body: expected a string \"error.message\"",
            ),
            (
                json!({"error": {"status": "NOT_FOUND", "message": "m", "details": 1}}),
                "malformed error body: expected \"error.details\" to be an array",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(Status::from_json(&body).unwrap_err().to_string(), message);
        }
    }
}
