//! TFRecord framing, plain and gzip-compressed.
//!
//! A record is `u64` little-endian length, masked CRC-32C of those 8 bytes,
//! the data, masked CRC-32C of the data (TensorFlow's
//! `tensorflow/core/lib/io/record_writer.cc`).

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flate2::bufread::MultiGzDecoder;

use super::crc::{Crc32c, Portable, WithCrc32c, with_crc32c};
use super::lines::READ_BUFFER;
use super::{Position, ReadOptions, RecordError, RecordErrorKind};

/// TensorFlow's masked CRC-32C: the checksum rotated right by 15 bits plus
/// `0xa282ead8`, so that a checksum of data holding checksums stays strong.
///
/// ```
/// // 0xE3069283 is the CRC-32C check value of "123456789".
/// let masked = 0xE306_9283_u32.rotate_right(15).wrapping_add(0xa282_ead8);
/// assert_eq!(batch_prediction::record::masked_crc32c(b"123456789"), masked);
/// ```
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
}

/// [`masked_crc32c`] of four buffers at once: for many short records, as
/// a TFRecord reader checks them, about three times faster than four calls
/// on a CPU with SSE 4.2 (the four computations overlap; one short checksum
/// is bound by the instruction's latency), and the same results on every
/// CPU.
///
/// ```
/// use batch_prediction::record::{masked_crc32c, masked_crc32c_4};
/// let data: [&[u8]; 4] = [b"123456789", b"", b"a longer record of bytes", b"x"];
/// assert_eq!(masked_crc32c_4(data), data.map(masked_crc32c));
/// ```
pub fn masked_crc32c_4(data: [&[u8]; 4]) -> [u32; 4] {
    super::crc::crc32c_4(data).map(mask)
}

fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An 8-byte-aligned copy of a frame's length, so that its checksum takes
/// one 8-byte CRC step instead of eight 1-byte ones (the CRC-32C crate
/// handles unaligned leading bytes one by one).
#[repr(C, align(8))]
struct AlignedLength([u8; 8]);

/// The masked checksum of a frame's 8 length bytes.
#[inline(always)]
fn length_checksum(crc: impl Crc32c, length: [u8; 8]) -> u32 {
    let aligned = AlignedLength(length);
    mask(crc.one(&aligned.0))
}

/// Checks frame headers (length and its checksum), remembering the last
/// good one: records of a file mostly share a few lengths, and a header
/// equal to one already verified needs no checksum of its own. The check
/// is as strict as computing it every time: the checksum is a function of
/// the length bytes alone.
#[derive(Debug, Default)]
struct HeaderCheck {
    last_good: Option<[u8; 12]>,
}

impl HeaderCheck {
    /// `Ok(length)` when `header`'s stored checksum matches its length;
    /// else `Err((stored, computed))`.
    #[inline(always)]
    fn check(&mut self, crc: impl Crc32c, header: [u8; 12]) -> Result<u64, (u32, u32)> {
        let (length, stored) = header.split_at(8);
        let length: [u8; 8] = length.try_into().expect("8 bytes");
        if self.last_good != Some(header) {
            let stored = u32::from_le_bytes(stored.try_into().expect("4 bytes"));
            let computed = length_checksum(crc, length);
            if stored != computed {
                return Err((stored, computed));
            }
            self.last_good = Some(header);
        }
        Ok(u64::from_le_bytes(length))
    }
}

/// The whole, sound frame at `at` in `avail`, if there is one: its data's
/// range in `avail` and its stored data checksum, checked here if `verify`.
/// `None` for anything else, for the careful path to deal with: a frame
/// cut by the buffer's end, a bad checksum, a length over `limit`.
#[inline(always)]
fn whole_frame(
    crc: impl Crc32c,
    headers: &mut HeaderCheck,
    limit: usize,
    verify: bool,
    avail: &[u8],
    at: usize,
) -> Option<(std::ops::Range<usize>, u32)> {
    let header = avail.get(at..)?.first_chunk::<12>()?;
    let len = headers.check(crc, *header).ok()?;
    let left = (avail.len() - at - 12) as u64;
    if len > limit as u64 || len.checked_add(4).is_none_or(|frame| left < frame) {
        return None;
    }
    let data = at + 12..at + 12 + len as usize;
    let stored = u32::from_le_bytes(avail[data.end..data.end + 4].try_into().ok()?);
    if verify && mask(crc.one(&avail[data.clone()])) != stored {
        return None;
    }
    Some((data, stored))
}

/// [`TfRecordReader::read_run`]'s arguments, for [`with_crc32c`] to run
/// with the CPU's checksums compiled in.
struct Run<'a, P> {
    reader: &'a mut TfRecordReader,
    buf: &'a mut Vec<u8>,
    max_records: usize,
    max_bytes: usize,
    push: &'a mut P,
}

impl<P: FnMut(Position, std::ops::Range<usize>, Option<u32>)> WithCrc32c for Run<'_, P> {
    type Output = usize;

    #[inline(always)]
    fn run<C: Crc32c>(self, crc: C) -> usize {
        let Run {
            reader,
            buf,
            max_records,
            max_bytes,
            push,
        } = self;
        reader.read_run_with(crc, buf, max_records, max_bytes, push)
    }
}

/// Counts the bytes read through it, and notes whether the underlying
/// reader failed, shared with the reader for messages: a gzip reader must
/// tell a storage failure from a damaged stream.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

/// A gzip decoder that reads an empty (0-byte) file as an empty stream, as
/// TensorFlow does, instead of as a missing gzip header.
enum LazyGzip<R: BufRead> {
    Start(R),
    Gzip(Box<MultiGzDecoder<R>>),
    Empty,
    Moved,
}

impl<R: BufRead> Read for LazyGzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self {
                LazyGzip::Gzip(d) => return d.read(buf),
                LazyGzip::Empty => return Ok(0),
                LazyGzip::Moved => {
                    return Err(io::Error::other("gzip reader used after a failure"));
                }
                LazyGzip::Start(r) => {
                    let empty = r.fill_buf()?.is_empty();
                    let LazyGzip::Start(r) = std::mem::replace(self, LazyGzip::Moved) else {
                        unreachable!("matched Start above");
                    };
                    *self = if empty {
                        LazyGzip::Empty
                    } else {
                        LazyGzip::Gzip(Box::new(MultiGzDecoder::new(r)))
                    };
                }
            }
        }
    }
}

/// Reads TFRecord frames, verifying both checksums.
///
/// A bad data checksum or an oversized record is a record-level error and
/// reading goes on; a bad length checksum, a truncated frame, a gzip or I/O
/// error is fatal and gives the offset and the bytes left unread.
pub struct TfRecordReader {
    source: Arc<str>,
    /// Buffered here, over the source (plain) or the decoder (gzip), so that
    /// the per-record calls to the buffer are static and inlined.
    inner: BufReader<Box<dyn Read + Send>>,
    /// Compressed bytes consumed, and whether the storage failed, for gzip streams.
    compressed: Option<(Arc<AtomicU64>, Arc<AtomicBool>)>,
    limit: usize,
    offset: u64,
    /// Leave the data checksum to the caller (the executor's workers check
    /// it, off the framing thread): the stored one of the last record.
    defer_data_crc: bool,
    deferred: Option<u32>,
    headers: HeaderCheck,
}

impl std::fmt::Debug for TfRecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfRecordReader")
            .field("source", &self.source)
            .field("gzip", &self.compressed.is_some())
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut dyn BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads to the end, or to the first error, and returns how many bytes there were.
fn count_rest(reader: &mut dyn BufRead) -> u64 {
    let mut total = 0u64;
    loop {
        let n = match reader.fill_buf() {
            Ok([]) | Err(_) => return total,
            Ok(buf) => buf.len(),
        };
        reader.consume(n);
        total += n as u64;
    }
}

/// Skips up to `n` bytes; returns how many there were.
fn skip(reader: &mut dyn BufRead, n: u64) -> io::Result<u64> {
    io::copy(&mut reader.take(n), &mut io::sink())
}

impl TfRecordReader {
    /// A reader of plain TFRecord frames; `source` names the file in errors.
    pub fn new(
        source: impl Into<Arc<str>>,
        reader: impl Read + Send + 'static,
        options: ReadOptions,
    ) -> Self {
        TfRecordReader {
            source: source.into(),
            inner: BufReader::with_capacity(READ_BUFFER, Box::new(reader)),
            compressed: None,
            limit: options.max_record_bytes,
            offset: 0,
            defer_data_crc: false,
            deferred: None,
            headers: HeaderCheck::default(),
        }
    }

    /// A reader of gzip-compressed TFRecord frames (one or more gzip members).
    pub fn gzip(
        source: impl Into<Arc<str>>,
        reader: impl Read + Send + 'static,
        options: ReadOptions,
    ) -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let counting = Counting {
            inner: reader,
            count: Arc::clone(&count),
            failed: Arc::clone(&failed),
        };
        let decoder = LazyGzip::Start(BufReader::with_capacity(READ_BUFFER, counting));
        TfRecordReader {
            source: source.into(),
            inner: BufReader::with_capacity(READ_BUFFER, Box::new(decoder)),
            compressed: Some((count, failed)),
            limit: options.max_record_bytes,
            offset: 0,
            defer_data_crc: false,
            deferred: None,
            headers: HeaderCheck::default(),
        }
    }

    /// Bytes of the (uncompressed) stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Leaves the data checksum of every record to the caller, who gets
    /// each from [`TfRecordReader::take_data_checksum`] and must check it.
    pub(crate) fn defer_data_checksums(&mut self) {
        self.defer_data_crc = true;
    }

    /// The stored (masked) data checksum of the record just read, when
    /// checksums are deferred.
    pub(crate) fn take_data_checksum(&mut self) -> Option<u32> {
        self.deferred.take()
    }

    fn error(&self, byte: u64, kind: RecordErrorKind, raw: Option<Vec<u8>>) -> RecordError {
        RecordError {
            source: Arc::clone(&self.source),
            position: Position {
                record: 0,
                line: None,
                byte,
            },
            kind,
            raw,
        }
    }

    fn io_error(&self, byte: u64, e: &io::Error) -> RecordError {
        let kind = match &self.compressed {
            Some((count, failed)) if !failed.load(Ordering::Relaxed) => {
                RecordErrorKind::Gzip(format!(
                    "{e} (after {} compressed bytes)",
                    count.load(Ordering::Relaxed)
                ))
            }
            _ => RecordErrorKind::Io(e.to_string()),
        };
        self.error(byte, kind, None)
    }

    /// Appends the next record's data to `buf` and returns its position, or
    /// `None` at a clean end of the stream (between records). On an error,
    /// `buf` is as it was.
    ///
    /// # Errors
    /// See the type's documentation; [`RecordError::is_fatal`] tells whether
    /// reading may go on.
    #[inline]
    pub fn read_record(&mut self, buf: &mut Vec<u8>) -> Result<Option<Position>, RecordError> {
        self.deferred = None;
        let start = self.offset;
        if self.read_buffered(buf) {
            return Ok(Some(Position {
                record: 0,
                line: None,
                byte: start,
            }));
        }
        self.read_record_slow(buf)
    }

    /// The fast path: when a whole, good frame is in the reader's buffer,
    /// as nearly every small record is, appends its data to `buf`, consumes
    /// it and returns `true`. Anything else (a frame cut by the buffer's
    /// end, a bad checksum, an oversized length) returns `false` having
    /// consumed nothing, for [`Self::read_record_slow`] to deal with.
    #[inline]
    fn read_buffered(&mut self, buf: &mut Vec<u8>) -> bool {
        let avail = self.inner.buffer();
        let verify = !self.defer_data_crc;
        let Some((data, stored)) =
            whole_frame(Portable, &mut self.headers, self.limit, verify, avail, 0)
        else {
            return false;
        };
        if !verify {
            self.deferred = Some(stored);
        }
        buf.extend_from_slice(&avail[data.clone()]);
        let frame = data.end + 4;
        self.inner.consume(frame);
        self.offset += frame as u64;
        true
    }

    /// [`RawReader::read_run`](super::RawReader::read_run) for TFRecords:
    /// the whole, good frames at the start of the read buffer, copied to
    /// `buf` at once (headers and checksums with them); `max_bytes` counts
    /// the records' data only.
    pub(crate) fn read_run(
        &mut self,
        buf: &mut Vec<u8>,
        max_records: usize,
        max_bytes: usize,
        push: &mut impl FnMut(Position, std::ops::Range<usize>, Option<u32>),
    ) -> usize {
        with_crc32c(Run {
            reader: self,
            buf,
            max_records,
            max_bytes,
            push,
        })
    }

    /// [`read_run`](Self::read_run)'s work, with the checksums of `crc`.
    #[inline(always)]
    fn read_run_with(
        &mut self,
        crc: impl Crc32c,
        buf: &mut Vec<u8>,
        max_records: usize,
        max_bytes: usize,
        push: &mut impl FnMut(Position, std::ops::Range<usize>, Option<u32>),
    ) -> usize {
        self.deferred = None;
        let avail = self.inner.buffer();
        let verify = !self.defer_data_crc;
        let base = buf.len();
        let (mut at, mut n, mut bytes) = (0, 0, 0);
        // Frames go in groups of up to four, whose data checksums are
        // computed side by side ([`Crc32c::four`]); the run ends before the
        // first frame that is not whole and sound.
        'run: loop {
            let mut group = [(0, 0, 0u32); 4]; // data's start and end, checksum
            let (mut size, mut next) = (0, at);
            while size < 4 && n + size < max_records && bytes < max_bytes {
                let Some((data, stored)) =
                    whole_frame(crc, &mut self.headers, self.limit, false, avail, next)
                else {
                    break;
                };
                bytes += data.len();
                next = data.end + 4;
                group[size] = (data.start, data.end, stored);
                size += 1;
            }
            let mut computed = [0; 4];
            if verify && size == 4 {
                let [a, b, c, d] = group;
                computed = crc.four([
                    &avail[a.0..a.1],
                    &avail[b.0..b.1],
                    &avail[c.0..c.1],
                    &avail[d.0..d.1],
                ]);
            } else if verify {
                for (c, (start, end, _)) in computed.iter_mut().zip(&group[..size]) {
                    *c = crc.one(&avail[*start..*end]);
                }
            }
            for (k, (start, end, stored)) in group.into_iter().take(size).enumerate() {
                if verify && mask(computed[k]) != stored {
                    break 'run;
                }
                let position = Position {
                    record: 0,
                    line: None,
                    byte: self.offset + at as u64,
                };
                at = end + 4;
                n += 1;
                push(
                    position,
                    base + start..base + end,
                    (!verify).then_some(stored),
                );
            }
            if size < 4 {
                break;
            }
        }
        buf.extend_from_slice(&avail[..at]);
        self.inner.consume(at);
        self.offset += at as u64;
        n
    }

    /// Reads one frame piece by piece from the stream: the path for frames
    /// that are not whole in the buffer, the end of the stream, and every
    /// kind of damage.
    #[cold]
    #[inline(never)]
    fn read_record_slow(&mut self, buf: &mut Vec<u8>) -> Result<Option<Position>, RecordError> {
        let start = self.offset;
        let position = Position {
            record: 0,
            line: None,
            byte: start,
        };
        let mut header = [0u8; 12];
        let got = read_full(&mut self.inner, &mut header).map_err(|e| self.io_error(start, &e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < header.len() {
            self.offset += got as u64;
            return Err(self.error(
                start,
                RecordErrorKind::Truncated { unread: got as u64 },
                None,
            ));
        }
        let len = match self.headers.check(Portable, header) {
            Ok(len) => len,
            Err((stored, computed)) => {
                // The framing is lost: count what is left (up to any read error), without keeping it.
                let rest = count_rest(&mut self.inner);
                self.offset += 12 + rest;
                let kind = RecordErrorKind::LengthChecksum {
                    stored,
                    computed,
                    unread: 12 + rest,
                };
                return Err(self.error(start, kind, None));
            }
        };
        if len > self.limit as u64 {
            let want = len.saturating_add(4);
            let skipped = skip(&mut self.inner, want).map_err(|e| self.io_error(start, &e))?;
            self.offset += 12 + skipped;
            if skipped < want {
                let kind = RecordErrorKind::Truncated {
                    unread: 12 + skipped,
                };
                return Err(self.error(start, kind, None));
            }
            let kind = RecordErrorKind::TooLarge {
                size: len,
                limit: self.limit,
            };
            return Err(self.error(start, kind, None));
        }
        let at = buf.len();
        // The length is not to be trusted with memory before the bytes arrive.
        buf.reserve(usize::try_from(len).unwrap_or(usize::MAX).min(READ_BUFFER));
        let read = (&mut self.inner).take(len).read_to_end(buf);
        let got = match read {
            Ok(n) => n as u64,
            Err(e) => {
                buf.truncate(at);
                return Err(self.io_error(start, &e));
            }
        };
        if got < len {
            buf.truncate(at);
            self.offset += 12 + got;
            return Err(self.error(start, RecordErrorKind::Truncated { unread: 12 + got }, None));
        }
        let mut footer = [0u8; 4];
        let got = match read_full(&mut self.inner, &mut footer) {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(at);
                return Err(self.io_error(start, &e));
            }
        };
        if got < footer.len() {
            buf.truncate(at);
            self.offset += 12 + len + got as u64;
            let kind = RecordErrorKind::Truncated {
                unread: 12 + len + got as u64,
            };
            return Err(self.error(start, kind, None));
        }
        self.offset += 16 + len;
        let stored = u32::from_le_bytes(footer);
        if self.defer_data_crc {
            self.deferred = Some(stored);
            return Ok(Some(position));
        }
        let computed = masked_crc32c(&buf[at..]);
        if stored != computed {
            let kind = RecordErrorKind::DataChecksum { stored, computed };
            let raw = buf.split_off(at);
            return Err(self.error(start, kind, Some(raw)));
        }
        Ok(Some(position))
    }
}

/// Writes TFRecord frames, as TensorFlow's `tf.io.TFRecordWriter` does: for
/// test inputs and fixtures. Wrap the writer in a `flate2` `GzEncoder` for
/// `TF_RECORD_GZIP`.
///
/// # Example
/// ```
/// use batch_prediction::{DataFormat, Instance};
/// use batch_prediction::record::{InstanceReader, ReadOptions, TfRecordWriter};
///
/// let mut w = TfRecordWriter::new(Vec::new());
/// w.write(b"first")?;
/// w.write(b"")?;
/// let file = w.into_inner();
/// assert_eq!(file.len(), 16 + 5 + 16);
/// let read: Vec<_> = InstanceReader::new(DataFormat::TfRecord, "t", Box::new(std::io::Cursor::new(file)), ReadOptions::default())?
///     .map(|r| r.unwrap().instance)
///     .collect();
/// assert_eq!(read, [Instance::Bytes(b"first".to_vec()), Instance::Bytes(Vec::new())]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TfRecordWriter<W: io::Write> {
    inner: W,
}

impl<W: io::Write> TfRecordWriter<W> {
    /// A writer into `inner`, which should be buffered.
    pub fn new(inner: W) -> Self {
        TfRecordWriter { inner }
    }

    /// Writes one record.
    ///
    /// # Errors
    /// The underlying writer's error.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.inner.write_all(&len)?;
        self.inner.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.inner.write_all(data)?;
        self.inner.write_all(&masked_crc32c(data).to_le_bytes())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
