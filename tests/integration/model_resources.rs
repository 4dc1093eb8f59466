//! `projects.models`, `projects.models.versions` and `projects.operations`
//! on the job service: their semantics on both stores (the durable one
//! across a reopen), IAM, the REST routes, jobs that name a model or a
//! version (refused when it does not exist; run on the version's
//! `deploymentUri`).

use std::sync::{Arc, Mutex};

use batch_prediction::iam::{Caller, Policy};
use batch_prediction::model::{Model, Version};
use batch_prediction::predict::ModelResolver;
use batch_prediction::service::ModelsResolver;
use batch_prediction::{
    BatchExecutor, Code, EchoPredictor, Error, InMemoryJobStore, InMemoryStorage, Job, JobService,
    JobStore, LocalJobStore, ModelName, ModelVersion, PredictError, Predictor, ProjectName, State,
    VersionName,
};
use serde_json::{Value, json};

fn project() -> ProjectName {
    "projects/my-proj".parse().unwrap()
}

fn model_name(id: &str) -> ModelName {
    project().model(id).unwrap()
}

fn version_name(model: &str, version: &str) -> VersionName {
    model_name(model).version(version).unwrap()
}

fn version(id: &str, uri: &str) -> Version {
    Version::from_json(json!({
        "name": id, "deploymentUri": uri, "framework": "TENSORFLOW",
        "runtimeVersion": "2.11", "pythonVersion": "3.7", "machineType": "n1-standard-4",
        "autoScaling": {"minNodes": 1}
    }))
    .unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> Code {
    result.expect_err("an error").code()
}

/// The whole life of a model and its versions, on `store`.
fn models_and_versions_on(store: impl JobStore) {
    let service = JobService::new(store).unwrap();
    let created = service
        .create_model(
            &project(),
            Model::from_json(
                json!({"name": "census", "regions": ["us-central1"], "labels": {"team": "ml"}}),
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!(created.name(), Some("projects/my-proj/models/census"));
    assert_eq!(created.to_json()["regions"], json!(["us-central1"]));
    assert!(created.to_json().get("defaultVersion").is_none());
    assert_eq!(
        code(service.create_model(
            &project(),
            Model::from_json(json!({"name": "census"})).unwrap()
        )),
        Code::AlreadyExists
    );
    assert_eq!(
        code(service.create_model(
            &project(),
            Model::from_json(json!({"name": "1bad"})).unwrap()
        )),
        Code::InvalidArgument
    );

    // The first version becomes the default; the answer is a finished operation.
    let census = model_name("census");
    let op = service
        .create_version(&census, version("v1", "gs://b/census/v1"))
        .unwrap();
    assert_eq!(op["done"], json!(true));
    assert_eq!(op["metadata"]["operationType"], "CREATE_VERSION");
    assert_eq!(
        op["response"]["name"],
        "projects/my-proj/models/census/versions/v1"
    );
    assert_eq!(op["response"]["isDefault"], json!(true));
    assert_eq!(op["response"]["state"], "READY");
    // Fields the service does not use are kept as given.
    assert_eq!(op["response"]["autoScaling"], json!({"minNodes": 1}));
    assert_eq!(op["response"]["pythonVersion"], "3.7");
    assert_eq!(
        service.get_operation(op["name"].as_str().unwrap()).unwrap(),
        op
    );
    service
        .create_version(&census, version("v2", "gs://b/census/v2"))
        .unwrap();
    assert_eq!(
        code(service.create_version(&census, version("v2", "gs://b/x"))),
        Code::AlreadyExists
    );
    let no_uri = Version::from_json(json!({"name": "v3"})).unwrap();
    assert_eq!(
        code(service.create_version(&census, no_uri)),
        Code::InvalidArgument
    );
    assert_eq!(
        code(service.create_version(&model_name("nope"), version("v1", "gs://b/m"))),
        Code::NotFound
    );
    let model = service.get_model(&census).unwrap().to_json();
    assert_eq!(
        model["defaultVersion"]["name"],
        "projects/my-proj/models/census/versions/v1"
    );
    let listed = service.list_versions(&census, 0, "").unwrap();
    assert_eq!(listed.versions.len(), 2);
    assert!(!listed.versions[1].is_default());

    // setDefault moves the default.
    let v2 = service
        .set_default_version(&version_name("census", "v2"))
        .unwrap();
    assert!(v2.is_default());
    assert!(
        !service
            .get_version(&version_name("census", "v1"))
            .unwrap()
            .is_default()
    );
    assert_eq!(
        service.get_model(&census).unwrap().to_json()["defaultVersion"]["name"],
        "projects/my-proj/models/census/versions/v2"
    );
    assert_eq!(
        service
            .version_of(&ModelVersion::Model(census.clone()))
            .unwrap()
            .unwrap()
            .deployment_uri(),
        Some("gs://b/census/v2")
    );

    // Deleting: not the default while others remain; not a model with versions.
    assert_eq!(
        code(service.delete_version(&version_name("census", "v2"))),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(service.delete_model(&census)),
        Code::FailedPrecondition
    );
    let op = service
        .delete_version(&version_name("census", "v1"))
        .unwrap();
    assert_eq!(op["metadata"]["operationType"], "DELETE_VERSION");
    service
        .delete_version(&version_name("census", "v2"))
        .unwrap();
    assert!(
        service
            .get_model(&census)
            .unwrap()
            .to_json()
            .get("defaultVersion")
            .is_none()
    );
    assert_eq!(
        code(service.get_version(&version_name("census", "v2"))),
        Code::NotFound
    );
    service.delete_model(&census).unwrap();
    assert_eq!(code(service.get_model(&census)), Code::NotFound);

    // Listing, a page at a time.
    for id in ["a", "b", "c"] {
        service
            .create_model(&project(), Model::from_json(json!({"name": id})).unwrap())
            .unwrap();
    }
    let first = service.list_models(&project(), 2, "").unwrap();
    assert_eq!(first.models.len(), 2);
    let token = first.next_page_token.clone().unwrap();
    let second = service.list_models(&project(), 2, &token).unwrap();
    assert_eq!(second.models[0].name(), Some("projects/my-proj/models/c"));
    assert_eq!(second.next_page_token, None);
    assert_eq!(
        code(service.list_models(&project(), 2, "!")),
        Code::InvalidArgument
    );
    let other: ProjectName = "projects/other-proj".parse().unwrap();
    assert_eq!(
        service.list_models(&other, 0, "").unwrap().to_json(),
        json!({})
    );
}

#[test]
fn models_and_versions_in_memory() {
    models_and_versions_on(InMemoryJobStore::new());
}

#[test]
fn models_and_versions_on_the_durable_store_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    models_and_versions_on(LocalJobStore::open(dir.path()).unwrap());
    {
        let service = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
        let m = model_name("kept");
        service
            .create_model(
                &project(),
                Model::from_json(json!({"name": "kept"})).unwrap(),
            )
            .unwrap();
        service
            .create_version(&m, version("v1", "gs://b/kept"))
            .unwrap();
    }
    let reopened = JobService::new(LocalJobStore::open(dir.path()).unwrap()).unwrap();
    let names: Vec<String> = reopened
        .list_models(&project(), 0, "")
        .unwrap()
        .models
        .iter()
        .map(|m| m.name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["a", "b", "c", "kept"].map(|id| format!("projects/my-proj/models/{id}"))
    );
    let v = reopened.get_version(&version_name("kept", "v1")).unwrap();
    assert_eq!(v.deployment_uri(), Some("gs://b/kept"));
    assert!(v.is_default());
}

#[test]
fn model_permissions_follow_the_predefined_roles() {
    let service = JobService::builder(InMemoryJobStore::new())
        .with_iam_enforcement(true)
        .build()
        .unwrap();
    let viewer = Caller::new("user:viewer@example.com").unwrap();
    let admin = Caller::new("user:admin@example.com").unwrap();
    let policy = Policy::from_value(json!({"bindings": [
        {"role": "roles/ml.viewer", "members": ["user:viewer@example.com"]},
        {"role": "roles/ml.admin", "members": ["user:admin@example.com"]},
    ]}))
    .unwrap();
    service.set_project_policy(&project(), policy).unwrap();
    let m = Model::from_json(json!({"name": "census"})).unwrap();
    assert_eq!(
        code(service.caller(&viewer).create_model(&project(), m.clone())),
        Code::PermissionDenied
    );
    service.caller(&admin).create_model(&project(), m).unwrap();
    let census = model_name("census");
    assert_eq!(
        code(
            service
                .caller(&viewer)
                .create_version(&census, version("v1", "gs://b/m"))
        ),
        Code::PermissionDenied
    );
    let op = service
        .caller(&admin)
        .create_version(&census, version("v1", "gs://b/m"))
        .unwrap();
    // A viewer reads models, versions and operations, and changes nothing.
    service.caller(&viewer).get_model(&census).unwrap();
    service
        .caller(&viewer)
        .list_versions(&census, 0, "")
        .unwrap();
    service
        .caller(&viewer)
        .get_operation(op["name"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        code(
            service
                .caller(&viewer)
                .set_default_version(&version_name("census", "v1"))
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(service.caller(&viewer).delete_model(&census)),
        Code::PermissionDenied
    );
}

/// A service that requires models refuses a job naming one it lacks, and
/// runs a job naming its model on the default version's directory.
#[test]
fn jobs_naming_a_model_need_it_and_run_its_default_version() {
    let service = Arc::new(
        JobService::builder(InMemoryJobStore::new())
            .with_models_required(true)
            .build()
            .unwrap(),
    );
    let job = |model: Value| {
        let mut body = json!({"jobId": "j", "predictionInput": {
            "dataFormat": "JSON", "inputPaths": ["gs://b/in/*"], "outputPath": "gs://b/out",
            "region": "us-central1"}});
        for (k, v) in model.as_object().unwrap() {
            body["predictionInput"][k] = v.clone();
        }
        Job::from_value(body).unwrap()
    };
    let missing = service
        .create(
            &project(),
            job(json!({"modelName": "projects/my-proj/models/census"})),
        )
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing
            .to_string()
            .contains("projects/my-proj/models/census"),
        "{missing}"
    );
    assert!(missing.to_string().contains("create it first"), "{missing}");
    service
        .create_model(
            &project(),
            Model::from_json(json!({"name": "census"})).unwrap(),
        )
        .unwrap();
    // A model without a version has no default to run.
    assert_eq!(
        service
            .create(
                &project(),
                job(json!({"modelName": "projects/my-proj/models/census"}))
            )
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    service
        .create_version(&model_name("census"), version("v1", "gs://b/census/v1"))
        .unwrap();
    service
        .create_version(&model_name("census"), version("v2", "gs://b/census/v2"))
        .unwrap();
    assert_eq!(
        code(service.create(
            &project(),
            job(json!({"versionName": "projects/my-proj/models/census/versions/v9"}))
        )),
        Code::NotFound
    );
    service
        .create(
            &project(),
            job(json!({"modelName": "projects/my-proj/models/census"})),
        )
        .unwrap();

    // The runner's resolver gets the default version's deploymentUri.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = move |model: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
        record.lock().unwrap().push(model.to_string());
        Ok(Arc::new(EchoPredictor))
    };
    let resolver = ModelsResolver::new(Arc::clone(&service), Arc::new(inner));
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/a.jsonl", b"{\"x\": 1}\n".to_vec());
    let executor = BatchExecutor::new(
        Arc::new(storage),
        Arc::new(resolver) as Arc<dyn ModelResolver>,
    );
    let done = service.run_next(&executor).unwrap().unwrap();
    assert_eq!(done.state(), State::Succeeded, "{:?}", done.error_message);
    assert_eq!(seen.lock().unwrap().as_slice(), ["gs://b/census/v1"]);
}

#[cfg(feature = "rest")]
#[test]
fn the_rest_api_serves_models_versions_and_operations() {
    use batch_prediction::RestApi;
    use batch_prediction::rest::RestRequest;
    let api = RestApi::new(Arc::new(JobService::new(InMemoryJobStore::new()).unwrap()));
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut request = RestRequest::new(method, path);
        if let Some(body) = body {
            request = request.with_body(body.to_string());
        }
        let response = api.handle(&request);
        let value: Value = serde_json::from_slice(&response.body).unwrap();
        (response.status, value)
    };
    let (status, model) = call(
        "POST",
        "/v1/projects/my-proj/models",
        Some(json!({"name": "census", "regions": ["us-central1"]})),
    );
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["name"], "projects/my-proj/models/census");
    let (status, op) = call(
        "POST",
        "/v1/projects/my-proj/models/census/versions",
        Some(json!({"name": "v1", "deployment_uri": "gs://b/m", "framework": "TENSORFLOW"})),
    );
    assert_eq!(status, 200, "{op}");
    assert_eq!(
        op["response"]["@type"],
        "type.googleapis.com/google.cloud.ml.v1.Version"
    );
    let (status, got) = call(
        "GET",
        &format!("/v1/{}", op["name"].as_str().unwrap()),
        None,
    );
    assert_eq!((status, &got), (200, &op));
    let (status, v) = call(
        "POST",
        "/v1/projects/my-proj/models/census/versions/v1:setDefault",
        None,
    );
    assert_eq!((status, &v["isDefault"]), (200, &json!(true)), "{v}");
    let (status, list) = call(
        "GET",
        "/v1/projects/my-proj/models/census/versions?pageSize=5",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list["versions"].as_array().unwrap().len(), 1);
    let (status, list) = call("GET", "/v1/projects/my-proj/models", None);
    assert_eq!(
        (status, list["models"][0]["defaultVersion"]["name"].as_str()),
        (200, Some("projects/my-proj/models/census/versions/v1"))
    );
    // An unknown field is refused as Google refuses it; a wrong method is 404.
    let (status, error) = call(
        "POST",
        "/v1/projects/my-proj/models/census/versions",
        Some(json!({"name": "v2", "deploymentUri": "gs://b/m", "nope": 1})),
    );
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown name \"nope\""),
        "{error}"
    );
    let (status, _) = call("PATCH", "/v1/projects/my-proj/models/census", None);
    assert_eq!(status, 404);
    let (status, error) = call("DELETE", "/v1/projects/my-proj/models/census", None);
    assert_eq!(
        (status, error["error"]["status"].as_str()),
        (400, Some("FAILED_PRECONDITION"))
    );
    let (status, _) = call(
        "DELETE",
        "/v1/projects/my-proj/models/census/versions/v1",
        None,
    );
    assert_eq!(status, 200);
    let (status, op) = call("DELETE", "/v1/projects/my-proj/models/census", None);
    assert_eq!((status, &op["done"]), (200, &json!(true)));
    let (status, _) = call("GET", "/v1/projects/my-proj/operations/none", None);
    assert_eq!(status, 404);
}

/// What the API's reference says of the fields the service checks: a
/// model's `regions` (one at most; `us-central1` when it names none) and a
/// version's `framework` (one of the enum's values), on the service and
/// over REST; and operations named apart even when the clock stands still.
#[test]
fn regions_frameworks_and_operation_names_follow_the_reference() {
    use batch_prediction::ManualClock;
    use batch_prediction::RestApi;
    use batch_prediction::rest::RestRequest;
    let clock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    let service = Arc::new(
        JobService::builder(InMemoryJobStore::new())
            .with_clock(clock)
            .build()
            .unwrap(),
    );
    let create = |body: Value| service.create_model(&project(), Model::from_json(body).unwrap());
    for (id, regions, kept) in [
        ("none", None, json!(["us-central1"])),
        ("empty", Some(json!([])), json!(["us-central1"])),
        (
            "europe",
            Some(json!(["europe-west1"])),
            json!(["europe-west1"]),
        ),
    ] {
        let mut body = json!({"name": id});
        if let Some(regions) = regions {
            body["regions"] = regions;
        }
        assert_eq!(create(body).unwrap().to_json()["regions"], kept, "{id}");
        let stored = service.get_model(&model_name(id)).unwrap().to_json();
        assert_eq!(stored["regions"], kept, "{id}");
    }
    let two = create(json!({"name": "two", "regions": ["us-central1", "europe-west1"]}));
    let err = two.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("one region"), "{err}");
    assert_eq!(code(service.get_model(&model_name("two"))), Code::NotFound);
    assert_eq!(
        Model::from_json(json!({"regions": [1]}))
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    for framework in [
        "FRAMEWORK_UNSPECIFIED",
        "TENSORFLOW",
        "SCIKIT_LEARN",
        "XGBOOST",
    ] {
        let v = Version::from_json(json!({"framework": framework})).unwrap();
        assert_eq!(v.framework(), Some(framework));
    }
    for bad in [json!("PYTORCH"), json!("tensorflow"), json!(3)] {
        let err = Version::from_json(json!({"framework": bad})).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(err.to_string().contains("version.framework"), "{err}");
    }
    let api = RestApi::new(Arc::clone(&service));
    let post = |path: &str, body: Value| {
        let response = api.handle(&RestRequest::new("POST", path).with_body(body.to_string()));
        let value: Value = serde_json::from_slice(&response.body).unwrap();
        (response.status, value)
    };
    let (status, error) = post(
        "/v1/projects/my-proj/models/none/versions",
        json!({"name": "v1", "deploymentUri": "gs://b/m", "framework": "PYTORCH"}),
    );
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SCIKIT_LEARN"),
        "{error}"
    );
    let (status, error) = post(
        "/v1/projects/my-proj/models",
        json!({"name": "rest_two", "regions": ["a", "b"]}),
    );
    assert_eq!(
        (status, &error["error"]["status"]),
        (400, &json!("INVALID_ARGUMENT"))
    );

    // The clock stands still: each operation still has a name of its own,
    // which `operations.get` serves.
    let none = model_name("none");
    let mut operations = vec![
        service
            .create_version(&none, version("v1", "gs://b/1"))
            .unwrap(),
        service
            .create_version(&none, version("v2", "gs://b/2"))
            .unwrap(),
        service.delete_version(&version_name("none", "v2")).unwrap(),
        service
            .create_version(&none, version("v2", "gs://b/2"))
            .unwrap(),
    ];
    operations.push(service.delete_version(&version_name("none", "v2")).unwrap());
    let names: std::collections::BTreeSet<&str> = operations
        .iter()
        .map(|op| op["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), operations.len(), "{names:?}");
    for op in &operations {
        assert_eq!(
            &service.get_operation(op["name"].as_str().unwrap()).unwrap(),
            op
        );
    }
}
