"""Refresh-ahead against moto (signatures and IAM checked): hot secrets that
fall due together are refreshed with one BatchGetSecretValue call, and a
principal that may not make that call gets the one-by-one revalidation."""

import json
import time

from conftest import unique, wait_until

TTL = 8  # seconds; the refresh window is its last fifth, 1.6 s


def value(ag, secret_id):
    status, _, body = ag.secret(secret_id)
    assert status == 200, body
    return json.loads(body)["SecretString"]


def fall_due(ag, names, proxy, op, then=lambda: None):
    """Fetches `names` in order (then calls `then`), reads them again halfway
    through the TTL, then keeps reading the last one fetched until a refresh
    call `op` is made. The last one fetched opens its refresh window last, so
    the others are due by then too. Returns the seconds from the last fetch to
    the refresh call."""
    for name in names:
        assert value(ag, name) == "v1-" + name
    fetched = time.monotonic()
    then()
    time.sleep(TTL / 2)
    for name in names:
        assert value(ag, name) == "v1-" + name, "a hit within the TTL"
    wait_until(lambda: value(ag, names[-1]) and proxy.count(op) > 0, timeout=TTL * 2, interval=0.1,
               what=f"a {op} call")
    return time.monotonic() - fetched


def test_secrets_due_together_refresh_in_one_batch_call(agent, moto, counting_proxy):
    sm = moto.client()
    names = [unique("hot") for _ in range(3)]
    for name in names:
        sm.create_secret(Name=name, SecretString="v1-" + name)
    ag = agent(counting_proxy.url, creds=moto.admin, config={"ttl_seconds": TTL})

    took = fall_due(ag, names, counting_proxy, "BatchGetSecretValue")
    assert took < TTL, "refreshed ahead of expiry"
    # One call brought all three: nothing revalidated one by one.
    time.sleep(0.5)  # the batch's answer is on its way: no other call may follow
    assert counting_proxy.count("GetSecretValue") == 3
    assert counting_proxy.count("BatchGetSecretValue") == 1
    batch = [json.loads(body) for _, _, headers, body in counting_proxy.requests
             if ("x-amz-target", "secretsmanager.BatchGetSecretValue") in [(k.lower(), v) for k, v in headers]]
    assert len(batch) == 1 and sorted(batch[0]["SecretIdList"]) == sorted(names), batch
    assert counting_proxy.count("DescribeSecret") == 0

    # The batch restarted their TTLs with what upstream had then: past the
    # first expiry (at most 0.2 TTL after the batch) and before the new TTL's
    # refresh window (0.8 TTL after it), every read is a hit.
    for name in names:
        sm.put_secret_value(SecretId=name, SecretString="v2-" + name)
    time.sleep(TTL * 0.4)
    for name in names:
        assert value(ag, name) == "v1-" + name, "past the first expiry, still a hit"
    assert counting_proxy.count("GetSecretValue") == 3
    assert counting_proxy.count("DescribeSecret") == 0
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

    def change():  # each revalidation finds a new version
        for name in names:
            sm.put_secret_value(SecretId=name, SecretString="v2-" + name)

    fall_due(ag, names, counting_proxy, "BatchGetSecretValue", then=change)
    # The proxy counts a call before moto answers it: wait for the values.
    wait_until(lambda: all(value(ag, name) == "v2-" + name for name in names), interval=0.1,
               what="the one-by-one revalidation")
    assert counting_proxy.count("DescribeSecret") == 2
    assert counting_proxy.count("GetSecretValue") == 4, "each fetched again, once"
    assert counting_proxy.count("BatchGetSecretValue") == 1
    wait_until(lambda: "batch refresh failed" in ag.stderr, what="the WARN line")
    refused = [l for l in ag.stderr.splitlines() if "batch refresh failed" in l]
    assert len(refused) == 1, ag.stderr
    assert "AccessDenied" in refused[0] and "WARN" in refused[0], refused
    assert "secretsmanager:BatchGetSecretValue" in refused[0] and "SMA_REFRESH_BATCH=1" in refused[0]

    # The refusal is remembered: the next round does not ask again. names[0]
    # was revalidated last, so when its refresh starts, names[-1] is due too
    # and would join a batch if batches were still tried.
    for name in names:
        sm.put_secret_value(SecretId=name, SecretString="v3-" + name)
    time.sleep(TTL / 2)
    for name in names:
        value(ag, name)
    wait_until(lambda: value(ag, names[0]) == "v3-" + names[0], timeout=TTL * 2, interval=0.1,
               what="the second refresh")
    assert counting_proxy.count("BatchGetSecretValue") == 1
    assert counting_proxy.count("DescribeSecret") >= 3
    assert ag.alive()
