"""What the tests of the agent's AWS SDK protocol share (test_sdk_*.py and
test_cloud_extensions.py): SDK clients configured by the environment only, raw
signed requests, the upstream-call log and the module-scoped agent and proxy.

The clients are the real, unmodified ones: boto3 here, the AWS CLI and the
JavaScript SDK v3 as subprocesses (test_sdk_clients.py). Each finds the agent
through AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_SSM and signs with
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), as an application
would. The agent signs its own calls to moto, which checks signatures and IAM, so
both hops are verified.

Fixtures (import them into a test module to use them):
mod_agents  module: an AgentFactory whose agents live until the module's last test.
mod_proxy   module: a CountingProxy in front of moto; tests count what went
            upstream with `upstream_calls` (a mark, then what came after it), so
            one proxy serves a whole module.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from types import SimpleNamespace

import pytest

from conftest import (
    HTTP_TIMEOUT,
    AgentFactory,
    CountingProxy,
    free_port,
    http_request,
    wait_for_port,
)

REGION = "us-east-1"
JSON_11 = "application/x-amz-json-1.1"
# The agent's clock may be at most this far from a request's X-Amz-Date.
MAX_SKEW = 300

# Variables that would steer an SDK elsewhere than the test means (a profile, a
# proxy, a general endpoint, FIPS, another credential source); they are removed
# before a client is made.
_STEERING = ("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
             "http_proxy", "https_proxy", "no_proxy", "all_proxy")


def client_env(endpoint, creds, ssm_endpoint=None, region=REGION) -> dict:
    """The AWS_* variables an application would set to reach the agent: endpoint
    URLs (Secrets Manager at `endpoint`, Parameter Store at `ssm_endpoint`, by
    default the same), credentials (akid, secret[, session token]) or None for
    none at all, the region under both names (AWS_REGION for the JavaScript SDK,
    AWS_DEFAULT_REGION for botocore and the CLI), no shared files, no IMDS, and one
    attempt per call (no retry hides an answer)."""
    env = {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "AWS_ENDPOINT_URL_SSM": ssm_endpoint or endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    if creds is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = creds[0], creds[1]
        if len(creds) > 2 and creds[2]:
            env["AWS_SESSION_TOKEN"] = creds[2]
    return env


def subprocess_env(home, **kw) -> dict:
    """client_env for a child process: PATH, LANG and HOME (an empty folder) and
    nothing else inherited."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home)}
    env.update(client_env(**kw))
    return env


def sdk_clients(monkeypatch, endpoint, creds, ssm_endpoint=None, region=REGION):
    """boto3 clients (`.sm` Secrets Manager, `.ssm` Parameter Store) that take the
    endpoint, credentials and region from the environment only, as an application's
    would: the process environment is set (restored by `monkeypatch` at the end of
    the test) and the clients resolve it when they are made. Only timeouts are
    given in code, so that no test waits long."""
    import boto3
    from botocore.config import Config

    for k in list(os.environ):
        if k.startswith(_STEERING):
            monkeypatch.delenv(k)
    for k, v in client_env(endpoint, creds, ssm_endpoint, region).items():
        monkeypatch.setenv(k, v)
    session = boto3.session.Session()
    cfg = Config(connect_timeout=5, read_timeout=HTTP_TIMEOUT)
    return SimpleNamespace(sm=session.client("secretsmanager", config=cfg), ssm=session.client("ssm", config=cfg))


def agent_url(port: int, path: str = "") -> str:
    return f"http://127.0.0.1:{port}{path}"


# --------------------------------------------------------------------------- answers


def strip(resp: dict) -> dict:
    """An SDK answer without its ResponseMetadata (request ID, headers, retries)."""
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def error_type(headers) -> str:
    """The X-Amzn-Errortype header's error code (AWS may append `:NAMESPACE`)."""
    value = {k.lower(): v for k, v in dict(headers).items()}.get("x-amzn-errortype", "")
    return value.split(":")[0]


def client_error(excinfo):
    """(code, HTTP status, X-Amzn-Errortype code, message) of a botocore ClientError."""
    resp = excinfo.value.response
    meta = resp["ResponseMetadata"]
    return (resp["Error"]["Code"], meta["HTTPStatusCode"], error_type(meta.get("HTTPHeaders", {})),
            resp["Error"].get("Message", ""))


def check_json_answer(resp: dict):
    """What every answer of the SDK route carries: AWS's content type and a request ID."""
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert headers.get("content-type", "").split(";")[0].strip() == JSON_11, headers
    assert headers.get("x-amzn-requestid"), headers


def json_error(status, headers, body):
    """(error code, message) of a JSON 1.1 error answer; checks that the header names
    the same code as the body's `__type` (which AWS may prefix with a namespace)."""
    doc = json.loads(body)
    code = str(doc.get("__type", "")).split("#")[-1]
    assert code, (status, body)
    assert error_type(headers) == code, (headers, body)
    return code, doc.get("message", doc.get("Message", ""))


# --------------------------------------------------------------------------- upstream calls


class UpstreamCalls:
    """The requests a CountingProxy relayed since this object was made: `ops()`
    their X-Amz-Target values, `bodies()` their JSON documents."""

    def __init__(self, proxy: CountingProxy):
        self.proxy = proxy
        self.start = len(proxy.requests)

    def requests(self):
        return self.proxy.requests[self.start:]

    def ops(self):
        return [{k.lower(): v for k, v in headers}.get("x-amz-target", "")
                for _, _, headers, _ in self.requests()]

    def bodies(self, op=None):
        out = []
        for target, (_, _, _, body) in zip(self.ops(), self.requests()):
            if op is None or target == op:
                out.append(json.loads(body or b"{}"))
        return out


def upstream_calls(proxy) -> UpstreamCalls:
    return UpstreamCalls(proxy)


@contextlib.contextmanager
def no_upstream(proxy, what="the call"):
    """Asserts that the block made no upstream request at all (the agent answered
    from its cache, or refused)."""
    calls = UpstreamCalls(proxy)
    yield calls
    assert calls.ops() == [], f"{what} went upstream: {calls.ops()}"


# --------------------------------------------------------------------------- raw requests


def signed_request(port, target, body, creds=None, service="secretsmanager", region=REGION, path="/",
                   headers=None, host=None) -> bytes:
    """The exact bytes of one HTTP/1.1 POST of the SDK's JSON 1.1 protocol to the
    agent: `target` (e.g. "secretsmanager.GetSecretValue") and `body` (a dict, or
    bytes as they are), SigV4-signed with `creds` (akid, secret[, token]) for
    `service` and `region` by botocore, or unsigned with creds None."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    host = host or f"127.0.0.1:{port}"
    h = {"X-Amz-Target": target, "Content-Type": JSON_11}
    h.update(headers or {})
    req = AWSRequest(method="POST", url=f"http://{host}{path}", data=data, headers=h)
    if creds is not None:
        SigV4Auth(Credentials(*creds), service, region).add_auth(req)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    head += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    return head.encode() + data


def send_raw(port, raw: bytes, timeout=HTTP_TIMEOUT):
    """Sends `raw` on a fresh connection; (status, headers (lower-case dict), body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        try:
            body = resp.read()
        finally:
            resp.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def sdk_post(port, target, body, creds=None, **kw):
    """signed_request, sent: (status, headers, body)."""
    return send_raw(port, signed_request(port, target, body, creds, **kw))


def signed_get(port, path_and_query, creds, headers=None, service="secretsmanager", region=REGION,
               timeout=HTTP_TIMEOUT):
    """A GET signed by botocore's SigV4Auth (with `headers`, e.g. the SSRF token,
    among the signed ones); creds None sends it unsigned. `path_and_query` goes on
    the wire as given, so encode it first."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="GET", url=f"http://127.0.0.1:{port}{path_and_query}", headers=dict(headers or {}))
    if creds is not None:
        SigV4Auth(Credentials(*creds), service, region).add_auth(req)
    return http_request(port, path_and_query, headers=dict(req.headers), timeout=timeout)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mod_agents(tmp_path_factory):
    f = AgentFactory(tmp_path_factory)
    yield f
    f.cleanup()


@pytest.fixture(scope="module")
def mod_proxy(moto):
    p = CountingProxy(moto.port)
    yield p
    p.close()


def start_agent(factory, moto, proxy, config=None, env=None, creds=None, http_port=None):
    """An agent signing as moto's admin (or `creds`), Secrets Manager and Parameter
    Store through `proxy`. With `http_port` (and any other listener in `config`)
    the ports are fixed up front, and `Agent.port` is the main listener's whatever
    order the agent announces its listeners in."""
    cfg = dict(config or {})
    if http_port is not None:
        cfg["http_port"] = http_port
    e = {"AWS_ENDPOINT_URL_SSM": proxy.url}
    e.update(env or {})
    ag = factory(proxy.url, creds=creds or moto.admin, config=cfg, env=e)
    if http_port is not None:
        ag.port = http_port
    for key in ("cloud_extensions_port",):
        if key in cfg:
            wait_for_port(int(cfg[key]), timeout=10)
    return ag


def fixed_ports(n: int):
    """`n` distinct loopback ports that were free a moment ago."""
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)
