//! Resource name parsing and printing.

use std::hint::black_box;

use batch_prediction::{JobName, VersionName};
use criterion::Criterion;

pub fn define(c: &mut Criterion) {
    c.bench_function("name/parse_job", |b| {
        b.iter(|| {
            let name: JobName = black_box("projects/my-project-1/jobs/census_batch_2026_11_26")
                .parse()
                .unwrap();
            assert_eq!(name.job().len(), 23);
            name
        })
    });
    c.bench_function("name/parse_version", |b| {
        b.iter(|| {
            let name: VersionName =
                black_box("projects/my-project-1/models/census/versions/v20261126")
                    .parse()
                    .unwrap();
            assert_eq!(name.version(), "v20261126");
            name
        })
    });
    let name: JobName = "projects/my-project-1/jobs/census_batch_2026_11_26"
        .parse()
        .unwrap();
    c.bench_function("name/display_job", |b| {
        b.iter(|| black_box(&name).to_string())
    });
}
