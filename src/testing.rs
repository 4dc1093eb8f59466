//! Test support for users of the crate (cargo feature `testing`):
//! conformance suites that check a [`Storage`] backend and a
//! [`JobStore`] against their traits' contracts, [`FaultyStorage`], which fails chosen operations so a test
//! can prove that nothing is lost when storage breaks, and [`ShortReads`], a reader that hands out
//! its bytes a few at a time, as network storage may.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use batch_prediction::InMemoryStorage;
//! use batch_prediction::testing::storage_conformance;
//!
//! storage_conformance(&InMemoryStorage::new(), "gs://bucket/suite");
//! # }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::ops::ControlFlow;

use crate::error::ErrorKind;
use crate::iam::Binding;
use crate::model::Job;
use crate::name::{JobName, ProjectName};
use crate::service::{JobRecord, JobStore, ScanOrder};
use crate::status::Code;
use crate::storage::{
    ObjectMeta, ObjectWriter, Storage, StorageError, StorageErrorKind, StorageExt, join_location,
};

fn locations(storage: &dyn Storage, prefix: &str) -> Vec<String> {
    storage
        .list(prefix)
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"))
        .into_iter()
        .map(|m| m.location)
        .collect()
}

/// Checks `store` against the contract of [`JobStore`], using only jobs of
/// `project` (which should have none). Panics, naming the broken rule, on
/// the first violation.
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use batch_prediction::InMemoryJobStore;
/// use batch_prediction::testing::job_store_conformance;
///
/// job_store_conformance(&InMemoryJobStore::new(), &"projects/suite-proj".parse().unwrap());
/// # }
/// ```
///
/// # Panics
/// When the store breaks the contract.
pub fn job_store_conformance(store: &dyn JobStore, project: &ProjectName) {
    let name = |id: &str| -> JobName { project.job(id).expect("valid job ID") };
    let scan = |order: ScanOrder, after: Option<u64>| -> Vec<String> {
        let mut ids = Vec::new();
        store
            .scan(Some(project), order, after, &mut |r| {
                ids.push(r.name.job().to_owned());
                ControlFlow::Continue(())
            })
            .expect("scan");
        ids
    };
    assert!(
        scan(ScanOrder::OldestFirst, None).is_empty(),
        "the project must start empty"
    );
    assert_eq!(store.get(&name("a")).expect("get"), None, "missing is None");

    // Insert: sequence grows, revision starts at 1, names are unique.
    let job = |id: &str| Job::default().set_job_id(id);
    let a = store
        .insert(JobRecord::new(name("a"), job("a")))
        .expect("insert a");
    assert_eq!(a.revision, 1, "insert stores revision 1");
    let b = store
        .insert(JobRecord::new(name("b"), job("b")))
        .expect("insert b");
    assert!(b.sequence > a.sequence, "sequence grows");
    let dup = store
        .insert(JobRecord::new(name("a"), job("again")))
        .expect_err("a duplicate name is refused");
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup}");
    assert_eq!(
        store.get(&name("a")).expect("get").as_ref(),
        Some(&a),
        "get returns what insert stored; a refused insert changed nothing"
    );

    // Update: compare-and-swap on the revision.
    let mut changed = a.clone();
    changed.job.labels.insert("k".into(), "v".into());
    changed.policy.bindings = vec![Binding::new("roles/ml.viewer", ["user:x@example.com"])];
    changed.job_revision = 2;
    changed.policy_revision = 2;
    changed.runner = Some(serde_json::json!({"runner": "slurm", "array": "7"}));
    let a2 = store.update(changed.clone()).expect("update a");
    assert_eq!(
        (a2.revision, a2.sequence),
        (2, a.sequence),
        "update bumps revision only"
    );
    assert_eq!(store.get(&name("a")).expect("get"), Some(a2.clone()));
    assert_eq!(a2.job, changed.job);
    assert_eq!(a2.policy, changed.policy);
    assert_eq!(a2.runner, changed.runner, "update keeps the runner's state");
    assert_eq!((a2.job_revision, a2.policy_revision), (2, 2));
    let stale = store
        .update(changed)
        .expect_err("a stale revision is refused");
    assert!(
        matches!(stale.kind(), ErrorKind::Conflict { .. }),
        "a stale update is a Conflict, got {stale}"
    );
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(
        store.get(&name("a")).expect("get"),
        Some(a2),
        "nothing changed"
    );
    let missing = store
        .update(JobRecord::new(name("zz"), job("zz")))
        .expect_err("updating a missing job is refused");
    assert_eq!(missing.code(), Code::NotFound, "{missing}");

    // Scan: order, start, stop, project scope.
    let c = store
        .insert(JobRecord::new(name("c"), job("c")))
        .expect("insert c");
    assert_eq!(scan(ScanOrder::OldestFirst, None), ["a", "b", "c"]);
    assert_eq!(scan(ScanOrder::NewestFirst, None), ["c", "b", "a"]);
    assert_eq!(scan(ScanOrder::OldestFirst, Some(a.sequence)), ["b", "c"]);
    assert_eq!(scan(ScanOrder::NewestFirst, Some(c.sequence)), ["b", "a"]);
    let mut first = Vec::new();
    store
        .scan(Some(project), ScanOrder::OldestFirst, None, &mut |r| {
            first.push(r.name.job().to_owned());
            ControlFlow::Break(())
        })
        .expect("scan");
    assert_eq!(first, ["a"], "scan stops when the visitor breaks");
    let mut all = Vec::new();
    store
        .scan(None, ScanOrder::OldestFirst, None, &mut |r| {
            if r.name.parent() == *project {
                all.push(r.name.job().to_owned());
            }
            ControlFlow::Continue(())
        })
        .expect("scan all");
    assert_eq!(
        all,
        ["a", "b", "c"],
        "a scan of every project sees them too"
    );
}

/// Checks `storage` against the contract of [`Storage`], using only
/// locations under `base` (which should be empty). Panics, naming the broken
/// rule, on the first violation.
///
/// # Panics
/// When the backend breaks the contract.
pub fn storage_conformance(storage: &dyn Storage, base: &str) {
    let at = |name: &str| join_location(base, name);

    // Missing objects.
    assert!(
        locations(storage, &at("")).is_empty(),
        "base must start empty"
    );
    for (what, kind) in [
        ("head", storage.head(&at("missing")).err().map(|e| e.kind())),
        ("open", storage.open(&at("missing")).err().map(|e| e.kind())),
        (
            "delete",
            storage.delete(&at("missing")).err().map(|e| e.kind()),
        ),
    ] {
        assert_eq!(
            kind,
            Some(StorageErrorKind::NotFound),
            "{what} of a missing object is NotFound"
        );
    }

    // Atomic writes: nothing visible before commit; an abandoned write leaves nothing.
    let mut writer = storage.create(&at("a/1.json")).expect("create");
    writer.write_all(b"{\"x\": 1}\n").expect("write");
    assert!(
        storage.head(&at("a/1.json")).is_err(),
        "visible before commit"
    );
    assert!(
        locations(storage, &at("")).is_empty(),
        "listed before commit"
    );
    let meta = writer.commit().expect("commit");
    assert_eq!(meta.size, 9, "committed size");
    assert_eq!(meta.location, at("a/1.json"));
    {
        let mut abandoned = storage.create(&at("a/abandoned")).expect("create");
        abandoned.write_all(b"partial").expect("write");
    }
    assert_eq!(
        storage.head(&at("a/abandoned")).err().map(|e| e.kind()),
        Some(StorageErrorKind::NotFound),
        "an abandoned write leaves nothing"
    );

    // Reads see exactly what was committed.
    let mut content = Vec::new();
    storage
        .open(&at("a/1.json"))
        .expect("open")
        .read_to_end(&mut content)
        .expect("read");
    assert_eq!(content, b"{\"x\": 1}\n");
    assert_eq!(storage.head(&at("a/1.json")).expect("head").size, 9);

    // Overwrite replaces.
    storage
        .put_bytes(&at("a/1.json"), b"{}\n")
        .expect("overwrite");
    assert_eq!(storage.read_bytes(&at("a/1.json")).expect("read"), b"{}\n");
    // open_at reads from an offset; past the end, nothing.
    for (offset, tail) in [(0u64, &b"{}\n"[..]), (1, b"}\n"), (3, b""), (10, b"")] {
        let mut got = Vec::new();
        storage
            .open_at(&at("a/1.json"), offset)
            .expect("open_at")
            .read_to_end(&mut got)
            .expect("read");
        assert_eq!(got, tail, "open_at offset {offset}");
    }
    assert_eq!(
        storage.open_at(&at("missing"), 1).err().map(|e| e.kind()),
        Some(StorageErrorKind::NotFound),
        "open_at of a missing object is NotFound"
    );

    // Listing: every depth, sorted, by prefix (not by directory).
    for name in ["a/2.json", "ab", "b/c/d", "a/sub/3.json"] {
        storage.put_bytes(&at(name), name.as_bytes()).expect("put");
    }
    assert_eq!(
        locations(storage, &at("a")),
        [at("a/1.json"), at("a/2.json"), at("a/sub/3.json"), at("ab")],
        "list by prefix, sorted, all depths"
    );
    assert_eq!(
        locations(storage, &at("a/")),
        [at("a/1.json"), at("a/2.json"), at("a/sub/3.json")]
    );
    assert!(
        locations(storage, &at("zzz")).is_empty(),
        "no match is an empty list"
    );

    // Wildcards.
    let names = |patterns: &[String]| -> Vec<String> {
        storage
            .expand(patterns)
            .expect("expand")
            .into_iter()
            .map(|m| m.location)
            .collect()
    };
    assert_eq!(names(&[at("a/*.json")]), [at("a/1.json"), at("a/2.json")]);
    assert_eq!(
        names(&[at("a/**.json")]),
        [at("a/1.json"), at("a/2.json"), at("a/sub/3.json")]
    );
    assert_eq!(
        names(&[at("a/?.json"), at("a/1.json")]),
        [at("a/1.json"), at("a/2.json")],
        "sorted, once each"
    );
    let err = storage
        .expand(&[at("a/*.json"), at("nothing*")])
        .unwrap_err();
    assert_eq!(err.kind(), StorageErrorKind::NoMatch);
    assert_eq!(
        err.location(),
        at("nothing*"),
        "the error names the pattern"
    );

    // Delete.
    storage.delete(&at("ab")).expect("delete");
    assert!(storage.head(&at("ab")).is_err(), "deleted");

    // Concurrent writers to distinct objects.
    std::thread::scope(|s| {
        for i in 0..8 {
            let location = at(&format!("c/{i}"));
            s.spawn(move || storage.put_bytes(&location, &[i as u8; 1000]).expect("put"));
        }
    });
    assert_eq!(
        locations(storage, &at("c/")).len(),
        8,
        "concurrent writes all land"
    );

    for location in locations(storage, &at("")) {
        storage.delete(&location).expect("clean up");
    }
}

/// An operation [`FaultyStorage`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// `list` fails.
    List,
    /// `open` fails.
    Open,
    /// Reading an opened object fails after this many bytes.
    ReadAfter(u64),
    /// `create` fails.
    Create,
    /// Writing fails after this many bytes.
    WriteAfter(u64),
    /// `commit` fails (nothing is published).
    Commit,
}

/// Wraps a storage and fails chosen operations on locations that contain
/// a given text; everything else passes through.
///
/// ```
/// use batch_prediction::{InMemoryStorage, Storage, StorageExt};
/// use batch_prediction::testing::{Fault, FaultyStorage};
///
/// let inner = InMemoryStorage::new();
/// inner.put("gs://b/in/a.json", b"{}\n".to_vec());
/// let storage = FaultyStorage::new(inner).fail(Fault::Open, "in/a.json");
/// assert_eq!(storage.open("gs://b/in/a.json").err().unwrap().to_string(), "injected open failure \"gs://b/in/a.json\"");
/// assert_eq!(storage.faults_hit(), 1);
/// ```
pub struct FaultyStorage<S> {
    inner: S,
    faults: Mutex<Vec<(Fault, String)>>,
    hits: AtomicU64,
}

impl<S: Storage> fmt::Debug for FaultyStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("faults", &self.faults)
            .finish()
    }
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: S) -> Self {
        FaultyStorage {
            inner,
            faults: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
        }
    }

    /// Fails `fault` on every location that contains `pattern`.
    #[must_use]
    pub fn fail(self, fault: Fault, pattern: &str) -> Self {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((fault, pattern.to_owned()));
        self
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// How many injected failures happened.
    pub fn faults_hit(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn find(&self, location: &str, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(fault, pattern)| matches(*fault) && location.contains(pattern.as_str()))
            .map(|(fault, _)| *fault)
    }

    fn injected(&self, operation: &str, location: &str) -> StorageError {
        self.hits.fetch_add(1, Ordering::Relaxed);
        StorageError::new(
            StorageErrorKind::Other,
            location,
            format!("injected {operation} failure"),
        )
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        if self.find(prefix, |f| f == Fault::List).is_some() {
            return Err(self.injected("list", prefix));
        }
        self.inner.list(prefix)
    }

    fn head(&self, location: &str) -> Result<ObjectMeta, StorageError> {
        self.inner.head(location)
    }

    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        if self.find(location, |f| f == Fault::Open).is_some() {
            return Err(self.injected("open", location));
        }
        let reader = self.inner.open(location)?;
        match self.find(location, |f| matches!(f, Fault::ReadAfter(_))) {
            Some(Fault::ReadAfter(n)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(Box::new(FailingRead {
                    inner: reader,
                    left: n,
                }))
            }
            _ => Ok(reader),
        }
    }

    fn create(&self, location: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        if self.find(location, |f| f == Fault::Create).is_some() {
            return Err(self.injected("create", location));
        }
        let inner = self.inner.create(location)?;
        let write_after = match self.find(location, |f| matches!(f, Fault::WriteAfter(_))) {
            Some(Fault::WriteAfter(n)) => Some(n),
            _ => None,
        };
        let fail_commit = self.find(location, |f| f == Fault::Commit).is_some();
        if write_after.is_some() || fail_commit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Box::new(FailingWrite {
            inner,
            left: write_after,
            fail_commit,
            location: location.to_owned(),
        }))
    }

    fn delete(&self, location: &str) -> Result<(), StorageError> {
        self.inner.delete(location)
    }

    fn object_key(&self, location: &str) -> String {
        self.inner.object_key(location)
    }

    fn upload_survives_delete(&self, location: &str) -> bool {
        self.inner.upload_survives_delete(location)
    }
}

struct FailingRead {
    inner: Box<dyn Read + Send>,
    left: u64,
}

impl Read for FailingRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("injected read failure"));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

struct FailingWrite {
    inner: Box<dyn ObjectWriter>,
    left: Option<u64>,
    fail_commit: bool,
    location: String,
}

impl Write for FailingWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.left {
            Some(0) => return Err(io::Error::other("injected write failure")),
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let written = self.inner.write(&buf[..n])?;
        if let Some(left) = &mut self.left {
            *left -= written as u64;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for FailingWrite {
    fn commit(self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        if self.fail_commit {
            // Dropping the inner writer abandons it: nothing is published.
            return Err(StorageError::new(
                StorageErrorKind::Other,
                self.location,
                "injected commit failure",
            ));
        }
        self.inner.commit()
    }
}

/// A reader that hands out at most `piece` bytes per `read` call, as a
/// network stream may: readers built on it must cope with records cut at
/// any byte.
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use std::io::Read;
/// use batch_prediction::testing::ShortReads;
///
/// let mut r = ShortReads::new(&b"abcdef"[..], 4);
/// let mut buf = [0; 8];
/// assert_eq!(r.read(&mut buf).unwrap(), 4);
/// assert_eq!(r.read(&mut buf).unwrap(), 2);
/// # }
/// ```
#[derive(Debug)]
pub struct ShortReads<R> {
    inner: R,
    piece: usize,
}

impl<R: std::io::Read> ShortReads<R> {
    /// Reads from `inner` at most `piece` bytes at a time (at least 1).
    pub fn new(inner: R, piece: usize) -> Self {
        ShortReads {
            inner,
            piece: piece.max(1),
        }
    }
}

impl<R: std::io::Read> std::io::Read for ShortReads<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len());
        self.inner.read(&mut buf[..n])
    }
}
