#![no_main]
//! The Text reader on arbitrary bytes: no panic, no endless loop, every record accounted for.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::read_all(batch_prediction::DataFormat::Text, data);
});
