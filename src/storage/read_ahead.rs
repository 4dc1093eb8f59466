//! Reading a large local file on a thread of its own, a few chunks ahead
//! of its reader.
//!
//! Reading a file from the page cache costs the kernel's copy, about as
//! much CPU as framing the records in it: done by the framing thread, the
//! two add up; here the copy runs beside the framing. The thread reads
//! chunks of [`CHUNK`] bytes into at most [`CHUNKS`] buffers, which the
//! reader hands back once read, so memory stays bounded; a read error comes
//! after the data before it, as it would without the thread.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

/// Bytes one read of the file asks for: the line and TFRecord readers'
/// buffer.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Buffers in flight between the thread and the reader.
const CHUNKS: usize = 3;

/// What the thread sends: a chunk, the end, or the error that ended it.
enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// A [`Read`] whose source is read ahead on a thread named `bp-read-ahead`.
///
/// Dropping it ends the thread once its current read returns (it is not
/// waited for).
pub(crate) struct ReadAhead {
    pieces: Receiver<Piece>,
    spent: Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    /// After the end or an error: what every later read returns.
    ended: Option<Result<(), (io::ErrorKind, String)>>,
}

impl ReadAhead {
    /// Reads `source` ahead on a new thread; the error when no thread can
    /// be started.
    pub(crate) fn start<R: Read + Send + 'static>(source: R) -> io::Result<ReadAhead> {
        let (send, pieces) = sync_channel::<Piece>(CHUNKS);
        let (spent, free) = channel::<Vec<u8>>();
        for _ in 0..CHUNKS {
            // `free` is alive: the send cannot fail.
            let _ = spent.send(Vec::new());
        }
        std::thread::Builder::new()
            .name("bp-read-ahead".into())
            .spawn(move || read_ahead(source, &send, &free))?;
        Ok(ReadAhead {
            pieces,
            spent,
            current: Vec::new(),
            at: 0,
            ended: None,
        })
    }
}

/// The thread's loop: read a chunk into a free buffer, send it; stop at the
/// end, at an error (sent), or once the reader is gone.
fn read_ahead<R: Read>(mut source: R, send: &SyncSender<Piece>, free: &Receiver<Vec<u8>>) {
    while let Ok(mut buf) = free.recv() {
        buf.resize(CHUNK, 0);
        let n = loop {
            match source.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = send.send(Piece::Failed(e));
                    return;
                }
            }
        };
        if n == 0 {
            let _ = send.send(Piece::End);
            return;
        }
        buf.truncate(n);
        if send.send(Piece::Data(buf)).is_err() {
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.at == self.current.len() {
            match &self.ended {
                Some(Ok(())) => return Ok(0),
                Some(Err((kind, message))) => {
                    return Err(io::Error::new(*kind, message.clone()));
                }
                None => {}
            }
            let spent = std::mem::take(&mut self.current);
            self.at = 0;
            if spent.capacity() > 0 {
                // The thread may be gone (at the end): nothing to give back to.
                let _ = self.spent.send(spent);
            }
            match self.pieces.recv() {
                Ok(Piece::Data(data)) => self.current = data,
                Ok(Piece::End) => {
                    self.ended = Some(Ok(()));
                    return Ok(0);
                }
                Ok(Piece::Failed(e)) => {
                    self.ended = Some(Err((e.kind(), e.to_string())));
                    return Err(e);
                }
                Err(_) => {
                    let message = "the read-ahead thread ended before the end of the file";
                    self.ended = Some(Err((io::ErrorKind::Other, message.to_owned())));
                    return Err(io::Error::other(message));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives `data` in reads of odd sizes, then fails with `error` if set,
    /// and counts the reads.
    struct Source {
        data: Vec<u8>,
        at: usize,
        step: usize,
        error: Option<io::ErrorKind>,
        interrupted: bool,
    }

    impl Read for Source {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.interrupted {
                self.interrupted = false;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.interrupted = self.at % 3 == 0;
            if self.at == self.data.len() {
                return match self.error {
                    Some(kind) => Err(io::Error::new(kind, "the disk failed")),
                    None => Ok(0),
                };
            }
            let n = out.len().min(self.step).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn source(data: &[u8], step: usize, error: Option<io::ErrorKind>) -> Source {
        Source {
            data: data.to_vec(),
            at: 0,
            step,
            error,
            interrupted: false,
        }
    }

    #[test]
    fn every_byte_comes_in_order_whatever_the_read_sizes() {
        let data = bytes(3 * CHUNK + 12_345);
        for (step, ask) in [
            (CHUNK, 4096),
            (1000, 1 << 20),
            (CHUNK + 1, 7),
            (77_777, CHUNK),
        ] {
            let mut reader = ReadAhead::start(source(&data, step, None)).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0; ask];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == data, "step {step}, ask {ask}");
            // The end stays the end.
            assert_eq!(reader.read(&mut buf).unwrap(), 0);
        }
        let mut empty = ReadAhead::start(source(&[], 10, None)).unwrap();
        assert_eq!(empty.read(&mut [0; 8]).unwrap(), 0);
    }

    #[test]
    fn an_error_comes_after_the_data_before_it_and_stays() {
        let data = bytes(2 * CHUNK + 99);
        let mut reader =
            ReadAhead::start(source(&data, 50_000, Some(io::ErrorKind::TimedOut))).unwrap();
        let mut got = Vec::new();
        let error = loop {
            let mut buf = vec![0; 10_000];
            match reader.read(&mut buf) {
                Ok(0) => panic!("an end instead of the error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert!(got == data);
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("the disk failed"), "{error}");
        // Asked again, the error again, never an end that would hide it.
        let again = reader.read(&mut [0; 10]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::TimedOut);
    }

    /// A source whose thread panics: an error, not an end of file.
    #[test]
    fn a_thread_that_dies_is_an_error() {
        struct Panics;
        impl Read for Panics {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("a source that panics (expected in this test)")
            }
        }
        let mut reader = ReadAhead::start(Panics).unwrap();
        let e = reader.read(&mut [0; 10]).unwrap_err();
        assert!(e.to_string().contains("read-ahead thread ended"), "{e}");
        assert!(reader.read(&mut [0; 10]).is_err());
    }

    /// Dropped halfway, the reader ends its thread: the source is dropped
    /// (seen through a channel) without reading to the end.
    #[test]
    fn dropping_the_reader_ends_the_thread() {
        struct Endless(Sender<()>);
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                out.fill(1);
                Ok(out.len())
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let (dropped, seen) = channel();
        let mut reader = ReadAhead::start(Endless(dropped)).unwrap();
        let mut buf = vec![0; 1000];
        assert_eq!(reader.read(&mut buf).unwrap(), 1000);
        drop(reader);
        seen.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the thread dropped its source");
    }
}
