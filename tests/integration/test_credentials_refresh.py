"""Refresh and expiry of temporary credentials (the container and IMDS sources).

Credentials are refreshed before they expire, with one call to the source while the
other requests keep using the current credentials.  When the source goes down, the
expired credentials are still used for a grace period (static stability, with a WARN)
and the requests fail after it; a failing source is asked again at most once per
retry interval.

Expiries, the grace and the retry interval run on the agent's test clock
(Agent.advance): the fakes stamp an Expiration LIFE seconds of real time
ahead, and a step of the agent's clock brings it near or past it at once.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import wait_until
from credentials_common import (
    LIFE,
    NEAR_EXPIRY,
    NO_ENV_CREDS,
    assert_all_ok,
    assert_signed_with_served,
    container_env,
    creds_error,
    imds_env,
    log_of,
    reads,
    warn_lines,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes, iam, secret  # noqa: F401

PAST_EXPIRY = LIFE + 2  # the fakes round their expiry up to a whole second


@pytest.mark.serial  # times the requests
def test_single_refresh_while_others_keep_using_current_credentials(agent, moto, iam, secret, fakes):
    """Eight clients hammer the agent while a slow (2 s) refresh is under way: the
    source is called once, and the other requests are not held up."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, lifetime=LIFE)
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    c.delay = 2.0  # every later credentials answer is slow
    ag.advance(NEAR_EXPIRY)  # the next request refreshes, before the expiry
    results, lock = [], threading.Lock()
    deadline = time.monotonic() + 20

    def client():
        # Until the refresh is done (the fake records the credentials it
        # served after the delay), and a few requests more.
        after = 0
        while after < 3 and time.monotonic() < deadline:
            done = c.served_count() >= 2
            t0 = time.monotonic()
            st, _, body = ag.secret(name, timeout=30)
            with lock:
                results.append((st, time.monotonic() - t0, body))
            after += done
            time.sleep(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    bad = [(st, b[:200]) for st, _, b in results if st != 200]
    assert not bad, bad
    assert c.served_count() == 2, "one refresh"
    assert c.count() == c.served_count(), f"{c.count()} calls to the source: refresh stampede?"
    slow = [round(d, 2) for st, d, _ in results if d > 1.2]
    assert len(slow) <= 1, f"requests held up by the refresh: {slow}"
    assert len(results) > 8 * 3, "the clients ran while the refresh was under way"


def test_failed_source_is_retried_at_most_every_retry_interval(agent, moto, iam, secret, fakes):
    """SMA_CREDENTIALS_RETRY_SECS default 10: a source that fails (500) during the grace
    period is not hammered by every request, and is asked again after the interval."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, lifetime=LIFE, down_after=1, down_mode="error")
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **container_env(c), "SMA_CREDENTIALS_GRACE_SECS": "3600"})

    def failed_calls():
        return len([r for r in c.requests() if r.get("outage") == "error"])

    results = reads(ag, name, 1)  # one request: the first credentials
    ag.advance(PAST_EXPIRY)
    results += reads(ag, name, 1)  # asks the source (its client retries a 500 itself)
    per_ask = failed_calls()
    assert per_ask >= 1, "the source was never asked again"
    for asked in (1, 2):
        results += reads(ag, name, 10)  # in the grace period
        assert failed_calls() == asked * per_ask, "asked once per retry interval"
        ag.advance(10 + 1)
        results += reads(ag, name, 1)
    assert failed_calls() == 3 * per_ask
    assert_all_ok(results, value)
    assert c.served_count() == 1


def make_source(kind, fakes, iam, **kw):
    if kind == "imds":
        src = fakes.imds(creds_fn=iam.mint, **kw)
        return src, imds_env(src)
    src = fakes.container(creds_fn=iam.mint, expected_auth="sma-auth", **kw)
    return src, container_env(src, token="sma-auth")


@pytest.mark.parametrize("kind", ["imds", "container"])
def test_refresh_before_expiry(agent, moto, iam, secret, fakes, kind):
    name, value = secret
    src, env = make_source(kind, fakes, iam, lifetime=LIFE)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env})
    results = reads(ag, name, 1)
    ag.advance(LIFE / 2)
    results += reads(ag, name, 1)
    assert src.served_count() == 1, "refreshed long before the expiry"
    ag.advance(NEAR_EXPIRY - LIFE / 2)
    results += reads(ag, name)
    assert_all_ok(results, value)
    assert src.served_count() == 2, "credentials were not refreshed before they expired"
    assert not warn_lines(ag, "static stability"), log_of(ag)[-3000:]
    assert_signed_with_served(proxy, src, min_keys=2)


@pytest.mark.parametrize("kind", ["imds", "container"])
def test_static_stability(agent, moto, iam, secret, fakes, kind):
    """The source goes down after the first credentials: requests keep working for
    the grace period (10 minutes) after the expiry, with a WARN, then fail."""
    name, value = secret
    grace = 600
    src, env = make_source(kind, fakes, iam, lifetime=LIFE, down_after=1)
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **env, "SMA_CREDENTIALS_GRACE_SECS": str(grace), "SMA_CREDENTIALS_RETRY_SECS": "1"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert src.served_count() == 1
    wait_until(lambda: src.down == "refuse", 5, what="the source to go down")
    # Past the expiry the grace starts; steps through it, the last one 5 s short of its end.
    in_grace = []
    for step in (PAST_EXPIRY, grace / 3, grace / 3, grace / 3 - 5):
        ag.advance(step)
        in_grace.append(ag.secret(name, timeout=30))
    for st, _, b in in_grace:
        assert st == 200, b
        assert json.loads(b)["SecretString"] == value
    assert warn_lines(ag, "static stability"), log_of(ag)[-3000:]
    ag.advance(10)  # past the grace (and the 1 s retry interval)
    st, _, body = ag.secret(name, timeout=30)
    assert st != 200, "still served after the grace period"
    creds_error(st, body)
    assert src.served_count() == 1
