"""Secret hygiene and refresh-ahead, observed from outside the process; the TTLs
run on the agent's test clock (Agent.advance)."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import LISTEN_RE, http_request, ok, spawn_wrapped_agent


TTL = 300  # seconds on the agent's clock (Agent.advance)
DUE = TTL * 0.95  # past an entry's refresh point (80 to 90 % of its TTL), inside the TTL


def timed_read(ag, name):
    started = time.monotonic()
    status, _, body = ag.secret(name)
    assert status == 200, body
    return time.monotonic() - started


@pytest.mark.serial  # times the reads
def test_steady_reader_never_waits_for_secrets_manager(agent, fake_upstream):
    """Reads near the end of the TTL refresh in the background: with a slow
    DescribeSecret (1.5 s) a reader across several TTLs never waits for it,
    not even once the TTL has run out while the refresh is still under way."""
    fake_upstream.set_default("DescribeSecret", ok(delay=1.5))
    ag = agent(upstream=fake_upstream.url, config={"ttl_seconds": TTL})
    assert ag.secret("steady")[0] == 200
    slowest = 0.0
    for n in (1, 2):
        ag.advance(DUE)  # from the last refresh: in the refresh window
        slowest = max(slowest, timed_read(ag, "steady"))  # queues the refresh
        fake_upstream.wait_calls("DescribeSecret", n)  # under way, held 1.5 s
        ag.advance(TTL * 0.1)  # past the TTL while it runs
        slowest = max(slowest, timed_read(ag, "steady"))
        ag.wait_metric("cache_refreshes_total", n)
        slowest = max(slowest, timed_read(ag, "steady"))
    assert fake_upstream.count("DescribeSecret") == 2, "refreshed ahead across several TTLs"
    assert fake_upstream.count("GetSecretValue") == 1
    assert slowest < 1.0, f"a read waited {slowest:.2f} s for the 1.5 s DescribeSecret"


def test_rotation_is_picked_up_within_one_ttl(agent, fake_upstream):
    ag = agent(upstream=fake_upstream.url, config={"ttl_seconds": TTL})
    fake_upstream.set_secret("rotating", "old")
    assert ag.secret_json("rotating")["SecretString"] == "old"
    fake_upstream.set_secret("rotating", "new")
    ag.advance(TTL / 2)
    assert ag.secret_json("rotating")["SecretString"] == "old", "within the TTL: from memory"
    ag.advance(TTL / 2 + 1)
    assert ag.secret_json("rotating")["SecretString"] == "new"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_process_is_not_dumpable(fake_upstream):
    """As an ordinary user, the agent's /proc/PID/mem stays root-owned: nobody of
    the same uid can read its memory, and no core file is written."""
    # pytest's own tmp dirs are private to root; uid 65534 must read the config.
    tmp_path = Path(tempfile.mkdtemp(prefix="sma-dump-"))
    tmp_path.chmod(0o755)
    proc = spawn_wrapped_agent(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], tmp_path,
                               fake_upstream.url)
    try:
        line = proc.stdout.readline().decode()
        assert LISTEN_RE.search(line), (line, proc.stderr.read1(4000) if proc.poll() is not None else b"")
        status = open(f"/proc/{proc.pid}/status").read()
        assert "\nUid:\t65534\t" in status, status
        assert os.stat(f"/proc/{proc.pid}/mem").st_uid == 0, "non-dumpable: /proc/PID/mem owned by root"
        limits = open(f"/proc/{proc.pid}/limits").read()
        core = [l for l in limits.splitlines() if l.startswith("Max core file size")][0].split()
        assert core[4:6] == ["0", "0"], core
        port = int(LISTEN_RE.search(line).group(1))
        assert http_request(port, "/ping")[0] == 200
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(tmp_path, ignore_errors=True)
