//! Line framing for JSON and TEXT files.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

use super::{Position, ReadOptions, RecordError, RecordErrorKind, is_blank};

/// The read buffer of line and TFRecord readers.
pub(crate) const READ_BUFFER: usize = 256 * 1024;

/// Splits a stream into lines: LF or CRLF endings (the CR is dropped), and a
/// last line without a newline is still a line. A line longer than the limit
/// is skipped without being stored and reported as a record-level error.
pub struct LineReader {
    source: Arc<str>,
    /// Buffered here, so that the per-line calls to the buffer are static.
    inner: BufReader<Box<dyn Read + Send>>,
    limit: usize,
    line: u64,
    offset: u64,
    /// Where in the file the reader starts (a byte range of a split file).
    base: u64,
    /// Whether line numbers are known: not when starting inside a file.
    count_lines: bool,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("source", &self.source)
            .field("line", &self.line)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl LineReader {
    /// A line reader over `reader`; `source` names the file in errors.
    pub fn new(
        source: impl Into<Arc<str>>,
        reader: impl Read + Send + 'static,
        options: ReadOptions,
    ) -> Self {
        LineReader {
            source: source.into(),
            inner: BufReader::with_capacity(READ_BUFFER, Box::new(reader)),
            limit: options.max_record_bytes,
            line: 0,
            offset: 0,
            base: 0,
            count_lines: true,
        }
    }

    /// Reads from byte `base` of the file on (the reader given must start
    /// there): positions count from the file's start, and, unless `base` is
    /// 0, lines are not numbered, since the lines before are not read.
    pub(crate) fn starting_at(mut self, base: u64) -> Self {
        self.base = base;
        self.count_lines = base == 0;
        self
    }

    /// Skips through the next newline, looking no further than byte `end`
    /// of the file: where a byte range of a split file starts reading.
    pub(crate) fn skip_through_newline(&mut self, end: u64) -> Result<(), RecordError> {
        while self.file_offset() < end {
            let left = usize::try_from(end - self.file_offset()).unwrap_or(usize::MAX);
            let available = match self.inner.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RecordError {
                        source: Arc::clone(&self.source),
                        position: Position {
                            record: 0,
                            line: None,
                            byte: self.base + self.offset,
                        },
                        kind: RecordErrorKind::Io(e.to_string()),
                        raw: None,
                    });
                }
            };
            let window = available.len().min(left);
            let (take, found) = match memchr::memchr(b'\n', &available[..window]) {
                Some(i) => (i + 1, true),
                None => (window, false),
            };
            self.inner.consume(take);
            self.offset += take as u64;
            if found {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The position in the file of the next byte to read.
    pub(crate) fn file_offset(&self) -> u64 {
        self.base + self.offset
    }

    /// The file name used in errors.
    pub fn source(&self) -> &Arc<str> {
        &self.source
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// [`RawReader::read_run`](super::RawReader::read_run) for lines: the
    /// lines that end in the read buffer and are within the size limit,
    /// copied to `buf` in one go (line endings with them) up to a line that
    /// starts at or past byte `end` of the file. With `skip_blank`, blank
    /// lines are skipped, counted and not copied. `max_bytes` counts the
    /// lines' contents only.
    pub(crate) fn read_run(
        &mut self,
        buf: &mut Vec<u8>,
        max_records: usize,
        max_bytes: usize,
        end: Option<u64>,
        skip_blank: bool,
        push: &mut impl FnMut(Position, std::ops::Range<usize>, Option<u32>),
    ) -> usize {
        let avail = self.inner.buffer();
        let start = self.base + self.offset;
        // `avail[copy_from..at]` is still to be copied; it goes to `buf`
        // from `copy_to` on.
        let (mut at, mut n, mut bytes) = (0, 0, 0);
        let (mut copy_from, mut copy_to) = (0, buf.len());
        while n < max_records && bytes < max_bytes {
            if end.is_some_and(|end| start + at as u64 >= end) {
                break;
            }
            let Some(newline) = memchr::memchr(b'\n', &avail[at..]).map(|i| at + i) else {
                break;
            };
            let content = if newline > at && avail[newline - 1] == b'\r' {
                at..newline - 1
            } else {
                at..newline
            };
            if content.len() > self.limit {
                break;
            }
            self.line += 1;
            if skip_blank && is_blank(&avail[content.clone()]) {
                buf.extend_from_slice(&avail[copy_from..at]);
                (copy_from, copy_to) = (newline + 1, buf.len());
            } else {
                push(
                    Position {
                        record: 0,
                        line: self.count_lines.then_some(self.line),
                        byte: start + at as u64,
                    },
                    copy_to + content.start - copy_from..copy_to + content.end - copy_from,
                    None,
                );
                bytes += content.len();
                n += 1;
            }
            at = newline + 1;
        }
        buf.extend_from_slice(&avail[copy_from..at]);
        self.inner.consume(at);
        self.offset += at as u64;
        n
    }

    /// Appends the next line to `buf` (without its line ending) and returns
    /// its position, or `None` at the end of the stream. On an error, `buf`
    /// is as it was.
    ///
    /// # Errors
    /// A record-level [`RecordErrorKind::TooLarge`] for a line over the limit
    /// (the reader moves past it), or a fatal [`RecordErrorKind::Io`].
    pub fn read_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<Position>, RecordError> {
        let start = buf.len();
        let position = Position {
            record: 0,
            line: self.count_lines.then_some(self.line + 1),
            byte: self.base + self.offset,
        };
        let mut total: u64 = 0;
        let mut too_long = false;
        let mut newline = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.truncate(start);
                    return Err(RecordError {
                        source: Arc::clone(&self.source),
                        position,
                        kind: RecordErrorKind::Io(e.to_string()),
                        raw: None,
                    });
                }
            };
            if available.is_empty() {
                if total == 0 {
                    return Ok(None);
                }
                break;
            }
            let (take, found) = match memchr::memchr(b'\n', available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                // Room for the limit plus a CRLF ending.
                if buf.len() - start + take > self.limit.saturating_add(2) {
                    too_long = true;
                    buf.truncate(start);
                } else {
                    buf.extend_from_slice(&available[..take]);
                }
            }
            total += take as u64;
            self.inner.consume(take);
            if found {
                newline = true;
                break;
            }
        }
        self.line += 1;
        self.offset += total;
        let mut content = total - u64::from(newline);
        if newline && !too_long {
            buf.pop();
            if buf.len() > start && buf.last() == Some(&b'\r') {
                buf.pop();
                content -= 1; // the CR of a CRLF ending is not part of the record
            }
        }
        if too_long || content > self.limit as u64 {
            buf.truncate(start);
            return Err(RecordError {
                source: Arc::clone(&self.source),
                position,
                kind: RecordErrorKind::TooLarge {
                    size: content,
                    limit: self.limit,
                },
                raw: None,
            });
        }
        Ok(Some(position))
    }
}
