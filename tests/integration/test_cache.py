"""Cache semantics against moto, counting upstream calls through a proxy.
Time moves by the agent's test clock (Agent.advance), not by sleeping."""

import json

import pytest

from conftest import unique

TTL = 300
PAST_TTL = TTL + 1  # the clock moves this far to step past a TTL


@pytest.fixture
def sm(moto):
    return moto.client()


def start(agent, moto, proxy, **config):
    return agent(proxy.url, creds=moto.admin, config=config)


def value(ag, name, **params):
    status, _, body = ag.secret(name, **params)
    assert status == 200, body
    return json.loads(body)


def test_fresh_entry_is_served_from_memory(agent, moto, counting_proxy, sm):
    name = unique("fresh")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300)
    for _ in range(5):
        assert value(ag, name)["SecretString"] == "v1"
    status, _, body = ag.get("/v1/" + name)
    assert status == 200
    assert counting_proxy.count("GetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 0


def test_fresh_entry_hides_upstream_change(agent, moto, counting_proxy, sm):
    name = unique("hide")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300)
    assert value(ag, name)["SecretString"] == "v1"
    sm.put_secret_value(SecretId=name, SecretString="v2")
    assert value(ag, name)["SecretString"] == "v1"
    assert counting_proxy.count("GetSecretValue") == 1


def test_expired_and_updated_upstream_gets_new_value(agent, moto, counting_proxy, sm):
    name = unique("upd")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=TTL)
    assert value(ag, name)["SecretString"] == "v1"
    v2 = sm.put_secret_value(SecretId=name, SecretString="v2")["VersionId"]
    ag.advance(PAST_TTL)
    doc = value(ag, name)
    assert (doc["SecretString"], doc["VersionId"]) == ("v2", v2)
    assert counting_proxy.count("GetSecretValue") == 2
    assert counting_proxy.count("DescribeSecret") == 1


def test_expired_but_unchanged_only_describes(agent, moto, counting_proxy, sm):
    name = unique("same")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=TTL)
    first = value(ag, name)
    ag.advance(PAST_TTL)
    second = value(ag, name)
    assert second == first
    assert counting_proxy.count("GetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 1
    # the check restarted the TTL: an immediate third request needs no call at all
    assert value(ag, name) == first
    assert counting_proxy.count("GetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 1


def test_expired_version_id_entry_still_exists(agent, moto, counting_proxy, sm):
    name = unique("vid")
    v1 = sm.create_secret(Name=name, SecretString="v1")["VersionId"]
    ag = start(agent, moto, counting_proxy, ttl_seconds=TTL)
    assert value(ag, name, versionId=v1)["SecretString"] == "v1"
    sm.put_secret_value(SecretId=name, SecretString="v2")  # v1 still exists (AWSPREVIOUS)
    ag.advance(PAST_TTL)
    doc = value(ag, name, versionId=v1)
    assert (doc["VersionId"], doc["SecretString"]) == (v1, "v1")
    assert counting_proxy.count("GetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 1


def test_expired_previous_stage_moved(agent, moto, counting_proxy, sm):
    name = unique("prev")
    sm.create_secret(Name=name, SecretString="v1")
    sm.put_secret_value(SecretId=name, SecretString="v2")
    ag = start(agent, moto, counting_proxy, ttl_seconds=TTL)
    assert value(ag, name, versionStage="AWSPREVIOUS")["SecretString"] == "v1"
    sm.put_secret_value(SecretId=name, SecretString="v3")  # AWSPREVIOUS is now v2
    ag.advance(PAST_TTL)
    assert value(ag, name, versionStage="AWSPREVIOUS")["SecretString"] == "v2"
    assert counting_proxy.count("GetSecretValue") == 2


def test_cache_key_includes_version_stage(agent, moto, counting_proxy, sm):
    name = unique("key")
    sm.create_secret(Name=name, SecretString="v1")
    sm.put_secret_value(SecretId=name, SecretString="v2")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300)
    assert value(ag, name)["SecretString"] == "v2"
    assert value(ag, name, versionStage="AWSPREVIOUS")["SecretString"] == "v1"
    assert value(ag, name)["SecretString"] == "v2"
    assert value(ag, name, versionStage="AWSPREVIOUS")["SecretString"] == "v1"
    assert counting_proxy.count("GetSecretValue") == 2


def test_refresh_now_always_calls_get_secret_value(agent, moto, counting_proxy, sm):
    name = unique("rn")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300)
    assert value(ag, name)["SecretString"] == "v1"
    sm.put_secret_value(SecretId=name, SecretString="v2")
    assert value(ag, name, refreshNow="true")["SecretString"] == "v2"
    assert value(ag, name, refreshNow="1")["SecretString"] == "v2"
    status, _, body = ag.get(f"/v1/{name}?refreshNow=TRUE")
    assert status == 200 and json.loads(body)["SecretString"] == "v2"
    assert counting_proxy.count("GetSecretValue") == 4
    # the refreshed value is what the cache now holds
    assert value(ag, name)["SecretString"] == "v2"
    assert value(ag, name, refreshNow="false")["SecretString"] == "v2"
    assert counting_proxy.count("GetSecretValue") == 4


def test_ttl_zero_disables_caching(agent, moto, counting_proxy, sm):
    name = unique("ttl0")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=0)
    for i in range(3):
        assert value(ag, name)["SecretString"] == "v1"
        assert counting_proxy.count("GetSecretValue") == i + 1
    sm.put_secret_value(SecretId=name, SecretString="v2")
    assert value(ag, name)["SecretString"] == "v2"
    assert counting_proxy.count("GetSecretValue") == 4
    assert counting_proxy.count("DescribeSecret") == 0


def test_cache_size_bounds_entries(agent, moto, counting_proxy, sm):
    a, b = unique("a"), unique("b")
    sm.create_secret(Name=a, SecretString="A")
    sm.create_secret(Name=b, SecretString="B")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300, cache_size=1)
    assert value(ag, a)["SecretString"] == "A"
    assert value(ag, a)["SecretString"] == "A"
    assert counting_proxy.count("GetSecretValue") == 1
    assert value(ag, b)["SecretString"] == "B"  # evicts A (one slot)
    assert value(ag, a)["SecretString"] == "A"
    assert counting_proxy.count("GetSecretValue") == 3


def test_errors_are_not_cached(agent, moto, counting_proxy, sm):
    name = unique("late")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300)
    status, _, _ = ag.secret(name)
    assert status in (400, 404)
    sm.create_secret(Name=name, SecretString="now-exists")
    assert value(ag, name)["SecretString"] == "now-exists"


def test_upstream_requests_are_well_formed(agent, moto, counting_proxy, sm):
    name = unique("wire")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=300)
    value(ag, name)
    (method, path, headers, body), = counting_proxy.requests
    h = {k.lower(): v for k, v in headers}
    assert (method, path) == ("POST", "/")
    assert h["x-amz-target"] == "secretsmanager.GetSecretValue"
    assert h["content-type"] == "application/x-amz-json-1.1"
    assert h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + moto.admin[0] + "/")
    assert "/us-east-1/secretsmanager/aws4_request" in h["authorization"]
    assert json.loads(body)["SecretId"] == name
    ua = h.get("user-agent", "")
    assert "secrets-manager-agent" in ua.lower() and "0.1.0" in ua, ua


def test_within_the_ttl_the_clock_changes_nothing(agent, moto, counting_proxy, sm):
    """The counterpart of the tests above: a step that stays inside the TTL is
    still a hit, so the step past it is what made them call upstream."""
    name = unique("inside")
    sm.create_secret(Name=name, SecretString="v1")
    ag = start(agent, moto, counting_proxy, ttl_seconds=TTL)
    assert value(ag, name)["SecretString"] == "v1"
    sm.put_secret_value(SecretId=name, SecretString="v2")
    ag.advance(TTL / 2)
    assert value(ag, name)["SecretString"] == "v1"
    assert counting_proxy.count("GetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 0


def test_the_test_clock_takes_the_token_and_a_step(agent, fake_upstream):
    ag = agent(upstream=fake_upstream.url)
    assert ag.get("/test/clock?advance=1", method="POST", token=False)[0] == 403
    assert ag.get("/test/clock?advance=1")[0] == 405, "a POST, not a GET"
    for bad in ["", "?advance=-1", "?advance=soon", "?advance=1e12"]:
        status, _, body = ag.get("/test/clock" + bad, method="POST")
        assert status == 400 and b"advance=" in body, (bad, status, body)
    assert ag.advance(10) >= 10
    assert ag.advance(5) >= 15, "the steps add up"


def test_without_sma_test_clock_there_is_no_such_route(agent, fake_upstream):
    ag = agent(upstream=fake_upstream.url, env={"SMA_TEST_CLOCK": None})
    assert ag.get("/test/clock?advance=1", method="POST")[0] == 405
    assert ag.get("/test/clock?advance=1")[0] == 404
