//! One job over a real Slurm cluster: `examples/scale-out/slurm-array.sh`
//! submitted as a user would, on a two-node cluster that
//! `tests/slurm/cluster.sh` brings up on loopback (Debian's slurm-wlm and
//! munge, installed with apt when missing). Without it the tests say SKIP;
//! under CI (`CI=true`) that is a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Runs `job` in this process, for comparison.
fn run_here(job: &Path) {
    let out = Command::new(crate::cli_program())
        .arg("run")
        .arg(job)
        .args(SHAPE.split(' '))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cluster: its `SLURM_CONF` and the folder of its state.
pub(crate) struct Cluster {
    pub(crate) conf: String,
    pub(crate) dir: PathBuf,
}

/// Brings a cluster up in `dir`; a watchdog brings it down and removes
/// `dir` when this process is gone, whichever way it ends.
fn start_cluster(dir: &Path) -> Result<Cluster, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/cluster.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("up")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(why) = text.lines().find_map(|l| l.strip_prefix("SKIP: ")) {
        return Err(why.to_owned());
    }
    let conf = text
        .lines()
        .find_map(|l| l.strip_prefix("SLURM_CONF="))
        .ok_or_else(|| {
            format!(
                "{script} up failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?
        .to_owned();
    Command::new("setsid")
        .args([
            "bash",
            "-c",
            &format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; bash '{script}' down '{1}'; rm -rf '{1}'",
                std::process::id(),
                dir.display()
            ),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))?;
    Ok(Cluster {
        conf,
        dir: dir.to_path_buf(),
    })
}

/// A cluster's SKIP, or under CI its failure.
fn required(started: &'static Result<Cluster, String>) -> Option<&'static Cluster> {
    match started {
        Ok(cluster) => Some(cluster),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the Slurm cluster is required under CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIP: no Slurm cluster: {why}");
            None
        }
    }
}

/// The cluster the tests share, brought up once for this test binary, and
/// the turn to use it: the tests that share it run one at a time, so that
/// where a job's tasks run depends on that job alone.
pub(crate) fn cluster() -> Option<(&'static Cluster, std::sync::MutexGuard<'static, ()>)> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let cluster = required(CLUSTER.get_or_init(|| {
        start_cluster(&std::env::temp_dir().join(format!("bp-slurm-{}", std::process::id())))
    }))?;
    Some((cluster, TURN.lock().unwrap_or_else(|e| e.into_inner())))
}

/// A Slurm command against the cluster, with `env`; its stdout.
pub(crate) fn slurm(
    cluster: &Cluster,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let out = Command::new(program)
        .args(args)
        .env("SLURM_CONF", &cluster.conf)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until no job of `ids` is pending or running (at most `limit`).
pub(crate) fn wait_for(cluster: &Cluster, ids: &[&str], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let queue = slurm(cluster, "squeue", &["-h", "-o", "%A %i %T"], &[]);
        let ours = queue
            .lines()
            .filter(|l| ids.iter().any(|id| l.contains(id)))
            .count();
        if ours == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still queued: {queue}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Input files of JSON lines under `dir/in`, and a job file over them
/// writing to `output`.
fn job_file(dir: &Path, input: &str, output: &str) -> PathBuf {
    let path = dir.join(format!("job-{}.json", output.len()));
    let body = json!({
        "jobId": "slurm_job",
        "predictionInput": {
            "dataFormat": "JSON", "inputPaths": [format!("{input}/*.jsonl")],
            "outputPath": output, "region": "local", "uri": "echo", "batchSize": "4"
        }
    });
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

fn write_inputs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..6 {
        let lines: String = (0..40)
            .map(|i| format!("{{\"file\": {f}, \"i\": {i}}}\n"))
            .collect();
        std::fs::write(dir.join(format!("{f}.jsonl")), lines).unwrap();
    }
}

pub(crate) const SHAPE: &str = "--predictor echo --shard-bytes 300";

/// Submits `tasks` of the example's array for `job` in `n` parts; the job
/// id. Each task asks for one CPU, but a pair of tasks (`0-1`) for two each,
/// a node's worth, so that they run one on each node.
pub(crate) fn submit_parts(
    cluster: &Cluster,
    job: &Path,
    tasks: &str,
    n: usize,
    logs: &Path,
    env: &[(&str, &str)],
) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scale-out/slurm-array.sh"
    );
    let program = crate::cli_program();
    let mut all = vec![
        ("BATCH_PREDICTION", program.to_str().unwrap()),
        ("BATCH_PREDICTION_ARGS", SHAPE),
    ];
    all.extend_from_slice(env);
    slurm(
        cluster,
        "sbatch",
        &[
            "--parsable",
            &format!("--array={tasks}"),
            &format!("--cpus-per-task={}", if tasks == "0-1" { 2 } else { 1 }),
            &format!("--output={}/part-%a.out", logs.display()),
            script,
            job.to_str().unwrap(),
            &n.to_string(),
        ],
        &all,
    )
}

/// The merge, after `after` (any end), waited for; the finished job's JSON.
pub(crate) fn merge(
    cluster: &Cluster,
    job: &Path,
    after: &str,
    logs: &Path,
    env: &[(&str, &str)],
) -> Value {
    let out = logs.join(format!("merge-{after}.json"));
    let command = format!(
        "{} run {} --merge {SHAPE} > {}",
        crate::cli_program().display(),
        job.display(),
        out.display()
    );
    let dependency = format!("--dependency=afterany:{after}");
    let log = format!("--output={}/merge-%j.out", logs.display());
    let mut args = vec![
        "300",
        "sbatch",
        "--parsable",
        "--wait",
        &log,
        "--wrap",
        command.as_str(),
    ];
    if !after.is_empty() {
        args.insert(2, &dependency);
    }
    // A merge that finds shards missing exits 1: sbatch --wait says so. No
    // test waits on the cluster for more than 5 minutes.
    let _ = Command::new("timeout")
        .args(&args)
        .env("SLURM_CONF", &cluster.conf)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// The nodes the tasks of job `id` ran on, as slurmctld still remembers
/// them (job records stay a minute after the end on the test cluster).
pub(crate) fn nodes(cluster: &Cluster, id: &str) -> BTreeSet<String> {
    slurm(cluster, "scontrol", &["-o", "show", "job", id], &[])
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("NodeList="))
                .map(str::to_owned)
        })
        .filter(|n| n != "(null)")
        .collect()
}

/// The example as a user runs it on a shared file system: four parts on
/// both nodes, the merge after them, the files of one process.
#[test]
fn an_array_of_parts_on_both_nodes_merges_into_one_processs_files() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let dir = tempfile::tempdir_in(&cluster.dir).unwrap();
    let input = dir.path().join("in");
    write_inputs(&input);
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let input_s = input.display().to_string();
    // One process, for comparison.
    let whole = job_file(
        dir.path(),
        &input_s,
        &dir.path().join("whole").display().to_string(),
    );
    run_here(&whole);

    let parted_dir = dir.path().join("parted");
    let job = job_file(dir.path(), &input_s, &parted_dir.display().to_string());
    let array = submit_parts(cluster, &job, "0-3", 4, &logs, &[]);
    let done = merge(cluster, &job, &array, &logs, &[]);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    assert_eq!(
        crate::output_files(&parted_dir),
        crate::output_files(&dir.path().join("whole"))
    );
    let used = nodes(cluster, &array);
    assert_eq!(
        used,
        BTreeSet::from(["n1".to_owned(), "n2".to_owned()]),
        "{used:?}"
    );
}

/// A part that did not run (as one that failed) leaves the merge FAILED,
/// naming its shards; that part submitted again alone, with the same N
/// (Slurm sets SLURM_ARRAY_TASK_COUNT to 1 for it), completes the job.
#[test]
fn a_missing_part_rerun_alone_completes_the_job() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let dir = tempfile::tempdir_in(&cluster.dir).unwrap();
    let input = dir.path().join("in");
    write_inputs(&input);
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let output = dir.path().join("out");
    let job = job_file(
        dir.path(),
        &input.display().to_string(),
        &output.display().to_string(),
    );
    let three = submit_parts(cluster, &job, "0,1,3", 4, &logs, &[]);
    let failed = merge(cluster, &job, &three, &logs, &[]);
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let message = failed["errorMessage"].as_str().unwrap();
    assert!(message.contains("plan shards 2, 6"), "{message}");
    let again = submit_parts(cluster, &job, "2", 4, &logs, &[]);
    wait_for(cluster, &[&again], Duration::from_secs(120));
    let done = merge(cluster, &job, "", &logs, &[]);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
}

/// A node that dies mid-run (its slurmd, the task's slurmstepd and the
/// task's processes killed) costs only time: Slurm marks it down, requeues
/// its task on the other node, and the merge finds every shard, the files
/// those of one process. On a cluster of its own, so that the other tests
/// keep both nodes.
#[test]
fn a_node_killed_mid_run_costs_only_time() {
    static OWN: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let Some(cluster) = required(OWN.get_or_init(|| {
        start_cluster(&std::env::temp_dir().join(format!("bp-slurm-kill-{}", std::process::id())))
    })) else {
        return;
    };
    let dir = tempfile::tempdir_in(&cluster.dir).unwrap();
    let input = dir.path().join("in");
    write_inputs(&input);
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let whole = job_file(
        dir.path(),
        &input.display().to_string(),
        &dir.path().join("whole").display().to_string(),
    );
    run_here(&whole);
    // Parts that take a while, so the kill lands while one runs on n2.
    let slow = dir.path().join("slow.sh");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nsleep 6\nexec {} \"$@\"\n",
            crate::cli_program().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = dir.path().join("parted");
    let job = job_file(
        dir.path(),
        &input.display().to_string(),
        &output.display().to_string(),
    );
    let array = submit_parts(
        cluster,
        &job,
        "0-1",
        2,
        &logs,
        &[("BATCH_PREDICTION", slow.to_str().unwrap())],
    );
    // Wait for a task running on n2, then kill the node under it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let running = slurm(
            cluster,
            "squeue",
            &["-h", "-j", &array, "-t", "R", "-o", "%A %N"],
            &[],
        );
        if let Some(id) = running.lines().find_map(|l| l.strip_suffix(" n2")) {
            break id.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no task ran on n2: {running}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let kill = format!(
        "stepd=$(pgrep -f '^slurmstepd: \\[{victim}\\.batch\\]'); \
         tree=\"$(ps -o pid= --ppid $stepd) $(for c in $(ps -o pid= --ppid $stepd); do ps -o pid= --ppid $c; done)\"; \
         kill -9 $(cat {}/run/slurmd.n2.pid) $stepd $tree",
        cluster.dir.display()
    );
    let killed = Command::new("bash").args(["-c", &kill]).status().unwrap();
    assert!(killed.success(), "{kill}");
    let done = merge(cluster, &job, &array, &logs, &[]);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(
        crate::output_files(&output),
        crate::output_files(&dir.path().join("whole"))
    );
    let restarts = slurm(cluster, "scontrol", &["-o", "show", "job", &array], &[]);
    assert!(restarts.contains("Restarts=1"), "{restarts}");
}
