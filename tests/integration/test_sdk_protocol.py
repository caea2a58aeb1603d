"""Secrets Manager's own JSON 1.1 protocol on the agent's listener, with boto3 as
the unmodified client (AWS_ENDPOINT_URL_SECRETS_MANAGER pointing at the agent,
the agent's own credentials to sign): GetSecretValue (current, VersionStage,
VersionId, binary), BatchGetSecretValue (by ID with a missing one in Errors, by
Filters page by page), DescribeSecret; every answer equal to what boto3 gets
straight from moto, a second identical call answered without any upstream call,
AWS's content type and request ID; errors (ResourceNotFoundException with its
status and X-Amzn-Errortype, an upstream AccessDenied passed through); and the
write operations refused with ValidationException, without an upstream call and
with moto unchanged. Parameter Store's operations: test_sdk_parameters.py;
caller authentication: test_sdk_auth.py."""

import base64
import json

import pytest
from botocore.exceptions import ClientError

from conftest import unique
from sdk_common import (
    JSON_11,
    agent_url,
    check_json_answer,
    client_error,
    mod_agents,  # noqa: F401
    mod_proxy,  # noqa: F401
    no_upstream,
    sdk_clients,
    sdk_post,
    start_agent,
    strip,
    upstream_calls,
)

GSV = "secretsmanager.GetSecretValue"


@pytest.fixture(scope="module")
def ag(mod_agents, moto, mod_proxy):  # noqa: F811
    """One agent for the module: default caller_auth (the agent's own credentials)."""
    return start_agent(mod_agents, moto, mod_proxy, config={"ttl_seconds": 300})


@pytest.fixture
def sm(ag, moto, monkeypatch):
    """boto3 Secrets Manager through the agent, signing with the agent's credentials."""
    return sdk_clients(monkeypatch, agent_url(ag.port), moto.admin).sm


@pytest.fixture
def direct(moto):
    return moto.client()


@pytest.fixture
def proxy(mod_proxy):  # noqa: F811
    return mod_proxy


def same_twice(proxy, call, *args, **kw):
    """`call` twice: the first answer's, after checking that the second is equal,
    carries the protocol's headers and made no upstream call."""
    first = call(*args, **kw)
    check_json_answer(first)
    with no_upstream(proxy, f"the second identical {call.__name__}"):
        second = call(*args, **kw)
    check_json_answer(second)
    assert strip(second) == strip(first)
    return first


# --------------------------------------------------------------------------- GetSecretValue


def test_get_secret_value_equals_moto_and_the_second_is_cached(sm, direct, proxy):
    name = unique("sdk-gsv")
    direct.create_secret(Name=name, SecretString='{"user":"admin","pw":"p\\"w"}')
    calls = upstream_calls(proxy)
    got = same_twice(proxy, sm.get_secret_value, SecretId=name)
    assert calls.ops() == [GSV], "one upstream GetSecretValue for the first call"
    assert calls.bodies(GSV)[0]["SecretId"] == name
    want = direct.get_secret_value(SecretId=name)
    assert strip(got) == strip(want)
    # CreatedDate is an epoch number on the wire: botocore parsed it to the same instant.
    assert got["CreatedDate"] == want["CreatedDate"]
    assert got["SecretString"] == '{"user":"admin","pw":"p\\"w"}'


def test_by_arn_and_binary(sm, direct, proxy):
    name = unique("sdk-bin")
    data = bytes(range(256))
    arn = direct.create_secret(Name=name, SecretBinary=data)["ARN"]
    got = same_twice(proxy, sm.get_secret_value, SecretId=arn)
    assert got["SecretBinary"] == data
    assert "SecretString" not in got
    assert strip(got) == strip(direct.get_secret_value(SecretId=arn))


def test_the_wire_json_is_awss(ag, moto, direct):
    """The bytes behind the SDK's parsing: the same JSON document moto (AWS's
    format) sends, CreatedDate an epoch number (botocore would parse a string too),
    SecretBinary base64."""
    name = unique("sdk-wire")
    data = b"\x00\x01binary\xff"
    direct.create_secret(Name=name, SecretBinary=data)
    status, headers, body = sdk_post(ag.port, GSV, {"SecretId": name}, moto.admin)
    assert status == 200, body
    assert headers["content-type"].split(";")[0].strip() == JSON_11
    assert headers.get("x-amzn-requestid")
    doc = json.loads(body)
    m_status, _, m_body = moto.raw_status("GetSecretValue", {"SecretId": name})
    assert m_status == 200
    assert doc == json.loads(m_body)
    assert isinstance(doc["CreatedDate"], (int, float)) and not isinstance(doc["CreatedDate"], bool)
    assert base64.b64decode(doc["SecretBinary"]) == data


def test_version_stage_and_version_id(sm, direct, proxy):
    name = unique("sdk-ver")
    v1 = direct.create_secret(Name=name, SecretString="one")["VersionId"]
    v2 = direct.put_secret_value(SecretId=name, SecretString="two")["VersionId"]

    cur = same_twice(proxy, sm.get_secret_value, SecretId=name)
    assert (cur["VersionId"], cur["SecretString"], cur["VersionStages"]) == (v2, "two", ["AWSCURRENT"])

    prev = same_twice(proxy, sm.get_secret_value, SecretId=name, VersionStage="AWSPREVIOUS")
    assert (prev["VersionId"], prev["SecretString"]) == (v1, "one")
    assert strip(prev) == strip(direct.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS"))

    by_id = same_twice(proxy, sm.get_secret_value, SecretId=name, VersionId=v1)
    assert strip(by_id) == strip(direct.get_secret_value(SecretId=name, VersionId=v1))

    both = same_twice(proxy, sm.get_secret_value, SecretId=name, VersionId=v2, VersionStage="AWSCURRENT")
    assert both["SecretString"] == "two"


def test_a_missing_secret_raises_resource_not_found_with_moto_status(sm, moto, direct):
    name = unique("sdk-missing")
    with pytest.raises(ClientError) as direct_err:
        direct.get_secret_value(SecretId=name)
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as e:
        sm.get_secret_value(SecretId=name)
    code, status, header, message = client_error(e)
    assert code == header == "ResourceNotFoundException"
    assert status == client_error(direct_err)[1], "the service's status passes through"
    assert "can't find" in message
    check_json_answer(e.value.response)


def test_an_unknown_version_id_raises_resource_not_found(sm, direct):
    name = unique("sdk-nover")
    direct.create_secret(Name=name, SecretString="x")
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as e:
        sm.get_secret_value(SecretId=name, VersionId="00000000-0000-0000-0000-000000000000")
    code, _, header, _ = client_error(e)
    assert code == header == "ResourceNotFoundException"


def test_upstream_access_denied_passes_through(agent, moto, counting_proxy, monkeypatch):
    """The agent signs as the "denied" user (GetSecretValue denied by IAM) and the
    caller with the same key: moto's refusal reaches the SDK as AccessDenied."""
    name = unique("sdk-denied")
    moto.client().create_secret(Name=name, SecretString="x")
    ag = start_agent(agent, moto, counting_proxy, creds=moto.denied)
    sm = sdk_clients(monkeypatch, agent_url(ag.port), moto.denied).sm
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=name)
    code, status, header, message = client_error(e)
    assert code in ("AccessDenied", "AccessDeniedException") and header == code, (code, header)
    assert status in (400, 403)
    assert "GetSecretValue" in message
    assert counting_proxy.count("GetSecretValue") == 1


# --------------------------------------------------------------------------- BatchGetSecretValue


def by_name(values):
    return sorted(values, key=lambda v: v["Name"])


def test_batch_by_ids_with_a_missing_one(sm, direct, proxy):
    names = [unique("sdk-batch") for _ in range(2)]
    for i, n in enumerate(names):
        direct.create_secret(Name=n, SecretString=f"batch-{i}")
    missing = unique("sdk-batch-missing")
    ids = [names[0], missing, names[1]]

    got = sm.batch_get_secret_value(SecretIdList=ids)
    check_json_answer(got)
    want = direct.batch_get_secret_value(SecretIdList=ids)
    assert by_name(got["SecretValues"]) == by_name(want["SecretValues"])
    assert [(e["SecretId"], e["ErrorCode"]) for e in got["Errors"]] == [(missing, "ResourceNotFoundException")]
    assert got["Errors"][0].get("Message"), got["Errors"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in want["Errors"]] == [(missing, "ResourceNotFoundException")]
    assert "NextToken" not in got


def test_batch_by_ids_comes_from_the_cache(sm, direct, proxy):
    names = [unique("sdk-bcache") for _ in range(3)]
    for n in names:
        direct.create_secret(Name=n, SecretString="v-" + n)
    # GetSecretValue fills the cache for two of them ...
    for n in names[:2]:
        sm.get_secret_value(SecretId=n)
    with no_upstream(proxy, "a batch of cached secrets"):
        got = sm.batch_get_secret_value(SecretIdList=names[:2])
    assert [v["SecretString"] for v in by_name(got["SecretValues"])] == ["v-" + n for n in sorted(names[:2])]
    assert got.get("Errors", []) == []
    # ... the third is fetched once, and then the whole batch is cached.
    calls = upstream_calls(proxy)
    first = sm.batch_get_secret_value(SecretIdList=names)
    assert len(calls.ops()) == 1, calls.ops()
    assert calls.ops()[0] in (GSV, "secretsmanager.BatchGetSecretValue"), calls.ops()
    assert names[2] in str(calls.bodies())
    with no_upstream(proxy, "the second identical batch"):
        second = sm.batch_get_secret_value(SecretIdList=names)
    assert strip(second) == strip(first)
    assert by_name(first["SecretValues"]) == by_name(direct.batch_get_secret_value(SecretIdList=names)["SecretValues"])


def test_batch_by_filters_pages_pass_upstream_and_are_cached(sm, direct, proxy):
    tag = unique("sdk-tag")
    names = sorted(unique("sdk-bfilt") for _ in range(3))
    for n in names:
        direct.create_secret(Name=n, SecretString="f-" + n, Tags=[{"Key": tag, "Value": "x"}])
    direct.create_secret(Name=unique("sdk-bfilt-other"), SecretString="no", Tags=[{"Key": unique("t"), "Value": "x"}])
    filters = [{"Key": "tag-key", "Values": [tag]}]

    def pages(client):
        out, token = [], None
        while True:
            kw = {"NextToken": token} if token else {}
            page = client.batch_get_secret_value(Filters=filters, MaxResults=2, **kw)
            out.append(page)
            token = page.get("NextToken")
            if not token:
                return out

    calls = upstream_calls(proxy)
    got = pages(sm)
    assert calls.ops() == ["secretsmanager.BatchGetSecretValue"] * len(got)
    assert all(b["Filters"] == filters and b["MaxResults"] == 2 for b in calls.bodies())
    want = pages(direct)
    assert [strip(p) for p in got] == [strip(p) for p in want]
    assert len(got) >= 2, "several pages"
    assert sorted(v["Name"] for p in got for v in p["SecretValues"]) == names
    for p in got:
        check_json_answer(p)
    with no_upstream(proxy, "the same pages again"):
        again = pages(sm)
    assert [strip(p) for p in again] == [strip(p) for p in got]


# --------------------------------------------------------------------------- DescribeSecret


def test_describe_secret_equals_moto_and_is_cached(sm, direct, proxy):
    name = unique("sdk-desc")
    direct.create_secret(Name=name, SecretString="d1", Description="described",
                         Tags=[{"Key": "team", "Value": "sdk"}])
    direct.put_secret_value(SecretId=name, SecretString="d2")
    calls = upstream_calls(proxy)
    got = same_twice(proxy, sm.describe_secret, SecretId=name)
    assert calls.ops() == ["secretsmanager.DescribeSecret"]
    want = direct.describe_secret(SecretId=name)
    assert strip(got) == strip(want)
    assert got["CreatedDate"] == want["CreatedDate"] and got["LastChangedDate"] == want["LastChangedDate"]
    assert sorted(s for st in got["VersionIdsToStages"].values() for s in st) == ["AWSCURRENT", "AWSPREVIOUS"]


def test_describe_a_missing_secret(sm):
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as e:
        sm.describe_secret(SecretId=unique("sdk-desc-missing"))
    code, _, header, _ = client_error(e)
    assert code == header == "ResourceNotFoundException"


# --------------------------------------------------------------------------- writes are refused


def refused_without_upstream(proxy, call, **kw):
    with no_upstream(proxy, f"{call.__name__} (a write)"), pytest.raises(ClientError) as e:
        call(**kw)
    code, status, header, message = client_error(e)
    assert (code, status, header) == ("ValidationException", 400, "ValidationException"), (code, status, header)
    assert "read" in message.lower(), message
    return message


def test_put_secret_value_is_refused_and_moto_unchanged(sm, direct, proxy):
    name = unique("sdk-put")
    v1 = direct.create_secret(Name=name, SecretString="before")["VersionId"]
    refused_without_upstream(proxy, sm.put_secret_value, SecretId=name, SecretString="after")
    now = direct.get_secret_value(SecretId=name)
    assert (now["SecretString"], now["VersionId"]) == ("before", v1)
    assert [v["VersionId"] for v in direct.list_secret_version_ids(SecretId=name)["Versions"]] == [v1]


def test_create_secret_is_refused_and_moto_unchanged(sm, direct, proxy):
    name = unique("sdk-create")
    refused_without_upstream(proxy, sm.create_secret, Name=name, SecretString="never")
    with pytest.raises(direct.exceptions.ResourceNotFoundException):
        direct.describe_secret(SecretId=name)


@pytest.mark.parametrize("op,kw", [
    ("delete_secret", {"SecretId": "NAME", "ForceDeleteWithoutRecovery": True}),
    ("update_secret", {"SecretId": "NAME", "SecretString": "changed"}),
    ("list_secrets", {}),
    ("rotate_secret", {"SecretId": "NAME"}),
    ("tag_resource", {"SecretId": "NAME", "Tags": [{"Key": "k", "Value": "v"}]}),
])
def test_other_operations_are_refused(sm, direct, proxy, op, kw):
    name = unique("sdk-other")
    direct.create_secret(Name=name, SecretString="kept")
    kw = {k: (name if v == "NAME" else v) for k, v in kw.items()}
    refused_without_upstream(proxy, getattr(sm, op), **kw)
    d = direct.describe_secret(SecretId=name)
    assert "DeletedDate" not in d and not d.get("Tags") and not d.get("RotationEnabled")
    assert direct.get_secret_value(SecretId=name)["SecretString"] == "kept"
