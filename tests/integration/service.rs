//! The job service: every method's semantics, errors and JSON; IAM with
//! the whole role matrix; the runner.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_prediction::iam::{Binding, Caller, JOB_PERMISSIONS, Policy};
use batch_prediction::service::{JobRecord, ListJobsRequest, ScanOrder};
use batch_prediction::{
    BatchExecutor, Code, EchoResolver, Error, ErrorKind, InMemoryJobStore, InMemoryStorage, Job,
    JobName, JobService, JobStore, ManualClock, ModelVersion, PredictError, Predictor, ProjectName,
    State, StorageExt, predictor_fn,
};
use serde_json::{Value, json};

fn project() -> ProjectName {
    "projects/my-proj".parse().unwrap()
}

fn job_json(id: &str) -> Value {
    json!({
        "jobId": id,
        "labels": {"team": "ml"},
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": ["gs://b/in/*"],
            "outputPath": format!("gs://b/out/{id}"),
            "region": "us-central1",
            "uri": "gs://b/model",
        }
    })
}

fn job(id: &str) -> Job {
    Job::from_value(job_json(id)).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()))
}

fn service() -> JobService {
    JobService::builder(InMemoryJobStore::new())
        .with_clock(clock())
        .build()
        .unwrap()
}

fn code(result: Result<impl std::fmt::Debug, Error>) -> Code {
    result.expect_err("an error").code()
}

#[test]
fn create_sets_server_fields_and_ignores_output_only_ones() {
    let service = service();
    let mut request = job_json("j1");
    request["state"] = json!("SUCCEEDED");
    request["createTime"] = json!("2000-01-01T00:00:00Z");
    request["errorMessage"] = json!("from the client");
    request["predictionOutput"] = json!({"predictionCount": "5"});
    request["etag"] = json!("AAAA");
    let created = service
        .create(&project(), Job::from_value(request).unwrap())
        .unwrap();
    let body = created.to_json();
    assert_eq!(body["state"], "QUEUED");
    assert_eq!(body["createTime"], "2026-01-01T00:00:00Z");
    assert_eq!(body.get("errorMessage"), None);
    assert_eq!(body.get("predictionOutput"), None);
    let etag = body["etag"].as_str().unwrap();
    assert_ne!(etag, "AAAA");
    assert_eq!(etag.len(), 12, "8 bytes in base64: {etag}");
    assert_eq!(body["predictionInput"], job_json("j1")["predictionInput"]);
    assert_eq!(
        service
            .get(&project().job("j1").unwrap())
            .unwrap()
            .to_json(),
        body
    );
}

#[test]
fn create_reports_every_violation_and_duplicates() {
    let service = service();
    let mut bad = job_json("1bad");
    bad["labels"] = json!({"Team": "x"});
    bad["predictionInput"]["batchSize"] = json!("0");
    let err = service
        .create(&project(), Job::from_value(bad).unwrap())
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let body = err.to_status().to_json();
    let fields: Vec<&str> = body["error"]["details"][0]["fieldViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["jobId", "labels[\"Team\"]", "predictionInput.batchSize"]
    );

    service.create(&project(), job("j1")).unwrap();
    let dup = service.create(&project(), job("j1")).unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert_eq!(
        dup.to_string(),
        "job \"projects/my-proj/jobs/j1\" already exists"
    );
    let other: ProjectName = "projects/other-proj".parse().unwrap();
    service
        .create(&other, job("j1"))
        .expect("job IDs are unique per project only");
}

#[test]
fn get_of_a_missing_job_is_not_found() {
    let err = service().get(&project().job("nope").unwrap()).unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.to_status().to_json(),
        json!({"error": {"code": 404, "message": "job \"projects/my-proj/jobs/nope\" not found", "status": "NOT_FOUND"}})
    );
}

fn ids(response: &batch_prediction::service::ListJobsResponse) -> Vec<String> {
    response
        .jobs
        .iter()
        .map(|j| j.job_id.clone().unwrap())
        .collect()
}

#[test]
fn list_pages_newest_first_and_stays_correct_while_jobs_are_created() {
    let service = service();
    for i in 0..25 {
        service
            .create(&project(), job(&format!("j{i:02}")))
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut request = ListJobsRequest::new().set_page_size(10);
    let mut pages = 0;
    loop {
        let page = service.list(&project(), &request).unwrap();
        pages += 1;
        seen.extend(ids(&page));
        // Jobs created between pages are newer: they never shift later pages.
        service
            .create(&project(), job(&format!("late{pages}")))
            .unwrap();
        match page.next_page_token {
            Some(token) => request = request.set_page_token(token),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("j{i:02}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    // Defaults and limits.
    let all = service.list(&project(), &ListJobsRequest::new()).unwrap();
    assert_eq!(all.jobs.len(), 20, "pageSize 0 means 20");
    let err = service
        .list(&project(), &ListJobsRequest::new().set_page_size(-1))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.to_string(), "pageSize must not be negative, got -1");

    // A token is bound to its filter.
    let first = service
        .list(
            &project(),
            &ListJobsRequest::new()
                .set_page_size(1)
                .set_filter("state=QUEUED"),
        )
        .unwrap();
    let token = first.next_page_token.unwrap();
    let err = service
        .list(&project(), &ListJobsRequest::new().set_page_token(token))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = service
        .list(
            &project(),
            &ListJobsRequest::new().set_page_token("garbage!"),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn list_caps_page_size_at_100_and_the_last_page_has_no_token() {
    let service = service();
    for i in 0..101 {
        service
            .create(&project(), job(&format!("j{i:03}")))
            .unwrap();
    }
    let page = service
        .list(&project(), &ListJobsRequest::new().set_page_size(1000))
        .unwrap();
    assert_eq!(page.jobs.len(), 100);
    let rest = service
        .list(
            &project(),
            &ListJobsRequest::new()
                .set_page_size(1000)
                .set_page_token(page.next_page_token.unwrap()),
        )
        .unwrap();
    assert_eq!(ids(&rest), ["j000"]);
    assert_eq!(rest.next_page_token, None);
    assert_eq!(rest.to_json().get("nextPageToken"), None);
}

#[test]
fn list_filters_and_answers_an_empty_result_with_an_empty_object() {
    let service = service();
    service
        .create(&project(), job("census_1").set_label("team", "ml"))
        .unwrap();
    service
        .create(&project(), job("census_2").set_label("team", "ops"))
        .unwrap();
    service.create(&project(), job("other")).unwrap();
    service.cancel(&project().job("census_2").unwrap()).unwrap();
    let list = |filter: &str| {
        ids(&service
            .list(&project(), &ListJobsRequest::new().set_filter(filter))
            .unwrap())
    };
    assert_eq!(list("jobId:census*"), ["census_2", "census_1"]);
    assert_eq!(list("jobId:census* AND state=QUEUED"), ["census_1"]);
    assert_eq!(list("labels.team=ops OR state=CANCELLED"), ["census_2"]);
    assert_eq!(
        list("NOT state=CANCELLED AND createTime>=\"2026-01-01T00:00:00Z\""),
        ["other", "census_1"]
    );
    let empty = service
        .list(
            &project(),
            &ListJobsRequest::new().set_filter("state=FAILED"),
        )
        .unwrap();
    assert_eq!(empty.to_json(), json!({}));
    let err = service
        .list(&project(), &ListJobsRequest::new().set_filter("state=DONE"))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.to_string()
            .starts_with("invalid filter \"state=DONE\": "),
        "{err}"
    );
    assert!(err.to_string().contains("position 6"), "{err}");
    assert_eq!(
        err.to_status().to_json()["error"]["details"][0]["fieldViolations"][0]["field"],
        "filter"
    );
    let other: ProjectName = "projects/empty-proj".parse().unwrap();
    assert_eq!(
        service
            .list(&other, &ListJobsRequest::new())
            .unwrap()
            .to_json(),
        json!({})
    );
}

#[test]
fn patch_replaces_labels_and_checks_the_etag_when_asked() {
    let service = service();
    let name = project().job("j1").unwrap();
    let created = service
        .create(&project(), job("j1").set_label("color", "red"))
        .unwrap();
    let etag0 = created.etag.clone().unwrap();

    let body = Job::default()
        .set_label("owner", "google")
        .set_etag(etag0.clone());
    let patched = service.patch(&name, body.clone(), "labels,etag").unwrap();
    let labels: Vec<(&str, &str)> = patched
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [("owner", "google")],
        "labels are replaced, not merged"
    );
    let etag1 = patched.etag.clone().unwrap();
    assert_ne!(etag1, etag0, "a change gives a new etag");

    let stale = service
        .patch(&name, body.clone(), "labels,etag")
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert!(
        matches!(stale.kind(), ErrorKind::EtagMismatch { .. }),
        "{stale}"
    );
    // Without etag in the mask there is no check.
    let unchecked = service
        .patch(&name, body.set_label("n", "1"), "labels")
        .unwrap();
    assert_ne!(unchecked.etag.unwrap(), etag1);
    // Nothing to change: the etag stays.
    let same = service.get(&name).unwrap();
    let again = service
        .patch(
            &name,
            Job::default().set_etag(same.etag.clone().unwrap()),
            "etag",
        )
        .unwrap();
    assert_eq!(again, same);

    for (mask, message) in [
        ("", "updateMask is required: name labels, etag or both"),
        (
            "labels,state",
            "updateMask path \"state\" is not supported by jobs.patch; supported: labels, etag",
        ),
        ("etag", "updateMask names etag but the job has no etag"),
    ] {
        let err = service.patch(&name, Job::default(), mask).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{mask}");
        assert_eq!(err.to_string(), message);
    }
    let err = service
        .patch(&name, Job::default().set_label("Bad", "x"), "labels")
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        code(service.patch(&project().job("nope").unwrap(), Job::default(), "labels")),
        Code::NotFound
    );
    // Labels of a finished job can still change.
    service.cancel(&name).unwrap();
    service
        .patch(&name, Job::default().set_label("after", "end"), "labels")
        .unwrap();
}

#[test]
fn cancel_by_state() {
    let service = service();
    let name = project().job("j1").unwrap();
    service.create(&project(), job("j1")).unwrap();
    service.cancel(&name).unwrap();
    let cancelled = service.get(&name).unwrap();
    assert_eq!(cancelled.state(), State::Cancelled);
    assert_eq!(
        cancelled.error_message.as_deref(),
        Some("Job cancelled by request")
    );
    let err = service.cancel(&name).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        "job \"projects/my-proj/jobs/j1\" is already CANCELLED; only QUEUED, PREPARING and RUNNING jobs can be cancelled"
    );
    assert_eq!(
        code(service.cancel(&project().job("nope").unwrap())),
        Code::NotFound
    );
}

#[test]
fn iam_policy_round_trip_versions_and_etags() {
    let service = service();
    let name = project().job("j1").unwrap();
    service.create(&project(), job("j1")).unwrap();
    let job_etag = service.get(&name).unwrap().etag;

    let empty = service.get_iam_policy(&name, None).unwrap();
    assert_eq!(empty.to_json().as_object().unwrap().len(), 2, "{:?}", empty);
    assert_eq!(empty.version, 1);
    let etag0 = empty.etag.clone().unwrap();

    let policy = Policy::default()
        .grant("roles/ml.viewer", "user:bob@example.com")
        .grant("roles/ml.viewer", "group:team@example.com");
    let set = service.set_iam_policy(&name, policy.clone(), None).unwrap();
    assert_eq!(set.bindings, policy.bindings);
    assert_eq!(set.version, 1);
    assert_ne!(set.etag, Some(etag0.clone()));
    assert_eq!(
        service.get(&name).unwrap().etag,
        job_etag,
        "the job's etag does not change with its policy"
    );
    assert_eq!(service.get_iam_policy(&name, Some(3)).unwrap(), set);

    // A stale etag is refused; no etag overwrites.
    let mut stale = policy.clone();
    stale.etag = Some(etag0);
    assert_eq!(
        code(service.set_iam_policy(&name, stale, None)),
        Code::Aborted
    );
    service
        .set_iam_policy(&name, Policy::default(), Some("bindings"))
        .unwrap();
    assert!(
        service
            .get_iam_policy(&name, None)
            .unwrap()
            .bindings
            .is_empty()
    );

    // Conditions need version 3, to set and to read.
    let mut conditional = Policy::from_json(
        r#"{"bindings": [{"role": "roles/ml.viewer", "members": ["user:bob@example.com"],
            "condition": {"expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}]}"#,
    )
    .unwrap();
    assert_eq!(
        code(service.set_iam_policy(&name, conditional.clone(), None)),
        Code::InvalidArgument
    );
    conditional.version = 3;
    assert_eq!(
        service
            .set_iam_policy(&name, conditional, None)
            .unwrap()
            .version,
        3
    );
    assert_eq!(
        code(service.get_iam_policy(&name, Some(1))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(service.get_iam_policy(&name, Some(2))),
        Code::InvalidArgument
    );
    assert_eq!(service.get_iam_policy(&name, Some(3)).unwrap().version, 3);

    // Masks.
    assert_eq!(
        code(service.set_iam_policy(&name, Policy::default(), Some("owner"))),
        Code::InvalidArgument
    );
    let missing = project().job("nope").unwrap();
    assert_eq!(code(service.get_iam_policy(&missing, None)), Code::NotFound);
    assert_eq!(
        code(service.set_iam_policy(&missing, Policy::default(), None)),
        Code::NotFound
    );
}

#[test]
fn test_iam_permissions_on_a_missing_job_is_empty_and_wildcards_are_refused() {
    let service = service();
    let missing = project().job("nope").unwrap();
    let asked: Vec<String> = JOB_PERMISSIONS.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        service.test_iam_permissions(&missing, &asked).unwrap(),
        Vec::<String>::new()
    );
    service.create(&project(), job("j1")).unwrap();
    let name = project().job("j1").unwrap();
    assert_eq!(service.test_iam_permissions(&name, &asked).unwrap(), asked);
    assert_eq!(
        code(service.test_iam_permissions(&name, &["ml.*".to_string()])),
        Code::InvalidArgument
    );
}

/// The methods of the matrix, each run once as the caller.
const METHODS: [&str; 8] = [
    "create",
    "get",
    "list",
    "patch",
    "cancel",
    "getIamPolicy",
    "setIamPolicy",
    "testIamPermissions",
];

/// What each predefined role may call, written out from Google's role
/// reference (<https://cloud.google.com/iam/docs/roles-permissions/ml>), not
/// derived from the crate's role table.
fn allowed_methods(role: &str) -> &'static [&'static str] {
    match role {
        "roles/ml.admin" | "roles/ml.jobOwner" | "roles/owner" => &METHODS,
        "roles/ml.editor" | "roles/editor" => &[
            "create",
            "get",
            "list",
            "patch",
            "cancel",
            "getIamPolicy",
            "testIamPermissions",
        ],
        "roles/ml.developer" => &[
            "create",
            "get",
            "list",
            "getIamPolicy",
            "testIamPermissions",
        ],
        "roles/ml.viewer" => &["get", "list", "testIamPermissions"],
        "roles/viewer" => &["get", "list", "getIamPolicy", "testIamPermissions"],
        "roles/ml.operationOwner" | "roles/ml.modelOwner" | "roles/ml.modelUser" => {
            &["testIamPermissions"]
        }
        _ => unreachable!("{role}"),
    }
}

fn permission_of(method: &str) -> Option<&'static str> {
    Some(match method {
        "create" => "ml.jobs.create",
        "get" => "ml.jobs.get",
        "list" => "ml.jobs.list",
        "patch" => "ml.jobs.update",
        "cancel" => "ml.jobs.cancel",
        "getIamPolicy" => "ml.jobs.getIamPolicy",
        "setIamPolicy" => "ml.jobs.setIamPolicy",
        _ => return None,
    })
}

fn call(service: &JobService, caller: &Caller, method: &str, on: &str) -> Result<(), Error> {
    let view = service.caller(caller);
    let name = project().job(on).unwrap();
    match method {
        "create" => view.create(&project(), job("new_job")).map(drop),
        "get" => view.get(&name).map(drop),
        "list" => view.list(&project(), &ListJobsRequest::new()).map(drop),
        "patch" => view
            .patch(&name, Job::default().set_label("x", "y"), "labels")
            .map(drop),
        "cancel" => view.cancel(&name),
        "getIamPolicy" => view.get_iam_policy(&name, None).map(drop),
        "setIamPolicy" => view
            .set_iam_policy(
                &name,
                Policy::default().grant("roles/ml.viewer", "user:carol@example.com"),
                None,
            )
            .map(drop),
        "testIamPermissions" => view
            .test_iam_permissions(&name, &["ml.jobs.get".to_string()])
            .map(drop),
        _ => unreachable!(),
    }
}

#[test]
fn every_method_by_every_predefined_role() {
    let roles = [
        "roles/ml.admin",
        "roles/ml.developer",
        "roles/ml.editor",
        "roles/ml.viewer",
        "roles/ml.jobOwner",
        "roles/ml.operationOwner",
        "roles/ml.modelOwner",
        "roles/ml.modelUser",
        "roles/owner",
        "roles/editor",
        "roles/viewer",
    ];
    let alice = Caller::new("user:alice@example.com").unwrap();
    let everyone: Vec<String> = JOB_PERMISSIONS.iter().map(|p| p.to_string()).collect();
    let mut checked = 0;
    for role in roles {
        for grant_on in ["project", "job"] {
            let service = JobService::builder(InMemoryJobStore::new())
                .with_iam_enforcement(true)
                .build()
                .unwrap();
            service.create(&project(), job("target")).unwrap();
            let name = project().job("target").unwrap();
            let policy = Policy::default().grant(role, "user:alice@example.com");
            if grant_on == "project" {
                service.set_project_policy(&project(), policy).unwrap();
            } else {
                service.set_iam_policy(&name, policy, None).unwrap();
            }
            for method in METHODS {
                // create and list are checked on the project only.
                let project_level = matches!(method, "create" | "list");
                let expected = allowed_methods(role).contains(&method)
                    && (grant_on == "project" || !project_level);
                let result = call(&service, &alice, method, "target");
                match (&result, expected) {
                    (Ok(()), true) => {}
                    (Err(e), false) => {
                        assert_eq!(e.code(), Code::PermissionDenied, "{role} {method}: {e}");
                        let permission = permission_of(method).unwrap();
                        assert!(e.to_string().contains(permission), "{e}");
                    }
                    _ => panic!(
                        "{role} granted on the {grant_on}: {method} gave {result:?}, expected allowed={expected}"
                    ),
                }
                checked += 1;
            }
            // testIamPermissions tells the caller exactly what it holds on the job.
            if grant_on == "project" {
                let held: BTreeSet<String> = service
                    .caller(&alice)
                    .test_iam_permissions(&name, &everyone)
                    .unwrap()
                    .into_iter()
                    .collect();
                let expected: BTreeSet<String> = allowed_methods(role)
                    .iter()
                    .filter_map(|m| permission_of(m))
                    .map(str::to_owned)
                    .collect();
                assert_eq!(held, expected, "{role}");
            }
        }
    }
    assert_eq!(checked, roles.len() * 2 * METHODS.len());
}

#[test]
fn enforcement_details() {
    let service = JobService::builder(InMemoryJobStore::new())
        .with_iam_enforcement(true)
        .build()
        .unwrap();
    let bob = Caller::new("user:bob@example.com")
        .unwrap()
        .with_group("group:ml@example.com")
        .unwrap();
    let missing = project().job("missing").unwrap();
    // Without a permission on the project, a missing job is not revealed.
    assert_eq!(
        code(service.caller(&bob).get(&missing)),
        Code::PermissionDenied
    );
    service
        .set_project_policy(
            &project(),
            Policy::default().grant("roles/ml.viewer", "group:ml@example.com"),
        )
        .unwrap();
    assert_eq!(code(service.caller(&bob).get(&missing)), Code::NotFound);
    // allUsers reaches the anonymous caller; a domain reaches its users.
    service.create(&project(), job("j1")).unwrap();
    let name = project().job("j1").unwrap();
    let anonymous = Caller::anonymous();
    assert_eq!(
        code(service.caller(&anonymous).get(&name)),
        Code::PermissionDenied
    );
    service
        .set_iam_policy(
            &name,
            Policy::default()
                .grant("roles/ml.viewer", "allUsers")
                .grant("roles/ml.jobOwner", "domain:example.com"),
            None,
        )
        .unwrap();
    service.caller(&anonymous).get(&name).unwrap();
    service.caller(&bob).cancel(&name).unwrap();
    // The embedding service itself is never checked.
    service.create(&project(), job("j2")).unwrap();
    // Without enforcement a caller may do anything.
    let open = JobService::new(InMemoryJobStore::new()).unwrap();
    open.caller(&anonymous)
        .create(&project(), job("j1"))
        .unwrap();
}

// ---- the runner ----

/// A store that records every state it is asked to write, in order.
#[derive(Debug, Default)]
struct Recording {
    inner: InMemoryJobStore,
    states: Mutex<Vec<(String, State, Option<i64>)>>,
}

impl Recording {
    fn states_of(&self, id: &str) -> Vec<State> {
        let mut out: Vec<State> = Vec::new();
        for (job, state, _) in self.states.lock().unwrap().iter() {
            if job == id && out.last() != Some(state) {
                out.push(*state);
            }
        }
        out
    }
}

fn entry(record: &JobRecord) -> (String, State, Option<i64>) {
    (
        record.name.job().to_owned(),
        record.job.state(),
        record
            .job
            .prediction_output
            .as_ref()
            .map(|o| o.prediction_count()),
    )
}

impl JobStore for Recording {
    fn get(&self, name: &JobName) -> Result<Option<JobRecord>, Error> {
        self.inner.get(name)
    }
    fn insert(&self, record: JobRecord) -> Result<JobRecord, Error> {
        let stored = self.inner.insert(record)?;
        self.states.lock().unwrap().push(entry(&stored));
        Ok(stored)
    }
    fn update(&self, record: JobRecord) -> Result<JobRecord, Error> {
        let stored = self.inner.update(record)?;
        self.states.lock().unwrap().push(entry(&stored));
        Ok(stored)
    }
    fn scan(
        &self,
        project: Option<&ProjectName>,
        order: ScanOrder,
        after: Option<u64>,
        visit: &mut dyn FnMut(&JobRecord) -> std::ops::ControlFlow<()>,
    ) -> Result<(), Error> {
        self.inner.scan(project, order, after, visit)
    }
}

fn input_storage() -> InMemoryStorage {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/1.jsonl", "{\"x\": 1}\n{\"x\": 2}\nnot json\n");
    storage
}

fn executor_with(storage: &InMemoryStorage, predictor: Arc<dyn Predictor>) -> BatchExecutor {
    BatchExecutor::new(
        Arc::new(storage.clone()),
        Arc::new(
            move |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
                Ok(predictor.clone())
            },
        ),
    )
}

#[test]
fn the_runner_records_every_state_and_the_final_counts() {
    let store = Arc::new(Recording::default());
    let service = JobService::new(store.clone()).unwrap();
    let storage = input_storage();
    let executor = BatchExecutor::new(Arc::new(storage.clone()), Arc::new(EchoResolver));
    assert_eq!(service.run_next(&executor).unwrap(), None, "nothing queued");
    service.create(&project(), job("j1")).unwrap();
    let done = service.run_next(&executor).unwrap().unwrap();
    assert_eq!(done.state(), State::Succeeded);
    let output = done.prediction_output.as_ref().unwrap();
    assert_eq!((output.prediction_count(), output.error_count()), (2, 1));
    assert_eq!(done, service.get(&project().job("j1").unwrap()).unwrap());
    assert_eq!(
        store.states_of("j1"),
        [
            State::Queued,
            State::Preparing,
            State::Running,
            State::Succeeded
        ]
    );
    assert!(done.start_time.is_some() && done.end_time.is_some());
    assert_eq!(
        storage
            .read_bytes("gs://b/out/j1/prediction.results-00000-of-00001")
            .unwrap(),
        b"{\"x\":1}\n{\"x\":2}\n"
    );
    assert_eq!(service.run_next(&executor).unwrap(), None);
}

#[test]
fn counts_of_committed_shards_are_recorded_while_running() {
    let store = Arc::new(Recording::default());
    let service = JobService::builder(store.clone())
        .with_progress_interval(Duration::ZERO)
        .build()
        .unwrap();
    let storage = InMemoryStorage::new();
    for i in 0..3 {
        storage.put(&format!("gs://b/in/{i}.jsonl"), "{\"x\": 1}\n{\"x\": 2}\n");
    }
    let executor = BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver)).with_config(
        batch_prediction::ExecutorConfig::default()
            .with_shard_target_bytes(1)
            .with_max_threads(1),
    );
    service.create(&project(), job("j1")).unwrap();
    let done = service.run_next(&executor).unwrap().unwrap();
    assert_eq!(done.prediction_output.unwrap().prediction_count(), 6);
    let running: Vec<i64> = store
        .states
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, state, _)| *state == State::Running)
        .filter_map(|(_, _, count)| *count)
        .collect();
    assert!(
        running.windows(2).all(|w| w[0] <= w[1]),
        "never decreasing: {running:?}"
    );
    assert!(
        running.iter().all(|c| [0, 2, 4, 6].contains(c)),
        "whole shards only: {running:?}"
    );
    assert!(running.iter().any(|&c| c > 0), "{running:?}");
}

#[test]
fn a_model_that_fails_to_load_fails_the_job() {
    let service = service();
    let storage = input_storage();
    let executor = BatchExecutor::new(
        Arc::new(storage),
        Arc::new(
            |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
                Err(PredictError::new("no such model file"))
            },
        ),
    );
    service.create(&project(), job("j1")).unwrap();
    let done = service.run_until_idle(&executor).unwrap();
    assert_eq!(done, 1);
    let job = service.get(&project().job("j1").unwrap()).unwrap();
    assert_eq!(job.state(), State::Failed);
    assert!(
        job.error_message
            .as_deref()
            .unwrap()
            .contains("no such model file"),
        "{job:?}"
    );
}

#[test]
fn cancel_from_another_thread_reaches_the_running_executor() {
    let service = service();
    let storage = input_storage();
    // Blocks until the job is cancelled (or a generous safety limit passes,
    // which counts as a miss). The cancel may also stop the run before its
    // first batch, and then the predictor is never called.
    let missed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = missed.clone();
    let predictor = Arc::new(predictor_fn(move |batch, ctx| {
        let start = Instant::now();
        while !ctx.is_cancelled() && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !ctx.is_cancelled() {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(batch.into_iter().map(|i| i.into_json()).collect())
    }));
    let executor = executor_with(&storage, predictor);
    service.create(&project(), job("j1")).unwrap();
    let name = project().job("j1").unwrap();
    let finished = std::thread::scope(|s| {
        let runner = s.spawn(|| service.run_next(&executor));
        let start = Instant::now();
        while service.get(&name).unwrap().state() != State::Running {
            assert!(start.elapsed() < Duration::from_secs(120), "never ran");
            std::thread::sleep(Duration::from_millis(2));
        }
        service.cancel(&name).unwrap();
        assert_eq!(service.get(&name).unwrap().state(), State::Cancelling);
        runner.join().unwrap()
    });
    let finished = finished.unwrap().unwrap();
    assert!(
        !missed.load(std::sync::atomic::Ordering::SeqCst),
        "the cancel reached the run"
    );
    assert_eq!(finished.state(), State::Cancelled);
    assert_eq!(service.get(&name).unwrap(), finished);
    // The one shard may have been committed before the cancel was seen:
    // the counts match whatever is on disk.
    let output = finished.prediction_output.unwrap();
    let committed = storage
        .read_bytes("gs://b/out/j1/prediction.results-00000-of-00001")
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as i64)
        .unwrap_or(0);
    assert_eq!(output.prediction_count(), committed);
}

#[test]
fn cancels_reach_runs_whichever_runner_took_them() {
    let service = service();
    let storage = input_storage();
    // Counts predictions that waited for a cancel that never came. (A
    // cancel may also stop a run before its first batch.)
    let missed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let blocking: Arc<dyn Predictor> = {
        let missed = missed.clone();
        Arc::new(predictor_fn(move |batch, ctx| {
            let start = Instant::now();
            while !ctx.is_cancelled() && start.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !ctx.is_cancelled() {
                missed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(batch.into_iter().map(|i| i.into_json()).collect())
        }))
    };
    // Jobs named cancel_* block until cancelled; the others echo.
    let executor = BatchExecutor::new(
        Arc::new(storage),
        Arc::new(
            move |_: &ModelVersion, job: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
                if job.job_id.as_deref().unwrap_or("").starts_with("cancel_") {
                    Ok(blocking.clone())
                } else {
                    Ok(Arc::new(batch_prediction::EchoPredictor))
                }
            },
        ),
    );
    let cancelled: Vec<String> = (0..4).map(|i| format!("cancel_{i}")).collect();
    for (i, id) in cancelled.iter().enumerate() {
        service
            .create(&project(), job(&format!("echo_{i}")))
            .unwrap();
        service.create(&project(), job(id)).unwrap();
    }
    std::thread::scope(|s| {
        let runners: Vec<_> = (0..3)
            .map(|_| s.spawn(|| service.run_until_idle(&executor).unwrap()))
            .collect();
        for id in &cancelled {
            let name = project().job(id).unwrap();
            let start = Instant::now();
            while service.get(&name).unwrap().state() == State::Queued {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{id} never started"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            service.cancel(&name).unwrap();
        }
        // A job cancelled between its claim and its run's start is
        // cancelled outright and not run: 4 echo jobs and up to 4 others ran.
        let ran: usize = runners.into_iter().map(|r| r.join().unwrap()).sum();
        assert!((4..=8).contains(&ran), "{ran}");
    });
    for id in &cancelled {
        let job = service.get(&project().job(id).unwrap()).unwrap();
        assert_eq!(job.state(), State::Cancelled, "{id}");
    }
    for i in 0..4 {
        let job = service
            .get(&project().job(&format!("echo_{i}")).unwrap())
            .unwrap();
        assert_eq!(job.state(), State::Succeeded, "echo_{i}");
    }
    assert_eq!(
        missed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "every cancel reached its run"
    );
}

#[test]
fn a_run_that_no_runner_holds_is_cancelled_outright() {
    let store = Arc::new(InMemoryJobStore::new());
    let service = JobService::new(store.clone()).unwrap();
    // A job left RUNNING (as when a run's last write failed).
    let mut left = job("orphan");
    left.state = Some(State::Running);
    let name = project().job("orphan").unwrap();
    store.insert(JobRecord::new(name.clone(), left)).unwrap();
    service.cancel(&name).unwrap();
    assert_eq!(service.get(&name).unwrap().state(), State::Cancelled);
}

#[test]
fn a_waiting_runner_wakes_for_a_new_job() {
    let service = service();
    let storage = input_storage();
    let executor = BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver));
    let woken = std::thread::scope(|s| {
        // One wait of an hour, which only the creation of a job can end in
        // time: a lost wake-up fails the bound below (three thousand times
        // what the wake-up takes), rather than passing by the timeout.
        let waiter = s.spawn(|| {
            service
                .run_next_or_wait(&executor, Duration::from_secs(3600))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(20));
        service.create(&project(), job("j1")).unwrap();
        let start = Instant::now();
        while !waiter.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the create did not wake the runner"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        waiter.join().unwrap()
    });
    // Woken, it returns to its caller's loop; had the job come first, it ran it.
    let ran = match woken {
        Some(job) => job,
        None => service.run_next(&executor).unwrap().unwrap(),
    };
    assert_eq!(ran.state(), State::Succeeded);
    assert!(service.running_jobs().is_empty());
}

#[test]
fn runners_on_several_threads_run_each_job_once() {
    let service = service();
    let storage = input_storage();
    let executor = BatchExecutor::new(Arc::new(storage), Arc::new(EchoResolver));
    for i in 0..6 {
        service.create(&project(), job(&format!("j{i}"))).unwrap();
    }
    let ran: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| service.run_until_idle(&executor).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ran, 6);
    let page = service.list(&project(), &ListJobsRequest::new()).unwrap();
    assert!(page.jobs.iter().all(|j| j.state() == State::Succeeded));
    assert!(
        page.jobs
            .iter()
            .all(|j| j.prediction_output.as_ref().unwrap().prediction_count() == 2)
    );
}

#[test]
fn services_and_stores_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<JobService>();
    check::<InMemoryJobStore>();
    check::<batch_prediction::LocalJobStore>();
    check::<BatchExecutor>();
    check::<Policy>();
}

#[test]
fn policy_json_matches_the_discovery_shape() {
    let p = Policy::default()
        .grant("roles/ml.viewer", "user:a@example.com")
        .grant("roles/ml.viewer", "user:b@example.com");
    assert_eq!(
        p.to_json(),
        json!({"bindings": [{"role": "roles/ml.viewer", "members": ["user:a@example.com", "user:b@example.com"]}]})
    );
    assert_eq!(
        Policy::from_value(p.to_json()).unwrap().bindings,
        [Binding::new(
            "roles/ml.viewer",
            ["user:a@example.com", "user:b@example.com"]
        )]
    );
}

#[test]
fn list_filters_are_bounded_and_refused_beyond_with_why() {
    let service = service();
    service.create(&project(), job("j1")).unwrap();
    let list =
        |filter: String| service.list(&project(), &ListJobsRequest::new().set_filter(filter));
    // Within the bounds: 2,048 characters, 64 comparisons, 16 wildcards.
    let terms = vec!["labels.team:m*"; 16].join(" OR ");
    let padded = format!("{terms}{}", " ".repeat(2048 - terms.len()));
    assert_eq!(list(padded).unwrap().jobs.len(), 1);
    let many = vec!["jobId!=x"; 64].join(" AND ");
    assert_eq!(list(many).unwrap().jobs.len(), 1);
    for (filter, why) in [
        (
            format!("jobId=j1{}", " ".repeat(60_000)),
            "the filter is 60008 characters long; at most 2048 at position 2048",
        ),
        (
            vec!["jobId!=x"; 65].join(" AND "),
            "the filter has 65 comparisons; at most 64 at position 0",
        ),
        (
            "jobId:*j*1*".to_owned() + &" OR labels.team:*m*l*".repeat(5),
            "the filter has 18 wildcards (*); at most 16 at position 0",
        ),
    ] {
        let err = list(filter.clone()).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{filter}");
        assert!(err.to_string().ends_with(why), "{err}");
    }
}

#[test]
fn a_list_page_of_large_jobs_is_bounded_in_bytes() {
    let service = service();
    // Ten jobs of about 600 KB each: 150 input paths of 4,000 bytes.
    for i in 0..10 {
        let mut request = job_json(&format!("big{i}"));
        request["predictionInput"]["inputPaths"] = (0..150)
            .map(|k| json!(format!("gs://b/in/{k}/{}", "x".repeat(4000))))
            .collect();
        service
            .create(&project(), Job::from_value(request).unwrap())
            .unwrap();
    }
    let mut request = ListJobsRequest::new().set_page_size(100);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = service.list(&project(), &request).unwrap();
        pages += 1;
        assert!(!page.jobs.is_empty(), "a page holds at least one job");
        let bytes: usize = page
            .jobs
            .iter()
            .map(|j| serde_json::to_vec(&j.to_json()).unwrap().len())
            .sum();
        let largest = page
            .jobs
            .iter()
            .map(|j| serde_json::to_vec(&j.to_json()).unwrap().len())
            .max()
            .unwrap();
        assert!(
            bytes < batch_prediction::service::MAX_PAGE_BYTES + largest,
            "page {pages}: {bytes} bytes"
        );
        seen.extend(page.jobs.iter().map(|j| j.job_id.clone().unwrap()));
        match page.next_page_token {
            Some(token) => request = request.set_page_token(token),
            None => break,
        }
    }
    assert!(
        pages >= 5,
        "1 MiB a page: 6 MB of jobs take at least five pages"
    );
    let expected: Vec<String> = (0..10).rev().map(|i| format!("big{i}")).collect();
    assert_eq!(seen, expected, "every job once, in order");
}

#[test]
fn a_filtered_list_over_many_jobs_pages_through_all_of_them() {
    // More jobs than one slice of the store's scan (256), one in three
    // matching: every page is whole, and every match comes once, in order.
    let service = service();
    for i in 0..700 {
        let mut request = job_json(&format!("j{i:03}"));
        request["labels"] = json!({"third": if i % 3 == 0 { "yes" } else { "no" }});
        service
            .create(&project(), Job::from_value(request).unwrap())
            .unwrap();
    }
    let mut request = ListJobsRequest::new()
        .set_page_size(100)
        .set_filter("labels.third=yes");
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = service.list(&project(), &request).unwrap();
        sizes.push(page.jobs.len());
        seen.extend(page.jobs.iter().map(|j| j.job_id.clone().unwrap()));
        match page.next_page_token {
            Some(token) => request = request.set_page_token(token),
            None => break,
        }
    }
    let expected: Vec<String> = (0..700)
        .rev()
        .filter(|i| i % 3 == 0)
        .map(|i| format!("j{i:03}"))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(sizes, [100, 100, 34]);
}
