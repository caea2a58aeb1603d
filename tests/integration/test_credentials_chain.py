"""The credential chain as a whole: which source wins, and what happens when none does.

The order is environment, profile, web identity, container, IMDS.  With every source
up to the one under test configured, each handing out credentials moto would accept,
the fakes' counters (not a 403) tell which source was used.  credentials_file_path
replaces the chain; validate_credentials checks the chain's credentials with
GetCallerIdentity at start; a source that is configured but fails stops the chain (no
quiet switch to another identity); and when every source fails, the error lists them
all in chain order.
"""

from __future__ import annotations

import time

from credentials_common import (
    JWT,
    NO_ENV_CREDS,
    closed_url,
    container_env,
    creds_error,
    get_ok,
    imds_env,
    keys,
    write_profiles,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes, iam, secret  # noqa: F401
from relays import auth_scope


class AllSources:
    """Every source configured; each hands out credentials of its own (which moto would
    accept too: so the counters, not a 403, tell which was used)."""

    def __init__(self, agent, moto, iam, fakes, tmp_path, env_creds, profile_creds, web_identity, container):
        self.env = {**NO_ENV_CREDS}
        if env_creds:
            self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"] = moto.admin
        if profile_creds:
            self.env.update(write_profiles(tmp_path, credentials=f"[default]\n{keys(moto.admin)}"))
        self.sts = fakes.sts(creds_fn=iam.mint, role_arn=iam.role_arn)
        self.env["AWS_ENDPOINT_URL_STS"] = self.sts.url
        if web_identity:
            tok = tmp_path / "token.jwt"
            tok.write_text(JWT)
            self.env.update({"AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": iam.role_arn})
        self.container = fakes.container(creds_fn=iam.mint)
        if container:
            self.env.update(container_env(self.container))
        self.imds = fakes.imds(creds_fn=iam.mint)
        self.env.update(imds_env(self.imds))
        self.ag = agent(moto.url, env=self.env)

    def counts(self):
        return {"sts": self.sts.count(), "container": self.container.count(), "imds": self.imds.count()}


def test_chain_environment_beats_all(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, True, True, True, True)
    get_ok(s.ag, secret)
    assert s.counts() == {"sts": 0, "container": 0, "imds": 0}


def test_chain_profile_beats_web_identity_container_imds(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, True, True, True)
    get_ok(s.ag, secret)
    assert s.counts() == {"sts": 0, "container": 0, "imds": 0}


def test_chain_web_identity_beats_container_imds(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, False, True, True)
    get_ok(s.ag, secret)
    assert s.counts() == {"sts": 1, "container": 0, "imds": 0}


def test_chain_container_beats_imds(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, False, False, True)
    get_ok(s.ag, secret)
    assert s.counts()["container"] >= 1 and s.counts()["imds"] == 0 and s.counts()["sts"] == 0


def test_chain_imds_last(agent, moto, iam, fakes, tmp_path, secret):
    s = AllSources(agent, moto, iam, fakes, tmp_path, False, False, False, False)
    get_ok(s.ag, secret)
    assert s.imds.served_count() >= 1 and s.counts()["container"] == 0 and s.counts()["sts"] == 0


def test_credentials_file_path_replaces_the_chain(agent, moto, iam, fakes, tmp_path, secret):
    creds = tmp_path / "agent-credentials"
    creds.write_text(f"[default]\n{keys(moto.admin)}")
    c = fakes.container(creds_fn=iam.mint)
    imds = fakes.imds(creds_fn=iam.mint)
    ag = agent(moto.url, config={"credentials_file_path": str(creds)},
               env={**NO_ENV_CREDS, **container_env(c), **imds_env(imds)})
    get_ok(ag, secret)
    assert c.count() == 0 and imds.count() == 0


def test_validate_credentials_uses_the_chain(agent, moto, iam, fakes, secret):
    """validate_credentials = true: GetCallerIdentity at start, signed with the chain's
    credentials (here the container's), against moto's STS."""
    proxy = fakes.proxy(moto.port)
    c = fakes.container(creds_fn=iam.mint)
    ag = agent(moto.url, config={"validate_credentials": True},
               env={**NO_ENV_CREDS, **container_env(c), "AWS_ENDPOINT_URL_STS": proxy.url})
    gci = proxy.ops("GetCallerIdentity")
    assert gci and gci[0]["status"] == 200, [(e["op"], e["status"]) for e in proxy.ops()]
    assert auth_scope(gci[0]["headers"])[0] == c.served[0]["akid"]
    assert gci[0]["headers"].get("x-amz-security-token") == c.served[0]["token"]
    get_ok(ag, secret)


def test_validate_credentials_rejects_bad_chain_credentials(agent, moto, fakes):
    proxy = fakes.proxy(moto.port)
    c = fakes.container(creds_fn=lambda: ("ASIAUNKNOWNUNKNOWN00", "nope", "no-such-session"))
    rc, out, err = agent.run_expect_exit(
        moto.url, config={"validate_credentials": True},
        env={**NO_ENV_CREDS, **container_env(c), "AWS_ENDPOINT_URL_STS": proxy.url})
    assert rc == 1, (rc, out, err)
    assert err.strip()
    assert proxy.ops("GetCallerIdentity")


def test_configured_but_failing_source_stops_the_chain(agent, moto, iam, fakes, secret):
    """Like the SDKs: a container endpoint that is configured but fails is an error; the
    agent does not quietly switch to another identity (IMDS)."""
    name, _ = secret
    c = fakes.container(creds_fn=iam.mint, expected_auth="right")
    imds = fakes.imds(creds_fn=iam.mint)
    ag = agent(moto.url, env={**NO_ENV_CREDS, **container_env(c, token="wrong"), **imds_env(imds)})
    msg = creds_error(*ag.secret(name)[::2])
    assert "container" in msg.lower(), msg
    assert imds.creds_gets() == []


def test_all_sources_fail_lists_every_source(agent, moto, secret):
    name, _ = secret
    ag = agent(moto.url, env={**NO_ENV_CREDS, "AWS_EC2_METADATA_DISABLED": None,
                              "AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_url()})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name, timeout=40)[::2])
    assert time.monotonic() - t0 < 10
    assert msg.startswith("no AWS credentials found"), msg
    low = msg.lower()
    pos = [low.find(s) for s in ("environment", "profile", "web identity", "container", "imds")]
    assert all(p >= 0 for p in pos), msg
    assert pos == sorted(pos), f"sources not listed in chain order: {msg}"
