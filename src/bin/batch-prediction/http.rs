//! `serve`'s HTTP/1.1 server: hyper parses and writes the messages, tower
//! layers hold the per-request limits, and this file holds the rest.
//!
//! - **Connections**: at most `max_connections` at once. More get a 503 from
//!   a task of their own (a few dozen at a time; beyond that they are
//!   closed), so the accepting loop never waits on a client.
//! - **Heads**: hyper refuses a head over `max_head_bytes` (431) and closes a
//!   connection whose head has not arrived within the deadline (which also
//!   ends idle kept-alive connections).
//! - **Bodies**: tower-http's `RequestBodyLimit` answers 413 from the
//!   `Content-Length` before a byte of the body is read, and caps chunked
//!   bodies as they arrive; its `Timeout` answers 408 to a request (body and
//!   handling) that is not done within the deadline. A body cut short is 400.
//! - **Stalls**: a connection that moves no byte either way for longer than
//!   the deadline (a client that stops reading its response) is closed.
//! - **Log**: one line per answered request on stderr, with the status and
//!   the time taken, and for an internal error the detail the response
//!   leaves out. The layers' own 408 and 413 become errors in the API's JSON
//!   shape, as every other error is.
//! - A panic in a handler is a 500 for that request, nothing more.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use batch_prediction::rest::{RestRequest, RestResponse};
use batch_prediction::{Code, Status};
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// What the server allows one client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more get 503.
    pub max_connections: usize,
    /// The largest request head (request line and headers); more is 431.
    pub max_head_bytes: usize,
    /// The largest request body; more is 413.
    pub max_body_bytes: usize,
    /// The time a request's head may take, and then its body and handling.
    pub request_deadline: Duration,
}

/// Refused connections being answered at once; more are closed unanswered.
const REFUSALS: usize = 64;

/// The API, as a function of a request.
pub type Handler = dyn Fn(RestRequest) -> RestResponse + Send + Sync;

/// An internal error's detail, which the response leaves out and the log keeps.
#[derive(Clone)]
struct Detail(String);

/// Serves `handler` on `listener` until `stop` completes. Connections still
/// open then are dropped with the runtime.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    handler: Arc<Handler>,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            tokio::spawn(connection(stream, limits, Arc::clone(&handler), slot));
        } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            tokio::spawn(refuse(stream, refusal));
        }
    }
}

/// One connection, with as many requests as the client keeps it for.
async fn connection(
    stream: TcpStream,
    limits: Limits,
    handler: Arc<Handler>,
    _slot: OwnedSemaphorePermit,
) {
    let deadline = limits.request_deadline;
    let max_body = limits.max_body_bytes;
    let api = ServiceBuilder::new()
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            deadline,
        ))
        .service_fn(move |request| handle(request, Arc::clone(&handler)));
    let logged = service_fn(move |request: Request<Incoming>| {
        let api = api.clone();
        async move {
            let started = Instant::now();
            let (method, target) = (request.method().clone(), target(&request));
            let response = api.oneshot(request).await?;
            let response = in_api_shape(response, max_body, deadline);
            let status = response.status().as_u16();
            match response.extensions().get::<Detail>() {
                Some(Detail(detail)) => log(method.as_str(), &target, status, started, detail),
                None => log(method.as_str(), &target, status, started, ""),
            }
            Ok::<_, Infallible>(response)
        }
    });
    let watched = Watched::new(stream);
    let last_moved = Arc::clone(&watched.last_moved);
    let started = Instant::now();
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .half_close(true)
        .title_case_headers(true)
        .serve_connection(watched, TowerToHyperService::new(logged));
    tokio::pin!(connection);
    // A client that takes nothing and sends nothing for longer than the
    // deadline (with a margin for the handler) is let go.
    let still = deadline + Duration::from_secs(5);
    let result = loop {
        tokio::select! {
            result = &mut connection => break result,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let moved = Duration::from_millis(last_moved.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(moved) > still {
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        // hyper answers a head it cannot parse itself: log those answers.
        let started = Instant::now();
        if e.is_parse_too_large() {
            log("-", "-", 431, started, &e.to_string());
        } else if e.is_parse() {
            log("-", "-", 400, started, &e.to_string());
        }
    }
}

/// A 503 for a connection over the limit, within two seconds.
async fn refuse(stream: TcpStream, _refusal: OwnedSemaphorePermit) {
    let service = service_fn(|request: Request<Incoming>| async move {
        let response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "too many connections; retry",
        );
        log(
            request.method().as_str(),
            &target(&request),
            503,
            Instant::now(),
            "",
        );
        Ok::<_, Infallible>(response)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(1))
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
}

/// A request through the API: its body read whole, then handled on a thread
/// that may block (the job store writes to disk).
async fn handle(
    request: Request<tower_http::body::Limited<Incoming>>,
    handler: Arc<Handler>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::InvalidArgument,
                "the request body is over the limit",
            ));
        }
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                &format!("the request body did not arrive whole: {e}"),
            ));
        }
    };
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut rest = RestRequest::new(head.method.as_str(), target);
    for (name, value) in &head.headers {
        rest = rest.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
    }
    let rest = rest.with_body(body.to_vec());
    match tokio::task::spawn_blocking(move || handler(rest)).await {
        Ok(response) => Ok(to_http(response)),
        Err(e) => {
            let mut response = error(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                "internal error",
            );
            response
                .extensions_mut()
                .insert(Detail(format!("the handler failed: {e}")));
            Ok(response)
        }
    }
}

/// The API's response as HTTP.
fn to_http(response: RestResponse) -> Response<Full<Bytes>> {
    let mut http = Response::new(Full::new(Bytes::from(response.body)));
    *http.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name),
            HeaderValue::try_from(value.as_str()),
        ) {
            http.headers_mut().append(name, value);
        }
    }
    if let Some(detail) = response.detail {
        http.extensions_mut().insert(Detail(detail));
    }
    http
}

/// The layers' own answers (a 408 with no body, a 413 in plain text) as
/// errors in the API's JSON shape, which clients parse; everything else as
/// it is.
fn in_api_shape<B>(
    response: Response<B>,
    max_body: usize,
    deadline: Duration,
) -> Response<Either<B, Full<Bytes>>> {
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if json {
        return response.map(Either::Left);
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            &format!("the request body is over the limit of {max_body} bytes"),
        )
        .map(Either::Right),
        StatusCode::REQUEST_TIMEOUT => error(
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            &format!(
                "the request did not arrive within {} s",
                deadline.as_secs_f64()
            ),
        )
        .map(Either::Right),
        _ => response.map(Either::Left),
    }
}

/// An error response in the API's shape, with `status` as its HTTP status.
fn error(status: StatusCode, code: Code, message: &str) -> Response<Full<Bytes>> {
    to_http(RestResponse::refusal(
        status.as_u16(),
        &Status::new(code, message),
    ))
}

/// The request's path and query, as logged.
fn target<B>(request: &Request<B>) -> String {
    request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

/// One line per answered request, on stderr.
fn log(method: &str, target: &str, status: u16, started: Instant, detail: &str) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if detail.is_empty() {
        eprintln!("{method} {target} -> {status} ({ms:.1} ms)");
    } else {
        eprintln!("{method} {target} -> {status} ({ms:.1} ms): {detail}");
    }
}

/// A connection that notes when a byte last moved either way (in
/// milliseconds from its start), so a client that stalls can be let go.
struct Watched {
    io: TokioIo<TcpStream>,
    started: Instant,
    last_moved: Arc<AtomicU64>,
}

impl Watched {
    fn new(stream: TcpStream) -> Watched {
        Watched {
            io: TokioIo::new(stream),
            started: Instant::now(),
            last_moved: Arc::new(AtomicU64::new(0)),
        }
    }

    fn moved<T>(&self, poll: Poll<T>) -> Poll<T> {
        if poll.is_ready() {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_moved.store(ms, Ordering::Relaxed);
        }
        poll
    }
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        self.moved(poll)
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.moved(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
