"""`/metrics` scraped as Prometheus scrapes it (prometheus_client's own parser):
counters move as requests, cache decisions and upstream calls happen, and the
optional metrics listener serves the numbers without a token and nothing else."""

import http.client

import pytest

from conftest import METRICS_PREFIX as PREFIX, error, free_port, http_request

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is in tests/requirements.txt")


def scrape(port, token=None):
    headers = {"X-Aws-Parameters-Secrets-Token": token} if token else {}
    status, hdrs, body = http_request(port, "/metrics", headers)
    assert status == 200, body
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4"), hdrs
    samples = {}
    families = {}
    for family in parser.text_string_to_metric_families(body.decode()):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((PREFIX + name, tuple(sorted(labels.items()))), 0.0)


def test_counters_follow_requests_cache_and_upstream(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    families, before = scrape(ag.port, ag.token)
    for name, kind in [("requests", "counter"), ("cache_hits", "counter"), ("cache_misses", "counter"),
                       ("answer_duration_seconds", "histogram"), ("upstream_calls", "counter"),
                       ("upstream_call_duration_seconds", "histogram"), ("cache_entries", "gauge"),
                       ("in_flight_requests", "gauge"), ("open_connections", "gauge"),
                       ("credential_refreshes", "counter"), ("build_info", "gauge")]:
        assert families.get(PREFIX + name) == kind, (name, families)

    fake_upstream.script("GetSecretValue", error(400, "ResourceNotFoundException", "no such"), secret="nope")
    assert ag.secret("m1")[0] == 200
    assert ag.secret("m1")[0] == 200
    assert ag.secret("nope")[0] == 400
    assert ag.get("/secretsmanager/get?secretId=x", token=False)[0] == 403
    _, after = scrape(ag.port, ag.token)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("requests_total", route="secret", status="200") == 2
    assert moved("requests_total", route="secret", status="400") == 1
    assert moved("requests_total", route="secret", status="403") == 1
    assert moved("requests_total", route="metrics", status="200") == 1, "the first scrape"
    assert moved("cache_hits_total") == 1
    assert moved("cache_misses_total") == 2
    assert moved("upstream_calls_total", operation="GetSecretValue", outcome="ok") == 1
    assert moved("upstream_calls_total", operation="GetSecretValue", outcome="4xx") == 1
    assert moved("upstream_call_duration_seconds_count", operation="GetSecretValue") == 2
    assert moved("answer_duration_seconds_count", source="memory") == 1
    assert moved("answer_duration_seconds_count", source="upstream") == 2
    assert value(after, "answer_duration_seconds_bucket", source="upstream", le="+Inf") >= 2
    assert value(after, "cache_entries") == 1
    assert value(after, "credential_refreshes_total", source="environment") >= 1
    assert value(after, "build_info", version=after_version(after), tls="aws-lc-rs") == 1 or \
        value(after, "build_info", version=after_version(after), tls="ring") == 1
    # Counters never go backwards.
    for key, v in before.items():
        if key[0].endswith(("_total", "_count", "_bucket")):
            assert after.get(key, 0) >= v, key


def after_version(samples):
    return next(dict(labels)["version"] for (name, labels) in samples if name == PREFIX + "build_info")


def test_gauges_read_now(agent, fake_upstream):
    ag = agent(fake_upstream.url)
    conns = [http.client.HTTPConnection("127.0.0.1", ag.port, timeout=5) for _ in range(3)]
    for c in conns:
        c.request("GET", "/ping")
        c.getresponse().read()  # kept alive
    _, samples = scrape(ag.port, ag.token)
    assert value(samples, "open_connections") >= 4, "three kept alive and the scrape's own"
    assert value(samples, "in_flight_requests") == 1, "the scrape itself"
    for c in conns:
        c.close()


def test_the_metrics_listener_serves_numbers_without_a_token_and_nothing_else(agent, fake_upstream):
    port = free_port()
    ag = agent(fake_upstream.url, config={"metrics_address": f"127.0.0.1:{port}"})
    assert f"metrics on http://127.0.0.1:{port}/metrics" in ag.stdout
    assert ag.secret("s1")[0] == 200
    _, samples = scrape(port)
    assert value(samples, "requests_total", route="secret", status="200") >= 1
    status, _, body = http_request(port, "/ping")
    assert (status, body) == (200, b"healthy")
    for path in ("/secretsmanager/get?secretId=s1", "/v1/s1", "/ready"):
        status, _, body = http_request(port, path, {"X-Aws-Parameters-Secrets-Token": ag.token})
        assert status == 404 and b"s1" not in body, (path, status, body)
    assert http_request(port, "/metrics", method="POST")[0] == 405
    # The API listener still wants the token for /metrics.
    assert http_request(ag.port, "/metrics")[0] == 403


def test_a_bad_or_busy_metrics_address_stops_the_start(agent, fake_upstream):
    rc, _, err = agent.run_expect_exit(fake_upstream.url, config={"metrics_address": "localhost"})
    assert rc == 1 and "metrics_address" in err and "IP address and port" in err, err
    busy = agent(fake_upstream.url)
    rc, _, err = agent.run_expect_exit(fake_upstream.url, config={"metrics_address": f"127.0.0.1:{busy.port}"})
    assert rc == 1 and f"cannot listen on 127.0.0.1:{busy.port} for metrics" in err, err


def test_evictions_and_credential_failures_are_counted(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"cache_size": 1})
    _, before = scrape(ag.port, ag.token)
    for name in ("e1", "e2", "e3"):
        assert ag.secret(name)[0] == 200
    _, after = scrape(ag.port, ag.token)
    assert value(after, "cache_evictions_total") - value(before, "cache_evictions_total") == 2
    assert value(after, "cache_entries") == 1

    none = agent(fake_upstream.url, creds=("", ""), env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    _, before = scrape(none.port, none.token)
    assert none.secret("c1")[0] == 500
    _, after = scrape(none.port, none.token)
    failed = sum(v for (n, labels), v in after.items() if n == PREFIX + "credential_failures_total") - \
        sum(v for (n, labels), v in before.items() if n == PREFIX + "credential_failures_total")
    assert failed >= 1, after
    # Kinds of source only: nothing a profile or a role is called.
    labels = {dict(l).get("source") for (n, l) in after if n.startswith(PREFIX + "credential_")}
    assert labels <= {"environment", "profile", "web identity", "container", "IMDS", "AssumeRole",
                      "credentials_file_path", "credential_process", "other"}, labels
