"""What the credential-source tests (test_credentials_*.py) share: the moto roles,
the fixtures, the environment for each source, and the checks.

For each source the real binary runs with only that source available and fetches a
secret from moto with IAM signature checking on.  The fake IMDS / container / STS
endpoints (fake_metadata.py) hand out *real* temporary credentials minted with moto's
STS AssumeRole (signed by the moto admin key): moto's auth mode accepts an ASIA key
only together with its exact session token, and rejects an IAM user (AKIA) key that
comes with any session token, so the fakes cannot just hand out the admin key.

Fixtures, imported by the test modules that use them: `iam` (module: the roles in
moto and a minter of their credentials), `secret` (a fresh secret: (name, value)) and
`fakes` (the fake endpoints and proxies a test starts, all closed at teardown).
"""

from __future__ import annotations

import calendar
import json
import threading
import time

import pytest

from conftest import free_port, unique
from fake_metadata import FakeContainer, FakeIMDS, FakeSTS
from relays import RecordingProxy, auth_scope

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


# A lifetime for the fakes' credentials, and the step of the agent's test clock
# (Agent.advance) that brings them 200 s short of their expiry: past the 5 to
# 10 minutes ahead at which the agent refreshes, still before the expiry.
LIFE = 3600
NEAR_EXPIRY = LIFE - 200


def reads(ag, name, n=2):
    """`n` requests in a row: [(time, status, body)]."""
    out = []
    for _ in range(n):
        st, _, body = ag.secret(name, timeout=30)
        out.append((time.time(), st, body))
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


# --------------------------------------------------------------------------- shared config files


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
