//! `Job`, `State` and `Etag`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::{self, MapAccess};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::prediction::{Message, Optional, PredictionInput, PredictionOutput, UnknownEnumValue};
use super::wire::{self, Path, Seen, WireEnum};
use crate::error::{Error, Result};

/// The state of a job (`state`).
///
/// `Display` and serde use the wire value, e.g. `"RUNNING"`. The legal moves
/// between states live in [`crate::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum State {
    /// `STATE_UNSPECIFIED`: no state; a job that was never created.
    Unspecified,
    /// `QUEUED`: created and waiting to run.
    Queued,
    /// `PREPARING`: resources are being prepared.
    Preparing,
    /// `RUNNING`: running.
    Running,
    /// `SUCCEEDED`: finished; final.
    Succeeded,
    /// `FAILED`: failed, `errorMessage` says why; final.
    Failed,
    /// `CANCELLING`: a cancel was asked for and is under way.
    Cancelling,
    /// `CANCELLED`: cancelled, `errorMessage` gives the reason; final.
    Cancelled,
}

impl WireEnum for State {
    const ALL: &'static [Self] = &[
        State::Unspecified,
        State::Queued,
        State::Preparing,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelling,
        State::Cancelled,
    ];

    fn as_str(self) -> &'static str {
        State::as_str(self)
    }
}

impl State {
    /// Every value, in the order of the API's enum.
    pub const ALL: &'static [State] = <State as WireEnum>::ALL;

    /// The wire value, e.g. `"QUEUED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unspecified => "STATE_UNSPECIFIED",
            State::Queued => "QUEUED",
            State::Preparing => "PREPARING",
            State::Running => "RUNNING",
            State::Succeeded => "SUCCEEDED",
            State::Failed => "FAILED",
            State::Cancelling => "CANCELLING",
            State::Cancelled => "CANCELLED",
        }
    }
}

impl FromStr for State {
    type Err = UnknownEnumValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        wire::parse_enum(s).ok_or_else(|| UnknownEnumValue {
            what: "State",
            input: s.to_owned(),
            expected: wire::enum_names::<State>(),
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An etag: opaque bytes for optimistic concurrency, base64 on the wire.
///
/// `Display` and `FromStr` use standard base64 with padding; parsing also
/// takes the URL-safe alphabet and missing padding, as proto3 JSON parsers do.
///
/// # Example
/// ```
/// use batch_prediction::Etag;
///
/// let etag: Etag = "BwWWja0YfJA=".parse()?;
/// assert_eq!(etag.as_bytes(), &[7, 5, 150, 141, 173, 24, 124, 144]);
/// assert_eq!(etag.to_string(), "BwWWja0YfJA=");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Etag(Vec<u8>);

impl Etag {
    /// An etag holding `bytes`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Etag(bytes.into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consumes the etag, giving its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Etag({self})")
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&wire::encode_base64(&self.0))
    }
}

/// The error of parsing an [`Etag`] that is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid etag {input:?}: expected bytes in base64")]
pub struct InvalidEtag {
    input: String,
}

impl InvalidEtag {
    /// The text that was not base64.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl FromStr for Etag {
    type Err = InvalidEtag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        wire::decode_base64(s).map(Etag).ok_or_else(|| InvalidEtag {
            input: s.to_owned(),
        })
    }
}

impl Serialize for Etag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Etag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A job (`GoogleCloudMlV1__Job`): the body of `jobs.create`, and what
/// `jobs.get` returns.
///
/// The JSON form is the API's, byte for byte in meaning:
///
/// - lowerCamelCase names; a field absent on input stays `None` and is not
///   written (never as `null`); `null` on input reads as absent. Empty
///   `labels` are written as absent, as proto3 JSON does.
/// - int64 fields are written as strings and read from strings or numbers;
///   times are RFC 3339, read with any offset and up to nanosecond
///   fractions, written in UTC with `Z`; `etag` is base64.
/// - `trainingInput`, `trainingOutput` and every field this crate does not
///   know are kept as JSON and written back unchanged (numbers in them as
///   serde_json holds them: integers in the i64/u64 range exactly, others as
///   the nearest double; inside them, a repeated key keeps its last value).
/// - Reading fails, naming the field and quoting the value, on a wrong type, a
///   bad int64, time, base64 or enum value, or a duplicate key. Breaches of the
///   API's rules that a well-formed request can still carry — several of
///   `modelName`, `versionName`, `uri`, or a model name that breaks its rules —
///   are kept and reported by [`Job::validate`] with every other violation.
///
/// # Example
/// ```
/// use batch_prediction::{DataFormat, Job, ModelVersion, PredictionInput};
///
/// let job = Job::new(
///     "census_batch_1",
///     PredictionInput::new(
///         DataFormat::Json,
///         ["gs://bucket/in/*"],
///         "gs://bucket/out",
///         "us-central1",
///         ModelVersion::version("projects/my-proj/models/census/versions/v1")?,
///     )
///     .set_batch_size(64),
/// )
/// .set_label("team", "engineering");
/// job.validate()?;
///
/// let json = job.to_json();
/// assert_eq!(json["predictionInput"]["batchSize"], "64");
/// assert_eq!(Job::from_json(&json.to_string())?, job);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Job {
    /// `jobId`: the user-chosen ID, unique in the project. Required on create.
    pub job_id: Option<String>,
    /// `createTime`: output only.
    pub create_time: Option<DateTime<Utc>>,
    /// `startTime`: output only; set when processing starts.
    pub start_time: Option<DateTime<Utc>>,
    /// `endTime`: output only; set when the job reaches a final state.
    pub end_time: Option<DateTime<Utc>>,
    /// `state`: output only.
    pub state: Option<State>,
    /// `errorMessage`: output only; why the job failed or was cancelled.
    pub error_message: Option<String>,
    /// `labels`: at most 64 key/value pairs.
    pub labels: BTreeMap<String, String>,
    /// `etag`: optimistic concurrency token.
    pub etag: Option<Etag>,
    /// `jobPosition` (int64): output only; the queue position while `QUEUED`.
    pub job_position: Option<i64>,
    /// `predictionInput`: the batch prediction request.
    pub prediction_input: Option<PredictionInput>,
    /// `predictionOutput`: output only; the current result.
    pub prediction_output: Option<PredictionOutput>,
    /// `trainingInput`: a training job's input, kept as JSON.
    pub training_input: Option<Value>,
    /// `trainingOutput`: a training job's output, kept as JSON.
    pub training_output: Option<Value>,
    /// Fields this crate does not know, kept and written back unchanged.
    /// Entries named like a field above are not written.
    pub unknown_fields: Map<String, Value>,
}

impl Serialize for Job {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.job_id {
            m.serialize_entry("jobId", v)?;
        }
        for (key, time) in [
            ("createTime", &self.create_time),
            ("startTime", &self.start_time),
            ("endTime", &self.end_time),
        ] {
            if let Some(t) = time {
                m.serialize_entry(key, &wire::Time(t))?;
            }
        }
        if let Some(v) = &self.state {
            m.serialize_entry("state", v)?;
        }
        if let Some(v) = &self.error_message {
            m.serialize_entry("errorMessage", v)?;
        }
        if !self.labels.is_empty() {
            m.serialize_entry("labels", &self.labels)?;
        }
        if let Some(v) = &self.etag {
            m.serialize_entry("etag", v)?;
        }
        if let Some(v) = self.job_position {
            m.serialize_entry("jobPosition", &wire::Int64(v))?;
        }
        if let Some(v) = &self.prediction_input {
            m.serialize_entry("predictionInput", v)?;
        }
        if let Some(v) = &self.prediction_output {
            m.serialize_entry("predictionOutput", v)?;
        }
        if let Some(v) = &self.training_input {
            m.serialize_entry("trainingInput", v)?;
        }
        if let Some(v) = &self.training_output {
            m.serialize_entry("trainingOutput", v)?;
        }
        wire::unknown_entries(&mut m, &self.unknown_fields, Self::FIELDS)?;
        m.end()
    }
}

impl Job {
    /// The wire names of this message's fields.
    const FIELDS: &'static [&'static str] = &[
        "jobId",
        "createTime",
        "startTime",
        "endTime",
        "state",
        "errorMessage",
        "labels",
        "etag",
        "jobPosition",
        "predictionInput",
        "predictionOutput",
        "trainingInput",
        "trainingOutput",
    ];

    /// A batch prediction job with its ID and input.
    pub fn new(job_id: impl Into<String>, prediction_input: PredictionInput) -> Self {
        Job {
            job_id: Some(job_id.into()),
            prediction_input: Some(prediction_input),
            ..Job::default()
        }
    }

    /// Reads a job from the API's JSON.
    ///
    /// # Errors
    /// [`ErrorKind::Json`](crate::ErrorKind::Json) ([`Code::InvalidArgument`](crate::Code::InvalidArgument))
    /// naming the field, the value and its line and column.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::Job;
    ///
    /// let err = Job::from_json(r#"{"jobId": "j", "predictionInput": {"batchSize": "lots"}}"#).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid job JSON: predictionInput.batchSize: invalid int64 \"lots\": \
    ///      expected an int64 as a decimal string or an integer at line 1 column 55"
    /// );
    /// ```
    pub fn from_json(json: &str) -> Result<Job> {
        serde_json::from_str(json).map_err(|e| Error::json("job", e))
    }

    /// Reads a job from a JSON value.
    ///
    /// # Errors
    /// As [`Job::from_json`], without a line and column.
    pub fn from_value(value: Value) -> Result<Job> {
        serde_json::from_value(value).map_err(|e| Error::json("job", e))
    }

    /// The job as the API's JSON value.
    pub fn to_json(&self) -> Value {
        // Serializing plain data into a `Value` cannot fail: every map key is a string.
        serde_json::to_value(self).expect("a Job always serializes to JSON")
    }

    /// The job's state, `STATE_UNSPECIFIED` when it has none.
    pub fn state(&self) -> State {
        self.state.unwrap_or(State::Unspecified)
    }

    /// Clears the output-only fields — `createTime`, `startTime`, `endTime`,
    /// `state`, `errorMessage`, `jobPosition`, `predictionOutput` and
    /// `trainingOutput` — which a service ignores in a `jobs.create` request,
    /// as the API does. Everything the client may set is kept.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::Job;
    ///
    /// let mut job = Job::from_json(r#"{"jobId": "j", "state": "SUCCEEDED", "etag": "AAE=",
    ///                                  "predictionOutput": {"predictionCount": "5"}}"#)?;
    /// job.clear_output_only();
    /// assert_eq!(job.to_json(), serde_json::json!({"jobId": "j", "etag": "AAE="}));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear_output_only(&mut self) {
        self.create_time = None;
        self.start_time = None;
        self.end_time = None;
        self.state = None;
        self.error_message = None;
        self.job_position = None;
        self.prediction_output = None;
        self.training_output = None;
    }

    /// Sets `jobId`.
    #[must_use]
    pub fn set_job_id(mut self, v: impl Into<String>) -> Self {
        self.job_id = Some(v.into());
        self
    }

    /// Adds or replaces one label.
    #[must_use]
    pub fn set_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Replaces all labels.
    #[must_use]
    pub fn set_labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Sets `predictionInput`.
    #[must_use]
    pub fn set_prediction_input(mut self, v: PredictionInput) -> Self {
        self.prediction_input = Some(v);
        self
    }

    /// Sets `etag`.
    #[must_use]
    pub fn set_etag(mut self, v: Etag) -> Self {
        self.etag = Some(v);
        self
    }
}

impl Message for Job {
    const EXPECTING: &'static str = "a Job object";

    fn read<'de, A: MapAccess<'de>>(prefix: &str, mut map: A) -> Result<Self, A::Error> {
        let mut out = Job::default();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<String>()? {
            seen.insert(prefix, &key)?;
            let path = Path { prefix, name: &key };
            match key.as_str() {
                "jobId" => out.job_id = wire::string(map.next_value()?, path)?,
                "createTime" => out.create_time = wire::timestamp(map.next_value()?, path)?,
                "startTime" => out.start_time = wire::timestamp(map.next_value()?, path)?,
                "endTime" => out.end_time = wire::timestamp(map.next_value()?, path)?,
                "state" => out.state = wire::enumeration(map.next_value()?, path)?,
                "errorMessage" => out.error_message = wire::string(map.next_value()?, path)?,
                "labels" => out.labels = map.next_value_seed(wire::StringMapSeed(path))?,
                "etag" => out.etag = wire::bytes(map.next_value()?, path)?.map(Etag),
                "jobPosition" => out.job_position = wire::int64(map.next_value()?, path)?,
                "predictionInput" => {
                    let p = format!("{prefix}predictionInput.");
                    out.prediction_input = map.next_value_seed(Optional::new(&p))?;
                }
                "predictionOutput" => {
                    let p = format!("{prefix}predictionOutput.");
                    out.prediction_output = map.next_value_seed(Optional::new(&p))?;
                }
                "trainingInput" => {
                    out.training_input = Some(map.next_value::<Value>()?).filter(|v| !v.is_null());
                }
                "trainingOutput" => {
                    out.training_output = Some(map.next_value::<Value>()?).filter(|v| !v.is_null());
                }
                _ => {
                    let value: Value = map.next_value()?;
                    out.unknown_fields.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::prediction::deserialize_message(d)
    }
}
