//! `describe`, `list`, `cancel` and `submit --endpoint`: requests to a
//! service that serves the jobs API (the emulator, or a service mounting
//! `RestApi`).

use std::time::Duration;

use batch_prediction::Job;
use clap::Args;
use serde_json::{Value, json};

use crate::{Exit, Format, count};

/// Which service, which project, who asks, and how answers are shown.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "BATCH_PREDICTION_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The project the jobs belong to.
    #[arg(long, env = "CLOUDSDK_CORE_PROJECT")]
    pub project: Option<String>,
    /// Sent as `Authorization: Bearer TOKEN` (to the emulator, a principal
    /// such as `user:alice@example.com`).
    #[arg(long, env = "CLOUDSDK_AUTH_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// `table` (the default) for people, `json` for the API's JSON.
    #[arg(long, value_enum, default_value_t = Format::Table,
          default_value_if("json", "true", "json"))]
    pub format: Format,
    /// For scripts: `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// A client of one service and project.
struct Client {
    agent: ureq::Agent,
    jobs: String,
    project: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &ServiceArgs) -> Result<Client, Exit> {
        let endpoint = args.endpoint.as_deref().ok_or_else(|| {
            Exit::Usage("give --endpoint URL (or BATCH_PREDICTION_ENDPOINT)".into())
        })?;
        let project = args
            .project
            .as_deref()
            .ok_or_else(|| Exit::Usage("give --project (or set CLOUDSDK_CORE_PROJECT)".into()))?;
        let project = project.trim_start_matches("projects/").to_owned();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Client {
            agent,
            jobs: format!(
                "{}/v1/projects/{project}/jobs",
                endpoint.trim_end_matches('/')
            ),
            project,
            token: args.access_token.clone(),
        })
    }

    /// Sends a request; the JSON of a 200, or the API's error as an [`Exit::Failed`].
    fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, Exit> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut request = self.agent.get(url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            (_, body) => {
                let mut request = self.agent.post(url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send_json(body.cloned().unwrap_or_else(|| json!({})))
            }
        };
        let mut response = response.map_err(|e| Exit::Failed(format!("{method} {url}: {e}")))?;
        let status = response.status().as_u16();
        let json: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| Exit::Failed(format!("{method} {url}: HTTP {status}, not JSON: {e}")))?;
        if status == 200 {
            return Ok(json);
        }
        let error = &json["error"];
        Err(Exit::Failed(format!(
            "{} ({status}): {}",
            error["status"].as_str().unwrap_or("ERROR"),
            error["message"].as_str().unwrap_or("no message")
        )))
    }

    fn job_url(&self, id: &str) -> String {
        format!("{}/{id}", self.jobs)
    }
}

/// The job as lines of `field: value`, as `gcloud … describe` shows it.
pub fn print_job(job: &Value) {
    fn walk(value: &Value, indent: usize) {
        let pad = " ".repeat(indent);
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match inner {
                        Value::Object(_) => {
                            println!("{pad}{key}:");
                            walk(inner, indent + 2);
                        }
                        Value::Array(items) => {
                            println!("{pad}{key}:");
                            for item in items {
                                println!("{pad}- {}", scalar(item));
                            }
                        }
                        other => println!("{pad}{key}: {}", scalar(other)),
                    }
                }
            }
            other => println!("{pad}{}", scalar(other)),
        }
    }
    fn scalar(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    walk(job, 0);
}

fn show(job: &Value, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(job).expect("JSON prints")
        ),
        Format::Table => print_job(job),
    }
}

pub fn describe(args: &ServiceArgs, id: &str) -> Exit {
    let client = match Client::new(args) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    match client.call("GET", &client.job_url(id), None) {
        Ok(job) => {
            show(&job, args.format);
            Exit::Ok
        }
        Err(exit) => exit,
    }
}

pub fn list(args: &ServiceArgs, filter: Option<&str>, limit: Option<usize>) -> Exit {
    let client = match Client::new(args) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let mut jobs: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut query = vec!["pageSize=100".to_owned()];
        if let Some(filter) = filter {
            query.push(format!("filter={}", encode(filter)));
        }
        if let Some(token) = &token {
            query.push(format!("pageToken={}", encode(token)));
        }
        let url = format!("{}?{}", client.jobs, query.join("&"));
        let page = match client.call("GET", &url, None) {
            Ok(page) => page,
            Err(exit) => return exit,
        };
        jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
        token = page["nextPageToken"].as_str().map(str::to_owned);
        if token.is_none() || limit.is_some_and(|l| jobs.len() >= l) {
            break;
        }
    }
    if let Some(limit) = limit {
        jobs.truncate(limit);
    }
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"jobs": jobs})).expect("JSON prints")
        ),
        Format::Table => {
            let rows: Vec<[String; 3]> = jobs
                .iter()
                .map(|j| {
                    [
                        j["jobId"].as_str().unwrap_or("").to_owned(),
                        j["state"].as_str().unwrap_or("").to_owned(),
                        j["createTime"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            let width = rows
                .iter()
                .map(|r| r[0].len())
                .chain([6])
                .max()
                .unwrap_or(6);
            println!("{:<width$}  {:<10}  CREATED", "JOB_ID", "STATUS");
            for [id, state, created] in &rows {
                println!("{id:<width$}  {state:<10}  {created}");
            }
            eprintln!(
                "{} in project {}",
                count(rows.len() as u64, "job"),
                client.project
            );
        }
    }
    Exit::Ok
}

pub fn cancel(args: &ServiceArgs, id: &str) -> Exit {
    let client = match Client::new(args) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    match client.call(
        "POST",
        &format!("{}:cancel", client.job_url(id)),
        Some(&json!({})),
    ) {
        Ok(_) => {
            eprintln!("Cancelled job [{id}].");
            Exit::Ok
        }
        Err(exit) => exit,
    }
}

/// Creates `job` on the service; with `wait`, follows it to its end.
pub fn submit(args: &ServiceArgs, job: Job, wait: bool) -> Exit {
    let client = match Client::new(args) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let id = job.job_id.clone().unwrap_or_default();
    let created = match client.call("POST", &client.jobs, Some(&job.to_json())) {
        Ok(job) => job,
        Err(exit) => return exit,
    };
    eprintln!("Job [{id}] submitted successfully.");
    if !wait {
        show(&created, args.format);
        return Exit::Ok;
    }
    let mut last_state = String::new();
    loop {
        let job = match client.call("GET", &client.job_url(&id), None) {
            Ok(job) => job,
            Err(exit) => return exit,
        };
        let state = job["state"].as_str().unwrap_or("").to_owned();
        if state != last_state {
            eprintln!("{id}: {state}");
            last_state.clone_from(&state);
        }
        match state.as_str() {
            "SUCCEEDED" => {
                show(&job, args.format);
                return Exit::Ok;
            }
            "FAILED" | "CANCELLED" => {
                show(&job, args.format);
                return Exit::Failed(format!(
                    "job {state}: {}",
                    job["errorMessage"].as_str().unwrap_or("")
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
