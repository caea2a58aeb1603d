"""Logging: secrets, tokens and credentials never reach the logs."""

import time

import pytest

from conftest import error, unique

LOG = "logs/secrets_manager_agent.log"


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
    time.sleep(0.5)
    log_path = ag.workdir / LOG
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
