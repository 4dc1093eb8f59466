//! The Rust side of `benches/compare.py`: each command does one timed piece
//! of work on files and prints `SECONDS COUNT` on stdout.
//!
//! ```text
//! compare_helper bare-json IN OUT                  # serde_json parse + serialize of each line, one thread
//! compare_helper bare-tfrecord-echo IN OUT         # frame each TFRecord, write it as a {"b64": …} line
//! compare_helper read FORMAT IN                    # frame every record (json, tfrecord, tfrecord-gzip), RawReader::read_many
//! compare_helper job echo|cpu FORMAT IN OUTDIR N   # a BatchExecutor job with N workers, batches of 64
//! compare_helper to-tfrecord BLOBS OUT             # frame (u32 LE length, bytes)* as TFRecords (untimed)
//! compare_helper phases FORMAT IN OUT              # the bare echo loop's parts, timed apart (json, tfrecord)
//! compare_helper onnx-bare MODEL IN OUT            # (feature onnx) the model over batches of 64 lines, one loop
//! compare_helper job onnx:MODEL json IN OUTDIR N   # (feature onnx) the job with that ONNX model
//! compare_helper job ort:MODEL json IN OUTDIR N    # (feature ort) the job on onnxruntime
//! compare_helper model-bare onnx:MODEL|ort:MODEL IN OUT  # the predictor over batches of 64, one loop
//! compare_helper ort-bare MODEL IN OUT             # (feature ort) `ort` alone over batches of 64
//! compare_helper job tensorflow:DIR json IN OUTDIR N  # (feature tensorflow) the job with that SavedModel
//! compare_helper tf-bare DIR IN OUT                # (feature tensorflow) TensorFlow's C API alone over batches of 64
//! ```
//!
//! `cpu` is a CPU-bound predictor: about 1,000 floating-point steps per
//! instance, so that the workers, not the I/O, set the pace.
//!
//! The bare loops end by syncing their output file to disk, as a job does
//! when it commits its files: both sides pay for durable results.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use batch_prediction::executor::ResumeMode;
use batch_prediction::predict::{CancelHandle, JsonPredictions, PredictContext};
use batch_prediction::record::{RawReader, ReadOptions};
use batch_prediction::{
    BatchExecutor, DataFormat, EchoPredictor, ExecutorConfig, Instance, Job, LocalStorage,
    ModelVersion, PredictError, PredictionInput, Predictor, State, Storage, SystemClock,
    Transition,
};
use serde_json::Value;

#[path = "shared/cpu_bound.rs"]
mod cpu_bound;
use cpu_bound::cpu_bound;
#[cfg(feature = "tensorflow")]
#[path = "shared/tf_bare.rs"]
mod tf_bare;

fn format_of(name: &str) -> DataFormat {
    match name {
        "json" => DataFormat::Json,
        "tfrecord" => DataFormat::TfRecord,
        "tfrecord-gzip" => DataFormat::TfRecordGzip,
        other => panic!("unknown format {other:?}: json, tfrecord or tfrecord-gzip"),
    }
}

/// A reader of `input`'s raw records, through `LocalStorage`.
fn raw_reader(format: DataFormat, input: &str) -> RawReader {
    let source = LocalStorage::new().open(input).expect("open");
    RawReader::new(format, input, source, ReadOptions::default()).expect("an input format")
}

fn bare_json(input: &str, output: &str) -> (f64, u64) {
    let start = Instant::now();
    let reader = BufReader::with_capacity(256 << 10, std::fs::File::open(input).expect("input"));
    let mut out =
        BufWriter::with_capacity(256 << 10, std::fs::File::create(output).expect("output"));
    let mut n = 0;
    for line in reader.split(b'\n') {
        let line = line.expect("read");
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_slice(&line).expect("valid JSON");
        serde_json::to_writer(&mut out, &value).expect("write");
        out.write_all(b"\n").expect("write");
        n += 1;
    }
    sync(out);
    (start.elapsed().as_secs_f64(), n)
}

/// The echo job's work on TFRecords in one loop: frame each record and
/// write it as the echo predictor's `{"b64": …}` line.
fn bare_tfrecord_echo(input: &str, output: &str) -> (f64, u64) {
    let start = Instant::now();
    let mut reader = raw_reader(DataFormat::TfRecord, input);
    let mut out =
        BufWriter::with_capacity(256 << 10, std::fs::File::create(output).expect("output"));
    let mut buf = Vec::new();
    let mut n = 0;
    while let Some(item) = reader.read_into(&mut buf) {
        item.expect("clean input");
        serde_json::to_writer(&mut out, &batch_prediction::record::bytes_to_json(&buf))
            .expect("write");
        out.write_all(b"\n").expect("write");
        buf.clear();
        n += 1;
    }
    sync(out);
    (start.elapsed().as_secs_f64(), n)
}

/// The echo job's work on `format` (json: the echo predictor's JSON-lines
/// path on batches of 64, as the job's workers run it; tfrecord: each
/// record as a `{"b64": …}` line) in parts, each timed on
/// its own (the best of 5): framing every record (TFRecord checksums
/// included), the checksums alone, the work on records held in memory,
/// writing the result lines to a file, and the final sync. Then the bounds
/// these parts put on a job on 2 cores even if the executor cost nothing:
/// the workers do the work and the checksums, the framing and writing
/// threads the rest, and the final sync comes after everything.
fn phases(format: DataFormat, input: &str, output: &str) -> (f64, u64) {
    const TRIES: usize = 5;
    let best = |f: &mut dyn FnMut()| {
        (0..TRIES)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let read_all = |data: &mut Vec<u8>, records: &mut Vec<batch_prediction::record::RawRecord>| {
        let mut reader = raw_reader(format, input);
        while let Some(item) = reader.read_many(data, records, 1024) {
            item.expect("clean input");
            if data.len() > 1 << 20 {
                std::hint::black_box((&*data, &*records));
                data.clear();
                records.clear();
            }
        }
    };
    let (mut scratch, mut scratch_records) =
        (Vec::with_capacity(2 << 20), Vec::with_capacity(1024));
    let frame = best(&mut || read_all(&mut scratch, &mut scratch_records));
    // Every record in memory, for the parts that follow.
    let (mut data, mut records) = (Vec::new(), Vec::new());
    let mut reader = raw_reader(format, input);
    while let Some(item) = reader.read_many(&mut data, &mut records, 1024) {
        item.expect("clean input");
    }
    let checksums = if format == DataFormat::TfRecord {
        // Four at a time, as the job's workers check them.
        best(&mut || {
            let mut groups = records.chunks_exact(4);
            let mut crc = 0;
            for g in &mut groups {
                let four = batch_prediction::record::masked_crc32c_4(std::array::from_fn(|k| {
                    &data[g[k].range.clone()]
                }));
                crc ^= four[0] ^ four[1] ^ four[2] ^ four[3];
            }
            for r in groups.remainder() {
                crc ^= batch_prediction::record::masked_crc32c(&data[r.range.clone()]);
            }
            std::hint::black_box(crc);
        })
    } else {
        0.0
    };
    // The job's own work on a batch of 64: TFRecords as `{"b64": …}`
    // lines, JSON lines through the echo predictor's fast path.
    let cancel = CancelHandle::new();
    let ctx = PredictContext::new("serving_default", &cancel, 0);
    let work_on = |batch: &[batch_prediction::record::RawRecord], out: &mut Vec<u8>| {
        if format == DataFormat::TfRecord {
            for r in batch {
                serde_json::to_writer(
                    &mut *out,
                    &batch_prediction::record::bytes_to_json(&data[r.range.clone()]),
                )
                .expect("JSON");
                out.push(b'\n');
            }
        } else {
            let lines: Vec<&[u8]> = batch.iter().map(|r| &data[r.range.clone()]).collect();
            let mut predictions = JsonPredictions::new(out);
            assert!(EchoPredictor.predict_json_lines(&lines, &ctx, &mut predictions));
            predictions.finish();
        }
    };
    let mut lines = Vec::with_capacity(2 << 20);
    let work = best(&mut || {
        for batch in records.chunks(64) {
            work_on(batch, &mut lines);
            if lines.len() > 1 << 20 {
                std::hint::black_box(&lines);
                lines.clear();
            }
        }
    });
    let mut all = Vec::new();
    for batch in records.chunks(64) {
        work_on(batch, &mut all);
    }
    // As the executor's writer does: each chunk's lines (about 1024) at once.
    let chunk = all.len() / records.len().max(1) * 1024 + 1;
    let mut file = None;
    let write = best(&mut || {
        let mut out =
            BufWriter::with_capacity(256 << 10, std::fs::File::create(output).expect("output"));
        for piece in all.chunks(chunk) {
            out.write_all(piece).expect("write");
        }
        file = Some(out.into_inner().expect("flush"));
    });
    let start = Instant::now();
    file.expect("written").sync_all().expect("sync");
    let sync = start.elapsed().as_secs_f64();
    // The framing thread's share leaves the checksums to the workers.
    let (read, work) = (frame - checksums, work + checksums);
    let one = work.max((read + work + write) / 2.0) + sync;
    let two = (work / 2.0)
        .max(read)
        .max(write)
        .max((read + work + write) / 2.0)
        + sync;
    eprintln!(
        "{} records: framing {:.1} ms (checksums {:.1} ms of it), work {:.1} ms, writing {:.1} ms, final sync {:.1} ms",
        records.len(),
        frame * 1e3,
        checksums * 1e3,
        (work - checksums) * 1e3,
        write * 1e3,
        sync * 1e3
    );
    eprintln!(
        "so with an executor that cost nothing: 1 worker >= {:.1} ms, 2 workers >= {:.1} ms, 2w/1w <= {:.2}",
        one * 1e3,
        two * 1e3,
        one / two
    );
    (one / two, records.len() as u64)
}

/// Flushes and syncs a bare loop's output, as a job commits its files.
fn sync(out: BufWriter<std::fs::File>) {
    out.into_inner().expect("flush").sync_all().expect("sync");
}

fn read(format: DataFormat, input: &str) -> (f64, u64) {
    let start = Instant::now();
    let mut reader = raw_reader(format, input);
    let mut buf = Vec::with_capacity(2 << 20);
    let mut records = Vec::with_capacity(1024);
    let mut n = 0u64;
    while let Some(item) = reader.read_many(&mut buf, &mut records, 1024) {
        n += item.expect("clean input") as u64;
        if buf.len() > 1 << 20 {
            std::hint::black_box((&buf, &records));
            buf.clear();
            records.clear();
        }
    }
    (start.elapsed().as_secs_f64(), n)
}

fn job(predictor: &str, format: DataFormat, input: &str, outdir: &str, workers: i64) -> (f64, u64) {
    let predictor: Arc<dyn Predictor> = match predictor {
        "echo" => Arc::new(EchoPredictor),
        "cpu" => cpu_bound(),
        model => model_predictor(model),
    };
    let resolver = move |_: &ModelVersion, _: &Job| -> Result<Arc<dyn Predictor>, PredictError> {
        Ok(Arc::clone(&predictor))
    };
    let mut job = Job::new(
        "compare",
        PredictionInput::new(format, [input], outdir, "local", ModelVersion::uri("m"))
            .set_batch_size(64)
            .set_max_worker_count(workers),
    );
    job.apply(Transition::Queue, &SystemClock).expect("queue");
    let executor = BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(resolver))
        .with_config(ExecutorConfig::default().with_resume(ResumeMode::Fresh));
    let start = Instant::now();
    let summary = executor.run(&mut job, &CancelHandle::new()).expect("run");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
    (elapsed, summary.prediction_count)
}

/// Frames each `(u32 LE length, bytes)` of `blobs` as a TFRecord, as
/// TensorFlow's writer does, so the script needs no TensorFlow to make inputs.
fn to_tfrecord(blobs: &str, output: &str) -> (f64, u64) {
    let data = std::fs::read(blobs).expect("blobs");
    let out = BufWriter::new(std::fs::File::create(output).expect("output"));
    let mut writer = batch_prediction::record::TfRecordWriter::new(out);
    let (mut at, mut n) = (0, 0);
    while at + 4 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        writer.write(&data[at + 4..at + 4 + len]).expect("write");
        at += 4 + len;
        n += 1;
    }
    writer.into_inner().flush().expect("flush");
    (0.0, n)
}

/// The model `spec` names: `onnx:PATH` (tract, feature `onnx`) or
/// `ort:PATH` (onnxruntime, feature `ort`, one intra-op thread).
fn model_predictor(spec: &str) -> Arc<dyn Predictor> {
    match spec.split_once(':') {
        #[cfg(feature = "onnx")]
        Some(("onnx", path)) => {
            Arc::new(batch_prediction::OnnxPredictor::load(path).expect("model"))
        }
        #[cfg(feature = "ort")]
        Some(("ort", path)) => Arc::new(
            batch_prediction::OrtPredictor::load(path, &batch_prediction::onnx::OrtOptions::new())
                .expect("model"),
        ),
        #[cfg(feature = "tensorflow")]
        Some(("tensorflow", path)) => Arc::new(
            batch_prediction::TensorflowPredictor::load(
                path,
                "serving_default",
                batch_prediction::tensorflow::TensorflowOptions::new(),
            )
            .expect("model"),
        ),
        _ => panic!(
            "unknown predictor {spec:?}: echo, cpu, onnx:MODEL (feature onnx), ort:MODEL (feature ort) or tensorflow:DIR (feature tensorflow)"
        ),
    }
}

/// The bare cost of a model job: parse each line, run the model (`spec`,
/// as [`model_predictor`] reads it) over batches of 64 in one loop, and
/// write each prediction as a line.
fn model_bare(spec: &str, input: &str, output: &str) -> (f64, u64) {
    let model = model_predictor(spec);
    let cancel = CancelHandle::new();
    let ctx = batch_prediction::PredictContext::new("", &cancel, 0);
    let start = Instant::now();
    let reader = BufReader::with_capacity(256 << 10, std::fs::File::open(input).expect("input"));
    let mut out =
        BufWriter::with_capacity(256 << 10, std::fs::File::create(output).expect("output"));
    let mut batch = Vec::with_capacity(64);
    let mut n = 0;
    let flush = |batch: &mut Vec<Instance>, out: &mut BufWriter<std::fs::File>| {
        for p in model.predict(std::mem::take(batch), &ctx).expect("predict") {
            serde_json::to_writer(&mut *out, &p).expect("write");
            out.write_all(b"\n").expect("write");
        }
    };
    for line in reader.split(b'\n') {
        let line = line.expect("read");
        if line.is_empty() {
            continue;
        }
        batch.push(Instance::Json(
            serde_json::from_slice(&line).expect("valid JSON"),
        ));
        n += 1;
        if batch.len() == 64 {
            flush(&mut batch, &mut out);
        }
    }
    flush(&mut batch, &mut out);
    sync(out);
    (start.elapsed().as_secs_f64(), n)
}

/// The bare cost of an onnxruntime job, with `ort` alone: parse each line
/// into a typed struct (its `key`, and its `features` straight into four
/// `f32`s, as a hand-written loop would), gather the features into
/// batches of 64, run one session
/// (one intra-op thread, every graph optimization, as `OrtPredictor` runs
/// it) and write each instance's float outputs and `key` as a line.
#[cfg(feature = "ort")]
fn ort_bare(model: &str, input: &str, output: &str) -> (f64, u64) {
    use ort::session::Session;
    use ort::session::builder::GraphOptimizationLevel;
    use ort::value::Tensor;
    /// One instance's outputs and key, written as a JSON object: f32 values
    /// as serde_json writes them (the shortest decimal that reads back), one
    /// value per instance bare, as the job writes them.
    struct Row<'a> {
        columns: &'a [(&'a str, Vec<f32>)],
        rows: usize,
        row: usize,
        key: &'a Value,
    }
    impl serde::Serialize for Row<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(self.columns.len() + 1))?;
            map.serialize_entry("key", self.key)?;
            for (name, values) in self.columns {
                let width = values.len() / self.rows;
                let row = &values[self.row * width..(self.row + 1) * width];
                if width == 1 {
                    map.serialize_entry(name, &row[0])?;
                } else {
                    map.serialize_entry(name, row)?;
                }
            }
            map.end()
        }
    }

    /// An instance as a hand-written loop would read it: typed, its
    /// features straight into numbers.
    #[derive(serde::Deserialize)]
    struct Typed {
        key: Value,
        features: [f32; 4],
    }

    let library = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH");
    let environment = ort::init_from(library)
        .expect("onnxruntime")
        .with_telemetry(false)
        .build()
        .expect("environment");
    let mut session = Session::builder(&environment)
        .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
        .and_then(|b| Ok(b.with_intra_threads(1)?))
        .and_then(|b| Ok(b.with_inter_threads(1)?))
        .expect("session options")
        .commit_from_file(model)
        .expect("model");
    let input_name = session.inputs()[0].name().to_owned();
    let outputs: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    let start = Instant::now();
    let reader = BufReader::with_capacity(256 << 10, std::fs::File::open(input).expect("input"));
    let mut out =
        BufWriter::with_capacity(256 << 10, std::fs::File::create(output).expect("output"));
    let (mut features, mut keys): (Vec<f32>, Vec<Value>) = (Vec::new(), Vec::new());
    let mut n = 0;
    let mut flush =
        |features: &mut Vec<f32>, keys: &mut Vec<Value>, out: &mut BufWriter<std::fs::File>| {
            if keys.is_empty() {
                return;
            }
            let rows = keys.len();
            let tensor = Tensor::from_array(([rows, 4], std::mem::take(features))).expect("tensor");
            let results = session
                .run(ort::inputs![input_name.as_str() => tensor])
                .expect("run");
            let columns: Vec<(&str, Vec<f32>)> = outputs
                .iter()
                .map(|name| {
                    let (_, values) = results[name.as_str()]
                        .try_extract_tensor::<f32>()
                        .expect("f32 output");
                    (name.as_str(), values.to_vec())
                })
                .collect();
            for (row, key) in keys.drain(..).enumerate() {
                let row = Row {
                    columns: &columns,
                    rows,
                    row,
                    key: &key,
                };
                serde_json::to_writer(&mut *out, &row).expect("write");
                out.write_all(b"\n").expect("write");
            }
        };
    for line in reader.split(b'\n') {
        let line = line.expect("read");
        if line.is_empty() {
            continue;
        }
        let instance: Typed = serde_json::from_slice(&line).expect("an instance");
        features.extend_from_slice(&instance.features);
        keys.push(instance.key);
        n += 1;
        if keys.len() == 64 {
            flush(&mut features, &mut keys, &mut out);
        }
    }
    flush(&mut features, &mut keys, &mut out);
    sync(out);
    (start.elapsed().as_secs_f64(), n)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (seconds, count) = match a.as_slice() {
        ["bare-json", input, output] => bare_json(input, output),
        ["bare-tfrecord-echo", input, output] => bare_tfrecord_echo(input, output),
        ["read", format, input] => read(format_of(format), input),
        ["to-tfrecord", blobs, output] => to_tfrecord(blobs, output),
        ["phases", format, input, output] => phases(format_of(format), input, output),
        ["onnx-bare", model, input, output] => model_bare(&format!("onnx:{model}"), input, output),
        ["model-bare", spec, input, output] => model_bare(spec, input, output),
        #[cfg(feature = "ort")]
        ["ort-bare", model, input, output] => ort_bare(model, input, output),
        #[cfg(feature = "tensorflow")]
        ["tf-bare", model, input, output] => tf_bare::tf_bare(model, input, output),
        ["job", predictor, format, input, outdir, workers] => job(
            predictor,
            format_of(format),
            input,
            outdir,
            workers.parse().expect("workers"),
        ),
        _ => {
            eprintln!(
                "usage: compare_helper bare-json IN OUT | bare-tfrecord-echo IN OUT | read FORMAT IN | job echo|cpu|onnx:MODEL|ort:MODEL FORMAT IN OUTDIR N | model-bare onnx:MODEL|ort:MODEL IN OUT | to-tfrecord BLOBS OUT"
            );
            std::process::exit(2);
        }
    };
    println!("{seconds:.6} {count}");
}
