#![no_main]
//! `Job::from_json` on arbitrary bytes: no panic; what parses validates
//! without panicking and survives a round trip unchanged.

use batch_prediction::Job;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(job) = Job::from_json(text) else {
        return;
    };
    let _ = job.validate();
    let written = serde_json::to_string(&job).expect("a parsed job serializes");
    let again = Job::from_json(&written).expect("what we write, we read");
    // Floats in unknown fields may not be bit-identical after a text round
    // trip through f64, but our own writing is a fixed point.
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        written,
        "round trip is stable"
    );
});
