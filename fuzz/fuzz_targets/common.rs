//! Shared by the reader targets: read everything, check the accounting.

use batch_prediction::{DataFormat, InstanceReader, ReadOptions};

/// Reads `data` in `format` with a small record limit and checks that every
/// record is accounted for, numbered in order, and that only the last error
/// may be fatal.
pub fn read_all(format: DataFormat, data: &[u8]) {
    let options = ReadOptions::default().with_max_record_bytes(4096);
    let reader = InstanceReader::new(format, "fuzz", Box::new(std::io::Cursor::new(data.to_vec())), options)
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
            assert!(position.byte <= data.len() as u64, "position inside the input");
        }
    }
}
