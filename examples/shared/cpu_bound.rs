//! The CPU-bound predictor of the benchmark programs (`executor_throughput`,
//! `compare_helper`), shared so that both time the same work.

use std::sync::Arc;

use batch_prediction::{Instance, Predictor, predictor_fn};
use serde_json::json;

/// About 1,000 floating-point steps per instance (a few microseconds), so
/// that the workers, not the I/O, set the pace.
pub fn cpu_bound() -> Arc<dyn Predictor> {
    Arc::new(predictor_fn(|batch: Vec<Instance>, _: &_| {
        Ok(batch
            .iter()
            .map(|i| {
                let mut acc = i.to_json()["key"].as_f64().unwrap_or(0.0);
                for k in 0..1000 {
                    acc = (acc * 1.000_001 + k as f64).sqrt();
                }
                json!({"score": acc})
            })
            .collect())
    }))
}
