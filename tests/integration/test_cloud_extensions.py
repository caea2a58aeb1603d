"""The second listener that speaks the interface of AWS's Cloud Extensions
Secrets Manager extension (`cloud_extensions_port`): GET /secretsmanager/get?secretId=,
GET /secretsmanager/{id} (slashes kept, %2F decoded, same cache entry), the
vault-style GET /v1/{id} with X-Vault-Token, each SigV4-signed (botocore's
SigV4Auth, service secretsmanager) and carrying the SSRF token; the SDK protocol
at /secretsmanager (boto3 with AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:N/secretsmanager)
and at /parameterstore for GetParameter/GetParameters only (boto3 SSM with
AWS_ENDPOINT_URL_SSM=http://127.0.0.1:N/parameterstore). Refusals: unsigned 401
MissingAuthenticationToken, a missing or wrong token 403 InvalidSsrfTokenException,
X-Forwarded-For 400 BadRequestException, a bad signature or key 403, other
operations 400 ValidationException; error types in X-Amzn-Errortype, GET error
bodies {"message": ...}. Also `caller_auth = "key"` and `"none"` on this listener."""

import json
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from conftest import unique
from sdk_common import (
    agent_url,
    check_json_answer,
    client_error,
    error_type,
    fixed_ports,
    mod_agents,  # noqa: F401
    mod_proxy,  # noqa: F401
    no_upstream,
    sdk_clients,
    sdk_post,
    signed_get,
    start_agent,
    strip,
    upstream_calls,
)

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
GSV = "secretsmanager.GetSecretValue"
CALLER_KEY = ("CXEKTESTCALLERKEY001", "ce-caller-secret")


class CE:
    """The agent with its Cloud Extensions listener on `port` (main listener on `ag.port`)."""

    def __init__(self, ag, port, creds):
        self.ag, self.port, self.creds = ag, port, creds

    def get(self, path, creds="default", token="default", headers=None):
        """A GET on the listener, signed with `creds` (None: unsigned) and the SSRF
        token in X-Aws-Parameters-Secrets-Token (None: no token)."""
        h = {}
        token = self.ag.token if token == "default" else token
        if token is not None:
            h[TOKEN_HEADER] = token
        h.update(headers or {})
        return signed_get(self.port, path, self.creds if creds == "default" else creds, headers=h)

    def secret(self, path, **kw):
        status, headers, body = self.get(path, **kw)
        assert status == 200, (path, status, headers, body)
        return json.loads(body)

    def url(self, path):
        return agent_url(self.port, path)


def start_ce(factory, moto, proxy, config=None, creds=None):
    http_port, ce_port = fixed_ports(2)
    cfg = {"cloud_extensions_port": ce_port}
    cfg.update(config or {})
    ag = start_agent(factory, moto, proxy, config=cfg, http_port=http_port)
    return CE(ag, ce_port, creds or moto.admin)


@pytest.fixture(scope="module")
def ce(mod_agents, moto, mod_proxy):  # noqa: F811
    return start_ce(mod_agents, moto, mod_proxy)


@pytest.fixture
def proxy(mod_proxy):  # noqa: F811
    return mod_proxy


@pytest.fixture
def secret(moto):
    name, value = unique("ce"), "value-" + unique("v")
    moto.client().create_secret(Name=name, SecretString=value)
    return name, value


def q(name):
    return quote(name, safe="")


def ce_error(status_headers_body):
    """(status, X-Amzn-Errortype code, message) of an error on a GET route, whose
    body is {"message": "..."}."""
    status, headers, body = status_headers_body
    doc = json.loads(body)
    assert set(doc) == {"message"} and isinstance(doc["message"], str), body
    return status, error_type(headers), doc["message"]


# --------------------------------------------------------------------------- GET routes


def test_query_route(ce, moto, proxy, secret):
    name, value = secret
    calls = upstream_calls(proxy)
    doc = ce.secret(f"/secretsmanager/get?secretId={q(name)}")
    assert (doc["Name"], doc["SecretString"]) == (name, value)
    want = moto.client().get_secret_value(SecretId=name)
    assert (doc["ARN"], doc["VersionId"], doc["VersionStages"]) == (want["ARN"], want["VersionId"], ["AWSCURRENT"])
    assert calls.ops() == [GSV]
    with no_upstream(proxy, "the second query"):
        assert ce.secret(f"/secretsmanager/get?secretId={q(name)}") == doc


def test_path_route_keeps_slashes_and_decodes_2f(ce, moto, proxy):
    name = f"ce/{unique('db')}/password"
    moto.client().create_secret(Name=name, SecretString="slashes")
    calls = upstream_calls(proxy)
    plain = ce.secret("/secretsmanager/" + name)
    encoded = ce.secret("/secretsmanager/" + q(name))
    assert (plain["Name"], plain["SecretString"]) == (name, "slashes")
    assert encoded == plain
    assert calls.ops() == [GSV], "one secret, one cache entry"


def test_path_route_version_stage_and_query_route_version_id(ce, moto, secret):
    name, value = secret
    sm = moto.client()
    (v1,) = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    sm.put_secret_value(SecretId=name, SecretString="rotated")
    assert ce.secret(f"/secretsmanager/{q(name)}?versionStage=AWSPREVIOUS")["SecretString"] == value
    assert ce.secret(f"/secretsmanager/get?secretId={q(name)}&versionId={v1}")["SecretString"] == value


def test_vault_route_with_x_vault_token(ce, secret):
    name, value = secret
    doc = ce.secret("/v1/" + q(name), token=None, headers={"X-Vault-Token": ce.ag.token})
    assert (doc["Name"], doc["SecretString"]) == (name, value)


def test_missing_secret_on_a_get_route(ce, moto):
    name = unique("ce-missing")
    expected, _, _ = moto.raw_status("GetSecretValue", {"SecretId": name})
    for path in (f"/secretsmanager/get?secretId={name}", f"/secretsmanager/{name}"):
        status, code, message = ce_error(ce.get(path))
        assert (status, code) == (expected, "ResourceNotFoundException"), (path, message)


def test_missing_secret_id_is_a_bad_request(ce, proxy):
    with no_upstream(proxy):
        status, code, _ = ce_error(ce.get("/secretsmanager/get"))
    assert (status, code) == (400, "BadRequestException")


# --------------------------------------------------------------------------- refusals on GET routes


def test_unsigned_get_is_401(ce, proxy, secret):
    with no_upstream(proxy):
        status, code, _ = ce_error(ce.get(f"/secretsmanager/get?secretId={q(secret[0])}", creds=None))
    assert (status, code) == (401, "MissingAuthenticationToken")


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_missing_or_wrong_token_is_403(ce, proxy, secret, token):
    with no_upstream(proxy):
        status, code, _ = ce_error(ce.get(f"/secretsmanager/{q(secret[0])}", token=token))
    assert (status, code) == (403, "InvalidSsrfTokenException")


def test_x_forwarded_for_is_400(ce, proxy, secret):
    with no_upstream(proxy):
        status, code, _ = ce_error(ce.get(f"/secretsmanager/get?secretId={q(secret[0])}",
                                          headers={"X-Forwarded-For": "203.0.113.9"}))
    assert (status, code) == (400, "BadRequestException")


def test_bad_signatures_and_keys_are_403(ce, moto, proxy, secret):
    path = f"/secretsmanager/get?secretId={q(secret[0])}"
    with no_upstream(proxy):
        wrong = ce_error(ce.get(path, creds=(moto.admin[0], "not-the-secret")))
        other = ce_error(ce.get(path, creds=moto.denied))
    assert wrong[:2] == (403, "SignatureDoesNotMatch")
    assert other[:2] == (403, "InvalidClientTokenId")


def test_the_main_listener_keeps_token_only_gets(ce, secret):
    """The signing requirement is the second listener's: the agent's own GET routes
    still answer a request with the token and no signature."""
    doc = ce.ag.secret_json(secret[0])
    assert doc["SecretString"] == secret[1]


# --------------------------------------------------------------------------- the SDK protocol


def test_sdk_at_secretsmanager(ce, moto, proxy, monkeypatch, secret):
    name, value = secret
    sm = sdk_clients(monkeypatch, ce.url("/secretsmanager"), moto.admin).sm
    direct = moto.client()
    calls = upstream_calls(proxy)
    got = sm.get_secret_value(SecretId=name)
    check_json_answer(got)
    assert strip(got) == strip(direct.get_secret_value(SecretId=name))
    described = sm.describe_secret(SecretId=name)
    assert strip(described) == strip(direct.describe_secret(SecretId=name))
    assert sorted(calls.ops()) == ["secretsmanager.DescribeSecret", GSV]
    with no_upstream(proxy, "the same calls again"):
        assert strip(sm.get_secret_value(SecretId=name)) == strip(got)
        assert strip(sm.describe_secret(SecretId=name)) == strip(described)
    assert got["SecretString"] == value
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as e:
        sm.get_secret_value(SecretId=unique("ce-sdk-missing"))
    assert client_error(e)[2] == "ResourceNotFoundException"


def test_sdk_at_parameterstore(ce, moto, proxy, monkeypatch):
    ssm = sdk_clients(monkeypatch, ce.url("/secretsmanager"), moto.admin,
                      ssm_endpoint=ce.url("/parameterstore")).ssm
    direct = moto.client("ssm")
    names = ["/ce/" + unique("a"), "/ce/" + unique("b")]
    direct.put_parameter(Name=names[0], Value="pa", Type="String")
    direct.put_parameter(Name=names[1], Value="pb", Type="SecureString")
    one = ssm.get_parameter(Name=names[0])
    check_json_answer(one)
    assert strip(one) == strip(direct.get_parameter(Name=names[0]))
    both = ssm.get_parameters(Names=names + ["/ce/missing-" + unique("m")], WithDecryption=True)
    assert {p["Name"]: p["Value"] for p in both["Parameters"]} == {names[0]: "pa", names[1]: "pb"}
    assert len(both["InvalidParameters"]) == 1
    with no_upstream(proxy, "the same GetParameter again"):
        assert strip(ssm.get_parameter(Name=names[0])) == strip(one)
    with pytest.raises(ssm.exceptions.ParameterNotFound) as e:
        ssm.get_parameter(Name="/ce/" + unique("missing"))
    assert client_error(e)[:3] == ("ParameterNotFound", 400, "ParameterNotFound")


def test_other_operations_are_validation_errors(ce, moto, proxy, monkeypatch, secret):
    c = sdk_clients(monkeypatch, ce.url("/secretsmanager"), moto.admin, ssm_endpoint=ce.url("/parameterstore"))
    for call, kw in ((c.ssm.get_parameters_by_path, {"Path": "/ce"}),
                     (c.ssm.delete_parameter, {"Name": "/ce/x"}),
                     (c.sm.put_secret_value, {"SecretId": secret[0], "SecretString": "no"}),
                     (c.sm.list_secrets, {})):
        with no_upstream(proxy, call.__name__), pytest.raises(ClientError) as e:
            call(**kw)
        assert client_error(e)[:3] == ("ValidationException", 400, "ValidationException"), call.__name__
    assert moto.client().get_secret_value(SecretId=secret[0])["SecretString"] == secret[1]


def test_unsigned_sdk_request_is_401(ce, proxy, secret):
    with no_upstream(proxy):
        status, headers, body = sdk_post(ce.port, GSV, {"SecretId": secret[0]}, creds=None, path="/secretsmanager")
    assert (status, error_type(headers)) == (401, "MissingAuthenticationToken"), (status, headers, body)


def test_sdk_with_another_key_is_refused(ce, moto, proxy, monkeypatch, secret):
    sm = sdk_clients(monkeypatch, ce.url("/secretsmanager"), moto.denied).sm
    with no_upstream(proxy), pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=secret[0])
    assert client_error(e)[:3] == ("InvalidClientTokenId", 403, "InvalidClientTokenId")


# --------------------------------------------------------------------------- caller_auth on this listener


def test_key_mode(agent, moto, counting_proxy, monkeypatch, tmp_path, secret):
    key_file = tmp_path / "ce.key"
    key_file.write_text(CALLER_KEY[1])
    key_file.chmod(0o600)
    ce = start_ce(agent, moto, counting_proxy, creds=CALLER_KEY, config={
        "caller_auth": "key", "caller_access_key_id": CALLER_KEY[0], "caller_secret_access_key_file": str(key_file)})
    assert ce.secret(f"/secretsmanager/get?secretId={q(secret[0])}")["SecretString"] == secret[1]
    assert ce_error(ce.get(f"/secretsmanager/{q(secret[0])}", creds=moto.admin))[:2] == (403, "InvalidClientTokenId")
    sm = sdk_clients(monkeypatch, ce.url("/secretsmanager"), CALLER_KEY).sm
    assert sm.get_secret_value(SecretId=secret[0])["SecretString"] == secret[1]
    assert counting_proxy.count("GetSecretValue") == 1


def test_none_mode_still_wants_the_token(agent, moto, counting_proxy, secret):
    ce = start_ce(agent, moto, counting_proxy, config={"caller_auth": "none"})
    assert ce.secret(f"/secretsmanager/{q(secret[0])}", creds=None)["SecretString"] == secret[1]
    assert ce_error(ce.get(f"/secretsmanager/{q(secret[0])}", creds=None, token=None))[:2] == \
        (403, "InvalidSsrfTokenException")
    status, _, body = sdk_post(ce.port, GSV, {"SecretId": secret[0]}, creds=None, path="/secretsmanager")
    assert status == 200 and json.loads(body)["SecretString"] == secret[1], body
