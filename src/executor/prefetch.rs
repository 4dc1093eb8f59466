//! Small objects fetched ahead of the framing thread: a job over many small
//! objects (an upstream pipeline's part files) would otherwise wait a full
//! round trip before the first byte of each. A few threads read the next
//! whole objects, in the run's order, at most [`AHEAD`] of them at once,
//! while the framing thread reads the current one; it then takes each in
//! order, so what a job reads, and writes, is unchanged.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::shared::POLL;
use crate::storage::{Storage, StorageError, StorageErrorKind};

/// Objects of at most this many bytes are fetched ahead, whole.
pub(super) const MAX_BYTES: u64 = 1 << 20;

/// How many objects may be fetched ahead of the reader (and so at most
/// `AHEAD` × [`MAX_BYTES`] held in memory).
pub(super) const AHEAD: usize = 8;

/// What a fetch gave: the object's bytes, and the error that stopped the
/// read early if one did; or the error of opening it.
type Fetched = Result<(Vec<u8>, Option<io::Error>), StorageError>;

/// The state the fetching threads share.
struct Shared {
    storage: Arc<dyn Storage>,
    locations: Vec<String>,
    next: AtomicUsize,
    slots: Vec<Mutex<Option<SyncSender<Fetched>>>>,
    stop: AtomicBool,
}

/// The objects of a run fetched ahead, taken in order by [`take`](Self::take).
pub(super) struct Prefetch {
    shared: Arc<Shared>,
    results: HashMap<String, Receiver<Fetched>>,
    /// One token per object the fetchers may fetch ahead.
    tokens: SyncSender<()>,
}

impl Prefetch {
    /// Starts fetching `locations` (in the order they will be taken), on
    /// up to [`AHEAD`] threads; nothing when there are fewer than two.
    pub(super) fn start(storage: Arc<dyn Storage>, locations: Vec<String>) -> Option<Prefetch> {
        if locations.len() < 2 {
            return None;
        }
        let (tokens, token_rx) = sync_channel::<()>(AHEAD);
        for _ in 0..AHEAD {
            tokens.send(()).expect("room for every token");
        }
        let mut results = HashMap::with_capacity(locations.len());
        let mut slots = Vec::with_capacity(locations.len());
        for location in &locations {
            let (tx, rx) = sync_channel::<Fetched>(1);
            results.insert(location.clone(), rx);
            slots.push(Mutex::new(Some(tx)));
        }
        let threads = AHEAD.min(locations.len());
        let mut started = 0;
        let shared = Arc::new(Shared {
            storage,
            locations,
            next: AtomicUsize::new(0),
            slots,
            stop: AtomicBool::new(false),
        });
        let token_rx = Arc::new(Mutex::new(token_rx));
        for i in 0..threads {
            let (shared, token_rx) = (Arc::clone(&shared), Arc::clone(&token_rx));
            let spawned = std::thread::Builder::new()
                .name(format!("bp-prefetch-{i}"))
                .spawn(move || fetch_loop(&shared, &token_rx));
            match spawned {
                Ok(_) => started += 1,
                // Fewer threads: the others fetch everything.
                Err(_) => break,
            }
        }
        if started == 0 {
            return None;
        }
        Some(Prefetch {
            shared,
            results,
            tokens,
        })
    }

    /// The object at `location` as a reader, once fetched; `None` when it
    /// is not one of this prefetch's (or its fetch failed unexpectedly: the
    /// caller opens it itself). Waits until `stopping` says to give up.
    pub(super) fn take(
        &mut self,
        location: &str,
        stopping: &dyn Fn() -> bool,
    ) -> Option<Result<Box<dyn Read + Send>, StorageError>> {
        let rx = self.results.remove(location)?;
        let fetched = loop {
            match rx.recv_timeout(POLL) {
                Ok(fetched) => break fetched,
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) if stopping() => {
                    return Some(Err(StorageError::new(
                        StorageErrorKind::Cancelled,
                        location,
                        "the run stopped while the object was fetched",
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        };
        // Room for one more ahead.
        let _ = self.tokens.try_send(());
        Some(fetched.map(|(bytes, error)| {
            Box::new(Ahead {
                data: io::Cursor::new(bytes),
                error,
            }) as Box<dyn Read + Send>
        }))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// A fetcher: takes a token, then the next object, until none is left or
/// the run is over.
fn fetch_loop(shared: &Shared, tokens: &Mutex<Receiver<()>>) {
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let token = tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(POLL);
        match token {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(location) = shared.locations.get(i) else {
            return;
        };
        // A storage that panics: the slot is dropped, and the reader opens
        // the object itself (meeting the panic where the run handles it).
        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.storage.open(location).map(|mut reader| {
                let mut bytes = Vec::new();
                let error = reader.read_to_end(&mut bytes).err();
                (bytes, error)
            })
        }));
        let slot = shared.slots[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(tx), Ok(fetched)) = (slot, fetched) {
            let _ = tx.send(fetched);
        }
    }
}

/// An object read ahead: its bytes, then the error that stopped the read
/// early, as the object's own reader would have given them.
struct Ahead {
    data: io::Cursor<Vec<u8>>,
    error: Option<io::Error>,
}

impl Read for Ahead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }
}
