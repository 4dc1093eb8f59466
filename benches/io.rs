//! Record reading and result writing on generated data, in memory (so the
//! numbers are the parser's, not the disk's): MB/s and records/s.

use std::hint::black_box;
use std::io::{Cursor, Write};
use std::sync::Arc;

use batch_prediction::DataFormat;
use batch_prediction::record::{
    CsvResultWriter, InstanceReader, JsonLinesWriter, RawReader, RawRecord, ReadOptions,
    TfRecordWriter,
};
use criterion::{Criterion, Throughput};
use serde_json::{Value, json};

const RECORDS: usize = 50_000;

/// `{"key": N, "x": [4 floats]}` lines, like the peers' benchmark instances.
fn json_lines() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..RECORDS {
        let f = i as f64;
        writeln!(
            out,
            "{}",
            json!({"key": i, "x": [f * 0.1, -2.3 + f, 1.25, 0.5 / (f + 1.0)]})
        )
        .unwrap();
    }
    out
}

fn tfrecords(lines: &[u8]) -> Vec<u8> {
    let mut w = TfRecordWriter::new(Vec::new());
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        w.write(line).unwrap();
    }
    w.into_inner()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn count(format: DataFormat, data: &[u8]) -> usize {
    let reader = InstanceReader::new(
        format,
        "bench",
        Box::new(Cursor::new(data.to_vec())),
        ReadOptions::default(),
    )
    .unwrap();
    let mut n = 0;
    for item in reader {
        black_box(item.unwrap());
        n += 1;
    }
    n
}

fn raw(format: DataFormat, data: &Arc<[u8]>) -> RawReader {
    let source = Box::new(Cursor::new(Arc::clone(data)));
    RawReader::new(format, "bench", source, ReadOptions::default()).unwrap()
}

/// Frames every record without decoding it, one call per record, into a
/// buffer kept from run to run (so that the numbers are the reader's, not
/// the allocator's).
fn frame_one_by_one(format: DataFormat, data: &Arc<[u8]>, buf: &mut Vec<u8>) -> usize {
    let mut reader = raw(format, data);
    let mut n = 0;
    buf.clear();
    while let Some(item) = reader.read_into(buf) {
        item.unwrap();
        n += 1;
        if buf.len() > 1 << 20 {
            black_box(&buf);
            buf.clear();
        }
    }
    n
}

/// Frames every record without decoding it, up to 1024 per call.
fn frame_many(
    format: DataFormat,
    data: &Arc<[u8]>,
    buf: &mut Vec<u8>,
    records: &mut Vec<RawRecord>,
) -> usize {
    let mut reader = raw(format, data);
    let mut n = 0;
    buf.clear();
    records.clear();
    while let Some(item) = reader.read_many(buf, records, 1024) {
        n += item.unwrap();
        if buf.len() > 1 << 20 {
            black_box((&buf, &records));
            buf.clear();
            records.clear();
        }
    }
    n
}

pub fn define(c: &mut Criterion) {
    let lines = json_lines();
    let records = tfrecords(&lines);
    let gz = gzip(&records);
    let mut group = c.benchmark_group("io");
    group.sample_size(20);
    for (name, format, data) in [
        ("read_json", DataFormat::Json, &lines),
        ("read_text", DataFormat::Text, &lines),
        ("read_tfrecord", DataFormat::TfRecord, &records),
        ("read_tfrecord_gzip", DataFormat::TfRecordGzip, &gz),
    ] {
        // Bytes of the uncompressed records, so MB/s compare across formats.
        let bytes = if format == DataFormat::TfRecordGzip {
            records.len()
        } else {
            data.len()
        };
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("{name}_bytes"), |b| {
            b.iter(|| assert_eq!(count(format, data), RECORDS))
        });
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_function(format!("{name}_records"), |b| {
            b.iter(|| assert_eq!(count(format, data), RECORDS))
        });
    }
    // Framing alone (the executor's framing thread): per call, and in runs.
    group.throughput(Throughput::Elements(RECORDS as u64));
    let (mut buf, mut framed) = (Vec::with_capacity(2 << 20), Vec::with_capacity(2048));
    for (name, format, data) in [
        ("json", DataFormat::Json, &lines),
        ("tfrecord", DataFormat::TfRecord, &records),
    ] {
        let data: Arc<[u8]> = Arc::from(data.as_slice());
        group.bench_function(format!("frame_{name}_read_into"), |b| {
            b.iter(|| assert_eq!(frame_one_by_one(format, &data, &mut buf), RECORDS))
        });
        group.bench_function(format!("frame_{name}_read_many"), |b| {
            b.iter(|| assert_eq!(frame_many(format, &data, &mut buf, &mut framed), RECORDS))
        });
    }
    let predictions: Vec<Value> = (0..RECORDS)
        .map(|i| json!({"key": i, "scores": [0.25, 0.75], "label": "cat"}))
        .collect();
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("write_json_records", |b| {
        b.iter(|| {
            let mut w = JsonLinesWriter::new(Vec::with_capacity(4 << 20));
            for p in &predictions {
                w.write(black_box(p)).unwrap();
            }
            assert_eq!(w.lines(), RECORDS as u64);
            w.into_inner()
        })
    });
    let header: Vec<String> = ["key", "scores", "label"].map(String::from).to_vec();
    group.bench_function("write_csv_records", |b| {
        b.iter(|| {
            let mut w = CsvResultWriter::new(Vec::with_capacity(4 << 20), header.clone());
            for p in &predictions {
                w.write(black_box(p)).unwrap();
            }
            assert_eq!(w.rows(), RECORDS as u64);
            w.into_inner().unwrap()
        })
    });
    group.finish();
}
