"""Hostile or broken clients: huge heads, stalled clients, many idle connections."""

import json
import os
import select
import socket
import time

import pytest

from conftest import raise_nofile, wait_until


def recv_until_closed(sock, timeout=15.0, limit=1 << 20):
    """Read until EOF/reset (bounded). Returns (data, closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(data) < limit:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head_padding(n_bytes, line_len=1000):
    lines = []
    total = 0
    i = 0
    while total < n_bytes:
        line = f"X-Pad-{i}: " + "a" * line_len + "\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()


@pytest.fixture
def ag(agent, fake_upstream):
    # a long client timeout so that only the size limit can end these connections
    return agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "30000"})


def test_oversized_head_is_431_without_waiting_for_its_end(ag):
    s = connect(ag.port)
    try:
        # 66 KiB of header lines and no blank line: the head never ends.
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head_padding(66 * 1024))
        data, closed = recv_until_closed(s, timeout=15)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 431"), data[:200]
    assert data.endswith(b"Request header fields too large"), data[-200:]
    assert closed, "connection must be closed after 431"


def test_one_mebibyte_head_is_refused_early(ag):
    s = connect(ag.port)
    s.settimeout(10)
    sent = 0
    answered = False
    payload = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head_padding(1 << 20) + b"\r\n"
    try:
        chunk = 4096
        for off in range(0, len(payload), chunk):
            r, _, _ = select.select([s], [], [], 0)
            if r:
                answered = True
                break
            try:
                s.sendall(payload[off:off + chunk])
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                break
            sent += chunk
            time.sleep(0.001)
        data, closed = recv_until_closed(s, timeout=15)
    finally:
        s.close()
    assert sent < len(payload), "the agent read the whole 1 MiB head before answering"
    if data:
        assert data.startswith(b"HTTP/1.1 431"), data[:200]
    else:
        # the reply may be lost to a TCP reset if we still had bytes in flight
        assert answered or closed
    assert closed or answered


def test_agent_still_serves_after_oversized_heads(ag):
    for _ in range(3):
        s = connect(ag.port)
        try:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n" + head_padding(70 * 1024))
            recv_until_closed(s, timeout=15)
        except OSError:
            pass
        finally:
            s.close()
    status, _, body = ag.get("/ping", token=False)
    assert (status, body) == (200, b"healthy")


def test_large_but_allowed_head_is_fine(ag):
    big = "b" * (40 * 1024)
    status, _, body = ag.get("/ping", token=False, headers={"X-Big": big})
    assert (status, body) == (200, b"healthy")


def test_malformed_request_is_400_and_closed(ag):
    s = connect(ag.port)
    try:
        s.sendall(b"THIS IS NOT HTTP\x00\x01\r\n\r\n")
        data, closed = recv_until_closed(s, timeout=15)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert data.endswith(b"Bad request"), data[-200:]
    assert closed


def test_stalled_client_is_disconnected(agent, fake_upstream):
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "300"})
    s = connect(ag.port)
    try:
        s.sendall(b"GET /secretsmanager/get?secretId=x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ")
        data, closed = recv_until_closed(s, timeout=20)
    finally:
        s.close()
    assert closed, "stalled connection was not closed"
    assert b"200 OK" not in data
    status, _, body = ag.get("/ping", token=False)
    assert (status, body) == (200, b"healthy")


def test_idle_keep_alive_connection_is_closed(agent, fake_upstream):
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "300"})
    s = connect(ag.port)
    try:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data, closed = recv_until_closed(s, timeout=20)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert closed, "idle keep-alive connection was not closed"


def test_silent_connection_is_closed(agent, fake_upstream):
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "300"})
    s = connect(ag.port)
    try:
        data, closed = recv_until_closed(s, timeout=20)
    finally:
        s.close()
    assert closed


def test_slow_but_steady_client_is_served(agent, fake_upstream):
    """Dribbling a request in slowly (but faster than the timeout) still works."""
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "3000"})
    req = f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Aws-Parameters-Secrets-Token: {ag.token}\r\n\r\n".encode()
    s = connect(ag.port)
    try:
        for i in range(0, len(req), 16):
            s.sendall(req[i:i + 16])
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        data, _ = recv_until_closed(s, timeout=15)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


@pytest.mark.serial  # counts threads and times answers
def test_many_idle_connections(agent, fake_upstream):
    n = 1000
    limit = raise_nofile(n + 500)
    if limit < n + 100:
        pytest.skip(f"RLIMIT_NOFILE too low ({limit})")
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "120000"}, config={"ttl_seconds": 300})
    assert ag.secret_json("warm")["SecretString"] == "value-of-warm"
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", ag.port), timeout=10))
        # The agent holds them all (and the scrape's own).
        ag.wait_metric("open_connections", n + 1, timeout=30)
        assert ag.alive()
        status, _, body = ag.get("/ping", token=False, timeout=15)
        assert (status, body) == (200, b"healthy")
        status, _, body = ag.secret("warm", timeout=15)
        assert status == 200, body
        assert json.loads(body)["SecretString"] == "value-of-warm"
        threads = ag.threads()
        assert threads < 100, f"agent uses {threads} threads with {n} idle connections"
        # the idle connections are still usable
        probe = socks[0]
        probe.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data, _ = recv_until_closed(probe, timeout=15)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
    finally:
        for s in socks:
            s.close()
    status, _, _ = ag.get("/ping", token=False)
    assert status == 200


@pytest.mark.serial  # counts threads and times answers
def test_many_stalled_request_heads(agent, fake_upstream):
    """Slowloris: 300 connections each stuck in the middle of a request head must
    neither starve /ping and cached secrets nor cost a thread each."""
    n = 300
    raise_nofile(n + 500)
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "120000"}, config={"ttl_seconds": 300})
    assert ag.secret_json("warm")["SecretString"] == "value-of-warm"
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", ag.port), timeout=10)
            s.sendall(b"GET /secretsmanager/get?secretId=warm HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A")
            socks.append(s)
        # The agent holds them all (and the scrape's own).
        ag.wait_metric("open_connections", n + 1, timeout=30)
        status, _, body = ag.get("/ping", token=False, timeout=15)
        assert (status, body) == (200, b"healthy")
        status, _, body = ag.secret("warm", timeout=15)
        assert status == 200, body
        threads = ag.threads()
        assert threads < 100, f"agent uses {threads} threads with {n} stalled heads"
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- clients that never read


def non_reader(port, request, count, rcvbuf=4096):
    """A socket with a small receive buffer that sends `count` pipelined copies of
    `request` and never reads an answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    payload = request * count
    sent = 0
    deadline = time.monotonic() + 5
    # Send what the agent takes; it may stop reading once its answers back up.
    while sent < len(payload) and time.monotonic() < deadline:
        try:
            sent += s.send(payload[sent:])
        except BlockingIOError:
            select.select([], [s], [], 0.05)
    return s


def workers_started_at_once(max_conn):
    """The pool's immediate bound: a worker per CPU, at most max_conn + 8.
    Growth beyond it means workers were stuck."""
    return min(os.cpu_count() or 1, max_conn + 8)


def assert_pool_did_not_grow(ag, max_conn):
    bound = workers_started_at_once(max_conn)
    if bound >= max_conn + 8:
        return  # so many CPUs that the bound cannot tell stuck workers apart
    # Workers, plus the keeper, the signal thread and the two refreshers.
    assert ag.threads() <= bound + 4, (ag.threads(), bound)


def assert_stays_responsive(ag, big_id, seconds=3.0):
    """/ping (no token) and a cached read by a well-behaved client answer promptly
    for `seconds`, while the non-readers are connected."""
    deadline = time.monotonic() + seconds
    worst = 0.0
    while time.monotonic() < deadline:
        for request in (lambda: ag.get("/ping", token=False, timeout=3), lambda: ag.secret(big_id, timeout=3)):
            started = time.monotonic()
            status, _, _ = request()
            worst = max(worst, time.monotonic() - started)
            assert status == 200
        time.sleep(0.2)
    # Far below the client timeout; before the fix these waited 15 s or more.
    assert worst < 2.0, f"slowest answer {worst:.2f} s"


def big_secret_agent(agent, fake_upstream):
    """max_conn 20, a 64 KiB secret `big` already cached."""
    raise_nofile(4096)
    ag = agent(fake_upstream.url, config={"max_conn": 20}, env={"SMA_CLIENT_TIMEOUT_MS": "10000"})
    fake_upstream.set_secret("big", "s" * 65536)
    assert ag.secret("big")[0] == 200  # cached from here on
    return ag


def assert_non_readers_cannot_pin_the_workers(ag, request, count):
    sockets = [non_reader(ag.port, request, count) for _ in range(40)]
    try:
        assert_stays_responsive(ag, "big")
        # No worker waits for a client: the pool has not grown for them.
        assert_pool_did_not_grow(ag, 20)
    finally:
        for s in sockets:
            s.close()
    assert ag.get("/ping", token=False)[0] == 200


@pytest.mark.serial  # counts threads and times answers
def test_clients_that_never_read_cannot_pin_the_workers(agent, fake_upstream):
    ag = big_secret_agent(agent, fake_upstream)
    request = (
        b"GET /secretsmanager/get?secretId=big HTTP/1.1\r\nHost: x\r\n"
        b"X-Aws-Parameters-Secrets-Token: " + ag.token.encode() + b"\r\n\r\n"
    )
    assert_non_readers_cannot_pin_the_workers(ag, request, 200)


@pytest.mark.serial  # counts threads and times answers
def test_pipelined_pings_that_are_never_read_cannot_pin_the_workers(agent, fake_upstream):
    ag = big_secret_agent(agent, fake_upstream)
    assert_non_readers_cannot_pin_the_workers(ag, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", 40000)


def test_an_answer_the_client_does_not_read_times_out(agent, fake_upstream):
    ag = agent(fake_upstream.url, env={"SMA_CLIENT_TIMEOUT_MS": "1000"})
    fake_upstream.set_secret("big", "s" * 65536)
    assert ag.secret("big")[0] == 200
    request = (
        b"GET /secretsmanager/get?secretId=big HTTP/1.1\r\nHost: x\r\n"
        b"X-Aws-Parameters-Secrets-Token: " + ag.token.encode() + b"\r\n\r\n"
    )
    s = non_reader(ag.port, request, 50)
    try:
        # The agent closes it one client timeout after the answer stopped
        # fitting: wait for that (the scrape is the one connection left).
        wait_until(lambda: ag.metric("open_connections") == 1, timeout=15,
                   what="the non-reader's connection to close")
        s.setblocking(True)
        data, closed = recv_until_closed(s, timeout=5, limit=64 << 20)
        assert closed, "the agent kept a connection whose answer was not read"
        # Whole answers one after the other, then the cut: never a second
        # answer started before the first one ended.
        answers = 0
        while data:
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:64]
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                break  # cut inside a head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answers += 1
            data = rest[length:]
        assert 1 <= answers < 50
    finally:
        s.close()
