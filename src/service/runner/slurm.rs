//! The Slurm runner: each job becomes a Slurm job array of parts, each
//! `batch-prediction run JOB --shard I/N` on a node of the cluster, then a
//! `batch-prediction run JOB --merge` job, which writes the job's end.
//! See [`SlurmRunner`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::executor::BatchExecutor;
use crate::model::{Job, ModelVersion, State};
use crate::name::JobName;
use crate::state::Transition;
use crate::trace;

use super::Runner;
use crate::service::{JobRecord, JobService, present};

/// How a [`SlurmRunner`] submits: the program the parts run, where their
/// files go, and the `sbatch` options of each part.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SlurmOptions {
    /// The `batch-prediction` program the parts and the merge run, as the
    /// cluster's nodes see it.
    pub program: PathBuf,
    /// The folder, on a file system every node shares, where each job's
    /// files go (`DIR/PROJECT/JOB/`: the job file, the scripts, the logs).
    /// Its `%` signs are passed to Slurm doubled, so that Slurm takes them
    /// as they are in log names; a backslash in it would make Slurm take
    /// the parts' log names without their patterns, so that they share one.
    pub work_dir: PathBuf,
    /// Flags given to every part and the merge after `run JOB`, e.g.
    /// `--gcs-root ROOT` or `--predictor onnx` (the same for all, since
    /// they decide the plan).
    pub args: Vec<String>,
    /// `--partition`, if given.
    pub partition: Option<String>,
    /// `--account`, if given.
    pub account: Option<String>,
    /// `--time`, the time limit of each part and the merge, if given
    /// (Slurm's formats: `MINUTES`, `HH:MM:SS`, `D-HH`, …).
    pub time_limit: Option<String>,
    /// `--cpus-per-task` of each part, and its `--threads` (default 2).
    pub cpus_per_part: u32,
    /// `--mem` of each part, if given (default: none, so a part fits a
    /// node that declares no memory).
    pub mem_per_part: Option<String>,
    /// More `#SBATCH` lines for the parts' and the merge's scripts, each
    /// without the `#SBATCH ` prefix (e.g. `--qos=low`).
    pub sbatch_lines: Vec<String>,
    /// How many times a part (or the merge) that ended other than
    /// `COMPLETED` is submitted again before the job fails (default 1).
    pub retries: u32,
    /// How often the runner asks Slurm about the jobs it follows
    /// (default 1 s).
    pub poll_interval: Duration,
    /// The longest a Slurm command may take before the runner gives up on
    /// it and tries again in the next round (default 30 s).
    pub command_timeout: Duration,
}

impl SlurmOptions {
    /// Options for parts that run `program`, with their files in `work_dir`.
    pub fn new(program: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        SlurmOptions {
            program: program.into(),
            work_dir: work_dir.into(),
            args: Vec::new(),
            partition: None,
            account: None,
            time_limit: None,
            cpus_per_part: 2,
            mem_per_part: None,
            sbatch_lines: Vec::new(),
            retries: 1,
            poll_interval: Duration::from_secs(1),
            command_timeout: Duration::from_secs(30),
        }
    }

    /// Sets [`args`](Self::args).
    #[must_use]
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`partition`](Self::partition).
    #[must_use]
    pub fn with_partition(mut self, partition: impl Into<String>) -> Self {
        self.partition = Some(partition.into());
        self
    }

    /// Sets [`account`](Self::account).
    #[must_use]
    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// Sets [`time_limit`](Self::time_limit).
    #[must_use]
    pub fn with_time_limit(mut self, limit: impl Into<String>) -> Self {
        self.time_limit = Some(limit.into());
        self
    }

    /// Sets [`cpus_per_part`](Self::cpus_per_part) (at least 1).
    #[must_use]
    pub fn with_cpus_per_part(mut self, cpus: u32) -> Self {
        self.cpus_per_part = cpus.max(1);
        self
    }

    /// Sets [`mem_per_part`](Self::mem_per_part).
    #[must_use]
    pub fn with_mem_per_part(mut self, mem: impl Into<String>) -> Self {
        self.mem_per_part = Some(mem.into());
        self
    }

    /// Adds an `#SBATCH` line (see [`sbatch_lines`](Self::sbatch_lines)).
    #[must_use]
    pub fn with_sbatch_line(mut self, line: impl Into<String>) -> Self {
        self.sbatch_lines.push(line.into());
        self
    }

    /// Sets [`retries`](Self::retries).
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`poll_interval`](Self::poll_interval).
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
}

/// Runs each job of a [`JobService`] on a Slurm cluster: an array of
/// `min(maxWorkerCount, plan shards)` parts running the `batch-prediction`
/// program, then a merge.
///
/// The runner keeps the Slurm job IDs in the job's record
/// ([`JobRecord::runner`]), so a restarted service goes on following them,
/// and asks Slurm (`scontrol show job`) how they are doing:
///
/// - `PREPARING` once submitted, `RUNNING` when a part runs;
/// - a part that ended other than `COMPLETED` (failed, timed out, out of
///   memory, its node failed for good, held after a failed launch, or
///   pending on a limit it can never meet, such as a per-job limit of its
///   partition, QOS or association) is
///   run again alone up to [`SlurmOptions::retries`] times, then ends the
///   job `FAILED`, naming the part, its Slurm job, Slurm's state, reason
///   and exit code, and the end of its log;
/// - the merge is submitted with the parts, to wait for them in Slurm's
///   queue (`--dependency=afterok:ARRAY --kill-on-invalid-dep=yes`), so
///   it starts as soon as they are done; when a part is run again, the
///   runner cancels that merge (its dependency can no longer be met) and
///   submits another once every part completed. The job it prints gives
///   the end, seen within 100 ms of being written (the runner reads the
///   file between its Slurm queries): `SUCCEEDED` with the counts and the
///   node hours the parts measured, or `FAILED` with its message;
/// - a cancel runs `scancel` on every Slurm job of the job, which is
///   `CANCELLED` once none of them is left pending or running.
///
/// A part Slurm no longer knows of (its record aged out of the controller
/// while no runner followed it) counts as ended: the merge then finds out
/// whether its shards were committed, and fails naming those that were not.
///
/// The service must be built
/// [`with_external_runner(SlurmRunner::NAME)`](crate::service::JobServiceBuilder::with_external_runner),
/// so that it leaves the jobs on the cluster to this runner when it opens
/// its store again. The Slurm commands (`sbatch`, `scontrol`, `scancel`)
/// are found on `PATH` and reach the cluster that `SLURM_CONF` (or the
/// host's configuration) names. The nodes must see the job's inputs and
/// outputs where the service sees them (a shared file system, or the
/// same buckets) and [`SlurmOptions::work_dir`].
///
/// A refused `sbatch` (a partition or account the cluster lacks, a limit
/// broken) ends the job `FAILED` with Slurm's answer; one that could not
/// reach the controller, or took longer than
/// [`SlurmOptions::command_timeout`], is tried again in the next round,
/// and [`Runner::run_once`] returns `UNAVAILABLE` saying why meanwhile.
/// Should the service die between the parts' `sbatch` and the write that
/// records its ID (or that `sbatch` time out after Slurm took the job),
/// the next round finds the array in Slurm's queue by the job's Slurm name
/// (`bp-PROJECT-JOB`) and folder and follows it instead of submitting the
/// parts again (`squeue --states=all`, so parts that already ended count,
/// for as long as the cluster's `MinJobAge` keeps them). A merge whose
/// answer was lost the same way is submitted again, after the parts:
/// merges only read the parts' files and print the job's end.
///
/// A job that names its model by `modelName` or `versionName` is given to
/// the parts with the version's `deploymentUri` as its `uri`, when the
/// service holds that version; otherwise as it is.
///
/// # Example
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use batch_prediction::service::{Runner, SlurmOptions, SlurmRunner};
/// use batch_prediction::{BatchExecutor, EchoResolver, JobService, LocalJobStore, LocalStorage};
///
/// let service = JobService::builder(LocalJobStore::open("/shared/jobs")?)
///     .with_external_runner(SlurmRunner::NAME)
///     .build()?;
/// // The executor plans each job (it lists the inputs); the parts predict.
/// let planner = BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(EchoResolver));
/// let runner = SlurmRunner::new(
///     planner,
///     SlurmOptions::new("/shared/bin/batch-prediction", "/shared/slurm")
///         .with_args(["--predictor", "onnx"])
///         .with_partition("batch"),
/// );
/// loop {
///     runner.run_once(&service, Duration::from_secs(1))?;
/// }
/// # Ok::<(), batch_prediction::Error>(())
/// ```
pub struct SlurmRunner {
    planner: BatchExecutor,
    options: SlurmOptions,
    /// When the followed jobs were last asked about.
    last_poll: std::sync::Mutex<Option<Instant>>,
    /// The followed jobs whose merge was submitted, as last seen: their
    /// printed end is looked for at every call, not once per poll.
    merging: std::sync::Mutex<std::collections::HashMap<JobName, Followed>>,
}

/// How often a submitted merge's output is looked at for the job's end
/// (a file read, not a Slurm query).
const MERGE_WATCH: Duration = Duration::from_millis(100);

impl fmt::Debug for SlurmRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlurmRunner")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SlurmRunner {
    /// The name in the [`JobRecord::runner`] state of its jobs.
    pub const NAME: &'static str = "slurm";

    /// A runner that plans each job with `planner` (which must see the
    /// inputs as the parts will) and submits it as `options` say.
    pub fn new(planner: BatchExecutor, options: SlurmOptions) -> Self {
        SlurmRunner {
            planner,
            options,
            last_poll: std::sync::Mutex::new(None),
            merging: std::sync::Mutex::default(),
        }
    }

    /// Its options.
    pub fn options(&self) -> &SlurmOptions {
        &self.options
    }
}

impl Runner for SlurmRunner {
    fn run_once(&self, service: &JobService, wait: Duration) -> Result<(), Error> {
        let seen = service.changes();
        let mut unreachable = None;
        while let Some(record) = service.claim_next(Followed::claimed())? {
            unreachable = unreachable.or(self.advance(service, record)?);
        }
        // Slurm is asked about the jobs it runs once per poll interval,
        // however often this is called.
        let poll = self.options.poll_interval;
        let due = {
            let mut last = crate::service::lock(&self.last_poll);
            let due = last.is_none_or(|at| at.elapsed() >= poll);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let mut merging = std::collections::HashMap::new();
            for record in service.followed_jobs(Self::NAME)? {
                if let Ok(followed) = Followed::of(&record)
                    && followed.merge.is_some()
                {
                    merging.insert(record.name.clone(), followed);
                }
                unreachable = unreachable.or(self.advance(service, record)?);
            }
            *crate::service::lock(&self.merging) = merging;
        } else {
            // Between polls: a merge that printed the job's end ends it now.
            let ended: Vec<JobName> = crate::service::lock(&self.merging)
                .iter()
                .filter(|(_, followed)| self.printed(followed).is_some())
                .map(|(name, _)| name.clone())
                .collect();
            for name in ended {
                crate::service::lock(&self.merging).remove(&name);
                if let Some(record) = service.store().get(&name)? {
                    unreachable = unreachable.or(self.advance(service, record)?);
                }
            }
        }
        let mut next = crate::service::lock(&self.last_poll)
            .map_or(Duration::ZERO, |at| poll.saturating_sub(at.elapsed()));
        if !crate::service::lock(&self.merging).is_empty() {
            next = next.min(MERGE_WATCH);
        }
        service.wait_for_change(seen, wait.min(next));
        match unreachable {
            Some(why) => Err(Error::external(
                crate::Code::Unavailable,
                "Slurm",
                format!("{why}; the runner asks again in its next round"),
            )),
            None => Ok(()),
        }
    }

    fn external(&self) -> Option<&str> {
        Some(Self::NAME)
    }
}

/// What the runner keeps with a job (its [`JobRecord::runner`] state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Followed {
    runner: String,
    /// The job's folder under the work dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
    /// N, the number of parts.
    #[serde(default)]
    parts: usize,
    /// The array job's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    array: Option<String>,
    /// Parts submitted again alone, by index: the last submission's ID
    /// and how many times the part was submitted in all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    reruns: BTreeMap<usize, Rerun>,
    /// The merge's job ID, once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merge: Option<String>,
    /// How many times the merge was submitted.
    #[serde(default)]
    merge_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rerun {
    id: String,
    attempts: u32,
}

impl Followed {
    fn claimed() -> Value {
        serde_json::json!({ "runner": SlurmRunner::NAME })
    }

    /// The state kept with `record`; an error when it cannot be read
    /// (written by another version), rather than a guess that would
    /// submit the job again.
    fn of(record: &JobRecord) -> Result<Followed, String> {
        match &record.runner {
            None => Ok(Followed {
                runner: SlurmRunner::NAME.into(),
                ..Followed::default()
            }),
            Some(state) => serde_json::from_value(state.clone()).map_err(|e| {
                format!(
                    "the Slurm runner cannot read the state it keeps with the job ({e}): {state}"
                )
            }),
        }
    }

    /// Every Slurm job ID it submitted that may still run.
    fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.array.iter().map(String::as_str).collect();
        ids.extend(self.reruns.values().map(|r| r.id.as_str()));
        ids.extend(self.merge.as_deref());
        ids
    }
}

/// A Slurm job (or array task) as `scontrol show job` tells it.
#[derive(Debug, Clone, PartialEq)]
struct Task {
    id: String,
    array_tasks: Option<String>,
    state: String,
    reason: String,
    exit_code: String,
}

/// Where a part or the merge stands.
#[derive(Debug, Clone, PartialEq)]
enum Standing {
    /// Waiting to run.
    Pending,
    /// Running (or starting, or finishing).
    Running,
    /// Ended `COMPLETED`.
    Completed,
    /// Ended otherwise, or will never run.
    Failed(Task),
    /// Slurm does not know it (any more).
    Unknown,
}

/// Reasons of a pending job that will not run unless someone steps in:
/// among them the per-job limits of a QOS or an association, which a
/// job's own request breaks (waiting frees nothing), unlike the group and
/// per-user limits, which other jobs' ending lifts.
const STUCK_REASONS: [&str; 15] = [
    "launch_failed_requeued_held",
    "DependencyNeverSatisfied",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "PartitionTimeLimit",
    "QOSMaxWallDurationPerJobLimit",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxNodePerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxNodePerJobLimit",
    "AssocMaxMemPerJob",
];

/// Slurm's answers that say it could not be reached now, not that it
/// refused: the submission is tried again in the next round.
const UNREACHABLE: [&str; 6] = [
    "Unable to contact slurm controller",
    "Socket timed out",
    "temporarily unable",
    "Zero Bytes were transmitted",
    "Connection refused",
    "Resource temporarily unavailable",
];

impl Task {
    fn standing(&self) -> Standing {
        match self.state.as_str() {
            "COMPLETED" => Standing::Completed,
            "PENDING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "SUSPENDED" | "STOPPED"
                if !STUCK_REASONS.contains(&self.reason.as_str()) =>
            {
                Standing::Pending
            }
            "RUNNING" | "CONFIGURING" | "COMPLETING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => {
                Standing::Running
            }
            _ => Standing::Failed(self.clone()),
        }
    }

    /// Whether Slurm still holds it pending or running, even when it
    /// will never run (held): what a cancel must `scancel`.
    fn active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "REQUEUED"
                | "REQUEUE_FED"
                | "REQUEUE_HOLD"
                | "RESV_DEL_HOLD"
                | "SPECIAL_EXIT"
                | "SUSPENDED"
                | "STOPPED"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
        )
    }

    /// Whether it is array task `index`.
    fn is_task(&self, index: usize) -> bool {
        let Some(spec) = &self.array_tasks else {
            return false;
        };
        // "3", "0-3", "0,2-3", "0-7%2", "0-9:2".
        let spec = spec.split('%').next().unwrap_or_default();
        spec.split(',').any(|range| {
            let (range, step) = match range.split_once(':') {
                Some((r, s)) => (r, s.parse::<usize>().unwrap_or(1).max(1)),
                None => (range, 1),
            };
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (a.parse::<usize>(), b.parse::<usize>()),
                None => (range.parse(), range.parse()),
            };
            match (first, last) {
                (Ok(a), Ok(b)) => (a..=b).contains(&index) && (index - a).is_multiple_of(step),
                _ => false,
            }
        })
    }

    fn describe(&self) -> String {
        let mut text = format!("ended {}", self.state);
        if self.state == "PENDING" || self.state.starts_with("REQUEUE") {
            text = format!("cannot run ({})", self.state);
        }
        let mut details = Vec::new();
        if !self.reason.is_empty() && self.reason != "None" {
            details.push(format!("reason {}", self.reason));
        }
        if !self.exit_code.is_empty() && self.exit_code != "0:0" {
            details.push(format!("exit code {}", self.exit_code));
        }
        if !details.is_empty() {
            text.push_str(&format!(" ({})", details.join(", ")));
        }
        text
    }
}

/// Parses `scontrol show job --oneliner`: one job (or array task, or
/// range of pending tasks) a line, `Key=Value` fields.
fn parse_jobs(text: &str) -> Vec<Task> {
    text.lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            Some(Task {
                id: field("JobId")?,
                array_tasks: field("ArrayTaskId"),
                state: field("JobState")?,
                reason: field("Reason").unwrap_or_default(),
                exit_code: field("ExitCode").unwrap_or_default(),
            })
        })
        .collect()
}

/// A command's end: exit success, stdout, stderr.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl SlurmRunner {
    /// Runs a Slurm command, killing it past the command timeout.
    fn command(&self, program: &str, args: &[&str]) -> Result<Ran, String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e} (is Slurm installed, and on PATH?)"))?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let readers = (
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = out.read_to_end(&mut s);
                s
            }),
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = err.read_to_end(&mut s);
                s
            }),
        );
        let deadline = Instant::now() + self.options.command_timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{program} {} took more than {:?}",
                        args.join(" "),
                        self.options.command_timeout
                    ));
                }
                Err(e) => return Err(format!("waiting for {program}: {e}")),
            }
        };
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_owned();
        Ok(Ran {
            ok: status.success(),
            stdout: text(readers.0.join().unwrap_or_default()),
            stderr: text(readers.1.join().unwrap_or_default()),
        })
    }

    /// What Slurm knows of job `id` (all its array tasks); empty when it
    /// does not know it.
    fn query(&self, id: &str) -> Result<Vec<Task>, String> {
        let ran = self.command("scontrol", &["show", "job", "--oneliner", id])?;
        if ran.ok {
            return Ok(parse_jobs(&ran.stdout));
        }
        if ran.stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        Err(format!("scontrol show job {id}: {}", ran.stderr))
    }

    /// `sbatch --parsable ARGS SCRIPT`: the new job's ID; `Ok(Err)` with
    /// why Slurm refused it; `Err` when Slurm could not be reached (or
    /// `sbatch` not run, or it took too long), to try again.
    fn sbatch(&self, args: &[String]) -> Result<Result<String, String>, Trouble> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = self.command("sbatch", &args).map_err(Trouble::Slurm)?;
        let id = ran.stdout.split(';').next().unwrap_or_default().trim();
        if ran.ok && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Ok(id.to_owned()));
        }
        if UNREACHABLE.iter().any(|m| ran.stderr.contains(m)) {
            return Err(Trouble::Slurm(format!("sbatch: {}", ran.stderr)));
        }
        Ok(Err(if ran.stderr.is_empty() {
            format!("sbatch answered {:?}", ran.stdout)
        } else {
            ran.stderr
        }))
    }

    /// Starts, follows, or stops one job; why Slurm could not be asked,
    /// if it could not (the job then waits for the next round).
    fn advance(&self, service: &JobService, record: JobRecord) -> Result<Option<String>, Error> {
        let name = record.name.clone();
        let followed = match Followed::of(&record) {
            Ok(followed) => followed,
            Err(why) => {
                return match fail(service, &name, why) {
                    Err(Trouble::Store(e)) => Err(e),
                    _ => Ok(None),
                };
            }
        };
        let outcome = match record.job.state() {
            State::Cancelling => self.stop(service, &name, &followed),
            State::Preparing | State::Running if followed.array.is_none() => {
                self.submit(service, &record, followed)
            }
            State::Preparing | State::Running => self.follow(service, &record, followed),
            _ => Ok(()),
        };
        match outcome {
            Err(Trouble::Store(e)) => Err(e),
            Err(Trouble::Slurm(why)) => Ok(Some(format!("job {name}: {why}"))),
            Ok(()) => Ok(None),
        }
    }

    /// Writes the job's files and submits its parts.
    fn submit(
        &self,
        service: &JobService,
        record: &JobRecord,
        mut followed: Followed,
    ) -> Result<(), Trouble> {
        let name = &record.name;
        let job = present(record);
        let plan = match self.planner.plan(&job) {
            Ok(plan) => plan,
            Err(e) => return fail(service, name, format!("the job cannot run: {e}")),
        };
        let max_workers = job
            .prediction_input
            .as_ref()
            .map_or(10, |input| input.effective_max_worker_count());
        let parts = plan
            .shards
            .len()
            .min(usize::try_from(max_workers).unwrap_or(usize::MAX))
            .max(1);
        let dir = self.options.work_dir.join(name.project()).join(name.job());
        if let Err(e) = self.write_files(service, &dir, job, parts) {
            return fail(
                service,
                name,
                format!("cannot write the job's files in {}: {e}", dir.display()),
            );
        }
        let queued = self.queued_parts(name, &dir)?;
        let id = if let Some(id) = queued {
            trace::event!(info, job = %name, slurm_job = %id, "found its parts queued from a submission whose answer was lost");
            id
        } else {
            match self.sbatch(&self.part_args(name, &dir, &format!("0-{}", parts - 1)))? {
                Ok(id) => id,
                Err(why) => {
                    return fail(
                        service,
                        name,
                        format!("Slurm refused the job's {parts} parts: {why}"),
                    );
                }
            }
        };
        trace::event!(info, job = %name, slurm_job = %id, parts, "submitted to Slurm");
        followed.dir = Some(path_text(&dir));
        followed.parts = parts;
        followed.array = Some(id.clone());
        store(service, name, &followed)?;
        // The merge waits for the parts in Slurm's queue, so it starts
        // the moment they are done; a part that fails makes Slurm cancel
        // it, and the runner submits another once the part was run again.
        match self.sbatch(&self.merge_args(name, &dir, Some(&id)))? {
            Ok(merge) => {
                trace::event!(info, job = %name, slurm_job = %merge, "merge submitted");
                followed.merge = Some(merge);
                followed.merge_attempts += 1;
                store(service, name, &followed)
            }
            // Refused now (a limit on queued jobs, say): it is submitted
            // once the parts are done, as after a rerun.
            Err(_) => Ok(()),
        }
    }

    /// The ID of the array of `name`'s parts when Slurm holds one that
    /// this runner never recorded: submitted by an `sbatch` that timed out
    /// (or met a controller that stopped answering) after Slurm took the
    /// job, or by a service that died before it stored the ID. Such an
    /// array is followed rather than submitted again, which would run each
    /// part twice, side by side, over the same files. It is found by the
    /// job's Slurm name and folder, which no other job's submissions
    /// share, in every state Slurm still remembers (parts that already
    /// ended included); should there be several, the oldest is followed
    /// and the others cancelled. `None` when Slurm knows none (an array
    /// that ended longer ago than the cluster's `MinJobAge` is submitted
    /// again: its parts find their shards committed and resume them).
    fn queued_parts(&self, name: &JobName, dir: &Path) -> Result<Option<String>, Trouble> {
        let job_name = slurm_name(name);
        let ran = self
            .command(
                "squeue",
                &[
                    "--noheader",
                    "--states=all",
                    "--name",
                    &job_name,
                    "--format=%F|%K|%Z",
                ],
            )
            .map_err(Trouble::Slurm)?;
        if !ran.ok {
            return Err(Trouble::Slurm(format!("squeue: {}", ran.stderr)));
        }
        // Slurm shows the folder made absolute.
        let mut folders = vec![path_text(dir)];
        folders.extend(std::path::absolute(dir).ok().map(|d| path_text(&d)));
        folders.extend(std::fs::canonicalize(dir).ok().map(|d| path_text(&d)));
        let mut arrays: Vec<u64> = ran
            .stdout
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '|');
                let (id, task, folder) = (fields.next()?, fields.next()?, fields.next()?);
                // The merge is the job of that name that is no array.
                (task.trim() != "N/A" && folders.iter().any(|f| f == folder.trim()))
                    .then(|| id.trim().parse().ok())
                    .flatten()
            })
            .collect();
        arrays.sort_unstable();
        arrays.dedup();
        let Some((oldest, others)) = arrays.split_first() else {
            return Ok(None);
        };
        for other in others {
            trace::event!(warn, job = %name, slurm_job = other, "cancelling a second array of the job's parts");
            let _ = self.command("scancel", &[&other.to_string()]);
        }
        Ok(Some(oldest.to_string()))
    }

    /// `sbatch`'s arguments for the merge of `name`: after the array
    /// `after` completes, or now.
    fn merge_args(&self, name: &JobName, dir: &Path, after: Option<&str>) -> Vec<String> {
        let mut args = self.common_args(name, dir, "merge.%j");
        args.push("--cpus-per-task=1".to_owned());
        if let Some(array) = after {
            args.push(format!("--dependency=afterok:{array}"));
            args.push("--kill-on-invalid-dep=yes".to_owned());
        }
        args.push(path_text(&dir.join("merge.sh")));
        args
    }

    /// `sbatch`'s arguments for the parts `tasks` (`0-3`, `2`) of `name`.
    fn part_args(&self, name: &JobName, dir: &Path, tasks: &str) -> Vec<String> {
        let mut args = self.common_args(name, dir, "part-%a.%A");
        args.push(format!("--cpus-per-task={}", self.options.cpus_per_part));
        args.extend(
            self.options
                .mem_per_part
                .iter()
                .map(|m| format!("--mem={m}")),
        );
        args.push(format!("--array={tasks}"));
        args.push(path_text(&dir.join("part.sh")));
        args
    }

    /// The `sbatch` options of every submission of `name`: its name, logs
    /// (`LOG.out`, `LOG.err` in `dir`), folder, partition, account and time.
    fn common_args(&self, name: &JobName, dir: &Path, log: &str) -> Vec<String> {
        let o = &self.options;
        // Slurm reads `%` in log names as its patterns (`log`'s `%a`, `%A`,
        // `%j`): the folder's own are doubled, which Slurm reads as `%`.
        let logs = PathBuf::from(path_text(dir).replace('%', "%%"));
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name={}", slurm_name(name)),
            format!("--chdir={}", path_text(dir)),
            format!("--output={}", path_text(&logs.join(format!("{log}.out")))),
            format!("--error={}", path_text(&logs.join(format!("{log}.err")))),
        ];
        args.extend(o.partition.iter().map(|p| format!("--partition={p}")));
        args.extend(o.account.iter().map(|a| format!("--account={a}")));
        args.extend(o.time_limit.iter().map(|t| format!("--time={t}")));
        args
    }

    /// The job file the parts run (the create request, its model resolved)
    /// and the parts' and the merge's scripts.
    fn write_files(
        &self,
        service: &JobService,
        dir: &Path,
        mut job: Job,
        parts: usize,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        job.clear_output_only();
        job.etag = None;
        if let Some(input) = job.prediction_input.as_mut()
            && let Some(model) = &input.model
            && let Ok(Some(version)) = service.version_of(model)
            && let Some(uri) = version.deployment_uri()
        {
            input.model = Some(ModelVersion::Uri(uri.to_owned()));
        }
        let job_file = dir.join("job.json");
        write_atomically(
            &job_file,
            serde_json::to_string_pretty(&job)
                .expect("a job serializes")
                .as_bytes(),
        )?;
        let o = &self.options;
        let lines: String = o
            .sbatch_lines
            .iter()
            .map(|l| format!("#SBATCH {}\n", l.trim()))
            .collect();
        let program = shell_quote(&path_text(&o.program));
        let job_file = shell_quote(&path_text(&job_file));
        let args: String = o
            .args
            .iter()
            .map(|a| format!(" {}", shell_quote(a)))
            .collect();
        write_atomically(
            &dir.join("part.sh"),
            format!(
                "#!/bin/sh\n{lines}# Part $SLURM_ARRAY_TASK_ID of {parts}, written by batch-prediction's Slurm runner.\nexec {program} run {job_file} --shard \"$SLURM_ARRAY_TASK_ID/{parts}\" --threads {}{args}\n",
                o.cpus_per_part
            )
            .as_bytes(),
        )?;
        write_atomically(
            &dir.join("merge.sh"),
            format!(
                "#!/bin/sh\n{lines}# The merge of the {parts} parts, written by batch-prediction's Slurm runner.\nexec {program} run {job_file} --merge{args}\n"
            )
            .as_bytes(),
        )
    }

    /// One round of following a submitted job.
    fn follow(
        &self,
        service: &JobService,
        record: &JobRecord,
        mut followed: Followed,
    ) -> Result<(), Trouble> {
        let name = &record.name;
        // The merge printed the finished job: that is the end, whatever
        // Slurm says of its process yet.
        if let Some(done) = self.printed(&followed) {
            return service
                .record_end(name, &done)
                .map(drop)
                .map_err(Trouble::Store);
        }
        let array = followed.array.clone().expect("submitted");
        let tasks = self.query(&array).map_err(Trouble::Slurm)?;
        let mut standings = Vec::with_capacity(followed.parts);
        for index in 0..followed.parts {
            let standing = match followed.reruns.get(&index) {
                Some(rerun) => self
                    .query(&rerun.id)
                    .map_err(Trouble::Slurm)?
                    .first()
                    .map_or(Standing::Unknown, Task::standing),
                None => match tasks.iter().find(|t| t.is_task(index)) {
                    Some(task) => task.standing(),
                    // Not listed while tasks are pending (a long list of
                    // them is shown shortened): wait for them.
                    None if tasks.iter().any(|t| t.standing() == Standing::Pending) => {
                        Standing::Pending
                    }
                    None => Standing::Unknown,
                },
            };
            standings.push(standing);
        }
        for (index, standing) in standings.iter().enumerate() {
            let Standing::Failed(task) = standing else {
                continue;
            };
            let attempts = followed.reruns.get(&index).map_or(1, |r| r.attempts);
            let log_id = followed.reruns.get(&index).map_or(&array, |r| &r.id);
            if attempts > self.options.retries {
                let log = self.log_path(&followed, &format!("part-{index}.{log_id}.err"));
                let message = format!(
                    "part {index} of {} (Slurm job {}) {} after {}; {}",
                    followed.parts,
                    task.id,
                    task.describe(),
                    count(attempts, "attempt"),
                    log_tail(&log)
                );
                return fail(service, name, self.cancel_rest(&followed, message));
            }
            let dir = PathBuf::from(followed.dir.clone().unwrap_or_default());
            // A held task would stay queued beside its rerun: cancel it.
            if task.active() {
                let id = match followed.reruns.get(&index) {
                    Some(rerun) => rerun.id.clone(),
                    None => format!("{array}_{index}"),
                };
                let ran = self.command("scancel", &[&id]).map_err(Trouble::Slurm)?;
                if !ran.ok {
                    return Err(Trouble::Slurm(format!("scancel {id}: {}", ran.stderr)));
                }
            }
            match self.sbatch(&self.part_args(name, &dir, &index.to_string()))? {
                Ok(id) => {
                    trace::event!(info, job = %name, part = index, slurm_job = %id, "part submitted again");
                    // A merge waiting on the array can no longer start
                    // (Slurm cancels it): one is submitted once all parts are done.
                    if let Some(merge) = followed.merge.take() {
                        followed.merge_attempts = followed.merge_attempts.saturating_sub(1);
                        let _ = self.command("scancel", &[&merge]);
                    }
                    followed.reruns.insert(
                        index,
                        Rerun {
                            id,
                            attempts: attempts + 1,
                        },
                    );
                    store(service, name, &followed)?;
                }
                Err(why) => {
                    let message = format!(
                        "part {index} of {} (Slurm job {}) {}, and Slurm refused it again: {why}",
                        followed.parts,
                        task.id,
                        task.describe()
                    );
                    return fail(service, name, self.cancel_rest(&followed, message));
                }
            }
        }
        let started = standings
            .iter()
            .any(|s| !matches!(s, Standing::Pending | Standing::Failed(_)));
        if started && record.job.state() == State::Preparing {
            move_to_running(service, name)?;
        }
        let all_ended = standings
            .iter()
            .all(|s| matches!(s, Standing::Completed | Standing::Unknown));
        if !all_ended {
            return Ok(());
        }
        let Some(merge) = followed.merge.clone() else {
            return self.submit_merge(service, name, followed);
        };
        let standing = self
            .query(&merge)
            .map_err(Trouble::Slurm)?
            .first()
            .map_or(Standing::Unknown, Task::standing);
        if matches!(standing, Standing::Pending | Standing::Running) {
            return Ok(());
        }
        // The merge printed the finished job, whatever its exit.
        if let Some(done) = self.printed(&followed) {
            return service
                .record_end(name, &done)
                .map(drop)
                .map_err(Trouble::Store);
        }
        let log = self.log_path(&followed, &format!("merge.{merge}.err"));
        if followed.merge_attempts <= self.options.retries {
            return self.submit_merge(service, name, followed);
        }
        let what = match standing {
            Standing::Failed(task) => task.describe(),
            _ => "ended".to_owned(),
        };
        fail(
            service,
            name,
            format!(
                "the merge (Slurm job {merge}) {what} without printing the job, after {}; {}",
                count(followed.merge_attempts, "attempt"),
                log_tail(&log)
            ),
        )
    }

    /// Submits the merge now (the parts are done).
    fn submit_merge(
        &self,
        service: &JobService,
        name: &JobName,
        mut followed: Followed,
    ) -> Result<(), Trouble> {
        let dir = PathBuf::from(followed.dir.clone().unwrap_or_default());
        match self.sbatch(&self.merge_args(name, &dir, None))? {
            Ok(id) => {
                trace::event!(info, job = %name, slurm_job = %id, "merge submitted");
                followed.merge = Some(id);
                followed.merge_attempts += 1;
                store(service, name, &followed)
            }
            Err(why) => {
                let message = format!("Slurm refused the merge: {why}");
                fail(service, name, self.cancel_rest(&followed, message))
            }
        }
    }

    /// One round of stopping a cancelled job: `scancel` its Slurm jobs,
    /// and once none is left, the job is `CANCELLED`.
    fn stop(
        &self,
        service: &JobService,
        name: &JobName,
        followed: &Followed,
    ) -> Result<(), Trouble> {
        let mut left = false;
        for id in followed.ids() {
            let tasks = self.query(id).map_err(Trouble::Slurm)?;
            left |= tasks.iter().any(Task::active);
        }
        if left {
            return self.cancel_all(followed).map_err(Trouble::Slurm);
        }
        service
            .update_record(name, |record| {
                if record.job.state() == State::Cancelling {
                    record
                        .job
                        .apply(Transition::cancel(), &crate::clock::SystemClock)?;
                }
                Ok(())
            })
            .map(drop)
            .map_err(Trouble::Store)
    }

    /// `scancel` on every Slurm job of the job.
    fn cancel_all(&self, followed: &Followed) -> Result<(), String> {
        let ids = followed.ids();
        if ids.is_empty() {
            return Ok(());
        }
        let ran = self.command("scancel", &ids)?;
        if ran.ok {
            Ok(())
        } else {
            Err(format!("scancel {}: {}", ids.join(" "), ran.stderr))
        }
    }

    /// `message`, after `scancel` on the job's other Slurm jobs, with why
    /// that failed if it did (they may still run).
    fn cancel_rest(&self, followed: &Followed, message: String) -> String {
        match self.cancel_all(followed) {
            Ok(()) => message,
            Err(why) => format!("{message} (and its other Slurm jobs may still run: {why})"),
        }
    }

    /// The finished job the merge printed, once it printed it whole.
    fn printed(&self, followed: &Followed) -> Option<Job> {
        let merge = followed.merge.as_deref()?;
        let text =
            std::fs::read_to_string(self.log_path(followed, &format!("merge.{merge}.out"))).ok()?;
        Job::from_json(&text)
            .ok()
            .filter(|job| job.state().is_terminal())
    }

    fn log_path(&self, followed: &Followed, file: &str) -> PathBuf {
        PathBuf::from(followed.dir.clone().unwrap_or_default()).join(file)
    }
}

/// Why a round of one job stopped early.
enum Trouble {
    /// The store failed: the service's problem.
    Store(Error),
    /// Slurm could not be asked: try in the next round.
    Slurm(String),
}

fn store(service: &JobService, name: &JobName, followed: &Followed) -> Result<(), Trouble> {
    let state = serde_json::to_value(followed).expect("the state serializes");
    service
        .update_record(name, |record| {
            record.runner = Some(state.clone());
            Ok(())
        })
        .map(drop)
        .map_err(Trouble::Store)
}

/// Ends a `PREPARING` or `RUNNING` job `FAILED` with `message`.
fn fail(service: &JobService, name: &JobName, message: String) -> Result<(), Trouble> {
    trace::event!(warn, job = %name, error = %message, "job failed on Slurm");
    service
        .update_record(name, |record| {
            if matches!(record.job.state(), State::Preparing | State::Running) {
                record.job.apply(
                    Transition::fail(message.clone()),
                    &crate::clock::SystemClock,
                )?;
            }
            Ok(())
        })
        .map(drop)
        .map_err(Trouble::Store)
}

fn move_to_running(service: &JobService, name: &JobName) -> Result<(), Trouble> {
    service
        .update_record(name, |record| {
            if record.job.state() == State::Preparing {
                record
                    .job
                    .apply(Transition::Run, &crate::clock::SystemClock)?;
            }
            Ok(())
        })
        .map(drop)
        .map_err(Trouble::Store)
}

/// The end of a log, for an error message: its last lines (at most about
/// 1 KiB), or that it is missing or empty.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(1024)..])
                .trim()
                .to_owned();
            let lines: Vec<&str> = text.lines().rev().take(5).collect();
            if lines.is_empty() {
                format!("its log {} is empty", path.display())
            } else {
                let tail: Vec<&str> = lines.into_iter().rev().collect();
                format!("its log {} ends: {}", path.display(), tail.join(" | "))
            }
        }
        Err(e) => format!("no log at {}: {e}", path.display()),
    }
}

fn count(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The name of `name`'s Slurm jobs (its parts and its merge).
fn slurm_name(name: &JobName) -> String {
    format!("bp-{}-{}", name.project(), name.job())
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `text` quoted for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes `bytes` to `path` through a file beside it and a rename, so a
/// node never reads half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_give_each_task_and_its_standing() {
        let text = "JobId=12 ArrayJobId=11 ArrayTaskId=1 JobName=bp-p-j UserId=root(0) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:01\n\
                    JobId=11 ArrayJobId=11 ArrayTaskId=2-3,5%2 JobName=bp-p-j JobState=PENDING Reason=None ExitCode=0:0\n\
                    JobId=13 ArrayJobId=11 ArrayTaskId=0 JobState=COMPLETED Reason=None ExitCode=0:0\n\
                    JobId=14 JobState=PENDING Reason=launch_failed_requeued_held ExitCode=0:0\n\
                    garbage line\n";
        let tasks = parse_jobs(text);
        assert_eq!(tasks.len(), 4);
        assert!(tasks[0].is_task(1) && !tasks[0].is_task(2));
        assert_eq!(
            (0..7).map(|i| tasks[1].is_task(i)).collect::<Vec<_>>(),
            [false, false, true, true, false, true, false]
        );
        assert_eq!(
            tasks[0].describe(),
            "ended FAILED (reason NonZeroExitCode, exit code 3:0)"
        );
        assert!(matches!(tasks[0].standing(), Standing::Failed(_)));
        assert_eq!(tasks[1].standing(), Standing::Pending);
        assert_eq!(tasks[2].standing(), Standing::Completed);
        assert!(!tasks[3].is_task(0), "not an array job");
        assert_eq!(
            tasks[3].describe(),
            "cannot run (PENDING) (reason launch_failed_requeued_held)"
        );
        assert!(matches!(tasks[3].standing(), Standing::Failed(_)));
        // A per-job limit of the user's association is never lifted by
        // waiting; a group limit is.
        let over = parse_jobs(
            "JobId=15 JobState=PENDING Reason=AssocMaxWallDurationPerJobLimit ExitCode=0:0\n\
             JobId=16 JobState=PENDING Reason=AssocGrpCpuLimit ExitCode=0:0\n",
        );
        assert!(matches!(over[0].standing(), Standing::Failed(_)));
        assert_eq!(over[1].standing(), Standing::Pending);
        let stepped = Task {
            array_tasks: Some("0-9:3".into()),
            ..tasks[2].clone()
        };
        assert_eq!(
            (0..10).filter(|&i| stepped.is_task(i)).collect::<Vec<_>>(),
            [0, 3, 6, 9]
        );
    }

    #[test]
    fn the_state_kept_with_a_job_reads_back() {
        let mut followed = Followed {
            runner: "slurm".into(),
            dir: Some("/w/p/j".into()),
            parts: 4,
            array: Some("11".into()),
            ..Followed::default()
        };
        followed.reruns.insert(
            2,
            Rerun {
                id: "15".into(),
                attempts: 2,
            },
        );
        followed.merge = Some("16".into());
        followed.merge_attempts = 1;
        let value = serde_json::to_value(&followed).unwrap();
        assert_eq!(value["reruns"]["2"]["id"], "15");
        assert_eq!(serde_json::from_value::<Followed>(value).unwrap(), followed);
        assert_eq!(followed.ids(), ["11", "15", "16"]);
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }
}
