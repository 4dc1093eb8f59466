//! Predictors: a user's model behind one call per batch, and the resolver
//! that finds the model a job names.
//!
//! One [`Predictor`] is loaded per job and shared by every worker thread
//! (`Send + Sync`, called through `&self`): the model is loaded once, and a
//! model whose inference is thread-safe (as an optimized tract plan is) needs
//! no copies. A predictor that wants per-thread scratch space keeps it in a
//! `thread_local!` or a pool of its own.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::model::{DataFormat, Job, ModelVersion};
use crate::name::{ModelName, VersionName};
use crate::record::Instance;

/// The label a job sets to `off` to leave out of its predictions the
/// instance fields that name no model input, which the tensor predictors
/// (`OnnxPredictor`, `OrtPredictor`, and `RemotePredictor` over the v2
/// protocol) otherwise pass through (a `key`).
pub const PASSTHROUGH_LABEL: &str = "bp-passthrough";

/// Cancels a running job from any thread: workers stop at the next batch
/// boundary. Clones share the flag.
///
/// ```
/// let handle = batch_prediction::predict::CancelHandle::new();
/// let other = handle.clone();
/// other.cancel();
/// assert!(handle.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// A handle that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a predictor knows about the call besides its batch.
#[derive(Debug, Clone)]
pub struct PredictContext<'a> {
    pub(crate) signature_name: &'a str,
    pub(crate) cancel: &'a CancelHandle,
    pub(crate) worker: usize,
    pub(crate) deadline: Option<Instant>,
}

impl<'a> PredictContext<'a> {
    /// A context, for calling a predictor outside the executor (in tests).
    pub fn new(signature_name: &'a str, cancel: &'a CancelHandle, worker: usize) -> Self {
        PredictContext {
            signature_name,
            cancel,
            worker,
            deadline: None,
        }
    }

    /// The same context with a deadline for the call.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The job's `signatureName` (`serving_default` when the job has none).
    pub fn signature_name(&self) -> &str {
        self.signature_name
    }

    /// Whether the job was cancelled; a long prediction may check it and
    /// return early with an error.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The index of the worker thread making the call, from 0.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// When the call must have returned, if the job has a batch deadline
    /// ([`ExecutorConfig::with_batch_deadline`](crate::ExecutorConfig::with_batch_deadline)):
    /// past it the batch counts as failed, and whatever the call returns
    /// later is dropped. A predictor that stops by then itself (a remote
    /// call with this as its time-out) says so with
    /// [`Predictor::honors_deadline`].
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// A failed prediction or model load: a message, and the cause if any.
///
/// The message is what `errors_stats` groups failures by, so it should not
/// hold per-instance details.
///
/// An error can say that it is worth another try ([`retryable`](Self::retryable):
/// a model server that sheds load or drops a connection): the executor then
/// calls again with the same batch, after a backoff (at least
/// [`retry_after`](Self::retry_after)), up to its retry policy
/// ([`ExecutorConfig::with_predict_retries`](crate::ExecutorConfig::with_predict_retries)).
/// Any other failed batch is split to find the instances that fail.
#[derive(Debug)]
pub struct PredictError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    retryable: bool,
    retry_after: Option<Duration>,
    too_large: bool,
    fatal: bool,
}

impl PredictError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        PredictError {
            message: message.into(),
            source: None,
            retryable: false,
            retry_after: None,
            too_large: false,
            fatal: false,
        }
    }

    /// An error with a message and the error that caused it.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        PredictError {
            source: Some(source.into()),
            ..PredictError::new(message)
        }
    }

    /// The same error, marked as transient: the same batch may well
    /// succeed if sent again (HTTP 429 or 503, a dropped connection).
    #[must_use]
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// The same error, transient, with the wait the server asked for
    /// before the next try (an HTTP `Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retryable = true;
        self.retry_after = Some(wait);
        self
    }

    /// The same error, saying that the batch was too large for the model
    /// (an HTTP 413, a payload limit): the batch is split as any failed
    /// batch is, and a job with adaptive batches
    /// ([`ExecutorConfig::with_adaptive_batch`](crate::ExecutorConfig::with_adaptive_batch))
    /// makes its next ones smaller.
    #[must_use]
    pub fn too_large(mut self) -> Self {
        self.too_large = true;
        self
    }

    /// The same error, saying that the job cannot go on (a model server
    /// that stopped answering altogether): the executor stops the job at
    /// once, FAILED with this error's message, instead of trying the
    /// batch's parts. The shards it committed are kept, so running the job
    /// again resumes from them.
    #[must_use]
    pub fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    /// Whether the job cannot go on ([`fatal`](Self::fatal)).
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the batch was too large ([`too_large`](Self::too_large)).
    pub fn is_too_large(&self) -> bool {
        self.too_large
    }

    /// Whether the error is transient ([`retryable`](Self::retryable)).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The wait asked for before the next try, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for PredictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PredictError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A model: one call per batch, one prediction per instance.
///
/// Instances are JSON values or bytes ([`Instance`]); a prediction is a JSON
/// value, usually an object of output name → value, which becomes one line of
/// the results. The batch is the predictor's to keep: it can move the data
/// into its tensors without a copy. The executor contains failures: an
/// `Err`, a panic, or a wrong number of predictions fails the batch, which
/// is then split (decoding the instances again from their records) until
/// the failing instances are isolated.
///
/// # Example
/// ```
/// use batch_prediction::{Instance, PredictContext, PredictError, Predictor};
/// use batch_prediction::predict::CancelHandle;
/// use serde_json::{Value, json};
///
/// /// Sums the `x` list of each instance.
/// struct Sum;
///
/// impl Predictor for Sum {
///     fn predict(&self, batch: Vec<Instance>, _: &PredictContext<'_>) -> Result<Vec<Value>, PredictError> {
///         batch.iter().map(|instance| {
///             let Instance::Json(v) = instance else { return Err(PredictError::new("expected JSON")) };
///             let x = v["x"].as_array().ok_or_else(|| PredictError::new("missing input x"))?;
///             Ok(json!({"sum": x.iter().filter_map(Value::as_f64).sum::<f64>()}))
///         }).collect()
///     }
/// }
///
/// let cancel = CancelHandle::new();
/// let out = Sum.predict(vec![Instance::Json(json!({"x": [1.0, 2.5]}))], &PredictContext::new("serving_default", &cancel, 0))?;
/// assert_eq!(out, [json!({"sum": 3.5})]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Predictor: Send + Sync {
    /// Predicts a batch: exactly one value per instance, in order.
    ///
    /// # Errors
    /// A [`PredictError`] when the batch cannot be predicted.
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError>;

    /// Whether calls mostly wait (on a model server) rather than compute:
    /// the executor then runs as many workers as the job's
    /// `maxWorkerCount` (at most 1,024), whatever the machine's cores and
    /// [`ExecutorConfig::max_threads`](crate::ExecutorConfig::max_threads),
    /// so that that many requests can be in flight. `false` by default.
    fn calls_mostly_wait(&self) -> bool {
        false
    }

    /// Whether the records of a job of input `format` reach
    /// [`predict`](Self::predict) as they are (`true`: a JSON or TEXT line
    /// as a JSON string of its text, a TFRecord record as
    /// [`Instance::Bytes`]) or decoded as JSON instances (`false`: each line
    /// or record parsed as a JSON line is, `{"b64": …}` as bytes, a record
    /// that is not JSON being that record's error).
    ///
    /// This is how AI Platform read its inputs: a model whose signature
    /// takes one string per instance got each line or record unchanged (a
    /// serialized `tf.train.Example`), any other model a JSON instance;
    /// `gcloud` submits JSON lines as `TEXT`. By default: TFRecord records
    /// as they are, JSON and TEXT lines as JSON. Asked once per job.
    fn takes_raw_records(&self, format: DataFormat) -> bool {
        matches!(format, DataFormat::TfRecord | DataFormat::TfRecordGzip)
    }

    /// Whether this predictor returns by the [deadline](PredictContext::deadline)
    /// of the call on its own (a remote call with it as its time-out), so
    /// that the executor calls it directly. Otherwise (the default), when
    /// the job has a batch deadline, each call runs on a watched thread,
    /// and a call past its deadline is abandoned there: its batch fails,
    /// its result, if it ever comes, is dropped.
    fn honors_deadline(&self) -> bool {
        false
    }

    /// An optional fast path for JSON-lines input: predicts a batch from the
    /// text of its lines, writing each prediction's JSON text to `out`, and
    /// returns `true`; or returns `false` (the default) to leave the batch to
    /// [`predict`](Self::predict).
    ///
    /// The executor offers each batch of a `JSON` job whose output is JSON
    /// lines here first. A predictor that wants tensors can then read the
    /// numbers straight from the text into its input buffers, and write its
    /// outputs without building [`Value`]s: the ONNX predictors do.
    ///
    /// The contract, which keeps results independent of the path taken:
    /// - Each line is a record as read, which may be anything: invalid JSON,
    ///   invalid UTF-8, a `{"b64": …}` object. Return `false` for any batch
    ///   holding a line this path does not handle exactly as `predict` would
    ///   handle its decoded [`Instance`], and whenever something fails: the
    ///   executor then forgets what was written, decodes the lines and calls
    ///   `predict`, which reports errors as usual (with bisection).
    /// - On `true`, `out` holds exactly one prediction per line, in order,
    ///   each the exact text `serde_json::to_writer` writes for the value
    ///   `predict` would return for that line; otherwise the executor falls
    ///   back to `predict` for the batch.
    /// - A panic here is taken as `false`.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::{Instance, PredictContext, PredictError, Predictor};
    /// use batch_prediction::predict::{CancelHandle, JsonPredictions};
    /// use serde_json::{Value, json};
    ///
    /// /// Doubles `x`.
    /// struct Double;
    ///
    /// impl Predictor for Double {
    ///     fn predict(&self, batch: Vec<Instance>, _: &PredictContext<'_>) -> Result<Vec<Value>, PredictError> {
    ///         batch.iter().map(|instance| match instance {
    ///             Instance::Json(v) => v["x"].as_u64().map(|x| json!({"y": 2 * x})),
    ///             Instance::Bytes(_) => None,
    ///         }.ok_or_else(|| PredictError::new("expected an object with an integer x"))).collect()
    ///     }
    ///
    ///     fn predict_json_lines(&self, lines: &[&[u8]], _: &PredictContext<'_>, out: &mut JsonPredictions<'_>) -> bool {
    ///         #[derive(serde::Deserialize)]
    ///         #[serde(deny_unknown_fields)]
    ///         struct In { x: u64 }
    ///         for line in lines {
    ///             // Anything but exactly {"x": N} (a b64 object, other fields) goes to `predict`.
    ///             let Ok(In { x }) = serde_json::from_slice(line) else { return false };
    ///             let Some(y) = x.checked_mul(2) else { return false };
    ///             let text = out.begin();
    ///             text.extend_from_slice(b"{\"y\":");
    ///             text.extend_from_slice(y.to_string().as_bytes());
    ///             text.push(b'}');
    ///         }
    ///         true
    ///     }
    /// }
    ///
    /// let cancel = CancelHandle::new();
    /// let ctx = PredictContext::new("serving_default", &cancel, 0);
    /// let mut text = Vec::new();
    /// let mut out = JsonPredictions::new(&mut text);
    /// assert!(Double.predict_json_lines(&[b"{\"x\": 2}", b" {\"x\":5} "], &ctx, &mut out));
    /// assert_eq!(out.len(), 2);
    /// out.finish();
    /// assert_eq!(text, b"{\"y\":4}\n{\"y\":10}\n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        ctx: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        let _ = (lines, ctx, out);
        false
    }
}

/// Where [`Predictor::predict_json_lines`] writes its predictions: JSON
/// lines appended to a buffer, one per [`begin`](Self::begin).
#[derive(Debug)]
pub struct JsonPredictions<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    count: usize,
}

impl<'a> JsonPredictions<'a> {
    /// Predictions appended to `buf` (what it holds already stays).
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        let start = buf.len();
        JsonPredictions {
            buf,
            start,
            count: 0,
        }
    }

    /// Starts the next prediction: the buffer its JSON text goes to, which
    /// must be one JSON value with no raw newline (as `serde_json` writes
    /// values). Write nothing else to it.
    pub fn begin(&mut self) -> &mut Vec<u8> {
        if self.count > 0 {
            self.buf.push(b'\n');
        }
        self.count += 1;
        self.buf
    }

    /// How many predictions were started.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none was started.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Ends the last line: the buffer then holds one line per prediction.
    pub fn finish(self) {
        if self.count > 0 {
            self.buf.push(b'\n');
        }
    }

    /// Forgets every prediction written.
    pub(crate) fn discard(self) {
        self.buf.truncate(self.start);
    }
}

impl<P: Predictor + ?Sized> Predictor for Arc<P> {
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        (**self).predict(batch, ctx)
    }

    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        ctx: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        (**self).predict_json_lines(lines, ctx, out)
    }
    fn honors_deadline(&self) -> bool {
        (**self).honors_deadline()
    }

    fn calls_mostly_wait(&self) -> bool {
        (**self).calls_mostly_wait()
    }

    fn takes_raw_records(&self, format: DataFormat) -> bool {
        (**self).takes_raw_records(format)
    }
}

impl<P: Predictor + ?Sized> Predictor for Box<P> {
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        (**self).predict(batch, ctx)
    }

    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        ctx: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        (**self).predict_json_lines(lines, ctx, out)
    }
    fn honors_deadline(&self) -> bool {
        (**self).honors_deadline()
    }

    fn calls_mostly_wait(&self) -> bool {
        (**self).calls_mostly_wait()
    }

    fn takes_raw_records(&self, format: DataFormat) -> bool {
        (**self).takes_raw_records(format)
    }
}

/// A predictor from a closure; see [`predictor_fn`].
pub struct FnPredictor<F>(F);

impl<F> fmt::Debug for FnPredictor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnPredictor")
    }
}

/// A predictor that calls `f` for each batch.
///
/// ```
/// use batch_prediction::{Instance, PredictError, predictor_fn};
/// use serde_json::json;
///
/// let constant = predictor_fn(|batch: Vec<Instance>, _ctx: &_| Ok(vec![json!({"p": 0.5}); batch.len()]));
/// # let _ = constant;
/// ```
pub fn predictor_fn<F>(f: F) -> FnPredictor<F>
where
    F: Fn(Vec<Instance>, &PredictContext<'_>) -> Result<Vec<Value>, PredictError> + Send + Sync,
{
    FnPredictor(f)
}

impl<F> Predictor for FnPredictor<F>
where
    F: Fn(Vec<Instance>, &PredictContext<'_>) -> Result<Vec<Value>, PredictError> + Send + Sync,
{
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        (self.0)(batch, ctx)
    }
}

/// Predicts each instance as itself (bytes as `{"b64": …}`): for trying a
/// job's plumbing, and for measuring the executor's own cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoPredictor;

impl Predictor for EchoPredictor {
    fn predict(
        &self,
        batch: Vec<Instance>,
        _: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        Ok(batch.into_iter().map(Instance::into_json).collect())
    }

    /// Writes each line's JSON as it reads it, with no `Value` between; a
    /// line a `Value` would hold differently (a repeated field name, a
    /// `{"b64": …}` instance) leaves the batch to `predict`.
    fn predict_json_lines(
        &self,
        lines: &[&[u8]],
        _: &PredictContext<'_>,
        out: &mut JsonPredictions<'_>,
    ) -> bool {
        lines
            .iter()
            .all(|line| crate::transcode::echo(line, out.begin()))
    }
}

type InstanceTest = Box<dyn Fn(&Instance) -> bool + Send + Sync>;

/// Wraps a predictor and misbehaves on chosen instances, so a service can
/// test its error handling: a batch holding a chosen instance fails with an
/// error, panics, or returns one prediction too few.
///
/// ```
/// use batch_prediction::{EchoPredictor, Instance};
/// use batch_prediction::predict::FaultyPredictor;
///
/// let faulty = FaultyPredictor::new(EchoPredictor)
///     .fail_when(|i| i.to_json()["fail"] == true)
///     .panic_when(|i| i.to_json()["panic"] == true);
/// # let _ = faulty;
/// ```
pub struct FaultyPredictor<P> {
    inner: P,
    fail: Option<InstanceTest>,
    panic: Option<InstanceTest>,
    miscount: Option<InstanceTest>,
    calls: AtomicU64,
}

impl<P> fmt::Debug for FaultyPredictor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyPredictor")
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<P: Predictor> FaultyPredictor<P> {
    /// The message of an injected failure.
    pub const FAILURE_MESSAGE: &'static str = "injected failure";
    /// The message of an injected panic.
    pub const PANIC_MESSAGE: &'static str = "injected panic";

    /// Wraps `inner`, misbehaving on nothing yet.
    pub fn new(inner: P) -> Self {
        FaultyPredictor {
            inner,
            fail: None,
            panic: None,
            miscount: None,
            calls: AtomicU64::new(0),
        }
    }

    /// Fails, with [`Self::FAILURE_MESSAGE`], any batch holding an instance for which `test` is true.
    #[must_use]
    pub fn fail_when(mut self, test: impl Fn(&Instance) -> bool + Send + Sync + 'static) -> Self {
        self.fail = Some(Box::new(test));
        self
    }

    /// Panics, with [`Self::PANIC_MESSAGE`], on any batch holding an instance for which `test` is true.
    #[must_use]
    pub fn panic_when(mut self, test: impl Fn(&Instance) -> bool + Send + Sync + 'static) -> Self {
        self.panic = Some(Box::new(test));
        self
    }

    /// Returns one prediction too few for any batch holding an instance for which `test` is true.
    #[must_use]
    pub fn miscount_when(
        mut self,
        test: impl Fn(&Instance) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.miscount = Some(Box::new(test));
        self
    }

    /// How many times `predict` was called.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl<P: Predictor> Predictor for FaultyPredictor<P> {
    fn predict(
        &self,
        batch: Vec<Instance>,
        ctx: &PredictContext<'_>,
    ) -> Result<Vec<Value>, PredictError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let hit = |test: &Option<InstanceTest>| test.as_ref().is_some_and(|t| batch.iter().any(t));
        if hit(&self.panic) {
            panic!("{}", Self::PANIC_MESSAGE);
        }
        if hit(&self.fail) {
            return Err(PredictError::new(Self::FAILURE_MESSAGE));
        }
        let miscount = hit(&self.miscount);
        let mut out = self.inner.predict(batch, ctx)?;
        if miscount {
            out.pop();
        }
        Ok(out)
    }

    fn honors_deadline(&self) -> bool {
        self.inner.honors_deadline()
    }

    fn calls_mostly_wait(&self) -> bool {
        self.inner.calls_mostly_wait()
    }

    fn takes_raw_records(&self, format: DataFormat) -> bool {
        self.inner.takes_raw_records(format)
    }
}

/// Finds and loads the model a job names. Called once per job; the
/// predictor it returns is shared by every worker.
///
/// Closures `Fn(&ModelVersion, &Job) -> Result<Arc<dyn Predictor>, PredictError>` are resolvers.
pub trait ModelResolver: Send + Sync {
    /// Loads the model `model` of `job`.
    ///
    /// # Errors
    /// A [`PredictError`] saying why the model cannot be loaded; the job then
    /// ends FAILED with that message.
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError>;
}

impl<F> ModelResolver for F
where
    F: Fn(&ModelVersion, &Job) -> Result<Arc<dyn Predictor>, PredictError> + Send + Sync,
{
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        self(model, job)
    }
}

/// Resolves every model to the [`EchoPredictor`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoResolver;

impl ModelResolver for EchoResolver {
    fn resolve(&self, _: &ModelVersion, _: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        Ok(Arc::new(EchoPredictor))
    }
}

type UriLoader = Box<dyn Fn(&str) -> Result<Arc<dyn Predictor>, PredictError> + Send + Sync>;

/// Models by name, as a service that hosts several would keep them:
/// versions with their predictors, each model's default version, and an
/// optional loader for `uri` models.
///
/// `modelName` resolves to the model's default version, `versionName` to
/// that version, `uri` to what the loader returns.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use batch_prediction::{EchoPredictor, Job, ModelResolver, ModelVersion};
/// use batch_prediction::predict::ModelRegistry;
///
/// let v1 = "projects/my-proj/models/census/versions/v1".parse()?;
/// let registry = ModelRegistry::new()
///     .with_version(&v1, Arc::new(EchoPredictor))
///     .with_default_version(&v1);
/// let by_model = ModelVersion::model("projects/my-proj/models/census")?;
/// assert!(registry.resolve(&by_model, &Job::default()).is_ok());
/// let missing = ModelVersion::model("projects/my-proj/models/other")?;
/// assert_eq!(
///     registry.resolve(&missing, &Job::default()).err().unwrap().to_string(),
///     "model \"projects/my-proj/models/other\" not found"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct ModelRegistry {
    versions: HashMap<VersionName, Arc<dyn Predictor>>,
    defaults: HashMap<ModelName, VersionName>,
    uri_loader: Option<UriLoader>,
}

impl fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .field("defaults", &self.defaults)
            .field("uri_loader", &self.uri_loader.is_some())
            .finish()
    }
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a version and its (loaded) predictor.
    #[must_use]
    pub fn with_version(mut self, version: &VersionName, predictor: Arc<dyn Predictor>) -> Self {
        self.versions.insert(version.clone(), predictor);
        self
    }

    /// Makes `version` its model's default version.
    #[must_use]
    pub fn with_default_version(mut self, version: &VersionName) -> Self {
        self.defaults.insert(version.model_name(), version.clone());
        self
    }

    /// Loads `uri` models with `loader`.
    #[must_use]
    pub fn with_uri_loader(
        mut self,
        loader: impl Fn(&str) -> Result<Arc<dyn Predictor>, PredictError> + Send + Sync + 'static,
    ) -> Self {
        self.uri_loader = Some(Box::new(loader));
        self
    }
}

impl ModelResolver for ModelRegistry {
    fn resolve(&self, model: &ModelVersion, _: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        let version = match model {
            ModelVersion::Model(name) => self
                .defaults
                .get(name)
                .ok_or_else(|| PredictError::new(format!("model \"{name}\" not found")))?,
            ModelVersion::Version(version) => version,
            ModelVersion::Uri(uri) => {
                let loader = self.uri_loader.as_ref().ok_or_else(|| {
                    PredictError::new(format!(
                        "cannot load model {uri:?}: no loader for uri models"
                    ))
                })?;
                return loader(uri);
            }
        };
        self.versions
            .get(version)
            .cloned()
            .ok_or_else(|| PredictError::new(format!("version \"{version}\" not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A predictor with every hint set.
    struct Hinted;

    impl Predictor for Hinted {
        fn predict(
            &self,
            _: Vec<Instance>,
            _: &PredictContext<'_>,
        ) -> Result<Vec<Value>, PredictError> {
            Ok(Vec::new())
        }

        fn honors_deadline(&self) -> bool {
            true
        }

        fn calls_mostly_wait(&self) -> bool {
            true
        }
    }

    /// `Arc`, `Box` and `FaultyPredictor` pass a predictor's hints on: the
    /// executor holds an `Arc<dyn Predictor>`, whose own impl is what it calls.
    #[test]
    fn wrappers_pass_every_hint_on() {
        fn hints(p: &impl Predictor) -> (bool, bool) {
            (p.honors_deadline(), p.calls_mostly_wait())
        }
        let arc: Arc<dyn Predictor> = Arc::new(Hinted);
        let boxed: Box<dyn Predictor> = Box::new(Hinted);
        assert_eq!(hints(&arc), (true, true));
        assert_eq!(hints(&boxed), (true, true));
        assert_eq!(hints(&FaultyPredictor::new(Hinted)), (true, true));
        assert_eq!(hints(&EchoPredictor), (false, false));
    }
}
