"""Upstream faults, retries, stale serving and concurrency, against the scriptable fake upstream.

TTLs run on the agent's test clock (Agent.advance); upstream timeouts are real
time, kept short (FAST_TIMEOUT_ENV). Calls that "must not follow" are counted
after the event that ends them: the agent's answer, which comes after its last
attempt, and its own count of attempts in /metrics."""

import json
import os
import threading


from conftest import close_abruptly, error, free_port, garbage, hang, ok, respond, unique, wait_until

FAST_TIMEOUT_ENV = {"SMA_UPSTREAM_TIMEOUT_MS": "300", "SMA_UPSTREAM_CONNECT_TIMEOUT_MS": "1000"}
TTL = 300  # seconds on the agent's clock


def err_json(body):
    doc = json.loads(body)  # error bodies are always valid JSON
    assert isinstance(doc, dict)
    return doc


def test_upstream_timeout_is_504(agent, fake_upstream):
    ag = agent(fake_upstream.url, env=FAST_TIMEOUT_ENV)
    fake_upstream.set_default("GetSecretValue", hang(30))
    status, headers, body = ag.secret("slow", timeout=60)
    assert status == 504, body
    assert err_json(body) == {"__type": "TimeoutError", "message": "Timeout"}
    assert headers.get("content-type", "").split(";")[0].strip() == "application/json"
    assert 1 <= fake_upstream.count("GetSecretValue") <= 3


def test_connection_refused_is_502(agent):
    port = free_port()  # nothing listens there
    ag = agent(f"http://127.0.0.1:{port}", env=FAST_TIMEOUT_ENV)
    status, _, body = ag.secret("any", timeout=60)
    assert status == 502, body
    assert err_json(body) == {"__type": "ConnectionError", "message": "Read Error"}


def test_connection_closed_by_upstream_is_502(agent, fake_upstream):
    ag = agent(fake_upstream.url, env=FAST_TIMEOUT_ENV)
    fake_upstream.set_default("GetSecretValue", close_abruptly())
    status, _, body = ag.secret("any", timeout=60)
    assert status == 502, body
    assert err_json(body) == {"__type": "ConnectionError", "message": "Read Error"}
    assert 1 <= fake_upstream.count("GetSecretValue") <= 3


def test_500_then_success_is_retried(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    fake_upstream.script("GetSecretValue", error(500, "InternalServiceError", "oops"))
    status, _, body = ag.secret("retry500", timeout=60)
    assert status == 200, body
    assert json.loads(body)["SecretString"] == "value-of-retry500"
    assert fake_upstream.count("GetSecretValue") == 2


def test_throttling_then_success_is_retried(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    fake_upstream.script("GetSecretValue", error(400, "ThrottlingException", "Rate exceeded"))
    status, _, body = ag.secret("throttled", timeout=60)
    assert status == 200, body
    assert fake_upstream.count("GetSecretValue") == 2


def test_persistent_500_gives_up_after_three_attempts(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    fake_upstream.set_default("GetSecretValue", error(500, "InternalServiceError", "still broken"))
    status, _, body = ag.secret("broken", timeout=60)
    assert status == 500, body
    assert err_json(body) == {"__type": "InternalServiceError", "message": "still broken"}
    assert fake_upstream.count("GetSecretValue") == 3


def test_client_error_is_not_retried(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    fake_upstream.set_default("GetSecretValue", error(400, "ResourceNotFoundException", "no such secret"))
    status, _, body = ag.secret("gone")
    assert status == 400, body
    assert err_json(body) == {"__type": "ResourceNotFoundException", "message": "no such secret"}
    # Retries come before the answer: once it is here, every attempt is made.
    assert fake_upstream.count("GetSecretValue") == 1
    assert ag.metric("upstream_calls_total", operation="GetSecretValue") == 1


def test_garbage_body_is_502_response_error(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    fake_upstream.set_default("GetSecretValue", garbage())
    status, _, body = ag.secret("garbage", timeout=60)
    assert status == 502, body
    assert err_json(body) == {"__type": "ConnectionError", "message": "Response Error"}


def test_xml_error_body_keeps_status_and_code(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>Sender</Type>'
        "<Code>Foo</Code><Message>not for you</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
    fake_upstream.set_default("GetSecretValue", respond(403, xml, {"Content-Type": "text/xml"}))
    status, _, body = ag.secret("xml")
    assert status == 403, body
    doc = err_json(body)
    assert doc["__type"] == "Foo"
    assert isinstance(doc.get("message"), str)


def test_html_error_body_is_unknown_error(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    html = "<html><head><title>403 Forbidden</title></head><body><h1>Forbidden</h1></body></html>"
    fake_upstream.set_default("GetSecretValue", respond(403, html, {"Content-Type": "text/html"}))
    status, _, body = ag.secret("html")
    assert status == 403, body
    assert err_json(body)["__type"] == "UnknownError"


def test_html_bad_gateway_keeps_upstream_status(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    fake_upstream.set_default("GetSecretValue", respond(502, html, {"Content-Type": "text/html"}))
    status, _, body = ag.secret("proxy", timeout=60)
    assert status == 502, body
    assert err_json(body)["__type"] == "UnknownError"
    assert fake_upstream.count("GetSecretValue") == 3  # 5xx is retried


def test_error_message_with_quotes_is_valid_json(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    msg = 'bad "quoted" value \\ with backslash\nand newline </script> \u00e9'
    fake_upstream.set_default("GetSecretValue", error(400, "ValidationException", msg))
    status, _, body = ag.secret("quotes")
    assert status == 400, body
    assert err_json(body) == {"__type": "ValidationException", "message": msg}


def test_error_code_from_header_and_prefixed_type(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    fake_upstream.set_default(
        "GetSecretValue",
        respond(
            400,
            {"__type": "com.amazonaws.secretsmanager#SomethingElse", "Message": "capital M"},
            {"x-amzn-errortype": "ResourceNotFoundException:http://internal.amazon.com/coral/com.amazonaws.secretsmanager/"},
        ),
        secret="hdr",
    )
    status, _, body = ag.secret("hdr")
    assert status == 400, body
    assert err_json(body) == {"__type": "ResourceNotFoundException", "message": "capital M"}

    fake_upstream.set_default(
        "GetSecretValue",
        respond(400, {"__type": "com.amazonaws.secretsmanager#InvalidRequestException", "message": "m"}),
        secret="pfx",
    )
    status, _, body = ag.secret("pfx")
    assert status == 400, body
    assert err_json(body) == {"__type": "InvalidRequestException", "message": "m"}


def test_slow_but_in_time_upstream_is_fine(agent, fake_upstream):
    ag = agent(fake_upstream.url, env={"SMA_UPSTREAM_TIMEOUT_MS": "5000"})
    fake_upstream.set_default("GetSecretValue", ok(delay=0.5))
    status, _, body = ag.secret("slowish")
    assert status == 200, body
    assert fake_upstream.count("GetSecretValue") == 1


# ------------------------------------------------------------------ stale serving


def _expire_then_break(agent, fake_upstream, action, **config):
    ag = agent(fake_upstream.url, config={"ttl_seconds": TTL, **config})
    name = unique("stale")
    fake_upstream.set_secret(name, "cached-value")
    status, _, body = ag.secret(name)
    assert status == 200 and json.loads(body)["SecretString"] == "cached-value", body
    fake_upstream.set_default("GetSecretValue", action)
    fake_upstream.set_default("DescribeSecret", action)
    ag.advance(TTL * 2.5)
    return ag, name


def test_transient_failure_on_expired_entry_serves_stale(agent, fake_upstream):
    ag, name = _expire_then_break(agent, fake_upstream, error(500, "InternalServiceError", "down"))
    status, _, body = ag.secret(name, timeout=60)
    assert status == 200, body
    assert json.loads(body)["SecretString"] == "cached-value"
    assert fake_upstream.count("DescribeSecret") + fake_upstream.count("GetSecretValue") >= 2
    # Expired: a miss that waited for upstream, not a hit. (The stale answer
    # after the failure is not counted in cache_stale_answers_total.)
    assert ag.metric("cache_misses_total") == 2 and ag.metric("cache_hits_total") == 0


def test_timeout_on_expired_entry_serves_stale(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"ttl_seconds": TTL}, env=FAST_TIMEOUT_ENV)
    name = unique("stale-to")
    status, _, body = ag.secret(name)
    assert status == 200, body
    fake_upstream.set_default("GetSecretValue", hang(30))
    fake_upstream.set_default("DescribeSecret", hang(30))
    ag.advance(TTL * 2.5)
    status, _, body = ag.secret(name, timeout=60)
    assert status == 200, body
    assert json.loads(body)["SecretString"] == f"value-of-{name}"
    # Expired: a miss that waited for upstream, not a hit. (The stale answer
    # after the failure is not counted in cache_stale_answers_total.)
    assert ag.metric("cache_misses_total") == 2 and ag.metric("cache_hits_total") == 0


def test_transient_failure_without_ignore_is_an_error(agent, fake_upstream):
    ag, name = _expire_then_break(
        agent, fake_upstream, error(500, "InternalServiceError", "down"), ignore_transient_errors=False
    )
    status, _, body = ag.secret(name, timeout=60)
    assert status == 500, body
    assert err_json(body)["__type"] == "InternalServiceError"


def test_non_transient_failure_on_expired_entry_is_an_error(agent, fake_upstream):
    ag, name = _expire_then_break(agent, fake_upstream, error(400, "ResourceNotFoundException", "deleted"))
    status, _, body = ag.secret(name, timeout=60)
    assert status == 400, body
    assert err_json(body) == {"__type": "ResourceNotFoundException", "message": "deleted"}


def test_refresh_now_failure_keeps_cached_value(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"ttl_seconds": 300})
    name = unique("rnfail")
    fake_upstream.set_secret(name, "good")
    assert ag.secret_json(name)["SecretString"] == "good"
    fake_upstream.set_default("GetSecretValue", error(500, "InternalServiceError", "down"))
    status, _, body = ag.secret(name, refreshNow="true", timeout=60)
    assert status == 500, body
    assert err_json(body)["__type"] == "InternalServiceError"
    calls = fake_upstream.count("GetSecretValue")
    status, _, body = ag.secret(name)
    assert status == 200, body
    assert json.loads(body)["SecretString"] == "good"
    assert fake_upstream.count("GetSecretValue") == calls  # served from cache


# ------------------------------------------------------------------ concurrency


def test_hanging_secret_does_not_block_cache_hit(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"ttl_seconds": 300})
    assert ag.secret_json("A")["SecretString"] == "value-of-A"
    fake_upstream.set_default("GetSecretValue", hang(30), secret="B")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("B", ag.secret("B", timeout=90)), daemon=True)
    t.start()
    try:
        fake_upstream.wait_calls("GetSecretValue", 1, timeout=15, secret="B")
        status, _, body = ag.secret("A", timeout=10)
        assert status == 200, body
        assert json.loads(body)["SecretString"] == "value-of-A"
        assert t.is_alive(), "B's request should still be outstanding"
        # a miss on another secret C is not held up by B either
        status, _, body = ag.secret("C", timeout=10)
        assert status == 200, body
        assert t.is_alive()
    finally:
        fake_upstream.unblock()
        t.join(90)


def test_concurrent_misses_share_one_upstream_call(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"ttl_seconds": 300})
    name = unique("herd")
    # Held until unblock(), after the threads are counted.
    fake_upstream.set_default("GetSecretValue", ok(delay=30), secret=name)
    n = 50
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(15)
        except threading.BrokenBarrierError:
            pass
        results[i] = ag.secret(name, timeout=60)

    idle = ag.threads()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    # While the one call is out, the requests wait without a thread each:
    # one thread calls AWS and the pool stays at its usual size (one worker
    # per CPU). All n are in (the scrape is one more), the call is out.
    try:
        ag.wait_metric("in_flight_requests", n + 1, timeout=30)
        fake_upstream.wait_calls("GetSecretValue", 1, secret=name)
        during = ag.threads()
        assert all(t.is_alive() for t in threads), "answered before the call returned"
    finally:
        fake_upstream.unblock()
    for t in threads:
        t.join(90)
    assert all(r is not None for r in results), "some requests never finished"
    statuses = [r[0] for r in results]
    assert statuses == [200] * n, statuses
    assert during <= idle + max(4, os.cpu_count() or 1) + 1, (idle, during)
    bodies = {r[2] for r in results}
    assert len(bodies) == 1
    assert json.loads(bodies.pop())["SecretString"] == f"value-of-{name}"
    assert fake_upstream.count("GetSecretValue") == 1


def test_workers_never_wait_for_aws(agent, fake_upstream):
    # Misses for twenty different secrets behind a slow upstream: each call
    # runs on a thread of its own, the workers stay one per CPU and keep
    # serving hits at once.
    ag = agent(fake_upstream.url, config={"ttl_seconds": 300})
    assert ag.secret("hot")[0] == 200
    workers = os.cpu_count() or 1
    names = [unique("slow") for _ in range(20)]
    for name in names:  # held until unblock()
        fake_upstream.set_default("GetSecretValue", ok(delay=30), secret=name)
    results = {}

    def miss(name):
        results[name] = ag.secret(name, timeout=60)

    threads = [threading.Thread(target=miss, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    # Every miss reached AWS (and the first read of "hot" before them).
    try:
        fake_upstream.wait_calls("GetSecretValue", 21)
        fetching, working = ag.threads_named("fetch"), ag.threads_named("worker")
        status, _, body = ag.secret("hot", timeout=10)
        # Served from memory while every call still hung.
        pending = sum(t.is_alive() for t in threads)
    finally:
        fake_upstream.unblock()
    for t in threads:
        t.join(60)
    assert status == 200, body
    assert fetching == 20, fetching
    assert working <= workers + 1, (working, workers)
    assert pending == 20, pending
    assert [results[n][0] for n in names] == [200] * 20


def test_region_and_signature_headers_reach_upstream(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"region": "eu-west-1"})
    assert ag.secret_json("sig")["Name"] == "sig"
    (_, _, req, headers, raw), = fake_upstream.requests("GetSecretValue")
    auth = headers.get("Authorization", "")
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    assert "/eu-west-1/secretsmanager/aws4_request" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    for h in ("host", "x-amz-date", "x-amz-target", "content-type"):
        assert h in signed, (h, signed)
    assert headers.get("X-Amz-Date")
    assert headers.get("Host") == f"127.0.0.1:{fake_upstream.port}"
    assert "X-Amz-Security-Token" not in headers
    assert req == {"SecretId": "sig"} or req.get("SecretId") == "sig"


def test_long_session_token_is_sent_whole(agent, fake_upstream):
    """A request head with a multi-KiB session token still fits the client's output buffer."""
    token = "IQoJb3JpZ2luX2VjE" + "x" * 12000 + "=="
    ag = agent(fake_upstream.url, env={"AWS_SESSION_TOKEN": token})
    status, _, body = ag.secret("long-token")
    assert status == 200, body
    (call,) = fake_upstream.requests("GetSecretValue")
    headers = {k.lower(): v for k, v in call[3].items()}
    assert headers["x-amz-security-token"] == token


def test_oversized_session_token_is_a_clear_error(agent, fake_upstream):
    ag = agent(fake_upstream.url, env={"AWS_SESSION_TOKEN": "x" * 20000})
    status, _, body = ag.secret("huge-token")
    assert status == 500, body
    assert fake_upstream.count("GetSecretValue") == 0
    wait_until(lambda: "session token unusually long" in ag.stdout + ag.stderr, what="the reason in the log")
