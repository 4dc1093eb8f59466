"""A small HTTP proxy in front of a test object store or model server that
shows the faults a real server cannot be made to show on demand.

  python3 fault_proxy.py --upstream http://127.0.0.1:PORT --mode MODE

Modes:
  pass       every request passes;
  cut        the first GET of each object whose body is longer than 1 MiB
             is cut off after 1 MiB (the connection closes mid-body);
  fail:N     the first N requests are answered 503, then all pass;
  fail-post:N  the first N POST requests are answered 503 (with
             `Retry-After: 0`), then all pass;
  hang-if:TEXT  a POST whose body holds TEXT hangs for 60 s, then the
             connection closes unanswered; everything else passes;
  reply:BODY every POST is answered 200 with BODY (as JSON, whatever it
             holds); everything else passes;
  max-body:N a POST whose body is longer than N bytes is answered 413;
             everything else passes;
  fail-parts:N  the first N part uploads in the middle of an upload (S3
             `PUT ?partNumber=`, an Azure `PUT ?comp=block`, a Cloud
             Storage resumable chunk: `PUT` with `upload_id=` and a body)
             are read whole and answered 503, then all pass;
  drop-parts:N  the same, but the connection closes unanswered;
  hang-list  every listing (S3 `?list-type=`, Azure `?comp=list`, Cloud
             Storage `GET /storage/v1/b/BUCKET/o`) hangs for 60 s, then the connection
             closes unanswered; everything else passes;
  delay:MS   every request waits MS milliseconds before it is passed on (a
             remote store's round trip).

Prints the port it listens on (127.0.0.1) as its first line. GET
/__proxy_stats answers {"cuts": .., "failed": .., "ranges": [..], "requests":
[..]}: how many bodies it cut, how many requests it failed, the Range
headers it saw, and every request's method and path.
Stops when its standard input closes.
"""

import argparse
import http.client
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

CUT_AFTER = 1 << 20
lock = threading.Lock()
stats = {"cuts": 0, "failed": 0, "ranges": [], "requests": []}
cut_paths = set()


def make_handler(upstream, mode):
    host = urlparse(upstream)
    # One upstream connection per client connection's thread, kept open
    # across its requests: a new connection per request costs more than
    # the rest of a small request (and would be what a benchmark measured).
    local = threading.local()

    def forward(method, path, body, headers):
        for attempt in (1, 2):
            conn = getattr(local, "conn", None)
            fresh = conn is None
            if fresh:
                conn = local.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers)
                reply = conn.getresponse()
                return reply, reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                local.conn = None
                # A kept connection the server had closed: once more, anew.
                if fresh or attempt == 2:
                    raise

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # The head and the body go out in two writes: without this,
            # Nagle's algorithm holds the body until the client's delayed
            # ACK of the head, 40 ms later, on every request.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def handle_any(self):
            if self.path == "/__proxy_stats":
                body = json.dumps(stats).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            with lock:
                stats["requests"].append(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            listing = self.command == "GET" and (
                "list-type=" in self.path or "comp=list" in self.path
                or re.match(r"^/storage/v1/b/[^/?]+/o(\?|$)", self.path)
            )
            if mode.startswith("delay:"):
                time.sleep(int(mode[6:]) / 1000)
            if mode == "hang-list" and listing:
                with lock:
                    stats["hung"] = stats.get("hung", 0) + 1
                time.sleep(60)
                self.close_connection = True
                return
            if mode.startswith("hang-if:") and self.command == "POST" and mode[8:].encode() in (body or b""):
                with lock:
                    stats["hung"] = stats.get("hung", 0) + 1
                time.sleep(60)
                self.close_connection = True
                return
            if mode.startswith("reply:") and self.command == "POST":
                reply = mode[6:].encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                return
            if mode.startswith("max-body:") and self.command == "POST" and len(body or b"") > int(mode[9:]):
                with lock:
                    stats["failed"] += 1
                message = b'{"error": "payload too large"}'
                self.send_response(413)
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            part = self.command == "PUT" and body and (
                "partNumber=" in self.path or "upload_id=" in self.path
                or re.search(r"[?&]comp=block(&|$)", self.path)
            )
            for kind in ("fail-parts:", "drop-parts:"):
                if mode.startswith(kind) and part:
                    with lock:
                        fail = stats["failed"] < int(mode[len(kind):])
                        if fail:
                            stats["failed"] += 1
                    if fail and kind == "drop-parts:":
                        self.close_connection = True
                        return
                    if fail:
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
            if mode.startswith("fail-post:") and self.command == "POST":
                with lock:
                    fail = stats["failed"] < int(mode[10:])
                    if fail:
                        stats["failed"] += 1
                if fail:
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            if mode.startswith("fail:"):
                with lock:
                    fail = stats["failed"] < int(mode[5:])
                    if fail:
                        stats["failed"] += 1
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            if self.command == "GET" and self.headers.get("Range"):
                with lock:
                    stats["ranges"].append(self.headers["Range"])
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            reply, data = forward(self.command, self.path, body, headers)
            cut = False
            if mode == "cut" and self.command == "GET" and len(data) > CUT_AFTER:
                key = self.path.split("?")[0]
                with lock:
                    if key not in cut_paths:
                        cut_paths.add(key)
                        stats["cuts"] += 1
                        cut = True
            self.send_response(reply.status)
            for k, v in reply.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", reply.getheader("Content-Length") or "0")
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            if cut:
                self.send_header("Connection", "close")
            self.end_headers()
            if cut:
                self.wfile.write(data[:CUT_AFTER])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any

    return Handler


def main():
    # Threads waiting on sockets give the interpreter up at once; the
    # default 5 ms turns would serialize many small requests behind each other.
    sys.setswitchinterval(0.0005)
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--mode", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.upstream, args.mode))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the test closes our stdin (or exits)


if __name__ == "__main__":
    main()
