"""HTTP plumbing of the fake servers (fake_metadata.py) and the proxies (relays.py).

read_body        the request body, Content-Length or chunked (conftest's proxy reads
                 bodies with it too).
_Base            threaded HTTP server with call records, scripting and an outage
                 switch; the fakes subclass it and implement ``_handle``.  It binds a
                 loopback address (or, inside a ``unshare -n`` network namespace that
                 has only ``lo``, an address added to ``lo``), has a ``stop`` event
                 that ends every hang at teardown, and ``close()`` shuts it down.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_MAX = 20.0  # a hanging fake answers nothing for at most this long


def read_body(h) -> bytes:
    """The request body, Content-Length or chunked (the agent sends its empty IMDS token
    PUT body chunked: leaving "0\\r\\n\\r\\n" unread would corrupt the next request
    on the keep-alive connection)."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        for _ in range(100000):
            line = h.rfile.readline(65537)
            if not line:
                break
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                for _ in range(1000):  # trailers
                    if h.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                        break
                break
            chunks.append(h.rfile.read(size))
            h.rfile.readline(3)
        return b"".join(chunks)
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n else b""


class _ServerV4(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _ServerV6(_ServerV4):
    address_family = socket.AF_INET6


def _make_server(host, port, handler):
    cls = _ServerV6 if ":" in host else _ServerV4
    # An IPv6 address just added to lo can stay "tentative" (duplicate address
    # detection) for a moment: binding fails with EADDRNOTAVAIL until it settles.
    deadline = time.monotonic() + 5
    while True:
        try:
            return cls((host, port), handler)
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _dispatch(self):
        self.server.fake._handle(self)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _dispatch


class _Base:
    """Threaded HTTP server on host:port with call records, scripting and an outage switch."""

    def __init__(self, host="127.0.0.1", port=0):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.calls = []  # dicts: method, path, headers (lower-case keys), status, time, ...
        self.down = None  # None | "refuse" | "hang" | "error"
        self.server = _make_server(host, port, _Handler)
        self.server.fake = self
        self.host = host
        self.port = self.server.server_address[1]
        h = f"[{host}]" if ":" in host else host
        self.url = f"http://{h}:{self.port}" if self.port != 80 else f"http://{h}"
        self._closed = False
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    # ---- plumbing
    def _read_body(self, h) -> bytes:
        return read_body(h)

    def _send(self, h, status, body=b"", ctype="text/plain", headers=None):
        if isinstance(body, str):
            body = body.encode()
        h.send_response_only(status)
        h.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _record(self, h, **extra):
        rec = {
            "method": h.command,
            "path": h.path,
            "headers": {k.lower(): v for k, v in h.headers.items()},
            "time": time.time(),
            "status": None,
        }
        rec.update(extra)
        with self.lock:
            self.calls.append(rec)
        return rec

    def _outage(self, h) -> bool:
        """Handle a request while the server is down. True if it was handled."""
        mode = self.down
        if mode is None:
            return False
        self._record(h, outage=mode)
        if mode == "hang":
            self.stop.wait(HANG_MAX)
        elif mode == "error":
            self._send(h, 500, "down")
            return True
        h.close_connection = True
        return True

    def _handle(self, h):  # pragma: no cover - overridden
        raise NotImplementedError

    # ---- control
    def go_down(self, mode="refuse"):
        """Make the endpoint unavailable: "refuse" (listener closed: connection
        refused, open keep-alive connections are dropped), "hang" (no answer) or
        "error" (500 to everything)."""
        self.down = mode
        if mode == "refuse":
            threading.Thread(target=self._close_listener, daemon=True).start()

    def _close_listener(self):
        with self.lock:
            if self._closed:
                return
            self._closed = True
        self.server.shutdown()
        self.server.server_close()

    def close(self):
        self.stop.set()
        self._close_listener()

    # ---- inspection
    def requests(self, path=None, method=None):
        with self.lock:
            return [
                c
                for c in self.calls
                if (path is None or c["path"] == path) and (method is None or c["method"] == method)
            ]

    def count(self, path=None, method=None) -> int:
        return len(self.requests(path, method))
