//! The REST layer (cargo feature `rest`): the `projects.jobs` API as HTTP
//! requests and responses, over a [`JobService`], without an HTTP server.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::iam::{Caller, Policy};
use crate::model::{Job, Model, Version};
use crate::name::{JobName, ModelName, ProjectName, VersionName};
use crate::service::{JobService, ListJobsRequest};
use crate::status::{Code, Status};

/// The default limit on request bodies: 1 MiB (a job, or a policy of
/// "a few 10s of KB", is far smaller).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// An HTTP request, as a server received it.
///
/// # Example
/// ```
/// use batch_prediction::rest::RestRequest;
///
/// let request = RestRequest::new("GET", "/v1/projects/my-proj/jobs?pageSize=5")
///     .with_header("Authorization", "Bearer user:alice@example.com");
/// assert_eq!((request.path.as_str(), request.query.as_str()), ("/v1/projects/my-proj/jobs", "pageSize=5"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestRequest {
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The path, still percent-encoded, e.g. `/v1/projects/p/jobs/j:cancel`.
    pub path: String,
    /// The query string without its `?`, still encoded.
    pub query: String,
    /// The headers, in order; names compare without regard to case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RestRequest {
    /// A request for `method` and `target` (a path with an optional query).
    pub fn new(method: impl Into<String>, target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        RestRequest {
            method: method.into(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestResponse {
    /// The HTTP status, e.g. 200.
    pub status: u16,
    /// The headers: always `Content-Type`, and `Allow` when the HTTP method is wrong.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// For a server's log, never for the client: the full message of an
    /// internal error (a 500), which can name local files. The body says
    /// only `Internal error encountered.`, as Google's front end does.
    pub detail: Option<String>,
}

impl RestResponse {
    /// The body as JSON.
    ///
    /// # Errors
    /// The parser's error; a response of [`RestApi`] always parses.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// An error in the API's shape with `http` as its HTTP status, which may
    /// differ from the one `status.code` maps to (a 413 with
    /// `INVALID_ARGUMENT`, say): for a server's own refusals around
    /// [`RestApi::handle`], such as a body over its limit.
    ///
    /// ```
    /// use batch_prediction::Status;
    /// use batch_prediction::rest::RestResponse;
    /// use batch_prediction::status::Code;
    ///
    /// let response = RestResponse::refusal(413, &Status::new(Code::InvalidArgument, "too big"));
    /// assert_eq!(response.status, 413);
    /// let body = response.json().unwrap();
    /// assert_eq!(body["error"]["code"], 413);
    /// assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    /// ```
    pub fn refusal(http: u16, status: &Status) -> Self {
        Self::new(http, &status_body(status, http), false)
    }

    fn new(status: u16, body: &Value, pretty: bool) -> Self {
        let body = if pretty {
            serde_json::to_vec_pretty(body)
        } else {
            serde_json::to_vec(body)
        }
        .expect("JSON values serialize");
        RestResponse {
            status,
            headers: vec![(
                "Content-Type".to_owned(),
                "application/json; charset=UTF-8".to_owned(),
            )],
            body,
            detail: None,
        }
    }

    /// The response for `status`; a 500 withholds its message (which can
    /// name local files) from the client and keeps it in `detail`.
    fn error(status: &Status, pretty: bool) -> Self {
        let code = status.http_status();
        if code != 500 {
            return Self::new(code, &status.to_json(), pretty);
        }
        let shown = Status::new(status.code, "Internal error encountered.");
        let mut response = Self::new(code, &shown.to_json(), pretty);
        response.detail = Some(status.message.clone());
        response
    }
}

/// Finds the caller of a request: `Ok(None)` means the embedding service
/// itself (no permission is checked).
type Authenticator = dyn Fn(&RestRequest) -> Result<Option<Caller>, Error> + Send + Sync;

/// The `projects.jobs` REST API (and the model methods jobs need) over a [`JobService`], without an HTTP
/// server: a server of any kind hands each request to [`RestApi::handle`]
/// as a [`RestRequest`] and sends back the [`RestResponse`]. Routes follow the
/// API's discovery document:
///
/// | method | HTTP | path |
/// |---|---|---|
/// | create | `POST` | `/v1/{parent}/jobs` |
/// | list | `GET` | `/v1/{parent}/jobs?filter=…&pageSize=…&pageToken=…` |
/// | get | `GET` | `/v1/{name}` |
/// | patch | `PATCH` | `/v1/{name}?updateMask=…` |
/// | cancel | `POST` | `/v1/{name}:cancel` |
/// | getIamPolicy | `GET` | `/v1/{resource}:getIamPolicy?options.requestedPolicyVersion=…` |
/// | setIamPolicy | `POST` | `/v1/{resource}:setIamPolicy` |
/// | testIamPermissions | `POST` | `/v1/{resource}:testIamPermissions` |
/// | models.create, models.list | `POST`, `GET` | `/v1/{parent}/models` |
/// | models.get, models.delete | `GET`, `DELETE` | `/v1/{parent}/models/{model}` |
/// | versions.create, versions.list | `POST`, `GET` | `/v1/{model}/versions` |
/// | versions.get, versions.delete | `GET`, `DELETE` | `/v1/{model}/versions/{version}` |
/// | versions.setDefault | `POST` | `/v1/{version}:setDefault` |
/// | operations.get | `GET` | `/v1/{parent}/operations/{operation}` |
///
/// (the methods of `projects.models`, `projects.models.versions` and
/// `projects.operations` that jobs need, on [`JobService::create_model`]
/// and the rest: the models and versions lists take `pageSize` and
/// `pageToken`, no `filter`).
///
/// Path segments are percent-decoded (a `:` that starts the custom verb
/// must not be encoded). Request bodies are read as proto3 JSON: a field
/// by its JSON name or its proto name (`jobId` or `job_id`), and an
/// unknown name refused as Google refuses it (`Invalid JSON payload
/// received. Unknown name …`); enum values as names only. Query
/// parameters may also use their proto names (`page_size`,
/// `update_mask`). The standard query parameters are
/// accepted: `alt` (`json` only), `prettyPrint` (default `true`, as
/// Google's servers do), `fields` (a partial response: `jobs(jobId,state),nextPageToken`),
/// and `$.xgafv`, `access_token`, `callback`, `key`, `oauth_token`,
/// `quotaUser`, `uploadType`, `upload_protocol`, which change nothing
/// here. Any other parameter is refused, as Google refuses it.
///
/// Errors are the API's body `{"error": {"code", "message", "status"}}`
/// with the HTTP status of the canonical code. Beyond the service's own
/// errors: an unknown route is 404 `NOT_FOUND`, and so is a known path
/// with another HTTP method, as Google's front end answers ("Method not
/// found", with an `Allow` header naming the right one); a body over the
/// limit is 413 (no canonical code maps there: its status is
/// `INVALID_ARGUMENT`); malformed JSON 400 `INVALID_ARGUMENT`; and a panic
/// anywhere below 500 `INTERNAL`.
///
/// The caller comes from the `Authorization` header by default: `Bearer
/// user:alice@example.com` (or `serviceAccount:…`, `principal://…`) is
/// that principal, and no header is the anonymous caller, so a service
/// built with IAM enforcement can be tried locally. A bearer token of
/// another form (a real OAuth token) is `UNAUTHENTICATED` (401) when the
/// service enforces IAM, and ignored otherwise. A server with real
/// authentication sets its own [`RestApi::with_authenticator`].
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{InMemoryJobStore, JobService, RestApi};
/// use batch_prediction::rest::RestRequest;
///
/// let api = RestApi::new(Arc::new(JobService::new(InMemoryJobStore::new())?));
/// let body = r#"{"jobId": "j1", "predictionInput": {"dataFormat": "JSON", "inputPaths": ["gs://b/in"],
///     "outputPath": "gs://b/out", "region": "us-central1", "uri": "gs://b/model"}}"#;
/// let created = api.handle(&RestRequest::new("POST", "/v1/projects/my-proj/jobs?alt=json").with_body(body));
/// assert_eq!(created.status, 200);
/// assert_eq!(created.json()?["state"], "QUEUED");
///
/// let missing = api.handle(&RestRequest::new("GET", "/v1/projects/my-proj/jobs/nope"));
/// assert_eq!(missing.status, 404);
/// assert_eq!(missing.json()?["error"]["status"], "NOT_FOUND");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RestApi {
    service: Arc<JobService>,
    max_body_bytes: usize,
    authenticator: Box<Authenticator>,
}

impl fmt::Debug for RestApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestApi")
            .field("service", &self.service)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// The parameters every method accepts (Google's standard parameters).
const STANDARD_PARAMS: &[&str] = &[
    "$.xgafv",
    "access_token",
    "alt",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "uploadType",
    "upload_protocol",
];

/// One of the methods, with what its route carries.
enum Route {
    Create(ProjectName),
    List(ProjectName),
    Get(JobName),
    Patch(JobName),
    Cancel(JobName),
    GetIamPolicy(JobName),
    SetIamPolicy(JobName),
    TestIamPermissions(JobName),
    ModelCreate(ProjectName),
    ModelList(ProjectName),
    ModelGet(ModelName),
    ModelDelete(ModelName),
    VersionCreate(ModelName),
    VersionList(ModelName),
    VersionGet(VersionName),
    VersionDelete(VersionName),
    VersionSetDefault(VersionName),
    OperationGet(String),
}

impl Route {
    /// The method's own query parameters.
    fn params(&self) -> &'static [&'static str] {
        match self {
            Route::List(_) | Route::ModelList(_) | Route::VersionList(_) => {
                &["filter", "pageSize", "pageToken"]
            }
            Route::Patch(_) => &["updateMask"],
            Route::GetIamPolicy(_) => &["options.requestedPolicyVersion"],
            _ => &[],
        }
    }
}

impl RestApi {
    /// The API over `service`, with the default body limit and callers
    /// from bearer tokens.
    pub fn new(service: Arc<JobService>) -> Self {
        let enforce = service.enforces_iam();
        RestApi {
            service,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            authenticator: Box::new(move |request| bearer_principal(request, enforce)),
        }
    }

    /// Refuses request bodies over `bytes` with 413.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The largest body accepted; a server may stop reading past it.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Finds callers with `authenticator` instead of bearer principals:
    /// `Ok(Some(caller))` acts for the caller, `Ok(None)` for the service
    /// itself, and an error is answered as it is (e.g. `UNAUTHENTICATED`).
    #[must_use]
    pub fn with_authenticator(
        mut self,
        authenticator: impl Fn(&RestRequest) -> Result<Option<Caller>, Error> + Send + Sync + 'static,
    ) -> Self {
        self.authenticator = Box::new(authenticator);
        self
    }

    /// The service.
    pub fn service(&self) -> &Arc<JobService> {
        &self.service
    }

    /// Answers one request. Never panics: a panic below is a 500.
    pub fn handle(&self, request: &RestRequest) -> RestResponse {
        let pretty = pretty_print(&request.query);
        match catch_unwind(AssertUnwindSafe(|| self.dispatch(request, pretty))) {
            Ok(response) => response,
            Err(_) => RestResponse::error(
                &Status::new(Code::Internal, "internal error while handling the request"),
                pretty,
            ),
        }
    }

    fn dispatch(&self, request: &RestRequest, pretty: bool) -> RestResponse {
        let route = match route(&request.method, &request.path) {
            Ok(route) => route,
            Err(RouteError::Status(status)) => return RestResponse::error(&status, pretty),
            Err(RouteError::Method { allow }) => {
                // As Google's front end answers: no such method, 404.
                let status = Status::new(
                    Code::NotFound,
                    format!(
                        "Method not found: {} {} (this path takes {allow})",
                        request.method, request.path
                    ),
                );
                let mut response = RestResponse::error(&status, pretty);
                response
                    .headers
                    .push(("Allow".to_owned(), allow.to_owned()));
                return response;
            }
        };
        if request.body.len() > self.max_body_bytes {
            let status = Status::new(
                Code::InvalidArgument,
                format!(
                    "request body of {} bytes is over the limit of {} bytes",
                    request.body.len(),
                    self.max_body_bytes
                ),
            );
            return RestResponse::new(413, &status_body(&status, 413), pretty);
        }
        let result = parse_query(&request.query, route.params()).and_then(|query| {
            let fields = match query.get("fields") {
                Some(f) if !f.is_empty() => Some(parse_fields(f)?),
                _ => None,
            };
            if let Some(alt) = query.get("alt").filter(|a| a.as_str() != "json") {
                return Err(Error::invalid_argument(
                    "alt",
                    format!("alt={alt:?} is not supported: only json"),
                ));
            }
            let caller = (self.authenticator)(request)?;
            let value = self.call(&route, &query, &request.body, caller.as_ref())?;
            Ok(match fields {
                Some(fields) => select(&value, &fields),
                None => value,
            })
        });
        match result {
            Ok(value) => RestResponse::new(200, &value, pretty),
            Err(e) => RestResponse::error(&e.to_status(), pretty),
        }
    }

    fn call(
        &self,
        route: &Route,
        query: &BTreeMap<String, String>,
        body: &[u8],
        caller: Option<&Caller>,
    ) -> Result<Value, Error> {
        let service = &*self.service;
        let as_caller = caller.map(|c| service.caller(c));
        macro_rules! call {
            ($method:ident($($arg:expr),*)) => {
                match &as_caller {
                    Some(view) => view.$method($($arg),*),
                    None => service.$method($($arg),*),
                }
            };
        }
        Ok(match route {
            Route::Create(parent) => {
                let job = Job::from_value(parse_body(body, &JOB)?)?;
                call!(create(parent, job))?.to_json()
            }
            Route::Get(name) => call!(get(name))?.to_json(),
            Route::List(parent) => {
                let page_size = match query.get("pageSize") {
                    None => 0,
                    Some(s) => int32("pageSize", s)?,
                };
                let request = ListJobsRequest::new()
                    .set_filter(query.get("filter").cloned().unwrap_or_default())
                    .set_page_size(page_size)
                    .set_page_token(query.get("pageToken").cloned().unwrap_or_default());
                call!(list(parent, &request))?.to_json()
            }
            Route::Patch(name) => {
                let job = Job::from_value(parse_body(body, &JOB)?)?;
                let mask = query.get("updateMask").map(String::as_str).unwrap_or("");
                call!(patch(name, job, mask))?.to_json()
            }
            Route::Cancel(name) => {
                parse_body(body, &CANCEL_JOB_REQUEST)?;
                call!(cancel(name))?;
                json!({})
            }
            Route::GetIamPolicy(name) => {
                let version = query
                    .get("options.requestedPolicyVersion")
                    .map(|v| int32("options.requestedPolicyVersion", v))
                    .transpose()?;
                call!(get_iam_policy(name, version))?.to_json()
            }
            Route::SetIamPolicy(name) => {
                let Value::Object(mut request) = parse_body(body, &SET_IAM_POLICY_REQUEST)? else {
                    unreachable!("parse_body gives an object");
                };
                let policy = match request.remove("policy") {
                    Some(Value::Null) | None => {
                        return Err(Error::invalid_argument(
                            "policy",
                            "setIamPolicy needs a policy",
                        ));
                    }
                    Some(p) => Policy::from_value(p)?,
                };
                let mask = match request.remove("updateMask") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s),
                    Some(other) => {
                        return Err(Error::invalid_argument(
                            "updateMask",
                            format!("updateMask must be a string, got {other}"),
                        ));
                    }
                };
                call!(set_iam_policy(name, policy, mask.as_deref()))?.to_json()
            }
            Route::TestIamPermissions(name) => {
                let Value::Object(mut request) = parse_body(body, &TEST_IAM_PERMISSIONS_REQUEST)?
                else {
                    unreachable!("parse_body gives an object");
                };
                let permissions: Vec<String> = match request.remove("permissions") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(p) => serde_json::from_value(p).map_err(|e| {
                        Error::invalid_argument(
                            "permissions",
                            format!("permissions must be a list of strings: {e}"),
                        )
                    })?,
                };
                let held = call!(test_iam_permissions(name, &permissions))?;
                if held.is_empty() {
                    json!({})
                } else {
                    json!({ "permissions": held })
                }
            }
            Route::ModelCreate(parent) => {
                let model = Model::from_json(parse_body(body, &MODEL)?)?;
                call!(create_model(parent, model))?.to_json()
            }
            Route::ModelList(parent) => {
                let (size, token) = listing(query)?;
                call!(list_models(parent, size, &token))?.to_json()
            }
            Route::ModelGet(name) => call!(get_model(name))?.to_json(),
            Route::ModelDelete(name) => call!(delete_model(name))?,
            Route::VersionCreate(parent) => {
                let version = Version::from_json(parse_body(body, &VERSION)?)?;
                call!(create_version(parent, version))?
            }
            Route::VersionList(parent) => {
                let (size, token) = listing(query)?;
                call!(list_versions(parent, size, &token))?.to_json()
            }
            Route::VersionGet(name) => call!(get_version(name))?.to_json(),
            Route::VersionDelete(name) => call!(delete_version(name))?,
            Route::VersionSetDefault(name) => {
                parse_body(body, &SET_DEFAULT_VERSION_REQUEST)?;
                call!(set_default_version(name))?.to_json()
            }
            Route::OperationGet(name) => call!(get_operation(name))?,
        })
    }
}

/// A list method's `pageSize` and `pageToken`; a `filter` is refused (the
/// models and versions lists take none here).
fn listing(query: &BTreeMap<String, String>) -> Result<(i32, String), Error> {
    if query.get("filter").is_some_and(|f| !f.trim().is_empty()) {
        return Err(Error::invalid_argument(
            "filter",
            "this service does not filter models or versions: list them all",
        ));
    }
    let size = match query.get("pageSize") {
        None => 0,
        Some(s) => int32("pageSize", s)?,
    };
    Ok((size, query.get("pageToken").cloned().unwrap_or_default()))
}

impl RestApi {
    /// The default authenticator, for custom ones to build on:
    /// `Authorization: Bearer PRINCIPAL` (`user:alice@example.com`) is that
    /// caller; no header is the anonymous caller. A token that is not a
    /// principal is the anonymous caller, or, when permissions are checked
    /// (`enforce`), `UNAUTHENTICATED`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a token that is not a principal, with `enforce`.
    pub fn bearer_caller(request: &RestRequest, enforce: bool) -> Result<Option<Caller>, Error> {
        bearer_principal(request, enforce)
    }
}

/// See [`RestApi::bearer_caller`].
fn bearer_principal(request: &RestRequest, enforce: bool) -> Result<Option<Caller>, Error> {
    let Some(header) = request.header("Authorization") else {
        return Ok(Some(Caller::anonymous()));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or(header)
        .trim();
    match Caller::new(token) {
        Ok(caller) => Ok(Some(caller)),
        Err(_) if !enforce => Ok(Some(Caller::anonymous())),
        Err(_) => Err(Error::external(
            Code::Unauthenticated,
            "invalid credentials",
            "the bearer token is not a principal such as user:alice@example.com",
        )),
    }
}

enum RouteError {
    Status(Status),
    Method { allow: &'static str },
}

fn not_found(path: &str) -> RouteError {
    RouteError::Status(Status::new(
        Code::NotFound,
        format!(
            "no method of projects.jobs is at {path:?}; expected /v1/projects/PROJECT/jobs[/JOB[:VERB]]"
        ),
    ))
}

fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix("/v1/").ok_or_else(|| not_found(path))?;
    // The custom verb is split off before decoding: an encoded `%3A` is
    // part of the name, not a verb.
    let (rest, verb) = match rest.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((name, verb)) => (format!("{head}/{name}"), Some(verb.to_owned())),
            None => (rest.to_owned(), None),
        },
        None => (rest.to_owned(), None),
    };
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err(not_found(path));
        }
        segments.push(percent_decode(raw).ok_or_else(|| {
            RouteError::Status(Status::new(
                Code::InvalidArgument,
                format!("invalid percent-encoding in path {path:?}"),
            ))
        })?);
    }
    let invalid = |e: crate::error::InvalidName| RouteError::Status(Error::from(e).to_status());
    let allow = |wanted: &'static str| {
        if method == wanted {
            Ok(())
        } else {
            Err(RouteError::Method { allow: wanted })
        }
    };
    match segments.as_slice() {
        [projects, project, jobs] if projects == "projects" && jobs == "jobs" && verb.is_none() => {
            let parent = ProjectName::new(project).map_err(invalid)?;
            match method {
                "POST" => Ok(Route::Create(parent)),
                "GET" => Ok(Route::List(parent)),
                _ => Err(RouteError::Method { allow: "GET, POST" }),
            }
        }
        [projects, project, models]
            if projects == "projects" && models == "models" && verb.is_none() =>
        {
            let parent = ProjectName::new(project).map_err(invalid)?;
            match method {
                "POST" => Ok(Route::ModelCreate(parent)),
                "GET" => Ok(Route::ModelList(parent)),
                _ => Err(RouteError::Method { allow: "GET, POST" }),
            }
        }
        [projects, project, models, model]
            if projects == "projects" && models == "models" && verb.is_none() =>
        {
            let name = ModelName::new(project, model).map_err(invalid)?;
            match method {
                "GET" => Ok(Route::ModelGet(name)),
                "DELETE" => Ok(Route::ModelDelete(name)),
                _ => Err(RouteError::Method {
                    allow: "DELETE, GET",
                }),
            }
        }
        [projects, project, models, model, versions]
            if projects == "projects"
                && models == "models"
                && versions == "versions"
                && verb.is_none() =>
        {
            let parent = ModelName::new(project, model).map_err(invalid)?;
            match method {
                "POST" => Ok(Route::VersionCreate(parent)),
                "GET" => Ok(Route::VersionList(parent)),
                _ => Err(RouteError::Method { allow: "GET, POST" }),
            }
        }
        [projects, project, models, model, versions, version]
            if projects == "projects" && models == "models" && versions == "versions" =>
        {
            let name = VersionName::new(project, model, version).map_err(invalid)?;
            match verb.as_deref() {
                None => match method {
                    "GET" => Ok(Route::VersionGet(name)),
                    "DELETE" => Ok(Route::VersionDelete(name)),
                    _ => Err(RouteError::Method {
                        allow: "DELETE, GET",
                    }),
                },
                Some("setDefault") => allow("POST").map(|()| Route::VersionSetDefault(name)),
                Some(_) => Err(not_found(path)),
            }
        }
        [projects, project, operations, operation]
            if projects == "projects" && operations == "operations" && verb.is_none() =>
        {
            let parent = ProjectName::new(project).map_err(invalid)?;
            allow("GET").map(|()| Route::OperationGet(format!("{parent}/operations/{operation}")))
        }
        [projects, project, jobs, job] if projects == "projects" && jobs == "jobs" => {
            let name = JobName::new(project, job).map_err(invalid)?;
            match verb.as_deref() {
                None => match method {
                    "GET" => Ok(Route::Get(name)),
                    "PATCH" => Ok(Route::Patch(name)),
                    _ => Err(RouteError::Method {
                        allow: "GET, PATCH",
                    }),
                },
                Some("cancel") => allow("POST").map(|()| Route::Cancel(name)),
                Some("getIamPolicy") => allow("GET").map(|()| Route::GetIamPolicy(name)),
                Some("setIamPolicy") => allow("POST").map(|()| Route::SetIamPolicy(name)),
                Some("testIamPermissions") => {
                    allow("POST").map(|()| Route::TestIamPermissions(name))
                }
                Some(_) => Err(not_found(path)),
            }
        }
        _ => Err(not_found(path)),
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    percent_decode_with(s, false)
}

fn percent_decode_with(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The query's parameters, each standard or one of `own`; the last of a
/// repeated one wins.
fn parse_query(query: &str, own: &[&str]) -> Result<BTreeMap<String, String>, Error> {
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            Error::invalid_argument(
                "query",
                format!("invalid percent-encoding in query parameter {pair:?}"),
            )
        };
        let mut key = percent_decode_with(key, true).ok_or_else(bad)?;
        let value = percent_decode_with(value, true).ok_or_else(bad)?;
        if !STANDARD_PARAMS.contains(&key.as_str()) && !own.contains(&key.as_str()) {
            // The proto spelling of a parameter (`page_size`) names it too.
            let camel: Vec<String> = key.split('.').map(lower_camel).collect();
            let camel = camel.join(".");
            if own.contains(&camel.as_str()) {
                key = camel;
            }
        }
        if !STANDARD_PARAMS.contains(&key.as_str()) && !own.contains(&key.as_str()) {
            return Err(Error::invalid_argument(
                key.clone(),
                format!("unknown query parameter {key:?}; this method takes {}", {
                    let mut all: Vec<&str> = own.to_vec();
                    all.extend_from_slice(STANDARD_PARAMS);
                    all.join(", ")
                }),
            ));
        }
        params.insert(key, value);
    }
    Ok(params)
}

fn pretty_print(query: &str) -> bool {
    let mut pretty = true;
    for pair in query.split('&') {
        if let Some(("prettyPrint", v)) = pair.split_once('=') {
            pretty = !matches!(v, "false" | "0");
        }
    }
    pretty
}

fn int32(field: &str, s: &str) -> Result<i32, Error> {
    s.trim()
        .parse()
        .map_err(|_| Error::invalid_argument(field, format!("{field} must be an int32, got {s:?}")))
}

/// How a field of a request message is read.
enum Field {
    /// A scalar, a list of scalars, or an enum: taken as it is.
    Leaf,
    /// A map such as `labels`: its keys are data, not field names.
    Map,
    /// A message, or a list of messages.
    Message(&'static Message),
    /// Kept as sent (`trainingInput`, `trainingOutput`).
    Opaque,
}

/// A request message: its name (for errors) and its fields' JSON names.
struct Message {
    name: &'static str,
    fields: &'static [(&'static str, Field)],
}

static PREDICTION_INPUT: Message = Message {
    name: "google.cloud.ml.v1.PredictionInput",
    fields: &[
        ("batchSize", Field::Leaf),
        ("dataFormat", Field::Leaf),
        ("inputPaths", Field::Leaf),
        ("maxWorkerCount", Field::Leaf),
        ("modelName", Field::Leaf),
        ("outputDataFormat", Field::Leaf),
        ("outputPath", Field::Leaf),
        ("region", Field::Leaf),
        ("runtimeVersion", Field::Leaf),
        ("signatureName", Field::Leaf),
        ("uri", Field::Leaf),
        ("versionName", Field::Leaf),
    ],
};

static PREDICTION_OUTPUT: Message = Message {
    name: "google.cloud.ml.v1.PredictionOutput",
    fields: &[
        ("errorCount", Field::Leaf),
        ("nodeHours", Field::Leaf),
        ("outputPath", Field::Leaf),
        ("predictionCount", Field::Leaf),
    ],
};

static JOB: Message = Message {
    name: "google.cloud.ml.v1.Job",
    fields: &[
        ("createTime", Field::Leaf),
        ("endTime", Field::Leaf),
        ("errorMessage", Field::Leaf),
        ("etag", Field::Leaf),
        ("jobId", Field::Leaf),
        ("jobPosition", Field::Leaf),
        ("labels", Field::Map),
        ("predictionInput", Field::Message(&PREDICTION_INPUT)),
        ("predictionOutput", Field::Message(&PREDICTION_OUTPUT)),
        ("startTime", Field::Leaf),
        ("state", Field::Leaf),
        ("trainingInput", Field::Opaque),
        ("trainingOutput", Field::Opaque),
    ],
};

static EXPR: Message = Message {
    name: "google.type.Expr",
    fields: &[
        ("description", Field::Leaf),
        ("expression", Field::Leaf),
        ("location", Field::Leaf),
        ("title", Field::Leaf),
    ],
};

static BINDING: Message = Message {
    name: "google.iam.v1.Binding",
    fields: &[
        ("condition", Field::Message(&EXPR)),
        ("members", Field::Leaf),
        ("role", Field::Leaf),
    ],
};

static AUDIT_LOG_CONFIG: Message = Message {
    name: "google.iam.v1.AuditLogConfig",
    fields: &[("exemptedMembers", Field::Leaf), ("logType", Field::Leaf)],
};

static AUDIT_CONFIG: Message = Message {
    name: "google.iam.v1.AuditConfig",
    fields: &[
        ("auditLogConfigs", Field::Message(&AUDIT_LOG_CONFIG)),
        ("service", Field::Leaf),
    ],
};

static POLICY: Message = Message {
    name: "google.iam.v1.Policy",
    fields: &[
        ("auditConfigs", Field::Message(&AUDIT_CONFIG)),
        ("bindings", Field::Message(&BINDING)),
        ("etag", Field::Leaf),
        ("version", Field::Leaf),
    ],
};

static SET_IAM_POLICY_REQUEST: Message = Message {
    name: "google.iam.v1.SetIamPolicyRequest",
    fields: &[
        ("policy", Field::Message(&POLICY)),
        ("updateMask", Field::Leaf),
    ],
};

static TEST_IAM_PERMISSIONS_REQUEST: Message = Message {
    name: "google.iam.v1.TestIamPermissionsRequest",
    fields: &[("permissions", Field::Leaf)],
};

static VERSION: Message = Message {
    name: "google.cloud.ml.v1.Version",
    fields: &[
        ("acceleratorConfig", Field::Opaque),
        ("autoScaling", Field::Opaque),
        ("container", Field::Opaque),
        ("createTime", Field::Leaf),
        ("deploymentUri", Field::Leaf),
        ("description", Field::Leaf),
        ("errorMessage", Field::Leaf),
        ("etag", Field::Leaf),
        ("explanationConfig", Field::Opaque),
        ("framework", Field::Leaf),
        ("isDefault", Field::Leaf),
        ("labels", Field::Map),
        ("lastMigrationModelId", Field::Leaf),
        ("lastMigrationTime", Field::Leaf),
        ("lastUseTime", Field::Leaf),
        ("machineType", Field::Leaf),
        ("manualScaling", Field::Opaque),
        ("name", Field::Leaf),
        ("packageUris", Field::Leaf),
        ("predictionClass", Field::Leaf),
        ("pythonVersion", Field::Leaf),
        ("requestLoggingConfig", Field::Opaque),
        ("routes", Field::Opaque),
        ("runtimeVersion", Field::Leaf),
        ("serviceAccount", Field::Leaf),
        ("state", Field::Leaf),
    ],
};

static MODEL: Message = Message {
    name: "google.cloud.ml.v1.Model",
    fields: &[
        ("defaultVersion", Field::Message(&VERSION)),
        ("description", Field::Leaf),
        ("etag", Field::Leaf),
        ("labels", Field::Map),
        ("name", Field::Leaf),
        ("onlinePredictionConsoleLogging", Field::Leaf),
        ("onlinePredictionLogging", Field::Leaf),
        ("regions", Field::Leaf),
    ],
};

static SET_DEFAULT_VERSION_REQUEST: Message = Message {
    name: "google.cloud.ml.v1.SetDefaultVersionRequest",
    fields: &[],
};

static CANCEL_JOB_REQUEST: Message = Message {
    name: "google.cloud.ml.v1.CancelJobRequest",
    fields: &[],
};

/// `field_name` → `fieldName`, as proto3 JSON names fields.
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads a request body as proto3 JSON does: each field by its JSON name
/// or its proto name (`jobId` or `job_id`), and an unknown name refused
/// with Google's message. An empty body is `{}`.
fn parse_body(body: &[u8], message: &'static Message) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let Strict(mut value) = serde_json::from_slice(body).map_err(|e| {
        Error::invalid_argument("body", format!("Invalid JSON payload received. {e}"))
    })?;
    if value.is_null() {
        value = json!({});
    }
    normalize(&mut value, message, "")?;
    Ok(value)
}

/// A JSON value read strictly: a key given twice in one object, at any
/// depth, is an error (as Google's parser refuses it), where serde_json's
/// own `Value` keeps the last. Depth stays bounded by serde_json's limit.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "Field {key:?} is given twice"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn normalize(value: &mut Value, message: &'static Message, at: &str) -> Result<(), Error> {
    let map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok(()),
        other => {
            return Err(Error::invalid_argument(
                if at.is_empty() { "body" } else { at },
                format!(
                    "Invalid JSON payload received. Expected an object for {}{}, got {other}",
                    message.name,
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!(" at '{at}'")
                    }
                ),
            ));
        }
    };
    let entries = std::mem::take(map);
    for (key, mut inner) in entries {
        let name = if message.fields.iter().any(|(n, _)| *n == key) {
            key
        } else {
            let camel = lower_camel(&key);
            if !message.fields.iter().any(|(n, _)| *n == camel) {
                let place = if at.is_empty() {
                    message.name.to_owned()
                } else {
                    at.to_owned()
                };
                return Err(Error::invalid_argument(
                    if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    },
                    format!(
                        "Invalid JSON payload received. Unknown name {key:?} at '{place}': Cannot find field."
                    ),
                ));
            }
            camel
        };
        if map.contains_key(&name) {
            return Err(Error::invalid_argument(
                name.clone(),
                format!("Invalid JSON payload received. Field {name:?} is given twice"),
            ));
        }
        let path = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        let field = &message
            .fields
            .iter()
            .find(|(n, _)| *n == name)
            .expect("found")
            .1;
        if let Field::Message(inner_message) = field {
            match &mut inner {
                Value::Array(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        normalize(item, inner_message, &format!("{path}[{i}]"))?;
                    }
                }
                other => normalize(other, inner_message, &path)?,
            }
        }
        map.insert(name, inner);
    }
    Ok(())
}

fn status_body(status: &Status, http: u16) -> Value {
    let mut body = status.to_json();
    body["error"]["code"] = json!(http);
    body
}

/// A `fields` selector: each named field, with what to keep inside it
/// (`None`: all of it).
#[derive(Debug, Default, PartialEq)]
struct Selector(BTreeMap<String, Option<Selector>>);

/// Parses `a,b/c,d(e,f(g))`.
fn parse_fields(text: &str) -> Result<Selector, Error> {
    fn bad(text: &str, why: &str) -> Error {
        Error::invalid_argument("fields", format!("invalid fields {text:?}: {why}"))
    }
    fn list(chars: &[char], i: &mut usize, text: &str, depth: usize) -> Result<Selector, Error> {
        if depth > 32 {
            return Err(bad(text, "nested too deep"));
        }
        let mut out = Selector::default();
        loop {
            // One path: name(/name)* then an optional (sub-selection).
            let mut path = Vec::new();
            loop {
                let start = *i;
                while *i < chars.len() && (chars[*i].is_alphanumeric() || "_.*".contains(chars[*i]))
                {
                    *i += 1;
                }
                if start == *i {
                    return Err(bad(
                        text,
                        &format!("expected a field name at position {start}"),
                    ));
                }
                path.push(chars[start..*i].iter().collect::<String>());
                if depth + path.len() > 32 {
                    return Err(bad(text, "nested too deep"));
                }
                if chars.get(*i) == Some(&'/') {
                    *i += 1;
                } else {
                    break;
                }
            }
            let mut leaf = None;
            if chars.get(*i) == Some(&'(') {
                *i += 1;
                leaf = Some(list(chars, i, text, depth + path.len())?);
                if chars.get(*i) != Some(&')') {
                    return Err(bad(text, &format!("expected \")\" at position {i}")));
                }
                *i += 1;
            }
            insert(&mut out, &path, leaf);
            match chars.get(*i) {
                Some(',') => *i += 1,
                _ => return Ok(out),
            }
        }
    }
    fn insert(into: &mut Selector, path: &[String], leaf: Option<Selector>) {
        let (first, rest) = path.split_first().expect("a path has a name");
        let entry = into
            .0
            .entry(first.clone())
            .or_insert_with(|| Some(Selector::default()));
        if rest.is_empty() {
            match (entry.as_mut(), leaf) {
                (_, None) => *entry = None,
                (Some(existing), Some(leaf)) => existing.0.extend(leaf.0),
                (None, Some(_)) => {}
            }
        } else if let Some(inner) = entry {
            insert(inner, rest, leaf);
        }
    }
    let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut i = 0;
    let selector = list(&chars, &mut i, text, 0)?;
    if i != chars.len() {
        return Err(bad(
            text,
            &format!("unexpected {:?} at position {i}", chars[i]),
        ));
    }
    Ok(selector)
}

/// The parts of `value` that `selector` names; arrays select in each element.
fn select(value: &Value, selector: &Selector) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| select(v, selector)).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, inner) in map {
                let chosen = selector.0.get(key).or_else(|| selector.0.get("*"));
                match chosen {
                    Some(None) => {
                        out.insert(key.clone(), inner.clone());
                    }
                    Some(Some(sub)) => {
                        out.insert(key.clone(), select(inner, sub));
                    }
                    None => {}
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request messages' fields are exactly the discovery document's.
    #[test]
    fn request_messages_match_the_discovery_document() {
        let doc: Value =
            serde_json::from_str(include_str!("../tests/data/ml.v1.discovery.json")).unwrap();
        for (schema, message) in [
            ("GoogleCloudMlV1__Job", &JOB),
            ("GoogleCloudMlV1__PredictionInput", &PREDICTION_INPUT),
            ("GoogleCloudMlV1__PredictionOutput", &PREDICTION_OUTPUT),
            ("GoogleIamV1__Policy", &POLICY),
            ("GoogleIamV1__Binding", &BINDING),
            ("GoogleType__Expr", &EXPR),
            ("GoogleIamV1__AuditConfig", &AUDIT_CONFIG),
            ("GoogleIamV1__AuditLogConfig", &AUDIT_LOG_CONFIG),
            ("GoogleIamV1__SetIamPolicyRequest", &SET_IAM_POLICY_REQUEST),
            (
                "GoogleIamV1__TestIamPermissionsRequest",
                &TEST_IAM_PERMISSIONS_REQUEST,
            ),
            ("GoogleCloudMlV1__CancelJobRequest", &CANCEL_JOB_REQUEST),
        ] {
            let props = doc["schemas"][schema]["properties"].as_object();
            let mut expected: Vec<&str> =
                props.map_or(Vec::new(), |p| p.keys().map(String::as_str).collect());
            expected.sort_unstable();
            let mut ours: Vec<&str> = message.fields.iter().map(|(n, _)| *n).collect();
            ours.sort_unstable();
            assert_eq!(ours, expected, "{schema}");
            for (name, field) in message.fields {
                let prop = &props.unwrap()[*name];
                let is_message = prop.get("$ref").is_some() || prop["items"].get("$ref").is_some();
                let is_map = prop.get("additionalProperties").is_some();
                match field {
                    Field::Message(_) => assert!(is_message, "{schema}.{name}"),
                    Field::Map => assert!(is_map, "{schema}.{name}"),
                    Field::Opaque => assert!(is_message, "{schema}.{name}"),
                    Field::Leaf => assert!(!is_message && !is_map, "{schema}.{name}"),
                }
            }
        }
        assert_eq!(
            lower_camel("options.requested_policy_version"),
            "options.requestedPolicyVersion"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("j%31").as_deref(), Some("j1"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode_with("a+b%3D", true).as_deref(), Some("a b="));
        for bad in ["%", "%4", "%zz", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_selectors() {
        let value = json!({"jobs": [{"jobId": "a", "state": "QUEUED", "labels": {"x": "1"}}],
                           "nextPageToken": "t"});
        let table = [
            ("nextPageToken", json!({"nextPageToken": "t"})),
            ("jobs/jobId", json!({"jobs": [{"jobId": "a"}]})),
            (
                "jobs(jobId,labels/x),nextPageToken",
                json!({"jobs": [{"jobId": "a", "labels": {"x": "1"}}], "nextPageToken": "t"}),
            ),
            ("jobs(jobId),jobs", json!({"jobs": value["jobs"].clone()})),
            ("jobs(*)", json!({"jobs": value["jobs"].clone()})),
        ];
        for (fields, expected) in table {
            assert_eq!(
                select(&value, &parse_fields(fields).unwrap()),
                expected,
                "{fields}"
            );
        }
        for bad in ["", "jobs(", "jobs()", "a,,b", "a)b", "jobs(x))"] {
            assert!(parse_fields(bad).is_err(), "{bad}");
        }
    }
}
