"""Credential endpoints on their real addresses, which are not loopback.

The container endpoint 169.254.170.2 (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), EKS Pod
Identity's 169.254.170.23 and fd00:ec2::23, the default IMDS addresses 169.254.169.254
and fd00:ec2::254, and the FULL_URI hosts the agent must refuse before connecting
cannot be bound on the test machine.  These tests run the agent inside ``unshare -n``
(a network namespace with only ``lo``): netns_fakes.py adds the addresses to ``lo``,
starts the fakes there (a forbidden host is a trap that counts connections) and
reaches moto through a unix-socket bridge.  They skip where no namespace can be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import BASE_CONFIG, agent_bin, toml_value
from credentials_common import NO_ENV_CREDS, creds_error
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import iam, secret  # noqa: F401
from relays import UnixBridge


def netns_available():
    if shutil.which("unshare") is None:
        return "unshare not available"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr!r}"
    return None


def run_netns(tmp_path, env, servers=(), addresses=(), requests=(), moto=None, config=None, start_timeout=10):
    why = netns_available()
    if why:
        pytest.skip(why)
    bridge = None
    sockdir = tempfile.mkdtemp(prefix="sma", dir="/tmp")  # unix socket paths must stay short
    try:
        spec_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(tmp_path),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_TOKEN": "ns-token", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": "{SM}", "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9",
        }
        for k, v in env.items():
            if v is None:
                spec_env.pop(k, None)
            else:
                spec_env[k] = v
        if moto is not None:
            bridge = UnixBridge(os.path.join(sockdir, "sm"), moto.port)
        elif spec_env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER") == "{SM}":
            spec_env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://127.0.0.1:9"
        cfg = dict(BASE_CONFIG, **(config or {}))
        spec = {
            "agent": str(agent_bin()), "cwd": str(tmp_path), "env": spec_env,
            "config": "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items() if v is not None),
            "bridge": bridge.path if bridge else None, "addresses": list(addresses),
            "servers": list(servers), "requests": [list(r) for r in requests], "start_timeout": start_timeout,
        }
        helper = Path(__file__).with_name("netns_fakes.py")
        r = subprocess.run(["unshare", "-n", sys.executable, str(helper), json.dumps(spec)],
                           capture_output=True, timeout=start_timeout + 90)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        return json.loads(r.stdout)
    finally:
        if bridge:
            bridge.close()
        shutil.rmtree(sockdir, ignore_errors=True)


NS_HDR = {"X-Aws-Parameters-Secrets-Token": "ns-token"}


def ns_calls(res):
    return [[(c["method"], c["path"], c.get("token_state"), c["status"]) for c in s["calls"]] for s in res["servers"]]


def need_address(res, addr):
    ok, err = res["addresses"][addr]
    if not ok:
        pytest.skip(f"cannot add {addr} to lo in the namespace: {err}")


def test_container_relative_uri_uses_169_254_170_2(tmp_path, moto, iam, secret):
    name, value = secret
    creds = [list(iam.mint()), list(iam.mint())]
    res = run_netns(
        tmp_path,
        {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/sma-task-id"},
        servers=[{"kind": "container", "host": "169.254.170.2", "port": 80, "path": "/v2/credentials/sma-task-id",
                  "creds": creds}],
        addresses=["169.254.170.2/32"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "169.254.170.2/32")
    assert res["port"], res["stderr"][-3000:]
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:])
    assert json.loads(body)["SecretString"] == value
    calls = res["servers"][0]["calls"]
    assert calls and all(c["path"] == "/v2/credentials/sma-task-id" for c in calls)


@pytest.mark.parametrize("host,port,uri", [
    ("192.0.2.1", 80, "http://192.0.2.1/creds"),
    ("169.254.170.3", 8080, "http://169.254.170.3:8080/creds"),
    ("192.0.2.1", 80, "http://127.0.0.1@192.0.2.1/creds"),
    ("192.0.2.1", 80, "http://[::ffff:192.0.2.1]/creds"),
], ids=["test-net", "link-local-not-allowed", "userinfo-trick", "ipv4-mapped-ipv6"])
def test_container_full_uri_forbidden_host_refused_before_connecting(tmp_path, host, port, uri):
    """Inside a namespace the forbidden host is a trap on lo that counts connections."""
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": uri},
        servers=[{"kind": "trap", "host": host, "port": port}],
        addresses=[f"{host}/32"], requests=[("/v1/anything", NS_HDR)])
    need_address(res, f"{host}/32")
    assert res["port"], res["stderr"][-3000:]
    status, body, seconds = res["responses"][0]
    msg = creds_error(status, body)
    assert host in msg or uri.split("/")[2] in msg, msg
    assert seconds < 1.5, f"not refused at once ({seconds:.2f}s)"
    assert res["servers"][0]["connections"] == 0, "the agent connected to a forbidden container host"


@pytest.mark.parametrize("addr,host", [("169.254.170.23/32", "169.254.170.23"), ("fd00:ec2::23/128", "[fd00:ec2::23]")],
                         ids=["ipv4", "ipv6"])
def test_container_eks_pod_identity_endpoint(tmp_path, moto, iam, secret, addr, host):
    """EKS Pod Identity: FULL_URI on 169.254.170.23 / [fd00:ec2::23], token from a file."""
    name, value = secret
    tok = tmp_path / "eks-pod-identity-token"
    tok.write_text("eks-pod-identity-token-value")
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://{host}/v1/credentials",
                   "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tok)},
        servers=[{"kind": "container", "host": addr.split("/")[0], "port": 80, "path": "/v1/credentials",
                  "auth": "eks-pod-identity-token-value", "creds": [list(iam.mint())]}],
        addresses=[addr], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, addr)
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:], ns_calls(res))
    assert json.loads(body)["SecretString"] == value
    assert [c["auth"] for c in res["servers"][0]["calls"]] == ["eks-pod-identity-token-value"]


def test_container_relative_uri_beats_full_uri(tmp_path, moto, iam, secret):
    name, value = secret
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/rel",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://{S1}/creds"},
        servers=[{"kind": "container", "host": "169.254.170.2", "port": 80, "path": "/v2/credentials/rel",
                  "creds": [list(iam.mint())]},
                 {"kind": "trap", "host": "127.0.0.1", "port": 0}],
        addresses=["169.254.170.2/32"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "169.254.170.2/32")
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:])
    assert res["servers"][1]["connections"] == 0


def test_container_full_uri_https_any_host_is_allowed(tmp_path):
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_CONTAINER_CREDENTIALS_FULL_URI": "https://192.0.2.1/creds"},
        servers=[{"kind": "trap", "host": "192.0.2.1", "port": 443}],
        addresses=["192.0.2.1/32"], requests=[("/v1/anything", NS_HDR)])
    need_address(res, "192.0.2.1/32")
    status, body, _ = res["responses"][0]
    creds_error(status, body)  # the trap is no TLS server
    assert res["servers"][0]["connections"] >= 1, "https endpoints are allowed on any host"


def test_imds_default_endpoint_169_254_169_254(tmp_path, moto, iam, secret):
    name, value = secret
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_EC2_METADATA_DISABLED": None},
        servers=[{"kind": "imds", "host": "169.254.169.254", "port": 80, "creds": [list(iam.mint())]}],
        addresses=["169.254.169.254/32"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "169.254.169.254/32")
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:], ns_calls(res))
    assert json.loads(body)["SecretString"] == value


def test_imds_ipv6_endpoint_mode(tmp_path, moto, iam, secret):
    name, value = secret
    res = run_netns(
        tmp_path, {**NO_ENV_CREDS, "AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"},
        servers=[{"kind": "imds", "host": "fd00:ec2::254", "port": 80, "creds": [list(iam.mint())]}],
        addresses=["fd00:ec2::254/128"], requests=[(f"/v1/{name}", NS_HDR)], moto=moto)
    need_address(res, "fd00:ec2::254/128")
    status, body, _ = res["responses"][0]
    assert status == 200, (body, res["stderr"][-3000:], ns_calls(res))
    assert json.loads(body)["SecretString"] == value
