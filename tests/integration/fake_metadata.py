"""Fake credential endpoints for the credential-source tests (tests/integration/test_credentials.py).

Everything binds loopback addresses (or, inside a ``unshare -n`` network namespace
that has only ``lo``, addresses added to ``lo``).  Every server has a ``stop`` event
that ends every hang at teardown, and ``close()`` shuts it down.

FakeIMDS         EC2 instance metadata service.  Enforces IMDSv2 by default (a GET
                 without a valid token from ``PUT /latest/api/token`` is answered 401;
                 the PUT needs ``x-aws-ec2-metadata-token-ttl-seconds``).  Other token
                 modes: an HTTP status for the PUT (403/404/405 = IMDSv1 allowed, GETs
                 without a token are then served), or "hang".
FakeContainer    ECS / EKS Pod Identity credential endpoint; checks ``Authorization``.
FakeSTS          AssumeRoleWithWebIdentity endpoint (query protocol, XML replies); its
                 credentials come from a callable (the tests mint real ones with moto's
                 signed AssumeRole).
RecordingProxy   reverse proxy in front of moto that records requests *and* replies;
                 it also serves absolute-form (forward proxy) requests to loopback
                 targets and records that they came through as a proxy.
Acceptor         base of the raw-socket listeners: an accept loop that ends on close().
TrapServer       a listener that only counts TCP connections.
UnixBridge       unix-socket -> loopback TCP forwarder (filesystem unix sockets cross
                 network namespaces, so an agent inside ``unshare -n`` can reach moto).

Run as a script (``unshare -n PYTHON fake_metadata.py '<json spec>'``) it is the
in-namespace side: it brings ``lo`` up, adds addresses to it, starts the fake servers
and the TCP end of the bridge, runs the agent, sends the requests and prints one JSON
object (see :func:`netns_main`).
"""

from __future__ import annotations

import collections
import errno
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

HANG_MAX = 20.0  # a hanging fake answers nothing for at most this long


def iso8601(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def expiration_after(lifetime: float | None) -> float:
    """An expiry `lifetime` seconds from now, rounded UP to a whole second (the wire
    format has whole seconds), so the credentials live at least `lifetime` s."""
    if lifetime is None:
        lifetime = 6 * 3600
    return float(int(time.time() + lifetime) + 1)


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


class _CredsMixin:
    """Hands out credentials from `creds_fn()` -> (akid, secret, token) with an
    Expiration `lifetime` seconds ahead; optionally goes down after `down_after`
    successful credential replies."""

    def _init_creds(self, creds_fn, lifetime, down_after, down_mode):
        self.creds_fn = creds_fn
        self.lifetime = lifetime
        self.down_after = down_after
        self.down_mode = down_mode
        self.served = []  # dicts: akid, secret, token, expiration (epoch), time

    def _next_creds(self):
        akid, secret, token = self.creds_fn()
        exp = expiration_after(self.lifetime)
        rec = {"akid": akid, "secret": secret, "token": token, "expiration": exp, "time": time.time()}
        with self.lock:
            self.served.append(rec)
            n = len(self.served)
        return rec, n

    def _after_served(self, n):
        if self.down_after is not None and n >= self.down_after and self.down is None:
            self.go_down(self.down_mode)

    def served_count(self) -> int:
        with self.lock:
            return len(self.served)

    def expiry_of(self, akid):
        with self.lock:
            for s in self.served:
                if s["akid"] == akid:
                    return s["expiration"]
        return None


# --------------------------------------------------------------------------- IMDS

IMDS_TOKEN_PATH = "/latest/api/token"
IMDS_CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
IMDS_REGION_PATH = "/latest/meta-data/placement/region"


class FakeIMDS(_Base, _CredsMixin):
    """token_mode: "v2" (IMDSv2 enforced), an int status for the token PUT (403/404/405:
    the instance allows IMDSv1, tokenless GETs are served; 500 likewise, to catch a
    fallback that must not happen), or "hang" (the PUT gets no answer: what a container
    behind an extra hop sees with hop limit 1; tokenless GETs are served)."""

    def __init__(self, creds_fn=None, role="sma-test-role", region=None, token_mode="v2", lifetime=None,
                 down_after=None, down_mode="refuse", host="127.0.0.1", port=0):
        self.role = role
        self.region = region
        self.token_mode = token_mode
        self.tokens = {}  # token -> monotonic expiry
        self._init_creds(creds_fn, lifetime, down_after, down_mode)
        super().__init__(host, port)

    def invalidate_tokens(self):
        with self.lock:
            self.tokens.clear()

    def _token_state(self, h):
        tok = h.headers.get("x-aws-ec2-metadata-token")
        if tok is None:
            return "none"
        with self.lock:
            exp = self.tokens.get(tok)
        return "valid" if exp is not None and exp > time.monotonic() else "invalid"

    def _handle(self, h):
        self._read_body(h)
        if self._outage(h):
            return
        path = urlsplit(h.path).path
        if h.command == "PUT" and path == IMDS_TOKEN_PATH:
            rec = self._record(h, kind="token")
            mode = self.token_mode
            if mode == "hang":
                rec["status"] = "hang"
                self.stop.wait(HANG_MAX)
                h.close_connection = True
                return
            if isinstance(mode, int):
                rec["status"] = mode
                self._send(h, mode, "")
                return
            if "x-forwarded-for" in {k.lower() for k in h.headers.keys()}:
                rec["status"] = 403
                self._send(h, 403, "")
                return
            ttl = h.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
            try:
                ttl_n = int(ttl)
            except (TypeError, ValueError):
                ttl_n = -1
            if not 1 <= ttl_n <= 21600:
                rec["status"] = 400
                self._send(h, 400, "")
                return
            tok = "imds-" + secrets.token_urlsafe(24)
            with self.lock:
                self.tokens[tok] = time.monotonic() + ttl_n
            rec["status"] = 200
            rec["token"] = tok
            self._send(h, 200, tok, headers={"x-aws-ec2-metadata-token-ttl-seconds": str(ttl_n)})
            return
        if h.command != "GET":
            rec = self._record(h, kind="other")
            rec["status"] = 405
            self._send(h, 405, "")
            return
        state = self._token_state(h)
        rec = self._record(h, kind="get", token_state=state)
        if state == "invalid" or (state == "none" and self.token_mode == "v2"):
            rec["status"] = 401
            self._send(h, 401, "")
            return
        if path in (IMDS_CREDS_PATH, IMDS_CREDS_PATH.rstrip("/")):
            if self.role is None or self.creds_fn is None:
                rec["status"] = 404
                self._send(h, 404, "")
                return
            rec["status"] = 200
            self._send(h, 200, self.role)
            return
        if self.role is not None and self.creds_fn is not None and path == IMDS_CREDS_PATH + self.role:
            c, n = self._next_creds()
            doc = {
                "Code": "Success",
                "LastUpdated": iso8601(time.time()),
                "Type": "AWS-HMAC",
                "AccessKeyId": c["akid"],
                "SecretAccessKey": c["secret"],
                "Token": c["token"],
                "Expiration": iso8601(c["expiration"]),
            }
            rec["status"] = 200
            self._send(h, 200, json.dumps(doc, indent=2))
            self._after_served(n)
            return
        if path == IMDS_REGION_PATH and self.region is not None:
            rec["status"] = 200
            self._send(h, 200, self.region)
            return
        rec["status"] = 404
        self._send(h, 404, "")

    # ---- inspection helpers
    def token_puts(self):
        return [c for c in self.requests() if c.get("kind") == "token"]

    def gets(self):
        return [c for c in self.requests() if c.get("kind") == "get"]

    def creds_gets(self):
        return [c for c in self.gets() if urlsplit(c["path"]).path.startswith(IMDS_CREDS_PATH.rstrip("/"))]

    def region_gets(self):
        return [c for c in self.gets() if urlsplit(c["path"]).path == IMDS_REGION_PATH]


# --------------------------------------------------------------------------- container


class FakeContainer(_Base, _CredsMixin):
    """GET `path` -> credentials JSON. `expected_auth` (if not None) must equal the
    Authorization header, else 401.  `script(500, ...)` queues one-shot statuses."""

    def __init__(self, creds_fn=None, path="/creds", expected_auth=None, lifetime=None, down_after=None,
                 down_mode="refuse", host="127.0.0.1", port=0, role_arn="arn:aws:iam::123456789012:role/sma-test"):
        self.path = path
        self.expected_auth = expected_auth
        self.role_arn = role_arn
        self.queue = collections.deque()
        self.delay = 0.0  # seconds before each credentials answer
        self._init_creds(creds_fn, lifetime, down_after, down_mode)
        super().__init__(host, port)

    def script(self, *statuses):
        with self.lock:
            self.queue.extend(statuses)

    def _handle(self, h):
        self._read_body(h)
        if self._outage(h):
            return
        auth = h.headers.get("Authorization")
        rec = self._record(h, auth=auth)
        if h.command != "GET" or h.path != self.path:
            rec["status"] = 404
            self._send(h, 404, json.dumps({"message": "not found"}), "application/json")
            return
        with self.lock:
            scripted = self.queue.popleft() if self.queue else None
        if scripted is not None:
            rec["status"] = scripted
            self._send(h, scripted, json.dumps({"code": "Scripted", "message": f"scripted {scripted}"}),
                       "application/json")
            return
        if self.expected_auth is not None and auth != self.expected_auth:
            rec["status"] = 401
            self._send(h, 401, json.dumps({"code": "AccessDenied", "message": "bad authorization token"}),
                       "application/json")
            return
        if self.delay:
            self.stop.wait(self.delay)
        c, n = self._next_creds()
        doc = {
            "RoleArn": self.role_arn,
            "AccessKeyId": c["akid"],
            "SecretAccessKey": c["secret"],
            "Token": c["token"],
            "Expiration": iso8601(c["expiration"]),
        }
        rec["status"] = 200
        self._send(h, 200, json.dumps(doc), "application/json")
        self._after_served(n)

    def auths(self):
        return [c["auth"] for c in self.requests() if "auth" in c]


# --------------------------------------------------------------------------- STS (web identity)


def _sts_error(code, message, status=400):
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
    )
    return status, body


class FakeSTS(_Base, _CredsMixin):
    """AssumeRoleWithWebIdentity only.  `accept_tokens` (set) = web identity tokens
    accepted (None = any); `role_arn` must match.  Records params and whether the call
    was signed (it must not be)."""

    def __init__(self, creds_fn, role_arn, accept_tokens=None, lifetime=None, down_after=None,
                 down_mode="refuse", host="127.0.0.1", port=0):
        self.role_arn = role_arn
        self.accept_tokens = accept_tokens
        self._init_creds(creds_fn, lifetime, down_after, down_mode)
        super().__init__(host, port)

    def _handle(self, h):
        raw = self._read_body(h)
        if self._outage(h):
            return
        q = urlsplit(h.path).query
        params = {k: v[0] for k, v in parse_qs(q).items()}
        params.update({k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()})
        rec = self._record(h, params=params, signed="authorization" in {k.lower() for k in h.headers.keys()})
        action = params.get("Action")
        if action != "AssumeRoleWithWebIdentity":
            status, body = _sts_error("InvalidAction", f"fake STS does not do {action}")
        elif rec["signed"]:
            status, body = _sts_error("InvalidParameterValue", "AssumeRoleWithWebIdentity must not be signed")
        elif params.get("RoleArn") != self.role_arn:
            status, body = _sts_error("AccessDenied", f"unexpected role {params.get('RoleArn')}", 403)
        elif not params.get("RoleSessionName"):
            status, body = _sts_error("ValidationError", "RoleSessionName missing")
        elif self.accept_tokens is not None and params.get("WebIdentityToken") not in self.accept_tokens:
            status, body = _sts_error("InvalidIdentityToken", "token not accepted")
        else:
            c, n = self._next_creds()
            sess = escape(params["RoleSessionName"])
            body = (
                '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<AssumeRoleWithWebIdentityResult>"
                "<SubjectFromWebIdentityToken>system:serviceaccount:ns:sma</SubjectFromWebIdentityToken>"
                "<Audience>sts.amazonaws.com</Audience>"
                f"<AssumedRoleUser><Arn>{escape(self.role_arn.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/'))}/{sess}</Arn>"
                f"<AssumedRoleId>AROAEXAMPLE:{sess}</AssumedRoleId></AssumedRoleUser>"
                "<Credentials>"
                f"<SessionToken>{escape(c['token'])}</SessionToken>"
                f"<SecretAccessKey>{escape(c['secret'])}</SecretAccessKey>"
                f"<Expiration>{iso8601(c['expiration'])}</Expiration>"
                f"<AccessKeyId>{escape(c['akid'])}</AccessKeyId>"
                "</Credentials>"
                "<SourceIdentity></SourceIdentity>"
                "<Provider>oidc.example</Provider>"
                "</AssumeRoleWithWebIdentityResult>"
                "<ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>"
                "</AssumeRoleWithWebIdentityResponse>"
            )
            rec["status"] = 200
            self._send(h, 200, body, "text/xml")
            self._after_served(n)
            return
        rec["status"] = status
        self._send(h, status, body, "text/xml")

    def tokens_seen(self):
        return [c["params"].get("WebIdentityToken") for c in self.requests() if "params" in c]


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


# --------------------------------------------------------------------------- in-namespace runner


SIOCSIFFLAGS, SIOCGIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK = 0x8914, 0x8913, 0x8916, 0x891C
IFF_UP = 0x1


def _set_up(sock, ifname: bytes):
    import fcntl
    import struct

    ifr = struct.pack("16sh", ifname, 0)
    flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, ifr)[:18])[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", ifname, flags | IFF_UP))


def loopback_up():
    """Bring ``lo`` up: a fresh ``unshare -n`` namespace starts with it down.  Shared
    with netns_helper.py, the other in-namespace runner."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _set_up(s, b"lo")
    finally:
        s.close()


_alias = [0]


def _add_address(addr):
    """Add addr ("A.B.C.D/32" or "X::Y/128") to lo with ioctls (no iproute2 needed).
    Returns (ok, error text)."""
    import fcntl
    import struct

    ip = addr.split("/")[0]
    try:
        if ":" in ip:
            try:
                with open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "w") as f:
                    f.write("0")
            except OSError:
                pass
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                req = struct.pack("16sIi", socket.inet_pton(socket.AF_INET6, ip), 128, socket.if_nametoindex("lo"))
                fcntl.ioctl(s6, SIOCSIFADDR, req)
            finally:
                s6.close()
        else:
            _alias[0] += 1
            name = b"lo:%d" % _alias[0]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                def sockaddr(a):
                    return struct.pack("16sH2s4s8s", name, socket.AF_INET, b"\0\0", socket.inet_aton(a), b"\0" * 8)

                fcntl.ioctl(s, SIOCSIFADDR, sockaddr(ip))
                fcntl.ioctl(s, SIOCSIFNETMASK, sockaddr("255.255.255.255"))
                _set_up(s, name)
            finally:
                s.close()
        return True, ""
    except OSError as e:
        return False, repr(e)


def _cycle(items):
    lock = threading.Lock()
    state = {"i": 0}

    def fn():
        with lock:
            i = min(state["i"], len(items) - 1)
            state["i"] += 1
        return tuple(items[i])

    return fn


def run_agent(spec, env):
    """Run the agent inside the namespace, send it spec["requests"] and stop it.

    Shared by both in-namespace runners (this file's :func:`netns_main` and
    netns_helper.py), which start the agent, wait for its listening line, send
    the requests and stop it in exactly the same way.  Spec keys used: agent, cwd,
    config (TOML text or None = no --config), requests ([[path, headers]]),
    start_timeout.  Returns {rc (None while it was running), port, stdout, stderr,
    responses ([[status, body, seconds]])}."""
    argv = [spec["agent"]]
    if spec.get("config") is not None:
        cfg = os.path.join(spec["cwd"], "agent.toml")
        with open(cfg, "w") as f:
            f.write(spec["config"])
        argv += ["--config", cfg]
    proc = subprocess.Popen(argv, cwd=spec["cwd"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    so, se = [], []

    def pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink.append(line.decode("utf-8", "replace"))

    readers = [threading.Thread(target=pump, args=(proc.stdout, so), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, se), daemon=True)]
    for t in readers:
        t.start()
    port = None
    deadline = time.monotonic() + spec.get("start_timeout", 10)
    while time.monotonic() < deadline:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", "".join(so))
        if m:
            port = int(m.group(1))
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    responses = []
    if port is not None:
        for path, headers in spec.get("requests", []):
            t0 = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", path, headers=headers)
                r = c.getresponse()
                responses.append([r.status, r.read().decode("utf-8", "replace"), time.monotonic() - t0])
                c.close()
            except OSError as e:
                responses.append([None, repr(e), time.monotonic() - t0])
    rc = proc.poll()
    if rc is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for t in readers:
        t.join(5)
    return {"rc": rc, "port": port, "stdout": "".join(so), "stderr": "".join(se), "responses": responses}


def netns_main(spec):
    """Spec keys: agent, cwd, config (TOML text), env (dict; "{SM}" -> the in-namespace
    end of the bridge, "{S0}", "{S1}".. -> the servers' URLs), bridge (unix socket path
    or null), addresses (["169.254.170.2/32", ...] added to lo), servers ([{kind:
    container|imds|trap, host, port, creds: [[akid, secret, token], ...], lifetime,
    auth, path, token_mode, region}]), requests ([[path, headers]]), start_timeout.

    Prints JSON: rc, port, stdout, stderr, addresses ({addr: [ok, err]}),
    responses ([[status, body, seconds]]), servers ([{calls: [...], connections: n}])."""
    loopback_up()
    out = {"addresses": {}}
    for a in spec.get("addresses", []):
        out["addresses"][a] = list(_add_address(a))
    servers = []
    for s in spec.get("servers", []):
        kind = s["kind"]
        host, port = s.get("host", "127.0.0.1"), s.get("port", 0)
        if kind == "trap":
            servers.append(TrapServer(host, port))
        elif kind == "container":
            servers.append(FakeContainer(_cycle(s["creds"]), path=s.get("path", "/creds"),
                                         expected_auth=s.get("auth"), lifetime=s.get("lifetime"), host=host, port=port))
        elif kind == "imds":
            servers.append(FakeIMDS(_cycle(s["creds"]) if s.get("creds") else None, region=s.get("region"),
                                    token_mode=s.get("token_mode", "v2"), lifetime=s.get("lifetime"),
                                    host=host, port=port))
        else:
            raise ValueError(kind)
    fwd = None
    subst = {}
    if spec.get("bridge"):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        subst["{SM}"] = f"http://127.0.0.1:{ls.getsockname()[1]}"
        fwd = _Forwarder(ls, _unix_connector(spec["bridge"]))
    for i, s in enumerate(servers):
        if isinstance(s, TrapServer):
            subst[f"{{S{i}}}"] = f"127.0.0.1:{s.port}"
        else:
            subst[f"{{S{i}}}"] = s.url

    def sub(v):
        for k, r in subst.items():
            v = v.replace(k, r)
        return v

    env = {k: sub(v) for k, v in spec["env"].items()}
    ran = run_agent(spec, env)
    srv_out = []
    for s in servers:
        if isinstance(s, TrapServer):
            srv_out.append({"connections": s.connections, "calls": []})
        else:
            srv_out.append({"connections": None, "calls": s.requests()})
        s.close()
    if fwd:
        fwd.close()
    out.update(ran)
    out["servers"] = srv_out
    print(json.dumps(out))


if __name__ == "__main__":
    netns_main(json.loads(sys.argv[1]))
