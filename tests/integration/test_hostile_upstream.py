"""Upstreams that misbehave on purpose: redirects, statuses no AWS API sends, and
server-suggested delays far beyond the documented backoff.

A redirect followed would send the signed request (session token included) to
whatever host `Location` names and serve its answer; an odd status passed through
would break the client's framing (304 with a body, 101) or be cached as a
success (299). Every one of these must become a 502 that names the status, reach
no other host, and leave nothing in the cache."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import error, respond
from fake_metadata import FakeContainer


class _Server:
    """A threaded HTTP server on 127.0.0.1 answering every method with `answer(handler)`."""

    def __init__(self, answer):
        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                answer(self)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Elsewhere(_Server):
    """The host a redirect points at: records every request it gets and answers
    something that would look like a success."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        super().__init__(self._answer)

    def _answer(self, h):
        with self.lock:
            self.requests.append((h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
        body = json.dumps({"Name": "stolen", "SecretString": "from-elsewhere"}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def seen(self):
        with self.lock:
            return list(self.requests)


class Redirector(_Server):
    """Answers every request with `status` and `Location: target`."""

    def __init__(self, status, target):
        def answer(h):
            h.send_response(status)
            h.send_header("Location", target)
            h.send_header("Content-Length", "0")
            h.end_headers()

        super().__init__(answer)


@pytest.fixture
def elsewhere():
    e = Elsewhere()
    yield e
    e.close()


def unexpected_status(body, status):
    doc = json.loads(body)
    assert doc["__type"] == "ConnectionError", doc
    assert str(status) in doc["message"], doc


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_secrets_manager_redirects_are_never_followed(agent, fake_upstream, elsewhere, status):
    ag = agent(fake_upstream.url)
    fake_upstream.set_default(
        "GetSecretValue", respond(status, "", headers={"Location": elsewhere.url + "/steal"})
    )
    for _ in range(2):
        code, headers, body = ag.secret("redirected")
        assert code == 502, body
        assert headers.get("content-type", "").startswith("application/json")
        unexpected_status(body, status)
    assert elsewhere.seen() == [], "the redirect was followed"
    # Nothing was cached, and a redirect is not retried: one call per request.
    assert fake_upstream.count("GetSecretValue") == 2


@pytest.mark.parametrize("status", [101, 204, 299, 304, 399, 600])
def test_statuses_no_aws_api_sends_become_502(agent, fake_upstream, status):
    ag = agent(fake_upstream.url)
    body_for = b"" if status in (101, 204, 304) else json.dumps({"Name": "odd", "SecretString": "x"})
    fake_upstream.set_default("GetSecretValue", respond(status, body_for))
    code, _, body = ag.secret("odd", timeout=30)
    assert code == 502, body
    unexpected_status(body, status)
    # Not cached as a success: the next request asks upstream again.
    fake_upstream.set_default("GetSecretValue", None)
    code, _, body = ag.secret("odd")
    assert code == 200, body
    assert json.loads(body)["SecretString"] == "value-of-odd"
    # The agent still answers on a kept-alive connection after all of it.
    assert ag.get("/ping", token=False)[0] == 200


def test_container_credential_redirects_are_never_followed(agent, fake_upstream):
    # The redirect target serves valid credentials; taking them would switch identity.
    creds = FakeContainer()
    redirector = Redirector(302, creds.url + creds.path)
    try:
        env = {
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SESSION_TOKEN": None,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": redirector.url + "/creds",
        }
        ag = agent(fake_upstream.url, env=env)
        code, _, body = ag.secret("needs-creds", timeout=30)
        assert code == 500, body
        doc = json.loads(body)
        assert doc["__type"] == "InternalFailure"
        assert "302" in doc["message"], doc
        assert creds.count() == 0, "the redirect was followed"
        assert fake_upstream.count("GetSecretValue") == 0
    finally:
        redirector.close()
        creds.close()


def test_long_retry_after_hints_wait_no_longer_than_the_backoff(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    slow_down = error(503, "ServiceUnavailable", "later")
    slow_down.headers["x-amz-retry-after"] = "30000"
    fake_upstream.set_default("GetSecretValue", slow_down)
    started = time.monotonic()
    code, _, body = ag.secret("hinted", timeout=60)
    elapsed = time.monotonic() - started
    assert code == 503, body
    assert fake_upstream.count("GetSecretValue") == 3
    # Three attempts with at most 1 s and 2 s between them; the hint asked for
    # 30 s each time (90 s in all). Generous margin for a loaded machine.
    assert elapsed < 15, f"answered after {elapsed:.1f} s"
