"""Parameter Store's own JSON 1.1 protocol (AmazonSSM.*) on the agent's listener,
with boto3's SSM client as the unmodified client (AWS_ENDPOINT_URL_SSM pointing at
the agent): GetParameter (String, SecureString with and without WithDecryption, by
version), GetParameters (a missing name in InvalidParameters),
GetParametersByPath (Recursive, ParameterFilters, WithDecryption, a paginator over
several MaxResults pages, each page cached); every answer equal to moto's, a
second identical call made without an upstream call; ParameterNotFound with its
status and X-Amzn-Errortype; and writes (DeleteParameter, PutParameter) refused
with ValidationException, without an upstream call and with moto unchanged."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import unique
from sdk_common import (
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

GET_PARAMETER = "AmazonSSM.GetParameter"
BY_PATH = "AmazonSSM.GetParametersByPath"


@pytest.fixture(scope="module")
def ag(mod_agents, moto, mod_proxy):  # noqa: F811
    return start_agent(mod_agents, moto, mod_proxy, config={"ttl_seconds": 300, "parameter_store_ttl_seconds": 300})


@pytest.fixture
def ssm(ag, moto, monkeypatch):
    """boto3 SSM through the agent (AWS_ENDPOINT_URL_SSM), signing with the agent's credentials."""
    return sdk_clients(monkeypatch, agent_url(ag.port), moto.admin).ssm


@pytest.fixture
def direct(moto):
    return moto.client("ssm")


@pytest.fixture
def proxy(mod_proxy):  # noqa: F811
    return mod_proxy


def cached_twice(proxy, call, **kw):
    first = call(**kw)
    check_json_answer(first)
    with no_upstream(proxy, f"the second identical {call.__name__}"):
        second = call(**kw)
    assert strip(second) == strip(first)
    return first


def test_get_parameter_string_equals_moto_and_is_cached(ssm, direct, proxy):
    name = "/sdk/" + unique("host")
    direct.put_parameter(Name=name, Value="db.internal", Type="String")
    calls = upstream_calls(proxy)
    got = cached_twice(proxy, ssm.get_parameter, Name=name)
    assert calls.ops() == [GET_PARAMETER]
    assert calls.bodies()[0]["Name"] == name
    want = direct.get_parameter(Name=name)
    assert strip(got) == strip(want)
    assert got["Parameter"]["LastModifiedDate"] == want["Parameter"]["LastModifiedDate"]


def test_secure_string_with_and_without_decryption(ssm, direct, proxy):
    name = "/sdk/" + unique("password")
    direct.put_parameter(Name=name, Value="hunter2", Type="SecureString")
    plain = cached_twice(proxy, ssm.get_parameter, Name=name, WithDecryption=True)
    assert (plain["Parameter"]["Value"], plain["Parameter"]["Type"]) == ("hunter2", "SecureString")
    assert strip(plain) == strip(direct.get_parameter(Name=name, WithDecryption=True))
    # Without decryption: another entry, with the value as AWS leaves it.
    calls = upstream_calls(proxy)
    sealed = cached_twice(proxy, ssm.get_parameter, Name=name, WithDecryption=False)
    assert len(calls.ops()) == 1
    assert sealed["Parameter"]["Value"] != "hunter2"
    assert strip(sealed) == strip(direct.get_parameter(Name=name, WithDecryption=False))


def test_a_selected_version(ssm, direct, proxy):
    name = "/sdk/" + unique("flag")
    direct.put_parameter(Name=name, Value="v1", Type="String")
    direct.put_parameter(Name=name, Value="v2", Type="String", Overwrite=True)
    one = cached_twice(proxy, ssm.get_parameter, Name=f"{name}:1")
    assert (one["Parameter"]["Value"], one["Parameter"]["Version"]) == ("v1", 1)
    assert strip(one) == strip(direct.get_parameter(Name=f"{name}:1"))
    assert cached_twice(proxy, ssm.get_parameter, Name=name)["Parameter"]["Value"] == "v2"


def test_the_wire_json_is_awss(ag, moto, direct):
    """LastModifiedDate an epoch number, the document moto sends."""
    name = "/sdk/" + unique("wire")
    direct.put_parameter(Name=name, Value="w", Type="String")
    status, _, body = sdk_post(ag.port, GET_PARAMETER, {"Name": name}, moto.admin, service="ssm")
    assert status == 200, body
    doc = json.loads(body)
    assert isinstance(doc["Parameter"]["LastModifiedDate"], (int, float))
    want = direct.get_parameter(Name=name)["Parameter"]
    assert doc["Parameter"]["LastModifiedDate"] == pytest.approx(want["LastModifiedDate"].timestamp(), abs=1e-3)
    assert {k: v for k, v in doc["Parameter"].items() if k != "LastModifiedDate"} == \
        {k: v for k, v in want.items() if k != "LastModifiedDate"}


def test_parameter_not_found(ssm, direct):
    name = "/sdk/" + unique("missing")
    with pytest.raises(ClientError) as direct_err:
        direct.get_parameter(Name=name)
    with pytest.raises(ssm.exceptions.ParameterNotFound) as e:
        ssm.get_parameter(Name=name)
    code, status, header, _ = client_error(e)
    assert code == header == "ParameterNotFound"
    assert status == client_error(direct_err)[1] == 400
    check_json_answer(e.value.response)


# --------------------------------------------------------------------------- GetParameters


def by_name(params):
    return sorted(params, key=lambda p: p["Name"])


def test_get_parameters_with_a_missing_name(ssm, direct, proxy):
    prefix = "/sdk/" + unique("many")
    names = [f"{prefix}/a", f"{prefix}/b", f"{prefix}/c"]
    for i, n in enumerate(names):
        direct.put_parameter(Name=n, Value=f"value-{i}", Type="String")
    missing = f"{prefix}/missing"
    asked = [names[0], missing, names[1], names[2]]
    calls = upstream_calls(proxy)
    got = ssm.get_parameters(Names=asked)
    check_json_answer(got)
    want = direct.get_parameters(Names=asked)
    assert by_name(got["Parameters"]) == by_name(want["Parameters"])
    assert got["InvalidParameters"] == want["InvalidParameters"] == [missing]
    assert calls.ops(), "the first call went upstream"


def test_get_parameters_decrypts_when_asked_and_is_cached(ssm, direct, proxy):
    prefix = "/sdk/" + unique("pair")
    direct.put_parameter(Name=f"{prefix}/plain", Value="p", Type="String")
    direct.put_parameter(Name=f"{prefix}/secret", Value="s3cr3t", Type="SecureString")
    names = [f"{prefix}/plain", f"{prefix}/secret"]
    got = cached_twice(proxy, ssm.get_parameters, Names=names, WithDecryption=True)
    assert {p["Name"]: p["Value"] for p in got["Parameters"]} == {names[0]: "p", names[1]: "s3cr3t"}
    assert by_name(got["Parameters"]) == by_name(direct.get_parameters(Names=names, WithDecryption=True)["Parameters"])


# --------------------------------------------------------------------------- GetParametersByPath


@pytest.fixture
def tree(direct):
    """/sdk/<unique>/k0..k4 (String), /sdk/<unique>/deep/s (SecureString) and
    /sdk/<unique>/deep/t (String): 7 parameters, 5 of them direct children."""
    root = "/sdk/" + unique("tree")
    for i in range(5):
        direct.put_parameter(Name=f"{root}/k{i}", Value=f"v{i}", Type="String")
    direct.put_parameter(Name=f"{root}/deep/s", Value="deep-secret", Type="SecureString")
    direct.put_parameter(Name=f"{root}/deep/t", Value="deep-text", Type="String")
    return root


def paginate(client, **kw):
    return [strip(p) for p in client.get_paginator("get_parameters_by_path").paginate(**kw)]


def test_by_path_pages_equal_moto_and_each_page_is_cached(ssm, direct, proxy, tree):
    kw = {"Path": tree, "Recursive": True, "WithDecryption": True, "PaginationConfig": {"PageSize": 2}}
    calls = upstream_calls(proxy)
    got = paginate(ssm, **kw)
    assert len(got) >= 4, f"7 parameters 2 a page: {len(got)} pages"
    assert calls.ops() == [BY_PATH] * len(got), "one upstream call a page"
    sent = calls.bodies()
    assert all(b["Path"] == tree and b["MaxResults"] == 2 and b.get("Recursive") is True for b in sent), sent
    assert "NextToken" not in sent[0] and all("NextToken" in b for b in sent[1:]), sent
    want = paginate(direct, **kw)
    assert got == want
    values = {p["Name"]: p["Value"] for page in got for p in page["Parameters"]}
    assert len(values) == 7 and values[f"{tree}/deep/s"] == "deep-secret"
    with no_upstream(proxy, "the same pages again"):
        assert paginate(ssm, **kw) == got


def test_by_path_not_recursive_and_filtered(ssm, direct, proxy, tree):
    flat = ssm.get_parameters_by_path(Path=tree, Recursive=False)
    check_json_answer(flat)
    assert sorted(p["Name"] for p in flat["Parameters"]) == [f"{tree}/k{i}" for i in range(5)]
    assert strip(flat) == strip(direct.get_parameters_by_path(Path=tree, Recursive=False))

    filters = [{"Key": "Type", "Option": "Equals", "Values": ["SecureString"]}]
    calls = upstream_calls(proxy)
    secure = ssm.get_parameters_by_path(Path=tree, Recursive=True, ParameterFilters=filters)
    assert calls.bodies(BY_PATH)[0]["ParameterFilters"] == filters
    assert [p["Name"] for p in secure["Parameters"]] == [f"{tree}/deep/s"]
    assert secure["Parameters"][0]["Value"] != "deep-secret", "not decrypted unless asked"
    assert strip(secure) == strip(direct.get_parameters_by_path(Path=tree, Recursive=True, ParameterFilters=filters))
    # Different filters, another entry.
    other = [{"Key": "Type", "Option": "Equals", "Values": ["String"]}]
    calls = upstream_calls(proxy)
    strings = cached_twice(proxy, ssm.get_parameters_by_path, Path=tree, Recursive=True, ParameterFilters=other)
    assert calls.ops() == [BY_PATH]
    assert len(strings["Parameters"]) == 6


def test_by_path_paginator_with_a_small_max_results(ssm, direct, tree):
    """boto3's own paginator with MaxResults=1 through the agent: every parameter,
    once, in moto's order."""
    pages = list(ssm.get_paginator("get_parameters_by_path").paginate(
        Path=tree, Recursive=True, PaginationConfig={"PageSize": 1}))
    names = [p["Name"] for page in pages for p in page["Parameters"]]
    assert len(pages) >= 7
    assert names == [p["Name"] for page in paginate(direct, Path=tree, Recursive=True,
                                                    PaginationConfig={"PageSize": 1}) for p in page["Parameters"]]
    assert len(set(names)) == 7


# --------------------------------------------------------------------------- writes are refused


def refused(proxy, call, **kw):
    with no_upstream(proxy, f"{call.__name__} (a write)"), pytest.raises(ClientError) as e:
        call(**kw)
    code, status, header, message = client_error(e)
    assert (code, status, header) == ("ValidationException", 400, "ValidationException"), (code, status, header)
    assert "read" in message.lower(), message


def test_delete_parameter_is_refused_and_moto_unchanged(ssm, direct, proxy):
    name = "/sdk/" + unique("keep")
    direct.put_parameter(Name=name, Value="kept", Type="String")
    refused(proxy, ssm.delete_parameter, Name=name)
    assert direct.get_parameter(Name=name)["Parameter"]["Value"] == "kept"


def test_put_parameter_is_refused_and_moto_unchanged(ssm, direct, proxy):
    name = "/sdk/" + unique("put")
    direct.put_parameter(Name=name, Value="v1", Type="String")
    refused(proxy, ssm.put_parameter, Name=name, Value="v2", Type="String", Overwrite=True)
    refused(proxy, ssm.put_parameter, Name=name + "-new", Value="x", Type="String")
    p = direct.get_parameter(Name=name)["Parameter"]
    assert (p["Value"], p["Version"]) == ("v1", 1)
    with pytest.raises(direct.exceptions.ParameterNotFound):
        direct.get_parameter(Name=name + "-new")
    refused(proxy, ssm.describe_parameters)
