//! `run --models`: where a job file written for AI Platform finds the model
//! its `modelName` or `versionName` names, so that it runs unchanged.
//!
//! - A folder, the local registry: `DIR/PROJECT/MODEL/VERSION/` is a
//!   version's model directory (a SavedModel, an ONNX model); the model's
//!   default version is the one `DIR/PROJECT/MODEL/DEFAULT` names (a file
//!   holding the version ID), or its only version.
//! - An `http://` or `https://` URL: a service's models API
//!   (`batch-prediction serve`, or any service mounting `RestApi`): the
//!   version's `deploymentUri`.
//!
//! Either way the job's model becomes that directory, as its `uri` would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use batch_prediction::{Job, ModelName, ModelResolver, ModelVersion, PredictError, Predictor};
use serde_json::Value;

/// Where model names are looked up.
#[derive(Debug, Clone)]
pub enum Registry {
    /// A local folder of `PROJECT/MODEL/VERSION/` directories.
    Folder(PathBuf),
    /// A service's models API, with an optional bearer token.
    Service { base: String, token: Option<String> },
}

impl Registry {
    /// `--models`: a URL or a folder.
    pub fn parse(text: &str, token: Option<String>) -> Registry {
        if text.starts_with("http://") || text.starts_with("https://") {
            Registry::Service {
                base: text.trim_end_matches('/').to_owned(),
                token,
            }
        } else {
            Registry::Folder(PathBuf::from(text))
        }
    }

    /// The model directory of `model`'s default version, or of `version`.
    fn directory(&self, model: &ModelName, version: Option<&str>) -> Result<String, String> {
        match self {
            Registry::Folder(dir) => folder_version(dir, model, version),
            Registry::Service { base, token } => {
                service_version(base, token.as_deref(), model, version)
            }
        }
    }
}

/// The local registry's directory for `model` (and `version`).
fn folder_version(dir: &Path, model: &ModelName, version: Option<&str>) -> Result<String, String> {
    let home = dir.join(model.project()).join(model.model());
    if !home.is_dir() {
        return Err(format!(
            "model {model} not found: no folder {} (the registry holds PROJECT/MODEL/VERSION/ folders)",
            home.display()
        ));
    }
    let id = match version {
        Some(v) => v.to_owned(),
        None => match std::fs::read_to_string(home.join("DEFAULT")) {
            Ok(text) => text.trim().to_owned(),
            Err(_) => {
                let versions: Vec<String> = std::fs::read_dir(&home)
                    .map_err(|e| format!("{}: {e}", home.display()))?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                match versions.as_slice() {
                    [only] => only.clone(),
                    [] => {
                        return Err(format!(
                            "model {model} has no version folder in {}",
                            home.display()
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "model {model} has {} versions and no {} naming the default",
                            versions.len(),
                            home.join("DEFAULT").display()
                        ));
                    }
                }
            }
        },
    };
    let path = home.join(&id);
    if !path.is_dir() {
        return Err(format!(
            "version {model}/versions/{id} not found: no folder {}",
            path.display()
        ));
    }
    Ok(path.display().to_string())
}

/// The `deploymentUri` a service's models API gives.
fn service_version(
    base: &str,
    token: Option<&str>,
    model: &ModelName,
    version: Option<&str>,
) -> Result<String, String> {
    let url = match version {
        Some(v) => format!("{base}/v1/{model}/versions/{v}"),
        None => format!("{base}/v1/{model}"),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let json: Value = response
        .body_mut()
        .read_json()
        .map_err(|e| format!("GET {url}: HTTP {status}, not JSON: {e}"))?;
    if status != 200 {
        return Err(format!(
            "GET {url}: {}",
            json["error"]["message"].as_str().unwrap_or("failed")
        ));
    }
    let version = if version.is_some() {
        &json
    } else {
        &json["defaultVersion"]
    };
    version["deploymentUri"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("GET {url}: the model has no default version with a deploymentUri"))
}

/// Resolves a job's `modelName` and `versionName` through a [`Registry`]
/// (without one, refuses them, saying how to give one), then loads the
/// directory with `inner`; a `uri` goes to `inner` as it is.
pub struct NamedModels {
    pub registry: Option<Registry>,
    pub inner: Arc<dyn ModelResolver>,
}

impl ModelResolver for NamedModels {
    fn resolve(&self, model: &ModelVersion, job: &Job) -> Result<Arc<dyn Predictor>, PredictError> {
        let (name, version) = match model {
            ModelVersion::Model(name) => (name.clone(), None),
            ModelVersion::Version(name) => (name.model_name(), Some(name.version())),
            _ => return self.inner.resolve(model, job),
        };
        let Some(registry) = &self.registry else {
            return Err(PredictError::new(format!(
                "{model}: give the registry that holds it with --models DIR (PROJECT/MODEL/VERSION/ folders) or --models URL (a service's models API)"
            )));
        };
        let directory = registry
            .directory(&name, version)
            .map_err(PredictError::new)?;
        self.inner.resolve(&ModelVersion::Uri(directory), job)
    }
}
