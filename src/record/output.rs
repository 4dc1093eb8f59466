//! The output files of a job, in `outputPath`:
//!
//! | file | content |
//! |---|---|
//! | `prediction.results-SSSSS-of-NNNNN` | JSON output: one prediction per line, compact JSON |
//! | `prediction.results-SSSSS-of-NNNNN.csv` | CSV output: one row per prediction, no header row, CRLF line ends |
//! | `prediction.results_header.csv` | CSV output: the one row of column names |
//! | `prediction.errors_stats-SSSSS-of-NNNNN` | one line per distinct error message: `('message', count)` |
//! | `prediction.errors-SSSSS-of-NNNNN` | beyond the API: one JSON line per failed instance |
//!
//! `SSSSS` is the shard number and `NNNNN` the shard count, both five digits
//! (Beam's `-SSSSS-of-NNNNN` template, as the hosted service names them).
//!
//! The results lines hold the same JSON values as the hosted service's, in
//! compact form (`{"a":1}`), not byte for byte in Python's `json.dumps` style
//! (`{"a": 1}`).
//!
//! In `errors_stats`, the count is of failed **instances** (so the counts add
//! up to the job's `errorCount`); Google's open-sourced pipeline counted
//! failed batches, but this crate isolates every failing instance. Lines are
//! sorted by message and written as Python 3 prints a `(str, int)` tuple.
//!
//! The error file, `prediction.errors-SSSSS-of-NNNNN`, holds per line:
//! `{"source": FILE, "line": N | "record": N, "byte": OFFSET, "instance": …, ["raw": …,] "error": MESSAGE}`
//! with `line` (1-based) for JSON and TEXT inputs and `record` (0-based) for
//! TFRecords. `instance` is the instance that failed as JSON (bytes as
//! `{"b64": …}`), or `null` when the record never became an instance; then
//! `raw` holds the record as read (a line as a string when it is UTF-8, else
//! `{"b64": …}`), unless it was not kept (a record over the size limit). In
//! `errors_stats`, messages are grouped without their per-record details
//! (columns, values), which the error file keeps. To re-run only the
//! instances that failed, turn them back into a JSON-lines input:
//!
//! ```text
//! jq -c '.instance | select(. != null)' OUT/prediction.errors-* > rerun.jsonl
//! ```
//!
//! (`{"b64": …}` lines decode back to the same bytes.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use serde_json::Value;

use super::Position;

/// The base name of result files.
pub const RESULTS_FILE_PREFIX: &str = "prediction.results";
/// The base name of error statistics files.
pub const ERRORS_STATS_FILE_PREFIX: &str = "prediction.errors_stats";
/// The base name of the per-instance error files (beyond the API).
pub const ERRORS_FILE_PREFIX: &str = "prediction.errors";
/// The name of the CSV column names file.
pub const CSV_HEADER_FILE: &str = "prediction.results_header.csv";

/// `{prefix}-SSSSS-of-NNNNN`, e.g. `prediction.results-00003-of-00010`.
///
/// ```
/// use batch_prediction::record::{RESULTS_FILE_PREFIX, shard_file_name};
/// assert_eq!(shard_file_name(RESULTS_FILE_PREFIX, 3, 10), "prediction.results-00003-of-00010");
/// ```
pub fn shard_file_name(prefix: &str, shard: usize, count: usize) -> String {
    format!("{prefix}-{shard:05}-of-{count:05}")
}

/// Writes one JSON value per line.
#[derive(Debug)]
pub struct JsonLinesWriter<W: Write> {
    inner: W,
    lines: u64,
}

impl<W: Write> JsonLinesWriter<W> {
    /// A writer into `inner`, which should be buffered.
    pub fn new(inner: W) -> Self {
        JsonLinesWriter { inner, lines: 0 }
    }

    /// Writes `value` and a newline.
    ///
    /// # Errors
    /// The underlying writer's error.
    pub fn write(&mut self, value: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.inner, value).map_err(io::Error::from)?;
        self.inner.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    /// How many lines were written.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Flushes the underlying writer.
    ///
    /// # Errors
    /// The underlying writer's error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Why one prediction could not become a CSV row; a per-instance error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvRowError {
    /// CSV rows come from objects of output name → value.
    #[error("a CSV result must be a JSON object of output names to values, got {0}")]
    NotAnObject(String),
    /// The prediction has an output the header does not name.
    #[error("output {0:?} is not a column of the CSV header (columns: {1})")]
    UnknownColumn(String, String),
    /// An empty object before any prediction gave the columns.
    #[error("a CSV result needs at least one output to give the columns, got {{}}")]
    NoColumns,
}

/// Writes predictions as CSV rows in a fixed column order.
///
/// Each prediction must be a JSON object; a column it lacks is an empty cell,
/// a key the header does not name is a [`CsvRowError`]. A string value is
/// written as it is, `null` as an empty cell, anything else as compact JSON
/// (`0.5`, `true`, `[1,2]`). Quoting and escaping are the csv crate's
/// (RFC 4180); rows end with CRLF, as Python's `csv` module writes them.
///
/// # Example
/// ```
/// use batch_prediction::record::{CsvResultWriter, csv_header_bytes};
/// use serde_json::json;
///
/// let mut w = CsvResultWriter::new(Vec::new(), vec!["label".into(), "scores".into()]);
/// w.write(&json!({"label": "cat, black", "scores": [0.9, 0.1]}))?;
/// w.write(&json!({"scores": null}))?;
/// assert_eq!(String::from_utf8(w.into_inner()?)?, "\"cat, black\",\"[0.9,0.1]\"\r\n,\r\n");
/// assert_eq!(csv_header_bytes(&["label".into(), "scores".into()]), b"label,scores\r\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct CsvResultWriter<W: Write> {
    inner: csv::Writer<W>,
    header: Vec<String>,
    cells: Vec<String>,
    rows: u64,
}

/// An error of a [`CsvResultWriter`]: a bad row, or the writer's I/O error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvWriteError {
    /// This prediction cannot be a row; nothing was written for it.
    #[error(transparent)]
    Row(#[from] CsvRowError),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl<W: Write> CsvResultWriter<W> {
    /// A writer of rows with the columns `header`.
    pub fn new(inner: W, header: Vec<String>) -> Self {
        CsvResultWriter {
            inner: csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(inner),
            cells: vec![String::new(); header.len()],
            header,
            rows: 0,
        }
    }

    /// Writes one prediction as a row.
    ///
    /// # Errors
    /// [`CsvWriteError::Row`] when the prediction cannot be a row (nothing is
    /// written), [`CsvWriteError::Io`] when writing fails.
    pub fn write(&mut self, prediction: &Value) -> Result<(), CsvWriteError> {
        let Value::Object(map) = prediction else {
            return Err(CsvRowError::NotAnObject(crate::model::wire::show(prediction)).into());
        };
        for cell in &mut self.cells {
            cell.clear();
        }
        for (key, value) in map {
            let Some(i) = self.header.iter().position(|h| h == key) else {
                return Err(CsvRowError::UnknownColumn(key.clone(), self.header.join(", ")).into());
            };
            let cell = &mut self.cells[i];
            match value {
                Value::Null => {}
                Value::String(s) => cell.push_str(s),
                other => {
                    let _ = write!(cell, "{other}");
                }
            }
        }
        self.inner.write_record(&self.cells).map_err(csv_io)?;
        self.rows += 1;
        Ok(())
    }

    /// How many rows were written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// The underlying writer's error.
    pub fn into_inner(self) -> io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

/// The content of the header file ([`CSV_HEADER_FILE`]): the column names as
/// one CSV row.
pub fn csv_header_bytes(header: &[String]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing into memory cannot fail.
    w.write_record(header).expect("CSV into memory");
    w.into_inner().expect("CSV into memory")
}

fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// Counts of failed instances by error message, for `errors_stats` files.
///
/// # Example
/// ```
/// use batch_prediction::record::ErrorStats;
///
/// let mut stats = ErrorStats::default();
/// stats.add("Input x was missing in at least one input instance.", 2);
/// stats.add("it's \"bad\"", 1);
/// assert_eq!(stats.total(), 3);
/// assert_eq!(
///     String::from_utf8(stats.to_bytes())?,
///     "('Input x was missing in at least one input instance.', 2)\n('it\\'s \"bad\"', 1)\n"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorStats {
    counts: BTreeMap<String, u64>,
}

impl ErrorStats {
    /// Adds `count` failures with `message`.
    pub fn add(&mut self, message: &str, count: u64) {
        match self.counts.get_mut(message) {
            Some(n) => *n += count,
            None => {
                self.counts.insert(message.to_owned(), count);
            }
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorStats) {
        for (message, count) in &other.counts {
            self.add(message, *count);
        }
    }

    /// The sum of the counts.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The counts by message, sorted by message.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(m, c)| (m.as_str(), *c))
    }

    /// The file's content: one `('message', count)` line per message, sorted.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (message, count) in &self.counts {
            let _ = writeln!(out, "({}, {count})", python_repr(message));
        }
        out.into_bytes()
    }
}

/// Whether Python's `str.isprintable()` is false for `c`, for the
/// characters that matter in messages: controls, separators other than the
/// space, and common format characters.
fn python_unprintable(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || matches!(u, 0xA0 | 0xAD | 0x1680 | 0x180E | 0x2000..=0x200F | 0x2028..=0x202F)
        || matches!(u, 0x205F..=0x2064 | 0x2066..=0x206F | 0x3000 | 0xFEFF | 0xFFF9..=0xFFFB)
        || matches!(u, 0x600..=0x605 | 0x61C | 0x6DD | 0x70F)
}

/// Python 3's `repr()` of a `str`.
pub(crate) fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if python_unprintable(c) => {
                let u = c as u32;
                let _ = match u {
                    0..=0xFF => write!(out, "\\x{u:02x}"),
                    0x100..=0xFFFF => write!(out, "\\u{u:04x}"),
                    _ => write!(out, "\\U{u:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Writes the per-instance error file: one JSON line per failed instance.
#[derive(Debug)]
pub struct ErrorRecordWriter<W: Write> {
    inner: JsonLinesWriter<W>,
}

impl<W: Write> ErrorRecordWriter<W> {
    /// A writer into `inner`, which should be buffered.
    pub fn new(inner: W) -> Self {
        ErrorRecordWriter {
            inner: JsonLinesWriter::new(inner),
        }
    }

    /// Writes one failure: where it came from, the instance as JSON (`None`
    /// when the record never became one), the raw record (`None` unless the
    /// record could not be decoded: a line as a string when it is UTF-8,
    /// else `{"b64": …}`) and the error message.
    ///
    /// # Errors
    /// The underlying writer's error.
    pub fn write(
        &mut self,
        source: &str,
        position: &Position,
        instance: Option<Value>,
        raw: Option<Value>,
        error: &str,
    ) -> io::Result<()> {
        let mut line = serde_json::Map::new();
        line.insert("source".into(), source.into());
        match position.line {
            Some(n) => line.insert("line".into(), n.into()),
            None => line.insert("record".into(), position.record.into()),
        };
        line.insert("byte".into(), position.byte.into());
        line.insert("instance".into(), instance.unwrap_or(Value::Null));
        if let Some(raw) = raw {
            line.insert("raw".into(), raw);
        }
        line.insert("error".into(), error.into());
        self.inner.write(&Value::Object(line))
    }

    /// How many lines were written.
    pub fn lines(&self) -> u64 {
        self.inner.lines()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_repr_table() {
        // Expected values printed by Python 3.11's repr().
        let cases = [
            ("plain", "'plain'"),
            ("it's", "\"it's\""),
            ("it's \"x\"", "'it\\'s \"x\"'"),
            ("say \"hi\"", "'say \"hi\"'"),
            ("a\\b", "'a\\\\b'"),
            ("l1\nl2\r\t", "'l1\\nl2\\r\\t'"),
            ("\u{0}\u{7f}\u{85}", "'\\x00\\x7f\\x85'"),
            ("é ü 日本", "'é ü 日本'"),
            ("nb\u{a0}sp", "'nb\\xa0sp'"),
            ("zw\u{200b}", "'zw\\u200b'"),
            ("\u{feff}", "'\\ufeff'"),
            ("😀", "'😀'"),
        ];
        for (input, want) in cases {
            assert_eq!(python_repr(input), want, "{input:?}");
        }
    }

    #[test]
    fn error_stats_lines_sorted_and_summed() {
        let mut a = ErrorStats::default();
        a.add("b error", 1);
        a.add("a error", 2);
        let mut b = ErrorStats::default();
        b.add("b error", 3);
        a.merge(&b);
        assert_eq!(a.total(), 6);
        assert_eq!(
            String::from_utf8(a.to_bytes()).unwrap(),
            "('a error', 2)\n('b error', 4)\n"
        );
        assert!(ErrorStats::default().to_bytes().is_empty());
    }

    #[test]
    fn csv_rows() {
        let header = vec!["key".to_owned(), "p".to_owned(), "note".to_owned()];
        let mut w = CsvResultWriter::new(Vec::new(), header);
        w.write(&json!({"p": 0.25, "key": 7, "note": "say \"hi\"\nbye"}))
            .unwrap();
        w.write(&json!({"key": true})).unwrap();
        let err = w.write(&json!({"key": 1, "extra": 2})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "output \"extra\" is not a column of the CSV header (columns: key, p, note)"
        );
        let err = w.write(&json!([1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a CSV result must be a JSON object of output names to values, got [1]"
        );
        assert_eq!(w.rows(), 2);
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text, "7,0.25,\"say \"\"hi\"\"\nbye\"\r\ntrue,,\r\n");
    }

    #[test]
    fn error_records() {
        let mut w = ErrorRecordWriter::new(Vec::new());
        let line = Position {
            record: 2,
            line: Some(3),
            byte: 40,
        };
        w.write(
            "in.jsonl",
            &line,
            None,
            Some(json!("{oops")),
            "invalid JSON: x",
        )
        .unwrap();
        let rec = Position {
            record: 7,
            line: None,
            byte: 900,
        };
        w.write(
            "in.tfrecord",
            &rec,
            Some(json!({"b64": "AAE="})),
            None,
            "model failed",
        )
        .unwrap();
        assert_eq!(w.lines(), 2);
        let text = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(
            text,
            "{\"source\":\"in.jsonl\",\"line\":3,\"byte\":40,\"instance\":null,\"raw\":\"{oops\",\"error\":\"invalid JSON: x\"}\n\
             {\"source\":\"in.tfrecord\",\"record\":7,\"byte\":900,\"instance\":{\"b64\":\"AAE=\"},\"error\":\"model failed\"}\n"
        );
    }
}
