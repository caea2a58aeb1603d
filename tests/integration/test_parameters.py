"""Parameter Store through `/systemsmanager/parameters/get`, against moto with
signatures and IAM checked: what AWS's Parameters and Secrets Lambda Extension
serves, plus errors that say why."""

import json
from urllib.parse import quote

import pytest

from conftest import unique

ROUTE = "/systemsmanager/parameters/get"


def get(ag, name, **params):
    q = "name=" + quote(name, safe="")
    for k, v in params.items():
        q += f"&{k}={quote(str(v), safe='')}"
    status, headers, body = ag.get(f"{ROUTE}?{q}")
    return status, headers, body


def parameter(ag, name, **params):
    status, headers, body = get(ag, name, **params)
    assert status == 200, (status, body)
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["ResultMetadata"] == {}, doc
    return doc["Parameter"]


@pytest.fixture
def ssm_agent(agent, moto, counting_proxy):
    """Starts an agent whose Parameter Store calls go through the counting proxy."""
    def start(creds=None, config=None):
        return agent(counting_proxy.url, creds=creds or moto.admin, config=config,
                     env={"AWS_ENDPOINT_URL_SSM": counting_proxy.url})
    return start


def test_string_and_string_list_as_aws_sends_them(ssm_agent, moto):
    ssm = moto.client("ssm")
    name = "/app/" + unique("host")
    ssm.put_parameter(Name=name, Value="db.internal", Type="String")
    listed = "/app/" + unique("hosts")
    ssm.put_parameter(Name=listed, Value="a,b,c", Type="StringList")
    ag = ssm_agent()

    p = parameter(ag, name)
    direct = ssm.get_parameter(Name=name)["Parameter"]
    for field in ("Name", "Type", "Value", "Version", "ARN", "DataType"):
        assert p[field] == direct[field], field
    assert isinstance(p["LastModifiedDate"], (int, float)), p
    assert parameter(ag, listed)["Value"] == "a,b,c"
    assert parameter(ag, listed)["Type"] == "StringList"


def test_secure_string_with_and_without_decryption(ssm_agent, moto, counting_proxy):
    ssm = moto.client("ssm")
    name = "/app/" + unique("password")
    ssm.put_parameter(Name=name, Value="hunter2", Type="SecureString")
    ag = ssm_agent()
    plain = parameter(ag, name, withDecryption="true")
    assert plain["Value"] == "hunter2" and plain["Type"] == "SecureString"
    sealed = parameter(ag, name)
    assert sealed["Value"] != "hunter2", "not decrypted unless asked"
    assert sealed["Value"] == ssm.get_parameter(Name=name, WithDecryption=False)["Parameter"]["Value"]
    # Two entries: each was fetched once, and each answers from the cache now.
    assert parameter(ag, name, withDecryption="TRUE")["Value"] == "hunter2"
    assert parameter(ag, name, withDecryption="false")["Value"] == sealed["Value"]
    assert counting_proxy.count("GetParameter", "AmazonSSM") == 2
    bodies = [json.loads(r[3]) for r in counting_proxy.requests]
    assert {"Name": name, "WithDecryption": True} in bodies and {"Name": name, "WithDecryption": False} in bodies
    ag.stop()
    assert "hunter2" not in ag.stderr and "hunter2" not in ag.stdout


def test_versions_labels_arns_and_secrets_references(ssm_agent, moto):
    ssm = moto.client("ssm")
    name = "/app/" + unique("flag")
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    ssm.put_parameter(Name=name, Value="v2", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["stable"])
    secret = unique("referenced")
    moto.client().create_secret(Name=secret, SecretString="from-secrets-manager")
    ag = ssm_agent()

    assert parameter(ag, name)["Value"] == "v2"
    # (AWS adds "Selector" to these answers; moto does not.)
    one = parameter(ag, name, version=1)
    assert (one["Value"], one["Version"]) == ("v1", 1)
    assert parameter(ag, name, label="stable")["Value"] == "v1"
    # Both given: the first in the query decides.
    status, _, body = ag.get(f"{ROUTE}?name={quote(name)}&label=stable&version=2")
    assert status == 200 and json.loads(body)["Parameter"]["Value"] == "v1"
    status, _, body = ag.get(f"{ROUTE}?name={quote(name)}&version=2&label=stable")
    assert status == 200 and json.loads(body)["Parameter"]["Value"] == "v2"

    arn = ssm.get_parameter(Name=name)["Parameter"]["ARN"]
    assert parameter(ag, arn)["Value"] == "v2"
    ref = parameter(ag, "/aws/reference/secretsmanager/" + secret, withDecryption="true")
    assert ref["Value"] == "from-secrets-manager"


def test_errors_pass_through_with_status_and_code(ssm_agent, moto):
    ssm = moto.client("ssm")
    name = "/app/" + unique("one")
    ssm.put_parameter(Name=name, Value="x", Type="String")
    ag = ssm_agent()
    status, _, body = get(ag, "/app/" + unique("missing"))
    assert status == 400 and json.loads(body)["__type"] == "ParameterNotFound", body
    status, _, body = get(ag, name, version=7)
    assert status == 400 and json.loads(body)["__type"] == "ParameterVersionNotFound", body
    status, _, body = ag.get(f"{ROUTE}?name={quote(name)}&version=seven")
    assert (status, body) == (400, b"invalid version value: expected a version number")
    status, _, body = ag.get(f"{ROUTE}?name={quote(name)}&secretId=x")
    assert (status, body) == (400, b"unknown parameter: secretId")
    status, _, body = ag.get(ROUTE)
    assert (status, body) == (400, b"missing parameter name")
    status, _, _ = ag.get(f"{ROUTE}?name={quote(name)}", token=False)
    assert status == 403


def test_a_principal_without_ssm_get_parameter_gets_aws_refusal(ssm_agent, moto):
    creds = moto.user("nossm", {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"})
    name = "/app/" + unique("locked")
    moto.client("ssm").put_parameter(Name=name, Value="x", Type="String")
    ag = ssm_agent(creds=creds)
    status, _, body = get(ag, name)
    doc = json.loads(body)
    assert status in (400, 403) and "AccessDenied" in doc["__type"], (status, body)
    assert "ssm:GetParameter" in doc["message"], doc


def test_parameters_have_their_own_ttl_and_can_be_switched_off(ssm_agent, moto, counting_proxy):
    ssm = moto.client("ssm")
    name = "/app/" + unique("ttl")
    ssm.put_parameter(Name=name, Value="one", Type="String")
    secret = unique("cached")
    moto.client().create_secret(Name=secret, SecretString="s1")
    ag = ssm_agent(config={"ttl_seconds": 300, "parameter_store_ttl_seconds": 0})
    assert parameter(ag, name)["Value"] == "one"
    ssm.put_parameter(Name=name, Value="two", Type="String", Overwrite=True)
    assert parameter(ag, name)["Value"] == "two", "TTL 0: not cached"
    assert counting_proxy.count("GetParameter", "AmazonSSM") == 2
    ag.secret_json(secret)
    ag.secret_json(secret)
    assert counting_proxy.count("GetSecretValue") == 1, "secrets keep their TTL"
    ag.stop()

    off = ssm_agent(config={"parameter_store_enabled": False})
    status, _, body = get(off, name)
    assert (status, body) == (404, b"Not found: Parameter Store is switched off in the config")
    assert off.secret_json(secret)["SecretString"] == "s1"


def test_cached_within_the_ttl(ssm_agent, moto, counting_proxy):
    ssm = moto.client("ssm")
    name = "/app/" + unique("cached")
    ssm.put_parameter(Name=name, Value="one", Type="String")
    ag = ssm_agent()
    assert parameter(ag, name)["Value"] == "one"
    ssm.put_parameter(Name=name, Value="two", Type="String", Overwrite=True)
    assert parameter(ag, name)["Value"] == "one"
    assert counting_proxy.count("GetParameter", "AmazonSSM") == 1
    assert parameter(ag, name, refreshNow="true")["Value"] == "two"
    assert counting_proxy.count("GetParameter", "AmazonSSM") == 2
