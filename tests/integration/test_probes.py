"""Readiness (`/ready`) and the agent's own client subcommands, `ping` and `get`,
against a live agent and against nothing."""

import base64
import json
import subprocess

from conftest import agent_bin, agent_env, free_port, respond, wait_until
from test_prefetch import config_3x


def run(args, env, timeout=30):
    """The binary as a command: (exit status, stdout bytes, stderr text)."""
    p = subprocess.run([str(agent_bin()), *args], env=env, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode()


def client_env(ag, extra=None):
    """What a command next to the agent sees: the same token variable."""
    env = agent_env(token=ag.token)
    env.update(extra or {})
    return env


def test_ready_waits_for_the_prefetch(agent, fake_upstream):
    element = {"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:pre-AbCdEf", "Name": "pre",
               "VersionId": "v1", "SecretString": "x", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1700000000}
    fake_upstream.script("BatchGetSecretValue", respond(200, {"SecretValues": [element], "Errors": []}, delay=2))
    ag = agent(fake_upstream.url, raw_config=config_3x(["pre"]))
    status, _, body = ag.get("/ready", token=False)
    assert (status, body) == (503, b"not ready: prefetching the configured secrets")
    rc, out, err = run(["ping", "--ready", "--port", str(ag.port)], client_env(ag))
    assert rc == 1 and out == b"" and "answered /ready with 503: not ready: prefetching" in err, err
    assert ag.get("/ping", token=False)[0] == 200, "alive all the same"
    wait_until(lambda: ag.get("/ready", token=False)[0] == 200, timeout=15, what="ready after the prefetch")
    assert ag.get("/ready", token=False)[2] == b"ready"
    assert run(["ping", "--ready", "--port", str(ag.port)], client_env(ag)) == (0, b"ready\n", "")


def test_ready_says_when_no_credentials_resolve(agent, fake_upstream):
    ag = agent(fake_upstream.url, creds=("", ""), env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    status, _, body = ag.get("/ready", token=False)
    assert (status, body) == (503, b"not ready: no AWS credentials"), "no details without the token"
    status, _, body = ag.get("/ready")
    assert status == 503 and body.startswith(b"not ready: no AWS credentials found"), body
    assert b"environment" in body, body
    assert ag.get("/ready", token=False, method="POST")[0] == 405
    ok = agent(fake_upstream.url)
    status, _, body = ok.get("/ready", token=False)
    assert (status, body) == (200, b"ready")


def test_ping_against_a_live_agent_and_against_nothing(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    rc, out, err = run(["ping", "--port", str(ag.port)], client_env(ag))
    assert (rc, out, err) == (0, b"healthy\n", "")
    port = free_port()
    rc, out, err = run(["ping", "--port", str(port)], client_env(ag))
    assert rc == 1 and out == b""
    assert err.startswith(f"secrets-manager-agent: error: no agent answers on 127.0.0.1:{port}"), err
    assert len(err.strip().splitlines()) == 1, err
    # The port from the config, as the agent reads it.
    cfg = ag.workdir / "probe.toml"
    cfg.write_text(f"http_port = {ag.port}\n")
    assert run(["ping", "--config", str(cfg)], client_env(ag))[0] == 0
    rc, _, err = run(["ping", "--bogus"], client_env(ag))
    assert rc == 2 and "unknown argument `--bogus`" in err


def test_get_prints_what_scripts_want(agent, fake_upstream, tmp_path):
    fake_upstream.set_secret("db", "s3cr3t value")
    ag = agent(fake_upstream.url, env={"AWS_ENDPOINT_URL_SSM": fake_upstream.url})
    env = client_env(ag)
    port = ["--port", str(ag.port)]
    assert run(["get", "db", *port], env) == (0, b"s3cr3t value\n", "")
    rc, out, _ = run(["get", "db", "--json", *port], env)
    doc = json.loads(out)
    assert rc == 0 and doc["Name"] == "db" and doc["SecretString"] == "s3cr3t value"
    rc, out, _ = run(["get", "--parameter", "/app/host", *port], env)
    assert (rc, out) == (0, b"param-value-of-/app/host\n")

    # The token read from a file, as the agent itself can.
    token_file = tmp_path / "token"
    token_file.write_text(ag.token + "\n")
    assert run(["get", "db", *port], agent_env(token=f"file://{token_file}"))[0] == 0
    rc, _, err = run(["get", "db", *port], agent_env(token="wrong"))
    assert rc == 1 and err.strip() == "secrets-manager-agent: error: the agent answered 403: Bad Token", err
    assert "s3cr3t" not in err


def test_get_binary_secrets_and_errors(agent, fake_upstream):
    raw = bytes(range(256))
    fake_upstream.script("GetSecretValue", respond(200, {
        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:bin-AbCdEf", "Name": "bin",
        "VersionId": "v1", "SecretBinary": base64.b64encode(raw).decode(), "VersionStages": ["AWSCURRENT"],
        "CreatedDate": 1700000000}), secret="bin")
    fake_upstream.script("GetSecretValue", respond(400, {"__type": "ResourceNotFoundException",
                                                         "message": "Secrets Manager can't find it"}),
                         secret="gone")
    ag = agent(fake_upstream.url)
    env = client_env(ag)
    port = ["--port", str(ag.port)]
    assert run(["get", "bin", *port], env) == (0, raw, "")
    rc, out, err = run(["get", "gone", *port], env)
    assert rc == 1 and out == b""
    assert err.strip() == ("secrets-manager-agent: error: the agent answered 400: "
                           "ResourceNotFoundException: Secrets Manager can't find it"), err
