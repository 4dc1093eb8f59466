//! The `projects.models` and `projects.models.versions` resources, as far
//! as batch prediction needs them: a model names its default version, a
//! version names its model directory (`deploymentUri`) and framework.
//!
//! Both are kept as the JSON objects clients send (every field the API
//! defines, and any other, is written back as given), with typed access to
//! the fields this crate uses and a check of every known field's JSON type
//! (and of `framework`'s value) against the API's discovery document.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::Error;

/// The JSON type a known field must have.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Object,
    /// An array of strings (`regions`, `packageUris`).
    Strings,
    /// A map of string to string (`labels`).
    Labels,
    /// A string, one of the API's enum values.
    Enum(&'static [&'static str]),
}

/// The values of `GoogleCloudMlV1__Version.framework`.
const FRAMEWORKS: &[&str] = &[
    "FRAMEWORK_UNSPECIFIED",
    "TENSORFLOW",
    "SCIKIT_LEARN",
    "XGBOOST",
];

/// The fields of `GoogleCloudMlV1__Model` and their types.
const MODEL_FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("description", Kind::Str),
    ("defaultVersion", Kind::Object),
    ("regions", Kind::Strings),
    ("onlinePredictionLogging", Kind::Bool),
    ("onlinePredictionConsoleLogging", Kind::Bool),
    ("labels", Kind::Labels),
    ("etag", Kind::Str),
];

/// The fields of `GoogleCloudMlV1__Version` and their types.
const VERSION_FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("description", Kind::Str),
    ("isDefault", Kind::Bool),
    ("deploymentUri", Kind::Str),
    ("createTime", Kind::Str),
    ("lastUseTime", Kind::Str),
    ("runtimeVersion", Kind::Str),
    ("machineType", Kind::Str),
    ("state", Kind::Str),
    ("errorMessage", Kind::Str),
    ("pythonVersion", Kind::Str),
    ("framework", Kind::Enum(FRAMEWORKS)),
    ("labels", Kind::Labels),
    ("etag", Kind::Str),
    ("serviceAccount", Kind::Str),
    ("predictionClass", Kind::Str),
    ("packageUris", Kind::Strings),
    ("autoScaling", Kind::Object),
    ("manualScaling", Kind::Object),
    ("acceleratorConfig", Kind::Object),
    ("container", Kind::Object),
    ("routes", Kind::Object),
    ("explanationConfig", Kind::Object),
    ("requestLoggingConfig", Kind::Object),
    ("lastMigrationModelId", Kind::Str),
    ("lastMigrationTime", Kind::Str),
];

/// Checks that `value` is an object whose known fields have their types.
fn checked(value: Value, what: &str, fields: &[(&str, Kind)]) -> Result<Map<String, Value>, Error> {
    let Value::Object(map) = value else {
        return Err(Error::invalid_argument(
            what,
            format!("a {what} must be a JSON object"),
        ));
    };
    for (name, kind) in fields {
        let Some(v) = map.get(*name) else { continue };
        let ok = match kind {
            Kind::Str => v.is_string(),
            Kind::Bool => v.is_boolean(),
            Kind::Object => v.is_object(),
            Kind::Strings => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Kind::Enum(values) => v.as_str().is_some_and(|v| values.contains(&v)),
            Kind::Labels => v
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string)),
        };
        if !ok && !v.is_null() {
            let expected = match kind {
                Kind::Str => "a string".to_owned(),
                Kind::Bool => "a boolean".to_owned(),
                Kind::Object => "an object".to_owned(),
                Kind::Strings => "an array of strings".to_owned(),
                Kind::Labels => "an object of strings".to_owned(),
                Kind::Enum(values) => format!("one of {}", values.join(", ")),
            };
            return Err(Error::invalid_argument(
                format!("{what}.{name}"),
                format!("{what}.{name} must be {expected}, not {v}"),
            ));
        }
    }
    Ok(map)
}

macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, $what:literal, $fields:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name(Map<String, Value>);

        impl $name {
            /// The resource from its JSON, as a client sends it or the API
            /// answers.
            ///
            /// # Errors
            /// `INVALID_ARGUMENT` when it is not an object, or a field the
            /// API defines has another JSON type (or, for an enum, another
            /// value).
            pub fn from_json(value: Value) -> Result<Self, Error> {
                checked(value, $what, $fields).map($name)
            }

            /// The resource as the API's JSON.
            pub fn to_json(&self) -> Value {
                Value::Object(self.0.clone())
            }

            /// A string field, if present.
            pub fn field(&self, name: &str) -> Option<&str> {
                self.0.get(name).and_then(Value::as_str)
            }

            /// Sets a field (a `null` removes it).
            pub fn set(&mut self, name: &str, value: Value) {
                if value.is_null() {
                    self.0.shift_remove(name);
                } else {
                    self.0.insert(name.to_owned(), value);
                }
            }

            /// `name`.
            pub fn name(&self) -> Option<&str> {
                self.field("name")
            }

            /// `labels`.
            pub fn labels(&self) -> BTreeMap<String, String> {
                self.0
                    .get("labels")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $name::from_json(Value::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

resource!(
    /// A model (`GoogleCloudMlV1__Model`): a name, a default version, labels.
    ///
    /// ```
    /// use batch_prediction::model::Model;
    /// use serde_json::json;
    ///
    /// let model = Model::from_json(json!({"name": "census", "regions": ["us-central1"], "x-kept": 1}))?;
    /// assert_eq!(model.name(), Some("census"));
    /// assert_eq!(model.to_json()["x-kept"], 1);
    /// assert!(Model::from_json(json!({"name": 7})).is_err());
    /// assert!(Model::from_json(json!({"regions": "us-central1"})).is_err());
    /// # Ok::<(), batch_prediction::Error>(())
    /// ```
    Model,
    "model",
    MODEL_FIELDS
);

resource!(
    /// A model's version (`GoogleCloudMlV1__Version`): its model directory
    /// (`deploymentUri`), framework, runtime and the rest as given.
    ///
    /// ```
    /// use batch_prediction::model::Version;
    /// use serde_json::json;
    ///
    /// let v = Version::from_json(json!({"name": "v1", "deploymentUri": "gs://b/model", "framework": "TENSORFLOW"}))?;
    /// assert_eq!(v.deployment_uri(), Some("gs://b/model"));
    /// assert_eq!(v.framework(), Some("TENSORFLOW"));
    /// // `framework` is one of the API's values.
    /// let err = Version::from_json(json!({"framework": "PYTORCH"})).unwrap_err();
    /// assert!(err.to_string().contains("TENSORFLOW, SCIKIT_LEARN, XGBOOST"), "{err}");
    /// # Ok::<(), batch_prediction::Error>(())
    /// ```
    Version,
    "version",
    VERSION_FIELDS
);

impl Model {
    /// `regions` (the API allows one).
    pub fn regions(&self) -> Vec<&str> {
        self.0
            .get("regions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

impl Version {
    /// `deploymentUri`: the model directory.
    pub fn deployment_uri(&self) -> Option<&str> {
        self.field("deploymentUri")
    }

    /// `framework`: `FRAMEWORK_UNSPECIFIED`, `TENSORFLOW`, `SCIKIT_LEARN` or
    /// `XGBOOST` (the API's values; [`Version::from_json`] refuses others).
    pub fn framework(&self) -> Option<&str> {
        self.field("framework")
    }

    /// `isDefault`.
    pub fn is_default(&self) -> bool {
        self.0.get("isDefault").and_then(Value::as_bool) == Some(true)
    }
}
