"""The region chain: the config's `region`, AWS_REGION, AWS_DEFAULT_REGION, the
profile's region (AWS_PROFILE's, else the default profile's), then IMDS placement;
with none of them the agent exits 1.

The upstream is fake_upstream (no signature checks): the region used is the one in
the SigV4 credential scope of the GetSecretValue request.
"""

from __future__ import annotations

from credentials_common import closed_url, imds_env, log_of, write_profiles
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import fakes  # noqa: F401
from relays import auth_scope


def region_used(fake_upstream):
    reqs = fake_upstream.requests("GetSecretValue")
    assert reqs
    hdrs = {k.lower(): v for k, v in reqs[-1][3].items()}
    return auth_scope(hdrs)[2]


REGION_ENV_ALL = {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "ap-northeast-2"}


def profile_region_env(tmp_path, region="sa-east-1", profile="sma-region"):
    return {**write_profiles(tmp_path, config=f"[default]\nregion = eu-south-1\n[profile {profile}]\nregion = {region}\n"),
            "AWS_PROFILE": profile}


def test_region_config_first(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": "eu-north-1"},
               env={**REGION_ENV_ALL, **profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "eu-north-1"
    assert imds.region_gets() == []


def test_region_aws_region(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None},
               env={**REGION_ENV_ALL, **profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "ap-south-1"
    assert imds.region_gets() == []


def test_region_aws_default_region(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None},
               env={"AWS_DEFAULT_REGION": "ap-northeast-2", **profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "ap-northeast-2"
    assert imds.region_gets() == []


def test_region_from_profile(agent, fake_upstream, fakes, tmp_path):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None}, env={**profile_region_env(tmp_path), **imds_env(imds)})
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "sa-east-1"
    assert imds.region_gets() == []


def test_region_from_default_profile(agent, fake_upstream, tmp_path):
    env = write_profiles(tmp_path, config="[profile other]\nregion = sa-east-1\n[default]\nregion = eu-south-1\n")
    ag = agent(fake_upstream.url, config={"region": None}, env=env)
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "eu-south-1"


def test_region_from_imds_placement(agent, fake_upstream, fakes):
    imds = fakes.imds(region="ca-central-1")
    ag = agent(fake_upstream.url, config={"region": None}, env=imds_env(imds))
    assert ag.secret("r")[0] == 200
    assert region_used(fake_upstream) == "ca-central-1"
    assert "ca-central-1" in log_of(ag)
    gets = imds.region_gets()
    assert gets and all(g["token_state"] == "valid" for g in gets)
    assert imds.creds_gets() == [], "environment credentials were set: IMDS is for the region only"


def test_no_region_anywhere_exits_1(agent):
    rc, out, err = agent.run_expect_exit(
        config={"region": None}, env={"AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_url()})
    assert rc == 1, (rc, out, err)
    assert "region" in err.lower(), err


def test_no_region_imds_without_placement_exits_1(agent, fakes):
    imds = fakes.imds(region=None)
    rc, out, err = agent.run_expect_exit(config={"region": None}, env=imds_env(imds))
    assert rc == 1, (rc, out, err)
    assert "region" in err.lower(), err
    assert imds.count() >= 1
