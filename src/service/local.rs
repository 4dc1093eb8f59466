//! [`LocalJobStore`]: a durable job store in a directory.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde_json::{Value, json};

use crate::error::Error;
use crate::iam::Policy;
use crate::model::Job;
use crate::name::{JobName, ModelName, ProjectName};
use crate::service::store::{
    self, Index, JobRecord, JobStore, ModelRecord, ScanOrder, models_of, put_model_in, read,
    remove_model_in,
};
use crate::status::Code;

/// A durable job store: one JSON file per job under a directory, each
/// write made atomic and durable before it is acknowledged.
///
/// Layout: `DIR/LOCK`, `DIR/jobs/PROJECT/JOB.json`, and
/// `DIR/models/PROJECT/MODEL.json` (a model with its versions), where `JOB`
/// and `MODEL` are the ID in lowercase followed, if it has capitals, by `^`
/// and a hex mask of where they are (so IDs that differ only in case stay
/// apart on case-insensitive file systems), and a `:` in `PROJECT` is
/// written `^3a`.
///
/// Every insert and update writes a temporary file in the job's directory,
/// fsyncs it, renames it over the job's file and fsyncs the directory: a
/// crash or power loss at any point leaves either the old record or the
/// new one, never a torn file, and a write that returned `Ok` is on disk.
/// Opening the store removes temporary files a crash left behind, and
/// loads every record into memory, so reads and scans never touch the disk.
/// If a write fails after its rename (the directory sync failed), the
/// store takes no more writes until it is reopened: the disk may then hold
/// a record that was not acknowledged.
///
/// One process at a time: [`LocalJobStore::open`] takes an exclusive lock
/// on `DIR/LOCK`, held until the store is dropped.
///
/// # Example
/// ```
/// use batch_prediction::{Job, JobName, JobStore, LocalJobStore};
/// use batch_prediction::service::JobRecord;
///
/// let dir = tempfile::tempdir()?;
/// let name: JobName = "projects/my-proj/jobs/j1".parse()?;
/// {
///     let store = LocalJobStore::open(dir.path())?;
///     store.insert(JobRecord::new(name.clone(), Job::default().set_job_id("j1")))?;
///     assert!(LocalJobStore::open(dir.path()).is_err(), "locked while open");
/// }
/// let reopened = LocalJobStore::open(dir.path())?;
/// assert_eq!(reopened.get(&name)?.unwrap().job.job_id.as_deref(), Some("j1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalJobStore {
    dir: PathBuf,
    index: RwLock<Index>,
    models: RwLock<BTreeMap<String, ModelRecord>>,
    temp_counter: AtomicU64,
    /// Project directories whose entry in `DIR/jobs` is known to be durable.
    durable_dirs: Mutex<HashSet<PathBuf>>,
    /// Set when a write failed after its rename: the disk may then differ
    /// from what was acknowledged, so the store refuses writes until reopened.
    broken: AtomicBool,
    _lock: File,
}

const FORMAT: u64 = 1;
const TEMP_MARK: &str = ".bp-tmp.";

impl LocalJobStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` when another process holds the store;
    /// `INTERNAL` for an I/O error, a record file that cannot be read, or
    /// a record or `LOCK` that is not a regular file (a FIFO, a socket, a
    /// symlink: refused, never waited on), each named in the message.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalJobStore, Error> {
        let dir = dir.as_ref().to_path_buf();
        let jobs = dir.join("jobs");
        fs::create_dir_all(&jobs).map_err(|e| io_error("creating", &jobs, e))?;
        // Make the directories themselves durable: DIR/jobs in DIR, DIR in its parent.
        for d in [Some(jobs.as_path()), Some(dir.as_path()), dir.parent()]
            .into_iter()
            .flatten()
            .filter(|d| !d.as_os_str().is_empty())
        {
            sync_dir(d).map_err(|e| io_error("syncing", d, e))?;
        }
        let lock_path = dir.join("LOCK");
        if lock_path.exists() || lock_path.is_symlink() {
            // Opening a FIFO for writing would block until a reader came.
            regular_file(&lock_path)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("opening", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::failed_precondition(format!(
                    "job store {} is in use by another process",
                    dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error("locking", &lock_path, e)),
        }
        let mut index = Index::default();
        let mut durable_dirs = HashSet::new();
        let mut sequences = HashSet::new();
        for project in read_dir(&jobs)? {
            if !project.is_dir() {
                continue;
            }
            // Records a crash left renamed but not yet synced become durable
            // before anyone reads them.
            sync_dir(&project).map_err(|e| io_error("syncing", &project, e))?;
            durable_dirs.insert(project.clone());
            for path in read_dir(&project)? {
                let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if file_name.contains(TEMP_MARK) {
                    // A write that a crash interrupted before its rename:
                    // never acknowledged, so never part of the store.
                    fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
                    continue;
                }
                if !file_name.ends_with(".json") {
                    continue;
                }
                let record = load(&path)?;
                if path != record_path(&dir, &record.name) {
                    return Err(corrupt(
                        &path,
                        format!("it holds job {:?}", record.name.to_string()),
                    ));
                }
                if !sequences.insert(record.sequence) {
                    return Err(corrupt(
                        &path,
                        format!("another record has sequence {}", record.sequence),
                    ));
                }
                index.put(record);
            }
        }
        let models = load_models(&dir, &mut durable_dirs)?;
        Ok(LocalJobStore {
            dir,
            index: RwLock::new(index),
            models: RwLock::new(models),
            temp_counter: AtomicU64::new(0),
            durable_dirs: Mutex::new(durable_dirs),
            broken: AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `record` durably. On failure, says whether the record's file
    /// may already hold the new record (the rename happened).
    fn persist(&self, record: &JobRecord) -> Result<(), (Error, bool)> {
        let mut bytes = serde_json::to_vec(&to_json(record)).expect("JSON values serialize");
        bytes.push(b'\n');
        self.replace_file(&record_path(&self.dir, &record.name), &bytes)
    }

    /// Replaces the file at `path` (`DIR/KIND/PROJECT/FILE`) with `bytes`,
    /// durably: a temporary file, synced, renamed over it, its directory
    /// synced. On failure, says whether the rename happened.
    fn replace_file(&self, path: &Path, bytes: &[u8]) -> Result<(), (Error, bool)> {
        let parent = path.parent().expect("a record path has a parent");
        let jobs = parent.parent().expect("DIR/KIND");
        {
            let mut durable = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
            if !durable.contains(parent) {
                // DIR/KIND itself, the first time (DIR/models is made on first use).
                fs::create_dir_all(parent)
                    .and_then(|()| sync_dir(parent))
                    .and_then(|()| sync_dir(jobs))
                    .and_then(|()| sync_dir(&self.dir))
                    .map_err(|e| (io_error("creating", parent, e), false))?;
                durable.insert(parent.to_path_buf());
            }
        }
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = parent.join(format!(
            ".{}{TEMP_MARK}{}.{n}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("job"),
            std::process::id()
        ));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err((io_error("writing", path, e), false));
        }
        sync_dir(parent).map_err(|e| (io_error("syncing", parent, e), true))
    }

    /// The error of a write to a store that took no more writes.
    fn refuse_if_broken(&self) -> Result<(), Error> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::external(
                Code::Internal,
                format!("job store {}", self.dir.display()),
                "an earlier write failed after its file was replaced; reopen the store",
            ));
        }
        Ok(())
    }

    fn write(
        &self,
        record: JobRecord,
        prepare: fn(&Index, JobRecord) -> Result<JobRecord, Error>,
    ) -> Result<JobRecord, Error> {
        let mut index = store::write(&self.index);
        self.refuse_if_broken()?;
        let record = prepare(&index, record)?;
        match self.persist(&record) {
            Ok(()) => {
                index.put(record.clone());
                Ok(record)
            }
            Err((e, renamed)) => {
                if renamed {
                    // Memory follows the disk, and no more writes are taken:
                    // the record may or may not survive a power loss.
                    index.put(record);
                    self.broken.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

impl JobStore for LocalJobStore {
    fn get(&self, name: &JobName) -> Result<Option<JobRecord>, Error> {
        Ok(read(&self.index).get(name).cloned())
    }

    fn insert(&self, record: JobRecord) -> Result<JobRecord, Error> {
        self.write(record, Index::prepare_insert)
    }

    fn update(&self, record: JobRecord) -> Result<JobRecord, Error> {
        self.write(record, Index::prepare_update)
    }

    fn scan(
        &self,
        project: Option<&ProjectName>,
        order: ScanOrder,
        after: Option<u64>,
        visit: &mut dyn FnMut(&JobRecord) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        read(&self.index).scan(project, order, after, visit);
        Ok(())
    }

    fn get_model(&self, name: &ModelName) -> Result<Option<ModelRecord>, Error> {
        Ok(read(&self.models).get(&name.to_string()).cloned())
    }

    fn put_model(&self, record: ModelRecord) -> Result<ModelRecord, Error> {
        let mut models = store::write(&self.models);
        self.refuse_if_broken()?;
        // The compare-and-swap on a copy of the one entry; memory follows the disk.
        let key = record.name.to_string();
        let mut trial: BTreeMap<String, ModelRecord> = models
            .get(&key)
            .map(|r| (key.clone(), r.clone()))
            .into_iter()
            .collect();
        let stored = put_model_in(&mut trial, record)?;
        let mut bytes = serde_json::to_vec(&json!({"format": FORMAT, "model": stored.to_json()}))
            .expect("JSON values serialize");
        bytes.push(b'\n');
        match self.replace_file(&model_path(&self.dir, &stored.name), &bytes) {
            Ok(()) => {
                models.insert(key, stored.clone());
                Ok(stored)
            }
            Err((e, renamed)) => {
                if renamed {
                    models.insert(key, stored);
                    self.broken.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    fn delete_model(&self, name: &ModelName, revision: u64) -> Result<(), Error> {
        let mut models = store::write(&self.models);
        self.refuse_if_broken()?;
        let key = name.to_string();
        let mut trial: BTreeMap<String, ModelRecord> = models
            .get(&key)
            .map(|r| (key.clone(), r.clone()))
            .into_iter()
            .collect();
        remove_model_in(&mut trial, name, revision)?;
        let path = model_path(&self.dir, name);
        let parent = path.parent().expect("a model path has a parent");
        fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
        models.remove(&key);
        sync_dir(parent).map_err(|e| {
            self.broken.store(true, Ordering::Relaxed);
            io_error("syncing", parent, e)
        })
    }

    fn list_models(&self, project: &ProjectName) -> Result<Vec<ModelRecord>, Error> {
        Ok(models_of(&read(&self.models), project))
    }
}

fn model_path(dir: &Path, name: &ModelName) -> PathBuf {
    dir.join("models")
        .join(escape(name.project()))
        .join(format!("{}.json", job_file_stem(name.model())))
}

/// The models under `DIR/models`, removing the temporary files a crash
/// left (their writes were never acknowledged).
fn load_models(
    dir: &Path,
    durable_dirs: &mut HashSet<PathBuf>,
) -> Result<BTreeMap<String, ModelRecord>, Error> {
    let mut models = BTreeMap::new();
    let root = dir.join("models");
    if !root.is_dir() {
        return Ok(models);
    }
    for project in read_dir(&root)? {
        if !project.is_dir() {
            continue;
        }
        sync_dir(&project).map_err(|e| io_error("syncing", &project, e))?;
        durable_dirs.insert(project.clone());
        for path in read_dir(&project)? {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if file_name.contains(TEMP_MARK) {
                fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
                continue;
            }
            if !file_name.ends_with(".json") {
                continue;
            }
            regular_file(&path)?;
            let bytes = fs::read(&path).map_err(|e| io_error("reading", &path, e))?;
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e.to_string()))?;
            if value.get("format").and_then(Value::as_u64) != Some(FORMAT) {
                return Err(corrupt(
                    &path,
                    format!("unknown format {}; expected {FORMAT}", value["format"]),
                ));
            }
            let record = ModelRecord::from_json(value["model"].clone())
                .map_err(|e| corrupt(&path, e.to_string()))?;
            if path != model_path(dir, &record.name) {
                return Err(corrupt(
                    &path,
                    format!("it holds model {:?}", record.name.to_string()),
                ));
            }
            models.insert(record.name.to_string(), record);
        }
    }
    Ok(models)
}

fn record_path(dir: &Path, name: &JobName) -> PathBuf {
    dir.join("jobs")
        .join(escape(name.project()))
        .join(format!("{}.json", job_file_stem(name.job())))
}

/// A job ID (`[A-Za-z][A-Za-z0-9_]{0,127}`) in lowercase, followed, if it
/// has capitals, by `^` and a hex mask of their positions: one-to-one, and
/// at most 161 bytes, so every valid ID fits a file name.
fn job_file_stem(id: &str) -> String {
    let mut mask = 0u128;
    for (i, b) in id.bytes().enumerate().take(128) {
        if b.is_ascii_uppercase() {
            mask |= 1 << i;
        }
    }
    let lower = id.to_ascii_lowercase();
    if mask == 0 {
        lower
    } else {
        format!("{lower}^{mask:x}")
    }
}

/// Keeps `[a-z0-9_.-]`; writes every other byte as `^XX`. For project
/// segments, where only the `:` of a domain-scoped ID needs it.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for &b in segment.as_bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("^{b:02x}")),
        }
    }
    out
}

fn to_json(record: &JobRecord) -> Value {
    let int = |v: u64| Value::String(v.to_string());
    let mut value = json!({
        "format": FORMAT,
        "name": record.name.to_string(),
        "sequence": int(record.sequence),
        "revision": int(record.revision),
        "jobRevision": int(record.job_revision),
        "policyRevision": int(record.policy_revision),
        "job": record.job.to_json(),
        "policy": record.policy.to_json(),
    });
    if let Some(runner) = &record.runner {
        value["runner"] = runner.clone();
    }
    value
}

fn load(path: &Path) -> Result<JobRecord, Error> {
    regular_file(path)?;
    let bytes = fs::read(path).map_err(|e| io_error("reading", path, e))?;
    let mut value: Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let bad = |what: &str| corrupt(path, format!("missing or invalid \"{what}\""));
    if value.get("format").and_then(Value::as_u64) != Some(FORMAT) {
        return Err(corrupt(
            path,
            format!("unknown format {}; expected {FORMAT}", value["format"]),
        ));
    }
    let int = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad(key))
    };
    let (sequence, revision, job_revision, policy_revision) = (
        int("sequence")?,
        int("revision")?,
        int("jobRevision")?,
        int("policyRevision")?,
    );
    // Numbers a store can have written: from 1, far from overflowing, and
    // no part changed after the record's last revision.
    let limit = u64::MAX / 2;
    if !(1..limit).contains(&sequence)
        || !(1..limit).contains(&revision)
        || job_revision > revision
        || policy_revision > revision
    {
        return Err(corrupt(
            path,
            format!(
                "impossible numbers: sequence {sequence}, revision {revision}, jobRevision {job_revision}, policyRevision {policy_revision}"
            ),
        ));
    }
    let name: JobName = value
        .get("name")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("name"))?;
    let job = Job::from_value(value["job"].take()).map_err(|e| corrupt(path, e.to_string()))?;
    let policy =
        Policy::from_value(value["policy"].take()).map_err(|e| corrupt(path, e.to_string()))?;
    let runner = match value.get_mut("runner").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(state @ Value::Object(_)) => Some(state),
        Some(_) => return Err(bad("runner")),
    };
    Ok(JobRecord {
        runner,
        name,
        job,
        policy,
        sequence,
        revision,
        job_revision,
        policy_revision,
    })
}

/// Refuses what is not a regular file (a FIFO, whose open would block
/// forever, a socket, a device, a symlink): the store writes none of them.
fn regular_file(path: &Path) -> Result<(), Error> {
    let kind = fs::symlink_metadata(path)
        .map_err(|e| io_error("reading", path, e))?
        .file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(Error::external(
        Code::Internal,
        format!("job store: {} is not a regular file", path.display()),
        format!(
            "it is a {}; the store only ever writes regular files",
            describe(kind)
        ),
    ))
}

/// What a non-regular file is, in words.
fn describe(kind: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "FIFO";
        }
        if kind.is_socket() {
            return "socket";
        }
        if kind.is_block_device() || kind.is_char_device() {
            return "device";
        }
    }
    if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))? {
        paths.push(entry.map_err(|e| io_error("listing", dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Makes a directory's entries durable. Only Unix can open a directory to
/// sync it; elsewhere the renames are as durable as the platform makes them.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

fn io_error(doing: &str, path: &Path, e: io::Error) -> Error {
    Error::external(
        Code::Internal,
        format!("job store: {doing} {}", path.display()),
        e,
    )
}

fn corrupt(path: &Path, why: String) -> Error {
    Error::external(
        Code::Internal,
        format!("job store: corrupt record {}", path.display()),
        why,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_case_apart_and_stay_short() {
        assert_eq!(escape("my-proj"), "my-proj");
        assert_eq!(escape("example.com:p"), "example.com^3ap");
        assert_eq!(job_file_stem("my_job_1"), "my_job_1");
        assert_eq!(job_file_stem("Job"), "job^1");
        assert_eq!(job_file_stem("jOB"), "job^6");
        let ids = ["JOB", "job", "Job", "jOb", "joB"];
        let stems: HashSet<String> = ids.iter().map(|id| job_file_stem(id)).collect();
        assert_eq!(stems.len(), ids.len());
        let longest = job_file_stem(&"A".repeat(128));
        assert_eq!(longest.len(), 128 + 1 + 32);
    }
}
