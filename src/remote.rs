//! Models that stay in a server (feature `remote`): [`RemotePredictor`]
//! sends each batch to a model server and reads its predictions back, and
//! [`RemoteResolver`] finds the server's model for a job.
//!
//! (The protocols and what goes over them: [`RemotePredictor`].)

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::model::{Job, ModelVersion};
use crate::predict::{ModelResolver, PASSTHROUGH_LABEL, PredictContext, PredictError, Predictor};
use crate::record::Instance;
use crate::retry::RetryPolicy;

/// The name of the one input of a v2 model whose metadata declares none.
const UNDECLARED: &str = "input-0";

/// The largest response body read from a model server.
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// A request's configuration with `timeout` on each phase but the host's
/// name lookup: connecting, sending, waiting for the answer and reading it.
/// With a time-out on the lookup (or on the whole call, which covers it),
/// ureq looks the name up on a thread of its own for every request, even
/// one that reuses a kept-alive connection, which cost a third of the
/// throughput against a fast server; the lookup keeps the system
/// resolver's own time-outs. (A macro: ureq's request configuration types
/// cannot be named outside it.)
macro_rules! phases {
    ($config:expr, $timeout:expr) => {
        $config
            .timeout_connect(Some($timeout))
            .timeout_send_request(Some($timeout))
            .timeout_send_body(Some($timeout))
            .timeout_recv_response(Some($timeout))
            .timeout_recv_body(Some($timeout))
    };
}

/// The protocol a model server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// TensorFlow Serving's REST API (AI Platform online prediction,
    /// KServe v1): `{"instances": [...]}` → `{"predictions": [...]}`.
    #[default]
    TfServing,
    /// The Open Inference Protocol (KServe v2, MLServer, Triton): named,
    /// typed, shaped tensors.
    V2,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    /// `tfserving` or `v2`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tfserving" => Ok(Protocol::TfServing),
            "v2" => Ok(Protocol::V2),
            other => Err(format!(
                "unknown protocol {other:?}: expected tfserving or v2"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::TfServing => "tfserving",
            Protocol::V2 => "v2",
        })
    }
}

/// A model server, and how to reach it: finds the server's model for each
/// job and connects a [`RemotePredictor`] to it.
///
/// The server's model name and version are the last segments of the job's
/// `modelName` or `versionName` (`projects/p/models/census/versions/v3` is
/// model `census`, version `v3`; a `modelName` is the server's default
/// version). A job that names its model by `uri` needs a name given with
/// [`with_model`](Self::with_model), which also overrides the job's.
///
/// To send different models to different servers, resolve with a closure
/// that picks a resolver:
///
/// ```no_run
/// use std::sync::Arc;
/// use batch_prediction::{Job, ModelVersion, PredictError, Predictor, RemoteResolver};
/// use batch_prediction::remote::Protocol;
///
/// let tabular = RemoteResolver::new("http://tabular:8080", Protocol::V2);
/// let text = RemoteResolver::new("http://text:8501", Protocol::TfServing)
///     .with_header("Authorization", "Bearer secret");
/// let resolver = move |model: &ModelVersion, job: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
///     use batch_prediction::ModelResolver;
///     match model {
///         ModelVersion::Model(name) if name.model().starts_with("bert") => text.resolve(model, job),
///         _ => tabular.resolve(model, job),
///     }
/// };
/// # let _ = resolver;
/// ```
#[derive(Debug, Clone)]
pub struct RemoteResolver {
    base: String,
    protocol: Protocol,
    headers: Vec<(String, String)>,
    model: Option<String>,
    timeout: Duration,
    retry: RetryPolicy,
    unreachable: Unreachable,
}

/// When a model server counts as down: this many connection failures in a
/// row (refused, not found, no connection) spanning at least `span`,
/// without one answer between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreachable {
    failures: u64,
    span: Duration,
}

/// A predictor's streak of connection failures, shared by its workers.
#[derive(Debug, Default)]
struct Streak {
    failures: std::sync::atomic::AtomicU64,
    /// When the streak's first failure came.
    since: std::sync::Mutex<Option<Instant>>,
}

impl Streak {
    /// An answer came: the server is up.
    fn answered(&self) {
        if self.failures.swap(0, std::sync::atomic::Ordering::Relaxed) > 0 {
            *self.since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// A connection failed: the streak's length and age.
    fn failed(&self) -> (u64, Duration) {
        let n = self
            .failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let first = *since.get_or_insert_with(Instant::now);
        (n, first.elapsed())
    }
}

impl RemoteResolver {
    /// A server at `base_url` (e.g. `http://127.0.0.1:8080`) speaking `protocol`.
    pub fn new(base_url: impl Into<String>, protocol: Protocol) -> Self {
        RemoteResolver {
            base: base_url.into().trim_end_matches('/').to_owned(),
            protocol,
            headers: Vec::new(),
            model: None,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default()
                .with_max_retries(5)
                .with_backoff(Duration::from_millis(100), Duration::from_secs(10))
                .with_max_elapsed(Duration::from_secs(60)),
            unreachable: Unreachable {
                failures: 8,
                span: Duration::from_secs(10),
            },
        }
    }

    /// When the server counts as down during a job: after `failures`
    /// connection failures in a row (refused, not found, no connection;
    /// an HTTP answer of any status ends the streak) spanning at least
    /// `span`, the job stops FAILED, naming the server and the last error
    /// ([`PredictError::fatal`]), instead of spending every batch's retries
    /// and splits on a server that is gone. Its committed shards are kept:
    /// run it again once the server is back. By default 8 failures over at
    /// least 10 s; a restart shorter than that costs only retries.
    #[must_use]
    pub fn with_unreachable_after(mut self, failures: u64, span: Duration) -> Self {
        self.unreachable = Unreachable {
            failures: failures.max(1),
            span,
        };
        self
    }

    /// How [`connect`](Self::connect) retries a transient failure of its
    /// question to the server (a server starting up, shedding load): by
    /// default 5 retries from 100 ms, doubling, within a minute. (Batches
    /// are retried by the executor:
    /// [`ExecutorConfig::with_predict_retries`](crate::ExecutorConfig::with_predict_retries).)
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends a header with every request (a bearer token, for instance).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The server's model for every job, whatever the job names (needed
    /// for jobs that name their model by `uri`).
    #[must_use]
    pub fn with_model(mut self, name: impl Into<String>) -> Self {
        self.model = Some(name.into());
        self
    }

    /// How long each phase of a request may take: connecting, sending,
    /// waiting for the answer, reading it (default 60 s; with a batch
    /// deadline, what is left of it). A request past it fails its batch.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to model `model` (version `version`, or the server's
    /// default) on the server: asks the server for it, so that a server
    /// that is down or lacks the model fails here, before any prediction.
    ///
    /// # Errors
    /// A [`PredictError`] naming the URL and the server's status or the
    /// connection's failure; or a model name that cannot be a URL segment.
    pub fn connect(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<RemotePredictor, PredictError> {
        let url_safe = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        for (what, segment) in [("model", Some(model)), ("version", version)] {
            if let Some(s) = segment.filter(|s| !url_safe(s)) {
                return Err(PredictError::new(format!(
                    "{what} name {s:?} cannot go in a model server's URL: letters, digits, '-', '_' and '.' only"
                )));
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(256)
            .max_idle_connections(256)
            .user_agent(concat!("batch-prediction/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut path = match self.protocol {
            Protocol::TfServing => format!("{}/v1/models/{model}", self.base),
            Protocol::V2 => format!("{}/v2/models/{model}", self.base),
        };
        if let Some(v) = version {
            path = format!("{path}/versions/{v}");
        }
        let mut predictor = RemotePredictor {
            agent,
            url: match self.protocol {
                Protocol::TfServing => format!("{path}:predict"),
                Protocol::V2 => format!("{path}/infer"),
            },
            protocol: self.protocol,
            headers: self.headers.clone(),
            inputs: Vec::new(),
            passthrough: true,
            timeout: self.timeout,
            unreachable: self.unreachable,
            streak: Streak::default(),
        };
        let (started, mut tries) = (Instant::now(), 0);
        let metadata = loop {
            match predictor.call("GET", &path, None, None) {
                Err(e)
                    if e.is_retryable()
                        && tries < self.retry.max_retries
                        && started.elapsed() < self.retry.max_elapsed =>
                {
                    tries += 1;
                    let wait = self
                        .retry
                        .backoff(tries)
                        .max(e.retry_after().unwrap_or_default());
                    std::thread::sleep(wait.min(self.retry.max_backoff));
                }
                Err(e) => {
                    return Err(PredictError::new(format!(
                        "model {model:?} on {}: {e}",
                        self.base
                    )));
                }
                Ok(metadata) => break metadata,
            }
        };
        if self.protocol == Protocol::V2 {
            predictor.inputs = v2_inputs(&metadata).map_err(|e| {
                PredictError::new(format!(
                    "model {model:?} on {}: its metadata: {e}",
                    self.base
                ))
            })?;
        }
        Ok(predictor)
    }
}

impl ModelResolver for RemoteResolver {
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        let (name, version) = match (&self.model, model) {
            (Some(name), _) => (name.as_str(), None),
            (None, ModelVersion::Model(m)) => (m.model(), None),
            (None, ModelVersion::Version(v)) => (v.model(), Some(v.version())),
            (None, ModelVersion::Uri(uri)) => {
                return Err(PredictError::new(format!(
                    "the job names its model by uri ({uri}), which a model server does not know: give the server's model name (--model NAME, or RemoteResolver::with_model)"
                )));
            }
        };
        let passthrough = job.labels.get(PASSTHROUGH_LABEL).map(String::as_str) != Some("off");
        Ok(Arc::new(
            self.connect(name, version)?.with_passthrough(passthrough),
        ))
    }
}

/// One model on a model server: each batch is one request. Made by
/// [`RemoteResolver::connect`] (or [`RemoteResolver`] as a job's resolver).
///
/// Two protocols ([`Protocol`]):
/// - **TensorFlow Serving's REST API**, which AI Platform online prediction
///   shares with batch prediction: `POST BASE/v1/models/NAME[/versions/V]:predict`
///   with `{"instances": [...]}` (and `"signature_name"` when the job names
///   one other than `serving_default`), answered by `{"predictions": [...]}`.
///   Instances go as they are (bytes as `{"b64": …}`) and predictions come
///   back as they are. TensorFlow Serving, KServe's v1 protocol, Seldon and
///   AI Platform / Vertex endpoints speak it.
/// - **The Open Inference Protocol** (KServe v2, also spoken by MLServer and
///   Triton): `POST BASE/v2/models/NAME[/versions/V]/infer` with one named,
///   typed, shaped tensor per model input. The inputs are those the model's
///   metadata (`GET BASE/v2/models/NAME[/versions/V]`) declares, each fed
///   from the instance field of its name, as the ONNX predictors feed theirs
///   (a model of one input takes the whole instance, and a model whose
///   metadata declares no inputs is taken to have one, `input-0`, whose
///   type follows the instances). Each prediction holds the instance's other
///   fields (a `key`; the label `bp-passthrough: off` leaves them out) and
///   one field per output tensor, a bare value where the tensor holds one
///   value per instance.
///
/// A server's error (an HTTP status of 400 or more, or `{"error": …}`) fails
/// the batch with the server's message, and the executor then isolates the
/// instances that cause it, as for any predictor. A response that does not
/// fit the batch (not JSON, no predictions, a wrong count) fails it too,
/// saying what was wrong.
///
/// The client is [`ureq`]: synchronous, so each worker thread makes its own
/// call and up to `maxWorkerCount` requests are in flight, over a pool of
/// kept-alive connections, with no thread per request and no async runtime.
pub struct RemotePredictor {
    agent: ureq::Agent,
    url: String,
    protocol: Protocol,
    headers: Vec<(String, String)>,
    /// The v2 model's declared inputs; empty for one undeclared input.
    inputs: Vec<TensorInput>,
    passthrough: bool,
    /// The longest a request may take.
    timeout: Duration,
    /// When the server counts as down, and the current streak.
    unreachable: Unreachable,
    streak: Streak,
}

impl fmt::Debug for RemotePredictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotePredictor")
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .field("inputs", &self.inputs)
            .field("passthrough", &self.passthrough)
            .finish_non_exhaustive()
    }
}

/// A v2 model input its metadata declares: its name, datatype, and shape
/// after the batch dimension (`-1` for a size the instances set).
#[derive(Debug, Clone, PartialEq)]
struct TensorInput {
    name: String,
    datatype: Option<String>,
    shape: Option<Vec<i64>>,
}

impl RemotePredictor {
    /// Whether v2 predictions keep the instance fields that name no input
    /// (default `true`).
    #[must_use]
    pub fn with_passthrough(mut self, passthrough: bool) -> Self {
        self.passthrough = passthrough;
        self
    }

    /// The URL each batch is sent to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request; the JSON of a 2xx answer, else the server's status and
    /// message.
    ///
    /// Transient failures are [retryable](PredictError::retryable): HTTP
    /// 429, 502, 503 and 504 (with the server's `Retry-After`, in seconds),
    /// a connection refused, reset or timed out. A call past `deadline`
    /// (the batch's, when the job has one) stops there and is not. A 413
    /// says the batch was [too large](PredictError::too_large).
    fn call(
        &self,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
        deadline: Option<Instant>,
    ) -> Result<Value, PredictError> {
        let timeout = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(self.timeout),
            None => self.timeout,
        };
        let send = || match &body {
            None => {
                let mut request = self.agent.get(url);
                for (k, v) in &self.headers {
                    request = request.header(k, v);
                }
                phases!(request.config(), timeout).build().call()
            }
            Some(body) => {
                let mut request = self
                    .agent
                    .post(url)
                    .header("Content-Type", "application/json");
                for (k, v) in &self.headers {
                    request = request.header(k, v);
                }
                phases!(request.config(), timeout).build().send(&body[..])
            }
        };
        // A kept-alive connection the server has closed meanwhile (as
        // servers do after an error, or when idle) fails at once: the
        // request goes again once, on a new connection. A prediction has
        // no side effects, so sending it twice is safe.
        let response = match send() {
            Err(ureq::Error::Io(e)) if closed_connection(&e) => send(),
            response => response,
        };
        let failed = |e: ureq::Error, what: String| {
            let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
            let unreachable = match &e {
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
                ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
                _ => false,
            };
            let transient = unreachable
                || match &e {
                    ureq::Error::Timeout(_) => !past_deadline,
                    ureq::Error::Io(io) => {
                        closed_connection(io) || io.kind() == std::io::ErrorKind::TimedOut
                    }
                    _ => false,
                };
            if unreachable {
                let (n, span) = self.streak.failed();
                if n >= self.unreachable.failures && span >= self.unreachable.span {
                    return PredictError::with_source(
                        format!(
                            "the model server at {url} is unreachable: {n} connection failures in a row over {} s, the last: {what}; the job stops here, its finished shards kept (run it again once the server is up)",
                            span.as_secs()
                        ),
                        e,
                    )
                    .fatal();
                }
            }
            let error = PredictError::with_source(what, e);
            if transient { error.retryable() } else { error }
        };
        let mut response = response.map_err(|e| failed(e, format!("{method} {url} failed")))?;
        self.streak.answered();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| failed(e, format!("{method} {url}: reading the answer failed")))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // A body that is not JSON may be a traceback: its last line
            // says what went wrong.
            let message = json.as_ref().and_then(server_message).unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                shorten(
                    text.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or(""),
                )
            });
            let error = PredictError::new(if message.is_empty() {
                format!("the model server answered {status}")
            } else {
                format!("the model server answered {status}: {message}")
            });
            return Err(match (status.as_u16(), retry_after) {
                (429 | 502 | 503 | 504, Some(wait)) => error.with_retry_after(wait),
                (429 | 502 | 503 | 504, None) => error.retryable(),
                (413, _) => error.too_large(),
                _ => error,
            });
        }
        let json = json.ok_or_else(|| {
            PredictError::new(format!(
                "the model server's answer is not JSON: {}",
                shorten(&String::from_utf8_lossy(&body))
            ))
        })?;
        match server_message(&json) {
            Some(message) => Err(PredictError::new(format!(
                "the model server answered with an error: {message}"
            ))),
            None => Ok(json),
        }
    }

    fn tf_serving(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        let n = batch.len();
        let instances: Vec<Value> = batch
            .into_iter()
            .map(|instance| match instance {
                Instance::Json(v) => v,
                Instance::Bytes(b) => {
                    json!({"b64": base64::engine::general_purpose::STANDARD.encode(b)})
                }
            })
            .collect();
        let mut body = Map::new();
        if ctx.signature_name() != crate::model::PredictionInput::DEFAULT_SIGNATURE_NAME {
            body.insert("signature_name".into(), ctx.signature_name().into());
        }
        body.insert("instances".into(), Value::Array(instances));
        let body = serde_json::to_vec(&body).expect("JSON values serialize");
        let mut answer = self.call("POST", &self.url, Some(body), ctx.deadline())?;
        match answer.get_mut("predictions").map(Value::take) {
            Some(Value::Array(predictions)) if predictions.len() == n => {
                // An instance's own error (`{"error": "…"}` in its place)
                // fails the batch, which is then split until that instance
                // is alone: its error, the others' predictions.
                match predictions.iter().find_map(instance_error) {
                    Some(message) => Err(PredictError::new(format!(
                        "the model server answered with an error for an instance: {message}"
                    ))),
                    None => Ok(predictions),
                }
            }
            Some(Value::Array(predictions)) => Err(PredictError::new(format!(
                "the model server returned {} for {}",
                count(predictions.len(), "prediction"),
                count(n, "instance")
            ))),
            _ => Err(PredictError::new(format!(
                "the model server's answer has no \"predictions\" array: {}",
                shorten(&answer.to_string())
            ))),
        }
    }

    fn v2(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        let n = batch.len();
        let values = batch
            .into_iter()
            .map(|instance| match instance {
                Instance::Json(v) => Ok(v),
                Instance::Bytes(_) => Err(PredictError::new(
                    "a binary ({\"b64\": …}) instance cannot feed a v2 tensor",
                )),
            })
            .collect::<Result<Vec<Value>, _>>()?;
        // No declared inputs: one input, the instance itself, or the one
        // field of an object instance besides its `key`, named after it.
        let undeclared = [TensorInput {
            name: values
                .first()
                .and_then(only_field)
                .unwrap_or(UNDECLARED)
                .to_owned(),
            datatype: None,
            shape: None,
        }];
        let inputs = if self.inputs.is_empty() {
            // Every object instance names the same one field.
            let name = &undeclared[0].name;
            if values
                .iter()
                .any(|v| v.is_object() && only_field(v) != Some(name.as_str()))
            {
                return Err(PredictError::new(
                    "the model server declares no inputs for this model, so an instance must be the input itself (a number or an array), or an object of one field besides \"key\" (sent as the input of that name)",
                ));
            }
            &undeclared[..]
        } else {
            &self.inputs
        };
        let tensors = inputs
            .iter()
            .map(|input| tensor(&values, input, inputs))
            .collect::<Result<Vec<_>, _>>()?;
        let body =
            serde_json::to_vec(&json!({ "inputs": tensors })).expect("JSON values serialize");
        let answer = self.call("POST", &self.url, Some(body), ctx.deadline())?;
        let Some(outputs) = answer.get("outputs").and_then(Value::as_array) else {
            return Err(PredictError::new(format!(
                "the model server's answer has no \"outputs\" array: {}",
                shorten(&answer.to_string())
            )));
        };
        let mut predictions: Vec<Map<String, Value>> = values
            .into_iter()
            .map(|v| match v {
                Value::Object(mut map) if self.passthrough => {
                    for input in inputs {
                        map.shift_remove(&input.name);
                    }
                    map
                }
                _ => Map::new(),
            })
            .collect();
        for output in outputs {
            place_output(&mut predictions, output, n)?;
        }
        Ok(predictions.into_iter().map(Value::Object).collect())
    }
}

impl Predictor for RemotePredictor {
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        match self.protocol {
            Protocol::TfServing => self.tf_serving(batch, ctx),
            Protocol::V2 => self.v2(batch, ctx),
        }
    }

    /// Each request's time-out is what is left of the batch's deadline.
    fn honors_deadline(&self) -> bool {
        true
    }

    /// Workers wait on the server: up to `maxWorkerCount` requests in flight.
    fn calls_mostly_wait(&self) -> bool {
        true
    }
}

/// Whether `e` is what a pooled connection the server closed gives.
fn closed_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// The message of a server's error answer: `{"error": "…"}` (TensorFlow
/// Serving, KServe v1 and v2) or `{"detail": …}` (FastAPI-based servers).
fn server_message(json: &Value) -> Option<String> {
    match json.get("error").or_else(|| json.get("detail"))? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(shorten(&other.to_string())),
    }
}

/// The message of a prediction that is an instance's error: an object
/// whose only field is `error`, a string.
fn instance_error(prediction: &Value) -> Option<&str> {
    match prediction.as_object() {
        Some(map) if map.len() == 1 => map.get("error")?.as_str(),
        _ => None,
    }
}

/// `1 thing`, `2 things`.
fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// `text` cut to 300 characters, for messages.
fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The inputs a v2 model's metadata declares (none: one undeclared input).
fn v2_inputs(metadata: &Value) -> Result<Vec<TensorInput>, String> {
    let Some(inputs) = metadata.get("inputs").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let inputs = inputs.as_array().ok_or("\"inputs\" is not an array")?;
    inputs
        .iter()
        .map(|input| {
            let name = input["name"]
                .as_str()
                .ok_or("an input without a \"name\"")?;
            let shape = match input.get("shape") {
                None | Some(Value::Null) => None,
                Some(Value::Array(dims)) => {
                    let dims = dims
                        .iter()
                        .map(Value::as_i64)
                        .collect::<Option<Vec<i64>>>()
                        .ok_or_else(|| format!("input {name:?}: a shape of integers expected"))?;
                    // The first dimension is the batch.
                    Some(dims.get(1..).unwrap_or_default().to_vec())
                }
                Some(_) => return Err(format!("input {name:?}: \"shape\" is not an array")),
            };
            Ok(TensorInput {
                name: name.to_owned(),
                datatype: input["datatype"].as_str().map(str::to_owned),
                shape,
            })
        })
        .collect()
}

/// The one field of an object instance besides `key`, the passthrough key
/// of AI Platform's instances: the input of a model that declares none.
fn only_field(instance: &Value) -> Option<&str> {
    let map = instance.as_object()?;
    let mut names = map.keys().filter(|k| k.as_str() != "key");
    match (names.next(), names.next()) {
        (Some(name), None) if !(map.len() == 1 && name == "b64") => Some(name),
        _ => None,
    }
}

/// The value of `input` in an instance: its field of that name, or the
/// whole instance for a model of one input that is not an object.
fn field<'v>(
    instance: &'v Value,
    input: &TensorInput,
    inputs: &[TensorInput],
) -> Result<&'v Value, PredictError> {
    match instance {
        Value::Object(map) => map.get(&input.name).ok_or_else(|| {
            PredictError::new(if input.name == UNDECLARED {
                "the model server declares no inputs for this model, so an instance must be the input itself (a number or an array), or an object of one field besides \"key\" (sent as the input of that name)".to_owned()
            } else {
                format!("the instance has no field {:?} for the model's input of that name", input.name)
            })
        }),
        other if inputs.len() == 1 => Ok(other),
        _ => Err(PredictError::new(format!(
            "the model has {} inputs ({}): an instance must be an object with a field for each",
            inputs.len(),
            inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Appends the scalars of `value`, which must have `shape`, to `data`.
fn flatten(value: &Value, shape: &[i64], data: &mut Vec<Value>) -> bool {
    match shape.split_first() {
        None => match value {
            Value::Array(_) | Value::Object(_) => false,
            scalar => {
                data.push(scalar.clone());
                true
            }
        },
        Some((&n, rest)) => match value {
            Value::Array(items) if items.len() as i64 == n => {
                items.iter().all(|item| flatten(item, rest, data))
            }
            _ => false,
        },
    }
}

/// The v2 tensor of `input` over the batch's instances.
fn tensor(
    values: &[Value],
    input: &TensorInput,
    inputs: &[TensorInput],
) -> Result<Value, PredictError> {
    let fields = values
        .iter()
        .map(|v| field(v, input, inputs))
        .collect::<Result<Vec<_>, _>>()?;
    // The shape after the batch dimension: declared, with `-1` sizes (and
    // an undeclared shape) taken from the first instance.
    let first = fields
        .first()
        .map(|f| crate::model::wire::json_shape(f))
        .unwrap_or_default();
    let mut shape = match &input.shape {
        Some(declared) => declared
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if d < 0 {
                    first.get(i).copied().unwrap_or(1)
                } else {
                    d
                }
            })
            .collect(),
        None => first,
    };
    // One value per instance may come bare: `3.5` as well as `[3.5]`.
    let bare = shape == [1] && fields.iter().all(|f| !f.is_array());
    if bare {
        shape.clear();
    }
    let mut data = Vec::with_capacity(values.len() * shape.iter().product::<i64>().max(1) as usize);
    for field in &fields {
        if !flatten(field, &shape, &mut data) {
            return Err(PredictError::with_source(
                format!(
                    "input {:?}: every instance must hold values of shape {shape:?}",
                    input.name
                ),
                format!("got {}", shorten(&field.to_string())),
            ));
        }
    }
    let datatype = match &input.datatype {
        Some(declared) => declared.clone(),
        None => datatype_of(&data).ok_or_else(|| {
            PredictError::new(format!(
                "input {:?}: its values must be all numbers, all booleans or all strings",
                input.name
            ))
        })?,
    };
    if bare {
        shape.push(1);
    }
    let mut full = vec![values.len() as i64];
    full.extend(shape);
    Ok(json!({"name": input.name, "shape": full, "datatype": datatype, "data": data}))
}

/// The v2 datatype of undeclared values: `BOOL`, `BYTES` (strings),
/// `INT64` (integers only) or `FP64`.
fn datatype_of(data: &[Value]) -> Option<String> {
    let all = |f: fn(&Value) -> bool| data.iter().all(f);
    let datatype = if all(Value::is_boolean) {
        "BOOL"
    } else if all(Value::is_string) {
        "BYTES"
    } else if all(|v| v.is_i64() || v.is_u64()) {
        "INT64"
    } else if all(Value::is_number) {
        "FP64"
    } else {
        return None;
    };
    Some(datatype.to_owned())
}

/// Puts one v2 output tensor into each instance's prediction: one value
/// per instance (a shape of `[n]` or `[n, 1]`) bare, anything else nested
/// as its shape says.
fn place_output(
    predictions: &mut [Map<String, Value>],
    output: &Value,
    n: usize,
) -> Result<(), PredictError> {
    let name = output["name"]
        .as_str()
        .ok_or_else(|| PredictError::new("the model server returned an output without a name"))?;
    let shape = output["shape"]
        .as_array()
        .and_then(|dims| dims.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| PredictError::new(format!("output {name:?} has no shape")))?;
    if shape.first() != Some(&(n as u64)) {
        return Err(PredictError::new(format!(
            "output {name:?} has shape {shape:?}, not one row for each of {}",
            count(n, "instance")
        )));
    }
    let mut data = Vec::new();
    flatten_any(&output["data"], &mut data);
    let inner: Vec<u64> = match &shape[1..] {
        [1] => Vec::new(),
        inner => inner.to_vec(),
    };
    let per_row: u64 = inner.iter().product();
    if data.len() as u64 != per_row * n as u64 {
        return Err(PredictError::new(format!(
            "output {name:?} has {} values for shape {shape:?}",
            data.len()
        )));
    }
    let mut values = data.into_iter();
    for prediction in predictions {
        prediction.insert(name.to_owned(), nest(&mut values, &inner));
    }
    Ok(())
}

/// Every scalar of `value`, nested arrays flattened in order (v2 `data`
/// may come flat or nested).
fn flatten_any(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten_any(item, out)),
        scalar => out.push(scalar.clone()),
    }
}

/// The next values of a row-major output, nested as `shape`.
fn nest(values: &mut impl Iterator<Item = Value>, shape: &[u64]) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(values, rest)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(metadata: Value) -> Vec<TensorInput> {
        v2_inputs(&metadata).unwrap()
    }

    #[test]
    fn metadata_inputs_drop_the_batch_dimension() {
        let got = inputs(json!({"name": "m", "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "c", "datatype": "BYTES", "shape": [-1]},
        ]}));
        assert_eq!(got[0].shape.as_deref(), Some(&[4][..]));
        assert_eq!(got[1].shape.as_deref(), Some(&[][..]));
        assert_eq!(got[0].datatype.as_deref(), Some("FP32"));
        assert!(inputs(json!({"name": "m"})).is_empty());
        assert!(v2_inputs(&json!({"inputs": [{"shape": [1]}]})).is_err());
    }

    #[test]
    fn tensors_are_built_from_fields_or_whole_instances() {
        let declared =
            inputs(json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]}));
        let values = [
            json!({"key": 1, "x": [1.0, 2]}),
            json!({"key": 2, "x": [3, 4.5]}),
        ];
        assert_eq!(
            tensor(&values, &declared[0], &declared).unwrap(),
            json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2, 3, 4.5]})
        );
        let undeclared = [TensorInput {
            name: "input-0".into(),
            datatype: None,
            shape: None,
        }];
        assert_eq!(
            tensor(&[json!([1, 2]), json!([3, 4])], &undeclared[0], &undeclared).unwrap(),
            json!({"name": "input-0", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]})
        );
        assert_eq!(
            tensor(&[json!(0.5), json!(2)], &undeclared[0], &undeclared).unwrap()["datatype"],
            "FP64"
        );
        let e = tensor(&[json!({"x": 1})], &undeclared[0], &undeclared).unwrap_err();
        assert!(e.message().contains("declares no inputs"), "{e}");
        let e = tensor(
            &[json!({"x": [1.0, 2]}), json!({"x": [1.0]})],
            &declared[0],
            &declared,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "input \"x\": every instance must hold values of shape [2]"
        );
        assert_eq!(
            e.to_string(),
            "input \"x\": every instance must hold values of shape [2]: got [1.0]"
        );
        let e = tensor(&[json!({"y": 1})], &declared[0], &declared).unwrap_err();
        assert!(e.message().contains("no field \"x\""), "{e}");
    }

    #[test]
    fn outputs_go_back_to_their_instances() {
        let mut predictions = vec![Map::new(), Map::new()];
        place_output(
            &mut predictions,
            &json!({"name": "label", "shape": [2], "data": [1, 0]}),
            2,
        )
        .unwrap();
        place_output(
            &mut predictions,
            &json!({"name": "p", "shape": [2, 2], "data": [[0.25, 0.75], [0.5, 0.5]]}),
            2,
        )
        .unwrap();
        place_output(
            &mut predictions,
            &json!({"name": "s", "shape": [2, 1], "data": [7, 8]}),
            2,
        )
        .unwrap();
        assert_eq!(
            Value::Object(predictions[0].clone()),
            json!({"label": 1, "p": [0.25, 0.75], "s": 7})
        );
        assert_eq!(
            Value::Object(predictions[1].clone()),
            json!({"label": 0, "p": [0.5, 0.5], "s": 8})
        );
        let e = place_output(
            &mut predictions,
            &json!({"name": "q", "shape": [3], "data": [1, 2, 3]}),
            2,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "output \"q\" has shape [3], not one row for each of 2 instances"
        );
        let e = place_output(
            &mut predictions,
            &json!({"name": "q", "shape": [2, 2], "data": [1, 2, 3]}),
            2,
        )
        .unwrap_err();
        assert_eq!(e.message(), "output \"q\" has 3 values for shape [2, 2]");
    }

    #[test]
    fn protocols_parse_and_print() {
        assert_eq!("v2".parse::<Protocol>(), Ok(Protocol::V2));
        assert_eq!("tfserving".parse::<Protocol>(), Ok(Protocol::TfServing));
        assert!(
            "grpc"
                .parse::<Protocol>()
                .unwrap_err()
                .contains("expected tfserving or v2")
        );
        assert_eq!(Protocol::V2.to_string(), "v2");
    }

    #[test]
    fn names_that_cannot_be_url_segments_are_refused() {
        let r = RemoteResolver::new("http://127.0.0.1:1", Protocol::TfServing);
        let e = r.connect("a/b", None).unwrap_err();
        assert!(
            e.message().contains("cannot go in a model server's URL"),
            "{e}"
        );
        let e = r.connect("m", Some("v 1")).unwrap_err();
        assert!(e.message().starts_with("version name \"v 1\""), "{e}");
    }

    #[test]
    fn an_instances_error_is_an_object_of_one_error_string() {
        assert_eq!(
            instance_error(&json!({"error": "bad input"})),
            Some("bad input")
        );
        assert_eq!(instance_error(&json!({"error": "x", "label": 1})), None);
        assert_eq!(instance_error(&json!({"error": 3})), None);
        assert_eq!(instance_error(&json!([1, 2])), None);
    }

    #[test]
    fn server_messages_are_found_and_kept_short() {
        assert_eq!(
            server_message(&json!({"error": "bad input"})).as_deref(),
            Some("bad input")
        );
        assert_eq!(
            server_message(&json!({"detail": [{"msg": "x"}]})).as_deref(),
            Some("[{\"msg\":\"x\"}]")
        );
        assert_eq!(server_message(&json!({"predictions": []})), None);
        assert_eq!(shorten(&"é".repeat(400)).chars().count(), 301);
    }
}
