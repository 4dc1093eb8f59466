//! `serve --engine slurm`: jobs created through the REST API run on the
//! test cluster (`tests/slurm/cluster.sh`) as arrays of parts plus a merge.
//! Without the cluster the tests say SKIP; under CI that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Emulator;
use crate::slurm::{Cluster, cluster, slurm};

/// `serve --engine slurm` over a new root in the cluster's folder, with
/// echo predictions, shards of about 300 bytes, and `extra` flags.
fn serve(cluster: &Cluster, extra: &[&str]) -> Emulator {
    let root = tempfile::tempdir_in(&cluster.dir).unwrap();
    serve_in(cluster, root, None, extra)
}

/// [`serve`] over `root`, with `bin` (wrappers of Slurm's commands) first
/// on its `PATH`.
fn serve_in(
    cluster: &Cluster,
    root: tempfile::TempDir,
    bin: Option<&Path>,
    extra: &[&str],
) -> Emulator {
    write_inputs(&root.path().join("b/in"));
    let mut env = vec![("SLURM_CONF", std::ffi::OsString::from(&cluster.conf))];
    if let Some(bin) = bin {
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        env.push(("PATH", path.into()));
    }
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    Emulator::start(root, &args(extra), &env)
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--predictor",
        "echo",
        "--engine",
        "slurm",
        "--shard-bytes",
        "300",
    ];
    args.extend_from_slice(extra);
    args
}

/// Six files of 40 JSON lines.
fn write_inputs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..6 {
        let lines: String = (0..40)
            .map(|i| format!("{{\"file\": {f}, \"i\": {i}}}\n"))
            .collect();
        std::fs::write(dir.join(format!("{f}.jsonl")), lines).unwrap();
    }
}

/// A create request for a job over the inputs, in `parts` workers.
fn create_request(job_id: &str, output: &str, workers: u32) -> Value {
    json!({
        "jobId": job_id,
        "predictionInput": {
            "dataFormat": "JSON", "inputPaths": ["gs://b/in/*.jsonl"],
            "outputPath": output, "region": "us-central1",
            "modelName": "projects/slurm-test/models/m",
            "batchSize": "4", "maxWorkerCount": workers.to_string()
        }
    })
}

/// A REST call with curl; the answer's JSON.
fn call(emulator: &Emulator, method: &str, path: &str, body: Option<&Value>) -> Value {
    let url = format!(
        "http://127.0.0.1:{}/v1/projects/slurm-test/{path}",
        emulator.port
    );
    crate::curl(method, &url, body)
}

/// Polls the job until `done` says so (at most 5 minutes); the job.
fn wait_until(emulator: &Emulator, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let job = call(emulator, "GET", &format!("jobs/{job_id}"), None);
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "the job stays {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ended(job: &Value) -> bool {
    ["SUCCEEDED", "FAILED", "CANCELLED"].contains(&job["state"].as_str().unwrap_or_default())
}

/// What the service keeps with the job: its Slurm job IDs.
fn kept(emulator: &Emulator, job_id: &str) -> Value {
    let path = emulator
        .root
        .path()
        .join(format!(".jobs/jobs/slurm-test/{job_id}.json"));
    let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["runner"].clone()
}

/// A program for the nodes that runs `before` (shell), then the real one.
fn wrapper(dir: &Path, name: &str, before: &str) -> PathBuf {
    let path = dir.join(name);
    script(
        &path,
        &format!("{before}\nexec '{}' \"$@\"", crate::cli_program().display()),
    );
    path
}

/// Writes the shell script `body` to `path`, executable.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(path, permissions).unwrap();
}

/// Where the Slurm command `name` is on `PATH`.
fn real(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The cluster's jobs still pending or running.
fn queue(cluster: &Cluster) -> String {
    slurm(cluster, "squeue", &["-h", "-o", "%i %j %T"], &[])
}

/// A job created through the API runs as two parts, one on each node, and
/// a merge; its files are byte-identical to one process's, its counts
/// and node hours those the parts measured.
#[test]
fn a_created_job_runs_on_both_nodes_with_one_processs_output() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let emulator = serve(cluster, &[]);
    let root = emulator.root.path();
    let created = call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("on_slurm", "gs://b/out", 2)),
    );
    assert_eq!(created["state"], "QUEUED", "{created}");
    let done = wait_until(&emulator, "on_slurm", ended);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    assert_eq!(done["predictionOutput"]["errorCount"], "0", "{done}");
    let hours = done["predictionOutput"]["nodeHours"].as_f64().unwrap();
    assert!(hours > 0.0 && hours < 0.1, "{done}");
    assert!(done["startTime"].is_string() && done["endTime"].is_string());

    let runner = kept(&emulator, "on_slurm");
    assert_eq!(runner["runner"], "slurm", "{runner}");
    assert_eq!(runner["parts"], 2, "{runner}");
    let array = runner["array"].as_str().unwrap();
    assert_eq!(
        crate::slurm::nodes(cluster, array),
        ["n1".to_owned(), "n2".to_owned()].into(),
        "{runner}"
    );
    assert!(runner["merge"].is_string(), "{runner}");

    // The same job in one process.
    let job = root.join("whole.json");
    let mut whole = create_request("whole", "gs://b/whole", 2);
    whole["predictionInput"]["modelName"] = Value::Null;
    whole["predictionInput"]["uri"] = json!("echo");
    std::fs::write(&job, whole.to_string()).unwrap();
    let out = Command::new(crate::cli_program())
        .arg("run")
        .arg(&job)
        .args(["--predictor", "echo", "--shard-bytes", "300", "--gcs-root"])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parted = crate::output_files(&root.join("b/out"));
    assert!(parted.len() > 4, "{:?}", parted.keys());
    assert_eq!(parted, crate::output_files(&root.join("b/whole")));
}

/// A cancel reaches the parts on the cluster: `scancel`, and CANCELLED
/// once none is left.
#[test]
fn a_cancelled_job_leaves_nothing_on_the_cluster() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let scratch = tempfile::tempdir_in(&cluster.dir).unwrap();
    let slow = wrapper(scratch.path(), "slow.sh", "sleep 120");
    let emulator = serve(cluster, &["--slurm-program", slow.to_str().unwrap()]);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("cancelled", "gs://b/out", 2)),
    );
    let running = wait_until(&emulator, "cancelled", |j| {
        j["state"] != "QUEUED" && j["state"] != "PREPARING"
    });
    assert_eq!(running["state"], "RUNNING", "{running}");
    // The merge waits in Slurm's queue for the parts.
    let merge = kept(&emulator, "cancelled")["merge"]
        .as_str()
        .expect("the merge is submitted with the parts")
        .to_owned();
    let shown = slurm(
        cluster,
        "scontrol",
        &["show", "job", "--oneliner", &merge],
        &[],
    );
    assert!(
        shown.contains("JobState=PENDING") && shown.contains("Reason=Dependency"),
        "{shown}"
    );
    let answer = call(&emulator, "POST", "jobs/cancelled:cancel", Some(&json!({})));
    assert_eq!(answer, json!({}));
    let done = wait_until(&emulator, "cancelled", ended);
    assert_eq!(done["state"], "CANCELLED", "{done}");
    let array = kept(&emulator, "cancelled")["array"]
        .as_str()
        .unwrap()
        .to_owned();
    let left = queue(cluster);
    assert!(
        !left
            .lines()
            .any(|l| l.starts_with(&format!("{array}_")) || l.starts_with(&format!("{merge} "))),
        "{left}"
    );
}

/// A `serve` killed while its job runs on the cluster, started again over
/// the same root, goes on following the job to its end.
#[test]
fn a_restarted_serve_follows_its_job_to_the_end() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let scratch = tempfile::tempdir_in(&cluster.dir).unwrap();
    let slow = wrapper(scratch.path(), "slow.sh", "sleep 4");
    let flags = ["--slurm-program", slow.to_str().unwrap()];
    let mut emulator = serve(cluster, &flags);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("restarted", "gs://b/out", 2)),
    );
    let running = wait_until(&emulator, "restarted", |j| {
        j["state"] == "RUNNING" || ended(j)
    });
    assert_eq!(running["state"], "RUNNING", "{running}");
    let submitted = kept(&emulator, "restarted");
    let env = [("SLURM_CONF", std::ffi::OsStr::new(&cluster.conf))];
    emulator.restart(&args(&flags), &env);
    let done = wait_until(&emulator, "restarted", ended);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    assert_eq!(done["createTime"], running["createTime"]);
    // Followed, not submitted again.
    let after = kept(&emulator, "restarted");
    assert_eq!(after["array"], submitted["array"], "{after}");
    assert!(after.get("reruns").is_none(), "{after}");
}

/// `sbatch` refusing the parts (a partition the cluster lacks) ends the
/// job FAILED with Slurm's reason.
#[test]
fn a_refused_submission_fails_the_job_with_slurms_reason() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let emulator = serve(cluster, &["--slurm-partition", "nosuch"]);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("refused", "gs://b/out", 2)),
    );
    let done = wait_until(&emulator, "refused", ended);
    assert_eq!(done["state"], "FAILED", "{done}");
    let message = done["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("Slurm refused the job's 2 parts: ") && message.contains("partition"),
        "{message}"
    );
}

/// A part that fails every time ends the job FAILED after its retry,
/// naming the part, Slurm's state and exit code, and its log; one that
/// fails once is run again alone and the job succeeds.
#[test]
fn a_failing_part_is_retried_then_fails_the_job_naming_it() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let scratch = tempfile::tempdir_in(&cluster.dir).unwrap();
    let broken = wrapper(
        scratch.path(),
        "broken.sh",
        "case \"$*\" in *'--shard 1/2'*) echo 'part one breaks here' >&2; exit 3;; esac",
    );
    let emulator = serve(cluster, &["--slurm-program", broken.to_str().unwrap()]);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("broken", "gs://b/out", 2)),
    );
    let done = wait_until(&emulator, "broken", ended);
    assert_eq!(done["state"], "FAILED", "{done}");
    let message = done["errorMessage"].as_str().unwrap();
    for part in [
        "part 1 of 2 (Slurm job ",
        "ended FAILED (reason NonZeroExitCode, exit code 3:0) after 2 attempts",
        "ends: part one breaks here",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert!(kept(&emulator, "broken")["reruns"]["1"]["id"].is_string());

    let marker = scratch.path().join("failed-once");
    let flaky = wrapper(
        scratch.path(),
        "flaky.sh",
        &format!(
            "case \"$*\" in *'--shard 0/2'*) [ -e '{0}' ] || {{ touch '{0}'; exit 4; }};; esac",
            marker.display()
        ),
    );
    let emulator = serve(cluster, &["--slurm-program", flaky.to_str().unwrap()]);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("flaky", "gs://b/out", 2)),
    );
    let done = wait_until(&emulator, "flaky", ended);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    assert!(marker.exists());
    assert_eq!(kept(&emulator, "flaky")["reruns"]["0"]["attempts"], 2);
}

/// An `sbatch` that times out after Slurm took the parts (the controller
/// was slow to answer) loses their ID: the next round finds the array in
/// the queue by the job's name and folder and follows it, rather than
/// submitting the parts again to run twice over the same files.
#[test]
fn parts_whose_submission_answer_was_lost_are_found_not_submitted_again() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let scratch = tempfile::tempdir_in(&cluster.dir).unwrap();
    let sbatch = real("sbatch");
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let (lost, arrays) = (scratch.path().join("lost"), scratch.path().join("arrays"));
    // Every submission of parts is logged; the first is made, its answer
    // kept aside, and sbatch says it timed out.
    script(
        &bin.join("sbatch"),
        &format!(
            "case \"$*\" in *--array=*)\n  echo \"$*\" >> '{arrays}'\n  if [ ! -e '{lost}' ]; then\n    '{sbatch}' \"$@\" > '{lost}' || exit 1\n    echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2\n    exit 1\n  fi;;\nesac\nexec '{sbatch}' \"$@\"",
            arrays = arrays.display(),
            lost = lost.display(),
        ),
    );
    let root = tempfile::tempdir_in(&cluster.dir).unwrap();
    let emulator = serve_in(cluster, root, Some(&bin), &[]);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("lost_answer", "gs://b/out", 2)),
    );
    let done = wait_until(&emulator, "lost_answer", ended);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    let lost_id = std::fs::read_to_string(&lost).expect("the first sbatch ran");
    let lost_id = lost_id.trim().split(';').next().unwrap();
    let submitted = std::fs::read_to_string(&arrays).unwrap();
    assert_eq!(submitted.lines().count(), 1, "parts submitted: {submitted}");
    assert_eq!(kept(&emulator, "lost_answer")["array"], lost_id);
}

/// An `sbatch` that cannot reach the controller is tried again in the next
/// round (the job waits, PREPARING), not taken for a refusal; and Slurm
/// is asked about a job once per second, however often the runner runs.
#[test]
fn an_unreachable_controller_is_waited_for_and_slurm_is_polled_once_a_second() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let scratch = tempfile::tempdir_in(&cluster.dir).unwrap();
    let (sbatch, scontrol) = (real("sbatch"), real("scontrol"));
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let (failed, calls) = (scratch.path().join("failed"), scratch.path().join("calls"));
    // The first submission meets a controller that does not answer.
    script(
        &bin.join("sbatch"),
        &format!(
            "if [ \"$1\" != --version ] && [ ! -e '{0}' ]; then touch '{0}'; echo 'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)' >&2; exit 1; fi\nexec '{sbatch}' \"$@\"",
            failed.display()
        ),
    );
    script(
        &bin.join("scontrol"),
        &format!("echo >> '{}'\nexec '{scontrol}' \"$@\"", calls.display()),
    );
    let root = tempfile::tempdir_in(&cluster.dir).unwrap();
    let emulator = serve_in(cluster, root, Some(&bin), &[]);
    let started = Instant::now();
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("waited", "gs://b/out", 2)),
    );
    let done = wait_until(&emulator, "waited", ended);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert!(failed.exists(), "the first sbatch failed");
    // Each round asks about the array and, once submitted, the merge (a
    // job over before the next round asks nothing: the runner reads the
    // merge's printed end between rounds).
    let asked = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        (asked as f64) <= 2.0 * seconds + 3.0,
        "scontrol ran {asked} times in {seconds:.1} s"
    );
}

/// A work folder whose name holds `%`, which Slurm reads in log file names
/// as its patterns (`%j`, the job's ID): the parts' logs and the merge's
/// printed job are still written where the runner reads them.
#[test]
fn a_work_folder_with_percent_signs_keeps_its_logs() {
    let Some((cluster, _turn)) = cluster() else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("pct%j-")
        .tempdir_in(&cluster.dir)
        .unwrap();
    let emulator = serve_in(cluster, root, None, &[]);
    call(
        &emulator,
        "POST",
        "jobs",
        Some(&create_request("percent", "gs://b/out", 2)),
    );
    let done = wait_until(&emulator, "percent", ended);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "240", "{done}");
    let runner = kept(&emulator, "percent");
    let dir = Path::new(runner["dir"].as_str().unwrap());
    assert!(dir.to_string_lossy().contains("pct%j-"), "{runner}");
    let merge = runner["merge"].as_str().unwrap();
    assert!(dir.join(format!("merge.{merge}.out")).exists(), "{runner}");
    let array = runner["array"].as_str().unwrap();
    for part in 0..2 {
        assert!(
            dir.join(format!("part-{part}.{array}.err")).exists(),
            "part {part}'s log"
        );
    }
}
