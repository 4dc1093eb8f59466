//! The job service: create, get and list throughput over the in-memory and
//! the durable store, and a filtered list over 100,000 jobs.

use std::hint::black_box;

use batch_prediction::service::ListJobsRequest;
use batch_prediction::{InMemoryJobStore, Job, JobName, JobService, LocalJobStore, ProjectName};
use criterion::{BatchSize, Criterion};
use serde_json::json;

fn job(id: &str, team: &str) -> Job {
    Job::from_value(json!({
        "jobId": id,
        "labels": {"team": team},
        "predictionInput": {
            "dataFormat": "JSON", "inputPaths": ["gs://b/in/*"], "outputPath": "gs://b/out",
            "region": "us-central1", "uri": "gs://b/model"}
    }))
    .unwrap()
}

fn parent() -> ProjectName {
    "projects/bench-proj".parse().unwrap()
}

fn filled(service: &JobService, n: usize) -> Vec<JobName> {
    (0..n)
        .map(|i| {
            let id = format!("job_{i}");
            let team = if i % 100 == 0 { "rare" } else { "common" };
            service.create(&parent(), job(&id, team)).unwrap();
            parent().job(&id).unwrap()
        })
        .collect()
}

type MakeService<'a> = Box<dyn Fn() -> JobService + 'a>;

pub fn define(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, MakeService); 2] = [
        (
            "memory",
            Box::new(|| JobService::new(InMemoryJobStore::new()).unwrap()),
        ),
        (
            "local",
            Box::new(|| {
                let sub = tempfile::tempdir_in(dir.path()).unwrap().keep();
                JobService::new(LocalJobStore::open(sub).unwrap()).unwrap()
            }),
        ),
    ];
    for (store, make) in &stores {
        let service = make();
        let mut n = 0u64;
        c.bench_function(&format!("service/create/{store}"), |b| {
            b.iter(|| {
                n += 1;
                black_box(
                    service
                        .create(&parent(), job(&format!("c{n}"), "x"))
                        .unwrap(),
                )
            })
        });
        let service = make();
        let names = filled(&service, 1000);
        let mut i = 0;
        c.bench_function(&format!("service/get/{store}"), |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                black_box(service.get(&names[i]).unwrap())
            })
        });
        c.bench_function(&format!("service/list_page_100/{store}"), |b| {
            b.iter(|| {
                let page = service
                    .list(&parent(), &ListJobsRequest::new().set_page_size(100))
                    .unwrap();
                assert_eq!(page.jobs.len(), 100);
                black_box(page)
            })
        });
    }

    // A filtered list over 100,000 jobs, where 1 in 100 matches: each page
    // scans about 10,000 jobs.
    let service = JobService::new(InMemoryJobStore::new()).unwrap();
    filled(&service, 100_000);
    let mut group = c.benchmark_group("service");
    group.sample_size(20);
    group.bench_function("list_filter_100k/first_page", |b| {
        b.iter_batched(
            || {
                ListJobsRequest::new()
                    .set_filter("labels.team=rare AND state=QUEUED")
                    .set_page_size(100)
            },
            |request| {
                let page = service.list(&parent(), &request).unwrap();
                assert_eq!(page.jobs.len(), 100);
                black_box(page)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("list_filter_100k/no_match", |b| {
        b.iter(|| {
            let page = service
                .list(&parent(), &ListJobsRequest::new().set_filter("jobId:none*"))
                .unwrap();
            assert!(page.jobs.is_empty());
            black_box(page)
        })
    });
    group.finish();
}
