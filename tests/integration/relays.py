"""Relays between the agent and its upstreams, and a trap.

RecordingProxy   reverse proxy in front of moto that records requests *and* replies;
                 it also serves absolute-form (forward proxy) requests to loopback
                 targets and records that they came through as a proxy.  auth_scope
                 and sts_credentials read what it recorded.
Acceptor         base of the raw-socket listeners: an accept loop that ends on close().
TrapServer       a listener that only counts TCP connections.
UnixBridge       unix-socket -> loopback TCP forwarder (filesystem unix sockets cross
                 network namespaces, so an agent inside ``unshare -n`` can reach moto).

relay_reply and pump_socket are shared with conftest's CountingProxy and
test_scratch.py's CONNECT proxy.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from fake_http import _ServerV4, read_body


# --------------------------------------------------------------------------- recording proxy


def relay_reply(h, status, rheaders, data):
    """Send an upstream reply (status, header pairs, whole body) back through handler
    `h`, minus the hop-by-hop and framing headers: the body goes out with its own
    Content-Length.  Shared by the proxies here and conftest's CountingProxy."""
    h.send_response_only(status)
    for k, v in rheaders:
        if k.lower() in ("connection", "transfer-encoding", "content-length", "keep-alive"):
            continue
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _handle(self):
        p: RecordingProxy = self.server.owner
        body = read_body(self)
        target_port, path, via_proxy = p.target_port, self.path, False
        if self.path.startswith("http://"):
            u = urlsplit(self.path)
            via_proxy = True
            path = u.path + ("?" + u.query if u.query else "")
            if u.hostname not in ("127.0.0.1", "localhost") or u.port is None:
                self._reply(502, [("Content-Type", "text/plain")], b"proxy only forwards to loopback")
                p._add(self.command, self.path, self.headers, body, 502, b"", via_proxy)
                return
            target_port = u.port
        conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in ("proxy-connection", "proxy-authorization", "transfer-encoding", "content-length"):
                    continue
                conn.putheader(k, v)
            if body or self.command in ("POST", "PUT"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            status, rheaders = resp.status, resp.getheaders()
        except OSError as e:
            status, rheaders, data = 502, [("Content-Type", "text/plain")], repr(e).encode()
        finally:
            conn.close()
        p._add(self.command, self.path, self.headers, body, status, data, via_proxy)
        self._reply(status, rheaders, data)

    def _reply(self, status, rheaders, data):
        relay_reply(self, status, rheaders, data)

    do_POST = do_GET = do_PUT = _handle

    def do_CONNECT(self):
        """Tunnel (what ureq does for every target behind an HTTP proxy); loopback only."""
        p: RecordingProxy = self.server.owner
        host, _, port = self.path.rpartition(":")
        p._add("CONNECT", self.path, self.headers, b"", None, b"", True)
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            self._reply(403, [("Content-Type", "text/plain")], b"proxy only tunnels to loopback")
            self.close_connection = True
            return
        try:
            up = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        except OSError:
            self._reply(502, [("Content-Type", "text/plain")], b"cannot connect")
            self.close_connection = True
            return
        self.send_response_only(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        a = self.connection
        a.settimeout(60)
        up.settimeout(60)
        t = threading.Thread(target=pump_socket, args=(up, a), daemon=True)
        t.start()
        pump_socket(a, up)
        t.join(60)
        up.close()


class RecordingProxy:
    """Reverse proxy to 127.0.0.1:target_port recording every exchange."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.lock = threading.Lock()
        self.exchanges = []
        self.server = _ServerV4(("127.0.0.1", 0), _ProxyHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _add(self, method, path, headers, body, status, data, via_proxy):
        hdrs = {k.lower(): v for k, v in headers.items()}
        target = hdrs.get("x-amz-target", "")
        action = None
        if not target and body:
            action = parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
        with self.lock:
            self.exchanges.append({
                "method": method, "path": path, "headers": hdrs, "body": body, "status": status,
                "response": data, "op": target.split(".")[-1] if target else action,
                "via_proxy": via_proxy, "time": time.time(),
            })

    def ops(self, op=None):
        with self.lock:
            return [e for e in self.exchanges if op is None or e["op"] == op]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


AUTH_AKID_RE = re.compile(r"Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")


def auth_scope(headers: dict):
    """(akid, date, region, service) from a SigV4 Authorization header, or None."""
    m = AUTH_AKID_RE.search(headers.get("authorization", ""))
    return m.groups() if m else None


def sts_credentials(xml: bytes):
    """AccessKeyId/SecretAccessKey/SessionToken/Expiration from an STS XML reply."""
    text = xml.decode("utf-8", "replace")
    out = {}
    for k in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"):
        m = re.search(rf"<{k}>([^<]*)</{k}>", text)
        if m:
            out[k] = m.group(1)
    return out


# --------------------------------------------------------------------------- trap


class Acceptor:
    """A thread accepting connections on the listening socket `sock` and handing each
    to ``_accepted(conn)``, until ``close()``.  The accept timeout (`poll` seconds)
    bounds how long ``close()`` waits for the loop.  The base of the trap, the unix
    bridge's inside end and test_scratch.py's CONNECT proxy, whose accept loops are
    the same."""

    def __init__(self, sock, poll=0.1):
        self.sock = sock
        self.sock.settimeout(poll)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._accepted(c)

    def _accepted(self, conn):  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class TrapServer(Acceptor):
    """Counts TCP connections to (host, port), closes each at once."""

    def __init__(self, host="127.0.0.1", port=0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.connections = 0
        super().__init__(sock)

    def _accepted(self, conn):
        self.connections += 1
        try:
            conn.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- unix bridge


def pump_socket(src, dst):
    """Copy src to dst until EOF or an error, then pass the EOF on (shut dst for
    writing, src for reading).  One direction of a tunnel: used by the proxies and the
    bridge here and by test_scratch.py's CONNECT proxy."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _splice(a, b):
    a.settimeout(120)
    b.settimeout(120)
    t1 = threading.Thread(target=pump_socket, args=(a, b), daemon=True)
    t2 = threading.Thread(target=pump_socket, args=(b, a), daemon=True)
    t1.start()
    t2.start()

    def closer():
        t1.join(180)
        t2.join(180)
        a.close()
        b.close()

    threading.Thread(target=closer, daemon=True).start()


class _Forwarder(Acceptor):
    """Accepts on `listen_sock`; each connection is spliced to a new `connect()` socket."""

    def __init__(self, listen_sock, connect):
        self.connect = connect
        super().__init__(listen_sock)

    def _accepted(self, conn):
        try:
            up = self.connect()
        except OSError:
            conn.close()
            return
        _splice(conn, up)


class UnixBridge(_Forwarder):
    """Outside end: unix socket `path` -> 127.0.0.1:target_port."""

    def __init__(self, path, target_port):
        self.path = str(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(64)
        super().__init__(s, lambda: socket.create_connection(("127.0.0.1", target_port), timeout=10))

    def close(self):
        super().close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _unix_connector(path):
    def connect():
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.settimeout(10)
        u.connect(path)
        return u

    return connect
