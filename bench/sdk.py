"""The AWS SDK's protocol in bench.py: GetSecretValue in JSON 1.1 (POST /,
X-Amz-Target, a SigV4 Authorization header), as boto3 sends it.

Two uses:
  - `Sdk.wrk_script`: boto3 makes one real call through the agent and the exact
    request it sent (method, path, headers, body) becomes a wrk script, with
    report.lua's `done` after it. The agent accepts a signature within 5 minutes
    of its X-Amz-Date, so a captured request can be replayed that long; each wrk
    run gets one signed just before it.
  - `latency`: the times a boto3 call takes, sequential calls on one client.

Needs boto3 in the Python that runs the bench (`available` says why not).
"""

import os
import time
import urllib.parse

import common

REPORT_LUA = os.path.join(common.HERE, "report.lua")


def available():
    """None if boto3 can be imported, else why it cannot."""
    try:
        import boto3  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


class Sdk:
    """A boto3 Secrets Manager client whose endpoint is `endpoint`, signing
    with the static keys of `env` (an agent's environment, common.agent_env)."""

    def __init__(self, endpoint, env):
        import boto3
        from botocore.config import Config
        self.client = boto3.session.Session().client(
            "secretsmanager",
            endpoint_url=endpoint,
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            # One attempt: a refused signature fails the bench instead of being retried.
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )
        self.sent = None
        self.client.meta.events.register("before-send", self._keep)

    def _keep(self, request, **_):
        self.sent = request  # returns None: botocore sends it

    def get(self, secret_id):
        """One GetSecretValue; checks that the answer names the secret."""
        answer = self.client.get_secret_value(SecretId=secret_id)
        if answer.get("Name") != secret_id or "SecretString" not in answer:
            raise RuntimeError("GetSecretValue for %s answered %r" % (secret_id, answer))
        return answer

    def wrk_script(self, secret_id, path):
        """Makes one call for `secret_id` and writes to `path` a wrk script that
        sends the same request, signature and all. Returns `path`."""
        self.get(secret_id)
        request = self.sent
        url = urllib.parse.urlsplit(request.url)
        headers = {name: value for name, value in request.headers.items()}
        headers["Host"] = url.netloc  # signed; urllib3 adds it, botocore does not list it
        lines = ["-- bench/sdk.py: GetSecretValue as boto3 sent it, signed at %s, replayed"
                 % _text(headers.get("X-Amz-Date", "?")),
                 "wrk.method = %s" % lua_string(request.method),
                 "wrk.path = %s" % lua_string(url.path or "/"),
                 "wrk.body = %s" % lua_string(request.body or b"")]
        lines += ["wrk.headers[%s] = %s" % (lua_string(name), lua_string(value)) for name, value in headers.items()]
        with open(REPORT_LUA) as f:
            report = f.read()
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n\n" + report)
        return path


def latency(sdk, secret_id, calls):
    """`calls` sequential GetSecretValue calls on one client, after one that
    opens the connection. Returns (p50, p99) in ms."""
    sdk.get(secret_id)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        sdk.get(secret_id)
        times.append(time.perf_counter() - t0)
    times.sort()
    return common.percentile(times, 50) * 1000, common.percentile(times, 99) * 1000


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def lua_string(value):
    """A Lua string literal for `value` (str or bytes): printable ASCII as is,
    every other byte as a three-digit decimal escape."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else "\\%03d" % b for b in data) + '"'
