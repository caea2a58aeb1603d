"""The HTTP surface (docs/http-api.md): routes, check order, status codes and bodies.

Runs against the fake upstream (the surface does not depend on the backend)."""

import json
import threading

import pytest

from conftest import hang, unique


@pytest.fixture
def ag(agent, fake_upstream):
    return agent(fake_upstream.url)


def text(body: bytes) -> str:
    return body.decode("utf-8")


# ------------------------------------------------------------------ /ping and routing


def test_ping_needs_no_token(ag):
    status, headers, body = ag.get("/ping", token=False)
    assert status == 200
    assert text(body) == "healthy"
    assert headers.get("content-type", "").startswith("text/plain")


def test_ping_with_token_is_fine_too(ag):
    status, _, body = ag.get("/ping")
    assert (status, text(body)) == (200, "healthy")


@pytest.mark.parametrize("path", ["/", "/nope", "/secretsmanager", "/secretsmanager/get/x", "/v1", "/pingx"])
def test_unknown_path_is_404(ag, path):
    status, headers, body = ag.get(path)
    assert (status, text(body)) == (404, "Not found")
    assert headers.get("content-type", "").startswith("text/plain")


def test_secret_by_query(ag, fake_upstream):
    status, headers, body = ag.secret("app-secret")
    assert status == 200, body
    assert headers.get("content-type", "").split(";")[0].strip() == "application/json"
    doc = json.loads(body)
    assert doc["Name"] == "app-secret"
    assert doc["SecretString"] == "value-of-app-secret"


def test_secret_by_path(ag, fake_upstream):
    status, headers, body = ag.get("/v1/app-secret")
    assert status == 200, body
    assert headers.get("content-type", "").split(";")[0].strip() == "application/json"
    assert json.loads(body)["SecretString"] == "value-of-app-secret"


def test_keep_alive_connection_serves_several_requests(ag):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", ag.port, timeout=30)
    try:
        for path in ("/ping", "/secretsmanager/get?secretId=ka", "/v1/ka", "/ping"):
            conn.request("GET", path, headers={"X-Aws-Parameters-Secrets-Token": ag.token})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, path
    finally:
        conn.close()


# ------------------------------------------------------------------ token checks


def test_x_forwarded_for_is_rejected(ag):
    status, _, body = ag.get("/secretsmanager/get?secretId=a", headers={"X-Forwarded-For": "127.0.0.1"})
    assert (status, text(body)) == (400, "Forwarded")


def test_x_forwarded_for_is_rejected_before_token_check(ag):
    status, _, body = ag.get("/v1/a", token=False, headers={"X-Forwarded-For": "127.0.0.1"})
    assert (status, text(body)) == (400, "Forwarded")


def test_no_token_is_403(ag, fake_upstream):
    status, headers, body = ag.get("/secretsmanager/get?secretId=a", token=False)
    assert (status, text(body)) == (403, "Bad Token")
    assert headers.get("content-type", "").startswith("text/plain")
    status, _, body = ag.get("/v1/a", token=False)
    assert (status, text(body)) == (403, "Bad Token")
    assert fake_upstream.count("GetSecretValue") == 0


@pytest.mark.parametrize("bad", ["wrong", "", "EXTEND", "PREFIX", "CASE"])
def test_wrong_token_is_403(ag, bad):
    tok = {"EXTEND": ag.token + "x", "PREFIX": ag.token[:-1], "CASE": ag.token.upper()}.get(bad, bad)
    assert tok != ag.token
    status, _, body = ag.get("/secretsmanager/get?secretId=a", token=False, headers={"X-Aws-Parameters-Secrets-Token": tok})
    assert (status, text(body)) == (403, "Bad Token")


def test_token_in_wrong_header_is_403(ag):
    status, _, body = ag.get("/v1/a", token=False, headers={"Authorization": ag.token, "X-Token": ag.token})
    assert (status, text(body)) == (403, "Bad Token")


@pytest.mark.parametrize(
    "header",
    [
        "X-Aws-Parameters-Secrets-Token",
        "x-aws-parameters-secrets-token",
        "X-AWS-PARAMETERS-SECRETS-TOKEN",
        "X-Vault-Token",
        "x-vault-token",
        "X-VAULT-TOKEN",
    ],
)
def test_token_headers_case_insensitive(ag, header):
    status, _, body = ag.get("/secretsmanager/get?secretId=tok-case", token=False, headers={header: ag.token})
    assert status == 200, body


# ------------------------------------------------------------------ method


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_non_get_is_405_after_token(ag, method):
    status, _, body = ag.get("/secretsmanager/get?secretId=a", method=method, body=b"")
    assert (status, text(body)) == (405, "Not allowed")


def test_post_with_bad_token_is_403(ag):
    status, _, body = ag.get("/secretsmanager/get?secretId=a", method="POST", token=False, body=b"",
                             headers={"X-Aws-Parameters-Secrets-Token": "bad"})
    assert (status, text(body)) == (403, "Bad Token")


def test_method_checked_before_query(ag):
    status, _, body = ag.get("/secretsmanager/get?bogus=1", method="POST", body=b"")
    assert (status, text(body)) == (405, "Not allowed")


# ------------------------------------------------------------------ query validation


def test_unknown_query_parameter(ag, fake_upstream):
    status, _, body = ag.get("/secretsmanager/get?secretId=a&foo=1")
    assert (status, text(body)) == (400, "unknown parameter: foo")
    assert fake_upstream.count("GetSecretValue") == 0


def test_unknown_query_parameter_on_path_route(ag):
    status, _, body = ag.get("/v1/a?bar=2")
    assert (status, text(body)) == (400, "unknown parameter: bar")


@pytest.mark.parametrize("path", ["/secretsmanager/get", "/secretsmanager/get?secretId=", "/secretsmanager/get?versionStage=AWSCURRENT"])
def test_missing_secret_id(ag, path):
    status, _, body = ag.get(path)
    assert (status, text(body)) == (400, "missing parameter secretId")


def test_empty_path_id(ag):
    status, _, body = ag.get("/v1/")
    assert (status, text(body)) == (400, "missing secret ID")


def test_secret_id_query_not_accepted_on_path_route(ag):
    status, _, body = ag.get("/v1/x?secretId=y")
    assert (status, text(body)) == (400, "unknown parameter: secretId")


@pytest.mark.parametrize("value", ["maybe", "yes", "2", "", "truee"])
def test_invalid_refresh_now(ag, value):
    status, _, body = ag.get(f"/secretsmanager/get?secretId=a&refreshNow={value}")
    assert (status, text(body)) == (400, "invalid refreshNow value")


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", "false", "FALSE", "0"])
def test_valid_refresh_now(ag, value):
    status, _, body = ag.get(f"/secretsmanager/get?secretId=rn&refreshNow={value}")
    assert status == 200, body
    status, _, body = ag.get(f"/v1/rn?refreshNow={value}")
    assert status == 200, body


def test_query_values_are_url_decoded(ag, fake_upstream):
    status, _, body = ag.get("/secretsmanager/get?secretId=my+secret%2Fwith%40chars")
    assert status == 200, body
    assert json.loads(body)["Name"] == "my secret/with@chars"
    ids = [c[1] for c in fake_upstream.requests("GetSecretValue")]
    assert ids == ["my secret/with@chars"]


def test_version_parameters_are_forwarded(ag, fake_upstream):
    name = unique("ver")
    old = fake_upstream.current_version(name)
    fake_upstream.set_secret(name, "second")
    status, _, body = ag.get(f"/secretsmanager/get?secretId={name}&versionId={old}")
    assert status == 200, body
    assert json.loads(body)["VersionId"] == old
    status, _, body = ag.get(f"/v1/{name}?versionStage=AWSPREVIOUS")
    assert status == 200, body
    assert json.loads(body)["VersionId"] == old
    reqs = [c[2] for c in fake_upstream.requests("GetSecretValue")]
    assert reqs[0].get("VersionId") == old
    assert reqs[1].get("VersionStage") == "AWSPREVIOUS"
    assert all(r["SecretId"] == name for r in reqs)


def test_path_id_is_percent_decoded_and_keeps_slashes(ag, fake_upstream):
    for path in ("/v1/prod/db/password", "/v1/prod%2Fdb%2Fpassword"):
        status, _, body = ag.get(path)
        assert status == 200, (path, body)
        assert json.loads(body)["Name"] == "prod/db/password"
    # both spellings are the same secret id
    ids = {c[1] for c in fake_upstream.requests("GetSecretValue")}
    assert ids == {"prod/db/password"}


# ------------------------------------------------------------------ config-driven surface


def test_custom_path_prefix(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"path_prefix": "/secrets/"})
    status, _, body = ag.get("/secrets/custom")
    assert status == 200, body
    assert json.loads(body)["Name"] == "custom"
    status, _, body = ag.get("/v1/custom")
    assert (status, text(body)) == (404, "Not found")
    status, _, body = ag.get("/secretsmanager/get?secretId=custom")
    assert status == 200, body


def test_custom_ssrf_headers(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"ssrf_headers": ["X-My-Token", "X-Other-Token"]})
    for header in ("X-My-Token", "x-other-token"):
        status, _, body = ag.get("/v1/a", token=False, headers={header: ag.token})
        assert status == 200, (header, body)
    status, _, body = ag.get("/v1/a")  # default header no longer accepted
    assert (status, text(body)) == (403, "Bad Token")
    status, _, body = ag.get("/v1/a", token=False, headers={"X-Vault-Token": ag.token})
    assert (status, text(body)) == (403, "Bad Token")


def test_max_conn_limit(agent, fake_upstream):
    ag = agent(fake_upstream.url, config={"max_conn": 1})
    fake_upstream.set_default("GetSecretValue", hang(30), secret="slow")
    result = {}

    def slow():
        result["slow"] = ag.secret("slow", timeout=60)

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    try:
        fake_upstream.wait_calls("GetSecretValue", 1, timeout=15, secret="slow")
        assert t.is_alive()
        status, _, body = ag.secret("fast")
        assert (status, text(body)) == (429, "Connection limit exceeded")
        status, _, body = ag.get("/ping", token=False)
        assert (status, text(body)) == (200, "healthy")
    finally:
        fake_upstream.unblock()
        t.join(60)
    assert not t.is_alive()
    # once the slow one is done, requests are served again
    status, _, body = ag.secret("fast")
    assert status == 200, body


def test_head_is_405(ag):
    status, _, _ = ag.get("/secretsmanager/get?secretId=a", method="HEAD")
    assert status == 405


def test_listener_is_bound_to_loopback_only(ag):
    port_hex = f"{ag.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and local.endswith(":" + port_hex):  # 0A = LISTEN
                listening.append((table, local))
    assert listening, "listening socket not found"
    for table, local in listening:
        assert table == "/proc/net/tcp" and local == "0100007F:" + port_hex, listening


def test_stdout_has_only_the_startup_line(ag):
    for path in ("/ping", "/v1/quiet", "/nope"):
        ag.get(path)
    ag.stop()
    lines = [l for l in ag.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and "listening on http://127.0.0.1:" in lines[0], lines


def test_created_date_fraction_and_key_order(ag, fake_upstream):
    doc = ag.secret_json("frac")
    assert list(doc) == ["ARN", "Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"]
    assert doc["CreatedDate"] == "1523477145.713"


def test_whole_float_created_date_and_extra_fields(ag, fake_upstream):
    from conftest import respond

    body = {
        "Extra": {"x": 1},
        "CreatedDate": 1795900097.0,
        "VersionStages": ["AWSCURRENT", "CUSTOM"],
        "SecretString": "s",
        "VersionId": "v-1",
        "Name": "whole",
        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:whole-AbCdEf",
    }
    fake_upstream.set_default("GetSecretValue", respond(200, body), secret="whole")
    status, _, raw = ag.secret("whole")
    assert status == 200, raw
    doc = json.loads(raw)
    assert list(doc) == ["ARN", "Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"]
    assert doc["CreatedDate"] == "1795900097"
    assert doc["VersionStages"] == ["AWSCURRENT", "CUSTOM"]
