"""Credentials from STS: web identity and AssumeRole.

Web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or the same in a profile):
AssumeRoleWithWebIdentity is unsigned by design, which moto answers with a 500 once it
checks signatures, so the exchange with moto's own STS runs against a second moto
without signature checks (`moto_noauth`).  Against the signature-checking moto, a fake
STS hands out moto-minted credentials; it also shows the token file is read again at
the refresh.

AssumeRole from a profile (role_arn with source_profile or credential_source): signed
with the source's credentials, in moto's auth mode (it checks the signature, the trust
policy and the external id), chained over two hops; a denied AssumeRole and a
source_profile loop are errors that name the profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DUMMY_CREDS, _stop, free_port, unique, wait_for_port
from credentials_common import (
    JWT,
    NO_ENV_CREDS,
    assert_all_ok,
    assert_signed_with_served,
    container_env,
    creds_error,
    get_ok,
    imds_env,
    keys,
    LIFE,
    NEAR_EXPIRY,
    reads,
    write_profiles,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes, iam, secret  # noqa: F401
from relays import auth_scope, sts_credentials


# =========================================================================== web identity


def start_moto_server(logdir, auth_calls=None):
    moto_bin = Path(sys.executable).parent / "moto_server"
    if not moto_bin.exists():
        pytest.skip(f"{moto_bin} not found")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("AWS_") or k.lower().endswith("_proxy"))}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    if auth_calls is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_calls)
    out = open(Path(logdir) / "moto.log", "wb")
    proc = subprocess.Popen([str(moto_bin), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, 60)
    except Exception:
        _stop(proc)
        out.close()
        raise
    return proc, port, out


class NoAuthMoto:
    def __init__(self, port):
        import boto3

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        kw = dict(endpoint_url=self.url, region_name="us-east-1",
                  aws_access_key_id=DUMMY_CREDS[0], aws_secret_access_key=DUMMY_CREDS[1])
        self.sm = boto3.client("secretsmanager", **kw)
        iam = boto3.client("iam", **kw)
        self.role_arn = iam.create_role(RoleName="sma-web-identity", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": "oidc.example"},
                                                    "Action": "sts:AssumeRoleWithWebIdentity"}]}))["Role"]["Arn"]


@pytest.fixture(scope="module")
def moto_noauth(tmp_path_factory):
    """A second moto WITHOUT signature checking: its AssumeRoleWithWebIdentity (which is
    unsigned by design) fails with a 500 once moto checks signatures."""
    proc, port, out = start_moto_server(tmp_path_factory.mktemp("moto-noauth"))
    try:
        yield NoAuthMoto(port)
    finally:
        _stop(proc)
        out.close()


def check_web_identity_exchange(proxy, role_arn, token, session_name=None):
    ex = proxy.ops("AssumeRoleWithWebIdentity")
    assert ex, [e["op"] for e in proxy.ops()]
    from urllib.parse import parse_qs

    p = {k: v[0] for k, v in parse_qs(ex[0]["body"].decode()).items()}
    assert p["RoleArn"] == role_arn
    assert p["WebIdentityToken"] == token
    assert p.get("Version") == "2011-06-15"
    if session_name:
        assert p["RoleSessionName"] == session_name
    else:
        assert p.get("RoleSessionName")
    assert "authorization" not in ex[0]["headers"], "AssumeRoleWithWebIdentity must be unsigned"
    assert ex[0]["status"] == 200, ex[0]["response"][:500]
    issued = sts_credentials(ex[-1]["response"])
    sm = proxy.ops("GetSecretValue")
    assert sm
    last = sm[-1]["headers"]
    assert auth_scope(last)[0] == issued["AccessKeyId"]
    assert last.get("x-amz-security-token") == issued["SessionToken"]


def test_web_identity_env_with_moto_sts(agent, moto_noauth, fakes, tmp_path):
    name = unique("wi")
    moto_noauth.sm.create_secret(Name=name, SecretString="web-identity-value")
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT)
    proxy = fakes.proxy(moto_noauth.port)
    ag = agent(None, env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL": proxy.url,
                          "AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": moto_noauth.role_arn,
                          "AWS_ROLE_SESSION_NAME": "sma-wi-session"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == "web-identity-value"
    check_web_identity_exchange(proxy, moto_noauth.role_arn, JWT, "sma-wi-session")


def test_web_identity_profile_with_moto_sts(agent, moto_noauth, fakes, tmp_path):
    name = unique("wip")
    moto_noauth.sm.create_secret(Name=name, SecretString="web-identity-profile")
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT + "p")
    cfg = tmp_path / "config"
    cfg.write_text(f"[profile sma-wi]\nrole_arn = {moto_noauth.role_arn}\n"
                   f"web_identity_token_file = {tok}\nrole_session_name = sma-wi-profile\n")
    proxy = fakes.proxy(moto_noauth.port)
    ag = agent(None, env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL": proxy.url, "AWS_CONFIG_FILE": str(cfg),
                          "AWS_PROFILE": "sma-wi"})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert json.loads(body)["SecretString"] == "web-identity-profile"
    check_web_identity_exchange(proxy, moto_noauth.role_arn, JWT + "p", "sma-wi-profile")


def test_web_identity_signed_fetch_and_token_file_reread(agent, moto, iam, secret, fakes, tmp_path):
    """Fake STS (web identity) handing out moto-minted credentials; Secrets Manager is the
    signature-checking moto.  The token file is read again at the refresh."""
    name, value = secret
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT + "A")
    sts = fakes.sts(creds_fn=iam.mint, role_arn=iam.role_arn, accept_tokens={JWT + "A"}, lifetime=LIFE)
    proxy = fakes.proxy(moto.port)
    ag = agent(proxy.url, config={"ttl_seconds": 0},
               env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL_STS": sts.url,
                    "AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": iam.role_arn})
    st, _, body = ag.secret(name)
    assert st == 200, body
    assert sts.tokens_seen() == [JWT + "A"]
    tok.write_text(JWT + "B")
    sts.accept_tokens = {JWT + "B"}  # the projected token was rotated
    ag.advance(NEAR_EXPIRY)  # the next request refreshes the credentials
    results = reads(ag, name)
    assert_all_ok(results, value)
    assert sts.served_count() == 2, sts.tokens_seen()
    assert JWT + "B" in sts.tokens_seen()
    assert not any(c["signed"] for c in sts.requests())
    assert_signed_with_served(proxy, sts, min_keys=2)


def test_web_identity_sts_error_is_credentials_error(agent, iam, fakes, tmp_path, moto, secret):
    name, _ = secret
    tok = tmp_path / "token.jwt"
    tok.write_text(JWT)
    sts = fakes.sts(creds_fn=iam.mint, role_arn=iam.role_arn, accept_tokens=set())
    ag = agent(moto.url, env={**NO_ENV_CREDS, "AWS_ENDPOINT_URL_STS": sts.url,
                              "AWS_WEB_IDENTITY_TOKEN_FILE": str(tok), "AWS_ROLE_ARN": iam.role_arn})
    msg = creds_error(*ag.secret(name)[::2])
    assert "web identity" in msg.lower() and "InvalidIdentityToken" in msg, msg
    assert sts.count() >= 1


# =========================================================================== AssumeRole (profiles)


def sts_params(exchange):
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(exchange["body"].decode()).items()}


def check_assume_role(proxy, role_arn, signer_akid, signer_token=None, session_name=None, external_id=None):
    ex = proxy.ops("AssumeRole")
    assert ex, [e["op"] for e in proxy.ops()]
    p = sts_params(ex[0])
    assert p["RoleArn"] == role_arn
    if session_name:
        assert p["RoleSessionName"] == session_name
    else:
        assert p.get("RoleSessionName")
    if external_id:
        assert p.get("ExternalId") == external_id
    scope = auth_scope(ex[0]["headers"])
    assert scope and scope[0] == signer_akid and scope[3] == "sts", ex[0]["headers"].get("authorization")
    assert ex[0]["headers"].get("x-amz-security-token") == signer_token
    assert ex[0]["status"] == 200, ex[0]["response"][:500]
    issued = sts_credentials(ex[-1]["response"])
    sm = proxy.ops("GetSecretValue")
    assert sm and sm[-1]["status"] == 200
    assert auth_scope(sm[-1]["headers"])[0] == issued["AccessKeyId"]
    assert sm[-1]["headers"].get("x-amz-security-token") == issued["SessionToken"]


def test_profile_role_arn_source_profile_assume_role(agent, moto, iam, secret, fakes, tmp_path):
    """role_arn + source_profile: AssumeRole signed with the source profile's keys, in
    moto's auth mode (it checks the signature, the trust policy and the external id)."""
    proxy = fakes.proxy(moto.port)
    env = write_profiles(
        tmp_path,
        config=(f"[profile sma-assumer]\nrole_arn = {iam.ext_role_arn}\nsource_profile = sma-base\n"
                "role_session_name = sma-session-test\nexternal_id = sma-ext-id\n"),
        credentials=f"[sma-base]\n{keys(moto.admin)}")
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-assumer", "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    check_assume_role(proxy, iam.ext_role_arn, moto.admin[0], None, "sma-session-test", "sma-ext-id")


def test_profile_assume_role_denied_names_profile(agent, moto, iam, secret, fakes, tmp_path):
    """The source profile's user may not call sts:AssumeRole (moto checks the policy)."""
    name, _ = secret
    proxy = fakes.proxy(moto.port)
    env = write_profiles(
        tmp_path, config=(f"[profile sma-denied-base]\n{keys(moto.denied)}\n"
                          f"[profile sma-assumer-denied]\nrole_arn = {iam.role_arn}\nsource_profile = sma-denied-base\n"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-assumer-denied",
                               "AWS_ENDPOINT_URL_STS": proxy.url})
    msg = creds_error(*ag.secret(name)[::2])
    assert "sma-assumer-denied" in msg, msg
    assert proxy.ops("AssumeRole") and proxy.ops("AssumeRole")[0]["status"] == 403
    assert proxy.ops("GetSecretValue") == []


def test_profile_role_chain_two_hops(agent, moto, iam, secret, fakes, tmp_path):
    """sma-outer (chain role) <- sma-inner (role assumed with the admin keys) <- sma-keys."""
    proxy = fakes.proxy(moto.port)
    env = write_profiles(
        tmp_path,
        config=(f"[profile sma-outer]\nrole_arn = {iam.chain_role_arn}\nsource_profile = sma-inner\n"
                f"[profile sma-inner]\nrole_arn = {iam.role_arn}\nsource_profile = sma-keys\n"
                f"[profile sma-keys]\n{keys(moto.admin)}"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-outer", "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    ar = proxy.ops("AssumeRole")
    assert [sts_params(e)["RoleArn"] for e in ar] == [iam.role_arn, iam.chain_role_arn]
    assert auth_scope(ar[0]["headers"])[0] == moto.admin[0]
    inner = sts_credentials(ar[0]["response"])
    assert auth_scope(ar[1]["headers"])[0] == inner["AccessKeyId"]
    assert ar[1]["headers"].get("x-amz-security-token") == inner["SessionToken"]
    outer = sts_credentials(ar[1]["response"])
    sm = proxy.ops("GetSecretValue")
    assert auth_scope(sm[-1]["headers"])[0] == outer["AccessKeyId"]
    assert sm[-1]["headers"].get("x-amz-security-token") == outer["SessionToken"]


def test_profile_own_source_profile_uses_its_keys(agent, moto, iam, secret, fakes, tmp_path):
    proxy = fakes.proxy(moto.port)
    env = write_profiles(tmp_path, config=(f"[profile sma-self]\nrole_arn = {iam.role_arn}\n"
                                           f"source_profile = sma-self\n{keys(moto.admin)}"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-self", "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    check_assume_role(proxy, iam.role_arn, moto.admin[0])


def test_profile_source_profile_loop_is_an_error(agent, moto, iam, secret, fakes, tmp_path):
    name, _ = secret
    proxy = fakes.proxy(moto.port)
    env = write_profiles(tmp_path, config=(f"[profile sma-a]\nrole_arn = {iam.role_arn}\nsource_profile = sma-b\n"
                                           f"[profile sma-b]\nrole_arn = {iam.role_arn}\nsource_profile = sma-a\n"))
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-a", "AWS_ENDPOINT_URL_STS": proxy.url})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name)[::2])
    assert time.monotonic() - t0 < 5
    assert "loop" in msg.lower() and "sma-a" in msg, msg
    assert proxy.ops() == []
    assert ag.alive()


@pytest.mark.parametrize("source", ["EcsContainer", "Ec2InstanceMetadata"])
def test_profile_role_arn_credential_source(agent, moto, iam, secret, fakes, tmp_path, source):
    proxy = fakes.proxy(moto.port)
    if source == "EcsContainer":
        src = fakes.container(creds_fn=iam.mint)
        src_env = container_env(src)
    else:
        src = fakes.imds(creds_fn=iam.mint)
        src_env = imds_env(src)
    env = write_profiles(tmp_path, config=f"[profile sma-chain]\nrole_arn = {iam.chain_role_arn}\n"
                                          f"credential_source = {source}\n")
    ag = agent(proxy.url, env={**NO_ENV_CREDS, **env, **src_env, "AWS_PROFILE": "sma-chain",
                               "AWS_ENDPOINT_URL_STS": proxy.url})
    get_ok(ag, secret)
    assert src.served_count() >= 1
    check_assume_role(proxy, iam.chain_role_arn, src.served[0]["akid"], src.served[0]["token"])
