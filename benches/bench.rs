//! Criterion benchmarks, one module per area; names are `area/case`.
//!
//! Run with `cargo bench`; `cargo bench -- wire/` runs one area.

use criterion::{Criterion, criterion_group, criterion_main};

mod executor;
mod io;
mod name;
mod service;
mod wire;

fn all(c: &mut Criterion) {
    executor::define(c);
    io::define(c);
    name::define(c);
    service::define(c);
    wire::define(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
