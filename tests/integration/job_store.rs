//! Job stores: the conformance suite on every store, durability across
//! reopening and `kill -9`, recovery of interrupted runs, and concurrent
//! read-modify-write cycles that never lose an update.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use batch_prediction::iam::Policy;
use batch_prediction::service::{INTERRUPTED_CANCEL_MESSAGE, INTERRUPTED_MESSAGE, JobRecord};
use batch_prediction::testing::job_store_conformance;
use batch_prediction::{
    Code, ErrorKind, InMemoryJobStore, Job, JobName, JobService, JobStore, LocalJobStore,
    ProjectName, State,
};
use serde_json::json;

fn project() -> ProjectName {
    "projects/my-proj".parse().unwrap()
}

fn job(id: &str) -> Job {
    Job::from_value(json!({
        "jobId": id,
        "predictionInput": {
            "dataFormat": "JSON", "inputPaths": ["gs://b/in/*"], "outputPath": "gs://b/out",
            "region": "local", "uri": "echo"}
    }))
    .unwrap()
}

#[test]
fn every_store_meets_the_contract() {
    job_store_conformance(&InMemoryJobStore::new(), &project());
    let boxed: Box<dyn JobStore> = Box::new(InMemoryJobStore::new());
    job_store_conformance(&boxed, &project());
    let dir = tempfile::tempdir().unwrap();
    let local = LocalJobStore::open(dir.path()).unwrap();
    job_store_conformance(&local, &project());
    job_store_conformance(&Arc::new(local), &"projects/other-proj".parse().unwrap());
}

#[test]
fn local_store_keeps_everything_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let name: JobName = "projects/example.com:my-proj/jobs/Job_1".parse().unwrap();
    let (job_before, policy_before) = {
        let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
        service
            .create(&name.parent(), job("Job_1").set_label("team", "ml"))
            .unwrap();
        service
            .create(&name.parent(), job("job_1"))
            .expect("IDs differing in case are different jobs");
        service
            .patch(&name, Job::default().set_label("team", "ops"), "labels")
            .unwrap();
        let policy = service
            .set_iam_policy(
                &name,
                Policy::default().grant("roles/ml.viewer", "user:a@example.com"),
                None,
            )
            .unwrap();
        (service.get(&name).unwrap(), policy)
    };
    let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    assert_eq!(
        service.get(&name).unwrap(),
        job_before,
        "same job, same etag"
    );
    assert_eq!(service.get_iam_policy(&name, None).unwrap(), policy_before);
    let next = service
        .create(&name.parent(), job("later"))
        .expect("sequence numbers continue");
    let page = service
        .list(
            &name.parent(),
            &batch_prediction::service::ListJobsRequest::new(),
        )
        .unwrap();
    let ids: Vec<&str> = page
        .jobs
        .iter()
        .map(|j| j.job_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["later", "job_1", "Job_1"]);
    assert_eq!(next.state(), State::Queued);
}

#[test]
fn every_valid_job_id_fits_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [
        "A".repeat(128),
        format!("a{}", "Z_9".repeat(42)),
        "a".repeat(128),
    ];
    {
        let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
        for id in &ids {
            service.create(&project(), job(id)).unwrap();
        }
    }
    let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    for id in &ids {
        assert_eq!(
            service
                .get(&project().job(id).unwrap())
                .unwrap()
                .job_id
                .as_deref(),
            Some(id.as_str())
        );
    }
}

#[test]
fn impossible_numbers_and_shared_sequences_are_corrupt() {
    for (replacement, why) in [
        (r#""sequence":"18446744073709551615""#, "impossible numbers"),
        (r#""sequence":"2""#, "another record has sequence"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LocalJobStore::open(dir.path()).unwrap();
            for id in ["j1", "j2"] {
                store
                    .insert(JobRecord::new(project().job(id).unwrap(), job(id)))
                    .unwrap();
            }
        }
        let file = dir.path().join("jobs/my-proj/j1.json");
        let text = std::fs::read_to_string(&file).unwrap();
        let changed = text.replace(r#""sequence":"1""#, replacement);
        assert_ne!(text, changed, "the edit applies");
        std::fs::write(&file, changed).unwrap();
        let err = LocalJobStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt record"), "{err}");
        assert!(
            std::error::Error::source(&err)
                .unwrap()
                .to_string()
                .contains(why),
            "{err}: {:?}",
            std::error::Error::source(&err).map(|e| e.to_string())
        );
    }
}

#[test]
fn a_corrupt_record_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalJobStore::open(dir.path()).unwrap();
        store
            .insert(JobRecord::new(project().job("j1").unwrap(), job("j1")))
            .unwrap();
    }
    let file = dir.path().join("jobs/my-proj/j1.json");
    std::fs::write(&file, b"{\"format\": 1, \"name\": ").unwrap();
    let err = LocalJobStore::open(dir.path()).unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.to_string()
            .starts_with(&format!("job store: corrupt record {}", file.display())),
        "{err}"
    );
}

#[test]
fn interrupted_runs_are_resolved_when_the_service_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalJobStore::open(dir.path()).unwrap();
        for (id, state) in [
            ("queued", State::Queued),
            ("preparing", State::Preparing),
            ("running", State::Running),
            ("cancelling", State::Cancelling),
            ("done", State::Succeeded),
        ] {
            let mut j = job(id);
            j.state = Some(state);
            j.create_time = Some("2026-01-01T00:00:00Z".parse().unwrap());
            store
                .insert(JobRecord::new(project().job(id).unwrap(), j))
                .unwrap();
        }
    }
    let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    let get = |id: &str| service.get(&project().job(id).unwrap()).unwrap();
    assert_eq!(get("queued").state(), State::Queued, "still to run");
    assert_eq!(get("done").state(), State::Succeeded);
    for id in ["preparing", "running"] {
        let j = get(id);
        assert_eq!(j.state(), State::Failed, "{id}");
        assert_eq!(j.error_message.as_deref(), Some(INTERRUPTED_MESSAGE));
        assert!(j.end_time.is_some());
    }
    let j = get("cancelling");
    assert_eq!(j.state(), State::Cancelled);
    assert_eq!(j.error_message.as_deref(), Some(INTERRUPTED_CANCEL_MESSAGE));
}

/// Threads increment a counter label by etag read-modify-write; every
/// increment that succeeded is in the final value, and every refusal was
/// ABORTED.
fn no_lost_updates(service: &JobService, threads: usize, increments: usize) {
    let names: Vec<JobName> = (0..2)
        .map(|i| {
            let id = format!("counter{i}");
            service
                .create(&project(), job(&id).set_label("n", "0"))
                .unwrap();
            project().job(&id).unwrap()
        })
        .collect();
    let aborted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let names = &names;
                s.spawn(move || {
                    let mut aborted = 0;
                    for i in 0..increments {
                        let name = &names[(t + i) % names.len()];
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            assert!(attempts < 100_000, "no progress");
                            let current = service.get(name).unwrap();
                            let n: u64 = current.labels["n"].parse().unwrap();
                            let body = Job::default()
                                .set_labels([("n", (n + 1).to_string())])
                                .set_etag(current.etag.unwrap());
                            match service.patch(name, body, "labels,etag") {
                                Ok(_) => break,
                                Err(e) => {
                                    assert_eq!(e.code(), Code::Aborted, "{e}");
                                    assert!(
                                        matches!(e.kind(), ErrorKind::EtagMismatch { .. }),
                                        "{e}"
                                    );
                                    aborted += 1;
                                }
                            }
                        }
                    }
                    aborted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let total: u64 = names
        .iter()
        .map(|n| service.get(n).unwrap().labels["n"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, (threads * increments) as u64, "{aborted} aborted");
}

#[test]
fn concurrent_read_modify_write_loses_nothing_in_memory() {
    no_lost_updates(&JobService::new(InMemoryJobStore::new()).unwrap(), 8, 200);
}

#[test]
fn concurrent_read_modify_write_loses_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    no_lost_updates(&service, 4, 25);
    drop(service);
    let reopened = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    let total: u64 = (0..2)
        .map(|i| {
            reopened
                .get(&project().job(&format!("counter{i}")).unwrap())
                .unwrap()
                .labels["n"]
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 100, "every acknowledged update is on disk");
}

const CRASH_DIR: &str = "BATCH_PREDICTION_CRASH_DIR";
const CRASH_PREFIX: &str = "BATCH_PREDICTION_CRASH_PREFIX";

/// The child of `kill_9_loses_no_acknowledged_job_or_version`: creates jobs and bumps
/// a counter as fast as it can, printing an acknowledgement after each
/// write returns, until it is killed. Does nothing unless run by that test.
#[test]
#[ignore = "run as a child process by kill_9_loses_no_acknowledged_job_or_version"]
fn crash_child() {
    let (Ok(dir), Ok(prefix)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_PREFIX)) else {
        return;
    };
    let service = JobService::new(LocalJobStore::open(&dir).unwrap()).unwrap();
    let counter = project().job("counter").unwrap();
    if service.get(&counter).is_err() {
        service
            .create(&project(), job("counter").set_label("n", "0"))
            .unwrap();
    }
    let model = project().model("crash").unwrap();
    if service.get_model(&model).is_err() {
        service
            .create_model(
                &project(),
                batch_prediction::model::Model::from_json(serde_json::json!({"name": "crash"}))
                    .unwrap(),
            )
            .unwrap();
    }
    for i in 0.. {
        service
            .create(
                &project(),
                job(&format!("{prefix}_{i}")).set_label("i", i.to_string()),
            )
            .unwrap();
        println!("created {i}");
        // A version: its model's file rewritten whole, durably.
        let version = batch_prediction::model::Version::from_json(serde_json::json!({
            "name": format!("{prefix}_{i}"), "deploymentUri": format!("gs://b/{prefix}/{i}")
        }))
        .unwrap();
        service.create_version(&model, version).unwrap();
        println!("versioned {i}");
        let current = service.get(&counter).unwrap();
        let n: u64 = current.labels["n"].parse().unwrap();
        service
            .patch(
                &counter,
                Job::default().set_labels([("n", (n + 1).to_string())]),
                "labels",
            )
            .unwrap();
        println!("counted {}", n + 1);
    }
}

#[test]
fn kill_9_loses_no_acknowledged_job_or_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut last_count = 0u64;
    for round in 0..6u64 {
        let prefix = format!("r{round}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "job_store::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR, dir.path())
            .env(CRASH_PREFIX, &prefix)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a different number of acknowledgements each round,
        // then a little later, so the kill lands anywhere in a write.
        let kill_after = 3 + round * 7;
        let mut created: Option<u64> = None;
        let mut versioned: Option<u64> = None;
        let mut counted = last_count;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(i) = line.strip_prefix("created ") {
                created = Some(i.parse().unwrap());
            } else if let Some(i) = line.strip_prefix("versioned ") {
                versioned = Some(i.parse().unwrap());
            } else if let Some(n) = line.strip_prefix("counted ") {
                counted = n.parse().unwrap();
            }
            if created.is_some_and(|c| c >= kill_after) {
                std::thread::sleep(Duration::from_micros(round * 300));
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let created = created.expect("the child acknowledged writes");
        assert!(
            created >= kill_after,
            "the child stopped early, at {created}"
        );

        let store = LocalJobStore::open(dir.path()).expect("the store reopens cleanly");
        for i in 0..=created {
            let name = project().job(&format!("{prefix}_{i}")).unwrap();
            let record = store
                .get(&name)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged job {name} lost"));
            assert_eq!(record.job.labels["i"], i.to_string());
            assert_eq!(record.job.state(), State::Queued);
        }
        let counter = store
            .get(&project().job("counter").unwrap())
            .unwrap()
            .unwrap();
        let n: u64 = counter.job.labels["n"].parse().unwrap();
        assert!(n >= counted, "acknowledged count {counted} lost: {n}");
        let model = store
            .get_model(&project().model("crash").unwrap())
            .unwrap()
            .expect("the model survives");
        for i in 0..=versioned.unwrap_or(0) {
            if versioned.is_some() {
                let v = model
                    .version(&format!("{prefix}_{i}"))
                    .unwrap_or_else(|| panic!("acknowledged version {prefix}_{i} lost"));
                assert_eq!(
                    v.deployment_uri(),
                    Some(format!("gs://b/{prefix}/{i}").as_str())
                );
            }
        }
        let model_leftovers: Vec<_> = std::fs::read_dir(dir.path().join("models/my-proj"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".json"))
            .collect();
        assert_eq!(
            model_leftovers,
            Vec::<String>::new(),
            "temporary files removed"
        );
        last_count = n;
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("jobs/my-proj"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".json"))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new(), "temporary files removed");
    }
}

/// Opens the store at `dir` on a thread of its own, so that a store that
/// blocks fails the test instead of hanging it.
fn open_within(
    dir: &std::path::Path,
    limit: Duration,
) -> Result<LocalJobStore, batch_prediction::Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(LocalJobStore::open(dir));
    });
    rx.recv_timeout(limit)
        .expect("opening the store blocked (on a FIFO?)")
}

#[cfg(unix)]
#[test]
fn a_fifo_in_the_store_is_refused_not_waited_on() {
    let mkfifo = |path: &std::path::Path| {
        let made = Command::new("mkfifo").arg(path).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
    };
    // A record that is a FIFO.
    let dir = tempfile::tempdir().unwrap();
    drop(LocalJobStore::open(dir.path()).unwrap());
    std::fs::create_dir_all(dir.path().join("jobs/my-proj")).unwrap();
    let fifo = dir.path().join("jobs/my-proj/stuck.json");
    mkfifo(&fifo);
    let err = open_within(dir.path(), Duration::from_secs(30)).unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.to_string(),
        format!(
            "job store: {} is not a regular file: it is a FIFO; the store only ever writes regular files",
            fifo.display()
        )
    );
    // A LOCK that is a FIFO (opening it to write would wait for a reader).
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("LOCK");
    mkfifo(&lock);
    let err = open_within(dir.path(), Duration::from_secs(30)).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "job store: {} is not a regular file: it is a FIFO",
            lock.display()
        )),
        "{err}"
    );
    // A record that is a symlink, even to a good record, is refused too.
    let dir = tempfile::tempdir().unwrap();
    let store = LocalJobStore::open(dir.path()).unwrap();
    let service = JobService::new(store).unwrap();
    service.create(&project(), job("real")).unwrap();
    drop(service);
    let real = dir.path().join("jobs/my-proj/real.json");
    std::fs::rename(&real, dir.path().join("elsewhere.json")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere.json"), &real).unwrap();
    let err = open_within(dir.path(), Duration::from_secs(30)).unwrap_err();
    assert!(err.to_string().contains("it is a symlink"), "{err}");
}

/// A runner outside the process (a Slurm cluster's) keeps its state with
/// the job: the durable store keeps it, a change of it alone leaves the
/// job's etag, and a service reopened for that runner leaves its
/// unfinished jobs to it (a cancel waits for it), while one opened
/// without it fails them as interrupted.
#[test]
fn an_external_runners_jobs_survive_a_restart_and_wait_for_it_to_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let open = |external: bool| {
        let builder = JobService::builder(LocalJobStore::open(dir.path()).unwrap());
        if external {
            builder.with_external_runner("slurm").build().unwrap()
        } else {
            builder.build().unwrap()
        }
    };
    let service = open(true);
    for id in ["outside", "cancelled", "inside"] {
        service.create(&project(), job(id)).unwrap();
    }
    let state = json!({"runner": "slurm", "array": "11"});
    let claimed: Vec<JobName> = (0..2)
        .map(|_| service.claim_next(state.clone()).unwrap().unwrap().name)
        .collect();
    assert_eq!(
        claimed,
        [
            project().job("outside").unwrap(),
            project().job("cancelled").unwrap()
        ]
    );
    let name = &claimed[0];
    let before = service.get(name).unwrap();
    assert_eq!(before.state(), State::Preparing);
    let written = service
        .update_record(name, |record| {
            record.runner = Some(json!({"runner": "slurm", "array": "12"}));
            Ok(())
        })
        .unwrap();
    assert_eq!(written.runner.as_ref().unwrap()["array"], "12");
    assert_eq!(
        service.get(name).unwrap().etag,
        before.etag,
        "not the job's change"
    );
    let followed: Vec<JobName> = service
        .followed_jobs("slurm")
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(followed, claimed);
    assert!(service.followed_jobs("other").unwrap().is_empty());
    // A job of the local runner, mid-run when the process stops.
    let inside = project().job("inside").unwrap();
    service
        .update_record(&inside, |record| {
            record.job.apply(
                batch_prediction::state::Transition::Prepare,
                &batch_prediction::SystemClock,
            )?;
            Ok(())
        })
        .unwrap();
    drop(service);

    let service = open(true);
    assert_eq!(
        service.get(name).unwrap().state(),
        State::Preparing,
        "left to the runner"
    );
    assert_eq!(
        service.store().get(name).unwrap().unwrap().runner,
        Some(json!({"runner": "slurm", "array": "12"})),
        "kept on disk"
    );
    assert_eq!(service.get(&inside).unwrap().state(), State::Failed);
    let seen = service.changes();
    service.cancel(&claimed[1]).unwrap();
    assert!(service.changes() > seen, "a cancel wakes the runner");
    assert_eq!(
        service.get(&claimed[1]).unwrap().state(),
        State::Cancelling,
        "the runner stops it on the cluster, then ends it"
    );
    let mut done = service.get(&claimed[1]).unwrap();
    done.apply(
        batch_prediction::state::Transition::cancel(),
        &batch_prediction::SystemClock,
    )
    .unwrap();
    assert_eq!(
        service.record_end(&claimed[1], &done).unwrap().state(),
        State::Cancelled
    );
    drop(service);

    let service = open(false);
    let interrupted = service.get(name).unwrap();
    assert_eq!(interrupted.state(), State::Failed);
    let message = interrupted.error_message.unwrap();
    assert!(
        message.contains("without the runner \"slurm\"") && message.contains("may still run"),
        "{message}"
    );
    assert_eq!(service.get(&claimed[1]).unwrap().state(), State::Cancelled);
}

/// A store file whose runner state is not an object is refused, naming it.
#[test]
fn a_record_with_a_malformed_runner_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    service.create(&project(), job("j")).unwrap();
    drop(service);
    let path = dir.path().join("jobs/my-proj/j.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["runner"] = json!("slurm");
    std::fs::write(&path, record.to_string()).unwrap();
    let error = LocalJobStore::open(dir.path())
        .and_then(|store| store.get(&project().job("j").unwrap()))
        .unwrap_err();
    assert!(error.to_string().contains("\"runner\""), "{error}");
}
