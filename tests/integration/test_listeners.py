"""Where the agent listens: IPv6 loopback, a unix socket beside the TCP one
(mode, stale file, removal at exit), and addresses beyond loopback only when
asked for twice."""

import os
import re
import signal
import socket
import stat
import subprocess

from conftest import agent_bin, agent_env, free_port, wait_until


def unix_get(path, target, token=None, timeout=10):
    """One HTTP/1.1 request over a unix socket; (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        head = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if token:
            head += f"X-Aws-Parameters-Secrets-Token: {token}\r\n"
        s.sendall((head + "\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_ipv6_loopback(agent, fake_upstream):
    port = free_port()
    ag = agent(fake_upstream.url, config={"bind_address": "::1", "http_port": port})
    assert f"listening on http://[::1]:{port}" in ag.stdout
    with socket.create_connection(("::1", port), timeout=5) as s:
        s.sendall(b"GET /secretsmanager/get?secretId=v6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"X-Aws-Parameters-Secrets-Token: " + ag.token.encode() + b"\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    # Nothing on IPv4 loopback.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        reached = True
    except OSError:
        reached = False
    assert not reached
    # The agent's own client finds it where the config says.
    cfg = ag.workdir / "v6.toml"
    cfg.write_text(f'bind_address = "::1"\nhttp_port = {port}\n')
    p = subprocess.run([str(agent_bin()), "ping", "--config", str(cfg)], capture_output=True, timeout=30,
                       env=agent_env())
    assert (p.returncode, p.stdout) == (0, b"healthy\n"), p


def test_unix_socket_serves_the_same_api_with_its_mode_and_goes_at_exit(agent, fake_upstream, tmp_path):
    sock = tmp_path / "agent.sock"
    # A file left by an agent that died: replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    # A group other than the agent's own, where the test may choose one (root).
    group = 4242 if os.geteuid() == 0 else os.getegid()
    ag = agent(fake_upstream.url, config={"unix_socket_path": str(sock), "unix_socket_mode": "0640",
                                          "unix_socket_group": str(group)})
    assert f"listening on unix:{sock}" in ag.stdout
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o640
    assert os.stat(sock).st_gid == group
    assert unix_get(sock, "/ping") == (200, b"healthy")
    assert unix_get(sock, "/secretsmanager/get?secretId=u1")[0] == 403, "the token is still required"
    status, body = unix_get(sock, "/secretsmanager/get?secretId=u1", ag.token)
    assert status == 200 and b'"Name":"u1"' in body, body
    # TCP serves on as before.
    assert ag.secret("u1")[0] == 200
    ag.proc.send_signal(signal.SIGTERM)
    assert ag.proc.wait(timeout=10) == 0
    assert not sock.exists(), "the socket file is removed at exit"


def test_unix_socket_path_that_is_not_a_socket_is_left_alone(agent, fake_upstream, tmp_path):
    path = tmp_path / "precious"
    path.write_text("data")
    rc, _, err = agent.run_expect_exit(fake_upstream.url, config={"unix_socket_path": str(path)})
    assert rc == 1 and "exists and is not a socket" in err, err
    assert path.read_text() == "data"
    rc, _, err = agent.run_expect_exit(fake_upstream.url, config={"unix_socket_mode": "0600"})
    assert rc == 1 and "`unix_socket_mode` needs `unix_socket_path`" in err, err
    rc, _, err = agent.run_expect_exit(fake_upstream.url, config={"unix_socket_path": str(tmp_path / "s"),
                                                                  "unix_socket_group": "no-such-group-x"})
    assert rc == 1 and "no such group" in err, err
    assert not (tmp_path / "s").exists()


def test_beyond_loopback_only_when_asked_twice(agent, fake_upstream):
    rc, _, err = agent.run_expect_exit(fake_upstream.url, config={"bind_address": "0.0.0.0"})
    assert rc == 1 and "not a loopback address" in err and "allow_non_loopback = true" in err, err
    port = free_port()
    ag = agent(fake_upstream.url, config={"bind_address": "0.0.0.0", "allow_non_loopback": True,
                                          "http_port": port, "log_to_file": False})
    assert f"listening on http://0.0.0.0:{port}" in ag.stdout
    wait_until(lambda: re.search(r"WARN .*beyond loopback", ag.stderr), what="the warning")
    # Every check stays on: the token, and the X-Forwarded-For refusal.
    assert ag.get("/secretsmanager/get?secretId=n1", token=False)[0] == 403
    assert ag.get("/secretsmanager/get?secretId=n1", headers={"X-Forwarded-For": "10.0.0.1"})[0] == 400
    assert ag.secret("n1")[0] == 200
