"""Per-request roles (`roleArn`) end to end, against moto with signature and IAM
checks on.

The agent runs with the keys of a user whose only permission is sts:AssumeRole:
it cannot read a secret as itself, only as a role it assumes.  A role that may read
the secret answers, a role denied by its policy does not, and the answers of one
role are never served to another (nor to the agent's own identity).  moto
authorizes Secrets Manager and STS actions against resource "*", so the roles
differ by the actions their policies allow, not by resources.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs, quote

import pytest

from conftest import unique
from relays import RecordingProxy, auth_scope, sts_credentials

SESSION_NAME = "secrets-manager-agent"
MAX_ROLES = 20  # the registry's default (no config key yet)


class RoleWorld:
    """A user that may only assume roles, and roles with and without read access."""

    def __init__(self, moto):
        import boto3

        kw = dict(endpoint_url=moto.url, region_name="us-east-1",
                  aws_access_key_id=moto.admin[0], aws_secret_access_key=moto.admin[1])
        self.iam = boto3.client("iam", **kw)
        self.sfx = unique("roles")
        self.lock = threading.Lock()
        user = f"assumer-{self.sfx}"
        self.iam.create_user(UserName=user)
        self.user_arn = self.iam.get_user(UserName=user)["User"]["Arn"]
        self.iam.put_user_policy(UserName=user, PolicyName="assume-only", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
        k = self.iam.create_access_key(UserName=user)["AccessKey"]
        self.keys = (k["AccessKeyId"], k["SecretAccessKey"])
        self.reader = self.role("reader", read=True)
        self.other_reader = self.role("reader2", read=True)
        self.blocked = self.role("blocked", read=False)

    def role(self, name, read=True):
        """A role the user may assume; `read`: it may read secrets, else it is denied."""
        with self.lock:
            role_name = f"{name}-{self.sfx}"
            arn = self.iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": self.user_arn}, "Action": "sts:AssumeRole"}]}
            ))["Role"]["Arn"]
            statements = [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]
            if not read:
                statements.append({"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
            self.iam.put_role_policy(RoleName=role_name, PolicyName="sm", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))
            return arn


@pytest.fixture(scope="module")
def world(moto):
    return RoleWorld(moto)


@pytest.fixture
def secret(moto):
    name, value = unique("role-secret"), "value-" + unique("v")
    moto.client().create_secret(Name=name, SecretString=value)
    return name, value


@pytest.fixture
def proxy(moto):
    p = RecordingProxy(moto.port)
    yield p
    p.close()


def start(agent, world, proxy, creds=None, config=None):
    """The agent signing as the assume-only user; STS and Secrets Manager through `proxy`."""
    return agent(proxy.url, creds=creds or world.keys, env={"AWS_ENDPOINT_URL_STS": proxy.url}, config=config)


def as_role(ag, name, role, route="get", **params):
    if route == "get":
        return ag.secret(name, roleArn=role, **params)
    return ag.get(f"/v1/{quote(name, safe='')}?roleArn={quote(role, safe='')}")


def error(body):
    doc = json.loads(body)
    return doc["__type"], doc.get("message", "")


def test_a_role_reads_what_the_agent_itself_may_not(agent, world, secret, proxy):
    name, value = secret
    ag = start(agent, world, proxy)
    # As itself (the user may only assume roles): IAM denies GetSecretValue.
    st, _, body = ag.secret(name)
    assert st in (400, 403), body
    assert "AccessDenied" in error(body)[0], body
    # As the reader role, on both routes.
    for route in ("get", "v1"):
        st, _, body = as_role(ag, name, world.reader, route)
        assert st == 200, body
        assert json.loads(body)["SecretString"] == value
    # AssumeRole: once (the role's credentials are cached), signed with the user's
    # keys, fixed session name; GetSecretValue signed with the role's credentials.
    assumed = proxy.ops("AssumeRole")
    assert len(assumed) == 1, [e["op"] for e in proxy.ops()]
    params = {k: v[0] for k, v in parse_qs(assumed[0]["body"].decode()).items()}
    assert params["RoleArn"] == world.reader
    assert params["RoleSessionName"] == SESSION_NAME
    assert auth_scope(assumed[0]["headers"])[0] == world.keys[0]
    issued = sts_credentials(assumed[0]["response"])
    reads = [e for e in proxy.ops("GetSecretValue") if e["status"] == 200]
    assert len(reads) == 1, "the second route was a cache hit"
    assert auth_scope(reads[0]["headers"])[0] == issued["AccessKeyId"]
    assert reads[0]["headers"].get("x-amz-security-token") == issued["SessionToken"]
    # The role's answer is cached for the role only: as itself, still denied.
    st, _, body = ag.secret(name)
    assert st in (400, 403) and "AccessDenied" in error(body)[0], body


def test_roles_never_see_each_others_answers(agent, moto, world, secret, proxy):
    name, value = secret
    ag = start(agent, world, proxy)
    st, _, body = as_role(ag, name, world.reader)
    assert st == 200 and json.loads(body)["SecretString"] == value, body
    # Denied by its own policy: the reader's cached answer is not served to it.
    st, _, body = as_role(ag, name, world.blocked)
    assert st in (400, 403) and "AccessDenied" in error(body)[0], (st, body)
    # A new value: a role that has not read it yet gets the new one, the reader
    # keeps its cached one (its own entry, within the TTL).
    moto.client().put_secret_value(SecretId=name, SecretString="second-" + value)
    st, _, body = as_role(ag, name, world.other_reader)
    assert st == 200 and json.loads(body)["SecretString"] == "second-" + value, body
    st, _, body = as_role(ag, name, world.reader)
    assert st == 200 and json.loads(body)["SecretString"] == value, body
    # refreshNow for the blocked role asks again, and is still denied.
    st, _, body = as_role(ag, name, world.blocked, refreshNow="true")
    assert st in (400, 403) and "AccessDenied" in error(body)[0], (st, body)


def test_assume_role_denied_is_403_with_stss_code(agent, moto, world, secret, proxy):
    """The `denied` user (conftest) may use Secrets Manager but not sts:AssumeRole."""
    name, value = secret
    ag = start(agent, world, proxy, creds=moto.denied)
    st, _, body = as_role(ag, name, world.reader)
    assert st == 403, body
    code, message = error(body)
    assert code == "AccessDenied", body
    assert message, body
    assert proxy.ops("AssumeRole") and proxy.ops("AssumeRole")[0]["status"] == 403
    assert proxy.ops("GetSecretValue") == [], "nothing is read without the role's credentials"


def test_malformed_role_arn_is_400(agent, world, secret, proxy):
    name, _ = secret
    ag = start(agent, world, proxy)
    for bad in ["", "reader", world.reader.replace(":role/", ":user/"),
                world.reader.replace(":iam:", ":sts:"), world.reader + " extra",
                "arn:aws:iam::12345678901:role/reader"]:
        for route in ("get", "v1"):
            st, _, body = as_role(ag, name, bad, route)
            assert st == 400, (bad, route, body)
            assert body.decode().startswith("invalid roleArn: "), body
    assert proxy.ops() == [], "a malformed roleArn never reaches AWS"


def test_max_roles_bounds_the_roles_served(agent, world, secret, proxy):
    name, value = secret
    roles = [world.role(f"many{i}") for i in range(MAX_ROLES + 1)]
    ag = start(agent, world, proxy)
    for role in roles[:MAX_ROLES]:
        st, _, body = as_role(ag, name, role)
        assert st == 200 and json.loads(body)["SecretString"] == value, (role, body)
    st, _, body = as_role(ag, name, roles[MAX_ROLES])
    assert st == 400, body
    code, message = error(body)
    assert code == "TooManyRoles" and "max_roles" in message, body
    assumed = [parse_qs(e["body"].decode())["RoleArn"][0] for e in proxy.ops("AssumeRole")]
    assert sorted(assumed) == sorted(roles[:MAX_ROLES]), "the refused role is never assumed"
    # The roles already served still are, and so is the agent's own identity.
    st, _, body = as_role(ag, name, roles[0], refreshNow="true")
    assert st == 200, body
    st, _, _ = ag.get("/ping", token=False)
    assert st == 200


def test_max_roles_from_the_config_file(agent, world, secret, proxy):
    name, value = secret
    first, second = world.role("cfg-a"), world.role("cfg-b")
    ag = start(agent, world, proxy, config={"max_roles": 1})
    st, _, body = as_role(ag, name, first)
    assert st == 200 and json.loads(body)["SecretString"] == value, body
    st, _, body = as_role(ag, name, second)
    assert st == 400, body
    code, message = error(body)
    assert code == "TooManyRoles" and "max_roles = 1" in message, body
