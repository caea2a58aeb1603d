"""Credential sources and the region chain, end to end (issue 3).

For each source the real binary runs with only that source available and fetches a
secret from moto with IAM signature checking on.  The fake IMDS / container / STS
endpoints (fake_metadata.py) hand out *real* temporary credentials minted with moto's
STS AssumeRole (signed by the moto admin key): moto's auth mode accepts an ASIA key
only together with its exact session token, and rejects an IAM user (AKIA) key that
comes with any session token, so the fakes cannot just hand out the admin key.

Only loopback addresses are used.  Tests that need other addresses (169.254.170.2 for
AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, a forbidden container host, the default IMDS
address) run the agent inside ``unshare -n`` (a network namespace with only ``lo``),
reaching moto through a unix-socket bridge.
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    BASE_CONFIG,
    DUMMY_CREDS,
    _stop,
    agent_bin,
    free_port,
    toml_value,
    unique,
    wait_for_port,
    wait_until,
)
from fake_metadata import (
    FakeContainer,
    FakeIMDS,
    FakeSTS,
    RecordingProxy,
    UnixBridge,
    auth_scope,
    sts_credentials,
)

NO_ENV_CREDS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNtYSJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6c21hIn0.c2lnbmF0dXJl"


def closed_url():
    return f"http://127.0.0.1:{free_port()}"


# --------------------------------------------------------------------------- moto roles


class MotoIAM:
    """Roles in the signature-checking moto, and a minter of temporary credentials."""

    def __init__(self, moto):
        import boto3

        self.moto = moto
        kw = dict(endpoint_url=moto.url, region_name="us-east-1",
                  aws_access_key_id=moto.admin[0], aws_secret_access_key=moto.admin[1])
        iam = boto3.client("iam", **kw)
        self.sts = boto3.client("sts", **kw)
        self.lock = threading.Lock()
        admin_arn = iam.get_user(UserName="admin")["User"]["Arn"]
        allow = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["secretsmanager:*", "sts:*"], "Resource": "*"}]})
        sfx = unique("r")

        def role(name, trust):
            arn = iam.create_role(RoleName=f"{name}-{sfx}", AssumeRolePolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [trust]}))["Role"]["Arn"]
            iam.put_role_policy(RoleName=f"{name}-{sfx}", PolicyName="sm", PolicyDocument=allow)
            return arn

        # what the fakes hand out: assumed by the admin user
        self.role_arn = role("sma", {"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"})
        # profile role_arn + source_profile: the admin user, with an external id (moto checks
        # a wrong ExternalId; it lets a missing one through)
        self.ext_role_arn = role("sma-ext", {
            "Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": "sma-ext-id"}}})
        # role chaining from the fakes' assumed-role credentials (moto matches principals
        # exactly, so "*" is the simple way to trust an assumed-role session)
        self.chain_role_arn = role("sma-chain", {"Effect": "Allow", "Principal": {"AWS": "*"},
                                                 "Action": "sts:AssumeRole"})

    def mint(self, role_arn=None):
        with self.lock:
            c = self.sts.assume_role(RoleArn=role_arn or self.role_arn, RoleSessionName="sma-fake")["Credentials"]
        return c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]


@pytest.fixture(scope="module")
def iam(moto):
    return MotoIAM(moto)


@pytest.fixture
def secret(moto):
    """A fresh secret in the signature-checking moto: (name, value)."""
    name, value = unique("cred"), "value-" + unique("v")
    moto.client().create_secret(Name=name, SecretString=value)
    return name, value


class Fakes:
    def __init__(self):
        self.made = []

    def _keep(self, x):
        self.made.append(x)
        return x

    def imds(self, **kw):
        return self._keep(FakeIMDS(**kw))

    def container(self, **kw):
        return self._keep(FakeContainer(**kw))

    def sts(self, **kw):
        return self._keep(FakeSTS(**kw))

    def proxy(self, port):
        return self._keep(RecordingProxy(port))

    def close(self):
        for x in reversed(self.made):
            try:
                x.close()
            except Exception:
                pass


@pytest.fixture
def fakes():
    f = Fakes()
    yield f
    f.close()


def imds_env(imds):
    return {"AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}


def container_env(c, token=None, token_file=None):
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": c.url + c.path}
    if token is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
    if token_file is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(token_file)
    return env


def creds_error(status, body) -> str:
    assert status == 500, (status, body)
    doc = json.loads(body)
    assert doc["__type"] == "InternalFailure", doc
    assert isinstance(doc["message"], str) and doc["message"]
    return doc["message"]


def log_of(ag) -> str:
    return ag.stdout + ag.stderr


def warn_lines(ag, needle):
    return [ln for ln in log_of(ag).splitlines() if "WARN" in ln and needle.lower() in ln.lower()]


def amz_epoch(headers) -> float:
    return calendar.timegm(time.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))


def poll_secret(ag, name, seconds, interval=0.25, stop=None):
    """GET the secret repeatedly for `seconds`, or until stop() is true (then once more,
    so that a background refresh has been used at least once). [(t, status, body)]."""
    out = []
    end = time.monotonic() + seconds
    extra = 0
    while time.monotonic() < end:
        st, _, body = ag.secret(name, timeout=30)
        out.append((time.time(), st, body))
        if stop and stop():
            extra += 1
            if extra > 1:
                break
        time.sleep(interval)
    return out


def assert_all_ok(results, value):
    bad = [(round(t, 2), st, body[:300]) for t, st, body in results if st != 200]
    assert not bad, bad
    for _, _, body in results:
        assert json.loads(body)["SecretString"] == value


def assert_signed_with_served(proxy, src, min_keys=1):
    """Every GetSecretValue moto saw was signed with credentials the fake handed out,
    with their session token, and before they expired."""
    sm = proxy.ops("GetSecretValue")
    assert sm
    by_akid = {s["akid"]: s for s in src.served}
    used = set()
    for e in sm:
        akid = auth_scope(e["headers"])[0]
        assert akid in by_akid, (akid, list(by_akid))
        s = by_akid[akid]
        assert e["headers"].get("x-amz-security-token") == s["token"]
        assert amz_epoch(e["headers"]) < s["expiration"], "signed with expired credentials"
        assert e["status"] == 200, e["response"][:300]
        used.add(akid)
    assert len(used) >= min_keys, (used, len(src.served))
    return used


def assert_secrets_not_logged(ag, *values):
    text = log_of(ag)
    for v in values:
        if v:
            assert v not in text, "a credential secret/token reached the log"


# =========================================================================== IMDS


def test_imds_v2_fetches_secret_signed(agent, moto, iam, secret, fakes):
    name, value = secret
    imds = fakes.imds(creds_fn=iam.mint)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"log_level": "DEBUG"}, env={**NO_ENV_CREDS, **imds_env(imds)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value

    puts = imds.token_puts()
    assert puts, "no PUT /latest/api/token"
    assert puts[0]["headers"].get("x-aws-ec2-metadata-token-ttl-seconds") == "21600"
    assert "x-forwarded-for" not in puts[0]["headers"]
    assert imds.calls[0]["kind"] == "token", "the token comes before any GET"
    gets = imds.gets()
    paths = [g["path"] for g in gets]
    assert "/latest/meta-data/iam/security-credentials/" in paths or \
        "/latest/meta-data/iam/security-credentials" in paths, paths
    assert f"/latest/meta-data/iam/security-credentials/{imds.role}" in paths, paths
    assert all(g["token_state"] == "valid" for g in gets), [(g["path"], g["token_state"]) for g in gets]
    assert_signed_with_served(proxy, imds)
    assert_secrets_not_logged(ag, imds.served[0]["secret"], imds.served[0]["token"])


def test_imds_401_fetches_new_token_and_retries(agent, moto, iam, secret, fakes):
    """A GET answered 401 (token no longer valid) makes the agent get a new token."""
    name, value = secret
    imds = fakes.imds(creds_fn=iam.mint, lifetime=4)
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **imds_env(imds)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    imds.invalidate_tokens()  # e.g. the instance was stopped and started
    results = poll_secret(ag, name, 12, stop=lambda: imds.served_count() >= 2)
    assert_all_ok(results, value)
    assert imds.served_count() >= 2, "credentials were not refreshed"
    assert len(imds.token_puts()) >= 2
    for g in imds.gets():
        if g["status"] == 200:
            assert g["token_state"] == "valid"
    calls = imds.requests()
    rejected = [i for i, c in enumerate(calls) if c["status"] == 401]
    assert rejected, "the agent should have kept its token (TTL 21600 s) and met the 401"
    for i in rejected:
        assert calls[i + 1]["kind"] == "token", [(c["method"], c["path"], c["status"]) for c in calls]


@pytest.mark.parametrize("put_status", [403, 404, 405])
def test_imds_v1_fallback_on_put_403_404_405(agent, moto, iam, secret, fakes, put_status):
    name, value = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode=put_status)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value
    assert imds.token_puts(), "IMDSv2 must be tried first"
    gets = imds.gets()
    assert gets and all(g["token_state"] == "none" for g in gets)
    assert warn_lines(ag, "IMDSv1"), log_of(ag)[-3000:]


def test_imds_v1_disabled_no_fallback(agent, iam, secret, fakes, moto):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode=403)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds), "AWS_EC2_METADATA_V1_DISABLED": "true"})
    msg = creds_error(*ag.secret(name)[::2])
    assert "imds" in msg.lower(), msg
    assert imds.token_puts()
    assert imds.gets() == [], "IMDSv1 used although AWS_EC2_METADATA_V1_DISABLED=true"


def test_imds_put_500_no_fallback(agent, iam, secret, fakes, moto):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode=500)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    msg = creds_error(*ag.secret(name)[::2])
    assert "imds" in msg.lower(), msg
    assert imds.gets() == [], "IMDSv1 fallback on a 500"


def test_imds_put_timeout_mentions_hop_limit_no_fallback(agent, iam, secret, fakes, moto):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode="hang")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name, timeout=40)[::2])
    assert time.monotonic() - t0 < 20
    assert "hop limit" in msg.lower(), msg
    assert imds.gets() == [], "IMDSv1 fallback after a token timeout"


def test_imds_no_role_attached(agent, fakes, moto, secret):
    name, _ = secret
    imds = fakes.imds(creds_fn=None)  # security-credentials/ -> 404
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    msg = creds_error(*ag.secret(name)[::2])
    assert "imds" in msg.lower(), msg


def test_imds_disabled_is_not_contacted(agent, iam, fakes, moto, secret):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds), "AWS_EC2_METADATA_DISABLED": "true"})
    creds_error(*ag.secret(name)[::2])
    assert imds.count() == 0


# =========================================================================== container


def test_container_full_uri_with_token(agent, moto, iam, secret, fakes):
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, expected_auth="Basic c21hOnRva2Vu")
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"log_level": "DEBUG"},
               env={**NO_ENV_CREDS, **container_env(c, token="Basic c21hOnRva2Vu")})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value
    assert c.count() >= 1
    assert all(r["method"] == "GET" and r["path"] == "/creds" for r in c.requests())
    assert set(c.auths()) == {"Basic c21hOnRva2Vu"}
    assert_signed_with_served(proxy, c)
    assert_secrets_not_logged(ag, c.served[0]["secret"], c.served[0]["token"], "Basic c21hOnRva2Vu")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "[::1]"])
def test_container_full_uri_other_loopback_hosts(agent, moto, iam, secret, fakes, host):
    bind = {"localhost": "127.0.0.1", "127.0.0.2": "127.0.0.2", "[::1]": "::1"}[host]
    try:
        c = fakes.container(creds_fn=iam.mint, host=bind)
    except OSError as e:
        pytest.skip(f"cannot listen on {bind}: {e}")
    ag = agent(moto.url, env={**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://{host}:{c.port}/creds"})
    get_ok(ag, secret)
    assert c.served_count() == 1


def test_container_without_authorization(agent, moto, iam, secret, fakes):
    name, value = secret
    c = fakes.container(creds_fn=iam.mint)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert c.auths() == [None]


def test_container_token_file_is_reread_on_every_call(agent, moto, iam, secret, fakes, tmp_path):
    """AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE wins over AWS_CONTAINER_AUTHORIZATION_TOKEN
    and is read again at each refresh (EKS Pod Identity rotates it)."""
    name, value = secret
    tok = tmp_path / "eks-pod-identity-token"
    tok.write_text("token-A")
    c = fakes.container(creds_fn=iam.mint, expected_auth="token-A", lifetime=4)
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **container_env(c, token="env-token-loses", token_file=tok)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert c.auths() == ["token-A"]
    tok.write_text("token-B")
    c.expected_auth = "token-B"  # the old token is no longer accepted
    results = poll_secret(ag, name, 12, stop=lambda: c.served_count() >= 2)
    assert_all_ok(results, value)
    assert c.served_count() >= 2, c.auths()
    auths = c.auths()
    assert "token-B" in auths and "env-token-loses" not in auths, auths
    assert [a for a in auths if a == "token-A"] == ["token-A"], auths


def test_container_wrong_token_is_credentials_error(agent, moto, iam, secret, fakes):
    name, _ = secret
    c = fakes.container(creds_fn=iam.mint, expected_auth="right")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c, token="wrong")})
    msg = creds_error(*ag.secret(name)[::2])
    assert "container" in msg.lower(), msg
    assert c.count() >= 1 and c.served_count() == 0


def test_container_5xx_is_retried(agent, moto, iam, secret, fakes):
    name, value = secret
    c = fakes.container(creds_fn=iam.mint)
    c.script(500, 503)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name, timeout=40)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value
    assert [r["status"] for r in c.requests()] == [500, 503, 200]


def test_container_timeout_is_bounded(agent, moto, iam, secret, fakes):
    name, _ = secret
    c = fakes.container(creds_fn=iam.mint)
    c.go_down("hang")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c)})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name, timeout=60)[::2])
    took = time.monotonic() - t0
    assert "container" in msg.lower(), msg
    assert 4 <= took < 25, f"container timeout is 5 s per attempt; took {took:.1f}s"


def test_single_refresh_while_others_keep_using_current_credentials(agent, moto, iam, secret, fakes):
    """Eight clients hammer the agent while a slow (2 s) refresh is under way: the
    source is called once per refresh, and the other requests are not held up."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, lifetime=6)
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    c.delay = 2.0  # every later credentials answer is slow (refresh at ~3 s, done before the expiry)
    results, lock = [], threading.Lock()
    end = time.monotonic() + 6.5

    def client():
        while time.monotonic() < end:
            t0 = time.monotonic()
            st, _, body = ag.secret(name, timeout=30)
            with lock:
                results.append((st, time.monotonic() - t0, body))
            time.sleep(0.1)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    bad = [(st, b[:200]) for st, _, b in results if st != 200]
    assert not bad, bad
    assert c.served_count() >= 2, "no refresh happened"
    assert c.count() == c.served_count() <= 3, f"{c.count()} calls to the source: refresh stampede?"
    slow = [round(d, 2) for st, d, _ in results if d > 1.2]
    assert len(slow) <= c.served_count() - 1, f"requests held up by the refresh: {slow}"


def test_failed_source_is_retried_at_most_every_retry_interval(agent, moto, iam, secret, fakes):
    """SMA_CREDENTIALS_RETRY_SECS default 10: a source that fails (500) during the grace
    period is not hammered by every request."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, lifetime=3, down_after=1, down_mode="error")
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **container_env(c), "SMA_CREDENTIALS_GRACE_SECS": "60"})
    results = poll_secret(ag, name, 8, interval=0.2)
    assert_all_ok(results, value)
    failed_calls = [r for r in c.requests() if r.get("outage") == "error"]
    assert failed_calls, "the source was never asked again"
    assert len(failed_calls) <= 6, f"{len(failed_calls)} calls to a failing source within 8 s"


def test_metadata_calls_bypass_http_proxy(agent, moto, iam, secret, fakes):
    """HTTP_PROXY must not carry container or IMDS traffic."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint)
    imds = fakes.imds(region="us-east-1")  # asked for the region (config has none); moto's secrets are per region
    fwd = fakes.proxy(moto.port)  # also a forward proxy to loopback targets
    env = {**NO_ENV_CREDS, **container_env(c), **imds_env(imds),
           "HTTP_PROXY": fwd.url, "http_proxy": fwd.url, "NO_PROXY": None, "no_proxy": None}
    ag = agent(moto.url, config={"region": None}, env=env)
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert c.served_count() >= 1
    assert imds.region_gets()
    meta_ports = (f":{c.port}", f":{imds.port}")
    leaked = [e["path"] for e in fwd.ops()
              if "/creds" in e["path"] or "/latest/" in e["path"] or e["path"].endswith(meta_ports)]
    assert not leaked, leaked
    # the proxy settings were in effect: Secrets Manager traffic went through the proxy
    assert [e for e in fwd.ops() if e["via_proxy"]], "HTTP_PROXY ignored altogether?"


# --------------------------------------------------------------- container: network namespace


def netns_available():
    if shutil.which("unshare") is None:
        return "unshare not available"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr!r}"
    return None


def run_netns(tmp_path, env, servers=(), addresses=(), requests=(), moto=None, config=None, start_timeout=10):
    why = netns_available()
    if why:
        pytest.skip(why)
    bridge = None
    sockdir = tempfile.mkdtemp(prefix="sma", dir="/tmp")  # unix socket paths must stay short
    try:
        spec_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(tmp_path),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_TOKEN": "ns-token", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": "{SM}", "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9",
        }
        for k, v in env.items():
            if v is None:
                spec_env.pop(k, None)
            else:
                spec_env[k] = v
        if moto is not None:
            bridge = UnixBridge(os.path.join(sockdir, "sm"), moto.port)
        elif spec_env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER") == "{SM}":
            spec_env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://127.0.0.1:9"
        cfg = dict(BASE_CONFIG, **(config or {}))
        spec = {
            "agent": str(agent_bin()), "cwd": str(tmp_path), "env": spec_env,
            "config": "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items() if v is not None),
            "bridge": bridge.path if bridge else None, "addresses": list(addresses),
            "servers": list(servers), "requests": [list(r) for r in requests], "start_timeout": start_timeout,
        }
        helper = Path(__file__).with_name("fake_metadata.py")
        r = subprocess.run(["unshare", "-n", sys.executable, str(helper), json.dumps(spec)],
                           capture_output=True, timeout=start_timeout + 90)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        return json.loads(r.stdout)
    finally:
        if bridge:
            bridge.close()
        shutil.rmtree(sockdir, ignore_errors=True)


NS_HDR = {"X-Aws-Parameters-Secrets-Token": "ns-token"}


def ns_calls(res):
    return [[(c["method"], c["path"], c.get("token_state"), c["status"]) for c in s["calls"]] for s in res["servers"]]


def need_address(res, addr):
    ok, err = res["addresses"][addr]
    if not ok:
        pytest.skip(f"cannot add {addr} to lo in the namespace: {err}")


def test_container_relative_uri_uses_169_254_170_2(tmp_path, moto, iam, secret):
    name, value = secret
    creds = [list(iam.mint()), list(iam.mint())]
    res = run_netns(
        tmp_path,
        {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/sma-task-id"},
        servers=[{"kind": "container", "host": "169.254.170.2", "port": 80, "path": "/v2/credentials/sma-task-id",
                  "creds": creds}],
        addresses=["169.254.170.2/32"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "169.254.170.2/32")
    assert res["port"], res["stderr"][-3000:]
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:])
    assert json.loads(body)["SecretString"] == value
    calls = res["servers"][0]["calls"]
    assert calls and all(c["path"] == "/v2/credentials/sma-task-id" for c in calls)


@pytest.mark.parametrize("host,port,uri", [
    ("192.0.2.1", 80, "http://192.0.2.1/creds"),
    ("169.254.170.3", 8080, "http://169.254.170.3:8080/creds"),
    ("192.0.2.1", 80, "http://127.0.0.1@192.0.2.1/creds"),
    ("192.0.2.1", 80, "http://[::ffff:192.0.2.1]/creds"),
], ids=["test-net", "link-local-not-allowed", "userinfo-trick", "ipv4-mapped-ipv6"])
def test_container_full_uri_forbidden_host_refused_before_connecting(tmp_path, host, port, uri):
    """Inside a namespace the forbidden host is a trap on lo that counts connections."""
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": uri},
        servers=[{"kind": "trap", "host": host, "port": port}],
        addresses=[f"{host}/32"], requests=[("/v1/anything", NS_HDR)])
    need_address(res, f"{host}/32")
    assert res["port"], res["stderr"][-3000:]
    status, body, seconds = res["responses"][0]
    msg = creds_error(status, body)
    assert host in msg or uri.split("/")[2] in msg, msg
    assert seconds < 1.5, f"not refused at once ({seconds:.2f}s)"
    assert res["servers"][0]["connections"] == 0, "the agent connected to a forbidden container host"


@pytest.mark.parametrize("addr,host", [("169.254.170.23/32", "169.254.170.23"), ("fd00:ec2::23/128", "[fd00:ec2::23]")],
                         ids=["ipv4", "ipv6"])
def test_container_eks_pod_identity_endpoint(tmp_path, moto, iam, secret, addr, host):
    """EKS Pod Identity: FULL_URI on 169.254.170.23 / [fd00:ec2::23], token from a file."""
    name, value = secret
    tok = tmp_path / "eks-pod-identity-token"
    tok.write_text("eks-pod-identity-token-value")
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://{host}/v1/credentials",
                   "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tok)},
        servers=[{"kind": "container", "host": addr.split("/")[0], "port": 80, "path": "/v1/credentials",
                  "auth": "eks-pod-identity-token-value", "creds": [list(iam.mint())]}],
        addresses=[addr], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, addr)
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:], ns_calls(res))
    assert json.loads(body)["SecretString"] == value
    assert [c["auth"] for c in res["servers"][0]["calls"]] == ["eks-pod-identity-token-value"]


def test_container_relative_uri_beats_full_uri(tmp_path, moto, iam, secret):
    name, value = secret
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/rel",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://{S1}/creds"},
        servers=[{"kind": "container", "host": "169.254.170.2", "port": 80, "path": "/v2/credentials/rel",
                  "creds": [list(iam.mint())]},
                 {"kind": "trap", "host": "127.0.0.1", "port": 0}],
        addresses=["169.254.170.2/32"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "169.254.170.2/32")
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:])
    assert res["servers"][1]["connections"] == 0


def test_container_full_uri_https_any_host_is_allowed(tmp_path):
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": "https://192.0.2.1/creds"},
        servers=[{"kind": "trap", "host": "192.0.2.1", "port": 443}],
        addresses=["192.0.2.1/32"], requests=[("/v1/anything", NS_HDR)])
    need_address(res, "192.0.2.1/32")
    status, body, _ = res["responses"][0]
    creds_error(status, body)  # the trap is no TLS server
    assert res["servers"][0]["connections"] >= 1, "https endpoints are allowed on any host"


def test_imds_default_endpoint_169_254_169_254(tmp_path, moto, iam, secret):
    name, value = secret
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_EC2_METADATA_DISABLED": None},
        servers=[{"kind": "imds", "host": "169.254.169.254", "port": 80, "creds": [list(iam.mint())]}],
        addresses=["169.254.169.254/32"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "169.254.169.254/32")
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:], ns_calls(res))
    assert json.loads(body)["SecretString"] == value


def test_imds_ipv6_endpoint_mode(tmp_path, moto, iam, secret):
    name, value = secret
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"},
        servers=[{"kind": "imds", "host": "fd00:ec2::254", "port": 80, "creds": [list(iam.mint())]}],
        addresses=["fd00:ec2::254/128"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "fd00:ec2::254/128")
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:], ns_calls(res))
    assert json.loads(body)["SecretString"] == value


# =========================================================================== web identity


def start_moto_server(logdir, auth_calls=None):
    moto_bin = Path(sys.executable).parent / "moto_server"
    if not moto_bin.exists():
        pytest.skip(f"{moto_bin} not found")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("AWS_") or k.lower().endswith("_proxy"))}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    if auth_calls is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_calls)
    out = open(Path(logdir) / "moto.log", "wb")
    proc = subprocess.Popen([str(moto_bin), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, 60)
    except Exception:
        _stop(proc)
        out.close()
        raise
    return proc, port, out


class NoAuthMoto:
    def __init__(self, port):
        import boto3

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        kw = dict(endpoint_url=self.url, region_name="us-east-1",
                  aws_access_key_id=DUMMY_CREDS[0], aws_secret_access_key=DUMMY_CREDS[1])
        self.sm = boto3.client("secretsmanager", **kw)
        iam = boto3.client("iam", **kw)
        self.role_arn = iam.create_role(RoleName="sma-web-identity", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": "oidc.example"},
                                                    "Action": "sts:AssumeRoleWithWebIdentity"}]}))["Role"]["Arn"]


@pytest.fixture(scope="module")
def moto_noauth(tmp_path_factory):
    """A second moto WITHOUT signature checking: its AssumeRoleWithWebIdentity (which is
    unsigned by design) fails with a 500 once moto checks signatures."""
    proc, port, out = start_moto_server(tmp_path_factory.mktemp("moto-noauth"))
    try:
        yield NoAuthMoto(port)
    finally:
        _stop(proc)
        out.close()


def check_web_identity_exchange(proxy, role_arn, token, session_name=None):
    ex = proxy.ops("AssumeRoleWithWebIdentity")
    assert ex, [e["op"] for e in proxy.ops()]
    from urllib.parse import parse_qs

    p = {k: v[0] for k, v in parse_qs(ex[0]["body"].decode()).items()}
    assert p["RoleArn"] == role_arn
    assert p["WebIdentityToken"] == token
    assert p.get("Version") == "2011-06-15"
    if session_name:
        assert p["RoleSessionName"] == session_name
    else:
        assert p.get("RoleSessionName")
    assert "authorization" not in ex[0]["headers"], "AssumeRoleWithWebIdentity must be unsigned"
    assert ex[0]["status"] == 200, ex[0]["response"][:500]
    issued = sts_credentials(ex[-1]["response"])
    sm = proxy.ops("GetSecretValue")
    assert sm
    last = sm[-1]["headers"]
    assert auth_scope(last)[0] == issued["AccessKeyId"]
    assert last.get("x-amz-security-token") == issued["SessionToken"]


def test_web_identity_env_with_moto_sts(agent, moto_noauth, fakes, tmp_path):
    name = unique("wi")
    moto_noauth.sm.create_secret(Name=name, SecretString="web-identity-value")
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT)
    proxy = fakes.proxy(moto_noauth.port)
    ag = agent(None, env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL": proxy.url,
                          "AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": moto_noauth.role_arn,
                          "AWS_ROLE_SESSION_NAME": "sma-wi-session"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == "web-identity-value"
    check_web_identity_exchange(proxy, moto_noauth.role_arn, JWT, "sma-wi-session")


def test_web_identity_profile_with_moto_sts(agent, moto_noauth, fakes, tmp_path):
    name = unique("wip")
    moto_noauth.sm.create_secret(Name=name, SecretString="web-identity-profile")
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT + "p")
    cfg = tmp_path / "config"
    cfg.write_text(f"[profile sma-wi]\nrole_arn = {moto_noauth.role_arn}\n"
                   f"web_identity_token_file = {tok}\nrole_session_name = sma-wi-profile\n")
    proxy = fakes.proxy(moto_noauth.port)
    ag = agent(None, env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL": proxy.url, "AWS_CONFIG_FILE": str(cfg),
                          "AWS_PROFILE": "sma-wi"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == "web-identity-profile"
    check_web_identity_exchange(proxy, moto_noauth.role_arn, JWT + "p", "sma-wi-profile")


def test_web_identity_signed_fetch_and_token_file_reread(agent, moto, iam, secret, fakes, tmp_path):
    """Fake STS (web identity) handing out moto-minted credentials; Secrets Manager is the
    signature-checking moto.  The token file is read again at the refresh."""
    name, value = secret
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT + "A")
    sts = fakes.sts(creds_fn=iam.mint, role_arn=iam.role_arn, accept_tokens={JWT + "A"}, lifetime=4)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL_STS": sts.url,
                    "AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": iam.role_arn})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert sts.tokens_seen() == [JWT + "A"]
    tok.write_text(JWT + "B")
    sts.accept_tokens = {JWT + "B"}  # the projected token was rotated
    results = poll_secret(ag, name, 12, stop=lambda: sts.served_count() >= 2)
    assert_all_ok(results, value)
    assert sts.served_count() >= 2, sts.tokens_seen()
    assert JWT + "B" in sts.tokens_seen()
    assert not any(c["signed"] for c in sts.requests())
    assert_signed_with_served(proxy, sts, min_keys=2)


def test_web_identity_sts_error_is_credentials_error(agent, iam, fakes, tmp_path, moto, secret):
    name, _ = secret
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT)
    sts = fakes.sts(creds_fn=iam.mint, role_arn=iam.role_arn, accept_tokens=set())
    ag = agent(moto.url, env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL_STS": sts.url,
                              "AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": iam.role_arn})
    msg = creds_error(*ag.secret(name)[::2])
    assert "web identity" in msg.lower() and "InvalidIdentityToken" in msg, msg
    assert sts.count() >= 1


# =========================================================================== profiles


def write_profiles(tmp_path, config=None, credentials=None):
    env = {}
    if config is not None:
        p = tmp_path / "config"
        p.write_text(config)
        env["AWS_CONFIG_FILE"] = str(p)
    if credentials is not None:
        p = tmp_path / "credentials"
        p.write_text(credentials)
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(p)
    return env


def keys(creds, token=None):
    s = f"aws_access_key_id = {creds[0]}\naws_secret_access_key = {creds[1]}\n"
    if token:
        s += f"aws_session_token = {token}\n"
    return s


def get_ok(ag, secret):
    name, value = secret
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value


def test_profile_static_keys_credentials_file_section(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, credentials=f"[other]\n{keys(DUMMY_CREDS)}\n[sma]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_static_keys_config_file_profile_section(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, config=f"[default]\n{keys(DUMMY_CREDS)}\n[profile sma]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_default_without_aws_profile(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, config=f"[profile other]\n{keys(DUMMY_CREDS)}\n[default]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env}), secret)


def test_profile_file_syntax(agent, moto, secret, tmp_path):
    """Comments, no spaces around '=', blank lines, a nested sub-section in another profile."""
    config = (
        "# leading comment\n; another comment\n\n"
        "[default]\nregion = us-west-2\ns3 =\n    max_concurrent_requests = 20\n    addressing_style = path\n\n"
        f"[profile sma]\n# keys follow\naws_access_key_id={moto.admin[0]}\naws_secret_access_key={moto.admin[1]}\n"
    )
    env = write_profiles(tmp_path, config=config)
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_blank_environment_credentials_count_as_unset(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, credentials=f"[default]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}), secret)


def test_profile_credentials_file_wins_over_config(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, config=f"[profile sma]\n{keys(moto.denied)}region = us-east-1\n",
                         credentials=f"[sma]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_session_token(agent, moto, iam, secret, tmp_path):
    akid, sk, token = iam.mint()
    env = write_profiles(tmp_path, credentials=f"[sma]\n{keys((akid, sk), token)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_credential_process_beats_static_keys(agent, moto, secret, tmp_path):
    doc = json.dumps({"Version": 1, "AccessKeyId": moto.admin[0], "SecretAccessKey": moto.admin[1]})
    script = write_script(tmp_path / "creds.sh", f"#!/bin/sh\ncat <<'EOF'\n{doc}\nEOF\n")
    env = write_profiles(tmp_path, config=f"[profile sma]\ncredential_process = {script}\n{keys(moto.denied)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_environment_session_token(agent, moto, iam, secret):
    akid, sk, token = iam.mint()
    get_ok(agent(moto.url, creds=(akid, sk), env={"AWS_SESSION_TOKEN": token}), secret)


def sts_params(exchange):
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(exchange["body"].decode()).items()}


def check_assume_role(proxy, role_arn, signer_akid, signer_token=None, session_name=None, external_id=None):
    ex = proxy.ops("AssumeRole")
    assert ex, [e["op"] for e in proxy.ops()]
    p = sts_params(ex[0])
    assert p["RoleArn"] == role_arn
    if session_name:
        assert p["RoleSessionName"] == session_name
    else:
        assert p.get("RoleSessionName")
    if external_id:
        assert p.get("ExternalId") == external_id
    scope = auth_scope(ex[0]["headers"])
    assert scope and scope[0] == signer_akid and scope[3] == "sts", ex[0]["headers"].get("authorization")
    assert ex[0]["headers"].get("x-amz-security-token") == signer_token
    assert ex[0]["status"] == 200, ex[0]["response"][:500]
    issued = sts_credentials(ex[-1]["response"])
    sm = proxy.ops("GetSecretValue")
    assert sm and sm[-1]["status"] == 200
    assert auth_scope(sm[-1]["headers"])[0] == issued["AccessKeyId"]
    assert sm[-1]["headers"].get("x-amz-security-token") == issued["SessionToken"]


def test_profile_role_arn_source_profile_assume_role(agent, moto, iam, secret, fakes, tmp_path):
    """role_arn + source_profile: AssumeRole signed with the source profile's keys, in
    moto's auth mode (it checks the signature, the trust policy and the external id)."""
    proxy = fakes.proxy(moto.port)
    env = write_profiles(
        tmp_path,
        config=(f"[profile sma-assumer]\nrole_arn = {iam.ext_role_arn}\nsource_profile = sma-base\n"
                "role_session_name = sma-session-test\nexternal_id = sma-ext-id\n"),
        credentials=f"[sma-base]\n{keys(moto.admin)}")
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-assumer", "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    check_assume_role(proxy, iam.ext_role_arn, moto.admin[0], None, "sma-session-test", "sma-ext-id")


def test_profile_assume_role_denied_names_profile(agent, moto, iam, secret, fakes, tmp_path):
    """The source profile's user may not call sts:AssumeRole (moto checks the policy)."""
    name, _ = secret
    proxy = fakes.proxy(moto.port)
    env = write_profiles(
        tmp_path, config=(f"[profile sma-denied-base]\n{keys(moto.denied)}\n"
                          f"[profile sma-assumer-denied]\nrole_arn = {iam.role_arn}\nsource_profile = sma-denied-base\n"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-assumer-denied",
                               "AWS_ENDPOINT_URL_STS": proxy.url})
    msg = creds_error(*ag.secret(name)[::2])
    assert "sma-assumer-denied" in msg, msg
    assert proxy.ops("AssumeRole") and proxy.ops("AssumeRole")[0]["status"] == 403
    assert proxy.ops("GetSecretValue") == []


def test_profile_role_chain_two_hops(agent, moto, iam, secret, fakes, tmp_path):
    """sma-outer (chain role) <- sma-inner (role assumed with the admin keys) <- sma-keys."""
    proxy = fakes.proxy(moto.port)
    env = write_profiles(
        tmp_path,
        config=(f"[profile sma-outer]\nrole_arn = {iam.chain_role_arn}\nsource_profile = sma-inner\n"
                f"[profile sma-inner]\nrole_arn = {iam.role_arn}\nsource_profile = sma-keys\n"
                f"[profile sma-keys]\n{keys(moto.admin)}"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-outer", "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    ar = proxy.ops("AssumeRole")
    assert [sts_params(e)["RoleArn"] for e in ar] == [iam.role_arn, iam.chain_role_arn]
    assert auth_scope(ar[0]["headers"])[0] == moto.admin[0]
    inner = sts_credentials(ar[0]["response"])
    assert auth_scope(ar[1]["headers"])[0] == inner["AccessKeyId"]
    assert ar[1]["headers"].get("x-amz-security-token") == inner["SessionToken"]
    outer = sts_credentials(ar[1]["response"])
    sm = proxy.ops("GetSecretValue")
    assert auth_scope(sm[-1]["headers"])[0] == outer["AccessKeyId"]
    assert sm[-1]["headers"].get("x-amz-security-token") == outer["SessionToken"]


def test_profile_own_source_profile_uses_its_keys(agent, moto, iam, secret, fakes, tmp_path):
    proxy = fakes.proxy(moto.port)
    env = write_profiles(tmp_path, config=(f"[profile sma-self]\nrole_arn = {iam.role_arn}\n"
                                           f"source_profile = sma-self\n{keys(moto.admin)}"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-self", "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    check_assume_role(proxy, iam.role_arn, moto.admin[0])


def test_profile_source_profile_loop_is_an_error(agent, moto, iam, secret, fakes, tmp_path):
    name, _ = secret
    proxy = fakes.proxy(moto.port)
    env = write_profiles(tmp_path, config=(f"[profile sma-a]\nrole_arn = {iam.role_arn}\nsource_profile = sma-b\n"
                                           f"[profile sma-b]\nrole_arn = {iam.role_arn}\nsource_profile = sma-a\n"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-a", "AWS_ENDPOINT_URL_STS": proxy.url})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name)[::2])
    assert time.monotonic() - t0 < 5
    assert "loop" in msg.lower() and "sma-a" in msg, msg
    assert proxy.ops() == []
    assert ag.alive()


@pytest.mark.parametrize("source", ["EcsContainer", "Ec2InstanceMetadata"])
def test_profile_role_arn_credential_source(agent, moto, iam, secret, fakes, tmp_path, source):
    proxy = fakes.proxy(moto.port)
    if source == "EcsContainer":
        src = fakes.container(creds_fn=iam.mint)
        src_env = container_env(src)
    else:
        src = fakes.imds(creds_fn=iam.mint)
        src_env = imds_env(src)
    env = write_profiles(tmp_path, config=f"[profile sma-chain]\nrole_arn = {iam.chain_role_arn}\n"
                                          f"credential_source = {source}\n")
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, **src_env, "AWS_PROFILE": "sma-chain",
                               "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    assert src.served_count() >= 1
    check_assume_role(proxy, iam.chain_role_arn, src.served[0]["akid"], src.served[0]["token"])


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_profile_credential_process(agent, moto, secret, tmp_path):
    runs = tmp_path / "runs"
    doc = json.dumps({"Version": 1, "AccessKeyId": moto.admin[0], "SecretAccessKey": moto.admin[1]})
    script = write_script(tmp_path / "creds.sh", f"#!/bin/sh\necho \"$1\" >> '{runs}'\ncat <<'EOF'\n{doc}\nEOF\n")
    env = write_profiles(tmp_path, config=f"[profile sma-proc]\ncredential_process = {script} first-arg\n")
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-proc"})
    get_ok(ag, secret)
    get_ok(ag, secret)
    assert runs.read_text().splitlines()[0] == "first-arg"
    assert len(runs.read_text().splitlines()) == 1, "credentials without Expiration are cached"
    assert_secrets_not_logged(ag, moto.admin[1])


PROC_PY = """
import json, sys, time
state_path = sys.argv[1]
with open(state_path) as f:
    st = json.load(f)
i = min(st["n"], len(st["creds"]) - 1)
st["n"] += 1
with open(state_path, "w") as f:
    json.dump(st, f)
akid, sk, tok = st["creds"][i]
exp = int(time.time() + st["lifetime"]) + 1
print(json.dumps({"Version": 1, "AccessKeyId": akid, "SecretAccessKey": sk, "SessionToken": tok,
                  "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}))
"""


def test_profile_credential_process_with_expiration_is_refreshed(agent, moto, iam, secret, tmp_path):
    name, value = secret
    creds = [list(iam.mint()) for _ in range(4)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"n": 0, "creds": creds, "lifetime": 4}))
    script = write_script(tmp_path / "proc.py", PROC_PY)
    env = write_profiles(tmp_path, config=f"[profile sma-proc]\ncredential_process = {sys.executable} {script} {state}\n")
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-proc"})
    n = lambda: json.loads(state.read_text())["n"]  # noqa: E731
    results = poll_secret(ag, name, 12, stop=lambda: n() >= 2)
    assert_all_ok(results, value)
    assert n() >= 2, "credential_process was not run again before the Expiration"


@pytest.mark.parametrize("body", ["echo 'no credentials for you' >&2; exit 3", "echo 'this is not json'"],
                         ids=["exit-3", "bad-json"])
def test_profile_credential_process_failure_names_profile(agent, moto, secret, tmp_path, body):
    name, _ = secret
    script = write_script(tmp_path / "fail.sh", f"#!/bin/sh\n{body}\n")
    env = write_profiles(tmp_path, config=f"[profile sma-proc-fail]\ncredential_process = {script}\n")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-proc-fail"})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name)[::2])
    assert time.monotonic() - t0 < 10
    assert "sma-proc-fail" in msg, msg


# =========================================================================== chain order


class AllSources:
    """Every source configured; each hands out credentials of its own (which moto would
    accept too: so the counters, not a 403, tell which was used)."""

    def __init__(self, agent, moto, iam, fakes, tmp_path, env_creds, profile_creds, web_identity, container):
        self.env = {**NO_ENV_CREDS}
        if env_creds:
            self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"] = moto.admin
        if profile_creds:
            self.env.update(write_profiles(tmp_path, credentials=f"[default]\n{keys(moto.admin)}"))
        self.sts = fakes.sts(creds_fn=iam.mint, role_arn=iam.role_arn)
        self.env["AWS_ENDPOINT_URL_STS"] = self.sts.url
        if web_identity:
            tok = tmp_path / "token.jwt"
            tok.write_text(JWT)
            self.env.update({"AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": iam.role_arn})
        self.container = fakes.container(creds_fn=iam.mint)
        if container:
            self.env.update(container_env(self.container))
        self.imds = fakes.imds(creds_fn=iam.mint)
        self.env.update(imds_env(self.imds))
        self.ag = agent(moto.url, env=self.env)

    def counts(self):
        return {"sts": self.sts.count(), "container": self.container.count(), "imds": self.imds.count()}


def test_chain_environment_beats_all(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, True, True, True, True)
    get_ok(s.ag, secret)
    assert s.counts() == {"sts": 0, "container": 0, "imds": 0}


def test_chain_profile_beats_web_identity_container_imds(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, True, True, True)
    get_ok(s.ag, secret)
    assert s.counts() == {"sts": 0, "container": 0, "imds": 0}


def test_chain_web_identity_beats_container_imds(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, False, True, True)
    get_ok(s.ag, secret)
    assert s.counts() == {"sts": 1, "container": 0, "imds": 0}


def test_chain_container_beats_imds(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, False, False, True)
    get_ok(s.ag, secret)
    assert s.counts()["container"] >= 1 and s.counts()["imds"] == 0 and s.counts()["sts"] == 0


def test_chain_imds_last(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, False, False, False)
    get_ok(s.ag, secret)
    assert s.imds.served_count() >= 1 and s.counts()["container"] == 0 and s.counts()["sts"] == 0


def test_credentials_file_path_replaces_the_chain(agent, moto, iam, fakes, tmp_path, secret):
    creds = tmp_path / "agent-credentials"
    creds.write_text(f"[default]\n{keys(moto.admin)}")
    c = fakes.container(creds_fn=iam.mint)
    imds = fakes.imds(creds_fn=iam.mint)
    ag = agent(moto.url, config={"credentials_file_path": str(creds)},
               env={**NO_ENV_CREDS, **container_env(c), **imds_env(imds)})
    get_ok(ag, secret)
    assert c.count() == 0 and imds.count() == 0


def test_validate_credentials_uses_the_chain(agent, moto, iam, fakes, secret):
    """validate_credentials = true: GetCallerIdentity at start, signed with the chain's
    credentials (here the container's), against moto's STS."""
    proxy = fakes.proxy(moto.port)
    c = fakes.container(creds_fn=iam.mint)
    ag = agent(moto.url, config={"validate_credentials": True},
               env={**NO_ENV_CREDS, **container_env(c), "AWS_ENDPOINT_URL_STS": proxy.url})
    gci = proxy.ops("GetCallerIdentity")
    assert gci and gci[0]["status"] == 200, [(e["op"], e["status"]) for e in proxy.ops()]
    assert auth_scope(gci[0]["headers"])[0] == c.served[0]["akid"]
    assert gci[0]["headers"].get("x-amz-security-token") == c.served[0]["token"]
    get_ok(ag, secret)


def test_validate_credentials_rejects_bad_chain_credentials(agent, moto, fakes):
    proxy = fakes.proxy(moto.port)
    c = fakes.container(creds_fn=lambda: ("ASIAUNKNOWNUNKNOWN00", "nope", "no-such-session"))
    rc, out, err = agent.run_expect_exit(
        moto.url, config={"validate_credentials": True},
        env={**NO_ENV_CREDS, **container_env(c), "AWS_ENDPOINT_URL_STS": proxy.url})
    assert rc == 1, (rc, out, err)
    assert err.strip()
    assert proxy.ops("GetCallerIdentity")


def test_configured_but_failing_source_stops_the_chain(agent, moto, iam, fakes, secret):
    """Like the SDKs: a container endpoint that is configured but fails is an error; the
    agent does not quietly switch to another identity (IMDS)."""
    name, _ = secret
    c = fakes.container(creds_fn=iam.mint, expected_auth="right")
    imds = fakes.imds(creds_fn=iam.mint)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c, token="wrong"), **imds_env(imds)})
    msg = creds_error(*ag.secret(name)[::2])
    assert "container" in msg.lower(), msg
    assert imds.creds_gets() == []


def test_all_sources_fail_lists_every_source(agent, moto, secret):
    name, _ = secret
    ag = agent(moto.url, env={**NO_ENV_CREDS, "AWS_EC2_METADATA_DISABLED": None,
                              "AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_url()})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name, timeout=40)[::2])
    assert time.monotonic() - t0 < 10
    assert msg.startswith("no AWS credentials found"), msg
    low = msg.lower()
    pos = [low.find(s) for s in ("environment", "profile", "web identity", "container", "imds")]
    assert all(p >= 0 for p in pos), msg
    assert pos == sorted(pos), f"sources not listed in chain order: {msg}"


# =========================================================================== refresh & static stability


def make_source(kind, fakes, iam, **kw):
    if kind == "imds":
        src = fakes.imds(creds_fn=iam.mint, **kw)
        return src, imds_env(src)
    src = fakes.container(creds_fn=iam.mint, expected_auth="sma-auth", **kw)
    return src, container_env(src, token="sma-auth")


@pytest.mark.parametrize("kind", ["imds", "container"])
def test_refresh_before_expiry(agent, moto, iam, secret, fakes, kind):
    name, value = secret
    src, env = make_source(kind, fakes, iam, lifetime=6)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env})
    results = poll_secret(ag, name, 10)
    assert_all_ok(results, value)
    assert src.served_count() >= 2, "credentials were not refreshed before they expired"
    assert_signed_with_served(proxy, src, min_keys=2)


@pytest.mark.parametrize("kind", ["imds", "container"])
def test_static_stability(agent, moto, iam, secret, fakes, kind):
    """The source goes down after the first credentials (3 s lifetime): requests keep
    working for the grace period (4 s) after the expiry, with a WARN, then fail."""
    name, value = secret
    grace = 4
    src, env = make_source(kind, fakes, iam, lifetime=3, down_after=1)
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **env, "SMA_CREDENTIALS_GRACE_SECS": str(grace), "SMA_CREDENTIALS_RETRY_SECS": "1"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert src.served_count() == 1
    wait_until(lambda: src.down == "refuse", 5, what="the source to go down")
    expiry = src.served[0]["expiration"]
    limit = expiry + grace + 1 + 4  # grace, one retry interval, slack
    results = []
    while time.time() < limit:
        st, _, body = ag.secret(name, timeout=30)
        results.append((time.time(), st, body))
        if st != 200 and time.time() > expiry + grace:
            break
        time.sleep(0.25)
    timeline = [(round(t - expiry, 2), st) for t, st, _ in results]
    in_grace = [(t, st, b) for t, st, b in results if expiry + 0.3 < t < expiry + grace - 0.5]
    assert len(in_grace) >= 3, timeline
    assert all(st == 200 for t, st, _ in results if t < expiry + grace - 0.5), timeline
    for _, _, b in in_grace:
        assert json.loads(b)["SecretString"] == value
    assert warn_lines(ag, "static stability"), log_of(ag)[-3000:]
    failed = [(t, st, b) for t, st, b in results if st != 200]
    assert failed, f"still served after the grace period: {timeline}"
    creds_error(failed[0][1], failed[0][2])
    assert src.served_count() == 1


# =========================================================================== region chain


def region_used(fake_upstream):
    reqs = fake_upstream.requests("GetSecretValue")
    assert reqs
    hdrs = {k.lower(): v for k, v in reqs[-1][3].items()}
    return auth_scope(hdrs)[2]


REGION_ENV_ALL = {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "ap-northeast-2"}


def profile_region_env(tmp_path, region="sa-east-1", profile="sma-region"):
    return {**write_profiles(tmp_path, config=f"[default]\nregion = eu-south-1\n[profile {profile}]\nregion = {region}\n"),
            "AWS_PROFILE": profile}


def test_region_config_first(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": "eu-north-1"},
               env={**REGION_ENV_ALL, **profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "eu-north-1"
    assert imds.region_gets() == []


def test_region_aws_region(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None},
               env={**REGION_ENV_ALL, **profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "ap-south-1"
    assert imds.region_gets() == []


def test_region_aws_default_region(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None},
               env={"AWS_DEFAULT_REGION": "ap-northeast-2", **profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "ap-northeast-2"
    assert imds.region_gets() == []


def test_region_from_profile(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None}, env={**profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "sa-east-1"
    assert imds.region_gets() == []


def test_region_from_default_profile(agent, fake_upstream, tmp_path):
    env = write_profiles(tmp_path, config="[profile other]\nregion = sa-east-1\n[default]\nregion = eu-south-1\n")
    ag = agent(fake_upstream.url, config={"region": None}, env=env)
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "eu-south-1"


def test_region_from_imds_placement(agent, fake_upstream, fakes):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None}, env=imds_env(imds))
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "ca-central-1"
    assert "ca-central-1" in log_of(ag)
    gets = imds.region_gets()
    assert gets and all(g["token_state"] == "valid" for g in gets)
    assert imds.creds_gets() == [], "environment credentials were set: IMDS is for the region only"


def test_no_region_anywhere_exits_1(agent):
    rc, out, err = agent.run_expect_exit(
        config={"region": None}, env={"AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_url()})
    assert rc == 1, (rc, out, err)
    assert "region" in err.lower(), err


def test_no_region_imds_without_placement_exits_1(agent, fakes):
    imds = fakes.imds(region=None)
    rc, out, err = agent.run_expect_exit(config={"region": None}, env=imds_env(imds))
    assert rc == 1, (rc, out, err)
    assert "region" in err.lower(), err
    assert imds.count() >= 1
