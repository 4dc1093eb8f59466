//! `batch-prediction serve` (hyper, with tower layers) against hostile
//! clients, over loopback: a deadline for heads and for bodies, refused
//! connections answered off the accepting loop, slow clients beside normal
//! traffic, strict `Content-Length`, and `HEAD`. Each test is bounded (the
//! slowest takes a few seconds).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The emulator with the echo predictor and a root of its own.
struct Emulator(crate::Emulator);

impl Emulator {
    fn start(args: &[&str]) -> Emulator {
        let mut all = vec!["--predictor", "echo"];
        all.extend(args);
        Emulator(crate::Emulator::start(
            tempfile::tempdir().unwrap(),
            &all,
            &[],
        ))
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.0.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    /// Sends `request` whole and reads the response to its end.
    fn exchange(&self, request: &[u8]) -> String {
        let mut stream = self.connect();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }
}

const LIST: &[u8] =
    b"GET /v1/projects/my-proj/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// The status code of a response, 0 for none.
fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A client that has sent half a request head and then nothing.
fn stalled(emulator: &Emulator) -> TcpStream {
    let mut stream = emulator.connect();
    stream
        .write_all(b"GET /v1/projects/my-proj/jobs HTTP/1.1\r\nHo")
        .unwrap();
    stream
}

/// Sends `at_once` on a new connection, then `slowly` a byte every 200 ms
/// until the server answers or closes; the response and when it came.
fn trickle(emulator: &Emulator, at_once: &[u8], slowly: &[u8]) -> (String, Duration) {
    let mut stream = emulator.connect();
    let mut reader = stream.try_clone().unwrap();
    let started = Instant::now();
    let answer = std::thread::spawn(move || {
        let mut response = Vec::new();
        let _ = reader.read_to_end(&mut response);
        (
            String::from_utf8_lossy(&response).into_owned(),
            started.elapsed(),
        )
    });
    stream.write_all(at_once).unwrap();
    // Each write is quick; only the whole is slow.
    for byte in slowly {
        if stream.write_all(&[*byte]).is_err() || answer.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    answer.join().unwrap()
}

#[test]
fn a_client_trickling_its_head_is_cut_off_at_the_deadline() {
    let emulator = Emulator::start(&["--request-deadline", "2"]);
    let head = format!(
        "GET /v1/projects/my-proj/jobs HTTP/1.1\r\nX-Slow: {}",
        "a".repeat(100)
    );
    let (response, after) = trickle(&emulator, b"", head.as_bytes());
    // hyper closes a connection whose head is late, without an answer:
    // there is no request to answer yet.
    assert_eq!(response, "", "{response}");
    // The whole head would take 28 s; the deadline is 2.
    assert!(after < Duration::from_secs(15), "cut off after {after:?}");
}

#[test]
fn a_client_trickling_its_body_gets_408_at_the_deadline() {
    let emulator = Emulator::start(&["--request-deadline", "2"]);
    let head = b"POST /v1/projects/my-proj/jobs HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
    let (response, after) = trickle(&emulator, head, &[b' '; 100]);
    assert_eq!(status(&response), 408, "{response}");
    assert!(
        response.contains("the request did not arrive within 2 s"),
        "{response}"
    );
    // The whole body would take 20 s.
    assert!(after < Duration::from_secs(15), "cut off after {after:?}");
}

#[test]
fn refused_connections_that_trickle_bytes_do_not_stop_the_server_accepting() {
    let emulator = Emulator::start(&["--max-connections", "4", "--request-deadline", "3"]);
    // Every slot taken by a client that says nothing more.
    let holders: Vec<TcpStream> = (0..4).map(|_| stalled(&emulator)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Refused connections whose clients keep sending, slowly.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..8)
        .map(|_| {
            let mut stream = emulator.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if stream.write_all(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    // The server still accepts, and answers at once: 503 while full.
    let started = Instant::now();
    let response = emulator.exchange(LIST);
    assert_eq!(status(&response), 503, "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refusal took {:?}",
        started.elapsed()
    );
    // Once the holders reach their deadline, their slots serve again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = emulator.exchange(LIST);
        if status(&response) == 200 {
            break;
        }
        assert_eq!(status(&response), 503, "{response}");
        assert!(Instant::now() < deadline, "the slots never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tricklers {
        t.join().unwrap();
    }
    drop(holders);
}

#[test]
fn sixty_four_slow_clients_leave_normal_requests_served() {
    let emulator = Emulator::start(&["--request-deadline", "20"]);
    let slow: Vec<TcpStream> = (0..64).map(|_| stalled(&emulator)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for i in 0..20 {
        let response = emulator.exchange(LIST);
        assert_eq!(status(&response), 200, "request {i}: {response}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "20 requests took {:?} beside 64 slow clients",
        started.elapsed()
    );
    drop(slow);
}

#[test]
fn content_length_is_one_plain_number_and_head_has_no_body() {
    let emulator = Emulator::start(&[]);
    let post = |headers: &str| {
        emulator.exchange(
            format!("POST /v1/projects/my-proj/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n{{}}")
                .as_bytes(),
        )
    };
    let conflicting = post("Content-Length: 2\r\nContent-Length: 3\r\n");
    // hyper refuses these heads itself, with an empty 400.
    assert_eq!(status(&conflicting), 400, "{conflicting}");
    let signed = post("Content-Length: +2\r\n");
    assert_eq!(status(&signed), 400, "{signed}");
    // The same length twice is one length: the API reads the body (and
    // finds the job incomplete).
    let repeated = post("Content-Length: 2\r\nContent-Length: 2\r\n");
    assert_eq!(status(&repeated), 400, "{repeated}");
    assert!(repeated.contains("invalid job"), "{repeated}");

    let head = emulator.exchange(
        b"HEAD /v1/projects/my-proj/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (top, body) = head.split_once("\r\n\r\n").unwrap_or((&head, ""));
    assert!(top.starts_with("HTTP/1.1 "), "{head}");
    assert!(top.contains("Content-Length: "), "{head}");
    assert_eq!(body, "", "a HEAD response carries no body");
}
