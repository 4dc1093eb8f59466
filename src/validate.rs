//! [`Job::validate`]: the rules a `jobs.create` request must satisfy.
//!
//! Each rule and its source (links below the table):
//!
//! | field | rule | source |
//! |---|---|---|
//! | `jobId` | required; `^[A-Za-z][A-Za-z0-9_]{0,127}$` | [names] |
//! | `labels` | at most 64 | [labels] |
//! | label key | 1–63 characters; starts with a lowercase letter or a letter without case (international, `\p{Lo}`); lowercase letters, other letters without case (`\p{Lo}`), digits, `_`, `-` | [labels] |
//! | label value | 0–63 characters of the same set | [labels] |
//! | `predictionInput` | required; a training job (`trainingInput`) is not run by this crate | [REST] |
//! | `predictionInput.dataFormat` | required; `JSON`, `TEXT` (deprecated JSON), `TF_RECORD`, `TF_RECORD_GZIP` | [REST] |
//! | `predictionInput.outputDataFormat` | if set: `JSON`, `TEXT`, `CSV` (`DATA_FORMAT_UNSPECIFIED` is proto3's unset value: JSON) | [REST] |
//! | `predictionInput.inputPaths` | at least one; none empty | [REST] |
//! | `predictionInput.inputPaths` | at most [`MAX_INPUT_PATHS`] (1,000) entries, each at most 4,096 bytes | this crate: bounded planning work per job (no limit is documented); a pattern given twice is expanded once |
//! | `predictionInput.outputPath`, `.region` | required, non-empty | [REST] |
//! | `predictionInput.outputPath` | no `inputPaths` pattern matches a file the job writes there (compared after dropping `.` and empty segments and trailing `/`; the executor compares again through its storage, links followed) | this crate: a job never reads or deletes its own output |
//! | `modelName` / `versionName` / `uri` | exactly one; names by the rules of [`ModelName`], [`VersionName`]; `uri` non-empty | [REST], [names] |
//! | `predictionInput.batchSize`, `.maxWorkerCount` | if set, positive; no upper bound | [REST] (no bound documented) |
//!
//! [REST]: https://cloud.google.com/ai-platform/prediction/docs/reference/rest/v1/projects.jobs
//! [names]: https://cloud.google.com/ai-platform/training/docs/managing-models-jobs
//! [labels]: https://cloud.google.com/ai-platform/prediction/docs/resource-labels
//!
//! Label lengths are counted in characters (Unicode scalar values), as the
//! English reference states; the Korean page's "(bytes)" is not followed.
//! Output-only fields (`createTime`, `state`, `predictionOutput`, …) are not
//! checked: a service ignores them on create, as the API does.

use std::sync::OnceLock;

/// The most entries `predictionInput.inputPaths` may have. The API documents
/// no limit; this one bounds the work of planning a job (each entry is a
/// listing or a lookup) while a wildcard still matches any number of files.
pub const MAX_INPUT_PATHS: usize = 1000;

/// The longest `inputPaths` entry, in bytes: Cloud Storage object names
/// are at most 1,024 bytes, so this leaves room for `gs://BUCKET/`.
const MAX_INPUT_PATH_BYTES: usize = 4096;

use regex::Regex;

use crate::error::{ValidationError, Violation};
use crate::model::{DataFormat, Job, ModelVersion, PredictionInput};
use crate::name::{ModelName, VersionName, id_problem};

/// The most labels a job may have.
pub const MAX_LABELS: usize = 64;
/// The longest label key or value, in characters.
pub const MAX_LABEL_LEN: usize = 63;

struct Violations(Vec<Violation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }
}

/// A character that may not appear in a label key or value.
fn label_char_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[^\p{Ll}\p{Lo}\p{N}_-]").expect("valid regex"))
}

fn label_first_char_ok(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^[\p{Ll}\p{Lo}]$").expect("valid regex"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// Why a label key or value (`what`) is invalid, or `None`.
fn label_part_problem(what: &str, s: &str) -> Option<String> {
    let len = s.chars().count();
    if len > MAX_LABEL_LEN {
        return Some(format!(
            "{what} {s:?} is {} long: at most {MAX_LABEL_LEN} are allowed",
            crate::name::characters(len)
        ));
    }
    if what == "key" {
        match s.chars().next() {
            None => return Some("key is empty".to_owned()),
            Some(c) if !label_first_char_ok(c) => {
                return Some(format!(
                    "key {s:?} must start with a lowercase letter or an international character"
                ));
            }
            Some(_) => {}
        }
    }
    label_char_regex().find(s).map(|m| {
        let c = s[m.start()..].chars().next().unwrap_or_default();
        let i = s[..m.start()].chars().count();
        format!(
            "{what} {s:?} has {c:?} at position {i}: only lowercase letters, digits, underscores and dashes are allowed"
        )
    })
}

fn check_labels(job: &Job, v: &mut Violations) {
    if job.labels.len() > MAX_LABELS {
        v.add(
            "labels",
            format!(
                "has {} labels: at most {MAX_LABELS} are allowed",
                job.labels.len()
            ),
        );
    }
    for (key, value) in &job.labels {
        let field = format!("labels[{}]", serde_json::Value::from(key.as_str()));
        for problem in [
            label_part_problem("key", key),
            label_part_problem("value", value),
        ]
        .into_iter()
        .flatten()
        {
            v.add(&field, problem);
        }
    }
}

fn check_prediction_input(input: &PredictionInput, v: &mut Violations) {
    const P: &str = "predictionInput.";
    match input.data_format {
        None => v.add(format!("{P}dataFormat"), "required"),
        Some(f) if !f.is_input() => v.add(
            format!("{P}dataFormat"),
            format!(
                "{f} is {}: expected one of JSON, TEXT, TF_RECORD, TF_RECORD_GZIP",
                if f == DataFormat::Csv {
                    "an output format only"
                } else {
                    "not a format"
                }
            ),
        ),
        Some(_) => {}
    }
    // DATA_FORMAT_UNSPECIFIED is proto3's unset value: the default, JSON.
    if let Some(f) = input
        .output_data_format
        .filter(|f| !f.is_output() && *f != DataFormat::Unspecified)
    {
        v.add(
            format!("{P}outputDataFormat"),
            format!(
                "{f} is {}: expected one of JSON, TEXT, CSV",
                "an input format only"
            ),
        );
    }
    if input.input_paths.is_empty() {
        v.add(format!("{P}inputPaths"), "required: at least one path");
    }
    if input.input_paths.len() > MAX_INPUT_PATHS {
        v.add(
            format!("{P}inputPaths"),
            format!(
                "{} paths: at most {MAX_INPUT_PATHS} (a wildcard matches many files in one)",
                input.input_paths.len()
            ),
        );
    }
    for (i, path) in input.input_paths.iter().enumerate() {
        if path.is_empty() {
            v.add(format!("{P}inputPaths[{i}]"), "is empty");
        } else if path.len() > MAX_INPUT_PATH_BYTES {
            v.add(
                format!("{P}inputPaths[{i}]"),
                format!("{} bytes: at most {MAX_INPUT_PATH_BYTES}", path.len()),
            );
        }
    }
    if input.output_path.as_deref().is_none_or(str::is_empty) {
        v.add(format!("{P}outputPath"), "required");
    }
    if let Some(output_path) = input.output_path.as_deref().filter(|p| !p.is_empty()) {
        let keys = crate::executor::overlap::Keys::Lexical;
        let patterns = &input.input_paths;
        for (i, example) in
            crate::executor::overlap::patterns_reaching_output(patterns, output_path, &keys)
        {
            v.add(
                format!("{P}outputPath"),
                overlap_message(output_path, i, &patterns[i], &example),
            );
        }
    }
    if input.region.as_deref().is_none_or(str::is_empty) {
        v.add(format!("{P}region"), "required");
    }
    let keys = input.union_keys();
    match keys.as_slice() {
        [] => v.add(
            "predictionInput",
            "one of modelName, versionName, uri is required",
        ),
        [_] => {}
        [rest @ .., last] => v.add(
            "predictionInput",
            format!(
                "{} and {last} are {} set: set exactly one of modelName, versionName, uri",
                rest.join(", "),
                if rest.len() == 1 { "both" } else { "all" }
            ),
        ),
    }
    if let Some(ModelVersion::Uri(uri)) = &input.model
        && uri.is_empty()
    {
        v.add(format!("{P}uri"), "is empty");
    }
    for (key, raw) in input.rejected_model() {
        let problem = match *key {
            "modelName" => raw.parse::<ModelName>().err().map(|e| e.to_string()),
            "versionName" => raw.parse::<VersionName>().err().map(|e| e.to_string()),
            _ => raw.is_empty().then(|| "is empty".to_owned()),
        };
        if let Some(problem) = problem {
            v.add(format!("{P}{key}"), problem);
        }
    }
    for (name, value) in [
        ("batchSize", input.batch_size),
        ("maxWorkerCount", input.max_worker_count),
    ] {
        if let Some(n) = value.filter(|&n| n <= 0) {
            v.add(format!("{P}{name}"), format!("must be positive, got {n}"));
        }
    }
}

/// Why a job whose `inputPaths[index]` (`pattern`) can match `example`, a
/// file it writes into `output_path`, is refused.
pub(crate) fn overlap_message(
    output_path: &str,
    index: usize,
    pattern: &str,
    example: &str,
) -> String {
    format!(
        "\"{output_path}\" overlaps inputPaths[{index}] \"{pattern}\": that pattern matches this job's own output files (such as \"{example}\"), which a run writes and deletes; choose an outputPath that no input path matches"
    )
}

impl Job {
    /// Checks everything a `jobs.create` request for a batch prediction job
    /// must satisfy (the table in this module's source lists each rule and
    /// its reference).
    ///
    /// # Errors
    /// A [`ValidationError`] listing every violation with its field path, in
    /// wire order.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::Job;
    ///
    /// let job = Job::from_json(r#"{
    ///     "jobId": "1st-try",
    ///     "labels": {"Team": "ml"},
    ///     "predictionInput": {"dataFormat": "CSV", "inputPaths": ["in.json"],
    ///                         "outputPath": "out", "region": "local",
    ///                         "uri": "model", "batchSize": "0"}
    /// }"#)?;
    /// let err = job.validate().unwrap_err();
    /// let fields: Vec<&str> = err.fields().collect();
    /// assert_eq!(fields, ["jobId", "labels[\"Team\"]", "predictionInput.dataFormat", "predictionInput.batchSize"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations(Vec::new());
        match self.job_id.as_deref() {
            None | Some("") => v.add("jobId", "required"),
            Some(id) => {
                if let Some(problem) = id_problem(id) {
                    v.add("jobId", problem);
                }
            }
        }
        check_labels(self, &mut v);
        match (&self.prediction_input, &self.training_input) {
            (Some(input), None) => check_prediction_input(input, &mut v),
            (Some(input), Some(_)) => {
                check_prediction_input(input, &mut v);
                v.add(
                    "trainingInput",
                    "must not be set with predictionInput: a job is either a training or a prediction job",
                );
            }
            (None, Some(_)) => v.add(
                "predictionInput",
                "required: training jobs (trainingInput) are not run by this crate",
            ),
            (None, None) => v.add("predictionInput", "required"),
        }
        match ValidationError::from_violations(v.0) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The label rules alone, for `jobs.patch`: every violation of `labels`.
    pub(crate) fn validate_labels(&self) -> Result<(), ValidationError> {
        let mut v = Violations(Vec::new());
        check_labels(self, &mut v);
        match ValidationError::from_violations(v.0) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
