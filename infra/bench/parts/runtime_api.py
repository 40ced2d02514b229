"""A local Lambda Runtime API: serves a function process its events one by one and records
when it asked for each (GET /next) and when it answered, for the coldstart and memory
parts."""

import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# ------------------------------------------------------------------ Lambda Runtime API


class Invocations:
    """One function process's view of the Runtime API: its events and what it reported."""

    def __init__(self, events, function_arn):
        self.events = [(str(uuid.uuid4()), e) for e in events]
        self.arn = function_arn
        self.lock = threading.Lock()
        self.handed = 0
        self.gets = []  # arrival times of GET /next
        self.responses = []  # (time, request id, body)
        self.errors = []  # (time, kind, body)
        self.closed = threading.Event()
        self.done = threading.Event()

    def _check_done(self):
        if len(self.responses) + len(self.errors) >= len(self.events) or any(k == "init" for _, k, _ in self.errors):
            self.done.set()


class RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    PREFIX = "/2018-06-01/runtime/"

    def log_message(self, *args):
        pass

    def _send(self, code, body=b'{"status":"OK"}', headers=()):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        inv = self.server.current
        t = time.monotonic()
        if inv is None or self.path != self.PREFIX + "invocation/next":
            self._send(404, b'{"errorMessage":"unknown path"}')
            return
        with inv.lock:
            inv.gets.append(t)
            ev = inv.events[inv.handed] if inv.handed < len(inv.events) else None
            if ev is not None:
                inv.handed += 1
        if ev is None:
            # No more work: hold the long poll, as Lambda does, until this process is stopped.
            inv.closed.wait(timeout=900)
            self.close_connection = True
            return
        request_id, body = ev
        deadline = int(time.time() * 1000) + 1000 * self.server.timeout_seconds
        self._send(
            200,
            body.encode(),
            [
                ("Lambda-Runtime-Aws-Request-Id", request_id),
                ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                ("Lambda-Runtime-Invoked-Function-Arn", inv.arn),
                ("Lambda-Runtime-Trace-Id", "Root=1-6745a3c0-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0"),
            ],
        )

    def do_POST(self):
        inv = self.server.current
        body = self._body()
        t = time.monotonic()
        parts = self.path[len(self.PREFIX):].split("/") if self.path.startswith(self.PREFIX) else []
        if inv is None:
            self._send(404, b'{"errorMessage":"no invocation"}')
            return
        with inv.lock:
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
                inv.responses.append((t, parts[1], body.decode(errors="replace")))
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] == "error":
                inv.errors.append((t, "invocation", body.decode(errors="replace")))
            elif parts == ["init", "error"]:
                inv.errors.append((t, "init", body.decode(errors="replace")))
            else:
                self._send(404, b'{"errorMessage":"unknown path"}')
                return
            inv._check_done()
        self._send(202)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A stopped function process resets its connections; that is expected.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeApi:
    """Serves each function process on a server (and port) of its own: a request a stopped
    process left in flight can then never reach the next process's invocations (one shared
    server handed such a late GET /next the next run's event and counted its time before
    that run's start, which gave negative and failed samples)."""

    def __init__(self, timeout_seconds):
        self.timeout_seconds = timeout_seconds
        self.live = []

    def begin(self, events, arn):
        """The invocations of one process, on a fresh server; its address is `inv.addr`."""
        inv = Invocations(events, arn)
        server = QuietServer(("127.0.0.1", 0), RuntimeHandler)
        server.daemon_threads = True
        server.block_on_close = False
        server.current = inv
        server.timeout_seconds = self.timeout_seconds
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        host, port = server.server_address[:2]
        inv.addr = f"{host}:{port}"
        inv.server = server
        self.live.append(inv)
        return inv

    def end(self, inv):
        inv.closed.set()
        if inv in self.live:
            self.live.remove(inv)
            inv.server.shutdown()
            inv.server.server_close()

    def close(self):
        for inv in list(self.live):
            self.end(inv)
