"""Logging: secrets, tokens and credentials never reach the logs; request and
upstream data cannot forge log lines."""

import re
import socket

import pytest

from conftest import error, free_port, unique, wait_until

LOG = "logs/secrets_manager_agent.log"

# The agent's line: timestamp, level padded to 5, [target], message.
LINE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (ERROR|WARN |INFO |DEBUG|TRACE) \[[A-Za-z0-9_:]+\] ")
MAX_MESSAGE = 4096  # src/logger.rs: bytes of message per line
CUT_MARKER = len("… [1000000 bytes cut]".encode())
FORGED_TS = "2026-01-01T00:00:00.000Z"
FORGED = "\n" + FORGED_TS + " ERROR [secrets_manager_agent] FORGED\r\x1b[2J\x9b2J"


def exercise(ag, name, value, broken):
    """A mix of successful and failing requests."""
    assert ag.secret_json(name)["SecretString"] == value
    ag.secret(name)  # cache hit
    ag.secret(name, refreshNow="true")
    ag.get("/v1/" + name)
    ag.get("/ping", token=False)
    ag.get("/secretsmanager/get?secretId=" + name, token=False)  # 403
    ag.get("/secretsmanager/get?secretId=" + name, token=False, headers={"X-Aws-Parameters-Secrets-Token": "not-it"})
    ag.get("/secretsmanager/get?secretId=" + name, headers={"X-Forwarded-For": "127.0.0.1"})
    ag.get("/secretsmanager/get?secretId=" + name, method="POST", body=b"")
    ag.get("/secretsmanager/get?secretId=" + name + "&bogus=1")
    ag.get("/nowhere")
    status, _, _ = ag.secret(broken, timeout=60)
    assert status == 400


@pytest.mark.parametrize("to_file", [True, False], ids=["log_to_file", "log_to_stderr"])
def test_no_secrets_in_logs(agent, fake_upstream, to_file):
    secret_value = "S3CRET-" + unique("v")
    name = unique("logged")
    broken = unique("broken")
    fake_upstream.set_secret(name, secret_value)
    fake_upstream.set_default("GetSecretValue", error(400, "ResourceNotFoundException", "nope"), secret=broken)
    ag = agent(fake_upstream.url, config={"log_level": "DEBUG", "log_to_file": to_file})
    exercise(ag, name, secret_value, broken)
    log_path = ag.workdir / LOG

    def logged():
        return (log_path.read_text(errors="replace") if log_path.exists() else "") + ag.stdout + ag.stderr

    # The failed request's WARN line is out: the requests' lines are written.
    wait_until(lambda: broken in logged(), what="the failed request's log line")
    during = log_path.read_text(errors="replace") if log_path.exists() else ""
    ag.stop()
    logs = log_path.read_text(errors="replace") if log_path.exists() else ""
    out, err = ag.stdout, ag.stderr
    if to_file:
        assert log_path.exists(), "log file not created"
        assert logs.strip(), "log file is empty at DEBUG level"
    else:
        assert not log_path.exists()
        assert (out + err).count("\n") >= 2, "expected DEBUG logs on stdout/stderr"
    everything = "\n".join([during, logs, out, err])
    for forbidden, what in [
        (secret_value, "secret value"),
        (ag.token, "SSRF token"),
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS secret access key"),
    ]:
        assert forbidden not in everything, f"{what} appears in the logs"


def test_log_level_none_writes_nothing(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"log_level": "NONE", "log_to_file": True})
    ag.secret("quiet")
    ag.get("/v1/quiet", token=False)
    ag.stop()
    log_path = ag.workdir / LOG
    assert not log_path.exists() or log_path.read_text() == ""
    assert ag.stderr.strip() == ""


def test_log_level_error_is_quieter_than_debug(agent, fake_upstream):
    sizes = {}
    for level in ("ERROR", "DEBUG"):
        ag = agent(fake_upstream.url, config={"log_level": level, "log_to_file": True})
        for _ in range(3):
            ag.secret("lvl", refreshNow="true")
            ag.get("/v1/lvl", token=False)
        ag.stop()
        p = ag.workdir / LOG
        sizes[level] = len(p.read_text()) if p.exists() else 0
    assert sizes["DEBUG"] > sizes["ERROR"], sizes


@pytest.mark.parametrize("to_file", [True, False], ids=["log_to_file", "log_to_stderr"])
def test_request_and_upstream_data_cannot_forge_log_lines(agent, fake_upstream, to_file):
    # A hostile secret ID (percent-encoded by ag.secret, decoded by the agent), a
    # 40,000-character one (under the 64 KiB request-head limit), and an AWS error
    # message with a forged line, terminal escapes and 60 KB of text.
    hostile_id = unique("missing") + FORGED
    long_id = unique("missing") + "x" * 40_000
    hostile_answer = unique("answer")
    for sid in (hostile_id, long_id):
        fake_upstream.set_default("GetSecretValue", error(400, "ResourceNotFoundException", "nope"), secret=sid)
    fake_upstream.set_default(
        "GetSecretValue",
        error(400, "ResourceNotFoundException", "nope" + FORGED + "m" * 60_000),
        secret=hostile_answer,
    )
    ag = agent(fake_upstream.url, config={"log_level": "DEBUG", "log_to_file": to_file})
    for sid in (hostile_id, long_id, hostile_answer):
        status, _, _ = ag.secret(sid)
        assert status == 400, sid[:80]
    ag.secret(unique("fine"))  # an ordinary line for comparison
    ag.stop()
    if to_file:
        raw = (ag.workdir / LOG).read_bytes()
    else:
        raw = ag.stderr.encode()
    text = raw.decode("utf-8", "replace")
    lines = text.split("\n")
    assert lines[-1] == "", "the log does not end with a newline"
    lines = lines[:-1]
    assert any(hostile_answer in line and "failed" in line for line in lines), "the failure was not logged"
    for line in lines:
        m = LINE_RE.match(line)
        assert m, f"not an agent log line: {line[:200]!r}"
        assert not line.startswith(FORGED_TS), f"forged line: {line[:200]!r}"
        message = line[m.end():].encode()
        assert len(message) <= MAX_MESSAGE + CUT_MARKER, f"{len(message)}-byte message: {line[:200]!r}"
        bad = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
        assert not bad, f"control characters {bad!r} in {line[:200]!r}"
    assert b"\x1b" not in raw and b"\r" not in raw


def test_json_lines_are_objects_with_fields_and_no_secrets(agent, fake_upstream):
    import json

    secret_value = "S3CRET-" + unique("v")
    name = unique("logged")
    broken = unique("broken")
    fake_upstream.set_secret(name, secret_value)
    fake_upstream.set_default("GetSecretValue", error(400, "ResourceNotFoundException", "nope" + FORGED),
                              secret=broken)
    ag = agent(fake_upstream.url, config={"log_level": "DEBUG", "log_to_file": False, "log_format": "json"})
    exercise(ag, name, secret_value, broken)
    ag.stop()
    lines = [l for l in ag.stderr.split("\n") if l]
    assert len(lines) >= 5, ag.stderr
    docs = [json.loads(l) for l in lines]  # every line is one JSON object
    for doc in docs:
        assert list(doc)[:4] == ["timestamp", "level", "target", "message"], doc
        assert doc["level"] in ("ERROR", "WARN", "INFO", "DEBUG"), doc
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["timestamp"]), doc
    failed = [d for d in docs if d.get("secret_id") == broken]
    assert len(failed) == 1, docs
    assert failed[0]["status"] == 400 and isinstance(failed[0]["duration_ms"], int), failed
    assert "ResourceNotFoundException" in failed[0]["message"] and "\n" not in failed[0]["message"]
    assert secret_value not in ag.stderr and ag.token not in ag.stderr


def test_json_mode_writes_only_json_on_both_streams(agent, fake_upstream, tmp_path):
    """With log_format = "json" a collector reading stdout and stderr reads only JSON
    objects: the `listening on` announcements carry their address as a field, and the
    error an agent stops on is an object too."""
    import json

    sock = tmp_path / "agent.sock"
    metrics = free_port()
    ag = agent(fake_upstream.url, config={"log_level": "DEBUG", "log_to_file": False, "log_format": "json",
                                          "unix_socket_path": str(sock), "metrics_address": f"127.0.0.1:{metrics}"})
    ag.secret(unique("json"))
    ag.stop()
    out = [json.loads(l) for l in ag.stdout.split("\n") if l]
    err = [json.loads(l) for l in ag.stderr.split("\n") if l]
    assert len(err) >= 3, ag.stderr
    for doc in out + err:
        assert list(doc)[:4] == ["timestamp", "level", "target", "message"], doc
    assert [d["address"] for d in out] == [f"http://127.0.0.1:{ag.port}", f"unix:{sock}",
                                           f"http://127.0.0.1:{metrics}/metrics"], out
    first = out[0]
    assert first["level"] == "INFO" and first["target"] == "secrets_manager_agent::agent", first
    assert first["message"] == f"secrets-manager-agent 0.1.0 listening on http://127.0.0.1:{ag.port}", first

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, out, err = agent.run_expect_exit(fake_upstream.url, config={"log_format": "json", "log_to_file": False,
                                                                         "http_port": port})
    assert rc == 1 and out == "", (rc, out, err)
    docs = [json.loads(l) for l in err.split("\n") if l]
    assert docs[-1]["level"] == "ERROR" and f"cannot listen on 127.0.0.1:{port}" in docs[-1]["message"], docs
