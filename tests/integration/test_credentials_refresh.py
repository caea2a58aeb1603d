"""Refresh and expiry of temporary credentials (the container and IMDS sources).

Credentials are refreshed before they expire, with one call to the source while the
other requests keep using the current credentials.  When the source goes down, the
expired credentials are still used for a grace period (static stability, with a WARN)
and the requests fail after it; a failing source is asked again at most once per
retry interval.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import wait_until
from credentials_common import (
    NO_ENV_CREDS,
    assert_all_ok,
    assert_signed_with_served,
    container_env,
    creds_error,
    imds_env,
    log_of,
    poll_secret,
    warn_lines,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes, iam, secret  # noqa: F401


def test_single_refresh_while_others_keep_using_current_credentials(agent, moto, iam, secret, fakes):
    """Eight clients hammer the agent while a slow (2 s) refresh is under way: the
    source is called once per refresh, and the other requests are not held up."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, lifetime=6)
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    c.delay = 2.0  # every later credentials answer is slow (refresh at ~3 s, done before the expiry)
    results, lock = [], threading.Lock()
    end = time.monotonic() + 6.5

    def client():
        while time.monotonic() < end:
            t0 = time.monotonic()
            st, _, body = ag.secret(name, timeout=30)
            with lock:
                results.append((st, time.monotonic() - t0, body))
            time.sleep(0.1)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    bad = [(st, b[:200]) for st, _, b in results if st != 200]
    assert not bad, bad
    assert c.served_count() >= 2, "no refresh happened"
    assert c.count() == c.served_count() <= 3, f"{c.count()} calls to the source: refresh stampede?"
    slow = [round(d, 2) for st, d, _ in results if d > 1.2]
    assert len(slow) <= c.served_count() - 1, f"requests held up by the refresh: {slow}"


def test_failed_source_is_retried_at_most_every_retry_interval(agent, moto, iam, secret, fakes):
    """SMA_CREDENTIALS_RETRY_SECS default 10: a source that fails (500) during the grace
    period is not hammered by every request."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, lifetime=3, down_after=1, down_mode="error")
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **container_env(c), "SMA_CREDENTIALS_GRACE_SECS": "60"})
    results = poll_secret(ag, name, 8, interval=0.2)
    assert_all_ok(results, value)
    failed_calls = [r for r in c.requests() if r.get("outage") == "error"]
    assert failed_calls, "the source was never asked again"
    assert len(failed_calls) <= 6, f"{len(failed_calls)} calls to a failing source within 8 s"


def make_source(kind, fakes, iam, **kw):
    if kind == "imds":
        src = fakes.imds(creds_fn=iam.mint, **kw)
        return src, imds_env(src)
    src = fakes.container(creds_fn=iam.mint, expected_auth="sma-auth", **kw)
    return src, container_env(src, token="sma-auth")


@pytest.mark.parametrize("kind", ["imds", "container"])
def test_refresh_before_expiry(agent, moto, iam, secret, fakes, kind):
    name, value = secret
    src, env = make_source(kind, fakes, iam, lifetime=6)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env})
    results = poll_secret(ag, name, 10)
    assert_all_ok(results, value)
    assert src.served_count() >= 2, "credentials were not refreshed before they expired"
    assert_signed_with_served(proxy, src, min_keys=2)


@pytest.mark.parametrize("kind", ["imds", "container"])
def test_static_stability(agent, moto, iam, secret, fakes, kind):
    """The source goes down after the first credentials (3 s lifetime): requests keep
    working for the grace period (4 s) after the expiry, with a WARN, then fail."""
    name, value = secret
    grace = 4
    src, env = make_source(kind, fakes, iam, lifetime=3, down_after=1)
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **env, "SMA_CREDENTIALS_GRACE_SECS": str(grace), "SMA_CREDENTIALS_RETRY_SECS": "1"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert src.served_count() == 1
    wait_until(lambda: src.down == "refuse", 5, what="the source to go down")
    expiry = src.served[0]["expiration"]
    limit = expiry + grace + 1 + 4  # grace, one retry interval, slack
    results = []
    while time.time() < limit:
        st, _, body = ag.secret(name, timeout=30)
        results.append((time.time(), st, body))
        if st != 200 and time.time() > expiry + grace:
            break
        time.sleep(0.25)
    timeline = [(round(t - expiry, 2), st) for t, st, _ in results]
    in_grace = [(t, st, b) for t, st, b in results if expiry + 0.3 < t < expiry + grace - 0.5]
    assert len(in_grace) >= 3, timeline
    assert all(st == 200 for t, st, _ in results if t < expiry + grace - 0.5), timeline
    for _, _, b in in_grace:
        assert json.loads(b)["SecretString"] == value
    assert warn_lines(ag, "static stability"), log_of(ag)[-3000:]
    failed = [(t, st, b) for t, st, b in results if st != 200]
    assert failed, f"still served after the grace period: {timeline}"
    creds_error(failed[0][1], failed[0][2])
    assert src.served_count() == 1
