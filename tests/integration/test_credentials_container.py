"""The container credential endpoint (ECS, EKS Pod Identity) as the only credential
source.

AWS_CONTAINER_CREDENTIALS_FULL_URI points at the fake endpoint
(fake_metadata.FakeContainer) on a loopback address; the Authorization header comes
from AWS_CONTAINER_AUTHORIZATION_TOKEN or from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
which wins and is read again at every refresh.  A rejected token is a credentials
error, 5xx answers are retried, a hanging endpoint is given up on in bounded time,
and HTTP_PROXY carries neither the container's nor IMDS's traffic.  The link-local
endpoints and the hosts FULL_URI must refuse are in test_credentials_netns.py.
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
    container_env,
    creds_error,
    get_ok,
    imds_env,
    LIFE,
    NEAR_EXPIRY,
    reads,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes, iam, secret  # noqa: F401


def test_container_full_uri_with_token(agent, moto, iam, secret, fakes):
    name, value = secret
    c = fakes.container(creds_fn=iam.mint, expected_auth="Basic c21hOnRva2Vu")
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"log_level": "DEBUG"},
               env={**NO_ENV_CREDS, **container_env(c, token="Basic c21hOnRva2Vu")})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value
    assert c.count() >= 1
    assert all(r["method"] == "GET" and r["path"] == "/creds" for r in c.requests())
    assert set(c.auths()) == {"Basic c21hOnRva2Vu"}
    assert_signed_with_served(proxy, c)
    assert_secrets_not_logged(ag, c.served[0]["secret"], c.served[0]["token"], "Basic c21hOnRva2Vu")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "[::1]"])
def test_container_full_uri_other_loopback_hosts(agent, moto, iam, secret, fakes, host):
    bind = {"localhost": "127.0.0.1", "127.0.0.2": "127.0.0.2", "[::1]": "::1"}[host]
    try:
        c = fakes.container(creds_fn=iam.mint, host=bind)
    except OSError as e:
        pytest.skip(f"cannot listen on {bind}: {e}")
    ag = agent(moto.url, env={**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://{host}:{c.port}/creds"})
    get_ok(ag, secret)
    assert c.served_count() == 1


def test_container_without_authorization(agent, moto, iam, secret, fakes):
    name, value = secret
    c = fakes.container(creds_fn=iam.mint)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert c.auths() == [None]


def test_container_token_file_is_reread_on_every_call(agent, moto, iam, secret, fakes, tmp_path):
    """AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE wins over AWS_CONTAINER_AUTHORIZATION_TOKEN
    and is read again at each refresh (EKS Pod Identity rotates it)."""
    name, value = secret
    tok = tmp_path / "eks-pod-identity-token"
    tok.write_text("token-A")
    c = fakes.container(creds_fn=iam.mint, expected_auth="token-A", lifetime=LIFE)
    ag = agent(moto.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, **container_env(c, token="env-token-loses", token_file=tok)})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert c.auths() == ["token-A"]
    tok.write_text("token-B")
    c.expected_auth = "token-B"  # the old token is no longer accepted
    ag.advance(NEAR_EXPIRY)  # the next request refreshes the credentials
    results = reads(ag, name)
    assert_all_ok(results, value)
    assert c.served_count() == 2, c.auths()
    auths = c.auths()
    assert "token-B" in auths and "env-token-loses" not in auths, auths
    assert [a for a in auths if a == "token-A"] == ["token-A"], auths


def test_container_wrong_token_is_credentials_error(agent, moto, iam, secret, fakes):
    name, _ = secret
    c = fakes.container(creds_fn=iam.mint, expected_auth="right")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c, token="wrong")})
    msg = creds_error(*ag.secret(name)[::2])
    assert "container" in msg.lower(), msg
    assert c.count() >= 1 and c.served_count() == 0


def test_container_5xx_is_retried(agent, moto, iam, secret, fakes):
    name, value = secret
    c = fakes.container(creds_fn=iam.mint)
    c.script(500, 503)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c)})
    st, _, body = ag.secret(name, timeout=40)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == value
    assert [r["status"] for r in c.requests()] == [500, 503, 200]


def test_container_timeout_is_bounded(agent, moto, iam, secret, fakes):
    name, _ = secret
    c = fakes.container(creds_fn=iam.mint)
    c.go_down("hang")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c)})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name, timeout=60)[::2])
    took = time.monotonic() - t0
    assert "container" in msg.lower(), msg
    assert 4 <= took < 25, f"container timeout is 5 s per attempt; took {took:.1f}s"


def test_metadata_calls_bypass_http_proxy(agent, moto, iam, secret, fakes):
    """HTTP_PROXY must not carry container or IMDS traffic."""
    name, value = secret
    c = fakes.container(creds_fn=iam.mint)
    imds = fakes.imds(region="us-east-1")  # asked for the region (config has none); moto's secrets are per region
    fwd = fakes.proxy(moto.port)  # also a forward proxy to loopback targets
    env = {**NO_ENV_CREDS, **container_env(c), **imds_env(imds),
           "HTTP_PROXY": fwd.url, "http_proxy": fwd.url, "NO_PROXY": None, "no_proxy": None}
    ag = agent(moto.url, config={"region": None}, env=env)
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert c.served_count() >= 1
    assert imds.region_gets()
    meta_ports = (f":{c.port}", f":{imds.port}")
    leaked = [e["path"] for e in fwd.ops()
              if "/creds" in e["path"] or "/latest/" in e["path"] or e["path"].endswith(meta_ports)]
    assert not leaked, leaked
    # the proxy settings were in effect: Secrets Manager traffic went through the proxy
    assert [e for e in fwd.ops() if e["via_proxy"]], "HTTP_PROXY ignored altogether?"
