//! Reading speed of each input format against the machine's plain read of the
//! same file, as ratios.
//!
//! ```text
//! cargo run --release --example io_throughput -- [RECORDS]   # default 500000
//! ```
//!
//! Generates `{"key": N, "x": [4 floats]}` JSON lines, the same instances as
//! TFRecords, and those gzip-compressed, in a temporary directory. Then, in
//! alternating rounds so that machine drift cancels out, it times `cat FILE >
//! /dev/null` (and `gzip -dc FILE > /dev/null` for the gzip file) and this
//! crate reading every instance of the same file through `LocalStorage`, and
//! prints the medians of 5 rounds. Files are read once first, so all runs
//! read from the page cache.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batch_prediction::record::{InstanceReader, ReadOptions, TfRecordWriter};
use batch_prediction::{DataFormat, LocalStorage, Storage};
use serde_json::json;

const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_command(program: &str, args: &[&str], file: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} failed");
    start.elapsed()
}

fn time_reader(format: DataFormat, file: &Path, expect: usize) -> Duration {
    let storage = LocalStorage::new();
    let location = file.to_str().expect("UTF-8 temp path");
    let start = Instant::now();
    let reader = InstanceReader::new(
        format,
        location,
        storage.open(location).expect("open"),
        ReadOptions::default(),
    )
    .expect("input format");
    let mut n = 0;
    for item in reader {
        std::hint::black_box(item.expect("clean generated data"));
        n += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(n, expect, "every record read");
    elapsed
}

fn main() {
    let records: usize = std::env::args()
        .nth(1)
        .map_or(500_000, |s| s.parse().expect("RECORDS is a number"));
    let dir = std::env::temp_dir().join(format!("bp-io-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let jsonl = dir.join("instances.jsonl");
    let tfrecord = dir.join("instances.tfrecord");
    let gz = dir.join("instances.tfrecord.gz");
    {
        let mut lines = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
        let mut tf = TfRecordWriter::new(std::io::BufWriter::new(
            std::fs::File::create(&tfrecord).unwrap(),
        ));
        let mut tf_gz = TfRecordWriter::new(flate2::write::GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&gz).unwrap()),
            flate2::Compression::default(),
        ));
        for i in 0..records {
            let f = i as f64;
            let line =
                json!({"key": i, "x": [f * 0.1, -2.3 + f, 1.25, 0.5 / (f + 1.0)]}).to_string();
            writeln!(lines, "{line}").unwrap();
            tf.write(line.as_bytes()).unwrap();
            tf_gz.write(line.as_bytes()).unwrap();
        }
        lines.flush().unwrap();
        tf.into_inner().flush().unwrap();
        tf_gz.into_inner().finish().unwrap().flush().unwrap();
    }

    println!(
        "{records} records; medians of {ROUNDS} alternating rounds; MB = 10^6 bytes of the file as stored"
    );
    println!(
        "{:<22} {:>10} {:>11} {:>13} {:>11} {:>8}",
        "case", "file MB", "ours MB/s", "ours rec/s", "base MB/s", "ratio"
    );
    let cases: [(&str, DataFormat, &Path, &str, &[&str]); 5] = [
        ("JSON vs cat", DataFormat::Json, &jsonl, "cat", &[]),
        ("TEXT vs cat", DataFormat::Text, &jsonl, "cat", &[]),
        (
            "TF_RECORD vs cat",
            DataFormat::TfRecord,
            &tfrecord,
            "cat",
            &[],
        ),
        (
            "TF_RECORD_GZIP vs cat",
            DataFormat::TfRecordGzip,
            &gz,
            "cat",
            &[],
        ),
        (
            "TF_RECORD_GZIP vs gzip",
            DataFormat::TfRecordGzip,
            &gz,
            "gzip",
            &["-dc"],
        ),
    ];
    for (name, format, file, program, args) in cases {
        let size = std::fs::metadata(file).unwrap().len() as f64 / 1e6;
        time_command(program, args, file); // warm the page cache
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(time_command(program, args, file));
            ours.push(time_reader(format, file, records));
        }
        let (ours, base) = (median(ours).as_secs_f64(), median(base).as_secs_f64());
        println!(
            "{name:<22} {size:>10.1} {:>11.1} {:>13.0} {:>11.1} {:>8.3}",
            size / ours,
            records as f64 / ours,
            size / base,
            base / ours
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
