"""Scratch-container proof for the static musl binary, and the HTTPS proxy path.

The static binary (``make static``) runs in a chroot whose root holds nothing but
the binary, a config file and (when a test wants it) a test CA: no /etc/passwd, no
/etc/ssl, no /lib, no /proc, no home directory.  Its upstream is a fake Secrets
Manager served over TLS on 127.0.0.1 with a certificate issued by a CA made here,
handed to the agent through ``AWS_CA_BUNDLE``.  Without the bundle the handshake
must fail with an unknown-issuer error, which shows that the roots the agent uses
by default are compiled in (the chroot has no CA files to find).

The proxy tests put a small CONNECT proxy written here in front of that TLS
upstream.  ureq 3.5 (ureq-3.5.2/src/proxy.rs, ``NoProxy``) has no implicit
bypass for loopback targets: only ``NO_PROXY``/``no_proxy`` entries (exact host,
``*.suffix``, ``.suffix``, ``*``) bypass the proxy, so the endpoint can stay
``https://127.0.0.1:PORT`` and the proxy sees ``CONNECT 127.0.0.1:PORT``.

The chroot tests need root (CI runs as root) and skip otherwise.  A missing static
binary FAILS them (run ``make static``) unless ``SKIP_STATIC_TESTS=1``.
``STATIC_AGENT_BIN`` points them at another static build (e.g. ``make static-ring``).

Everything listens on and connects to 127.0.0.1 only; every subprocess is bounded
and stopped in teardown; ``validate_credentials = false`` and
``AWS_EC2_METADATA_DISABLED=true`` always.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets as pysecrets
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import (
    DUMMY_CREDS,
    START_TIMEOUT,
    Agent,
    _Reader,
    await_listening,
    communicate_or_stop,
    overlay,
    sm_operation,
    spawn_agent,
    static_binary,
    stop_all,
    unique,
)
from relays import Acceptor, pump_socket

IN_ROOT_BIN = "/secrets-manager-agent"
NOBODY = "65534:65534"
CREATED = 1523477145.713
REQ_TIMEOUT = 30.0

CHROOT_CONFIG = (
    "http_port = 0\n"
    "log_to_file = false\n"
    "validate_credentials = false\n"
    'region = "us-east-1"\n'
)
# log_to_file left at its default (true): logs/ under the working directory.
CHROOT_CONFIG_DEFAULT_LOGGING = 'http_port = 0\nvalidate_credentials = false\nregion = "us-east-1"\n'


def _shut_down(socks):
    """Shut every socket down both ways, so that the connection threads of a fake
    being closed (TLS upstream, CONNECT proxy) end now rather than at their timeouts."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------- PKI


def _make_pki(directory: Path):
    """A test CA and a server certificate for 127.0.0.1 / localhost (EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secrets-manager-agent test CA " + pysecrets.token_hex(4))])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(pem))
    cert_pem = directory / "server.pem"
    cert_pem.write_bytes(cert.public_bytes(pem))
    key_pem = directory / "server.key"
    key_pem.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, cert_pem, key_pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, cert, key = _make_pki(d)
    return {"ca": ca, "cert": cert, "key": key}


# --------------------------------------------------------------------------- TLS fake Secrets Manager


class _TLSHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection is closed after this long

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._send(404, b"")

    def do_POST(self):
        srv: TLSFakeUpstream = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            self._send(413, b"")
            self.close_connection = True
            return
        raw = self.rfile.read(n) if n else b""
        target, req = sm_operation(self.headers, raw)
        name = req.get("SecretId") or ""
        srv._record(target, name, {k.lower(): v for k, v in self.headers.items()})
        arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"
        if target == "GetSecretValue":
            body = {
                "ARN": arn,
                "Name": name,
                "VersionId": "v1",
                "SecretString": "value-of-" + name,
                "VersionStages": ["AWSCURRENT"],
                "CreatedDate": CREATED,
            }
            status = 200
        elif target == "DescribeSecret":
            body = {
                "ARN": arn,
                "Name": name,
                "LastChangedDate": CREATED,
                "VersionIdsToStages": {"v1": ["AWSCURRENT"]},
                "CreatedDate": CREATED,
            }
            status = 200
        else:
            body = {"__type": "UnknownOperationException", "message": target}
            status = 400
        self._send(status, json.dumps(body).encode(), "application/x-amz-json-1.1")

    def _send(self, status, body, ctype="text/plain"):
        self.send_response_only(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def get_request(self):
        # Accept only; the handshake happens in the connection's own thread, so a
        # client that stalls mid-handshake cannot block the accept loop.
        return self.socket.accept()

    def finish_request(self, request, client_address):
        owner: TLSFakeUpstream = self.owner
        request.settimeout(10)
        try:
            tls = owner.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            owner._handshake_failed(e)
            return
        owner._track(tls, True)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass
        finally:
            owner._track(tls, False)
            try:
                tls.close()
            except OSError:
                pass


class TLSFakeUpstream:
    """Threaded HTTPS fake Secrets Manager on 127.0.0.1 answering GetSecretValue
    (value ``value-of-<id>``, version ``v1``) and DescribeSecret for any SecretId."""

    def __init__(self, cert: Path, key: Path):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(str(cert), str(key))
        self.lock = threading.Lock()
        self.calls = []  # (target, secret id, headers)
        self.handshake_errors = []  # str(exception) per failed handshake
        self.handshakes = 0
        self.open = set()
        self.server = _TLSServer(("127.0.0.1", 0), _TLSHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _record(self, target, name, headers):
        with self.lock:
            self.calls.append((target, name, headers))

    def _handshake_failed(self, e):
        with self.lock:
            self.handshake_errors.append(str(e))

    def _track(self, sock, opened):
        with self.lock:
            if opened:
                self.handshakes += 1
                self.open.add(sock)
            else:
                self.open.discard(sock)

    def count(self, target="GetSecretValue", name=None):
        with self.lock:
            return sum(1 for t, n, _ in self.calls if t == target and (name is None or n == name))

    def errors(self):
        with self.lock:
            return list(self.handshake_errors)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            socks = list(self.open)
        _shut_down(socks)


@pytest.fixture
def tls_upstream(pki):
    u = TLSFakeUpstream(pki["cert"], pki["key"])
    yield u
    u.close()


# --------------------------------------------------------------------------- CONNECT proxy


class ConnectProxy(Acceptor):
    """A small HTTP CONNECT proxy on 127.0.0.1 that records every request line and
    tunnels to loopback targets only.  Bounded: at most `max_conns` connections at
    once, 8 KiB request heads, 10 s to send the head, tunnels idle for 30 s close.
    With ``refuse=True`` every CONNECT is answered 403."""

    def __init__(self, refuse=False, max_conns=32):
        self.refuse = refuse
        self.lock = threading.Lock()
        self.connections = 0  # TCP connections accepted
        self.lines = []  # request lines, e.g. "CONNECT 127.0.0.1:1234 HTTP/1.1"
        self.slots = threading.BoundedSemaphore(max_conns)
        self.socks = set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(sock, poll=0.05)

    # ---- inspection
    def connect_targets(self):
        with self.lock:
            return [ln.split()[1] for ln in self.lines if ln.split()[:1] == ["CONNECT"] and len(ln.split()) >= 2]

    def request_lines(self):
        with self.lock:
            return list(self.lines)

    def connection_count(self):
        with self.lock:
            return self.connections

    # ---- plumbing
    def _accepted(self, c):
        with self.lock:
            self.connections += 1
        if not self.slots.acquire(blocking=False):
            c.close()
            return
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _keep(self, s, on):
        with self.lock:
            (self.socks.add if on else self.socks.discard)(s)

    def _serve(self, c):
        up = None
        self._keep(c, True)
        try:
            c.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                if len(head) > 8192:
                    c.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                data = c.recv(4096)
                if not data:
                    return
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            with self.lock:
                self.lines.append(line)
            parts = line.split()
            if len(parts) != 3 or parts[0] != "CONNECT":
                c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            host, _, port = parts[1].rpartition(":")
            if self.refuse or host not in ("127.0.0.1", "localhost") or not port.isdigit():
                c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            try:
                up = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            except OSError:
                c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            self._keep(up, True)
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                up.sendall(rest)
            c.settimeout(30)
            up.settimeout(30)
            t = threading.Thread(target=pump_socket, args=(up, c), daemon=True)
            t.start()
            pump_socket(c, up)
            t.join(35)
        except OSError:
            pass
        finally:
            for s in (c, up):
                if s is not None:
                    self._keep(s, False)
                    try:
                        s.close()
                    except OSError:
                        pass
            self.slots.release()

    def close(self):
        super().close()
        with self.lock:
            socks = list(self.socks)
        _shut_down(socks)


@pytest.fixture
def connect_proxy():
    made = []

    def make(**kw):
        p = ConnectProxy(**kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# --------------------------------------------------------------------------- chroot runner


def need_root():
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    if shutil.which("chroot") is None:
        pytest.skip("no chroot(8) on this machine")


def chroot_env(upstream_url, token, extra=None):
    """The whole environment the chrooted agent gets: no PATH, no HOME, no LANG."""
    env = {
        "AWS_TOKEN": token,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDS[0],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDS[1],
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": upstream_url,
    }
    return overlay(env, extra)


def tree(root: Path):
    """Every path under root (relative), with its type, size and mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, stat.S_IMODE(st.st_mode))
    return out


class Scratch:
    """Builds chroot roots and runs the static binary in them."""

    def __init__(self, tmp_path_factory, pki):
        self.tmp_path_factory = tmp_path_factory
        self.pki = pki
        self.procs = []
        self.readonly = []

    def root(self, ca=True, config=CHROOT_CONFIG, extra_files=None):
        """A fresh root holding only the binary (0755), agent.toml and, if `ca`, ca.pem."""
        src = static_binary()
        root = self.tmp_path_factory.mktemp("scratch")
        root.chmod(0o755)
        shutil.copyfile(src, root / IN_ROOT_BIN.lstrip("/"))
        (root / IN_ROOT_BIN.lstrip("/")).chmod(0o755)
        (root / "agent.toml").write_text(config)
        (root / "agent.toml").chmod(0o644)
        if ca:
            shutil.copyfile(self.pki["ca"], root / "ca.pem")
            (root / "ca.pem").chmod(0o644)
        for name, data in (extra_files or {}).items():
            (root / name).write_bytes(data)
            (root / name).chmod(0o644)
        return root

    def make_readonly(self, root: Path):
        root.chmod(0o555)
        self.readonly.append(root)

    def popen(self, root, env, userspec=None):
        argv = [shutil.which("chroot")]
        if userspec:
            argv.append(f"--userspec={userspec}")
        argv += [str(root), IN_ROOT_BIN, "--config", "/agent.toml"]
        proc = spawn_agent(argv, "/", env)
        self.procs.append(proc)
        return proc

    def start(self, root, env, userspec=None) -> Agent:
        """Start the chrooted agent and wait for its listening line."""
        proc = self.popen(root, env, userspec)
        out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        port = await_listening(proc, out, err, "chrooted static agent",
                               "; 127 or ENOENT would mean the binary is not static")
        return Agent(proc, port, env["AWS_TOKEN"], root, out, err, root / "agent.toml")

    def run_expect_exit(self, root, env, userspec=None, timeout=START_TIMEOUT):
        proc = self.popen(root, env, userspec)
        return communicate_or_stop(proc, timeout)

    def cleanup(self):
        stop_all(self.procs)
        for r in self.readonly:
            try:
                r.chmod(0o755)
            except OSError:
                pass


@pytest.fixture
def scratch(tmp_path_factory, pki):
    need_root()
    s = Scratch(tmp_path_factory, pki)
    yield s
    s.cleanup()


def token():
    return "tok-" + pysecrets.token_hex(16)


def assert_secret(ag: Agent, name: str):
    status, headers, body = ag.secret(name, timeout=REQ_TIMEOUT)
    assert status == 200, (status, body, ag.stderr[-3000:])
    doc = json.loads(body)
    assert doc["Name"] == name
    assert doc["SecretString"] == "value-of-" + name
    assert doc["VersionId"] == "v1"
    assert doc["VersionStages"] == ["AWSCURRENT"]
    assert doc["ARN"].endswith(":secret:" + name + "-AbCdEf")
    return doc


def assert_unknown_issuer_502(ag: Agent, upstream: TLSFakeUpstream, name: str):
    status, _, body = ag.secret(name, timeout=REQ_TIMEOUT)
    assert status == 502, (status, body)
    assert json.loads(body) == {"__type": "ConnectionError", "message": "Read Error"}
    # The warning is written right after the answer; give it a moment.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        err = ag.stderr
        if "unknownissuer" in err.lower().replace(" ", ""):
            break
        time.sleep(0.05)
    err = ag.stderr
    assert "unknownissuer" in err.lower().replace(" ", ""), f"no unknown-issuer reason on stderr:\n{err[-3000:]}"
    warn = [ln for ln in err.splitlines() if "unknownissuer" in ln.lower().replace(" ", "")]
    assert any(" WARN " in ln for ln in warn), warn
    # The agent aborted the handshake: the fake saw it fail (an unknown_ca alert, or
    # just the connection closing: ureq drops the socket without flushing rustls'
    # alert) and no request reached its HTTP layer.
    assert upstream.count() == 0
    # Through a proxy the close reaches the fake a little after the agent
    # answered: wait (bounded) for its handshake thread to record it.
    deadline = time.monotonic() + 5
    while not upstream.errors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.errors(), "the TLS fake saw no failed handshake"
    assert upstream.handshakes == 0, "a handshake completed although the certificate is untrusted"
    # A certificate error is final: one handshake, no retries. Retries come
    # before the answer, and the agent counts every attempt it made.
    assert ag.metric("upstream_calls_total", operation="GetSecretValue") == 1
    assert len(upstream.errors()) == 1, upstream.errors()


# =========================================================================== chroot: success


@pytest.mark.parametrize("user", ["root", "nobody-readonly-root"])
def test_static_binary_in_empty_root_fetches_over_tls_with_ca_bundle(scratch, tls_upstream, user):
    """Only the binary, agent.toml and ca.pem in /; as root, and as uid 65534 (no
    /etc/passwd entry exists for it) with / read-only, like a scratch image's USER."""
    root = scratch.root()
    userspec = None
    if user != "root":
        scratch.make_readonly(root)
        userspec = NOBODY
    before = tree(root)
    assert set(before) == {"secrets-manager-agent", "agent.toml", "ca.pem"}
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": "/ca.pem"})
    ag = scratch.start(root, env, userspec)
    if userspec:
        uid_line = [ln for ln in Path(f"/proc/{ag.pid}/status").read_text().splitlines() if ln.startswith("Uid:")][0]
        assert uid_line.split()[1:] == ["65534"] * 4, uid_line
    name = unique("scratch")
    assert_secret(ag, name)
    assert tls_upstream.count(name=name) == 1
    assert tls_upstream.handshakes >= 1 and not tls_upstream.errors()
    # The request went out SigV4-signed over TLS to the loopback endpoint.
    _, _, headers = tls_upstream.calls[0]
    assert headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 Credential=" + DUMMY_CREDS[0] + "/")
    assert headers.get("host") == f"127.0.0.1:{tls_upstream.port}"
    # Second read: served from the cache.
    assert_secret(ag, name)
    assert tls_upstream.count(name=name) == 1
    assert ag.alive()
    ag.stop()
    assert tree(root) == before, "the agent created or changed files in its root with log_to_file = false"
    assert "listening on" in ag.stdout


def test_render_in_an_empty_root(scratch, tls_upstream):
    """`render` from the static binary in a root holding only itself, its config and
    the CA (the scratch image's init container): the file written with its mode and
    a numeric owner (there is no /etc/passwd to name one), nothing else created."""
    name = unique("render")
    templates = (
        "[[templates]]\n"
        f'contents = "secret={{{{ secret(\'{name}\') }}}}\\n"\n'
        'destination = "/out/app.env"\n'
        'perms = "0640"\n'
        'user = "1234"\n'
        'group = "5678"\n'
    )
    root = scratch.root(config=CHROOT_CONFIG + templates)
    (root / "out").mkdir()
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": "/ca.pem"})
    argv = [shutil.which("chroot"), str(root), IN_ROOT_BIN, "render", "--config", "/agent.toml"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["rendered /out/app.env"]
    out = root / "out" / "app.env"
    assert out.read_text() == f"secret=value-of-{name}\n"
    st = out.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert sorted(os.listdir(root / "out")) == ["app.env"]
    assert set(tree(root)) == {"secrets-manager-agent", "agent.toml", "ca.pem", "out", "out/app.env"}
    assert tls_upstream.count(name=name) == 1


# =========================================================================== chroot: embedded roots


def test_without_ca_bundle_the_handshake_fails_unknown_issuer(scratch, tls_upstream):
    """No AWS_CA_BUNDLE and no CA files in the root: the agent still starts (its
    Mozilla roots are compiled in) and rejects the test CA's certificate."""
    root = scratch.root(ca=False)
    before = tree(root)
    env = chroot_env(tls_upstream.url, token())
    assert "AWS_CA_BUNDLE" not in env
    ag = scratch.start(root, env)
    assert_unknown_issuer_502(ag, tls_upstream, unique("untrusted"))
    assert ag.alive(), "the agent died after a failed handshake"
    # Still serving.
    status, _, body = ag.get("/ping", token=False)
    assert status == 200, body
    ag.stop()
    assert tree(root) == before


def test_ca_bundle_with_another_ca_is_not_trusted(scratch, tls_upstream, tmp_path):
    """A bundle replaces the roots: a bundle holding an unrelated CA rejects our server."""
    other_ca, _, _ = _make_pki(tmp_path)
    root = scratch.root(ca=False, extra_files={"other.pem": other_ca.read_bytes()})
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": "/other.pem"})
    ag = scratch.start(root, env)
    assert_unknown_issuer_502(ag, tls_upstream, unique("other-ca"))


# =========================================================================== chroot: bad bundles


@pytest.mark.parametrize(
    "bundle, files",
    [
        ("/missing.pem", {}),
        ("/garbage.pem", {"garbage.pem": b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"}),
        ("/empty.pem", {"empty.pem": b""}),
    ],
    ids=["missing", "unparsable", "no-certificates"],
)
def test_bad_ca_bundle_exits_1_naming_aws_ca_bundle(scratch, tls_upstream, bundle, files):
    root = scratch.root(ca=False, extra_files=files)
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": bundle})
    rc, out, err = scratch.run_expect_exit(root, env)
    assert rc == 1, (rc, out, err)
    assert "AWS_CA_BUNDLE" in err, err
    assert bundle in err, err
    assert "listening on" not in out
    assert len(err.strip().splitlines()) <= 3, err
    assert "panick" not in err.lower()
    assert tls_upstream.handshakes == 0 and not tls_upstream.errors()


# =========================================================================== chroot: log file


def test_default_file_logging_in_a_read_only_root_fails_clearly(scratch, tls_upstream):
    """log_to_file defaults to true: logs/ cannot be created in a read-only / for
    uid 65534, so the agent exits 1 with a message about the log file (no crash)."""
    root = scratch.root(config=CHROOT_CONFIG_DEFAULT_LOGGING)
    scratch.make_readonly(root)
    before = tree(root)
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": "/ca.pem"})
    rc, out, err = scratch.run_expect_exit(root, env, userspec=NOBODY)
    assert rc == 1, f"expected exit 1 (negative = killed by a signal): rc={rc}\nstdout={out!r}\nstderr={err!r}"
    low = err.lower()
    assert "log" in low and "log_to_file" in err, err
    assert "permission denied" in low or "read-only" in low, err
    assert "panick" not in low, err
    assert "listening on" not in out
    assert tree(root) == before


def test_default_file_logging_in_a_writable_root_creates_logs(scratch, tls_upstream):
    """Counterpart: with a writable working directory the default logs/ works in the
    empty root (and the secret still comes over TLS)."""
    root = scratch.root(config=CHROOT_CONFIG_DEFAULT_LOGGING)
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": "/ca.pem"})
    ag = scratch.start(root, env)
    assert_secret(ag, unique("filelog"))
    ag.stop()
    log = root / "logs" / "secrets_manager_agent.log"
    assert log.is_file(), tree(root)
    assert log.read_text(errors="replace").strip()


# =========================================================================== CONNECT proxy


def proxy_env(pki, proxy_url, extra=None):
    env = {"AWS_CA_BUNDLE": str(pki["ca"]), "HTTPS_PROXY": proxy_url, "NO_PROXY": None, "no_proxy": None}
    env.update(extra or {})
    return env


def test_https_goes_through_connect_proxy(agent, tls_upstream, connect_proxy, pki):
    proxy = connect_proxy()
    ag = agent(tls_upstream.url, env=proxy_env(pki, proxy.url))
    name = unique("proxied")
    assert_secret(ag, name)
    assert tls_upstream.count(name=name) == 1
    assert proxy.connect_targets() == [f"127.0.0.1:{tls_upstream.port}"], proxy.request_lines()
    assert proxy.request_lines() == [f"CONNECT 127.0.0.1:{tls_upstream.port} HTTP/1.1"]


def test_static_binary_in_empty_root_through_connect_proxy(scratch, tls_upstream, connect_proxy):
    proxy = connect_proxy()
    root = scratch.root()
    before = tree(root)
    env = chroot_env(tls_upstream.url, token(), {"AWS_CA_BUNDLE": "/ca.pem", "HTTPS_PROXY": proxy.url})
    ag = scratch.start(root, env, NOBODY)
    name = unique("proxied-static")
    assert_secret(ag, name)
    assert tls_upstream.count(name=name) == 1
    assert proxy.request_lines() == [f"CONNECT 127.0.0.1:{tls_upstream.port} HTTP/1.1"]
    ag.stop()
    assert tree(root) == before


@pytest.mark.parametrize("var", ["HTTP_PROXY", "https_proxy"])
def test_other_proxy_variables_are_honoured(agent, tls_upstream, connect_proxy, pki, var):
    proxy = connect_proxy()
    ag = agent(tls_upstream.url, env={"AWS_CA_BUNDLE": str(pki["ca"]), var: proxy.url})
    assert_secret(ag, unique("proxied-var"))
    assert proxy.connect_targets() == [f"127.0.0.1:{tls_upstream.port}"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_no_proxy_covering_the_host_bypasses_the_proxy(agent, tls_upstream, connect_proxy, pki, no_proxy):
    proxy = connect_proxy()
    ag = agent(tls_upstream.url, env=proxy_env(pki, proxy.url, {"NO_PROXY": no_proxy}))
    name = unique("direct")
    assert_secret(ag, name)
    assert tls_upstream.count(name=name) == 1
    assert proxy.connection_count() == 0, proxy.request_lines()


def test_no_proxy_for_another_host_still_uses_the_proxy(agent, tls_upstream, connect_proxy, pki):
    proxy = connect_proxy()
    ag = agent(tls_upstream.url, env=proxy_env(pki, proxy.url, {"NO_PROXY": "example.invalid,.internal"}))
    assert_secret(ag, unique("still-proxied"))
    assert proxy.connect_targets() == [f"127.0.0.1:{tls_upstream.port}"]


def test_proxy_refusing_connect_gives_502_and_never_goes_direct(agent, tls_upstream, connect_proxy, pki):
    """The proxy answers 403: the agent answers 502 ConnectionError, logs the proxy
    failure, and never falls back to connecting to the endpoint itself."""
    proxy = connect_proxy(refuse=True)
    ag = agent(tls_upstream.url, env=proxy_env(pki, proxy.url))
    status, _, body = ag.secret(unique("refused"), timeout=REQ_TIMEOUT)
    assert status == 502, (status, body)
    assert json.loads(body)["__type"] == "ConnectionError"
    assert tls_upstream.handshakes == 0 and tls_upstream.count() == 0 and not tls_upstream.errors()
    targets = proxy.connect_targets()
    assert targets and set(targets) == {f"127.0.0.1:{tls_upstream.port}"}, proxy.request_lines()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "proxy" not in ag.stderr.lower():
        time.sleep(0.05)
    assert "proxy" in ag.stderr.lower(), ag.stderr[-3000:]


def test_proxy_does_not_weaken_certificate_checks(agent, tls_upstream, connect_proxy):
    """Through the tunnel TLS is still end to end: without the bundle the proxied
    handshake fails with unknown issuer."""
    proxy = connect_proxy()
    ag = agent(tls_upstream.url, env={"HTTPS_PROXY": proxy.url})
    assert_unknown_issuer_502(ag, tls_upstream, unique("proxied-untrusted"))
    assert set(proxy.connect_targets()) == {f"127.0.0.1:{tls_upstream.port}"}
