"""Config file and start-up: good values start, bad values exit 1 naming the key."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASE_CONFIG, DUMMY_CREDS, agent_bin, free_port, toml_value, wait_until

BASE_TOML = "".join(f"{k} = {toml_value(v)}\n" for k, v in BASE_CONFIG.items())


def with_key(line: str) -> str:
    """BASE_CONFIG plus one raw TOML line (which replaces a base key of the same name)."""
    key = line.split("=")[0].strip()
    base = "".join(l for l in BASE_TOML.splitlines(True) if l.split("=")[0].strip() != key)
    return base + line + "\n"


def assert_starts(agent, fake_upstream, raw, env=None):
    ag = agent(fake_upstream.url, raw_config=raw, env=env)
    status, _, body = ag.get("/ping", token=False)
    assert (status, body) == (200, b"healthy")
    return ag


def assert_fails(agent, raw, *must_mention, env=None, upstream="http://127.0.0.1:9"):
    rc, out, err = agent.run_expect_exit(upstream, raw_config=raw, env=env)
    assert rc is not None, f"agent started although it should not have; stdout={out!r} stderr={err!r}"
    assert rc == 1, (rc, out, err)
    assert "listening on" not in out
    assert err.strip(), "expected a message on stderr"
    for word in must_mention:
        assert word.lower() in err.lower(), (word, err)
    return err


# ------------------------------------------------------------------ good values

GOOD = [
    "ttl_seconds = 0",
    "ttl_seconds = 3600",
    "ttl_seconds = 300",
    'ttl_seconds = "300"',
    "ttl_seconds = '300'",
    "cache_size = 1",
    "cache_size = 1000",
    'cache_size = "5"',
    "cache_size = '5'",
    "max_conn = 1",
    "max_conn = 1000",
    'max_conn = "7"',
    "max_conn = '7'",
    "http_port = 0",
    'http_port = "0"',
    'log_level = "DEBUG"',
    'log_level = "debug"',
    'log_level = "Info"',
    'log_level = "WARN"',
    'log_level = "warn"',
    'log_level = "ERROR"',
    'log_level = "NONE"',
    'log_level = "none"',
    "log_to_file = false",
    "log_to_file = true",
    'region = "eu-west-1"',
    'ssrf_headers = ["X-Custom-Token"]',
    'ssrf_headers = ["X-A", "X-B"]',
    'path_prefix = "/secrets/"',
    'path_prefix = "/"',
    "ignore_transient_errors = false",
    "ignore_transient_errors = true",
    "validate_credentials = false",
]


@pytest.mark.parametrize("line", GOOD)
def test_good_value_starts(agent, fake_upstream, line):
    assert_starts(agent, fake_upstream, with_key(line))


def test_specific_http_port(agent, fake_upstream):
    port = free_port()
    ag = assert_starts(agent, fake_upstream, with_key(f"http_port = {port}"))
    assert ag.port == port


def test_quoted_http_port(agent, fake_upstream):
    port = free_port()
    ag = assert_starts(agent, fake_upstream, with_key(f"http_port = '{port}'"))
    assert ag.port == port


def test_ssrf_env_variables(agent, fake_upstream):
    raw = with_key('ssrf_env_variables = ["MY_AGENT_TOKEN"]')
    ag = agent(fake_upstream.url, raw_config=raw, env={"AWS_TOKEN": None, "MY_AGENT_TOKEN": "custom-env-token"})
    status, _, body = ag.get("/v1/x", token=False, headers={"X-Aws-Parameters-Secrets-Token": "custom-env-token"})
    assert status == 200, body


def test_ssrf_env_variables_order(agent, fake_upstream):
    raw = with_key('ssrf_env_variables = ["FIRST_TOK", "SECOND_TOK"]')
    ag = agent(fake_upstream.url, raw_config=raw, env={"AWS_TOKEN": None, "SECOND_TOK": "second", "FIRST_TOK": "first"})
    status, _, _ = ag.get("/v1/x", token=False, headers={"X-Vault-Token": "first"})
    assert status == 200
    status, _, _ = ag.get("/v1/x", token=False, headers={"X-Vault-Token": "second"})
    assert status == 403


def test_credentials_file_path_accepted(agent, fake_upstream, tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
    assert_starts(agent, fake_upstream, with_key(f"credentials_file_path = {json.dumps(str(creds))}"))


def test_all_keys_together(agent, fake_upstream, tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
    raw = "\n".join([
        'log_level = "WARN"', "log_to_file = false", "http_port = 0", 'region = "us-east-1"',
        "ttl_seconds = 10", "cache_size = 10", 'ssrf_headers = ["X-T"]',
        'ssrf_env_variables = ["AWS_TOKEN"]', 'path_prefix = "/p/"', "max_conn = 10",
        "ignore_transient_errors = true", "validate_credentials = false",
        f"credentials_file_path = {json.dumps(str(creds))}",
    ]) + "\n"
    ag = agent(fake_upstream.url, raw_config=raw)
    status, _, body = ag.get("/p/all", token=False, headers={"X-T": ag.token})
    assert status == 200, body


def test_comments_and_whitespace(agent, fake_upstream):
    assert_starts(agent, fake_upstream, "# a comment\n\n" + BASE_TOML.replace(" = ", "   =   ") + "# end\n")


# ------------------------------------------------------------------ bad values

BAD = [
    # (line, words the stderr must contain)
    ("no_such_key = 1", ["no_such_key"]),
    ("ttl_seconds = 3601", ["ttl_seconds", "3600"]),
    ("ttl_seconds = -1", ["ttl_seconds"]),
    ('ttl_seconds = "abc"', ["ttl_seconds"]),
    ('ttl_seconds = "3601"', ["ttl_seconds", "3600"]),
    ("cache_size = 0", ["cache_size", "1000"]),
    ("cache_size = 1001", ["cache_size", "1000"]),
    ("max_conn = 0", ["max_conn", "1000"]),
    ("max_conn = 1001", ["max_conn", "1000"]),
    ("http_port = 80", ["http_port", "65535"]),
    ("http_port = 1023", ["http_port"]),
    ("http_port = 65536", ["http_port", "65535"]),
    ("http_port = -1", ["http_port"]),
    ('log_to_file = "yes"', ["log_to_file"]),
    ('validate_credentials = "no"', ["validate_credentials"]),
    ("ignore_transient_errors = 3", ["ignore_transient_errors"]),
    ("ssrf_headers = []", ["ssrf_headers"]),
    ("ssrf_env_variables = []", ["ssrf_env_variables"]),
    ('ssrf_headers = "X-Token"', ["ssrf_headers"]),
    ('path_prefix = "v1/"', ["path_prefix"]),
    ('path_prefix = ""', ["path_prefix"]),
    ('log_level = "VERBOSE"', ["log_level"]),
    ("log_level = 3", ["log_level"]),
    ("region = 5", ["region"]),
]


@pytest.mark.parametrize("line,words", BAD, ids=[b[0] for b in BAD])
def test_bad_value_fails(agent, line, words):
    assert_fails(agent, with_key(line), *words)


@pytest.mark.parametrize(
    "raw",
    ["this is not toml", "ttl_seconds = ", "[section\nx=1", "ttl_seconds = 1\nttl_seconds = 2\n", "\x00\x01binary"],
    ids=["words", "no-value", "bad-table", "duplicate-key", "binary"],
)
def test_not_toml_fails(agent, raw):
    assert_fails(agent, raw)


def test_missing_config_file_fails(agent, tmp_path):
    rc, out, err = agent.run_expect_exit(
        "http://127.0.0.1:9", args=["--config", str(tmp_path / "does-not-exist.toml")]
    )
    assert rc == 1, (rc, out, err)
    assert err.strip()


def test_missing_token_env_fails_naming_variables(agent):
    err = assert_fails(agent, BASE_TOML, env={"AWS_TOKEN": None})
    for var in ("AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        assert var in err, (var, err)


def test_missing_custom_token_env_fails(agent):
    err = assert_fails(agent, with_key('ssrf_env_variables = ["MY_TOKEN_VAR"]'))
    assert "MY_TOKEN_VAR" in err


def test_container_authorization_token_is_a_source(agent, fake_upstream):
    ag = agent(fake_upstream.url, raw_config=BASE_TOML,
               env={"AWS_TOKEN": None, "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-tok"})
    status, _, _ = ag.get("/v1/x", token=False, headers={"X-Aws-Parameters-Secrets-Token": "container-tok"})
    assert status == 200


def test_aws_token_wins_over_later_sources(agent, fake_upstream):
    ag = agent(fake_upstream.url, raw_config=BASE_TOML, token="first-tok",
               env={"AWS_CONTAINER_AUTHORIZATION_TOKEN": "later-tok"})
    assert ag.get("/v1/x", token=False, headers={"X-Vault-Token": "first-tok"})[0] == 200
    assert ag.get("/v1/x", token=False, headers={"X-Vault-Token": "later-tok"})[0] == 403


def test_file_token_source(agent, fake_upstream, tmp_path):
    tok_file = tmp_path / "token"
    tok_file.write_text("  file-token-value\n\n")
    ag = agent(fake_upstream.url, raw_config=BASE_TOML, token=f"file://{tok_file}")
    status, _, body = ag.get("/v1/x", token=False, headers={"X-Aws-Parameters-Secrets-Token": "file-token-value"})
    assert status == 200, body
    status, _, body = ag.get("/v1/x", token=False, headers={"X-Aws-Parameters-Secrets-Token": f"file://{tok_file}"})
    assert (status, body) == (403, b"Bad Token")


def test_file_token_source_missing_file_fails(agent, tmp_path):
    rc, out, err = agent.run_expect_exit("http://127.0.0.1:9", raw_config=BASE_TOML,
                                         token=f"file://{tmp_path / 'missing-token'}")
    assert rc == 1, (rc, out, err)
    assert err.strip()


def test_port_in_use_fails(agent, fake_upstream):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc, out, err = agent.run_expect_exit(fake_upstream.url, raw_config=with_key(f"http_port = {port}"))
    assert rc == 1, (rc, out, err)
    assert err.strip()


def test_bad_endpoint_fails(agent):
    rc, out, err = agent.run_expect_exit("not a url", raw_config=BASE_TOML)
    assert rc == 1, (rc, out, err)
    assert err.strip()


# ------------------------------------------------------------------ AWS 3.x layout


def layout_3x(port: int, extra: str = "") -> str:
    """A config as AWS's 3.x agent (aws-workload-credentials-provider) reads it."""
    return f"""
[logging]
log_level = "info"
log_to_file = false

[capabilities.secrets_manager]
enabled = true
http_port = {port}
region = "us-east-1"
path_prefix = "/v1/"
max_conn = 50
max_roles = 5
validate_credentials = false

[capabilities.secrets_manager.cache]
ttl_seconds = 0
cache_size = 10

[capabilities.secrets_manager.security]
ssrf_headers = ["X-My-Agent-Token"]
ssrf_env_variables = ["AWS_TOKEN"]

[capabilities.secrets_manager.prefetch]
cache_buffer_ratio = 0.5
max_jitter_seconds = 2
secrets = [{{ secret_id = "app/db" }}]

[[capabilities.secrets_manager.prefetch.filter_tags]]
key = "Team"
role_arn = "arn:aws:iam::123456789012:role/team/Reader"
{extra}"""


def test_3x_layout_starts_and_serves(agent, fake_upstream):
    port = free_port()
    ag = agent(fake_upstream.url, raw_config=layout_3x(port))
    assert ag.port == port
    # The nested ssrf_headers replaced the default header names.
    status, _, body = ag.get("/v1/three-x", token=False, headers={"X-My-Agent-Token": ag.token})
    assert status == 200, body
    status, _, _ = ag.get("/v1/three-x", token=False, headers={"X-Aws-Parameters-Secrets-Token": ag.token})
    assert status == 403
    # ttl_seconds = 0 from [capabilities.secrets_manager.cache]: no caching.
    before = fake_upstream.count("GetSecretValue", secret="three-x")
    status, _, _ = ag.get("/v1/three-x", token=False, headers={"X-My-Agent-Token": ag.token})
    assert status == 200
    assert fake_upstream.count("GetSecretValue", secret="three-x") == before + 1
    # ttl_seconds = 0 keeps nothing, so there is nothing to prefetch into: one
    # INFO line says so, and nothing is fetched at start.
    wait_until(lambda: "prefetch skipped" in ag.stderr, what="the INFO line")
    skipped = [l for l in ag.stderr.splitlines() if "prefetch skipped" in l]
    assert len(skipped) == 1, ag.stderr
    assert "INFO" in skipped[0] and "ttl_seconds = 0" in skipped[0], skipped
    assert "not implemented" not in ag.stderr
    assert fake_upstream.count("BatchGetSecretValue") == 0
    assert fake_upstream.count("GetSecretValue", secret="app/db") == 0


def test_3x_layout_with_acm_section_starts(agent, fake_upstream):
    acm = """
[capabilities.acm]
enabled = true

[[capabilities.acm.certificates]]
certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
certificate_path = "/etc/ssl/app.pem"
private_key_path = "/etc/ssl/app.key"
role_arn = "arn:aws:iam::123456789012:role/CertExport"
"""
    ag = agent(fake_upstream.url, raw_config=layout_3x(0, acm))
    # Logged before the listening line, but stderr is read by another thread.
    wait_until(lambda: "[capabilities.acm] is not read" in ag.stderr, what="the INFO line")


def test_sm_start_with_config_starts(agent, fake_upstream, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(layout_3x(0))
    ag = agent(fake_upstream.url, args=["sm", "start", "--config", str(cfg)])
    status, _, body = ag.get("/v1/via-sm-start", token=False, headers={"X-My-Agent-Token": ag.token})
    assert status == 200, body


def test_sm_start_with_flat_config_starts(agent, fake_upstream, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(BASE_TOML)
    ag = agent(fake_upstream.url, args=["sm", "start", "--config", str(cfg)])
    assert ag.get("/ping", token=False)[:3:2] == (200, b"healthy")


def test_enabled_false_exits_1_saying_why(agent):
    raw = "[capabilities.secrets_manager]\nenabled = false\nhttp_port = 0\n"
    err = assert_fails(agent, raw, "capabilities.secrets_manager.enabled", "without its Secrets Manager part")
    assert len(err.strip().splitlines()) == 1, err


def test_flat_key_and_nested_twin_exit_1_naming_both(agent):
    raw = BASE_TOML + "ttl_seconds = 30\n[capabilities.secrets_manager.cache]\nttl_seconds = 30\n"
    err = assert_fails(agent, raw, "`ttl_seconds`", "`capabilities.secrets_manager.cache.ttl_seconds`")
    assert len(err.strip().splitlines()) == 1, err


BAD_3X = [
    ("[capabilities.secrets_manager.cache]\nttl = 5\n", ["capabilities.secrets_manager.cache.ttl", "ttl_seconds"]),
    ("[capabilities.secrets_manager]\nport = 5\n", ["capabilities.secrets_manager.port", "http_port"]),
    ("[capabilities.ssm]\nenabled = true\n", ["capabilities.ssm", "parameter_store"]),
    ("[logging]\ndestination = \"file\"\n", ["logging.destination"]),
    ("[capabilities.secrets_manager.cache]\nttl_seconds = 3601\n", ["capabilities.secrets_manager.cache.ttl_seconds", "3600"]),
    ("[capabilities.secrets_manager]\nmax_roles = 21\n", ["capabilities.secrets_manager.max_roles", "20"]),
    ("[capabilities.secrets_manager.prefetch]\ncache_buffer_ratio = 2.0\n",
     ["capabilities.secrets_manager.prefetch.cache_buffer_ratio", "0.1"]),
    ('[[capabilities.secrets_manager.prefetch.secrets]]\nsecret_id = "a"\nrole_arn = "not-an-arn"\n',
     ["capabilities.secrets_manager.prefetch.secrets[0].role_arn", "arn:"]),
]


@pytest.mark.parametrize("raw,words", BAD_3X, ids=[b[1][0] for b in BAD_3X])
def test_bad_3x_key_fails_naming_its_path(agent, raw, words):
    err = assert_fails(agent, BASE_TOML + raw, *words)
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------ command line


def _run(args, timeout=10):
    return subprocess.run([str(agent_bin())] + args, capture_output=True, timeout=timeout,
                          env={"PATH": os.environ.get("PATH", "")}, stdin=subprocess.DEVNULL)


def test_version():
    r = _run(["--version"])
    assert r.returncode == 0
    assert r.stdout.decode().strip() == "secrets-manager-agent 0.1.0"


def test_help():
    r = _run(["--help"])
    assert r.returncode == 0
    assert "--config" in (r.stdout + r.stderr).decode()


def test_bad_usage_exits_2():
    r = _run(["--no-such-flag"])
    assert r.returncode == 2, r
    assert r.stderr.strip()


@pytest.mark.parametrize("args", [["sm"], ["sm", "stop"], ["sm", "start", "now"], ["acm", "start"]])
def test_other_3x_commands_exit_2_naming_sm_start(args):
    r = _run(args)
    assert r.returncode == 2, r
    assert "sm start [--config FILE]" in r.stderr.decode(), r.stderr


def test_help_names_sm_start():
    assert "sm start [--config FILE]" in _run(["--help"]).stdout.decode()


# ------------------------------------------------------------------ isolated (network namespace)


def run_in_netns(tmp_path, config, env, sts="ok", requests=(), start_timeout=10):
    if shutil.which("unshare") is None:
        pytest.skip("unshare not available")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr!r}")
    spec = {
        "agent": str(agent_bin()),
        "cwd": str(tmp_path),
        "config": config,
        "env": {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_CONFIG_FILE": str(tmp_path / "none"), **env},
        "sts": sts,
        "requests": [list(r) for r in requests],
        "start_timeout": start_timeout,
    }
    helper = Path(__file__).with_name("netns_helper.py")
    r = subprocess.run(["unshare", "-n", sys.executable, str(helper), json.dumps(spec)],
                       capture_output=True, timeout=start_timeout + 60)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


NETNS_ENV = {
    "AWS_TOKEN": "ns-token",
    "AWS_ACCESS_KEY_ID": DUMMY_CREDS[0],
    "AWS_SECRET_ACCESS_KEY": DUMMY_CREDS[1],
    "AWS_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": "{FAKE}",
    "AWS_ENDPOINT_URL_STS": "{FAKE}",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER": "{FAKE}",
    "AWS_EC2_METADATA_DISABLED": "true",
}
TOKEN_HDR = {"X-Aws-Parameters-Secrets-Token": "ns-token"}


def test_empty_config_file_means_defaults(tmp_path):
    """Empty file: port 2773, log file under ./logs, credentials validated with STS."""
    res = run_in_netns(tmp_path, "", NETNS_ENV, requests=[("/ping", {}), ("/v1/dflt", TOKEN_HDR)])
    assert res["port"] == 2773, res
    assert res["responses"][0] == [200, "healthy"], res
    assert res["responses"][1][0] == 200, res
    assert json.loads(res["responses"][1][1])["SecretString"] == "value-of-dflt"
    assert res["sts_calls"] >= 1, "validate_credentials defaults to true"
    log = tmp_path / "logs" / "secrets_manager_agent.log"
    assert log.exists(), "log_to_file defaults to true"


def test_no_config_argument_means_defaults(tmp_path):
    res = run_in_netns(tmp_path, None, NETNS_ENV, requests=[("/ping", {})])
    assert res["port"] == 2773, res
    assert res["responses"][0] == [200, "healthy"], res


def test_validate_credentials_rejects_bad_credentials(tmp_path):
    res = run_in_netns(tmp_path, "http_port = 0\nlog_to_file = false\n", NETNS_ENV, sts="deny")
    assert res["port"] is None, res
    assert res["rc"] == 1, res
    assert res["sts_calls"] >= 1
    assert res["stderr"].strip()


def test_validate_credentials_false_skips_sts(tmp_path):
    res = run_in_netns(tmp_path, "http_port = 0\nlog_to_file = false\nvalidate_credentials = false\n",
                       NETNS_ENV, sts="deny", requests=[("/ping", {})])
    assert res["port"], res
    assert res["sts_calls"] == 0


def test_no_region_fails(tmp_path):
    env = {k: v for k, v in NETNS_ENV.items() if k != "AWS_REGION"}
    res = run_in_netns(tmp_path, "http_port = 0\nlog_to_file = false\nvalidate_credentials = false\n", env)
    assert res["port"] is None, res
    assert res["rc"] == 1, res
    assert "region" in res["stderr"].lower(), res


def test_no_credentials_is_500_internal_failure_naming_the_sources(tmp_path):
    """No source has credentials: 500 `InternalFailure` (as AWS's agents answer), its
    message naming every source tried."""
    env = {k: v for k, v in NETNS_ENV.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    res = run_in_netns(tmp_path, "http_port = 0\nlog_to_file = false\nvalidate_credentials = false\n", env,
                       requests=[("/v1/nocreds", TOKEN_HDR)])
    assert res["port"], res
    status, body = res["responses"][0]
    assert status == 500, res
    error = json.loads(body)
    assert error["__type"] == "InternalFailure"
    assert "AWS_ACCESS_KEY_ID" in error["message"], error
    assert res["sm_calls"] == 0


def test_config_with_only_http_port(tmp_path):
    """Every other key at its default (log file on, credentials validated)."""
    res = run_in_netns(tmp_path, "http_port = 0\n", NETNS_ENV, requests=[("/ping", {}), ("/v1/only-port", TOKEN_HDR)])
    assert res["port"] and res["port"] != 2773, res
    assert res["responses"][0] == [200, "healthy"], res
    assert res["responses"][1][0] == 200, res
    assert (tmp_path / "logs" / "secrets_manager_agent.log").exists()
