"""Fixtures for the secrets-manager-agent integration tests.

Everything here talks to loopback addresses only.  Every subprocess started by a
fixture is terminated (then killed) in that fixture's teardown, and every wait is
bounded.

Under pytest-xdist every worker has its own session fixtures (a moto each); the
`serial` marker is explained at pytest_configure.

Fixtures
--------
moto            session: a signature-checking moto server plus an admin key and a
                "denied" key (GetSecretValue denied by IAM policy).
counting_proxy  function: a byte-for-byte reverse proxy in front of moto that counts
                requests per X-Amz-Target.
fake_upstream   function: a scriptable fake Secrets Manager (no signature checks).
agent           function: factory that starts the agent binary with a TOML config.
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import os
import re
import secrets as pysecrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

# The body reader (Content-Length or chunked) and the proxies' reply relay are the
# ones the credential fakes and relays use.
from fake_http import read_body
from relays import relay_reply

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0  # seconds to wait for "listening on"
HTTP_TIMEOUT = 30.0  # default client timeout for one request to the agent
# The prefix of every series the agent serves on /metrics.
METRICS_PREFIX = "secrets_manager_agent_"
LISTEN_RE = re.compile(r"listening on http://(?:127\.0\.0\.1|0\.0\.0\.0|\[[0-9a-f:]+\]):(\d+)")


# --------------------------------------------------------------------------- markers


def pytest_configure(config):
    # `make integration-test` runs the suite on several pytest-xdist workers
    # (`-n`, `--dist loadgroup`), then the tests marked `serial` alone: those
    # that measure how long the agent takes to answer, or count its threads
    # under a flood of sockets, and would measure the other workers' load.
    config.addinivalue_line(
        "markers", "serial: timing-sensitive; `make integration-test` runs it after the parallel run, alone")
    config.addinivalue_line(
        "markers", "xdist_group(name): tests of one group run on the same xdist worker, one after the other")


# --------------------------------------------------------------------------- helpers

# The static musl binary (`make static`); STATIC_AGENT_BIN points the tests that
# need it at another static build (e.g. `make static-ring` under target/ring).
STATIC_BIN = Path(
    os.environ.get("STATIC_AGENT_BIN")
    or REPO_ROOT / "target" / "x86_64-unknown-linux-musl" / "release" / "secrets-manager-agent"
)


def static_binary() -> Path:
    """STATIC_BIN; skips with SKIP_STATIC_TESTS=1, fails when it is missing."""
    if os.environ.get("SKIP_STATIC_TESTS") == "1":
        pytest.skip("SKIP_STATIC_TESTS=1")
    if not STATIC_BIN.is_file():
        pytest.fail(f"static binary {STATIC_BIN} not found: run `make static` first (or set SKIP_STATIC_TESTS=1)")
    return STATIC_BIN


def agent_bin() -> Path:
    p = os.environ.get("AGENT_BIN") or "target/debug/secrets-manager-agent"
    path = Path(p)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def free_port() -> int:
    """A loopback port that was free a moment ago (nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_until(pred, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children(pid):
    """The pids of a process's children (zombies included), [] once it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def http_request(port, path, headers=None, method="GET", body=None, timeout=HTTP_TIMEOUT):
    """One request on a fresh connection. Returns (status, headers(lower-case dict), body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, hdrs, data
    finally:
        conn.close()


def unique(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- moto


class Moto:
    def __init__(self, proc, port, admin, denied):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.admin = admin  # (akid, secret)
        self.denied = denied  # (akid, secret): GetSecretValue denied

    def client(self, service="secretsmanager", creds=None):
        import boto3

        akid, secret = creds or self.admin
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=akid,
            aws_secret_access_key=secret,
        )

    def user(self, prefix: str, *statements) -> tuple:
        """A new IAM user with these policy statements; returns its (akid, secret)."""
        iam = self.client("iam")
        name = unique(prefix)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="policy", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": list(statements)}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def raw_status(self, target: str, body: dict, creds=None):
        """A correctly signed direct call to moto; returns (status, headers, body bytes)."""
        import botocore.auth
        import botocore.awsrequest
        import botocore.credentials

        akid, secret = creds or self.admin
        req = botocore.awsrequest.AWSRequest(
            method="POST",
            url=self.url + "/",
            data=json.dumps(body),
            headers={
                "X-Amz-Target": "secretsmanager." + target,
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(akid, secret), "secretsmanager", "us-east-1"
        ).add_auth(req)
        return http_request(self.port, "/", headers=dict(req.headers), method="POST", body=req.body.encode() if isinstance(req.body, str) else req.body)


# Number of unauthenticated calls made while setting moto up (IAM create_user,
# put_user_policy, create_access_key).  After that moto checks every signature.
MOTO_NO_AUTH_CALLS = 3


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    import boto3

    moto_bin = Path(sys.executable).parent / "moto_server"
    if not moto_bin.exists():
        pytest.skip(f"{moto_bin} not found (install tests/requirements.txt into the venv)")
    port = free_port()
    logdir = tmp_path_factory.mktemp("moto")
    env = dict(os.environ)
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(MOTO_NO_AUTH_CALLS)
    for k in list(env):
        if k.startswith("AWS_") or k.endswith("_PROXY") or k.endswith("_proxy"):
            del env[k]
    out = open(logdir / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(moto_bin), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        kw = dict(endpoint_url=url, region_name="us-east-1")
        # --- the 3 unauthenticated calls
        iam = boto3.client("iam", aws_access_key_id="AKIABOOTSTRAP0000000", aws_secret_access_key="bootstrap", **kw)
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="everything",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        admin = (key["AccessKeyId"], key["SecretAccessKey"])
        # --- from here on every call is signed with the admin key
        iam = boto3.client("iam", aws_access_key_id=admin[0], aws_secret_access_key=admin[1], **kw)
        iam.create_user(UserName="denied")
        # moto authorizes Secrets Manager actions against resource "*" (it does not
        # resolve the secret ARN), so the deny has to name "*" to take effect.
        iam.put_user_policy(
            UserName="denied",
            PolicyName="no-get-secret-value",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
                        {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
                    ],
                }
            ),
        )
        dkey = iam.create_access_key(UserName="denied")["AccessKey"]
        denied = (dkey["AccessKeyId"], dkey["SecretAccessKey"])
        # sanity: unsigned/badly signed calls are now rejected
        bad = boto3.client("secretsmanager", aws_access_key_id=admin[0], aws_secret_access_key="wrong", **kw)
        try:
            bad.list_secrets()
        except Exception:
            pass
        else:  # pragma: no cover
            raise RuntimeError("moto is not checking signatures")
        yield Moto(proc, port, admin, denied)
    finally:
        _stop(proc)
        out.close()


def _stop(proc: subprocess.Popen, timeout: float = 5.0):
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def spawn_agent(argv, cwd, env) -> subprocess.Popen:
    """Start an agent process the way every runner here does (no stdin, piped
    output, its own session); shared by AgentFactory and the chroot runner."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


# The least a bare agent process needs: no validation call, no log file.
MINIMAL_CONFIG = 'http_port = 0\nlog_to_file = false\nvalidate_credentials = false\nregion = "us-east-1"\n'


def spawn_wrapped_agent(wrapper, workdir: Path, upstream_url) -> subprocess.Popen:
    """The agent under a launcher (setpriv, unshare, ...) with MINIMAL_CONFIG in
    `workdir` (readable by any user) and dummy credentials, for tests that need
    the bare process rather than an AgentFactory agent."""
    cfg = workdir / "agent.toml"
    cfg.write_text(MINIMAL_CONFIG)
    cfg.chmod(0o644)
    env = agent_env(upstream_url, "tok", DUMMY_CREDS, home=workdir)
    return spawn_agent([*wrapper, str(agent_bin()), "--config", str(cfg)], workdir, env)


def await_listening(proc, out, err, what="agent", hint="") -> int:
    """Wait up to START_TIMEOUT for the agent's `listening on` line and return its
    port; if it exits or never listens, stop it and fail with its output.  `what`
    and `hint` word the failure (the chroot runner explains exit code 127)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        m = LISTEN_RE.search(out.text())
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _stop(proc)
    out.join(2)
    err.join(2)
    raise AssertionError(
        f"{what} did not start (rc={proc.returncode}{hint})\nstdout: {out.text()!r}\nstderr: {err.text()[-4000:]!r}"
    )


def communicate_or_stop(proc, timeout):
    """(rc, stdout, stderr) of an agent expected to exit by itself within `timeout`;
    one still running then is stopped and reported with rc None."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        _stop(proc)
        out, err = proc.communicate(timeout=5)
        return None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def stop_all(procs):
    """Teardown for the agent runners: stop every process and close its pipes."""
    for p in procs:
        _stop(p)
        for s in (p.stdout, p.stderr):
            try:
                if s:
                    s.close()
            except Exception:
                pass


def sm_operation(headers, raw: bytes):
    """(operation, request document) of a Secrets Manager JSON request: the last part
    of X-Amz-Target and the parsed body, {} when it does not parse.  Shared by the
    fake upstreams (FakeUpstream here, test_scratch.py's TLS one)."""
    target = (headers.get("X-Amz-Target") or "").split(".")[-1]
    try:
        req = json.loads(raw or b"{}")
    except ValueError:
        req = {}
    return target, req


# --------------------------------------------------------------------------- proxy


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def _handle(self):
        srv = self.server
        body = read_body(self)
        target = self.headers.get("X-Amz-Target", "")
        with srv.lock:
            srv.counts[target] += 1
            srv.requests.append((self.command, self.path, list(self.headers.items()), body))
        conn = http.client.HTTPConnection("127.0.0.1", srv.upstream_port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            chunked = False
            for k, v in self.headers.items():
                if k.lower() == "transfer-encoding":
                    chunked = True
                    continue
                conn.putheader(k, v)
            if chunked:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            status, rheaders = resp.status, resp.getheaders()
        finally:
            conn.close()
        relay_reply(self, status, rheaders, data)

    do_POST = do_GET = do_PUT = _handle


class CountingProxy:
    def __init__(self, upstream_port: int):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self.server.daemon_threads = True
        self.server.upstream_port = upstream_port
        self.server.lock = threading.Lock()
        self.server.counts = collections.Counter()
        self.server.requests = []
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def count(self, op: str, service: str = "secretsmanager") -> int:
        """Calls of `op` seen so far; `service` is the X-Amz-Target prefix
        (`AmazonSSM` for Parameter Store)."""
        with self.server.lock:
            return self.server.counts[service + "." + op]

    @property
    def requests(self):
        with self.server.lock:
            return list(self.server.requests)

    def reset(self):
        with self.server.lock:
            self.server.counts.clear()
            self.server.requests.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_proxy(moto):
    p = CountingProxy(moto.port)
    yield p
    p.close()


# --------------------------------------------------------------------------- fake upstream


class Action:
    """What the fake upstream does with one request."""

    def __init__(self, kind, status=200, body=None, headers=None, delay=0.0, hang=0.0):
        self.kind = kind  # "respond" | "default" | "hang" | "close" | "garbage"
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay = delay
        self.hang = hang


def respond(status, body, headers=None, delay=0.0):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers = {"Content-Type": "application/x-amz-json-1.1", **(headers or {})}
    return Action("respond", status=status, body=body, headers=headers, delay=delay)


def error(status, code, message="boom", delay=0.0):
    return respond(status, {"__type": code, "message": message}, delay=delay)


def ok(delay=0.0):
    """The default (valid) answer, optionally after a delay."""
    return Action("default", delay=delay)


def hang(seconds=20.0):
    """Read the request, answer nothing for `seconds` (or until released), then close."""
    return Action("hang", hang=seconds)


def close_abruptly():
    return Action("close")


def garbage():
    return Action("garbage")


class _FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        fake: FakeUpstream = self.server.fake
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        target, req = sm_operation(self.headers, raw)
        secret_id = req.get("SecretId")
        action = fake._record_and_pick(target, secret_id, req, self.headers, raw)
        if action.delay:
            fake.stop.wait(action.delay)
        if action.kind == "hang":
            fake.stop.wait(action.hang)  # ends early on unblock()/teardown
            self.close_connection = True
            return
        if action.kind == "close":
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            self.close_connection = True
            return
        if action.kind == "garbage":
            self._send(200, b"this is {not json at all", {"Content-Type": "application/x-amz-json-1.1"})
            return
        if action.kind == "default":
            status, body = fake.default_response(target, req)
            self._send(status, json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"})
            return
        body = action.body.encode() if isinstance(action.body, str) else (action.body or b"")
        self._send(action.status, body, action.headers)

    def _send(self, status, body: bytes, headers):
        self.send_response_only(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeUpstream:
    """Scriptable fake Secrets Manager.

    Secrets are auto-created on first use with value ``value-of-<id>``; use
    :meth:`set_secret` to choose / change a value (a change makes a new version and
    moves AWSCURRENT, the old version becomes AWSPREVIOUS).

    Script per target (``GetSecretValue``/``DescribeSecret``), optionally per secret id:
    ``script(target, *actions, secret=None)`` queues one-shot actions;
    ``set_default(target, action, secret=None)`` sets the action used once the queue is
    empty (``None`` = normal answer).
    """

    CREATED = 1523477145.713

    def __init__(self):
        self.lock = threading.Lock()
        self.stop = threading.Event()  # set by unblock()/teardown: ends every hang/delay
        self.queues = collections.defaultdict(collections.deque)
        self.defaults = {}
        self.calls = []  # (target, secret_id, request json, headers, raw)
        self.store = {}  # name -> list of (version_id, value, stages)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    # ---- scripting
    def script(self, target, *actions, secret=None):
        with self.lock:
            self.queues[(target, secret)].extend(actions)

    def set_default(self, target, action, secret=None):
        with self.lock:
            if action is None:
                self.defaults.pop((target, secret), None)
            else:
                self.defaults[(target, secret)] = action

    def _record_and_pick(self, target, secret_id, req, headers, raw):
        with self.lock:
            self.calls.append((target, secret_id, req, headers, raw))
            for key in ((target, secret_id), (target, None)):
                q = self.queues.get(key)
                if q:
                    return q.popleft()
            for key in ((target, secret_id), (target, None)):
                if key in self.defaults:
                    return self.defaults[key]
        return Action("default")

    # ---- secrets
    def _versions(self, name):
        if name not in self.store:
            self.store[name] = [[str(uuid.uuid4()), f"value-of-{name}", ["AWSCURRENT"]]]
        return self.store[name]

    def set_secret(self, name, value):
        with self.lock:
            versions = self.store.setdefault(name, [])
            for v in versions:
                v[2] = [s for s in v[2] if s not in ("AWSCURRENT", "AWSPREVIOUS")]
            if versions:
                versions[-1][2].append("AWSPREVIOUS")
            versions.append([str(uuid.uuid4()), value, ["AWSCURRENT"]])
            return versions[-1][0]

    def current_version(self, name):
        with self.lock:
            for vid, _, stages in self._versions(name):
                if "AWSCURRENT" in stages:
                    return vid

    def default_response(self, target, req):
        if target == "GetParameter":  # Parameter Store (AmazonSSM.GetParameter)
            name = req.get("Name") or ""
            return 200, {"Parameter": {
                "ARN": f"arn:aws:ssm:us-east-1:123456789012:parameter{name}", "DataType": "text",
                "LastModifiedDate": self.CREATED, "Name": name, "Type": "String",
                "Value": f"param-value-of-{name}", "Version": 1}}
        name = req.get("SecretId") or ""
        with self.lock:
            versions = self._versions(name)
            if target == "DescribeSecret":
                return 200, {
                    "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf",
                    "Name": name,
                    "LastChangedDate": self.CREATED,
                    "VersionIdsToStages": {vid: list(st) for vid, _, st in versions if st},
                    "CreatedDate": self.CREATED,
                }
            if target != "GetSecretValue":
                return 400, {"__type": "UnknownOperationException", "message": target}
            vid_wanted = req.get("VersionId")
            stage_wanted = req.get("VersionStage") or ("AWSCURRENT" if not vid_wanted else None)
            for vid, value, stages in versions:
                if (vid_wanted is None or vid == vid_wanted) and (stage_wanted is None or stage_wanted in stages):
                    return 200, {
                        "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf",
                        "Name": name,
                        "VersionId": vid,
                        "SecretString": value,
                        "VersionStages": list(stages),
                        "CreatedDate": self.CREATED,
                    }
            return 400, {
                "__type": "ResourceNotFoundException",
                "message": "Secrets Manager can't find the specified secret value",
            }

    # ---- inspection
    def count(self, target, secret=None) -> int:
        with self.lock:
            return sum(1 for t, s, *_ in self.calls if t == target and (secret is None or s == secret))

    def requests(self, target=None):
        with self.lock:
            return [c for c in self.calls if target is None or c[0] == target]

    def wait_calls(self, target, n, timeout=10.0, secret=None):
        return wait_until(lambda: self.count(target, secret) >= n, timeout, what=f"{n} {target} call(s)")

    def unblock(self):
        """End every current and future hang/delay at once."""
        self.stop.set()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_upstream():
    f = FakeUpstream()
    yield f
    f.close()


# --------------------------------------------------------------------------- agent


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class _Reader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines = []
        self.lock = threading.Lock()
        self.start()

    def run(self):
        try:
            for line in iter(self.stream.readline, b""):
                with self.lock:
                    self.lines.append(line.decode("utf-8", "replace"))
        except (ValueError, OSError):
            # `stop_all` closed the pipe under the read at teardown: the
            # lines read so far are all there will be.
            return
        self.stream.close()

    def text(self, ended=False):
        """What was read so far; all of it once the process has `ended`
        (the thread reads to end of file first)."""
        if ended:
            self.join(timeout=5)
        with self.lock:
            return "".join(self.lines)


class Agent:
    def __init__(self, proc, port, token, workdir, stdout, stderr, config_path):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.token = token
        self.workdir = workdir
        self._stdout = stdout
        self._stderr = stderr
        self.config_path = config_path

    @property
    def stdout(self):
        return self._stdout.text(ended=self.proc.poll() is not None)

    @property
    def stderr(self):
        return self._stderr.text(ended=self.proc.poll() is not None)

    def get(self, path, headers=None, token=True, method="GET", timeout=HTTP_TIMEOUT, body=None):
        h = {}
        if token:
            h["X-Aws-Parameters-Secrets-Token"] = self.token
        h.update(headers or {})
        return http_request(self.port, path, headers=h, method=method, timeout=timeout, body=body)

    def secret(self, secret_id, timeout=HTTP_TIMEOUT, headers=None, token=True, **params):
        q = "secretId=" + quote(secret_id, safe="")
        for k, v in params.items():
            q += f"&{k}={quote(str(v), safe='')}"
        return self.get("/secretsmanager/get?" + q, timeout=timeout, headers=headers, token=token)

    def secret_json(self, secret_id, **params):
        status, headers, body = self.secret(secret_id, **params)
        assert status == 200, (status, body)
        return json.loads(body)

    def advance(self, seconds: float) -> float:
        """Moves the agent's clock (TTLs, refresh windows, credential expiries)
        `seconds` forward at once; returns how far ahead of real time it is.
        Only the debug binary has this clock (SMA_TEST_CLOCK=true, set by agent_env)."""
        status, _, body = self.get(f"/test/clock?advance={seconds}", method="POST")
        assert status == 200, (status, body)
        return float(body)

    def metric(self, name: str, **labels) -> float:
        """The sum of `/metrics` samples `secrets_manager_agent_<name>` whose
        labels include `labels` (0 when there is none): the agent's own count
        of what it did, the event a test waits for instead of sleeping."""
        from prometheus_client.parser import text_string_to_metric_families

        status, _, body = self.get("/metrics")
        assert status == 200, (status, body)
        want = {k: str(v) for k, v in labels.items()}
        return sum(s.value
                   for family in text_string_to_metric_families(body.decode())
                   for s in family.samples
                   if s.name == METRICS_PREFIX + name and want.items() <= s.labels.items())

    def wait_metric(self, name: str, at_least: float, timeout: float = 10.0, **labels) -> float:
        """Waits (bounded) until metric `name` reaches `at_least`; returns it."""
        wait_until(lambda: self.metric(name, **labels) >= at_least, timeout,
                   what=f"{name}{labels or ''} >= {at_least}")
        return self.metric(name, **labels)

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads line")

    def threads_named(self, name: str) -> int:
        """Threads whose name (comm) is `name`, such as "worker" or "fetch"."""
        count = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                count += (task / "comm").read_text().strip() == name
            except OSError:
                pass  # the thread ended meanwhile
        return count

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout=5.0):
        _stop(self.proc, timeout)
        self._stdout.join(timeout)
        self._stderr.join(timeout)


BASE_CONFIG = {
    "http_port": 0,
    "log_to_file": False,
    "validate_credentials": False,
    "region": "us-east-1",
}


def overlay(base: dict, changes) -> dict:
    """`base` updated in place with `changes`, a value of None removing the key: how
    the tests override (or drop) environment variables and config keys."""
    for k, v in (changes or {}).items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def agent_env(upstream_url=None, token=None, creds=None, extra=None, home=None):
    """A clean environment for the agent: nothing inherited but PATH/LANG."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if home:
        env["HOME"] = str(home)
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(Path(home) / "no-such-credentials")
        env["AWS_CONFIG_FILE"] = str(Path(home) / "no-such-config")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    # The debug binary's test clock (POST /test/clock?advance=SECONDS, Agent.advance).
    env["SMA_TEST_CLOCK"] = "true"
    if token is not None:
        env["AWS_TOKEN"] = token
    if creds is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = creds
    if upstream_url is not None:
        env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = upstream_url
    return overlay(env, extra)


DUMMY_CREDS = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


class AgentFactory:
    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.started = []

    def write_config(self, workdir, config=None, raw_config=None, base=True):
        if raw_config is not None:
            text = raw_config
        else:
            cfg = overlay(dict(BASE_CONFIG) if base else {}, config)
            text = "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items())
        path = workdir / "agent.toml"
        path.write_text(text)
        return path

    def popen(self, upstream=None, config=None, env=None, raw_config=None, creds=None, token=None, args=None, base=True):
        workdir = self.tmp_path_factory.mktemp("agent")
        token = token if token is not None else "tok-" + pysecrets.token_hex(16)
        cfg_path = self.write_config(workdir, config, raw_config, base)
        e = agent_env(upstream, token, creds or DUMMY_CREDS, env, home=workdir)
        bin_ = agent_bin()
        if not bin_.exists():
            pytest.fail(f"agent binary {bin_} not found (cargo build, or set AGENT_BIN)")
        argv = [str(bin_)] + (args if args is not None else ["--config", str(cfg_path)])
        proc = spawn_agent(argv, workdir, e)
        self.started.append(proc)
        return proc, token, workdir, cfg_path

    def __call__(self, upstream=None, config=None, env=None, raw_config=None, creds=None, token=None, args=None, base=True):
        """Start the agent and wait for its `listening on` line. Returns an Agent."""
        proc, token, workdir, cfg_path = self.popen(upstream, config, env, raw_config, creds, token, args, base)
        out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        port = await_listening(proc, out, err)
        return Agent(proc, port, token, workdir, out, err, cfg_path)

    def run_expect_exit(self, upstream=None, config=None, env=None, raw_config=None, creds=None, token=None, args=None, base=True, timeout=START_TIMEOUT):
        """Start the agent expecting it to exit by itself. Returns (rc, stdout, stderr).

        If it is still running after `timeout` (e.g. it started although it should
        not have), it is killed and rc is None."""
        proc, *_ = self.popen(upstream, config, env, raw_config, creds, token, args, base)
        return communicate_or_stop(proc, timeout)

    def cleanup(self):
        stop_all(self.started)


@pytest.fixture
def agent(tmp_path_factory):
    f = AgentFactory(tmp_path_factory)
    yield f
    f.cleanup()


# --------------------------------------------------------------------------- misc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raise_nofile(n: int) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
