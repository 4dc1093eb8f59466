//! Readers stream in bounded memory: reading a large input allocates no more
//! than a few buffers, whatever its size. A test binary of its own, so that
//! the counting allocator sees no other test's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use batch_prediction::DataFormat;
use batch_prediction::record::{InstanceReader, ReadOptions, TfRecordWriter};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Produces `frames` copies of `unit` without holding them.
struct Repeat {
    unit: Vec<u8>,
    left: usize,
    at: usize,
}

impl Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.unit.len() - self.at);
        buf[..n].copy_from_slice(&self.unit[self.at..self.at + n]);
        self.at += n;
        if self.at == self.unit.len() {
            self.at = 0;
            self.left -= 1;
        }
        Ok(n)
    }
}

/// Peak bytes allocated while reading `copies` × `unit` in `format`, above what was allocated before.
fn peak_while_reading(
    format: DataFormat,
    unit: Vec<u8>,
    copies: usize,
    records_per_unit: usize,
) -> usize {
    let input = Repeat {
        unit,
        left: copies,
        at: 0,
    };
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let reader =
        InstanceReader::new(format, "big", Box::new(input), ReadOptions::default()).unwrap();
    let mut n = 0;
    for item in reader {
        std::hint::black_box(item.unwrap());
        n += 1;
    }
    assert_eq!(n, copies * records_per_unit);
    PEAK.load(Ordering::Relaxed) - before
}

#[test]
fn readers_use_bounded_memory_whatever_the_input_size() {
    let line = b"{\"key\": 12345, \"x\": [0.1, -2.3, 1.25, 0.5], \"note\": \"a line of about a hundred bytes....\"}\n";
    let mut frame = TfRecordWriter::new(Vec::new());
    frame.write(&line[..line.len() - 1]).unwrap();
    let frame = frame.into_inner();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..1000 {
        std::io::Write::write_all(&mut gz, &frame).unwrap();
    }
    let gz_member = gz.finish().unwrap();

    const LIMIT: usize = 2 << 20; // read buffers (2 × 256 KiB for gzip), one record, the decoder's state
    for (format, unit, copies, per_unit) in [
        (DataFormat::Json, line.to_vec(), 400_000, 1),
        (DataFormat::Text, line.to_vec(), 400_000, 1),
        (DataFormat::TfRecord, frame.clone(), 400_000, 1),
        // Concatenated gzip members: a multi-member stream of 400,000 records.
        (DataFormat::TfRecordGzip, gz_member.clone(), 400, 1000),
    ] {
        let input_mb = frame.len() * per_unit * copies / 1_000_000;
        let peak = peak_while_reading(format, unit, copies, per_unit);
        assert!(
            peak < LIMIT,
            "{format}: {peak} bytes at peak for {input_mb} MB of records"
        );
    }
}
