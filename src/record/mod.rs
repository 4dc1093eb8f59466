//! Reading instances and writing results: the record formats of a job.
//!
//! Readers stream one file at a time in bounded memory and account for every
//! record: each is either an [`Instance`] or a [`RecordError`] with its
//! [`Position`]; nothing is dropped silently.
//!
//! | `dataFormat` | a record is | an instance is |
//! |---|---|---|
//! | `JSON` | a line (LF or CRLF; the last may lack a newline; blank lines skipped) | the line's JSON value; `{"b64": "…"}` alone decodes to bytes |
//! | `TEXT` | a line, as for JSON; an empty line is a record | the line as a JSON string |
//! | `TF_RECORD` | a TFRecord frame, both CRC-32C checksums verified | the record's bytes |
//! | `TF_RECORD_GZIP` | the same inside a gzip stream (several members allowed) | the record's bytes |
//!
//! A damaged record (a malformed line, invalid UTF-8, a bad data checksum, a
//! record over the size limit) is a record-level error and the file goes on.
//! Damage to the framing (a bad length checksum, a truncated file, a corrupt
//! gzip stream, an I/O error) is a *fatal* error that ends the file: it gives
//! the byte offset and how many bytes were left unread.

mod crc;
mod lines;
mod output;
mod tfrecord;

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

pub use lines::LineReader;
pub use output::{
    CSV_HEADER_FILE, CsvResultWriter, CsvRowError, CsvWriteError, ERRORS_FILE_PREFIX,
    ERRORS_STATS_FILE_PREFIX, ErrorRecordWriter, ErrorStats, JsonLinesWriter, RESULTS_FILE_PREFIX,
    csv_header_bytes, shard_file_name,
};
pub use tfrecord::{TfRecordReader, TfRecordWriter, masked_crc32c, masked_crc32c_4};

use crate::model::DataFormat;

/// The default limit on one record's size: 64 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 20;

/// One input instance, as the predictor receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Instance {
    /// A JSON value (a JSON line, or a TEXT line as a string).
    Json(Value),
    /// Bytes: a TFRecord record, or a JSON line that was exactly `{"b64": "…"}`.
    Bytes(Vec<u8>),
}

impl Instance {
    /// The instance as JSON, bytes as `{"b64": "…"}` (the API's convention).
    ///
    /// ```
    /// use batch_prediction::Instance;
    /// use serde_json::json;
    ///
    /// assert_eq!(Instance::Bytes(b"hi".to_vec()).to_json(), json!({"b64": "aGk="}));
    /// assert_eq!(Instance::Json(json!([1, 2])).to_json(), json!([1, 2]));
    /// ```
    pub fn to_json(&self) -> Value {
        match self {
            Instance::Json(v) => v.clone(),
            Instance::Bytes(b) => bytes_to_json(b),
        }
    }

    /// The instance as JSON, without a copy: bytes as `{"b64": …}`.
    pub fn into_json(self) -> Value {
        match self {
            Instance::Json(v) => v,
            Instance::Bytes(b) => bytes_to_json(&b),
        }
    }

    /// An instance from a parsed JSON line: an object whose only key is
    /// `"b64"` with a string value becomes the decoded bytes.
    ///
    /// # Errors
    /// A message when the `b64` value is not valid base64.
    pub fn from_json(value: Value) -> Result<Instance, String> {
        if let Value::Object(map) = &value
            && map.len() == 1
            && let Some(Value::String(s)) = map.get("b64")
        {
            return crate::model::wire::decode_base64(s)
                .map(Instance::Bytes)
                .ok_or_else(|| {
                    format!(
                        "invalid base64 in {{\"b64\": …}} instance: {:?}",
                        shorten(s)
                    )
                });
        }
        Ok(Instance::Json(value))
    }
}

/// `{"b64": "…"}` for bytes.
pub fn bytes_to_json(bytes: &[u8]) -> Value {
    json!({ "b64": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(40).collect();
        format!("{cut}…")
    }
}

/// Where a record is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// The record's index in the file, from 0, counting every record the
    /// reader saw (good or bad; blank JSON lines are not records). In a
    /// byte range of a split file (see `ExecutorConfig::split_bytes`), from
    /// the range's start.
    pub record: u64,
    /// The 1-based line number, for JSON and TEXT files; `None` in a byte
    /// range of a split file that does not start at byte 0, where the lines
    /// before were not read (`byte` still says where the record is).
    pub line: Option<u64>,
    /// The offset of the record's first byte (in the uncompressed stream for gzip).
    pub byte: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}"),
            None => write!(f, "record {} at byte {}", self.record, self.byte),
        }
    }
}

/// What is wrong with a record, or with a file's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordErrorKind {
    /// A JSON line that does not parse.
    InvalidJson(String),
    /// A line that is not valid UTF-8.
    InvalidUtf8 {
        /// The offset in the line of the first invalid byte.
        column: usize,
    },
    /// A `{"b64": …}` instance that is not valid base64.
    InvalidBase64(String),
    /// A record larger than the reader's limit; it was skipped, not stored.
    TooLarge {
        /// The record's size in bytes.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A TFRecord whose data does not match its checksum.
    DataChecksum {
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the data read.
        computed: u32,
    },
    /// Fatal: a TFRecord whose length does not match its checksum; the framing is lost.
    LengthChecksum {
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the length read.
        computed: u32,
        /// Bytes from the record's start to the end of the file, not read as records.
        unread: u64,
    },
    /// Fatal: the file ends inside a record.
    Truncated {
        /// The bytes of the incomplete record.
        unread: u64,
    },
    /// Fatal: the gzip stream is corrupt or truncated.
    Gzip(String),
    /// Fatal: reading from the storage failed (not damage in the file).
    Io(String),
}

/// A record that could not become an instance, or damage that ends a file.
///
/// [`message`](RecordError::message) is the description without the
/// location, which is what error statistics group by; `Display` puts the
/// source and position in front:
/// `data/in.jsonl: line 3: invalid JSON: expected value at line 1 column 5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The file the record came from.
    pub source: Arc<str>,
    /// Where in the file.
    pub position: Position,
    /// What is wrong.
    pub kind: RecordErrorKind,
    /// The record's raw bytes, where they were read (for the error file).
    pub raw: Option<Vec<u8>>,
}

impl RecordError {
    /// Whether the error ends the file (the framing is lost); otherwise
    /// reading goes on with the next record.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            RecordErrorKind::LengthChecksum { .. }
                | RecordErrorKind::Truncated { .. }
                | RecordErrorKind::Gzip(_)
                | RecordErrorKind::Io(_)
        )
    }

    /// The description without the location.
    pub fn message(&self) -> String {
        match &self.kind {
            RecordErrorKind::InvalidJson(e) => format!("invalid JSON: {e}"),
            RecordErrorKind::InvalidUtf8 { column } => {
                format!("invalid UTF-8 at byte {column} of the line")
            }
            RecordErrorKind::InvalidBase64(e) => e.clone(),
            RecordErrorKind::TooLarge { size, limit } => {
                format!("record of {size} bytes is over the limit of {limit} bytes")
            }
            RecordErrorKind::DataChecksum { stored, computed } => {
                format!("data checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            RecordErrorKind::LengthChecksum {
                stored,
                computed,
                unread,
            } => format!(
                "length checksum mismatch: stored {stored:#010x}, computed {computed:#010x}; \
                 the framing is lost, {unread} bytes left unread"
            ),
            RecordErrorKind::Truncated { unread } => {
                format!("file ends inside a record; {unread} bytes left unread")
            }
            RecordErrorKind::Gzip(e) => format!("corrupt or truncated gzip stream: {e}"),
            RecordErrorKind::Io(e) => format!("read error: {e}"),
        }
    }

    /// The message without per-record details (columns, values), for
    /// grouping in `errors_stats`; [`message`](Self::message) keeps them.
    pub fn stats_message(&self) -> String {
        match &self.kind {
            RecordErrorKind::InvalidJson(e) => {
                // serde_json ends its messages with " at line L column C".
                let cut = e.rfind(" at line ").map_or(e.as_str(), |i| &e[..i]);
                format!("invalid JSON: {cut}")
            }
            RecordErrorKind::InvalidUtf8 { .. } => "invalid UTF-8".to_owned(),
            RecordErrorKind::InvalidBase64(_) => {
                "invalid base64 in {\"b64\": …} instance".to_owned()
            }
            RecordErrorKind::TooLarge { limit, .. } => {
                format!("record over the limit of {limit} bytes")
            }
            RecordErrorKind::DataChecksum { .. } => "data checksum mismatch".to_owned(),
            RecordErrorKind::LengthChecksum { .. } => {
                "length checksum mismatch: the framing is lost".to_owned()
            }
            RecordErrorKind::Truncated { .. } => "file ends inside a record".to_owned(),
            RecordErrorKind::Gzip(_) => "corrupt or truncated gzip stream".to_owned(),
            RecordErrorKind::Io(_) => "read error".to_owned(),
        }
    }

    /// The record as the error file shows it: a line as a string when it is
    /// UTF-8, else (and a TFRecord's data always) `{"b64": …}`; `null` when
    /// nothing was kept.
    pub fn raw_json(&self) -> Value {
        match &self.raw {
            None => Value::Null,
            Some(raw) => match std::str::from_utf8(raw) {
                Ok(s) if !matches!(self.kind, RecordErrorKind::DataChecksum { .. }) => {
                    Value::String(s.to_owned())
                }
                _ => bytes_to_json(raw),
            },
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.position, self.message())
    }
}

impl std::error::Error for RecordError {}

/// Settings for reading records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// The largest record accepted; larger ones are record-level errors.
    pub max_record_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl ReadOptions {
    /// Sets [`max_record_bytes`](Self::max_record_bytes).
    #[must_use]
    pub fn with_max_record_bytes(mut self, limit: usize) -> Self {
        self.max_record_bytes = limit;
        self
    }
}

/// An instance and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where in its file.
    pub position: Position,
    /// The instance.
    pub instance: Instance,
}

enum Framing {
    Lines(LineReader),
    TfRecord(TfRecordReader),
}

/// A record read by [`RawReader::read_many`]: where it is in its file, and
/// where its bytes are in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Where the record is in its file.
    pub position: Position,
    /// Where its bytes are in the buffer given to `read_many`.
    pub range: std::ops::Range<usize>,
}

/// The error of asking for a reader of a format that is not an input format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not an input format: expected one of JSON, TEXT, TF_RECORD, TF_RECORD_GZIP")]
pub struct NotAnInputFormat(pub DataFormat);

/// Splits one file into raw records (the framing stage, without decoding):
/// lines for JSON and TEXT (blank lines skipped for JSON), frames for
/// TFRecords. Records are numbered from 0 across instances and errors.
///
/// [`InstanceReader`] is this plus [`decode`]; the executor frames records in
/// one thread and decodes them in its workers.
pub struct RawReader {
    format: DataFormat,
    framing: Framing,
    records: u64,
    done: bool,
    /// For a byte range of a file: the range, where lines start.
    range: Option<std::ops::Range<u64>>,
    /// A storage failure met before the first record, to report first.
    pending: Option<RecordError>,
}

impl fmt::Debug for RawReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawReader")
            .field("format", &self.format)
            .field("records", &self.records)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RawReader {
    /// A reader of `reader`'s records in `format`; `source` names the file in errors.
    ///
    /// # Errors
    /// [`NotAnInputFormat`] for `CSV` and `DATA_FORMAT_UNSPECIFIED`.
    pub fn new(
        format: DataFormat,
        source: &str,
        reader: Box<dyn Read + Send>,
        options: ReadOptions,
    ) -> Result<Self, NotAnInputFormat> {
        let source: Arc<str> = Arc::from(source);
        let framing = match format {
            DataFormat::Json | DataFormat::Text => {
                Framing::Lines(LineReader::new(source, reader, options))
            }
            DataFormat::TfRecord => Framing::TfRecord(TfRecordReader::new(source, reader, options)),
            DataFormat::TfRecordGzip => {
                Framing::TfRecord(TfRecordReader::gzip(source, reader, options))
            }
            other => return Err(NotAnInputFormat(other)),
        };
        Ok(RawReader {
            format,
            framing,
            records: 0,
            done: false,
            range: None,
            pending: None,
        })
    }

    /// The format being read.
    pub fn format(&self) -> DataFormat {
        self.format
    }

    /// Bytes of the (uncompressed) stream consumed so far; for a byte range
    /// of a file, of the range only (so that ranges add up to the file).
    pub fn bytes_read(&self) -> u64 {
        if let (Some(range), Framing::Lines(r)) = (&self.range, &self.framing) {
            return r.file_offset().clamp(range.start, range.end) - range.start;
        }
        match &self.framing {
            Framing::Lines(r) => r.offset(),
            Framing::TfRecord(r) => r.offset(),
        }
    }

    /// A reader of the lines that start in `range` of a JSON or TEXT file,
    /// one byte range of a split file: `reader` must start at byte
    /// `range.start - 1` of the file (or 0). Positions count from the
    /// file's start; lines are not numbered unless the range starts at 0,
    /// and record numbers count from the range's start.
    pub(crate) fn new_range(
        format: DataFormat,
        source: &str,
        reader: Box<dyn Read + Send>,
        options: ReadOptions,
        range: std::ops::Range<u64>,
    ) -> Result<Self, NotAnInputFormat> {
        if !matches!(format, DataFormat::Json | DataFormat::Text) {
            return Err(NotAnInputFormat(format));
        }
        let base = range.start.saturating_sub(1);
        let mut lines = LineReader::new(Arc::from(source), reader, options).starting_at(base);
        let mut pending = None;
        if range.start > 0 {
            // The line holding byte start - 1 is the range before's (its
            // last line, or just its newline): skip through its newline,
            // looking no further than the range's end (past it, no line
            // starts in the range). A damaged line is reported by the range
            // it starts in; only a storage failure matters here.
            if let Err(e) = lines.skip_through_newline(range.end) {
                pending = Some(e);
            }
        }
        Ok(RawReader {
            format,
            framing: Framing::Lines(lines),
            records: 0,
            done: false,
            range: Some(range),
            pending,
        })
    }

    /// For TFRecords: leaves each record's data checksum to the caller
    /// ([`RawReader::take_data_checksum`]), who must check it.
    pub(crate) fn defer_data_checksums(&mut self) {
        if let Framing::TfRecord(r) = &mut self.framing {
            r.defer_data_checksums();
        }
    }

    /// The stored data checksum of the record just read, when deferred.
    pub(crate) fn take_data_checksum(&mut self) -> Option<u32> {
        match &mut self.framing {
            Framing::TfRecord(r) => r.take_data_checksum(),
            Framing::Lines(_) => None,
        }
    }

    /// Reads up to `max` records at once (at least 1): appends their raw
    /// bytes to `buf` and their positions and ranges in `buf` to `records`,
    /// and returns how many; `None` at the end of the file or after a fatal
    /// error. The records that sit whole in the read buffer are framed in
    /// one pass and copied at once (the ranges leave out the line endings
    /// or TFRecord framing copied along); an error comes alone, after the
    /// records before it. The records, positions and errors are those of
    /// [`read_into`](Self::read_into).
    ///
    /// ```
    /// use batch_prediction::{DataFormat};
    /// use batch_prediction::record::{RawReader, ReadOptions};
    ///
    /// let file = b"{\"x\": 1}\n\n{\"x\": 2}\n".to_vec();
    /// let mut reader = RawReader::new(DataFormat::Json, "in.json", Box::new(std::io::Cursor::new(file)), ReadOptions::default())?;
    /// let (mut buf, mut records) = (Vec::new(), Vec::new());
    /// while let Some(n) = reader.read_many(&mut buf, &mut records, 1024) {
    ///     n?;
    /// }
    /// assert_eq!(records.len(), 2);
    /// assert_eq!(&buf[records[1].range.clone()], br#"{"x": 2}"#);
    /// assert_eq!((records[1].position.record, records[1].position.line), (1, Some(3)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_many(
        &mut self,
        buf: &mut Vec<u8>,
        records: &mut Vec<RawRecord>,
        max: usize,
    ) -> Option<Result<usize, RecordError>> {
        let max = max.max(1);
        let n = self.read_run(buf, max, usize::MAX, |position, range, _| {
            records.push(RawRecord { position, range });
        });
        if n > 0 {
            return Some(Ok(n));
        }
        let start = buf.len();
        Some(self.read_into(buf)?.map(|position| {
            records.push(RawRecord {
                position,
                range: start..buf.len(),
            });
            1
        }))
    }

    /// The fast path of [`read_many`](Self::read_many) and of the
    /// executor's framing thread: frames the records that sit whole and
    /// sound in the read buffer, up to `max_records`, stopping once the
    /// records hold `max_bytes` (framing aside), copies their bytes to `buf`
    /// at once, and gives each one's position, range in `buf` and
    /// (TFRecords, checksums deferred) stored data checksum to `push`.
    /// Returns how many; 0 when the next record needs
    /// [`read_into`](Self::read_into) (the buffer is empty or holds part of
    /// it, damage, the end), maybe after skipping blank JSON lines as it
    /// would.
    pub(crate) fn read_run(
        &mut self,
        buf: &mut Vec<u8>,
        max_records: usize,
        max_bytes: usize,
        mut push: impl FnMut(Position, std::ops::Range<usize>, Option<u32>),
    ) -> usize {
        if self.done || self.pending.is_some() {
            return 0;
        }
        let mut record = self.records;
        let mut numbered = |mut position: Position, range, crc| {
            position.record = record;
            record += 1;
            push(position, range, crc);
        };
        let n = match &mut self.framing {
            Framing::TfRecord(r) => r.read_run(buf, max_records, max_bytes, &mut numbered),
            Framing::Lines(r) => r.read_run(
                buf,
                max_records,
                max_bytes,
                self.range.as_ref().map(|r| r.end),
                self.format == DataFormat::Json,
                &mut numbered,
            ),
        };
        self.records += n as u64;
        n
    }

    /// Appends the next record's raw bytes to `buf` and returns its
    /// position; `None` at the end of the file or after a fatal error. On an
    /// error `buf` is unchanged.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Option<Result<Position, RecordError>> {
        if self.done {
            return None;
        }
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        let end = self.range.as_ref().map(|r| r.end);
        let result = match &mut self.framing {
            Framing::TfRecord(r) => r.read_record(buf),
            Framing::Lines(r) => loop {
                // A byte range ends where lines stop starting in it (blank
                // lines skipped on the way count too).
                if end.is_some_and(|end| r.file_offset() >= end) {
                    break Ok(None);
                }
                let start = buf.len();
                match r.read_line(buf) {
                    Ok(Some(_)) if self.format == DataFormat::Json && is_blank(&buf[start..]) => {
                        buf.truncate(start);
                    }
                    other => break other,
                }
            },
        };
        let record = self.records;
        match result {
            Ok(Some(mut position)) => {
                position.record = record;
                self.records += 1;
                Some(Ok(position))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(mut e) => {
                e.position.record = record;
                self.records += 1;
                self.done |= e.is_fatal();
                Some(Err(e))
            }
        }
    }
}

/// Decodes one raw record of `format` into an instance: a JSON line is
/// parsed (`{"b64": …}` alone becomes bytes), a TEXT line becomes a JSON
/// string, a TFRecord's data is the bytes.
///
/// # Errors
/// The reason a line is not an instance: invalid JSON, invalid UTF-8,
/// invalid base64 in `{"b64": …}`.
pub fn decode(format: DataFormat, raw: &[u8]) -> Result<Instance, RecordErrorKind> {
    match format {
        DataFormat::TfRecord | DataFormat::TfRecordGzip => Ok(Instance::Bytes(raw.to_vec())),
        DataFormat::Text => match std::str::from_utf8(raw) {
            Ok(s) => Ok(Instance::Json(Value::String(s.to_owned()))),
            Err(e) => Err(RecordErrorKind::InvalidUtf8 {
                column: e.valid_up_to(),
            }),
        },
        _ => match serde_json::from_slice::<Value>(raw) {
            Ok(value) => Instance::from_json(value).map_err(RecordErrorKind::InvalidBase64),
            Err(e) => Err(match std::str::from_utf8(raw) {
                Err(u) => RecordErrorKind::InvalidUtf8 {
                    column: u.valid_up_to(),
                },
                Ok(_) => RecordErrorKind::InvalidJson(e.to_string()),
            }),
        },
    }
}

/// Reads the instances of one file in any input format.
///
/// An iterator of `Result<Record, RecordError>`: after a fatal error (see
/// [`RecordError::is_fatal`]) it ends.
///
/// # Example
/// ```
/// use batch_prediction::{DataFormat, Instance};
/// use batch_prediction::record::{InstanceReader, ReadOptions};
/// use serde_json::json;
///
/// let data = b"{\"x\": 1}\r\n\nnot json\n{\"b64\": \"aGk=\"}";
/// let reader = InstanceReader::new(DataFormat::Json, "in.jsonl", Box::new(&data[..]), ReadOptions::default())?;
/// let items: Vec<_> = reader.collect();
/// assert_eq!(items.len(), 3);
/// assert_eq!(items[0].as_ref().unwrap().instance, Instance::Json(json!({"x": 1})));
/// assert_eq!(
///     items[1].as_ref().unwrap_err().to_string(),
///     "in.jsonl: line 3: invalid JSON: expected ident at line 1 column 2"
/// );
/// assert_eq!(items[2].as_ref().unwrap().instance, Instance::Bytes(b"hi".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct InstanceReader {
    raw: RawReader,
    source: Arc<str>,
    buf: Vec<u8>,
}

impl InstanceReader {
    /// A reader of `reader`'s records in `format`; `source` names the file in errors.
    ///
    /// # Errors
    /// [`NotAnInputFormat`] for `CSV` and `DATA_FORMAT_UNSPECIFIED`.
    pub fn new(
        format: DataFormat,
        source: &str,
        reader: Box<dyn Read + Send>,
        options: ReadOptions,
    ) -> Result<Self, NotAnInputFormat> {
        Ok(InstanceReader {
            raw: RawReader::new(format, source, reader, options)?,
            source: Arc::from(source),
            buf: Vec::new(),
        })
    }

    /// The next instance or error; `None` at the end of the file or after a
    /// fatal error.
    pub fn next_record(&mut self) -> Option<Result<Record, RecordError>> {
        self.buf.clear();
        let position = match self.raw.read_into(&mut self.buf)? {
            Ok(position) => position,
            Err(e) => return Some(Err(e)),
        };
        let decoded = match self.raw.format() {
            // The frame's bytes are the instance: hand over the buffer, no copy.
            DataFormat::TfRecord | DataFormat::TfRecordGzip => {
                Ok(Instance::Bytes(std::mem::take(&mut self.buf)))
            }
            format => decode(format, &self.buf),
        };
        Some(match decoded {
            Ok(instance) => Ok(Record { position, instance }),
            Err(kind) => Err(RecordError {
                source: Arc::clone(&self.source),
                position,
                kind,
                raw: Some(self.buf.clone()),
            }),
        })
    }
}

impl Iterator for InstanceReader {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use super::*;

    /// Hands out at most `piece` bytes per read.
    struct Pieces(Cursor<Vec<u8>>, usize);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len());
            self.0.read(&mut buf[..n])
        }
    }

    type Item = Result<(Position, Vec<u8>, Option<u32>), (String, Option<Vec<u8>>)>;

    fn one_by_one(mut r: RawReader) -> Vec<Item> {
        let mut items = Vec::new();
        let mut buf = Vec::new();
        while let Some(item) = r.read_into(&mut buf) {
            let crc = r.take_data_checksum();
            items.push(match item {
                Ok(p) => Ok((p, std::mem::take(&mut buf), crc)),
                Err(e) => Err((e.to_string(), e.raw)),
            });
        }
        items
    }

    /// As the executor reads: runs of at most `most` records and `bytes`
    /// bytes, one record alone when a run cannot start.
    fn in_runs(mut r: RawReader, most: usize, bytes: usize) -> Vec<Item> {
        let mut items = Vec::new();
        let mut buf = Vec::new();
        loop {
            let mut run = Vec::new();
            let n = r.read_run(&mut buf, most, bytes, |p, range, crc| {
                run.push((p, range, crc))
            });
            assert_eq!(n, run.len());
            assert!(n <= most);
            let held: usize = run.iter().map(|(_, range, _)| range.len()).sum();
            assert!(
                n <= 1 || held - run[n - 1].1.len() < bytes,
                "stops once past the bytes"
            );
            if n > 0 {
                for (p, range, crc) in run {
                    items.push(Ok((p, buf[range].to_vec(), crc)));
                }
                buf.clear();
                continue;
            }
            let Some(item) = r.read_into(&mut buf) else {
                return items;
            };
            let crc = r.take_data_checksum();
            items.push(match item {
                Ok(p) => Ok((p, std::mem::take(&mut buf), crc)),
                Err(e) => Err((e.to_string(), e.raw)),
            });
        }
    }

    #[test]
    fn runs_of_lines_in_byte_ranges_are_read_into_one_by_one() {
        let text = b"{\"a\": 1}\n\n  \r\n[1]\r\nlonger than the limit\nx\n\n\ny\r\nz";
        let options = ReadOptions::default().with_max_record_bytes(8);
        for format in [DataFormat::Json, DataFormat::Text] {
            for start in 0..text.len() as u64 {
                for end in [start + 1, start + 7, u64::MAX] {
                    for (piece, most, bytes) in [(1, 1, 1), (5, 2, 3), (64, 3, usize::MAX)] {
                        let reader = || {
                            let from = start.saturating_sub(1) as usize;
                            let source = Pieces(Cursor::new(text[from..].to_vec()), piece);
                            RawReader::new_range(format, "f", Box::new(source), options, start..end)
                                .unwrap()
                        };
                        let want = one_by_one(reader());
                        let got = in_runs(reader(), most, bytes);
                        assert_eq!(got, want, "{format} {start}..{end} {piece} {most} {bytes}");
                    }
                }
            }
        }
    }

    #[test]
    fn runs_of_frames_keep_the_deferred_checksums() {
        let mut w = TfRecordWriter::new(Vec::new());
        for data in [&b"first"[..], b"", b"third one", b"4th"] {
            w.write(data).unwrap();
        }
        let mut file = w.into_inner();
        let last = file.len() - 1;
        file[last] ^= 1; // the last record's data checksum
        for (piece, most, bytes) in [(1, 1, 1), (7, 2, 6), (1024, 8, usize::MAX)] {
            let reader = || {
                let source = Pieces(Cursor::new(file.clone()), piece);
                let mut r = RawReader::new(
                    DataFormat::TfRecord,
                    "f",
                    Box::new(source),
                    ReadOptions::default(),
                )
                .unwrap();
                r.defer_data_checksums();
                r
            };
            let want = one_by_one(reader());
            assert_eq!(want.len(), 4);
            assert!(want.iter().all(|item| matches!(item, Ok((_, _, Some(_))))));
            assert_eq!(
                in_runs(reader(), most, bytes),
                want,
                "{piece} {most} {bytes}"
            );
        }
    }

    #[test]
    fn runs_of_json_lines_leave_blank_lines_out() {
        let text = b"{}\n   \n\n{}\r\n \n".to_vec();
        let mut r = RawReader::new(
            DataFormat::Json,
            "f",
            Box::new(Cursor::new(text)),
            ReadOptions::default(),
        )
        .unwrap();
        let mut buf = Vec::new();
        // Fill the read buffer, then frame what it holds.
        assert!(r.read_into(&mut buf).is_some());
        buf.clear();
        let mut lines = Vec::new();
        let n = r.read_run(&mut buf, 10, usize::MAX, |p, range, _| {
            lines.push((p.line, range))
        });
        assert_eq!(n, 1);
        assert_eq!(lines, [(Some(4), 0..2)]);
        assert_eq!(buf, b"{}\r\n", "blank lines are skipped, not copied");
        assert!(r.read_into(&mut buf).is_none());
    }
}
