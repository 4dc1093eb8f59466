//! The job service end to end: create jobs, list them with a filter, patch
//! labels with an etag, run one to completion with the echo predictor, and
//! cancel another.
//!
//! ```text
//! cargo run --example job_service                  # jobs in memory
//! cargo run --example job_service -- --store DIR   # jobs in a durable store under DIR
//! ```
//!
//! Inputs and outputs are the bundled sample's: `examples/sample/instances.jsonl`
//! in, `examples/sample/output/service_*` out.

use std::error::Error;
use std::sync::Arc;

use batch_prediction::service::ListJobsRequest;
use batch_prediction::{
    BatchExecutor, EchoResolver, InMemoryJobStore, Job, JobService, JobStore, LocalJobStore,
    LocalStorage, ProjectName,
};
use serde_json::json;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store: Box<dyn JobStore> = match args.as_slice() {
        [] => Box::new(InMemoryJobStore::new()),
        [flag, dir] if flag == "--store" => Box::new(LocalJobStore::open(dir)?),
        _ => return Err("usage: job_service [--store DIR]".into()),
    };
    let service = JobService::new(store)?;
    let parent: ProjectName = "projects/my-project".parse()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();

    // Create two jobs, as a client's jobs.create requests would.
    let mut names = Vec::new();
    for (i, team) in ["ml", "ops"].iter().enumerate() {
        let id = format!("service_{stamp}_{i}");
        let request = json!({
            "jobId": id,
            "labels": {"team": team},
            "predictionInput": {
                "dataFormat": "JSON",
                "inputPaths": ["examples/sample/instances.jsonl"],
                "outputPath": format!("examples/sample/output/{id}"),
                "region": "local",
                "uri": "echo",
                "batchSize": "8"
            }
        });
        let job = service.create(&parent, Job::from_value(request)?)?;
        println!(
            "created {id}: state {}, etag {}",
            job.state(),
            job.etag
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        names.push(parent.job(&id)?);
    }

    // List with a filter.
    let page = service.list(
        &parent,
        &ListJobsRequest::new().set_filter("labels.team=ml AND state=QUEUED"),
    )?;
    println!(
        "jobs.list(labels.team=ml AND state=QUEUED): {}",
        page.to_json()
    );

    // Patch labels, guarded by the etag.
    let current = service.get(&names[0])?;
    let patched = service.patch(
        &names[0],
        Job::default()
            .set_labels([("team", "ml"), ("owner", "alice")])
            .set_etag(current.etag.clone().ok_or("a job has an etag")?),
        "labels,etag",
    )?;
    println!("patched labels: {:?}", patched.labels);

    // Cancel the second job while it is queued; run the first.
    service.cancel(&names[1])?;
    let executor = BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(EchoResolver));
    let finished = service.run_next(&executor)?.ok_or("a job is queued")?;
    println!(
        "ran {}: {}",
        finished.job_id.as_deref().unwrap_or(""),
        serde_json::to_string_pretty(&finished.to_json())?
    );
    let cancelled = service.get(&names[1])?;
    println!(
        "cancelled {}: state {}, {:?}",
        names[1],
        cancelled.state(),
        cancelled.error_message
    );
    Ok(())
}
