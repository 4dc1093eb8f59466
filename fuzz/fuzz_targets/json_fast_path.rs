#![no_main]
//! The echo predictor's fast path on arbitrary lines: whatever it takes, it
//! writes exactly what decoding the line and `predict` write; what does not
//! decode, it never takes.

use batch_prediction::{DataFormat, EchoPredictor, PredictContext, Predictor};
use batch_prediction::predict::{CancelHandle, JsonPredictions};
use batch_prediction::record::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cancel = CancelHandle::new();
    let ctx = PredictContext::new("serving_default", &cancel, 0);
    for line in data.split(|&b| b == b'\n') {
        let mut text = Vec::new();
        let mut out = JsonPredictions::new(&mut text);
        if !EchoPredictor.predict_json_lines(&[line], &ctx, &mut out) {
            continue;
        }
        assert_eq!(out.len(), 1);
        out.finish();
        let instance = decode(DataFormat::Json, line).expect("a line the fast path took decodes");
        let prediction = EchoPredictor.predict(vec![instance], &ctx).unwrap().remove(0);
        let mut usual = serde_json::to_vec(&prediction).unwrap();
        usual.push(b'\n');
        assert_eq!(text, usual, "the fast path wrote otherwise");
    }
});
