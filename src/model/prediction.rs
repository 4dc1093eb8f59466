//! `PredictionInput`, `PredictionOutput`, `DataFormat` and the model union.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::wire::{self, Path, Seen, WireEnum};
use crate::name::{ModelName, VersionName};

/// The format of input or output data (`dataFormat`, `outputDataFormat`).
///
/// `Display` and serde use the wire value, e.g. `"TF_RECORD_GZIP"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataFormat {
    /// `DATA_FORMAT_UNSPECIFIED`: never valid in a job.
    Unspecified,
    /// `JSON`: one JSON value per line.
    Json,
    /// `TEXT`: deprecated, use JSON; read as `JSON` is (each line a JSON
    /// instance), except that a model that takes records as they are
    /// ([`Predictor::takes_raw_records`](crate::predict::Predictor::takes_raw_records),
    /// such as a TensorFlow signature of one string input) gets each line
    /// as its text, as AI Platform read it; as output it means JSON lines.
    Text,
    /// `TF_RECORD`: TFRecord files; input only.
    TfRecord,
    /// `TF_RECORD_GZIP`: gzip-compressed TFRecord files; input only.
    TfRecordGzip,
    /// `CSV`: comma-separated rows with the keys in a separate file; output only.
    Csv,
}

impl WireEnum for DataFormat {
    const ALL: &'static [Self] = &[
        DataFormat::Unspecified,
        DataFormat::Json,
        DataFormat::Text,
        DataFormat::TfRecord,
        DataFormat::TfRecordGzip,
        DataFormat::Csv,
    ];

    fn as_str(self) -> &'static str {
        DataFormat::as_str(self)
    }
}

impl DataFormat {
    /// Every value, in the order of the API's enum.
    pub const ALL: &'static [DataFormat] = <DataFormat as WireEnum>::ALL;

    /// The wire value, e.g. `"JSON"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Unspecified => "DATA_FORMAT_UNSPECIFIED",
            DataFormat::Json => "JSON",
            DataFormat::Text => "TEXT",
            DataFormat::TfRecord => "TF_RECORD",
            DataFormat::TfRecordGzip => "TF_RECORD_GZIP",
            DataFormat::Csv => "CSV",
        }
    }

    /// Whether a job may read this format (`JSON`, `TEXT`, `TF_RECORD`, `TF_RECORD_GZIP`).
    pub fn is_input(self) -> bool {
        matches!(
            self,
            DataFormat::Json | DataFormat::Text | DataFormat::TfRecord | DataFormat::TfRecordGzip
        )
    }

    /// Whether a job may write this format (`JSON`, `TEXT` meaning JSON, `CSV`).
    pub fn is_output(self) -> bool {
        matches!(self, DataFormat::Json | DataFormat::Text | DataFormat::Csv)
    }
}

/// The error of parsing an unknown wire value of an enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} value {input:?}: expected one of {expected}")]
pub struct UnknownEnumValue {
    pub(crate) what: &'static str,
    pub(crate) input: String,
    pub(crate) expected: String,
}

impl UnknownEnumValue {
    /// The value that was not recognised.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl FromStr for DataFormat {
    type Err = UnknownEnumValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        wire::parse_enum(s).ok_or_else(|| UnknownEnumValue {
            what: "DataFormat",
            input: s.to_owned(),
            expected: wire::enum_names::<DataFormat>(),
        })
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DataFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DataFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Which model a job runs: on the wire exactly one of `modelName`,
/// `versionName` or `uri`.
///
/// # Example
/// ```
/// use batch_prediction::ModelVersion;
///
/// let by_version = ModelVersion::version("projects/my-proj/models/census/versions/v1")?;
/// assert_eq!(by_version.wire_key(), "versionName");
/// let by_uri = ModelVersion::uri("gs://bucket/model/");
/// assert_eq!(by_uri.to_string(), "gs://bucket/model/");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum ModelVersion {
    /// `modelName`: the model's default version.
    #[serde(rename = "modelName")]
    Model(ModelName),
    /// `versionName`: one version of a model.
    #[serde(rename = "versionName")]
    Version(VersionName),
    /// `uri`: the location of a model directory (a `gs://` SavedModel on the
    /// hosted service; here whatever the model resolver understands).
    #[serde(rename = "uri")]
    Uri(String),
}

impl ModelVersion {
    /// The wire keys of the union, in order.
    pub const WIRE_KEYS: [&'static str; 3] = ["modelName", "versionName", "uri"];

    /// A `modelName` from `projects/{project}/models/{model}`.
    ///
    /// # Errors
    /// [`InvalidName`](crate::error::InvalidName) when the name breaks its rules.
    pub fn model(name: &str) -> Result<Self, crate::error::InvalidName> {
        name.parse().map(ModelVersion::Model)
    }

    /// A `versionName` from `projects/{project}/models/{model}/versions/{version}`.
    ///
    /// # Errors
    /// [`InvalidName`](crate::error::InvalidName) when the name breaks its rules.
    pub fn version(name: &str) -> Result<Self, crate::error::InvalidName> {
        name.parse().map(ModelVersion::Version)
    }

    /// A `uri`.
    pub fn uri(uri: impl Into<String>) -> Self {
        ModelVersion::Uri(uri.into())
    }

    /// The wire key this variant is written under.
    pub fn wire_key(&self) -> &'static str {
        match self {
            ModelVersion::Model(_) => "modelName",
            ModelVersion::Version(_) => "versionName",
            ModelVersion::Uri(_) => "uri",
        }
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelVersion::Model(m) => m.fmt(f),
            ModelVersion::Version(v) => v.fmt(f),
            ModelVersion::Uri(u) => f.write_str(u),
        }
    }
}

impl From<ModelName> for ModelVersion {
    fn from(name: ModelName) -> Self {
        ModelVersion::Model(name)
    }
}

impl From<VersionName> for ModelVersion {
    fn from(name: VersionName) -> Self {
        ModelVersion::Version(name)
    }
}

/// The input of a batch prediction job (`GoogleCloudMlV1__PredictionInput`).
///
/// Fields hold exactly what the client sent: absent fields stay `None` and are
/// not written back, so a round trip keeps the request as it was. The
/// documented defaults are available through the `effective_*` accessors.
/// Fields this crate does not know (gcloud's `accelerator`, for instance) are
/// kept in [`unknown_fields`](Self::unknown_fields) and written back unchanged.
///
/// # Example
/// ```
/// use batch_prediction::{DataFormat, ModelVersion, PredictionInput};
///
/// let input = PredictionInput::new(
///     DataFormat::Json,
///     ["gs://bucket/instances*"],
///     "gs://bucket/output",
///     "us-central1",
///     ModelVersion::model("projects/my-proj/models/census")?,
/// )
/// .set_batch_size(32);
/// assert_eq!(input.effective_batch_size(), 32);
/// assert_eq!(input.effective_max_worker_count(), 10);
/// assert_eq!(input.effective_signature_name(), "serving_default");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct PredictionInput {
    /// `dataFormat`: the input format. Required.
    pub data_format: Option<DataFormat>,
    /// `outputDataFormat`: the output format; JSON when absent.
    pub output_data_format: Option<DataFormat>,
    /// `inputPaths`: input files or patterns. Required, non-empty. An empty
    /// list is written as absent, as proto3 JSON does.
    pub input_paths: Vec<String>,
    /// `outputPath`: where the result files go. Required.
    pub output_path: Option<String>,
    /// `region`: the Compute Engine region. Required.
    pub region: Option<String>,
    /// `modelName`, `versionName` or `uri`: the model to run. Exactly one is
    /// required. When a request sets several, or a name that breaks its
    /// rules, this holds the first valid one and [`Job::validate`](crate::Job::validate)
    /// reports the rest (which are written back unchanged).
    pub model: Option<ModelVersion>,
    /// `runtimeVersion`: the runtime to run the model with.
    pub runtime_version: Option<String>,
    /// `signatureName`: the SavedModel signature; `serving_default` when absent.
    pub signature_name: Option<String>,
    /// `batchSize` (int64): instances per model call; 64 when absent.
    pub batch_size: Option<i64>,
    /// `maxWorkerCount` (int64): the most workers to use; 10 when absent.
    pub max_worker_count: Option<i64>,
    /// Fields this crate does not know, kept and written back unchanged.
    /// Entries named like a field above are not written.
    pub unknown_fields: Map<String, Value>,
    /// Union entries read that did not become `model`: further keys when
    /// several were set, and names that break their rules, as (key, value).
    pub(crate) rejected_model: Vec<(&'static str, String)>,
}

impl PredictionInput {
    /// The default of `outputDataFormat`.
    pub const DEFAULT_OUTPUT_DATA_FORMAT: DataFormat = DataFormat::Json;
    /// The default of `batchSize`.
    pub const DEFAULT_BATCH_SIZE: i64 = 64;
    /// The default of `maxWorkerCount`.
    pub const DEFAULT_MAX_WORKER_COUNT: i64 = 10;
    /// The default of `signatureName`.
    pub const DEFAULT_SIGNATURE_NAME: &'static str = "serving_default";

    /// An input with every required field set.
    pub fn new<I, P>(
        data_format: DataFormat,
        input_paths: I,
        output_path: impl Into<String>,
        region: impl Into<String>,
        model: impl Into<ModelVersion>,
    ) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        PredictionInput {
            data_format: Some(data_format),
            input_paths: input_paths.into_iter().map(Into::into).collect(),
            output_path: Some(output_path.into()),
            region: Some(region.into()),
            model: Some(model.into()),
            ..PredictionInput::default()
        }
    }

    /// Sets `dataFormat`.
    #[must_use]
    pub fn set_data_format(mut self, v: DataFormat) -> Self {
        self.data_format = Some(v);
        self
    }

    /// Sets `outputDataFormat`.
    #[must_use]
    pub fn set_output_data_format(mut self, v: DataFormat) -> Self {
        self.output_data_format = Some(v);
        self
    }

    /// Replaces `inputPaths`.
    #[must_use]
    pub fn set_input_paths<I, P>(mut self, v: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.input_paths = v.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `outputPath`.
    #[must_use]
    pub fn set_output_path(mut self, v: impl Into<String>) -> Self {
        self.output_path = Some(v.into());
        self
    }

    /// Sets `region`.
    #[must_use]
    pub fn set_region(mut self, v: impl Into<String>) -> Self {
        self.region = Some(v.into());
        self
    }

    /// Sets the model union (and forgets any other union keys a request had).
    #[must_use]
    pub fn set_model(mut self, v: impl Into<ModelVersion>) -> Self {
        self.model = Some(v.into());
        self.rejected_model.clear();
        self
    }

    /// The wire names of this message's fields.
    pub(crate) const FIELDS: &'static [&'static str] = &[
        "dataFormat",
        "outputDataFormat",
        "inputPaths",
        "outputPath",
        "region",
        "modelName",
        "versionName",
        "uri",
        "runtimeVersion",
        "signatureName",
        "batchSize",
        "maxWorkerCount",
    ];

    /// The union keys the request set, valid or not, in the order
    /// `modelName`, `versionName`, `uri`, with the raw values of those that
    /// did not become [`model`](Self::model).
    pub(crate) fn union_keys(&self) -> Vec<&'static str> {
        ModelVersion::WIRE_KEYS
            .into_iter()
            .filter(|k| {
                self.model.as_ref().is_some_and(|m| m.wire_key() == *k)
                    || self.rejected_model.iter().any(|(r, _)| r == k)
            })
            .collect()
    }

    /// The union entries that did not become [`model`](Self::model).
    pub(crate) fn rejected_model(&self) -> &[(&'static str, String)] {
        &self.rejected_model
    }

    /// Sets `runtimeVersion`.
    #[must_use]
    pub fn set_runtime_version(mut self, v: impl Into<String>) -> Self {
        self.runtime_version = Some(v.into());
        self
    }

    /// Sets `signatureName`.
    #[must_use]
    pub fn set_signature_name(mut self, v: impl Into<String>) -> Self {
        self.signature_name = Some(v.into());
        self
    }

    /// Sets `batchSize`.
    #[must_use]
    pub fn set_batch_size(mut self, v: i64) -> Self {
        self.batch_size = Some(v);
        self
    }

    /// Sets `maxWorkerCount`.
    #[must_use]
    pub fn set_max_worker_count(mut self, v: i64) -> Self {
        self.max_worker_count = Some(v);
        self
    }

    /// The output format the job writes: `outputDataFormat`; JSON when absent
    /// or `DATA_FORMAT_UNSPECIFIED` (proto3's unset value), and JSON for the
    /// deprecated `TEXT`.
    pub fn effective_output_data_format(&self) -> DataFormat {
        match self.output_data_format {
            None | Some(DataFormat::Unspecified | DataFormat::Text) => {
                Self::DEFAULT_OUTPUT_DATA_FORMAT
            }
            Some(f) => f,
        }
    }

    /// `batchSize`, or 64 when absent.
    pub fn effective_batch_size(&self) -> i64 {
        self.batch_size.unwrap_or(Self::DEFAULT_BATCH_SIZE)
    }

    /// `maxWorkerCount`, or 10 when absent.
    pub fn effective_max_worker_count(&self) -> i64 {
        self.max_worker_count
            .unwrap_or(Self::DEFAULT_MAX_WORKER_COUNT)
    }

    /// `signatureName`, or `serving_default` when absent.
    pub fn effective_signature_name(&self) -> &str {
        self.signature_name
            .as_deref()
            .unwrap_or(Self::DEFAULT_SIGNATURE_NAME)
    }
}

/// Decodes one message from a JSON object.
pub(crate) trait Message: Sized {
    /// What `expecting` says, e.g. `"a PredictionInput object"`.
    const EXPECTING: &'static str;
    /// Reads the object's entries; field paths start with `prefix`.
    fn read<'de, A: MapAccess<'de>>(prefix: &str, map: A) -> Result<Self, A::Error>;
}

/// Reads a `T: Message` (or `null` as `None`) under a path prefix.
pub(crate) struct Optional<'a, T> {
    pub(crate) prefix: &'a str,
    pub(crate) marker: std::marker::PhantomData<T>,
}

impl<'a, T> Optional<'a, T> {
    pub(crate) fn new(prefix: &'a str) -> Self {
        Optional {
            prefix,
            marker: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Message> DeserializeSeed<'de> for Optional<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Message> Visitor<'de> for Optional<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.prefix.trim_end_matches('.');
        if field.is_empty() {
            f.write_str(T::EXPECTING)
        } else {
            write!(f, "{field} to be {}", T::EXPECTING)
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::read(self.prefix, map).map(Some)
    }
}

/// Reads a top-level `T: Message`, refusing `null`.
pub(crate) fn deserialize_message<'de, T: Message, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    struct Top<T>(std::marker::PhantomData<T>);
    impl<'de, T: Message> Visitor<'de> for Top<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::read("", map)
        }
    }
    d.deserialize_map(Top(std::marker::PhantomData))
}

impl Message for PredictionInput {
    const EXPECTING: &'static str = "a PredictionInput object";

    fn read<'de, A: MapAccess<'de>>(prefix: &str, mut map: A) -> Result<Self, A::Error> {
        let mut out = PredictionInput::default();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<String>()? {
            seen.insert(prefix, &key)?;
            let path = Path { prefix, name: &key };
            match key.as_str() {
                "dataFormat" => out.data_format = wire::enumeration(map.next_value()?, path)?,
                "outputDataFormat" => {
                    out.output_data_format = wire::enumeration(map.next_value()?, path)?;
                }
                "inputPaths" => out.input_paths = wire::string_list(map.next_value()?, path)?,
                "outputPath" => out.output_path = wire::string(map.next_value()?, path)?,
                "region" => out.region = wire::string(map.next_value()?, path)?,
                "modelName" | "versionName" | "uri" => {
                    let Some(s) = wire::string(map.next_value()?, path)? else {
                        continue;
                    };
                    let (key, parsed) = match key.as_str() {
                        "modelName" => ("modelName", ModelVersion::model(&s).ok()),
                        "versionName" => ("versionName", ModelVersion::version(&s).ok()),
                        _ => ("uri", Some(ModelVersion::Uri(s.clone()))),
                    };
                    match parsed {
                        Some(model) if out.model.is_none() => out.model = Some(model),
                        _ => out.rejected_model.push((key, s)),
                    }
                }
                "runtimeVersion" => out.runtime_version = wire::string(map.next_value()?, path)?,
                "signatureName" => out.signature_name = wire::string(map.next_value()?, path)?,
                "batchSize" => out.batch_size = wire::int64(map.next_value()?, path)?,
                "maxWorkerCount" => out.max_worker_count = wire::int64(map.next_value()?, path)?,
                _ => {
                    let value: Value = map.next_value()?;
                    out.unknown_fields.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

impl Serialize for PredictionInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.data_format {
            m.serialize_entry("dataFormat", v)?;
        }
        if let Some(v) = &self.output_data_format {
            m.serialize_entry("outputDataFormat", v)?;
        }
        if !self.input_paths.is_empty() {
            m.serialize_entry("inputPaths", &self.input_paths)?;
        }
        if let Some(v) = &self.output_path {
            m.serialize_entry("outputPath", v)?;
        }
        if let Some(v) = &self.region {
            m.serialize_entry("region", v)?;
        }
        let model_key = self.model.as_ref().map(ModelVersion::wire_key);
        if let Some(model) = &self.model {
            m.serialize_entry(model.wire_key(), &model.to_string())?;
        }
        for (key, value) in &self.rejected_model {
            if model_key != Some(*key) {
                m.serialize_entry(key, value)?;
            }
        }
        if let Some(v) = &self.runtime_version {
            m.serialize_entry("runtimeVersion", v)?;
        }
        if let Some(v) = &self.signature_name {
            m.serialize_entry("signatureName", v)?;
        }
        if let Some(v) = self.batch_size {
            m.serialize_entry("batchSize", &wire::Int64(v))?;
        }
        if let Some(v) = self.max_worker_count {
            m.serialize_entry("maxWorkerCount", &wire::Int64(v))?;
        }
        wire::unknown_entries(&mut m, &self.unknown_fields, Self::FIELDS)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for PredictionInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_message(d)
    }
}

/// The result of a batch prediction job (`GoogleCloudMlV1__PredictionOutput`).
///
/// Counts are `None` when absent on the wire; the accessors read them as 0.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct PredictionOutput {
    /// `outputPath`: the output path given at creation.
    pub output_path: Option<String>,
    /// `predictionCount` (int64): the number of predictions made.
    pub prediction_count: Option<i64>,
    /// `errorCount` (int64): the number of instances that failed.
    pub error_count: Option<i64>,
    /// `nodeHours` (double): node hours used.
    pub node_hours: Option<f64>,
    /// Fields this crate does not know, kept and written back unchanged.
    /// Entries named like a field above are not written.
    pub unknown_fields: Map<String, Value>,
}

impl Serialize for PredictionOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.output_path {
            m.serialize_entry("outputPath", v)?;
        }
        if let Some(v) = self.prediction_count {
            m.serialize_entry("predictionCount", &wire::Int64(v))?;
        }
        if let Some(v) = self.error_count {
            m.serialize_entry("errorCount", &wire::Int64(v))?;
        }
        if let Some(v) = self.node_hours {
            m.serialize_entry("nodeHours", &wire::Double(v))?;
        }
        wire::unknown_entries(
            &mut m,
            &self.unknown_fields,
            &["outputPath", "predictionCount", "errorCount", "nodeHours"],
        )?;
        m.end()
    }
}

impl PredictionOutput {
    /// An output for `output_path` with zero counts.
    pub fn new(output_path: impl Into<String>) -> Self {
        PredictionOutput {
            output_path: Some(output_path.into()),
            prediction_count: Some(0),
            error_count: Some(0),
            node_hours: Some(0.0),
            ..PredictionOutput::default()
        }
    }

    /// `predictionCount`, or 0 when absent.
    pub fn prediction_count(&self) -> i64 {
        self.prediction_count.unwrap_or(0)
    }

    /// `errorCount`, or 0 when absent.
    pub fn error_count(&self) -> i64 {
        self.error_count.unwrap_or(0)
    }

    /// `nodeHours`, or 0 when absent.
    pub fn node_hours(&self) -> f64 {
        self.node_hours.unwrap_or(0.0)
    }

    /// Sets `predictionCount`.
    #[must_use]
    pub fn set_prediction_count(mut self, v: i64) -> Self {
        self.prediction_count = Some(v);
        self
    }

    /// Sets `errorCount`.
    #[must_use]
    pub fn set_error_count(mut self, v: i64) -> Self {
        self.error_count = Some(v);
        self
    }

    /// Sets `nodeHours`.
    #[must_use]
    pub fn set_node_hours(mut self, v: f64) -> Self {
        self.node_hours = Some(v);
        self
    }
}

impl Message for PredictionOutput {
    const EXPECTING: &'static str = "a PredictionOutput object";

    fn read<'de, A: MapAccess<'de>>(prefix: &str, mut map: A) -> Result<Self, A::Error> {
        let mut out = PredictionOutput::default();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<String>()? {
            seen.insert(prefix, &key)?;
            let path = Path { prefix, name: &key };
            match key.as_str() {
                "outputPath" => out.output_path = wire::string(map.next_value()?, path)?,
                "predictionCount" => out.prediction_count = wire::int64(map.next_value()?, path)?,
                "errorCount" => out.error_count = wire::int64(map.next_value()?, path)?,
                "nodeHours" => out.node_hours = wire::double(map.next_value()?, path)?,
                _ => {
                    let value: Value = map.next_value()?;
                    out.unknown_fields.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for PredictionOutput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_message(d)
    }
}
