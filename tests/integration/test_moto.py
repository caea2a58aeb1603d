"""End to end against moto with signature checking on: the agent's SigV4 signing,
request shapes and the success/error bodies."""

import base64
import json
import re
from urllib.parse import quote

import pytest

from conftest import unique, wait_until

SUCCESS_KEYS_STRING = ["ARN", "Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"]
SUCCESS_KEYS_BINARY = ["ARN", "Name", "VersionId", "SecretBinary", "VersionStages", "CreatedDate"]


@pytest.fixture
def sm(moto):
    return moto.client()


@pytest.fixture
def ag(agent, moto):
    return agent(moto.url, creds=moto.admin)


def created_epoch(sm, secret_id, **kw):
    return sm.get_secret_value(SecretId=secret_id, **kw)["CreatedDate"].timestamp()


def check_created_date(doc, expected_epoch):
    cd = doc["CreatedDate"]
    assert isinstance(cd, str), f"CreatedDate must be a JSON string, got {cd!r}"
    assert re.fullmatch(r"\d+(\.\d+)?", cd), cd
    assert abs(float(cd) - expected_epoch) < 1e-3
    if expected_epoch == int(expected_epoch):
        assert cd == str(int(expected_epoch)), "whole seconds print without a fraction"


def test_string_secret_by_name(ag, sm):
    name = unique("str")
    created = sm.create_secret(Name=name, SecretString='{"user":"admin","pw":"p\\"w"}')
    status, headers, body = ag.secret(name)
    assert status == 200, body
    assert headers["content-type"].split(";")[0].strip() == "application/json"
    doc = json.loads(body)
    assert list(doc) == SUCCESS_KEYS_STRING
    assert doc["ARN"] == created["ARN"]
    assert doc["Name"] == name
    assert doc["VersionId"] == created["VersionId"]
    assert doc["SecretString"] == '{"user":"admin","pw":"p\\"w"}'
    assert doc["VersionStages"] == ["AWSCURRENT"]
    check_created_date(doc, created_epoch(sm, name))


def test_binary_secret(ag, sm):
    name = unique("bin")
    data = bytes(range(256)) + b"\x00\xff"
    sm.create_secret(Name=name, SecretBinary=data)
    status, headers, body = ag.secret(name)
    assert status == 200, body
    assert headers["content-type"].split(";")[0].strip() == "application/json"
    doc = json.loads(body)
    assert list(doc) == SUCCESS_KEYS_BINARY
    assert base64.b64decode(doc["SecretBinary"]) == data
    assert doc["VersionStages"] == ["AWSCURRENT"]
    check_created_date(doc, created_epoch(sm, name))


def test_secret_by_arn(ag, sm):
    name = unique("arn")
    arn = sm.create_secret(Name=name, SecretString="by-arn")["ARN"]
    doc = ag.secret_json(arn)
    assert doc["SecretString"] == "by-arn"
    assert doc["Name"] == name
    assert doc["ARN"] == arn
    # ARN unencoded in the query too (":" is legal there)
    status, _, body = ag.get("/secretsmanager/get?secretId=" + arn)
    assert status == 200, body
    assert json.loads(body)["SecretString"] == "by-arn"


def test_secret_by_path_with_slashes(ag, sm):
    name = f"prod/{unique('db')}/password"
    sm.create_secret(Name=name, SecretString="pw-with-slashes")
    for path in ("/v1/" + name, "/v1/" + quote(name, safe="")):
        status, headers, body = ag.get(path)
        assert status == 200, (path, body)
        assert headers["content-type"].split(";")[0].strip() == "application/json"
        doc = json.loads(body)
        assert list(doc) == SUCCESS_KEYS_STRING
        assert (doc["Name"], doc["SecretString"]) == (name, "pw-with-slashes")
    doc = ag.secret_json(name)
    assert doc["SecretString"] == "pw-with-slashes"


def test_name_with_special_characters(ag, sm):
    name = unique("svc") + "+x=y@z.w_-"
    sm.create_secret(Name=name, SecretString="special")
    doc = ag.secret_json(name)  # percent-encoded query
    assert (doc["Name"], doc["SecretString"]) == (name, "special")
    status, _, body = ag.get("/v1/" + quote(name, safe=""))
    assert status == 200, body
    assert json.loads(body)["Name"] == name


def test_version_id_and_previous_stage(ag, sm):
    name = unique("ver")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="two")["VersionId"]
    assert v1 != v2

    cur = ag.secret_json(name)
    assert (cur["VersionId"], cur["SecretString"], cur["VersionStages"]) == (v2, "two", ["AWSCURRENT"])

    prev = ag.secret_json(name, versionStage="AWSPREVIOUS")
    assert (prev["VersionId"], prev["SecretString"]) == (v1, "one")
    assert prev["VersionStages"] == ["AWSPREVIOUS"]
    assert list(prev) == SUCCESS_KEYS_STRING

    by_id = ag.secret_json(name, versionId=v1)
    assert (by_id["VersionId"], by_id["SecretString"]) == (v1, "one")

    by_both = ag.secret_json(name, versionId=v2, versionStage="AWSCURRENT")
    assert by_both["SecretString"] == "two"

    status, _, body = ag.get(f"/v1/{name}?versionStage=AWSPREVIOUS")
    assert status == 200, body
    assert json.loads(body)["SecretString"] == "one"
    status, _, body = ag.get(f"/v1/{name}?versionId={v1}")
    assert status == 200, body
    assert json.loads(body)["SecretString"] == "one"


def error_doc(body):
    doc = json.loads(body)
    assert list(doc) == ["__type", "message"], doc
    assert isinstance(doc["message"], str)
    return doc


def test_unknown_secret_passes_status_and_code(ag, moto):
    name = unique("missing")
    expected_status, _, _ = moto.raw_status("GetSecretValue", {"SecretId": name})
    assert expected_status in (400, 404)  # AWS says 400; moto 5.x answers 404
    status, headers, body = ag.secret(name)
    assert status == expected_status, body
    assert headers["content-type"].split(";")[0].strip() == "application/json"
    doc = error_doc(body)
    assert doc["__type"] == "ResourceNotFoundException"
    assert "can't find" in doc["message"]


def test_unknown_version_id(ag, sm, moto):
    name = unique("nov")
    sm.create_secret(Name=name, SecretString="x")
    vid = "00000000-0000-0000-0000-000000000000"
    expected_status, _, _ = moto.raw_status("GetSecretValue", {"SecretId": name, "VersionId": vid})
    status, _, body = ag.secret(name, versionId=vid)
    assert status == expected_status, body
    assert error_doc(body)["__type"] == "ResourceNotFoundException"


def test_wrong_secret_key_passes_upstream_403(agent, moto, sm):
    name = unique("sig")
    sm.create_secret(Name=name, SecretString="x")
    ag = agent(moto.url, creds=(moto.admin[0], "wrong" + moto.admin[1][5:]))
    status, _, body = ag.secret(name)
    assert status == 403, body
    doc = error_doc(body)
    # moto answers an XML body <Code>SignatureDoesNotMatch</Code>
    assert doc["__type"] == "SignatureDoesNotMatch"


def test_unknown_access_key_passes_upstream_403(agent, moto, sm):
    name = unique("akid")
    sm.create_secret(Name=name, SecretString="x")
    ag = agent(moto.url, creds=("AKIAUNKNOWNUNKNOWN00", "whatever"))
    status, _, body = ag.secret(name)
    assert status == 403, body
    assert error_doc(body)["__type"] == "InvalidClientTokenId"


def test_denied_by_policy_passes_status(agent, moto, sm):
    name = unique("deny")
    sm.create_secret(Name=name, SecretString="x")
    expected_status, _, _ = moto.raw_status("GetSecretValue", {"SecretId": name}, creds=moto.denied)
    assert expected_status == 403
    ag = agent(moto.url, creds=moto.denied)
    status, _, body = ag.secret(name)
    assert status == expected_status, body
    doc = error_doc(body)
    assert doc["__type"] in ("AccessDenied", "AccessDeniedException")
    assert "GetSecretValue" in doc["message"]


def test_region_from_env_when_config_has_none(agent, moto, sm):
    name = unique("reg")
    sm.create_secret(Name=name, SecretString="env-region")
    ag = agent(moto.url, creds=moto.admin, config={"region": None}, env={"AWS_REGION": "us-east-1"})
    assert ag.secret_json(name)["SecretString"] == "env-region"


def test_endpoint_from_generic_env_var(agent, moto, sm):
    name = unique("ep")
    sm.create_secret(Name=name, SecretString="generic-endpoint")
    ag = agent(None, creds=moto.admin, env={"AWS_ENDPOINT_URL": moto.url})
    assert ag.secret_json(name)["SecretString"] == "generic-endpoint"


def test_credentials_file_path(agent, moto, sm, tmp_path):
    name = unique("cf")
    sm.create_secret(Name=name, SecretString="from-creds-file")
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {moto.admin[0]}\naws_secret_access_key = {moto.admin[1]}\n"
    )
    ag = agent(
        moto.url,
        config={"credentials_file_path": str(creds)},
        env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
    )
    assert ag.secret_json(name)["SecretString"] == "from-creds-file"


def test_credentials_file_is_reread_when_it_changes(agent, moto, sm, tmp_path):
    import os
    import time

    name = unique("cf2")
    sm.create_secret(Name=name, SecretString="after-rotation")
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {moto.admin[0]}\naws_secret_access_key = wrongwrongwrong\n")
    ag = agent(
        moto.url,
        config={"credentials_file_path": str(creds)},
        env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
    )
    status, _, body = ag.secret(name)
    assert status == 403, body
    creds.write_text(f"[default]\naws_access_key_id = {moto.admin[0]}\naws_secret_access_key = {moto.admin[1]}\n")
    later = time.time() + 5
    os.utime(creds, (later, later))
    # The next request may already read the new file; poll (bounded) for it.
    status, _, body = wait_until(lambda: (r := ag.secret(name))[0] == 200 and r, timeout=20, interval=0.1,
                                 what="the rewritten credentials file to be used")
    assert json.loads(body)["SecretString"] == "after-rotation"


def test_largest_string_secret(ag, sm):
    """64 KiB (the Secrets Manager maximum) streams through the client's small buffers intact."""
    name = unique("big")
    chunk = 'ab"c\\d\u00e9\n{}'
    value = (chunk * (65536 // len(chunk.encode())))[: 65536 - 16]
    assert len(value.encode()) <= 65536
    sm.create_secret(Name=name, SecretString=value)
    status, _, body = ag.secret(name)
    assert status == 200, body[:200]
    assert json.loads(body)["SecretString"] == value


def test_largest_binary_secret(ag, sm):
    name = unique("bigbin")
    data = bytes((i * 7 + 3) % 256 for i in range(65536))
    sm.create_secret(Name=name, SecretBinary=data)
    status, _, body = ag.secret(name)
    assert status == 200, body[:200]
    assert base64.b64decode(json.loads(body)["SecretBinary"]) == data


def test_one_json_key_of_a_real_secret(ag, sm):
    """`jsonKey` against moto: a string key as text, a number as JSON, a missing key
    named (and nothing else of the secret)."""
    name = unique("jsonkey")
    sm.create_secret(Name=name, SecretString='{"user":"admin","pw":"p\\"w ü","port":5432}')
    status, headers, body = ag.secret(name, jsonKey="pw")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    assert body.decode() == 'p"w ü'
    status, headers, body = ag.get("/v1/" + quote(name, safe="") + "?jsonKey=port")
    assert (status, headers["content-type"], body) == (200, "application/json", b"5432")
    status, _, body = ag.secret(name, jsonKey="password")
    assert status == 404, body
    doc = json.loads(body)
    assert doc["__type"] == "JsonKeyNotFound"
    assert '"password"' in doc["message"]
    assert b"admin" not in body and b"user" not in body
    plain = unique("plain")
    sm.create_secret(Name=plain, SecretString="hunter2")
    status, _, body = ag.secret(plain, jsonKey="pw")
    assert status == 400 and json.loads(body)["__type"] == "SecretNotAJsonObject", body
    assert b"hunter2" not in body
