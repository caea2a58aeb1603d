"""Refresh-ahead against moto (signatures and IAM checked): hot secrets that
fall due together are refreshed with one BatchGetSecretValue call, and a
principal that may not make that call gets the one-by-one revalidation.

Time moves by the agent's test clock (Agent.advance): the TTL is 300 s, a
read in its last fifth queues a refresh, and `cache_refreshes_total` (counted
when a refresh is done, its calls to AWS included) is the event that proves a
refresh is over before the tests assert that no other call was made."""

import json

from conftest import unique

TTL = 300  # seconds on the agent's clock
# An entry's refresh point falls 80 to 90 % through its TTL: halfway is
# before it, 95 % is past it (and still inside the TTL).
HALF = TTL / 2
DUE = TTL * 0.95


def value(ag, secret_id):
    status, _, body = ag.secret(secret_id)
    assert status == 200, body
    return json.loads(body)["SecretString"]


def fall_due(ag, names, prefix, refreshes):
    """Reads `names` (holding `prefix` + name) halfway through their TTL (hits
    that mark them as read), steps into their refresh window and reads the
    last one, which queues a refresh the others may join; waits until the
    agent counts `refreshes` refreshes done."""
    ag.advance(HALF)
    for name in names:
        assert value(ag, name) == prefix + name, "a hit within the TTL"
    assert ag.metric("cache_refreshes_total") == refreshes - 1, "no refresh before the window"
    ag.advance(DUE - HALF)
    assert value(ag, names[-1]) == prefix + names[-1], "still fresh: served from memory"
    ag.wait_metric("cache_refreshes_total", refreshes)


def test_secrets_due_together_refresh_in_one_batch_call(agent, moto, counting_proxy):
    sm = moto.client()
    names = [unique("hot") for _ in range(3)]
    for name in names:
        sm.create_secret(Name=name, SecretString="v1-" + name)
    ag = agent(counting_proxy.url, creds=moto.admin, config={"ttl_seconds": TTL})
    for name in names:
        assert value(ag, name) == "v1-" + name

    fall_due(ag, names, "v1-", refreshes=1)
    # The refresh is done: one call brought all three, nothing was
    # revalidated one by one, and no read waited (refreshed ahead of expiry).
    assert counting_proxy.count("BatchGetSecretValue") == 1
    assert counting_proxy.count("GetSecretValue") == 3
    assert counting_proxy.count("DescribeSecret") == 0
    assert ag.metric("cache_misses_total") == 3 and ag.metric("cache_stale_answers_total") == 0
    batch = [json.loads(body) for _, _, headers, body in counting_proxy.requests
             if ("x-amz-target", "secretsmanager.BatchGetSecretValue") in [(k.lower(), v) for k, v in headers]]
    assert len(batch) == 1 and sorted(batch[0]["SecretIdList"]) == sorted(names), batch

    # The batch restarted their TTLs with what upstream had then: past the
    # first expiry (0.05 TTL after the batch) and before the new TTL's
    # refresh window (0.8 TTL after it), every read is a hit.
    for name in names:
        sm.put_secret_value(SecretId=name, SecretString="v2-" + name)
    ag.advance(TTL * 0.4)
    for name in names:
        assert value(ag, name) == "v1-" + name, "past the first expiry, still a hit"
    assert counting_proxy.count("GetSecretValue") == 3
    assert counting_proxy.count("DescribeSecret") == 0
    assert counting_proxy.count("BatchGetSecretValue") == 1
    assert ag.metric("cache_refreshes_total") == 1
    assert ag.alive()


def test_a_principal_denied_the_batch_call_refreshes_one_by_one(agent, moto, counting_proxy):
    creds = moto.user("nobatch",
                      {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
                      {"Effect": "Deny", "Action": "secretsmanager:BatchGetSecretValue", "Resource": "*"})
    sm = moto.client()
    names = [unique("hot") for _ in range(2)]
    for name in names:
        sm.create_secret(Name=name, SecretString="v1-" + name)
    ag = agent(counting_proxy.url, creds=creds,
               config={"ttl_seconds": TTL, "log_level": "info"})
    for name in names:
        assert value(ag, name) == "v1-" + name
    for name in names:  # each revalidation finds a new version
        sm.put_secret_value(SecretId=name, SecretString="v2-" + name)

    fall_due(ag, names, "v1-", refreshes=1)
    # The refused batch and the one-by-one revalidations after it are done.
    assert counting_proxy.count("BatchGetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 2
    assert counting_proxy.count("GetSecretValue") == 4, "each fetched again, once"
    for name in names:
        assert value(ag, name) == "v2-" + name
    refused = [l for l in ag.stderr.splitlines() if "batch refresh failed" in l]
    assert len(refused) == 1, ag.stderr
    assert "AccessDenied" in refused[0] and "WARN" in refused[0], refused
    assert "secretsmanager:BatchGetSecretValue" in refused[0] and "SMA_REFRESH_BATCH=1" in refused[0]

    # The refusal is remembered: the next round does not ask again. Both
    # were read since their TTLs restarted, so when the refresh of names[-1]
    # starts, names[0] is due too and would join a batch if batches were
    # still tried.
    for name in names:
        sm.put_secret_value(SecretId=name, SecretString="v3-" + name)
    fall_due(ag, names, "v2-", refreshes=2)
    assert value(ag, names[-1]) == "v3-" + names[-1]
    assert counting_proxy.count("BatchGetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") == 3
    assert counting_proxy.count("GetSecretValue") == 5
    assert ag.alive()
