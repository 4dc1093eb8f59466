//! Typed resource names: [`ProjectName`], [`ModelName`], [`VersionName`], [`JobName`].
//!
//! Each keeps its segments private and can only hold a name that follows the
//! documented rules
//! (<https://cloud.google.com/ai-platform/training/docs/managing-models-jobs>):
//!
//! - a **project** segment is a project ID — 6 to 30 characters, lowercase
//!   ASCII letters, digits and hyphens, starting with a letter and not ending
//!   with a hyphen — optionally scoped by a domain (`example.com:my-project`),
//!   or a project number (ASCII digits only, as the API's path pattern
//!   `projects/[^/]+` lets clients address a project by number);
//! - a **model**, **version** or **job** ID has 1 to 128 characters, ASCII
//!   letters, digits and underscores only, and starts with a letter
//!   (`^[A-Za-z][A-Za-z0-9_]{0,127}$`); IDs are case-sensitive.
//!
//! Parsing (`FromStr`, `TryFrom<&str>`, serde) and the constructors go through
//! one checking function per type; `Display` and serde print the canonical
//! form, so `name.to_string().parse()` gives back the same name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::error::{InvalidName, NameKind};

/// The longest model, version or job ID the API accepts.
pub const MAX_ID_LEN: usize = 128;

/// Why `id` is not a valid model, version or job ID, or `None` when it is.
///
/// The message reads after the ID's name: `job ID` + ` "1x" must start with a letter`.
pub(crate) fn id_problem(id: &str) -> Option<String> {
    let Some(first) = id.chars().next() else {
        return Some("is empty".to_owned());
    };
    let len = id.chars().count();
    if len > MAX_ID_LEN {
        return Some(format!(
            "{id:?} is {} long: at most {MAX_ID_LEN} are allowed",
            characters(len)
        ));
    }
    if !first.is_ascii_alphabetic() {
        return Some(format!("{id:?} must start with a letter"));
    }
    id.chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map(|(i, c)| {
            format!(
                "{id:?} has {c:?} at position {i}: only letters, digits and underscores are allowed"
            )
        })
}

/// [`id_problem`] with the ID's name in front, e.g. `job ID "1x" must start with a letter`.
fn named_id_problem(what: &str, id: &str) -> Option<String> {
    id_problem(id).map(|p| format!("{what} {p}"))
}

/// Why `project` is neither a valid project ID nor a project number, or `None`.
fn project_problem(project: &str) -> Option<String> {
    if project.is_empty() {
        return Some("project ID is empty".to_owned());
    }
    if project.bytes().all(|b| b.is_ascii_digit()) {
        // A project number: an int64, as the API's numbers are.
        return project.parse::<i64>().is_err().then(|| {
            format!(
                "project number {} does not fit in an int64",
                crate::model::wire::quote(project)
            )
        });
    }
    // A domain-scoped project ID, `example.com:my-project`.
    let id = match project.split_once(':') {
        None => project,
        Some((domain, id)) => {
            let domain_ok = !domain.is_empty()
                && domain.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !domain_ok {
                return Some(format!(
                    "project ID {project:?} has an invalid domain {domain:?}: expected lowercase letters, digits, '.' and '-'"
                ));
            }
            id
        }
    };
    let len = id.chars().count();
    if !(6..=30).contains(&len) {
        return Some(format!(
            "project ID {id:?} is {} long: expected 6 to 30",
            characters(len)
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!(
            "project ID {id:?} must start with a lowercase letter"
        ));
    }
    if let Some((i, c)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "project ID {id:?} has {c:?} at position {i}: only lowercase letters, digits and hyphens are allowed"
        ));
    }
    if id.ends_with('-') {
        return Some(format!("project ID {id:?} must not end with a hyphen"));
    }
    None
}

/// `"1 character"`, `"5 characters"`.
pub(crate) fn characters(n: usize) -> String {
    if n == 1 {
        "1 character".to_owned()
    } else {
        format!("{n} characters")
    }
}

/// Splits `input` along `template`'s literal segments, e.g.
/// `["projects", _, "jobs", _]`, returning the variable segments.
fn split<'a, const N: usize>(
    kind: NameKind,
    input: &'a str,
    literals: [&str; N],
) -> Result<[&'a str; N], InvalidName> {
    let shape_error = || InvalidName {
        kind,
        input: input.to_owned(),
        segment: None,
        reason: format!("expected {}", kind.template()),
    };
    let mut parts = input.split('/');
    let mut out = [""; N];
    for (literal, slot) in literals.into_iter().zip(out.iter_mut()) {
        if parts.next() != Some(literal) {
            return Err(shape_error());
        }
        *slot = parts.next().ok_or_else(shape_error)?;
    }
    if parts.next().is_some() {
        return Err(shape_error());
    }
    Ok(out)
}

fn check(
    kind: NameKind,
    input: &str,
    segment: NameKind,
    problem: Option<String>,
) -> Result<(), InvalidName> {
    match problem {
        None => Ok(()),
        Some(reason) => Err(InvalidName {
            kind,
            input: input.to_owned(),
            segment: Some(segment),
            reason,
        }),
    }
}

/// Implements parsing, printing and serde for a name type through its `parse`.
macro_rules! name_traits {
    ($t:ident) => {
        impl FromStr for $t {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                $t::parse(s)
            }
        }

        impl TryFrom<&str> for $t {
            type Error = InvalidName;
            fn try_from(s: &str) -> Result<Self, InvalidName> {
                $t::parse(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, InvalidName> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(name: $t) -> String {
                name.to_string()
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $t::parse(&s).map_err(de::Error::custom)
            }
        }
    };
}

/// A project: `projects/{project}`.
///
/// Invariants: the project segment is a project ID (6–30 characters of
/// `[a-z0-9-]`, starting with a letter, not ending with `-`) or a project
/// number (digits only).
///
/// # Example
/// ```
/// use batch_prediction::ProjectName;
///
/// let project: ProjectName = "projects/my-proj".parse()?;
/// assert_eq!(project.project(), "my-proj");
/// assert_eq!(project.to_string(), "projects/my-proj");
/// assert!("projects/My_Proj".parse::<ProjectName>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName {
    project: String,
}

impl ProjectName {
    /// Parses `projects/{project}`.
    ///
    /// # Errors
    /// [`InvalidName`] saying which segment breaks which rule.
    pub fn parse(input: &str) -> Result<Self, InvalidName> {
        let [project] = split(NameKind::Project, input, ["projects"])?;
        Self::checked(input, project)
    }

    /// The name of project `project` (a project ID or number).
    ///
    /// # Errors
    /// [`InvalidName`] when `project` breaks the rules.
    pub fn new(project: &str) -> Result<Self, InvalidName> {
        Self::checked(&format!("projects/{project}"), project)
    }

    fn checked(input: &str, project: &str) -> Result<Self, InvalidName> {
        check(
            NameKind::Project,
            input,
            NameKind::Project,
            project_problem(project),
        )?;
        Ok(ProjectName {
            project: project.to_owned(),
        })
    }

    /// The project ID or number.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The name of job `job` in this project.
    ///
    /// # Errors
    /// [`InvalidName`] when `job` is not a valid job ID.
    pub fn job(&self, job: &str) -> Result<JobName, InvalidName> {
        JobName::new(&self.project, job)
    }

    /// The name of model `model` in this project.
    ///
    /// # Errors
    /// [`InvalidName`] when `model` is not a valid model name.
    pub fn model(&self, model: &str) -> Result<ModelName, InvalidName> {
        ModelName::new(&self.project, model)
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}", self.project)
    }
}
name_traits!(ProjectName);

/// A model: `projects/{project}/models/{model}`.
///
/// Invariants: the project segment as in [`ProjectName`]; the model name
/// matches `^[A-Za-z][A-Za-z0-9_]{0,127}$`.
///
/// # Example
/// ```
/// use batch_prediction::ModelName;
///
/// let model: ModelName = "projects/my-proj/models/census".parse()?;
/// assert_eq!((model.project(), model.model()), ("my-proj", "census"));
/// assert_eq!(model.version("v1")?.to_string(), "projects/my-proj/models/census/versions/v1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    project: String,
    model: String,
}

impl ModelName {
    /// Parses `projects/{project}/models/{model}`.
    ///
    /// # Errors
    /// [`InvalidName`] saying which segment breaks which rule.
    pub fn parse(input: &str) -> Result<Self, InvalidName> {
        let [project, model] = split(NameKind::Model, input, ["projects", "models"])?;
        Self::checked(input, project, model)
    }

    /// The name of model `model` in project `project`.
    ///
    /// # Errors
    /// [`InvalidName`] when a segment breaks its rules.
    pub fn new(project: &str, model: &str) -> Result<Self, InvalidName> {
        Self::checked(
            &format!("projects/{project}/models/{model}"),
            project,
            model,
        )
    }

    fn checked(input: &str, project: &str, model: &str) -> Result<Self, InvalidName> {
        let kind = NameKind::Model;
        check(kind, input, NameKind::Project, project_problem(project))?;
        check(
            kind,
            input,
            NameKind::Model,
            named_id_problem("model name", model),
        )?;
        Ok(ModelName {
            project: project.to_owned(),
            model: model.to_owned(),
        })
    }

    /// The project ID or number.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The model's name within its project.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The project this model belongs to.
    pub fn parent(&self) -> ProjectName {
        ProjectName {
            project: self.project.clone(),
        }
    }

    /// The name of version `version` of this model.
    ///
    /// # Errors
    /// [`InvalidName`] when `version` is not a valid version name.
    pub fn version(&self, version: &str) -> Result<VersionName, InvalidName> {
        VersionName::new(&self.project, &self.model, version)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/models/{}", self.project, self.model)
    }
}
name_traits!(ModelName);

/// A model version: `projects/{project}/models/{model}/versions/{version}`.
///
/// Invariants: as [`ModelName`], and the version name matches
/// `^[A-Za-z][A-Za-z0-9_]{0,127}$`.
///
/// # Example
/// ```
/// use batch_prediction::VersionName;
///
/// let v: VersionName = "projects/my-proj/models/census/versions/v1".parse()?;
/// assert_eq!(v.version(), "v1");
/// assert_eq!(v.model_name().to_string(), "projects/my-proj/models/census");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionName {
    project: String,
    model: String,
    version: String,
}

impl VersionName {
    /// Parses `projects/{project}/models/{model}/versions/{version}`.
    ///
    /// # Errors
    /// [`InvalidName`] saying which segment breaks which rule.
    pub fn parse(input: &str) -> Result<Self, InvalidName> {
        let [project, model, version] =
            split(NameKind::Version, input, ["projects", "models", "versions"])?;
        Self::checked(input, project, model, version)
    }

    /// The name of version `version` of model `model` in project `project`.
    ///
    /// # Errors
    /// [`InvalidName`] when a segment breaks its rules.
    pub fn new(project: &str, model: &str, version: &str) -> Result<Self, InvalidName> {
        let input = format!("projects/{project}/models/{model}/versions/{version}");
        Self::checked(&input, project, model, version)
    }

    fn checked(
        input: &str,
        project: &str,
        model: &str,
        version: &str,
    ) -> Result<Self, InvalidName> {
        let kind = NameKind::Version;
        check(kind, input, NameKind::Project, project_problem(project))?;
        check(
            kind,
            input,
            NameKind::Model,
            named_id_problem("model name", model),
        )?;
        check(
            kind,
            input,
            NameKind::Version,
            named_id_problem("version name", version),
        )?;
        Ok(VersionName {
            project: project.to_owned(),
            model: model.to_owned(),
            version: version.to_owned(),
        })
    }

    /// The project ID or number.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The model's name within its project.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The version's name within its model.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The model this version belongs to.
    pub fn model_name(&self) -> ModelName {
        ModelName {
            project: self.project.clone(),
            model: self.model.clone(),
        }
    }
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/models/{}/versions/{}",
            self.project, self.model, self.version
        )
    }
}
name_traits!(VersionName);

/// A job: `projects/{project}/jobs/{job}`.
///
/// Invariants: the project segment as in [`ProjectName`]; the job ID matches
/// `^[A-Za-z][A-Za-z0-9_]{0,127}$` (no hyphens, unlike Vertex AI).
///
/// # Example
/// ```
/// use batch_prediction::JobName;
///
/// let name: JobName = "projects/my-proj/jobs/census_batch_1".parse()?;
/// assert_eq!(name.job(), "census_batch_1");
/// assert_eq!(name.parent().to_string(), "projects/my-proj");
///
/// let err = "projects/my-proj/jobs/census-1".parse::<JobName>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid job name \"projects/my-proj/jobs/census-1\": job ID \"census-1\" has '-' at position 6: \
///      only letters, digits and underscores are allowed"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName {
    project: String,
    job: String,
}

impl JobName {
    /// Parses `projects/{project}/jobs/{job}`.
    ///
    /// # Errors
    /// [`InvalidName`] saying which segment breaks which rule.
    pub fn parse(input: &str) -> Result<Self, InvalidName> {
        let [project, job] = split(NameKind::Job, input, ["projects", "jobs"])?;
        Self::checked(input, project, job)
    }

    /// The name of job `job` in project `project`.
    ///
    /// # Errors
    /// [`InvalidName`] when a segment breaks its rules.
    pub fn new(project: &str, job: &str) -> Result<Self, InvalidName> {
        Self::checked(&format!("projects/{project}/jobs/{job}"), project, job)
    }

    fn checked(input: &str, project: &str, job: &str) -> Result<Self, InvalidName> {
        let kind = NameKind::Job;
        check(kind, input, NameKind::Project, project_problem(project))?;
        check(kind, input, NameKind::Job, named_id_problem("job ID", job))?;
        Ok(JobName {
            project: project.to_owned(),
            job: job.to_owned(),
        })
    }

    /// The project ID or number.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The job ID.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The project this job belongs to.
    pub fn parent(&self) -> ProjectName {
        ProjectName {
            project: self.project.clone(),
        }
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/jobs/{}", self.project, self.job)
    }
}
name_traits!(JobName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_numbers_fit_in_an_int64() {
        let max = format!("projects/{}", i64::MAX);
        assert!(max.parse::<ProjectName>().is_ok());
        for too_big in [
            format!("projects/{}", u64::MAX),
            format!("projects/{}", "7".repeat(300)),
        ] {
            let err = too_big.parse::<ProjectName>().unwrap_err().to_string();
            assert!(err.contains("does not fit in an int64"), "{err}");
        }
    }

    #[test]
    fn valid_names_round_trip() {
        let projects = [
            "projects/google.com:my-proj",
            "projects/my-proj",
            "projects/abcdef",
            "projects/123456789012",
            "projects/a23456789012345678901234567890",
        ];
        for s in projects {
            assert_eq!(s.parse::<ProjectName>().unwrap().to_string(), s);
        }
        let id128 = format!("a{}", "B_9".repeat(42)) + "z";
        assert_eq!(id128.len(), 128);
        let models = [
            "projects/my-proj/models/census".to_owned(),
            "projects/42/models/M".to_owned(),
            format!("projects/my-proj/models/{id128}"),
        ];
        for s in &models {
            assert_eq!(&s.parse::<ModelName>().unwrap().to_string(), s);
        }
        let v = "projects/my-proj/models/census/versions/v1_2";
        assert_eq!(v.parse::<VersionName>().unwrap().to_string(), v);
        let j = format!("projects/my-proj/jobs/{id128}");
        let job = j.parse::<JobName>().unwrap();
        assert_eq!(job.to_string(), j);
        assert_eq!(job.job(), id128);
        assert_eq!(JobName::new("my-proj", &id128).unwrap(), job);
        assert_eq!(
            ProjectName::new("my-proj").unwrap().job(&id128).unwrap(),
            job
        );
    }

    #[test]
    fn invalid_names_say_which_segment_and_why() {
        let id129 = "a".repeat(129);
        // (kind, input, segment, message)
        let cases: Vec<(NameKind, String, Option<NameKind>, String)> = vec![
            (NameKind::Project, "projects/".into(), Some(NameKind::Project), "invalid project name \"projects/\": project ID is empty".into()),
            (NameKind::Project, "project/my-proj".into(), None, "invalid project name \"project/my-proj\": expected projects/{project}".into()),
            (NameKind::Project, "projects/my-proj/".into(), None, "invalid project name \"projects/my-proj/\": expected projects/{project}".into()),
            (NameKind::Project, "projects/abcde".into(), Some(NameKind::Project), "invalid project name \"projects/abcde\": project ID \"abcde\" is 5 characters long: expected 6 to 30".into()),
            (NameKind::Project, format!("projects/{}", "a".repeat(31)), Some(NameKind::Project), format!("invalid project name \"projects/{0}\": project ID \"{0}\" is 31 characters long: expected 6 to 30", "a".repeat(31))),
            (NameKind::Project, "projects/1abcdef".into(), Some(NameKind::Project), "invalid project name \"projects/1abcdef\": project ID \"1abcdef\" must start with a lowercase letter".into()),
            (NameKind::Project, "projects/my_proj".into(), Some(NameKind::Project), "invalid project name \"projects/my_proj\": project ID \"my_proj\" has '_' at position 2: only lowercase letters, digits and hyphens are allowed".into()),
            (NameKind::Project, "projects/My-proj".into(), Some(NameKind::Project), "invalid project name \"projects/My-proj\": project ID \"My-proj\" must start with a lowercase letter".into()),
            (NameKind::Project, "projects/Google.com:my-proj".into(), Some(NameKind::Project), "invalid project name \"projects/Google.com:my-proj\": project ID \"Google.com:my-proj\" has an invalid domain \"Google.com\": expected lowercase letters, digits, '.' and '-'".into()),
            (NameKind::Project, "projects/example.com:x".into(), Some(NameKind::Project), "invalid project name \"projects/example.com:x\": project ID \"x\" is 1 character long: expected 6 to 30".into()),
            (NameKind::Project, "projects/my-proj-".into(), Some(NameKind::Project), "invalid project name \"projects/my-proj-\": project ID \"my-proj-\" must not end with a hyphen".into()),
            (NameKind::Model, "projects/my-proj/models".into(), None, "invalid model name \"projects/my-proj/models\": expected projects/{project}/models/{model}".into()),
            (NameKind::Model, "projects/my-proj/model/m".into(), None, "invalid model name \"projects/my-proj/model/m\": expected projects/{project}/models/{model}".into()),
            (NameKind::Model, "projects/my-proj/models/".into(), Some(NameKind::Model), "invalid model name \"projects/my-proj/models/\": model name is empty".into()),
            (NameKind::Model, "projects/my-proj/models/_m".into(), Some(NameKind::Model), "invalid model name \"projects/my-proj/models/_m\": model name \"_m\" must start with a letter".into()),
            (NameKind::Model, "projects/x/models/m".into(), Some(NameKind::Project), "invalid model name \"projects/x/models/m\": project ID \"x\" is 1 character long: expected 6 to 30".into()),
            (NameKind::Version, "projects/my-proj/models/m/versions/v.1".into(), Some(NameKind::Version), "invalid version name \"projects/my-proj/models/m/versions/v.1\": version name \"v.1\" has '.' at position 1: only letters, digits and underscores are allowed".into()),
            (NameKind::Version, "projects/my-proj/models/m-1/versions/v1".into(), Some(NameKind::Model), "invalid version name \"projects/my-proj/models/m-1/versions/v1\": model name \"m-1\" has '-' at position 1: only letters, digits and underscores are allowed".into()),
            (NameKind::Version, "projects/my-proj/models/m".into(), None, "invalid version name \"projects/my-proj/models/m\": expected projects/{project}/models/{model}/versions/{version}".into()),
            (NameKind::Job, format!("projects/my-proj/jobs/{id129}"), Some(NameKind::Job), format!("invalid job name \"projects/my-proj/jobs/{id129}\": job ID \"{id129}\" is 129 characters long: at most 128 are allowed")),
            (NameKind::Job, "projects/my-proj/jobs/1st".into(), Some(NameKind::Job), "invalid job name \"projects/my-proj/jobs/1st\": job ID \"1st\" must start with a letter".into()),
            (NameKind::Job, "projects/my-proj/jobs/é".into(), Some(NameKind::Job), "invalid job name \"projects/my-proj/jobs/é\": job ID \"é\" must start with a letter".into()),
            (NameKind::Job, "projects/my-proj/jobs/j/x".into(), None, "invalid job name \"projects/my-proj/jobs/j/x\": expected projects/{project}/jobs/{job}".into()),
            (NameKind::Job, "".into(), None, "invalid job name \"\": expected projects/{project}/jobs/{job}".into()),
        ];
        for (kind, input, segment, message) in cases {
            let err = match kind {
                NameKind::Project => ProjectName::parse(&input).unwrap_err(),
                NameKind::Model => ModelName::parse(&input).unwrap_err(),
                NameKind::Version => VersionName::parse(&input).unwrap_err(),
                NameKind::Job => JobName::parse(&input).unwrap_err(),
            };
            assert_eq!(err.to_string(), message, "{input}");
            assert_eq!(err.kind(), kind, "{input}");
            assert_eq!(err.segment(), segment, "{input}");
            assert_eq!(err.input(), input);
        }
    }

    #[test]
    fn serde_writes_and_checks_the_string() {
        let name: JobName = serde_json::from_str("\"projects/my-proj/jobs/j1\"").unwrap();
        assert_eq!(
            serde_json::to_string(&name).unwrap(),
            "\"projects/my-proj/jobs/j1\""
        );
        let err = serde_json::from_str::<VersionName>("\"projects/my-proj/models/m\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid version name \"projects/my-proj/models/m\": expected projects/{project}/models/{model}/versions/{version}"
        );
        assert!(serde_json::from_str::<ModelName>("7").is_err());
    }

    #[test]
    fn accessors_and_parents() {
        let v = VersionName::new("my-proj", "census", "v1").unwrap();
        assert_eq!(
            (v.project(), v.model(), v.version()),
            ("my-proj", "census", "v1")
        );
        assert_eq!(v.model_name(), ModelName::new("my-proj", "census").unwrap());
        assert_eq!(
            v.model_name().parent(),
            ProjectName::new("my-proj").unwrap()
        );
        assert_eq!(
            ProjectName::new("my-proj")
                .unwrap()
                .model("census")
                .unwrap()
                .version("v1")
                .unwrap(),
            v
        );
        assert!(ProjectName::new("my-proj/jobs").is_err());
    }
}
