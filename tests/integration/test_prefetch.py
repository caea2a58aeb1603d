"""Prefetch at start: the config's `prefetch` secrets are read with
BatchGetSecretValue (against moto, signatures checked) and served from the cache."""

import json
import time

from conftest import free_port, hang, respond, unique, wait_until
from relays import RecordingProxy, auth_scope
from test_roles import RoleWorld

SUMMARY = "prefetch done:"


def entry(secret):
    """A `secrets` entry: an ID, or (ID, role ARN)."""
    if isinstance(secret, tuple):
        return f'{{ secret_id = "{secret[0]}", role_arn = "{secret[1]}" }}'
    return f'{{ secret_id = "{secret}" }}'


def config_3x(secret_ids, tag_keys=(), ttl=300, cache_size=100, extra=""):
    secrets = ", ".join(entry(s) for s in secret_ids)
    tags = ", ".join(f'{{ key = "{k}" }}' for k in tag_keys)
    return f"""log_level = "info"
log_to_file = false

[capabilities.secrets_manager]
http_port = 0
region = "us-east-1"
validate_credentials = false

[capabilities.secrets_manager.cache]
ttl_seconds = {ttl}
cache_size = {cache_size}

[capabilities.secrets_manager.prefetch]
secrets = [{secrets}]
filter_tags = [{tags}]
{extra}"""


def summary_line(ag, timeout=20.0):
    wait_until(lambda: SUMMARY in ag.stderr or not ag.alive(), timeout=timeout, what="the prefetch summary")
    assert ag.alive(), ag.stderr
    lines = [l for l in ag.stderr.splitlines() if SUMMARY in l]
    assert len(lines) == 1, ag.stderr
    assert "INFO" in lines[0], lines
    return lines[0]


def value(ag, secret_id):
    status, _, body = ag.secret(secret_id)
    assert status == 200, body
    return json.loads(body)


def test_prefetched_secrets_are_served_from_the_cache(agent, moto, counting_proxy):
    sm = moto.client()
    tag = unique("team")
    listed = [unique("listed") for _ in range(2)]
    tagged = [unique("tagged") for _ in range(2)]
    on_demand = unique("other")
    missing = unique("missing")
    arns = {}
    for name in listed + [on_demand]:
        arns[name] = sm.create_secret(Name=name, SecretString="v1-" + name)["ARN"]
    for name in tagged:
        arns[name] = sm.create_secret(Name=name, SecretString="v1-" + name, Tags=[{"Key": tag, "Value": "x"}])["ARN"]
    # A secret with another tag key is not prefetched by this filter.
    sm.create_secret(Name=unique("untagged"), SecretString="no", Tags=[{"Key": unique("elsewhere"), "Value": "x"}])
    expected = {name: value_of for name, value_of in ((n, "v1-" + n) for n in listed + tagged)}

    ag = agent(counting_proxy.url, creds=moto.admin, raw_config=config_3x(listed + [missing], [tag]))
    line = summary_line(ag)
    assert "4 secret(s)" in line and "1 failure(s)" in line, line
    # The missing ID is told, with the reason, and the agent serves on.
    warned = [l for l in ag.stderr.splitlines() if missing in l]
    assert warned and "WARN" in warned[0] and "ResourceNotFoundException" in warned[0], ag.stderr
    assert "not implemented" not in ag.stderr
    assert counting_proxy.count("BatchGetSecretValue") == 2, "one ID batch, one tag page"
    assert counting_proxy.count("GetSecretValue") == 0

    # Upstream changes; within the TTL the agent answers what it prefetched.
    for name in listed + tagged + [on_demand]:
        sm.put_secret_value(SecretId=name, SecretString="v2-" + name)
    for name, v1 in expected.items():
        doc = value(ag, name)
        assert doc["SecretString"] == v1, (name, doc)
        assert doc["Name"] == name and doc["ARN"] == arns[name]
    # Tag matches are kept under their ARN as well.
    for name in tagged:
        assert value(ag, arns[name])["SecretString"] == "v1-" + name
    assert counting_proxy.count("GetSecretValue") == 0, "all answered from the prefetched entries"

    # A secret not named is fetched on demand: the new value.
    assert value(ag, on_demand)["SecretString"] == "v2-" + on_demand
    assert counting_proxy.count("GetSecretValue") == 1
    # The missing one is an ordinary miss: asked for, and not found.
    status, _, _ = ag.secret(missing)
    assert status == 404
    assert ag.alive()


def test_prefetched_body_equals_the_get_secret_value_body(agent, moto, counting_proxy):
    sm = moto.client()
    name = unique("same")
    sm.create_secret(Name=name, SecretString='{"user":"admin"}')
    fetched = agent(counting_proxy.url, creds=moto.admin, config={"ttl_seconds": 300})
    _, _, on_demand = fetched.secret(name)
    fetched.stop()
    ag = agent(counting_proxy.url, creds=moto.admin, raw_config=config_3x([name]))
    summary_line(ag)
    counting_proxy.reset()
    _, _, prefetched = ag.secret(name)
    assert counting_proxy.count("GetSecretValue") == 0
    assert prefetched == on_demand


def test_prefetch_stops_at_the_buffer_ratio(agent, moto, counting_proxy):
    sm = moto.client()
    names = [unique("ratio") for _ in range(4)]
    for name in names:
        sm.create_secret(Name=name, SecretString="v")
    # 0.5 of a 4-entry cache: two entries.
    raw = config_3x(names, cache_size=4, extra="cache_buffer_ratio = 0.5\n")
    ag = agent(counting_proxy.url, creds=moto.admin, raw_config=raw)
    line = summary_line(ag)
    assert "2 secret(s)" in line and "stopped at cache_buffer_ratio" in line, line


def test_a_role_prefetches_for_requests_naming_it(agent, moto):
    """Prefetched as a role (assumed through STS), the entry answers requests with
    that roleArn only: the agent's own identity may not read the secret at all."""
    world = RoleWorld(moto)
    sm = moto.client()
    name = unique("role-prefetch")
    sm.create_secret(Name=name, SecretString="v1")
    proxy = RecordingProxy(moto.port)
    try:
        ag = agent(proxy.url, creds=world.keys, env={"AWS_ENDPOINT_URL_STS": proxy.url},
                   raw_config=config_3x([(name, world.reader)]))
        line = summary_line(ag)
        assert "1 secret(s)" in line and "0 failure(s)" in line, line
        batch = proxy.ops("BatchGetSecretValue")
        assert len(batch) == 1 and batch[0]["status"] == 200, batch
        assert auth_scope(batch[0]["headers"])[0] != world.keys[0], "signed as the role"
        sm.put_secret_value(SecretId=name, SecretString="v2")
        status, _, body = ag.secret(name, roleArn=world.reader)
        assert status == 200 and json.loads(body)["SecretString"] == "v1", body
        assert not proxy.ops("GetSecretValue")
        # Not an answer for the agent's own identity, which is denied.
        status, _, body = ag.secret(name)
        assert status in (400, 403) and "AccessDenied" in body.decode(), body
    finally:
        proxy.close()


def test_ping_is_not_delayed_by_a_hanging_prefetch(agent, fake_upstream):
    fake_upstream.script("BatchGetSecretValue", hang(30))
    raw = config_3x(["slow-one"])
    started = time.monotonic()
    ag = agent(fake_upstream.url, raw_config=raw, env={"SMA_UPSTREAM_TIMEOUT_MS": "20000"})
    status, _, body = ag.get("/ping", token=False, timeout=5)
    assert status == 200, body
    assert time.monotonic() - started < 5
    fake_upstream.wait_calls("BatchGetSecretValue", 1)
    # While the batch hangs, other secrets are served.
    assert value(ag, "other")["Name"] == "other"
    assert SUMMARY not in ag.stderr
    fake_upstream.unblock()


def test_a_request_during_the_batch_waits_for_it(agent, fake_upstream):
    """A secret asked for while its batch is in flight is not fetched twice."""
    element = {
        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:batched-AbCdEf",
        "Name": "batched",
        "VersionId": "vb",
        "SecretString": "from the batch",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": 1700000000,
    }
    fake_upstream.script("BatchGetSecretValue", respond(200, {"SecretValues": [element], "Errors": []}, delay=1.5))
    ag = agent(fake_upstream.url, raw_config=config_3x(["batched"]))
    fake_upstream.wait_calls("BatchGetSecretValue", 1)
    doc = value(ag, "batched")
    assert doc["SecretString"] == "from the batch", doc
    assert fake_upstream.count("GetSecretValue") == 0
    assert "1 secret(s)" in summary_line(ag)


def test_unreachable_upstream_is_logged_and_the_agent_serves_on(agent):
    closed = f"http://127.0.0.1:{free_port()}"
    ag = agent(closed, raw_config=config_3x(["a", "b"], ["team"]))
    assert ag.get("/ping", token=False, timeout=5)[0] == 200
    line = summary_line(ag, timeout=60)
    assert "0 secret(s)" in line and "3 failure(s)" in line, line
    failed = [l for l in ag.stderr.splitlines() if "prefetch of" in l and "failed" in l]
    assert len(failed) == 2 and all("WARN" in l for l in failed), ag.stderr
    assert ag.get("/ping", token=False, timeout=5)[0] == 200
