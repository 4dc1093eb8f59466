#![no_main]
//! The Text reader on arbitrary bytes: no panic, no endless loop, every record accounted for,
//! and `read_many` gives what `read_into` does.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::read_all(batch_prediction::DataFormat::Text, data);
    common::read_many_matches_read_into(batch_prediction::DataFormat::Text, data);
});
