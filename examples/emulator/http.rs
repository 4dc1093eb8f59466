//! A small HTTP/1.1 server for the emulator: `httparse` parses each
//! request head; everything else is here, so every limit is ours:
//!
//! - a cap on connections at once, with room to spare (more get 503 from a
//!   thread of their own, never from the accepting one, so a client that
//!   trickles bytes to a refused connection delays nobody);
//! - a cap on the request head (431) and the body (413, refused from
//!   `Content-Length` before a byte of it is read); one `Content-Length`
//!   of plain digits (two that differ, or `+2`, are 400);
//! - a deadline for the whole request, head and body (408 past it), and a
//!   timeout on every read and write, so a slow or silent client holds its
//!   own thread for a bounded time and nobody else's;
//! - `HEAD` answered with the head only;
//! - one request per connection (`Connection: close`), which every HTTP
//!   client handles, closed so that the response survives unread input;
//! - a panic in a handler is a 500 for that request, nothing more.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batch_prediction::{Code, RestRequest, RestResponse, Status};

/// What one connection may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub io_timeout: Duration,
    /// The whole request, head and body, must arrive within this.
    pub request_deadline: Duration,
}

/// Refused connections waiting for their 503; more are closed unanswered.
const REFUSED_QUEUE: usize = 64;

type Handler = dyn Fn(RestRequest) -> RestResponse + Send + Sync;

/// Accepts connections until `stopping` is set, each on its own thread.
pub fn serve(
    listener: TcpListener,
    limits: Limits,
    stopping: &AtomicBool,
    handler: Arc<Handler>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let active = Arc::new(AtomicUsize::new(0));
    // The 503s go out from a thread of their own: writing one, and the
    // lingering close after it, waits on the client.
    let (refuse, refused) = std::sync::mpsc::sync_channel::<TcpStream>(REFUSED_QUEUE);
    std::thread::Builder::new()
        .name("http-refuse".into())
        .spawn(move || {
            for mut stream in refused {
                let response = error(503, Code::Unavailable, "too many connections; retry");
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write_response(&mut stream, &response, false, Duration::from_millis(200));
                log("-", "-", 503, Instant::now());
            }
        })?;
    while !stopping.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err()
            || stream.set_read_timeout(Some(limits.io_timeout)).is_err()
            || stream.set_write_timeout(Some(limits.io_timeout)).is_err()
        {
            continue;
        }
        if active.load(Ordering::SeqCst) >= limits.max_connections {
            // A full queue closes the connection unanswered.
            let _ = refuse.try_send(stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (active, handler) = (Arc::clone(&active), Arc::clone(&handler));
        let spawned = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| connection(stream, limits, &*handler)));
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

/// Serves the one request of a connection.
fn connection(mut stream: TcpStream, limits: Limits, handler: &Handler) {
    let started = Instant::now();
    let deadline = started + limits.request_deadline;
    let late = |stream: &mut TcpStream, method: &str, target: &str| {
        let message = format!(
            "the request did not arrive within {} s",
            limits.request_deadline.as_secs_f64()
        );
        reply(
            stream,
            method,
            target,
            started,
            408,
            Code::DeadlineExceeded,
            &message,
        );
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // The head: up to the blank line, within the limit.
    let (method, target, headers, head_len) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    parsed.method.unwrap_or("").to_owned(),
                    parsed.path.unwrap_or("").to_owned(),
                    headers,
                    len,
                );
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return bad_head(&mut stream, started, 431, "more than 64 request headers");
            }
            Err(e) => {
                return bad_head(
                    &mut stream,
                    started,
                    400,
                    &format!("malformed HTTP request: {e}"),
                );
            }
        }
        if buf.len() >= limits.max_head_bytes {
            return bad_head(
                &mut stream,
                started,
                431,
                &format!("request head over {} bytes", limits.max_head_bytes),
            );
        }
        match read_by(&mut stream, &mut chunk, deadline, limits.io_timeout) {
            Got::Data(n) => buf.extend_from_slice(&chunk[..n]),
            Got::Closed => return, // nobody to answer
            Got::Late => return late(&mut stream, "-", "-"),
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if header("Transfer-Encoding").is_some() {
        return reply(
            &mut stream,
            &method,
            &target,
            started,
            411,
            Code::InvalidArgument,
            "send the body with Content-Length, not Transfer-Encoding",
        );
    }
    // One length, of plain digits: two that differ would let a proxy and
    // this server split the stream differently, and `+2` parses in Rust
    // but is no HTTP length.
    let mut lengths = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.trim());
    let first = lengths.next();
    if lengths.any(|other| Some(other) != first) {
        return reply(
            &mut stream,
            &method,
            &target,
            started,
            400,
            Code::InvalidArgument,
            "conflicting Content-Length headers",
        );
    }
    let digits = |v: &str| -> Result<u64, ()> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        v.parse::<u64>().map_err(|_| ())
    };
    let length: usize = match first.map(digits) {
        None => 0,
        Some(Ok(n)) if n <= limits.max_body_bytes as u64 => n as usize,
        Some(Ok(n)) => {
            let message = format!(
                "request body of {n} bytes is over the limit of {} bytes",
                limits.max_body_bytes
            );
            return reply(
                &mut stream,
                &method,
                &target,
                started,
                413,
                Code::InvalidArgument,
                &message,
            );
        }
        Some(Err(_)) => {
            return reply(
                &mut stream,
                &method,
                &target,
                started,
                400,
                Code::InvalidArgument,
                "invalid Content-Length",
            );
        }
    };
    if length > 0
        && header("Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
    {
        return;
    }
    let mut body = buf.split_off(head_len);
    body.truncate(length);
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        match read_by(&mut stream, &mut chunk[..want], deadline, limits.io_timeout) {
            Got::Closed => {
                let message = format!("the body ended after {} of {length} bytes", body.len());
                return reply(
                    &mut stream,
                    &method,
                    &target,
                    started,
                    400,
                    Code::InvalidArgument,
                    &message,
                );
            }
            Got::Data(n) => body.extend_from_slice(&chunk[..n]),
            Got::Late => return late(&mut stream, &method, &target),
        }
    }
    let mut request = RestRequest::new(method.clone(), &target);
    for (name, value) in headers {
        request = request.with_header(name, value);
    }
    let response = handler(request.with_body(body));
    let status = response.status;
    let head_only = method.eq_ignore_ascii_case("HEAD");
    let _ = write_response(&mut stream, &response, head_only, Duration::from_secs(2));
    match &response.detail {
        // An internal error's message stays here, out of the response.
        Some(detail) => eprintln!(
            "{method} {target} -> {status} ({:.1} ms): {detail}",
            started.elapsed().as_secs_f64() * 1000.0
        ),
        None => log(&method, &target, status, started),
    }
}

/// Answers a request whose head could not be read (no method or target to log).
fn bad_head(stream: &mut TcpStream, started: Instant, status: u16, message: &str) {
    reply(
        stream,
        "-",
        "-",
        started,
        status,
        Code::InvalidArgument,
        message,
    );
}

fn reply(
    stream: &mut TcpStream,
    method: &str,
    target: &str,
    started: Instant,
    status: u16,
    code: Code,
    message: &str,
) {
    let head_only = method.eq_ignore_ascii_case("HEAD");
    let _ = write_response(
        stream,
        &error(status, code, message),
        head_only,
        Duration::from_secs(2),
    );
    log(method, target, status, started);
}

/// An error response in the API's shape, with `status` as its HTTP status.
fn error(status: u16, code: Code, message: &str) -> RestResponse {
    let mut body = Status::new(code, message).to_json();
    body["error"]["code"] = status.into();
    let mut response = RestResponse::default();
    response.status = status;
    response.headers = vec![(
        "Content-Type".into(),
        "application/json; charset=UTF-8".into(),
    )];
    response.body = serde_json::to_vec(&body).expect("JSON values serialize");
    response
}

/// What a read before the deadline got.
enum Got {
    Data(usize),
    /// The client closed, or failed, or went silent for the I/O timeout.
    Closed,
    /// The request's deadline passed.
    Late,
}

/// One read, waiting no longer than the I/O timeout or the deadline.
fn read_by(
    stream: &mut TcpStream,
    chunk: &mut [u8],
    deadline: Instant,
    io_timeout: Duration,
) -> Got {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Got::Late;
    }
    if stream.set_read_timeout(Some(left.min(io_timeout))).is_err() {
        return Got::Closed;
    }
    match stream.read(chunk) {
        Ok(0) => Got::Closed,
        Ok(n) => Got::Data(n),
        Err(_) if Instant::now() >= deadline => Got::Late,
        Err(_) => Got::Closed,
    }
}

/// Writes `response` (only its head for a `HEAD` request) and closes,
/// draining what the client still sends for at most `linger`.
fn write_response(
    stream: &mut TcpStream,
    response: &RestResponse,
    head_only: bool,
    linger: Duration,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&response.body)?;
    }
    stream.flush()?;
    // A lingering close: closing with unread input would reset the
    // connection and lose the response, so stop sending and drain what the
    // client still sends, within bounds (time and bytes), until it closes.
    stream.shutdown(std::net::Shutdown::Write)?;
    let until = Instant::now() + linger;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < 1 << 20 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// One line per request, on stderr.
fn log(method: &str, target: &str, status: u16, started: Instant) {
    eprintln!(
        "{method} {target} -> {status} ({:.1} ms)",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
