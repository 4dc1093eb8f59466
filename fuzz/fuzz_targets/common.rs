//! Shared by the reader targets: read everything, check the accounting.

use batch_prediction::testing::ShortReads;
use batch_prediction::{DataFormat};
use batch_prediction::record::{InstanceReader, Position, RawReader, ReadOptions};

/// What a raw reader gave: a record, or an error's text, place, fatality and bytes.
#[derive(Debug, PartialEq)]
enum Item {
    Record(Position, Vec<u8>),
    Error(String, Position, bool, Option<Vec<u8>>),
}

/// Checks that `RawReader::read_many` (records framed straight from the
/// read buffer) gives what `read_into` gives one record at a time, with the
/// source handing out its bytes in pieces sized by the input's first byte.
pub fn read_many_matches_read_into(format: DataFormat, data: &[u8]) {
    let piece = 1 + usize::from(data.first().copied().unwrap_or(0)) % 64;
    let max = 1 + usize::from(data.last().copied().unwrap_or(0)) % 5;
    let reader = || {
        // Records straddle the end of what the reader has buffered.
        let source = ShortReads::new(std::io::Cursor::new(data.to_vec()), piece);
        let options = ReadOptions::default().with_max_record_bytes(64);
        RawReader::new(format, "fuzz", Box::new(source), options).expect("an input format")
    };
    let mut one = Vec::new();
    let (mut r, mut buf) = (reader(), Vec::new());
    while let Some(item) = r.read_into(&mut buf) {
        one.push(match item {
            Ok(position) => Item::Record(position, std::mem::take(&mut buf)),
            Err(e) => Item::Error(e.to_string(), e.position, e.is_fatal(), e.raw),
        });
    }
    let mut many = Vec::new();
    let (mut r, mut buf, mut records) = (reader(), Vec::new(), Vec::new());
    while let Some(n) = r.read_many(&mut buf, &mut records, max) {
        match n {
            Ok(n) => {
                assert!((1..=max).contains(&n) && n == records.len());
                for rec in records.drain(..) {
                    many.push(Item::Record(rec.position, buf[rec.range].to_vec()));
                }
                buf.clear();
            }
            Err(e) => many.push(Item::Error(e.to_string(), e.position, e.is_fatal(), e.raw)),
        }
    }
    assert_eq!(many, one, "read_many and read_into differ");
}

/// Reads `data` in `format` with a small record limit and checks that every
/// record is accounted for, numbered in order, and that only the last error
/// may be fatal.
pub fn read_all(format: DataFormat, data: &[u8]) {
    let options = ReadOptions::default().with_max_record_bytes(4096);
    let reader = InstanceReader::new(
        format,
        "fuzz",
        Box::new(std::io::Cursor::new(data.to_vec())),
        options,
    )
    .expect("an input format");
    let mut last_byte = 0;
    let mut fatal_seen = false;
    for (i, item) in reader.enumerate() {
        assert!(!fatal_seen, "a record after a fatal error");
        let position = match &item {
            Ok(record) => {
                let _ = record.instance.to_json();
                record.position
            }
            Err(e) => {
                fatal_seen = e.is_fatal();
                let _ = (e.to_string(), e.raw_json());
                e.position
            }
        };
        assert_eq!(position.record, i as u64, "records numbered in order");
        assert!(position.byte >= last_byte, "positions move forward");
        last_byte = position.byte;
        if format != DataFormat::TfRecordGzip {
            assert!(
                position.byte <= data.len() as u64,
                "position inside the input"
            );
        }
    }
}
