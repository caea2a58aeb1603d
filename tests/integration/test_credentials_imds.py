"""The EC2 instance metadata service (IMDS) as the only credential source.

The fake IMDS (fake_metadata.FakeIMDS, reached through
AWS_EC2_METADATA_SERVICE_ENDPOINT on loopback) enforces IMDSv2 unless told
otherwise.  The agent gets a session token first and a new one when a GET is
answered 401; it falls back to IMDSv1 only when the token PUT is answered 403, 404
or 405, and not when AWS_EC2_METADATA_V1_DISABLED is set, never after a 500 or a
timeout (which is what a container one hop too far away sees).  The default
link-local endpoints are in test_credentials_netns.py.
"""

from __future__ import annotations

import json
import time

import pytest

from credentials_common import (
    NO_ENV_CREDS,
    assert_all_ok,
    assert_secrets_not_logged,
    assert_signed_with_served,
    creds_error,
    imds_env,
    log_of,
    LIFE,
    NEAR_EXPIRY,
    reads,
    warn_lines,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes, iam, secret  # noqa: F401


def test_imds_v2_fetches_secret_signed(agent, moto, iam, secret, fakes):
    name, value = secret
    imds = fakes.imds(creds_fn=iam.mint)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"log_level": "DEBUG"}, env={**NO_ENV_CREDS, **imds_env(imds)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value

    puts = imds.token_puts()
    assert puts, "no PUT /latest/api/token"
    assert puts[0]["headers"].get("x-aws-ec2-metadata-token-ttl-seconds") == "21600"
    assert "x-forwarded-for" not in puts[0]["headers"]
    assert imds.calls[0]["kind"] == "token", "the token comes before any GET"
    gets = imds.gets()
    paths = [g["path"] for g in gets]
    assert "/latest/meta-data/iam/security-credentials/" in paths or \
        "/latest/meta-data/iam/security-credentials" in paths, paths
    assert f"/latest/meta-data/iam/security-credentials/{imds.role}" in paths, paths
    assert all(g["token_state"] == "valid" for g in gets), [(g["path"], g["token_state"]) for g in gets]
    assert_signed_with_served(proxy, imds)
    assert_secrets_not_logged(ag, imds.served[0]["secret"], imds.served[0]["token"])


def test_imds_401_fetches_new_token_and_retries(agent, moto, iam, secret, fakes):
    """A GET answered 401 (token no longer valid) makes the agent get a new token."""
    name, value = secret
    imds = fakes.imds(creds_fn=iam.mint, lifetime=LIFE)
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **imds_env(imds)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    imds.invalidate_tokens()  # e.g. the instance was stopped and started
    ag.advance(NEAR_EXPIRY)  # the next request refreshes the credentials
    results = reads(ag, name)
    assert_all_ok(results, value)
    assert imds.served_count() == 2, "credentials were not refreshed"
    assert len(imds.token_puts()) >= 2
    for g in imds.gets():
        if g["status"] == 200:
            assert g["token_state"] == "valid"
    calls = imds.requests()
    rejected = [i for i, c in enumerate(calls) if c["status"] == 401]
    assert rejected, "the agent should have kept its token (TTL 21600 s) and met the 401"
    for i in rejected:
        assert calls[i + 1]["kind"] == "token", [(c["method"], c["path"], c["status"]) for c in calls]


@pytest.mark.parametrize("put_status", [403, 404, 405])
def test_imds_v1_fallback_on_put_403_404_405(agent, moto, iam, secret, fakes, put_status):
    name, value = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode=put_status)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value
    assert imds.token_puts(), "IMDSv2 must be tried first"
    gets = imds.gets()
    assert gets and all(g["token_state"] == "none" for g in gets)
    assert warn_lines(ag, "IMDSv1"), log_of(ag)[-3000:]


def test_imds_v1_disabled_no_fallback(agent, iam, secret, fakes, moto):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode=403)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds), "AWS_EC2_METADATA_V1_DISABLED": "true"})
    msg = creds_error(*ag.secret(name)[::2])
    assert "imds" in msg.lower(), msg
    assert imds.token_puts()
    assert imds.gets() == [], "IMDSv1 used although AWS_EC2_METADATA_V1_DISABLED=true"


def test_imds_put_500_no_fallback(agent, iam, secret, fakes, moto):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode=500)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    msg = creds_error(*ag.secret(name)[::2])
    assert "imds" in msg.lower(), msg
    assert imds.gets() == [], "IMDSv1 fallback on a 500"


def test_imds_put_timeout_mentions_hop_limit_no_fallback(agent, iam, secret, fakes, moto):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint, token_mode="hang")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name, timeout=40)[::2])
    assert time.monotonic() - t0 < 20
    assert "hop limit" in msg.lower(), msg
    assert imds.gets() == [], "IMDSv1 fallback after a token timeout"


def test_imds_no_role_attached(agent, fakes, moto, secret):
    name, _ = secret
    imds = fakes.imds(creds_fn=None)  # security-credentials/ -> 404
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds)})
    msg = creds_error(*ag.secret(name)[::2])
    assert "imds" in msg.lower(), msg


def test_imds_disabled_is_not_contacted(agent, iam, fakes, moto, secret):
    name, _ = secret
    imds = fakes.imds(creds_fn=iam.mint)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **imds_env(imds), "AWS_EC2_METADATA_DISABLED": "true"})
    creds_error(*ag.secret(name)[::2])
    assert imds.count() == 0
