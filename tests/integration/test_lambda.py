"""The agent as a Lambda extension, against a fake Extensions API.

Checks the registration request, that secrets are served from init on (and,
with SnapStart, only from the first INVOKE, so a snapshot never holds secrets),
configuration by the variables of AWS's Parameters and Secrets Lambda
Extension, and that SHUTDOWN ends the process cleanly."""

import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import LISTEN_RE, free_port, http_request, respond, wait_until

EXT_ID = "3f9c0e1a-ext"


class FakeExtensionsApi:
    """Lambda's Extensions API: register, then event/next long-polls."""

    def __init__(self, register_status=200):
        self.register_status = register_status
        self.registrations = []
        self.next_calls = 0
        self.bad_requests = []
        self.events = queue.Queue()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/2020-01-01/extension/register":
                    api.bad_requests.append(("POST", self.path))
                    return self._send(404, b"{}")
                api.registrations.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body or b"{}")))
                extra = {"Lambda-Extension-Identifier": EXT_ID} if api.register_status == 200 else {}
                self._send(api.register_status, b'{"functionName":"f","functionVersion":"1","handler":"h"}', extra)

            def do_GET(self):
                if self.path != "/2020-01-01/extension/event/next":
                    api.bad_requests.append(("GET", self.path))
                    return self._send(404, b"{}")
                if self.headers.get("Lambda-Extension-Identifier") != EXT_ID:
                    api.bad_requests.append(("GET", "missing identifier"))
                    return self._send(403, b'{"errorType":"Extension.Forbidden"}')
                api.next_calls += 1
                try:
                    event = api.events.get(timeout=60)
                except queue.Empty:
                    return self._send(500, b"{}")
                self._send(200, json.dumps(event).encode())

            def _send(self, status, body, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def send(self, event_type):
        event = {"eventType": event_type, "deadlineMs": int(time.time() * 1000) + 3000}
        if event_type == "INVOKE":
            event["requestId"] = "req-1"
        else:
            event["shutdownReason"] = "spindown"
        self.events.put(event)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def extensions_api():
    api = FakeExtensionsApi()
    yield api
    api.close()


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_serves_from_init_and_exits_on_shutdown(agent, fake_upstream, extensions_api):
    port = free_port()
    # The config is written to agent.toml in the agent's working directory.
    proc, token, _, _ = agent.popen(
        upstream=fake_upstream.url,
        config={"http_port": port},
        env={"AWS_LAMBDA_RUNTIME_API": extensions_api.address},
        args=["lambda-extension", "--config", "agent.toml"],
    )
    wait_until(lambda: extensions_api.next_calls >= 1, timeout=15, what="register + event/next")
    headers, body = extensions_api.registrations[0]
    assert headers.get("lambda-extension-name") == "secrets-manager-agent"
    assert body == {"events": ["INVOKE", "SHUTDOWN"]}
    assert not extensions_api.bad_requests

    # Still in init (no INVOKE yet): the function's init code can read secrets.
    assert not refused(port), "the agent serves from init on"
    status, _, data = http_request(port, "/secretsmanager/get?secretId=lambda-secret",
                                   {"X-Aws-Parameters-Secrets-Token": token})
    assert status == 200, data
    assert json.loads(data)["Name"] == "lambda-secret"
    assert extensions_api.next_calls == 1

    extensions_api.send("INVOKE")  # the first INVOKE changes nothing
    wait_until(lambda: extensions_api.next_calls >= 2, timeout=15, what="second event/next")
    assert http_request(port, "/ping")[0] == 200
    assert fake_upstream.count("GetSecretValue") == 1, "served from the cache"

    extensions_api.send("SHUTDOWN")
    assert proc.wait(timeout=15) == 0
    out = proc.stdout.read().decode()
    assert LISTEN_RE.search(out), out


def test_with_snap_start_nothing_is_served_before_the_first_invoke(agent, fake_upstream, extensions_api):
    """A SnapStart snapshot is taken after init: it must hold no cached secret."""
    port = free_port()
    proc, token, _, _ = agent.popen(
        upstream=fake_upstream.url,
        config={"http_port": port},
        env={"AWS_LAMBDA_RUNTIME_API": extensions_api.address,
             "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"},
        args=["lambda-extension", "--config", "agent.toml"],
    )
    wait_until(lambda: extensions_api.next_calls >= 1, timeout=15, what="register + event/next")
    # Without SnapStart the agent listens before it asks for its first event:
    # that call is the event that proves the window in which it would have.
    assert refused(port), "with SnapStart the agent must not serve during init"
    assert not fake_upstream.requests(), "nor call AWS: nothing may be cached in the snapshot"
    assert proc.poll() is None

    extensions_api.send("INVOKE")
    wait_until(lambda: not refused(port), timeout=15, what="agent listening after INVOKE")
    status, _, data = http_request(port, "/secretsmanager/get?secretId=lambda-secret",
                                   {"X-Aws-Parameters-Secrets-Token": token})
    assert status == 200, data
    extensions_api.send("INVOKE")  # a second INVOKE changes nothing
    wait_until(lambda: extensions_api.next_calls >= 3, timeout=15, what="third event/next")
    assert http_request(port, "/ping")[0] == 200
    extensions_api.send("SHUTDOWN")
    assert proc.wait(timeout=15) == 0


def test_configured_by_the_extension_variables_alone(agent, fake_upstream, extensions_api):
    """What a function that used AWS's Parameters and Secrets Lambda Extension sets."""
    port = free_port()
    env = {
        "AWS_LAMBDA_RUNTIME_API": extensions_api.address,
        "AWS_TOKEN": None,
        "AWS_SESSION_TOKEN": "session-token",
        "AWS_ENDPOINT_URL_SSM": fake_upstream.url,
        "AWS_REGION": "us-east-1",
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
        "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "debug",
        "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS": "3",
        "SECRETS_MANAGER_TTL": "0",
        "SSM_PARAMETER_STORE_TTL": "300",
        "SECRETS_MANAGER_TIMEOUT_MILLIS": "0",
        "SSM_PARAMETER_STORE_TIMEOUT_MILLIS": "2000",
    }
    proc, _, _, _ = agent.popen(upstream=fake_upstream.url, env=env, args=["lambda-extension"])
    wait_until(lambda: extensions_api.next_calls >= 1, timeout=15, what="register + event/next")
    hdr = {"X-Aws-Parameters-Secrets-Token": "session-token"}
    for _ in range(2):
        status, _, data = http_request(port, "/secretsmanager/get?secretId=s1", hdr)
        assert status == 200, data
        status, _, data = http_request(port, "/systemsmanager/parameters/get?name=%2Fapp%2Fp", hdr)
        assert status == 200, data
        doc = json.loads(data)
        assert doc["Parameter"]["Value"] == "param-value-of-/app/p" and doc["ResultMetadata"] == {}
    assert fake_upstream.count("GetSecretValue") == 2, "SECRETS_MANAGER_TTL=0: no cache"
    assert fake_upstream.count("GetParameter") == 1, "SSM_PARAMETER_STORE_TTL=300"
    extensions_api.send("SHUTDOWN")
    assert proc.wait(timeout=15) == 0
    err = proc.stderr.read().decode()
    assert " DEBUG " in err, "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL=debug"
    assert "max_conn 3" in err, err


def test_each_service_has_its_own_timeout(agent, fake_upstream, extensions_api):
    """SSM_PARAMETER_STORE_TIMEOUT_MILLIS bounds Parameter Store calls only."""
    port = free_port()
    fake_upstream.set_default("GetParameter", respond(200, {"Parameter": {"Name": "/slow", "Value": "v",
                                                                          "Version": 1}}, delay=1.0))
    fake_upstream.set_default("GetSecretValue", respond(200, {
        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:slow-AbCdEf", "Name": "slow",
        "VersionId": "v1", "SecretString": "x", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1700000000},
        delay=1.0))
    env = {"AWS_LAMBDA_RUNTIME_API": extensions_api.address, "AWS_ENDPOINT_URL_SSM": fake_upstream.url,
           "AWS_REGION": "us-east-1", "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
           "SSM_PARAMETER_STORE_TIMEOUT_MILLIS": "300", "SECRETS_MANAGER_TIMEOUT_MILLIS": "5000"}
    proc, token, _, _ = agent.popen(upstream=fake_upstream.url, env=env, args=["lambda-extension"])
    wait_until(lambda: not refused(port), timeout=15, what="listening")
    hdr = {"X-Aws-Parameters-Secrets-Token": token}
    status, _, body = http_request(port, "/systemsmanager/parameters/get?name=%2Fslow", hdr, timeout=30)
    assert status == 504, body
    status, _, body = http_request(port, "/secretsmanager/get?secretId=slow", hdr, timeout=30)
    assert status == 200, body
    extensions_api.send("SHUTDOWN")
    assert proc.wait(timeout=15) == 0


def test_a_bad_extension_variable_stops_the_start(agent, fake_upstream, extensions_api):
    proc, _, _, _ = agent.popen(
        upstream=fake_upstream.url,
        env={"AWS_LAMBDA_RUNTIME_API": extensions_api.address, "SSM_PARAMETER_STORE_TTL": "forever"},
        args=["lambda-extension"],
    )
    assert proc.wait(timeout=15) == 1
    err = proc.stderr.read().decode()
    assert "environment variable SSM_PARAMETER_STORE_TTL=forever is not valid: expected an integer from 0 to 3600" in err
    assert not extensions_api.registrations


def test_session_token_is_the_default_ssrf_token_on_lambda(agent, fake_upstream, extensions_api):
    """Lambda sets AWS_SESSION_TOKEN; with no AWS_TOKEN it is the token, as with AWS's agent."""
    port = free_port()
    proc, _, workdir, _ = agent.popen(
        upstream=fake_upstream.url,
        config={"http_port": port},
        env={"AWS_LAMBDA_RUNTIME_API": extensions_api.address, "AWS_TOKEN": None,
             "AWS_SESSION_TOKEN": "lambda-session-token"},
        args=["lambda-extension", "--config"],
    )
    # `--config` without a path is a usage error: exit 2, nothing registered.
    assert proc.wait(timeout=15) == 2
    assert not extensions_api.registrations
    proc, _, workdir, _ = agent.popen(
        upstream=fake_upstream.url,
        config={"http_port": port},
        env={"AWS_LAMBDA_RUNTIME_API": extensions_api.address, "AWS_TOKEN": None,
             "AWS_SESSION_TOKEN": "lambda-session-token"},
        args=["lambda-extension", "--config", "agent.toml"],
    )
    wait_until(lambda: extensions_api.next_calls >= 1, timeout=15, what="event/next")
    assert not refused(port), "serving from init on"
    hdr = {"X-Aws-Parameters-Secrets-Token": "lambda-session-token"}
    assert http_request(port, "/secretsmanager/get?secretId=s1", hdr)[0] == 200
    assert http_request(port, "/secretsmanager/get?secretId=s1",
                        {"X-Aws-Parameters-Secrets-Token": "wrong"})[0] == 403
    extensions_api.send("SHUTDOWN")
    assert proc.wait(timeout=15) == 0


def test_refused_registration_exits_non_zero(agent, fake_upstream):
    api = FakeExtensionsApi(register_status=403)
    try:
        rc, out, err = agent.run_expect_exit(
            upstream=fake_upstream.url,
            env={"AWS_LAMBDA_RUNTIME_API": api.address},
            args=["lambda-extension"],
        )
        assert rc == 1, (rc, err)
        assert "refused the registration" in err
        assert "listening on" not in out
    finally:
        api.close()


def test_lambda_mode_needs_the_runtime_api(agent, fake_upstream):
    rc, _, err = agent.run_expect_exit(upstream=fake_upstream.url, args=["lambda-extension"])
    assert rc == 1
    assert "AWS_LAMBDA_RUNTIME_API" in err


@pytest.mark.xdist_group("make")  # runs make in the repository: one at a time
def test_lambda_layer_zip_holds_the_extension():
    """`make lambda-layer`: the static binary at extensions/secrets-manager-agent, executable."""
    import os
    import subprocess
    import zipfile
    from conftest import REPO_ROOT

    static = REPO_ROOT / "target/x86_64-unknown-linux-musl/release/secrets-manager-agent"
    if not static.exists() and os.environ.get("SKIP_STATIC_TESTS") == "1":
        pytest.skip("static build skipped")
    subprocess.run(["make", "-s", "lambda-layer"], cwd=REPO_ROOT, check=True, timeout=900,
                   stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(REPO_ROOT / "target/lambda/secrets-manager-agent-layer.zip") as z:
        infos = z.infolist()
        assert [i.filename for i in infos] == ["extensions/secrets-manager-agent"]
        assert (infos[0].external_attr >> 16) & 0o777 == 0o755
        assert z.read(infos[0]) == static.read_bytes()
