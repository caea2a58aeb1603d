"""Who may call the agent's SDK protocol: SigV4 checked by the agent itself
(`caller_auth`), while the agent signs its own calls to moto, which checks them
too. Default `credentials` mode: the agent's own key signs (any region, service
`secretsmanager` or `ssm` by target, any path); another valid AWS key, a wrong
secret, a tampered body, the wrong service in the scope, an unsigned request, a
malformed Authorization, a missing or wrong session token, and a captured request
replayed once the agent's test clock is 600 s on are refused with AWS's codes, and
never reach upstream. `key` mode (a caller key, its secret in a 0600 file), `none`
mode (flat and nested config), and the config errors around them."""

import json
import os

import pytest
from botocore.exceptions import ClientError

from conftest import unique
from sdk_common import (
    MAX_SKEW,
    agent_url,
    client_error,
    json_error,
    mod_agents,  # noqa: F401
    mod_proxy,  # noqa: F401
    no_upstream,
    sdk_clients,
    sdk_post,
    send_raw,
    signed_request,
    start_agent,
    upstream_calls,
)

GSV = "secretsmanager.GetSecretValue"
GET_PARAMETER = "AmazonSSM.GetParameter"
CALLER_KEY = ("AKIDCALLERKEY0000001", "caller-secret/with+chars=")


@pytest.fixture(scope="module")
def ag(mod_agents, moto, mod_proxy):  # noqa: F811
    return start_agent(mod_agents, moto, mod_proxy, config={"caller_auth": "credentials"})


@pytest.fixture
def proxy(mod_proxy):  # noqa: F811
    return mod_proxy


@pytest.fixture
def secret(moto):
    name, value = unique("auth"), "value-" + unique("v")
    moto.client().create_secret(Name=name, SecretString=value)
    return name, value


@pytest.fixture
def parameter(moto):
    name, value = "/auth/" + unique("p"), "pvalue-" + unique("v")
    moto.client("ssm").put_parameter(Name=name, Value=value, Type="String")
    return name, value


def refused(proxy, call, **kw):
    """(code, status, header code, message) of a call that must fail before any
    upstream request."""
    with no_upstream(proxy, "a refused call"), pytest.raises(ClientError) as e:
        call(**kw)
    return client_error(e)


def raw_refused(proxy, port, raw):
    with no_upstream(proxy, "a refused request"):
        status, headers, body = send_raw(port, raw)
    return (status,) + json_error(status, headers, body)


# --------------------------------------------------------------------------- credentials mode


def test_the_agents_own_key_any_region(ag, moto, monkeypatch, secret, parameter):
    for region in ("us-east-1", "eu-west-3"):
        c = sdk_clients(monkeypatch, agent_url(ag.port), moto.admin, region=region)
        assert c.sm.get_secret_value(SecretId=secret[0])["SecretString"] == secret[1]
        assert c.ssm.get_parameter(Name=parameter[0])["Parameter"]["Value"] == parameter[1]


def test_a_target_on_any_path(ag, moto, secret):
    for path in ("/", "/some/where", "/secretsmanager"):
        status, _, body = sdk_post(ag.port, GSV, {"SecretId": secret[0]}, moto.admin, path=path)
        assert status == 200, (path, body)
        assert json.loads(body)["SecretString"] == secret[1]


def test_another_valid_aws_key_is_refused(ag, moto, proxy, monkeypatch, secret, parameter):
    c = sdk_clients(monkeypatch, agent_url(ag.port), moto.denied)
    code, status, header, _ = refused(proxy, c.sm.get_secret_value, SecretId=secret[0])
    assert (code, status, header) == ("InvalidClientTokenId", 403, "InvalidClientTokenId")
    code, status, header, _ = refused(proxy, c.ssm.get_parameter, Name=parameter[0])
    assert (code, status, header) == ("InvalidClientTokenId", 403, "InvalidClientTokenId")
    other = moto.user("sdk-other", {"Effect": "Allow", "Action": "*", "Resource": "*"})
    c = sdk_clients(monkeypatch, agent_url(ag.port), other)
    assert refused(proxy, c.sm.get_secret_value, SecretId=secret[0])[:2] == ("InvalidClientTokenId", 403)


def test_a_wrong_secret_key_is_refused(ag, moto, proxy, monkeypatch, secret, parameter):
    c = sdk_clients(monkeypatch, agent_url(ag.port), (moto.admin[0], "wrong" + moto.admin[1][5:]))
    code, status, header, _ = refused(proxy, c.sm.get_secret_value, SecretId=secret[0])
    assert (code, status, header) == ("SignatureDoesNotMatch", 403, "SignatureDoesNotMatch")
    code, status, header, _ = refused(proxy, c.ssm.get_parameter, Name=parameter[0])
    assert (code, status, header) == ("SignatureDoesNotMatch", 403, "SignatureDoesNotMatch")


def test_an_unsigned_request_is_refused(ag, proxy, secret):
    raw = signed_request(ag.port, GSV, {"SecretId": secret[0]}, creds=None)
    status, code, message = raw_refused(proxy, ag.port, raw)
    assert (status, code) == (403, "MissingAuthenticationToken"), message


@pytest.mark.parametrize("authorization", [
    "AWS4-HMAC-SHA256 nonsense",
    "AWS4-HMAC-SHA256 Credential=AKIDX/20200101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host",
    "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=00",
    "AWS4-HMAC-SHA256 Credential=onlyonepart, SignedHeaders=host;x-amz-date, Signature=00",
])
def test_a_malformed_authorization_is_refused(ag, moto, proxy, secret, authorization):
    raw = signed_request(ag.port, GSV, {"SecretId": secret[0]}, creds=None,
                         headers={"Authorization": authorization, "X-Amz-Date": "20200101T000000Z"})
    status, code, message = raw_refused(proxy, ag.port, raw)
    assert (status, code) == (400, "IncompleteSignature"), message


def test_a_tampered_body_is_refused(ag, moto, proxy, secret):
    body = {"SecretId": secret[0]}
    raw = signed_request(ag.port, GSV, body, moto.admin)
    data = json.dumps(body).encode()
    forged = json.dumps({"SecretId": secret[0][:-1] + ("x" if secret[0][-1] != "x" else "y")}).encode()
    assert len(forged) == len(data) and raw.endswith(data)
    status, code, _ = raw_refused(proxy, ag.port, raw[:-len(data)] + forged)
    assert (status, code) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("target,body_key,scope", [
    (GSV, "SecretId", "ssm"),
    (GET_PARAMETER, "Name", "secretsmanager"),
])
def test_the_wrong_service_in_the_scope_is_refused(ag, moto, proxy, secret, parameter, target, body_key, scope):
    """Signed correctly, but for the other service than the target's."""
    ident = secret[0] if body_key == "SecretId" else parameter[0]
    raw = signed_request(ag.port, target, {body_key: ident}, moto.admin, service=scope)
    status, code, _ = raw_refused(proxy, ag.port, raw)
    assert (status, code) == (403, "SignatureDoesNotMatch")


def test_a_replayed_stale_request_is_refused(agent, moto, counting_proxy, monkeypatch, secret):
    """The agent's test clock, not the wall clock, judges X-Amz-Date: a request
    captured now and replayed when the agent's clock is 600 s on is refused,
    while the clock is still within 5 minutes a freshly signed one passes."""
    ag = start_agent(agent, moto, counting_proxy)
    captured = signed_request(ag.port, GSV, {"SecretId": secret[0]}, moto.admin)
    status, _, body = send_raw(ag.port, captured)
    assert status == 200, body
    assert json.loads(body)["SecretString"] == secret[1]

    ag.advance(MAX_SKEW - 60)
    status, _, body = sdk_post(ag.port, GSV, {"SecretId": secret[0]}, moto.admin)
    assert status == 200, "4 minutes off is within the window"

    ag.advance(600 - (MAX_SKEW - 60))
    status, code, message = raw_refused(counting_proxy, ag.port, captured)
    assert (status, code) == (403, "SignatureDoesNotMatch"), message
    assert message.startswith("Signature expired"), message
    # boto3 signing now (10 minutes behind the agent's clock) is refused the same way.
    sm = sdk_clients(monkeypatch, agent_url(ag.port), moto.admin).sm
    code, status, header, message = refused(counting_proxy, sm.get_secret_value, SecretId=secret[0])
    assert (code, status, header) == ("SignatureDoesNotMatch", 403, "SignatureDoesNotMatch")
    assert message.startswith("Signature expired"), message


# --------------------------------------------------------------------------- session tokens


def assumed_role_credentials(moto):
    """Temporary credentials (ASIA key, secret, session token) of a role that may
    read secrets and parameters, from moto's STS: moto accepts them only with their
    exact session token."""
    iam = moto.client("iam")
    name = unique("sdk-role")
    admin_arn = iam.get_user(UserName="admin")["User"]["Arn"]
    trust = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["secretsmanager:*", "ssm:*"], "Resource": "*"}]}))
    c = moto.client("sts").assume_role(RoleArn=arn, RoleSessionName="sdk-callers")["Credentials"]
    return c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]


def test_a_session_token_must_match_the_agents(agent, moto, counting_proxy, monkeypatch, secret):
    creds = assumed_role_credentials(moto)
    ag = start_agent(agent, moto, counting_proxy, creds=creds[:2], env={"AWS_SESSION_TOKEN": creds[2]})
    url = agent_url(ag.port)
    ok = sdk_clients(monkeypatch, url, creds).sm
    assert ok.get_secret_value(SecretId=secret[0])["SecretString"] == secret[1]
    assert counting_proxy.count("GetSecretValue") == 1, "the agent's own call, signed with the token, passed moto"
    wrong = sdk_clients(monkeypatch, url, (creds[0], creds[1], creds[2][:-4] + "AAAA")).sm
    assert refused(counting_proxy, wrong.get_secret_value, SecretId=secret[0])[:3] == \
        ("InvalidClientTokenId", 403, "InvalidClientTokenId")
    missing = sdk_clients(monkeypatch, url, creds[:2]).sm
    assert refused(counting_proxy, missing.get_secret_value, SecretId=secret[0])[:3] == \
        ("InvalidClientTokenId", 403, "InvalidClientTokenId")


# --------------------------------------------------------------------------- key mode


def write_key_file(path, secret_key):
    """The caller's secret key, mode 0600 from the start, with a trailing newline
    as an editor leaves it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret_key + "\n")
    assert os.stat(path).st_mode & 0o777 == 0o600
    return path


def test_key_mode_accepts_the_caller_key_only(agent, moto, counting_proxy, monkeypatch, tmp_path, secret, parameter):
    key_file = write_key_file(tmp_path / "caller.key", CALLER_KEY[1])
    ag = start_agent(agent, moto, counting_proxy, config={
        "caller_auth": "key", "caller_access_key_id": CALLER_KEY[0], "caller_secret_access_key_file": str(key_file)})
    url = agent_url(ag.port)
    c = sdk_clients(monkeypatch, url, CALLER_KEY)
    assert c.sm.get_secret_value(SecretId=secret[0])["SecretString"] == secret[1]
    assert c.ssm.get_parameter(Name=parameter[0])["Parameter"]["Value"] == parameter[1]
    # The agent signed those upstream with its own (moto's admin) key.
    assert counting_proxy.count("GetSecretValue") == 1 and counting_proxy.count("GetParameter", "AmazonSSM") == 1
    assert all(CALLER_KEY[0] not in str(h) for _, _, h, _ in counting_proxy.requests)

    own = sdk_clients(monkeypatch, url, moto.admin).sm
    assert refused(counting_proxy, own.get_secret_value, SecretId=secret[0])[:3] == \
        ("InvalidClientTokenId", 403, "InvalidClientTokenId")
    bad = sdk_clients(monkeypatch, url, (CALLER_KEY[0], "not-the-secret")).sm
    assert refused(counting_proxy, bad.get_secret_value, SecretId=secret[0])[:3] == \
        ("SignatureDoesNotMatch", 403, "SignatureDoesNotMatch")
    raw = signed_request(ag.port, GSV, {"SecretId": secret[0]}, creds=None)
    assert raw_refused(counting_proxy, ag.port, raw)[:2] == (403, "MissingAuthenticationToken")


# --------------------------------------------------------------------------- none mode


def check_open_to_anyone(port, proxy, monkeypatch, secret, parameter):
    status, _, body = sdk_post(port, GSV, {"SecretId": secret[0]})
    assert status == 200, body
    assert json.loads(body)["SecretString"] == secret[1]
    c = sdk_clients(monkeypatch, agent_url(port), ("AKIDANYONE0000000000", "anything"))
    assert c.ssm.get_parameter(Name=parameter[0])["Parameter"]["Value"] == parameter[1]
    # The agent's own signature is what moto checked.
    assert proxy.count("GetSecretValue") == 1 and proxy.count("GetParameter", "AmazonSSM") == 1


def test_none_mode_serves_unsigned_requests(agent, moto, counting_proxy, monkeypatch, secret, parameter):
    ag = start_agent(agent, moto, counting_proxy, config={"caller_auth": "none"})
    check_open_to_anyone(ag.port, counting_proxy, monkeypatch, secret, parameter)


def test_none_mode_in_the_nested_layout(agent, moto, counting_proxy, monkeypatch, secret, parameter):
    raw = ('[logging]\nlog_to_file = false\n'
           '[capabilities.secrets_manager]\nhttp_port = 0\nregion = "us-east-1"\n'
           'validate_credentials = false\ncaller_auth = "none"\n')
    ag = agent(counting_proxy.url, creds=moto.admin, raw_config=raw, env={"AWS_ENDPOINT_URL_SSM": counting_proxy.url})
    check_open_to_anyone(ag.port, counting_proxy, monkeypatch, secret, parameter)


def test_key_mode_in_the_nested_layout(agent, moto, counting_proxy, monkeypatch, tmp_path, secret):
    key_file = write_key_file(tmp_path / "nested.key", CALLER_KEY[1])
    raw = ('[logging]\nlog_to_file = false\n'
           '[capabilities.secrets_manager]\nhttp_port = 0\nregion = "us-east-1"\n'
           f'validate_credentials = false\ncaller_auth = "key"\ncaller_access_key_id = "{CALLER_KEY[0]}"\n'
           f'caller_secret_access_key_file = "{key_file}"\n')
    ag = agent(counting_proxy.url, creds=moto.admin, raw_config=raw)
    sm = sdk_clients(monkeypatch, agent_url(ag.port), CALLER_KEY).sm
    assert sm.get_secret_value(SecretId=secret[0])["SecretString"] == secret[1]


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("config,named", [
    ({"caller_auth": "bogus"}, "caller_auth"),
    ({"caller_auth": "key", "caller_secret_access_key_file": "KEY_FILE"}, "caller_access_key_id"),
    ({"caller_auth": "key", "caller_access_key_id": CALLER_KEY[0]}, "caller_secret_access_key_file"),
    ({"caller_auth": "key", "caller_access_key_id": CALLER_KEY[0],
      "caller_secret_access_key_file": "/nonexistent/caller.key"}, "caller_secret_access_key_file"),
    ({"caller_auth": "none", "bind_address": "0.0.0.0", "allow_non_loopback": True}, "caller_auth"),
])
def test_config_errors_stop_the_start(agent, moto, tmp_path, config, named):
    """Exit code 1 and the key named on stderr, as for every config error."""
    key_file = write_key_file(tmp_path / "valid.key", CALLER_KEY[1])
    config = {k: (str(key_file) if v == "KEY_FILE" else v) for k, v in config.items()}
    rc, _, err = agent.run_expect_exit(moto.url, creds=moto.admin, config=config)
    assert rc == 1, (rc, err)
    assert named in err, err


def test_the_module_agent_still_fetches_once(ag, moto, proxy, secret):
    """After the refusals of this module, a good request goes upstream exactly once."""
    calls = upstream_calls(proxy)
    status, _, body = sdk_post(ag.port, GSV, {"SecretId": secret[0]}, moto.admin)
    assert status == 200, body
    assert calls.ops() == [GSV]
