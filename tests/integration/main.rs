//! The integration tests: one binary, one module per area.

#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cloud")]
mod cloud;
mod discovery;
#[cfg(feature = "cli")]
mod emulator_http;
mod executor;
mod job_store;
mod model_resources;
#[cfg(any(feature = "onnx", feature = "ort"))]
mod models;
#[cfg(any(feature = "onnx", feature = "ort"))]
mod onnx;
mod own_output;
mod props;
mod records;
#[cfg(feature = "remote")]
mod remote;
#[cfg(feature = "rest")]
mod rest;
mod scale_out;
mod service;
#[cfg(feature = "cli")]
mod slurm;
#[cfg(feature = "cli")]
mod slurm_engine;
mod state;
mod storage;
#[cfg(feature = "tensorflow")]
mod tensorflow;
#[cfg(feature = "tracing")]
mod tracing;
mod validation;
mod wire;

use std::path::PathBuf;

/// A file under `tests/data`.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A shared library some tests need: the path in `variable` when it is
/// set, else the one `script` prints once it has installed the library
/// under target/ (from PyPI); `Err` with the script's `SKIP: …` reason.
#[cfg(any(feature = "ort", feature = "tensorflow"))]
pub fn find_library(variable: &str, script: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match text.strip_prefix("SKIP: ") {
        Some(why) => Err(why.to_owned()),
        None if out.status.success() => Ok(PathBuf::from(text)),
        None => Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// A library [`find_library`] found, or, when it found none, SKIP saying
/// why (`None`), and under CI (`CI=true`) a failure.
#[cfg(any(feature = "ort", feature = "tensorflow"))]
pub fn library_or_skip(
    found: &'static Result<PathBuf, String>,
    what: &str,
) -> Option<&'static std::path::Path> {
    match found {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{what} is required under CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIP: no {what}: {why}");
            None
        }
    }
}

/// Every file of a local output folder, by name, with its bytes (a
/// summary, which holds its shard's busy time, by name only).
pub fn output_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let bytes = if name.starts_with("prediction.summary-") {
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (name, bytes)
        })
        .collect()
}

/// The results files under `out` of an in-memory storage, concatenated in
/// shard order, and each error file entry by its byte, without `line` and
/// `record` (which a byte range of a split file does not know).
pub fn results_and_errors(
    storage: &batch_prediction::InMemoryStorage,
    out: &str,
) -> (Vec<u8>, Vec<(u64, serde_json::Value)>) {
    let mut results: Vec<(String, Vec<u8>)> = Vec::new();
    let mut errors = Vec::new();
    for location in storage.locations() {
        if !location.starts_with(&format!("{out}/")) {
            continue;
        }
        let bytes = storage.get(&location).unwrap();
        if location.contains("prediction.results-") {
            results.push((location, bytes));
        } else if location.contains("prediction.errors-") {
            for line in String::from_utf8(bytes).unwrap().lines() {
                let mut e: serde_json::Value = serde_json::from_str(line).unwrap();
                let entry = e.as_object_mut().unwrap();
                entry.remove("line");
                entry.remove("record");
                errors.push((entry["byte"].as_u64().unwrap(), e));
            }
        }
    }
    results.sort();
    (results.into_iter().flat_map(|(_, b)| b).collect(), errors)
}

/// The `batch-prediction` command line cargo built for these tests.
#[cfg(feature = "cli")]
pub fn cli_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_batch-prediction"))
}

/// `batch-prediction serve`, started on a free port over `root` with `args`
/// (and `env`); killed when dropped.
#[cfg(feature = "cli")]
pub struct Emulator {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The folder its `gs://` locations map into.
    pub root: tempfile::TempDir,
}

#[cfg(feature = "cli")]
impl Emulator {
    /// Starts it and waits until it accepts connections.
    pub fn start(
        root: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Emulator {
        let (child, port) = Self::spawn(root.path(), args, env);
        Emulator { child, port, root }
    }

    /// Kills it (as a crash would) and starts it again over the same root
    /// with `args` and `env`, on a new port.
    pub fn restart(&mut self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.child, self.port) = Self::spawn(self.root.path(), args, env);
    }

    fn spawn(
        root: &std::path::Path,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> (std::process::Child, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new(cli_program())
            .args(["serve", "--port", &port.to_string(), "--root"])
            .arg(root)
            .args(args)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("batch-prediction serve {args:?} exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the emulator did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (child, port)
    }
}

#[cfg(feature = "cli")]
impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(any(feature = "cloud", feature = "remote"))]
/// A fault proxy (`tests/cloud/fault_proxy.py`) in front of `upstream` (an
/// object store or a model server), stopped when dropped.
pub struct FaultProxy {
    child: std::process::Child,
    /// Its base URL.
    pub url: String,
}

#[cfg(any(feature = "cloud", feature = "remote"))]
impl FaultProxy {
    /// Starts it (see the script for the modes).
    pub fn start(upstream: &str, mode: &str) -> FaultProxy {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloud/fault_proxy.py");
        let mut child = std::process::Command::new("python3")
            .args([script, "--upstream", upstream, "--mode", mode])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the fault proxy");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line.trim().parse().expect("the proxy prints its port");
        FaultProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// What the proxy did: cuts, failed requests, Range headers seen.
    pub fn stats(&self) -> serde_json::Value {
        // No HTTP client among the test dependencies: ask with curl.
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("{}/__proxy_stats", self.url)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[cfg(any(feature = "cloud", feature = "remote"))]
impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a script that starts test servers on loopback (`tests/cloud/servers.sh`,
/// `tests/remote/servers.sh`): they stop when this test binary exits. The
/// script prints `KEY=VALUE` lines once they are up; the values of `keys`,
/// in order, or why there are none (the script's own `SKIP: …` reason).
#[cfg(any(feature = "cloud", feature = "remote"))]
pub fn start_servers<const N: usize>(script: &str, keys: [&str; N]) -> Result<[String; N], String> {
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(std::process::id().to_string())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let values: Option<Vec<String>> = keys
        .iter()
        .map(|key| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_owned)
        })
        .collect();
    values.and_then(|v| v.try_into().ok()).ok_or_else(|| {
        format!(
            "{}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Servers started once for the test binary, or, when they could not be:
/// a SKIP saying why, and under CI (`CI=true`) a failure.
#[cfg(any(feature = "cloud", feature = "remote"))]
pub fn required<T>(started: &'static Result<T, String>, what: &str) -> Option<&'static T> {
    match started {
        Ok(servers) => Some(servers),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the {what} are required under CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIP: no {what}: {why}");
            None
        }
    }
}

/// Sends an HTTP request with curl (no HTTP client among the test
/// dependencies); the body of the answer as JSON.
#[cfg(any(feature = "cli", feature = "rest"))]
pub fn curl(method: &str, url: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "-X", method, url]);
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ]);
    }
    let out = command.output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{method} {url}: {}", String::from_utf8_lossy(&out.stdout)))
}
