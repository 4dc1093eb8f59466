#![no_main]
//! `RestApi::handle` on arbitrary requests: never a panic, and always a JSON
//! answer — the API's error body with a code equal to the HTTP status when
//! the request fails.
//!
//! The input is one or more requests, separated by `\n--\n`, sent in
//! order to one service (so a create is seen by the get, patch and list
//! after it). Each is `METHOD-BYTE PATH?QUERY\nHEADER\nBODY`: the first
//! byte picks the HTTP method, the first line is the target, the second an
//! Authorization header, the rest the body. A 500 never shows the client
//! more than `Internal error encountered.`.

use std::sync::Arc;

use batch_prediction::{InMemoryJobStore, Job, JobService, RestApi};
use batch_prediction::rest::RestRequest;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 6] = ["GET", "POST", "PATCH", "DELETE", "PUT", "get"];

/// Where each request of the input ends.
const SEPARATOR: &[u8] = b"\n--\n";

fuzz_target!(|data: &[u8]| {
    let service = JobService::new(InMemoryJobStore::new()).expect("a new service");
    let job = Job::from_json(
        r#"{"jobId": "j1", "predictionInput": {"dataFormat": "JSON", "inputPaths": ["gs://b/in"],
            "outputPath": "gs://b/out", "region": "r", "uri": "gs://b/m"}}"#,
    )
    .expect("a valid job");
    service
        .create(&"projects/fuzz-proj".parse().expect("a project"), job)
        .expect("created");
    let api = RestApi::new(Arc::new(service)).with_max_body_bytes(4096);
    let mut rest = data;
    // At most 8 requests an input, so each run stays short.
    for _ in 0..8 {
        let (one, more) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        send(&api, one);
        match more {
            Some(more) => rest = more,
            None => break,
        }
    }
});

fn send(api: &RestApi, data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let target = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let mut request =
        RestRequest::new(METHODS[m as usize % METHODS.len()], &target).with_body(body.to_vec());
    if !header.is_empty() {
        request = request.with_header("Authorization", header.into_owned());
    }
    let response = api.handle(&request);
    let json = response.json().expect("every answer is JSON");
    if response.status != 200 {
        assert_eq!(
            json["error"]["code"].as_u64(),
            Some(u64::from(response.status)),
            "{json}"
        );
        assert!(json["error"]["status"].is_string(), "{json}");
    }
    if response.status == 500 {
        assert_eq!(
            json["error"]["message"], "Internal error encountered.",
            "{json}"
        );
        assert!(response.detail.is_some());
    }
}
