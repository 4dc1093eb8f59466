//! The REST layer: routes from the discovery document, parameters, error
//! bodies and statuses, callers from bearer tokens, and concurrent clients.

use std::sync::Arc;

use batch_prediction::iam::{Caller, Policy};
use batch_prediction::rest::{RestRequest, RestResponse};
use batch_prediction::{InMemoryJobStore, JobService, RestApi};
use serde_json::{Value, json};

fn api() -> RestApi {
    RestApi::new(Arc::new(JobService::new(InMemoryJobStore::new()).unwrap()))
}

fn job_body(id: &str) -> Vec<u8> {
    json!({
        "jobId": id,
        "labels": {"team": "ml"},
        "predictionInput": {
            "dataFormat": "JSON", "inputPaths": ["gs://b/in/*"], "outputPath": "gs://b/out",
            "region": "us-central1", "uri": "gs://b/model"}
    })
    .to_string()
    .into_bytes()
}

fn call(api: &RestApi, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let response = api.handle(&RestRequest::new(method, target).with_body(body.to_vec()));
    let json = response.json().unwrap_or_else(|e| {
        panic!(
            "{method} {target}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    });
    (response.status, json)
}

fn error_of(status: u16, body: &Value) -> (u16, &str) {
    assert_eq!(body["error"]["code"], status, "{body}");
    (status, body["error"]["status"].as_str().unwrap())
}

#[test]
fn every_discovery_route_reaches_its_method() {
    let text = std::fs::read_to_string(crate::data_path("ml.v1.discovery.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let methods = doc["resources"]["projects"]["resources"]["jobs"]["methods"]
        .as_object()
        .unwrap();
    assert_eq!(methods.len(), 8);
    let api = api();
    let (status, _) = call(&api, "POST", "/v1/projects/my-proj/jobs", &job_body("j1"));
    assert_eq!(status, 200);
    for (name, method) in methods {
        let path = method["flatPath"]
            .as_str()
            .unwrap()
            .replace("{projectsId}", "my-proj")
            .replace("{jobsId}", "j1");
        let http = method["httpMethod"].as_str().unwrap();
        let body: &[u8] = match name.as_str() {
            "create" => &job_body("j2"),
            "patch" => br#"{"labels": {"a": "b"}}"#,
            "setIamPolicy" => br#"{"policy": {}}"#,
            "testIamPermissions" => br#"{"permissions": ["ml.jobs.get"]}"#,
            _ => b"",
        };
        let query = if name == "patch" {
            "?updateMask=labels"
        } else {
            ""
        };
        let (status, response) = call(&api, http, &format!("/{path}{query}"), body);
        assert_eq!(status, 200, "{name}: {http} /{path}: {response}");
        // Every other HTTP method on that path is refused, never served.
        for other in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            if other == http
                || (path.ends_with("/jobs") && ["GET", "POST"].contains(&other))
                || (path.ends_with("/j1") && ["GET", "PATCH"].contains(&other))
            {
                continue;
            }
            let response = api.handle(&RestRequest::new(other, &format!("/{path}")));
            assert_eq!(response.status, 404, "{other} /{path}");
            assert!(
                response.json().unwrap()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Method not found"),
                "{other} /{path}"
            );
            assert!(
                response
                    .headers
                    .iter()
                    .any(|(k, v)| k == "Allow" && v.contains(http)),
                "{:?}",
                response.headers
            );
        }
    }
}

#[test]
fn methods_answer_with_the_apis_json() {
    let api = api();
    let (_, created) = call(&api, "POST", "/v1/projects/my-proj/jobs", &job_body("j1"));
    assert_eq!(created["state"], "QUEUED");
    // Percent-encoded names are decoded.
    let (status, got) = call(&api, "GET", "/v1/projects/my%2Dproj/jobs/j%31", b"");
    assert_eq!((status, &got), (200, &created));
    // Patch with a stale etag: 409 ABORTED.
    let stale = json!({"labels": {"x": "1"}, "etag": "AAAAAAAAAAA="}).to_string();
    let (status, body) = call(
        &api,
        "PATCH",
        "/v1/projects/my-proj/jobs/j1?updateMask=labels,etag",
        stale.as_bytes(),
    );
    assert_eq!(error_of(status, &body), (409, "ABORTED"));
    // Duplicate create: 409 ALREADY_EXISTS; missing job: 404.
    let (status, body) = call(&api, "POST", "/v1/projects/my-proj/jobs", &job_body("j1"));
    assert_eq!(error_of(status, &body), (409, "ALREADY_EXISTS"));
    let (status, body) = call(&api, "GET", "/v1/projects/my-proj/jobs/nope", b"");
    assert_eq!(error_of(status, &body), (404, "NOT_FOUND"));
    // List with a filter, paged, and the empty result `{}`.
    call(&api, "POST", "/v1/projects/my-proj/jobs", &job_body("j2"));
    let (_, page) = call(
        &api,
        "GET",
        "/v1/projects/my-proj/jobs?pageSize=1&filter=labels.team%3Dml+AND+state%3DQUEUED",
        b"",
    );
    assert_eq!(page["jobs"][0]["jobId"], "j2");
    let token = page["nextPageToken"].as_str().unwrap();
    let (_, next) = call(
        &api,
        "GET",
        &format!(
            "/v1/projects/my-proj/jobs?pageSize=1&filter=labels.team%3Dml+AND+state%3DQUEUED&pageToken={token}"
        ),
        b"",
    );
    assert_eq!(next["jobs"][0]["jobId"], "j1");
    assert_eq!(next.get("nextPageToken"), None);
    let (status, empty) = call(
        &api,
        "GET",
        "/v1/projects/my-proj/jobs?filter=state=FAILED",
        b"",
    );
    assert_eq!((status, empty), (200, json!({})));
    // Cancel answers `{}`; a second cancel is 400 FAILED_PRECONDITION.
    let (status, body) = call(&api, "POST", "/v1/projects/my-proj/jobs/j1:cancel", b"{}");
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = call(&api, "POST", "/v1/projects/my-proj/jobs/j1:cancel", b"");
    assert_eq!(error_of(status, &body), (400, "FAILED_PRECONDITION"));
    // IAM.
    let (_, policy) = call(
        &api,
        "GET",
        "/v1/projects/my-proj/jobs/j1:getIamPolicy?options.requestedPolicyVersion=3",
        b"",
    );
    assert_eq!(policy["version"], 1);
    let set = json!({"policy": {"bindings": [{"role": "roles/ml.viewer", "members": ["user:b@example.com"]}],
                                "etag": policy["etag"]}});
    let (status, updated) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/j1:setIamPolicy",
        set.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["bindings"][0]["members"][0], "user:b@example.com");
    let (status, body) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/j1:setIamPolicy",
        set.to_string().as_bytes(),
    );
    assert_eq!(
        error_of(status, &body),
        (409, "ABORTED"),
        "the etag is stale now"
    );
    let (_, held) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/j1:testIamPermissions",
        br#"{"permissions": ["ml.jobs.get", "ml.models.get"]}"#,
    );
    assert_eq!(held, json!({"permissions": ["ml.jobs.get"]}));
    let (_, none) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/nope:testIamPermissions",
        br#"{"permissions": ["ml.jobs.get"]}"#,
    );
    assert_eq!(none, json!({}), "a missing job holds nothing");
}

#[test]
fn standard_parameters() {
    let api = api();
    call(&api, "POST", "/v1/projects/my-proj/jobs", &job_body("j1"));
    let pretty = api.handle(&RestRequest::new("GET", "/v1/projects/my-proj/jobs/j1"));
    let compact = api.handle(&RestRequest::new(
        "GET",
        "/v1/projects/my-proj/jobs/j1?prettyPrint=false&alt=json&key=k&quotaUser=q&%24.xgafv=2",
    ));
    assert_eq!(pretty.json().unwrap(), compact.json().unwrap());
    assert!(
        String::from_utf8(pretty.body)
            .unwrap()
            .contains("\n  \"jobId\"")
    );
    assert!(!String::from_utf8(compact.body).unwrap().contains('\n'));
    let (_, partial) = call(
        &api,
        "GET",
        "/v1/projects/my-proj/jobs?fields=jobs(jobId,state)",
        b"",
    );
    assert_eq!(
        partial,
        json!({"jobs": [{"jobId": "j1", "state": "QUEUED"}]})
    );
    for (target, field) in [
        ("/v1/projects/my-proj/jobs/j1?pageSize=3", "pageSize"),
        ("/v1/projects/my-proj/jobs?color=red", "color"),
        ("/v1/projects/my-proj/jobs?alt=proto", "alt"),
        ("/v1/projects/my-proj/jobs?pageSize=ten", "pageSize"),
        ("/v1/projects/my-proj/jobs?fields=jobs(", "fields"),
    ] {
        let (status, body) = call(&api, "GET", target, b"");
        assert_eq!(
            error_of(status, &body),
            (400, "INVALID_ARGUMENT"),
            "{target}"
        );
        assert_eq!(
            body["error"]["details"][0]["fieldViolations"][0]["field"], field,
            "{target}: {body}"
        );
    }
}

#[test]
fn bad_requests_get_their_proper_errors() {
    let api = api().with_max_body_bytes(1000);
    let table: [(&str, &str, Vec<u8>, u16, &str); 9] = [
        (
            "GET",
            "/v1/projects/my-proj/locations",
            vec![],
            404,
            "NOT_FOUND",
        ),
        ("GET", "/v2/projects/my-proj/jobs", vec![], 404, "NOT_FOUND"),
        (
            "GET",
            "/v1/projects/my-proj/jobs/j1:explode",
            vec![],
            404,
            "NOT_FOUND",
        ),
        (
            "GET",
            "/v1/projects/My_Proj/jobs",
            vec![],
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "GET",
            "/v1/projects/my-proj/jobs/bad-id",
            vec![],
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "GET",
            "/v1/projects/my-proj/jobs/j%zz",
            vec![],
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/projects/my-proj/jobs",
            b"{not json".to_vec(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/projects/my-proj/jobs",
            vec![b' '; 1001],
            413,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/projects/my-proj/jobs/j1:setIamPolicy",
            br#"{"policy": {}, "extra": 1}"#.to_vec(),
            400,
            "INVALID_ARGUMENT",
        ),
    ];
    for (method, target, body, status, code) in table {
        let (got, response) = call(&api, method, target, &body);
        assert_eq!(
            error_of(got, &response),
            (status, code),
            "{method} {target}: {response}"
        );
        assert!(response["error"]["message"].as_str().unwrap().len() > 10);
    }
    let (status, body) = call(&api, "PUT", "/v1/projects/my-proj/jobs", b"");
    assert_eq!(error_of(status, &body), (404, "NOT_FOUND"));
    // An encoded colon is part of the name, not a verb; a trailing slash is no route.
    let (status, body) = call(&api, "POST", "/v1/projects/my-proj/jobs/j1%3Acancel", b"");
    assert_eq!(error_of(status, &body), (400, "INVALID_ARGUMENT"), "{body}");
    let (status, body) = call(&api, "GET", "/v1/projects/my-proj/jobs/", b"");
    assert_eq!(error_of(status, &body), (404, "NOT_FOUND"));
    let (status, body) = call(&api, "GET", "/v1/projects/my-proj/jobs:cancel", b"");
    assert_eq!(error_of(status, &body), (404, "NOT_FOUND"));
    // A fields path too deep for any message is refused, not followed.
    let deep = vec!["a"; 5000].join("/");
    let (status, body) = call(
        &api,
        "GET",
        &format!("/v1/projects/my-proj/jobs?fields={deep}"),
        b"",
    );
    assert_eq!(error_of(status, &body), (400, "INVALID_ARGUMENT"));
}

#[test]
fn bodies_are_read_as_proto3_json() {
    let api = api();
    // Proto names are JSON names too.
    let snake = json!({
        "job_id": "snake",
        "prediction_input": {
            "data_format": "JSON", "input_paths": ["gs://b/in/*"], "output_path": "gs://b/out",
            "region": "us-central1", "uri": "gs://b/model", "batch_size": "8"},
        "labels": {"my_label": "x"}
    });
    let (status, created) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs",
        snake.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["predictionInput"]["batchSize"], "8");
    assert_eq!(
        created["labels"],
        json!({"my_label": "x"}),
        "map keys are data, kept as sent"
    );
    // Unknown names are refused as Google refuses them.
    let mut bogus: Value = serde_json::from_slice(&job_body("bogus")).unwrap();
    bogus["predictionInput"]["inputPath"] = json!("gs://b/x");
    let (status, body) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs",
        bogus.to_string().as_bytes(),
    );
    assert_eq!(error_of(status, &body), (400, "INVALID_ARGUMENT"));
    assert_eq!(
        body["error"]["message"],
        "Invalid JSON payload received. Unknown name \"inputPath\" at 'predictionInput': Cannot find field."
    );
    let (status, body) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/snake:setIamPolicy",
        br#"{"policy": {"bindings": [{"role": "roles/ml.viewer", "members": ["allUsers"], "conditon": {}}]}}"#,
    );
    assert_eq!(error_of(status, &body), (400, "INVALID_ARGUMENT"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"conditon\" at 'policy.bindings[0]'"),
        "{body}"
    );
    // Proto names of query parameters; a null body is an empty message.
    let (status, page) = call(&api, "GET", "/v1/projects/my-proj/jobs?page_size=1", b"");
    assert_eq!(
        (status, page["jobs"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, body) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/snake:cancel",
        b"null",
    );
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = call(
        &api,
        "PATCH",
        "/v1/projects/my-proj/jobs/snake?update_mask=labels",
        br#"{"labels": {"a": "b"}}"#,
    );
    assert_eq!((status, body["labels"].clone()), (200, json!({"a": "b"})));
}

#[test]
fn callers_come_from_bearer_tokens() {
    let service = Arc::new(
        JobService::builder(InMemoryJobStore::new())
            .with_iam_enforcement(true)
            .build()
            .unwrap(),
    );
    let project = "projects/my-proj".parse().unwrap();
    service
        .set_project_policy(
            &project,
            Policy::default()
                .grant("roles/ml.developer", "user:dev@example.com")
                .grant("roles/ml.viewer", "allUsers"),
        )
        .unwrap();
    let api = RestApi::new(service.clone());
    let as_user = |who: Option<&str>, method: &str, target: &str, body: Vec<u8>| -> RestResponse {
        let mut request = RestRequest::new(method, target).with_body(body);
        if let Some(who) = who {
            request = request.with_header("authorization", format!("Bearer {who}"));
        }
        api.handle(&request)
    };
    let created = as_user(
        Some("user:dev@example.com"),
        "POST",
        "/v1/projects/my-proj/jobs",
        job_body("j1"),
    );
    assert_eq!(created.status, 200);
    let denied = as_user(
        Some("user:dev@example.com"),
        "POST",
        "/v1/projects/my-proj/jobs/j1:cancel",
        vec![],
    );
    assert_eq!(denied.status, 403, "ml.developer cannot cancel");
    assert_eq!(
        denied.json().unwrap()["error"]["status"],
        "PERMISSION_DENIED"
    );
    let anonymous = as_user(None, "GET", "/v1/projects/my-proj/jobs/j1", vec![]);
    assert_eq!(anonymous.status, 200, "allUsers may view");
    let anonymous_create = as_user(None, "POST", "/v1/projects/my-proj/jobs", job_body("j2"));
    assert_eq!(anonymous_create.status, 403);
    let oauth = as_user(
        Some("ya29.a0AfH6SM"),
        "GET",
        "/v1/projects/my-proj/jobs/j1",
        vec![],
    );
    assert_eq!(oauth.status, 401);
    assert_eq!(oauth.json().unwrap()["error"]["status"], "UNAUTHENTICATED");
    // A custom authenticator replaces bearer principals.
    let custom = RestApi::new(service).with_authenticator(|request| {
        Ok(Some(Caller::new(
            request
                .header("x-user")
                .unwrap_or("user:nobody@example.com"),
        )?))
    });
    let ok = custom.handle(
        &RestRequest::new("GET", "/v1/projects/my-proj/jobs/j1")
            .with_header("X-User", "user:dev@example.com"),
    );
    assert_eq!(ok.status, 200);
}

/// Many threads create, patch (etag read-modify-write) and list at once
/// through the REST layer: every increment lands, every refusal is a 409.
#[test]
fn concurrent_clients_lose_no_update() {
    let api = api();
    call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs",
        &job_body("counter"),
    );
    let threads = 6;
    let rounds = 40;
    std::thread::scope(|s| {
        for t in 0..threads {
            let api = &api;
            s.spawn(move || {
                for i in 0..rounds {
                    let (status, _) = call(
                        api,
                        "POST",
                        "/v1/projects/my-proj/jobs",
                        &job_body(&format!("t{t}_{i}")),
                    );
                    assert_eq!(status, 200);
                    loop {
                        let (_, job) = call(api, "GET", "/v1/projects/my-proj/jobs/counter", b"");
                        let n: u64 = job["labels"]["n"].as_str().unwrap_or("0").parse().unwrap();
                        let body =
                            json!({"labels": {"n": (n + 1).to_string()}, "etag": job["etag"]});
                        let (status, response) = call(
                            api,
                            "PATCH",
                            "/v1/projects/my-proj/jobs/counter?updateMask=labels,etag",
                            body.to_string().as_bytes(),
                        );
                        match status {
                            200 => break,
                            409 => assert_eq!(response["error"]["status"], "ABORTED"),
                            other => panic!("{other}: {response}"),
                        }
                    }
                    let (status, _) =
                        call(api, "GET", "/v1/projects/my-proj/jobs?pageSize=100", b"");
                    assert_eq!(status, 200);
                }
            });
        }
    });
    let (_, counter) = call(&api, "GET", "/v1/projects/my-proj/jobs/counter", b"");
    assert_eq!(counter["labels"]["n"], (threads * rounds).to_string());
    let mut listed = 0;
    let mut token = String::new();
    loop {
        let (_, page) = call(
            &api,
            "GET",
            &format!("/v1/projects/my-proj/jobs?pageSize=100&pageToken={token}"),
            b"",
        );
        listed += page["jobs"].as_array().map_or(0, Vec::len);
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(listed, threads * rounds + 1);
}

#[test]
fn a_project_number_beyond_int64_is_a_bad_request_on_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = batch_prediction::LocalJobStore::open(dir.path()).unwrap();
    let api = RestApi::new(Arc::new(JobService::new(store).unwrap()));
    let project = "7".repeat(300);
    for (method, target, body) in [
        (
            "POST",
            format!("/v1/projects/{project}/jobs"),
            job_body("j"),
        ),
        ("GET", format!("/v1/projects/{project}/jobs"), Vec::new()),
    ] {
        let (status, body) = call(&api, method, &target, &body);
        assert_eq!(
            error_of(status, &body),
            (400, "INVALID_ARGUMENT"),
            "{method}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("does not fit in an int64"), "{message}");
        assert!(
            !message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }
}

#[test]
fn an_internal_error_names_no_local_file_to_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = batch_prediction::LocalJobStore::open(dir.path()).unwrap();
    let api = RestApi::new(Arc::new(JobService::new(store).unwrap()));
    // A file where the project's directory would go: the store cannot
    // write the job, an internal error whose message names that path.
    std::fs::write(dir.path().join("jobs/my-proj"), b"in the way").unwrap();
    let response =
        api.handle(&RestRequest::new("POST", "/v1/projects/my-proj/jobs").with_body(job_body("j")));
    assert_eq!(response.status, 500);
    let body = response.json().unwrap();
    assert_eq!(
        body["error"],
        json!({"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"})
    );
    let text = String::from_utf8(response.body.clone()).unwrap();
    assert!(!text.contains(&dir.path().display().to_string()), "{text}");
    // The server's log gets the whole story.
    let detail = response
        .detail
        .expect("a 500 keeps its message for the log");
    assert!(
        detail.contains(&dir.path().join("jobs/my-proj").display().to_string()),
        "{detail}"
    );
    // Other errors are shown as they are, with nothing withheld.
    let response = api.handle(&RestRequest::new("GET", "/v1/projects/my-proj/jobs/none"));
    assert_eq!(response.status, 404);
    assert_eq!(response.detail, None);
}

#[test]
fn a_key_given_twice_in_a_body_is_refused_at_any_depth() {
    let api = api();
    for (body, key) in [
        (r#"{"jobId": "a", "jobId": "b"}"#.to_owned(), "jobId"),
        (
            r#"{"jobId": "a", "labels": {"team": "ml", "team": "ops"}}"#.to_owned(),
            "team",
        ),
        (
            r#"{"jobId": "a", "predictionInput": {"region": "x", "region": "y"}}"#.to_owned(),
            "region",
        ),
        (
            r#"{"jobId": "a", "predictionInput": {"inputPaths": [{"a": 1, "a": 1}]}}"#.to_owned(),
            "a",
        ),
    ] {
        let (status, error) = call(&api, "POST", "/v1/projects/my-proj/jobs", body.as_bytes());
        assert_eq!(
            error_of(status, &error),
            (400, "INVALID_ARGUMENT"),
            "{body}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "Invalid JSON payload received. Field {key:?} is given twice at line 1 column"
            )),
            "{body}: {message}"
        );
    }
    // setIamPolicy's body too.
    let (status, _) = call(&api, "POST", "/v1/projects/my-proj/jobs", &job_body("j"));
    assert_eq!(status, 200);
    let (status, error) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs/j:setIamPolicy",
        br#"{"policy": {}, "policy": {}}"#,
    );
    assert_eq!(error_of(status, &error), (400, "INVALID_ARGUMENT"));
    // The same key in different objects is fine.
    let (status, body) = call(
        &api,
        "POST",
        "/v1/projects/my-proj/jobs",
        br#"{"jobId": "k", "labels": {"region": "x"}, "predictionInput": {"dataFormat": "JSON", "inputPaths": ["gs://b/in"], "outputPath": "gs://b/out", "region": "r", "uri": "gs://b/m"}}"#,
    );
    assert_eq!(status, 200, "{body}");
}
