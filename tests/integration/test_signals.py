"""SIGTERM and SIGINT end the agent cleanly, also as PID 1 of a PID namespace
(a container's first process gets no default signal handling)."""

import os
import shutil
import signal

import pytest

from conftest import LISTEN_RE, children, spawn_wrapped_agent, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero(agent, fake_upstream, sig):
    ag = agent(upstream=fake_upstream.url)
    assert ag.get("/ping")[0] == 200
    ag.proc.send_signal(sig)
    assert ag.proc.wait(timeout=10) == 0
    assert "received: exiting" in ag.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_sigterm_as_pid_one(tmp_path, fake_upstream):
    proc = spawn_wrapped_agent(["unshare", "--pid", "--fork", "--kill-child"], tmp_path, fake_upstream.url)
    try:
        line = proc.stdout.readline().decode()
        assert LISTEN_RE.search(line), line
        child = wait_until(lambda: children(proc.pid), timeout=5, what="the agent under unshare")[0]
        with open(f"/proc/{child}/status") as f:
            nspid = [l for l in f if l.startswith("NSpid:")][0].split()
        assert nspid[-1] == "1", nspid  # PID 1 inside its namespace
        os.kill(child, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
