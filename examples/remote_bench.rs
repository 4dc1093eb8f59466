//! The remote predictor against a model server that answers at once, for
//! `benches/compare.sh --remote` (issue #16 §4): is a job's throughput the
//! server's, or the client's?
//!
//! ```text
//! remote_bench echo-server                 # prints its port; serves until stdin closes
//! remote_bench bare URL IN OUT THREADS     # a bare loop of the job's requests
//! remote_bench job URL IN OUTDIR THREADS   # the job, with RemotePredictor
//! ```
//!
//! The server speaks TensorFlow Serving's REST API: `POST …:predict` with
//! `{"instances": […]}` is answered `{"predictions": […]}` with the same
//! array, copied as bytes; `GET` of a model answers `{}`. The bare loop
//! makes the job's requests with nothing around them: THREADS threads take
//! batches of 64 lines in turn, parse each line, send the batch as the
//! remote predictor does (ureq, one kept-alive connection per thread), parse
//! the answer and write each prediction as a line, in input order. Both
//! print `SECONDS COUNT`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use batch_prediction::predict::CancelHandle;
use batch_prediction::remote::Protocol;
use batch_prediction::{
    BatchExecutor, DataFormat, ExecutorConfig, Job, LocalStorage, ModelVersion, PredictionInput,
    RemoteResolver, SystemClock, Transition,
};
use serde_json::{Value, json};

const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (seconds, count) = match args.as_slice() {
        ["echo-server"] => return echo_server(),
        ["bare", url, input, output, threads] => {
            bare(url, input, output, threads.parse().expect("THREADS"))
        }
        ["job", url, input, outdir, threads] => {
            job(url, input, outdir, threads.parse().expect("THREADS"))
        }
        _ => {
            eprintln!(
                "usage: remote_bench echo-server | bare URL IN OUT THREADS | job URL IN OUTDIR THREADS"
            );
            std::process::exit(2);
        }
    };
    println!("{seconds:.6} {count}");
}

/// Serves on a free loopback port, one thread per connection, until stdin
/// closes.
fn echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    println!("{}", listener.local_addr().expect("an address").port());
    std::io::stdout().flush().expect("stdout");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Answers the requests of one connection, kept alive.
fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone().expect("a clone"));
    let mut writer = stream;
    let mut head = Vec::new();
    loop {
        head.clear();
        // The head: lines up to an empty one.
        loop {
            let before = head.len();
            match reader.read_until(b'\n', &mut head) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if &head[before..] == b"\r\n" || &head[before..] == b"\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let length = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .unwrap_or(0usize);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        const KEY: &[u8] = b"{\"instances\":";
        let answer: Vec<u8> = match body.strip_prefix(KEY) {
            Some(rest) => [&b"{\"predictions\":"[..], rest].concat(),
            None => b"{}".to_vec(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The job's requests in a bare loop of `threads` threads.
fn bare(url: &str, input: &str, output: &str, threads: usize) -> (f64, u64) {
    let start = Instant::now();
    let text = std::fs::read(input).expect("input");
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let batches: Vec<&[&[u8]]> = lines.chunks(BATCH).collect();
    let next = AtomicUsize::new(0);
    let endpoint = format!("{url}/v1/models/m:predict");
    let mut outputs: Vec<(usize, Vec<u8>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(batch) = batches.get(i) else { break };
                        let instances: Vec<Value> = batch
                            .iter()
                            .map(|l| serde_json::from_slice(l).expect("valid JSON"))
                            .collect();
                        let body =
                            serde_json::to_vec(&json!({ "instances": instances })).expect("JSON");
                        let mut response = agent
                            .post(&endpoint)
                            .header("Content-Type", "application/json")
                            .send(&body[..])
                            .expect("the server answers");
                        let answer: Value = serde_json::from_slice(
                            &response
                                .body_mut()
                                .with_config()
                                .limit(1 << 30)
                                .read_to_vec()
                                .expect("a body"),
                        )
                        .expect("JSON");
                        let mut out = Vec::new();
                        for p in answer["predictions"].as_array().expect("predictions") {
                            serde_json::to_writer(&mut out, p).expect("JSON");
                            out.push(b'\n');
                        }
                        done.push((i, out));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker"))
            .collect()
    });
    outputs.sort_by_key(|(i, _)| *i);
    let mut file = std::io::BufWriter::new(std::fs::File::create(output).expect("output"));
    for (_, out) in &outputs {
        file.write_all(out).expect("write");
    }
    file.into_inner().expect("flush").sync_all().expect("sync");
    (start.elapsed().as_secs_f64(), lines.len() as u64)
}

/// The job: JSON lines through RemotePredictor, `threads` workers.
fn job(url: &str, input: &str, outdir: &str, threads: i64) -> (f64, u64) {
    let _ = std::fs::remove_dir_all(outdir);
    let mut job = Job::new(
        "remote_bench",
        PredictionInput::new(
            DataFormat::Json,
            [input],
            outdir,
            "local",
            ModelVersion::uri("m"),
        )
        .set_batch_size(BATCH as i64)
        .set_max_worker_count(threads),
    );
    job.apply(Transition::Queue, &SystemClock).expect("queued");
    let start = Instant::now();
    let resolver = RemoteResolver::new(url, Protocol::TfServing).with_model("m");
    let summary = BatchExecutor::new(Arc::new(LocalStorage::new()), Arc::new(resolver))
        .with_config(ExecutorConfig::default())
        .run(&mut job, &CancelHandle::new())
        .expect("a run");
    assert_eq!(summary.error_count, 0, "{:?}", job.error_message);
    (start.elapsed().as_secs_f64(), summary.prediction_count)
}
