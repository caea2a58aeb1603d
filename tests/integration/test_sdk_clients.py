"""Real clients other than boto3 against the agent's SDK protocol, each configured
by the environment only: the AWS CLI v1 (`aws secretsmanager get-secret-value`,
`aws ssm get-parameter`, a missing secret's exit status and message), the AWS SDK
for JavaScript v3 (tests/js/sdk_client.mjs: GetSecretValue, GetParameter, a
missing secret), and AWS's Python caching library (aws-secretsmanager-caching):
its SecretCache over a boto3 client pointed at the agent reads a secret twice,
and after a rotation straight on moto and both caches' TTLs (the library's clock
and the agent's test clock moved, no sleeping) it reads the new value, through
DescribeSecret and GetSecretValue calls to the agent. Each client's output
through the agent equals the same client's output straight from moto."""

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, unique
from sdk_common import (
    agent_url,
    mod_agents,  # noqa: F401
    mod_proxy,  # noqa: F401
    no_upstream,
    sdk_clients,
    start_agent,
    subprocess_env,
    upstream_calls,
)

CLIENT_TIMEOUT = 60  # seconds for one CLI or node process
JS_DIR = REPO_ROOT / "tests" / "js"


@pytest.fixture(scope="module")
def ag(mod_agents, moto, mod_proxy):  # noqa: F811
    return start_agent(mod_agents, moto, mod_proxy)


@pytest.fixture
def proxy(mod_proxy):  # noqa: F811
    return mod_proxy


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def run(argv, env, cwd=None):
    p = subprocess.run(argv, check=False, env=env, cwd=cwd, capture_output=True, timeout=CLIENT_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


# --------------------------------------------------------------------------- AWS CLI


def aws_bin() -> Path:
    path = Path(sys.executable).parent / "aws"
    if not path.exists():
        pytest.fail(f"{path} not found: install tests/requirements.txt (awscli) into the venv (make venv)")
    return path


def aws(endpoint, creds, home, *args):
    env = subprocess_env(home, endpoint=endpoint, creds=creds)
    env["AWS_PAGER"] = ""
    return run([str(aws_bin()), *args, "--output", "json"], env)


def test_cli_get_secret_value(ag, moto, proxy, home):
    name = unique("cli")
    moto.client().create_secret(Name=name, SecretString='{"k":"cli value"}')
    calls = upstream_calls(proxy)
    rc, out, err = aws(agent_url(ag.port), moto.admin, home, "secretsmanager", "get-secret-value", "--secret-id", name)
    assert rc == 0, err
    assert calls.ops() == ["secretsmanager.GetSecretValue"]
    doc = json.loads(out)
    rc, direct, err = aws(moto.url, moto.admin, home, "secretsmanager", "get-secret-value", "--secret-id", name)
    assert rc == 0, err
    assert doc == json.loads(direct)
    assert doc["SecretString"] == '{"k":"cli value"}'
    assert isinstance(doc["CreatedDate"], (int, float)), "the CLI prints the epoch number it was sent"
    with no_upstream(proxy, "the CLI's second call"):
        rc, again, err = aws(agent_url(ag.port), moto.admin, home, "secretsmanager", "get-secret-value",
                             "--secret-id", name)
    assert rc == 0 and json.loads(again) == doc, err


def test_cli_get_parameter_with_decryption(ag, moto, proxy, home):
    name = "/cli/" + unique("p")
    moto.client("ssm").put_parameter(Name=name, Value="cli-secret", Type="SecureString")
    args = ("ssm", "get-parameter", "--name", name, "--with-decryption")
    rc, out, err = aws(agent_url(ag.port), moto.admin, home, *args)
    assert rc == 0, err
    rc, direct, err2 = aws(moto.url, moto.admin, home, *args)
    assert rc == 0, err2
    assert json.loads(out) == json.loads(direct)
    assert json.loads(out)["Parameter"]["Value"] == "cli-secret"
    with no_upstream(proxy, "the CLI's second get-parameter"):
        rc, again, err = aws(agent_url(ag.port), moto.admin, home, *args)
    assert rc == 0 and again == out, err


def test_cli_missing_secret(ag, moto, home):
    name = unique("cli-missing")
    rc, out, err = aws(agent_url(ag.port), moto.admin, home, "secretsmanager", "get-secret-value", "--secret-id", name)
    d_rc, _, d_err = aws(moto.url, moto.admin, home, "secretsmanager", "get-secret-value", "--secret-id", name)
    assert rc == d_rc == 255, (rc, d_rc, err)  # the v1 CLI's status for an error the service answered
    assert out == ""
    assert "An error occurred (ResourceNotFoundException) when calling the GetSecretValue operation" in err, err
    assert err.strip() == d_err.strip() or "can't find" in err, err


def test_cli_with_another_key_is_refused(ag, moto, home):
    rc, _, err = aws(agent_url(ag.port), moto.denied, home, "secretsmanager", "get-secret-value",
                     "--secret-id", unique("cli-denied"))
    assert rc == 255
    assert "(InvalidClientTokenId) when calling the GetSecretValue operation" in err, err


# --------------------------------------------------------------------------- JavaScript SDK v3


def node_bin() -> str:
    node = shutil.which("node")
    if not node:
        pytest.fail("node not found: the JavaScript SDK tests need Node.js 20+ (see .ci/run)")
    if not (JS_DIR / "node_modules" / "@aws-sdk" / "client-secrets-manager").is_dir():
        pytest.fail(f"{JS_DIR}/node_modules is missing: run `make js-deps` (npm ci in tests/js)")
    return node


def js(endpoint, creds, home, service, operation, params):
    env = subprocess_env(home, endpoint=endpoint, creds=creds)
    env["NODE_NO_WARNINGS"] = "1"
    rc, out, err = run([node_bin(), str(JS_DIR / "sdk_client.mjs"), service, operation, json.dumps(params)],
                       env, cwd=JS_DIR)
    assert rc in (0, 1), (rc, out, err)
    lines = out.strip().splitlines()
    assert len(lines) == 1, (out, err)
    return rc, json.loads(lines[0])


def test_js_get_secret_value(ag, moto, proxy, home):
    name = unique("js")
    moto.client().create_secret(Name=name, SecretString="from javascript")
    calls = upstream_calls(proxy)
    rc, got = js(agent_url(ag.port), moto.admin, home, "secretsmanager", "GetSecretValue", {"SecretId": name})
    assert (rc, got["ok"], got["httpStatusCode"]) == (0, True, 200), got
    assert calls.ops() == ["secretsmanager.GetSecretValue"]
    _, want = js(moto.url, moto.admin, home, "secretsmanager", "GetSecretValue", {"SecretId": name})
    assert got["output"] == want["output"]
    assert got["output"]["SecretString"] == "from javascript"
    with no_upstream(proxy, "the JavaScript SDK's second call"):
        rc, again = js(agent_url(ag.port), moto.admin, home, "secretsmanager", "GetSecretValue", {"SecretId": name})
    assert again == got


def test_js_get_parameter(ag, moto, proxy, home):
    name = "/js/" + unique("p")
    moto.client("ssm").put_parameter(Name=name, Value="js-secret", Type="SecureString")
    params = {"Name": name, "WithDecryption": True}
    rc, got = js(agent_url(ag.port), moto.admin, home, "ssm", "GetParameter", params)
    assert (rc, got["ok"]) == (0, True), got
    _, want = js(moto.url, moto.admin, home, "ssm", "GetParameter", params)
    assert got["output"] == want["output"]
    assert got["output"]["Parameter"]["Value"] == "js-secret"
    with no_upstream(proxy, "the JavaScript SDK's second GetParameter"):
        _, again = js(agent_url(ag.port), moto.admin, home, "ssm", "GetParameter", params)
    assert again == got


def test_js_missing_secret(ag, moto, home):
    name = unique("js-missing")
    rc, got = js(agent_url(ag.port), moto.admin, home, "secretsmanager", "GetSecretValue", {"SecretId": name})
    _, want = js(moto.url, moto.admin, home, "secretsmanager", "GetSecretValue", {"SecretId": name})
    assert rc == 1 and got["ok"] is False, got
    assert got["name"] == got["errorType"] == "ResourceNotFoundException", got
    assert got["httpStatusCode"] == want["httpStatusCode"], (got, want)


def test_js_missing_parameter(ag, moto, home):
    rc, got = js(agent_url(ag.port), moto.admin, home, "ssm", "GetParameter", {"Name": "/js/" + unique("missing")})
    assert rc == 1 and (got["name"], got["httpStatusCode"]) == ("ParameterNotFound", 400), got


# --------------------------------------------------------------------------- aws-secretsmanager-caching


class _LibraryClock(datetime.datetime):
    """datetime for the caching library's module, `offset` seconds ahead of now."""

    offset = 0.0

    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.now(tz) + datetime.timedelta(seconds=cls.offset)


def test_caching_library_sees_a_rotation_after_both_ttls(agent, moto, counting_proxy, monkeypatch):
    from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
    from aws_secretsmanager_caching.cache import items

    ttl = 60  # the agent's; moved past on its test clock, well within the 5-minute signing window
    refresh = 120  # the library's secret_refresh_interval (it refreshes after 60-120 s)
    ag = start_agent(agent, moto, counting_proxy, config={"ttl_seconds": ttl})
    name = unique("lib")
    v1 = moto.client().create_secret(Name=name, SecretString="before rotation")["VersionId"]

    monkeypatch.setattr(items, "datetime", _LibraryClock)
    monkeypatch.setattr(_LibraryClock, "offset", 0.0)
    client = sdk_clients(monkeypatch, agent_url(ag.port), moto.admin).sm
    cache = SecretCache(config=SecretCacheConfig(secret_refresh_interval=refresh), client=client)

    calls = upstream_calls(counting_proxy)
    assert cache.get_secret_string(name) == "before rotation"
    # The library asked the agent (DescribeSecret, then GetSecretValue of the version
    # it named), and the agent asked moto once for each.
    assert sorted(calls.ops()) == ["secretsmanager.DescribeSecret", "secretsmanager.GetSecretValue"]
    assert calls.bodies("secretsmanager.GetSecretValue")[0].get("VersionId") == v1
    with no_upstream(counting_proxy, "the library's second read"):
        assert cache.get_secret_string(name) == "before rotation"

    v2 = moto.client().put_secret_value(SecretId=name, SecretString="after rotation")["VersionId"]
    # Only the library's refresh interval passed: the agent's DescribeSecret is still fresh.
    monkeypatch.setattr(_LibraryClock, "offset", refresh + 1.0)
    with no_upstream(counting_proxy, "DescribeSecret within the agent's TTL"):
        assert cache.get_secret_string(name) == "before rotation"
    # Now the agent's TTL too.
    ag.advance(ttl + 1)
    monkeypatch.setattr(_LibraryClock, "offset", 2 * (refresh + 1.0))
    calls = upstream_calls(counting_proxy)
    assert cache.get_secret_string(name) == "after rotation"
    assert "secretsmanager.DescribeSecret" in calls.ops()
    assert [b for b in calls.bodies("secretsmanager.GetSecretValue")
            if b.get("SecretId") == name and b.get("VersionId") == v2], calls.bodies()
    with no_upstream(counting_proxy, "the library's read of the new value"):
        assert cache.get_secret_string(name) == "after rotation"
