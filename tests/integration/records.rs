//! Record readers on TensorFlow-written fixtures and on damaged copies of
//! them: every record is an instance or a located error, never lost.

use std::io::Write;

use base64::Engine as _;
use batch_prediction::record::{
    InstanceReader, ReadOptions, Record, RecordError, RecordErrorKind, TfRecordWriter,
    masked_crc32c,
};
use batch_prediction::{DataFormat, Instance};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::data_path(&format!("tensorflow/{name}"))).unwrap()
}

/// The records TensorFlow's `tf.data.TFRecordDataset` reads back from the fixtures.
fn tensorflow_records() -> Vec<Vec<u8>> {
    let doc: Value = serde_json::from_slice(&fixture("records.json")).unwrap();
    doc["records_b64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        })
        .collect()
}

fn read_with(
    format: DataFormat,
    bytes: Vec<u8>,
    options: ReadOptions,
) -> Vec<Result<Record, RecordError>> {
    let reader = InstanceReader::new(
        format,
        "input",
        Box::new(std::io::Cursor::new(bytes)),
        options,
    )
    .unwrap();
    let items: Vec<_> = reader.collect();
    // Accounting: positions are in order and records are numbered without gaps.
    for (i, item) in items.iter().enumerate() {
        let position = match item {
            Ok(r) => r.position,
            Err(e) => e.position,
        };
        assert_eq!(position.record, i as u64, "record numbering");
    }
    // Only the last item may be fatal.
    for item in items.iter().rev().skip(1) {
        assert!(
            !item.as_ref().is_err_and(RecordError::is_fatal),
            "a fatal error ends the file"
        );
    }
    items
}

fn read(format: DataFormat, bytes: Vec<u8>) -> Vec<Result<Record, RecordError>> {
    read_with(format, bytes, ReadOptions::default())
}

fn bytes_of(items: &[Result<Record, RecordError>]) -> Vec<Vec<u8>> {
    items
        .iter()
        .filter_map(|r| match r {
            Ok(Record {
                instance: Instance::Bytes(b),
                ..
            }) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn errors(items: &[Result<Record, RecordError>]) -> Vec<&RecordError> {
    items.iter().filter_map(|r| r.as_ref().err()).collect()
}

/// Byte offsets of each record's frame in a plain TFRecord file.
fn frame_offsets(file: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at < file.len() {
        offsets.push(at);
        let len = u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    offsets
}

fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&masked_crc32c(&(data.len() as u64).to_le_bytes()).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn tfrecord_fixtures_read_as_tensorflow_reads_them() {
    let want = tensorflow_records();
    assert_eq!(want.len(), 100);
    for (format, file) in [
        (DataFormat::TfRecord, "examples.tfrecord"),
        (DataFormat::TfRecordGzip, "examples.tfrecord.gz"),
    ] {
        let items = read(format, fixture(file));
        assert!(errors(&items).is_empty(), "{file}: {:?}", errors(&items));
        assert_eq!(bytes_of(&items), want, "{file}");
    }
}

#[test]
fn json_fixture_reads_every_instance() {
    let text = String::from_utf8(fixture("examples.jsonl")).unwrap();
    let items = read(DataFormat::Json, text.clone().into_bytes());
    assert_eq!(items.len(), 100);
    for (i, (item, line)) in items.iter().zip(text.lines()).enumerate() {
        let record = item.as_ref().unwrap();
        assert_eq!(
            record.instance,
            Instance::Json(serde_json::from_str(line).unwrap())
        );
        assert_eq!(record.position.line, Some(i as u64 + 1));
        // Floats come back as the exact doubles Python wrote.
        assert_eq!(
            serde_json::to_string(&record.instance.to_json()).unwrap(),
            line.replace(' ', "")
        );
    }
}

#[test]
fn multi_member_gzip_is_one_stream() {
    let plain = fixture("examples.tfrecord");
    let cut = frame_offsets(&plain)[37];
    let mut two_members = gzip(&plain[..cut]);
    two_members.extend(gzip(&plain[cut..]));
    let items = read(DataFormat::TfRecordGzip, two_members);
    assert_eq!(bytes_of(&items), tensorflow_records());
}

/// The reader checks the data checksums of the frames whole in its buffer
/// four at a time: a bad one is found in whichever place of its group it
/// sits, for records shorter and longer than a word.
#[test]
fn a_bad_data_checksum_is_found_in_every_place_of_a_group() {
    let records: Vec<Vec<u8>> = (0..11u8)
        .map(|i| (0..(3 + 9 * usize::from(i))).map(|b| b as u8 ^ i).collect())
        .collect();
    let mut w = TfRecordWriter::new(Vec::new());
    for r in &records {
        w.write(r).unwrap();
    }
    let clean = w.into_inner();
    let offsets = frame_offsets(&clean);
    for bad in 0..records.len() {
        let mut file = clean.clone();
        file[offsets[bad] + 12 + records[bad].len() - 1] ^= 0x01;
        let mut reader = batch_prediction::record::RawReader::new(
            DataFormat::TfRecord,
            "input",
            Box::new(std::io::Cursor::new(file)),
            ReadOptions::default(),
        )
        .unwrap();
        let (mut buf, mut got, mut flagged) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(item) = reader.read_many(&mut buf, &mut got, 1024) {
            if let Err(e) = item {
                assert!(matches!(e.kind, RecordErrorKind::DataChecksum { .. }));
                flagged.push((e.position.record, e.position.byte));
            }
        }
        assert_eq!(flagged, [(bad as u64, offsets[bad] as u64)]);
        let good: Vec<&[u8]> = got.iter().map(|r| &buf[r.range.clone()]).collect();
        let mut want: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        want.remove(bad);
        assert_eq!(good, want, "record {bad} flipped");
    }
}

#[test]
fn flipped_data_byte_is_one_bad_record_and_reading_goes_on() {
    let mut file = fixture("examples.tfrecord");
    let offsets = frame_offsets(&file);
    file[offsets[5] + 12 + 3] ^= 0x40;
    let items = read(DataFormat::TfRecord, file);
    assert_eq!(items.len(), 100);
    let errs = errors(&items);
    assert_eq!(errs.len(), 1);
    let e = errs[0];
    assert!(!e.is_fatal());
    assert_eq!((e.position.record, e.position.byte), (5, offsets[5] as u64));
    assert!(matches!(e.kind, RecordErrorKind::DataChecksum { .. }));
    assert!(e.to_string().starts_with("input: record 5 at byte "), "{e}");
    assert!(
        e.message().starts_with("data checksum mismatch: stored 0x"),
        "{}",
        e.message()
    );
    let mut damaged = tensorflow_records()[5].clone();
    damaged[3] ^= 0x40;
    assert_eq!(
        e.raw.as_deref(),
        Some(&damaged[..]),
        "the bad record is kept for the error file"
    );
    let mut want = tensorflow_records();
    want.remove(5);
    assert_eq!(bytes_of(&items), want);
}

/// A length near `u64::MAX` with a good checksum, and no size limit: the
/// frame is truncated, not an overflow or a huge allocation.
#[test]
fn huge_length_without_a_limit_is_a_truncated_frame() {
    let mut file = Vec::new();
    for len in [u64::MAX, u64::MAX - 3] {
        file.clear();
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&masked_crc32c(&len.to_le_bytes()).to_le_bytes());
        file.extend_from_slice(b"some data");
        let options = ReadOptions::default().with_max_record_bytes(usize::MAX);
        let mut reader = batch_prediction::record::RawReader::new(
            DataFormat::TfRecord,
            "f",
            Box::new(std::io::Cursor::new(file.clone())),
            options,
        )
        .unwrap();
        let (mut buf, mut records) = (Vec::new(), Vec::new());
        let e = reader
            .read_many(&mut buf, &mut records, 8)
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e.kind, RecordErrorKind::Truncated { unread: 21 }),
            "{len}: {e}"
        );
        assert!(e.is_fatal());
        assert!(reader.read_many(&mut buf, &mut records, 8).is_none());
    }
}

/// Frame headers equal to one already verified are not checksummed again:
/// a header that differs from it in any byte, the checksum included, is.
#[test]
fn damaged_header_after_good_ones_of_the_same_length_is_caught() {
    let frames = |damage: &dyn Fn(&mut Vec<u8>)| {
        let mut w = TfRecordWriter::new(Vec::new());
        for data in [b"aaaa", b"bbbb", b"cccc", b"dddd"] {
            w.write(data).unwrap();
        }
        let mut file = w.into_inner();
        damage(&mut file);
        read(DataFormat::TfRecord, file)
    };
    let frame = 16 + 4;
    // A bit of the third record's stored length checksum, then a bit of
    // its length's top byte: each makes a header that differs from the
    // good ones in that byte alone.
    for (what, byte) in [("checksum", 2 * frame + 8), ("length", 2 * frame + 7)] {
        let items = frames(&|file| file[byte] ^= 0x10);
        assert_eq!(items.len(), 3, "{what}");
        assert_eq!(
            bytes_of(&items),
            [b"aaaa".to_vec(), b"bbbb".to_vec()],
            "{what}"
        );
        let e = items[2].as_ref().unwrap_err();
        assert!(
            matches!(e.kind, RecordErrorKind::LengthChecksum { unread: 40, .. }),
            "{what}: {e}"
        );
        assert_eq!(e.position.byte, 2 * frame as u64, "{what}");
    }
    let clean = frames(&|_| {});
    assert_eq!(bytes_of(&clean).len(), 4);
}

#[test]
fn flipped_length_byte_ends_the_file_with_offset_and_unread_bytes() {
    for format in [DataFormat::TfRecord, DataFormat::TfRecordGzip] {
        let mut plain = fixture("examples.tfrecord");
        let offsets = frame_offsets(&plain);
        plain[offsets[5]] ^= 0x01;
        let total = plain.len();
        let bytes = if format == DataFormat::TfRecordGzip {
            gzip(&plain)
        } else {
            plain
        };
        let items = read(format, bytes);
        assert_eq!(items.len(), 6, "{format}");
        assert_eq!(bytes_of(&items), tensorflow_records()[..5]);
        let e = items[5].as_ref().unwrap_err();
        assert!(e.is_fatal());
        let unread = (total - offsets[5]) as u64;
        match e.kind {
            RecordErrorKind::LengthChecksum { unread: u, .. } => assert_eq!(u, unread),
            ref other => panic!("{other:?}"),
        }
        assert_eq!(e.position.byte, offsets[5] as u64);
        assert!(
            e.message()
                .ends_with(&format!("the framing is lost, {unread} bytes left unread")),
            "{}",
            e.message()
        );
    }
}

#[test]
fn truncation_anywhere_in_a_frame_is_fatal_with_the_partial_size() {
    let plain = fixture("examples.tfrecord");
    let offsets = frame_offsets(&plain);
    let start = offsets[9];
    let len = offsets[10] - start;
    // In the header, in the data, in the footer.
    for cut in [5, 12, 20, len - 1] {
        for format in [DataFormat::TfRecord, DataFormat::TfRecordGzip] {
            let partial = &plain[..start + cut];
            let bytes = if format == DataFormat::TfRecordGzip {
                gzip(partial)
            } else {
                partial.to_vec()
            };
            let items = read(format, bytes);
            assert_eq!(
                bytes_of(&items),
                tensorflow_records()[..9],
                "{format} cut {cut}"
            );
            let e = items.last().unwrap().as_ref().unwrap_err();
            assert_eq!(
                e.kind,
                RecordErrorKind::Truncated { unread: cut as u64 },
                "{format} cut {cut}"
            );
            assert_eq!((e.position.record, e.position.byte), (9, start as u64));
            assert_eq!(
                e.message(),
                format!("file ends inside a record; {cut} bytes left unread")
            );
        }
    }
}

#[test]
fn truncated_or_corrupt_gzip_is_a_located_fatal_error() {
    let gz = fixture("examples.tfrecord.gz");
    // Cut the compressed stream: the records before the cut still come through.
    let items = read(DataFormat::TfRecordGzip, gz[..gz.len() / 2].to_vec());
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert!(last.is_fatal(), "{last}");
    let good = bytes_of(&items);
    assert!(!good.is_empty() && good.len() < 100);
    assert_eq!(good, tensorflow_records()[..good.len()]);
    assert!(
        matches!(
            last.kind,
            RecordErrorKind::Gzip(_) | RecordErrorKind::Truncated { .. }
        ),
        "{last}"
    );
    // A damaged header: the first read fails.
    let mut bad = gz.clone();
    bad[0] = b'X';
    let items = read(DataFormat::TfRecordGzip, bad);
    assert_eq!(items.len(), 1);
    let e = items[0].as_ref().unwrap_err();
    assert!(matches!(e.kind, RecordErrorKind::Gzip(_)), "{e}");
    assert!(
        e.message()
            .starts_with("corrupt or truncated gzip stream: "),
        "{}",
        e.message()
    );
    assert!(e.message().contains("compressed bytes)"), "{}", e.message());
    // Corrupt deflate data in the middle: whatever is read before is good, and the file ends in a fatal error.
    let mut bad = gz.clone();
    let mid = gz.len() / 2;
    for b in &mut bad[mid..mid + 16] {
        *b ^= 0xA5;
    }
    let items = read(DataFormat::TfRecordGzip, bad);
    let good = bytes_of(&items);
    assert_eq!(good, tensorflow_records()[..good.len()]);
    assert!(!errors(&items).is_empty(), "damage is reported");
}

#[test]
fn empty_files_have_no_records() {
    for format in [
        DataFormat::Json,
        DataFormat::Text,
        DataFormat::TfRecord,
        DataFormat::TfRecordGzip,
    ] {
        assert!(read(format, Vec::new()).is_empty(), "{format}");
    }
    assert!(read(DataFormat::TfRecordGzip, gzip(b"")).is_empty());
}

#[test]
fn oversized_records_are_skipped_not_stored() {
    let options = ReadOptions::default().with_max_record_bytes(64);
    let mut file = frame(&[1u8; 10]);
    file.extend(frame(&[2u8; 65]));
    file.extend(frame(&[3u8; 64]));
    let items = read_with(DataFormat::TfRecord, file, options);
    assert_eq!(bytes_of(&items), [vec![1u8; 10], vec![3u8; 64]]);
    let e = errors(&items)[0];
    assert!(!e.is_fatal());
    assert_eq!(
        e.kind,
        RecordErrorKind::TooLarge {
            size: 65,
            limit: 64
        }
    );
    assert_eq!(e.position.byte, 26);

    // A hostile length with a valid length checksum: no allocation of that size,
    // and the file ends truncated.
    let huge: u64 = 1 << 50;
    let mut file = huge.to_le_bytes().to_vec();
    file.extend(masked_crc32c(&huge.to_le_bytes()).to_le_bytes());
    file.extend([0u8; 100]);
    let items = read(DataFormat::TfRecord, file);
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().unwrap_err().kind,
        RecordErrorKind::Truncated { unread: 112 }
    );

    // Lines.
    let text = format!("{{\"a\": 1}}\n\"{}\"\r\n[2]", "x".repeat(100));
    let items = read_with(DataFormat::Json, text.into_bytes(), options);
    assert_eq!(items.len(), 3);
    let e = items[1].as_ref().unwrap_err();
    assert_eq!(
        e.kind,
        RecordErrorKind::TooLarge {
            size: 103,
            limit: 64
        }
    );
    assert_eq!(
        e.to_string(),
        "input: line 2: record of 103 bytes is over the limit of 64 bytes"
    );
    assert_eq!(
        items[2].as_ref().unwrap().instance,
        Instance::Json(json!([2]))
    );
}

#[test]
fn json_lines_endings_blanks_and_errors() {
    let text = b"{\"a\": 1}\r\n\n   \n{bad\n\xff\xfe\n\"ok\"\r\n{\"b64\": \"aGk=\"}\n{\"b64\": \"%%\"}\n{\"b64\": \"aGk=\", \"k\": 1}\n[1,\r2]";
    let items = read(DataFormat::Json, text.to_vec());
    let shown: Vec<String> = items
        .iter()
        .map(|r| match r {
            Ok(rec) => format!(
                "{} ok {}",
                rec.position.line.unwrap(),
                serde_json::to_string(&rec.instance.to_json()).unwrap()
            ),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "1 ok {\"a\":1}",
            "input: line 4: invalid JSON: key must be a string at line 1 column 2",
            "input: line 5: invalid UTF-8 at byte 0 of the line",
            "6 ok \"ok\"",
            "7 ok {\"b64\":\"aGk=\"}",
            "input: line 8: invalid base64 in {\"b64\": …} instance: \"%%\"",
            "9 ok {\"b64\":\"aGk=\",\"k\":1}",
            "10 ok [1,2]",
        ]
    );
    assert_eq!(
        items[4].as_ref().unwrap().instance,
        Instance::Bytes(b"hi".to_vec())
    );
    // The raw line is kept for the error file: text as a string, other bytes as b64.
    assert_eq!(errors(&items)[0].raw_json(), json!("{bad"));
    assert_eq!(errors(&items)[1].raw_json(), json!({"b64": "//4="}));
    // Byte offsets point at each line's start.
    assert_eq!(items[1].as_ref().unwrap_err().position.byte, 15);
}

#[test]
fn text_lines_are_strings_and_empty_lines_count() {
    let items = read(
        DataFormat::Text,
        b"first\r\n\nthird \xc3\xa9\n\xff\nlast".to_vec(),
    );
    let shown: Vec<Result<Value, String>> = items
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|rec| rec.instance.to_json())
                .map_err(|e| e.to_string())
        })
        .collect();
    assert_eq!(
        shown,
        [
            Ok(json!("first")),
            Ok(json!("")),
            Ok(json!("third é")),
            Err("input: line 4: invalid UTF-8 at byte 0 of the line".to_owned()),
            Ok(json!("last")),
        ]
    );
    // A JSON-looking TEXT line stays a string.
    let items = read(DataFormat::Text, b"{\"a\": 1}\n".to_vec());
    assert_eq!(
        items[0].as_ref().unwrap().instance,
        Instance::Json(json!("{\"a\": 1}"))
    );
}

#[test]
fn csv_is_not_an_input_format() {
    let err = InstanceReader::new(
        DataFormat::Csv,
        "x",
        Box::new(std::io::empty()),
        ReadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CSV is not an input format: expected one of JSON, TEXT, TF_RECORD, TF_RECORD_GZIP"
    );
}

#[test]
fn tfrecord_writer_writes_what_tensorflow_writes() {
    let mut w = batch_prediction::record::TfRecordWriter::new(Vec::new());
    for record in tensorflow_records() {
        w.write(&record).unwrap();
    }
    assert_eq!(
        w.into_inner(),
        fixture("examples.tfrecord"),
        "byte for byte"
    );
}

/// Results written through a storage's atomic commit read back as the same
/// instances; an uncommitted writer leaves nothing.
#[test]
fn results_written_through_storage_read_back() {
    use batch_prediction::record::{
        ERRORS_STATS_FILE_PREFIX, ErrorStats, JsonLinesWriter, RESULTS_FILE_PREFIX, shard_file_name,
    };
    use batch_prediction::storage::join_location;
    use batch_prediction::{InMemoryStorage, Storage, StorageExt};
    let storage = InMemoryStorage::new();
    let results = join_location("gs://b/out", &shard_file_name(RESULTS_FILE_PREFIX, 0, 2));
    assert_eq!(results, "gs://b/out/prediction.results-00000-of-00002");
    let predictions: Vec<Value> = (0..100)
        .map(|i| json!({"key": i, "p": [0.5, 0.25]}))
        .collect();
    let mut w = JsonLinesWriter::new(storage.create(&results).unwrap());
    for p in &predictions {
        w.write(p).unwrap();
    }
    assert!(storage.head(&results).is_err(), "not visible before commit");
    w.into_inner().commit().unwrap();
    let items = read(DataFormat::Json, storage.read_bytes(&results).unwrap());
    let back: Vec<Value> = items
        .into_iter()
        .map(|r| r.unwrap().instance.to_json())
        .collect();
    assert_eq!(back, predictions);

    let mut stats = ErrorStats::default();
    stats.add("Unexpected tensor name: x", 3);
    let location = join_location(
        "gs://b/out",
        &shard_file_name(ERRORS_STATS_FILE_PREFIX, 1, 2),
    );
    storage.put_bytes(&location, &stats.to_bytes()).unwrap();
    assert_eq!(
        storage.read_bytes(&location).unwrap(),
        b"('Unexpected tensor name: x', 3)\n"
    );
}
