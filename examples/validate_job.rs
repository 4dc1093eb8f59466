//! Reads a `jobs.create` request body, validates it, and shows it as the job
//! service would store it: with its effective settings, QUEUED, in the API's JSON.
//!
//! ```text
//! cargo run --example validate_job -- examples/sample/job.json
//! ```
//!
//! Exits 0 for a valid job; 1 for an invalid one, printing the API's error body
//! (with one field violation per broken rule) on stdout and the message on
//! stderr; 2 when the file cannot be read.

use std::process::ExitCode;

use batch_prediction::{Error, Etag, Job, SystemClock, Transition};

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/sample/job.json".to_owned());
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match check(&text) {
        Ok(job) => {
            let input = job.prediction_input.as_ref().expect("validated");
            eprintln!(
                "{path}: valid batch prediction job {:?}",
                job.job_id.as_deref().unwrap_or("")
            );
            eprintln!(
                "  model:              {}",
                input.model.as_ref().expect("validated")
            );
            eprintln!(
                "  input:              {} {:?}",
                input.data_format.expect("validated"),
                input.input_paths
            );
            eprintln!(
                "  output:             {} to {}",
                input.effective_output_data_format(),
                input.output_path.as_deref().unwrap_or("")
            );
            eprintln!("  batch size:         {}", input.effective_batch_size());
            eprintln!(
                "  max worker count:   {}",
                input.effective_max_worker_count()
            );
            eprintln!("  signature:          {}", input.effective_signature_name());
            println!(
                "{}",
                serde_json::to_string_pretty(&job).expect("a job serializes")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            println!(
                "{}",
                serde_json::to_string_pretty(&e.to_status().to_json()).expect("JSON")
            );
            ExitCode::from(1)
        }
    }
}

/// What `jobs.create` does before it stores a job: parse, validate, drop
/// output-only fields, queue it and give it an etag.
fn check(text: &str) -> Result<Job, Error> {
    let mut job = Job::from_json(text)?;
    job.validate()?;
    job.clear_output_only();
    job.apply(Transition::Queue, &SystemClock)?;
    job.etag = Some(Etag::from_bytes(1u64.to_be_bytes()));
    Ok(job)
}
